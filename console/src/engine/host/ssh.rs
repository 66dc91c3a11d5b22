//! [`SshHost`]: a machine reached over SSH (russh; never the `ssh` or `scp` programs).
//!
//! One connection per host, opened on first use (building the cluster does no network I/O)
//! and shared by commands, transfers, follows and port tunnels; keepalives every few
//! seconds; a lost connection is opened again on next use, with a growing pause between
//! failed attempts. At most [`MAX_CHANNELS`] channels are open at once on a connection
//! (OpenSSH allows 10 sessions per connection by default).
//!
//! Commands run without a PTY, so closing a channel sends no SIGHUP: every command goes
//! through a small `sh` wrapper that kills its child when the channel's standard input
//! closes, which is what happens when the future running it is dropped.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use moose_inventory::{Command, Jump};
use russh::client::{self, Handle, Msg};
use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::known_hosts::{self, Verdict};
use super::{
    push_bounded, BoxFuture, Check, Finished, FollowEvent, HostError, Machine, OutputLine, Source,
    Stream, KEPT_LINES,
};

/// AES-GCM first: with AES-NI it costs both ends less CPU per byte than ChaCha20-Poly1305
/// (a deploy pushes tens of MiB to every host at once); the rest as russh orders them.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_256_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];

/// Most channels open at once on one connection.
pub const MAX_CHANNELS: usize = 8;
/// How often an idle connection is checked.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// Unanswered keepalives before the connection counts as lost.
const KEEPALIVE_MAX: usize = 3;
/// First and longest pause after a failed connection attempt.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Exit status of the read script when the file does not exist.
const NO_SUCH_FILE: u32 = 44;

/// Runs `"$@"` with standard input from /dev/null, and kills it when the wrapper's own
/// standard input (the channel) closes. Exits with the child's status.
const KILL_WRAPPER: &str = "exec 3<&0 </dev/null; \"$@\" 3<&- & c=$!; \
    (while IFS= read -r _; do :; done; kill -TERM \"$c\" 2>/dev/null) <&3 >/dev/null 2>&1 & \
    w=$!; exec 3<&-; wait \"$c\"; s=$?; kill \"$w\" 2>/dev/null; exit \"$s\"";

/// `$1` = target, `$2` = temp suffix, `$3` = mode (octal), `$4` = owner or empty,
/// `$5` = byte count: standard input goes to a temp file beside the target, which replaces
/// the target once complete and synced.
const WRITE_SCRIPT: &str = "set -e; f=$1; d=$(dirname -- \"$f\"); mkdir -p -- \"$d\"; \
    t=\"$d/.$(basename -- \"$f\").$2\"; trap 'rm -f -- \"$t\"' EXIT; cat > \"$t\"; \
    n=$(wc -c < \"$t\"); [ \"$n\" -eq \"$5\" ] || { echo \"got $n of $5 bytes\" >&2; exit 1; }; \
    chmod \"$3\" \"$t\"; if [ -n \"$4\" ]; then chown -- \"$4\" \"$t\"; fi; sync -- \"$t\"; \
    mv -f -- \"$t\" \"$f\"; trap - EXIT; sync -- \"$d\" 2>/dev/null || true";

/// Like [`WRITE_SCRIPT`] but the synced temp stays (printed) and is checked first: `$5` =
/// its sha256 (exit 41, the one found on stderr), `$6` = `run` to run it once with
/// `--version` (exit 42, its last line on stderr).
const STAGE_SCRIPT: &str = super::with_sha!(
    "set -e; f=$1; d=$(dirname -- \"$f\"); mkdir -p -- \"$d\"; \
    t=\"$d/.$(basename -- \"$f\").$2\"; trap 'rm -f -- \"$t\"' EXIT; cat > \"$t\"; \
    chmod \"$3\" \"$t\"; if [ -n \"$4\" ]; then chown -- \"$4\" \"$t\"; fi; sync -- \"$t\"; \
    h=$(sha < \"$t\"); h=${h%% *}; [ \"$h\" = \"$5\" ] || { echo \"$h\" >&2; exit 41; }; \
    if [ \"$6\" = run ]; then o=$(\"$t\" --version 2>&1 </dev/null) || \
    { printf '%s\\n' \"$o\" | tail -n 1 >&2; exit 42; }; fi; trap - EXIT; echo \"$t\""
);

/// `$1` = file: its contents, or exit 44 when it does not exist.
const READ_SCRIPT: &str = "[ -e \"$1\" ] || [ -L \"$1\" ] || exit 44; exec cat -- \"$1\"";

/// `$1` = file, `$2` = history bytes: says `cut` or `whole` (whether the history starts in
/// the middle of a line), then follows the file.
const FOLLOW_SCRIPT: &str = "s=$(stat -c %s -- \"$1\" 2>/dev/null || echo 0); \
    if [ \"$s\" -gt \"$2\" ]; then echo cut; else echo whole; fi; \
    exec tail -c \"$2\" -F -- \"$1\"";

/// How every SSH host of a console checks host keys and how long it waits.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// The known_hosts file to check and to add keys to (`--known-hosts`, else
    /// `~/.ssh/known_hosts`).
    pub known_hosts: PathBuf,
    /// Also checked, never written: `/etc/ssh/ssh_known_hosts`.
    pub global_known_hosts: PathBuf,
    /// Add unknown host keys to `known_hosts` instead of refusing them.
    pub accept_new_host_keys: bool,
    /// How long opening a connection (TCP, handshake, authentication) may take.
    pub connect_timeout: Duration,
    /// The console user's home, for `~` in key paths and the default keys.
    pub home: Option<PathBuf>,
    /// Unknown host keys refused so far, for the terminal UI to ask about.
    pub unknown_keys: Arc<parking_lot::Mutex<Vec<UnknownKey>>>,
}

/// A host key that was refused because no known_hosts entry names the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    /// The inventory host it was met for.
    pub host: String,
    /// `addr` or `[addr]:port`, as known_hosts writes it.
    pub pattern: String,
    /// `ssh-ed25519 AAAA...`.
    pub key: String,
    /// `ssh-ed25519 SHA256:...`.
    pub fingerprint: String,
    /// Where trusting it adds it.
    pub file: PathBuf,
}

impl UnknownKey {
    /// Adds the key to its known_hosts file.
    pub fn trust(&self) -> std::io::Result<()> {
        let key = PublicKey::from_openssh(&self.key).map_err(std::io::Error::other)?;
        known_hosts::append(&self.file, &self.pattern, &key)
    }
}

impl Default for SshOptions {
    fn default() -> Self {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        SshOptions {
            known_hosts: home
                .as_deref()
                .unwrap_or(Path::new("/root"))
                .join(".ssh/known_hosts"),
            global_known_hosts: PathBuf::from("/etc/ssh/ssh_known_hosts"),
            accept_new_host_keys: false,
            connect_timeout: Duration::from_secs(10),
            home,
            unknown_keys: Arc::default(),
        }
    }
}

/// Where one host is and how to log in there.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// The host's inventory name (every message starts with it).
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Private key file as written in the inventory (`~` = `$HOME`).
    pub key: Option<String>,
    pub jump: Option<Jump>,
    pub sudo: bool,
    /// Where the `moose-*` binaries are on the host.
    pub install_dir: PathBuf,
}

impl SshTarget {
    /// The target of an inventory host.
    pub fn of(host: &moose_inventory::Host, install_dir: &Path) -> SshTarget {
        SshTarget {
            name: host.name.clone(),
            address: host.address.clone(),
            port: host.ssh.port,
            user: host.ssh.user.clone(),
            key: host.ssh.key.clone(),
            jump: host.ssh.jump.clone(),
            sudo: host.ssh.sudo,
            install_dir: install_dir.to_path_buf(),
        }
    }
}

/// A machine reached over SSH.
pub struct SshHost {
    target: SshTarget,
    options: Arc<SshOptions>,
    state: tokio::sync::Mutex<ConnState>,
    /// Unique per console run, in temporary file names (an install folder may be shared).
    run_id: String,
}

#[derive(Default)]
struct ConnState {
    conn: Option<Arc<Conn>>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

/// One open, authenticated connection.
struct Conn {
    handle: Handle<Checker>,
    channels: Arc<Semaphore>,
    /// The connection to the jump host the stream goes through.
    _jump: Option<Box<Conn>>,
}

/// Checks the server's host key against the known_hosts files; the refusal, in words,
/// goes to `refusal`.
struct Checker {
    name: String,
    pattern: String,
    options: Arc<SshOptions>,
    refusal: Arc<parking_lot::Mutex<Option<String>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let verdict = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.verdict(key),
            PublicKeyOrCertificate::Certificate(_) => Err(format!(
                "{}: {} offers a host certificate, which moosectl does not check; configure \
                 sshd to offer a plain host key",
                self.name, self.pattern
            )),
        };
        match verdict {
            Ok(()) => Ok(true),
            Err(why) => {
                *self.refusal.lock() = Some(why);
                Ok(false)
            }
        }
    }
}

impl Checker {
    fn verdict(&self, key: &PublicKey) -> Result<(), String> {
        let files = [
            self.options.known_hosts.clone(),
            self.options.global_known_hosts.clone(),
        ];
        let entries = known_hosts::load(&files);
        let fp = known_hosts::fingerprint(key);
        let alg = known_hosts::algorithm(key);
        match known_hosts::check(&entries, &self.pattern, key) {
            Verdict::Known => Ok(()),
            Verdict::Changed(e) => Err(format!(
                "host key of {} changed: {} now offers {alg} {fp}, but {}:{} has {} {}; if the \
                 host was reinstalled, check the new key and remove that line",
                self.name,
                self.pattern,
                e.file.display(),
                e.line,
                known_hosts::algorithm(&e.key),
                known_hosts::fingerprint(&e.key),
            )),
            Verdict::Revoked(e) => Err(format!(
                "{}: the host key {alg} {fp} of {} is revoked ({}:{})",
                self.name,
                self.pattern,
                e.file.display(),
                e.line
            )),
            Verdict::Unknown if self.options.accept_new_host_keys => {
                known_hosts::append(&self.options.known_hosts, &self.pattern, key).map_err(|e| {
                    format!(
                        "{}: cannot add the host key of {} to {}: {e}",
                        self.name,
                        self.pattern,
                        self.options.known_hosts.display()
                    )
                })
            }
            Verdict::Unknown => {
                let k = UnknownKey {
                    host: self.name.clone(),
                    pattern: self.pattern.clone(),
                    key: known_hosts::line_for("", key).trim().to_string(),
                    fingerprint: format!("{alg} {fp}"),
                    file: self.options.known_hosts.clone(),
                };
                let mut list = self.options.unknown_keys.lock();
                if !list.contains(&k) {
                    list.push(k);
                }
                Err(format!(
                "{}: unknown host key of {}: {alg} {fp}; check it (ssh-keygen -lf on the host's \
                 key), then run again with --accept-new-host-keys to add it to {}",
                    self.name,
                    self.pattern,
                    self.options.known_hosts.display()
                ))
            }
        }
    }
}

/// A channel that is closed (and its slot given back) when dropped.
struct Open {
    read: ChannelReadHalf,
    write: Option<ChannelWriteHalf<Msg>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Open {
    fn drop(&mut self) {
        let write = self.write.take();
        let permit = self.permit.take();
        if let (Some(w), Ok(rt)) = (write, tokio::runtime::Handle::try_current()) {
            rt.spawn(async move {
                let _ = w.close().await;
                drop(permit);
            });
        }
    }
}

impl Open {
    fn writer(&self) -> &ChannelWriteHalf<Msg> {
        self.write
            .as_ref()
            .expect("the write half lives until drop")
    }
}

/// A direct-tcpip channel as a byte stream, holding its channel slot.
struct Tunnel {
    inner: russh::ChannelStream<Msg>,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Tunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Output of a remote command, split into lines as it comes.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    fn push(&mut self, data: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            out.push(
                String::from_utf8_lossy(&line[..line.len() - 1])
                    .trim_end_matches('\r')
                    .to_string(),
            );
        }
        out
    }

    fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            None
        } else {
            let l = String::from_utf8_lossy(&self.partial).to_string();
            self.partial.clear();
            Some(l)
        }
    }
}

/// The login's key candidates, in order.
enum KeySource {
    File(PathBuf),
    Agent,
}

impl SshHost {
    pub fn new(target: SshTarget, options: Arc<SshOptions>) -> SshHost {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let me = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        SshHost {
            target,
            options,
            state: tokio::sync::Mutex::new(ConnState::default()),
            run_id: format!("moosectl-{me}-{}-{nanos:08x}", std::process::id()),
        }
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// A suffix unique to this console run, for temporary files on the host.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    fn fail(&self, message: String) -> HostError {
        HostError::Ssh {
            host: self.target.name.clone(),
            message,
        }
    }

    fn file_error(&self, what: &'static str, path: &Path, cause: String) -> HostError {
        HostError::File {
            host: self.target.name.clone(),
            what,
            path: path.to_path_buf(),
            cause: std::io::Error::other(cause),
        }
    }

    /// The open connection, opening it when there is none (or it was lost).
    async fn conn(&self) -> Result<Arc<Conn>, HostError> {
        let mut st = self.state.lock().await;
        if let Some(c) = &st.conn {
            if !c.handle.is_closed() {
                return Ok(c.clone());
            }
            st.conn = None;
        }
        if let (Some(at), Some(last)) = (st.retry_at, &st.last_error) {
            let now = Instant::now();
            if now < at {
                return Err(self.fail(format!(
                    "{last} (trying again in {} s)",
                    (at - now).as_secs().max(1)
                )));
            }
        }
        match self.open().await {
            Ok(c) => {
                let c = Arc::new(c);
                st.conn = Some(c.clone());
                st.failures = 0;
                st.retry_at = None;
                st.last_error = None;
                Ok(c)
            }
            Err(msg) => {
                let pause = BACKOFF_FIRST
                    .saturating_mul(1u32 << st.failures.min(5))
                    .min(BACKOFF_MAX);
                st.failures += 1;
                st.retry_at = Some(Instant::now() + pause);
                st.last_error = Some(msg.clone());
                Err(self.fail(msg))
            }
        }
    }

    /// Forgets a connection that failed under us.
    async fn drop_conn(&self, bad: &Arc<Conn>) {
        let mut st = self.state.lock().await;
        if st.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, bad)) {
            st.conn = None;
        }
    }

    fn client_config(&self) -> Arc<client::Config> {
        Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(KEEPALIVE),
            keepalive_max: KEEPALIVE_MAX,
            nodelay: true,
            preferred: russh::Preferred {
                cipher: std::borrow::Cow::Borrowed(CIPHERS),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    /// Opens and authenticates a connection (through the jump host when there is one).
    /// The error is the message after `host: `.
    async fn open(&self) -> Result<Conn, String> {
        let t = &self.target;
        let timeout = self.options.connect_timeout;
        let work = async {
            match &t.jump {
                None => {
                    let tcp = tokio::net::TcpStream::connect((t.address.as_str(), t.port))
                        .await
                        .map_err(|e| {
                            format!("cannot reach {}:{}: {}", t.address, t.port, io_reason(&e))
                        })?;
                    let _ = tcp.set_nodelay(true);
                    self.handshake(tcp, &t.address, t.port, &t.user, None).await
                }
                Some(j) => {
                    let user = j.user.clone().unwrap_or_else(|| t.user.clone());
                    let tcp = tokio::net::TcpStream::connect((j.host.as_str(), j.port))
                        .await
                        .map_err(|e| {
                            format!(
                                "cannot reach the jump host {}:{}: {}",
                                j.host,
                                j.port,
                                io_reason(&e)
                            )
                        })?;
                    let _ = tcp.set_nodelay(true);
                    let jump = self.handshake(tcp, &j.host, j.port, &user, None).await?;
                    let ch = jump
                        .handle
                        .channel_open_direct_tcpip(
                            t.address.clone(),
                            u32::from(t.port),
                            "127.0.0.1",
                            0,
                        )
                        .await
                        .map_err(|e| {
                            format!(
                                "the jump host {j} cannot reach {}:{}: {}",
                                t.address,
                                t.port,
                                russh_reason(&e)
                            )
                        })?;
                    let stream = ch.into_stream();
                    self.handshake(stream, &t.address, t.port, &t.user, Some(jump))
                        .await
                }
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "cannot reach {}:{}: timed out after {} s",
                t.address,
                t.port,
                timeout.as_secs()
            )),
        }
    }

    async fn handshake<S>(
        &self,
        stream: S,
        address: &str,
        port: u16,
        user: &str,
        jump: Option<Conn>,
    ) -> Result<Conn, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let refusal = Arc::new(parking_lot::Mutex::new(None));
        let checker = Checker {
            name: self.target.name.clone(),
            pattern: known_hosts::host_pattern(address, port),
            options: self.options.clone(),
            refusal: refusal.clone(),
        };
        let mut handle = match client::connect_stream(self.client_config(), stream, checker).await {
            Ok(h) => h,
            Err(e) => {
                if let Some(why) = refusal.lock().take() {
                    // The message already names the host.
                    let name = format!("{}: ", self.target.name);
                    return Err(why.strip_prefix(&name).unwrap_or(&why).to_string());
                }
                return Err(format!(
                    "SSH handshake with {address}:{port} failed: {}",
                    russh_reason(&e)
                ));
            }
        };
        self.authenticate(&mut handle, address, user).await?;
        Ok(Conn {
            handle,
            channels: Arc::new(Semaphore::new(MAX_CHANNELS)),
            _jump: jump.map(Box::new),
        })
    }

    /// The keys to offer: `ssh.key`, else the agent's, else the default files that exist.
    fn key_sources(&self) -> Result<Vec<KeySource>, String> {
        let home = self.options.home.clone();
        if let Some(k) = &self.target.key {
            let path = match (k.strip_prefix("~/"), &home) {
                (Some(rest), Some(h)) => h.join(rest),
                (Some(_), None) => {
                    return Err(format!(
                        "ssh.key {k} starts with ~ but HOME is not set; write the full path"
                    ))
                }
                _ => PathBuf::from(k),
            };
            return Ok(vec![KeySource::File(path)]);
        }
        let mut out = Vec::new();
        if std::env::var_os("SSH_AUTH_SOCK").is_some_and(|s| !s.is_empty()) {
            out.push(KeySource::Agent);
        }
        if let Some(h) = home {
            for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                let p = h.join(".ssh").join(name);
                if p.exists() {
                    out.push(KeySource::File(p));
                }
            }
        }
        Ok(out)
    }

    async fn authenticate(
        &self,
        handle: &mut Handle<Checker>,
        address: &str,
        user: &str,
    ) -> Result<(), String> {
        let sources = self.key_sources()?;
        let mut tried: Vec<String> = Vec::new();
        for source in sources {
            match source {
                KeySource::File(path) => {
                    let key = match russh::keys::load_secret_key(&path, None) {
                        Ok(k) => k,
                        Err(e) => {
                            if self.target.key.is_some() {
                                return Err(format!(
                                    "cannot use the key {}: {e}; set ssh.key to an unencrypted \
                                     private key, or load it with ssh-add and remove ssh.key",
                                    path.display()
                                ));
                            }
                            tried.push(format!("{} (unreadable: {e})", path.display()));
                            continue;
                        }
                    };
                    let hash = if key.algorithm().is_rsa() {
                        handle
                            .best_supported_rsa_hash()
                            .await
                            .ok()
                            .flatten()
                            .flatten()
                    } else {
                        None
                    };
                    let r = handle
                        .authenticate_publickey(
                            user,
                            PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                        )
                        .await
                        .map_err(|e| {
                            format!(
                                "{user}@{address}: authentication failed: {}",
                                russh_reason(&e)
                            )
                        })?;
                    if r.success() {
                        return Ok(());
                    }
                    tried.push(path.display().to_string());
                }
                KeySource::Agent => {
                    let mut agent = match AgentClient::connect_env().await {
                        Ok(a) => a,
                        Err(e) => {
                            tried.push(format!("the agent (cannot connect: {e})"));
                            continue;
                        }
                    };
                    let ids = agent.request_identities().await.unwrap_or_default();
                    for id in ids {
                        let key = id.public_key().into_owned();
                        let fp = known_hosts::fingerprint(&key);
                        let hash = if key.algorithm().is_rsa() {
                            handle
                                .best_supported_rsa_hash()
                                .await
                                .ok()
                                .flatten()
                                .flatten()
                        } else {
                            None
                        };
                        match handle
                            .authenticate_publickey_with(user, key, hash, &mut agent)
                            .await
                        {
                            Ok(r) if r.success() => return Ok(()),
                            _ => tried.push(format!("agent key {fp}")),
                        }
                    }
                }
            }
        }
        if tried.is_empty() {
            return Err(format!(
                "{user}@{address}: no key to log in with: set ssh.key, load a key with ssh-add, \
                 or create ~/.ssh/id_ed25519"
            ));
        }
        Err(format!(
            "{user}@{address}: key refused (tried {}); add the public key to \
             ~{user}/.ssh/authorized_keys there, or set ssh.key",
            tried.join(", ")
        ))
    }

    /// A channel slot and a session channel, reconnecting once when the connection is lost.
    async fn session(&self) -> Result<Open, HostError> {
        let mut again = true;
        loop {
            let conn = self.conn().await?;
            let permit = conn
                .channels
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| self.fail("the connection is closing".to_string()))?;
            match conn.handle.channel_open_session().await {
                Ok(ch) => {
                    let (read, write) = ch.split();
                    return Ok(Open {
                        read,
                        write: Some(write),
                        permit: Some(permit),
                    });
                }
                Err(e) => {
                    if conn.handle.is_closed() {
                        self.drop_conn(&conn).await;
                    }
                    if !again || !conn.handle.is_closed() {
                        return Err(
                            self.fail(format!("cannot open an SSH session: {}", russh_reason(&e)))
                        );
                    }
                    again = false;
                }
            }
        }
    }

    /// The command line the remote shell gets: `args` (program first), through sudo when
    /// the host says so, through the kill wrapper when `kill_on_close`.
    fn remote_line(&self, args: Vec<String>, kill_on_close: bool) -> String {
        let mut words: Vec<String> = Vec::new();
        if self.target.sudo {
            words.extend(["sudo", "-n", "--"].map(String::from));
        }
        if kill_on_close {
            words.extend(
                ["sh", "-c", KILL_WRAPPER, "moosectl-run"]
                    .iter()
                    .map(|s| s.to_string()),
            );
        }
        words.extend(args);
        let (program, rest) = words.split_first().expect("a program");
        Command {
            program: PathBuf::from(program),
            args: rest.to_vec(),
        }
        .shell_line()
    }

    /// Runs a script with `sh -c` (through sudo when needed) and arguments.
    fn script_line(&self, script: &str, args: &[String], kill_on_close: bool) -> String {
        let mut v = vec![
            "sh".to_string(),
            "-c".to_string(),
            script.to_string(),
            "moosectl".to_string(),
        ];
        v.extend(args.iter().cloned());
        self.remote_line(v, kill_on_close)
    }

    /// Starts `line` on a new channel.
    async fn start(&self, line: &str) -> Result<Open, HostError> {
        let open = self.session().await?;
        open.writer()
            .exec(true, line.as_bytes().to_vec())
            .await
            .map_err(|e| self.fail(format!("cannot start a command: {}", russh_reason(&e))))?;
        Ok(open)
    }

    /// Runs `line` to its end, feeding `input` (then EOF) when given; the whole standard
    /// output, the last lines of standard error and the exit status.
    async fn exec_collect(
        &self,
        line: &str,
        input: Option<&[u8]>,
    ) -> Result<(Vec<u8>, Vec<String>, Option<u32>), HostError> {
        let mut open = self.start(line).await?;
        let w = open.write.as_ref().expect("write half");
        let write = async {
            if let Some(data) = input {
                w.data(data).await?;
                w.eof().await?;
            }
            Ok::<(), russh::Error>(())
        };
        let mut out = Vec::new();
        let mut err_lines = Lines::default();
        let mut errs = Vec::new();
        let mut code = None;
        let mut signal = None;
        // The write half and the read half are used at once: a command may answer before
        // it has read all its input.
        let read_half = &mut open.read;
        let read = async {
            while let Some(msg) = read_half.wait().await {
                match msg {
                    ChannelMsg::Data { data } => out.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, .. } => {
                        for l in err_lines.push(&data) {
                            push_bounded(&mut errs, l, KEPT_LINES);
                        }
                    }
                    ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        signal = Some(format!("{signal_name:?}"))
                    }
                    _ => {}
                }
            }
        };
        let (w, ()) = tokio::join!(write, read);
        if let Some(l) = err_lines.finish() {
            push_bounded(&mut errs, l, KEPT_LINES);
        }
        if code.is_none() && signal.is_none() {
            if let Err(e) = w {
                return Err(self.fail(format!(
                    "the connection failed while sending data: {}",
                    russh_reason(&e)
                )));
            }
            return Err(
                self.fail("the connection was lost before the command finished".to_string())
            );
        }
        Ok((out, errs, code))
    }

    /// Runs a plain command (program and arguments) and checks that it succeeded; its
    /// standard output. For deploy scripts and facts.
    pub async fn sh(&self, script: &str, args: &[String]) -> Result<Finished, HostError> {
        let line = self.script_line(script, args, true);
        let (out, stderr, code) = self.exec_collect(&line, None).await?;
        let mut stdout = Vec::new();
        let mut lines = Lines::default();
        for l in lines.push(&out) {
            push_bounded(&mut stdout, l, KEPT_LINES);
        }
        if let Some(l) = lines.finish() {
            push_bounded(&mut stdout, l, KEPT_LINES);
        }
        Ok(Finished {
            code: code.map(|c| c as i32),
            stdout,
            stderr,
        })
    }

    /// Streams `reader` (of `len` bytes) into `path` through a temp file beside it, with
    /// `mode` and `owner`. Without `check` the temp is renamed over `path`; with it the temp
    /// stays, is checked there, and its name is returned.
    pub async fn upload<R>(
        &self,
        path: &Path,
        mut reader: R,
        len: u64,
        mode: u32,
        owner: Option<&str>,
        check: Option<Check<'_>>,
    ) -> Result<PathBuf, HostError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let suffix = self.run_id.clone();
        let mut args = vec![
            path.to_string_lossy().into_owned(),
            suffix.clone(),
            format!("{mode:o}"),
            owner.unwrap_or_default().to_string(),
        ];
        let script = match check {
            None => {
                args.push(len.to_string());
                WRITE_SCRIPT
            }
            Some(c) => {
                args.push(c.sha256.to_string());
                args.push(if c.runs { "run" } else { "" }.to_string());
                STAGE_SCRIPT
            }
        };
        let line = self.script_line(script, &args, false);
        let mut open = self.start(&line).await?;
        let mut errs = Vec::new();
        let mut err_lines = Lines::default();
        let mut code = None;
        let read_half = &mut open.read;
        let read = async {
            while let Some(msg) = read_half.wait().await {
                match msg {
                    ChannelMsg::ExtendedData { data, .. } => {
                        for l in err_lines.push(&data) {
                            push_bounded(&mut errs, l, KEPT_LINES);
                        }
                    }
                    ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                    _ => {}
                }
            }
        };
        let writer = open.write.as_ref().expect("write half");
        let write = async {
            writer.data(&mut reader).await?;
            writer.eof().await
        };
        let (w, ()) = tokio::join!(write, read);
        let dir = path.parent().unwrap_or(Path::new("/"));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{suffix}"));
        let last = errs
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .cloned()
            .unwrap_or_default();
        let staging = |reason: String| HostError::Staging {
            host: self.target.name.clone(),
            path: path.to_path_buf(),
            reason,
        };
        match code {
            Some(0) => Ok(if check.is_none() {
                path.to_path_buf()
            } else {
                tmp
            }),
            Some(41) if check.is_some() => Err(staging(format!(
                "the copy there does not have the sha256 sent ({last} there); check the disk, \
                 then deploy again"
            ))),
            Some(42) if check.is_some() => Err(staging(format!(
                "the new program does not run there ({last})"
            ))),
            Some(_) => {
                let why = if last.is_empty() {
                    "the write script failed".to_string()
                } else {
                    last
                };
                Err(self.file_error("write", path, self.sudo_hint(&why)))
            }
            None => Err(self.file_error(
                "write",
                path,
                match w {
                    Err(e) => format!("the connection failed: {}", russh_reason(&e)),
                    Ok(()) => "the connection was lost".to_string(),
                },
            )),
        }
    }

    /// Adds the fix to a permission error of a non-root login.
    fn sudo_hint(&self, why: &str) -> String {
        if self.target.user != "root" && !self.target.sudo && why.contains("Permission denied") {
            format!(
                "{why}; {} cannot write there: log in as root or set sudo = true",
                self.target.user
            )
        } else {
            why.to_string()
        }
    }
}

/// What an I/O error says, in the words of the messages.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        std::io::ErrorKind::TimedOut => "timed out".to_string(),
        _ => e.to_string(),
    }
}

fn russh_reason(e: &russh::Error) -> String {
    match e {
        russh::Error::ChannelOpenFailure(f) => format!("{f:?}").to_lowercase(),
        russh::Error::IO(io) => io_reason(io),
        e => e.to_string(),
    }
}

impl Machine for SshHost {
    fn name(&self) -> &str {
        &self.target.name
    }

    fn binary_path(&self, program: &str) -> PathBuf {
        self.target.install_dir.join(program)
    }

    fn check_binary<'a>(&'a self, program: &'a str) -> BoxFuture<'a, Result<PathBuf, HostError>> {
        Box::pin(async move {
            let path = self.binary_path(program);
            let f = self
                .sh(
                    "[ -f \"$1\" ] && [ -x \"$1\" ]",
                    &[path.to_string_lossy().into_owned()],
                )
                .await?;
            if f.success() {
                Ok(path)
            } else {
                Err(HostError::NotDeployed {
                    host: self.target.name.clone(),
                    path,
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
            let mut args = vec![cmd.program.to_string_lossy().into_owned()];
            args.extend(cmd.args.iter().cloned());
            let line = self.remote_line(args, true);
            let mut open = self.start(&line).await?;
            let (mut out, mut err) = (Lines::default(), Lines::default());
            let mut f = Finished::default();
            let mut status = None;
            let mut signal = false;
            while let Some(msg) = open.read.wait().await {
                let (got, is_err) = match msg {
                    ChannelMsg::Data { data } => (out.push(&data), false),
                    ChannelMsg::ExtendedData { data, .. } => (err.push(&data), true),
                    ChannelMsg::ExitStatus { exit_status } => {
                        status = Some(exit_status as i32);
                        continue;
                    }
                    ChannelMsg::ExitSignal { .. } => {
                        signal = true;
                        continue;
                    }
                    _ => continue,
                };
                for l in got {
                    forward(&lines, &l, is_err).await;
                    push_bounded(
                        if is_err { &mut f.stderr } else { &mut f.stdout },
                        l,
                        KEPT_LINES,
                    );
                }
            }
            if let Some(l) = out.finish() {
                forward(&lines, &l, false).await;
                push_bounded(&mut f.stdout, l, KEPT_LINES);
            }
            if let Some(l) = err.finish() {
                forward(&lines, &l, true).await;
                push_bounded(&mut f.stderr, l, KEPT_LINES);
            }
            if status.is_none() && !signal {
                return Err(self.fail(format!(
                    "the connection was lost while running {}",
                    cmd.shell_line()
                )));
            }
            f.code = status;
            let moose = cmd
                .program
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("moose-"));
            if f.code == Some(127) && moose {
                push_bounded(
                    &mut f.stderr,
                    format!("{} is missing; run moosectl deploy", cmd.program.display()),
                    KEPT_LINES,
                );
            } else if f.code == Some(1)
                && self.target.sudo
                && f.stderr
                    .iter()
                    .any(|l| l.contains("sudo: a password is required"))
            {
                push_bounded(
                    &mut f.stderr,
                    format!(
                        "sudo asks {} for a password; allow it NOPASSWD in sudoers, or log in \
                         as root",
                        self.target.user
                    ),
                    KEPT_LINES,
                );
            }
            Ok(f)
        })
    }

    fn write_file<'a>(
        &'a self,
        path: &'a Path,
        contents: &'a [u8],
        mode: u32,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        Box::pin(async move {
            self.upload(path, contents, contents.len() as u64, mode, owner, None)
                .await
                .map(|_| ())
        })
    }

    fn read_file<'a>(
        &'a self,
        path: &'a Path,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, HostError>> {
        Box::pin(async move {
            let line = self.script_line(READ_SCRIPT, &[path.to_string_lossy().into_owned()], false);
            let (out, errs, code) = self.exec_collect(&line, None).await?;
            match code {
                Some(0) => Ok(Some(out)),
                Some(NO_SUCH_FILE) => Ok(None),
                _ => Err(self.file_error(
                    "read",
                    path,
                    self.sudo_hint(errs.last().map(String::as_str).unwrap_or("cat failed")),
                )),
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
            let line = self.script_line(
                FOLLOW_SCRIPT,
                &[path.to_string_lossy().into_owned(), history.to_string()],
                true,
            );
            let mut open = self.start(&line).await?;
            let (mut out, mut err) = (Lines::default(), Lines::default());
            let mut marker: Option<bool> = None;
            loop {
                let msg = tokio::select! {
                    m = open.read.wait() => m,
                    _ = events.closed() => return Ok(()),
                };
                let Some(msg) = msg else {
                    let _ = events
                        .send(FollowEvent::Notice(format!(
                            "stopped following {}: the connection to {} ended",
                            path.display(),
                            self.target.name
                        )))
                        .await;
                    return Ok(());
                };
                match msg {
                    ChannelMsg::Data { data } => {
                        let mut got = out.push(&data);
                        if marker.is_none() && !got.is_empty() {
                            let cut = got.remove(0) == "cut";
                            marker = Some(cut);
                            if cut && !got.is_empty() {
                                got.remove(0);
                                marker = Some(false);
                            }
                        } else if marker == Some(true) && !got.is_empty() {
                            got.remove(0);
                            marker = Some(false);
                        }
                        if !got.is_empty() && events.send(FollowEvent::Lines(got)).await.is_err() {
                            return Ok(());
                        }
                    }
                    ChannelMsg::ExtendedData { data, .. } => {
                        for l in err.push(&data) {
                            let l = l.strip_prefix("tail: ").unwrap_or(&l).to_string();
                            if events.send(FollowEvent::Notice(l)).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                    _ => {}
                }
            }
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
        Box::pin(async move {
            match source {
                Source::Bytes(b) => {
                    self.upload(target, b, b.len() as u64, mode, owner, Some(check))
                        .await
                }
                Source::File(local) => {
                    let f = tokio::fs::File::open(local).await.map_err(|e| {
                        self.file_error("read", local, format!("{e} (on this machine)"))
                    })?;
                    let len = f
                        .metadata()
                        .await
                        .map_err(|e| self.file_error("read", local, e.to_string()))?
                        .len();
                    let reader = tokio::io::BufReader::with_capacity(256 * 1024, f);
                    self.upload(target, reader, len, mode, owner, Some(check))
                        .await
                }
            }
        })
    }

    fn connect(&self, port: u16) -> BoxFuture<'_, Result<Box<dyn Stream>, HostError>> {
        Box::pin(self.tunnel(self.target.address.clone(), port))
    }

    fn connect_from<'a>(
        &'a self,
        address: &'a str,
        port: u16,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Box<dyn Stream>, HostError>> {
        Box::pin(async move {
            match tokio::time::timeout(timeout, self.tunnel(address.to_string(), port)).await {
                Ok(r) => r,
                Err(_) => Err(HostError::Connect {
                    host: self.target.name.clone(),
                    address: address.to_string(),
                    port,
                    cause: std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
                }),
            }
        })
    }
}

impl SshHost {
    /// A direct-tcpip channel from this host to `address:port`.
    async fn tunnel(&self, address: String, port: u16) -> Result<Box<dyn Stream>, HostError> {
        let fail = |cause: String, kind: std::io::ErrorKind| HostError::Connect {
            host: self.target.name.clone(),
            address: address.clone(),
            port,
            cause: std::io::Error::new(kind, cause),
        };
        let mut again = true;
        loop {
            let conn = self.conn().await?;
            let permit = conn.channels.clone().acquire_owned().await.map_err(|_| {
                fail(
                    "the connection is closing".to_string(),
                    std::io::ErrorKind::Other,
                )
            })?;
            match conn
                .handle
                .channel_open_direct_tcpip(address.clone(), u32::from(port), "127.0.0.1", 0)
                .await
            {
                Ok(ch) => {
                    return Ok(Box::new(Tunnel {
                        inner: ch.into_stream(),
                        _permit: permit,
                    }) as Box<dyn Stream>)
                }
                // The connection was lost: open it again once.
                Err(_) if again && conn.handle.is_closed() => {
                    self.drop_conn(&conn).await;
                    again = false;
                }
                Err(e) => {
                    // OpenSSH answers "connect failed" for a refused or unreachable port.
                    let kind = match &e {
                        russh::Error::ChannelOpenFailure(
                            russh::ChannelOpenFailure::ConnectFailed,
                        ) => std::io::ErrorKind::ConnectionRefused,
                        _ => std::io::ErrorKind::Other,
                    };
                    return Err(fail(
                        format!(
                            "{} through the SSH tunnel from {}",
                            russh_reason(&e),
                            self.target.name
                        ),
                        kind,
                    ));
                }
            }
        }
    }
}

async fn forward(lines: &Option<mpsc::Sender<OutputLine>>, l: &str, is_err: bool) {
    if let Some(tx) = lines {
        let _ = tx
            .send(if is_err {
                OutputLine::Stderr(l.to_string())
            } else {
                OutputLine::Stdout(l.to_string())
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs [`STAGE_SCRIPT`] with `sh`, `input` on stdin: exit code, stdout, stderr.
    fn stage_script(target: &Path, input: &[u8], sha: &str, run: &str) -> (i32, String, String) {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .args(["-c", STAGE_SCRIPT, "moosectl"])
            .arg(target)
            .args(["run1", "755", "", sha, run])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    }

    #[test]
    fn stage_script_keeps_a_checked_temp_and_removes_a_bad_one() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("bin/moose-chunkserver");
        let good = b"#!/bin/sh\necho moose 1\n";
        let sha = crate::engine::deploy::hex(&sha2::Sha256::digest(good));
        let (code, out, _) = stage_script(&target, good, &sha, "run");
        assert_eq!(code, 0);
        assert_eq!(
            out,
            dir.path()
                .join("bin/.moose-chunkserver.run1")
                .display()
                .to_string()
        );
        assert!(!target.exists(), "the target is not touched");
        std::fs::remove_file(&out).unwrap();

        let (code, _, err) = stage_script(&target, good, "00", "");
        assert_eq!((code, err.as_str()), (41, sha.as_str()));
        let broken = b"#!/bin/sh\necho 'cannot load' >&2; exit 3\n";
        let sha = crate::engine::deploy::hex(&sha2::Sha256::digest(broken));
        let (code, _, err) = stage_script(&target, broken, &sha, "run");
        assert_eq!((code, err.as_str()), (42, "cannot load"));
        let left: Vec<_> = std::fs::read_dir(dir.path().join("bin")).unwrap().collect();
        assert!(left.is_empty(), "failed stages leave no temp: {left:?}");
    }

    fn host(sudo: bool) -> SshHost {
        SshHost::new(
            SshTarget {
                name: "cs1".into(),
                address: "10.0.0.11".into(),
                port: 22,
                user: "admin".into(),
                key: None,
                jump: None,
                sudo,
                install_dir: PathBuf::from("/usr/local/bin"),
            },
            Arc::new(SshOptions::default()),
        )
    }

    #[test]
    fn lines_split_across_chunks() {
        let mut l = Lines::default();
        assert_eq!(l.push(b"one\ntw"), ["one"]);
        assert!(l.push(b"o").is_empty());
        assert_eq!(l.push(b"\r\nthree\n"), ["two", "three"]);
        assert_eq!(l.push(b"tail"), Vec::<String>::new());
        assert_eq!(l.finish().as_deref(), Some("tail"));
        assert_eq!(l.finish(), None);
    }

    #[test]
    fn remote_lines_quote_and_use_sudo() {
        let plain = host(false).remote_line(vec!["echo".into(), "a b".into()], false);
        assert_eq!(plain, "echo 'a b'");
        let sudo = host(true).remote_line(vec!["id".into()], false);
        assert_eq!(sudo, "sudo -n -- id");
        let wrapped = host(true).remote_line(vec!["id".into()], true);
        assert!(wrapped.starts_with("sudo -n -- sh -c '"), "{wrapped}");
        assert!(wrapped.ends_with(" moosectl-run id"), "{wrapped}");
        assert_eq!(
            host(false).binary_path("moose-master"),
            PathBuf::from("/usr/local/bin/moose-master")
        );
    }

    /// The wrapper, run by the local `sh`: it passes the exit status and output through,
    /// and kills its child when its standard input closes.
    #[test]
    fn kill_wrapper_passes_status_and_kills_on_close() {
        use std::io::Read;
        use std::process::{Command as P, Stdio};
        let mut child = P::new("sh")
            .args(["-c", KILL_WRAPPER, "x", "sh", "-c", "echo hi; exit 7"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Standard input stays open (as a channel's does) until the command has ended.
        let stdin = child.stdin.take();
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        assert_eq!(out.status.code(), Some(7));
        assert_eq!(out.stdout, b"hi\n");
        let mut child = P::new("sh")
            .args([
                "-c",
                KILL_WRAPPER,
                "x",
                "sh",
                "-c",
                "echo started; exec sleep 30",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 8];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut first)
            .unwrap();
        assert_eq!(&first, b"started\n");
        drop(child.stdin.take());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(143), "the sleep was killed by SIGTERM");
    }
}
