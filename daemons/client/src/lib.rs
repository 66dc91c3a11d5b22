//! The MooseFS-style client: the FUSE mount (`moose-mount`) and the admin tool (`moose-tool`).

pub mod ahead;
pub mod attr;
pub mod change_counts;
pub mod cred;
pub mod csio;
pub mod dirents;
pub mod extents;
pub mod folder_tools;
pub mod folders;
pub mod fs;
pub mod inode_pool;
pub mod kept_leases;
pub mod kernel_pages;
pub mod known;
pub mod master;
pub mod meta;
pub mod mount;
pub mod mountinfo;
pub mod options;
pub mod quota_grant;
pub mod quota_tools;
pub mod read_here;
pub mod reader;
pub mod stale_pages;
pub mod tool;
pub mod writer;
