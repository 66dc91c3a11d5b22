//! A hostile peer speaking the raw protocol: each attempt is refused, leaves a log line, and
//! changes nothing.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use moose_proto::auth::{self, ChunkToken, TokenOp};
use moose_proto::handshake::say_hello_nonce;
use moose_proto::msg::{
    ClEnvelope, ClReply, ClRequest, ClResponse, CsToMaster, EndSync, FromCs, MasterToCs,
    MasterToMl, MlToMaster, RegisterRequest, ToCs,
};
use moose_proto::{ChunkRef, Cred, CsAddr, FrameReader, FrameWriter, FsError, Role, ROOT_INODE};
use moose_tests::{ClusterSpec, LocalCluster};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn start(spec: ClusterSpec) -> LocalCluster {
    if let Err(why) = moose_tests::fuse_available() {
        panic!("cannot run the hostile-peer tests: {why}");
    }
    LocalCluster::start(spec).expect("cluster starts")
}

/// Waits (up to 10 s) for `log()` to contain `what`.
fn wait_log(what: &str, log: impl Fn() -> String) -> String {
    for _ in 0..100 {
        let l = log();
        if l.contains(what) {
            return l;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no log line with '{what}':\n{}", log());
}

/// A raw connection from `from` (an address of 127/8) after the hello.
struct Raw {
    r: FrameReader<OwnedReadHalf>,
    w: FrameWriter<OwnedWriteHalf>,
    nonce: Vec<u8>,
    next: u32,
}

async fn connect_from(from: &str, port: u16) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    sock.connect(SocketAddr::new("127.0.0.1".parse().unwrap(), port))
        .await
        .unwrap()
}

async fn raw(from: &str, port: u16, role: Role) -> Raw {
    let (rd, wr) = connect_from(from, port).await.into_split();
    let mut r = FrameReader::new(rd);
    let mut w = FrameWriter::new(wr);
    let (_, nonce) = say_hello_nonce(&mut r, &mut w, role, "test").await.unwrap();
    Raw {
        r,
        w,
        nonce,
        next: 1,
    }
}

impl Raw {
    async fn call(&mut self, req: ClRequest) -> Result<ClReply, FsError> {
        let msgid = self.next;
        self.next += 1;
        self.w.send_now(&ClEnvelope { msgid, req }).await.unwrap();
        loop {
            let resp: ClResponse = self.r.next_msg().await.unwrap();
            if resp.msgid == msgid {
                return resp.result;
            }
        }
    }

    async fn register(&mut self, subdir: &str) -> Result<ClReply, FsError> {
        self.call(ClRequest::Register(RegisterRequest {
            subdir: subdir.into(),
            mount_point: "/hostile".into(),
            password_proof: None,
            tool: false,
            resume: None,
        }))
        .await
    }

    async fn open(&mut self, inode: u64, flags: i32) -> Result<ClReply, FsError> {
        self.call(ClRequest::Open {
            inode,
            flags,
            cred: Cred::root(),
        })
        .await
    }

    /// On a chunkserver link: asks for the first block of `chunk` with `token`, where no
    /// data is to come; the `ReadDone` status.
    async fn refused_read(&mut self, chunk: ChunkRef, token: ChunkToken) -> Result<(), FsError> {
        self.w
            .send_now(&ToCs::Read {
                req_id: 1,
                chunk,
                offset: 0,
                size: 65536,
                token,
            })
            .await
            .unwrap();
        match self.r.next_msg::<FromCs>().await {
            Ok(FromCs::ReadDone { status, .. }) => status,
            other => panic!("expected ReadDone and no data, got {other:?}"),
        }
    }

    /// On a chunkserver link: asks for a sync of `chunk` with `token`; the `SyncDone` status.
    async fn sync(&mut self, chunk: ChunkRef, token: ChunkToken) -> Result<(), FsError> {
        self.w
            .send_now(&ToCs::Sync {
                req_id: 1,
                chunk,
                token,
            })
            .await
            .unwrap();
        match self.r.next_msg::<FromCs>().await {
            Ok(FromCs::SyncDone { status, .. }) => status,
            other => panic!("expected SyncDone, got {other:?}"),
        }
    }

    async fn lookup(&mut self, parent: u64, name: &str) -> u64 {
        match self
            .call(ClRequest::Lookup {
                parent,
                name: name.as_bytes().to_vec(),
                cred: Cred::root(),
            })
            .await
        {
            Ok(ClReply::Attr(a)) => a.inode,
            other => panic!("lookup of {name}: {other:?}"),
        }
    }
}

fn chunk_of(c: &LocalCluster) -> ChunkRef {
    let files = c.chunk_files(0);
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    // chunk_<16 hex id>_<8 hex version>.mfs
    ChunkRef {
        chunk_id: u64::from_str_radix(&name[6..22], 16).unwrap(),
        version: u32::from_str_radix(&name[23..31], 16).unwrap(),
    }
}

fn cs_log(c: &LocalCluster, i: usize) -> String {
    std::fs::read_to_string(c.chunkservers[i].data.join("moose-chunkserver.log"))
        .unwrap_or_default()
}

#[test]
fn registering_with_a_stolen_id_is_refused_and_changes_nothing() {
    let c = start(ClusterSpec {
        chunkservers: 1,
        ..Default::default()
    });
    let id_text = std::fs::read_to_string(c.chunkservers[0].data.join("chunkserver.id")).unwrap();
    let mut words = id_text.split_whitespace();
    let cs_id: u32 = words.next().unwrap().parse().unwrap();
    let cluster_id: u64 = words.next().unwrap().parse().unwrap();
    let reply = rt().block_on(async {
        let mut p = raw("127.0.0.1", c.cs_port, Role::Chunkserver).await;
        p.w.send(&CsToMaster::Register {
            cs_id,
            cluster_id,
            listen_host: "127.0.0.1".into(),
            listen_port: 1,
            version: "0.1.0".into(),
            disks: vec![moose_proto::DiskReport {
                path: "/stolen".into(),
                total: 1 << 30,
                avail: 1 << 30,
                used: 0,
                chunks: 1,
                errors: 0,
                marked_for_removal: false,
                damaged: false,
            }],
            auth: None,
        })
        .await
        .unwrap();
        p.w.send(&CsToMaster::Chunks(vec![ChunkRef {
            chunk_id: 1,
            version: 1,
        }]))
        .await
        .unwrap();
        p.w.send_now(&CsToMaster::RegisterEnd).await.unwrap();
        p.r.next_msg::<MasterToCs>().await.unwrap()
    });
    match reply {
        MasterToCs::Refused { reason } => {
            assert!(
                reason.contains("never handed to a second server"),
                "{reason}"
            )
        }
        other => panic!("a stolen id was accepted: {other:?}"),
    }
    wait_log("refused: chunkserver id", || c.master_log());
    let info = c.cluster_info().unwrap();
    let servers = info["chunkservers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{info}");
    assert_eq!(servers[0]["id"], cs_id);
    assert_eq!(servers[0]["connected"], true);
    assert_eq!(
        servers[0]["addr"]["port"], c.chunkservers[0].port,
        "the real chunkserver keeps its id: {info}"
    );
}

#[test]
fn a_chunkserver_without_the_cluster_secret_is_refused() {
    let mut c = start(ClusterSpec {
        chunkservers: 2,
        default_goal: 2,
        master_extra: vec!["AUTH_CODE = open sesame".into()],
        chunkserver_extra: vec!["AUTH_CODE = open sesame".into()],
        ..Default::default()
    });
    // With the secret, tokens are keyed by it: data goes through a chain of two and back.
    let mnt = c.mount().unwrap();
    let data = moose_tests::data::random_bytes(11, 3_000_000);
    std::fs::write(mnt.join("f"), &data).unwrap();
    c.drop_caches();
    moose_tests::data::assert_same("read back", &std::fs::read(mnt.join("f")).unwrap(), &data);
    // The real chunkserver proved the secret and registered; a peer without it, or with a
    // guess, does not.
    for (proof_secret, want) in [
        (None, "requires the cluster secret"),
        (Some("guess"), "wrong cluster secret"),
    ] {
        let reply = rt().block_on(async {
            let mut p = raw("127.0.0.1", c.cs_port, Role::Chunkserver).await;
            let auth =
                proof_secret.map(|s| auth::peer_proof(s.as_bytes(), "chunkserver", &p.nonce));
            p.w.send_now(&CsToMaster::Register {
                cs_id: 0,
                cluster_id: 0,
                listen_host: "127.0.0.1".into(),
                listen_port: 2,
                version: "0.1.0".into(),
                disks: vec![],
                auth,
            })
            .await
            .unwrap();
            p.r.next_msg::<MasterToCs>().await.unwrap()
        });
        match reply {
            MasterToCs::Refused { reason } => assert!(reason.contains(want), "{reason}"),
            other => panic!("registered without the secret: {other:?}"),
        }
        wait_log(want, || c.master_log());
    }
    let info = c.cluster_info().unwrap();
    assert_eq!(info["chunkservers"].as_array().unwrap().len(), 2, "{info}");
}

#[test]
fn reading_or_writing_a_chunk_without_a_token_is_refused() {
    let mut c = start(ClusterSpec {
        chunkservers: 1,
        ..Default::default()
    });
    let mnt = c.mount().unwrap();
    let data = moose_tests::data::random_bytes(5, 300_000);
    std::fs::write(mnt.join("f"), &data).unwrap();
    let chunk = chunk_of(&c);
    let port = c.chunkservers[0].port;
    let forged = ChunkToken {
        expires: u64::MAX,
        op: TokenOp::Read,
        chain: vec![],
        mac: [7; 16],
    };
    let (read_none, read_forged, write_none) = rt().block_on(async {
        let mut p = raw("127.0.0.1", port, Role::Client).await;
        let none = p.refused_read(chunk, ChunkToken::default()).await;
        let forged_status = p.refused_read(chunk, forged.clone()).await;
        let mut p = raw("127.0.0.1", port, Role::Client).await;
        p.w.send_now(&ToCs::WriteInit {
            chunk,
            chain: vec![CsAddr {
                host: "127.0.0.1".into(),
                port: 9,
            }],
            token: ChunkToken::default(),
        })
        .await
        .unwrap();
        let write = match p.r.next_msg::<FromCs>().await.unwrap() {
            FromCs::WriteStatus {
                write_id: 0,
                status,
            } => status,
            other => panic!("unexpected {other:?}"),
        };
        (none, forged_status, write)
    });
    assert_eq!(read_none, Err(FsError::Access));
    assert_eq!(read_forged, Err(FsError::Access));
    assert_eq!(write_none, Err(FsError::Access));
    wait_log("refused", || cs_log(&c, 0));
    c.drop_caches();
    moose_tests::data::assert_same(
        "file after the attempts",
        &std::fs::read(mnt.join("f")).unwrap(),
        &data,
    );
}

/// A session that opened a file write-only learns where its chunks are (an `fsync` after a
/// chunkserver died asks), with a token that syncs them but does not read them.
#[test]
fn a_write_only_opener_gets_locations_without_a_read_token() {
    let mut c = start(ClusterSpec {
        chunkservers: 1,
        ..Default::default()
    });
    let mnt = c.mount().unwrap();
    std::fs::write(mnt.join("f"), vec![3u8; 100_000]).unwrap();
    let port = c.chunkservers[0].port;
    let (loc, read, read_relabelled, sync) = rt().block_on(async {
        let mut p = raw("127.0.0.1", c.cl_port, Role::Client).await;
        assert!(matches!(p.register("/").await, Ok(ClReply::Registered(_))));
        let inode = p.lookup(ROOT_INODE, "f").await;
        let open = p.open(inode, libc::O_WRONLY).await;
        assert!(open.is_ok(), "{open:?}");
        let loc = match p.call(ClRequest::ReadChunk { inode, index: 0 }).await {
            Ok(ClReply::Chunk(loc)) => loc,
            other => panic!("locations for a write-only opener: {other:?}"),
        };
        let chunk = ChunkRef {
            chunk_id: loc.chunk_id,
            version: loc.version,
        };
        let mut cs = raw("127.0.0.1", port, Role::Client).await;
        let read = cs.refused_read(chunk, loc.token.clone()).await;
        let relabelled = ChunkToken {
            op: TokenOp::Read,
            ..loc.token.clone()
        };
        let read_relabelled = cs.refused_read(chunk, relabelled).await;
        let sync = cs.sync(chunk, loc.token.clone()).await;
        (loc, read, read_relabelled, sync)
    });
    assert_ne!(loc.chunk_id, 0);
    assert_eq!(loc.servers.len(), 1, "{loc:?}");
    assert_eq!(
        loc.token.op,
        TokenOp::Sync,
        "the token of a writer: {loc:?}"
    );
    assert_eq!(read, Err(FsError::Access));
    assert_eq!(read_relabelled, Err(FsError::Access));
    assert_eq!(sync, Ok(()));
}

#[test]
fn a_read_only_session_cannot_extend_a_file_nor_read_what_it_did_not_open() {
    let mut c = start(ClusterSpec {
        chunkservers: 1,
        exports: vec![
            "127.0.0.1 / rw,alldirs,maproot=0".into(),
            "127.0.0.2 / ro,maproot=0".into(),
        ],
        ..Default::default()
    });
    let mnt = c.mount().unwrap();
    std::fs::write(mnt.join("f"), vec![1u8; 1000]).unwrap();
    let results = rt().block_on(async {
        let mut p = raw("127.0.0.2", c.cl_port, Role::Client).await;
        match p.register("/").await {
            Ok(ClReply::Registered(r)) => assert!(r.read_only),
            other => panic!("registration: {other:?}"),
        }
        let inode = p.lookup(ROOT_INODE, "f").await;
        let unopened_read = p.call(ClRequest::ReadChunk { inode, index: 0 }).await;
        let open = p.open(inode, libc::O_RDONLY).await;
        assert!(open.is_ok(), "{open:?}");
        let chunk_id = match p.call(ClRequest::ReadChunk { inode, index: 0 }).await {
            Ok(ClReply::Chunk(loc)) => loc.chunk_id,
            other => panic!("read of an opened file: {other:?}"),
        };
        let end = p
            .call(ClRequest::WriteChunkEnd {
                inode,
                index: 0,
                chunk_id,
                length: 1 << 40,
                ok: true,
                keep: false,
                sync: EndSync::Recorded,
            })
            .await;
        let lease = p.call(ClRequest::WriteChunk { inode, index: 0 }).await;
        let truncate = p
            .call(ClRequest::SetAttr {
                inode,
                set: moose_proto::SetAttrs {
                    size: Some(1 << 30),
                    ..Default::default()
                },
                cred: Cred::root(),
            })
            .await;
        (unopened_read, end, lease, truncate)
    });
    let (unopened_read, end, lease, truncate) = results;
    assert_eq!(unopened_read, Err(FsError::Access));
    assert_eq!(end, Err(FsError::ReadOnly));
    assert_eq!(lease, Err(FsError::ReadOnly));
    assert_eq!(truncate, Err(FsError::ReadOnly));
    wait_log("without opening it for that; refused", || c.master_log());
    wait_log("is read-only: a change was refused", || c.master_log());
    assert_eq!(std::fs::metadata(mnt.join("f")).unwrap().len(), 1000);
}

#[test]
fn a_writer_cannot_end_a_lock_it_does_not_hold() {
    let mut c = start(ClusterSpec {
        chunkservers: 1,
        ..Default::default()
    });
    let mnt = c.mount().unwrap();
    std::fs::write(mnt.join("f"), vec![1u8; 1000]).unwrap();
    let end = rt().block_on(async {
        let mut p = raw("127.0.0.1", c.cl_port, Role::Client).await;
        p.register("/").await.unwrap();
        let inode = p.lookup(ROOT_INODE, "f").await;
        let chunk_id = chunk_of(&c).chunk_id;
        p.call(ClRequest::WriteChunkEnd {
            inode,
            index: 0,
            chunk_id,
            length: 1 << 40,
            ok: true,
            keep: false,
            sync: EndSync::Recorded,
        })
        .await
    });
    assert_eq!(end, Err(FsError::Perm));
    wait_log("it does not hold; refused", || c.master_log());
    assert_eq!(std::fs::metadata(mnt.join("f")).unwrap().len(), 1000);
}

#[test]
fn dot_dot_in_a_mount_path_and_inodes_outside_a_subfolder_are_refused() {
    let mut c = start(ClusterSpec {
        chunkservers: 1,
        exports: vec![
            "127.0.0.1 / rw,alldirs,maproot=0".into(),
            "127.0.0.2 /pub rw,alldirs,maproot=0".into(),
        ],
        ..Default::default()
    });
    let mnt = c.mount().unwrap();
    std::fs::create_dir(mnt.join("pub")).unwrap();
    std::fs::create_dir(mnt.join("secret")).unwrap();
    std::fs::write(mnt.join("secret/key"), b"s3cret").unwrap();
    let secret_file = std::fs::metadata(mnt.join("secret/key")).unwrap().ino();
    let secret_dir = std::fs::metadata(mnt.join("secret")).unwrap().ino();
    let (escape, up, attr_file, attr_dir, open) = rt().block_on(async {
        let mut p = raw("127.0.0.2", c.cl_port, Role::Client).await;
        let escape = p.register("/pub/../secret").await;
        let mut p = raw("127.0.0.2", c.cl_port, Role::Client).await;
        let root = match p.register("/pub").await {
            Ok(ClReply::Registered(r)) => r.root_inode,
            other => panic!("registration of /pub: {other:?}"),
        };
        let up = p.lookup(root, "..").await;
        let attr_file = p.call(ClRequest::GetAttr { inode: secret_file }).await;
        let attr_dir = p.call(ClRequest::GetAttr { inode: secret_dir }).await;
        let open = p.open(secret_file, libc::O_RDWR).await;
        (escape, up == root, attr_file, attr_dir, open)
    });
    match escape {
        Ok(ClReply::Refused(r)) => assert!(r.reason.contains("/secret"), "{}", r.reason),
        other => panic!("'..' escaped the export: {other:?}"),
    }
    assert!(up, "'..' of the mounted folder is the folder itself");
    assert_eq!(attr_file, Err(FsError::NoEnt));
    assert_eq!(attr_dir, Err(FsError::NoEnt));
    assert_eq!(open, Err(FsError::NoEnt));
    wait_log("outside its folder; refused", || c.master_log());
    wait_log("refused (mount of '/pub/../secret'", || c.master_log());
}

fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn frames_announcing_32_mib_and_sending_nothing_allocate_nothing_big() {
    let c = start(ClusterSpec {
        chunkservers: 1,
        ..Default::default()
    });
    let out = c.master_verb(&["status"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let pid = text.trim().rsplit(' ').next().unwrap().to_string();
    let before = rss_kib(&pid);
    const PEERS: usize = 24;
    rt().block_on(async {
        // After a proper hello on the client port: a frame header announcing 32 MiB, a
        // little data, then silence.
        let mut socks = Vec::new();
        for _ in 0..PEERS {
            let mut s = connect_from("127.0.0.1", c.cl_port).await;
            let hello = moose_proto::Hello::new(Role::Client);
            let body = postcard_hello(&hello);
            s.write_all(&1u32.to_be_bytes()).await.unwrap();
            s.write_all(&(body.len() as u32).to_be_bytes())
                .await
                .unwrap();
            s.write_all(&body).await.unwrap();
            s.write_all(&1u32.to_be_bytes()).await.unwrap();
            s.write_all(&(32u32 << 20).to_be_bytes()).await.unwrap();
            s.write_all(&[0u8; 100]).await.unwrap();
            socks.push(s);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let during = rss_kib(&pid);
        assert!(
            during < before + 64 * 1024,
            "{PEERS} announced frames of 32 MiB took {} KiB",
            during.saturating_sub(before)
        );
        // An announcement before any hello is refused at once.
        let mut s = connect_from("127.0.0.1", c.cl_port).await;
        s.write_all(&1u32.to_be_bytes()).await.unwrap();
        s.write_all(&(32u32 << 20).to_be_bytes()).await.unwrap();
        s.flush().await.unwrap();
        drop(socks);
    });
    wait_log("exceeds the limit", || c.master_log());
    // The master still serves.
    assert!(c.cluster_info().is_ok());
}

/// The hello as it goes on the wire (postcard, the same encoding the daemons use).
fn postcard_hello(h: &moose_proto::Hello) -> Vec<u8> {
    moose_proto::frame::encode(h).unwrap()
}

#[test]
fn files_of_a_client_that_never_comes_back_are_released_after_the_sustain_time() {
    let mut c = start(ClusterSpec {
        chunkservers: 1,
        master_extra: vec!["SESSION_SUSTAIN_TIME = 2".into()],
        ..Default::default()
    });
    let mnt = c.mount().unwrap();
    std::fs::write(mnt.join("held"), vec![3u8; 100_000]).unwrap();
    rt().block_on(async {
        let mut p = raw("127.0.0.1", c.cl_port, Role::Client).await;
        p.register("/").await.unwrap();
        let inode = p.lookup(ROOT_INODE, "held").await;
        p.open(inode, libc::O_RDONLY).await.unwrap();
        // Gone without a goodbye: the connection just ends.
    });
    std::fs::remove_file(mnt.join("held")).unwrap();
    wait_log(
        "expired: no reconnection within SESSION_SUSTAIN_TIME",
        || c.master_log(),
    );
    c.wait_until(
        Duration::from_secs(10),
        "the unlinked file to be purged",
        |c| Ok(c.cluster_info()?["files"] == 0),
    )
    .unwrap();
}

#[test]
fn a_write_at_a_huge_offset_allocates_nothing_per_chunk_index() {
    use std::os::unix::fs::FileExt;
    let mut c = start(ClusterSpec {
        chunkservers: 1,
        ..Default::default()
    });
    let mnt = c.mount().unwrap();
    let out = c.master_verb(&["status"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let pid = text.trim().rsplit(' ').next().unwrap().to_string();
    let before = rss_kib(&pid);
    // dd seek=2^56: chunk index 2^30, a dense table would need 8 GiB.
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(mnt.join("sparse"))
        .unwrap();
    f.write_all_at(b"far", 1 << 56).unwrap();
    f.sync_all().unwrap();
    assert_eq!(f.metadata().unwrap().len(), (1 << 56) + 3);
    let mut back = [0u8; 3];
    f.read_exact_at(&mut back, 1 << 56).unwrap();
    assert_eq!(&back, b"far");
    let mut hole = [9u8; 3];
    f.read_exact_at(&mut hole, 1 << 40).unwrap();
    assert_eq!(hole, [0; 3], "the range before reads as zeros");
    let after = rss_kib(&pid);
    assert!(
        after < before + 64 * 1024,
        "the master grew by {} KiB",
        after.saturating_sub(before)
    );
    // Past the largest file size (128 PiB, as stock): EFBIG.
    let e = f.write_all_at(b"x", 1 << 57).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EFBIG), "{e}");
    drop(f);
    // And a dump with the sparse file loads again.
    c.stop_master().unwrap();
    c.start_master().unwrap();
    c.wait_for_chunkservers(1).unwrap();
    assert_eq!(
        std::fs::metadata(mnt.join("sparse")).unwrap().len(),
        (1 << 56) + 3
    );
}

#[test]
fn a_metalogger_must_prove_the_cluster_secret_and_the_master_proves_it_back() {
    let c = start(ClusterSpec {
        chunkservers: 1,
        master_extra: vec!["AUTH_CODE = open sesame".into()],
        chunkserver_extra: vec!["AUTH_CODE = open sesame".into()],
        ..Default::default()
    });
    let register = async |secret: Option<&str>| {
        let mut p = raw("127.0.0.1", c.ml_port, Role::Metalogger).await;
        let proof = secret.map(|s| auth::peer_proof(s.as_bytes(), "metalogger", &p.nonce));
        let ours = proof.as_ref().map(|p| p.nonce.clone()).unwrap_or_default();
        p.w.send_now(&MlToMaster::Register {
            version: "0.1.0".into(),
            auth: proof,
        })
        .await
        .unwrap();
        (p.r.next_msg::<MasterToMl>().await.unwrap(), p.nonce, ours)
    };
    let rt = rt();
    match rt.block_on(register(None)).0 {
        MasterToMl::Refused { reason } => {
            assert!(reason.contains("requires the cluster secret"), "{reason}")
        }
        other => panic!("a metalogger without the secret got {other:?}"),
    }
    match rt.block_on(register(Some("guess"))).0 {
        MasterToMl::Refused { reason } => {
            assert!(reason.contains("wrong cluster secret"), "{reason}")
        }
        other => panic!("a metalogger with a wrong secret got {other:?}"),
    }
    wait_log("metalogger 127.0.0.1", || c.master_log());
    match rt.block_on(register(Some("open sesame"))) {
        (MasterToMl::Welcome { proof: Some(p) }, master_nonce, ours) => assert!(auth::same(
            &p,
            &auth::master_proof(b"open sesame", "metalogger", &master_nonce, &ours)
        )),
        other => panic!("the right secret was not welcomed with a proof: {other:?}"),
    }
}

#[test]
fn claims_that_do_not_check_out_are_refused() {
    let mut c = start(ClusterSpec {
        chunkservers: 1,
        ..Default::default()
    });
    let mnt = c.mount().unwrap();
    std::fs::write(mnt.join("f"), vec![5u8; 70_000]).unwrap();
    let chunk = chunk_of(&c);
    // A new server claiming 101 chunks (one of them real) with empty disks.
    let reply = rt().block_on(async {
        let mut p = raw("127.0.0.1", c.cs_port, Role::Chunkserver).await;
        p.w.send(&CsToMaster::Register {
            cs_id: 0,
            cluster_id: 0,
            listen_host: "127.0.0.1".into(),
            listen_port: 3,
            version: "0.1.0".into(),
            disks: vec![],
            auth: None,
        })
        .await
        .unwrap();
        let mut claims: Vec<ChunkRef> = (1000..1100)
            .map(|chunk_id| ChunkRef {
                chunk_id,
                version: 1,
            })
            .collect();
        claims.push(chunk);
        p.w.send(&CsToMaster::Chunks(claims)).await.unwrap();
        p.w.send_now(&CsToMaster::RegisterEnd).await.unwrap();
        p.r.next_msg::<MasterToCs>().await.unwrap()
    });
    match reply {
        MasterToCs::Refused { reason } => assert!(reason.contains("do not check out"), "{reason}"),
        other => panic!("claims were accepted: {other:?}"),
    }
    wait_log("do not check out", || c.master_log());
    let info = c.cluster_info().unwrap();
    assert_eq!(info["chunkservers"].as_array().unwrap().len(), 1, "{info}");
    let out = c
        .tool(&["fileinfo", mnt.join("f").to_str().unwrap()])
        .unwrap();
    assert_eq!(
        out.matches("copy ").count(),
        1,
        "only the real copy is listed:\n{out}"
    );
}

#[test]
fn a_session_is_resumed_only_with_its_key_and_from_its_address() {
    let mut c = start(ClusterSpec {
        chunkservers: 1,
        exports: vec!["127.0.0.0/8 / rw,alldirs,maproot=0".into()],
        ..Default::default()
    });
    let mnt = c.mount().unwrap();
    std::fs::write(mnt.join("f"), vec![4u8; 1000]).unwrap();
    let resume = async |from: &str, id: u64, key: Vec<u8>| {
        let mut p = raw(from, c.cl_port, Role::Client).await;
        let reply = p
            .call(ClRequest::Register(RegisterRequest {
                subdir: "/".into(),
                mount_point: "/hostile".into(),
                password_proof: None,
                tool: false,
                resume: Some((id, key)),
            }))
            .await;
        match reply {
            Ok(ClReply::Registered(r)) => (r, p),
            other => panic!("registration: {other:?}"),
        }
    };
    rt().block_on(async {
        let mut p = raw("127.0.0.1", c.cl_port, Role::Client).await;
        let first = match p.register("/").await {
            Ok(ClReply::Registered(r)) => r,
            other => panic!("registration: {other:?}"),
        };
        let inode = p.lookup(ROOT_INODE, "f").await;
        p.open(inode, libc::O_RDONLY).await.unwrap();
        drop(p);
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A wrong key, or the right one from another address: a new session, nothing of the
        // old one (its open file is not open there).
        let (r, mut p) = resume("127.0.0.1", first.session_id, vec![0; 16]).await;
        assert!(!r.resumed);
        assert_eq!(
            p.call(ClRequest::ReadChunk { inode, index: 0 }).await,
            Err(FsError::Access)
        );
        let (r, _p) = resume("127.0.0.3", first.session_id, first.session_key.clone()).await;
        assert!(!r.resumed);
        // The owner, with the key: the same session, its file still open.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (r, mut p) = resume("127.0.0.1", first.session_id, first.session_key.clone()).await;
        assert!(r.resumed, "{r:?}");
        assert_eq!(r.session_id, first.session_id);
        assert!(matches!(
            p.call(ClRequest::ReadChunk { inode, index: 0 }).await,
            Ok(ClReply::Chunk(_))
        ));
    });
    wait_log("tried to resume session", || c.master_log());
    wait_log("reconnected and resumed it", || c.master_log());
}
