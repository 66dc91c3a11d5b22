//! Pieces shared by every daemon: config files in MooseFS syntax, the daemon verbs
//! (`start|stop|restart|reload|status|test|kill`), the lockfile, the run-as user and logging.

pub mod cfg;
pub mod daemon;
pub mod exports;
pub mod limits;
pub mod lockfile;
pub mod logging;
pub mod stock_keys;
pub mod suggest;
pub mod units;
pub mod user;

pub use cfg::{CfgError, Config};
pub use daemon::{DaemonArgs, DaemonContext, DaemonSpec, ReadyPipe, SpawnFailure, Verb};
