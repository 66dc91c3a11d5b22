//! Chunk health: copies that are missing are re-made (pulled by a target chunkserver from a
//! source), surplus and stale copies are deleted, chunks dropped from files are removed from
//! disks. Replication runs as fast as the per-server limits allow: every finished copy wakes
//! the loop at once instead of waiting for the next pass.

use parking_lot::Mutex;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moose_proto::msg::MasterToCs;
use moose_proto::ChunkRef;
use tokio::sync::{watch, Notify};

use crate::master::Master;
use crate::state::Copy;

mod decide;

use decide::{Action, Decision, InFlight, Limits};

/// Chunks one decision examines while it holds the state lock (a few milliseconds).
const CHUNKS_PER_LOCK: usize = 2_000;

/// How long a write lock lives without being released (a client died mid-write).
const LOCK_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn run(master: Arc<Master>, mut shutdown: watch::Receiver<bool>) {
    let wake = Arc::new(Notify::new());
    let in_flight = Arc::new(Mutex::new(InFlight::default()));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut budget = SweepBudget::new(master.cfg.loop_max_cps, Instant::now());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        // A pass of a large budget is cut into decisions of CHUNKS_PER_LOCK chunks each, with
        // the state lock let go (and requests served) in between.
        let mut left = budget.take(Instant::now());
        loop {
            let actions = plan(&master, &in_flight, &mut left);
            dispatch(&master, &wake, &in_flight, actions);
            if left == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
}

/// Sends a pass's orders, each in a task of its own; a finished copy wakes the loop.
fn dispatch(
    master: &Arc<Master>,
    wake: &Arc<Notify>,
    in_flight: &Arc<Mutex<InFlight>>,
    actions: Vec<Action>,
) {
    for action in actions {
        let (m, wake, in_flight) = (master.clone(), wake.clone(), in_flight.clone());
        match action {
            Action::Delete { cs, chunk } => {
                m.deleting.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let r =
                        m.cs.order(cs, |req_id| MasterToCs::Delete { req_id, chunk })
                            .await;
                    tracing::debug!(
                        "delete chunk {:016X} v{} on cs {cs}: {r:?}",
                        chunk.chunk_id,
                        chunk.version
                    );
                    m.deleting.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Action::Replicate {
                chunk,
                source,
                target,
                is_move,
            } => {
                m.replicating.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    replicate(&m, chunk, source, target, is_move).await;
                    m.replicating.fetch_sub(1, Ordering::Relaxed);
                    let mut f = in_flight.lock();
                    f.chunks.remove(&chunk.chunk_id);
                    if is_move {
                        let now = Instant::now();
                        for cs in [source, target] {
                            f.moving.remove(&cs);
                            f.moved_at.insert(cs, now);
                        }
                        f.recently_moved.insert(chunk.chunk_id, now);
                    }
                    if let Some(n) = f.into.get_mut(&target) {
                        *n = n.saturating_sub(1);
                    }
                    if let Some(n) = f.out_of.get_mut(&source) {
                        *n = n.saturating_sub(1);
                    }
                    drop(f);
                    wake.notify_one();
                });
            }
        }
    }
}

async fn replicate(m: &Master, chunk: ChunkRef, source: u32, target: u32, is_move: bool) {
    let Some(source_addr) = m.cs.addr(source) else {
        return;
    };
    let started = Instant::now();
    let result =
        m.cs.order(target, |req_id| MasterToCs::Replicate {
            req_id,
            chunk,
            source: source_addr.clone(),
            token: m.trust.read_token(chunk),
        })
        .await;
    let mut st = m.state();
    match result {
        Ok(()) => {
            let current = st.meta.chunks.get(&chunk.chunk_id).map(|c| c.version);
            if current == Some(chunk.version) && m.cs.is_connected(target) {
                st.rt.damaged.remove(&(chunk.chunk_id, target));
                let copies = st.rt.locations.entry(chunk.chunk_id).or_default();
                copies.retain(|c| c.cs != target);
                copies.push(Copy {
                    cs: target,
                    version: chunk.version,
                });
                if is_move && copies.iter().any(|c| c.cs == source) {
                    copies.retain(|c| c.cs != source);
                    st.rt.deletions.push((source, chunk));
                    m.moved_total.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        "chunk {:016X} v{}: moved from cs {source} to cs {target} in {:.2} s \
                         (rebalancing)",
                        chunk.chunk_id,
                        chunk.version,
                        started.elapsed().as_secs_f64()
                    );
                } else {
                    m.replicated_total.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        "chunk {:016X} v{}: copied from cs {source} to cs {target} in {:.2} s",
                        chunk.chunk_id,
                        chunk.version,
                        started.elapsed().as_secs_f64()
                    );
                }
            } else {
                // The chunk changed or went away while it was copied: the copy is stale.
                st.rt.deletions.push((target, chunk));
            }
        }
        Err(e) => tracing::warn!(
            "chunk {:016X} v{}: replication from cs {source} to cs {target} failed: {e}",
            chunk.chunk_id,
            chunk.version
        ),
    }
}

/// How many chunks a pass may examine: `per_second` accrue every second, up to a second's
/// worth, so a loop woken by every finished copy spends no more than one woken once a
/// second (CHUNKS_LOOP_MAX_CPS).
struct SweepBudget {
    per_second: f64,
    saved: f64,
    at: Instant,
}

impl SweepBudget {
    fn new(per_second: u64, now: Instant) -> Self {
        let per_second = per_second as f64;
        SweepBudget {
            per_second,
            saved: per_second,
            at: now,
        }
    }

    fn take(&mut self, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.saved = (self.saved + elapsed * self.per_second).min(self.per_second);
        let n = self.saved.floor();
        self.saved -= n;
        n as usize
    }
}

/// One pass: the impure part (what the servers and the state are now, the start-up gate,
/// logging, committing adopted versions) around [`decide::decide`].
fn plan(master: &Master, in_flight: &Mutex<InFlight>, left: &mut usize) -> Vec<Action> {
    let servers = master.cs.connected();
    let mut st = master.state();
    // A pass examines each chunk once at most, whatever its budget.
    *left = (*left).min(st.meta.chunks.len());
    let budget = (*left).min(CHUNKS_PER_LOCK);
    *left -= budget;
    st.rt
        .write_locks
        .retain(|_, l| l.since.elapsed() < LOCK_TIMEOUT);
    let connected: Vec<u32> = servers.iter().map(|s| s.id).collect();
    // After a start, a copy that looks missing or stale may be on a server that has not
    // registered yet: nothing is copied or deleted until they are all back.
    if !master.replication_allowed(&connected) {
        *left = 0;
        return Vec::new();
    }
    let limits = Limits {
        write: master.cfg.write_rep_limit,
        read: master.cfg.read_rep_limit,
        acceptable_difference: master.cfg.acceptable_difference / 100.0,
        every_server_back: master.known_servers.missing(&connected).is_empty(),
        budget,
    };
    let mut flight = in_flight.lock();
    let Decision {
        actions,
        adopt,
        newly_to_repair,
    } = decide::decide(&mut st, &servers, &mut flight, &limits, Instant::now());
    drop(flight);
    for chunk_id in newly_to_repair {
        let Some(meta) = st.meta.chunks.get(&chunk_id) else {
            continue;
        };
        tracing::error!(
            "chunk {chunk_id:016X} of inode {} has no copy at version {} (copies: {:?}); its \
             copies are kept and the file needs repair",
            meta.inode,
            meta.version,
            st.rt
                .locations
                .get(&chunk_id)
                .map(|c| c.iter().map(|c| (c.cs, c.version)).collect::<Vec<_>>())
                .unwrap_or_default()
        );
    }
    let st = &mut *st;
    for (chunk_id, version) in adopt {
        match master.commit(st, crate::ops::Op::SetChunkVersion { chunk_id, version }) {
            Ok(_) => tracing::warn!(
                "chunk {chunk_id:016X}: no copy had the new version (the master stopped while \
                 raising it); the copies at version {version} are used"
            ),
            Err(e) => tracing::error!("chunk {chunk_id:016X}: cannot take version {version}: {e}"),
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_budget_accrues_per_second_up_to_a_second() {
        let t0 = Instant::now();
        let mut b = SweepBudget::new(1000, t0);
        assert_eq!(b.take(t0), 1000, "a first pass may take a second's worth");
        assert_eq!(b.take(t0), 0);
        assert_eq!(b.take(t0 + Duration::from_millis(10)), 10);
        assert_eq!(
            b.take(t0 + Duration::from_secs(60)),
            1000,
            "saved up to a second"
        );
    }
}
