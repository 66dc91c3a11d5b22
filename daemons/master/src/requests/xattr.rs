//! Extended attributes: `user.*` follows the file's mode bits, `trusted.*` is root's,
//! `security.*` is readable by all and settable by the owner; POSIX ACLs are not supported.

use moose_proto::msg::{ClReply, ClRequest};
use moose_proto::{Cred, FileKind, FsError, FsResult, Inode, Timespec, MAX_XATTR_VALUE};

use super::{check_access, map_cred, writable, Outcome};
use crate::access::{R, W};
use crate::master::Master;
use crate::ops::Op;
use crate::sessions::Session;
use crate::state::State;

const XATTR_CREATE: u32 = 1;
const XATTR_REPLACE: u32 = 2;

pub fn apply(
    m: &Master,
    st: &mut State,
    s: &Session,
    req: ClRequest,
    now: Timespec,
) -> FsResult<Outcome> {
    match req {
        ClRequest::GetXattr { inode, name, cred } => {
            let cred = map_cred(s, cred);
            check(st, s, inode, &name, &cred, false)?;
            let v = st.node(inode)?.xattrs.get(&name).ok_or(FsError::NoAttr)?;
            Ok((ClReply::Xattr(v.clone()), None))
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
            check(st, s, inode, &name, &cred, true)?;
            let exists = st.node(inode)?.xattrs.contains_key(&name);
            if flags & XATTR_CREATE != 0 && exists {
                return Err(FsError::AttrExists);
            }
            if flags & XATTR_REPLACE != 0 && !exists {
                return Err(FsError::NoAttr);
            }
            let op = Op::SetXattr {
                inode,
                name,
                value,
                time: now,
            };
            let (_, v) = m.commit(st, op)?;
            Ok((ClReply::Done, Some(v)))
        }
        ClRequest::ListXattr { inode, cred } => {
            let cred = map_cred(s, cred);
            let names = st
                .node(inode)?
                .xattrs
                .keys()
                .filter(|n| !n.starts_with(b"trusted.") || cred.uid == 0)
                .cloned()
                .collect();
            Ok((ClReply::XattrNames(names), None))
        }
        ClRequest::RemoveXattr { inode, name, cred } => {
            writable(s)?;
            let cred = map_cred(s, cred);
            check(st, s, inode, &name, &cred, true)?;
            let (_, v) = m.commit(
                st,
                Op::RemoveXattr {
                    inode,
                    name,
                    time: now,
                },
            )?;
            Ok((ClReply::Done, Some(v)))
        }
        _ => Err(FsError::Inval),
    }
}

fn check(
    st: &State,
    s: &Session,
    inode: Inode,
    name: &[u8],
    cred: &Cred,
    set: bool,
) -> FsResult<()> {
    let node = st.node(inode)?;
    if name.starts_with(b"system.posix_acl_") {
        return Err(FsError::NotSupported);
    }
    if name.starts_with(b"trusted.") {
        return if cred.uid == 0 {
            Ok(())
        } else {
            Err(FsError::Perm)
        };
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
