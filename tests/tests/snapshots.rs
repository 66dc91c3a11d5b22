//! Lazy snapshots (`moose-tool makesnapshot`) and the folder counters (`moose-tool dirinfo`),
//! on real daemons and a real mount.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use moose_tests::data::{assert_same, copy_file_range, random_bytes};
use moose_tests::{ClusterSpec, LocalCluster};
use serde_json::Value;

fn dirinfo(c: &LocalCluster, path: &Path) -> Value {
    let out = c
        .tool(&["dirinfo", "--json", path.to_str().unwrap()])
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

fn metadata_version(c: &LocalCluster) -> u64 {
    c.cluster_info().unwrap()["metadata_version"]
        .as_u64()
        .unwrap()
}

fn all_chunk_files(c: &LocalCluster) -> usize {
    (0..c.chunkservers.len())
        .map(|i| c.chunk_files(i).len())
        .sum()
}

/// A cluster of two chunkservers at goal 2, for the test named by `what`.
fn two_copies(what: &str, metalogger: bool) -> LocalCluster {
    if let Err(why) = moose_tests::fuse_available() {
        panic!("cannot run the {what} test: {why}");
    }
    LocalCluster::start(ClusterSpec {
        chunkservers: 2,
        default_goal: 2,
        metalogger,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn dirinfo_counts_a_tree_from_the_masters_counters() {
    let mut c = two_copies("dirinfo", false);
    let mnt = c.mount().unwrap();
    let top = mnt.join("top");
    let mut length = 0u64;
    for d in 0..3 {
        fs::create_dir_all(top.join(format!("d{d}/e"))).unwrap();
        for f in 0..4 {
            let len = 1000 * (d * 4 + f + 1);
            fs::write(
                top.join(format!("d{d}/e/f{f}")),
                random_bytes(d * 10 + f, len as usize),
            )
            .unwrap();
            length += len;
        }
    }
    let info = dirinfo(&c, &top);
    assert_eq!(info["directories"], 7, "{info}");
    assert_eq!(info["files"], 12, "{info}");
    assert_eq!(info["inodes"], 19, "{info}");
    assert_eq!(info["chunks"], 12, "{info}");
    assert_eq!(info["length"], length, "{info}");
    // Each small file stores whole 64 KiB blocks, twice (goal 2).
    assert_eq!(info["size"], 12 * 65536, "{info}");
    assert_eq!(info["realsize"], 2 * 12 * 65536, "{info}");
    // Moving a folder out, removing a file and growing another follow at once.
    fs::rename(top.join("d0"), mnt.join("d0")).unwrap();
    fs::remove_file(top.join("d1/e/f0")).unwrap();
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(top.join("d2/e/f3"))
        .unwrap();
    f.write_all(&random_bytes(99, 100_000)).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let info = dirinfo(&c, &top);
    let moved: u64 = (1..=4).map(|n| 1000 * n).sum();
    assert_eq!(info["directories"], 5, "{info}");
    assert_eq!(info["files"], 7, "{info}");
    assert_eq!(info["length"], length - moved - 5000 + 100_000, "{info}");
    assert_eq!(info["size"], 6 * 65536 + 2 * 65536, "{info}");
    let moved_info = dirinfo(&c, &mnt.join("d0"));
    assert_eq!(moved_info["length"], moved, "{moved_info}");
    let root = dirinfo(&c, &mnt);
    assert_eq!(root["files"], 11, "{root}");
    // A file answers with its own figures; the text form is stock's.
    let file = dirinfo(&c, &top.join("d2/e/f3"));
    assert_eq!(file["length"], 12_000 + 100_000, "{file}");
    let text = c.tool(&["dirinfo", top.to_str().unwrap()]).unwrap();
    assert!(
        text.contains("  directories:                  5\n"),
        "{text}"
    );
}

#[test]
fn a_snapshot_of_a_thousand_files_is_one_change_and_copies_chunks_only_when_written() {
    let mut c = two_copies("snapshot", true);
    let mnt = c.mount().unwrap();
    let src = mnt.join("src");
    let mut files = Vec::new();
    for d in 0..10 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..100 {
            let rel = format!("d{d}/f{f}");
            let data = random_bytes(d * 1000 + f, (200 + (d * 100 + f) * 7) as usize);
            fs::write(src.join(&rel), &data).unwrap();
            files.push((rel, data));
        }
    }
    let big = random_bytes(7, 3 << 20);
    fs::write(src.join("big"), &big).unwrap();
    files.push(("big".to_string(), big));
    let chunks_before = all_chunk_files(&c);
    assert_eq!(chunks_before, 2 * 1001, "one chunk per file, twice");

    let version = metadata_version(&c);
    let snap = mnt.join("snap");
    c.tool(&[
        "makesnapshot",
        src.to_str().unwrap(),
        snap.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(
        metadata_version(&c),
        version + 1,
        "the snapshot is one change"
    );
    assert_eq!(all_chunk_files(&c), chunks_before, "no chunk was copied");
    let (a, b) = (dirinfo(&c, &src), dirinfo(&c, &snap));
    for k in ["inodes", "files", "directories", "chunks", "length", "size"] {
        assert_eq!(a[k], b[k], "{k}: {a} vs {b}");
    }
    for (rel, data) in &files {
        assert_same(rel, &fs::read(snap.join(rel)).unwrap(), data);
    }
    // Without -o an existing name is refused; with it, it is replaced (sharing again).
    let (one, other) = (src.join("d5/f5"), snap.join("d5/f6"));
    let refused = c.tool(&[
        "makesnapshot",
        one.to_str().unwrap(),
        other.to_str().unwrap(),
    ]);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| format!("{e:#}").contains("give -o")),
        "{refused:?}"
    );
    c.tool(&[
        "makesnapshot",
        "-o",
        one.to_str().unwrap(),
        other.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(all_chunk_files(&c), chunks_before, "still no chunk copied");

    // A write through the snapshot copies that chunk (on each of its 2 servers) and leaves
    // the original alone; and the other way round.
    let patch = |path: &Path, at: u64, bytes: &[u8]| {
        let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(bytes).unwrap();
        f.sync_all().unwrap();
    };
    patch(&snap.join("d0/f0"), 10, b"written in the snapshot");
    assert_eq!(all_chunk_files(&c), chunks_before + 2);
    patch(&src.join("d1/f1"), 0, b"written in the original");
    patch(&snap.join("big"), 2 << 20, b"middle of the big file");
    assert_eq!(all_chunk_files(&c), chunks_before + 6);
    // Truncating a shared file and removing an original keep the other side whole.
    fs::OpenOptions::new()
        .write(true)
        .open(snap.join("d2/f2"))
        .unwrap()
        .set_len(5)
        .unwrap();
    fs::remove_file(src.join("d3/f3")).unwrap();

    let expect = |files: &[(String, Vec<u8>)], root: &str| -> Vec<(String, Vec<u8>)> {
        files
            .iter()
            .filter(|(rel, _)| !(root == "src" && rel == "d3/f3"))
            .map(|(rel, data)| {
                let mut d = data.clone();
                match (root, rel.as_str()) {
                    ("snap", "d0/f0") => d[10..33].copy_from_slice(b"written in the snapshot"),
                    ("src", "d1/f1") => d[..23].copy_from_slice(b"written in the original"),
                    ("snap", "big") => {
                        d[2 << 20..(2 << 20) + 22].copy_from_slice(b"middle of the big file")
                    }
                    ("snap", "d2/f2") => d.truncate(5),
                    ("snap", "d5/f6") => d = files[505].1.clone(),
                    _ => {}
                }
                (format!("{root}/{rel}"), d)
            })
            .collect()
    };
    let mut all = expect(&files, "src");
    all.extend(expect(&files, "snap"));
    let verify = |mnt: &Path| {
        for (rel, data) in &all {
            assert_same(rel, &fs::read(mnt.join(rel)).unwrap(), data);
        }
        assert!(!mnt.join("src/d3/f3").exists());
    };
    c.drop_caches();
    verify(&mnt);

    // The snapshot survives kill -9 of the master (changelog replay)...
    c.unmount(&mnt).unwrap();
    let version = metadata_version(&c);
    c.kill_master().unwrap();
    c.start_master().unwrap();
    c.wait_for_chunkservers(2).unwrap();
    c.drop_caches();
    let mnt = c.mount().unwrap();
    verify(&mnt);
    c.unmount(&mnt).unwrap();

    // ... and a rebuild from the metalogger's copy.
    c.rebuild_master_from_metalogger(version, 2).unwrap();
    c.drop_caches();
    let mnt = c.mount().unwrap();
    verify(&mnt);
    // Copy on write made 4 chunks (2 copies each); nothing shared was deleted.
    c.wait_until(Duration::from_secs(30), "the chunk count to settle", |c| {
        Ok(all_chunk_files(c) == chunks_before + 8)
    })
    .unwrap_or_else(|e| panic!("{e:#}: {} chunk files", all_chunk_files(&c)));
}

/// `cp` (`copy_file_range`) of whole chunks shares them with the copy, as a snapshot does:
/// no chunk file is made until either file writes to one. The sharing survives a `kill -9`
/// of the master (its changelog holds it), and an fsync of the copy syncs what it shares.
#[test]
fn cp_shares_whole_chunks_with_the_copy_until_either_is_written() {
    const CHUNK: u64 = 64 << 20;
    let mut c = two_copies("copy", false);
    let mnt = c.mount().unwrap();
    let small = random_bytes(1, 10_000);
    fs::write(mnt.join("small"), &small).unwrap();
    // A hole for its first chunk, data in its second.
    let tail = random_bytes(2, 300_000);
    let f = fs::File::create(mnt.join("sparse")).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &tail, CHUNK + 10).unwrap();
    drop(f);
    let mut sparse = vec![0u8; CHUNK as usize + 10];
    sparse.extend_from_slice(&tail);
    let chunks_before = all_chunk_files(&c);
    assert_eq!(chunks_before, 2 * 2, "a chunk per file, twice");

    fs::copy(mnt.join("small"), mnt.join("small-copy")).unwrap();
    fs::copy(mnt.join("sparse"), mnt.join("sparse-copy")).unwrap();
    assert_eq!(all_chunk_files(&c), chunks_before, "no chunk was copied");
    // From bytes the mount still buffers: they reach the source's chunk before it is shared
    // (a copy of the chunk `small-copy` shares, on each of its 2 servers).
    let mut src = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.join("small"))
        .unwrap();
    src.seek(SeekFrom::Start(10)).unwrap();
    src.write_all(b"fresh").unwrap();
    let dst = fs::File::create(mnt.join("fresh-copy")).unwrap();
    assert_eq!(copy_file_range(&src, 0, &dst, 0, 1 << 30), 10_000);
    dst.sync_all()
        .expect("an fsync of a copy sharing its chunk");
    drop((src, dst));
    let mut fresh = small.clone();
    fresh[10..15].copy_from_slice(b"fresh");
    assert_eq!(all_chunk_files(&c), chunks_before + 2);
    assert_same(
        "small-copy",
        &fs::read(mnt.join("small-copy")).unwrap(),
        &small,
    );
    assert_same(
        "sparse-copy",
        &fs::read(mnt.join("sparse-copy")).unwrap(),
        &sparse,
    );
    assert_same(
        "fresh-copy",
        &fs::read(mnt.join("fresh-copy")).unwrap(),
        &fresh,
    );
    let copies = dirinfo(&c, &mnt.join("sparse-copy"));
    assert_eq!(copies["length"], CHUNK + 10 + 300_000, "{copies}");
    assert_eq!(copies["chunks"], 1, "the hole stays a hole: {copies}");

    // The master's changelog holds the sharing.
    c.kill_master().unwrap();
    c.start_master().unwrap();
    assert_same(
        "sparse-copy after a restart",
        &fs::read(mnt.join("sparse-copy")).unwrap(),
        &sparse,
    );

    // A write through the copy copies its chunk (on each of its 2 servers); the source keeps
    // its bytes, and the other way round.
    let patch = |path: &Path, at: u64, bytes: &[u8]| {
        let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(bytes).unwrap();
        f.sync_all().unwrap();
    };
    patch(&mnt.join("sparse-copy"), CHUNK + 20, b"written in the copy");
    assert_eq!(all_chunk_files(&c), chunks_before + 4);
    patch(&mnt.join("small"), 0, b"written in the source");
    assert_eq!(all_chunk_files(&c), chunks_before + 6);
    let mut sparse_copy = sparse.clone();
    sparse_copy[CHUNK as usize + 20..][..19].copy_from_slice(b"written in the copy");
    fresh[..21].copy_from_slice(b"written in the source");
    assert_same("sparse", &fs::read(mnt.join("sparse")).unwrap(), &sparse);
    assert_same(
        "sparse-copy",
        &fs::read(mnt.join("sparse-copy")).unwrap(),
        &sparse_copy,
    );
    assert_same("small", &fs::read(mnt.join("small")).unwrap(), &fresh);
    assert_same(
        "small-copy",
        &fs::read(mnt.join("small-copy")).unwrap(),
        &small,
    );
    let mut fresh_copy = small.clone();
    fresh_copy[10..15].copy_from_slice(b"fresh");
    assert_same(
        "fresh-copy",
        &fs::read(mnt.join("fresh-copy")).unwrap(),
        &fresh_copy,
    );
}
