//! A folder's entries, each name held once.
//!
//! Entries sit in a vector in the order they were added; each carries an edge id that only
//! grows, and a listing page's cookie is the last id it returned. The next page starts after
//! that id (a binary search), so a paged listing neither skips nor repeats entries when others
//! are added (they get higher ids) or removed (they become tombstones) meanwhile. Tombstones
//! are squeezed out once they outnumber the live entries; ids do not change, so cookies held
//! by clients stay valid. Names live back to back in one byte arena, found by a hash index
//! of slot numbers.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::LazyLock;

use hashbrown::HashTable;
use moose_proto::Inode;
use serde::{Deserialize, Serialize};

/// Marks a removed entry (no node has inode 0).
const GONE: Inode = 0;

/// One process-wide, randomly seeded hasher: names come from clients, so their hashes must not
/// be predictable.
static HASHER: LazyLock<hashbrown::DefaultHashBuilder> = LazyLock::new(Default::default);

fn hash(name: &[u8]) -> u64 {
    HASHER.hash_one(name)
}

/// One entry: 24 bytes, its name in the arena.
#[derive(Debug, Clone, Copy)]
struct Slot {
    id: u64,
    inode: Inode,
    /// Start of the name in the arena: 40 bits (a terabyte of names), low part here.
    name_lo: u32,
    name_hi: u8,
    name_len: u16,
}

impl Slot {
    fn name_at(&self) -> usize {
        (usize::from(self.name_hi) << 32) | self.name_lo as usize
    }
}

#[derive(Debug, Clone, Default)]
pub struct Dir {
    /// The folder holding this one (`..`); the root is its own parent.
    pub parent: Inode,
    /// Entries by edge id, removed ones as tombstones until the next compaction.
    slots: Vec<Slot>,
    /// The names of the slots, back to back (those of tombstones until the compaction).
    names: Vec<u8>,
    /// Slot numbers of the live entries, by the hash of their name.
    index: HashTable<u32>,
    live: u32,
    next_edge: u64,
}

impl Dir {
    pub fn new(parent: Inode) -> Self {
        Dir {
            parent,
            next_edge: 1,
            ..Default::default()
        }
    }

    fn name_of(&self, slot: &Slot) -> &[u8] {
        let at = slot.name_at();
        &self.names[at..at + usize::from(slot.name_len)]
    }

    fn find(&self, name: &[u8]) -> Option<u32> {
        self.index
            .find(hash(name), |&s| {
                self.name_of(&self.slots[s as usize]) == name
            })
            .copied()
    }

    pub fn get(&self, name: &[u8]) -> Option<Inode> {
        self.find(name).map(|s| self.slots[s as usize].inode)
    }

    /// Adds `name` (replacing an entry of that name, which then lists as new).
    pub fn insert(&mut self, name: Vec<u8>, inode: Inode) {
        let id = self.next_edge;
        self.next_edge += 1;
        self.push(id, &name, inode);
    }

    /// Appends an entry with edge id `id` (higher than every id in the folder).
    fn push(&mut self, id: u64, name: &[u8], inode: Inode) {
        self.remove(name);
        if self.slots.len() >= u32::MAX as usize {
            self.compact();
        }
        let at = self.names.len();
        // Names are at most 255 bytes (MAX_NAME_LEN); longer ones never get this far.
        let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
        self.names.extend_from_slice(&name[..usize::from(len)]);
        let slot = self.slots.len() as u32;
        self.slots.push(Slot {
            id,
            inode,
            name_lo: at as u32,
            name_hi: (at >> 32) as u8,
            name_len: len,
        });
        let (slots, names) = (&self.slots, &self.names);
        self.index.insert_unique(hash(name), slot, |&s| {
            hash(slot_name(names, &slots[s as usize]))
        });
        self.live += 1;
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Inode> {
        let h = hash(name);
        let (slots, names) = (&self.slots, &self.names);
        let entry = self
            .index
            .find_entry(h, |&s| slot_name(names, &slots[s as usize]) == name)
            .ok()?;
        let (s, _) = entry.remove();
        let slot = &mut self.slots[s as usize];
        let inode = std::mem::replace(&mut slot.inode, GONE);
        self.live -= 1;
        if self.slots.len() - self.live as usize > (self.live as usize).max(16) {
            self.compact();
        }
        Some(inode)
    }

    /// Drops the tombstones and their names; ids stay as they were.
    fn compact(&mut self) {
        let old_names = std::mem::take(&mut self.names);
        let old_slots = std::mem::take(&mut self.slots);
        self.index.clear();
        self.live = 0;
        self.slots
            .reserve_exact(old_slots.iter().filter(|s| s.inode != GONE).count());
        for s in old_slots.iter().filter(|s| s.inode != GONE) {
            let name = slot_name(&old_names, s).to_vec();
            self.push(s.id, &name, s.inode);
        }
        self.index
            .shrink_to_fit(|&s| hash(slot_name(&self.names, &self.slots[s as usize])));
        self.names.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.live as usize
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The live entries as (edge id, name, inode), in edge id order, from the first whose id is
    /// above `after`.
    pub fn entries_after(&self, after: u64) -> impl Iterator<Item = (u64, &[u8], Inode)> + '_ {
        let start = self.slots.partition_point(|s| s.id <= after);
        self.slots[start..]
            .iter()
            .filter(|s| s.inode != GONE)
            .map(|s| (s.id, self.name_of(s), s.inode))
    }

    /// The live entries as (name, inode), in edge id order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Inode)> + '_ {
        self.entries_after(0).map(|(_, name, inode)| (name, inode))
    }
}

fn slot_name<'a>(names: &'a [u8], slot: &Slot) -> &'a [u8] {
    let at = slot.name_at();
    &names[at..at + usize::from(slot.name_len)]
}

/// An entry as dumps hold it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Edge {
    inode: Inode,
    id: u64,
}

/// A dump holds a folder as it was laid out before: every name twice, once keyed to its edge,
/// once in the order of edge ids. The same bytes are written, and read back into one copy.
#[derive(Deserialize)]
struct DirDump {
    parent: Inode,
    entries: HashMap<Box<[u8]>, Edge>,
    order: BTreeMap<u64, Box<[u8]>>,
    next_edge: u64,
}

impl Serialize for Dir {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Entries<'a>(&'a Dir);
        impl Serialize for Entries<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut map = ser.serialize_map(Some(self.0.len()))?;
                for (id, name, inode) in self.0.entries_after(0) {
                    map.serialize_entry(name, &Edge { inode, id })?;
                }
                map.end()
            }
        }
        struct Order<'a>(&'a Dir);
        impl Serialize for Order<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut map = ser.serialize_map(Some(self.0.len()))?;
                for (id, name, _) in self.0.entries_after(0) {
                    map.serialize_entry(&id, name)?;
                }
                map.end()
            }
        }
        let mut s = ser.serialize_struct("Dir", 4)?;
        s.serialize_field("parent", &self.parent)?;
        s.serialize_field("entries", &Entries(self))?;
        s.serialize_field("order", &Order(self))?;
        s.serialize_field("next_edge", &self.next_edge)?;
        s.end()
    }
}

impl<'de> Deserialize<'de> for Dir {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let dump = DirDump::deserialize(de)?;
        let mut dir = Dir::new(dump.parent);
        dir.slots.reserve_exact(dump.order.len());
        // Only entries both tables agree on are kept, in id order.
        for (id, name) in &dump.order {
            if let Some(e) = dump.entries.get(name).filter(|e| e.id == *id) {
                if e.inode != GONE {
                    dir.push(*id, name, e.inode);
                }
            }
        }
        let last = dump.order.keys().next_back().copied().unwrap_or(0);
        dir.next_edge = dump.next_edge.max(last.saturating_add(1));
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn name(i: u32) -> Vec<u8> {
        format!("file-{i:06}.dat").into_bytes()
    }

    /// Lists the folder in pages of `page` entries, calling `between` after each page.
    fn paged(dir: &mut Dir, page: usize, mut between: impl FnMut(&mut Dir, usize)) -> Vec<Vec<u8>> {
        let (mut seen, mut cookie, mut round) = (Vec::new(), 0, 0);
        loop {
            let got: Vec<(u64, Vec<u8>)> = dir
                .entries_after(cookie)
                .take(page)
                .map(|(id, n, _)| (id, n.to_vec()))
                .collect();
            let Some((last, _)) = got.last() else {
                return seen;
            };
            cookie = *last;
            seen.extend(got.into_iter().map(|(_, n)| n));
            between(dir, round);
            round += 1;
        }
    }

    #[test]
    fn lookups_inserts_replacements_and_removals() {
        let mut d = Dir::new(1);
        for i in 0..100 {
            d.insert(name(i), u64::from(i) + 10);
        }
        assert_eq!(d.len(), 100);
        assert_eq!(d.get(&name(42)), Some(52));
        assert_eq!(d.get(b"nope"), None);
        // A name given again points at the new inode and lists last.
        d.insert(name(3), 999);
        assert_eq!(d.get(&name(3)), Some(999));
        assert_eq!(d.len(), 100);
        assert_eq!(d.iter().last(), Some((&name(3)[..], 999)));
        assert_eq!(d.remove(&name(42)), Some(52));
        assert_eq!(d.remove(&name(42)), None);
        assert_eq!(d.get(&name(42)), None);
        assert_eq!(d.len(), 99);
        assert!(!d.is_empty());
    }

    #[test]
    fn tombstones_are_compacted_without_changing_ids() {
        let mut d = Dir::new(1);
        for i in 0..1000 {
            d.insert(name(i), u64::from(i) + 10);
        }
        let ids: BTreeMap<Vec<u8>, u64> = d
            .entries_after(0)
            .map(|(id, n, _)| (n.to_vec(), id))
            .collect();
        for i in (0..1000).filter(|i| i % 10 != 0) {
            d.remove(&name(i));
        }
        assert_eq!(d.len(), 100);
        assert!(
            d.slots.len() < 200,
            "{} slots for 100 entries",
            d.slots.len()
        );
        assert!(d.names.len() < 200 * 15, "{} name bytes", d.names.len());
        for (id, n, inode) in d.entries_after(0) {
            assert_eq!(ids.get(n), Some(&id), "edge ids survive a compaction");
            assert_eq!(d.get(n), Some(inode));
        }
        for i in (0..1000).step_by(10) {
            assert_eq!(d.get(&name(i)), Some(u64::from(i) + 10));
        }
    }

    #[test]
    fn a_paged_listing_neither_skips_nor_repeats_under_changes() {
        let mut d = Dir::new(1);
        for i in 0..500 {
            d.insert(name(i), u64::from(i) + 10);
        }
        // Between pages, entries not yet listed and already listed go, new ones come (enough
        // removals to force compactions).
        let mut next = 500;
        let seen = paged(&mut d, 7, |d, round| {
            for k in 0..5 {
                let victim = (round as u32 * 13 + k * 101) % 500;
                d.remove(&name(victim));
            }
            if round < 60 {
                d.insert(name(next), 1);
                next += 1;
            }
        });
        let unique: BTreeSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "no entry is listed twice");
        assert!(next > 550, "the listing ran while names were added");
        assert!(
            d.slots.len() < next as usize,
            "tombstones were compacted meanwhile"
        );
        assert!(
            seen.contains(&name(next - 1)),
            "an entry added meanwhile is listed"
        );
        // Every entry present from start to end was listed.
        for (n, _) in d.iter() {
            let n = n.to_vec();
            let i: u32 = std::str::from_utf8(&n[5..11]).unwrap().parse().unwrap();
            if i < 500 {
                assert!(
                    unique.contains(&n),
                    "{} was skipped",
                    String::from_utf8_lossy(&n)
                );
            }
        }
    }

    #[test]
    fn dumps_in_the_layout_of_before_and_reads_it_back() {
        #[derive(Serialize, Deserialize)]
        struct OldDir {
            parent: Inode,
            entries: HashMap<Vec<u8>, Edge>,
            order: BTreeMap<u64, Vec<u8>>,
            next_edge: u64,
        }
        let mut d = Dir::new(7);
        for i in 0..40 {
            d.insert(name(i), u64::from(i) + 100);
        }
        for i in 0..30 {
            d.remove(&name(i));
        }
        d.insert(name(35), 5);
        let bytes = postcard::to_allocvec(&d).unwrap();
        let old: OldDir = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(old.parent, 7);
        assert_eq!(old.entries.len(), 10);
        assert_eq!(old.order.len(), 10);
        assert_eq!(old.next_edge, 42);
        assert_eq!(old.order.values().last(), Some(&name(35)));
        assert_eq!(old.entries[&name(35)].inode, 5);
        let back: Dir = postcard::from_bytes(&postcard::to_allocvec(&old).unwrap()).unwrap();
        assert_eq!(
            back.entries_after(0)
                .map(|(i, n, c)| (i, n.to_vec(), c))
                .collect::<Vec<_>>(),
            d.entries_after(0)
                .map(|(i, n, c)| (i, n.to_vec(), c))
                .collect::<Vec<_>>()
        );
        let mut back = back;
        back.insert(b"new".to_vec(), 9);
        assert_eq!(back.entries_after(41).next().map(|(i, _, _)| i), Some(42));
    }
}
