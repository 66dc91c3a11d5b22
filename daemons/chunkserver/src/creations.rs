//! The master answers a writer's lease for a new chunk while its orders to make the chunk are
//! still on their way, so the writer's chain can reach a chunkserver before the order does.
//! A chain that finds no new chunk (version 1) waits here for the outcome of its creation.

use std::collections::HashMap;
use std::time::Duration;

use moose_proto::FsResult;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Outcomes kept at most; they matter for the moment a chain waits.
const KEPT: usize = 4096;

#[derive(Default)]
pub struct Creations {
    /// The outcome of the latest creation orders, by chunk id (ids are never reused).
    outcomes: Mutex<HashMap<u64, FsResult<()>>>,
    changed: Notify,
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
        self.changed.notify_waiters();
    }

    /// Waits up to `limit` for the creation of `chunk_id` to end: its outcome, or `None` when
    /// none came.
    pub async fn wait(&self, chunk_id: u64, limit: Duration) -> Option<FsResult<()>> {
        let deadline = Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the look, so that an outcome noted in between wakes it.
            changed.as_mut().enable();
            if let Some(outcome) = self.outcomes.lock().get(&chunk_id) {
                return Some(*outcome);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moose_proto::FsError;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_waiter_gets_the_outcome_noted_after_it_began_and_times_out_without_one() {
        let c = Arc::new(Creations::default());
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.wait(7, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.note(8, Ok(()));
        c.note(7, Err(FsError::NoSpace));
        assert_eq!(waiting.await.unwrap(), Some(Err(FsError::NoSpace)));
        assert_eq!(c.wait(8, Duration::from_secs(1)).await, Some(Ok(())));
        assert_eq!(c.wait(9, Duration::from_millis(20)).await, None);
    }
}
