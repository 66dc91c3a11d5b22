//! Wire protocol shared by every MooseFS-style daemon and tool.
//!
//! A connection carries frames (`kind:u32 | length:u32 | payload`, big-endian). Control messages
//! are typed Rust enums encoded with `postcard`; block data travels as a fixed binary header plus
//! raw bytes so that it is never re-encoded. The message types live in [`msg`] and know nothing
//! about the encoding, which lives in [`frame`].

pub mod auth;
pub mod files;
pub mod frame;
pub mod handshake;
pub mod idle_pool;
pub mod local_read;
pub mod msg;
pub mod outbox;
pub mod types;

pub use frame::{DataHeader, Frame, FrameReader, FrameWriter, Landed, ProtoError};
pub use handshake::{Hello, HelloReply, Role, PROTOCOL_VERSION};
pub use types::*;

/// Size of a data block: the unit of CRC checking and of data frames.
pub const BLOCK_SIZE: u32 = 64 * 1024;
/// Blocks per chunk.
pub const BLOCKS_PER_CHUNK: u32 = 1024;
/// Size of a chunk: a file is cut into chunks of this size.
pub const CHUNK_SIZE: u64 = BLOCK_SIZE as u64 * BLOCKS_PER_CHUNK as u64;

/// The size a folder shows: a base and so much per entry (a mount that answers a removal
/// before the master does shows the folder one entry smaller at once).
pub fn folder_size(entries: u64) -> u64 {
    4096 + FOLDER_ENTRY_SIZE * entries
}
/// What each entry adds to a folder's size (see [`folder_size`]).
pub const FOLDER_ENTRY_SIZE: u64 = 32;

/// How long a mount may act on the master's answer to `QuotaAllowance` (how far a file may
/// grow, or that there are no quotas) before asking again. `setquota` returns only after
/// this, so a new limit is in force on every mount when it does.
pub const QUOTA_GRANT_LEASE: std::time::Duration = std::time::Duration::from_secs(1);

/// Default ports, as MooseFS uses them.
pub mod ports {
    pub const MASTER_METALOGGER: u16 = 9419;
    pub const MASTER_CHUNKSERVER: u16 = 9420;
    pub const MASTER_CLIENT: u16 = 9421;
    pub const CHUNKSERVER_DATA: u16 = 9422;
}

/// Version string every daemon reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What every program prints after its name for `--version`: `VERSION (protocol N)`, so
/// that `moosectl doctor` can tell a build that cannot talk to the others.
pub fn version_line() -> &'static str {
    static LINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LINE.get_or_init(|| format!("{VERSION} (protocol {PROTOCOL_VERSION})"))
}
