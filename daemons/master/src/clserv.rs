//! The client port (9421): mounts, moose-tool and status queries. Each connection registers a
//! session (checked against the exports), then sends requests that are answered out of order.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use moose_proto::handshake::Role;
use moose_proto::msg::{
    ClEnvelope, ClReply, ClRequest, ClResponse, Refusal, RegisterReply, RegisterRequest,
};
use moose_proto::{FsError, Inode};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::master::Master;
use crate::ops::Op;
use crate::requests::{self, Step};
use moose_common::exports::{normalize_path, ExportLine};

/// A registered mount or tool.
pub struct Session {
    pub id: u64,
    pub ip: IpAddr,
    pub root: Inode,
    pub read_only: bool,
    pub maproot: Option<(u32, u32)>,
    pub mapall: Option<(u32, u32)>,
    pub ignoregid: bool,
    pub mingoal: u8,
    pub maxgoal: u8,
    /// Open handles per inode in this session.
    pub open: Mutex<HashMap<Inode, u32>>,
}

impl Session {
    fn new(id: u64, ip: IpAddr, root: Inode, line: &ExportLine) -> Self {
        Session {
            id,
            ip,
            root,
            read_only: line.opts.read_only,
            maproot: line.opts.maproot,
            mapall: line.opts.mapall,
            ignoregid: line.opts.ignoregid,
            mingoal: line.opts.mingoal,
            maxgoal: line.opts.maxgoal,
            open: Mutex::new(HashMap::new()),
        }
    }
}

/// Serves one client connection until it ends.
pub async fn serve(master: Arc<Master>, stream: TcpStream, peer: SocketAddr) {
    let Some((role, mut reader, mut writer)) = crate::link::accept(
        stream,
        peer,
        &[Role::Client, Role::Admin],
        "the master's client port",
    )
    .await
    else {
        return;
    };
    let (tx, mut rx) = mpsc::channel::<ClResponse>(4096);
    let writer_task = tokio::spawn(async move {
        while let Some(resp) = rx.recv().await {
            writer.send(&resp).await?;
            while let Ok(more) = rx.try_recv() {
                writer.send(&more).await?;
            }
            writer.flush().await?;
        }
        Ok::<(), moose_proto::ProtoError>(())
    });
    let mut session: Option<Arc<Session>> = None;
    let mut challenge: Option<Vec<u8>> = None;
    loop {
        let env: ClEnvelope = match reader.next_msg().await {
            Ok(e) => e,
            Err(e) if e.is_disconnect() => break,
            Err(e) => {
                tracing::warn!("client {peer}: {e}; closing the connection");
                break;
            }
        };
        let msgid = env.msgid;
        let result = match env.req {
            ClRequest::GetChallenge => {
                let c: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
                challenge = Some(c.clone());
                Ok(ClReply::Challenge(c))
            }
            ClRequest::Register(reg) if role == Role::Client => {
                if let Some(old) = session.take() {
                    release_session(&master, &old);
                    master
                        .sessions
                        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
                match register(&master, peer, &reg, challenge.take().as_deref()) {
                    Ok((s, reply)) => {
                        master
                            .sessions
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        session = Some(Arc::new(s));
                        Ok(reply)
                    }
                    Err(reason) => {
                        tracing::warn!(
                            "client {} refused (mount of '{}' at {}): {reason}",
                            peer.ip(),
                            reg.subdir,
                            reg.mount_point
                        );
                        Ok(ClReply::Refused(Refusal { reason }))
                    }
                }
            }
            ClRequest::ClusterInfo => Ok(ClReply::Cluster(requests::cluster_info(&master))),
            req => match &session {
                None => Err(FsError::NoSession),
                Some(s) => {
                    master
                        .ops_served
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    match requests::handle_now(&master, s, req) {
                        Step::Reply(result) => result,
                        Step::Durable(reply, version) => {
                            let (m, tx) = (master.clone(), tx.clone());
                            tokio::spawn(async move {
                                let result = m.durable(version).await.map(|()| reply);
                                let _ = tx.send(ClResponse { msgid, result }).await;
                            });
                            continue;
                        }
                        Step::Later(req) => {
                            let (m, s, tx) = (master.clone(), s.clone(), tx.clone());
                            tokio::spawn(async move {
                                let result = requests::handle_async(&m, &s, req).await;
                                let _ = tx.send(ClResponse { msgid, result }).await;
                            });
                            continue;
                        }
                    }
                }
            },
        };
        if tx.send(ClResponse { msgid, result }).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer_task.await;
    if let Some(s) = session {
        release_session(&master, &s);
        master
            .sessions
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!("session {} from {} closed", s.id, s.ip);
    }
}

fn register(
    master: &Master,
    peer: SocketAddr,
    reg: &RegisterRequest,
    challenge: Option<&[u8]>,
) -> Result<(Session, ClReply), String> {
    let subdir = normalize_path(&reg.subdir);
    let exports = master.exports.read();
    let line = exports.admit(peer.ip(), &subdir, reg.password_proof.as_deref(), challenge)?;
    let st = master.state();
    let mut root = moose_proto::ROOT_INODE;
    for part in subdir.split('/').filter(|p| !p.is_empty()) {
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
    let session = Session::new(id, peer.ip(), root, line);
    let params = line.describe();
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
        }),
    ))
}

/// A session ended: its open files close and its write locks are released.
fn release_session(master: &Master, s: &Session) {
    let open: Vec<(Inode, u32)> = s.open.lock().drain().collect();
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
            if st.meta.nodes.get(&inode).is_some_and(|n| n.nlink == 0) {
                let _ = master.commit(&mut st, Op::Purge { inode });
            }
        }
    }
}
