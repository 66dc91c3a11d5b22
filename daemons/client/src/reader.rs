//! Reading files: chunk locations (cached briefly), reads from the first server that works
//! (the others on error, then fresh locations from the master), and a per-file cache of 1 MiB
//! segments filled ahead of sequential readers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use moose_proto::auth::TokenOp;
use moose_proto::msg::{ChunkLocation, ClReply, ClRequest};
use moose_proto::{ChunkRef, FsError, Inode, CHUNK_SIZE};

use crate::csio::{CsError, CsPool};
use crate::local_chunks::LocalChunks;
use crate::master::{CallError, MasterClient};
use crate::read_here;

/// Size of a read-ahead segment (a power of two dividing the chunk size).
pub const SEGMENT: u64 = 1 << 20;
/// Most segments read ahead of a sequential reader.
const MAX_AHEAD: u64 = 8;
/// Segments kept per file.
const MAX_SEGMENTS_PER_FILE: usize = 16;
/// Files with cached segments.
const MAX_CACHED_FILES: usize = 32;
/// Cached chunk locations.
const MAX_LOCATIONS: usize = 16384;
/// Files up to this size are read as soon as an open for reading says where they are.
pub const READ_AT_OPEN: u64 = 256 * 1024;

type SegResult = Result<Arc<Vec<u8>>, FsError>;

/// The bytes a read returns: a buffer of its own, or a piece of a cached segment, which the
/// reply to the kernel takes without a copy (a sequential reader's reads mostly lie in one
/// segment each).
#[derive(Debug)]
pub enum ReadData {
    Owned(Vec<u8>),
    Shared(Arc<Vec<u8>>, std::ops::Range<usize>),
}

impl std::ops::Deref for ReadData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReadData::Owned(v) => v,
            ReadData::Shared(seg, range) => &seg[range.clone()],
        }
    }
}

/// The piece `[from, to)` of a segment, clipped to its end.
fn piece_of(seg: Arc<Vec<u8>>, from: u64, to: u64) -> ReadData {
    let to = (to as usize).min(seg.len());
    let from = (from as usize).min(to);
    ReadData::Shared(seg, from..to)
}

struct Segment {
    cell: tokio::sync::OnceCell<SegResult>,
    created: Instant,
}

#[derive(Default)]
struct FileSegments {
    segs: BTreeMap<u64, Arc<Segment>>,
    last_used: u64,
}

#[derive(Default)]
struct SegmentCache {
    files: HashMap<Inode, FileSegments>,
    tick: u64,
}

struct CachedLocation {
    at: Instant,
    loc: Arc<ChunkLocation>,
}

#[derive(Default)]
struct Locations {
    files: HashMap<Inode, HashMap<u32, CachedLocation>>,
    count: usize,
    /// Invalidations so far: a location asked for before an invalidation may predate the
    /// change that caused it and is not cached.
    generation: u64,
}

impl Locations {
    fn get(&self, inode: Inode, index: u32) -> Option<&CachedLocation> {
        self.files.get(&inode)?.get(&index)
    }

    fn insert(&mut self, inode: Inode, index: u32, c: CachedLocation, ttl: Duration) {
        if self.count >= MAX_LOCATIONS {
            for f in self.files.values_mut() {
                f.retain(|_, c| c.at.elapsed() < ttl);
            }
            self.files.retain(|_, f| !f.is_empty());
            self.count = self.files.values().map(|f| f.len()).sum();
            if self.count >= MAX_LOCATIONS {
                self.files.clear();
                self.count = 0;
            }
        }
        if self
            .files
            .entry(inode)
            .or_default()
            .insert(index, c)
            .is_none()
        {
            self.count += 1;
        }
    }

    fn remove(&mut self, inode: Inode, index: u32) {
        if let Some(f) = self.files.get_mut(&inode) {
            if f.remove(&index).is_some() {
                self.count -= 1;
            }
            if f.is_empty() {
                self.files.remove(&inode);
            }
        }
    }

    fn remove_file(&mut self, inode: Inode) {
        self.generation += 1;
        if let Some(f) = self.files.remove(&inode) {
            self.count -= f.len();
        }
    }
}

/// Whom a read from the chunkservers is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadFor {
    /// A caller that holds the file open while it waits (the kernel, an fsync, a copy).
    Caller,
    /// The mount's own read ahead: it asks the master nothing once the file's last handle
    /// closed (the master refuses reads of files the session has not open).
    Ahead,
}

/// How a read should be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Exactly the bytes asked, no caching.
    Random,
    /// Through the segment cache, reading `ahead` segments in advance.
    Sequential { ahead: u64 },
}

impl ReadMode {
    /// The mode for a reader on its `run`-th consecutive sequential read (0 = not sequential).
    pub fn for_run(run: u32) -> ReadMode {
        if run == 0 {
            ReadMode::Random
        } else {
            ReadMode::Sequential {
                ahead: (run as u64 + 1).min(MAX_AHEAD),
            }
        }
    }
}

pub struct Reader {
    master: MasterClient,
    cs: Arc<CsPool>,
    /// How long locations and segments stay valid.
    ttl: Duration,
    /// Rounds of (every server, then fresh locations) before a read fails (`mfsioretries`).
    rounds: u32,
    locations: Mutex<Locations>,
    cache: Mutex<SegmentCache>,
    /// Copies on this host, read from their files.
    local: LocalChunks,
}

/// The pause after a failed round of a chunk's read or write: growing from 0.1 s to 10 s, so
/// 30 rounds (stock's `mfsioretries`) wait out chunkservers down for about four minutes.
pub fn backoff(round: u32) -> Duration {
    Duration::from_millis(100u64 << round.min(7)).min(Duration::from_secs(10))
}

/// How long a read waits before asking again where a chunk is, when every server said the
/// version it was sent to had moved on: 1 ms, doubling, then as [`backoff`] (round 0, which
/// asks again at once, is 1 ms here too).
fn version_backoff(round: u32) -> Duration {
    if round <= VERSION_ROUNDS {
        Duration::from_millis(1 << round.saturating_sub(1))
    } else {
        backoff(round - VERSION_ROUNDS - 1)
    }
}

/// Rounds of [`version_backoff`] before the usual backoff: 1 + 2 + ... + 64 ms.
const VERSION_ROUNDS: u32 = 7;

impl Reader {
    pub fn new(master: MasterClient, cs: Arc<CsPool>, ttl: Duration, rounds: u32) -> Reader {
        Reader {
            master,
            cs,
            ttl: ttl.max(Duration::from_millis(100)),
            rounds: rounds.max(1),
            locations: Mutex::new(Locations::default()),
            cache: Mutex::new(SegmentCache::default()),
            local: LocalChunks::default(),
        }
    }

    /// Forgets everything cached about the file (after a write or a size change).
    pub fn invalidate(&self, inode: Inode) {
        self.invalidate_data(inode);
        self.locations.lock().remove_file(inode);
    }

    /// Whether the file reaches past `at` by the master's word now, rather than by the
    /// location kept here: a read that ended at `at` short of what the kernel asked for
    /// (the kernel learned a larger length than that location says, as when another mount
    /// wrote more). Then what is kept of the file here is forgotten, for a read anew. A
    /// master that cannot say leaves the read as it was: false.
    pub async fn grew_past(&self, inode: Inode, at: u64) -> bool {
        let Ok(index) = u32::try_from(at / CHUNK_SIZE) else {
            return false;
        };
        let grew = match self.location(inode, index, true).await {
            Ok(loc) => loc.file_length > at,
            Err(e) => {
                tracing::debug!("inode {inode}: where the file ends past {at}: {e}");
                false
            }
        };
        if grew {
            self.invalidate_data(inode);
        }
        grew
    }

    /// Forgets the cached data of the file, keeping its chunk locations (after a write into
    /// the buffer, which changes nothing at the master or the chunkservers yet).
    pub fn invalidate_data(&self, inode: Inode) {
        self.cache.lock().files.remove(&inode);
    }

    /// Reads up to `size` bytes at `offset`; fewer at the end of the file.
    pub async fn read(
        self: &Arc<Self>,
        inode: Inode,
        offset: u64,
        size: u32,
        mode: ReadMode,
    ) -> Result<ReadData, FsError> {
        let end = offset.saturating_add(size as u64);
        if size == 0 {
            return Ok(ReadData::Owned(Vec::new()));
        }
        if let Some(hit) = self.cached(inode, offset, end) {
            // The window moves with the reader on every read, not only when it ran dry:
            // otherwise a reader waits for the disk at each refill.
            if let ReadMode::Sequential { ahead } = mode {
                self.read_ahead(inode, (end - 1) / SEGMENT, ahead);
            }
            return Ok(hit);
        }
        let ahead = match mode {
            ReadMode::Random => {
                let data = self
                    .read_range(inode, offset, size as u64, ReadFor::Caller)
                    .await?;
                return Ok(ReadData::Owned(data));
            }
            ReadMode::Sequential { ahead } => ahead,
        };
        let first = offset / SEGMENT;
        let last = (end - 1) / SEGMENT;
        if first == last {
            let data = self.segment(inode, first).await?;
            self.read_ahead(inode, last, ahead);
            let seg_start = first * SEGMENT;
            return Ok(piece_of(data, offset - seg_start, end - seg_start));
        }
        let mut out = Vec::with_capacity(size as usize);
        for seg in first..=last {
            let data = self.segment(inode, seg).await?;
            let seg_start = seg * SEGMENT;
            let from = offset.max(seg_start) - seg_start;
            let to = (end - seg_start).min(data.len() as u64);
            if from < to {
                out.extend_from_slice(&data[from as usize..to as usize]);
            }
            if (data.len() as u64) < SEGMENT {
                return Ok(ReadData::Owned(out));
            }
        }
        self.read_ahead(inode, last, ahead);
        Ok(ReadData::Owned(out))
    }

    /// Keeps where the first chunk of `inode` lives, as its open said, and with `read_now`
    /// starts reading the file's first segment: the kernel's first read follows the open at
    /// once, and finds the data on its way.
    pub fn opened(self: &Arc<Self>, inode: Inode, first_chunk: ChunkLocation, read_now: bool) {
        let at = Instant::now();
        let loc = Arc::new(first_chunk);
        self.locations
            .lock()
            .insert(inode, 0, CachedLocation { at, loc }, self.ttl);
        if !read_now {
            return;
        }
        let (slot, new) = self.slot_in(&mut self.cache.lock(), inode, 0);
        if new {
            self.fetch(inode, 0, slot);
        }
    }

    /// A small random read served on the calling FUSE thread (see [`crate::read_here`]), if
    /// ready segments or one chunk whose location is at hand hold all of it.
    pub fn read_here(&self, inode: Inode, offset: u64, size: u32) -> Option<ReadData> {
        let end = offset.checked_add(u64::from(size))?;
        if let Some(hit) = self.cached(inode, offset, end) {
            return Some(hit);
        }
        let index = u32::try_from(offset / CHUNK_SIZE).ok()?;
        let loc = self.location_at_hand(inode, index)?;
        let in_chunk = read_here::fits(&loc, offset, size)?;
        self.local
            .read(&loc, in_chunk, size)
            .or_else(|| read_here::read(&loc, in_chunk, size))
            .map(ReadData::Owned)
    }

    /// The bytes of `[offset, end)` if ready segments hold all of them (or reach the end).
    fn cached(&self, inode: Inode, offset: u64, end: u64) -> Option<ReadData> {
        let mut cache = self.cache.lock();
        cache.tick += 1;
        let tick = cache.tick;
        let file = cache.files.get_mut(&inode)?;
        file.last_used = tick;
        let ready = |seg: u64| {
            let s = file.segs.get(&seg)?;
            if s.created.elapsed() >= self.ttl {
                return None;
            }
            s.cell.get()?.as_ref().ok().cloned()
        };
        if offset / SEGMENT == (end - 1) / SEGMENT {
            let seg_start = offset / SEGMENT * SEGMENT;
            return Some(piece_of(
                ready(offset / SEGMENT)?,
                offset - seg_start,
                end - seg_start,
            ));
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut pos = offset;
        while pos < end {
            let seg = pos / SEGMENT;
            let data = ready(seg)?;
            let seg_start = seg * SEGMENT;
            let from = pos - seg_start;
            let to = (end - seg_start).min(data.len() as u64);
            if from < to {
                out.extend_from_slice(&data[from as usize..to as usize]);
            }
            if (data.len() as u64) < SEGMENT {
                break;
            }
            pos = seg_start + SEGMENT;
        }
        Some(ReadData::Owned(out))
    }

    /// The cache slot of a segment, created (and the cache trimmed) if absent or stale.
    fn slot(&self, inode: Inode, seg: u64) -> Arc<Segment> {
        self.slot_in(&mut self.cache.lock(), inode, seg).0
    }

    /// [`Reader::slot`] with the cache locked; true when the slot is new (nobody reads it).
    fn slot_in(&self, cache: &mut SegmentCache, inode: Inode, seg: u64) -> (Arc<Segment>, bool) {
        cache.tick += 1;
        let tick = cache.tick;
        if !cache.files.contains_key(&inode) && cache.files.len() >= MAX_CACHED_FILES {
            if let Some(oldest) = cache
                .files
                .iter()
                .min_by_key(|(_, f)| f.last_used)
                .map(|(i, _)| *i)
            {
                cache.files.remove(&oldest);
            }
        }
        let file = cache.files.entry(inode).or_default();
        file.last_used = tick;
        if let Some(s) = file.segs.get(&seg) {
            let failed = matches!(s.cell.get(), Some(Err(_)));
            if s.created.elapsed() < self.ttl && !failed {
                return (s.clone(), false);
            }
        }
        let s = Arc::new(Segment {
            cell: tokio::sync::OnceCell::new(),
            created: Instant::now(),
        });
        file.segs.insert(seg, s.clone());
        while file.segs.len() > MAX_SEGMENTS_PER_FILE {
            // Drop what lies behind the reader first, then what lies farthest ahead.
            let victim = match file.segs.keys().next() {
                Some(&k) if k < seg => k,
                _ => match file.segs.keys().next_back() {
                    Some(&k) => k,
                    None => break,
                },
            };
            file.segs.remove(&victim);
        }
        (s, true)
    }

    async fn segment(self: &Arc<Self>, inode: Inode, seg: u64) -> SegResult {
        let slot = self.slot(inode, seg);
        self.clone().fill(inode, seg, &slot, ReadFor::Caller).await
    }

    /// The segment's bytes, read from the chunkservers unless the slot holds them or another
    /// reader is reading them.
    async fn fill(
        self: Arc<Self>,
        inode: Inode,
        seg: u64,
        slot: &Segment,
        read_for: ReadFor,
    ) -> SegResult {
        slot.cell
            .get_or_init(|| async move {
                self.read_range(inode, seg * SEGMENT, SEGMENT, read_for)
                    .await
                    .map(Arc::new)
            })
            .await
            .clone()
    }

    /// Starts reading the `ahead` segments behind segment `last` that are neither cached nor
    /// being read, unless `last` is ready and ends the file.
    fn read_ahead(self: &Arc<Self>, inode: Inode, last: u64, ahead: u64) {
        let mut wanted: [Option<(u64, Arc<Segment>)>; MAX_AHEAD as usize] = Default::default();
        {
            let mut cache = self.cache.lock();
            let at_end = cache
                .files
                .get(&inode)
                .and_then(|f| f.segs.get(&last))
                .and_then(|s| s.cell.get())
                .is_some_and(|r| r.as_ref().is_ok_and(|d| (d.len() as u64) < SEGMENT));
            if at_end {
                return;
            }
            for (i, seg) in (last + 1..=last + ahead.min(MAX_AHEAD)).enumerate() {
                let (slot, new) = self.slot_in(&mut cache, inode, seg);
                if new {
                    wanted[i] = Some((seg, slot));
                }
            }
        }
        for (seg, slot) in wanted.into_iter().flatten() {
            self.fetch(inode, seg, slot);
        }
    }

    /// Fills a new segment slot in the background.
    fn fetch(self: &Arc<Self>, inode: Inode, seg: u64, slot: Arc<Segment>) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.fill(inode, seg, &slot, ReadFor::Ahead).await {
                tracing::debug!("read-ahead of inode {inode} segment {seg} failed: {e}");
            }
        });
    }

    /// Where chunk `index` of the file lives (cached unless `fresh`).
    pub async fn location(
        &self,
        inode: Inode,
        index: u32,
        fresh: bool,
    ) -> Result<Arc<ChunkLocation>, FsError> {
        self.locate(inode, index, fresh, ReadFor::Caller).await
    }

    async fn locate(
        &self,
        inode: Inode,
        index: u32,
        fresh: bool,
        read_for: ReadFor,
    ) -> Result<Arc<ChunkLocation>, FsError> {
        if !fresh {
            if let Some(loc) = self.location_at_hand(inode, index) {
                return Ok(loc);
            }
        }
        let generation = self.locations.lock().generation;
        let req = ClRequest::ReadChunk { inode, index };
        let call = match read_for {
            ReadFor::Caller => self.master.start(req),
            ReadFor::Ahead => match self.master.start_while_open(inode, req) {
                Some(call) => call,
                None => {
                    tracing::debug!("read-ahead of inode {inode} stopped: the file was closed");
                    return Err(FsError::Io);
                }
            },
        };
        let loc = match call.await {
            Ok(ClReply::Chunk(loc)) => Arc::new(loc),
            Ok(_) => return Err(FsError::Io),
            Err(CallError::Fs(e)) => return Err(e),
            Err(e) => {
                tracing::warn!("locating chunk {index} of inode {inode}: {e}");
                return Err(FsError::Io);
            }
        };
        let mut locations = self.locations.lock();
        // A writer that may not read the file gets a token that only syncs (see the
        // master's `ReadChunk`): kept, it would be sent with the next read of the chunk
        // through another descriptor, and refused by every server.
        if locations.generation == generation && loc.token.op == TokenOp::Read {
            locations.insert(
                inode,
                index,
                CachedLocation {
                    at: Instant::now(),
                    loc: loc.clone(),
                },
                self.ttl,
            );
        }
        Ok(loc)
    }

    /// The file's length as the location of its chunk at `offset` said, if one is at hand
    /// (an open for reading says where the first chunk lies).
    pub fn length_at_hand(&self, inode: Inode, offset: u64) -> Option<u64> {
        let index = u32::try_from(offset / CHUNK_SIZE).ok()?;
        self.location_at_hand(inode, index).map(|l| l.file_length)
    }

    /// The cached location of chunk `index` of the file, if it is younger than the cache time.
    fn location_at_hand(&self, inode: Inode, index: u32) -> Option<Arc<ChunkLocation>> {
        let locations = self.locations.lock();
        let c = locations.get(inode, index)?;
        (c.at.elapsed() < self.ttl).then(|| c.loc.clone())
    }

    fn forget_location(&self, inode: Inode, index: u32) {
        self.locations.lock().remove(inode, index);
    }

    /// Reads `[offset, offset + size)` from the chunkservers, stopping at the end of the file.
    async fn read_range(
        &self,
        inode: Inode,
        offset: u64,
        size: u64,
        read_for: ReadFor,
    ) -> Result<Vec<u8>, FsError> {
        let end = offset.saturating_add(size);
        let mut out = Vec::with_capacity(size.min(64 * SEGMENT) as usize);
        let mut pos = offset;
        while pos < end {
            let Ok(index) = u32::try_from(pos / CHUNK_SIZE) else {
                break;
            };
            let loc = self.locate(inode, index, false, read_for).await?;
            if pos >= loc.file_length {
                break;
            }
            let chunk_end = (index as u64 + 1) * CHUNK_SIZE;
            let stop = end.min(chunk_end).min(loc.file_length);
            let len = (stop - pos) as usize;
            let at = out.len();
            out.resize(at + len, 0);
            if loc.chunk_id != 0 {
                let in_chunk = (pos % CHUNK_SIZE) as u32;
                self.read_chunk(inode, index, loc, in_chunk, &mut out[at..], read_for)
                    .await?;
            }
            pos = stop;
        }
        Ok(out)
    }

    /// Fills `buf` from chunk `index` at `offset`, trying every server, then fresh locations.
    async fn read_chunk(
        &self,
        inode: Inode,
        index: u32,
        mut loc: Arc<ChunkLocation>,
        offset: u32,
        buf: &mut [u8],
        read_for: ReadFor,
    ) -> Result<(), FsError> {
        for round in 0..self.rounds {
            if loc.chunk_id == 0 {
                // The chunk became a hole (the file was cut meanwhile).
                buf.fill(0);
                return Ok(());
            }
            let chunk = ChunkRef {
                chunk_id: loc.chunk_id,
                version: loc.version,
            };
            // A token that only syncs: the master answered as to a session that may only
            // write the file (a read-ahead that outlived the file's last descriptor open for
            // reading while one open for writing remains). Every server would refuse it: a
            // read-ahead stops there, a program's read asks again as for a version that
            // moved on.
            let may_read = loc.token.op == TokenOp::Read;
            if !may_read && read_for == ReadFor::Ahead {
                return Err(FsError::Access);
            }
            let servers = if may_read { &loc.servers[..] } else { &[] };
            // True while every failure was a version mismatch: the chunk was just written
            // (a new version), so fresh locations help at once.
            let mut outdated = !may_read || !servers.is_empty();
            let mut down = false;
            for server in servers {
                match self.cs.read(server, chunk, &loc.token, offset, buf).await {
                    Ok(()) => {
                        if down {
                            // A server before this one is down: the next read asks where the
                            // chunk is instead of trying it first again.
                            self.forget_location(inode, index);
                        }
                        return Ok(());
                    }
                    // Another version, or a token that expired: fresh locations help at once.
                    Err(CsError::Status {
                        err: FsError::WrongVersion | FsError::NoChunk | FsError::Access,
                        ..
                    }) => tracing::debug!(
                        "chunk {:016X} (inode {inode}, index {index}) is no longer version {} on {server}, or the token expired",
                        chunk.chunk_id,
                        chunk.version
                    ),
                    Err(e) => {
                        outdated = false;
                        down |= e.is_down();
                        tracing::warn!(
                            "reading chunk {:016X}_{:08X} (inode {inode}, index {index}) from {server}: {e}",
                            chunk.chunk_id,
                            chunk.version
                        );
                        if e.is_bad_copy() {
                            self.master.report_bad_copy(chunk, server.clone());
                        }
                    }
                }
            }
            if may_read && servers.is_empty() {
                tracing::warn!(
                    "chunk {:016X} (inode {inode}, index {index}) has no valid copy",
                    chunk.chunk_id
                );
            }
            self.forget_location(inode, index);
            if outdated {
                // A writer is raising the chunk's version: the copies took it before the
                // master heard back from all of them. That lasts milliseconds, not the tenth
                // of a second a server that is down is given.
                if round > 0 {
                    tokio::time::sleep(version_backoff(round)).await;
                }
            } else {
                tokio::time::sleep(backoff(round)).await;
            }
            loc = self.locate(inode, index, true, read_for).await?;
        }
        Err(FsError::Io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_of_a_segment_is_clipped_to_its_end_and_shares_it() {
        let seg = Arc::new((0..100u8).collect::<Vec<u8>>());
        let piece = piece_of(seg.clone(), 10, 20);
        assert_eq!(&piece[..], &seg[10..20]);
        assert!(matches!(&piece, ReadData::Shared(s, _) if Arc::ptr_eq(s, &seg)));
        // The end of the file lies inside the range: what there is, then nothing.
        assert_eq!(&piece_of(seg.clone(), 90, 200)[..], &seg[90..]);
        assert!(piece_of(seg, 150, 200).is_empty());
    }

    #[test]
    fn a_version_in_flux_is_asked_for_again_within_milliseconds() {
        let waits: Vec<u64> = (1..=9)
            .map(|r| version_backoff(r).as_millis() as u64)
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 100, 200]);
        assert_eq!(version_backoff(0), Duration::from_millis(1));
    }

    #[test]
    fn segment_divides_chunk() {
        assert_eq!(CHUNK_SIZE % SEGMENT, 0);
    }

    #[test]
    fn read_mode_grows_with_the_run() {
        assert_eq!(ReadMode::for_run(0), ReadMode::Random);
        assert_eq!(ReadMode::for_run(1), ReadMode::Sequential { ahead: 2 });
        assert_eq!(
            ReadMode::for_run(100),
            ReadMode::Sequential { ahead: MAX_AHEAD }
        );
    }

    #[test]
    fn invalidation_bumps_the_location_generation() {
        let mut l = Locations::default();
        let loc = Arc::new(ChunkLocation {
            file_length: 10,
            chunk_id: 1,
            version: 1,
            servers: vec![],
            token: Default::default(),
        });
        let ttl = Duration::from_secs(1);
        l.insert(
            7,
            0,
            CachedLocation {
                at: Instant::now(),
                loc,
            },
            ttl,
        );
        let before = l.generation;
        l.remove_file(7);
        assert!(l.get(7, 0).is_none());
        assert_ne!(
            l.generation, before,
            "a location asked for before is not cached"
        );
        assert_eq!(l.count, 0);
    }

    #[test]
    fn backoff_is_bounded() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(40), Duration::from_secs(10));
        let stock_retries: Duration = (0..30).map(backoff).sum();
        assert!(
            stock_retries > Duration::from_secs(180),
            "{stock_retries:?}"
        );
    }
}
