//! `moose-tool setgoal [-r] N PATH…`, `moose-tool getgoal PATH…`, `moose-tool fileinfo PATH…`,
//! `moose-tool settrashtime [-r] SECONDS PATH…`, `moose-tool gettrashtime PATH…`,
//! `moose-tool undelete PATH_IN_META_MOUNT…`, `moose-tool info [-H HOST] [-P PORT]`,
//! `moose-tool dirinfo PATH…`, `moose-tool makesnapshot [-o] SRC… DST`,
//! `moose-tool setquota [-p GRACE] [-i|-I INODES] [-l|-L LENGTH] [-s|-S SIZE] [-r|-R REALSIZE]
//! DIR…`, `getquota|delquota|repquota DIR…`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use moose_client::folder_tools;
use moose_client::quota_tools::{self, QuotaCommand};
use moose_client::tool::{run, Command};
use moose_proto::msg::{Limits, QuotaLimits};

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
    /// Sets the trash time (seconds a deleted file is kept; 0 = none) of files and folders.
    Settrashtime {
        /// Also every file and folder below.
        #[arg(short = 'r')]
        recursive: bool,
        /// Seconds.
        seconds: u32,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Shows the trash time of files and folders.
    Gettrashtime {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Puts files of a meta mount's trash (moose-mount -m) back at their paths.
    Undelete {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Shows files, folders, chunks, length, size and real size of trees (from the master's
    /// counters, without walking them).
    Dirinfo {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Makes lazy snapshots of files or trees (chunks are shared until written).
    Makesnapshot {
        /// Replace what already has the destination's name.
        #[arg(short = 'o')]
        overwrite: bool,
        /// Sources, then the destination (an existing folder, or a new name for one source).
        #[arg(required = true, num_args = 2..)]
        paths: Vec<PathBuf>,
    },
    /// Sets the quota of folders (lower case soft limits, upper case hard ones); replaces
    /// the limits set before.
    Setquota {
        /// Grace period of the soft limits (default: the master's QUOTA_DEFAULT_GRACE_PERIOD).
        #[arg(short = 'p', value_parser = quota_tools::parse_grace)]
        grace: Option<u64>,
        /// Soft limit on inodes.
        #[arg(short = 'i', value_parser = quota_tools::parse_count)]
        soft_inodes: Option<u64>,
        /// Hard limit on inodes.
        #[arg(short = 'I', value_parser = quota_tools::parse_count)]
        hard_inodes: Option<u64>,
        /// Soft limit on the sum of file lengths.
        #[arg(short = 'l', value_parser = quota_tools::parse_size)]
        soft_length: Option<u64>,
        /// Hard limit on the sum of file lengths.
        #[arg(short = 'L', value_parser = quota_tools::parse_size)]
        hard_length: Option<u64>,
        /// Soft limit on size (chunk data).
        #[arg(short = 's', value_parser = quota_tools::parse_size)]
        soft_size: Option<u64>,
        /// Hard limit on size (chunk data).
        #[arg(short = 'S', value_parser = quota_tools::parse_size)]
        hard_size: Option<u64>,
        /// Soft limit on real size (size times goal).
        #[arg(short = 'r', value_parser = quota_tools::parse_size)]
        soft_realsize: Option<u64>,
        /// Hard limit on real size (size times goal).
        #[arg(short = 'R', value_parser = quota_tools::parse_size)]
        hard_realsize: Option<u64>,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Shows the quota of folders, with their usage.
    Getquota {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Removes the quota of folders.
    Delquota {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Shows every quota in the trees of folders.
    Repquota {
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
        Cmd::Settrashtime {
            recursive,
            seconds,
            paths,
        } => (Command::SetTrashTime { seconds, recursive }, paths),
        Cmd::Gettrashtime { paths } => (Command::GetTrashTime, paths),
        Cmd::Undelete { paths } => (Command::Undelete, paths),
        Cmd::Info { host, port } => return moose_client::tool::info(&host, port, a.json),
        Cmd::Dirinfo { paths } => return folder_tools::dirinfo(&paths, a.json),
        Cmd::Setquota {
            grace,
            soft_inodes,
            hard_inodes,
            soft_length,
            hard_length,
            soft_size,
            hard_size,
            soft_realsize,
            hard_realsize,
            paths,
        } => {
            let q = QuotaLimits {
                soft: Limits {
                    inodes: soft_inodes,
                    length: soft_length,
                    size: soft_size,
                    realsize: soft_realsize,
                },
                hard: Limits {
                    inodes: hard_inodes,
                    length: hard_length,
                    size: hard_size,
                    realsize: hard_realsize,
                },
                grace,
            };
            if q.soft == Limits::default() && q.hard == Limits::default() {
                eprintln!("moose-tool setquota: give at least one limit (-i -I -l -L -s -S -r -R)");
                return ExitCode::FAILURE;
            }
            return quota_tools::run(QuotaCommand::Set(q), &paths, a.json);
        }
        Cmd::Getquota { paths } => return quota_tools::run(QuotaCommand::Get, &paths, a.json),
        Cmd::Delquota { paths } => return quota_tools::run(QuotaCommand::Del, &paths, a.json),
        Cmd::Repquota { paths } => return quota_tools::run(QuotaCommand::Rep, &paths, a.json),
        Cmd::Makesnapshot { overwrite, paths } => {
            let Some((dst, sources)) = paths.split_last() else {
                eprintln!("moose-tool makesnapshot: give SRC... DST");
                return ExitCode::FAILURE;
            };
            return folder_tools::makesnapshot(sources, dst, overwrite, a.json);
        }
    };
    run(cmd, &paths, a.json)
}
