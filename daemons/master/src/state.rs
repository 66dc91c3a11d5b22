//! The master's in-memory state: the persistent [`Meta`] plus what only lives while running
//! (where chunk copies are, write locks, open files). [`State::apply`] is the only code that
//! changes `Meta`.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use moose_proto::{ChunkRef, FileKind, FsError, FsResult, Inode, CHUNK_SIZE, MAX_NAME_LEN};

use crate::dirinfo::Tree;
use crate::namespace::{ChunkMeta, Dir, Meta, Node, NodeData};
use crate::ops::Op;
use crate::snapshot::{self, Shares};

/// A copy of a chunk on a chunkserver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    pub cs: u32,
    pub version: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct WriteLock {
    pub session: u64,
    pub since: Instant,
}

/// Runtime-only state, rebuilt from chunkserver registrations and sessions after a restart.
#[derive(Debug, Default)]
pub struct Runtime {
    /// Copies per chunk id, as chunkservers reported them (any version).
    pub locations: HashMap<u64, Vec<Copy>>,
    /// Copies to delete from chunkservers: (chunkserver id, chunk).
    pub deletions: Vec<(u32, ChunkRef)>,
    pub write_locks: HashMap<u64, WriteLock>,
    /// Chunks whose version a writer is raising: the new version is recorded, the copies
    /// have not all answered yet. Until then the copies at the version before serve reads.
    pub raising: HashSet<u64>,
    /// (inode, index) slots where a new chunk is being created.
    pub creating: HashSet<(Inode, u32)>,
    /// Open handles per inode, over all sessions.
    pub open: HashMap<Inode, u32>,
    /// Copies on disks marked for removal: (chunk id, chunkserver id) → disk path. They serve
    /// reads but do not count towards the goal, and the master never deletes them.
    pub marked: HashMap<(u64, u32), String>,
    /// Copies that failed a CRC check: (chunk id, chunkserver id). They neither count nor
    /// serve reads; a replication onto the same server replaces them, and once the chunk has
    /// its goal elsewhere they are deleted.
    pub damaged: HashSet<(u64, u32)>,
    /// Chunks whose copies all have another version than the metadata's: chunk id → inode.
    /// No copy of them is deleted; they wait for a server that has the right version, or
    /// for an admin (see the health loop).
    pub to_repair: std::collections::BTreeMap<u64, Inode>,
    /// The chunk matrix of the health loop's last complete sweep (status reads it when
    /// counting every chunk at once would hold the state lock too long).
    pub swept: Option<crate::chunk_tally::Swept>,
    /// Files in the trash by the time they are to be freed (see `trash.rs`).
    pub trash_by_expiry: std::collections::BTreeSet<(i64, Inode)>,
    /// Files in the trash by the meta mount's bucket (`trash/XXX/`), so listing one bucket
    /// does not walk the whole trash.
    pub trash_by_bucket: std::collections::BTreeSet<(u32, Inode)>,
    /// Folders whose names mounts keep (see `watches.rs`).
    pub watches: crate::watches::Watches,
    /// Changes files' data depends on, for fdatasyncs (see `data_marks.rs`).
    pub data_marks: crate::data_marks::DataMarks,
    /// Recent changes of files' data, for opens that keep the kernel's pages (see
    /// `page_cache.rs`).
    pub data_changes: crate::page_cache::DataChanges,
}

impl Runtime {
    /// True when the copy of `chunk_id` on `cs` counts towards the goal.
    pub fn counts(&self, chunk_id: u64, cs: u32) -> bool {
        !self.marked.contains_key(&(chunk_id, cs)) && !self.damaged.contains(&(chunk_id, cs))
    }

    /// Copies of `chunk_id` at `version` that count towards the goal.
    pub fn counted_copies(&self, chunk_id: u64, version: u32) -> usize {
        self.locations.get(&chunk_id).map_or(0, |v| {
            v.iter()
                .filter(|c| c.version == version && self.counts(chunk_id, c.cs))
                .count()
        })
    }
}

/// What an applied op produced, for building the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Done,
    Node(Inode),
    GoalCounts {
        changed: u64,
        unchanged: u64,
        not_permitted: u64,
    },
}

pub struct State {
    pub meta: Meta,
    pub rt: Runtime,
    /// Per-folder counters (derived from `meta`).
    pub tree: Tree,
    /// Holders of shared chunks (derived from `meta`).
    pub shares: Shares,
}

pub fn check_name(name: &[u8]) -> FsResult<()> {
    if name.is_empty() {
        return Err(FsError::NoEnt);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(FsError::NameTooLong);
    }
    if name.contains(&b'/') || name.contains(&0) {
        return Err(FsError::Inval);
    }
    Ok(())
}

impl State {
    pub fn new(meta: Meta) -> Self {
        let mut st = State {
            tree: Tree::build(&meta),
            shares: Shares::build(&meta),
            meta,
            rt: Runtime::default(),
        };
        st.index_trash();
        st
    }

    pub fn node(&self, inode: Inode) -> FsResult<&Node> {
        self.meta.nodes.get(&inode).ok_or(FsError::NoEnt)
    }

    pub(crate) fn node_mut(&mut self, inode: Inode) -> FsResult<&mut Node> {
        self.meta.nodes.get_mut(&inode).ok_or(FsError::NoEnt)
    }

    pub fn dir(&self, inode: Inode) -> FsResult<&Dir> {
        self.node(inode)?.dir().ok_or(FsError::NotDir)
    }

    fn dir_mut(&mut self, inode: Inode) -> FsResult<&mut Dir> {
        self.node_mut(inode)?.dir_mut().ok_or(FsError::NotDir)
    }

    pub fn lookup(&self, parent: Inode, name: &[u8]) -> FsResult<Inode> {
        let dir = self.dir(parent)?;
        if name == b"." {
            return Ok(parent);
        }
        if name == b".." {
            return Ok(dir.parent);
        }
        dir.get(name).ok_or(FsError::NoEnt)
    }

    /// Unlinked while open, not in the trash: freed when its last handle closes.
    pub fn is_orphan(&self, inode: Inode) -> bool {
        self.meta.nodes.get(&inode).is_some_and(|n| n.nlink == 0)
            && !self.meta.trash.contains_key(&inode)
    }

    /// The goal a chunk must meet: its file's, or for a chunk shared by snapshots the highest
    /// goal of the files holding it. `None` when no holder exists.
    pub fn chunk_goal(&self, chunk_id: u64, holder: Inode) -> Option<u8> {
        snapshot::chunk_goal(&self.meta, &self.shares, chunk_id, holder)
    }

    pub fn is_open(&self, inode: Inode) -> bool {
        self.rt.open.get(&inode).copied().unwrap_or(0) > 0
    }

    /// True if `ancestor` is `inode` or one of its parents.
    pub fn is_ancestor(&self, ancestor: Inode, mut inode: Inode) -> bool {
        loop {
            if inode == ancestor {
                return true;
            }
            match self.meta.nodes.get(&inode).and_then(|n| n.dir()) {
                Some(d) if d.parent != inode => inode = d.parent,
                _ => return false,
            }
        }
    }

    /// Applies one change. Validates everything before touching anything, so an error leaves
    /// the state as it was. The folder counters follow.
    pub fn apply(&mut self, op: &Op) -> FsResult<Applied> {
        let (edges, files, gone) = self.touched(op);
        let pending = self.tree.before(&self.meta, edges, files, gone);
        let r = self.apply_op(op);
        if r.is_ok() {
            self.tree.after(&self.meta, pending);
            if !self.meta.quotas.is_empty()
                && matches!(
                    op,
                    Op::RmDir { .. } | Op::Rename { .. } | Op::Snapshot { .. }
                )
            {
                // A removed folder takes its quota with it.
                let Meta {
                    nodes,
                    quotas,
                    quota_since,
                    ..
                } = &mut self.meta;
                quotas.retain(|d, _| nodes.contains_key(d));
                quota_since.retain(|d, _| quotas.contains_key(d));
            }
        } else {
            self.tree.restore(&self.meta, pending);
        }
        r
    }

    /// The (folder, name) edges `op` adds, removes or replaces (taken before it is applied):
    /// the folders whose names it changes.
    pub fn edges_named_by(&self, op: &Op) -> Vec<(Inode, Vec<u8>)> {
        match op {
            Op::Create { parent, name, .. }
            | Op::Symlink { parent, name, .. }
            | Op::Link { parent, name, .. }
            | Op::Unlink { parent, name, .. }
            | Op::RmDir { parent, name, .. }
            | Op::Snapshot { parent, name, .. } => vec![(*parent, name.clone())],
            Op::Rename {
                parent,
                name,
                new_parent,
                new_name,
                ..
            } => vec![(*parent, name.clone()), (*new_parent, new_name.clone())],
            // The file comes back under its nearest existing folder, with any folders missing.
            Op::Undelete { inode, .. } => self.undelete_edge(*inode).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    /// What an op may change, for the counters: (folder, name) edges, files whose content
    /// changes, nodes that may go.
    #[allow(clippy::type_complexity)]
    fn touched(&self, op: &Op) -> (Vec<(Inode, Vec<u8>)>, Vec<Inode>, Vec<Inode>) {
        let (files, gone) = match op {
            Op::SetLength { inode, .. }
            | Op::AddChunk { inode, .. }
            | Op::WriteEnd { inode, .. }
            | Op::CopyChunk { inode, .. }
            | Op::ShareChunks { dst: inode, .. } => (vec![*inode], vec![]),
            Op::SetGoal {
                inode, recursive, ..
            } => {
                let files = if *recursive {
                    snapshot::walk(&self.meta, *inode)
                        .into_iter()
                        .map(|(i, _, _)| i)
                        .collect()
                } else {
                    vec![*inode]
                };
                (files, vec![])
            }
            Op::Purge { inode } | Op::TrashPurge { inode } => (vec![], vec![*inode]),
            Op::Create { .. }
            | Op::Symlink { .. }
            | Op::Link { .. }
            | Op::Unlink { .. }
            | Op::RmDir { .. }
            | Op::Snapshot { .. }
            | Op::Rename { .. }
            | Op::Undelete { .. }
            | Op::SetTrashTime { .. }
            | Op::SetAttr { .. }
            | Op::SetQuota { .. }
            | Op::QuotaClock { .. }
            | Op::ReserveInodes { .. }
            | Op::SetChunkVersion { .. }
            | Op::SetXattr { .. }
            | Op::RemoveXattr { .. } => (vec![], vec![]),
        };
        (self.edges_named_by(op), files, gone)
    }

    pub(crate) fn apply_op(&mut self, op: &Op) -> FsResult<Applied> {
        match op {
            Op::Create {
                parent,
                name,
                inode,
                kind,
                mode,
                uid,
                gid,
                rdev,
                time,
            } => {
                check_name(name)?;
                let p = self.node(*parent)?;
                let goal = p.goal;
                let trash_time = p.trash_time;
                let dir = p.dir().ok_or(FsError::NotDir)?;
                if dir.get(name).is_some() {
                    return Err(FsError::Exist);
                }
                if self.meta.nodes.contains_key(inode) {
                    return Err(FsError::Exist);
                }
                let data = match kind {
                    FileKind::Dir => NodeData::Dir(Box::new(Dir::new(*parent))),
                    FileKind::File => NodeData::File {
                        length: 0,
                        chunks: Default::default(),
                    },
                    FileKind::Symlink => NodeData::Symlink(Box::default()),
                    _ => NodeData::Special(*rdev),
                };
                let is_dir = *kind == FileKind::Dir;
                self.meta.nodes.insert(
                    *inode,
                    Node {
                        kind: *kind,
                        mode: *mode & 0o7777,
                        uid: *uid,
                        gid: *gid,
                        atime: (*time).into(),
                        mtime: (*time).into(),
                        ctime: (*time).into(),
                        nlink: if is_dir { 2 } else { 1 },
                        goal,
                        trash_time,
                        xattrs: Default::default(),
                        data,
                    },
                );
                let p = self.node_mut(*parent)?;
                p.mtime = (*time).into();
                p.ctime = (*time).into();
                if is_dir {
                    p.nlink += 1;
                }
                if let Some(d) = p.dir_mut() {
                    d.insert(name.clone(), *inode);
                }
                self.meta.next_inode = self.meta.next_inode.max(inode + 1);
                Ok(Applied::Node(*inode))
            }
            Op::Symlink {
                parent,
                name,
                inode,
                target,
                uid,
                gid,
                time,
            } => {
                self.apply_op(&Op::Create {
                    parent: *parent,
                    name: name.clone(),
                    inode: *inode,
                    kind: FileKind::Symlink,
                    mode: 0o777,
                    uid: *uid,
                    gid: *gid,
                    rdev: 0,
                    time: *time,
                })?;
                self.node_mut(*inode)?.data = NodeData::Symlink(target.clone().into_boxed_slice());
                Ok(Applied::Node(*inode))
            }
            Op::Link {
                inode,
                parent,
                name,
                time,
            } => {
                check_name(name)?;
                let n = self.node(*inode)?;
                if n.is_dir() {
                    return Err(FsError::Perm);
                }
                if n.nlink == 0 {
                    return Err(FsError::NoEnt);
                }
                if n.nlink >= 32767 {
                    return Err(FsError::TooManyLinks);
                }
                if self.dir(*parent)?.get(name).is_some() {
                    return Err(FsError::Exist);
                }
                let n = self.node_mut(*inode)?;
                n.nlink += 1;
                n.ctime = (*time).into();
                let p = self.node_mut(*parent)?;
                p.mtime = (*time).into();
                p.ctime = (*time).into();
                if let Some(d) = p.dir_mut() {
                    d.insert(name.clone(), *inode);
                }
                Ok(Applied::Node(*inode))
            }
            Op::Unlink {
                parent,
                name,
                keep,
                time,
            } => {
                let child = self.dir(*parent)?.get(name).ok_or(FsError::NoEnt)?;
                if self.node(child)?.is_dir() {
                    return Err(FsError::IsDir);
                }
                self.remove_entry(*parent, name, child, *keep, *time)?;
                Ok(Applied::Done)
            }
            Op::RmDir { parent, name, time } => {
                if name == b"." {
                    return Err(FsError::Inval);
                }
                if name == b".." {
                    return Err(FsError::NotEmpty);
                }
                let child = self.dir(*parent)?.get(name).ok_or(FsError::NoEnt)?;
                let d = self.dir(child)?;
                if !d.is_empty() {
                    return Err(FsError::NotEmpty);
                }
                self.remove_entry(*parent, name, child, false, *time)?;
                Ok(Applied::Done)
            }
            Op::Rename {
                parent,
                name,
                new_parent,
                new_name,
                exchange,
                keep_target,
                time,
            } => self.rename(
                *parent,
                name,
                *new_parent,
                new_name,
                *exchange,
                *keep_target,
                *time,
            ),
            Op::SetAttr {
                inode,
                mode,
                uid,
                gid,
                atime,
                mtime,
                time,
            } => {
                let n = self.node_mut(*inode)?;
                if let Some(m) = mode {
                    n.mode = m & 0o7777;
                }
                if let Some(u) = uid {
                    n.uid = *u;
                }
                if let Some(g) = gid {
                    n.gid = *g;
                }
                if let Some(a) = atime {
                    n.atime = (*a).into();
                }
                if let Some(m) = mtime {
                    n.mtime = (*m).into();
                }
                n.ctime = (*time).into();
                Ok(Applied::Node(*inode))
            }
            Op::SetLength {
                inode,
                length,
                trunc_chunk,
                time,
            } => {
                let n = self.node(*inode)?;
                let NodeData::File { .. } = &n.data else {
                    return Err(if n.is_dir() {
                        FsError::IsDir
                    } else {
                        FsError::Inval
                    });
                };
                let keep = length.div_ceil(CHUNK_SIZE);
                if let Some((cid, _)) = trunc_chunk {
                    if !self.meta.chunks.contains_key(cid) {
                        return Err(FsError::NoChunk);
                    }
                }
                let n = self.node_mut(*inode)?;
                let mut dropped = Vec::new();
                if let NodeData::File { length: l, chunks } = &mut n.data {
                    *l = *length;
                    dropped = chunks.truncate(keep);
                }
                n.mtime = (*time).into();
                n.ctime = (*time).into();
                for (index, c) in dropped {
                    self.release_chunk(*inode, index, c);
                }
                if let Some((cid, version)) = trunc_chunk {
                    if let Some(c) = self.meta.chunks.get_mut(cid) {
                        c.version = *version;
                    }
                }
                Ok(Applied::Node(*inode))
            }
            Op::AddChunk {
                inode,
                index,
                chunk_id,
                version,
            } => {
                let n = self.node(*inode)?;
                let NodeData::File { chunks, .. } = &n.data else {
                    return Err(FsError::Inval);
                };
                if chunks.get(*index as usize).is_some() {
                    return Err(FsError::Exist);
                }
                if self.meta.chunks.contains_key(chunk_id) {
                    return Err(FsError::Exist);
                }
                let n = self.node_mut(*inode)?;
                if let NodeData::File { chunks, .. } = &mut n.data {
                    chunks.set(*index, *chunk_id);
                }
                self.meta.chunks.insert(
                    *chunk_id,
                    ChunkMeta {
                        version: *version,
                        inode: *inode,
                        index: *index,
                    },
                );
                self.meta.next_chunk_id = self.meta.next_chunk_id.max(chunk_id + 1);
                Ok(Applied::Done)
            }
            Op::SetChunkVersion { chunk_id, version } => {
                let c = self.meta.chunks.get_mut(chunk_id).ok_or(FsError::NoChunk)?;
                c.version = *version;
                Ok(Applied::Done)
            }
            Op::WriteEnd {
                inode,
                length,
                time,
            } => {
                let n = self.node_mut(*inode)?;
                let NodeData::File { length: l, .. } = &mut n.data else {
                    return Err(FsError::Inval);
                };
                *l = (*l).max(*length);
                n.mtime = (*time).into();
                n.ctime = (*time).into();
                Ok(Applied::Node(*inode))
            }
            Op::SetXattr {
                inode,
                name,
                value,
                time,
            } => {
                let n = self.node_mut(*inode)?;
                n.xattrs.insert(name.clone(), value.clone());
                n.ctime = (*time).into();
                Ok(Applied::Done)
            }
            Op::RemoveXattr { inode, name, time } => {
                let n = self.node_mut(*inode)?;
                if n.xattrs.remove(name).is_none() {
                    return Err(FsError::NoAttr);
                }
                n.ctime = (*time).into();
                Ok(Applied::Done)
            }
            Op::SetGoal {
                inode,
                goal,
                recursive,
                uid,
                time,
            } => {
                self.node(*inode)?;
                let (mut changed, mut unchanged, mut not_permitted) = (0, 0, 0);
                let mut stack = vec![*inode];
                while let Some(ino) = stack.pop() {
                    let Some(n) = self.meta.nodes.get_mut(&ino) else {
                        continue;
                    };
                    if *uid != 0 && n.uid != *uid {
                        not_permitted += 1;
                    } else if n.goal == *goal {
                        unchanged += 1;
                    } else {
                        n.goal = *goal;
                        n.ctime = (*time).into();
                        changed += 1;
                    }
                    if *recursive {
                        if let Some(d) = n.dir() {
                            stack.extend(d.iter().map(|(_, i)| i));
                        }
                    }
                }
                Ok(Applied::GoalCounts {
                    changed,
                    unchanged,
                    not_permitted,
                })
            }
            Op::Purge { inode } => {
                if self.is_orphan(*inode) {
                    self.purge(*inode);
                }
                Ok(Applied::Done)
            }
            Op::SetTrashTime {
                inode,
                trash_time,
                recursive,
                uid,
                time,
            } => self.set_trash_time(*inode, *trash_time, *recursive, *uid, *time),
            Op::TrashPurge { inode } => self.purge_trashed(*inode),
            Op::Undelete {
                inode,
                new_dirs,
                time,
            } => self.undelete(*inode, new_dirs, *time),
            Op::Snapshot {
                src,
                parent,
                name,
                first_inode,
                replace,
                keep,
                time,
            } => snapshot::apply(
                self,
                *src,
                *parent,
                name,
                *first_inode,
                *replace,
                keep,
                *time,
            )
            .map(Applied::Node),
            Op::CopyChunk {
                inode,
                index,
                old,
                new,
                version,
            } => {
                snapshot::copy_chunk(self, *inode, *index, *old, *new, *version)?;
                Ok(Applied::Done)
            }
            Op::ShareChunks {
                src,
                src_index,
                dst,
                dst_index,
                count,
                length,
                time,
            } => {
                let from = (*src, *src_index);
                snapshot::share_chunks(self, from, (*dst, *dst_index), *count, *length, *time)?;
                Ok(Applied::Node(*dst))
            }
            Op::SetQuota { inode, quota } => {
                crate::quota::set(&mut self.meta, *inode, *quota)?;
                Ok(Applied::Done)
            }
            Op::QuotaClock { inode, since } => {
                crate::quota::set_clock(&mut self.meta, *inode, *since);
                Ok(Applied::Done)
            }
            Op::ReserveInodes { upto } => {
                self.meta.next_inode = self.meta.next_inode.max(*upto);
                Ok(Applied::Done)
            }
        }
    }

    /// Removes `name` (pointing at `child`) from `parent`; the child goes when its last link
    /// does, unless it is kept open.
    fn remove_entry(
        &mut self,
        parent: Inode,
        name: &[u8],
        child: Inode,
        keep: bool,
        time: moose_proto::Timespec,
    ) -> FsResult<()> {
        let child_is_dir = self.node(child)?.is_dir();
        let p = self.node_mut(parent)?;
        p.mtime = time.into();
        p.ctime = time.into();
        if child_is_dir {
            p.nlink = p.nlink.saturating_sub(1);
        }
        if let Some(d) = p.dir_mut() {
            d.remove(name);
        }
        let c = self.node_mut(child)?;
        c.ctime = time.into();
        c.nlink = if child_is_dir {
            0
        } else {
            c.nlink.saturating_sub(1)
        };
        if c.nlink == 0 {
            if self.goes_to_trash(child, keep) {
                self.move_to_trash(parent, name, child, time);
            } else if !keep {
                self.purge(child);
            }
        }
        Ok(())
    }

    /// Deletes a node and drops its chunks (its references to shared ones).
    pub(crate) fn purge(&mut self, inode: Inode) {
        self.untrash(inode);
        if let Some(node) = self.meta.nodes.remove(&inode) {
            if let NodeData::File { chunks, .. } = node.data {
                for (index, c) in chunks.iter() {
                    self.release_chunk(inode, index, c);
                }
            }
        }
    }

    /// File `inode` no longer holds `chunk_id` at `index`: the chunk goes unless another file
    /// (a snapshot) still holds it.
    fn release_chunk(&mut self, inode: Inode, index: u32, chunk_id: u64) {
        if self
            .shares
            .release(&mut self.meta.chunks, chunk_id, (inode, index))
        {
            self.drop_chunk(chunk_id);
        }
    }

    /// Removes a chunk from the table and queues its copies for deletion.
    fn drop_chunk(&mut self, chunk_id: u64) {
        self.meta.chunks.remove(&chunk_id);
        self.rt.damaged.retain(|(c, _)| *c != chunk_id);
        self.rt.marked.retain(|(c, _), _| *c != chunk_id);
        self.rt.write_locks.remove(&chunk_id);
        if let Some(copies) = self.rt.locations.remove(&chunk_id) {
            for c in copies {
                self.rt.deletions.push((
                    c.cs,
                    ChunkRef {
                        chunk_id,
                        version: c.version,
                    },
                ));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn rename(
        &mut self,
        parent: Inode,
        name: &[u8],
        new_parent: Inode,
        new_name: &[u8],
        exchange: bool,
        keep_target: bool,
        time: moose_proto::Timespec,
    ) -> FsResult<Applied> {
        check_name(new_name)?;
        if name == b"." || name == b".." {
            return Err(FsError::Inval);
        }
        let src = self.dir(parent)?.get(name).ok_or(FsError::NoEnt)?;
        self.dir(new_parent)?;
        let target = self.dir(new_parent)?.get(new_name);
        let src_is_dir = self.node(src)?.is_dir();
        if src_is_dir && src != new_parent && self.is_ancestor(src, new_parent) {
            return Err(FsError::Inval);
        }
        if src_is_dir && src == new_parent {
            return Err(FsError::Inval);
        }
        if exchange {
            let target = target.ok_or(FsError::NoEnt)?;
            let target_is_dir = self.node(target)?.is_dir();
            if target_is_dir && target != parent && self.is_ancestor(target, parent) {
                return Err(FsError::Inval);
            }
            if parent == new_parent && name == new_name {
                return Ok(Applied::Done);
            }
            self.dir_mut(parent)?.insert(name.to_vec(), target);
            self.dir_mut(new_parent)?.insert(new_name.to_vec(), src);
            if parent != new_parent {
                self.move_dir_link(src, src_is_dir, parent, new_parent)?;
                self.move_dir_link(target, target_is_dir, new_parent, parent)?;
            }
            for ino in [src, target] {
                self.node_mut(ino)?.ctime = time.into();
            }
            for p in [parent, new_parent] {
                let pn = self.node_mut(p)?;
                pn.mtime = time.into();
                pn.ctime = time.into();
            }
            return Ok(Applied::Done);
        }
        if let Some(t) = target {
            if t == src {
                // Both names are links to the same file: POSIX says do nothing.
                return Ok(Applied::Done);
            }
            let tn = self.node(t)?;
            match (src_is_dir, tn.is_dir()) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) if !tn.dir().is_some_and(|d| d.is_empty()) => {
                    return Err(FsError::NotEmpty)
                }
                _ => {}
            }
            self.remove_entry(new_parent, new_name, t, keep_target, time)?;
        }
        self.dir_mut(parent)?.remove(name);
        self.dir_mut(new_parent)?.insert(new_name.to_vec(), src);
        if parent != new_parent {
            self.move_dir_link(src, src_is_dir, parent, new_parent)?;
        }
        self.node_mut(src)?.ctime = time.into();
        for p in [parent, new_parent] {
            let pn = self.node_mut(p)?;
            pn.mtime = time.into();
            pn.ctime = time.into();
        }
        Ok(Applied::Done)
    }

    /// A folder moved from `from` to `to`: fix its `..` and both parents' link counts.
    fn move_dir_link(&mut self, ino: Inode, is_dir: bool, from: Inode, to: Inode) -> FsResult<()> {
        if !is_dir {
            return Ok(());
        }
        if let Some(d) = self.node_mut(ino)?.dir_mut() {
            d.parent = to;
        }
        let f = self.node_mut(from)?;
        f.nlink = f.nlink.saturating_sub(1);
        self.node_mut(to)?.nlink += 1;
        Ok(())
    }

    /// Removes every orphan (unlinked while open when the master stopped); used at start-up,
    /// where no file is open any more. Returns the ops to log.
    pub fn orphans(&self) -> Vec<Op> {
        self.meta
            .nodes
            .iter()
            .filter(|(i, n)| n.nlink == 0 && !self.meta.trash.contains_key(i))
            .map(|(i, _)| Op::Purge { inode: i })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_ops::{create, t};
    use moose_proto::ROOT_INODE;

    fn fresh() -> State {
        State::new(Meta::fresh(1, t(0), 1))
    }

    #[test]
    fn create_lookup_unlink() {
        let mut st = fresh();
        create(&mut st, ROOT_INODE, "a", 2, FileKind::File);
        assert_eq!(st.lookup(ROOT_INODE, b"a"), Ok(2));
        let dup = st.apply(&Op::Create {
            parent: ROOT_INODE,
            name: b"a".to_vec(),
            inode: 3,
            kind: FileKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            rdev: 0,
            time: t(2),
        });
        assert_eq!(dup, Err(FsError::Exist));
        st.apply(&Op::Unlink {
            parent: ROOT_INODE,
            name: b"a".to_vec(),
            keep: false,
            time: t(3),
        })
        .unwrap();
        assert_eq!(st.lookup(ROOT_INODE, b"a"), Err(FsError::NoEnt));
        assert!(st.node(2).is_err());
    }

    #[test]
    fn rmdir_refuses_non_empty_and_rename_into_own_subtree() {
        let mut st = fresh();
        create(&mut st, ROOT_INODE, "d", 2, FileKind::Dir);
        create(&mut st, 2, "e", 3, FileKind::Dir);
        assert_eq!(st.node(ROOT_INODE).unwrap().nlink, 3);
        let r = st.apply(&Op::RmDir {
            parent: ROOT_INODE,
            name: b"d".to_vec(),
            time: t(2),
        });
        assert_eq!(r, Err(FsError::NotEmpty));
        let r = st.apply(&Op::Rename {
            parent: ROOT_INODE,
            name: b"d".to_vec(),
            new_parent: 3,
            new_name: b"x".to_vec(),
            exchange: false,
            keep_target: false,
            time: t(2),
        });
        assert_eq!(r, Err(FsError::Inval));
    }

    #[test]
    fn rename_over_existing_file_and_across_folders() {
        let mut st = fresh();
        create(&mut st, ROOT_INODE, "d1", 2, FileKind::Dir);
        create(&mut st, ROOT_INODE, "d2", 3, FileKind::Dir);
        create(&mut st, 2, "f", 4, FileKind::File);
        create(&mut st, 3, "g", 5, FileKind::File);
        st.apply(&Op::Rename {
            parent: 2,
            name: b"f".to_vec(),
            new_parent: 3,
            new_name: b"g".to_vec(),
            exchange: false,
            keep_target: false,
            time: t(2),
        })
        .unwrap();
        assert_eq!(st.lookup(3, b"g"), Ok(4));
        assert!(st.node(5).is_err(), "replaced file is gone");
        assert_eq!(st.lookup(2, b"f"), Err(FsError::NoEnt));
        // A folder moved across parents fixes link counts and '..'.
        create(&mut st, 2, "sub", 6, FileKind::Dir);
        st.apply(&Op::Rename {
            parent: 2,
            name: b"sub".to_vec(),
            new_parent: 3,
            new_name: b"sub".to_vec(),
            exchange: false,
            keep_target: false,
            time: t(3),
        })
        .unwrap();
        assert_eq!(st.node(2).unwrap().nlink, 2);
        assert_eq!(st.node(3).unwrap().nlink, 3);
        assert_eq!(st.lookup(6, b".."), Ok(3));
    }

    #[test]
    fn truncate_drops_chunks_and_queues_deletions() {
        let mut st = fresh();
        create(&mut st, ROOT_INODE, "f", 2, FileKind::File);
        for i in 0..3u32 {
            st.apply(&Op::AddChunk {
                inode: 2,
                index: i,
                chunk_id: 10 + i as u64,
                version: 1,
            })
            .unwrap();
            st.rt
                .locations
                .insert(10 + i as u64, vec![Copy { cs: 1, version: 1 }]);
        }
        st.apply(&Op::SetLength {
            inode: 2,
            length: CHUNK_SIZE + 5,
            trunc_chunk: Some((11, 2)),
            time: t(2),
        })
        .unwrap();
        assert!(st.meta.chunks.contains_key(&11));
        assert!(!st.meta.chunks.contains_key(&12));
        assert_eq!(st.meta.chunks[&11].version, 2);
        assert_eq!(
            st.rt.deletions,
            vec![(
                1,
                ChunkRef {
                    chunk_id: 12,
                    version: 1
                }
            )]
        );
    }

    #[test]
    fn a_chunk_at_a_huge_index_takes_one_entry() {
        let mut st = fresh();
        create(&mut st, ROOT_INODE, "f", 2, FileKind::File);
        let index = ((1u64 << 56) / CHUNK_SIZE) as u32;
        st.apply(&Op::AddChunk {
            inode: 2,
            index,
            chunk_id: 10,
            version: 1,
        })
        .unwrap();
        match &st.node(2).unwrap().data {
            NodeData::File { chunks, .. } => {
                assert_eq!(chunks.iter().collect::<Vec<_>>(), vec![(index, 10)])
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn open_file_survives_unlink_until_purge() {
        let mut st = fresh();
        create(&mut st, ROOT_INODE, "f", 2, FileKind::File);
        // Without a trash time: an open file is kept as an orphan, not in the trash.
        st.node_mut(2).unwrap().trash_time = 0;
        st.apply(&Op::Unlink {
            parent: ROOT_INODE,
            name: b"f".to_vec(),
            keep: true,
            time: t(2),
        })
        .unwrap();
        assert_eq!(st.node(2).unwrap().nlink, 0);
        assert_eq!(st.orphans(), vec![Op::Purge { inode: 2 }]);
        st.apply(&Op::Purge { inode: 2 }).unwrap();
        assert!(st.node(2).is_err());
        assert_eq!(st.apply(&Op::Purge { inode: 2 }), Ok(Applied::Done));
    }
}
