//! `moosectl` end to end: the built-in single-machine inventory (with free ports and a
//! temporary state folder) started, used and stopped headless, a busy mount stopping the stop
//! plan, and the terminal UI driven through tmux. Every process and mount a test makes is
//! removed when it ends, also when it fails.

use std::fs;
use std::io::Write;

use std::process::Command;
use std::time::{Duration, Instant};

use moose_tests::console::{wait_for, Console};
use moose_tests::data::{assert_same, random_bytes};
use moose_tests::tmux::Tmux;
use serde_json::Value;

const MIB: usize = 1 << 20;

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

/// Every mount of a host appends to one log: `logs client` shows the lines of the mount the
/// inventory names, not those of another mount of the same host.
#[test]
fn logs_of_a_client_leave_out_the_other_mounts_of_its_host() {
    let c = Console::new();
    c.ok(&["start"]);
    let other = c.dir.path().join("other-mount");
    fs::create_dir(&other).expect("mkdir");
    let mounted = Command::new(moose_tests::bin_dir().join("moose-mount"))
        .arg(&other)
        .args(["-H", "127.0.0.1", "-P"])
        .arg(c.client_port.to_string())
        .output()
        .expect("run moose-mount");
    assert!(mounted.status.success(), "{mounted:?}");
    let tag = |mnt: &std::path::Path| format!(" {}: ", mnt.display());
    let (ours, theirs) = (tag(&c.mount), tag(&other));
    wait_for(
        Duration::from_secs(10),
        "the other mount's log line",
        || {
            fs::read_to_string("/var/log/moose-mount.log")
                .ok()
                .filter(|log| log.contains(&theirs))
        },
    );

    let log = c.ok(&["logs", "client", "-n", "20"]);
    assert!(log.contains(&ours), "the console's mount's lines:\n{log}");
    assert!(!log.contains(&theirs), "the other mount's lines:\n{log}");

    let unmounted = Command::new("umount").arg(&other).output().expect("umount");
    assert!(unmounted.status.success(), "{unmounted:?}");
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
