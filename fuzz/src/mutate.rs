//! The mutation engine: a seeded generator that turns valid inputs into near-valid ones.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Byte values that sit on the edges decoders check.
const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, b'\n', b'=', b' '];

pub struct Mutator {
    rng: StdRng,
}

impl Mutator {
    pub fn new(seed: u64) -> Mutator {
        Mutator {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// A new input: one of `corpus`, mutated one to eight times.
    pub fn derive(&mut self, corpus: &[Vec<u8>]) -> Vec<u8> {
        let mut input = if corpus.is_empty() {
            Vec::new()
        } else {
            corpus[self.rng.random_range(0..corpus.len())].clone()
        };
        for _ in 0..self.rng.random_range(1..=8) {
            self.mutate(&mut input, corpus);
        }
        input
    }

    fn mutate(&mut self, v: &mut Vec<u8>, corpus: &[Vec<u8>]) {
        let len = v.len();
        match self.rng.random_range(0..9) {
            0 if len > 0 => {
                let i = self.rng.random_range(0..len);
                v[i] ^= 1 << self.rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = self.rng.random_range(0..len);
                v[i] = INTERESTING[self.rng.random_range(0..INTERESTING.len())];
            }
            2 => {
                let i = self.rng.random_range(0..=len);
                let n = self.rng.random_range(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| self.rng.random()).collect();
                v.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let a = self.rng.random_range(0..len);
                let b = (a + self.rng.random_range(1..=32)).min(len);
                v.drain(a..b);
            }
            4 if len > 0 => v.truncate(self.rng.random_range(0..len)),
            5 if len > 0 => {
                // Duplicate a piece (repeated keys, lines, records).
                let a = self.rng.random_range(0..len);
                let b = (a + self.rng.random_range(1..=64)).min(len);
                let piece = v[a..b].to_vec();
                let at = self.rng.random_range(0..=len);
                v.splice(at..at, piece);
            }
            6 if len >= 4 => {
                // A big-endian u32 (a length or kind field) nudged or blown up.
                let i = self.rng.random_range(0..=len - 4);
                let old = u32::from_be_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
                let new = match self.rng.random_range(0..4) {
                    0 => old.wrapping_add(1),
                    1 => old.wrapping_sub(1),
                    2 => u32::MAX,
                    _ => 1 << self.rng.random_range(0..32),
                };
                v[i..i + 4].copy_from_slice(&new.to_be_bytes());
            }
            7 if !corpus.is_empty() => {
                // Splice the tail of another input onto a head of this one.
                let other = &corpus[self.rng.random_range(0..corpus.len())];
                let cut = self.rng.random_range(0..=len);
                let from = self.rng.random_range(0..=other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            _ => {
                let at = self.rng.random_range(0..=len);
                v.insert(at, INTERESTING[self.rng.random_range(0..INTERESTING.len())]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_inputs() {
        let corpus = vec![b"KEY = VALUE\n".to_vec(), vec![0, 0, 0, 1, 0, 0, 0, 4]];
        let (mut a, mut b) = (Mutator::new(9), Mutator::new(9));
        for _ in 0..100 {
            assert_eq!(a.derive(&corpus), b.derive(&corpus));
        }
    }
}
