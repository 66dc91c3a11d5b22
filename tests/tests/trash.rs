//! The trash: a removed file with a trash time is kept, shown in the meta mount
//! (`moose-mount -m`), readable there, put back by `mv` into `trash/undel/` or
//! `moose-tool undelete`, freed by `rm` there or when its time is up, and it survives a
//! `kill -9` of the master and a rebuild from the metalogger.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use moose_tests::data::{assert_same, random_bytes};
use moose_tests::{ClusterSpec, LocalCluster};

const MIB: usize = 1 << 20;

/// A cluster whose exports admit meta mounts too (the `.` line), with a mount of `/`.
fn cluster(metalogger: bool) -> (LocalCluster, PathBuf) {
    if let Err(why) = moose_tests::fuse_available() {
        panic!("cannot run the trash tests: {why}");
    }
    let mut c = LocalCluster::start(ClusterSpec {
        chunkservers: 2,
        exports: vec!["* / rw,alldirs,maproot=0".into(), "* . rw".into()],
        metalogger,
        ..Default::default()
    })
    .expect("cluster starts");
    let mnt = c.mount().unwrap();
    (c, mnt)
}

/// Where a file of inode `inode` deleted from `path` shows in a meta mount.
fn trash_entry(meta: &Path, inode: u64, path: &str) -> PathBuf {
    meta.join("trash")
        .join(format!("{:03X}", inode % 4096))
        .join(format!("{inode:08X}|{}", path.replace('/', "|")))
}

fn trash_figures(c: &LocalCluster) -> (u64, u64) {
    let info = c.cluster_info().unwrap();
    (
        info["trash_files"].as_u64().unwrap(),
        info["trash_bytes"].as_u64().unwrap(),
    )
}

#[test]
fn a_removed_file_is_shown_read_restored_and_purged_through_the_meta_mount() {
    let (mut c, mnt) = cluster(false);
    fs::create_dir(mnt.join("dir")).unwrap();
    let dir = mnt.join("dir");
    let out = c
        .tool(&["settrashtime", "60", dir.to_str().unwrap()])
        .unwrap();
    assert!(out.contains("inodes with trashtime changed: 1"), "{out}");
    let data = random_bytes(15, 10 * MIB);
    let file = dir.join("file.bin");
    fs::write(&file, &data).unwrap();
    let out = c
        .tool(&["gettrashtime", "--json", file.to_str().unwrap()])
        .unwrap();
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j[0]["trash_time"], 60, "inherited from its folder: {out}");
    let inode = fs::metadata(&file).unwrap().ino();
    fs::remove_file(&file).unwrap();
    assert!(!file.exists());
    let (files, bytes) = trash_figures(&c);
    assert_eq!((files, bytes), (1, 10 * MIB as u64));

    let meta = c.mount_with(&["-m"]).unwrap();
    let entry = trash_entry(&meta, inode, "dir/file.bin");
    let listed: Vec<String> = fs::read_dir(entry.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        listed.contains(&format!("{inode:08X}|dir|file.bin")),
        "{listed:?}"
    );
    assert!(meta.join("trash/undel").is_dir());
    assert_same("read in the trash", &fs::read(&entry).unwrap(), &data);
    // Stock's flat view lists it in trash/ itself.
    let flat = c.mount_with(&["-m", "-o", "mfsflattrash"]).unwrap();
    let listed: Vec<_> = fs::read_dir(flat.join("trash"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        listed.contains(&entry.file_name().unwrap().to_owned()),
        "{listed:?}"
    );
    assert_eq!(listed.len(), 2, "undel/ and the file: {listed:?}");
    c.unmount(&flat).unwrap();

    // mv into undel/ puts it back, with the same content.
    let undel = meta.join("trash/undel").join(entry.file_name().unwrap());
    fs::rename(&entry, &undel).unwrap();
    c.drop_caches();
    assert_same("restored", &fs::read(&file).unwrap(), &data);
    assert_eq!(trash_figures(&c).0, 0);

    // Deleted again, folder and all: the undelete makes the folder again.
    fs::remove_file(&file).unwrap();
    fs::remove_dir(&dir).unwrap();
    let out = c.tool(&["undelete", entry.to_str().unwrap()]).unwrap();
    assert!(out.contains("restored to /dir/file.bin"), "{out}");
    assert_same("restored again", &fs::read(&file).unwrap(), &data);

    // Refused while the name is taken, saying so.
    fs::remove_file(&file).unwrap();
    fs::write(&file, b"a newer file").unwrap();
    let err = fs::rename(&entry, &undel).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
    let err = c
        .tool(&["undelete", entry.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/dir/file.bin already exists"),
        "moose-tool says why: {err}"
    );
    assert_eq!(fs::read(&file).unwrap(), b"a newer file");

    // rm in the trash frees it now, chunks too.
    fs::remove_file(&entry).unwrap();
    assert!(!entry.exists());
    assert_eq!(trash_figures(&c), (0, 0));
    assert!(
        c.tool(&["settrashtime", "60", meta.to_str().unwrap()])
            .is_err(),
        "trash times are set on normal mounts only"
    );
}

#[test]
fn a_file_with_trash_time_one_is_freed_after_it() {
    if let Err(why) = moose_tests::fuse_available() {
        panic!("cannot run the trash tests: {why}");
    }
    let mut c = LocalCluster::start(ClusterSpec {
        chunkservers: 1,
        ..Default::default()
    })
    .unwrap();
    // Without an exports line for ".", no meta mount.
    let (_, out) = c.try_mount(&["-m"]).unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("'.'"),
        "the refusal names the missing line: {said}"
    );

    let mnt = c.mount().unwrap();
    c.tool(&["settrashtime", "-r", "1", mnt.to_str().unwrap()])
        .unwrap();
    fs::write(mnt.join("f"), random_bytes(1, 3 * MIB)).unwrap();
    c.drop_caches();
    c.wait_until(Duration::from_secs(20), "the chunk on disk", |c| {
        Ok(!c.chunk_files(0).is_empty())
    })
    .unwrap();
    fs::remove_file(mnt.join("f")).unwrap();
    c.wait_until(Duration::from_secs(30), "the trash to empty", |c| {
        Ok(trash_figures(c) == (0, 0))
    })
    .unwrap();
    c.wait_until(Duration::from_secs(30), "its chunk to be deleted", |c| {
        Ok(c.chunk_files(0).is_empty())
    })
    .unwrap();
}

#[test]
fn the_trash_survives_kill_9_of_the_master_and_a_rebuild_from_the_metalogger() {
    let (mut c, mnt) = cluster(true);
    c.tool(&["settrashtime", "3600", mnt.to_str().unwrap()])
        .unwrap();
    let data = random_bytes(7, 5 * MIB + 123);
    fs::create_dir(mnt.join("a")).unwrap();
    let file = mnt.join("a/kept");
    fs::write(&file, &data).unwrap();
    let inode = fs::metadata(&file).unwrap().ino();
    fs::remove_file(&file).unwrap();
    let meta = c.mount_with(&["-m"]).unwrap();
    let entry = trash_entry(&meta, inode, "a/kept");
    let deleted_at = fs::metadata(&entry).unwrap().ctime();
    c.unmount(&meta).unwrap();
    c.unmount(&mnt).unwrap();

    // kill -9: the change is replayed from the changelog.
    c.kill_master().unwrap();
    c.start_master().unwrap();
    c.wait_for_chunkservers(2).unwrap();
    assert_eq!(trash_figures(&c).0, 1);
    let meta = c.mount_with(&["-m"]).unwrap();
    let entry = trash_entry(&meta, inode, "a/kept");
    assert_eq!(fs::metadata(&entry).unwrap().ctime(), deleted_at);
    c.unmount(&meta).unwrap();

    // A master rebuilt from the metalogger's copy has it too.
    let version = c.cluster_info().unwrap()["metadata_version"]
        .as_u64()
        .unwrap();
    c.rebuild_master_from_metalogger(version, 2).unwrap();
    let meta = c.mount_with(&["-m"]).unwrap();
    let entry = trash_entry(&meta, inode, "a/kept");
    assert_eq!(fs::metadata(&entry).unwrap().ctime(), deleted_at);
    fs::rename(
        &entry,
        meta.join("trash/undel").join(entry.file_name().unwrap()),
    )
    .unwrap();
    let mnt = c.mount().unwrap();
    assert_same(
        "restored after the rebuild",
        &fs::read(mnt.join("a/kept")).unwrap(),
        &data,
    );
}
