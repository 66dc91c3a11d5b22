//! `moosectl`: the console of a MooseFS-style cluster.
//!
//! Events come in (keys, ticks, monitor snapshots, log lines, plan progress) and go through
//! [`update::update`], which changes the plain-data [`app::App`] and returns
//! [`event::Command`]s; those run on tokio tasks and send events back. [`ui::draw`] only
//! renders the state. Everything done on a machine goes through its [`host::Host`].

pub mod app;
pub mod cli;
pub mod deploy;
pub mod event;
pub mod exec;
pub mod fmt;
pub mod headless;
pub mod host;
pub mod logs;
pub mod master;
pub mod model;
pub mod monitor;
pub mod plan;
pub mod probe;
pub mod tui;
pub mod ui;
pub mod update;
pub mod view;
