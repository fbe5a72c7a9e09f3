//! The cleaner's offset map: for each key of a log's dirty section, the offset of its latest
//! record, in a fixed amount of memory (Kafka's `SkimpyOffsetMap`).
//!
//! A key is stored as a 128-bit hash, not as its bytes, so every entry costs the same
//! `SLOT_BYTES` whatever the key's length, and the map's size is fixed when it is made: no pass
//! allocates more than `LogConfig::cleaner_dedupe_buffer_bytes`. The table is open addressing
//! with linear probing and is considered full at `LOAD_FACTOR` of its slots, as Kafka's is; `put`
//! then refuses new keys (updates of keys already present always succeed), and the cleaner stops
//! mapping there and cleans only the part of the log it mapped.
//!
//! Two different keys with the same 128-bit hash would make the older key's latest record look
//! superseded and lose it. The hash is SipHash under two random keys drawn per map, so such a pair
//! cannot be prepared in advance, and by chance it has a probability around `n² / 2^129` for `n`
//! keys: about 10^-20 for a billion keys. Kafka accepts the same risk with MD5.

use std::hash::{BuildHasher, Hasher};

/// Bytes per slot: the two halves of the key's hash and the offset (plus one, so 0 is empty).
pub(crate) const SLOT_BYTES: usize = 24;
/// The map is full when this fraction of its slots is used (Kafka's `dedupe.buffer.load.factor`
/// default), so probe sequences stay short.
pub(crate) const LOAD_FACTOR: f64 = 0.9;
/// The fewest slots a map has, however small the section it is made for; fits in
/// `CLEANER_DEDUPE_BUFFER_BYTES_MIN`.
const SLOTS_MIN: usize = 32;

#[derive(Debug)]
pub(crate) struct OffsetMap {
    /// `SLOT_BYTES / 8` words per slot: hash high, hash low, offset + 1 (0 for an empty slot).
    slots: Vec<u64>,
    /// Number of slots, a power of two.
    capacity: usize,
    entries: usize,
    /// Entries allowed before the map counts as full.
    entries_max: usize,
    hashers: (std::collections::hash_map::RandomState, std::collections::hash_map::RandomState),
}

impl OffsetMap {
    /// A map of at most `max_bytes`, and no larger than `expected_keys` need. The slots are
    /// allocated zeroed, so pages the map never touches are never made resident.
    pub(crate) fn new(max_bytes: usize, expected_keys: usize) -> OffsetMap {
        let most = prev_power_of_two((max_bytes / SLOT_BYTES).max(SLOTS_MIN));
        let wanted = ((expected_keys as f64 / LOAD_FACTOR) as usize).max(SLOTS_MIN).next_power_of_two();
        let capacity = wanted.min(most);
        OffsetMap {
            slots: vec![0u64; capacity * 3],
            capacity,
            entries: 0,
            entries_max: ((capacity as f64 * LOAD_FACTOR) as usize).max(1),
            hashers: (Default::default(), Default::default()),
        }
    }

    /// Records `offset` as the latest offset of `key`. Returns false, changing nothing, when the
    /// key is new and the map is full.
    pub(crate) fn put(&mut self, key: &[u8], offset: i64) -> bool {
        let hash = self.hash(key);
        let slot = self.find(hash);
        let at = slot * 3;
        if self.slots[at + 2] == 0 {
            if self.entries >= self.entries_max {
                return false;
            }
            self.entries += 1;
            self.slots[at] = hash.0;
            self.slots[at + 1] = hash.1;
        }
        self.slots[at + 2] = offset as u64 + 1;
        true
    }

    /// The latest offset recorded for `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<i64> {
        let at = self.find(self.hash(key)) * 3;
        match self.slots[at + 2] {
            0 => None,
            stored => Some(stored as i64 - 1),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries
    }

    #[cfg(test)]
    fn is_full(&self) -> bool {
        self.entries >= self.entries_max
    }

    /// Bytes the table occupies (at most; untouched pages are not resident).
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.capacity * SLOT_BYTES
    }

    /// The slot holding `hash`, or the empty slot where it would go. The table is never
    /// completely full (`entries_max < capacity`), so the probe ends.
    fn find(&self, hash: (u64, u64)) -> usize {
        let mask = self.capacity - 1;
        let mut slot = hash.0 as usize & mask;
        loop {
            let at = slot * 3;
            if self.slots[at + 2] == 0 || (self.slots[at] == hash.0 && self.slots[at + 1] == hash.1) {
                return slot;
            }
            slot = (slot + 1) & mask;
        }
    }

    fn hash(&self, key: &[u8]) -> (u64, u64) {
        let mut high = self.hashers.0.build_hasher();
        high.write(key);
        let mut low = self.hashers.1.build_hasher();
        low.write(key);
        (high.finish(), low.finish())
    }
}

fn prev_power_of_two(value: usize) -> usize {
    if value.is_power_of_two() {
        value
    } else {
        value.next_power_of_two() / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_offset_per_key_and_refuses_new_keys_once_full() {
        let mut map = OffsetMap::new(SLOTS_MIN * SLOT_BYTES, 1_000_000);
        assert_eq!(map.allocated_bytes(), SLOTS_MIN * SLOT_BYTES);
        let full_at = (SLOTS_MIN as f64 * LOAD_FACTOR) as usize;
        for index in 0..full_at {
            assert!(map.put(format!("key-{index}").as_bytes(), index as i64), "key {index}");
        }
        assert!(map.is_full());
        assert!(!map.put(b"one-too-many", 1_000));
        assert_eq!(map.get(b"one-too-many"), None);
        // An update of a key already present is always taken.
        assert!(map.put(b"key-3", 5_000));
        assert_eq!(map.get(b"key-3"), Some(5_000));
        assert_eq!(map.get(b"key-4"), Some(4));
        assert_eq!(map.len(), full_at);
        // The empty key and offset 0 are ordinary values.
        let mut map = OffsetMap::new(crate::config::CLEANER_DEDUPE_BUFFER_BYTES_MIN, 1);
        assert_eq!(map.get(b""), None);
        assert!(map.put(b"", 0));
        assert_eq!(map.get(b""), Some(0));
    }

    #[test]
    fn is_sized_by_the_keys_expected_within_the_limit() {
        let check = |max_bytes: usize, expected_keys: usize, slots: usize| {
            let map = OffsetMap::new(max_bytes, expected_keys);
            assert_eq!(map.allocated_bytes(), slots * SLOT_BYTES, "max {max_bytes}, keys {expected_keys}");
        };
        check(1 << 30, 0, SLOTS_MIN);
        check(1 << 30, 1_000, 2_048);
        check(100 * SLOT_BYTES, 1_000_000, 64);
        check(1_000 * SLOT_BYTES, 1_000_000, 512);
        check(crate::config::CLEANER_DEDUPE_BUFFER_BYTES_MIN, 1_000_000, SLOTS_MIN);
    }
}
