//! The set of disks the hdd file names (the file's syntax: moose-formats' `hdd`).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use std::time::{Duration, Instant};

use moose_common::lockfile::{self, LockError, Lockfile};
use moose_common::user::{self, RunAs};
use moose_proto::{DiskReport, CHUNK_SIZE};

use crate::chunkfile::DATA_OFFSET;
use crate::identity;
use crate::spares::Spares;

pub use moose_formats::hdd::{load, parse, Amount, HddEntry, HddError, HddFile, SpaceLimit};

/// Total and available bytes a disk reports, from the file system's size and free space, the
/// bytes already held by chunks and the disk's space option.
pub fn compute_space(
    limit: SpaceLimit,
    fs_total: u64,
    fs_avail: u64,
    used: u64,
    leave_default: u64,
) -> (u64, u64) {
    match limit {
        SpaceLimit::Default => (
            fs_total.saturating_sub(leave_default),
            fs_avail.saturating_sub(leave_default),
        ),
        SpaceLimit::UseAtMost(a) => {
            let avail = a
                .of(fs_total)
                .saturating_sub(used)
                .min(fs_avail.saturating_sub(leave_default));
            (used.saturating_add(avail), avail)
        }
        SpaceLimit::KeepFree(a) => {
            let avail = fs_avail.saturating_sub(a.of(fs_total));
            (used.saturating_add(avail), avail)
        }
    }
}

/// Room a disk needs for a new chunk: a chunk file at its largest.
pub const CHUNK_ROOM: u64 = DATA_OFFSET + CHUNK_SIZE;

/// How many disk errors within how long mark a disk damaged (HDD_ERROR_TOLERANCE_COUNT and
/// HDD_ERROR_TOLERANCE_PERIOD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tolerance {
    pub count: u32,
    pub period: Duration,
}

impl Default for Tolerance {
    fn default() -> Tolerance {
        Tolerance {
            count: 2,
            period: Duration::from_secs(600),
        }
    }
}

/// One data folder in use: locked, with its cluster id and usage counters.
#[derive(Debug)]
pub struct Disk {
    pub path: PathBuf,
    _lock: Lockfile,
    marked: AtomicBool,
    limit: Mutex<SpaceLimit>,
    metaid: Mutex<Option<u64>>,
    used: AtomicU64,
    chunks: AtomicU64,
    errors: AtomicU64,
    tolerance: Tolerance,
    /// Times of the latest errors (at most `tolerance.count`).
    recent_errors: Mutex<VecDeque<Instant>>,
    /// Too many errors: no new chunks until the chunkserver restarts.
    damaged: AtomicBool,
    /// Empty files ready to become new chunks.
    pub spares: Spares,
}

impl Disk {
    /// Checks the folder is writable by us, takes its `.lock` and reads its `.metaid`.
    pub fn open(entry: &HddEntry, run_as: &RunAs, tolerance: Tolerance) -> Result<Disk, String> {
        user::check_writable(&entry.path, "hdd folder", run_as)?;
        let lock = lockfile::acquire(&entry.path.join(".lock"), "moose-chunkserver").map_err(
            |e| match e {
                LockError::Held { pid, path, .. } => format!(
                    "hdd folder {} is in use by another chunkserver (pid {pid}, lockfile {}); \
                     every chunkserver needs its own folders",
                    entry.path.display(),
                    path.display()
                ),
                other => format!("hdd folder {}: {other}", entry.path.display()),
            },
        )?;
        let metaid = identity::read_metaid(&entry.path)?;
        Ok(Disk {
            path: entry.path.clone(),
            _lock: lock,
            marked: AtomicBool::new(entry.marked_for_removal),
            limit: Mutex::new(entry.limit),
            metaid: Mutex::new(metaid),
            used: AtomicU64::new(0),
            chunks: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            tolerance,
            recent_errors: Mutex::new(VecDeque::new()),
            damaged: AtomicBool::new(false),
            spares: Spares::open(&entry.path),
        })
    }

    /// Applies a re-read hdd line (reload): the removal mark and the space option.
    pub fn apply(&self, entry: &HddEntry) {
        let was = self
            .marked
            .swap(entry.marked_for_removal, Ordering::Relaxed);
        if was != entry.marked_for_removal {
            if entry.marked_for_removal {
                tracing::info!(
                    "hdd folder {} is now marked for removal: it keeps serving reads and gets no \
                     new chunks",
                    self.path.display()
                );
            } else {
                tracing::info!(
                    "hdd folder {} is no longer marked for removal",
                    self.path.display()
                );
            }
        }
        let mut limit = self.limit.lock();
        if *limit != entry.limit {
            tracing::info!(
                "hdd folder {}: space option changed from {:?} to {:?}",
                self.path.display(),
                *limit,
                entry.limit
            );
            *limit = entry.limit;
        }
    }

    pub fn marked_for_removal(&self) -> bool {
        self.marked.load(Ordering::Relaxed)
    }

    pub fn metaid(&self) -> Option<u64> {
        *self.metaid.lock()
    }

    /// Records the cluster id on the disk if it has none yet.
    fn bind(&self, cluster_id: u64) -> Result<(), String> {
        let mut metaid = self.metaid.lock();
        match *metaid {
            Some(id) if id == cluster_id => Ok(()),
            Some(id) => Err(self.foreign(id, cluster_id)),
            None => {
                identity::write_metaid(&self.path, cluster_id)?;
                *metaid = Some(cluster_id);
                Ok(())
            }
        }
    }

    fn foreign(&self, disk_cluster: u64, cluster_id: u64) -> String {
        format!(
            "hdd folder {} belongs to another cluster (its .metaid says {disk_cluster}, this \
             chunkserver's cluster is {cluster_id}); remove it from the hdd file, or, only if its \
             chunks are disposable, delete {} and its chunk folders",
            self.path.display(),
            self.path.join(identity::METAID_FILE).display()
        )
    }

    pub fn add_chunk(&self, len: u64) {
        self.chunks.fetch_add(1, Ordering::Relaxed);
        self.used.fetch_add(len, Ordering::Relaxed);
    }

    pub fn remove_chunk(&self, len: u64) {
        self.chunks.fetch_sub(1, Ordering::Relaxed);
        self.used.fetch_sub(len, Ordering::Relaxed);
    }

    /// A chunk file changed size from `old` to `new` bytes.
    pub fn resize(&self, old: u64, new: u64) {
        if new >= old {
            self.used.fetch_add(new - old, Ordering::Relaxed);
        } else {
            self.used.fetch_sub(old - new, Ordering::Relaxed);
        }
    }

    /// Counts a disk error; `tolerance.count` errors within `tolerance.period` mark the disk
    /// damaged.
    pub fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let limit = self.tolerance.count as usize;
        let mut recent = self.recent_errors.lock();
        while recent
            .front()
            .is_some_and(|&t| now.duration_since(t) > self.tolerance.period)
        {
            recent.pop_front();
        }
        recent.push_back(now);
        while recent.len() > limit {
            recent.pop_front();
        }
        if recent.len() >= limit && !self.damaged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "hdd folder {}: {} errors within {} s (HDD_ERROR_TOLERANCE_COUNT / \
                 HDD_ERROR_TOLERANCE_PERIOD); marked damaged: it keeps serving its chunks but \
                 gets no new ones until the chunkserver restarts; check the drive",
                self.path.display(),
                recent.len(),
                self.tolerance.period.as_secs()
            );
        }
    }

    /// Too many errors lately (see [`Disk::count_error`]).
    pub fn damaged(&self) -> bool {
        self.damaged.load(Ordering::Relaxed)
    }

    /// Whether new chunks may go to this disk at all (not marked for removal, not damaged).
    pub fn takes_new_chunks(&self) -> bool {
        !self.marked_for_removal() && !self.damaged()
    }

    /// (total, avail) for this disk, from statvfs and the space option.
    pub fn space(&self, leave_default: u64) -> std::io::Result<(u64, u64)> {
        let st = nix::sys::statvfs::statvfs(&self.path).map_err(std::io::Error::from)?;
        let frsize = st.fragment_size() as u64;
        let fs_total = (st.blocks() as u64).saturating_mul(frsize);
        let fs_avail = (st.blocks_available() as u64).saturating_mul(frsize);
        let limit = *self.limit.lock();
        Ok(compute_space(
            limit,
            fs_total,
            fs_avail,
            self.used.load(Ordering::Relaxed),
            leave_default,
        ))
    }

    /// The disk's line in the space report. A disk whose file system cannot be queried is
    /// reported damaged. `avail` is the room for new chunks: 0 when the disk takes none
    /// (marked for removal, damaged) or has less room than one chunk needs.
    pub fn report(&self, leave_default: u64) -> DiskReport {
        let ((total, avail), unqueryable) = match self.space(leave_default) {
            Ok(s) => (s, false),
            Err(e) => {
                tracing::debug!("hdd folder {}: statvfs failed: {e}", self.path.display());
                ((0, 0), true)
            }
        };
        let avail = if self.takes_new_chunks() && avail >= CHUNK_ROOM {
            avail
        } else {
            0
        };
        DiskReport {
            path: self.path.display().to_string(),
            total,
            avail,
            used: self.used.load(Ordering::Relaxed),
            chunks: self.chunks.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            marked_for_removal: self.marked_for_removal(),
            damaged: unqueryable || self.damaged(),
        }
    }
}

/// The disks in use. Disks are only ever added (on reload), never removed while running.
#[derive(Debug)]
pub struct DiskSet {
    disks: RwLock<Vec<Arc<Disk>>>,
    leave_default: u64,
    cluster: Mutex<Option<u64>>,
}

impl DiskSet {
    /// Builds the set; `known_cluster` comes from chunkserver.id. Disks that disagree with it
    /// or with each other about the cluster are refused.
    pub fn new(
        disks: Vec<Arc<Disk>>,
        leave_default: u64,
        known_cluster: Option<u64>,
    ) -> Result<DiskSet, String> {
        let mut cluster = known_cluster;
        for d in &disks {
            match (cluster, d.metaid()) {
                (Some(c), Some(m)) if c != m => return Err(d.foreign(m, c)),
                (None, Some(m)) => cluster = Some(m),
                _ => {}
            }
        }
        Ok(DiskSet {
            disks: RwLock::new(disks),
            leave_default,
            cluster: Mutex::new(cluster),
        })
    }

    pub fn all(&self) -> Vec<Arc<Disk>> {
        self.disks.read().clone()
    }

    /// The cluster this chunkserver's disks belong to, if known.
    pub fn cluster_id(&self) -> Option<u64> {
        *self.cluster.lock()
    }

    /// Adds a disk found on reload, checking (or recording) its cluster id.
    pub fn add(&self, disk: Arc<Disk>) -> Result<(), String> {
        let cluster = self.cluster_id();
        match (cluster, disk.metaid()) {
            (Some(c), _) => disk.bind(c)?,
            (None, Some(m)) => *self.cluster.lock() = Some(m),
            (None, None) => {}
        }
        self.disks.write().push(disk);
        Ok(())
    }

    /// Checks that no disk belongs to a cluster other than `cluster_id`.
    pub fn check_cluster(&self, cluster_id: u64) -> Result<(), String> {
        for d in self.disks.read().iter() {
            if let Some(m) = d.metaid() {
                if m != cluster_id {
                    return Err(d.foreign(m, cluster_id));
                }
            }
        }
        Ok(())
    }

    /// Binds every disk to `cluster_id` (writing missing `.metaid` files).
    pub fn bind_cluster(&self, cluster_id: u64) -> Result<(), String> {
        *self.cluster.lock() = Some(cluster_id);
        let problems: Vec<String> = self
            .all()
            .iter()
            .filter_map(|d| d.bind(cluster_id).err())
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// The disk for a new chunk: the one with the most available space among those neither
    /// marked for removal nor damaged; `None` if none has room for a whole chunk.
    pub fn choose_for_new(&self) -> Option<Arc<Disk>> {
        let mut best: Option<(u64, Arc<Disk>)> = None;
        for d in self.all() {
            if !d.takes_new_chunks() {
                continue;
            }
            let avail = match d.space(self.leave_default) {
                Ok((_, avail)) => avail,
                Err(e) => {
                    tracing::warn!(
                        "hdd folder {} cannot be queried ({e}); no new chunks go there",
                        d.path.display()
                    );
                    continue;
                }
            };
            if avail >= CHUNK_ROOM && best.as_ref().is_none_or(|(a, _)| avail > *a) {
                best = Some((avail, d));
            }
        }
        best.map(|(_, d)| d)
    }

    pub fn reports(&self) -> Vec<DiskReport> {
        self.all()
            .iter()
            .map(|d| d.report(self.leave_default))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn space_math() {
        const G: u64 = 1 << 30;
        // Default: statvfs minus the default reserve.
        assert_eq!(
            compute_space(SpaceLimit::Default, 100 * G, 40 * G, 5 * G, G),
            (99 * G, 39 * G)
        );
        // Use at most 10 GiB, 4 GiB already used.
        let at_most = SpaceLimit::UseAtMost(Amount::Bytes(10 * G));
        assert_eq!(
            compute_space(at_most, 100 * G, 40 * G, 4 * G, G),
            (10 * G, 6 * G)
        );
        // ... but never more than the file system has free.
        assert_eq!(
            compute_space(at_most, 100 * G, 3 * G, 4 * G, G),
            (6 * G, 2 * G)
        );
        // 50 % of 100 GiB.
        let half = SpaceLimit::UseAtMost(Amount::Percent(50.0));
        assert_eq!(compute_space(half, 100 * G, 90 * G, 0, G), (50 * G, 50 * G));
        // Keep 10 % free.
        let keep = SpaceLimit::KeepFree(Amount::Percent(10.0));
        assert_eq!(
            compute_space(keep, 100 * G, 40 * G, 2 * G, G),
            (32 * G, 30 * G)
        );
        // Keep more free than there is.
        let keep = SpaceLimit::KeepFree(Amount::Bytes(50 * G));
        assert_eq!(compute_space(keep, 100 * G, 40 * G, 2 * G, G), (2 * G, 0));
    }

    fn me() -> RunAs {
        RunAs {
            user: "me".into(),
            group: "me".into(),
            uid: nix::unistd::Uid::current().as_raw(),
            gid: nix::unistd::Gid::current().as_raw(),
        }
    }

    fn entry(path: &Path) -> HddEntry {
        HddEntry {
            path: path.to_path_buf(),
            line: 1,
            marked_for_removal: false,
            limit: SpaceLimit::Default,
        }
    }

    #[test]
    fn disks_bind_to_one_cluster() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        identity::write_metaid(b.path(), 5).unwrap();
        let da = Arc::new(Disk::open(&entry(a.path()), &me(), Tolerance::default()).unwrap());
        let db = Arc::new(Disk::open(&entry(b.path()), &me(), Tolerance::default()).unwrap());
        assert!(a.path().join(".lock").exists());

        let e = DiskSet::new(vec![da.clone(), db.clone()], 0, Some(6)).unwrap_err();
        assert!(
            e.contains("belongs to another cluster (its .metaid says 5"),
            "{e}"
        );

        let set = DiskSet::new(vec![da.clone(), db.clone()], 0, None).unwrap();
        assert_eq!(set.cluster_id(), Some(5));
        let e = set.check_cluster(9).unwrap_err();
        assert!(e.contains(&b.path().display().to_string()), "{e}");
        set.check_cluster(5).unwrap();
        set.bind_cluster(5).unwrap();
        assert_eq!(identity::read_metaid(a.path()).unwrap(), Some(5));
        assert!(set.choose_for_new().is_some());

        let reports = set.reports();
        assert_eq!(reports.len(), 2);
        assert!(reports.iter().all(|r| r.total > 0 && !r.damaged));

        // A new disk of the same cluster gets the cluster id; a foreign one is refused.
        let c = tempfile::tempdir().unwrap();
        let dc = Arc::new(Disk::open(&entry(c.path()), &me(), Tolerance::default()).unwrap());
        set.add(dc).unwrap();
        assert_eq!(identity::read_metaid(c.path()).unwrap(), Some(5));
        let d = tempfile::tempdir().unwrap();
        identity::write_metaid(d.path(), 8).unwrap();
        let dd = Arc::new(Disk::open(&entry(d.path()), &me(), Tolerance::default()).unwrap());
        assert!(set.add(dd).is_err());
        assert_eq!(set.all().len(), 3);
    }

    #[test]
    fn marked_disks_get_no_new_chunks() {
        let a = tempfile::tempdir().unwrap();
        let mut e = entry(a.path());
        e.marked_for_removal = true;
        let d = Arc::new(Disk::open(&e, &me(), Tolerance::default()).unwrap());
        let set = DiskSet::new(vec![d.clone()], 0, None).unwrap();
        assert!(set.choose_for_new().is_none());
        let report = &set.reports()[0];
        assert!(report.marked_for_removal);
        assert!(report.total > 0);
        assert_eq!(report.avail, 0, "a marked disk has no room for new chunks");
        e.marked_for_removal = false;
        d.apply(&e);
        assert!(set.choose_for_new().is_some());
        assert!(set.reports()[0].avail >= CHUNK_ROOM);
    }

    #[test]
    fn too_many_errors_mark_a_disk_damaged() {
        let a = tempfile::tempdir().unwrap();
        let tolerance = Tolerance {
            count: 3,
            period: Duration::from_millis(300),
        };
        let d = Arc::new(Disk::open(&entry(a.path()), &me(), tolerance).unwrap());
        let set = DiskSet::new(vec![d.clone()], 0, None).unwrap();
        // Errors spread wider than the period never add up.
        for _ in 0..3 {
            d.count_error();
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(!d.damaged());
        let report = &set.reports()[0];
        assert_eq!(report.errors, 3);
        assert!(!report.damaged && report.avail > 0);
        // Three within the period do.
        for _ in 0..3 {
            d.count_error();
        }
        assert!(d.damaged());
        let report = &set.reports()[0];
        assert_eq!(report.errors, 6);
        assert!(report.damaged);
        assert_eq!(report.avail, 0);
        assert!(report.total > 0);
        assert!(set.choose_for_new().is_none());
    }

    #[test]
    fn a_disk_without_room_for_a_chunk_gets_none() {
        let a = tempfile::tempdir().unwrap();
        let mut e = entry(a.path());
        // Room for less than one whole chunk.
        e.limit = SpaceLimit::UseAtMost(Amount::Bytes(CHUNK_ROOM - 1));
        let d = Arc::new(Disk::open(&e, &me(), Tolerance::default()).unwrap());
        let set = DiskSet::new(vec![d.clone()], 0, None).unwrap();
        assert!(set.choose_for_new().is_none());
        let report = &set.reports()[0];
        assert_eq!((report.total, report.avail), (CHUNK_ROOM - 1, 0));
        e.limit = SpaceLimit::UseAtMost(Amount::Bytes(CHUNK_ROOM));
        d.apply(&e);
        assert!(set.choose_for_new().is_some());
        assert_eq!(set.reports()[0].avail, CHUNK_ROOM);
    }
}
