//! The master as a whole: state, changelog, chunkserver registry, exports and sessions, and
//! the start-up that rebuilds the state from the newest dump plus the changelogs.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use parking_lot::{Mutex, MutexGuard};
use parking_lot::RwLock;
use std::time::Instant;

use anyhow::{bail, Context};
use moose_proto::{FsError, FsResult, Timespec};

use crate::changelog::{self, Changelog, Record};
use crate::config::MasterConfig;
use crate::csserv::CsRegistry;
use crate::exports::Exports;
use crate::metadata;
use crate::namespace::Meta;
use crate::ops::Op;
use crate::state::{Applied, State};

pub struct Master {
    pub cfg: MasterConfig,
    state: Mutex<State>,
    pub log: Changelog,
    pub cs: CsRegistry,
    pub exports: RwLock<Exports>,
    pub started: Instant,
    next_session: AtomicU64,
    /// Counters of served requests (for ops/s in the console).
    pub ops_served: AtomicU64,
}

impl Master {
    pub fn new(cfg: MasterConfig, meta: Meta, exports: Exports) -> anyhow::Result<Master> {
        let log = Changelog::open(&cfg.data_path, meta.cluster_id, meta.version, cfg.back_logs)
            .context("cannot open the changelog")?;
        Ok(Master {
            cs: CsRegistry::new(cfg.cs_timeout),
            cfg,
            state: Mutex::new(State::new(meta)),
            log,
            exports: RwLock::new(exports),
            started: Instant::now(),
            next_session: AtomicU64::new(1),
            ops_served: AtomicU64::new(0),
        })
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    pub fn new_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Applies `op` and queues it in the changelog. The caller holds the state lock (so
    /// records stay in order) and must wait for [`Master::durable`] before replying.
    pub fn commit(&self, st: &mut State, op: Op) -> FsResult<(Applied, u64)> {
        let applied = st.apply(&op)?;
        st.meta.version += 1;
        let version = st.meta.version;
        self.log.append(&Record { version, op });
        Ok((applied, version))
    }

    /// Waits until change `version` is on disk.
    pub async fn durable(&self, version: u64) -> FsResult<()> {
        self.log.wait_durable(version).await.map_err(|e| {
            tracing::error!("changelog: {e}");
            FsError::Io
        })
    }

    /// Writes a dump of the current state and rotates the changelog.
    pub async fn dump(&self) -> anyhow::Result<u64> {
        let (bytes, version) = {
            let st = self.state();
            let bytes = metadata::encode(&st.meta);
            self.log.rotate();
            (bytes, st.meta.version)
        };
        let dir = self.cfg.data_path.clone();
        tokio::task::spawn_blocking(move || metadata::write(&dir, &bytes))
            .await
            .context("metadata writer task failed")??;
        Ok(version)
    }
}

/// Rebuilds the metadata from DATA_PATH: the newest dump plus every newer changelog record.
/// A fresh, empty DATA_PATH gives an empty file system.
pub fn load_meta(dir: &Path, default_goal: u8) -> anyhow::Result<(Meta, bool)> {
    let dump = dir.join(metadata::DUMP_FILE);
    let previous = dir.join(metadata::PREVIOUS_DUMP_FILE);
    let logs = changelog::list_files(dir);
    let stock: Vec<&str> = ["metadata.mfs.back", "metadata.mfs.empty", "changelog.0.mfs.back"]
        .into_iter()
        .filter(|f| dir.join(f).exists())
        .collect();
    if !stock.is_empty() && !dump.exists() {
        bail!(
            "DATA_PATH {} holds stock MooseFS files ({}); moose-master does not read them. \
             Give it an empty DATA_PATH",
            dir.display(),
            stock.join(", ")
        );
    }
    let meta = if dump.exists() {
        metadata::load(&dump)?
    } else if previous.exists() {
        tracing::warn!(
            "{} is missing; starting from {}",
            dump.display(),
            previous.display()
        );
        metadata::load(&previous)?
    } else if logs.is_empty() {
        let cluster_id = loop {
            let id: u64 = rand::random();
            if id != 0 {
                break id;
            }
        };
        tracing::info!(
            "DATA_PATH {} is empty: creating a new, empty file system (cluster id {cluster_id:016X})",
            dir.display()
        );
        return Ok((Meta::fresh(cluster_id, Timespec::now(), default_goal), true));
    } else {
        // Changelogs without any dump: replayable only from the very first change.
        let oldest = &logs[0].1;
        let first = changelog::read_file(oldest)?;
        if first.records.first().map(|r| r.version) != Some(1) {
            bail!(
                "DATA_PATH {} has changelogs but no {} and the changelogs do not start at the \
                 first change; copy a dump (metadata.mfs or a metalogger's metadata_ml.mfs) here",
                dir.display(),
                metadata::DUMP_FILE
            );
        }
        Meta::fresh(first.cluster_id, Timespec { sec: 0, nsec: 0 }, default_goal)
    };
    let loaded_version = meta.version;
    let mut state = State::new(meta);
    let mut replayed = 0u64;
    for (n, path) in &logs {
        let read = changelog::read_file(path)?;
        if read.cluster_id != state.meta.cluster_id {
            return Err(changelog::ChangelogError::OtherCluster {
                path: path.clone(),
                found: read.cluster_id,
                expected: state.meta.cluster_id,
            }
            .into());
        }
        if let Some(at) = read.torn_at {
            if *n != 0 {
                bail!(
                    "{} is damaged at byte {at}; only the newest changelog may end in a torn record",
                    path.display()
                );
            }
            tracing::warn!(
                "{}: dropping a torn record at byte {at} (written during a crash, never acknowledged)",
                path.display()
            );
            changelog::truncate_torn(path, at)?;
        }
        for rec in read.records {
            if rec.version <= state.meta.version {
                continue;
            }
            if rec.version != state.meta.version + 1 {
                bail!(
                    "changelog hole: after change {} the next record in {} is {}; \
                     changes are missing, so the metadata cannot be rebuilt past {}",
                    state.meta.version,
                    path.display(),
                    rec.version,
                    state.meta.version
                );
            }
            state.apply(&rec.op).map_err(|e| {
                anyhow::anyhow!(
                    "replaying change {} from {} failed ({e}): {:?}",
                    rec.version,
                    path.display(),
                    rec.op
                )
            })?;
            state.meta.version = rec.version;
            replayed += 1;
        }
    }
    let (files, dirs) = state.meta.count_kinds();
    tracing::info!(
        "metadata loaded: version {} (dump {loaded_version} + {replayed} changes), {files} files, {dirs} folders, {} chunks",
        state.meta.version,
        state.meta.chunks.len()
    );
    Ok((state.meta, false))
}
