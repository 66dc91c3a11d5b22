//! The background test (MooseFS's chunk tester): one low-priority task per hdd folder walks
//! its chunks over and over and checks every block of data against its CRC, reading at most
//! HDD_TEST_SPEED MiB/s from the folder. A bad block marks the copy damaged and reports it to
//! the master, as a failed client read does; the master then replaces the copy.
//!
//! Each block is checked in its own trip to the blocking pool, holding the chunk's stripe lock
//! only for that block, so client I/O never waits long; files it opens stay out of the open-file
//! cache. Chunks with an open write session and copies already known to be damaged are
//! skipped, and so are folders marked for removal or damaged (as MooseFS does).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use moose_proto::ChunkRef;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::chunkfile::{self, Block, BS, DATA_OFFSET};
use crate::hdd::Disk;
use crate::store::{blocking, Store};

/// Bytes per MiB (HDD_TEST_SPEED is in MiB/s).
const MIB: f64 = 1_048_576.0;
/// Cost charged per chunk besides its blocks (opening it, reading its header), so that a folder
/// of empty chunks is not walked at full speed either.
const CHUNK_COST: u64 = DATA_OFFSET;
/// Shortest time between the starts of two passes over a folder.
const MIN_PASS: Duration = Duration::from_secs(1);
/// How long a folder without chunks waits before looking again.
const IDLE: Duration = Duration::from_secs(10);

/// Runs the background test of every hdd folder at `speed` MiB/s each (0: not at all);
/// `disks_added` is notified when a reload adds folders. Runs until aborted.
pub async fn run(store: Arc<Store>, speed: f64, disks_added: Arc<Notify>) {
    if speed <= 0.0 {
        tracing::info!("HDD_TEST_SPEED is 0: the background chunk test is off");
        return;
    }
    let mut testers = JoinSet::new();
    let mut started: HashSet<PathBuf> = HashSet::new();
    loop {
        for disk in store.disks().all() {
            if started.insert(disk.path.clone()) {
                tracing::info!(
                    "hdd folder {}: background chunk test at up to {speed} MiB/s (HDD_TEST_SPEED)",
                    disk.path.display()
                );
                testers.spawn(test_disk(Arc::clone(&store), disk, speed));
            }
        }
        disks_added.notified().await;
    }
}

/// Keeps reads at `rate` bytes per second on average.
struct Pace {
    rate: f64,
    next: Instant,
}

impl Pace {
    fn new(speed: f64) -> Pace {
        Pace {
            rate: speed * MIB,
            next: Instant::now(),
        }
    }

    /// Waits until `bytes` more may be read. Time spent idle is not saved up for a burst.
    async fn take(&mut self, bytes: u64) {
        let now = Instant::now();
        if self.next < now {
            self.next = now;
        }
        self.next += Duration::from_secs_f64(bytes as f64 / self.rate);
        if self.next > now {
            tokio::time::sleep_until(self.next).await;
        }
    }
}

/// Tests the chunks of one folder, pass after pass.
async fn test_disk(store: Arc<Store>, disk: Arc<Disk>, speed: f64) {
    let mut pace = Pace::new(speed);
    let mut buf = chunkfile::new_block();
    loop {
        if disk.marked_for_removal() || disk.damaged() {
            tokio::time::sleep(IDLE).await;
            continue;
        }
        let pass_start = Instant::now();
        let (s, d) = (Arc::clone(&store), Arc::clone(&disk));
        let chunks = tokio::task::spawn_blocking(move || s.chunks_on(&d, false))
            .await
            .unwrap_or_default();
        if chunks.is_empty() {
            tokio::time::sleep(IDLE).await;
            continue;
        }
        let mut tested = 0usize;
        for chunk in &chunks {
            let (done, back) = test_chunk(&store, *chunk, &mut pace, buf).await;
            buf = back;
            tested += usize::from(done);
        }
        tracing::debug!(
            "hdd folder {}: background test pass done: {tested} of {} chunks tested in {} s",
            disk.path.display(),
            chunks.len(),
            pass_start.elapsed().as_secs()
        );
        tokio::time::sleep_until(pass_start + MIN_PASS).await;
    }
}

/// Tests every block of data of one chunk; true when all of it was tested (and found good).
/// Gives the block buffer back.
async fn test_chunk(
    store: &Arc<Store>,
    chunk: ChunkRef,
    pace: &mut Pace,
    mut buf: Box<Block>,
) -> (bool, Box<Block>) {
    pace.take(CHUNK_COST).await;
    let s = Arc::clone(store);
    // Gone, of another version by now, or unreadable (counted by the store): nothing to test.
    let Ok(length) = blocking(move || s.data_length(chunk)).await else {
        return (false, buf);
    };
    let blocks = (length as usize).div_ceil(BS) as u32;
    for block in 0..blocks {
        pace.take(BS as u64).await;
        let s = Arc::clone(store);
        let step = tokio::task::spawn_blocking(move || {
            let result = s.test_block(chunk, block, &mut buf);
            (result, buf)
        })
        .await;
        let result = match step {
            Ok((result, back)) => {
                buf = back;
                result
            }
            Err(e) => {
                tracing::error!("a background test task failed: {e}");
                return (false, chunkfile::new_block());
            }
        };
        match result {
            Ok(true) => {}
            // Being written: its turn comes in the next pass.
            Ok(false) => return (false, buf),
            // Damaged (logged and reported by the store), or gone or changed meanwhile.
            Err(_) => return (false, buf),
        }
    }
    (true, buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{test_store, write_all};
    use moose_proto::msg::CsToMaster;
    use std::os::unix::fs::FileExt;

    fn flip(path: &std::path::Path, at: u64) {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x20], at).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finds_a_flipped_byte_and_reports_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut events) = test_store(dir.path());
        let good = ChunkRef {
            chunk_id: 0x21,
            version: 1,
        };
        let bad = ChunkRef {
            chunk_id: 0x22,
            version: 3,
        };
        let busy = ChunkRef {
            chunk_id: 0x23,
            version: 1,
        };
        for c in [good, bad, busy] {
            store.create(c).unwrap();
            write_all(&store, c, 0, &vec![0x5Au8; 3 * BS + 100]);
        }
        // Damage block 2 of `bad` and block 0 of `busy` behind the store's back.
        flip(
            &dir.path().join("22/chunk_0000000000000022_00000003.mfs"),
            DATA_OFFSET + 2 * BS as u64 + 17,
        );
        flip(
            &dir.path().join("23/chunk_0000000000000023_00000001.mfs"),
            DATA_OFFSET + 5,
        );
        // `busy` has a write session open: it is left alone meanwhile.
        let writing = store.writing(busy.chunk_id);

        let tester = tokio::spawn(run(Arc::clone(&store), 500.0, Arc::new(Notify::new())));
        let first = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("the damage is found")
            .unwrap();
        assert_eq!(first, CsToMaster::ChunkDamaged(bad));
        assert_eq!(store.damaged_refs(), vec![bad]);
        assert_eq!(store.space_reports()[0].errors, 1);
        // Later passes neither report it again nor touch the chunk being written.
        tokio::time::sleep(MIN_PASS * 3).await;
        assert!(events.try_recv().is_err());
        assert_eq!(store.damaged_refs(), vec![bad]);

        // Once the write session ends, the next pass finds that damage too.
        drop(writing);
        let next = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("the second damage is found")
            .unwrap();
        assert_eq!(next, CsToMaster::ChunkDamaged(busy));
        tokio::time::sleep(MIN_PASS * 2).await;
        assert!(events.try_recv().is_err());
        let mut damaged = store.damaged_refs();
        damaged.sort_by_key(|c| c.chunk_id);
        assert_eq!(damaged, vec![bad, busy]);
        // The good chunk still reads; two errors within HDD_ERROR_TOLERANCE_PERIOD mark the
        // folder damaged.
        assert!(crate::store::tests::read_all(&store, good, 4).is_ok());
        let report = &store.space_reports()[0];
        assert_eq!(report.errors, 2);
        assert!(report.damaged);
        tester.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn folders_marked_for_removal_are_not_tested() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut events) = test_store(dir.path());
        let c = ChunkRef {
            chunk_id: 0x24,
            version: 1,
        };
        store.create(c).unwrap();
        write_all(&store, c, 0, &[1u8; 100]);
        flip(
            &dir.path().join("24/chunk_0000000000000024_00000001.mfs"),
            DATA_OFFSET + 50,
        );
        store.disks().all()[0].apply(&crate::hdd::HddEntry {
            path: dir.path().to_path_buf(),
            line: 1,
            marked_for_removal: true,
            limit: crate::hdd::SpaceLimit::Default,
        });
        let tester = tokio::spawn(run(Arc::clone(&store), 500.0, Arc::new(Notify::new())));
        tokio::time::sleep(MIN_PASS * 2).await;
        assert!(events.try_recv().is_err());
        assert!(store.damaged_refs().is_empty());
        tester.abort();
    }

    #[tokio::test]
    async fn pace_keeps_the_rate() {
        let mut pace = Pace::new(10.0);
        let start = Instant::now();
        // 16 blocks of 64 KiB = 1 MiB takes 100 ms at 10 MiB/s.
        for _ in 0..16 {
            pace.take(BS as u64).await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_millis(600), "{took:?}");
        // Idle time is not saved up for a burst.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = Instant::now();
        pace.take(BS as u64 * 8).await;
        assert!(again.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn speed_zero_turns_it_off() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _events) = test_store(dir.path());
        // Returns at once instead of running forever.
        tokio::time::timeout(
            Duration::from_secs(5),
            run(store, 0.0, Arc::new(Notify::new())),
        )
        .await
        .unwrap();
    }
}
