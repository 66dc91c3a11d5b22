//! `SshHost` against a real OpenSSH sshd in a network namespace: commands, files, follows,
//! direct-tcpip ports, the channel cap, the remote process killed when the future is
//! dropped, reconnecting after the connection is lost, and host-key and login refusals.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moose_inventory::Command;
use moose_tests::netns::SshBed;
use moosectl::engine::host::{FollowEvent, Machine, SshHost, SshOptions, SshTarget};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

fn target(bed: &SshBed, i: usize, key: &Path) -> SshTarget {
    SshTarget {
        name: bed.hosts[i].name.clone(),
        address: bed.hosts[i].address.clone(),
        port: 22,
        user: "root".into(),
        key: Some(key.to_string_lossy().into_owned()),
        jump: None,
        sudo: false,
        install_dir: PathBuf::from("/usr/local/bin"),
    }
}

fn options(known_hosts: &Path, accept: bool) -> Arc<SshOptions> {
    Arc::new(SshOptions {
        known_hosts: known_hosts.to_path_buf(),
        global_known_hosts: PathBuf::from("/nonexistent/ssh_known_hosts"),
        accept_new_host_keys: accept,
        connect_timeout: Duration::from_secs(3),
        home: None,
        unknown_keys: Default::default(),
    })
}

fn cmd(program: &str, args: &[&str]) -> Command {
    Command {
        program: program.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

fn count_in_ns(bed: &SshBed, i: usize, comm: &str) -> usize {
    bed.processes(i).iter().filter(|(_, c)| c == comm).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_files_follow_ports_and_limits() {
    let mut bed = SshBed::new(&["h1"]).expect("test bed");
    let host = SshHost::new(
        target(&bed, 0, &bed.user_key),
        options(&bed.known_hosts, false),
    );

    // Commands: output, errors and the exit status; the command runs in the namespace.
    let f = host
        .run(&cmd("sh", &["-c", "echo out; echo err >&2; exit 3"]), None)
        .await
        .unwrap();
    assert_eq!(
        (f.code, f.stdout.clone(), f.stderr.clone()),
        (Some(3), vec!["out".to_string()], vec!["err".to_string()])
    );
    let f = host
        .run(&cmd("ip", &["-o", "-4", "addr", "show", "eth0"]), None)
        .await
        .unwrap();
    assert!(f.stdout[0].contains(&bed.hosts[0].address), "{f:?}");
    let f = host
        .run(&cmd("/nonexistent/moose-master", &["-V"]), None)
        .await
        .unwrap();
    assert_eq!(f.code, Some(127));
    assert_eq!(
        f.message(),
        "/nonexistent/moose-master is missing; run moosectl deploy"
    );

    // Files: atomic write with mode, read back, missing file.
    let dir = bed.dir.path().join("files");
    let path = dir.join("sub/a.cfg");
    assert_eq!(host.read_file(&path).await.unwrap(), None);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    host.write_file(&path, &data, 0o640, Some("root:"))
        .await
        .unwrap();
    assert_eq!(host.read_file(&path).await.unwrap().unwrap(), data);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["a.cfg"], "no temporary file is left");

    // Follow: whole lines of the history, then appended lines; ends when nobody listens.
    let log = dir.join("x.log");
    std::fs::write(&log, "old 1\nold 2\nold 3\n").unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let follower = {
        let log = log.clone();
        let t = target(&bed, 0, &bed.user_key);
        let o = options(&bed.known_hosts, false);
        tokio::spawn(async move { SshHost::new(t, o).follow_file(&log, 12, tx).await })
    };
    assert_eq!(next_lines(&mut rx).await, ["old 3"]);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"new 1\n").unwrap();
    }
    assert_eq!(next_lines(&mut rx).await, ["new 1"]);
    drop(rx);
    tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    wait_until(
        || count_in_ns(&bed, 0, "tail") == 0,
        "the remote tail to end",
    )
    .await;

    // Ports: a direct-tcpip channel to the host's own sshd port gives its banner.
    let mut s = host.connect(22).await.unwrap();
    let mut banner = [0u8; 8];
    s.read_exact(&mut banner).await.unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    drop(s);
    let closed = host.connect(1).await.err().unwrap().to_string();
    assert!(
        closed.starts_with(&format!(
            "h1: cannot connect to {}:1: ",
            bed.hosts[0].address
        )),
        "{closed}"
    );

    // More commands at once than OpenSSH allows sessions on one connection: all succeed.
    let many: Vec<_> = (0..14)
        .map(|i| {
            let c = cmd("sh", &["-c", &format!("sleep 0.3; echo {i}")]);
            let h = &host;
            async move { h.run(&c, None).await }
        })
        .collect();
    let results = join_all(many).await;
    for (i, r) in results.into_iter().enumerate() {
        let f = r.unwrap();
        assert_eq!(f.stdout, [i.to_string()], "{f:?}");
    }

    // A dropped run ends its remote process.
    let long = cmd("sleep", &["3600"]);
    let _ = tokio::time::timeout(Duration::from_millis(700), host.run(&long, None)).await;
    wait_until(
        || count_in_ns(&bed, 0, "sleep") == 0,
        "the remote sleep to be killed",
    )
    .await;

    // A lost connection is opened again on next use.
    for (pid, comm) in bed.processes(0) {
        if comm.starts_with("sshd") {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    bed.stop_sshd(0);
    let e = host
        .run(&cmd("true", &[]), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("h1: "), "{e}");
    bed.start_sshd(0).unwrap();
    let start = Instant::now();
    loop {
        match host.run(&cmd("echo", &["back"]), None).await {
            Ok(f) => {
                assert_eq!(f.stdout, ["back"]);
                break;
            }
            Err(e) if start.elapsed() < Duration::from_secs(40) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("no reconnection: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_keys_and_logins_are_checked() {
    let bed = SshBed::new(&["h1"]).expect("test bed");
    let addr = bed.hosts[0].address.clone();
    let run =
        |host: SshHost| async move { host.run(&cmd("true", &[]), None).await.map(|f| f.code) };

    // Unknown key: refused with its fingerprint, nothing added.
    let empty = bed.dir.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let e = run(SshHost::new(
        target(&bed, 0, &bed.user_key),
        options(&empty, false),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with(&format!(
            "h1: unknown host key of {addr}: ssh-ed25519 SHA256:"
        )),
        "{e}"
    );
    assert!(e.contains("--accept-new-host-keys"), "{e}");
    assert_eq!(std::fs::read_to_string(&empty).unwrap(), "");

    // Accepted when asked: appended, then known.
    let r = run(SshHost::new(
        target(&bed, 0, &bed.user_key),
        options(&empty, true),
    ))
    .await;
    assert_eq!(r.unwrap(), Some(0));
    let added = std::fs::read_to_string(&empty).unwrap();
    assert_eq!(added, format!("{addr} {}\n", bed.hosts[0].host_key));
    assert_eq!(
        run(SshHost::new(
            target(&bed, 0, &bed.user_key),
            options(&empty, false)
        ))
        .await
        .unwrap(),
        Some(0)
    );

    // Changed key: always refused, with both fingerprints and file:line.
    let other = bed.dir.path().join("other_key");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success());
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let changed = bed.dir.path().join("changed_known_hosts");
    std::fs::write(
        &changed,
        format!("# first line\n{addr} {}", other_pub.trim()),
    )
    .unwrap();
    let e = run(SshHost::new(
        target(&bed, 0, &bed.user_key),
        options(&changed, true),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("h1: host key of h1 changed: "), "{e}");
    assert!(
        e.contains(&format!("{}:2 has ssh-ed25519 SHA256:", changed.display())),
        "{e}"
    );

    // Hashed entries are read too.
    let hashed = bed.dir.path().join("hashed_known_hosts");
    std::fs::copy(&bed.known_hosts, &hashed).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&hashed)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(std::fs::read_to_string(&hashed).unwrap().starts_with("|1|"));
    assert_eq!(
        run(SshHost::new(
            target(&bed, 0, &bed.user_key),
            options(&hashed, false)
        ))
        .await
        .unwrap(),
        Some(0)
    );

    // A key the host does not accept.
    let e = run(SshHost::new(
        target(&bed, 0, &other),
        options(&bed.known_hosts, false),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with(&format!(
            "h1: root@{addr}: key refused (tried {})",
            other.display()
        )),
        "{e}"
    );

    // A closed port.
    let mut t = target(&bed, 0, &bed.user_key);
    t.port = 2222;
    let e = run(SshHost::new(t, options(&bed.known_hosts, false)))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!("h1: cannot reach {addr}:2222: connection refused")
    );

    // A host dropping packets: the connect timeout.
    bed.nft_in_host(0, "table inet drop22 {\n chain input_drop {\n type filter hook input priority 0;\n tcp dport 22 drop\n }\n}\n").unwrap();
    let e = run(SshHost::new(
        target(&bed, 0, &bed.user_key),
        options(&bed.known_hosts, false),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        format!("h1: cannot reach {addr}:22: timed out after 3 s")
    );
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
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("lines within 10 s")
}

async fn wait_until(mut f: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "waited 10 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let handles: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out = Vec::new();
    // Polled together: each future is driven by the select below until all are done.
    let mut pending: Vec<Option<std::pin::Pin<Box<F>>>> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, p) in pending.iter_mut().enumerate() {
            if let Some(f) = p {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *p = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    for r in results {
        out.push(r.expect("done"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jump_host_reaches_a_host_closed_to_the_console() {
    let bed = SshBed::new(&["bastion", "inner"]).expect("test bed");
    let inner = bed.hosts[1].address.clone();
    bed.block_from_console(&inner, 22).unwrap();
    let direct = SshHost::new(
        target(&bed, 1, &bed.user_key),
        options(&bed.known_hosts, false),
    );
    let e = direct
        .run(&cmd("true", &[]), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("inner: cannot reach {inner}:22: ")),
        "{e}"
    );

    let mut t = target(&bed, 1, &bed.user_key);
    t.jump = Some(moose_inventory::Jump::parse(&format!("root@{}", bed.hosts[0].address)).unwrap());
    let host = SshHost::new(t, options(&bed.known_hosts, false));
    let f = host
        .run(&cmd("ip", &["-o", "-4", "addr", "show", "eth0"]), None)
        .await
        .unwrap();
    assert!(
        f.stdout[0].contains(&inner),
        "the command ran on inner: {f:?}"
    );
    let mut s = host.connect(22).await.unwrap();
    let mut banner = [0u8; 8];
    s.read_exact(&mut banner).await.unwrap();
    assert_eq!(&banner, b"SSH-2.0-");

    // The jump host's key is checked too.
    let only_inner = bed.dir.path().join("known_inner");
    std::fs::write(&only_inner, format!("{inner} {}\n", bed.hosts[1].host_key)).unwrap();
    let mut t = target(&bed, 1, &bed.user_key);
    t.jump = Some(moose_inventory::Jump::parse(&bed.hosts[0].address).unwrap());
    let e = SshHost::new(t, options(&only_inner, false))
        .run(&cmd("true", &[]), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "inner: unknown host key of {}: ",
            bed.hosts[0].address
        )),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sudo_runs_commands_and_writes_as_root() {
    let mut bed = SshBed::new(&["h1"]).expect("test bed");
    let user = format!("mts{}", std::process::id() % 100_000);
    bed.add_user(&user).unwrap();
    let mut t = target(&bed, 0, &bed.user_key);
    t.user = user.clone();
    let plain = SshHost::new(t.clone(), options(&bed.known_hosts, false));
    let f = plain.run(&cmd("id", &["-u"]), None).await.unwrap();
    assert_ne!(f.stdout, ["0"], "{f:?}");
    // Without sudo it cannot write a root folder; the error says what to do.
    let root_only = bed.dir.path().join("root-only");
    std::fs::create_dir(&root_only).unwrap();
    let e = plain
        .write_file(&root_only.join("f"), b"x", 0o644, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot write there: log in as root or set sudo = true"),
        "{e}"
    );

    // sudo that wants a password: refused with the fix.
    t.sudo = true;
    let host = SshHost::new(t, options(&bed.known_hosts, false));
    let f = host.run(&cmd("id", &["-u"]), None).await.unwrap();
    assert_eq!(f.code, Some(1), "{f:?}");
    assert!(
        f.message().contains("allow it NOPASSWD in sudoers"),
        "{f:?}"
    );

    bed.allow_sudo(&user).unwrap();
    let f = host.run(&cmd("id", &["-u"]), None).await.unwrap();
    assert_eq!(f.stdout, ["0"], "{f:?}");
    host.write_file(&root_only.join("f"), b"as root\n", 0o600, Some("root:"))
        .await
        .unwrap();
    assert_eq!(
        host.read_file(&root_only.join("f")).await.unwrap().unwrap(),
        b"as root\n"
    );
    // A dropped sudo run still ends its remote process.
    let _ = tokio::time::timeout(
        Duration::from_millis(700),
        host.run(&cmd("sleep", &["3599"]), None),
    )
    .await;
    wait_until(
        || bed.processes(0).iter().all(|(_, c)| c != "sleep"),
        "the remote sleep under sudo to be killed",
    )
    .await;
}
