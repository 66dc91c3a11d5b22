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
use crate::local_reads;
use crate::masterconn::MasterConn;
use crate::scrub;
use crate::store::Store;

/// The body run by `moose_common::daemon::main` (after privileges were dropped).
pub async fn run(ctx: DaemonContext) -> anyhow::Result<()> {
    let cfg = Arc::new(CsConfig::from_config(&ctx.config, &ctx.data_path)?);
    if !cfg.labels.is_empty() {
        tracing::info!(
            "LABELS = {} is accepted but not used yet: this chunkserver is treated as unlabelled",
            cfg.labels
        );
    }
    let hdd_file = hdd::load(&cfg.hdd_file)?;
    for w in &hdd_file.warnings {
        tracing::warn!("{w}");
    }
    let mut disks = Vec::with_capacity(hdd_file.entries.len());
    for entry in &hdd_file.entries {
        disks.push(Arc::new(
            Disk::open(entry, &ctx.run_as, cfg.error_tolerance).map_err(anyhow::Error::msg)?,
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
    let advertised = cfg.advertised_host();
    let local_host = if advertised.is_empty() {
        "*"
    } else {
        &advertised
    };
    let local_files = local_reads::listen(local_host, cfg.listen_port)
        .map(|l| tokio::spawn(local_reads::serve(l, Arc::clone(&store))));

    let disks_added = Arc::new(Notify::new());
    let tester = tokio::spawn(scrub::run(
        Arc::clone(&store),
        cfg.test_speed,
        Arc::clone(&disks_added),
    ));

    let reregister = Arc::new(Notify::new());
    let reloader = tokio::spawn(reload_loop(
        ctx.reload_signal(),
        Arc::clone(&cfg),
        Arc::clone(&store),
        ctx.run_as.clone(),
        Reloaded {
            reregister: Arc::clone(&reregister),
            disks_added,
        },
    ));

    MasterConn::new(cfg, store, events, id, reregister)
        .run(&ctx, ctx.shutdown_signal())
        .await;
    reloader.abort();
    tester.abort();
    data_port.abort();
    if let Some(t) = local_files {
        t.abort();
    }
    Ok(())
}

/// Who hears of a reload's outcome.
struct Reloaded {
    /// The master link: new folders brought chunks, register them.
    reregister: Arc<Notify>,
    /// The background test: new folders to test.
    disks_added: Arc<Notify>,
}

/// What a reload changed.
#[derive(Debug, PartialEq)]
struct ReloadOutcome {
    disks: usize,
    chunks: usize,
}

async fn reload_loop(
    mut signal: watch::Receiver<u64>,
    cfg: Arc<CsConfig>,
    store: Arc<Store>,
    run_as: RunAs,
    tell: Reloaded,
) {
    while signal.changed().await.is_ok() {
        let (cfg, s, run_as) = (Arc::clone(&cfg), Arc::clone(&store), run_as.clone());
        match tokio::task::spawn_blocking(move || reload_disks(&cfg, &s, &run_as)).await {
            Ok(Ok(outcome)) => {
                if outcome.disks > 0 {
                    tell.disks_added.notify_one();
                }
                if outcome.chunks > 0 {
                    // The new registration lists the marked chunks after the master knows
                    // them all.
                    tracing::info!("{} chunks found on new hdd folders", outcome.chunks);
                    tell.reregister.notify_one();
                } else {
                    let s = Arc::clone(&store);
                    if let Err(e) = tokio::task::spawn_blocking(move || s.report_marked()).await {
                        tracing::error!("cannot list the chunks on marked hdd folders: {e}");
                    }
                }
            }
            Ok(Err(e)) => tracing::error!("reload: {e}; the hdd folders stay as they were"),
            Err(e) => tracing::error!("reload failed: {e}"),
        }
    }
}

/// Re-reads the hdd file: applies `*` marks and space options, adds new folders. Returns how
/// many folders were added and how many chunks were found on them.
fn reload_disks(cfg: &CsConfig, store: &Store, run_as: &RunAs) -> Result<ReloadOutcome, String> {
    let file = hdd::load(&cfg.hdd_file).map_err(|e| e.to_string())?;
    tracing::info!("reloading hdd file {}", cfg.hdd_file.display());
    for w in &file.warnings {
        tracing::warn!("{w}");
    }
    let current = store.disks().all();
    let mut added = ReloadOutcome {
        disks: 0,
        chunks: 0,
    };
    for entry in &file.entries {
        if let Some(disk) = current.iter().find(|d| d.path == entry.path) {
            disk.apply(entry);
            continue;
        }
        let disk = match Disk::open(entry, run_as, cfg.error_tolerance) {
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
        added.disks += 1;
        match store.scan(&disk) {
            Ok(n) => {
                tracing::info!("hdd folder {} added with {n} chunks", disk.path.display());
                added.chunks += n;
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
    use moose_proto::msg::{CsToMaster, MarkedDisk};
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
            test_speed: 1.0,
            error_tolerance: Default::default(),
            labels: String::new(),
            auth_code: None,
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
        assert_eq!(
            reload_disks(&cfg, &store, &me()).unwrap(),
            ReloadOutcome {
                disks: 1,
                chunks: 1
            }
        );
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_reload_reports_the_marked_chunks() {
        let etc = tempfile::tempdir().unwrap();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let c = tempfile::tempdir().unwrap();
        let (store, mut events) = test_store(a.path());
        let chunk = ChunkRef {
            chunk_id: 0x42,
            version: 3,
        };
        store.create(chunk).unwrap();
        {
            let (other, _e) = test_store(c.path());
            other
                .create(ChunkRef {
                    chunk_id: 0x43,
                    version: 1,
                })
                .unwrap();
        }
        let hdd_file = etc.path().join("hdd.cfg");
        let cfg = Arc::new(config(&hdd_file));
        let (signal, signal_rx) = watch::channel(0u64);
        let tell = Reloaded {
            reregister: Arc::new(Notify::new()),
            disks_added: Arc::new(Notify::new()),
        };
        let (reregister, disks_added) =
            (Arc::clone(&tell.reregister), Arc::clone(&tell.disks_added));
        let reloader = tokio::spawn(reload_loop(signal_rx, cfg, Arc::clone(&store), me(), tell));
        let reload = |text: String| {
            std::fs::write(&hdd_file, text).unwrap();
            signal.send_modify(|n| *n += 1);
        };
        let mut next_event = async || {
            tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .unwrap()
                .unwrap()
        };

        // Folder a marked: its chunk is listed.
        reload(format!("*{}\n", a.path().display()));
        assert_eq!(
            next_event().await,
            CsToMaster::MarkedChunks(vec![MarkedDisk {
                path: a.path().display().to_string(),
                chunks: vec![chunk],
            }])
        );
        // A new, empty folder b: the background test hears of it; the list is sent again.
        reload(format!("*{}\n{}\n", a.path().display(), b.path().display()));
        assert!(matches!(next_event().await, CsToMaster::MarkedChunks(d) if d.len() == 1));
        tokio::time::timeout(Duration::from_secs(10), disks_added.notified())
            .await
            .unwrap();
        // Unmarked again: an empty list replaces the previous one.
        reload(format!("{}\n{}\n", a.path().display(), b.path().display()));
        assert_eq!(next_event().await, CsToMaster::MarkedChunks(Vec::new()));
        // A new folder with chunks: the master link registers again (and sends the list
        // after the acknowledgement) instead.
        reload(format!(
            "{}\n{}\n*{}\n",
            a.path().display(),
            b.path().display(),
            c.path().display()
        ));
        tokio::time::timeout(Duration::from_secs(10), reregister.notified())
            .await
            .unwrap();
        assert_eq!(store.marked_chunks().len(), 1);
        assert!(events.try_recv().is_err());
        reloader.abort();
    }
}
