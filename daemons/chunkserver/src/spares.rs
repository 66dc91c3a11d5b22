//! Empty files made ahead on each disk, for new chunks to take.
//!
//! A new chunk's file is made while a writer's chain waits for it. Making a file is the dear
//! part: on an ext4 that saw many deletions it took 300–600 µs here (the inode search skips
//! every inode freed in the last 30 s, looking each one up), where opening and renaming a file
//! made earlier takes about 30 µs. So each disk keeps a folder of empty files, topped up by
//! a thread of the store (see [`crate::store`]), and a new chunk takes one, writes its header
//! and renames it to its final name.
//!
//! The folder is `DISK/.spares`, files `spare_<n>`. Only files no larger than a header are
//! ever left there (a spare gets data only after its rename), so anything larger found at
//! start is a leftover and is removed. A chunk's folder is synced together with the spare
//! folder, so that a crash cannot leave a chunk's file in both. The folder can be deleted
//! while the chunkserver is stopped.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::chunkfile::DATA_OFFSET;

/// The folder of a disk's spare files.
pub const FOLDER: &str = ".spares";
/// Spare files a disk keeps ready.
const TARGET: usize = 256;
/// Below this many, more are made.
const LOW: usize = 128;

#[derive(Debug)]
pub struct Spares {
    dir: PathBuf,
    ready: Mutex<Vec<PathBuf>>,
    next: AtomicU64,
    /// A fill is queued or running.
    filling: AtomicBool,
    /// The last fill failed (logged once until one works again).
    failing: AtomicBool,
}

impl Spares {
    /// The spares of the disk at `disk`: the files its folder holds already (leftovers larger
    /// than a header are removed). A folder that cannot be read gives no spares: new chunks
    /// are then made as files of their own.
    pub fn open(disk: &Path) -> Spares {
        let dir = disk.join(FOLDER);
        let mut ready = Vec::new();
        let mut last = 0;
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let path = entry.path();
                    let Some(n) = entry
                        .file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("spare_"))
                        .and_then(|n| n.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    last = last.max(n);
                    match entry.metadata() {
                        // A spare also named elsewhere (a chunk whose rename reached the disk
                        // before the spare folder did, as repaired by fsck) is no spare.
                        Ok(m) if m.is_file() && m.len() <= DATA_OFFSET && m.nlink() == 1 => {
                            ready.push(path)
                        }
                        Ok(m) if m.is_file() => {
                            if let Err(e) = std::fs::remove_file(&path) {
                                tracing::warn!("cannot remove {}: {e}", path.display());
                            }
                        }
                        _ => {}
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                "cannot read {}: {e}; new chunks on this disk are made as files of their own",
                dir.display()
            ),
        }
        Spares {
            dir,
            ready: Mutex::new(ready),
            next: AtomicU64::new(last + 1),
            filling: AtomicBool::new(false),
            failing: AtomicBool::new(false),
        }
    }

    /// A spare file to build a new chunk in, if one is ready. It holds at most a header.
    pub fn take(&self) -> Option<PathBuf> {
        self.ready.lock().pop()
    }

    /// Makes the spare folder's entries durable: called with the sync of a chunk's folder, so
    /// that a chunk renamed out of the folder is never found there again after a crash.
    pub fn sync_folder(&self) -> io::Result<()> {
        match std::fs::File::open(&self.dir) {
            Ok(dir) => dir.sync_all(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// How many spares are ready.
    pub fn count(&self) -> usize {
        self.ready.lock().len()
    }

    /// True when the disk runs low on spares and no fill is queued yet: the caller is to queue
    /// one ([`Spares::fill`] then clears the claim).
    pub fn claim_fill(&self) -> bool {
        self.count() < LOW && !self.filling.swap(true, Ordering::AcqRel)
    }

    /// Makes spare files until the disk has its target; returns how many it made. Blocks on
    /// the disk: run it on a thread of its own. A failure is logged once, until a fill works
    /// again; new chunks are meanwhile made as files of their own.
    pub fn fill(&self) -> usize {
        let made = match self.make_up_to(TARGET) {
            Ok(made) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("spare chunk files are made in {} again", self.dir.display());
                }
                made
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "cannot make spare chunk files in {}: {e}; new chunks on this disk are \
                         made as files of their own, which is slower",
                        self.dir.display()
                    );
                }
                0
            }
        };
        self.filling.store(false, Ordering::Release);
        made
    }

    fn make_up_to(&self, target: usize) -> io::Result<usize> {
        std::fs::create_dir_all(&self.dir)?;
        let mut made = 0;
        while self.count() < target {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let path = self.dir.join(format!("spare_{n}"));
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            self.ready.lock().push(path);
            made += 1;
        }
        Ok(made)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_makes_the_target_and_takes_hand_out_each_file_once() {
        let disk = tempfile::tempdir().unwrap();
        let spares = Spares::open(disk.path());
        assert_eq!(spares.count(), 0);
        assert!(spares.claim_fill());
        assert!(
            !spares.claim_fill(),
            "a second fill is claimed while one is queued"
        );
        assert_eq!(spares.fill(), TARGET);
        assert!(!spares.claim_fill(), "a full disk claims a fill");
        let mut taken = std::collections::HashSet::new();
        for _ in 0..TARGET - LOW + 1 {
            let path = spares.take().unwrap();
            assert!(path.is_file(), "{} is no file", path.display());
            assert!(taken.insert(path), "a spare was handed out twice");
        }
        assert!(
            spares.claim_fill(),
            "a disk below its low mark claims no fill"
        );
        assert_eq!(spares.fill(), TARGET - LOW + 1);
    }

    #[test]
    fn leftovers_are_kept_when_empty_and_removed_when_they_hold_data() {
        let disk = tempfile::tempdir().unwrap();
        let dir = disk.path().join(FOLDER);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("spare_7"), [0u8; DATA_OFFSET as usize]).unwrap();
        std::fs::write(dir.join("spare_9"), vec![1u8; DATA_OFFSET as usize + 1]).unwrap();
        std::fs::write(dir.join("notes"), b"an admin's file").unwrap();
        // A chunk's file whose old name in the spare folder came back after a crash.
        std::fs::create_dir(disk.path().join("AB")).unwrap();
        let chunk = disk.path().join("AB/chunk_00000000000000AB_00000001.mfs");
        std::fs::write(&chunk, [0u8; DATA_OFFSET as usize]).unwrap();
        std::fs::hard_link(&chunk, dir.join("spare_8")).unwrap();
        let spares = Spares::open(disk.path());
        assert_eq!(spares.take(), Some(dir.join("spare_7")));
        assert_eq!(spares.take(), None);
        assert!(
            !dir.join("spare_9").exists(),
            "a spare holding data was kept"
        );
        assert!(
            !dir.join("spare_8").exists(),
            "a second name of a chunk was kept"
        );
        assert_eq!(std::fs::metadata(&chunk).unwrap().nlink(), 1);
        assert!(dir.join("notes").exists(), "another file was touched");
        // New spares are numbered after the leftovers.
        spares.make_up_to(1).unwrap();
        assert_eq!(spares.take(), Some(dir.join("spare_10")));
    }
}
