//! Status queries on the master's client port, as tools and the console make them.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::frame::{FrameReader, FrameWriter, ProtoError};
use crate::handshake::{say_hello, HandshakeError, Role};
use crate::msg::{ClEnvelope, ClReply, ClRequest, ClResponse, ClusterInfo};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot resolve master host '{host}': {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("cannot connect to master {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("master {addr} did not answer within {secs} s")]
    Timeout { addr: String, secs: u64 },
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("master {addr} answered: {reason}")]
    Answer { addr: String, reason: String },
}

/// Asks the master at `host:port` for its cluster status.
pub async fn cluster_info(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<ClusterInfo, AdminError> {
    let addr = format!("{host}:{port}");
    let secs = timeout.as_secs().max(1);
    let work = async {
        let target = tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| AdminError::Resolve {
                host: host.to_string(),
                source,
            })?
            .next()
            .ok_or_else(|| AdminError::Resolve {
                host: host.to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            })?;
        let stream = TcpStream::connect(target)
            .await
            .map_err(|source| AdminError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let (r, w) = stream.into_split();
        let mut reader = FrameReader::new(r);
        let mut writer = FrameWriter::new(w);
        say_hello(&mut reader, &mut writer, Role::Admin, &addr).await?;
        writer
            .send_now(&ClEnvelope {
                msgid: 1,
                req: ClRequest::ClusterInfo,
            })
            .await?;
        let resp: ClResponse = reader.next_msg().await?;
        match resp.result {
            Ok(ClReply::Cluster(info)) => Ok(info),
            Ok(other) => Err(AdminError::Answer {
                addr: addr.clone(),
                reason: format!("unexpected reply {other:?}"),
            }),
            Err(e) => Err(AdminError::Answer {
                addr: addr.clone(),
                reason: e.to_string(),
            }),
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(AdminError::Timeout { addr, secs }),
    }
}
