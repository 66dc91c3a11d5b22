//! Open chunk files, so that every block does not reopen its file. A small LRU map from chunk
//! id to an open file; each entry carries the generation of the registry entry it was opened
//! for, so a file opened before a rename, delete or truncate is never handed out afterwards.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;

use parking_lot::Mutex;

pub struct FileCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

struct Inner {
    map: HashMap<u64, Slot>,
    tick: u64,
}

struct Slot {
    generation: u64,
    file: Arc<File>,
    last_use: u64,
}

impl FileCache {
    pub fn new(capacity: usize) -> FileCache {
        FileCache {
            inner: Mutex::new(Inner {
                map: HashMap::with_capacity(capacity),
                tick: 0,
            }),
            capacity: capacity.max(1),
        }
    }

    /// The open file of `chunk_id` if it was opened for this `generation`.
    pub fn get(&self, chunk_id: u64, generation: u64) -> Option<Arc<File>> {
        let mut inner = self.inner.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let slot = inner.map.get_mut(&chunk_id)?;
        if slot.generation != generation {
            return None;
        }
        slot.last_use = tick;
        Some(Arc::clone(&slot.file))
    }

    pub fn insert(&self, chunk_id: u64, generation: u64, file: Arc<File>) {
        let mut inner = self.inner.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if inner.map.len() >= self.capacity && !inner.map.contains_key(&chunk_id) {
            let oldest = inner
                .map
                .iter()
                .min_by_key(|(_, s)| s.last_use)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                inner.map.remove(&id);
            }
        }
        inner.map.insert(
            chunk_id,
            Slot {
                generation,
                file,
                last_use: tick,
            },
        );
    }

    /// Closes the cached file of `chunk_id` (after a rename or delete).
    pub fn remove(&self, chunk_id: u64) {
        self.inner.lock().map.remove(&chunk_id);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Arc<File> {
        Arc::new(tempfile::tempfile().unwrap())
    }

    #[test]
    fn least_recently_used_is_evicted() {
        let cache = FileCache::new(2);
        cache.insert(1, 1, file());
        cache.insert(2, 1, file());
        assert!(cache.get(1, 1).is_some());
        cache.insert(3, 1, file());
        assert_eq!(cache.len(), 2);
        assert!(cache.get(2, 1).is_none(), "2 was the least recently used");
        assert!(cache.get(1, 1).is_some());
        assert!(cache.get(3, 1).is_some());
    }

    #[test]
    fn other_generations_miss() {
        let cache = FileCache::new(4);
        cache.insert(1, 7, file());
        assert!(cache.get(1, 8).is_none());
        assert!(cache.get(1, 7).is_some());
        cache.remove(1);
        assert!(cache.is_empty());
    }
}
