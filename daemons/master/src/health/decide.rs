//! The health loop's decisions, as a pure function of the state and the servers' views.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use moose_proto::ChunkRef;

use crate::chunk_tally::{Swept, Tally};
use crate::cs_registry::CsView;
use crate::placement;
use crate::rebalance;
use crate::state::{Copy, State};

/// A chunk moved by rebalancing is not moved again for this long.
const MOVE_COOLDOWN: Duration = Duration::from_secs(600);

/// What a pass may do.
pub struct Limits {
    /// Replications into one server at once.
    pub write: usize,
    /// Replications out of one server at once.
    pub read: usize,
    /// Usage spread (0.0 to 1.0) that starts rebalancing.
    pub acceptable_difference: f64,
    /// Every chunkserver the file system has had is connected.
    pub every_server_back: bool,
    /// Chunks this pass may examine: a pass takes the next ones of a sweep over the chunk
    /// ids, so that the state lock is held for a bounded time however many chunks there are.
    pub budget: usize,
}

/// What a pass decided.
pub struct Decision {
    pub actions: Vec<Action>,
    /// Chunks whose copies are all one version behind, to take at that version.
    pub adopt: Vec<(u64, u32)>,
    /// Chunks found needing repair for the first time (to log once).
    pub newly_to_repair: Vec<u64>,
}

/// Replications and moves under way, and what the loop remembers between passes.
#[derive(Default)]
pub struct InFlight {
    pub chunks: HashSet<u64>,
    pub into: HashMap<u32, usize>,
    pub out_of: HashMap<u32, usize>,
    /// Rebalancing is under way (it stops lower than it starts).
    pub rebalancing: bool,
    /// When a move into or out of each server last finished: the server takes part in the
    /// next one only after a space report newer than that.
    pub moved_at: HashMap<u32, Instant>,
    /// Servers with a move running now.
    pub moving: HashSet<u32>,
    /// Chunks moved recently, kept from moving again.
    pub recently_moved: HashMap<u64, Instant>,
    /// Chunks already reported as needing repair (logged once).
    pub reported_repair: HashSet<u64>,
    /// The chunk id the sweep examines next.
    pub cursor: u64,
    /// The matrix of the sweep under way, published in `st.rt.swept` when it ends.
    pub tally: Tally,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
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

/// Decides one pass of the health loop from the state and the connected servers' views: which
/// copies to delete and make, and which chunks to take at an older version. Changes only
/// `st.rt` (copies it lets go of, deletions it hands out, the chunks needing repair) and
/// `flight`; no I/O, so every decision can be tested on a made-up state.
pub fn decide(
    st: &mut State,
    servers: &[CsView],
    flight: &mut InFlight,
    limits: &Limits,
    now: Instant,
) -> Decision {
    let every_server_back = limits.every_server_back;
    let mut actions: Vec<Action> = st
        .rt
        .deletions
        .drain(..)
        .map(|(cs, chunk)| Action::Delete { cs, chunk })
        .collect();
    let (write_limit, read_limit) = (limits.write, limits.read);
    // Chunks short of copies, most urgent first: (copies that count, chunk, every holder).
    let mut short: Vec<(usize, ChunkRef, Vec<u32>, Vec<u32>)> = Vec::new();
    let mut stable: Vec<(ChunkRef, Vec<u32>)> = Vec::new();
    // Chunks whose only copies are one version behind, taken as they are (see below).
    let mut adopt: Vec<(u64, u32)> = Vec::new();
    flight
        .recently_moved
        .retain(|_, at| now.saturating_duration_since(*at) < MOVE_COOLDOWN);
    let mut newly_to_repair = Vec::new();
    // The sweep visits ids 1 to next_chunk_id - 1 in turn, from where the last pass stopped:
    // at most `budget` live chunks, and four times as many ids (deleted chunks leave gaps).
    let end = st.meta.next_chunk_id.max(1);
    let span = end - 1;
    let mut id = if (1..end).contains(&flight.cursor) {
        flight.cursor
    } else {
        1
    };
    let visits = span.min((limits.budget as u64).saturating_mul(4));
    let mut examined = 0usize;
    for _ in 0..visits {
        if examined >= limits.budget {
            break;
        }
        let chunk_id = id;
        id = if id + 1 >= end { 1 } else { id + 1 };
        let meta = st.meta.chunks.get(&chunk_id);
        // Counted in the sweep's matrix as found, whatever this pass does with it.
        let goal = meta.map(|meta| flight.tally.add_chunk(st, chunk_id, meta));
        if id == 1 {
            st.rt.swept = Some(Swept {
                tally: std::mem::take(&mut flight.tally),
                at: now,
            });
        }
        let Some(meta) = meta else {
            st.rt.to_repair.remove(&chunk_id);
            flight.reported_repair.remove(&chunk_id);
            continue;
        };
        examined += 1;
        if flight.chunks.contains(&chunk_id) || st.rt.write_locks.contains_key(&chunk_id) {
            continue;
        }
        // Found again below if it still needs repair.
        let reported = flight.reported_repair.remove(&chunk_id);
        st.rt.to_repair.remove(&chunk_id);
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
                st.rt.to_repair.insert(chunk_id, meta.inode);
                flight.reported_repair.insert(chunk_id);
                if !reported {
                    newly_to_repair.push(chunk_id);
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
        let goal = goal.flatten().map_or(1, usize::from);
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
    flight.cursor = id;
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
        schedule(flight, &mut actions, chunk, source, target[0].id, false);
    }
    // Rebalancing, with the servers whose space report is newer than their last move.
    let fit: Vec<CsView> = servers
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
        start_above: limits.acceptable_difference,
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
        schedule(flight, &mut actions, mv.chunk, mv.from, mv.to, true);
    }
    Decision {
        actions,
        adopt,
        newly_to_repair,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::{ChunkMeta, Meta};
    use crate::ops::Op;
    use moose_proto::{FileKind, Timespec, ROOT_INODE};

    const GIB: u64 = 1 << 30;

    fn server(id: u32, used_gib: u64) -> CsView {
        CsView {
            id,
            avail: (100 - used_gib) * GIB,
            total: 100 * GIB,
            reported: Some(Instant::now()),
            usage: used_gib as f64 / 100.0,
            writable: true,
        }
    }

    /// A state with file inode 2 at `goal` holding chunk 1 (version 5), copies as given.
    fn state(goal: u8, copies: &[(u32, u32)]) -> State {
        let mut st = State::new(Meta::fresh(1, Timespec::default(), goal));
        st.apply(&Op::Create {
            parent: ROOT_INODE,
            name: b"f".to_vec(),
            inode: 2,
            kind: FileKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            rdev: 0,
            time: Timespec::default(),
        })
        .unwrap();
        st.meta.nodes.get_mut(&2).unwrap().goal = goal;
        st.meta.chunks.insert(
            1,
            ChunkMeta {
                version: 5,
                inode: 2,
                index: 0,
            },
        );
        st.meta.next_chunk_id = 2;
        st.rt.locations.insert(
            1,
            copies
                .iter()
                .map(|&(cs, version)| Copy { cs, version })
                .collect(),
        );
        st
    }

    /// A state with `n` files at goal 2, file `i` holding chunk `i` (version 1) with one copy
    /// on server 1.
    fn short_chunks(n: u64) -> State {
        let mut st = State::new(Meta::fresh(1, Timespec::default(), 2));
        for i in 1..=n {
            crate::test_ops::create(&mut st, ROOT_INODE, &format!("f{i}"), 1 + i, FileKind::File);
            st.meta.chunks.insert(
                i,
                ChunkMeta {
                    version: 1,
                    inode: 1 + i,
                    index: 0,
                },
            );
            st.rt.locations.insert(i, vec![Copy { cs: 1, version: 1 }]);
        }
        st.meta.next_chunk_id = n + 1;
        st
    }

    fn copied(d: &Decision) -> Vec<u64> {
        d.actions
            .iter()
            .filter_map(|a| match a {
                Action::Replicate { chunk, .. } => Some(chunk.chunk_id),
                Action::Delete { .. } => None,
            })
            .collect()
    }

    fn limits() -> Limits {
        Limits {
            write: 4,
            read: 8,
            acceptable_difference: 0.05,
            every_server_back: true,
            budget: usize::MAX,
        }
    }

    fn run(st: &mut State, servers: &[CsView]) -> Decision {
        decide(
            st,
            servers,
            &mut InFlight::default(),
            &limits(),
            Instant::now(),
        )
    }

    const V5: ChunkRef = ChunkRef {
        chunk_id: 1,
        version: 5,
    };

    /// Chunk 1 (version 5) copied from `source` to `target`.
    fn copy(source: u32, target: u32, is_move: bool) -> Action {
        Action::Replicate {
            chunk: V5,
            source,
            target,
            is_move,
        }
    }

    #[test]
    fn an_undergoal_chunk_is_copied_from_a_holder_to_another_server() {
        let mut st = state(2, &[(1, 5)]);
        let d = run(&mut st, &[server(1, 10), server(2, 10)]);
        assert_eq!(d.actions, vec![copy(1, 2, false)]);
    }

    #[test]
    fn an_overgoal_chunk_loses_the_copy_on_the_fullest_server() {
        let mut st = state(1, &[(1, 5), (2, 5)]);
        let d = run(&mut st, &[server(1, 10), server(2, 40)]);
        assert_eq!(d.actions, vec![Action::Delete { cs: 2, chunk: V5 }]);
        assert_eq!(st.rt.locations[&1], vec![Copy { cs: 1, version: 5 }]);
    }

    #[test]
    fn a_stale_copy_goes_once_a_current_one_exists_and_is_then_replaced() {
        let mut st = state(2, &[(1, 5), (2, 4)]);
        let d = run(&mut st, &[server(1, 10), server(2, 10)]);
        let stale = ChunkRef {
            chunk_id: 1,
            version: 4,
        };
        assert!(d.actions.contains(&Action::Delete {
            cs: 2,
            chunk: stale
        }));
        assert!(d.actions.contains(&copy(1, 2, false)));
    }

    #[test]
    fn copies_all_one_version_behind_are_adopted_and_others_kept_for_repair() {
        let mut st = state(1, &[(1, 4)]);
        let d = run(&mut st, &[server(1, 10)]);
        assert_eq!(d.adopt, vec![(1, 4)]);
        assert!(d.actions.is_empty(), "nothing deleted: {:?}", d.actions);

        let mut st = state(1, &[(1, 3)]);
        let mut flight = InFlight::default();
        let servers = [server(1, 10)];
        let d = decide(&mut st, &servers, &mut flight, &limits(), Instant::now());
        assert!(d.adopt.is_empty() && d.actions.is_empty());
        assert_eq!(d.newly_to_repair, vec![1]);
        assert_eq!(st.rt.to_repair.get(&1), Some(&2));
        let again = decide(&mut st, &servers, &mut flight, &limits(), Instant::now());
        assert!(again.newly_to_repair.is_empty(), "reported once");

        // While a known server is missing, one version behind is not adopted either.
        let mut st = state(1, &[(1, 4)]);
        let mut missing = limits();
        missing.every_server_back = false;
        let d = decide(
            &mut st,
            &servers,
            &mut InFlight::default(),
            &missing,
            Instant::now(),
        );
        assert!(d.adopt.is_empty());
    }

    #[test]
    fn a_copy_on_a_disk_marked_for_removal_does_not_count_and_is_not_deleted() {
        let mut st = state(1, &[(1, 5)]);
        st.rt.marked.insert((1, 1), "/disk1".into());
        let d = run(&mut st, &[server(1, 10), server(2, 10)]);
        assert_eq!(d.actions, vec![copy(1, 2, false)]);
        // With the goal met elsewhere the marked copy stays (the admin removes the disk).
        let mut st = state(1, &[(1, 5), (2, 5)]);
        st.rt.marked.insert((1, 1), "/disk1".into());
        let d = run(&mut st, &[server(1, 10), server(2, 10)]);
        assert!(d.actions.is_empty(), "{:?}", d.actions);
    }

    #[test]
    fn a_locked_or_replicating_chunk_is_left_alone() {
        let mut st = state(2, &[(1, 5)]);
        let mut flight = InFlight::default();
        flight.chunks.insert(1);
        let d = decide(
            &mut st,
            &[server(1, 10), server(2, 10)],
            &mut flight,
            &limits(),
            Instant::now(),
        );
        assert!(d.actions.is_empty());
    }

    #[test]
    fn rebalancing_moves_a_stable_chunk_from_the_fullest_to_the_emptiest_server() {
        let mut st = state(1, &[(1, 5)]);
        let d = run(&mut st, &[server(1, 60), server(2, 5)]);
        assert_eq!(d.actions, vec![copy(1, 2, true)]);
        // Within the acceptable difference nothing moves.
        let mut st = state(1, &[(1, 5)]);
        let d = run(&mut st, &[server(1, 12), server(2, 10)]);
        assert!(d.actions.is_empty(), "{:?}", d.actions);
    }

    #[test]
    fn a_pass_examines_its_budget_and_the_sweep_goes_round_every_chunk() {
        let mut st = short_chunks(10);
        let servers = [server(1, 10), server(2, 10)];
        let mut flight = InFlight::default();
        let mut budget = limits();
        budget.write = 100;
        budget.read = 100;
        budget.budget = 4;
        let mut seen = Vec::new();
        for pass in 0..3 {
            assert!(st.rt.swept.is_none(), "no sweep ended before pass {pass}");
            let d = decide(&mut st, &servers, &mut flight, &budget, Instant::now());
            let mut got = copied(&d);
            assert!(got.len() <= 4, "at most the budget: {got:?}");
            seen.append(&mut got);
        }
        // The sweep ended in the third pass, and counted every chunk as it found it.
        let swept = st.rt.swept.as_ref().expect("a sweep ended");
        assert_eq!(swept.tally.health.endangered, 10);
        assert_eq!(swept.tally.health.matrix[2][1], 10);
        assert_eq!(swept.tally.per_cs.get(&1), Some(&10));
        seen.sort_unstable();
        assert_eq!(seen, (1..=10).collect::<Vec<_>>(), "every chunk once");
        // Round again: they are all being copied, so nothing is ordered twice.
        let d = decide(&mut st, &servers, &mut flight, &budget, Instant::now());
        assert!(copied(&d).is_empty(), "{:?}", d.actions);
    }

    #[test]
    fn chunks_needing_repair_stay_listed_between_visits_and_go_with_their_chunk() {
        let mut st = short_chunks(6);
        for i in 1..=6 {
            st.rt.locations.insert(i, vec![Copy { cs: 1, version: 0 }]);
            st.meta.chunks.get_mut(&i).unwrap().version = 5;
        }
        let servers = [server(1, 10), server(2, 10)];
        let mut flight = InFlight::default();
        let mut budget = limits();
        budget.budget = 3;
        let d = decide(&mut st, &servers, &mut flight, &budget, Instant::now());
        assert_eq!(d.newly_to_repair, vec![1, 2, 3]);
        let d = decide(&mut st, &servers, &mut flight, &budget, Instant::now());
        assert_eq!(d.newly_to_repair, vec![4, 5, 6]);
        assert_eq!(st.rt.to_repair.len(), 6);
        // Visited again: still listed, not reported again.
        let d = decide(&mut st, &servers, &mut flight, &budget, Instant::now());
        assert!(d.newly_to_repair.is_empty());
        assert_eq!(st.rt.to_repair.len(), 6);
        // A chunk that is gone leaves the list when the sweep passes its id.
        st.meta.chunks.remove(&5);
        decide(&mut st, &servers, &mut flight, &budget, Instant::now());
        assert!(!st.rt.to_repair.contains_key(&5));
        assert_eq!(st.rt.to_repair.len(), 5);
    }
}
