//! The link to the master (port 9420): registration with the whole chunk inventory, the
//! chunks on disks marked for removal, space reports every second, damaged/lost chunk
//! reports, and the master's orders. The link is re-established (with a full registration)
//! whenever it breaks.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use moose_proto::auth::{self, TokenKey};
use moose_proto::frame::{FrameReader, FrameWriter, ProtoError};
use moose_proto::handshake::{say_hello_nonce, HandshakeError};
use moose_proto::msg::{CsToMaster, MasterToCs};
use moose_proto::{DiskReport, Role, VERSION};
use nix::sys::socket::{setsockopt, sockopt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{lookup_host, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::timeout;

use crate::config::CsConfig;
use crate::identity::{self, Identity};
use crate::orders::{Job, Order, Orders};
use crate::store::Store;

/// Chunks per `Chunks` message during registration.
pub const CHUNKS_PER_BATCH: usize = 50_000;
/// Interval of space reports.
const SPACE_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest time allowed for sending the inventory and getting the master's answer.
const MIN_REGISTER_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed for the goodbye on shutdown.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

type Reader = FrameReader<OwnedReadHalf>;
type Writer = FrameWriter<OwnedWriteHalf>;

/// How the master link tells the outside world what it is waiting for, and when it is ready.
pub trait Lifecycle: Sync {
    fn progress(&self, msg: &str);
    fn ready(&self);
}

impl Lifecycle for moose_common::DaemonContext {
    fn progress(&self, msg: &str) {
        moose_common::DaemonContext::progress(self, msg)
    }

    fn ready(&self) {
        moose_common::DaemonContext::ready(self)
    }
}

/// Why a connection attempt failed.
enum Problem {
    /// Worth a warning: network trouble, master not there yet.
    Retry(String),
    /// Worth an error: the master (or we) refused the registration.
    Refused(String),
}

/// Why a session ended.
enum End {
    Shutdown,
    Lost(String),
    /// New chunks appeared (reload); the master must get the full inventory again.
    Reregister,
}

struct Link {
    reader: Reader,
    writer: Writer,
    name: String,
}

pub struct MasterConn {
    cfg: Arc<CsConfig>,
    store: Arc<Store>,
    orders: Orders,
    events: mpsc::UnboundedReceiver<CsToMaster>,
    identity: Option<Identity>,
    reregister: Arc<Notify>,
}

impl MasterConn {
    /// `events` are the store's reports; `identity` is what chunkserver.id holds;
    /// `reregister` is notified when the master must get the inventory again.
    pub fn new(
        cfg: Arc<CsConfig>,
        store: Arc<Store>,
        events: mpsc::UnboundedReceiver<CsToMaster>,
        identity: Option<Identity>,
        reregister: Arc<Notify>,
    ) -> MasterConn {
        MasterConn {
            orders: Orders::new(Arc::clone(&store)),
            cfg,
            store,
            events,
            identity,
            reregister,
        }
    }

    /// Keeps the master link up until `shutdown` turns true.
    pub async fn run(mut self, life: &dyn Lifecycle, mut shutdown: watch::Receiver<bool>) {
        let mut last_problem = String::new();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let attempt = tokio::select! {
                a = self.connect_and_register(life) => a,
                _ = shutdown.changed() => return,
            };
            match attempt {
                Ok(link) => {
                    last_problem.clear();
                    let name = link.name.clone();
                    match self.session(link, &mut shutdown).await {
                        End::Shutdown => return,
                        End::Reregister => {
                            tracing::info!(
                                "registering with master {name} again to announce the chunks of \
                                 new hdd folders"
                            );
                            continue;
                        }
                        End::Lost(why) => {
                            let msg = format!("lost the connection to master {name}: {why}");
                            tracing::warn!(
                                "{msg}; reconnecting every {} s",
                                self.cfg.reconnect_delay.as_secs()
                            );
                            life.progress(&msg);
                        }
                    }
                }
                Err(Problem::Retry(msg)) => {
                    if msg != last_problem {
                        tracing::warn!(
                            "{msg}; retrying every {} s",
                            self.cfg.reconnect_delay.as_secs()
                        );
                    }
                    life.progress(&msg);
                    last_problem = msg;
                }
                Err(Problem::Refused(msg)) => {
                    if msg != last_problem {
                        tracing::error!(
                            "{msg}; retrying every {} s",
                            self.cfg.reconnect_delay.as_secs()
                        );
                    }
                    life.progress(&msg);
                    last_problem = msg;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.reconnect_delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn connect_and_register(&mut self, life: &dyn Lifecycle) -> Result<Link, Problem> {
        let cfg = Arc::clone(&self.cfg);
        let t = cfg.master_timeout;
        let host = cfg.master_host.as_str();
        let unresolved = |why: String| {
            Problem::Retry(format!(
                "cannot resolve master host '{host}' (MASTER_HOST in {}): {why}; set MASTER_HOST \
                 to the master's address or add it to /etc/hosts",
                cfg.cfg_path.display()
            ))
        };
        let addr = match timeout(t, lookup_host((host, cfg.master_port))).await {
            Ok(Ok(mut addrs)) => addrs
                .next()
                .ok_or_else(|| unresolved("it has no address".into()))?,
            Ok(Err(e)) => return Err(unresolved(e.to_string())),
            Err(_) => return Err(unresolved(format!("no answer within {} s", t.as_secs()))),
        };
        let name = if host.parse::<IpAddr>().is_ok() {
            addr.to_string()
        } else {
            format!("{host} ({addr})")
        };
        let sock = match timeout(t, connect(addr, cfg.bind_host.as_deref())).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let hint = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    format!(
                        " (is the master running? check MASTER_HOST and MASTER_PORT in {})",
                        cfg.cfg_path.display()
                    )
                } else {
                    String::new()
                };
                return Err(Problem::Retry(format!(
                    "cannot connect to master {name}: {}{hint}",
                    describe(&e)
                )));
            }
            Err(_) => {
                return Err(Problem::Retry(format!(
                    "cannot connect to master {name}: no answer within {} s",
                    t.as_secs()
                )))
            }
        };
        let _ = sock.set_nodelay(true);
        // The master does not have to talk when it has nothing to say, but we report every
        // second: a master that stops acknowledging that data for MASTER_TIMEOUT is gone.
        let ms = u32::try_from(t.as_millis()).unwrap_or(u32::MAX);
        if let Err(e) = setsockopt(&sock, sockopt::TcpUserTimeout, &ms) {
            tracing::debug!("cannot set TCP_USER_TIMEOUT on the master link: {e}");
        }
        let (rd, wr) = sock.into_split();
        let mut reader = FrameReader::new(rd);
        let mut writer = FrameWriter::new(wr);
        let peer = format!("master {name}");
        let master_nonce = match timeout(
            t,
            say_hello_nonce(&mut reader, &mut writer, Role::Chunkserver, &peer),
        )
        .await
        {
            Ok(Ok((_, nonce))) => nonce,
            Ok(Err(HandshakeError::Refused { reason, .. })) => {
                return Err(Problem::Refused(format!(
                    "master {name} refused the connection: {reason}"
                )))
            }
            Ok(Err(e)) => return Err(Problem::Retry(e.to_string())),
            Err(_) => {
                return Err(Problem::Retry(format!(
                    "master {name} did not answer the hello within {} s; is MASTER_PORT the \
                     master's chunkserver port?",
                    t.as_secs()
                )))
            }
        };

        let store = Arc::clone(&self.store);
        let (disks, chunks) =
            tokio::task::spawn_blocking(move || (store.space_reports(), store.chunk_refs()))
                .await
                .map_err(|e| Problem::Retry(format!("cannot list the chunks: {e}")))?;
        let (cs_id, cluster_id) = match self.identity {
            Some(id) => (id.cs_id, id.cluster_id),
            None => (0, self.store.disks().cluster_id().unwrap_or(0)),
        };
        let disk_count = disks.len();
        let chunk_count = chunks.len();
        let lost = |e: ProtoError| {
            Problem::Retry(format!(
                "master {name}: connection lost during registration: {e}"
            ))
        };
        let secret = cfg.auth_code.as_ref().map(|s| s.as_bytes().to_vec());
        let proof = secret
            .as_ref()
            .map(|s| auth::peer_proof(s, "chunkserver", &master_nonce));
        let our_nonce = proof.as_ref().map(|p| p.nonce.clone());
        let register = async {
            writer
                .send(&CsToMaster::Register {
                    cs_id,
                    cluster_id,
                    listen_host: cfg.advertised_host(),
                    listen_port: cfg.listen_port,
                    version: VERSION.to_string(),
                    disks,
                    auth: proof,
                })
                .await
                .map_err(lost)?;
            for batch in chunks.chunks(CHUNKS_PER_BATCH) {
                writer
                    .send(&CsToMaster::Chunks(batch.to_vec()))
                    .await
                    .map_err(lost)?;
            }
            writer.send(&CsToMaster::RegisterEnd).await.map_err(lost)?;
            writer.flush().await.map_err(lost)?;
            loop {
                match reader.next_msg::<MasterToCs>().await.map_err(lost)? {
                    MasterToCs::Nop => {}
                    MasterToCs::RegisterAck {
                        cs_id,
                        cluster_id,
                        proof,
                        token_key,
                    } => return Ok((cs_id, cluster_id, proof, token_key)),
                    MasterToCs::Refused { reason } => {
                        return Err(Problem::Refused(format!(
                            "master {name} refused the registration: {reason}"
                        )))
                    }
                    other => {
                        return Err(Problem::Retry(format!(
                            "master {name} sent {other:?} before acknowledging the registration"
                        )))
                    }
                }
            }
        };
        let register_timeout = t.max(MIN_REGISTER_TIMEOUT);
        let (ack_cs, ack_cluster, master_proof, token_key) =
            match timeout(register_timeout, register).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(Problem::Retry(format!(
                        "master {name} did not acknowledge the registration within {} s",
                        register_timeout.as_secs()
                    )))
                }
            };

        if let Some(id) = self.identity {
            if id.cluster_id != 0 && id.cluster_id != ack_cluster {
                let path = cfg.id_file();
                return Err(Problem::Refused(format!(
                    "master {name} manages cluster {ack_cluster}, but {} says this chunkserver \
                     belongs to cluster {}; point MASTER_HOST at that cluster's master, or, only \
                     if this chunkserver's chunks are disposable, delete {} and the .metaid files \
                     of its hdd folders",
                    path.display(),
                    id.cluster_id,
                    path.display()
                )));
            }
        }
        // The master proves the secret too, and the token key follows from it (or, without a
        // secret, comes with the acknowledgement).
        match (&secret, master_proof, token_key) {
            (Some(s), Some(p), _) => {
                let nonce = our_nonce.unwrap_or_default();
                if !auth::same(
                    &p,
                    &auth::master_proof(s, "chunkserver", &master_nonce, &nonce),
                ) {
                    return Err(Problem::Refused(format!(
                        "master {name} does not know the cluster secret (AUTH_CODE differs); \
                         not serving it"
                    )));
                }
                self.store.access.set_key(TokenKey::from_secret(s));
            }
            (Some(_), None, _) => {
                return Err(Problem::Refused(format!(
                    "master {name} did not prove the cluster secret although AUTH_CODE is set here"
                )))
            }
            (None, _, Some(key)) => self.store.access.set_key(TokenKey::from_bytes(key)),
            (None, _, None) => {
                return Err(Problem::Refused(format!(
                "master {name} uses a cluster secret (AUTH_CODE) and this chunkserver has none; \
                     set AUTH_CODE in {}",
                cfg.cfg_path.display()
            )))
            }
        }
        if ack_cluster == 0 {
            return Err(Problem::Refused(format!(
                "master {name} acknowledged the registration without a cluster id; check that \
                 MASTER_HOST and MASTER_PORT point to moose-master"
            )));
        }
        self.store.disks().check_cluster(ack_cluster).map_err(|e| {
            Problem::Refused(format!("master {name} manages cluster {ack_cluster}: {e}"))
        })?;

        let new_id = Identity {
            cs_id: ack_cs,
            cluster_id: ack_cluster,
        };
        if let Some(old) = self.identity {
            if old.cs_id != 0 && old.cs_id != ack_cs {
                tracing::warn!(
                    "master {name} gave this chunkserver the id {ack_cs} (it had {})",
                    old.cs_id
                );
            }
        }
        let changed = self.identity != Some(new_id);
        let path = cfg.id_file();
        let store = Arc::clone(&self.store);
        let saved = tokio::task::spawn_blocking(move || {
            let id = if changed {
                identity::save(&path, &new_id).map_err(|e| e.to_string())
            } else {
                Ok(())
            };
            (id, store.disks().bind_cluster(ack_cluster))
        })
        .await;
        match saved {
            Ok((id, disks)) => {
                for e in [id.err(), disks.err()].into_iter().flatten() {
                    tracing::error!("{e}; fix it, or the next start cannot prove who it is");
                }
            }
            Err(e) => tracing::error!("cannot record the chunkserver id: {e}"),
        }
        self.identity = Some(new_id);
        tracing::info!(
            "registered with master {name} as chunkserver {ack_cs} of cluster {ack_cluster}: \
             {chunk_count} chunks on {disk_count} hdd folders"
        );
        life.ready();
        Ok(Link {
            reader,
            writer,
            name,
        })
    }

    async fn session(&mut self, link: Link, shutdown: &mut watch::Receiver<bool>) -> End {
        let Link {
            reader, mut writer, ..
        } = link;
        let t = self.cfg.master_timeout;
        let (results_tx, mut results_rx) = mpsc::unbounded_channel();
        let mut reader_task = tokio::spawn(read_orders(reader, self.orders.clone(), results_tx));
        // Reports queued while disconnected are covered by what follows: the chunks on disks
        // marked for removal as they are now, and the damage found earlier.
        while self.events.try_recv().is_ok() {}
        let store = Arc::clone(&self.store);
        let (marked, damaged) = match tokio::task::spawn_blocking(move || {
            (store.marked_chunks(), store.damaged_refs())
        })
        .await
        {
            Ok(lists) => lists,
            Err(e) => {
                reader_task.abort();
                return End::Lost(format!("cannot list the chunks: {e}"));
            }
        };
        let initial = std::iter::once(CsToMaster::MarkedChunks(marked))
            .chain(damaged.into_iter().map(CsToMaster::ChunkDamaged));
        for msg in initial {
            if let Err(e) = writer.send(&msg).await {
                reader_task.abort();
                return End::Lost(e.to_string());
            }
        }
        let mut tick = tokio::time::interval(SPACE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_space: Option<Vec<DiskReport>> = None;
        let end = loop {
            let msg = tokio::select! {
                _ = shutdown.changed() => {
                    let bye = timeout(GOODBYE_TIMEOUT, async {
                        writer.send(&CsToMaster::Goodbye).await?;
                        writer.flush().await
                    });
                    match bye.await {
                        Ok(Ok(())) => tracing::info!("told the master goodbye"),
                        _ => tracing::warn!("could not tell the master goodbye"),
                    }
                    break End::Shutdown;
                }
                r = &mut reader_task => {
                    break End::Lost(r.unwrap_or_else(|e| format!("reader failed: {e}")));
                }
                Some(m) = results_rx.recv() => m,
                Some(m) = self.events.recv() => m,
                _ = self.reregister.notified() => break End::Reregister,
                _ = tick.tick() => {
                    let store = Arc::clone(&self.store);
                    match tokio::task::spawn_blocking(move || store.space_reports()).await {
                        Ok(reports) if last_space.as_ref() != Some(&reports) => {
                            last_space = Some(reports.clone());
                            CsToMaster::Space(reports)
                        }
                        Ok(_) => CsToMaster::Nop,
                        Err(e) => {
                            tracing::error!("cannot compute the space report: {e}");
                            CsToMaster::Nop
                        }
                    }
                }
            };
            let sent = timeout(t, async {
                writer.send(&msg).await?;
                while let Ok(m) = results_rx.try_recv() {
                    writer.send(&m).await?;
                }
                writer.flush().await
            });
            match sent.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break End::Lost(e.to_string()),
                Err(_) => {
                    break End::Lost(format!("the master took no data for {} s", t.as_secs()))
                }
            }
        };
        reader_task.abort();
        end
    }
}

/// Connects to the master, from BIND_HOST when set.
async fn connect(addr: SocketAddr, bind: Option<&str>) -> std::io::Result<TcpStream> {
    let Some(host) = bind else {
        return TcpStream::connect(addr).await;
    };
    let bind_err = |e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("cannot bind to BIND_HOST {host}: {e}"))
    };
    let local = lookup_host((host, 0))
        .await
        .map_err(bind_err)?
        .find(|a| a.is_ipv4() == addr.is_ipv4())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("BIND_HOST {host} has no address of the master's address family"),
            )
        })?;
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.bind(local).map_err(bind_err)?;
    sock.connect(addr).await
}

fn describe(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::ConnectionReset => "connection reset".into(),
        ErrorKind::HostUnreachable => "host unreachable".into(),
        ErrorKind::NetworkUnreachable => "network unreachable".into(),
        ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

/// Reads the master's messages and hands the orders out; returns why the link ended.
async fn read_orders(
    mut reader: Reader,
    orders: Orders,
    results: mpsc::UnboundedSender<CsToMaster>,
) -> String {
    loop {
        let msg = match reader.next_msg::<MasterToCs>().await {
            Err(e) if e.is_disconnect() => return "the master closed the connection".into(),
            Err(e) => return e.to_string(),
            Ok(m) => m,
        };
        let (req_id, chunk, order) = match msg {
            MasterToCs::Nop => continue,
            MasterToCs::RegisterAck { .. } => {
                tracing::debug!("ignoring a repeated registration acknowledgement");
                continue;
            }
            MasterToCs::Refused { reason } => {
                return format!("the master dropped this chunkserver: {reason}")
            }
            MasterToCs::Create { req_id, chunk } => (req_id, chunk, Order::Create),
            MasterToCs::Delete { req_id, chunk } => (req_id, chunk, Order::Delete),
            MasterToCs::SetVersion {
                req_id,
                chunk,
                new_version,
            } => (req_id, chunk, Order::SetVersion { new_version }),
            MasterToCs::Truncate {
                req_id,
                chunk,
                new_version,
                length,
            } => (
                req_id,
                chunk,
                Order::Truncate {
                    new_version,
                    length,
                },
            ),
            MasterToCs::Replicate {
                req_id,
                chunk,
                source,
                token,
            } => (req_id, chunk, Order::Replicate { source, token }),
            MasterToCs::Duplicate {
                req_id,
                chunk,
                copy,
            } => (req_id, chunk, Order::Duplicate { copy }),
        };
        tracing::debug!(
            "order {req_id}: {order:?} chunk {:016X} v{}",
            chunk.chunk_id,
            chunk.version
        );
        orders.submit(
            Job {
                req_id,
                chunk,
                order,
            },
            results.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hdd::{HddEntry, SpaceLimit};
    use crate::store::tests::{damage, test_store};
    use moose_proto::handshake::accept_hello;
    use moose_proto::msg::MarkedDisk;
    use moose_proto::ChunkRef;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use tokio::net::TcpListener;

    #[derive(Default)]
    struct Recorder {
        progress: Mutex<Vec<String>>,
        ready: AtomicBool,
    }

    impl Lifecycle for Recorder {
        fn progress(&self, msg: &str) {
            self.progress.lock().unwrap().push(msg.to_string());
        }
        fn ready(&self) {
            self.ready.store(true, Ordering::SeqCst);
        }
    }

    fn config(data: &Path, port: u16) -> Arc<CsConfig> {
        Arc::new(CsConfig {
            cfg_path: data.join("cs.cfg"),
            data_path: data.to_path_buf(),
            master_host: "127.0.0.1".into(),
            master_port: port,
            bind_host: None,
            listen_host: "*".into(),
            listen_port: 9422,
            hdd_file: data.join("hdd.cfg"),
            leave_space: 0,
            reconnect_delay: Duration::from_secs(1),
            master_timeout: Duration::from_secs(10),
            test_speed: 1.0,
            error_tolerance: Default::default(),
            labels: String::new(),
            auth_code: None,
        })
    }

    struct FakeMaster {
        r: FrameReader<OwnedReadHalf>,
        w: FrameWriter<OwnedWriteHalf>,
    }

    impl FakeMaster {
        async fn accept(l: &TcpListener) -> FakeMaster {
            let (sock, _) = l.accept().await.unwrap();
            let (rd, wr) = sock.into_split();
            let mut r = FrameReader::new(rd);
            let mut w = FrameWriter::new(wr);
            accept_hello(&mut r, &mut w, &[Role::Chunkserver], "test master")
                .await
                .unwrap();
            FakeMaster { r, w }
        }

        /// Reads a registration; returns (cs_id, cluster_id, listen_host, chunks).
        async fn registration(&mut self) -> (u32, u64, String, Vec<ChunkRef>) {
            let (cs_id, cluster_id, host) = match self.r.next_msg().await.unwrap() {
                CsToMaster::Register {
                    cs_id,
                    cluster_id,
                    listen_host,
                    disks,
                    ..
                } => {
                    assert_eq!(disks.len(), 1);
                    (cs_id, cluster_id, listen_host)
                }
                other => panic!("expected Register, got {other:?}"),
            };
            let mut chunks = Vec::new();
            loop {
                match self.r.next_msg().await.unwrap() {
                    CsToMaster::Chunks(c) => chunks.extend(c),
                    CsToMaster::RegisterEnd => return (cs_id, cluster_id, host, chunks),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }

        /// Next message that is not a space report or a nop.
        async fn next(&mut self) -> CsToMaster {
            loop {
                match self.r.next_msg().await.unwrap() {
                    CsToMaster::Space(_) | CsToMaster::Nop => {}
                    other => return other,
                }
            }
        }

        async fn send(&mut self, m: MasterToCs) {
            self.w.send_now(&m).await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn registers_obeys_orders_and_reconnects() {
        let data = tempfile::tempdir().unwrap();
        let disk = tempfile::tempdir().unwrap();
        let (store, events) = test_store(disk.path());
        let old = ChunkRef {
            chunk_id: 0x10,
            version: 1,
        };
        store.create(old).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = config(data.path(), listener.local_addr().unwrap().port());
        let conn = MasterConn::new(
            Arc::clone(&cfg),
            Arc::clone(&store),
            events,
            None,
            Arc::new(Notify::new()),
        );
        let life = Arc::new(Recorder::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let l2 = Arc::clone(&life);
        let cs = tokio::spawn(async move { conn.run(&*l2, stop_rx).await });

        // 1: refused by the master.
        let mut m = FakeMaster::accept(&listener).await;
        let (cs_id, cluster, host, chunks) = m.registration().await;
        assert_eq!((cs_id, cluster, host.as_str()), (0, 0, ""));
        assert_eq!(chunks, vec![old]);
        m.send(MasterToCs::Refused {
            reason: "not today".into(),
        })
        .await;
        drop(m);

        // 2: accepted; an order is carried out; then the master goes away.
        let mut m = FakeMaster::accept(&listener).await;
        m.registration().await;
        assert!(life.progress.lock().unwrap()[0].contains("refused the registration: not today"));
        m.send(MasterToCs::RegisterAck {
            cs_id: 3,
            cluster_id: 99,
            proof: None,
            token_key: Some(vec![7; 32]),
        })
        .await;
        // No disk is marked for removal: the list is empty, but it is sent.
        assert_eq!(m.next().await, CsToMaster::MarkedChunks(Vec::new()));
        let new = ChunkRef {
            chunk_id: 0x11,
            version: 1,
        };
        m.send(MasterToCs::Create {
            req_id: 41,
            chunk: new,
        })
        .await;
        assert_eq!(
            m.next().await,
            CsToMaster::OpDone {
                req_id: 41,
                status: Ok(())
            }
        );
        assert!(life.ready.load(Ordering::SeqCst));
        assert_eq!(
            std::fs::read_to_string(data.path().join("chunkserver.id")).unwrap(),
            "3 99\n"
        );
        assert_eq!(identity::read_metaid(disk.path()).unwrap(), Some(99));
        drop(m);

        // 3: a master of another cluster is refused locally.
        let mut m = FakeMaster::accept(&listener).await;
        let (cs_id, cluster, _, chunks) = m.registration().await;
        assert_eq!((cs_id, cluster, chunks.len()), (3, 99, 2));
        m.send(MasterToCs::RegisterAck {
            cs_id: 3,
            cluster_id: 100,
            proof: None,
            token_key: Some(vec![7; 32]),
        })
        .await;
        assert!(matches!(m.r.next().await, Err(e) if e.is_disconnect()));

        // 4: back to the right master; goodbye on shutdown.
        let mut m = FakeMaster::accept(&listener).await;
        m.registration().await;
        {
            let p = life.progress.lock().unwrap();
            let last = p.last().unwrap();
            assert!(last.contains("manages cluster 100"), "{last}");
            assert!(last.contains("chunkserver.id says this chunkserver belongs to cluster 99"));
        }
        m.send(MasterToCs::RegisterAck {
            cs_id: 3,
            cluster_id: 99,
            proof: None,
            token_key: Some(vec![7; 32]),
        })
        .await;
        assert_eq!(
            m.r.next_msg::<CsToMaster>().await.unwrap(),
            CsToMaster::MarkedChunks(Vec::new())
        );
        // The first space report comes within a second.
        assert!(matches!(m.r.next_msg().await.unwrap(), CsToMaster::Space(d) if d.len() == 1));
        stop_tx.send(true).unwrap();
        assert_eq!(m.next().await, CsToMaster::Goodbye);
        cs.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn marked_chunks_follow_every_registration_and_reload() {
        let data = tempfile::tempdir().unwrap();
        let disk = tempfile::tempdir().unwrap();
        let (store, events) = test_store(disk.path());
        let chunks = [0x31u64, 0x32].map(|chunk_id| ChunkRef {
            chunk_id,
            version: 2,
        });
        for c in chunks {
            store.create(c).unwrap();
        }
        // A damaged copy is reported as damaged and listed as marked.
        damage(&store, disk.path(), chunks[1]);
        let d = store.disks().all()[0].clone();
        let mut entry = HddEntry {
            path: d.path.clone(),
            line: 1,
            marked_for_removal: true,
            limit: SpaceLimit::Default,
        };
        d.apply(&entry);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = config(data.path(), listener.local_addr().unwrap().port());
        let conn = MasterConn::new(
            cfg,
            Arc::clone(&store),
            events,
            None,
            Arc::new(Notify::new()),
        );
        let life = Arc::new(Recorder::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let l2 = Arc::clone(&life);
        let cs = tokio::spawn(async move { conn.run(&*l2, stop_rx).await });

        let marked = |mut got: CsToMaster| {
            if let CsToMaster::MarkedChunks(disks) = &mut got {
                for d in disks {
                    d.chunks.sort_by_key(|c| c.chunk_id);
                }
            }
            got
        };
        let expected = CsToMaster::MarkedChunks(vec![MarkedDisk {
            path: disk.path().display().to_string(),
            chunks: chunks.to_vec(),
        }]);
        for _ in 0..2 {
            let mut m = FakeMaster::accept(&listener).await;
            m.registration().await;
            m.send(MasterToCs::RegisterAck {
                cs_id: 4,
                cluster_id: 7,
                proof: None,
                token_key: Some(vec![7; 32]),
            })
            .await;
            // Right after the acknowledgement, before anything else.
            assert_eq!(marked(m.r.next_msg().await.unwrap()), expected);
            assert_eq!(
                m.r.next_msg::<CsToMaster>().await.unwrap(),
                CsToMaster::ChunkDamaged(chunks[1])
            );
            // A reload queues the new list; it replaces the previous one on the master.
            entry.marked_for_removal = false;
            d.apply(&entry);
            store.report_marked();
            assert_eq!(m.next().await, CsToMaster::MarkedChunks(Vec::new()));
            entry.marked_for_removal = true;
            d.apply(&entry);
            store.report_marked();
            assert_eq!(marked(m.next().await), expected);
            // The next registration sends the list again.
            drop(m);
        }
        let mut m = FakeMaster::accept(&listener).await;
        m.registration().await;
        stop_tx.send(true).unwrap();
        cs.await.unwrap();
    }

    #[tokio::test]
    async fn unreachable_master_is_explained() {
        let data = tempfile::tempdir().unwrap();
        let disk = tempfile::tempdir().unwrap();
        let (store, events) = test_store(disk.path());
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = dead.local_addr().unwrap().port();
        drop(dead);
        let conn = MasterConn::new(
            config(data.path(), port),
            store,
            events,
            None,
            Arc::new(Notify::new()),
        );
        let life = Recorder::default();
        let (stop_tx, stop_rx) = watch::channel(false);
        let run = conn.run(&life, stop_rx);
        let stop = async {
            loop {
                if !life.progress.lock().unwrap().is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop_tx.send(true).unwrap();
        };
        tokio::join!(run, stop);
        let msg = life.progress.lock().unwrap()[0].clone();
        assert!(
            msg.starts_with(&format!(
                "cannot connect to master 127.0.0.1:{port}: connection refused"
            )),
            "{msg}"
        );
        assert!(!life.ready.load(Ordering::SeqCst));
    }
}
