//! **fuse** on client hosts: `/dev/fuse` (else `modprobe fuse`), `fusermount3`, and
//! `user_allow_other` in `/etc/fuse.conf` when a non-root mount asks for `allow_other`.

use std::sync::Arc;

use moose_inventory::Role;

use crate::doctor::finding::{Finding, Status};
use crate::doctor::runner::{par_map, script, Ctx};
use crate::engine::host::BoxFuture;

pub const CHECK: &str = "fuse";

const SCRIPT: &str = r#"if [ -c /dev/fuse ]; then echo "device yes"; else echo "device no"; fi
if f=$(command -v fusermount3 2>/dev/null); then echo "fusermount3 $f"; fi
echo "uid $(id -u)"
if grep -qs '^[[:space:]]*user_allow_other' /etc/fuse.conf; then echo "allow_other yes"; fi
"#;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub device: bool,
    pub fusermount3: Option<String>,
    pub root: bool,
    pub user_allow_other: bool,
}

pub fn parse(lines: &[String]) -> Facts {
    let mut f = Facts::default();
    for l in lines {
        match l.split_once(' ') {
            Some(("device", v)) => f.device = v == "yes",
            Some(("fusermount3", v)) => f.fusermount3 = Some(v.to_string()),
            Some(("uid", v)) => f.root = v == "0",
            Some(("allow_other", v)) => f.user_allow_other = v == "yes",
            _ => {}
        }
    }
    f
}

/// Judges a client host; `allow_other`: whether one of its mounts asks for it.
pub fn judge(host: &str, f: &Facts, allow_other: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    if f.device {
        out.push(
            Finding::new(CHECK, host, Status::Ok, "/dev/fuse is there")
                .evidence("test -c /dev/fuse: yes"),
        );
    } else {
        out.push(
            Finding::new(
                CHECK,
                host,
                Status::Error,
                "/dev/fuse is missing: no mount can start",
            )
            .evidence("test -c /dev/fuse: no")
            .fix("modprobe fuse"),
        );
    }
    match (&f.fusermount3, f.root) {
        (Some(p), _) => out.push(Finding::new(
            CHECK,
            host,
            Status::Ok,
            format!("fusermount3 is {p}"),
        )),
        (None, true) => out.push(
            Finding::new(
                CHECK,
                host,
                Status::Info,
                "fusermount3 is missing: root mounts work, unmounts fall back to umount",
            )
            .fix("apt-get install fuse3"),
        ),
        (None, false) => out.push(
            Finding::new(
                CHECK,
                host,
                Status::Error,
                "fusermount3 is missing: a mount as a user other than root cannot start",
            )
            .fix("apt-get install fuse3"),
        ),
    }
    if allow_other && !f.root && !f.user_allow_other {
        out.push(
            Finding::new(CHECK, host, Status::Error, "the mount asks for allow_other, which a non-root mount may only do with user_allow_other in /etc/fuse.conf")
                .evidence("/etc/fuse.conf: no user_allow_other line")
                .fix("echo user_allow_other >> /etc/fuse.conf"),
        );
    }
    out
}

pub fn check(ctx: Arc<Ctx>) -> BoxFuture<'static, Vec<Finding>> {
    Box::pin(async move {
        let mut hosts: Vec<(String, bool)> = Vec::new();
        for i in ctx.instances(Role::Client) {
            let asks = ctx
                .fleet
                .model
                .inventory
                .host(&i.host)
                .and_then(|h| h.client.as_ref())
                .is_some_and(|c| {
                    c.options
                        .iter()
                        .any(|o| o.split(',').any(|w| w.trim() == "allow_other"))
                });
            match hosts.iter_mut().find(|(h, _)| *h == i.host) {
                Some((_, a)) => *a |= asks,
                None => hosts.push((i.host.clone(), asks)),
            }
        }
        let c = ctx.clone();
        par_map(hosts, move |(h, asks)| {
            let ctx = c.clone();
            async move {
                if let Some(why) = ctx.silent(&h) {
                    return vec![Finding::skipped(CHECK, &h, &why)];
                }
                match script(ctx.machine(&h).as_ref(), "checking FUSE", SCRIPT, &[]).await {
                    Ok(lines) => judge(&h, &parse(&lines), asks),
                    Err(e) => vec![Finding::new(CHECK, &h, Status::Error, "cannot check FUSE").evidence(e)],
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

    fn facts(s: &str) -> Facts {
        parse(&s.lines().map(str::to_string).collect::<Vec<_>>())
    }

    #[test]
    fn missing_device_and_allow_other() {
        let f = judge("h", &facts("device no\nuid 1000"), true);
        assert_eq!(f[0].fix.as_deref(), Some("modprobe fuse"));
        assert_eq!(f[1].status, Status::Error);
        assert_eq!(
            f[2].fix.as_deref(),
            Some("echo user_allow_other >> /etc/fuse.conf")
        );
        let f = judge(
            "h",
            &facts("device yes\nfusermount3 /usr/bin/fusermount3\nuid 0"),
            true,
        );
        assert!(f.iter().all(|x| x.status == Status::Ok), "{f:?}");
    }
}
