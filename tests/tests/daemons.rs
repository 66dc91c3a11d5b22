//! Daemon hygiene: verbs, lockfile, run-as user, config warnings, refusing foreign metadata.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use moose_tests::{bin_dir, free_port, ClusterSpec, LocalCluster};

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin_dir().join(program))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env("MOOSE_START_TIMEOUT", "10")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A master config in a fresh folder; returns (folder, config path).
fn master_config(extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir(&data).unwrap();
    fs::write(dir.path().join("exports.cfg"), "* / rw\n").unwrap();
    let cfg = dir.path().join("master.cfg");
    fs::write(
        &cfg,
        format!(
            "DATA_PATH = {}\nEXPORTS_FILENAME = exports.cfg\nMATOML_LISTEN_HOST = 127.0.0.1\n\
             MATOML_LISTEN_PORT = {}\nMATOCS_LISTEN_HOST = 127.0.0.1\nMATOCS_LISTEN_PORT = {}\n\
             MATOCL_LISTEN_HOST = 127.0.0.1\nMATOCL_LISTEN_PORT = {}\n{extra}",
            data.display(),
            free_port(),
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    (dir, cfg)
}

#[test]
fn verbs_lockfile_and_second_instance() {
    let c = LocalCluster::start(ClusterSpec {
        chunkservers: 1,
        ..Default::default()
    })
    .unwrap();
    let cfg = c.master_cfg.to_str().unwrap();
    let (ok, status) = run("moose-master", &["-c", cfg, "status"]);
    assert!(ok, "{status}");
    let pid: i32 = status.trim().rsplit(' ').next().unwrap().parse().unwrap();
    let (ok, second) = run("moose-master", &["-c", cfg, "start"]);
    assert!(!ok);
    assert!(
        second.contains(&format!("already running (pid {pid}")),
        "{second}"
    );
    let (ok, out) = run("moose-master", &["-c", cfg, "stop"]);
    assert!(ok, "{out}");
    // `stop` returns once the process has exited.
    assert!(!moose_tests::process_running(pid as u32));
    let (ok, out) = run("moose-master", &["-c", cfg, "test"]);
    assert!(!ok);
    assert!(out.contains("is not running"), "{out}");
}

#[test]
fn a_data_path_the_working_user_cannot_write_is_named_with_the_chown_that_fixes_it() {
    let (dir, cfg) = master_config("WORKING_USER = nobody\n");
    let data = dir.path().join("data");
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, out) = run("moose-master", &["-c", &cfg, "start"]);
    assert!(!ok);
    assert!(
        out.contains(&format!("fix: chown -R nobody:nogroup {}", data.display())),
        "{out}"
    );
}

#[test]
fn an_hdd_folder_the_working_user_cannot_write_is_named_with_the_chown_that_fixes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (data, disk) = (dir.path().join("data"), dir.path().join("disk"));
    fs::create_dir(&data).unwrap();
    fs::create_dir(&disk).unwrap();
    fs::set_permissions(&disk, fs::Permissions::from_mode(0o755)).unwrap();
    // The DATA_PATH itself is fine for nobody.
    nix::unistd::chown(&data, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.path().join("hdd.cfg"), format!("{}\n", disk.display())).unwrap();
    let cfg = dir.path().join("cs.cfg");
    fs::write(
        &cfg,
        format!(
            "DATA_PATH = {}\nWORKING_USER = nobody\nHDD_CONF_FILENAME = hdd.cfg\nMASTER_HOST = 127.0.0.1\n\
             MASTER_PORT = {}\nCSSERV_LISTEN_HOST = 127.0.0.1\nCSSERV_LISTEN_PORT = {}\n",
            data.display(),
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let (ok, out) = run("moose-chunkserver", &["-c", cfg.to_str().unwrap(), "start"]);
    assert!(!ok);
    assert!(
        out.contains(&format!("chown -R nobody:nogroup {}", disk.display())),
        "{out}"
    );
}

#[test]
fn stock_moosefs_metadata_is_refused_with_the_reason() {
    let (dir, cfg) = master_config("WORKING_USER = root\n");
    fs::write(
        dir.path().join("data/metadata.mfs"),
        b"MFSM 2.0\0\0\0\0\0\0\0\0",
    )
    .unwrap();
    let (ok, out) = run("moose-master", &["-c", &cfg, "start"]);
    assert!(!ok);
    assert!(out.contains("stock MooseFS metadata"), "{out}");
}

#[test]
fn an_unknown_config_key_stops_the_start_and_a_stock_key_is_a_warning() {
    let (dir, cfg) = master_config("WORKING_USER = root\nDATA_PAHT = /elsewhere\n");
    let (ok, out) = run("moose-master", &["-c", &cfg, "start"]);
    assert!(!ok, "a typo in a key must stop the start: {out}");
    assert!(
        out.contains("master.cfg:10: unknown key DATA_PAHT (did you mean DATA_PATH?)"),
        "{out}"
    );
    assert!(
        !dir.path().join("data/metadata.mfs").exists(),
        "nothing was created"
    );

    let (dir, cfg) = master_config("WORKING_USER = root\nNICE_LEVEL = -19\n");
    let (ok, out) = run("moose-master", &["-c", &cfg, "start"]);
    assert!(ok, "{out}");
    let log = fs::read_to_string(dir.path().join("data/moose-master.log")).unwrap();
    assert!(
        log.contains("master.cfg:10: NICE_LEVEL is a stock MooseFS key"),
        "{log}"
    );
    let (ok, out) = run("moose-master", &["-c", &cfg, "stop"]);
    assert!(ok, "{out}");
}

#[test]
fn a_new_file_system_is_only_made_in_an_empty_data_path() {
    let (dir, cfg) = master_config("WORKING_USER = root\n");
    fs::write(dir.path().join("data/notes.txt"), b"not metadata").unwrap();
    let (ok, out) = run("moose-master", &["-c", &cfg, "start"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("holds no metadata") && out.contains("notes.txt"),
        "{out}"
    );
    // A failed start has ended its process and freed the lock by the time it returns.
    let (running, out) = run("moose-master", &["-c", &cfg, "status"]);
    assert!(!running && out.contains("is not running"), "{out}");
    fs::remove_file(dir.path().join("data/notes.txt")).unwrap();
    let (ok, out) = run("moose-master", &["-c", &cfg, "start"]);
    assert!(ok, "{out}");
    let log = fs::read_to_string(dir.path().join("data/moose-master.log")).unwrap();
    assert!(log.contains("CREATING A NEW, EMPTY FILE SYSTEM"), "{log}");
    let (ok, out) = run("moose-master", &["-c", &cfg, "stop"]);
    assert!(ok, "{out}");
}
