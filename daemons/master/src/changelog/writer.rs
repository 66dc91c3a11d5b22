//! Writing the changelog like a journaling file system: a record is written to the file (the
//! kernel's page cache) before its change is acknowledged, so a crash of the master process
//! loses nothing it answered; `fdatasync` runs on a thread of its own, for many records at a
//! time, on a timer or as soon as somebody asks (a client's `fsync`, a chunk version raise).
//! With [`SyncPolicy::EveryChange`] a change is acknowledged only once it is synced.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
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

/// How far the changelog has got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStatus {
    /// Every record up to this version is in the file (survives a crash of the master).
    pub written: u64,
    /// Every record up to this version is on the disk (survives a crash of the machine).
    pub synced: u64,
    /// Set when writing or syncing failed: the master cannot go on.
    pub failed: Option<String>,
}

enum Cmd {
    Record(u64, Vec<u8>),
    /// Close the current file and start a new one (after a dump).
    Rotate,
    /// Remove the files beyond BACK_LOGS (once a dump covering them is on disk).
    Prune,
}

/// What the writer and the syncer share.
struct SyncState {
    /// The file records are appended to now.
    file: Arc<File>,
    written: u64,
    synced: u64,
    /// When the oldest record not yet synced was written.
    dirty_since: Option<Instant>,
    /// The highest version somebody waits to see synced.
    wanted: u64,
    /// The writer has ended: sync what is left and end too.
    stop: bool,
}

struct Shared {
    state: Mutex<SyncState>,
    wake: Condvar,
    status: watch::Sender<LogStatus>,
    path: PathBuf,
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

    fn publish_synced(&self, version: u64) {
        self.status
            .send_modify(|s| s.synced = s.synced.max(version));
    }
}

/// Handle to the writer and syncer threads.
pub struct Changelog {
    tx: std::sync::mpsc::Sender<Cmd>,
    status: watch::Receiver<LogStatus>,
    stream: broadcast::Sender<(u64, Arc<Vec<u8>>)>,
    shared: Arc<Shared>,
    policy: SyncPolicy,
}

impl Changelog {
    /// Opens `changelog.0.mfs` in `dir` for appending (creating it with a header if needed)
    /// and starts the writer and syncer threads. `version` is the last version already on
    /// disk.
    pub fn open(
        dir: &Path,
        cluster_id: u64,
        version: u64,
        back_logs: u32,
        policy: SyncPolicy,
    ) -> Result<Changelog, ChangelogError> {
        let file = open_current(dir, cluster_id)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let (stream, _) = broadcast::channel(1 << 16);
        let (status_tx, status) = watch::channel(LogStatus {
            written: version,
            synced: version,
            failed: None,
        });
        let shared = Arc::new(Shared {
            state: Mutex::new(SyncState {
                file: Arc::new(file),
                written: version,
                synced: version,
                dirty_since: None,
                wanted: 0,
                stop: false,
            }),
            wake: Condvar::new(),
            status: status_tx,
            path: dir.join(file_name(0)),
        });
        let writer = Writer {
            dir: dir.to_path_buf(),
            cluster_id,
            back_logs: back_logs.max(1),
            shared: shared.clone(),
            buf: Vec::with_capacity(1 << 20),
            written: version,
        };
        let spawn_err = |source| ChangelogError::Write {
            path: dir.join(file_name(0)),
            source,
        };
        let syncer = shared.clone();
        std::thread::Builder::new()
            .name("changelog-sync".into())
            .spawn(move || run_syncer(&syncer, policy))
            .map_err(spawn_err)?;
        std::thread::Builder::new()
            .name("changelog".into())
            .spawn(move || writer.run(rx))
            .map_err(spawn_err)?;
        Ok(Changelog {
            tx,
            status,
            stream,
            shared,
            policy,
        })
    }

    /// Queues a record; call with the state lock held so records stay in version order.
    pub fn append(&self, rec: &Record) {
        let bytes = encode_record(rec);
        if self.stream.receiver_count() > 0 {
            let _ = self.stream.send((rec.version, Arc::new(bytes.clone())));
        }
        let _ = self.tx.send(Cmd::Record(rec.version, bytes));
    }

    /// Queues a rotation; call with the state lock held, right after encoding a dump.
    pub fn rotate(&self) {
        let _ = self.tx.send(Cmd::Rotate);
    }

    /// Queues the removal of the files beyond BACK_LOGS; call only after a dump was written,
    /// so that a dump that failed never costs the records it should have covered.
    pub fn prune(&self) {
        let _ = self.tx.send(Cmd::Prune);
    }

    /// Waits until change `version` may be acknowledged: written, and with
    /// [`SyncPolicy::EveryChange`] synced too. Errors if the changelog cannot be written.
    pub async fn wait_recorded(&self, version: u64) -> Result<(), String> {
        match self.policy {
            SyncPolicy::EveryChange => self.wait_for(|s| s.synced >= version).await,
            SyncPolicy::Within(_) => self.wait_for(|s| s.written >= version).await,
        }
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
        self.shared.wake.notify_all();
        self.wait_for(|s| s.synced >= version).await
    }

    async fn wait_for(&self, done: impl Fn(&LogStatus) -> bool) -> Result<(), String> {
        let mut rx = self.status.clone();
        let st = rx
            .wait_for(|s| done(s) || s.failed.is_some())
            .await
            .map_err(|_| "changelog writer stopped".to_string())?;
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
        f.sync_all().map_err(werr)?;
    }
    Ok(f)
}

/// Syncs what the writer has written, when the policy says so or somebody asks.
fn run_syncer(shared: &Shared, policy: SyncPolicy) {
    let mut st = shared.state.lock();
    loop {
        if st.written <= st.synced {
            if st.stop {
                return;
            }
            shared.wake.wait(&mut st);
            continue;
        }
        let due_at = match policy {
            _ if st.stop || st.wanted > st.synced => Instant::now(),
            SyncPolicy::EveryChange => Instant::now(),
            SyncPolicy::Within(delay) => st.dirty_since.map_or_else(Instant::now, |t| t + delay),
        };
        if Instant::now() < due_at {
            shared.wake.wait_until(&mut st, due_at);
            continue;
        }
        let (file, version) = (st.file.clone(), st.written);
        drop(st);
        // Records written meanwhile may or may not be covered; only `version` is claimed.
        let result = file.sync_data();
        st = shared.state.lock();
        if let Err(source) = result {
            drop(st);
            shared.fail(&ChangelogError::Write {
                path: shared.path.clone(),
                source,
            });
            return;
        }
        st.synced = st.synced.max(version);
        st.dirty_since = (st.written > st.synced).then(Instant::now);
        shared.publish_synced(version);
    }
}

struct Writer {
    dir: PathBuf,
    cluster_id: u64,
    back_logs: u32,
    shared: Arc<Shared>,
    /// Records of one batch, written with one write(2).
    buf: Vec<u8>,
    written: u64,
}

impl Writer {
    fn run(mut self, rx: std::sync::mpsc::Receiver<Cmd>) {
        while let Ok(first) = rx.recv() {
            // Take everything queued meanwhile: one write(2) for all of it.
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
                if batch.len() >= 100_000 {
                    break;
                }
            }
            if let Err(e) = self.write_batch(batch) {
                self.shared.fail(&e);
                return;
            }
        }
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_all();
    }

    fn write_batch(&mut self, batch: Vec<Cmd>) -> Result<(), ChangelogError> {
        for cmd in batch {
            match cmd {
                Cmd::Record(v, bytes) => {
                    self.buf.extend_from_slice(&bytes);
                    self.written = v;
                }
                Cmd::Rotate => self.rotate()?,
                Cmd::Prune => self.prune(),
            }
        }
        self.flush()
    }

    /// Writes the buffered records and tells the syncer and the waiting requests.
    fn flush(&mut self) -> Result<(), ChangelogError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let file = self.shared.state.lock().file.clone();
        (&*file).write_all(&self.buf).map_err(|e| self.err(e))?;
        self.buf.clear();
        let written = self.written;
        {
            let mut st = self.shared.state.lock();
            st.written = written;
            st.dirty_since.get_or_insert_with(Instant::now);
        }
        self.shared.wake.notify_all();
        self.shared.status.send_modify(|s| s.written = written);
        Ok(())
    }

    fn err(&self, source: std::io::Error) -> ChangelogError {
        ChangelogError::Write {
            path: self.dir.join(file_name(0)),
            source,
        }
    }

    /// changelog.N.mfs → N+1 for every file (none is removed here: see [`Writer::prune`]),
    /// then a new changelog.0.mfs; the folder is fsynced so the renames survive a crash.
    fn rotate(&mut self) -> Result<(), ChangelogError> {
        self.flush()?;
        let old = self.shared.state.lock().file.clone();
        old.sync_data().map_err(|e| self.err(e))?;
        let mut own: Vec<u32> = own_files(&self.dir).into_iter().map(|(n, _)| n).collect();
        own.sort_unstable_by(|a, b| b.cmp(a));
        for n in own {
            let from = self.dir.join(file_name(n));
            std::fs::rename(&from, self.dir.join(file_name(n + 1))).map_err(|e| self.err(e))?;
        }
        let new = open_current(&self.dir, self.cluster_id)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.err(e))?;
        // Everything written so far sits in the old file, which is synced.
        let written = self.written;
        {
            let mut st = self.shared.state.lock();
            st.file = Arc::new(new);
            st.synced = st.synced.max(written);
            st.dirty_since = None;
        }
        self.shared.publish_synced(written);
        Ok(())
    }

    fn prune(&self) {
        for (n, path) in own_files(&self.dir) {
            if n > self.back_logs {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!("cannot remove old changelog {}: {e}", path.display());
                }
            }
        }
    }
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
        assert!(
            log.status().borrow().synced >= 4,
            "a rotated file is synced"
        );
        log.prune();
        log.append(&rec(6));
        log.wait_recorded(6).await.unwrap();
        assert_eq!(numbers(), vec![0, 1, 2]);
    }
}
