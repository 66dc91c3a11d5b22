//! Replication is a pull: this chunkserver reads the whole chunk from the source's data port
//! (in pieces, several in flight), checks every piece's CRC, writes it into a temporary file
//! and gives the file its final name only when everything arrived.

use std::sync::Arc;
use std::time::Duration;

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
const PIECES: u32 = (CHUNK_SIZE / PIECE as u64) as u32;

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
pub async fn replicate(store: Arc<Store>, chunk: ChunkRef, source: &CsAddr) -> FsResult<()> {
    match timeout(REPLICATION_TIMEOUT, pull(&store, chunk, source)).await {
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
    received: usize,
    /// CRC of each block when a frame carried exactly that block.
    crcs: [Option<u32>; PIECE / BS],
}

async fn pull(store: &Arc<Store>, chunk: ChunkRef, source: &CsAddr) -> Result<(), Failure> {
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

    let request = |index: u32| ToCs::Read {
        req_id: index + 1,
        chunk,
        offset: index * PIECE as u32,
        size: PIECE as u32,
    };
    let mut requested = 0;
    while requested < WINDOW.min(PIECES) {
        writer.send(&request(requested)).await.map_err(lost)?;
        requested += 1;
    }
    writer.flush().await.map_err(lost)?;

    let new = Arc::new(new);
    let mut current = 0u32;
    let mut piece = Piece {
        buf: vec![0u8; PIECE],
        received: 0,
        crcs: [None; PIECE / BS],
    };
    let mut spare = Some(vec![0u8; PIECE]);
    // At most one piece is being written while the next one arrives.
    let mut writing: Option<WriteTask> = None;
    while current < PIECES {
        match reader.next().await.map_err(lost)? {
            Frame::Data(h, data) => {
                let start = current as usize * PIECE;
                if h.chunk_id != chunk.chunk_id
                    || h.version != chunk.version
                    || h.req_id != current + 1
                    || h.offset as usize != start + piece.received
                    || piece.received + data.len() > PIECE
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
                        if piece.received != PIECE {
                            return Err(fail(
                                FsError::Io,
                                format!(
                                    "{peer} sent {} of {PIECE} bytes at offset {}",
                                    piece.received,
                                    current as usize * PIECE
                                ),
                            ));
                        }
                    }
                    other => {
                        return Err(fail(
                            FsError::Io,
                            format!("{peer} sent an unexpected message: {other:?}"),
                        ))
                    }
                }
                if requested < PIECES {
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
/// already is the CRC of zeros).
fn write_piece(new: &NewChunk, first_block: u32, piece: &Piece) -> FsResult<()> {
    for (i, block) in piece.buf.chunks_exact(BS).enumerate() {
        let crc = piece.crcs[i].unwrap_or_else(|| crc32fast::hash(block));
        if crc == ZERO_BLOCK_CRC && block.iter().all(|&b| b == 0) {
            continue;
        }
        new.write_block(first_block + i as u32, block, crc)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataserver::serve;
    use crate::store::tests::{read_all, test_store, write_all};
    use tokio::net::TcpListener;

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

        replicate(Arc::clone(&b), C, &source).await.unwrap();
        let copy = read_all(&b, C, 41).unwrap();
        assert_eq!(&copy[..data.len()], &data[..]);
        assert!(copy[data.len()..40 * BS].iter().all(|&x| x == 0));
        assert_eq!(&copy[40 * BS..40 * BS + 10], &[9u8; 10]);
        assert_eq!(b.chunk_refs(), vec![C]);
        // Zero blocks were not written: the copy is no larger than the data it holds.
        let path = dir_b.path().join("77/chunk_0000000000000077_00000005.mfs");
        assert_eq!(
            std::fs::metadata(path).unwrap().len(),
            crate::chunkfile::DATA_OFFSET + (41 * BS) as u64
        );

        // Already here: refused.
        assert_eq!(
            replicate(Arc::clone(&b), C, &source).await,
            Err(FsError::Exist)
        );
        // A stale version held here is replaced by the copy.
        let dir_c = tempfile::tempdir().unwrap();
        let (c, _ec) = test_store(dir_c.path());
        c.create(ChunkRef { version: 4, ..C }).unwrap();
        replicate(Arc::clone(&c), C, &source).await.unwrap();
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
            replicate(Arc::clone(&b), other, &source).await,
            Err(FsError::NoChunk)
        );
        assert!(!dir_b
            .path()
            .join("78/chunk_0000000000000078_00000001.mfs.tmp")
            .exists());
        server.abort();
    }
}
