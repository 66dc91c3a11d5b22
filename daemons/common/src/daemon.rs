//! Daemon verbs and the start-up sequence every daemon shares.
//!
//! `NAME [-c CFG] [-f] start|stop|restart|reload|status|test|kill`. `start` without `-f`
//! re-executes the program in the foreground mode as a new session, with a pipe on which the
//! child reports progress and finally "ready" (or the reason it failed); the parent prints
//! that and exits 0 only once the daemon is ready.

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use moose_formats::{CommonKeys, Config, KeySet};

use crate::{lockfile, logging, user};

/// Keys every daemon understands.
pub const COMMON_KEYS: &[&str] = CommonKeys::NAMES;

/// Environment variable naming the readiness pipe's file descriptor in the child.
const READY_FD_ENV: &str = "MOOSE_READY_FD";
/// Seconds `start` waits for the daemon to become ready (`MOOSE_START_TIMEOUT` overrides).
const DEFAULT_START_TIMEOUT: u64 = 30;

/// What distinguishes one daemon from another.
pub struct DaemonSpec {
    /// Program name, e.g. `moose-master`; also names the lockfile and the log file.
    pub name: &'static str,
    /// Config file used without `-c`.
    pub default_config: &'static str,
    /// Keys this daemon reads besides [`COMMON_KEYS`].
    pub keys: &'static [&'static str],
    /// Default DATA_PATH.
    pub default_data_path: &'static str,
    /// Threads that run the daemon's tasks (blocking work has threads of its own).
    pub workers: Workers,
}

/// How many threads run a daemon's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// One per CPU: tasks that work side by side (a chunkserver's reads and writes).
    PerCpu,
    /// One: every task takes the same lock (the master's metadata), so that a second thread
    /// would only add hand-offs between threads.
    One,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Verb {
    Start,
    Stop,
    Restart,
    Reload,
    Status,
    Test,
    Kill,
    /// Master only: rebuild metadata from a folder of metalogger files, then exit.
    Restore,
}

#[derive(Debug, Clone, clap::Parser)]
pub struct DaemonArgs {
    /// Config file (MooseFS syntax: KEY = VALUE).
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// Stay in the foreground and log to stderr too.
    #[arg(short = 'f', long = "foreground")]
    pub foreground: bool,
    /// What to do.
    #[arg(value_enum, default_value = "start")]
    pub verb: Verb,
    /// Arguments of the verb (restore: the folder to restore from).
    pub args: Vec<PathBuf>,
}

/// Handed to the daemon's body: its config and the hooks to the outside world.
pub struct DaemonContext {
    pub config: Config,
    pub data_path: PathBuf,
    pub run_as: user::RunAs,
    pub foreground: bool,
    pub verb: Verb,
    pub args: Vec<PathBuf>,
    ready_pipe: ReadyPipe,
    shutdown: watch::Receiver<bool>,
    reload: watch::Receiver<u64>,
}

impl DaemonContext {
    /// Tells `start` what the daemon is waiting for (shown if it times out).
    pub fn progress(&self, msg: &str) {
        self.ready_pipe.progress(msg);
    }

    /// Tells `start` the daemon is ready; `start` then exits 0.
    pub fn ready(&self) {
        self.ready_pipe.ready();
    }

    /// Resolves when SIGTERM or SIGINT arrives.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// Changes (the value counts up) on every SIGHUP / `reload`.
    pub fn reload_signal(&self) -> watch::Receiver<u64> {
        self.reload.clone()
    }
}

/// The write end of the readiness pipe, shared so that a failure after the body returns can
/// still be reported to `start`. Programs that start themselves with [`spawn_and_wait_ready`]
/// get theirs with [`ReadyPipe::from_env`].
#[derive(Clone, Default)]
pub struct ReadyPipe(std::sync::Arc<parking_lot::Mutex<Option<std::fs::File>>>);

/// True in a process started by [`spawn_and_wait_ready`] (or by `start` without `-f`).
pub fn is_ready_child() -> bool {
    std::env::var_os(READY_FD_ENV).is_some()
}

impl ReadyPipe {
    /// Takes the pipe the parent passed (none outside a started child: then every call is a
    /// no-op) and removes its variable from the environment.
    pub fn from_env() -> ReadyPipe {
        let pipe = ReadyPipe::default();
        if let Some(fd) = std::env::var(READY_FD_ENV)
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
        {
            // SAFETY: the parent passed us this descriptor and nothing else owns it.
            let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            *pipe.0.lock() = Some(file);
        }
        std::env::remove_var(READY_FD_ENV);
        pipe
    }

    /// Tells the parent what the child is waiting for (shown if it times out).
    pub fn progress(&self, msg: &str) {
        self.say(&format!("wait {msg}"), false);
    }

    /// Tells the parent the child is ready; the parent then exits 0.
    pub fn ready(&self) {
        self.say("ready", true);
    }

    /// Tells the parent the child failed and why; the parent prints it and exits non-zero.
    pub fn error(&self, msg: &str) {
        self.say(&format!("error {msg}"), true);
    }

    fn say(&self, line: &str, last: bool) {
        let mut guard = self.0.lock();
        if let Some(p) = guard.as_mut() {
            let _ = writeln!(p, "{}", line.replace('\n', " "));
        }
        if last {
            *guard = None;
        }
    }
}

fn fail(name: &str, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("{name}: {msg}");
    ExitCode::FAILURE
}

/// Runs a daemon: parses the command line, carries out the verb, and for `start` runs `body`
/// on a tokio runtime after the shared start-up sequence.
pub fn main<F, Fut>(spec: &DaemonSpec, body: F) -> ExitCode
where
    F: FnOnce(DaemonContext) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    use clap::{CommandFactory, FromArgMatches};
    // `-V/--version` prints `NAME VERSION (protocol N)` (moosectl deploy runs every pushed
    // binary so; moosectl doctor compares the answers).
    let parsed = DaemonArgs::command()
        .name(spec.name)
        .version(moose_proto::version_line())
        .try_get_matches()
        .and_then(|m| DaemonArgs::from_arg_matches(&m));
    let args = match parsed {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    run_verb(spec, args, body)
}

fn load_config(spec: &DaemonSpec, args: &DaemonArgs) -> Result<Config, String> {
    let mut keys: Vec<&str> = COMMON_KEYS.to_vec();
    keys.extend_from_slice(spec.keys);
    let load = |p: &Path| -> Result<Config, String> {
        let mut cfg = Config::load(p, &keys).map_err(|e| e.to_string())?;
        cfg.check_unknown_keys(&moose_formats::stock_keys::for_daemon(spec.name))
            .map_err(|e| e.to_string())?;
        Ok(cfg)
    };
    match &args.config {
        Some(p) => load(p),
        None => {
            let p = Path::new(spec.default_config);
            if p.exists() {
                load(p)
            } else {
                eprintln!(
                    "{}: no config file {} (use -c CFG); using defaults",
                    spec.name, spec.default_config
                );
                Ok(Config::empty(p))
            }
        }
    }
}

fn lock_path(spec: &DaemonSpec, data_path: &Path) -> PathBuf {
    data_path.join(format!(".{}.lock", spec.name))
}

fn run_verb<F, Fut>(spec: &DaemonSpec, args: DaemonArgs, body: F) -> ExitCode
where
    F: FnOnce(DaemonContext) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let name = spec.name;
    let config = match load_config(spec, &args) {
        Ok(c) => c,
        Err(e) => return fail(name, e),
    };
    let common = match CommonKeys::from_config(&config) {
        Ok(c) => c,
        Err(e) => return fail(name, e),
    };
    let data_path = config.resolve(
        common
            .data_path
            .as_deref()
            .unwrap_or(Path::new(spec.default_data_path)),
    );
    let lock = lock_path(spec, &data_path);
    let running = lockfile::holder(&lock);
    match args.verb {
        Verb::Status | Verb::Test => match running {
            Some(pid) => {
                println!("{name} pid: {pid}");
                ExitCode::SUCCESS
            }
            None => {
                println!("{name} is not running");
                ExitCode::FAILURE
            }
        },
        Verb::Reload => match running {
            Some(pid) => match signal(pid, libc::SIGHUP) {
                Ok(()) => {
                    println!("{name} (pid {pid}) told to reload its configuration");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(name, format!("cannot signal pid {pid}: {e}")),
            },
            None => fail(name, "is not running; nothing to reload"),
        },
        Verb::Stop | Verb::Kill => {
            let sig = if args.verb == Verb::Stop {
                libc::SIGTERM
            } else {
                libc::SIGKILL
            };
            match running {
                None => {
                    println!("{name} is not running");
                    ExitCode::SUCCESS
                }
                Some(pid) => match stop_and_wait(pid, sig, &lock) {
                    Ok(()) => {
                        println!("{name} (pid {pid}) has stopped");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(name, e),
                },
            }
        }
        Verb::Restart => {
            if let Some(pid) = running {
                if let Err(e) = stop_and_wait(pid, libc::SIGTERM, &lock) {
                    return fail(name, e);
                }
                println!("{name} (pid {pid}) has stopped");
            }
            start(spec, args, config, &common, data_path, body)
        }
        Verb::Start | Verb::Restore => {
            if let Some(pid) = running {
                return fail(
                    name,
                    format!(
                        "is already running (pid {pid}, lockfile {}); stop it first with: {name}{} stop",
                        lock.display(),
                        args.config
                            .as_ref()
                            .map(|c| format!(" -c {}", c.display()))
                            .unwrap_or_default()
                    ),
                );
            }
            start(spec, args, config, &common, data_path, body)
        }
    }
}

fn signal(pid: i32, sig: i32) -> std::io::Result<()> {
    // SAFETY: plain kill(2).
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    let rc = unsafe { libc::kill(pid, 0) };
    let exists = rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !has_ended(pid)
}

/// A zombie main thread with no other thread left has ended: it only waits for a parent (or
/// a missing init) to reap it. While another thread is still exiting, the process keeps its
/// files, and so its locks (a chunkserver's disk locks among them).
fn has_ended(pid: i32) -> bool {
    is_zombie(pid)
        && std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |tasks| tasks.count()) <= 1
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| process_state(&stat))
        == Some('Z')
}

/// The state letter of a `/proc/PID/stat` line (after the parenthesised command name, which
/// may itself hold spaces and parentheses).
fn process_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn stop_and_wait(pid: i32, sig: i32, lock: &Path) -> Result<(), String> {
    signal(pid, sig).map_err(|e| format!("cannot signal pid {pid}: {e}"))?;
    let timeout = Duration::from_secs(
        std::env::var("MOOSE_STOP_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300),
    );
    let start = Instant::now();
    while lockfile::holder(lock) == Some(pid) || process_alive(pid) {
        if start.elapsed() > timeout {
            return Err(format!(
                "pid {pid} is still running after {} s; try again, or use 'kill' to end it at once",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn start<F, Fut>(
    spec: &DaemonSpec,
    args: DaemonArgs,
    config: Config,
    common: &CommonKeys,
    data_path: PathBuf,
    body: F,
) -> ExitCode
where
    F: FnOnce(DaemonContext) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let name = spec.name;
    let is_child = std::env::var(READY_FD_ENV).is_ok();
    if !args.foreground && !is_child && args.verb != Verb::Restore {
        return spawn_and_wait(spec, &args);
    }
    let ready_pipe = ReadyPipe::from_env();
    let report_failure = |pipe: &ReadyPipe, msg: &str| {
        pipe.error(msg);
        fail(name, msg)
    };
    for w in config.warnings() {
        eprintln!("{name}: warning: {w}");
    }

    // SAFETY: umask(2) cannot fail.
    unsafe { libc::umask(common.file_umask().0 as libc::mode_t) };

    let run_as = if nix::unistd::Uid::current().is_root() {
        match user::resolve(&common.working_user(), &common.working_group()) {
            Ok(r) => r,
            Err(e) => return report_failure(&ready_pipe, &e),
        }
    } else {
        current_user()
    };
    if let Err(e) = prepare_data_path(&data_path, &run_as) {
        return report_failure(&ready_pipe, &e);
    }
    match user::drop_privileges(&run_as) {
        Ok(Some(warning)) => eprintln!("{name}: warning: {warning}"),
        Ok(None) => {}
        Err(e) => return report_failure(&ready_pipe, &e),
    }
    if let Err(e) = user::check_writable(&data_path, "DATA_PATH", &run_as) {
        return report_failure(&ready_pipe, &e);
    }
    let _ = std::env::set_current_dir(&data_path);
    let lock = match lockfile::acquire(&lock_path(spec, &data_path), name) {
        Ok(l) => l,
        Err(e) => return report_failure(&ready_pipe, &e.to_string()),
    };
    let log_path = data_path.join(format!("{name}.log"));
    if let Err(e) = logging::init(Some(&log_path), args.foreground) {
        return report_failure(&ready_pipe, &e);
    }
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    tracing::info!(
        "{name} {} starting: config {}, DATA_PATH {}, user {}:{}, lockfile {}",
        env!("CARGO_PKG_VERSION"),
        config.path().display(),
        data_path.display(),
        run_as.user,
        run_as.group,
        lock.path().display()
    );

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if spec.workers == Workers::One {
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().thread_name(name).build() {
        Ok(r) => r,
        Err(e) => return report_failure(&ready_pipe, &format!("cannot start runtime: {e}")),
    };
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (reload_tx, reload) = watch::channel(0u64);
    let pipe = ready_pipe.clone();
    let result = runtime.block_on(async move {
        spawn_signal_watchers(shutdown_tx, reload_tx)?;
        let ctx = DaemonContext {
            config,
            data_path,
            run_as,
            foreground: args.foreground,
            verb: args.verb,
            args: args.args,
            ready_pipe,
            shutdown,
            reload,
        };
        body(ctx).await
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    // The lock goes before the waiting `start` hears of a failure, so it can be retried at once.
    drop(lock);
    match result {
        Ok(()) => {
            tracing::info!("{name} exited cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{name} failed: {e:#}");
            report_failure(&pipe, &format!("{e:#}"))
        }
    }
}

fn current_user() -> user::RunAs {
    let uid = nix::unistd::Uid::current();
    let gid = nix::unistd::Gid::current();
    let uname = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let gname = nix::unistd::Group::from_gid(gid)
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| gid.to_string());
    user::RunAs {
        user: uname,
        group: gname,
        uid: uid.as_raw(),
        gid: gid.as_raw(),
    }
}

/// Creates a missing DATA_PATH (owned by the run-as user) when we are allowed to.
fn prepare_data_path(data_path: &Path, run_as: &user::RunAs) -> Result<(), String> {
    if data_path.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(data_path).map_err(|e| {
        format!(
            "DATA_PATH {} does not exist and cannot be created: {e}; create it with: install -d -o {} -g {} {}",
            data_path.display(),
            run_as.user,
            run_as.group,
            data_path.display()
        )
    })?;
    if nix::unistd::Uid::current().is_root() {
        nix::unistd::chown(
            data_path,
            Some(nix::unistd::Uid::from_raw(run_as.uid)),
            Some(nix::unistd::Gid::from_raw(run_as.gid)),
        )
        .map_err(|e| format!("cannot chown {}: {e}", data_path.display()))?;
    }
    Ok(())
}

fn spawn_signal_watchers(
    shutdown_tx: watch::Sender<bool>,
    reload_tx: watch::Sender<u64>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("terminate signal received"),
            _ = int.recv() => tracing::info!("interrupt signal received"),
        }
        let _ = shutdown_tx.send(true);
    });
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("reload signal received");
            reload_tx.send_modify(|n| *n += 1);
        }
    });
    Ok(())
}

/// `start` without `-f`: runs ourselves in the foreground mode as a detached child and waits
/// until it says it is ready.
fn spawn_and_wait(spec: &DaemonSpec, args: &DaemonArgs) -> ExitCode {
    let name = spec.name;
    let mut child_args: Vec<std::ffi::OsString> = Vec::new();
    if let Some(c) = &args.config {
        let abs = std::fs::canonicalize(c).unwrap_or_else(|_| c.clone());
        child_args.push("-c".into());
        child_args.push(abs.into());
    }
    child_args.push("start".into());
    match spawn_and_wait_ready(&child_args) {
        Ok(pid) => {
            println!("{name} started (pid {pid})");
            ExitCode::SUCCESS
        }
        Err(SpawnFailure::Setup(msg)) | Err(SpawnFailure::Failed { msg, .. }) => fail(name, msg),
        Err(SpawnFailure::Exited { pid }) => fail(
            name,
            format!(
                "exited during start-up (pid {pid}); see the log in its DATA_PATH ({name}.log)"
            ),
        ),
        Err(SpawnFailure::NotReady {
            pid,
            waited,
            last_wait,
        }) => {
            let why = if last_wait.is_empty() {
                String::new()
            } else {
                format!(": {last_wait}")
            };
            fail(
                name,
                format!(
                    "not ready after {} s{why}; it keeps trying in the background (pid {pid}); \
                     stop it with: {name}{} stop",
                    waited.as_secs(),
                    args.config
                        .as_ref()
                        .map(|c| format!(" -c {}", c.display()))
                        .unwrap_or_default()
                ),
            )
        }
    }
}

/// Why [`spawn_and_wait_ready`] did not see its child become ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnFailure {
    /// The child could not be started.
    Setup(String),
    /// The child reported this error.
    Failed { pid: u32, msg: String },
    /// The child exited (or closed the pipe) without saying it was ready.
    Exited { pid: u32 },
    /// The child did not become ready in time; `last_wait` is its last progress message.
    NotReady {
        pid: u32,
        waited: Duration,
        last_wait: String,
    },
}

/// Runs this program again with `args` as a detached child (new session, standard streams on
/// /dev/null, readiness pipe announced in the environment) and waits until the child reports
/// ready through [`ReadyPipe`]; returns its pid. `MOOSE_START_TIMEOUT` (seconds) bounds the wait.
pub fn spawn_and_wait_ready(args: &[std::ffi::OsString]) -> Result<u32, SpawnFailure> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()
        .map_err(|e| SpawnFailure::Setup(format!("cannot find own executable: {e}")))?;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SpawnFailure::Setup(format!(
            "cannot create pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: both descriptors were just created and are owned here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    const CHILD_FD: i32 = 3;
    let write_raw = fds[1];
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args)
        .env(READY_FD_ENV, CHILD_FD.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::dup2(write_raw, CHILD_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| SpawnFailure::Setup(format!("cannot start: {e}")))?;
    drop(write_end);
    let pid = child.id();
    let timeout = Duration::from_secs(
        std::env::var("MOOSE_START_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_START_TIMEOUT),
    );
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let reader = BufReader::new(std::fs::File::from(read_end));
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut last_wait = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if line == "ready" {
                    return Ok(pid);
                } else if let Some(msg) = line.strip_prefix("error ") {
                    // A failed start must leave nothing behind: a `start` right after this
                    // one would otherwise find the lock still held by the exiting child.
                    wait_for_exit(&mut child, Duration::from_secs(10));
                    return Err(SpawnFailure::Failed {
                        pid,
                        msg: msg.to_string(),
                    });
                } else if let Some(msg) = line.strip_prefix("wait ") {
                    last_wait = msg.to_string();
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                wait_for_exit(&mut child, Duration::from_secs(10));
                return Err(SpawnFailure::Exited { pid });
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                return Err(SpawnFailure::NotReady {
                    pid,
                    waited: timeout,
                    last_wait,
                });
            }
        }
    }
}

/// Reaps `child` once it has exited, giving up after `limit`.
fn wait_for_exit(child: &mut std::process::Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_letter_follows_the_command_name() {
        assert_eq!(process_state("42 (moose-master) S 1 42"), Some('S'));
        assert_eq!(process_state("42 (a) (b) Z 1 42"), Some('Z'));
        assert_eq!(process_state("garbage"), None);
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_zombie(pid) {
            assert!(Instant::now() < deadline, "`true` did not end");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            !process_alive(pid),
            "an ended, unreaped child counts as alive"
        );
        child.wait().unwrap();
        assert!(process_alive(std::process::id() as i32));
    }

    extern "C" fn linger(_: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: plain sleep(3) and _exit(2) in the forked child.
        unsafe {
            libc::usleep(500_000);
            libc::_exit(0)
        }
    }

    #[test]
    fn a_process_whose_main_thread_ended_first_lives_until_its_last_thread_ends() {
        // SAFETY: the child only starts a thread and ends its own main thread with raw calls.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above; SYS_exit ends the calling thread only.
            unsafe {
                let mut t: libc::pthread_t = std::mem::zeroed();
                libc::pthread_create(&mut t, std::ptr::null(), linger, std::ptr::null_mut());
                libc::syscall(libc::SYS_exit, 0);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_zombie(pid) {
            assert!(
                Instant::now() < deadline,
                "the child's main thread did not end"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            process_alive(pid),
            "a process whose other thread still runs counts as ended"
        );
        while process_alive(pid) {
            assert!(
                Instant::now() < deadline,
                "the child's last thread did not end"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // SAFETY: reaps the child forked above.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
}
