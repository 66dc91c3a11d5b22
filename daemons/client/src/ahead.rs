//! Changes this mount answers before the master does: the request goes out at once, the
//! kernel gets its answer, and the master's answer is checked when it comes.
//!
//! Only a change whose outcome the mount already knows is answered ahead: the kernel checked
//! the caller's permissions (the mount runs with `default_permissions`) and the master checks
//! the same ids (no `maproot` or `mapall` of the export applies to the caller), and the mount
//! knows what the change acts on (a name of a folder it knows whole). The master takes one
//! connection's requests in order, so everything sent later (a lookup, a create of the same
//! name, an `fsync`, the `rmdir` of the folder) finds the change made.
//!
//! Should the master refuse one all the same (another session changed the folder's mode a
//! moment before), the refusal is logged and what the mount kept about the folder is dropped,
//! so the name shows again on the next lookup. Mounting with `-o sync` or `-o dirsync` makes
//! every change wait for the master's answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use moose_proto::msg::RegisterReply;

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

#[cfg(test)]
mod tests {
    use super::*;

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
