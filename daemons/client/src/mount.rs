//! `moose-mount`: register with the master, mount, serve until unmounted. Without `-f` the
//! program starts itself again as a detached child and returns once the mount is live.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fuser::{MountOption, SessionACL, SessionUnmounter};
use moose_common::daemon::{is_ready_child, spawn_and_wait_ready, ReadyPipe, SpawnFailure};

use crate::csio::CsPool;
use crate::fs::{FsConfig, MooseFs};
use crate::master::{MasterClient, SessionParams};
use crate::meta::MetaFs;
use crate::mountinfo::{normalize_subdir, Source, SUBTYPE};
use crate::options::{KernelFlag, MountOptions};
use crate::reader::Reader;
use crate::writer::Writer;

const NAME: &str = "moose-mount";
/// Log file of a mount in the background (used when it can be written).
const LOG_FILE: &str = "/var/log/moose-mount.log";
/// Threads reading requests from the kernel (the work itself runs on the tokio runtime).
const FUSE_THREADS: usize = 4;

/// The command line, parsed.
#[derive(Debug, Clone)]
pub struct MountArgs {
    pub mountpoint: PathBuf,
    pub host: String,
    pub port: u16,
    pub subdir: String,
    pub options: Vec<String>,
    pub foreground: bool,
    /// Mount the meta file system (the trash), as stock's `mfsmount -m`.
    pub meta: bool,
}

struct Prepared {
    mountpoint: PathBuf,
    source: Source,
    opts: MountOptions,
}

fn prepare(args: &MountArgs) -> anyhow::Result<Prepared> {
    let mut opts = MountOptions::parse(&args.options)?;
    opts.meta |= args.meta;
    // The master knows the meta file system as the folder ".".
    let subdir = if opts.meta {
        ".".to_string()
    } else {
        normalize_subdir(&args.subdir).map_err(anyhow::Error::msg)?
    };
    if args.host.is_empty() {
        bail!("the master host (-H) is empty");
    }
    let mountpoint = std::fs::canonicalize(&args.mountpoint)
        .with_context(|| format!("mount point {}", args.mountpoint.display()))?;
    let meta = std::fs::metadata(&mountpoint)
        .with_context(|| format!("mount point {}", mountpoint.display()))?;
    if !meta.is_dir() {
        bail!("mount point {} is not a directory", mountpoint.display());
    }
    Ok(Prepared {
        mountpoint,
        source: Source {
            host: args.host.clone(),
            port: args.port,
            subdir,
        },
        opts,
    })
}

/// Runs `moose-mount`; returns the exit code.
pub fn run(args: MountArgs) -> ExitCode {
    let prepared = match prepare(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{NAME}: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if !args.foreground && !is_ready_child() {
        return start_in_background(&prepared);
    }
    let pipe = ReadyPipe::from_env();
    if std::env::var_os("RUST_LOG").is_none() {
        // fuser warns that its own unmount failed after every external unmount (the mount
        // is already gone by then): keep that line out of the log.
        std::env::set_var("RUST_LOG", "info,fuser::session=error");
    }
    let log_file = if args.foreground {
        None
    } else {
        writable_log_file()
    };
    // Every mount of the host writes the same log: each line says which mount wrote it, by
    // the name it was given (what the console's inventory and the admin's fstab say; a
    // symlink is not resolved), cleaned of a trailing slash; a relative one in full.
    let named = if args.mountpoint.is_absolute() {
        &args.mountpoint
    } else {
        &prepared.mountpoint
    };
    let tag = named
        .components()
        .collect::<PathBuf>()
        .display()
        .to_string();
    if let Err(e) =
        moose_common::logging::init_tagged(log_file.as_deref(), args.foreground, Some(&tag))
    {
        eprintln!("{NAME}: {e}");
    }
    match serve(&prepared, &pipe, args.foreground) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}");
            if args.foreground {
                eprintln!("{NAME}: {msg}");
            } else {
                tracing::error!("{msg}");
            }
            pipe.error(&msg);
            ExitCode::FAILURE
        }
    }
}

fn writable_log_file() -> Option<PathBuf> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(LOG_FILE)
        .ok()
        .map(|_| PathBuf::from(LOG_FILE))
}

/// Starts the mount as a detached child and waits until it is live.
fn start_in_background(p: &Prepared) -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match spawn_and_wait_ready(&args) {
        Ok(pid) => {
            println!(
                "{NAME}: {} mounted on {} (pid {pid})",
                p.source,
                p.mountpoint.display()
            );
            ExitCode::SUCCESS
        }
        Err(f) => {
            let msg = match f {
                SpawnFailure::Setup(msg) | SpawnFailure::Failed { msg, .. } => msg,
                SpawnFailure::Exited { pid } => format!(
                    "the mount process (pid {pid}) exited during start-up; see {LOG_FILE} or run with -f"
                ),
                SpawnFailure::NotReady {
                    pid,
                    waited,
                    last_wait,
                } => {
                    // It would mount later, unexpectedly: stop it (a mount it made by now
                    // is unmounted by its SIGTERM handler).
                    // SAFETY: plain kill(2) on our own child.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                    format!(
                        "not mounted after {} s (last step: {}); gave up",
                        waited.as_secs(),
                        if last_wait.is_empty() { "starting" } else { &last_wait }
                    )
                }
            };
            eprintln!("{NAME}: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Worker threads of the mount's runtime: half the CPUs. The FUSE threads take the kernel's
/// requests and send most of them themselves, and the kernel copies every request and answer:
/// they need the other half. On 2 CPUs one worker made 6 fewer thread switches per small
/// file written at goal 2 than two, and `tar -x` + `cp -a` + `rm -rf` 0.86 of the time.
fn runtime_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

fn serve(p: &Prepared, pipe: &ReadyPipe, foreground: bool) -> anyhow::Result<()> {
    if !foreground {
        // Do not keep the folder we were started from busy.
        std::env::set_current_dir("/").context("cannot change to /")?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(runtime_workers())
        .enable_all()
        .thread_name(NAME)
        .build()
        .context("cannot start the runtime")?;
    let params = SessionParams {
        host: p.source.host.clone(),
        port: p.source.port,
        subdir: p.source.subdir.clone(),
        mount_point: p.mountpoint.display().to_string(),
        password: p.opts.password.clone(),
        tool: false,
    };
    pipe.progress(&format!(
        "connecting to master {}:{}",
        p.source.host, p.source.port
    ));
    let (master, reply) = rt.block_on(MasterClient::connect(params, true))?;
    tracing::info!(
        "master {}:{} accepted session {} (cluster {:016X}, root inode {}{}); parameters: {}",
        p.source.host,
        p.source.port,
        reply.session_id,
        reply.cluster_id,
        reply.root_inode,
        if reply.read_only { ", read-only" } else { "" },
        reply.params
    );
    let read_only = p.opts.read_only || reply.read_only;
    let cfg = fuse_config(&p.source, &p.opts, read_only);
    let cs = Arc::new(CsPool::default());
    let reader = Arc::new(Reader::new(
        master.clone(),
        cs.clone(),
        p.opts.attr_cache,
        p.opts.io_retries,
    ));
    let result = if p.opts.meta {
        let fs = MetaFs::new(
            master,
            reader,
            p.opts.flat_trash,
            p.opts.entry_cache,
            rt.handle().clone(),
        );
        serve_session(fs, &rt, p, pipe, &cfg, |_| {})
    } else {
        let fs = {
            let _guard = rt.enter();
            let writer = Writer::new(
                master.clone(),
                cs,
                reader.clone(),
                p.opts.write_cache_bytes,
                p.opts.io_retries,
            );
            let config = FsConfig {
                attr_ttl: p.opts.attr_cache,
                entry_ttl: p.opts.entry_cache,
                neg_entry_ttl: p.opts.neg_entry_cache,
                answer_ahead: !p.opts.changes_wait(),
            };
            MooseFs::new(master, reader, writer, &config, rt.handle().clone())
        };
        let pages = fs.page_dropper();
        serve_session(fs, &rt, p, pipe, &cfg, |s| pages.start(s.notifier()))
    };
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

/// Mounts `fs` and serves it until it is unmounted; `started` sees the session first.
fn serve_session<F: fuser::Filesystem>(
    fs: F,
    rt: &tokio::runtime::Runtime,
    p: &Prepared,
    pipe: &ReadyPipe,
    cfg: &fuser::Config,
    started: impl FnOnce(&fuser::Session<F>),
) -> anyhow::Result<()> {
    pipe.progress(&format!("mounting on {}", p.mountpoint.display()));
    let mut session = fuser::Session::new(fs, &p.mountpoint, cfg)
        .with_context(|| format!("cannot mount on {}", p.mountpoint.display()))?;
    started(&session);
    rt.spawn(unmount_on_signal(
        p.mountpoint.clone(),
        session.unmount_callable(),
    ));
    tracing::info!("{} mounted on {}", p.source, p.mountpoint.display());
    pipe.ready();
    let result = session.run();
    result.with_context(|| format!("serving {} failed", p.mountpoint.display()))?;
    tracing::info!("{} unmounted", p.mountpoint.display());
    Ok(())
}

/// The fuser configuration: name, type, permissions and who may use the mount.
fn fuse_config(source: &Source, opts: &MountOptions, read_only: bool) -> fuser::Config {
    let root = nix::unistd::geteuid().is_root();
    let acl = if opts.allow_other || root {
        SessionACL::All
    } else if opts.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    let auto_unmount = acl != SessionACL::Owner && fusermount3_available();
    if opts.auto_unmount && !auto_unmount {
        tracing::warn!("auto_unmount needs fusermount3 (package fuse3) and allow_other or root");
    }
    // Through fusermount3 the name travels in a comma-separated option list.
    let through_fusermount = auto_unmount || !root;
    let fsname = if through_fusermount {
        escape_option(&source.to_string())
    } else {
        source.to_string()
    };
    let mut mo = vec![MountOption::FSName(fsname), MountOption::DefaultPermissions];
    if auto_unmount {
        mo.push(MountOption::Subtype(SUBTYPE.to_string()));
        mo.push(MountOption::AutoUnmount);
    } else {
        // The direct mount(2) path passes only kernel options on: the kernel takes the
        // subtype there and shows the type as fuse.moosefs.
        mo.push(MountOption::CUSTOM(format!("subtype={SUBTYPE}")));
    }
    if read_only {
        mo.push(MountOption::RO);
    }
    for f in &opts.flags {
        mo.push(match f {
            KernelFlag::Suid => MountOption::Suid,
            KernelFlag::NoSuid => MountOption::NoSuid,
            KernelFlag::Dev => MountOption::Dev,
            KernelFlag::NoDev => MountOption::NoDev,
            KernelFlag::Exec => MountOption::Exec,
            KernelFlag::NoExec => MountOption::NoExec,
            KernelFlag::Atime => MountOption::Atime,
            KernelFlag::NoAtime => MountOption::NoAtime,
            KernelFlag::Sync => MountOption::Sync,
            KernelFlag::Async => MountOption::Async,
            KernelFlag::DirSync => MountOption::DirSync,
        });
    }
    let mut cfg = fuser::Config::default();
    cfg.mount_options = mo;
    cfg.acl = acl;
    cfg.n_threads = Some(FUSE_THREADS);
    cfg
}

/// Backslash-escapes the characters that split or escape a mount option list.
fn escape_option(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == ',' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// True when fuser will find fusermount3 (needed for auto-unmount).
fn fusermount3_available() -> bool {
    if let Some(p) = std::env::var_os("FUSERMOUNT_PATH") {
        return is_executable(Path::new(&p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/bin", "/usr/bin", "/sbin", "/usr/sbin"].map(PathBuf::from));
    dirs.iter().any(|d| is_executable(&d.join("fusermount3")))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Unmounts on SIGTERM, SIGINT or SIGHUP; a busy mount is detached and served until its last
/// user is gone.
async fn unmount_on_signal(mountpoint: PathBuf, mut unmounter: SessionUnmounter) {
    use tokio::signal::unix::{signal, SignalKind};
    let (term, int, hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            tracing::error!("cannot watch signals: {e}");
            return;
        }
    };
    let (mut term, mut int, mut hup) = (term, int, hup);
    tokio::select! {
        _ = term.recv() => tracing::info!("terminate signal received: unmounting"),
        _ = int.recv() => tracing::info!("interrupt signal received: unmounting"),
        _ = hup.recv() => tracing::info!("hangup signal received: unmounting"),
    }
    let done = tokio::task::spawn_blocking(move || {
        // Detached first: a plain unmount (fusermount3's, behind auto_unmount) looks at the
        // mount point, which asks this mount for its attributes, which waits for the master
        // while it is away; a detach does not look inside. The session ends once the last
        // user is gone.
        detach(&mountpoint);
        if let Err(e) = unmounter.unmount() {
            tracing::warn!("unmounting {} failed: {e}", mountpoint.display());
        }
    })
    .await;
    if let Err(e) = done {
        tracing::error!("unmount task failed: {e}");
    }
}

/// Detaches the mount at `mountpoint` (a lazy unmount): `umount2` as root, else
/// `fusermount3 -u -z`.
fn detach(mountpoint: &Path) {
    use nix::mount::{umount2, MntFlags};
    let why = match umount2(mountpoint, MntFlags::MNT_DETACH) {
        Ok(()) => return,
        Err(nix::errno::Errno::EPERM) => match std::process::Command::new("fusermount3")
            .args(["-u", "-z", "-q", "--"])
            .arg(mountpoint)
            .status()
        {
            Ok(st) if st.success() => return,
            Ok(st) => format!("fusermount3 -u -z: {st}"),
            Err(e) => format!("cannot run fusermount3: {e}"),
        },
        Err(e) => e.to_string(),
    };
    tracing::warn!("detaching {} failed: {why}", mountpoint.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_escaping() {
        assert_eq!(escape_option("h:9421:/a,b\\c"), "h:9421:/a\\,b\\\\c");
        assert_eq!(escape_option("h:9421:/"), "h:9421:/");
    }

    #[test]
    fn config_has_name_type_and_permissions() {
        let source = Source {
            host: "mfsmaster".into(),
            port: 9421,
            subdir: "/".into(),
        };
        let cfg = fuse_config(&source, &MountOptions::default(), true);
        assert!(cfg.mount_options.contains(&MountOption::DefaultPermissions));
        assert!(cfg.mount_options.contains(&MountOption::RO));
        assert!(cfg
            .mount_options
            .iter()
            .any(|o| matches!(o, MountOption::FSName(n) if n.starts_with("mfsmaster:9421:"))));
        assert!(cfg.mount_options.iter().any(|o| matches!(
            o,
            MountOption::Subtype(s) if s == SUBTYPE
        ) || matches!(o, MountOption::CUSTOM(s) if s == "subtype=moosefs")));
        assert_eq!(cfg.n_threads, Some(FUSE_THREADS));
    }
}
