//! File system requests of a session: permission checks, then an [`crate::ops::Op`] committed
//! to the changelog, then the reply once the change is recorded (see CHANGELOG_SAVE_MODE).

mod data;
mod names;
mod quota;
mod share;
mod snapshot;
mod status;
mod trash;
mod xattr;

use moose_proto::msg::{ClReply, ClRequest, EndSync};
use moose_proto::{Attr, ChunkRef, Cred, FileKind, FsError, FsResult, Inode, Timespec, CHUNK_SIZE};
use std::sync::Arc;

pub use quota::clock_loop as quota_clock_loop;
pub use status::cluster_info;

use crate::access::may;
use crate::master::Master;
use crate::sessions::Session;
use crate::state::State;

/// Largest file: 2^31 chunks of 64 MiB.
const MAX_FILE_SIZE: u64 = CHUNK_SIZE << 31;

/// A reply, and the metadata version it must wait for (if it changed anything).
type Outcome = (ClReply, Option<u64>);

/// What to do with a request after its synchronous part.
pub enum Step {
    /// The answer is ready.
    Reply(FsResult<ClReply>),
    /// The answer is ready once metadata `version` is recorded in the changelog; `dirs` are
    /// the folders the request changed, as they are now.
    Recorded {
        reply: ClReply,
        version: u64,
        dirs: Vec<Attr>,
    },
    /// The answer is ready once metadata version `.1` is synced to disk.
    Synced(ClReply, u64),
    /// The request waits for chunkservers: run [`handle_async`] on a task.
    Later(ClRequest),
}

/// The inodes a request names.
fn named_inodes(req: &ClRequest) -> [Option<Inode>; 2] {
    use ClRequest::*;
    match req {
        Lookup { parent, .. }
        | MkNod { parent, .. }
        | Create { parent, .. }
        | MkDir { parent, .. }
        | Symlink { parent, .. }
        | Unlink { parent, .. }
        | RmDir { parent, .. } => [Some(*parent), None],
        Rename {
            parent, new_parent, ..
        } => [Some(*parent), Some(*new_parent)],
        Link {
            inode, new_parent, ..
        } => [Some(*inode), Some(*new_parent)],
        GetAttr { inode }
        | SetAttr { inode, .. }
        | Access { inode, .. }
        | ReadLink { inode }
        | ReadDir { inode, .. }
        | Open { inode, .. }
        | Release { inode }
        | ReadChunk { inode, .. }
        | WriteChunk { inode, .. }
        | WriteChunkEnd { inode, .. }
        | GetXattr { inode, .. }
        | SetXattr { inode, .. }
        | ListXattr { inode, .. }
        | RemoveXattr { inode, .. }
        | SetGoal { inode, .. }
        | GetGoal { inode }
        | FileInfo { inode }
        | SetTrashTime { inode, .. }
        | GetTrashTime { inode }
        | DirInfo { inode }
        | SetQuota { inode, .. }
        | GetQuota { inode, .. }
        | QuotaAllowance { inode }
        | StatfsAt { inode } => [Some(*inode), None],
        Snapshot { src, parent, .. } => [Some(*src), Some(*parent)],
        ShareChunks { src, dst, .. } => [Some(*src), Some(*dst)],
        // Meta sessions only; they name inodes in the trash.
        TrashList { .. } | TrashGet { .. } | TrashPurge { .. } | Undelete { .. } => [None, None],
        GetChallenge
        | Register(_)
        | Statfs
        | ReportBadCopy { .. }
        | ClusterInfo
        | Nop
        | CloseSession
        | SyncMetadata
        | ReserveInodes { .. } => [None, None],
    }
}

/// The inodes whose attributes a request may change, if they are folders.
fn touched_folders(req: &ClRequest) -> Vec<Inode> {
    use ClRequest::*;
    match req {
        MkNod { parent, .. }
        | Create { parent, .. }
        | MkDir { parent, .. }
        | Symlink { parent, .. }
        | Unlink { parent, .. }
        | RmDir { parent, .. } => vec![*parent],
        Rename {
            parent, new_parent, ..
        } => vec![*parent, *new_parent],
        Link { new_parent, .. }
        | Snapshot {
            parent: new_parent, ..
        } => vec![*new_parent],
        SetAttr { inode, .. }
        | SetXattr { inode, .. }
        | RemoveXattr { inode, .. }
        | SetGoal { inode, .. }
        | SetTrashTime { inode, .. } => vec![*inode],
        _ => Vec::new(),
    }
}

/// The attributes of those of `inodes` that are folders.
fn folder_attrs(m: &Master, inodes: &[Inode]) -> Vec<Attr> {
    if inodes.is_empty() {
        return Vec::new();
    }
    let st = m.state();
    inodes
        .iter()
        .filter_map(|&i| {
            st.meta
                .nodes
                .get(&i)
                .filter(|n| n.is_dir())
                .map(|n| n.attr(i))
        })
        .collect()
}

/// A subfolder session reaches only its folder: a folder must have the session's root among
/// its ancestors, any other inode must have been shown to the session (by a lookup, a
/// listing or a create). Anything else is answered as if it did not exist.
fn check_scope(m: &Master, s: &Session, req: &ClRequest) -> FsResult<()> {
    if s.root == moose_proto::ROOT_INODE {
        return Ok(());
    }
    let st = m.state();
    for inode in named_inodes(req).into_iter().flatten() {
        let inside = match st.meta.nodes.get(&inode) {
            None => true, // answered with ENOENT by the request itself
            Some(n) if n.is_dir() => st.is_ancestor(s.root, inode),
            Some(_) => s.known.lock().contains(&inode),
        };
        if !inside {
            crate::link::REFUSALS.warn(
                s.ip,
                &format!(
                    "session {} from {} (mounted folder inode {}) named inode {inode} outside its \
                     folder; refused",
                    s.id, s.ip, s.root
                ),
            );
            return Err(FsError::NoEnt);
        }
    }
    Ok(())
}

/// An open; one that may read a non-empty file also says where its first chunk lives, so
/// that a mount reads a small file without asking for that (a round trip less per file that
/// `cp`, `tar -c` or `git` reads).
fn open(
    m: &Master,
    s: &Session,
    inode: Inode,
    flags: i32,
    cred: Cred,
    now: Timespec,
) -> FsResult<Outcome> {
    let (reply, version) = names::apply(m, s, ClRequest::Open { inode, flags, cred }, now)?;
    let reply = match reply {
        // What a `ReadChunk` of the session would be answered, as the open granted reading.
        ClReply::Opened {
            attr, keep_cache, ..
        } if attr.kind == FileKind::File
            && attr.size > 0
            && granted(s, inode, crate::access::R) =>
        {
            let first_chunk = match data::read_chunk(m, inode, 0, data::Token::Read) {
                Ok(ClReply::Chunk(loc)) => Some(loc),
                _ => None,
            };
            ClReply::Opened {
                attr,
                keep_cache,
                first_chunk,
            }
        }
        other => other,
    };
    Ok((reply, version))
}

/// The session opened `inode` with `bit` (R or W) granted.
fn granted(s: &Session, inode: Inode, bit: u32) -> bool {
    s.open
        .lock()
        .get(&inode)
        .is_some_and(|r| r.grant & bit != 0)
}

fn not_granted(s: &Session, inode: Inode, what: &str) -> FsError {
    crate::link::REFUSALS.warn(
        s.ip,
        &format!(
            "session {} from {}: {what} of inode {inode} without opening it for that; refused",
            s.id, s.ip
        ),
    );
    FsError::Access
}

/// Answers what can be answered at once, under one hold of the state lock, without a task.
pub fn handle_now(m: &Master, s: &Session, req: ClRequest) -> Step {
    let now = Timespec::now();
    if s.meta {
        return trash::meta_request(m, s, req, now);
    }
    if let Err(e) = check_scope(m, s, &req) {
        return Step::Reply(Err(e));
    }
    let touched = touched_folders(&req);
    // An fsync's last write: answered once the changelog is on disk up to it; an
    // fdatasync's only when the file's data depends on a change not on disk yet.
    let end_sync = match req {
        ClRequest::WriteChunkEnd { inode, sync, .. } => Some((inode, sync)),
        _ => None,
    };
    let r = match req {
        ClRequest::WriteChunk { .. } => return Step::Later(req),
        ClRequest::SetAttr { ref set, .. } if set.size.is_some() => return Step::Later(req),
        ClRequest::SetAttr { inode, set, cred } => {
            let cred = map_cred(s, cred);
            names::set_attributes(m, s, inode, &set, &cred, now).map(|(a, v)| (ClReply::Attr(a), v))
        }
        ClRequest::Statfs => Ok((ClReply::Statfs(status::statfs(m)), None)),
        ClRequest::SyncMetadata => return Step::Synced(ClReply::Done, m.state().meta.version),
        ClRequest::FileInfo { inode } => {
            status::file_info(m, inode).map(|f| (ClReply::FileInfo(f), None))
        }
        ClRequest::DirInfo { inode } => snapshot::dir_info(m, inode),
        ClRequest::SetQuota { inode, quota, cred } => quota::set(m, s, inode, quota, cred),
        ClRequest::GetQuota { inode, under } => quota::get(m, inode, under),
        ClRequest::QuotaAllowance { inode } => quota::allowance(m, inode),
        ClRequest::ReserveInodes { count } => names::reserve_inodes(m, s, count),
        ClRequest::StatfsAt { inode } => quota::statfs_at(m, inode),
        ClRequest::Snapshot {
            src,
            parent,
            name,
            replace,
            cred,
        } => snapshot::make(m, s, src, parent, name, replace, cred, now),
        ClRequest::Open { inode, flags, cred } => open(m, s, inode, flags, cred, now),
        ClRequest::ShareChunks {
            src,
            src_offset,
            dst,
            dst_offset,
            len,
        } => {
            let asked = share::ShareAsked {
                src: (src, src_offset),
                dst: (dst, dst_offset),
                len,
            };
            share::share(m, s, asked, now)
        }
        ClRequest::ReadChunk { inode, index } => {
            if granted(s, inode, crate::access::R) {
                data::read_chunk(m, inode, index, data::Token::Read).map(|r| (r, None))
            } else if granted(s, inode, crate::access::W) {
                // A writer learns where its chunks are (an fsync after a server died checks
                // that the dead copy no longer counts; one after a truncation syncs the
                // chunk's new version), but gets nothing to read them with.
                data::read_chunk(m, inode, index, data::Token::Sync).map(|r| (r, None))
            } else {
                Err(not_granted(s, inode, "read"))
            }
        }
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
            Ok((ClReply::Done, None))
        }
        ClRequest::GetChallenge | ClRequest::Register(_) | ClRequest::ClusterInfo => {
            Err(FsError::Inval)
        }
        ClRequest::SetTrashTime { .. } | ClRequest::GetTrashTime { .. } => {
            trash::trash_time(m, s, req, now)
        }
        ClRequest::TrashList { .. }
        | ClRequest::TrashGet { .. }
        | ClRequest::TrashPurge { .. }
        | ClRequest::Undelete { .. } => Err(FsError::Perm),
        other => names::apply(m, s, other, now),
    };
    let durable = match end_sync {
        Some((_, EndSync::All)) => true,
        Some((inode, EndSync::Data)) => r.is_ok() && !m.data_synced(inode),
        Some((_, EndSync::Recorded)) | None => false,
    };
    match r {
        Ok((reply, Some(version))) if durable => Step::Synced(reply, version),
        Ok((reply, None)) if durable => Step::Synced(reply, m.state().meta.version),
        Ok((reply, Some(version))) => Step::Recorded {
            reply,
            version,
            dirs: folder_attrs(m, &touched),
        },
        Ok((reply, None)) => Step::Reply(Ok(reply)),
        Err(e) => Step::Reply(Err(e)),
    }
}

/// Requests that wait for chunkservers: write leases and size changes.
pub async fn handle_async(m: &Arc<Master>, s: &Session, req: ClRequest) -> FsResult<ClReply> {
    let now = Timespec::now();
    match req {
        ClRequest::WriteChunk { inode, index } => {
            writable(s)?;
            if !granted(s, inode, crate::access::W) {
                return Err(not_granted(s, inode, "write"));
            }
            data::write_chunk(m, s, inode, index)
                .await
                .map(ClReply::WriteLease)
        }
        ClRequest::SetAttr { inode, set, cred } => {
            let cred = map_cred(s, cred);
            if let Some(size) = set.size {
                names::check_truncate(m, s, inode, size, &cred)?;
                let v = data::truncate(m, s, inode, size, now).await?;
                m.recorded(v).await?;
            }
            let (a, v) = names::set_attributes(m, s, inode, &set, &cred, now)?;
            if let Some(v) = v {
                m.recorded(v).await?;
            }
            Ok(ClReply::Attr(a))
        }
        _ => Err(FsError::Inval),
    }
}

/// Applies the export's uid/gid mapping to what the client says: `maproot` for root,
/// `mapall` for everyone else.
fn map_cred(s: &Session, c: Cred) -> Cred {
    let mapped = |(uid, gid): (u32, u32)| Cred {
        uid,
        gid,
        groups: vec![],
    };
    if c.uid == 0 {
        match s.maproot {
            Some(ids) if s.maps_root() => mapped(ids),
            _ => c,
        }
    } else if let Some(ids) = s.mapall {
        mapped(ids)
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
        crate::link::REFUSALS.warn(
            s.ip,
            &format!(
                "session {} from {} is read-only: a change was refused",
                s.id, s.ip
            ),
        );
        Err(FsError::ReadOnly)
    } else {
        Ok(())
    }
}
