//! moose-metalogger: follows the master's changes so that a lost master can be rebuilt from
//! this DATA_PATH (`moose-master -c CFG restore DATA_PATH_OF_THE_METALOGGER`).

mod store;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use moose_common::{DaemonContext, DaemonSpec, Workers};
use moose_formats::{KeySet, MetaloggerCfg, MetaloggerKeys};
use moose_proto::auth;
use moose_proto::handshake::{say_hello_nonce, Role};
use moose_proto::msg::{MasterToMl, MlToMaster};
use moose_proto::{FrameReader, FrameWriter};
use tokio::net::TcpStream;

const SPEC: DaemonSpec = DaemonSpec {
    name: "moose-metalogger",
    default_config: "/etc/moosefs/moose-metalogger.cfg",
    keys: MetaloggerKeys::NAMES,
    default_data_path: "/var/lib/moosefs",
    workers: Workers::PerCpu,
};

fn main() -> ExitCode {
    moose_common::daemon::main(&SPEC, run)
}

struct Settings {
    master: String,
    port: u16,
    timeout: Duration,
    reconnect: Duration,
    download_every: Duration,
    /// The cluster secret proved to the master (`AUTH_CODE`).
    auth_code: Option<String>,
}

async fn run(ctx: DaemonContext) -> anyhow::Result<()> {
    let k = MetaloggerCfg::from_config(&ctx.config)?.keys;
    let settings = Settings {
        master: k.master_host(),
        port: k.master_port(),
        timeout: Duration::from_secs(k.master_timeout().0),
        reconnect: Duration::from_secs(k.master_reconnection_delay().0),
        download_every: Duration::from_secs(k.meta_download_freq().saturating_mul(3600)),
        auth_code: k.auth_code.clone().map(|n| n.0),
    };
    let back_logs = u32::try_from(k.back_logs())?;
    let store = store::Store::new(ctx.data_path.clone(), back_logs);
    let mut shutdown = ctx.shutdown_signal();
    let mut announced = false;
    loop {
        let session = follow(&ctx, &settings, &store, &mut announced);
        tokio::select! {
            r = session => match r {
                Ok(()) => tracing::info!("downloading a fresh dump (META_DOWNLOAD_FREQ)"),
                Err(e) if !announced && e.downcast_ref::<store::OtherCluster>().is_some() => {
                    // Refuse to start rather than wait: the admin must choose.
                    return Err(e);
                }
                Err(e) => {
                    let msg = format!("master {}:{}: {e:#}", settings.master, settings.port);
                    tracing::warn!("{msg}; retrying in {} s", settings.reconnect.as_secs());
                    ctx.progress(&msg);
                    tokio::select! {
                        _ = tokio::time::sleep(settings.reconnect) => {}
                        _ = shutdown.changed() => break,
                    }
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    store.close().await;
    Ok(())
}

/// One connection: download the dump, then append every change until the connection ends or
/// it is time for a fresh dump.
async fn follow(
    ctx: &DaemonContext,
    s: &Settings,
    store: &store::Store,
    announced: &mut bool,
) -> anyhow::Result<()> {
    let addr = format!("{}:{}", s.master, s.port);
    let mut addrs = tokio::net::lookup_host((s.master.as_str(), s.port))
        .await
        .with_context(|| {
            format!(
                "cannot resolve master host '{}' (MASTER_HOST in {}); set MASTER_HOST to the \
                 master's address or add the name to /etc/hosts",
                s.master,
                ctx.config.path().display()
            )
        })?;
    let target = addrs
        .next()
        .with_context(|| format!("'{}' resolves to no address", s.master))?;
    let stream = tokio::time::timeout(s.timeout, TcpStream::connect(target))
        .await
        .with_context(|| format!("connecting to {addr} timed out"))?
        .with_context(|| format!("cannot connect to {addr}"))?;
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let mut reader = FrameReader::new(r);
    let mut writer = FrameWriter::new(w);
    let (_, master_nonce) =
        say_hello_nonce(&mut reader, &mut writer, Role::Metalogger, &addr).await?;
    let proof = s
        .auth_code
        .as_ref()
        .map(|c| auth::peer_proof(c.as_bytes(), "metalogger", &master_nonce));
    let our_nonce = proof.as_ref().map(|p| p.nonce.clone()).unwrap_or_default();
    writer
        .send_now(&MlToMaster::Register {
            version: moose_proto::VERSION.to_string(),
            auth: proof,
        })
        .await?;
    match next(&mut reader, s.timeout).await? {
        MasterToMl::Welcome { proof } => match (&s.auth_code, proof) {
            (None, _) => {}
            (Some(c), Some(p))
                if auth::same(
                    &p,
                    &auth::master_proof(c.as_bytes(), "metalogger", &master_nonce, &our_nonce),
                ) => {}
            (Some(_), _) => bail!(
                "master {addr} does not know the cluster secret (AUTH_CODE differs or is not \
                 set there); not taking its metadata"
            ),
        },
        MasterToMl::Refused { reason } => bail!("master {addr} refused this metalogger: {reason}"),
        other => bail!("expected the master's welcome, got {other:?}"),
    }
    let started = Instant::now();
    // The dump.
    let (cluster_id, version, size) = match next(&mut reader, s.timeout).await? {
        MasterToMl::DumpStart {
            cluster_id,
            version,
            size,
        } => (cluster_id, version, size),
        other => bail!("expected a dump, got {other:?}"),
    };
    let mut dump = Vec::with_capacity(size.min(1 << 30) as usize);
    loop {
        match next(&mut reader, s.timeout * 6).await? {
            MasterToMl::DumpPart(p) => dump.extend_from_slice(&p),
            MasterToMl::DumpEnd => break,
            MasterToMl::Nop => {}
            other => bail!("unexpected message during the dump: {other:?}"),
        }
        if dump.len() as u64 > size {
            bail!("the dump is larger than announced ({size} bytes)");
        }
    }
    if dump.len() as u64 != size {
        bail!("the dump ended after {} of {size} bytes", dump.len());
    }
    store.save_dump(dump, cluster_id).await?;
    writer.send_now(&MlToMaster::Synced { version }).await?;
    tracing::info!(
        "connected to master {addr}: dump at version {version} saved ({size} bytes, {:.2} s)",
        started.elapsed().as_secs_f64()
    );
    if !*announced {
        ctx.ready();
        *announced = true;
    }
    // Live changes.
    let mut last = version;
    let mut nop = tokio::time::interval(s.timeout / 2);
    loop {
        if started.elapsed() >= s.download_every {
            return Ok(());
        }
        tokio::select! {
            msg = next(&mut reader, s.timeout) => match msg? {
                MasterToMl::Changes(batch) => {
                    for (v, _) in &batch {
                        if *v != last + 1 {
                            bail!("change {v} follows {last}: changes were lost; downloading again");
                        }
                        last = *v;
                    }
                    store.append(batch.into_iter().map(|(_, b)| b).collect()).await?;
                    writer.send_now(&MlToMaster::Synced { version: last }).await?;
                }
                MasterToMl::Nop => {}
                other => bail!("unexpected message {other:?}"),
            },
            _ = nop.tick() => writer.send_now(&MlToMaster::Nop).await?,
        }
    }
}

async fn next<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    timeout: Duration,
) -> anyhow::Result<MasterToMl> {
    match tokio::time::timeout(timeout, reader.next_msg::<MasterToMl>()).await {
        Err(_) => bail!("no message from the master for {} s", timeout.as_secs()),
        Ok(Err(e)) if e.is_disconnect() => bail!("the master closed the connection"),
        Ok(r) => Ok(r?),
    }
}
