//! `moosectl` run headless on a temporary copy of the built-in single-machine inventory (free
//! ports, a temporary state folder): every process and mount it starts is stopped when the
//! [`Console`] is dropped, also when a test fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{bin_dir, free_port, fuse_available};

/// The inventory `moosectl` uses without `-i`.
pub const LOCAL_TOML: &str = include_str!("../../inventory/examples/local.toml");

/// A cluster described by a temporary copy of local.toml, run by `moosectl`.
pub struct Console {
    pub dir: tempfile::TempDir,
    pub moosectl: PathBuf,
    pub inventory: PathBuf,
    pub state: PathBuf,
    pub mount: PathBuf,
    /// Data ports of the three chunkservers.
    pub cs_ports: [u16; 3],
    /// The master's port for clients.
    pub client_port: u16,
}

pub fn need_fuse() {
    if let Err(why) = fuse_available() {
        panic!("cannot run the console tests: {why}");
    }
}

impl Default for Console {
    fn default() -> Console {
        Console::new()
    }
}

impl Console {
    pub fn new() -> Console {
        Console::edited(|text| text)
    }

    /// The cluster of local.toml with free ports, its text changed by `edit` first (another
    /// run-as user, a host name instead of 127.0.0.1…).
    pub fn edited(edit: impl FnOnce(String) -> String) -> Console {
        need_fuse();
        let bins = bin_dir();
        let moosectl = bins.join("moosectl");
        assert!(
            moosectl.exists(),
            "{} is missing: build it first with `cargo build --workspace --bins`",
            moosectl.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("moosectl-test-")
            .tempdir()
            .expect("temporary folder");
        let state = dir.path().join("state");
        let [ml, cs, cl, cs1, cs2, cs3] = [(); 6].map(|_| free_port());
        // Every port of local.toml replaced by a free one; paths stay relative (state folder).
        let text = LOCAL_TOML
            .replace(
                "master_metalogger = 19419",
                &format!("master_metalogger = {ml}"),
            )
            .replace(
                "master_chunkserver = 19420",
                &format!("master_chunkserver = {cs}"),
            )
            .replace("master_client = 19421", &format!("master_client = {cl}"))
            .replace("chunkserver = 19422", &format!("chunkserver = {cs1}"))
            .replace("port = 19422", &format!("port = {cs1}"))
            .replace("port = 19432", &format!("port = {cs2}"))
            .replace("port = 19442", &format!("port = {cs3}"));
        for old in ["19419", "19420", "19421", "19422", "19432", "19442"] {
            assert!(
                !text.contains(old),
                "port {old} left in the inventory:\n{text}"
            );
        }
        let inventory = dir.path().join("test.toml");
        fs::write(&inventory, edit(text)).expect("write the inventory");
        Console {
            mount: state.join("mnt"),
            dir,
            moosectl,
            inventory,
            state,
            cs_ports: [cs1, cs2, cs3],
            client_port: cl,
        }
    }

    /// `moosectl -i INVENTORY --state STATE ARGS...`, waiting at most `limit`.
    pub fn ctl_within(&self, args: &[&str], limit: Duration) -> Output {
        let mut child = Command::new(&self.moosectl)
            .arg("-i")
            .arg(&self.inventory)
            .arg("--state")
            .arg(&self.state)
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run moosectl");
        let start = Instant::now();
        loop {
            if child.try_wait().expect("wait for moosectl").is_some() {
                return child.wait_with_output().expect("moosectl output");
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let out = child.wait_with_output().expect("moosectl output");
                panic!(
                    "moosectl {args:?} did not finish within {limit:?}; it printed:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_within(args, Duration::from_secs(180))
    }

    /// Runs moosectl and fails the test unless it succeeds; returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "moosectl {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn status(&self) -> (bool, Value) {
        let out = self.ctl(&["status", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json is not JSON ({e}):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.success(), v)
    }

    /// Processes whose command line names this test's folder (daemons: their config files;
    /// the mount: its mount point), but for the console's `status` queries.
    pub fn our_processes(&self) -> Vec<(u32, String)> {
        let needle = self.dir.path().to_string_lossy().into_owned();
        let me = std::process::id();
        let mut found = Vec::new();
        for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd);
            let args: Vec<&str> = cmd.split('\0').filter(|a| !a.is_empty()).collect();
            let program = args
                .first()
                .and_then(|a| Path::new(a).file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let daemon = [
                "moose-master",
                "moose-metalogger",
                "moose-chunkserver",
                "moose-mount",
            ]
            .contains(&program.as_str());
            // The console's own `status` queries come and go while it shows the cluster:
            // they are not daemons of the cluster.
            let query = args.last() == Some(&"status");
            if daemon && !query && args.iter().any(|a| a.contains(&needle)) {
                found.push((pid, args.join(" ")));
            }
        }
        found
    }

    pub fn mounted(&self) -> bool {
        let mp = self.mount.to_string_lossy().into_owned();
        self.mounts_in_folder().contains(&mp)
    }

    /// Mount points in this test's folder: the console's mount, and any a test made beside it.
    fn mounts_in_folder(&self) -> Vec<String> {
        let dir = self.dir.path().to_string_lossy().into_owned();
        fs::read_to_string("/proc/mounts")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&dir))
            .map(str::to_string)
            .collect()
    }

    pub fn log_of(&self, instance: &str) -> String {
        let p = self.state.join("data").join(instance);
        let mut out = String::new();
        for e in fs::read_dir(&p).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().ends_with(".log") {
                out.push_str(&format!("--- {}\n", e.path().display()));
                let text = fs::read_to_string(e.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                out.push_str(&lines[lines.len().saturating_sub(30)..].join("\n"));
                out.push('\n');
            }
        }
        out
    }

    /// The last lines of every daemon log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in ["master", "metalogger"] {
            out.push_str(&self.log_of(i));
        }
        for p in self.cs_ports {
            out.push_str(&self.log_of(&format!("chunkserver-{p}")));
        }
        out
    }

    /// Nothing of this cluster runs and nothing is mounted.
    pub fn assert_all_gone(&self) {
        let left = self.our_processes();
        assert!(left.is_empty(), "processes left after stop: {left:#?}");
        assert!(!self.mounted(), "{} is still mounted", self.mount.display());
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if self.our_processes().is_empty() && self.mounts_in_folder().is_empty() {
            return;
        }
        // The console's own stop first, then by force whatever is left.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.ctl_within(&["stop"], Duration::from_secs(60))
        }));
        for m in self.mounts_in_folder() {
            let _ = Command::new("umount").arg("-l").arg(m).output();
        }
        for (pid, _) in self.our_processes() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
        }
    }
}

/// Polls `cond` every 200 ms until it gives `Some` or `limit` passes.
pub fn wait_for<T>(limit: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
