//! Folder quotas (`setquota`, `getquota`, `delquota`, `repquota`): limits on the inodes,
//! length, size and real size of a folder's tree, checked against the folder counters
//! ([`crate::dirinfo`]).
//!
//! The limits are metadata (`Op::SetQuota`, kept in dumps), and so is when a soft limit began
//! to be exceeded (`Op::QuotaClock`, from [`clock_changes`]): a grace period runs on across a
//! restart, a replay and a metalogger restore.
//!
//! Where they are enforced: every op that adds inodes or bytes to a tree (create, link,
//! snapshot, rename into another tree, truncate to a larger length) is checked before it is
//! applied ([`admit`]); data written by a client is admitted before write(2) is
//! acknowledged: the client asks how far the file may grow ([`allowance`]) and writes only
//! that much, so nothing beyond a limit is ever written.

use std::collections::{BTreeMap, HashSet};

use moose_proto::msg::{DirStats, Limits, QuotaLimits, QuotaReport};
use moose_proto::{FsError, FsResult, Inode, ROOT_INODE};

use crate::dirinfo::own;
use crate::namespace::{Meta, NodeData};
use crate::ops::Op;
use crate::state::State;

const BLOCK: u64 = 64 * 1024;

/// Quotas by folder (part of the metadata).
pub type Quotas = BTreeMap<Inode, QuotaLimits>;

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// True when any figure of `u` is above its limit in `l`.
pub fn exceeded(l: &Limits, u: &DirStats) -> bool {
    over(l.inodes, u.inodes)
        || over(l.length, u.length)
        || over(l.size, u.size)
        || over(l.realsize, u.realsize)
}

fn over(limit: Option<u64>, value: u64) -> bool {
    limit.is_some_and(|l| value > l)
}

/// True when adding `add` to `u` takes a figure that grows above its limit.
fn growth_exceeds(l: &Limits, u: &DirStats, add: &DirStats) -> bool {
    let grows =
        |limit: Option<u64>, now: u64, more: u64| more > 0 && over(limit, now.saturating_add(more));
    grows(l.inodes, u.inodes, add.inodes)
        || grows(l.length, u.length, add.length)
        || grows(l.size, u.size, add.size)
        || grows(l.realsize, u.realsize, add.realsize)
}

fn grace_of(q: &QuotaLimits, default_grace: u64) -> u64 {
    q.grace.unwrap_or(default_grace)
}

/// The limits that stop growth now: the hard ones, and the soft ones once their grace
/// period is over.
fn effective(st: &State, dir: Inode, q: &QuotaLimits, now: u64, default_grace: u64) -> Vec<Limits> {
    let mut v = vec![q.hard];
    let usage = st.tree.totals(dir).unwrap_or_default();
    if exceeded(&q.soft, &usage) {
        let since = st.meta.quota_since.get(&dir).copied().unwrap_or(now);
        if now.saturating_sub(since) >= grace_of(q, default_grace) {
            v.push(q.soft);
        }
    }
    v
}

/// Quota folders on the paths from `dirs` to the root, each once.
fn quota_folders(st: &State, dirs: &[Inode]) -> Vec<Inode> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for &d in dirs {
        let mut ino = d;
        loop {
            if !seen.insert(ino) {
                break;
            }
            if st.meta.quotas.contains_key(&ino) {
                out.push(ino);
            }
            match st.meta.nodes.get(&ino).and_then(|n| n.dir()) {
                Some(d) if d.parent != ino => ino = d.parent,
                _ => break,
            }
        }
    }
    out
}

/// Whether a quota lies over file `inode` (on any path from it to the root).
pub fn lies_over(st: &State, inode: Inode) -> bool {
    !st.meta.quotas.is_empty() && !quota_folders(st, &st.tree.parents(inode)).is_empty()
}

/// Refuses with `Quota` an op that would take a tree over a limit in force. Ops that add
/// nothing (or only data, see [`allowance`]) pass.
pub fn admit(st: &State, op: &Op, default_grace: u64) -> FsResult<()> {
    if st.meta.quotas.is_empty() {
        return Ok(());
    }
    let (dirs, add): (Vec<Inode>, DirStats) = match op {
        Op::Create { parent, .. } | Op::Symlink { parent, .. } => (
            vec![*parent],
            DirStats {
                inodes: 1,
                ..Default::default()
            },
        ),
        Op::Link { inode, parent, .. } => match st.meta.nodes.get(inode) {
            Some(n) => (vec![*parent], own(n)),
            None => return Ok(()),
        },
        Op::Snapshot { src, parent, .. } => match st.tree.of(&st.meta, *src) {
            Some(s) => (vec![*parent], s),
            None => return Ok(()),
        },
        Op::Rename {
            parent,
            name,
            new_parent,
            new_name,
            exchange,
            ..
        } if parent != new_parent => {
            moves_into(st, *parent, name, *new_parent, default_grace)?;
            if *exchange {
                // The other tree moves the other way (each direction checked on its own).
                moves_into(st, *new_parent, new_name, *parent, default_grace)?;
            }
            return Ok(());
        }
        Op::SetLength { inode, length, .. } => {
            let Some(n) = st.meta.nodes.get(inode) else {
                return Ok(());
            };
            if *length <= n.length() {
                return Ok(());
            }
            (
                st.tree.parents(*inode),
                DirStats {
                    length: length - n.length(),
                    ..Default::default()
                },
            )
        }
        _ => return Ok(()),
    };
    let folders = quota_folders(st, &dirs);
    check(st, &folders, &add, default_grace)
}

/// The tree named `name` in `from` moving under `to`: only the quota folders above `to` and
/// not above `from` gain anything.
fn moves_into(st: &State, from: Inode, name: &[u8], to: Inode, default_grace: u64) -> FsResult<()> {
    let Some(child) = st.dir(from).ok().and_then(|d| d.get(name)) else {
        return Ok(());
    };
    let Some(s) = st.tree.of(&st.meta, child) else {
        return Ok(());
    };
    let left: HashSet<Inode> = quota_folders(st, &[from]).into_iter().collect();
    let into: Vec<Inode> = quota_folders(st, &[to])
        .into_iter()
        .filter(|q| !left.contains(q))
        .collect();
    check(st, &into, &s, default_grace)
}

fn check(st: &State, folders: &[Inode], add: &DirStats, default_grace: u64) -> FsResult<()> {
    let now = unix_now();
    for &q in folders {
        let Some(limits) = st.meta.quotas.get(&q) else {
            continue;
        };
        let usage = st.tree.totals(q).unwrap_or_default();
        for l in effective(st, q, limits, now, default_grace) {
            if growth_exceeds(&l, &usage, add) {
                return Err(FsError::Quota);
            }
        }
    }
    Ok(())
}

/// How long file `inode` may become under the limits in force of every quota above it
/// (`u64::MAX`: no limit). Never less than its length now (writes within a file add nothing).
pub fn allowance(st: &State, inode: Inode, default_grace: u64) -> FsResult<u64> {
    let n = st.node(inode)?;
    let NodeData::File { length, .. } = &n.data else {
        return Err(FsError::Inval);
    };
    let length = *length;
    if st.meta.quotas.is_empty() {
        return Ok(u64::MAX);
    }
    let goal = u64::from(n.goal.max(1));
    let now = unix_now();
    // The last block is counted whole already: writes may fill it.
    let stored_end = length.div_ceil(BLOCK) * BLOCK;
    let mut allowed = u64::MAX;
    for q in quota_folders(st, &st.tree.parents(inode)) {
        let Some(limits) = st.meta.quotas.get(&q) else {
            continue;
        };
        let usage = st.tree.totals(q).unwrap_or_default();
        for l in effective(st, q, limits, now, default_grace) {
            if let Some(lim) = l.length {
                allowed = allowed.min(length + lim.saturating_sub(usage.length));
            }
            if let Some(lim) = l.size {
                let room = lim.saturating_sub(usage.size) / BLOCK * BLOCK;
                allowed = allowed.min(stored_end + room);
            }
            if let Some(lim) = l.realsize {
                let room = lim.saturating_sub(usage.realsize) / goal / BLOCK * BLOCK;
                allowed = allowed.min(stored_end + room);
            }
        }
    }
    Ok(allowed.max(length))
}

/// A new chunk for file `inode` (a write lease into a hole): refused when a size or real
/// size limit in force above it is already reached, whatever the client asked before.
pub fn may_add_chunk(st: &State, inode: Inode, default_grace: u64) -> FsResult<()> {
    if st.meta.quotas.is_empty() {
        return Ok(());
    }
    let now = unix_now();
    for q in quota_folders(st, &st.tree.parents(inode)) {
        let Some(limits) = st.meta.quotas.get(&q) else {
            continue;
        };
        let usage = st.tree.totals(q).unwrap_or_default();
        for l in effective(st, q, limits, now, default_grace) {
            let full = |limit: Option<u64>, used: u64| limit.is_some_and(|lim| used >= lim);
            if full(l.size, usage.size) || full(l.realsize, usage.realsize) {
                return Err(FsError::Quota);
            }
        }
    }
    Ok(())
}

/// The ops that start or stop the grace clock of each quota at `now` (run every second, and
/// before quota reports and checks).
pub fn clock_changes(st: &State, now: u64) -> Vec<Op> {
    let mut ops = Vec::new();
    for (dir, q) in &st.meta.quotas {
        let over = exceeded(&q.soft, &st.tree.totals(*dir).unwrap_or_default());
        match (over, st.meta.quota_since.contains_key(dir)) {
            (true, false) => ops.push(Op::QuotaClock {
                inode: *dir,
                since: Some(now),
            }),
            (false, true) => ops.push(Op::QuotaClock {
                inode: *dir,
                since: None,
            }),
            _ => {}
        }
    }
    ops
}

/// Applies `Op::QuotaClock`.
pub fn set_clock(meta: &mut Meta, inode: Inode, since: Option<u64>) {
    match since {
        Some(t) if meta.quotas.contains_key(&inode) => {
            meta.quota_since.insert(inode, t);
        }
        _ => {
            meta.quota_since.remove(&inode);
        }
    }
}

/// Applies `Op::SetQuota`.
pub fn set(meta: &mut Meta, inode: Inode, quota: Option<QuotaLimits>) -> FsResult<()> {
    let n = meta.nodes.get(&inode).ok_or(FsError::NoEnt)?;
    if !n.is_dir() {
        return Err(FsError::NotDir);
    }
    match quota {
        Some(q) => {
            meta.quotas.insert(inode, q);
        }
        None => {
            meta.quotas.remove(&inode).ok_or(FsError::NoEnt)?;
            meta.quota_since.remove(&inode);
        }
    }
    Ok(())
}

/// A folder's path from the root (names looked up in each parent).
pub fn path_of(meta: &Meta, inode: Inode) -> String {
    let mut names = Vec::new();
    let mut ino = inode;
    while ino != ROOT_INODE {
        let Some(parent) = meta.nodes.get(&ino).and_then(|n| n.dir()).map(|d| d.parent) else {
            break;
        };
        let Some(name) = meta.nodes.get(&parent).and_then(|n| n.dir()).and_then(|d| {
            d.iter()
                .find(|(_, i)| *i == ino)
                .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
        }) else {
            break;
        };
        names.push(name);
        if parent == ino {
            break;
        }
        ino = parent;
    }
    names.reverse();
    format!("/{}", names.join("/"))
}

/// Reports of the quotas of `dirs`.
pub fn reports(st: &State, dirs: &[Inode], default_grace: u64) -> Vec<QuotaReport> {
    let now = unix_now();
    dirs.iter()
        .filter_map(|d| st.meta.quotas.get(d).map(|q| (*d, q)))
        .map(|(d, q)| QuotaReport {
            inode: d,
            path: path_of(&st.meta, d),
            limits: *q,
            grace: grace_of(q, default_grace),
            usage: st.tree.totals(d).unwrap_or_default(),
            soft_exceeded_for: st.meta.quota_since.get(&d).map(|s| now.saturating_sub(*s)),
        })
        .collect()
}

/// Every quota folder in the tree at `dir`.
pub fn under(st: &State, dir: Inode) -> Vec<Inode> {
    st.meta
        .quotas
        .keys()
        .filter(|q| st.is_ancestor(dir, **q))
        .copied()
        .collect()
}

/// What `statfs` shows inside a folder with a size quota: (total, used) of the nearest such
/// quota above `inode` (its hard size limit, else its soft one).
pub fn statfs_limit(st: &State, inode: Inode) -> Option<(u64, u64)> {
    let start = match st.meta.nodes.get(&inode) {
        Some(n) if n.is_dir() => inode,
        Some(_) => *st.tree.parents(inode).first()?,
        None => return None,
    };
    for q in quota_folders(st, &[start]) {
        let limits = st.meta.quotas.get(&q)?;
        if let Some(total) = limits.hard.size.or(limits.soft.size) {
            let used = st.tree.totals(q).unwrap_or_default().size;
            return Some((total, used));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_ops::{create, t};
    use moose_proto::FileKind;

    fn state() -> State {
        let mut st = State::new(Meta::fresh(1, t(0), 2));
        for (parent, name, inode, kind) in [
            (ROOT_INODE, "q", 2, FileKind::Dir),
            (2, "f", 3, FileKind::File),
        ] {
            create(&mut st, parent, name, inode, kind);
        }
        st
    }

    fn limits(hard: Limits) -> QuotaLimits {
        QuotaLimits {
            hard,
            ..Default::default()
        }
    }

    #[test]
    fn a_hard_size_limit_bounds_how_far_a_file_may_grow() {
        let mut st = state();
        let mib = 1 << 20;
        st.apply(&Op::SetQuota {
            inode: 2,
            quota: Some(limits(Limits {
                size: Some(10 * mib),
                inodes: Some(3),
                ..Default::default()
            })),
        })
        .unwrap();
        assert_eq!(allowance(&st, 3, 0), Ok(10 * mib));
        // With 1 MiB + 1 byte stored, the partial block may be filled, then 9 MiB - 64 KiB.
        st.apply(&Op::AddChunk {
            inode: 3,
            index: 0,
            chunk_id: 1,
            version: 1,
        })
        .unwrap();
        st.apply(&Op::WriteEnd {
            inode: 3,
            length: mib + 1,
            time: t(2),
        })
        .unwrap();
        assert_eq!(crate::dirinfo::chunk_size(0, mib + 1), mib + BLOCK);
        assert_eq!(allowance(&st, 3, 0), Ok(10 * mib));
        assert_eq!(may_add_chunk(&st, 3, 0), Ok(()));
        st.apply(&Op::WriteEnd {
            inode: 3,
            length: 10 * mib,
            time: t(2),
        })
        .unwrap();
        assert_eq!(
            may_add_chunk(&st, 3, 0),
            Err(FsError::Quota),
            "the size is reached"
        );
        assert_eq!(allowance(&st, 3, 0), Ok(10 * mib));
        // Inodes: the folder and the file are two of three.
        let create = |inode, name: &str| Op::Create {
            parent: 2,
            name: name.as_bytes().to_vec(),
            inode,
            kind: FileKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            rdev: 0,
            time: t(3),
        };
        admit(&st, &create(4, "g"), 0).unwrap();
        st.apply(&create(4, "g")).unwrap();
        assert_eq!(admit(&st, &create(5, "h"), 0), Err(FsError::Quota));
        // Moving a file in from outside counts too; moving one out does not.
        let rename = |parent, new_parent, name: &str| Op::Rename {
            parent,
            name: name.as_bytes().to_vec(),
            new_parent,
            new_name: name.as_bytes().to_vec(),
            exchange: false,
            keep_target: false,
            time: t(4),
        };
        let mut outside = create(6, "x");
        if let Op::Create { parent, .. } = &mut outside {
            *parent = ROOT_INODE;
        }
        st.apply(&outside).unwrap();
        assert_eq!(
            admit(&st, &rename(ROOT_INODE, 2, "x"), 0),
            Err(FsError::Quota)
        );
        assert_eq!(admit(&st, &rename(2, ROOT_INODE, "g"), 0), Ok(()));
    }

    #[test]
    fn a_soft_limit_acts_as_hard_after_its_grace_period() {
        let mut st = state();
        st.apply(&Op::SetQuota {
            inode: 2,
            quota: Some(QuotaLimits {
                soft: Limits {
                    length: Some(100),
                    ..Default::default()
                },
                grace: Some(0),
                ..Default::default()
            }),
        })
        .unwrap();
        // Within the limit, growth past it is allowed (the grace period starts).
        assert_eq!(allowance(&st, 3, 0), Ok(u64::MAX));
        st.apply(&Op::WriteEnd {
            inode: 3,
            length: 200,
            time: t(2),
        })
        .unwrap();
        for op in clock_changes(&st, unix_now()) {
            st.apply(&op).unwrap();
        }
        // A grace period of 0 is over at once: no more growth, rewrites are fine.
        assert_eq!(allowance(&st, 3, 0), Ok(200));
        let r = reports(&st, &[2], 7);
        assert_eq!(r[0].path, "/q");
        assert_eq!(r[0].grace, 0);
        assert_eq!(r[0].grace_left(), Some(0));
        assert_eq!(r[0].usage.length, 200);
        // The clock is metadata: a dump (and so a restart or a metalogger) keeps it.
        let since = st.meta.quota_since[&2];
        let dir = tempfile::tempdir().unwrap();
        crate::metadata::write(dir.path(), &crate::metadata::encode(&st.meta).unwrap()).unwrap();
        let loaded = crate::metadata::load(&dir.path().join(crate::metadata::DUMP_FILE)).unwrap();
        assert_eq!(loaded.quota_since.get(&2), Some(&since));
        assert!(clock_changes(&State::new(loaded), since + 100).is_empty());
        // Back under the soft limit, the clock stops.
        st.apply(&Op::SetLength {
            inode: 3,
            length: 10,
            trunc_chunk: None,
            time: t(3),
        })
        .unwrap();
        for op in clock_changes(&st, unix_now()) {
            st.apply(&op).unwrap();
        }
        assert!(st.meta.quota_since.is_empty());
        // Removing the quota lifts it.
        st.apply(&Op::SetQuota {
            inode: 2,
            quota: None,
        })
        .unwrap();
        assert_eq!(allowance(&st, 3, 0), Ok(u64::MAX));
        assert_eq!(
            st.apply(&Op::SetQuota {
                inode: 2,
                quota: None
            }),
            Err(FsError::NoEnt)
        );
    }
}
