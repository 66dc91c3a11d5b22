//! Cluster inventories: loading, validation and rendering of every daemon's config.

use moose_inventory::LoadOptions;

use crate::Target;

pub struct InventoryFile;

impl Target for InventoryFile {
    fn name(&self) -> &'static str {
        "inventory"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        vec![
            include_bytes!("../../../inventory/examples/local.toml").to_vec(),
            include_bytes!("../../../inventory/examples/three-hosts.toml").to_vec(),
        ]
    }

    fn run(&self, input: &[u8]) {
        let text = String::from_utf8_lossy(input);
        let options = LoadOptions {
            base: Some("/srv/moosectl".into()),
            this_machine: vec![],
        };
        if let Ok(loaded) = moose_inventory::load_str(&text, "fuzz.toml", &options) {
            let _ = moose_inventory::render(&loaded.inventory);
        }
    }
}
