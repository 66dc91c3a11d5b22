//! Test data: reproducible random contents and comparison that reports where files differ.

use rand::{RngCore, SeedableRng};

/// `len` bytes of random data from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// Panics with the first differing offset (not the whole buffers) when `got != want`.
pub fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    if got.len() != want.len() {
        panic!("{what}: length {} instead of {}", got.len(), want.len());
    }
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i} (got {:#04x}, want {:#04x})",
            got[i], want[i]
        );
    }
}
