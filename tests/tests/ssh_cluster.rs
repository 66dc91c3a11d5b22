//! `moosectl` managing a cluster over real SSH: three network-namespace hosts with their own
//! OpenSSH sshd (see `moose_tests::netns`), deployed, started, used through the mount,
//! healed after a chunkserver host stops, stopped; and every bad input refused before
//! anything changes, with a message naming the host.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use moose_tests::data::{assert_same, random_bytes};
use moose_tests::netns::SshBed;
use moose_tests::tmux::Tmux;
use moose_tests::{bin_dir, fuse_available};
use serde_json::Value;

const MIB: usize = 1 << 20;

/// A cluster on a test bed, described by an inventory moosectl reads.
struct Remote {
    bed: SshBed,
    moosectl: PathBuf,
    inventory: PathBuf,
    root: PathBuf,
    mount: PathBuf,
    /// The known_hosts file moosectl is given.
    known_hosts: PathBuf,
}

/// The inventory: `roles[i]` on host `i`, chunkserver ports 9422, 9432, 9442 by host (the
/// hosts share this machine's files), everything under `root`.
fn inventory(bed: &SshBed, root: &Path, roles: &[&[&str]], ssh: &[String]) -> String {
    let net = bed.gateway.rsplit_once('.').unwrap().0.to_string();
    let mut t = format!(
        "[cluster]\nname = \"bed\"\ngoal = 2\nuser = \"root\"\ngroup = \"\"\n\
         install_dir = \"{r}/bin\"\ndata_dir = \"{r}/data\"\nconfig_dir = \"{r}/etc\"\n\
         log_dir = \"{r}/log\"\n\n",
        r = root.display()
    );
    for (i, h) in bed.hosts.iter().enumerate() {
        let quoted: Vec<String> = roles[i].iter().map(|r| format!("\"{r}\"")).collect();
        t.push_str(&format!(
            "[[hosts]]\nname = \"{}\"\naddress = \"{}\"\nssh = {}\nroles = [{}]\n\n",
            h.name,
            h.address,
            ssh[i],
            quoted.join(", ")
        ));
        if roles[i].contains(&"chunkserver") {
            t.push_str(&format!(
                "[[hosts.chunkservers]]\nport = {}\ndisks = [{{ path = \"{}/disks/{}\", limit = \"2GiB\" }}]\n\n",
                9422 + 10 * i,
                root.display(),
                h.name
            ));
        }
        if roles[i].contains(&"client") {
            t.push_str(&format!(
                "[hosts.client]\nmount = \"{}/mnt\"\n\n",
                root.display()
            ));
        }
    }
    t.push_str(&format!(
        "[[exports]]\naddress = \"{net}.0/24\"\npath = \"/\"\noptions = [\"rw\", \"alldirs\", \"maproot=0\"]\n"
    ));
    t
}

impl Remote {
    fn new(names: &[&str], roles: &[&[&str]]) -> Remote {
        if let Err(why) = fuse_available() {
            panic!("cannot run the SSH cluster tests: {why}");
        }
        let bed = SshBed::new(names).expect("test bed");
        let root = bed.dir.path().join("cluster");
        let key = bed.user_key.display().to_string();
        let ssh: Vec<String> = names
            .iter()
            .map(|_| format!("{{ key = \"{key}\" }}"))
            .collect();
        let text = inventory(&bed, &root, roles, &ssh);
        let inventory = bed.dir.path().join("cluster.toml");
        fs::write(&inventory, text).unwrap();
        let moosectl = bin_dir().join("moosectl");
        Remote {
            known_hosts: bed.known_hosts.clone(),
            mount: root.join("mnt"),
            moosectl,
            inventory,
            root,
            bed,
        }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        let mut child = Command::new(&self.moosectl)
            .arg("-i")
            .arg(&self.inventory)
            .arg("--state")
            .arg(self.bed.dir.path().join("state"))
            .arg("--known-hosts")
            .arg(&self.known_hosts)
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run moosectl");
        let start = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                return child.wait_with_output().unwrap();
            }
            if start.elapsed() > Duration::from_secs(300) {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "moosectl {args:?} did not finish within 300 s:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

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

    fn status(&self) -> Value {
        let out = self.ctl(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json is not JSON ({e}):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Waits until `f` holds for `status --json`.
    fn wait_status(&self, what: &str, limit: Duration, f: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let v = self.status();
            if f(&v) {
                return v;
            }
            assert!(
                start.elapsed() < limit,
                "waited {limit:?} for {what}; status:\n{v:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Program names running in host `i`'s namespace (sshd left out).
    fn programs(&self, i: usize) -> Vec<String> {
        let mut v: Vec<String> = self
            .bed
            .processes(i)
            .into_iter()
            .map(|(_, c)| c)
            .filter(|c| !c.starts_with("sshd"))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Chunks under goal, from the master's part of `status --json`.
fn undergoal(v: &Value) -> Option<u64> {
    let h = &v["master"]["health"];
    h["undergoal"]
        .as_u64()
        .map(|u| u + h["endangered"].as_u64().unwrap_or(0))
}

fn is_mounted(p: &Path) -> bool {
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(&*p.to_string_lossy()))
}

#[test]
fn three_hosts_deploy_start_heal_and_stop() {
    let r = Remote::new(
        &["h1", "h2", "h3"],
        &[
            &["master", "metalogger", "chunkserver"],
            &["chunkserver"],
            &["chunkserver", "client"],
        ],
    );
    // Deploy: everything is pushed; a second deploy pushes nothing.
    let dry: Value =
        serde_json::from_str(&r.ok(&["deploy", "--dry-run", "--json"])).expect("JSON plan");
    assert_eq!(dry["cluster"], "bed");
    let h3 = &dry["hosts"][2];
    assert_eq!(h3["host"], "h3");
    let programs: Vec<&str> = h3["binaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["program"].as_str().unwrap())
        .collect();
    assert_eq!(programs, ["moose-chunkserver", "moose-mount", "moose-tool"]);
    assert!(h3["binaries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["action"] == "push"));
    assert!(h3["files"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["action"] == "create"));
    assert!(!r.root.join("bin").exists(), "a dry run changes nothing");
    r.ok(&["deploy"]);
    let again: Value = serde_json::from_str(&r.ok(&["deploy", "--dry-run", "--json"])).unwrap();
    for h in again["hosts"].as_array().unwrap() {
        for b in h["binaries"].as_array().unwrap() {
            assert_eq!(b["action"], "same", "{b}");
        }
        for f in h["files"].as_array().unwrap() {
            assert_eq!(f["action"], "same", "{f}");
        }
    }

    // A new chunkserver build goes to the three hosts, and only it.
    let changed_build = r.bed.dir.path().join("changed-build");
    fs::create_dir(&changed_build).unwrap();
    let mut cs = fs::read(bin_dir().join("moose-chunkserver")).unwrap();
    cs.extend_from_slice(b"changed");
    fs::write(changed_build.join("moose-chunkserver"), &cs).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(
        changed_build.join("moose-chunkserver"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let out = r.ok(&[
        "deploy",
        "chunkserver",
        "--binaries",
        &changed_build.to_string_lossy(),
    ]);
    assert_eq!(out.matches("1 binaries: 1 pushed").count(), 3, "{out}");
    assert_eq!(fs::read(r.root.join("bin/moose-chunkserver")).unwrap(), cs);

    // A config change shows its diff under --dry-run, then applies with a backup.
    let cfg = r.root.join("etc/chunkserver-9432.cfg");
    let before = fs::read_to_string(&cfg).unwrap();
    let text = fs::read_to_string(&r.inventory).unwrap();
    fs::write(
        &r.inventory,
        text.replace(
            "limit = \"2GiB\" }]\n\n[[hosts]]\nname = \"h3\"",
            "limit = \"3GiB\" }]\n\n[[hosts]]\nname = \"h3\"",
        ),
    )
    .unwrap();
    let dry: Value = serde_json::from_str(&r.ok(&["deploy", "--dry-run", "--json"])).unwrap();
    let changed: Vec<&Value> = dry["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|h| h["files"].as_array().unwrap())
        .filter(|f| f["action"] == "update")
        .collect();
    assert_eq!(changed.len(), 1, "{dry:#}");
    let diff = changed[0]["diff"].as_str().unwrap();
    assert!(
        diff.contains("-") && diff.contains("+") && diff.contains("3GiB"),
        "{diff}"
    );
    r.ok(&["deploy"]);
    let backups: Vec<PathBuf> = fs::read_dir(r.root.join("etc/.moosectl-backup"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(backups.len(), 1);
    let hdd = r.root.join("etc/chunkserver-9432-hdd.cfg");
    assert!(fs::read_to_string(&hdd).unwrap().contains("3GiB"));
    assert!(
        fs::read_to_string(backups[0].join("chunkserver-9432-hdd.cfg"))
            .unwrap()
            .contains("2GiB")
    );
    assert_eq!(fs::read_to_string(&cfg).unwrap(), before);

    // Start: each daemon runs in its host's namespace.
    r.ok(&["start"]);
    assert_eq!(
        r.programs(0),
        ["moose-chunkserver", "moose-master", "moose-metalogger"]
    );
    assert_eq!(r.programs(1), ["moose-chunkserver"]);
    // fusermount3 is the mount's auto-unmount helper.
    let mut h3: Vec<String> = r.programs(2);
    h3.retain(|p| p != "fusermount3");
    assert_eq!(h3, ["moose-chunkserver", "moose-mount"]);
    for (pid, comm) in r.bed.processes(1) {
        if comm == "moose-chunkserver" {
            assert_eq!(SshBed::netns_of(pid), r.bed.hosts[1].netns);
        }
    }
    assert!(is_mounted(&r.mount));

    // Logs come from the hosts (a remote tail).
    let logs = r.ok(&["logs", "master", "-n", "5"]);
    assert!(!logs.trim().is_empty(), "the master's log is empty");

    // 100 MB through the mount (made over SSH in h3's namespace, seen here).
    let data = random_bytes(7, 100 * MIB);
    let file = r.mount.join("big");
    fs::write(&file, &data).unwrap();
    assert_same("100 MB read back", &fs::read(&file).unwrap(), &data);

    // One small file at goal 3: on every chunkserver, so it stays under goal while one is
    // stopped, which makes "under goal" observable however fast the goal-2 chunks heal.
    let small = r.mount.join("three-copies");
    fs::write(&small, random_bytes(8, MIB)).unwrap();
    let tool = Command::new(bin_dir().join("moose-tool"))
        .args(["setgoal", "3"])
        .arg(&small)
        .output()
        .unwrap();
    assert!(tool.status.success(), "{tool:?}");
    let v = r.wait_status("every chunk at goal", Duration::from_secs(60), |v| {
        undergoal(v) == Some(0) && v["master"]["chunks"] == 3
    });
    assert_eq!(v["ok"], true, "{v:#}");

    // A chunkserver host stops: the goal-3 chunk stays under goal (two servers are left),
    // the goal-2 chunks that had a copy there are made again on the others.
    let victim = "chunkserver@h2";
    r.ok(&["stop", victim]);
    // Only the goal-3 chunk stays under goal: the goal-2 chunks are made again.
    r.wait_status("goal-2 chunks made again", Duration::from_secs(120), |v| {
        undergoal(v) == Some(1)
    });
    r.ok(&["start", victim]);
    let v = r.wait_status("all back, healthy", Duration::from_secs(60), |v| {
        undergoal(v) == Some(0) && v["ok"] == true
    });
    assert_eq!(v["ok"], true);
    assert_same(
        "100 MB read back after healing",
        &fs::read(&file).unwrap(),
        &data,
    );

    // The master's client port closed to the console: status goes through h1's SSH tunnel.
    r.bed
        .block_from_console(&r.bed.hosts[0].address, 9421)
        .unwrap();
    assert!(std::net::TcpStream::connect_timeout(
        &format!("{}:9421", r.bed.hosts[0].address).parse().unwrap(),
        Duration::from_secs(1)
    )
    .is_err());
    let v = r.status();
    assert_eq!(v["ok"], true, "{v:#}");
    assert!(v["master"]["chunks"].as_u64().is_some(), "{v:#}");

    // A host whose port 22 drops packets reads unreachable; the others still answer.
    r.bed
        .nft_in_host(1, "table inet drop22 {\n chain input_drop {\n type filter hook input priority 0;\n tcp dport 22 drop\n }\n}\n")
        .unwrap();
    let out = r.ctl(&["--connect-timeout", "2", "status", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v.to_string();
    assert!(text.contains("unreachable: h2"), "{v:#}");
    assert!(v["master"]["chunks"].as_u64().is_some(), "{v:#}");
    r.bed
        .in_host(1, &["nft", "delete", "table", "inet", "drop22"])
        .unwrap();

    // Stop leaves no daemon and no mount.
    r.ok(&["stop"]);
    for i in 0..3 {
        assert_eq!(r.programs(i), Vec::<String>::new(), "host {i} after stop");
    }
    assert!(!is_mounted(&r.mount));
}

/// `moosectl deploy` refused before anything changes, exit 1, the message naming the host.
fn refused(r: &Remote, args: &[&str], want: &str) {
    let out = r.ctl(args);
    // deploy says it on standard error, start in its progress on standard output.
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: expected {want:?} in:\n{err}");
    for d in ["bin", "etc", "data", "disks"] {
        assert!(!r.root.join(d).exists(), "{args:?} changed {d} ({err})");
    }
}

#[test]
fn bad_input_is_refused_before_any_change() {
    let mut r = Remote::new(
        &["h1", "h2"],
        &[&["master", "chunkserver"], &["chunkserver"]],
    );
    let a2 = r.bed.hosts[1].address.clone();
    let good_inventory = fs::read_to_string(&r.inventory).unwrap();
    let bed_key = r.bed.user_key.display().to_string();
    let h2_ssh = |text: &str, ssh: &str| {
        let key = &bed_key;
        let needle = format!("name = \"h2\"\naddress = \"{a2}\"\nssh = {{ key = \"{key}\" }}");
        assert!(text.contains(&needle));
        text.replace(
            &needle,
            &format!("name = \"h2\"\naddress = \"{a2}\"\nssh = {ssh}"),
        )
    };

    // Unknown host key of h2.
    let only_h1 = r.bed.dir.path().join("known_only_h1");
    fs::write(
        &only_h1,
        format!("{} {}\n", r.bed.hosts[0].address, r.bed.hosts[0].host_key),
    )
    .unwrap();
    r.known_hosts = only_h1.clone();
    refused(
        &r,
        &["deploy"],
        &format!("h2: unknown host key of {a2}: ssh-ed25519 SHA256:"),
    );
    assert_eq!(fs::read_to_string(&only_h1).unwrap().lines().count(), 1);
    // start's deploy stage checks every host first too.
    refused(&r, &["start"], &format!("h2: unknown host key of {a2}"));

    // Changed host key of h2 (it has h1's key on record), line 2 of the file.
    let changed = r.bed.dir.path().join("known_changed");
    fs::write(
        &changed,
        format!(
            "{} {}\n{a2} {}\n",
            r.bed.hosts[0].address, r.bed.hosts[0].host_key, r.bed.hosts[0].host_key
        ),
    )
    .unwrap();
    r.known_hosts = changed.clone();
    refused(
        &r,
        &["deploy", "--accept-new-host-keys"],
        &format!("h2: host key of h2 changed: {a2} now offers ssh-ed25519 SHA256:"),
    );
    refused(
        &r,
        &["deploy"],
        &format!("{}:2 has ssh-ed25519", changed.display()),
    );
    r.known_hosts = r.bed.known_hosts.clone();

    // A user key h2 refuses.
    let other = r.bed.dir.path().join("other_key");
    let k = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(k.status.success());
    fs::write(
        &r.inventory,
        h2_ssh(
            &good_inventory,
            &format!("{{ key = \"{}\" }}", other.display()),
        ),
    )
    .unwrap();
    refused(
        &r,
        &["deploy"],
        &format!("h2: root@{a2}: key refused (tried {})", other.display()),
    );

    // A closed port.
    let key = r.bed.user_key.display().to_string();
    fs::write(
        &r.inventory,
        h2_ssh(
            &good_inventory,
            &format!("{{ key = \"{key}\", port = 2222 }}"),
        ),
    )
    .unwrap();
    refused(
        &r,
        &["deploy"],
        &format!("h2: cannot reach {a2}:2222: connection refused"),
    );

    // A non-root login without sudo.
    r.bed.add_user("mtdeploy").unwrap();
    fs::write(
        &r.inventory,
        h2_ssh(
            &good_inventory,
            &format!("{{ key = \"{key}\", user = \"mtdeploy\" }}"),
        ),
    )
    .unwrap();
    refused(
        &r,
        &["deploy"],
        &format!(
            "h2: mtdeploy cannot write {}; log in as root or set sudo = true",
            r.root.join("bin").display()
        ),
    );

    // A build for another machine.
    fs::write(&r.inventory, &good_inventory).unwrap();
    let other_arch = r.bed.dir.path().join("aarch64-build");
    fs::create_dir(&other_arch).unwrap();
    for p in [
        "moose-master",
        "moose-metalogger",
        "moose-mount",
        "moose-tool",
    ] {
        std::os::unix::fs::symlink(bin_dir().join(p), other_arch.join(p)).unwrap();
    }
    let mut cs = fs::read(bin_dir().join("moose-chunkserver")).unwrap();
    cs[18..20].copy_from_slice(&0xb7u16.to_le_bytes());
    fs::write(other_arch.join("moose-chunkserver"), cs).unwrap();
    let arch = String::from_utf8_lossy(&Command::new("uname").arg("-m").output().unwrap().stdout)
        .trim()
        .to_string();
    refused(
        &r,
        &["deploy", "--binaries", &other_arch.to_string_lossy()],
        &format!("h2: the build is aarch64 but h2 is {arch}"),
    );

    // A host dropping packets: the connect timeout.
    r.bed
        .nft_in_host(1, "table inet drop22 {\n chain input_drop {\n type filter hook input priority 0;\n tcp dport 22 drop\n }\n}\n")
        .unwrap();
    refused(
        &r,
        &["--connect-timeout", "2", "deploy"],
        &format!("h2: cannot reach {a2}:22: timed out after 2 s"),
    );
    r.bed
        .in_host(1, &["nft", "delete", "table", "inet", "drop22"])
        .unwrap();

    // The same inventory and files deploy once the input is right.
    r.ok(&["deploy"]);
    assert!(r.root.join("bin/moose-chunkserver").exists());
}

/// The state column of a Servers row `HOST ROLE INSTANCE STATE ...`.
fn state_of(screen: &str, host: &str, instance: &str) -> Option<String> {
    screen.lines().find_map(|l| {
        let t: Vec<&str> = l
            .split_whitespace()
            .map(|w| w.trim_matches(['│', '▶']))
            .filter(|w| !w.is_empty())
            .collect();
        (t.len() > 3 && t[0] == host && t[2] == instance).then(|| t[3].to_string())
    })
}

/// The header's `undergoal N`.
fn undergoal_shown(screen: &str) -> Option<u64> {
    let l = screen.lines().next()?;
    let i = l.find("undergoal ")?;
    l[i + 10..].split_whitespace().next()?.parse().ok()
}

#[test]
fn terminal_ui_shows_every_host_and_follows_their_logs() {
    let r = Remote::new(
        &["h1", "h2", "h3"],
        &[
            &["master", "metalogger", "chunkserver"],
            &["chunkserver"],
            &["chunkserver", "client"],
        ],
    );
    r.ok(&["start"]);
    // A goal-3 file: under goal while any chunkserver is stopped.
    let small = r.mount.join("three-copies");
    fs::write(&small, random_bytes(9, MIB)).unwrap();
    let tool = Command::new(bin_dir().join("moose-tool"))
        .args(["setgoal", "3"])
        .arg(&small)
        .output()
        .unwrap();
    assert!(tool.status.success(), "{tool:?}");

    // The console's known_hosts lacks h2: it asks, Cancel focused; Trust adds the key.
    let tui_known = r.bed.dir.path().join("tui_known_hosts");
    let without_h2: String = fs::read_to_string(&r.known_hosts)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with(&format!("{} ", r.bed.hosts[1].address)))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&tui_known, without_h2).unwrap();
    let command = format!(
        "env RUST_BACKTRACE=0 SSH_AUTH_SOCK= {} -i {} --state {} --known-hosts {} --connect-timeout 2",
        r.moosectl.display(),
        r.inventory.display(),
        r.bed.dir.path().join("state").display(),
        tui_known.display()
    );
    let tmux = Tmux::start("moosectl-ssh-test", 180, &command);
    let rows = [
        ("h1", "master", "running"),
        ("h1", "metalogger", "running"),
        ("h1", "chunkserver-9422", "running"),
        ("h2", "chunkserver-9432", "running"),
        ("h3", "chunkserver-9442", "running"),
        ("h3", "client", "mounted"),
    ];
    tmux.wait(Duration::from_secs(30), "the host key question", |s| {
        s.contains("Trust the host key of h2?")
    });
    tmux.keys(&["Tab", "Enter"]);
    tmux.keys(&["2"]);
    tmux.wait(Duration::from_secs(60), "every host's rows", |s| {
        rows.iter()
            .all(|(h, i, st)| state_of(s, h, i).as_deref() == Some(*st))
            && undergoal_shown(s) == Some(0)
    });

    // The Logs pane follows every log with a remote tail.
    tmux.keys(&["5"]);
    let start = Instant::now();
    while (0..3)
        .map(|i| r.programs(i).iter().filter(|p| *p == "tail").count())
        .sum::<usize>()
        == 0
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no remote tail started"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A chunkserver host stops: undergoal rises in the header, then goes back to 0.
    tmux.keys(&["2"]);
    r.ok(&["stop", "chunkserver@h2"]);
    tmux.wait(Duration::from_secs(30), "undergoal above 0", |s| {
        undergoal_shown(s).is_some_and(|u| u > 0)
    });
    r.ok(&["start", "chunkserver@h2"]);
    tmux.wait(Duration::from_secs(90), "undergoal back to 0", |s| {
        undergoal_shown(s) == Some(0)
            && state_of(s, "h2", "chunkserver-9432").as_deref() == Some("running")
    });

    // A host whose port 22 drops packets reads unreachable; the others keep updating.
    r.bed
        .nft_in_host(1, "table inet drop22 {\n chain input_drop {\n type filter hook input priority 0;\n tcp dport 22 drop\n }\n}\n")
        .unwrap();
    let s = tmux.wait(Duration::from_secs(30), "h2 unreachable", |s| {
        state_of(s, "h2", "chunkserver-9432").as_deref() == Some("unreachable")
    });
    assert_eq!(
        state_of(&s, "h1", "master").as_deref(),
        Some("running"),
        "{s}"
    );
    r.bed
        .in_host(1, &["nft", "delete", "table", "inet", "drop22"])
        .unwrap();

    assert_eq!(
        fs::read_to_string(&tui_known).unwrap().lines().count(),
        3,
        "h2's key was added"
    );

    // Quitting leaves no remote tail.
    tmux.keys(&["q"]);
    let start = Instant::now();
    while tmux.alive() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!tmux.alive(), "the console did not quit");
    let start = Instant::now();
    while (0..3).any(|i| r.programs(i).iter().any(|p| p == "tail")) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "a remote tail is left after quitting"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    r.ok(&["stop"]);
}

/// The figures of docs/console.md, run by `bench/deploy.sh` (a release build, `--ignored
/// --nocapture`); printed, never compared: the hosts share this machine's cores and disk.
/// Each figure is the best of `MOOSE_BENCH_RUNS` (default 3) runs.
#[test]
#[ignore = "a benchmark: run bench/deploy.sh"]
fn bench_deploy_and_start() {
    let runs: usize = std::env::var("MOOSE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let best =
        |mut f: Box<dyn FnMut() -> f64 + '_>| (0..runs).map(|_| f()).fold(f64::MAX, f64::min);
    let timed = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    let cs = bin_dir().join("moose-chunkserver");
    let cs_mb = fs::metadata(&cs).unwrap().len() as f64 / 1e6;
    let three = Remote::new(
        &["b1", "b2", "b3"],
        &[
            &["master", "metalogger", "chunkserver"],
            &["chunkserver"],
            &["chunkserver", "client"],
        ],
    );
    let ssh = |host: &SshBed, args: &[String]| {
        let out = Command::new(args[0].as_str())
            .args(["-q", "-i"])
            .arg(&host.user_key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", host.known_hosts.display()))
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    let first = &three.bed.hosts[0].address;
    // What one command costs there: the login shell starting (its rc files) and exiting.
    let one_command = best(Box::new(|| {
        timed(&mut || {
            ssh(
                &three.bed,
                &["ssh".into(), format!("root@{first}"), "true".into()],
            )
        })
    }));
    let scp = best(Box::new(|| {
        timed(&mut || {
            ssh(
                &three.bed,
                &[
                    "scp".into(),
                    "-O".into(),
                    cs.display().to_string(),
                    format!("root@{first}:{}/scp-copy", three.bed.dir.path().display()),
                ],
            )
        })
    }));
    // OpenSSH's own floor for 3 hosts: the same file streamed to the three at once.
    let floor3 = best(Box::new(|| {
        timed(&mut || {
            let children: Vec<_> = three
                .bed
                .hosts
                .iter()
                .map(|h| {
                    Command::new("ssh")
                        .args(["-q", "-i"])
                        .arg(&three.bed.user_key)
                        .arg("-o")
                        .arg(format!(
                            "UserKnownHostsFile={}",
                            three.bed.known_hosts.display()
                        ))
                        .arg(format!("root@{}", h.address))
                        .arg(format!(
                            "cat > {}/ssh-copy-{}",
                            three.bed.dir.path().display(),
                            h.name
                        ))
                        .stdin(fs::File::open(&cs).unwrap())
                        .spawn()
                        .unwrap()
                })
                .collect();
            for mut c in children {
                assert!(c.wait().unwrap().success());
            }
        })
    }));
    three.ok(&["deploy"]);
    let changed = three.bed.dir.path().join("changed-build");
    fs::create_dir(&changed).unwrap();
    let mut n = 0;
    let push3 = best(Box::new(|| {
        n += 1;
        let mut bytes = fs::read(&cs).unwrap();
        bytes.extend_from_slice(format!("changed {n}").as_bytes());
        fs::write(changed.join("moose-chunkserver"), bytes).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(
            changed.join("moose-chunkserver"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let dir = changed.display().to_string();
        timed(&mut || {
            three.ok(&["deploy", "chunkserver", "--binaries", &dir]);
        })
    }));
    three.ok(&["deploy"]);
    let start3 = best(Box::new(|| {
        let t = timed(&mut || {
            three.ok(&["start"]);
        });
        three.ok(&["stop"]);
        t
    }));
    drop(three);

    let full_deploy = |names: &[&str]| {
        let mut roles: Vec<&[&str]> = vec![&["master", "metalogger", "chunkserver"]];
        roles.extend(std::iter::repeat_n(&["chunkserver"][..], names.len() - 1));
        let r = Remote::new(names, &roles);
        let secs = best(Box::new(|| {
            let t = timed(&mut || {
                r.ok(&["deploy"]);
            });
            // The next run pushes everything again.
            fs::remove_dir_all(r.root.join("bin")).unwrap();
            t
        }));
        (r, secs)
    };
    let (_, one) = full_deploy(&["m0"]);
    let ten: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let ten: Vec<&str> = ten.iter().map(String::as_str).collect();
    let (_, all) = full_deploy(&ten);
    let (four, _) = full_deploy(&["m0", "m1", "m2", "m3"]);
    four.ok(&["deploy"]);
    let start4 = best(Box::new(|| {
        let t = timed(&mut || {
            four.ok(&["start"]);
        });
        four.ok(&["stop"]);
        t
    }));
    println!(
        "| one SSH command (`ssh host true`: login shell start and exit) | {one_command:.2} s |"
    );
    println!("| `scp -O` of moose-chunkserver ({cs_mb:.1} MB) to 1 host | {scp:.2} s |");
    println!(
        "| `ssh host 'cat > file'` of it to 3 hosts at once (OpenSSH alone) | {floor3:.2} s |"
    );
    println!(
        "| `deploy chunkserver` of a new build to 3 hosts | {push3:.2} s ({:.1}x scp) |",
        push3 / scp
    );
    println!("| full deploy, 1 host (master+metalogger+chunkserver) | {one:.2} s |");
    println!(
        "| full deploy, 10 hosts (that host and 9 chunkserver hosts) | {all:.2} s ({:.1}x 1 host) |",
        all / one
    );
    println!("| `start` to all gates green, 3 hosts | {start3:.2} s |");
    println!("| `start` to all gates green, 4 hosts | {start4:.2} s |");
}
