//! Exports: who may mount what, with which rights.

use std::fs;
use std::os::unix::fs::MetadataExt;

use moose_tests::{ClusterSpec, LocalCluster};

fn start(exports: &[&str]) -> LocalCluster {
    if let Err(why) = moose_tests::fuse_available() {
        panic!("cannot run the exports tests: {why}");
    }
    LocalCluster::start(ClusterSpec {
        chunkservers: 1,
        exports: exports.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .expect("cluster starts")
}

#[test]
fn an_address_outside_every_line_is_refused_with_the_reason_and_logged() {
    let mut c = start(&["10.0.0.1 / rw"]);
    let (_, out) = c.try_mount(&[]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no exports line admits 127.0.0.1"),
        "mount said: {err}"
    );
    let log = c.master_log();
    assert!(
        log.contains("refused") && log.contains("127.0.0.1"),
        "master log names the refusal:\n{log}"
    );
}

#[test]
fn read_only_export_gives_erofs() {
    let mut c = start(&["* / ro"]);
    let mnt = c.mount().unwrap();
    let e = fs::write(mnt.join("x"), b"no").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let e = fs::create_dir(mnt.join("d")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
}

#[test]
fn maproot_maps_root_to_the_given_ids() {
    let mut c = start(&["* / rw,maproot=1234:4321"]);
    let mnt = c.mount().unwrap();
    fs::write(mnt.join("f"), b"x").unwrap();
    let m = fs::metadata(mnt.join("f")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 4321));
    // Mapped root is an ordinary user: it cannot chown to someone else.
    let e = std::os::unix::fs::chown(mnt.join("f"), Some(0), None).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
}

#[test]
fn a_wrong_password_is_refused_and_the_right_one_admitted() {
    let mut c = start(&["* / rw,password=s3cret"]);
    let (_, out) = c.try_mount(&["-o", "mfspassword=wrong"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("incorrect password"), "{err}");
    let (_, out) = c.try_mount(&[]).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password"));
    c.mount_with(&["-o", "mfspassword=s3cret"]).unwrap();
}

#[test]
fn reload_applies_changed_exports_to_new_mounts() {
    let mut c = start(&["* / ro"]);
    let ro = c.mount().unwrap();
    assert!(fs::write(ro.join("x"), b"1").is_err());
    fs::write(&c.exports_file, "* / rw,maproot=0\n").unwrap();
    let out = c.master_verb(&["reload"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    c.wait_until(
        std::time::Duration::from_secs(10),
        "exports reloaded",
        |c| Ok(c.master_log().contains("exports reloaded")),
    )
    .unwrap();
    let rw = c.mount().unwrap();
    fs::write(rw.join("x"), b"1").unwrap();
    assert_eq!(fs::read(rw.join("x")).unwrap(), b"1");
}
