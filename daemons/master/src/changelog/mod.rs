//! The changelog: every metadata change is appended here before the request that made it is
//! answered (see [`writer`] for when it is synced).
//!
//! Files `changelog.N.mfs` (0 = current) start with `MOOSECL1` and the cluster id (u64 BE),
//! then records `len:u32 | crc32:u32 | postcard(Record)`. A dump rotates the files, so a
//! dump at version V plus the changelogs after it rebuild the state.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ops::Op;

mod writer;
pub use writer::{Changelog, SyncPolicy};

use moose_proto::files::{
    changelog_header, CHANGELOG_HEADER_LEN as HEADER_LEN, CHANGELOG_SIGNATURE as SIGNATURE,
};
/// Largest record accepted when reading (a record is one op).
const MAX_RECORD: u32 = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: u64,
    pub op: Op,
}

pub fn file_name(n: u32) -> String {
    format!("changelog.{n}.mfs")
}

#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write changelog {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a moose-master changelog (bad signature)")]
    NotOurs { path: PathBuf },
    #[error("{path} belongs to cluster {found:016X}, but the metadata belongs to {expected:016X}; this DATA_PATH mixes two clusters")]
    OtherCluster {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("{path} is damaged at byte {offset} ({what})")]
    Damaged {
        path: PathBuf,
        offset: u64,
        what: String,
    },
}

/// What reading one changelog file found.
pub struct ReadResult {
    pub cluster_id: u64,
    pub records: Vec<Record>,
    /// A torn last record (crash during append) was found at this offset.
    pub torn_at: Option<u64>,
}

/// Reads every record of one changelog file. Damage in the middle is an error; an incomplete
/// last record is reported as torn (it was never acknowledged).
pub fn read_file(path: &Path) -> Result<ReadResult, ChangelogError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| ChangelogError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    parse_file(path, &bytes)
}

/// [`read_file`] of bytes already read; `path` names the file in errors.
pub fn parse_file(path: &Path, bytes: &[u8]) -> Result<ReadResult, ChangelogError> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != SIGNATURE {
        return Err(ChangelogError::NotOurs {
            path: path.to_path_buf(),
        });
    }
    let cluster_id = u64::from_be_bytes(bytes[8..16].try_into().unwrap_or([0; 8]));
    let mut records = Vec::new();
    let mut pos = HEADER_LEN;
    let mut torn_at = None;
    while pos < bytes.len() {
        let damaged = |what: &str| ChangelogError::Damaged {
            path: path.to_path_buf(),
            offset: pos as u64,
            what: what.to_string(),
        };
        // A crash can leave the end of the file zero-filled (the size grew before the data
        // reached the disk): that is a torn write too, never acknowledged.
        if bytes.len() - pos < 8 || bytes[pos..].iter().all(|b| *b == 0) {
            torn_at = Some(pos as u64);
            break;
        }
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap_or([0; 4]));
        let crc = u32::from_be_bytes(bytes[pos + 4..pos + 8].try_into().unwrap_or([0; 4]));
        if len > MAX_RECORD {
            return Err(damaged("record length out of range"));
        }
        let end = pos + 8 + len as usize;
        if end > bytes.len() {
            torn_at = Some(pos as u64);
            break;
        }
        let body = &bytes[pos + 8..end];
        if crc32fast::hash(body) != crc {
            if end == bytes.len() {
                torn_at = Some(pos as u64);
                break;
            }
            return Err(damaged("checksum mismatch"));
        }
        let rec: Record = postcard::from_bytes(body).map_err(|e| damaged(&e.to_string()))?;
        records.push(rec);
        pos = end;
    }
    Ok(ReadResult {
        cluster_id,
        records,
        torn_at,
    })
}

/// Encodes one record as it is stored (also what metaloggers receive).
pub fn encode_record(rec: &Record) -> Vec<u8> {
    let body = postcard::to_allocvec(rec).unwrap_or_default();
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The master's own `changelog.N.mfs` files in `dir` (not a metalogger's), with N.
fn own_files(dir: &Path) -> Vec<(u32, PathBuf)> {
    list_files(dir)
        .into_iter()
        .filter(|(n, p)| p.file_name().and_then(|f| f.to_str()) == Some(file_name(*n).as_str()))
        .collect()
}

/// Every changelog file in `dir` (the master's `changelog.N.mfs` and a metalogger's
/// `changelog_ml.N.mfs`), with N.
pub fn list_files(dir: &Path) -> Vec<(u32, PathBuf)> {
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name
                .strip_prefix("changelog_ml.")
                .or_else(|| name.strip_prefix("changelog."))?;
            let n: u32 = rest.strip_suffix(".mfs")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    files.sort();
    files
}

/// Cuts a torn record off the end of a changelog file.
pub fn truncate_torn(path: &Path, at: u64) -> Result<(), ChangelogError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(at))
        .map_err(|source| ChangelogError::Write {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use moose_proto::Timespec;

    fn rec(v: u64) -> Record {
        Record {
            version: v,
            op: Op::WriteEnd {
                inode: v,
                length: v * 10,
                time: Timespec::default(),
            },
        }
    }

    /// Changelogs outlive releases: an op's tag is its place in [`Op`], so a new op goes
    /// last. These bytes are records as earlier releases wrote them.
    #[test]
    fn records_of_earlier_releases_decode_the_same() {
        let old: [(&[u8], Op); 3] = [
            (
                &[7, 19, 2, 0, 10, 11, 1],
                Op::CopyChunk {
                    inode: 2,
                    index: 0,
                    old: 10,
                    new: 11,
                    version: 1,
                },
            ),
            (
                &[7, 21, 5, 0],
                Op::QuotaClock {
                    inode: 5,
                    since: None,
                },
            ),
            (&[7, 22, 0xAC, 0x02], Op::ReserveInodes { upto: 300 }),
        ];
        for (bytes, op) in old {
            let rec: Record = postcard::from_bytes(bytes).unwrap();
            assert_eq!(rec, Record { version: 7, op });
        }
    }

    #[test]
    fn torn_tail_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(0));
        let mut bytes = SIGNATURE.to_vec();
        bytes.extend_from_slice(&1u64.to_be_bytes());
        bytes.extend_from_slice(&encode_record(&rec(1)));
        let good = bytes.len() as u64;
        let second = encode_record(&rec(2));
        bytes.extend_from_slice(&second[..second.len() - 2]);
        std::fs::write(&path, &bytes).unwrap();
        let r = read_file(&path).unwrap();
        assert_eq!(r.records, vec![rec(1)]);
        assert_eq!(r.torn_at, Some(good));
    }

    #[test]
    fn a_zero_filled_tail_is_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(0));
        let mut bytes = SIGNATURE.to_vec();
        bytes.extend_from_slice(&1u64.to_be_bytes());
        bytes.extend_from_slice(&encode_record(&rec(1)));
        let good = bytes.len() as u64;
        bytes.extend_from_slice(&[0u8; 4096]);
        std::fs::write(&path, &bytes).unwrap();
        let r = read_file(&path).unwrap();
        assert_eq!(r.records, vec![rec(1)]);
        assert_eq!(r.torn_at, Some(good));
    }

    /// Changelog files: a valid header and records of many kinds, mutated; every record that
    /// decodes is replayed onto a file system, which must refuse what does not fit, never
    /// panic. `MOOSE_FUZZ_ITERATIONS` makes a long run.
    struct ChangelogFiles;

    impl moose_fuzz::Target for ChangelogFiles {
        fn name(&self) -> &'static str {
            "changelog"
        }

        fn seeds(&self) -> Vec<Vec<u8>> {
            let t = Timespec { sec: 1, nsec: 2 };
            let ops = [
                Op::SetChunkVersion {
                    chunk_id: 1,
                    version: 2,
                },
                Op::WriteEnd {
                    inode: 1,
                    length: 70_000_000,
                    time: t,
                },
                Op::AddChunk {
                    inode: 1,
                    index: 0,
                    chunk_id: 1,
                    version: 1,
                },
                Op::SetLength {
                    inode: 1,
                    length: 5,
                    trunc_chunk: Some((1, 3)),
                    time: t,
                },
            ];
            let mut file = SIGNATURE.to_vec();
            file.extend_from_slice(&7u64.to_be_bytes());
            let mut seeds = vec![file.clone()];
            for (i, op) in ops.into_iter().enumerate() {
                file.extend_from_slice(&encode_record(&Record {
                    version: i as u64 + 1,
                    op,
                }));
                seeds.push(file.clone());
            }
            seeds
        }

        /// Recomputes each record's CRC over its (mutated) body.
        fn fixup(&self, input: &mut Vec<u8>) {
            let mut pos = HEADER_LEN;
            while pos + 8 <= input.len() {
                let len = u32::from_be_bytes(input[pos..pos + 4].try_into().unwrap_or([0; 4]));
                let end = pos + 8 + len as usize;
                if end > input.len() {
                    break;
                }
                let crc = crc32fast::hash(&input[pos + 8..end]);
                input[pos + 4..pos + 8].copy_from_slice(&crc.to_be_bytes());
                pos = end;
            }
        }

        fn run(&self, input: &[u8]) {
            let Ok(read) = parse_file(Path::new("changelog.0.mfs"), input) else {
                return;
            };
            let mut state = crate::state::State::new(crate::namespace::Meta::fresh(
                read.cluster_id,
                Timespec::default(),
                2,
            ));
            for rec in &read.records {
                let _ = state.apply(&rec.op);
            }
        }
    }

    #[test]
    fn changelog_files_survive_a_structure_aware_run() {
        let iterations = std::env::var("MOOSE_FUZZ_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5_000);
        if let Err(finding) = moose_fuzz::fuzz(&ChangelogFiles, 20261204, iterations) {
            panic!("{finding}");
        }
    }

    proptest::proptest! {
        #[test]
        fn reader_never_panics(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(file_name(0));
            let mut bytes = SIGNATURE.to_vec();
            bytes.extend_from_slice(&1u64.to_be_bytes());
            bytes.extend_from_slice(&tail);
            std::fs::write(&path, &bytes).unwrap();
            let _ = read_file(&path);
        }
    }
}
