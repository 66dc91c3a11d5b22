//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::engine::plan::Action;

/// The console of a MooseFS-style cluster: live panes, ordered start and stop. Without a
/// command it opens the terminal UI; every action is also a command for scripts.
#[derive(Debug, Parser)]
#[command(name = "moosectl", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// The cluster inventory (TOML). Without it: the built-in single-machine cluster (one
    /// master, one metalogger, three chunkservers, one mount) under the state folder.
    #[arg(short = 'i', long = "inventory", value_name = "INVENTORY")]
    pub inventory: Option<PathBuf>,
    /// The state folder: where relative inventory paths go [default: $XDG_DATA_HOME/moosectl
    /// or ~/.local/share/moosectl].
    #[arg(long = "state", value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Refuse start, stop and restart (the header shows RO).
    #[arg(long)]
    pub readonly: bool,
    /// Machine-readable output: JSON, or one JSON object per line while a plan runs.
    #[arg(long, global = true)]
    pub json: bool,
    /// The known_hosts file to check SSH host keys against and add accepted keys to
    /// [default: ~/.ssh/known_hosts]; /etc/ssh/ssh_known_hosts is checked too.
    #[arg(long = "known-hosts", value_name = "FILE", global = true)]
    pub known_hosts: Option<PathBuf>,
    /// Add unknown SSH host keys to the known_hosts file instead of refusing them (a
    /// changed key is always refused).
    #[arg(long = "accept-new-host-keys", global = true)]
    pub accept_new_host_keys: bool,
    /// Seconds an SSH connection may take to open (TCP, handshake, login).
    #[arg(
        long = "connect-timeout",
        value_name = "SECS",
        default_value_t = 10,
        global = true
    )]
    pub connect_timeout: u64,
    /// Hosts a deploy, stage or poll touches at once.
    #[arg(
        long = "parallel",
        value_name = "N",
        default_value_t = 16,
        global = true
    )]
    pub parallel: usize,
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

const AFTER_HELP: &str = "\
Examples:
  moosectl                          open the console on the built-in local cluster
  moosectl plan start               show the start plan without running it
  moosectl start --json             start everything, progress as JSON lines
  moosectl -i cluster.toml stop     stop a cluster: clients, chunkservers, metaloggers, master
  moosectl restart chunkserver-19432
  moosectl status --json            every role's state and the master's status
  moosectl status -H 127.0.0.1 -P 9421 --json   ask a master directly
  moosectl logs master -f           follow the master's log
  moosectl doctor --json            every setup check, evidence and fix as JSON

Exit status: 0 when the action or check succeeded, 1 when it failed, 2 for usage errors.";

/// The actions on a cluster: subcommands of the command line and commands of the TUI's
/// palette alike.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Print the plan of an action (stages, steps, gates) without running it.
    Plan {
        #[arg(value_enum)]
        action: PlanAction,
        /// ROLE[@HOST]: a role (master, metalogger, chunkserver, client) or an instance name
        /// (chunkserver-19422), optionally on one host.
        target: Option<String>,
    },
    /// Start the cluster (or ROLE[@HOST]) in order, waiting at each gate.
    Start {
        /// ROLE[@HOST] to start (all without it).
        target: Option<String>,
    },
    /// Stop the cluster (or ROLE[@HOST]) in reverse order.
    Stop {
        /// ROLE[@HOST] to stop (all without it).
        target: Option<String>,
    },
    /// Stop then start ROLE[@HOST].
    Restart {
        /// ROLE[@HOST]: a role or an instance name (chunkserver-19422), optionally @HOST.
        target: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    #[command(flatten)]
    Verb(Verb),
    /// The state of every role and the master's status; exits 1 unless the master answers
    /// and every role runs.
    Status {
        /// ROLE[@HOST] to report on (all without it).
        target: Option<String>,
        /// Ask the master at this address directly, without an inventory (like mfscli -H).
        #[arg(short = 'H', long = "host", requires = "port")]
        host: Option<String>,
        /// The master's client port (with -H).
        #[arg(short = 'P', long = "port", requires = "host")]
        port: Option<u16>,
    },
    /// Push binaries and config files to the hosts of ROLE[@HOST] (all without it): checks
    /// every host first, shows what changes, then stages and commits on all hosts.
    Deploy {
        /// ROLE[@HOST] whose hosts to deploy (all without it).
        target: Option<String>,
        /// Show what would change (with --json: as JSON) and change nothing.
        #[arg(long = "dry-run")]
        dry_run: bool,
        /// The folder with the moose-* binaries to push [default: next to moosectl].
        #[arg(long = "binaries", value_name = "DIR")]
        binaries: Option<PathBuf>,
    },
    /// Check the setup from every host where traffic starts (names, ports, exports, data
    /// folders, lockfiles, disks, clocks, versions, FUSE, mount points) and say how to fix
    /// each problem; exits 1 on an error (with --strict: on a warning too).
    Doctor {
        /// Only the checks that start on these hosts (all without them).
        #[arg(value_name = "HOST")]
        hosts: Vec<String>,
        /// Warnings fail too.
        #[arg(long)]
        strict: bool,
        /// Apply the safe fixes (chown of a data or disk folder, an /etc/hosts line) after
        /// asking [y/N], then check again; the other fixes are only shown.
        #[arg(long)]
        fix: bool,
        /// With --fix: do not ask (without a terminal and without --yes nothing changes).
        #[arg(long, requires = "fix")]
        yes: bool,
    },
    /// Print (or follow) the logs of ROLE[@HOST].
    Logs {
        /// ROLE[@HOST] whose logs to print (several are merged, each line prefixed).
        target: String,
        /// Keep printing new lines (like tail -F).
        #[arg(short = 'f', long)]
        follow: bool,
        /// Lines of each log to print first.
        #[arg(short = 'n', long = "lines", default_value_t = 50)]
        lines: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanAction {
    Start,
    Stop,
    Restart,
    Deploy,
}

impl From<PlanAction> for Action {
    fn from(a: PlanAction) -> Action {
        match a {
            PlanAction::Start => Action::Start,
            PlanAction::Stop => Action::Stop,
            PlanAction::Restart => Action::Restart,
            PlanAction::Deploy => Action::Deploy,
        }
    }
}
