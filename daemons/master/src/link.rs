//! Accepting a connection on one of the master's ports.

use std::net::SocketAddr;

use moose_proto::handshake::{accept_hello, Role};
use moose_proto::{FrameReader, FrameWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub type LinkReader = FrameReader<OwnedReadHalf>;
pub type LinkWriter = FrameWriter<OwnedWriteHalf>;

/// Runs the handshake; a peer whose role does not belong on this port (`port_name`, e.g. "the
/// master's chunkserver port") is refused with a reason and logged.
pub async fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    roles: &[Role],
    port_name: &str,
) -> Option<(Role, LinkReader, LinkWriter)> {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let mut reader = FrameReader::new(r);
    let mut writer = FrameWriter::new(w);
    match accept_hello(&mut reader, &mut writer, roles, port_name).await {
        Ok(role) => Some((role, reader, writer)),
        Err(e) => {
            tracing::warn!("{port_name}: connection from {peer} refused: {e}");
            None
        }
    }
}
