//! The changes a file's data depends on that may not be on disk yet, so that an `fdatasync`
//! waits for the changelog's sync only when the file has one (its creation, a new length, a
//! new chunk) and not for a change of its times alone, as a local file system does. A sqlite
//! commit overwrites pages in place: most of its fdatasyncs then cost no changelog sync.
//!
//! Marks are runtime only and pruned once the changelog's sync passed them; when too many
//! are pending (a changelog that is rarely synced), every file counts as changed up to the
//! newest mark instead, which only makes fdatasyncs wait more.

use std::collections::HashMap;

use moose_proto::Inode;

use crate::ops::Op;
use crate::state::State;

/// Files with a pending mark, at most; past it the marks collapse into one floor.
const MAX_MARKS: usize = 16_384;

#[derive(Debug, Default)]
pub struct DataMarks {
    /// Per file, the version of the last change its data depends on.
    latest: HashMap<Inode, u64>,
    /// Every file's data depends on the changes up to this version.
    floor: u64,
}

impl DataMarks {
    /// Notes that the data of `inode` depends on change `version`; `synced` is the version
    /// the changelog is on disk up to (marks at or below it are dropped when room is needed).
    pub fn mark(&mut self, inode: Inode, version: u64, synced: u64) {
        if self.latest.len() >= MAX_MARKS && !self.latest.contains_key(&inode) {
            self.latest.retain(|_, v| *v > synced);
            if self.latest.len() >= MAX_MARKS {
                self.latest.clear();
                self.floor = version;
                return;
            }
        }
        self.latest.insert(inode, version);
    }

    /// Notes that every file's data depends on change `version` (a change that makes or
    /// brings back many files at once).
    pub fn mark_all(&mut self, version: u64) {
        self.latest.clear();
        self.floor = version;
    }

    /// The version the changelog must be on disk up to before the data of `inode` is
    /// retrievable after a crash of the machine.
    pub fn needed(&self, inode: Inode) -> u64 {
        self.latest
            .get(&inode)
            .copied()
            .unwrap_or(0)
            .max(self.floor)
    }
}

/// What the data of which file `op` changes, judged before it is applied.
pub enum DataChange {
    File(Inode),
    Many,
}

impl State {
    /// The file whose data `op` changes, if any: its creation, its length (a write's end
    /// only when the file grows), its chunks.
    pub fn data_change(&self, op: &Op) -> Option<DataChange> {
        match op {
            Op::Create { inode, .. }
            | Op::SetLength { inode, .. }
            | Op::AddChunk { inode, .. }
            | Op::CopyChunk { inode, .. } => Some(DataChange::File(*inode)),
            Op::WriteEnd { inode, length, .. } => {
                let grows = self
                    .meta
                    .nodes
                    .get(inode)
                    .is_none_or(|n| n.length() < *length);
                grows.then_some(DataChange::File(*inode))
            }
            Op::Snapshot { .. } | Op::Undelete { .. } => Some(DataChange::Many),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_needs_its_own_last_mark_and_the_floor() {
        let mut m = DataMarks::default();
        assert_eq!(m.needed(7), 0);
        m.mark(7, 10, 0);
        m.mark(8, 11, 0);
        assert_eq!(m.needed(7), 10);
        assert_eq!(m.needed(9), 0);
        m.mark_all(12);
        assert_eq!(m.needed(8), 12);
        m.mark(8, 13, 0);
        assert_eq!(m.needed(8), 13);
        assert_eq!(m.needed(7), 12);
    }

    #[test]
    fn too_many_marks_drop_the_synced_ones_then_collapse_into_the_floor() {
        let mut m = DataMarks::default();
        for i in 0..MAX_MARKS as u64 {
            m.mark(i, i + 1, 0);
        }
        // Half are synced: they make room, the others stay exact.
        m.mark(1_000_000, 50_000, MAX_MARKS as u64 / 2);
        assert_eq!(m.latest.len(), MAX_MARKS / 2 + 1);
        assert_eq!(m.needed(MAX_MARKS as u64 - 1), MAX_MARKS as u64);
        assert_eq!(m.needed(0), 0);
        let room = (MAX_MARKS - m.latest.len()) as u64;
        for i in 0..MAX_MARKS as u64 {
            m.mark(2_000_000 + i, 60_000 + i, 0);
        }
        // None synced: at the mark that found no room every file waits for it; the later
        // ones stay exact.
        assert_eq!(m.needed(0), 60_000 + room);
        assert_eq!(m.needed(1_000_000), 60_000 + room);
        let last = 2_000_000 + MAX_MARKS as u64 - 1;
        assert_eq!(m.needed(last), 60_000 + MAX_MARKS as u64 - 1);
    }
}
