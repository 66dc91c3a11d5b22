//! The master's admin side as tools see it: [`client`] asks the master for its status over
//! any stream, [`status`] prints that status the same way for `moose-tool info` and
//! `moosectl status`.

pub mod client;
pub mod status;

pub use client::{connect, AdminClient, AdminError};
