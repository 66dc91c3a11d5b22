//! Dirty byte ranges of one file (the write-behind buffer's content) and how they are cut for
//! writing: per chunk, then per 64 KiB block.

use std::collections::BTreeMap;

use bytes::Bytes;
use moose_proto::{BLOCK_SIZE, CHUNK_SIZE};

/// Largest file size, as stock MooseFS's and the master's: 2^31 chunks of 64 MiB (128 PiB).
pub const MAX_FILE_SIZE: u64 = CHUNK_SIZE << 31;

/// Non-overlapping, non-adjacent dirty ranges, keyed by start offset.
#[derive(Debug, Default)]
pub struct Extents {
    map: BTreeMap<u64, Vec<u8>>,
    bytes: u64,
}

impl Extents {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// End of the last range.
    pub fn end(&self) -> Option<u64> {
        self.map.last_key_value().map(|(s, d)| s + d.len() as u64)
    }

    /// True when some dirty byte lies in `[start, end)`.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return false;
        }
        match self.map.range(..end).next_back() {
            Some((s, d)) => s + d.len() as u64 > start,
            None => false,
        }
    }

    /// Adds `data` at `offset`, replacing older bytes and merging with touching ranges.
    pub fn insert(&mut self, offset: u64, data: &[u8]) {
        self.insert_with(offset, data, &mut None);
    }

    /// [`Extents::insert`]; a range that starts here takes `spare` (emptied) for its bytes
    /// when given one, rather than new memory.
    pub fn insert_with(&mut self, offset: u64, data: &[u8], spare: &mut Option<Vec<u8>>) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        // The range that starts at or before `offset` and touches it, if any.
        let before = self
            .map
            .range(..=offset)
            .next_back()
            .filter(|(s, d)| *s + d.len() as u64 >= offset)
            .map(|(s, _)| *s);
        let next_start = self.map.range(offset + 1..).next().map(|(s, _)| *s);
        // Fast path: appending to (or overwriting the tail of) one range, nothing after it.
        if let Some(bs) = before {
            if next_start.is_none_or(|n| n > end) {
                let buf = self.map.get_mut(&bs).expect("range found above");
                let old_len = buf.len() as u64;
                let rel = (offset - bs) as usize;
                let overlap = buf.len().saturating_sub(rel).min(data.len());
                buf[rel..rel + overlap].copy_from_slice(&data[..overlap]);
                buf.extend_from_slice(&data[overlap..]);
                self.bytes += buf.len() as u64 - old_len;
                return;
            }
        }
        // General case: merge every range touching [offset, end].
        let first = before.unwrap_or(offset);
        let touching: Vec<u64> = self.map.range(first..=end).map(|(s, _)| *s).collect();
        if touching.is_empty() {
            if let Some(mut buf) = spare.take() {
                buf.clear();
                buf.extend_from_slice(data);
                self.bytes += buf.len() as u64;
                self.map.insert(offset, buf);
                return;
            }
        }
        let mut new_start = offset;
        let mut new_end = end;
        let mut old: Vec<(u64, Vec<u8>)> = Vec::with_capacity(touching.len());
        for s in touching {
            if let Some(d) = self.map.remove(&s) {
                self.bytes -= d.len() as u64;
                new_start = new_start.min(s);
                new_end = new_end.max(s + d.len() as u64);
                old.push((s, d));
            }
        }
        let mut buf = vec![0u8; (new_end - new_start) as usize];
        for (s, d) in old {
            let rel = (s - new_start) as usize;
            buf[rel..rel + d.len()].copy_from_slice(&d);
        }
        let rel = (offset - new_start) as usize;
        buf[rel..rel + data.len()].copy_from_slice(data);
        self.bytes += buf.len() as u64;
        self.map.insert(new_start, buf);
    }

    /// Removes and returns every range, in offset order.
    pub fn take_all(&mut self) -> Vec<(u64, Bytes)> {
        self.bytes = 0;
        std::mem::take(&mut self.map)
            .into_iter()
            .map(|(s, d)| (s, Bytes::from(d)))
            .collect()
    }

    /// The ranges, in offset order (start, length).
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(s, d)| (*s, d.len() as u64))
    }
}

/// The writes of one chunk: pieces at offsets inside the chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkWrite {
    pub index: u32,
    pub pieces: Vec<(u32, Bytes)>,
    /// Absolute file offset the pieces reach.
    pub end: u64,
}

impl ChunkWrite {
    pub fn bytes(&self) -> u64 {
        self.pieces.iter().map(|(_, d)| d.len() as u64).sum()
    }
}

/// Cuts ranges (sorted, non-overlapping, below [`MAX_FILE_SIZE`]) at chunk boundaries and groups
/// them by chunk.
pub fn plan_chunks(ranges: Vec<(u64, Bytes)>) -> Vec<ChunkWrite> {
    let mut out: Vec<ChunkWrite> = Vec::new();
    for (start, data) in ranges {
        let mut pos = start;
        let mut rest = data;
        while !rest.is_empty() {
            let index = pos / CHUNK_SIZE;
            let in_chunk = pos % CHUNK_SIZE;
            let take = ((CHUNK_SIZE - in_chunk) as usize).min(rest.len());
            let piece = rest.split_to(take);
            let end = pos + take as u64;
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            match out.last_mut() {
                Some(cw) if cw.index == index => {
                    cw.pieces.push((in_chunk as u32, piece));
                    cw.end = cw.end.max(end);
                }
                _ => out.push(ChunkWrite {
                    index,
                    pieces: vec![(in_chunk as u32, piece)],
                    end,
                }),
            }
            pos = end;
        }
    }
    out
}

/// Cuts a piece at 64 KiB block boundaries: every data frame stays inside one block.
pub fn block_pieces(offset: u32, data: &Bytes) -> Vec<(u32, Bytes)> {
    let mut out = Vec::with_capacity(data.len() / BLOCK_SIZE as usize + 2);
    let mut pos = offset;
    let mut rest = data.clone();
    while !rest.is_empty() {
        let room = (BLOCK_SIZE - pos % BLOCK_SIZE) as usize;
        let piece = rest.split_to(room.min(rest.len()));
        let len = piece.len() as u32;
        out.push((pos, piece));
        pos += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_range_takes_the_spare_and_merges_do_not() {
        let mut e = Extents::default();
        let mut spare = Some(Vec::with_capacity(1 << 20));
        e.insert_with(100, &[1, 2, 3], &mut spare);
        assert!(spare.is_none(), "a new range left the spare");
        let mut other = Some(vec![9u8; 10]);
        e.insert_with(103, &[4], &mut other);
        e.insert_with(50, &[7; 51], &mut other);
        assert!(other.is_some(), "a merge took the spare");
        let ranges = e.take_all();
        assert_eq!(ranges.len(), 1);
        assert_eq!(ranges[0].0, 50);
        let mut want = vec![7u8; 51];
        want.extend_from_slice(&[2, 3, 4]);
        assert_eq!(&ranges[0].1[..], &want[..]);
        let mut e = Extents::default();
        let mut spare = Some(Vec::with_capacity(1 << 20));
        let at2 = spare.as_ref().unwrap().as_ptr();
        e.insert_with(0, &[5; 10], &mut spare);
        e.insert(10, &[6; 10]);
        assert_eq!(
            e.take_all()[0].1.as_ptr(),
            at2,
            "appends left the spare's memory"
        );
    }

    fn dump(e: &Extents) -> Vec<(u64, Vec<u8>)> {
        e.map.iter().map(|(s, d)| (*s, d.clone())).collect()
    }

    /// A naive model: a sparse byte map.
    fn model(ops: &[(u64, Vec<u8>)]) -> BTreeMap<u64, u8> {
        let mut m = BTreeMap::new();
        for (off, d) in ops {
            for (i, b) in d.iter().enumerate() {
                m.insert(off + i as u64, *b);
            }
        }
        m
    }

    #[test]
    fn append_merges() {
        let mut e = Extents::default();
        e.insert(0, b"abc");
        e.insert(3, b"def");
        assert_eq!(dump(&e), vec![(0, b"abcdef".to_vec())]);
        assert_eq!(e.bytes(), 6);
        assert_eq!(e.end(), Some(6));
    }

    #[test]
    fn overwrite_inside_and_tail() {
        let mut e = Extents::default();
        e.insert(10, b"aaaaaa");
        e.insert(12, b"XY");
        assert_eq!(dump(&e), vec![(10, b"aaXYaa".to_vec())]);
        e.insert(14, b"ZZZZ");
        assert_eq!(dump(&e), vec![(10, b"aaXYZZZZ".to_vec())]);
        assert_eq!(e.bytes(), 8);
    }

    #[test]
    fn bridge_two_ranges_and_prepend() {
        let mut e = Extents::default();
        e.insert(0, b"aa");
        e.insert(5, b"bb");
        assert_eq!(e.bytes(), 4);
        e.insert(1, b"XXXXX");
        assert_eq!(dump(&e), vec![(0, b"aXXXXXb".to_vec())]);
        e.insert(20, b"cc");
        e.insert(18, b"dd");
        assert_eq!(dump(&e)[1], (18, b"ddcc".to_vec()));
        assert_eq!(e.bytes(), 11);
    }

    #[test]
    fn overlaps() {
        let mut e = Extents::default();
        e.insert(100, &[1; 10]);
        assert!(e.overlaps(105, 106));
        assert!(e.overlaps(0, 101));
        assert!(!e.overlaps(0, 100));
        assert!(!e.overlaps(110, 200));
        assert!(!e.overlaps(105, 105));
    }

    #[test]
    fn random_inserts_match_model() {
        // Deterministic pseudo-random sequence (xorshift).
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200 {
            let mut e = Extents::default();
            let mut ops = Vec::new();
            for _ in 0..20 {
                let off = next() % 200;
                let len = (next() % 30) as usize;
                let byte = (next() % 251) as u8;
                let d = vec![byte; len];
                e.insert(off, &d);
                ops.push((off, d));
            }
            let m = model(&ops);
            let mut got = BTreeMap::new();
            let ranges: Vec<_> = dump(&e);
            for w in ranges.windows(2) {
                assert!(w[0].0 + (w[0].1.len() as u64) < w[1].0, "ranges touch");
            }
            for (s, d) in &ranges {
                for (i, b) in d.iter().enumerate() {
                    got.insert(s + i as u64, *b);
                }
            }
            assert_eq!(got, m);
            assert_eq!(e.bytes(), m.len() as u64);
        }
    }

    #[test]
    fn plan_splits_at_chunk_boundaries() {
        let start = CHUNK_SIZE - 10;
        let data = Bytes::from(vec![7u8; 30]);
        let plan = plan_chunks(vec![(5, Bytes::from_static(b"hello")), (start, data)]);
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].index, 0);
        assert_eq!(plan[0].pieces.len(), 2);
        assert_eq!(plan[0].pieces[0].0, 5);
        assert_eq!(
            plan[0].pieces[1],
            ((CHUNK_SIZE - 10) as u32, Bytes::from(vec![7u8; 10]))
        );
        assert_eq!(plan[0].end, CHUNK_SIZE);
        assert_eq!(plan[1].index, 1);
        assert_eq!(plan[1].pieces, vec![(0, Bytes::from(vec![7u8; 20]))]);
        assert_eq!(plan[1].end, CHUNK_SIZE + 20);
        assert_eq!(plan[1].bytes(), 20);
    }

    #[test]
    fn plan_spanning_several_chunks() {
        let len = 2 * CHUNK_SIZE as usize + 3;
        let plan = plan_chunks(vec![(CHUNK_SIZE - 1, Bytes::from(vec![1u8; len]))]);
        let idx: Vec<u32> = plan.iter().map(|c| c.index).collect();
        assert_eq!(idx, vec![0, 1, 2, 3]);
        let total: u64 = plan.iter().map(|c| c.bytes()).sum();
        assert_eq!(total, len as u64);
        assert_eq!(plan[3].end, CHUNK_SIZE - 1 + len as u64);
    }

    #[test]
    fn block_pieces_never_cross_blocks() {
        let b = BLOCK_SIZE;
        let data = Bytes::from((0..(2 * b + 100)).map(|i| i as u8).collect::<Vec<u8>>());
        let pieces = block_pieces(b - 50, &data);
        let offs: Vec<(u32, usize)> = pieces.iter().map(|(o, d)| (*o, d.len())).collect();
        assert_eq!(
            offs,
            vec![
                (b - 50, 50),
                (b, b as usize),
                (2 * b, b as usize),
                (3 * b, 50)
            ]
        );
        let joined: Vec<u8> = pieces.iter().flat_map(|(_, d)| d.to_vec()).collect();
        assert_eq!(joined, data.to_vec());
        assert!(block_pieces(0, &Bytes::new()).is_empty());
        assert_eq!(block_pieces(3, &Bytes::from_static(b"xy")).len(), 1);
    }
}
