//! **fuse** on client hosts: `/dev/fuse` (else `modprobe fuse`), `fusermount3`, and
//! `user_allow_other` in `/etc/fuse.conf` when a non-root mount asks for `allow_other`. The
//! FUSE facts come from the same probe the Servers pane and the mount step use
//! ([`probe::mount`]).

use std::path::PathBuf;
use std::sync::Arc;

use moose_inventory::Role;

use crate::doctor::finding::{Finding, Status};
use crate::doctor::runner::{par_map, script, Ctx};
use crate::engine::host::BoxFuture;
use crate::engine::probe::{self, MountProbe};

pub const CHECK: &str = "fuse";

const ALLOW_OTHER_SCRIPT: &str =
    "if grep -qs '^[[:space:]]*user_allow_other' /etc/fuse.conf; then echo yes; else echo no; fi";

/// Judges a client host from its mount probe; `allow_other`: whether one of its mounts asks
/// for it, `user_allow_other`: whether `/etc/fuse.conf` allows that.
pub fn judge(
    host: &str,
    p: &MountProbe,
    allow_other: bool,
    user_allow_other: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if p.fuse_device {
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
    match (&p.fusermount3, p.root) {
        (Some(path), _) => out.push(Finding::new(
            CHECK,
            host,
            Status::Ok,
            format!("fusermount3 is {path}"),
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
    if allow_other && !p.root && !user_allow_other {
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
        // One mount point per client host: the FUSE facts are the host's.
        let mut hosts: Vec<(String, PathBuf, bool)> = Vec::new();
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
            let Some(mp) = i.mount_point.clone() else {
                continue;
            };
            match hosts.iter_mut().find(|(h, _, _)| *h == i.host) {
                Some((_, _, a)) => *a |= asks,
                None => hosts.push((i.host.clone(), mp, asks)),
            }
        }
        let c = ctx.clone();
        par_map(hosts, move |(h, mp, asks)| {
            let ctx = c.clone();
            async move {
                if let Some(why) = ctx.silent(&h) {
                    return vec![Finding::skipped(CHECK, &h, &why)];
                }
                let m = ctx.machine(&h);
                let p = match probe::mount(m.as_ref(), &mp).await {
                    Ok(p) => p,
                    Err(e) => {
                        return vec![
                            Finding::new(CHECK, &h, Status::Error, "cannot check FUSE").evidence(e)
                        ]
                    }
                };
                let allowed = if asks && !p.root {
                    script(
                        m.as_ref(),
                        "reading /etc/fuse.conf",
                        ALLOW_OTHER_SCRIPT,
                        &[],
                    )
                    .await
                    .is_ok_and(|l| l.first().is_some_and(|x| x == "yes"))
                } else {
                    false
                };
                judge(&h, &p, asks, allowed)
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

    #[test]
    fn missing_device_and_allow_other() {
        let p = MountProbe {
            root: false,
            ..MountProbe::default()
        };
        let f = judge("h", &p, true, false);
        assert_eq!(f[0].fix.as_deref(), Some("modprobe fuse"));
        assert_eq!(f[1].status, Status::Error);
        assert_eq!(
            f[2].fix.as_deref(),
            Some("echo user_allow_other >> /etc/fuse.conf")
        );
        assert_eq!(judge("h", &p, true, true).len(), 2);
        let p = MountProbe {
            fuse_device: true,
            fusermount3: Some("/usr/bin/fusermount3".into()),
            root: true,
            ..MountProbe::default()
        };
        let f = judge("h", &p, true, false);
        assert!(f.iter().all(|x| x.status == Status::Ok), "{f:?}");
    }
}
