//! The changes a file's data depends on that may not be on disk yet, so that an `fdatasync`
//! waits for the changelog's sync only when the file has one (its creation, a new length, a
//! new chunk) and not for a change of its times alone, as a local file system does. A sqlite
//! commit overwrites pages in place: most of its fdatasyncs then cost no changelog sync.
//!
//! Marks are runtime only and bounded (`recent.rs`): a forgotten mark makes every file
//! count as changed up to it, which only makes fdatasyncs wait more (forgotten marks are the
//! oldest, normally synced long before).

use moose_proto::Inode;

use crate::ops::Op;
use crate::recent::Changes;
use crate::state::State;

/// Changes files' data depends on, per file, for the most recent marks.
pub type DataMarks = Changes<16_384>;

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
            | Op::CopyChunk { inode, .. }
            | Op::ShareChunks { dst: inode, .. } => Some(DataChange::File(*inode)),
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
