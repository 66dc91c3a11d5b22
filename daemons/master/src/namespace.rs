//! The persistent metadata: every node of the namespace and the chunk table.
//!
//! This is what a dump holds. It is changed only by [`crate::ops::Op`]s applied through
//! [`crate::state::State::apply`].

use std::collections::{BTreeMap, HashMap};

use moose_proto::{Attr, FileKind, Inode, Timespec, ROOT_INODE};
use serde::{Deserialize, Serialize};

/// A directory's entries, listed in a stable order (by edge id) so that a paged listing
/// neither skips nor repeats entries when others are added or removed meanwhile.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Dir {
    pub parent: Inode,
    pub entries: HashMap<Vec<u8>, Edge>,
    pub order: BTreeMap<u64, Vec<u8>>,
    pub next_edge: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Edge {
    pub inode: Inode,
    pub id: u64,
}

impl Dir {
    pub fn new(parent: Inode) -> Self {
        Dir {
            parent,
            next_edge: 1,
            ..Default::default()
        }
    }

    pub fn get(&self, name: &[u8]) -> Option<Inode> {
        self.entries.get(name).map(|e| e.inode)
    }

    pub fn insert(&mut self, name: Vec<u8>, inode: Inode) {
        let id = self.next_edge;
        self.next_edge += 1;
        if let Some(old) = self.entries.insert(name.clone(), Edge { inode, id }) {
            self.order.remove(&old.id);
        }
        self.order.insert(id, name);
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Inode> {
        let e = self.entries.remove(name)?;
        self.order.remove(&e.id);
        Some(e.inode)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeData {
    Dir(Dir),
    File {
        length: u64,
        chunks: Vec<u64>,
    },
    Symlink(Vec<u8>),
    /// Fifo, socket or device (rdev).
    Special(u32),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    pub kind: FileKind,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub nlink: u32,
    pub goal: u8,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub data: NodeData,
}

impl Node {
    pub fn dir(&self) -> Option<&Dir> {
        match &self.data {
            NodeData::Dir(d) => Some(d),
            _ => None,
        }
    }

    pub fn dir_mut(&mut self) -> Option<&mut Dir> {
        match &mut self.data {
            NodeData::Dir(d) => Some(d),
            _ => None,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Dir
    }

    pub fn length(&self) -> u64 {
        match &self.data {
            NodeData::File { length, .. } => *length,
            NodeData::Symlink(t) => t.len() as u64,
            NodeData::Dir(d) => 4096 + 32 * d.entries.len() as u64,
            NodeData::Special(_) => 0,
        }
    }

    pub fn attr(&self, inode: Inode) -> Attr {
        Attr {
            inode,
            kind: self.kind,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            nlink: self.nlink,
            size: self.length(),
            rdev: match self.data {
                NodeData::Special(r) => r,
                _ => 0,
            },
            goal: self.goal,
        }
    }
}

/// One chunk of the chunk table.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ChunkMeta {
    pub version: u32,
    /// The file the chunk belongs to (no snapshots: one owner).
    pub inode: Inode,
    pub index: u32,
}

/// Everything a metadata dump holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub cluster_id: u64,
    /// Number of the last change applied.
    pub version: u64,
    pub next_inode: Inode,
    pub next_chunk_id: u64,
    pub nodes: HashMap<Inode, Node>,
    pub chunks: HashMap<u64, ChunkMeta>,
}

impl Meta {
    /// An empty file system: only the root folder (mode 0777 like a fresh MooseFS).
    pub fn fresh(cluster_id: u64, now: Timespec, default_goal: u8) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT_INODE,
            Node {
                kind: FileKind::Dir,
                mode: 0o777,
                uid: 0,
                gid: 0,
                atime: now,
                mtime: now,
                ctime: now,
                nlink: 2,
                goal: default_goal,
                xattrs: BTreeMap::new(),
                data: NodeData::Dir(Dir::new(ROOT_INODE)),
            },
        );
        Meta {
            cluster_id,
            version: 0,
            next_inode: ROOT_INODE + 1,
            next_chunk_id: 1,
            nodes,
            chunks: HashMap::new(),
        }
    }

    pub fn count_kinds(&self) -> (u64, u64) {
        let dirs = self.nodes.values().filter(|n| n.is_dir()).count() as u64;
        (self.nodes.len() as u64 - dirs, dirs)
    }
}
