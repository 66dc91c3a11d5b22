//! The data port (9422): reads, chained writes and syncs, for clients and other chunkservers.
//!
//! A connection starts idle and serves `Read`, `GetLength` and `Sync` requests. `WriteInit`
//! turns it into a write session for one chunk: this server opens its copy and, at the same
//! time, the rest of the chain (on a kept connection to the next server if there is one, see
//! [`crate::downstream`]), then streams data frames: each is checked, forwarded downstream at once,
//! queued for the local disk, and acknowledged upstream only when both the local write and
//! the downstream acknowledgement for that write id are done. `WriteFinish` ends the session:
//! once every write is answered and the next server has sent its own `WriteEnded`, this
//! server sends `WriteEnded` and the connection is idle again (the connection to the next
//! server goes back to the kept ones first). A client may send its data
//! frames right behind `WriteInit`, and its `Sync` and `WriteFinish` right behind them; if
//! the chain cannot be opened, the init is answered with the error and the first data frame
//! closes the connection.
//!
//! Parts of a write session, all on the connection's task except the local writer:
//! - reading the upstream's frames, forwarding them and queueing local jobs and pending acks;
//! - the local writer (spawned) runs the queued jobs in order on the blocking pool;
//! - the downstream reader passes the next server's acknowledgements on, up to its
//!   `WriteEnded`;
//! - the acker pairs, in order, each pending entry with its local result and downstream ack
//!   and answers upstream.

use std::fs::File;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moose_common::limits::{ConnectionCap, RefusalLog};
use moose_proto::auth::{ChunkToken, TokenOp, MAX_CHAIN};
use moose_proto::frame::{self, FrameReader, FrameWriter, ProtoError};
use moose_proto::handshake::accept_hello;
use moose_proto::msg::{FromCs, ToCs};
use moose_proto::{
    ChunkRef, CsAddr, DataHeader, Frame, FsError, FsResult, Landed, Role, CHUNK_SIZE,
};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout, Instant};

use crate::bufpool::{AlignedBlocks, PooledBuf};
use crate::chunkfile::{self, BS};
use crate::downstream::{Downstream, DownstreamPool};
use crate::store::{blocking, DirectReads, Handle, Store, Writing};

/// Largest control message accepted on the data port.
pub const CONTROL_LIMIT: u32 = 64 * 1024;
/// Time a peer has for its hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the next server in a chain has to open its part of the chain, and to acknowledge a
/// write once it has the data.
pub const CHAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a write session that asked for a sync has to answer it once the session's end came
/// (clients send the end right behind the sync): a disk with much to write back may take
/// long. As long as a client waits for a sync's answer.
const SYNC_PATIENCE: Duration = Duration::from_secs(120);
/// Blocks read from disk per step of a read; two steps are in flight (disk and network).
const READ_BATCH: usize = 4;
/// Blocks a read must ask for to be read past the page cache when the page cache does not
/// hold its start (a client's read-ahead; small reads are read again and keep it).
const DIRECT_READ_BLOCKS: usize = 16;
/// Local write jobs queued per session (each holds one block buffer).
const LOCAL_QUEUE: usize = 64;
/// Jobs the local writer takes per trip to the blocking pool.
const LOCAL_BATCH: usize = 16;
// A batch's whole blocks go to the disk in one direct write at most.
const _: () = assert!(LOCAL_BATCH <= chunkfile::MAX_RUN);
/// Bytes a session writes through the page cache before its whole blocks go to the disk
/// directly: a small file's write-out would wait for the disk itself, where the page cache
/// answers at once (see `chunkfile::write_blocks_direct`).
const DIRECT_AFTER: u64 = 4 << 20;
/// Writes awaiting their acknowledgement per session.
const PENDING_QUEUE: usize = 1024;
/// An idle connection (between requests, not in a write session) that sends nothing for this
/// long is closed; clients drop pooled connections well before.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Connections open at once on the data port.
pub const MAX_CONNECTIONS: usize = 4096;

/// Refusals on the data port, logged once per address per minute.
static REFUSALS: std::sync::LazyLock<RefusalLog> = std::sync::LazyLock::new(RefusalLog::default);

/// Answers for a chunk the request may not touch or that is not here at this version: one
/// status for "absent" and "other version", so that nothing can be learnt by probing.
fn hide_version(status: FsError) -> FsError {
    match status {
        FsError::WrongVersion => FsError::NoChunk,
        other => other,
    }
}

type Reader = FrameReader<OwnedReadHalf>;
type Writer = FrameWriter<OwnedWriteHalf>;

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("{0}")]
    Internal(String),
}

/// Accepts connections on the data port until the task is aborted.
pub async fn serve(listener: TcpListener, store: Arc<Store>) {
    let cap = ConnectionCap::new(MAX_CONNECTIONS);
    let downstreams = Arc::new(DownstreamPool::default());
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                let Some(slot) = cap.try_admit() else {
                    REFUSALS.warn(
                        peer.ip(),
                        &format!(
                            "data connection from {peer} refused: {} connections are open \
                             already (the limit)",
                            cap.max()
                        ),
                    );
                    continue;
                };
                let store = Arc::clone(&store);
                let downstreams = Arc::clone(&downstreams);
                tokio::spawn(async move {
                    handle(store, downstreams, sock, peer).await;
                    drop(slot);
                });
            }
            Err(e) => {
                // Usually out of file descriptors; give other connections time to close.
                tracing::warn!("data port: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(
    store: Arc<Store>,
    downstreams: Arc<DownstreamPool>,
    sock: TcpStream,
    peer: SocketAddr,
) {
    let _ = sock.set_nodelay(true);
    let (rd, wr) = sock.into_split();
    let mut reader = FrameReader::with_limit(rd, CONTROL_LIMIT);
    let mut writer = FrameWriter::new(wr);
    let hello = accept_hello(
        &mut reader,
        &mut writer,
        &[Role::Client, Role::Chunkserver],
        "the chunkserver data port",
    );
    match timeout(HANDSHAKE_TIMEOUT, hello).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            REFUSALS.warn(
                peer.ip(),
                &format!("data connection from {peer} refused: {e}"),
            );
            return;
        }
        Err(_) => {
            REFUSALS.warn(
                peer.ip(),
                &format!(
                    "data connection from {peer}: no hello within {} s; closed",
                    HANDSHAKE_TIMEOUT.as_secs()
                ),
            );
            return;
        }
    }
    let conn = Conn {
        store,
        downstreams,
        peer,
        reader,
        writer,
        spare: Vec::new(),
        direct_reads: Some(DirectReads::default()),
        done_frame: Vec::new(),
    };
    if let Err(e) = conn.run().await {
        match e {
            ConnError::Proto(p) if p.is_disconnect() => {
                tracing::debug!("data connection from {peer} closed: {p}")
            }
            other => tracing::warn!("data connection from {peer}: {other}; connection closed"),
        }
    }
}

struct Conn {
    store: Arc<Store>,
    /// Kept connections to the next servers of write chains.
    downstreams: Arc<DownstreamPool>,
    peer: SocketAddr,
    reader: Reader,
    writer: Writer,
    /// Read buffers of READ_BATCH blocks, kept for the connection's next read.
    spare: Vec<AlignedBlocks>,
    /// The descriptor for direct reads of the chunk read last (`None` while a step has it).
    direct_reads: Option<DirectReads>,
    /// A read's `ReadDone` frame, kept for its capacity.
    done_frame: Vec<u8>,
}

/// A read step's outcome.
struct ReadStep {
    buf: AlignedBlocks,
    crcs: [u32; READ_BATCH],
    status: FsResult<()>,
    /// The connection's [`DirectReads`], back from a direct read.
    direct: Option<DirectReads>,
}

/// Whether a read's `ReadDone` went out already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answered {
    Sent,
    NotYet,
}

/// How a step of a read reads from the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DiskRead {
    /// Through the page cache.
    Cached,
    /// Through the page cache, starting the disk reads of this many blocks first.
    Ahead(u32),
    /// Past the page cache (see [`Store::read_blocks_direct`]).
    Direct,
}

/// A step of a read: read already, or being read on a disk thread.
enum Step {
    Done(ReadStep),
    Reading(tokio::task::JoinHandle<ReadStep>),
}

impl Conn {
    /// Checks the master's token for a request; a refusal is logged (once a minute per
    /// address) and answered with `Access`.
    fn allowed(
        &self,
        what: &str,
        token: &ChunkToken,
        chunk: ChunkRef,
        op: TokenOp,
        rest: &[CsAddr],
    ) -> FsResult<()> {
        let verdict = if rest.len() >= MAX_CHAIN {
            Err(format!(
                "a write chain of {} more servers is longer than any goal",
                rest.len()
            ))
        } else {
            self.store
                .access
                .check(token, chunk, op, rest)
                .map_err(|e| e.to_string())
        };
        verdict.map_err(|why| {
            REFUSALS.warn(
                self.peer.ip(),
                &format!(
                    "data port: {what} of chunk {:016X} v{} from {} refused: {why}",
                    chunk.chunk_id, chunk.version, self.peer
                ),
            );
            FsError::Access
        })
    }

    async fn run(mut self) -> Result<(), ConnError> {
        // The chunk of a `WriteInit` just refused: a client that pipelines its data frames
        // behind the init has them arrive here, which closes the connection quietly.
        let mut refused_write: Option<u64> = None;
        loop {
            let next = match timeout(IDLE_TIMEOUT, self.reader.next()).await {
                Ok(n) => n,
                Err(_) => {
                    tracing::debug!(
                        "data connection from {}: idle for {} s; closed",
                        self.peer,
                        IDLE_TIMEOUT.as_secs()
                    );
                    return Ok(());
                }
            };
            let msg: ToCs = match next {
                Ok(Frame::Msg(body)) => frame::decode(body)?,
                Ok(Frame::Data(h, _)) if refused_write == Some(h.chunk_id) => {
                    tracing::debug!(
                        "data connection from {}: data frames behind a refused WriteInit for \
                         chunk {:016X}; closed",
                        self.peer,
                        h.chunk_id
                    );
                    return Ok(());
                }
                Ok(Frame::Data(h, _)) => {
                    return Err(ConnError::Protocol(format!(
                        "data frame for chunk {:016X} (write id {}) without an open write chain",
                        h.chunk_id, h.req_id
                    )))
                }
                Err(ProtoError::Closed) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            refused_write = None;
            match msg {
                ToCs::Read {
                    req_id,
                    chunk,
                    offset,
                    size,
                    token,
                } => {
                    let status = match self.allowed("read", &token, chunk, TokenOp::Read, &[]) {
                        Ok(()) => self
                            .stream_read(req_id, chunk, offset, size)
                            .await?
                            .map_err(hide_version),
                        Err(e) => Err(e),
                    };
                    if status != Ok(Answered::Sent) {
                        let status = status.map(|_| ());
                        self.writer
                            .send(&FromCs::ReadDone { req_id, status })
                            .await?;
                        self.writer.flush().await?;
                    }
                }
                ToCs::Sync {
                    req_id,
                    chunk,
                    token,
                } => {
                    // A sync only makes data durable: any token for the chunk will do.
                    let status = match self.allowed("sync", &token, chunk, token.op, &[]) {
                        Ok(()) => {
                            let store = Arc::clone(&self.store);
                            blocking(move || {
                                let h = store.open(chunk)?;
                                store.sync(&h)
                            })
                            .await
                            .map_err(hide_version)
                        }
                        Err(e) => Err(e),
                    };
                    self.writer
                        .send_now(&FromCs::SyncDone { req_id, status })
                        .await?;
                }
                ToCs::GetLength {
                    req_id,
                    chunk,
                    token,
                } => {
                    let result =
                        match self.allowed("length query", &token, chunk, TokenOp::Read, &[]) {
                            Ok(()) => {
                                let store = Arc::clone(&self.store);
                                blocking(move || store.data_length(chunk))
                                    .await
                                    .map_err(hide_version)
                            }
                            Err(e) => Err(e),
                        };
                    self.writer
                        .send_now(&FromCs::Length { req_id, result })
                        .await?;
                }
                ToCs::WriteInit {
                    chunk,
                    chain,
                    token,
                } => {
                    if let Err(status) =
                        self.allowed("write", &token, chunk, TokenOp::Write, &chain)
                    {
                        self.writer
                            .send_now(&FromCs::WriteStatus {
                                write_id: 0,
                                status: Err(status),
                            })
                            .await?;
                        refused_write = Some(chunk.chunk_id);
                        continue;
                    }
                    match self.open_chain(chunk, &chain, token).await? {
                        Some(session) => {
                            if !self.write_session(session).await? {
                                return Ok(());
                            }
                        }
                        None => refused_write = Some(chunk.chunk_id),
                    }
                }
                ToCs::WriteFinish => return Ok(()),
            }
        }
    }

    fn take_buf(&mut self) -> AlignedBlocks {
        self.spare
            .pop()
            .unwrap_or_else(|| AlignedBlocks::zeroed(READ_BATCH))
    }

    /// Reads `count` blocks from `first` on a disk thread: past the page cache with
    /// `Disk::Direct`; through it otherwise, with `Disk::Ahead(n)` starting the disk reads of
    /// blocks `first .. first + n` (the whole request) first, all at once.
    fn spawn_read(
        &mut self,
        chunk: ChunkRef,
        first: u32,
        count: usize,
        how: DiskRead,
    ) -> tokio::task::JoinHandle<ReadStep> {
        let store = Arc::clone(&self.store);
        let mut buf = self.take_buf();
        let mut direct = match how {
            DiskRead::Direct => self.direct_reads.take(),
            _ => None,
        };
        tokio::task::spawn_blocking(move || {
            let mut crcs = [0u32; READ_BATCH];
            let blocks = &mut buf[..count * BS];
            let status = match (how, direct.as_mut()) {
                (DiskRead::Direct, Some(d)) => {
                    store.read_blocks_direct(chunk, first, blocks, &mut crcs, d)
                }
                _ => {
                    if let DiskRead::Ahead(n) = how {
                        store.start_reads(chunk, first, n);
                    }
                    store.read_blocks(chunk, first, blocks, &mut crcs)
                }
            };
            ReadStep {
                buf,
                crcs,
                status,
                direct,
            }
        })
    }

    /// Reads `count` blocks from `first` without waiting, when the chunk's file is open and
    /// the blocks are in the page cache.
    fn read_cached(&mut self, chunk: ChunkRef, first: u32, count: usize) -> Option<ReadStep> {
        let mut buf = self.take_buf();
        let mut crcs = [0u32; READ_BATCH];
        let read = self
            .store
            .read_cached_blocks(chunk, first, &mut buf[..count * BS], &mut crcs);
        match read {
            Some(status) => Some(ReadStep {
                buf,
                crcs,
                status,
                direct: None,
            }),
            None => {
                self.spare.push(buf);
                None
            }
        }
    }

    /// Sends the data of a read request and, when all of it went out, its `ReadDone` with
    /// the last of it; otherwise the returned status goes into the `ReadDone` the caller
    /// sends.
    async fn stream_read(
        &mut self,
        req_id: u32,
        chunk: ChunkRef,
        offset: u32,
        size: u32,
    ) -> Result<FsResult<Answered>, ConnError> {
        let end = u64::from(offset) + u64::from(size);
        if end > CHUNK_SIZE {
            return Ok(Err(FsError::Inval));
        }
        if let Err(status) = self.store.check(chunk) {
            return Ok(Err(status));
        }
        if size == 0 {
            return Ok(Ok(Answered::NotYet));
        }
        let first = offset as usize / BS;
        let last = ((end - 1) / BS as u64) as usize;
        let mut next = first;
        let mut count = (last + 1 - next).min(READ_BATCH);
        // A client's read-ahead that the page cache does not hold is read past it, step by
        // step on a disk thread.
        let blocks = last + 1 - first;
        let direct = blocks >= DIRECT_READ_BLOCKS
            && !self.store.blocks_cached(chunk, first as u32, blocks as u32);
        // Else the first step is read here when the page cache has it (no hop to a disk
        // thread and back), and the next steps on a disk thread while this one goes out; a
        // read not in the page cache has the disk read all of it at once.
        let (first_read, later) = if direct {
            (DiskRead::Direct, DiskRead::Direct)
        } else if blocks > count {
            (DiskRead::Ahead(blocks as u32), DiskRead::Cached)
        } else {
            (DiskRead::Cached, DiskRead::Cached)
        };
        let cached = if direct {
            None
        } else {
            self.read_cached(chunk, next as u32, count)
        };
        let mut step = match cached {
            Some(done) => Step::Done(done),
            None => Step::Reading(self.spawn_read(chunk, next as u32, count, first_read)),
        };
        loop {
            let ReadStep {
                buf,
                crcs,
                status,
                direct,
            } = match step {
                Step::Done(done) => done,
                Step::Reading(task) => match task.await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!("a disk read task failed: {e}");
                        return Ok(Err(FsError::Io));
                    }
                },
            };
            if direct.is_some() {
                self.direct_reads = direct;
            }
            if let Err(status) = status {
                self.spare.push(buf);
                return Ok(Err(status));
            }
            let (this_first, this_count) = (next, count);
            next += count;
            // Read the next step from disk while this one goes out.
            let pending = if next <= last {
                count = (last + 1 - next).min(READ_BATCH);
                Some(Step::Reading(self.spawn_read(
                    chunk,
                    next as u32,
                    count,
                    later,
                )))
            } else {
                None
            };
            let frames: Vec<(DataHeader, &[u8])> = (0..this_count)
                .map(|i| {
                    let block_start = ((this_first + i) * BS) as u64;
                    let from = u64::from(offset).max(block_start);
                    let to = end.min(block_start + BS as u64);
                    let piece =
                        &buf[i * BS + (from - block_start) as usize..][..(to - from) as usize];
                    let crc = if piece.len() == BS {
                        crcs[i]
                    } else {
                        crc32fast::hash(piece)
                    };
                    let header = DataHeader {
                        chunk_id: chunk.chunk_id,
                        version: chunk.version,
                        req_id,
                        offset: from as u32,
                        crc,
                    };
                    (header, piece)
                })
                .collect();
            if pending.is_some() {
                self.writer.send_data_frames(&frames).await?;
            } else {
                // The answer leaves with the last data, in the same system call.
                let mut done = std::mem::take(&mut self.done_frame);
                done.clear();
                let answer = FromCs::ReadDone {
                    req_id,
                    status: Ok(()),
                };
                frame::append_msg_frame(&mut done, &answer)?;
                self.writer.send_data_frames_then(&frames, &done).await?;
                self.writer.flush().await?;
                self.done_frame = done;
            }
            drop(frames);
            self.spare.push(buf);
            match pending {
                Some(p) => step = p,
                None => return Ok(Ok(Answered::Sent)),
            }
        }
    }

    /// Handles `WriteInit`: checks the chunk, opens the rest of the chain and answers with
    /// `WriteStatus { write_id: 0 }`. `None` when the chain could not be opened (the
    /// connection stays idle).
    async fn open_chain(
        &mut self,
        chunk: ChunkRef,
        chain: &[CsAddr],
        token: ChunkToken,
    ) -> Result<Option<Session>, ConnError> {
        // The local chunk and the rest of the chain open at the same time. On a kept
        // connection to the next server the writes follow the init without waiting for its
        // answer, as the client's do: the session reads that answer first.
        let local = open_for_write(Arc::clone(&self.store), chunk);
        let downstreams = &self.downstreams;
        let down = async {
            let Some((next, rest)) = chain.split_first() else {
                return Ok(None);
            };
            if let Some(d) = downstreams
                .open_at_once(next, chunk, rest, token.clone())
                .await
            {
                return Ok(Some((d, true)));
            }
            downstreams
                .open(next, chunk, rest, token)
                .await
                .map(|d| Some((d, false)))
        };
        // A downstream session opened for a chunk that failed here ends with its connection.
        let opened = match tokio::join!(local, down) {
            (Ok(h), Ok(d)) => Ok((h, d)),
            (Err(status), _) => Err(hide_version(status)),
            (Ok(_), Err(status)) => Err(status),
        };
        match opened {
            Ok((opened, downstream)) => {
                tracing::debug!(
                    "write chain for chunk {:016X} v{} from {} opened ({} more servers)",
                    chunk.chunk_id,
                    chunk.version,
                    self.peer,
                    chain.len()
                );
                // Written, not flushed: it leaves with the first write's answer (or when the
                // session waits for frames), one send and one wake-up of the writer fewer.
                // A chunk being made is answered for by the acker, once its creation ended.
                if let Opened::Ready(_) = opened {
                    self.writer
                        .send(&FromCs::WriteStatus {
                            write_id: 0,
                            status: Ok(()),
                        })
                        .await?;
                }
                let writing = self.store.writing(chunk.chunk_id);
                let (downstream, init_pending) = match downstream {
                    Some((d, pending)) => (Some(d), pending),
                    None => (None, false),
                };
                Ok(Some(Session {
                    opened,
                    downstream,
                    init_pending,
                    writing,
                }))
            }
            Err(status) => {
                self.writer
                    .send_now(&FromCs::WriteStatus {
                        write_id: 0,
                        status: Err(status),
                    })
                    .await?;
                Ok(None)
            }
        }
    }

    /// Runs a write session on this connection. `Ok(true)`: it ended with `WriteFinish`,
    /// every write was answered and `WriteEnded` sent, so the connection is idle again;
    /// `Ok(false)`: it ended otherwise and the connection is to be closed.
    ///
    /// Four things run at once on the connection's task: reading the upstream's frames, the
    /// acker (answers upstream in order), the downstream reader (the next server's answers)
    /// and, spawned, the local writer.
    async fn write_session(&mut self, session: Session) -> Result<bool, ConnError> {
        let Conn {
            store,
            downstreams,
            peer,
            reader,
            writer,
            ..
        } = self;
        let peer = *peer;
        let store: &Arc<Store> = store;
        let chunk = session.opened.chunk();
        let mut downstream = session.downstream;
        let chained = downstream.is_some();
        let (down_reader, mut down_writer) = match downstream.as_mut() {
            Some(d) => (Some(&mut d.reader), Some(&mut d.writer)),
            None => (None, None),
        };
        let broken = AtomicBool::new(false);
        let broken = &broken;
        let refused = AtomicBool::new(false);
        let refused = &refused;
        // The answer to the init, when the chunk was still being made: the local writer's
        // first disk trip learns it.
        let (init_tx, init_rx) = match session.opened {
            Opened::Ready(_) => (None, None),
            Opened::Creating(..) => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
        };
        let (job_tx, job_rx) = mpsc::channel(LOCAL_QUEUE);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (pend_tx, pend_rx) = mpsc::channel(PENDING_QUEUE);
        let (down_tx, down_rx) = mpsc::unbounded_channel();
        // When the upstream's frames end: starts the acker's deadline (how long it has), and
        // tells the downstream reader how long to wait for the next server's `WriteEnded`.
        let (reading_ended, acker_deadline) = oneshot::channel::<Duration>();
        let (down_deadline_tx, down_deadline) = oneshot::channel::<Instant>();
        // Polled by this task with the others: a disk batch's end and its answers wake one
        // task, not two that may sit on different worker threads.
        let local = local_writer(
            Arc::clone(store),
            session.opened,
            Arc::new(session.writing),
            job_rx,
            done_tx,
            init_tx,
        );
        let acker = Acker {
            up: &mut *writer,
            local: done_rx,
            down: chained.then_some(down_rx),
            chained,
            broken,
            refused,
            chunk,
            dirty: false,
            opened: init_rx.is_none(),
            init: init_rx,
        };

        let reading = async move {
            let mut finish_forwarded = false;
            let mut sync_asked = false;
            let outcome = loop {
                // A block lands in the buffer it goes to the disk from.
                let mut data = store.pool().get();
                let frame = match timeout(IDLE_TIMEOUT, reader.next_into(data.room())).await {
                    Err(_) => {
                        break Err(ConnError::Protocol(format!(
                            "nothing received for {} s during a write to chunk {:016X}",
                            IDLE_TIMEOUT.as_secs(),
                            chunk.chunk_id
                        )))
                    }
                    Ok(Ok(f)) => f,
                    Ok(Err(ProtoError::Closed)) => break Ok(false),
                    Ok(Err(e)) => break Err(ConnError::from(e)),
                };
                let entry = match frame {
                    Landed::Data(h, size) => match data
                        .set_len(size)
                        .map_err(|_| FsError::Inval)
                        .and_then(|()| check_piece(&h, &data, chunk))
                    {
                        Err(status) => {
                            tracing::warn!(
                                "write to chunk {:016X} from {peer}: write id {} refused: \
                                 {status}",
                                chunk.chunk_id,
                                h.req_id
                            );
                            Pending::Immediate(FromCs::WriteStatus {
                                write_id: h.req_id,
                                status: Err(status),
                            })
                        }
                        Ok(()) => {
                            // Downstream first, as the disk job takes the buffer: the local
                            // writer, polled by this task, starts no sooner either way.
                            let forwarded = match down_writer.as_mut() {
                                Some(w) if !broken.load(Ordering::Relaxed) => {
                                    forward(w, broken, chunk, async |w: &mut Writer| {
                                        w.send_data(&h, &data).await?;
                                        w.flush().await
                                    })
                                    .await
                                }
                                _ => false,
                            };
                            let job = LocalJob::Write {
                                write_id: h.req_id,
                                offset: h.offset,
                                data,
                                crc: h.crc,
                            };
                            if job_tx.send(job).await.is_err() {
                                break Err(ConnError::Internal("the local writer stopped".into()));
                            }
                            Pending::Write {
                                write_id: h.req_id,
                                forwarded,
                            }
                        }
                    },
                    Landed::Msg(body) => match frame::decode::<ToCs>(body) {
                        Ok(ToCs::WriteFinish) => {
                            if let Some(w) = down_writer.as_mut() {
                                if !broken.load(Ordering::Relaxed) {
                                    finish_forwarded = forward(w, broken, chunk, async |w| {
                                        w.send_now(&ToCs::WriteFinish).await
                                    })
                                    .await;
                                }
                            }
                            break Ok(true);
                        }
                        Ok(ToCs::Sync {
                            req_id,
                            chunk: c,
                            token,
                        }) if c == chunk => {
                            sync_asked = true;
                            if job_tx.send(LocalJob::Sync { req_id }).await.is_err() {
                                break Err(ConnError::Internal("the local writer stopped".into()));
                            }
                            let forwarded = match down_writer.as_mut() {
                                Some(w) if !broken.load(Ordering::Relaxed) => {
                                    let msg = ToCs::Sync {
                                        req_id,
                                        chunk,
                                        token,
                                    };
                                    forward(w, broken, chunk, async |w: &mut Writer| {
                                        w.send_now(&msg).await
                                    })
                                    .await
                                }
                                _ => false,
                            };
                            Pending::Sync { req_id, forwarded }
                        }
                        Ok(ToCs::Sync { req_id, .. }) => Pending::Immediate(FromCs::SyncDone {
                            req_id,
                            status: Err(FsError::Inval),
                        }),
                        Ok(ToCs::Read { .. })
                        | Ok(ToCs::GetLength { .. })
                        | Ok(ToCs::WriteInit { .. }) => {
                            break Err(ConnError::Protocol(format!(
                                "read, length query or second WriteInit during a write to chunk \
                                 {:016X}; send WriteFinish first",
                                chunk.chunk_id
                            )))
                        }
                        Err(e) => break Err(e.into()),
                    },
                };
                if pend_tx.send(entry).await.is_err() {
                    // The acker stopped: the upstream connection is gone.
                    break Ok(false);
                }
            };
            drop(job_tx);
            drop(pend_tx);
            let patience = if sync_asked {
                SYNC_PATIENCE
            } else {
                CHAIN_TIMEOUT
            };
            let wait_down = if finish_forwarded {
                patience
            } else {
                Duration::ZERO
            };
            let _ = down_deadline_tx.send(Instant::now() + wait_down);
            let _ = reading_ended.send(patience);
            (outcome, patience)
        };
        // Answers what is still pending once the frames end, within the chain timeout (a
        // hung disk or next server cannot hold the session forever).
        let acking = async move {
            let answered = async {
                // The local writer ends after its last job (the chunk stops being written).
                let (sent, written) = tokio::join!(acker.run(pend_rx), local);
                sent && written
            };
            let deadline = async {
                let patience = acker_deadline.await.unwrap_or(CHAIN_TIMEOUT);
                tokio::time::sleep(patience + Duration::from_secs(5)).await
            };
            tokio::select! {
                sent = answered => sent,
                () = deadline => false,
            }
        };
        let init_pending = session.init_pending;
        let down_reading = async move {
            match down_reader {
                Some(rd) => read_downstream(rd, init_pending, down_tx, down_deadline).await,
                None => false,
            }
        };
        // A disk batch still running when the acker gives up (a hung disk) finishes on its
        // own, keeping the chunk marked as being written until then.
        let ((outcome, patience), answered, down_ended) =
            tokio::join!(reading, acking, down_reading);
        // The next server's session has ended: its connection serves the next chain there.
        if let Some(d) = downstream.filter(|_| down_ended && !broken.load(Ordering::Relaxed)) {
            downstreams.put(d);
        }
        if refused.load(Ordering::Relaxed) {
            // Its init was answered with the error: the connection ends, as after any
            // refused init (the writer's frames behind it are not read).
            return Ok(false);
        }
        let finished = outcome?;
        if !finished {
            tracing::debug!(
                "write chain for chunk {:016X} from {peer}: the upstream went away; closed",
                chunk.chunk_id
            );
            return Ok(false);
        }
        if !answered {
            tracing::warn!(
                "write chain for chunk {:016X} from {peer}: the writes were not all answered \
                 within {} s of WriteFinish (a slow disk or next chunkserver); connection closed",
                chunk.chunk_id,
                (patience + Duration::from_secs(5)).as_secs()
            );
            return Ok(false);
        }
        writer.send_now(&FromCs::WriteEnded).await?;
        tracing::debug!(
            "write chain for chunk {:016X} from {peer} ended",
            chunk.chunk_id
        );
        Ok(true)
    }
}

/// An open write session.
struct Session {
    opened: Opened,
    downstream: Option<Downstream>,
    /// The next server's answer to the init is still to come, ahead of its write answers.
    init_pending: bool,
    /// Keeps the background test off the chunk while the session writes.
    writing: Writing,
}

/// How long a write chain waits for the master's order to make its new chunk.
const CREATION_WAIT: Duration = Duration::from_secs(3);
/// Chains that wait for their new chunk on a disk thread at once; further ones wait on their
/// task (a master whose orders lag must not take every thread the orders need).
const CREATION_WAITERS: usize = 32;
/// How often a chain past [`CREATION_WAITERS`] looks for its chunk's creation.
const CREATION_POLL: Duration = Duration::from_millis(1);

static WAITING_ON_DISK_THREADS: std::sync::LazyLock<Arc<Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(Semaphore::new(CREATION_WAITERS)));

/// The chunk a write chain is for.
enum Opened {
    Ready(Arc<Handle>),
    /// A new chunk (version 1) not here yet: the master answers the writer's lease while its
    /// order to make the chunk is still on its way or being carried out (see
    /// [`crate::creations`]). The session's first disk trip waits for it, holding one of the
    /// [`CREATION_WAITERS`] permits.
    Creating(ChunkRef, OwnedSemaphorePermit),
}

impl Opened {
    fn chunk(&self) -> ChunkRef {
        match self {
            Opened::Ready(h) => h.chunk,
            Opened::Creating(chunk, _) => *chunk,
        }
    }

    /// The open chunk, on a disk thread: a chunk being made is waited for there, and the
    /// outcome sent to `init` (the answer to the chain's init).
    fn on_disk_thread(
        self,
        store: &Store,
        init: Option<oneshot::Sender<FsResult<()>>>,
    ) -> FsResult<Arc<Handle>> {
        let (chunk, permit) = match self {
            Opened::Ready(h) => return Ok(h),
            Opened::Creating(chunk, permit) => (chunk, permit),
        };
        let opened = created(store.creations().wait(chunk.chunk_id, CREATION_WAIT))
            .and_then(|()| store.open(chunk))
            .map(Arc::new);
        drop(permit);
        if let Some(init) = init {
            let _ = init.send(opened.as_ref().map(|_| ()).map_err(|e| *e));
        }
        opened
    }
}

/// What the outcome of a creation (`None`: none came in time) means for a chain that waited
/// for it: a chunk made, or made already, can be opened.
fn created(outcome: Option<FsResult<()>>) -> FsResult<()> {
    match outcome {
        Some(Ok(()) | Err(FsError::Exist)) => Ok(()),
        Some(Err(e)) => Err(e),
        None => Err(FsError::NoChunk),
    }
}

/// Opens the chunk a write chain is for, or finds it being made.
async fn open_for_write(store: Arc<Store>, chunk: ChunkRef) -> FsResult<Opened> {
    match open(&store, chunk).await {
        Err(FsError::NoChunk) if chunk.version == 1 => {}
        other => return other.map(|h| Opened::Ready(Arc::new(h))),
    }
    let outcome = match store.creations().outcome(chunk.chunk_id) {
        Some(outcome) => Some(outcome),
        None => match Arc::clone(&WAITING_ON_DISK_THREADS).try_acquire_owned() {
            Ok(permit) => return Ok(Opened::Creating(chunk, permit)),
            Err(_) => poll_creation(&store, chunk.chunk_id).await,
        },
    };
    created(outcome)?;
    open(&store, chunk)
        .await
        .map(|h| Opened::Ready(Arc::new(h)))
}

/// Waits on the task for the creation of a chunk, when too many chains wait on disk threads.
async fn poll_creation(store: &Store, chunk_id: u64) -> Option<FsResult<()>> {
    let deadline = Instant::now() + CREATION_WAIT;
    loop {
        if let Some(outcome) = store.creations().outcome(chunk_id) {
            return Some(outcome);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(CREATION_POLL).await;
    }
}

/// Opens a chunk: here when its file is open already, else on a disk thread.
async fn open(store: &Arc<Store>, chunk: ChunkRef) -> FsResult<Handle> {
    if let Some(opened) = store.open_cached(chunk) {
        return opened;
    }
    let store = Arc::clone(store);
    blocking(move || store.open(chunk)).await
}

/// Sends something downstream; on failure marks the chain broken and returns false.
async fn forward<F>(w: &mut Writer, broken: &AtomicBool, chunk: ChunkRef, send: F) -> bool
where
    F: AsyncFnOnce(&mut Writer) -> Result<(), ProtoError>,
{
    match send(w).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                "write chain for chunk {:016X}: cannot forward to the next chunkserver: {e}; \
                 every further write of this chain fails",
                chunk.chunk_id
            );
            broken.store(true, Ordering::Relaxed);
            false
        }
    }
}

fn check_piece(h: &DataHeader, payload: &[u8], chunk: ChunkRef) -> FsResult<()> {
    if h.req_id == 0 || h.chunk_id != chunk.chunk_id {
        return Err(FsError::Inval);
    }
    if h.version != chunk.version {
        return Err(FsError::WrongVersion);
    }
    if u64::from(h.offset) + payload.len() as u64 > CHUNK_SIZE {
        return Err(FsError::Inval);
    }
    if crc32fast::hash(payload) != h.crc {
        return Err(FsError::Crc);
    }
    Ok(())
}

/// Passes the next server's answers on to the acker until its `WriteEnded` (then `true`: its
/// connection is idle again), an error, or `deadline` (sent when the upstream's frames end).
/// With `init_pending` the first answer is the one to the init: a success is dropped, a
/// refusal goes to the acker (and the connection, with writes sent behind the refused init,
/// is not kept).
async fn read_downstream(
    rd: &mut Reader,
    mut init_pending: bool,
    tx: mpsc::UnboundedSender<FromCs>,
    deadline: oneshot::Receiver<Instant>,
) -> bool {
    let give_up = async {
        if let Ok(at) = deadline.await {
            tokio::time::sleep_until(at).await
        }
    };
    tokio::pin!(give_up);
    loop {
        let next = tokio::select! {
            m = rd.next_msg::<FromCs>() => m,
            () = &mut give_up => return false,
        };
        match next {
            Ok(FromCs::WriteStatus {
                write_id: 0,
                status,
            }) if init_pending => {
                init_pending = false;
                if status.is_err() {
                    let _ = tx.send(FromCs::WriteStatus {
                        write_id: 0,
                        status,
                    });
                    return false;
                }
            }
            Ok(FromCs::WriteEnded) => return true,
            Ok(m) => {
                if tx.send(m).is_err() {
                    return false;
                }
            }
            Err(e) => {
                if !e.is_disconnect() {
                    tracing::warn!("write chain: bad answer from the next chunkserver: {e}");
                }
                return false;
            }
        }
    }
}

enum LocalJob {
    Write {
        write_id: u32,
        offset: u32,
        data: PooledBuf,
        crc: u32,
    },
    Sync {
        req_id: u32,
    },
}

struct LocalDone {
    id: u32,
    status: FsResult<()>,
}

/// Runs the session's local jobs in order on the blocking pool. A trip there runs the jobs
/// queued when it starts and those that come while it runs, so that a sync right behind its
/// writes needs no trip of its own. The chunk counts as being written until the last job is
/// done. A chunk still being made is waited for on the first trip, which sends the outcome
/// to `init` and goes at once (the init's answer waits for it). False when a trip failed to
/// run (every pending write then fails).
async fn local_writer(
    store: Arc<Store>,
    opened: Opened,
    writing: Arc<Writing>,
    mut jobs: mpsc::Receiver<LocalJob>,
    done: mpsc::UnboundedSender<LocalDone>,
    init: Option<oneshot::Sender<FsResult<()>>>,
) -> bool {
    let mut batch = Vec::with_capacity(LOCAL_BATCH);
    let mut state = DiskState {
        scratch: chunkfile::new_block(),
        unflushed: Unflushed::default(),
        written: 0,
        direct: None,
    };
    let (mut opened, mut init) = (opened, init);
    loop {
        let first_of_new = matches!(opened, Opened::Creating(..));
        if !first_of_new && jobs.recv_many(&mut batch, LOCAL_BATCH).await == 0 {
            return true;
        }
        let store = Arc::clone(&store);
        let done = done.clone();
        let writing = Arc::clone(&writing);
        let init = init.take();
        let ran = tokio::task::spawn_blocking(move || {
            let opened = opened.on_disk_thread(&store, init);
            if let Ok(h) = &opened {
                loop {
                    while batch.len() < LOCAL_BATCH {
                        match jobs.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    if batch.is_empty() {
                        break;
                    }
                    run_jobs(&store, h, &mut batch, &mut state, &done);
                }
            }
            drop(writing);
            (opened, jobs, batch, state)
        })
        .await;
        match ran {
            Ok((Ok(h), j, b, s)) => {
                (jobs, batch, state) = (j, b, s);
                opened = Opened::Ready(h);
            }
            Ok((Err(_), mut j, mut b, _)) => {
                // The chunk was not made: the acker answered the init with the reason and
                // stopped, which ends the session; its jobs are dropped as they come.
                while j.recv_many(&mut b, LOCAL_BATCH).await > 0 {
                    b.clear();
                }
                return true;
            }
            Err(e) => {
                // Dropping `done` turns every pending write into an error.
                tracing::error!("a disk write task failed: {e}");
                return false;
            }
        }
    }
}

/// What a session's disk writes keep from one batch of jobs to the next.
struct DiskState {
    scratch: Box<chunkfile::Block>,
    unflushed: Unflushed,
    /// Bytes the session wrote so far.
    written: u64,
    /// The descriptor for whole blocks, opened at the first one past [`DIRECT_AFTER`] (see
    /// [`chunkfile::write_blocks_direct`]); `Some(None)` when it cannot be had.
    direct: Option<Option<File>>,
}

/// Runs a batch of disk jobs in order, on a blocking thread. Whole blocks that follow each
/// other go to the disk in one write.
fn run_jobs(
    store: &Store,
    h: &Handle,
    batch: &mut Vec<LocalJob>,
    state: &mut DiskState,
    done: &mpsc::UnboundedSender<LocalDone>,
) {
    let mut end = 0u64;
    let mut jobs = batch.drain(..).peekable();
    while let Some(job) = jobs.next() {
        match job {
            LocalJob::Write {
                write_id,
                offset,
                data,
                crc,
            } => {
                let whole =
                    data.len() == chunkfile::BS && (offset as usize).is_multiple_of(chunkfile::BS);
                let direct = match &mut state.direct {
                    Some(d) => d,
                    None if whole && state.written >= DIRECT_AFTER => {
                        state.direct.insert(chunkfile::open_direct(&h.file))
                    }
                    None => &mut None,
                };
                // A whole block goes to the disk directly, with those right behind it.
                let mut run: [Option<(u32, PooledBuf, u32)>; LOCAL_BATCH] =
                    std::array::from_fn(|_| None);
                let mut count = 0;
                while let Some(LocalJob::Write {
                    offset: next,
                    data: next_data,
                    ..
                }) = jobs.peek()
                {
                    let follows = u64::from(*next)
                        == u64::from(offset) + ((count + 1) * chunkfile::BS) as u64
                        && next_data.len() == chunkfile::BS;
                    if !whole || direct.is_none() || !follows || count + 1 == LOCAL_BATCH {
                        break;
                    }
                    if let Some(LocalJob::Write {
                        write_id,
                        data,
                        crc,
                        ..
                    }) = jobs.next()
                    {
                        run[count] = Some((write_id, data, crc));
                        count += 1;
                    }
                }
                let status = if whole && direct.is_some() {
                    let mut blocks: [&[u8]; LOCAL_BATCH] = [&[]; LOCAL_BATCH];
                    let mut crcs = [0u32; LOCAL_BATCH];
                    (blocks[0], crcs[0]) = (&data[..], crc);
                    for (i, (_, d, c)) in run.iter().flatten().enumerate() {
                        (blocks[i + 1], crcs[i + 1]) = (&d[..], *c);
                    }
                    let n = count + 1;
                    store.write_blocks(
                        h,
                        direct,
                        offset,
                        &blocks[..n],
                        &crcs[..n],
                        &mut state.scratch,
                    )
                } else {
                    store.write(h, offset, &data, crc, &mut state.scratch)
                };
                let len = (data.len() + count * chunkfile::BS) as u64;
                state.written += len;
                if status.is_ok() {
                    end = end.max(u64::from(offset) + len);
                    state
                        .unflushed
                        .add(u64::from(offset), u64::from(offset) + len);
                }
                let _ = done.send(LocalDone {
                    id: write_id,
                    status,
                });
                for (id, _, _) in run.into_iter().flatten() {
                    let _ = done.send(LocalDone { id, status });
                }
            }
            LocalJob::Sync { req_id } => {
                state.unflushed = Unflushed::default();
                let _ = done.send(LocalDone {
                    id: req_id,
                    status: store.sync(h),
                });
            }
        }
    }
    if end > 0 {
        store.note_extent(h, end);
    }
    if let Some((from, to)) = state.unflushed.due() {
        chunkfile::start_writeback(&h.file, from, to);
    }
}

/// Data a write session wrote that the kernel has not been asked to write to disk yet.
/// Past [`WRITEBACK_BYTES`] the disk writes are started (not waited for): a stream's data then
/// reaches the disk while more arrives, instead of all of it at the `fsync` that ends the
/// stream (with much memory the kernel itself would start only gigabytes later).
#[derive(Default)]
struct Unflushed {
    from: u64,
    to: u64,
    bytes: u64,
}

/// Bytes written by a session before their disk writes are started.
const WRITEBACK_BYTES: u64 = 8 << 20;

impl Unflushed {
    fn add(&mut self, from: u64, to: u64) {
        if self.bytes == 0 {
            (self.from, self.to) = (from, to);
        } else {
            self.from = self.from.min(from);
            self.to = self.to.max(to);
        }
        self.bytes += to - from;
    }

    /// The range of chunk data to start writing, once enough was written; forgets it.
    fn due(&mut self) -> Option<(u64, u64)> {
        if self.bytes < WRITEBACK_BYTES {
            return None;
        }
        let range = (self.from, self.to);
        *self = Unflushed::default();
        Some(range)
    }
}

/// An entry awaiting its answer upstream, in the order the requests came.
enum Pending {
    /// Answered without touching the disk (refused piece).
    Immediate(FromCs),
    Write {
        write_id: u32,
        forwarded: bool,
    },
    Sync {
        req_id: u32,
        forwarded: bool,
    },
}

/// What the acker expects from the next server for an entry.
#[derive(Clone, Copy)]
enum Expect {
    Write(u32),
    Sync(u32),
}

struct Acker<'a> {
    up: &'a mut Writer,
    local: mpsc::UnboundedReceiver<LocalDone>,
    /// Answers of the next server; `None` without one, or once the chain broke.
    down: Option<mpsc::UnboundedReceiver<FromCs>>,
    chained: bool,
    broken: &'a AtomicBool,
    /// Set when the init was answered with an error (the chunk was not made).
    refused: &'a AtomicBool,
    chunk: ChunkRef,
    /// Answers to writes and syncs written but not yet flushed.
    dirty: bool,
    /// The answer to the init is written but not yet flushed.
    opened: bool,
    /// The outcome of the creation of a chunk that was being made when the chain opened: it
    /// answers the init, ahead of everything else.
    init: Option<oneshot::Receiver<FsResult<()>>>,
}

impl Acker<'_> {
    /// Answers every pending entry in order; `false` when the upstream connection failed, or
    /// the chunk was not made.
    async fn run(mut self, mut pending: mpsc::Receiver<Pending>) -> bool {
        if let Some(init) = self.init.take() {
            let status = init.await.unwrap_or(Err(FsError::Io)).map_err(hide_version);
            if self
                .up
                .send(&FromCs::WriteStatus {
                    write_id: 0,
                    status,
                })
                .await
                .is_err()
            {
                return false;
            }
            if let Err(e) = status {
                tracing::debug!(
                    "write chain for chunk {:016X}: the chunk was not made here: {e}",
                    self.chunk.chunk_id
                );
                self.refused.store(true, Ordering::Relaxed);
                let _ = self.up.flush().await;
                return false;
            }
            self.opened = true;
        }
        loop {
            let entry = match pending.try_recv() {
                Ok(e) => e,
                Err(_) => {
                    if self.flush().await.is_err() {
                        return false;
                    }
                    match pending.recv().await {
                        Some(e) => e,
                        None => break,
                    }
                }
            };
            let reply = match entry {
                Pending::Immediate(m) => m,
                Pending::Write {
                    write_id,
                    forwarded,
                } => {
                    let local = self.local_result(write_id).await;
                    let down = self.downstream(forwarded, Expect::Write(write_id)).await;
                    FromCs::WriteStatus {
                        write_id,
                        status: local.and(down),
                    }
                }
                Pending::Sync { req_id, forwarded } => {
                    let local = self.local_result(req_id).await;
                    let down = self.downstream(forwarded, Expect::Sync(req_id)).await;
                    FromCs::SyncDone {
                        req_id,
                        status: local.and(down),
                    }
                }
            };
            if self.up.send(&reply).await.is_err() {
                return false;
            }
            self.dirty = true;
        }
        self.flush().await.is_ok()
    }

    /// Flushes every answer written.
    async fn flush(&mut self) -> Result<(), ProtoError> {
        if self.dirty || self.opened {
            (self.dirty, self.opened) = (false, false);
            self.up.flush().await?;
        }
        Ok(())
    }

    /// Flushes answers to writes and syncs before a wait: the answer to the init alone tells
    /// the writer nothing it waits for.
    async fn flush_answers(&mut self) -> Result<(), ProtoError> {
        if self.dirty {
            self.flush().await?;
        }
        Ok(())
    }

    async fn local_result(&mut self, id: u32) -> FsResult<()> {
        let done = match self.local.try_recv() {
            Ok(d) => Some(d),
            Err(_) => {
                let _ = self.flush_answers().await;
                self.local.recv().await
            }
        };
        match done {
            Some(d) if d.id == id => d.status,
            Some(d) => {
                tracing::error!(
                    "write session for chunk {:016X}: local result for id {} arrived where id \
                     {id} was expected",
                    self.chunk.chunk_id,
                    d.id
                );
                Err(FsError::Io)
            }
            None => Err(FsError::Io),
        }
    }

    async fn downstream(&mut self, forwarded: bool, expect: Expect) -> FsResult<()> {
        if !self.chained {
            return Ok(());
        }
        if !forwarded {
            return Err(FsError::Io);
        }
        let Some(rx) = self.down.as_mut() else {
            return Err(FsError::Io);
        };
        let got = match rx.try_recv() {
            Ok(m) => Ok(Some(m)),
            Err(_) => {
                if self.flush_answers().await.is_err() {
                    return Err(FsError::Io);
                }
                let Some(rx) = self.down.as_mut() else {
                    return Err(FsError::Io);
                };
                timeout(CHAIN_TIMEOUT, rx.recv()).await
            }
        };
        let problem = match (got, expect) {
            (Ok(Some(FromCs::WriteStatus { write_id, status })), Expect::Write(id))
                if write_id == id =>
            {
                return status
            }
            (
                Ok(Some(FromCs::WriteStatus {
                    write_id: 0,
                    status: Err(status),
                })),
                _,
            ) => {
                // The init sent ahead of the writes was refused: its reason is the answer.
                tracing::info!(
                    "write chain for chunk {:016X}: the next chunkserver refused the chain: \
                     {status}",
                    self.chunk.chunk_id
                );
                self.broken.store(true, Ordering::Relaxed);
                self.down = None;
                return Err(status);
            }
            (Ok(Some(FromCs::SyncDone { req_id, status })), Expect::Sync(id)) if req_id == id => {
                return status
            }
            (Ok(Some(other)), _) => format!("answered out of order ({other:?})"),
            (Ok(None), _) => "closed the connection".to_string(),
            (Err(_), _) => format!("did not answer within {} s", CHAIN_TIMEOUT.as_secs()),
        };
        tracing::warn!(
            "write chain for chunk {:016X}: the next chunkserver {problem}; every further write \
             of this chain fails",
            self.chunk.chunk_id
        );
        self.broken.store(true, Ordering::Relaxed);
        self.down = None;
        Err(FsError::Io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{read_all, test_store, write_all};
    use moose_proto::handshake::say_hello;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    use tokio::net::TcpListener;

    async fn start(store: Arc<Store>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (addr, tokio::spawn(serve(listener, store)))
    }

    /// A data server on 127.0.0.1 over a fresh store, holding chunk `C` when `has_c`; its
    /// folder lasts as long as the value.
    struct TestServer {
        store: Arc<Store>,
        addr: SocketAddr,
        _dir: tempfile::TempDir,
        _events: mpsc::UnboundedReceiver<moose_proto::msg::CsToMaster>,
    }

    async fn server(has_c: bool) -> TestServer {
        server_in(tempfile::tempdir().unwrap(), has_c).await
    }

    async fn server_in(dir: tempfile::TempDir, has_c: bool) -> TestServer {
        let (store, events) = test_store(dir.path());
        if has_c {
            store.create(C).unwrap();
        }
        let (addr, _) = start(Arc::clone(&store)).await;
        TestServer {
            store,
            addr,
            _dir: dir,
            _events: events,
        }
    }

    async fn connect(addr: SocketAddr, role: Role) -> (Reader, Writer) {
        let sock = TcpStream::connect(addr).await.unwrap();
        let (rd, wr) = sock.into_split();
        let mut r = FrameReader::new(rd);
        let mut w = FrameWriter::new(wr);
        say_hello(&mut r, &mut w, role, "test").await.unwrap();
        (r, w)
    }

    fn cs(addr: SocketAddr) -> CsAddr {
        CsAddr {
            host: "127.0.0.1".into(),
            port: addr.port(),
        }
    }

    /// Reads a range over the wire: the data (checked against the frame CRCs) and the status.
    async fn wire_read(
        addr: SocketAddr,
        chunk: ChunkRef,
        offset: u32,
        size: u32,
    ) -> (Vec<u8>, FsResult<()>) {
        let (mut r, mut w) = connect(addr, Role::Client).await;
        w.send_now(&ToCs::Read {
            req_id: 9,
            chunk,
            token: crate::access::tests::token(chunk, false, &[]),
            offset,
            size,
        })
        .await
        .unwrap();
        let mut data = Vec::new();
        loop {
            match r.next().await.unwrap() {
                Frame::Data(h, piece) => {
                    assert_eq!(
                        (h.chunk_id, h.version, h.req_id),
                        (chunk.chunk_id, chunk.version, 9)
                    );
                    assert_eq!(h.offset as usize, offset as usize + data.len());
                    assert_eq!(h.crc, crc32fast::hash(piece));
                    assert!(h.offset as usize / BS == (h.offset as usize + piece.len() - 1) / BS);
                    data.extend_from_slice(piece);
                }
                Frame::Msg(body) => match frame::decode::<FromCs>(body).unwrap() {
                    FromCs::ReadDone { req_id: 9, status } => return (data, status),
                    other => panic!("unexpected {other:?}"),
                },
            }
        }
    }

    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
            .collect()
    }

    const C: ChunkRef = ChunkRef {
        chunk_id: 0x5151,
        version: 2,
    };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chained_write_reaches_both_copies() {
        let (sa, sb) = (server(true).await, server(true).await);
        let (b, addr_a, addr_b) = (&sb.store, sa.addr, sb.addr);

        let (mut r, mut w) = connect(addr_a, Role::Client).await;
        w.send_now(&ToCs::WriteInit {
            chunk: C,
            chain: vec![cs(addr_b)],
            token: crate::access::tests::token(C, true, &[cs(addr_b)]),
        })
        .await
        .unwrap();
        assert_eq!(
            r.next_msg::<FromCs>().await.unwrap(),
            FromCs::WriteStatus {
                write_id: 0,
                status: Ok(())
            }
        );

        // Whole blocks, a partial block, a piece straddling two blocks, all pipelined.
        let mut expected = vec![0u8; 40 * BS];
        let mut writes: Vec<(u32, Vec<u8>)> = (0..32)
            .map(|i| ((i * BS) as u32, pattern(BS, i as u32)))
            .collect();
        writes.push(((33 * BS + 100) as u32, pattern(5000, 77)));
        writes.push(((36 * BS - 10) as u32, pattern(300, 78)));
        for (offset, data) in &writes {
            expected[*offset as usize..*offset as usize + data.len()].copy_from_slice(data);
        }
        w.send_pieces(C, &writes).await.unwrap();
        // A piece with a bad CRC is refused, not written.
        let bad = DataHeader {
            chunk_id: C.chunk_id,
            version: C.version,
            req_id: 100,
            offset: (38 * BS) as u32,
            crc: 1,
        };
        w.send_data(&bad, &[1, 2, 3]).await.unwrap();
        w.send(&ToCs::Sync {
            req_id: 101,
            chunk: C,
            token: crate::access::tests::token(C, true, &[cs(addr_b)]),
        })
        .await
        .unwrap();
        // The end right behind, as clients send it: the session ends once all is answered.
        w.send_now(&ToCs::WriteFinish).await.unwrap();
        for i in 0..writes.len() as u32 {
            assert_eq!(
                r.next_msg::<FromCs>().await.unwrap(),
                FromCs::WriteStatus {
                    write_id: i + 1,
                    status: Ok(())
                }
            );
        }
        assert_eq!(
            r.next_msg::<FromCs>().await.unwrap(),
            FromCs::WriteStatus {
                write_id: 100,
                status: Err(FsError::Crc)
            }
        );
        assert_eq!(
            r.next_msg::<FromCs>().await.unwrap(),
            FromCs::SyncDone {
                req_id: 101,
                status: Ok(())
            }
        );
        assert_eq!(r.next_msg::<FromCs>().await.unwrap(), FromCs::WriteEnded);

        for addr in [addr_a, addr_b] {
            let (data, status) = wire_read(addr, C, 0, expected.len() as u32).await;
            assert_eq!(status, Ok(()));
            assert!(data == expected, "copy at {addr} differs");
            // An unaligned range inside one block and across blocks.
            let (data, _) = wire_read(addr, C, (33 * BS + 90) as u32, 50).await;
            assert_eq!(data, expected[33 * BS + 90..33 * BS + 140]);
            let (data, _) = wire_read(addr, C, (BS - 7) as u32, (BS + 14) as u32).await;
            assert_eq!(data, expected[BS - 7..2 * BS + 7]);
        }
        assert_eq!(read_all(b, C, 40).unwrap(), expected);
        assert_eq!(
            b.space_reports()[0].used,
            chunkfile::DATA_OFFSET + (36 * BS + 290) as u64
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_of_a_file_not_open_goes_to_a_disk_thread_step_by_step() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _events) = test_store(dir.path());
        store.create(C).unwrap();
        let data = pattern(10 * BS + 100, 7);
        write_all(&store, C, 0, &data);
        let (addr, _s) = start(Arc::clone(&store)).await;
        // Not open: the request's blocks are read ahead and then in steps on a disk thread.
        store.close_file(C.chunk_id);
        let (got, status) = wire_read(addr, C, 50, (10 * BS) as u32).await;
        assert_eq!(status, Ok(()));
        assert!(got == data[50..50 + 10 * BS], "the data read back differs");
        // Open now: the same read comes from the page cache on the connection's task.
        let (again, status) = wire_read(addr, C, 50, (10 * BS) as u32).await;
        assert_eq!(status, Ok(()));
        assert!(again == got, "the cached read differs");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut events) = test_store(dir.path());
        store.create(C).unwrap();
        write_all(&store, C, 0, &pattern(2 * BS, 1));
        let (addr, _s) = start(Arc::clone(&store)).await;

        let (data, status) = wire_read(addr, C, 0, 3 * BS as u32).await;
        assert_eq!(status, Ok(()));
        assert!(
            data[2 * BS..].iter().all(|&b| b == 0),
            "past the end reads zeros"
        );
        // Another version and an absent chunk get the same answer.
        let wrong = ChunkRef { version: 1, ..C };
        assert_eq!(wire_read(addr, wrong, 0, 10).await.1, Err(FsError::NoChunk));
        let missing = ChunkRef {
            chunk_id: 1,
            version: 1,
        };
        assert_eq!(
            wire_read(addr, missing, 0, 10).await.1,
            Err(FsError::NoChunk)
        );
        let beyond = (CHUNK_SIZE - 5) as u32;
        assert_eq!(wire_read(addr, C, beyond, 10).await.1, Err(FsError::Inval));

        // Corrupt block 1: reading block 0 still works, block 1 fails and is reported.
        let path = dir.path().join("51/chunk_0000000000005151_00000002.mfs");
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"X", chunkfile::DATA_OFFSET + BS as u64 + 3)
            .unwrap();
        assert_eq!(wire_read(addr, C, 0, 100).await.1, Ok(()));
        assert_eq!(
            wire_read(addr, C, 0, 2 * BS as u32).await.1,
            Err(FsError::Crc)
        );
        assert_eq!(
            events.recv().await,
            Some(moose_proto::msg::CsToMaster::ChunkDamaged(C))
        );
    }

    /// A tmpfs mounted for a test, unmounted when dropped.
    struct Tmpfs(std::path::PathBuf);

    impl Tmpfs {
        /// `None` when this process may not mount (not root, or no CAP_SYS_ADMIN).
        fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
            use nix::mount::{mount, MsFlags};
            let data = format!("size={size}");
            match mount(
                Some("tmpfs"),
                dir,
                Some("tmpfs"),
                MsFlags::empty(),
                Some(data.as_str()),
            ) {
                Ok(()) => Some(Tmpfs(dir.to_path_buf())),
                Err(e) => {
                    eprintln!("cannot mount a tmpfs ({e}); the full-disk test needs root");
                    None
                }
            }
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_disk_answers_no_space() {
        let dir = tempfile::tempdir().unwrap();
        let Some(_tmpfs) = Tmpfs::mount(dir.path(), "72m") else {
            return;
        };
        let (store, _events) = test_store(dir.path());
        store.create(C).unwrap();
        // Fill the file system up.
        {
            use std::io::Write;
            let mut filler = std::fs::File::create(dir.path().join("filler")).unwrap();
            let piece = vec![0x11u8; 1 << 20];
            let e = loop {
                if let Err(e) = filler.write_all(&piece) {
                    break e;
                }
            };
            assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
        }
        // No room for another chunk: the report says so, a create is refused.
        assert_eq!(store.space_reports()[0].avail, 0);
        let other = ChunkRef {
            chunk_id: 0x5152,
            version: 1,
        };
        assert_eq!(store.create(other), Err(FsError::NoSpace));

        // A write finds the disk full: the writer gets NoSpace (ENOSPC), not an I/O error.
        let (addr, _s) = start(Arc::clone(&store)).await;
        let (mut r, mut w) = connect(addr, Role::Client).await;
        init_alone(&mut r, &mut w, C).await;
        let data = pattern(BS, 3);
        let mut h = DataHeader {
            chunk_id: C.chunk_id,
            version: C.version,
            req_id: 1,
            offset: 0,
            crc: crc32fast::hash(&data),
        };
        w.send_data(&h, &data).await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(
            r.next_msg::<FromCs>().await.unwrap(),
            FromCs::WriteStatus {
                write_id: 1,
                status: Err(FsError::NoSpace)
            }
        );
        let report = &store.space_reports()[0];
        assert_eq!(report.errors, 0, "a full disk is not a failing disk");
        assert!(!report.damaged);

        // Room again: the same session writes.
        std::fs::remove_file(dir.path().join("filler")).unwrap();
        h.req_id = 2;
        w.send_data(&h, &data).await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(
            r.next_msg::<FromCs>().await.unwrap(),
            FromCs::WriteStatus {
                write_id: 2,
                status: Ok(())
            }
        );
        w.send_now(&ToCs::WriteFinish).await.unwrap();
        assert_eq!(read_all(&store, C, 1).unwrap(), data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn length_queries() {
        let s = server(true).await;
        let (store, addr) = (&s.store, s.addr);
        let (mut r, mut w) = connect(addr, Role::Chunkserver).await;
        let mut ask = async |chunk: ChunkRef| {
            w.send_now(&ToCs::GetLength {
                req_id: 3,
                chunk,
                token: crate::access::tests::token(chunk, false, &[]),
            })
            .await
            .unwrap();
            match r.next_msg::<FromCs>().await.unwrap() {
                FromCs::Length { req_id: 3, result } => result,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(ask(C).await, Ok(0));
        write_all(store, C, (5 * BS + 7) as u32, b"xyz");
        assert_eq!(ask(C).await, Ok((5 * BS + 10) as u32));
        write_all(store, C, (CHUNK_SIZE - 1) as u32, b"z");
        assert_eq!(ask(C).await, Ok(CHUNK_SIZE as u32));
        store.truncate(C, 3, 100).unwrap();
        assert_eq!(ask(ChunkRef { version: 3, ..C }).await, Ok(100));
        assert_eq!(ask(C).await, Err(FsError::NoChunk), "same as absent");
        let missing = ChunkRef {
            chunk_id: 9,
            version: 1,
        };
        assert_eq!(ask(missing).await, Err(FsError::NoChunk));

        // Not during a write session.
        let new = ChunkRef { version: 3, ..C };
        let (mut r, mut w) = connect(addr, Role::Client).await;
        w.send_now(&ToCs::WriteInit {
            chunk: new,
            chain: vec![],
            token: crate::access::tests::token(new, true, &[]),
        })
        .await
        .unwrap();
        assert!(matches!(
            r.next_msg::<FromCs>().await.unwrap(),
            FromCs::WriteStatus {
                write_id: 0,
                status: Ok(())
            }
        ));
        w.send_now(&ToCs::GetLength {
            req_id: 4,
            chunk: new,
            token: crate::access::tests::token(new, false, &[]),
        })
        .await
        .unwrap();
        assert!(matches!(r.next().await, Err(ProtoError::Closed)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chain_failures_are_errors_never_silent() {
        let (sa, sb) = (server(true).await, server(false).await);
        let (a, addr_a, addr_b) = (&sa.store, sa.addr, sb.addr);

        // The next server does not have the chunk: its status comes back.
        let (mut r, mut w) = connect(addr_a, Role::Client).await;
        w.send_now(&ToCs::WriteInit {
            chunk: C,
            chain: vec![cs(addr_b)],
            token: crate::access::tests::token(C, true, &[cs(addr_b)]),
        })
        .await
        .unwrap();
        assert_eq!(
            r.next_msg::<FromCs>().await.unwrap(),
            FromCs::WriteStatus {
                write_id: 0,
                status: Err(FsError::NoChunk)
            }
        );

        // Nobody listens at the next address.
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        w.send_now(&ToCs::WriteInit {
            chunk: C,
            chain: vec![cs(dead_addr)],
            token: crate::access::tests::token(C, true, &[cs(dead_addr)]),
        })
        .await
        .unwrap();
        assert_eq!(
            r.next_msg::<FromCs>().await.unwrap(),
            FromCs::WriteStatus {
                write_id: 0,
                status: Err(FsError::Io)
            }
        );

        // The next server goes away in the middle of a session: the write it did not
        // acknowledge and every later one fail.
        let flaky = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let flaky_addr = flaky.local_addr().unwrap();
        tokio::spawn(async move {
            let (sock, _) = flaky.accept().await.unwrap();
            let (rd, wr) = sock.into_split();
            let mut r = FrameReader::new(rd);
            let mut w = FrameWriter::new(wr);
            accept_hello(&mut r, &mut w, &[Role::Chunkserver], "flaky")
                .await
                .unwrap();
            let _init: ToCs = r.next_msg().await.unwrap();
            w.send_now(&FromCs::WriteStatus {
                write_id: 0,
                status: Ok(()),
            })
            .await
            .unwrap();
            if let Frame::Data(h, _) = r.next().await.unwrap() {
                let ack = FromCs::WriteStatus {
                    write_id: h.req_id,
                    status: Ok(()),
                };
                w.send_now(&ack).await.unwrap();
            }
        });
        w.send_now(&ToCs::WriteInit {
            chunk: C,
            chain: vec![cs(flaky_addr)],
            token: crate::access::tests::token(C, true, &[cs(flaky_addr)]),
        })
        .await
        .unwrap();
        assert_eq!(
            r.next_msg::<FromCs>().await.unwrap(),
            FromCs::WriteStatus {
                write_id: 0,
                status: Ok(())
            }
        );
        let data = pattern(BS, 5);
        for id in 1..=3 {
            let h = DataHeader {
                chunk_id: C.chunk_id,
                version: C.version,
                req_id: id,
                offset: 0,
                crc: crc32fast::hash(&data),
            };
            w.send_data(&h, &data).await.unwrap();
            w.flush().await.unwrap();
            let want = if id == 1 { Ok(()) } else { Err(FsError::Io) };
            assert_eq!(
                r.next_msg::<FromCs>().await.unwrap(),
                FromCs::WriteStatus {
                    write_id: id,
                    status: want
                }
            );
        }
        // The local copy still got the data.
        assert_eq!(read_all(a, C, 1).unwrap(), data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_goes_to_the_disk_directly_past_its_first_megabytes() {
        // A disk file system: tmpfs keeps even direct writes in its page cache.
        let sa = server_in(tempfile::tempdir_in("/var/tmp").unwrap(), true).await;
        let blocks = DIRECT_AFTER as usize / BS + 32;
        let mut pieces: Vec<(u32, Vec<u8>)> = (0..blocks)
            .map(|i| ((i * BS) as u32, pattern(BS, i as u32)))
            .collect();
        // A partial block behind the stream still goes through the page cache.
        pieces.push(((blocks * BS) as u32, pattern(700, 5)));
        let (mut r, mut w) = connect(sa.addr, Role::Client).await;
        let answers = pipelined_session(&mut r, &mut w, C, &[], &pieces).await;
        assert_eq!(answers, all_ok(pieces.len()));

        let file = &sa.store.open(C).unwrap().file;
        let at = |block: usize| chunkfile::DATA_OFFSET + (block * BS) as u64;
        let first = DIRECT_AFTER as usize / BS;
        assert_eq!(
            crate::chunkfile::tests::cached_pages(file, at(first), (blocks - first) * BS),
            0,
            "blocks past the first {DIRECT_AFTER} bytes were left in the page cache"
        );
        assert!(
            crate::chunkfile::tests::cached_pages(file, at(0), first * BS) > 0,
            "the first blocks of a session go through the page cache"
        );
        assert!(crate::chunkfile::tests::cached_pages(file, at(blocks), 4096) > 0);

        let len = (blocks * BS + 700) as u32;
        let (data, status) = wire_read(sa.addr, C, 0, len).await;
        assert_eq!(status, Ok(()));
        let expected: Vec<u8> = pieces.iter().flat_map(|(_, d)| d.iter().copied()).collect();
        assert!(data == expected, "the stream did not read back as written");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_ahead_is_read_past_the_page_cache_and_a_small_read_through_it() {
        // A disk file system: tmpfs keeps even direct reads in its page cache.
        let sa = server_in(tempfile::tempdir_in("/var/tmp").unwrap(), true).await;
        let blocks = DIRECT_READ_BLOCKS + 4;
        let mut pieces: Vec<(u32, Vec<u8>)> = (0..blocks)
            .map(|i| ((i * BS) as u32, pattern(BS, i as u32 + 7)))
            .collect();
        // The file ends inside its last block.
        pieces.push(((blocks * BS) as u32, pattern(700, 3)));
        let (mut r, mut w) = connect(sa.addr, Role::Client).await;
        let answers = pipelined_session(&mut r, &mut w, C, &[], &pieces).await;
        assert_eq!(answers, all_ok(pieces.len()));
        let expected: Vec<u8> = pieces.iter().flat_map(|(_, d)| d.iter().copied()).collect();

        let file = Arc::clone(&sa.store.open(C).unwrap().file);
        let data_pages = |from: usize, blocks: usize| {
            let at = chunkfile::DATA_OFFSET + (from * BS) as u64;
            crate::chunkfile::tests::cached_pages(&file, at, blocks * BS)
        };
        file.sync_data().unwrap();
        // SAFETY: a plain system call on an open descriptor; no memory is passed.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(
            data_pages(0, blocks + 1),
            0,
            "the chunk left the page cache"
        );

        let (data, status) = wire_read(sa.addr, C, 0, expected.len() as u32).await;
        assert_eq!(status, Ok(()));
        assert!(
            data == expected,
            "a direct read differs from what was written"
        );
        // Reading the CRC table through the page cache reads a few pages behind it too,
        // into the first block.
        assert_eq!(
            data_pages(1, blocks),
            0,
            "a read of {} blocks went through the page cache",
            blocks + 1
        );

        let (data, status) = wire_read(sa.addr, C, (3 * BS + 100) as u32, 1000).await;
        assert_eq!(status, Ok(()));
        assert!(data == expected[3 * BS + 100..3 * BS + 1100]);
        assert!(data_pages(3, 1) > 0, "a small read keeps its block cached");

        // Direct reads check the blocks as any read does.
        file.write_all_at(b"X", chunkfile::DATA_OFFSET + (9 * BS) as u64)
            .unwrap();
        file.sync_data().unwrap();
        // SAFETY: as above.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        let (_, status) = wire_read(sa.addr, C, 0, expected.len() as u32).await;
        assert_eq!(status, Err(FsError::Crc));
    }

    /// One pipelined write session on an open connection: init, pieces and finish sent at
    /// once; returns the init's status and then every answer up to `WriteEnded` (or the end
    /// of the connection).
    async fn pipelined_session(
        r: &mut Reader,
        w: &mut Writer,
        chunk: ChunkRef,
        chain: &[CsAddr],
        pieces: &[(u32, Vec<u8>)],
    ) -> Vec<FromCs> {
        let send = async {
            w.send(&ToCs::WriteInit {
                chunk,
                chain: chain.to_vec(),
                token: crate::access::tests::token(chunk, true, chain),
            })
            .await?;
            w.send_pieces(chunk, pieces).await?;
            w.send_now(&ToCs::WriteFinish).await
        };
        // A server that refuses the init closes the connection on the frames behind it, so
        // sending may fail: the answers tell what happened.
        let _ = send.await;
        let mut answers = Vec::new();
        while let Ok(m) = r.next_msg::<FromCs>().await {
            let last = m == FromCs::WriteEnded;
            answers.push(m);
            if last {
                break;
            }
        }
        answers
    }

    /// The master's order that makes `chunk`, carried out 200 ms from now: after the writer's
    /// chain has come.
    fn create_later(store: &Arc<Store>, chunk: ChunkRef) -> tokio::task::JoinHandle<FsResult<()>> {
        let store = Arc::clone(store);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            blocking(move || store.create(chunk)).await
        })
    }

    /// Sends a write init for `chunk` (no chain) and nothing behind it; checks it is answered.
    async fn init_alone(r: &mut Reader, w: &mut Writer, chunk: ChunkRef) {
        w.send_now(&ToCs::WriteInit {
            chunk,
            chain: vec![],
            token: crate::access::tests::token(chunk, true, &[]),
        })
        .await
        .unwrap();
        let answer = timeout(Duration::from_secs(5), r.next_msg::<FromCs>()).await;
        assert_eq!(
            answer.expect("the init is answered").unwrap(),
            FromCs::WriteStatus {
                write_id: 0,
                status: Ok(())
            }
        );
    }

    fn all_ok(pieces: usize) -> Vec<FromCs> {
        (0..=pieces as u32)
            .map(|write_id| FromCs::WriteStatus {
                write_id,
                status: Ok(()),
            })
            .chain([FromCs::WriteEnded])
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_connection_carries_two_write_sessions_and_then_a_read() {
        let s = server(true).await;
        let addr = s.addr;
        let (mut r, mut w) = connect(addr, Role::Client).await;

        let first = vec![(0, pattern(BS, 1)), (BS as u32, pattern(BS, 2))];
        let answers = pipelined_session(&mut r, &mut w, C, &[], &first).await;
        assert_eq!(answers, all_ok(2));
        let second = vec![((BS + 10) as u32, pattern(100, 3))];
        let answers = pipelined_session(&mut r, &mut w, C, &[], &second).await;
        assert_eq!(answers, all_ok(1));

        let mut expected = [pattern(BS, 1), pattern(BS, 2)].concat();
        expected[BS + 10..BS + 110].copy_from_slice(&pattern(100, 3));
        w.send_now(&ToCs::Read {
            req_id: 7,
            chunk: C,
            offset: 0,
            size: 2 * BS as u32,
            token: crate::access::tests::token(C, false, &[]),
        })
        .await
        .unwrap();
        let mut data = Vec::new();
        loop {
            match r.next().await.unwrap() {
                Frame::Data(h, piece) => {
                    assert_eq!(h.offset as usize, data.len());
                    data.extend_from_slice(piece);
                }
                Frame::Msg(body) => {
                    assert_eq!(
                        frame::decode::<FromCs>(body).unwrap(),
                        FromCs::ReadDone {
                            req_id: 7,
                            status: Ok(())
                        }
                    );
                    break;
                }
            }
        }
        assert!(data == expected, "the read after two sessions differs");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_init_is_answered_alone_when_no_write_follows_it() {
        let s = server(true).await;
        let (mut r, mut w) = connect(s.addr, Role::Client).await;
        // The answer to the init waits for the first write's answer, to leave with it; a
        // writer that sends nothing before the answer (as a chunkserver forwarding a chain on
        // a new connection does) still gets it.
        init_alone(&mut r, &mut w, C).await;
        w.send_pieces(C, &[(0, pattern(100, 4))]).await.unwrap();
        w.send_now(&ToCs::WriteFinish).await.unwrap();
        for expected in all_ok(1).into_iter().skip(1) {
            assert_eq!(r.next_msg::<FromCs>().await.unwrap(), expected);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_chain_for_a_new_chunk_waits_for_the_order_that_makes_it() {
        let s = server(false).await;
        let (mut r, mut w) = connect(s.addr, Role::Client).await;
        let new = ChunkRef {
            chunk_id: 0x77,
            version: 1,
        };
        // The master's order arrives after the writer's chain.
        let order = create_later(&s.store, new);
        let pieces = vec![(0, pattern(100, 9))];
        let answers = pipelined_session(&mut r, &mut w, new, &[], &pieces).await;
        assert_eq!(answers, all_ok(1));
        order.await.unwrap().unwrap();
        assert_eq!(read_all(&s.store, new, 1).unwrap()[..100], pattern(100, 9));

        // An order that failed answers the chain with its error.
        let failed = ChunkRef {
            chunk_id: 0x78,
            version: 1,
        };
        s.store.creations().note(0x78, Err(FsError::NoSpace));
        let answers = pipelined_session(&mut r, &mut w, failed, &[], &pieces).await;
        assert_eq!(
            answers.first(),
            Some(&FromCs::WriteStatus {
                write_id: 0,
                status: Err(FsError::NoSpace)
            })
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_chain_that_waits_for_its_new_chunk_answers_an_init_sent_alone_and_its_failure() {
        let s = server(false).await;
        // A forwarding chunkserver sends the init alone and waits for its answer, which comes
        // once the order made the chunk.
        let (mut r, mut w) = connect(s.addr, Role::Client).await;
        let new = ChunkRef {
            chunk_id: 0x79,
            version: 1,
        };
        let order = create_later(&s.store, new);
        init_alone(&mut r, &mut w, new).await;
        order.await.unwrap().unwrap();
        w.send_pieces(new, &[(0, pattern(100, 4))]).await.unwrap();
        w.send_now(&ToCs::WriteFinish).await.unwrap();
        for expected in all_ok(1).into_iter().skip(1) {
            assert_eq!(r.next_msg::<FromCs>().await.unwrap(), expected);
        }
        assert_eq!(read_all(&s.store, new, 1).unwrap()[..100], pattern(100, 4));

        // An order that fails once the chain waits for it: its error answers the init, the
        // writes behind it are not answered, and the connection ends.
        let (mut r, mut w) = connect(s.addr, Role::Client).await;
        let failing = ChunkRef {
            chunk_id: 0x7A,
            version: 1,
        };
        let store = Arc::clone(&s.store);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            store.creations().note(0x7A, Err(FsError::NoSpace));
        });
        let pieces = vec![(0, pattern(100, 9)), (BS as u32, pattern(BS, 2))];
        let answers = pipelined_session(&mut r, &mut w, failing, &[], &pieces).await;
        assert_eq!(
            answers,
            vec![FromCs::WriteStatus {
                write_id: 0,
                status: Err(FsError::NoSpace)
            }]
        );
        assert_eq!(s.store.check(failing), Err(FsError::NoChunk));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_chain_past_the_disk_thread_waiters_waits_for_its_new_chunk_on_its_task() {
        let s = server(false).await;
        let (mut r, mut w) = connect(s.addr, Role::Client).await;
        let new = ChunkRef {
            chunk_id: 0x7B,
            version: 1,
        };
        // Every permit taken (as by chains whose orders lag): the chain waits on its task.
        let taken = Arc::clone(&WAITING_ON_DISK_THREADS)
            .acquire_many_owned(CREATION_WAITERS as u32)
            .await
            .unwrap();
        let order = create_later(&s.store, new);
        let pieces = vec![(0, pattern(100, 5))];
        let answers = pipelined_session(&mut r, &mut w, new, &[], &pieces).await;
        drop(taken);
        assert_eq!(answers, all_ok(1));
        order.await.unwrap().unwrap();
        assert_eq!(read_all(&s.store, new, 1).unwrap()[..100], pattern(100, 5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_open_answers_the_init_even_with_data_frames_behind_it() {
        let s = server(false).await;
        let addr = s.addr;
        let (mut r, mut w) = connect(addr, Role::Client).await;
        // The chunk is not on this server: the open fails after the data is on its way.
        let pieces: Vec<(u32, Vec<u8>)> = (0..8).map(|i| (i * BS as u32, pattern(BS, i))).collect();
        let answers = pipelined_session(&mut r, &mut w, C, &[], &pieces).await;
        assert_eq!(
            answers,
            vec![FromCs::WriteStatus {
                write_id: 0,
                status: Err(FsError::NoChunk)
            }],
            "only the init's error, then the connection ends"
        );
    }

    /// A listener in front of a real data server that counts the connections made to it and
    /// can cut every connection it carries (as a restarted server would).
    struct CountingFront {
        addr: SocketAddr,
        accepted: Arc<std::sync::atomic::AtomicUsize>,
        /// Connections ended (cut or closed by either side).
        ended: Arc<std::sync::atomic::AtomicUsize>,
        cut: tokio::sync::watch::Sender<u32>,
    }

    async fn counting_front(target: SocketAddr) -> CountingFront {
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = front.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (cut, cuts) = tokio::sync::watch::channel(0u32);
        let ended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let ends = Arc::clone(&ended);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = front.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                let ends = Arc::clone(&ends);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cuts.changed() => {}
                        }
                    }
                    drop(inbound);
                    ends.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        CountingFront {
            addr,
            accepted,
            ended,
            cut,
        }
    }

    #[test]
    fn disk_writes_start_once_a_session_wrote_enough() {
        let mut u = Unflushed::default();
        let block = BS as u64;
        let blocks = WRITEBACK_BYTES / block;
        // Blocks written out of order: the range covers them all.
        for n in (1..blocks).rev() {
            u.add(n * block, (n + 1) * block);
            assert_eq!(u.due(), None, "started after {} blocks", blocks - n);
        }
        u.add(0, block);
        assert_eq!(u.due(), Some((0, WRITEBACK_BYTES)));
        assert_eq!(u.due(), None, "the same range started twice");
        u.add(WRITEBACK_BYTES, WRITEBACK_BYTES + 5);
        assert_eq!(u.due(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_sent_behind_an_init_the_next_server_refuses_fail_with_its_reason() {
        let (sa, sb) = (server(true).await, server(true).await);
        let front = counting_front(sb.addr).await;
        let chain = [cs(front.addr)];
        // A chunk only the first server holds, at a version the next one cannot wait for.
        let only_a = ChunkRef {
            chunk_id: 0x77,
            version: 1,
        };
        sa.store.create(only_a).unwrap();
        sa.store.set_version(only_a, 2).unwrap();
        let only_a = ChunkRef {
            version: 2,
            ..only_a
        };

        // The first chain leaves a kept connection from A to B.
        let (mut r, mut w) = connect(sa.addr, Role::Client).await;
        let answers = pipelined_session(&mut r, &mut w, C, &chain, &[(0, pattern(BS, 1))]).await;
        assert_eq!(answers, all_ok(1));

        // On it, A sends the next init and the write behind it at once: the init's answer to
        // the client comes before B's, and B's refusal is the write's answer.
        let (mut r, mut w) = connect(sa.addr, Role::Client).await;
        let pieces = vec![(0, pattern(BS, 2))];
        let answers = pipelined_session(&mut r, &mut w, only_a, &chain, &pieces).await;
        assert_eq!(
            answers,
            vec![
                FromCs::WriteStatus {
                    write_id: 0,
                    status: Ok(())
                },
                FromCs::WriteStatus {
                    write_id: 1,
                    status: Err(FsError::NoChunk)
                },
                FromCs::WriteEnded,
            ]
        );
        assert_eq!(front.accepted.load(Ordering::SeqCst), 1);

        // That connection is not kept: the next chain opens a new one and works.
        let (mut r, mut w) = connect(sa.addr, Role::Client).await;
        let answers = pipelined_session(&mut r, &mut w, C, &chain, &[(0, pattern(BS, 3))]).await;
        assert_eq!(answers, all_ok(1));
        assert_eq!(front.accepted.load(Ordering::SeqCst), 2);
        assert_eq!(read_all(&sb.store, C, 1).unwrap(), pattern(BS, 3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_chain_reuses_its_connection_to_the_next_server() {
        let (sa, sb) = (server(true).await, server(true).await);
        let (b, addr_a, addr_b) = (&sb.store, sa.addr, sb.addr);
        let front = counting_front(addr_b).await;
        let chain = [cs(front.addr)];
        let accepted = || front.accepted.load(Ordering::SeqCst);

        // Two sessions, each on its own client connection: one connection from A to B.
        for seed in 1..=2 {
            let (mut r, mut w) = connect(addr_a, Role::Client).await;
            let pieces = vec![(0, pattern(BS, seed))];
            let answers = pipelined_session(&mut r, &mut w, C, &chain, &pieces).await;
            assert_eq!(answers, all_ok(1), "session {seed}");
        }
        assert_eq!(accepted(), 1, "connections from A to B after two sessions");
        assert_eq!(read_all(b, C, 1).unwrap(), pattern(BS, 2));

        // B's end of the kept connection goes away: the next chain opens a new one.
        front.cut.send_modify(|n| *n += 1);
        timeout(Duration::from_secs(10), async {
            while front.ended.load(Ordering::SeqCst) < 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the front cuts its connection");
        let (mut r, mut w) = connect(addr_a, Role::Client).await;
        let pieces = vec![(0, pattern(BS, 3))];
        let answers = pipelined_session(&mut r, &mut w, C, &chain, &pieces).await;
        assert_eq!(answers, all_ok(1), "session after the cut");
        assert_eq!(accepted(), 2);
        assert_eq!(read_all(b, C, 1).unwrap(), pattern(BS, 3));
    }
}
