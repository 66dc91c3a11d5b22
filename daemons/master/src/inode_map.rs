//! A map keyed by inode that costs about the size of its values: inodes are handed out in
//! order (`next_inode`) and never reused, so they come in runs. The map cuts the inode space
//! into pages of 64; a page is a bit set of the inodes present and their values packed in
//! inode order. A hash map per node would spend twice its entries in buckets at the worst
//! moment of its growth; here the overhead is one small page header per 64 inodes, and a
//! page whose inodes are all gone is dropped, so deleted runs cost nothing.

use std::collections::HashMap;

use moose_proto::Inode;
use serde::{Deserialize, Serialize};

/// Inodes per page: the bits of a `u64`.
const PAGE: u64 = 64;

#[derive(Debug, Clone)]
struct Page<T> {
    /// Bit `i` is set when inode `page * 64 + i` is present.
    present: u64,
    /// The values of the inodes present, in inode order.
    items: Vec<T>,
}

impl<T> Page<T> {
    /// Where inode bit `bit` is (or would go) in `items`.
    fn slot(&self, bit: u64) -> usize {
        (self.present & ((1u64 << bit) - 1)).count_ones() as usize
    }

    fn has(&self, bit: u64) -> bool {
        self.present & (1u64 << bit) != 0
    }
}

#[derive(Debug, Clone)]
pub struct InodeMap<T> {
    pages: HashMap<u64, Page<T>>,
    len: usize,
}

impl<T> Default for InodeMap<T> {
    fn default() -> Self {
        InodeMap {
            pages: HashMap::new(),
            len: 0,
        }
    }
}

fn split(inode: Inode) -> (u64, u64) {
    (inode / PAGE, inode % PAGE)
}

impl<T> InodeMap<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, inode: &Inode) -> Option<&T> {
        let (page, bit) = split(*inode);
        let p = self.pages.get(&page)?;
        p.has(bit).then(|| &p.items[p.slot(bit)])
    }

    pub fn get_mut(&mut self, inode: &Inode) -> Option<&mut T> {
        let (page, bit) = split(*inode);
        let p = self.pages.get_mut(&page)?;
        if !p.has(bit) {
            return None;
        }
        let slot = p.slot(bit);
        Some(&mut p.items[slot])
    }

    pub fn contains_key(&self, inode: &Inode) -> bool {
        self.get(inode).is_some()
    }

    /// Sets the value of `inode`; returns the one it replaces.
    pub fn insert(&mut self, inode: Inode, value: T) -> Option<T> {
        let (page, bit) = split(inode);
        let p = self.pages.entry(page).or_insert_with(|| Page {
            present: 0,
            items: Vec::new(),
        });
        let slot = p.slot(bit);
        if p.has(bit) {
            return Some(std::mem::replace(&mut p.items[slot], value));
        }
        if p.items.len() == p.items.capacity() {
            // Grow by a quarter, not double: a page ends at most a few values too large.
            let len = p.items.len();
            p.items
                .reserve_exact((len / 4).max(4).min(PAGE as usize - len));
        }
        p.items.insert(slot, value);
        p.present |= 1u64 << bit;
        self.len += 1;
        None
    }

    pub fn remove(&mut self, inode: &Inode) -> Option<T> {
        let (page, bit) = split(*inode);
        let p = self.pages.get_mut(&page)?;
        if !p.has(bit) {
            return None;
        }
        let value = p.items.remove(p.slot(bit));
        p.present &= !(1u64 << bit);
        self.len -= 1;
        if p.present == 0 {
            self.pages.remove(&page);
        } else if p.items.capacity() - p.items.len() > (p.items.len() / 2).max(4) {
            p.items.shrink_to_fit();
        }
        Some(value)
    }

    /// Every (inode, value), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Inode, &T)> + '_ {
        self.pages.iter().flat_map(|(page, p)| {
            bits(p.present)
                .zip(p.items.iter())
                .map(move |(bit, v)| (page * PAGE + bit, v))
        })
    }

    #[cfg(test)]
    pub fn keys(&self) -> impl Iterator<Item = Inode> + '_ {
        self.pages
            .iter()
            .flat_map(|(page, p)| bits(p.present).map(move |bit| page * PAGE + bit))
    }

    pub fn values(&self) -> impl Iterator<Item = &T> + '_ {
        self.pages.values().flat_map(|p| p.items.iter())
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(Inode, &mut T) -> bool) {
        let gone: Vec<Inode> = self
            .pages
            .iter_mut()
            .flat_map(|(page, p)| {
                bits(p.present)
                    .zip(p.items.iter_mut())
                    .filter_map(|(bit, v)| {
                        let ino = *page * PAGE + bit;
                        (!keep(ino, v)).then_some(ino)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        for ino in gone {
            self.remove(&ino);
        }
    }
}

/// The set bits of `present`, lowest first.
fn bits(mut present: u64) -> impl Iterator<Item = u64> {
    std::iter::from_fn(move || {
        (present != 0).then(|| {
            let bit = u64::from(present.trailing_zeros());
            present &= present - 1;
            bit
        })
    })
}

impl<T> std::ops::Index<&Inode> for InodeMap<T> {
    type Output = T;

    fn index(&self, inode: &Inode) -> &T {
        self.get(inode)
            .unwrap_or_else(|| panic!("inode {inode} is not in the map"))
    }
}

impl<T> FromIterator<(Inode, T)> for InodeMap<T> {
    fn from_iter<I: IntoIterator<Item = (Inode, T)>>(iter: I) -> Self {
        let mut map = InodeMap::new();
        for (inode, value) in iter {
            map.insert(inode, value);
        }
        map
    }
}

/// In a dump: a map from inode to value, the same bytes a `HashMap<Inode, T>` gives.
impl<T: Serialize> Serialize for InodeMap<T> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = ser.serialize_map(Some(self.len))?;
        for (inode, value) in self.iter() {
            map.serialize_entry(&inode, value)?;
        }
        map.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for InodeMap<T> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = InodeMap<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of inodes")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<InodeMap<T>, A::Error> {
                let mut map = InodeMap::new();
                while let Some((inode, value)) = access.next_entry::<Inode, T>()? {
                    map.insert(inode, value);
                }
                Ok(map)
            }
        }
        de.deserialize_map(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn behaves_like_a_map_under_inserts_and_removes() {
        let mut map = InodeMap::new();
        let mut model = BTreeMap::new();
        // A deterministic mix over a few pages, with runs, gaps and huge inodes.
        let mut x: u64 = 12345;
        for step in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let inode = match step % 7 {
                0 => u64::MAX - (x >> 60),
                _ => (x >> 33) % 700,
            };
            if x & (1 << 20) != 0 {
                assert_eq!(map.insert(inode, step), model.insert(inode, step));
            } else {
                assert_eq!(map.remove(&inode), model.remove(&inode));
            }
            assert_eq!(map.len(), model.len());
        }
        for (k, v) in &model {
            assert_eq!(map.get(k), Some(v));
        }
        let mut all: Vec<_> = map.iter().map(|(k, v)| (k, *v)).collect();
        all.sort_unstable();
        assert_eq!(all, model.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
        let mut keys: Vec<_> = map.keys().collect();
        keys.sort_unstable();
        assert_eq!(keys, model.keys().copied().collect::<Vec<_>>());
        map.retain(|k, _| k % 2 == 0);
        model.retain(|k, _| k % 2 == 0);
        assert_eq!(map.len(), model.len());
        assert!(map.keys().all(|k| k % 2 == 0));
        for k in model.keys().copied().collect::<Vec<_>>() {
            map.remove(&k);
        }
        assert_eq!(map.len(), 0);
        assert!(map.pages.is_empty(), "pages of removed inodes are dropped");
    }

    #[test]
    fn dumps_as_a_hash_map_does() {
        let mut old = HashMap::new();
        old.insert(1u64, b"root".to_vec());
        old.insert(70u64, b"x".to_vec());
        let bytes = postcard::to_allocvec(&old).unwrap();
        let map: InodeMap<Vec<u8>> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(map.get(&70).map(Vec::as_slice), Some(&b"x"[..]));
        let again: HashMap<u64, Vec<u8>> =
            postcard::from_bytes(&postcard::to_allocvec(&map).unwrap()).unwrap();
        assert_eq!(again, old);
    }
}
