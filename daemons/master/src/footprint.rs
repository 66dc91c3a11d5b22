//! How many bytes the master holds per file, measured in process in seconds (not through a
//! 15-minute mount run): 1,000,000 creates in 1,000 folders go through [`State::apply`], and a
//! counting allocator tells the heap they keep. Run it with
//! `cargo test -p moose-master --release footprint -- --ignored --nocapture`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use moose_proto::{FileKind, Timespec, ROOT_INODE};

use crate::namespace::Meta;
use crate::ops::Op;
use crate::state::State;

/// The system allocator, counting the bytes live (asked for, not what malloc rounds them to).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Resident set size of this process, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * usize::try_from(page).unwrap_or(4096)
}

const FOLDERS: u64 = 1_000;
const FILES_PER_FOLDER: u64 = 1_000;
/// One file in this many gets a chunk (as if written, under 64 MiB).
const WITH_CHUNK_EVERY: u64 = 10;

fn create(st: &mut State, parent: u64, name: String, inode: u64, kind: FileKind, sec: i64) {
    st.apply(&Op::Create {
        parent,
        name: name.into_bytes(),
        inode,
        kind,
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        rdev: 0,
        time: Timespec {
            sec,
            nsec: (inode as u32).wrapping_mul(7919) % 1_000_000_000,
        },
    })
    .expect("a create in the footprint run");
}

/// Bytes the master keeps per file: (heap asked for, resident set growth).
fn measure() -> (f64, f64) {
    let start = Timespec::now();
    let mut st = State::new(Meta::fresh(1, start, 2));
    let (heap0, rss0) = (LIVE.load(Ordering::Relaxed), rss());
    let mut chunk_id = 1;
    for f in 0..FOLDERS {
        let dir = st.meta.next_inode;
        create(
            &mut st,
            ROOT_INODE,
            format!("dir-{f:04}"),
            dir,
            FileKind::Dir,
            start.sec,
        );
        for i in 0..FILES_PER_FOLDER {
            let inode = st.meta.next_inode;
            let name = format!("file-{:06}.dat", f * FILES_PER_FOLDER + i);
            create(
                &mut st,
                dir,
                name,
                inode,
                FileKind::File,
                start.sec + i as i64,
            );
            if inode.is_multiple_of(WITH_CHUNK_EVERY) {
                st.apply(&Op::AddChunk {
                    inode,
                    index: 0,
                    chunk_id,
                    version: 1,
                })
                .expect("a chunk in the footprint run");
                chunk_id += 1;
            }
        }
    }
    let files = (FOLDERS * FILES_PER_FOLDER) as f64;
    let heap = LIVE.load(Ordering::Relaxed).saturating_sub(heap0) as f64 / files;
    let rss = rss().saturating_sub(rss0) as f64 / files;
    drop(st);
    (heap, rss)
}

#[test]
#[ignore = "a measurement: 1,000,000 creates; run it alone with --ignored --nocapture"]
fn footprint_per_file_at_a_million_files() {
    let (heap, rss) = measure();
    println!(
        "master metadata at {} files in {FOLDERS} folders: {heap:.1} heap bytes per file, \
         {rss:.1} bytes of resident set per file (a node is {} bytes)",
        FOLDERS * FILES_PER_FOLDER,
        std::mem::size_of::<crate::namespace::Node>()
    );
    // Issue #12's goal for the master: at most 150 bytes per file at 1,000,000 files.
    assert!(
        heap <= 150.0,
        "{heap:.1} heap bytes per file, over the 150 aimed at"
    );
}
