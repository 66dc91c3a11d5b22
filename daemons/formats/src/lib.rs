//! Every file a daemon reads, with one owner each: the `KEY = VALUE` config files of the
//! master, chunkserver and metalogger (typed, from one key table per daemon), the hdd file and
//! the exports file. Each parses text with errors naming file and line and renders itself
//! back as text; the daemons, the inventory and the test harness all use these types.
//! [`admission`] decides which exports line admits a client, for the master and the console.

pub mod admission;
pub mod cfg;
pub mod daemon_cfg;
pub mod exports;
pub mod hdd;
pub mod keys;
pub mod stock_keys;
pub mod suggest;
pub mod units;
pub mod value;

pub use cfg::{CfgError, Config};
pub use daemon_cfg::{
    ChunkserverCfg, ChunkserverKeys, CommonKeys, MasterCfg, MasterKeys, MetaloggerCfg,
    MetaloggerKeys,
};
pub use keys::{DaemonCfg, DaemonKeys, KeySet, KeySpec};
