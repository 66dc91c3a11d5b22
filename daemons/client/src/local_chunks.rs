//! Copies of chunks on this host, read straight from their files (see
//! `moose_proto::local_read`). A small random read then wakes no chunkserver: the FUSE thread
//! reads the blocks and their CRCs itself.
//!
//! Only what can be checked is used: every block read must match the CRC the chunkserver
//! stored for it, the file's header must still name the chunk (a deleted chunk's file becomes
//! a spare for another chunk), a file no longer linked is dropped, and a file is used only
//! while the location still lists the server it came from. A mismatch, as while the
//! chunkserver rewrites the block, leaves the read to the usual path, which also reports a
//! copy that is really damaged. A chunkserver is trusted here as far as its
//! data port is: the socket's peer must run as the user that listens on that port.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moose_proto::auth::ChunkToken;
use moose_proto::local_read::{
    ask, blocks_of, socket_name, Answer, CHUNK_ID_OFFSET, CRC_OFFSET, DATA_OFFSET,
};
use moose_proto::msg::ChunkLocation;
use moose_proto::{ChunkRef, CsAddr, BLOCK_SIZE};
use nix::sys::socket::{getsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, UnixAddr};
use parking_lot::Mutex;

/// Chunk files kept open; past this the least recently used are closed.
const MAX_FILES: usize = 256;
/// A chunk file unused this long is closed.
const IDLE: Duration = Duration::from_secs(10);
/// A server found elsewhere (or a chunk it would not hand out) is asked again after this.
const ASK_AGAIN: Duration = Duration::from_secs(30);
/// A chunk whose read here failed its check goes the usual way for this long.
const AFTER_MISMATCH: Duration = Duration::from_secs(2);
/// Time a chunkserver has to answer on its socket.
const PATIENCE: Duration = Duration::from_secs(1);
/// Most blocks one read here covers: the largest read served on a FUSE thread, at any offset.
const MAX_BLOCKS: usize = crate::read_here::MAX_SIZE as usize / BS + 1;

const BS: usize = BLOCK_SIZE as usize;

thread_local! {
    /// The blocks of the read under way on this thread (no allocation per read).
    static BLOCKS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

#[derive(Default)]
pub struct LocalChunks {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    files: HashMap<ChunkRef, Kept>,
    /// Servers that are not on this host, or not to be trusted, until when.
    elsewhere: HashMap<CsAddr, Instant>,
    /// Chunks no server here handed out, until when.
    refused: HashMap<ChunkRef, Instant>,
    /// Servers whose socket's user was found on their data port: the user, and until when
    /// that holds without a new look (one entry per server on this host).
    trusted: HashMap<CsAddr, (u32, Instant)>,
}

struct Kept {
    file: Arc<File>,
    /// The server that handed it out.
    server: CsAddr,
    used: Instant,
}

impl LocalChunks {
    /// `size` bytes at `in_chunk` of the chunk `loc` names, read from a copy on this host;
    /// `None` when there is none at hand or the read cannot be checked.
    pub fn read(&self, loc: &ChunkLocation, in_chunk: u32, size: u32) -> Option<Vec<u8>> {
        let chunk = ChunkRef {
            chunk_id: loc.chunk_id,
            version: loc.version,
        };
        let file = self.file(loc, chunk)?;
        match read_checked(&file, chunk.chunk_id, in_chunk, size) {
            Ok(Some(data)) => return Some(data),
            Ok(None) => {}
            Err(e) => tracing::debug!(
                "reading chunk {:016X} v{} from its file here: {e}; the usual way",
                chunk.chunk_id,
                chunk.version
            ),
        }
        let mut inner = self.inner.lock();
        inner.files.remove(&chunk);
        inner.refused.insert(chunk, Instant::now() + AFTER_MISMATCH);
        None
    }

    /// The file of a copy of `chunk` on this host: kept, or asked of the first server of the
    /// location that is here.
    fn file(&self, loc: &ChunkLocation, chunk: ChunkRef) -> Option<Arc<File>> {
        let now = Instant::now();
        let candidates: Vec<&CsAddr> = {
            let mut inner = self.inner.lock();
            if let Some(k) = inner.files.get_mut(&chunk) {
                if loc.servers.contains(&k.server) {
                    k.used = now;
                    return Some(Arc::clone(&k.file));
                }
                // The copy here is no longer one the master lists.
                inner.files.remove(&chunk);
            }
            if inner.refused.get(&chunk).is_some_and(|until| *until > now) {
                return None;
            }
            let candidates: Vec<&CsAddr> = loc
                .servers
                .iter()
                .filter(|s| inner.elsewhere.get(*s).is_none_or(|until| *until <= now))
                .collect();
            if candidates.is_empty() {
                return None;
            }
            candidates
        };
        let mut asked_here = false;
        for server in candidates {
            match self.fetch(server, chunk, &loc.token, now) {
                Ok(Some(file)) => {
                    let file = Arc::new(file);
                    self.keep(chunk, Arc::clone(&file), server, now);
                    return Some(file);
                }
                Ok(None) => asked_here = true,
                Err(Fetch::NotHere) => {
                    self.inner
                        .lock()
                        .elsewhere
                        .insert(server.clone(), now + ASK_AGAIN);
                }
                Err(Fetch::Failed(e)) => {
                    asked_here = true;
                    tracing::debug!("chunk file from {server} on this host: {e}");
                }
            }
        }
        if asked_here {
            self.inner.lock().refused.insert(chunk, now + ASK_AGAIN);
        }
        None
    }

    /// Asks `server`'s socket on this host for its copy of `chunk`: `Ok(None)` when it has
    /// none at this version or refused the token.
    fn fetch(
        &self,
        server: &CsAddr,
        chunk: ChunkRef,
        token: &ChunkToken,
        now: Instant,
    ) -> Result<Option<File>, Fetch> {
        let mut stream = connect(server).ok_or(Fetch::NotHere)?;
        let uid = getsockopt(&stream, sockopt::PeerCredentials)
            .map_err(|e| Fetch::Failed(e.into()))?
            .uid();
        let known = self.inner.lock().trusted.get(server).copied();
        if known.is_none_or(|(known_uid, until)| known_uid != uid || until <= now) {
            if !listens_on(uid, server.port) {
                tracing::warn!(
                    "a socket named for chunkserver {server} on this host is not run by the \
                     user of its data port; not reading chunk files through it"
                );
                return Err(Fetch::NotHere);
            }
            if known.is_none() {
                tracing::info!(
                    "chunkserver {server} is on this host: small reads of its copies come \
                     straight from its chunk files"
                );
            }
            self.inner
                .lock()
                .trusted
                .insert(server.clone(), (uid, now + ASK_AGAIN));
        }
        let failed = Fetch::Failed;
        stream.set_read_timeout(Some(PATIENCE)).map_err(failed)?;
        stream.set_write_timeout(Some(PATIENCE)).map_err(failed)?;
        match ask(&mut stream, chunk, token).map_err(failed)? {
            (Answer::Opened, Some(fd)) => {
                tracing::debug!(
                    "chunk {:016X} v{} of {server}: reading it from its file on this host",
                    chunk.chunk_id,
                    chunk.version
                );
                Ok(Some(File::from(fd)))
            }
            (Answer::NoChunk | Answer::Refused, _) => Ok(None),
            (answer, _) => Err(Fetch::Failed(io::Error::other(format!(
                "unexpected answer {answer:?}"
            )))),
        }
    }

    fn keep(&self, chunk: ChunkRef, file: Arc<File>, server: &CsAddr, now: Instant) {
        let mut inner = self.inner.lock();
        inner.files.retain(|_, k| now.duration_since(k.used) < IDLE);
        inner.refused.retain(|_, until| *until > now);
        inner.elsewhere.retain(|_, until| *until > now);
        if inner.files.len() >= MAX_FILES {
            if let Some(oldest) = inner
                .files
                .iter()
                .min_by_key(|(_, k)| k.used)
                .map(|(c, _)| *c)
            {
                inner.files.remove(&oldest);
            }
        }
        inner.files.insert(
            chunk,
            Kept {
                file,
                server: server.clone(),
                used: now,
            },
        );
    }
}

/// Why no file came from a server.
#[derive(Debug)]
enum Fetch {
    /// No socket of it on this host, or its peer is not the one on its data port.
    NotHere,
    Failed(io::Error),
}

/// The socket of `server` on this host, by its address or as listening on every address.
/// The connection is made without waiting: a server too busy to take it is not used now.
fn connect(server: &CsAddr) -> Option<UnixStream> {
    [server.host.as_str(), "*"].into_iter().find_map(|host| {
        let name = socket_name(host, server.port);
        let addr = UnixAddr::new_abstract(name.as_bytes()).ok()?;
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .ok()?;
        nix::sys::socket::connect(fd.as_raw_fd(), &addr).ok()?;
        let stream = UnixStream::from(fd);
        stream.set_nonblocking(false).ok()?;
        Some(stream)
    })
}

/// Whether user `uid` listens on TCP `port` here: anyone may name an abstract socket, only the
/// chunkserver holds its data port.
fn listens_on(uid: u32, port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table)
            .is_ok_and(|text| listener_uids(&text, port).any(|owner| owner == uid))
    })
}

/// The owners of the sockets that listen on `port` in a `/proc/net/tcp` table.
fn listener_uids(table: &str, port: u16) -> impl Iterator<Item = u32> + '_ {
    const LISTEN: &str = "0A";
    table.lines().skip(1).filter_map(move |line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local = fields.get(1)?;
        let (_, hex_port) = local.rsplit_once(':')?;
        if u16::from_str_radix(hex_port, 16).ok()? != port || *fields.get(3)? != LISTEN {
            return None;
        }
        fields.get(7)?.parse().ok()
    })
}

/// Reads the blocks under `[in_chunk, in_chunk + size)` of chunk `chunk_id` and checks them
/// against their stored CRCs: `Ok(None)` when one does not match, the file is no longer
/// linked or its header names another chunk.
fn read_checked(
    file: &File,
    chunk_id: u64,
    in_chunk: u32,
    size: u32,
) -> io::Result<Option<Vec<u8>>> {
    let Some((first, count)) = blocks_of(in_chunk, size) else {
        return Ok(None);
    };
    let count = count as usize;
    if count > MAX_BLOCKS || file.metadata()?.nlink() == 0 {
        return Ok(None);
    }
    let mut id = [0u8; 8];
    file.read_exact_at(&mut id, CHUNK_ID_OFFSET)?;
    if u64::from_be_bytes(id) != chunk_id {
        return Ok(None);
    }
    let mut raw = [0u8; 4 * MAX_BLOCKS];
    let raw = &mut raw[..4 * count];
    BLOCKS.with(|cell| {
        let mut buf = cell.borrow_mut();
        buf.resize(MAX_BLOCKS * BS, 0);
        let blocks = &mut buf[..count * BS];
        let got = read_up_to(file, blocks, DATA_OFFSET + u64::from(first) * BS as u64)?;
        blocks[got..].fill(0);
        // After the data: a block rewritten in between then fails its check, never passes it.
        file.read_exact_at(raw, CRC_OFFSET + 4 * u64::from(first))?;
        let intact = blocks
            .chunks_exact(BS)
            .zip(raw.chunks_exact(4))
            .all(|(b, c)| crc32fast::hash(b) == u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        if !intact {
            return Ok(None);
        }
        let from = in_chunk as usize - first as usize * BS;
        Ok(Some(blocks[from..from + size as usize].to_vec()))
    })
}

/// Fills `buf` from `offset` until it is full or the file ends; returns the bytes read.
fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: u64 = 0x1234;

    /// A chunk file with `blocks` blocks of data (block `i` filled with byte `i + 1`) and their
    /// CRCs, the last block `short` bytes shorter on disk.
    fn chunk_file(blocks: usize, short: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file()
            .write_all_at(&ID.to_be_bytes(), CHUNK_ID_OFFSET)
            .unwrap();
        let mut data = Vec::new();
        for i in 0..blocks {
            data.extend(std::iter::repeat_n(i as u8 + 1, BS));
        }
        data.truncate(data.len() - short);
        let mut crcs = Vec::new();
        for block in data.chunks(BS) {
            let mut padded = block.to_vec();
            padded.resize(BS, 0);
            crcs.extend(crc32fast::hash(&padded).to_be_bytes());
        }
        f.as_file().write_all_at(&crcs, CRC_OFFSET).unwrap();
        f.as_file().write_all_at(&data, DATA_OFFSET).unwrap();
        (f, data)
    }

    #[test]
    fn reads_within_and_across_blocks_come_back_checked() {
        let (f, data) = chunk_file(3, 100);
        let read = |at: u32, size: u32| read_checked(f.as_file(), ID, at, size).unwrap();
        assert_eq!(read(10, 4096).unwrap(), data[10..4106]);
        let at = BS as u32 - 50;
        assert_eq!(
            read(at, 4096).unwrap(),
            data[at as usize..at as usize + 4096]
        );
        // The last block is shorter on disk: its tail reads as zeros.
        let tail_at = 3 * BS as u32 - 200;
        let mut want = data[tail_at as usize..].to_vec();
        want.resize(200, 0);
        assert_eq!(read(tail_at, 200).unwrap(), want);
    }

    #[test]
    fn a_block_that_does_not_match_its_crc_is_not_returned() {
        let (f, _) = chunk_file(2, 0);
        f.as_file()
            .write_all_at(b"X", DATA_OFFSET + BS as u64 + 7)
            .unwrap();
        assert!(read_checked(f.as_file(), ID, 0, 4096).unwrap().is_some());
        assert_eq!(
            read_checked(f.as_file(), ID, BS as u32, 4096).unwrap(),
            None
        );
        assert_eq!(
            read_checked(f.as_file(), ID, BS as u32 - 1, 2).unwrap(),
            None
        );
    }

    #[test]
    fn a_file_whose_header_names_another_chunk_is_not_read() {
        let (f, _) = chunk_file(1, 0);
        assert!(read_checked(f.as_file(), ID, 0, 4096).unwrap().is_some());
        assert_eq!(read_checked(f.as_file(), ID + 1, 0, 4096).unwrap(), None);
    }

    #[test]
    fn a_file_no_longer_linked_is_not_read() {
        let (f, _) = chunk_file(1, 0);
        let file = f.reopen().unwrap();
        f.close().unwrap();
        assert_eq!(read_checked(&file, ID, 0, 4096).unwrap(), None);
    }

    #[test]
    fn only_listeners_on_the_port_count() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:24CE 00000000:0000 0A 00000000:00000000 00:00000000 00000000   107        0 1 1\n\
   1: 0100007F:24CE 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 2 1\n\
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1\n";
        assert_eq!(listener_uids(table, 9422).collect::<Vec<_>>(), vec![107]);
        assert_eq!(listener_uids(table, 8080).collect::<Vec<_>>(), vec![0]);
        assert_eq!(listener_uids(table, 9421).count(), 0);
    }
}
