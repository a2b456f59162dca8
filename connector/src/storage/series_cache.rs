//! In-memory maps from catalog keys to their ids: a series' label set to its series id, a
//! label pair to its label id, a (metric, label key) pair to its metric id and position.
//!
//! Almost every series in a remote-write request was seen before, so the series cache is
//! what keeps the write path free of per-series database round trips; the label and
//! position caches keep the creation of new series (a rollout) down to one statement that
//! inserts them. None of these ids ever changes once created. A cache is sharded to keep
//! lock hold times short under many concurrent requests, and bounded: a shard that fills up
//! is emptied, and its entries are looked up again (cheaply, they already exist).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

/// A series id; its high bits are the metric id (see the catalog migration).
pub type SeriesId = i64;

const SHARDS: usize = 32;

/// Series ids by [`crate::model::Series::identity`].
pub type SeriesCache = IdCache<SeriesId>;

pub struct IdCache<V> {
    shards: Vec<Mutex<HashMap<Box<[u8]>, V>>>,
    hasher: RandomState,
    shard_capacity: usize,
}

impl<V: Copy> IdCache<V> {
    pub fn new(max_entries: usize) -> Self {
        IdCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            shard_capacity: max_entries.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, identity: &[u8]) -> &Mutex<HashMap<Box<[u8]>, V>> {
        &self.shards[self.hasher.hash_one(identity) as usize % SHARDS]
    }

    pub fn get(&self, identity: &[u8]) -> Option<V> {
        self.shard(identity)
            .lock()
            .expect("id cache poisoned")
            .get(identity)
            .cloned()
    }

    /// Inserts, returning how many entries had to be evicted to make room.
    pub fn insert(&self, identity: Vec<u8>, id: V) -> usize {
        let mut shard = self.shard(&identity).lock().expect("id cache poisoned");
        let mut evicted = 0;
        if shard.len() >= self.shard_capacity && !shard.contains_key(identity.as_slice()) {
            evicted = shard.len();
            shard.clear();
        }
        shard.insert(identity.into_boxed_slice(), id);
        evicted
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("id cache poisoned").len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_what_was_inserted() {
        let cache = SeriesCache::new(100);
        cache.insert(b"a".to_vec(), 1);
        assert_eq!(cache.get(b"a"), Some(1));
        assert_eq!(cache.get(b"b"), None);
    }

    #[test]
    fn stays_within_its_bound() {
        let cache = SeriesCache::new(64);
        for i in 0..10_000i64 {
            cache.insert(i.to_be_bytes().to_vec(), i);
        }
        assert!(cache.len() <= 64, "cache grew to {}", cache.len());
        // The newest entry always survives its own insertion.
        assert_eq!(cache.get(&9_999i64.to_be_bytes()), Some(9_999));
    }
}
