//! The master's settings, from its config file (keys, types and defaults: `MasterKeys` in
//! moose-formats).

use std::path::PathBuf;

use moose_formats::{Config, KeySet, MasterCfg, MasterKeys};

use crate::changelog::SyncPolicy;

/// How long a written change may wait for its fdatasync (like a journaling file system's
/// commit interval); a client's fsync does not wait for it.
const CHANGELOG_SYNC_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Keys moose-master reads (besides the common DATA_PATH / WORKING_USER / WORKING_GROUP).
pub const KEYS: &[&str] = MasterKeys::NAMES;

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
    /// Chunks the health loop examines per second at most (CHUNKS_LOOP_MAX_CPS).
    pub loop_max_cps: u64,
    /// Rebalance when chunkservers' disk usage differs by more than this many percent.
    pub acceptable_difference: f64,
    /// When acknowledged changes reach the disk (CHANGELOG_SAVE_MODE).
    pub changelog_sync: SyncPolicy,
    /// The cluster secret chunkservers and metaloggers prove at registration.
    pub auth_code: Option<String>,
    /// Seconds a session outlives its connection (open files stay open meanwhile).
    pub session_sustain: u64,
    /// Seconds a soft quota may be exceeded when its folder sets no grace period.
    pub quota_grace: u64,
}

/// `*` (every address) as the listener binds it.
fn bind_host(host: String) -> String {
    if host == "*" {
        "0.0.0.0".to_string()
    } else {
        host
    }
}

impl MasterConfig {
    pub fn from_config(cfg: &Config, data_path: PathBuf) -> anyhow::Result<Self> {
        let k = MasterCfg::from_config(cfg)?.keys;
        Ok(MasterConfig {
            exports_file: cfg.resolve(&k.exports_filename()),
            ml_listen: (bind_host(k.matoml_listen_host()), k.matoml_listen_port()),
            cs_listen: (bind_host(k.matocs_listen_host()), k.matocs_listen_port()),
            cl_listen: (bind_host(k.matocl_listen_host()), k.matocl_listen_port()),
            save_every: k.metadata_save_freq().saturating_mul(3600),
            back_logs: u32::try_from(k.back_logs())?,
            cs_timeout: k.matocs_timeout().0,
            default_goal: u8::try_from(k.default_goal())?,
            replications_delay: k.replications_delay_init().0,
            write_rep_limit: usize::try_from(k.chunks_write_rep_limit().first())?,
            read_rep_limit: usize::try_from(k.chunks_read_rep_limit().first())?,
            changelog_sync: match k.changelog_save_mode() {
                2 => SyncPolicy::EveryChange,
                _ => SyncPolicy::Within(CHANGELOG_SYNC_DELAY),
            },
            acceptable_difference: k.acceptable_percentage_difference(),
            loop_max_cps: k.chunks_loop_max_cps(),
            session_sustain: k.session_sustain_time().0,
            quota_grace: k.quota_default_grace_period().0,
            auth_code: k.auth_code.map(|n| n.0),
            data_path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_are_the_protocol_ones() {
        let k = MasterKeys::default();
        assert_eq!(
            k.matoml_listen_port(),
            moose_proto::ports::MASTER_METALOGGER
        );
        assert_eq!(
            k.matocs_listen_port(),
            moose_proto::ports::MASTER_CHUNKSERVER
        );
        assert_eq!(k.matocl_listen_port(), moose_proto::ports::MASTER_CLIENT);
    }
}
