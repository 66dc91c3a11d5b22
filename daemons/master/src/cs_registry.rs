//! The chunkserver registry: every chunkserver the master knows (connected now or earlier),
//! their space, the orders sent to them and the answers awaited.

use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moose_proto::msg::MasterToCs;
use moose_proto::{CsAddr, DiskReport, FsError};
use tokio::sync::{mpsc, oneshot, watch};

/// An order on its way to chunkserver `id`.
pub struct SentOrder {
    id: u32,
    req_id: u64,
    rx: oneshot::Receiver<Result<(), FsError>>,
    /// Messages queued to the server when this one was (it is written once that many are).
    seq: u64,
    written: watch::Receiver<u64>,
}

impl SentOrder {
    /// Waits until the order is in the socket to its server: a master that dies from here on
    /// leaves it to the kernel to deliver.
    pub async fn on_the_wire(&mut self) -> Result<(), FsError> {
        let seq = self.seq;
        self.written
            .wait_for(|n| *n >= seq)
            .await
            .map(|_| ())
            .map_err(|_| FsError::Io)
    }
}

/// The way to one chunkserver's connection: its writer task takes the messages in order and
/// counts those it wrote to the socket.
#[derive(Clone)]
pub struct OrderQueue {
    tx: mpsc::Sender<MasterToCs>,
    queued: Arc<AtomicU64>,
    written: watch::Receiver<u64>,
}

impl OrderQueue {
    /// A queue, and for the connection's writer task the messages and where it counts how
    /// many it wrote.
    pub fn new() -> (OrderQueue, mpsc::Receiver<MasterToCs>, watch::Sender<u64>) {
        let (tx, rx) = mpsc::channel(1024);
        let (written_tx, written) = watch::channel(0);
        let queue = OrderQueue {
            tx,
            queued: Arc::new(AtomicU64::new(0)),
            written,
        };
        (queue, rx, written_tx)
    }

    /// Queues `msg`; returns how many messages were queued by then.
    async fn send(&self, msg: MasterToCs) -> Result<u64, FsError> {
        self.tx.send(msg).await.map_err(|_| FsError::Io)?;
        Ok(self.queued.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// [`OrderQueue::send`] without waiting: an error when the queue is full.
    fn try_send(&self, msg: MasterToCs) -> Result<u64, FsError> {
        self.tx.try_send(msg).map_err(|_| FsError::Io)?;
        Ok(self.queued.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

/// An order's request id, where its result comes, and the server's order queue.
type OrderSlot = (u64, oneshot::Receiver<Result<(), FsError>>, OrderQueue);

pub type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<(), FsError>>>>>;

/// A chunkserver the master knows (connected now or earlier).
pub struct CsEntry {
    pub id: u32,
    pub addr: CsAddr,
    pub version: String,
    pub connected: bool,
    pub disks: Vec<DiskReport>,
    /// Left with a goodbye (graceful stop) rather than by losing the connection.
    pub left_gracefully: bool,
    pub tx: Option<OrderQueue>,
    pub pending: Pending,
}

impl CsEntry {
    pub fn total(&self) -> u64 {
        self.disks.iter().map(|d| d.total).sum()
    }

    pub fn avail(&self) -> u64 {
        self.disks
            .iter()
            .filter(|d| !d.marked_for_removal && !d.damaged)
            .map(|d| d.avail)
            .sum()
    }

    pub fn used(&self) -> u64 {
        self.disks.iter().map(|d| d.used).sum()
    }

    /// Space of the disks that take new chunks (neither marked for removal nor damaged).
    pub fn usable_total(&self) -> u64 {
        self.disks
            .iter()
            .filter(|d| !d.marked_for_removal && !d.damaged)
            .map(|d| d.total)
            .sum()
    }

    /// Share of the space of its usable disks that is taken.
    pub fn usage(&self) -> f64 {
        let (mut total, mut avail) = (0u64, 0u64);
        for d in self
            .disks
            .iter()
            .filter(|d| !d.marked_for_removal && !d.damaged)
        {
            total += d.total;
            avail += d.avail;
        }
        if total == 0 {
            1.0
        } else {
            1.0 - avail as f64 / total as f64
        }
    }

    /// Can take new chunks: connected and has a usable disk with room.
    pub fn writable(&self) -> bool {
        self.connected
            && self
                .disks
                .iter()
                .any(|d| !d.marked_for_removal && !d.damaged && d.avail > moose_proto::CHUNK_SIZE)
    }
}

/// Placement view of one chunkserver.
#[derive(Debug, Clone)]
pub struct CsView {
    pub id: u32,
    pub avail: u64,
    /// Space of its usable disks.
    pub total: u64,
    /// When its last space report arrived.
    pub reported: Option<Instant>,
    /// Share of the usable space in use, 0.0 to 1.0.
    pub usage: f64,
    pub writable: bool,
}

pub struct CsRegistry {
    entries: Mutex<HashMap<u32, CsEntry>>,
    next_req: AtomicU64,
    timeout: Duration,
    /// When each chunkserver's last space report arrived (rebalancing waits for fresh ones).
    reported: Mutex<HashMap<u32, Instant>>,
}

impl CsRegistry {
    pub fn new(timeout_secs: u64) -> Self {
        CsRegistry {
            entries: Mutex::new(HashMap::new()),
            next_req: AtomicU64::new(1),
            timeout: Duration::from_secs(timeout_secs),
            reported: Mutex::new(HashMap::new()),
        }
    }

    /// How long a chunkserver may stay silent (MATOCS_TIMEOUT).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A space report from chunkserver `id` arrived now.
    pub fn note_space_report(&self, id: u32) {
        self.reported.lock().insert(id, Instant::now());
    }

    pub fn lock(&self) -> MutexGuard<'_, HashMap<u32, CsEntry>> {
        self.entries.lock()
    }

    /// Connected chunkservers, for placement decisions.
    pub fn connected(&self) -> Vec<CsView> {
        self.lock()
            .values()
            .filter(|e| e.connected)
            .map(|e| CsView {
                id: e.id,
                avail: e.avail(),
                total: e.usable_total(),
                reported: self.reported.lock().get(&e.id).copied(),
                usage: e.usage(),
                writable: e.writable(),
            })
            .collect()
    }

    pub fn is_connected(&self, id: u32) -> bool {
        self.lock().get(&id).is_some_and(|e| e.connected)
    }

    pub fn addr(&self, id: u32) -> Option<CsAddr> {
        self.lock().get(&id).map(|e| e.addr.clone())
    }

    pub fn id_of(&self, addr: &CsAddr) -> Option<u32> {
        self.lock().values().find(|e| &e.addr == addr).map(|e| e.id)
    }

    /// Adds a registering chunkserver, keeping the id it had (by its saved id or address) or
    /// giving it a new one. Refuses a second chunkserver on an address already connected.
    pub fn admit(&self, mut entry: CsEntry) -> Result<u32, String> {
        let mut entries = self.lock();
        if let Some(e) = entries
            .values()
            .find(|e| e.addr == entry.addr && e.connected)
        {
            return Err(format!(
                "a chunkserver at {} is already connected (id {}); two chunkservers on one \
                 host need distinct CSSERV_LISTEN_PORT values",
                entry.addr, e.id
            ));
        }
        let wanted = entry.id;
        if let Some(holder) = entries.get(&wanted).filter(|e| wanted != 0 && e.connected) {
            return Err(format!(
                "chunkserver id {wanted} belongs to the chunkserver at {} that is connected now; \
                 an id is never handed to a second server. If this is a copy of that server's \
                 DATA_PATH (a cloned machine), remove chunkserver.id from this one's DATA_PATH \
                 so that it gets an id of its own",
                holder.addr
            ));
        }
        let known = entries
            .values()
            .find(|e| (wanted != 0 && e.id == wanted) || e.addr == entry.addr)
            .map(|e| e.id);
        let id = match known {
            Some(id) => id,
            None if wanted != 0 && !entries.contains_key(&wanted) => wanted,
            None => entries.keys().max().copied().unwrap_or(0) + 1,
        };
        entry.id = id;
        entries.insert(id, entry);
        Ok(id)
    }

    /// Sends an order to chunkserver `id` and waits for its result.
    pub async fn order(
        &self,
        id: u32,
        make: impl FnOnce(u64) -> MasterToCs,
    ) -> Result<(), FsError> {
        let (req_id, rx, queue) = self.register_order(id)?;
        queue.send(make(req_id)).await?;
        self.result_of(id, req_id, rx).await
    }

    /// Sends an order to chunkserver `id` now, from the calling task (an error when its
    /// queue is full); [`CsRegistry::result`] waits for its result.
    pub fn order_now(
        &self,
        id: u32,
        make: impl FnOnce(u64) -> MasterToCs,
    ) -> Result<SentOrder, FsError> {
        let (req_id, rx, queue) = self.register_order(id)?;
        match queue.try_send(make(req_id)) {
            Ok(seq) => Ok(SentOrder {
                id,
                req_id,
                rx,
                seq,
                written: queue.written.clone(),
            }),
            Err(e) => {
                if let Some(entry) = self.lock().get(&id) {
                    entry.pending.lock().remove(&req_id);
                }
                Err(e)
            }
        }
    }

    /// The result of an order sent with [`CsRegistry::order_now`].
    pub async fn result(&self, order: SentOrder) -> Result<(), FsError> {
        self.result_of(order.id, order.req_id, order.rx).await
    }

    /// A request id for an order to chunkserver `id`, where its result will come, and the
    /// server's order queue.
    fn register_order(&self, id: u32) -> Result<OrderSlot, FsError> {
        let req_id = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let entries = self.lock();
        let e = entries
            .get(&id)
            .filter(|e| e.connected)
            .ok_or(FsError::Io)?;
        let sender = e.tx.clone().ok_or(FsError::Io)?;
        e.pending.lock().insert(req_id, tx);
        Ok((req_id, rx, sender))
    }

    async fn result_of(
        &self,
        id: u32,
        req_id: u64,
        rx: oneshot::Receiver<Result<(), FsError>>,
    ) -> Result<(), FsError> {
        match tokio::time::timeout(self.timeout * 3, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(FsError::Io),
            Err(_) => {
                if let Some(e) = self.lock().get(&id) {
                    e.pending.lock().remove(&req_id);
                }
                Err(FsError::TimedOut)
            }
        }
    }
}
