//! The first exchange on every connection: who is calling, with which protocol version and
//! for which cluster. A mismatch is refused with a message a person can act on.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::frame::{FrameReader, FrameWriter, ProtoError};

/// "MOOS".
pub const MAGIC: u32 = 0x4D4F_4F53;
/// 2: nonces in the hello, cluster-secret proofs, chunk access tokens.
/// 3: attributes say whether the object has extended attributes.
/// 4: the master sends mounts notices of folders whose names another session changed.
/// 5: the end of a write says whether it is an fdatasync's or an fsync's
///    ([`crate::msg::EndSync`]); opens say whether the kernel keeps a file's pages, and
///    mounts hear of changes to the data of files they have open.
/// 6: mounts answer some changes before the master (`ReserveInodes`, creates with a reserved
///    inode; the registration says whether the export maps the caller's ids).
/// 7: an open that may read says where the file's first chunk lives.
/// 8: `copy_file_range` of whole chunks shares them (`ShareChunks`).
pub const PROTOCOL_VERSION: u16 = 8;
/// Largest hello accepted: a peer cannot make us wait for megabytes before it says who it is.
pub const HELLO_LIMIT: u32 = 4096;

/// The kind of peer that opens a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Chunkserver,
    Client,
    Metalogger,
    /// A status query (console, `moosectl status`): served on the client port.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Chunkserver => "chunkserver",
            Role::Client => "client",
            Role::Metalogger => "metalogger",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub magic: u32,
    pub version: u16,
    pub role: Role,
    pub software: String,
}

impl Hello {
    pub fn new(role: Role) -> Self {
        Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            role,
            software: crate::VERSION.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// `nonce` is fresh for every connection: a peer proving the cluster secret signs it.
    Welcome {
        software: String,
        nonce: Vec<u8>,
    },
    Refused {
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("refused by {peer}: {reason}")]
    Refused { peer: String, reason: String },
    #[error("{peer} did not answer as a MooseFS-style daemon (wrong port or service?)")]
    NotOurs { peer: String },
}

/// Client side: sends our hello and waits for the verdict; returns the peer's software.
pub async fn say_hello<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    role: Role,
    peer: &str,
) -> Result<String, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    Ok(say_hello_nonce(reader, writer, role, peer).await?.0)
}

/// Like [`say_hello`], and also returns the nonce the peer sent (to sign for a proof).
pub async fn say_hello_nonce<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    role: Role,
    peer: &str,
) -> Result<(String, Vec<u8>), HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    writer.send_now(&Hello::new(role)).await?;
    match reader.next_msg::<HelloReply>().await {
        Ok(HelloReply::Welcome { software, nonce }) => Ok((software, nonce)),
        Ok(HelloReply::Refused { reason }) => Err(HandshakeError::Refused {
            peer: peer.to_string(),
            reason,
        }),
        Err(ProtoError::Decode(_))
        | Err(ProtoError::UnknownKind(_))
        | Err(ProtoError::TooLarge { .. }) => Err(HandshakeError::NotOurs {
            peer: peer.to_string(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Server side: reads the peer's hello and accepts it if its role is one this port serves.
/// `port_name` names the port in the refusal ("the chunkserver port 9420"). Returns the role
/// and the nonce sent in the welcome.
pub async fn accept_hello<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    allowed: &[Role],
    port_name: &str,
) -> Result<(Role, Vec<u8>), HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let limit = reader.limit();
    reader.set_limit(HELLO_LIMIT.min(limit));
    let hello = reader.next_msg::<Hello>().await;
    reader.set_limit(limit);
    let hello: Hello = match hello {
        Ok(h) => h,
        Err(ProtoError::Decode(_)) => {
            return Err(HandshakeError::NotOurs {
                peer: "peer".into(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let refuse = |reason: String| HelloReply::Refused { reason };
    let verdict = if hello.magic != MAGIC {
        Err(refuse("not a MooseFS-style peer (bad magic)".into()))
    } else if hello.version != PROTOCOL_VERSION {
        Err(refuse(format!(
            "protocol version {} is not supported here (this daemon speaks {}, software {}); \
             run the same release on every host",
            hello.version,
            PROTOCOL_VERSION,
            crate::VERSION
        )))
    } else if !allowed.contains(&hello.role) {
        Err(refuse(format!(
            "a {} cannot connect to {port_name}; check the port in its configuration",
            hello.role.name()
        )))
    } else {
        Ok(hello.role)
    };
    match verdict {
        Ok(role) => {
            let nonce = crate::auth::random_bytes(crate::auth::NONCE_LEN);
            writer
                .send_now(&HelloReply::Welcome {
                    software: crate::VERSION.to_string(),
                    nonce: nonce.clone(),
                })
                .await?;
            Ok((role, nonce))
        }
        Err(reply) => {
            let reason = match &reply {
                HelloReply::Refused { reason } => reason.clone(),
                HelloReply::Welcome { .. } => String::new(),
            };
            writer.send_now(&reply).await?;
            Err(HandshakeError::Refused {
                peer: "peer".into(),
                reason,
            })
        }
    }
}
