//! Inode numbers the master set aside for this session, so that a create can be answered
//! before the master's answer (see `ahead.rs`): the mount names the new file's inode itself.
//!
//! The numbers belong to one session: a new session (the master restarted, or kept the old
//! one no longer) starts with none. Sessions are told apart by their keys (a restarted master
//! numbers its sessions from 1 again; a session taken over keeps its key). They reach the master in increasing order, as it wants
//! them: a number is taken and its create sent under one hold of the pool's lock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use moose_proto::Inode;
use parking_lot::Mutex;

/// Numbers asked for at a time.
pub const REFILL: u32 = 1024;
/// The pool asks for more when it holds fewer than this.
const LOW: u64 = 256;
/// A request only for news (no numbers needed) goes out at most this often.
const REFRESH_EVERY: Duration = Duration::from_millis(500);

#[derive(Default)]
struct Inner {
    /// The session the numbers belong to (see [`session_tag`]).
    session: u64,
    /// `(next, end)` ranges, oldest first.
    ranges: VecDeque<(Inode, Inode)>,
    /// A request for more is out.
    asking: bool,
    /// When the last request went out.
    asked: Option<Instant>,
}

impl Inner {
    fn left(&self) -> u64 {
        self.ranges.iter().map(|(n, e)| e - n).sum()
    }

    /// Drops what an earlier session reserved.
    fn follow(&mut self, session: u64) {
        if self.session != session {
            self.session = session;
            self.ranges.clear();
        }
    }
}

/// What tells a session from the ones before it: its key.
pub fn session_tag(session: &moose_proto::msg::RegisterReply) -> u64 {
    session
        .session_key
        .iter()
        .fold(session.session_id, |h, b| h.rotate_left(8) ^ u64::from(*b))
}

#[derive(Default)]
pub struct InodePool {
    inner: Mutex<Inner>,
}

impl InodePool {
    /// Runs `send` with the next number of session `session` while holding the pool; the
    /// number is used when `send` returns `Some`. `None` when the pool is empty.
    pub fn with_next<R>(&self, session: u64, send: impl FnOnce(Inode) -> Option<R>) -> Option<R> {
        let mut inner = self.inner.lock();
        inner.follow(session);
        let (next, end) = inner.ranges.front_mut()?;
        let r = send(*next)?;
        *next += 1;
        if *next == *end {
            inner.ranges.pop_front();
        }
        Some(r)
    }

    /// How many numbers to ask session `session`'s master for now, if any (it is then
    /// taken as asked until [`InodePool::refilled`] or [`InodePool::refill_failed`]).
    /// `refresh` asks even when the pool holds enough (for the quota news that comes with
    /// the answer): 0 numbers then.
    pub fn wanted(&self, session: u64, refresh: bool) -> Option<u32> {
        let mut inner = self.inner.lock();
        inner.follow(session);
        if inner.asking {
            return None;
        }
        let count = if inner.left() < LOW { REFILL } else { 0 };
        let recent = inner.asked.is_some_and(|t| t.elapsed() < REFRESH_EVERY);
        if count == 0 && (!refresh || recent) {
            return None;
        }
        inner.asking = true;
        inner.asked = Some(Instant::now());
        Some(count)
    }

    /// The master reserved `first..first + count` for session `session`.
    pub fn refilled(&self, session: u64, first: Inode, count: u32) {
        let mut inner = self.inner.lock();
        inner.asking = false;
        if inner.session == session && count > 0 {
            inner.ranges.push_back((first, first + u64::from(count)));
        }
    }

    pub fn refill_failed(&self) {
        self.inner.lock().asking = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_come_in_order_and_only_used_ones_are_gone() {
        let pool = InodePool::default();
        assert_eq!(pool.with_next(1, Some), None, "empty");
        assert_eq!(pool.wanted(1, false), Some(REFILL));
        assert_eq!(pool.wanted(1, false), None, "one request at a time");
        pool.refilled(1, 100, 2);
        pool.refilled(1, 500, 1);
        assert_eq!(pool.with_next(1, Some), Some(100));
        assert_eq!(pool.with_next(1, |_| None::<()>), None);
        assert_eq!(pool.with_next(1, Some), Some(101), "an unused number stays");
        assert_eq!(pool.with_next(1, Some), Some(500));
        assert_eq!(pool.with_next(1, Some), None);
    }

    #[test]
    fn a_new_session_starts_without_numbers_and_a_full_pool_asks_only_to_refresh() {
        let pool = InodePool::default();
        pool.wanted(1, false);
        pool.refilled(1, 100, 1000);
        assert_eq!(pool.wanted(1, false), None, "enough left");
        assert_eq!(
            pool.wanted(1, true),
            None,
            "news were asked for a moment ago"
        );
        std::thread::sleep(REFRESH_EVERY);
        assert_eq!(pool.wanted(1, true), Some(0), "a refresh asks for none");
        pool.refill_failed();
        assert_eq!(
            pool.with_next(2, Some),
            None,
            "another session's numbers are gone"
        );
        assert_eq!(pool.wanted(2, false), Some(REFILL));
        pool.refilled(1, 7000, 10);
        assert_eq!(
            pool.with_next(2, Some),
            None,
            "an answer for the old session is dropped"
        );
    }
}
