//! A working file system: master, three chunkservers and a FUSE mount on 127.0.0.1.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use moose_tests::data::{assert_same, random_bytes};
use moose_tests::{ClusterSpec, LocalCluster};

const MIB: usize = 1 << 20;

fn cluster(chunkservers: usize) -> LocalCluster {
    if let Err(why) = moose_tests::fuse_available() {
        panic!("cannot run the file system tests: {why}");
    }
    LocalCluster::start(ClusterSpec {
        chunkservers,
        ..Default::default()
    })
    .expect("cluster starts")
}

/// Two chunkservers keeping two copies of everything, and a mount.
fn two_copies() -> (LocalCluster, PathBuf) {
    let mut c = LocalCluster::start(ClusterSpec {
        chunkservers: 2,
        default_goal: 2,
        ..Default::default()
    })
    .expect("cluster starts");
    let mnt = c.mount().unwrap();
    (c, mnt)
}

/// [`two_copies`] and a file `name` of `size` random bytes (from `seed`) written through it.
fn two_copies_of(name: &str, seed: u64, size: usize) -> (LocalCluster, PathBuf, Vec<u8>) {
    let (c, mnt) = two_copies();
    let data = random_bytes(seed, size);
    fs::write(mnt.join(name), &data).unwrap();
    (c, mnt, data)
}

/// Reads 4 KiB at `offset` of `f` into `buf` and checks them against `data`.
fn read_4k_at(f: &fs::File, buf: &mut [u8], data: &[u8], offset: usize) {
    use std::os::unix::fs::FileExt;
    f.read_exact_at(&mut buf[..4096], offset as u64).unwrap();
    let want = &data[offset..offset + 4096];
    assert_same(&format!("4 KiB at {offset}"), &buf[..4096], want);
}

/// `path` opened for direct reads: each read reaches the mount, none the kernel's page cache.
fn open_direct(path: &std::path::Path) -> fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap()
}

/// `len` bytes of `room` aligned for direct I/O; `room` must be 4 KiB longer than `len`.
fn aligned(room: &mut [u8], len: usize) -> &mut [u8] {
    let at = room.as_ptr().align_offset(4096);
    &mut room[at..at + len]
}

#[test]
fn files_of_every_boundary_size_read_back_identical() {
    let mut c = cluster(3);
    let mnt = c.mount().unwrap();
    let sizes = [
        0,
        1,
        65535,
        65536,
        65537,
        64 * MIB - 1,
        64 * MIB,
        64 * MIB + 1,
        200 * MIB,
    ];
    for (i, &size) in sizes.iter().enumerate() {
        let data = random_bytes(i as u64, size);
        fs::write(mnt.join(format!("f{size}")), &data).unwrap();
    }
    // Read through a fresh mount and with the kernel's caches dropped, so data comes from
    // the chunkservers.
    c.drop_caches();
    let mnt2 = c.mount().unwrap();
    for (i, &size) in sizes.iter().enumerate() {
        let path = mnt2.join(format!("f{size}"));
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            size as u64,
            "size of {path:?}"
        );
        let got = fs::read(&path).unwrap();
        assert_same(&format!("{path:?}"), &got, &random_bytes(i as u64, size));
    }
}

#[test]
fn goal_gives_that_many_copies_on_distinct_servers() {
    let mut c = cluster(3);
    let mnt = c.mount().unwrap();
    for goal in 1..=3u32 {
        let dir = mnt.join(format!("g{goal}"));
        fs::create_dir(&dir).unwrap();
        c.tool(&["setgoal", &goal.to_string(), dir.to_str().unwrap()])
            .unwrap();
        let file = dir.join("data");
        fs::write(&file, random_bytes(goal as u64, 3 * MIB)).unwrap();
        let out = c.tool(&["getgoal", file.to_str().unwrap()]).unwrap();
        assert!(
            out.trim().ends_with(&format!(": {goal}")),
            "getgoal said {out}"
        );
        let info = c
            .tool(&["fileinfo", "--json", file.to_str().unwrap()])
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&info).unwrap();
        let chunks = v[0]["chunks"].as_array().expect("chunks array").clone();
        assert_eq!(chunks.len(), 1, "{info}");
        let copies = chunks[0]["copies"].as_array().unwrap();
        assert_eq!(copies.len(), goal as usize, "{info}");
        let mut servers: Vec<String> = copies.iter().map(|c| c["server"].to_string()).collect();
        servers.sort();
        servers.dedup();
        assert_eq!(
            servers.len(),
            goal as usize,
            "copies on distinct servers: {info}"
        );
        assert!(copies.iter().all(|c| c["status"] == "VALID"), "{info}");
    }
}

#[test]
fn df_shows_the_sum_of_the_chunkservers() {
    let mut c = LocalCluster::start(ClusterSpec {
        chunkservers: 3,
        disk_limit: Some("1GiB".into()),
        ..Default::default()
    })
    .unwrap();
    let mnt = c.mount().unwrap();
    let st = nix::sys::statvfs::statvfs(&mnt).unwrap();
    let total = st.blocks() as u64 * st.fragment_size() as u64;
    assert_eq!(total, 3 << 30, "df total must be 3 x 1 GiB");
    let out = std::process::Command::new("df")
        .arg("-B1")
        .arg(&mnt)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&(3u64 << 30).to_string()), "df said {text}");
}

/// The pid of the `moose-mount` serving `mnt`.
fn mount_pid(mnt: &std::path::Path) -> u32 {
    use std::os::unix::ffi::OsStrExt;
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0);
        if args.next().is_some_and(|a| a.ends_with(b"moose-mount"))
            && args.next() == Some(mnt.as_os_str().as_bytes())
        {
            return pid;
        }
    }
    panic!("no moose-mount serves {}", mnt.display())
}

/// A mount whose master is gone still ends on SIGTERM: it detaches itself rather than wait
/// for a plain unmount, which looks at the mount point and so waits for the master.
#[test]
fn a_mount_whose_master_is_gone_ends_on_sigterm() {
    let mut c = cluster(1);
    let mnt = c.mount().unwrap();
    fs::write(mnt.join("f"), b"kept").unwrap();
    let pid = mount_pid(&mnt);
    c.kill_master().unwrap();
    // The kernel's attributes of the mount point expire (after 1 s): a look at it asks the
    // mount.
    std::thread::sleep(std::time::Duration::from_secs(2));
    // SAFETY: kill(2) of the mount this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while moose_tests::process_running(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let ended = !moose_tests::process_running(pid);
    if !ended {
        // SAFETY: as above; the cluster's clean-up detaches the mount point.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    assert!(ended, "the mount still ran 30 s after its SIGTERM");
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(&format!(" {} ", mnt.display())),
        "{} is still mounted",
        mnt.display()
    );
}

#[test]
fn master_kill_9_and_restart_keeps_every_acknowledged_change() {
    let mut c = cluster(2);
    let mnt = c.mount().unwrap();
    fs::create_dir_all(mnt.join("a/b/c")).unwrap();
    let mut files = vec![];
    for i in 0..50u64 {
        let rel = format!("a/b/c/file{i}");
        let data = random_bytes(100 + i, (i as usize * 7919) % (3 * MIB));
        fs::write(mnt.join(&rel), &data).unwrap();
        files.push((rel, data));
    }
    fs::rename(mnt.join("a/b/c/file0"), mnt.join("a/moved")).unwrap();
    files[0].0 = "a/moved".to_string();
    fs::remove_file(mnt.join("a/b/c/file1")).unwrap();
    files.remove(1);
    std::os::unix::fs::symlink("b/c/file2", mnt.join("a/link")).unwrap();
    fs::set_permissions(
        mnt.join("a/b"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    let listing_before = tree(&mnt);
    c.unmount(&mnt).unwrap();

    c.kill_master().unwrap();
    c.start_master()
        .expect("plain start recovers after kill -9");
    c.wait_for_chunkservers(2).unwrap();
    c.drop_caches();
    let mnt = c.mount().unwrap();
    assert_eq!(tree(&mnt), listing_before);
    for (rel, data) in &files {
        let got = fs::read(mnt.join(rel)).unwrap();
        assert_same(rel, &got, data);
    }
    assert_eq!(
        fs::read_link(mnt.join("a/link")).unwrap().to_str(),
        Some("b/c/file2")
    );
}

/// Paths, kinds, modes and sizes of everything under `root`, sorted.
fn tree(root: &std::path::Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            out.push(format!(
                "{} {:o} {} {}",
                e.path().strip_prefix(root).unwrap().display(),
                m.mode(),
                m.len(),
                m.nlink()
            ));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_flipped_byte_in_one_copy_is_detected_and_read_from_another() {
    let (mut c, mnt, data) = two_copies_of("precious", 42, 5 * MIB + 123);
    c.unmount(&mnt).unwrap();
    // Flip one byte in the data area of the copy on the first chunkserver.
    flip_bits_in_the_only_chunk_of(&c, 0, 0xff);
    c.drop_caches();
    // Several fresh reads: whichever copy a read picks, the data is right.
    for _ in 0..4 {
        let mnt = c.mount().unwrap();
        let got = fs::read(mnt.join("precious")).unwrap();
        assert_same("precious", &got, &data);
        c.unmount(&mnt).unwrap();
        c.drop_caches();
    }
}

/// Small random reads are served on the FUSE thread from the first copy the location names
/// (see `client::read_here`); a bad block there sends the read the usual way, to the other.
#[test]
fn random_reads_of_blocks_damaged_in_either_copy_are_read_from_the_other() {
    let (mut c, mnt, data) = two_copies_of("precious", 43, 5 * MIB);
    c.unmount(&mnt).unwrap();
    // Whichever copy comes first, one of the two blocks is bad in it.
    let (a, b) = (10, 40);
    flip_bits_in_block(&c, 0, a, 0xff);
    flip_bits_in_block(&c, 1, b, 0xff);
    c.drop_caches();
    let mnt = c.mount().unwrap();
    let f = fs::File::open(mnt.join("precious")).unwrap();
    let mut buf = vec![0u8; 4096];
    // Far apart, so that none reads as the next of a sequence; the first learns the location.
    for offset in [
        4 * MIB,
        a * 65536,
        b * 65536,
        3 * MIB,
        a * 65536 + 8192,
        b * 65536,
    ] {
        read_4k_at(&f, &mut buf, &data, offset);
    }
}

/// Small random reads of a copy on the mount's own host come straight from the chunk's file
/// (see `client::local_chunks`): with both chunkservers frozen they still return the data.
#[test]
fn random_reads_of_copies_on_this_host_need_no_chunkserver() {
    let mut c = LocalCluster::start(ClusterSpec {
        chunkservers: 2,
        default_goal: 2,
        ..Default::default()
    })
    .expect("cluster starts");
    // Locations stay valid as long as attributes do: every read below has its location.
    let mnt = c.mount_with(&["-o", "mfsattrcacheto=60"]).unwrap();
    let data = std::sync::Arc::new(random_bytes(47, 3 * MIB));
    fs::write(mnt.join("f"), &*data).unwrap();
    let f = open_direct(&mnt.join("f"));
    // Far apart, so that none reads as the next of a sequence: the first learns the location,
    // the second gets the chunk's file.
    direct_4k_reads(&f, &data, &[2 * MIB, 5 * 65536, MIB + 8192]).unwrap();
    let frozen = (
        c.pause_chunkserver(0).unwrap(),
        c.pause_chunkserver(1).unwrap(),
    );
    let (done, finished) = std::sync::mpsc::channel();
    let file_data = std::sync::Arc::clone(&data);
    let reader = std::thread::spawn(move || {
        let offsets = [40 * 65536, 7 * 65536 + 4096, 2 * MIB + 12288, 4096];
        let result = direct_4k_reads(&f, &file_data, &offsets);
        let _ = done.send(());
        result
    });
    // A read that went to a frozen chunkserver would wait for minutes.
    let in_time = finished
        .recv_timeout(std::time::Duration::from_secs(30))
        .is_ok();
    // Reads still waiting end once the chunkservers go on: the thread ends before the test.
    drop(frozen);
    let result = reader.join().expect("the reading thread");
    assert!(
        in_time,
        "4 KiB reads with the chunkservers frozen did not come back in 30 s"
    );
    result.unwrap();
}

/// Every write session raises its chunk's version. A read from another mount meanwhile is
/// served from the copies at the version before until the copies took the new one: it never
/// hears that the chunk has no valid copy (and waits a tenth of a second for it, as it did).
#[test]
fn reads_beside_another_mounts_writes_always_find_a_copy() {
    use std::io::{Seek, SeekFrom, Write};
    let (mut c, a, _) = two_copies_of("f", 61, MIB);
    let b = c.mount().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (path, stop) = (a.join("f"), stop.clone());
        std::thread::spawn(move || {
            let piece = random_bytes(62, 4096);
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut f = fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.seek(SeekFrom::Start((i * 37 % 256) * 4096)).unwrap();
                f.write_all(&piece).unwrap();
                i += 1;
            }
        })
    };
    let f = open_direct(&b.join("f"));
    let mut room = vec![0u8; 8192];
    let buf = aligned(&mut room, 4096);
    let mut reads = 0;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < end {
        use std::os::unix::fs::FileExt;
        let offset = (reads * 53 % 256) * 4096;
        f.read_exact_at(buf, offset)
            .expect("a read beside the writes");
        reads += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("the writing thread");
    let warning = format!(" WARN {}: ", b.display());
    let log = fs::read_to_string("/var/log/moose-mount.log").unwrap_or_default();
    let no_copy: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&warning) && l.contains("has no valid copy"))
        .collect();
    assert!(
        no_copy.is_empty(),
        "{} of {reads} reads found no copy: {:?}",
        no_copy.len(),
        &no_copy[..no_copy.len().min(3)]
    );
}

/// Close-to-open between mounts: a file written and closed on one mount, opened right after
/// on another, reads whole. The writer's close returns once every copy has the data and the
/// master has recorded the write's end.
#[test]
fn a_file_closed_on_one_mount_opens_whole_on_another() {
    let (mut c, a) = two_copies();
    let b = c.mount().unwrap();
    for i in 0..400u64 {
        // New names and rewrites of old ones, from a hundred bytes to two hundred kilobytes.
        let name = format!("f{}", i % 150);
        let data = random_bytes(1000 + i, 100 + (i as usize * 7919) % 200_000);
        fs::write(a.join(&name), &data).unwrap();
        let got = fs::read(b.join(&name)).unwrap();
        assert_same(
            &format!("{name}, write {i}, read on the other mount"),
            &got,
            &data,
        );
    }
}

/// A reader that keeps a file open on another mount while it grows never reads zeros past
/// the length its mount kept: a read that ends a page or more short of what the kernel asked
/// asks the master where the file ends, and reads again.
#[test]
fn a_reader_with_the_file_open_never_sees_its_tail_before_the_data() {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let (mut c, a) = two_copies();
    let b = c.mount().unwrap();
    fs::write(a.join("log"), b"").unwrap();
    let reader = fs::File::open(b.join("log")).unwrap();
    let line = [b'x'; 4096];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (path, stop) = (a.join("log"), stop.clone());
        std::thread::spawn(move || {
            for _ in 0..300 {
                let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
                f.write_all(&line).unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        })
    };
    let mut buf = vec![0u8; 300 * 4096];
    let mut checks = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let len = reader.metadata().unwrap().len() as usize;
        let n = reader.read_at(&mut buf[..len], 0).unwrap();
        if let Some(at) = buf[..n].iter().position(|&b| b != b'x') {
            panic!(
                "byte {at} of {n} read (length {len}) is {} before it landed",
                buf[at]
            );
        }
        checks += 1;
    }
    writer.join().expect("the writing thread");
    assert!(checks > 0);
    assert_eq!(fs::read(b.join("log")).unwrap().len(), 300 * 4096);
}

/// Reads 4 KiB at each of `offsets` of `f` (opened with [`open_direct`]) and checks them
/// against `data`.
fn direct_4k_reads(f: &fs::File, data: &[u8], offsets: &[usize]) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let mut room = vec![0u8; 8192];
    let buf = aligned(&mut room, 4096);
    for &offset in offsets {
        f.read_exact_at(buf, offset as u64)
            .map_err(|e| format!("4 KiB at {offset}: {e}"))?;
        if buf[..] != data[offset..offset + 4096] {
            return Err(format!("4 KiB at {offset}: not the bytes written there"));
        }
    }
    Ok(())
}

/// An `fsync` after a chunkserver died succeeds on a file opened write-only, as `dd` and `cp`
/// open theirs: the data written out before the death is on the other copy, and the mount
/// learns from the master that the dead copy no longer counts (a writer may ask where its
/// chunks are, though not read them).
#[test]
fn fsync_of_a_write_only_file_after_a_chunkserver_died_succeeds() {
    let (c, mnt) = two_copies();
    let data = random_bytes(46, 3 * MIB);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(mnt.join("w"))
        .unwrap();
    f.write_all(&data).unwrap();
    // New times wait for the buffered data to be written out (to both copies), not synced.
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30))
        .unwrap();
    c.kill_chunkserver(1).unwrap();
    f.sync_all()
        .expect("fsync with one copy's server dead and the other durable");
    drop(f);
    c.drop_caches();
    assert_same("the file", &fs::read(mnt.join("w")).unwrap(), &data);
}

/// A sequential reader finds the next megabytes read ahead after every read, not only after
/// one that had to wait: with its only chunkserver gone, the next 8 MiB still come from
/// the mount.
#[test]
fn a_sequential_readers_window_moves_with_every_read() {
    use std::os::unix::fs::FileExt;
    let mut c = cluster(1);
    // Segments stay valid as long as attributes do.
    let mnt = c.mount_with(&["-o", "mfsattrcacheto=60"]).unwrap();
    let data = random_bytes(45, 24 * MIB);
    fs::write(mnt.join("f"), &data).unwrap();
    let f = open_direct(&mnt.join("f"));
    let mut room = vec![0u8; MIB + 4096];
    let buf = aligned(&mut room, MIB);
    let mut read_mib = |i: usize| {
        f.read_exact_at(buf, (i * MIB) as u64)
            .unwrap_or_else(|e| panic!("reading MiB {i}: {e}"));
        assert_same(&format!("MiB {i}"), buf, &data[i * MIB..(i + 1) * MIB]);
    };
    for i in 0..9 {
        read_mib(i);
        // Each read's read-ahead lands before the next read.
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    c.kill_chunkserver(0).unwrap();
    for i in 9..17 {
        read_mib(i);
    }
}

/// A reader that stops at a chunk's end and closes the file leaves the mount's read-ahead
/// of the next chunk behind: it must not ask the master where that chunk lies after the
/// file's release, which the master refuses and logs as a read of a file not opened.
#[test]
fn a_read_ahead_left_behind_by_a_close_asks_the_master_nothing() {
    use std::os::unix::fs::FileExt;
    let mut c = cluster(1);
    let mnt = c.mount().unwrap();
    let chunk = 64 * MIB;
    fs::write(mnt.join("f"), random_bytes(46, chunk + 8 * MIB)).unwrap();
    let mut room = vec![0u8; MIB + 4096];
    let buf = aligned(&mut room, MIB);
    // Half of such closes raced the read-ahead before the fix.
    for _ in 0..12 {
        // The mount sees a sequential reader.
        let f = open_direct(&mnt.join("f"));
        for i in 0..chunk / MIB {
            f.read_exact_at(buf, (i * MIB) as u64).unwrap();
        }
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    let log = c.master_log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("without opening it"))
        .collect();
    assert!(refused.is_empty(), "the master refused reads: {refused:?}");
}

/// A read of a chunk whose only server restarts waits it out, as stock's mount does for
/// `mfsioretries` (30) tries: an admin's restart of a chunkserver is no I/O error.
#[test]
fn a_read_waits_out_a_restart_of_the_only_chunkserver() {
    let mut c = cluster(1);
    let mnt = c.mount().unwrap();
    let data = random_bytes(47, MIB);
    fs::write(mnt.join("f"), &data).unwrap();
    c.drop_caches();
    c.stop_chunkserver(0).unwrap();
    let path = mnt.join("f");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(fs::read(path)));
    // Longer than the six rounds (6.3 s) the mount used to try before it gave up.
    let early = rx.recv_timeout(std::time::Duration::from_secs(10));
    c.start_chunkserver(0).unwrap();
    if let Ok(r) = early {
        let r = r.map(|d| format!("{} bytes", d.len()));
        panic!("the read ended while the chunkserver was down: {r:?}");
    }
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the read ends once the chunkserver is back")
        .expect("the read succeeds");
    assert_same("the file", &got, &data);
}

/// A write to a chunk whose only server restarts waits it out too: the master cannot grant
/// the write meanwhile, and the mount asks again as a read does.
#[test]
fn a_write_waits_out_a_restart_of_the_only_chunkserver() {
    let mut c = cluster(1);
    let mnt = c.mount().unwrap();
    let mut data = random_bytes(48, MIB);
    fs::write(mnt.join("f"), &data).unwrap();
    c.stop_chunkserver(0).unwrap();
    // Written by another process: a descriptor with data not yet written out, open in this
    // one, would make the start of the chunkserver wait (its copy of the descriptor closes
    // at its exec, and that close waits for the write-out).
    let mut dd = std::process::Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", mnt.join("f").display()))
        .args([
            "bs=4096",
            "seek=1",
            "count=1",
            "conv=notrunc,fsync",
            "status=none",
        ])
        .spawn()
        .unwrap();
    // Longer than the six rounds (6.3 s) a read used to wait.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut early = None;
    while early.is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        early = dd.try_wait().unwrap();
    }
    c.start_chunkserver(0).unwrap();
    if let Some(status) = early {
        panic!("the write ended while the chunkserver was down: dd {status}");
    }
    let status = dd.wait().unwrap();
    assert!(
        status.success(),
        "the write and its fsync succeed: dd {status}"
    );
    data[4096..8192].fill(0);
    c.drop_caches();
    assert_same("the file", &fs::read(mnt.join("f")).unwrap(), &data);
}

/// After a server dies, reads stop trying its copy first: the location that named it is
/// dropped once another copy answered. Counted by a listener on the dead server's port.
#[test]
fn reads_stop_trying_a_dead_server_once_another_copy_answered() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let (c, mnt, data) = two_copies_of("f", 44, 4 * MIB);
    let f = open_direct(&mnt.join("f"));
    let mut room = vec![0u8; 8192];
    let buf = aligned(&mut room, 4096);
    // Each server dies once: whichever the location names first, one of them is the dead
    // first copy.
    for dead in 0..2 {
        c.wait_for_chunkservers(2).unwrap();
        // The location is learned now, with both servers.
        read_4k_at(&f, buf, &data, 3 * MIB);
        c.kill_chunkserver(dead).unwrap();
        // Takes connections and closes them at once, as a server that is going away.
        let port = c.chunkservers[dead].port;
        let listener = (0..500)
            .find_map(|_| {
                let bound = std::net::TcpListener::bind(("127.0.0.1", port)).ok();
                if bound.is_none() {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                bound
            })
            .expect("the dead server's port is free within 5 s");
        listener.set_nonblocking(true).unwrap();
        let (tries, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let counter = {
            let (tries, stop) = (tries.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok(_) => {
                            tries.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
                    }
                }
            })
        };
        for i in 0..50usize {
            // Far apart, so that none reads as the next of a sequence.
            read_4k_at(&f, buf, &data, (i * 277 % 61) * 65536);
        }
        stop.store(true, Ordering::SeqCst);
        counter.join().unwrap();
        let tried = tries.load(Ordering::SeqCst);
        assert!(
            tried <= 4,
            "50 reads tried the dead chunkserver {dead} {tried} times"
        );
        c.start_chunkserver(dead).unwrap();
    }
}

#[test]
fn a_partial_write_into_a_damaged_block_fails_over_and_keeps_the_data_right() {
    let (mut c, mnt, mut data) = two_copies_of("patched", 43, MIB);
    c.unmount(&mnt).unwrap();
    // A bit flips in block 3 of the copy on the first chunkserver.
    flip_bits_in_the_only_chunk_of(&c, 0, 0x01);
    c.drop_caches();
    // Ten bytes written into the same block: the old bytes around them must not be taken
    // as they are on the damaged copy.
    let mnt = c.mount().unwrap();
    let at = 3 * 65536 + 1000;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("patched"))
        .unwrap();
    f.seek(SeekFrom::Start(at as u64)).unwrap();
    f.write_all(b"0123456789").unwrap();
    f.sync_all().unwrap();
    drop(f);
    data[at..at + 10].copy_from_slice(b"0123456789");
    c.unmount(&mnt).unwrap();
    c.drop_caches();
    for _ in 0..4 {
        let mnt = c.mount().unwrap();
        assert_same("patched", &fs::read(mnt.join("patched")).unwrap(), &data);
        c.unmount(&mnt).unwrap();
        c.drop_caches();
    }
}

#[test]
fn writes_and_fsyncs_in_a_loop_keep_one_lease_and_leave_the_chunk_to_other_writers() {
    use std::os::unix::fs::FileExt;
    let mut c = cluster(2);
    let a = c.mount().unwrap();
    let b = c.mount().unwrap();
    c.tool(&["setgoal", "2", a.to_str().unwrap()]).unwrap();
    let path = a.join("log");
    let f = fs::File::create(&path).unwrap();
    let mut want = Vec::new();
    for i in 0..20u8 {
        let block = vec![i; 4096];
        f.write_all_at(&block, want.len() as u64).unwrap();
        want.extend_from_slice(&block);
        f.sync_data().unwrap();
        if i % 5 == 0 {
            // A child started meanwhile closes its copy of the descriptor at its exec: the
            // kernel's flush of that close leaves the file's lease alone.
            assert!(std::process::Command::new("true")
                .status()
                .unwrap()
                .success());
        }
        if i % 5 == 2 {
            // New times (as `touch` or `rsync` set them) leave the lease alone too.
            let when =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + u64::from(i));
            f.set_times(fs::FileTimes::new().set_modified(when))
                .unwrap();
            assert_eq!(f.metadata().unwrap().modified().unwrap(), when);
        }
    }
    // One lease for all twenty write-outs: the chunk kept the version it was created with
    // (a new lease per fsync, per child's close or per change of times raised it each time).
    let versions = || -> Vec<u64> {
        let info = c
            .tool(&["fileinfo", "--json", path.to_str().unwrap()])
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&info).unwrap();
        v[0]["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ch| ch["version"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(versions(), vec![1]);

    // The other mount cuts and writes the chunk while this one still has the file open
    // (and its lease): both wait the lease out instead of failing.
    let other = fs::OpenOptions::new()
        .write(true)
        .open(b.join("log"))
        .unwrap();
    other.set_len(6000).unwrap();
    other.write_all_at(b"from b", 10).unwrap();
    other.sync_all().unwrap();
    drop(other);
    want.truncate(6000);
    want[10..16].copy_from_slice(b"from b");

    // The first mount's lease went stale meanwhile: its next write takes a new one.
    f.write_all_at(b"from a", 100).unwrap();
    f.sync_all().unwrap();
    drop(f);
    want[100..106].copy_from_slice(b"from a");
    c.drop_caches();
    for mnt in [&a, &b] {
        assert_same("log", &fs::read(mnt.join("log")).unwrap(), &want);
    }
}

#[test]
fn a_new_files_chunk_is_made_while_its_first_write_is_still_buffered() {
    let mut c = cluster(2);
    let a = c.mount().unwrap();
    let b = c.mount().unwrap();
    c.tool(&["setgoal", "2", a.to_str().unwrap()]).unwrap();
    let path = a.join("new");
    let writer = writer_holding(&path, "held in the mount's buffer");
    let chunks = || -> usize {
        let info = c
            .tool(&["fileinfo", "--json", path.to_str().unwrap()])
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&info).unwrap_or_default();
        v[0]["chunks"].as_array().map_or(0, Vec::len)
    };
    let size_for_b = || fs::metadata(b.join("new")).map(|m| m.len()).ok();
    // The lease was asked for at the first write, not at the close: the master made the
    // chunk while the data waits in the buffer (the file is still empty for the other
    // mount). A write-out, at the close or after 2 s, records the chunk and the length at
    // once.
    let made = (0..40).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        chunks() == 1 && size_for_b() == Some(0)
    });
    assert!(
        made,
        "no chunk for the file's first write while its data was buffered"
    );
    // The close at the writer's end writes the data out and ends the lease: the other mount
    // writes the chunk, and both read it back.
    drop(writer);
    let mut other = fs::OpenOptions::new()
        .write(true)
        .open(b.join("new"))
        .unwrap();
    other.write_all(b"HELD").unwrap();
    other.sync_all().unwrap();
    drop(other);
    c.drop_caches();
    for mnt in [&a, &b] {
        assert_eq!(
            fs::read(mnt.join("new")).unwrap(),
            b"HELD in the mount's buffer"
        );
    }
}

#[test]
fn closing_a_descriptor_opened_for_reading_writes_nothing_out() {
    let mut c = cluster(1);
    let a = c.mount().unwrap();
    let b = c.mount().unwrap();
    let path = a.join("written");
    let _writer = writer_holding(&path, "held in the mount's buffer");
    let buffered = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::metadata(&path).is_ok_and(|m| m.len() == 26)
    });
    assert!(
        buffered,
        "the writer's data did not reach the mount's buffer"
    );
    // The close of a descriptor opened for reading (and not read through) leaves the other
    // descriptor's data in the buffer: the kernel sends no flush for it, and its release
    // (which the kernel sends after the close returned) writes nothing out either. The
    // buffer's own write-out comes 2 s after the first write.
    drop(fs::File::open(&path).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(fs::metadata(b.join("written")).unwrap().len(), 0);
}

#[test]
fn a_file_removed_by_another_mount_keeps_its_data_until_its_last_close() {
    let mut c = cluster(1);
    let a = c.mount().unwrap();
    let b = c.mount().unwrap();
    // Without the trash, a removed file goes once nobody has it open.
    c.tool(&["settrashtime", "0", a.to_str().unwrap()]).unwrap();
    let data = random_bytes(7, 3 * MIB + 5);
    fs::write(a.join("kept"), &data).unwrap();
    let read_all = |f: &mut fs::File| {
        let mut got = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut got).unwrap();
        got
    };
    let mut first = fs::File::open(a.join("kept")).unwrap();
    let mut second = fs::File::open(a.join("kept")).unwrap();
    fs::remove_file(b.join("kept")).unwrap();
    assert!(fs::metadata(b.join("kept")).is_err(), "the name is gone");
    assert_same(
        "the removed file through one handle",
        &read_all(&mut first),
        &data,
    );
    // Closing one of the two handles leaves the file open at the master.
    drop(first);
    std::thread::sleep(std::time::Duration::from_millis(300));
    c.drop_caches();
    assert_same(
        "the removed file through the other",
        &read_all(&mut second),
        &data,
    );
    assert_eq!(c.chunk_files(0).len(), 1, "the open file's chunk is kept");
    // The last close tells the master, which removes the file and its chunk. Well before
    // the mount's 10 s keep-alive: the release must not wait for other traffic.
    drop(second);
    c.wait_until(
        std::time::Duration::from_secs(8),
        "the removed file's chunk to go after its last close",
        |c| Ok(c.chunk_files(0).is_empty()),
    )
    .unwrap();
}

/// A process that writes `text` to `path` and keeps the file open, so the data stays in the
/// mount's buffer (for 2 s): killed when dropped, which closes the file. A process of its
/// own, as a child this test starts (moose-tool) would close its copy of the descriptor at
/// its exec, and that close writes the buffer out; so would a redirection of a shell builtin
/// (`printf >&3` closes its copy of the descriptor).
fn writer_holding(path: &std::path::Path, text: &str) -> KilledOnDrop {
    KilledOnDrop(
        std::process::Command::new("sh")
            .args(["-c", "exec >\"$1\"; printf %s \"$2\"; exec sleep 60", "sh"])
            .arg(path)
            .arg(text)
            .spawn()
            .unwrap(),
    )
}

/// A child process, killed and waited for when dropped.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Flips the bits of `mask` in one byte of block 3 of the data of the only chunk file on
/// chunkserver `cs`, as a failing disk would.
fn flip_bits_in_the_only_chunk_of(c: &LocalCluster, cs: usize, mask: u8) {
    flip_bits_in_block(c, cs, 3, mask);
}

/// Flips bits of one byte in data block `block` of the only chunk on chunkserver `cs`.
fn flip_bits_in_block(c: &LocalCluster, cs: usize, block: usize, mask: u8) {
    let files = c.chunk_files(cs);
    assert_eq!(files.len(), 1, "one chunk on cs{cs}: {files:?}");
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&files[0])
        .unwrap();
    let pos = 8192 + block as u64 * 65536 + 17;
    f.seek(SeekFrom::Start(pos)).unwrap();
    let mut b = [0u8; 1];
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(pos)).unwrap();
    f.write_all(&[b[0] ^ mask]).unwrap();
    f.sync_all().unwrap();
}

/// What a program wrote through the mount and closed reads back from the kernel's cache
/// whole: the pages no single write covered (a file's last page, one a write boundary cuts,
/// as `tar -x` writes) and the bytes `copy_file_range` copied are handed to the kernel at
/// the last close. With the only chunkserver gone, every file still reads back at once.
#[test]
fn files_written_and_closed_read_back_from_the_kernels_cache() {
    let mut c = cluster(1);
    let mnt = c.mount().unwrap();
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    let one_write = random_bytes(60, 10_000);
    fs::write(mnt.join("one-write"), &one_write).unwrap();
    files.push((mnt.join("one-write"), one_write.clone()));
    // tar writes a file in 10 KiB records: no write covers the page around 10,240 whole.
    let pieces = random_bytes(61, 25_000);
    let mut f = fs::File::create(mnt.join("pieces")).unwrap();
    for piece in pieces.chunks(10_240) {
        f.write_all(piece).unwrap();
    }
    drop(f);
    files.push((mnt.join("pieces"), pieces));
    fs::copy(mnt.join("one-write"), mnt.join("copied")).unwrap();
    files.push((mnt.join("copied"), one_write));
    // The kernel sends the release of a closed file on its own time (a late one would find
    // the reader's open and keep the bytes: this test would fail, never pass wrongly).
    std::thread::sleep(std::time::Duration::from_secs(1));
    c.stop_chunkserver(0).unwrap();
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for path in paths {
            let read = fs::read(&path);
            if tx.send((path, read)).is_err() {
                return;
            }
        }
    });
    for (path, want) in &files {
        let name = path.display();
        match rx.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok((_, got)) => assert_same(&name.to_string(), &got.unwrap(), want),
            Err(_) => {
                // Let the waiting read end before the cluster goes.
                c.start_chunkserver(0).unwrap();
                let _ = rx.recv_timeout(std::time::Duration::from_secs(60));
                panic!("{name} waited for a chunkserver: not in the kernel's cache");
            }
        }
    }
}

/// Bytes a write-out kept for the kernel's cache are dropped when the file changes before
/// the last close would hand them over: a write over them, a truncating open through another
/// descriptor, a truncation (the kernel would take the old bytes, or the file's old end,
/// with them).
#[test]
fn changes_before_the_last_close_are_not_undone_by_kept_pages() {
    use std::os::unix::fs::FileExt;
    let mut c = cluster(1);
    let mnt = c.mount().unwrap();
    let long = random_bytes(62, 10_000);
    // Small plain reads: no stat, and no read past the size the kernel knows, which would
    // fetch the size afresh.
    let read_plainly = |path: &std::path::Path| {
        let mut f = fs::File::open(path).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1000];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    };
    // Written out by an fsync while the descriptor stays open, then partly written over.
    let path = mnt.join("overwritten");
    let f = fs::File::create(&path).unwrap();
    f.write_all_at(&long, 0).unwrap();
    f.sync_all().unwrap();
    f.write_all_at(&[7u8; 100], 5000).unwrap();
    drop(f);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut want = long.clone();
    want[5000..5100].fill(7);
    assert_same("after a write over kept bytes", &read_plainly(&path), &want);
    // Written out by an fsync while the descriptor stays open; another open truncates.
    let path = mnt.join("reopened");
    let first = fs::File::create(&path).unwrap();
    first.write_all_at(&long, 0).unwrap();
    first.sync_all().unwrap();
    drop(fs::File::create(&path).unwrap());
    drop(first);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_same("after a truncating open", &read_plainly(&path), b"");
    // Written out, then cut by ftruncate on the same descriptor.
    let path = mnt.join("cut");
    let f = fs::File::create(&path).unwrap();
    f.write_all_at(&long, 0).unwrap();
    f.sync_all().unwrap();
    f.set_len(50).unwrap();
    drop(f);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_same("after ftruncate", &read_plainly(&path), &long[..50]);
}
