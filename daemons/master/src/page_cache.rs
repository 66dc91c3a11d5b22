//! Whether a mount may keep the kernel's pages of a file it opens again (stock's
//! `mfscachemode=AUTO`: the master decides). A mount writes through the kernel's page cache,
//! so after its own writes the pages are the file's data; they are only stale when another
//! session changed the data since. The master remembers, per session, the version at which
//! it last closed each file, and, for a bounded number of recent changes, the version at
//! which each file's data last changed; a file changed before the oldest change remembered
//! counts as changed. Files a session has open are kept fresh by notices instead (see
//! `watches.rs`).

use std::collections::{HashMap, VecDeque};

use moose_proto::Inode;

use crate::ops::Op;

/// Data changes remembered; older ones count as "changed after anything".
const MAX_CHANGES: usize = 65_536;
/// Closed files remembered per session; older ones open with a cold cache.
const MAX_CLOSED: usize = 16_384;

/// Whose data a change changes, for [`DataChanges`]. (Inode numbers are never reused, so a
/// new or removed file needs no entry.)
pub enum Written {
    /// The file's data (a write's end, a truncation): sessions that have it open hear of it.
    Data(Inode),
    /// Many files at once (a snapshot).
    Many,
}

pub fn written(op: &Op) -> Option<Written> {
    match op {
        Op::WriteEnd { inode, .. } | Op::SetLength { inode, .. } => Some(Written::Data(*inode)),
        Op::Snapshot { .. } => Some(Written::Many),
        _ => None,
    }
}

/// The latest version noted per inode, for the most recent `cap` notes.
#[derive(Debug)]
struct Latest {
    at: HashMap<Inode, u64>,
    /// Notes in the order they came (an inode may appear more than once).
    order: VecDeque<(u64, Inode)>,
    cap: usize,
}

impl Latest {
    fn new(cap: usize) -> Latest {
        Latest {
            at: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// Notes `version` for `inode`; returns the highest version of the notes that left.
    fn note(&mut self, inode: Inode, version: u64) -> Option<u64> {
        self.at.insert(inode, version);
        self.order.push_back((version, inode));
        let mut left = None;
        while self.order.len() > self.cap {
            let Some((v, i)) = self.order.pop_front() else {
                break;
            };
            if self.at.get(&i) == Some(&v) {
                self.at.remove(&i);
            }
            left = left.max(Some(v));
        }
        left
    }

    fn get(&self, inode: Inode) -> Option<u64> {
        self.at.get(&inode).copied()
    }

    fn clear(&mut self) {
        self.at.clear();
        self.order.clear();
    }
}

/// Recent changes of files' data (a write's end, a truncation).
#[derive(Debug)]
pub struct DataChanges {
    last: Latest,
    /// Every change forgotten was at or below this version.
    floor: u64,
}

impl Default for DataChanges {
    fn default() -> Self {
        DataChanges {
            last: Latest::new(MAX_CHANGES),
            floor: 0,
        }
    }
}

impl DataChanges {
    /// The data of `inode` changed at `version`.
    pub fn changed(&mut self, inode: Inode, version: u64) {
        if let Some(forgotten) = self.last.note(inode, version) {
            self.floor = self.floor.max(forgotten);
        }
    }

    /// Every file's data counts as changed at `version` (a snapshot: many files at once).
    pub fn all_changed(&mut self, version: u64) {
        self.last.clear();
        self.floor = version;
    }

    /// True when the data of `inode` did not change after `version`.
    pub fn unchanged_since(&self, inode: Inode, version: u64) -> bool {
        version >= self.floor && self.last.get(inode).is_none_or(|v| v <= version)
    }
}

/// The files one session closed, with the version at their last close.
#[derive(Debug)]
pub struct ClosedFiles(Latest);

impl Default for ClosedFiles {
    fn default() -> Self {
        ClosedFiles(Latest::new(MAX_CLOSED))
    }
}

impl ClosedFiles {
    pub fn closed(&mut self, inode: Inode, version: u64) {
        self.0.note(inode, version);
    }

    /// The version at which the session last closed `inode`, if remembered.
    pub fn last_close(&self, inode: Inode) -> Option<u64> {
        self.0.get(inode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_unchanged_since_a_version_past_its_last_change() {
        let mut c = DataChanges::default();
        assert!(c.unchanged_since(7, 0));
        c.changed(7, 10);
        assert!(!c.unchanged_since(7, 9));
        assert!(c.unchanged_since(7, 10));
        assert!(
            c.unchanged_since(8, 1),
            "another file's change says nothing"
        );
        c.all_changed(20);
        assert!(!c.unchanged_since(8, 19));
        assert!(c.unchanged_since(8, 20));
    }

    #[test]
    fn forgotten_changes_count_as_changes_after_any_older_version() {
        let mut c = DataChanges::default();
        c.changed(1, 5);
        for v in 0..MAX_CHANGES as u64 {
            c.changed(1000 + v, 100 + v);
        }
        // File 1's change at 5 was forgotten: a close before it cannot vouch for the file.
        assert!(!c.unchanged_since(1, 4));
        assert!(c.unchanged_since(1, 5));
        // The changes still remembered are exact.
        let newest = 100 + MAX_CHANGES as u64 - 1;
        assert!(!c.unchanged_since(1000 + MAX_CHANGES as u64 - 1, newest - 1));
        assert!(c.unchanged_since(1000 + MAX_CHANGES as u64 - 1, newest));
    }

    #[test]
    fn a_session_remembers_its_latest_closes_only() {
        let mut s = ClosedFiles::default();
        s.closed(1, 3);
        s.closed(1, 9);
        assert_eq!(s.last_close(1), Some(9));
        for i in 0..MAX_CLOSED as u64 {
            s.closed(100 + i, 10 + i);
        }
        assert_eq!(s.last_close(1), None);
        assert_eq!(
            s.last_close(100 + MAX_CLOSED as u64 - 1),
            Some(9 + MAX_CLOSED as u64)
        );
    }
}
