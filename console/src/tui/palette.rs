//! The command palette (`:`). Its lines are parsed by clap, with the actions the command line
//! has ([`Verb`]) defined once for both.

use clap::{CommandFactory, Parser, Subcommand};

use crate::cli::args::Verb;

/// A palette line: one command, no program name.
#[derive(Debug, Parser)]
#[command(
    name = ":",
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true,
    disable_help_subcommand = true
)]
struct PaletteLine {
    #[command(subcommand)]
    cmd: PaletteCmd,
}

#[derive(Debug, Subcommand)]
pub enum PaletteCmd {
    #[command(aliases = ["o", "info"])]
    Overview,
    #[command(aliases = ["s", "roles", "mounts"])]
    Servers,
    #[command(aliases = ["d", "hdd"])]
    Disks,
    #[command(aliases = ["r", "chunks", "matrix"])]
    Replication,
    #[command(aliases = ["l", "log"])]
    Logs {
        /// ROLE[@HOST] whose log to show (all without it).
        target: Option<String>,
    },
    #[command(aliases = ["e"])]
    Exports,
    Doctor,
    #[command(aliases = ["quota"])]
    Quotas,
    #[command(flatten)]
    Verb(Verb),
    Refresh,
    #[command(aliases = ["h"])]
    Help,
    #[command(aliases = ["q", "q!", "exit"])]
    Quit,
}

/// The palette commands as `:help` lists them and Tab completes them (a test keeps them equal
/// to the commands [`PaletteCmd`] parses).
pub const PALETTE: &[(&str, &str)] = &[
    ("overview", "Overview pane"),
    ("servers", "Servers pane"),
    ("disks", "Disks pane"),
    ("replication", "Replication pane (also :chunks)"),
    ("logs", "Logs pane; :logs ROLE[@HOST] picks the source"),
    ("exports", "Exports pane"),
    ("doctor", "Doctor pane: every setup check, evidence and fix"),
    ("quotas", "Quotas pane: every folder quota, usage and grace"),
    ("start", "start the cluster, or :start ROLE[@HOST]"),
    (
        "stop",
        "stop the cluster, or :stop ROLE[@HOST] (asks first)",
    ),
    ("restart", ":restart ROLE[@HOST] (asks first)"),
    (
        "plan",
        ":plan start|stop [ROLE[@HOST]]: show a plan without running it",
    ),
    ("refresh", "poll the cluster now"),
    ("help", "the keys and commands"),
    ("quit", "quit (also :q)"),
];

/// The command of a palette line: `None` for a blank line, else what to do or why not.
pub fn parse(line: &str) -> Result<Option<PaletteCmd>, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some(&first) = words.first() else {
        return Ok(None);
    };
    if PaletteLine::command().find_subcommand(first).is_none() {
        let names: Vec<&str> = PALETTE.iter().map(|(c, _)| *c).collect();
        return Err(format!(
            "unknown command :{first}; commands: {}",
            names.join(" ")
        ));
    }
    PaletteLine::try_parse_from(words)
        .map(|l| Some(l.cmd))
        .map_err(|e| one_line(&e))
}

/// A clap error as one line for the footer.
fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect();
    let joined = parts.join(" ");
    joined
        .strip_prefix("error: ")
        .unwrap_or(&joined)
        .to_string()
}

/// Completes the first word of a palette line.
pub fn complete(line: &str) -> String {
    if line.contains(' ') {
        return line.to_string();
    }
    let found: Vec<&str> = PALETTE
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| c.starts_with(line))
        .collect();
    match found[..] {
        [one] => format!("{one} "),
        _ => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::PlanAction;

    #[test]
    fn the_help_lists_what_clap_parses() {
        let parsed: Vec<String> = PaletteLine::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        let mut listed: Vec<&str> = PALETTE.iter().map(|(c, _)| *c).collect();
        let mut parsed: Vec<&str> = parsed.iter().map(String::as_str).collect();
        listed.sort_unstable();
        parsed.sort_unstable();
        assert_eq!(listed, parsed);
    }

    #[test]
    fn lines_parse_into_commands() {
        assert!(matches!(parse("  "), Ok(None)));
        assert!(matches!(parse("chunks"), Ok(Some(PaletteCmd::Replication))));
        assert!(matches!(parse("q!"), Ok(Some(PaletteCmd::Quit))));
        assert!(matches!(
            parse("logs master"),
            Ok(Some(PaletteCmd::Logs { target: Some(t) })) if t == "master"
        ));
        assert!(matches!(
            parse("plan stop chunkserver@h2"),
            Ok(Some(PaletteCmd::Verb(Verb::Plan { action: PlanAction::Stop, target: Some(t) }))) if t == "chunkserver@h2"
        ));
    }

    #[test]
    fn bad_lines_say_why_in_one_line() {
        let unknown = parse("bogus x").unwrap_err();
        assert!(unknown.starts_with("unknown command :bogus; commands: overview servers"));
        for bad in ["restart", "plan sideways", "start a b", "disks --x", "-x"] {
            let e = parse(bad).unwrap_err();
            assert!(!e.is_empty() && !e.contains('\n'), "{bad}: {e:?}");
        }
    }
}
