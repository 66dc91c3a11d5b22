//! Lazy snapshots: a copy of a file or a tree made in one op, sharing every chunk. A chunk
//! held by several files is copied on the first write through one of them (copy on write,
//! see `requests::data`); deleting or truncating a file that shares a chunk only drops its
//! reference.
//!
//! Who holds a shared chunk is derived state ([`Shares`]): built from the files' chunk tables
//! when a dump is loaded, kept up to date by the ops, never dumped. A chunk's
//! [`crate::namespace::ChunkMeta`] names one of its holders (the one whose goal the health
//! loop uses).

use std::collections::HashMap;

use moose_proto::{FileKind, FsError, FsResult, Inode, Timespec};

use crate::namespace::{ChunkMeta, Dir, Meta, Node, NodeData};
use crate::state::{check_name, State};

/// Holders (file, chunk index) of every chunk held more than once.
#[derive(Debug, Default)]
pub struct Shares {
    holders: HashMap<u64, Vec<(Inode, u32)>>,
}

impl Shares {
    pub fn build(meta: &Meta) -> Shares {
        let mut holders: HashMap<u64, Vec<(Inode, u32)>> = HashMap::new();
        for (ino, n) in meta.nodes.iter() {
            if let NodeData::File { chunks, .. } = &n.data {
                for (index, c) in chunks.iter() {
                    holders.entry(c).or_default().push((ino, index));
                }
            }
        }
        holders.retain(|_, v| v.len() > 1);
        for v in holders.values_mut() {
            v.sort_unstable();
        }
        Shares { holders }
    }

    pub fn is_shared(&self, chunk_id: u64) -> bool {
        self.holders.contains_key(&chunk_id)
    }

    /// Every holder of a shared chunk (`None`: held once, by its recorded holder).
    pub fn holders(&self, chunk_id: u64) -> Option<&[(Inode, u32)]> {
        self.holders.get(&chunk_id).map(Vec::as_slice)
    }

    /// One more holder of `chunk_id` (whose first holder is in `meta`).
    fn add(&mut self, meta: &Meta, chunk_id: u64, holder: (Inode, u32)) {
        let v = self.holders.entry(chunk_id).or_insert_with(|| {
            meta.chunks
                .get(&chunk_id)
                .map(|c| vec![(c.inode, c.index)])
                .unwrap_or_default()
        });
        v.push(holder);
    }

    /// `holder` lets go of `chunk_id`. True when nobody holds it any more (the caller drops
    /// it); otherwise the chunk's recorded holder is moved to one that is left.
    pub fn release(
        &mut self,
        chunks: &mut HashMap<u64, ChunkMeta>,
        chunk_id: u64,
        holder: (Inode, u32),
    ) -> bool {
        let Some(v) = self.holders.get_mut(&chunk_id) else {
            return true;
        };
        if let Some(i) = v.iter().position(|h| *h == holder) {
            v.remove(i);
        }
        let next = v.first().copied();
        if v.len() < 2 {
            self.holders.remove(&chunk_id);
        }
        match (next, chunks.get_mut(&chunk_id)) {
            (Some((inode, index)), Some(c)) => {
                if (c.inode, c.index) == holder {
                    c.inode = inode;
                    c.index = index;
                }
                false
            }
            _ => true,
        }
    }
}

/// See [`State::chunk_goal`] (split out so it can borrow beside the runtime state).
pub fn chunk_goal(meta: &Meta, shares: &Shares, chunk_id: u64, holder: Inode) -> Option<u8> {
    let goal_of = |i: &Inode| meta.nodes.get(i).map(|n| n.goal);
    match shares.holders(chunk_id) {
        Some(h) => h.iter().filter_map(|(i, _)| goal_of(i)).max(),
        None => goal_of(&holder),
    }
}

/// Nodes of the tree at `root` in the order a snapshot numbers them (folders' entries by
/// edge id, breadth first): (source inode, index of its new parent in this list, name).
/// The root's parent index is `usize::MAX`.
pub fn walk(meta: &Meta, root: Inode) -> Vec<(Inode, usize, Vec<u8>)> {
    let mut out = vec![(root, usize::MAX, Vec::new())];
    let mut i = 0;
    while i < out.len() {
        let ino = out[i].0;
        if let Some(d) = meta.nodes.get(&ino).and_then(|n| n.dir()) {
            for (name, c) in d.iter() {
                out.push((c, i, name.to_vec()));
            }
        }
        i += 1;
    }
    out
}

/// Every inode in the tree at `root` (for removing a replaced snapshot target).
fn tree_inodes(meta: &Meta, root: Inode) -> Vec<Inode> {
    walk(meta, root).into_iter().map(|(i, _, _)| i).collect()
}

/// Applies `Op::Snapshot` (see there). Validates everything first.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    st: &mut State,
    src: Inode,
    parent: Inode,
    name: &[u8],
    first_inode: Inode,
    replace: bool,
    keep: &[Inode],
    time: Timespec,
) -> FsResult<Inode> {
    check_name(name)?;
    st.node(src)?;
    let target = st.dir(parent)?.get(name);
    if st.node(src)?.is_dir() && st.is_ancestor(src, parent) {
        // A tree cannot hold a copy of itself.
        return Err(FsError::Inval);
    }
    if let Some(t) = target {
        if !replace {
            return Err(FsError::Exist);
        }
        if t == src || st.is_ancestor(t, src) {
            return Err(FsError::Inval);
        }
    }
    let plan = walk(&st.meta, src);
    let count = plan.len() as u64;
    let last = first_inode.checked_add(count).ok_or(FsError::Inval)?;
    if (first_inode..last).any(|i| st.meta.nodes.contains_key(&i)) {
        return Err(FsError::Exist);
    }
    if let Some(t) = target {
        remove_tree(st, parent, name, t, keep, time);
    }
    let new_ino = |k: usize| first_inode + k as u64;
    for (k, (old, parent_k, _)) in plan.iter().enumerate() {
        let Some(n) = st.meta.nodes.get(old) else {
            continue;
        };
        let new_parent = if *parent_k == usize::MAX {
            parent
        } else {
            new_ino(*parent_k)
        };
        let data = match &n.data {
            NodeData::Dir(_) => NodeData::Dir(Box::new(Dir::new(new_parent))),
            other => other.clone(),
        };
        let node = Node {
            kind: n.kind,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            atime: n.atime,
            mtime: n.mtime,
            ctime: time.into(),
            nlink: if n.is_dir() { 2 } else { 1 },
            goal: n.goal,
            trash_time: n.trash_time,
            xattrs: n.xattrs.clone(),
            data,
        };
        if let NodeData::File { chunks, .. } = &node.data {
            for (index, c) in chunks.iter().collect::<Vec<_>>() {
                st.shares.add(&st.meta, c, (new_ino(k), index));
            }
        }
        let is_dir = node.kind == FileKind::Dir;
        st.meta.nodes.insert(new_ino(k), node);
        let name = if *parent_k == usize::MAX {
            name.to_vec()
        } else {
            plan[k].2.clone()
        };
        if let Some(p) = st.meta.nodes.get_mut(&new_parent) {
            if is_dir {
                p.nlink += 1;
            }
            if let Some(d) = p.dir_mut() {
                d.insert(name, new_ino(k));
            }
        }
    }
    if let Some(p) = st.meta.nodes.get_mut(&parent) {
        p.mtime = time.into();
        p.ctime = time.into();
    }
    st.meta.next_inode = st.meta.next_inode.max(last);
    Ok(first_inode)
}

/// Removes the tree at `parent`/`name` (inode `root`): folders go, files lose a link (those
/// in `keep`, open somewhere, stay as orphans like an unlinked open file).
fn remove_tree(
    st: &mut State,
    parent: Inode,
    name: &[u8],
    root: Inode,
    keep: &[Inode],
    time: Timespec,
) {
    let inodes = tree_inodes(&st.meta, root);
    let root_is_dir = st.meta.nodes.get(&root).is_some_and(|n| n.is_dir());
    if let Some(p) = st.meta.nodes.get_mut(&parent) {
        if let Some(d) = p.dir_mut() {
            d.remove(name);
        }
        if root_is_dir {
            p.nlink = p.nlink.saturating_sub(1);
        }
    }
    for ino in inodes {
        let Some(n) = st.meta.nodes.get_mut(&ino) else {
            continue;
        };
        if n.is_dir() {
            st.meta.nodes.remove(&ino);
            continue;
        }
        n.nlink = n.nlink.saturating_sub(1);
        n.ctime = time.into();
        if n.nlink == 0 && !keep.contains(&ino) {
            st.purge(ino);
        }
    }
}

/// Applies `Op::CopyChunk`: chunk `index` of `inode`, `old` (shared), becomes `new`.
pub fn copy_chunk(
    st: &mut State,
    inode: Inode,
    index: u32,
    old: u64,
    new: u64,
    version: u32,
) -> FsResult<()> {
    let n = st.node(inode)?;
    let NodeData::File { chunks, .. } = &n.data else {
        return Err(FsError::Inval);
    };
    if chunks.get(index as usize) != Some(&old) || !st.shares.is_shared(old) {
        return Err(FsError::NoChunk);
    }
    if st.meta.chunks.contains_key(&new) {
        return Err(FsError::Exist);
    }
    if let Some(NodeData::File { chunks, .. }) = st.meta.nodes.get_mut(&inode).map(|n| &mut n.data)
    {
        chunks.set(index, new);
    }
    st.meta.chunks.insert(
        new,
        ChunkMeta {
            version,
            inode,
            index,
        },
    );
    st.meta.next_chunk_id = st.meta.next_chunk_id.max(new + 1);
    // Still held by the other files: nothing to drop.
    st.shares.release(&mut st.meta.chunks, old, (inode, index));
    Ok(())
}

/// Applies `Op::ShareChunks`: `count` chunk slots of `src` from `from.1` on are shared into
/// `to` (file, first slot), which must hold nothing there; `to` becomes at least `length`
/// long.
pub fn share_chunks(
    st: &mut State,
    from: (Inode, u32),
    to: (Inode, u32),
    count: u32,
    length: u64,
    time: Timespec,
) -> FsResult<()> {
    let ((src, src_index), (dst, dst_index)) = (from, to);
    let slots = |first: u32| first.checked_add(count).map(|end| first..end);
    let (Some(src_slots), Some(dst_slots)) = (slots(src_index), slots(dst_index)) else {
        return Err(FsError::Inval);
    };
    if src == dst {
        return Err(FsError::Inval);
    }
    let NodeData::File { chunks, .. } = &st.node(src)?.data else {
        return Err(FsError::Inval);
    };
    let shared: Vec<(u32, u64)> = src_slots
        .zip(dst_slots.clone())
        .filter_map(|(s, d)| chunks.get(s as usize).map(|&c| (d, c)))
        .collect();
    let NodeData::File { chunks, .. } = &st.node(dst)?.data else {
        return Err(FsError::Inval);
    };
    if dst_slots
        .into_iter()
        .any(|d| chunks.get(d as usize).is_some())
    {
        return Err(FsError::Exist);
    }
    for &(index, chunk_id) in &shared {
        st.shares.add(&st.meta, chunk_id, (dst, index));
    }
    let n = st.node_mut(dst)?;
    if let NodeData::File { length: l, chunks } = &mut n.data {
        for &(index, chunk_id) in &shared {
            chunks.set(index, chunk_id);
        }
        *l = (*l).max(length);
    }
    n.mtime = time.into();
    n.ctime = time.into();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Op;
    use crate::test_ops::{create, t};
    use moose_proto::ROOT_INODE;

    fn fresh() -> State {
        State::new(Meta::fresh(1, t(0), 2))
    }

    fn chunk(st: &mut State, inode: Inode, index: u32, chunk_id: u64) {
        st.apply(&Op::AddChunk {
            inode,
            index,
            chunk_id,
            version: 1,
        })
        .unwrap();
    }

    fn snapshot(
        st: &mut State,
        src: Inode,
        parent: Inode,
        name: &str,
        first: Inode,
    ) -> FsResult<()> {
        st.apply(&Op::Snapshot {
            src,
            parent,
            name: name.as_bytes().to_vec(),
            first_inode: first,
            replace: false,
            keep: vec![],
            time: t(5),
        })
        .map(|_| ())
    }

    #[test]
    fn a_snapshot_shares_chunks_until_every_holder_lets_go() {
        let mut st = fresh();
        create(&mut st, ROOT_INODE, "d", 2, FileKind::Dir);
        create(&mut st, 2, "f", 3, FileKind::File);
        chunk(&mut st, 3, 0, 10);
        snapshot(&mut st, 2, ROOT_INODE, "s", 4).unwrap();
        let f2 = st
            .lookup(st.lookup(ROOT_INODE, b"s").unwrap(), b"f")
            .unwrap();
        assert!(st.shares.is_shared(10));
        assert_eq!(st.meta.next_inode, 6);
        // A shared chunk must meet the highest goal of the files holding it.
        st.apply(&Op::SetGoal {
            inode: 5,
            goal: 3,
            recursive: false,
            uid: 0,
            time: t(5),
        })
        .unwrap();
        assert_eq!(st.chunk_goal(10, 3), Some(3));
        assert_eq!(st.node(ROOT_INODE).unwrap().nlink, 4);
        // The original goes: the chunk stays, held by the copy.
        st.apply(&Op::Unlink {
            parent: 2,
            name: b"f".to_vec(),
            keep: false,
            time: t(6),
        })
        .unwrap();
        assert!(!st.shares.is_shared(10));
        assert_eq!(st.meta.chunks[&10].inode, f2);
        assert!(st.rt.deletions.is_empty());
        // Copy on write of a shared chunk, then the last holder truncates it away.
        snapshot(&mut st, f2, ROOT_INODE, "g", 6).unwrap();
        st.apply(&Op::CopyChunk {
            inode: 6,
            index: 0,
            old: 10,
            new: 11,
            version: 1,
        })
        .unwrap();
        assert!(!st.shares.is_shared(10));
        assert_eq!(st.meta.chunks[&11].inode, 6);
        assert_eq!(
            st.apply(&Op::CopyChunk {
                inode: 6,
                index: 0,
                old: 11,
                new: 12,
                version: 1,
            }),
            Err(FsError::NoChunk),
            "a chunk held once is written in place"
        );
        st.apply(&Op::SetLength {
            inode: f2,
            length: 0,
            trunc_chunk: None,
            time: t(7),
        })
        .unwrap();
        assert!(!st.meta.chunks.contains_key(&10));
    }

    #[test]
    fn a_copy_shares_whole_chunks_into_an_empty_range_only() {
        let mut st = fresh();
        create(&mut st, ROOT_INODE, "f", 2, FileKind::File);
        create(&mut st, ROOT_INODE, "g", 3, FileKind::File);
        // Chunks 0 and 2 of f, a hole between them.
        chunk(&mut st, 2, 0, 10);
        chunk(&mut st, 2, 2, 12);
        let share = |st: &mut State, dst: Inode, dst_index: u32, count: u32| {
            st.apply(&Op::ShareChunks {
                src: 2,
                src_index: 0,
                dst,
                dst_index,
                count,
                length: (u64::from(dst_index + count) - 1) * moose_proto::CHUNK_SIZE + 100,
                time: t(5),
            })
        };
        share(&mut st, 3, 1, 3).unwrap();
        let NodeData::File { length, chunks } = &st.node(3).unwrap().data else {
            panic!("g is a file");
        };
        let held: Vec<(u32, u64)> = chunks.iter().collect();
        assert_eq!(held, vec![(1, 10), (3, 12)], "the hole stays a hole");
        assert_eq!(*length, 3 * moose_proto::CHUNK_SIZE + 100);
        assert_eq!(st.node(3).unwrap().mtime, t(5).into());
        assert!(st.shares.is_shared(10) && st.shares.is_shared(12));
        assert_eq!(st.shares.holders(10), Some(&[(2, 0), (3, 1)][..]));
        // Nothing is shared over a chunk the destination holds, nor within one file.
        assert_eq!(share(&mut st, 3, 0, 2), Err(FsError::Exist));
        assert_eq!(share(&mut st, 2, 4, 1), Err(FsError::Inval));
        // Copy on write takes the copy's chunk away from the source's; removing the source
        // leaves the other chunk to the copy alone.
        st.apply(&Op::CopyChunk {
            inode: 3,
            index: 1,
            old: 10,
            new: 20,
            version: 1,
        })
        .unwrap();
        assert!(!st.shares.is_shared(10));
        st.apply(&Op::Unlink {
            parent: ROOT_INODE,
            name: b"f".to_vec(),
            keep: false,
            time: t(6),
        })
        .unwrap();
        assert!(!st.meta.chunks.contains_key(&10));
        assert_eq!(st.meta.chunks[&12].inode, 3);
        assert!(!st.shares.is_shared(12));
    }

    #[test]
    fn a_snapshot_refuses_its_own_tree_and_existing_names() {
        let mut st = fresh();
        create(&mut st, ROOT_INODE, "d", 2, FileKind::Dir);
        create(&mut st, 2, "e", 3, FileKind::Dir);
        assert_eq!(snapshot(&mut st, 2, 3, "x", 4), Err(FsError::Inval));
        assert_eq!(
            snapshot(&mut st, 3, ROOT_INODE, "d", 4),
            Err(FsError::Exist)
        );
        assert_eq!(
            snapshot(&mut st, 3, ROOT_INODE, "x", 2),
            Err(FsError::Exist)
        );
        // Replacing a tree takes the old one away, files and folders.
        create(&mut st, 3, "f", 4, FileKind::File);
        chunk(&mut st, 4, 0, 10);
        snapshot(&mut st, 3, ROOT_INODE, "x", 5).unwrap();
        st.apply(&Op::Snapshot {
            src: 2,
            parent: ROOT_INODE,
            name: b"x".to_vec(),
            first_inode: 7,
            replace: true,
            keep: vec![],
            time: t(6),
        })
        .unwrap();
        assert!(st.node(5).is_err() && st.node(6).is_err());
        let x = st.lookup(ROOT_INODE, b"x").unwrap();
        assert_eq!(x, 7);
        assert!(st.lookup(st.lookup(x, b"e").unwrap(), b"f").is_ok());
        assert_eq!(
            st.tree.totals(ROOT_INODE),
            Some(
                crate::dirinfo::Tree::build(&st.meta)
                    .totals(ROOT_INODE)
                    .unwrap()
            )
        );
    }
}
