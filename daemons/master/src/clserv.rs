//! The client port (9421): mounts, moose-tool and status queries. Each connection registers a
//! session (checked against the exports), then sends requests that are answered out of order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use moose_proto::handshake::Role;
use moose_proto::msg::{
    ClEnvelope, ClReply, ClRequest, ClResponse, Refusal, RegisterReply, RegisterRequest,
    NOTICE_MSGID,
};
use moose_proto::outbox::{self, Outbox};
use moose_proto::{Attr, FsError, FsResult, Inode};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::master::Master;
use crate::ops::Op;
use crate::requests::{self, Step};
use crate::sessions::Session;
use crate::watches::{Notice, NoticeSink};
use moose_common::exports::normalize_path;

/// A client connection that sends nothing for this long is closed (mounts send a `Nop` every
/// few seconds when idle); its session is kept for `SESSION_SUSTAIN_TIME`.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves one client connection until it ends.
pub async fn serve(master: Arc<Master>, stream: TcpStream, peer: SocketAddr) {
    let Some(crate::link::Accepted {
        role,
        mut reader,
        writer,
        ..
    }) = crate::link::accept(
        stream,
        peer,
        &[Role::Client, Role::Admin],
        "the master's client port",
    )
    .await
    else {
        return;
    };
    // Answers go to the socket from the task that has them (see `moose_proto::outbox`).
    let out = Outbox::new(writer.into_inner());
    let writer_task = tokio::spawn(outbox::write_loop(out.clone(), NO_KEEPALIVE));
    // Each request answered from a task of its own holds a clone: the connection ends once
    // they are all answered.
    let (answering, mut all_answered) = mpsc::channel::<()>(1);
    let mut session: Option<Arc<Session>> = None;
    let mut challenge: Option<Vec<u8>> = None;
    let mut closing = false;
    loop {
        if !reader.frame_waiting() {
            // Answers held while more requests waited leave together before the wait.
            out.release();
        }
        let env: ClEnvelope = match tokio::time::timeout(CLIENT_TIMEOUT, reader.next_msg()).await {
            Ok(Ok(e)) => e,
            Ok(Err(e)) if e.is_disconnect() => break,
            Ok(Err(e)) => {
                crate::link::REFUSALS.warn(
                    peer.ip(),
                    &format!("client {peer}: {e}; closing the connection"),
                );
                break;
            }
            Err(_) => {
                tracing::info!(
                    "client {peer}: nothing received for {} s; closing the connection",
                    CLIENT_TIMEOUT.as_secs()
                );
                break;
            }
        };
        let msgid = env.msgid;
        // Folders whose attributes go with the answer (those a change touched).
        let mut dirs = Vec::new();
        let result = match env.req {
            ClRequest::GetChallenge => {
                let c: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
                challenge = Some(c.clone());
                Ok(ClReply::Challenge(c))
            }
            ClRequest::Register(reg) if role == Role::Client => {
                if let Some(old) = session.take() {
                    end_session(&master, &old);
                }
                match register(&master, peer, &reg, challenge.take().as_deref()) {
                    Ok((s, reply)) => {
                        if !s.tool && !s.meta {
                            let open: Vec<Inode> = s.open.lock().keys().copied().collect();
                            master
                                .state()
                                .rt
                                .watches
                                .attach(s.id, notice_sink(&out), open);
                        }
                        session = Some(s);
                        Ok(reply)
                    }
                    Err(reason) => {
                        crate::link::REFUSALS.warn(
                            peer.ip(),
                            &format!(
                                "client {} refused (mount of '{}' at {}): {reason}",
                                peer.ip(),
                                reg.subdir,
                                reg.mount_point
                            ),
                        );
                        Ok(ClReply::Refused(Refusal { reason }))
                    }
                }
            }
            ClRequest::ClusterInfo => match (&session, role) {
                (Some(_), _) => Ok(ClReply::Cluster(requests::cluster_info(&master))),
                // A status query (console, `moose-tool info`) needs no mount, but it must
                // come from this host or from an address the exports admit to "/".
                (None, Role::Admin) => {
                    let admitted = if peer.ip().is_loopback() {
                        Ok(())
                    } else {
                        master
                            .exports
                            .read()
                            .admit(peer.ip(), "/", None, None)
                            .map(|_| ())
                            .map_err(|r| r.to_string())
                    };
                    match admitted {
                        Ok(()) => Ok(ClReply::Cluster(requests::cluster_info(&master))),
                        Err(reason) => {
                            crate::link::REFUSALS.warn(
                                peer.ip(),
                                &format!("status query from {peer} refused: {reason}"),
                            );
                            Ok(ClReply::Refused(Refusal { reason }))
                        }
                    }
                }
                (None, _) => {
                    crate::link::REFUSALS.warn(
                        peer.ip(),
                        &format!("client {peer}: status query without a session refused"),
                    );
                    Err(FsError::NoSession)
                }
            },
            ClRequest::Nop => Ok(ClReply::Done),
            ClRequest::CloseSession => {
                closing = true;
                Ok(ClReply::Done)
            }
            req => match &session {
                None => Err(FsError::NoSession),
                Some(s) => {
                    master
                        .ops_served
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    match requests::handle_now(&master, s, req) {
                        Step::Reply(result) => {
                            if let Ok(r) = &result {
                                s.note_reply(r);
                            }
                            result
                        }
                        Step::Recorded {
                            reply,
                            version,
                            dirs: touched,
                        } if master.is_recorded(version) => {
                            // Written to the changelog already: answered from here, with no
                            // task to wake.
                            s.note_reply(&reply);
                            dirs = touched;
                            Ok(reply)
                        }
                        Step::Recorded {
                            reply,
                            version,
                            dirs,
                        } => {
                            s.note_reply(&reply);
                            let (m, out, answering) =
                                (master.clone(), out.clone(), answering.clone());
                            tokio::spawn(async move {
                                let result = m.recorded(version).await.map(|()| reply);
                                let dirs = if result.is_ok() { dirs } else { Vec::new() };
                                answer(&out, msgid, result, dirs, false);
                                drop(answering);
                            });
                            continue;
                        }
                        // On disk already (an `fsync` of a folder after one of a file):
                        // answered from here too.
                        Step::Synced(reply, version) if master.is_synced(version) => Ok(reply),
                        Step::Synced(reply, version) => {
                            let (m, out, answering) =
                                (master.clone(), out.clone(), answering.clone());
                            tokio::spawn(async move {
                                let result = m.synced(version).await.map(|()| reply);
                                answer(&out, msgid, result, Vec::new(), false);
                                drop(answering);
                            });
                            continue;
                        }
                        Step::Later(req) => {
                            let (m, s, out, answering) =
                                (master.clone(), s.clone(), out.clone(), answering.clone());
                            tokio::spawn(async move {
                                let result = requests::handle_async(&m, &s, req).await;
                                if let Ok(r) = &result {
                                    s.note_reply(r);
                                }
                                answer(&out, msgid, result, Vec::new(), false);
                                drop(answering);
                            });
                            continue;
                        }
                    }
                }
            },
        };
        // While the next request is in already, its answer goes out with this one: one
        // write and one wake-up of the mount for both.
        let hold = reader.frame_waiting();
        answer(&out, msgid, result, dirs, hold);
        if writer_task.is_finished() {
            // A write failed: the connection is gone.
            break;
        }
    }
    drop(answering);
    let _ = all_answered.recv().await;
    // What the socket has not taken yet goes out before the connection closes.
    let _ = tokio::time::timeout(CLIENT_TIMEOUT, outbox::drain(&out)).await;
    writer_task.abort();
    if let Some(s) = session {
        master.state().rt.watches.detach(s.id);
        if closing || s.tool {
            end_session(&master, &s);
            tracing::info!("session {} from {} closed", s.id, s.ip);
        } else {
            // Its write leases end now (a resumed session asks again); its open files stay.
            master
                .state()
                .rt
                .write_locks
                .retain(|_, l| l.session != s.id);
            master.session_table.detach(s.id);
            tracing::info!(
                "session {} from {}: connection ended; its files stay open for {} s \
                 (SESSION_SUSTAIN_TIME) unless the client reconnects",
                s.id,
                s.ip,
                master.cfg.session_sustain
            );
        }
    }
}

/// No keep-alive from the master: the mounts send theirs.
const NO_KEEPALIVE: Option<(Duration, &ClResponse)> = None;

/// Queues the answer to request `msgid`: written at once unless earlier answers still wait
/// for the socket, or `hold` leaves it for the next answer or [`Outbox::release`].
fn answer(out: &Outbox, msgid: u32, result: FsResult<ClReply>, dirs: Vec<Attr>, hold: bool) {
    let response = ClResponse {
        msgid,
        result,
        dirs,
    };
    let queued = if hold {
        out.push_held(&response)
    } else {
        out.push(&response)
    };
    if let Err(e) = queued {
        tracing::error!("answer to request {msgid} cannot be encoded: {e}");
    }
}

/// Pushes notices of changed folders and files to a connection.
fn notice_sink(out: &Outbox) -> NoticeSink {
    let out = out.clone();
    Arc::new(move |notice: Notice<'_>| {
        let result = match notice {
            Notice::Folders(folders) => ClReply::FoldersChanged(folders.to_vec()),
            Notice::Files(files) => ClReply::FilesChanged(files.to_vec()),
        };
        let notice = ClResponse {
            msgid: NOTICE_MSGID,
            result: Ok(result),
            dirs: Vec::new(),
        };
        if let Err(e) = out.push(&notice) {
            tracing::error!("a notice of changed folders or files cannot be encoded: {e}");
        }
    })
}

/// Ends a session at once: out of the table, files released.
fn end_session(master: &Master, s: &Session) {
    master.state().rt.watches.detach(s.id);
    master.session_table.remove(s.id);
    release_session(master, s);
}

fn register(
    master: &Master,
    peer: SocketAddr,
    reg: &RegisterRequest,
    challenge: Option<&[u8]>,
) -> Result<(Arc<Session>, ClReply), String> {
    // As in stock MooseFS, the meta file system is asked for as the folder ".".
    let meta = reg.subdir == ".";
    let subdir = if meta {
        ".".to_string()
    } else {
        normalize_path(&reg.subdir)
    };
    let exports = master.exports.read();
    let line = if meta {
        exports.admit_meta(peer.ip(), reg.password_proof.as_deref(), challenge)
    } else {
        exports.admit(peer.ip(), &subdir, reg.password_proof.as_deref(), challenge)
    }
    .map_err(|r| r.to_string())?;
    if let Some((id, key)) = &reg.resume {
        match master.session_table.resume(*id, key) {
            Some(s) if s.ip == peer.ip() => {
                tracing::info!("session {id}: {} reconnected and resumed it", peer.ip());
                let st = master.state();
                return Ok((
                    s.clone(),
                    ClReply::Registered(RegisterReply {
                        session_id: s.id,
                        root_inode: s.root,
                        read_only: s.read_only,
                        cluster_id: st.meta.cluster_id,
                        params: line.describe(),
                        session_key: key.clone(),
                        resumed: true,
                        maps_root: s.maps_root(),
                        maps_all: s.mapall.is_some(),
                    }),
                ));
            }
            Some(s) => {
                // Not from the address that opened it: leave it to expire.
                master.session_table.detach(s.id);
                crate::link::REFUSALS.warn(
                    peer.ip(),
                    &format!(
                        "{} tried to resume session {id} of {}; a new session is opened instead",
                        peer.ip(),
                        s.ip
                    ),
                );
            }
            None => tracing::info!(
                "{}: session {id} cannot be resumed (expired, or the master restarted); opening a new one",
                peer.ip()
            ),
        }
    }
    let st = master.state();
    let mut root = moose_proto::ROOT_INODE;
    for part in subdir.split('/').filter(|p| !p.is_empty() && !meta) {
        root = st.lookup(root, part.as_bytes()).map_err(|e| {
            format!("folder {subdir} does not exist in the file system ({e}); create it from a mount of / first")
        })?;
        if !st.node(root).map(|n| n.is_dir()).unwrap_or(false) {
            return Err(format!("{subdir} is not a folder"));
        }
    }
    let cluster_id = st.meta.cluster_id;
    drop(st);
    let id = master.new_session_id();
    let mut session = Session::new(id, peer.ip(), root, line, reg.tool);
    session.meta = meta;
    session.recovering = reg.resume.is_some();
    let session = Arc::new(session);
    let session_key = moose_proto::auth::random_bytes(16);
    master
        .session_table
        .insert(session.clone(), session_key.clone());
    master
        .sessions
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let params = line.describe();
    let (maps_root, maps_all) = (session.maps_root(), session.mapall.is_some());
    tracing::info!(
        "session {id}: {} mounted {subdir} at {} ({params}; exports line {})",
        peer.ip(),
        if reg.tool { "(tool)" } else { &reg.mount_point },
        line.line
    );
    Ok((
        session,
        ClReply::Registered(RegisterReply {
            session_id: id,
            root_inode: root,
            read_only: line.opts.read_only,
            cluster_id,
            params,
            session_key,
            resumed: false,
            maps_root,
            maps_all,
        }),
    ))
}

/// A session ended: its open files close and its write locks are released.
pub fn release_session(master: &Master, s: &Session) {
    master
        .sessions
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    let open: Vec<(Inode, u32)> = s
        .open
        .lock()
        .drain()
        .map(|(inode, rec)| (inode, rec.count))
        .collect();
    let mut st = master.state();
    st.rt.write_locks.retain(|_, l| l.session != s.id);
    for (inode, n) in open {
        let left = match st.rt.open.get_mut(&inode) {
            Some(c) => {
                *c = c.saturating_sub(n);
                *c
            }
            None => 0,
        };
        if left == 0 {
            st.rt.open.remove(&inode);
            if st.is_orphan(inode) {
                let _ = master.commit(&mut st, Op::Purge { inode });
            }
        }
    }
}
