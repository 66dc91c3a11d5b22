//! Idle connections kept per chunkserver address for the next request to it (saving a TCP
//! connect and a hello): the mount's connections to chunkservers, and a chunkserver's to the
//! next servers of its write chains.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::CsAddr;

pub struct IdlePool<T> {
    idle: Mutex<HashMap<CsAddr, Vec<(Instant, T)>>>,
    max_per_addr: usize,
    /// Older connections are dropped rather than reused: kept well under the server's own
    /// idle timeout, a reused connection is rarely one the server has closed.
    max_age: Duration,
}

impl<T> IdlePool<T> {
    pub fn new(max_per_addr: usize, max_age: Duration) -> Self {
        IdlePool {
            idle: Mutex::new(HashMap::new()),
            max_per_addr,
            max_age,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<CsAddr, Vec<(Instant, T)>>> {
        // A panic elsewhere while holding the lock leaves the map usable.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently kept connection to `addr` that is young enough.
    pub fn take(&self, addr: &CsAddr) -> Option<T> {
        let mut idle = self.lock();
        let list = idle.get_mut(addr)?;
        while let Some((at, conn)) = list.pop() {
            if at.elapsed() < self.max_age {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for the next request to `addr`, unless enough are kept already.
    pub fn put(&self, addr: &CsAddr, conn: T) {
        let mut idle = self.lock();
        let list = idle.entry(addr.clone()).or_default();
        list.retain(|(at, _)| at.elapsed() < self.max_age);
        if list.len() < self.max_per_addr {
            list.push((Instant::now(), conn));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> CsAddr {
        CsAddr {
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn keeps_a_few_per_address_and_hands_out_the_newest() {
        let pool = IdlePool::new(2, Duration::from_secs(60));
        pool.put(&addr(1), "a");
        pool.put(&addr(1), "b");
        pool.put(&addr(1), "c");
        pool.put(&addr(2), "x");
        assert_eq!(pool.take(&addr(1)), Some("b"));
        assert_eq!(pool.take(&addr(1)), Some("a"));
        assert_eq!(pool.take(&addr(1)), None);
        assert_eq!(pool.take(&addr(2)), Some("x"));
    }

    #[test]
    fn old_connections_are_not_reused() {
        let pool = IdlePool::new(4, Duration::ZERO);
        pool.put(&addr(1), 1);
        assert_eq!(pool.take(&addr(1)), None);
    }
}
