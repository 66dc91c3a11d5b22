//! Self-healing: chunkservers dying, coming back, damaged blocks, full disks.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use moose_tests::data::{assert_same, random_bytes};
use moose_tests::{ClusterSpec, LocalCluster};

const MIB: usize = 1 << 20;

fn start(spec: ClusterSpec) -> LocalCluster {
    if let Err(why) = moose_tests::fuse_available() {
        panic!("cannot run the self-healing tests: {why}");
    }
    LocalCluster::start(spec).expect("cluster starts")
}

fn health(c: &LocalCluster) -> serde_json::Value {
    c.cluster_info().expect("cluster info")["health"].clone()
}

/// Waits until no chunk is missing, endangered or undergoal.
fn wait_for_goal(c: &LocalCluster, timeout: Duration) -> Duration {
    let started = Instant::now();
    c.wait_until(timeout, "every chunk back at its goal", |c| {
        let h = health(c);
        Ok(h["missing"] == 0
            && h["endangered"] == 0
            && h["undergoal"] == 0
            && h["replicating"] == 0)
    })
    .unwrap_or_else(|e| panic!("{e:#}; health now: {}", health(c)));
    started.elapsed()
}

#[test]
fn kill_9_of_a_chunkserver_during_a_write_loses_no_acknowledged_data() {
    let mut c = start(ClusterSpec {
        chunkservers: 3,
        default_goal: 2,
        ..Default::default()
    });
    let mnt = c.mount().unwrap();
    let path = mnt.join("big");
    let data = random_bytes(7, 200 * MIB);
    let piece = 8 * MIB;
    let writer = {
        let (path, data) = (path.clone(), data.clone());
        std::thread::spawn(move || -> (usize, Option<std::io::Error>) {
            let mut f = match fs::File::create(&path) {
                Ok(f) => f,
                Err(e) => return (0, Some(e)),
            };
            let mut acknowledged = 0;
            for chunk in data.chunks(piece) {
                if let Err(e) = f.write_all(chunk).and_then(|_| f.sync_all()) {
                    return (acknowledged, Some(e));
                }
                acknowledged += chunk.len();
            }
            (acknowledged, None)
        })
    };
    // Kill a chunkserver once the write is well under way.
    c.wait_until(Duration::from_secs(60), "40 MiB written", |_| {
        Ok(fs::metadata(&path).map(|m| m.len()).unwrap_or(0) >= 40 * MIB as u64)
    })
    .unwrap();
    c.kill_chunkserver(1).unwrap();
    let (acknowledged, error) = writer.join().unwrap();
    match &error {
        None => assert_eq!(
            acknowledged,
            data.len(),
            "a write that succeeded wrote everything"
        ),
        Some(e) => eprintln!("the write failed cleanly after {acknowledged} bytes: {e}"),
    }
    assert!(acknowledged > 0);
    c.drop_caches();
    let got = fs::read(&path).unwrap();
    assert!(
        got.len() >= acknowledged,
        "file shorter ({}) than what was acknowledged ({acknowledged})",
        got.len()
    );
    assert_same(
        "acknowledged data",
        &got[..acknowledged],
        &data[..acknowledged],
    );
    // The two surviving servers get every chunk back to two copies.
    let took = wait_for_goal(&c, Duration::from_secs(120));
    eprintln!(
        "goal 2 restored {:.1} s after the write ended",
        took.as_secs_f64()
    );
}

#[test]
fn chunks_written_while_a_server_was_down_get_their_copies_when_it_returns() {
    let mut c = start(ClusterSpec {
        chunkservers: 2,
        default_goal: 2,
        ..Default::default()
    });
    let mnt = c.mount().unwrap();
    c.stop_chunkserver(1).unwrap();
    c.wait_until(Duration::from_secs(10), "one chunkserver left", |c| {
        let info = c.cluster_info()?;
        Ok(info["chunkservers"]
            .as_array()
            .map(|a| a.iter().filter(|s| s["connected"] == true).count())
            == Some(1))
    })
    .unwrap();
    // 14 chunks of 64 MiB, each with one copy while the second server is away.
    let data = random_bytes(14, 14 * 64 * MIB);
    fs::write(mnt.join("while-down"), &data).unwrap();
    let h = health(&c);
    assert_eq!(h["endangered"], 14, "every chunk has one copy of two: {h}");
    let back = Instant::now();
    c.start_chunkserver(1).unwrap();
    let took = wait_for_goal(&c, Duration::from_secs(300));
    eprintln!(
        "14 chunks of 64 MiB back at goal 2 in {:.1} s after the chunkserver returned ({:.1} s until all at goal)",
        took.as_secs_f64(),
        back.elapsed().as_secs_f64()
    );
    c.drop_caches();
    assert_same(
        "while-down",
        &fs::read(mnt.join("while-down")).unwrap(),
        &data,
    );
}

#[test]
fn a_chunkserver_back_during_replication_is_not_sent_copies_of_its_own_chunks() {
    // Three servers at goal 2: killing one leaves its chunks with one copy, and the master
    // copies them onto the third. The killed server comes back while that runs, with every
    // chunk it had; none of them may be ordered onto it again. Thousands of small chunks
    // and high copy limits keep the health loop deciding all the time, as on a large cluster.
    let mut c = start(ClusterSpec {
        chunkservers: 3,
        default_goal: 2,
        master_extra: vec![
            "CHUNKS_WRITE_REP_LIMIT = 50".into(),
            "CHUNKS_READ_REP_LIMIT = 50".into(),
        ],
        ..Default::default()
    });
    let mnt = c.mount().unwrap();
    let files: Vec<Vec<u8>> = (0..3000u64).map(|i| random_bytes(100 + i, 4096)).collect();
    for (i, data) in files.iter().enumerate() {
        fs::write(mnt.join(format!("f{i}")), data).unwrap();
    }
    wait_for_goal(&c, Duration::from_secs(60));
    let port = c.chunkservers[1].port;
    let id = c.cluster_info().unwrap()["chunkservers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["addr"]["port"] == port)
        .map(|s| s["id"].as_u64().unwrap())
        .expect("the second chunkserver is registered");
    let into_it = format!("to cs {id} failed");
    for round in 0..6 {
        c.kill_chunkserver(1).unwrap();
        c.wait_until(
            Duration::from_secs(30),
            "copies of its chunks to start",
            |c| Ok(health(c)["replicating"].as_u64() > Some(0)),
        )
        .unwrap();
        c.start_chunkserver(1).unwrap();
        c.wait_for_chunkservers(3).unwrap();
        wait_for_goal(&c, Duration::from_secs(120));
        let log = c.master_log();
        let refused: Vec<&str> = log.lines().filter(|l| l.contains(&into_it)).collect();
        assert!(
            refused.is_empty(),
            "round {round}: the master ordered copies of chunks the returning server holds:\n{}",
            refused.join("\n")
        );
    }
    c.drop_caches();
    for (i, data) in files.iter().enumerate() {
        assert_same(
            &format!("f{i}"),
            &fs::read(mnt.join(format!("f{i}"))).unwrap(),
            data,
        );
    }
}

#[test]
fn a_damaged_block_is_found_by_the_scrub_and_the_copy_replaced() {
    let mut c = start(ClusterSpec {
        chunkservers: 2,
        default_goal: 2,
        chunkserver_extra: vec!["HDD_TEST_SPEED = 1000".into()],
        ..Default::default()
    });
    let mnt = c.mount().unwrap();
    let data = random_bytes(3, 3 * MIB);
    fs::write(mnt.join("f"), &data).unwrap();
    c.unmount(&mnt).unwrap();
    let files = c.chunk_files(0);
    assert_eq!(files.len(), 1, "{files:?}");
    let mut f = fs::OpenOptions::new().write(true).open(&files[0]).unwrap();
    f.seek(SeekFrom::Start(8192 + 65536 + 5)).unwrap();
    f.write_all(&[0x5a ^ data[65536 + 5]]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    // The scrub finds it, the master drops the copy and makes a new one from the good copy.
    c.wait_until(
        Duration::from_secs(60),
        "the damaged copy to be replaced",
        |c| {
            let fixed = c
                .chunk_files(0)
                .first()
                .map(|p| {
                    fs::read(p)
                        .map(|b| b.get(8192 + 65536 + 5) == data.get(65536 + 5))
                        .unwrap_or(false)
                })
                .unwrap_or(false);
            let h = health(c);
            Ok(fixed && h["stable"] == 1 && h["undergoal"] == 0 && h["endangered"] == 0)
        },
    )
    .unwrap_or_else(|e| {
        let cs_log = fs::read_to_string(c.chunkservers[0].data.join("moose-chunkserver.log"))
            .unwrap_or_default();
        panic!(
            "{e:#}\nhealth: {}\nchunk files on cs0: {:?}\ncs0 log:\n{cs_log}\nmaster log:\n{}",
            health(&c),
            c.chunk_files(0),
            c.master_log()
        )
    });
    let log = fs::read_to_string(c.chunkservers[0].data.join("moose-chunkserver.log")).unwrap();
    assert!(
        log.to_lowercase().contains("crc"),
        "the chunkserver logs the damage:\n{log}"
    );
    c.drop_caches();
    let mnt = c.mount().unwrap();
    assert_same("f", &fs::read(mnt.join("f")).unwrap(), &data);
}

/// One chunkserver on a 300 MiB disk of its own, files at goal 1.
fn one_300_mib_disk() -> LocalCluster {
    start(ClusterSpec {
        chunkservers: 1,
        default_goal: 1,
        disk_limit: Some("tmpfs:300M".into()),
        chunkserver_extra: vec!["HDD_LEAVE_SPACE_DEFAULT = 4MiB".into()],
        ..Default::default()
    })
}

#[test]
fn a_full_disk_gives_enospc_and_leaves_other_files_intact() {
    let mut c = one_300_mib_disk();
    let mnt = c.mount().unwrap();
    let keep = random_bytes(1, 20 * MIB);
    fs::write(mnt.join("keep"), &keep).unwrap();
    let mut f = fs::File::create(mnt.join("filler")).unwrap();
    let block = random_bytes(2, MIB);
    let mut error = None;
    for _ in 0..1000 {
        if let Err(e) = f.write_all(&block).and_then(|_| f.sync_all()) {
            error = Some(e);
            break;
        }
    }
    drop(f);
    let e = error.expect("writing 1000 MiB to a 300 MiB disk fails");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "error is ENOSPC: {e}");
    c.drop_caches();
    assert_same("keep", &fs::read(mnt.join("keep")).unwrap(), &keep);
}

#[test]
fn writes_after_a_write_out_failed_for_want_of_space_get_its_error() {
    let mut c = one_300_mib_disk();
    let mnt = c.mount().unwrap();
    // Written without a sync: the mount buffers, and its write-outs fail once the disk is
    // full. The program hears of it at a later write, not only at its close.
    let mut f = fs::File::create(mnt.join("filler")).unwrap();
    let block = random_bytes(3, MIB);
    let mut written = 0;
    let error = loop {
        if let Err(e) = f.write_all(&block) {
            break Some(e);
        }
        written += 1;
        if written == 3000 {
            break None;
        }
    };
    let e = error.expect("3000 MiB of writes to a 300 MiB disk all succeeded");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "error is ENOSPC: {e}");
    // A child the program starts closes its copy of the descriptor at its exec; that close
    // hears of the error too, and must leave it for the program's own fsync.
    let child = std::process::Command::new("true").status().unwrap();
    assert!(child.success());
    // The fsync reports it: the data written before the failure went nowhere.
    let synced = f.sync_all();
    assert_eq!(
        synced.as_ref().map_err(|e| e.raw_os_error()),
        Err(Some(libc::ENOSPC)),
        "the fsync after a failed write-out: {synced:?}"
    );
}

#[test]
fn rebalancing_settles_and_an_idle_cluster_then_copies_nothing() {
    // The console's default cluster (three chunkservers, goal 2) on a machine with little
    // free space: the disks share one small file system, so one chunk moved changes a
    // server's usage by several percent. The third server joins after the write, empty.
    let mut c = start(ClusterSpec {
        chunkservers: 3,
        default_goal: 2,
        disk_limit: Some("shared-tmpfs:1536M:4GiB".into()),
        ..Default::default()
    });
    c.stop_chunkserver(2).unwrap();
    let mnt = c.mount().unwrap();
    let data = random_bytes(11, 300 * 1_000_000);
    fs::write(mnt.join("300MB"), &data).unwrap();
    c.start_chunkserver(2).unwrap();
    wait_for_goal(&c, Duration::from_secs(120));
    let copies = |c: &LocalCluster| {
        let h = health(c);
        h["replicated_total"].as_u64().unwrap() + h["moved_total"].as_u64().unwrap()
    };
    // Rebalancing onto the new server ends: nothing copied for 10 s in a row.
    let mut last = (copies(&c), Instant::now());
    c.wait_until(Duration::from_secs(120), "rebalancing to end", |c| {
        let now = copies(c);
        if now != last.0 {
            last = (now, Instant::now());
        }
        Ok(last.1.elapsed() > Duration::from_secs(10))
    })
    .unwrap_or_else(|e| panic!("{e:#}; moves: {}", moves(&c.master_log())));
    let info = c.cluster_info().unwrap();
    let on_new = info["chunkservers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["addr"]["port"] == c.chunkservers[2].port)
        .map(|s| s["chunks"].as_u64().unwrap());
    assert!(
        on_new.unwrap_or(0) >= 1,
        "the empty server got no chunk: {}",
        info["chunkservers"]
    );
    // Then a minute of idleness copies nothing at all.
    let before = copies(&c);
    let log_before = c.master_log().len();
    std::thread::sleep(Duration::from_secs(60));
    let log = c.master_log();
    assert_eq!(copies(&c), before, "{}", moves(&log[log_before..]));
    assert_same("300MB", &fs::read(mnt.join("300MB")).unwrap(), &data);
}

/// The copy and move lines of a master log.
fn moves(log: &str) -> String {
    log.lines()
        .filter(|l| l.contains("copied from") || l.contains("moved from"))
        .collect::<Vec<_>>()
        .join("\n")
}
