//! `moosectl`: the console of a MooseFS-style cluster, in three parts.
//!
//! - [`engine`]: what the console does to a cluster: plans and their execution, probes, the
//!   hosts everything goes through, logs, deploy and the once-a-second monitor.
//! - [`tui`]: the terminal UI. Events come in (keys, ticks, monitor snapshots, log lines, plan
//!   progress) and go through [`tui::update::update`], which changes the plain-data
//!   [`tui::app::App`] and returns [`tui::event::Effect`]s; those run on tokio tasks and send
//!   events back. [`tui::ui::draw`] only renders the state.
//! - [`cli`]: the command line and its headless subcommands.
//! - [`doctor`]: the setup checks of `moosectl doctor` and the Doctor pane.

pub mod cli;
pub mod doctor;
pub mod engine;
pub mod fmt;
pub mod tui;
