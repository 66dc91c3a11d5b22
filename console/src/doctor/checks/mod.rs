//! The checks, one module each; every one takes the run's context and returns its findings.

pub mod clock;
pub mod data_path;
pub mod disks;
pub mod exports;
pub mod fuse;
pub mod mount_point;
pub mod names;
pub mod ports;
pub mod space;
pub mod version;

use std::sync::Arc;

use crate::doctor::finding::Finding;
use crate::doctor::runner::Ctx;
use crate::engine::host::BoxFuture;

/// A check: what it finds on the context's hosts.
pub type Check = fn(Arc<Ctx>) -> BoxFuture<'static, Vec<Finding>>;

/// Every check, in the order the docs list them.
pub const ALL: &[Check] = &[
    names::check,
    ports::check,
    exports::check,
    data_path::check,
    disks::check,
    space::check,
    clock::check,
    version::check,
    fuse::check,
    mount_point::check,
];
