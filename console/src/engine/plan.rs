//! Plans: every action (start, stop, restart) is a list of stages, each a set of steps that
//! run side by side, each step followed by the gate it must pass before the next stage. A plan
//! is built from the model alone (pure), shown, then carried out by [`crate::engine::exec`].
//!
//! Start: deploy → master (answers status) → metaloggers (connected) → chunkservers
//! (registered) → clients (mounted, statfs works). Stop: clients (unmounted) → chunkservers →
//! metaloggers → master (last, writing its dump).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use moose_inventory::{Role, RoleInstance};
use serde::Serialize;

use crate::engine::deploy;
use crate::engine::model::{Model, Target};

/// What a plan does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Start,
    Stop,
    Restart,
    /// Binaries, config files and folders only (the first stage of start).
    Deploy,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Deploy => "deploy",
        }
    }
}

/// A whole action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub action: Action,
    pub cluster: String,
    /// The `ROLE[@HOST]` the plan is limited to, if any.
    pub target: Option<String>,
    pub stages: Vec<Stage>,
}

/// Steps that run side by side; the next stage starts when all passed their gates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    pub title: String,
    pub steps: Vec<Step>,
}

/// One thing done on one host, and what must hold afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub host: String,
    /// Indexes into [`Model::instances`]: the instance acted on, or for a deploy step the
    /// plan's instances on that host.
    #[serde(skip)]
    pub instances: Vec<usize>,
    /// `host/name` of the instance, or the host for a deploy step.
    pub name: String,
    pub kind: StepKind,
    /// What the step does: commands as `$ shell line` (for showing; no shell is used
    /// locally), other work in words.
    pub does: Vec<String>,
    pub gate: Option<Gate>,
    /// How long the gate may take.
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// Config files and folders of the plan's instances on one host.
    Deploy,
    Start,
    Mount,
    Stop,
    Unmount,
}

/// What a step waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Gate {
    /// The master answers a status query on its client port.
    MasterAnswers { address: String, port: u16 },
    /// The master lists a metalogger connected from this address.
    MetaloggerConnected { address: String },
    /// The master lists this chunkserver as connected.
    ChunkserverRegistered { address: String, port: u16 },
    /// The mount point is in /proc/mounts and statvfs works there.
    Mounted { mount_point: PathBuf },
    /// The daemon's `status` says it is not running.
    Stopped,
    /// The mount point is gone from /proc/mounts and its moose-mount process has exited.
    Unmounted { mount_point: PathBuf },
}

impl Gate {
    /// The kind of gate in words, without the particular instance ("until ...").
    pub fn summary(&self) -> &'static str {
        match self {
            Gate::MasterAnswers { .. } => "the master answers status",
            Gate::MetaloggerConnected { .. } => "the master lists it as connected",
            Gate::ChunkserverRegistered { .. } => "the master lists it as registered",
            Gate::Mounted { .. } => "mounted and statfs works",
            Gate::Stopped => "status says it stopped",
            Gate::Unmounted { .. } => "unmounted and moose-mount exited",
        }
    }

    /// The gate in words, as "waiting for ...".
    pub fn describe(&self) -> String {
        match self {
            Gate::MasterAnswers { address, port } => {
                format!("master answers status on {address}:{port}")
            }
            Gate::MetaloggerConnected { address } => {
                format!("master lists a metalogger connected from {address}")
            }
            Gate::ChunkserverRegistered { address, port } => {
                format!("chunkserver {address}:{port} registered with the master")
            }
            Gate::Mounted { mount_point } => {
                format!("{} mounted and statfs works", mount_point.display())
            }
            Gate::Stopped => "status says it is not running".to_string(),
            Gate::Unmounted { mount_point } => {
                format!(
                    "{} unmounted and its moose-mount exited",
                    mount_point.display()
                )
            }
        }
    }
}

/// How long each gate may take.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEPLOY_TIMEOUT: Duration = Duration::from_secs(60);

impl Plan {
    /// Number of steps in the whole plan.
    pub fn step_count(&self) -> usize {
        self.stages.iter().map(|s| s.steps.len()).sum()
    }

    /// The plan in words, one line per stage and step (what `moosectl plan` prints).
    pub fn describe(&self) -> String {
        let n = self.stages.len();
        let mut out = format!(
            "{} plan for cluster \"{}\"{}: {n} {}\n",
            self.action.as_str(),
            self.cluster,
            self.target
                .as_ref()
                .map(|t| format!(" ({t})"))
                .unwrap_or_default(),
            if n == 1 { "stage" } else { "stages" }
        );
        for (i, stage) in self.stages.iter().enumerate() {
            out.push_str(&format!("{}. {}\n", i + 1, stage.title));
            for step in &stage.steps {
                out.push_str(&format!("   - {} {}\n", step.kind.as_str(), step.name));
                for d in &step.does {
                    out.push_str(&format!("       {d}\n"));
                }
                if let Some(g) = &step.gate {
                    out.push_str(&format!(
                        "       gate: {} (timeout {} s)\n",
                        g.describe(),
                        step.timeout_secs
                    ));
                }
            }
        }
        out
    }
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Deploy => "deploy",
            StepKind::Start => "start",
            StepKind::Mount => "mount",
            StepKind::Stop => "stop",
            StepKind::Unmount => "unmount",
        }
    }
}

/// Plural stage titles by role.
fn role_title(role: Role) -> &'static str {
    match role {
        Role::Master => "master",
        Role::Metalogger => "metaloggers",
        Role::Chunkserver => "chunkservers",
        Role::Client => "clients",
    }
}

fn start_step(model: &Model, idx: usize) -> Step {
    let i = &model.instances[idx];
    let (kind, gate, timeout) = match i.role {
        Role::Master => (
            StepKind::Start,
            Gate::MasterAnswers {
                address: i.address.clone(),
                port: model.master_client_port(),
            },
            START_TIMEOUT,
        ),
        Role::Metalogger => (
            StepKind::Start,
            Gate::MetaloggerConnected {
                address: i.address.clone(),
            },
            START_TIMEOUT,
        ),
        Role::Chunkserver => (
            StepKind::Start,
            Gate::ChunkserverRegistered {
                address: i.address.clone(),
                port: i.listens.first().copied().unwrap_or_default(),
            },
            START_TIMEOUT,
        ),
        Role::Client => (
            StepKind::Mount,
            Gate::Mounted {
                mount_point: i.mount_point.clone().unwrap_or_default(),
            },
            MOUNT_TIMEOUT,
        ),
    };
    Step {
        host: i.host.clone(),
        instances: vec![idx],
        name: i.id(),
        kind,
        does: vec![format!("$ {}", i.start.shell_line())],
        gate: Some(gate),
        timeout_secs: timeout.as_secs(),
    }
}

fn stop_step(model: &Model, idx: usize) -> Step {
    let i = &model.instances[idx];
    let (kind, gate) = match (i.role, &i.mount_point) {
        (Role::Client, Some(m)) => (
            StepKind::Unmount,
            Gate::Unmounted {
                mount_point: m.clone(),
            },
        ),
        _ => (StepKind::Stop, Gate::Stopped),
    };
    let mut does = vec![format!("$ {}", i.stop.shell_line())];
    if let Some(f) = &i.stop_fallback {
        does.push(format!("$ {}   (if the first fails)", f.shell_line()));
    }
    Step {
        host: i.host.clone(),
        instances: vec![idx],
        name: i.id(),
        kind,
        does,
        gate: Some(gate),
        timeout_secs: STOP_TIMEOUT.as_secs(),
    }
}

/// One deploy step per host of `picked`.
fn deploy_stage(model: &Model, picked: &[usize]) -> Option<Stage> {
    let hosts: BTreeSet<&str> = picked
        .iter()
        .map(|&i| model.instances[i].host.as_str())
        .collect();
    if hosts.is_empty() {
        return None;
    }
    let steps = model
        .inventory
        .hosts
        .iter()
        .filter(|h| hosts.contains(h.name.as_str()))
        .map(|h| Step {
            host: h.name.clone(),
            instances: picked
                .iter()
                .copied()
                .filter(|&i| model.instances[i].host == h.name)
                .collect(),
            name: h.name.clone(),
            kind: StepKind::Deploy,
            does: deploy::Work::of(model, &h.name, picked).describe(),
            gate: None,
            timeout_secs: DEPLOY_TIMEOUT.as_secs(),
        })
        .collect();
    Some(Stage {
        title: "deploy: binaries, config files and folders".to_string(),
        steps,
    })
}

/// Groups steps into stages by role, in the order given.
fn by_role(
    model: &Model,
    picked: &[usize],
    order: &[Role],
    step: fn(&Model, usize) -> Step,
    verb: &str,
) -> Vec<Stage> {
    order
        .iter()
        .filter_map(|&role| {
            let steps: Vec<Step> = picked
                .iter()
                .filter(|&&i| model.instances[i].role == role)
                .map(|&i| step(model, i))
                .collect();
            (!steps.is_empty()).then(|| Stage {
                title: format!("{verb} {}", role_title(role)),
                steps,
            })
        })
        .collect()
}

fn new_plan(model: &Model, action: Action, target: Option<&Target>, stages: Vec<Stage>) -> Plan {
    Plan {
        action,
        cluster: model.inventory.cluster.name.clone(),
        target: target.map(Target::to_string),
        stages,
    }
}

/// Start every instance `target` names (all without one), in role order.
pub fn start(model: &Model, target: Option<&Target>) -> Result<Plan, String> {
    let picked = model.select(target)?;
    let mut stages: Vec<Stage> = deploy_stage(model, &picked).into_iter().collect();
    stages.extend(by_role(model, &picked, &Role::ALL, start_step, "start"));
    Ok(new_plan(model, Action::Start, target, stages))
}

/// Stop every instance `target` names (all without one), in reverse role order.
pub fn stop(model: &Model, target: Option<&Target>) -> Result<Plan, String> {
    let picked = model.select(target)?;
    let mut order = Role::ALL;
    order.reverse();
    let stages = by_role(model, &picked, &order, stop_step, "stop");
    Ok(new_plan(model, Action::Stop, target, stages))
}

/// Stop then start the instances `target` names.
pub fn restart(model: &Model, target: &Target) -> Result<Plan, String> {
    let stop = stop(model, Some(target))?;
    let start = start(model, Some(target))?;
    let mut stages = stop.stages;
    stages.extend(start.stages);
    Ok(new_plan(model, Action::Restart, Some(target), stages))
}

/// The plan of `action` for `target`.
pub fn build(model: &Model, action: Action, target: Option<&Target>) -> Result<Plan, String> {
    match (action, target) {
        (Action::Start, t) => start(model, t),
        (Action::Stop, t) => stop(model, t),
        (Action::Restart, Some(t)) => restart(model, t),
        (Action::Deploy, t) => {
            let picked = model.select(t)?;
            let stages = deploy_stage(model, &picked).into_iter().collect();
            Ok(new_plan(model, Action::Deploy, t, stages))
        }
        (Action::Restart, None) => {
            Err("restart needs a ROLE[@HOST], e.g. moosectl restart chunkserver-9422@cs1".into())
        }
    }
}

/// The instance a step acts on (none for a deploy step).
pub fn instance<'a>(model: &'a Model, step: &Step) -> Option<&'a RoleInstance> {
    match step.kind {
        StepKind::Deploy => None,
        _ => step.instances.first().map(|&i| &model.instances[i]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::tests::local_model;

    #[test]
    fn start_goes_master_metaloggers_chunkservers_clients() {
        let m = local_model();
        let p = start(&m, None).unwrap();
        let titles: Vec<&str> = p.stages.iter().map(|s| s.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "deploy: binaries, config files and folders",
                "start master",
                "start metaloggers",
                "start chunkservers",
                "start clients"
            ]
        );
        assert_eq!(p.stages[3].steps.len(), 3);
        assert_eq!(
            p.stages[3].steps[1].gate,
            Some(Gate::ChunkserverRegistered {
                address: "127.0.0.1".into(),
                port: 19432
            })
        );
        assert_eq!(p.stages[4].steps[0].kind, StepKind::Mount);
        assert_eq!(p.step_count(), 7);
    }

    #[test]
    fn stop_goes_clients_first_and_master_last() {
        let m = local_model();
        let p = stop(&m, None).unwrap();
        let titles: Vec<&str> = p.stages.iter().map(|s| s.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "stop clients",
                "stop chunkservers",
                "stop metaloggers",
                "stop master"
            ]
        );
        let unmount = &p.stages[0].steps[0];
        assert_eq!(unmount.kind, StepKind::Unmount);
        assert_eq!(
            unmount.does,
            [
                "$ fusermount3 -u /var/lib/moosectl/mnt",
                "$ umount /var/lib/moosectl/mnt   (if the first fails)"
            ]
        );
    }

    #[test]
    fn targets_limit_the_plan() {
        let m = local_model();
        let t = Target::parse("chunkserver-19442").unwrap();
        let p = restart(&m, &t).unwrap();
        let titles: Vec<&str> = p.stages.iter().map(|s| s.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "stop chunkservers",
                "deploy: binaries, config files and folders",
                "start chunkservers"
            ]
        );
        assert_eq!(p.stages[2].steps.len(), 1);
        assert_eq!(p.target.as_deref(), Some("chunkserver-19442"));
        let client_only = start(&m, Some(&Target::parse("client").unwrap())).unwrap();
        assert_eq!(client_only.stages.len(), 2);
        assert_eq!(
            client_only.stages[0].steps[0].does,
            [
                "check binaries: moose-mount, moose-tool",
                "$ install -d -o root /var/lib/moosectl/mnt",
                "(a mount point that is mounted already is left as it is)"
            ],
            "clients have no config files"
        );
        assert!(build(&m, Action::Restart, None).is_err());
    }

    #[test]
    fn plan_in_words_and_json() {
        let m = local_model();
        let p = stop(&m, Some(&Target::parse("master").unwrap())).unwrap();
        assert_eq!(
            p.describe(),
            "stop plan for cluster \"local\" (master): 1 stage\n\
             1. stop master\n   \
             - stop local/master\n       \
             $ /var/lib/moosectl/bin/moose-master -c /var/lib/moosectl/etc/master.cfg stop\n       \
             gate: status says it is not running (timeout 60 s)\n"
        );
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["action"], "stop");
        assert_eq!(v["stages"][0]["steps"][0]["gate"]["kind"], "stopped");
        assert_eq!(v["stages"][0]["steps"][0]["name"], "local/master");
    }
}
