//! The metalogger port (9419): a metalogger gets a dump, then every change as it is made.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use moose_proto::handshake::Role;
use moose_proto::msg::{MasterToMl, MlToMaster};
use moose_proto::{FrameReader, FrameWriter};
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::master::Master;
use crate::metadata;

const DUMP_PART: usize = 1 << 20;
/// A metalogger that sends nothing (it sends a `Nop` or `Synced` every few seconds) for this
/// long is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn serve(master: Arc<Master>, stream: TcpStream, peer: SocketAddr) {
    let Some(crate::link::Accepted {
        mut reader,
        mut writer,
        nonce,
        ..
    }) = crate::link::accept(
        stream,
        peer,
        &[Role::Metalogger],
        "the master's metalogger port",
    )
    .await
    else {
        return;
    };
    let first = tokio::time::timeout(IDLE_TIMEOUT, reader.next_msg::<MlToMaster>()).await;
    let version = match first {
        Ok(Ok(MlToMaster::Register { version, auth })) => {
            match master
                .trust
                .check_registration("metalogger", &nonce, auth.as_ref())
            {
                Ok(proof) => {
                    if writer
                        .send_now(&MasterToMl::Welcome { proof })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    version
                }
                Err(reason) => {
                    crate::link::REFUSALS
                        .warn(peer.ip(), &format!("metalogger {peer} refused: {reason}"));
                    let _ = writer.send_now(&MasterToMl::Refused { reason }).await;
                    return;
                }
            }
        }
        Ok(Ok(other)) => {
            crate::link::REFUSALS.warn(
                peer.ip(),
                &format!("metalogger {peer}: expected a registration first, got {other:?}"),
            );
            return;
        }
        // A port check (moosectl doctor) says hello and goes: nothing for the log's reader.
        Ok(Err(e)) if e.is_disconnect() => {
            tracing::debug!("metalogger port: {peer} closed after the hello, unregistered");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!("metalogger {peer}: {e}");
            return;
        }
        Err(_) => {
            crate::link::REFUSALS.warn(
                peer.ip(),
                &format!(
                    "metalogger {peer}: no registration within {} s; closed",
                    IDLE_TIMEOUT.as_secs()
                ),
            );
            return;
        }
    };
    let id = master.metaloggers.lock().add(peer.to_string());
    match follow(&master, id, version, &mut reader, &mut writer).await {
        Ok(()) => tracing::info!("metalogger {peer} disconnected"),
        Err(e) => tracing::warn!("metalogger {peer} disconnected: {e:#}"),
    }
    master.metaloggers.lock().remove(id);
}

async fn follow<R, W>(
    master: &Master,
    id: u64,
    version: String,
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
) -> anyhow::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut changes = master.log.subscribe();
    let (dump, cluster_id, at) = {
        let st = master.state();
        (
            metadata::encode(&st.meta)?,
            st.meta.cluster_id,
            st.meta.version,
        )
    };
    tracing::info!(
        "metalogger (software {version}) connected: sending the dump at version {at} ({} bytes)",
        dump.len()
    );
    writer
        .send(&MasterToMl::DumpStart {
            cluster_id,
            version: at,
            size: dump.len() as u64,
        })
        .await?;
    for part in dump.chunks(DUMP_PART) {
        writer.send(&MasterToMl::DumpPart(part.to_vec())).await?;
    }
    writer.send_now(&MasterToMl::DumpEnd).await?;
    drop(dump);
    let mut idle = tokio::time::interval(Duration::from_secs(2));
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            rec = changes.recv() => {
                let mut batch = Vec::new();
                keep(&mut batch, at, rec)?;
                while batch.len() < 4096 {
                    match changes.try_recv() {
                        Ok(x) => keep(&mut batch, at, Ok(x))?,
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Lagged(n)) => keep(&mut batch, at, Err(RecvError::Lagged(n)))?,
                        Err(TryRecvError::Closed) => keep(&mut batch, at, Err(RecvError::Closed))?,
                    }
                }
                if !batch.is_empty() {
                    writer.send_now(&MasterToMl::Changes(batch)).await?;
                }
            }
            msg = reader.next_msg::<MlToMaster>() => match msg {
                Ok(MlToMaster::Nop) => heard = tokio::time::Instant::now(),
                Ok(MlToMaster::Synced { version }) => {
                    heard = tokio::time::Instant::now();
                    master.metaloggers.lock().synced(id, version)
                }
                Ok(other) => anyhow::bail!("unexpected message {other:?}"),
                Err(e) if e.is_disconnect() => return Ok(()),
                Err(e) => return Err(e.into()),
            },
            _ = idle.tick() => {
                if heard.elapsed() > IDLE_TIMEOUT {
                    anyhow::bail!("nothing received for {} s", IDLE_TIMEOUT.as_secs());
                }
                writer.send_now(&MasterToMl::Nop).await?
            }
        }
    }
}

type Change = (u64, Arc<Vec<u8>>);

/// Adds a change newer than the dump (at version `at`) to the batch.
fn keep(
    batch: &mut Vec<(u64, Vec<u8>)>,
    at: u64,
    r: Result<Change, RecvError>,
) -> anyhow::Result<()> {
    match r {
        Ok((v, bytes)) if v > at => {
            batch.push((v, bytes.to_vec()));
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(RecvError::Lagged(n)) => {
            anyhow::bail!("metalogger fell {n} changes behind; it will download a new dump")
        }
        Err(RecvError::Closed) => anyhow::bail!("master is stopping"),
    }
}
