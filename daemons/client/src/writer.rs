//! Write-behind: `write` copies into a per-file buffer and returns; the buffer goes to the
//! chunkservers in the background (once enough is gathered or it gets old) and synchronously on
//! flush, fsync, release, truncation and before reads of the dirty bytes. The memory of all
//! buffers is bounded; a writer waits when it is used up. The error of a background write is
//! kept on the file and returned by every write, flush, read of buffered bytes and truncation
//! until an fsync has reported it or the file's last handle is closed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moose_proto::auth::ChunkToken;
use moose_proto::msg::{ChunkLocation, ClReply, ClRequest, EndSync, WriteLease};
use moose_proto::{Attr, ChunkRef, CsAddr, FsError, Inode, Timespec, BLOCK_SIZE, CHUNK_SIZE};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::change_counts::Stamp;
use crate::csio::{CsError, CsPool};
use crate::extents::{plan_chunks, ChunkWrite, Extents};
use crate::kept_leases::{KeptLease, KeptLeases};
use crate::kernel_pages;
use crate::master::{CallError, MasterClient};
use crate::reader::{backoff, Reader};

/// Writes this large may take a kept buffer (smaller ones start small ranges).
const BLOCK_BYTES: usize = BLOCK_SIZE as usize;
/// Dirty bytes of one file that start a background write.
const BACKGROUND_BYTES: u64 = 8 << 20;
/// Age of dirty data that starts a background write.
const MAX_DIRTY_AGE: Duration = Duration::from_secs(2);
/// How long a chunk locked by another writer is waited for.
const LOCKED_PATIENCE: Duration = Duration::from_secs(60);
/// How long "no chunkservers" is waited out (they re-register after a master restart).
const NO_SERVERS_PATIENCE: Duration = Duration::from_secs(10);
/// Attempts to sync a chunk whose version moved on; and attempts to write a chunk that
/// chunkservers refuse for want of space (a full disk does not come back as a restarted
/// server does).
const WRITE_ATTEMPTS: u32 = 5;
/// Chunks of one file written at the same time.
const PARALLEL_CHUNKS: usize = 4;
/// Written-out buffers kept for the next large writes, and the sizes kept: a buffer from the
/// kernel costs a page fault and a zeroed page for every 4 KiB buffered in it (a stream of
/// large writes took one per page written). They are let go when large writes stop (see
/// [`age_ticker`]), and hold at most half the write cache.
const SPARE_BUFFERS: usize = 4;
const SPARE_MIN: usize = 1 << 20;
const SPARE_MAX: usize = 64 << 20;
/// Bytes of all files kept for the kernel's cache until their last close (see
/// [`crate::kernel_pages`]); write-outs beyond it keep nothing.
const KERNEL_PAGES_MAX: u64 = 128 << 20;

/// A chunk written out: where it is and on which servers.
struct Written {
    index: u32,
    chunk: ChunkRef,
    chain: Vec<CsAddr>,
    token: ChunkToken,
    /// Synced on every server of the chain (an fsync's write-out).
    synced: bool,
    /// The file's attributes the master answered the end with, and the stamp of the file's
    /// changes they hold at (`None` when other changes of it went out or were answered
    /// meanwhile).
    landed: Option<(Attr, Stamp)>,
}

/// Attributes a write-out's end was answered with (see [`Writer::landed_attr`]).
#[derive(Clone)]
struct Landed {
    attr: Attr,
    at: Instant,
    changes: Stamp,
}

/// Files whose landed attributes are kept at most; they are wanted right after a close.
const MAX_LANDED: usize = 4096;

#[derive(Default)]
struct FileState {
    dirty: Extents,
    /// Ranges being written right now (start, length).
    inflight: Vec<(u64, u64)>,
    inflight_bytes: u64,
    /// Budget permits held for this file's dirty and in-flight bytes.
    held: u64,
    /// First error of a write-out, until an fsync reports it or the last handle closes.
    error: Option<FsError>,
    background_queued: bool,
    dirty_since: Option<Instant>,
    /// Time of the last write not yet written out: the file's modification time until the
    /// master sets its own when the data lands.
    modified: Option<Timespec>,
    /// Writes buffered so far (tells a write-out whether writes came while it ran).
    writes: u64,
    /// Writer epoch at which buffered data last landed at the master (0: never).
    landed_at: u64,
    /// Chunks written since the last fsync: index → (chunk, chain).
    unsynced: HashMap<u32, (ChunkRef, Vec<CsAddr>, ChunkToken)>,
    /// Leases kept for the next write-out (see [`crate::kept_leases`]).
    kept: KeptLeases,
    /// The chunk whose lease was asked for at the file's first write (see
    /// [`Writer::ask_lease_early`]), until its answer came.
    early: Option<u32>,
    /// Written-out bytes for the kernel's cache at the last close, page-aligned pieces
    /// (see [`crate::kernel_pages`]).
    for_kernel: kernel_pages::Kept,
    /// Pages the buffered writes begin or end inside of (see [`crate::kernel_pages`]).
    ragged: Vec<u64>,
}

impl FileState {
    fn wanted(&self) -> u64 {
        self.dirty.bytes() + self.inflight_bytes
    }

    fn end(&self) -> Option<u64> {
        let inflight_end = self.inflight.iter().map(|(s, l)| s + l).max();
        match (self.dirty.end(), inflight_end) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn is_idle(&self) -> bool {
        !self.unwritten() && self.kept.is_empty() && self.early.is_none()
    }

    fn unwritten(&self) -> bool {
        !self.dirty.is_empty() || !self.inflight.is_empty() || self.error.is_some()
    }

    /// Buffers a write made at `now` (a range it starts takes `spare`, see
    /// [`Extents::insert_with`]).
    fn buffer(&mut self, offset: u64, data: &[u8], now: Timespec, spare: &mut Option<Vec<u8>>) {
        self.dirty.insert_with(offset, data, spare);
        self.modified = Some(now);
        self.writes += 1;
    }

    /// A write-out that took the buffer when `writes` writes had been made is over (written
    /// or failed, which the next sync call reports) at writer epoch `epoch`: the master's
    /// times are the file's again, unless a write came meanwhile (it keeps its time until its
    /// own write-out).
    fn written_out(&mut self, writes: u64, epoch: u64) {
        if self.writes == writes {
            self.modified = None;
        }
        self.landed_at = epoch;
    }

    fn pending(&self) -> Pending {
        Pending {
            end: self.end(),
            modified: self.modified,
        }
    }
}

/// What a file's buffer adds to the master's attributes: the end of the data not yet at the
/// master and the time of the last such write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    pub end: Option<u64>,
    pub modified: Option<Timespec>,
}

/// What the buffer `st` of a file (`None`: no buffer, maybe dropped after data of it landed at
/// epoch `forgotten` or earlier) adds to master attributes asked for at `epoch`; `None` when
/// its data may have landed since.
fn pending_view(st: Option<&FileState>, forgotten: u64, epoch: u64) -> Option<Pending> {
    match st {
        Some(st) => (st.landed_at <= epoch).then(|| st.pending()),
        None => (forgotten <= epoch).then(Pending::default),
    }
}

/// What became of a chunk written since the last fsync, judged from where the file's chunk
/// at that index is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Since {
    /// The chunk is no longer the file's (cut off by a truncation, or the file is gone):
    /// nothing written to it is left to make durable.
    Dropped,
    /// The chunk has a newer version (a truncation or another write since), on the same file,
    /// which holds the earlier writes: syncing that version makes them durable.
    Newer(ChunkRef),
    /// The server holds no valid copy of the chunk.
    Lost,
}

fn since(chunk: ChunkRef, loc: &ChunkLocation, server: &CsAddr) -> Since {
    if loc.chunk_id != chunk.chunk_id {
        Since::Dropped
    } else if loc.version > chunk.version && loc.servers.contains(server) {
        Since::Newer(ChunkRef {
            chunk_id: chunk.chunk_id,
            version: loc.version,
        })
    } else {
        Since::Lost
    }
}

struct FileBuf {
    state: Mutex<FileState>,
    /// One write-out at a time per file, in order.
    flushing: tokio::sync::Mutex<()>,
    /// The answer to a lease asked for early came.
    early_answered: Notify,
}

impl FileBuf {
    fn lock(&self) -> MutexGuard<'_, FileState> {
        self.state.lock()
    }
}

pub struct Writer {
    master: MasterClient,
    cs: Arc<CsPool>,
    reader: Arc<Reader>,
    /// Attempts (each with a new lease) to write one chunk (`mfsioretries`).
    attempts: u32,
    budget: Semaphore,
    budget_total: u64,
    files: Mutex<HashMap<Inode, Arc<FileBuf>>>,
    /// Counts write-outs that landed at the master, so that an attribute answer can tell
    /// whether buffered data landed while it was asked (see [`Writer::pending_since`]).
    epoch: AtomicU64,
    /// Highest `landed_at` of the file states dropped so far.
    forgotten: AtomicU64,
    /// The attributes the last write-out of a file landed with: the kernel asks for them
    /// right after the close (a write makes it drop its own), and gets them without a
    /// round trip.
    landed: Mutex<HashMap<Inode, Landed>>,
    /// Buffers of written-out data, for the next large writes.
    spares: Mutex<Vec<Vec<u8>>>,
    /// A kept buffer was taken since the age ticker last looked.
    spares_used: AtomicBool,
    /// Bytes of all files' `for_kernel` pieces.
    for_kernel_held: AtomicU64,
    /// The kernel's page size.
    page: u64,
}

/// Why a file's buffer is written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Enough data gathered, or it got old. Errors are kept for the next call below.
    Background,
    /// A read of buffered bytes.
    Read,
    /// An fsync (`EndSync::All`) or fdatasync (`EndSync::Data`): every chunk written is
    /// synced on every server of its chain while the master syncs its changelog as far as
    /// that asks.
    Fsync(EndSync),
    /// The close of one descriptor (FUSE flush): the leases stay while the file is open
    /// (a forked child's copy of the descriptor closes at its exec, and the parent writes
    /// on); its release or [`crate::kept_leases::KEEP_IDLE`] ends them.
    Flush,
    /// A release, or a change of size or times: the file's write leases end.
    Close,
}

impl Purpose {
    /// Errors (this write-out's or a kept one) are returned.
    fn reports(self) -> bool {
        self != Purpose::Background
    }

    /// A reported error is then forgotten. Only an fsync is sure to be the program's own
    /// call: a descriptor closes also in every child the program forks, at its exec, and
    /// that close would hear of the error in the program's stead.
    fn clears_error(self) -> bool {
        matches!(self, Purpose::Fsync(_))
    }

    /// Leases are kept for the next write-out: more writes are likely to follow.
    fn keeps_leases(self) -> bool {
        self != Purpose::Close
    }

    /// What the master must have on disk before it answers the end of a write.
    fn end_sync(self) -> EndSync {
        match self {
            Purpose::Fsync(sync) => sync,
            _ => EndSync::Recorded,
        }
    }
}

impl Writer {
    /// `cache_bytes` bounds the buffered data of all files together; a chunk's write is tried
    /// `attempts` times.
    pub fn new(
        master: MasterClient,
        cs: Arc<CsPool>,
        reader: Arc<Reader>,
        cache_bytes: u64,
        attempts: u32,
    ) -> Arc<Writer> {
        let budget_total = cache_bytes.clamp(1 << 20, (Semaphore::MAX_PERMITS as u64).min(1 << 40));
        let w = Arc::new(Writer {
            master,
            cs,
            reader,
            attempts: attempts.max(1),
            budget: Semaphore::new(budget_total as usize),
            budget_total,
            files: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            forgotten: AtomicU64::new(0),
            landed: Mutex::new(HashMap::new()),
            spares: Mutex::new(Vec::new()),
            spares_used: AtomicBool::new(false),
            for_kernel_held: AtomicU64::new(0),
            page: kernel_pages::page_size(),
        });
        tokio::spawn(age_ticker(Arc::downgrade(&w)));
        w
    }

    fn files(&self) -> MutexGuard<'_, HashMap<Inode, Arc<FileBuf>>> {
        self.files.lock()
    }

    fn file(&self, inode: Inode) -> Option<Arc<FileBuf>> {
        self.files().get(&inode).cloned()
    }

    fn file_or_new(&self, inode: Inode) -> Arc<FileBuf> {
        self.files()
            .entry(inode)
            .or_insert_with(|| {
                Arc::new(FileBuf {
                    state: Mutex::new(FileState::default()),
                    flushing: tokio::sync::Mutex::new(()),
                    early_answered: Notify::new(),
                })
            })
            .clone()
    }

    /// Gives permits back so that `held` does not exceed what the file still needs.
    fn settle(&self, st: &mut FileState) {
        let wanted = st.wanted();
        if st.held > wanted {
            self.budget.add_permits((st.held - wanted) as usize);
            st.held = wanted;
        }
    }

    /// Buffers `data` at `offset`; waits while the buffers of all files are full. Fails with
    /// the error of the file's last write-out while no fsync has reported it.
    pub async fn write(
        self: &Arc<Self>,
        inode: Inode,
        offset: u64,
        data: &[u8],
    ) -> Result<(), FsError> {
        if self.try_write(inode, offset, data)? {
            return Ok(());
        }
        self.start_all_background();
        let need = self.need(data);
        match self.budget.acquire_many(need).await {
            Ok(p) => p.forget(),
            // The semaphore is never closed.
            Err(_) => return Ok(()),
        }
        self.buffer(inode, offset, data, need)
    }

    /// Buffers `data` at `offset` if the buffers have room for it now (call it within the
    /// runtime: it may start a background write); false when they have not. Fails with the
    /// error of the file's last write-out while no fsync has reported it: the data
    /// written since went nowhere, and a program writing on (a `dd` onto full chunkservers)
    /// would learn of it only at its `close`.
    pub fn try_write(
        self: &Arc<Self>,
        inode: Inode,
        offset: u64,
        data: &[u8],
    ) -> Result<bool, FsError> {
        let need = self.need(data);
        match self.budget.try_acquire_many(need) {
            Ok(p) => p.forget(),
            Err(_) => return Ok(false),
        }
        self.buffer(inode, offset, data, need)?;
        Ok(true)
    }

    /// Drops the file's pieces for the kernel that overlap `[start, end)` (all with `None`).
    fn drop_for_kernel(&self, st: &mut FileState, range: Option<(u64, u64)>) {
        let dropped = match range {
            Some((start, end)) => st.for_kernel.drop_overlapping(start, end),
            None => st.for_kernel.clear(),
        };
        if dropped > 0 {
            self.for_kernel_held.fetch_sub(dropped, Ordering::Relaxed);
        }
    }

    /// Keeps `pieces` of a write-out for the kernel's cache, within the bounds of the file
    /// and of all files.
    fn keep_for_kernel(&self, st: &mut FileState, pieces: Vec<(u64, Bytes)>) {
        let bytes = kernel_pages::held(&pieces);
        if st.for_kernel.bytes() + bytes > kernel_pages::FILE_MAX
            || self.for_kernel_held.load(Ordering::Relaxed) + bytes > KERNEL_PAGES_MAX
        {
            return;
        }
        let grown = st.for_kernel.add(pieces, self.page);
        self.for_kernel_held.fetch_add(grown, Ordering::Relaxed);
    }

    /// Chunks a `copy_file_range` shared into `inode` over `range` (see
    /// `ClRequest::ShareChunks`): an fsync of the file makes them durable on every server, as
    /// chunks written out here are. Bytes kept for the kernel's cache there are stale;
    /// `at_hand`, the copied bytes when the mount had them, takes their place.
    pub fn note_shared(
        &self,
        inode: Inode,
        range: (u64, u64),
        chunks: Vec<(u32, ChunkLocation)>,
        at_hand: Option<(u64, Bytes)>,
    ) {
        let f = self.file_or_new(inode);
        let mut st = f.lock();
        self.drop_for_kernel(&mut st, Some(range));
        for (index, loc) in chunks {
            let chunk = ChunkRef {
                chunk_id: loc.chunk_id,
                version: loc.version,
            };
            st.unsynced.insert(index, (chunk, loc.servers, loc.token));
        }
        if let Some(piece) = at_hand {
            self.keep_for_kernel(&mut st, vec![piece]);
        }
    }

    /// Takes the written-out bytes kept for the kernel's cache (call it at the file's last
    /// close, see [`crate::kernel_pages`]).
    pub fn take_for_kernel(&self, inode: Inode) -> Vec<(u64, Bytes)> {
        let Some(f) = self.file(inode) else {
            return Vec::new();
        };
        let pieces = f.lock().for_kernel.take();
        self.for_kernel_held
            .fetch_sub(kernel_pages::held(&pieces), Ordering::Relaxed);
        pieces
    }

    /// Forgets the bytes kept for the kernel's cache of `inode` (`None`: of every file): the
    /// file may change other than by this mount's writes (an open for writing, a
    /// truncation, another session).
    pub fn drop_for_kernel_of(&self, inode: Option<Inode>) {
        let files: Vec<Arc<FileBuf>> = match inode {
            Some(i) => self.file(i).into_iter().collect(),
            None => self.files().values().cloned().collect(),
        };
        for f in files {
            self.drop_for_kernel(&mut f.lock(), None);
        }
    }

    /// Buffer room `data` takes.
    fn need(&self, data: &[u8]) -> u32 {
        (data.len() as u64).min(self.budget_total) as u32
    }

    /// Buffers `data`, for which `need` permits were taken; gives them back and fails with
    /// the error of the file's last write-out while no fsync has reported it.
    fn buffer(
        self: &Arc<Self>,
        inode: Inode,
        offset: u64,
        data: &[u8],
        need: u32,
    ) -> Result<(), FsError> {
        let buf = self.file_or_new(inode);
        let (start_background, early, spare) = {
            let mut st = buf.lock();
            if let Some(e) = st.error {
                self.budget.add_permits(need as usize);
                return Err(e);
            }
            let mut spare = if data.len() >= BLOCK_BYTES {
                self.spares_used.store(true, Ordering::Relaxed);
                self.spares.lock().pop()
            } else {
                None
            };
            // A file with nothing buffered, kept or asked for: its first write.
            let early = (st.is_idle() && !data.is_empty()).then_some((offset / CHUNK_SIZE) as u32);
            if let Some(index) = early {
                st.early = Some(index);
            }
            st.buffer(offset, data, Timespec::now(), &mut spare);
            kernel_pages::note_ragged(&mut st.ragged, offset, data.len() as u64, self.page);
            self.drop_for_kernel(&mut st, Some((offset, offset + data.len() as u64)));
            st.held += need as u64;
            self.settle(&mut st);
            st.dirty_since.get_or_insert_with(Instant::now);
            let due = st.dirty.bytes() >= BACKGROUND_BYTES
                || self.budget.available_permits() < (self.budget_total / 4) as usize;
            let start = due && !st.background_queued;
            if start {
                st.background_queued = true;
            }
            (start, early, spare)
        };
        if let Some(index) = early {
            self.ask_lease_early(inode, index, buf);
        }
        if let Some(unused) = spare {
            self.keep_spare(unused);
        }
        if start_background {
            self.spawn_background(inode);
        }
        Ok(())
    }

    /// Asks for the write lease of chunk `index` at the first write of a file with nothing
    /// buffered, kept or asked for: the lease (and, for a new chunk, the master's orders that
    /// make it) is on its way while the program writes on, instead of after its `close` or
    /// `futimens` asked for the data to land (`tar -x` and `cp -a` write each file so). The
    /// answer is kept as a kept lease; its write-out waits for it.
    fn ask_lease_early(&self, inode: Inode, index: u32, buf: Arc<FileBuf>) {
        let asked = EarlyLease { buf, index };
        self.master
            .start_then(ClRequest::WriteChunk { inode, index }, move |r| {
                if let Ok(ClReply::WriteLease(lease)) = r {
                    let now = Instant::now();
                    asked.buf.lock().kept.keep(index, lease, now, now);
                }
                // Anything else is left to the write-out, which asks again.
                drop(asked);
            });
    }

    /// The lease kept for chunk `index`, once a lease asked for it early was answered.
    async fn kept_lease(f: &FileBuf, index: u32) -> Option<KeptLease> {
        loop {
            let answered = f.early_answered.notified();
            tokio::pin!(answered);
            // Registered before the look, so that an answer in between wakes it.
            answered.as_mut().enable();
            {
                let mut st = f.lock();
                if st.early != Some(index) {
                    return st.kept.take(index, Instant::now());
                }
            }
            answered.await;
        }
    }

    /// Keeps a buffer for the next large write, if it is worth keeping and there is room.
    fn keep_spare(&self, buf: Vec<u8>) {
        if !(SPARE_MIN..=SPARE_MAX).contains(&buf.capacity()) {
            return;
        }
        let mut spares = self.spares.lock();
        let held: usize = spares.iter().map(Vec::capacity).sum();
        if spares.len() < SPARE_BUFFERS && (held + buf.capacity()) as u64 <= self.budget_total / 2 {
            spares.push(buf);
        }
    }

    /// Lets the kept buffers go when no large write took one since the last look.
    fn drop_unused_spares(&self) {
        if !self.spares_used.swap(false, Ordering::Relaxed) {
            self.spares.lock().clear();
        }
    }

    fn spawn_background(self: &Arc<Self>, inode: Inode) {
        let me = self.clone();
        tokio::spawn(async move {
            let _ = me.flush_file(inode, Purpose::Background).await;
        });
    }

    /// Starts a background write of every file with dirty data.
    fn start_all_background(self: &Arc<Self>) {
        let files: Vec<(Inode, Arc<FileBuf>)> =
            self.files().iter().map(|(i, f)| (*i, f.clone())).collect();
        for (inode, f) in files {
            let start = {
                let mut st = f.lock();
                if !st.dirty.is_empty() && !st.background_queued {
                    st.background_queued = true;
                    true
                } else {
                    false
                }
            };
            if start {
                self.spawn_background(inode);
            }
        }
    }

    /// True when dirty or in-flight bytes lie in `[start, end)`.
    pub fn overlaps(&self, inode: Inode, start: u64, end: u64) -> bool {
        match self.file(inode) {
            Some(f) => {
                let st = f.lock();
                st.dirty.overlaps(start, end)
                    || st.inflight.iter().any(|(s, l)| *s < end && start < s + l)
            }
            None => false,
        }
    }

    /// True while `inode` has something a flush would do: data buffered or being written,
    /// leases kept, or an error not yet reported.
    pub fn busy(&self, inode: Inode) -> bool {
        self.file(inode).is_some_and(|f| !f.lock().is_idle())
    }

    /// Nothing of the file's is buffered or on its way, it has no error to report and keeps
    /// no lease: a close or release has nothing to do here.
    pub fn idle(&self, inode: Inode) -> bool {
        self.file(inode).is_none_or(|f| f.lock().is_idle())
    }

    /// The file has data not written out yet, or an error to report.
    pub fn unwritten(&self, inode: Inode) -> bool {
        self.file(inode).is_some_and(|f| f.lock().unwritten())
    }

    /// Remembers the master's answer to the latest change of `inode` made through this mount
    /// (a write-out's end, a change of mode, owner or times), given when the file's changes
    /// stood at `changes`.
    pub fn note_landed(&self, inode: Inode, attr: Attr, changes: Stamp) {
        let mut landed = self.landed.lock();
        if landed.len() >= MAX_LANDED {
            landed.clear();
        }
        let at = Instant::now();
        landed.insert(inode, Landed { attr, at, changes });
    }

    /// The attributes the latest change of `inode` landed with, if they are younger than
    /// `ttl`, nothing is buffered, and no change that may touch the file was sent or answered
    /// on this mount's connection since (changes made elsewhere show within `ttl`, as with
    /// any attributes the kernel keeps): what the kernel's next getattr is answered with, and
    /// what a change answered ahead of the master starts from.
    pub fn landed_attr(&self, inode: Inode, ttl: Duration) -> Option<Attr> {
        self.fresh_landed(inode, ttl)
            .filter(|_| !self.unwritten(inode))
            .map(|l| l.attr)
    }

    /// The latest landed change of `inode`, if younger than `ttl` with nothing that may touch
    /// it sent since.
    fn fresh_landed(&self, inode: Inode, ttl: Duration) -> Option<Landed> {
        let l = self.landed.lock().get(&inode).cloned()?;
        let current = l.changes == self.master.changes().stamp(inode);
        (l.at.elapsed() < ttl && current).then_some(l)
    }

    /// The attributes the master holds for `inode` and what this mount's buffer adds to them,
    /// known without asking: the latest landed change (see [`Writer::landed_attr`]), if it is
    /// younger than `ttl` and nothing was sent since, with the buffer's end and time of the
    /// last write. A write-out's end counts as sent before its data leaves the buffer, so the
    /// count is read again after the buffer: unchanged, the two belong together.
    pub fn attr_with_buffer(&self, inode: Inode, ttl: Duration) -> Option<(Attr, Pending)> {
        let l = self.fresh_landed(inode, ttl)?;
        let pending = match self.file(inode) {
            Some(f) => {
                let st = f.lock();
                if st.error.is_some() {
                    return None;
                }
                st.pending()
            }
            None => Pending::default(),
        };
        (l.changes == self.master.changes().stamp(inode)).then_some((l.attr, pending))
    }

    /// Forgets the attributes kept for `inode`: a change answered ahead was refused.
    pub fn drop_landed(&self, inode: Inode) {
        self.landed.lock().remove(&inode);
    }

    /// End of the buffered data (the file is at least this long once it is written).
    pub fn buffered_end(&self, inode: Inode) -> Option<u64> {
        self.file(inode).and_then(|f| f.lock().end())
    }

    /// The size of the kernel's pages (it reads files in whole pages).
    pub fn page(&self) -> u64 {
        self.page
    }

    /// The current epoch: take it before asking the master for attributes, and pass it to
    /// [`Writer::pending_since`] with the answer.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// What the buffer of `inode` adds to master attributes asked for at `epoch`; `None` when
    /// buffered data of the file landed meanwhile: the answer may predate it while the buffer
    /// no longer holds it, so the attributes must be asked for again.
    pub fn pending_since(&self, inode: Inode, epoch: u64) -> Option<Pending> {
        let forgotten = self.forgotten.load(Ordering::SeqCst);
        match self.file(inode) {
            Some(f) => pending_view(Some(&f.lock()), forgotten, epoch),
            None => pending_view(None, forgotten, epoch),
        }
    }

    /// Writes the file's buffer out, ends its write leases and returns the file's write-out
    /// error, if any (a change of size or times; the unmount).
    pub async fn flush(self: &Arc<Self>, inode: Inode) -> Result<(), FsError> {
        self.flush_file(inode, Purpose::Close).await.map(|_| ())
    }

    /// Writes the file's buffer out and returns the file's write-out error, if any, keeping
    /// its write leases (the close of one descriptor).
    pub async fn flush_descriptor(self: &Arc<Self>, inode: Inode) -> Result<(), FsError> {
        self.flush_file(inode, Purpose::Flush).await.map(|_| ())
    }

    /// [`Writer::flush`] before a read of buffered bytes: the write leases stay.
    pub async fn flush_for_read(self: &Arc<Self>, inode: Inode) -> Result<(), FsError> {
        self.flush_file(inode, Purpose::Read).await.map(|_| ())
    }

    /// The first half of an fsync: writes the buffer out, each chunk synced on every server
    /// while the master syncs its changelog up to the write's end (with `data_only`, as far
    /// as the file's data depends on it). True when data landed (so the changelog is on disk
    /// as far as the fsync needs), false when there was nothing to write.
    pub async fn flush_durably(
        self: &Arc<Self>,
        inode: Inode,
        data_only: bool,
    ) -> Result<bool, FsError> {
        let sync = if data_only {
            EndSync::Data
        } else {
            EndSync::All
        };
        self.flush_file(inode, Purpose::Fsync(sync)).await
    }

    /// The second half of an fsync: makes every chunk written out earlier (in the background,
    /// or for a read) durable on every server of its chain. A server that fails the sync
    /// because it died is fine once the master no longer counts its copy (the others have
    /// every acknowledged write): that is checked against the master for a while before the
    /// fsync fails. A chunk that got a new version since it was written (a truncation,
    /// another writer) is synced at that version.
    pub async fn sync_written(self: &Arc<Self>, inode: Inode) -> Result<(), FsError> {
        let Some(f) = self.file(inode) else {
            return Ok(());
        };
        let chunks: Vec<(u32, ChunkRef, Vec<CsAddr>, ChunkToken)> = f
            .lock()
            .unsynced
            .drain()
            .map(|(index, (chunk, chain, token))| (index, chunk, chain, token))
            .collect();
        let mut tasks = JoinSet::new();
        for (index, chunk, chain, token) in chunks {
            for server in chain {
                let cs = self.cs.clone();
                let token = token.clone();
                tasks.spawn(async move {
                    let r = cs.sync(&server, chunk, &token).await;
                    (index, chunk, server, r)
                });
            }
        }
        let mut synced: HashMap<u32, usize> = HashMap::new();
        let mut failed: Vec<(u32, ChunkRef, CsAddr)> = Vec::new();
        let mut result = Ok(());
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((index, _, _, Ok(()))) => *synced.entry(index).or_default() += 1,
                Ok((index, chunk, server, Err(e))) => {
                    // Another version now, or the lease's token expired: sync what is there
                    // now, with a fresh token.
                    let moved_on = matches!(
                        e,
                        CsError::Status {
                            err: FsError::WrongVersion | FsError::NoChunk | FsError::Access,
                            ..
                        }
                    );
                    if moved_on && self.sync_current(inode, index, chunk, &server).await {
                        *synced.entry(index).or_default() += 1;
                        continue;
                    }
                    tracing::warn!(
                        "fsync of inode {inode}: chunk {:016X}_{:08X} on {server}: {e}",
                        chunk.chunk_id,
                        chunk.version
                    );
                    failed.push((index, chunk, server));
                }
                Err(e) => {
                    tracing::error!("fsync of inode {inode}: task failed: {e}");
                    result = Err(FsError::Io);
                }
            }
        }
        for (index, chunk, server) in failed {
            let some_copy_synced = synced.get(&index).copied().unwrap_or(0) > 0;
            if !some_copy_synced || !self.copy_dropped(inode, index, chunk, &server).await {
                tracing::error!(
                    "fsync of inode {inode}: chunk {:016X}_{:08X} is not durable on {server}, which still holds a valid copy",
                    chunk.chunk_id,
                    chunk.version
                );
                result = Err(FsError::Io);
            }
        }
        result
    }

    /// After `server` said it no longer has `chunk` at the version written (see [`Since`]):
    /// syncs the chunk at its current version there. True when that worked, or when the chunk
    /// is no longer part of the file.
    async fn sync_current(
        &self,
        inode: Inode,
        index: u32,
        chunk: ChunkRef,
        server: &CsAddr,
    ) -> bool {
        for _ in 0..WRITE_ATTEMPTS {
            let loc = match self.reader.location(inode, index, true).await {
                Ok(loc) => loc,
                Err(e) => {
                    tracing::warn!("fsync of inode {inode}: locating chunk {index}: {e}");
                    return false;
                }
            };
            let current = match since(chunk, &loc, server) {
                Since::Dropped => return true,
                Since::Lost => return false,
                Since::Newer(current) => current,
            };
            match self.cs.sync(server, current, &loc.token).await {
                Ok(()) => return true,
                Err(CsError::Status {
                    err: FsError::WrongVersion | FsError::NoChunk,
                    ..
                }) => continue,
                Err(e) => {
                    tracing::warn!(
                        "fsync of inode {inode}: chunk {:016X}_{:08X} on {server}: {e}",
                        current.chunk_id,
                        current.version
                    );
                    return false;
                }
            }
        }
        false
    }

    /// Waits (up to about 20 s) for the master to stop counting `server`'s copy of `chunk`.
    async fn copy_dropped(
        &self,
        inode: Inode,
        index: u32,
        chunk: ChunkRef,
        server: &CsAddr,
    ) -> bool {
        for attempt in 0..40u32 {
            match self.reader.location(inode, index, true).await {
                Ok(loc) if loc.chunk_id != chunk.chunk_id || loc.version != chunk.version => {
                    return true;
                }
                Ok(loc) if !loc.servers.contains(server) => return true,
                Ok(_) | Err(_) => {}
            }
            tokio::time::sleep(std::time::Duration::from_millis(100 + 10 * attempt as u64)).await;
        }
        false
    }

    /// The file's last handle is closed: forgets its kept leases without ending them (the
    /// master ends them with the release, which the caller sends next) and the error of its
    /// write-outs (its closes reported it).
    pub async fn last_closed(&self, inode: Inode) {
        let Some(f) = self.file(inode) else { return };
        let _turn = f.flushing.lock().await;
        let mut st = f.lock();
        st.kept.take_all();
        st.error = None;
    }

    /// Drops the file's state once nothing is buffered (after its last handle was closed).
    pub fn forget_if_idle(&self, inode: Inode) {
        let mut files = self.files();
        if let Some(f) = files.get(&inode) {
            let st = f.lock();
            if st.is_idle() && Arc::strong_count(f) == 1 {
                self.forgotten.fetch_max(st.landed_at, Ordering::SeqCst);
                self.for_kernel_held
                    .fetch_sub(st.for_kernel.bytes(), Ordering::Relaxed);
                drop(st);
                files.remove(&inode);
            }
        }
    }

    /// Writes every buffer out (at unmount); returns how many files failed.
    pub async fn flush_all(self: &Arc<Self>) -> usize {
        let inodes: Vec<Inode> = self.files().keys().copied().collect();
        let mut failed = 0;
        for inode in inodes {
            if let Err(e) = self.flush(inode).await {
                tracing::error!("writing the buffered data of inode {inode} failed: {e}");
                failed += 1;
            }
        }
        failed
    }

    /// Writes the file's buffer out; true when data landed.
    async fn flush_file(self: &Arc<Self>, inode: Inode, purpose: Purpose) -> Result<bool, FsError> {
        let Some(f) = self.file(inode) else {
            return Ok(false);
        };
        let _turn = f.flushing.lock().await;
        let (ranges, writes, ragged, room) = {
            let mut st = f.lock();
            st.background_queued = false;
            st.dirty_since = None;
            let ranges = st.dirty.take_all();
            st.inflight = ranges.iter().map(|(s, d)| (*s, d.len() as u64)).collect();
            st.inflight_bytes = st.inflight.iter().map(|(_, l)| l).sum();
            let ragged = std::mem::take(&mut st.ragged);
            // A file at its bound keeps nothing more: no copy for it.
            let room = st.for_kernel.bytes() < kernel_pages::FILE_MAX;
            (ranges, st.writes, ragged, room)
        };
        let landed = !ranges.is_empty();
        let for_kernel = if room {
            kernel_pages::to_store(&ranges, &ragged, self.page)
        } else {
            Vec::new()
        };
        let result = if landed {
            // The buffers of large ranges come back once their pieces are written and
            // dropped (small ones are not kept: no clone for them).
            let owners: Vec<Bytes> = ranges
                .iter()
                .filter(|(_, d)| d.len() >= BLOCK_BYTES)
                .map(|(_, d)| d.clone())
                .collect();
            let r = self
                .write_out(inode, &f, plan_chunks(ranges), purpose)
                .await;
            for owner in owners {
                if let Ok(mut back) = owner.try_into_mut() {
                    back.clear();
                    self.keep_spare(back.into());
                }
            }
            self.reader.invalidate(inode);
            r
        } else {
            Ok(())
        };
        if !purpose.keeps_leases() {
            let rest = f.lock().kept.take_all();
            self.end_leases(inode, rest).await;
        }
        let mut st = f.lock();
        st.inflight.clear();
        st.inflight_bytes = 0;
        let epoch = if landed {
            self.epoch.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            st.landed_at
        };
        st.written_out(writes, epoch);
        self.settle(&mut st);
        if result.is_ok() {
            // Writes that came meanwhile (a stream's, during its background write-outs) are
            // buffered now: what they overlap of these is not the file's any more.
            let mut for_kernel = for_kernel;
            for_kernel.retain(|(s, d)| !st.dirty.overlaps(*s, s + d.len() as u64));
            self.keep_for_kernel(&mut st, for_kernel);
        }
        if let Err(e) = result {
            st.error.get_or_insert(e);
        }
        if purpose.reports() {
            let error = if purpose.clears_error() {
                st.error.take()
            } else {
                st.error
            };
            if let Some(e) = error {
                return Err(e);
            }
        }
        Ok(landed)
    }

    /// Writes the chunks, a few at a time; the first error wins.
    async fn write_out(
        self: &Arc<Self>,
        inode: Inode,
        f: &Arc<FileBuf>,
        plan: Vec<ChunkWrite>,
        purpose: Purpose,
    ) -> Result<(), FsError> {
        let mut result = Ok(());
        let mut tasks: JoinSet<Result<Written, FsError>> = JoinSet::new();
        // With several chunks the master may answer their ends in another order than it
        // applied them: no answer is then known to hold the file's final attributes.
        let single = plan.len() == 1;
        let mut queue = plan.into_iter();
        loop {
            while tasks.len() < PARALLEL_CHUNKS {
                let Some(cw) = queue.next() else { break };
                let me = self.clone();
                let f = f.clone();
                tasks.spawn(async move { me.write_chunk(inode, &f, cw, purpose).await });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            match joined {
                Ok(Ok(w)) => {
                    if let Some((attr, changes)) = w.landed.filter(|_| single) {
                        self.note_landed(inode, attr, changes);
                    }
                    let mut st = f.lock();
                    if w.synced {
                        // With every earlier write of the chunk.
                        st.unsynced.remove(&w.index);
                    } else {
                        st.unsynced.insert(w.index, (w.chunk, w.chain, w.token));
                    }
                }
                Ok(Err(e)) => {
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
                Err(e) => {
                    tracing::error!("write task of inode {inode} failed: {e}");
                    if result.is_ok() {
                        result = Err(FsError::Io);
                    }
                }
            }
        }
        result
    }

    /// Writes one chunk's pieces under a lease (the one kept from the last write-out, else a
    /// new one); a failed chain is retried with a new lease.
    async fn write_chunk(
        &self,
        inode: Inode,
        f: &FileBuf,
        cw: ChunkWrite,
        purpose: Purpose,
    ) -> Result<Written, FsError> {
        let index = cw.index;
        let keep = purpose.keeps_leases();
        let sync = purpose.end_sync();
        let mut last = FsError::Io;
        let mut kept = Self::kept_lease(f, index).await;
        let mut attempt = 0;
        while attempt < self.attempts {
            attempt += 1;
            let (lease, granted, reused) = match kept.take() {
                Some(KeptLease { lease, granted, .. }) => (lease, granted, true),
                None => (self.lease(inode, index).await?, Instant::now(), false),
            };
            let chunk = ChunkRef {
                chunk_id: lease.chunk_id,
                version: lease.version,
            };
            let written = self
                .cs
                .write_chain(
                    &lease.chain,
                    chunk,
                    &lease.token,
                    &cw.pieces,
                    sync != EndSync::Recorded,
                )
                .await;
            if reused {
                if let Err(e) = &written {
                    // The chunk moved on since (another writer, a truncation, a server gone):
                    // end the kept lease and write under a new one at once.
                    tracing::debug!(
                        "inode {inode} chunk {index}: kept lease no longer fit ({e}); asking anew"
                    );
                    self.end_leases(inode, vec![(index, lease)]).await;
                    self.reader.invalidate(inode);
                    continue;
                }
            }
            let (written, syncing) = match written {
                Ok(syncing) => (Ok(()), syncing),
                Err(e) => (Err(e), None),
            };
            let ok = written.is_ok();
            let length = if ok { cw.end } else { lease.file_length };
            let changes_before = self.master.changes().stamp(inode);
            let end = self.master.call(ClRequest::WriteChunkEnd {
                inode,
                index,
                chunk_id: lease.chunk_id,
                length,
                ok,
                keep: keep && ok,
                sync,
            });
            // For an fsync the copies sync while the master syncs its changelog. A sync that
            // failed is done again, with the failure handling of [`Writer::sync_written`].
            let (end, synced) = match syncing {
                Some(syncing) => {
                    let (end, synced) = tokio::join!(end, self.cs.chain_synced(syncing));
                    if let Err(e) = &synced {
                        tracing::debug!("inode {inode} chunk {index}: sync on the chain: {e}");
                    }
                    (end, synced.is_ok())
                }
                None => (end.await, false),
            };
            match (written, end) {
                (Ok(()), Ok(answer @ (ClReply::Attr(_) | ClReply::Done))) => {
                    let landed = match answer {
                        ClReply::Attr(a) => self
                            .master
                            .changes()
                            .alone_since(inode, changes_before)
                            .map(|n| (a, n)),
                        _ => None,
                    };
                    let done = Written {
                        index,
                        chunk,
                        chain: lease.chain.clone(),
                        token: lease.token.clone(),
                        synced,
                        landed,
                    };
                    if keep {
                        f.lock().kept.keep(index, lease, granted, Instant::now());
                    }
                    return Ok(done);
                }
                (Ok(()), Ok(other)) => {
                    tracing::error!("unexpected answer to the end of a write: {other:?}");
                    return Err(FsError::Io);
                }
                (Ok(()), Err(e)) => {
                    tracing::warn!(
                        "inode {inode} chunk {index}: the master did not accept the write (attempt {attempt}): {e}"
                    );
                    last = call_status(e);
                    if matches!(e, CallError::Fs(FsError::NoEnt | FsError::NoSpace)) {
                        return Err(last);
                    }
                }
                (Err(e), end) => {
                    tracing::warn!(
                        "inode {inode} chunk {index} ({:016X}_{:08X}): write through the chain failed (attempt {attempt}): {e}",
                        chunk.chunk_id,
                        chunk.version
                    );
                    if let Err(end_err) = end {
                        tracing::warn!("ending the failed write: {end_err}");
                    }
                    last = match e {
                        CsError::Status {
                            err: err @ (FsError::NoSpace | FsError::NoChunkservers),
                            ..
                        } => err,
                        _ => FsError::Io,
                    };
                    if last != FsError::Io && attempt >= WRITE_ATTEMPTS {
                        break;
                    }
                }
            }
            self.reader.invalidate(inode);
            tokio::time::sleep(backoff(attempt - 1)).await;
        }
        tracing::error!("inode {inode} chunk {index}: giving up after {attempt} attempts");
        Err(last)
    }

    /// Ends kept leases: the master unlocks their chunks for other writers (nothing else
    /// changes). A failure only delays that until the master's lock timeout.
    async fn end_leases(&self, inode: Inode, leases: Vec<(u32, WriteLease)>) {
        for (index, lease) in leases {
            let end = ClRequest::WriteChunkEnd {
                inode,
                index,
                chunk_id: lease.chunk_id,
                length: lease.file_length,
                ok: false,
                keep: false,
                sync: EndSync::Recorded,
            };
            if let Err(e) = self.master.call(end).await {
                tracing::debug!("inode {inode} chunk {index}: ending a kept lease: {e}");
            }
        }
    }

    /// Ends the leases of `inode` that idled or aged out, between its write-outs.
    async fn end_unfit_leases(&self, inode: Inode) {
        let Some(f) = self.file(inode) else { return };
        let _turn = f.flushing.lock().await;
        let unfit = f.lock().kept.take_unfit(Instant::now());
        self.end_leases(inode, unfit).await;
    }

    /// A write lease for chunk `index`, waiting while another writer holds the chunk, and
    /// (as a read does) while the chunk's servers are away.
    async fn lease(&self, inode: Inode, index: u32) -> Result<WriteLease, FsError> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(20);
        let mut refused = 0;
        loop {
            match self
                .master
                .call(ClRequest::WriteChunk { inode, index })
                .await
            {
                Ok(ClReply::WriteLease(l)) => return Ok(l),
                Ok(other) => {
                    tracing::error!("unexpected answer to a write request: {other:?}");
                    return Err(FsError::Io);
                }
                Err(CallError::Fs(FsError::Locked)) if start.elapsed() < LOCKED_PATIENCE => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(CallError::Fs(FsError::NoChunkservers))
                    if start.elapsed() < NO_SERVERS_PATIENCE =>
                {
                    tracing::debug!("inode {inode} chunk {index}: no chunkservers yet; waiting");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                // No copy of the chunk within the master's reach (its servers are down or
                // restarting), or none took the new version.
                Err(CallError::Fs(FsError::Io)) if refused + 1 < self.attempts => {
                    if refused == 0 {
                        tracing::warn!(
                            "inode {inode} chunk {index}: the master cannot reach a copy to write; waiting for its chunkservers"
                        );
                    }
                    tokio::time::sleep(backoff(refused)).await;
                    refused += 1;
                }
                Err(e) => return Err(call_status(e)),
            }
        }
    }
}

/// A lease asked for early; when its answer was dealt with (or will never come), the
/// write-out waiting for it goes on.
struct EarlyLease {
    buf: Arc<FileBuf>,
    index: u32,
}

impl Drop for EarlyLease {
    fn drop(&mut self) {
        let mut st = self.buf.lock();
        if st.early == Some(self.index) {
            st.early = None;
        }
        drop(st);
        self.buf.early_answered.notify_waiters();
    }
}

fn call_status(e: CallError) -> FsError {
    match e {
        CallError::Fs(e) => e,
        CallError::Disconnected | CallError::Unexpected => FsError::Io,
    }
}

/// Starts background writes of data that waited too long, and ends write leases kept too long.
async fn age_ticker(writer: Weak<Writer>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(w) = writer.upgrade() else { return };
        w.drop_unused_spares();
        let files: Vec<(Inode, Arc<FileBuf>)> =
            w.files().iter().map(|(i, f)| (*i, f.clone())).collect();
        for (inode, f) in files {
            let (start, leases_kept) = {
                let mut st = f.lock();
                let old = st.dirty_since.is_some_and(|t| t.elapsed() >= MAX_DIRTY_AGE);
                let start = old && !st.background_queued;
                if start {
                    st.background_queued = true;
                }
                (start, !st.kept.is_empty())
            };
            if start {
                w.spawn_background(inode);
            } else if leases_kept {
                let w = w.clone();
                tokio::spawn(async move { w.end_unfit_leases(inode).await });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sec: i64) -> Timespec {
        Timespec { sec, nsec: 0 }
    }

    #[test]
    fn buffered_writes_keep_their_time_until_written_out() {
        let mut st = FileState::default();
        assert_eq!(st.modified, None);
        st.buffer(0, b"abc", t(5), &mut None);
        assert_eq!(st.modified, Some(t(5)));
        // A write-out takes the buffer; another write comes while it runs.
        let taken = st.writes;
        st.buffer(3, b"def", t(6), &mut None);
        st.written_out(taken, 1);
        assert_eq!(st.modified, Some(t(6)), "the later write keeps its time");
        let taken = st.writes;
        st.written_out(taken, 2);
        assert_eq!(st.modified, None);
        assert_eq!(st.landed_at, 2);
    }

    #[test]
    fn attributes_asked_before_a_write_out_landed_are_not_trusted() {
        let mut st = FileState::default();
        st.buffer(100, b"abc", t(5), &mut None);
        let before = pending_view(Some(&st), 0, 0);
        assert_eq!(
            before,
            Some(Pending {
                end: Some(103),
                modified: Some(t(5))
            })
        );
        // A write-out takes the data, which lands at epoch 1: an answer asked for at epoch 0
        // may not show it.
        let writes = st.writes;
        let taken = st.dirty.take_all();
        assert_eq!(taken.len(), 1);
        st.written_out(writes, 1);
        assert_eq!(pending_view(Some(&st), 0, 0), None);
        assert_eq!(pending_view(Some(&st), 0, 1), Some(Pending::default()));
        // Without a buffer, only a buffer dropped after a landing since the question counts.
        assert_eq!(pending_view(None, 1, 0), None);
        assert_eq!(pending_view(None, 1, 1), Some(Pending::default()));
    }

    #[test]
    fn a_chunk_changed_since_the_write_is_synced_at_its_new_version() {
        let a = CsAddr {
            host: "127.0.0.1".into(),
            port: 1,
        };
        let b = CsAddr {
            host: "127.0.0.1".into(),
            port: 2,
        };
        let written = ChunkRef {
            chunk_id: 7,
            version: 3,
        };
        let loc = |chunk_id, version, servers: Vec<CsAddr>| ChunkLocation {
            file_length: 100,
            chunk_id,
            version,
            servers,
            token: Default::default(),
        };
        assert_eq!(
            since(written, &loc(7, 4, vec![a.clone(), b.clone()]), &a),
            Since::Newer(ChunkRef {
                chunk_id: 7,
                version: 4
            })
        );
        assert_eq!(since(written, &loc(0, 0, vec![]), &a), Since::Dropped);
        assert_eq!(
            since(written, &loc(9, 1, vec![a.clone()]), &a),
            Since::Dropped
        );
        assert_eq!(since(written, &loc(7, 4, vec![b.clone()]), &a), Since::Lost);
        assert_eq!(since(written, &loc(7, 3, vec![a.clone()]), &a), Since::Lost);
    }
}
