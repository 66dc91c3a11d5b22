//! A pool of block-sized buffers, so the data path does not allocate per block.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use parking_lot::Mutex;

pub struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
    buf_size: usize,
    max_free: usize,
}

impl BufPool {
    /// A pool of buffers of `buf_size` bytes capacity keeping at most `max_free` idle ones.
    pub fn new(buf_size: usize, max_free: usize) -> Arc<BufPool> {
        Arc::new(BufPool {
            free: Mutex::new(Vec::new()),
            buf_size,
            max_free,
        })
    }

    /// An empty buffer with room for `buf_size` bytes; it goes back to the pool when dropped.
    pub fn get(self: &Arc<Self>) -> PooledBuf {
        let buf = self
            .free
            .lock()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.buf_size));
        PooledBuf {
            buf,
            pool: Arc::clone(self),
        }
    }

    #[cfg(test)]
    pub fn idle(&self) -> usize {
        self.free.lock().len()
    }
}

pub struct PooledBuf {
    buf: Vec<u8>,
    pool: Arc<BufPool>,
}

impl Deref for PooledBuf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() < self.pool.buf_size {
            return;
        }
        buf.clear();
        let mut free = self.pool.free.lock();
        if free.len() < self.pool.max_free {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused() {
        let pool = BufPool::new(1024, 2);
        let mut a = pool.get();
        a.extend_from_slice(&[1, 2, 3]);
        let ptr = a.as_ptr();
        drop(a);
        assert_eq!(pool.idle(), 1);
        let b = pool.get();
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr);
        let (c, d, e) = (pool.get(), pool.get(), pool.get());
        drop((b, c, d, e));
        assert_eq!(pool.idle(), 2);
    }
}
