//! Writing the changelog like a journaling file system: a record is written to the file (the
//! kernel's page cache) by the request that made the change, before the change is
//! acknowledged, so a crash of the master process loses nothing it answered; `fdatasync` runs
//! on a thread of its own, for many records at a time, on a timer or as soon as somebody asks
//! (a client's `fsync`, a chunk version raise). With [`SyncPolicy::EveryChange`] a change is
//! acknowledged only once it is synced.
//!
//! The record is written in place, not handed to a writer thread: a write(2) of a hundred
//! bytes into the page cache costs a few microseconds, a hand-off costs two thread wake-ups
//! per change, which was a fifth of a create's round trip on two cores.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::{broadcast, watch};

use super::{changelog_header, encode_record, file_name, own_files, ChangelogError, Record};

/// When written records are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Before the change is acknowledged (CHANGELOG_SAVE_MODE 2).
    EveryChange,
    /// At most this long after the record was written, or sooner when asked
    /// (CHANGELOG_SAVE_MODE 0 and 1).
    Within(Duration),
}

/// How far the changelog is on disk. Published at each sync, not at each record, so that
/// watchers are not woken per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStatus {
    /// Every record up to this version is on the disk (survives a crash of the machine).
    pub synced: u64,
    /// Set when writing or syncing failed: the master cannot go on.
    pub failed: Option<String>,
}

/// What the requests that append and the syncer share.
struct SyncState {
    /// The file records are appended to now.
    file: Arc<File>,
    /// Files rotated out since the last sync: their last records may not be on disk yet.
    retired: Vec<Arc<File>>,
    /// A rotation renamed and created files: the folder needs a sync.
    folder_changed: bool,
    /// Every record up to this version is in the file.
    written: u64,
    synced: u64,
    /// When the oldest record not yet synced was written.
    dirty_since: Option<Instant>,
    /// The highest version somebody waits to see synced.
    wanted: u64,
    /// Writing failed or the log was dropped: sync what is left and end.
    stop: bool,
}

struct Shared {
    state: Mutex<SyncState>,
    wake: Condvar,
    status: watch::Sender<LogStatus>,
    dir: PathBuf,
}

impl Shared {
    fn fail(&self, e: &ChangelogError) {
        tracing::error!("{e}; the master cannot record changes and stops");
        self.status.send_modify(|s| {
            s.failed.get_or_insert_with(|| e.to_string());
        });
        self.state.lock().stop = true;
        self.wake.notify_all();
    }

    fn write_error(&self, source: std::io::Error) -> ChangelogError {
        ChangelogError::Write {
            path: self.dir.join(file_name(0)),
            source,
        }
    }
}

/// Handle to the changelog files and their syncer thread.
pub struct Changelog {
    shared: Arc<Shared>,
    /// Syncs asked for ahead of the timer (see [`Changelog::sync`]).
    asked: AtomicU64,
    status: watch::Receiver<LogStatus>,
    stream: broadcast::Sender<(u64, Arc<Vec<u8>>)>,
    policy: SyncPolicy,
    cluster_id: u64,
    back_logs: u32,
}

impl Changelog {
    /// Opens `changelog.0.mfs` in `dir` for appending (creating it with a header if needed)
    /// and starts the syncer thread. `version` is the last version already on disk.
    pub fn open(
        dir: &Path,
        cluster_id: u64,
        version: u64,
        back_logs: u32,
        policy: SyncPolicy,
    ) -> Result<Changelog, ChangelogError> {
        let werr = |source| ChangelogError::Write {
            path: dir.join(file_name(0)),
            source,
        };
        let file = open_current(dir, cluster_id)?;
        file.sync_all().map_err(werr)?;
        let (stream, _) = broadcast::channel(1 << 16);
        let (status_tx, status) = watch::channel(LogStatus {
            synced: version,
            failed: None,
        });
        let shared = Arc::new(Shared {
            state: Mutex::new(SyncState {
                file: Arc::new(file),
                retired: Vec::new(),
                folder_changed: false,
                written: version,
                synced: version,
                dirty_since: None,
                wanted: 0,
                stop: false,
            }),
            wake: Condvar::new(),
            status: status_tx,
            dir: dir.to_path_buf(),
        });
        let syncer = shared.clone();
        std::thread::Builder::new()
            .name("changelog-sync".into())
            .spawn(move || run_syncer(&syncer, policy))
            .map_err(werr)?;
        Ok(Changelog {
            shared,
            asked: AtomicU64::new(0),
            status,
            stream,
            policy,
            cluster_id,
            back_logs: back_logs.max(1),
        })
    }

    /// Writes a record to the file; call with the state lock held so records stay in
    /// version order. A failure is reported by [`Changelog::wait_recorded`] and the status.
    pub fn append(&self, rec: &Record) {
        let bytes = Arc::new(encode_record(rec));
        if self.stream.receiver_count() > 0 {
            let _ = self.stream.send((rec.version, bytes.clone()));
        }
        let mut st = self.shared.state.lock();
        if st.stop {
            return;
        }
        if let Err(source) = (&*st.file).write_all(&bytes) {
            drop(st);
            self.shared.fail(&self.shared.write_error(source));
            return;
        }
        st.written = rec.version;
        // The syncer sleeps until the first unsynced record, or it has work now.
        let wake = st.dirty_since.is_none() || self.policy == SyncPolicy::EveryChange;
        st.dirty_since.get_or_insert_with(Instant::now);
        drop(st);
        if wake {
            self.shared.wake.notify_all();
        }
    }

    /// Starts a new `changelog.0.mfs` (`changelog.N.mfs` → N+1 for every file; none is
    /// removed here: see [`Changelog::prune_job`]). Call with the state lock held, right
    /// after encoding a dump. The old file and the folder are synced by the syncer, at once.
    pub fn rotate(&self) {
        let mut st = self.shared.state.lock();
        if st.stop {
            return;
        }
        match rename_and_create(&self.shared.dir, self.cluster_id) {
            Ok(new) => {
                let old = std::mem::replace(&mut st.file, Arc::new(new));
                st.retired.push(old);
                st.folder_changed = true;
                drop(st);
                self.shared.wake.notify_all();
            }
            Err(e) => {
                drop(st);
                self.shared.fail(&e);
            }
        }
    }

    /// The removal of the files beyond BACK_LOGS, to run on a blocking thread; run it only
    /// after a dump was written, so that a dump that failed never costs the records it
    /// should have covered.
    pub fn prune_job(&self) -> impl FnOnce() + Send + 'static {
        let (dir, back_logs) = (self.shared.dir.clone(), self.back_logs);
        move || {
            for (n, path) in own_files(&dir) {
                if n > back_logs {
                    if let Err(e) = std::fs::remove_file(&path) {
                        tracing::warn!("cannot remove old changelog {}: {e}", path.display());
                    }
                }
            }
        }
    }

    /// True when change `version` may be acknowledged now: it is written and the policy does
    /// not wait for its sync.
    pub fn is_recorded(&self, version: u64) -> bool {
        matches!(self.policy, SyncPolicy::Within(_)) && self.shared.state.lock().written >= version
    }

    /// Waits until change `version` may be acknowledged: written, and with
    /// [`SyncPolicy::EveryChange`] synced too. Errors if the changelog cannot be written.
    pub async fn wait_recorded(&self, version: u64) -> Result<(), String> {
        match self.policy {
            SyncPolicy::EveryChange => self.wait_for(|s| s.synced >= version).await,
            SyncPolicy::Within(_) => {
                if self.is_recorded(version) {
                    return Ok(());
                }
                Err(self
                    .status
                    .borrow()
                    .failed
                    .clone()
                    .unwrap_or_else(|| "the changelog is closed".to_string()))
            }
        }
    }

    /// How many times [`Changelog::sync`] found its version not on disk yet.
    pub fn syncs_asked(&self) -> u64 {
        self.asked.load(Ordering::Relaxed)
    }

    /// Every record up to this version is on disk.
    pub fn synced(&self) -> u64 {
        self.shared.state.lock().synced
    }

    /// Makes every record up to `version` durable now and waits for it.
    pub async fn sync(&self, version: u64) -> Result<(), String> {
        {
            let mut st = self.shared.state.lock();
            if st.synced >= version {
                return Ok(());
            }
            st.wanted = st.wanted.max(version);
        }
        self.asked.fetch_add(1, Ordering::Relaxed);
        self.shared.wake.notify_all();
        self.wait_for(|s| s.synced >= version).await
    }

    async fn wait_for(&self, done: impl Fn(&LogStatus) -> bool) -> Result<(), String> {
        let mut rx = self.status.clone();
        let st = rx
            .wait_for(|s| done(s) || s.failed.is_some())
            .await
            .map_err(|_| "changelog syncer stopped".to_string())?;
        match &st.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    pub fn status(&self) -> watch::Receiver<LogStatus> {
        self.status.clone()
    }

    /// Live stream of encoded records, for metaloggers. Subscribe before taking the dump
    /// they start from, so no change falls between the two.
    pub fn subscribe(&self) -> broadcast::Receiver<(u64, Arc<Vec<u8>>)> {
        self.stream.subscribe()
    }
}

impl Drop for Changelog {
    /// The syncer syncs what is left and ends.
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_all();
    }
}

fn open_current(dir: &Path, cluster_id: u64) -> Result<File, ChangelogError> {
    let path = dir.join(file_name(0));
    let werr = |source| ChangelogError::Write {
        path: path.clone(),
        source,
    };
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(&path)
        .map_err(werr)?;
    let len = f.metadata().map_err(werr)?.len();
    if len == 0 {
        f.write_all(&changelog_header(cluster_id)).map_err(werr)?;
    }
    Ok(f)
}

/// changelog.N.mfs → N+1 for every file, then a new changelog.0.mfs (not synced yet).
fn rename_and_create(dir: &Path, cluster_id: u64) -> Result<File, ChangelogError> {
    let mut own: Vec<u32> = own_files(dir).into_iter().map(|(n, _)| n).collect();
    own.sort_unstable_by(|a, b| b.cmp(a));
    for n in own {
        let from = dir.join(file_name(n));
        std::fs::rename(&from, dir.join(file_name(n + 1)))
            .map_err(|source| ChangelogError::Write { path: from, source })?;
    }
    open_current(dir, cluster_id)
}

/// Syncs what was written, when the policy says so or somebody asks.
fn run_syncer(shared: &Shared, policy: SyncPolicy) {
    let mut st = shared.state.lock();
    loop {
        let rotated = st.folder_changed || !st.retired.is_empty();
        if st.written <= st.synced && !rotated {
            if st.stop {
                return;
            }
            shared.wake.wait(&mut st);
            continue;
        }
        let due_at = match policy {
            _ if st.stop || st.wanted > st.synced || rotated => Instant::now(),
            SyncPolicy::EveryChange => Instant::now(),
            SyncPolicy::Within(delay) => st.dirty_since.map_or_else(Instant::now, |t| t + delay),
        };
        if Instant::now() < due_at {
            shared.wake.wait_until(&mut st, due_at);
            continue;
        }
        let (file, version) = (st.file.clone(), st.written);
        let retired = std::mem::take(&mut st.retired);
        let folder_changed = std::mem::take(&mut st.folder_changed);
        drop(st);
        // Records written meanwhile may or may not be covered; only `version` is claimed.
        let result = sync_files(&shared.dir, &retired, &file, folder_changed);
        st = shared.state.lock();
        if let Err(source) = result {
            drop(st);
            shared.fail(&shared.write_error(source));
            return;
        }
        st.synced = st.synced.max(version);
        st.dirty_since = (st.written > st.synced).then(Instant::now);
        shared
            .status
            .send_modify(|s| s.synced = s.synced.max(version));
    }
}

/// The files rotated out, the current one, and after a rotation the folder (its renames and
/// the new file's name).
fn sync_files(
    dir: &Path,
    retired: &[Arc<File>],
    current: &File,
    folder_changed: bool,
) -> std::io::Result<()> {
    for old in retired {
        old.sync_data()?;
    }
    current.sync_data()?;
    if folder_changed {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{list_files, read_file};
    use super::*;
    use crate::ops::Op;
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

    const LATER: SyncPolicy = SyncPolicy::Within(Duration::from_secs(3600));

    #[tokio::test]
    async fn append_rotate_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = Changelog::open(dir.path(), 9, 0, 3, SyncPolicy::EveryChange).unwrap();
        log.append(&rec(1));
        log.append(&rec(2));
        log.rotate();
        log.append(&rec(3));
        log.wait_recorded(3).await.unwrap();
        assert_eq!(log.status().borrow().synced, 3);
        let old = read_file(&dir.path().join(file_name(1))).unwrap();
        assert_eq!(old.records, vec![rec(1), rec(2)]);
        assert_eq!(old.cluster_id, 9);
        let cur = read_file(&dir.path().join(file_name(0))).unwrap();
        assert_eq!(cur.records, vec![rec(3)]);
        assert_eq!(
            list_files(dir.path())
                .iter()
                .map(|f| f.0)
                .collect::<Vec<_>>(),
            vec![0, 1]
        );
    }

    #[tokio::test]
    async fn a_recorded_change_is_in_the_file_before_it_is_synced_and_sync_makes_it_durable() {
        let dir = tempfile::tempdir().unwrap();
        let log = Changelog::open(dir.path(), 9, 0, 3, LATER).unwrap();
        log.append(&rec(1));
        log.append(&rec(2));
        log.wait_recorded(2).await.unwrap();
        // A kill -9 now would find both records: they are in the file.
        let cur = read_file(&dir.path().join(file_name(0))).unwrap();
        assert_eq!(cur.records, vec![rec(1), rec(2)]);
        assert_eq!(log.status().borrow().synced, 0, "the timer is an hour away");
        log.sync(2).await.unwrap();
        assert_eq!(log.status().borrow().synced, 2);
        // Asking for a version that is not written yet waits for it, then syncs it.
        let waiter = log.sync(3);
        log.append(&rec(3));
        waiter.await.unwrap();
        assert_eq!(log.status().borrow().synced, 3);
    }

    #[tokio::test]
    async fn the_timer_syncs_what_nobody_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let log = Changelog::open(
            dir.path(),
            9,
            0,
            3,
            SyncPolicy::Within(Duration::from_millis(20)),
        )
        .unwrap();
        log.append(&rec(1));
        let mut status = log.status();
        tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.synced >= 1))
            .await
            .expect("synced by the timer")
            .unwrap();
    }

    #[tokio::test]
    async fn rotation_keeps_every_file_until_a_dump_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let log = Changelog::open(dir.path(), 9, 0, 2, LATER).unwrap();
        for v in 1..=4 {
            log.append(&rec(v));
            log.rotate();
        }
        log.append(&rec(5));
        log.wait_recorded(5).await.unwrap();
        let numbers = || {
            list_files(dir.path())
                .iter()
                .map(|f| f.0)
                .collect::<Vec<_>>()
        };
        // Dumps that failed must not cost records: nothing is removed by rotation.
        assert_eq!(numbers(), vec![0, 1, 2, 3, 4]);
        assert_eq!(
            read_file(&dir.path().join(file_name(4))).unwrap().records,
            vec![rec(1)]
        );
        let mut status = log.status();
        tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.synced >= 4))
            .await
            .expect("a rotated file is synced at once")
            .unwrap();
        log.prune_job()();
        log.append(&rec(6));
        log.wait_recorded(6).await.unwrap();
        assert_eq!(numbers(), vec![0, 1, 2]);
    }
}
