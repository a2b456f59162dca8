//! In-memory maps from catalog keys to their ids: a series' label set to its series id, a
//! label pair to its label id, a (metric, label key) pair to its metric id and position.
//!
//! Almost every series in a remote-write request was seen before, so the series cache is
//! what keeps the write path free of per-series database round trips; the label and
//! position caches keep the creation of new series (a rollout) down to one statement that
//! inserts them. None of these ids ever changes once created. A cache is sharded to keep
//! lock hold times short under many concurrent requests, and bounded: a shard that fills up
//! is emptied, and its entries are looked up again (cheaply, they already exist).

use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

/// A series id; its high bits are the metric id (see the catalog migration).
pub type SeriesId = i64;

const SHARDS: usize = 32;

/// Series ids by [`crate::model::Series::identity`].
pub type SeriesCache = IdCache<SeriesId>;

/// Keys (identities) and their ids, under one lock.
type Shard<V> = Mutex<HashTable<(Box<[u8]>, V)>>;

/// Keys are hashed once, for the shard and the shard's table both (the shard from bits the
/// table's own bucket and tag bits do not use). The hasher is the standard library's keyed
/// SipHash: keys come from remote-write senders and live as long as the process.
pub struct IdCache<V> {
    shards: Vec<Shard<V>>,
    hasher: RandomState,
    shard_capacity: usize,
}

impl<V: Copy> IdCache<V> {
    pub fn new(max_entries: usize) -> Self {
        IdCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashTable::new())).collect(),
            hasher: RandomState::new(),
            shard_capacity: max_entries.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, hash: u64) -> &Shard<V> {
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    pub fn get(&self, identity: &[u8]) -> Option<V> {
        let hash = self.hasher.hash_one(identity);
        self.shard(hash)
            .lock()
            .expect("id cache poisoned")
            .find(hash, |(key, _)| **key == *identity)
            .map(|&(_, id)| id)
    }

    /// Inserts, returning how many entries had to be evicted to make room.
    pub fn insert(&self, identity: Vec<u8>, id: V) -> usize {
        let hash = self.hasher.hash_one(identity.as_slice());
        let mut shard = self.shard(hash).lock().expect("id cache poisoned");
        let mut evicted = 0;
        let is_key = |(key, _): &(Box<[u8]>, V)| **key == *identity;
        if shard.len() >= self.shard_capacity && shard.find(hash, is_key).is_none() {
            evicted = shard.len();
            shard.clear();
        }
        match shard.entry(hash, is_key, |(key, _)| self.hasher.hash_one(&**key)) {
            Entry::Occupied(mut entry) => entry.get_mut().1 = id,
            Entry::Vacant(entry) => {
                entry.insert((identity.into_boxed_slice(), id));
            }
        }
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
        // Inserting again replaces.
        cache.insert(b"a".to_vec(), 2);
        assert_eq!(cache.get(b"a"), Some(2));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn keeps_every_entry_it_has_room_for() {
        let cache = SeriesCache::new(100_000);
        for i in 0..20_000i64 {
            assert_eq!(cache.insert(format!("series {i}").into_bytes(), i), 0);
        }
        assert_eq!(cache.len(), 20_000);
        assert!((0..20_000i64).all(|i| cache.get(format!("series {i}").as_bytes()) == Some(i)));
        assert_eq!(cache.get(b"series 20000"), None);
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
