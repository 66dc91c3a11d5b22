//! Test data: reproducible random contents, comparison that reports where files differ, and
//! `copy_file_range(2)` with offsets.

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

/// `copy_file_range(2)` of `len` bytes from `from` at `off_in` to `to` at `off_out`: how many
/// it copied.
pub fn copy_file_range(
    from: &std::fs::File,
    off_in: u64,
    to: &std::fs::File,
    off_out: u64,
    len: usize,
) -> usize {
    use std::os::fd::AsRawFd;
    let (mut i, mut o) = (off_in as i64, off_out as i64);
    // SAFETY: descriptors the caller's files own; the offsets are locals of this function.
    let n =
        unsafe { libc::copy_file_range(from.as_raw_fd(), &mut i, to.as_raw_fd(), &mut o, len, 0) };
    assert!(
        n >= 0,
        "copy_file_range: {}",
        std::io::Error::last_os_error()
    );
    n as usize
}
