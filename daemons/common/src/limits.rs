//! Bounds on what peers can make a daemon do: a cap on connections per port, and refusal log
//! lines limited to one per address and kind of refusal per minute (a peer retrying in a loop
//! cannot flood the log; the next line says how many were left out). Two refusals are of one
//! kind when their messages differ only in numbers (ports, ids, inodes).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How often one address's refusals are logged.
pub const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(60);

/// Refusals logged at most once per address per period.
pub struct RefusalLog {
    period: Duration,
    seen: Mutex<HashMap<(IpAddr, u64), (Instant, u64)>>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog::new(REFUSAL_LOG_PERIOD)
    }
}

impl RefusalLog {
    pub fn new(period: Duration) -> Self {
        RefusalLog {
            period,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the line to log for a refusal of `ip` (with the number of refusals left out
    /// since the last line), or `None` when one was logged for it less than a period ago.
    pub fn admit(&self, ip: IpAddr, what: &str) -> Option<String> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for b in what.bytes().filter(|b| !b.is_ascii_digit()) {
            b.hash(&mut h);
        }
        let key = (ip, h.finish());
        let now = Instant::now();
        let mut seen = self.seen.lock();
        if seen.len() > 10_000 {
            let period = self.period;
            seen.retain(|_, (at, _)| now.duration_since(*at) < period);
        }
        match seen.get_mut(&key) {
            Some((at, skipped)) if now.duration_since(*at) < self.period => {
                *skipped += 1;
                None
            }
            Some((at, skipped)) => {
                let n = std::mem::take(skipped);
                *at = now;
                Some(if n > 0 {
                    format!("{what} ({n} more refusals of {ip} in the last minute not logged)")
                } else {
                    what.to_string()
                })
            }
            None => {
                seen.insert(key, (now, 0));
                Some(what.to_string())
            }
        }
    }

    /// Logs a refusal as a warning, at most once per address per period.
    pub fn warn(&self, ip: IpAddr, what: &str) {
        if let Some(line) = self.admit(ip, what) {
            tracing::warn!("{line}");
        }
    }
}

/// A cap on the connections open at once on one port.
#[derive(Clone)]
pub struct ConnectionCap {
    open: Arc<AtomicUsize>,
    max: usize,
}

/// One admitted connection; dropping it frees its place.
pub struct ConnectionSlot {
    open: Arc<AtomicUsize>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionCap {
    pub fn new(max: usize) -> Self {
        ConnectionCap {
            open: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A slot, or `None` when `max` connections are open.
    pub fn try_admit(&self) -> Option<ConnectionSlot> {
        let mut n = self.open.load(Ordering::Acquire);
        loop {
            if n >= self.max {
                return None;
            }
            match self
                .open
                .compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Some(ConnectionSlot {
                        open: self.open.clone(),
                    })
                }
                Err(now) => n = now,
            }
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_address_per_period() {
        let log = RefusalLog::new(Duration::from_millis(200));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        assert_eq!(log.admit(a, "x from :1").as_deref(), Some("x from :1"));
        assert_eq!(log.admit(a, "x from :2"), None, "differs only in numbers");
        assert_eq!(log.admit(a, "x from :3"), None);
        assert_eq!(log.admit(a, "z").as_deref(), Some("z"), "another kind");
        assert_eq!(log.admit(b, "x from :4").as_deref(), Some("x from :4"));
        std::thread::sleep(Duration::from_millis(250));
        let line = log.admit(a, "x from :5").unwrap();
        assert!(line.contains("2 more refusals"), "{line}");
    }

    #[test]
    fn the_cap_frees_places() {
        let cap = ConnectionCap::new(2);
        let a = cap.try_admit().unwrap();
        let _b = cap.try_admit().unwrap();
        assert!(cap.try_admit().is_none());
        drop(a);
        assert!(cap.try_admit().is_some());
        assert_eq!(cap.open(), 1);
    }
}
