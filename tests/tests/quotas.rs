//! Folder quotas (`moose-tool setquota|getquota|delquota|repquota`) on real daemons and a
//! real mount: EDQUOT at a hard limit with nothing written beyond it, soft limits that turn
//! hard after their grace period, `df` under a size quota.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use moose_tests::data::{assert_same, random_bytes};
use moose_tests::{ClusterSpec, LocalCluster};
use serde_json::Value;

const EDQUOT: i32 = 122;
const MIB: u64 = 1 << 20;

fn getquota(c: &LocalCluster, dir: &Path) -> Value {
    let out = c
        .tool(&["getquota", "--json", dir.to_str().unwrap()])
        .unwrap();
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

/// A cluster of `chunkservers` with a mount, and a new folder `name` on it (where the quota
/// goes).
fn cluster_with_folder(chunkservers: usize, name: &str) -> (LocalCluster, PathBuf) {
    if let Err(why) = moose_tests::fuse_available() {
        panic!("cannot run the quota test: {why}");
    }
    let mut c = LocalCluster::start(ClusterSpec {
        chunkservers,
        ..Default::default()
    })
    .unwrap();
    let dir = c.mount().unwrap().join(name);
    fs::create_dir(&dir).unwrap();
    (c, dir)
}

/// Bytes `dd` reports it copied ("N bytes (...) copied").
fn dd_copied(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| {
            l.split_once(" bytes")
                .and_then(|(n, _)| n.trim().parse::<u64>().ok())
        })
        .unwrap_or_else(|| panic!("no byte count in dd's output: {stderr}"))
}

#[test]
fn a_hard_size_quota_stops_dd_at_the_limit_with_exactly_what_was_acknowledged() {
    let (c, q) = cluster_with_folder(2, "q");
    let mnt = q.parent().unwrap().to_path_buf();
    c.tool(&["setquota", "-S", "10MiB", q.to_str().unwrap()])
        .unwrap();
    let source = c.dir.path().join("source");
    let data = random_bytes(1, (20 * MIB) as usize);
    fs::write(&source, &data).unwrap();

    let out = Command::new("dd")
        .arg(format!("if={}", source.display()))
        .arg(format!("of={}", q.join("f").display()))
        .args(["bs=1M", "count=20"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "dd went past the quota: {stderr}");
    assert!(stderr.contains("Disk quota exceeded"), "{stderr}");
    let copied = dd_copied(&stderr);
    assert_eq!(copied, 10 * MIB, "dd stops exactly at the limit: {stderr}");
    c.drop_caches();
    let back = fs::read(q.join("f")).unwrap();
    assert_same("q/f", &back, &data[..copied as usize]);

    // The quota shows the usage; df inside the folder shows the quota.
    let report = getquota(&c, &q);
    assert_eq!(report["usage"]["size"], 10 * MIB, "{report}");
    assert_eq!(report["hard"]["size"], 10 * MIB, "{report}");
    let df = Command::new("df")
        .args(["-B1", "--output=size,used"])
        .arg(&q)
        .output()
        .unwrap();
    let df = String::from_utf8_lossy(&df.stdout);
    let figures: Vec<u64> = df
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(figures, vec![10 * MIB, 10 * MIB], "{df}");
    let whole = Command::new("df")
        .args(["-B1", "--output=size"])
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&whole.stdout).contains(&(10 * MIB).to_string()),
        "the rest of the mount shows the cluster"
    );

    // An inode limit refuses the create past it.
    let n = mnt.join("n");
    fs::create_dir(&n).unwrap();
    c.tool(&["setquota", "-I", "3", n.to_str().unwrap()])
        .unwrap();
    fs::write(n.join("a"), b"1").unwrap();
    fs::write(n.join("b"), b"2").unwrap();
    let e = fs::write(n.join("c"), b"3").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(EDQUOT), "{e}");

    // repquota lists both; delquota lifts the limit.
    let rep: Value = serde_json::from_str(
        &c.tool(&["repquota", "--json", mnt.to_str().unwrap()])
            .unwrap(),
    )
    .unwrap();
    let paths: Vec<&str> = rep[0]["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|q| q["path"].as_str())
        .collect();
    assert_eq!(paths.len(), 2, "{rep}");
    assert!(paths.iter().any(|p| p.ends_with("/q")), "{rep}");
    c.tool(&["delquota", n.to_str().unwrap()]).unwrap();
    fs::write(n.join("c"), b"3").unwrap();
    assert!(c.tool(&["getquota", n.to_str().unwrap()]).is_err());
}

#[test]
fn a_soft_quota_turns_hard_after_its_grace_period() {
    let (c, s) = cluster_with_folder(1, "s");
    c.tool(&["setquota", "-p", "2", "-l", "1MiB", s.to_str().unwrap()])
        .unwrap();
    // Over the soft limit is allowed during the grace period.
    let mut f = fs::File::create(s.join("f")).unwrap();
    f.write_all(&random_bytes(2, (2 * MIB) as usize)).unwrap();
    f.sync_all().unwrap();
    let report = getquota(&c, &s);
    assert!(report["soft_exceeded_for"].is_u64(), "{report}");
    // Then it acts as a hard limit: appending fails with EDQUOT.
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        match f.write_all(&[7u8; 4096]).and_then(|()| f.flush()) {
            Err(e) => break e,
            Ok(()) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Ok(()) => panic!("still writing past the soft limit after 30 s"),
        }
    };
    assert_eq!(refused.raw_os_error(), Some(EDQUOT), "{refused}");
    let report = getquota(&c, &s);
    assert_eq!(report["grace_left"], 0, "{report}");
    // Rewriting inside the file adds nothing and is still allowed.
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"rewrite", 0).unwrap();
    let text = c.tool(&["getquota", s.to_str().unwrap()]).unwrap();
    assert!(text.contains("grace period over"), "{text}");
    drop(f);
    // The grace clock is metadata: kill -9 of the master and a replay keep it, the period
    // does not start again.
    c.kill_master().unwrap();
    c.start_master().unwrap();
    let report = getquota(&c, &s);
    assert_eq!(report["grace_left"], 0, "after a restart: {report}");
}

/// A mount that has just learnt "no quotas" (by writing) still honours a quota set a moment
/// later: `setquota` returns once every mount's cached answer has run out.
#[test]
fn a_quota_is_in_force_for_a_write_right_after_setquota_returns() {
    let (c, q) = cluster_with_folder(1, "q");
    // This write makes the mount ask, and hear that the cluster has no quotas.
    fs::write(q.join("warm"), vec![7u8; 4096]).unwrap();
    c.tool(&["setquota", "-S", "2MiB", q.to_str().unwrap()])
        .unwrap();
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", q.join("f").display()))
        .args(["bs=1M", "count=8"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "dd went past the quota: {stderr}");
    assert!(stderr.contains("Disk quota exceeded"), "{stderr}");
    let len = fs::metadata(q.join("f")).unwrap().len();
    assert!(
        len < 2 * MIB,
        "the file grew to {len} bytes under a 2 MiB quota"
    );
}
