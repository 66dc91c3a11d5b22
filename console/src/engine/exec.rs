//! Carrying out a [`Plan`]: stage after stage, the steps of a stage side by side, each step
//! followed by its gate. Progress goes out as [`Progress`] events; the first failed stage
//! stops the plan.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moose_inventory::{Command, RoleInstance};
use moose_proto::msg::{ClusterInfo, MetaloggerInfo};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::engine::deploy;
use crate::engine::host::{Finished, HostError, Machine, OutputLine};
use crate::engine::master::MasterLink;
use crate::engine::model::Fleet;
use crate::engine::plan::{Gate, Plan, Step, StepKind};
use crate::engine::probe::{self, Process};

/// How often a gate is checked.
const GATE_POLL: Duration = Duration::from_millis(250);
/// How long a start or stop command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(330);

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Pending,
    Running,
    Waiting,
    Done,
    Skipped,
    Failed,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Waiting => "waiting",
            StepState::Done => "done",
            StepState::Skipped => "skipped",
            StepState::Failed => "failed",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            StepState::Done | StepState::Skipped | StepState::Failed
        )
    }
}

/// What a running plan reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    Stage {
        stage: usize,
        title: String,
    },
    Step {
        stage: usize,
        step: usize,
        name: String,
        state: StepState,
        message: String,
    },
    Finished {
        ok: bool,
        message: String,
        elapsed_ms: u64,
    },
}

/// Runs `plan` on `cluster`, reporting to `progress`; true when every stage passed.
pub async fn run(cluster: &Fleet, plan: &Plan, progress: mpsc::Sender<Progress>) -> bool {
    let started = Instant::now();
    let link = Arc::new(tokio::sync::Mutex::new(MasterLink::new(
        &cluster.model.master_address(),
        cluster.model.master_client_port(),
    )));
    let mut skipped = 0;
    for (si, stage) in plan.stages.iter().enumerate() {
        let _ = progress
            .send(Progress::Stage {
                stage: si,
                title: stage.title.clone(),
            })
            .await;
        if stage.steps.iter().any(|s| s.kind == StepKind::Deploy) {
            if let Err(why) = run_deploy_stage(cluster, si, stage, &progress).await {
                let message = format!(
                    "{} failed at stage {} of {} ({}): {why}",
                    plan.action.as_str(),
                    si + 1,
                    plan.stages.len(),
                    stage.title,
                );
                finish(&progress, false, message, started).await;
                return false;
            }
            continue;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (pi, step) in stage.steps.iter().enumerate() {
            let reporter = Reporter {
                tx: progress.clone(),
                stage: si,
                step: pi,
                name: step.name.clone(),
            };
            let (cluster, step, link) = (cluster.clone(), step.clone(), link.clone());
            tasks.spawn(async move {
                let _slot = cluster.slots.clone().acquire_owned().await;
                run_step(&cluster, &step, &link, &reporter).await
            });
        }
        let mut failures = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(StepEnd::Done) => {}
                Ok(StepEnd::Skipped) => skipped += 1,
                Ok(StepEnd::Failed(why)) => failures.push(why),
                Err(e) => failures.push(format!("a step of \"{}\" crashed: {e}", stage.title)),
            }
        }
        if !failures.is_empty() {
            let message = format!(
                "{} failed at stage {} of {} ({}): {}; the later stages were not run",
                plan.action.as_str(),
                si + 1,
                plan.stages.len(),
                stage.title,
                failures.join("; ")
            );
            finish(&progress, false, message, started).await;
            return false;
        }
    }
    let message = if skipped > 0 {
        format!(
            "{} done; {skipped} step(s) skipped (see above)",
            plan.action.as_str()
        )
    } else {
        format!("{} done", plan.action.as_str())
    };
    finish(&progress, true, message, started).await;
    true
}

/// A deploy stage: every host checked, then every host staged, and only then every host
/// committed, so that a failure anywhere leaves the old version running everywhere.
async fn run_deploy_stage(
    cluster: &Fleet,
    si: usize,
    stage: &crate::engine::plan::Stage,
    progress: &mpsc::Sender<Progress>,
) -> Result<(), String> {
    let reporters: Vec<Reporter> = stage
        .steps
        .iter()
        .enumerate()
        .map(|(pi, step)| Reporter {
            tx: progress.clone(),
            stage: si,
            step: pi,
            name: step.name.clone(),
        })
        .collect();
    let steps: Vec<&Step> = stage.steps.iter().collect();
    for (r, step) in reporters.iter().zip(&steps) {
        r.say(StepState::Running, format!("checking {}", step.host))
            .await;
    }
    let hosts = match deploy::preflight_all(cluster, &steps).await {
        Ok(h) => h,
        Err(errors) => {
            for r in &reporters {
                r.say(StepState::Failed, "not deployed: a host failed its check")
                    .await;
            }
            return Err(format!(
                "{}; nothing was changed on any host",
                errors.join("; ")
            ));
        }
    };
    for (r, h) in reporters.iter().zip(&hosts) {
        r.say(
            StepState::Running,
            format!("staging {} changes on {}", h.changes.pushes(), h.work.host),
        )
        .await;
    }
    let staged = match deploy::stage_all(cluster, &hosts).await {
        Ok(s) => s,
        Err(errors) => {
            for r in &reporters {
                r.say(StepState::Failed, "not deployed: a host failed to stage")
                    .await;
            }
            return Err(format!(
                "{}; nothing was replaced on any host",
                errors.join("; ")
            ));
        }
    };
    let mut failures = Vec::new();
    for (r, done) in reporters
        .iter()
        .zip(deploy::commit_all(cluster, &hosts, &staged).await)
    {
        match done {
            Ok(summary) => r.say(StepState::Done, summary).await,
            Err(e) => {
                let why = e.to_string();
                r.say(StepState::Failed, why.clone()).await;
                failures.push(format!("{}: {why}", r.name));
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

async fn finish(progress: &mpsc::Sender<Progress>, ok: bool, message: String, started: Instant) {
    let _ = progress
        .send(Progress::Finished {
            ok,
            message,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
        .await;
}

/// How a step ended.
enum StepEnd {
    Done,
    Skipped,
    Failed(String),
}

struct Reporter {
    tx: mpsc::Sender<Progress>,
    stage: usize,
    step: usize,
    name: String,
}

impl Reporter {
    async fn say(&self, state: StepState, message: impl Into<String>) {
        let _ = self
            .tx
            .send(Progress::Step {
                stage: self.stage,
                step: self.step,
                name: self.name.clone(),
                state,
                message: message.into(),
            })
            .await;
    }

    async fn fail(&self, why: String) -> StepEnd {
        self.say(StepState::Failed, why.clone()).await;
        StepEnd::Failed(format!("{}: {why}", self.name))
    }
}

/// What the action part of a step found.
enum Acted {
    /// Go on to the gate, with this message.
    Gate(String),
    /// Nothing to do (already in the wanted state), with the reason; the gate still runs.
    Already(String),
    /// Not done and not an error (e.g. no FUSE on the client host).
    Skip(String),
    Failed(String),
}

async fn run_step(
    cluster: &Fleet,
    step: &Step,
    link: &tokio::sync::Mutex<MasterLink>,
    r: &Reporter,
) -> StepEnd {
    let host = cluster.host(&step.host);
    r.say(
        StepState::Running,
        format!("{} on {}", step.kind.as_str(), step.host),
    )
    .await;
    let inst = crate::engine::plan::instance(&cluster.model, step);
    let acted = match (step.kind, inst) {
        (StepKind::Deploy, _) => Acted::Failed("a deploy step runs with its stage".to_string()),
        (StepKind::Start, Some(i)) => start_daemon(host.as_ref(), i, r).await,
        (StepKind::Stop, Some(i)) => stop_daemon(host.as_ref(), i, r).await,
        (StepKind::Mount, Some(i)) => mount(host.as_ref(), i, r).await,
        (StepKind::Unmount, Some(i)) => unmount(host.as_ref(), i, r).await,
        (_, None) => Acted::Failed("the step names no instance".to_string()),
    };
    let note = match acted {
        Acted::Failed(why) => return r.fail(why).await,
        Acted::Skip(why) => {
            r.say(StepState::Skipped, why).await;
            return StepEnd::Skipped;
        }
        Acted::Gate(m) | Acted::Already(m) => m,
    };
    let Some(gate) = &step.gate else {
        r.say(StepState::Done, note).await;
        return StepEnd::Done;
    };
    r.say(
        StepState::Waiting,
        format!("{note}; waiting for {}", gate.describe()),
    )
    .await;
    let timeout = Duration::from_secs(step.timeout_secs);
    let start = Instant::now();
    let mut last = String::new();
    loop {
        match check_gate(cluster, host.as_ref(), inst, gate, link).await {
            Ok(fine) => {
                r.say(
                    StepState::Done,
                    format!(
                        "{note}; {fine} after {:.1} s",
                        start.elapsed().as_secs_f64()
                    ),
                )
                .await;
                return StepEnd::Done;
            }
            Err(why) => {
                if why != last {
                    r.say(
                        StepState::Waiting,
                        format!("waiting for {}: {why}", gate.describe()),
                    )
                    .await;
                    last = why;
                }
            }
        }
        if start.elapsed() >= timeout {
            return r
                .fail(format!(
                    "gave up after {} s waiting for {}: {last}",
                    timeout.as_secs(),
                    gate.describe()
                ))
                .await;
        }
        tokio::time::sleep(GATE_POLL).await;
    }
}

/// Runs a step's command, showing each line it prints as the step's progress.
async fn run_with_timeout(
    host: &dyn Machine,
    cmd: &Command,
    r: &Reporter,
) -> Result<Finished, String> {
    let (tx, mut rx) = mpsc::channel::<OutputLine>(64);
    let forward = async {
        while let Some(line) = rx.recv().await {
            let (OutputLine::Stdout(text) | OutputLine::Stderr(text)) = line;
            if !text.trim().is_empty() {
                r.say(StepState::Running, text).await;
            }
        }
    };
    let both = async {
        let (finished, ()) = tokio::join!(host.run(cmd, Some(tx)), forward);
        finished
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, both).await {
        Err(_) => Err(format!(
            "{} did not finish within {} s",
            cmd.shell_line(),
            COMMAND_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(f)) => Ok(f),
    }
}

async fn start_daemon(host: &dyn Machine, i: &RoleInstance, r: &Reporter) -> Acted {
    if let Process::Running { pid } = probe::daemon_status(host, i).await {
        return Acted::Already(format!("already running (pid {pid})"));
    }
    match run_with_timeout(host, &i.start, r).await {
        Err(e) => Acted::Failed(e),
        Ok(f) if f.success() => Acted::Gate(f.message()),
        Ok(f) => Acted::Failed(with_log_hint(f.message(), i)),
    }
}

/// Adds where to look when a daemon's own message is not enough.
fn with_log_hint(message: String, i: &RoleInstance) -> String {
    match &i.log_file {
        Some(log) if !message.contains(".log") => {
            format!("{message} (its log: {})", log.display())
        }
        _ => message,
    }
}

async fn stop_daemon(host: &dyn Machine, i: &RoleInstance, r: &Reporter) -> Acted {
    match probe::daemon_status(host, i).await {
        Process::Stopped => return Acted::Already("not running".to_string()),
        Process::Unknown { reason } if reason.contains("is missing") => {
            return Acted::Failed(reason)
        }
        _ => {}
    }
    match run_with_timeout(host, &i.stop, r).await {
        Err(e) => Acted::Failed(e),
        Ok(f) if f.success() => Acted::Gate(f.message()),
        Ok(f) => Acted::Failed(f.message()),
    }
}

async fn mount(host: &dyn Machine, i: &RoleInstance, r: &Reporter) -> Acted {
    let Some(mp) = &i.mount_point else {
        return Acted::Failed("no mount point".to_string());
    };
    let p = match probe::mount(host, mp).await {
        Ok(p) => p,
        Err(e) => return Acted::Failed(e),
    };
    if p.healthy() {
        return Acted::Already("already mounted".to_string());
    }
    if let Some(why) = p.cannot_mount(host.name()) {
        return Acted::Skip(why);
    }
    let mut notes = Vec::new();
    if p.mounted && p.pids.is_empty() {
        // A mount whose process is gone ("Transport endpoint is not connected"): detach it.
        let lazy = Command {
            program: "umount".into(),
            args: vec!["-l".into(), mp.to_string_lossy().into_owned()],
        };
        match run_with_timeout(host, &lazy, r).await {
            Ok(f) if f.success() => notes.push(format!(
                "detached a stale mount at {} (its moose-mount was gone)",
                mp.display()
            )),
            Ok(f) => {
                return Acted::Failed(format!("stale mount at {}: {}", mp.display(), f.message()))
            }
            Err(e) => return Acted::Failed(e),
        }
    } else if p.mounted {
        return Acted::Failed(format!(
            "{} is mounted (moose-mount pid {}) but statfs fails: {}; stop the client first",
            mp.display(),
            p.pids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            match &p.statfs {
                Some(Err(e)) => e.clone(),
                _ => "no answer".to_string(),
            }
        ));
    }
    if let Err(e) = host.check_binary(i.role.program()).await {
        return Acted::Failed(e.to_string());
    }
    let mkdir = Command {
        program: "mkdir".into(),
        args: vec!["-p".into(), mp.to_string_lossy().into_owned()],
    };
    match run_with_timeout(host, &mkdir, r).await {
        Ok(f) if f.success() => {}
        Ok(f) => return Acted::Failed(format!("cannot create the mount point: {}", f.message())),
        Err(e) => return Acted::Failed(e),
    }
    match run_with_timeout(host, &i.start, r).await {
        Err(e) => Acted::Failed(e),
        Ok(f) if f.success() => {
            notes.push(f.message());
            Acted::Gate(notes.join("; "))
        }
        Ok(f) => Acted::Failed(f.message()),
    }
}

async fn unmount(host: &dyn Machine, i: &RoleInstance, r: &Reporter) -> Acted {
    let Some(mp) = &i.mount_point else {
        return Acted::Failed("no mount point".to_string());
    };
    let p = match probe::mount(host, mp).await {
        Ok(p) => p,
        Err(e) => return Acted::Failed(e),
    };
    if !p.mounted {
        return Acted::Already("not mounted".to_string());
    }
    // A busy mount with no process holding it is usually a passing stat or open: try again
    // a few times before giving up.
    let mut last = String::new();
    for attempt in 0..UNMOUNT_TRIES {
        if attempt > 0 {
            tokio::time::sleep(UNMOUNT_PAUSE).await;
        }
        match try_unmount(host, i, mp, r).await {
            Ok(done) => return Acted::Gate(done),
            Err(message) if !is_busy(&message) => {
                return Acted::Failed(format!("cannot unmount {}: {message}", mp.display()))
            }
            Err(message) => match probe::holders(host, mp).await {
                Ok(h) if !h.is_empty() => {
                    return Acted::Failed(format!(
                        "{} is busy: held by {}; close them (or leave that folder) and stop again",
                        mp.display(),
                        h.iter()
                            .take(10)
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
                Ok(_) => last = message,
                Err(e) => {
                    return Acted::Failed(format!(
                        "{} is busy ({message}); listing the processes holding it failed: {e}",
                        mp.display()
                    ))
                }
            },
        }
    }
    Acted::Failed(format!(
        "{} stayed busy ({last}) for {} tries, but no process on {} has files or folders there; \
         try again, or detach it with: umount -l {}",
        mp.display(),
        UNMOUNT_TRIES,
        host.name(),
        mp.display()
    ))
}

/// Times an unmount that finds the mount busy is tried, and the pause between tries.
const UNMOUNT_TRIES: u32 = 5;
const UNMOUNT_PAUSE: Duration = Duration::from_millis(500);

/// One unmount: the stop command, then its fallback; what was done, or the last message.
async fn try_unmount(
    host: &dyn Machine,
    i: &RoleInstance,
    mp: &std::path::Path,
    r: &Reporter,
) -> Result<String, String> {
    let first_msg = match host.run(&i.stop, None).await {
        Ok(f) if f.success() => return Ok(format!("{} unmounted", mp.display())),
        Ok(f) => f.message(),
        Err(HostError::Spawn { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {
            format!("{} is not installed", i.stop.program.display())
        }
        Err(e) => e.to_string(),
    };
    // The fallback is for a stop command that cannot work here (missing, not allowed); a
    // busy mount is busy for it too, and the caller waits and tries again.
    let Some(fallback) = i.stop_fallback.as_ref().filter(|_| !is_busy(&first_msg)) else {
        return Err(first_msg);
    };
    match run_with_timeout(host, fallback, r).await {
        Ok(f) if f.success() => Ok(format!(
            "{} unmounted with {} ({first_msg})",
            mp.display(),
            fallback.program.display()
        )),
        Ok(f) => Err(f.message()),
        Err(e) => Err(e),
    }
}

/// Whether an unmount failed because the mount is in use (fusermount3 and umount both say
/// "Device or resource busy"; umount's older wording is "target is busy").
fn is_busy(message: &str) -> bool {
    message.to_lowercase().contains("busy")
}

/// Checks a gate once: `Ok(what holds)` or `Err(what is missing)`.
async fn check_gate(
    cluster: &Fleet,
    host: &dyn Machine,
    inst: Option<&RoleInstance>,
    gate: &Gate,
    link: &tokio::sync::Mutex<MasterLink>,
) -> Result<String, String> {
    let master_info = || async {
        let mhost = cluster
            .master_host()
            .ok_or_else(|| "the inventory has no master".to_string())?;
        let mut l = link.lock().await;
        l.query(mhost.as_ref())
            .await
            .map_err(|e| format!("master not reachable: {e}"))
    };
    match gate {
        Gate::MasterAnswers { .. } => {
            let info = master_info().await?;
            Ok(format!("master {} answers", info.version))
        }
        Gate::MetaloggerConnected { address } => {
            let info = master_info().await?;
            let host = inst.map_or("", |i| i.host.as_str());
            metalogger_connected(&info, address, cluster.model.ips_of(host))
        }
        Gate::ChunkserverRegistered { address, port } => {
            let info = master_info().await?;
            chunkserver_registered(&info, address, *port)
        }
        Gate::Mounted { mount_point } => {
            let p = probe::mount(host, mount_point).await?;
            match (&p.mounted, &p.statfs) {
                (true, Some(Ok((total, _)))) => Ok(format!(
                    "mounted, statfs says {} total",
                    crate::fmt::bytes(*total)
                )),
                (true, Some(Err(e))) => Err(format!("mounted but statfs fails: {e}")),
                _ => Err(format!("{} is not in /proc/mounts", mount_point.display())),
            }
        }
        Gate::Stopped => match inst {
            None => Err("no instance".to_string()),
            Some(i) => match probe::daemon_status(host, i).await {
                Process::Stopped => Ok("stopped".to_string()),
                Process::Running { pid } => Err(format!("still running (pid {pid})")),
                Process::Unknown { reason } => Err(reason),
            },
        },
        Gate::Unmounted { mount_point } => {
            let p = probe::mount(host, mount_point).await?;
            if p.mounted {
                Err(format!(
                    "{} is still in /proc/mounts",
                    mount_point.display()
                ))
            } else if !p.pids.is_empty() {
                Err(format!(
                    "moose-mount still running (pid {})",
                    p.pids
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            } else {
                Ok("unmounted".to_string())
            }
        }
    }
}

/// The metalogger the master lists as connected from one of `ips` (the host's addresses).
pub fn metalogger_from<'a>(info: &'a ClusterInfo, ips: &[String]) -> Option<&'a MetaloggerInfo> {
    let ip_of = |peer: &str| -> String {
        match peer.parse::<std::net::SocketAddr>() {
            Ok(sa) => sa.ip().to_string(),
            Err(_) => peer.rsplit_once(':').map_or(peer, |(h, _)| h).to_string(),
        }
    };
    info.metaloggers
        .iter()
        .find(|m| ips.contains(&ip_of(&m.addr)))
}

/// The metalogger gate: the master lists a metalogger connected from `address` (whose IP
/// addresses are `ips`).
pub fn metalogger_connected(
    info: &ClusterInfo,
    address: &str,
    ips: &[String],
) -> Result<String, String> {
    match metalogger_from(info, ips) {
        Some(m) => Ok(format!("master lists metalogger {}", m.addr)),
        None if info.metaloggers.is_empty() => Err("master lists no metalogger yet".to_string()),
        None => Err(format!(
            "master lists metaloggers {} but none from {address}",
            info.metaloggers
                .iter()
                .map(|m| m.addr.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The chunkserver gate: the master lists `address:port` as connected.
pub fn chunkserver_registered(
    info: &ClusterInfo,
    address: &str,
    port: u16,
) -> Result<String, String> {
    let connected: Vec<String> = info
        .chunkservers
        .iter()
        .filter(|c| c.connected)
        .map(|c| c.addr.to_string())
        .collect();
    match info
        .chunkservers
        .iter()
        .find(|c| c.addr.host == address && c.addr.port == port)
    {
        Some(c) if c.connected => Ok(format!("registered as chunkserver id {}", c.id)),
        Some(_) => Err(format!(
            "master knows {address}:{port} but lists it as disconnected"
        )),
        None => Err(format!(
            "master lists {} connected chunkserver(s){}",
            connected.len(),
            if connected.is_empty() {
                String::new()
            } else {
                format!(" ({})", connected.join(", "))
            }
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use moose_proto::msg::{ChunkHealth, ChunkserverInfo};
    use moose_proto::{CsAddr, DiskReport};

    /// A master's answer with `n` chunkservers of 4 GiB on 127.0.0.1:19422, 19432, ...
    pub(crate) fn info(n: usize) -> ClusterInfo {
        let gib = 1u64 << 30;
        ClusterInfo {
            version: "0.1.0".into(),
            cluster_id: 0x1234,
            metadata_version: 77,
            metadata_synced: 77,
            metadata_syncs_asked: 0,
            total_space: n as u64 * 4 * gib,
            avail_space: n as u64 * 4 * gib - (300 << 20),
            files: 12,
            dirs: 3,
            chunks: 20,
            chunkservers: (0..n)
                .map(|k| ChunkserverInfo {
                    id: k as u32 + 1,
                    removal: vec![],
                    addr: CsAddr {
                        host: "127.0.0.1".into(),
                        port: 19422 + 10 * k as u16,
                    },
                    version: "0.1.0".into(),
                    connected: true,
                    chunks: 13 + k as u64,
                    used: (100 + 10 * k as u64) << 20,
                    total: 4 * gib,
                    disks: vec![DiskReport {
                        path: format!("/var/lib/moosectl/disks/cs{}", k + 1),
                        total: 4 * gib,
                        avail: 4 * gib - ((100 + 10 * k as u64) << 20),
                        used: (100 + 10 * k as u64) << 20,
                        chunks: 13 + k as u64,
                        errors: if k == 2 { 1 } else { 0 },
                        marked_for_removal: false,
                        damaged: false,
                    }],
                })
                .collect(),
            metaloggers: vec![MetaloggerInfo {
                addr: "127.0.0.1:40112".into(),
                version: 75,
            }],
            uptime_secs: 3725,
            ops_total: 1000,
            sessions: 1,
            trash_files: 2,
            trash_bytes: 10 << 20,
            health: ChunkHealth {
                matrix: {
                    let mut m = vec![vec![0u64; 11]; 10];
                    m[2][2] = 18;
                    m[2][1] = 1;
                    m[1][1] = 1;
                    m
                },
                missing: 0,
                endangered: 1,
                undergoal: 0,
                stable: 19,
                overgoal: 0,
                pending_deletion: 2,
                replicating: 1,
                replicated_total: 40,
                moved_total: 0,
                to_repair: 0,
                swept_secs_ago: None,
            },
            quotas: vec![],
        }
    }

    #[test]
    fn busy_unmounts_are_told_apart_from_other_failures() {
        assert!(is_busy(
            "fusermount3: failed to unmount /mnt/moosefs: Device or resource busy"
        ));
        assert!(is_busy("umount: /mnt/moosefs: target is busy."));
        assert!(!is_busy(
            "fusermount3: entry for /mnt/moosefs not found in /etc/mtab"
        ));
        assert!(!is_busy("fusermount3 is not installed"));
    }

    #[test]
    fn metalogger_gate() {
        let mut i = info(3);
        assert_eq!(
            metalogger_connected(&i, "127.0.0.1", &["127.0.0.1".to_string()]),
            Ok("master lists metalogger 127.0.0.1:40112".into())
        );
        assert_eq!(
            metalogger_connected(&i, "10.0.0.1", &["10.0.0.1".to_string()]),
            Err("master lists metaloggers 127.0.0.1:40112 but none from 10.0.0.1".into())
        );
        i.metaloggers.clear();
        assert_eq!(
            metalogger_connected(&i, "127.0.0.1", &["127.0.0.1".to_string()]),
            Err("master lists no metalogger yet".into())
        );
    }

    #[test]
    fn chunkserver_gate() {
        let mut i = info(2);
        assert_eq!(
            chunkserver_registered(&i, "127.0.0.1", 19432),
            Ok("registered as chunkserver id 2".into())
        );
        assert_eq!(
            chunkserver_registered(&i, "127.0.0.1", 19442),
            Err(
                "master lists 2 connected chunkserver(s) (127.0.0.1:19422, 127.0.0.1:19432)".into()
            )
        );
        i.chunkservers[0].connected = false;
        assert_eq!(
            chunkserver_registered(&i, "127.0.0.1", 19422),
            Err("master knows 127.0.0.1:19422 but lists it as disconnected".into())
        );
    }
}
