//! `copy_file_range` of whole chunks (a mount's `cp`): the copy shares the source's chunks,
//! copy on write as a snapshot does, instead of the mount reading and writing every byte.

use moose_proto::msg::ClReply;
use moose_proto::{FsError, FsResult, Inode, Timespec, CHUNK_SIZE};

use super::data::{file_chunks, read_chunk, Token};
use super::{granted, not_granted, writable, Outcome, MAX_FILE_SIZE};
use crate::access::{R, W};
use crate::master::Master;
use crate::ops::Op;
use crate::sessions::Session;
use crate::state::State;

/// What a share request asks: bytes `src.1..` of file `src.0` copied to `dst.1..` of
/// `dst.0`, at most `len` of them.
pub struct ShareAsked {
    pub src: (Inode, u64),
    pub dst: (Inode, u64),
    pub len: u64,
}

/// Shares the chunks `asked` covers (see [`moose_proto::msg::ClRequest::ShareChunks`]).
pub fn share(m: &Master, s: &Session, asked: ShareAsked, now: Timespec) -> FsResult<Outcome> {
    writable(s)?;
    let (src, dst) = (asked.src.0, asked.dst.0);
    if !granted(s, src, R) {
        return Err(not_granted(s, src, "copy"));
    }
    if !granted(s, dst, W) {
        return Err(not_granted(s, dst, "copy into"));
    }
    let (planned, version) = {
        let mut st = m.state();
        let st = &mut *st;
        let Some(p) = plan(st, &asked)? else {
            // The source ends at its offset: nothing to copy.
            let attr = st.node(dst)?.attr(dst);
            let reply = ClReply::Shared {
                copied: 0,
                attr,
                chunks: Vec::new(),
            };
            return Ok((reply, None));
        };
        let op = Op::ShareChunks {
            src,
            src_index: p.src_index,
            dst,
            dst_index: p.dst_index,
            count: p.count,
            length: p.length,
            time: now,
        };
        let (_, v) = m.commit_by(st, op, Some(s.id))?;
        (p, v)
    };
    let mut chunks = Vec::new();
    for index in planned.dst_index..planned.dst_index + planned.count {
        if let ClReply::Chunk(loc) = read_chunk(m, dst, index, Token::Sync)? {
            if loc.chunk_id != 0 {
                chunks.push((index, loc));
            }
        }
    }
    let attr = m.state().node(dst)?.attr(dst);
    let copied = planned.length - asked.dst.1;
    let reply = ClReply::Shared {
        copied,
        attr,
        chunks,
    };
    Ok((reply, Some(version)))
}

/// Chunk slots a share covers.
struct Planned {
    src_index: u32,
    dst_index: u32,
    count: u32,
    /// The destination's length after it.
    length: u64,
}

/// What sharing `asked` covers, `None` when the source ends at its offset, or why it cannot
/// be shared (the mount then copies the bytes).
fn plan(st: &State, asked: &ShareAsked) -> FsResult<Option<Planned>> {
    let ((src, src_offset), (dst, dst_offset)) = (asked.src, asked.dst);
    if src == dst
        || !src_offset.is_multiple_of(CHUNK_SIZE)
        || !dst_offset.is_multiple_of(CHUNK_SIZE)
    {
        return Err(FsError::Inval);
    }
    let (src_length, src_chunks, _) = file_chunks(st, src)?;
    let (dst_length, dst_chunks, _) = file_chunks(st, dst)?;
    if src_offset >= src_length {
        return Ok(None);
    }
    // Whole chunks, or up to the source's end; the destination has nothing there to keep.
    let left = src_length - src_offset;
    let copied = if asked.len >= left {
        left
    } else {
        asked.len / CHUNK_SIZE * CHUNK_SIZE
    };
    if copied == 0 {
        return Err(FsError::Inval);
    }
    if dst_length > dst_offset {
        return Err(FsError::Exist);
    }
    let end = dst_offset.checked_add(copied).ok_or(FsError::TooBig)?;
    if end > MAX_FILE_SIZE {
        return Err(FsError::TooBig);
    }
    let index = |offset: u64| u32::try_from(offset / CHUNK_SIZE).map_err(|_| FsError::TooBig);
    let (src_index, dst_index) = (index(src_offset)?, index(dst_offset)?);
    let count = u32::try_from(copied.div_ceil(CHUNK_SIZE)).map_err(|_| FsError::TooBig)?;
    for i in 0..count {
        // A chunk being written (or made) would be shared half written.
        let busy_src = src_chunks
            .get((src_index + i) as usize)
            .is_some_and(|c| st.rt.write_locks.contains_key(c))
            || st.rt.creating.contains(&(src, src_index + i));
        let busy_dst = dst_chunks.get((dst_index + i) as usize).is_some()
            || st.rt.creating.contains(&(dst, dst_index + i));
        if busy_src || busy_dst {
            return Err(FsError::Locked);
        }
    }
    // Quotas count what a write adds as it goes; a copy under one goes byte by byte.
    if crate::quota::lies_over(st, dst) {
        return Err(FsError::NotSupported);
    }
    Ok(Some(Planned {
        src_index,
        dst_index,
        count,
        length: end,
    }))
}
