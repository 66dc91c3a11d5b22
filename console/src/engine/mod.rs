//! What the console does to a cluster, with no terminal in sight: the TUI and the headless
//! subcommands both drive it.

pub mod deploy;
pub mod exec;
pub mod host;
pub mod logs;
pub mod master;
pub mod model;
pub mod monitor;
pub mod plan;
pub mod probe;
