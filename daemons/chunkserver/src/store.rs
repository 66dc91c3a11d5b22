//! The chunk registry (which chunks live where, at which version) and every disk operation on
//! chunk files.
//!
//! Methods of [`Store`] block on disk I/O: call them inside [`blocking`] (tokio's blocking
//! pool), never on the async threads. Lock order: stripe lock, then registry, then file cache.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use moose_proto::msg::{CsToMaster, MarkedDisk};
use moose_proto::{ChunkRef, DiskReport, FsError, FsResult, BLOCKS_PER_CHUNK, CHUNK_SIZE};
use tokio::sync::mpsc;

use crate::bufpool::BufPool;
use crate::chunkfile::{self, Block, Wait, BS, DATA_OFFSET, ZERO_BLOCK_CRC};
use crate::creations::Creations;
use crate::filecache::FileCache;
use crate::hdd::{Disk, DiskSet};
use crate::spares::{Claimed, Spares};

/// Open chunk files kept in the cache.
const FILE_CACHE_SIZE: usize = 256;
/// Locks serialising block updates against reads of the same chunk (by chunk id hash).
const STRIPES: usize = 256;
/// Idle block buffers kept for the write path.
const POOL_BUFFERS: usize = 256;

/// Makes a new chunk durable under its name: its data (when `file` is given), the folder it
/// was renamed into and the spare folder it came from. The three are separate disk writes
/// (on ext4 without a journal, each its own block), so they are issued side by side.
fn sync_new_chunk(file: Option<&File>, path: &Path, disk: &Disk) -> io::Result<()> {
    std::thread::scope(|s| {
        let folder = Beside::start(s, || chunkfile::sync_folder_of(path));
        let rest = match file {
            Some(file) => {
                let spares = Beside::start(s, || disk.spares.sync_folder());
                file.sync_data().and(spares.wait())
            }
            None => disk.spares.sync_folder(),
        };
        rest.and(folder.wait())
    })
}

/// A sync running on a thread of its own, or done already when no thread could be started.
enum Beside<'s> {
    Running(std::thread::ScopedJoinHandle<'s, io::Result<()>>),
    Done(io::Result<()>),
}

impl<'s> Beside<'s> {
    fn start<'e, F>(scope: &'s std::thread::Scope<'s, 'e>, job: F) -> Beside<'s>
    where
        F: Fn() -> io::Result<()> + Send + Copy + 's,
    {
        match std::thread::Builder::new().spawn_scoped(scope, job) {
            Ok(handle) => Beside::Running(handle),
            Err(_) => Beside::Done(job()),
        }
    }

    fn wait(self) -> io::Result<()> {
        match self {
            Beside::Running(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a sync thread panicked"))),
            Beside::Done(result) => result,
        }
    }
}

/// Runs blocking disk work on tokio's blocking pool.
pub async fn blocking<T, F>(f: F) -> FsResult<T>
where
    F: FnOnce() -> FsResult<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("a disk task failed: {e}");
            Err(FsError::Io)
        }
    }
}

/// Where a chunk lives and what we know about it.
struct Entry {
    disk: Arc<Disk>,
    subdir: u8,
    version: u32,
    /// Size of the chunk file in bytes (header included).
    len: u64,
    /// Changes whenever the file is replaced or renamed; keys the open-file cache.
    generation: u64,
    damaged: bool,
    /// A crash cannot lose the chunk's name: its folder was synced, or the chunk was made from
    /// a spare file and carries its number (the scan finds it there again). Else the folder
    /// entry of a chunk made empty by the master's order is synced with its first data (a
    /// client's fsync), not when it is made: a chunk lost with its unsynced folder entry held
    /// no data anybody was promised.
    folder_synced: bool,
}

impl Entry {
    fn path(&self, chunk_id: u64) -> PathBuf {
        chunkfile::chunk_path(&self.disk.path, self.subdir, chunk_id, self.version)
    }

    /// Whether a copy of `version` pulled from another server replaces this one: it is of
    /// another version, or damaged.
    fn replaceable_by(&self, version: u32) -> bool {
        self.version != version || self.damaged
    }
}

/// An open chunk, as a write session or a sync uses it.
pub struct Handle {
    pub chunk: ChunkRef,
    pub file: Arc<File>,
    disk: Arc<Disk>,
}

/// A chunk file's descriptor for direct reads (see [`Store::read_blocks_direct`]), kept by a
/// reader for its next reads of the same file.
#[derive(Default)]
pub struct DirectReads {
    /// The file it was opened for: a chunk whose file was opened anew gets a new one.
    of: Option<Arc<File>>,
    direct: Option<File>,
    /// A file system refused direct I/O: this reader reads through the page cache.
    refused: bool,
}

impl DirectReads {
    /// The descriptor for direct reads of `file`, opened if need be.
    fn of(&mut self, file: &Arc<File>) -> Option<&File> {
        if self.refused {
            return None;
        }
        if !self.of.as_ref().is_some_and(|f| Arc::ptr_eq(f, file)) {
            self.direct = chunkfile::open_direct(file);
            self.refused = self.direct.is_none();
            self.of = Some(Arc::clone(file));
        }
        self.direct.as_ref()
    }
}

/// A chunk being built in a temporary file (creation, replication). Dropping it without
/// [`Store::commit_new`] removes the temporary file.
pub struct NewChunk {
    chunk: ChunkRef,
    file: File,
    disk: Arc<Disk>,
    subdir: u8,
    tmp: PathBuf,
    /// Replace a copy of another version on commit (replication).
    replaces_stale: bool,
    /// Made from a spare file and marked with its number: a crash that loses the rename
    /// leaves it where the scan finds it again.
    marked: bool,
    committed: bool,
}

impl NewChunk {
    /// Writes block `block`: a whole block, or the start of the chunk's last block; `crc` is
    /// the CRC of the block padded with zeros.
    pub fn write_block(&self, block: u32, data: &[u8], crc: u32) -> FsResult<()> {
        chunkfile::write_block(&self.file, block, data, crc).map_err(|e| {
            io_error(
                &self.disk,
                &format!("cannot write {}", self.tmp.display()),
                e,
            )
        })
    }

    /// Makes the new chunk's data durable before it gets its final name.
    pub fn sync(&self) -> FsResult<()> {
        self.file.sync_data().map_err(|e| {
            io_error(
                &self.disk,
                &format!("cannot sync {}", self.tmp.display()),
                e,
            )
        })
    }
}

impl Drop for NewChunk {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = std::fs::remove_file(&self.tmp) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!("cannot remove {}: {e}", self.tmp.display());
                }
            }
        }
    }
}

/// Logs a failed disk operation and maps it to a status: a full disk (ENOSPC, EDQUOT) is
/// `NoSpace`, anything else is `Io` and counts as an error of the disk.
fn io_error(disk: &Disk, what: &str, e: io::Error) -> FsError {
    if matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) {
        tracing::warn!("{what}: hdd folder {} is full ({e})", disk.path.display());
        return FsError::NoSpace;
    }
    disk.count_error();
    tracing::warn!("{what}: {e} (hdd folder {})", disk.path.display());
    FsError::Io
}

/// Marks a chunk as being written (a write session is open on it) while it lives; the
/// background test leaves such chunks alone.
pub struct Writing {
    store: Arc<Store>,
    chunk_id: u64,
}

impl Drop for Writing {
    fn drop(&mut self) {
        let mut writing = self.store.writing.lock();
        if let MapEntry::Occupied(mut o) = writing.entry(self.chunk_id) {
            *o.get_mut() -= 1;
            if *o.get() == 0 {
                o.remove();
            }
        }
    }
}

pub struct Store {
    disks: DiskSet,
    chunks: Mutex<HashMap<u64, Entry>>,
    /// Chunks with open write sessions, and how many.
    writing: Mutex<HashMap<u64, u32>>,
    files: FileCache,
    stripes: Vec<RwLock<()>>,
    next_generation: AtomicU64,
    events: mpsc::UnboundedSender<CsToMaster>,
    pool: Arc<BufPool>,
    /// The key of the master's chunk tokens.
    pub access: crate::access::Access,
    creations: Creations,
    /// Disks for the thread that tends their spare files.
    spare_thread: std::sync::mpsc::Sender<Arc<Disk>>,
}

impl Store {
    /// A store over `disks`; reports for the master (damaged or lost chunks) come out of the
    /// returned receiver.
    pub fn new(disks: DiskSet) -> (Arc<Store>, mpsc::UnboundedReceiver<CsToMaster>) {
        let (events, rx) = mpsc::unbounded_channel();
        let store = Store {
            disks,
            chunks: Mutex::new(HashMap::new()),
            writing: Mutex::new(HashMap::new()),
            files: FileCache::new(FILE_CACHE_SIZE),
            stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
            next_generation: AtomicU64::new(1),
            events,
            pool: BufPool::new(POOL_BUFFERS),
            access: Default::default(),
            creations: Creations::default(),
            spare_thread: crate::spares::start_thread(),
        };
        (Arc::new(store), rx)
    }

    /// Queues making spare files on `disk` when it runs low.
    fn top_up_spares(&self, disk: &Arc<Disk>) {
        if disk.takes_new_chunks() && disk.spares.claim_fill() {
            // The thread gone (it could not start): the disk keeps its claim, and new chunks
            // are made as files of their own.
            let _ = self.spare_thread.send(Arc::clone(disk));
        }
    }

    /// Removes a deleted chunk's file (`len` bytes), keeping it as a spare when its disk takes
    /// new chunks, has room to spare and wants more spares.
    fn remove_chunk_file(&self, disk: &Arc<Disk>, path: &Path, len: u64) -> io::Result<()> {
        let roomy = || {
            disk.space(0)
                .is_ok_and(|(_, avail)| avail >= crate::spares::RECYCLE_ROOM)
        };
        if disk.takes_new_chunks() && roomy() {
            if let Some(queue) = disk.spares.recycle(path, len) {
                if queue {
                    let _ = self.spare_thread.send(Arc::clone(disk));
                }
                return Ok(());
            }
        }
        std::fs::remove_file(path)
    }

    pub fn disks(&self) -> &DiskSet {
        &self.disks
    }

    pub fn pool(&self) -> &Arc<BufPool> {
        &self.pool
    }

    fn generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
    }

    fn stripe(&self, chunk_id: u64) -> &RwLock<()> {
        &self.stripes[(chunk_id % STRIPES as u64) as usize]
    }

    /// Finds the chunk files on a disk (in any subfolder) and registers them. Leftover
    /// temporary files are removed. Returns the number of chunks registered.
    pub fn scan(&self, disk: &Arc<Disk>) -> io::Result<usize> {
        if !disk.marked_for_removal() {
            if let Err(e) = chunkfile::make_subdirs(&disk.path) {
                // Not fatal: the chunks already there are served, a new chunk makes its
                // folder when it needs it.
                tracing::warn!(
                    "cannot make the chunk subfolders of {}: {e}",
                    disk.path.display()
                );
            }
        }
        let mut added = 0;
        for sub in std::fs::read_dir(&disk.path)? {
            let sub = sub?;
            let Some(subdir) = sub
                .file_name()
                .to_str()
                .and_then(chunkfile::parse_subdir_name)
            else {
                continue;
            };
            if !sub.file_type()?.is_dir() {
                continue;
            }
            let found = match scan_subdir(&sub.path()) {
                Ok(f) => f,
                Err(e) => {
                    disk.count_error();
                    tracing::error!(
                        "cannot scan {}: {e}; its chunks are not served",
                        sub.path().display()
                    );
                    continue;
                }
            };
            let mut map = self.chunks.lock();
            for (chunk_id, version, len) in found {
                if self.register(&mut map, disk, subdir, chunk_id, version, len) {
                    added += 1;
                }
            }
        }
        for claimed in disk.spares.take_claimed() {
            if self.put_back(disk, claimed) {
                added += 1;
            }
        }
        self.top_up_spares(disk);
        Ok(added)
    }

    /// Moves a new chunk that a crash left in its spare file (the rename was lost) into its
    /// place, and registers it. A chunk registered already keeps its file: the spare is a
    /// leftover and is removed.
    fn put_back(&self, disk: &Arc<Disk>, found: Claimed) -> bool {
        let id = found.chunk_id;
        if self.chunks.lock().contains_key(&id) {
            tracing::warn!(
                "{} holds chunk {id:016X}, which is also in a chunk folder; removed",
                found.path.display()
            );
            if let Err(e) = std::fs::remove_file(&found.path) {
                tracing::warn!("cannot remove {}: {e}", found.path.display());
            }
            return false;
        }
        let subdir = chunkfile::default_subdir(id);
        let path = chunkfile::chunk_path(&disk.path, subdir, id, found.version);
        let moved =
            std::fs::rename(&found.path, &path).and_then(|()| sync_new_chunk(None, &path, disk));
        if let Err(e) = moved {
            disk.count_error();
            tracing::error!(
                "cannot move {} back to {} (a crash lost the rename): {e}; the chunk is not \
                 served",
                found.path.display(),
                path.display()
            );
            return false;
        }
        tracing::info!(
            "chunk {id:016X} version {}: moved back from {} to {}, where a crash had left it",
            found.version,
            found.path.display(),
            path.display()
        );
        let mut map = self.chunks.lock();
        self.register(&mut map, disk, subdir, id, found.version, found.len)
    }

    /// Adds a scanned chunk; of two copies of one chunk the higher version wins.
    fn register(
        &self,
        map: &mut HashMap<u64, Entry>,
        disk: &Arc<Disk>,
        subdir: u8,
        chunk_id: u64,
        version: u32,
        len: u64,
    ) -> bool {
        let entry = Entry {
            disk: Arc::clone(disk),
            subdir,
            version,
            len,
            generation: self.generation(),
            damaged: false,
            folder_synced: true,
        };
        match map.entry(chunk_id) {
            MapEntry::Vacant(v) => {
                disk.add_chunk(len);
                v.insert(entry);
                true
            }
            MapEntry::Occupied(mut o) => {
                let (keep, skip) = if version > o.get().version {
                    (entry.path(chunk_id), o.get().path(chunk_id))
                } else {
                    (o.get().path(chunk_id), entry.path(chunk_id))
                };
                tracing::warn!(
                    "chunk {chunk_id:016X} is on disk twice: using {}, ignoring {} (left \
                     untouched; remove it by hand once the chunk is safe)",
                    keep.display(),
                    skip.display()
                );
                if version > o.get().version {
                    o.get().disk.remove_chunk(o.get().len);
                    disk.add_chunk(len);
                    o.insert(entry);
                }
                false
            }
        }
    }

    /// Every chunk held, for registration with the master.
    pub fn chunk_refs(&self) -> Vec<ChunkRef> {
        self.chunks
            .lock()
            .iter()
            .map(|(&chunk_id, e)| ChunkRef {
                chunk_id,
                version: e.version,
            })
            .collect()
    }

    /// Chunks found damaged since start (reported again after a reconnection).
    pub fn damaged_refs(&self) -> Vec<ChunkRef> {
        self.chunks
            .lock()
            .iter()
            .filter(|(_, e)| e.damaged)
            .map(|(&chunk_id, e)| ChunkRef {
                chunk_id,
                version: e.version,
            })
            .collect()
    }

    pub fn chunk_count(&self) -> usize {
        self.chunks.lock().len()
    }

    /// The chunks on `disk`; damaged copies are left out when `with_damaged` is false.
    pub fn chunks_on(&self, disk: &Arc<Disk>, with_damaged: bool) -> Vec<ChunkRef> {
        self.chunks
            .lock()
            .iter()
            .filter(|(_, e)| Arc::ptr_eq(&e.disk, disk) && (with_damaged || !e.damaged))
            .map(|(&chunk_id, e)| ChunkRef {
                chunk_id,
                version: e.version,
            })
            .collect()
    }

    /// Every disk marked for removal with every chunk on it, for the master.
    pub fn marked_chunks(&self) -> Vec<MarkedDisk> {
        self.disks
            .all()
            .iter()
            .filter(|d| d.marked_for_removal())
            .map(|d| MarkedDisk {
                path: d.path.display().to_string(),
                chunks: self.chunks_on(d, true),
            })
            .collect()
    }

    /// Queues the current list of chunks on disks marked for removal for the master.
    pub fn report_marked(&self) {
        let _ = self
            .events
            .send(CsToMaster::MarkedChunks(self.marked_chunks()));
    }

    /// Marks the chunk as being written until the returned guard is dropped.
    pub fn writing(self: &Arc<Self>, chunk_id: u64) -> Writing {
        *self.writing.lock().entry(chunk_id).or_insert(0) += 1;
        Writing {
            store: Arc::clone(self),
            chunk_id,
        }
    }

    fn is_writing(&self, chunk_id: u64) -> bool {
        self.writing.lock().contains_key(&chunk_id)
    }

    pub fn space_reports(&self) -> Vec<DiskReport> {
        self.disks.reports()
    }

    /// Checks that the chunk is here at this version (no disk access).
    pub fn check(&self, chunk: ChunkRef) -> FsResult<()> {
        match self.chunks.lock().get(&chunk.chunk_id) {
            None => Err(FsError::NoChunk),
            Some(e) if e.version != chunk.version => Err(FsError::WrongVersion),
            Some(_) => Ok(()),
        }
    }

    /// Opens the chunk (from the cache when possible), checking its version and header.
    pub fn open(&self, chunk: ChunkRef) -> FsResult<Handle> {
        self.open_as(chunk, true)
    }

    /// [`Store::open`] of a chunk whose file is open already (no system call: fine on an
    /// async thread); `None` when the file would have to be opened.
    pub fn open_cached(&self, chunk: ChunkRef) -> Option<FsResult<Handle>> {
        let map = self.chunks.lock();
        let Some(e) = map.get(&chunk.chunk_id) else {
            return Some(Err(FsError::NoChunk));
        };
        if e.version != chunk.version {
            return Some(Err(FsError::WrongVersion));
        }
        let file = self.files.get(chunk.chunk_id, e.generation)?;
        Some(Ok(Handle {
            chunk,
            file,
            disk: Arc::clone(&e.disk),
        }))
    }

    /// Like [`Store::open`]; a file that had to be opened is kept in the cache only if
    /// `keep` (the background test and length queries do not push out the files in use).
    fn open_as(&self, chunk: ChunkRef, keep: bool) -> FsResult<Handle> {
        // A rename between looking the chunk up and opening its file makes the open fail;
        // look it up again then (a few times at most).
        for _ in 0..3 {
            let (generation, disk, path) = {
                let map = self.chunks.lock();
                let e = map.get(&chunk.chunk_id).ok_or(FsError::NoChunk)?;
                if e.version != chunk.version {
                    return Err(FsError::WrongVersion);
                }
                if let Some(file) = self.files.get(chunk.chunk_id, e.generation) {
                    return Ok(Handle {
                        chunk,
                        file,
                        disk: Arc::clone(&e.disk),
                    });
                }
                (e.generation, Arc::clone(&e.disk), e.path(chunk.chunk_id))
            };
            let file = match chunkfile::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if self.forget_lost(chunk, generation, &path) {
                        return Err(FsError::NoChunk);
                    }
                    continue;
                }
                Err(e) => {
                    return Err(io_error(
                        &disk,
                        &format!("cannot open chunk file {}", path.display()),
                        e,
                    ))
                }
            };
            match chunkfile::read_header(&file) {
                Ok((id, _)) if id == chunk.chunk_id => {}
                Ok((id, _)) => {
                    self.mark_damaged(
                        chunk,
                        &disk,
                        &format!("{} names chunk {id:016X} in its header", path.display()),
                    );
                    return Err(FsError::Io);
                }
                Err(chunkfile::HeaderError::Io(e)) => {
                    return Err(io_error(
                        &disk,
                        &format!("cannot read chunk file {}", path.display()),
                        e,
                    ))
                }
                Err(e) => {
                    self.mark_damaged(chunk, &disk, &format!("{}: {e}", path.display()));
                    return Err(FsError::Io);
                }
            }
            let file = Arc::new(file);
            if keep {
                self.files
                    .insert(chunk.chunk_id, generation, Arc::clone(&file));
            }
            return Ok(Handle { chunk, file, disk });
        }
        Err(FsError::Io)
    }

    /// The chunk's file vanished: forget it and tell the master, unless the registry entry
    /// changed meanwhile (then the caller looks again).
    fn forget_lost(&self, chunk: ChunkRef, generation: u64, path: &Path) -> bool {
        let mut map = self.chunks.lock();
        match map.get(&chunk.chunk_id) {
            Some(e) if e.generation == generation => {
                if let Some(e) = map.remove(&chunk.chunk_id) {
                    e.disk.remove_chunk(e.len);
                    e.disk.count_error();
                }
                drop(map);
                tracing::warn!(
                    "chunk file {} has disappeared; reporting the chunk lost to the master",
                    path.display()
                );
                let _ = self.events.send(CsToMaster::ChunkLost(chunk));
                true
            }
            _ => false,
        }
    }

    /// A copy found damaged never moves to a new version: the master, which fails it over to
    /// the other copies, drops it. Its report (sent once) may reach the master after a new
    /// version was given out, for which it no longer counts; a damaged copy that took the new
    /// version stayed in every write chain of the chunk, failing each.
    fn refuse_damaged(&self, chunk: ChunkRef) -> FsResult<()> {
        match self.chunks.lock().get(&chunk.chunk_id) {
            Some(e) if e.damaged => Err(FsError::Crc),
            _ => Ok(()),
        }
    }

    /// Records a damaged chunk, counts a disk error and tells the master (once per chunk).
    fn mark_damaged(&self, chunk: ChunkRef, disk: &Disk, why: &str) {
        disk.count_error();
        let newly = match self.chunks.lock().get_mut(&chunk.chunk_id) {
            Some(e) if e.version == chunk.version => !std::mem::replace(&mut e.damaged, true),
            _ => false,
        };
        tracing::warn!(
            "chunk {:016X} version {} on {}: {why}; reported damaged to the master",
            chunk.chunk_id,
            chunk.version,
            disk.path.display()
        );
        if newly {
            let _ = self.events.send(CsToMaster::ChunkDamaged(chunk));
        }
    }

    /// Bytes of data in the chunk (its file's size without the header), at most a chunk.
    pub fn data_length(&self, chunk: ChunkRef) -> FsResult<u32> {
        let h = self.open_as(chunk, false)?;
        let len = h.file.metadata().map_err(|e| {
            io_error(
                &h.disk,
                &format!("cannot stat chunk {:016X}", chunk.chunk_id),
                e,
            )
        })?;
        // At most CHUNK_SIZE (64 MiB), so it fits.
        Ok(len.len().saturating_sub(DATA_OFFSET).min(CHUNK_SIZE) as u32)
    }

    /// Background test of one block: reads it and its CRC entry (holding the chunk's stripe
    /// only for that) and compares. A mismatch or an unreadable block marks the copy damaged
    /// (reported to the master once) and fails. `Ok(false)`: the chunk is being written and
    /// was not tested.
    pub fn test_block(&self, chunk: ChunkRef, block: u32, buf: &mut Block) -> FsResult<bool> {
        if self.is_writing(chunk.chunk_id) {
            return Ok(false);
        }
        let h = self.open_as(chunk, false)?;
        let mut table = [0u32; 1];
        let read = {
            let _guard = self.stripe(chunk.chunk_id).read();
            chunkfile::read_crcs(&h.file, block, &mut table, Wait::Yes)
                .and_then(|()| chunkfile::read_block(&h.file, block, &mut buf[..], Wait::Yes))
        };
        if let Err(e) = read {
            self.mark_damaged(
                chunk,
                &h.disk,
                &format!("background test: cannot read block {block}: {e}"),
            );
            return Err(FsError::Io);
        }
        let crc = crc32fast::hash(&buf[..]);
        if crc != table[0] {
            self.mark_damaged(
                chunk,
                &h.disk,
                &format!(
                    "background test: CRC mismatch in block {block} (table {:08X}, data \
                     {crc:08X})",
                    table[0]
                ),
            );
            return Err(FsError::Crc);
        }
        Ok(true)
    }

    /// Reads whole blocks `first ..` into `buf` (a multiple of the block size), checking each
    /// against the CRC table; `crcs` receives the CRC of each block read.
    pub fn read_blocks(
        &self,
        chunk: ChunkRef,
        first: u32,
        buf: &mut [u8],
        crcs: &mut [u32],
    ) -> FsResult<()> {
        let h = self.open(chunk)?;
        let _guard = self.stripe(chunk.chunk_id).read();
        self.read_open_blocks(&h, first, buf, crcs, Wait::Yes)
            .unwrap_or(Err(FsError::Io))
    }

    /// [`Store::read_blocks`] past the page cache, through the chunk's descriptor for direct
    /// I/O that `direct` keeps for the caller's next reads; `buf` is page-aligned. Through
    /// the page cache where the file system refuses direct I/O.
    pub fn read_blocks_direct(
        &self,
        chunk: ChunkRef,
        first: u32,
        buf: &mut [u8],
        crcs: &mut [u32],
        direct: &mut DirectReads,
    ) -> FsResult<()> {
        let h = self.open(chunk)?;
        let _guard = self.stripe(chunk.chunk_id).read();
        let count = buf.len() / BS;
        if crcs.len() < count {
            return Err(FsError::Inval);
        }
        let cannot = |e: io::Error| {
            io_error(
                &h.disk,
                &format!("cannot read chunk {:016X}", chunk.chunk_id),
                e,
            )
        };
        let read = match direct.of(&h.file) {
            Some(file) => chunkfile::read_blocks_direct(file, first, buf).map_err(cannot)?,
            None => None,
        };
        let Some(held) = read else {
            direct.refused = true;
            return self
                .read_open_blocks(&h, first, buf, crcs, Wait::Yes)
                .unwrap_or(Err(FsError::Io));
        };
        chunkfile::read_crcs(&h.file, first, &mut crcs[..count], Wait::Yes).map_err(cannot)?;
        self.check_blocks(&h, first, buf, crcs, |i| held > i * BS)
    }

    /// Closes the chunk's file kept open (its next use opens it on a disk thread).
    #[cfg(test)]
    pub(crate) fn close_file(&self, chunk_id: u64) {
        self.files.remove(chunk_id);
    }

    /// Starts the disk reads of blocks `first .. first + count` of a chunk into the page
    /// cache, without waiting for them (a hint: failures are ignored).
    pub fn start_reads(&self, chunk: ChunkRef, first: u32, count: u32) {
        if let Ok(h) = self.open(chunk) {
            chunkfile::start_reads(&h.file, first, count);
        }
    }

    /// True when the chunk's file is open and the page cache holds all of blocks
    /// `first .. first + count` (no system call that could wait).
    pub fn blocks_cached(&self, chunk: ChunkRef, first: u32, count: u32) -> bool {
        match self.open_cached(chunk) {
            Some(Ok(h)) => chunkfile::blocks_cached(&h.file, first, count),
            _ => false,
        }
    }

    /// [`Store::read_blocks`] without a system call that could wait: the chunk's file is open
    /// already, no write holds its blocks, and the blocks are in the page cache. Fine on an
    /// async thread; `None` when it would have to wait (read on a disk thread then).
    pub fn read_cached_blocks(
        &self,
        chunk: ChunkRef,
        first: u32,
        buf: &mut [u8],
        crcs: &mut [u32],
    ) -> Option<FsResult<()>> {
        let h = match self.open_cached(chunk)? {
            Ok(h) => h,
            Err(status) => return Some(Err(status)),
        };
        let _guard = self.stripe(chunk.chunk_id).try_read()?;
        self.read_open_blocks(&h, first, buf, crcs, Wait::CachedOnly)
    }

    /// Reads and checks blocks of an open chunk (its stripe lock held); `None` when a read
    /// that may not wait would have to.
    fn read_open_blocks(
        &self,
        h: &Handle,
        first: u32,
        buf: &mut [u8],
        crcs: &mut [u32],
        wait: Wait,
    ) -> Option<FsResult<()>> {
        let chunk = h.chunk;
        let count = buf.len() / BS;
        if crcs.len() < count {
            return Some(Err(FsError::Inval));
        }
        let failed = |e: io::Error| {
            if e.kind() == io::ErrorKind::WouldBlock {
                return None;
            }
            Some(Err(io_error(
                &h.disk,
                &format!("cannot read chunk {:016X}", chunk.chunk_id),
                e,
            )))
        };
        if let Err(e) = chunkfile::read_crcs(&h.file, first, &mut crcs[..count], wait) {
            return failed(e);
        }
        let mut held = [false; BLOCKS_PER_CHUNK as usize];
        for (i, block) in buf.chunks_exact_mut(BS).enumerate() {
            match chunkfile::read_block(&h.file, first + i as u32, block, wait) {
                Ok(on_disk) => held[i] = on_disk,
                Err(e) => return failed(e),
            }
        }
        Some(self.check_blocks(h, first, buf, crcs, |i| held[i]))
    }

    /// Checks blocks `first ..` read into `buf` against their CRC entries `crcs`; `held(i)`
    /// tells whether the file held any byte of the `i`-th (else it reads as zeros).
    fn check_blocks(
        &self,
        h: &Handle,
        first: u32,
        buf: &[u8],
        crcs: &[u32],
        held: impl Fn(usize) -> bool,
    ) -> FsResult<()> {
        for (i, block) in buf.chunks_exact(BS).enumerate() {
            let crc = if held(i) {
                crc32fast::hash(block)
            } else {
                ZERO_BLOCK_CRC
            };
            if crc != crcs[i] {
                self.mark_damaged(
                    h.chunk,
                    &h.disk,
                    &format!(
                        "CRC mismatch in block {} (table {:08X}, data {crc:08X})",
                        first + i as u32,
                        crcs[i]
                    ),
                );
                return Err(FsError::Crc);
            }
        }
        Ok(())
    }

    /// Writes `data` at `offset` of an open chunk (read-modify-write for partial blocks).
    pub fn write(
        &self,
        h: &Handle,
        offset: u32,
        data: &[u8],
        crc: u32,
        scratch: &mut Block,
    ) -> FsResult<()> {
        let result = {
            let _guard = self.stripe(h.chunk.chunk_id).write();
            chunkfile::write_data(&h.file, offset, data, crc, scratch)
        };
        if let Some(m) = result
            .as_ref()
            .err()
            .and_then(chunkfile::CrcMismatch::in_error)
        {
            // The writer fails over to the other copies, as a reader does.
            self.mark_damaged(h.chunk, &h.disk, &format!("partial write: {m}"));
            return Err(FsError::Crc);
        }
        result.map_err(|e| {
            io_error(
                &h.disk,
                &format!("cannot write chunk {:016X}", h.chunk.chunk_id),
                e,
            )
        })
    }

    /// Writes whole blocks that follow each other from `offset` (a block boundary), with
    /// their CRCs: in one direct write when `direct` takes them, else block by block as
    /// [`Store::write`] does (and `direct` is dropped when the file system refused it).
    pub fn write_blocks(
        &self,
        h: &Handle,
        direct: &mut Option<File>,
        offset: u32,
        blocks: &[&[u8]],
        crcs: &[u32],
        scratch: &mut Block,
    ) -> FsResult<()> {
        let aligned = blocks.iter().all(|b| chunkfile::is_aligned(b));
        if let Some(d) = direct.as_ref().filter(|_| aligned) {
            let first = offset / BS as u32;
            let result = {
                let _guard = self.stripe(h.chunk.chunk_id).write();
                chunkfile::write_blocks_direct(&h.file, d, first, blocks, crcs)
            };
            match result {
                Ok(true) => return Ok(()),
                Ok(false) => *direct = None,
                Err(e) => {
                    return Err(io_error(
                        &h.disk,
                        &format!("cannot write chunk {:016X}", h.chunk.chunk_id),
                        e,
                    ))
                }
            }
        }
        for (i, (block, crc)) in blocks.iter().zip(crcs).enumerate() {
            let at = offset + (i * BS) as u32;
            self.write(h, at, block, *crc, scratch)?;
        }
        Ok(())
    }

    /// Notes that the chunk's data now reaches at least `data_end` bytes (space accounting).
    pub fn note_extent(&self, h: &Handle, data_end: u64) {
        let len = DATA_OFFSET + data_end;
        if let Some(e) = self.chunks.lock().get_mut(&h.chunk.chunk_id) {
            if len > e.len {
                e.disk.resize(e.len, len);
                e.len = len;
            }
        }
    }

    /// Makes an open chunk's data durable (fdatasync), and its name if that is not yet.
    pub fn sync(&self, h: &Handle) -> FsResult<()> {
        let err = |e| {
            io_error(
                &h.disk,
                &format!("cannot sync chunk {:016X}", h.chunk.chunk_id),
                e,
            )
        };
        let id = h.chunk.chunk_id;
        let unsynced = self
            .chunks
            .lock()
            .get(&id)
            .filter(|e| !e.folder_synced)
            .map(|e| (e.path(id), e.generation));
        let Some((path, generation)) = unsynced else {
            return h.file.sync_data().map_err(err);
        };
        sync_new_chunk(Some(&h.file), &path, &h.disk).map_err(err)?;
        if let Some(e) = self.chunks.lock().get_mut(&id) {
            if e.generation == generation {
                e.folder_synced = true;
            }
        }
        Ok(())
    }

    /// Starts a new chunk in a temporary file on the disk with the most room. Fails if the
    /// chunk is here in any version.
    pub fn begin_new(&self, chunk: ChunkRef) -> FsResult<NewChunk> {
        self.begin(chunk, false)
    }

    /// Like [`Store::begin_new`] for a copy pulled from another server: a copy held here of
    /// another (stale) version, or of this version but damaged, is replaced when the new one
    /// is committed.
    pub fn begin_copy(&self, chunk: ChunkRef) -> FsResult<NewChunk> {
        self.begin(chunk, true)
    }

    fn begin(&self, chunk: ChunkRef, replaces_stale: bool) -> FsResult<NewChunk> {
        match self.chunks.lock().get(&chunk.chunk_id) {
            Some(e) if !replaces_stale || !e.replaceable_by(chunk.version) => {
                return Err(FsError::Exist)
            }
            _ => {}
        }
        let disk = self.disks.choose_for_new().ok_or_else(|| {
            tracing::warn!(
                "no room for chunk {:016X}: every hdd folder is full or marked for removal",
                chunk.chunk_id
            );
            FsError::NoSpace
        })?;
        let subdir = chunkfile::default_subdir(chunk.chunk_id);
        let spare = disk
            .spares
            .take()
            .and_then(|p| Spares::number_of(&p).map(|n| (p, n)));
        self.top_up_spares(&disk);
        if let Some((spare, number)) = spare {
            match chunkfile::reuse(&spare, chunk.chunk_id, chunk.version, number) {
                Ok(file) => {
                    return Ok(NewChunk {
                        chunk,
                        file,
                        disk,
                        subdir,
                        tmp: spare,
                        replaces_stale,
                        marked: true,
                        committed: false,
                    })
                }
                Err(e) => tracing::warn!(
                    "cannot use the spare file {} for chunk {:016X}: {e}; making a file for it",
                    spare.display(),
                    chunk.chunk_id
                ),
            }
        }
        let tmp = chunkfile::tmp_path(&disk.path, subdir, chunk.chunk_id, chunk.version);
        let file = match chunkfile::create(&tmp, chunk.chunk_id, chunk.version) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A leftover of an interrupted operation on this chunk.
                let _ = std::fs::remove_file(&tmp);
                chunkfile::create(&tmp, chunk.chunk_id, chunk.version)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The subfolder was made at the scan; somebody removed it since.
                chunkfile::make_subdir(&disk.path.join(chunkfile::subdir_name(subdir)))
                    .and_then(|()| chunkfile::create(&tmp, chunk.chunk_id, chunk.version))
            }
            other => other,
        }
        .map_err(|e| io_error(&disk, &format!("cannot create {}", tmp.display()), e))?;
        Ok(NewChunk {
            chunk,
            file,
            disk,
            subdir,
            tmp,
            replaces_stale,
            marked: false,
            committed: false,
        })
    }

    /// Gives a new chunk its final name and registers it, durably.
    pub fn commit_new(&self, new: NewChunk) -> FsResult<()> {
        self.commit(new, true)
    }

    fn commit(&self, mut new: NewChunk, sync_folder: bool) -> FsResult<()> {
        let len = match new.file.metadata() {
            Ok(m) => m.len(),
            Err(e) => return Err(io_error(&new.disk, "cannot stat a new chunk", e)),
        };
        let id = new.chunk.chunk_id;
        let path = chunkfile::chunk_path(&new.disk.path, new.subdir, id, new.chunk.version);
        let mut map = self.chunks.lock();
        let stale = match map.get(&id) {
            None => None,
            Some(e) if new.replaces_stale && e.replaceable_by(new.chunk.version) => {
                Some((e.path(id), e.version))
            }
            Some(_) => return Err(FsError::Exist),
        };
        let renamed = match std::fs::rename(&new.tmp, &path) {
            // The subfolder was made at the scan; somebody removed it since.
            Err(e) if e.kind() == io::ErrorKind::NotFound && new.tmp.exists() => {
                chunkfile::make_subdir(&new.disk.path.join(chunkfile::subdir_name(new.subdir)))
                    .and_then(|()| std::fs::rename(&new.tmp, &path))
            }
            other => other,
        };
        renamed.map_err(|e| {
            io_error(
                &new.disk,
                &format!("cannot rename {} to {}", new.tmp.display(), path.display()),
                e,
            )
        })?;
        new.committed = true;
        if sync_folder {
            sync_new_chunk(None, &path, &new.disk).map_err(|e| {
                io_error(
                    &new.disk,
                    &format!("cannot sync the folder of {}", path.display()),
                    e,
                )
            })?;
        }
        if let Some((old_path, old_version)) = stale {
            // A damaged copy of the same version in the same folder was overwritten by the
            // rename; anywhere else the old file is removed.
            if old_path != path {
                if let Err(e) = std::fs::remove_file(&old_path) {
                    if e.kind() != io::ErrorKind::NotFound {
                        tracing::warn!("cannot remove {}: {e}", old_path.display());
                    }
                }
            }
            if let Some(old) = map.remove(&id) {
                old.disk.remove_chunk(old.len);
            }
            self.files.remove(id);
            if old_version == new.chunk.version {
                tracing::info!(
                    "chunk {id:016X} version {old_version}: damaged copy replaced by a fresh copy"
                );
            } else {
                tracing::info!(
                    "chunk {id:016X}: version {old_version} replaced by the copied version {}",
                    new.chunk.version
                );
            }
        }
        new.disk.add_chunk(len);
        let generation = self.generation();
        // The chunk is about to be written (a new chunk's chain, a copy's readers): its file
        // stays open.
        if let Ok(file) = new.file.try_clone() {
            self.files.insert(id, generation, Arc::new(file));
        }
        map.insert(
            id,
            Entry {
                disk: Arc::clone(&new.disk),
                subdir: new.subdir,
                version: new.chunk.version,
                len,
                generation,
                damaged: false,
                folder_synced: sync_folder || new.marked,
            },
        );
        Ok(())
    }

    /// Makes a new, empty chunk (its folder entry is synced with its data, see [`Store::sync`]).
    /// Write chains waiting for the chunk hear of the outcome.
    pub fn create(&self, chunk: ChunkRef) -> FsResult<()> {
        let outcome = self
            .begin_new(chunk)
            .and_then(|new| self.commit(new, false));
        self.creations.note(chunk.chunk_id, outcome);
        outcome
    }

    /// The outcomes of creation orders, for write chains that came first.
    pub fn creations(&self) -> &Creations {
        &self.creations
    }

    /// Removes the chunk if it has this version; a chunk that is already gone is fine.
    pub fn delete(&self, chunk: ChunkRef) -> FsResult<()> {
        {
            let mut map = self.chunks.lock();
            let Some(e) = map.get(&chunk.chunk_id) else {
                return Ok(());
            };
            if e.version != chunk.version {
                return Err(FsError::WrongVersion);
            }
            let path = e.path(chunk.chunk_id);
            match self.remove_chunk_file(&e.disk, &path, e.len) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(io_error(
                        &e.disk,
                        &format!("cannot delete {}", path.display()),
                        err,
                    ))
                }
            }
            if let Some(e) = map.remove(&chunk.chunk_id) {
                e.disk.remove_chunk(e.len);
            }
        }
        self.files.remove(chunk.chunk_id);
        Ok(())
    }

    /// Gives the chunk a new version: renames its file and rewrites the header. A damaged
    /// copy is refused (see [`Store::refuse_damaged`]).
    pub fn set_version(&self, chunk: ChunkRef, new_version: u32) -> FsResult<()> {
        if new_version == chunk.version {
            return self.check(chunk);
        }
        self.refuse_damaged(chunk)?;
        let path = {
            let mut map = self.chunks.lock();
            let e = map.get_mut(&chunk.chunk_id).ok_or(FsError::NoChunk)?;
            if e.version != chunk.version {
                return Err(FsError::WrongVersion);
            }
            let old = e.path(chunk.chunk_id);
            let new = chunkfile::chunk_path(&e.disk.path, e.subdir, chunk.chunk_id, new_version);
            std::fs::rename(&old, &new).map_err(|err| {
                io_error(
                    &e.disk,
                    &format!("cannot rename {} to {}", old.display(), new.display()),
                    err,
                )
            })?;
            e.version = new_version;
            e.generation = self.generation();
            // Synced below, with the header, before the new version is confirmed.
            e.folder_synced = true;
            new
        };
        self.files.remove(chunk.chunk_id);
        let h = self.open(ChunkRef {
            chunk_id: chunk.chunk_id,
            version: new_version,
        })?;
        // The master counts on the new version once this returns: header, name and folder
        // are on disk first.
        chunkfile::write_header(&h.file, chunk.chunk_id, new_version)
            .and_then(|()| h.file.sync_data())
            .and_then(|()| chunkfile::sync_folder_of(&path))
            .map_err(|e| {
                io_error(
                    &h.disk,
                    &format!("cannot rewrite the header of chunk {:016X}", chunk.chunk_id),
                    e,
                )
            })
    }

    /// Copy on write: a new chunk `copy` holding the data of `chunk` (CRCs checked on the way),
    /// durable before it is registered. Blocks of zeros stay holes.
    pub fn duplicate(&self, chunk: ChunkRef, copy: ChunkRef) -> FsResult<()> {
        let len = self.data_length(chunk)? as usize;
        let new = self.begin_new(copy)?;
        let mut buf = vec![0u8; BS];
        let mut crc = [0u32; 1];
        for block in 0..len.div_ceil(BS) {
            self.read_blocks(chunk, block as u32, &mut buf, &mut crc)?;
            if crc[0] == ZERO_BLOCK_CRC && buf.iter().all(|&b| b == 0) {
                continue;
            }
            let data = &buf[..(len - block * BS).min(BS)];
            new.write_block(block as u32, data, crc[0])?;
        }
        new.sync()?;
        self.commit_new(new)
    }

    /// Cuts the chunk to `length` bytes and gives it `new_version`. A damaged copy is refused
    /// (see [`Store::refuse_damaged`]).
    pub fn truncate(&self, chunk: ChunkRef, new_version: u32, length: u32) -> FsResult<()> {
        if u64::from(length) > CHUNK_SIZE {
            return Err(FsError::Inval);
        }
        self.refuse_damaged(chunk)?;
        let h = self.open(chunk)?;
        let mut scratch = chunkfile::new_block();
        let result = {
            let _guard = self.stripe(chunk.chunk_id).write();
            chunkfile::truncate(&h.file, length, &mut scratch)
        };
        result.map_err(|e| {
            io_error(
                &h.disk,
                &format!("cannot truncate chunk {:016X}", chunk.chunk_id),
                e,
            )
        })?;
        if let Some(e) = self.chunks.lock().get_mut(&chunk.chunk_id) {
            let len = DATA_OFFSET + u64::from(length);
            e.disk.resize(e.len, len);
            e.len = len;
        }
        self.set_version(chunk, new_version)
    }
}

/// Chunk files in one subfolder: (chunk id, version, file size). Leftover temporary files are
/// removed.
fn scan_subdir(dir: &Path) -> io::Result<Vec<(u64, u32, u64)>> {
    let mut found = Vec::new();
    for f in std::fs::read_dir(dir)? {
        let f = f?;
        let name = f.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(chunkfile::TMP_SUFFIX)
            && chunkfile::parse_file_name(name.trim_end_matches(chunkfile::TMP_SUFFIX)).is_some()
        {
            tracing::info!("removing unfinished chunk file {}", f.path().display());
            if let Err(e) = std::fs::remove_file(f.path()) {
                tracing::warn!("cannot remove {}: {e}", f.path().display());
            }
            continue;
        }
        let Some((chunk_id, version)) = chunkfile::parse_file_name(name) else {
            continue;
        };
        match f.metadata() {
            Ok(m) => found.push((chunk_id, version, m.len())),
            Err(e) => tracing::warn!("cannot stat {}: {e}; skipped", f.path().display()),
        }
    }
    Ok(found)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::hdd::{Amount, HddEntry, SpaceLimit, Tolerance};
    use moose_common::user::RunAs;

    pub(crate) fn me() -> RunAs {
        RunAs {
            user: "me".into(),
            group: "me".into(),
            uid: nix::unistd::Uid::current().as_raw(),
            gid: nix::unistd::Gid::current().as_raw(),
        }
    }

    /// A store over one fresh temporary disk.
    pub(crate) fn test_store(dir: &Path) -> (Arc<Store>, mpsc::UnboundedReceiver<CsToMaster>) {
        test_store_with(dir, SpaceLimit::Default)
    }

    /// A store over one fresh temporary disk with this space option.
    pub(crate) fn test_store_with(
        dir: &Path,
        limit: SpaceLimit,
    ) -> (Arc<Store>, mpsc::UnboundedReceiver<CsToMaster>) {
        let entry = HddEntry {
            path: dir.to_path_buf(),
            line: 1,
            marked_for_removal: false,
            limit,
        };
        let disk = Arc::new(Disk::open(&entry, &me(), Tolerance::default()).unwrap());
        let set = DiskSet::new(vec![disk.clone()], 0, None).unwrap();
        let (store, events) = Store::new(set);
        store.scan(&disk).unwrap();
        store.access.set_key(crate::access::tests::key());
        (store, events)
    }

    pub(crate) fn write_all(store: &Store, chunk: ChunkRef, offset: u32, data: &[u8]) {
        let h = store.open(chunk).unwrap();
        let mut scratch = chunkfile::new_block();
        store
            .write(&h, offset, data, crc32fast::hash(data), &mut scratch)
            .unwrap();
        store.note_extent(&h, u64::from(offset) + data.len() as u64);
    }

    pub(crate) fn read_all(store: &Store, chunk: ChunkRef, blocks: usize) -> FsResult<Vec<u8>> {
        let mut buf = vec![0u8; blocks * BS];
        let mut crcs = vec![0u32; blocks];
        store.read_blocks(chunk, 0, &mut buf, &mut crcs)?;
        Ok(buf)
    }

    /// Spoils the CRC entry of block 0 of a chunk on `dir` and reads the block, so that the
    /// store finds the copy damaged (and reports it).
    pub(crate) fn damage(store: &Store, dir: &Path, chunk: ChunkRef) {
        use std::os::unix::fs::FileExt;
        let subdir = chunkfile::default_subdir(chunk.chunk_id);
        let path = chunkfile::chunk_path(dir, subdir, chunk.chunk_id, chunk.version);
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(&[0xFF; 4], chunkfile::CRC_OFFSET).unwrap();
        assert_eq!(read_all(store, chunk, 1), Err(FsError::Crc));
    }

    const C: ChunkRef = ChunkRef {
        chunk_id: 0xABCD,
        version: 1,
    };

    #[test]
    fn blocks_in_the_page_cache_are_read_without_waiting_and_others_are_left_to_a_disk_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _events) = test_store(dir.path());
        store.create(C).unwrap();
        let data: Vec<u8> = (0..2 * BS as u32).map(|i| (i % 241) as u8).collect();
        write_all(&store, C, 0, &data);
        let mut buf = vec![0u8; 2 * BS];
        let mut crcs = [0u32; 2];
        // Just written: open and in the page cache.
        let read = store.read_cached_blocks(C, 0, &mut buf, &mut crcs);
        assert_eq!(
            read,
            Some(Ok(())),
            "kernel without RWF_NOWAIT for this file system?"
        );
        assert!(buf == data, "the data read back differs");
        // A write holding the blocks: not waited for.
        {
            let _writing = store.stripe(C.chunk_id).write();
            assert_eq!(store.read_cached_blocks(C, 0, &mut buf, &mut crcs), None);
        }
        // A file not open: opening it is left to a disk thread.
        store.files.remove(C.chunk_id);
        assert_eq!(store.read_cached_blocks(C, 0, &mut buf, &mut crcs), None);
        // Gone: answered at once.
        store.delete(C).unwrap();
        assert_eq!(
            store.read_cached_blocks(C, 0, &mut buf, &mut crcs),
            Some(Err(FsError::NoChunk))
        );
    }

    #[test]
    fn a_scanned_disk_has_every_chunk_subfolder_and_a_removed_one_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _events) = test_store(dir.path());
        for n in 0..=u8::MAX {
            assert!(
                dir.path().join(chunkfile::subdir_name(n)).is_dir(),
                "{n:02X}"
            );
        }
        std::fs::remove_dir(dir.path().join("CD")).unwrap();
        store.create(C).unwrap();
        assert!(dir
            .path()
            .join("CD/chunk_000000000000ABCD_00000001.mfs")
            .exists());
    }

    #[test]
    fn create_write_read_delete() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _events) = test_store(dir.path());
        store.create(C).unwrap();
        assert_eq!(store.create(C), Err(FsError::Exist));
        let path = dir.path().join("CD/chunk_000000000000ABCD_00000001.mfs");
        assert!(path.exists());
        assert_eq!(store.chunk_refs(), vec![C]);

        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        write_all(&store, C, 10, &data);
        let back = read_all(&store, C, 2).unwrap();
        assert_eq!(&back[10..100_010], &data[..]);
        assert!(back[..10].iter().all(|&b| b == 0));
        let report = &store.space_reports()[0];
        assert_eq!(report.chunks, 1);
        assert_eq!(report.used, DATA_OFFSET + 100_010);

        assert_eq!(
            store.open(ChunkRef { version: 2, ..C }).err(),
            Some(FsError::WrongVersion)
        );
        assert_eq!(
            store.delete(ChunkRef { version: 2, ..C }),
            Err(FsError::WrongVersion)
        );
        store.delete(C).unwrap();
        assert!(!path.exists());
        store.delete(C).unwrap();
        assert_eq!(store.open(C).err(), Some(FsError::NoChunk));
        let report = &store.space_reports()[0];
        assert_eq!((report.chunks, report.used), (0, 0));
    }

    #[test]
    fn crc_mismatch_is_detected_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut events) = test_store(dir.path());
        store.create(C).unwrap();
        write_all(&store, C, 0, &vec![7u8; 2 * BS]);
        let path = dir.path().join("CD/chunk_000000000000ABCD_00000001.mfs");
        // Flip one byte of block 1 behind the store's back.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[8u8], DATA_OFFSET + BS as u64 + 5).unwrap();

        let mut buf = vec![0u8; BS];
        let mut crcs = [0u32; 1];
        store.read_blocks(C, 0, &mut buf, &mut crcs).unwrap();
        assert_eq!(
            store.read_blocks(C, 1, &mut buf, &mut crcs),
            Err(FsError::Crc)
        );
        assert_eq!(events.try_recv().unwrap(), CsToMaster::ChunkDamaged(C));
        assert_eq!(store.damaged_refs(), vec![C]);
        assert_eq!(store.space_reports()[0].errors, 1);
        // Reported once, however often it is read.
        assert_eq!(
            store.read_blocks(C, 1, &mut buf, &mut crcs),
            Err(FsError::Crc)
        );
        assert!(events.try_recv().is_err());
        // A damaged copy gets no new version, by a version raise or a truncation.
        assert_eq!(store.set_version(C, 2), Err(FsError::Crc));
        assert_eq!(store.truncate(C, 2, 10), Err(FsError::Crc));
        assert_eq!(store.check(C), Ok(()));
    }

    #[test]
    fn set_version_renames_and_rewrites_header() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _events) = test_store(dir.path());
        store.create(C).unwrap();
        write_all(&store, C, 0, b"hello");
        assert_eq!(
            store.set_version(ChunkRef { version: 9, ..C }, 3),
            Err(FsError::WrongVersion)
        );
        assert_eq!(
            store.set_version(
                ChunkRef {
                    chunk_id: 1,
                    version: 1
                },
                3
            ),
            Err(FsError::NoChunk)
        );
        store.set_version(C, 3).unwrap();
        let new = ChunkRef { version: 3, ..C };
        assert!(!dir
            .path()
            .join("CD/chunk_000000000000ABCD_00000001.mfs")
            .exists());
        let path = dir.path().join("CD/chunk_000000000000ABCD_00000003.mfs");
        let f = File::open(&path).unwrap();
        assert_eq!(chunkfile::read_header(&f).unwrap(), (0xABCD, 3));
        assert_eq!(&read_all(&store, new, 1).unwrap()[..5], b"hello");
        assert_eq!(store.open(C).err(), Some(FsError::WrongVersion));
    }

    #[test]
    fn truncate_cuts_and_sets_version() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _events) = test_store(dir.path());
        store.create(C).unwrap();
        write_all(&store, C, 0, &vec![5u8; 3 * BS]);
        store.truncate(C, 2, 100).unwrap();
        let new = ChunkRef { version: 2, ..C };
        let back = read_all(&store, new, 3).unwrap();
        assert!(back[..100].iter().all(|&b| b == 5));
        assert!(back[100..].iter().all(|&b| b == 0));
        assert_eq!(store.space_reports()[0].used, DATA_OFFSET + 100);
        assert_eq!(store.truncate(new, 3, u32::MAX), Err(FsError::Inval));
    }

    #[test]
    fn duplicate_copies_data_into_a_new_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _events) = test_store(dir.path());
        store.create(C).unwrap();
        let mut data = vec![3u8; 2 * BS + 10];
        data[BS..2 * BS].fill(0);
        write_all(&store, C, 0, &data);
        let copy = ChunkRef {
            chunk_id: 99,
            version: 1,
        };
        store.duplicate(C, copy).unwrap();
        let back = read_all(&store, copy, 3).unwrap();
        assert_eq!(&back[..data.len()], &data[..]);
        assert!(back[data.len()..].iter().all(|&b| b == 0));
        // The source is untouched by writes to the copy, and a second copy is refused.
        write_all(&store, copy, 0, &[9u8; 10]);
        assert_eq!(read_all(&store, C, 1).unwrap()[..10], [3u8; 10]);
        assert_eq!(store.duplicate(C, copy), Err(FsError::Exist));
    }

    #[test]
    fn rescan_finds_chunks_in_any_subfolder() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _events) = test_store(dir.path());
            store.create(C).unwrap();
            write_all(&store, C, 0, b"data");
            store
                .create(ChunkRef {
                    chunk_id: 0x100,
                    version: 4,
                })
                .unwrap();
        }
        // Move a chunk to another subfolder (MooseFS 4 spreads them), add a leftover tmp file
        // and an older copy of the same chunk.
        std::fs::rename(
            dir.path().join("CD/chunk_000000000000ABCD_00000001.mfs"),
            dir.path().join("7F/chunk_000000000000ABCD_00000001.mfs"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("00/chunk_0000000000000100_00000003.mfs"),
            b"old",
        )
        .unwrap();
        std::fs::write(
            dir.path()
                .join("00/chunk_0000000000000999_00000001.mfs.tmp"),
            b"",
        )
        .unwrap();

        let (store, _events) = test_store(dir.path());
        let mut refs = store.chunk_refs();
        refs.sort_by_key(|c| c.chunk_id);
        assert_eq!(
            refs,
            vec![
                ChunkRef {
                    chunk_id: 0x100,
                    version: 4
                },
                C
            ]
        );
        assert_eq!(&read_all(&store, C, 1).unwrap()[..4], b"data");
        assert!(!dir
            .path()
            .join("00/chunk_0000000000000999_00000001.mfs.tmp")
            .exists());
        // A version change keeps the chunk in its subfolder.
        store.set_version(C, 2).unwrap();
        assert!(dir
            .path()
            .join("7F/chunk_000000000000ABCD_00000002.mfs")
            .exists());
    }

    #[test]
    fn vanished_file_is_reported_lost() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut events) = test_store(dir.path());
        store.create(C).unwrap();
        // Its file is not open (a new chunk's stays open for its first writes).
        store.files.remove(C.chunk_id);
        std::fs::remove_file(dir.path().join("CD/chunk_000000000000ABCD_00000001.mfs")).unwrap();
        assert_eq!(store.open(C).err(), Some(FsError::NoChunk));
        assert_eq!(events.try_recv().unwrap(), CsToMaster::ChunkLost(C));
        assert!(store.chunk_refs().is_empty());
    }

    #[test]
    fn a_full_disk_is_no_space_and_other_errors_count() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _events) = test_store(dir.path());
        let disk = store.disks().all()[0].clone();
        let mut scratch = chunkfile::new_block();
        let block = vec![1u8; BS];
        let crc = crc32fast::hash(&block);
        // /dev/full fails every write with ENOSPC, as a full file system does.
        let dev_full = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/full")
            .unwrap();
        let full = Handle {
            chunk: C,
            file: Arc::new(dev_full),
            disk: Arc::clone(&disk),
        };
        assert_eq!(
            store.write(&full, 0, &block, crc, &mut scratch),
            Err(FsError::NoSpace)
        );
        assert_eq!(
            store.write(&full, BS as u32, &block, crc, &mut scratch),
            Err(FsError::NoSpace)
        );
        let quota = io::Error::from_raw_os_error(nix::errno::Errno::EDQUOT as i32);
        assert_eq!(io_error(&disk, "test", quota), FsError::NoSpace);
        let report = &store.space_reports()[0];
        assert_eq!(report.errors, 0, "a full disk is not a failing disk");
        assert!(!report.damaged && report.avail > 0);

        // Any other failure is a disk error; two within HDD_ERROR_TOLERANCE_PERIOD mark the
        // disk damaged. (A read-only descriptor fails writes with EBADF.)
        std::fs::write(dir.path().join("ro"), b"").unwrap();
        let read_only = Handle {
            chunk: C,
            file: Arc::new(File::open(dir.path().join("ro")).unwrap()),
            disk: Arc::clone(&disk),
        };
        assert_eq!(
            store.write(&read_only, 0, &block, crc, &mut scratch),
            Err(FsError::Io)
        );
        let report = &store.space_reports()[0];
        assert_eq!(report.errors, 1);
        assert!(!report.damaged);
        assert_eq!(
            store.write(&read_only, 0, &block, crc, &mut scratch),
            Err(FsError::Io)
        );
        let report = &store.space_reports()[0];
        assert_eq!(report.errors, 2);
        assert!(report.damaged);
        assert_eq!(report.avail, 0);
        // A damaged disk gets no new chunks.
        assert_eq!(store.create(C), Err(FsError::NoSpace));
    }

    #[test]
    fn background_test_and_length_leave_the_file_cache_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _events) = test_store(dir.path());
        store.create(C).unwrap();
        write_all(&store, C, 0, &vec![3u8; BS + 1]);
        store.files.remove(C.chunk_id);
        let mut buf = chunkfile::new_block();
        assert_eq!(store.data_length(C), Ok(BS as u32 + 1));
        assert_eq!(store.test_block(C, 0, &mut buf), Ok(true));
        assert_eq!(store.test_block(C, 1, &mut buf), Ok(true));
        assert!(store.files.is_empty());
        // A file already cached is used.
        store.open(C).unwrap();
        assert_eq!(store.test_block(C, 1, &mut buf), Ok(true));
        assert_eq!(store.files.len(), 1);
        assert_eq!(
            store.test_block(ChunkRef { version: 2, ..C }, 0, &mut buf),
            Err(FsError::WrongVersion)
        );
    }

    #[test]
    fn a_disk_short_of_room_frees_a_deleted_chunks_space_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let limit = SpaceLimit::UseAtMost(Amount::Bytes(512 << 20));
        let (store, _events) = test_store_with(dir.path(), limit);
        store.create(C).unwrap();
        write_all(&store, C, 0, &vec![5u8; 3 * BS]);
        store.delete(C).unwrap();
        let disk = store.disks().all()[0].clone();
        assert_eq!(
            disk.spares.waiting(),
            0,
            "a deleted chunk was kept on a small disk"
        );
        let held: u64 = walk_sizes(dir.path());
        assert!(held < 3 * BS as u64, "{held} bytes still held on the disk");
    }

    /// Bytes of every file under `dir`.
    fn walk_sizes(dir: &Path) -> u64 {
        let mut total = 0;
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let m = e.metadata().unwrap();
            total += if m.is_dir() {
                walk_sizes(&e.path())
            } else {
                m.len()
            };
        }
        total
    }

    #[test]
    fn create_without_room_for_a_chunk_is_no_space() {
        let dir = tempfile::tempdir().unwrap();
        let limit = SpaceLimit::UseAtMost(Amount::Bytes(32 << 20));
        let (store, _events) = test_store_with(dir.path(), limit);
        assert_eq!(store.create(C), Err(FsError::NoSpace));
        assert!(store.chunk_refs().is_empty());
        assert_eq!(store.space_reports()[0].avail, 0);
    }

    #[test]
    fn unfinished_new_chunk_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _events) = test_store(dir.path());
        let new = store.begin_new(C).unwrap();
        let tmp = new.tmp.clone();
        assert!(tmp.exists());
        drop(new);
        assert!(!tmp.exists());
        assert!(store.chunk_refs().is_empty());
        assert!(!dir
            .path()
            .join("CD/chunk_000000000000ABCD_00000001.mfs")
            .exists());
    }

    #[test]
    fn a_new_chunk_takes_a_spare_file_and_the_disk_makes_more() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _events) = test_store(dir.path());
        let disk = store.disks().all()[0].clone();
        // The spare thread runs at nice 19: on a machine kept busy by other tests it gets a
        // sliver of a core.
        let ready = |n: usize| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while disk.spares.count() < n {
                assert!(std::time::Instant::now() < deadline, "no spares made");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        };
        ready(crate::spares::LOW);
        let before = disk.spares.count();
        let new = store.begin_new(C).unwrap();
        assert!(
            new.tmp.starts_with(dir.path().join(crate::spares::FOLDER)),
            "{} is no spare",
            new.tmp.display()
        );
        let spare = new.tmp.clone();
        store.commit_new(new).unwrap();
        assert!(!spare.exists(), "the spare is still there");
        assert_eq!(store.check(C), Ok(()));
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
        write_all(&store, C, 0, &data);
        assert_eq!(&read_all(&store, C, 2).unwrap()[..70_000], &data[..]);
        // Spares taken are made again in the background. Only a disk that runs low is
        // refilled: while these are taken the thread may fill it up and stop short of
        // `before` again, so the wait is for the low mark.
        for n in 0..before as u64 {
            let c = ChunkRef {
                chunk_id: 0x10_0000 + n,
                version: 1,
            };
            store.create(c).unwrap();
        }
        ready(crate::spares::LOW);
        // A deleted chunk's file is kept to become a spare.
        store.delete(C).unwrap();
        assert_eq!(disk.spares.waiting(), 1);
        assert!(store.check(C).is_err());
    }

    #[test]
    fn a_synced_new_chunk_whose_rename_a_crash_lost_is_found_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let spare = {
            let (store, _events) = test_store(dir.path());
            let disk = store.disks().all()[0].clone();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while disk.spares.count() == 0 {
                assert!(std::time::Instant::now() < deadline, "no spares made");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            store.create(C).unwrap();
            write_all(&store, C, 0, &data);
            let h = store.open(C).unwrap();
            store.sync(&h).unwrap();
            // What a crash before the folders reached the disk leaves: the chunk under the
            // name of the spare it was made from (its header says which).
            let path = chunkfile::chunk_path(dir.path(), 0xCD, C.chunk_id, C.version);
            let file = std::fs::File::open(&path).unwrap();
            let (_, _, number) = chunkfile::read_spare_mark(&file).unwrap();
            let spare = dir
                .path()
                .join(crate::spares::FOLDER)
                .join(format!("spare_{number}"));
            std::fs::rename(&path, &spare).unwrap();
            spare
        };
        let (store, _events) = test_store(dir.path());
        assert_eq!(store.chunk_refs(), vec![C]);
        assert_eq!(&read_all(&store, C, 2).unwrap()[..70_000], &data[..]);
        assert!(!spare.exists(), "the chunk was left in the spare folder");
        assert!(dir
            .path()
            .join("CD/chunk_000000000000ABCD_00000001.mfs")
            .exists());
    }
}
