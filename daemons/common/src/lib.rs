//! Pieces shared by every daemon: config files in MooseFS syntax, the daemon verbs
//! (`start|stop|restart|reload|status|test|kill`), the lockfile, the run-as user and logging.

pub mod daemon;
pub mod exports;
pub mod limits;
pub mod lockfile;
pub mod logging;
pub mod user;

// The file formats moved to moose-formats (which the inventory links without tokio); these
// paths stay for the daemons.
pub use daemon::{DaemonArgs, DaemonContext, DaemonSpec, ReadyPipe, SpawnFailure, Verb, Workers};
pub use moose_formats::{cfg, stock_keys, suggest, units};
pub use moose_formats::{CfgError, Config};
