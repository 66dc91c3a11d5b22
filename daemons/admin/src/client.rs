//! An Admin connection to the master's client port over any byte stream: TCP for the tools,
//! an SSH direct-tcpip channel for the console's remote hosts, an in-memory pipe in tests.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use moose_proto::handshake::{say_hello, HandshakeError, Role};
use moose_proto::msg::{ClEnvelope, ClReply, ClRequest, ClResponse, ClusterInfo};
use moose_proto::{FrameReader, FrameWriter, ProtoError};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    // The causes are part of the message, not error sources: an `{e:#}` chain would repeat them.
    #[error("cannot resolve master host '{host}': {cause}")]
    Resolve { host: String, cause: std::io::Error },
    #[error("cannot connect to {peer}: {cause}")]
    Connect { peer: String, cause: std::io::Error },
    #[error("{peer} did not answer within {secs} s")]
    Timeout { peer: String, secs: u64 },
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("{peer}: {cause}")]
    Proto { peer: String, cause: ProtoError },
    #[error("{peer} answered with an error: {reason}")]
    Refused { peer: String, reason: String },
    #[error("{peer} sent an unexpected answer")]
    Unexpected { peer: String },
}

/// An open Admin connection; each query waits at most `timeout` for each of its steps.
pub struct AdminClient<S: AsyncRead + AsyncWrite> {
    peer: String,
    timeout: Duration,
    reader: FrameReader<ReadHalf<S>>,
    writer: FrameWriter<WriteHalf<S>>,
    next_id: u32,
}

impl<S: AsyncRead + AsyncWrite> AdminClient<S> {
    /// Says hello as an admin over `stream`; `peer` names the master in errors.
    pub async fn over(
        stream: S,
        peer: &str,
        timeout: Duration,
    ) -> Result<AdminClient<S>, AdminError> {
        let (r, w) = tokio::io::split(stream);
        let mut reader = FrameReader::new(r);
        let mut writer = FrameWriter::new(w);
        within(
            peer,
            timeout,
            say_hello(&mut reader, &mut writer, Role::Admin, peer),
        )
        .await??;
        Ok(AdminClient {
            peer: peer.to_string(),
            timeout,
            reader,
            writer,
            next_id: 1,
        })
    }

    /// The master's status.
    pub async fn cluster_info(&mut self) -> Result<ClusterInfo, AdminError> {
        let msgid = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let (peer, timeout) = (self.peer.as_str(), self.timeout);
        let proto = |cause| AdminError::Proto {
            peer: peer.to_string(),
            cause,
        };
        let env = ClEnvelope {
            msgid,
            req: ClRequest::ClusterInfo,
        };
        within(peer, timeout, self.writer.send_now(&env))
            .await?
            .map_err(proto)?;
        loop {
            let resp: ClResponse = within(peer, timeout, self.reader.next_msg())
                .await?
                .map_err(proto)?;
            // An answer to an earlier query that timed out.
            if resp.msgid != msgid {
                continue;
            }
            return match resp.result {
                Ok(ClReply::Cluster(info)) => Ok(info),
                Ok(_) => Err(AdminError::Unexpected {
                    peer: peer.to_string(),
                }),
                Err(e) => Err(AdminError::Refused {
                    peer: peer.to_string(),
                    reason: e.to_string(),
                }),
            };
        }
    }
}

/// Resolves `host`, connects to the first of its addresses that answers and says hello.
pub async fn connect(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<AdminClient<TcpStream>, AdminError> {
    let peer = if host.contains(':') {
        format!("master [{host}]:{port}")
    } else {
        format!("master {host}:{port}")
    };
    let resolve = |cause| AdminError::Resolve {
        host: host.to_string(),
        cause,
    };
    let addrs: Vec<SocketAddr> = within(&peer, timeout, tokio::net::lookup_host((host, port)))
        .await?
        .map_err(resolve)?
        .collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match within(&peer, timeout, TcpStream::connect(a)).await? {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return AdminClient::over(stream, &peer, timeout).await;
            }
            Err(e) => last = e,
        }
    }
    Err(AdminError::Connect { peer, cause: last })
}

async fn within<T>(
    peer: &str,
    limit: Duration,
    fut: impl Future<Output = T>,
) -> Result<T, AdminError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| AdminError::Timeout {
            peer: peer.to_string(),
            secs: limit.as_secs().max(1),
        })
}

#[cfg(test)]
mod tests {
    use moose_proto::handshake::accept_hello;
    use moose_proto::msg::ChunkHealth;
    use moose_proto::FsError;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(5);

    fn info() -> ClusterInfo {
        ClusterInfo {
            version: "0.1.0".into(),
            cluster_id: 7,
            metadata_version: 3,
            metadata_synced: 3,
            metadata_syncs_asked: 0,
            total_space: 1 << 30,
            avail_space: 1 << 29,
            files: 1,
            dirs: 1,
            chunks: 1,
            chunkservers: vec![],
            metaloggers: vec![],
            uptime_secs: 3,
            ops_total: 0,
            sessions: 0,
            trash_files: 0,
            trash_bytes: 0,
            health: ChunkHealth::default(),
            quotas: vec![],
        }
    }

    /// A master on the other end of an in-memory pipe: answers each query with `answers`,
    /// after first answering a query id no one asked for.
    async fn fake_master(stream: tokio::io::DuplexStream, answers: Vec<Result<ClReply, FsError>>) {
        let (r, w) = tokio::io::split(stream);
        let (mut reader, mut writer) = (FrameReader::new(r), FrameWriter::new(w));
        accept_hello(&mut reader, &mut writer, &[Role::Admin], "the client port")
            .await
            .unwrap();
        for result in answers {
            let env: ClEnvelope = reader.next_msg().await.unwrap();
            assert_eq!(env.req, ClRequest::ClusterInfo);
            let stale = ClResponse {
                msgid: env.msgid.wrapping_add(100),
                result: Err(FsError::Io),
                dirs: vec![],
            };
            writer.send_now(&stale).await.unwrap();
            let resp = ClResponse {
                msgid: env.msgid,
                result,
                dirs: vec![],
            };
            writer.send_now(&resp).await.unwrap();
        }
    }

    #[tokio::test]
    async fn asks_over_any_stream_and_skips_stale_answers() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let master = tokio::spawn(fake_master(
            theirs,
            vec![
                Ok(ClReply::Cluster(info())),
                Err(FsError::Perm),
                Ok(ClReply::Goal(2)),
            ],
        ));
        let mut c = AdminClient::over(ours, "master test", LIMIT).await.unwrap();
        assert_eq!(c.cluster_info().await.unwrap(), info());
        let refused = c.cluster_info().await.unwrap_err().to_string();
        assert!(
            refused.starts_with("master test answered with an error: "),
            "{refused}"
        );
        let odd = c.cluster_info().await.unwrap_err().to_string();
        assert_eq!(odd, "master test sent an unexpected answer");
        master.await.unwrap();
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let (ours, _theirs) = tokio::io::duplex(1 << 16);
        let e = AdminClient::over(ours, "master quiet", Duration::from_millis(50))
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("master quiet did not answer within 1 s"));
    }

    #[tokio::test]
    async fn a_closed_port_is_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let e = connect("127.0.0.1", port, LIMIT)
            .await
            .err()
            .map(|e| e.to_string());
        let want = format!("cannot connect to master 127.0.0.1:{port}: ");
        assert!(e.as_deref().is_some_and(|e| e.starts_with(&want)), "{e:?}");
    }
}
