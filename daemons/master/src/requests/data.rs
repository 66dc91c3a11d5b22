//! Requests about file data: where chunks are, write leases (which create chunks or raise
//! their versions on the chunkservers first) and truncation. The state lock is never held
//! while waiting for a chunkserver.

use std::sync::Arc;
use std::time::Instant;

use moose_proto::msg::{ChunkLocation, ClReply, MasterToCs, WriteLease};
use moose_proto::{ChunkRef, FsError, FsResult, Inode, Timespec, CHUNK_SIZE};

use super::MAX_FILE_SIZE;
use crate::cs_registry::SentOrder;
use crate::master::Master;
use crate::namespace::NodeData;
use crate::ops::Op;
use crate::placement;
use crate::sessions::Session;
use crate::state::{Copy, State, WriteLock};

/// Copies of `chunk_id` at `version` that can be read and written (damaged ones cannot).
pub fn valid_copies(st: &State, chunk_id: u64, version: u32) -> Vec<u32> {
    st.rt
        .locations
        .get(&chunk_id)
        .map(|v| {
            v.iter()
                .filter(|c| c.version == version && !st.rt.damaged.contains(&(chunk_id, c.cs)))
                .map(|c| c.cs)
                .collect()
        })
        .unwrap_or_default()
}

/// The version a read of `chunk_id` (at `version` in the metadata) is served at, and the
/// copies that serve it. While a writer raises the version and no copy has answered yet, the
/// copies at the version before hold every byte anybody was told is written: a reader is
/// served from them instead of hearing of no copy and waiting (the writer gets its lease
/// only once the raise is over). A copy that did take the new version then answers "wrong
/// version", and the reader asks again.
pub fn readable_copies(st: &State, chunk_id: u64, version: u32) -> (u32, Vec<u32>) {
    let copies = valid_copies(st, chunk_id, version);
    if copies.is_empty() && version > 1 && st.rt.raising.contains(&chunk_id) {
        return (version - 1, valid_copies(st, chunk_id, version - 1));
    }
    (version, copies)
}

/// After a version change: the copies in `ok` have `version`; every other copy is stale.
/// The raise is over.
fn set_copy_versions(st: &mut State, chunk_id: u64, ok: &[u32], version: u32) {
    st.rt.raising.remove(&chunk_id);
    let copies = st.rt.locations.entry(chunk_id).or_default();
    for c in copies.iter_mut() {
        if ok.contains(&c.cs) {
            c.version = version;
        }
    }
}

/// Makes `version + 1` the chunk's version in the changelog, synced to disk (whatever
/// CHANGELOG_SAVE_MODE says), before any chunkserver is told: a master, or its machine, that
/// dies after telling them then restarts at the new version, so no copy it raised looks newer
/// than the metadata. (Copies still at the old version are the
/// exact data of before the change; the health loop adopts them when nothing newer exists.)
/// The chunk stays locked; on error the lock is released.
async fn raise_version(m: &Master, chunk_id: u64, version: u32) -> FsResult<u32> {
    let new_version = version + 1;
    let v = {
        let mut st = m.state();
        let op = Op::SetChunkVersion {
            chunk_id,
            version: new_version,
        };
        match m.commit(&mut st, op) {
            Ok((_, v)) => {
                st.rt.raising.insert(chunk_id);
                v
            }
            Err(e) => {
                st.rt.write_locks.remove(&chunk_id);
                return Err(e);
            }
        }
    };
    if let Err(e) = m.synced(v).await {
        let mut st = m.state();
        st.rt.write_locks.remove(&chunk_id);
        st.rt.raising.remove(&chunk_id);
        return Err(e);
    }
    Ok(new_version)
}

/// Undoes [`raise_version`] when no copy took the new version: the copies keep serving at
/// the old one. Releases the chunk's lock.
async fn restore_version(m: &Master, chunk_id: u64, version: u32) {
    let v = {
        let mut st = m.state();
        st.rt.write_locks.remove(&chunk_id);
        st.rt.raising.remove(&chunk_id);
        m.commit(&mut st, Op::SetChunkVersion { chunk_id, version })
            .map(|(_, v)| v)
    };
    match v {
        Ok(v) => {
            let _ = m.synced(v).await;
        }
        Err(e) => tracing::warn!("chunk {chunk_id:016X}: cannot restore version {version}: {e}"),
    }
}

pub(super) fn lock_chunk(st: &mut State, chunk_id: u64, session: u64) {
    st.rt.write_locks.insert(
        chunk_id,
        WriteLock {
            session,
            since: Instant::now(),
        },
    );
}

/// Sends one order to each of `servers` at once; returns the servers that carried it out.
async fn order_all(
    m: &Master,
    servers: &[u32],
    what: &str,
    make: impl Fn(u64) -> MasterToCs + std::marker::Copy,
) -> Vec<u32> {
    let results = join_all(
        servers
            .iter()
            .map(|&cs| Box::pin(m.cs.order(cs, make)))
            .collect(),
    )
    .await;
    let mut ok = Vec::with_capacity(servers.len());
    for (&cs, r) in servers.iter().zip(results) {
        match r {
            Ok(()) => ok.push(cs),
            Err(e) => tracing::warn!("{what} on chunkserver {cs} failed: {e}"),
        }
    }
    ok
}

/// Polls futures concurrently and collects their results in order.
async fn join_all<F: std::future::Future + Unpin>(mut futs: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut results: Vec<Option<F::Output>> = (0..futs.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if results[i].is_none() {
                match std::pin::Pin::new(f).poll(cx) {
                    Poll::Ready(v) => results[i] = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// A file's length, chunks and goal.
pub(super) fn file_chunks(
    st: &State,
    inode: Inode,
) -> FsResult<(u64, &crate::namespace::ChunkTable, u8)> {
    let node = st.node(inode)?;
    match &node.data {
        NodeData::File { length, chunks } => Ok((*length, chunks, node.goal)),
        _ if node.is_dir() => Err(FsError::IsDir),
        _ => Err(FsError::Inval),
    }
}

/// What the token a chunk's location carries allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    Read,
    /// A sync only (a writer that may not read the file).
    Sync,
}

/// Where chunk `index` of the file is; servers in reading order (see [`crate::read_order`]).
pub fn read_chunk(m: &Master, inode: Inode, index: u32, token: Token) -> FsResult<ClReply> {
    let (mut loc, ids) = {
        let st = m.state();
        let (length, chunks, _) = file_chunks(&st, inode)?;
        let chunk_id = chunks.get(index as usize).copied().unwrap_or(0);
        let version = st.meta.chunks.get(&chunk_id).map_or(0, |c| c.version);
        let (version, mut ids) = if chunk_id == 0 {
            (version, vec![])
        } else {
            readable_copies(&st, chunk_id, version)
        };
        crate::read_order::read_order(chunk_id, &mut ids);
        let loc = ChunkLocation {
            file_length: length,
            chunk_id,
            version,
            servers: vec![],
            token: Default::default(),
        };
        (loc, ids)
    };
    loc.servers = ids.into_iter().filter_map(|id| m.cs.addr(id)).collect();
    if loc.chunk_id != 0 {
        let chunk = ChunkRef {
            chunk_id: loc.chunk_id,
            version: loc.version,
        };
        loc.token = match token {
            Token::Read => m.trust.read_token(chunk),
            Token::Sync => m.trust.sync_token(chunk),
        };
    }
    Ok(ClReply::Chunk(loc))
}

enum WritePlan {
    /// A hole: create a new chunk with this id on `goal` servers.
    Create { chunk_id: u64, goal: u8 },
    /// An existing chunk: raise its version on these copies.
    Bump {
        chunk_id: u64,
        version: u32,
        copies: Vec<u32>,
    },
    /// A chunk shared with a snapshot: copy it first (copy on write), then write the copy.
    Copy {
        chunk_id: u64,
        version: u32,
        copies: Vec<u32>,
        new_id: u64,
    },
}

/// Gives the client a chunk to write: a new one (created on `goal` servers) or the existing
/// one with its version raised on every valid copy. The chunk stays locked for the session.
pub async fn write_chunk(
    m: &Arc<Master>,
    s: &Session,
    inode: Inode,
    index: u32,
) -> FsResult<WriteLease> {
    if u64::from(index) >= MAX_FILE_SIZE / CHUNK_SIZE {
        return Err(FsError::TooBig);
    }
    match plan_write(m, s, inode, index)? {
        WritePlan::Create { chunk_id, goal } => {
            let result = create_chunk(m, s, inode, index, chunk_id, goal).await;
            m.state().rt.creating.remove(&(inode, index));
            result
        }
        WritePlan::Bump {
            chunk_id,
            version,
            copies,
        } => {
            let new_version = raise_version(m, chunk_id, version).await?;
            let chunk = ChunkRef { chunk_id, version };
            let ok = order_all(m, &copies, "set version", |req_id| MasterToCs::SetVersion {
                req_id,
                chunk,
                new_version,
            })
            .await;
            if ok.is_empty() {
                tracing::warn!("chunk {chunk_id:016X}: no copy took the new version");
                restore_version(m, chunk_id, version).await;
                return Err(FsError::Io);
            }
            let file_length = {
                let mut st = m.state();
                set_copy_versions(&mut st, chunk_id, &ok, new_version);
                st.node(inode).map_or(0, |n| n.length())
            };
            Ok(lease(
                m,
                file_length,
                ChunkRef {
                    chunk_id,
                    version: new_version,
                },
                &ok,
            ))
        }
        WritePlan::Copy {
            chunk_id,
            version,
            copies,
            new_id,
        } => {
            let (copy, ok) = unshare(m, s, inode, index, chunk_id, version, copies, new_id).await?;
            let file_length = {
                let mut st = m.state();
                lock_chunk(&mut st, copy.chunk_id, s.id);
                st.node(inode).map_or(0, |n| n.length())
            };
            Ok(lease(m, file_length, copy, &ok))
        }
    }
}

/// Copy on write: every server holding a valid copy of the shared chunk `old` duplicates it
/// into the new chunk `new_id` (version 1), then the file's slot is switched to the copy in
/// one op, recorded before it is used. `old` must be locked by this session; the lock is
/// released. Returns the copy and the servers holding it.
#[allow(clippy::too_many_arguments)]
async fn unshare(
    m: &Master,
    s: &Session,
    inode: Inode,
    index: u32,
    old: u64,
    version: u32,
    copies: Vec<u32>,
    new_id: u64,
) -> FsResult<(ChunkRef, Vec<u32>)> {
    let source = ChunkRef {
        chunk_id: old,
        version,
    };
    let copy = ChunkRef {
        chunk_id: new_id,
        version: 1,
    };
    let ok = order_all(m, &copies, "duplicate", |req_id| MasterToCs::Duplicate {
        req_id,
        chunk: source,
        copy,
    })
    .await;
    let v = {
        let mut st = m.state();
        let st = &mut *st;
        if st
            .rt
            .write_locks
            .get(&old)
            .is_some_and(|l| l.session == s.id)
        {
            st.rt.write_locks.remove(&old);
        }
        for cs in copies.iter().filter(|cs| !ok.contains(cs)) {
            st.rt.deletions.push((*cs, copy));
        }
        if ok.is_empty() {
            tracing::warn!("chunk {old:016X}: no server could copy it for a write (copy on write)");
            return Err(FsError::Io);
        }
        let op = Op::CopyChunk {
            inode,
            index,
            old,
            new: new_id,
            version: 1,
        };
        let v = match m.commit(st, op) {
            Ok((_, v)) => v,
            Err(e) => {
                // The file changed meanwhile (truncated, removed, or no longer sharing).
                st.rt.deletions.extend(ok.iter().map(|cs| (*cs, copy)));
                return Err(if e == FsError::NoChunk {
                    FsError::Locked
                } else {
                    e
                });
            }
        };
        st.rt.locations.insert(
            new_id,
            ok.iter().map(|&cs| Copy { cs, version: 1 }).collect(),
        );
        v
    };
    m.recorded(v).await?;
    Ok((copy, ok))
}

fn plan_write(m: &Master, s: &Session, inode: Inode, index: u32) -> FsResult<WritePlan> {
    let mut st = m.state();
    let st = &mut *st;
    let (_, chunks, goal) = file_chunks(st, inode)?;
    match chunks.get(index as usize).copied() {
        None => {
            // The mount asks before writing (see quota_grant); this holds whatever it does.
            crate::quota::may_add_chunk(st, inode, m.cfg.quota_grace)?;
            if !st.rt.creating.insert((inode, index)) {
                return Err(FsError::Locked);
            }
            let chunk_id = st.meta.next_chunk_id;
            st.meta.next_chunk_id += 1;
            Ok(WritePlan::Create { chunk_id, goal })
        }
        Some(chunk_id) => {
            if st
                .rt
                .write_locks
                .get(&chunk_id)
                .is_some_and(|l| l.session != s.id)
            {
                return Err(FsError::Locked);
            }
            let version = st
                .meta
                .chunks
                .get(&chunk_id)
                .map(|c| c.version)
                .ok_or(FsError::NoChunk)?;
            let copies = valid_copies(st, chunk_id, version);
            if copies.is_empty() {
                tracing::warn!(
                    "chunk {chunk_id:016X} of inode {inode} has no valid copy; write refused"
                );
                return Err(FsError::Io);
            }
            lock_chunk(st, chunk_id, s.id);
            if st.shares.is_shared(chunk_id) {
                let new_id = st.meta.next_chunk_id;
                st.meta.next_chunk_id += 1;
                return Ok(WritePlan::Copy {
                    chunk_id,
                    version,
                    copies,
                    new_id,
                });
            }
            Ok(WritePlan::Bump {
                chunk_id,
                version,
                copies,
            })
        }
    }
}

async fn create_chunk(
    m: &Arc<Master>,
    s: &Session,
    inode: Inode,
    index: u32,
    chunk_id: u64,
    goal: u8,
) -> FsResult<WriteLease> {
    let targets = placement::choose_new(&m.cs.connected(), goal as usize, &[])?;
    let ids: Vec<u32> = targets.iter().map(|t| t.id).collect();
    let chunk = ChunkRef {
        chunk_id,
        version: 1,
    };
    let make = |req_id| MasterToCs::Create { req_id, chunk };
    if targets.iter().all(|t| t.avail >= ROOMY) {
        let orders = ids
            .iter()
            .filter_map(|&cs| match m.cs.order_now(cs, make) {
                Ok(o) => Some((cs, o)),
                Err(e) => {
                    tracing::warn!("create on chunkserver {cs} failed: {e}");
                    None
                }
            })
            .collect();
        return lease_while_creating(m, s, inode, index, chunk, orders).await;
    }
    let ok = order_all(m, &ids, "create", make).await;
    let (file_length, v) = {
        let mut st = m.state();
        for cs in ids.iter().filter(|cs| !ok.contains(cs)) {
            st.rt.deletions.push((*cs, chunk));
        }
        if ok.is_empty() {
            return Err(FsError::NoChunkservers);
        }
        record_new_chunk(m, &mut st, s, inode, index, chunk, &ok)?
    };
    m.recorded(v).await?;
    Ok(lease(m, file_length, chunk, &ok))
}

/// Records a new chunk in slot `index` of `inode`, held by `servers` and locked for the
/// session; returns the file's length and the change's version.
fn record_new_chunk(
    m: &Master,
    st: &mut State,
    s: &Session,
    inode: Inode,
    index: u32,
    chunk: ChunkRef,
    servers: &[u32],
) -> FsResult<(u64, u64)> {
    let op = Op::AddChunk {
        inode,
        index,
        chunk_id: chunk.chunk_id,
        version: chunk.version,
    };
    let v = match m.commit(st, op) {
        Ok((_, v)) => v,
        Err(e) => {
            // The file changed meanwhile (removed, or another writer filled the slot).
            st.rt
                .deletions
                .extend(servers.iter().map(|cs| (*cs, chunk)));
            return Err(if e == FsError::Exist {
                FsError::Locked
            } else {
                e
            });
        }
    };
    st.rt.locations.insert(
        chunk.chunk_id,
        servers
            .iter()
            .map(|&cs| Copy {
                cs,
                version: chunk.version,
            })
            .collect(),
    );
    lock_chunk(st, chunk.chunk_id, s.id);
    Ok((st.node(inode).map_or(0, |n| n.length()), v))
}

/// Free space on every target under which a new chunk's lease waits for its creation, so
/// that a full disk shows as `ENOSPC` to the writer rather than as a failed write.
const ROOMY: u64 = 4 << 30;

/// How long a new chunk's lease waits for a creation order to reach a chunkserver's socket.
const ORDER_SEND_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The lease of a new chunk whose creation orders are under way: recorded and answered
/// without waiting for them (a chunkserver holds a write chain for a new chunk until the
/// master's order made it). A server that fails the order loses its copy, as a server that
/// fails a write does. Saves the chunkservers' round trip, most of a small file's close.
async fn lease_while_creating(
    m: &Arc<Master>,
    s: &Session,
    inode: Inode,
    index: u32,
    chunk: ChunkRef,
    orders: Vec<(u32, SentOrder)>,
) -> FsResult<WriteLease> {
    // The orders are in the chunkservers' sockets before the chunk is recorded: a master
    // that dies after the record leaves them to the kernel to deliver, so that a recorded
    // chunk is always made.
    let mut sent = Vec::with_capacity(orders.len());
    for (cs, mut order) in orders {
        match tokio::time::timeout(ORDER_SEND_LIMIT, order.on_the_wire()).await {
            Ok(Ok(())) => sent.push((cs, order)),
            _ => tracing::warn!(
                "create of chunk {:016X}: chunkserver {cs} went away or takes no orders; the \
                 chunk goes on without it",
                chunk.chunk_id
            ),
        }
    }
    let servers: Vec<u32> = sent.iter().map(|(cs, _)| *cs).collect();
    if servers.is_empty() {
        return Err(FsError::NoChunkservers);
    }
    let (file_length, v) = record_new_chunk(m, &mut m.state(), s, inode, index, chunk, &servers)?;
    let master = Arc::clone(m);
    tokio::spawn(async move {
        let (ordered, orders): (Vec<u32>, Vec<SentOrder>) = sent.into_iter().unzip();
        let results = join_all(
            orders
                .into_iter()
                .map(|o| Box::pin(master.cs.result(o)))
                .collect(),
        )
        .await;
        for (&cs, r) in ordered.iter().zip(results) {
            if let Err(e) = r {
                tracing::warn!(
                    "create of chunk {:016X} on chunkserver {cs} failed: {e}; that copy is dropped",
                    chunk.chunk_id
                );
                drop_new_copy(&master, cs, chunk);
            }
        }
    });
    m.recorded(v).await?;
    Ok(lease(m, file_length, chunk, &servers))
}

/// A server failed to make a new chunk: its copy stops counting (a leftover is deleted).
fn drop_new_copy(m: &Master, cs: u32, chunk: ChunkRef) {
    let mut st = m.state();
    if let Some(copies) = st.rt.locations.get_mut(&chunk.chunk_id) {
        copies.retain(|c| !(c.cs == cs && c.version == chunk.version));
        if copies.is_empty() {
            st.rt.locations.remove(&chunk.chunk_id);
        }
    }
    st.rt.deletions.push((cs, chunk));
}

/// A write lease along the servers `ok`, with the token that lets the client open the chain.
fn lease(m: &Master, file_length: u64, chunk: ChunkRef, ok: &[u32]) -> WriteLease {
    let chain = placement::chain_order(ok.iter().filter_map(|id| m.cs.addr(*id)).collect());
    WriteLease {
        file_length,
        chunk_id: chunk.chunk_id,
        version: chunk.version,
        token: m.trust.write_token(chunk, &chain),
        chain,
    }
}

/// Changes a file's length; a chunk cut in the middle is truncated on every copy first.
/// Returns the version to wait for.
pub async fn truncate(
    m: &Master,
    s: &Session,
    inode: Inode,
    size: u64,
    now: Timespec,
) -> FsResult<u64> {
    let (cut, version, copies, unshared) = {
        let mut st = m.state();
        let st = &mut *st;
        let (length, chunks, _) = file_chunks(st, inode)?;
        let in_middle = !size.is_multiple_of(CHUNK_SIZE) && size < length;
        let cut = chunks
            .get((size / CHUNK_SIZE) as usize)
            .copied()
            .filter(|c| *c != 0 && in_middle);
        let Some(cut) = cut else {
            let op = Op::SetLength {
                inode,
                length: size,
                trunc_chunk: None,
                time: now,
            };
            return Ok(m.commit_by(st, op, Some(s.id))?.1);
        };
        if st
            .rt
            .write_locks
            .get(&cut)
            .is_some_and(|l| l.session != s.id)
        {
            return Err(FsError::Locked);
        }
        let version = st
            .meta
            .chunks
            .get(&cut)
            .map(|c| c.version)
            .ok_or(FsError::NoChunk)?;
        lock_chunk(st, cut, s.id);
        let copies = valid_copies(st, cut, version);
        if st.shares.is_shared(cut) {
            let new_id = st.meta.next_chunk_id;
            st.meta.next_chunk_id += 1;
            let index = (size / CHUNK_SIZE) as u32;
            (cut, version, copies, Some((index, new_id)))
        } else {
            (cut, version, copies, None)
        }
    };
    // A chunk shared with a snapshot is copied first; the copy is cut.
    let (cut, version, copies) = match unshared {
        Some((index, new_id)) => {
            let (copy, ok) = unshare(m, s, inode, index, cut, version, copies, new_id).await?;
            lock_chunk(&mut m.state(), copy.chunk_id, s.id);
            (copy.chunk_id, copy.version, ok)
        }
        None => (cut, version, copies),
    };
    let new_version = raise_version(m, cut, version).await?;
    let chunk = ChunkRef {
        chunk_id: cut,
        version,
    };
    let length = (size % CHUNK_SIZE) as u32;
    let ok = order_all(m, &copies, "truncate", |req_id| MasterToCs::Truncate {
        req_id,
        chunk,
        new_version,
        length,
    })
    .await;
    if ok.is_empty() && !copies.is_empty() {
        tracing::error!("truncate of chunk {cut:016X} failed on every copy");
        restore_version(m, cut, version).await;
        return Err(FsError::Io);
    }
    let mut st = m.state();
    let st = &mut *st;
    st.rt.write_locks.remove(&cut);
    set_copy_versions(st, cut, &ok, new_version);
    let op = Op::SetLength {
        inode,
        length: size,
        trunc_chunk: Some((cut, new_version)),
        time: now,
    };
    Ok(m.commit_by(st, op, Some(s.id))?.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::{ChunkMeta, Meta};

    /// Chunk 1 at `version` in the metadata, with `copies` as (server, version).
    fn chunk_with(version: u32, copies: &[(u32, u32)]) -> State {
        let mut st = State::new(Meta::fresh(1, Timespec::default(), 2));
        st.meta.chunks.insert(
            1,
            ChunkMeta {
                version,
                inode: 2,
                index: 0,
            },
        );
        st.rt.locations.insert(
            1,
            copies
                .iter()
                .map(|&(cs, version)| Copy { cs, version })
                .collect(),
        );
        st
    }

    #[test]
    fn a_read_during_a_raise_is_served_at_the_version_before() {
        let mut st = chunk_with(8, &[(1, 7), (2, 7), (3, 5)]);
        // Version 8 is recorded, no copy answered yet: the copies at 7 serve.
        st.rt.raising.insert(1);
        assert_eq!(readable_copies(&st, 1, 8), (7, vec![1, 2]));
        // A copy took it: the new version serves.
        st.rt.locations.get_mut(&1).unwrap()[0].version = 8;
        assert_eq!(readable_copies(&st, 1, 8), (8, vec![1]));
    }

    #[test]
    fn copies_left_behind_by_a_finished_raise_never_serve() {
        // The raise to 8 is over and its copy is gone: the copy at 7 missed what was written
        // at 8, so there is no copy to read.
        let st = chunk_with(8, &[(2, 7)]);
        assert_eq!(readable_copies(&st, 1, 8), (8, vec![]));
    }
}
