//! **disks** on chunkserver hosts: each disk folder's file system against its space limit,
//! and disks sharing one file system (a warning: their copies are no safer than one; info on
//! a one-machine cluster, where that is the point).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use moose_formats::hdd::SpaceLimit;
use moose_formats::units::human_bytes;

use crate::doctor::finding::{Finding, Status};
use crate::doctor::runner::{par_map, script, Ctx};
use crate::engine::host::BoxFuture;

pub const CHECK: &str = "disks";

/// Each argument a folder: its nearest existing folder's device, size and free bytes.
const SCRIPT: &str = r#"for d; do
  e=$d; while [ ! -e "$e" ]; do e=$(dirname -- "$e"); done
  dev=$(stat -c %d -- "$e") || exit 1
  set -- $(df -P -B1 -- "$e" | awk 'NR == 2 { print $2, $4, $6 }')
  printf 'disk\t%s\t%s\t%s\t%s\t%s\n' "$d" "$dev" "$1" "$2" "$3"
done
"#;

/// One disk folder as its host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    pub device: String,
    pub size: u64,
    pub avail: u64,
    pub mount: String,
}

pub fn parse(lines: &[String]) -> Vec<Disk> {
    lines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let ["disk", path, dev, size, avail, mount] = f[..] else {
                return None;
            };
            Some(Disk {
                path: PathBuf::from(path),
                device: dev.to_string(),
                size: size.parse().ok()?,
                avail: avail.parse().ok()?,
                mount: mount.to_string(),
            })
        })
        .collect()
}

/// Judges one host's disks; `limits`: each folder's limit as the inventory writes it.
pub fn judge(
    host: &str,
    disks: &[Disk],
    limits: &BTreeMap<PathBuf, Option<String>>,
    one_machine: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut by_fs: BTreeMap<&str, Vec<&Disk>> = BTreeMap::new();
    for d in disks {
        by_fs.entry(d.device.as_str()).or_default().push(d);
        let p = d.path.display();
        let space = format!(
            "{p}: file system {} holds {}, {} free",
            d.mount,
            human_bytes(d.size),
            human_bytes(d.avail)
        );
        let limit = limits.get(&d.path).cloned().flatten();
        let parsed = limit.as_deref().map(SpaceLimit::parse).transpose();
        out.push(match parsed {
            Err(e) => Finding::new(CHECK, host, Status::Error, format!("{p}: limit {:?} cannot be read: {e}", limit.unwrap_or_default())),
            Ok(Some(SpaceLimit::UseAtMost(a))) if a.of(d.size) > d.size => Finding::new(
                CHECK,
                host,
                Status::Warning,
                format!("{p}: the limit {} is more than its file system holds ({})", limit.unwrap_or_default(), human_bytes(d.size)),
            )
            .evidence(space),
            Ok(Some(SpaceLimit::KeepFree(a))) if a.of(d.size) >= d.avail => Finding::new(
                CHECK,
                host,
                Status::Warning,
                format!("{p}: less is free ({}) than the limit keeps free ({}): new chunks go elsewhere", human_bytes(d.avail), limit.unwrap_or_default()),
            )
            .evidence(space),
            Ok(_) => Finding::new(
                CHECK,
                host,
                Status::Ok,
                format!("{p}: limit {}", limit.as_deref().unwrap_or("the whole file system")),
            )
            .evidence(space),
        });
    }
    for (dev, ds) in by_fs {
        if ds.len() < 2 {
            continue;
        }
        let names: Vec<String> = ds.iter().map(|d| d.path.display().to_string()).collect();
        let sum: u64 = ds
            .iter()
            .filter_map(|d| {
                match limits
                    .get(&d.path)
                    .cloned()
                    .flatten()
                    .as_deref()
                    .map(SpaceLimit::parse)
                {
                    Some(Ok(SpaceLimit::UseAtMost(a))) => Some(a.of(d.size)),
                    _ => None,
                }
            })
            .sum();
        let size = ds[0].size;
        let (status, why) = if one_machine {
            (Status::Info, "fine for a one-machine cluster")
        } else {
            (Status::Warning, "copies on them are no safer than one")
        };
        let mut f = Finding::new(
            CHECK,
            host,
            status,
            format!(
                "{} disks share one file system ({}): {why}",
                ds.len(),
                ds[0].mount
            ),
        )
        .evidence(format!("device {dev}: {}", names.join(", ")));
        if sum > size {
            f.status = Status::Warning;
            f.summary = format!(
                "{} disks share one file system ({}) and their limits add up to {}, more than it holds ({})",
                ds.len(),
                ds[0].mount,
                human_bytes(sum),
                human_bytes(size)
            );
        }
        out.push(f);
    }
    out
}

pub fn check(ctx: Arc<Ctx>) -> BoxFuture<'static, Vec<Finding>> {
    Box::pin(async move {
        let one = ctx.one_machine();
        let hosts: Vec<(String, BTreeMap<PathBuf, Option<String>>)> = ctx
            .fleet
            .model
            .inventory
            .hosts
            .iter()
            .filter(|h| ctx.scope.covers(&h.name))
            .map(|h| {
                let limits = h
                    .chunkservers
                    .iter()
                    .flat_map(|cs| cs.disks.iter().filter(|d| !d.remove))
                    .map(|d| (d.path.clone(), d.limit.clone()))
                    .collect::<BTreeMap<_, _>>();
                (h.name.clone(), limits)
            })
            .filter(|(_, l)| !l.is_empty())
            .collect();
        let c = ctx.clone();
        par_map(hosts, move |(h, limits)| {
            let ctx = c.clone();
            async move {
                if let Some(why) = ctx.silent(&h) {
                    return vec![Finding::skipped(CHECK, &h, &why)];
                }
                let args: Vec<String> = limits
                    .keys()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect();
                match script(
                    ctx.machine(&h).as_ref(),
                    "checking the disks",
                    SCRIPT,
                    &args,
                )
                .await
                {
                    Ok(lines) => judge(&h, &parse(&lines), &limits, one),
                    Err(e) => {
                        vec![
                            Finding::new(CHECK, &h, Status::Error, "cannot check the disks")
                                .evidence(e),
                        ]
                    }
                }
            }
        })
        .await
        .into_iter()
        .flatten()
        .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(p: &str, dev: &str, size: u64, avail: u64) -> Disk {
        Disk {
            path: PathBuf::from(p),
            device: dev.into(),
            size,
            avail,
            mount: "/".into(),
        }
    }

    #[test]
    fn limits_and_sharing() {
        let gib = 1u64 << 30;
        let limits: BTreeMap<PathBuf, Option<String>> = [
            (PathBuf::from("/a"), Some("4GiB".to_string())),
            (PathBuf::from("/b"), Some("20GiB".to_string())),
            (PathBuf::from("/c"), Some("-5GiB".to_string())),
        ]
        .into();
        let disks = [
            disk("/a", "1", 10 * gib, 8 * gib),
            disk("/b", "2", 10 * gib, 8 * gib),
            disk("/c", "3", 10 * gib, 4 * gib),
        ];
        let f = judge("h", &disks, &limits, false);
        assert_eq!(
            f.iter().map(|x| x.status).collect::<Vec<_>>(),
            [Status::Ok, Status::Warning, Status::Warning]
        );
        let shared = [
            disk("/a", "1", 100 * gib, 80 * gib),
            disk("/b", "1", 100 * gib, 80 * gib),
        ];
        assert_eq!(judge("h", &shared, &limits, true)[2].status, Status::Info);
        assert_eq!(
            judge("h", &shared, &limits, false)[2].status,
            Status::Warning
        );
        let small = [
            disk("/a", "1", 16 * gib, 8 * gib),
            disk("/b", "1", 16 * gib, 8 * gib),
        ];
        let f = judge("h", &small, &limits, true);
        assert_eq!(f[2].status, Status::Warning, "{f:?}");
    }

    #[test]
    fn df_lines() {
        let d = parse(&[
            "disk\t/x\t64769\t100\t40\t/".to_string(),
            "junk".to_string(),
        ]);
        assert_eq!(d, [disk("/x", "64769", 100, 40)]);
    }
}
