//! `moose-mount MOUNTPOINT -H HOST [-P PORT] [-S SUBDIR] [-m] [-o OPTS] [-f]`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use moose_client::mount::{run, MountArgs};

/// Mounts a MooseFS-style file system.
#[derive(Debug, Parser)]
#[command(name = "moose-mount", version = moose_proto::version_line())]
struct Args {
    /// Where to mount.
    mountpoint: PathBuf,
    /// Master host.
    #[arg(short = 'H', long = "host")]
    host: String,
    /// Master port for clients.
    #[arg(short = 'P', long = "port", default_value_t = moose_proto::ports::MASTER_CLIENT)]
    port: u16,
    /// Folder of the file system to mount.
    #[arg(short = 'S', long = "subdir", default_value = "/")]
    subdir: String,
    /// Mount options, comma-separated (ro, allow_other, mfsattrcacheto=S, mfsentrycacheto=S,
    /// mfsnegentrycacheto=S, mfswritecachesize=MiB, mfsioretries=N,
    /// mfspassword=TEXT, nosuid, noexec, …).
    #[arg(short = 'o', value_name = "OPTS")]
    options: Vec<String>,
    /// Mount the meta file system (the trash) instead of files, as `mfsmount -m`; the master
    /// admits it by an exports line whose path is `.`.
    #[arg(short = 'm', long = "meta")]
    meta: bool,
    /// Stay in the foreground and log to stderr.
    #[arg(short = 'f', long = "foreground")]
    foreground: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    run(MountArgs {
        mountpoint: a.mountpoint,
        host: a.host,
        port: a.port,
        subdir: a.subdir,
        options: a.options,
        foreground: a.foreground,
        meta: a.meta,
    })
}
