//! [`KeyMap`]: a hash table of records by key, probed with a hash the store computes once per
//! call (std's `HashMap` would hash the key again in every map a call touches).

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::key::RecordKey;

/// The hasher of every map here: foldhash, keyed with a random seed per store.
pub(super) type Hasher = foldhash::quality::RandomState;

/// Where a key lives: its hash, and the shard that hash picks.
#[derive(Clone, Copy)]
pub(super) struct At {
    pub(super) shard: usize,
    pub(super) hash: u64,
}

impl At {
    pub(super) fn of(hasher: &Hasher, key: &RecordKey, shards: usize) -> Self {
        let hash = hasher.hash_one(key);
        // The shard comes from the middle bits: hashbrown places entries by the low bits and
        // tags them with the top seven, and neither may be the same for a whole shard.
        At {
            shard: (hash >> 32) as usize % shards,
            hash,
        }
    }
}

/// Records by key; every key's hash is [`At::hash`] under the map's hasher.
pub(super) struct KeyMap<V> {
    table: HashTable<(RecordKey, V)>,
    hasher: Hasher,
}

impl<V> KeyMap<V> {
    pub(super) fn new(hasher: Hasher) -> Self {
        KeyMap {
            table: HashTable::new(),
            hasher,
        }
    }

    pub(super) fn get(&self, at: At, key: &RecordKey) -> Option<&V> {
        self.table.find(at.hash, |(k, _)| k == key).map(|(_, v)| v)
    }

    pub(super) fn get_mut(&mut self, at: At, key: &RecordKey) -> Option<&mut V> {
        self.table
            .find_mut(at.hash, |(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Inserts or replaces `key`'s value.
    pub(super) fn insert(&mut self, at: At, key: RecordKey, value: V) {
        let hasher = &self.hasher;
        match self
            .table
            .entry(at.hash, |(k, _)| *k == key, |(k, _)| hasher.hash_one(k))
        {
            hashbrown::hash_table::Entry::Occupied(mut entry) => entry.get_mut().1 = value,
            hashbrown::hash_table::Entry::Vacant(entry) => {
                entry.insert((key, value));
            }
        }
    }

    pub(super) fn remove_entry(&mut self, at: At, key: &RecordKey) -> Option<(RecordKey, V)> {
        match self.table.find_entry(at.hash, |(k, _)| k == key) {
            Ok(entry) => Some(entry.remove().0),
            Err(_) => None,
        }
    }

    pub(super) fn remove(&mut self, at: At, key: &RecordKey) -> Option<V> {
        self.remove_entry(at, key).map(|(_, v)| v)
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.table.retain(|(_, v)| keep(v));
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    #[cfg(test)]
    pub(super) fn keys(&self) -> impl Iterator<Item = &RecordKey> {
        self.table.iter().map(|(k, _)| k)
    }
}
