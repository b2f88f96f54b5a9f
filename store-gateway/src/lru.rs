//! A map bounded by the total size of its values, least recently used first out.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// Entries with a size each; inserting past the limit evicts the least recently used ones.
#[derive(Debug)]
pub(crate) struct Lru<K, V> {
    entries: HashMap<K, Entry<V>>,
    /// Use tick to key: the first entry is the least recently used.
    order: BTreeMap<u64, K>,
    tick: u64,
    bytes: usize,
    limit: usize,
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    size: usize,
    tick: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            bytes: 0,
            limit,
        }
    }

    /// The value of `key`, now the most recently used.
    pub(crate) fn get(&mut self, key: &K) -> Option<V> {
        let entry = self.entries.get_mut(key)?;
        self.order.remove(&entry.tick);
        self.tick += 1;
        entry.tick = self.tick;
        self.order.insert(self.tick, key.clone());
        Some(entry.value.clone())
    }

    pub(crate) fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Keeps `value` as the most recently used, and returns what was evicted to make room. A
    /// value larger than the whole limit is not kept (it is returned as evicted).
    pub(crate) fn insert(&mut self, key: K, value: V, size: usize) -> Vec<(K, V)> {
        self.remove(&key);
        if size > self.limit {
            return vec![(key, value)];
        }
        let mut evicted = Vec::new();
        while self.bytes + size > self.limit {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&oldest) {
                self.bytes -= entry.size;
                evicted.push((oldest, entry.value));
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.entries.insert(
            key,
            Entry {
                value,
                size,
                tick: self.tick,
            },
        );
        self.bytes += size;
        evicted
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let entry = self.entries.remove(key)?;
        self.order.remove(&entry.tick);
        self.bytes -= entry.size;
        Some(entry.value)
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
        self.bytes = 0;
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The sum of the kept values' sizes.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_first_until_the_new_entry_fits() {
        let mut lru = Lru::new(10);
        assert!(lru.insert("a", 1, 4).is_empty());
        assert!(lru.insert("b", 2, 4).is_empty());
        // Using `a` makes `b` the oldest.
        assert_eq!(lru.get(&"a"), Some(1));
        assert_eq!(lru.insert("c", 3, 4), vec![("b", 2)]);
        assert_eq!((lru.len(), lru.bytes()), (2, 8));
        assert_eq!(lru.get(&"b"), None);
        // Replacing a key frees its old size first.
        assert!(lru.insert("a", 5, 6).is_empty());
        assert_eq!((lru.len(), lru.bytes()), (2, 10));
        // A value over the whole limit is refused, and nothing is evicted for it.
        assert_eq!(lru.insert("d", 9, 11), vec![("d", 9)]);
        assert_eq!((lru.len(), lru.bytes()), (2, 10));
        assert_eq!(lru.remove(&"c"), Some(3));
        assert_eq!(lru.bytes(), 6);
    }
}
