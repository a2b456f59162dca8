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

use hashbrown::hash_table::Entry as Slot;
use hashbrown::HashTable;

/// A series id; its high bits are the metric id (see the catalog migration).
pub type SeriesId = i64;

const SHARDS: usize = 32;

/// Series ids by [`crate::model::Series::identity`].
pub type SeriesCache = IdCache<SeriesId>;

/// A key's hash, the key (an identity) and its id.
type Entry<V> = (u64, Box<[u8]>, V);

/// Keys and their ids, under one lock; aligned to its own cache lines, so that threads using
/// neighbouring shards do not take each other's lines away.
#[repr(align(128))]
struct Shard<V>(Mutex<HashTable<Entry<V>>>);

/// Keys are hashed once, for the shard and the shard's table both (the shard from bits the
/// table's own bucket and tag bits do not use); the hash is kept with the entry, so that the
/// table grows without hashing its keys again and a probe compares keys only on equal hashes.
/// The hasher is the standard library's keyed SipHash: keys come from remote-write senders and
/// live as long as the process.
pub struct IdCache<V> {
    shards: Vec<Shard<V>>,
    hasher: RandomState,
    shard_capacity: usize,
}

impl<V: Copy> IdCache<V> {
    pub fn new(max_entries: usize) -> Self {
        IdCache {
            shards: (0..SHARDS).map(|_| Shard(Mutex::new(HashTable::new()))).collect(),
            hasher: RandomState::new(),
            shard_capacity: max_entries.div_ceil(SHARDS).max(1),
        }
    }

    fn shard_of(hash: u64) -> usize {
        (hash >> 32) as usize % SHARDS
    }

    pub fn get(&self, identity: &[u8]) -> Option<V> {
        let hash = self.hasher.hash_one(identity);
        self.shards[Self::shard_of(hash)]
            .0
            .lock()
            .expect("id cache poisoned")
            .find(hash, |(h, key, _)| *h == hash && **key == *identity)
            .map(|&(_, _, id)| id)
    }

    /// Inserts every entry, taking each shard's lock once (a request's new series are
    /// thousands); returns how many entries had to be evicted to make room.
    pub fn insert_many(&self, entries: Vec<(Vec<u8>, V)>) -> usize {
        let mut by_shard: Vec<Vec<Entry<V>>> = (0..SHARDS).map(|_| Vec::new()).collect();
        for (identity, id) in entries {
            let hash = self.hasher.hash_one(identity.as_slice());
            by_shard[Self::shard_of(hash)].push((hash, identity.into_boxed_slice(), id));
        }
        let mut evicted = 0;
        for (shard, entries) in self.shards.iter().zip(by_shard) {
            if entries.is_empty() {
                continue;
            }
            let mut table = shard.0.lock().expect("id cache poisoned");
            for (hash, identity, id) in entries {
                let is_key = |(h, key, _): &Entry<V>| *h == hash && **key == *identity;
                if table.len() >= self.shard_capacity && table.find(hash, is_key).is_none() {
                    evicted += table.len();
                    table.clear();
                }
                match table.entry(hash, is_key, |&(h, _, _)| h) {
                    Slot::Occupied(mut entry) => entry.get_mut().2 = id,
                    Slot::Vacant(entry) => {
                        entry.insert((hash, identity, id));
                    }
                }
            }
        }
        evicted
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().expect("id cache poisoned").len())
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
        cache.insert_many(vec![(b"a".to_vec(), 1)]);
        assert_eq!(cache.get(b"a"), Some(1));
        assert_eq!(cache.get(b"b"), None);
        // Inserting again replaces.
        cache.insert_many(vec![(b"a".to_vec(), 2)]);
        assert_eq!(cache.get(b"a"), Some(2));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn keeps_every_entry_it_has_room_for() {
        let cache = SeriesCache::new(100_000);
        for i in 0..20_000i64 {
            assert_eq!(cache.insert_many(vec![(format!("series {i}").into_bytes(), i)]), 0);
        }
        assert_eq!(cache.len(), 20_000);
        assert!((0..20_000i64).all(|i| cache.get(format!("series {i}").as_bytes()) == Some(i)));
        assert_eq!(cache.get(b"series 20000"), None);
    }

    #[test]
    fn inserts_many_at_once_as_one_by_one() {
        let cache = SeriesCache::new(100_000);
        let entries: Vec<(Vec<u8>, i64)> = (0..5_000i64).map(|i| (format!("series {i}").into_bytes(), i)).collect();
        assert_eq!(cache.insert_many(entries), 0);
        // Again, with other ids: replaced, not added.
        let again: Vec<(Vec<u8>, i64)> = (0..5_000i64)
            .map(|i| (format!("series {i}").into_bytes(), -i))
            .collect();
        assert_eq!(cache.insert_many(again), 0);
        assert_eq!(cache.len(), 5_000);
        assert!((0..5_000i64).all(|i| cache.get(format!("series {i}").as_bytes()) == Some(-i)));
        // Past the bound, shards are emptied and what was evicted is counted.
        let small = SeriesCache::new(64);
        let many: Vec<(Vec<u8>, i64)> = (0..1_000i64).map(|i| (i.to_be_bytes().to_vec(), i)).collect();
        assert!(small.insert_many(many) > 0);
        assert!(small.len() <= 64, "cache grew to {}", small.len());
        assert_eq!(
            small.get(&999i64.to_be_bytes()),
            Some(999),
            "the last entry of its shard stays"
        );
    }

    #[test]
    fn stays_within_its_bound() {
        let cache = SeriesCache::new(64);
        for i in 0..10_000i64 {
            cache.insert_many(vec![(i.to_be_bytes().to_vec(), i)]);
        }
        assert!(cache.len() <= 64, "cache grew to {}", cache.len());
        // The newest entry always survives its own insertion.
        assert_eq!(cache.get(&9_999i64.to_be_bytes()), Some(9_999));
    }
}
