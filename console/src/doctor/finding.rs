//! What a check found, and the report of a whole run.

use std::path::PathBuf;

use serde::Serialize;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Info,
    Warning,
    Error,
    /// The check could not run (its host did not answer).
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Info => "info",
            Status::Warning => "warning",
            Status::Error => "error",
            Status::Skipped => "skipped",
        }
    }

    /// Sort key: the worst first.
    pub fn severity(self) -> u8 {
        match self {
            Status::Error => 4,
            Status::Warning => 3,
            Status::Skipped => 2,
            Status::Info => 1,
            Status::Ok => 0,
        }
    }
}

/// A fix `--fix` may apply by itself: small, undoable, and only on the finding's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FixAction {
    /// `chown -R OWNER DIR` (OWNER is `user:group`).
    Chown { dir: PathBuf, owner: String },
    /// Appends `LINE` to `/etc/hosts` after a backup.
    HostsLine { line: String },
}

/// One finding of one check on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    /// The host the check starts from.
    pub host: String,
    pub status: Status,
    pub summary: String,
    /// What was seen: file lines, command answers, owners and modes.
    pub evidence: Vec<String>,
    /// One exact command (or inventory text) that fixes it.
    pub fix: Option<String>,
    /// Whether `--fix` applies the fix by itself.
    pub safe_fix: bool,
    #[serde(skip)]
    pub action: Option<FixAction>,
    /// The ports check's connection (its fields join the result's).
    #[serde(flatten)]
    pub port: Option<PortProbe>,
}

/// One connection the ports check tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortProbe {
    /// The host the connection starts from.
    pub from: String,
    /// The host it goes to.
    pub to: String,
    pub port: u16,
    /// `open`, `filtered`, `rejected`, `blocked-locally`, `not-listening`.
    pub verdict: &'static str,
    /// The firewall tool whose rule stops it, when one was found.
    pub tool: Option<&'static str>,
}

impl Finding {
    pub fn new(
        check: &'static str,
        host: &str,
        status: Status,
        summary: impl Into<String>,
    ) -> Self {
        Finding {
            check,
            host: host.to_string(),
            status,
            summary: summary.into(),
            evidence: Vec::new(),
            fix: None,
            safe_fix: false,
            action: None,
            port: None,
        }
    }

    pub fn evidence(mut self, line: impl Into<String>) -> Self {
        self.evidence.push(line.into());
        self
    }

    pub fn fix(mut self, command: impl Into<String>) -> Self {
        self.fix = Some(command.into());
        self
    }

    /// A fix `--fix` applies; the command shown is the action's.
    pub fn safe(mut self, action: FixAction) -> Self {
        self.fix = Some(match &action {
            FixAction::Chown { dir, owner } => {
                format!("chown -R {owner} {}", shell_word(&dir.to_string_lossy()))
            }
            FixAction::HostsLine { line } => format!("echo '{line}' >> /etc/hosts"),
        });
        self.safe_fix = true;
        self.action = Some(action);
        self
    }

    /// The check's host did not answer (or a host it needs did not).
    pub fn skipped(check: &'static str, host: &str, why: &str) -> Self {
        Finding::new(check, host, Status::Skipped, why.to_string())
    }
}

/// A word as a shell reads it back: quoted only when it needs to be.
pub fn shell_word(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@,".contains(c))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// How many findings of each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub ok: usize,
    pub info: usize,
    pub warning: usize,
    pub error: usize,
    pub skipped: usize,
}

impl Counts {
    pub fn of(results: &[Finding]) -> Counts {
        let mut c = Counts::default();
        for r in results {
            *match r.status {
                Status::Ok => &mut c.ok,
                Status::Info => &mut c.info,
                Status::Warning => &mut c.warning,
                Status::Error => &mut c.error,
                Status::Skipped => &mut c.skipped,
            } += 1;
        }
        c
    }
}

/// What `--fix` did with one safe fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FixOutcome {
    pub check: &'static str,
    pub host: String,
    pub fix: String,
    pub applied: bool,
    /// What went wrong, or why nothing was done.
    pub message: Option<String>,
}

/// A whole run: `moosectl doctor --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub cluster: String,
    pub inventory: String,
    /// No error (with `--strict`: no warning either).
    pub ok: bool,
    pub counts: Counts,
    pub elapsed_ms: u64,
    /// Worst first, then by check and host.
    pub results: Vec<Finding>,
    /// After `--fix`: what was applied (the results are then the re-run's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixes: Option<Vec<FixOutcome>>,
}

impl Report {
    pub fn new(
        cluster: String,
        inventory: String,
        mut results: Vec<Finding>,
        elapsed_ms: u64,
        strict: bool,
    ) -> Report {
        results.sort_by(|a, b| {
            b.status
                .severity()
                .cmp(&a.status.severity())
                .then(a.check.cmp(b.check))
                .then(a.host.cmp(&b.host))
        });
        let counts = Counts::of(&results);
        Report {
            cluster,
            inventory,
            ok: passes(&counts, strict),
            counts,
            elapsed_ms,
            results,
            fixes: None,
        }
    }

    /// The findings `--fix` can apply.
    pub fn safe_fixes(&self) -> Vec<&Finding> {
        self.results.iter().filter(|f| f.action.is_some()).collect()
    }
}

/// Exit 0 without errors (`--strict`: nor warnings).
pub fn passes(c: &Counts, strict: bool) -> bool {
    c.error == 0 && (!strict || c.warning == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_sorts_worst_first_and_counts() {
        let r = Report::new(
            "c".into(),
            "i".into(),
            vec![
                Finding::new("clock", "b", Status::Ok, "fine"),
                Finding::new("fuse", "a", Status::Warning, "w"),
                Finding::new("exports", "a", Status::Error, "e"),
                Finding::new("disks", "a", Status::Info, "i"),
            ],
            5,
            false,
        );
        let order: Vec<&str> = r.results.iter().map(|f| f.check).collect();
        assert_eq!(order, ["exports", "fuse", "disks", "clock"]);
        assert_eq!(r.counts.error, 1);
        assert!(!r.ok);
        let c = Counts {
            warning: 1,
            ..Counts::default()
        };
        assert!(passes(&c, false));
        assert!(!passes(&c, true));
    }

    #[test]
    fn safe_fix_shows_its_exact_command_and_json_keeps_the_shape() {
        let f = Finding::new("data-path", "h", Status::Error, "x").safe(FixAction::Chown {
            dir: PathBuf::from("/var/lib/my data"),
            owner: "mfs:mfs".into(),
        });
        assert_eq!(
            f.fix.as_deref(),
            Some("chown -R mfs:mfs '/var/lib/my data'")
        );
        let v = serde_json::to_value(&f).unwrap();
        let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["check", "evidence", "fix", "host", "safe_fix", "status", "summary"]
        );
        assert_eq!(v["status"], "error");
    }
}
