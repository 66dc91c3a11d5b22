//! Trash requests: trash times of a mount's files, and everything a meta session (the trash
//! seen through `moose-mount -m` or `moose-tool undelete`) may ask.

use moose_proto::msg::{ClReply, ClRequest, SetGoalReply, TrashEntry};
use moose_proto::{FsError, FsResult, Inode, Timespec};

use super::{attr, data, map_cred, names, status, writable, Outcome, Step};
use crate::access::R;
use crate::master::Master;
use crate::ops::Op;
use crate::sessions::Session;
use crate::state::{Applied, State};

/// Largest page of a trash listing.
const MAX_LIST: usize = 10_000;

/// `SetTrashTime` and `GetTrashTime` of a normal session.
pub fn trash_time(m: &Master, s: &Session, req: ClRequest, now: Timespec) -> FsResult<Outcome> {
    let mut st = m.state();
    match req {
        ClRequest::GetTrashTime { inode } => {
            Ok((ClReply::TrashTime(st.node(inode)?.trash_time), None))
        }
        ClRequest::SetTrashTime {
            inode,
            trash_time,
            recursive,
            cred,
        } => {
            writable(s)?;
            let cred = map_cred(s, cred);
            st.node(inode)?;
            let op = Op::SetTrashTime {
                inode,
                trash_time,
                recursive,
                uid: cred.uid,
                time: now,
            };
            let (applied, v) = m.commit(&mut st, op)?;
            let reply = match applied {
                Applied::GoalCounts {
                    changed,
                    unchanged,
                    not_permitted,
                } => ClReply::TrashTimeSet(SetGoalReply {
                    changed,
                    unchanged,
                    not_permitted,
                }),
                _ => ClReply::Done,
            };
            Ok((reply, Some(v)))
        }
        _ => Err(FsError::Inval),
    }
}

fn entry(st: &State, inode: Inode) -> FsResult<TrashEntry> {
    let path = st.trash_path(inode).ok_or(FsError::NoEnt)?.to_vec();
    Ok(TrashEntry {
        attr: attr(st, inode)?,
        path,
        expires: st.trash_expiry(inode).unwrap_or_default(),
    })
}

fn in_trash(st: &State, inode: Inode) -> FsResult<()> {
    st.trash_path(inode).map(|_| ()).ok_or(FsError::NoEnt)
}

/// Everything a meta session asks. It reaches files in the trash only; reading one needs it
/// opened (for reading) first, as on a mount.
pub fn meta_request(m: &Master, s: &Session, req: ClRequest, now: Timespec) -> Step {
    let r = match req {
        ClRequest::SyncMetadata => return Step::Synced(ClReply::Done, m.state().meta.version),
        ClRequest::Statfs => Ok((ClReply::Statfs(status::statfs(m)), None)),
        ClRequest::GetAttr { inode } | ClRequest::TrashGet { inode } => {
            let st = m.state();
            entry(&st, inode).map(|e| match req {
                ClRequest::GetAttr { .. } => (ClReply::Attr(e.attr), None),
                _ => (ClReply::TrashEntry(e), None),
            })
        }
        ClRequest::TrashList { bucket, after, max } => {
            let st = m.state();
            let max = (max as usize).clamp(1, MAX_LIST);
            let (inodes, eof) = st.trash_page(bucket, after, max);
            let entries = inodes
                .into_iter()
                .filter_map(|i| entry(&st, i).ok())
                .collect();
            Ok((ClReply::Trash { entries, eof }, None))
        }
        ClRequest::Open { inode, flags, .. } => {
            let mut st = m.state();
            match in_trash(&st, inode) {
                // Files in the trash are read-only.
                Ok(()) if flags & 3 != 0 || flags & 0o1000 != 0 => Err(FsError::Access),
                Ok(()) => {
                    names::grant_open(&mut st, s, inode, R);
                    attr(&st, inode).map(|a| (ClReply::Attr(a), None))
                }
                Err(e) => Err(e),
            }
        }
        ClRequest::Release { .. } => names::apply(m, s, req, now),
        ClRequest::ReadChunk { inode, index } => {
            if super::granted(s, inode, R) {
                data::read_chunk(m, inode, index, data::Token::Read).map(|r| (r, None))
            } else {
                Err(super::not_granted(s, inode, "read"))
            }
        }
        ClRequest::TrashPurge { inode } => writable(s).and_then(|()| {
            let mut st = m.state();
            in_trash(&st, inode)?;
            let (_, v) = m.commit(&mut st, Op::TrashPurge { inode })?;
            Ok((ClReply::Done, Some(v)))
        }),
        ClRequest::Undelete { inode } => writable(s).and_then(|()| undelete(m, s, inode, now)),
        _ => Err(FsError::Perm),
    };
    match r {
        Ok((reply, Some(version))) => Step::Recorded {
            reply,
            version,
            dirs: Vec::new(),
        },
        Ok((reply, None)) => Step::Reply(Ok(reply)),
        Err(e) => Step::Reply(Err(e)),
    }
}

fn undelete(m: &Master, s: &Session, inode: Inode, now: Timespec) -> FsResult<Outcome> {
    let mut st = m.state();
    let needs = match st.undelete_needs(inode) {
        Ok(n) => n,
        Err(e) => {
            let path = st.trash_path(inode).map(String::from_utf8_lossy);
            if let Some(path) = path {
                tracing::info!(
                    "session {} from {}: undelete of inode {inode} refused: /{path}: {e}",
                    s.id,
                    s.ip
                );
            }
            return Err(e);
        }
    };
    let first = st.meta.next_inode;
    let new_dirs: Vec<Inode> = (first..first + needs as u64).collect();
    let (_, v) = m.commit(
        &mut st,
        Op::Undelete {
            inode,
            new_dirs,
            time: now,
        },
    )?;
    Ok((ClReply::Done, Some(v)))
}
