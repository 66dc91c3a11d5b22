//! `moosectl doctor` end to end on real daemons: a clean cluster has nothing to report, and
//! each pitfall made on purpose (a root-owned data folder or lockfile, a foreign mount on the
//! mount point, an exports line removed, the master's name missing from /etc/hosts) is found,
//! explained, and where safe fixed by `--fix --yes`; full chunkservers are named with the trash
//! that keeps their space. Every process, mount and namespace a test makes is removed when it
//! ends, also when it fails.

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use moose_tests::console::{wait_for, Console};
use serde_json::Value;

/// `moosectl doctor --json ARGS...`: the report and whether it exited 0.
fn doctor(c: &Console, args: &[&str]) -> (bool, Value) {
    let mut all = vec!["doctor", "--json"];
    all.extend_from_slice(args);
    parse(c.ctl_within(&all, Duration::from_secs(120)), &all)
}

fn parse(out: Output, args: &[&str]) -> (bool, Value) {
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "moosectl {args:?} did not print JSON ({e}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

/// Results of `check` with `status`.
fn results<'a>(report: &'a Value, check: &str, status: &str) -> Vec<&'a Value> {
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["check"] == check && r["status"] == status)
        .collect()
}

/// Fails with the whole report unless nothing is a warning or an error.
fn assert_clean(report: &Value, when: &str) {
    let bad: Vec<&Value> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["status"] == "warning" || r["status"] == "error")
        .collect();
    assert!(bad.is_empty(), "{when}: doctor found {bad:#?}");
    assert_eq!(report["ok"], true, "{when}: {report:#}");
}

/// The cluster run as `nobody`, its state folder reachable by that user.
fn as_nobody() -> Console {
    let c = Console::edited(|t| t.replace("user = \"root\"", "user = \"nobody\""));
    fs::set_permissions(c.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    c
}

fn nobody() -> (u32, u32) {
    let u = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    (u.uid.as_raw(), u.gid.as_raw())
}

fn owner(p: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p).expect("stat").uid()
}

#[test]
fn clean_cluster_stopped_and_running_has_no_warning_or_error() {
    let c = Console::new();
    let (ok, r) = doctor(&c, &[]);
    assert!(ok, "{r:#}");
    assert_clean(&r, "stopped");
    for key in ["cluster", "inventory", "counts", "elapsed_ms"] {
        assert!(r.get(key).is_some(), "no {key} in {r:#}");
    }
    c.ok(&["start"]);
    let (ok, r) = doctor(&c, &[]);
    assert!(ok, "{r:#}");
    assert_clean(&r, "running");
    // ok results keep their evidence: the exports line that admits the client.
    let admitted = results(&r, "exports", "ok");
    assert!(
        admitted.iter().any(|x| x["evidence"][0]
            .as_str()
            .unwrap_or("")
            .ends_with("127.0.0.0/8 / rw,alldirs,maproot=0")),
        "{admitted:#?}"
    );
    assert!(!results(&r, "mount-point", "ok").is_empty(), "{r:#}");
    // The port checks' handshakes are not something for the admin to worry about.
    let log = fs::read_to_string(c.state.join("data/master/moose-master.log")).unwrap();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && !l.contains("CREATING A NEW, EMPTY FILE SYSTEM"))
        .collect();
    assert!(warned.is_empty(), "the master warned: {warned:#?}");
    c.ok(&["stop"]);
    c.assert_all_gone();
}

#[test]
fn root_owned_data_path_is_an_error_and_fix_chowns_it() {
    let c = as_nobody();
    let data = c.state.join("data/master");
    fs::create_dir_all(&data).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, r) = doctor(&c, &[]);
    assert!(!ok, "{r:#}");
    let errors = results(&r, "data-path", "error");
    let fix = format!("chown -R nobody:nogroup {}", data.display());
    assert!(
        errors
            .iter()
            .any(|e| e["fix"] == fix.as_str() && e["safe_fix"] == true),
        "no error with `{fix}`: {r:#}"
    );
    // Without a terminal and without --yes nothing changes.
    let (_, r) = doctor(&c, &["--fix"]);
    assert_eq!(owner(&data), 0, "{r:#}");
    let (ok, r) = doctor(&c, &["--fix", "--yes"]);
    assert_eq!(owner(&data), nobody().0, "{r:#}");
    assert!(
        r["fixes"].as_array().is_some_and(|f| f
            .iter()
            .any(|x| x["fix"] == fix.as_str() && x["applied"] == true)),
        "{r:#}"
    );
    assert!(results(&r, "data-path", "error").is_empty(), "{r:#}");
    assert!(ok, "{r:#}");
}

#[test]
fn root_owned_lockfile_fails_start_until_fixed() {
    let c = as_nobody();
    let data = c.state.join("data/master");
    fs::create_dir_all(&data).unwrap();
    let (uid, gid) = nobody();
    chown(&data, Some(uid), Some(gid)).unwrap();
    let lock = data.join(".moose-master.lock");
    fs::write(&lock, "").unwrap();
    let (ok, r) = doctor(&c, &[]);
    assert!(!ok, "{r:#}");
    let e = results(&r, "lockfile", "error");
    assert!(
        e.iter()
            .any(|x| x["summary"].as_str().unwrap().contains("EACCES")),
        "{r:#}"
    );
    let start = c.ctl(&["start", "master"]);
    assert!(
        !start.status.success(),
        "start succeeded with a root-owned lockfile"
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&start.stdout),
        String::from_utf8_lossy(&start.stderr)
    );
    assert!(
        said.contains("chown"),
        "start's failure does not say chown:\n{said}"
    );
    let (_, r) = doctor(&c, &["--fix", "--yes"]);
    assert_eq!(owner(&lock), uid, "{r:#}");
    c.ok(&["start", "master"]);
    c.ok(&["stop", "master"]);
    c.assert_all_gone();
}

/// A tmpfs on the mount point, removed when dropped.
struct Tmpfs<'a>(&'a Path);

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).output();
    }
}

#[test]
fn foreign_mount_on_the_mount_point_is_an_error() {
    let c = Console::new();
    fs::create_dir_all(&c.mount).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "doctor-test"])
        .arg(&c.mount)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount tmpfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _tmpfs = Tmpfs(&c.mount);
    let (ok, r) = doctor(&c, &[]);
    assert!(!ok, "{r:#}");
    let e = results(&r, "mount-point", "error");
    assert_eq!(e.len(), 1, "{r:#}");
    assert!(
        e[0]["summary"]
            .as_str()
            .unwrap()
            .contains("foreign tmpfs mount"),
        "{r:#}"
    );
    assert_eq!(
        e[0]["fix"],
        format!("umount {}", c.mount.display()).as_str()
    );
}

#[test]
fn removed_exports_line_is_the_mounts_refusal() {
    let c = Console::new();
    c.ok(&["start"]);
    let file = c.state.join("etc/master-exports.cfg");
    fs::write(&file, "10.9.9.9 / rw\n").unwrap();
    // A local host runs the binaries of the build.
    let reload = Command::new(moose_tests::bin_dir().join("moose-master"))
        .args(["-c"])
        .arg(c.state.join("etc/master.cfg"))
        .arg("reload")
        .output()
        .unwrap();
    assert!(
        reload.status.success(),
        "reload: {}",
        String::from_utf8_lossy(&reload.stderr)
    );
    let (ok, r) = doctor(&c, &[]);
    assert!(!ok, "{r:#}");
    let e = results(&r, "exports", "error");
    assert_eq!(e.len(), 1, "{r:#}");
    let summary = e[0]["summary"].as_str().unwrap();
    assert!(
        summary.contains("no exports line admits 127.0.0.1"),
        "{summary}"
    );
    assert!(
        e[0]["fix"]
            .as_str()
            .unwrap()
            .contains("address = \"127.0.0.1\""),
        "{r:#}"
    );
    // The mount hears the same refusal from the master.
    let mnt = c.dir.path().join("second");
    fs::create_dir_all(&mnt).unwrap();
    let port = {
        let inv = fs::read_to_string(&c.inventory).unwrap();
        inv.lines()
            .find_map(|l| l.strip_prefix("master_client = ").map(str::to_string))
            .unwrap()
    };
    let mount = Command::new(moose_tests::bin_dir().join("moose-mount"))
        .arg(&mnt)
        .args(["-H", "127.0.0.1", "-P", &port])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&mount.stderr);
    if mount.status.success() {
        let _ = Command::new("umount").arg(&mnt).output();
        panic!("the mount was admitted after the exports line was removed");
    }
    assert!(said.contains("no exports line admits 127.0.0.1"), "{said}");
    // The file no longer is what the inventory renders.
    assert!(!results(&r, "exports", "warning").is_empty(), "{r:#}");
    c.ok(&["stop"]);
    c.assert_all_gone();
}

/// The backups `--fix` made of /etc/hosts.
fn backups() -> Vec<std::path::PathBuf> {
    fs::read_dir("/etc")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().starts_with("/etc/hosts.moosectl-"))
        .collect()
}

/// Removes, when dropped, the backups made since it was created.
struct NewBackups(Vec<std::path::PathBuf>);

impl Drop for NewBackups {
    fn drop(&mut self) {
        for b in backups() {
            if !self.0.contains(&b) {
                let _ = fs::remove_file(b);
            }
        }
    }
}

#[test]
fn master_name_missing_from_etc_hosts_is_found_and_fixed() {
    let c = Console::edited(|t| {
        t.replace(
            "address = \"127.0.0.1\"",
            "address = \"doctor-test-master\"",
        )
    });
    // A private copy of /etc/hosts, bind-mounted in a private mount namespace for moosectl
    // only: this machine's /etc/hosts is never changed.
    let hosts = c.dir.path().join("hosts");
    fs::copy("/etc/hosts", &hosts).unwrap();
    // --fix backs the file up beside it: in the real /etc, since only the file is bound.
    let _backups = NewBackups(backups());
    let run = |extra: &[&str]| {
        let mut args = vec!["doctor", "--json"];
        args.extend_from_slice(extra);
        let out = Command::new("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
            ])
            .arg(&hosts)
            .arg(&c.moosectl)
            .arg("-i")
            .arg(&c.inventory)
            .arg("--state")
            .arg(&c.state)
            .args(&args)
            .output()
            .unwrap();
        parse(out, &args)
    };
    let (ok, r) = run(&[]);
    assert!(!ok, "{r:#}");
    let e = results(&r, "name-resolution", "error");
    assert!(!e.is_empty(), "{r:#}");
    assert_eq!(
        e[0]["fix"], "echo '127.0.0.1 doctor-test-master' >> /etc/hosts",
        "{r:#}"
    );
    let (_, r) = run(&["--fix", "--yes"]);
    let text = fs::read_to_string(&hosts).unwrap();
    assert!(
        text.lines().any(|l| l == "127.0.0.1 doctor-test-master"),
        "{text}"
    );
    assert!(results(&r, "name-resolution", "error").is_empty(), "{r:#}");
    assert!(
        !fs::read_to_string("/etc/hosts")
            .unwrap()
            .contains("doctor-test-master"),
        "the machine's /etc/hosts was changed"
    );
}

/// Two network-namespace hosts over SSH: `dm` runs the master, `dc` is a client; `moosectl`
/// with the bed's key and known_hosts.
struct Bed {
    bed: moose_tests::netns::SshBed,
    inventory: std::path::PathBuf,
}

impl Bed {
    fn new() -> Bed {
        if let Err(why) = moose_tests::netns::available() {
            panic!("cannot run the network-namespace tests: {why}");
        }
        let bed = moose_tests::netns::SshBed::new(&["dm", "dc"]).expect("test bed");
        let root = bed.dir.path().join("cluster");
        let net = bed.gateway.rsplit_once('.').unwrap().0.to_string();
        let key = bed.user_key.display();
        let mut t = format!(
            "[cluster]\nname = \"bed\"\nuser = \"root\"\ngroup = \"\"\n\
             install_dir = \"{r}/bin\"\ndata_dir = \"{r}/data\"\nconfig_dir = \"{r}/etc\"\n\n",
            r = root.display()
        );
        for (h, role) in bed.hosts.iter().zip(["master", "client"]) {
            t.push_str(&format!(
                "[[hosts]]\nname = \"{}\"\naddress = \"{}\"\nssh = {{ key = \"{key}\" }}\nroles = [\"{role}\"]\n\n",
                h.name, h.address
            ));
        }
        t.push_str(&format!(
            "[hosts.client]\nmount = \"{}/mnt\"\n\n[[exports]]\naddress = \"{net}.0/24\"\npath = \"/\"\noptions = [\"rw\"]\n",
            root.display()
        ));
        let inventory = bed.dir.path().join("cluster.toml");
        fs::write(&inventory, t).unwrap();
        Bed { bed, inventory }
    }

    fn ctl(&self, args: &[&str], limit: Duration) -> Output {
        let mut child = Command::new(moose_tests::bin_dir().join("moosectl"))
            .arg("-i")
            .arg(&self.inventory)
            .arg("--state")
            .arg(self.bed.dir.path().join("state"))
            .arg("--known-hosts")
            .arg(&self.bed.known_hosts)
            .args(args)
            .env_remove("SSH_AUTH_SOCK")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run moosectl");
        let start = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > limit {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "moosectl {args:?} did not finish within {limit:?}:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    }

    /// The ports result from the client host to the master's client port.
    fn client_port(&self) -> Value {
        let args = ["doctor", "--json", "dc"];
        let (_, r) = parse(self.ctl(&args, Duration::from_secs(20)), &args);
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["check"] == "ports" && x["port"] == 9421)
            .cloned()
            .unwrap_or_else(|| panic!("no ports result for 9421: {r:#}"))
    }
}

#[test]
fn firewall_drop_and_reject_on_the_masters_client_port() {
    let mut b = Bed::new();
    let out = b.ctl(&["start", "master"], Duration::from_secs(300));
    assert!(
        out.status.success(),
        "start master: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let p = b.client_port();
    assert_eq!(p["verdict"], "open", "{p:#}");
    assert_eq!(p["status"], "ok", "{p:#}");
    let client = &b.bed.hosts[1].address;
    // DROP on the master's host: no answer, the rule quoted and its fix.
    b.bed
        .nft_in_host(0, "table inet filter {\n chain input {\n  type filter hook input priority 0;\n  tcp dport 9421 drop\n }\n}\n")
        .unwrap();
    let p = b.client_port();
    assert_eq!(p["verdict"], "filtered", "{p:#}");
    assert_eq!(p["status"], "error", "{p:#}");
    assert_eq!(p["tool"], "nft", "{p:#}");
    assert_eq!(
        p["fix"],
        format!("nft insert rule inet filter input ip saddr {client} tcp dport 9421 accept")
            .as_str(),
        "{p:#}"
    );
    // REJECT while the master listens.
    b.bed
        .in_host(0, &["nft", "delete", "table", "inet", "filter"])
        .unwrap();
    b.bed
        .nft_in_host(0, "table inet filter {\n chain input {\n  type filter hook input priority 0;\n  tcp dport 9421 reject with tcp reset\n }\n}\n")
        .unwrap();
    let p = b.client_port();
    assert_eq!(p["verdict"], "rejected", "{p:#}");
    assert_eq!(p["tool"], "nft", "{p:#}");
    // A silent host is one error and its checks are skipped.
    b.bed.stop_sshd(1);
    let args = ["doctor", "--json", "dc"];
    let (ok, r) = parse(b.ctl(&args, Duration::from_secs(20)), &args);
    assert!(!ok, "{r:#}");
    let on_dc: Vec<&Value> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["host"] == "dc")
        .collect();
    let host_errors = on_dc
        .iter()
        .filter(|x| x["check"] == "host" && x["status"] == "error")
        .count();
    assert_eq!(host_errors, 1, "{r:#}");
    assert!(
        on_dc
            .iter()
            .all(|x| x["check"] == "host" || x["status"] == "skipped"),
        "{r:#}"
    );
    assert!(on_dc.len() > 1, "{r:#}");
    let out = b.ctl(&["stop", "master"], Duration::from_secs(120));
    assert!(
        out.status.success(),
        "stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn full_chunkservers_are_named_with_the_trash_keeping_their_space() {
    let c = Console::edited(|t| {
        t.replace("limit = \"4GiB\"", "limit = \"100MiB\"")
            .replace("goal = 2", "goal = 1")
    });
    c.ok(&["start"]);
    // 28 files of 10 MiB take 280 of the 300 MiB the three disks allow (a write that finds
    // them full fails, which leaves them as full). Their removal frees nothing: the trash
    // keeps them for a day, and the doctor says so once the chunkservers report their space.
    let files: Vec<_> = (0..28).map(|n| c.mount.join(format!("f{n}"))).collect();
    for f in &files {
        let _ = write_synced(f, 10 << 20);
    }
    for f in &files {
        let _ = fs::remove_file(f);
    }
    let full = wait_for(
        Duration::from_secs(30),
        "the doctor's space verdict",
        || {
            let (_, r) = doctor(&c, &[]);
            results(&r, "space", "error")
                .into_iter()
                .chain(results(&r, "space", "warning"))
                .next()
                .cloned()
        },
    );
    let summary = full["summary"].as_str().unwrap();
    assert!(summary.contains("the trash keeps "), "{full:#}");
    assert!(
        full["fix"]
            .as_str()
            .is_some_and(|f| f.starts_with("moose-mount -m ")),
        "{full:#}"
    );
    c.ok(&["stop"]);
    c.assert_all_gone();
}

/// Writes `len` bytes to a new file at `path` and syncs it: a failure of the write-out shows.
fn write_synced(path: &Path, len: usize) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = fs::File::create(path)?;
    f.write_all(&vec![7u8; len])?;
    f.sync_all()
}
