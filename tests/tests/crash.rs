//! Crash safety of the master: `kill -9` at any moment loses no change it acknowledged and
//! nothing that a client saw fsynced, and no chunk copy is deleted for a version the master
//! never recorded. An fsync returns only once the master's changelog is synced past it; an
//! fdatasync only once the changes the file's data depends on are synced.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moose_tests::data::random_bytes;
use moose_tests::{ClusterSpec, LocalCluster};

/// A cluster of `chunkservers` at `goal`, mounted.
fn mounted_cluster(chunkservers: usize, goal: u8) -> (LocalCluster, std::path::PathBuf) {
    if let Err(why) = moose_tests::fuse_available() {
        panic!("cannot run the crash tests: {why}");
    }
    let mut c = LocalCluster::start(ClusterSpec {
        chunkservers,
        default_goal: goal,
        ..Default::default()
    })
    .expect("cluster starts");
    let mnt = c.mount().unwrap();
    (c, mnt)
}

/// A file the appender wrote to, and how much of `data` a fsync acknowledged.
struct Written {
    name: String,
    data: Vec<u8>,
    acked: usize,
}

/// `fsync-appender` (see its source) writing into a mount, killed if the test ends first.
struct Appender {
    child: Child,
    stop_file: PathBuf,
}

impl Appender {
    fn start(dir: &Path, stop_file: PathBuf) -> Appender {
        let child = Command::new(env!("CARGO_BIN_EXE_fsync-appender"))
            .arg(dir)
            .arg(&stop_file)
            .stdout(Stdio::piped())
            .spawn()
            .expect("fsync-appender starts");
        Appender { child, stop_file }
    }

    /// Stops it and returns each file with what it wrote and what was fsynced.
    fn finish(mut self) -> Vec<Written> {
        fs::write(&self.stop_file, b"").unwrap();
        let mut lines = String::new();
        let mut stdout = self.child.stdout.take().unwrap();
        std::io::Read::read_to_string(&mut stdout, &mut lines).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "fsync-appender: {status}");
        let mut files: Vec<Written> = Vec::new();
        for line in lines.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let [name, round, len, verdict] = fields[..] else {
                panic!("fsync-appender said {line:?}");
            };
            let at = match files.iter().position(|w| w.name == name) {
                Some(at) => at,
                None => {
                    files.push(Written {
                        name: name.to_string(),
                        data: Vec::new(),
                        acked: 0,
                    });
                    files.len() - 1
                }
            };
            let w = &mut files[at];
            w.data
                .extend_from_slice(&random_bytes(round.parse().unwrap(), len.parse().unwrap()));
            if verdict == "ok" {
                w.acked = w.data.len();
            }
        }
        files
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn twenty_kill_9s_of_the_master_during_writes_lose_no_fsynced_byte() {
    let (mut c, mnt) = mounted_cluster(2, 2);
    let appender = Appender::start(&mnt, c.dir.path().join("appender-stop"));
    for round in 0..20u64 {
        std::thread::sleep(Duration::from_millis(200 + (round * 137) % 600));
        c.kill_master().unwrap();
        c.start_master()
            .unwrap_or_else(|e| panic!("round {round}: plain start after kill -9: {e:#}"));
    }
    std::thread::sleep(Duration::from_secs(1));
    let files = appender.finish();
    let acked: usize = files.iter().map(|w| w.acked).sum();
    assert!(acked > 0, "nothing was acknowledged in 20 rounds");

    c.wait_for_chunkservers(2).unwrap();
    c.wait_until(Duration::from_secs(60), "every chunk at its goal", |c| {
        let h = c.cluster_info()?["health"].clone();
        Ok(h["missing"] == 0 && h["undergoal"] == 0 && h["endangered"] == 0)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}; health: {}",
            c.cluster_info()
                .map(|i| i["health"].clone())
                .unwrap_or_default()
        )
    });
    c.drop_caches();
    let fresh = c.mount().unwrap();
    for w in &files {
        let got = fs::read(fresh.join(&w.name)).unwrap_or_default();
        assert!(
            got.len() >= w.acked,
            "{}: {} bytes, but {} were fsynced",
            w.name,
            got.len(),
            w.acked
        );
        if let Some(i) = (0..w.acked).find(|&i| got[i] != w.data[i]) {
            panic!("{}: byte {i} differs from what was fsynced", w.name);
        }
    }
    let log = c.master_log();
    assert!(
        !log.contains("needs repair"),
        "a chunk lost its version: {}",
        log.lines()
            .filter(|l| l.contains("needs repair"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Creates files named `w{writer}-{n}` in `dir` until told to stop; returns the names whose
/// create was answered.
fn create_loop(dir: &Path, writer: usize, stop: &AtomicBool) -> Vec<String> {
    let mut acked = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let name = format!("w{writer}-{n}");
        if fs::File::create(dir.join(&name)).is_ok() {
            acked.push(name);
        }
    }
    acked
}

#[test]
fn a_kill_9_under_concurrent_creates_loses_no_acknowledged_create() {
    // The default CHANGELOG_SAVE_MODE: changes are written before the reply, synced later.
    let (mut c, mnt) = mounted_cluster(1, 1);
    let dir = mnt.join("creates");
    fs::create_dir(&dir).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || create_loop(&dir, i, &stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    c.kill_master().unwrap();
    stop.store(true, Ordering::Relaxed);
    c.start_master().expect("plain start after kill -9");
    let acked: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("a writer thread"))
        .collect();
    assert!(acked.len() > 100, "only {} creates in 1.5 s", acked.len());

    let fresh = c.mount().unwrap();
    let found: std::collections::HashSet<String> = fs::read_dir(fresh.join("creates"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !found.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged creates are gone after kill -9, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}

/// How far the master's changelog is on disk, how far it is written, and how many syncs
/// requests asked for.
struct LogState {
    synced: u64,
    version: u64,
    asked: u64,
}

fn log_state(c: &LocalCluster) -> LogState {
    let info = c.cluster_info().unwrap();
    let field = |k: &str| {
        info[k]
            .as_u64()
            .unwrap_or_else(|| panic!("no {k} in the status: {info}"))
    };
    LogState {
        synced: field("metadata_synced"),
        version: field("metadata_version"),
        asked: field("metadata_syncs_asked"),
    }
}

fn synced_and_version(c: &LocalCluster) -> (u64, u64) {
    let s = log_state(c);
    (s.synced, s.version)
}

#[test]
fn fsync_returns_only_after_the_masters_changelog_is_synced_past_the_change() {
    let (c, mnt) = mounted_cluster(1, 1);
    for round in 0..5 {
        // A file: created and written, then fsynced.
        let path = mnt.join(format!("file{round}"));
        let mut f = fs::File::create(&path).unwrap();
        f.write_all(b"some bytes").unwrap();
        f.flush().unwrap();
        let (_, changed) = synced_and_version(&c);
        f.sync_all().unwrap();
        let (synced, _) = synced_and_version(&c);
        assert!(
            synced >= changed,
            "round {round}: fsync returned with the changelog synced to {synced}, before version \
             {changed}"
        );

        // A folder: a name made in it, then the folder fsynced.
        let folder = mnt.join(format!("dir{round}"));
        fs::create_dir(&folder).unwrap();
        fs::File::create(folder.join("entry")).unwrap();
        let (_, changed) = synced_and_version(&c);
        fs::File::open(&folder).unwrap().sync_all().unwrap();
        let (synced, _) = synced_and_version(&c);
        assert!(
            synced >= changed,
            "round {round}: fsync of a folder returned with the changelog synced to {synced}, \
             before version {changed}"
        );
    }
}

#[test]
fn fdatasync_asks_for_a_changelog_sync_only_when_the_files_data_depends_on_a_change() {
    use std::os::unix::fs::FileExt;
    let (c, mnt) = mounted_cluster(1, 1);
    let path = mnt.join("db");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut want = Vec::new();
    let mut conclusive = 0;
    for round in 0..6u8 {
        // The file grows: its new length is on the master's disk when fdatasync returns.
        let before = log_state(&c);
        let block = vec![round + 1; 4096];
        f.write_all_at(&block, want.len() as u64).unwrap();
        want.extend_from_slice(&block);
        f.sync_data().unwrap();
        let grown = log_state(&c);
        assert!(
            grown.synced > before.version,
            "round {round}: fdatasync of a growing file returned with the changelog synced to \
             {}, before the write's end (after version {})",
            grown.synced,
            before.version
        );

        // Overwritten in place: only the file's times change, which fdatasync need not keep,
        // so it asks for no sync (unless the write took a new lease: its version raise is
        // synced, and the round tells nothing).
        f.write_all_at(b"header", 0).unwrap();
        want[..6].copy_from_slice(b"header");
        f.sync_data().unwrap();
        let overwritten = log_state(&c);
        if overwritten.version == grown.version + 1 {
            conclusive += 1;
            assert_eq!(
                overwritten.asked, grown.asked,
                "round {round}: fdatasync of an overwrite asked the master for a changelog sync"
            );
        }

        // fsync keeps the times as well: the changelog is synced past the write's end.
        f.write_all_at(b"HEADER", 0).unwrap();
        want[..6].copy_from_slice(b"HEADER");
        f.sync_all().unwrap();
        let all = log_state(&c);
        assert!(
            all.synced >= all.version,
            "round {round}: fsync returned with the changelog synced to {}, before version {}",
            all.synced,
            all.version
        );
    }
    assert!(
        conclusive > 0,
        "every overwrite took a new lease: the test could not tell"
    );
    drop(f);
    c.drop_caches();
    assert!(
        fs::read(&path).unwrap() == want,
        "the file read back differs"
    );
}
