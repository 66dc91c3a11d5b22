//! Chunk files handed to mounts on this host (see `moose_proto::local_read`): a mount sends a
//! chunk and its read token over an abstract Unix socket and gets a read-only descriptor of
//! the chunk's file, which it reads itself. The token is checked as on the data port; the
//! descriptor is a new read-only open of the file, so the mount can never write it.

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::sync::Arc;
use std::time::Duration;

use moose_proto::auth::TokenOp;
use moose_proto::frame;
use moose_proto::local_read::{socket_name, Answer, OpenChunk, REQUEST_LIMIT};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use crate::store::{blocking, Store};

/// Mounts served at once; more wait for their turn to be accepted.
const MAX_CONNECTIONS: usize = 64;
/// A connection idle this long is closed (a mount connects anew when it needs a file).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The socket for the data port on `host:port` (`host` as in `CSSERV_LISTEN_HOST`, `*` for
/// every address). `None`, with a warning, when it cannot be made: reads then go through the
/// data port only.
pub fn listen(host: &str, port: u16) -> Option<UnixListener> {
    let name = socket_name(host, port);
    let made = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .and_then(|addr| std::os::unix::net::UnixListener::bind_addr(&addr))
        .and_then(|l| {
            l.set_nonblocking(true)?;
            UnixListener::from_std(l)
        });
    match made {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(
                "cannot offer chunk files to mounts on this host (abstract socket '{name}': {e}); \
                 they read through the data port"
            );
            None
        }
    }
}

/// Serves the mounts that connect to `listener`.
pub async fn serve(listener: UnixListener, store: Arc<Store>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    if let Err(e) = serve_one(stream, store).await {
                        tracing::debug!("chunk file socket: {e}");
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!("chunk file socket: cannot accept a mount's connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answers one mount's requests until it hangs up or stays idle.
async fn serve_one(mut stream: UnixStream, store: Arc<Store>) -> io::Result<()> {
    let mut body = Vec::with_capacity(256);
    loop {
        let len = match timeout(IDLE_TIMEOUT, stream.read_u32()).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r? as usize,
        };
        if len > REQUEST_LIMIT {
            send(&stream, Answer::BadRequest, None).await?;
            return Ok(());
        }
        body.resize(len, 0);
        match timeout(IDLE_TIMEOUT, stream.read_exact(&mut body)).await {
            Err(_) => return Ok(()),
            Ok(read) => read?,
        };
        let (answer, file) = match frame::decode::<OpenChunk>(&body) {
            Ok(req) => open(&store, req).await,
            Err(_) => (Answer::BadRequest, None),
        };
        send(&stream, answer, file.as_ref().map(|f| f.as_raw_fd())).await?;
    }
}

/// Checks the token and opens the chunk's file read-only.
async fn open(store: &Arc<Store>, req: OpenChunk) -> (Answer, Option<File>) {
    let OpenChunk { chunk, token } = req;
    if let Err(e) = store.access.check(&token, chunk, TokenOp::Read, &[]) {
        tracing::debug!(
            "chunk file socket: chunk {:016X} v{} refused: {e}",
            chunk.chunk_id,
            chunk.version
        );
        return (Answer::Refused, None);
    }
    let store = Arc::clone(store);
    let opened = blocking(move || {
        let handle = store.open(chunk)?;
        // A new open file description: the cached one may write, this one may not.
        File::open(format!("/proc/self/fd/{}", handle.file.as_raw_fd()))
            .map_err(|_| moose_proto::FsError::Io)
    })
    .await;
    match opened {
        Ok(f) => (Answer::Opened, Some(f)),
        Err(_) => (Answer::NoChunk, None),
    }
}

/// Sends the answer's byte, with the descriptor `fd` when there is one.
async fn send(stream: &UnixStream, answer: Answer, fd: Option<RawFd>) -> io::Result<()> {
    let byte = [answer as u8];
    let fds: Vec<RawFd> = fd.into_iter().collect();
    loop {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            let cmsgs: &[ControlMessage] = if fds.is_empty() {
                &[]
            } else {
                &[ControlMessage::ScmRights(&fds)]
            };
            sendmsg::<UnixAddr>(
                stream.as_raw_fd(),
                &[IoSlice::new(&byte)],
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(io::Error::from)
        });
        match sent {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicU16, Ordering};

    use moose_proto::auth::ChunkToken;
    use moose_proto::local_read::{ask, DATA_OFFSET};
    use moose_proto::ChunkRef;

    use crate::access::tests::token;
    use crate::chunkfile::new_block;
    use crate::store::tests::test_store;

    const C: ChunkRef = ChunkRef {
        chunk_id: 0x77,
        version: 3,
    };

    /// A store holding chunk `C` with `data` at its start, served on a socket of its own;
    /// returns the store, its folder and the socket's "port".
    async fn served(data: &[u8]) -> (Arc<Store>, tempfile::TempDir, u16) {
        static NEXT: AtomicU16 = AtomicU16::new(1);
        let dir = tempfile::tempdir().unwrap();
        let (store, _events) = test_store(dir.path());
        store.create(C).unwrap();
        let h = store.open(C).unwrap();
        store
            .write(&h, 0, data, crc32fast::hash(data), &mut new_block())
            .unwrap();
        let port = NEXT.fetch_add(1, Ordering::Relaxed);
        let host = format!("test {}", std::process::id());
        let listener = listen(&host, port).expect("an abstract socket");
        tokio::spawn(serve(listener, Arc::clone(&store)));
        (store, dir, port)
    }

    /// Asks the test socket `port` for `chunk` with `token`, off the async threads.
    async fn ask_for(
        port: u16,
        chunk: ChunkRef,
        token: ChunkToken,
    ) -> (Answer, Option<std::os::fd::OwnedFd>) {
        tokio::task::spawn_blocking(move || {
            let name = socket_name(&format!("test {}", std::process::id()), port);
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let mut s = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
            ask(&mut s, chunk, &token).unwrap()
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_token_holder_gets_the_chunk_file_read_only() {
        let data = b"local bytes".repeat(100);
        let (_store, _dir, port) = served(&data).await;
        let (answer, fd) = ask_for(port, C, token(C, false, &[])).await;
        assert_eq!(answer, Answer::Opened);
        let file = File::from(fd.expect("a descriptor with the answer"));
        let mut got = vec![0u8; data.len()];
        file.read_exact_at(&mut got, DATA_OFFSET).unwrap();
        assert_eq!(got, data);
        assert!(
            file.write_at(b"x", DATA_OFFSET).is_err(),
            "the mount must not be able to write the chunk"
        );
    }

    #[tokio::test]
    async fn a_request_that_cannot_be_read_is_answered_as_such() {
        use std::io::{Read, Write};
        let (_store, _dir, port) = served(b"x").await;
        let answers = tokio::task::spawn_blocking(move || {
            let name = socket_name(&format!("test {}", std::process::id()), port);
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let mut answers = Vec::new();
            for request in [vec![0, 0, 0, 3, 0xff, 0xff, 0xff], vec![0xff; 4]] {
                let mut s = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
                s.write_all(&request).unwrap();
                let mut byte = [9u8; 1];
                s.read_exact(&mut byte).unwrap();
                answers.push(Answer::from_byte(byte[0]));
            }
            answers
        })
        .await
        .unwrap();
        assert_eq!(
            answers,
            [Some(Answer::BadRequest), Some(Answer::BadRequest)],
            "garbage, then a length past the limit"
        );
    }

    #[tokio::test]
    async fn no_file_without_a_valid_token_or_for_another_version() {
        let (_store, _dir, port) = served(b"secret").await;
        let mut forged = token(C, false, &[]);
        forged.mac[0] ^= 1;
        assert!(matches!(
            ask_for(port, C, forged).await,
            (Answer::Refused, None)
        ));
        let write_token = token(C, true, &[]);
        assert!(matches!(
            ask_for(port, C, write_token).await.0,
            Answer::Refused
        ));
        let other = ChunkRef {
            version: C.version + 1,
            ..C
        };
        assert!(matches!(
            ask_for(port, other, token(other, false, &[])).await,
            (Answer::NoChunk, None)
        ));
    }
}
