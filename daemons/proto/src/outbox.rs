//! The sending side of a connection whose messages are written by whoever sends them: a
//! frame goes to the socket from the calling thread (`try_write`) while nothing waits before
//! it, and only what the socket does not take at once is left to the connection's writer
//! task. A message then costs no hand-off to another task, which on a busy two-core machine
//! is a thread wake-up per message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

use crate::frame::append_msg_frame;
use crate::ProtoError;

pub struct Outbox {
    sock: Arc<OwnedWriteHalf>,
    /// Frames (or the end of one) the socket did not take yet.
    queued: Vec<u8>,
    /// The error of the last write: the writer task ends the connection with it.
    failed: Option<std::io::Error>,
    /// Wakes the writer task: bytes are left over, or a write failed.
    wake: Arc<Notify>,
    last_sent: Instant,
    /// Queued bytes wait for [`Outbox::release`] (or the next sender), not for the socket.
    held: bool,
}

impl Outbox {
    pub fn new(sock: OwnedWriteHalf) -> Outbox {
        Outbox {
            sock: Arc::new(sock),
            queued: Vec::new(),
            failed: None,
            wake: Arc::new(Notify::new()),
            last_sent: Instant::now(),
            held: false,
        }
    }

    /// Queues `msg` and, unless earlier bytes are still waiting for the socket, writes it now.
    /// An error here is one of encoding (the message is not queued); a failed write ends the
    /// writer task instead.
    pub fn push<T: Serialize>(&mut self, msg: &T) -> Result<(), ProtoError> {
        let write_now = self.queued.is_empty() || std::mem::take(&mut self.held);
        append_msg_frame(&mut self.queued, msg)?;
        if write_now && !self.write_some() {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Queues `msg` in its place after everything sent before, but writes it only at
    /// [`Outbox::release`], or with the next message pushed: the sender answers first whoever
    /// waits for it, and pays for the write after.
    pub fn push_held<T: Serialize>(&mut self, msg: &T) -> Result<(), ProtoError> {
        append_msg_frame(&mut self.queued, msg)?;
        self.held = true;
        Ok(())
    }

    /// Writes what [`Outbox::push_held`] queued, unless another sender did.
    pub fn release(&mut self) {
        if std::mem::take(&mut self.held) && !self.queued.is_empty() && !self.write_some() {
            self.wake.notify_one();
        }
    }

    /// Writes queued bytes until the socket would block or fails; true when none are left.
    fn write_some(&mut self) -> bool {
        while !self.queued.is_empty() && self.failed.is_none() {
            match self.sock.try_write(&self.queued) {
                Ok(0) => self.failed = Some(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.queued.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) => self.failed = Some(e),
            }
        }
        if self.failed.is_some() {
            return false;
        }
        self.last_sent = Instant::now();
        true
    }
}

/// The connection's writer task: writes what senders left queued once the socket takes
/// more, sends `keepalive`'s message when nothing went out for its time, and ends with the
/// error of a failed write.
pub async fn write_loop<K: Serialize>(
    out: Arc<Mutex<Outbox>>,
    keepalive: Option<(Duration, &K)>,
) -> Result<(), ProtoError> {
    let (sock, wake) = {
        let o = out.lock();
        (o.sock.clone(), o.wake.clone())
    };
    // Without a keep-alive the task only wakes when told to.
    let period = keepalive.map_or(Duration::from_secs(3600), |(every, _)| every);
    loop {
        let _ = tokio::time::timeout(period, wake.notified()).await;
        if let Some((every, msg)) = keepalive {
            let mut out = out.lock();
            if out.queued.is_empty() && out.last_sent.elapsed() >= every {
                out.push(msg)?;
            }
        }
        write_queued(&out, &sock).await?;
    }
}

/// Writes everything queued (before a connection is closed).
pub async fn drain(out: &Arc<Mutex<Outbox>>) -> Result<(), ProtoError> {
    let sock = out.lock().sock.clone();
    write_queued(out, &sock).await
}

async fn write_queued(out: &Mutex<Outbox>, sock: &OwnedWriteHalf) -> Result<(), ProtoError> {
    loop {
        {
            let mut out = out.lock();
            let all_written = out.write_some();
            if let Some(e) = out.failed.take() {
                return Err(e.into());
            }
            if all_written {
                return Ok(());
            }
        }
        sock.writable().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameReader;
    use serde::Deserialize;
    use tokio::net::TcpStream;

    #[derive(Debug, Serialize, Deserialize)]
    struct Big {
        id: u32,
        body: Vec<u8>,
    }

    const NO_KEEPALIVE: Option<(Duration, &Big)> = None;

    fn big(id: u32) -> Big {
        Big {
            id,
            body: vec![id as u8; 64 * 1024],
        }
    }

    /// A connected pair on loopback with small socket buffers (a socket left to the
    /// system's autotuning takes megabytes at once): our sending side, the peer's socket.
    async fn outbox_and_peer() -> (Arc<Mutex<Outbox>>, TcpStream) {
        const BUFFER: u32 = 16 * 1024;
        let listening = tokio::net::TcpSocket::new_v4().unwrap();
        listening.set_recv_buffer_size(BUFFER).unwrap();
        listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = listening.listen(1).unwrap();
        let connecting = tokio::net::TcpSocket::new_v4().unwrap();
        connecting.set_send_buffer_size(BUFFER).unwrap();
        let ours = connecting
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (peer, _) = listener.accept().await.unwrap();
        let (_, w) = ours.into_split();
        (Arc::new(Mutex::new(Outbox::new(w))), peer)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_the_socket_does_not_take_at_once_goes_out_in_order_from_the_writer_task() {
        let (out, peer) = outbox_and_peer().await;
        let writer = tokio::spawn(write_loop(out.clone(), NO_KEEPALIVE));
        // 4 MiB while nobody reads: far more than the socket buffers take.
        for id in 1..=64 {
            out.lock().push(&big(id)).unwrap();
        }
        assert!(
            !out.lock().queued.is_empty(),
            "the socket took 4 MiB at once"
        );
        let mut reader = FrameReader::new(peer);
        for id in 1..=64 {
            let got: Big = reader.next_msg().await.unwrap();
            assert_eq!(got.id, id);
            assert_eq!(got.body, big(id).body);
        }
        assert!(out.lock().queued.is_empty());
        writer.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_message_goes_out_at_its_release_or_with_the_next_in_its_order() {
        let (out, peer) = outbox_and_peer().await;
        let small = |id| Big { id, body: vec![] };
        out.lock().push_held(&small(1)).unwrap();
        assert!(!out.lock().queued.is_empty(), "held, not written");
        out.lock().release();
        assert!(out.lock().queued.is_empty(), "written at its release");
        out.lock().push_held(&small(2)).unwrap();
        out.lock().push(&small(3)).unwrap();
        assert!(
            out.lock().queued.is_empty(),
            "written with the next message"
        );
        out.lock().release();
        let mut reader = FrameReader::new(peer);
        for id in 1..=3 {
            let got: Big = reader.next_msg().await.unwrap();
            assert_eq!(got.id, id);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_to_a_closed_connection_ends_the_writer_task_with_the_error() {
        let (out, peer) = outbox_and_peer().await;
        let writer = tokio::spawn(write_loop(out.clone(), NO_KEEPALIVE));
        drop(peer);
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            for id in 1.. {
                out.lock().push(&big(id)).unwrap();
                if writer.is_finished() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            writer.await
        })
        .await
        .expect("the writer task noticed the closed connection");
        assert!(matches!(ended, Ok(Err(ProtoError::Io(_)))), "{ended:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_connection_gets_the_keepalive() {
        let (out, peer) = outbox_and_peer().await;
        let nop = Big {
            id: 0,
            body: vec![],
        };
        let writer =
            tokio::spawn(
                async move { write_loop(out, Some((Duration::from_millis(50), &nop))).await },
            );
        let mut reader = FrameReader::new(peer);
        let got: Big = tokio::time::timeout(Duration::from_secs(10), reader.next_msg())
            .await
            .expect("a keep-alive within 10 s")
            .unwrap();
        assert_eq!(got.id, 0);
        writer.abort();
    }
}
