//! POSIX semantics through the real mount: what pjdfstest and fsx check, one behaviour per
//! test, with std::fs and a few commands run as another user.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moose_tests::data::{assert_same, copy_file_range, random_bytes};
use moose_tests::{ClusterSpec, LocalCluster};

const MIB: usize = 1 << 20;
const CHUNK: u64 = 64 << 20;
/// The user and group other-user commands run as.
const NOBODY: u32 = 65534;

fn cluster() -> LocalCluster {
    if let Err(why) = moose_tests::fuse_available() {
        panic!("cannot run the POSIX tests: {why}");
    }
    let c = LocalCluster::start(ClusterSpec {
        chunkservers: 2,
        ..Default::default()
    })
    .expect("cluster starts");
    // Other users must reach the mount point inside the test's private folder.
    fs::set_permissions(c.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    c
}

/// What `f` returns, and how many master requests it cost (the status queries that count
/// them taken out).
fn master_requests<T>(c: &LocalCluster, f: impl FnOnce() -> T) -> (T, u64) {
    let served = || c.cluster_info().unwrap()["ops_total"].as_u64().unwrap();
    // What a query costs by itself: the least step between queries, seen twice more in a row.
    // Changes answered ahead land at the master after their answer: the pauses between the
    // queries let those of the steps before `f` land first.
    let mut prev = served();
    let (mut overhead, mut seen) = (u64::MAX, 0);
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(20));
        let now = served();
        let step = now - prev;
        prev = now;
        if step < overhead {
            (overhead, seen) = (step, 0);
        } else if step == overhead {
            seen += 1;
            if seen == 2 {
                break;
            }
        } else {
            seen = 0;
        }
    }
    let before = served();
    let r = f();
    // Changes answered ahead leave the mount within 2 ms of their answer.
    std::thread::sleep(Duration::from_millis(20));
    (r, (served() - before).saturating_sub(overhead))
}

/// Runs `program args…` as user and group `NOBODY` (without supplementary groups: std drops
/// them when root changes the user); panics unless it succeeds.
fn as_nobody(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} as {NOBODY}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A mount whose kernel keeps names and attributes for a minute: nothing but the changes
/// themselves need the master.
fn mount_keeping_names(c: &mut LocalCluster) -> PathBuf {
    c.mount_with(&["-o", "mfsattrcacheto=60,mfsentrycacheto=60"])
        .unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o7777
}

/// The mode as `stat -c %a` asks for it: nothing but the mode (`statx` with `STATX_MODE`),
/// which the kernel answers from what it keeps unless that was dropped.
fn mode_alone(p: &Path) -> u32 {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a zeroed statx is a valid value of a plain C struct.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is NUL-terminated and `st` outlives the call.
    let r = unsafe { libc::statx(libc::AT_FDCWD, path.as_ptr(), 0, libc::STATX_MODE, &mut st) };
    assert_eq!(r, 0, "statx of {p:?}: {}", std::io::Error::last_os_error());
    u32::from(st.stx_mode) & 0o7777
}

fn create_with_mode(p: &Path, m: u32) {
    fs::write(p, b"data").unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    assert_eq!(mode(p), m);
}

#[test]
fn writing_or_truncating_as_another_user_clears_the_set_id_bits() {
    let mut c = cluster();
    let mnt = c.mount().unwrap();
    let f = mnt.join("setid");
    let path = f.to_str().unwrap();
    for before in [0o4777, 0o2777, 0o6777] {
        create_with_mode(&f, before);
        // `1<>` opens for reading and writing without truncating.
        as_nobody("sh", &["-c", "printf x 1<>\"$0\"", path]);
        assert_eq!(
            mode_alone(&f),
            0o777,
            "write to a {before:o} file, mode alone"
        );
        assert_eq!(mode(&f), 0o777, "write to a {before:o} file");
        create_with_mode(&f, before);
        as_nobody("truncate", &["-s", "1", path]);
        assert_eq!(
            mode_alone(&f),
            0o777,
            "truncation of a {before:o} file, mode alone"
        );
        assert_eq!(mode(&f), 0o777, "truncation of a {before:o} file");
        assert_eq!(fs::metadata(&f).unwrap().len(), 1);
    }
    // A set-group-ID file without group execute is left alone, and so is root's write.
    create_with_mode(&f, 0o2767);
    as_nobody("sh", &["-c", "printf x 1<>\"$0\"", path]);
    assert_eq!(mode(&f), 0o2767);
    create_with_mode(&f, 0o6777);
    fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .write_all(b"root")
        .unwrap();
    assert_eq!(mode(&f), 0o6777);
}

#[test]
fn a_buffered_write_moves_the_modification_time_at_once() {
    let mut c = cluster();
    let mnt = c.mount().unwrap();
    let p = mnt.join("times");
    fs::write(&p, b"old").unwrap();
    let past = UNIX_EPOCH + Duration::from_secs(946_684_800);
    fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(past)
        .unwrap();
    assert_eq!(fs::metadata(&p).unwrap().modified().unwrap(), past);
    let before = SystemTime::now() - Duration::from_secs(1);
    let mut f = fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all(b"new data").unwrap();
    // Still buffered in the mount: fstat must already show the change.
    let m = f.metadata().unwrap();
    assert!(m.modified().unwrap() >= before, "mtime after write: {m:?}");
    assert!(m.ctime() >= before.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64);
    assert_eq!(m.len(), 8);
    drop(f);
    let m = fs::metadata(&p).unwrap();
    assert!(m.modified().unwrap() >= before, "mtime after close: {m:?}");
    assert_eq!(fs::read(&p).unwrap(), b"new data");
}

#[test]
fn fsync_after_a_truncation_cut_or_dropped_chunks_written_since_the_last_fsync() {
    fsync_after_a_truncation(true);
}

/// A write-only opener gets no read token (see hostile.rs), and must still be able to sync
/// the new version a truncation gave a chunk it wrote.
#[test]
fn fsync_of_a_write_only_file_after_a_truncation_syncs_the_cut_chunk() {
    fsync_after_a_truncation(false);
}

fn fsync_after_a_truncation(read_too: bool) {
    let mut c = cluster();
    let mnt = c.mount().unwrap();
    let p = mnt.join("cut");
    let mut f = fs::OpenOptions::new()
        .read(read_too)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&p)
        .unwrap();
    let head = random_bytes(1, MIB);
    f.write_all(&head).unwrap();
    f.seek(SeekFrom::Start(CHUNK + 5)).unwrap();
    f.write_all(&head).unwrap();
    // The truncation writes the buffer out, then cuts the first chunk (which gets a new
    // version) and drops the second (which the chunkservers then delete).
    f.set_len(1000).unwrap();
    let tail = random_bytes(2, 4096);
    f.seek(SeekFrom::Start(CHUNK + 10)).unwrap();
    f.write_all(&tail).unwrap();
    f.sync_all().expect("fsync after the truncation");
    drop(f);
    drop_pages_of(&p);
    let got = fs::read(&p).unwrap();
    assert_eq!(got.len() as u64, CHUNK + 10 + 4096);
    assert_same("head", &got[..1000], &head[..1000]);
    assert!(got[1000..(CHUNK + 10) as usize].iter().all(|b| *b == 0));
    assert_same("tail", &got[(CHUNK + 10) as usize..], &tail);
}

/// The fsync of a write-only descriptor after a truncation learns where the cut chunk is with
/// a token that only syncs. A read through another descriptor of the same mount then asks
/// for a location of its own: no chunkserver is asked with that token (each would refuse it
/// and log a warning that reads like a forged token).
#[test]
fn a_read_after_a_write_only_fsync_is_not_refused_by_the_chunkservers() {
    use std::io::Read;
    let mut c = cluster();
    let mnt = c.mount().unwrap();
    let p = mnt.join("cut");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&p)
        .unwrap();
    let data = random_bytes(3, MIB);
    // In the second chunk: the first one's location comes with every open for reading.
    f.seek(SeekFrom::Start(CHUNK)).unwrap();
    f.write_all(&data).unwrap();
    f.set_len(CHUNK + 4096).unwrap();
    f.sync_all().expect("fsync after the truncation");
    drop_pages_of(&p);
    let mut r = fs::File::open(&p).unwrap();
    r.seek(SeekFrom::Start(CHUNK)).unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert_same("the second chunk", &got, &data[..4096]);
    drop((f, r));
    for i in 0..2 {
        let log = fs::read_to_string(c.chunkservers[i].data.join("moose-chunkserver.log"))
            .unwrap_or_default();
        assert!(
            !log.contains("refused"),
            "chunkserver {i} refused a request:\n{log}"
        );
    }
}

/// Drops the kernel's pages of `path` (clean after a close or fsync), so that the next read
/// reaches the cluster. Not `LocalCluster::drop_caches`: that drops every cache of the
/// machine, under the tests running beside this one that count on theirs.
fn drop_pages_of(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).unwrap();
    // SAFETY: a plain system call on a descriptor this function owns.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise(DONTNEED) of {}", path.display());
}

/// `getxattr` of `name` on `path`: the value, or the errno.
fn get_xattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let (p, n) = (c_path(path), std::ffi::CString::new(name).unwrap());
    let mut buf = vec![0u8; 256];
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    buf.truncate(len as usize);
    Ok(buf)
}

/// The names `listxattr` gives for `path`.
fn list_xattrs(path: &Path) -> Vec<String> {
    let p = c_path(path);
    let mut buf = vec![0u8; 1024];
    let len = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(len >= 0, "listxattr: {}", std::io::Error::last_os_error());
    buf[..len as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8(n.to_vec()).unwrap())
        .collect()
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let (p, n) = (c_path(path), std::ffi::CString::new(name).unwrap());
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {name}: {}", std::io::Error::last_os_error());
}

/// The errnos (`None`: it worked) of setting `name` to `value` on `path`, removing it, and
/// reading it back.
fn xattr_errnos(path: &Path, name: &str, value: &[u8]) -> (Option<i32>, Option<i32>, Option<i32>) {
    let (p, n) = (c_path(path), std::ffi::CString::new(name).unwrap());
    let errno = |r: i32| (r != 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap());
    // SAFETY: C strings and a buffer that outlive the calls.
    let set = errno(unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    });
    let removed = errno(unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) });
    (set, removed, get_xattr(path, name).err())
}

#[test]
fn posix_acls_are_refused_by_the_mount_itself() {
    let mut c = cluster();
    let f = c.mount().unwrap().join("f");
    fs::write(&f, b"x").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
    // What `cp -a` sets on every file it copies: owner rw-, group r--, other --- .
    let acl: [u8; 28] = [
        2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 4, 0, 4, 0, 255, 255, 255, 255, 32, 0, 0, 0,
        255, 255, 255, 255,
    ];
    let (errnos, asked) = master_requests(&c, || xattr_errnos(&f, "system.posix_acl_access", &acl));
    let refused = Some(libc::EOPNOTSUPP);
    assert_eq!(errnos, (refused, refused, refused));
    assert_eq!(asked, 0, "refusing ACLs cost {asked} master requests");
    assert_eq!(mode(&f) & 0o777, 0o640);
}

#[test]
fn selinux_labels_are_refused_by_the_mount_itself_and_other_security_names_kept() {
    let mut c = cluster();
    let f = c.mount().unwrap().join("f");
    fs::write(&f, b"x").unwrap();
    // `ls -l` asks for the label of every file it lists, until told it is not supported.
    let (errnos, asked) = master_requests(&c, || {
        xattr_errnos(&f, "security.selinux", b"system_u:object_r:fusefs_t:s0")
    });
    let refused = Some(libc::EOPNOTSUPP);
    assert_eq!(errnos, (refused, refused, refused));
    assert_eq!(asked, 0, "refusing labels cost {asked} master requests");
    // Other names of the security namespace are kept as before.
    set_xattr(&f, "security.label", b"blue");
    assert_eq!(get_xattr(&f, "security.label"), Ok(b"blue".to_vec()));
    assert_eq!(list_xattrs(&f), vec!["security.label".to_string()]);
}

fn c_path(path: &Path) -> std::ffi::CString {
    std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())).unwrap()
}

#[test]
fn attributes_right_after_a_write_come_from_the_mount_and_follow_its_own_changes() {
    let mut c = cluster();
    let a = c.mount().unwrap();
    let b = c.mount().unwrap();
    let mut asked = 0;
    for i in 0..10 {
        let f = a.join(format!("f{i}"));
        let mut w = fs::File::create(&f).unwrap();
        // Another handle stays open, so that the close sends no release to the master.
        let keep = fs::File::open(&f).unwrap();
        w.write_all(&[7u8; 5000]).unwrap();
        drop(w);
        let (here, cost) = master_requests(&c, || fs::metadata(&f).unwrap());
        asked += cost;
        assert_eq!(here.len(), 5000);
        let there = fs::metadata(b.join(format!("f{i}"))).unwrap();
        assert_eq!(
            (here.mtime(), here.mtime_nsec(), here.ctime_nsec()),
            (there.mtime(), there.mtime_nsec(), there.ctime_nsec()),
            "the attributes the write landed with are the master's"
        );
        drop(keep);
    }
    assert!(
        asked <= 2,
        "10 stats after a close cost {asked} master requests"
    );

    // A change made here after the write (another name removed) is not hidden by them.
    fs::hard_link(a.join("f0"), a.join("g")).unwrap();
    let mut w = fs::OpenOptions::new()
        .append(true)
        .open(a.join("f0"))
        .unwrap();
    w.write_all(b"more").unwrap();
    drop(w);
    fs::remove_file(a.join("g")).unwrap();
    let m = fs::metadata(a.join("f0")).unwrap();
    assert_eq!((m.nlink(), m.len()), (1, 5004));
}

#[test]
fn a_chown_right_after_new_times_asks_the_master_once() {
    let mut c = cluster();
    let mnt = c.mount().unwrap();
    let when = UNIX_EPOCH + Duration::from_secs(1_000_000);
    for i in 0..5 {
        // As `tar -x` and `cp -a` do: write, set the times, then the owner, on the open file.
        let mut f = fs::File::create(mnt.join(format!("f{i}"))).unwrap();
        f.write_all(&[1u8; 3000]).unwrap();
        f.set_times(fs::FileTimes::new().set_modified(when))
            .unwrap();
        // The kernel asks for fresh attributes before a chown (to clear set-id bits): the
        // mount answers with what the change of times just landed with.
        let ((), asked) = master_requests(&c, || {
            std::os::unix::fs::fchown(&f, Some(NOBODY), Some(NOBODY)).unwrap()
        });
        assert_eq!(
            asked, 1,
            "fchown after futimens cost {asked} master requests"
        );
        let m = f.metadata().unwrap();
        assert_eq!((m.uid(), m.gid(), m.len()), (NOBODY, NOBODY, 3000));
        assert_eq!(m.modified().unwrap(), when);
    }
}

/// Whether `seen` turns true within 10 s: a notice from the master reaches a mount in
/// milliseconds, while a mount that missed it would go on answering from what it keeps.
fn eventually(mut seen: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if seen() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Whether `path` shows up within 10 s (see [`eventually`]).
fn appears(path: &Path) -> bool {
    eventually(|| path.exists())
}

#[test]
fn a_mount_answers_for_missing_names_in_folders_it_knows_and_sees_other_mounts_changes() {
    let mut c = cluster();
    let a = c.mount().unwrap();
    let b = c.mount().unwrap();
    // Mount a made d (it knows it empty); mount b listed it.
    fs::create_dir(a.join("d")).unwrap();
    fs::write(a.join("d/here"), b"x").unwrap();
    assert_eq!(fs::read_dir(b.join("d")).unwrap().count(), 1);
    let ((), asked) = master_requests(&c, || {
        for i in 0..50 {
            assert!(!a.join(format!("d/none{i}")).exists());
            assert!(!b.join(format!("d/none{i}")).exists());
        }
    });
    assert!(
        asked <= 2,
        "100 lookups of missing names cost {asked} master requests"
    );

    // Names made, renamed and removed on one mount are seen on the other.
    for i in 0..5 {
        fs::write(a.join(format!("d/a{i}")), b"x").unwrap();
        assert!(appears(&b.join(format!("d/a{i}"))), "b sees d/a{i}");
        fs::read_dir(b.join("d")).unwrap().for_each(drop);
        fs::rename(b.join(format!("d/a{i}")), b.join(format!("d/b{i}"))).unwrap();
        assert!(appears(&a.join(format!("d/b{i}"))), "a sees d/b{i}");
        fs::create_dir(b.join(format!("d/sub{i}"))).unwrap();
        assert!(appears(&a.join(format!("d/sub{i}"))), "a sees d/sub{i}");
        // b made sub{i}: a name a makes in it is seen by b.
        fs::write(a.join(format!("d/sub{i}/f")), b"y").unwrap();
        assert!(appears(&b.join(format!("d/sub{i}/f"))), "b sees d/sub{i}/f");
    }
    fs::remove_file(a.join("d/here")).unwrap();
    let start = std::time::Instant::now();
    while b.join("d/here").exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!b.join("d/here").exists(), "b sees d/here removed");

    // A mount whose connection was lost forgets what it knew: notices may have been missed.
    fs::read_dir(b.join("d")).unwrap().for_each(drop);
    c.stop_master().unwrap();
    c.start_master().unwrap();
    c.wait_for_chunkservers(2).unwrap();
    c.wait_until(Duration::from_secs(30), "mount a reconnects", |_| {
        Ok(fs::write(a.join("d/late"), b"z").is_ok())
    })
    .unwrap();
    assert!(
        appears(&b.join("d/late")),
        "b sees d/late after the restart"
    );
}

#[test]
fn removing_what_a_listing_named_costs_no_lookups() {
    let mut c = cluster();
    let a = c.mount().unwrap();
    let b = c.mount().unwrap();
    // Made through b: a's kernel has none of the names (no global cache drop, which would
    // also drop what other tests running meanwhile keep).
    fs::create_dir(b.join("d")).unwrap();
    for i in 0..600 {
        fs::File::create(b.join(format!("d/f{i:04}"))).unwrap();
    }
    // As `rm -rf` does: list the folder whole (names only), then unlink what it named. Every
    // listed entry comes with its attributes, so the unlinks need no lookup of their own.
    let d = a.join("d");
    let (removed, asked) = master_requests(&c, || {
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.iter().for_each(|p| fs::remove_file(p).unwrap());
        names.len()
    });
    assert_eq!(removed, 600);
    assert!(
        asked < 660,
        "listing and removing 600 files cost {asked} master requests (a lookup per name?)"
    );
}

#[test]
fn calls_the_mount_does_not_serve_are_refused_without_a_warning() {
    let mut c = cluster();
    let mnt = c.mount().unwrap();
    // The log's timestamps begin with the UTC time to the second.
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S"])
        .output()
        .unwrap();
    let since = String::from_utf8(date.stdout).unwrap().trim().to_string();
    let f = fs::File::create(mnt.join("f")).unwrap();
    // SAFETY: plain system calls on an open descriptor.
    let rc = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&f), 0, 0, 4096) };
    let err = std::io::Error::last_os_error().raw_os_error();
    assert_eq!((rc, err), (-1, Some(libc::EOPNOTSUPP)));
    // cp copies with copy_file_range(2) first; the kernel falls back to reads and writes.
    fs::write(mnt.join("src"), b"some bytes").unwrap();
    let out = Command::new("cp")
        .arg(mnt.join("src"))
        .arg(mnt.join("dst"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(fs::read(mnt.join("dst")).unwrap(), b"some bytes");
    let log = fs::read_to_string("/var/log/moose-mount.log").unwrap_or_default();
    let noise: Vec<&str> = log
        .lines()
        .filter(|l| l.get(..since.len()).is_some_and(|t| t >= since.as_str()))
        .filter(|l| {
            l.contains("[Not Implemented] fallocate")
                || l.contains("[Not Implemented] copy_file_range")
        })
        .collect();
    assert!(noise.is_empty(), "the mount logged {noise:?}");
}

/// Runs `f` on a thread and returns whether it finished within 10 s (the thread is left to
/// finish later otherwise).
fn done_within_10s(f: impl FnOnce() + Send + 'static) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(10)).is_ok()
}

/// One `getdents64` call on `dir`: the bytes of entries it gave (0 at the end).
fn getdents(dir: &fs::File) -> i64 {
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: the buffer outlives the call and its length is passed with it.
    unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            dir.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    }
}

#[test]
fn the_end_of_a_listing_is_answered_by_the_mount() {
    let mut c = cluster();
    let a = c.mount().unwrap();
    fs::create_dir(a.join("d")).unwrap();
    for i in 0..5 {
        fs::write(a.join(format!("d/f{i}")), b"x").unwrap();
    }
    let dir = fs::File::open(a.join("d")).unwrap();
    assert!(getdents(&dir) > 0, "no entries");
    // Every entry came in that answer. The kernel asks once more to hear that nothing
    // follows: the mount knows, the master is not asked.
    let paused = c.pause_master().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let answered = done_within_10s(move || {
        let _ = tx.send(getdents(&dir));
    });
    drop(paused);
    assert!(answered, "the end of a listing waited for a frozen master");
    assert_eq!(rx.recv().unwrap(), 0);
}

/// The kernel leaves dropping set-ID bits to the mount and the master
/// (`FUSE_HANDLE_KILLPRIV_V2`); see also
/// `writing_or_truncating_as_another_user_clears_the_set_id_bits`.
#[test]
fn a_new_owner_drops_set_id_bits_and_root_truncating_keeps_them() {
    let mut c = cluster();
    let a = c.mount().unwrap();
    let f = a.join("f");
    let path = f.to_str().unwrap().to_owned();
    fs::write(&f, b"x").unwrap();
    let set = |m: u32| fs::set_permissions(&f, fs::Permissions::from_mode(m)).unwrap();

    set(0o6777);
    let truncated = Command::new("truncate").args(["-s", "1", &path]).status();
    assert!(truncated.unwrap().success());
    assert_eq!(mode(&f), 0o6777, "after root's truncation");
    // A new owner drops the set-user-ID bit, and the set-group-ID bit if the group may
    // execute the file; even root's chown, even to the same owner.
    set(0o6755);
    std::os::unix::fs::chown(&f, Some(NOBODY), None).unwrap();
    assert_eq!(mode_alone(&f), 0o755, "after root's chown, mode alone");
    assert_eq!(mode(&f), 0o755, "after root's chown");
    set(0o6745);
    std::os::unix::fs::chown(&f, Some(NOBODY), Some(0)).unwrap();
    assert_eq!(mode(&f), 0o2745, "after root's chown, no group execute");
    // Another mount sees the same.
    let b = c.mount().unwrap();
    assert_eq!(mode(&b.join("f")), 0o2745);
}

#[test]
fn the_size_of_a_file_being_written_is_answered_by_the_mount() {
    use std::os::unix::fs::FileExt;
    let mut c = cluster();
    let a = c.mount().unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(a.join("f"))
        .unwrap();
    f.write_all_at(b"first", 0).unwrap();
    f.sync_data().unwrap();
    // More data, held in the mount's buffer. A read past the end (as sqlite makes on its
    // journal) has the kernel ask for the size afresh: the mount knows it, the frozen master
    // is not asked.
    let paused = c.pause_master().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let answered = done_within_10s(move || {
        f.write_all_at(b" and second", 5).unwrap();
        let mut buf = [0u8; 8];
        let past_end = f.read_at(&mut buf, 64).unwrap();
        let size = f.metadata().unwrap().len();
        // Closed only once the master runs again: a close writes the buffer out.
        let _ = tx.send((past_end, size, f));
    });
    drop(paused);
    assert!(
        answered,
        "the size of a file being written waited for a frozen master"
    );
    let (past_end, size, f) = rx.recv().unwrap();
    drop(f);
    assert_eq!((past_end, size), (0, 16));
    assert_eq!(fs::read(a.join("f")).unwrap(), b"first and second");
}

#[test]
fn a_change_answered_ahead_leaves_for_the_master_with_nothing_behind_it() {
    let mut c = cluster();
    let a = mount_keeping_names(&mut c);
    fs::create_dir(a.join("d")).unwrap();
    fs::write(a.join("d/f"), b"x").unwrap();
    let b = c.mount().unwrap();
    let names = |d: &Path| -> Vec<String> {
        fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(&b.join("d")), ["f"]);
    // Answered by mount a before the master, and written to it after that answer: not only
    // with a's next request (none follows) or its keep-alive (10 s).
    fs::remove_file(a.join("d/f")).unwrap();
    let gone = (0..30).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        names(&b.join("d")).is_empty()
    });
    assert!(gone, "the unlink did not reach the master within 3 s");
}

#[test]
fn removals_and_changes_of_attributes_the_mount_can_foresee_do_not_wait_for_the_master() {
    let mut c = cluster();
    // Long cache times: nothing but the changes themselves would need the master.
    let a = mount_keeping_names(&mut c);
    fs::create_dir(a.join("d")).unwrap();
    for i in 0..5 {
        fs::write(a.join(format!("d/f{i}")), b"x").unwrap();
    }
    let touched = fs::File::create(a.join("d/touched")).unwrap();
    let when = UNIX_EPOCH + Duration::from_secs(1_000_000);

    // The master is frozen: the times of the file just made here and the removal of names
    // in a folder made here are answered by the mount, as `touch` and `rm -rf` make them.
    let paused = c.pause_master().unwrap();
    let d = a.join("d");
    let answered = done_within_10s(move || {
        touched
            .set_times(fs::FileTimes::new().set_modified(when))
            .unwrap();
        // As `tar -x` does next, as root.
        std::os::unix::fs::fchown(&touched, Some(NOBODY), Some(NOBODY)).unwrap();
        touched
            .set_permissions(fs::Permissions::from_mode(0o600))
            .unwrap();
        for i in 0..5 {
            fs::remove_file(d.join(format!("f{i}"))).unwrap();
        }
    });
    drop(paused);
    assert!(
        answered,
        "futimens, fchown, fchmod and unlink waited for a frozen master"
    );

    // The master made every change, in order, as another mount sees.
    let b = c.mount().unwrap();
    let names: Vec<String> = fs::read_dir(b.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["touched"]);
    let m = fs::metadata(b.join("d/touched")).unwrap();
    assert_eq!(m.modified().unwrap(), when);
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (NOBODY, NOBODY, 0o600)
    );
    // A name removed ahead can be made again at once (b hears of it from the master).
    fs::write(a.join("d/f0"), b"again").unwrap();
    assert!(appears(&b.join("d/f0")), "b sees d/f0 made again");
    assert_eq!(fs::read(b.join("d/f0")).unwrap(), b"again");
}

#[test]
fn creates_in_a_folder_the_mount_knows_do_not_wait_for_the_master_and_agree_with_it() {
    let mut c = cluster();
    let a = mount_keeping_names(&mut c);
    let d = a.join("d");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("first"), b"x").unwrap();
    // The master's word that the cluster has no quotas holds for a second, and a create
    // answered ahead needs it: on a busy machine a frozen master may outlast it, so try
    // again (each try begins with a create that brings fresh word).
    let made = (0..3).find(|&attempt| {
        fs::write(d.join(format!("news{attempt}")), b"x").unwrap();
        let paused = c.pause_master().unwrap();
        let folder = d.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let maker = std::thread::spawn(move || {
            for j in 0..3 {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o640)
                    .open(folder.join(format!("new{attempt}-{j}")))
                    .unwrap();
            }
            let _ = tx.send(());
        });
        let answered = rx.recv_timeout(Duration::from_secs(5)).is_ok();
        drop(paused);
        maker.join().unwrap();
        answered
    });
    let attempt = made.expect("every create waited for a frozen master");

    // What the kernel was told is what the master made, times included.
    let b = c.mount().unwrap();
    for j in 0..3 {
        let name = format!("d/new{attempt}-{j}");
        let here = fs::metadata(a.join(&name)).unwrap();
        let there = fs::metadata(b.join(&name)).unwrap();
        assert_eq!(here.mode() & 0o7777, 0o640 & !umask());
        for (what, x, y) in [
            ("inode", here.ino(), there.ino()),
            ("mode", u64::from(here.mode()), u64::from(there.mode())),
            ("owner", u64::from(here.uid()), u64::from(there.uid())),
            ("group", u64::from(here.gid()), u64::from(there.gid())),
            ("size", here.size(), there.size()),
        ] {
            assert_eq!(x, y, "{name}: {what}");
        }
        assert_eq!(
            (
                here.mtime(),
                here.mtime_nsec(),
                here.ctime(),
                here.ctime_nsec()
            ),
            (
                there.mtime(),
                there.mtime_nsec(),
                there.ctime(),
                there.ctime_nsec()
            ),
            "{name}: times"
        );
    }
    // Inode numbers made ahead are not handed out again.
    let other = fs::metadata(b.join("d/first")).unwrap().ino();
    fs::write(b.join("d/from-b"), b"y").unwrap();
    let from_b = fs::metadata(b.join("d/from-b")).unwrap().ino();
    assert!(
        from_b != other
            && (0..3).all(|j| {
                fs::metadata(b.join(format!("d/new{attempt}-{j}")))
                    .unwrap()
                    .ino()
                    != from_b
            })
    );
}

#[test]
fn times_set_right_after_a_create_do_not_wait_for_the_master_while_other_folders_change() {
    let mut c = cluster();
    let a = mount_keeping_names(&mut c);
    for d in ["d1", "d2"] {
        fs::create_dir(a.join(d)).unwrap();
    }
    let when = UNIX_EPOCH + Duration::from_secs(2_000_000);
    // `touch` in two folders at once, as parallel writers make them: the create in d2 goes
    // to the master between the create of d1's file and its new times, and changes nothing
    // of that file, so the mount still answers the times. As in the test above, try again
    // when a frozen master outlasted its word that there are no quotas.
    let made = (0..3).find(|&attempt| {
        fs::write(a.join(format!("d1/news{attempt}")), b"x").unwrap();
        let paused = c.pause_master().unwrap();
        let (d1, d2) = (a.join("d1"), a.join("d2"));
        let (tx, rx) = std::sync::mpsc::channel();
        let toucher = std::thread::spawn(move || {
            let f = fs::File::create(d1.join(format!("f{attempt}"))).unwrap();
            fs::File::create(d2.join(format!("g{attempt}"))).unwrap();
            f.set_times(fs::FileTimes::new().set_modified(when))
                .unwrap();
            let _ = tx.send(());
        });
        let answered = rx.recv_timeout(Duration::from_secs(5)).is_ok();
        drop(paused);
        toucher.join().unwrap();
        answered
    });
    let attempt = made.expect("the times of a file just made waited for a frozen master");
    let b = c.mount().unwrap();
    let there = fs::metadata(b.join(format!("d1/f{attempt}"))).unwrap();
    assert_eq!(there.modified().unwrap(), when);
    assert!(b.join(format!("d2/g{attempt}")).exists());
}

/// Whether a warning of the mount on `mnt` with every one of `parts` shows in the mounts'
/// log within 10 s.
fn mount_log_warns(mnt: &Path, parts: &[&str]) -> bool {
    let warning = format!(" WARN {}: ", mnt.display());
    eventually(|| {
        fs::read_to_string("/var/log/moose-mount.log").is_ok_and(|log| {
            log.lines()
                .any(|l| l.contains(&warning) && parts.iter().all(|p| l.contains(p)))
        })
    })
}

#[test]
fn each_line_of_the_shared_mount_log_names_the_mount_that_wrote_it() {
    let mut c = cluster();
    let a = c.mount().unwrap();
    let b = c.mount().unwrap();
    for mnt in [&a, &b] {
        let line = format!(" INFO {}: ", mnt.display());
        let mounted = format!("mounted on {}", mnt.display());
        assert!(
            eventually(
                || fs::read_to_string("/var/log/moose-mount.log").is_ok_and(|log| log
                    .lines()
                    .any(|l| l.contains(&line) && l.contains(&mounted)))
            ),
            "no line of the mount on {} names it",
            mnt.display()
        );
    }
}

/// The process's umask (read without changing it for long: tests run in threads, and none
/// of them depends on it).
fn umask() -> u32 {
    let m = fs::read_to_string("/proc/self/status").unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        .unwrap()
}

/// A folder `name` of `NOBODY` made through a mount whose kernel keeps names and attributes
/// for a minute (where that kernel allows, on what it keeps, a change the master then
/// refuses), and another mount; returns the other mount and the folder.
fn folder_of_nobody(c: &mut LocalCluster, name: &str) -> (PathBuf, PathBuf) {
    let a = mount_keeping_names(c);
    let b = c.mount().unwrap();
    let d = a.join(name);
    fs::create_dir(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(NOBODY), Some(NOBODY)).unwrap();
    (b, d)
}

#[test]
fn a_create_the_master_refuses_after_the_mount_answered_it_is_logged_and_undone() {
    let mut c = cluster();
    let (b, d) = folder_of_nobody(&mut c, "refused-create-folder");
    assert_eq!(mode(&d), 0o755);
    // A create here brings the master's word on quotas, which creates answered ahead need.
    fs::write(d.join("other"), b"x").unwrap();
    // Another mount takes the owner's write permission away; a's kernel still allows the
    // create on the mode it keeps, and the mount answers it.
    fs::set_permissions(
        b.join("refused-create-folder"),
        fs::Permissions::from_mode(0o555),
    )
    .unwrap();
    let victim = d.join("refused-create");
    // A create and a close only (touch would go on to set the file's times, which may reach
    // the master after the refusal and fail).
    let create = format!(": > '{}'", victim.display());
    as_nobody("sh", &["-c", &create]);
    assert!(
        mount_log_warns(
            d.parent().unwrap(),
            &["did not create 'refused-create'", "permission denied"]
        ),
        "the mount logged no warning about the refused create"
    );
    assert!(!b.join("refused-create-folder/refused-create").exists());
    // The kernel of mount a is told to drop the name it was given.
    assert!(
        eventually(|| !victim.exists()),
        "mount a still shows the file the master did not make"
    );
}

#[test]
fn with_dirsync_a_removal_waits_for_the_master() {
    let mut c = cluster();
    let a = c.mount_with(&["-o", "dirsync"]).unwrap();
    fs::create_dir(a.join("d")).unwrap();
    fs::write(a.join("d/f"), b"x").unwrap();
    let paused = c.pause_master().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let f = a.join("d/f");
    let remover = std::thread::spawn(move || {
        let r = fs::remove_file(f);
        let _ = tx.send(());
        r
    });
    // Frozen, the master cannot have answered: the unlink must still be waiting.
    assert!(
        rx.recv_timeout(Duration::from_secs(1)).is_err(),
        "the unlink returned while the master was frozen"
    );
    drop(paused);
    remover.join().unwrap().unwrap();
    assert!(!a.join("d/f").exists());
}

#[test]
fn a_removal_the_master_refuses_after_the_mount_answered_it_is_logged_and_the_name_shows_again() {
    let mut c = cluster();
    let (b, d) = folder_of_nobody(&mut c, "refusal-folder");
    let victim = d.join("refused-removal");
    as_nobody("touch", &[victim.to_str().unwrap()]);
    // Mount a knows the folder whole and its kernel keeps the folder's mode for a minute.
    fs::read_dir(&d).unwrap().for_each(drop);
    assert_eq!(mode(&d), 0o755);
    // Another mount takes the owner's write permission away meanwhile.
    fs::set_permissions(b.join("refusal-folder"), fs::Permissions::from_mode(0o555)).unwrap();
    // a's kernel allows the removal on what it keeps, so the mount answers it; the master,
    // which knows better, refuses it.
    as_nobody("rm", &[victim.to_str().unwrap()]);
    assert!(
        mount_log_warns(
            d.parent().unwrap(),
            &["did not remove 'refused-removal'", "permission denied"]
        ),
        "the mount logged no warning about the refused removal"
    );
    assert!(b.join("refusal-folder/refused-removal").exists());
    // What mount a kept about the folder is dropped: it finds the name again.
    assert!(appears(&victim), "mount a shows the name again");
}

#[test]
fn mounts_changing_the_same_folders_at_once_agree_on_every_name_afterwards() {
    let mut c = cluster();
    let a = c.mount().unwrap();
    let b = c.mount().unwrap();
    const FOLDERS: u64 = 3;
    const NAMES: u64 = 24;
    for d in 0..FOLDERS {
        fs::create_dir(a.join(format!("d{d}"))).unwrap();
    }
    // Two threads per mount create, remove, rename, list and look up names in the same
    // folders; errors from the races between them (a name gone, or there) are expected.
    let workers: Vec<_> = [&a, &b, &a, &b]
        .into_iter()
        .enumerate()
        .map(|(t, m)| {
            let m = m.clone();
            std::thread::spawn(move || {
                let mut seed = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(t as u64 + 1);
                let mut next = |n: u64| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33) % n
                };
                for _ in 0..1500 {
                    let p = m.join(format!("d{}/n{}", next(FOLDERS), next(NAMES)));
                    match next(6) {
                        0 | 1 => drop(fs::write(&p, b"x")),
                        2 => drop(fs::remove_file(&p)),
                        3 => {
                            let to = m.join(format!("d{}/n{}", next(FOLDERS), next(NAMES)));
                            drop(fs::rename(&p, to))
                        }
                        4 => drop(fs::read_dir(p.parent().unwrap()).map(|r| r.count())),
                        _ => drop(p.exists()),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    // What the kernels keep expires after 1 s; what the mounts know of folders does not.
    std::thread::sleep(Duration::from_millis(1500));
    let fresh = c.mount().unwrap();
    for d in 0..FOLDERS {
        let there: std::collections::HashSet<String> = fs::read_dir(fresh.join(format!("d{d}")))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        for n in 0..NAMES {
            let name = format!("n{n}");
            for m in [&a, &b] {
                assert_eq!(
                    m.join(format!("d{d}/{name}")).exists(),
                    there.contains(&name),
                    "{} sees d{d}/{name} wrongly",
                    m.display()
                );
            }
        }
    }
}

#[test]
fn with_mfsnegentrycacheto_the_kernel_keeps_a_missing_name_until_this_mount_makes_it() {
    let mut c = cluster();
    let a = c.mount().unwrap();
    let b = c.mount_with(&["-o", "mfsnegentrycacheto=60"]).unwrap();
    // A folder b never listed: b's lookups in it go to the master, once per name.
    fs::create_dir(a.join("d")).unwrap();
    assert!(b.join("d").is_dir());
    let ((), asked) = master_requests(&c, || {
        for _ in 0..20 {
            assert!(!b.join("d/x").exists());
        }
    });
    assert!(
        asked <= 2,
        "20 lookups of one missing name cost {asked} master requests"
    );
    // Made through b, the name is there at once.
    fs::write(b.join("d/x"), b"here").unwrap();
    assert_eq!(fs::read(b.join("d/x")).unwrap(), b"here");
}

#[test]
fn extended_attributes_set_on_one_mount_show_on_another_once_attributes_expire() {
    let mut c = cluster();
    let a = c.mount().unwrap();
    let b = c.mount().unwrap();
    fs::write(a.join("f"), b"x").unwrap();
    // Mount a learns that f has no extended attributes, and answers for it.
    fs::metadata(a.join("f")).unwrap();
    let ((), asked) = master_requests(&c, || {
        for _ in 0..20 {
            assert_eq!(
                get_xattr(&a.join("f"), "security.label"),
                Err(libc::ENODATA)
            );
            assert!(list_xattrs(&a.join("f")).is_empty());
        }
    });
    assert!(asked <= 2, "40 queries cost {asked} master requests");

    // Set through mount b: a sees it once the attributes it holds expire (1 s).
    set_xattr(&b.join("f"), "security.label", b"blue");
    set_xattr(&b.join("f"), "user.colour", b"red");
    std::thread::sleep(Duration::from_millis(1500));
    fs::metadata(a.join("f")).unwrap();
    assert_eq!(
        get_xattr(&a.join("f"), "security.label"),
        Ok(b"blue".to_vec())
    );
    let mut names = list_xattrs(&a.join("f"));
    names.sort();
    assert_eq!(names, ["security.label", "user.colour"]);

    // Set through mount a itself: seen at once.
    fs::write(a.join("g"), b"y").unwrap();
    fs::metadata(a.join("g")).unwrap();
    set_xattr(&a.join("g"), "security.label", b"green");
    assert_eq!(
        get_xattr(&a.join("g"), "security.label"),
        Ok(b"green".to_vec())
    );
    assert_eq!(list_xattrs(&a.join("g")), ["security.label"]);
    // A user. attribute of a file without any is still asked for at the master (which
    // checks that the caller may read the file).
    assert_eq!(get_xattr(&a.join("f"), "user.none"), Err(libc::ENODATA));
}

/// Whether the first bytes of `f` read as `want` within 10 s (see [`eventually`]).
fn reads_as(f: &fs::File, want: &[u8]) -> bool {
    use std::os::unix::fs::FileExt;
    let mut got = vec![0u8; want.len()];
    eventually(|| {
        f.read_exact_at(&mut got, 0).unwrap();
        got == want
    })
}

/// Writes `data` at the start of `path` and closes it.
fn overwrite_start(path: &Path, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, 0).unwrap();
}

#[test]
fn the_kernel_keeps_a_files_pages_across_its_own_writes_and_drops_them_when_another_mount_writes() {
    use std::os::unix::fs::FileExt;
    let mut c = cluster();
    let a = c.mount().unwrap();
    let b = c.mount().unwrap();
    let data = random_bytes(41, MIB);
    fs::write(a.join("f"), &data).unwrap();

    // Read back where it was written, after its close, with every chunkserver stopped: only
    // the kernel's pages can answer (a read with the pages dropped waits for a chunkserver).
    c.stop_chunkserver(0).unwrap();
    c.stop_chunkserver(1).unwrap();
    let path = a.join("f");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(fs::read(path)));
    let from_pages = rx.recv_timeout(Duration::from_secs(10));
    c.start_chunkserver(0).unwrap();
    c.start_chunkserver(1).unwrap();
    c.wait_for_chunkservers(2).unwrap();
    let dropped = "the kernel dropped its pages";
    let got = match from_pages {
        Ok(Ok(got)) => got,
        Ok(Err(e)) => panic!("reading back what the mount wrote failed ({e}): {dropped}"),
        Err(_) => {
            let _ = rx.recv();
            panic!("reading back what the mount wrote waited for a chunkserver: {dropped}")
        }
    };
    assert_same("read back on the writing mount", &got, &data);

    // Open on a while b overwrites its start in place: a's next reads see b's bytes.
    let f = fs::File::open(a.join("f")).unwrap();
    let mut head = vec![0u8; 4096];
    f.read_exact_at(&mut head, 0).unwrap();
    assert_same("first page on a", &head, &data[..4096]);
    let new = vec![0xABu8; 4096];
    overwrite_start(&b.join("f"), &new);
    assert!(
        reads_as(&f, &new),
        "an open file kept another mount's old bytes"
    );
    drop(f);

    // Closed on a, changed on b, opened again on a: read at once, not from old pages.
    fs::read(a.join("f")).unwrap();
    let newer = vec![0xCDu8; 4096];
    overwrite_start(&b.join("f"), &newer);
    let again = fs::read(a.join("f")).unwrap();
    assert_same("b's new first page, on a", &again[..4096], &newer);
    assert_same("the rest, on a", &again[4096..], &data[4096..]);
}

#[test]
fn a_small_file_opened_for_reading_is_read_without_asking_the_master_where_it_lies() {
    use std::io::Read;
    let mut c = cluster();
    let mnt = mount_keeping_names(&mut c);
    let path = mnt.join("small");
    let want = random_bytes(11, 100_000);
    fs::write(&path, &want).unwrap();
    drop_pages_of(&path);
    let mut f = fs::File::open(&path).unwrap();
    // The kernel asks for the attributes a write left stale before it reads: here, not
    // while the master stands still.
    fs::metadata(&path).unwrap();
    // The open said where the file's chunk lies: reading it needs only the chunkserver.
    let paused = c.pause_master().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let read = done_within_10s(move || {
        let mut got = Vec::new();
        let _ = tx.send(f.read_to_end(&mut got).map(|_| got));
    });
    drop(paused);
    assert!(
        read,
        "the read of a file opened before the master stopped waited for it"
    );
    assert_same("the small file", &rx.recv().unwrap().unwrap(), &want);
}

#[test]
fn copy_file_range_copies_what_a_reader_sees_even_data_the_mount_still_buffers() {
    let mut c = cluster();
    let mnt = c.mount().unwrap();
    // Three read-ahead segments and a bit: copied in pieces, as `cp` asks.
    let data = random_bytes(12, 3 * MIB + 123);
    fs::write(mnt.join("src"), &data).unwrap();
    let src = fs::File::open(mnt.join("src")).unwrap();
    let dst = fs::File::create(mnt.join("dst")).unwrap();
    let mut at = 0;
    while at < data.len() {
        let n = copy_file_range(&src, at as u64, &dst, at as u64, data.len());
        assert!(n > 0, "copy_file_range stopped at {at} of {}", data.len());
        at += n;
    }
    assert_eq!(copy_file_range(&src, at as u64, &dst, at as u64, 4096), 0);
    drop((src, dst));
    assert_same("the copy", &fs::read(mnt.join("dst")).unwrap(), &data);

    // From bytes written but not yet written out, into the middle of a file.
    let mut src = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.join("src"))
        .unwrap();
    src.seek(SeekFrom::Start(10)).unwrap();
    src.write_all(b"fresh").unwrap();
    let dst = fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("dst"))
        .unwrap();
    assert_eq!(copy_file_range(&src, 8, &dst, 2 * MIB as u64, 9), 9);
    drop((src, dst));
    let mut want = data.clone();
    want[2 * MIB..2 * MIB + 9].copy_from_slice(&[&data[8..10], b"fresh", &data[15..17]].concat());
    assert_same(
        "the copy changed in the middle",
        &fs::read(mnt.join("dst")).unwrap(),
        &want,
    );
}

#[test]
fn copying_into_a_set_id_file_as_another_user_clears_its_set_id_bits() {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let mut c = cluster();
    let mnt = c.mount().unwrap();
    let (src, dst) = (mnt.join("src"), mnt.join("dst"));
    fs::write(&src, b"new bytes").unwrap();
    fs::write(&dst, b"old bytes").unwrap();
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o6777)).unwrap();
    let (src, dst) = (
        CString::new(src.as_os_str().as_bytes()).unwrap(),
        CString::new(dst.as_os_str().as_bytes()).unwrap(),
    );
    // A child that copies as NOBODY: only system calls between fork and _exit.
    // SAFETY: the child calls nothing but system calls on memory prepared before the fork.
    let status = unsafe {
        let pid = libc::fork();
        if pid == 0 {
            let ok = libc::setgid(NOBODY) == 0 && libc::setuid(NOBODY) == 0 && {
                let i = libc::open(src.as_ptr(), libc::O_RDONLY);
                let o = libc::open(dst.as_ptr(), libc::O_WRONLY);
                let (mut a, mut b) = (0i64, 0i64);
                i >= 0 && o >= 0 && libc::copy_file_range(i, &mut a, o, &mut b, 9, 0) == 9
            };
            libc::_exit(if ok { 0 } else { 1 });
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        status
    };
    assert_eq!(status, 0, "the copy as {NOBODY} failed");
    let dst = mnt.join("dst");
    assert_eq!(fs::read(&dst).unwrap(), b"new bytes");
    assert_eq!(
        mode(&dst),
        0o777,
        "set-id bits left after another user's copy"
    );
}
