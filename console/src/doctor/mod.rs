//! `moosectl doctor`: finds the setup problems that stop a cluster before the user hits them
//! (a data folder the run-as user cannot write, a client the exports refuse, a name missing
//! from `/etc/hosts`, a foreign mount on the mount point…) and says how to fix each.
//!
//! Every check runs from the host where the traffic or the daemon starts, through that host's
//! [`Machine`](crate::engine::host::Machine), all hosts and checks in parallel with timeouts.
//! Checks judge with the daemons' own code where there is one (the master's exports
//! admission). Each check reports at least one [`Finding`], `ok` ones with their evidence.

pub mod checks;
pub mod finding;
pub mod firewall;
pub mod fix;
pub mod runner;

pub use finding::{Counts, Finding, FixAction, FixOutcome, PortProbe, Report, Status};
pub use runner::{run, Scope};
