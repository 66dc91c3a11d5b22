//! Folder attributes the master sent along with its answers to changes
//! ([`moose_proto::msg::ClResponse::dirs`]). The kernel drops its copy of a folder's
//! attributes whenever a name in it changes, and asks again before the next change to check
//! permissions; answering from here saves that round trip to the master. An entry is used
//! no longer than the kernel would have kept the same answer (the attribute timeout), so other
//! mounts' changes show up as soon as they would anyway.
//!
//! A create or removal answered before the master's answer (see `ahead.rs`) changes the entry
//! here at once, as the master will: until the answers to such changes are in, an answer that
//! carries older attributes of the folder does not take back what they changed.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use moose_proto::{Attr, Inode, Timespec, FOLDER_ENTRY_SIZE};

/// Entries kept at most; the oldest half goes when it is reached.
const MAX_ENTRIES: usize = 8192;

struct Entry {
    attr: Attr,
    at: Instant,
    /// Creates and removals answered here whose answers from the master are not in yet.
    ahead: u32,
}

#[derive(Default)]
pub struct FolderAttrs {
    map: Mutex<HashMap<Inode, Entry>>,
}

impl FolderAttrs {
    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<Inode, Entry>> {
        self.map.lock()
    }

    /// Keeps `attrs`, as the master just sent them.
    pub fn store(&self, attrs: &[Attr]) {
        if attrs.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() + attrs.len() > MAX_ENTRIES {
            let mut ages: Vec<Instant> = map.values().map(|e| e.at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            map.retain(|_, e| e.at > cut);
        }
        for a in attrs {
            let mut attr = a.clone();
            let mut ahead = 0;
            if let Some(e) = map.get(&a.inode).filter(|e| e.ahead > 0) {
                // Older than changes answered here: keep what they changed (the size counts
                // what is here now: every later change went through this mount).
                attr.mtime = attr.mtime.max(e.attr.mtime);
                attr.ctime = attr.ctime.max(e.attr.ctime);
                attr.size = e.attr.size;
                ahead = e.ahead;
            }
            map.insert(
                a.inode,
                Entry {
                    attr,
                    at: now,
                    ahead,
                },
            );
        }
    }

    /// A name was added to `folder` (or removed from it) here at `now`, ahead of the master's
    /// answer.
    pub fn changed_ahead(&self, folder: Inode, now: Timespec, added: bool) {
        if let Some(e) = self.lock().get_mut(&folder) {
            e.attr.mtime = e.attr.mtime.max(now);
            e.attr.ctime = e.attr.ctime.max(now);
            e.attr.size = if added {
                e.attr.size + FOLDER_ENTRY_SIZE
            } else {
                e.attr.size.saturating_sub(FOLDER_ENTRY_SIZE)
            };
            e.ahead += 1;
        }
    }

    /// The master answered a create or removal in `folder` that was answered here ahead of it
    /// (after [`FolderAttrs::store`] took the attributes that came with the answer).
    pub fn settled_ahead(&self, folder: Inode) {
        if let Some(e) = self.lock().get_mut(&folder) {
            e.ahead = e.ahead.saturating_sub(1);
        }
    }

    /// Forgets `folder`: a change answered ahead of the master was refused there.
    pub fn forget(&self, folder: Inode) {
        self.lock().remove(&folder);
    }

    /// The attributes of folder `inode` if they are younger than `max_age`.
    pub fn get(&self, inode: Inode, max_age: Duration) -> Option<Attr> {
        let map = self.lock();
        map.get(&inode)
            .filter(|e| e.at.elapsed() < max_age)
            .map(|e| e.attr.clone())
    }

    /// Forgets every entry: a folder may have gone (rmdir, a rename over it).
    pub fn clear(&self) {
        self.lock().clear();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use moose_proto::FileKind;

    /// Attributes of folder `inode` with `nlink` links.
    pub(crate) fn folder(inode: Inode, nlink: u32) -> Attr {
        Attr {
            inode,
            kind: FileKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            atime: Timespec::default(),
            mtime: Timespec::default(),
            ctime: Timespec::default(),
            nlink,
            size: 0,
            rdev: 0,
            goal: 1,
            xattrs: false,
        }
    }

    #[test]
    fn an_entry_serves_until_it_is_older_than_asked() {
        let f = FolderAttrs::default();
        f.store(&[folder(5, 2)]);
        assert_eq!(f.get(5, Duration::from_secs(1)).map(|a| a.nlink), Some(2));
        assert_eq!(f.get(5, Duration::ZERO), None);
        assert_eq!(f.get(6, Duration::from_secs(1)), None);
        f.store(&[folder(5, 3)]);
        assert_eq!(f.get(5, Duration::from_secs(1)).map(|a| a.nlink), Some(3));
        f.clear();
        assert_eq!(f.get(5, Duration::from_secs(1)), None);
    }

    #[test]
    fn a_removal_ahead_shows_at_once_and_older_answers_do_not_undo_it() {
        let f = FolderAttrs::default();
        let ttl = Duration::from_secs(1);
        let mut a = folder(5, 2);
        a.size = moose_proto::folder_size(3);
        a.mtime = Timespec { sec: 10, nsec: 0 };
        f.store(&[a.clone()]);
        let later = Timespec { sec: 20, nsec: 0 };
        f.changed_ahead(5, later, false);
        f.changed_ahead(5, later, false);
        let got = f.get(5, ttl).unwrap();
        assert_eq!((got.mtime, got.ctime), (later, later));
        assert_eq!(got.size, moose_proto::folder_size(1));
        // The answer to the first removal: one entry fewer, the master's earlier time.
        let mut first = a.clone();
        first.size = moose_proto::folder_size(2);
        first.mtime = Timespec { sec: 19, nsec: 0 };
        f.store(&[first.clone()]);
        f.settled_ahead(5);
        let got = f.get(5, ttl).unwrap();
        assert_eq!((got.mtime, got.size), (later, moose_proto::folder_size(1)));
        // The last answer; then the master's attributes count as they come.
        f.store(&[first.clone()]);
        f.settled_ahead(5);
        let mut set_back = first;
        set_back.mtime = Timespec { sec: 1, nsec: 0 };
        f.store(&[set_back]);
        assert_eq!(f.get(5, ttl).unwrap().mtime, Timespec { sec: 1, nsec: 0 });
        f.forget(5);
        assert_eq!(f.get(5, ttl), None);
    }

    #[test]
    fn the_map_stays_bounded() {
        let f = FolderAttrs::default();
        for i in 0..(3 * MAX_ENTRIES as u64) {
            f.store(&[folder(i, 2)]);
        }
        assert!(f.lock().len() <= MAX_ENTRIES);
        let newest = 3 * MAX_ENTRIES as u64 - 1;
        assert!(f.get(newest, Duration::from_secs(60)).is_some());
    }
}
