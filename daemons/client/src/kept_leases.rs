//! Write leases a file keeps between write-outs.
//!
//! A new lease on an existing chunk raises the chunk's version on the master (a changelog
//! sync) and on every copy (an order to each server) before the first byte moves. Ending the
//! lease after each write-out made a program that writes and fsyncs in a loop, or a large
//! file written out 8 MiB at a time, pay that on every step. So a write-out that is not the
//! last one (a background write-out, an fsync) keeps its leases: the master keeps the chunk
//! locked for the session, and the next write-out of the chunk uses the same lease. A kept
//! lease is ended after [`KEEP_IDLE`] without a write (another writer of the chunk waits at
//! most that long), is never used past [`KEEP_MAX_AGE`] (its token lasts
//! `TOKEN_LIFETIME_SECS`), and a close or a change of size or times ends the file's leases.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use moose_proto::msg::WriteLease;

/// A kept lease unused for this long is ended.
pub const KEEP_IDLE: Duration = Duration::from_secs(1);
/// A lease is not used again past this age; its token would expire at 120 s.
pub const KEEP_MAX_AGE: Duration = Duration::from_secs(60);

/// A lease, when the master granted it and when it was last written under.
#[derive(Debug, Clone)]
pub struct KeptLease {
    pub lease: WriteLease,
    pub granted: Instant,
    used: Instant,
}

impl KeptLease {
    fn fit_at(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.used) < KEEP_IDLE
            && now.saturating_duration_since(self.granted) < KEEP_MAX_AGE
    }
}

/// The leases of one file, by chunk index.
#[derive(Debug, Default)]
pub struct KeptLeases {
    by_index: HashMap<u32, KeptLease>,
}

impl KeptLeases {
    /// Takes the lease kept for chunk `index` if it may still be used at `now`. One that may
    /// not is dropped: the new lease the caller asks for replaces it on the master.
    pub fn take(&mut self, index: u32, now: Instant) -> Option<KeptLease> {
        self.by_index.remove(&index).filter(|k| k.fit_at(now))
    }

    /// Keeps `lease` (granted at `granted`) for chunk `index`, last used at `now`.
    pub fn keep(&mut self, index: u32, lease: WriteLease, granted: Instant, now: Instant) {
        self.by_index.insert(
            index,
            KeptLease {
                lease,
                granted,
                used: now,
            },
        );
    }

    /// Takes the leases that may no longer be used at `now`: they are to be ended.
    pub fn take_unfit(&mut self, now: Instant) -> Vec<(u32, WriteLease)> {
        let unfit: Vec<u32> = self
            .by_index
            .iter()
            .filter(|(_, k)| !k.fit_at(now))
            .map(|(i, _)| *i)
            .collect();
        unfit
            .into_iter()
            .filter_map(|i| self.by_index.remove(&i).map(|k| (i, k.lease)))
            .collect()
    }

    /// Takes every lease, to be ended.
    pub fn take_all(&mut self) -> Vec<(u32, WriteLease)> {
        self.by_index.drain().map(|(i, k)| (i, k.lease)).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moose_proto::auth::ChunkToken;

    fn lease(chunk_id: u64) -> WriteLease {
        WriteLease {
            file_length: 0,
            chunk_id,
            version: 1,
            chain: vec![],
            token: ChunkToken::default(),
        }
    }

    #[test]
    fn a_lease_is_used_again_until_it_idles_or_ages() {
        let t0 = Instant::now();
        let mut k = KeptLeases::default();
        k.keep(0, lease(7), t0, t0);
        let again = k.take(0, t0 + KEEP_IDLE / 2).expect("fresh lease");
        assert_eq!(again.lease.chunk_id, 7);
        assert!(k.is_empty(), "a lease in use is not kept meanwhile");

        // Used again and again, it still ends at its maximum age.
        let late = t0 + KEEP_MAX_AGE;
        k.keep(0, again.lease, again.granted, late - KEEP_IDLE / 2);
        assert!(k.take(0, late).is_none());
        assert!(k.is_empty(), "an unfit lease is dropped");

        k.keep(1, lease(8), t0, t0);
        assert!(k.take(1, t0 + KEEP_IDLE).is_none(), "idle too long");
    }

    #[test]
    fn idle_leases_are_taken_for_ending_and_fresh_ones_stay() {
        let t0 = Instant::now();
        let mut k = KeptLeases::default();
        k.keep(0, lease(1), t0, t0);
        k.keep(1, lease(2), t0, t0 + KEEP_IDLE);
        let unfit = k.take_unfit(t0 + KEEP_IDLE + Duration::from_millis(1));
        assert_eq!(
            unfit
                .iter()
                .map(|(i, l)| (*i, l.chunk_id))
                .collect::<Vec<_>>(),
            vec![(0, 1)]
        );
        assert_eq!(k.take_all().len(), 1);
        assert!(k.is_empty());
    }
}
