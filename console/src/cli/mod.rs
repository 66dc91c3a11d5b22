//! The command line: its definition and the subcommands that run without the terminal UI.

pub mod args;
pub mod headless;
