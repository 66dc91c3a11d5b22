//! Framing: `kind:u32 | length:u32 | payload`, with a hard size limit per link.

use std::io::IoSlice;

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Frame kind of a postcard-encoded control message.
pub const KIND_MSG: u32 = 1;
/// Frame kind of a block of data: [`DataHeader`] followed by raw bytes.
pub const KIND_DATA: u32 = 2;

/// Largest control message accepted on any link (chunk lists are sent in batches below this).
pub const MAX_CONTROL_FRAME: u32 = 32 * 1024 * 1024;
/// First step of a frame buffer's growth; it doubles from there as bytes arrive.
const GROW_STEP: usize = 64 * 1024;
/// Largest data payload of one data frame: one block.
pub const MAX_DATA_PAYLOAD: u32 = crate::BLOCK_SIZE;
/// Data payloads adding up to this size go to the socket without a copy into the frame
/// buffer (below it, a copy is cheaper than a system call of its own).
pub const DIRECT_DATA: usize = 8 * 1024;
/// Bytes a [`FrameReader`] reads ahead of the frame it is at. Small on purpose: a read at
/// least this long that finds nothing buffered goes straight from the socket to its
/// destination, so a block's payload is not copied through the read-ahead buffer. Large
/// enough to take a burst of small messages in one system call.
const READ_AHEAD: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes for this link")]
    TooLarge { len: u32, limit: u32 },
    #[error("unknown frame kind {0}")]
    UnknownKind(u32),
    #[error("data frame too short for its header ({0} bytes)")]
    ShortData(u32),
    #[error("malformed message: {0}")]
    Decode(#[from] postcard::Error),
    #[error("expected a control message, got a data frame")]
    UnexpectedData,
    #[error("peer closed the connection")]
    Closed,
}

impl ProtoError {
    /// True when the peer simply went away (not worth an error-level log line).
    pub fn is_disconnect(&self) -> bool {
        match self {
            ProtoError::Closed => true,
            ProtoError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }
}

/// Header of a data frame (28 bytes, big-endian). The payload length is the frame length minus
/// the header; `crc` is the CRC32 (zlib polynomial) of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataHeader {
    pub chunk_id: u64,
    pub version: u32,
    /// Read request id or write id this piece belongs to.
    pub req_id: u32,
    /// Offset of the payload inside the chunk.
    pub offset: u32,
    pub crc: u32,
}

impl DataHeader {
    pub const LEN: usize = 24;

    fn encode(&self, out: &mut [u8; Self::LEN]) {
        out[0..8].copy_from_slice(&self.chunk_id.to_be_bytes());
        out[8..12].copy_from_slice(&self.version.to_be_bytes());
        out[12..16].copy_from_slice(&self.req_id.to_be_bytes());
        out[16..20].copy_from_slice(&self.offset.to_be_bytes());
        out[20..24].copy_from_slice(&self.crc.to_be_bytes());
    }

    fn decode(b: &[u8]) -> Self {
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        DataHeader {
            chunk_id: u64::from_be_bytes(b[0..8].try_into().expect("8 bytes")),
            version: u32_at(8),
            req_id: u32_at(12),
            offset: u32_at(16),
            crc: u32_at(20),
        }
    }
}

/// One frame as read: borrowed from the reader's reusable buffer.
#[derive(Debug)]
pub enum Frame<'a> {
    Msg(&'a [u8]),
    Data(DataHeader, &'a [u8]),
}

/// A frame read by [`FrameReader::next_into`] or [`FrameReader::next_head`]: a control
/// message in the reader's buffer, or a data frame's header and payload length (the payload
/// went to the caller's buffer, or waits for [`FrameReader::payload_into`]).
#[derive(Debug)]
pub enum Landed<'a> {
    Msg(&'a [u8]),
    Data(DataHeader, usize),
}

impl Frame<'_> {
    /// Decodes a control message; a data frame here is a protocol error.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ProtoError> {
        match self {
            Frame::Msg(b) => Ok(postcard::from_bytes(b)?),
            Frame::Data(..) => Err(ProtoError::UnexpectedData),
        }
    }

    /// Decodes the frame as every message type of every link, dropping the results: what a
    /// fuzzer or a hostile-input test feeds each decoder with. Never panics.
    pub fn decode_as_every_message(&self) {
        use crate::msg::*;
        let _ = self.decode::<ClEnvelope>();
        let _ = self.decode::<ClResponse>();
        let _ = self.decode::<CsToMaster>();
        let _ = self.decode::<MasterToCs>();
        let _ = self.decode::<ToCs>();
        let _ = self.decode::<FromCs>();
        let _ = self.decode::<MlToMaster>();
        let _ = self.decode::<MasterToMl>();
        let _ = self.decode::<crate::Hello>();
    }
}

/// What [`FrameReader::arrive`] read: a control message's length, or a data frame's header
/// and payload length.
enum Arrived {
    Msg(usize),
    Data(DataHeader, usize),
}

/// Reads frames into one reusable buffer: no allocation per frame once warmed up.
pub struct FrameReader<R> {
    inner: BufReader<R>,
    limit: u32,
    buf: Vec<u8>,
    /// Payload bytes of the last data frame [`FrameReader::next_head`] read that the caller
    /// has not taken: skipped before the next frame, so the stream stays in step.
    pending: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, MAX_CONTROL_FRAME)
    }

    pub fn with_limit(inner: R, limit: u32) -> Self {
        FrameReader {
            inner: BufReader::with_capacity(READ_AHEAD, inner),
            limit,
            buf: Vec::new(),
            pending: 0,
        }
    }

    /// The largest control message accepted from now on.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Changes the largest control message accepted (a hello is read with a small one).
    pub fn set_limit(&mut self, limit: u32) {
        self.limit = limit;
    }

    /// The stream read from, and whether bytes read from it wait in the buffer: an idle
    /// connection has none.
    pub fn stream(&self) -> (&R, bool) {
        (self.inner.get_ref(), !self.inner.buffer().is_empty())
    }

    /// Whether a whole frame already waits in the buffer: the next [`FrameReader::next`]
    /// returns without waiting for the peer.
    pub fn frame_waiting(&self) -> bool {
        let buffered = self.inner.buffer();
        match buffered.get(4..8) {
            Some(len) => {
                let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
                buffered.len() - 8 >= len
            }
            None => false,
        }
    }

    /// Bytes held by the frame buffer (for tests of what a peer can make us allocate).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Reads the next frame. A clean end of stream between frames is `ProtoError::Closed`.
    pub async fn next(&mut self) -> Result<Frame<'_>, ProtoError> {
        self.skip_pending().await?;
        let (kind, len) = self.head().await?;
        self.body(len).await?;
        parse_frame(kind, &self.buf[..len])
    }

    /// Reads the next frame as [`FrameReader::next`] does, but a data frame's payload lands
    /// at the start of `payload` instead of in the reader's buffer: a block received is not
    /// copied once more on its way on. A payload longer than `payload` is refused.
    pub async fn next_into(&mut self, payload: &mut [u8]) -> Result<Landed<'_>, ProtoError> {
        match self.arrive().await? {
            Arrived::Msg(len) => Ok(Landed::Msg(&self.buf[..len])),
            Arrived::Data(header, size) => {
                self.payload_into(payload).await?;
                Ok(Landed::Data(header, size))
            }
        }
    }

    /// Reads the next frame, but of a data frame only its header: the caller learns where
    /// the payload belongs, then reads it there with [`FrameReader::payload_into`] (a
    /// payload not taken is skipped before the next frame).
    pub async fn next_head(&mut self) -> Result<Landed<'_>, ProtoError> {
        Ok(match self.arrive().await? {
            Arrived::Msg(len) => Landed::Msg(&self.buf[..len]),
            Arrived::Data(header, size) => Landed::Data(header, size),
        })
    }

    /// Reads a control message into the buffer, or a data frame's header (its payload is
    /// then pending).
    async fn arrive(&mut self) -> Result<Arrived, ProtoError> {
        self.skip_pending().await?;
        let (kind, len) = self.head().await?;
        if kind != KIND_DATA {
            self.body(len).await?;
            return Ok(Arrived::Msg(len));
        }
        let Some(size) = len.checked_sub(DataHeader::LEN) else {
            return Err(ProtoError::ShortData(len as u32));
        };
        let mut header = [0u8; DataHeader::LEN];
        self.inner.read_exact(&mut header).await?;
        self.pending = size;
        Ok(Arrived::Data(DataHeader::decode(&header), size))
    }

    /// Reads the payload of the data frame [`FrameReader::next_head`] just read into the
    /// start of `dst`, straight from the socket for all but what was read ahead. A payload
    /// longer than `dst` is refused.
    pub async fn payload_into(&mut self, dst: &mut [u8]) -> Result<(), ProtoError> {
        let size = std::mem::take(&mut self.pending);
        if size > dst.len() {
            return Err(ProtoError::TooLarge {
                len: (size + DataHeader::LEN) as u32,
                limit: (dst.len() + DataHeader::LEN) as u32,
            });
        }
        self.inner.read_exact(&mut dst[..size]).await?;
        Ok(())
    }

    /// Skips the payload of a data frame whose header was read and whose payload was not.
    async fn skip_pending(&mut self) -> Result<(), ProtoError> {
        let size = std::mem::take(&mut self.pending);
        if size > 0 {
            self.body(size).await?;
        }
        Ok(())
    }

    /// Reads a frame's kind and length, and checks the length against the link's limit.
    async fn head(&mut self) -> Result<(u32, usize), ProtoError> {
        let mut head = [0u8; 8];
        match self.inner.read_exact(&mut head[..1]).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(ProtoError::Closed)
            }
            Err(e) => return Err(e.into()),
        }
        self.inner.read_exact(&mut head[1..]).await?;
        let kind = u32::from_be_bytes(head[0..4].try_into().expect("4 bytes"));
        let len = u32::from_be_bytes(head[4..8].try_into().expect("4 bytes"));
        let limit = match kind {
            KIND_MSG => self.limit,
            KIND_DATA => MAX_DATA_PAYLOAD + DataHeader::LEN as u32,
            other => return Err(ProtoError::UnknownKind(other)),
        };
        if len > limit {
            return Err(ProtoError::TooLarge { len, limit });
        }
        Ok((kind, len as usize))
    }

    /// Reads a frame's `len` bytes into the start of the reader's buffer.
    async fn body(&mut self, len: usize) -> Result<(), ProtoError> {
        if self.buf.len() >= len {
            // Room made for an earlier frame is written over, not zeroed again: a data
            // frame's 64 KiB cost a memset each.
            self.inner.read_exact(&mut self.buf[..len]).await?;
        } else {
            // The buffer grows as the bytes arrive (doubling from 64 KiB): a peer that
            // announces a large frame and sends nothing gets nothing large allocated.
            let mut have = 0;
            while have < len {
                let step = (len - have).min(have.max(GROW_STEP));
                if self.buf.len() < have + step {
                    self.buf.resize(have + step, 0);
                }
                self.inner
                    .read_exact(&mut self.buf[have..have + step])
                    .await?;
                have += step;
            }
        }
        Ok(())
    }

    /// Reads the next frame and decodes it as a control message.
    pub async fn next_msg<T: DeserializeOwned>(&mut self) -> Result<T, ProtoError> {
        self.next().await?.decode()
    }
}

/// Interprets a frame body; used by the reader and by the fuzz tests.
pub fn parse_frame(kind: u32, body: &[u8]) -> Result<Frame<'_>, ProtoError> {
    match kind {
        KIND_MSG => Ok(Frame::Msg(body)),
        KIND_DATA => {
            if body.len() < DataHeader::LEN {
                return Err(ProtoError::ShortData(body.len() as u32));
            }
            let (h, data) = body.split_at(DataHeader::LEN);
            Ok(Frame::Data(DataHeader::decode(h), data))
        }
        other => Err(ProtoError::UnknownKind(other)),
    }
}

/// Writes frames through a buffer; call [`FrameWriter::flush`] to push them out.
pub struct FrameWriter<W: AsyncWrite> {
    inner: W,
    /// Frames queued and not written yet; written out when it reaches [`WRITE_BUFFER`].
    buf: Vec<u8>,
    /// Frame headers of the data frames being written, kept for their capacity.
    heads: Vec<[u8; DATA_HEAD_LEN]>,
}

/// Bytes of queued frames a [`FrameWriter`] holds before it writes them out unasked.
const WRITE_BUFFER: usize = 128 * 1024;

/// Frame header (kind, length) and [`DataHeader`] of a data frame.
const DATA_HEAD_LEN: usize = 8 + DataHeader::LEN;

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        FrameWriter {
            inner,
            buf: Vec::with_capacity(WRITE_BUFFER),
            heads: Vec::new(),
        }
    }

    /// The connection, once everything queued was flushed (a handshake is over and the
    /// caller takes over the writing).
    pub fn into_inner(self) -> W {
        debug_assert!(self.buf.is_empty(), "unflushed frames dropped");
        self.inner
    }

    /// Writes out the queued frames once they fill the buffer.
    async fn spill(&mut self) -> Result<(), ProtoError> {
        if self.buf.len() >= WRITE_BUFFER {
            self.write_queued().await?;
        }
        Ok(())
    }

    /// Writes out the queued frames, dropping each piece from the buffer once written (a
    /// flush cut short resumes where it stopped). A buffer grown by a large message is given
    /// back.
    async fn write_queued(&mut self) -> Result<(), ProtoError> {
        while !self.buf.is_empty() {
            let n = self.inner.write(&self.buf).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
            }
            self.buf.drain(..n);
        }
        if self.buf.capacity() > 2 * WRITE_BUFFER {
            self.buf.shrink_to(WRITE_BUFFER);
        }
        Ok(())
    }

    /// Queues a control message.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), ProtoError> {
        append_msg_frame(&mut self.buf, msg)?;
        self.spill().await
    }

    /// Queues a data frame.
    pub async fn send_data(&mut self, header: &DataHeader, data: &[u8]) -> Result<(), ProtoError> {
        self.send_data_frames(&[(*header, data)]).await
    }

    /// Queues data frames. When their payloads add up to [`DIRECT_DATA`] bytes or more they are
    /// not copied into the buffer: what is queued, every frame's header and payload go out
    /// together in vectored writes (one for a read step or a write-out of up to a few
    /// hundred blocks).
    pub async fn send_data_frames(
        &mut self,
        frames: &[(DataHeader, &[u8])],
    ) -> Result<(), ProtoError> {
        self.send_data_frames_then(frames, &[]).await
    }

    /// [`FrameWriter::send_data_frames`] followed by `then`, whole frames encoded with
    /// [`append_msg_frame`] (the message that ends a write or a read): with data written
    /// directly they leave in the same system call, so the peer reads them together.
    pub async fn send_data_frames_then(
        &mut self,
        frames: &[(DataHeader, &[u8])],
        then: &[u8],
    ) -> Result<(), ProtoError> {
        self.heads.clear();
        let mut payload = 0;
        for (header, data) in frames {
            let len = data.len() as u32;
            if len > MAX_DATA_PAYLOAD {
                return Err(ProtoError::TooLarge {
                    len,
                    limit: MAX_DATA_PAYLOAD,
                });
            }
            let mut head = [0u8; DATA_HEAD_LEN];
            head[..4].copy_from_slice(&KIND_DATA.to_be_bytes());
            head[4..8].copy_from_slice(&(len + DataHeader::LEN as u32).to_be_bytes());
            let mut h = [0u8; DataHeader::LEN];
            header.encode(&mut h);
            head[8..].copy_from_slice(&h);
            self.heads.push(head);
            payload += data.len();
        }
        if payload < DIRECT_DATA {
            for (head, (_, data)) in self.heads.iter().zip(frames) {
                self.buf.extend_from_slice(head);
                self.buf.extend_from_slice(data);
            }
            self.buf.extend_from_slice(then);
            return self.spill().await;
        }
        let queued = IoSlice::new(&self.buf);
        let mut bufs: Vec<IoSlice<'_>> = std::iter::once(queued)
            .chain(
                self.heads
                    .iter()
                    .zip(frames)
                    .flat_map(|(head, (_, data))| [IoSlice::new(head), IoSlice::new(data)]),
            )
            .chain(std::iter::once(IoSlice::new(then)))
            .filter(|b| !b.is_empty())
            .collect();
        write_all_vectored(&mut self.inner, &mut bufs).await?;
        self.buf.clear();
        Ok(())
    }

    /// Queues the pieces (offset in chunk, bytes) of a write session on `chunk` as data
    /// frames with write ids 1, 2, … in order, each with its CRC.
    pub async fn send_pieces<D: AsRef<[u8]>>(
        &mut self,
        chunk: crate::ChunkRef,
        pieces: &[(u32, D)],
    ) -> Result<(), ProtoError> {
        self.send_pieces_then(chunk, pieces, &[]).await
    }

    /// [`FrameWriter::send_pieces`] followed by `then` (see
    /// [`FrameWriter::send_data_frames_then`]).
    pub async fn send_pieces_then<D: AsRef<[u8]>>(
        &mut self,
        chunk: crate::ChunkRef,
        pieces: &[(u32, D)],
        then: &[u8],
    ) -> Result<(), ProtoError> {
        let frames: Vec<(DataHeader, &[u8])> = pieces
            .iter()
            .enumerate()
            .map(|(i, (offset, data))| {
                let data = data.as_ref();
                let header = DataHeader {
                    chunk_id: chunk.chunk_id,
                    version: chunk.version,
                    req_id: i as u32 + 1,
                    offset: *offset,
                    crc: crc32fast::hash(data),
                };
                (header, data)
            })
            .collect();
        self.send_data_frames_then(&frames, then).await
    }

    pub async fn flush(&mut self) -> Result<(), ProtoError> {
        self.write_queued().await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// Sends one message and flushes.
    pub async fn send_now<T: Serialize>(&mut self, msg: &T) -> Result<(), ProtoError> {
        self.send(msg).await?;
        self.flush().await
    }
}

/// Appends `msg` as a whole control frame to `out`, for callers that write frames to a
/// socket themselves; on an error `out` is as it was.
pub fn append_msg_frame<T: Serialize>(out: &mut Vec<u8>, msg: &T) -> Result<(), ProtoError> {
    let start = out.len();
    out.extend_from_slice(&KIND_MSG.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    let body_start = out.len();
    if let Err(e) = postcard::serialize_with_flavor(msg, AppendTo(out)) {
        out.truncate(start);
        return Err(e.into());
    }
    let len = u32::try_from(out.len() - body_start).unwrap_or(u32::MAX);
    if len > MAX_CONTROL_FRAME {
        out.truncate(start);
        return Err(ProtoError::TooLarge {
            len,
            limit: MAX_CONTROL_FRAME,
        });
    }
    out[body_start - 4..body_start].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// A postcard output that appends to a borrowed buffer (no allocation per message).
struct AppendTo<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Writes every byte of `bufs`, in as few vectored writes as the writer allows.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut bufs: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    // The kernel takes at most IOV_MAX (1024) pieces per call.
    while !bufs.is_empty() {
        let n = w.write_vectored(&bufs[..bufs.len().min(1024)]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

/// Encodes a message body (no frame header); used by the metadata and changelog formats.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtoError> {
    Ok(postcard::to_allocvec(msg)?)
}

/// Decodes a message body produced by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtoError> {
    Ok(postcard::from_bytes(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{ClEnvelope, ClRequest, ToCs};

    #[tokio::test]
    async fn frames_appended_to_a_buffer_read_back_as_sent_by_a_frame_writer() {
        let envs: Vec<ClEnvelope> = (1..=3)
            .map(|i| ClEnvelope {
                msgid: i,
                req: ClRequest::GetAttr {
                    inode: 40 + i as u64,
                },
            })
            .collect();
        let mut buf = Vec::new();
        for env in &envs {
            append_msg_frame(&mut buf, env).unwrap();
        }
        let (mut a, b) = tokio::io::duplex(1 << 20);
        let mut expected = FrameWriter::new(Vec::new());
        for env in &envs {
            expected.send(env).await.unwrap();
        }
        expected.flush().await.unwrap();
        assert_eq!(buf, expected.into_inner());
        a.write_all(&buf).await.unwrap();
        let mut r = FrameReader::new(b);
        for env in &envs {
            let got: ClEnvelope = r.next_msg().await.unwrap();
            assert_eq!(got.msgid, env.msgid);
        }
    }

    /// Frames 1 to `count` of the same request, one after the other.
    fn frames(count: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        for msgid in 1..=count {
            let env = ClEnvelope {
                msgid,
                req: ClRequest::GetAttr { inode: 40 },
            };
            append_msg_frame(&mut bytes, &env).unwrap();
        }
        bytes
    }

    #[tokio::test]
    async fn a_frame_waits_only_once_all_of_it_is_buffered() {
        let bytes = frames(2);
        let second = bytes.len() / 2;
        // What arrives with the first frame: part of the second's header, all of it but
        // its last byte, all of it.
        for (arrived, waits) in [
            (second + 3, false),
            (bytes.len() - 1, false),
            (bytes.len(), true),
        ] {
            let (mut a, b) = tokio::io::duplex(1 << 20);
            let mut r = FrameReader::new(b);
            assert!(!r.frame_waiting(), "nothing was read yet");
            a.write_all(&bytes[..arrived]).await.unwrap();
            let got: ClEnvelope = r.next_msg().await.unwrap();
            assert_eq!(got.msgid, 1);
            assert_eq!(
                r.frame_waiting(),
                waits,
                "{arrived} of {} bytes",
                bytes.len()
            );
        }
    }

    #[tokio::test]
    async fn frames_read_together_wait_in_the_buffer() {
        let bytes = frames(3);
        let (mut a, b) = tokio::io::duplex(1 << 20);
        a.write_all(&bytes).await.unwrap();
        let mut r = FrameReader::new(b);
        let mut waiting = Vec::new();
        for _ in 1..=3 {
            let _: ClEnvelope = r.next_msg().await.unwrap();
            waiting.push(r.frame_waiting());
        }
        assert_eq!(waiting, [true, true, false]);
    }

    /// A sink that keeps what it is given and counts the calls that gave it.
    #[derive(Default)]
    struct CountedSink {
        bytes: Vec<u8>,
        calls: usize,
    }

    impl AsyncWrite for CountedSink {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.calls += 1;
            self.bytes.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.calls += 1;
            let mut n = 0;
            for b in bufs {
                self.bytes.extend_from_slice(b);
                n += b.len();
            }
            std::task::Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_message_data_and_the_message_behind_them_leave_in_one_write() {
        let env = |msgid: u32| ClEnvelope {
            msgid,
            req: ClRequest::GetAttr { inode: 7 },
        };
        let data = vec![5u8; DIRECT_DATA + 100];
        let mut then = Vec::new();
        append_msg_frame(&mut then, &env(2)).unwrap();
        let mut w = FrameWriter::new(CountedSink::default());
        w.send(&env(1)).await.unwrap();
        let chunk = crate::ChunkRef {
            chunk_id: 3,
            version: 1,
        };
        w.send_pieces_then(chunk, &[(0, &data[..])], &then)
            .await
            .unwrap();
        w.flush().await.unwrap();
        let sink = w.into_inner();
        assert_eq!(sink.calls, 1, "system calls for one write-out");

        let (mut a, b) = tokio::io::duplex(1 << 20);
        a.write_all(&sink.bytes).await.unwrap();
        let mut r = FrameReader::new(b);
        assert_eq!(r.next_msg::<ClEnvelope>().await.unwrap().msgid, 1);
        match r.next().await.unwrap() {
            Frame::Data(h, got) => {
                assert_eq!((h.chunk_id, h.req_id), (3, 1));
                assert!(got == &data[..]);
            }
            other => panic!("expected the data frame, got {other:?}"),
        }
        assert_eq!(r.next_msg::<ClEnvelope>().await.unwrap().msgid, 2);
    }

    #[tokio::test]
    async fn large_data_frames_skip_the_buffer_and_keep_their_place_among_queued_frames() {
        // A pipe that takes 1,000 bytes at a time: vectored writes end inside a header and
        // inside a payload.
        let (a, b) = tokio::io::duplex(1000);
        let big: Vec<u8> = (0..crate::BLOCK_SIZE).map(|i| (i % 251) as u8).collect();
        let payload = |i: u32| {
            if i.is_multiple_of(2) {
                &big[..]
            } else {
                &b"small"[..]
            }
        };
        let header = |req_id: u32| DataHeader {
            chunk_id: 9,
            version: 1,
            req_id,
            offset: 0,
            crc: 0,
        };
        let write = async {
            let mut w = FrameWriter::new(a);
            for i in 0..4u32 {
                let env = ClEnvelope {
                    msgid: i,
                    req: ClRequest::GetAttr { inode: i as u64 },
                };
                w.send(&env).await.unwrap();
                w.send_data(&header(i), payload(i)).await.unwrap();
            }
            // A read step: several frames in one call.
            let batch: Vec<(DataHeader, &[u8])> =
                (4..8u32).map(|i| (header(i), payload(i))).collect();
            w.send_data_frames(&batch).await.unwrap();
            w.flush().await.unwrap();
        };
        let read = async {
            let mut r = FrameReader::new(b);
            for i in 0..8u32 {
                // Frames 0..4 each follow a message; 4..8 are the batch.
                if i < 4 {
                    let env: ClEnvelope = r.next_msg().await.unwrap();
                    assert_eq!(env.msgid, i);
                }
                match r.next().await.unwrap() {
                    Frame::Data(h, data) => {
                        assert_eq!(h.req_id, i);
                        assert!(data == payload(i), "payload {i} differs");
                    }
                    other => panic!("expected data frame {i}, got {other:?}"),
                }
            }
        };
        tokio::join!(write, read);
    }

    #[tokio::test]
    async fn round_trip_msg_and_data() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut w = FrameWriter::new(a);
        let mut r = FrameReader::new(b);
        let env = ClEnvelope {
            msgid: 7,
            req: ClRequest::GetAttr { inode: 42 },
        };
        w.send(&env).await.unwrap();
        let h = DataHeader {
            chunk_id: 1,
            version: 2,
            req_id: 3,
            offset: 4,
            crc: 5,
        };
        w.send_data(&h, b"hello").await.unwrap();
        w.flush().await.unwrap();
        let got: ClEnvelope = r.next_msg().await.unwrap();
        assert_eq!(got.msgid, 7);
        match r.next().await.unwrap() {
            Frame::Data(gh, data) => {
                assert_eq!(gh, h);
                assert_eq!(data, b"hello");
            }
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn oversized_frame_is_refused() {
        let (mut a, b) = tokio::io::duplex(1024);
        let mut r = FrameReader::with_limit(b, 100);
        a.write_all(&KIND_MSG.to_be_bytes()).await.unwrap();
        a.write_all(&1000u32.to_be_bytes()).await.unwrap();
        assert!(matches!(
            r.next().await,
            Err(ProtoError::TooLarge {
                len: 1000,
                limit: 100
            })
        ));
    }

    proptest::proptest! {
        /// Whatever bytes arrive, the reader and every message decoder answer with a value or
        /// an error, never a panic, and never allocate past the frame limit.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut r = FrameReader::with_limit(&bytes[..], 1024);
                while let Ok(frame) = r.next().await {
                    frame.decode_as_every_message();
                }
            });
            for kind in [KIND_MSG, KIND_DATA, 77] {
                let _ = parse_frame(kind, &bytes);
            }
        }

        /// Every message survives encoding and decoding unchanged.
        #[test]
        fn messages_round_trip(inode in 1u64.., name in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), msgid in proptest::prelude::any::<u32>()) {
            let env = ClEnvelope {
                msgid,
                req: ClRequest::Lookup { parent: inode, name, cred: crate::Cred::default() },
            };
            let bytes = encode(&env).unwrap();
            proptest::prop_assert_eq!(decode::<ClEnvelope>(&bytes).unwrap(), env);
        }
    }

    #[tokio::test]
    async fn an_announced_frame_allocates_only_what_arrives() {
        let (mut a, b) = tokio::io::duplex(1 << 20);
        let mut r = FrameReader::new(b);
        a.write_all(&KIND_MSG.to_be_bytes()).await.unwrap();
        a.write_all(&MAX_CONTROL_FRAME.to_be_bytes()).await.unwrap();
        a.write_all(&[0u8; 1000]).await.unwrap();
        let read = tokio::time::timeout(std::time::Duration::from_millis(200), r.next()).await;
        assert!(read.is_err(), "the frame is incomplete: the reader waits");
        assert!(
            r.buffer_capacity() <= 2 * GROW_STEP,
            "{} bytes allocated for 1000 received",
            r.buffer_capacity()
        );
        // A whole large frame still arrives intact.
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let mut r = FrameReader::new(b);
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = body.clone();
        tokio::spawn(async move {
            a.write_all(&KIND_MSG.to_be_bytes()).await.unwrap();
            a.write_all(&(sent.len() as u32).to_be_bytes())
                .await
                .unwrap();
            a.write_all(&sent).await.unwrap();
        });
        match r.next().await.unwrap() {
            Frame::Msg(got) => assert!(got == &body[..]),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_data_payload_lands_in_the_callers_buffer() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut w = FrameWriter::new(a);
        let mut r = FrameReader::new(b);
        let h = DataHeader {
            chunk_id: 9,
            version: 2,
            req_id: 3,
            offset: 4096,
            crc: 77,
        };
        let block: Vec<u8> = (0..crate::BLOCK_SIZE).map(|i| (i % 253) as u8).collect();
        w.send_data(&h, &block).await.unwrap();
        w.send(&ToCs::WriteFinish).await.unwrap();
        w.send_data(&h, b"tail").await.unwrap();
        w.send_data(&h, &block).await.unwrap();
        w.flush().await.unwrap();

        let mut room = vec![0u8; crate::BLOCK_SIZE as usize];
        match r.next_into(&mut room).await.unwrap() {
            Landed::Data(got, n) => {
                assert_eq!((got, n), (h, block.len()));
                assert!(room == block);
            }
            other => panic!("expected data, got {other:?}"),
        }
        match r.next_into(&mut room).await.unwrap() {
            Landed::Msg(body) => assert_eq!(decode::<ToCs>(body).unwrap(), ToCs::WriteFinish),
            other => panic!("expected a message, got {other:?}"),
        }
        match r.next_into(&mut room).await.unwrap() {
            Landed::Data(_, n) => assert_eq!(&room[..n], b"tail"),
            other => panic!("expected data, got {other:?}"),
        }
        // A payload larger than the room offered is refused, not cut.
        let mut small = [0u8; 100];
        assert!(matches!(
            r.next_into(&mut small).await,
            Err(ProtoError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn a_payload_goes_where_its_header_says_and_one_not_taken_is_skipped() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut w = FrameWriter::new(a);
        let mut r = FrameReader::new(b);
        let at = |offset| DataHeader {
            chunk_id: 5,
            offset,
            ..DataHeader::default()
        };
        let block: Vec<u8> = (0..crate::BLOCK_SIZE).map(|i| (i % 251) as u8).collect();
        w.send_data(&at(100), &block).await.unwrap();
        w.send_data(&at(7), b"skipped").await.unwrap();
        w.send(&ToCs::WriteFinish).await.unwrap();
        w.send_data(&at(3), &block).await.unwrap();
        w.flush().await.unwrap();

        let mut dst = vec![0u8; 2 * crate::BLOCK_SIZE as usize];
        match r.next_head().await.unwrap() {
            Landed::Data(h, n) => assert_eq!((h, n), (at(100), block.len())),
            other => panic!("expected data, got {other:?}"),
        }
        r.payload_into(&mut dst[100..]).await.unwrap();
        assert!(dst[100..100 + block.len()] == block[..]);
        assert!(dst[..100].iter().all(|&b| b == 0));
        // The next payload is left unread: the message behind it still reads whole.
        assert!(matches!(r.next_head().await.unwrap(), Landed::Data(_, 7)));
        match r.next_head().await.unwrap() {
            Landed::Msg(body) => assert_eq!(decode::<ToCs>(body).unwrap(), ToCs::WriteFinish),
            other => panic!("expected a message, got {other:?}"),
        }
        // A payload longer than the place offered is refused, not cut.
        assert!(matches!(r.next_head().await.unwrap(), Landed::Data(_, _)));
        assert!(matches!(
            r.payload_into(&mut dst[..10]).await,
            Err(ProtoError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn a_data_frame_shorter_than_its_header_is_refused() {
        let (mut a, b) = tokio::io::duplex(1024);
        a.write_all(&KIND_DATA.to_be_bytes()).await.unwrap();
        a.write_all(&10u32.to_be_bytes()).await.unwrap();
        a.write_all(&[0u8; 10]).await.unwrap();
        let mut r = FrameReader::new(b);
        let mut room = [0u8; 64];
        assert!(matches!(
            r.next_into(&mut room).await,
            Err(ProtoError::ShortData(10))
        ));
    }

    #[tokio::test]
    async fn a_short_frame_after_a_long_one_is_only_its_own_bytes() {
        let (mut a, b) = tokio::io::duplex(1 << 20);
        let mut r = FrameReader::new(b);
        let long: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for body in [&long[..], b"short", b"", b"again"] {
            a.write_all(&KIND_MSG.to_be_bytes()).await.unwrap();
            a.write_all(&(body.len() as u32).to_be_bytes())
                .await
                .unwrap();
            a.write_all(body).await.unwrap();
            match r.next().await.unwrap() {
                Frame::Msg(got) => assert_eq!(got, body),
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn clean_close_is_reported() {
        let (a, b) = tokio::io::duplex(1024);
        drop(a);
        let mut r = FrameReader::new(b);
        assert!(matches!(r.next().await, Err(ProtoError::Closed)));
    }
}
