//! The chunkserver: keeps chunks as files on the folders of the hdd file, registers them with
//! the master, carries out the master's orders and serves reads and chained writes to clients
//! and other chunkservers on the data port.

pub mod access;
pub mod bufpool;
pub mod chunkfile;
pub mod config;
pub mod creations;
pub mod dataserver;
pub mod downstream;
pub mod filecache;
pub mod hdd;
pub mod identity;
pub mod local_reads;
pub mod masterconn;
pub mod orders;
pub mod replicator;
pub mod scrub;
pub mod service;
pub mod spares;
pub mod store;

use moose_common::{DaemonSpec, Workers};

/// What distinguishes this daemon for the shared daemon plumbing.
pub const SPEC: DaemonSpec = DaemonSpec {
    name: "moose-chunkserver",
    default_config: "/etc/moosefs/moose-chunkserver.cfg",
    keys: config::KEYS,
    default_data_path: config::DEFAULT_DATA_PATH,
    workers: Workers::PerCpu,
};
