//! Permission checks from mode bits, done by the master for every client request (the mount
//! also asks the kernel to check, but the master is the authority).

use moose_proto::{Cred, FileKind, FsError, FsResult, TimeSet};

use crate::namespace::Node;

pub const R: u32 = 4;
pub const W: u32 = 2;
pub const X: u32 = 1;

/// True when `cred` may access `node` for every bit of `mask` (R, W, X).
pub fn may(node: &Node, cred: &Cred, mask: u32, ignoregid: bool) -> bool {
    if cred.uid == 0 {
        // Root may read and write anything, and execute anything executable by someone.
        return mask & X == 0 || node.is_dir() || node.mode & 0o111 != 0;
    }
    let mode = node.mode as u32;
    let bits = if cred.uid == node.uid {
        (mode >> 6) & 7
    } else if ignoregid || cred.in_group(node.gid) {
        (mode >> 3) & 7
    } else {
        mode & 7
    };
    bits & mask == mask
}

/// The sticky-bit rule: in a sticky folder only the owner of the entry or of the folder (or
/// root) may remove or rename it.
pub fn sticky_allows(dir: &Node, entry: &Node, cred: &Cred) -> bool {
    dir.mode & 0o1000 == 0 || cred.uid == 0 || cred.uid == dir.uid || cred.uid == entry.uid
}

/// True when `new` is `old` with some of its set-user-ID and set-group-ID bits cleared and
/// nothing else changed.
///
/// After a write by a user who may write a file but does not own it, the bits are dropped
/// as a mode change of that user: the mount sends it (`FUSE_WRITE_KILL_SUIDGID`), as the
/// kernel does for a FUSE file system that leaves it to the kernel.
pub fn clears_setid_only(old: u16, new: u16) -> bool {
    const SETID: u16 = 0o6000;
    new != old && new & !old == 0 && (old & !new) & !SETID == 0
}

/// Checks a change of mode, owner or group by `cred` and returns the mode to set: the one
/// asked, without a set-group-ID bit for a group the caller is not in, or, when the owner or
/// group of a non-folder is set, the current mode without the set-ID bits that drops (see
/// [`Cred::mode_after_chown`]).
///
/// The owner (or root) may change the mode; anyone who may write a regular file may clear its
/// set-ID bits (see [`clears_setid_only`]). Only root gives a file away; the owner may give it
/// to a group it belongs to (or leave the group as it is), as `chown_ok` and `chgrp_ok` in
/// Linux do.
pub fn check_owner_change(
    node: &Node,
    cred: &Cred,
    mode: Option<u16>,
    uid: Option<u32>,
    gid: Option<u32>,
    ignoregid: bool,
) -> FsResult<Option<u16>> {
    let root = cred.uid == 0;
    let owner = root || cred.uid == node.uid;
    let mut mode = mode.map(|m| m & 0o7777);
    if let Some(m) = mode.as_mut() {
        let kills_setid = node.kind == FileKind::File && clears_setid_only(node.mode, *m);
        let allowed = owner || (kills_setid && may(node, cred, W, ignoregid));
        if !allowed {
            return Err(FsError::Perm);
        }
        let keeps_foreign_sgid = *m & 0o2000 != 0 && !cred.in_group(gid.unwrap_or(node.gid));
        if !root && !kills_setid && node.kind != FileKind::Dir && keeps_foreign_sgid {
            *m &= !0o2000;
        }
    }
    if let Some(u) = uid {
        if !root && (cred.uid != node.uid || u != node.uid) {
            return Err(FsError::Perm);
        }
    }
    if let Some(g) = gid {
        if !root && (cred.uid != node.uid || (g != node.gid && !cred.in_group(g))) {
            return Err(FsError::Perm);
        }
    }
    // As Linux's `chown` (any call, even to the ids the file has): the mount leaves the
    // set-ID bits to the file system (`FUSE_HANDLE_KILLPRIV_V2`).
    if (uid.is_some() || gid.is_some()) && mode.is_none() && node.kind != FileKind::Dir {
        let killed = cred.mode_after_chown(node.mode, node.gid);
        mode = (killed != node.mode).then_some(killed);
    }
    Ok(mode)
}

/// Checks a change of the access and modification times by `cred`. Setting given times is
/// for the owner (or root). Whoever may write the file may set both to the current time
/// (`utimensat` with `UTIME_NOW` twice, or no times), and the modification time that comes
/// with a size change; setting only one of them to the current time is the owner's, as in
/// Linux (`ATTR_TIMES_SET`).
pub fn check_times(
    node: &Node,
    cred: &Cred,
    atime: Option<TimeSet>,
    mtime: Option<TimeSet>,
    resized: bool,
    ignoregid: bool,
) -> FsResult<()> {
    if (atime.is_none() && mtime.is_none()) || cred.uid == 0 || cred.uid == node.uid {
        return Ok(());
    }
    let all_now = [atime, mtime]
        .into_iter()
        .flatten()
        .all(|t| t == TimeSet::Now);
    let touch = all_now && (resized || (atime.is_some() && mtime.is_some()));
    if !touch {
        Err(FsError::Perm)
    } else if may(node, cred, W, ignoregid) {
        Ok(())
    } else {
        Err(FsError::Access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::NodeData;
    use moose_proto::{FileKind, Timespec};

    fn file(mode: u16, uid: u32, gid: u32) -> Node {
        Node {
            kind: FileKind::File,
            mode,
            uid,
            gid,
            atime: Timespec::default().into(),
            mtime: Timespec::default().into(),
            ctime: Timespec::default().into(),
            nlink: 1,
            goal: 1,
            trash_time: 0,
            xattrs: Default::default(),
            data: NodeData::File {
                length: 0,
                chunks: Default::default(),
            },
        }
    }

    fn cred(uid: u32, gid: u32, groups: Vec<u32>) -> Cred {
        Cred { uid, gid, groups }
    }

    #[test]
    fn owner_group_other() {
        let f = file(0o640, 10, 20);
        assert!(may(&f, &cred(10, 99, vec![]), R | W, false));
        assert!(may(&f, &cred(11, 20, vec![]), R, false));
        assert!(!may(&f, &cred(11, 20, vec![]), W, false));
        assert!(may(&f, &cred(11, 5, vec![20]), R, false));
        assert!(!may(&f, &cred(11, 5, vec![]), R, false));
        assert!(may(&f, &cred(11, 5, vec![]), R, true));
        // The owner class applies even when it grants less than others.
        let g = file(0o047, 10, 20);
        assert!(!may(&g, &cred(10, 20, vec![]), R, false));
    }

    #[test]
    fn setid_kill_is_recognised() {
        assert!(clears_setid_only(0o4777, 0o0777));
        assert!(clears_setid_only(0o6777, 0o0777));
        assert!(clears_setid_only(0o6755, 0o2755));
        assert!(!clears_setid_only(0o0777, 0o0777), "nothing cleared");
        assert!(!clears_setid_only(0o4777, 0o0775), "other bits changed");
        assert!(!clears_setid_only(0o4755, 0o6755), "a bit added");
    }

    #[test]
    fn writer_may_clear_setid_bits_of_a_file_it_does_not_own() {
        let nobody = cred(65534, 65534, vec![]);
        for (before, after) in [(0o4777, 0o777), (0o2777, 0o777), (0o6777, 0o777)] {
            let f = file(before, 0, 0);
            assert_eq!(
                check_owner_change(&f, &nobody, Some(after), None, None, false),
                Ok(Some(after))
            );
        }
        // Not without write access, and no other mode change.
        let ro = file(0o4755, 0, 0);
        assert_eq!(
            check_owner_change(&ro, &nobody, Some(0o755), None, None, false),
            Err(FsError::Perm)
        );
        let f = file(0o4777, 0, 0);
        assert_eq!(
            check_owner_change(&f, &nobody, Some(0o4777), None, None, false),
            Err(FsError::Perm)
        );
        assert_eq!(
            check_owner_change(&f, &nobody, Some(0o776), None, None, false),
            Err(FsError::Perm)
        );
    }

    #[test]
    fn chown_and_chgrp_rules() {
        let f = file(0o644, 10, 20);
        let owner = cred(10, 20, vec![30]);
        let other = cred(11, 20, vec![]);
        // Only root gives a file away; not even a no-op chown by someone else is allowed.
        assert_eq!(
            check_owner_change(&f, &owner, None, Some(11), None, false),
            Err(FsError::Perm)
        );
        assert_eq!(
            check_owner_change(&f, &owner, None, Some(10), None, false),
            Ok(None)
        );
        assert_eq!(
            check_owner_change(&f, &other, None, Some(10), None, false),
            Err(FsError::Perm)
        );
        // The owner picks one of its groups or keeps the current one.
        assert_eq!(
            check_owner_change(&f, &owner, None, None, Some(30), false),
            Ok(None)
        );
        assert_eq!(
            check_owner_change(&f, &owner, None, None, Some(20), false),
            Ok(None)
        );
        assert_eq!(
            check_owner_change(&f, &owner, None, None, Some(40), false),
            Err(FsError::Perm)
        );
        assert_eq!(
            check_owner_change(&f, &other, None, None, Some(20), false),
            Err(FsError::Perm)
        );
        // Any chown drops the set-user-ID bit and an executable set-group-ID bit, even to
        // the same ids; a set-group-ID bit without group execute stays for the group's members.
        let root = cred(0, 0, vec![]);
        let s = file(0o6755, 10, 20);
        assert_eq!(
            check_owner_change(&s, &owner, None, None, Some(30), false),
            Ok(Some(0o755))
        );
        assert_eq!(
            check_owner_change(&s, &root, None, Some(5), None, false),
            Ok(Some(0o755))
        );
        assert_eq!(
            check_owner_change(&s, &root, None, Some(10), Some(20), false),
            Ok(Some(0o755))
        );
        let locking = file(0o6745, 10, 20);
        assert_eq!(
            check_owner_change(&locking, &root, None, Some(5), None, false),
            Ok(Some(0o2745))
        );
        assert_eq!(
            check_owner_change(&locking, &cred(10, 99, vec![]), None, Some(10), None, false),
            Ok(Some(0o745))
        );
        // Folders keep theirs.
        let mut d = file(0o2775, 10, 20);
        d.kind = FileKind::Dir;
        assert_eq!(
            check_owner_change(&d, &root, None, Some(5), None, false),
            Ok(None)
        );
    }

    #[test]
    fn chmod_drops_sgid_for_a_foreign_group() {
        let f = file(0o644, 10, 20);
        let outsider = cred(10, 99, vec![]);
        assert_eq!(
            check_owner_change(&f, &outsider, Some(0o2755), None, None, false),
            Ok(Some(0o755))
        );
        let member = cred(10, 99, vec![20]);
        assert_eq!(
            check_owner_change(&f, &member, Some(0o2755), None, None, false),
            Ok(Some(0o2755))
        );
    }

    #[test]
    fn time_changes() {
        let now = Some(TimeSet::Now);
        let at = Some(TimeSet::At(Timespec { sec: 5, nsec: 0 }));
        let writable = file(0o666, 10, 20);
        let readonly = file(0o644, 10, 20);
        let other = cred(11, 21, vec![]);
        let owner = cred(10, 21, vec![]);
        assert_eq!(
            check_times(&writable, &other, now, now, false, false),
            Ok(())
        );
        assert_eq!(
            check_times(&readonly, &other, now, now, false, false),
            Err(FsError::Access)
        );
        assert_eq!(
            check_times(&writable, &other, now, None, false, false),
            Err(FsError::Perm),
            "UTIME_NOW with UTIME_OMIT is the owner's"
        );
        assert_eq!(
            check_times(&writable, &other, None, now, true, false),
            Ok(()),
            "truncation by a writer"
        );
        assert_eq!(
            check_times(&writable, &other, at, at, false, false),
            Err(FsError::Perm)
        );
        assert_eq!(
            check_times(&readonly, &owner, at, None, false, false),
            Ok(())
        );
    }

    #[test]
    fn root_needs_some_x_to_execute() {
        assert!(may(&file(0o000, 1, 1), &cred(0, 0, vec![]), R | W, false));
        assert!(!may(&file(0o644, 1, 1), &cred(0, 0, vec![]), X, false));
        assert!(may(&file(0o100, 1, 1), &cred(0, 0, vec![]), X, false));
    }
}
