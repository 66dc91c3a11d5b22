//! Rebalancing: which chunk copies to move so that the chunkservers' disks fill evenly.
//!
//! It must settle. A move copies a chunk from the fullest server to the emptiest and deletes
//! the copy it came from; it is planned only when it cannot turn the order of the two round
//! (the spread is larger than what one chunk changes), so every move makes the usages closer
//! and the moves end. Rebalancing starts above ACCEPTABLE_PERCENTAGE_DIFFERENCE and, once
//! started, goes on down to half of it (hysteresis), so usage hovering at the threshold does
//! not start and stop it over and over. The caller plans only with servers whose space
//! report is newer than their last move, and keeps a chunk it moved from moving again soon.

use moose_proto::ChunkRef;

use crate::cs_registry::CsView;

/// A copy of `chunk` made on `to` from `from`, after which the copy on `from` is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    pub chunk: ChunkRef,
    pub from: u32,
    pub to: u32,
}

pub struct Params {
    /// Usage spread (a fraction, 0.05 = 5 points) above which rebalancing starts.
    pub start_above: f64,
    /// Bytes one move shifts (a chunk at its largest: the planner cannot see lengths).
    pub chunk_bytes: u64,
    pub max_moves: usize,
}

/// Plans up to `max_moves` moves among `servers` (only those fit to take part) for chunks
/// in `stable` (each with the servers holding it). `active`: rebalancing was under way.
/// Returns the moves and whether rebalancing is still under way.
pub fn plan_moves(
    servers: &[CsView],
    stable: &[(ChunkRef, Vec<u32>)],
    p: &Params,
    mut active: bool,
) -> (Vec<Move>, bool) {
    // (id, used bytes, total bytes) of the servers that can take chunks.
    let mut space: Vec<(u32, f64, f64)> = servers
        .iter()
        .filter(|s| s.writable && s.total > 0)
        .map(|s| (s.id, s.usage * s.total as f64, s.total as f64))
        .collect();
    let mut moves: Vec<Move> = Vec::new();
    if space.len() < 2 {
        return (moves, false);
    }
    let chunk = p.chunk_bytes as f64;
    while moves.len() < p.max_moves {
        let usage = |s: &(u32, f64, f64)| s.1 / s.2;
        let (mut full, mut empty) = (0, 0);
        for (i, s) in space.iter().enumerate() {
            if usage(s) > usage(&space[full]) {
                full = i;
            }
            if usage(s) < usage(&space[empty]) {
                empty = i;
            }
        }
        let spread = usage(&space[full]) - usage(&space[empty]);
        let threshold = if active {
            p.start_above / 2.0
        } else {
            p.start_above
        };
        let one_move = chunk / space[full].2 + chunk / space[empty].2;
        if spread <= threshold || spread < one_move {
            active = false;
            break;
        }
        active = true;
        let (from, to) = (space[full].0, space[empty].0);
        let taken = |c: &ChunkRef| moves.iter().any(|m| m.chunk.chunk_id == c.chunk_id);
        let Some((c, _)) = stable
            .iter()
            .find(|(c, holders)| holders.contains(&from) && !holders.contains(&to) && !taken(c))
        else {
            break;
        };
        moves.push(Move {
            chunk: *c,
            from,
            to,
        });
        space[full].1 -= chunk;
        space[empty].1 += chunk;
    }
    (moves, active)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn server(id: u32, used: u64, total: u64) -> CsView {
        CsView {
            id,
            avail: total - used,
            total,
            reported: None,
            usage: used as f64 / total as f64,
            writable: true,
        }
    }

    fn chunks(on: &[(u64, &[u32])]) -> Vec<(ChunkRef, Vec<u32>)> {
        on.iter()
            .map(|(id, holders)| {
                (
                    ChunkRef {
                        chunk_id: *id,
                        version: 1,
                    },
                    holders.to_vec(),
                )
            })
            .collect()
    }

    fn params() -> Params {
        Params {
            start_above: 0.05,
            chunk_bytes: 64 * MIB,
            max_moves: 4,
        }
    }

    /// Applies moves to (used, holders) as the cluster would once they are done.
    fn apply(servers: &mut [CsView], stable: &mut [(ChunkRef, Vec<u32>)], moves: &[Move]) {
        for m in moves {
            for s in servers.iter_mut() {
                let used = s.usage * s.total as f64
                    + if s.id == m.to { 64.0 * MIB as f64 } else { 0.0 }
                    - if s.id == m.from {
                        64.0 * MIB as f64
                    } else {
                        0.0
                    };
                s.usage = used / s.total as f64;
            }
            let (_, holders) = stable
                .iter_mut()
                .find(|(c, _)| c.chunk_id == m.chunk.chunk_id)
                .unwrap();
            holders.retain(|h| *h != m.from);
            holders.push(m.to);
        }
    }

    #[test]
    fn small_disks_where_one_chunk_is_several_percent_settle_at_once() {
        // The console's cluster on a nearly full machine: ~900 MiB per server, 10 copies.
        let mut servers = vec![
            server(1, 94 * MIB, 723 * MIB),
            server(2, 192 * MIB, 864 * MIB),
            server(3, 286 * MIB, 920 * MIB),
        ];
        let mut stable = chunks(&[
            (1, &[2, 3]),
            (2, &[3, 1]),
            (3, &[3, 2]),
            (4, &[3, 2]),
            (5, &[1, 3]),
        ]);
        let mut active = false;
        let mut total_moves = 0;
        for _ in 0..20 {
            let (moves, still) = plan_moves(&servers, &stable, &params(), active);
            active = still;
            total_moves += moves.len();
            apply(&mut servers, &mut stable, &moves);
        }
        assert!(
            total_moves <= 2,
            "{total_moves} moves: it must settle at once"
        );
        let (moves, active) = plan_moves(&servers, &stable, &params(), active);
        assert!(moves.is_empty() && !active);
    }

    #[test]
    fn a_new_empty_server_fills_until_the_spread_is_half_the_threshold() {
        let t = 10_000 * MIB;
        let mut servers = vec![server(1, 3_200 * MIB, t), server(2, 3_200 * MIB, t)];
        servers.push(server(3, 0, t));
        let ids: Vec<(u64, &[u32])> = (0..50u64).map(|i| (i, &[1u32, 2][..])).collect();
        let mut stable = chunks(&ids);
        let mut active = false;
        for _ in 0..100 {
            let (moves, still) = plan_moves(&servers, &stable, &params(), active);
            assert!(moves.len() <= 4);
            active = still;
            apply(&mut servers, &mut stable, &moves);
        }
        let usages: Vec<f64> = servers.iter().map(|s| s.usage).collect();
        let spread =
            usages.iter().cloned().fold(0.0, f64::max) - usages.iter().cloned().fold(1.0, f64::min);
        assert!(spread <= 0.025 + 1e-9, "{usages:?}");
        let (moves, _) = plan_moves(&servers, &stable, &params(), active);
        assert!(moves.is_empty());
    }

    #[test]
    fn a_spread_below_the_threshold_moves_nothing() {
        let servers = vec![
            server(1, 400 * MIB, 10_000 * MIB),
            server(2, 0, 10_000 * MIB),
        ];
        let stable = chunks(&[(1, &[1])]);
        assert!(plan_moves(&servers, &stable, &params(), false).0.is_empty());
    }
}
