//! Directory offsets: the kernel resumes a listing at the offset we gave with the previous
//! entry. `.` is followed by offset 1, `..` by 2, and a master entry by its cookie + 2.

use std::collections::VecDeque;

use moose_proto::DirEntry;

/// Where a listing resumes for a FUSE offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// From the start: `.`, `..`, then the master's entries from cookie 0.
    Dot,
    /// `..`, then the master's entries from cookie 0.
    DotDot,
    /// The master's entries from this cookie.
    Master(u64),
}

/// Offset following `.`.
pub const AFTER_DOT: u64 = 1;
/// Offset following `..`.
pub const AFTER_DOTDOT: u64 = 2;

pub fn resume_at(offset: u64) -> Resume {
    match offset {
        0 => Resume::Dot,
        AFTER_DOT => Resume::DotDot,
        n => Resume::Master(n - 2),
    }
}

/// The FUSE offset following a master entry; `None` if the cookie cannot be represented (or is
/// 0, which means "the start" and would make the listing loop).
pub fn offset_after(cookie: u64) -> Option<u64> {
    if cookie == 0 {
        return None;
    }
    cookie.checked_add(2)
}

/// Master cookie at which the entries of a [`Resume`] point start.
pub fn master_cookie(r: Resume) -> u64 {
    match r {
        Resume::Dot | Resume::DotDot => 0,
        Resume::Master(c) => c,
    }
}

/// Entries fetched from the master but not yet handed to the kernel (the kernel's buffer was
/// full): the next call resuming exactly where they start is served from here.
#[derive(Debug, Default)]
pub struct DirBuffer {
    /// Master cookie the first buffered entry follows.
    from_cookie: u64,
    entries: VecDeque<DirEntry>,
    eof: bool,
    /// Writer epoch taken before the entries were asked for (their attributes are that old).
    epoch: u64,
    valid: bool,
}

impl DirBuffer {
    /// Remembers `entries` (listed from `from_cookie`, asked for at writer epoch `epoch`) for
    /// a later call.
    pub fn store(&mut self, from_cookie: u64, entries: VecDeque<DirEntry>, eof: bool, epoch: u64) {
        self.from_cookie = from_cookie;
        self.entries = entries;
        self.eof = eof;
        self.epoch = epoch;
        self.valid = true;
    }

    /// The buffered entries, whether they reach the end, and their epoch, if they start at
    /// `cookie` (and drops them from the buffer).
    pub fn take_if_at(&mut self, cookie: u64) -> Option<(VecDeque<DirEntry>, bool, u64)> {
        if self.valid && self.from_cookie == cookie && (!self.entries.is_empty() || self.eof) {
            self.valid = false;
            Some((std::mem::take(&mut self.entries), self.eof, self.epoch))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moose_proto::{Attr, FileKind, Timespec};

    fn entry(name: &str, cookie: u64) -> DirEntry {
        DirEntry {
            name: name.as_bytes().to_vec(),
            attr: Attr {
                inode: cookie + 100,
                kind: FileKind::File,
                mode: 0o644,
                uid: 0,
                gid: 0,
                atime: Timespec::default(),
                mtime: Timespec::default(),
                ctime: Timespec::default(),
                nlink: 1,
                size: 0,
                rdev: 0,
                goal: 1,
                xattrs: false,
            },
            cookie,
        }
    }

    #[test]
    fn offsets_round_trip() {
        assert_eq!(resume_at(0), Resume::Dot);
        assert_eq!(resume_at(AFTER_DOT), Resume::DotDot);
        assert_eq!(resume_at(AFTER_DOTDOT), Resume::Master(0));
        for cookie in [1u64, 2, 17, 1 << 40, u64::MAX - 2] {
            let off = offset_after(cookie).unwrap();
            assert!(off > AFTER_DOTDOT);
            assert_eq!(resume_at(off), Resume::Master(cookie));
        }
        assert_eq!(offset_after(u64::MAX - 1), None);
        assert_eq!(offset_after(0), None);
        assert_eq!(master_cookie(Resume::Dot), 0);
        assert_eq!(master_cookie(Resume::DotDot), 0);
        assert_eq!(master_cookie(Resume::Master(9)), 9);
    }

    #[test]
    fn buffer_serves_only_the_exact_resume_point() {
        let mut b = DirBuffer::default();
        assert!(b.take_if_at(0).is_none());
        b.store(
            5,
            VecDeque::from(vec![entry("a", 6), entry("b", 7)]),
            true,
            3,
        );
        assert!(b.take_if_at(4).is_none());
        let (got, eof, epoch) = b.take_if_at(5).unwrap();
        assert_eq!(got.len(), 2);
        assert!(eof);
        assert_eq!(epoch, 3);
        assert!(b.take_if_at(5).is_none(), "taken once");
    }

    #[test]
    fn empty_eof_buffer_is_served() {
        let mut b = DirBuffer::default();
        b.store(9, VecDeque::new(), true, 0);
        let (got, eof, _) = b.take_if_at(9).unwrap();
        assert!(got.is_empty() && eof);
        b.store(9, VecDeque::new(), false, 0);
        assert!(b.take_if_at(9).is_none(), "nothing to serve without eof");
    }
}
