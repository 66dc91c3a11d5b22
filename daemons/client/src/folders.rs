//! Folder attributes the master sent along with its answers to changes
//! ([`moose_proto::msg::ClResponse::dirs`]). The kernel drops its copy of a folder's
//! attributes whenever a name in it changes, and asks again before the next change to check
//! permissions; answering from here saves that round trip to the master. An entry is used
//! no longer than the kernel would have kept the same answer (the attribute timeout), so other
//! mounts' changes show up as soon as they would anyway.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use moose_proto::{Attr, Inode};

/// Entries kept at most; the oldest half goes when it is reached.
const MAX_ENTRIES: usize = 8192;

#[derive(Default)]
pub struct FolderAttrs {
    map: Mutex<HashMap<Inode, (Attr, Instant)>>,
}

impl FolderAttrs {
    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<Inode, (Attr, Instant)>> {
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
            let mut ages: Vec<Instant> = map.values().map(|(_, at)| *at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            map.retain(|_, (_, at)| *at > cut);
        }
        for a in attrs {
            map.insert(a.inode, (a.clone(), now));
        }
    }

    /// The attributes of folder `inode` if they are younger than `max_age`.
    pub fn get(&self, inode: Inode, max_age: Duration) -> Option<Attr> {
        let map = self.lock();
        map.get(&inode)
            .filter(|(_, at)| at.elapsed() < max_age)
            .map(|(a, _)| a.clone())
    }

    /// Forgets every entry: a folder may have gone (rmdir, a rename over it).
    pub fn clear(&self) {
        self.lock().clear();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use moose_proto::{FileKind, Timespec};

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
