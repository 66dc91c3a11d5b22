//! Changes this mount answers before the master does: the request goes out at once, the
//! kernel gets its answer, and the master's answer is checked when it comes.
//!
//! Only a change whose outcome the mount already knows is answered ahead: the kernel checked
//! the caller's permissions (the mount runs with `default_permissions`) and the master checks
//! the same ids (no `maproot` or `mapall` of the export applies to the caller), and the mount
//! knows what the change acts on (a name of a folder it knows whole, a file whose attributes
//! it holds). The master takes one connection's requests in order, so everything sent later
//! (a lookup, a create of the same name, an `fsync`, the `rmdir` of the folder) finds the
//! change made.
//!
//! Should the master refuse one all the same (another session changed the folder's mode a
//! moment before), the refusal is logged and what the mount kept about the folder is dropped,
//! so the name shows again on the next lookup. Mounting with `-o sync` or `-o dirsync` makes
//! every change wait for the master's answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use moose_proto::msg::RegisterReply;
use moose_proto::{Attr, Cred, FileKind, Inode, SetAttrs, TimeSet, Timespec};

/// Changes answered ahead whose answers from the master are not in yet, at most; past this,
/// changes wait for their answers again.
const MAX_AHEAD: usize = 1024;

/// Counts the changes answered ahead.
pub struct Ahead {
    enabled: bool,
    unanswered: Arc<AtomicUsize>,
}

/// One change answered ahead; dropped when the master's answer is in.
pub struct Slot {
    unanswered: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.unanswered.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Ahead {
    /// `enabled` is false for mounts whose changes must wait (`sync`, `dirsync`).
    pub fn new(enabled: bool) -> Ahead {
        Ahead {
            enabled,
            unanswered: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A slot for a change by `uid` to answer ahead, if the session's checks are the
    /// kernel's and there is room.
    pub fn slot(&self, session: &RegisterReply, uid: u32) -> Option<Slot> {
        if !self.enabled || session.read_only || session.maps(uid) {
            return None;
        }
        self.unanswered
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_AHEAD).then_some(n + 1)
            })
            .ok()?;
        Some(Slot {
            unanswered: self.unanswered.clone(),
        })
    }
}

/// The attributes the master gives a regular file it makes as `inode` in folder `parent`
/// for `cred` at `now`, with `mode` and `umask` as the kernel asked (see
/// [`Cred::new_mode_and_group`]).
pub fn new_file_attr(
    parent: &Attr,
    inode: Inode,
    (mode, umask): (u16, u16),
    cred: &Cred,
    now: Timespec,
) -> Attr {
    let (mode, gid) =
        cred.new_mode_and_group(FileKind::File, mode & !umask, parent.mode, parent.gid);
    Attr {
        inode,
        kind: FileKind::File,
        mode,
        uid: cred.uid,
        gid,
        atime: now,
        mtime: now,
        ctime: now,
        nlink: 1,
        size: 0,
        rdev: 0,
        goal: parent.goal,
        xattrs: false,
    }
}

/// Whether the master will make the change `set` of a file with attributes `a` for `cred`
/// exactly as asked (the kernel checked the permissions): any change by root, and new times
/// by the owner. Other callers' changes of mode or owner may have set-id bits cleared by the
/// master's rules, and wait for its answer.
pub fn may_set(a: &Attr, set: &SetAttrs, cred: &Cred) -> bool {
    let ids_or_mode = set.mode.is_some() || set.uid.is_some() || set.gid.is_some();
    a.kind == FileKind::File
        && set.size.is_none()
        && (cred.uid == 0 || (!ids_or_mode && cred.uid == a.uid))
}

/// `set` with "now" made the time `now`, so that the master keeps the times the kernel was
/// told.
pub fn pinned(set: SetAttrs, now: Timespec) -> SetAttrs {
    let at = |t: TimeSet| match t {
        TimeSet::Now => TimeSet::At(now),
        t => t,
    };
    SetAttrs {
        atime: set.atime.map(at),
        mtime: set.mtime.map(at),
        ..set
    }
}

/// `a` after the change `set` (see [`pinned`]) made by `cred` at `now`. A new owner or group
/// drops set-ID bits as the master's rules do ([`Cred::mode_after_chown`]).
pub fn changed_attr(mut a: Attr, set: &SetAttrs, cred: &Cred, now: Timespec) -> Attr {
    let at = |t: TimeSet| match t {
        TimeSet::Now => now,
        TimeSet::At(t) => t,
    };
    if let Some(m) = set.mode {
        a.mode = m & 0o7777;
    } else if (set.uid.is_some() || set.gid.is_some()) && a.kind != FileKind::Dir {
        a.mode = cred.mode_after_chown(a.mode, a.gid);
    }
    a.uid = set.uid.unwrap_or(a.uid);
    a.gid = set.gid.unwrap_or(a.gid);
    a.atime = set.atime.map_or(a.atime, at);
    a.mtime = set.mtime.map_or(a.mtime, at);
    a.ctime = now;
    a
}

/// The master's attributes `a` are those the mount told the kernel, but for the change time
/// (the master's clock).
pub fn same_but_ctime(a: &Attr, told: &Attr) -> bool {
    Attr {
        ctime: told.ctime,
        ..a.clone()
    } == *told
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_changes_anything_of_a_file_and_the_owner_only_its_times() {
        let mut file = crate::folders::tests::folder(9, 1);
        file.kind = FileKind::File;
        file.uid = 1000;
        let times = SetAttrs {
            mtime: Some(TimeSet::Now),
            ..SetAttrs::default()
        };
        let chown = SetAttrs {
            uid: Some(0),
            gid: Some(0),
            ..SetAttrs::default()
        };
        let user = |uid| Cred {
            uid,
            gid: uid,
            groups: vec![],
        };
        assert!(may_set(&file, &chown, &user(0)));
        assert!(may_set(&file, &times, &user(1000)));
        assert!(!may_set(&file, &times, &user(1001)), "not the owner");
        assert!(!may_set(&file, &chown, &user(1000)), "set-id rules");
        let resize = SetAttrs {
            size: Some(0),
            ..SetAttrs::default()
        };
        assert!(!may_set(&file, &resize, &user(0)));
        let folder = crate::folders::tests::folder(5, 2);
        assert!(
            !may_set(&folder, &chown, &user(0)),
            "folders are kept elsewhere"
        );

        let now = Timespec { sec: 50, nsec: 5 };
        let set = SetAttrs {
            mode: Some(0o104755),
            gid: Some(7),
            atime: Some(TimeSet::At(Timespec { sec: 1, nsec: 0 })),
            ..SetAttrs::default()
        };
        let after = changed_attr(file.clone(), &set, &user(0), now);
        assert_eq!((after.mode, after.uid, after.gid), (0o4755, 1000, 7));
        // Root's chown with no mode drops the set-ID bits, as the master does.
        let setid = changed_attr(after.clone(), &chown, &user(0), now);
        assert_eq!(setid.mode, 0o755);
        assert_eq!(
            (after.atime.sec, after.mtime, after.ctime),
            (1, file.mtime, now)
        );
        let mut master = after.clone();
        master.ctime = Timespec { sec: 51, nsec: 0 };
        assert!(same_but_ctime(&master, &after));
        master.mode = 0o755;
        assert!(!same_but_ctime(&master, &after));
    }

    #[test]
    fn a_new_file_takes_the_group_of_a_set_group_id_folder() {
        let mut parent = crate::folders::tests::folder(5, 2);
        parent.gid = 50;
        parent.goal = 3;
        let cred = Cred {
            uid: 1000,
            gid: 100,
            groups: vec![],
        };
        let now = Timespec { sec: 7, nsec: 1 };
        let a = new_file_attr(&parent, 9, (0o2775, 0o022), &cred, now);
        assert_eq!(
            (a.inode, a.mode, a.uid, a.gid, a.goal),
            (9, 0o2755, 1000, 100, 3)
        );
        assert_eq!((a.mtime, a.ctime, a.nlink, a.size), (now, now, 1, 0));
        parent.mode |= 0o2000;
        let a = new_file_attr(&parent, 9, (0o2775, 0o022), &cred, now);
        assert_eq!(
            (a.gid, a.mode),
            (50, 0o755),
            "not in the folder's group: no set-gid bit"
        );
        let member = Cred {
            groups: vec![50],
            ..cred
        };
        let a = new_file_attr(&parent, 9, (0o2775, 0), &member, now);
        assert_eq!((a.gid, a.mode), (50, 0o2775));
    }

    fn session(maps_root: bool, maps_all: bool) -> RegisterReply {
        RegisterReply {
            session_id: 1,
            root_inode: 1,
            read_only: false,
            cluster_id: 1,
            params: String::new(),
            session_key: Vec::new(),
            resumed: false,
            maps_root,
            maps_all,
        }
    }

    #[test]
    fn only_callers_the_master_checks_as_the_kernel_get_a_slot() {
        let ahead = Ahead::new(true);
        assert!(ahead.slot(&session(false, false), 0).is_some());
        assert!(ahead.slot(&session(true, false), 0).is_none());
        assert!(ahead.slot(&session(true, false), 1000).is_some());
        assert!(ahead.slot(&session(false, true), 1000).is_none());
        let mut ro = session(false, false);
        ro.read_only = true;
        assert!(ahead.slot(&ro, 1000).is_none());
        assert!(Ahead::new(false).slot(&session(false, false), 0).is_none());
    }

    #[test]
    fn slots_are_bounded_and_come_back_with_the_answers() {
        let ahead = Ahead::new(true);
        let s = session(false, false);
        let held: Vec<Slot> = (0..MAX_AHEAD).map_while(|_| ahead.slot(&s, 1)).collect();
        assert_eq!(held.len(), MAX_AHEAD);
        assert!(ahead.slot(&s, 1).is_none());
        drop(held);
        assert!(ahead.slot(&s, 1).is_some());
    }
}
