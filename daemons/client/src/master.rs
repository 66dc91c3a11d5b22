//! The connection to the master: many requests in flight on one TCP connection, answers
//! matched by `msgid`, and (for a mount) reconnection with a new registration and the
//! re-sending of every unanswered request.
//!
//! A request is written to the socket by the thread that makes it (a FUSE thread, most of
//! the time), so nothing else has to be woken on its way to the master; only what the socket
//! does not take at once is left to the connection's writer task.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::{Mutex, MutexGuard};
use std::time::Duration;

use moose_common::exports::password_proof;
use moose_proto::handshake::{say_hello, HandshakeError};
use moose_proto::msg::{
    ClEnvelope, ClReply, ClRequest, ClResponse, Refusal, RegisterReply, RegisterRequest,
    NOTICE_MSGID,
};
use moose_proto::outbox::Outbox;
use moose_proto::{ChunkRef, CsAddr, FrameReader, FrameWriter, FsError, ProtoError, Role};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

use crate::change_counts::ChangeCounts;
use crate::known::KnownFolders;
use crate::stale_pages::StalePages;

/// How long one connection attempt (resolve, connect, handshake, registration) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);
/// `msgid` used by the registration exchange and keep-alives, never by other requests.
const REGISTER_MSGID: u32 = 0;
/// Length of the master's password challenge.
const CHALLENGE_LEN: usize = 32;
/// A `Nop` goes out when nothing else did for this long (the master drops connections that
/// stay silent for a minute).
const KEEPALIVE: Duration = Duration::from_secs(10);

/// Who we are to the master and which folder we mount.
#[derive(Debug, Clone)]
pub struct SessionParams {
    pub host: String,
    pub port: u16,
    pub subdir: String,
    pub mount_point: String,
    pub password: Option<String>,
    /// A tool session (moose-tool) rather than a mount.
    pub tool: bool,
}

impl SessionParams {
    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve master host '{host}': {cause}")]
    Resolve { host: String, cause: std::io::Error },
    #[error("master host '{0}' has no address")]
    NoAddress(String),
    #[error("cannot connect to master {addr}: {cause}")]
    Connect { addr: String, cause: std::io::Error },
    #[error("master {addr} did not answer within {} s", CONNECT_TIMEOUT.as_secs())]
    Timeout { addr: String },
    #[error("handshake with master {addr} failed: {cause}")]
    Handshake { addr: String, cause: HandshakeError },
    #[error("master {addr} refused the session: {reason}")]
    Refused { addr: String, reason: String },
    #[error("master {addr} rejected the registration: {cause}")]
    Rejected { addr: String, cause: FsError },
    #[error("connection to master {addr} failed: {cause}")]
    Link { addr: String, cause: ProtoError },
    #[error("master {addr} answered the registration with an unexpected message")]
    Unexpected { addr: String },
    #[error("master {addr}: the master sent a challenge of {len} bytes, expected {CHALLENGE_LEN}")]
    Challenge { addr: String, len: usize },
}

/// Why a request got no answer from the file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("the connection to the master was lost")]
    Disconnected,
    #[error("the master answered with an unexpected message")]
    Unexpected,
}

impl CallError {
    /// The errno a FUSE reply carries for this error.
    pub fn errno(self) -> i32 {
        match self {
            CallError::Fs(e) => e.errno(),
            CallError::Disconnected | CallError::Unexpected => libc::EIO,
        }
    }
}

type Reply = Result<ClReply, CallError>;

struct Pending {
    env: ClEnvelope,
    waiter: Waiter,
    /// When it was sent, for the folders it may make known (see [`KnownFolders::now`]).
    sent: u64,
    /// Answered to the kernel before it was sent (see [`MasterClient::start_ahead`]).
    ahead: bool,
}

/// Who gets the answer to a request.
enum Waiter {
    /// A task awaiting a [`Call`].
    Task(oneshot::Sender<Reply>),
    /// Run by the connection's reader as the answer arrives (see [`MasterClient::start_then`]).
    Callback(Box<dyn FnOnce(Reply) + Send>),
}

impl Waiter {
    /// Hands over the answer; never call it with the state locked (a callback may send).
    fn answer(self, r: Reply) {
        match self {
            Waiter::Task(tx) => {
                let _ = tx.send(r);
            }
            Waiter::Callback(then) => then(r),
        }
    }
}

struct State {
    pending: HashMap<u32, Pending>,
    /// The current connection's sending side; `None` while disconnected.
    out: Option<Outbox>,
    next_id: u32,
    /// No more requests: the connection is gone and will not come back.
    closed: bool,
}

struct Inner {
    params: SessionParams,
    reconnect: bool,
    state: Mutex<State>,
    session: watch::Sender<Arc<RegisterReply>>,
    /// Inodes open here: access mode (O_RDONLY/O_WRONLY/O_RDWR) and the caller of an open,
    /// to open them again in a new session before anything else is sent.
    opened: Mutex<HashMap<moose_proto::Inode, (i32, moose_proto::Cred)>>,
    /// Folder attributes that came with answers to changes.
    folders: crate::folders::FolderAttrs,
    /// Folders whose names are known here.
    known: KnownFolders,
    /// Files whose pages in the kernel's cache other sessions made stale.
    stale: Arc<StalePages>,
    /// Counts the sending and the answer of every request that may change attributes (see
    /// [`ClRequest::touches`]): the master may carry out such a request after one sent later
    /// (a truncation waits for chunkservers), so its answer counts too.
    changes: ChangeCounts,
    /// Changes answered ahead that the master has not answered yet (queued or sent).
    ahead_unanswered: AtomicUsize,
    /// When the last unlink answered ahead was queued (ns after `born`; 0: none yet).
    last_unlink: AtomicU64,
    born: std::time::Instant,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Notes an unlink answered ahead now; the time since the one before (`None`: the first).
    fn since_last_unlink(&self) -> Option<std::time::Duration> {
        // At least 1: 0 stands for "none yet".
        let now = (self.born.elapsed().as_nanos() as u64).max(1);
        let last = self.last_unlink.swap(now, Ordering::Relaxed);
        (last != 0).then(|| std::time::Duration::from_nanos(now.saturating_sub(last)))
    }

    /// A request left the pending ones (answered, failed or forgotten).
    fn settled(&self, p: &Pending) {
        if p.ahead {
            self.ahead_unanswered.fetch_sub(1, Ordering::SeqCst);
        } else {
            self.changes.count(p.env.req.touches());
        }
    }
}

/// When a request queued for the master is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    /// At once, from the calling thread.
    Now,
    /// A change answered ahead: written when the returned [`Held`] drops, at once or as
    /// [`Write::Soon`].
    Ahead,
    /// With the next request, or within [`moose_proto::outbox::SOON`], or at once when the
    /// queued requests fill a batch.
    Soon,
}

/// A change answered ahead, queued to the master but not written yet: written at once or
/// left for company ([`Write::Now`] or [`Write::Soon`]) when this is dropped (see
/// [`MasterClient::start_ahead`]).
pub struct Held(Option<(Outbox, Write)>);

impl Drop for Held {
    fn drop(&mut self) {
        if let Some((out, when)) = self.0.take() {
            write_out(&out, when);
        }
    }
}

/// Writes what was queued on `out` as `when` says (a change answered ahead has been given
/// its [`Write::Now`] or [`Write::Soon`] by then).
fn write_out(out: &Outbox, when: Write) {
    match when {
        Write::Now => out.release(),
        Write::Soon | Write::Ahead => out.release_soon(),
    }
}

/// Changes answered ahead the master may have unanswered before the next waits for company
/// (see [`MasterClient::start_ahead`]).
const BEHIND: usize = 4;

/// An unlink answered ahead within this of the one before waits for company (see
/// [`waits_for_company`]).
const UNLINK_STREAK: std::time::Duration = std::time::Duration::from_millis(2);

/// Whether a change answered ahead waits for company rather than going out at once, when
/// `waiting` changes answered ahead wait for the master's answer already; `since_unlink` is,
/// for an unlink, the time since the one before (`None`: not an unlink, or the first).
///
/// While the master falls behind ([`BEHIND`]), every change waits: one write and one wake-up
/// of the master carry many. Unlinks in a streak (`rm -rf`, `rm *`) wait as well: sent one
/// by one, each woke the master and its answer the mount's reader, and once `rm -rf` had let
/// the master catch up it ran at half speed from then on (docs/benchmarks.md, "Why `rm -rf`
/// runs at one of two speeds"). Creates do not: a `touch` of 10,000 files took 1.0–1.3 s
/// when its creates waited in a streak too, against 0.6–0.9 s. A lone unlink, or the first
/// of a streak, goes out at once.
fn waits_for_company(waiting: usize, since_unlink: Option<std::time::Duration>) -> bool {
    waiting >= BEHIND || since_unlink.is_some_and(|d| d < UNLINK_STREAK)
}

/// A registered session with the master; cheap to clone.
#[derive(Clone)]
pub struct MasterClient {
    inner: Arc<Inner>,
}

struct Conn {
    reader: FrameReader<OwnedReadHalf>,
    writer: FrameWriter<OwnedWriteHalf>,
}

/// The answer to a request sent with [`MasterClient::start`].
pub struct Call {
    state: CallState,
}

enum CallState {
    Waiting {
        rx: oneshot::Receiver<Reply>,
        inner: Arc<Inner>,
        id: u32,
    },
    /// Failed before it was sent, or answered already.
    Done(Option<CallError>),
}

impl Future for Call {
    type Output = Reply;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        match &mut self.state {
            CallState::Done(e) => Poll::Ready(Err(e.take().unwrap_or(CallError::Disconnected))),
            CallState::Waiting { rx, .. } => match Pin::new(rx).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(r) => {
                    self.state = CallState::Done(None);
                    Poll::Ready(r.unwrap_or(Err(CallError::Disconnected)))
                }
            },
        }
    }
}

impl Drop for Call {
    /// A request nobody waits for any more is not sent again after a reconnection.
    fn drop(&mut self) {
        if let CallState::Waiting { inner, id, .. } = &self.state {
            let forgotten = inner.lock().pending.remove(id);
            if let Some(p) = &forgotten {
                inner.settled(p);
            }
        }
    }
}

impl MasterClient {
    /// Opens a session. With `reconnect`, a lost connection is re-established (and the session
    /// registered again) in the background and unanswered requests are sent again; without
    /// it, every request fails from then on with [`CallError::Disconnected`].
    pub async fn connect(
        params: SessionParams,
        reconnect: bool,
    ) -> Result<(MasterClient, RegisterReply), ConnectError> {
        let (conn, reply) = open_session(&params, None).await?;
        let (session, _) = watch::channel(Arc::new(reply.clone()));
        let inner = Arc::new(Inner {
            params,
            reconnect,
            state: Mutex::new(State {
                pending: HashMap::new(),
                out: None,
                next_id: 1,
                closed: false,
            }),
            session,
            opened: Mutex::new(HashMap::new()),
            folders: Default::default(),
            known: Default::default(),
            stale: Default::default(),
            changes: ChangeCounts::default(),
            ahead_unanswered: AtomicUsize::new(0),
            last_unlink: AtomicU64::new(0),
            born: std::time::Instant::now(),
        });
        tokio::spawn(run(inner.clone(), conn));
        Ok((MasterClient { inner }, reply))
    }

    /// Folder attributes the master sent with its answers to changes.
    pub fn folders(&self) -> &crate::folders::FolderAttrs {
        &self.inner.folders
    }

    /// Folders whose names are known here (kept up to date from answers and notices).
    pub fn known(&self) -> &KnownFolders {
        &self.inner.known
    }

    /// Files whose pages in the kernel's cache went stale (from the master's notices).
    pub fn stale_pages(&self) -> Arc<StalePages> {
        self.inner.stale.clone()
    }

    /// The current session (it changes after a reconnection).
    pub fn session(&self) -> Arc<RegisterReply> {
        self.inner.session.borrow().clone()
    }

    /// Changes after every re-registration.
    pub fn subscribe(&self) -> watch::Receiver<Arc<RegisterReply>> {
        self.inner.session.subscribe()
    }

    /// Sends a request and waits for its answer.
    pub async fn call(&self, req: ClRequest) -> Reply {
        self.start(req).await
    }

    /// [`MasterClient::start`] for a request the mount makes on its own account about a file
    /// it has open (a read ahead): `None`, and nothing sent, once the file's last handle here
    /// closed. The check and the send are made under the lock that the last close's
    /// [`MasterClient::note_release`] takes, so the request never follows the release, which
    /// the master would refuse (and log as a read of a file not opened).
    pub fn start_while_open(&self, inode: moose_proto::Inode, req: ClRequest) -> Option<Call> {
        let opened = self.inner.opened.lock();
        opened.contains_key(&inode).then(|| self.start(req))
    }

    /// Sends a request now, from the calling thread, and returns its answer to come. Dropping
    /// the [`Call`] forgets the request.
    pub fn start(&self, req: ClRequest) -> Call {
        let (tx, rx) = oneshot::channel();
        match self.send(req, Waiter::Task(tx), Write::Now) {
            Ok((id, _)) => Call {
                state: CallState::Waiting {
                    rx,
                    inner: self.inner.clone(),
                    id,
                },
            },
            Err((e, _)) => Call::failed(e),
        }
    }

    /// Sends a request now, from the calling thread, and runs `then` with its answer on the
    /// connection's reader as it arrives (or here, at once, if it cannot be sent): no task
    /// to wake in between. `then` must not block.
    pub fn start_then(&self, req: ClRequest, then: impl FnOnce(Reply) + Send + 'static) {
        if let Err((e, waiter)) = self.send(req, Waiter::Callback(Box::new(then)), Write::Now) {
            waiter.answer(Err(e));
        }
    }

    /// [`MasterClient::start_then`] for a request nobody waits for, whose effect no other
    /// mount can see (a release): written with the next request, or within
    /// [`moose_proto::outbox::SOON`].
    pub fn start_soon(&self, req: ClRequest, then: impl FnOnce(Reply) + Send + 'static) {
        if let Err((e, waiter)) = self.send(req, Waiter::Callback(Box::new(then)), Write::Soon) {
            waiter.answer(Err(e));
        }
    }

    /// [`MasterClient::start_then`] for a change the mount answered itself, with what the
    /// master will make (see `ahead.rs`): its answer brings nothing new (a different one is
    /// dealt with by `then`), so it leaves the change count, and attributes the mount noted
    /// since it was sent stay good. The request takes its place among the others at once.
    /// It is written when the returned [`Held`] is dropped: after the kernel's answer, which
    /// then does not wait for the write. While [`BEHIND`] or more changes answered ahead wait
    /// for the master's answer, and for an unlink in a streak (see [`waits_for_company`]), it
    /// goes instead with the next request, or within [`moose_proto::outbox::SOON`], with the
    /// changes made meanwhile: one write and one wake-up of the master for them all.
    #[must_use = "the request is written, or left for company, when this is dropped"]
    pub fn start_ahead(&self, req: ClRequest, then: impl FnOnce(Reply) + Send + 'static) -> Held {
        match self.send(req, Waiter::Callback(Box::new(then)), Write::Ahead) {
            Ok((_, held)) => held,
            Err((e, waiter)) => {
                waiter.answer(Err(e));
                Held(None)
            }
        }
    }

    /// Registers `waiter` for the answer and writes the request as `write` says (unless
    /// disconnected: it is sent with the others after the reconnection); returns its `msgid`
    /// and, for [`Write::Ahead`], what writes it when dropped.
    fn send(
        &self,
        req: ClRequest,
        waiter: Waiter,
        write: Write,
    ) -> Result<(u32, Held), (CallError, Waiter)> {
        let ahead = write == Write::Ahead;
        let mut st = self.inner.lock();
        if st.closed {
            return Err((CallError::Disconnected, waiter));
        }
        let mut id = st.next_id;
        while id == REGISTER_MSGID || id == NOTICE_MSGID || st.pending.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        st.next_id = id.wrapping_add(1);
        self.inner.changes.count(req.touches());
        let sent = match req {
            ClRequest::MkDir { .. } => self.inner.known.now(),
            _ => 0,
        };
        let env = ClEnvelope { msgid: id, req };
        // Queued in its place among the others while the state is locked, written once it is
        // not: the reader, which takes the state for every answer, does not wait for a
        // system call, nor do other senders. A failed write shows up in the writer task,
        // which replaces the connection; the request is sent again on the next one.
        let out = st.out.clone();
        if let Some(out) = &out {
            if let Err(e) = out.push_held(&env) {
                return Err((unsendable(e), waiter));
            }
        }
        // A change answered ahead goes out at once (after the kernel's answer) or waits for
        // company (see `waits_for_company`).
        let when = if ahead {
            let waiting = self.inner.ahead_unanswered.fetch_add(1, Ordering::SeqCst);
            let since_unlink = match env.req {
                ClRequest::Unlink { .. } => self.inner.since_last_unlink(),
                _ => None,
            };
            if waits_for_company(waiting, since_unlink) {
                Write::Soon
            } else {
                Write::Now
            }
        } else {
            write
        };
        st.pending.insert(
            id,
            Pending {
                env,
                waiter,
                sent,
                ahead,
            },
        );
        drop(st);
        match out {
            Some(out) if ahead => Ok((id, Held(Some((out, when))))),
            Some(out) => {
                write_out(&out, when);
                Ok((id, Held(None)))
            }
            None => Ok((id, Held(None))),
        }
    }

    /// The counts of the changes sent through this connection and answered, for attributes
    /// learned from answers (see [`ChangeCounts`]).
    pub fn changes(&self) -> &ChangeCounts {
        &self.inner.changes
    }

    /// Remembers an open of `inode` (flags as given to open), to repeat it in a new session.
    pub fn note_open(&self, inode: moose_proto::Inode, flags: i32, cred: moose_proto::Cred) {
        let mode = flags & libc::O_ACCMODE;
        let mut opened = self.inner.opened.lock();
        let e = opened.entry(inode).or_insert((mode, cred.clone()));
        if mode != e.0 {
            e.0 = libc::O_RDWR;
        }
        e.1 = cred;
    }

    /// The last handle on `inode` closed.
    pub fn note_release(&self, inode: moose_proto::Inode) {
        self.inner.opened.lock().remove(&inode);
    }

    /// Ends the session at the master now (its files are released at once rather than after
    /// the master's SESSION_SUSTAIN_TIME).
    pub async fn close_session(&self) {
        if let Err(e) = self.call(ClRequest::CloseSession).await {
            tracing::debug!("closing the session: {e}");
        }
    }

    /// Tells the master a copy is bad, without waiting for the answer.
    pub fn report_bad_copy(&self, chunk: ChunkRef, server: CsAddr) {
        let me = self.clone();
        tokio::spawn(async move {
            let req = ClRequest::ReportBadCopy {
                chunk_id: chunk.chunk_id,
                version: chunk.version,
                server: server.clone(),
            };
            if let Err(e) = me.call(req).await {
                tracing::warn!(
                    "cannot report the bad copy of chunk {:016X} on {server}: {e}",
                    chunk.chunk_id
                );
            }
        });
    }
}

impl Call {
    fn failed(e: CallError) -> Call {
        Call {
            state: CallState::Done(Some(e)),
        }
    }
}

/// What a caller gets for a request that cannot be encoded.
fn unsendable(e: ProtoError) -> CallError {
    match e {
        ProtoError::TooLarge { len, limit } => {
            tracing::warn!("request of {len} bytes exceeds the limit of {limit} bytes");
            CallError::Fs(FsError::TooBig)
        }
        e => {
            tracing::error!("request cannot be encoded: {e}");
            CallError::Fs(FsError::Io)
        }
    }
}

/// Resolves, connects, says hello, answers the password challenge and registers (taking
/// over the session `resume`, when the master still keeps it).
async fn open_session(
    p: &SessionParams,
    resume: Option<(u64, Vec<u8>)>,
) -> Result<(Conn, RegisterReply), ConnectError> {
    let addr = p.addr();
    match tokio::time::timeout(CONNECT_TIMEOUT, open_session_inner(p, &addr, resume)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout { addr }),
    }
}

async fn open_session_inner(
    p: &SessionParams,
    addr: &str,
    resume: Option<(u64, Vec<u8>)>,
) -> Result<(Conn, RegisterReply), ConnectError> {
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((p.host.as_str(), p.port))
        .await
        .map_err(|cause| ConnectError::Resolve {
            host: p.host.clone(),
            cause,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(ConnectError::NoAddress(p.host.clone()));
    }
    let mut last_err = None;
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    let stream = match stream {
        Some(s) => s,
        None => {
            return Err(ConnectError::Connect {
                addr: addr.to_string(),
                cause: last_err
                    .unwrap_or_else(|| std::io::Error::other("no address could be reached")),
            })
        }
    };
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let mut conn = Conn {
        reader: FrameReader::new(r),
        writer: FrameWriter::new(w),
    };
    let link = |cause| ConnectError::Link {
        addr: addr.to_string(),
        cause,
    };
    say_hello(&mut conn.reader, &mut conn.writer, Role::Client, addr)
        .await
        .map_err(|cause| ConnectError::Handshake {
            addr: addr.to_string(),
            cause,
        })?;
    let password_proof = match &p.password {
        None => None,
        Some(pw) => {
            let challenge = match exchange(&mut conn, ClRequest::GetChallenge)
                .await
                .map_err(link)?
            {
                Ok(ClReply::Challenge(c)) => c,
                Ok(ClReply::Refused(Refusal { reason })) => {
                    return Err(ConnectError::Refused {
                        addr: addr.to_string(),
                        reason,
                    })
                }
                Ok(_) => {
                    return Err(ConnectError::Unexpected {
                        addr: addr.to_string(),
                    })
                }
                Err(cause) => {
                    return Err(ConnectError::Rejected {
                        addr: addr.to_string(),
                        cause,
                    })
                }
            };
            if challenge.len() != CHALLENGE_LEN {
                return Err(ConnectError::Challenge {
                    addr: addr.to_string(),
                    len: challenge.len(),
                });
            }
            Some(password_proof(&challenge, pw))
        }
    };
    let req = ClRequest::Register(RegisterRequest {
        subdir: p.subdir.clone(),
        mount_point: p.mount_point.clone(),
        password_proof,
        tool: p.tool,
        resume,
    });
    match exchange(&mut conn, req).await.map_err(link)? {
        Ok(ClReply::Registered(reply)) => Ok((conn, reply)),
        Ok(ClReply::Refused(Refusal { reason })) => Err(ConnectError::Refused {
            addr: addr.to_string(),
            reason,
        }),
        Ok(_) => Err(ConnectError::Unexpected {
            addr: addr.to_string(),
        }),
        Err(cause) => Err(ConnectError::Rejected {
            addr: addr.to_string(),
            cause,
        }),
    }
}

/// One request and its answer on a connection with nothing else in flight.
async fn exchange(conn: &mut Conn, req: ClRequest) -> Result<Result<ClReply, FsError>, ProtoError> {
    conn.writer
        .send_now(&ClEnvelope {
            msgid: REGISTER_MSGID,
            req,
        })
        .await?;
    loop {
        let resp: ClResponse = conn.reader.next_msg().await?;
        if resp.msgid == REGISTER_MSGID {
            return Ok(resp.result);
        }
        tracing::debug!(
            "ignoring an answer to request {} during registration",
            resp.msgid
        );
    }
}

/// Serves one connection after another until the session ends.
async fn run(inner: Arc<Inner>, mut conn: Conn) {
    let addr = inner.params.addr();
    loop {
        let Conn { mut reader, writer } = conn;
        let out = Outbox::new(writer.into_inner());
        resend_pending(&inner, out.clone());
        let mut writer_task = tokio::spawn(write_loop(out));
        let why = tokio::select! {
            e = read_loop(&inner, &mut reader) => e.to_string(),
            r = &mut writer_task => match r {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(())) => "writer stopped".to_string(),
                Err(e) => format!("writer task failed: {e}"),
            },
        };
        writer_task.abort();
        inner.lock().out = None;
        // Notices may be missed from now on (the master ends this connection's watches).
        inner.known.forget_all();
        if !inner.reconnect {
            tracing::debug!("connection to master {addr} ended: {why}");
            let pending: Vec<Pending> = {
                let mut st = inner.lock();
                st.closed = true;
                st.pending.drain().map(|(_, p)| p).collect()
            };
            for p in pending {
                inner.settled(&p);
                p.waiter.answer(Err(CallError::Disconnected));
            }
            return;
        }
        tracing::warn!("connection to master {addr} lost: {why}; reconnecting");
        let (mut new_conn, reply) = reconnect(&inner).await;
        tracing::info!(
            "reconnected to master {addr}: session {}{}, parameters: {}",
            reply.session_id,
            if reply.resumed { " (resumed)" } else { "" },
            reply.params
        );
        if !reply.resumed {
            reopen(&inner, &mut new_conn).await;
        }
        inner.session.send_replace(Arc::new(reply));
        conn = new_conn;
    }
}

/// Makes `out` the connection's sending side, with every unanswered request queued first.
fn resend_pending(inner: &Inner, out: Outbox) {
    let mut unsent = Vec::new();
    let mut st = inner.lock();
    let mut ids: Vec<u32> = st.pending.keys().copied().collect();
    ids.sort_unstable();
    if !ids.is_empty() {
        tracing::info!("re-sending {} unanswered requests to the master", ids.len());
    }
    for id in ids {
        let Some(p) = st.pending.get(&id) else {
            continue;
        };
        if let Err(e) = out.push(&p.env) {
            if let Some(p) = st.pending.remove(&id) {
                unsent.push((p, unsendable(e)));
            }
        }
    }
    st.out = Some(out);
    drop(st);
    for (p, e) in unsent {
        inner.settled(&p);
        p.waiter.answer(Err(e));
    }
}

/// Opens again, in a new session, every inode open here, before the unanswered requests are
/// sent again (reads and writes need their file open in the session).
async fn reopen(inner: &Inner, conn: &mut Conn) {
    // Files whose creates answered ahead are still to be sent: those open them.
    let creating: std::collections::HashSet<moose_proto::Inode> = inner
        .lock()
        .pending
        .values()
        .filter_map(|p| match &p.env.req {
            ClRequest::Create { ahead: Some(a), .. } => Some(a.inode),
            _ => None,
        })
        .collect();
    let opened: Vec<(moose_proto::Inode, i32, moose_proto::Cred)> = inner
        .opened
        .lock()
        .iter()
        .filter(|(i, _)| !creating.contains(i))
        .map(|(i, (f, c))| (*i, *f, c.clone()))
        .collect();
    for (inode, flags, cred) in opened {
        let req = ClRequest::Open { inode, flags, cred };
        match exchange(conn, req).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("re-opening inode {inode} in the new session: {e}"),
            Err(e) => {
                tracing::warn!("re-opening inode {inode} in the new session: {e}");
                return;
            }
        }
    }
}

/// Tries to open a new session (or take over the old one) until it works.
async fn reconnect(inner: &Inner) -> (Conn, RegisterReply) {
    let mut delay = Duration::from_millis(200);
    let mut attempts: u64 = 0;
    let old = inner.session.borrow().clone();
    let resume = Some((old.session_id, old.session_key.clone()));
    loop {
        match open_session(&inner.params, resume.clone()).await {
            Ok(ok) => return ok,
            Err(e) => {
                attempts += 1;
                if attempts == 1 || attempts.is_multiple_of(20) {
                    tracing::warn!("reconnection attempt {attempts} failed: {e}");
                } else {
                    tracing::debug!("reconnection attempt {attempts} failed: {e}");
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RECONNECT_DELAY);
    }
}

async fn read_loop(inner: &Inner, reader: &mut FrameReader<OwnedReadHalf>) -> ProtoError {
    loop {
        let resp: ClResponse = match reader.next_msg().await {
            Ok(r) => r,
            Err(e) => return e,
        };
        if resp.msgid == NOTICE_MSGID {
            match resp.result {
                Ok(ClReply::FoldersChanged(folders)) => inner.known.noticed(&folders),
                Ok(ClReply::FilesChanged(files)) => inner.stale.noticed(&files),
                other => tracing::debug!("ignoring an unknown notice: {other:?}"),
            }
            continue;
        }
        let p = inner.lock().pending.remove(&resp.msgid);
        if let Some(p) = &p {
            if let Ok(reply) = &resp.result {
                inner.known.settle(&p.env.req, reply, p.sent);
            }
            inner.settled(p);
            // A folder may be gone or have moved: nothing cached can be trusted.
            if matches!(
                p.env.req,
                ClRequest::RmDir { .. } | ClRequest::Rename { .. }
            ) {
                inner.folders.clear();
            }
        }
        inner.folders.store(&resp.dirs);
        match p {
            Some(p) => {
                p.waiter.answer(resp.result.map_err(CallError::Fs));
            }
            None => tracing::debug!("answer to unknown request {}", resp.msgid),
        }
    }
}

/// Writes what callers left queued, with a keep-alive `Nop` when nothing went out for a
/// while.
async fn write_loop(out: Outbox) -> Result<(), ProtoError> {
    let nop = ClEnvelope {
        msgid: REGISTER_MSGID,
        req: ClRequest::Nop,
    };
    moose_proto::outbox::write_loop(out, Some((KEEPALIVE, &nop))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlinks_in_a_streak_and_changes_behind_the_master_wait_for_company() {
        let ms = std::time::Duration::from_millis;
        // A create while the master keeps up goes at once; behind it, it waits.
        assert!(!waits_for_company(0, None));
        assert!(!waits_for_company(BEHIND - 1, None));
        assert!(waits_for_company(BEHIND, None));
        // The first unlink, and one after a pause, go at once; the next in a streak waits.
        assert!(!waits_for_company(0, Some(ms(50))));
        assert!(!waits_for_company(1, Some(UNLINK_STREAK)));
        assert!(waits_for_company(0, Some(ms(0))));
        assert!(waits_for_company(1, Some(UNLINK_STREAK - ms(1))));
    }

    #[test]
    fn the_password_proof_matches_the_reference() {
        // Reference computed independently with Python's hashlib.
        let challenge: Vec<u8> = (0u8..32).collect();
        let hex: String = password_proof(&challenge, "secret")
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        assert_eq!(hex, "52e26806aa4187d43d08d5bc6b284a96");
    }
}
