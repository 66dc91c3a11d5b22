//! Value types shared by several links.

use serde::{Deserialize, Serialize};

/// Inode number. The file system root is [`ROOT_INODE`].
pub type Inode = u64;
pub const ROOT_INODE: Inode = 1;

/// Longest name of a directory entry, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Longest symlink target, in bytes.
pub const MAX_SYMLINK_LEN: usize = 4096;
/// Largest extended attribute value, in bytes.
pub const MAX_XATTR_VALUE: usize = 64 * 1024;
/// Highest goal (number of copies).
pub const MAX_GOAL: u8 = 9;

/// Status of a failed operation. Every variant maps to an errno for the mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum FsError {
    #[error("operation not permitted")]
    Perm,
    #[error("no such file or directory")]
    NoEnt,
    #[error("input/output error")]
    Io,
    #[error("permission denied")]
    Access,
    #[error("file exists")]
    Exist,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("invalid argument")]
    Inval,
    #[error("no space left on device")]
    NoSpace,
    #[error("read-only file system")]
    ReadOnly,
    #[error("directory not empty")]
    NotEmpty,
    #[error("file name too long")]
    NameTooLong,
    #[error("no such attribute")]
    NoAttr,
    #[error("result too large for the buffer")]
    Range,
    #[error("too many links")]
    TooManyLinks,
    #[error("file too large")]
    TooBig,
    #[error("operation not supported")]
    NotSupported,
    #[error("attribute already exists")]
    AttrExists,
    #[error("chunk is locked by another writer; retry")]
    Locked,
    #[error("no chunkservers available")]
    NoChunkservers,
    #[error("chunk version mismatch")]
    WrongVersion,
    #[error("chunk not found")]
    NoChunk,
    #[error("CRC mismatch")]
    Crc,
    #[error("not enough chunkservers for the requested copies")]
    NotEnoughServers,
    #[error("session is not registered")]
    NoSession,
    #[error("invalid cross-device operation")]
    CrossDevice,
    #[error("operation would loop")]
    Loop,
    #[error("timed out")]
    TimedOut,
    #[error("argument too large")]
    TooLarge,
    #[error("device or resource busy")]
    Busy,
    /// A quota's hard limit (or a soft one past its grace period) would be exceeded.
    #[error("disk quota exceeded")]
    Quota,
}

impl FsError {
    /// The errno a FUSE reply carries for this status.
    pub fn errno(self) -> i32 {
        match self {
            FsError::Perm => libc_errno::EPERM,
            FsError::NoEnt => libc_errno::ENOENT,
            FsError::Io | FsError::Crc | FsError::WrongVersion | FsError::NoChunk => {
                libc_errno::EIO
            }
            FsError::Access => libc_errno::EACCES,
            FsError::Exist => libc_errno::EEXIST,
            FsError::NotDir => libc_errno::ENOTDIR,
            FsError::IsDir => libc_errno::EISDIR,
            FsError::Inval => libc_errno::EINVAL,
            FsError::NoSpace | FsError::NoChunkservers | FsError::NotEnoughServers => {
                libc_errno::ENOSPC
            }
            FsError::ReadOnly => libc_errno::EROFS,
            FsError::NotEmpty => libc_errno::ENOTEMPTY,
            FsError::NameTooLong => libc_errno::ENAMETOOLONG,
            FsError::NoAttr => libc_errno::ENODATA,
            FsError::Range => libc_errno::ERANGE,
            FsError::TooManyLinks => libc_errno::EMLINK,
            FsError::TooBig => libc_errno::EFBIG,
            FsError::NotSupported => libc_errno::EOPNOTSUPP,
            FsError::AttrExists => libc_errno::EEXIST,
            FsError::Locked => libc_errno::EAGAIN,
            FsError::NoSession => libc_errno::EIO,
            FsError::CrossDevice => libc_errno::EXDEV,
            FsError::Loop => libc_errno::ELOOP,
            FsError::TimedOut => libc_errno::ETIMEDOUT,
            FsError::TooLarge => libc_errno::E2BIG,
            FsError::Busy => libc_errno::EBUSY,
            FsError::Quota => libc_errno::EDQUOT,
        }
    }
}

/// Linux errno values (the protocol is Linux-only; kept here to avoid a libc dependency).
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const E2BIG: i32 = 7;
    pub const EAGAIN: i32 = 11;
    pub const EACCES: i32 = 13;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const EXDEV: i32 = 18;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const EMLINK: i32 = 31;
    pub const ERANGE: i32 = 34;
    pub const ENAMETOOLONG: i32 = 36;
    pub const ENOTEMPTY: i32 = 39;
    pub const EDQUOT: i32 = 122;
    pub const ELOOP: i32 = 40;
    pub const ENODATA: i32 = 61;
    pub const EOPNOTSUPP: i32 = 95;
    pub const ETIMEDOUT: i32 = 110;
}

pub type FsResult<T> = Result<T, FsError>;

/// Kind of a file system object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    BlockDev,
    CharDev,
    Socket,
}

/// A point in time with nanosecond resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}

impl Timespec {
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timespec {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        }
    }

    pub fn to_system_time(self) -> std::time::SystemTime {
        let base = std::time::UNIX_EPOCH;
        if self.sec >= 0 {
            base + std::time::Duration::new(self.sec as u64, self.nsec)
        } else {
            base - std::time::Duration::from_secs(self.sec.unsigned_abs())
                + std::time::Duration::from_nanos(self.nsec as u64)
        }
    }

    pub fn from_system_time(t: std::time::SystemTime) -> Self {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timespec {
                sec: d.as_secs() as i64,
                nsec: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let mut sec = -(d.as_secs() as i64);
                let mut nsec = 0;
                if d.subsec_nanos() > 0 {
                    sec -= 1;
                    nsec = 1_000_000_000 - d.subsec_nanos();
                }
                Timespec { sec, nsec }
            }
        }
    }
}

/// Attributes of a file system object as the master reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    pub inode: Inode,
    pub kind: FileKind,
    /// Permission bits including setuid, setgid and sticky (07777).
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub nlink: u32,
    pub size: u64,
    pub rdev: u32,
    pub goal: u8,
    /// The object has extended attributes (without any, a mount answers their queries
    /// itself).
    pub xattrs: bool,
}

/// `mode` of a file once a write or truncation by a caller without `CAP_FSETID` dropped its
/// set-ID bits, as FUSE asks of a file system that drops them itself: no set-user-ID bit,
/// and no set-group-ID bit if the group may execute the file.
pub fn mode_after_write(mode: u16) -> u16 {
    let mut m = mode & !0o4000;
    if m & 0o010 != 0 {
        m &= !0o2000;
    }
    m
}

/// Who is asking: the caller's ids as the kernel gave them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cred {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (may be empty).
    pub groups: Vec<u32>,
}

impl Cred {
    pub fn root() -> Self {
        Cred::default()
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// `mode` of a file of group `gid` once this caller gave it a new owner or group
    /// (Linux's `setattr_should_drop_sgid`): no set-user-ID bit, and no set-group-ID bit when
    /// the group may execute the file or this caller is neither root nor in the group
    /// (without group execute permission the bit marks mandatory locking, not a privilege).
    pub fn mode_after_chown(&self, mode: u16, gid: u32) -> u16 {
        let m = mode_after_write(mode);
        if m & 0o2000 != 0 && !(self.uid == 0 || self.in_group(gid)) {
            m & !0o2000
        } else {
            m
        }
    }

    /// The mode and group of a new object of `kind` this caller makes with `mode` (umask
    /// applied) in a folder of mode `parent_mode` and group `parent_gid`: a set-group-id
    /// folder gives its group (and to a new folder its bit), and a file keeps no
    /// set-group-id bit for a group its creator is not in. The master makes objects so, and a
    /// mount that answers a create ahead tells the kernel the same.
    pub fn new_mode_and_group(
        &self,
        kind: FileKind,
        mode: u16,
        parent_mode: u16,
        parent_gid: u32,
    ) -> (u16, u32) {
        let parent_sgid = parent_mode & 0o2000 != 0;
        let gid = if parent_sgid { parent_gid } else { self.gid };
        let mut mode = mode & 0o7777;
        if kind == FileKind::Dir && parent_sgid {
            mode |= 0o2000;
        }
        if kind != FileKind::Dir && mode & 0o2000 != 0 && self.uid != 0 && !self.in_group(gid) {
            mode &= !0o2000;
        }
        (mode, gid)
    }
}

/// Address of a chunkserver's data port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CsAddr {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for CsAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A chunk copy as a chunkserver holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    pub chunk_id: u64,
    pub version: u32,
}

/// How a time attribute is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeSet {
    Now,
    At(Timespec),
}

/// Fields of a setattr call; `None` leaves the field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAttrs {
    pub mode: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
}

/// One entry of a directory listing, with the object's attributes (readdirplus).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub attr: Attr,
    /// Cookie to continue the listing after this entry.
    pub cookie: u64,
}

/// Space and usage of one chunkserver disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskReport {
    pub path: String,
    /// Bytes this disk may use in total (after size limits).
    pub total: u64,
    /// Bytes still available for chunks.
    pub avail: u64,
    /// Bytes held by chunk files.
    pub used: u64,
    pub chunks: u64,
    /// Read or CRC errors seen since start.
    pub errors: u64,
    pub marked_for_removal: bool,
    pub damaged: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_id_bits_dropped_by_a_write_or_a_change_of_owner() {
        assert_eq!(mode_after_write(0o4755), 0o755);
        assert_eq!(mode_after_write(0o6777), 0o777);
        assert_eq!(mode_after_write(0o2767), 0o2767, "mandatory locking mark");
        assert_eq!(mode_after_write(0o1644), 0o1644, "sticky bit stays");
        let cred = |uid, gid| Cred {
            uid,
            gid,
            groups: vec![],
        };
        let (root, member, outsider) = (cred(0, 0), cred(10, 20), cred(10, 99));
        assert_eq!(root.mode_after_chown(0o6755, 20), 0o755);
        assert_eq!(member.mode_after_chown(0o2745, 20), 0o2745);
        assert_eq!(root.mode_after_chown(0o2745, 20), 0o2745);
        assert_eq!(outsider.mode_after_chown(0o2745, 20), 0o745);
    }

    #[test]
    fn a_set_group_id_folder_gives_its_group_and_its_bit_to_new_folders() {
        let user = Cred {
            uid: 1000,
            gid: 100,
            groups: vec![],
        };
        assert_eq!(
            user.new_mode_and_group(FileKind::Dir, 0o755, 0o2775, 50),
            (0o2755, 50)
        );
        assert_eq!(
            user.new_mode_and_group(FileKind::Dir, 0o755, 0o775, 50),
            (0o755, 100)
        );
        assert_eq!(
            user.new_mode_and_group(FileKind::File, 0o2755, 0o2775, 50),
            (0o755, 50),
            "a file keeps no set-gid bit for a group its creator is not in"
        );
        assert_eq!(
            Cred::root().new_mode_and_group(FileKind::File, 0o102755, 0o2775, 50),
            (0o2755, 50)
        );
    }
}
