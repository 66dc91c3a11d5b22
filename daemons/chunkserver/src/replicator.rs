//! Replication is a pull: this chunkserver asks the source's data port how much data the chunk
//! holds, reads that much (in pieces, several in flight), checks every piece's CRC, writes
//! the blocks that are not all zeros into a temporary file and gives the file its final name
//! only when everything arrived.

use std::sync::Arc;
use std::time::Duration;

use moose_proto::auth::ChunkToken;
use moose_proto::frame::{self, FrameReader, FrameWriter};
use moose_proto::handshake::say_hello;
use moose_proto::msg::{FromCs, ToCs};
use moose_proto::{ChunkRef, CsAddr, Frame, FsError, FsResult, Role, CHUNK_SIZE};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::chunkfile::{BS, ZERO_BLOCK_CRC};
use crate::dataserver::CONTROL_LIMIT;
use crate::store::{blocking, NewChunk, Store};

/// Time to reach the source and get its hello.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A replication that takes longer than this is abandoned (as MooseFS does).
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(150);
/// Bytes per read request.
const PIECE: usize = 16 * BS;
/// Read requests in flight.
const WINDOW: u32 = 4;
/// Request id of the length query (reads use 1 ..).
const LENGTH_REQ: u32 = 0;

struct Failure {
    status: FsError,
    message: String,
}

fn fail(status: FsError, message: impl Into<String>) -> Failure {
    Failure {
        status,
        message: message.into(),
    }
}

/// Pulls `chunk` from `source` and registers it here.
pub async fn replicate(
    store: Arc<Store>,
    chunk: ChunkRef,
    source: &CsAddr,
    token: &ChunkToken,
) -> FsResult<()> {
    match timeout(REPLICATION_TIMEOUT, pull(&store, chunk, source, token)).await {
        Ok(Ok(())) => {
            tracing::debug!(
                "chunk {:016X} v{} replicated from {source}",
                chunk.chunk_id,
                chunk.version
            );
            Ok(())
        }
        Ok(Err(f)) => {
            tracing::warn!(
                "replication of chunk {:016X} v{} from {source} failed: {}",
                chunk.chunk_id,
                chunk.version,
                f.message
            );
            Err(f.status)
        }
        Err(_) => {
            tracing::warn!(
                "replication of chunk {:016X} v{} from {source} did not finish within {} s; \
                 abandoned",
                chunk.chunk_id,
                chunk.version,
                REPLICATION_TIMEOUT.as_secs()
            );
            Err(FsError::TimedOut)
        }
    }
}

/// A piece being assembled from data frames.
struct Piece {
    buf: Vec<u8>,
    /// Bytes asked for (the last piece may be shorter than PIECE).
    len: usize,
    received: usize,
    /// CRC of each block when a frame carried exactly that block.
    crcs: [Option<u32>; PIECE / BS],
}

async fn pull(
    store: &Arc<Store>,
    chunk: ChunkRef,
    source: &CsAddr,
    token: &ChunkToken,
) -> Result<(), Failure> {
    let s = Arc::clone(store);
    let new = blocking(move || s.begin_copy(chunk))
        .await
        .map_err(|st| fail(st, format!("cannot start a local copy: {st}")))?;

    let peer = format!("chunkserver {source}");
    let connect = async {
        let sock = TcpStream::connect((source.host.as_str(), source.port))
            .await
            .map_err(|e| format!("cannot connect to {peer}: {e}"))?;
        let _ = sock.set_nodelay(true);
        let (rd, wr) = sock.into_split();
        let mut reader = FrameReader::with_limit(rd, CONTROL_LIMIT);
        let mut writer = FrameWriter::new(wr);
        say_hello(&mut reader, &mut writer, Role::Chunkserver, &peer)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((reader, writer))
    };
    let (mut reader, mut writer) = match timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(fail(FsError::Io, e)),
        Err(_) => {
            return Err(fail(
                FsError::Io,
                format!(
                    "{peer} did not answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ),
            ))
        }
    };
    let lost = |e: moose_proto::ProtoError| fail(FsError::Io, format!("connection to {peer}: {e}"));

    // Only the data the source holds is copied.
    writer
        .send_now(&ToCs::GetLength {
            req_id: LENGTH_REQ,
            chunk,
            token: token.clone(),
        })
        .await
        .map_err(lost)?;
    let length = match reader.next_msg::<FromCs>().await.map_err(lost)? {
        FromCs::Length {
            req_id: LENGTH_REQ,
            result: Ok(len),
        } if u64::from(len) <= CHUNK_SIZE => len as usize,
        FromCs::Length {
            req_id: LENGTH_REQ,
            result: Err(st),
        } => return Err(fail(st, format!("{peer} answered: {st}"))),
        other => {
            return Err(fail(
                FsError::Io,
                format!("{peer} sent an unexpected answer to the length query: {other:?}"),
            ))
        }
    };
    let pieces = length.div_ceil(PIECE) as u32;
    let piece_len = |index: u32| length.saturating_sub(index as usize * PIECE).min(PIECE);
    let request = |index: u32| ToCs::Read {
        req_id: index + 1,
        chunk,
        offset: index * PIECE as u32,
        size: piece_len(index) as u32,
        token: token.clone(),
    };
    let mut requested = 0;
    while requested < WINDOW.min(pieces) {
        writer.send(&request(requested)).await.map_err(lost)?;
        requested += 1;
    }
    writer.flush().await.map_err(lost)?;

    let new = Arc::new(new);
    let mut current = 0u32;
    let mut piece = Piece {
        buf: vec![0u8; PIECE],
        len: piece_len(0),
        received: 0,
        crcs: [None; PIECE / BS],
    };
    let mut spare = Some(vec![0u8; PIECE]);
    // At most one piece is being written while the next one arrives.
    let mut writing: Option<WriteTask> = None;
    while current < pieces {
        match reader.next().await.map_err(lost)? {
            Frame::Data(h, data) => {
                let start = current as usize * PIECE;
                if h.chunk_id != chunk.chunk_id
                    || h.version != chunk.version
                    || h.req_id != current + 1
                    || h.offset as usize != start + piece.received
                    || piece.received + data.len() > piece.len
                {
                    return Err(fail(
                        FsError::Io,
                        format!(
                            "{peer} sent unexpected data (chunk {:016X} v{}, request {}, offset \
                             {}) while request {} at offset {} was expected",
                            h.chunk_id,
                            h.version,
                            h.req_id,
                            h.offset,
                            current + 1,
                            start + piece.received
                        ),
                    ));
                }
                if crc32fast::hash(data) != h.crc {
                    return Err(fail(
                        FsError::Crc,
                        format!(
                            "data at offset {} from {peer} failed its CRC check",
                            h.offset
                        ),
                    ));
                }
                let at = piece.received;
                piece.buf[at..at + data.len()].copy_from_slice(data);
                if data.len() == BS && at.is_multiple_of(BS) {
                    piece.crcs[at / BS] = Some(h.crc);
                }
                piece.received += data.len();
            }
            Frame::Msg(body) => {
                match frame::decode::<FromCs>(body).map_err(lost)? {
                    FromCs::ReadDone { req_id, status } if req_id == current + 1 => {
                        if let Err(st) = status {
                            return Err(fail(st, format!("{peer} answered: {st}")));
                        }
                        if piece.received != piece.len {
                            return Err(fail(
                                FsError::Io,
                                format!(
                                    "{peer} sent {} of {} bytes at offset {}",
                                    piece.received,
                                    piece.len,
                                    current as usize * PIECE
                                ),
                            ));
                        }
                        // The rest of a last, partial block reads as zeros.
                        let padded = piece.len.next_multiple_of(BS);
                        piece.buf[piece.len..padded].fill(0);
                    }
                    other => {
                        return Err(fail(
                            FsError::Io,
                            format!("{peer} sent an unexpected message: {other:?}"),
                        ))
                    }
                }
                if requested < pieces {
                    writer.send_now(&request(requested)).await.map_err(lost)?;
                    requested += 1;
                }
                let next_buf = match writing.take() {
                    Some(w) => finish(w).await?,
                    None => spare.take().unwrap_or_else(|| vec![0u8; PIECE]),
                };
                let full = std::mem::replace(
                    &mut piece,
                    Piece {
                        buf: next_buf,
                        len: piece_len(current + 1),
                        received: 0,
                        crcs: [None; PIECE / BS],
                    },
                );
                let first_block = current * (PIECE / BS) as u32;
                let target = Arc::clone(&new);
                writing = Some(tokio::task::spawn_blocking(move || {
                    let status = write_piece(&target, first_block, &full);
                    (full.buf, status)
                }));
                current += 1;
            }
        }
    }
    if let Some(w) = writing.take() {
        finish(w).await?;
    }
    let new = Arc::try_unwrap(new)
        .map_err(|_| fail(FsError::Io, "the local copy is still being written"))?;
    let s = Arc::clone(store);
    blocking(move || {
        new.sync()?;
        s.commit_new(new)
    })
    .await
    .map_err(|st| fail(st, format!("cannot store the local copy: {st}")))
}

type WriteTask = tokio::task::JoinHandle<(Vec<u8>, FsResult<()>)>;

/// Waits for a piece write; gives its buffer back.
async fn finish(w: WriteTask) -> Result<Vec<u8>, Failure> {
    match w.await {
        Ok((buf, Ok(()))) => Ok(buf),
        Ok((_, Err(st))) => Err(fail(st, format!("cannot write the local copy: {st}"))),
        Err(e) => Err(fail(
            FsError::Io,
            format!("the disk write task failed: {e}"),
        )),
    }
}

/// Writes the blocks of a piece that hold data; all-zero blocks stay holes (their CRC entry
/// already is the CRC of zeros). A last, partial block is written as long as it is, with the
/// CRC of the block padded with zeros.
fn write_piece(new: &NewChunk, first_block: u32, piece: &Piece) -> FsResult<()> {
    let padded = piece.len.next_multiple_of(BS);
    for (i, block) in piece.buf[..padded].chunks_exact(BS).enumerate() {
        let crc = piece.crcs[i].unwrap_or_else(|| crc32fast::hash(block));
        if crc == ZERO_BLOCK_CRC && block.iter().all(|&b| b == 0) {
            continue;
        }
        let data = &block[..(piece.len - i * BS).min(BS)];
        new.write_block(first_block + i as u32, data, crc)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunkfile::DATA_OFFSET;
    use crate::dataserver::serve;
    use crate::store::tests::{damage, read_all, test_store, write_all};
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::net::TcpListener;

    async fn start(store: Arc<Store>) -> (CsAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let source = CsAddr {
            host: "127.0.0.1".into(),
            port: listener.local_addr().unwrap().port(),
        };
        (source, tokio::spawn(serve(listener, store)))
    }

    /// A relay in front of `target` that counts the bytes `target` sends back.
    async fn counting_relay(target: &CsAddr) -> (CsAddr, Arc<AtomicU64>) {
        let target: SocketAddr = format!("{}:{}", target.host, target.port).parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = CsAddr {
            host: "127.0.0.1".into(),
            port: listener.local_addr().unwrap().port(),
        };
        let count = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&count);
        tokio::spawn(async move {
            let (mut inbound, _) = listener.accept().await.unwrap();
            let mut outbound = TcpStream::connect(target).await.unwrap();
            let (_, back) = tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                .await
                .unwrap();
            counted.store(back, Ordering::SeqCst);
        });
        (relay, count)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn copies_only_the_data_the_chunk_holds() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, _ea) = test_store(dir_a.path());
        let (b, _eb) = test_store(dir_b.path());
        // 5 MiB and a bit: 81 blocks, the last one partial.
        let len = (5 << 20) + 1234;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 | 1).collect();
        a.create(C).unwrap();
        write_all(&a, C, 0, &data);
        let (source, server) = start(Arc::clone(&a)).await;

        // The data port tells the length.
        let (mut r, mut w) = {
            let sock = TcpStream::connect((source.host.as_str(), source.port))
                .await
                .unwrap();
            let (rd, wr) = sock.into_split();
            let mut r = FrameReader::new(rd);
            let mut w = FrameWriter::new(wr);
            say_hello(&mut r, &mut w, Role::Chunkserver, "test")
                .await
                .unwrap();
            (r, w)
        };
        for (chunk, want) in [
            (C, Ok(len as u32)),
            (ChunkRef { version: 4, ..C }, Err(FsError::NoChunk)),
            (
                ChunkRef {
                    chunk_id: 1,
                    version: 1,
                },
                Err(FsError::NoChunk),
            ),
        ] {
            w.send_now(&ToCs::GetLength {
                req_id: 7,
                chunk,
                token: crate::access::tests::token(chunk, false, &[]),
            })
            .await
            .unwrap();
            assert_eq!(
                r.next_msg::<FromCs>().await.unwrap(),
                FromCs::Length {
                    req_id: 7,
                    result: want
                }
            );
        }

        let (relay, moved) = counting_relay(&source).await;
        replicate(
            Arc::clone(&b),
            C,
            &relay,
            &crate::access::tests::token(C, false, &[]),
        )
        .await
        .unwrap();
        assert_eq!(read_all(&b, C, 82).unwrap()[..len], data[..]);
        let path = dir_b.path().join("77/chunk_0000000000000077_00000005.mfs");
        assert_eq!(
            std::fs::metadata(path).unwrap().len(),
            DATA_OFFSET + len as u64
        );
        assert_eq!(b.space_reports()[0].used, DATA_OFFSET + len as u64);
        // The relay reports once both sides have closed.
        let mut bytes = 0;
        for _ in 0..500 {
            bytes = moved.load(Ordering::SeqCst);
            if bytes > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The data plus frame headers and small messages; nothing near 64 MiB.
        assert!(
            bytes >= len as u64 && bytes < len as u64 + 64 * 1024,
            "{bytes} bytes moved for {len} bytes of data"
        );

        // An empty chunk is copied without reading anything.
        let empty = ChunkRef {
            chunk_id: 0x79,
            version: 1,
        };
        a.create(empty).unwrap();
        replicate(
            Arc::clone(&b),
            empty,
            &source,
            &crate::access::tests::token(empty, false, &[]),
        )
        .await
        .unwrap();
        let path = dir_b.path().join("79/chunk_0000000000000079_00000001.mfs");
        assert_eq!(std::fs::metadata(path).unwrap().len(), DATA_OFFSET);
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_copy_is_replaced_or_deleted() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, _ea) = test_store(dir_a.path());
        let (b, mut events_b) = test_store(dir_b.path());
        let data: Vec<u8> = (0..2 * BS + 99).map(|i| (i % 241) as u8).collect();
        for s in [&a, &b] {
            s.create(C).unwrap();
            write_all(s, C, 0, &data);
        }
        let (source, server) = start(Arc::clone(&a)).await;
        // A healthy copy of the same version is not replaced.
        assert_eq!(
            replicate(
                Arc::clone(&b),
                C,
                &source,
                &crate::access::tests::token(C, false, &[])
            )
            .await,
            Err(FsError::Exist)
        );
        damage(&b, dir_b.path(), C);
        assert_eq!(
            events_b.try_recv().unwrap(),
            moose_proto::msg::CsToMaster::ChunkDamaged(C)
        );
        assert_eq!(b.damaged_refs(), vec![C]);

        // The master orders a new copy here: it takes the damaged one's place.
        replicate(
            Arc::clone(&b),
            C,
            &source,
            &crate::access::tests::token(C, false, &[]),
        )
        .await
        .unwrap();
        assert!(b.damaged_refs().is_empty());
        assert_eq!(b.chunk_refs(), vec![C]);
        assert_eq!(read_all(&b, C, 3).unwrap()[..data.len()], data[..]);
        let report = &b.space_reports()[0];
        assert_eq!(report.chunks, 1);
        assert_eq!(report.used, DATA_OFFSET + data.len() as u64);
        let path = dir_b.path().join("77/chunk_0000000000000077_00000005.mfs");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), report.used);

        // Deleting a damaged copy works as for any other.
        damage(&b, dir_b.path(), C);
        b.delete(C).unwrap();
        assert!(b.chunk_refs().is_empty() && b.damaged_refs().is_empty());
        assert!(!path.exists());
        assert_eq!(b.space_reports()[0].chunks, 0);
        server.abort();
    }

    const C: ChunkRef = ChunkRef {
        chunk_id: 0x77,
        version: 5,
    };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pulls_a_chunk_from_another_server() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, _ea) = test_store(dir_a.path());
        let (b, _eb) = test_store(dir_b.path());
        a.create(C).unwrap();
        let data: Vec<u8> = (0..3 * BS + 1234).map(|i| (i % 253) as u8 | 1).collect();
        write_all(&a, C, 0, &data);
        // A block of data far into the chunk, with zero blocks in between.
        write_all(&a, C, (40 * BS) as u32, &[9u8; 10]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let source = CsAddr {
            host: "127.0.0.1".into(),
            port: listener.local_addr().unwrap().port(),
        };
        let server = tokio::spawn(serve(listener, Arc::clone(&a)));

        replicate(
            Arc::clone(&b),
            C,
            &source,
            &crate::access::tests::token(C, false, &[]),
        )
        .await
        .unwrap();
        let copy = read_all(&b, C, 41).unwrap();
        assert_eq!(&copy[..data.len()], &data[..]);
        assert!(copy[data.len()..40 * BS].iter().all(|&x| x == 0));
        assert_eq!(&copy[40 * BS..40 * BS + 10], &[9u8; 10]);
        assert_eq!(b.chunk_refs(), vec![C]);
        // Zero blocks were not written, the last block only as far as it holds data: the
        // copy is exactly as long as the original.
        let path = dir_b.path().join("77/chunk_0000000000000077_00000005.mfs");
        assert_eq!(
            std::fs::metadata(path).unwrap().len(),
            DATA_OFFSET + (40 * BS + 10) as u64
        );

        // Already here: refused.
        assert_eq!(
            replicate(
                Arc::clone(&b),
                C,
                &source,
                &crate::access::tests::token(C, false, &[])
            )
            .await,
            Err(FsError::Exist)
        );
        // A stale version held here is replaced by the copy.
        let dir_c = tempfile::tempdir().unwrap();
        let (c, _ec) = test_store(dir_c.path());
        c.create(ChunkRef { version: 4, ..C }).unwrap();
        replicate(
            Arc::clone(&c),
            C,
            &source,
            &crate::access::tests::token(C, false, &[]),
        )
        .await
        .unwrap();
        assert_eq!(c.chunk_refs(), vec![C]);
        assert_eq!(&read_all(&c, C, 1).unwrap()[..BS], &data[..BS]);
        assert!(!dir_c
            .path()
            .join("77/chunk_0000000000000077_00000004.mfs")
            .exists());
        assert_eq!(c.space_reports()[0].chunks, 1);
        // The source lacks the version asked for: its status comes back, nothing is left.
        let other = ChunkRef {
            chunk_id: 0x78,
            version: 1,
        };
        assert_eq!(
            replicate(
                Arc::clone(&b),
                other,
                &source,
                &crate::access::tests::token(other, false, &[])
            )
            .await,
            Err(FsError::NoChunk)
        );
        assert!(!dir_b
            .path()
            .join("78/chunk_0000000000000078_00000001.mfs.tmp")
            .exists());
        server.abort();
    }
}
