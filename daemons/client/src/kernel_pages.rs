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

/// What of the written-out `ranges` (start, bytes; sorted and apart) to hand to the kernel,
/// as (offset, bytes) pieces starting on a page boundary: from each range, its part from its
/// first page boundary on, when the ranges hold at most [`WHOLE_MAX`] bytes in all; else the
/// `ragged` pages (see [`note_ragged`]) a range holds from their start (writes covered the
/// others whole). A piece's bytes are copied: they outlive the buffers.
pub fn to_store(ranges: &[(u64, Bytes)], ragged: &[u64], page: u64) -> Vec<(u64, Bytes)> {
    let total: u64 = ranges.iter().map(|(_, d)| d.len() as u64).sum();
    let mut pieces = Vec::new();
    let mut keep = |start: u64, data: &Bytes, from: u64, to: u64| {
        let (a, b) = ((from - start) as usize, (to - start) as usize);
        pieces.push((from, Bytes::copy_from_slice(&data[a..b])));
    };
    if total <= WHOLE_MAX {
        for (start, data) in ranges {
            let end = start + data.len() as u64;
            let from = start.next_multiple_of(page);
            if from < end {
                keep(*start, data, from, end);
            }
        }
        return pieces;
    }
    let mut pages = ragged.to_vec();
    pages.sort_unstable();
    pages.dedup();
    let mut at = 0;
    for p in pages {
        let from = p * page;
        // The range holding the page's first byte, if any.
        while at < ranges.len() && ranges[at].0 + ranges[at].1.len() as u64 <= from {
            at += 1;
        }
        let Some((start, data)) = ranges.get(at) else {
            break;
        };
        if *start <= from {
            let end = start + data.len() as u64;
            keep(*start, data, from, end.min(from + page));
        }
    }
    pieces
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

    #[test]
    fn a_small_file_is_kept_whole() {
        let pieces = to_store(&[range(0, 10_000)], &[2], 4096);
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].0, 0);
        assert_eq!(pieces[0].1.len(), 10_000);
    }

    #[test]
    fn a_range_starting_inside_a_page_is_kept_from_the_next_page_on() {
        let pieces = to_store(&[range(100, 5000), range(20_000, 50)], &[], 4096);
        assert_eq!(
            pieces.len(),
            1,
            "the second range lies inside one page: {pieces:?}"
        );
        assert_eq!(pieces[0].0, 4096);
        assert_eq!(pieces[0].1.len(), 5100 - 4096);
        assert_eq!(
            pieces[0].1[0], 4096u64 as u8,
            "the bytes at the page's offset"
        );
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
