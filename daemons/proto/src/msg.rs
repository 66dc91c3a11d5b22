//! Messages of every link, independent of their encoding.

use serde::{Deserialize, Serialize};

use crate::auth::{AuthProof, ChunkToken};
use crate::types::*;

// ------------------------------------------------------------------------------------------
// Client (mount, moose-tool, console) <-> master, port 9421.
// ------------------------------------------------------------------------------------------

/// A request with its id; many may be in flight on one connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClEnvelope {
    pub msgid: u32,
    pub req: ClRequest,
}

/// The `msgid` of what the master sends unasked: a [`ClReply::FoldersChanged`] or
/// [`ClReply::FilesChanged`] notice.
pub const NOTICE_MSGID: u32 = u32::MAX;

/// How much of the master's changelog must be on its disk before it answers the end of a
/// write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndSync {
    /// Nothing more than for any change: the record is written (a write-out, a close).
    Recorded,
    /// An `fdatasync`: every change the file's data depends on (its creation, its length,
    /// its chunks) is on disk; a change of its times alone is not waited for.
    Data,
    /// An `fsync`: every change up to this one is on disk.
    All,
}

/// The answer to the request with the same `msgid`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClResponse {
    pub msgid: u32,
    pub result: Result<ClReply, FsError>,
    /// Folders the request changed, as they are after it (the parent of a new or removed
    /// name, a folder whose attributes were set): the kernel asks for them next, and the mount
    /// answers from these for its attribute timeout.
    pub dirs: Vec<Attr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Folder of the file system to mount as the root ("/" for all).
    pub subdir: String,
    /// Where the client mounts it (for the master's session list).
    pub mount_point: String,
    /// Response to the challenge from [`ClRequest::GetChallenge`], when the export needs one.
    pub password_proof: Option<Vec<u8>>,
    /// A tool session (moose-tool) rather than a mount.
    pub tool: bool,
    /// Take over this earlier session of ours (its open files and locks) after a lost
    /// connection: its id and the key the master gave it.
    pub resume: Option<(u64, Vec<u8>)>,
}

/// Inode numbers a session may reserve in one request.
pub const MAX_RESERVED_INODES: u32 = 4096;

/// How a create answered ahead by the mount is made (see [`ClRequest::Create`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAhead {
    /// One of the session's reserved inodes, above every one it used before.
    pub inode: Inode,
    /// The new file's times (and its folder's), as the mount told the kernel.
    pub time: crate::Timespec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterReply {
    pub session_id: u64,
    /// Master inode of the mounted folder.
    pub root_inode: Inode,
    pub read_only: bool,
    pub cluster_id: u64,
    /// Human-readable summary of the export options that applied.
    pub params: String,
    /// Secret that lets this client resume the session after a lost connection.
    pub session_key: Vec<u8>,
    /// The session asked for in `resume` was taken over (its files are still open).
    pub resumed: bool,
    /// The master checks root's requests as another user (the export's `maproot`).
    pub maps_root: bool,
    /// The master checks every other user's requests as another user (`mapall`).
    pub maps_all: bool,
}

impl RegisterReply {
    /// True when the master checks the requests of `uid` as another user than the kernel
    /// does: the kernel's permission checks do not predict the master's then.
    pub fn maps(&self, uid: u32) -> bool {
        if uid == 0 {
            self.maps_root
        } else {
            self.maps_all
        }
    }
}

/// Why a session was refused: the master's reason, meant for the admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClRequest {
    /// 32 random bytes for a password challenge.
    GetChallenge,
    /// Opens a session; must precede file system requests.
    Register(RegisterRequest),
    Statfs,
    Lookup {
        parent: Inode,
        name: Vec<u8>,
        cred: Cred,
    },
    GetAttr {
        inode: Inode,
    },
    SetAttr {
        inode: Inode,
        set: SetAttrs,
        cred: Cred,
    },
    Access {
        inode: Inode,
        /// R_OK=4, W_OK=2, X_OK=1 bits.
        mask: u32,
        cred: Cred,
    },
    MkNod {
        parent: Inode,
        name: Vec<u8>,
        kind: FileKind,
        mode: u16,
        umask: u16,
        rdev: u32,
        cred: Cred,
    },
    /// Makes a regular file and opens it with `flags` in one step (open(2) with O_CREAT):
    /// the creator gets the access asked for, whatever the new file's mode says.
    Create {
        parent: Inode,
        name: Vec<u8>,
        mode: u16,
        umask: u16,
        flags: i32,
        cred: Cred,
        /// Made with an inode this session reserved, at the mount's time: the mount
        /// answered the kernel before sending it (see [`ClRequest::ReserveInodes`]).
        ahead: Option<CreateAhead>,
    },
    MkDir {
        parent: Inode,
        name: Vec<u8>,
        mode: u16,
        umask: u16,
        cred: Cred,
    },
    Symlink {
        parent: Inode,
        name: Vec<u8>,
        target: Vec<u8>,
        cred: Cred,
    },
    ReadLink {
        inode: Inode,
    },
    Unlink {
        parent: Inode,
        name: Vec<u8>,
        cred: Cred,
    },
    RmDir {
        parent: Inode,
        name: Vec<u8>,
        cred: Cred,
    },
    Rename {
        parent: Inode,
        name: Vec<u8>,
        new_parent: Inode,
        new_name: Vec<u8>,
        /// RENAME_NOREPLACE = 1, RENAME_EXCHANGE = 2.
        flags: u32,
        cred: Cred,
    },
    Link {
        inode: Inode,
        new_parent: Inode,
        new_name: Vec<u8>,
        cred: Cred,
    },
    /// Lists a directory from `cookie` on (0 = start), at most `max` entries.
    ReadDir {
        inode: Inode,
        cookie: u64,
        max: u32,
        cred: Cred,
    },
    /// Checks access for the open flags and marks the file open in this session.
    Open {
        inode: Inode,
        flags: i32,
        cred: Cred,
    },
    /// The last handle of this session on the inode was closed: its opens end, and so do
    /// its write leases of the file.
    Release {
        inode: Inode,
    },
    /// Where the chunk at `index` of the file lives.
    ReadChunk {
        inode: Inode,
        index: u32,
    },
    /// Gets (creating or versioning) a chunk for writing; the chunk stays locked for this
    /// session until a [`ClRequest::WriteChunkEnd`] without `keep`.
    WriteChunk {
        inode: Inode,
        index: u32,
    },
    /// Records the writes done under a lease. `length` is the file length the writes reached
    /// (the master keeps the larger of it and the current length); `ok` is false when the
    /// writes failed or there were none since the last end (nothing is recorded then).
    /// `keep` (with `ok`) keeps the chunk locked for this session, so that its next writes
    /// use the same lease without a new version; otherwise the lease ends. `sync`: what of
    /// the master's changelog is on its disk before the answer (an fsync's last write).
    WriteChunkEnd {
        inode: Inode,
        index: u32,
        chunk_id: u64,
        length: u64,
        ok: bool,
        keep: bool,
        sync: EndSync,
    },
    GetXattr {
        inode: Inode,
        name: Vec<u8>,
        cred: Cred,
    },
    SetXattr {
        inode: Inode,
        name: Vec<u8>,
        value: Vec<u8>,
        /// XATTR_CREATE = 1, XATTR_REPLACE = 2.
        flags: u32,
        cred: Cred,
    },
    ListXattr {
        inode: Inode,
        cred: Cred,
    },
    RemoveXattr {
        inode: Inode,
        name: Vec<u8>,
        cred: Cred,
    },
    SetGoal {
        inode: Inode,
        goal: u8,
        recursive: bool,
        cred: Cred,
    },
    GetGoal {
        inode: Inode,
    },
    FileInfo {
        inode: Inode,
    },
    /// A copy failed its CRC or could not be read; the master stops using it.
    ReportBadCopy {
        chunk_id: u64,
        version: u32,
        server: CsAddr,
    },
    /// Cluster status for tools and the console (needs a session).
    ClusterInfo,
    /// Keeps an idle session's connection alive (the master drops silent connections).
    Nop,
    /// The mount is going away: release its files now rather than after
    /// `SESSION_SUSTAIN_TIME`.
    CloseSession,
    /// Answered once every metadata change acknowledged so far is on the master's disk (a
    /// client's `fsync`; changes are otherwise synced within a second).
    SyncMetadata,
    /// Sets `count` (at most [`MAX_RESERVED_INODES`]) inode numbers aside for this session's
    /// creates answered ahead, and says whether the cluster has quotas; answered with
    /// [`ClReply::Inodes`].
    ReserveInodes {
        count: u32,
    },
    /// Sets the trash time (seconds a deleted file stays in the trash; 0 = none) of `inode`,
    /// and of everything below it when recursive, where the caller may.
    SetTrashTime {
        inode: Inode,
        trash_time: u32,
        recursive: bool,
        cred: Cred,
    },
    GetTrashTime {
        inode: Inode,
    },
    /// Meta sessions only: files in the trash with an inode above `after`, in inode order;
    /// only those of trash bucket `bucket` (inode % [`TRASH_BUCKETS`]) when given.
    TrashList {
        bucket: Option<u32>,
        after: Inode,
        max: u32,
    },
    /// Meta sessions only: one file in the trash.
    TrashGet {
        inode: Inode,
    },
    /// Meta sessions only: frees a file in the trash now.
    TrashPurge {
        inode: Inode,
    },
    /// Meta sessions only: puts a file in the trash back at its path, re-creating missing
    /// folders; `Exist` when that name is taken.
    Undelete {
        inode: Inode,
    },
    /// Counters of a folder's tree, or of a file (`moose-tool dirinfo`).
    DirInfo {
        inode: Inode,
    },
    /// A snapshot of `src` named `name` in `parent` (`moose-tool makesnapshot`); `replace`
    /// (`-o`) replaces what has that name.
    Snapshot {
        src: Inode,
        parent: Inode,
        name: Vec<u8>,
        replace: bool,
        cred: Cred,
    },
    /// Sets (or with `None` removes) the quota of a folder (`moose-tool setquota`,
    /// `delquota`); root only.
    SetQuota {
        inode: Inode,
        quota: Option<QuotaLimits>,
        cred: Cred,
    },
    /// The quota of one folder (`getquota`), or with `under` every quota in its tree
    /// (`repquota`); answered with [`ClReply::Quotas`].
    GetQuota {
        inode: Inode,
        under: bool,
    },
    /// Before a write(2) extends a file past what was last allowed: how far it may grow
    /// under the quotas of the folders holding it. Answered with [`ClReply::Allowance`].
    QuotaAllowance {
        inode: Inode,
    },
    /// `statfs` inside the mount: under a folder with a size quota, the quota is the size.
    StatfsAt {
        inode: Inode,
    },
    /// A `copy_file_range` of whole chunks (`cp`): the chunks of `src` from `src_offset` on
    /// become chunks of `dst` from `dst_offset` on as well, shared until either file writes
    /// to one (copy on write, as a snapshot's). It covers `len` bytes rounded down to whole
    /// chunks, or up to the end of `src` when that comes first. Refused unless both offsets
    /// are chunk-aligned, `dst` holds nothing from `dst_offset` on, no chunk concerned is
    /// being written and no quota lies over `dst`; the mount then copies the bytes. Answered
    /// with [`ClReply::Shared`].
    ShareChunks {
        src: Inode,
        src_offset: u64,
        dst: Inode,
        dst_offset: u64,
        len: u64,
    },
}

/// Whose attributes a request may change (see [`ClRequest::touches`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touches {
    /// Nobody's.
    Nothing,
    /// Those of these objects only (the second may repeat the first).
    Only(Inode, Inode),
    /// Those of objects the request does not name (an unlink changes the link count of the
    /// file behind a name), or of many.
    Any,
}

impl ClRequest {
    /// Whose attributes the request may change: a mount keeps what it learned of the others
    /// (all of it for [`Touches::Nothing`]).
    pub fn touches(&self) -> Touches {
        use ClRequest::*;
        match self {
            GetChallenge
            | Register { .. }
            | Statfs
            | Lookup { .. }
            | GetAttr { .. }
            | Access { .. }
            | ReadLink { .. }
            | ReadDir { .. }
            | Release { .. }
            | ReadChunk { .. }
            | WriteChunk { .. }
            // Ends a lease without recording anything.
            | WriteChunkEnd { ok: false, .. }
            | GetXattr { .. }
            | ListXattr { .. }
            | GetGoal { .. }
            | FileInfo { .. }
            | ReportBadCopy { .. }
            | ClusterInfo
            | Nop
            | SyncMetadata
            | ReserveInodes { .. }
            | GetTrashTime { .. }
            | TrashList { .. }
            | TrashGet { .. }
            | DirInfo { .. }
            | GetQuota { .. }
            | QuotaAllowance { .. }
            | StatfsAt { .. } => Touches::Nothing,
            // A size change cuts the file's own chunks; a copy-on-write chunk of a snapshot
            // is copied, not changed in the other file.
            SetAttr { inode, .. } | Open { inode, .. } | WriteChunkEnd { inode, .. } => {
                Touches::Only(*inode, *inode)
            }
            // The source's chunks are shared, not changed.
            ShareChunks { dst, .. } => Touches::Only(*dst, *dst),
            // A new name changes its folder (times, size, a subfolder's link); the master
            // refuses a name that exists rather than open or replace what it names.
            Create {
                parent,
                ahead: Some(a),
                ..
            } => Touches::Only(*parent, a.inode),
            Create { parent, .. }
            | MkNod { parent, .. }
            | MkDir { parent, .. }
            | Symlink { parent, .. } => Touches::Only(*parent, *parent),
            Unlink { .. }
            | RmDir { .. }
            | Rename { .. }
            | Link { .. }
            | SetXattr { .. }
            | RemoveXattr { .. }
            | SetGoal { .. }
            | CloseSession
            | SetTrashTime { .. }
            | TrashPurge { .. }
            | Undelete { .. }
            | Snapshot { .. }
            | SetQuota { .. } => Touches::Any,
        }
    }
}

/// Trash buckets of the meta mount (`trash/000` … `trash/FFF`), as in stock MooseFS.
pub const TRASH_BUCKETS: u32 = 4096;

/// A file in the trash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashEntry {
    pub attr: Attr,
    /// Where it was, relative to the root, without the leading '/'.
    pub path: Vec<u8>,
    /// When it is purged (Unix seconds).
    pub expires: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClReply {
    Challenge(Vec<u8>),
    Registered(RegisterReply),
    /// The master refused the session.
    Refused(Refusal),
    Statfs(StatfsReply),
    Attr(Attr),
    /// Entries and whether the listing ended.
    Dir {
        entries: Vec<DirEntry>,
        eof: bool,
    },
    Link(Vec<u8>),
    Chunk(ChunkLocation),
    WriteLease(WriteLease),
    Xattr(Vec<u8>),
    XattrNames(Vec<Vec<u8>>),
    Goal(u8),
    GoalSet(SetGoalReply),
    FileInfo(Vec<ChunkInfo>),
    Cluster(ClusterInfo),
    Done,
    TrashTimeSet(SetGoalReply),
    TrashTime(u32),
    Trash {
        entries: Vec<TrashEntry>,
        eof: bool,
    },
    TrashEntry(TrashEntry),
    DirInfo(DirStats),
    Quotas(Vec<QuotaReport>),
    /// A file may grow up to `end` bytes (`u64::MAX`: no limit); `quotas` is false when the
    /// cluster has none (the client then need not ask again for a while).
    Allowance {
        end: u64,
        quotas: bool,
    },
    /// Inode numbers `first..first + count` are this session's to create files with, in
    /// increasing order; `quotas` as in [`ClReply::Allowance`].
    Inodes {
        first: Inode,
        count: u32,
        quotas: bool,
    },
    /// Sent unasked (`msgid` [`NOTICE_MSGID`]): another session changed the names of these
    /// folders, which this mount listed or made; it forgets what it knew of them.
    FoldersChanged(Vec<Inode>),
    /// Sent unasked: another session changed the data of these files, which this mount has
    /// open; the kernel's cache of their pages is stale.
    FilesChanged(Vec<Inode>),
    /// The answer to an open: the file's attributes, and whether the kernel may keep the
    /// pages it has of the file (its data did not change since this session last had it
    /// open, or the session has it open now and hears of every change).
    ///
    /// An open that may read a non-empty file also says where its first chunk lives
    /// (`first_chunk`): a mount reads a small file from there without asking again.
    Opened {
        attr: Attr,
        keep_cache: bool,
        first_chunk: Option<ChunkLocation>,
    },
    /// The answer to [`ClRequest::ShareChunks`]: how many bytes the copy took (0: the source
    /// ends at its offset), the destination's attributes after it, and where each shared
    /// chunk of the destination lies (chunk index in the destination, location with a
    /// token to sync it: an fsync of the copy makes them durable).
    Shared {
        copied: u64,
        attr: Attr,
        chunks: Vec<(u32, ChunkLocation)>,
    },
}

/// Limits of one kind (`None`: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub inodes: Option<u64>,
    pub length: Option<u64>,
    pub size: Option<u64>,
    pub realsize: Option<u64>,
}

/// A folder's quota as `setquota` sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLimits {
    pub soft: Limits,
    pub hard: Limits,
    /// Seconds a soft limit may be exceeded (`None`: the master's QUOTA_DEFAULT_GRACE_PERIOD).
    pub grace: Option<u64>,
}

/// A quota with its folder's usage (getquota, repquota, the console).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaReport {
    pub inode: Inode,
    /// The folder's path from the file system's root.
    pub path: String,
    pub limits: QuotaLimits,
    /// The grace period in force (the folder's or the default), seconds.
    pub grace: u64,
    pub usage: DirStats,
    /// Seconds since a soft limit is exceeded (`None`: within every soft limit).
    pub soft_exceeded_for: Option<u64>,
}

impl QuotaReport {
    /// Seconds of grace left while over a soft limit; `Some(0)` once it acts as a hard limit.
    pub fn grace_left(&self) -> Option<u64> {
        self.soft_exceeded_for.map(|s| self.grace.saturating_sub(s))
    }
}

/// What `moose-tool dirinfo` shows: figures of a tree, the folder itself included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirStats {
    pub inodes: u64,
    pub dirs: u64,
    pub files: u64,
    pub chunks: u64,
    /// Sum of the files' lengths.
    pub length: u64,
    /// Bytes of their chunks (whole 64 KiB blocks).
    pub size: u64,
    /// `size` times each file's goal.
    pub realsize: u64,
}

impl DirStats {
    pub fn add(&mut self, o: &DirStats) {
        self.inodes = self.inodes.saturating_add(o.inodes);
        self.dirs = self.dirs.saturating_add(o.dirs);
        self.files = self.files.saturating_add(o.files);
        self.chunks = self.chunks.saturating_add(o.chunks);
        self.length = self.length.saturating_add(o.length);
        self.size = self.size.saturating_add(o.size);
        self.realsize = self.realsize.saturating_add(o.realsize);
    }

    pub fn sub(&mut self, o: &DirStats) {
        self.inodes = self.inodes.saturating_sub(o.inodes);
        self.dirs = self.dirs.saturating_sub(o.dirs);
        self.files = self.files.saturating_sub(o.files);
        self.chunks = self.chunks.saturating_sub(o.chunks);
        self.length = self.length.saturating_sub(o.length);
        self.size = self.size.saturating_sub(o.size);
        self.realsize = self.realsize.saturating_sub(o.realsize);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatfsReply {
    pub total: u64,
    pub avail: u64,
    pub used: u64,
    pub inodes: u64,
}

/// A chunk of a file for reading. `chunk_id == 0` means a hole (reads as zeros).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkLocation {
    pub file_length: u64,
    pub chunk_id: u64,
    pub version: u32,
    /// Servers holding a valid copy, best first.
    pub servers: Vec<CsAddr>,
    /// Lets the holder read this version of the chunk for a short while.
    pub token: ChunkToken,
}

/// A chunk locked for writing: write along `chain` (first server first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteLease {
    pub file_length: u64,
    pub chunk_id: u64,
    pub version: u32,
    pub chain: Vec<CsAddr>,
    /// Lets the holder open a write chain along `chain` for a short while.
    pub token: ChunkToken,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetGoalReply {
    pub changed: u64,
    pub unchanged: u64,
    pub not_permitted: u64,
}

/// State of one copy of a chunk, as `fileinfo` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyState {
    Valid,
    /// On a disk marked for removal.
    MarkedForRemoval,
    WrongVersion,
    Damaged,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyInfo {
    pub server: CsAddr,
    pub state: CopyState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    pub index: u32,
    /// 0 for a hole.
    pub chunk_id: u64,
    pub version: u32,
    pub goal: u8,
    pub copies: Vec<CopyInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkserverInfo {
    pub id: u32,
    /// Disks marked for removal: how many of their chunks still lack enough copies elsewhere
    /// (0 = the disk can be removed).
    pub removal: Vec<RemovalProgress>,
    pub addr: CsAddr,
    pub version: String,
    pub connected: bool,
    pub chunks: u64,
    pub used: u64,
    pub total: u64,
    pub disks: Vec<DiskReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovalProgress {
    pub disk: String,
    pub chunks: u64,
    pub remaining: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub version: String,
    pub cluster_id: u64,
    pub metadata_version: u64,
    /// Every change up to this version is synced to the master's disk (the rest is written
    /// and survives a crash of the master process, not of its machine).
    #[serde(default)]
    pub metadata_synced: u64,
    /// Syncs of the changelog that requests asked for ahead of its timer (clients' fsyncs,
    /// chunk version raises); each costs the master's disk a flush.
    #[serde(default)]
    pub metadata_syncs_asked: u64,
    pub total_space: u64,
    pub avail_space: u64,
    pub files: u64,
    pub dirs: u64,
    pub chunks: u64,
    pub chunkservers: Vec<ChunkserverInfo>,
    /// The connected metaloggers.
    pub metaloggers: Vec<MetaloggerInfo>,
    pub uptime_secs: u64,
    /// Client requests served since start (the console derives operations per second).
    pub ops_total: u64,
    /// Registered mounts and tool sessions.
    pub sessions: u64,
    pub health: ChunkHealth,
    /// Deleted files kept in the trash, and their total length.
    #[serde(default)]
    pub trash_files: u64,
    #[serde(default)]
    pub trash_bytes: u64,
    /// Every folder quota with its usage.
    #[serde(default)]
    pub quotas: Vec<QuotaReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaloggerInfo {
    pub addr: String,
    /// Last metadata version the metalogger has on disk.
    pub version: u64,
}

/// The chunk matrix and its summary, as `mfscli -SIC` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChunkHealth {
    /// `matrix[goal][copies]`: chunks with that goal (0..=9) and that many valid copies
    /// (0..=10, the last column meaning 10 or more).
    pub matrix: Vec<Vec<u64>>,
    /// No valid copy.
    pub missing: u64,
    /// One valid copy left where the goal asks for more.
    pub endangered: u64,
    /// Fewer copies than the goal (but more than one).
    pub undergoal: u64,
    pub stable: u64,
    pub overgoal: u64,
    /// Copies queued for deletion.
    pub pending_deletion: u64,
    /// Replications running now.
    pub replicating: u64,
    /// Copies made by replication since the master started.
    pub replicated_total: u64,
    /// Rebalancing moves (a copy, then the deletion of the copy it came from) since the
    /// master started.
    pub moved_total: u64,
    /// Chunks no copy of which has the metadata's version: kept, and their files need repair.
    pub to_repair: u64,
    /// On a master of many chunks the matrix and the counts above it are those of the health
    /// loop's last complete sweep, ended this many seconds ago (its first sweep not ended:
    /// `Some(0)` with every count 0); `None` when they were counted for this answer.
    pub swept_secs_ago: Option<u64>,
}

// ------------------------------------------------------------------------------------------
// Chunkserver <-> master, port 9420.
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CsToMaster {
    /// First message: who this chunkserver is. An empty `listen_host` means "the address you
    /// see me connecting from". `cs_id` 0 asks for a new id; `cluster_id` 0 means "not yet
    /// bound to a cluster".
    Register {
        cs_id: u32,
        cluster_id: u64,
        listen_host: String,
        listen_port: u16,
        version: String,
        disks: Vec<DiskReport>,
        /// Proof of the cluster secret (`AUTH_CODE`) over the nonce of the master's hello.
        auth: Option<AuthProof>,
    },
    /// Part of the chunk inventory (sent after Register, in batches).
    Chunks(Vec<ChunkRef>),
    /// The whole inventory has been sent.
    RegisterEnd,
    /// Periodic disk report.
    Space(Vec<DiskReport>),
    /// A copy failed a CRC check or could not be read.
    ChunkDamaged(ChunkRef),
    /// A copy disappeared from disk.
    ChunkLost(ChunkRef),
    /// Result of the master's order with this `req_id`.
    OpDone {
        req_id: u64,
        status: Result<(), FsError>,
    },
    /// The chunks on every disk marked for removal (`*` in the hdd file). Sent after the
    /// registration and after every reload; each message replaces the previous list.
    MarkedChunks(Vec<MarkedDisk>),
    /// Graceful stop: the chunkserver is leaving.
    Goodbye,
    Nop,
}

/// A disk marked for removal and the chunks still on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkedDisk {
    pub path: String,
    pub chunks: Vec<ChunkRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MasterToCs {
    RegisterAck {
        cs_id: u32,
        cluster_id: u64,
        /// The master's proof of the cluster secret over the chunkserver's nonce.
        proof: Option<Vec<u8>>,
        /// Without `AUTH_CODE`: the key chunk access tokens are signed with.
        token_key: Option<Vec<u8>>,
    },
    Refused {
        reason: String,
    },
    Create {
        req_id: u64,
        chunk: ChunkRef,
    },
    Delete {
        req_id: u64,
        chunk: ChunkRef,
    },
    SetVersion {
        req_id: u64,
        chunk: ChunkRef,
        new_version: u32,
    },
    /// Cuts the chunk to `length` bytes and gives it `new_version`.
    Truncate {
        req_id: u64,
        chunk: ChunkRef,
        new_version: u32,
        length: u32,
    },
    /// Pulls a copy of `chunk` from `source`.
    Replicate {
        req_id: u64,
        chunk: ChunkRef,
        source: CsAddr,
        /// Lets the target read the chunk from the source.
        token: ChunkToken,
    },
    Nop,
    /// Copy on write: makes `copy` (a new chunk) from this server's copy of `chunk`.
    Duplicate {
        req_id: u64,
        chunk: ChunkRef,
        copy: ChunkRef,
    },
}

// ------------------------------------------------------------------------------------------
// Client or chunkserver -> chunkserver data port, 9422.
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToCs {
    /// Read `size` bytes at `offset` of the chunk; answered by data frames with this `req_id`
    /// (each within one block) and then [`FromCs::ReadDone`].
    Read {
        req_id: u32,
        chunk: ChunkRef,
        offset: u32,
        size: u32,
        token: ChunkToken,
    },
    /// Opens a write chain for `chunk`: this server writes and forwards to `chain[0]`, which
    /// gets `chain[1..]`. Answered by `WriteStatus { write_id: 0 }` once the chain is open.
    /// Data frames follow, with `req_id` = write id (never 0); they may be sent before that
    /// answer (a server whose chain failed to open closes the connection at the first one).
    WriteInit {
        chunk: ChunkRef,
        chain: Vec<CsAddr>,
        token: ChunkToken,
    },
    /// Ends the write session; answered by [`FromCs::WriteEnded`] once every write has been
    /// answered and the rest of the chain has ended too. The connection then serves requests
    /// again.
    WriteFinish,
    /// Makes the chunk's data durable (fdatasync); answered by `SyncDone`.
    Sync {
        req_id: u32,
        chunk: ChunkRef,
        token: ChunkToken,
    },
    /// How many bytes of data the chunk holds; answered by `Length` (lets replication copy
    /// only what exists).
    GetLength {
        req_id: u32,
        chunk: ChunkRef,
        token: ChunkToken,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromCs {
    ReadDone {
        req_id: u32,
        status: Result<(), FsError>,
    },
    WriteStatus {
        write_id: u32,
        status: Result<(), FsError>,
    },
    SyncDone {
        req_id: u32,
        status: Result<(), FsError>,
    },
    Length {
        req_id: u32,
        result: Result<u32, FsError>,
    },
    /// The write session this connection carried has ended (after `WriteFinish`): every
    /// write was answered before it, and the connection takes requests again.
    WriteEnded,
}

// ------------------------------------------------------------------------------------------
// Metalogger <-> master, port 9419.
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MlToMaster {
    /// First message: asks for a dump followed by the live changelog.
    Register {
        version: String,
        /// Proof of the cluster secret (`AUTH_CODE`) over the nonce of the master's hello.
        auth: Option<AuthProof>,
    },
    /// Everything up to this metadata version is on the metalogger's disk.
    Synced {
        version: u64,
    },
    Nop,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MasterToMl {
    /// A dump of `size` bytes at metadata version `version` follows in `DumpPart`s.
    DumpStart {
        cluster_id: u64,
        version: u64,
        size: u64,
    },
    DumpPart(Vec<u8>),
    DumpEnd,
    /// Changelog records (each as stored in a changelog file), in version order.
    Changes(Vec<(u64, Vec<u8>)>),
    Nop,
    /// The registration is accepted; `proof` shows the master knows the cluster secret.
    Welcome {
        proof: Option<Vec<u8>>,
    },
    Refused {
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_touches_what_it_names_or_says_it_may_touch_anything() {
        let cred = Cred::root();
        let setattr = ClRequest::SetAttr {
            inode: 5,
            set: SetAttrs::default(),
            cred: cred.clone(),
        };
        assert_eq!(setattr.touches(), Touches::Only(5, 5));
        let create = |ahead| ClRequest::Create {
            parent: 1,
            name: b"f".to_vec(),
            mode: 0o644,
            umask: 0o022,
            flags: 0,
            cred: cred.clone(),
            ahead,
        };
        assert_eq!(create(None).touches(), Touches::Only(1, 1));
        let ahead = CreateAhead {
            inode: 9,
            time: crate::Timespec::now(),
        };
        assert_eq!(create(Some(ahead)).touches(), Touches::Only(1, 9));
        // The file behind the name loses a link: the mount does not know which it is.
        let unlink = ClRequest::Unlink {
            parent: 1,
            name: b"f".to_vec(),
            cred: cred.clone(),
        };
        assert_eq!(unlink.touches(), Touches::Any);
        assert_eq!(ClRequest::GetAttr { inode: 5 }.touches(), Touches::Nothing);
        assert_ne!(setattr.touches(), Touches::Nothing);
    }
}
