//! Reads of a chunk copy that lies on the reader's own host, straight from its file.
//!
//! A chunkserver hands a mount on its host a read-only descriptor of a chunk file over a
//! Unix socket (`SCM_RIGHTS`), after the same token check as a read on its data port. The
//! mount then reads the blocks itself and checks them against the file's CRC table: a random
//! read costs no wake-up of the chunkserver. The socket lives in the abstract namespace, so it
//! is seen only in the chunkserver's network namespace, i.e. on its host; its name is derived
//! from the data port's address, which is what the master tells mounts.
//!
//! The layout of a chunk file (see the chunkserver's `chunkfile`) is owned here, since both
//! sides read it: a 4 KiB header (signature, chunk id, version), a CRC table of one CRC32 per 64 KiB block (u32 BE), then the
//! data. A block that is shorter on disk, or missing, reads as zero-padded to 64 KiB.

use std::io::{self, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
use serde::{Deserialize, Serialize};

use crate::auth::ChunkToken;
use crate::{frame, ChunkRef, BLOCKS_PER_CHUNK, BLOCK_SIZE};

/// Offset of the chunk id (u64 BE) in a chunk file's header, after the 8-byte signature.
pub const CHUNK_ID_OFFSET: u64 = 8;
/// Offset of the CRC table in a chunk file.
pub const CRC_OFFSET: u64 = 4096;
/// Offset of the first data byte in a chunk file.
pub const DATA_OFFSET: u64 = 8192;
/// CRC32 of 64 KiB of zeros: the CRC of a block that was never written.
pub const ZERO_BLOCK_CRC: u32 = 0xD797_8EEB;
/// Largest request body accepted on the socket.
pub const REQUEST_LIMIT: usize = 4096;

/// The mount's request: a read-only descriptor of this copy of `chunk`, for the holder of a
/// read token of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenChunk {
    pub chunk: ChunkRef,
    pub token: ChunkToken,
}

/// The answer's one byte; with [`Answer::Opened`] the descriptor travels alongside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Answer {
    Opened = 0,
    /// Not here at this version (or the file could not be opened).
    NoChunk = 1,
    /// The token was refused.
    Refused = 2,
    /// The request could not be read.
    BadRequest = 3,
}

impl Answer {
    pub fn from_byte(b: u8) -> Option<Answer> {
        [
            Answer::Opened,
            Answer::NoChunk,
            Answer::Refused,
            Answer::BadRequest,
        ]
        .into_iter()
        .find(|a| *a as u8 == b)
    }
}

/// The abstract socket name of the chunkserver whose data port listens on `host:port` (`*`
/// for every address of the host).
pub fn socket_name(host: &str, port: u16) -> String {
    format!("moose-chunkserver {host}:{port}")
}

/// Asks the chunkserver at the other end of `stream` for its copy of `chunk`: its answer,
/// and the descriptor that came with it. The request is its length (u32 BE) and its body.
pub fn ask(
    stream: &mut UnixStream,
    chunk: ChunkRef,
    token: &ChunkToken,
) -> io::Result<(Answer, Option<OwnedFd>)> {
    let body = frame::encode(&OpenChunk {
        chunk,
        token: token.clone(),
    })
    .map_err(io::Error::other)?;
    let mut request = (body.len() as u32).to_be_bytes().to_vec();
    request.extend_from_slice(&body);
    stream.write_all(&request)?;

    let mut byte = [0u8; 1];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut byte)];
    let msg = recvmsg::<UnixAddr>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fd = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: the kernel installed this descriptor in our table for this message;
                // nothing else owns it (extra ones are closed as they drop).
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                fd.get_or_insert(owned);
            }
        }
    }
    if msg.bytes != 1 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let answer = Answer::from_byte(byte[0])
        .ok_or_else(|| io::Error::other(format!("unknown answer {}", byte[0])))?;
    Ok((answer, fd))
}

/// The blocks a read of `size` bytes at `in_chunk` touches: the first and how many.
pub fn blocks_of(in_chunk: u32, size: u32) -> Option<(u32, u32)> {
    let end = in_chunk.checked_add(size)?;
    if size == 0 || u64::from(end) > u64::from(BLOCKS_PER_CHUNK) * u64::from(BLOCK_SIZE) {
        return None;
    }
    let first = in_chunk / BLOCK_SIZE;
    let last = (end - 1) / BLOCK_SIZE;
    Some((first, last - first + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_byte_round_trips_and_others_are_refused() {
        for a in [
            Answer::Opened,
            Answer::NoChunk,
            Answer::Refused,
            Answer::BadRequest,
        ] {
            assert_eq!(Answer::from_byte(a as u8), Some(a));
        }
        assert_eq!(Answer::from_byte(4), None);
    }

    #[test]
    fn a_read_touches_the_blocks_it_overlaps() {
        let bs = BLOCK_SIZE;
        assert_eq!(blocks_of(0, 4096), Some((0, 1)));
        assert_eq!(blocks_of(bs - 1, 2), Some((0, 2)));
        assert_eq!(blocks_of(3 * bs, bs), Some((3, 1)));
        assert_eq!(blocks_of(0, 0), None);
        assert_eq!(blocks_of(1023 * bs, bs), Some((1023, 1)));
        assert_eq!(blocks_of(1023 * bs + 1, bs), None, "past the chunk");
        assert_eq!(blocks_of(u32::MAX, 2), None);
    }

    #[test]
    fn the_zero_block_crc_is_that_of_64_kib_of_zeros() {
        assert_eq!(crc32fast::hash(&[0u8; BLOCK_SIZE as usize]), ZERO_BLOCK_CRC);
    }
}
