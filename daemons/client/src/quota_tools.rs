//! `moose-tool` quota verbs, as stock's `mfssetquota`, `mfsgetquota`, `mfsdelquota` and
//! `mfsrepquota`: limits per folder on inodes, length, size and real size (lower case soft,
//! upper case hard).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use moose_proto::msg::{ClReply, ClRequest, Limits, QuotaLimits, QuotaReport};
use moose_proto::FsError;
use serde_json::{json, Value};

use crate::master::CallError;
use crate::tool::{failure, finish, own_cred, resolve, runtime, Sessions, Target};

/// What to do with the quota of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaCommand {
    Set(QuotaLimits),
    Get,
    Del,
    Rep,
}

/// A size given on the command line (`10MiB`, `1.5G`, `4096`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    moose_formats::units::parse_size(text)
}

/// A number of inodes (`1000`, `10k`).
pub fn parse_count(text: &str) -> Result<u64, String> {
    moose_formats::units::parse_size(text)
        .map_err(|_| format!("'{text}' is not a number of inodes (examples: 1000, 10k)"))
}

/// A grace period (`3600`, `7d`, `1h30m`).
pub fn parse_grace(text: &str) -> Result<u64, String> {
    moose_formats::units::parse_duration_secs(text)
}

fn cell(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |n| n.to_string())
}

/// Text of a quota (after which stock prints nothing more), laid out as `mfsgetquota`.
pub fn format_quota(path: &str, r: &QuotaReport) -> String {
    let mut out = format!(
        "{path}: (current values | soft quota | hard quota) ; soft quota grace period: {}s\n",
        r.grace
    );
    let rows = [
        (
            "inodes",
            r.usage.inodes,
            r.limits.soft.inodes,
            r.limits.hard.inodes,
        ),
        (
            "length",
            r.usage.length,
            r.limits.soft.length,
            r.limits.hard.length,
        ),
        ("size", r.usage.size, r.limits.soft.size, r.limits.hard.size),
        (
            "realsize",
            r.usage.realsize,
            r.limits.soft.realsize,
            r.limits.hard.realsize,
        ),
    ];
    for (name, used, soft, hard) in rows {
        out.push_str(&format!(
            " {name:<8} | {used:>14} | {:>14} | {:>14} |\n",
            cell(soft),
            cell(hard)
        ));
    }
    match r.grace_left() {
        Some(0) => out.push_str(" soft quota exceeded, grace period over: acts as hard\n"),
        Some(left) => out.push_str(&format!(
            " soft quota exceeded, grace period left: {left}s\n"
        )),
        None => {}
    }
    out
}

fn limits_json(l: &Limits) -> Value {
    json!({
        "inodes": l.inodes,
        "length": l.length,
        "size": l.size,
        "realsize": l.realsize,
    })
}

pub fn quota_json(path: &str, r: &QuotaReport) -> Value {
    json!({
        "path": path,
        "soft": limits_json(&r.limits.soft),
        "hard": limits_json(&r.limits.hard),
        "grace_period": r.grace,
        "usage": {
            "inodes": r.usage.inodes,
            "length": r.usage.length,
            "size": r.usage.size,
            "realsize": r.usage.realsize,
        },
        "soft_exceeded_for": r.soft_exceeded_for,
        "grace_left": r.grace_left(),
    })
}

/// Where a folder the master names by its path from the root is on this mount.
fn local_path(t: &Target, master_path: &str) -> String {
    let sub = t.subdir().trim_end_matches('/');
    let rel = master_path.strip_prefix(sub).unwrap_or(master_path);
    t.mount_point
        .join(rel.trim_start_matches('/'))
        .display()
        .to_string()
}

async fn one(
    sessions: &mut Sessions,
    cmd: &QuotaCommand,
    path: &Path,
    json_out: bool,
) -> anyhow::Result<Value> {
    let target = resolve(path)?;
    let (client, inode) = sessions.inode_of(&target).await?;
    let shown = path.display().to_string();
    let req = match cmd {
        QuotaCommand::Set(q) => ClRequest::SetQuota {
            inode,
            quota: Some(*q),
            cred: own_cred(),
        },
        QuotaCommand::Del => ClRequest::SetQuota {
            inode,
            quota: None,
            cred: own_cred(),
        },
        QuotaCommand::Get | QuotaCommand::Rep => ClRequest::GetQuota {
            inode,
            under: *cmd == QuotaCommand::Rep,
        },
    };
    let reply = match client.call(req).await {
        Ok(r) => r,
        Err(CallError::Fs(FsError::Perm)) => bail!("only root may set or remove quotas"),
        Err(CallError::Fs(FsError::NoEnt))
            if matches!(cmd, QuotaCommand::Get | QuotaCommand::Del) =>
        {
            bail!("no quota is set on this folder")
        }
        Err(CallError::Fs(FsError::NotDir)) => bail!("quotas are set on folders, not files"),
        Err(e) => return Err(e.into()),
    };
    match (cmd, reply) {
        (QuotaCommand::Set(_), ClReply::Done) => {
            // Show what is now in force, as stock does.
            match client
                .call(ClRequest::GetQuota {
                    inode,
                    under: false,
                })
                .await?
            {
                ClReply::Quotas(q) if q.len() == 1 => {
                    if !json_out {
                        print!("{}", format_quota(&shown, &q[0]));
                    }
                    Ok(quota_json(&shown, &q[0]))
                }
                other => bail!("unexpected answer from the master: {other:?}"),
            }
        }
        (QuotaCommand::Del, ClReply::Done) => {
            if !json_out {
                println!("{shown}: quota removed");
            }
            Ok(json!({ "path": shown, "removed": true }))
        }
        (QuotaCommand::Get, ClReply::Quotas(q)) if q.len() == 1 => {
            if !json_out {
                print!("{}", format_quota(&shown, &q[0]));
            }
            Ok(quota_json(&shown, &q[0]))
        }
        (QuotaCommand::Rep, ClReply::Quotas(q)) => {
            let mut all = Vec::new();
            for r in &q {
                let p = local_path(&target, &r.path);
                if !json_out {
                    print!("{}", format_quota(&p, r));
                }
                all.push(quota_json(&p, r));
            }
            Ok(json!({ "path": shown, "quotas": all }))
        }
        (_, other) => bail!("unexpected answer from the master: {other:?}"),
    }
}

/// Runs a quota verb on every folder; the exit code says whether all worked.
pub fn run(cmd: QuotaCommand, paths: &[PathBuf], json_out: bool) -> ExitCode {
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let mut failed = false;
    let mut results = Vec::new();
    rt.block_on(async {
        let mut sessions = Sessions::default();
        let mut set_any = false;
        for path in paths {
            match one(&mut sessions, &cmd, path, json_out).await {
                Ok(v) => {
                    set_any |= matches!(cmd, QuotaCommand::Set(_));
                    results.push(v);
                }
                Err(e) => {
                    failed = true;
                    results.push(failure(path, &e));
                }
            }
        }
        // Mounts act on their last answer about quotas for up to this long: once it has
        // passed, every mount asks again and meets the new limits.
        if set_any {
            tokio::time::sleep(moose_proto::QUOTA_GRANT_LEASE).await;
        }
    });
    finish(results, failed, json_out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use moose_proto::msg::DirStats;

    #[test]
    fn quota_text_shows_usage_limits_and_grace() {
        let r = QuotaReport {
            inode: 5,
            path: "/q".into(),
            limits: QuotaLimits {
                soft: Limits {
                    size: Some(1000),
                    ..Default::default()
                },
                hard: Limits {
                    inodes: Some(10),
                    ..Default::default()
                },
                grace: Some(60),
            },
            grace: 60,
            usage: DirStats {
                inodes: 3,
                size: 2000,
                ..Default::default()
            },
            soft_exceeded_for: Some(15),
        };
        let text = format_quota("/m/q", &r);
        assert!(text.starts_with(
            "/m/q: (current values | soft quota | hard quota) ; soft quota grace period: 60s\n"
        ));
        assert!(text.contains(" inodes   |              3 |              - |             10 |\n"));
        assert!(text.contains(" size     |           2000 |           1000 |              - |\n"));
        assert!(text.ends_with(" soft quota exceeded, grace period left: 45s\n"));
        assert_eq!(quota_json("/m/q", &r)["grace_left"], 45);
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_grace("1h"), Ok(3600));
        assert!(parse_count("ten").is_err());
    }
}
