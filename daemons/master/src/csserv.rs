//! The chunkserver port (9420): registration, chunk inventories, disk reports, and the orders
//! the master gives (create, delete, set version, truncate, replicate).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use moose_proto::handshake::Role;
use moose_proto::msg::{CsToMaster, MasterToCs};
use moose_proto::{ChunkRef, CsAddr, FrameReader, FrameWriter, FsError};
use tokio::net::TcpStream;

use crate::cs_registry::{CsEntry, OrderQueue, Pending};
use crate::master::Master;
use crate::state::Copy;

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
    let first = tokio::time::timeout(master.cs.timeout(), reader.next_msg()).await;
    let Ok(first) = first else {
        return refuse(
            &mut writer,
            peer,
            format!(
                "no registration within {} s of the hello",
                master.cs.timeout().as_secs()
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
    } = (match first {
        // A port check (moosectl doctor) says hello and goes: nothing for the log's reader.
        Err(e) if e.is_disconnect() => {
            tracing::debug!("chunkserver port: {peer} closed after the hello, unregistered");
            return Ok(());
        }
        other => other?,
    })
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
        let next = tokio::time::timeout(master.cs.timeout(), reader.next_msg::<CsToMaster>()).await;
        let Ok(next) = next else {
            return refuse(
                &mut writer,
                peer,
                format!(
                    "registration stalled: nothing for {} s before its end",
                    master.cs.timeout().as_secs()
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
    let (queue, mut rx, written) = OrderQueue::new();
    let entry = CsEntry {
        id: cs_id,
        addr: addr.clone(),
        version,
        connected: true,
        disks,
        left_gracefully: false,
        tx: Some(queue),
        pending: pending.clone(),
    };
    let (id, known, unknown) = match admit_with_copies(master, entry, &inventory) {
        Ok(admitted) => admitted,
        Err(reason) => return refuse(&mut writer, peer, reason).await,
    };
    // A server's first registration writes and syncs the list of known servers: off the
    // runtime's one worker thread.
    let m = Arc::clone(master);
    if let Err(e) = tokio::task::spawn_blocking(move || m.known_servers.note(id)).await {
        tracing::error!("noting chunkserver {id} as known failed: {e}");
    }
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

    // Orders go out through a writer task, which counts what reached the socket; results
    // and reports come in here.
    let mut writer_task = {
        let mut w = writer;
        tokio::spawn(async move {
            let mut sent = 0u64;
            while let Some(msg) = rx.recv().await {
                w.send(&msg).await?;
                sent += 1;
                while let Ok(more) = rx.try_recv() {
                    w.send(&more).await?;
                    sent += 1;
                }
                w.flush().await?;
                written.send_replace(sent);
            }
            Ok::<(), moose_proto::ProtoError>(())
        })
    };
    let timeout = master.cs.timeout();
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
                master.cs.note_space_report(id);
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

/// Admits a registered server together with its copies, in one step under the state lock:
/// the health loop must never see the server connected without its chunks, or it orders
/// copies of them onto it. Returns the id and the numbers of known and unknown chunks (the
/// unknown ones are queued for deletion).
fn admit_with_copies(
    master: &Master,
    entry: CsEntry,
    inventory: &[ChunkRef],
) -> Result<(u32, usize, usize), String> {
    let mut st = master.state();
    let id = master.cs.admit(entry)?;
    let mut unknown = 0usize;
    for c in inventory {
        if st.meta.chunks.contains_key(&c.chunk_id) {
            let copies = st.rt.locations.entry(c.chunk_id).or_default();
            copies.retain(|x| x.cs != id);
            copies.push(Copy {
                cs: id,
                version: c.version,
            });
        } else {
            unknown += 1;
            st.rt.deletions.push((id, *c));
        }
    }
    Ok((id, inventory.len() - unknown, unknown))
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
