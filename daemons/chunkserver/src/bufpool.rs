//! A pool of block buffers, so the data path does not allocate per block. The buffers are
//! page-aligned: a whole block received from a writer goes to the disk from its buffer with
//! `O_DIRECT` (see [`crate::chunkfile::write_blocks_direct`]), which needs aligned memory.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::chunkfile::BS;

/// Alignment of a buffer: a page, which covers every block device's DMA alignment.
pub const ALIGN: usize = 4096;

/// One block of page-aligned memory.
#[repr(C, align(4096))]
struct AlignedBlock([u8; BS]);

fn new_aligned_block() -> Box<AlignedBlock> {
    // SAFETY: all-zero bytes are a valid `[u8; BS]`.
    unsafe { Box::<AlignedBlock>::new_zeroed().assume_init() }
}

pub struct BufPool {
    free: Mutex<Vec<Box<AlignedBlock>>>,
    max_free: usize,
}

impl BufPool {
    /// A pool of block buffers keeping at most `max_free` idle ones.
    pub fn new(max_free: usize) -> Arc<BufPool> {
        Arc::new(BufPool {
            free: Mutex::new(Vec::new()),
            max_free,
        })
    }

    /// An empty buffer with room for one block; it goes back to the pool when dropped.
    pub fn get(self: &Arc<Self>) -> PooledBuf {
        let block = self.free.lock().pop().unwrap_or_else(new_aligned_block);
        PooledBuf {
            block: Some(block),
            len: 0,
            pool: Arc::clone(self),
        }
    }

    #[cfg(test)]
    pub fn idle(&self) -> usize {
        self.free.lock().len()
    }
}

/// A pooled block buffer holding `len` bytes.
pub struct PooledBuf {
    /// `None` only while dropping.
    block: Option<Box<AlignedBlock>>,
    len: usize,
    pool: Arc<BufPool>,
}

impl PooledBuf {
    /// The whole block, to be filled from its start; [`PooledBuf::set_len`] then says how
    /// much of it the buffer holds.
    pub fn room(&mut self) -> &mut [u8] {
        self.block.as_mut().map_or(&mut [], |b| &mut b.0[..])
    }

    /// Holds the first `len` bytes of the block (as last written through
    /// [`PooledBuf::room`]); fails past one block.
    pub fn set_len(&mut self, len: usize) -> Result<(), BlockOverflow> {
        if len > BS || self.block.is_none() {
            return Err(BlockOverflow);
        }
        self.len = len;
        Ok(())
    }

    /// Appends `bytes`; fails (keeping what it holds) past one block.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> Result<(), BlockOverflow> {
        let end = self.len + bytes.len();
        let block = self.block.as_mut().ok_or(BlockOverflow)?;
        block
            .0
            .get_mut(self.len..end)
            .ok_or(BlockOverflow)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
}

/// Whole blocks of page-aligned memory in one piece: a stream's reads land there with
/// `O_DIRECT` (see [`crate::chunkfile::read_blocks_direct`]).
pub struct AlignedBlocks(Box<[AlignedBlock]>);

impl AlignedBlocks {
    /// `blocks` zeroed blocks.
    pub fn zeroed(blocks: usize) -> AlignedBlocks {
        // SAFETY: all-zero bytes are a valid `[u8; BS]`.
        AlignedBlocks(unsafe { Box::<[AlignedBlock]>::new_zeroed_slice(blocks).assume_init() })
    }
}

impl Deref for AlignedBlocks {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: an `AlignedBlock` is `BS` bytes with no padding (BS is a multiple of its
        // alignment), so the blocks are `len * BS` initialized bytes in a row.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), self.0.len() * BS) }
    }
}

impl DerefMut for AlignedBlocks {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `deref`; every byte pattern is a valid `u8`.
        unsafe {
            std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), self.0.len() * BS)
        }
    }
}

/// More bytes than a block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("more than one block of data")]
pub struct BlockOverflow;

impl Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.block.as_ref().map_or(&[], |b| &b.0[..self.len])
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        let Some(block) = self.block.take() else {
            return;
        };
        let mut free = self.pool.free.lock();
        if free.len() < self.pool.max_free {
            free.push(block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_blocks_are_one_aligned_piece_of_whole_blocks() {
        let mut b = AlignedBlocks::zeroed(3);
        assert_eq!(b.len(), 3 * BS);
        assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        assert!(b.iter().all(|&x| x == 0));
        b[2 * BS + 5] = 9;
        assert_eq!(b[2 * BS + 5], 9);
    }

    #[test]
    fn a_buffer_filled_in_place_holds_what_it_is_told() {
        let pool = BufPool::new(1);
        let mut a = pool.get();
        assert_eq!(a.room().len(), BS);
        a.room()[..4].copy_from_slice(b"abcd");
        a.set_len(4).unwrap();
        assert_eq!(&a[..], b"abcd");
        assert_eq!(a.set_len(BS + 1), Err(BlockOverflow));
        assert_eq!(&a[..], b"abcd");
    }

    #[test]
    fn buffers_are_reused_aligned_and_hold_one_block_at_most() {
        let pool = BufPool::new(2);
        let mut a = pool.get();
        a.extend_from_slice(&[1, 2, 3]).unwrap();
        assert_eq!(&a[..], &[1, 2, 3]);
        let ptr = a.as_ptr();
        assert_eq!(ptr as usize % ALIGN, 0);
        assert_eq!(a.extend_from_slice(&vec![0; BS]), Err(BlockOverflow));
        assert_eq!(a.len(), 3);
        drop(a);
        assert_eq!(pool.idle(), 1);
        let mut b = pool.get();
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr);
        b.extend_from_slice(&vec![7; BS]).unwrap();
        assert_eq!(b.len(), BS);
        let (c, d, e) = (pool.get(), pool.get(), pool.get());
        drop((b, c, d, e));
        assert_eq!(pool.idle(), 2);
    }
}
