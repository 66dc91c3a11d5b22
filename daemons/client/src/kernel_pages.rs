//! Pages handed to the kernel's cache at a file's last close.
//!
//! Writes go through the kernel's cache, but a page that no single write covered whole (the
//! last page of a file, or one a write boundary cuts) is not marked up to date: the next
//! reader of the file gets it from a chunkserver again (`tar -c` right after `tar -x` paid
//! one or two such reads per file). Bytes that `copy_file_range` buffered are not in the
//! kernel's cache at all. A write-out keeps a copy of what it wrote, page-aligned (all of a
//! small write-out, else the pages writes cut), and the last close of the file hands it to
//! the kernel (`FUSE_NOTIFY_STORE`), which marks a page
//! up to date when the bytes cover it whole or up to the file's end.
//!
//! Only the last close may do it: no other handle, no mapping (the kernel writes a mapping's
//! pages out when it is unmapped, before the close) and no request of the file are then under
//! way, so the copy is the file's newest content. Anything that may change the file after
//! the write-out (a write, an open for writing, a truncation, another session's change)
//! drops the copy first.

use std::collections::BTreeMap;

use bytes::Bytes;

/// Bytes of one write-out kept whole; larger write-outs keep only their ragged pages.
pub const WHOLE_MAX: u64 = 256 << 10;
/// Ragged pages noted per file between write-outs; the rest are not kept.
pub const RAGGED_MAX: usize = 16_384;

/// The size of the kernel's pages.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size)
        .ok()
        .filter(|s| s.is_power_of_two())
        .unwrap_or(4096)
}

/// Notes in `ragged` the pages a write of `len` bytes at `offset` begins or ends inside of
/// (the kernel leaves them not up to date), up to [`RAGGED_MAX`].
pub fn note_ragged(ragged: &mut Vec<u64>, offset: u64, len: u64, page: u64) {
    for at in [offset, offset + len] {
        let p = at / page;
        if at % page != 0 && ragged.len() < RAGGED_MAX && ragged.last() != Some(&p) {
            ragged.push(p);
        }
    }
}

/// What of the written-out `ranges` (start, bytes; sorted and apart) to keep for the
/// kernel, as (offset, bytes) pieces: every range whole when they hold at most [`WHOLE_MAX`]
/// bytes in all; else the parts of the `ragged` pages (see [`note_ragged`]) the ranges hold
/// (writes covered the other pages whole). A piece that starts inside a page completes the
/// kept piece that ends where it starts (see [`Kept::add`]). The bytes are copied: they outlive
/// the buffers.
pub fn to_store(ranges: &[(u64, Bytes)], ragged: &[u64], page: u64) -> Vec<(u64, Bytes)> {
    let total: u64 = ranges.iter().map(|(_, d)| d.len() as u64).sum();
    let mut pieces = Vec::new();
    let mut keep = |start: u64, data: &Bytes, from: u64, to: u64| {
        let (a, b) = ((from - start) as usize, (to - start) as usize);
        pieces.push((from, Bytes::copy_from_slice(&data[a..b])));
    };
    if total <= WHOLE_MAX {
        for (start, data) in ranges {
            keep(*start, data, *start, start + data.len() as u64);
        }
        return pieces;
    }
    let mut pages = ragged.to_vec();
    pages.sort_unstable();
    pages.dedup();
    let mut at = 0;
    for p in pages {
        let (from, to) = (p * page, (p + 1) * page);
        // The first range that ends inside the page or after it.
        while at < ranges.len() && ranges[at].0 + ranges[at].1.len() as u64 <= from {
            at += 1;
        }
        let Some((start, data)) = ranges.get(at) else {
            break;
        };
        if *start < to {
            let end = start + data.len() as u64;
            keep(*start, data, from.max(*start), end.min(to));
        }
    }
    pieces
}

/// Bytes one file keeps at most; write-outs beyond it keep nothing (a file open for long,
/// a log, must not take what all files may keep).
pub const FILE_MAX: u64 = 32 << 20;

/// The pieces one file keeps for the kernel: they start on page boundaries and never overlap
/// (each lies in the data of one write-out, and a write since dropped those it overlaps).
#[derive(Debug, Default)]
pub struct Kept {
    pieces: BTreeMap<u64, Bytes>,
    bytes: u64,
}

impl Kept {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Drops the pieces that overlap `[start, end)`; returns their bytes.
    pub fn drop_overlapping(&mut self, start: u64, end: u64) -> u64 {
        let doomed: Vec<u64> = self
            .pieces
            .range(..end)
            .rev()
            .take_while(|(s, d)| *s + d.len() as u64 > start)
            .map(|(s, _)| *s)
            .collect();
        let dropped: u64 = doomed
            .iter()
            .filter_map(|s| self.pieces.remove(s))
            .map(|d| d.len() as u64)
            .sum();
        self.bytes -= dropped;
        dropped
    }

    /// Drops every piece; returns their bytes.
    pub fn clear(&mut self) -> u64 {
        self.pieces.clear();
        std::mem::take(&mut self.bytes)
    }

    /// Takes every piece, in offset order.
    pub fn take(&mut self) -> Vec<(u64, Bytes)> {
        self.bytes = 0;
        std::mem::take(&mut self.pieces).into_iter().collect()
    }

    /// Adds `pieces` (in offset order, apart). A piece that starts inside a page takes over
    /// the kept bytes of that page before it when a kept piece ends where it starts (an
    /// earlier write-out wrote the page's beginning), or else loses its part before the next
    /// page boundary (the kernel marks only a page stored from its start up to date). Returns
    /// how many bytes more it holds: at most the pieces' bytes.
    pub fn add(&mut self, pieces: Vec<(u64, Bytes)>, page: u64) -> u64 {
        let before = self.bytes;
        for (start, data) in pieces {
            let end = start + data.len() as u64;
            let (at, bytes) = if start % page == 0 {
                (start, data)
            } else if let Some(prev) = self
                .pieces
                .range(..start)
                .next_back()
                .filter(|(s, d)| *s + d.len() as u64 == start)
                .map(|(s, _)| *s)
            {
                // Only the page's beginning is copied again: a log written and synced in
                // small pieces must not copy all it kept at every write-out.
                let page_start = start - start % page;
                let kept = self.pieces.remove(&prev).unwrap_or_default();
                let cut = (page_start - prev) as usize;
                if cut > 0 {
                    self.pieces.insert(prev, kept.slice(..cut));
                }
                let head = kept.slice(cut..);
                self.bytes -= head.len() as u64;
                let mut joined = Vec::with_capacity(head.len() + data.len());
                joined.extend_from_slice(&head);
                joined.extend_from_slice(&data);
                (page_start, Bytes::from(joined))
            } else {
                let boundary = start.next_multiple_of(page);
                if boundary >= end {
                    continue;
                }
                (boundary, data.slice((boundary - start) as usize..))
            };
            self.bytes += bytes.len() as u64;
            self.pieces.insert(at, bytes);
        }
        self.bytes - before
    }
}

/// Bytes held by `pieces`.
pub fn held(pieces: &[(u64, Bytes)]) -> u64 {
    pieces.iter().map(|(_, d)| d.len() as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: u64, len: usize) -> (u64, Bytes) {
        let data: Vec<u8> = (0..len).map(|i| (start as usize + i) as u8).collect();
        (start, Bytes::from(data))
    }

    /// The kept pieces as (offset, length).
    fn layout(kept: &Kept) -> Vec<(u64, usize)> {
        kept.pieces.iter().map(|(o, d)| (*o, d.len())).collect()
    }

    /// `pieces` added to nothing kept, as (offset, length).
    fn joined(pieces: Vec<(u64, Bytes)>) -> Vec<(u64, usize)> {
        let mut kept = Kept::default();
        kept.add(pieces, 4096);
        layout(&kept)
    }

    #[test]
    fn a_small_file_is_kept_whole() {
        let pieces = to_store(&[range(0, 10_000)], &[2], 4096);
        assert_eq!(joined(pieces), vec![(0, 10_000)]);
    }

    #[test]
    fn a_range_starting_inside_a_page_is_kept_from_the_next_page_on() {
        let pieces = to_store(&[range(100, 5000), range(20_000, 50)], &[], 4096);
        let mut kept = Kept::default();
        kept.add(pieces, 4096);
        let want = vec![(4096, 5100 - 4096)];
        assert_eq!(layout(&kept), want, "the second range lies inside one page");
        assert_eq!(
            kept.pieces[&4096][0], 4096u64 as u8,
            "the bytes at the page's offset"
        );
    }

    #[test]
    fn a_write_out_that_starts_inside_a_page_completes_the_one_before() {
        let mut kept = Kept::default();
        assert_eq!(kept.add(to_store(&[range(0, 6000)], &[], 4096), 4096), 6000);
        assert_eq!(
            kept.add(to_store(&[range(6000, 3000)], &[], 4096), 4096),
            3000
        );
        assert_eq!(layout(&kept), vec![(0, 4096), (4096, 9000 - 4096)]);
        assert_eq!(kept.bytes(), 9000);
        let all: Vec<u8> = kept
            .take()
            .into_iter()
            .flat_map(|(_, d)| d.to_vec())
            .collect();
        let want: Vec<u8> = (0..9000usize).map(|i| i as u8).collect();
        assert_eq!(all, want);
        assert_eq!(kept.bytes(), 0);
    }

    #[test]
    fn small_write_outs_in_a_row_copy_only_the_page_they_complete() {
        // A log: 100 bytes written out at a time.
        let mut kept = Kept::default();
        for i in 0..200u64 {
            kept.add(to_store(&[range(i * 100, 100)], &[], 4096), 4096);
            let (last_at, last) = kept.pieces.last_key_value().unwrap();
            assert!(
                last.len() <= 4096 + 100,
                "the last piece: a page's start and the write"
            );
            assert_eq!(last_at + last.len() as u64, (i + 1) * 100);
        }
        assert_eq!(kept.bytes(), 20_000);
        assert_eq!(
            kept.drop_overlapping(5000, 5001),
            4096,
            "the page holding byte 5000"
        );
        assert_eq!(kept.bytes(), 20_000 - 4096);
    }

    #[test]
    fn a_large_write_out_keeps_only_its_ragged_pages() {
        // Written in 10 KiB records, as tar writes: every other boundary cuts a page.
        let big = WHOLE_MAX + 1000;
        let mut ragged = Vec::new();
        for start in (0..big).step_by(10_240) {
            note_ragged(&mut ragged, start, 10_240.min(big - start), 4096);
        }
        note_ragged(&mut ragged, 1 << 30, 8192, 4096);
        let ranges = [range(0, big as usize), range(1 << 30, 8192)];
        let pieces = to_store(&ranges, &ragged, 4096);
        let mut cut: Vec<u64> = (1..=big / 10_240)
            .map(|k| k * 10_240)
            .filter(|b| b % 4096 != 0)
            .map(|b| b - b % 4096)
            .collect();
        cut.push(big - big % 4096);
        let offsets: Vec<u64> = pieces.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, cut, "the aligned range has no ragged page");
        let (last_at, last) = pieces.last().unwrap();
        assert_eq!(
            last.len() as u64,
            big - last_at,
            "the last piece ends with the data"
        );
        assert!(pieces[..pieces.len() - 1]
            .iter()
            .all(|(_, d)| d.len() == 4096));
        assert_eq!(
            pieces[0].1[0], pieces[0].0 as u8,
            "the bytes at the page's offset"
        );
    }

    #[test]
    fn a_stream_cut_inside_a_page_by_a_write_out_keeps_that_page_whole() {
        // A background write-out took the stream up to 300,000 (inside a page); the next
        // one starts there.
        let page_cut = 300_000 - 300_000 % 4096;
        let mut kept = Kept::default();
        let mut ragged = Vec::new();
        note_ragged(&mut ragged, 0, 300_000, 4096);
        kept.add(to_store(&[range(0, 300_000)], &ragged, 4096), 4096);
        let mut ragged = Vec::new();
        note_ragged(&mut ragged, 300_000, 300_000, 4096);
        kept.add(to_store(&[range(300_000, 300_000)], &ragged, 4096), 4096);
        let end = 600_000 - 600_000 % 4096;
        let want = vec![(page_cut, 4096), (end, 600_000 - end as usize)];
        assert_eq!(layout(&kept), want);
        let want: Vec<u8> = (page_cut..page_cut + 4096).map(|i| i as u8).collect();
        assert_eq!(&kept.pieces[&page_cut][..], &want[..]);
    }

    #[test]
    fn ragged_pages_are_noted_once_and_up_to_a_bound() {
        let mut ragged = Vec::new();
        note_ragged(&mut ragged, 100, 50, 4096);
        assert_eq!(ragged, vec![0], "both ends in page 0");
        note_ragged(&mut ragged, 4096, 8192, 4096);
        assert_eq!(ragged, vec![0], "an aligned write leaves no ragged page");
        for i in 0..2 * RAGGED_MAX as u64 {
            note_ragged(&mut ragged, i * 8192 + 1, 10, 4096);
        }
        assert_eq!(ragged.len(), RAGGED_MAX);
    }

    #[test]
    fn the_page_size_is_a_power_of_two() {
        assert!(page_size().is_power_of_two());
    }
}
