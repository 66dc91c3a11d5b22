//! The meta file system (`moose-mount -m`), laid out as stock MooseFS's `mfsmount -m`:
//!
//! ```text
//! trash/                    deleted files, in 4096 buckets by inode (trash/000 … trash/FFF),
//! trash/XXX/IIIIIIII|a|b    one file, named after its inode (hex) and its path ('/' → '|')
//! trash/XXX/undel/, trash/undel/   moving a file here puts it back at its path
//! ```
//!
//! With `-o mfsflattrash` the files are listed in `trash/` itself. A file of the trash can be
//! read; `rm` frees it now.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, Request,
};
use moose_proto::msg::{ClReply, ClRequest, TrashEntry, TRASH_BUCKETS};
use moose_proto::{Cred, Inode, MAX_NAME_LEN};
use parking_lot::Mutex;
use tokio::runtime::Handle;

use crate::attr;
use crate::master::{CallError, MasterClient};
use crate::reader::{ReadMode, Reader};

/// Inodes of the fixed folders, as stock numbers them.
const ROOT: u64 = 1;
const TRASH: u64 = 0x7FFF_FFF8;
const UNDEL: u64 = 0x7FFF_FFF9;
const FIRST_BUCKET: u64 = 0x7FFF_0000;
const TRASH_NAME: &str = "trash";
const UNDEL_NAME: &str = "undel";
/// Files asked from the master per listing request.
const LIST_BATCH: u32 = 1000;
/// Longest path shown in a name; longer ones show their end after "(...)", as in stock.
const MAX_SHOWN_PATH: usize = 240;
const SHOWN_TAIL: usize = 235;
const STATFS_BSIZE: u64 = 64 * 1024;

/// The fixed folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Folder {
    Root,
    Trash,
    Undel,
    Bucket(u32),
}

impl Folder {
    fn of(ino: u64) -> Option<Folder> {
        match ino {
            ROOT => Some(Folder::Root),
            TRASH => Some(Folder::Trash),
            UNDEL => Some(Folder::Undel),
            i if (FIRST_BUCKET..FIRST_BUCKET + u64::from(TRASH_BUCKETS)).contains(&i) => {
                Some(Folder::Bucket((i - FIRST_BUCKET) as u32))
            }
            _ => None,
        }
    }

    fn ino(self) -> u64 {
        match self {
            Folder::Root => ROOT,
            Folder::Trash => TRASH,
            Folder::Undel => UNDEL,
            Folder::Bucket(b) => FIRST_BUCKET + u64::from(b),
        }
    }

    /// Where files of the trash are listed and can be named.
    fn holds_files(self) -> bool {
        matches!(self, Folder::Trash | Folder::Bucket(_))
    }

    fn attr(self) -> FileAttr {
        // Stock's modes: the trash for root only, undel write-only.
        let perm = match self {
            Folder::Root => 0o555,
            Folder::Trash | Folder::Bucket(_) => 0o700,
            Folder::Undel => 0o200,
        };
        let now = SystemTime::now();
        FileAttr {
            ino: INodeNo(self.ino()),
            size: 0,
            blocks: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind: FileType::Directory,
            perm,
            nlink: 2,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: attr::BLKSIZE,
            flags: 0,
        }
    }
}

/// The name a file of the trash shows: its inode in hex, '|', its path with '/' as '|'.
pub fn entry_name(inode: Inode, path: &[u8]) -> Vec<u8> {
    let shown: Vec<u8> = if path.len() > MAX_SHOWN_PATH {
        let mut s = b"(...)".to_vec();
        s.extend_from_slice(&path[path.len() - SHOWN_TAIL..]);
        s
    } else {
        path.to_vec()
    };
    let mut name = format!("{inode:08X}|").into_bytes();
    name.extend(shown.into_iter().map(|b| if b == b'/' { b'|' } else { b }));
    name.truncate(MAX_NAME_LEN);
    name
}

/// The inode a trash name starts with (`IIIIIIII|…`), as stock reads it.
pub fn inode_of_name(name: &[u8]) -> Option<Inode> {
    let bar = name.iter().position(|&b| b == b'|')?;
    if bar == 0 || bar + 1 >= name.len() {
        return None;
    }
    let hex = std::str::from_utf8(&name[..bar]).ok()?;
    Inode::from_str_radix(hex, 16).ok().filter(|&i| i != 0)
}

/// A bucket's name: three hex digits.
fn bucket_name(b: u32) -> String {
    format!("{b:03X}")
}

fn bucket_of_name(name: &[u8]) -> Option<u32> {
    if name.len() != 3 {
        return None;
    }
    let b = u32::from_str_radix(std::str::from_utf8(name).ok()?, 16).ok()?;
    (b < TRASH_BUCKETS).then_some(b)
}

fn errno(e: CallError) -> Errno {
    Errno::from_i32(e.errno())
}

fn unexpected(what: &str, reply: &ClReply) -> Errno {
    tracing::error!("unexpected answer to {what}: {reply:?}");
    Errno::EIO
}

/// One listed name.
struct Listed {
    name: Vec<u8>,
    ino: u64,
    kind: FileType,
}

struct Core {
    master: MasterClient,
    reader: Arc<Reader>,
    flat: bool,
    ttl: Duration,
    next_fh: AtomicU64,
    /// Listings taken at opendir, served page by page.
    dirs: Mutex<HashMap<u64, Vec<Listed>>>,
    /// Open handles per file of the trash (the master hears of the first open and last close).
    opens: Mutex<HashMap<Inode, u32>>,
}

impl Core {
    async fn entry(&self, inode: Inode) -> Result<TrashEntry, Errno> {
        match self.master.call(ClRequest::TrashGet { inode }).await {
            Ok(ClReply::TrashEntry(e)) => Ok(e),
            Ok(other) => Err(unexpected("trash lookup", &other)),
            Err(e) => Err(errno(e)),
        }
    }

    fn file_attr(&self, e: &TrashEntry) -> FileAttr {
        attr::file_attr(&e.attr, e.attr.inode, e.attr.size)
    }

    /// Every file of the trash (of one bucket when given).
    async fn trash(&self, bucket: Option<u32>) -> Result<Vec<TrashEntry>, Errno> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let req = ClRequest::TrashList {
                bucket,
                after,
                max: LIST_BATCH,
            };
            match self.master.call(req).await {
                Ok(ClReply::Trash { entries, eof }) => {
                    after = entries.last().map_or(after, |e| e.attr.inode);
                    all.extend(entries);
                    if eof {
                        return Ok(all);
                    }
                }
                Ok(other) => return Err(unexpected("trash listing", &other)),
                Err(e) => return Err(errno(e)),
            }
        }
    }

    async fn listing(&self, folder: Folder) -> Result<Vec<Listed>, Errno> {
        let dir = |name: &str, ino: u64| Listed {
            name: name.as_bytes().to_vec(),
            ino,
            kind: FileType::Directory,
        };
        let parent = match folder {
            Folder::Root | Folder::Trash => ROOT,
            Folder::Undel | Folder::Bucket(_) => TRASH,
        };
        let mut out = vec![dir(".", folder.ino()), dir("..", parent)];
        match folder {
            Folder::Root => out.push(dir(TRASH_NAME, TRASH)),
            Folder::Undel => {}
            Folder::Trash | Folder::Bucket(_) => {
                out.push(dir(UNDEL_NAME, UNDEL));
                let files = match folder {
                    Folder::Bucket(b) => Some(Some(b)),
                    _ if self.flat => Some(None),
                    _ => None,
                };
                match files {
                    Some(bucket) => {
                        for e in self.trash(bucket).await? {
                            out.push(Listed {
                                name: entry_name(e.attr.inode, &e.path),
                                ino: e.attr.inode,
                                kind: FileType::RegularFile,
                            });
                        }
                    }
                    None => out.extend(
                        (0..TRASH_BUCKETS).map(|b| dir(&bucket_name(b), Folder::Bucket(b).ino())),
                    ),
                }
            }
        }
        Ok(out)
    }

    async fn lookup(&self, parent: Folder, name: &[u8]) -> Result<FileAttr, Errno> {
        let folder = match (parent, name) {
            (_, b".") => Some(parent),
            (Folder::Root | Folder::Trash, b"..") => Some(Folder::Root),
            (Folder::Undel | Folder::Bucket(_), b"..") => Some(Folder::Trash),
            (Folder::Root, n) if n == TRASH_NAME.as_bytes() => Some(Folder::Trash),
            (Folder::Trash | Folder::Bucket(_), n) if n == UNDEL_NAME.as_bytes() => {
                Some(Folder::Undel)
            }
            (Folder::Trash, n) => bucket_of_name(n).map(Folder::Bucket),
            _ => None,
        };
        if let Some(f) = folder {
            return Ok(f.attr());
        }
        if !parent.holds_files() {
            return Err(Errno::ENOENT);
        }
        let inode = inode_of_name(name).ok_or(Errno::ENOENT)?;
        let e = self.entry(inode).await?;
        Ok(self.file_attr(&e))
    }

    async fn open(&self, inode: Inode, flags: i32, cred: Cred) -> Result<(), Errno> {
        // The first open tells the master (which grants reading); later ones only count.
        let first = {
            let mut opens = self.opens.lock();
            let n = opens.entry(inode).or_default();
            *n += 1;
            *n == 1
        };
        if !first {
            return Ok(());
        }
        match self
            .master
            .call(ClRequest::Open { inode, flags, cred })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                self.closed(inode);
                Err(errno(e))
            }
        }
    }

    /// One handle closed; true when it was the last on the file.
    fn closed(&self, inode: Inode) -> bool {
        let mut opens = self.opens.lock();
        match opens.get_mut(&inode) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                opens.remove(&inode);
                true
            }
            None => false,
        }
    }

    async fn done(&self, what: &str, req: ClRequest) -> Result<(), Errno> {
        match self.master.call(req).await {
            Ok(ClReply::Done) => Ok(()),
            Ok(other) => Err(unexpected(what, &other)),
            Err(e) => Err(errno(e)),
        }
    }
}

/// The meta file system served to FUSE.
pub struct MetaFs {
    core: Arc<Core>,
    rt: Handle,
}

impl MetaFs {
    pub fn new(
        master: MasterClient,
        reader: Arc<Reader>,
        flat: bool,
        ttl: Duration,
        rt: Handle,
    ) -> Self {
        MetaFs {
            core: Arc::new(Core {
                master,
                reader,
                flat,
                ttl: attr::ttl(ttl),
                next_fh: AtomicU64::new(1),
                dirs: Mutex::new(HashMap::new()),
                opens: Mutex::new(HashMap::new()),
            }),
            rt,
        }
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, f: F) {
        self.rt.spawn(f);
    }
}

fn own_cred(req: &Request) -> Cred {
    Cred {
        uid: req.uid(),
        gid: req.gid(),
        groups: Vec::new(),
    }
}

impl Filesystem for MetaFs {
    fn destroy(&mut self) {
        let master = self.core.master.clone();
        // Unmounted: the master releases this session's files now.
        self.rt.block_on(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), master.close_session()).await;
        });
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(parent) = Folder::of(parent.0) else {
            return reply.error(Errno::ENOTDIR);
        };
        let name = name.as_bytes().to_vec();
        let core = self.core.clone();
        self.spawn(async move {
            match core.lookup(parent, &name).await {
                Ok(fa) => reply.entry_with_ttls(&core.ttl, &core.ttl, &fa, Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if let Some(f) = Folder::of(ino.0) {
            return reply.attr(&self.core.ttl, &f.attr());
        }
        let core = self.core.clone();
        self.spawn(async move {
            match core.entry(ino.0).await {
                Ok(e) => reply.attr(&core.ttl, &core.file_attr(&e)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if Folder::of(ino.0).is_some() {
            return reply.error(Errno::EISDIR);
        }
        let core = self.core.clone();
        let cred = own_cred(req);
        self.spawn(async move {
            match core.open(ino.0, flags.0, cred).await {
                Ok(()) => {
                    let fh = core.next_fh.fetch_add(1, Ordering::Relaxed);
                    reply.opened(FileHandle(fh), FopenFlags::empty())
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let reader = self.core.reader.clone();
        self.spawn(async move {
            match reader.read(ino.0, offset, size, ReadMode::Random).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(Errno::from_i32(e.errno())),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is written through a meta mount: nothing to write out at a close.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if !self.core.closed(ino.0) {
            return reply.ok();
        }
        let core = self.core.clone();
        self.spawn(async move {
            core.reader.invalidate(ino.0);
            match core
                .done("release", ClRequest::Release { inode: ino.0 })
                .await
            {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let Some(folder) = Folder::of(ino.0) else {
            return reply.error(Errno::ENOTDIR);
        };
        let core = self.core.clone();
        self.spawn(async move {
            match core.listing(folder).await {
                Ok(list) => {
                    let fh = core.next_fh.fetch_add(1, Ordering::Relaxed);
                    core.dirs.lock().insert(fh, list);
                    reply.opened(FileHandle(fh), FopenFlags::empty())
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let dirs = self.core.dirs.lock();
        let Some(list) = dirs.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (k, l) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(l.ino),
                k as u64 + 1,
                l.kind,
                OsStr::from_bytes(&l.name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.core.dirs.lock().remove(&fh.0);
        reply.ok();
    }

    /// `rm` of a file in the trash frees it now.
    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if !Folder::of(parent.0).is_some_and(Folder::holds_files) {
            return reply.error(Errno::EACCES);
        }
        let Some(inode) = inode_of_name(name.as_bytes()) else {
            return reply.error(Errno::ENOENT);
        };
        let core = self.core.clone();
        self.spawn(async move {
            match core.done("purge", ClRequest::TrashPurge { inode }).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    /// `mv` of a file of the trash into `undel/` puts it back where it was.
    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !Folder::of(parent.0).is_some_and(Folder::holds_files) || newparent.0 != UNDEL {
            return reply.error(Errno::EACCES);
        }
        let Some(inode) = inode_of_name(name.as_bytes()) else {
            return reply.error(Errno::ENOENT);
        };
        let core = self.core.clone();
        self.spawn(async move {
            match core.done("undelete", ClRequest::Undelete { inode }).await {
                Ok(()) => reply.ok(),
                Err(e) => {
                    tracing::info!("undelete of inode {inode} refused: {e:?}");
                    reply.error(e)
                }
            }
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let core = self.core.clone();
        self.spawn(async move {
            match core.master.call(ClRequest::Statfs).await {
                Ok(ClReply::Statfs(s)) => reply.statfs(
                    s.total / STATFS_BSIZE,
                    s.avail / STATFS_BSIZE,
                    s.avail / STATFS_BSIZE,
                    0,
                    0,
                    STATFS_BSIZE as u32,
                    MAX_NAME_LEN as u32,
                    STATFS_BSIZE as u32,
                ),
                Ok(other) => reply.error(unexpected("statfs", &other)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_stock_shows_them() {
        let name = entry_name(0x2A, b"dir/file.txt");
        assert_eq!(name, b"0000002A|dir|file.txt");
        assert_eq!(inode_of_name(&name), Some(0x2A));
        assert_eq!(inode_of_name(b"0000002A|"), None);
        assert_eq!(inode_of_name(b"file.txt"), None);
        assert_eq!(inode_of_name(b"zz|a"), None);
        let long = vec![b'x'; 300];
        let name = entry_name(1, &long);
        assert!(name.starts_with(b"00000001|(...)xxx"));
        assert_eq!(name.len(), 9 + 5 + SHOWN_TAIL);
        assert_eq!(inode_of_name(&name), Some(1));
    }

    #[test]
    fn fixed_folders_and_buckets() {
        assert_eq!(bucket_name(0x2A), "02A");
        assert_eq!(bucket_of_name(b"02A"), Some(0x2A));
        assert_eq!(bucket_of_name(b"FFF"), Some(4095));
        assert_eq!(bucket_of_name(b"1000"), None);
        assert_eq!(Folder::of(FIRST_BUCKET + 0x2A), Some(Folder::Bucket(0x2A)));
        assert_eq!(Folder::of(TRASH), Some(Folder::Trash));
        assert_eq!(Folder::of(42), None);
        assert!(!Folder::Undel.holds_files());
    }
}
