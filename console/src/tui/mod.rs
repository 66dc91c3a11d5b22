//! The terminal UI: state, events, the one place that changes the state, and the panes.

pub mod app;
pub mod event;
pub mod keys;
pub mod palette;
pub mod terminal;
pub mod ui;
pub mod update;
pub mod view;

pub use terminal::run;
