//! The cleaner's bounded key → latest-offset map.
//!
//! Keys are never stored: each is reduced to a 128-bit hash (xxh3-128), and a slot holds that
//! hash and the offset of the key's latest record seen so far (24 bytes). The table is open
//! addressing with linear probing in one allocation fixed at creation, so the memory a cleaning
//! pass uses is its budget whatever the keys look like. Two different keys colliding on 128 bits
//! is as unlikely as Kafka's MD5-based `SkimpyOffsetMap` colliding; a collision would make the
//! older key's records look superseded.
//!
//! The map is filled only up to [`KeyMap::MAX_LOAD`] of its slots, as Kafka's dedupe buffer is
//! (`log.cleaner.io.buffer.load.factor`), so probes stay short; [`KeyMap::is_full`] tells the
//! cleaner to stop adding segments, and the rest of the dirty log is cleaned by the next pass.
//!
//! A free slot is all zero bits, so the table is allocated zeroed: the kernel maps its pages
//! only as keys land in them, and creating a shard's cleaner touches none of its budget.
//! Forgetting every key rewrites the whole table, which at the default 32 MiB takes several
//! milliseconds; [`KeyMap::clear_from`] does it in steps, so the cleaner can yield its shard
//! between them.
//!
//! Owned by one cleaning pass on one shard; never crosses cores.

use twox_hash::XxHash3_128;

use crate::types::Offset;

/// Bytes per slot: a 128-bit key hash and an i64 offset.
pub const SLOT_BYTES: usize = 24;

/// One slot: the key hash split in two words, and the offset plus one (0 marks a free slot, so
/// a zeroed allocation is an empty table).
type Slot = [u64; 3];

const EMPTY: u64 = 0;
const HI: usize = 0;
const LO: usize = 1;
const OFFSET: usize = 2;

/// A fixed-capacity map from key hash to the latest offset seen for that key.
pub struct KeyMap {
    slots: Vec<Slot>,
    used: usize,
    limit: usize,
    /// The largest offset put in so far (-1 when empty).
    latest: i64,
}

impl KeyMap {
    /// Share of the slots filled before the map reports full (Kafka's default load factor).
    pub const MAX_LOAD: f64 = 0.9;

    /// The slots a map with `budget_bytes` gets (at least 16).
    pub fn slots_for_budget(budget_bytes: usize) -> usize {
        (budget_bytes / SLOT_BYTES).max(16)
    }

    /// A map using at most `budget_bytes` of memory (at least 16 slots).
    pub fn with_budget(budget_bytes: usize) -> KeyMap {
        let n = Self::slots_for_budget(budget_bytes);
        KeyMap {
            // All zero: allocated zeroed, mapped by the kernel page by page as slots are used.
            slots: vec![[0u64; 3]; n],
            used: 0,
            limit: ((n as f64) * Self::MAX_LOAD) as usize,
            latest: -1,
        }
    }

    /// Number of slots (capacity).
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Number of distinct keys held.
    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Whether no new key may be added without passing the load limit.
    pub fn is_full(&self) -> bool {
        self.used >= self.limit
    }

    /// Room left for new keys before the load limit.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.used)
    }

    /// The largest offset put in, if any.
    pub fn latest_offset(&self) -> Option<Offset> {
        (self.latest >= 0).then_some(Offset(self.latest))
    }

    /// Forgets every key, keeping the allocation.
    pub fn clear(&mut self) {
        let mut at = Some(0);
        while let Some(from) = at {
            at = self.clear_from(from, usize::MAX);
        }
    }

    /// One step of forgetting every key: frees up to `step` slots from `from` and returns where
    /// the next step starts, or `None` once the map is empty. Until then the map must not be
    /// used. A map that holds nothing is left as it is.
    pub fn clear_from(&mut self, from: usize, step: usize) -> Option<usize> {
        if self.used == 0 {
            return None;
        }
        let end = from.saturating_add(step).min(self.slots.len());
        self.slots[from..end].fill([0; 3]);
        if end < self.slots.len() {
            return Some(end);
        }
        self.used = 0;
        self.latest = -1;
        None
    }

    /// Records `offset` as the latest for `key` (a later put for the same key wins). Returns
    /// false, changing nothing, when the key is new and the map is full.
    pub fn put(&mut self, key: &[u8], offset: Offset) -> bool {
        let (hi, lo) = hash(key);
        let i = self.probe(hi, lo);
        let slot = &mut self.slots[i];
        let stored = offset.0 as u64 + 1;
        if slot[OFFSET] == EMPTY {
            if self.used >= self.limit {
                return false;
            }
            self.used += 1;
            *slot = [hi, lo, stored];
        } else {
            slot[OFFSET] = slot[OFFSET].max(stored);
        }
        self.latest = self.latest.max(offset.0);
        true
    }

    /// The latest offset recorded for `key`.
    pub fn get(&self, key: &[u8]) -> Option<Offset> {
        let (hi, lo) = hash(key);
        let s = self.slots[self.probe(hi, lo)];
        (s[OFFSET] != EMPTY).then_some(Offset(s[OFFSET] as i64 - 1))
    }

    /// The slot holding `(hi, lo)` or the free slot where it would go. The load limit keeps at
    /// least one slot free, so the probe ends.
    fn probe(&self, hi: u64, lo: u64) -> usize {
        let n = self.slots.len();
        let mut i = (lo as usize) % n;
        loop {
            let s = &self.slots[i];
            if s[OFFSET] == EMPTY || (s[HI] == hi && s[LO] == lo) {
                return i;
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
    }
}

fn hash(key: &[u8]) -> (u64, u64) {
    let h = XxHash3_128::oneshot(key);
    ((h >> 64) as u64, h as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_offset_per_key_and_bounded_capacity() {
        let mut m = KeyMap::with_budget(100 * SLOT_BYTES);
        assert_eq!(m.slots(), 100);
        assert!(m.put(b"a", Offset(1)));
        assert!(m.put(b"b", Offset(2)));
        assert!(m.put(b"a", Offset(7)));
        assert_eq!(m.get(b"a"), Some(Offset(7)));
        assert_eq!(m.get(b"b"), Some(Offset(2)));
        assert_eq!(m.get(b"c"), None);
        assert_eq!(m.len(), 2);
        assert_eq!(m.latest_offset(), Some(Offset(7)));
        let mut added = 2;
        for i in 0..1000u32 {
            if m.put(&i.to_be_bytes(), Offset(100 + i64::from(i))) {
                added += 1;
            }
        }
        assert_eq!(added, 90, "stops at the load limit");
        assert!(m.is_full());
        // A known key still updates when full.
        assert!(m.put(b"a", Offset(5000)));
        assert_eq!(m.get(b"a"), Some(Offset(5000)));
        m.clear();
        assert!(m.is_empty());
        assert_eq!(m.get(b"a"), None);
        assert_eq!(m.latest_offset(), None);
    }

    #[test]
    fn clearing_in_steps_forgets_every_key_and_offset_zero_is_a_key() {
        let mut m = KeyMap::with_budget(1000 * SLOT_BYTES);
        assert!(m.put(b"zero", Offset(0)));
        assert_eq!(m.get(b"zero"), Some(Offset(0)));
        for i in 0..800u32 {
            assert!(m.put(&i.to_be_bytes(), Offset(1 + i64::from(i))));
        }
        let mut steps = 0;
        let mut at = Some(0);
        while let Some(from) = at {
            at = m.clear_from(from, 64);
            steps += 1;
        }
        assert_eq!(steps, 1000usize.div_ceil(64));
        assert!(m.is_empty());
        assert!((0..800u32).all(|i| m.get(&i.to_be_bytes()).is_none()));
        assert_eq!(m.get(b"zero"), None);
        // An empty map takes no step at all.
        assert_eq!(m.clear_from(0, 64), None);
        assert!(m.put(b"again", Offset(9)));
        assert_eq!(m.get(b"again"), Some(Offset(9)));
        assert_eq!(m.len(), 1);
    }
}
