//! Folders whose names this mount knows whole: listed from the start, or made here. Before
//! every create the kernel looks the new name up; in a known folder the mount answers "no
//! such name" itself instead of asking the master.
//!
//! The master watches these folders for this session (see the master's `watches.rs`): a
//! change of their names by anyone else comes as a notice and the folder is forgotten.
//! Changes made through this mount are applied from their answers (the kernel holds a
//! folder's lock while it changes a name in it, so those answers come in order).
//!
//! A folder becomes known from an answer that may be older than a notice about it (the
//! notice is sent as the change is made, the answer once the request's own change is
//! recorded): every notice and every change made here is numbered, and a listing or a
//! `mkdir` makes its folder known only if nothing touched the folder since it was sent.

use std::collections::{HashMap, HashSet, VecDeque};

use moose_proto::msg::{ClReply, ClRequest};
use moose_proto::{DirEntry, Inode};
use parking_lot::Mutex;

/// Names kept over all folders; past this the least recently used folders are forgotten.
const MAX_NAMES: usize = 262_144;
/// A folder with more names than this is not kept.
const MAX_FOLDER_NAMES: usize = 65_536;
/// Touches remembered to check a folder made known by an older answer.
const RECENT_TOUCHES: usize = 4096;

struct Folder {
    names: HashSet<Box<[u8]>>,
    used: u64,
}

#[derive(Default)]
struct Inner {
    folders: HashMap<Inode, Folder>,
    names: usize,
    /// Numbers touches (notices, changes made here) and uses.
    clock: u64,
    /// The last touches: (number, folder).
    recent: VecDeque<(u64, Inode)>,
    /// Every touch up to this number is forgotten (older ones fell out of `recent`, or the
    /// connection was lost).
    forgotten_until: u64,
}

impl Inner {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn touch(&mut self, folder: Inode) {
        let at = self.tick();
        self.recent.push_back((at, folder));
        if self.recent.len() > RECENT_TOUCHES {
            if let Some((t, _)) = self.recent.pop_front() {
                self.forgotten_until = t;
            }
        }
    }

    fn touched_since(&self, folder: Inode, since: u64) -> bool {
        self.forgotten_until > since
            || self
                .recent
                .iter()
                .rev()
                .take_while(|(t, _)| *t > since)
                .any(|(_, f)| *f == folder)
    }

    fn forget(&mut self, folder: Inode) {
        if let Some(f) = self.folders.remove(&folder) {
            self.names -= f.names.len();
        }
    }

    /// Forgets the least recently used folders until a quarter of the room is free.
    fn make_room(&mut self) {
        if self.names <= MAX_NAMES {
            return;
        }
        let mut by_use: Vec<(u64, Inode)> =
            self.folders.iter().map(|(i, f)| (f.used, *i)).collect();
        by_use.sort_unstable();
        for (_, folder) in by_use {
            if self.names <= MAX_NAMES * 3 / 4 {
                break;
            }
            self.forget(folder);
        }
    }
}

/// A listing read from the start, batch by batch: its names make the folder known once it
/// reaches the end without a gap.
pub struct Sweep {
    sent: u64,
    next: u64,
    names: Vec<Box<[u8]>>,
}

impl Sweep {
    /// A listing whose first batch was asked for at `sent` (see [`KnownFolders::now`]).
    pub fn start(sent: u64) -> Sweep {
        Sweep {
            sent,
            next: 0,
            names: Vec::new(),
        }
    }

    /// Adds the batch asked for from cookie `from`; false when it does not follow the
    /// previous one, or the folder is too big to keep.
    pub fn add(&mut self, from: u64, entries: &[DirEntry]) -> bool {
        if from != self.next || self.names.len() + entries.len() > MAX_FOLDER_NAMES {
            return false;
        }
        self.names
            .extend(entries.iter().map(|e| e.name.as_slice().into()));
        if let Some(last) = entries.last() {
            self.next = last.cookie;
        }
        true
    }
}

/// What this mount knows of folders' names.
#[derive(Default)]
pub struct KnownFolders {
    inner: Mutex<Inner>,
}

impl KnownFolders {
    /// The moment a request that may make a folder known is sent; give it to
    /// [`KnownFolders::learn`] with the answer.
    pub fn now(&self) -> u64 {
        self.inner.lock().clock
    }

    /// True when `folder` is known and has no entry `name`.
    pub fn absent(&self, folder: Inode, name: &[u8]) -> bool {
        if name == b"." || name == b".." {
            return false;
        }
        let mut inner = self.inner.lock();
        let at = inner.tick();
        match inner.folders.get_mut(&folder) {
            Some(f) => {
                f.used = at;
                !f.names.contains(name)
            }
            None => false,
        }
    }

    /// Takes `name` out of `folder` for a removal answered before the master's answer: true
    /// when the folder is known and had the name (the master will find it then, unless
    /// another session removes it first).
    pub fn take(&self, folder: Inode, name: &[u8]) -> bool {
        let mut inner = self.inner.lock();
        let Some(f) = inner.folders.get_mut(&folder) else {
            return false;
        };
        if !f.names.remove(name) {
            return false;
        }
        inner.names -= 1;
        inner.touch(folder);
        true
    }

    /// Adds `name` to `folder` for a create answered before the master's answer: true when
    /// the folder is known and had no such name.
    pub fn put(&self, folder: Inode, name: &[u8]) -> bool {
        let mut inner = self.inner.lock();
        let Some(f) = inner.folders.get_mut(&folder) else {
            return false;
        };
        if f.names.len() >= MAX_FOLDER_NAMES || !f.names.insert(name.into()) {
            return false;
        }
        inner.names += 1;
        inner.touch(folder);
        inner.make_room();
        true
    }

    /// Forgets `folder`: a change answered ahead of the master was refused there.
    pub fn forget(&self, folder: Inode) {
        let mut inner = self.inner.lock();
        inner.forget(folder);
        inner.touch(folder);
    }

    /// `folder` has exactly `names`, as of an answer to a request sent at `sent` (see
    /// [`KnownFolders::now`]); kept unless the folder was touched since.
    pub fn learn(&self, folder: Inode, names: Vec<Box<[u8]>>, sent: u64) {
        if names.len() > MAX_FOLDER_NAMES {
            return;
        }
        let mut inner = self.inner.lock();
        if inner.touched_since(folder, sent) {
            return;
        }
        inner.forget(folder);
        let used = inner.tick();
        let names: HashSet<Box<[u8]>> = names.into_iter().collect();
        inner.names += names.len();
        inner.folders.insert(folder, Folder { names, used });
        inner.make_room();
    }

    /// A listing of `folder` read whole.
    pub fn learn_listing(&self, folder: Inode, sweep: Sweep) {
        self.learn(folder, sweep.names, sweep.sent);
    }

    /// The master says other sessions changed the names of `folders`.
    pub fn noticed(&self, folders: &[Inode]) {
        let mut inner = self.inner.lock();
        for &f in folders {
            inner.forget(f);
            inner.touch(f);
        }
    }

    /// The connection was lost: notices may have been missed.
    pub fn forget_all(&self) {
        let mut inner = self.inner.lock();
        inner.folders.clear();
        inner.names = 0;
        inner.recent.clear();
        inner.forgotten_until = inner.tick();
    }

    /// Applies the answer to a request sent here at `sent` (see [`KnownFolders::now`]).
    pub fn settle(&self, req: &ClRequest, reply: &ClReply, sent: u64) {
        match (req, reply) {
            (
                ClRequest::MkNod { parent, name, .. }
                | ClRequest::Create { parent, name, .. }
                | ClRequest::Symlink { parent, name, .. }
                | ClRequest::Link {
                    new_parent: parent,
                    new_name: name,
                    ..
                },
                ClReply::Attr(_),
            ) => self.changed(*parent, Some(name), None),
            (ClRequest::MkDir { parent, name, .. }, ClReply::Attr(a)) => {
                self.changed(*parent, Some(name), None);
                self.learn(a.inode, Vec::new(), sent);
            }
            (
                ClRequest::Unlink { parent, name, .. } | ClRequest::RmDir { parent, name, .. },
                ClReply::Done,
            ) => self.changed(*parent, None, Some(name)),
            (
                ClRequest::Rename {
                    parent,
                    name,
                    new_parent,
                    new_name,
                    flags,
                    ..
                },
                ClReply::Done,
            ) if flags & libc::RENAME_EXCHANGE == 0 => {
                self.changed(*parent, None, Some(name));
                self.changed(*new_parent, Some(new_name), None);
            }
            _ => {}
        }
    }

    /// A change made here: `added` is in `folder` now, `removed` is not.
    fn changed(&self, folder: Inode, added: Option<&Vec<u8>>, removed: Option<&Vec<u8>>) {
        let mut inner = self.inner.lock();
        inner.touch(folder);
        let Some(f) = inner.folders.get_mut(&folder) else {
            return;
        };
        let before = f.names.len();
        if let Some(n) = removed {
            f.names.remove(n.as_slice());
        }
        if let Some(n) = added {
            f.names.insert(n.as_slice().into());
        }
        let after = f.names.len();
        inner.names = inner.names - before + after;
        if after > MAX_FOLDER_NAMES {
            inner.forget(folder);
        }
        inner.make_room();
    }

    /// Folders and names kept (for tests).
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.folders.len(), inner.names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folders::tests::folder;
    use moose_proto::Cred;

    fn names(n: &[&str]) -> Vec<Box<[u8]>> {
        n.iter().map(|s| s.as_bytes().into()).collect()
    }

    fn mkdir(parent: Inode, name: &str) -> ClRequest {
        ClRequest::MkDir {
            parent,
            name: name.as_bytes().to_vec(),
            mode: 0o755,
            umask: 0,
            cred: Cred::default(),
        }
    }

    fn dir_attr(inode: Inode) -> ClReply {
        ClReply::Attr(folder(inode, 2))
    }

    #[test]
    fn a_listed_folder_answers_for_missing_names_only() {
        let k = KnownFolders::default();
        assert!(!k.absent(5, b"x"), "an unknown folder answers nothing");
        let sent = k.now();
        k.learn(5, names(&["a", "b"]), sent);
        assert!(k.absent(5, b"x"));
        assert!(!k.absent(5, b"a"));
        assert!(!k.absent(5, b"."));
        assert!(!k.absent(5, b".."));
        k.noticed(&[5]);
        assert!(!k.absent(5, b"x"), "a notice makes it unknown");
    }

    #[test]
    fn an_answer_older_than_a_notice_does_not_make_a_folder_known() {
        let k = KnownFolders::default();
        let sent = k.now();
        k.noticed(&[5]);
        k.learn(5, names(&["a"]), sent);
        assert!(!k.absent(5, b"x"));
        // A notice about another folder does not matter.
        let sent = k.now();
        k.noticed(&[6]);
        k.learn(5, names(&["a"]), sent);
        assert!(k.absent(5, b"x"));
    }

    #[test]
    fn a_name_taken_ahead_is_gone_and_only_a_known_name_is_taken() {
        let k = KnownFolders::default();
        assert!(!k.take(5, b"a"), "an unknown folder gives nothing");
        k.learn(5, names(&["a", "b"]), k.now());
        assert!(k.take(5, b"a"));
        assert!(k.absent(5, b"a"));
        assert!(!k.take(5, b"a"), "taken already");
        assert!(!k.take(5, b"x"));
        assert_eq!(k.size(), (1, 1));
        // An answer to a listing sent before the removal must not bring the name back.
        let sent = k.now();
        assert!(k.take(5, b"b"));
        k.learn(5, names(&["b"]), sent);
        assert!(k.absent(5, b"b"));
        assert!(k.put(5, b"c"));
        assert!(!k.absent(5, b"c"));
        assert!(!k.put(5, b"c"), "there already");
        assert!(!k.put(6, b"c"), "an unknown folder takes nothing");
        k.forget(5);
        assert!(!k.absent(5, b"b"), "a forgotten folder answers nothing");
    }

    #[test]
    fn changes_made_here_are_applied() {
        let k = KnownFolders::default();
        let cred = Cred::default();
        k.learn(5, names(&["a"]), k.now());
        let sent = k.now();
        k.settle(&mkdir(5, "d"), &dir_attr(9), sent);
        assert!(!k.absent(5, b"d"));
        assert!(
            k.absent(9, b"anything"),
            "a folder made here is known, empty"
        );
        let unlink = ClRequest::Unlink {
            parent: 5,
            name: b"a".to_vec(),
            cred: cred.clone(),
        };
        k.settle(&unlink, &ClReply::Done, k.now());
        assert!(k.absent(5, b"a"));
        let rename = ClRequest::Rename {
            parent: 5,
            name: b"d".to_vec(),
            new_parent: 9,
            new_name: b"e".to_vec(),
            flags: 0,
            cred: cred.clone(),
        };
        k.settle(&rename, &ClReply::Done, k.now());
        assert!(k.absent(5, b"d"));
        assert!(!k.absent(9, b"e"));
        // A failed change changes nothing.
        let create = ClRequest::Create {
            parent: 5,
            name: b"f".to_vec(),
            mode: 0o644,
            umask: 0,
            flags: 0,
            ahead: None,
            cred,
        };
        k.settle(&create, &ClReply::Done, k.now());
        assert!(k.absent(5, b"f"));
        assert_eq!(k.size(), (2, 1));
    }

    #[test]
    fn a_listing_read_whole_in_batches_makes_its_folder_known() {
        let k = KnownFolders::default();
        let entry = |name: &str, cookie: u64| DirEntry {
            name: name.as_bytes().to_vec(),
            attr: folder(1, 2),
            cookie,
        };
        let mut s = Sweep::start(k.now());
        assert!(s.add(0, &[entry("a", 3), entry("b", 7)]));
        assert!(
            !Sweep::start(k.now()).add(5, &[]),
            "a listing not from the start"
        );
        let mut gap = Sweep::start(k.now());
        assert!(gap.add(0, &[entry("a", 3)]));
        assert!(
            !gap.add(4, &[entry("c", 9)]),
            "a batch that does not follow"
        );
        assert!(s.add(7, &[entry("c", 9)]));
        k.learn_listing(5, s);
        assert!(!k.absent(5, b"c"));
        assert!(k.absent(5, b"d"));
    }

    #[test]
    fn a_mkdir_answered_after_a_notice_about_its_folder_is_not_trusted() {
        let k = KnownFolders::default();
        let sent = k.now();
        k.noticed(&[9]);
        k.settle(&mkdir(5, "d"), &dir_attr(9), sent);
        assert!(!k.absent(9, b"x"));
    }

    #[test]
    fn a_lost_connection_forgets_everything_and_what_was_asked_before_it() {
        let k = KnownFolders::default();
        let sent = k.now();
        k.learn(5, names(&["a"]), sent);
        k.forget_all();
        assert!(!k.absent(5, b"x"));
        k.learn(6, names(&["a"]), sent);
        assert!(!k.absent(6, b"x"));
    }

    #[test]
    fn many_touches_make_old_answers_untrusted() {
        let k = KnownFolders::default();
        let sent = k.now();
        for f in 0..RECENT_TOUCHES as u64 + 1 {
            k.noticed(&[1000 + f]);
        }
        k.learn(5, names(&[]), sent);
        assert!(!k.absent(5, b"x"));
    }

    #[test]
    fn the_least_recently_used_folders_make_room() {
        let k = KnownFolders::default();
        let per = 1000;
        let folders = MAX_NAMES / per + 1;
        for f in 0..folders as u64 {
            let n: Vec<Box<[u8]>> = (0..per)
                .map(|i| format!("n{i}").as_bytes().into())
                .collect();
            k.learn(f, n, k.now());
            // Folder 0 stays in use.
            assert!(k.absent(0, b"x"));
        }
        let (kept, names) = k.size();
        assert!(names <= MAX_NAMES * 3 / 4 + per, "{names} names kept");
        assert!(kept < folders);
        assert!(k.absent(0, b"x"), "the folder in use is kept");
        assert!(!k.absent(1, b"x"), "the oldest unused one is forgotten");
    }
}
