//! Accepting a connection on one of the master's ports: a cap on connections, a time limit
//! for the hello, and refusals logged once per address per minute.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use moose_common::limits::RefusalLog;
use moose_proto::handshake::{accept_hello, Role};
use moose_proto::{FrameReader, FrameWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub type LinkReader = FrameReader<OwnedReadHalf>;
pub type LinkWriter = FrameWriter<OwnedWriteHalf>;

/// Time a peer has from connecting to the end of its hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections open at once on each of the master's ports.
pub const MAX_CONNECTIONS: usize = 4096;

/// Refusals on every port, logged once per address per minute.
pub static REFUSALS: LazyLock<RefusalLog> = LazyLock::new(RefusalLog::default);

/// An accepted connection: the peer's role, the nonce our hello sent (signed by peers that
/// prove the cluster secret) and the framed halves.
pub struct Accepted {
    pub role: Role,
    pub nonce: Vec<u8>,
    pub reader: LinkReader,
    pub writer: LinkWriter,
}

/// Runs the handshake; a peer whose role does not belong on this port (`port_name`, e.g. "the
/// master's chunkserver port") or that does not finish its hello in time is refused and
/// logged.
pub async fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    roles: &[Role],
    port_name: &str,
) -> Option<Accepted> {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let mut reader = FrameReader::new(r);
    let mut writer = FrameWriter::new(w);
    let hello = accept_hello(&mut reader, &mut writer, roles, port_name);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, hello).await {
        Ok(Ok((role, nonce))) => Some(Accepted {
            role,
            nonce,
            reader,
            writer,
        }),
        Ok(Err(e)) => {
            REFUSALS.warn(
                peer.ip(),
                &format!("{port_name}: connection from {peer} refused: {e}"),
            );
            None
        }
        Err(_) => {
            REFUSALS.warn(
                peer.ip(),
                &format!(
                    "{port_name}: connection from {peer} closed: no hello within {} s",
                    HANDSHAKE_TIMEOUT.as_secs()
                ),
            );
            None
        }
    }
}
