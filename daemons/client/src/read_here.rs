//! Small random reads served on the FUSE thread that took them. The thread drives its own
//! connections to the chunkservers with a runtime of its own, so the chunkserver's answer
//! wakes that thread directly: no hand-off to the mount's runtime and back, one wake-up less
//! per read (on a 2-core VM a wake-up across cores is most of a 4 KiB read's time).
//!
//! Only the plain case is served here: one chunk, its location at hand, nothing of the file
//! buffered, within the length the location gave. Anything else, and any failure, leaves the
//! read to the usual path, which retries, reports bad copies and asks for fresh locations.
//! At most [`MAX_THREADS_HERE`] threads wait here at once, so the others keep taking the
//! kernel's requests while a chunkserver is slow.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moose_proto::msg::ChunkLocation;
use moose_proto::{ChunkRef, CHUNK_SIZE};

use crate::csio::CsPool;

/// Largest read served here (random reads are small; larger ones go through the segment
/// cache's path or benefit from its parallel reads).
pub const MAX_SIZE: u32 = 128 * 1024;
/// FUSE threads that may wait on a chunkserver here at the same time.
const MAX_THREADS_HERE: usize = 2;
/// A read here that takes longer is given up and done the usual way.
const PATIENCE: Duration = Duration::from_secs(2);

static THREADS_HERE: AtomicUsize = AtomicUsize::new(0);

/// A FUSE thread's own runtime and the connections it drives.
struct Here {
    rt: tokio::runtime::Runtime,
    cs: CsPool,
}

thread_local! {
    /// Made on the thread's first read here; `None` inside if no runtime could be made.
    static HERE: RefCell<Option<Option<Here>>> = const { RefCell::new(None) };
}

/// Where the read `[offset, offset + size)` of a file is to be found, if it can be read here:
/// within chunk `index` at `in_chunk`, and within the file's length the location gave.
pub fn fits(loc: &ChunkLocation, offset: u64, size: u32) -> Option<u32> {
    let end = offset.checked_add(u64::from(size))?;
    let in_chunk = offset % CHUNK_SIZE;
    let fits_chunk = in_chunk + u64::from(size) <= CHUNK_SIZE;
    let usable = loc.chunk_id != 0 && !loc.servers.is_empty() && end <= loc.file_length;
    (size > 0 && size <= MAX_SIZE && fits_chunk && usable).then_some(in_chunk as u32)
}

/// Reads `size` bytes at `in_chunk` of the chunk `loc` names from its first server, on this
/// thread; `None` when it cannot (too many threads here, no runtime) or it failed.
pub fn read(loc: &Arc<ChunkLocation>, in_chunk: u32, size: u32) -> Option<Vec<u8>> {
    let _slot = Slot::take()?;
    HERE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let here = cell.get_or_insert_with(make_here).as_ref()?;
        let chunk = ChunkRef {
            chunk_id: loc.chunk_id,
            version: loc.version,
        };
        let mut buf = vec![0u8; size as usize];
        let server = &loc.servers[0];
        // The timer is made inside: it needs the runtime it runs on.
        let read = async {
            let read = here.cs.read(server, chunk, &loc.token, in_chunk, &mut buf);
            tokio::time::timeout(PATIENCE, read).await
        };
        match here.rt.block_on(read) {
            Ok(Ok(())) => Some(buf),
            Ok(Err(e)) => {
                tracing::debug!("read on the FUSE thread from {server}: {e}; the usual way");
                None
            }
            Err(_) => None,
        }
    })
}

fn make_here() -> Option<Here> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(Here {
            rt,
            cs: CsPool::default(),
        }),
        Err(e) => {
            tracing::warn!("no runtime for reads on a FUSE thread ({e}); they go the usual way");
            None
        }
    }
}

/// One of the [`MAX_THREADS_HERE`] places, given back when dropped.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        THREADS_HERE
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_THREADS_HERE).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        THREADS_HERE.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moose_proto::auth::ChunkToken;
    use moose_proto::CsAddr;

    fn location(chunk_id: u64, file_length: u64) -> ChunkLocation {
        ChunkLocation {
            file_length,
            chunk_id,
            version: 1,
            servers: vec![CsAddr {
                host: "127.0.0.1".into(),
                port: 9422,
            }],
            token: ChunkToken::default(),
        }
    }

    #[test]
    fn only_small_reads_inside_one_chunk_and_the_known_length_fit() {
        let loc = location(7, 3 * CHUNK_SIZE);
        assert_eq!(fits(&loc, 4096, 4096), Some(4096));
        assert_eq!(fits(&loc, CHUNK_SIZE + 10, 4096), Some(10));
        assert_eq!(fits(&loc, CHUNK_SIZE - 100, 4096), None, "crosses a chunk");
        assert_eq!(fits(&loc, 0, MAX_SIZE + 1), None, "too large");
        assert_eq!(fits(&loc, 0, 0), None);
        assert_eq!(fits(&loc, 3 * CHUNK_SIZE - 10, 4096), None, "past the end");
        assert_eq!(fits(&location(0, CHUNK_SIZE), 0, 4096), None, "a hole");
        let mut nowhere = location(7, CHUNK_SIZE);
        nowhere.servers.clear();
        assert_eq!(fits(&nowhere, 0, 4096), None, "no copy");
    }

    #[test]
    fn at_most_a_few_threads_wait_here() {
        let slots: Vec<Slot> = std::iter::from_fn(Slot::take).take(10).collect();
        assert_eq!(slots.len(), MAX_THREADS_HERE);
        drop(slots);
        assert!(Slot::take().is_some());
    }
}
