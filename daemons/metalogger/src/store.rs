//! The metalogger's files: `metadata_ml.mfs` (the master's dump, verbatim) and
//! `changelog_ml.N.mfs` (every change since, in the master's changelog format). Together they
//! rebuild a master. File work runs on a blocking thread, never on the async reactor.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;

pub const DUMP_FILE: &str = "metadata_ml.mfs";

fn changelog(n: u32) -> String {
    format!("changelog_ml.{n}.mfs")
}

pub struct Store {
    dir: PathBuf,
    back_logs: u32,
    current: Arc<Mutex<Option<File>>>,
}

impl Store {
    pub fn new(dir: PathBuf, back_logs: u32) -> Self {
        Store {
            dir,
            back_logs,
            current: Arc::new(Mutex::new(None)),
        }
    }

    /// Saves a new dump and starts a new changelog after it (older ones are rotated). A dump
    /// of another file system than the one held here is refused and the files are kept: a
    /// master started by mistake on an empty DATA_PATH must not wipe the good copy.
    pub async fn save_dump(&self, dump: Vec<u8>, cluster_id: u64) -> anyhow::Result<()> {
        let (dir, back_logs, current) = (self.dir.clone(), self.back_logs, self.current.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            if let Some(held) = held_cluster_id(&dir).filter(|held| *held != cluster_id) {
                return Err(OtherCluster {
                    dir: dir.clone(),
                    held,
                    offered: cluster_id,
                }
                .into());
            }
            let tmp = dir.join(format!("{DUMP_FILE}.tmp"));
            let dst = dir.join(DUMP_FILE);
            let mut f =
                File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
            f.write_all(&dump)
                .and_then(|_| f.sync_all())
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            let mut cur = current.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = cur.take() {
                old.sync_data().context("cannot sync the changelog")?;
            }
            rotate(&dir, back_logs)?;
            std::fs::rename(&tmp, &dst)
                .with_context(|| format!("cannot rename to {}", dst.display()))?;
            let path = dir.join(changelog(0));
            let mut log = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            log.write_all(&moose_proto::files::changelog_header(cluster_id))?;
            log.sync_all()?;
            File::open(&dir).and_then(|d| d.sync_all())?;
            *cur = Some(log);
            Ok(())
        })
        .await?
    }

    /// Appends encoded changelog records and makes them durable.
    pub async fn append(&self, records: Vec<Vec<u8>>) -> anyhow::Result<()> {
        let current = self.current.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut cur = current.lock().unwrap_or_else(|p| p.into_inner());
            let f = cur.as_mut().context("no changelog open")?;
            let mut buf = Vec::with_capacity(records.iter().map(Vec::len).sum());
            for r in &records {
                buf.extend_from_slice(r);
            }
            f.write_all(&buf)
                .context("cannot append to changelog_ml.0.mfs")?;
            f.sync_data().context("cannot sync changelog_ml.0.mfs")?;
            Ok(())
        })
        .await?
    }

    pub async fn close(&self) {
        let current = self.current.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(f) = current.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = f.sync_all();
            }
        })
        .await;
    }
}

/// The master offered a dump of another file system than the one this metalogger holds.
#[derive(Debug, thiserror::Error)]
#[error(
    "the master serves another file system (cluster id {offered:016X}) than the one whose \
     metadata this metalogger keeps in {} (cluster id {held:016X}); the files are kept. If the \
     master lost its metadata, restore it from these files (moose-master -c CFG restore {}); \
     if the new file system is intended, move metadata_ml.mfs and changelog_ml.*.mfs away",
    .dir.display(),
    .dir.display()
)]
pub struct OtherCluster {
    pub dir: PathBuf,
    pub held: u64,
    pub offered: u64,
}

/// The cluster id in the header of the newest changelog_ml file in `dir`, if any.
fn held_cluster_id(dir: &Path) -> Option<u64> {
    use moose_proto::files::{CHANGELOG_HEADER_LEN, CHANGELOG_SIGNATURE};
    use std::io::Read;
    (0..4u32).find_map(|n| {
        let mut header = [0u8; CHANGELOG_HEADER_LEN];
        File::open(dir.join(changelog(n)))
            .and_then(|mut f| f.read_exact(&mut header))
            .ok()?;
        (&header[..8] == CHANGELOG_SIGNATURE)
            .then(|| u64::from_be_bytes(header[8..].try_into().unwrap_or([0; 8])))
    })
}

/// changelog_ml.N.mfs → N+1, dropping the oldest beyond `back_logs`.
fn rotate(dir: &Path, back_logs: u32) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(dir.join(changelog(back_logs)));
    for n in (0..back_logs).rev() {
        let from = dir.join(changelog(n));
        if from.exists() {
            std::fs::rename(&from, dir.join(changelog(n + 1)))
                .with_context(|| format!("cannot rotate {}", from.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dump_then_changes_then_new_dump_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().to_path_buf(), 3);
        store.save_dump(b"DUMP1".to_vec(), 7).await.unwrap();
        store
            .append(vec![b"aa".to_vec(), b"bb".to_vec()])
            .await
            .unwrap();
        store.save_dump(b"DUMP2".to_vec(), 7).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join(DUMP_FILE)).unwrap(), b"DUMP2");
        let old = std::fs::read(dir.path().join(changelog(1))).unwrap();
        assert_eq!(&old[16..], b"aabb");
        assert_eq!(&old[..8], moose_proto::files::CHANGELOG_SIGNATURE);
        let cur = std::fs::read(dir.path().join(changelog(0))).unwrap();
        assert_eq!(cur.len(), 16);
    }

    #[tokio::test]
    async fn a_dump_of_another_file_system_is_refused_and_the_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().to_path_buf(), 3);
        store.save_dump(b"GOOD".to_vec(), 7).await.unwrap();
        store.append(vec![b"cc".to_vec()]).await.unwrap();
        let err = store.save_dump(b"EMPTY".to_vec(), 8).await.unwrap_err();
        assert!(err.downcast_ref::<OtherCluster>().is_some(), "{err:#}");
        assert!(err.to_string().contains("another file system"), "{err:#}");
        assert_eq!(std::fs::read(dir.path().join(DUMP_FILE)).unwrap(), b"GOOD");
        let log = std::fs::read(dir.path().join(changelog(0))).unwrap();
        assert_eq!(&log[16..], b"cc");
    }
}
