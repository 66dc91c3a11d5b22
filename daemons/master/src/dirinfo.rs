//! Per-folder counters (`moose-tool dirinfo`, quotas): inodes, folders, files, chunks,
//! length, size and real size of every folder's tree, kept up to date along the path to the
//! root on every change, so they are answered without walking the tree.
//!
//! They are derived state: built from the nodes when a dump is loaded, then maintained by
//! [`crate::state::State::apply`] (so replay and metaloggers keep them too), never dumped.
//!
//! Maintenance works on two things an op can change:
//! - *edges* (a name in a folder): before the op the contribution of the node an edge names
//!   is taken off its folder's path to the root, after it the new one is added;
//! - *files* whose content changes (length, chunks, goal): the difference of their own
//!   figures is applied along the path of every folder holding a link to them.

use std::collections::HashMap;

use moose_proto::msg::DirStats;
use moose_proto::{FileKind, Inode, CHUNK_SIZE, ROOT_INODE};

use crate::inode_map::InodeMap;
use crate::namespace::{Meta, Node, NodeData};

/// Size accounted for a chunk's data: whole 64 KiB blocks, as chunkservers store them.
const BLOCK: u64 = 64 * 1024;

/// Figures of a tree (or of one node).
pub type Stats = DirStats;

/// Bytes stored for chunk `index` of a file of `length` bytes.
pub fn chunk_size(index: u32, length: u64) -> u64 {
    let start = u64::from(index) * CHUNK_SIZE;
    length
        .saturating_sub(start)
        .min(CHUNK_SIZE)
        .div_ceil(BLOCK)
        .saturating_mul(BLOCK)
}

/// A node's own figures (a folder's own, without what it holds).
pub fn own(node: &Node) -> Stats {
    let mut s = Stats {
        inodes: 1,
        ..Default::default()
    };
    match &node.data {
        NodeData::Dir(_) => s.dirs = 1,
        NodeData::File { length, chunks } => {
            s.files = 1;
            s.length = *length;
            for (index, _) in chunks.iter() {
                s.chunks += 1;
                s.size += chunk_size(index, *length);
            }
            s.realsize = s.size.saturating_mul(u64::from(node.goal));
        }
        NodeData::Symlink(_) | NodeData::Special(_) => {
            if node.kind == FileKind::File {
                s.files = 1;
            }
        }
    }
    s
}

/// The counters of every folder, and the folders holding each other node.
#[derive(Debug, Default)]
pub struct Tree {
    /// Figures of each folder's tree, the folder included.
    totals: HashMap<Inode, Stats>,
    /// Folders holding a link to each non-folder node (a folder twice for two links).
    parents: Links,
}

/// The folders holding each non-folder node. Nearly every file has one link: its folder is
/// kept in an [`InodeMap`] (8 bytes a file); further links of hard-linked files in a map
/// beside it.
#[derive(Debug, Default)]
struct Links {
    first: InodeMap<Inode>,
    more: HashMap<Inode, Vec<Inode>>,
}

impl Links {
    fn add(&mut self, child: Inode, dir: Inode) {
        if self.first.contains_key(&child) {
            self.more.entry(child).or_default().push(dir);
        } else {
            self.first.insert(child, dir);
        }
    }

    /// Removes one link of `child` from `dir`.
    fn remove(&mut self, child: Inode, dir: Inode) {
        if self.first.get(&child) == Some(&dir) {
            match self.more.get_mut(&child) {
                Some(v) => {
                    let next = v.pop().unwrap_or(dir);
                    self.first.insert(child, next);
                    if v.is_empty() {
                        self.more.remove(&child);
                    }
                }
                None => {
                    self.first.remove(&child);
                }
            }
        } else if let Some(v) = self.more.get_mut(&child) {
            if let Some(i) = v.iter().position(|d| *d == dir) {
                v.swap_remove(i);
            }
            if v.is_empty() {
                self.more.remove(&child);
            }
        }
    }

    fn of(&self, child: Inode) -> Vec<Inode> {
        let mut v: Vec<Inode> = self.first.get(&child).copied().into_iter().collect();
        if let Some(more) = self.more.get(&child) {
            v.extend_from_slice(more);
        }
        v
    }

    fn forget(&mut self, child: Inode) {
        self.first.remove(&child);
        self.more.remove(&child);
    }

    fn retain(&mut self, keep: impl Fn(Inode) -> bool) {
        self.first.retain(|i, _| keep(i));
        self.more.retain(|i, _| keep(*i));
    }

    /// Every node with its folders, sorted (to compare two trees in tests).
    #[cfg(test)]
    fn all(&self) -> Vec<(Inode, Vec<Inode>)> {
        let mut all: Vec<_> = self
            .first
            .keys()
            .map(|k| {
                let mut v = self.of(k);
                v.sort_unstable();
                (k, v)
            })
            .collect();
        all.sort_unstable();
        all
    }
}

/// What [`Tree::before`] took off, to be put back by [`Tree::after`].
#[derive(Debug, Default)]
pub struct Pending {
    edges: Vec<(Inode, Vec<u8>)>,
    files: Vec<(Inode, Stats)>,
    /// Nodes that may be gone after the op.
    maybe_gone: Vec<Inode>,
}

impl Tree {
    /// Builds every counter from the nodes (after a dump is loaded).
    pub fn build(meta: &Meta) -> Tree {
        let mut t = Tree::default();
        if meta.nodes.contains_key(&ROOT_INODE) {
            t.build_dir(meta, ROOT_INODE);
        }
        t
    }

    /// Counters of a folder's tree (computed, with those of every folder below, if unknown).
    fn build_dir(&mut self, meta: &Meta, dir: Inode) -> Stats {
        if let Some(s) = self.totals.get(&dir) {
            return *s;
        }
        // Iterative post-order walk: deep trees must not overflow the stack.
        let mut stack = vec![(dir, false)];
        while let Some((ino, children_done)) = stack.pop() {
            let Some(node) = meta.nodes.get(&ino) else {
                continue;
            };
            let Some(d) = node.dir() else { continue };
            if !children_done {
                stack.push((ino, true));
                for (_, c) in d.iter() {
                    if meta.nodes.get(&c).is_some_and(|n| n.is_dir())
                        && !self.totals.contains_key(&c)
                        && c != ino
                    {
                        stack.push((c, false));
                    }
                }
                continue;
            }
            let mut total = own(node);
            for (_, c) in d.iter() {
                let Some(cn) = meta.nodes.get(&c) else {
                    continue;
                };
                if cn.is_dir() {
                    if let Some(s) = self.totals.get(&c) {
                        total.add(s);
                    }
                } else {
                    total.add(&own(cn));
                    self.parents.add(c, ino);
                }
            }
            self.totals.insert(ino, total);
        }
        self.totals.get(&dir).copied().unwrap_or_default()
    }

    /// Figures of a folder's tree.
    pub fn totals(&self, dir: Inode) -> Option<Stats> {
        self.totals.get(&dir).copied()
    }

    /// Figures of whatever `inode` is: a folder's tree, or a node's own.
    pub fn of(&self, meta: &Meta, inode: Inode) -> Option<Stats> {
        let n = meta.nodes.get(&inode)?;
        if n.is_dir() {
            self.totals(inode)
        } else {
            Some(own(n))
        }
    }

    /// Folders holding links to a non-folder node.
    pub fn parents(&self, inode: Inode) -> Vec<Inode> {
        self.parents.of(inode)
    }

    /// Adds (or takes off) `s` on `dir` and every folder above it.
    fn along_path(&mut self, meta: &Meta, dir: Inode, s: &Stats, add: bool) {
        let mut ino = dir;
        loop {
            if let Some(t) = self.totals.get_mut(&ino) {
                if add {
                    t.add(s);
                } else {
                    t.sub(s);
                }
            }
            match meta.nodes.get(&ino).and_then(|n| n.dir()) {
                Some(d) if d.parent != ino => ino = d.parent,
                _ => return,
            }
        }
    }

    /// Contribution of a node to the folder holding it.
    fn contribution(&mut self, meta: &Meta, inode: Inode) -> Stats {
        match meta.nodes.get(&inode) {
            Some(n) if n.is_dir() => self.build_dir(meta, inode),
            Some(n) => own(n),
            None => Stats::default(),
        }
    }

    /// Called before an op: takes off what the named edges and files contribute.
    /// `edges` are (folder, name) pairs the op may change; `files` the non-folder nodes whose
    /// content it may change; `gone` nodes it may remove without their edge being in `edges`.
    pub fn before(
        &mut self,
        meta: &Meta,
        mut edges: Vec<(Inode, Vec<u8>)>,
        files: Vec<Inode>,
        gone: Vec<Inode>,
    ) -> Pending {
        edges.dedup();
        let mut p = Pending {
            maybe_gone: gone,
            ..Default::default()
        };
        for (dir, name) in &edges {
            let Some(child) = meta
                .nodes
                .get(dir)
                .and_then(|n| n.dir())
                .and_then(|d| d.get(name))
            else {
                continue;
            };
            let c = self.contribution(meta, child);
            self.along_path(meta, *dir, &c, false);
            self.unlink_parent(meta, child, *dir);
            p.maybe_gone.push(child);
        }
        for f in files {
            let Some(n) = meta.nodes.get(&f) else {
                continue;
            };
            if n.is_dir() {
                continue;
            }
            let s = own(n);
            for dir in self.parents(f) {
                self.along_path(meta, dir, &s, false);
            }
            p.files.push((f, s));
        }
        p.edges = edges;
        p
    }

    fn unlink_parent(&mut self, meta: &Meta, child: Inode, dir: Inode) {
        if meta.nodes.get(&child).is_some_and(|n| n.is_dir()) {
            return;
        }
        self.parents.remove(child, dir);
    }

    /// Called after the op succeeded: adds what the edges and files contribute now.
    pub fn after(&mut self, meta: &Meta, p: Pending) {
        for ino in &p.maybe_gone {
            self.forget_if_gone(meta, *ino);
        }
        for (f, _) in &p.files {
            let Some(n) = meta.nodes.get(f) else {
                self.parents.forget(*f);
                continue;
            };
            let s = own(n);
            for dir in self.parents(*f) {
                self.along_path(meta, dir, &s, true);
            }
        }
        for (dir, name) in &p.edges {
            let Some(child) = meta
                .nodes
                .get(dir)
                .and_then(|n| n.dir())
                .and_then(|d| d.get(name))
            else {
                continue;
            };
            let c = self.contribution(meta, child);
            self.along_path(meta, *dir, &c, true);
            if meta.nodes.get(&child).is_some_and(|n| !n.is_dir()) {
                self.parents.add(child, *dir);
            }
        }
    }

    /// Undoes [`Tree::before`] when the op failed (the state is as it was).
    pub fn restore(&mut self, meta: &Meta, p: Pending) {
        let p = Pending {
            maybe_gone: Vec::new(),
            ..p
        };
        self.after(meta, p);
    }

    /// Drops the counters of a removed node, and of every removed folder below it.
    fn forget_if_gone(&mut self, meta: &Meta, ino: Inode) {
        if meta.nodes.contains_key(&ino) {
            return;
        }
        self.parents.forget(ino);
        if self.totals.remove(&ino).is_some_and(|t| t.inodes > 1) {
            // Folders go only when empty, or with their whole tree (a replaced snapshot
            // target): then drop whatever is left below.
            self.totals.retain(|i, _| meta.nodes.contains_key(i));
            self.parents.retain(|i| meta.nodes.contains_key(&i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Op;
    use crate::state::State;
    use crate::test_ops::t;

    fn create(parent: Inode, name: &str, inode: Inode, kind: FileKind) -> Op {
        Op::Create {
            parent,
            name: name.as_bytes().to_vec(),
            inode,
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            rdev: 0,
            time: t(1),
        }
    }

    /// Every folder's counters, as maintained, equal those built from scratch.
    fn check(st: &State, what: &str) {
        let fresh = Tree::build(&st.meta);
        for ino in st.meta.nodes.keys() {
            if st.meta.nodes[&ino].is_dir() {
                assert_eq!(
                    st.tree.totals(ino),
                    fresh.totals(ino),
                    "folder {ino} after {what}"
                );
            }
        }
        assert_eq!(
            st.tree.totals.len(),
            fresh.totals.len(),
            "folders after {what}"
        );
        assert_eq!(
            st.tree.parents.all(),
            fresh.parents.all(),
            "links after {what}"
        );
    }

    #[test]
    fn counters_follow_every_change_along_the_path_to_the_root() {
        let mut st = State::new(Meta::fresh(1, t(0), 2));
        let ops = vec![
            create(ROOT_INODE, "a", 2, FileKind::Dir),
            create(2, "b", 3, FileKind::Dir),
            create(3, "f", 4, FileKind::File),
            Op::AddChunk {
                inode: 4,
                index: 0,
                chunk_id: 1,
                version: 1,
            },
            Op::WriteEnd {
                inode: 4,
                length: 100_000,
                time: t(2),
            },
            Op::AddChunk {
                inode: 4,
                index: 2,
                chunk_id: 2,
                version: 1,
            },
            Op::WriteEnd {
                inode: 4,
                length: 2 * CHUNK_SIZE + 1,
                time: t(2),
            },
            Op::Link {
                inode: 4,
                parent: ROOT_INODE,
                name: b"hard".to_vec(),
                time: t(3),
            },
            create(ROOT_INODE, "c", 5, FileKind::Dir),
            Op::Rename {
                parent: 2,
                name: b"b".to_vec(),
                new_parent: 5,
                new_name: b"b2".to_vec(),
                exchange: false,
                keep_target: false,
                time: t(4),
            },
            Op::SetGoal {
                inode: 5,
                goal: 3,
                recursive: true,
                uid: 0,
                time: t(5),
            },
            Op::Snapshot {
                src: 5,
                parent: 2,
                name: b"snap".to_vec(),
                first_inode: 6,
                replace: false,
                keep: vec![],
                time: t(6),
            },
            Op::SetLength {
                inode: 4,
                length: 10,
                trunc_chunk: None,
                time: t(7),
            },
            Op::Symlink {
                parent: 5,
                name: b"l".to_vec(),
                inode: 20,
                target: b"x".to_vec(),
                uid: 0,
                gid: 0,
                time: t(7),
            },
            create(5, "g", 21, FileKind::File),
            Op::Rename {
                parent: 5,
                name: b"g".to_vec(),
                new_parent: ROOT_INODE,
                new_name: b"hard".to_vec(),
                exchange: false,
                keep_target: false,
                time: t(8),
            },
            Op::Unlink {
                parent: 3,
                name: b"f".to_vec(),
                keep: true,
                time: t(9),
            },
            Op::WriteEnd {
                inode: 4,
                length: 5000,
                time: t(9),
            },
            Op::Purge { inode: 4 },
            Op::Rename {
                parent: 2,
                name: b"snap".to_vec(),
                new_parent: 5,
                new_name: b"b2".to_vec(),
                exchange: true,
                keep_target: false,
                time: t(10),
            },
            Op::Snapshot {
                src: 2,
                parent: ROOT_INODE,
                name: b"c".to_vec(),
                first_inode: 30,
                replace: true,
                keep: vec![],
                time: t(11),
            },
            // A file goes to the trash with its folder removed after it, then comes back.
            create(ROOT_INODE, "d", 40, FileKind::Dir),
            create(40, "x", 41, FileKind::File),
            Op::SetLength {
                inode: 41,
                length: 100,
                trunc_chunk: None,
                time: t(12),
            },
            Op::Unlink {
                parent: 40,
                name: b"x".to_vec(),
                keep: false,
                time: t(12),
            },
            Op::RmDir {
                parent: ROOT_INODE,
                name: b"d".to_vec(),
                time: t(12),
            },
            Op::Undelete {
                inode: 41,
                new_dirs: vec![42],
                time: t(13),
            },
        ];
        for op in &ops {
            st.apply(op).unwrap_or_else(|e| panic!("{op:?}: {e:?}"));
            check(&st, &format!("{op:?}"));
        }
        // A refused op leaves the counters as they were.
        let before = st.tree.totals(ROOT_INODE);
        assert!(st
            .apply(&create(ROOT_INODE, "a", 99, FileKind::File))
            .is_err());
        assert_eq!(st.tree.totals(ROOT_INODE), before);
        check(&st, "a refused create");
        let root = st.tree.totals(ROOT_INODE).unwrap();
        assert_eq!(
            root.inodes as usize,
            st.meta.nodes.len() - st.meta.trash.len(),
            "every node but those in the trash is counted"
        );
    }

    #[test]
    fn chunk_sizes_round_up_to_blocks() {
        assert_eq!(chunk_size(0, 1), BLOCK);
        assert_eq!(chunk_size(0, BLOCK + 1), 2 * BLOCK);
        assert_eq!(chunk_size(0, 3 * CHUNK_SIZE), CHUNK_SIZE);
        assert_eq!(chunk_size(1, CHUNK_SIZE + 10), BLOCK);
        assert_eq!(chunk_size(2, CHUNK_SIZE + 10), 0);
    }
}
