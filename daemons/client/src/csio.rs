//! Talking to chunkservers: reading a range of a chunk (every piece CRC-checked), writing
//! to every server of a chain (pipelined data frames; a small write-out to each server
//! straight, a large one down the chain), and syncing a chunk to disk. Idle
//! connections are kept per server and reused for reads, syncs and writes. A write sends
//! `WriteInit`, its data frames and `WriteFinish` at once (the server reads them once the
//! chain is open; if it cannot open it, its answer to the init is the error) and puts the
//! connection back once every write is acknowledged, without waiting for the server's
//! `WriteEnded`: whoever takes the connection next reads that first. A connection goes back
//! only after a success.
//!
//! An fsync's write sends a `Sync` between its data and `WriteFinish`: every server of the
//! chain syncs the chunk once its writes are on the disk, while the writer already tells the
//! master (see [`ChainSync`]); no round trip of its own.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use moose_proto::auth::ChunkToken;
use moose_proto::frame;
use moose_proto::handshake::{say_hello, HandshakeError};
use moose_proto::idle_pool::IdlePool;
use moose_proto::msg::{FromCs, ToCs};
use moose_proto::{ChunkRef, CsAddr, FrameReader, FrameWriter, FsError, Landed, ProtoError, Role};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::error::Elapsed;

use crate::extents::block_pieces;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the next frame of an answer.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a sync (fdatasync on a busy disk can be slow).
const SYNC_TIMEOUT: Duration = Duration::from_secs(120);
/// Idle connections kept per server.
const MAX_IDLE: usize = 8;
/// Idle connections older than this are not reused.
const IDLE_MAX_AGE: Duration = Duration::from_secs(30);
/// Write-outs up to this many bytes go to every server of the chain straight from the
/// client: a hop less each way for the small write-outs programs wait for (`tar -x` sets a
/// file's times right after writing it). Larger ones go down the chain, so that the client
/// sends each byte once.
const FAN_OUT_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CsError {
    #[error("cannot connect to chunkserver {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("chunkserver {addr}: {source}")]
    Handshake {
        addr: String,
        source: HandshakeError,
    },
    #[error("chunkserver {addr}: {source}")]
    Link { addr: String, source: ProtoError },
    #[error("chunkserver {addr} did not answer in time")]
    Timeout { addr: String },
    #[error("chunkserver {addr}: CRC mismatch in chunk {chunk_id:016X}")]
    Crc { addr: String, chunk_id: u64 },
    #[error("chunkserver {addr}: {err}")]
    Status { addr: String, err: FsError },
    #[error("chunkserver {addr} broke the protocol: {what}")]
    Protocol { addr: String, what: String },
}

impl CsError {
    /// The copy on this server is damaged (CRC error).
    pub fn is_bad_copy(&self) -> bool {
        matches!(
            self,
            CsError::Crc { .. }
                | CsError::Status {
                    err: FsError::Crc,
                    ..
                }
        )
    }

    /// The server is down for us: it does not take a connection, answer in time, or get
    /// through the hello.
    pub fn is_down(&self) -> bool {
        matches!(
            self,
            CsError::Connect { .. } | CsError::Timeout { .. } | CsError::Handshake { .. }
        )
    }

    /// The connection was closed under us: worth one more try on a fresh connection.
    fn is_stale_link(&self) -> bool {
        matches!(self, CsError::Link { source, .. } if source.is_disconnect())
    }
}

struct CsConn {
    addr: String,
    reader: FrameReader<OwnedReadHalf>,
    writer: FrameWriter<OwnedWriteHalf>,
    /// A write session ended with `WriteFinish`: the server's `WriteEnded` is still to be
    /// read before the next request.
    write_ending: bool,
}

impl CsConn {
    fn link(&self, source: ProtoError) -> CsError {
        CsError::Link {
            addr: self.addr.clone(),
            source,
        }
    }

    fn protocol(&self, what: impl Into<String>) -> CsError {
        CsError::Protocol {
            addr: self.addr.clone(),
            what: what.into(),
        }
    }

    async fn send_now(&mut self, msg: &ToCs) -> Result<(), CsError> {
        let r = self.writer.send_now(msg).await;
        r.map_err(|e| self.link(e))
    }

    /// The next control message, within `limit`.
    async fn next_msg(&mut self, limit: Duration) -> Result<FromCs, CsError> {
        let r = tokio::time::timeout(limit, self.reader.next_msg::<FromCs>()).await;
        in_time(&self.addr, r)
    }
}

/// The outcome of a read from the server at `addr` that had a time limit.
fn in_time<T>(addr: &str, r: Result<Result<T, ProtoError>, Elapsed>) -> Result<T, CsError> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(CsError::Link {
            addr: addr.to_owned(),
            source,
        }),
        Err(_) => Err(CsError::Timeout {
            addr: addr.to_owned(),
        }),
    }
}

/// Connections to chunkservers, with a few idle ones kept per server.
pub struct CsPool {
    idle: IdlePool<CsConn>,
    next_req: AtomicU32,
}

impl Default for CsPool {
    fn default() -> Self {
        CsPool {
            idle: IdlePool::new(MAX_IDLE, IDLE_MAX_AGE),
            next_req: AtomicU32::new(0),
        }
    }
}

impl CsPool {
    fn req_id(&self) -> u32 {
        self.next_req
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
    }

    fn take_idle(&self, addr: &CsAddr) -> Option<CsConn> {
        self.idle.take(addr)
    }

    fn put_idle(&self, addr: &CsAddr, conn: CsConn) {
        self.idle.put(addr, conn);
    }

    async fn connect(addr: &CsAddr) -> Result<CsConn, CsError> {
        let name = addr.to_string();
        let stream = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((addr.host.as_str(), addr.port)),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(CsError::Connect { addr: name, source }),
            Err(_) => return Err(CsError::Timeout { addr: name }),
        };
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        let mut conn = CsConn {
            addr: name,
            reader: FrameReader::new(r),
            writer: FrameWriter::new(w),
            write_ending: false,
        };
        let hello = say_hello(&mut conn.reader, &mut conn.writer, Role::Client, &conn.addr);
        match tokio::time::timeout(CONNECT_TIMEOUT, hello).await {
            Ok(Ok(_)) => Ok(conn),
            Ok(Err(source)) => Err(CsError::Handshake {
                addr: conn.addr,
                source,
            }),
            Err(_) => Err(CsError::Timeout { addr: conn.addr }),
        }
    }

    /// An idle connection to `addr` (then `true`) or a new one. A connection whose write
    /// session's `WriteEnded` does not come is dropped.
    async fn conn(&self, addr: &CsAddr) -> Result<(CsConn, bool), CsError> {
        while let Some(mut c) = self.take_idle(addr) {
            if c.write_ending {
                // Normally in the socket already: the server sends it right after the
                // session's last answer (and its own chain's end).
                match c.next_msg(FRAME_TIMEOUT).await {
                    Ok(FromCs::WriteEnded) => c.write_ending = false,
                    Ok(other) => {
                        tracing::debug!(
                            "chunkserver {addr}: {other:?} where WriteEnded was expected; \
                             connection dropped"
                        );
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!("chunkserver {addr}: pooled connection dropped: {e}");
                        continue;
                    }
                }
            }
            return Ok((c, true));
        }
        Ok((Self::connect(addr).await?, false))
    }

    /// Reads `buf.len()` bytes at `offset` of `chunk` from `addr`. Every piece is CRC-checked;
    /// bytes the server does not send (past the end of its data) read as zeros.
    pub async fn read(
        &self,
        addr: &CsAddr,
        chunk: ChunkRef,
        token: &ChunkToken,
        offset: u32,
        buf: &mut [u8],
    ) -> Result<(), CsError> {
        let size = u32::try_from(buf.len()).map_err(|_| CsError::Protocol {
            addr: addr.to_string(),
            what: "read larger than a chunk".into(),
        })?;
        let (mut conn, reused) = self.conn(addr).await?;
        let mut r = read_on(&mut conn, self.req_id(), chunk, token, offset, size, buf).await;
        if reused && r.as_ref().is_err_and(|e| e.is_stale_link()) {
            // The idle connection had been closed by the server: once more on a new one.
            conn = Self::connect(addr).await?;
            r = read_on(&mut conn, self.req_id(), chunk, token, offset, size, buf).await;
        }
        if r.is_ok() {
            self.put_idle(addr, conn);
        }
        r
    }

    /// Writes `pieces` (offset in chunk, data) to `chunk` on every server of `chain`.
    /// Returns once every server has acknowledged every piece; with `sync`, the servers sync
    /// the chunk behind them and the [`ChainSync`] returned waits for it. A small write-out
    /// goes to each server straight (see [`FAN_OUT_BYTES`]), a large one down the chain
    /// (first server first).
    pub async fn write_chain(
        &self,
        chain: &[CsAddr],
        chunk: ChunkRef,
        token: &ChunkToken,
        pieces: &[(u32, Bytes)],
        sync: bool,
    ) -> Result<Option<ChainSync>, CsError> {
        let (first, rest) = chain.split_first().ok_or_else(|| CsError::Status {
            addr: "(none)".into(),
            err: FsError::NoChunkservers,
        })?;
        let frames: Vec<(u32, Bytes)> = pieces
            .iter()
            .flat_map(|(off, data)| block_pieces(*off, data))
            .collect();
        let sync_id = sync.then(|| self.req_id());
        let bytes: usize = pieces.iter().map(|(_, data)| data.len()).sum();
        let sessions: Vec<(&CsAddr, &[CsAddr])> = if bytes <= FAN_OUT_BYTES {
            chain.iter().map(|server| (server, &[][..])).collect()
        } else {
            vec![(first, rest)]
        };
        let written = join_all(sessions.into_iter().map(|(server, rest)| {
            self.write_session(server, rest, chunk, token, &frames, sync_id)
        }))
        .await;
        let mut syncing = Vec::new();
        for session in written {
            syncing.extend(session?);
        }
        Ok(sync_id.map(|req_id| ChainSync {
            sessions: syncing,
            req_id,
        }))
    }

    /// One write session from `first` down `rest`, up to its acknowledgements. With
    /// `sync_id` the session stays open for the sync's answer (returned), else it ends.
    async fn write_session(
        &self,
        first: &CsAddr,
        rest: &[CsAddr],
        chunk: ChunkRef,
        token: &ChunkToken,
        frames: &[(u32, Bytes)],
        sync_id: Option<u32>,
    ) -> Result<Option<(CsAddr, CsConn)>, CsError> {
        let (mut conn, reused) = self.conn(first).await?;
        let mut r = write_on(&mut conn, chunk, rest, token, frames, sync_id).await;
        if reused && r.as_ref().is_err_and(|e| e.is_stale_link()) {
            // The idle connection had been closed by the server: once more on a new one
            // (writing the same pieces twice is harmless).
            conn = Self::connect(first).await?;
            r = write_on(&mut conn, chunk, rest, token, frames, sync_id).await;
        }
        r?;
        if sync_id.is_some() {
            return Ok(Some((first.clone(), conn)));
        }
        self.put_ended(first, conn);
        Ok(None)
    }

    /// Puts back the connection of a write session whose `WriteFinish` went out: the server's
    /// `WriteEnded` is read by whoever takes the connection next.
    fn put_ended(&self, addr: &CsAddr, mut conn: CsConn) {
        conn.write_ending = true;
        self.put_idle(addr, conn);
    }

    /// Waits for the sync a write asked for on every server, then puts their connections back
    /// (their `WriteFinish` went out with the data).
    pub async fn chain_synced(&self, s: ChainSync) -> Result<(), CsError> {
        let req_id = s.req_id;
        let synced = join_all(s.sessions.into_iter().map(|(addr, mut conn)| async move {
            sync_done(&mut conn, req_id).await?;
            self.put_ended(&addr, conn);
            Ok(())
        }))
        .await;
        synced.into_iter().collect()
    }

    /// Makes `chunk` durable on `addr`.
    pub async fn sync(
        &self,
        addr: &CsAddr,
        chunk: ChunkRef,
        token: &ChunkToken,
    ) -> Result<(), CsError> {
        let (mut conn, reused) = self.conn(addr).await?;
        let mut r = sync_on(&mut conn, self.req_id(), chunk, token).await;
        if reused && r.as_ref().is_err_and(|e| e.is_stale_link()) {
            conn = Self::connect(addr).await?;
            r = sync_on(&mut conn, self.req_id(), chunk, token).await;
        }
        if r.is_ok() {
            self.put_idle(addr, conn);
        }
        r
    }
}

/// Write sessions whose servers are syncing their chunk: see [`CsPool::chain_synced`].
/// Dropped unasked, their connections close.
pub struct ChainSync {
    /// The server each session went to first, and its connection.
    sessions: Vec<(CsAddr, CsConn)>,
    req_id: u32,
}

impl std::fmt::Debug for ChainSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sync {} on chunkservers", self.req_id)?;
        for (addr, _) in &self.sessions {
            write!(f, " {addr}")?;
        }
        Ok(())
    }
}

async fn sync_on(
    conn: &mut CsConn,
    req_id: u32,
    chunk: ChunkRef,
    token: &ChunkToken,
) -> Result<(), CsError> {
    conn.send_now(&ToCs::Sync {
        req_id,
        chunk,
        token: token.clone(),
    })
    .await?;
    sync_done(conn, req_id).await
}

/// Reads the answer to sync `req_id`.
async fn sync_done(conn: &mut CsConn, req_id: u32) -> Result<(), CsError> {
    match conn.next_msg(SYNC_TIMEOUT).await? {
        FromCs::SyncDone {
            req_id: got,
            status,
        } if got == req_id => status.map_err(|err| CsError::Status {
            addr: conn.addr.clone(),
            err,
        }),
        other => Err(conn.protocol(format!("expected SyncDone, got {other:?}"))),
    }
}

async fn read_on(
    conn: &mut CsConn,
    req_id: u32,
    chunk: ChunkRef,
    token: &ChunkToken,
    offset: u32,
    size: u32,
    buf: &mut [u8],
) -> Result<(), CsError> {
    conn.send_now(&ToCs::Read {
        req_id,
        chunk,
        offset,
        size,
        token: token.clone(),
    })
    .await?;
    let end = offset as u64 + size as u64;
    // Pieces received, to refuse overlaps and to zero what no piece covered.
    let mut got: Vec<(u64, u64)> = Vec::new();
    loop {
        let next = tokio::time::timeout(FRAME_TIMEOUT, conn.reader.next_head()).await;
        let frame = in_time(&conn.addr, next)?;
        match frame {
            Landed::Data(h, len) => {
                let (s, e) = (h.offset as u64, h.offset as u64 + len as u64);
                let bad = if h.req_id != req_id {
                    Some(format!("data for request {} instead of {req_id}", h.req_id))
                } else if h.chunk_id != chunk.chunk_id {
                    Some(format!("data of chunk {:016X}", h.chunk_id))
                } else if s < offset as u64 || e > end {
                    Some(format!("piece {s}..{e} outside the range asked"))
                } else if got.iter().any(|(gs, ge)| s < *ge && *gs < e) {
                    Some(format!("piece {s}..{e} sent twice"))
                } else {
                    None
                };
                if let Some(what) = bad {
                    return Err(CsError::Protocol {
                        addr: conn.addr.clone(),
                        what,
                    });
                }
                // The payload lands where it belongs in the caller's buffer: no copy.
                let piece = &mut buf[(s - offset as u64) as usize..(e - offset as u64) as usize];
                let received =
                    tokio::time::timeout(FRAME_TIMEOUT, conn.reader.payload_into(piece)).await;
                in_time(&conn.addr, received)?;
                if crc32fast::hash(piece) != h.crc {
                    return Err(CsError::Crc {
                        addr: conn.addr.clone(),
                        chunk_id: chunk.chunk_id,
                    });
                }
                got.push((s, e));
            }
            Landed::Msg(body) => {
                let msg: FromCs = frame::decode(body).map_err(|e| CsError::Link {
                    addr: conn.addr.clone(),
                    source: e,
                })?;
                return match msg {
                    FromCs::ReadDone {
                        req_id: got_id,
                        status,
                    } if got_id == req_id => match status {
                        Ok(()) => {
                            zero_gaps(buf, offset as u64, &mut got);
                            Ok(())
                        }
                        Err(FsError::Crc) => Err(CsError::Crc {
                            addr: conn.addr.clone(),
                            chunk_id: chunk.chunk_id,
                        }),
                        Err(err) => Err(CsError::Status {
                            addr: conn.addr.clone(),
                            err,
                        }),
                    },
                    other => Err(conn.protocol(format!("expected ReadDone, got {other:?}"))),
                };
            }
        }
    }
}

/// Zeroes the bytes of `buf` (which starts at chunk offset `start`) that no piece in `got`
/// covered: what a server does not send, past the end of its data, reads as zeros.
fn zero_gaps(buf: &mut [u8], start: u64, got: &mut [(u64, u64)]) {
    got.sort_unstable();
    let mut at = 0;
    for &(s, e) in got.iter() {
        let (s, e) = ((s - start) as usize, (e - start) as usize);
        buf[at..s].fill(0);
        at = e;
    }
    buf[at..].fill(0);
}

/// One write session up to its acknowledgements: `WriteInit`, the data frames right behind
/// it (not waiting for the chain to open), with `sync_id` a `Sync` behind them (its answer
/// is read by [`CsPool::chain_synced`]), and `WriteFinish` (the server's `WriteEnded` is
/// left to the connection's next user).
async fn write_on(
    conn: &mut CsConn,
    chunk: ChunkRef,
    rest: &[CsAddr],
    token: &ChunkToken,
    frames: &[(u32, Bytes)],
    sync_id: Option<u32>,
) -> Result<(), CsError> {
    {
        let n = frames.len();
        let CsConn {
            addr,
            reader,
            writer,
            ..
        } = conn;
        let addr: &str = addr;
        let link = |source: ProtoError| CsError::Link {
            addr: addr.to_string(),
            source,
        };
        let send = async {
            writer
                .send(&ToCs::WriteInit {
                    chunk,
                    chain: rest.to_vec(),
                    token: token.clone(),
                })
                .await?;
            // Init, data, the sync if any and the session's end in one system call: the
            // server writes and syncs in one trip to its disk thread, and ends the session
            // once it answered them all (no message of its own to wake it for).
            let mut then = Vec::new();
            if let Some(req_id) = sync_id {
                let msg = ToCs::Sync {
                    req_id,
                    chunk,
                    token: token.clone(),
                };
                frame::append_msg_frame(&mut then, &msg)?;
            }
            frame::append_msg_frame(&mut then, &ToCs::WriteFinish)?;
            writer.send_pieces_then(chunk, frames, &then).await?;
            writer.flush().await
        };
        let recv = async {
            // Write id 0 is the chain's status; then one answer per frame, in any order.
            let mut acked = vec![false; n + 1];
            for _ in 0..=n {
                let next = tokio::time::timeout(FRAME_TIMEOUT, reader.next_msg::<FromCs>()).await;
                let msg = in_time(addr, next)?;
                let FromCs::WriteStatus { write_id, status } = msg else {
                    return Err(CsError::Protocol {
                        addr: addr.to_string(),
                        what: format!("expected a write status, got {msg:?}"),
                    });
                };
                status.map_err(|err| CsError::Status {
                    addr: addr.to_string(),
                    err,
                })?;
                let expected = if acked[0] {
                    write_id != 0
                } else {
                    write_id == 0
                };
                let slot = acked
                    .get_mut(write_id as usize)
                    .filter(|done| expected && !**done)
                    .ok_or_else(|| CsError::Protocol {
                        addr: addr.to_string(),
                        what: format!("unexpected status for write {write_id}"),
                    })?;
                *slot = true;
            }
            Ok(())
        };
        tokio::pin!(send, recv);
        let answered = tokio::select! {
            sent = &mut send => match sent {
                Ok(()) => false,
                // A server that could not open the chain answers the init with the reason
                // and closes the connection on the frames behind it: that answer is the
                // error to report.
                Err(e) => {
                    recv.await?;
                    return Err(link(e));
                }
            },
            got = &mut recv => {
                // Every write is acknowledged, so every frame has left.
                got?;
                send.await.map_err(link)?;
                true
            }
        };
        if !answered {
            recv.await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use moose_chunkserver::hdd::{Disk, DiskSet, HddEntry, SpaceLimit, Tolerance};
    use moose_chunkserver::{dataserver, store::Store};
    use moose_common::user::RunAs;
    use moose_proto::auth::{unix_now, TokenKey, TokenOp};
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use tokio::net::TcpListener;

    const C: ChunkRef = ChunkRef {
        chunk_id: 0x7a7a,
        version: 1,
    };

    fn key() -> TokenKey {
        TokenKey::from_secret(b"csio test secret")
    }

    /// A chunkserver store over one empty folder, holding chunk `C`.
    fn store(dir: &std::path::Path) -> Arc<Store> {
        let me = RunAs {
            user: "me".into(),
            group: "me".into(),
            uid: nix::unistd::Uid::current().as_raw(),
            gid: nix::unistd::Gid::current().as_raw(),
        };
        let entry = HddEntry {
            path: dir.to_path_buf(),
            line: 1,
            marked_for_removal: false,
            limit: SpaceLimit::Default,
        };
        let disk = Arc::new(Disk::open(&entry, &me, Tolerance::default()).unwrap());
        let (store, _events) = Store::new(DiskSet::new(vec![disk.clone()], 0, None).unwrap());
        store.scan(&disk).unwrap();
        store.access.set_key(key());
        store.create(C).unwrap();
        store
    }

    /// A real data server on 127.0.0.1.
    async fn data_server(store: Arc<Store>) -> SocketAddr {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(dataserver::serve(server, store));
        addr
    }

    /// A real data server behind a listener that counts the connections made to it.
    async fn counted_server(store: Arc<Store>) -> (CsAddr, Arc<AtomicUsize>) {
        let target = data_server(store).await;
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = CsAddr {
            host: "127.0.0.1".into(),
            port: front.local_addr().unwrap().port(),
        };
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = front.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn pattern(len: usize, seed: u8) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>()
            .into()
    }

    #[test]
    fn bytes_no_piece_covered_read_as_zeros_and_pieces_keep_theirs() {
        // A read of 100..200 of the chunk; pieces arrived out of order.
        let mut buf = [0xAAu8; 100];
        zero_gaps(&mut buf, 100, &mut [(150, 160), (110, 130), (130, 140)]);
        let zero = |r: std::ops::Range<usize>| buf[r].iter().all(|&b| b == 0);
        let kept = |r: std::ops::Range<usize>| buf[r].iter().all(|&b| b == 0xAA);
        assert!(zero(0..10) && kept(10..40) && zero(40..50) && kept(50..60) && zero(60..100));
        let mut whole = [0xAAu8; 8];
        zero_gaps(&mut whole, 0, &mut [(0, 8)]);
        assert_eq!(whole, [0xAA; 8]);
        let mut none = [0xAAu8; 8];
        zero_gaps(&mut none, 0, &mut []);
        assert_eq!(none, [0; 8]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn write_chains_to_one_server_reuse_one_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, accepted) = counted_server(store(dir.path())).await;
        let chain = vec![addr.clone()];
        let write = key().sign(C, TokenOp::Write, &chain, unix_now());
        let read = key().sign(C, TokenOp::Read, &[], unix_now());
        let pool = CsPool::default();

        let (a, b, c) = (pattern(4096, 1), pattern(10000, 2), pattern(700, 3));
        pool.write_chain(&chain, C, &write, &[(0, a.clone())], false)
            .await
            .unwrap();
        // A synced one in between: its session ends behind the sync's answer.
        let syncing = pool
            .write_chain(&chain, C, &write, &[(4096, b.clone())], true)
            .await
            .unwrap()
            .expect("a synced write waits for its sync");
        pool.chain_synced(syncing).await.unwrap();
        pool.write_chain(&chain, C, &write, &[(14096, c.clone())], false)
            .await
            .unwrap();
        let mut got = vec![0u8; 4096 + 10000 + 700];
        pool.read(&addr, C, &read, 0, &mut got).await.unwrap();
        assert!(got == [a, b, c].concat(), "the data read back differs");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "connections opened");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_write_outs_go_to_every_server_straight_large_ones_down_the_chain() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, _) = counted_server(store(dir_a.path())).await;
        let (b, b_accepted) = counted_server(store(dir_b.path())).await;
        let chain = vec![a.clone(), b.clone()];
        let write = key().sign(C, TokenOp::Write, &chain, unix_now());
        let read = key().sign(C, TokenOp::Read, &[], unix_now());
        let pool = CsPool::default();

        // Small and synced: the client opens a session on each server and waits for both.
        let small = pattern(4096, 3);
        let syncing = pool
            .write_chain(&chain, C, &write, &[(0, small.clone())], true)
            .await
            .unwrap()
            .expect("a synced write waits for its sync");
        pool.chain_synced(syncing).await.unwrap();
        assert!(
            pool.take_idle(&b).is_some(),
            "no session of the client's own on b"
        );
        for server in [&a, &b] {
            let mut got = vec![0u8; small.len()];
            pool.read(server, C, &read, 0, &mut got).await.unwrap();
            assert!(got == small, "{server} holds other data");
        }

        // Large: only the first server hears from the client; it forwards to b.
        let before = b_accepted.load(Ordering::SeqCst);
        let large = pattern(FAN_OUT_BYTES + 65536, 4);
        pool.write_chain(&chain, C, &write, &[(0, large.clone())], false)
            .await
            .unwrap();
        while pool.take_idle(&b).is_some() {}
        let mut got = vec![0u8; large.len()];
        pool.read(&b, C, &read, 0, &mut got).await.unwrap();
        assert!(got == large, "b holds other data");
        assert!(pool.take_idle(&b).is_some(), "the read's connection");
        assert_eq!(
            b_accepted.load(Ordering::SeqCst),
            before + 2,
            "b took the chain's connection from a and the read's, nothing else"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_chain_that_cannot_open_reports_the_servers_answer() {
        let dir = tempfile::tempdir().unwrap();
        let port = data_server(store(dir.path())).await.port();
        let addr = CsAddr {
            host: "127.0.0.1".into(),
            port,
        };
        let chain = vec![addr.clone()];
        let absent = ChunkRef {
            chunk_id: 0x1234,
            version: 1,
        };
        let token = key().sign(absent, TokenOp::Write, &chain, unix_now());
        let pool = CsPool::default();
        // Many frames behind the init: the server closes the connection on the first.
        let pieces: Vec<(u32, Bytes)> = (0..64u32)
            .map(|i| (i * 65536, pattern(65536, i as u8)))
            .collect();
        let err = pool
            .write_chain(&chain, absent, &token, &pieces, false)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                CsError::Status {
                    err: FsError::NoChunk,
                    ..
                }
            ),
            "{err}"
        );
        // The failed connection was not kept: the next write works.
        let token = key().sign(C, TokenOp::Write, &chain, unix_now());
        pool.write_chain(&chain, C, &token, &[(0, pattern(100, 9))], false)
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_synced_write_through_a_chain_ends_its_session_and_keeps_the_connection() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (first, accepted) = counted_server(store(d1.path())).await;
        let second = data_server(store(d2.path())).await;
        let second = CsAddr {
            host: "127.0.0.1".into(),
            port: second.port(),
        };
        let chain = vec![first.clone(), second.clone()];
        let write = key().sign(C, TokenOp::Write, &chain, unix_now());
        let read = key().sign(C, TokenOp::Read, &[], unix_now());
        let pool = CsPool::default();

        let (a, b) = (pattern(70000, 3), pattern(5000, 4));
        let syncing = pool
            .write_chain(&chain, C, &write, &[(0, a.clone())], true)
            .await
            .unwrap()
            .expect("a synced write hands back its sync");
        pool.chain_synced(syncing).await.unwrap();
        // The session ended: the same connection takes the next write.
        let none = pool
            .write_chain(&chain, C, &write, &[(70000, b.clone())], false)
            .await
            .unwrap();
        assert!(none.is_none());
        for server in [&first, &second] {
            let mut got = vec![0u8; 75000];
            pool.read(server, C, &read, 0, &mut got).await.unwrap();
            assert!(
                got == [a.clone(), b.clone()].concat(),
                "{server}: data differs"
            );
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "connections to the first"
        );
    }
}
