//! A master whose DATA_PATH is lost is rebuilt from the metalogger's files.

use std::fs;
use std::time::Duration;

use moose_tests::data::{assert_same, random_bytes};
use moose_tests::{ClusterSpec, LocalCluster};

#[test]
fn a_wiped_master_is_rebuilt_from_the_metalogger() {
    if let Err(why) = moose_tests::fuse_available() {
        panic!("cannot run the metalogger test: {why}");
    }
    let mut c = LocalCluster::start(ClusterSpec {
        chunkservers: 2,
        metalogger: true,
        ..Default::default()
    })
    .unwrap();
    let mnt = c.mount().unwrap();
    let mut files = vec![];
    for d in 0..5 {
        fs::create_dir_all(mnt.join(format!("dir{d}/sub"))).unwrap();
        for f in 0..10 {
            let rel = format!("dir{d}/sub/file{f}");
            let data = random_bytes(d * 100 + f, ((d * 37 + f * 101) * 4099) as usize);
            fs::write(mnt.join(&rel), &data).unwrap();
            files.push((rel, data));
        }
    }
    fs::rename(mnt.join("dir0"), mnt.join("renamed")).unwrap();
    for (rel, _) in files.iter_mut() {
        if let Some(rest) = rel.strip_prefix("dir0/") {
            *rel = format!("renamed/{rest}");
        }
    }
    c.unmount(&mnt).unwrap();
    let version = c.cluster_info().unwrap()["metadata_version"]
        .as_u64()
        .unwrap();
    c.rebuild_master_from_metalogger(version, 2).unwrap();
    let restored = c.cluster_info().unwrap()["metadata_version"]
        .as_u64()
        .unwrap();
    assert!(
        restored >= version,
        "restored version {restored} < {version}"
    );
    c.drop_caches();
    let mnt = c.mount().unwrap();
    for (rel, data) in &files {
        assert_same(rel, &fs::read(mnt.join(rel)).unwrap(), data);
    }
    assert!(!mnt.join("dir0").exists());
}

#[test]
fn a_running_metalogger_keeps_its_copy_when_the_master_starts_an_empty_file_system() {
    let c = LocalCluster::start(ClusterSpec {
        chunkservers: 1,
        metalogger: true,
        ..Default::default()
    })
    .unwrap();
    let (_, ml_data) = c.metalogger.clone().unwrap();
    let ml_log = || fs::read_to_string(ml_data.join("moose-metalogger.log")).unwrap_or_default();
    let dump = fs::read(ml_data.join("metadata_ml.mfs")).unwrap();
    // The master's DATA_PATH is lost and it starts again: a new, empty file system.
    c.kill_master().unwrap();
    for e in fs::read_dir(&c.master_data).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    c.start_master().unwrap();
    c.wait_until(Duration::from_secs(20), "the metalogger to refuse", |_| {
        Ok(ml_log().contains("the master serves another file system"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", ml_log()));
    assert_eq!(
        fs::read(ml_data.join("metadata_ml.mfs")).unwrap(),
        dump,
        "the good copy was kept"
    );
    assert!(
        ml_log().contains("moose-master -c CFG restore"),
        "{}",
        ml_log()
    );
}
