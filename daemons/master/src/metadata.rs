//! Metadata dumps: `metadata.mfs` in DATA_PATH, written to a temporary file, fsynced and renamed
//! into place; the previous dump is kept as `metadata.mfs.1`.
//!
//! Layout: `MOOSEMD2`, cluster id (u64 BE), version (u64 BE), body length (u64 BE), the body
//! (postcard-encoded [`Meta`]), CRC32 of the body (u32 BE), `MOOSEEOF`.
//!
//! `MOOSEMD1` dumps (before trash times, the trash and quotas) are still read: see [`v1`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::namespace::Meta;

pub const DUMP_FILE: &str = "metadata.mfs";
pub const PREVIOUS_DUMP_FILE: &str = "metadata.mfs.1";
/// The dump a metalogger keeps (same format).
pub const METALOGGER_DUMP_FILE: &str = "metadata_ml.mfs";
const SIGNATURE: &[u8; 8] = b"MOOSEMD2";
/// Dumps written before the trash existed.
const SIGNATURE_V1: &[u8; 8] = b"MOOSEMD1";
const EOF_MARK: &[u8; 8] = b"MOOSEEOF";

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot encode the metadata ({0}); the last dump stays as it was: report this as a bug"
    )]
    Encode(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is stock MooseFS metadata ({sig}), which moose-master does not read; \
         give this master an empty DATA_PATH"
    )]
    StockMooseFs { path: PathBuf, sig: String },
    #[error("{path} is not a moose-master metadata file (bad signature); move it away or use another DATA_PATH")]
    NotOurs { path: PathBuf },
    #[error("{path} is damaged ({what}); start from {previous} or a metalogger's copy")]
    Damaged {
        path: PathBuf,
        what: String,
        previous: String,
    },
}

/// Encodes a dump in memory (done under the state lock; the slow write happens elsewhere).
/// A body that cannot be encoded is an error, never an empty dump written over a good one.
pub fn encode(meta: &Meta) -> Result<Vec<u8>, MetadataError> {
    let body = postcard::to_allocvec(meta).map_err(|e| MetadataError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(body.len() + 44);
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&meta.cluster_id.to_be_bytes());
    out.extend_from_slice(&meta.version.to_be_bytes());
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(EOF_MARK);
    Ok(out)
}

/// Writes an encoded dump atomically into `dir`.
pub fn write(dir: &Path, bytes: &[u8]) -> Result<(), MetadataError> {
    let tmp = dir.join(format!("{DUMP_FILE}.tmp"));
    let dst = dir.join(DUMP_FILE);
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MetadataError::Write { path, source }
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(werr(&tmp))?;
    f.write_all(bytes).map_err(werr(&tmp))?;
    f.sync_all().map_err(werr(&tmp))?;
    drop(f);
    let prev = dir.join(PREVIOUS_DUMP_FILE);
    if dst.exists() {
        let _ = std::fs::remove_file(&prev);
        std::fs::hard_link(&dst, &prev).map_err(werr(&prev))?;
    }
    std::fs::rename(&tmp, &dst).map_err(werr(&dst))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(werr(dir))?;
    Ok(())
}

/// Checks the header; returns whether the dump is of the older (v1) layout.
fn check_header(path: &Path, bytes: &[u8]) -> Result<bool, MetadataError> {
    if bytes.len() >= 4 && &bytes[..4] == b"MFSM" {
        return Err(MetadataError::StockMooseFs {
            path: path.to_path_buf(),
            sig: String::from_utf8_lossy(&bytes[..bytes.len().min(8)]).into_owned(),
        });
    }
    if bytes.len() < 44 || (&bytes[..8] != SIGNATURE && &bytes[..8] != SIGNATURE_V1) {
        return Err(MetadataError::NotOurs {
            path: path.to_path_buf(),
        });
    }
    Ok(&bytes[..8] == SIGNATURE_V1)
}

/// Reads and verifies a dump.
pub fn load(path: &Path) -> Result<Meta, MetadataError> {
    let bytes = std::fs::read(path).map_err(|source| MetadataError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let old_layout = check_header(path, &bytes)?;
    let damaged = |what: &str| MetadataError::Damaged {
        path: path.to_path_buf(),
        what: what.to_string(),
        previous: PREVIOUS_DUMP_FILE.to_string(),
    };
    let len = u64::from_be_bytes(bytes[24..32].try_into().unwrap_or([0; 8]));
    let body_end = 32usize
        .checked_add(usize::try_from(len).map_err(|_| damaged("bad length"))?)
        .ok_or_else(|| damaged("bad length"))?;
    if bytes.len() != body_end + 12 {
        return Err(damaged("truncated or extended"));
    }
    if &bytes[body_end + 4..] != EOF_MARK {
        return Err(damaged("no end marker"));
    }
    let body = &bytes[32..body_end];
    let crc = u32::from_be_bytes(bytes[body_end..body_end + 4].try_into().unwrap_or([0; 4]));
    if crc32fast::hash(body) != crc {
        return Err(damaged("checksum mismatch"));
    }
    let decoded = if old_layout {
        postcard::from_bytes::<v1::Meta>(body).map(v1::Meta::upgrade)
    } else {
        postcard::from_bytes(body)
    };
    decoded.map_err(|e| damaged(&format!("cannot decode: {e}")))
}

/// The layout of `MOOSEMD1` dumps: no trash time per node, no trash. Every node is read with
/// trash time 0, which is how that version behaved: the changelogs written after such a dump
/// then replay exactly as they did (an unlink frees the file), and the admin turns the trash
/// on with `settrashtime`.
mod v1 {
    use std::collections::{BTreeMap, HashMap};

    use moose_proto::{FileKind, Inode, Timespec};
    use serde::Deserialize;

    use crate::namespace::{self, ChunkMeta, NodeData, Xattrs};

    #[derive(Deserialize)]
    pub struct Node {
        kind: FileKind,
        mode: u16,
        uid: u32,
        gid: u32,
        atime: Timespec,
        mtime: Timespec,
        ctime: Timespec,
        nlink: u32,
        goal: u8,
        xattrs: Xattrs,
        data: NodeData,
    }

    #[derive(Deserialize)]
    pub struct Meta {
        cluster_id: u64,
        version: u64,
        next_inode: Inode,
        next_chunk_id: u64,
        nodes: HashMap<Inode, Node>,
        chunks: HashMap<u64, ChunkMeta>,
    }

    impl Meta {
        pub fn upgrade(self) -> namespace::Meta {
            let nodes = self
                .nodes
                .into_iter()
                .map(|(i, n)| {
                    let node = namespace::Node {
                        kind: n.kind,
                        mode: n.mode,
                        uid: n.uid,
                        gid: n.gid,
                        atime: n.atime.into(),
                        mtime: n.mtime.into(),
                        ctime: n.ctime.into(),
                        nlink: n.nlink,
                        goal: n.goal,
                        trash_time: 0,
                        xattrs: n.xattrs,
                        data: n.data,
                    };
                    (i, node)
                })
                .collect();
            namespace::Meta {
                cluster_id: self.cluster_id,
                version: self.version,
                next_inode: self.next_inode,
                next_chunk_id: self.next_chunk_id,
                nodes,
                chunks: self.chunks,
                trash: BTreeMap::new(),
                quotas: Default::default(),
                quota_since: BTreeMap::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moose_proto::Timespec;

    #[test]
    fn round_trip_and_damage_detection() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = Meta::fresh(77, Timespec::now(), 2);
        meta.version = 5;
        write(dir.path(), &encode(&meta).unwrap()).unwrap();
        let path = dir.path().join(DUMP_FILE);
        let back = load(&path).unwrap();
        assert_eq!(back.cluster_id, 77);
        assert_eq!(back.version, 5);
        assert!(back.quotas.is_empty());
        let mut with_quota = meta.clone();
        let q = moose_proto::msg::QuotaLimits {
            grace: Some(9),
            ..Default::default()
        };
        with_quota.quotas.insert(1, q);
        write(dir.path(), &encode(&with_quota).unwrap()).unwrap();
        assert_eq!(load(&path).unwrap().quotas.get(&1), Some(&q));
        write(dir.path(), &encode(&meta).unwrap()).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(load(&path), Err(MetadataError::Damaged { .. })));
        std::fs::write(&path, b"MFSM NEW").unwrap();
        assert!(matches!(
            load(&path),
            Err(MetadataError::StockMooseFs { .. })
        ));
    }

    /// Folders with removed entries, files with chunks, a symlink, attributes and times before
    /// 1970 come back from a dump as they were, listing order (edge ids) included.
    #[test]
    fn the_compact_layout_round_trips_through_a_dump() {
        use crate::ops::Op;
        use crate::state::State;
        use moose_proto::{FileKind, ROOT_INODE};
        let t = |sec| Timespec { sec, nsec: 42 };
        let mut st = State::new(Meta::fresh(5, t(0), 1));
        let create = |name: &str, inode, kind| Op::Create {
            parent: ROOT_INODE,
            name: name.as_bytes().to_vec(),
            inode,
            kind,
            mode: 0o640,
            uid: 7,
            gid: 8,
            rdev: 0,
            time: t(-1_000_000),
        };
        for i in 0..200u64 {
            st.apply(&create(&format!("f{i}"), 10 + i, FileKind::File))
                .unwrap();
        }
        for i in (0..200u64).filter(|i| i % 3 != 0) {
            let op = Op::Unlink {
                parent: ROOT_INODE,
                name: format!("f{i}").into_bytes(),
                keep: false,
                time: t(5),
            };
            st.apply(&op).unwrap();
        }
        let ops = [
            Op::AddChunk {
                inode: 10,
                index: 0,
                chunk_id: 1,
                version: 3,
            },
            Op::AddChunk {
                inode: 13,
                index: 4,
                chunk_id: 2,
                version: 1,
            },
            Op::AddChunk {
                inode: 13,
                index: 9,
                chunk_id: 3,
                version: 1,
            },
            Op::Symlink {
                parent: ROOT_INODE,
                name: b"link".to_vec(),
                inode: 500,
                target: b"f0".to_vec(),
                uid: 0,
                gid: 0,
                time: t(6),
            },
            Op::SetXattr {
                inode: 16,
                name: b"user.k".to_vec(),
                value: b"v".to_vec(),
                time: t(7),
            },
        ];
        for op in &ops {
            st.apply(op).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &encode(&st.meta).unwrap()).unwrap();
        let back = State::new(load(&dir.path().join(DUMP_FILE)).unwrap());
        let listing = |st: &State| -> Vec<(u64, Vec<u8>, moose_proto::Attr)> {
            st.dir(ROOT_INODE)
                .unwrap()
                .entries_after(0)
                .map(|(id, n, c)| (id, n.to_vec(), st.node(c).unwrap().attr(c)))
                .collect()
        };
        assert_eq!(listing(&back), listing(&st));
        assert_eq!(listing(&st).len(), 68);
        assert_eq!(back.meta.nodes.len(), st.meta.nodes.len());
        let chunks = |st: &State, i| match &st.node(i).unwrap().data {
            crate::namespace::NodeData::File { chunks, .. } => chunks.iter().collect::<Vec<_>>(),
            _ => panic!("inode {i} is not a file"),
        };
        assert_eq!(chunks(&back, 10), vec![(0, 1)]);
        assert_eq!(chunks(&back, 13), vec![(4, 2), (9, 3)]);
        assert_eq!(
            back.node(16).unwrap().xattrs.get(b"user.k"),
            Some(&b"v".to_vec())
        );
        assert_eq!(back.node(10).unwrap().attr(10).mtime, t(-1_000_000));
        assert_eq!(back.tree.totals(ROOT_INODE), st.tree.totals(ROOT_INODE));
    }

    /// A dump as the code before the trash wrote it still loads, with trash time 0 and no quotas.
    #[test]
    fn reads_dumps_of_the_older_layout() {
        use moose_proto::FileKind;
        use std::collections::HashMap;

        #[derive(Serialize)]
        struct OldNode {
            kind: FileKind,
            mode: u16,
            uid: u32,
            gid: u32,
            atime: Timespec,
            mtime: Timespec,
            ctime: Timespec,
            nlink: u32,
            goal: u8,
            xattrs: crate::namespace::Xattrs,
            data: crate::namespace::NodeData,
        }
        #[derive(Serialize)]
        struct OldMeta {
            cluster_id: u64,
            version: u64,
            next_inode: u64,
            next_chunk_id: u64,
            nodes: HashMap<u64, OldNode>,
            chunks: HashMap<u64, crate::namespace::ChunkMeta>,
        }
        use serde::Serialize;
        let now = Timespec::now();
        let mut nodes = HashMap::new();
        nodes.insert(
            1,
            OldNode {
                kind: FileKind::Dir,
                mode: 0o777,
                uid: 0,
                gid: 0,
                atime: now,
                mtime: now,
                ctime: now,
                nlink: 2,
                goal: 2,
                xattrs: Default::default(),
                data: crate::namespace::NodeData::Dir(Box::new(crate::namespace::Dir::new(1))),
            },
        );
        let old = OldMeta {
            cluster_id: 9,
            version: 3,
            next_inode: 2,
            next_chunk_id: 1,
            nodes,
            chunks: HashMap::new(),
        };
        let body = postcard::to_allocvec(&old).unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(SIGNATURE_V1);
        bytes.extend_from_slice(&9u64.to_be_bytes());
        bytes.extend_from_slice(&3u64.to_be_bytes());
        bytes.extend_from_slice(&(body.len() as u64).to_be_bytes());
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        bytes.extend_from_slice(EOF_MARK);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DUMP_FILE);
        std::fs::write(&path, &bytes).unwrap();
        let meta = load(&path).unwrap();
        assert_eq!(meta.version, 3);
        assert_eq!(meta.nodes[&1].goal, 2);
        assert_eq!(meta.nodes[&1].trash_time, 0);
        assert!(meta.trash.is_empty());
    }
}
