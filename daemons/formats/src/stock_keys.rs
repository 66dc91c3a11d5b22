//! Keys stock MooseFS knows in each daemon's config that our daemons do not use. An admin's
//! existing file may carry them: they are ignored with a warning. Any other unknown key is
//! an error, because a typo in a key (a `DATA_PATH` misspelt) would otherwise silently give
//! a default, such as an empty file system in the wrong folder.

/// Keys every stock MooseFS daemon reads (`mfscommon/main.c`).
const COMMON: &[&str] = &[
    "SYSLOG_IDENT",
    "LOCK_MEMORY",
    "LIMIT_GLIBC_MALLOC_ARENAS",
    "DISABLE_OOM_KILLER",
    "NICE_LEVEL",
    "FILE_UMASK",
    "WORKING_USER",
    "WORKING_GROUP",
    "DATA_PATH",
];

const MASTER: &[&str] = &[
    "EXPORTS_FILENAME",
    "TOPOLOGY_FILENAME",
    "MULTILAN_IPMAP_FILENAME",
    "INSTANCE_NAME",
    "METADATA_SAVE_FREQ",
    "METADATA_SAVE_OFFSET",
    "BACK_META_KEEP_PREVIOUS",
    "BACK_LOGS",
    "CHANGELOG_SAVE_MODE",
    "CHANGELOG_PRESERVE_SECONDS",
    "CHANGELOG_PRESERVE_MB",
    "MISSING_LOG_CAPACITY",
    "MATOML_LISTEN_HOST",
    "MATOML_LISTEN_PORT",
    "MATOCS_LISTEN_HOST",
    "MATOCS_LISTEN_PORT",
    "MATOCS_TIMEOUT",
    "MATOCS_FORCE_TIMEOUT",
    "MATOCL_LISTEN_HOST",
    "MATOCL_LISTEN_PORT",
    "MATOML_TIMEOUT",
    "AUTH_CODE",
    "REMAP_BITS",
    "REMAP_SOURCE_IP_CLASS",
    "REMAP_DESTINATION_IP_CLASS",
    "MULTILAN_BITS",
    "MULTILAN_CLASSES",
    "REPLICATIONS_DELAY_INIT",
    "REPLICATIONS_DELAY_DISCONNECT",
    "REPLICATIONS_RESPECT_TOPOLOGY",
    "CREATIONS_RESPECT_TOPOLOGY",
    "CHUNKS_UNIQUE_MODE",
    "CHUNKS_LOOP_MAX_CPS",
    "CHUNKS_LOOP_MIN_TIME",
    "CHUNKS_LOOP_MAX_CPU",
    "CHUNKS_LOOP_TIME",
    "CHUNKS_SOFT_DEL_LIMIT",
    "CHUNKS_HARD_DEL_LIMIT",
    "CHUNKS_WRITE_REP_LIMIT",
    "CHUNKS_READ_REP_LIMIT",
    "CS_HEAVY_LOAD_THRESHOLD",
    "CS_HEAVY_LOAD_RATIO_THRESHOLD",
    "CS_HEAVY_LOAD_GRACE_PERIOD",
    "ACCEPTABLE_PERCENTAGE_DIFFERENCE",
    "ACCEPTABLE_DIFFERENCE",
    "PRIORITY_QUEUES_LENGTH",
    "CS_MAINTENANCE_MODE_TIMEOUT",
    "CS_TEMP_MAINTENANCE_MODE_TIMEOUT",
    "CS_DAYS_TO_REMOVE_UNUSED",
    "SESSION_SUSTAIN_TIME",
    "RESTRICT_INCOMPATIBLE_CLIENT_VERSIONS",
    "QUOTA_DEFAULT_GRACE_PERIOD",
    "ATIME_MODE",
    "KEEP_EMPTY_FILES_IN_TRASH",
    "RESERVE_SPACE",
    "MAX_ALLOWED_HARD_LINKS",
    "INODE_REUSE_DELAY",
    "DEFAULT_EC_DATA_PARTS",
    "NO_ATIME",
    "EMPTY_TRASH_PERIOD",
    "EMPTY_RESERVED_INODES_PERIOD",
    "FREE_INODES_PERIOD",
    "MASTER_HOST",
    "MASTER_PORT",
    "MASTER_RECONNECTION_DELAY",
    "MASTER_TIMEOUT",
    "BIND_HOST",
    "PERSONALITY",
];

const CHUNKSERVER: &[&str] = &[
    "LABELS",
    "MASTER_HOST",
    "MASTER_PORT",
    "BIND_HOST",
    "MASTER_TIMEOUT",
    "MASTER_RECONNECTION_DELAY",
    "AUTH_CODE",
    "CHUNKS_PER_REGISTER_PACKET",
    "CSSERV_LISTEN_HOST",
    "CSSERV_LISTEN_PORT",
    "CSSERV_TIMEOUT",
    "HDD_CONF_FILENAME",
    "HDD_TEST_SPEED",
    "HDD_TEST_FREQ",
    "HDD_MIN_TEST_INTERVAL",
    "HDD_LEAVE_SPACE_DEFAULT",
    "HDD_REBALANCE_UTILIZATION",
    "HDD_HIGH_SPEED_REBALANCE_LIMIT",
    "HDD_ERROR_TOLERANCE_COUNT",
    "HDD_ERROR_TOLERANCE_PERIOD",
    "HDD_FSYNC_BEFORE_CLOSE",
    "HDD_SPARSIFY_ON_WRITE",
    "HDD_RR_CHUNK_COUNT",
    "HDD_KEEP_DUPLICATES_HOURS",
    "HDD_PUNCH_HOLES",
    "HDD_CHECK_CRC_WHEN_READING",
    "HDD_CHECK_CRC_WHEN_WRITING",
    "WORKERS_MAX",
    "WORKERS_MAX_IDLE",
    "ALLOW_STARTING_WITH_INVALID_DISKS",
    "CAN_USE_MMAP",
    "REPLICATION_BANDWIDTH_LIMIT",
    "REPLICATION_TOTAL_TIMEOUT",
    "REPLICATION_CONNECTION_TIMEOUT",
    "REPLICATION_WAVE_TIMEOUT",
];

const METALOGGER: &[&str] = &[
    "MASTER_HOST",
    "MASTER_PORT",
    "MASTER_TIMEOUT",
    "MASTER_RECONNECTION_DELAY",
    "BIND_HOST",
    "BACK_LOGS",
    "BACK_META_KEEP_PREVIOUS",
    "META_DOWNLOAD_FREQ",
];

/// The stock MooseFS keys of the daemon called `program` (`moose-master`, ...).
pub fn for_daemon(program: &str) -> Vec<&'static str> {
    let own: &[&str] = match program {
        "moose-master" => MASTER,
        "moose-chunkserver" => CHUNKSERVER,
        "moose-metalogger" => METALOGGER,
        _ => &[],
    };
    COMMON.iter().chain(own).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_daemon_has_its_own_and_the_common_keys() {
        assert!(for_daemon("moose-master").contains(&"TOPOLOGY_FILENAME"));
        assert!(!for_daemon("moose-metalogger").contains(&"TOPOLOGY_FILENAME"));
        assert!(for_daemon("moose-chunkserver").contains(&"NICE_LEVEL"));
    }
}
