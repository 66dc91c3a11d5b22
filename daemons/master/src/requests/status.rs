//! Read-only answers: space, where a file's chunks are, and the cluster status the console
//! and `moose-tool info` show.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;

use moose_proto::msg::{
    ChunkInfo, ChunkserverInfo, ClusterInfo, CopyInfo, CopyState, RemovalProgress, StatfsReply,
};
use moose_proto::{FsResult, Inode};

use crate::chunk_tally::Tally;
use crate::master::Master;
use crate::namespace::NodeData;
use crate::state::State;

pub fn statfs(m: &Master) -> StatfsReply {
    let (total, avail) = {
        let entries = m.cs.lock();
        entries
            .values()
            .filter(|e| e.connected)
            .fold((0u64, 0u64), |(t, a), e| (t + e.total(), a + e.avail()))
    };
    StatfsReply {
        total,
        avail,
        used: total.saturating_sub(avail),
        inodes: m.state().meta.nodes.len() as u64,
    }
}

pub fn file_info(m: &Master, inode: Inode) -> FsResult<Vec<ChunkInfo>> {
    let st = m.state();
    let node = st.node(inode)?;
    let NodeData::File { chunks, .. } = &node.data else {
        return Ok(vec![]);
    };
    let goal = node.goal;
    let mut out = Vec::new();
    for (i, chunk_id) in chunks.iter() {
        let version = st
            .meta
            .chunks
            .get(&chunk_id)
            .map(|c| c.version)
            .unwrap_or(0);
        let copies: Vec<(u32, CopyState)> = st
            .rt
            .locations
            .get(&chunk_id)
            .map(|v| {
                v.iter()
                    .map(|c| {
                        let state = if c.version != version {
                            CopyState::WrongVersion
                        } else if st.rt.damaged.contains(&(chunk_id, c.cs)) {
                            CopyState::Damaged
                        } else if st.rt.marked.contains_key(&(chunk_id, c.cs)) {
                            CopyState::MarkedForRemoval
                        } else {
                            CopyState::Valid
                        };
                        (c.cs, state)
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push((i, chunk_id, version, copies));
    }
    drop(st);
    let entries = m.cs.lock();
    Ok(out
        .into_iter()
        .map(|(index, chunk_id, version, copies)| ChunkInfo {
            index,
            chunk_id,
            version,
            goal,
            copies: copies
                .into_iter()
                .filter_map(|(cs, state)| {
                    Some(CopyInfo {
                        server: entries.get(&cs)?.addr.clone(),
                        state,
                    })
                })
                .collect(),
        })
        .collect())
}

/// For each chunkserver, its disks marked for removal: chunks on them and how many of those
/// still lack their goal's worth of copies elsewhere.
fn removal_progress(st: &State) -> HashMap<u32, Vec<RemovalProgress>> {
    let mut per: BTreeMap<(u32, String), (u64, u64)> = BTreeMap::new();
    for ((chunk_id, cs), disk) in &st.rt.marked {
        let Some(meta) = st.meta.chunks.get(chunk_id) else {
            continue;
        };
        let goal = st.chunk_goal(*chunk_id, meta.inode).map_or(1, usize::from);
        let counted = st.rt.counted_copies(*chunk_id, meta.version);
        let e = per.entry((*cs, disk.clone())).or_default();
        e.0 += 1;
        if counted < goal {
            e.1 += 1;
        }
    }
    let mut out: HashMap<u32, Vec<RemovalProgress>> = Default::default();
    for ((cs, disk), (chunks, remaining)) in per {
        out.entry(cs).or_default().push(RemovalProgress {
            disk,
            chunks,
            remaining,
        });
    }
    out
}

/// Up to this many chunks, a status query counts them all itself (a few tens of
/// milliseconds); beyond, it shows the health loop's last complete sweep.
const LIVE_TALLY_LIMIT: usize = 50_000;

/// The chunk matrix and the copies per server: counted now, or from the last sweep.
fn tally(st: &State) -> Tally {
    tally_counting_up_to(st, LIVE_TALLY_LIMIT)
}

fn tally_counting_up_to(st: &State, live_limit: usize) -> Tally {
    if st.meta.chunks.len() <= live_limit {
        return Tally::of_all(st);
    }
    let (mut t, age) = match &st.rt.swept {
        Some(s) => (s.tally.clone(), s.at.elapsed().as_secs()),
        None => (Tally::default(), 0),
    };
    t.health.swept_secs_ago = Some(age);
    t
}

pub fn cluster_info(m: &Master) -> ClusterInfo {
    let (version, cluster_id, files, dirs, chunks, per_cs, mut health, mut removal) = {
        let st = m.state();
        let (files, dirs) = st.meta.count_kinds();
        let Tally { mut health, per_cs } = tally(&st);
        health.pending_deletion = st.rt.deletions.len() as u64;
        health.to_repair = st.rt.to_repair.len() as u64;
        (
            st.meta.version,
            st.meta.cluster_id,
            files,
            dirs,
            st.meta.chunks.len() as u64,
            per_cs,
            health,
            removal_progress(&st),
        )
    };
    let (trash_files, trash_bytes) = m.state().trash_totals();
    let quotas = {
        let mut st = m.state();
        super::quota::tick(m, &mut st);
        let dirs: Vec<_> = st.meta.quotas.keys().copied().collect();
        crate::quota::reports(&st, &dirs, m.cfg.quota_grace)
    };
    health.pending_deletion += m.deleting.load(Relaxed);
    health.replicating = m.replicating.load(Relaxed);
    health.replicated_total = m.replicated_total.load(Relaxed);
    health.moved_total = m.moved_total.load(Relaxed);
    let entries = m.cs.lock();
    let mut chunkservers: Vec<ChunkserverInfo> = entries
        .values()
        .map(|e| ChunkserverInfo {
            id: e.id,
            removal: removal.remove(&e.id).unwrap_or_default(),
            addr: e.addr.clone(),
            version: e.version.clone(),
            connected: e.connected,
            chunks: per_cs.get(&e.id).copied().unwrap_or(0),
            used: e.used(),
            total: e.total(),
            disks: e.disks.clone(),
        })
        .collect();
    chunkservers.sort_by_key(|c| c.id);
    let (total_space, avail_space) = entries
        .values()
        .filter(|e| e.connected)
        .fold((0, 0), |(t, a), e| (t + e.total(), a + e.avail()));
    ClusterInfo {
        version: moose_proto::VERSION.to_string(),
        cluster_id,
        metadata_version: version,
        metadata_synced: m.log.status().borrow().synced,
        metadata_syncs_asked: m.log.syncs_asked(),
        total_space,
        avail_space,
        // As stock: files in the trash are counted there, not here.
        files: files.saturating_sub(trash_files),
        dirs,
        chunks,
        chunkservers,
        metaloggers: m.metaloggers.lock().list(),
        uptime_secs: m.started.elapsed().as_secs(),
        ops_total: m.ops_served.load(Relaxed),
        sessions: m.sessions.load(Relaxed),
        health,
        trash_files,
        trash_bytes,
        quotas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk_tally::Swept;
    use crate::namespace::{ChunkMeta, Meta};
    use crate::state::Copy;
    use moose_proto::{FileKind, Timespec, ROOT_INODE};
    use std::time::{Duration, Instant};

    #[test]
    fn many_chunks_are_shown_as_the_last_sweep_found_them_with_its_age() {
        let mut st = State::new(Meta::fresh(1, Timespec::default(), 2));
        crate::test_ops::create(&mut st, ROOT_INODE, "f", 2, FileKind::File);
        for id in 1..=3 {
            st.meta.chunks.insert(
                id,
                ChunkMeta {
                    version: 1,
                    inode: 2,
                    index: id as u32 - 1,
                },
            );
            st.rt.locations.insert(id, vec![Copy { cs: 7, version: 1 }]);
        }
        let now = tally_counting_up_to(&st, 3);
        assert_eq!(now.health.endangered, 3);
        assert_eq!(now.health.swept_secs_ago, None);
        assert_eq!(now.per_cs.get(&7), Some(&3));

        let before = tally_counting_up_to(&st, 2);
        assert_eq!(before.health.swept_secs_ago, Some(0), "no sweep ended yet");
        assert_eq!(before.health.endangered, 0);

        let mut old = Tally::of_all(&st);
        old.health.endangered = 1;
        st.rt.swept = Some(Swept {
            tally: old,
            at: Instant::now() - Duration::from_secs(5),
        });
        let swept = tally_counting_up_to(&st, 2);
        assert_eq!(
            swept.health.endangered, 1,
            "the sweep's counts, not today's"
        );
        assert_eq!(swept.health.swept_secs_ago, Some(5));
    }
}
