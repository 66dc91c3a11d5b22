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

use std::collections::BTreeMap;
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
    /// A staged file that is not what was sent, or a staged program that does not run.
    #[error("{host}: {}: {reason}; nothing was replaced", .path.display())]
    Staging {
        host: String,
        path: PathBuf,
        reason: String,
    },
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
    /// console run), synced, with `mode` and `owner`, and checks it there as `check` says;
    /// returns the temporary file (removed again when a check fails). The target is not
    /// touched: [`Machine::commit`] or [`Machine::discard`] follow.
    fn stage<'a>(
        &'a self,
        target: &'a Path,
        source: Source<'a>,
        mode: u32,
        owner: Option<&'a str>,
        check: Check<'a>,
    ) -> BoxFuture<'a, Result<PathBuf, HostError>>;

    /// What deploy checks first, in one command: the machine, the login, which of `dirs` can
    /// be written (or created), the sha256 of each of `hash` that exists and the contents of
    /// each of `read` (absent when it does not exist).
    fn facts<'a>(
        &'a self,
        dirs: &'a [PathBuf],
        hash: &'a [PathBuf],
        read: &'a [PathBuf],
    ) -> BoxFuture<'a, Result<Facts, HostError>> {
        Box::pin(async move {
            let mut args = vec![dirs.len().to_string()];
            args.extend(dirs.iter().map(|d| d.to_string_lossy().into_owned()));
            args.push(hash.len().to_string());
            args.extend(hash.iter().map(|f| f.to_string_lossy().into_owned()));
            args.extend(read.iter().map(|f| f.to_string_lossy().into_owned()));
            let f = self.run(&sh(FACTS_SCRIPT, args), None).await?;
            if !f.success() {
                return Err(HostError::Script {
                    host: self.name().to_string(),
                    what: "check the host".to_string(),
                    reason: f.message(),
                });
            }
            Facts::parse(&f.stdout).map_err(|reason| HostError::Script {
                host: self.name().to_string(),
                what: "check the host".to_string(),
                reason,
            })
        })
    }

    /// Puts staged files in place, then makes the folders, in one command. For each
    /// `(temp, target)` the old target is kept as `DIR/.moosectl-backup/STAMP/NAME` (the last
    /// 5 stamps are kept), then the temp is renamed over it and the folder synced. Returns
    /// how many folders were made (or found).
    fn commit<'a>(
        &'a self,
        staged: &'a [(PathBuf, PathBuf)],
        stamp: &'a str,
        folders: Folders<'a>,
    ) -> BoxFuture<'a, Result<usize, HostError>> {
        Box::pin(async move {
            if staged.is_empty() && folders.folders.is_empty() && folders.mount_points.is_empty() {
                return Ok(0);
            }
            let mut args = vec![stamp.to_string(), staged.len().to_string()];
            for (t, f) in staged {
                args.push(t.to_string_lossy().into_owned());
                args.push(f.to_string_lossy().into_owned());
            }
            let (user, group) = folders.owner.split_once(':').unwrap_or((folders.owner, ""));
            args.extend([
                if folders.root { "root" } else { "user" }.to_string(),
                user.to_string(),
                group.to_string(),
                folders.mount_points.len().to_string(),
            ]);
            args.extend(
                folders
                    .mount_points
                    .iter()
                    .map(|f| f.to_string_lossy().into_owned()),
            );
            args.extend(
                folders
                    .folders
                    .iter()
                    .map(|f| f.to_string_lossy().into_owned()),
            );
            let script = format!("{COMMIT_SCRIPT}\necho committed\n{FOLDERS_SCRIPT}");
            let f = self.run(&sh(&script, args), None).await?;
            if f.success() {
                return Ok(f.stdout.iter().filter(|l| l.starts_with("made ")).count());
            }
            let committed = f.stdout.iter().any(|l| l == "committed");
            Err(HostError::Script {
                host: self.name().to_string(),
                what: if committed {
                    "make the folders"
                } else {
                    "put the staged files in place"
                }
                .to_string(),
                reason: f.message(),
            })
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

/// What [`Machine::stage`] checks on the host once the temporary file is synced.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    /// The sha256 the file must have there.
    pub sha256: &'a str,
    /// Run it once with `--version` (a program of the build).
    pub runs: bool,
}

/// The folders [`Machine::commit`] makes: `folders`, and those of `mount_points` that are
/// not mounted (a mounted one is the root of a file system: its owner is left alone), owned
/// by `owner` (`user[:group]`) when `root`, else by the login (`mkdir -p`).
#[derive(Debug, Clone, Copy)]
pub struct Folders<'a> {
    pub folders: &'a [PathBuf],
    pub mount_points: &'a [PathBuf],
    pub owner: &'a str,
    pub root: bool,
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
    pub hashes: BTreeMap<PathBuf, String>,
    /// The files asked to be read: their contents, `None` when absent.
    pub contents: BTreeMap<PathBuf, Option<Vec<u8>>>,
}

impl Facts {
    fn parse(lines: &[String]) -> Result<Facts, String> {
        use base64::Engine;
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
            } else if let Some(rest) = l.strip_prefix("file=") {
                let (b64, p) = rest.split_once(' ').unwrap_or(("", rest));
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| format!("the contents of {p} came back garbled ({e})"))?;
                f.contents.insert(PathBuf::from(p), Some(bytes));
            } else if let Some(p) = l.strip_prefix("nofile=") {
                f.contents.insert(PathBuf::from(p), None);
            }
        }
        Ok(f)
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

/// Prefixes a script with `sha`, the sha256 of stdin as `HASH ...`: openssl's where there is
/// one (several times faster than coreutils' `sha256sum` on CPUs with SHA extensions).
macro_rules! with_sha {
    ($script:expr) => {
        concat!(
            "sha() { if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r; \
             else sha256sum; fi; }; ",
            $script
        )
    };
}
pub(crate) use with_sha;

/// `$1` = how many folders follow, then the folders; then how many files to hash follow,
/// then those; then files to read (printed in base64, one line each).
const FACTS_SCRIPT: &str = with_sha!(
    "echo \"arch=$(uname -m)\"; echo \"uid=$(id -u)\"; n=$1; shift; \
    while [ \"$n\" -gt 0 ]; do p=$1; while [ ! -e \"$p\" ]; do p=$(dirname -- \"$p\"); done; \
    if [ -w \"$p\" ]; then echo \"write=$1\"; else echo \"nowrite=$1\"; fi; n=$((n-1)); shift; \
    done; n=$1; shift; while [ \"$n\" -gt 0 ]; do if [ -f \"$1\" ]; then \
    h=$(sha < \"$1\") || exit 1; echo \"sha=${h%% *} $1\"; fi; n=$((n-1)); shift; done; \
    for f; do if [ -e \"$f\" ]; then b=$(base64 -w0 < \"$f\") || exit 1; \
    echo \"file=$b $f\"; else echo \"nofile=$f\"; fi; done"
);

/// `$1` = stamp, `$2` = how many pairs of temp and target follow, then those.
const COMMIT_SCRIPT: &str = "set -e; s=$1; k=$2; shift 2; while [ \"$k\" -gt 0 ]; do t=$1; f=$2; \
    shift 2; k=$((k-1)); d=$(dirname -- \"$f\"); if [ -e \"$f\" ]; then \
    b=\"$d/.moosectl-backup/$s\"; mkdir -p -- \"$b\"; n=\"$b/$(basename -- \"$f\")\"; \
    ln -f -- \"$f\" \"$n\" 2>/dev/null || cp -p -- \"$f\" \"$n\"; fi; mv -f -- \"$t\" \"$f\"; \
    sync -- \"$d\" 2>/dev/null || true; if [ -d \"$d/.moosectl-backup\" ]; then \
    ls -1 -- \"$d/.moosectl-backup\" | sort | head -n -5 | while IFS= read -r old; do \
    rm -rf -- \"$d/.moosectl-backup/$old\"; done; fi; done";

/// `$1` = `root` or `user`, `$2` = owner, `$3` = group, `$4` = how many mount points follow,
/// then those (skipped when mounted), then folders. Prints `made FOLDER` for each.
const FOLDERS_SCRIPT: &str = r#"how=$1; u=$2; g=$3; n=$4; shift 4
mounted() { M=$(readlink -f -- "$1" 2>/dev/null || echo "$1") awk '{ p = $2; gsub(/\\040/, " ", p); gsub(/\\011/, "\t", p); gsub(/\\012/, "\n", p); gsub(/\\134/, "\\", p); if (p == ENVIRON["M"]) found = 1 } END { exit !found }' /proc/mounts; }
make() { if [ "$how" = root ]; then install -d -o "$u" ${g:+-g "$g"} -- "$1"; else mkdir -p -- "$1"; fi; echo "made $1"; }
while [ "$n" -gt 0 ]; do if ! mounted "$1"; then make "$1"; fi; n=$((n-1)); shift; done
for f; do make "$f"; done"#;

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
