//! Where copies go: new chunks on the chunkservers with the most free space, never two copies
//! on one server.

use moose_proto::{CsAddr, FsError, FsResult};

use crate::cs_registry::CsView;

/// Picks up to `goal` distinct writable servers, most available space first, skipping
/// `exclude`. Fewer than `goal` servers gives fewer copies (the chunk is then undergoal and
/// the health loop adds copies when servers appear); none is an error.
pub fn choose_new(servers: &[CsView], goal: usize, exclude: &[u32]) -> FsResult<Vec<CsView>> {
    let mut candidates: Vec<&CsView> = servers
        .iter()
        .filter(|s| s.writable && !exclude.contains(&s.id))
        .collect();
    if candidates.is_empty() {
        return Err(if servers.is_empty() {
            FsError::NoChunkservers
        } else {
            FsError::NoSpace
        });
    }
    // Most space first; servers within 1% of each other are shuffled so load spreads.
    candidates.sort_by_key(|c| std::cmp::Reverse(c.avail));
    let top = candidates[0].avail;
    let similar = candidates
        .iter()
        .take_while(|c| c.avail >= top - top / 100)
        .count();
    use rand::seq::SliceRandom;
    candidates[..similar].shuffle(&mut rand::rng());
    Ok(candidates.into_iter().take(goal.max(1)).cloned().collect())
}

/// The order in which a client writes along the copies' chain.
pub fn chain_order(mut addrs: Vec<CsAddr>) -> Vec<CsAddr> {
    addrs.sort();
    addrs.dedup();
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: u32, avail: u64, writable: bool) -> CsView {
        CsView {
            id,
            avail,
            total: avail * 2,
            reported: None,
            usage: 0.5,
            writable,
        }
    }

    #[test]
    fn distinct_servers_with_space_first() {
        let servers = vec![
            view(1, 10, true),
            view(2, 1000, true),
            view(3, 500, true),
            view(4, 9999, false),
        ];
        let got: Vec<u32> = choose_new(&servers, 2, &[])
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(got, vec![2, 3]);
        let all: Vec<u32> = choose_new(&servers, 9, &[])
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(all.len(), 3);
        let excl: Vec<u32> = choose_new(&servers, 1, &[2])
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(excl, vec![3]);
        assert_eq!(
            choose_new(&[], 1, &[]).unwrap_err(),
            FsError::NoChunkservers
        );
        assert_eq!(
            choose_new(&[view(1, 0, false)], 1, &[]).unwrap_err(),
            FsError::NoSpace
        );
    }
}
