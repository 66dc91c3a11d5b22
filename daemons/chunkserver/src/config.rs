//! The chunkserver's settings, read from its config file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use moose_common::{CfgError, Config};
use moose_proto::ports;

use crate::hdd::Tolerance;

/// DATA_PATH when the config does not set it.
pub const DEFAULT_DATA_PATH: &str = "/var/lib/moosefs";
/// HDD_CONF_FILENAME when the config does not set it.
pub const DEFAULT_HDD_FILE: &str = "/etc/moosefs/moose-hdd.cfg";
/// Name of the file in DATA_PATH that keeps the id the master gave us.
pub const ID_FILE: &str = "chunkserver.id";

/// Keys this daemon reads besides the common ones (DATA_PATH, WORKING_USER, ...).
pub const KEYS: &[&str] = &[
    "MASTER_HOST",
    "MASTER_PORT",
    "BIND_HOST",
    "CSSERV_LISTEN_HOST",
    "CSSERV_LISTEN_PORT",
    "HDD_CONF_FILENAME",
    "HDD_LEAVE_SPACE_DEFAULT",
    "MASTER_RECONNECTION_DELAY",
    "MASTER_TIMEOUT",
    "HDD_TEST_SPEED",
    "HDD_ERROR_TOLERANCE_COUNT",
    "HDD_ERROR_TOLERANCE_PERIOD",
    "LABELS",
    "AUTH_CODE",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Cfg(#[from] CfgError),
    #[error("{}: {key} {reason}", .path.display())]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
}

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
    pub fn from_config(cfg: &Config, data_path: &Path) -> Result<CsConfig, ConfigError> {
        let invalid = |key: &'static str, reason: &str| ConfigError::Invalid {
            path: cfg.path().to_path_buf(),
            key,
            reason: reason.to_string(),
        };
        let master_host = cfg.get_str("MASTER_HOST", "mfsmaster").trim().to_string();
        if master_host.is_empty() {
            return Err(invalid(
                "MASTER_HOST",
                "is empty; set it to the master's host name or address",
            ));
        }
        let bind_host = cfg.get_str("BIND_HOST", "*").trim().to_string();
        let seconds = |key: &'static str, default: u64| -> Result<Duration, ConfigError> {
            match cfg.get_duration_secs(key, default)? {
                0 => Err(invalid(key, "must be at least 1 second")),
                s => Ok(Duration::from_secs(s)),
            }
        };
        let test_speed = match cfg.get("HDD_TEST_SPEED") {
            None => 1.0,
            Some(v) => match v.parse::<f64>() {
                Ok(s) if s.is_finite() && s >= 0.0 => s,
                _ => {
                    return Err(invalid(
                        "HDD_TEST_SPEED",
                        &format!(
                            "= {v}: expected MiB/s per disk, e.g. 1.0 or 0.5 (0 turns the \
                             background test off)"
                        ),
                    ))
                }
            },
        };
        let error_count = match cfg.get_u64("HDD_ERROR_TOLERANCE_COUNT", 2)? {
            0 => return Err(invalid("HDD_ERROR_TOLERANCE_COUNT", "must be at least 1")),
            n => u32::try_from(n).unwrap_or(u32::MAX),
        };
        Ok(CsConfig {
            cfg_path: cfg.path().to_path_buf(),
            data_path: data_path.to_path_buf(),
            master_port: cfg.get_port("MASTER_PORT", ports::MASTER_CHUNKSERVER)?,
            master_host,
            bind_host: (!matches!(bind_host.as_str(), "" | "*")).then_some(bind_host),
            listen_host: cfg.get_str("CSSERV_LISTEN_HOST", "*").trim().to_string(),
            listen_port: cfg.get_port("CSSERV_LISTEN_PORT", ports::CHUNKSERVER_DATA)?,
            hdd_file: cfg.get_path("HDD_CONF_FILENAME", DEFAULT_HDD_FILE),
            leave_space: cfg.get_size("HDD_LEAVE_SPACE_DEFAULT", 256 << 20)?,
            reconnect_delay: seconds("MASTER_RECONNECTION_DELAY", 1)?,
            master_timeout: seconds("MASTER_TIMEOUT", 10)?,
            test_speed,
            error_tolerance: Tolerance {
                count: error_count,
                period: seconds("HDD_ERROR_TOLERANCE_PERIOD", 600)?,
            },
            labels: cfg.get_str("LABELS", "").trim().to_string(),
            auth_code: match cfg.get("AUTH_CODE").map(str::trim) {
                None => None,
                Some("") => {
                    return Err(invalid(
                        "AUTH_CODE",
                        "is empty; give it the cluster secret (the master's AUTH_CODE) or remove \
                         the line",
                    ))
                }
                Some(v) => Some(v.to_string()),
            },
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

    fn parse(text: &str) -> Result<CsConfig, ConfigError> {
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
        assert_eq!(c.hdd_file, PathBuf::from(DEFAULT_HDD_FILE));
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
