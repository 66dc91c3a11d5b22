//! The metaloggers connected now, and how far each has the metadata.

use moose_proto::msg::MetaloggerInfo;

/// Connected metaloggers, for status queries.
#[derive(Default)]
pub struct Metaloggers {
    next: u64,
    list: Vec<(u64, MetaloggerInfo)>,
}

impl Metaloggers {
    pub fn add(&mut self, addr: String) -> u64 {
        self.next += 1;
        self.list
            .push((self.next, MetaloggerInfo { addr, version: 0 }));
        self.next
    }

    pub fn synced(&mut self, id: u64, version: u64) {
        if let Some((_, m)) = self.list.iter_mut().find(|(i, _)| *i == id) {
            m.version = version;
        }
    }

    pub fn remove(&mut self, id: u64) {
        self.list.retain(|(i, _)| *i != id);
    }

    pub fn list(&self) -> Vec<MetaloggerInfo> {
        self.list.iter().map(|(_, m)| m.clone()).collect()
    }
}
