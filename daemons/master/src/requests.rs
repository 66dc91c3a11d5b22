//! File system requests of a session: permission checks, then an [`Op`] committed to the
//! changelog, then the reply once the change is durable.

use moose_proto::msg::{
    ChunkHealth, ChunkInfo, ChunkLocation, ChunkserverInfo, ClReply, ClRequest, ClusterInfo, CopyInfo,
    CopyState, SetGoalReply, StatfsReply, WriteLease,
};
use moose_proto::{
    Attr, ChunkRef, Cred, DirEntry, FileKind, FsError, FsResult, Inode, SetAttrs, TimeSet,
    Timespec, CHUNK_SIZE, MAX_GOAL, MAX_SYMLINK_LEN, MAX_XATTR_VALUE,
};
use rand::seq::SliceRandom;

use crate::access::{may, sticky_allows, R, W, X};
use crate::clserv::Session;
use crate::master::Master;
use crate::namespace::NodeData;
use crate::ops::Op;
use crate::placement;
use crate::state::{check_name, Applied, Copy, State, WriteLock};

/// Largest file: 2^31 chunks of 64 MiB.
const MAX_FILE_SIZE: u64 = CHUNK_SIZE << 31;
const O_ACCMODE: i32 = 3;
const O_WRONLY: i32 = 1;
const O_RDWR: i32 = 2;
const O_TRUNC: i32 = 0o1000;

/// Applies the export's uid/gid mapping to what the client says.
fn map_cred(s: &Session, c: Cred) -> Cred {
    if c.uid == 0 {
        match s.maproot {
            Some((u, g)) if (u, g) != (0, 0) => Cred {
                uid: u,
                gid: g,
                groups: vec![],
            },
            _ => c,
        }
    } else if let Some((u, g)) = s.mapall {
        Cred {
            uid: u,
            gid: g,
            groups: vec![],
        }
    } else {
        c
    }
}

fn attr(st: &State, inode: Inode) -> FsResult<Attr> {
    Ok(st.node(inode)?.attr(inode))
}

fn check_access(st: &State, s: &Session, inode: Inode, cred: &Cred, mask: u32) -> FsResult<()> {
    if may(st.node(inode)?, cred, mask, s.ignoregid) {
        Ok(())
    } else {
        Err(FsError::Access)
    }
}

fn writable(s: &Session) -> FsResult<()> {
    if s.read_only {
        Err(FsError::ReadOnly)
    } else {
        Ok(())
    }
}

/// Commits one op under the lock, then waits for durability outside it.
async fn commit_and_wait(m: &Master, st: parking_lot::MutexGuard<'_, State>, op: Op) -> FsResult<Applied> {
    let mut st = st;
    let (applied, version) = m.commit(&mut st, op)?;
    drop(st);
    m.durable(version).await?;
    Ok(applied)
}

pub async fn handle(m: &Master, s: &Session, req: ClRequest) -> FsResult<ClReply> {
    let now = Timespec::now();
    match req {
        ClRequest::Statfs => Ok(ClReply::Statfs(statfs(m))),
        ClRequest::Lookup { parent, name, cred } => {
            let cred = map_cred(s, cred);
            let st = m.state();
            check_access(&st, s, parent, &cred, X)?;
            if name.len() > moose_proto::MAX_NAME_LEN {
                return Err(FsError::NameTooLong);
            }
            let ino = if parent == s.root && name == b".." {
                parent
            } else {
                st.lookup(parent, &name)?
            };
            Ok(ClReply::Attr(attr(&st, ino)?))
        }
        ClRequest::GetAttr { inode } => Ok(ClReply::Attr(attr(&m.state(), inode)?)),
        ClRequest::SetAttr { inode, set, cred } => {
            setattr(m, s, inode, set, map_cred(s, cred), now).await.map(ClReply::Attr)
        }
        ClRequest::Access { inode, mask, cred } => {
            let cred = map_cred(s, cred);
            if mask & W != 0 {
                writable(s)?;
            }
            check_access(&m.state(), s, inode, &cred, mask & 7)?;
            Ok(ClReply::Done)
        }
        ClRequest::MkNod {
            parent,
            name,
            kind,
            mode,
            umask,
            rdev,
            cred,
        } => create(m, s, parent, name, kind, mode & !umask, rdev, map_cred(s, cred), now).await,
        ClRequest::MkDir {
            parent,
            name,
            mode,
            umask,
            cred,
        } => {
            create(
                m,
                s,
                parent,
                name,
                FileKind::Dir,
                mode & !umask & 0o7777,
                0,
                map_cred(s, cred),
                now,
            )
            .await
        }
        ClRequest::Symlink {
            parent,
            name,
            target,
            cred,
        } => {
            writable(s)?;
            let cred = map_cred(s, cred);
            if target.len() > MAX_SYMLINK_LEN {
                return Err(FsError::NameTooLong);
            }
            if target.is_empty() {
                return Err(FsError::NoEnt);
            }
            check_name(&name)?;
            let mut st = m.state();
            check_access(&st, s, parent, &cred, W | X)?;
            let inode = st.meta.next_inode;
            let gid = inherited_gid(&st, parent, &cred)?;
            let (_, v) = m.commit(
                &mut st,
                Op::Symlink {
                    parent,
                    name,
                    inode,
                    target,
                    uid: cred.uid,
                    gid,
                    time: now,
                },
            )?;
            let a = attr(&st, inode)?;
            drop(st);
            m.durable(v).await?;
            Ok(ClReply::Attr(a))
        }
        ClRequest::ReadLink { inode } => match &m.state().node(inode)?.data {
            NodeData::Symlink(t) => Ok(ClReply::Link(t.clone())),
            _ => Err(FsError::Inval),
        },
        ClRequest::Unlink { parent, name, cred } => {
            writable(s)?;
            let cred = map_cred(s, cred);
            let st = m.state();
            check_access(&st, s, parent, &cred, W | X)?;
            let child = st.dir(parent)?.get(&name).ok_or(FsError::NoEnt)?;
            if !sticky_allows(st.node(parent)?, st.node(child)?, &cred) {
                return Err(FsError::Perm);
            }
            let keep = st.is_open(child);
            commit_and_wait(
                m,
                st,
                Op::Unlink {
                    parent,
                    name,
                    keep,
                    time: now,
                },
            )
            .await?;
            Ok(ClReply::Done)
        }
        ClRequest::RmDir { parent, name, cred } => {
            writable(s)?;
            let cred = map_cred(s, cred);
            let st = m.state();
            check_access(&st, s, parent, &cred, W | X)?;
            if name == b"." {
                return Err(FsError::Inval);
            }
            let child = st.lookup(parent, &name)?;
            if child == s.root {
                return Err(FsError::Busy);
            }
            if !sticky_allows(st.node(parent)?, st.node(child)?, &cred) {
                return Err(FsError::Perm);
            }
            commit_and_wait(m, st, Op::RmDir { parent, name, time: now }).await?;
            Ok(ClReply::Done)
        }
        ClRequest::Rename {
            parent,
            name,
            new_parent,
            new_name,
            flags,
            cred,
        } => {
            writable(s)?;
            let cred = map_cred(s, cred);
            let st = m.state();
            check_access(&st, s, parent, &cred, W | X)?;
            check_access(&st, s, new_parent, &cred, W | X)?;
            let src = st.dir(parent)?.get(&name).ok_or(FsError::NoEnt)?;
            if !sticky_allows(st.node(parent)?, st.node(src)?, &cred) {
                return Err(FsError::Perm);
            }
            let target = st.dir(new_parent)?.get(&new_name);
            if let Some(t) = target {
                if flags & 1 != 0 {
                    return Err(FsError::Exist);
                }
                if !sticky_allows(st.node(new_parent)?, st.node(t)?, &cred) {
                    return Err(FsError::Perm);
                }
            }
            // Moving a folder to another parent rewrites its "..": needs write access to it.
            if parent != new_parent && st.node(src)?.is_dir() {
                check_access(&st, s, src, &cred, W)?;
            }
            let keep_target = target.is_some_and(|t| st.is_open(t));
            commit_and_wait(
                m,
                st,
                Op::Rename {
                    parent,
                    name,
                    new_parent,
                    new_name,
                    exchange: flags & 2 != 0,
                    keep_target,
                    time: now,
                },
            )
            .await?;
            Ok(ClReply::Done)
        }
        ClRequest::Link {
            inode,
            new_parent,
            new_name,
            cred,
        } => {
            writable(s)?;
            let cred = map_cred(s, cred);
            let mut st = m.state();
            check_access(&st, s, new_parent, &cred, W | X)?;
            let (_, v) = m.commit(
                &mut st,
                Op::Link {
                    inode,
                    parent: new_parent,
                    name: new_name,
                    time: now,
                },
            )?;
            let a = attr(&st, inode)?;
            drop(st);
            m.durable(v).await?;
            Ok(ClReply::Attr(a))
        }
        ClRequest::ReadDir {
            inode,
            cookie,
            max,
            cred,
        } => {
            let cred = map_cred(s, cred);
            let st = m.state();
            check_access(&st, s, inode, &cred, R)?;
            let dir = st.dir(inode)?;
            let max = max.clamp(1, 10_000) as usize;
            let mut entries = Vec::with_capacity(max.min(dir.order.len()));
            let mut iter = dir.order.range(cookie + 1..);
            for (edge, name) in iter.by_ref() {
                let Some(child) = dir.get(name) else { continue };
                let Ok(node) = st.node(child) else { continue };
                entries.push(DirEntry {
                    name: name.clone(),
                    attr: node.attr(child),
                    cookie: *edge,
                });
                if entries.len() >= max {
                    break;
                }
            }
            let eof = iter.next().is_none();
            Ok(ClReply::Dir { entries, eof })
        }
        ClRequest::Open { inode, flags, cred } => {
            let cred = map_cred(s, cred);
            let mut mask = match flags & O_ACCMODE {
                O_WRONLY => W,
                O_RDWR => R | W,
                _ => R,
            };
            if flags & O_TRUNC != 0 {
                mask |= W;
            }
            let mut st = m.state();
            let node = st.node(inode)?;
            if mask & W != 0 {
                writable(s)?;
                if node.is_dir() {
                    return Err(FsError::IsDir);
                }
            }
            check_access(&st, s, inode, &cred, mask)?;
            let a = attr(&st, inode)?;
            *st.rt.open.entry(inode).or_default() += 1;
            drop(st);
            *s.open
                .lock()
                .entry(inode)
                .or_default() += 1;
            Ok(ClReply::Attr(a))
        }
        ClRequest::Release { inode } => {
            let had = {
                let mut open = s.open.lock();
                match open.get_mut(&inode) {
                    Some(n) => {
                        *n -= 1;
                        if *n == 0 {
                            open.remove(&inode);
                        }
                        true
                    }
                    None => false,
                }
            };
            if !had {
                return Ok(ClReply::Done);
            }
            let mut st = m.state();
            let left = st.rt.open.get_mut(&inode).map(|c| {
                *c = c.saturating_sub(1);
                *c
            });
            if left == Some(0) {
                st.rt.open.remove(&inode);
                if st.meta.nodes.get(&inode).is_some_and(|n| n.nlink == 0) {
                    commit_and_wait(m, st, Op::Purge { inode }).await?;
                }
            }
            Ok(ClReply::Done)
        }
        ClRequest::ReadChunk { inode, index } => {
            let st = m.state();
            let node = st.node(inode)?;
            let NodeData::File { length, chunks } = &node.data else {
                return Err(if node.is_dir() { FsError::IsDir } else { FsError::Inval });
            };
            let chunk_id = chunks.get(index as usize).copied().unwrap_or(0);
            let mut loc = ChunkLocation {
                file_length: *length,
                chunk_id,
                version: 0,
                servers: vec![],
            };
            if chunk_id != 0 {
                let version = st.meta.chunks.get(&chunk_id).map(|c| c.version).unwrap_or(0);
                loc.version = version;
                let ids: Vec<u32> = st
                    .rt
                    .locations
                    .get(&chunk_id)
                    .map(|v| v.iter().filter(|c| c.version == version).map(|c| c.cs).collect())
                    .unwrap_or_default();
                drop(st);
                let mut servers: Vec<_> = ids.into_iter().filter_map(|id| m.cs.addr(id)).collect();
                servers.shuffle(&mut rand::rng());
                loc.servers = servers;
            }
            Ok(ClReply::Chunk(loc))
        }
        ClRequest::WriteChunk { inode, index } => {
            writable(s)?;
            write_chunk(m, s, inode, index).await.map(ClReply::WriteLease)
        }
        ClRequest::WriteChunkEnd {
            inode,
            index: _,
            chunk_id,
            length,
            ok,
        } => {
            let mut st = m.state();
            if st.rt.write_locks.get(&chunk_id).is_some_and(|l| l.session == s.id) {
                st.rt.write_locks.remove(&chunk_id);
            }
            if !ok {
                return Ok(ClReply::Attr(attr(&st, inode)?));
            }
            if length > MAX_FILE_SIZE {
                return Err(FsError::TooBig);
            }
            let (_, v) = m.commit(&mut st, Op::WriteEnd { inode, length, time: now })?;
            let a = attr(&st, inode)?;
            drop(st);
            m.durable(v).await?;
            Ok(ClReply::Attr(a))
        }
        ClRequest::GetXattr { inode, name, cred } => {
            let cred = map_cred(s, cred);
            let st = m.state();
            xattr_access(&st, s, inode, &name, &cred, false)?;
            let v = st.node(inode)?.xattrs.get(&name).ok_or(FsError::NoAttr)?;
            Ok(ClReply::Xattr(v.clone()))
        }
        ClRequest::SetXattr {
            inode,
            name,
            value,
            flags,
            cred,
        } => {
            writable(s)?;
            let cred = map_cred(s, cred);
            if name.is_empty() || name.len() > 255 {
                return Err(FsError::Range);
            }
            if value.len() > MAX_XATTR_VALUE {
                return Err(FsError::TooLarge);
            }
            let st = m.state();
            xattr_access(&st, s, inode, &name, &cred, true)?;
            let exists = st.node(inode)?.xattrs.contains_key(&name);
            if flags & 1 != 0 && exists {
                return Err(FsError::AttrExists);
            }
            if flags & 2 != 0 && !exists {
                return Err(FsError::NoAttr);
            }
            commit_and_wait(
                m,
                st,
                Op::SetXattr {
                    inode,
                    name,
                    value,
                    time: now,
                },
            )
            .await?;
            Ok(ClReply::Done)
        }
        ClRequest::ListXattr { inode, cred } => {
            let cred = map_cred(s, cred);
            let st = m.state();
            let node = st.node(inode)?;
            let names = node
                .xattrs
                .keys()
                .filter(|n| !n.starts_with(b"trusted.") || cred.uid == 0)
                .cloned()
                .collect();
            Ok(ClReply::XattrNames(names))
        }
        ClRequest::RemoveXattr { inode, name, cred } => {
            writable(s)?;
            let cred = map_cred(s, cred);
            let st = m.state();
            xattr_access(&st, s, inode, &name, &cred, true)?;
            commit_and_wait(m, st, Op::RemoveXattr { inode, name, time: now }).await?;
            Ok(ClReply::Done)
        }
        ClRequest::SetGoal {
            inode,
            goal,
            recursive,
            cred,
        } => {
            writable(s)?;
            let cred = map_cred(s, cred);
            if !(1..=MAX_GOAL).contains(&goal) {
                return Err(FsError::Inval);
            }
            if goal < s.mingoal || goal > s.maxgoal {
                return Err(FsError::Perm);
            }
            let st = m.state();
            st.node(inode)?;
            let applied = commit_and_wait(
                m,
                st,
                Op::SetGoal {
                    inode,
                    goal,
                    recursive,
                    uid: cred.uid,
                    time: now,
                },
            )
            .await?;
            match applied {
                Applied::GoalCounts {
                    changed,
                    unchanged,
                    not_permitted,
                } => Ok(ClReply::GoalSet(SetGoalReply {
                    changed,
                    unchanged,
                    not_permitted,
                })),
                _ => Err(FsError::Io),
            }
        }
        ClRequest::GetGoal { inode } => Ok(ClReply::Goal(m.state().node(inode)?.goal)),
        ClRequest::FileInfo { inode } => Ok(ClReply::FileInfo(file_info(m, inode)?)),
        ClRequest::ReportBadCopy {
            chunk_id,
            version,
            server,
        } => {
            if let Some(cs) = m.cs.id_of(&server) {
                tracing::warn!(
                    "client {} reports a bad copy of chunk {chunk_id:016X} on {server}",
                    s.ip
                );
                crate::csserv::drop_bad_copy(m, cs, ChunkRef { chunk_id, version });
            }
            Ok(ClReply::Done)
        }
        ClRequest::GetChallenge | ClRequest::Register(_) | ClRequest::ClusterInfo => {
            Err(FsError::Inval)
        }
    }
}

fn statfs(m: &Master) -> StatfsReply {
    let (total, avail) = {
        let entries = m.cs.lock();
        entries
            .values()
            .filter(|e| e.connected)
            .fold((0u64, 0u64), |(t, a), e| (t + e.total(), a + e.avail()))
    };
    StatfsReply {
        total,
        avail,
        used: total.saturating_sub(avail),
        inodes: m.state().meta.nodes.len() as u64,
    }
}

fn inherited_gid(st: &State, parent: Inode, cred: &Cred) -> FsResult<u32> {
    let p = st.node(parent)?;
    Ok(if p.mode & 0o2000 != 0 { p.gid } else { cred.gid })
}

#[allow(clippy::too_many_arguments)]
async fn create(
    m: &Master,
    s: &Session,
    parent: Inode,
    name: Vec<u8>,
    kind: FileKind,
    mode: u16,
    rdev: u32,
    cred: Cred,
    now: Timespec,
) -> FsResult<ClReply> {
    writable(s)?;
    check_name(&name)?;
    if kind == FileKind::Symlink {
        return Err(FsError::Inval);
    }
    let mut st = m.state();
    check_access(&st, s, parent, &cred, W | X)?;
    let gid = inherited_gid(&st, parent, &cred)?;
    let mut mode = mode & 0o7777;
    let parent_sgid = st.node(parent)?.mode & 0o2000 != 0;
    if kind == FileKind::Dir && parent_sgid {
        mode |= 0o2000;
    }
    if kind != FileKind::Dir && mode & 0o2000 != 0 && cred.uid != 0 && !cred.in_group(gid) {
        mode &= !0o2000;
    }
    let inode = st.meta.next_inode;
    let (_, v) = m.commit(
        &mut st,
        Op::Create {
            parent,
            name,
            inode,
            kind,
            mode,
            uid: cred.uid,
            gid,
            rdev,
            time: now,
        },
    )?;
    let a = attr(&st, inode)?;
    drop(st);
    m.durable(v).await?;
    Ok(ClReply::Attr(a))
}

fn resolve_time(t: TimeSet, now: Timespec) -> Timespec {
    match t {
        TimeSet::Now => now,
        TimeSet::At(t) => t,
    }
}

async fn setattr(
    m: &Master,
    s: &Session,
    inode: Inode,
    set: SetAttrs,
    cred: Cred,
    now: Timespec,
) -> FsResult<Attr> {
    writable(s)?;
    if let Some(size) = set.size {
        let st = m.state();
        let node = st.node(inode)?;
        if node.is_dir() {
            return Err(FsError::IsDir);
        }
        if node.kind != FileKind::File {
            return Err(FsError::Inval);
        }
        let open_here = s
            .open
            .lock()
            .contains_key(&inode);
        if !open_here {
            check_access(&st, s, inode, &cred, W)?;
        }
        if size > MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        drop(st);
        truncate(m, s, inode, size, now).await?;
    }
    let mut st = m.state();
    let node = st.node(inode)?;
    let is_owner = cred.uid == 0 || cred.uid == node.uid;
    let mut mode = set.mode.map(|m| m & 0o7777);
    if mode.is_some() && !is_owner {
        return Err(FsError::Perm);
    }
    if let Some(md) = mode.as_mut() {
        if cred.uid != 0 && node.kind != FileKind::Dir && !cred.in_group(node.gid) {
            *md &= !0o2000;
        }
    }
    if let Some(uid) = set.uid {
        if cred.uid != 0 && uid != node.uid {
            return Err(FsError::Perm);
        }
    }
    if let Some(gid) = set.gid {
        if cred.uid != 0 && gid != node.gid && (cred.uid != node.uid || !cred.in_group(gid)) {
            return Err(FsError::Perm);
        }
    }
    let ownership_changes = set.uid.is_some_and(|u| u != node.uid)
        || set.gid.is_some_and(|g| g != node.gid);
    if ownership_changes && cred.uid != 0 && mode.is_none() && node.kind != FileKind::Dir {
        // A non-root chown drops the setuid and setgid bits.
        mode = Some(node.mode & !0o6000);
    }
    for t in [set.atime, set.mtime].into_iter().flatten() {
        match t {
            TimeSet::Now => {
                if !is_owner && !may(node, &cred, W, s.ignoregid) {
                    return Err(FsError::Access);
                }
            }
            TimeSet::At(_) => {
                if !is_owner {
                    return Err(FsError::Perm);
                }
            }
        }
    }
    let nothing = mode.is_none()
        && set.uid.is_none()
        && set.gid.is_none()
        && set.atime.is_none()
        && set.mtime.is_none();
    if nothing {
        return attr(&st, inode);
    }
    let (_, v) = m.commit(
        &mut st,
        Op::SetAttr {
            inode,
            mode,
            uid: set.uid,
            gid: set.gid,
            atime: set.atime.map(|t| resolve_time(t, now)),
            mtime: set.mtime.map(|t| resolve_time(t, now)),
            time: now,
        },
    )?;
    let a = attr(&st, inode)?;
    drop(st);
    m.durable(v).await?;
    Ok(a)
}

/// Changes a file's length; a chunk cut in the middle is truncated on every copy first.
async fn truncate(m: &Master, s: &Session, inode: Inode, size: u64, now: Timespec) -> FsResult<()> {
    let mut st = m.state();
    let (length, chunk_at_end) = match &st.node(inode)?.data {
        NodeData::File { length, chunks } => {
            let idx = (size / CHUNK_SIZE) as usize;
            let cut = if size % CHUNK_SIZE != 0 {
                chunks.get(idx).copied().filter(|c| *c != 0)
            } else {
                None
            };
            (*length, cut)
        }
        _ => return Err(FsError::Inval),
    };
    let cut = match chunk_at_end {
        Some(c) if size < length => c,
        _ => {
            commit_and_wait(
                m,
                st,
                Op::SetLength {
                    inode,
                    length: size,
                    trunc_chunk: None,
                    time: now,
                },
            )
            .await?;
            return Ok(());
        }
    };
    if st.rt.write_locks.get(&cut).is_some_and(|l| l.session != s.id) {
        return Err(FsError::Locked);
    }
    st.rt.write_locks.insert(
        cut,
        WriteLock {
            session: s.id,
            since: std::time::Instant::now(),
        },
    );
    let version = st.meta.chunks.get(&cut).map(|c| c.version).ok_or(FsError::NoChunk)?;
    let copies: Vec<u32> = valid_copies(&st, cut, version);
    drop(st);
    let new_version = version + 1;
    let chunk = ChunkRef {
        chunk_id: cut,
        version,
    };
    let in_chunk = (size % CHUNK_SIZE) as u32;
    let results = join_all(
        copies
            .iter()
            .map(|&cs| {
                Box::pin(m.cs.order(cs, |req_id| moose_proto::msg::MasterToCs::Truncate {
                    req_id,
                    chunk,
                    new_version,
                    length: in_chunk,
                }))
            })
            .collect(),
    )
    .await;
    let mut st = m.state();
    st.rt.write_locks.remove(&cut);
    let ok: Vec<u32> = copies
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|(c, _)| *c)
        .collect();
    if ok.is_empty() && !copies.is_empty() {
        tracing::error!("truncate of chunk {cut:016X} failed on every copy: {results:?}");
        return Err(FsError::Io);
    }
    set_copy_versions(&mut st, cut, &ok, new_version);
    commit_and_wait(
        m,
        st,
        Op::SetLength {
            inode,
            length: size,
            trunc_chunk: Some((cut, new_version)),
            time: now,
        },
    )
    .await?;
    Ok(())
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

/// Chunkservers holding a copy of `chunk_id` at `version` that are connected now.
fn valid_copies(st: &State, chunk_id: u64, version: u32) -> Vec<u32> {
    st.rt
        .locations
        .get(&chunk_id)
        .map(|v| v.iter().filter(|c| c.version == version).map(|c| c.cs).collect())
        .unwrap_or_default()
}

/// After a version change: the copies in `ok` have `version`; every other copy is stale.
fn set_copy_versions(st: &mut State, chunk_id: u64, ok: &[u32], version: u32) {
    let copies = st.rt.locations.entry(chunk_id).or_default();
    for c in copies.iter_mut() {
        if ok.contains(&c.cs) {
            c.version = version;
        }
    }
}

/// Gives the client a chunk to write: a new one (created on `goal` servers) or the existing
/// one with its version raised on every valid copy.
async fn write_chunk(m: &Master, s: &Session, inode: Inode, index: u32) -> FsResult<WriteLease> {
    if u64::from(index) >= (MAX_FILE_SIZE / CHUNK_SIZE) {
        return Err(FsError::TooBig);
    }
    let mut st = m.state();
    let node = st.node(inode)?;
    let NodeData::File { chunks, .. } = &node.data else {
        return Err(if node.is_dir() { FsError::IsDir } else { FsError::Inval });
    };
    let goal = node.goal;
    let existing = chunks.get(index as usize).copied().filter(|c| *c != 0);
    match existing {
        None => {
            if !st.rt.creating.insert((inode, index)) {
                return Err(FsError::Locked);
            }
            let chunk_id = st.meta.next_chunk_id;
            st.meta.next_chunk_id += 1;
            drop(st);
            let result = create_chunk(m, s, inode, index, chunk_id, goal).await;
            m.state().rt.creating.remove(&(inode, index));
            result
        }
        Some(chunk_id) => {
            if let Some(l) = st.rt.write_locks.get(&chunk_id) {
                if l.session != s.id {
                    return Err(FsError::Locked);
                }
            }
            let version = st.meta.chunks.get(&chunk_id).map(|c| c.version).ok_or(FsError::NoChunk)?;
            let copies = valid_copies(&st, chunk_id, version);
            if copies.is_empty() {
                tracing::warn!("chunk {chunk_id:016X} of inode {inode} has no valid copy; write refused");
                return Err(FsError::Io);
            }
            st.rt.write_locks.insert(
                chunk_id,
                WriteLock {
                    session: s.id,
                    since: std::time::Instant::now(),
                },
            );
            drop(st);
            let new_version = version + 1;
            let chunk = ChunkRef { chunk_id, version };
            let results = join_all(
                copies
                    .iter()
                    .map(|&cs| {
                        Box::pin(m.cs.order(cs, |req_id| moose_proto::msg::MasterToCs::SetVersion {
                            req_id,
                            chunk,
                            new_version,
                        }))
                    })
                    .collect(),
            )
            .await;
            let ok: Vec<u32> = copies
                .iter()
                .zip(&results)
                .filter(|(_, r)| r.is_ok())
                .map(|(c, _)| *c)
                .collect();
            let mut st = m.state();
            if ok.is_empty() {
                st.rt.write_locks.remove(&chunk_id);
                tracing::warn!("chunk {chunk_id:016X}: no copy took the new version: {results:?}");
                return Err(FsError::Io);
            }
            set_copy_versions(&mut st, chunk_id, &ok, new_version);
            let (_, v) = match m.commit(
                &mut st,
                Op::SetChunkVersion {
                    chunk_id,
                    version: new_version,
                },
            ) {
                Ok(x) => x,
                Err(e) => {
                    st.rt.write_locks.remove(&chunk_id);
                    return Err(e);
                }
            };
            let file_length = st.node(inode).map(|n| n.length()).unwrap_or(0);
            drop(st);
            m.durable(v).await?;
            let chain = placement::chain_order(ok.iter().filter_map(|id| m.cs.addr(*id)).collect());
            Ok(WriteLease {
                file_length,
                chunk_id,
                version: new_version,
                chain,
            })
        }
    }
}

async fn create_chunk(
    m: &Master,
    s: &Session,
    inode: Inode,
    index: u32,
    chunk_id: u64,
    goal: u8,
) -> FsResult<WriteLease> {
    let targets = placement::choose_new(&m.cs.connected(), goal as usize, &[])?;
    let chunk = ChunkRef {
        chunk_id,
        version: 1,
    };
    let results = join_all(
        targets
            .iter()
            .map(|t| Box::pin(m.cs.order(t.id, |req_id| moose_proto::msg::MasterToCs::Create { req_id, chunk })))
            .collect(),
    )
    .await;
    let ok: Vec<_> = targets
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|(t, _)| t.clone())
        .collect();
    let mut st = m.state();
    for (t, r) in targets.iter().zip(&results) {
        if r.is_err() {
            tracing::warn!("chunk {chunk_id:016X}: create on {} failed: {r:?}", t.addr);
            st.rt.deletions.push((t.id, chunk));
        }
    }
    if ok.is_empty() {
        return Err(FsError::NoChunkservers);
    }
    let applied = m.commit(
        &mut st,
        Op::AddChunk {
            inode,
            index,
            chunk_id,
            version: 1,
        },
    );
    let v = match applied {
        Ok((_, v)) => v,
        Err(e) => {
            // The file changed meanwhile (removed, or another writer filled the slot).
            for t in &ok {
                st.rt.deletions.push((t.id, chunk));
            }
            return Err(if e == FsError::Exist { FsError::Locked } else { e });
        }
    };
    st.rt.locations.insert(
        chunk_id,
        ok.iter().map(|t| Copy { cs: t.id, version: 1 }).collect(),
    );
    st.rt.write_locks.insert(
        chunk_id,
        WriteLock {
            session: s.id,
            since: std::time::Instant::now(),
        },
    );
    let file_length = st.node(inode).map(|n| n.length()).unwrap_or(0);
    drop(st);
    m.durable(v).await?;
    Ok(WriteLease {
        file_length,
        chunk_id,
        version: 1,
        chain: placement::chain_order(ok.into_iter().map(|t| t.addr).collect()),
    })
}

fn xattr_access(st: &State, s: &Session, inode: Inode, name: &[u8], cred: &Cred, set: bool) -> FsResult<()> {
    let node = st.node(inode)?;
    if name.starts_with(b"system.posix_acl_") {
        return Err(FsError::NotSupported);
    }
    if name.starts_with(b"trusted.") {
        return if cred.uid == 0 { Ok(()) } else { Err(FsError::Perm) };
    }
    if name.starts_with(b"user.") {
        if !matches!(node.kind, FileKind::File | FileKind::Dir) {
            return Err(if set { FsError::Perm } else { FsError::NoAttr });
        }
        let mask = if set { W } else { R };
        return check_access(st, s, inode, cred, mask);
    }
    if name.starts_with(b"security.") {
        if set && cred.uid != 0 && cred.uid != node.uid {
            return Err(FsError::Perm);
        }
        return Ok(());
    }
    Err(FsError::NotSupported)
}

fn file_info(m: &Master, inode: Inode) -> FsResult<Vec<ChunkInfo>> {
    let st = m.state();
    let node = st.node(inode)?;
    let NodeData::File { chunks, .. } = &node.data else {
        return Ok(vec![]);
    };
    let goal = node.goal;
    let mut out = Vec::with_capacity(chunks.len());
    for (i, &chunk_id) in chunks.iter().enumerate() {
        let version = st.meta.chunks.get(&chunk_id).map(|c| c.version).unwrap_or(0);
        let copies = st
            .rt
            .locations
            .get(&chunk_id)
            .map(|v| v.clone())
            .unwrap_or_default();
        out.push((i as u32, chunk_id, version, copies));
    }
    drop(st);
    let entries = m.cs.lock();
    Ok(out
        .into_iter()
        .map(|(index, chunk_id, version, copies)| ChunkInfo {
            index,
            chunk_id,
            version,
            goal,
            copies: copies
                .iter()
                .filter_map(|c| {
                    let e = entries.get(&c.cs)?;
                    let marked = e.disks.iter().all(|d| d.marked_for_removal) && !e.disks.is_empty();
                    Some(CopyInfo {
                        server: e.addr.clone(),
                        state: if c.version != version {
                            CopyState::WrongVersion
                        } else if marked {
                            CopyState::MarkedForRemoval
                        } else {
                            CopyState::Valid
                        },
                    })
                })
                .collect(),
        })
        .collect())
}

/// The chunk matrix: every chunk by goal and number of valid copies.
fn chunk_health(st: &State) -> ChunkHealth {
    let mut h = ChunkHealth {
        matrix: vec![vec![0; 11]; 10],
        pending_deletion: st.rt.deletions.len() as u64,
        ..Default::default()
    };
    for (id, meta) in &st.meta.chunks {
        let goal = st
            .meta
            .nodes
            .get(&meta.inode)
            .map(|n| n.goal as usize)
            .unwrap_or(0)
            .min(9);
        let copies = st
            .rt
            .locations
            .get(id)
            .map(|v| v.iter().filter(|c| c.version == meta.version).count())
            .unwrap_or(0);
        h.matrix[goal][copies.min(10)] += 1;
        match copies {
            0 => h.missing += 1,
            c if c < goal && c == 1 => h.endangered += 1,
            c if c < goal => h.undergoal += 1,
            c if c == goal => h.stable += 1,
            _ => h.overgoal += 1,
        }
    }
    h
}

pub fn cluster_info(m: &Master) -> ClusterInfo {
    use std::sync::atomic::Ordering::Relaxed;
    let (version, cluster_id, files, dirs, chunks, per_cs, mut health) = {
        let st = m.state();
        let (files, dirs) = st.meta.count_kinds();
        let mut per_cs: std::collections::HashMap<u32, u64> = Default::default();
        for copies in st.rt.locations.values() {
            for c in copies {
                *per_cs.entry(c.cs).or_default() += 1;
            }
        }
        (
            st.meta.version,
            st.meta.cluster_id,
            files,
            dirs,
            st.meta.chunks.len() as u64,
            per_cs,
            chunk_health(&st),
        )
    };
    health.pending_deletion += m.deleting.load(Relaxed);
    health.replicating = m.replicating.load(Relaxed);
    health.replicated_total = m.replicated_total.load(Relaxed);
    let entries = m.cs.lock();
    let mut chunkservers: Vec<ChunkserverInfo> = entries
        .values()
        .map(|e| ChunkserverInfo {
            id: e.id,
            addr: e.addr.clone(),
            version: e.version.clone(),
            connected: e.connected,
            chunks: per_cs.get(&e.id).copied().unwrap_or(0),
            used: e.used(),
            total: e.total(),
            disks: e.disks.clone(),
        })
        .collect();
    chunkservers.sort_by_key(|c| c.id);
    let (total_space, avail_space) = entries
        .values()
        .filter(|e| e.connected)
        .fold((0, 0), |(t, a), e| (t + e.total(), a + e.avail()));
    ClusterInfo {
        version: moose_proto::VERSION.to_string(),
        cluster_id,
        metadata_version: version,
        total_space,
        avail_space,
        files,
        dirs,
        chunks,
        chunkservers,
        metaloggers: m.metaloggers.lock().addresses(),
        uptime_secs: m.started.elapsed().as_secs(),
        ops_total: m.ops_served.load(Relaxed),
        sessions: m.sessions.load(Relaxed),
        health,
    }
}
