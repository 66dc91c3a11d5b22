//! Talking to chunkservers: reading a range of a chunk (every piece CRC-checked), writing
//! through a chain of servers (pipelined data frames), and syncing a chunk to disk. Idle
//! connections are kept per server and reused for reads and syncs; a write session ends its
//! connection.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moose_proto::auth::ChunkToken;
use moose_proto::handshake::{say_hello, HandshakeError};
use moose_proto::msg::{FromCs, ToCs};
use moose_proto::{
    ChunkRef, CsAddr, DataHeader, Frame, FrameReader, FrameWriter, FsError, ProtoError, Role,
};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

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

    /// The connection was closed under us: worth one more try on a fresh connection.
    fn is_stale_link(&self) -> bool {
        matches!(self, CsError::Link { source, .. } if source.is_disconnect())
    }
}

struct CsConn {
    addr: String,
    reader: FrameReader<OwnedReadHalf>,
    writer: FrameWriter<OwnedWriteHalf>,
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
        match tokio::time::timeout(limit, self.reader.next_msg::<FromCs>()).await {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(e)) => Err(self.link(e)),
            Err(_) => Err(CsError::Timeout {
                addr: self.addr.clone(),
            }),
        }
    }
}

/// Connections to chunkservers, with a few idle ones kept per server.
#[derive(Default)]
pub struct CsPool {
    idle: Mutex<HashMap<CsAddr, Vec<(Instant, CsConn)>>>,
    next_req: AtomicU32,
}

impl CsPool {
    fn req_id(&self) -> u32 {
        self.next_req
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
    }

    fn take_idle(&self, addr: &CsAddr) -> Option<CsConn> {
        let mut idle = self.idle.lock();
        let list = idle.get_mut(addr)?;
        while let Some((at, conn)) = list.pop() {
            if at.elapsed() < IDLE_MAX_AGE {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, addr: &CsAddr, conn: CsConn) {
        let mut idle = self.idle.lock();
        let list = idle.entry(addr.clone()).or_default();
        list.retain(|(at, _)| at.elapsed() < IDLE_MAX_AGE);
        if list.len() < MAX_IDLE {
            list.push((Instant::now(), conn));
        }
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

    /// An idle connection to `addr` (then `true`) or a new one.
    async fn conn(&self, addr: &CsAddr) -> Result<(CsConn, bool), CsError> {
        match self.take_idle(addr) {
            Some(c) => Ok((c, true)),
            None => Ok((Self::connect(addr).await?, false)),
        }
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

    /// Writes `pieces` (offset in chunk, data) to `chunk` through `chain` (first server
    /// first). Returns once every server of the chain has acknowledged every piece.
    pub async fn write_chain(
        &self,
        chain: &[CsAddr],
        chunk: ChunkRef,
        token: &ChunkToken,
        pieces: &[(u32, Bytes)],
    ) -> Result<(), CsError> {
        let (first, rest) = chain.split_first().ok_or_else(|| CsError::Status {
            addr: "(none)".into(),
            err: FsError::NoChunkservers,
        })?;
        let frames: Vec<(u32, Bytes)> = pieces
            .iter()
            .flat_map(|(off, data)| block_pieces(*off, data))
            .collect();
        // `WriteFinish` ends the connection too: it never goes back to the idle list.
        let (mut conn, reused) = self.conn(first).await?;
        let r = write_on(&mut conn, chunk, rest, token, &frames).await;
        if reused && r.as_ref().is_err_and(|e| e.is_stale_link()) {
            let mut conn = Self::connect(first).await?;
            return write_on(&mut conn, chunk, rest, token, &frames).await;
        }
        r
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
    buf.fill(0);
    let end = offset as u64 + size as u64;
    // Pieces received, to refuse overlaps.
    let mut got: Vec<(u64, u64)> = Vec::new();
    loop {
        let frame = match tokio::time::timeout(FRAME_TIMEOUT, conn.reader.next()).await {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                return Err(CsError::Link {
                    addr: conn.addr.clone(),
                    source: e,
                })
            }
            Err(_) => {
                return Err(CsError::Timeout {
                    addr: conn.addr.clone(),
                })
            }
        };
        match frame {
            Frame::Data(h, data) => {
                let (s, e) = (h.offset as u64, h.offset as u64 + data.len() as u64);
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
                if crc32fast::hash(data) != h.crc {
                    return Err(CsError::Crc {
                        addr: conn.addr.clone(),
                        chunk_id: chunk.chunk_id,
                    });
                }
                let rel = (s - offset as u64) as usize;
                buf[rel..rel + data.len()].copy_from_slice(data);
                got.push((s, e));
            }
            Frame::Msg(_) => {
                let msg: FromCs = frame.decode().map_err(|e| CsError::Link {
                    addr: conn.addr.clone(),
                    source: e,
                })?;
                return match msg {
                    FromCs::ReadDone {
                        req_id: got_id,
                        status,
                    } if got_id == req_id => match status {
                        Ok(()) => Ok(()),
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

async fn write_on(
    conn: &mut CsConn,
    chunk: ChunkRef,
    rest: &[CsAddr],
    token: &ChunkToken,
    frames: &[(u32, Bytes)],
) -> Result<(), CsError> {
    conn.send_now(&ToCs::WriteInit {
        chunk,
        chain: rest.to_vec(),
        token: token.clone(),
    })
    .await?;
    match conn.next_msg(FRAME_TIMEOUT).await? {
        FromCs::WriteStatus {
            write_id: 0,
            status,
        } => status.map_err(|err| CsError::Status {
            addr: conn.addr.clone(),
            err,
        })?,
        other => return Err(conn.protocol(format!("expected the chain status, got {other:?}"))),
    }
    let n = frames.len();
    let CsConn {
        addr,
        reader,
        writer,
    } = conn;
    let addr: &str = addr;
    let send = async {
        for (i, (off, data)) in frames.iter().enumerate() {
            let header = DataHeader {
                chunk_id: chunk.chunk_id,
                version: chunk.version,
                req_id: i as u32 + 1,
                offset: *off,
                crc: crc32fast::hash(data),
            };
            writer.send_data(&header, data).await?;
        }
        writer.flush().await
    };
    let recv = async {
        let mut acked = vec![false; n];
        let mut left = n;
        while left > 0 {
            let msg = match tokio::time::timeout(FRAME_TIMEOUT, reader.next_msg::<FromCs>()).await {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    return Err(CsError::Link {
                        addr: addr.to_string(),
                        source: e,
                    })
                }
                Err(_) => {
                    return Err(CsError::Timeout {
                        addr: addr.to_string(),
                    })
                }
            };
            match msg {
                FromCs::WriteStatus { write_id, status } => {
                    status.map_err(|err| CsError::Status {
                        addr: addr.to_string(),
                        err,
                    })?;
                    let slot = (write_id as usize)
                        .checked_sub(1)
                        .and_then(|i| acked.get_mut(i))
                        .filter(|done| !**done)
                        .ok_or_else(|| CsError::Protocol {
                            addr: addr.to_string(),
                            what: format!("unexpected status for write {write_id}"),
                        })?;
                    *slot = true;
                    left -= 1;
                }
                other => {
                    return Err(CsError::Protocol {
                        addr: addr.to_string(),
                        what: format!("expected a write status, got {other:?}"),
                    })
                }
            }
        }
        Ok(())
    };
    let send = async {
        send.await.map_err(|source| CsError::Link {
            addr: addr.to_string(),
            source,
        })
    };
    tokio::try_join!(send, recv)?;
    conn.send_now(&ToCs::WriteFinish).await
}
