//! Quotas on the write path: before a write(2) that extends a file past what the master last
//! allowed is acknowledged, the master is asked how far the file may grow. A write that
//! would cross a limit is cut short at it, and the next one gets `EDQUOT`, so the file never
//! holds a byte beyond the limit and holds every byte acknowledged.
//!
//! Answers are kept for a second: a cluster without quotas costs one question a second, a
//! file under a quota one question per second of writing (and one more at the limit).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use moose_proto::msg::{ClReply, ClRequest};
use moose_proto::{FsError, Inode};
use parking_lot::Mutex;

use crate::master::{CallError, MasterClient};

/// Answers are acted on for this long (`setquota` waits it out).
const KEEP: Duration = moose_proto::QUOTA_GRANT_LEASE;

#[derive(Default)]
pub struct Grants {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The master said it has no quotas; valid until then.
    none_until: Option<Instant>,
    /// How far each file may grow, and until when that holds.
    files: HashMap<Inode, (u64, Instant)>,
}

/// How many of `len` bytes at `offset` may be written, given that the file may grow to `end`.
pub fn admitted(offset: u64, len: u64, end: u64) -> Result<u64, FsError> {
    let want = offset.saturating_add(len);
    if end >= want || len == 0 {
        Ok(len)
    } else if end > offset {
        Ok(end - offset)
    } else {
        Err(FsError::Quota)
    }
}

impl Grants {
    /// True when the master said lately that the cluster has no quotas: nothing it makes can
    /// be refused for one. `margin` early, so that news can be asked for in time.
    pub fn none_known(&self, margin: Duration) -> bool {
        let g = self.inner.lock();
        g.none_until.is_some_and(|t| t > Instant::now() + margin)
    }

    /// The master said, in answer to a request sent at `asked`, whether the cluster has quotas.
    pub fn note_cluster(&self, quotas: bool, asked: Instant) {
        let mut g = self.inner.lock();
        g.none_until = (!quotas).then_some(asked + KEEP);
    }

    /// True when what the master said lately admits all `len` bytes at `offset` of `inode`
    /// (no question to ask).
    pub fn admits_now(&self, inode: Inode, offset: u64, len: u64) -> bool {
        let want = offset.saturating_add(len);
        let now = Instant::now();
        let g = self.inner.lock();
        g.none_until.is_some_and(|t| t > now)
            || matches!(g.files.get(&inode), Some((end, until)) if *until > now && *end >= want)
    }

    /// How many of `len` bytes at `offset` of `inode` may be written now.
    pub async fn admit(
        &self,
        master: &MasterClient,
        inode: Inode,
        offset: u64,
        len: u64,
    ) -> Result<u64, CallError> {
        let now = Instant::now();
        if self.admits_now(inode, offset, len) {
            return Ok(len);
        }
        self.inner.lock().files.retain(|_, (_, until)| *until > now);
        match master.call(ClRequest::QuotaAllowance { inode }).await? {
            ClReply::Allowance { end, quotas } => {
                let mut g = self.inner.lock();
                if quotas {
                    g.none_until = None;
                    g.files.insert(inode, (end, now + KEEP));
                } else {
                    g.none_until = Some(now + KEEP);
                }
                Ok(admitted(offset, len, end)?)
            }
            _ => Err(CallError::Unexpected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_cut_at_the_limit_and_the_next_one_refused() {
        assert_eq!(admitted(0, 100, 1000), Ok(100));
        assert_eq!(admitted(900, 200, 1000), Ok(100));
        assert_eq!(admitted(1000, 200, 1000), Err(FsError::Quota));
        assert_eq!(admitted(5000, 1, 1000), Err(FsError::Quota));
        assert_eq!(
            admitted(5000, 0, 1000),
            Ok(0),
            "an empty write is no growth"
        );
    }
}
