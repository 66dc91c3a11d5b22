//! Asking the master for its status: an Admin connection to its client port, one
//! `ClusterInfo` request per query.

use std::time::Duration;

use moose_proto::handshake::{say_hello, HandshakeError};
use moose_proto::msg::{ClEnvelope, ClReply, ClRequest, ClResponse, ClusterInfo};
use moose_proto::{FrameReader, FrameWriter, ProtoError, Role};
use tokio::io::{ReadHalf, WriteHalf};

use crate::host::{Host, HostError, Stream};

/// How long one query may take (connection, handshake and answer).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("{0}")]
    Host(HostError),
    #[error("cannot connect to {peer}: {cause}")]
    Connect { peer: String, cause: std::io::Error },
    #[error("{0}")]
    Handshake(HandshakeError),
    #[error("{peer}: {cause}")]
    Proto { peer: String, cause: ProtoError },
    #[error("{peer} answered with an error: {reason}")]
    Refused { peer: String, reason: String },
    #[error("{peer} sent an unexpected answer")]
    Unexpected { peer: String },
    #[error("{peer} did not answer within {} s", .secs)]
    Timeout { peer: String, secs: u64 },
}

type Reader = FrameReader<ReadHalf<Box<dyn Stream>>>;
type Writer = FrameWriter<WriteHalf<Box<dyn Stream>>>;

/// An open Admin connection to a master.
pub struct MasterConn {
    peer: String,
    reader: Reader,
    writer: Writer,
    next_id: u32,
}

impl MasterConn {
    /// Opens an Admin connection over `stream`; `peer` names the master in messages.
    pub async fn over(stream: Box<dyn Stream>, peer: &str) -> Result<MasterConn, MasterError> {
        let (r, w) = tokio::io::split(stream);
        let mut reader = FrameReader::new(r);
        let mut writer = FrameWriter::new(w);
        with_timeout(peer, say_hello(&mut reader, &mut writer, Role::Admin, peer))
            .await?
            .map_err(MasterError::Handshake)?;
        Ok(MasterConn {
            peer: peer.to_string(),
            reader,
            writer,
            next_id: 1,
        })
    }

    /// Opens an Admin connection to the master's client port through its host.
    pub async fn through(
        host: &dyn Host,
        port: u16,
        peer: &str,
    ) -> Result<MasterConn, MasterError> {
        let stream = host.connect(port).await.map_err(MasterError::Host)?;
        MasterConn::over(stream, peer).await
    }

    /// Opens an Admin connection to `address:port` from this machine (`status -H -P`).
    pub async fn direct(address: &str, port: u16) -> Result<MasterConn, MasterError> {
        let peer = format!("{address}:{port}");
        let stream = with_timeout(&peer, tokio::net::TcpStream::connect((address, port)))
            .await?
            .map_err(|cause| MasterError::Connect {
                peer: peer.clone(),
                cause,
            })?;
        MasterConn::over(Box::new(stream), &peer).await
    }

    /// The master's status.
    pub async fn cluster_info(&mut self) -> Result<ClusterInfo, MasterError> {
        let msgid = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let peer = self.peer.clone();
        let proto = |cause| MasterError::Proto {
            peer: peer.clone(),
            cause,
        };
        let env = ClEnvelope {
            msgid,
            req: ClRequest::ClusterInfo,
        };
        with_timeout(&self.peer, self.writer.send_now(&env))
            .await?
            .map_err(proto)?;
        loop {
            let resp: ClResponse = with_timeout(&self.peer, self.reader.next_msg())
                .await?
                .map_err(proto)?;
            if resp.msgid != msgid {
                continue;
            }
            return match resp.result {
                Ok(ClReply::Cluster(info)) => Ok(info),
                Ok(_) => Err(MasterError::Unexpected { peer }),
                Err(e) => Err(MasterError::Refused {
                    peer,
                    reason: e.to_string(),
                }),
            };
        }
    }
}

async fn with_timeout<T>(
    peer: &str,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, MasterError> {
    tokio::time::timeout(QUERY_TIMEOUT, fut)
        .await
        .map_err(|_| MasterError::Timeout {
            peer: peer.to_string(),
            secs: QUERY_TIMEOUT.as_secs(),
        })
}

/// A master connection that reconnects when a query fails.
pub struct MasterLink {
    port: u16,
    peer: String,
    conn: Option<MasterConn>,
}

impl MasterLink {
    pub fn new(address: &str, port: u16) -> MasterLink {
        MasterLink {
            port,
            peer: format!("master {address}:{port}"),
            conn: None,
        }
    }

    /// Asks the master through `host`, reusing the open connection when there is one.
    pub async fn query(&mut self, host: &dyn Host) -> Result<ClusterInfo, MasterError> {
        if let Some(c) = self.conn.as_mut() {
            match c.cluster_info().await {
                Ok(info) => return Ok(info),
                Err(_) => self.conn = None,
            }
        }
        let mut c = MasterConn::through(host, self.port, &self.peer).await?;
        let info = c.cluster_info().await?;
        self.conn = Some(c);
        Ok(info)
    }
}
