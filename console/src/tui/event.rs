//! What flows into [`crate::tui::update::update`] and what comes out of it.

use std::time::Instant;

use crossterm::event::KeyEvent;

use crate::engine::exec::Progress;
use crate::engine::logs::LogEvent;
use crate::engine::monitor::Snapshot;
use crate::engine::plan::Plan;

/// Something happened.
#[derive(Debug, Clone)]
pub enum Event {
    Key(KeyEvent),
    /// The terminal has a new size (columns, rows).
    Resize(u16, u16),
    /// Once a second: time moves on (elapsed counters, messages that expire).
    Tick(Instant),
    /// A new status snapshot.
    Monitor(Box<Snapshot>),
    /// New lines (or a remark) from a followed log.
    Log(LogEvent),
    /// The running plan moved on.
    Progress(Progress),
    /// Something the console failed at, to show.
    Error(String),
    /// An SSH host offered a key that no known_hosts entry names.
    UnknownHostKey(crate::engine::host::UnknownKey),
    /// What a deploy plan would change (the preflight of every host), or why it cannot run.
    DeployPreview {
        plan: Box<Plan>,
        diff: Result<Vec<String>, Vec<String>>,
    },
    /// A doctor run finished (after a fix: the re-run), with what the fix said if it failed.
    Doctor(Box<crate::doctor::Report>, Option<String>),
}

/// Work for the tasks outside the state: each runs on a tokio task and sends events back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Carry out this plan.
    RunPlan(Plan),
    /// Poll the monitor now instead of at the next second.
    Refresh,
    /// Add this host key to its known_hosts file.
    TrustHostKey(crate::engine::host::UnknownKey),
    /// Run deploy's preflight on the hosts of this deploy plan and send the diff.
    PreviewDeploy(Plan),
    /// Run every doctor check and send the report.
    RunDoctor,
    /// Apply one finding's safe fix, then run the doctor again.
    ApplyFix(crate::doctor::Finding),
}
