//! moose-master: the metadata server.

mod access;
mod changelog;
mod chunk_tally;
mod clserv;
mod config;
mod cs_registry;
mod csserv;
mod data_marks;
mod dir;
mod dirinfo;
#[cfg(test)]
mod footprint;
mod health;
mod inode_map;
mod known_servers;
mod link;
mod master;
mod metadata;
mod ml_registry;
mod mlserv;
mod namespace;
mod ops;
mod page_cache;
mod placement;
mod quota;
mod read_order;
mod rebalance;
mod recent;
mod requests;
mod sessions;
mod snapshot;
mod state;
#[cfg(test)]
mod test_ops;
mod trash;
mod trust;
mod watches;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use moose_common::{DaemonContext, DaemonSpec, Verb, Workers};
use tokio::net::TcpListener;

const SPEC: DaemonSpec = DaemonSpec {
    name: "moose-master",
    default_config: "/etc/moosefs/moose-master.cfg",
    keys: config::KEYS,
    default_data_path: "/var/lib/moosefs",
    // Every request takes the metadata's one lock: with one worker thread, creates, `ls -lR`
    // and `rm -rf` of small files took 0.84–1.01 of the time (docs/benchmarks.md).
    workers: Workers::One,
};

fn main() -> ExitCode {
    moose_common::daemon::main(&SPEC, run)
}

async fn bind(addr: &(String, u16), keys: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind((addr.0.as_str(), addr.1))
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}:{} ({keys}); is another master running, or is the port taken?",
                addr.0, addr.1
            )
        })
}

async fn run(ctx: DaemonContext) -> anyhow::Result<()> {
    let cfg = config::MasterConfig::from_config(&ctx.config, ctx.data_path.clone())?;
    let exports = moose_common::exports::load(&cfg.exports_file)?;
    tracing::info!(
        "exports file {} loaded: {} lines",
        cfg.exports_file.display(),
        exports.lines.len()
    );
    let (dir, goal) = (cfg.data_path.clone(), cfg.default_goal);
    if ctx.verb == Verb::Restore {
        let [from] = ctx.args.as_slice() else {
            anyhow::bail!(
                "usage: moose-master -c CFG restore FROM_DIR (a folder of metalogger files)"
            );
        };
        let from = from.clone();
        let version = tokio::task::spawn_blocking(move || master::restore(&from, &dir, goal))
            .await
            .context("restore failed")??;
        println!(
            "metadata restored at version {version} into {}; start the master now",
            cfg.data_path.display()
        );
        return Ok(());
    }
    let (meta, fresh) = tokio::task::spawn_blocking(move || master::load_meta(&dir, goal, true))
        .await
        .context("metadata loader failed")??;
    let m = Arc::new(master::Master::new(cfg, meta, exports)?);
    if fresh {
        m.dump()
            .await
            .context("cannot write the first metadata dump")?;
    }
    let orphans = m.state().orphans();
    if !orphans.is_empty() {
        tracing::info!(
            "removing {} files that were deleted while open",
            orphans.len()
        );
        let mut st = m.state();
        for op in orphans {
            m.commit(&mut st, op)?;
        }
    }
    let ml_listener = bind(&m.cfg.ml_listen, "MATOML_LISTEN_HOST/PORT").await?;
    let cs_listener = bind(&m.cfg.cs_listen, "MATOCS_LISTEN_HOST/PORT").await?;
    let cl_listener = bind(&m.cfg.cl_listen, "MATOCL_LISTEN_HOST/PORT").await?;
    tracing::info!(
        "listening for metaloggers on {}:{}, chunkservers on {}:{}, clients on {}:{}",
        m.cfg.ml_listen.0,
        m.cfg.ml_listen.1,
        m.cfg.cs_listen.0,
        m.cfg.cs_listen.1,
        m.cfg.cl_listen.0,
        m.cfg.cl_listen.1
    );
    let shutdown = ctx.shutdown_signal();
    tokio::spawn(accept_loop(m.clone(), ml_listener, Link::Metalogger));
    tokio::spawn(accept_loop(m.clone(), cs_listener, Link::Chunkserver));
    tokio::spawn(accept_loop(m.clone(), cl_listener, Link::Client));
    tokio::spawn(health::run(m.clone(), shutdown.clone()));
    tokio::spawn(sessions::expire_loop(m.clone()));
    tokio::spawn(dump_loop(m.clone()));
    tokio::spawn(trash::purge_loop(m.clone()));
    tokio::spawn(requests::quota_clock_loop(m.clone()));
    ctx.ready();
    tracing::info!("moose-master ready");

    let mut shutdown = shutdown;
    let mut reload = ctx.reload_signal();
    let mut log_status = m.log.status();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = reload.changed() => match moose_common::exports::load(&m.cfg.exports_file) {
                Ok(e) => {
                    tracing::info!("exports reloaded: {} lines (applies to new mounts)", e.lines.len());
                    *m.exports.write() = e;
                }
                Err(e) => tracing::error!("exports not reloaded, keeping the old ones: {e}"),
            },
            r = log_status.changed() => {
                let failed = log_status.borrow().failed.clone();
                if let Some(e) = failed {
                    anyhow::bail!("cannot write the changelog: {e}");
                }
                if r.is_err() {
                    anyhow::bail!("the changelog writer stopped");
                }
            }
        }
    }
    tracing::info!("stopping: writing the final metadata dump");
    let version = m.dump().await.context("final metadata dump failed")?;
    tracing::info!("metadata saved at version {version}");
    Ok(())
}

#[derive(Clone, Copy)]
enum Link {
    Metalogger,
    Chunkserver,
    Client,
}

async fn accept_loop(m: Arc<master::Master>, listener: TcpListener, link: Link) {
    let cap = moose_common::limits::ConnectionCap::new(link::MAX_CONNECTIONS);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some(slot) = cap.try_admit() else {
                    link::REFUSALS.warn(
                        peer.ip(),
                        &format!(
                            "connection from {peer} refused: {} connections are open on this \
                             port already (the limit)",
                            cap.max()
                        ),
                    );
                    drop(stream);
                    continue;
                };
                let m = m.clone();
                match link {
                    Link::Metalogger => tokio::spawn(async move {
                        mlserv::serve(m, stream, peer).await;
                        drop(slot);
                    }),
                    Link::Chunkserver => tokio::spawn(async move {
                        csserv::serve(m, stream, peer).await;
                        drop(slot);
                    }),
                    Link::Client => tokio::spawn(async move {
                        clserv::serve(m, stream, peer).await;
                        drop(slot);
                    }),
                };
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn dump_loop(m: Arc<master::Master>) {
    let every = Duration::from_secs(m.cfg.save_every);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        match m.dump().await {
            Ok(v) => tracing::info!("metadata dump written at version {v}"),
            Err(e) => {
                tracing::error!("metadata dump failed: {e:#}; the changelog still has every change")
            }
        }
    }
}
