//! Empty files kept on each disk, for new chunks to take.
//!
//! A new chunk's file is made while a writer's chain waits for it. Making a file is the dear
//! part: on an ext4 without a journal that saw deletions it took 300–600 µs of CPU here (the
//! inode search skips every inode freed in the last seconds, looking each one up), where
//! opening and renaming an existing file takes about 20 µs. So each disk keeps a folder of
//! empty files, and a new chunk takes one, writes its header and renames it into place.
//!
//! The spares come from deleted chunks first: a deleted chunk's file is renamed into the
//! folder and, after [`GRACE`] (a read that opened it before the deletion may still be going
//! on), emptied and handed out again, so no inode is freed and none has to be found. The
//! spare thread ([`start_thread`]) does that and makes new files when a disk runs low.
//!
//! The folder is `DISK/.spares`, files `spare_<n>`; a number is never given twice on a disk.
//! A spare is handed out only once its name is on disk (the folder was synced after it came).
//! A new chunk made from spare `n` carries `n` in its header, so its first sync needs no sync
//! of either folder: a crash that loses the rename leaves `spare_n` marked `n`, and the scan
//! moves it back into place ([`Spares::take_claimed`]). A deleted chunk's file comes to the
//! folder under a new number, so its mark (if any) never matches. Any other file there larger
//! than a header, or with a second name, is no spare: one found at start is removed. The
//! folder can be deleted while the chunkserver is stopped.

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::chunkfile::DATA_OFFSET;
use crate::hdd::Disk;

/// The folder of a disk's spare files.
pub const FOLDER: &str = ".spares";
/// Spare files a disk keeps ready when it has to make them.
const TARGET: usize = 256;
/// Below this many ready, more are made.
pub(crate) const LOW: usize = 128;
/// Spare files a disk keeps at most, ready or waiting; further deleted chunks are removed.
/// A spare is an empty file: an inode and a name, no data. Every chunk file removed instead
/// frees an inode that the next new file's inode search then skips, on an ext4 without a
/// journal, for up to five minutes: `rm -rf` of a tree of small files followed by `tar -x`
/// of another made each new spare cost 300–600 µs of CPU while 1,024 were kept.
const MAX: usize = 16_384;
/// How long a deleted chunk's file waits before it is emptied.
pub const GRACE: Duration = Duration::from_secs(10);
/// The spare thread comes back for deleted chunks' files at most this often: each turn syncs
/// the spare folder once for all the files it empties (a sync per file would be a disk flush
/// per deleted chunk).
const TEND_EVERY: Duration = Duration::from_secs(1);
/// Free space a disk needs for deleted chunks' files to wait there: on a fuller disk, deleting
/// files frees their space at once.
pub const RECYCLE_ROOM: u64 = 1 << 30;
/// Bytes of deleted chunks a disk holds at most while they wait, so that deleting files
/// frees their space within [`GRACE`] at worst for this much (the files of small chunks are
/// the ones worth keeping: every small file costs a chunk file).
const WAITING_BYTES: u64 = 256 << 20;

/// A new chunk found at start in the spare file it was made from: a crash lost its rename.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub path: PathBuf,
    pub chunk_id: u64,
    pub version: u32,
    pub len: u64,
}

#[derive(Debug)]
pub struct Spares {
    dir: PathBuf,
    /// Spares whose names are on disk.
    ready: Mutex<Vec<PathBuf>>,
    /// New chunks found at start in their spare files, for the scan to move into place.
    claimed: Mutex<Vec<Claimed>>,
    /// Files of deleted chunks (path, length, when they came), oldest first.
    waiting: Mutex<VecDeque<(PathBuf, u64, Instant)>>,
    next: AtomicU64,
    /// The spare thread has this disk in its queue to make spares.
    queued: AtomicBool,
    /// The spare thread has this disk in its queue or its schedule for waiting files.
    tending: AtomicBool,
    /// The folder exists.
    made: AtomicBool,
    /// The last attempt to make spares failed (logged once until one works again).
    failing: AtomicBool,
    /// Spares kept at most ([`MAX`]).
    max: usize,
}

impl Spares {
    /// The spares of the disk at `disk`: the files its folder holds already (leftovers larger
    /// than a header are removed, new chunks a crash left there are kept for the scan). A
    /// folder that cannot be read gives no spares: new chunks are then made as files of their
    /// own.
    pub fn open(disk: &Path) -> Spares {
        let dir = disk.join(FOLDER);
        let mut ready = Vec::new();
        let mut claimed = Vec::new();
        let mut last = 0;
        let mut made = false;
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                made = true;
                for entry in entries.flatten() {
                    let path = entry.path();
                    let Some(n) = Spares::number_of(&path) else {
                        continue;
                    };
                    last = last.max(n);
                    let meta = entry.metadata();
                    if let Ok(m) = &meta {
                        if let Some(found) = claimed_chunk(&path, n, m) {
                            claimed.push(found);
                            continue;
                        }
                    }
                    match meta {
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
        // The names found are read from the page cache: make sure they are on disk before a
        // chunk made from one counts on it.
        if !ready.is_empty() {
            if let Err(e) = sync_folder(&dir) {
                tracing::warn!(
                    "cannot sync {}: {e}; its spares are not used",
                    dir.display()
                );
                ready.clear();
            }
        }
        Spares {
            dir,
            ready: Mutex::new(ready),
            claimed: Mutex::new(claimed),
            waiting: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(first_number(last)),
            queued: AtomicBool::new(false),
            tending: AtomicBool::new(false),
            made: AtomicBool::new(made),
            failing: AtomicBool::new(false),
            max: MAX,
        }
    }

    /// A spare file to build a new chunk in, if one is ready. It holds at most a header.
    pub fn take(&self) -> Option<PathBuf> {
        self.ready.lock().pop()
    }

    /// The new chunks found at start in the spare files they were made from (once).
    pub fn take_claimed(&self) -> Vec<Claimed> {
        std::mem::take(&mut *self.claimed.lock())
    }

    /// How many spares are ready.
    pub fn count(&self) -> usize {
        self.ready.lock().len()
    }

    /// How many deleted chunks' files wait to become spares.
    pub fn waiting(&self) -> usize {
        self.waiting.lock().len()
    }

    /// True when the disk runs low on spares and is not in the spare thread's queue for it
    /// yet: the caller is to queue it.
    pub fn claim_fill(&self) -> bool {
        self.count() < LOW && !self.queued.swap(true, Ordering::AcqRel)
    }

    /// Takes the file of a deleted chunk, to be emptied and handed out after [`GRACE`]: `Some`
    /// when taken, with true when the disk is to be queued for the spare thread (see
    /// [`Spares::tend`]); `None` when the disk keeps enough spares, or the rename failed: the
    /// caller removes the file.
    pub fn recycle(&self, path: &Path, len: u64) -> Option<bool> {
        let (waiting, held) = {
            let waiting = self.waiting.lock();
            (
                waiting.len(),
                waiting.iter().map(|(_, l, _)| l).sum::<u64>(),
            )
        };
        if self.count() + waiting >= self.max
            || held + len > WAITING_BYTES
            || self.make_folder().is_err()
        {
            return None;
        }
        let spare = self.new_path();
        match std::fs::rename(path, &spare) {
            Ok(()) => {
                self.waiting.lock().push_back((spare, len, Instant::now()));
                Some(!self.tending.swap(true, Ordering::SeqCst))
            }
            Err(e) => {
                tracing::debug!("cannot keep {} as a spare: {e}", path.display());
                None
            }
        }
    }

    /// The spare thread's turn for this disk: empties the deleted chunks' files whose grace
    /// is over, and makes new files when the disk runs low. Blocks on the disk. Returns when
    /// the thread is to come back (files still wait); `None` when it need not, or when a
    /// deletion meanwhile queued the disk again.
    pub fn tend(&self, now: Instant) -> Option<Instant> {
        self.queued.store(false, Ordering::Release);
        let mut emptied = Vec::new();
        loop {
            let due = {
                let mut waiting = self.waiting.lock();
                match waiting.front() {
                    Some((_, _, since)) if now.saturating_duration_since(*since) >= GRACE => {
                        waiting.pop_front()
                    }
                    _ => None,
                }
            };
            let Some((path, _, _)) = due else { break };
            match empty(&path) {
                Ok(()) => emptied.push(path),
                Err(e) => {
                    tracing::debug!("cannot empty {}: {e}; removed", path.display());
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        if !emptied.is_empty() {
            if let Err(e) = self.publish(emptied) {
                tracing::warn!("cannot sync {}: {e}; spares held back", self.dir.display());
            }
        }
        let pending = self.waiting();
        if self.count() < LOW {
            self.make(TARGET.saturating_sub(pending));
        }
        // Cleared before the look, so that a file that comes after it queues the disk.
        self.tending.store(false, Ordering::SeqCst);
        let next = self
            .waiting
            .lock()
            .front()
            .map(|(_, _, since)| (*since + GRACE).max(now + TEND_EVERY));
        next.filter(|_| !self.tending.swap(true, Ordering::SeqCst))
    }

    /// Makes the spare folder's entries durable: called with the sync of a chunk's folder, so
    /// that a chunk renamed out of the folder is never found there again after a crash.
    pub fn sync_folder(&self) -> io::Result<()> {
        sync_folder(&self.dir)
    }

    /// Hands spares out once their names are on disk.
    fn publish(&self, spares: Vec<PathBuf>) -> io::Result<()> {
        self.sync_folder()?;
        self.ready.lock().extend(spares);
        Ok(())
    }

    /// Makes spare files until `target` are ready; a failure is logged once, until making
    /// them works again (new chunks are meanwhile made as files of their own).
    fn make(&self, target: usize) {
        match self.make_up_to(target) {
            Ok(_) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("spare chunk files are made in {} again", self.dir.display());
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "cannot make spare chunk files in {}: {e}; new chunks on this disk are \
                         made as files of their own, which is slower",
                        self.dir.display()
                    );
                }
            }
        }
    }

    fn make_up_to(&self, target: usize) -> io::Result<usize> {
        self.make_folder()?;
        let mut made = Vec::new();
        let mut result = Ok(());
        while self.count() + made.len() < target {
            let path = self.new_path();
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => made.push(path),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let count = made.len();
        if count > 0 {
            self.publish(made)?;
        }
        result.map(|()| count)
    }

    fn make_folder(&self) -> io::Result<()> {
        if !self.made.load(Ordering::Relaxed) {
            std::fs::create_dir_all(&self.dir)?;
            self.made.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn new_path(&self) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("spare_{n}"))
    }

    /// The number of spare file `path`.
    pub fn number_of(path: &Path) -> Option<u64> {
        path.file_name()?
            .to_str()?
            .strip_prefix("spare_")?
            .parse()
            .ok()
    }
}

/// Puts the calling thread at the lowest `nice` priority: spare files are made ahead of need,
/// and on an ext4 without a journal that saw deletions each costs hundreds of microseconds of
/// CPU that the threads serving clients should have first.
fn lower_priority() {
    // SAFETY: plain system calls on the calling thread; a failure only leaves the priority.
    let r = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19)
    };
    if r != 0 {
        tracing::debug!(
            "cannot lower the priority of the spare thread: {}",
            io::Error::last_os_error()
        );
    }
}

/// Starts the thread that tends the disks' spare files: a disk it is sent gets a turn at
/// once, and another when the deleted chunks' files it keeps are due.
pub fn start_thread() -> std::sync::mpsc::Sender<Arc<Disk>> {
    use std::sync::mpsc::RecvTimeoutError;
    let (tx, rx) = std::sync::mpsc::channel::<Arc<Disk>>();
    let spawned = std::thread::Builder::new()
        .name("spare-files".into())
        .spawn(move || {
            lower_priority();
            let mut scheduled: Vec<(Arc<Disk>, Instant)> = Vec::new();
            loop {
                let next = scheduled.iter().map(|(_, at)| *at).min();
                let sent = match next {
                    None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                };
                let mut turn = match sent {
                    Ok(disk) => vec![disk],
                    Err(RecvTimeoutError::Timeout) => vec![],
                    Err(RecvTimeoutError::Disconnected) => return,
                };
                let now = Instant::now();
                scheduled.retain(|(disk, at)| {
                    let due = *at <= now;
                    if due && !turn.iter().any(|d| Arc::ptr_eq(d, disk)) {
                        turn.push(Arc::clone(disk));
                    }
                    !due
                });
                for disk in turn {
                    if let Some(at) = disk.spares.tend(now) {
                        scheduled.push((disk, at));
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(
            "cannot start the thread that makes spare chunk files ({e}); new chunks are made as \
             files of their own, which is slower"
        );
    }
    tx
}

/// The first number to give: past every file found, and past every number given before on
/// this disk (those files may have left the folder as chunks) as far as the clock tells.
fn first_number(last_found: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
    (last_found + 1).max(now)
}

/// The new chunk spare file `path` (number `n`) became, when its header carries `n`: the
/// rename out of the folder was lost in a crash.
fn claimed_chunk(path: &Path, n: u64, meta: &std::fs::Metadata) -> Option<Claimed> {
    if !meta.is_file() || meta.nlink() != 1 || meta.len() < DATA_OFFSET {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    let (chunk_id, version, mark) = crate::chunkfile::read_spare_mark(&file)?;
    (mark == n).then(|| Claimed {
        path: path.to_path_buf(),
        chunk_id,
        version,
        len: meta.len(),
    })
}

fn sync_folder(dir: &Path) -> io::Result<()> {
    match std::fs::File::open(dir) {
        Ok(dir) => dir.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Empties a deleted chunk's file (its blocks are freed, its inode stays).
fn empty(path: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_len(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `nice` value of the thread named `name` in this process.
    fn nice_of_thread(name: &str) -> Option<i64> {
        let tasks = std::fs::read_dir("/proc/self/task").ok()?;
        tasks.flatten().find_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            if comm.trim_end() != name {
                return None;
            }
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            // After the parenthesised name: state is field 3, nice field 19.
            let rest = &stat[stat.rfind(')')? + 2..];
            rest.split(' ').nth(16)?.parse().ok()
        })
    }

    #[test]
    fn spare_files_are_made_at_the_lowest_priority() {
        let thread = start_thread();
        let nice = (0..100).find_map(|_| {
            std::thread::sleep(Duration::from_millis(10));
            nice_of_thread("spare-files").filter(|n| *n != 0)
        });
        drop(thread);
        assert_eq!(nice, Some(19));
    }

    #[test]
    fn a_low_disk_gets_its_target_and_takes_hand_out_each_file_once() {
        let disk = tempfile::tempdir().unwrap();
        let spares = Spares::open(disk.path());
        assert_eq!(spares.count(), 0);
        assert!(spares.claim_fill());
        assert!(!spares.claim_fill(), "a disk is queued twice");
        let now = Instant::now();
        assert_eq!(spares.tend(now), None);
        assert_eq!(spares.count(), TARGET);
        assert!(!spares.claim_fill(), "a disk with its spares wants a turn");
        let mut taken = std::collections::HashSet::new();
        for _ in 0..TARGET - LOW + 1 {
            let path = spares.take().unwrap();
            assert!(path.is_file(), "{} is no file", path.display());
            assert!(taken.insert(path), "a spare was handed out twice");
        }
        assert!(
            spares.claim_fill(),
            "a disk below its low mark wants no turn"
        );
        spares.tend(now);
        assert_eq!(spares.count(), TARGET);
    }

    #[test]
    fn a_deleted_chunk_becomes_an_empty_spare_after_the_grace() {
        let disk = tempfile::tempdir().unwrap();
        let spares = Spares::open(disk.path());
        let now = Instant::now();
        spares.tend(now);
        let chunk = disk.path().join("chunk_0000000000000001_00000001.mfs");
        std::fs::write(&chunk, vec![7u8; 1 << 20]).unwrap();
        assert_eq!(spares.recycle(&chunk, 1 << 20), Some(true));
        assert!(!chunk.exists());
        let ready = spares.count();
        // Within the grace the file keeps its data (a read may still be going on).
        let again = spares.tend(now).expect("no next turn while a file waits");
        assert!(again >= now + GRACE - Duration::from_secs(1));
        assert_eq!(spares.count(), ready);
        // The disk is scheduled: another deletion does not queue it again.
        let second = disk.path().join("chunk_0000000000000002_00000001.mfs");
        std::fs::write(&second, b"data").unwrap();
        assert_eq!(spares.recycle(&second, 4), Some(false));
        assert_eq!(spares.tend(now + GRACE + Duration::from_secs(1)), None);
        assert_eq!(spares.count(), ready + 2);
        assert_eq!(spares.waiting(), 0);
        let spare = spares.take().unwrap();
        assert_eq!(std::fs::metadata(&spare).unwrap().len(), 0);
    }

    #[test]
    fn a_disk_full_of_spares_lets_deleted_chunks_go() {
        let disk = tempfile::tempdir().unwrap();
        let mut spares = Spares::open(disk.path());
        spares.max = 16;
        spares.make_up_to(16).unwrap();
        let chunk = disk.path().join("chunk");
        std::fs::write(&chunk, b"data").unwrap();
        assert_eq!(spares.recycle(&chunk, 4), None);
        assert!(chunk.exists(), "the caller removes it");
    }

    #[test]
    fn deleted_chunks_wait_with_a_bounded_number_of_bytes() {
        let disk = tempfile::tempdir().unwrap();
        let spares = Spares::open(disk.path());
        let chunk = disk.path().join("chunk");
        for len in [WAITING_BYTES / 2, WAITING_BYTES / 2] {
            std::fs::write(&chunk, b"data").unwrap();
            assert!(spares.recycle(&chunk, len).is_some());
        }
        std::fs::write(&chunk, b"data").unwrap();
        assert_eq!(
            spares.recycle(&chunk, 1),
            None,
            "more bytes wait than allowed"
        );
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
        let made = spares.take().unwrap();
        assert!(Spares::number_of(&made).unwrap() > 9, "{}", made.display());
    }

    /// A file of the spare folder holding a chunk header marked `mark`, `len` bytes long.
    fn marked(path: &Path, chunk_id: u64, mark: u64, len: u64) {
        crate::chunkfile::create(path, 1, 1).unwrap();
        drop(crate::chunkfile::reuse(path, chunk_id, 1, mark).unwrap());
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len)
            .unwrap();
    }

    #[test]
    fn a_new_chunk_a_crash_left_in_its_spare_file_is_kept_for_the_scan() {
        let disk = tempfile::tempdir().unwrap();
        let dir = disk.path().join(FOLDER);
        std::fs::create_dir(&dir).unwrap();
        // Made from spare 5, whose rename was lost: kept, with or without data.
        marked(&dir.join("spare_5"), 0x55, 5, DATA_OFFSET + 100);
        marked(&dir.join("spare_6"), 0x66, 6, DATA_OFFSET);
        // A deleted chunk once made from spare 3, now spare 7: emptied or removed as before.
        marked(&dir.join("spare_7"), 0x77, 3, DATA_OFFSET + 100);
        marked(&dir.join("spare_8"), 0x88, 4, DATA_OFFSET);
        let spares = Spares::open(disk.path());
        let mut claimed = spares.take_claimed();
        claimed.sort_by_key(|c| c.chunk_id);
        assert_eq!(
            claimed,
            vec![
                Claimed {
                    path: dir.join("spare_5"),
                    chunk_id: 0x55,
                    version: 1,
                    len: DATA_OFFSET + 100,
                },
                Claimed {
                    path: dir.join("spare_6"),
                    chunk_id: 0x66,
                    version: 1,
                    len: DATA_OFFSET,
                },
            ]
        );
        assert!(spares.take_claimed().is_empty(), "handed over twice");
        assert!(
            !dir.join("spare_7").exists(),
            "a deleted chunk's data was kept"
        );
        assert_eq!(spares.take(), Some(dir.join("spare_8")));
        assert_eq!(spares.take(), None);
    }

    #[test]
    fn spare_numbers_are_not_given_again_after_a_restart() {
        let disk = tempfile::tempdir().unwrap();
        let spares = Spares::open(disk.path());
        spares.make_up_to(1).unwrap();
        // The spare leaves the folder as a new chunk; the next start finds the folder empty.
        let first = spares.take().unwrap();
        std::fs::remove_file(&first).unwrap();
        let again = Spares::open(disk.path());
        again.make_up_to(1).unwrap();
        let second = again.take().unwrap();
        assert!(
            Spares::number_of(&second) > Spares::number_of(&first),
            "{} after {}",
            second.display(),
            first.display()
        );
    }
}
