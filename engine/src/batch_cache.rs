//! The per-shard cache of recently appended batches, which serves tailing consumers from memory
//! (O_DIRECT bypasses the page cache, so the broker keeps its own).
//!
//! Batches are inserted at append time as zero-copy `Bytes` slices of the appended data and
//! evicted first-in first-out when the shard's byte budget is exceeded. Partitions register
//! once and key their batches by base offset; truncation and log-start moves invalidate the
//! affected entries. One cache per shard, shared by `Rc` by its partitions; never crosses cores.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

use bytes::Bytes;

use crate::types::{FilePos, Offset};

/// One cached batch and where it lives on disk.
#[derive(Debug, Clone)]
pub struct CachedBatch {
    /// The rewritten 61-byte batch header.
    pub header: Bytes,
    /// The records section, as received.
    pub body: Bytes,
    pub base_offset: Offset,
    pub next_offset: Offset,
    pub segment_base: Offset,
    pub pos: FilePos,
}

impl CachedBatch {
    /// Bytes of the whole batch.
    pub fn len(&self) -> usize {
        self.header.len() + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The batch cache of one shard. Owned by that shard; never crosses cores.
pub struct BatchCache {
    max_bytes: usize,
    st: RefCell<CacheState>,
}

#[derive(Default)]
struct CacheState {
    bytes: usize,
    next_id: u64,
    parts: HashMap<u64, BTreeMap<Offset, CachedBatch>>,
    fifo: VecDeque<(u64, Offset)>,
    hits: u64,
    misses: u64,
}

impl BatchCache {
    pub fn new(max_bytes: usize) -> Rc<BatchCache> {
        Rc::new(BatchCache {
            max_bytes,
            st: RefCell::new(CacheState::default()),
        })
    }

    /// A fresh key space for one partition.
    pub fn register(&self) -> u64 {
        let mut st = self.st.borrow_mut();
        st.next_id += 1;
        st.next_id
    }

    /// Caches one batch of partition `part`, evicting the oldest entries beyond the budget.
    pub fn insert(&self, part: u64, batch: CachedBatch) {
        if batch.len() > self.max_bytes {
            return;
        }
        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        let key = batch.base_offset;
        st.bytes += batch.len();
        if let Some(old) = st.parts.entry(part).or_default().insert(key, batch) {
            st.bytes -= old.len();
        }
        st.fifo.push_back((part, key));
        while st.bytes > self.max_bytes {
            let Some((p, k)) = st.fifo.pop_front() else {
                break;
            };
            if let Some(map) = st.parts.get_mut(&p) {
                if let Some(old) = map.remove(&k) {
                    st.bytes -= old.len();
                }
            }
        }
    }

    /// The cached run of consecutive batches starting with the one containing `offset`, whole
    /// batches up to `max_bytes` but at least one, all ending at or before `end`. `None` if the
    /// batch containing `offset` is not cached.
    pub fn read(
        &self,
        part: u64,
        offset: Offset,
        max_bytes: usize,
        end: Offset,
    ) -> Option<Vec<CachedBatch>> {
        let mut st = self.st.borrow_mut();
        let found = st.parts.get(&part).and_then(|map| {
            let (_, first) = map.range(..=offset).next_back()?;
            if first.next_offset <= offset || first.next_offset > end {
                return None;
            }
            let mut out = vec![first.clone()];
            let mut total = first.len();
            let mut next = first.next_offset;
            for (_, b) in map.range(next..) {
                if b.base_offset != next || b.next_offset > end || total + b.len() > max_bytes {
                    break;
                }
                total += b.len();
                next = b.next_offset;
                out.push(b.clone());
            }
            Some(out)
        });
        if found.is_some() {
            st.hits += 1;
        } else {
            st.misses += 1;
        }
        found
    }

    /// Drops cached batches of `part` that end after `offset` (log truncated to `offset`).
    pub fn invalidate_from(&self, part: u64, offset: Offset) {
        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        if let Some(map) = st.parts.get_mut(&part) {
            let doomed: Vec<Offset> = map
                .iter()
                .filter(|(_, b)| b.next_offset > offset)
                .map(|(k, _)| *k)
                .collect();
            for k in doomed {
                if let Some(b) = map.remove(&k) {
                    st.bytes -= b.len();
                }
            }
        }
    }

    /// Drops cached batches of `part` wholly below `offset` (log start moved).
    pub fn invalidate_below(&self, part: u64, offset: Offset) {
        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        if let Some(map) = st.parts.get_mut(&part) {
            let keep = map.split_off(&offset);
            for b in map.values() {
                if b.next_offset <= offset {
                    st.bytes -= b.len();
                }
            }
            let partial: Vec<CachedBatch> = map
                .values()
                .filter(|b| b.next_offset > offset)
                .cloned()
                .collect();
            *map = keep;
            for b in partial {
                map.insert(b.base_offset, b);
            }
        }
    }

    /// Drops cached batches of `part` that overlap `[from, to)` (the cleaner rewrote those
    /// segments: positions and contents changed).
    pub fn invalidate_range(&self, part: u64, from: Offset, to: Offset) {
        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        if let Some(map) = st.parts.get_mut(&part) {
            let doomed: Vec<Offset> = map
                .iter()
                .filter(|(_, b)| b.next_offset > from && b.base_offset < to)
                .map(|(k, _)| *k)
                .collect();
            for k in doomed {
                if let Some(b) = map.remove(&k) {
                    st.bytes -= b.len();
                }
            }
        }
    }

    /// Drops everything of `part` (partition closed).
    pub fn forget(&self, part: u64) {
        let mut st = self.st.borrow_mut();
        if let Some(map) = st.parts.remove(&part) {
            st.bytes -= map.values().map(|b| b.len()).sum::<usize>();
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.st.borrow().bytes
    }

    /// (hits, misses) of `read` so far.
    pub fn stats(&self) -> (u64, u64) {
        let st = self.st.borrow();
        (st.hits, st.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: i64, n: i64, len: usize) -> CachedBatch {
        CachedBatch {
            header: Bytes::from(vec![0u8; 10]),
            body: Bytes::from(vec![0u8; len - 10]),
            base_offset: Offset(base),
            next_offset: Offset(base + n),
            segment_base: Offset(0),
            pos: FilePos(0),
        }
    }

    #[test]
    fn reads_runs_evicts_fifo_and_invalidates() {
        let c = BatchCache::new(300);
        let p = c.register();
        c.insert(p, batch(0, 2, 100));
        c.insert(p, batch(2, 3, 100));
        c.insert(p, batch(5, 1, 100));
        let run = c.read(p, Offset(3), 1000, Offset(6)).unwrap();
        assert_eq!(run.len(), 2);
        assert_eq!(run[0].base_offset, Offset(2));
        // At least one batch even when it exceeds max_bytes.
        assert_eq!(c.read(p, Offset(0), 10, Offset(6)).unwrap().len(), 1);
        // Not past the visible end.
        assert!(c.read(p, Offset(5), 1000, Offset(5)).is_none());
        c.insert(p, batch(6, 1, 100)); // evicts offset 0
        assert!(c.read(p, Offset(0), 1000, Offset(7)).is_none());
        assert_eq!(c.bytes(), 300);
        c.invalidate_from(p, Offset(5));
        assert!(c.read(p, Offset(5), 1000, Offset(7)).is_none());
        assert_eq!(c.bytes(), 100);
        c.invalidate_below(p, Offset(5));
        assert_eq!(c.bytes(), 0);
    }
}
