//! The key tables of the daemons' config files (`KEY = VALUE`, MooseFS syntax).

use std::path::PathBuf;

use crate::keys::{DaemonCfg, DaemonKeys};
use crate::value::{Bytes, ClassLimits, Name, Range, Seconds, Umask};

/// Default ports, as MooseFS uses them (moose-proto's `ports` has the same numbers; this crate
/// stays free of the protocol's async dependencies).
pub mod ports {
    pub const MASTER_METALOGGER: u16 = 9419;
    pub const MASTER_CHUNKSERVER: u16 = 9420;
    pub const MASTER_CLIENT: u16 = 9421;
    pub const CHUNKSERVER_DATA: u16 = 9422;
}

/// The master's config file.
pub type MasterCfg = DaemonCfg<MasterKeys>;
/// A chunkserver's config file.
pub type ChunkserverCfg = DaemonCfg<ChunkserverKeys>;
/// A metalogger's config file.
pub type MetaloggerCfg = DaemonCfg<MetaloggerKeys>;

crate::key_set! {
    /// Keys every daemon reads.
    pub struct CommonKeys {
        data_path: PathBuf = "DATA_PATH", default "/var/lib/moosefs".into(), range Range::Any,
            "folder of the daemon's state, lockfile and log";
        working_user: String = "WORKING_USER", default "mfs".into(), range Range::Any,
            "user the daemon runs as when started by root (#UID for a number)";
        working_group: String = "WORKING_GROUP", default String::new(), range Range::Any,
            "group the daemon runs as (empty: the user's primary group)";
        file_umask: Umask = "FILE_UMASK", default Umask(0o027), range Range::Any,
            "umask of files the daemon creates";
    }
}

crate::key_set! {
    /// Keys moose-master reads.
    pub struct MasterKeys {
        exports_filename: PathBuf = "EXPORTS_FILENAME",
            default "/etc/moosefs/moose-exports.cfg".into(), range Range::Any,
            "the exports file (relative: to this file's folder)";
        matoml_listen_host: String = "MATOML_LISTEN_HOST", default "*".into(), range Range::Any,
            "address metaloggers connect to (* = every address)";
        matoml_listen_port: u16 = "MATOML_LISTEN_PORT", default ports::MASTER_METALOGGER,
            range Range::Any, "port metaloggers connect to";
        matocs_listen_host: String = "MATOCS_LISTEN_HOST", default "*".into(), range Range::Any,
            "address chunkservers connect to (* = every address)";
        matocs_listen_port: u16 = "MATOCS_LISTEN_PORT", default ports::MASTER_CHUNKSERVER,
            range Range::Any, "port chunkservers connect to";
        matocl_listen_host: String = "MATOCL_LISTEN_HOST", default "*".into(), range Range::Any,
            "address mounts and tools connect to (* = every address)";
        matocl_listen_port: u16 = "MATOCL_LISTEN_PORT", default ports::MASTER_CLIENT,
            range Range::Any, "port mounts and tools connect to";
        metadata_save_freq: u64 = "METADATA_SAVE_FREQ", default 1, range Range::AtLeast(1.0),
            "hours between metadata dumps";
        back_logs: u64 = "BACK_LOGS", default 50, range Range::Within(1.0, 10_000.0),
            "rotated changelogs kept";
        matocs_timeout: Seconds = "MATOCS_TIMEOUT", default Seconds(10),
            range Range::AtLeast(2.0), "a silent chunkserver is dropped after this long";
        default_goal: u64 = "DEFAULT_GOAL", default 2, range Range::Within(1.0, 9.0),
            "goal of a fresh file system's root";
        replications_delay_init: Seconds = "REPLICATIONS_DELAY_INIT", default Seconds(60),
            range Range::Any,
            "after a start, nothing is replicated or deleted until every known chunkserver is \
             back or this long has passed";
        chunks_write_rep_limit: ClassLimits = "CHUNKS_WRITE_REP_LIMIT",
            default ClassLimits(vec![4]), range Range::AtLeast(1.0),
            "replications into one chunkserver at once (first number of a MooseFS list)";
        chunks_read_rep_limit: ClassLimits = "CHUNKS_READ_REP_LIMIT",
            default ClassLimits(vec![8]), range Range::AtLeast(1.0),
            "replications out of one chunkserver at once (first number of a MooseFS list)";
        chunks_loop_max_cps: u64 = "CHUNKS_LOOP_MAX_CPS", default 100_000,
            range Range::AtLeast(1.0),
            "chunks the health loop examines per second at most (a sweep over all chunks)";
        acceptable_percentage_difference: f64 = "ACCEPTABLE_PERCENTAGE_DIFFERENCE", default 5.0,
            range Range::Above(0.0),
            "disk usage spread in percent that starts rebalancing (it goes on down to half)";
        changelog_save_mode: u64 = "CHANGELOG_SAVE_MODE", default 0, range Range::Within(0.0, 2.0),
            "0 or 1: a change is written before its reply and synced within a second; 2: synced \
             before its reply";
        auth_code: Name = "AUTH_CODE", default Name::default(), range Range::Any,
            "the cluster secret chunkservers and metaloggers prove (unset: none)";
        session_sustain_time: Seconds = "SESSION_SUSTAIN_TIME", default Seconds(86_400),
            range Range::Any, "how long a mount's session outlives a lost connection";
        quota_default_grace_period: Seconds = "QUOTA_DEFAULT_GRACE_PERIOD",
            default Seconds(604_800), range Range::Any,
            "how long a soft quota may be exceeded before it acts as a hard one (setquota -p \
             overrides it per folder)";
    }
}

impl DaemonKeys for MasterKeys {
    const PROGRAM: &'static str = "moose-master";
}

crate::key_set! {
    /// Keys moose-chunkserver reads.
    pub struct ChunkserverKeys {
        master_host: Name = "MASTER_HOST", default Name("mfsmaster".into()), range Range::Any,
            "the master's host name or address";
        master_port: u16 = "MASTER_PORT", default ports::MASTER_CHUNKSERVER, range Range::Any,
            "the master's port for chunkservers";
        bind_host: String = "BIND_HOST", default "*".into(), range Range::Any,
            "local address to connect to the master from (* = the system chooses)";
        csserv_listen_host: String = "CSSERV_LISTEN_HOST", default "*".into(), range Range::Any,
            "address of the data port; also the address mounts are given unless *";
        csserv_listen_port: u16 = "CSSERV_LISTEN_PORT", default ports::CHUNKSERVER_DATA,
            range Range::Any, "the data port";
        hdd_conf_filename: PathBuf = "HDD_CONF_FILENAME",
            default "/etc/moosefs/moose-hdd.cfg".into(), range Range::Any,
            "the hdd file listing the data folders (relative: to this file's folder)";
        hdd_leave_space_default: Bytes = "HDD_LEAVE_SPACE_DEFAULT", default Bytes(256 << 20),
            range Range::Any, "space kept free on a disk without a space option";
        master_reconnection_delay: Seconds = "MASTER_RECONNECTION_DELAY", default Seconds(1),
            range Range::AtLeast(1.0), "wait before connecting to the master again";
        master_timeout: Seconds = "MASTER_TIMEOUT", default Seconds(10),
            range Range::AtLeast(1.0), "a silent master connection is dropped after this long";
        hdd_test_speed: f64 = "HDD_TEST_SPEED", default 1.0, range Range::AtLeast(0.0),
            "background CRC check in MiB/s per disk (0 = off)";
        hdd_error_tolerance_count: u64 = "HDD_ERROR_TOLERANCE_COUNT", default 2,
            range Range::AtLeast(1.0),
            "this many errors within HDD_ERROR_TOLERANCE_PERIOD mark a disk damaged";
        hdd_error_tolerance_period: Seconds = "HDD_ERROR_TOLERANCE_PERIOD",
            default Seconds(600), range Range::AtLeast(1.0),
            "the window HDD_ERROR_TOLERANCE_COUNT counts errors in";
        labels: String = "LABELS", default String::new(), range Range::Any,
            "storage class labels (accepted, not used yet)";
        auth_code: Name = "AUTH_CODE", default Name::default(), range Range::Any,
            "the cluster secret proved to the master (unset: none)";
    }
}

impl DaemonKeys for ChunkserverKeys {
    const PROGRAM: &'static str = "moose-chunkserver";
}

crate::key_set! {
    /// Keys moose-metalogger reads.
    pub struct MetaloggerKeys {
        master_host: String = "MASTER_HOST", default "mfsmaster".into(), range Range::Any,
            "the master's host name or address";
        master_port: u16 = "MASTER_PORT", default ports::MASTER_METALOGGER, range Range::Any,
            "the master's port for metaloggers";
        bind_host: String = "BIND_HOST", default "*".into(), range Range::Any,
            "accepted as stock MooseFS has it, not used";
        master_timeout: Seconds = "MASTER_TIMEOUT", default Seconds(10),
            range Range::AtLeast(2.0), "a silent master connection is dropped after this long";
        master_reconnection_delay: Seconds = "MASTER_RECONNECTION_DELAY", default Seconds(1),
            range Range::AtLeast(1.0), "wait before connecting to the master again";
        back_logs: u64 = "BACK_LOGS", default 50, range Range::Within(1.0, 10_000.0),
            "rotated changelogs kept";
        meta_download_freq: u64 = "META_DOWNLOAD_FREQ", default 24, range Range::AtLeast(1.0),
            "hours between fresh metadata downloads";
        auth_code: Name = "AUTH_CODE", default Name::default(), range Range::Any,
            "the cluster secret proved to the master (unset: none)";
    }
}

impl DaemonKeys for MetaloggerKeys {
    const PROGRAM: &'static str = "moose-metalogger";
}

/// Every daemon's key table as markdown, as docs/operations.md holds it.
pub fn markdown_tables() -> String {
    use crate::keys::markdown_table;
    [
        markdown_table(MasterKeys::PROGRAM, &MasterCfg::key_table()),
        markdown_table(ChunkserverKeys::PROGRAM, &ChunkserverCfg::key_table()),
        markdown_table(MetaloggerKeys::PROGRAM, &MetaloggerCfg::key_table()),
    ]
    .join("\n")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;
    use crate::keys::KeySpec;

    const OPERATIONS_MD: &str = "../../docs/operations.md";

    /// A key added without docs, or docs edited by hand, fails here; run with
    /// `UPDATE_DOCS=1` to write the generated tables into docs/operations.md.
    #[test]
    fn operations_guide_shows_the_key_tables() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(OPERATIONS_MD);
        let text = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = ("<!-- key tables begin -->\n", "<!-- key tables end -->");
        let (Some(a), Some(b)) = (text.find(begin), text.find(end)) else {
            panic!("{OPERATIONS_MD} lacks the markers {begin:?} and {end:?}");
        };
        let generated = markdown_tables();
        let shown = &text[a + begin.len()..b];
        if shown != generated && std::env::var_os("UPDATE_DOCS").is_some() {
            let updated = format!("{}{generated}{}", &text[..a + begin.len()], &text[b..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        assert_eq!(shown, generated, "run with UPDATE_DOCS=1 to regenerate");
    }

    #[test]
    fn every_default_is_admitted_by_its_own_key() {
        for k in MasterCfg::key_table()
            .iter()
            .chain(&ChunkserverCfg::key_table())
            .chain(&MetaloggerCfg::key_table())
            .filter(|k| k.name != "AUTH_CODE")
        {
            let text = format!("{} = {}\n", k.name, (k.default)());
            let path = Path::new("d.cfg");
            let ok = MasterCfg::parse(path, &text).is_ok()
                || ChunkserverCfg::parse(path, &text).is_ok()
                || MetaloggerCfg::parse(path, &text).is_ok();
            assert!(ok, "{text}");
        }
    }

    #[test]
    fn out_of_range_values_and_a_bad_umask_are_errors() {
        let path = Path::new("m.cfg");
        for (text, expected) in [
            (
                "BACK_LOGS = 0\n",
                "m.cfg:1: BACK_LOGS must be from 1 to 10000 (the file says BACK_LOGS = 0)",
            ),
            (
                "\nMATOCS_TIMEOUT = 1\n",
                "m.cfg:2: MATOCS_TIMEOUT must be at least 2 seconds (the file says \
                 MATOCS_TIMEOUT = 1)",
            ),
            (
                "FILE_UMASK = 0999\n",
                "m.cfg:1: FILE_UMASK = 0999: expected octal permission bits from 000 to 777, \
                 e.g. 027",
            ),
            (
                "CHUNKS_WRITE_REP_LIMIT = two\n",
                "m.cfg:1: CHUNKS_WRITE_REP_LIMIT = two: expected whole numbers separated by \
                 commas, e.g. 4 or 2,1,1,4",
            ),
        ] {
            let err = MasterCfg::parse(path, text).unwrap_err().to_string();
            assert_eq!(err, expected);
        }
        let cfg = MasterCfg::parse(path, "FILE_UMASK = 002\n").unwrap();
        assert_eq!(cfg.common.file_umask(), Umask(0o002));
    }

    #[test]
    fn renders_set_keys_in_table_order_then_stock_keys() {
        let text = "NICE_LEVEL = -19\nDEFAULT_GOAL = 3\nDATA_PATH = /d\n";
        let cfg = MasterCfg::parse(Path::new("m.cfg"), text).unwrap();
        assert_eq!(cfg.keys.default_goal(), 3);
        assert_eq!(cfg.keys.back_logs(), 50);
        assert_eq!(
            cfg.render("# header\n"),
            "# header\nDATA_PATH = /d\nDEFAULT_GOAL = 3\nNICE_LEVEL = -19\n"
        );
    }

    /// Text a key of this kind admits (numbers within the key's range).
    fn value_text(k: &KeySpec) -> BoxedStrategy<String> {
        let (lo, hi) = match k.range {
            Range::Within(lo, hi) => (lo as u64, hi as u64),
            Range::AtLeast(lo) | Range::Above(lo) => (lo as u64 + 1, 1 << 40),
            Range::Any => (0, 1 << 40),
        };
        match k.kind {
            "port" => (1u16..).prop_map(|p| p.to_string()).boxed(),
            "number" => (lo..=hi).prop_map(|n| n.to_string()).boxed(),
            "number list" => proptest::collection::vec(lo..=hi, 1..4)
                .prop_map(|v| v.iter().map(u64::to_string).collect::<Vec<_>>().join(","))
                .boxed(),
            "duration" => (lo..=hi, prop::sample::select(vec!["", "s", "m", "h", "d"]))
                .prop_map(|(n, u)| format!("{n}{u}"))
                .boxed(),
            "size" => (
                0u64..1 << 20,
                prop::sample::select(vec!["", "k", "MiB", "GiB"]),
            )
                .prop_map(|(n, u)| format!("{n}{u}"))
                .boxed(),
            "decimal" => (lo as f64 + 0.001..1e9).prop_map(|f| f.to_string()).boxed(),
            "octal mask" => (0u32..=0o777).prop_map(|m| format!("{m:o}")).boxed(),
            "path" => "(/?[a-z0-9._-]{1,8}){1,4}".boxed(),
            _ => "[A-Za-z0-9#*:,._-]{1,12}".boxed(),
        }
    }

    /// Config text with a random subset of `keys` set, and a stock key now and then.
    fn cfg_text(keys: Vec<KeySpec>) -> impl Strategy<Value = String> {
        let lines: Vec<_> = keys
            .iter()
            .map(|k| {
                let name = k.name;
                proptest::option::of(value_text(k).prop_map(move |v| format!("{name} = {v}\n")))
            })
            .collect();
        (lines, proptest::option::of("NICE_LEVEL = -?[0-9]{1,2}\n"))
            .prop_map(|(lines, stock)| lines.into_iter().flatten().chain(stock).collect())
    }

    fn round_trips<K: crate::keys::DaemonKeys>(text: &str) {
        let path = Path::new("r.cfg");
        let cfg = DaemonCfg::<K>::parse(path, text).unwrap();
        let again = DaemonCfg::<K>::parse(path, &cfg.render("# generated\n")).unwrap();
        assert_eq!(again, cfg);
    }

    proptest! {
        #[test]
        fn master_cfg_round_trips(text in cfg_text(MasterCfg::key_table())) {
            round_trips::<MasterKeys>(&text);
        }

        #[test]
        fn chunkserver_cfg_round_trips(text in cfg_text(ChunkserverCfg::key_table())) {
            round_trips::<ChunkserverKeys>(&text);
        }

        #[test]
        fn metalogger_cfg_round_trips(text in cfg_text(MetaloggerCfg::key_table())) {
            round_trips::<MetaloggerKeys>(&text);
        }
    }
}
