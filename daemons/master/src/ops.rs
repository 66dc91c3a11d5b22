//! Metadata changes. Each is fully determined (inode numbers, chunk ids, times are inside), so
//! applying the same sequence to the same dump always gives the same state: live requests,
//! changelog replay and metaloggers all go through [`crate::state::State::apply`].

use moose_proto::{FileKind, Inode, Timespec};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Create {
        parent: Inode,
        name: Vec<u8>,
        inode: Inode,
        kind: FileKind,
        mode: u16,
        uid: u32,
        gid: u32,
        rdev: u32,
        time: Timespec,
    },
    Symlink {
        parent: Inode,
        name: Vec<u8>,
        inode: Inode,
        target: Vec<u8>,
        uid: u32,
        gid: u32,
        time: Timespec,
    },
    Link {
        inode: Inode,
        parent: Inode,
        name: Vec<u8>,
        time: Timespec,
    },
    /// Removes a non-directory entry. `keep` is true when the file was still open: it then
    /// stays (as an orphan) until [`Op::Purge`].
    Unlink {
        parent: Inode,
        name: Vec<u8>,
        keep: bool,
        time: Timespec,
    },
    RmDir {
        parent: Inode,
        name: Vec<u8>,
        time: Timespec,
    },
    Rename {
        parent: Inode,
        name: Vec<u8>,
        new_parent: Inode,
        new_name: Vec<u8>,
        exchange: bool,
        /// The replaced target was open (see `Unlink::keep`).
        keep_target: bool,
        time: Timespec,
    },
    SetAttr {
        inode: Inode,
        mode: Option<u16>,
        uid: Option<u32>,
        gid: Option<u32>,
        atime: Option<Timespec>,
        mtime: Option<Timespec>,
        time: Timespec,
    },
    /// Sets a file's length. Chunks past the end are dropped; `trunc_chunk` is the chunk cut
    /// in the middle and the version it got.
    SetLength {
        inode: Inode,
        length: u64,
        trunc_chunk: Option<(u64, u32)>,
        time: Timespec,
    },
    AddChunk {
        inode: Inode,
        index: u32,
        chunk_id: u64,
        version: u32,
    },
    SetChunkVersion {
        chunk_id: u64,
        version: u32,
    },
    /// Writes ended: the file is at least `length` long.
    WriteEnd {
        inode: Inode,
        length: u64,
        time: Timespec,
    },
    SetXattr {
        inode: Inode,
        name: Vec<u8>,
        value: Vec<u8>,
        time: Timespec,
    },
    RemoveXattr {
        inode: Inode,
        name: Vec<u8>,
        time: Timespec,
    },
    /// Sets the goal of `inode` (and everything below it when recursive) where `uid` may.
    SetGoal {
        inode: Inode,
        goal: u8,
        recursive: bool,
        uid: u32,
        time: Timespec,
    },
    /// Removes an orphan (unlinked, no longer open). Does nothing if it is already gone.
    Purge {
        inode: Inode,
    },
    /// Sets the trash time of `inode` (and everything below it when recursive) where `uid`
    /// may.
    SetTrashTime {
        inode: Inode,
        trash_time: u32,
        recursive: bool,
        uid: u32,
        time: Timespec,
    },
    /// Frees a file in the trash (its time is up, or an admin removed it).
    TrashPurge {
        inode: Inode,
    },
    /// Puts a file in the trash back at its path; `new_dirs` are the inodes of the folders of
    /// that path that no longer exist, outermost first.
    Undelete {
        inode: Inode,
        new_dirs: Vec<Inode>,
        time: Timespec,
    },
    /// A snapshot: a copy of `src` (a file or a whole tree) named `name` in `parent`, sharing
    /// every chunk. New nodes are numbered from `first_inode` in the order of
    /// [`crate::snapshot::walk`]. With `replace`, an existing `name` and its whole tree go
    /// first; its files listed in `keep` were open and stay as orphans.
    Snapshot {
        src: Inode,
        parent: Inode,
        name: Vec<u8>,
        first_inode: Inode,
        replace: bool,
        keep: Vec<Inode>,
        time: Timespec,
    },
    /// Copy on write: chunk `index` of `inode` was `old`, shared with other files; it is now
    /// `new`, a copy the chunkservers made.
    CopyChunk {
        inode: Inode,
        index: u32,
        old: u64,
        new: u64,
        version: u32,
    },
    /// Sets (`None`: removes) the quota of folder `inode`.
    SetQuota {
        inode: Inode,
        quota: Option<moose_proto::msg::QuotaLimits>,
    },
    /// The soft limit of folder `inode`'s quota is exceeded since `since` (unix seconds), or
    /// (`None`) no longer: the grace period survives a restart.
    QuotaClock {
        inode: Inode,
        since: Option<u64>,
    },
    /// Inode numbers below `upto` were handed out (set aside for a session's creates answered
    /// ahead): none is handed out again, after a restart too.
    ReserveInodes {
        upto: Inode,
    },
    /// A `copy_file_range` of whole chunks: chunks `src_index..src_index + count` of `src`
    /// become chunks `dst_index..` of `dst` as well (holes stay holes), shared until either
    /// file writes to one (see [`Op::CopyChunk`]); `dst` is at least `length` long.
    ShareChunks {
        src: Inode,
        src_index: u32,
        dst: Inode,
        dst_index: u32,
        count: u32,
        length: u64,
        time: Timespec,
    },
}
