//! Chunk health: copies that are missing are re-made (pulled by a target chunkserver from a
//! source), surplus and stale copies are deleted, chunks dropped from files are removed from
//! disks. Replication runs as fast as the per-server limits allow: every finished copy wakes
//! the loop at once instead of waiting for the next pass.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moose_proto::msg::MasterToCs;
use moose_proto::ChunkRef;
use tokio::sync::{watch, Notify};

use crate::master::Master;
use crate::placement;
use crate::state::Copy;

/// How long a write lock lives without being released (a client died mid-write).
const LOCK_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct InFlight {
    chunks: HashSet<u64>,
    into: HashMap<u32, usize>,
    out_of: HashMap<u32, usize>,
}

enum Action {
    Replicate {
        chunk: ChunkRef,
        source: u32,
        target: u32,
    },
    Delete {
        cs: u32,
        chunk: ChunkRef,
    },
}

pub async fn run(master: Arc<Master>, mut shutdown: watch::Receiver<bool>) {
    let wake = Arc::new(Notify::new());
    let in_flight = Arc::new(Mutex::new(InFlight::default()));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        let actions = plan(&master, &in_flight);
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
                } => {
                    m.replicating.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        replicate(&m, chunk, source, target).await;
                        m.replicating.fetch_sub(1, Ordering::Relaxed);
                        let mut f = in_flight.lock();
                        f.chunks.remove(&chunk.chunk_id);
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
}

async fn replicate(m: &Master, chunk: ChunkRef, source: u32, target: u32) {
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
                m.replicated_total.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    "chunk {:016X} v{}: copied from cs {source} to cs {target} in {:.2} s",
                    chunk.chunk_id,
                    chunk.version,
                    started.elapsed().as_secs_f64()
                );
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

fn plan(master: &Master, in_flight: &Mutex<InFlight>) -> Vec<Action> {
    let servers = master.cs.connected();
    let mut st = master.state();
    let mut actions: Vec<Action> = st
        .rt
        .deletions
        .drain(..)
        .map(|(cs, chunk)| Action::Delete { cs, chunk })
        .collect();
    st.rt
        .write_locks
        .retain(|_, l| l.since.elapsed() < LOCK_TIMEOUT);
    if master.started.elapsed() < Duration::from_secs(master.cfg.replications_delay) {
        return actions;
    }
    let mut flight = in_flight.lock();
    let (write_limit, read_limit) = (master.cfg.write_rep_limit, master.cfg.read_rep_limit);
    let st = &mut *st;
    let spread = usage_spread(&servers);
    let rebalance =
        spread.is_some_and(|(_, lo, hi)| (hi - lo) * 100.0 > master.cfg.acceptable_difference);
    // Chunks short of copies, most urgent first: (copies that count, chunk, every holder).
    let mut short: Vec<(usize, ChunkRef, Vec<u32>, Vec<u32>)> = Vec::new();
    let mut stable: Vec<(ChunkRef, Vec<u32>)> = Vec::new();
    for (&chunk_id, meta) in &st.meta.chunks {
        if flight.chunks.contains(&chunk_id) || st.rt.write_locks.contains_key(&chunk_id) {
            continue;
        }
        let Some(copies) = st.rt.locations.get_mut(&chunk_id) else {
            continue;
        };
        // Stale copies go.
        let stale: Vec<Copy> = copies
            .iter()
            .filter(|c| c.version != meta.version)
            .copied()
            .collect();
        if !stale.is_empty() {
            copies.retain(|c| c.version == meta.version);
            for c in stale {
                actions.push(Action::Delete {
                    cs: c.cs,
                    chunk: ChunkRef {
                        chunk_id,
                        version: c.version,
                    },
                });
            }
        }
        let goal = st
            .meta
            .nodes
            .get(&meta.inode)
            .map(|n| n.goal as usize)
            .unwrap_or(1);
        let chunk = ChunkRef {
            chunk_id,
            version: meta.version,
        };
        let holders: Vec<u32> = copies.iter().map(|c| c.cs).collect();
        // Copies on disks marked for removal serve reads but do not count; damaged ones
        // neither count nor serve.
        let counts = |cs: &u32| {
            !st.rt.marked.contains_key(&(chunk_id, *cs))
                && !st.rt.damaged.contains(&(chunk_id, *cs))
        };
        let counted: Vec<u32> = holders.iter().copied().filter(counts).collect();
        let damaged: Vec<u32> = holders
            .iter()
            .copied()
            .filter(|cs| st.rt.damaged.contains(&(chunk_id, *cs)))
            .collect();
        if holders.is_empty() {
            continue;
        }
        if counted.len() >= goal && !damaged.is_empty() {
            for &cs in &damaged {
                copies.retain(|c| c.cs != cs);
                st.rt.damaged.remove(&(chunk_id, cs));
                actions.push(Action::Delete { cs, chunk });
            }
        }
        if counted.len() < goal {
            // A damaged holder may take the new copy (it replaces the bad one in place).
            let sources: Vec<u32> = holders
                .iter()
                .copied()
                .filter(|cs| !damaged.contains(cs))
                .collect();
            let exclude: Vec<u32> = sources.clone();
            short.push((counted.len(), chunk, sources, exclude));
        } else if counted.len() > goal {
            // Trim the counted copies on the fullest servers.
            let mut ranked: Vec<(u64, u32)> = counted
                .iter()
                .map(|id| {
                    let usage = servers
                        .iter()
                        .find(|s| s.id == *id)
                        .map(|s| s.usage)
                        .unwrap_or(1.0);
                    ((usage * 1e9) as u64, *id)
                })
                .collect();
            ranked.sort_by(|a, b| b.cmp(a));
            for (_, cs) in ranked.into_iter().take(counted.len() - goal) {
                copies.retain(|c| c.cs != cs);
                actions.push(Action::Delete { cs, chunk });
            }
        } else if rebalance {
            stable.push((chunk, holders));
        }
    }
    short.sort_by_key(|(counted, _, _, _)| *counted);
    for (_, chunk, sources, exclude) in short {
        let open_targets: Vec<_> = servers
            .iter()
            .filter(|s| flight.into.get(&s.id).copied().unwrap_or(0) < write_limit)
            .cloned()
            .collect();
        let Ok(target) = placement::choose_new(&open_targets, 1, &exclude) else {
            continue;
        };
        let Some(&source) = sources
            .iter()
            .filter(|s| flight.out_of.get(s).copied().unwrap_or(0) < read_limit)
            .min_by_key(|s| flight.out_of.get(s).copied().unwrap_or(0))
        else {
            continue;
        };
        schedule(&mut flight, &mut actions, chunk, source, target[0].id);
    }
    // Rebalancing: copy from the fullest server to the emptiest; the chunk is then overgoal
    // and the next pass trims the copy on the fullest server.
    if let Some((full, _, _)) = spread.filter(|_| rebalance) {
        let empty = servers
            .iter()
            .filter(|s| s.writable)
            .min_by(|a, b| a.usage.total_cmp(&b.usage))
            .map(|s| s.id);
        if let Some(empty) = empty {
            for (chunk, holders) in stable {
                let busy = flight.into.get(&empty).copied().unwrap_or(0) >= write_limit
                    || flight.out_of.get(&full).copied().unwrap_or(0) >= read_limit;
                if busy {
                    break;
                }
                if holders.contains(&full) && !holders.contains(&empty) {
                    schedule(&mut flight, &mut actions, chunk, full, empty);
                }
            }
        }
    }
    actions
}

fn schedule(
    flight: &mut InFlight,
    actions: &mut Vec<Action>,
    chunk: ChunkRef,
    source: u32,
    target: u32,
) {
    flight.chunks.insert(chunk.chunk_id);
    *flight.into.entry(target).or_default() += 1;
    *flight.out_of.entry(source).or_default() += 1;
    actions.push(Action::Replicate {
        chunk,
        source,
        target,
    });
}

/// The fullest server and the lowest and highest usage among writable servers.
fn usage_spread(servers: &[crate::csserv::CsView]) -> Option<(u32, f64, f64)> {
    let writable: Vec<_> = servers.iter().filter(|s| s.writable).collect();
    if writable.len() < 2 {
        return None;
    }
    let full = writable.iter().max_by(|a, b| a.usage.total_cmp(&b.usage))?;
    let lo = writable
        .iter()
        .map(|s| s.usage)
        .fold(f64::INFINITY, f64::min);
    Some((full.id, lo, full.usage))
}
