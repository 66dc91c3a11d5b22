//! The daemon's life: start-up checks, disk scan, data port, master link, reload, shutdown.

use std::io::ErrorKind;
use std::sync::Arc;

use anyhow::Context;
use moose_common::user::RunAs;
use moose_common::DaemonContext;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::config::CsConfig;
use crate::dataserver;
use crate::hdd::{self, Disk, DiskSet};
use crate::identity;
use crate::masterconn::MasterConn;
use crate::store::Store;

/// The body run by `moose_common::daemon::main` (after privileges were dropped).
pub async fn run(ctx: DaemonContext) -> anyhow::Result<()> {
    let cfg = Arc::new(CsConfig::from_config(&ctx.config, &ctx.data_path)?);
    let hdd_file = hdd::load(&cfg.hdd_file)?;
    for w in &hdd_file.warnings {
        tracing::warn!("{w}");
    }
    let mut disks = Vec::with_capacity(hdd_file.entries.len());
    for entry in &hdd_file.entries {
        disks.push(Arc::new(
            Disk::open(entry, &ctx.run_as).map_err(anyhow::Error::msg)?,
        ));
    }
    let id = identity::load(&cfg.id_file())?;
    let set = DiskSet::new(disks.clone(), cfg.leave_space, id.map(|i| i.cluster_id))
        .map_err(anyhow::Error::msg)?;
    let (store, events) = Store::new(set);

    ctx.progress("scanning the hdd folders for chunks");
    let mut scans = Vec::new();
    for disk in disks {
        let store = Arc::clone(&store);
        scans.push(tokio::task::spawn_blocking(move || {
            let found = store.scan(&disk);
            (disk, found)
        }));
    }
    for scan in scans {
        let (disk, found) = scan.await.context("a disk scan failed")?;
        let n = found.with_context(|| format!("cannot scan hdd folder {}", disk.path.display()))?;
        tracing::info!(
            "hdd folder {}: {n} chunks{}",
            disk.path.display(),
            if disk.marked_for_removal() {
                " (marked for removal)"
            } else {
                ""
            }
        );
    }

    let listen = (cfg.bind_listen_host(), cfg.listen_port);
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            let hint = match e.kind() {
                ErrorKind::AddrInUse => {
                    "another program (another chunkserver?) uses this port; give each chunkserver \
                     on a host its own CSSERV_LISTEN_PORT"
                }
                ErrorKind::AddrNotAvailable => {
                    "this host has no such address; set CSSERV_LISTEN_HOST to one of its \
                     addresses, or to * for all of them"
                }
                ErrorKind::PermissionDenied => "ports below 1024 need root",
                _ => "check CSSERV_LISTEN_HOST and CSSERV_LISTEN_PORT",
            };
            anyhow::bail!(
                "cannot listen on {}:{} (CSSERV_LISTEN_HOST/CSSERV_LISTEN_PORT in {}): {e}; {hint}",
                listen.0,
                listen.1,
                cfg.cfg_path.display()
            );
        }
    };
    tracing::info!(
        "data port listening on {}; {} chunks in {} hdd folders",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| format!("{}:{}", listen.0, listen.1)),
        store.chunk_count(),
        store.disks().all().len()
    );
    let data_port = tokio::spawn(dataserver::serve(listener, Arc::clone(&store)));

    let reregister = Arc::new(Notify::new());
    let reloader = tokio::spawn(reload_loop(
        ctx.reload_signal(),
        Arc::clone(&cfg),
        Arc::clone(&store),
        ctx.run_as.clone(),
        Arc::clone(&reregister),
    ));

    MasterConn::new(cfg, store, events, id, reregister)
        .run(&ctx, ctx.shutdown_signal())
        .await;
    reloader.abort();
    data_port.abort();
    Ok(())
}

async fn reload_loop(
    mut signal: watch::Receiver<u64>,
    cfg: Arc<CsConfig>,
    store: Arc<Store>,
    run_as: RunAs,
    reregister: Arc<Notify>,
) {
    while signal.changed().await.is_ok() {
        let (cfg, store, run_as) = (Arc::clone(&cfg), Arc::clone(&store), run_as.clone());
        match tokio::task::spawn_blocking(move || reload_disks(&cfg, &store, &run_as)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                tracing::info!("{n} chunks found on new hdd folders");
                reregister.notify_one();
            }
            Ok(Err(e)) => tracing::error!("reload: {e}; the hdd folders stay as they were"),
            Err(e) => tracing::error!("reload failed: {e}"),
        }
    }
}

/// Re-reads the hdd file: applies `*` marks and space options, adds new folders. Returns the
/// number of chunks found on new folders.
fn reload_disks(cfg: &CsConfig, store: &Store, run_as: &RunAs) -> Result<usize, String> {
    let file = hdd::load(&cfg.hdd_file).map_err(|e| e.to_string())?;
    tracing::info!("reloading hdd file {}", cfg.hdd_file.display());
    for w in &file.warnings {
        tracing::warn!("{w}");
    }
    let current = store.disks().all();
    let mut added = 0;
    for entry in &file.entries {
        if let Some(disk) = current.iter().find(|d| d.path == entry.path) {
            disk.apply(entry);
            continue;
        }
        let disk = match Disk::open(entry, run_as) {
            Ok(d) => Arc::new(d),
            Err(e) => {
                tracing::error!("reload: {e}; folder not added");
                continue;
            }
        };
        if let Err(e) = store.disks().add(Arc::clone(&disk)) {
            tracing::error!("reload: {e}; folder not added");
            continue;
        }
        match store.scan(&disk) {
            Ok(n) => {
                tracing::info!("hdd folder {} added with {n} chunks", disk.path.display());
                added += n;
            }
            Err(e) => tracing::error!(
                "reload: cannot scan new hdd folder {}: {e}; it only gets new chunks",
                disk.path.display()
            ),
        }
    }
    for disk in &current {
        if !file.entries.iter().any(|e| e.path == disk.path) {
            tracing::warn!(
                "hdd folder {} is no longer in {}; it keeps serving its chunks until the \
                 chunkserver restarts (mark it with '*' first so its chunks get copied elsewhere)",
                disk.path.display(),
                cfg.hdd_file.display()
            );
        }
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{me, test_store};
    use moose_proto::ChunkRef;
    use std::path::Path;
    use std::time::Duration;

    fn config(hdd_file: &Path) -> CsConfig {
        CsConfig {
            cfg_path: hdd_file.with_file_name("cs.cfg"),
            data_path: hdd_file.parent().unwrap().to_path_buf(),
            master_host: "127.0.0.1".into(),
            master_port: 9420,
            bind_host: None,
            listen_host: "*".into(),
            listen_port: 9422,
            hdd_file: hdd_file.to_path_buf(),
            leave_space: 0,
            reconnect_delay: Duration::from_secs(1),
            master_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn reload_marks_and_adds_folders() {
        let etc = tempfile::tempdir().unwrap();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (store, _events) = test_store(a.path());
        // A folder with a chunk already in it (moved from another chunkserver).
        {
            let (other, _e) = test_store(b.path());
            other
                .create(ChunkRef {
                    chunk_id: 0x99,
                    version: 1,
                })
                .unwrap();
        }
        let hdd_file = etc.path().join("hdd.cfg");
        std::fs::write(
            &hdd_file,
            format!("*{}\n{}\n", a.path().display(), b.path().display()),
        )
        .unwrap();
        let cfg = config(&hdd_file);
        assert_eq!(reload_disks(&cfg, &store, &me()).unwrap(), 1);
        let reports = store.space_reports();
        assert_eq!(reports.len(), 2);
        assert!(reports[0].marked_for_removal);
        assert!(!reports[1].marked_for_removal);
        assert_eq!(reports[1].chunks, 1);
        // The marked folder gets no new chunks; the new one does.
        store
            .create(ChunkRef {
                chunk_id: 0x01,
                version: 1,
            })
            .unwrap();
        assert!(b
            .path()
            .join("01/chunk_0000000000000001_00000001.mfs")
            .exists());

        // A broken hdd file changes nothing.
        std::fs::write(&hdd_file, "/x 12X\n").unwrap();
        let e = reload_disks(&cfg, &store, &me()).unwrap_err();
        assert!(e.contains("hdd.cfg:1: bad space option"), "{e}");
        assert_eq!(store.disks().all().len(), 2);
    }
}
