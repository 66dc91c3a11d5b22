//! The master's orders (create, delete, set version, truncate, replicate, duplicate), each
//! answered by
//! `OpDone`. Orders run concurrently, except that orders for the same chunk run one after the
//! other in the order they came (a delete followed by a replicate of one chunk must not race).

use std::collections::HashMap;
use std::sync::Arc;

use moose_proto::msg::CsToMaster;
use moose_proto::{ChunkRef, CsAddr, FsResult};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::replicator;
use crate::store::{blocking, Store};

#[derive(Debug, Clone, PartialEq)]
pub enum Order {
    Create,
    Delete,
    SetVersion {
        new_version: u32,
    },
    Truncate {
        new_version: u32,
        length: u32,
    },
    Replicate {
        source: CsAddr,
        token: moose_proto::auth::ChunkToken,
    },
    /// Copy on write: a new chunk `copy` with this chunk's data.
    Duplicate {
        copy: ChunkRef,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub req_id: u64,
    pub chunk: ChunkRef,
    pub order: Order,
}

/// Where a job's `OpDone` goes (the master connection that sent the order).
pub type Reply = mpsc::UnboundedSender<CsToMaster>;

type Queue = mpsc::UnboundedSender<(Job, Reply)>;

#[derive(Clone)]
pub struct Orders {
    store: Arc<Store>,
    /// One queue per chunk with orders in progress.
    queues: Arc<Mutex<HashMap<u64, Queue>>>,
}

impl Orders {
    pub fn new(store: Arc<Store>) -> Orders {
        Orders {
            store,
            queues: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Queues a job; its result is sent to `reply` as `OpDone`.
    pub fn submit(&self, job: Job, reply: Reply) {
        let chunk_id = job.chunk.chunk_id;
        let mut queues = self.queues.lock();
        let item = match queues.get(&chunk_id) {
            Some(q) => match q.send((job, reply)) {
                Ok(()) => return,
                Err(mpsc::error::SendError(item)) => item,
            },
            None => (job, reply),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        // The receiver is alive right here, so this send cannot fail.
        let _ = tx.send(item);
        queues.insert(chunk_id, tx);
        tokio::spawn(self.clone().work(chunk_id, rx));
    }

    /// Runs the jobs of one chunk in order; ends when its queue is empty.
    async fn work(self, chunk_id: u64, mut rx: mpsc::UnboundedReceiver<(Job, Reply)>) {
        loop {
            while let Ok((job, reply)) = rx.try_recv() {
                self.run(job, reply).await;
            }
            // `submit` sends under the same lock: an empty queue seen here stays empty.
            let finished = {
                let mut queues = self.queues.lock();
                if rx.is_empty() {
                    queues.remove(&chunk_id);
                    true
                } else {
                    false
                }
            };
            if finished {
                return;
            }
        }
    }

    /// Runs a job and answers it. A disk job answers from its disk thread: the master waits
    /// for that answer, which then does not wait for this task to be scheduled again.
    async fn run(&self, job: Job, reply: Reply) {
        let chunk = job.chunk;
        let on_disk: DiskJob = match &job.order {
            Order::Replicate { source, token } => {
                let store = Arc::clone(&self.store);
                let status = replicator::replicate(store, chunk, source, token).await;
                return answer(&job, status, &reply);
            }
            Order::Create => Box::new(move |s| s.create(chunk)),
            Order::Delete => Box::new(move |s| s.delete(chunk)),
            &Order::SetVersion { new_version } => {
                Box::new(move |s| s.set_version(chunk, new_version))
            }
            &Order::Truncate {
                new_version,
                length,
            } => Box::new(move |s| s.truncate(chunk, new_version, length)),
            &Order::Duplicate { copy } => Box::new(move |s| s.duplicate(chunk, copy)),
        };
        let store = Arc::clone(&self.store);
        let (req_id, unanswered) = (job.req_id, reply.clone());
        let disk = blocking(move || {
            let status = on_disk(&store);
            answer(&job, status, &reply);
            Ok(())
        });
        if disk.await.is_err() {
            // The disk thread failed before it could answer.
            let _ = unanswered.send(CsToMaster::OpDone {
                req_id,
                status: Err(moose_proto::FsError::Io),
            });
        }
    }
}

/// The store's part of an order, run on a disk thread.
type DiskJob = Box<dyn FnOnce(&Store) -> FsResult<()> + Send>;

/// Sends a job's `OpDone`. A closed reply channel means the master connection is gone; the
/// master learns the outcome from the next registration.
fn answer(job: &Job, status: FsResult<()>, reply: &Reply) {
    match &status {
        Ok(()) => tracing::debug!("order {} ({:?}) done", job.req_id, job.order),
        Err(e) => tracing::debug!(
            "order {} ({:?} of chunk {:016X} v{}) failed: {e}",
            job.req_id,
            job.order,
            job.chunk.chunk_id,
            job.chunk.version
        ),
    }
    let _ = reply.send(CsToMaster::OpDone {
        req_id: job.req_id,
        status,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::test_store;
    use moose_proto::FsError;

    fn job(req_id: u64, chunk_id: u64, version: u32, order: Order) -> Job {
        Job {
            req_id,
            chunk: ChunkRef { chunk_id, version },
            order,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn orders_of_one_chunk_run_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _events) = test_store(dir.path());
        let orders = Orders::new(Arc::clone(&store));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let jobs = [
            job(1, 5, 1, Order::Create),
            job(2, 5, 1, Order::SetVersion { new_version: 2 }),
            job(
                3,
                5,
                2,
                Order::Truncate {
                    new_version: 3,
                    length: 10,
                },
            ),
            job(4, 5, 2, Order::Delete),
            job(5, 5, 3, Order::Delete),
            job(6, 6, 1, Order::Delete),
            job(7, 7, 1, Order::Create),
            job(8, 7, 1, Order::Create),
        ];
        for j in jobs {
            orders.submit(j, tx.clone());
        }
        let mut results = HashMap::new();
        for _ in 0..8 {
            match rx.recv().await.unwrap() {
                CsToMaster::OpDone { req_id, status } => {
                    results.insert(req_id, status);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(results[&1], Ok(()));
        assert_eq!(results[&2], Ok(()));
        assert_eq!(results[&3], Ok(()));
        assert_eq!(results[&4], Err(FsError::WrongVersion));
        assert_eq!(results[&5], Ok(()));
        assert_eq!(results[&6], Ok(()), "deleting a missing chunk is fine");
        assert_eq!(results[&7], Ok(()));
        assert_eq!(results[&8], Err(FsError::Exist));
        assert_eq!(
            store.chunk_refs(),
            vec![ChunkRef {
                chunk_id: 7,
                version: 1
            }]
        );
        // Workers go away once their queues are empty.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(orders.queues.lock().is_empty());
    }
}
