//! Files whose pages in the kernel's cache went stale: another session changed their data
//! while this mount had them open (the master's notice), or notices may have been missed (a
//! new connection). The mount keeps a file's pages across its own writes (they go through
//! the kernel's cache) and, when the master allows it, across a close and the next open; it
//! drops them when told here.
//!
//! The queue is a set (a file is dropped once however often it was noticed), so it holds at
//! most one entry per file this mount has open.

use std::collections::HashSet;

use moose_proto::Inode;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// What is to be dropped next.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stale {
    pub files: HashSet<Inode>,
    /// Every open file's pages.
    pub all: bool,
}

#[derive(Default)]
pub struct StalePages {
    pending: Mutex<Stale>,
    wake: Notify,
}

impl StalePages {
    /// Another session changed the data of `files`.
    pub fn noticed(&self, files: &[Inode]) {
        self.pending.lock().files.extend(files.iter().copied());
        self.wake.notify_one();
    }

    /// Notices may have been missed: every open file is suspect.
    pub fn all(&self) {
        self.pending.lock().all = true;
        self.wake.notify_one();
    }

    /// Waits for stale files and takes them.
    pub async fn next(&self) -> Stale {
        loop {
            let taken = std::mem::take(&mut *self.pending.lock());
            if taken.all || !taken.files.is_empty() {
                return taken;
            }
            self.wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notices_gather_into_one_set_until_taken() {
        let s = StalePages::default();
        s.noticed(&[3, 4]);
        s.noticed(&[4, 5]);
        let got = s.next().await;
        assert_eq!(got.files, HashSet::from([3, 4, 5]));
        assert!(!got.all);
        s.all();
        assert_eq!(
            s.next().await,
            Stale {
                files: HashSet::new(),
                all: true
            }
        );
        // Nothing pending: it waits.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), s.next()).await;
        assert!(waiting.is_err());
    }
}
