//! The persistent metadata: every node of the namespace and the chunk table.
//!
//! This is what a dump holds. It is changed only by [`crate::ops::Op`]s applied through
//! [`crate::state::State::apply`].

use std::collections::{BTreeMap, HashMap};

use moose_proto::{Attr, FileKind, Inode, Timespec, ROOT_INODE};
use serde::{Deserialize, Serialize};

pub use crate::dir::Dir;

/// A file's chunk ids by index. Sparse: a write at a huge offset (`dd seek=2^56`) adds one
/// entry, not one per index before it.
///
/// In a dump it is a sequence of u64: a chunk id, `0` for one hole, or [`HOLE_RUN`] followed by
/// a number of holes. Dumps from before the sparse table (ids and single zeros) read the same.
///
/// In memory most files have no chunk or one (under 64 MiB): those are held inline, a larger
/// table in a map behind a pointer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkTable(Chunks);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(clippy::box_collection)] // the box is the point: a pointer inside the node, not a map
enum Chunks {
    #[default]
    None,
    One {
        index: u32,
        id: u64,
    },
    Many(Box<BTreeMap<u32, u64>>),
}

/// Marks a run of holes in a dumped chunk table (never a chunk id: ids count up from 1).
const HOLE_RUN: u64 = u64::MAX;

impl ChunkTable {
    /// The chunk at `index`, if any (`None` for a hole).
    pub fn get(&self, index: usize) -> Option<&u64> {
        let i = u32::try_from(index).ok()?;
        match &self.0 {
            Chunks::None => None,
            Chunks::One { index, id } => (*index == i).then_some(id),
            Chunks::Many(m) => m.get(&i),
        }
    }

    pub fn set(&mut self, index: u32, chunk_id: u64) {
        let mut map = self.take_map();
        if chunk_id == 0 {
            map.remove(&index);
        } else {
            map.insert(index, chunk_id);
        }
        *self = Self::from_map(map);
    }

    /// Drops every chunk at `keep` or after; returns them (index, id).
    pub fn truncate(&mut self, keep: u64) -> Vec<(u32, u64)> {
        let Ok(k) = u32::try_from(keep) else {
            return Vec::new();
        };
        let mut map = self.take_map();
        let dropped = map.split_off(&k).into_iter().collect();
        *self = Self::from_map(map);
        dropped
    }

    /// Chunks present, by index.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        let (one, many) = match &self.0 {
            Chunks::None => (None, None),
            Chunks::One { index, id } => (Some((*index, *id)), None),
            Chunks::Many(m) => (None, Some(m.iter().map(|(i, c)| (*i, *c)))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().map(|(_, c)| c)
    }

    fn len(&self) -> usize {
        match &self.0 {
            Chunks::None => 0,
            Chunks::One { .. } => 1,
            Chunks::Many(m) => m.len(),
        }
    }

    /// The table as a map (changes are rare next to reads: they go through one).
    fn take_map(&mut self) -> BTreeMap<u32, u64> {
        match std::mem::take(&mut self.0) {
            Chunks::None => BTreeMap::new(),
            Chunks::One { index, id } => BTreeMap::from([(index, id)]),
            Chunks::Many(m) => *m,
        }
    }

    fn from_map(map: BTreeMap<u32, u64>) -> Self {
        ChunkTable(match map.len() {
            0 => Chunks::None,
            1 => {
                let (&index, &id) = map.iter().next().expect("one entry");
                Chunks::One { index, id }
            }
            _ => Chunks::Many(Box::new(map)),
        })
    }
}

impl Serialize for ChunkTable {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut items: Vec<u64> = Vec::with_capacity(self.len() + 2);
        let mut next = 0u32;
        for (i, c) in self.iter() {
            match i - next {
                0 => {}
                1 => items.push(0),
                n => items.extend([HOLE_RUN, u64::from(n)]),
            }
            items.push(c);
            next = i + 1;
        }
        let mut seq = ser.serialize_seq(Some(items.len()))?;
        for v in items {
            seq.serialize_element(&v)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for ChunkTable {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ChunkTable;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a chunk table")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ChunkTable, A::Error> {
                use serde::de::Error;
                let mut t = BTreeMap::new();
                let mut index: u64 = 0;
                while let Some(v) = seq.next_element::<u64>()? {
                    match v {
                        0 => index += 1,
                        HOLE_RUN => {
                            let n: u64 = seq
                                .next_element()?
                                .ok_or_else(|| A::Error::custom("a hole run without its length"))?;
                            index += n;
                        }
                        c => {
                            let i = u32::try_from(index)
                                .map_err(|_| A::Error::custom("chunk index out of range"))?;
                            t.insert(i, c);
                            index += 1;
                        }
                    }
                }
                Ok(ChunkTable::from_map(t))
            }
        }
        de.deserialize_seq(V)
    }
}

/// A node's extended attributes. Most nodes have none, and then they cost one pointer; in a
/// dump they are a map like any other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(clippy::box_collection)] // the box is the point: 8 bytes per node instead of 24
pub struct Xattrs(Option<Box<BTreeMap<Vec<u8>, Vec<u8>>>>);

impl Xattrs {
    pub fn get(&self, name: &[u8]) -> Option<&Vec<u8>> {
        self.0.as_ref()?.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|m| m.is_empty())
    }

    pub fn contains_key(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    pub fn keys(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.0.iter().flat_map(|m| m.keys())
    }

    pub fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        self.0
            .get_or_insert_with(Default::default)
            .insert(name, value);
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Vec<u8>> {
        let map = self.0.as_mut()?;
        let value = map.remove(name);
        if map.is_empty() {
            self.0 = None;
        }
        value
    }
}

impl Serialize for Xattrs {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let len = self.0.as_ref().map_or(0, |m| m.len());
        let mut map = ser.serialize_map(Some(len))?;
        for (k, v) in self.0.iter().flat_map(|m| m.iter()) {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Xattrs {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<Vec<u8>, Vec<u8>>::deserialize(de)?;
        Ok(Xattrs((!map.is_empty()).then(|| Box::new(map))))
    }
}

/// A node's time in 8 bytes: seconds (34 bits, signed) above nanoseconds (30 bits). That holds
/// the years 1698 to 2242; a time outside is clamped to the nearest end (stock MooseFS keeps
/// 32-bit unsigned seconds: 1970 to 2106). In a dump it is a [`Timespec`], as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time(u64);

const NSEC_BITS: u32 = 30;
const SEC_MAX: i64 = (1 << (63 - NSEC_BITS)) - 1;
const SEC_MIN: i64 = -(1 << (63 - NSEC_BITS));

impl From<Timespec> for Time {
    fn from(t: Timespec) -> Self {
        let sec = t.sec.clamp(SEC_MIN, SEC_MAX);
        let nsec = t.nsec.min(999_999_999);
        Time(((sec as u64) << NSEC_BITS) | u64::from(nsec))
    }
}

impl From<Time> for Timespec {
    fn from(t: Time) -> Self {
        Timespec {
            // An arithmetic shift: the sign comes back.
            sec: (t.0 as i64) >> NSEC_BITS,
            nsec: (t.0 & ((1 << NSEC_BITS) - 1)) as u32,
        }
    }
}

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        Timespec::from(*self).serialize(ser)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Timespec::deserialize(de).map(Time::from)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeData {
    /// Boxed: most nodes are files, and a folder's tables are larger than a file's.
    Dir(Box<Dir>),
    File {
        length: u64,
        chunks: ChunkTable,
    },
    Symlink(Box<[u8]>),
    /// Fifo, socket or device (rdev).
    Special(u32),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    pub kind: FileKind,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub nlink: u32,
    pub goal: u8,
    /// Seconds the file stays in the trash once deleted (0 = freed at once).
    pub trash_time: u32,
    pub xattrs: Xattrs,
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
            NodeData::Dir(d) => moose_proto::folder_size(d.len() as u64),
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
            atime: self.atime.into(),
            mtime: self.mtime.into(),
            ctime: self.ctime.into(),
            nlink: self.nlink,
            size: self.length(),
            rdev: match self.data {
                NodeData::Special(r) => r,
                _ => 0,
            },
            goal: self.goal,
            xattrs: !self.xattrs.is_empty(),
        }
    }
}

/// One chunk of the chunk table.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ChunkMeta {
    pub version: u32,
    /// A file holding the chunk (one of them for a chunk shared by snapshots, see
    /// [`crate::snapshot::Shares`]).
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
    pub nodes: crate::inode_map::InodeMap<Node>,
    pub chunks: HashMap<u64, ChunkMeta>,
    /// Deleted files kept in the trash (their nodes stay in `nodes`, with no link).
    pub trash: BTreeMap<Inode, Trashed>,
    /// Folder quotas.
    pub quotas: crate::quota::Quotas,
    /// Since when (unix seconds) each quota's soft limit is exceeded: its grace period runs
    /// from there, across restarts.
    pub quota_since: BTreeMap<Inode, u64>,
}

/// Where a file in the trash was, and when it was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trashed {
    /// Its path relative to the root, without the leading '/'.
    pub path: Vec<u8>,
    /// Unix seconds of the deletion; it is purged `trash_time` seconds later.
    pub deleted: i64,
}

impl Meta {
    /// An empty file system: only the root folder (mode 0777 like a fresh MooseFS).
    pub fn fresh(cluster_id: u64, now: Timespec, default_goal: u8) -> Self {
        let mut nodes = crate::inode_map::InodeMap::new();
        nodes.insert(
            ROOT_INODE,
            Node {
                kind: FileKind::Dir,
                mode: 0o777,
                uid: 0,
                gid: 0,
                atime: now.into(),
                mtime: now.into(),
                ctime: now.into(),
                nlink: 2,
                goal: default_goal,
                trash_time: crate::trash::DEFAULT_TRASH_TIME,
                xattrs: Xattrs::default(),
                data: NodeData::Dir(Box::new(Dir::new(ROOT_INODE))),
            },
        );
        Meta {
            cluster_id,
            version: 0,
            next_inode: ROOT_INODE + 1,
            next_chunk_id: 1,
            nodes,
            chunks: HashMap::new(),
            trash: BTreeMap::new(),
            quotas: Default::default(),
            quota_since: BTreeMap::new(),
        }
    }

    pub fn count_kinds(&self) -> (u64, u64) {
        let dirs = self.nodes.values().filter(|n| n.is_dir()).count() as u64;
        (self.nodes.len() as u64 - dirs, dirs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_within_their_range_and_clamp_outside() {
        for (sec, nsec) in [
            (0, 0),
            (1_700_000_000, 123_456_789),
            (-1, 999_999_999),
            (-86_400 * 365 * 200, 5),
            (5_000_000_000, 1),
            (SEC_MAX, 999_999_999),
            (SEC_MIN, 0),
        ] {
            let t = Timespec { sec, nsec };
            assert_eq!(Timespec::from(Time::from(t)), t);
        }
        let far = Timespec::from(Time::from(Timespec {
            sec: i64::MAX,
            nsec: u32::MAX,
        }));
        assert_eq!((far.sec, far.nsec), (SEC_MAX, 999_999_999));
        let early = Timespec::from(Time::from(Timespec {
            sec: i64::MIN,
            nsec: 0,
        }));
        assert_eq!(early.sec, SEC_MIN);
        // Dumped as the Timespec it stands for.
        let t = Timespec { sec: -5, nsec: 7 };
        let bytes = postcard::to_allocvec(&Time::from(t)).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&t).unwrap());
        assert_eq!(postcard::from_bytes::<Time>(&bytes).unwrap(), Time::from(t));
    }

    #[test]
    fn small_chunk_tables_are_inline_and_grow_into_maps() {
        let mut t = ChunkTable::default();
        assert_eq!(t.get(0), None);
        t.set(0, 9);
        assert!(matches!(t.0, Chunks::One { index: 0, id: 9 }));
        t.set(3, 10);
        assert!(matches!(t.0, Chunks::Many(_)));
        assert_eq!(t.iter().collect::<Vec<_>>(), vec![(0, 9), (3, 10)]);
        assert_eq!(t.truncate(1), vec![(3, 10)]);
        assert!(matches!(t.0, Chunks::One { index: 0, id: 9 }));
        t.set(0, 0);
        assert_eq!(t, ChunkTable::default());
    }

    #[test]
    fn chunk_tables_are_sparse_and_dump_compatibly() {
        let mut t = ChunkTable::default();
        t.set(0, 5);
        t.set(2, 6);
        t.set(1 << 30, 7);
        assert_eq!(t.iter().count(), 3);
        let bytes = postcard::to_allocvec(&t).unwrap();
        assert!(bytes.len() < 40, "{} bytes", bytes.len());
        assert_eq!(postcard::from_bytes::<ChunkTable>(&bytes).unwrap(), t);
        // A table as dumped before: one id or 0 per index.
        let old: Vec<u64> = vec![5, 0, 6, 0, 0, 9];
        let back: ChunkTable = postcard::from_bytes(&postcard::to_allocvec(&old).unwrap()).unwrap();
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            vec![(0, 5), (2, 6), (5, 9)]
        );
        assert_eq!(t.truncate(1), vec![(2, 6), (1 << 30, 7)]);
        assert_eq!(t.iter().collect::<Vec<_>>(), vec![(0, 5)]);
    }

    /// The layout dumps had before names were boxed, folders boxed and empty attribute sets
    /// left out: the same bytes on disk.
    #[derive(Serialize, Deserialize)]
    struct Edge {
        inode: Inode,
        id: u64,
    }

    #[derive(Serialize, Deserialize)]
    struct OldDir {
        parent: Inode,
        entries: HashMap<Vec<u8>, Edge>,
        order: BTreeMap<u64, Vec<u8>>,
        next_edge: u64,
    }

    #[derive(Serialize, Deserialize)]
    enum OldData {
        Dir(OldDir),
    }

    #[derive(Serialize, Deserialize)]
    struct OldNode {
        xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
        data: OldData,
    }

    #[derive(Serialize, Deserialize)]
    struct NewNode {
        xattrs: Xattrs,
        data: NodeData,
    }

    #[test]
    fn compact_nodes_dump_as_before() {
        let mut dir = Dir::new(1);
        dir.insert(b"a".to_vec(), 7);
        dir.insert(b"bb".to_vec(), 8);
        let mut xattrs = Xattrs::default();
        xattrs.insert(b"user.x".to_vec(), b"1".to_vec());
        for xattrs in [Xattrs::default(), xattrs] {
            let new = NewNode {
                xattrs: xattrs.clone(),
                data: NodeData::Dir(Box::new(dir.clone())),
            };
            let bytes = postcard::to_allocvec(&new).unwrap();
            let old: OldNode = postcard::from_bytes(&bytes).unwrap();
            let OldData::Dir(d) = &old.data;
            assert_eq!(d.entries.len(), 2);
            assert_eq!(d.order.get(&2).map(Vec::as_slice), Some(&b"bb"[..]));
            // And an old dump reads into the compact layout.
            let back: NewNode =
                postcard::from_bytes(&postcard::to_allocvec(&old).unwrap()).unwrap();
            assert_eq!(back.xattrs, xattrs);
            match &back.data {
                NodeData::Dir(d) => assert_eq!(d.get(b"a"), Some(7)),
                _ => panic!("a folder came back as something else"),
            }
        }
        let mut x = Xattrs::default();
        x.insert(b"k".to_vec(), b"v".to_vec());
        assert_eq!(x.remove(b"k"), Some(b"v".to_vec()));
        assert_eq!(
            x,
            Xattrs::default(),
            "an emptied set costs one pointer again"
        );
    }
}
