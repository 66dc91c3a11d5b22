//! **mount-point** on client hosts: an empty folder (else a warning: the mount hides what is
//! there; missing: info, start creates it) with no foreign mount on it (an error: the mount
//! step takes any mount there for ours, and stop would `umount -l` it).

use std::path::PathBuf;
use std::sync::Arc;

use moose_inventory::Role;

use crate::doctor::finding::{shell_word, Finding, Status};
use crate::doctor::runner::{par_map, script, Ctx};
use crate::engine::host::BoxFuture;

pub const CHECK: &str = "mount-point";

/// The type `moose-mount`'s mounts show (`fuse.` + its subtype).
const OUR_TYPE: &str = "fuse.moosefs";

/// `$1` = the mount point. The top mount on it from mountinfo, else up to 3 of its entries.
const SCRIPT: &str = r#"m=$1
[ -e "$m" ] || { echo "missing"; exit 0; }
c=$(readlink -f -- "$m" 2>/dev/null) || c=$m
t=$(M=$c awk '{ p = $5; gsub(/\\040/, " ", p); gsub(/\\011/, "\t", p); gsub(/\\134/, "\\", p); if (p != ENVIRON["M"]) next; for (i = 7; i <= NF && $i != "-"; i++); print $(i + 1) "\t" $(i + 2) }' /proc/self/mountinfo | tail -n 1)
if [ -n "$t" ]; then printf 'mount\t%s\n' "$t"; exit 0; fi
timeout 5 ls -A -- "$m" 2>/dev/null | head -n 3 | while IFS= read -r e; do printf 'entry\t%s\n' "$e"; done
"#;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub missing: bool,
    /// Type and source of the mount on it.
    pub mount: Option<(String, String)>,
    pub entries: Vec<String>,
}

pub fn parse(lines: &[String]) -> Facts {
    let mut f = Facts::default();
    for l in lines {
        let v: Vec<&str> = l.split('\t').collect();
        match v[..] {
            ["missing"] => f.missing = true,
            ["mount", t, s] => f.mount = Some((t.to_string(), s.to_string())),
            ["mount", t] => f.mount = Some((t.to_string(), String::new())),
            ["entry", e] => f.entries.push(e.to_string()),
            _ => {}
        }
    }
    f
}

pub fn judge(host: &str, mp: &std::path::Path, f: &Facts) -> Finding {
    let m = mp.display();
    if f.missing {
        return Finding::new(
            CHECK,
            host,
            Status::Info,
            format!("{m} does not exist yet; start creates it"),
        );
    }
    match &f.mount {
        Some((t, s)) if t == OUR_TYPE => {
            Finding::new(CHECK, host, Status::Ok, format!("moose-mount is mounted on {m}"))
                .evidence(format!("/proc/self/mountinfo: {t} {s} on {m}"))
        }
        Some((t, s)) => Finding::new(
            CHECK,
            host,
            Status::Error,
            format!("a foreign {t} mount is on {m}: start takes any mount there for ours (\"already mounted\") and stop would `umount -l` it"),
        )
        .evidence(format!("/proc/self/mountinfo: {t} {s} on {m}"))
        .fix(format!("umount {}", shell_word(&mp.to_string_lossy()))),
        None if !f.entries.is_empty() => {
            let mut w = Finding::new(CHECK, host, Status::Warning, format!("{m} is not empty: the mount hides what is in it"));
            for e in &f.entries {
                w = w.evidence(format!("{m}/{e}"));
            }
            w
        }
        None => Finding::new(CHECK, host, Status::Ok, format!("{m} is an empty folder with nothing mounted on it")),
    }
}

pub fn check(ctx: Arc<Ctx>) -> BoxFuture<'static, Vec<Finding>> {
    Box::pin(async move {
        let points: Vec<(String, PathBuf)> = ctx
            .instances(Role::Client)
            .into_iter()
            .filter_map(|i| Some((i.host.clone(), i.mount_point.clone()?)))
            .collect();
        let c = ctx.clone();
        par_map(points, move |(h, mp)| {
            let ctx = c.clone();
            async move {
                if let Some(why) = ctx.silent(&h) {
                    return Finding::skipped(CHECK, &h, &why);
                }
                let arg = [mp.to_string_lossy().into_owned()];
                match script(
                    ctx.machine(&h).as_ref(),
                    "checking the mount point",
                    SCRIPT,
                    &arg,
                )
                .await
                {
                    Ok(lines) => judge(&h, &mp, &parse(&lines)),
                    Err(e) => {
                        Finding::new(CHECK, &h, Status::Error, "cannot check the mount point")
                            .evidence(e)
                    }
                }
            }
        })
        .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn facts(s: &str) -> Facts {
        parse(&s.lines().map(str::to_string).collect::<Vec<_>>())
    }

    #[test]
    fn verdicts() {
        let mp = Path::new("/mnt/m");
        assert_eq!(judge("h", mp, &facts("missing")).status, Status::Info);
        assert_eq!(
            judge("h", mp, &facts("mount\tfuse.moosefs\t127.0.0.1:9421:/")).status,
            Status::Ok
        );
        let f = judge("h", mp, &facts("mount\ttmpfs\ttmpfs"));
        assert_eq!(f.status, Status::Error);
        assert_eq!(f.fix.as_deref(), Some("umount /mnt/m"));
        assert_eq!(
            judge("h", mp, &facts("entry\ta\nentry\tb")).status,
            Status::Warning
        );
        assert_eq!(judge("h", mp, &facts("")).status, Status::Ok);
    }
}
