//! Whether a mount may keep the kernel's pages of a file it opens again (stock's
//! `mfscachemode=AUTO`: the master decides). A mount writes through the kernel's page cache,
//! so after its own writes the pages are the file's data; they are only stale when another
//! session changed the data since. The master remembers, per session, the version at which
//! it last closed each file, and, for a bounded number of recent changes, the version at
//! which each file's data last changed; a file changed before the oldest change remembered
//! counts as changed. Files a session has open are kept fresh by notices instead (see
//! `watches.rs`).

use moose_proto::Inode;

use crate::ops::Op;
use crate::recent::{Changes, Latest};

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
        Op::WriteEnd { inode, .. }
        | Op::SetLength { inode, .. }
        | Op::ShareChunks { dst: inode, .. } => Some(Written::Data(*inode)),
        Op::Snapshot { .. } => Some(Written::Many),
        _ => None,
    }
}

/// Recent changes of files' data (a write's end, a truncation).
pub type DataChanges = Changes<MAX_CHANGES>;

/// The files one session closed, with the version at their last close.
pub type ClosedFiles = Latest<MAX_CLOSED>;
