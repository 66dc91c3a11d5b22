//! The master answers a writer's lease for a new chunk while its orders to make the chunk are
//! still on their way, so the writer's chain can reach a chunkserver before the order does.
//! A chain that finds no new chunk (version 1) and no outcome for it yet goes on reading the
//! writer's data; its first disk trip waits here for the outcome of the creation, and runs the
//! writes queued meanwhile right behind it (no hand-off to the session's task and back out).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use moose_proto::FsResult;
use parking_lot::{Condvar, Mutex};

/// Outcomes kept at most; they matter for the moment a chain waits.
const KEPT: usize = 4096;

#[derive(Default)]
pub struct Creations {
    /// The outcome of the latest creation orders, by chunk id (ids are never reused).
    outcomes: Mutex<HashMap<u64, FsResult<()>>>,
    settled: Condvar,
}

impl Creations {
    /// A creation order for `chunk_id` ended with `outcome`.
    pub fn note(&self, chunk_id: u64, outcome: FsResult<()>) {
        {
            let mut outcomes = self.outcomes.lock();
            if outcomes.len() >= KEPT {
                outcomes.clear();
            }
            outcomes.insert(chunk_id, outcome);
        }
        self.settled.notify_all();
    }

    /// The outcome of the creation of `chunk_id`, if it ended already.
    pub fn outcome(&self, chunk_id: u64) -> Option<FsResult<()>> {
        self.outcomes.lock().get(&chunk_id).copied()
    }

    /// Waits up to `limit` for the creation of `chunk_id` to end: its outcome, or `None` when
    /// none came. Blocks the calling thread: for disk threads.
    pub fn wait(&self, chunk_id: u64, limit: Duration) -> Option<FsResult<()>> {
        let deadline = Instant::now() + limit;
        let mut outcomes = self.outcomes.lock();
        loop {
            if let Some(outcome) = outcomes.get(&chunk_id) {
                return Some(*outcome);
            }
            if self.settled.wait_until(&mut outcomes, deadline).timed_out() {
                return outcomes.get(&chunk_id).copied();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moose_proto::FsError;
    use std::sync::Arc;

    #[test]
    fn a_waiter_gets_the_outcome_noted_after_it_began_and_times_out_without_one() {
        let c = Arc::new(Creations::default());
        let waiting = std::thread::spawn({
            let c = c.clone();
            move || c.wait(7, Duration::from_secs(30))
        });
        std::thread::sleep(Duration::from_millis(20));
        c.note(8, Ok(()));
        c.note(7, Err(FsError::NoSpace));
        assert_eq!(waiting.join().unwrap(), Some(Err(FsError::NoSpace)));
        assert_eq!(c.wait(8, Duration::from_secs(1)), Some(Ok(())));
        assert_eq!(c.outcome(8), Some(Ok(())));
        assert_eq!(c.outcome(9), None);
        assert_eq!(c.wait(9, Duration::from_millis(20)), None);
    }
}
