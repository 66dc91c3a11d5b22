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
use crate::rebalance;
use crate::state::Copy;

/// How long a write lock lives without being released (a client died mid-write).
const LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// A chunk moved by rebalancing is not moved again for this long.
const MOVE_COOLDOWN: Duration = Duration::from_secs(600);

#[derive(Default)]
struct InFlight {
    chunks: HashSet<u64>,
    into: HashMap<u32, usize>,
    out_of: HashMap<u32, usize>,
    /// Rebalancing is under way (it stops lower than it starts).
    rebalancing: bool,
    /// When a move into or out of each server last finished: the server takes part in the
    /// next one only after a space report newer than that.
    moved_at: HashMap<u32, Instant>,
    /// Servers with a move running now.
    moving: HashSet<u32>,
    /// Chunks moved recently, kept from moving again.
    recently_moved: HashMap<u64, Instant>,
    /// Chunks already reported as needing repair (logged once).
    reported_repair: HashSet<u64>,
}

enum Action {
    Replicate {
        chunk: ChunkRef,
        source: u32,
        target: u32,
        /// A rebalancing move: the copy on `source` is deleted once the new one is made.
        is_move: bool,
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

fn plan(master: &Master, in_flight: &Mutex<InFlight>) -> Vec<Action> {
    let servers = master.cs.connected();
    let mut st = master.state();
    st.rt
        .write_locks
        .retain(|_, l| l.since.elapsed() < LOCK_TIMEOUT);
    let connected: Vec<u32> = servers.iter().map(|s| s.id).collect();
    // After a start, a copy that looks missing or stale may be on a server that has not
    // registered yet: nothing is copied or deleted until they are all back.
    if !master.replication_allowed(&connected) {
        return Vec::new();
    }
    let every_server_back = master.known_servers.missing(&connected).is_empty();
    let mut actions: Vec<Action> = st
        .rt
        .deletions
        .drain(..)
        .map(|(cs, chunk)| Action::Delete { cs, chunk })
        .collect();
    let mut flight = in_flight.lock();
    let (write_limit, read_limit) = (master.cfg.write_rep_limit, master.cfg.read_rep_limit);
    let st = &mut *st;
    // Chunks short of copies, most urgent first: (copies that count, chunk, every holder).
    let mut short: Vec<(usize, ChunkRef, Vec<u32>, Vec<u32>)> = Vec::new();
    let mut stable: Vec<(ChunkRef, Vec<u32>)> = Vec::new();
    // Chunks whose only copies are one version behind, taken as they are (see below).
    let mut adopt: Vec<(u64, u32)> = Vec::new();
    let mut to_repair = std::collections::BTreeMap::new();
    flight
        .recently_moved
        .retain(|_, at| at.elapsed() < MOVE_COOLDOWN);
    for (&chunk_id, meta) in &st.meta.chunks {
        if flight.chunks.contains(&chunk_id) || st.rt.write_locks.contains_key(&chunk_id) {
            continue;
        }
        let Some(copies) = st.rt.locations.get_mut(&chunk_id) else {
            continue;
        };
        if !copies.is_empty() && copies.iter().all(|c| c.version != meta.version) {
            // No copy has the metadata's version: never delete them for that. One version
            // behind with every known server back is a master that stopped between raising
            // the version in its changelog and telling the chunkservers: no data was written
            // at the new version, so the copies are exactly right. Anything else needs an
            // admin (or the server holding the right version to come back).
            let highest = copies.iter().map(|c| c.version).max().unwrap_or(0);
            if every_server_back && highest.checked_add(1) == Some(meta.version) {
                adopt.push((chunk_id, highest));
            } else {
                to_repair.insert(chunk_id, meta.inode);
                if flight.reported_repair.insert(chunk_id) {
                    tracing::error!(
                        "chunk {chunk_id:016X} of inode {} has no copy at version {} (copies: \
                         {:?}); its copies are kept and the file needs repair",
                        meta.inode,
                        meta.version,
                        copies.iter().map(|c| (c.cs, c.version)).collect::<Vec<_>>()
                    );
                }
            }
            continue;
        }
        // Stale copies go (a copy at the metadata's version exists).
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
        } else if counted.len() == holders.len() && !flight.recently_moved.contains_key(&chunk_id) {
            stable.push((chunk, holders));
        }
    }
    flight.reported_repair.retain(|c| to_repair.contains_key(c));
    st.rt.to_repair = to_repair;
    for (chunk_id, version) in adopt {
        match master.commit(st, crate::ops::Op::SetChunkVersion { chunk_id, version }) {
            Ok(_) => tracing::warn!(
                "chunk {chunk_id:016X}: no copy had the new version (the master stopped while \
                 raising it); the copies at version {version} are used"
            ),
            Err(e) => tracing::error!("chunk {chunk_id:016X}: cannot take version {version}: {e}"),
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
        schedule(
            &mut flight,
            &mut actions,
            chunk,
            source,
            target[0].id,
            false,
        );
    }
    // Rebalancing, with the servers whose space report is newer than their last move.
    let fit: Vec<crate::csserv::CsView> = servers
        .iter()
        .filter(|s| {
            !flight.moving.contains(&s.id)
                && flight
                    .moved_at
                    .get(&s.id)
                    .is_none_or(|at| s.reported > Some(*at))
                && flight.into.get(&s.id).copied().unwrap_or(0) < write_limit
                && flight.out_of.get(&s.id).copied().unwrap_or(0) < read_limit
        })
        .cloned()
        .collect();
    let params = rebalance::Params {
        start_above: master.cfg.acceptable_difference / 100.0,
        chunk_bytes: moose_proto::CHUNK_SIZE,
        max_moves: write_limit.min(read_limit),
    };
    let (moves, active) = rebalance::plan_moves(&fit, &stable, &params, flight.rebalancing);
    // It ends only when no move is running (busy servers are left out of `fit`).
    if active || flight.moving.is_empty() {
        flight.rebalancing = active;
    }
    for mv in moves {
        flight.moving.insert(mv.from);
        flight.moving.insert(mv.to);
        schedule(&mut flight, &mut actions, mv.chunk, mv.from, mv.to, true);
    }
    actions
}

fn schedule(
    flight: &mut InFlight,
    actions: &mut Vec<Action>,
    chunk: ChunkRef,
    source: u32,
    target: u32,
    is_move: bool,
) {
    flight.chunks.insert(chunk.chunk_id);
    *flight.into.entry(target).or_default() += 1;
    *flight.out_of.entry(source).or_default() += 1;
    actions.push(Action::Replicate {
        chunk,
        source,
        target,
        is_move,
    });
}
