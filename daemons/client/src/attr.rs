//! Conversions between the master's attributes and FUSE's.

use std::time::{Duration, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo, TimeOrNow};
use moose_proto::{Attr, FileKind, TimeSet, Timespec};

/// Block size reported by `stat` (the chunkservers' block).
pub const BLKSIZE: u32 = moose_proto::BLOCK_SIZE;

pub fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::BlockDev => FileType::BlockDevice,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::Socket => FileType::Socket,
    }
}

/// The kind of node `mknod` creates for a mode (type bits 0 mean a regular file).
pub fn kind_from_mode(mode: u32) -> Option<FileKind> {
    match mode & libc::S_IFMT {
        0 | libc::S_IFREG => Some(FileKind::File),
        libc::S_IFIFO => Some(FileKind::Fifo),
        libc::S_IFCHR => Some(FileKind::CharDev),
        libc::S_IFBLK => Some(FileKind::BlockDev),
        libc::S_IFSOCK => Some(FileKind::Socket),
        _ => None,
    }
}

/// Permission bits (with setuid, setgid and sticky) of a mode.
pub fn perm_bits(mode: u32) -> u16 {
    (mode & 0o7777) as u16
}

/// FUSE attributes for the master's `a`, shown as inode `ino` with size `size`.
pub fn file_attr(a: &Attr, ino: u64, size: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: a.atime.to_system_time(),
        mtime: a.mtime.to_system_time(),
        ctime: a.ctime.to_system_time(),
        crtime: a.ctime.to_system_time(),
        kind: file_type(a.kind),
        perm: a.mode & 0o7777,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// FUSE attributes of a file with writes still buffered here: at least as long as the
/// buffered data reaches (`end`), and modified no earlier than the last buffered write
/// (`modified`); the master sets its times only when the data lands.
pub fn buffered_file_attr(
    a: &Attr,
    ino: u64,
    end: Option<u64>,
    modified: Option<Timespec>,
) -> FileAttr {
    let size = end.map_or(a.size, |e| e.max(a.size));
    let mut fa = file_attr(a, ino, size);
    if let Some(t) = modified.map(Timespec::to_system_time) {
        fa.mtime = fa.mtime.max(t);
        fa.ctime = fa.ctime.max(t);
    }
    fa
}

/// The entry of a name that does not exist: node id 0, which the kernel keeps as a negative
/// entry for the entry time it comes with (its other attributes are not looked at).
pub fn absent_entry() -> FileAttr {
    dot_attr(0)
}

/// Placeholder attributes for `.` and `..` in a readdirplus answer (the kernel ignores them).
pub fn dot_attr(ino: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::Directory,
        perm: 0o755,
        nlink: 2,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}

pub fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(st) => TimeSet::At(Timespec::from_system_time(st)),
    }
}

/// A TTL the kernel accepts (it keeps seconds in a u64 and nanoseconds in a u32).
pub fn ttl(d: Duration) -> Duration {
    d.min(Duration::from_secs(u32::MAX as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: FileKind, mode: u16) -> Attr {
        Attr {
            inode: 7,
            kind,
            mode,
            uid: 1,
            gid: 2,
            atime: Timespec { sec: 10, nsec: 5 },
            mtime: Timespec { sec: 20, nsec: 6 },
            ctime: Timespec { sec: 30, nsec: 7 },
            nlink: 3,
            size: 1000,
            rdev: 0,
            goal: 2,
            xattrs: false,
        }
    }

    #[test]
    fn converts_attributes() {
        let a = attr(FileKind::File, 0o4755);
        let f = file_attr(&a, 1, 1025);
        assert_eq!(f.ino, INodeNo(1));
        assert_eq!(f.size, 1025);
        assert_eq!(f.blocks, 3);
        assert_eq!(f.perm, 0o4755);
        assert_eq!(f.kind, FileType::RegularFile);
        assert_eq!(Timespec::from_system_time(f.mtime).sec, 20);
        assert_eq!(
            f.atime.duration_since(UNIX_EPOCH).unwrap(),
            Duration::new(10, 5)
        );
        assert_eq!((f.uid, f.gid, f.nlink, f.blksize), (1, 2, 3, 65536));
    }

    #[test]
    fn buffered_writes_show_in_size_and_times() {
        let a = attr(FileKind::File, 0o644);
        let untouched = buffered_file_attr(&a, 7, None, None);
        assert_eq!(untouched, file_attr(&a, 7, 1000));
        let later = Timespec { sec: 40, nsec: 1 };
        let f = buffered_file_attr(&a, 7, Some(5000), Some(later));
        assert_eq!(f.size, 5000);
        assert_eq!(Timespec::from_system_time(f.mtime), later);
        assert_eq!(Timespec::from_system_time(f.ctime), later);
        // Neither shrinks nor goes back in time.
        let earlier = Timespec { sec: 1, nsec: 0 };
        let f = buffered_file_attr(&a, 7, Some(10), Some(earlier));
        assert_eq!(f.size, 1000);
        assert_eq!(Timespec::from_system_time(f.mtime).sec, 20);
        assert_eq!(Timespec::from_system_time(f.ctime).sec, 30);
    }

    #[test]
    fn mknod_kinds() {
        assert_eq!(kind_from_mode(libc::S_IFREG | 0o644), Some(FileKind::File));
        assert_eq!(kind_from_mode(0o644), Some(FileKind::File));
        assert_eq!(kind_from_mode(libc::S_IFIFO), Some(FileKind::Fifo));
        assert_eq!(kind_from_mode(libc::S_IFSOCK), Some(FileKind::Socket));
        assert_eq!(kind_from_mode(libc::S_IFDIR), None);
        assert_eq!(perm_bits(libc::S_IFREG | 0o1777), 0o1777);
    }

    #[test]
    fn huge_ttl_is_clamped() {
        assert_eq!(ttl(Duration::from_secs(1)), Duration::from_secs(1));
        assert!(ttl(Duration::MAX) <= Duration::from_secs(u32::MAX as u64));
    }
}
