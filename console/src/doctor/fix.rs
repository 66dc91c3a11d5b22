//! `--fix`: applies the safe fixes of a report on their hosts (a `chown -R` of a data or
//! disk folder; an `/etc/hosts` line, appended in place after a backup since the file is often
//! a bind mount). Nothing else is ever changed by the doctor.

use std::path::PathBuf;

use moose_inventory::Command;

use crate::doctor::finding::{FixAction, FixOutcome, Report};
use crate::doctor::runner::script;
use crate::engine::model::Fleet;
use crate::engine::probe::PROBE_TIMEOUT;

/// `$1` = the line, `$2` = the backup's name. Ends the file with a newline first.
const HOSTS_SCRIPT: &str = r#"set -e
cp -p /etc/hosts "$2"
if [ -n "$(tail -c 1 /etc/hosts)" ]; then echo >> /etc/hosts; fi
printf '%s\n' "$1" >> /etc/hosts
"#;

/// The distinct safe fixes of `report`: (host, shown command, action).
pub fn planned(report: &Report) -> Vec<(String, String, &'static str, FixAction)> {
    let mut out: Vec<(String, String, &'static str, FixAction)> = Vec::new();
    for f in report.safe_fixes() {
        let (Some(action), Some(cmd)) = (&f.action, &f.fix) else {
            continue;
        };
        if !out.iter().any(|(h, c, _, _)| *h == f.host && c == cmd) {
            out.push((f.host.clone(), cmd.clone(), f.check, action.clone()));
        }
    }
    out
}

/// Applies every planned fix, one host command each.
pub async fn apply(
    fleet: &Fleet,
    plan: &[(String, String, &'static str, FixAction)],
) -> Vec<FixOutcome> {
    let mut out = Vec::new();
    for (host, shown, check, action) in plan {
        let m = fleet.host(host);
        let result = match action {
            FixAction::Chown { dir, owner } => {
                let cmd = Command {
                    program: PathBuf::from("chown"),
                    args: vec![
                        "-R".into(),
                        owner.clone(),
                        "--".into(),
                        dir.to_string_lossy().into_owned(),
                    ],
                };
                match tokio::time::timeout(PROBE_TIMEOUT, m.run(&cmd, None)).await {
                    Ok(Ok(f)) if f.success() => Ok(()),
                    Ok(Ok(f)) => Err(f.message()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!(
                        "did not finish within {} s",
                        PROBE_TIMEOUT.as_secs()
                    )),
                }
            }
            FixAction::HostsLine { line } => {
                let backup = format!(
                    "/etc/hosts.moosectl-{}",
                    crate::engine::deploy::backup_stamp()
                );
                script(
                    m.as_ref(),
                    "adding the /etc/hosts line",
                    HOSTS_SCRIPT,
                    &[line.clone(), backup.clone()],
                )
                .await
                .map(|_| ())
                .map_err(|e| format!("{e} (the old file is kept as {backup} when it was copied)"))
            }
        };
        out.push(FixOutcome {
            check,
            host: host.clone(),
            fix: shown.clone(),
            applied: result.is_ok(),
            message: result.err(),
        });
    }
    out
}
