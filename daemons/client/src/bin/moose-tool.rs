//! `moose-tool setgoal [-r] N PATH…`, `moose-tool getgoal PATH…`, `moose-tool fileinfo PATH…`,
//! `moose-tool info [-H HOST] [-P PORT]`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use moose_client::tool::{run, Command};

/// Goals and chunk information of files on a MooseFS-style mount.
#[derive(Debug, Parser)]
#[command(name = "moose-tool", version = moose_proto::version_line())]
struct Args {
    /// Print the answers as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Sets the goal (number of copies) of files.
    Setgoal {
        /// Also every file and folder below.
        #[arg(short = 'r')]
        recursive: bool,
        /// Number of copies.
        goal: u8,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Shows the goal of files.
    Getgoal {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Shows the chunks of files and where their copies are.
    Fileinfo {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Shows the cluster's state as the master sees it (like mfscli -SIN -SCS).
    Info {
        /// Master host.
        #[arg(short = 'H', long, default_value = "mfsmaster")]
        host: String,
        /// Master client port.
        #[arg(short = 'P', long, default_value_t = moose_proto::ports::MASTER_CLIENT)]
        port: u16,
    },
}

fn main() -> ExitCode {
    let a = Args::parse();
    let (cmd, paths) = match a.cmd {
        Cmd::Setgoal {
            recursive,
            goal,
            paths,
        } => (Command::SetGoal { goal, recursive }, paths),
        Cmd::Getgoal { paths } => (Command::GetGoal, paths),
        Cmd::Fileinfo { paths } => (Command::FileInfo, paths),
        Cmd::Info { host, port } => return moose_client::tool::info(&host, port, a.json),
    };
    run(cmd, &paths, a.json)
}
