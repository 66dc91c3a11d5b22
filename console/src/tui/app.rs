//! The console's state: plain data, changed only by [`crate::tui::update::update`] and read by
//! [`crate::tui::ui::draw`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moose_inventory::Role;
use moose_proto::msg::ClusterInfo;
use tui_input::Input;

use crate::engine::exec::{Progress, StepState};
use crate::engine::logs::{Filter, LogBuffer, LINES_PER_SOURCE};
use crate::engine::model::Model;
use crate::engine::monitor::Snapshot;
use crate::engine::plan::Plan;

/// The panes, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pane {
    Overview,
    Servers,
    Disks,
    Replication,
    Logs,
    Exports,
    Doctor,
    Quotas,
}

impl Pane {
    pub const ALL: [Pane; 8] = [
        Pane::Overview,
        Pane::Servers,
        Pane::Disks,
        Pane::Replication,
        Pane::Logs,
        Pane::Exports,
        Pane::Doctor,
        Pane::Quotas,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Pane::Overview => "Overview",
            Pane::Servers => "Servers",
            Pane::Disks => "Disks",
            Pane::Replication => "Replication",
            Pane::Logs => "Logs",
            Pane::Exports => "Exports",
            Pane::Doctor => "Doctor",
            Pane::Quotas => "Quotas",
        }
    }

    pub fn index(self) -> usize {
        Pane::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }
}

/// How loud a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// A one-line message in the footer that goes away by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub text: String,
    pub level: Level,
    pub until: Instant,
}

/// How long a footer message stays.
pub const FLASH_TIME: Duration = Duration::from_secs(8);

/// What a confirmation dialog does when confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmed {
    RunPlan(Plan),
    Quit,
    TrustHostKey(crate::engine::host::UnknownKey),
    /// Apply this finding's safe fix, then check again.
    ApplyFix(Box<crate::doctor::Finding>),
}

/// A question whose safe answer (Cancel) is the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub title: String,
    /// Lines shown above the buttons.
    pub body: Vec<String>,
    /// The label of the confirming button (`Stop`, `Restart`, `Quit`).
    pub yes: String,
    /// True when the confirming button has the focus (starts false: Cancel).
    pub focus_yes: bool,
    pub then: Confirmed,
}

/// What keys do right now.
#[derive(Debug, Clone, Default)]
pub enum Mode {
    #[default]
    Normal,
    /// Typing a filter for the current pane (`/`).
    Filter(Input),
    /// Typing a command (`:`).
    Palette(Input),
    Help,
    Confirm(Dialog),
}

/// A plan being carried out (or just finished).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub plan: Plan,
    /// Per stage, per step: state and last message.
    pub steps: Vec<Vec<(StepState, String)>>,
    pub stage: Option<usize>,
    pub started: Instant,
    /// Success, message and how long the plan took.
    pub finished: Option<(bool, String, Duration)>,
}

impl Operation {
    pub fn new(plan: Plan, now: Instant) -> Operation {
        let steps = plan
            .stages
            .iter()
            .map(|s| {
                s.steps
                    .iter()
                    .map(|_| (StepState::Pending, String::new()))
                    .collect()
            })
            .collect();
        Operation {
            plan,
            steps,
            stage: None,
            started: now,
            finished: None,
        }
    }

    pub fn running(&self) -> bool {
        self.finished.is_none()
    }

    pub fn apply(&mut self, p: &Progress) {
        match p {
            Progress::Stage { stage, .. } => self.stage = Some(*stage),
            Progress::Step {
                stage,
                step,
                state,
                message,
                ..
            } => {
                if let Some(s) = self.steps.get_mut(*stage).and_then(|s| s.get_mut(*step)) {
                    *s = (*state, message.clone());
                }
            }
            Progress::Finished {
                ok,
                message,
                elapsed_ms,
            } => {
                self.finished = Some((*ok, message.clone(), Duration::from_millis(*elapsed_ms)));
            }
        }
    }

    /// The state of the step acting on model instance `idx`, if this operation has one that
    /// is under way.
    pub fn busy_with(&self, idx: usize) -> Option<(crate::engine::plan::StepKind, StepState)> {
        let stage = self.stage?;
        let st = self.plan.stages.get(stage)?;
        st.steps.iter().enumerate().find_map(|(k, step)| {
            let state = self.steps[stage][k].0;
            (step.kind != crate::engine::plan::StepKind::Deploy
                && step.instances.first() == Some(&idx)
                && matches!(state, StepState::Running | StepState::Waiting))
            .then_some((step.kind, state))
        })
    }
}

/// A counter turned into a rate, with a history for the sparkline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rate {
    last: Option<(Instant, u64)>,
    /// Recent samples (value, when), oldest first, for a smoothed rate.
    window: VecDeque<(Instant, u64)>,
    /// Per-second rates, oldest first.
    pub history: VecDeque<u64>,
}

/// Samples kept for the sparkline.
pub const RATE_HISTORY: usize = 300;
/// Samples the smoothed rate spans.
const RATE_WINDOW: usize = 10;

impl Rate {
    /// Adds a reading of the counter; a counter that went back (restart) starts over.
    pub fn sample(&mut self, at: Instant, total: u64) {
        if let Some((t0, v0)) = self.last {
            if total < v0 {
                self.window.clear();
            } else if at > t0 {
                let dt = at.duration_since(t0).as_secs_f64();
                let r = ((total - v0) as f64 / dt).round() as u64;
                if self.history.len() == RATE_HISTORY {
                    self.history.pop_front();
                }
                self.history.push_back(r);
            }
        }
        self.last = Some((at, total));
        if self.window.len() == RATE_WINDOW {
            self.window.pop_front();
        }
        self.window.push_back((at, total));
    }

    /// The last per-second rate.
    pub fn now(&self) -> Option<u64> {
        self.history.back().copied()
    }

    /// The rate over the last few samples, per second.
    pub fn smoothed(&self) -> Option<f64> {
        let (t0, v0) = *self.window.front()?;
        let (t1, v1) = *self.window.back()?;
        let dt = t1.checked_duration_since(t0)?.as_secs_f64();
        (dt > 0.0 && v1 >= v0).then(|| (v1 - v0) as f64 / dt)
    }
}

/// The whole console state.
#[derive(Debug)]
pub struct App {
    pub model: Arc<Model>,
    /// Start, stop and restart are refused (`--readonly`).
    pub readonly: bool,
    /// No colours (`NO_COLOR`).
    pub mono: bool,
    pub pane: Pane,
    /// Columns, rows.
    pub size: (u16, u16),
    pub now: Instant,
    pub mode: Mode,
    pub snapshot: Option<Snapshot>,
    pub ops: Rate,
    pub replication: Rate,
    pub logs: LogBuffer,
    /// Log source of each model instance.
    pub log_source_of: Vec<usize>,
    /// `None`: every source.
    pub log_source: Option<usize>,
    /// Keep the newest line in view.
    pub log_follow: bool,
    /// Lines above the newest when not following.
    pub log_scroll: usize,
    /// Selected row per pane.
    pub selected: [usize; 8],
    /// Filter text per pane.
    pub filters: [String; 8],
    pub operation: Option<Operation>,
    /// The last doctor report (the Doctor pane).
    pub doctor: Option<crate::doctor::Report>,
    /// A doctor run (or a fix and its re-run) is under way.
    pub doctor_running: bool,
    /// The operation panel is shown.
    pub show_operation: bool,
    pub flash: Option<Flash>,
    pub quit: bool,
    /// Something visible changed since the last draw.
    pub dirty: bool,
}

impl App {
    pub fn new(model: Arc<Model>, readonly: bool, mono: bool, now: Instant) -> App {
        let several_hosts = model.inventory.hosts.len() > 1;
        let (groups, log_source_of) = model.log_groups(0..model.instances.len());
        let sources = groups
            .iter()
            .map(|g| {
                let i = &model.instances[g.first];
                let label = match (i.role, several_hosts) {
                    (Role::Client, false) => "mount".to_string(),
                    (Role::Client, true) => format!("mount@{}", i.host),
                    (_, false) => i.name.clone(),
                    (_, true) => format!("{}@{}", i.name, i.host),
                };
                (label, g.host.clone(), g.path.clone())
            })
            .collect();
        let mut logs = LogBuffer::new(sources, LINES_PER_SOURCE);
        for (k, g) in groups.into_iter().enumerate() {
            logs.keep_only_mounts(k, g.mounts);
        }
        App {
            logs,
            log_source_of,
            model,
            readonly,
            mono,
            pane: Pane::Overview,
            size: (0, 0),
            now,
            mode: Mode::Normal,
            snapshot: None,
            ops: Rate::default(),
            replication: Rate::default(),
            log_source: None,
            log_follow: true,
            log_scroll: 0,
            selected: [0; 8],
            doctor: None,
            doctor_running: false,
            filters: Default::default(),
            operation: None,
            show_operation: false,
            flash: None,
            quit: false,
            dirty: true,
        }
    }

    /// The master's last answer.
    pub fn info(&self) -> Option<&ClusterInfo> {
        self.snapshot.as_ref().and_then(|s| s.master.as_ref().ok())
    }

    /// Why there is no master answer (`None` when there is one).
    pub fn master_problem(&self) -> Option<String> {
        match &self.snapshot {
            None => Some("waiting for the first status poll".to_string()),
            Some(s) => s.master.as_ref().err().cloned(),
        }
    }

    pub fn filter(&self, pane: Pane) -> &str {
        &self.filters[pane.index()]
    }

    pub fn log_filter(&self) -> Filter {
        Filter::parse(self.filter(Pane::Logs))
    }

    pub fn operation_running(&self) -> bool {
        self.operation.as_ref().is_some_and(Operation::running)
    }

    pub fn flash(&mut self, level: Level, text: impl Into<String>) {
        self.flash = Some(Flash {
            text: text.into(),
            level,
            until: self.now + FLASH_TIME,
        });
    }
}
