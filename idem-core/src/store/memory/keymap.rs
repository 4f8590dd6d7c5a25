//! [`KeyMap`]: a hash table of records by key, probed with the hash a [`RecordKey`] computed
//! when it was built (std's `HashMap` would hash the key again in every map a call touches).

use hashbrown::HashTable;

use crate::key::RecordKey;

/// Where a key lives: its hash, and the shard that hash picks.
#[derive(Clone, Copy)]
pub(super) struct At {
    pub(super) shard: usize,
    pub(super) hash: u64,
}

impl At {
    pub(super) fn of(key: &RecordKey, shards: usize) -> Self {
        let hash = key.hash_u64();
        // The shard comes from the middle bits: hashbrown places entries by the low bits and
        // tags them with the top seven, and neither may be the same for a whole shard.
        At {
            shard: (hash >> 32) as usize % shards,
            hash,
        }
    }
}

/// An entry of a [`KeyMap`]: it carries its own key, so a record's key is kept once, in the
/// record, however many maps hold the record.
pub(super) trait Keyed {
    fn key(&self) -> &RecordKey;
}

/// Entries by key; every key's hash is its [`At::hash`].
pub(super) struct KeyMap<E> {
    table: HashTable<E>,
}

impl<E: Keyed> KeyMap<E> {
    pub(super) fn new() -> Self {
        KeyMap {
            table: HashTable::new(),
        }
    }

    pub(super) fn get(&self, at: At, key: &RecordKey) -> Option<&E> {
        self.table.find(at.hash, |entry| entry.key() == key)
    }

    pub(super) fn get_mut(&mut self, at: At, key: &RecordKey) -> Option<&mut E> {
        self.table.find_mut(at.hash, |entry| entry.key() == key)
    }

    /// Inserts `entry`, or replaces the entry of its key.
    pub(super) fn insert(&mut self, at: At, entry: E) {
        match self
            .table
            .entry(at.hash, |e| e.key() == entry.key(), |e| e.key().hash_u64())
        {
            hashbrown::hash_table::Entry::Occupied(mut occupied) => *occupied.get_mut() = entry,
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert(entry);
            }
        }
    }

    pub(super) fn remove(&mut self, at: At, key: &RecordKey) -> Option<E> {
        match self.table.find_entry(at.hash, |entry| entry.key() == key) {
            Ok(entry) => Some(entry.remove().0),
            Err(_) => None,
        }
    }

    pub(super) fn retain(&mut self, keep: impl FnMut(&mut E) -> bool) {
        self.table.retain(keep);
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    #[cfg(test)]
    pub(super) fn keys(&self) -> impl Iterator<Item = &RecordKey> {
        self.table.iter().map(Keyed::key)
    }
}
