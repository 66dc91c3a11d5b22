//! One target per decoder.

mod config_files;
mod frames;
mod inventory;

pub use config_files::{CfgFile, ExportsFile, HddFile};
pub use frames::Frames;
pub use inventory::InventoryFile;

use crate::Target;

/// Every target of this crate (the changelog's lives with the master, whose reader it is).
pub fn all() -> Vec<Box<dyn Target>> {
    vec![
        Box::new(Frames),
        Box::new(CfgFile),
        Box::new(ExportsFile),
        Box::new(HddFile),
        Box::new(InventoryFile),
    ]
}
