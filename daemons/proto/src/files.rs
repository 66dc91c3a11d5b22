//! On-disk formats shared by the master and the metalogger (which stores what the master
//! sends verbatim, so its files can rebuild a master).

/// First 8 bytes of every changelog file; the cluster id (u64 BE) follows.
pub const CHANGELOG_SIGNATURE: &[u8; 8] = b"MOOSECL1";
pub const CHANGELOG_HEADER_LEN: usize = 16;

/// The header that starts a changelog file of cluster `cluster_id`.
pub fn changelog_header(cluster_id: u64) -> [u8; CHANGELOG_HEADER_LEN] {
    let mut h = [0u8; CHANGELOG_HEADER_LEN];
    h[..8].copy_from_slice(CHANGELOG_SIGNATURE);
    h[8..].copy_from_slice(&cluster_id.to_be_bytes());
    h
}
