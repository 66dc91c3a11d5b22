//! `moosectl` end to end: the built-in single-machine inventory (with free ports and a
//! temporary state folder) started, used and stopped headless, a busy mount stopping the stop
//! plan, and the terminal UI driven through tmux. Every process and mount a test makes is
//! removed when it ends, also when it fails.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use moose_tests::data::{assert_same, random_bytes};
use moose_tests::tmux::Tmux;
use moose_tests::{bin_dir, free_port, fuse_available};
use serde_json::Value;

/// The inventory `moosectl` uses without `-i`.
const LOCAL_TOML: &str = include_str!("../../inventory/examples/local.toml");

const MIB: usize = 1 << 20;

/// A cluster described by a temporary copy of local.toml, run by `moosectl`.
struct Console {
    dir: tempfile::TempDir,
    moosectl: PathBuf,
    inventory: PathBuf,
    state: PathBuf,
    mount: PathBuf,
    /// Data ports of the three chunkservers.
    cs_ports: [u16; 3],
}

fn need_fuse() {
    if let Err(why) = fuse_available() {
        panic!("cannot run the console tests: {why}");
    }
}

impl Console {
    fn new() -> Console {
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
        fs::write(&inventory, text).expect("write the inventory");
        Console {
            mount: state.join("mnt"),
            dir,
            moosectl,
            inventory,
            state,
            cs_ports: [cs1, cs2, cs3],
        }
    }

    /// `moosectl -i INVENTORY --state STATE ARGS...`, waiting at most `limit`.
    fn ctl_within(&self, args: &[&str], limit: Duration) -> Output {
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

    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_within(args, Duration::from_secs(180))
    }

    /// Runs moosectl and fails the test unless it succeeds; returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
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

    fn status(&self) -> (bool, Value) {
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
    /// the mount: its mount point).
    fn our_processes(&self) -> Vec<(u32, String)> {
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
            if daemon && args.iter().any(|a| a.contains(&needle)) {
                found.push((pid, args.join(" ")));
            }
        }
        found
    }

    fn mounted(&self) -> bool {
        let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mp = self.mount.to_string_lossy().into_owned();
        mounts
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(mp.as_str()))
    }

    fn log_of(&self, instance: &str) -> String {
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
    fn logs(&self) -> String {
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
    fn assert_all_gone(&self) {
        let left = self.our_processes();
        assert!(left.is_empty(), "processes left after stop: {left:#?}");
        assert!(!self.mounted(), "{} is still mounted", self.mount.display());
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if self.our_processes().is_empty() && !self.mounted() {
            return;
        }
        // The console's own stop first, then by force whatever is left.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.ctl_within(&["stop"], Duration::from_secs(60))
        }));
        if self.mounted() {
            let _ = Command::new("umount").arg("-l").arg(&self.mount).output();
        }
        for (pid, _) in self.our_processes() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
        }
    }
}

/// Polls `cond` every 200 ms until it gives `Some` or `limit` passes.
fn wait_for<T>(limit: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
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

#[test]
fn headless_start_write_status_stop() {
    let c = Console::new();

    // The plan, as JSON, in the documented order.
    let plan: Value = serde_json::from_str(&c.ok(&["plan", "start", "--json"])).expect("plan JSON");
    let titles: Vec<&str> = plan["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| s["title"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        titles,
        [
            "deploy: binaries, config files and folders",
            "start master",
            "start metaloggers",
            "start chunkservers",
            "start clients"
        ]
    );
    let stop_plan = c.ok(&["plan", "stop"]);
    assert!(stop_plan.contains("1. stop clients"), "{stop_plan}");
    assert!(stop_plan.contains("4. stop master"), "{stop_plan}");

    // Nothing runs yet: status says so and fails.
    let (ok, v) = c.status();
    assert!(!ok, "status of a stopped cluster must fail: {v:#}");
    assert!(
        v["master"]["error"]
            .as_str()
            .unwrap_or("")
            .starts_with("master not reachable"),
        "{v:#}"
    );

    let out = c.ctl(&["start"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "start failed:\n{text}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    assert!(text.contains("[5/5] start clients"), "{text}");
    assert!(text.contains("start done"), "{text}");

    // Starting again changes nothing.
    let again = c.ok(&["start"]);
    assert!(again.contains("already running"), "{again}");
    assert!(again.contains("already mounted"), "{again}");

    // Data through the mount.
    let data = random_bytes(7, 3 * MIB + 123);
    fs::write(c.mount.join("file"), &data).expect("write through the mount");
    fs::create_dir(c.mount.join("dir")).expect("mkdir through the mount");
    fs::write(c.mount.join("dir/small"), b"hello").expect("write a small file");
    let got = fs::read(c.mount.join("file")).expect("read back");
    assert_same("file", &got, &data);

    // The master's status shows the chunks.
    let v = wait_for(Duration::from_secs(30), "status to show the chunks", || {
        let (ok, v) = c.status();
        (ok && v["master"]["chunks"].as_u64() >= Some(2)).then_some(v)
    });
    assert!(v["master"]["files"].as_u64() >= Some(2), "{v:#}");
    let instances = v["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 6, "{v:#}");
    for i in instances {
        let want = if i["role"] == "client" {
            "mounted"
        } else {
            "running"
        };
        assert_eq!(i["state"], want, "{i:#}");
        assert!(i["pid"].as_u64().is_some(), "{i:#}");
    }
    let text = c.ok(&["status"]);
    assert!(text.contains("chunkservers 3 connected of 3"), "{text}");

    // Logs of a role.
    let log = c.ok(&["logs", "master", "-n", "5"]);
    assert!(!log.trim().is_empty(), "the master's log is empty");

    let out = c.ctl(&["stop"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stop failed:\n{text}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    assert!(text.contains("stop done"), "{text}");
    c.assert_all_gone();
    let (ok, v) = c.status();
    assert!(!ok, "{v:#}");
    assert!(
        v["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .all(|i| i["state"] == "stopped" || i["state"] == "not mounted"),
        "{v:#}"
    );

    // The master wrote its dump on the way out and starts again with the files.
    let out = c.ok(&["start"]);
    assert!(out.contains("start done"), "{out}");
    let got = fs::read(c.mount.join("file")).expect("read after a restart of the cluster");
    assert_same("file after restart", &got, &data);
    c.ok(&["stop"]);
    c.assert_all_gone();
}

#[test]
fn stop_names_who_holds_a_busy_mount() {
    let c = Console::new();
    c.ok(&["start"]);
    fs::create_dir(c.mount.join("work")).expect("mkdir");
    let mut held = fs::File::create(c.mount.join("work/open-file")).expect("create");
    held.write_all(b"busy").expect("write");
    let mut sleeper = Command::new("sleep")
        .arg("300")
        .current_dir(c.mount.join("work"))
        .spawn()
        .expect("start a process inside the mount");

    let out = c.ctl(&["stop"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(
        !out.status.success(),
        "stop of a busy mount must fail:\n{text}"
    );
    assert!(text.contains("is busy: held by"), "{text}");
    assert!(
        text.contains(&format!("pid {} (sleep: cwd", sleeper.id())),
        "{text}"
    );
    assert!(
        text.contains(&format!("pid {} (", std::process::id())),
        "the test process holds an open file there:\n{text}"
    );
    assert!(text.contains("the later stages were not run"), "{text}");
    // The plan stopped at the clients: the chunkservers still run.
    let (_, v) = c.status();
    let cs_running = v["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter(|i| i["role"] == "chunkserver" && i["state"] == "running")
        .count();
    assert_eq!(cs_running, 3, "{v:#}");

    drop(held);
    c.ok(&["stop"]);
    c.assert_all_gone();
}

/// The state column of a Servers row: `local ROLE INSTANCE STATE ...`.
fn state_of(screen: &str, instance: &str) -> Option<String> {
    screen.lines().find_map(|l| {
        let t: Vec<&str> = l
            .split_whitespace()
            .map(|w| w.trim_matches(['│', '▶']))
            .filter(|w| !w.is_empty())
            .collect();
        (t.len() > 3 && t[0] == "local" && t[2] == instance).then(|| t[3].to_string())
    })
}

/// The `chunks N` line of the Overview pane.
fn chunks_shown(screen: &str) -> Option<u64> {
    screen.lines().find_map(|l| {
        let mut t = l.split_whitespace();
        (t.next()? == "│chunks")
            .then(|| t.next()?.parse().ok())
            .flatten()
    })
}

#[test]
fn terminal_ui_starts_shows_and_stops_the_cluster() {
    let c = Console::new();
    let command = format!(
        "env RUST_BACKTRACE=0 {} -i {} --state {}",
        c.moosectl.display(),
        c.inventory.display(),
        c.state.display()
    );
    let tmux = Tmux::start("moosectl-test", 160, &command);
    tmux.wait(Duration::from_secs(20), "the console", |s| {
        s.contains("1 Overview")
    });

    // S starts everything; the Servers pane shows every role running.
    tmux.keys(&["2", "S"]);
    let mut instances: Vec<String> = vec!["master".into(), "metalogger".into()];
    instances.extend(c.cs_ports.iter().map(|p| format!("chunkserver-{p}")));
    let screen = tmux.wait(Duration::from_secs(90), "every role running", |s| {
        instances
            .iter()
            .all(|i| state_of(s, i).as_deref() == Some("running"))
            && state_of(s, "client").as_deref() == Some("mounted")
    });
    assert!(screen.contains("chunkservers 3/3"), "{screen}");
    let screen = tmux.wait(Duration::from_secs(30), "the start plan to finish", |s| {
        s.contains("start plan: done") || s.contains("start plan: failed")
    });
    assert!(
        screen.contains("start plan: done"),
        "{screen}\n{}",
        c.logs()
    );

    // A file through the mount changes the chunk count on the Overview pane.
    tmux.keys(&["1"]);
    let before = chunks_shown(&tmux.wait(Duration::from_secs(10), "the chunk count", |s| {
        chunks_shown(s).is_some()
    }))
    .expect("chunk count");
    fs::write(c.mount.join("tui-file"), random_bytes(3, 2 * MIB)).expect("write through the mount");
    let screen = tmux.wait(Duration::from_secs(30), "the chunk count to change", |s| {
        chunks_shown(s).is_some_and(|n| n > before)
    });
    assert!(screen.contains("files"), "{screen}");

    // X asks first, and Cancel is the default.
    tmux.keys(&["2", "X"]);
    tmux.wait(Duration::from_secs(10), "the stop dialog", |s| {
        s.contains("Stop cluster \"local\"?") && s.contains("[>Cancel<]")
    });
    tmux.keys(&["Enter"]);
    tmux.wait(Duration::from_secs(10), "the dialog to close", |s| {
        s.contains("cancelled")
    });
    assert!(
        c.mounted(),
        "Enter on the default button must not stop anything"
    );

    // X, Tab to Stop, Enter: everything stops.
    tmux.keys(&["X", "Tab", "Enter"]);
    let screen = tmux.wait(Duration::from_secs(120), "the stop plan to finish", |s| {
        s.contains("stop plan: done") || s.contains("stop plan: failed")
    });
    assert!(screen.contains("stop plan: done"), "{screen}\n{}", c.logs());
    let screen = tmux.wait(Duration::from_secs(20), "every role stopped", |s| {
        instances
            .iter()
            .all(|i| state_of(s, i).as_deref() == Some("stopped"))
    });
    assert!(!screen.contains("failed"), "{screen}");
    c.assert_all_gone();

    // q quits the console.
    tmux.keys(&["q"]);
    let start = Instant::now();
    while tmux.alive() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !tmux.alive(),
        "moosectl did not quit on q:\n{}",
        tmux.screen()
    );
}
