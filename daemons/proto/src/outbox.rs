//! The sending side of a connection whose messages are written by whoever sends them: a
//! frame goes to the socket from the calling thread (`try_write`) while nothing waits before
//! it, and only what the socket does not take at once is left to the connection's writer
//! task. A message then costs no hand-off to another task, which on a busy two-core machine
//! is a thread wake-up per message.
//!
//! The system call is made outside the lock: one sender at a time writes, and what others
//! queue meanwhile it writes too before it leaves. A sender never waits for another's write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

use crate::frame::append_msg_frame;
use crate::ProtoError;

/// A connection's sending side; clones share it.
#[derive(Clone)]
pub struct Outbox {
    sock: Arc<OwnedWriteHalf>,
    state: Arc<Mutex<State>>,
    /// Wakes the writer task: bytes are left over, or a write failed.
    wake: Arc<Notify>,
}

struct State {
    /// Frames (or the end of one) not written yet.
    queued: Vec<u8>,
    /// A sender is writing bytes it took from `queued`: the others only queue theirs.
    writing: bool,
    /// The buffer the last writer gave back, for the next to take (no allocation per write).
    spare: Vec<u8>,
    /// The error of the last write: the writer task ends the connection with it.
    failed: Option<std::io::Error>,
    last_sent: Instant,
    /// Queued bytes wait for [`Outbox::release`] (or the next sender), not for the socket.
    held: bool,
    /// The writer task was told to write held bytes within [`SOON`] (see
    /// [`Outbox::release_soon`]).
    soon: bool,
}

/// The longest a message released with [`Outbox::release_soon`] waits for another to go with.
pub const SOON: Duration = Duration::from_millis(2);

/// Queued bytes that [`Outbox::release_soon`] writes at once: the peer then works on them
/// while the sender goes on making more, rather than on all of them when the sender next
/// waits for it (an `rm -rf` that makes 200 unlinks in 2 ms, then an `rmdir`).
const SOON_BYTES: usize = 2048;

impl State {
    /// Takes the queued bytes for the caller to write, unless another sender is writing.
    fn take_for_writing(&mut self) -> Option<Vec<u8>> {
        if self.writing || self.queued.is_empty() || self.failed.is_some() {
            return None;
        }
        self.writing = true;
        self.held = false;
        let spare = std::mem::take(&mut self.spare);
        Some(std::mem::replace(&mut self.queued, spare))
    }
}

/// How a sender's write ended.
enum Wrote {
    /// Everything queued is on its way.
    All,
    /// The socket is full: the rest waits for the writer task.
    Blocked,
    Failed,
}

impl Outbox {
    pub fn new(sock: OwnedWriteHalf) -> Outbox {
        Outbox {
            sock: Arc::new(sock),
            state: Arc::new(Mutex::new(State {
                queued: Vec::new(),
                writing: false,
                spare: Vec::new(),
                failed: None,
                last_sent: Instant::now(),
                held: false,
                soon: false,
            })),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Queues `msg` and, unless earlier bytes are still waiting for the socket, writes it now.
    /// An error here is one of encoding (the message is not queued); a failed write ends the
    /// writer task instead.
    pub fn push<T: Serialize>(&self, msg: &T) -> Result<(), ProtoError> {
        let taken = {
            let mut st = self.state.lock();
            // Bytes left queued and not held wait for the socket: the writer task sends them
            // and what follows them.
            let write_now = st.queued.is_empty() || st.held;
            append_msg_frame(&mut st.queued, msg)?;
            if write_now {
                st.take_for_writing()
            } else {
                None
            }
        };
        if let Some(bytes) = taken {
            self.write_taken(bytes);
        }
        Ok(())
    }

    /// Queues `msg` in its place after everything sent before, but writes it only at
    /// [`Outbox::release`], or with the next message pushed: the sender answers first whoever
    /// waits for it, and pays for the write after.
    pub fn push_held<T: Serialize>(&self, msg: &T) -> Result<(), ProtoError> {
        let mut st = self.state.lock();
        append_msg_frame(&mut st.queued, msg)?;
        st.held = true;
        Ok(())
    }

    /// Has held bytes (messages nobody waits on the answer to) written with the next message
    /// pushed, or by the writer task within [`SOON`]: one write and one wake-up of the peer
    /// for all the messages of that time. Once they fill a batch ([`SOON_BYTES`]) they are
    /// written now, so that the peer works on them while the sender goes on.
    pub fn release_soon(&self) {
        let (arm, taken) = {
            let mut st = self.state.lock();
            if !st.held {
                return;
            }
            if st.queued.len() >= SOON_BYTES {
                (false, st.take_for_writing())
            } else {
                (!std::mem::replace(&mut st.soon, true), None)
            }
        };
        if let Some(bytes) = taken {
            self.write_taken(bytes);
        }
        if arm {
            self.wake.notify_one();
        }
    }

    /// Writes what [`Outbox::push_held`] queued, unless another sender did or does.
    pub fn release(&self) {
        let taken = {
            let mut st = self.state.lock();
            if st.held {
                st.take_for_writing()
            } else {
                None
            }
        };
        if let Some(bytes) = taken {
            self.write_taken(bytes);
        }
    }

    /// Writes `bytes` taken from the queue, then whatever was queued meanwhile, until
    /// nothing is left or the socket would block (the writer task then goes on).
    fn write_taken(&self, bytes: Vec<u8>) {
        if let Wrote::Blocked | Wrote::Failed = self.write_until_blocked(bytes) {
            self.wake.notify_one();
        }
    }

    fn write_until_blocked(&self, mut bytes: Vec<u8>) -> Wrote {
        loop {
            let mut done = 0;
            let mut failed = None;
            while done < bytes.len() {
                match self.sock.try_write(&bytes[done..]) {
                    Ok(0) => failed = Some(std::io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        done += n;
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => failed = Some(e),
                }
                break;
            }
            let mut st = self.state.lock();
            if done < bytes.len() {
                // What is left goes back before what others queued meanwhile.
                bytes.drain(..done);
                bytes.append(&mut st.queued);
                st.queued = bytes;
                st.writing = false;
                let blocked = failed.is_none();
                st.failed = st.failed.take().or(failed);
                return if blocked {
                    Wrote::Blocked
                } else {
                    Wrote::Failed
                };
            }
            st.last_sent = Instant::now();
            bytes.clear();
            if st.queued.is_empty() {
                st.spare = bytes;
                st.writing = false;
                return Wrote::All;
            }
            st.held = false;
            std::mem::swap(&mut bytes, &mut st.queued);
        }
    }
}

/// The connection's writer task: writes what senders left queued once the socket takes
/// more, sends `keepalive`'s message when nothing went out for its time, and ends with the
/// error of a failed write.
pub async fn write_loop<K: Serialize>(
    out: Outbox,
    keepalive: Option<(Duration, &K)>,
) -> Result<(), ProtoError> {
    // Without a keep-alive the task only wakes when told to.
    let period = keepalive.map_or(Duration::from_secs(3600), |(every, _)| every);
    loop {
        let _ = tokio::time::timeout(period, out.wake.notified()).await;
        if out.state.lock().soon {
            // Whatever is sent meanwhile takes the waiting messages along.
            tokio::time::sleep(SOON).await;
            out.state.lock().soon = false;
        }
        if let Some((every, msg)) = keepalive {
            let idle = {
                let st = out.state.lock();
                st.queued.is_empty() && !st.writing && st.last_sent.elapsed() >= every
            };
            if idle {
                out.push(msg)?;
            }
        }
        write_queued(&out).await?;
    }
}

/// Writes everything queued (before a connection is closed).
pub async fn drain(out: &Outbox) -> Result<(), ProtoError> {
    loop {
        write_queued(out).await?;
        let all_written = {
            let st = out.state.lock();
            st.queued.is_empty() && !st.writing
        };
        if all_written {
            return Ok(());
        }
        // Another sender is writing: its write is a system call away from done.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn write_queued(out: &Outbox) -> Result<(), ProtoError> {
    loop {
        let taken = {
            let mut st = out.state.lock();
            if let Some(e) = st.failed.take() {
                return Err(e.into());
            }
            if st.writing {
                // The sender writing now wakes this task if the socket fills up.
                return Ok(());
            }
            match st.take_for_writing() {
                Some(bytes) => bytes,
                None => return Ok(()),
            }
        };
        match out.write_until_blocked(taken) {
            Wrote::All => return Ok(()),
            Wrote::Failed => {}
            Wrote::Blocked => out.sock.writable().await?,
        }
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
    async fn outbox_and_peer() -> (Outbox, TcpStream) {
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
        (Outbox::new(w), peer)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_the_socket_does_not_take_at_once_goes_out_in_order_from_the_writer_task() {
        let (out, peer) = outbox_and_peer().await;
        let writer = tokio::spawn(write_loop(out.clone(), NO_KEEPALIVE));
        // 4 MiB while nobody reads: far more than the socket buffers take.
        for id in 1..=64 {
            out.push(&big(id)).unwrap();
        }
        assert!(
            !out.state.lock().queued.is_empty(),
            "the socket took 4 MiB at once"
        );
        let mut reader = FrameReader::new(peer);
        for id in 1..=64 {
            let got: Big = reader.next_msg().await.unwrap();
            assert_eq!(got.id, id);
            assert_eq!(got.body, big(id).body);
        }
        assert!(out.state.lock().queued.is_empty());
        writer.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_message_goes_out_at_its_release_or_with_the_next_in_its_order() {
        let (out, peer) = outbox_and_peer().await;
        let small = |id| Big { id, body: vec![] };
        out.push_held(&small(1)).unwrap();
        assert!(!out.state.lock().queued.is_empty(), "held, not written");
        out.release();
        assert!(out.state.lock().queued.is_empty(), "written at its release");
        out.push_held(&small(2)).unwrap();
        out.push(&small(3)).unwrap();
        assert!(
            out.state.lock().queued.is_empty(),
            "written with the next message"
        );
        out.release();
        let mut reader = FrameReader::new(peer);
        for id in 1..=3 {
            let got: Big = reader.next_msg().await.unwrap();
            assert_eq!(got.id, id);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_released_soon_go_out_at_once_when_they_fill_a_batch() {
        let (out, peer) = outbox_and_peer().await;
        // No writer task: what is written here was written by the pushes themselves.
        let msg = |id| Big {
            id,
            body: vec![7; 200],
        };
        let mut pushed = 0u32;
        while !out.state.lock().queued.is_empty() || pushed == 0 {
            assert!(
                (pushed as usize) * 200 < 2 * SOON_BYTES,
                "a full batch stayed queued"
            );
            pushed += 1;
            out.push_held(&msg(pushed)).unwrap();
            out.release_soon();
        }
        assert!(pushed > 1, "one small message waits for company");
        let mut reader = FrameReader::new(peer);
        for id in 1..=pushed {
            let got: Big = reader.next_msg().await.unwrap();
            assert_eq!(got.id, id);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_released_soon_goes_with_the_next_or_from_the_writer_task() {
        let (out, peer) = outbox_and_peer().await;
        let writer = tokio::spawn(write_loop(out.clone(), NO_KEEPALIVE));
        let small = |id| Big { id, body: vec![] };
        out.push_held(&small(1)).unwrap();
        out.release_soon();
        assert!(!out.state.lock().queued.is_empty(), "waits for company");
        out.push(&small(2)).unwrap();
        assert!(
            out.state.lock().queued.is_empty(),
            "written with the next message"
        );
        // Alone, it goes out from the writer task.
        for id in [3, 4] {
            out.push_held(&small(id)).unwrap();
            out.release_soon();
        }
        let mut reader = FrameReader::new(peer);
        for id in 1..=4 {
            let got: Big = tokio::time::timeout(Duration::from_secs(10), reader.next_msg())
                .await
                .expect("written within SOON")
                .unwrap();
            assert_eq!(got.id, id);
        }
        assert!(
            !out.state.lock().soon,
            "the writer task is armed again by the next"
        );
        writer.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_to_a_closed_connection_ends_the_writer_task_with_the_error() {
        let (out, peer) = outbox_and_peer().await;
        let writer = tokio::spawn(write_loop(out.clone(), NO_KEEPALIVE));
        drop(peer);
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            for id in 1.. {
                out.push(&big(id)).unwrap();
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn senders_on_many_threads_never_mix_their_frames_and_keep_their_order() {
        let (out, peer) = outbox_and_peer().await;
        let writer = tokio::spawn(write_loop(out.clone(), NO_KEEPALIVE));
        const THREADS: u32 = 4;
        const EACH: u32 = 200;
        let reading = tokio::spawn(async move {
            let mut reader = FrameReader::new(peer);
            let mut next = [0u32; THREADS as usize];
            for _ in 0..THREADS * EACH {
                let got: Big = reader.next_msg().await.unwrap();
                let (thread, n) = (got.id / 1000, got.id % 1000);
                assert_eq!(
                    n, next[thread as usize],
                    "thread {thread}'s messages out of order"
                );
                assert_eq!(got.body, vec![got.id as u8; got.body.len()]);
                next[thread as usize] += 1;
            }
        });
        let senders: Vec<_> = (0..THREADS)
            .map(|thread| {
                let out = out.clone();
                std::thread::spawn(move || {
                    for n in 0..EACH {
                        let id = thread * 1000 + n;
                        // Sizes from a few bytes to more than the socket takes at once.
                        let msg = Big {
                            id,
                            body: vec![id as u8; (n as usize * 331) % 40_000],
                        };
                        if n % 3 == 0 {
                            out.push_held(&msg).unwrap();
                            out.release();
                        } else {
                            out.push(&msg).unwrap();
                        }
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        tokio::time::timeout(Duration::from_secs(30), reading)
            .await
            .expect("every message arrived")
            .unwrap();
        writer.abort();
    }
}
