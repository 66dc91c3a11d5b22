//! [`Local`]: the machine the console runs on.

use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use moose_inventory::Command;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, BufReader};
use tokio::sync::mpsc;

use super::{
    push_bounded, BoxFuture, Check, Finished, FollowEvent, HostError, Machine, OutputLine, Source,
    Stream, KEPT_LINES,
};

/// How long a TCP connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a followed file is checked when nothing new came.
const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// Most bytes read from a followed file in one go.
const FOLLOW_CHUNK: usize = 256 * 1024;
/// Most lines sent in one [`FollowEvent::Lines`].
const FOLLOW_BATCH: usize = 2000;

/// This machine: commands run as child processes, files are this machine's files, and the
/// `moose-*` binaries are the ones next to the running `moosectl`.
#[derive(Debug, Clone)]
pub struct Local {
    name: String,
    address: String,
    bin_dir: PathBuf,
}

impl Local {
    /// `address` is what the host's daemons listen on (the inventory's host address);
    /// `bin_dir` is where the `moose-*` binaries are.
    pub fn new(name: &str, address: &str, bin_dir: PathBuf) -> Local {
        Local {
            name: name.to_string(),
            address: address.to_string(),
            bin_dir,
        }
    }

    /// The folder of the running executable (where the workspace build puts every binary).
    pub fn own_bin_dir() -> std::io::Result<PathBuf> {
        let exe = std::env::current_exe()?;
        Ok(exe
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")))
    }

    fn file_error(&self, what: &'static str, path: &Path, cause: std::io::Error) -> HostError {
        HostError::File {
            host: self.name.clone(),
            what,
            path: path.to_path_buf(),
            cause,
        }
    }

    /// The build command that puts the binaries where this console looks for them.
    fn build_command(&self) -> String {
        if self.bin_dir.ends_with("release") {
            "cargo build --release".to_string()
        } else {
            "cargo build --workspace --bins".to_string()
        }
    }
}

impl Machine for Local {
    fn name(&self) -> &str {
        &self.name
    }

    fn binary_path(&self, program: &str) -> PathBuf {
        self.bin_dir.join(program)
    }

    fn check_binary<'a>(&'a self, program: &'a str) -> BoxFuture<'a, Result<PathBuf, HostError>> {
        Box::pin(async move {
            let path = self.binary_path(program);
            let executable = tokio::fs::metadata(&path)
                .await
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false);
            if executable {
                Ok(path)
            } else {
                Err(HostError::MissingBinary {
                    host: self.name.clone(),
                    program: program.to_string(),
                    dir: self.bin_dir.clone(),
                    build: self.build_command(),
                })
            }
        })
    }

    fn run<'a>(
        &'a self,
        cmd: &'a Command,
        lines: Option<mpsc::Sender<OutputLine>>,
    ) -> BoxFuture<'a, Result<Finished, HostError>> {
        Box::pin(async move {
            let mut child = tokio::process::Command::new(&cmd.program)
                .args(&cmd.args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|cause| HostError::Spawn {
                    host: self.name.clone(),
                    program: cmd.program.display().to_string(),
                    cause,
                })?;
            let stdout = child.stdout.take().map(BufReader::new);
            let stderr = child.stderr.take().map(BufReader::new);
            let out_lines = lines.clone();
            let (out, err) = tokio::join!(
                collect(stdout, move |l| out_lines
                    .as_ref()
                    .map(|tx| (tx.clone(), OutputLine::Stdout(l)))),
                collect(stderr, move |l| lines
                    .as_ref()
                    .map(|tx| (tx.clone(), OutputLine::Stderr(l)))),
            );
            let status = child.wait().await.map_err(|cause| HostError::Spawn {
                host: self.name.clone(),
                program: cmd.program.display().to_string(),
                cause,
            })?;
            Ok(Finished {
                code: status.code(),
                stdout: out,
                stderr: err,
            })
        })
    }

    fn write_file<'a>(
        &'a self,
        path: &'a Path,
        contents: &'a [u8],
        mode: u32,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        let target = path.to_path_buf();
        let contents = contents.to_vec();
        let owner = owner.map(str::to_string);
        let this = self.clone();
        Box::pin(async move {
            let task = tokio::task::spawn_blocking(move || {
                this.write_atomically(&target, &contents, mode, owner.as_deref())
            });
            match task.await {
                Ok(r) => r,
                Err(e) => Err(self.file_error("write", path, std::io::Error::other(e.to_string()))),
            }
        })
    }

    fn read_file<'a>(
        &'a self,
        path: &'a Path,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, HostError>> {
        Box::pin(async move {
            match tokio::fs::read(path).await {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(self.file_error("read", path, e)),
            }
        })
    }

    fn follow_file<'a>(
        &'a self,
        path: &'a Path,
        history: u64,
        events: mpsc::Sender<FollowEvent>,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        Box::pin(async move {
            let mut follower = Follower {
                path,
                events,
                file: None,
                ino: 0,
                pos: 0,
                partial: Vec::new(),
                skip_cut_line: false,
                missing_told: false,
            };
            follower.run(history).await;
            Ok(())
        })
    }

    fn stage<'a>(
        &'a self,
        target: &'a Path,
        source: Source<'a>,
        mode: u32,
        owner: Option<&'a str>,
        check: Check<'a>,
    ) -> BoxFuture<'a, Result<PathBuf, HostError>> {
        let this = self.clone();
        let target_buf = target.to_path_buf();
        let contents = match source {
            Source::Bytes(b) => Ok(b.to_vec()),
            Source::File(p) => Err(p.to_path_buf()),
        };
        let owner = owner.map(str::to_string);
        let (sha256, runs) = (check.sha256.to_string(), check.runs);
        Box::pin(async move {
            let task = tokio::task::spawn_blocking(move || {
                let tmp = this.stage_blocking(&target_buf, contents, mode, owner.as_deref())?;
                let checked = this.check_staged(&target_buf, &tmp, &sha256, runs);
                if checked.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                checked.map(|()| tmp)
            });
            match task.await {
                Ok(r) => r,
                Err(e) => {
                    Err(self.file_error("write", target, std::io::Error::other(e.to_string())))
                }
            }
        })
    }

    fn connect(&self, port: u16) -> BoxFuture<'_, Result<Box<dyn Stream>, HostError>> {
        self.connect_from(&self.address, port, CONNECT_TIMEOUT)
    }

    fn connect_from<'a>(
        &'a self,
        address: &'a str,
        port: u16,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Box<dyn Stream>, HostError>> {
        Box::pin(async move {
            let fail = |cause: std::io::Error| HostError::Connect {
                host: self.name.clone(),
                address: address.to_string(),
                port,
                cause,
            };
            let stream =
                tokio::time::timeout(timeout, tokio::net::TcpStream::connect((address, port)))
                    .await
                    .map_err(|_| fail(std::io::Error::new(ErrorKind::TimedOut, "timed out")))?
                    .map_err(fail)?;
            let _ = stream.set_nodelay(true);
            Ok(Box::new(stream) as Box<dyn Stream>)
        })
    }
}

impl Local {
    /// The blocking part of [`Machine::stage`]: `contents`, or a copy of the file named.
    fn stage_blocking(
        &self,
        path: &Path,
        contents: Result<Vec<u8>, PathBuf>,
        mode: u32,
        owner: Option<&str>,
    ) -> Result<PathBuf, HostError> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(|e| self.file_error("create the folder", dir, e))?;
        let ids = owner.map(|o| self.resolve_owner(o, path)).transpose()?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            ".{name}.moosectl-{}-{nanos:08x}",
            std::process::id()
        ));
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)
                .map_err(|e| self.file_error("create", &tmp, e))?;
            match &contents {
                Ok(bytes) => f
                    .write_all(bytes)
                    .map_err(|e| self.file_error("write", &tmp, e))?,
                Err(src) => {
                    let mut from =
                        std::fs::File::open(src).map_err(|e| self.file_error("read", src, e))?;
                    std::io::copy(&mut from, &mut f)
                        .map_err(|e| self.file_error("write", &tmp, e))?;
                }
            }
            f.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| self.file_error("set the permissions of", &tmp, e))?;
            if let Some((uid, gid)) = ids {
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                    .map_err(|e| self.file_error("change the owner of", &tmp, e))?;
            }
            f.sync_all().map_err(|e| self.file_error("sync", &tmp, e))?;
            Ok(tmp.clone())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// The checks of [`Machine::stage`] on the synced temp `tmp` of `target`.
    fn check_staged(
        &self,
        target: &Path,
        tmp: &Path,
        sha256: &str,
        runs: bool,
    ) -> Result<(), HostError> {
        let staging = |reason: String| HostError::Staging {
            host: self.name.clone(),
            path: target.to_path_buf(),
            reason,
        };
        let (found, _) =
            crate::engine::deploy::sha256_file(tmp).map_err(|e| self.file_error("read", tmp, e))?;
        if found != sha256 {
            return Err(staging(format!(
                "the copy there does not have the sha256 sent ({found} there); check the disk, \
                 then deploy again"
            )));
        }
        if runs {
            let out = std::process::Command::new(tmp)
                .arg("--version")
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| staging(format!("the new program does not run there ({e})")))?;
            if !out.status.success() {
                let said = String::from_utf8_lossy(&out.stderr);
                let last = said.lines().rev().find(|l| !l.trim().is_empty());
                return Err(staging(format!(
                    "the new program does not run there ({})",
                    last.unwrap_or("no output")
                )));
            }
        }
        Ok(())
    }

    /// The blocking part of [`Machine::write_file`].
    fn write_atomically(
        &self,
        path: &Path,
        contents: &[u8],
        mode: u32,
        owner: Option<&str>,
    ) -> Result<(), HostError> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(|e| self.file_error("create the folder", dir, e))?;
        let ids = owner.map(|o| self.resolve_owner(o, path)).transpose()?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.moosectl-{}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&tmp)
                .map_err(|e| self.file_error("create", &tmp, e))?;
            f.write_all(contents)
                .map_err(|e| self.file_error("write", &tmp, e))?;
            f.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| self.file_error("set the permissions of", &tmp, e))?;
            if let Some((uid, gid)) = ids {
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                    .map_err(|e| self.file_error("change the owner of", &tmp, e))?;
            }
            f.sync_all().map_err(|e| self.file_error("sync", &tmp, e))?;
            std::fs::rename(&tmp, path).map_err(|e| self.file_error("replace", path, e))?;
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// `user:group` or `user:` (the user's primary group) as ids.
    fn resolve_owner(&self, owner: &str, path: &Path) -> Result<(u32, u32), HostError> {
        let fail = |reason: String| HostError::Owner {
            host: self.name.clone(),
            owner: owner.to_string(),
            path: path.to_path_buf(),
            reason,
        };
        let (user, group) = owner.split_once(':').unwrap_or((owner, ""));
        let u = nix::unistd::User::from_name(user)
            .map_err(|e| fail(format!("cannot look up user {user}: {e}")))?
            .ok_or_else(|| {
                fail(format!(
                    "no user {user} on this host; create it or change cluster.user"
                ))
            })?;
        let gid = if group.is_empty() {
            u.gid.as_raw()
        } else {
            nix::unistd::Group::from_name(group)
                .map_err(|e| fail(format!("cannot look up group {group}: {e}")))?
                .ok_or_else(|| {
                    fail(format!(
                        "no group {group} on this host; create it or change cluster.group"
                    ))
                })?
                .gid
                .as_raw()
        };
        Ok((u.uid.as_raw(), gid))
    }
}

/// Reads a child's output stream line by line, forwarding each line and keeping the last ones.
async fn collect<R, F>(reader: Option<BufReader<R>>, mut forward: F) -> Vec<String>
where
    R: tokio::io::AsyncRead + Unpin,
    F: FnMut(String) -> Option<(mpsc::Sender<OutputLine>, OutputLine)>,
{
    let mut kept = Vec::new();
    let Some(mut reader) = reader else {
        return kept;
    };
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                if let Some((tx, l)) = forward(line.clone()) {
                    let _ = tx.send(l).await;
                }
                push_bounded(&mut kept, line, KEPT_LINES);
            }
        }
    }
    kept
}

/// State of one followed file.
struct Follower<'a> {
    path: &'a Path,
    events: mpsc::Sender<FollowEvent>,
    file: Option<tokio::fs::File>,
    ino: u64,
    pos: u64,
    /// The start of a line whose end has not been written yet.
    partial: Vec<u8>,
    /// The first line read is the end of a line cut by the history start: drop it.
    skip_cut_line: bool,
    missing_told: bool,
}

impl Follower<'_> {
    async fn run(&mut self, history: u64) {
        let mut first = true;
        let mut buf = vec![0u8; FOLLOW_CHUNK];
        loop {
            if self.events.is_closed() {
                return;
            }
            if self.file.is_none() && !self.open(if first { Some(history) } else { None }).await {
                first = false;
                if !self.sleep().await {
                    return;
                }
                continue;
            }
            first = false;
            let n = match self.file.as_mut() {
                Some(f) => f.read(&mut buf).await.unwrap_or(0),
                None => 0,
            };
            if n > 0 {
                self.pos += n as u64;
                if !self.emit(&buf[..n]).await {
                    return;
                }
                continue;
            }
            // Nothing new: look for truncation or a new file under the name.
            match tokio::fs::metadata(self.path).await {
                Ok(m) if m.ino() != self.ino => {
                    self.tell(format!(
                        "{} was replaced; following the new file",
                        self.path.display()
                    ))
                    .await;
                    self.file = None;
                    self.partial.clear();
                    continue;
                }
                Ok(m) if m.len() < self.pos => {
                    self.tell(format!("{} was truncated", self.path.display()))
                        .await;
                    if let Some(f) = self.file.as_mut() {
                        let _ = f.seek(std::io::SeekFrom::Start(0)).await;
                    }
                    self.pos = 0;
                    self.partial.clear();
                    continue;
                }
                Ok(_) => {}
                Err(_) => {
                    self.file = None;
                    self.partial.clear();
                }
            }
            if !self.sleep().await {
                return;
            }
        }
    }

    /// Waits for the next poll; false when nobody listens any more.
    async fn sleep(&self) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => true,
            _ = self.events.closed() => false,
        }
    }

    async fn tell(&self, msg: String) {
        let _ = self.events.send(FollowEvent::Notice(msg)).await;
    }

    /// Opens the file; with `history`, positions it that many bytes before the end (at a line
    /// start). False when the file is not there (said once).
    async fn open(&mut self, history: Option<u64>) -> bool {
        let mut f = match tokio::fs::File::open(self.path).await {
            Ok(f) => f,
            Err(e) => {
                if !self.missing_told {
                    self.missing_told = true;
                    self.tell(format!("waiting for {}: {e}", self.path.display()))
                        .await;
                }
                return false;
            }
        };
        self.missing_told = false;
        let meta = match f.metadata().await {
            Ok(m) => m,
            Err(_) => return false,
        };
        self.ino = meta.ino();
        self.pos = 0;
        self.skip_cut_line = false;
        if let Some(h) = history {
            let start = meta.len().saturating_sub(h);
            if start > 0 && f.seek(std::io::SeekFrom::Start(start)).await.is_ok() {
                self.pos = start;
                self.skip_cut_line = true;
            }
        }
        self.file = Some(f);
        true
    }

    /// Sends the complete lines in `data`; false when nobody listens any more.
    async fn emit(&mut self, data: &[u8]) -> bool {
        let mut lines = Vec::new();
        let mut rest = data;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(i);
            rest = &tail[1..];
            self.partial.extend_from_slice(head);
            if std::mem::take(&mut self.skip_cut_line) {
                self.partial.clear();
                continue;
            }
            lines.push(
                String::from_utf8_lossy(&self.partial)
                    .trim_end_matches('\r')
                    .to_string(),
            );
            self.partial.clear();
            if lines.len() >= FOLLOW_BATCH
                && self
                    .events
                    .send(FollowEvent::Lines(std::mem::take(&mut lines)))
                    .await
                    .is_err()
            {
                return false;
            }
        }
        self.partial.extend_from_slice(rest);
        if lines.is_empty() {
            return true;
        }
        self.events.send(FollowEvent::Lines(lines)).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Local {
        Local::new(
            "here",
            "127.0.0.1",
            PathBuf::from("/nonexistent/target/debug"),
        )
    }

    #[tokio::test]
    async fn run_collects_output_and_status() {
        let h = local();
        let cmd = Command {
            program: "sh".into(),
            args: vec!["-c".into(), "echo one; echo two >&2; exit 3".into()],
        };
        let (tx, mut rx) = mpsc::channel(16);
        let f = h.run(&cmd, Some(tx)).await.unwrap();
        assert_eq!(f.code, Some(3));
        assert_eq!(f.stdout, ["one"]);
        assert_eq!(f.stderr, ["two"]);
        let mut got = Vec::new();
        while let Ok(l) = rx.try_recv() {
            got.push(l);
        }
        assert!(got.contains(&OutputLine::Stdout("one".into())));
        assert!(got.contains(&OutputLine::Stderr("two".into())));
    }

    #[tokio::test]
    async fn missing_program_names_host_and_program() {
        let h = local();
        let cmd = Command {
            program: "/nonexistent/prog".into(),
            args: vec![],
        };
        let e = h.run(&cmd, None).await.unwrap_err().to_string();
        assert!(e.starts_with("here: cannot run /nonexistent/prog: "), "{e}");
    }

    #[tokio::test]
    async fn missing_binary_says_how_to_build_it() {
        let e = local()
            .check_binary("moose-master")
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "here: moose-master is missing: it must be next to moosectl in \
             /nonexistent/target/debug; build every workspace binary with \
             `cargo build --workspace --bins`"
        );
    }

    #[tokio::test]
    async fn write_is_atomic_with_mode_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/file.cfg");
        let h = local();
        assert_eq!(h.read_file(&path).await.unwrap(), None);
        h.write_file(&path, b"A = 1\n", 0o640, None).await.unwrap();
        assert_eq!(h.read_file(&path).await.unwrap().unwrap(), b"A = 1\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        h.write_file(&path, b"A = 2\n", 0o644, Some("root:"))
            .await
            .ok();
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file.cfg"], "no temporary file is left");
    }

    #[tokio::test]
    async fn unknown_owner_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let e = local()
            .write_file(&path, b"x", 0o644, Some("no-such-user-moosectl:"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no user no-such-user-moosectl on this host"),
            "{e}"
        );
        assert!(!path.exists());
    }

    async fn next_lines(rx: &mut mpsc::Receiver<FollowEvent>) -> Vec<String> {
        let fut = async {
            loop {
                match rx.recv().await {
                    Some(FollowEvent::Lines(l)) => return l,
                    Some(FollowEvent::Notice(_)) => continue,
                    None => panic!("follower ended"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .expect("lines within 5 s")
    }

    #[tokio::test]
    async fn follow_gives_history_then_new_lines_and_survives_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, "old 1\nold 2\nold 3\n").unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let p = path.clone();
        let task = tokio::spawn(async move { local().follow_file(&p, 12, tx).await });
        // 12 bytes before the end cut "old 2" in the middle: only whole lines come.
        assert_eq!(next_lines(&mut rx).await, ["old 3"]);
        {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(b"new 1\nhalf").unwrap();
        }
        assert_eq!(next_lines(&mut rx).await, ["new 1"]);
        {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(b" done\n").unwrap();
        }
        assert_eq!(next_lines(&mut rx).await, ["half done"]);
        std::fs::write(&path, "").unwrap();
        std::fs::write(&path, "after truncation\n").unwrap();
        assert_eq!(next_lines(&mut rx).await, ["after truncation"]);
        // Replaced under the same name (log rotation).
        let tmp = dir.path().join("x.log.new");
        std::fs::write(&tmp, "rotated\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(next_lines(&mut rx).await, ["rotated"]);
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn connect_refused_names_the_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = local().connect(port).await.err().unwrap().to_string();
        assert!(
            e.starts_with(&format!("here: cannot connect to 127.0.0.1:{port}: ")),
            "{e}"
        );
    }
}
