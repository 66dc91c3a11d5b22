//! The master as a whole: state, changelog, chunkserver registry, exports and sessions, and
//! the start-up that rebuilds the state from the newest dump plus the changelogs.

use parking_lot::RwLock;
use parking_lot::{Mutex, MutexGuard};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{bail, Context};
use moose_proto::{FsError, FsResult, Inode, Timespec};

use crate::changelog::{self, Changelog, Record};
use crate::config::MasterConfig;
use crate::cs_registry::CsRegistry;
use crate::data_marks::DataChange;
use crate::known_servers::KnownServers;
use crate::metadata;
use crate::namespace::Meta;
use crate::ops::Op;
use crate::page_cache::{self, Written};
use crate::state::{Applied, State};
use moose_common::exports::Exports;

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
    pub metaloggers: Mutex<crate::ml_registry::Metaloggers>,
    pub sessions: AtomicU64,
    /// Replications and deletions running now, and copies made since start.
    pub replicating: AtomicU64,
    pub deleting: AtomicU64,
    pub replicated_total: AtomicU64,
    /// Rebalancing moves (one copy plus one deletion each) since the master started.
    pub moved_total: AtomicU64,
    dumping: tokio::sync::Mutex<()>,
    pub known_servers: KnownServers,
    /// Replication and deletion may run: every known chunkserver is back, or
    /// REPLICATIONS_DELAY_INIT has passed since the start.
    settled: AtomicBool,
    /// The cluster secret and the chunk token key.
    pub trust: crate::trust::Trust,
    /// Sessions by id, connected or sustained after their connection ended.
    pub session_table: crate::sessions::SessionTable,
    /// Inode numbers below this were handed out before this start: a mount that lost its
    /// session may still send creates answered ahead with them.
    pub inodes_before_start: Inode,
}

impl Master {
    pub fn new(cfg: MasterConfig, meta: Meta, exports: Exports) -> anyhow::Result<Master> {
        let log = Changelog::open(
            &cfg.data_path,
            meta.cluster_id,
            meta.version,
            cfg.back_logs,
            cfg.changelog_sync,
        )
        .context("cannot open the changelog")?;
        Ok(Master {
            inodes_before_start: meta.next_inode,
            trust: crate::trust::Trust::new(cfg.auth_code.clone()),
            session_table: Default::default(),
            cs: CsRegistry::new(cfg.cs_timeout),
            state: Mutex::new(State::new(meta)),
            log,
            exports: RwLock::new(exports),
            started: Instant::now(),
            next_session: AtomicU64::new(1),
            ops_served: AtomicU64::new(0),
            metaloggers: Mutex::new(Default::default()),
            sessions: AtomicU64::new(0),
            replicating: AtomicU64::new(0),
            deleting: AtomicU64::new(0),
            replicated_total: AtomicU64::new(0),
            moved_total: AtomicU64::new(0),
            dumping: tokio::sync::Mutex::new(()),
            known_servers: KnownServers::load(&cfg.data_path),
            settled: AtomicBool::new(false),
            cfg,
        })
    }

    /// Whether replication and deletion may run yet (see [`Master::settled`]). Once true it
    /// stays true; the moment it turns is logged.
    pub fn replication_allowed(&self, connected: &[u32]) -> bool {
        if self.settled.load(Ordering::Relaxed) {
            return true;
        }
        let missing = self.known_servers.missing(connected);
        let waited = self.started.elapsed().as_secs() >= self.cfg.replications_delay;
        if !missing.is_empty() && !waited {
            return false;
        }
        if !self.settled.swap(true, Ordering::Relaxed) {
            if missing.is_empty() {
                tracing::info!(
                    "every known chunkserver is connected: replication and deletion start"
                );
            } else {
                tracing::warn!(
                    "REPLICATIONS_DELAY_INIT ({} s) has passed with chunkservers {missing:?} still \
                     missing: replication and deletion start without them",
                    self.cfg.replications_delay
                );
            }
        }
        true
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    pub fn new_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Applies `op` and queues it in the changelog. The caller holds the state lock (so
    /// records stay in order) and must wait for [`Master::recorded`] before replying.
    pub fn commit(&self, st: &mut State, op: Op) -> FsResult<(Applied, u64)> {
        self.commit_by(st, op, None)
    }

    /// [`Master::commit`] of a change of names that session `actor` made and applies to the
    /// folders it keeps from the answer: the other mounts that keep them are told.
    pub fn commit_by(
        &self,
        st: &mut State,
        op: Op,
        actor: Option<u64>,
    ) -> FsResult<(Applied, u64)> {
        crate::quota::admit(st, &op, self.cfg.quota_grace)?;
        let mut named: Vec<Inode> = if st.rt.watches.is_empty() {
            Vec::new()
        } else {
            st.edges_named_by(&op).into_iter().map(|(f, _)| f).collect()
        };
        named.dedup();
        let data_change = st.data_change(&op);
        let written = page_cache::written(&op);
        let applied = st.apply(&op)?;
        st.meta.version += 1;
        let version = st.meta.version;
        self.log.append(&Record { version, op });
        match data_change {
            Some(DataChange::File(inode)) => st.rt.data_marks.changed(inode, version),
            Some(DataChange::Many) => st.rt.data_marks.all_changed(version),
            None => {}
        }
        match written {
            Some(Written::Data(inode)) => {
                st.rt.data_changes.changed(inode, version);
                st.rt.watches.file_changed(inode, actor);
            }
            Some(Written::Many) => st.rt.data_changes.all_changed(version),
            None => {}
        }
        if !named.is_empty() {
            st.rt.watches.changed(&named, actor);
        }
        Ok((applied, version))
    }

    /// True when the changes the data of `inode` depends on are on disk (an fdatasync
    /// need not wait for the changelog's sync).
    pub fn data_synced(&self, inode: Inode) -> bool {
        self.state().rt.data_marks.newest(inode) <= self.log.synced()
    }

    /// True when change `version` may be acknowledged now (see [`Master::recorded`]).
    pub fn is_recorded(&self, version: u64) -> bool {
        self.log.is_recorded(version)
    }

    /// True when every change up to `version` is on disk.
    pub fn is_synced(&self, version: u64) -> bool {
        self.log.synced() >= version
    }

    /// Waits until change `version` may be acknowledged (see CHANGELOG_SAVE_MODE).
    pub async fn recorded(&self, version: u64) -> FsResult<()> {
        self.log.wait_recorded(version).await.map_err(log_failure)
    }

    /// Makes every change up to `version` durable on disk now and waits for it.
    pub async fn synced(&self, version: u64) -> FsResult<()> {
        self.log.sync(version).await.map_err(log_failure)
    }

    /// Writes a dump of the current state and rotates the changelog.
    pub async fn dump(&self) -> anyhow::Result<u64> {
        // The periodic dump and the one at stop never overlap.
        let _one_at_a_time = self.dumping.lock().await;
        let (bytes, version) = {
            let st = self.state();
            let bytes = metadata::encode(&st.meta)?;
            self.log.rotate();
            (bytes, st.meta.version)
        };
        let dir = self.cfg.data_path.clone();
        let prune = self.log.prune_job();
        tokio::task::spawn_blocking(move || {
            metadata::write(&dir, &bytes)?;
            prune();
            anyhow::Ok(())
        })
        .await
        .context("metadata writer task failed")??;
        Ok(version)
    }
}

/// Dump files a master can start from, in order of preference when versions tie.
const DUMP_NAMES: [&str; 3] = [
    metadata::DUMP_FILE,
    metadata::PREVIOUS_DUMP_FILE,
    crate::metadata::METALOGGER_DUMP_FILE,
];

/// Rebuilds the metadata from `dir`: the newest dump (the master's own or a metalogger's)
/// plus every newer changelog record. A fresh, empty folder gives an empty file system
/// (`fresh` is then true). With `repair`, a torn last record is cut off the file.
pub fn load_meta(dir: &Path, default_goal: u8, repair: bool) -> anyhow::Result<(Meta, bool)> {
    let logs = changelog::list_files(dir);
    let dumps: Vec<std::path::PathBuf> = DUMP_NAMES
        .iter()
        .map(|n| dir.join(n))
        .filter(|p| p.exists())
        .collect();
    let stock: Vec<&str> = [
        "metadata.mfs.back",
        "metadata.mfs.empty",
        "metadata_ml.mfs.back",
    ]
    .into_iter()
    .filter(|f| dir.join(f).exists())
    .collect();
    if !stock.is_empty() && dumps.is_empty() {
        bail!(
            "{} holds stock MooseFS files ({}); moose-master does not read them. \
             Give it an empty DATA_PATH",
            dir.display(),
            stock.join(", ")
        );
    }
    if dumps.is_empty() && logs.is_empty() {
        let others = foreign_files(dir);
        if !others.is_empty() {
            bail!(
                "DATA_PATH {} holds no metadata (metadata.mfs, changelog.*.mfs) but is not empty \
                 ({}); a new file system is only made in an empty folder. If DATA_PATH is \
                 wrong, fix it in the config; if the metadata is lost, restore it from a \
                 metalogger (moose-master -c CFG restore FOLDER)",
                dir.display(),
                others.join(", ")
            );
        }
        let cluster_id = loop {
            let id: u64 = rand::random();
            if id != 0 {
                break id;
            }
        };
        tracing::warn!(
            "DATA_PATH {} is empty: CREATING A NEW, EMPTY FILE SYSTEM (cluster id \
             {cluster_id:016X}). If this master had metadata before, stop it now and check \
             DATA_PATH; metaloggers of the old file system refuse this one",
            dir.display()
        );
        return Ok((Meta::fresh(cluster_id, Timespec::now(), default_goal), true));
    }
    // The newest dump that loads.
    let mut best: Option<(Meta, std::path::PathBuf)> = None;
    let mut problems = Vec::new();
    for path in &dumps {
        match metadata::load(path) {
            Ok(m) => {
                if best.as_ref().is_none_or(|(b, _)| m.version > b.version) {
                    best = Some((m, path.clone()));
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    for p in &problems {
        tracing::warn!("{p}");
    }
    let meta = match best {
        Some((m, path)) => {
            tracing::info!("starting from {} (version {})", path.display(), m.version);
            m
        }
        None if !dumps.is_empty() => bail!("no usable metadata dump: {}", problems.join("; ")),
        None => {
            // Changelogs without any dump: replayable only from the very first change.
            let first = changelog::read_file(&logs[0].1)?;
            Meta::fresh(first.cluster_id, Timespec { sec: 0, nsec: 0 }, default_goal)
        }
    };
    let loaded_version = meta.version;
    let mut records = Vec::new();
    for (n, path) in &logs {
        let read = changelog::read_file(path)?;
        if read.cluster_id != meta.cluster_id {
            return Err(changelog::ChangelogError::OtherCluster {
                path: path.clone(),
                found: read.cluster_id,
                expected: meta.cluster_id,
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
            if repair {
                changelog::truncate_torn(path, at)?;
            }
        }
        records.extend(
            read.records
                .into_iter()
                .filter(|r| r.version > loaded_version),
        );
    }
    records.sort_by_key(|r| r.version);
    records.dedup_by_key(|r| r.version);
    let mut state = State::new(meta);
    for rec in &records {
        if rec.version != state.meta.version + 1 {
            bail!(
                "changelog hole: after change {} the next record is {}; changes are missing, \
                 so the metadata cannot be rebuilt past {} (is a newer dump or changelog elsewhere?)",
                state.meta.version,
                rec.version,
                state.meta.version
            );
        }
        state.apply(&rec.op).map_err(|e| {
            anyhow::anyhow!(
                "replaying change {} failed ({e}): {:?}",
                rec.version,
                rec.op
            )
        })?;
        state.meta.version = rec.version;
    }
    let (files, dirs) = state.meta.count_kinds();
    tracing::info!(
        "metadata loaded: version {} (dump {loaded_version} + {} changes), {files} files, {dirs} folders, {} chunks",
        state.meta.version,
        records.len(),
        state.meta.chunks.len()
    );
    Ok((state.meta, false))
}

/// Files in `dir` other than the ones a master writes before it loads metadata (lockfile,
/// log), at most a few names for the message.
fn foreign_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with(".moose-master.lock") && !n.starts_with("moose-master.log"))
        .collect();
    names.sort();
    if names.len() > 5 {
        let more = names.len() - 4;
        names.truncate(4);
        names.push(format!("and {more} more"));
    }
    names
}

/// `moose-master restore FROM_DIR`: rebuilds the metadata from a folder of metalogger (or
/// master) files and writes it as DATA_PATH's dump, so a plain start follows.
pub fn restore(from: &Path, data_path: &Path, default_goal: u8) -> anyhow::Result<u64> {
    if DUMP_NAMES.iter().any(|n| data_path.join(n).exists())
        || !changelog::list_files(data_path).is_empty()
    {
        bail!(
            "DATA_PATH {} already holds metadata; move its metadata*.mfs and changelog*.mfs \
             files away before restoring into it",
            data_path.display()
        );
    }
    let (meta, fresh) = load_meta(from, default_goal, false)?;
    if fresh {
        bail!(
            "{} holds no metadata (expected metadata_ml.mfs and changelog_ml.*.mfs from a \
             metalogger, or a master's metadata.mfs)",
            from.display()
        );
    }
    metadata::write(data_path, &metadata::encode(&meta)?)?;
    Ok(meta.version)
}

fn log_failure(e: String) -> FsError {
    tracing::error!("changelog: {e}");
    FsError::Io
}
