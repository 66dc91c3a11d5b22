//! Bounded tables of the latest version noted per inode: what an fdatasync waits for
//! (`data_marks.rs`) and whether an open may keep the kernel's pages (`page_cache.rs`). Only
//! the most recent `CAP` notes are kept; a table of changes raises its floor past every note
//! it forgets, so a forgotten change still counts, for every file.

use std::collections::{HashMap, VecDeque};

use moose_proto::Inode;

/// The latest version noted per inode, for the most recent `CAP` notes.
#[derive(Debug, Default)]
pub struct Latest<const CAP: usize> {
    at: HashMap<Inode, u64>,
    /// Notes in the order they came (an inode may appear more than once).
    order: VecDeque<(u64, Inode)>,
}

impl<const CAP: usize> Latest<CAP> {
    /// Notes `version` for `inode`; returns the highest version of the notes that left.
    pub fn note(&mut self, inode: Inode, version: u64) -> Option<u64> {
        self.at.insert(inode, version);
        self.order.push_back((version, inode));
        let mut left = None;
        while self.order.len() > CAP {
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

    pub fn get(&self, inode: Inode) -> Option<u64> {
        self.at.get(&inode).copied()
    }

    fn clear(&mut self) {
        self.at.clear();
        self.order.clear();
    }
}

/// Recent changes per inode, with a floor every file counts as changed at.
#[derive(Debug, Default)]
pub struct Changes<const CAP: usize> {
    last: Latest<CAP>,
    /// Every change forgotten was at or below this version.
    floor: u64,
}

impl<const CAP: usize> Changes<CAP> {
    /// `inode` changed at `version`.
    pub fn changed(&mut self, inode: Inode, version: u64) {
        if let Some(forgotten) = self.last.note(inode, version) {
            self.floor = self.floor.max(forgotten);
        }
    }

    /// Every file counts as changed at `version` (many files at once).
    pub fn all_changed(&mut self, version: u64) {
        self.last.clear();
        self.floor = version;
    }

    /// The version of the last change that may concern `inode`.
    pub fn newest(&self, inode: Inode) -> u64 {
        self.last.get(inode).unwrap_or(0).max(self.floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: usize = 1_000;

    #[test]
    fn a_file_needs_its_own_last_change_and_the_floor() {
        let mut m = Changes::<CAP>::default();
        assert_eq!(m.newest(7), 0);
        m.changed(7, 10);
        m.changed(8, 11);
        assert_eq!(m.newest(7), 10);
        assert_eq!(m.newest(9), 0, "another file's change says nothing");
        m.all_changed(12);
        assert_eq!(m.newest(8), 12);
        m.changed(8, 13);
        assert_eq!(m.newest(8), 13);
        assert_eq!(m.newest(7), 12);
    }

    #[test]
    fn forgotten_changes_count_as_changes_after_any_older_version() {
        let mut c = Changes::<CAP>::default();
        c.changed(1, 5);
        for v in 0..CAP as u64 {
            c.changed(1000 + v, 100 + v);
        }
        // File 1's change at 5 was forgotten: every file counts as changed at 5.
        assert_eq!(c.newest(1), 5);
        assert_eq!(c.newest(2), 5);
        // The changes still remembered are exact.
        let last = 1000 + CAP as u64 - 1;
        assert_eq!(c.newest(last), 100 + CAP as u64 - 1);
    }

    #[test]
    fn a_table_remembers_the_latest_notes_only() {
        let mut s = Latest::<CAP>::default();
        s.note(1, 3);
        s.note(1, 9);
        assert_eq!(s.get(1), Some(9));
        for i in 0..CAP as u64 {
            s.note(100 + i, 10 + i);
        }
        assert_eq!(s.get(1), None);
        assert_eq!(s.get(100 + CAP as u64 - 1), Some(9 + CAP as u64));
    }
}
