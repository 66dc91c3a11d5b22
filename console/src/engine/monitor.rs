//! The status monitor: every second, the master's `ClusterInfo` (Admin connection through the
//! master host's [`Machine::connect`]) and each instance's state (daemons: their `status` verb;
//! clients: `/proc/mounts` and `statvfs`), as one [`Snapshot`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moose_inventory::Role;
use moose_proto::msg::ClusterInfo;
use serde::Serialize;
use tokio::sync::{mpsc, Notify};

use crate::engine::master::MasterLink;
use crate::engine::model::Fleet;
use crate::engine::probe::{self, MountProbe, Process};

/// How often the monitor polls.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// How long a poll waits for one host: a slower host's rows read `unreachable` for this
/// poll (its connection attempt goes on, bounded by `--connect-timeout`), the others update.
pub const HOST_WAIT: Duration = Duration::from_secs(2);

/// Marks answers that mean the host could not be reached.
fn unreachable(p: Process) -> Process {
    match p {
        Process::Unknown { reason } if reason.contains(": cannot reach ") => Process::Unknown {
            reason: format!("unreachable: {reason}"),
        },
        p => p,
    }
}

/// What one poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub at: Instant,
    /// The master's answer, or why there is none.
    pub master: Result<ClusterInfo, String>,
    /// One per model instance, same order.
    pub instances: Vec<InstanceStatus>,
}

/// State of one role instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceStatus {
    /// Daemons: from `status`; clients: the `moose-mount` process of the mount.
    pub process: Process,
    /// How long the process has been running.
    #[serde(serialize_with = "secs")]
    pub uptime: Option<Duration>,
    /// Clients: the mount probe, or why it failed.
    pub mount: Option<Result<MountProbe, String>>,
}

fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs()),
        None => s.serialize_none(),
    }
}

/// Polls once.
pub async fn poll(cluster: &Fleet, link: &mut MasterLink) -> Snapshot {
    let model = &cluster.model;
    let master = async {
        match cluster.master_host() {
            None => Err("the inventory has no master".to_string()),
            Some(h) => link
                .query(h.as_ref())
                .await
                .map_err(|e| format!("master not reachable: {e}")),
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (idx, inst) in model.instances.iter().enumerate() {
        let host = cluster.host(&inst.host);
        let inst = inst.clone();
        let slots = cluster.slots.clone();
        tasks.spawn(async move {
            let work = async {
                let (process, mount) = if inst.role == Role::Client {
                    let probe = match &inst.mount_point {
                        Some(mp) => probe::mount(host.as_ref(), mp).await,
                        None => Err("no mount point".to_string()),
                    };
                    let process = match &probe {
                        Ok(p) => match p.pids.first() {
                            Some(&pid) => Process::Running { pid },
                            None => Process::Stopped,
                        },
                        Err(e) => Process::Unknown { reason: e.clone() },
                    };
                    (process, Some(probe))
                } else {
                    (probe::daemon_status(host.as_ref(), &inst).await, None)
                };
                (unreachable(process), mount)
            };
            let _slot = slots.acquire_owned().await;
            match tokio::time::timeout(HOST_WAIT, work).await {
                Ok((process, mount)) => (idx, process, mount),
                Err(_) => (
                    idx,
                    Process::Unknown {
                        reason: format!(
                            "unreachable: {} did not answer within {} s",
                            inst.host,
                            HOST_WAIT.as_secs()
                        ),
                    },
                    None,
                ),
            }
        });
    }
    let master = master.await;
    let mut instances = vec![
        InstanceStatus {
            process: Process::Unknown {
                reason: "not probed".into()
            },
            uptime: None,
            mount: None,
        };
        model.instances.len()
    ];
    while let Some(done) = tasks.join_next().await {
        if let Ok((idx, process, mount)) = done {
            instances[idx] = InstanceStatus {
                process,
                uptime: None,
                mount,
            };
        }
    }
    // Uptimes: one question per host for all its processes.
    let mut pids: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (inst, st) in model.instances.iter().zip(&instances) {
        if let Some(pid) = st.process.pid() {
            pids.entry(inst.host.as_str()).or_default().push(pid);
        }
    }
    let mut asks = tokio::task::JoinSet::new();
    for (host, list) in pids {
        let h = cluster.host(host);
        let name = host.to_string();
        asks.spawn(async move {
            let found = tokio::time::timeout(HOST_WAIT, probe::uptimes(h.as_ref(), &list))
                .await
                .unwrap_or_default();
            (name, found)
        });
    }
    while let Some(done) = asks.join_next().await {
        let Ok((host, found)) = done else { continue };
        for (inst, st) in model.instances.iter().zip(instances.iter_mut()) {
            if inst.host != host {
                continue;
            }
            if let Some(pid) = st.process.pid() {
                st.uptime = found.iter().find(|(p, _)| *p == pid).map(|(_, d)| *d);
            }
        }
    }
    Snapshot {
        at: Instant::now(),
        master,
        instances,
    }
}

/// Polls every [`INTERVAL`] (and at once when `now` is notified) until `out` is closed.
pub async fn run(cluster: Fleet, out: mpsc::Sender<Snapshot>, now: Arc<Notify>) {
    let mut link = MasterLink::new(
        &cluster.model.master_address(),
        cluster.model.master_client_port(),
    );
    loop {
        let snap = poll(&cluster, &mut link).await;
        if out.send(snap).await.is_err() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = now.notified() => {}
            _ = out.closed() => return,
        }
    }
}
