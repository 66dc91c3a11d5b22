//! Hosts: how the console reaches a machine of the cluster.
//!
//! Everything the console does on a machine goes through its [`Machine`] (named so apart from
//! the inventory's `Host`, which describes the machine): running a command, writing, reading
//! and following files, opening a TCP stream to one of its ports.
//! [`Local`] is this machine; an SSH host implements the same trait, so no caller may assume
//! that a host is the machine the console runs on.

pub mod known_hosts;
mod local;
pub mod ssh;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use moose_inventory::Command;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

pub use local::Local;
pub use ssh::{SshHost, SshOptions, SshTarget, UnknownKey};

/// A boxed future, so that [`Machine`] can be used as `dyn Machine`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A byte stream to a port of a host.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// How many lines of each output stream [`Finished`] keeps (the last ones).
pub const KEPT_LINES: usize = 200;

/// One line of a running command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputLine {
    Stdout(String),
    Stderr(String),
}

/// A command that ran to its end.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Finished {
    /// Exit code; `None` when a signal ended the command.
    pub code: Option<i32>,
    /// The last [`KEPT_LINES`] lines of standard output.
    pub stdout: Vec<String>,
    /// The last [`KEPT_LINES`] lines of standard error.
    pub stderr: Vec<String>,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// What the command said last: its last non-empty line of standard error, else of standard
    /// output, else its exit status.
    pub fn message(&self) -> String {
        let last = |v: &[String]| {
            v.iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
        };
        last(&self.stderr)
            .or_else(|| last(&self.stdout))
            .unwrap_or_else(|| match self.code {
                Some(c) => format!("exit status {c}"),
                None => "ended by a signal".to_string(),
            })
    }
}

/// Something new in a followed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    /// Complete lines, oldest first.
    Lines(Vec<String>),
    /// A change worth telling (file missing, replaced, truncated), in words.
    Notice(String),
}

/// What went wrong on a host; every message names the host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{host}: cannot run {program}: {cause}")]
    Spawn {
        host: String,
        program: String,
        cause: std::io::Error,
    },
    #[error("{host}: cannot {what} {}: {cause}", .path.display())]
    File {
        host: String,
        what: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{host}: cannot connect to {address}:{port}: {cause}")]
    Connect {
        host: String,
        address: String,
        port: u16,
        cause: std::io::Error,
    },
    #[error("{host}: owner {owner:?} of {}: {reason}", .path.display())]
    Owner {
        host: String,
        owner: String,
        path: PathBuf,
        reason: String,
    },
    /// An SSH connection problem (the message says what and what to do).
    #[error("{host}: {message}")]
    Ssh { host: String, message: String },
    #[error("{host}: cannot {what}: {reason}")]
    Script {
        host: String,
        what: String,
        reason: String,
    },
    #[error("{host}: {} is missing; run moosectl deploy", .path.display())]
    NotDeployed { host: String, path: PathBuf },
    #[error(
        "{host}: {program} is missing: it must be next to moosectl in {}; build every workspace \
         binary with `{build}`",
        .dir.display()
    )]
    MissingBinary {
        host: String,
        program: String,
        dir: PathBuf,
        build: String,
    },
}

/// A machine of the cluster, as the console reaches it.
pub trait Machine: Send + Sync {
    /// The host's name in the inventory.
    fn name(&self) -> &str;

    /// Where this host's copy of `program` (one of the `moose-*` binaries) is.
    fn binary_path(&self, program: &str) -> PathBuf;

    /// Checks that `program` is there and can be run; the error says how to get it.
    fn check_binary<'a>(&'a self, program: &'a str) -> BoxFuture<'a, Result<PathBuf, HostError>>;

    /// Runs a command to its end (no shell involved: the program gets `args` as they are),
    /// sending each output line to `lines` as it comes when given.
    fn run<'a>(
        &'a self,
        cmd: &'a Command,
        lines: Option<mpsc::Sender<OutputLine>>,
    ) -> BoxFuture<'a, Result<Finished, HostError>>;

    /// Replaces `path` atomically (a temporary file in the same folder, renamed over it) with
    /// `contents`, permissions `mode` and, when given, owner `user:group` (`user:` means the
    /// user's primary group). Missing parent folders are created.
    fn write_file<'a>(
        &'a self,
        path: &'a Path,
        contents: &'a [u8],
        mode: u32,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), HostError>>;

    /// The contents of `path`, or `None` when it does not exist.
    fn read_file<'a>(&'a self, path: &'a Path)
        -> BoxFuture<'a, Result<Option<Vec<u8>>, HostError>>;

    /// Follows `path` like `tail -F`: first about `history` bytes of its end (whole lines),
    /// then every line appended, across truncation and replacement. Returns when `events` is
    /// closed.
    fn follow_file<'a>(
        &'a self,
        path: &'a Path,
        history: u64,
        events: mpsc::Sender<FollowEvent>,
    ) -> BoxFuture<'a, Result<(), HostError>>;

    /// Opens a TCP stream to `port` of this host.
    fn connect(&self, port: u16) -> BoxFuture<'_, Result<Box<dyn Stream>, HostError>>;

    /// Opens a TCP stream from this host to `address:port` (SSH: a direct-tcpip channel, so
    /// the connection starts where the daemons' traffic does), within `timeout`. The error's
    /// cause keeps its kind: refused, timed out, permission denied (a local firewall),
    /// unreachable.
    fn connect_from<'a>(
        &'a self,
        address: &'a str,
        port: u16,
        timeout: std::time::Duration,
    ) -> BoxFuture<'a, Result<Box<dyn Stream>, HostError>>;

    /// Writes `source` to a temporary file beside `target` (a name unique to this host and
    /// console run), synced, with `mode` and `owner`; returns the temporary file. The target
    /// is not touched: [`Machine::commit`] or [`Machine::discard`] follow.
    fn stage<'a>(
        &'a self,
        target: &'a Path,
        source: Source<'a>,
        mode: u32,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<PathBuf, HostError>>;

    /// What deploy checks first: the machine, the login, which of `dirs` can be written
    /// (or created) and the sha256 of each of `files` that exists.
    fn facts<'a>(
        &'a self,
        dirs: &'a [PathBuf],
        files: &'a [PathBuf],
    ) -> BoxFuture<'a, Result<Facts, HostError>> {
        Box::pin(async move {
            let mut args = vec![dirs.len().to_string()];
            args.extend(dirs.iter().map(|d| d.to_string_lossy().into_owned()));
            args.extend(files.iter().map(|f| f.to_string_lossy().into_owned()));
            let f = self.run(&sh(FACTS_SCRIPT, args), None).await?;
            if !f.success() {
                return Err(HostError::Script {
                    host: self.name().to_string(),
                    what: "check the host".to_string(),
                    reason: f.message(),
                });
            }
            Ok(Facts::parse(&f.stdout))
        })
    }

    /// The sha256 of each of `files` (absent when the file does not exist).
    fn hashes<'a>(
        &'a self,
        files: &'a [PathBuf],
    ) -> BoxFuture<'a, Result<std::collections::BTreeMap<PathBuf, String>, HostError>> {
        Box::pin(async move { Ok(self.facts(&[], files).await?.hashes) })
    }

    /// Puts staged files in place: for each `(temp, target)`, the old target is kept as
    /// `DIR/.moosectl-backup/STAMP/NAME` (the last 5 stamps are kept), then the temp is
    /// renamed over it and the folder synced.
    fn commit<'a>(
        &'a self,
        staged: &'a [(PathBuf, PathBuf)],
        stamp: &'a str,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        Box::pin(async move {
            if staged.is_empty() {
                return Ok(());
            }
            let mut args = vec![stamp.to_string()];
            for (t, f) in staged {
                args.push(t.to_string_lossy().into_owned());
                args.push(f.to_string_lossy().into_owned());
            }
            let f = self.run(&sh(COMMIT_SCRIPT, args), None).await?;
            if f.success() {
                Ok(())
            } else {
                Err(HostError::Script {
                    host: self.name().to_string(),
                    what: "put the staged files in place".to_string(),
                    reason: f.message(),
                })
            }
        })
    }

    /// Removes staged temporary files.
    fn discard<'a>(&'a self, temps: &'a [PathBuf]) -> BoxFuture<'a, Result<(), HostError>> {
        Box::pin(async move {
            if temps.is_empty() {
                return Ok(());
            }
            let mut args = vec!["-f".to_string(), "--".to_string()];
            args.extend(temps.iter().map(|t| t.to_string_lossy().into_owned()));
            let cmd = Command {
                program: PathBuf::from("rm"),
                args,
            };
            let f = self.run(&cmd, None).await?;
            if f.success() {
                Ok(())
            } else {
                Err(HostError::Script {
                    host: self.name().to_string(),
                    what: "remove the staged files".to_string(),
                    reason: f.message(),
                })
            }
        })
    }
}

/// What [`Machine::stage`] writes.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    Bytes(&'a [u8]),
    /// A file of this machine (a binary of the build).
    File(&'a Path),
}

/// What [`Machine::facts`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `uname -m`.
    pub arch: String,
    /// The uid commands run as (0 through sudo).
    pub uid: Option<u32>,
    /// Folders asked about that cannot be written or created.
    pub unwritable: Vec<PathBuf>,
    pub hashes: std::collections::BTreeMap<PathBuf, String>,
}

impl Facts {
    fn parse(lines: &[String]) -> Facts {
        let mut f = Facts::default();
        for l in lines {
            if let Some(a) = l.strip_prefix("arch=") {
                f.arch = a.trim().to_string();
            } else if let Some(u) = l.strip_prefix("uid=") {
                f.uid = u.trim().parse().ok();
            } else if let Some(d) = l.strip_prefix("nowrite=") {
                f.unwritable.push(PathBuf::from(d));
            } else if let Some(rest) = l.strip_prefix("sha=") {
                if let Some((h, p)) = rest.split_once(' ') {
                    f.hashes.insert(PathBuf::from(p), h.to_string());
                }
            }
        }
        f
    }
}

/// `sh -c SCRIPT moosectl ARGS...`.
fn sh(script: &str, args: Vec<String>) -> Command {
    let mut a = vec!["-c".to_string(), script.to_string(), "moosectl".to_string()];
    a.extend(args);
    Command {
        program: PathBuf::from("sh"),
        args: a,
    }
}

/// `$1` = how many folders follow, then the folders, then files to hash.
const FACTS_SCRIPT: &str = "echo \"arch=$(uname -m)\"; echo \"uid=$(id -u)\"; n=$1; shift; \
    while [ \"$n\" -gt 0 ]; do p=$1; while [ ! -e \"$p\" ]; do p=$(dirname -- \"$p\"); done; \
    if [ -w \"$p\" ]; then echo \"write=$1\"; else echo \"nowrite=$1\"; fi; n=$((n-1)); shift; \
    done; for f; do if [ -f \"$f\" ]; then h=$(sha256sum < \"$f\") || exit 1; \
    echo \"sha=${h%% *} $f\"; fi; done";

/// `$1` = stamp, then pairs of temp and target.
const COMMIT_SCRIPT: &str = "set -e; s=$1; shift; while [ $# -ge 2 ]; do t=$1; f=$2; shift 2; \
    d=$(dirname -- \"$f\"); if [ -e \"$f\" ]; then b=\"$d/.moosectl-backup/$s\"; \
    mkdir -p -- \"$b\"; n=\"$b/$(basename -- \"$f\")\"; \
    ln -f -- \"$f\" \"$n\" 2>/dev/null || cp -p -- \"$f\" \"$n\"; fi; mv -f -- \"$t\" \"$f\"; \
    sync -- \"$d\" 2>/dev/null || true; if [ -d \"$d/.moosectl-backup\" ]; then \
    ls -1 -- \"$d/.moosectl-backup\" | sort | head -n -5 | while IFS= read -r old; do \
    rm -rf -- \"$d/.moosectl-backup/$old\"; done; fi; done";

/// Keeps the last `max` entries of a growing list.
pub(crate) fn push_bounded(v: &mut Vec<String>, line: String, max: usize) {
    if v.len() == max {
        v.remove(0);
    }
    v.push(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_prefers_stderr_then_stdout_then_status() {
        let mut f = Finished {
            code: Some(1),
            stdout: vec!["out".into(), "".into()],
            stderr: vec!["err one".into(), "err two  ".into(), " ".into()],
        };
        assert_eq!(f.message(), "err two");
        f.stderr.clear();
        assert_eq!(f.message(), "out");
        f.stdout.clear();
        assert_eq!(f.message(), "exit status 1");
        f.code = None;
        assert_eq!(f.message(), "ended by a signal");
    }

    #[test]
    fn bounded_push_keeps_the_last_lines() {
        let mut v = Vec::new();
        for i in 0..5 {
            push_bounded(&mut v, i.to_string(), 3);
        }
        assert_eq!(v, ["2", "3", "4"]);
    }
}
