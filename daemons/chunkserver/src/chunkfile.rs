//! The on-disk chunk format (MooseFS 4.x style).
//!
//! A chunk lives in `DISK/XX/chunk_<16 hex chunk id>_<8 hex version>.mfs` (upper-case hex, XX
//! one of 256 subfolders). Bytes 0..4096 are the header (`MFSC 1.1`, chunk id u64 BE, version
//! u32 BE, zeros), bytes 4096..8192 the CRC table (CRC32 of each 64 KiB block, u32 BE), data
//! starts at byte 8192. A block that is shorter on disk, or missing, counts as zero-padded to
//! 64 KiB, so a never-written block has the CRC of 64 KiB of zeros.
//!
//! A chunk made from a spare file also carries the spare's number in its header (bytes
//! 1024..1040: `SPARE NO`, u64 BE): a crash that loses the rename out of the spare folder
//! leaves a file whose name and mark agree, which the scan moves back into place (see
//! [`crate::spares`]).
//!
//! Everything here is plain blocking `pread`/`pwrite`; callers keep it off the async threads.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use moose_proto::{BLOCKS_PER_CHUNK, BLOCK_SIZE, CHUNK_SIZE};

pub const SIGNATURE: &[u8; 8] = b"MFSC 1.1";
/// Older signature, still accepted when reading.
const OLD_SIGNATURE: &[u8; 8] = b"MFSC 1.0";
// The layout is shared with mounts that read copies on their host straight from the file.
pub use moose_proto::local_read::{CHUNK_ID_OFFSET, CRC_OFFSET, DATA_OFFSET, ZERO_BLOCK_CRC};
/// Suffix of a chunk file that is still being filled (replication, creation).
pub const TMP_SUFFIX: &str = ".tmp";

pub const BS: usize = BLOCK_SIZE as usize;
const BLOCKS: usize = BLOCKS_PER_CHUNK as usize;

/// One block's worth of bytes.
pub type Block = [u8; BS];

/// A zeroed block buffer on the heap.
pub fn new_block() -> Box<Block> {
    Box::new([0u8; BS])
}

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("cannot read its header: {0}")]
    Io(#[from] io::Error),
    #[error("it is not a chunk file (no MFSC signature in its header)")]
    Signature,
}

/// `chunk_0000000000001234_00000003.mfs`.
pub fn file_name(chunk_id: u64, version: u32) -> String {
    format!("chunk_{chunk_id:016X}_{version:08X}.mfs")
}

/// The chunk id and version a chunk file name stands for; `None` for any other name.
pub fn parse_file_name(name: &str) -> Option<(u64, u32)> {
    let rest = name.strip_prefix("chunk_")?.strip_suffix(".mfs")?;
    let (id, version) = rest.split_once('_')?;
    let version = u32::try_from(parse_hex(version, 8)?).ok()?;
    Some((parse_hex(id, 16)?, version))
}

/// `0A`: the name of subfolder `n`.
pub fn subdir_name(n: u8) -> String {
    format!("{n:02X}")
}

/// The subfolder number a two-digit upper-case hex name stands for.
pub fn parse_subdir_name(name: &str) -> Option<u8> {
    parse_hex(name, 2).and_then(|v| u8::try_from(v).ok())
}

/// Makes the 256 subfolders `00`..`FF` of a disk that are missing (as stock MooseFS does at
/// first start), so that a new chunk never waits for a `mkdir` and its folder's entry is on
/// disk before any chunk in it is; syncs the disk folder when it made any. Returns how many
/// it made.
pub fn make_subdirs(disk: &Path) -> io::Result<usize> {
    let mut made = 0;
    for n in 0..=u8::MAX {
        match std::fs::create_dir(disk.join(subdir_name(n))) {
            Ok(()) => made += 1,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    if made > 0 {
        File::open(disk)?.sync_all()?;
    }
    Ok(made)
}

/// Makes one chunk subfolder again (one removed since the scan) and syncs its disk folder,
/// so that the subfolder's entry is on disk before any chunk in it is.
pub fn make_subdir(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => sync_folder_of(dir),
    }
}

/// The subfolder a new chunk goes to.
pub fn default_subdir(chunk_id: u64) -> u8 {
    (chunk_id & 0xFF) as u8
}

/// Path of a chunk file on a disk.
pub fn chunk_path(disk: &Path, subdir: u8, chunk_id: u64, version: u32) -> PathBuf {
    disk.join(subdir_name(subdir))
        .join(file_name(chunk_id, version))
}

/// Path of the temporary file a chunk is built in before it gets its final name.
pub fn tmp_path(disk: &Path, subdir: u8, chunk_id: u64, version: u32) -> PathBuf {
    disk.join(subdir_name(subdir))
        .join(format!("{}{TMP_SUFFIX}", file_name(chunk_id, version)))
}

fn parse_hex(s: &str, digits: usize) -> Option<u64> {
    let upper_hex = |b: u8| b.is_ascii_digit() || (b'A'..=b'F').contains(&b);
    if s.len() != digits || !s.bytes().all(upper_hex) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// Where a chunk made from a spare file records the spare's number.
const SPARE_MARK_OFFSET: usize = 1024;
const SPARE_MARK: &[u8; 8] = b"SPARE NO";

fn encode_header(out: &mut [u8], chunk_id: u64, version: u32) {
    out[..8].copy_from_slice(SIGNATURE);
    let id_at = CHUNK_ID_OFFSET as usize;
    out[id_at..id_at + 8].copy_from_slice(&chunk_id.to_be_bytes());
    out[16..20].copy_from_slice(&version.to_be_bytes());
}

/// Creates a new, empty chunk file (fails if `path` exists): header plus a CRC table where
/// every block has the CRC of zeros.
pub fn create(path: &Path, chunk_id: u64, version: u32) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    write_empty_header(&file, chunk_id, version, None)?;
    Ok(file)
}

/// Writes the whole header of an empty chunk: id, version, the spare's number when it is made
/// from one, and the CRC of zeros for every block.
fn write_empty_header(
    file: &File,
    chunk_id: u64,
    version: u32,
    spare: Option<u64>,
) -> io::Result<()> {
    let mut head = [0u8; DATA_OFFSET as usize];
    encode_header(&mut head, chunk_id, version);
    if let Some(number) = spare {
        let mark = &mut head[SPARE_MARK_OFFSET..SPARE_MARK_OFFSET + 16];
        mark[..8].copy_from_slice(SPARE_MARK);
        mark[8..].copy_from_slice(&number.to_be_bytes());
    }
    for entry in head[CRC_OFFSET as usize..].chunks_exact_mut(4) {
        entry.copy_from_slice(&ZERO_BLOCK_CRC.to_be_bytes());
    }
    file.write_all_at(&head, 0)
}

/// Turns spare file number `spare` (empty, or holding at most a header) into a new, empty
/// chunk file marked with that number.
pub fn reuse(path: &Path, chunk_id: u64, version: u32, spare: u64) -> io::Result<File> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    write_empty_header(&file, chunk_id, version, Some(spare))?;
    Ok(file)
}

/// The chunk id, version and spare number in the header of a chunk made from a spare file;
/// `None` for any other file.
pub fn read_spare_mark(file: &File) -> Option<(u64, u32, u64)> {
    let mut head = [0u8; SPARE_MARK_OFFSET + 16];
    file.read_exact_at(&mut head, 0).ok()?;
    let (chunk_id, version) = parse_header(&head[..20])?;
    let mark = &head[SPARE_MARK_OFFSET..];
    if &mark[..8] != SPARE_MARK {
        return None;
    }
    let number = u64::from_be_bytes(mark[8..].try_into().ok()?);
    Some((chunk_id, version, number))
}

/// The chunk id and version in the first 20 bytes of a header; `None` without a signature.
fn parse_header(head: &[u8]) -> Option<(u64, u32)> {
    if &head[..8] != SIGNATURE && &head[..8] != OLD_SIGNATURE {
        return None;
    }
    let id_at = CHUNK_ID_OFFSET as usize;
    let id = u64::from_be_bytes(head[id_at..id_at + 8].try_into().ok()?);
    let version = u32::from_be_bytes(head[16..20].try_into().ok()?);
    Some((id, version))
}

/// Opens an existing chunk file for reading and writing.
pub fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// The chunk id and version recorded in the header.
pub fn read_header(file: &File) -> Result<(u64, u32), HeaderError> {
    let mut head = [0u8; 20];
    let mut done = 0;
    while done < head.len() {
        match file.read_at(&mut head[done..], done as u64) {
            Ok(0) => return Err(HeaderError::Signature),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    parse_header(&head).ok_or(HeaderError::Signature)
}

/// Rewrites the header (after a version change).
pub fn write_header(file: &File, chunk_id: u64, version: u32) -> io::Result<()> {
    let mut head = [0u8; 20];
    encode_header(&mut head, chunk_id, version);
    file.write_all_at(&head, 0)
}

fn out_of_chunk(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what} lies outside the chunk"),
    )
}

/// Whether a read may wait for the disk, or is to be served from the page cache only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Yes,
    /// `preadv2(RWF_NOWAIT)`: data not in the page cache fails with `WouldBlock`.
    CachedOnly,
}

/// Set when the kernel or the file system refuses `RWF_NOWAIT`: every read then waits.
static NOWAIT_REFUSED: AtomicBool = AtomicBool::new(false);

/// `pread` at `offset`; with [`Wait::CachedOnly`] it fails with `WouldBlock` rather than wait
/// for the disk.
fn read_at(file: &File, buf: &mut [u8], offset: u64, wait: Wait) -> io::Result<usize> {
    if wait == Wait::Yes {
        return file.read_at(buf, offset);
    }
    if NOWAIT_REFUSED.load(Ordering::Relaxed) {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let offset = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset out of range"))?;
    // SAFETY: one iovec over `buf`, which outlives the call; the fd is open for reading.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) => Err(io::ErrorKind::WouldBlock.into()),
        Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) => {
            NOWAIT_REFUSED.store(true, Ordering::Relaxed);
            Err(io::ErrorKind::WouldBlock.into())
        }
        _ => Err(e),
    }
}

/// `cachestat(2)` (Linux 6.5): the same number on every architecture, not in `libc` yet.
const SYS_CACHESTAT: libc::c_long = 451;

/// True when the page cache holds all of blocks `first .. first + count`, asked with
/// `cachestat(2)`, which neither waits nor starts a read (a read with `RWF_NOWAIT` starts
/// the kernel's read-ahead of what it misses). False where the kernel cannot tell.
pub fn blocks_cached(file: &File, first: u32, count: u32) -> bool {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    let range = Range {
        off: DATA_OFFSET + u64::from(first) * BS as u64,
        len: u64::from(count) * BS as u64,
    };
    let mut stat = Stat::default();
    // SAFETY: both structs match the kernel's layout and outlive the call.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0u32,
        )
    };
    let pages = range.len.div_ceil(crate::bufpool::ALIGN as u64);
    rc == 0 && stat.nr_cache >= pages
}

/// Fills `buf` from `offset`, up to the end of the file; returns how many bytes it read.
fn read_up_to(file: &File, buf: &mut [u8], offset: u64, wait: Wait) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match read_at(file, &mut buf[done..], offset + done as u64, wait) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Reads the CRC entries of blocks `first .. first + out.len()`.
pub fn read_crcs(file: &File, first: u32, out: &mut [u32], wait: Wait) -> io::Result<()> {
    let first = first as usize;
    if first + out.len() > BLOCKS {
        return Err(out_of_chunk("CRC range"));
    }
    let mut raw = [0u8; 4 * BLOCKS];
    let raw = &mut raw[..4 * out.len()];
    if read_up_to(file, raw, CRC_OFFSET + 4 * first as u64, wait)? < raw.len() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    for (crc, bytes) in out.iter_mut().zip(raw.chunks_exact(4)) {
        *crc = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    Ok(())
}

fn write_crc(file: &File, block: usize, crc: u32) -> io::Result<()> {
    file.write_all_at(&crc.to_be_bytes(), CRC_OFFSET + 4 * block as u64)
}

/// Reads block `block` into `buf` (one block long), zero-filling whatever lies past the end of
/// the file. Returns false when no byte of the block was on disk (it is all zeros).
pub fn read_block(file: &File, block: u32, buf: &mut [u8], wait: Wait) -> io::Result<bool> {
    if block as usize >= BLOCKS {
        return Err(out_of_chunk("block"));
    }
    let done = read_up_to(file, buf, DATA_OFFSET + u64::from(block) * BS as u64, wait)?;
    buf[done..].fill(0);
    Ok(done > 0)
}

/// Writes block `block` and its CRC. `data` is one block long, or shorter for the last block
/// of a chunk's data; `crc` is the CRC of the block padded with zeros to 64 KiB.
pub fn write_block(file: &File, block: u32, data: &[u8], crc: u32) -> io::Result<()> {
    if block as usize >= BLOCKS {
        return Err(out_of_chunk("block"));
    }
    if data.is_empty() || data.len() > BS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a block holds 1 byte to 64 KiB",
        ));
    }
    file.write_all_at(data, DATA_OFFSET + u64::from(block) * BS as u64)?;
    write_crc(file, block as usize, crc)
}

/// Starts writing the data bytes `from..to` of a chunk file to disk, without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`); a hint, so a failure is only logged.
pub fn start_writeback(file: &File, from: u64, to: u64) {
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(DATA_OFFSET + from),
        libc::off64_t::try_from(to.saturating_sub(from)),
    ) else {
        return;
    };
    // SAFETY: a plain system call on an open descriptor; no memory is passed.
    let rc = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
    if rc != 0 {
        tracing::debug!(
            "starting the disk writes of a chunk file: {}",
            io::Error::last_os_error()
        );
    }
}

/// Starts reading blocks `first .. first + count` into the page cache, without waiting
/// (`posix_fadvise(POSIX_FADV_WILLNEED)`); a hint, so a failure is ignored.
pub fn start_reads(file: &File, first: u32, count: u32) {
    let offset = DATA_OFFSET + u64::from(first) * BS as u64;
    let len = u64::from(count) * BS as u64;
    if let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) {
        // SAFETY: a plain system call on an open descriptor; no memory is passed.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED) };
    }
}

/// Makes a rename or creation of `path` durable: fsyncs the folder holding it.
pub fn sync_folder_of(path: &std::path::Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// A block whose data does not match its CRC entry, found while patching it.
#[derive(Debug, thiserror::Error)]
#[error("CRC mismatch in block {block} (table {stored:08X}, data {found:08X})")]
pub struct CrcMismatch {
    pub block: u32,
    pub stored: u32,
    pub found: u32,
}

impl CrcMismatch {
    /// The mismatch behind an I/O error of [`write_data`], if that is what it is.
    pub fn in_error(e: &io::Error) -> Option<&CrcMismatch> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<CrcMismatch>())
    }
}

/// Opens a second descriptor of a chunk file for reads and writes that bypass the page cache
/// (`O_DIRECT`). `None` where that is not to be had (a file system without direct I/O, no
/// `/proc`): reads and writes then go through the page cache as before.
pub fn open_direct(file: &File) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
    {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::debug!("a chunk file cannot be opened for direct I/O: {e}");
            None
        }
    }
}

/// Reads whole blocks `first ..` into page-aligned `buf` (a multiple of the block size)
/// through `direct` (see [`open_direct`]) in one system call, past the page cache: a
/// stream's blocks are read once, and the page cache would only cost a copy and fresh
/// memory. Returns how many bytes the file held (the rest of `buf` is zeroed); `Ok(None)`,
/// with nothing read, when the file system refused the direct read.
pub fn read_blocks_direct(direct: &File, first: u32, buf: &mut [u8]) -> io::Result<Option<usize>> {
    if !buf.len().is_multiple_of(BS) || !is_aligned(buf) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a direct read takes whole blocks into aligned memory",
        ));
    }
    if first as usize + buf.len() / BS > BLOCKS {
        return Err(out_of_chunk("read"));
    }
    let offset = DATA_OFFSET + u64::from(first) * BS as u64;
    let mut done = 0;
    // A read short of an aligned length ended at the end of the file (another from there
    // would be unaligned and refused).
    while done < buf.len() && done.is_multiple_of(crate::bufpool::ALIGN) {
        match direct.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && done == 0 => {
                tracing::debug!("a direct read of chunk blocks was refused: {e}");
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(Some(done))
}

/// Most blocks [`write_blocks_direct`] takes at once (1 MiB).
pub const MAX_RUN: usize = 16;

/// Writes whole blocks `first ..` (at most [`MAX_RUN`]) from page-aligned memory (see
/// [`is_aligned`]) through `direct` (see [`open_direct`]) in one system call, and their CRC
/// entries (`crcs`, one per block) in another. Streamed data is not copied into the page
/// cache: that saves the copy, the kernel's writeback of it and memory the clients cache
/// already. `Ok(false)`, with nothing written, when the file system refused the direct write.
pub fn write_blocks_direct(
    file: &File,
    direct: &File,
    first: u32,
    blocks: &[&[u8]],
    crcs: &[u32],
) -> io::Result<bool> {
    let first = first as usize;
    if blocks.len() != crcs.len() || first + blocks.len() > BLOCKS {
        return Err(out_of_chunk("write"));
    }
    if blocks.iter().any(|b| b.len() != BS) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a direct write takes whole blocks",
        ));
    }
    if blocks.len() > MAX_RUN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many blocks for one direct write",
        ));
    }
    let mut iov = [io::IoSlice::new(&[]); MAX_RUN];
    for (slot, block) in iov.iter_mut().zip(blocks) {
        *slot = io::IoSlice::new(block);
    }
    let mut slices = &mut iov[..blocks.len()];
    let mut offset = DATA_OFFSET + (first * BS) as u64;
    let mut written_any = false;
    while !slices.is_empty() {
        let n = match pwritev(direct, slices, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !written_any => {
                tracing::debug!("a direct write of chunk blocks was refused: {e}");
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        written_any = true;
        offset += n as u64;
        io::IoSlice::advance_slices(&mut slices, n);
    }
    let mut raw = [0u8; 4 * MAX_RUN];
    for (entry, crc) in raw.chunks_exact_mut(4).zip(crcs) {
        entry.copy_from_slice(&crc.to_be_bytes());
    }
    file.write_all_at(&raw[..4 * crcs.len()], CRC_OFFSET + 4 * first as u64)?;
    Ok(true)
}

/// Whether `data` starts in memory a direct write can take.
pub fn is_aligned(data: &[u8]) -> bool {
    (data.as_ptr() as usize).is_multiple_of(crate::bufpool::ALIGN)
}

fn pwritev(file: &File, iov: &[io::IoSlice], offset: u64) -> io::Result<usize> {
    let count = libc::c_int::try_from(iov.len().min(1024)).unwrap_or(1024);
    let offset = libc::off_t::try_from(offset).map_err(|_| out_of_chunk("write"))?;
    // SAFETY: `IoSlice` has the layout of `iovec` and the slices outlive the call.
    let n = unsafe {
        libc::pwritev(
            file.as_raw_fd(),
            iov.as_ptr().cast::<libc::iovec>(),
            count,
            offset,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Writes `data` at `offset` within the chunk and updates the CRC of every block it touches.
/// `data_crc` is the CRC of `data`, reused when `data` is exactly one aligned block. A partial
/// block is read, patched and its CRC recomputed over the whole block (`scratch` holds it).
/// Everything goes through the page cache; a stream's whole blocks go past it with
/// [`write_blocks_direct`].
pub fn write_data(
    file: &File,
    offset: u32,
    data: &[u8],
    data_crc: u32,
    scratch: &mut Block,
) -> io::Result<()> {
    let mut pos = offset as usize;
    if pos as u64 + data.len() as u64 > CHUNK_SIZE {
        return Err(out_of_chunk("write"));
    }
    let whole_block = data.len() == BS && pos.is_multiple_of(BS);
    let mut rest = data;
    while !rest.is_empty() {
        let block = pos / BS;
        let within = pos % BS;
        let n = (BS - within).min(rest.len());
        let (seg, tail) = rest.split_at(n);
        let crc = if n == BS {
            if whole_block {
                data_crc
            } else {
                crc32fast::hash(seg)
            }
        } else {
            // The old bytes stay in the block: check them before the new CRC covers them,
            // or a flipped bit would become valid.
            let on_disk = read_block(file, block as u32, &mut scratch[..], Wait::Yes)?;
            let mut stored = [0u32; 1];
            read_crcs(file, block as u32, &mut stored, Wait::Yes)?;
            let found = if on_disk {
                crc32fast::hash(&scratch[..])
            } else {
                ZERO_BLOCK_CRC
            };
            if found != stored[0] {
                return Err(io::Error::other(CrcMismatch {
                    block: block as u32,
                    stored: stored[0],
                    found,
                }));
            }
            scratch[within..within + n].copy_from_slice(seg);
            crc32fast::hash(&scratch[..])
        };
        file.write_all_at(seg, DATA_OFFSET + pos as u64)?;
        write_crc(file, block, crc)?;
        pos += n;
        rest = tail;
    }
    Ok(())
}

/// Cuts (or extends with zeros) the chunk's data to `length` bytes: the rest of the last
/// partial block reads as zeros and gets its CRC recomputed, blocks past the end get the CRC
/// of zeros.
pub fn truncate(file: &File, length: u32, scratch: &mut Block) -> io::Result<()> {
    if u64::from(length) > CHUNK_SIZE {
        return Err(out_of_chunk("length"));
    }
    let length = length as usize;
    file.set_len(DATA_OFFSET + length as u64)?;
    let full = length / BS;
    let partial = !length.is_multiple_of(BS);
    if partial {
        read_block(file, full as u32, &mut scratch[..], Wait::Yes)?;
        write_crc(file, full, crc32fast::hash(&scratch[..]))?;
    }
    let first_empty = full + usize::from(partial);
    if first_empty < BLOCKS {
        let mut raw = [0u8; 4 * BLOCKS];
        let raw = &mut raw[..4 * (BLOCKS - first_empty)];
        for entry in raw.chunks_exact_mut(4) {
            entry.copy_from_slice(&ZERO_BLOCK_CRC.to_be_bytes());
        }
        file.write_all_at(raw, CRC_OFFSET + 4 * first_empty as u64)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Bytes of data in the chunk file (its length minus the header and CRC table).
    fn data_len(file: &File) -> io::Result<u64> {
        Ok(file.metadata()?.len().saturating_sub(DATA_OFFSET))
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Writes `data` at `offset` through the page cache, with its CRC.
    fn put(file: &File, offset: u32, data: &[u8], scratch: &mut Block) -> io::Result<()> {
        write_data(file, offset, data, crc32fast::hash(data), scratch)
    }

    fn crcs(file: &File) -> Vec<u32> {
        let mut out = vec![0u32; BLOCKS];
        read_crcs(file, 0, &mut out, Wait::Yes).unwrap();
        out
    }

    fn block(file: &File, n: u32) -> Vec<u8> {
        let mut buf = vec![0u8; BS];
        read_block(file, n, &mut buf, Wait::Yes).unwrap();
        buf
    }

    #[test]
    fn names_round_trip() {
        let name = file_name(0x1234_5678_9ABC_DEF0, 0x2A);
        assert_eq!(name, "chunk_123456789ABCDEF0_0000002A.mfs");
        assert_eq!(parse_file_name(&name), Some((0x1234_5678_9ABC_DEF0, 0x2A)));
        assert_eq!(
            parse_file_name("chunk_FFFFFFFFFFFFFFFF_FFFFFFFF.mfs"),
            Some((u64::MAX, u32::MAX))
        );
        assert_eq!(subdir_name(0x0A), "0A");
        assert_eq!(parse_subdir_name("FF"), Some(0xFF));
        assert_eq!(default_subdir(0x1234), 0x34);
        assert_eq!(
            chunk_path(Path::new("/d"), 0x34, 0x1234, 1),
            PathBuf::from("/d/34/chunk_0000000000001234_00000001.mfs")
        );
        assert_eq!(
            tmp_path(Path::new("/d"), 0x34, 0x1234, 1),
            PathBuf::from("/d/34/chunk_0000000000001234_00000001.mfs.tmp")
        );
    }

    #[test]
    fn malformed_names_are_not_chunks() {
        for bad in [
            "chunk_123456789abcdef0_0000002A.mfs",
            "chunk_123456789ABCDEF_0000002A.mfs",
            "chunk_123456789ABCDEF0_2A.mfs",
            "chunk_123456789ABCDEF0_0000002A.mfs.tmp",
            "chunk_+23456789ABCDEF0_0000002A.mfs",
            "chunk_123456789ABCDEF0.mfs",
            "chunk_123456789ABCDEF0_0000002A_1.mfs",
            "chunk__.mfs",
            ".lock",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
        for bad in ["0a", "1", "100", "G0", "+1"] {
            assert_eq!(parse_subdir_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn create_writes_header_and_zero_crc_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.mfs");
        let file = create(&path, 77, 5).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), DATA_OFFSET);
        let raw = std::fs::read(&path).unwrap();
        assert_eq!(&raw[..8], SIGNATURE);
        assert_eq!(read_header(&file).unwrap(), (77, 5));
        assert!(crcs(&file).iter().all(|&c| c == ZERO_BLOCK_CRC));
        assert_eq!(data_len(&file).unwrap(), 0);
        assert!(create(&path, 77, 5).is_err(), "create must not overwrite");
        write_header(&file, 77, 6).unwrap();
        assert_eq!(read_header(&file).unwrap(), (77, 6));
    }

    #[test]
    fn header_of_another_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk");
        std::fs::write(&path, b"hello").unwrap();
        let file = open(&path).unwrap();
        assert!(matches!(read_header(&file), Err(HeaderError::Signature)));
        std::fs::write(&path, [b'x'; 64]).unwrap();
        assert!(matches!(read_header(&file), Err(HeaderError::Signature)));
    }

    /// Pages of `file` in `offset .. offset + len` held in the page cache (`mincore`).
    pub(crate) fn cached_pages(file: &File, offset: u64, len: usize) -> usize {
        let page = 4096;
        // SAFETY: a read-only shared mapping of an open file, only passed to `mincore` and
        // unmapped before returning; `vec` has one byte per page of the mapping.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset as libc::off_t,
            );
            assert_ne!(map, libc::MAP_FAILED, "{}", io::Error::last_os_error());
            let mut vec = vec![0u8; len.div_ceil(page)];
            let rc = libc::mincore(map, len, vec.as_mut_ptr());
            libc::munmap(map, len);
            assert_eq!(rc, 0, "{}", io::Error::last_os_error());
            vec.iter().filter(|&&v| v & 1 == 1).count()
        }
    }

    #[test]
    fn whole_blocks_go_to_the_disk_without_the_page_cache() {
        // A disk file system: tmpfs keeps even direct writes in its page cache.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("c.mfs");
        let file = create(&path, 9, 1).unwrap();
        let direct = open_direct(&file).expect("/var/tmp takes O_DIRECT on a disk file system");
        let d = &direct;
        let pool = crate::bufpool::BufPool::new(8);
        let bufs: Vec<_> = (0..4u8)
            .map(|i| {
                let mut b = pool.get();
                b.extend_from_slice(&pattern(BS, i)).unwrap();
                b
            })
            .collect();
        let blocks: Vec<&[u8]> = bufs.iter().map(|b| &b[..]).collect();
        let block_crcs: Vec<u32> = blocks.iter().map(|b| crc32fast::hash(b)).collect();
        // Blocks 2..6 in one write, block 7 alone, then part of block 8 through the cache.
        assert!(write_blocks_direct(&file, d, 2, &blocks, &block_crcs).unwrap());
        let mut scratch = new_block();
        assert!(write_blocks_direct(&file, d, 7, &blocks[3..], &block_crcs[3..]).unwrap());
        let part = pattern(1000, 9);
        put(&file, (8 * BS) as u32, &part, &mut scratch).unwrap();

        let data = |b: u64| DATA_OFFSET + b * BS as u64;
        assert_eq!(
            cached_pages(&file, data(2), 6 * BS),
            0,
            "direct blocks left in the cache"
        );
        assert!(
            cached_pages(&file, data(8), BS) > 0,
            "a partial block goes through the cache"
        );
        let table = crcs(&file);
        for (i, crc) in block_crcs.iter().enumerate() {
            assert_eq!(block(&file, 2 + i as u32), pattern(BS, i as u8));
            assert_eq!(table[2 + i], *crc);
        }
        assert_eq!(block(&file, 7), pattern(BS, 3));
        assert_eq!(table[7], block_crcs[3]);
        assert_eq!(table[8], crc32fast::hash(&block(&file, 8)));
        assert_eq!(&block(&file, 8)[..1000], &part[..]);
        assert_eq!(table[6], ZERO_BLOCK_CRC);

        // A partial write into a block written directly patches what is on the disk.
        let patch = pattern(100, 42);
        put(&file, (3 * BS + 10) as u32, &patch, &mut scratch).unwrap();
        let mut expected = pattern(BS, 1);
        expected[10..110].copy_from_slice(&patch);
        assert_eq!(block(&file, 3), expected);
        assert_eq!(crcs(&file)[3], crc32fast::hash(&expected));
    }

    #[test]
    fn direct_reads_stop_at_the_end_of_the_file_and_leave_the_cache_alone() {
        // A disk file system: tmpfs keeps even direct reads in its page cache.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let file = create(&dir.path().join("c.mfs"), 9, 1).unwrap();
        let direct = open_direct(&file).expect("/var/tmp takes O_DIRECT on a disk file system");
        let mut scratch = new_block();
        let data = pattern(2 * BS + 3000, 6);
        put(&file, BS as u32, &data, &mut scratch).unwrap();
        assert!(blocks_cached(&file, 1, 2), "just written");
        file.sync_data().unwrap();
        // SAFETY: a plain system call on an open descriptor; no memory is passed.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert!(!blocks_cached(&file, 1, 2), "dropped from the page cache");

        let mut buf = crate::bufpool::AlignedBlocks::zeroed(4);
        buf.fill(0xEE);
        // Blocks 1..5: two whole blocks, 3000 bytes, then the end of the file.
        assert_eq!(
            read_blocks_direct(&direct, 1, &mut buf).unwrap(),
            Some(data.len())
        );
        assert_eq!(&buf[..data.len()], &data[..]);
        assert!(
            buf[data.len()..].iter().all(|&b| b == 0),
            "zeros past the end"
        );
        assert_eq!(cached_pages(&file, DATA_OFFSET, 5 * BS), 0);
        assert!(!blocks_cached(&file, 1, 1));
        // Wholly past the end: nothing, all zeros.
        assert_eq!(read_blocks_direct(&direct, 10, &mut buf).unwrap(), Some(0));
        assert!(buf.iter().all(|&b| b == 0));
        // Past the chunk, or into memory that is not aligned: refused.
        assert!(read_blocks_direct(&direct, BLOCKS as u32 - 3, &mut buf).is_err());
        assert!(read_blocks_direct(&direct, 0, &mut buf[1..BS + 1]).is_err());
    }

    #[test]
    fn full_partial_and_straddling_writes_keep_crcs_right() {
        let dir = tempfile::tempdir().unwrap();
        let file = create(&dir.path().join("c.mfs"), 1, 1).unwrap();
        let mut scratch = new_block();
        let full = pattern(BS, 1);
        put(&file, 0, &full, &mut scratch).unwrap();
        let part = pattern(5000, 2);
        put(&file, BS as u32 + 100, &part, &mut scratch).unwrap();
        let straddle = pattern(300, 3);
        let at = 3 * BS as u32 - 100;
        put(&file, at, &straddle, &mut scratch).unwrap();

        let mut expected = vec![0u8; 4 * BS];
        expected[..BS].copy_from_slice(&full);
        expected[BS + 100..BS + 5100].copy_from_slice(&part);
        expected[at as usize..at as usize + 300].copy_from_slice(&straddle);
        let table = crcs(&file);
        for b in 0..4u32 {
            let got = block(&file, b);
            let want = &expected[b as usize * BS..(b as usize + 1) * BS];
            assert_eq!(got, want, "block {b}");
            assert_eq!(table[b as usize], crc32fast::hash(want), "crc of block {b}");
        }
        assert!(table[4..].iter().all(|&c| c == ZERO_BLOCK_CRC));
        assert_eq!(data_len(&file).unwrap(), at as u64 + 300);
        assert!(!read_block(&file, 10, &mut vec![1u8; BS], Wait::Yes).unwrap());
    }

    #[test]
    fn a_partial_write_into_a_damaged_block_is_refused_and_changes_nothing() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let file = create(&dir.path().join("c.mfs"), 1, 1).unwrap();
        let mut scratch = new_block();
        let full = pattern(2 * BS, 4);
        put(&file, 0, &full, &mut scratch).unwrap();
        // A bit flips on the disk in block 1.
        let at = DATA_OFFSET + BS as u64 + 77;
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, at).unwrap();
        file.write_all_at(&[b[0] ^ 0x10], at).unwrap();
        let before = crcs(&file);
        let patch = [9u8; 10];
        let err = put(&file, BS as u32 + 1000, &patch, &mut scratch).unwrap_err();
        let m = CrcMismatch::in_error(&err).expect("a CRC mismatch");
        assert_eq!(m.block, 1);
        assert_eq!(crcs(&file), before, "the damaged block keeps its old CRC");
        assert_ne!(&block(&file, 1)[1000..1010], &patch, "nothing was written");
        // The intact block 0 still takes partial writes.
        put(&file, 5, &patch, &mut scratch).unwrap();
    }

    #[test]
    fn writes_past_the_chunk_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = create(&dir.path().join("c.mfs"), 1, 1).unwrap();
        let mut scratch = new_block();
        let data = [1u8; 10];
        let at = (CHUNK_SIZE - 5) as u32;
        assert!(put(&file, at, &data, &mut scratch).is_err());
        assert!(read_block(&file, BLOCKS as u32, &mut [0u8; BS], Wait::Yes).is_err());
    }

    #[test]
    fn truncate_drops_data_and_fixes_crcs() {
        let dir = tempfile::tempdir().unwrap();
        let file = create(&dir.path().join("c.mfs"), 1, 1).unwrap();
        let mut scratch = new_block();
        let data = pattern(3 * BS, 9);
        for b in 0..3 {
            let piece = &data[b * BS..(b + 1) * BS];
            put(&file, (b * BS) as u32, piece, &mut scratch).unwrap();
        }
        let length = BS + BS / 2;
        truncate(&file, length as u32, &mut scratch).unwrap();
        assert_eq!(data_len(&file).unwrap(), length as u64);
        let table = crcs(&file);
        assert_eq!(table[0], crc32fast::hash(&data[..BS]));
        let mut last = data[BS..2 * BS].to_vec();
        last[BS / 2..].fill(0);
        assert_eq!(block(&file, 1), last);
        assert_eq!(table[1], crc32fast::hash(&last));
        assert!(table[2..].iter().all(|&c| c == ZERO_BLOCK_CRC));

        // Growing again reads zeros with consistent CRCs.
        truncate(&file, (3 * BS) as u32, &mut scratch).unwrap();
        let table = crcs(&file);
        assert_eq!(block(&file, 2), vec![0u8; BS]);
        assert_eq!(table[1], crc32fast::hash(&last));
        assert_eq!(table[2], ZERO_BLOCK_CRC);

        truncate(&file, 0, &mut scratch).unwrap();
        assert!(crcs(&file).iter().all(|&c| c == ZERO_BLOCK_CRC));
        assert!(truncate(&file, CHUNK_SIZE as u32 + 1, &mut scratch).is_err());
    }
}
