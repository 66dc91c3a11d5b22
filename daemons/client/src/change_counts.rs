//! Counts of the changes this mount sent to the master and of their answers, per object, so
//! that attributes learned from one answer are known to still hold while nothing that may
//! change them was sent or answered since.
//!
//! A change that names the objects it may touch (see [`Touches`]) counts for them alone:
//! four `touch` loops in four folders do not spoil each other's attributes. A change that
//! may touch objects it does not name (an unlink changes the link count of the file behind
//! the name) counts for every object. Objects share counters by a hash, which can only
//! make a mount ask the master more often, never keep stale attributes.

use std::sync::atomic::{AtomicU64, Ordering};

use moose_proto::msg::Touches;
use moose_proto::Inode;

/// Counters the objects' changes are spread over.
const COUNTERS: usize = 1024;

/// Where an object's changes stood at one moment: equal stamps of one object mean nothing
/// that may change its attributes was sent or answered between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    any: u64,
    own: u64,
}

pub struct ChangeCounts {
    /// Changes that may touch any object.
    any: AtomicU64,
    /// Changes that touch only the objects they name, by a hash of the object.
    own: Box<[AtomicU64]>,
}

impl Default for ChangeCounts {
    fn default() -> Self {
        ChangeCounts {
            any: AtomicU64::new(0),
            own: (0..COUNTERS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl ChangeCounts {
    fn counter(&self, inode: Inode) -> &AtomicU64 {
        &self.own[(inode as usize) % COUNTERS]
    }

    /// Counts the sending or the answer of a request that touches `touches`.
    pub fn count(&self, touches: Touches) {
        match touches {
            Touches::Nothing => {}
            Touches::Any => {
                self.any.fetch_add(1, Ordering::SeqCst);
            }
            Touches::Only(a, b) => {
                self.counter(a).fetch_add(1, Ordering::SeqCst);
                if !std::ptr::eq(self.counter(a), self.counter(b)) {
                    self.counter(b).fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// Where the changes of `inode` stand now.
    pub fn stamp(&self, inode: Inode) -> Stamp {
        Stamp {
            any: self.any.load(Ordering::SeqCst),
            own: self.counter(inode).load(Ordering::SeqCst),
        }
    }

    /// For the answer to one change of `inode` (one that names it) sent at `before`: the
    /// stamp its attributes hold at, if nothing but that change was sent or answered since
    /// (its sending and its answer count one each).
    pub fn alone_since(&self, inode: Inode, before: Stamp) -> Option<Stamp> {
        self.moved_by(inode, before, 2)
    }

    /// For a change of `inode` answered ahead (counted when sent, not when answered) and
    /// sent at `before`: the stamp the attributes it was answered with hold at, if nothing
    /// else was sent since.
    pub fn sent_alone_since(&self, inode: Inode, before: Stamp) -> Option<Stamp> {
        self.moved_by(inode, before, 1)
    }

    /// For the answer to a change that made `inode` and did not name it (a create the
    /// master numbered), sent when the changes of any object stood at `before`: the stamp
    /// its attributes hold at, if no change of any object was sent or answered since. Nothing
    /// could name the object before it existed.
    pub fn new_object_since(&self, inode: Inode, before: Stamp) -> Option<Stamp> {
        let now = self.stamp(inode);
        (now.any == before.any).then_some(now)
    }

    fn moved_by(&self, inode: Inode, before: Stamp, by: u64) -> Option<Stamp> {
        let now = self.stamp(inode);
        (now.any == before.any && now.own == before.own + by).then_some(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_and_its_answer_leave_the_attributes_they_brought_current() {
        let c = ChangeCounts::default();
        let before = c.stamp(7);
        c.count(Touches::Only(7, 7));
        c.count(Touches::Only(7, 7));
        let held = c.alone_since(7, before).expect("nothing else happened");
        assert_eq!(held, c.stamp(7));
    }

    #[test]
    fn changes_of_other_objects_do_not_spoil_an_answer() {
        let c = ChangeCounts::default();
        let before = c.stamp(7);
        c.count(Touches::Only(7, 7));
        c.count(Touches::Only(8, 9));
        c.count(Touches::Only(8, 9));
        c.count(Touches::Only(7, 7));
        let held = c.alone_since(7, before).expect("8 and 9 are other objects");
        c.count(Touches::Only(8, 8));
        assert_eq!(c.stamp(7), held);
    }

    #[test]
    fn a_second_change_of_the_object_or_one_of_any_object_spoils_it() {
        let c = ChangeCounts::default();
        let before = c.stamp(7);
        c.count(Touches::Only(3, 7));
        c.count(Touches::Only(7, 7));
        c.count(Touches::Only(7, 7));
        assert_eq!(c.alone_since(7, before), None);

        let before = c.stamp(7);
        c.count(Touches::Only(7, 7));
        c.count(Touches::Any);
        c.count(Touches::Only(7, 7));
        assert_eq!(c.alone_since(7, before), None);

        let held = c.stamp(7);
        c.count(Touches::Any);
        assert_ne!(c.stamp(7), held);
    }

    #[test]
    fn a_change_answered_ahead_counts_once() {
        let c = ChangeCounts::default();
        let before = c.stamp(12);
        c.count(Touches::Only(4, 12));
        assert_eq!(c.sent_alone_since(12, before), Some(c.stamp(12)));
        c.count(Touches::Only(12, 12));
        assert_eq!(c.sent_alone_since(12, before), None);
    }

    #[test]
    fn objects_that_share_a_counter_count_once_per_change() {
        let c = ChangeCounts::default();
        let (a, b) = (5, 5 + COUNTERS as Inode);
        let before = c.stamp(b);
        c.count(Touches::Only(a, b));
        assert_eq!(c.sent_alone_since(b, before), Some(c.stamp(b)));
        // Sharing a counter only makes the mount ask again.
        let held = c.stamp(a);
        c.count(Touches::Only(b, b));
        assert_ne!(c.stamp(a), held);
    }

    #[test]
    fn a_new_object_holds_while_no_change_of_any_object_came_between() {
        let c = ChangeCounts::default();
        let before = c.stamp(1);
        c.count(Touches::Only(1, 1));
        c.count(Touches::Only(1, 1));
        let held = c
            .new_object_since(40, before)
            .expect("only folder 1 changed");
        assert_eq!(held, c.stamp(40));
        let before = c.stamp(1);
        c.count(Touches::Any);
        assert_eq!(c.new_object_since(41, before), None);
    }
}
