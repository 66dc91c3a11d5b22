//! The order in which readers try a chunk's copies. Every mount, at every ask, gets the same
//! order for a chunk (rendezvous hashing of the chunk and server ids), so a chunk is read
//! from one server's page cache instead of warming every copy's; different chunks still
//! spread evenly over the servers, and a server that comes or goes moves only the chunks it
//! wins or won.

/// `servers` (chunkserver ids) of `chunk_id`, in reading order.
pub fn read_order(chunk_id: u64, servers: &mut [u32]) {
    servers.sort_by_key(|&cs| std::cmp::Reverse(mix(chunk_id ^ u64::from(cs).rotate_left(32))));
}

/// splitmix64's finalizer: every input bit moves about half the output bits.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ordered(chunk_id: u64, servers: &[u32]) -> Vec<u32> {
        let mut v = servers.to_vec();
        read_order(chunk_id, &mut v);
        v
    }

    #[test]
    fn a_chunk_is_read_from_the_same_server_whatever_order_its_copies_are_listed_in() {
        for chunk_id in 1..1000 {
            assert_eq!(ordered(chunk_id, &[1, 2, 3]), ordered(chunk_id, &[3, 1, 2]));
        }
    }

    #[test]
    fn chunks_spread_evenly_and_a_server_gone_moves_only_its_own() {
        let mut first = [0u32; 4];
        for chunk_id in 1..=30_000u64 {
            let all = ordered(chunk_id, &[1, 2, 3]);
            first[all[0] as usize] += 1;
            let without_3 = ordered(chunk_id, &[1, 2]);
            let rest: Vec<u32> = all.into_iter().filter(|&s| s != 3).collect();
            assert_eq!(without_3, rest, "chunk {chunk_id}");
        }
        for n in &first[1..] {
            assert!((9_500..=10_500).contains(n), "{first:?}");
        }
    }
}
