//! The FUSE file system. Every request is handed to the tokio runtime and answered from its
//! task, so a slow call never holds up the FUSE threads.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use moose_proto::msg::{ClReply, ClRequest, CreateAhead};
use moose_proto::{Attr, Cred, FileKind, FsError, Inode, SetAttrs, CHUNK_SIZE, MAX_NAME_LEN};
use tokio::runtime::Handle;

use crate::ahead::{self, Ahead, Slot};
use crate::attr;
use crate::change_counts::Stamp;
use crate::cred::CredCache;
use crate::dirents::{self, DirBuffer, Resume};
use crate::extents::MAX_FILE_SIZE;
use crate::inode_pool::InodePool;
use crate::kernel_pages;
use crate::known::Sweep;
use crate::master::{Call, CallError, MasterClient};
use crate::reader::{ReadData, ReadMode, Reader, READ_AT_OPEN};
use crate::stale_pages::StalePages;
use crate::writer::Writer;

/// Entries asked from the master per directory listing request.
const READDIR_BATCH: u32 = 256;
/// A read within this distance of the previous one's end counts as sequential.
const SEQUENTIAL_SLACK: u64 = 256 * 1024;
/// Block size reported by statfs.
const STATFS_BSIZE: u64 = 64 * 1024;
/// Requested largest write and read-ahead.
const MAX_WRITE: u32 = 1 << 20;
const MAX_READAHEAD: u32 = 1 << 20;
/// Remembered "no such attribute" answers.
const MAX_ABSENT_XATTRS: usize = 16384;
/// How long a truncation waits for another writer of a chunk it cuts.
const LOCKED_PATIENCE: Duration = Duration::from_secs(60);
/// Quota news is asked for this long before what the master said runs out.
const QUOTA_NEWS_MARGIN: Duration = Duration::from_millis(500);
/// Times an attribute answer overtaken by a write-out of the file is asked for again.
const ATTR_ATTEMPTS: u32 = 8;
/// How long a file's mode seen without set-ID bits spares a write the check for them, at
/// least: the kernel leaves dropping them to the file system (`FUSE_HANDLE_KILLPRIV_V2`).
const PLAIN_MODE_TTL: Duration = Duration::from_secs(1);

/// Settings of the file system.
#[derive(Debug, Clone)]
pub struct FsConfig {
    pub attr_ttl: Duration,
    pub entry_ttl: Duration,
    /// How long the kernel keeps "no such name" (0: not kept).
    pub neg_entry_ttl: Duration,
    /// Changes whose outcome the mount knows are answered before the master's answer
    /// (see `ahead.rs`).
    pub answer_ahead: bool,
}

/// State of one open directory handle.
#[derive(Default)]
struct DirHandle {
    /// Entries fetched from the master but not handed to the kernel yet.
    buffer: DirBuffer,
    /// The listing, while it is read from the start (see [`Sweep`]).
    sweep: Option<Sweep>,
}

/// State of one open file handle.
struct OpenFile {
    /// End of the previous read (sequential detection).
    last_end: u64,
    /// Consecutive sequential reads.
    run: u32,
}

struct Core {
    master: MasterClient,
    reader: Arc<Reader>,
    writer: Arc<Writer>,
    creds: CredCache,
    attr_ttl: Duration,
    entry_ttl: Duration,
    neg_entry_ttl: Duration,
    /// Master inode of the mounted folder (FUSE inode 1).
    root: AtomicU64,
    next_fh: AtomicU64,
    files: Mutex<HashMap<u64, OpenFile>>,
    dirs: Mutex<HashMap<u64, DirHandle>>,
    /// Open handles per inode; the lock orders Open/Release of one inode.
    opens: Mutex<HashMap<Inode, Arc<tokio::sync::Mutex<u32>>>>,
    absent_xattrs: Mutex<HashMap<(Inode, Vec<u8>), Instant>>,
    /// Inodes the master last reported without extended attributes, and when.
    bare: Mutex<HashMap<Inode, Instant>>,
    /// Files last seen without set-ID bits, and when (see [`PLAIN_MODE_TTL`]).
    plain: Mutex<HashMap<Inode, Instant>>,
    /// How far files may grow under quotas.
    grants: crate::quota_grant::Grants,
    /// Changes answered before the master's answer.
    ahead: Ahead,
    /// Inode numbers for creates answered ahead.
    pool: InodePool,
    /// Tells the kernel to drop what it keeps (set once the FUSE session runs).
    notifier: std::sync::OnceLock<fuser::Notifier>,
    rt: Handle,
}

/// Extended attribute names of POSIX ACLs: the master keeps none, and the mount refuses
/// them itself (`EOPNOTSUPP`, as the master would).
const POSIX_ACL_PREFIX: &[u8] = b"system.posix_acl_";

/// The SELinux label. A host that runs SELinux labels a FUSE mount by its policy and never
/// asks the file system (its `chcon` there fails with `EOPNOTSUPP`); elsewhere a stored label
/// means nothing. The mount refuses it as unsupported: `ls -l` then stops asking for it after
/// the first file of the mount (coreutils keeps that answer per device), where "no such
/// attribute" made it ask for every file, a round trip through the kernel each.
const SELINUX_LABEL: &[u8] = b"security.selinux";

/// Names the mount refuses itself, as attributes this file system does not keep.
fn unsupported_xattr(name: &[u8]) -> bool {
    name.starts_with(POSIX_ACL_PREFIX) || name == SELINUX_LABEL
}

fn errno(e: CallError) -> Errno {
    Errno::from_i32(e.errno())
}

fn fs_errno(e: FsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn unexpected(what: &str, reply: &ClReply) -> Errno {
    tracing::error!("unexpected answer to {what}: {reply:?}");
    Errno::EIO
}

fn expect_attr(what: &str, r: Result<ClReply, CallError>) -> Result<Attr, Errno> {
    match r {
        Ok(ClReply::Attr(a)) => Ok(a),
        Ok(other) => Err(unexpected(what, &other)),
        Err(e) => Err(errno(e)),
    }
}

/// Why a change answered ahead was not made, for the log.
fn not_done(r: Result<ClReply, CallError>) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(r) => format!("unexpected answer {r:?}"),
    }
}

fn expect_done(what: &str, r: Result<ClReply, CallError>) -> Result<(), Errno> {
    match r {
        Ok(ClReply::Done) | Ok(ClReply::Attr(_)) => Ok(()),
        Ok(other) => Err(unexpected(what, &other)),
        Err(e) => Err(errno(e)),
    }
}

fn name_bytes(name: &OsStr) -> Result<Vec<u8>, Errno> {
    let b = name.as_bytes();
    if b.len() > MAX_NAME_LEN {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(b.to_vec())
}

/// A name the kernel can take from a listing.
fn listable(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Core {
    fn root(&self) -> Inode {
        self.root.load(Ordering::Relaxed)
    }

    fn to_master(&self, ino: INodeNo) -> Inode {
        if ino == INodeNo::ROOT {
            self.root()
        } else {
            ino.0
        }
    }

    fn to_fuse(&self, inode: Inode) -> u64 {
        if inode == self.root() {
            INodeNo::ROOT.0
        } else {
            inode
        }
    }

    fn cred(&self, req: &Request) -> Cred {
        self.creds.cred(req.uid(), req.gid(), req.pid())
    }

    /// FUSE attributes for the master's `a`, asked for at writer epoch `epoch` (taken before
    /// the request), with the size and modification time of data still buffered here.
    ///
    /// When buffered data of the file landed at the master while `a` was asked for, `a` may
    /// predate it while the buffer no longer shows it: the kernel would take the file as
    /// shorter than what it wrote. Such an answer is asked for again.
    async fn fuse_attr_at(&self, mut a: Attr, mut epoch: u64) -> FileAttr {
        if let Some(fa) = self.fuse_attr_now(&a, epoch) {
            return fa;
        }
        let ino = self.to_fuse(a.inode);
        for _ in 0..ATTR_ATTEMPTS {
            if let Some(p) = self.writer.pending_since(a.inode, epoch) {
                return attr::buffered_file_attr(&a, ino, p.end, p.modified);
            }
            epoch = self.writer.epoch();
            match expect_attr(
                "getattr",
                self.call(ClRequest::GetAttr { inode: a.inode }).await,
            ) {
                Ok(fresh) => a = fresh,
                Err(e) => {
                    tracing::debug!("attributes of inode {} asked again: {e:?}", a.inode);
                    break;
                }
            }
        }
        // Write-outs kept overtaking the answers: what the master said last with what is
        // buffered now.
        let p = self
            .writer
            .pending_since(a.inode, u64::MAX)
            .unwrap_or_default();
        attr::buffered_file_attr(&a, ino, p.end, p.modified)
    }

    /// [`Core::fuse_attr_at`] when it needs no request: `None` when the file's buffered data
    /// landed while `a` was asked for.
    fn fuse_attr_now(&self, a: &Attr, epoch: u64) -> Option<FileAttr> {
        self.note_xattrs(a);
        self.note_mode(a);
        let ino = self.to_fuse(a.inode);
        if a.kind != FileKind::File {
            return Some(attr::file_attr(a, ino, a.size));
        }
        self.writer
            .pending_since(a.inode, epoch)
            .map(|p| attr::buffered_file_attr(a, ino, p.end, p.modified))
    }

    /// Answers an entry request at once with the master's answer to a request sent at writer
    /// epoch `epoch`, or from a task when the attributes must be asked for again.
    fn answer_entry(self: &Arc<Self>, reply: ReplyEntry, r: Result<Attr, Errno>, epoch: u64) {
        match r.map(|a| (self.fuse_attr_now(&a, epoch), a)) {
            Ok((Some(fa), _)) => reply.entry_with_ttls(
                &attr::ttl(self.attr_ttl),
                &attr::ttl(self.entry_ttl),
                &fa,
                Generation(0),
            ),
            Ok((None, a)) => {
                let core = self.clone();
                self.rt
                    .spawn(async move { core.reply_entry(reply, Ok(a), epoch).await });
            }
            Err(e) => reply.error(e),
        }
    }

    /// Answers an attribute request like [`Core::answer_entry`].
    fn answer_attr(self: &Arc<Self>, reply: ReplyAttr, r: Result<Attr, Errno>, epoch: u64) {
        match r.map(|a| (self.fuse_attr_now(&a, epoch), a)) {
            Ok((Some(fa), _)) => reply.attr(&attr::ttl(self.attr_ttl), &fa),
            Ok((None, a)) => {
                let core = self.clone();
                self.rt.spawn(async move {
                    let fa = core.fuse_attr_at(a, epoch).await;
                    reply.attr(&attr::ttl(core.attr_ttl), &fa)
                });
            }
            Err(e) => reply.error(e),
        }
    }

    /// Sends a request whose answer is an entry (lookup, mknod, …) and answers the kernel
    /// from the connection's reader.
    fn entry_request(self: &Arc<Self>, what: &'static str, req: ClRequest, reply: ReplyEntry) {
        let epoch = self.writer.epoch();
        let core = self.clone();
        self.master.start_then(req, move |r| {
            core.answer_entry(reply, expect_attr(what, r), epoch)
        });
    }

    /// Answers a lookup of a name that does not exist: an error, or a negative entry the
    /// kernel keeps for `mfsnegentrycacheto`.
    fn answer_missing(&self, reply: ReplyEntry) {
        if self.neg_entry_ttl.is_zero() {
            return reply.error(Errno::ENOENT);
        }
        let ttl = attr::ttl(self.neg_entry_ttl);
        reply.entry_with_ttls(&ttl, &ttl, &attr::absent_entry(), Generation(0))
    }

    /// Sends a request whose answer is attributes (getattr, setattr) and answers the kernel
    /// from the connection's reader.
    fn attr_request(self: &Arc<Self>, what: &'static str, req: ClRequest, reply: ReplyAttr) {
        let epoch = self.writer.epoch();
        let core = self.clone();
        self.master.start_then(req, move |r| {
            core.answer_attr(reply, expect_attr(what, r), epoch)
        });
    }

    /// Changes attributes other than the size of `ino`, whose buffered data landed: answered
    /// ahead of the master when the mount holds the file's current attributes and the change
    /// qualifies (see `ahead.rs`), else asked of the master.
    fn set_attrs(self: &Arc<Self>, ino: u64, set: SetAttrs, cred: Cred, reply: ReplyAttr) {
        let inode = self.to_master(INodeNo(ino));
        if let Some(slot) = self.ahead.slot(&self.master.session(), cred.uid) {
            let base = self.writer.landed_attr(inode, self.attr_ttl);
            if let Some(base) = base.filter(|a| ahead::may_set(a, &set, &cred)) {
                return self.set_attrs_ahead(ino, base, set, cred, slot, reply);
            }
        }
        self.setattr_request(inode, set, cred, reply)
    }

    /// Sends a change of mode, owner or times and answers the kernel from the connection's
    /// reader.
    fn setattr_request(
        self: &Arc<Self>,
        inode: Inode,
        set: SetAttrs,
        cred: Cred,
        reply: ReplyAttr,
    ) {
        let epoch = self.writer.epoch();
        let before = self.master.changes().stamp(inode);
        let core = self.clone();
        self.master
            .start_then(ClRequest::SetAttr { inode, set, cred }, move |r| {
                let r = expect_attr("setattr", r);
                if let Ok(a) = &r {
                    core.note_changed(inode, a, before);
                }
                core.answer_attr(reply, r, epoch)
            });
    }

    /// Keeps the answer to a change of `inode` sent when its changes stood at `before`, if
    /// nothing else that may touch it was sent or answered since, for the kernel's next
    /// getattr: a `chown` first asks for the file's attributes afresh (to clear set-id bits),
    /// right after the `futimens` or `write` that `tar` and `cp -a` make before it.
    fn note_changed(&self, inode: Inode, a: &Attr, before: Stamp) {
        if let Some(stamp) = self.master.changes().alone_since(inode, before) {
            self.writer.note_landed(inode, a.clone(), stamp);
        }
    }

    /// Keeps `a`, what a change answered ahead (sent when the file's changes stood at
    /// `before`) made of a file, for what the kernel does next with it (the `futimens` of
    /// `touch` after its create, the `chown` after a `futimens`), unless anything else that
    /// may touch it went out since; and whether it has set-ID bits.
    fn note_ahead(&self, a: &Attr, before: Stamp) {
        self.note_mode(a);
        if let Some(stamp) = self.master.changes().sent_alone_since(a.inode, before) {
            self.writer.note_landed(a.inode, a.clone(), stamp);
        }
    }

    /// Sends a request answered with `Done` (unlink, rename, …) and answers the kernel from
    /// the connection's reader.
    fn done_request(&self, what: &'static str, req: ClRequest, reply: ReplyEmpty) {
        self.master
            .start_then(req, move |r| match expect_done(what, r) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            });
    }

    /// Creates `name` in `parent`, a folder this mount knows whole, with an inode of the pool,
    /// and answers the kernel before the master does (see `ahead.rs`). Gives `reply` back when
    /// the outcome cannot be foreseen: the pool is empty, the cluster may have quotas, the
    /// folder's attributes or names are not known here.
    fn create_ahead(
        self: &Arc<Self>,
        parent: Inode,
        name: &[u8],
        modes: (u16, u16),
        flags: i32,
        cred: &Cred,
        reply: ReplyCreate,
    ) -> Result<(), ReplyCreate> {
        let session = self.master.session();
        let Some(slot) = self.ahead.slot(&session, cred.uid) else {
            return Err(reply);
        };
        let session = crate::inode_pool::session_tag(&session);
        self.refill_inodes(session);
        let folder = self.master.folders().get(parent, self.attr_ttl);
        let Some(folder) = folder.filter(|_| self.grants.none_known(Duration::ZERO)) else {
            return Err(reply);
        };
        let now = moose_proto::Timespec::now();
        let sent = self.pool.with_next(session, |inode| {
            if !self.master.known().put(parent, name) {
                return None;
            }
            let a = ahead::new_file_attr(&folder, inode, modes, cred, now);
            self.master.folders().changed_ahead(parent, now, true);
            let before = self.master.changes().stamp(inode);
            let req = ClRequest::Create {
                parent,
                name: name.to_vec(),
                mode: modes.0,
                umask: modes.1,
                flags,
                cred: cred.clone(),
                ahead: Some(CreateAhead { inode, time: now }),
            };
            let (core, expected, name) = (self.clone(), a.clone(), name.to_vec());
            // Queued before the kernel's answer: whatever the kernel asks next comes after
            // it. Written after that answer.
            let held = self.master.start_ahead(req, move |r| {
                core.created_ahead(parent, &name, expected, slot, r)
            });
            Some((a, before, held))
        });
        let Some((a, before, _held)) = sent else {
            return Err(reply);
        };
        self.note_ahead(&a, before);
        let counter = self.open_counter(a.inode);
        let core = self.clone();
        let cred = cred.clone();
        let opened = move |count: &mut u32| {
            let fh = core.open_created(&a, flags, cred, count);
            reply.created(
                &attr::ttl(core.entry_ttl.min(core.attr_ttl)),
                &attr::file_attr(&a, core.to_fuse(a.inode), 0),
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            )
        };
        // Nobody else knows the new inode yet: its counter is free, but for a racing open.
        let locked = counter.try_lock();
        match locked {
            Ok(mut count) => opened(&mut count),
            Err(_) => {
                drop(locked);
                self.rt
                    .spawn(async move { opened(&mut *counter.lock().await) });
            }
        }
        Ok(())
    }

    /// The master's answer to a create answered ahead, with the attributes the kernel was told.
    fn created_ahead(
        &self,
        parent: Inode,
        name: &[u8],
        expected: Attr,
        slot: Slot,
        r: Result<ClReply, CallError>,
    ) {
        self.master.folders().settled_ahead(parent);
        drop(slot);
        let shown = String::from_utf8_lossy(name);
        match r {
            Ok(ClReply::Attr(a)) if a == expected => {}
            Ok(ClReply::Attr(a)) => {
                tracing::warn!(
                    "the master made '{shown}' in folder {parent} with other attributes than \
                     this mount told the kernel ({a:?}, not {expected:?}); the kernel asks again"
                );
                self.writer.drop_landed(a.inode);
                self.kernel_forget(a.inode, None);
            }
            other => {
                let why = not_done(other);
                tracing::warn!(
                    "the master did not create '{shown}' in folder {parent} ({why}) after this \
                     mount had answered the create: the file is not there, and its open handle \
                     fails"
                );
                self.master.known().forget(parent);
                self.master.folders().forget(parent);
                self.writer.drop_landed(expected.inode);
                self.kernel_forget(parent, Some(name.to_vec()));
            }
        }
    }

    /// Makes the kernel drop the name `name` of `parent` (with `Some`) or the attributes of
    /// `inode` it keeps from an answer given ahead that the master refused. Not on a runtime
    /// thread: the kernel may first wait for a request in the folder that one must answer.
    /// The task it runs in is returned, for whoever must wait for it.
    fn kernel_forget(
        &self,
        inode: Inode,
        name: Option<Vec<u8>>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let notifier = self.notifier.get().cloned()?;
        let ino = INodeNo(self.to_fuse(inode));
        Some(self.rt.spawn_blocking(move || {
            let r = match &name {
                Some(n) => notifier.inval_entry(ino, OsStr::from_bytes(n)),
                None => notifier.inval_inode(ino, -1, 0),
            };
            if let Err(e) = r {
                tracing::debug!("making the kernel forget inode {} {name:?}: {e}", ino.0);
            }
        }))
    }

    /// Asks the master for more inode numbers when the pool runs low, or for news of quotas
    /// before what it said runs out.
    fn refill_inodes(self: &Arc<Self>, session: u64) {
        let refresh = !self.grants.none_known(QUOTA_NEWS_MARGIN);
        let Some(count) = self.pool.wanted(session, refresh) else {
            return;
        };
        let asked = Instant::now();
        let core = Arc::downgrade(self);
        self.master
            .start_then(ClRequest::ReserveInodes { count }, move |r| {
                let Some(core) = core.upgrade() else {
                    return;
                };
                match r {
                    Ok(ClReply::Inodes {
                        first,
                        count,
                        quotas,
                    }) => {
                        core.grants.note_cluster(quotas, asked);
                        core.pool.refilled(session, first, count);
                    }
                    other => {
                        core.pool.refill_failed();
                        tracing::debug!("reserving inode numbers: {other:?}");
                    }
                }
            });
    }

    /// Changes the mode, owner or times of a file whose current attributes `base` the mount
    /// has (see [`ahead::may_set`]), and answers the kernel before the master does (see
    /// `ahead.rs`). "Now" is this host's clock, sent as such, so the master keeps the times
    /// the kernel was told.
    fn set_attrs_ahead(
        self: &Arc<Self>,
        ino: u64,
        base: Attr,
        set: SetAttrs,
        cred: Cred,
        slot: Slot,
        reply: ReplyAttr,
    ) {
        let now = moose_proto::Timespec::now();
        let set = ahead::pinned(set, now);
        let inode = base.inode;
        let a = ahead::changed_attr(base, &set, &cred, now);
        let before = self.master.changes().stamp(inode);
        let (core, expected) = (self.clone(), a.clone());
        // Queued before the kernel's answer: whatever the kernel asks next comes after it.
        // Written after that answer.
        let _held = self
            .master
            .start_ahead(ClRequest::SetAttr { inode, set, cred }, move |r| {
                drop(slot);
                match r {
                    Ok(ClReply::Attr(a)) if ahead::same_but_ctime(&a, &expected) => {}
                    other => {
                        let why = match other {
                            Err(e) => e.to_string(),
                            Ok(a) => format!("it made them {a:?}, not {expected:?}"),
                        };
                        tracing::warn!(
                            "the master did not change the attributes of inode {inode} as this \
                             mount had answered ({why}); the kernel asks again"
                        );
                        core.writer.drop_landed(inode);
                        core.kernel_forget(inode, None);
                    }
                }
            });
        self.note_ahead(&a, before);
        reply.attr(&attr::ttl(self.attr_ttl), &attr::file_attr(&a, ino, a.size));
    }

    /// Removes `name`, which this mount knows `parent` has, and answers the kernel before the
    /// master does (see `ahead.rs`); a refusal by the master is logged when it comes.
    fn unlink_ahead(
        &self,
        parent: Inode,
        name: Vec<u8>,
        cred: Cred,
        slot: Slot,
        reply: ReplyEmpty,
    ) {
        self.master
            .folders()
            .changed_ahead(parent, moose_proto::Timespec::now(), false);
        let master = self.master.clone();
        let req = ClRequest::Unlink {
            parent,
            name: name.clone(),
            cred,
        };
        // Queued before the kernel's answer: whatever the kernel asks next comes after it.
        // Written after that answer.
        let _held = self.master.start_ahead(req, move |r| {
            master.folders().settled_ahead(parent);
            drop(slot);
            let shown = String::from_utf8_lossy(&name);
            match r {
                Ok(ClReply::Done) => {}
                Err(CallError::Fs(FsError::NoEnt)) => tracing::debug!(
                    "unlink of '{shown}' in folder {parent}: another session removed or moved it first"
                ),
                other => {
                    let why = not_done(other);
                    tracing::warn!(
                        "the master did not remove '{shown}' from folder {parent} ({why}) after this \
                         mount had answered the unlink: the name may still be there (another \
                         session changed the folder's permissions at the same moment?)"
                    );
                    master.known().forget(parent);
                    master.folders().forget(parent);
                }
            }
        });
        reply.ok();
    }

    /// Answers an entry request with the master's answer to a request sent at writer epoch
    /// `epoch`.
    async fn reply_entry(&self, reply: ReplyEntry, r: Result<Attr, Errno>, epoch: u64) {
        match r {
            Ok(a) => {
                let fa = self.fuse_attr_at(a, epoch).await;
                reply.entry_with_ttls(
                    &attr::ttl(self.attr_ttl),
                    &attr::ttl(self.entry_ttl),
                    &fa,
                    Generation(0),
                )
            }
            Err(e) => reply.error(e),
        }
    }

    async fn call(&self, req: ClRequest) -> Result<ClReply, CallError> {
        self.master.call(req).await
    }

    /// Sends a request from the calling (FUSE) thread; the task that answers the kernel
    /// awaits the returned call.
    fn start(&self, req: ClRequest) -> Call {
        self.master.start(req)
    }

    /// A size change, waiting while another mount holds a chunk it cuts (it writes, or keeps
    /// its write lease for a second): a truncation must not fail because of that.
    async fn resize(&self, inode: Inode, set: SetAttrs, cred: Cred) -> Result<ClReply, CallError> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(20);
        loop {
            let req = ClRequest::SetAttr {
                inode,
                set: set.clone(),
                cred: cred.clone(),
            };
            match self.call(req).await {
                Err(CallError::Fs(FsError::Locked)) if start.elapsed() < LOCKED_PATIENCE => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                r => return r,
            }
        }
    }

    /// Waits until the master has every metadata change made so far on its disk: an fsync
    /// covers the file's size and times, and the names leading to it.
    async fn sync_metadata(&self) -> Result<(), Errno> {
        expect_done("fsync", self.call(ClRequest::SyncMetadata).await)
    }

    fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    fn open_counter(&self, inode: Inode) -> Arc<tokio::sync::Mutex<u32>> {
        self.opens.lock().entry(inode).or_default().clone()
    }

    /// Drops the counter of an inode nobody has open (`counter` is the caller's clone).
    fn drop_counter_if_unused(&self, inode: Inode, counter: &Arc<tokio::sync::Mutex<u32>>) {
        let mut opens = self.opens.lock();
        if Arc::strong_count(counter) == 2 {
            if let Some(c) = opens.get(&inode) {
                if Arc::ptr_eq(c, counter) {
                    opens.remove(&inode);
                }
            }
        }
    }

    /// Opens `inode` at the master and counts the handle: the new handle, and whether the
    /// kernel keeps its pages of the file.
    async fn open_inode(
        &self,
        inode: Inode,
        flags: i32,
        cred: Cred,
    ) -> Result<(u64, FopenFlags), Errno> {
        let counter = self.open_counter(inode);
        let mut count = counter.lock().await;
        let r = self
            .call(ClRequest::Open {
                inode,
                flags,
                cred: cred.clone(),
            })
            .await;
        let result = match r {
            Ok(ClReply::Opened {
                attr,
                keep_cache,
                first_chunk,
            }) => {
                self.note_mode(&attr);
                let fh = self.count_open(inode, flags, cred, &mut count);
                let read_only = flags & libc::O_ACCMODE == libc::O_RDONLY;
                if let Some(loc) = first_chunk {
                    // Unless the kernel keeps the file's pages, its first read follows.
                    let read_now = read_only && !keep_cache && attr.size <= READ_AT_OPEN;
                    self.reader.opened(inode, loc, read_now);
                }
                let mut open_flags = if keep_cache {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                if read_only {
                    // Its close has nothing of its own to write out: the kernel then sends
                    // no flush (`cp -a` closes every file it copies from; a request less).
                    open_flags |= FopenFlags::FOPEN_NOFLUSH;
                }
                Ok((fh, open_flags))
            }
            Ok(other) => Err(unexpected("open", &other)),
            Err(e) => Err(errno(e)),
        };
        let unused = *count == 0;
        drop(count);
        if unused {
            self.drop_counter_if_unused(inode, &counter);
        }
        result
    }

    /// Records an open the master granted (`count` is the inode's open counter, held) and
    /// returns the new handle.
    fn count_open(&self, inode: Inode, flags: i32, cred: Cred, count: &mut u32) -> u64 {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            // It may truncate the file, or write it through a mapping.
            self.writer.drop_for_kernel_of(Some(inode));
        }
        self.master.note_open(inode, flags, cred);
        if *count == 0 {
            self.reader.invalidate(inode);
        }
        *count += 1;
        let fh = self.new_fh();
        self.files.lock().insert(
            fh,
            OpenFile {
                last_end: 0,
                run: 0,
            },
        );
        fh
    }

    /// Counts the handle of a file this mount just created (`count` is its open counter,
    /// held) and returns it.
    fn open_created(&self, a: &Attr, flags: i32, cred: Cred, count: &mut u32) -> u64 {
        // A new session re-opens the file as its creator could; O_CREAT granted more than the
        // mode may allow, which only root gets back.
        let again = if creator_may(a.mode, flags) {
            cred
        } else {
            Cred::root()
        };
        // A new file has no extended attributes, and the kernel asks for this one before
        // every write (to drop file capabilities): no round trip for it.
        self.note_xattr_absent(a.inode, b"security.capability".to_vec());
        self.count_open(a.inode, flags, again, count)
    }

    /// Answers a create with the master's answer `r`: at once when the file's open counter
    /// is free (it is, but for an open of the new inode racing with this answer), else from
    /// a task.
    fn answer_create(
        self: &Arc<Self>,
        reply: ReplyCreate,
        r: Result<ClReply, CallError>,
        c: Creating,
    ) {
        if let Ok(ClReply::Attr(a)) = &r {
            // What the `futimens` of `touch` right after starts from.
            if let Some(stamp) = self.master.changes().new_object_since(a.inode, c.changes) {
                self.writer.note_landed(a.inode, a.clone(), stamp);
            }
            let counter = self.open_counter(a.inode);
            let locked = counter.try_lock();
            if let Ok(mut count) = locked {
                if let Some(fa) = self.fuse_attr_now(a, c.epoch) {
                    let fh = self.open_created(a, c.flags, c.cred, &mut count);
                    return reply.created(
                        &attr::ttl(self.entry_ttl.min(self.attr_ttl)),
                        &fa,
                        Generation(0),
                        FileHandle(fh),
                        FopenFlags::empty(),
                    );
                }
            }
        }
        let core = self.clone();
        self.rt
            .spawn(async move { core.finish_create(reply, r, c).await });
    }

    /// [`Core::answer_create`] when it has to wait: for the open counter, for attributes
    /// asked again, or for the open of a file someone else created since the kernel's lookup.
    async fn finish_create(&self, reply: ReplyCreate, r: Result<ClReply, CallError>, c: Creating) {
        let opened = match r {
            Ok(ClReply::Attr(a)) => {
                let counter = self.open_counter(a.inode);
                let mut count = counter.lock().await;
                let fh = self.open_created(&a, c.flags, c.cred, &mut count);
                Ok((a, fh))
            }
            Ok(other) => Err(unexpected("create", &other)),
            Err(CallError::Fs(FsError::Exist)) if c.flags & libc::O_EXCL == 0 => {
                // Created by someone else since the kernel's lookup: open it instead.
                let lookup = ClRequest::Lookup {
                    parent: c.parent,
                    name: c.name,
                    cred: c.cred.clone(),
                };
                match expect_attr("lookup", self.call(lookup).await) {
                    Ok(a) => self
                        .open_inode(a.inode, c.flags, c.cred)
                        .await
                        .map(|(fh, _)| (a, fh)),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(errno(e)),
        };
        match opened {
            Ok((a, fh)) => {
                let fa = self.fuse_attr_at(a, c.epoch).await;
                reply.created(
                    &attr::ttl(self.entry_ttl.min(self.attr_ttl)),
                    &fa,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                )
            }
            Err(e) => reply.error(e),
        }
    }

    /// [`Core::release_handle`] on the calling (FUSE) thread, when it has nothing to wait
    /// for: the file has nothing to write out or report and keeps no lease, and no open or
    /// release of it runs at the same moment. `false` when it must wait.
    fn release_at_once(&self, inode: Inode, fh: u64) -> bool {
        if !self.writer.idle(inode) {
            return false;
        }
        let counter = self.open_counter(inode);
        let Ok(mut count) = counter.try_lock() else {
            return false;
        };
        // A write through another handle may come now, but then this is not the last handle,
        // and the other writes it out at its own close.
        self.files.lock().remove(&fh);
        *count = count.saturating_sub(1);
        let unused = *count == 0;
        if unused {
            self.release_last(inode);
        }
        drop(count);
        if unused {
            self.drop_counter_if_unused(inode, &counter);
        }
        true
    }

    /// The last handle of `inode` is closed (its open counter is held): the kernel gets the
    /// written-out bytes kept for its cache, the master is told, and what the mount kept for
    /// the open file goes.
    fn release_last(&self, inode: Inode) {
        self.hand_pages_to_kernel(inode);
        self.master.note_release(inode);
        // Nothing waits for the answer, and the release goes with the next request (an open
        // of the file that follows takes its place after it).
        self.master
            .start_soon(ClRequest::Release { inode }, move |answer| {
                if let Err(e) = answer {
                    tracing::warn!("release of inode {inode}: {e}");
                }
            });
        self.writer.forget_if_idle(inode);
        self.reader.invalidate(inode);
    }

    /// Stores the written-out bytes of `inode` kept for the kernel's cache there (see
    /// `kernel_pages.rs`). No request of the file can be under way (no handle is open), so
    /// no page of it is locked for long and the write(2) of the notice returns at once.
    fn hand_pages_to_kernel(&self, inode: Inode) {
        let pieces = self.writer.take_for_kernel(inode);
        let Some(notifier) = self.notifier.get().filter(|_| !pieces.is_empty()) else {
            return;
        };
        let ino = INodeNo(self.to_fuse(inode));
        for (offset, data) in pieces {
            // ENOENT: the kernel no longer holds the inode.
            if let Err(e) = notifier.store(ino, offset, &data) {
                tracing::debug!("handing pages of inode {inode} to the kernel: {e}");
                return;
            }
        }
    }

    /// Closes a handle opened with `flags`: writes the buffered data and, for the last handle
    /// of the inode, tells the master. A handle opened for reading has nothing of its own to
    /// write: the file's other handles write their data at their own close.
    async fn release_handle(&self, inode: Inode, fh: u64, flags: i32) -> Result<(), Errno> {
        self.files.lock().remove(&fh);
        let read_only = flags & libc::O_ACCMODE == libc::O_RDONLY;
        let mut flushed = if read_only {
            Ok(())
        } else {
            self.writer.flush_descriptor(inode).await.map_err(fs_errno)
        };
        let counter = self.open_counter(inode);
        let mut count = counter.lock().await;
        *count = count.saturating_sub(1);
        if *count == 0 {
            if read_only {
                flushed = self.writer.flush_descriptor(inode).await.map_err(fs_errno);
            }
            // The release ends the session's leases of the file at the master: no round
            // trip of their own. A write-out error was reported to the closes.
            self.writer.last_closed(inode).await;
            self.release_last(inode);
        }
        let unused = *count == 0;
        drop(count);
        if unused {
            self.drop_counter_if_unused(inode, &counter);
        }
        flushed
    }

    /// Sequential detection for a read on handle `fh`.
    fn read_mode(&self, fh: u64, offset: u64, size: u32) -> ReadMode {
        let mut files = self.files.lock();
        match files.get_mut(&fh) {
            Some(f) => {
                let sequential = offset.abs_diff(f.last_end) <= SEQUENTIAL_SLACK;
                f.run = if sequential {
                    f.run.saturating_add(1)
                } else {
                    0
                };
                f.last_end = offset.saturating_add(size as u64);
                ReadMode::for_run(f.run)
            }
            None => ReadMode::Random,
        }
    }

    async fn read(
        self: &Arc<Self>,
        inode: Inode,
        offset: u64,
        size: u32,
        mode: ReadMode,
    ) -> Result<ReadData, Errno> {
        let end = offset.saturating_add(size as u64);
        if self.writer.overlaps(inode, offset, end) {
            self.writer.flush_for_read(inode).await.map_err(fs_errno)?;
        }
        let epoch = self.writer.epoch();
        let data = self
            .reader
            .read(inode, offset, size, mode)
            .await
            .map_err(fs_errno)?;
        let got_end = offset + data.len() as u64;
        // A short read tells the kernel where the file ends. It may not: the file can be
        // longer here than at the master (buffered data), or buffered data may have landed
        // while the read was under way (it then ended where the file did before).
        let maybe_longer = || match self.writer.pending_since(inode, epoch) {
            Some(p) => p.end.is_some_and(|e| e > got_end),
            None => true,
        };
        if data.len() < size as usize && maybe_longer() {
            self.writer.flush_for_read(inode).await.map_err(fs_errno)?;
            return self
                .reader
                .read(inode, offset, size, ReadMode::Random)
                .await
                .map_err(fs_errno);
        }
        // The kernel asks for whole pages, none past the one holding the last byte it
        // knows of: a read that ends a page or more short of what it asked found the file
        // shorter than the kernel did (it learned a larger length from the master since
        // this mount kept the chunk's location, as when another mount appends). Answered
        // short, the kernel would fill the rest with zeros. A read of a file's last page
        // ends short within that page only, and asks nothing.
        let page = self.writer.page();
        let kernel_knows_more = got_end.div_ceil(page) * page < end;
        if kernel_knows_more && self.reader.grew_past(inode, got_end).await {
            return self
                .reader
                .read(inode, offset, size, ReadMode::Random)
                .await
                .map_err(fs_errno);
        }
        Ok(data)
    }

    /// Buffers `data` at `offset` of `inode` as a write: first the set-ID bits a write by
    /// `drops_setid` drops, then only as much as quotas allow. Returns how many bytes it took.
    async fn write_buffered(
        &self,
        inode: Inode,
        offset: u64,
        data: &[u8],
        drops_setid: Option<Cred>,
    ) -> Result<u32, Errno> {
        if let Some(cred) = drops_setid {
            self.drop_setid(inode, &cred).await?;
        }
        // Quotas: only what the master allows is written and acknowledged.
        let allowed = self
            .grants
            .admit(&self.master, inode, offset, data.len() as u64)
            .await
            .map_err(errno)?;
        let data = &data[..(allowed as usize).min(data.len())];
        self.reader.invalidate_data(inode);
        self.writer
            .write(inode, offset, data)
            .await
            .map_err(fs_errno)?;
        Ok(data.len() as u32)
    }

    /// Copies up to `len` bytes from `from` (file, offset) to `to`: whole chunks by sharing
    /// them, otherwise at most [`MAX_WRITE`] bytes into the write buffer of `to`. Returns how
    /// many (0 at the source's end).
    async fn copy_range(
        self: &Arc<Self>,
        from: (Inode, u64),
        to: (Inode, u64),
        len: u64,
        mode: ReadMode,
        drops_setid: Option<Cred>,
    ) -> Result<u32, Errno> {
        if drops_setid.is_none() {
            if let Some(shared) = self.share_range(from, to, len, mode).await {
                return shared;
            }
        }
        let len = len.min(u64::from(MAX_WRITE)) as u32;
        let data = self.read(from.0, from.1, len, mode).await?;
        if data.is_empty() {
            return Ok(0);
        }
        self.write_buffered(to.0, to.1, &data, drops_setid).await
    }

    /// Makes the destination share the source's chunks (`ClRequest::ShareChunks`): no byte
    /// is read or written, and the chunks are copied only when either file writes to them.
    /// `None` when the range cannot be shared (not chunk-aligned, the destination holds data
    /// there or has some on its way, a chunk is being written, a quota): the caller then
    /// copies the bytes.
    async fn share_range(
        self: &Arc<Self>,
        from: (Inode, u64),
        to: (Inode, u64),
        len: u64,
        mode: ReadMode,
    ) -> Option<Result<u32, Errno>> {
        let len = share_len(from, to, len)?;
        if !self.writer.idle(to.0) {
            return None;
        }
        // The source's bytes buffered here must reach its chunks first, and a lease this
        // mount keeps for writing more (its release may come after the copy's open) would
        // make the master refuse: a chunk being written is not shared.
        if !self.writer.idle(from.0) {
            if let Err(e) = self.writer.flush(from.0).await {
                return Some(Err(fs_errno(e)));
            }
        }
        let before = self.master.changes().stamp(to.0);
        let req = ClRequest::ShareChunks {
            src: from.0,
            src_offset: from.1,
            dst: to.0,
            dst_offset: to.1,
            len,
        };
        // A small copy's bytes go to the kernel at its last close, as a written file's do
        // (the next reader of a copy is often near: `git add` after `cp -a`). They are read
        // while the master shares the chunks, unless the source's open said it is larger.
        let larger = self
            .reader
            .length_at_hand(from.0, from.1)
            .is_some_and(|l| l.saturating_sub(from.1) > kernel_pages::WHOLE_MAX);
        let keep = kernel_pages::WHOLE_MAX.min(len) as u32;
        let read = async {
            if larger {
                return None;
            }
            self.read(from.0, from.1, keep, mode).await.ok()
        };
        let (answer, read) = tokio::join!(self.call(req), read);
        let (copied, attr, chunks) = match answer {
            Ok(ClReply::Shared {
                copied,
                attr,
                chunks,
            }) => (copied, attr, chunks),
            Ok(other) => return Some(Err(unexpected("copy_file_range", &other))),
            Err(e) => {
                tracing::debug!("copy of inode {} not shared ({e}): copying bytes", from.0);
                return None;
            }
        };
        if copied == 0 {
            return Some(Ok(0));
        }
        self.note_changed(to.0, &attr, before);
        self.reader.invalidate_data(to.0);
        let at_hand = read
            .filter(|d| d.len() as u64 == copied)
            .map(|d| (to.1, Bytes::copy_from_slice(&d)));
        self.writer
            .note_shared(to.0, (to.1, to.1 + copied), chunks, at_hand);
        Some(u32::try_from(copied).map_err(|_| Errno::EIO))
    }

    fn xattr_absent(&self, inode: Inode, name: &[u8]) -> bool {
        let map = self.absent_xattrs.lock();
        fresh(&map, &(inode, name.to_vec()), self.attr_ttl)
    }

    fn note_xattr_absent(&self, inode: Inode, name: Vec<u8>) {
        if !self.attr_ttl.is_zero() {
            remember(&mut self.absent_xattrs.lock(), (inode, name), self.attr_ttl);
        }
    }

    fn forget_xattrs(&self, inode: Inode) {
        self.absent_xattrs.lock().retain(|(i, _), _| *i != inode);
        self.bare.lock().remove(&inode);
    }

    /// Remembers whether the master said `a` has extended attributes: for as long as the
    /// kernel keeps attributes, queries of one without any are answered here (`cp -a` lists
    /// them, and the kernel asks for `security.capability` before a write).
    fn note_xattrs(&self, a: &Attr) {
        if a.xattrs || self.attr_ttl.is_zero() {
            self.bare.lock().remove(&a.inode);
            return;
        }
        remember(&mut self.bare.lock(), a.inode, self.attr_ttl);
    }

    /// The master said lately that `inode` has no extended attributes.
    fn is_bare(&self, inode: Inode) -> bool {
        fresh(&self.bare.lock(), &inode, self.attr_ttl)
    }

    /// Remembers whether file `a` has set-ID bits a write could drop.
    fn note_mode(&self, a: &Attr) {
        if a.kind != FileKind::File {
            return;
        }
        if a.mode & 0o6000 == 0 {
            remember(&mut self.plain.lock(), a.inode, self.plain_ttl());
        } else {
            self.plain.lock().remove(&a.inode);
        }
    }

    /// File `inode` was seen lately without set-ID bits.
    fn is_plain(&self, inode: Inode) -> bool {
        fresh(&self.plain.lock(), &inode, self.plain_ttl())
    }

    fn plain_ttl(&self) -> Duration {
        self.attr_ttl.max(PLAIN_MODE_TTL)
    }

    /// Drops the set-ID bits of `inode` that a write by `cred` drops, before the write is
    /// acknowledged: the kernel leaves that to the file system (`FUSE_WRITE_KILL_SUIDGID`).
    async fn drop_setid(&self, inode: Inode, cred: &Cred) -> Result<(), Errno> {
        let a = expect_attr("getattr", self.call(ClRequest::GetAttr { inode }).await)?;
        let mode = moose_proto::mode_after_write(a.mode);
        if mode == a.mode {
            self.note_mode(&a);
            return Ok(());
        }
        let set = SetAttrs {
            mode: Some(mode),
            ..SetAttrs::default()
        };
        let cred = cred.clone();
        let after = expect_attr(
            "setattr",
            self.call(ClRequest::SetAttr { inode, set, cred }).await,
        )?;
        self.note_mode(&after);
        // The kernel keeps the mode with the set-ID bits (a write makes it drop only its
        // times and size): it must ask again, before the write returns.
        if let Some(forgotten) = self.kernel_forget(inode, None) {
            let _ = forgotten.await;
        }
        Ok(())
    }

    /// Lists a directory from FUSE `offset` into `sink`.
    async fn list(
        &self,
        inode: Inode,
        fh: u64,
        offset: u64,
        cred: Cred,
        sink: &mut impl DirSink,
    ) -> Result<(), Errno> {
        let resume = dirents::resume_at(offset);
        let me = self.to_fuse(inode);
        if resume == Resume::Dot && sink.add_dot(me, dirents::AFTER_DOT, ".") {
            return Ok(());
        }
        if matches!(resume, Resume::Dot | Resume::DotDot)
            && sink.add_dot(INodeNo::ROOT.0, dirents::AFTER_DOTDOT, "..")
        {
            return Ok(());
        }
        let mut cookie = dirents::master_cookie(resume);
        // Entries already in the answer: a later failure then ends the answer early instead
        // (the kernel asks again from there).
        let mut added = !matches!(resume, Resume::Master(_));
        loop {
            let buffered = self
                .dirs
                .lock()
                .get_mut(&fh)
                .and_then(|h| h.buffer.take_if_at(cookie));
            let (mut entries, eof, epoch) = match buffered {
                Some(b) => b,
                None => {
                    let req = ClRequest::ReadDir {
                        inode,
                        cookie,
                        max: READDIR_BATCH,
                        cred: cred.clone(),
                    };
                    let epoch = self.writer.epoch();
                    let sent = self.master.known().now();
                    match self.call(req).await {
                        Ok(ClReply::Dir { entries, eof }) => {
                            self.sweep(inode, fh, cookie, &entries, eof, sent);
                            (VecDeque::from(entries), eof, epoch)
                        }
                        Ok(other) => return Err(unexpected("readdir", &other)),
                        Err(_) if added => return Ok(()),
                        Err(e) => return Err(errno(e)),
                    }
                }
            };
            let got_any = !entries.is_empty();
            while let Some(e) = entries.pop_front() {
                let Some(next) = dirents::offset_after(e.cookie) else {
                    tracing::error!(
                        "directory {inode}: the master gave entry cookie {}",
                        e.cookie
                    );
                    return Err(Errno::EIO);
                };
                if !listable(&e.name) {
                    tracing::warn!(
                        "directory {inode}: skipping entry with an unusable name {:?}",
                        String::from_utf8_lossy(&e.name)
                    );
                    cookie = e.cookie;
                    continue;
                }
                let fa = if sink.with_attrs() {
                    self.fuse_attr_at(e.attr.clone(), epoch).await
                } else {
                    attr::file_attr(&e.attr, self.to_fuse(e.attr.inode), e.attr.size)
                };
                if sink.add_entry(&e.name, &fa, next) {
                    entries.push_front(e);
                    if let Some(h) = self.dirs.lock().get_mut(&fh) {
                        h.buffer.store(cookie, entries, eof, epoch);
                    }
                    return Ok(());
                }
                added = true;
                cookie = e.cookie;
            }
            if eof {
                // The kernel asks once more from here, to hear that nothing follows: that is
                // answered from the handle, not by the master.
                if let Some(h) = self.dirs.lock().get_mut(&fh) {
                    h.buffer.store(cookie, VecDeque::new(), true, epoch);
                }
                return Ok(());
            }
            if !got_any {
                return Ok(());
            }
        }
    }

    /// Follows a listing of `folder` through handle `fh` batch by batch (a batch asked for
    /// from `cookie` at `sent`): read whole from the start, it makes the folder known.
    fn sweep(
        &self,
        folder: Inode,
        fh: u64,
        cookie: u64,
        entries: &[moose_proto::DirEntry],
        eof: bool,
        sent: u64,
    ) {
        let whole = {
            let mut dirs = self.dirs.lock();
            let Some(handle) = dirs.get_mut(&fh) else {
                return;
            };
            if cookie == 0 {
                handle.sweep = Some(Sweep::start(sent));
            }
            let Some(sweep) = handle.sweep.as_mut() else {
                return;
            };
            if !sweep.add(cookie, entries) {
                handle.sweep = None;
            }
            if eof {
                handle.sweep.take()
            } else {
                None
            }
        };
        if let Some(whole) = whole {
            self.master.known().learn_listing(folder, whole);
        }
    }
}

/// Where listed entries go: a readdir or a readdirplus answer.
trait DirSink {
    /// True when the entries' attributes go to the kernel too (readdirplus).
    fn with_attrs(&self) -> bool;
    /// Adds `.` or `..`; true when the answer is full (the entry was not added).
    fn add_dot(&mut self, ino: u64, next: u64, name: &str) -> bool;
    /// Adds a master entry; true when the answer is full (the entry was not added).
    fn add_entry(&mut self, name: &[u8], fa: &FileAttr, next: u64) -> bool;
}

impl DirSink for ReplyDirectory {
    fn with_attrs(&self) -> bool {
        false
    }

    fn add_dot(&mut self, ino: u64, next: u64, name: &str) -> bool {
        self.add(INodeNo(ino), next, FileType::Directory, name)
    }

    fn add_entry(&mut self, name: &[u8], fa: &FileAttr, next: u64) -> bool {
        self.add(fa.ino, next, fa.kind, OsStr::from_bytes(name))
    }
}

struct PlusSink {
    reply: ReplyDirectoryPlus,
    attr_ttl: Duration,
}

impl DirSink for PlusSink {
    fn with_attrs(&self) -> bool {
        true
    }

    fn add_dot(&mut self, ino: u64, next: u64, name: &str) -> bool {
        self.reply.add(
            INodeNo(ino),
            next,
            name,
            &Duration::ZERO,
            &attr::dot_attr(ino),
            Generation(0),
        )
    }

    fn add_entry(&mut self, name: &[u8], fa: &FileAttr, next: u64) -> bool {
        self.reply.add(
            fa.ino,
            next,
            OsStr::from_bytes(name),
            &self.attr_ttl,
            fa,
            Generation(0),
        )
    }
}

/// The file system handed to fuser.
pub struct MooseFs {
    core: Arc<Core>,
    rt: Handle,
}

impl MooseFs {
    /// Must be called within the runtime of `rt`.
    pub fn new(
        master: MasterClient,
        reader: Arc<Reader>,
        writer: Arc<Writer>,
        config: &FsConfig,
        rt: Handle,
    ) -> MooseFs {
        let root = master.session().root_inode;
        let core = Arc::new(Core {
            master: master.clone(),
            reader,
            writer,
            creds: CredCache::default(),
            attr_ttl: config.attr_ttl,
            entry_ttl: config.entry_ttl,
            neg_entry_ttl: config.neg_entry_ttl,
            root: AtomicU64::new(root),
            next_fh: AtomicU64::new(1),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            opens: Mutex::new(HashMap::new()),
            absent_xattrs: Mutex::new(HashMap::new()),
            bare: Mutex::new(HashMap::new()),
            plain: Mutex::new(HashMap::new()),
            grants: Default::default(),
            ahead: Ahead::new(config.answer_ahead),
            pool: InodePool::default(),
            notifier: std::sync::OnceLock::new(),
            rt: rt.clone(),
        });
        rt.spawn(follow_sessions(master, Arc::downgrade(&core)));
        MooseFs { core, rt }
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, f: F) {
        self.rt.spawn(f);
    }

    /// What drops the kernel's pages of files whose data other sessions changed, once the
    /// FUSE session gives a notifier.
    pub fn page_dropper(&self) -> PageDropper {
        PageDropper {
            core: Arc::downgrade(&self.core),
            rt: self.rt.clone(),
        }
    }
}

/// Drops the kernel's pages of files whose data other sessions changed (the kernel keeps a
/// file's pages across this mount's own writes and, when the master allows it, across a
/// close: see `stale_pages.rs`).
pub struct PageDropper {
    core: Weak<Core>,
    rt: Handle,
}

impl PageDropper {
    pub fn start(self, notifier: fuser::Notifier) {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        let _ = core.notifier.set(notifier.clone());
        let stale = core.master.stale_pages();
        self.rt.spawn(drop_stale_pages(stale, self.core, notifier));
    }
}

async fn drop_stale_pages(stale: Arc<StalePages>, core: Weak<Core>, notifier: fuser::Notifier) {
    loop {
        let s = stale.next().await;
        let Some(core) = core.upgrade() else { return };
        let inodes: Vec<Inode> = if s.all {
            core.opens.lock().keys().copied().collect()
        } else {
            s.files.into_iter().collect()
        };
        let files: Vec<INodeNo> = inodes.iter().map(|i| INodeNo(core.to_fuse(*i))).collect();
        if s.all {
            core.writer.drop_for_kernel_of(None);
        } else {
            for inode in &inodes {
                core.writer.drop_for_kernel_of(Some(*inode));
            }
        }
        drop(core);
        let notifier = notifier.clone();
        // The kernel drops the pages in the write(2) of the notice, waiting for reads of them
        // in flight: never on a runtime thread, which those reads need to be answered.
        let dropped = tokio::task::spawn_blocking(move || {
            for ino in files {
                // ENOENT: the kernel holds nothing of the file any more.
                if let Err(e) = notifier.inval_inode(ino, 0, 0) {
                    tracing::debug!("dropping the kernel's pages of inode {}: {e}", ino.0);
                }
            }
        });
        if let Err(e) = dropped.await {
            tracing::error!("dropping stale pages failed: {e}");
        }
    }
}

/// Keeps the root inode and the open files right after each re-registration.
async fn follow_sessions(master: MasterClient, core: Weak<Core>) {
    let mut sessions = master.subscribe();
    while sessions.changed().await.is_ok() {
        let root = sessions.borrow_and_update().root_inode;
        let Some(core) = core.upgrade() else { return };
        // Open files were opened again in the new session before anything else was sent
        // (see `MasterClient`).
        core.root.store(root, Ordering::Relaxed);
        // Changes of their data while the connection was down were not noticed.
        master.stale_pages().all();
    }
}

impl Filesystem for MooseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Every listing is a readdirplus (no FUSE_READDIRPLUS_AUTO, with which the kernel
        // asks for attributes only in a listing's first batch): `rm -rf` and `find -delete`
        // then find each name they unlink in the kernel's cache instead of looking it up.
        let wanted = InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            // The set-ID bits are dropped here and by the master: the kernel then stops asking
            // for `security.capability` before every write.
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        let supported = wanted & config.capabilities();
        if let Err(missing) = config.add_capabilities(supported) {
            tracing::debug!("kernel lacks capabilities {missing:?}");
        }
        if !(wanted - supported).is_empty() {
            tracing::info!("kernel does not offer {:?}", wanted - supported);
        }
        let max_write = config.set_max_write(MAX_WRITE).map_or_else(
            |nearest| {
                let _ = config.set_max_write(nearest);
                nearest
            },
            |_| MAX_WRITE,
        );
        let readahead = config.set_max_readahead(MAX_READAHEAD).map_or_else(
            |nearest| {
                let _ = config.set_max_readahead(nearest);
                nearest
            },
            |_| MAX_READAHEAD,
        );
        let _ = config.set_time_granularity(Duration::from_nanos(1));
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        tracing::info!(
            "FUSE session: kernel ABI {:?}, max write {max_write}, max read-ahead {readahead}",
            config.kernel_abi()
        );
        Ok(())
    }

    fn destroy(&mut self) {
        let writer = self.core.writer.clone();
        let master = self.core.master.clone();
        let flushed = self.rt.block_on(async move {
            let flushed = tokio::time::timeout(Duration::from_secs(120), writer.flush_all()).await;
            // Unmounted: the master releases this mount's files now.
            let _ = tokio::time::timeout(Duration::from_secs(5), master.close_session()).await;
            flushed
        });
        match flushed {
            Ok(0) => tracing::info!("all buffered data written"),
            Ok(n) => tracing::error!("buffered data of {n} files could not be written"),
            Err(_) => tracing::error!("gave up writing buffered data after 120 s"),
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match name_bytes(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let core = self.core.clone();
        let parent = core.to_master(parent);
        if core.master.known().absent(parent, &name) {
            return core.answer_missing(reply);
        }
        let cred = core.cred(req);
        let epoch = core.writer.epoch();
        let lookup = ClRequest::Lookup { parent, name, cred };
        self.core
            .master
            .start_then(lookup, move |r| match expect_attr("lookup", r) {
                Err(e) if e == Errno::ENOENT => core.answer_missing(reply),
                r => core.answer_entry(reply, r, epoch),
            });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let core = self.core.clone();
        let inode = core.to_master(ino);
        if let Some(a) = core.master.folders().get(inode, core.attr_ttl) {
            let fa = attr::file_attr(&a, ino.0, a.size);
            return reply.attr(&attr::ttl(core.attr_ttl), &fa);
        }
        // A file being written (a read past its end asks for its size after every write).
        if let Some((a, p)) = core.writer.attr_with_buffer(inode, core.attr_ttl) {
            let fa = attr::buffered_file_attr(&a, ino.0, p.end, p.modified);
            return reply.attr(&attr::ttl(core.attr_ttl), &fa);
        }
        core.attr_request("getattr", ClRequest::GetAttr { inode }, reply);
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if size.is_some_and(|s| s > MAX_FILE_SIZE) {
            return reply.error(Errno::EFBIG);
        }
        let core = self.core.clone();
        let cred = core.cred(req);
        let inode = core.to_master(ino);
        let set = SetAttrs {
            mode: mode.map(attr::perm_bits),
            uid,
            gid,
            size,
            atime: atime.map(attr::time_set),
            mtime: mtime.map(attr::time_set),
        };
        let resized = set.size.is_some();
        let times = set.atime.is_some() || set.mtime.is_some();
        // Buffered data must land first: it would change the size or the times later. A
        // change of size also ends the file's write leases (the master cuts the chunks); new
        // times leave them, as the end of a kept lease changes no attribute.
        let flush_first = if resized {
            core.writer.busy(inode)
        } else {
            times && core.writer.unwritten(inode)
        };
        if !resized && !flush_first {
            return core.set_attrs(ino.0, set, cred, reply);
        }
        self.spawn(async move {
            if flush_first {
                let flushed = if resized {
                    core.writer.flush(inode).await
                } else {
                    core.writer.flush_descriptor(inode).await
                };
                if let Err(e) = flushed {
                    return reply.error(fs_errno(e));
                }
            }
            if !resized {
                // The write-out landed with the file's attributes: new times (`tar`'s
                // `futimens` before its close) are then answered ahead.
                return core.set_attrs(ino.0, set, cred, reply);
            }
            // The written-out bytes kept for the kernel are the file's no longer; the
            // last close, which hands them over, waits until the kernel has the answer.
            let counter = core.open_counter(inode);
            let count = counter.lock().await;
            core.writer.drop_for_kernel_of(Some(inode));
            let epoch = core.writer.epoch();
            let r = core.resize(inode, set, cred).await;
            core.reader.invalidate(inode);
            match expect_attr("setattr", r) {
                Ok(a) => {
                    let fa = core.fuse_attr_at(a, epoch).await;
                    reply.attr(&attr::ttl(core.attr_ttl), &fa)
                }
                Err(e) => reply.error(e),
            }
            let unused = *count == 0;
            drop(count);
            if unused {
                core.drop_counter_if_unused(inode, &counter);
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let core = self.core.clone();
        let inode = core.to_master(ino);
        core.master
            .start_then(ClRequest::ReadLink { inode }, move |r| match r {
                Ok(ClReply::Link(target)) => reply.data(&target),
                Ok(other) => reply.error(unexpected("readlink", &other)),
                Err(e) => reply.error(errno(e)),
            });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_bytes(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let Some(kind) = attr::kind_from_mode(mode) else {
            return reply.error(Errno::EINVAL);
        };
        let core = self.core.clone();
        let cred = core.cred(req);
        let parent = core.to_master(parent);
        let req = ClRequest::MkNod {
            parent,
            name,
            kind,
            mode: attr::perm_bits(mode),
            umask: attr::perm_bits(umask),
            rdev,
            cred,
        };
        core.entry_request("mknod", req, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_bytes(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let core = self.core.clone();
        let cred = core.cred(req);
        let parent = core.to_master(parent);
        let req = ClRequest::MkDir {
            parent,
            name,
            mode: attr::perm_bits(mode),
            umask: attr::perm_bits(umask),
            cred,
        };
        core.entry_request("mkdir", req, reply);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_bytes(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let core = self.core.clone();
        let cred = core.cred(req);
        let parent = core.to_master(parent);
        if let Some(slot) = core.ahead.slot(&core.master.session(), cred.uid) {
            if core.master.known().take(parent, &name) {
                return core.unlink_ahead(parent, name, cred, slot, reply);
            }
        }
        core.done_request("unlink", ClRequest::Unlink { parent, name, cred }, reply);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_bytes(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let core = self.core.clone();
        let cred = core.cred(req);
        let parent = core.to_master(parent);
        core.done_request("rmdir", ClRequest::RmDir { parent, name, cred }, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let name = match name_bytes(link_name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let target = target.as_os_str().as_bytes().to_vec();
        if target.len() > moose_proto::MAX_SYMLINK_LEN {
            return reply.error(Errno::ENAMETOOLONG);
        }
        let core = self.core.clone();
        let cred = core.cred(req);
        let parent = core.to_master(parent);
        let req = ClRequest::Symlink {
            parent,
            name,
            target,
            cred,
        };
        core.entry_request("symlink", req, reply);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, new_name) = match (name_bytes(name), name_bytes(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let known = RenameFlags::RENAME_NOREPLACE | RenameFlags::RENAME_EXCHANGE;
        if !(flags - known).is_empty() {
            return reply.error(Errno::EINVAL);
        }
        let core = self.core.clone();
        let cred = core.cred(req);
        let parent = core.to_master(parent);
        let new_parent = core.to_master(newparent);
        let req = ClRequest::Rename {
            parent,
            name,
            new_parent,
            new_name,
            flags: flags.bits(),
            cred,
        };
        core.done_request("rename", req, reply);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let new_name = match name_bytes(newname) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let core = self.core.clone();
        let cred = core.cred(req);
        let inode = core.to_master(ino);
        let new_parent = core.to_master(newparent);
        let req = ClRequest::Link {
            inode,
            new_parent,
            new_name,
            cred,
        };
        core.entry_request("link", req, reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let core = self.core.clone();
        let cred = core.cred(req);
        let inode = core.to_master(ino);
        self.spawn(async move {
            match core.open_inode(inode, flags.0, cred).await {
                Ok((fh, keep)) => reply.opened(FileHandle(fh), keep),
                Err(e) => reply.error(e),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let core = self.core.clone();
        let inode = core.to_master(ino);
        let mode = core.read_mode(fh.0, offset, size);
        if mode == ReadMode::Random && !core.writer.unwritten(inode) {
            if let Some(data) = core.reader.read_here(inode, offset, size) {
                return reply.data(&data);
            }
        }
        self.spawn(async move {
            match core.read(inode, offset, size, mode).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(e),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let len = data.len();
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > MAX_FILE_SIZE)
        {
            return reply.error(Errno::EFBIG);
        }
        if u32::try_from(len).is_err() {
            return reply.error(Errno::EINVAL);
        }
        let core = self.core.clone();
        let inode = core.to_master(ino);
        // A caller without CAP_FSETID drops set-ID bits by writing; a file seen lately
        // without any needs no question.
        let drops_setid = (write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID)
            && !core.is_plain(inode))
        .then(|| core.cred(req));
        // Mostly the quota needs no question and the buffers have room: buffered from here
        // and answered at once, with no task to wake.
        if drops_setid.is_none() && core.grants.admits_now(inode, offset, len as u64) {
            let _runtime = core.rt.enter();
            core.reader.invalidate_data(inode);
            match core.writer.try_write(inode, offset, data) {
                Ok(true) => return reply.written(len as u32),
                Ok(false) => {}
                Err(e) => return reply.error(fs_errno(e)),
            }
        }
        let data = data.to_vec();
        self.spawn(async move {
            match core.write_buffered(inode, offset, &data, drops_setid).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(e),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let core = self.core.clone();
        let inode = core.to_master(ino);
        if !core.writer.unwritten(inode) {
            // Nothing to write out and no error to report: the close of a file that was only
            // read or created, or whose data is already written out. Its leases stay for
            // the other descriptors (the release ends them).
            return reply.ok();
        }
        self.spawn(async move {
            match core.writer.flush_descriptor(inode).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fs_errno(e)),
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let core = self.core.clone();
        let inode = core.to_master(ino);
        if core.release_at_once(inode, fh.0) {
            return reply.ok();
        }
        self.spawn(async move {
            match core.release_handle(inode, fh.0, flags.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let core = self.core.clone();
        let inode = core.to_master(ino);
        self.spawn(async move {
            // Buffered data lands synced, and the master answers its end once that (for an
            // fdatasync: what the file's data depends on) is on its disk. Then chunks written
            // out earlier are synced, side by side with the master's changelog if no
            // write-out just synced it.
            let changelog_synced = match core.writer.flush_durably(inode, datasync).await {
                Ok(landed) => landed,
                Err(e) => return reply.error(fs_errno(e)),
            };
            let metadata = async {
                if changelog_synced {
                    Ok(())
                } else {
                    core.sync_metadata().await
                }
            };
            let (data, metadata) = tokio::join!(core.writer.sync_written(inode), metadata);
            match (data, metadata) {
                (Err(e), _) => reply.error(fs_errno(e)),
                (Ok(()), Err(e)) => reply.error(e),
                (Ok(()), Ok(())) => reply.ok(),
            }
        });
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fh = self.core.new_fh();
        self.core.dirs.lock().insert(fh, DirHandle::default());
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let core = self.core.clone();
        let cred = core.cred(req);
        let inode = core.to_master(ino);
        self.spawn(async move {
            let mut reply = reply;
            match core.list(inode, fh.0, offset, cred, &mut reply).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let core = self.core.clone();
        let cred = core.cred(req);
        let inode = core.to_master(ino);
        self.spawn(async move {
            let mut sink = PlusSink {
                reply,
                attr_ttl: attr::ttl(core.attr_ttl),
            };
            match core.list(inode, fh.0, offset, cred, &mut sink).await {
                Ok(()) => sink.reply.ok(),
                Err(e) => sink.reply.error(e),
            }
        });
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

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Sent from this thread and answered from the connection's reader: no task to wake
        // on the way out or back.
        self.core
            .done_request("fsyncdir", ClRequest::SyncMetadata, reply);
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let core = self.core.clone();
        let inode = core.to_master(ino);
        // At the inode: inside a folder with a size quota, the quota is the size.
        let call = core.start(ClRequest::StatfsAt { inode });
        self.spawn(async move {
            match call.await {
                Ok(ClReply::Statfs(s)) => {
                    let files = s.inodes.max(u32::MAX as u64);
                    reply.statfs(
                        s.total / STATFS_BSIZE,
                        s.avail / STATFS_BSIZE,
                        s.avail / STATFS_BSIZE,
                        files,
                        files - s.inodes,
                        STATFS_BSIZE as u32,
                        MAX_NAME_LEN as u32,
                        STATFS_BSIZE as u32,
                    )
                }
                Ok(other) => reply.error(unexpected("statfs", &other)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if value.len() > moose_proto::MAX_XATTR_VALUE {
            return reply.error(Errno::E2BIG);
        }
        let Ok(flags) = u32::try_from(flags) else {
            return reply.error(Errno::EINVAL);
        };
        if unsupported_xattr(name.as_bytes()) {
            // `cp -a` and `rsync -A` try to copy an ACL to every file they write.
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        let core = self.core.clone();
        let cred = core.cred(req);
        let inode = core.to_master(ino);
        let name = name.as_bytes().to_vec();
        let value = value.to_vec();
        self.spawn(async move {
            core.forget_xattrs(inode);
            let req = ClRequest::SetXattr {
                inode,
                name,
                value,
                flags,
                cred,
            };
            match expect_done("setxattr", core.call(req).await) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let core = self.core.clone();
        let cred = core.cred(req);
        let inode = core.to_master(ino);
        let name = name.as_bytes().to_vec();
        if unsupported_xattr(&name) {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        // A `user.` attribute is asked for at the master all the same: it checks that the
        // caller may read the file.
        if core.xattr_absent(inode, &name) || (!name.starts_with(b"user.") && core.is_bare(inode)) {
            return reply.error(Errno::ENODATA);
        }
        self.spawn(async move {
            let req = ClRequest::GetXattr {
                inode,
                name: name.clone(),
                cred,
            };
            match core.call(req).await {
                Ok(ClReply::Xattr(v)) => reply_xattr(reply, &v, size),
                Ok(other) => reply.error(unexpected("getxattr", &other)),
                Err(CallError::Fs(FsError::NoAttr)) => {
                    core.note_xattr_absent(inode, name);
                    reply.error(Errno::ENODATA)
                }
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let core = self.core.clone();
        let cred = core.cred(req);
        let inode = core.to_master(ino);
        if core.is_bare(inode) {
            return reply_xattr(reply, &[], size);
        }
        self.spawn(async move {
            match core.call(ClRequest::ListXattr { inode, cred }).await {
                Ok(ClReply::XattrNames(names)) => {
                    let mut buf = Vec::new();
                    // A label stored before the mount refused them is not shown either.
                    for n in names.into_iter().filter(|n| !unsupported_xattr(n)) {
                        buf.extend_from_slice(&n);
                        buf.push(0);
                    }
                    reply_xattr(reply, &buf, size)
                }
                Ok(other) => reply.error(unexpected("listxattr", &other)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let core = self.core.clone();
        let cred = core.cred(req);
        let inode = core.to_master(ino);
        let name = name.as_bytes().to_vec();
        if unsupported_xattr(&name) {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        self.spawn(async move {
            core.forget_xattrs(inode);
            let req = ClRequest::RemoveXattr { inode, name, cred };
            match expect_done("removexattr", core.call(req).await) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let core = self.core.clone();
        let cred = core.cred(req);
        let inode = core.to_master(ino);
        let mask = (mask.bits() & 7) as u32;
        self.spawn(async move {
            match expect_done(
                "access",
                core.call(ClRequest::Access { inode, mask, cred }).await,
            ) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // No device controls here (`isatty` asks this of every file it checks).
        reply.error(Errno::ENOTTY);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        // Chunkservers cannot set space aside for a file: `posix_fallocate` falls back to
        // writing, `fio` goes on without.
        reply.error(Errno::EOPNOTSUPP);
    }

    /// `cp` copies with `copy_file_range`; without it the kernel copies page by page, a read
    /// request per 4 KiB and a write after them. Here whole chunks are shared with the copy
    /// (see [`Core::share_range`]); otherwise the mount reads the source as a sequential
    /// reader would and buffers the bytes as a write of the destination.
    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // Bytes copied: as much as one write takes; `cp` asks again for the rest.
        let bytes = len.min(u64::from(MAX_WRITE));
        if offset_out
            .checked_add(bytes)
            .is_none_or(|end| end > MAX_FILE_SIZE)
        {
            return reply.error(Errno::EFBIG);
        }
        let core = self.core.clone();
        let (src, dst) = (core.to_master(ino_in), core.to_master(ino_out));
        let mode = core.read_mode(fh_in.0, offset_in, bytes as u32);
        // The kernel leaves dropping the destination's set-ID bits to the file system here, and
        // says nothing of the caller's CAP_FSETID: root keeps them, as it does writing.
        let cred = core.cred(req);
        let drops_setid = (cred.uid != 0 && !core.is_plain(dst)).then_some(cred);
        self.spawn(async move {
            let copied = core
                .copy_range((src, offset_in), (dst, offset_out), len, mode, drops_setid)
                .await;
            match copied {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(e),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match name_bytes(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let core = self.core.clone();
        let cred = core.cred(req);
        let parent = core.to_master(parent);
        let modes = (attr::perm_bits(mode), attr::perm_bits(umask));
        let reply = match core.create_ahead(parent, &name, modes, flags, &cred, reply) {
            Ok(()) => return,
            Err(reply) => reply,
        };
        let req = ClRequest::Create {
            parent,
            name: name.clone(),
            mode: modes.0,
            umask: modes.1,
            flags,
            cred: cred.clone(),
            ahead: None,
        };
        let creating = Creating {
            parent,
            name,
            flags,
            cred,
            epoch: core.writer.epoch(),
            changes: core.master.changes().stamp(parent),
        };
        let answering = core.clone();
        core.master
            .start_then(req, move |r| answering.answer_create(reply, r, creating));
    }
}

/// What a create needs besides the master's answer.
struct Creating {
    parent: Inode,
    name: Vec<u8>,
    flags: i32,
    cred: Cred,
    /// The writer epoch before the request.
    epoch: u64,
    /// Where the changes stood before the request (see
    /// [`crate::change_counts::ChangeCounts::new_object_since`]).
    changes: Stamp,
}

/// Notes `key` as learnt now in a map of answers kept for `ttl`, holding at most
/// [`MAX_ABSENT_XATTRS`] of them (stale ones go first, then all).
fn remember<K: Eq + std::hash::Hash>(map: &mut HashMap<K, Instant>, key: K, ttl: Duration) {
    if map.len() >= MAX_ABSENT_XATTRS {
        map.retain(|_, at| at.elapsed() < ttl);
        if map.len() >= MAX_ABSENT_XATTRS {
            map.clear();
        }
    }
    map.insert(key, Instant::now());
}

/// `key` was noted with [`remember`] less than `ttl` ago.
fn fresh<K: Eq + std::hash::Hash>(map: &HashMap<K, Instant>, key: &K, ttl: Duration) -> bool {
    map.get(key).is_some_and(|at| at.elapsed() < ttl)
}

/// Largest copy shared at once: whole chunks whose bytes a FUSE reply can count (32 bits).
const SHARE_MAX: u64 = u32::MAX as u64 / CHUNK_SIZE * CHUNK_SIZE;

/// How much of a `copy_file_range` of `len` bytes from `from` to `to` (file, offset) to ask
/// the master to share; `None` when it cannot be: within one file, or an offset not at a
/// chunk's start. (Whether the source ends within `len`, or `len` holds whole chunks, only
/// the master knows.)
fn share_len(from: (Inode, u64), to: (Inode, u64), len: u64) -> Option<u64> {
    let aligned = from.1.is_multiple_of(CHUNK_SIZE) && to.1.is_multiple_of(CHUNK_SIZE);
    (from.0 != to.0 && aligned && len > 0).then_some(len.min(SHARE_MAX))
}

/// Whether the owner bits of a new file's `mode` allow the access open `flags` ask for.
fn creator_may(mode: u16, flags: i32) -> bool {
    let need = match flags & libc::O_ACCMODE {
        libc::O_WRONLY => 0o200,
        libc::O_RDWR => 0o600,
        _ => 0o400,
    };
    mode & need == need
}

/// Answers a getxattr/listxattr: the size when asked for 0 bytes, ERANGE when too small.
fn reply_xattr(reply: ReplyXattr, value: &[u8], size: u32) {
    let Ok(len) = u32::try_from(value.len()) else {
        return reply.error(Errno::E2BIG);
    };
    if size == 0 {
        reply.size(len)
    } else if len > size {
        reply.error(Errno::ERANGE)
    } else {
        reply.data(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listable_names() {
        assert!(listable(b"a"));
        assert!(listable(b"..."));
        assert!(!listable(b""));
        assert!(!listable(b"."));
        assert!(!listable(b".."));
        assert!(!listable(b"a/b"));
        assert!(!listable(b"a\0b"));
    }

    #[test]
    fn long_names_are_refused() {
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(name_bytes(OsStr::new(&long)), Err(Errno::ENAMETOOLONG));
        assert_eq!(name_bytes(OsStr::new("ok")), Ok(b"ok".to_vec()));
    }

    #[test]
    fn copies_from_a_chunks_start_to_a_chunks_start_are_shared_in_counted_pieces() {
        let whole = 9_223_372_035_781_033_984; // what `cp` asks for
        assert_eq!(share_len((2, 0), (3, 0), whole), Some(SHARE_MAX));
        assert_eq!(SHARE_MAX, 63 * CHUNK_SIZE);
        assert!(u32::try_from(SHARE_MAX).is_ok(), "a FUSE reply counts it");
        assert_eq!(
            share_len((2, CHUNK_SIZE), (3, 5 * CHUNK_SIZE), 10),
            Some(10)
        );
        assert_eq!(share_len((2, 4096), (3, 0), whole), None);
        assert_eq!(share_len((2, 0), (3, 4096), whole), None);
        assert_eq!(share_len((2, 0), (2, CHUNK_SIZE), whole), None, "one file");
        assert_eq!(share_len((2, 0), (3, 0), 0), None);
    }
}
