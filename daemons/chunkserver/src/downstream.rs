//! This chunkserver's connections to the next servers of its write chains: opening the rest
//! of a chain there, and keeping the connection of an ended session for the next chain to
//! that server (saving a TCP connect and a hello per chain).

use std::time::Duration;

use moose_proto::auth::ChunkToken;
use moose_proto::frame::{FrameReader, FrameWriter, ProtoError};
use moose_proto::handshake::say_hello;
use moose_proto::idle_pool::IdlePool;
use moose_proto::msg::{FromCs, ToCs};
use moose_proto::{ChunkRef, CsAddr, FsError, FsResult, Role};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::dataserver::{CHAIN_TIMEOUT, CONTROL_LIMIT};

/// Idle connections kept per next server.
const MAX_IDLE_PER_SERVER: usize = 4;
/// Idle connections older than this are closed rather than reused: well under the next
/// server's idle timeout, so that a kept connection is rarely one it has closed.
const IDLE_MAX_AGE: Duration = Duration::from_secs(60);

/// A connection to the next server of a chain.
pub struct Downstream {
    pub addr: CsAddr,
    pub reader: FrameReader<OwnedReadHalf>,
    pub writer: FrameWriter<OwnedWriteHalf>,
}

/// Idle connections to next servers, a few per address (one pool per chunkserver process).
pub struct DownstreamPool {
    idle: IdlePool<Downstream>,
}

impl Default for DownstreamPool {
    fn default() -> Self {
        DownstreamPool {
            idle: IdlePool::new(MAX_IDLE_PER_SERVER, IDLE_MAX_AGE),
        }
    }
}

/// Why opening the chain on a connection failed.
enum InitError {
    Link(ProtoError),
    Unexpected(String),
}

impl InitError {
    /// The connection had been closed by the server: worth a try on a new one.
    fn is_stale(&self) -> bool {
        matches!(self, InitError::Link(e) if e.is_disconnect())
    }

    fn describe(self) -> String {
        match self {
            InitError::Link(e) => e.to_string(),
            InitError::Unexpected(what) => what,
        }
    }
}

impl DownstreamPool {
    fn take(&self, addr: &CsAddr) -> Option<Downstream> {
        self.idle.take(addr)
    }

    /// Keeps a connection whose session has ended (the server sent `WriteEnded`, or refused
    /// the chain) for the next chain to the same server.
    pub fn put(&self, conn: Downstream) {
        self.idle.put(&conn.addr.clone(), conn);
    }

    /// Sends `WriteInit` for the rest of the chain on a kept connection to `next` that is
    /// still open, without waiting for the answer: the writes go on behind it, and the
    /// session reads the answer first (see [`crate::dataserver`]). `None` without such a
    /// connection: then [`DownstreamPool::open`].
    pub async fn open_at_once(
        &self,
        next: &CsAddr,
        chunk: ChunkRef,
        rest: &[CsAddr],
        token: ChunkToken,
    ) -> Option<Downstream> {
        let mut conn = self.take(next)?;
        if !still_open(&conn) {
            tracing::debug!("chunkserver {next}: a kept connection was closed; new one");
            return None;
        }
        let init = ToCs::WriteInit {
            chunk,
            chain: rest.to_vec(),
            token,
        };
        conn.writer.send_now(&init).await.ok()?;
        Some(conn)
    }

    /// Opens the rest of the chain (`rest`, after `next`) for `chunk` on `next`, on a kept
    /// connection if there is one (a stale one is tried again on a new connection).
    pub async fn open(
        &self,
        next: &CsAddr,
        chunk: ChunkRef,
        rest: &[CsAddr],
        token: ChunkToken,
    ) -> FsResult<Downstream> {
        let attempt = async {
            if let Some(conn) = self.take(next) {
                match self.init(conn, chunk, rest, token.clone()).await {
                    Err(e) if e.is_stale() => {
                        tracing::debug!("chunkserver {next}: a kept connection was closed; new one")
                    }
                    other => return other,
                }
            }
            let conn = connect(next).await.map_err(InitError::Unexpected)?;
            self.init(conn, chunk, rest, token).await
        };
        let failure = match timeout(CHAIN_TIMEOUT, attempt).await {
            Ok(Ok(Ok(conn))) => return Ok(conn),
            Ok(Ok(Err(status))) => {
                tracing::info!(
                    "write chain for chunk {:016X}: next chunkserver {next} answered: {status}",
                    chunk.chunk_id
                );
                return Err(status);
            }
            Ok(Err(e)) => e.describe(),
            Err(_) => format!("no answer within {} s", CHAIN_TIMEOUT.as_secs()),
        };
        tracing::warn!(
            "write chain for chunk {:016X}: next chunkserver {next}: {failure}; check that it \
             runs and that port {} is reachable from here",
            chunk.chunk_id,
            next.port
        );
        Err(FsError::Io)
    }

    /// Sends `WriteInit` and reads the answer. A refusal leaves the connection idle: it is
    /// kept.
    async fn init(
        &self,
        mut conn: Downstream,
        chunk: ChunkRef,
        rest: &[CsAddr],
        token: ChunkToken,
    ) -> Result<FsResult<Downstream>, InitError> {
        let init = ToCs::WriteInit {
            chunk,
            chain: rest.to_vec(),
            token,
        };
        conn.writer.send_now(&init).await.map_err(InitError::Link)?;
        match conn.reader.next_msg::<FromCs>().await {
            Ok(FromCs::WriteStatus {
                write_id: 0,
                status: Ok(()),
            }) => Ok(Ok(conn)),
            Ok(FromCs::WriteStatus {
                write_id: 0,
                status: Err(status),
            }) => {
                self.put(conn);
                Ok(Err(status))
            }
            Ok(other) => Err(InitError::Unexpected(format!(
                "unexpected answer {other:?}"
            ))),
            Err(e) => Err(InitError::Link(e)),
        }
    }
}

/// Whether an idle connection is still open: nothing to read, not even its end. (A server
/// that closed it has sent its end; one that died without a word is found by the session.)
fn still_open(conn: &Downstream) -> bool {
    let (stream, buffered) = conn.reader.stream();
    if buffered {
        return false;
    }
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A new connection to `next`, past the hello.
async fn connect(next: &CsAddr) -> Result<Downstream, String> {
    let sock = TcpStream::connect((next.host.as_str(), next.port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = sock.set_nodelay(true);
    let (rd, wr) = sock.into_split();
    let mut reader = FrameReader::with_limit(rd, CONTROL_LIMIT);
    let mut writer = FrameWriter::new(wr);
    let peer = format!("chunkserver {next}");
    say_hello(&mut reader, &mut writer, Role::Chunkserver, &peer)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Downstream {
        addr: next.clone(),
        reader,
        writer,
    })
}
