//! Metadata requests: each checks permissions and commits its op under one hold of the state
//! lock, without waiting on anything; the caller then waits for durability.

use moose_proto::msg::{ClReply, ClRequest, SetGoalReply};
use moose_proto::{
    Attr, Cred, DirEntry, FileKind, FsError, FsResult, Inode, SetAttrs, TimeSet, Timespec,
    MAX_GOAL, MAX_NAME_LEN, MAX_SYMLINK_LEN,
};

use super::data::lock_chunk;
use super::{attr, check_access, map_cred, writable, xattr, Outcome, MAX_FILE_SIZE};
use crate::access::{check_owner_change, check_times, sticky_allows, R, W, X};
use crate::master::Master;
use crate::namespace::NodeData;
use crate::ops::Op;
use crate::sessions::Session;
use crate::state::{check_name, Applied, State};

const O_ACCMODE: i32 = 3;
const O_WRONLY: i32 = 1;
const O_RDWR: i32 = 2;
const O_TRUNC: i32 = 0o1000;
const RENAME_NOREPLACE: u32 = 1;
const RENAME_EXCHANGE: u32 = 2;

/// Answers a metadata request. Requests that change something return the version to wait for.
pub fn apply(m: &Master, s: &Session, req: ClRequest, now: Timespec) -> FsResult<Outcome> {
    let mut st = m.state();
    let st = &mut *st;
    let done = |reply| Ok((reply, None));
    match req {
        ClRequest::Lookup { parent, name, cred } => {
            let cred = map_cred(s, cred);
            check_access(st, s, parent, &cred, X)?;
            if name.len() > MAX_NAME_LEN {
                return Err(FsError::NameTooLong);
            }
            let ino = if parent == s.root && name == b".." {
                parent
            } else {
                st.lookup(parent, &name)?
            };
            done(ClReply::Attr(attr(st, ino)?))
        }
        ClRequest::GetAttr { inode } => done(ClReply::Attr(attr(st, inode)?)),
        ClRequest::Access { inode, mask, cred } => {
            let cred = map_cred(s, cred);
            if mask & W != 0 {
                writable(s)?;
            }
            check_access(st, s, inode, &cred, mask & 7)?;
            done(ClReply::Done)
        }
        ClRequest::MkNod {
            parent,
            name,
            kind,
            mode,
            umask,
            rdev,
            cred,
        } => create(
            m,
            st,
            s,
            parent,
            name,
            kind,
            mode & !umask,
            rdev,
            map_cred(s, cred),
            now,
        ),
        ClRequest::Create {
            parent,
            name,
            mode,
            umask,
            flags,
            cred,
            ahead,
        } => {
            let (inode, now) = match ahead {
                None => (st.meta.next_inode, now),
                Some(a) => {
                    if st.dir(parent)?.get(&name) == Some(a.inode) {
                        // Sent again after a lost connection: made already.
                        grant_open(st, s, a.inode, access_asked(flags));
                        return Ok((ClReply::Attr(attr(st, a.inode)?), None));
                    }
                    let reserved = s.reserved.lock().take(a.inode);
                    // Answered ahead by a mount before this master started, and sent again.
                    let earlier = s.recovering
                        && a.inode < m.inodes_before_start
                        && !st.meta.nodes.contains_key(&a.inode);
                    if !reserved && !earlier {
                        tracing::warn!(
                            "session {} from {} created with inode {}, which it did not reserve",
                            s.id,
                            s.ip,
                            a.inode
                        );
                        return Err(FsError::Inval);
                    }
                    (a.inode, a.time)
                }
            };
            let created = create_as(
                m,
                st,
                s,
                (parent, name),
                inode,
                (FileKind::File, mode & !umask, 0),
                map_cred(s, cred),
                now,
            )?;
            if let (ClReply::Attr(a), _) = &created {
                grant_open(st, s, a.inode, access_asked(flags));
                st.rt.watches.opened(a.inode, s.id);
            }
            Ok(created)
        }
        ClRequest::MkDir {
            parent,
            name,
            mode,
            umask,
            cred,
        } => {
            let mode = mode & !umask;
            create(
                m,
                st,
                s,
                parent,
                name,
                FileKind::Dir,
                mode,
                0,
                map_cred(s, cred),
                now,
            )
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
            check_access(st, s, parent, &cred, W | X)?;
            let inode = st.meta.next_inode;
            let p = st.node(parent)?;
            let (_, gid) = cred.new_mode_and_group(FileKind::Symlink, 0, p.mode, p.gid);
            let (_, v) = m.commit_by(
                st,
                Op::Symlink {
                    parent,
                    name,
                    inode,
                    target,
                    uid: cred.uid,
                    gid,
                    time: now,
                },
                Some(s.id),
            )?;
            Ok((ClReply::Attr(attr(st, inode)?), Some(v)))
        }
        ClRequest::ReadLink { inode } => match &st.node(inode)?.data {
            NodeData::Symlink(t) => done(ClReply::Link(t.to_vec())),
            _ => Err(FsError::Inval),
        },
        ClRequest::Unlink { parent, name, cred } => {
            writable(s)?;
            let cred = map_cred(s, cred);
            check_access(st, s, parent, &cred, W | X)?;
            let child = st.dir(parent)?.get(&name).ok_or(FsError::NoEnt)?;
            if !sticky_allows(st.node(parent)?, st.node(child)?, &cred) {
                return Err(FsError::Perm);
            }
            let keep = st.is_open(child);
            let op = Op::Unlink {
                parent,
                name,
                keep,
                time: now,
            };
            let (_, v) = m.commit_by(st, op, Some(s.id))?;
            Ok((ClReply::Done, Some(v)))
        }
        ClRequest::RmDir { parent, name, cred } => {
            writable(s)?;
            let cred = map_cred(s, cred);
            check_access(st, s, parent, &cred, W | X)?;
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
            let (_, v) = m.commit_by(
                st,
                Op::RmDir {
                    parent,
                    name,
                    time: now,
                },
                Some(s.id),
            )?;
            Ok((ClReply::Done, Some(v)))
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
            check_access(st, s, parent, &cred, W | X)?;
            check_access(st, s, new_parent, &cred, W | X)?;
            let src = st.dir(parent)?.get(&name).ok_or(FsError::NoEnt)?;
            if !sticky_allows(st.node(parent)?, st.node(src)?, &cred) {
                return Err(FsError::Perm);
            }
            let target = st.dir(new_parent)?.get(&new_name);
            if let Some(t) = target {
                if flags & RENAME_NOREPLACE != 0 {
                    return Err(FsError::Exist);
                }
                if !sticky_allows(st.node(new_parent)?, st.node(t)?, &cred) {
                    return Err(FsError::Perm);
                }
            }
            // Moving a folder to another parent rewrites its "..": needs write access to it.
            if parent != new_parent && st.node(src)?.is_dir() {
                check_access(st, s, src, &cred, W)?;
            }
            let keep_target = target.is_some_and(|t| st.is_open(t));
            let op = Op::Rename {
                parent,
                name,
                new_parent,
                new_name,
                exchange: flags & RENAME_EXCHANGE != 0,
                keep_target,
                time: now,
            };
            let (_, v) = m.commit_by(st, op, Some(s.id))?;
            Ok((ClReply::Done, Some(v)))
        }
        ClRequest::Link {
            inode,
            new_parent,
            new_name,
            cred,
        } => {
            writable(s)?;
            let cred = map_cred(s, cred);
            check_access(st, s, new_parent, &cred, W | X)?;
            let op = Op::Link {
                inode,
                parent: new_parent,
                name: new_name,
                time: now,
            };
            let (_, v) = m.commit_by(st, op, Some(s.id))?;
            Ok((ClReply::Attr(attr(st, inode)?), Some(v)))
        }
        ClRequest::ReadDir {
            inode,
            cookie,
            max,
            cred,
        } => {
            let cred = map_cred(s, cred);
            check_access(st, s, inode, &cred, R)?;
            let listing = read_dir(st, inode, cookie, max)?;
            if cookie == 0 {
                // A listing from the start: the mount may keep the folder's names.
                st.rt.watches.watch(inode, s.id);
            }
            done(listing)
        }
        ClRequest::Open { inode, flags, cred } => {
            let cred = map_cred(s, cred);
            let mask = access_asked(flags);
            if st.trash_path(inode).is_some() {
                // Reached through the meta file system only.
                return Err(FsError::NoEnt);
            }
            let node = st.node(inode)?;
            if mask & W != 0 {
                writable(s)?;
                if node.is_dir() {
                    return Err(FsError::IsDir);
                }
            }
            check_access(st, s, inode, &cred, mask)?;
            let keep_cache = st
                .rt
                .watches
                .may_keep_pages(inode, s.id, &st.rt.data_changes);
            grant_open(st, s, inode, mask);
            st.rt.watches.opened(inode, s.id);
            done(ClReply::Opened {
                attr: attr(st, inode)?,
                keep_cache,
                first_chunk: None,
            })
        }
        ClRequest::Release { inode } => {
            // The mount sends one Release when its last handle on the inode closes: every
            // open of this session on it ends, and so do its write leases of the file.
            let chunks = &st.meta.chunks;
            st.rt.write_locks.retain(|id, l| {
                l.session != s.id || chunks.get(id).is_none_or(|c| c.inode != inode)
            });
            let Some(rec) = s.open.lock().remove(&inode) else {
                return done(ClReply::Done);
            };
            st.rt.watches.closed(inode, s.id, st.meta.version);
            let left = st.rt.open.get_mut(&inode).map(|c| {
                *c = c.saturating_sub(rec.count);
                *c
            });
            if left == Some(0) {
                st.rt.open.remove(&inode);
                if st.is_orphan(inode) {
                    let (_, v) = m.commit(st, Op::Purge { inode })?;
                    return Ok((ClReply::Done, Some(v)));
                }
            }
            done(ClReply::Done)
        }
        ClRequest::WriteChunkEnd {
            inode,
            index,
            chunk_id,
            length,
            ok,
            keep,
            ..
        } => {
            // Only the writer holding the chunk's lock ends it, for the file and slot the
            // chunk belongs to; anything else changes nothing.
            writable(s)?;
            // A lock that timed out (a very slow write) still lets its writer end the write
            // when nobody else took the chunk meanwhile.
            let holds = match st.rt.write_locks.get(&chunk_id) {
                Some(l) => l.session == s.id,
                None => s.open.lock().get(&inode).is_some_and(|r| r.grant & W != 0),
            };
            let belongs = st
                .meta
                .chunks
                .get(&chunk_id)
                .is_some_and(|c| c.inode == inode && c.index == index);
            if !holds || !belongs {
                tracing::warn!(
                    "session {} from {}: end of a write of chunk {chunk_id:016X} (inode {inode}, \
                     index {index}) it does not hold; refused",
                    s.id,
                    s.ip
                );
                return Err(FsError::Perm);
            }
            if keep && ok {
                // The writer goes on under the same lease: the lock stays (and counts as
                // fresh, see health's LOCK_TIMEOUT), the version does not change.
                lock_chunk(st, chunk_id, s.id);
            } else {
                st.rt.write_locks.remove(&chunk_id);
            }
            if !ok {
                return done(ClReply::Attr(attr(st, inode)?));
            }
            if length > MAX_FILE_SIZE {
                return Err(FsError::TooBig);
            }
            let op = Op::WriteEnd {
                inode,
                length,
                time: now,
            };
            let (_, v) = m.commit_by(st, op, Some(s.id))?;
            Ok((ClReply::Attr(attr(st, inode)?), Some(v)))
        }
        ClRequest::GetXattr { .. }
        | ClRequest::SetXattr { .. }
        | ClRequest::ListXattr { .. }
        | ClRequest::RemoveXattr { .. } => xattr::apply(m, st, s, req, now),
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
            st.node(inode)?;
            let op = Op::SetGoal {
                inode,
                goal,
                recursive,
                uid: cred.uid,
                time: now,
            };
            match m.commit(st, op)? {
                (
                    Applied::GoalCounts {
                        changed,
                        unchanged,
                        not_permitted,
                    },
                    v,
                ) => Ok((
                    ClReply::GoalSet(SetGoalReply {
                        changed,
                        unchanged,
                        not_permitted,
                    }),
                    Some(v),
                )),
                (_, v) => Ok((ClReply::Done, Some(v))),
            }
        }
        ClRequest::GetGoal { inode } => done(ClReply::Goal(st.node(inode)?.goal)),
        _ => Err(FsError::Inval),
    }
}

fn read_dir(st: &State, inode: Inode, cookie: u64, max: u32) -> FsResult<ClReply> {
    let dir = st.dir(inode)?;
    let max = max.clamp(1, 10_000) as usize;
    let mut entries = Vec::with_capacity(max.min(dir.len()));
    let mut iter = dir.entries_after(cookie);
    for (edge, name, child) in iter.by_ref() {
        let Ok(node) = st.node(child) else { continue };
        entries.push(DirEntry {
            name: name.to_vec(),
            attr: node.attr(child),
            cookie: edge,
        });
        if entries.len() >= max {
            break;
        }
    }
    let eof = iter.next().is_none();
    Ok(ClReply::Dir { entries, eof })
}

/// The access (R, W) that open flags ask for.
fn access_asked(flags: i32) -> u32 {
    let mask = match flags & O_ACCMODE {
        O_WRONLY => W,
        O_RDWR => R | W,
        _ => R,
    };
    if flags & O_TRUNC != 0 {
        mask | W
    } else {
        mask
    }
}

/// Counts an open of `inode` by session `s` and grants it `mask` (R, W) for later requests.
pub(super) fn grant_open(st: &mut State, s: &Session, inode: Inode, mask: u32) {
    *st.rt.open.entry(inode).or_default() += 1;
    let mut open = s.open.lock();
    let rec = open.entry(inode).or_default();
    rec.count += 1;
    rec.grant |= mask & (R | W);
}

#[allow(clippy::too_many_arguments)]
fn create(
    m: &Master,
    st: &mut State,
    s: &Session,
    parent: Inode,
    name: Vec<u8>,
    kind: FileKind,
    mode: u16,
    rdev: u32,
    cred: Cred,
    now: Timespec,
) -> FsResult<Outcome> {
    let inode = st.meta.next_inode;
    create_as(
        m,
        st,
        s,
        (parent, name),
        inode,
        (kind, mode, rdev),
        cred,
        now,
    )
}

/// Sets `count` inode numbers aside for session `s` (see [`ClRequest::ReserveInodes`]). They
/// are never handed out again: the changelog records that `next_inode` moved past them.
pub fn reserve_inodes(m: &Master, s: &Session, count: u32) -> FsResult<Outcome> {
    writable(s)?;
    let count = count.min(moose_proto::msg::MAX_RESERVED_INODES);
    let mut st = m.state();
    let first = st.meta.next_inode;
    let quotas = !st.meta.quotas.is_empty();
    let reply = ClReply::Inodes {
        first,
        count,
        quotas,
    };
    if count == 0 {
        return Ok((reply, None));
    }
    let upto = first + u64::from(count);
    let (_, v) = m.commit_by(&mut st, Op::ReserveInodes { upto }, Some(s.id))?;
    s.reserved.lock().add(first, u64::from(count));
    Ok((reply, Some(v)))
}

/// [`create`] with inode number `inode` (the next one, or one the session reserved).
#[allow(clippy::too_many_arguments)]
fn create_as(
    m: &Master,
    st: &mut State,
    s: &Session,
    (parent, name): (Inode, Vec<u8>),
    inode: Inode,
    (kind, mode, rdev): (FileKind, u16, u32),
    cred: Cred,
    now: Timespec,
) -> FsResult<Outcome> {
    writable(s)?;
    check_name(&name)?;
    if kind == FileKind::Symlink {
        return Err(FsError::Inval);
    }
    check_access(st, s, parent, &cred, W | X)?;
    let p = st.node(parent)?;
    let (mode, gid) = cred.new_mode_and_group(kind, mode, p.mode, p.gid);
    let op = Op::Create {
        parent,
        name,
        inode,
        kind,
        mode,
        uid: cred.uid,
        gid,
        rdev,
        time: now,
    };
    let (_, v) = m.commit_by(st, op, Some(s.id))?;
    if kind == FileKind::Dir {
        // The mount knows the new folder whole (empty): it answers lookups in it.
        st.rt.watches.watch(inode, s.id);
    }
    Ok((ClReply::Attr(attr(st, inode)?), Some(v)))
}

fn resolve_time(t: TimeSet, now: Timespec) -> Timespec {
    match t {
        TimeSet::Now => now,
        TimeSet::At(t) => t,
    }
}

/// Checks a size change before the chunks are touched.
pub fn check_truncate(
    m: &Master,
    s: &Session,
    inode: Inode,
    size: u64,
    cred: &Cred,
) -> FsResult<()> {
    writable(s)?;
    let st = m.state();
    let node = st.node(inode)?;
    if node.is_dir() {
        return Err(FsError::IsDir);
    }
    if node.kind != FileKind::File {
        return Err(FsError::Inval);
    }
    // A handle this session opened for writing may truncate whatever the mode says now.
    let opened_for_writing = s.open.lock().get(&inode).is_some_and(|r| r.grant & W != 0);
    if !opened_for_writing {
        check_access(&st, s, inode, cred, W)?;
    }
    if size > MAX_FILE_SIZE {
        return Err(FsError::TooBig);
    }
    Ok(())
}

/// Changes mode, owner and times (the size is handled before, in `data::truncate`).
pub fn set_attributes(
    m: &Master,
    s: &Session,
    inode: Inode,
    set: &SetAttrs,
    cred: &Cred,
    now: Timespec,
) -> FsResult<(Attr, Option<u64>)> {
    writable(s)?;
    let mut st = m.state();
    let st = &mut *st;
    let node = st.node(inode)?;
    let mut mode = check_owner_change(node, cred, set.mode, set.uid, set.gid, s.ignoregid)?;
    let resized = set.size.is_some();
    // A truncation by anyone but root drops the set-ID bits, as a write does (the mount
    // leaves that to the file system: `FUSE_HANDLE_KILLPRIV_V2`).
    if resized && cred.uid != 0 && mode.is_none() && node.kind == FileKind::File {
        let killed = moose_proto::mode_after_write(node.mode);
        mode = (killed != node.mode).then_some(killed);
    }
    check_times(node, cred, set.atime, set.mtime, resized, s.ignoregid)?;
    let nothing = mode.is_none()
        && set.uid.is_none()
        && set.gid.is_none()
        && set.atime.is_none()
        && set.mtime.is_none();
    if nothing {
        return Ok((attr(st, inode)?, None));
    }
    let op = Op::SetAttr {
        inode,
        mode,
        uid: set.uid,
        gid: set.gid,
        atime: set.atime.map(|t| resolve_time(t, now)),
        mtime: set.mtime.map(|t| resolve_time(t, now)),
        time: now,
    };
    let (_, v) = m.commit(st, op)?;
    Ok((attr(st, inode)?, Some(v)))
}
