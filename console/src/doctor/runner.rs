//! Runs every check: which hosts answer, then all checks at once, each host's scripts under
//! [`PROBE_TIMEOUT`].

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moose_inventory::{Command, Role, RoleInstance, Transport};
use moose_proto::msg::ClusterInfo;
use tokio::sync::OnceCell;
use tokio::task::JoinSet;

use crate::doctor::checks;
use crate::doctor::finding::{Finding, Report, Status};
use crate::engine::host::Machine;
use crate::engine::master::{MasterLink, QUERY_TIMEOUT};
use crate::engine::model::Fleet;
use crate::engine::probe::PROBE_TIMEOUT;

/// How long a host may take to run its first command (for SSH: to connect).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Which hosts' checks to run: empty means all.
#[derive(Debug, Clone, Default)]
pub struct Scope(pub Vec<String>);

impl Scope {
    pub fn covers(&self, host: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|h| h == host)
    }
}

/// What every check gets: the cluster, which hosts answered, which hosts to report on.
pub struct Ctx {
    pub fleet: Fleet,
    pub scope: Scope,
    /// Hosts that answered; the others' checks are skipped.
    pub answering: BTreeSet<String>,
    /// The running master's answer, asked once for every check that reads it.
    running_master: OnceCell<Result<ClusterInfo, String>>,
}

impl Ctx {
    pub fn new(fleet: Fleet, scope: Scope, answering: BTreeSet<String>) -> Ctx {
        Ctx {
            fleet,
            scope,
            answering,
            running_master: OnceCell::new(),
        }
    }

    /// What the running master reports (`ClusterInfo`), asked through its host on the first
    /// call; `Err`: why it does not say (no answer, or none in time).
    pub async fn running_master(&self, master: &RoleInstance) -> &Result<ClusterInfo, String> {
        self.running_master
            .get_or_init(|| async {
                let m = self.machine(&master.host);
                let mut link =
                    MasterLink::new(&master.address, self.fleet.model.master_client_port());
                match tokio::time::timeout(QUERY_TIMEOUT * 2, link.query(m.as_ref())).await {
                    Ok(Ok(info)) => Ok(info),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!(
                        "no answer within {} s",
                        (QUERY_TIMEOUT * 2).as_secs()
                    )),
                }
            })
            .await
    }

    /// Whether every host of the cluster is this one machine (the built-in local cluster).
    pub fn one_machine(&self) -> bool {
        let hosts = &self.fleet.model.inventory.hosts;
        hosts.len() <= 1 || hosts.iter().all(|h| h.transport == Transport::Local)
    }

    pub fn machine(&self, host: &str) -> Arc<dyn Machine> {
        self.fleet.host(host)
    }

    pub fn answers(&self, host: &str) -> bool {
        self.answering.contains(host)
    }

    /// Role instances whose host is in scope.
    pub fn instances(&self, role: Role) -> Vec<RoleInstance> {
        self.fleet
            .model
            .instances
            .iter()
            .filter(|i| i.role == role && self.scope.covers(&i.host))
            .cloned()
            .collect()
    }

    /// The master's instance, wherever it runs.
    pub fn master(&self) -> Option<RoleInstance> {
        self.fleet
            .model
            .instances
            .iter()
            .find(|i| i.role == Role::Master)
            .cloned()
    }

    /// Names of in-scope hosts, in inventory order.
    pub fn hosts(&self) -> Vec<String> {
        self.fleet
            .model
            .inventory
            .hosts
            .iter()
            .map(|h| h.name.clone())
            .filter(|h| self.scope.covers(h))
            .collect()
    }

    /// The reason a check on `host` is skipped, if it is.
    pub fn silent(&self, host: &str) -> Option<String> {
        (!self.answers(host)).then(|| format!("skipped: {host} did not answer"))
    }
}

/// Runs `f` on every item at once; results in the items' order.
pub async fn par_map<T, R, F, Fut>(items: Vec<T>, f: F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: Future<Output = R> + Send + 'static,
{
    let mut set = JoinSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let fut = f(item);
        set.spawn(async move { (i, fut.await) });
    }
    let mut out: Vec<(usize, R)> = Vec::new();
    while let Some(r) = set.join_next().await {
        // A check that panicked is a bug; its result is lost, the rest still report.
        if let Ok(r) = r {
            out.push(r);
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Runs `sh -c SCRIPT doctor ARGS...` on `host` within [`PROBE_TIMEOUT`]; its output lines,
/// or what went wrong in words.
pub async fn script(
    host: &dyn Machine,
    what: &str,
    text: &str,
    args: &[String],
) -> Result<Vec<String>, String> {
    let mut a = vec!["-c".to_string(), text.to_string(), "doctor".to_string()];
    a.extend(args.iter().cloned());
    let cmd = Command {
        program: PathBuf::from("sh"),
        args: a,
    };
    match tokio::time::timeout(PROBE_TIMEOUT, host.run(&cmd, None)).await {
        Err(_) => Err(format!(
            "{}: {what} did not finish within {} s",
            host.name(),
            PROBE_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(f)) if f.success() => Ok(f.stdout),
        Ok(Ok(f)) => Err(format!("{}: {what} failed: {}", host.name(), f.message())),
    }
}

/// Asks every host of the cluster for an answer within [`CONNECT_TIMEOUT`].
async fn answering(fleet: &Fleet) -> Vec<(String, Result<(), String>)> {
    let names: Vec<String> = fleet.hosts.keys().cloned().collect();
    let fleet2 = fleet.clone();
    par_map(names, move |name| {
        let host = fleet2.host(&name);
        async move {
            let cmd = Command {
                program: PathBuf::from("true"),
                args: Vec::new(),
            };
            let r = match tokio::time::timeout(CONNECT_TIMEOUT, host.run(&cmd, None)).await {
                Err(_) => Err(format!(
                    "{name} did not answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )),
                Ok(Err(e)) => Err(e.to_string()),
                Ok(Ok(_)) => Ok(()),
            };
            (name, r)
        }
    })
    .await
}

/// Runs every check on the hosts of `scope`.
pub async fn run(fleet: &Fleet, scope: Scope, strict: bool) -> Report {
    let started = Instant::now();
    let mut results = Vec::new();
    let mut answering_hosts = BTreeSet::new();
    for (name, r) in answering(fleet).await {
        match r {
            Ok(()) => {
                answering_hosts.insert(name);
            }
            Err(why) if scope.covers(&name) => {
                results.push(
                    Finding::new(
                        "host",
                        &name,
                        Status::Error,
                        format!("{name} does not answer; its checks are skipped"),
                    )
                    .evidence(why),
                );
            }
            Err(_) => {}
        }
    }
    let ctx = Arc::new(Ctx::new(fleet.clone(), scope, answering_hosts));
    let all = par_map(checks::ALL.to_vec(), move |check| {
        let ctx = ctx.clone();
        async move { check(ctx).await }
    })
    .await;
    results.extend(all.into_iter().flatten());
    let inv = &fleet.model.inventory;
    Report::new(
        inv.cluster.name.clone(),
        inv.source.clone(),
        results,
        started.elapsed().as_millis() as u64,
        strict,
    )
}
