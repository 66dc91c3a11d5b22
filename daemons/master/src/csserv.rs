//! The chunkserver port (9420): registration, chunk inventories, disk reports, and the orders
//! the master gives (create, delete, set version, truncate, replicate).

use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moose_proto::handshake::Role;
use moose_proto::msg::{CsToMaster, MasterToCs};
use moose_proto::{ChunkRef, CsAddr, DiskReport, FrameReader, FrameWriter, FsError};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::master::Master;
use crate::state::Copy;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<(), FsError>>>>>;

/// A chunkserver the master knows (connected now or earlier).
pub struct CsEntry {
    pub id: u32,
    pub addr: CsAddr,
    pub version: String,
    pub connected: bool,
    pub disks: Vec<DiskReport>,
    /// Left with a goodbye (graceful stop) rather than by losing the connection.
    pub left_gracefully: bool,
    tx: Option<mpsc::Sender<MasterToCs>>,
    pending: Pending,
}

impl CsEntry {
    pub fn total(&self) -> u64 {
        self.disks.iter().map(|d| d.total).sum()
    }

    pub fn avail(&self) -> u64 {
        self.disks
            .iter()
            .filter(|d| !d.marked_for_removal && !d.damaged)
            .map(|d| d.avail)
            .sum()
    }

    pub fn used(&self) -> u64 {
        self.disks.iter().map(|d| d.used).sum()
    }

    /// Space of the disks that take new chunks (neither marked for removal nor damaged).
    pub fn usable_total(&self) -> u64 {
        self.disks
            .iter()
            .filter(|d| !d.marked_for_removal && !d.damaged)
            .map(|d| d.total)
            .sum()
    }

    /// Share of the space of its usable disks that is taken.
    pub fn usage(&self) -> f64 {
        let (mut total, mut avail) = (0u64, 0u64);
        for d in self
            .disks
            .iter()
            .filter(|d| !d.marked_for_removal && !d.damaged)
        {
            total += d.total;
            avail += d.avail;
        }
        if total == 0 {
            1.0
        } else {
            1.0 - avail as f64 / total as f64
        }
    }

    /// Can take new chunks: connected and has a usable disk with room.
    pub fn writable(&self) -> bool {
        self.connected
            && self
                .disks
                .iter()
                .any(|d| !d.marked_for_removal && !d.damaged && d.avail > moose_proto::CHUNK_SIZE)
    }
}

/// Placement view of one chunkserver.
#[derive(Debug, Clone)]
pub struct CsView {
    pub id: u32,
    pub avail: u64,
    /// Space of its usable disks.
    pub total: u64,
    /// When its last space report arrived.
    pub reported: Option<Instant>,
    /// Share of the usable space in use, 0.0 to 1.0.
    pub usage: f64,
    pub writable: bool,
}

pub struct CsRegistry {
    entries: Mutex<HashMap<u32, CsEntry>>,
    next_req: AtomicU64,
    timeout: Duration,
    /// When each chunkserver's last space report arrived (rebalancing waits for fresh ones).
    reported: Mutex<HashMap<u32, Instant>>,
}

impl CsRegistry {
    pub fn new(timeout_secs: u64) -> Self {
        CsRegistry {
            entries: Mutex::new(HashMap::new()),
            next_req: AtomicU64::new(1),
            timeout: Duration::from_secs(timeout_secs),
            reported: Mutex::new(HashMap::new()),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, HashMap<u32, CsEntry>> {
        self.entries.lock()
    }

    /// Connected chunkservers, for placement decisions.
    pub fn connected(&self) -> Vec<CsView> {
        self.lock()
            .values()
            .filter(|e| e.connected)
            .map(|e| CsView {
                id: e.id,
                avail: e.avail(),
                total: e.usable_total(),
                reported: self.reported.lock().get(&e.id).copied(),
                usage: e.usage(),
                writable: e.writable(),
            })
            .collect()
    }

    pub fn is_connected(&self, id: u32) -> bool {
        self.lock().get(&id).is_some_and(|e| e.connected)
    }

    pub fn addr(&self, id: u32) -> Option<CsAddr> {
        self.lock().get(&id).map(|e| e.addr.clone())
    }

    pub fn id_of(&self, addr: &CsAddr) -> Option<u32> {
        self.lock().values().find(|e| &e.addr == addr).map(|e| e.id)
    }

    /// Adds a registering chunkserver, keeping the id it had (by its saved id or address) or
    /// giving it a new one. Refuses a second chunkserver on an address already connected.
    pub fn admit(&self, mut entry: CsEntry) -> Result<u32, String> {
        let mut entries = self.lock();
        if let Some(e) = entries
            .values()
            .find(|e| e.addr == entry.addr && e.connected)
        {
            return Err(format!(
                "a chunkserver at {} is already connected (id {}); two chunkservers on one \
                 host need distinct CSSERV_LISTEN_PORT values",
                entry.addr, e.id
            ));
        }
        let wanted = entry.id;
        if let Some(holder) = entries.get(&wanted).filter(|e| wanted != 0 && e.connected) {
            return Err(format!(
                "chunkserver id {wanted} belongs to the chunkserver at {} that is connected now; \
                 an id is never handed to a second server. If this is a copy of that server's \
                 DATA_PATH (a cloned machine), remove chunkserver.id from this one's DATA_PATH \
                 so that it gets an id of its own",
                holder.addr
            ));
        }
        let known = entries
            .values()
            .find(|e| (wanted != 0 && e.id == wanted) || e.addr == entry.addr)
            .map(|e| e.id);
        let id = match known {
            Some(id) => id,
            None if wanted != 0 && !entries.contains_key(&wanted) => wanted,
            None => entries.keys().max().copied().unwrap_or(0) + 1,
        };
        entry.id = id;
        entries.insert(id, entry);
        Ok(id)
    }

    /// Sends an order to chunkserver `id` and waits for its result.
    pub async fn order(
        &self,
        id: u32,
        make: impl FnOnce(u64) -> MasterToCs,
    ) -> Result<(), FsError> {
        let req_id = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let sender = {
            let entries = self.lock();
            let e = entries
                .get(&id)
                .filter(|e| e.connected)
                .ok_or(FsError::Io)?;
            e.pending.lock().insert(req_id, tx);
            e.tx.clone().ok_or(FsError::Io)?
        };
        sender.send(make(req_id)).await.map_err(|_| FsError::Io)?;
        match tokio::time::timeout(self.timeout * 3, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(FsError::Io),
            Err(_) => {
                if let Some(e) = self.lock().get(&id) {
                    e.pending.lock().remove(&req_id);
                }
                Err(FsError::TimedOut)
            }
        }
    }
}

/// Serves one chunkserver connection until it ends.
pub async fn serve(master: Arc<Master>, stream: TcpStream, peer: SocketAddr) {
    let Some(crate::link::Accepted {
        reader,
        writer,
        nonce,
        ..
    }) = crate::link::accept(
        stream,
        peer,
        &[Role::Chunkserver],
        "the master's chunkserver port",
    )
    .await
    else {
        return;
    };
    match register_and_serve(&master, reader, writer, peer, &nonce).await {
        Ok(()) => {}
        Err(e) => tracing::warn!("chunkserver {peer}: {e}"),
    }
}

async fn refuse<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    peer: SocketAddr,
    reason: String,
) -> anyhow::Result<()> {
    crate::link::REFUSALS.warn(peer.ip(), &format!("chunkserver {peer} refused: {reason}"));
    writer
        .send_now(&MasterToCs::Refused {
            reason: reason.clone(),
        })
        .await?;
    anyhow::bail!("refused: {reason}")
}

async fn register_and_serve<R, W>(
    master: &Arc<Master>,
    mut reader: FrameReader<R>,
    mut writer: FrameWriter<W>,
    peer: SocketAddr,
    nonce: &[u8],
) -> anyhow::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let first = tokio::time::timeout(master.cs.timeout, reader.next_msg()).await;
    let Ok(first) = first else {
        return refuse(
            &mut writer,
            peer,
            format!(
                "no registration within {} s of the hello",
                master.cs.timeout.as_secs()
            ),
        )
        .await;
    };
    let CsToMaster::Register {
        cs_id,
        cluster_id,
        listen_host,
        listen_port,
        version,
        disks,
        auth,
    } = first?
    else {
        return refuse(&mut writer, peer, "expected a registration first".into()).await;
    };
    let proof = match master
        .trust
        .check_registration("chunkserver", nonce, auth.as_ref())
    {
        Ok(p) => p,
        Err(reason) => return refuse(&mut writer, peer, reason).await,
    };
    let our_cluster = master.state().meta.cluster_id;
    if cluster_id != 0 && cluster_id != our_cluster {
        return refuse(
            &mut writer,
            peer,
            format!(
                "this chunkserver belongs to cluster {cluster_id:016X} but this master serves \
                 cluster {our_cluster:016X}; if its data is disposable, remove chunkserver.id from \
                 its DATA_PATH and .metaid from each of its disks"
            ),
        )
        .await;
    }
    let host = if listen_host.is_empty() {
        peer.ip().to_string()
    } else {
        listen_host
    };
    let addr = CsAddr {
        host,
        port: listen_port,
    };
    // Inventory.
    let mut inventory: Vec<ChunkRef> = Vec::new();
    loop {
        let next = tokio::time::timeout(master.cs.timeout, reader.next_msg::<CsToMaster>()).await;
        let Ok(next) = next else {
            return refuse(
                &mut writer,
                peer,
                format!(
                    "registration stalled: nothing for {} s before its end",
                    master.cs.timeout.as_secs()
                ),
            )
            .await;
        };
        match next? {
            CsToMaster::Chunks(batch) => inventory.extend(batch),
            CsToMaster::RegisterEnd => break,
            CsToMaster::Nop | CsToMaster::Space(_) => {}
            other => {
                return refuse(
                    &mut writer,
                    peer,
                    format!("unexpected message during registration: {other:?}"),
                )
                .await
            }
        }
    }
    // The claims must check out against the server's own disk report: each chunk once, and
    // not (beyond a little slack for chunks created while the report was taken) more chunks
    // than its disks hold.
    inventory.sort_by_key(|c| (c.chunk_id, c.version));
    inventory.dedup();
    let on_disks: u64 = disks.iter().map(|d| d.chunks).sum();
    if inventory.len() as u64 > on_disks + on_disks / 100 + 16 {
        return refuse(
            &mut writer,
            peer,
            format!(
                "it claims {} chunks but its disks report {on_disks}; its claims do not check out",
                inventory.len()
            ),
        )
        .await;
    }
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let (tx, mut rx) = mpsc::channel::<MasterToCs>(1024);
    let admitted = master.cs.admit(CsEntry {
        id: cs_id,
        addr: addr.clone(),
        version,
        connected: true,
        disks,
        left_gracefully: false,
        tx: Some(tx),
        pending: pending.clone(),
    });
    let id = match admitted {
        Ok(id) => id,
        Err(reason) => return refuse(&mut writer, peer, reason).await,
    };
    master.known_servers.note(id);
    let (known, unknown) = {
        let mut st = master.state();
        let mut unknown = Vec::new();
        let mut known = 0usize;
        for c in &inventory {
            if st.meta.chunks.contains_key(&c.chunk_id) {
                let copies = st.rt.locations.entry(c.chunk_id).or_default();
                copies.retain(|x| x.cs != id);
                copies.push(Copy {
                    cs: id,
                    version: c.version,
                });
                known += 1;
            } else {
                unknown.push(*c);
            }
        }
        for c in &unknown {
            st.rt.deletions.push((id, *c));
        }
        (known, unknown.len())
    };
    writer
        .send_now(&MasterToCs::RegisterAck {
            cs_id: id,
            cluster_id: our_cluster,
            proof,
            token_key: master.trust.key_for_chunkservers(),
        })
        .await?;
    tracing::info!(
        "chunkserver {addr} registered (id {id}): {known} chunks known, {unknown} unknown (to delete)"
    );

    // Orders go out through a writer task; results and reports come in here.
    let mut writer_task = {
        let mut w = writer;
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                w.send(&msg).await?;
                while let Ok(more) = rx.try_recv() {
                    w.send(&more).await?;
                }
                w.flush().await?;
            }
            Ok::<(), moose_proto::ProtoError>(())
        })
    };
    let timeout = master.cs.timeout;
    let result: anyhow::Result<()> = loop {
        let msg = tokio::select! {
            m = tokio::time::timeout(timeout, reader.next_msg::<CsToMaster>()) => m,
            _ = &mut writer_task => break Err(anyhow::anyhow!("connection lost while sending")),
        };
        let msg = match msg {
            Err(_) => {
                break Err(anyhow::anyhow!(
                    "no message for {} s; dropping it",
                    timeout.as_secs()
                ))
            }
            Ok(Err(e)) if e.is_disconnect() => break Ok(()),
            Ok(Err(e)) => break Err(e.into()),
            Ok(Ok(m)) => m,
        };
        match msg {
            CsToMaster::Space(disks) => {
                if let Some(e) = master.cs.lock().get_mut(&id) {
                    e.disks = disks;
                }
                master.cs.reported.lock().insert(id, Instant::now());
            }
            CsToMaster::OpDone { req_id, status } => {
                if let Some(tx) = pending.lock().remove(&req_id) {
                    let _ = tx.send(status);
                }
            }
            CsToMaster::ChunkDamaged(c) | CsToMaster::ChunkLost(c) => {
                tracing::warn!(
                    "chunkserver {addr}: copy of chunk {:016X} v{} is damaged or lost",
                    c.chunk_id,
                    c.version
                );
                drop_bad_copy(master, id, c);
            }
            CsToMaster::MarkedChunks(disks) => {
                let mut st = master.state();
                st.rt.marked.retain(|(_, cs), _| *cs != id);
                let mut n = 0;
                for d in disks {
                    for c in d.chunks {
                        st.rt.marked.insert((c.chunk_id, id), d.path.clone());
                        n += 1;
                    }
                }
                if n > 0 {
                    tracing::info!("chunkserver {addr}: {n} chunks on disks marked for removal");
                }
            }
            CsToMaster::Goodbye => {
                tracing::info!("chunkserver {addr} is stopping (graceful disconnection)");
                if let Some(e) = master.cs.lock().get_mut(&id) {
                    e.left_gracefully = true;
                }
                break Ok(());
            }
            CsToMaster::Nop => {}
            other => tracing::warn!("chunkserver {addr}: unexpected message {other:?}"),
        }
    };
    writer_task.abort();
    disconnect(master, id);
    match &result {
        Ok(()) => tracing::info!("chunkserver {addr} disconnected (id {id})"),
        Err(e) => tracing::warn!("chunkserver {addr} disconnected (id {id}): {e}"),
    }
    result
}

/// A chunkserver is gone: its copies stop counting at once and its pending orders fail.
fn disconnect(master: &Master, id: u32) {
    let pending = {
        let mut entries = master.cs.lock();
        let Some(e) = entries.get_mut(&id) else {
            return;
        };
        e.connected = false;
        e.tx = None;
        let mut p = e.pending.lock();
        std::mem::take(&mut *p)
    };
    for (_, tx) in pending {
        let _ = tx.send(Err(FsError::Io));
    }
    let mut st = master.state();
    st.rt.locations.retain(|_, copies| {
        copies.retain(|c| c.cs != id);
        !copies.is_empty()
    });
    st.rt.deletions.retain(|(cs, _)| *cs != id);
    st.rt.marked.retain(|(_, cs), _| *cs != id);
    st.rt.damaged.retain(|(_, cs)| *cs != id);
}

/// A copy failed its CRC: it stops counting and serving reads when another valid copy
/// exists (the health loop then replaces or deletes it); the only copy is kept in use for the
/// blocks that still read.
pub fn drop_bad_copy(master: &Master, cs: u32, c: ChunkRef) {
    let mut st = master.state();
    let Some(current) = st.meta.chunks.get(&c.chunk_id).map(|m| m.version) else {
        return;
    };
    if c.version != current {
        return;
    }
    let others_valid = st.rt.locations.get(&c.chunk_id).map_or(0, |copies| {
        copies
            .iter()
            .filter(|x| {
                x.cs != cs && x.version == current && !st.rt.damaged.contains(&(c.chunk_id, x.cs))
            })
            .count()
    });
    if others_valid > 0 {
        st.rt.damaged.insert((c.chunk_id, cs));
    } else {
        tracing::error!(
            "chunk {:016X}: the only copy (on chunkserver id {cs}) is damaged; keeping it for the blocks that still read",
            c.chunk_id
        );
    }
}
