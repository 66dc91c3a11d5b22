//! Pages handed to the kernel's cache at a file's last close.
//!
//! Writes go through the kernel's cache, but a page that no single write covered whole (the
//! last page of a file, or one a write boundary cuts) is not marked up to date: the next
//! reader of the file gets it from a chunkserver again (`tar -c` right after `tar -x` paid
//! one or two such reads per file). Bytes that `copy_file_range` buffered are not in the
//! kernel's cache at all. A write-out keeps a copy of what it wrote, page-aligned, and the
//! last close of the file hands it to the kernel (`FUSE_NOTIFY_STORE`), which marks a page
//! up to date when the bytes cover it whole or up to the file's end.
//!
//! Only the last close may do it: no other handle, no mapping (the kernel writes a mapping's
//! pages out when it is unmapped, before the close) and no request of the file are then under
//! way, so the copy is the file's newest content. Anything that may change the file after
//! the write-out (a write, an open for writing, a truncation, another session's change)
//! drops the copy first.

use bytes::Bytes;

/// Bytes of one write-out kept whole; larger write-outs keep only their ranges' last pages.
pub const WHOLE_MAX: u64 = 256 << 10;

/// The size of the kernel's pages.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size)
        .ok()
        .filter(|s| s.is_power_of_two())
        .unwrap_or(4096)
}

/// What of the written-out `ranges` (start, bytes) to hand to the kernel, as (offset, bytes)
/// pieces starting on a page boundary: from each range, its part from its first page boundary
/// on, when the ranges hold at most [`WHOLE_MAX`] bytes in all; else only each range's last
/// partial page (the end of a stream). A piece's bytes are copied: they outlive the buffers.
pub fn to_store(ranges: &[(u64, Bytes)], page: u64) -> Vec<(u64, Bytes)> {
    let total: u64 = ranges.iter().map(|(_, d)| d.len() as u64).sum();
    let whole = total <= WHOLE_MAX;
    let mut pieces = Vec::new();
    for (start, data) in ranges {
        let end = start + data.len() as u64;
        let from = if whole {
            start.next_multiple_of(page)
        } else {
            // Whole pages of a large write are up to date already.
            let last = end - end % page;
            if last == end || last < *start {
                continue;
            }
            last
        };
        if from >= end {
            continue;
        }
        let at = (from - start) as usize;
        pieces.push((from, Bytes::copy_from_slice(&data[at..])));
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
        let pieces = to_store(&[range(0, 10_000)], 4096);
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].0, 0);
        assert_eq!(pieces[0].1.len(), 10_000);
    }

    #[test]
    fn a_range_starting_inside_a_page_is_kept_from_the_next_page_on() {
        let pieces = to_store(&[range(100, 5000), range(20_000, 50)], 4096);
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
    fn a_large_write_out_keeps_only_the_last_partial_pages() {
        let big = (WHOLE_MAX + 1000) as usize;
        let pieces = to_store(&[range(0, big), range(1 << 30, 8192)], 4096);
        let tail = big as u64 - big as u64 % 4096;
        assert_eq!(
            pieces.len(),
            1,
            "the aligned range has no partial page: {pieces:?}"
        );
        assert_eq!(pieces[0].0, tail);
        assert_eq!(pieces[0].1.len() as u64, big as u64 - tail);
        assert_eq!(held(&pieces), big as u64 - tail);
    }

    #[test]
    fn the_page_size_is_a_power_of_two() {
        assert!(page_size().is_power_of_two());
    }
}
