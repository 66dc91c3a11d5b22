//! The master's config keys.

use std::path::PathBuf;

use moose_common::Config;

use crate::changelog::SyncPolicy;

/// How long a written change may wait for its fdatasync (like a journaling file system's
/// commit interval); a client's fsync does not wait for it.
const CHANGELOG_SYNC_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Keys moose-master reads (besides the common DATA_PATH / WORKING_USER / WORKING_GROUP).
pub const KEYS: &[&str] = &[
    "EXPORTS_FILENAME",
    "MATOML_LISTEN_HOST",
    "MATOML_LISTEN_PORT",
    "MATOCS_LISTEN_HOST",
    "MATOCS_LISTEN_PORT",
    "MATOCL_LISTEN_HOST",
    "MATOCL_LISTEN_PORT",
    "METADATA_SAVE_FREQ",
    "BACK_LOGS",
    "MATOCS_TIMEOUT",
    "DEFAULT_GOAL",
    "REPLICATIONS_DELAY_INIT",
    "CHUNKS_WRITE_REP_LIMIT",
    "CHUNKS_READ_REP_LIMIT",
    "ACCEPTABLE_PERCENTAGE_DIFFERENCE",
    "CHANGELOG_SAVE_MODE",
    "AUTH_CODE",
    "SESSION_SUSTAIN_TIME",
];

#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub data_path: PathBuf,
    pub exports_file: PathBuf,
    pub ml_listen: (String, u16),
    pub cs_listen: (String, u16),
    pub cl_listen: (String, u16),
    /// Seconds between metadata dumps.
    pub save_every: u64,
    pub back_logs: u32,
    pub cs_timeout: u64,
    pub default_goal: u8,
    /// Seconds after start before replication and deletion begin when some chunkserver the
    /// file system had is still missing (they get time to register).
    pub replications_delay: u64,
    /// Concurrent replications into one chunkserver.
    pub write_rep_limit: usize,
    /// Concurrent replications out of one chunkserver.
    pub read_rep_limit: usize,
    /// Rebalance when chunkservers' disk usage differs by more than this many percent.
    pub acceptable_difference: f64,
    /// When acknowledged changes reach the disk (CHANGELOG_SAVE_MODE).
    pub changelog_sync: SyncPolicy,
    /// The cluster secret chunkservers and metaloggers prove at registration.
    pub auth_code: Option<String>,
    /// Seconds a session outlives its connection (open files stay open meanwhile).
    pub session_sustain: u64,
}

fn host(cfg: &Config, key: &str) -> String {
    let h = cfg.get_str(key, "*");
    if h == "*" {
        "0.0.0.0".to_string()
    } else {
        h
    }
}

/// First number of a MooseFS per-class limit list like `2,1,1,4`.
fn first_limit(cfg: &Config, key: &str, default: usize) -> usize {
    cfg.get(key)
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// `AUTH_CODE`: the cluster secret; an empty value is a mistake, not "no secret".
pub fn auth_code(cfg: &Config) -> anyhow::Result<Option<String>> {
    match cfg.get("AUTH_CODE") {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => anyhow::bail!(
            "{}: AUTH_CODE is empty; give it the cluster secret (the same on the master, every \
             chunkserver and every metalogger) or remove the line",
            cfg.path().display()
        ),
        Some(v) => Ok(Some(v.trim().to_string())),
    }
}

impl MasterConfig {
    pub fn from_config(cfg: &Config, data_path: PathBuf) -> anyhow::Result<Self> {
        let default_goal = cfg.get_u64("DEFAULT_GOAL", 2)?;
        if !(1..=9).contains(&default_goal) {
            anyhow::bail!(
                "{}: DEFAULT_GOAL = {default_goal}: a goal is from 1 to 9",
                cfg.path().display()
            );
        }
        Ok(MasterConfig {
            exports_file: cfg.get_path("EXPORTS_FILENAME", "/etc/moosefs/moose-exports.cfg"),
            ml_listen: (
                host(cfg, "MATOML_LISTEN_HOST"),
                cfg.get_port("MATOML_LISTEN_PORT", moose_proto::ports::MASTER_METALOGGER)?,
            ),
            cs_listen: (
                host(cfg, "MATOCS_LISTEN_HOST"),
                cfg.get_port("MATOCS_LISTEN_PORT", moose_proto::ports::MASTER_CHUNKSERVER)?,
            ),
            cl_listen: (
                host(cfg, "MATOCL_LISTEN_HOST"),
                cfg.get_port("MATOCL_LISTEN_PORT", moose_proto::ports::MASTER_CLIENT)?,
            ),
            save_every: cfg.get_u64("METADATA_SAVE_FREQ", 1)?.max(1) * 3600,
            back_logs: cfg.get_u64("BACK_LOGS", 50)?.clamp(1, 10_000) as u32,
            cs_timeout: cfg.get_duration_secs("MATOCS_TIMEOUT", 10)?.max(2),
            default_goal: default_goal as u8,
            replications_delay: cfg.get_duration_secs("REPLICATIONS_DELAY_INIT", 60)?,
            write_rep_limit: first_limit(cfg, "CHUNKS_WRITE_REP_LIMIT", 4).max(1),
            read_rep_limit: first_limit(cfg, "CHUNKS_READ_REP_LIMIT", 8).max(1),
            changelog_sync: match cfg.get_u64("CHANGELOG_SAVE_MODE", 0)? {
                2 => SyncPolicy::EveryChange,
                0 | 1 => SyncPolicy::Within(CHANGELOG_SYNC_DELAY),
                other => anyhow::bail!(
                    "{}: CHANGELOG_SAVE_MODE = {other}: use 0 or 1 (write every change before \
                     the reply, sync within a second and on every client fsync; the default) \
                     or 2 (sync every change before the reply)",
                    cfg.path().display()
                ),
            },
            acceptable_difference: match cfg.get("ACCEPTABLE_PERCENTAGE_DIFFERENCE") {
                None => 5.0,
                Some(v) => v.parse::<f64>().ok().filter(|p| *p > 0.0).ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: ACCEPTABLE_PERCENTAGE_DIFFERENCE = {v}: expected a positive number of percent",
                        cfg.path().display()
                    )
                })?,
            },
            auth_code: auth_code(cfg)?,
            session_sustain: cfg.get_duration_secs("SESSION_SUSTAIN_TIME", 86_400)?,
            data_path,
        })
    }
}
