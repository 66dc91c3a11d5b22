//! The chunkserver's settings, read from its config file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use moose_formats::{CfgError, ChunkserverCfg, ChunkserverKeys, Config, KeySet};

use crate::hdd::Tolerance;

/// DATA_PATH when the config does not set it.
pub const DEFAULT_DATA_PATH: &str = "/var/lib/moosefs";
/// Name of the file in DATA_PATH that keeps the id the master gave us.
pub const ID_FILE: &str = "chunkserver.id";

/// Keys this daemon reads besides the common ones (DATA_PATH, WORKING_USER, ...).
pub const KEYS: &[&str] = ChunkserverKeys::NAMES;

#[derive(Debug, Clone)]
pub struct CsConfig {
    /// The config file (named in messages).
    pub cfg_path: PathBuf,
    pub data_path: PathBuf,
    pub master_host: String,
    pub master_port: u16,
    /// Local address to connect to the master from; `None` lets the system choose.
    pub bind_host: Option<String>,
    /// CSSERV_LISTEN_HOST as written (`*` = every address).
    pub listen_host: String,
    pub listen_port: u16,
    pub hdd_file: PathBuf,
    /// Space kept free on a disk without a space option.
    pub leave_space: u64,
    pub reconnect_delay: Duration,
    pub master_timeout: Duration,
    /// HDD_TEST_SPEED: MiB/s per disk for the background CRC test; 0 turns it off.
    pub test_speed: f64,
    /// HDD_ERROR_TOLERANCE_COUNT errors within HDD_ERROR_TOLERANCE_PERIOD mark a disk damaged.
    pub error_tolerance: Tolerance,
    /// LABELS as written (accepted, not used yet).
    pub labels: String,
    /// The cluster secret proved to the master (`AUTH_CODE`).
    pub auth_code: Option<String>,
}

fn is_wildcard(host: &str) -> bool {
    matches!(host, "" | "*" | "0.0.0.0" | "::" | "[::]")
}

impl CsConfig {
    pub fn from_config(cfg: &Config, data_path: &Path) -> Result<CsConfig, CfgError> {
        let k = ChunkserverCfg::from_config(cfg)?.keys;
        let bind_host = k.bind_host();
        Ok(CsConfig {
            cfg_path: cfg.path().to_path_buf(),
            data_path: data_path.to_path_buf(),
            master_host: k.master_host().0,
            master_port: k.master_port(),
            bind_host: (!matches!(bind_host.as_str(), "" | "*")).then_some(bind_host),
            listen_host: k.csserv_listen_host(),
            listen_port: k.csserv_listen_port(),
            hdd_file: cfg.resolve(&k.hdd_conf_filename()),
            leave_space: k.hdd_leave_space_default().0,
            reconnect_delay: Duration::from_secs(k.master_reconnection_delay().0),
            master_timeout: Duration::from_secs(k.master_timeout().0),
            test_speed: k.hdd_test_speed(),
            error_tolerance: Tolerance {
                // More errors than u32 holds would never be reached anyway.
                count: u32::try_from(k.hdd_error_tolerance_count()).unwrap_or(u32::MAX),
                period: Duration::from_secs(k.hdd_error_tolerance_period().0),
            },
            labels: k.labels(),
            auth_code: k.auth_code.map(|n| n.0),
        })
    }

    /// The host the data port binds to.
    pub fn bind_listen_host(&self) -> &str {
        if is_wildcard(&self.listen_host) {
            "0.0.0.0"
        } else {
            &self.listen_host
        }
    }

    /// The host told to the master for clients to connect to; empty means "the address you
    /// see me connecting from".
    pub fn advertised_host(&self) -> String {
        if is_wildcard(&self.listen_host) {
            String::new()
        } else {
            self.listen_host.clone()
        }
    }

    /// DATA_PATH/chunkserver.id.
    pub fn id_file(&self) -> PathBuf {
        self.data_path.join(ID_FILE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CsConfig, CfgError> {
        let cfg = Config::parse(Path::new("/etc/moosefs/cs.cfg"), text, KEYS);
        CsConfig::from_config(&cfg, Path::new("/data"))
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.master_host, "mfsmaster");
        assert_eq!(c.master_port, 9420);
        assert_eq!(c.listen_port, 9422);
        assert_eq!(c.bind_host, None);
        assert_eq!(c.bind_listen_host(), "0.0.0.0");
        assert_eq!(c.advertised_host(), "");
        assert_eq!(c.hdd_file, PathBuf::from("/etc/moosefs/moose-hdd.cfg"));
        assert_eq!(c.leave_space, 256 << 20);
        assert_eq!(c.reconnect_delay, Duration::from_secs(1));
        assert_eq!(c.master_timeout, Duration::from_secs(10));
        assert_eq!(c.id_file(), PathBuf::from("/data/chunkserver.id"));
        assert_eq!(c.test_speed, 1.0);
        assert_eq!(c.error_tolerance, Tolerance::default());
        assert_eq!(c.error_tolerance.count, 2);
        assert_eq!(c.error_tolerance.period, Duration::from_secs(600));
        assert_eq!(c.labels, "");
    }

    #[test]
    fn explicit_values() {
        let c = parse(
            "MASTER_HOST = 127.0.0.1\nCSSERV_LISTEN_HOST = 10.0.0.5\nCSSERV_LISTEN_PORT = 9522\n\
             BIND_HOST = 10.0.0.5\nHDD_CONF_FILENAME = hdd.cfg\nHDD_LEAVE_SPACE_DEFAULT = 1GiB\n\
             MASTER_TIMEOUT = 1m\nHDD_TEST_SPEED = 2.5\nHDD_ERROR_TOLERANCE_COUNT = 5\n\
             HDD_ERROR_TOLERANCE_PERIOD = 1h\nLABELS = A,B\n",
        )
        .unwrap();
        assert_eq!(c.master_host, "127.0.0.1");
        assert_eq!(c.advertised_host(), "10.0.0.5");
        assert_eq!(c.bind_listen_host(), "10.0.0.5");
        assert_eq!(c.listen_port, 9522);
        assert_eq!(c.bind_host.as_deref(), Some("10.0.0.5"));
        assert_eq!(c.hdd_file, PathBuf::from("/etc/moosefs/hdd.cfg"));
        assert_eq!(c.leave_space, 1 << 30);
        assert_eq!(c.master_timeout, Duration::from_secs(60));
        assert_eq!(c.test_speed, 2.5);
        assert_eq!(
            c.error_tolerance,
            Tolerance {
                count: 5,
                period: Duration::from_secs(3600)
            }
        );
        assert_eq!(c.labels, "A,B");
        assert_eq!(parse("HDD_TEST_SPEED = 0\n").unwrap().test_speed, 0.0);
    }

    #[test]
    fn bad_values_are_refused() {
        let e = parse("MASTER_TIMEOUT = 0\n").unwrap_err().to_string();
        assert!(
            e.contains("MASTER_TIMEOUT must be at least 1 second"),
            "{e}"
        );
        let e = parse("MASTER_PORT = 99999\n").unwrap_err().to_string();
        assert!(e.contains("cs.cfg:1"), "{e}");
        let e = parse("MASTER_HOST = \n").unwrap_err().to_string();
        assert!(e.contains("MASTER_HOST is empty"), "{e}");
        for bad in ["-1", "fast", "inf"] {
            let e = parse(&format!("HDD_TEST_SPEED = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("HDD_TEST_SPEED = "), "{e}");
        }
        let e = parse("HDD_ERROR_TOLERANCE_COUNT = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("HDD_ERROR_TOLERANCE_COUNT must be at least 1"),
            "{e}"
        );
        let e = parse("HDD_ERROR_TOLERANCE_PERIOD = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("HDD_ERROR_TOLERANCE_PERIOD must be at least 1 second"),
            "{e}"
        );
    }
}
