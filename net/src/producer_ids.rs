//! Producer ids for idempotent and transactional producers, never handed out twice.
//!
//! Ids are given out in blocks, as Kafka does: the control shard owns the durable counter in
//! `<data-dir>/__cluster/producer_ids.json` (the next block's first id), and every shard takes
//! a block from it when its own runs out. A block is written to disk (temporary file, fsync,
//! rename, directory fsync) before any id of it is used, so a crash at any point can only skip
//! ids, never reuse one: a producer id reused after a restart would let a new producer's
//! sequence numbers be mistaken for a fenced producer's duplicates.
//!
//! [`ProducerIdStore`] lives on the control shard only; [`ShardProducerIds`] is each shard's
//! current block. Both are owned by their shard.

use std::cell::{Cell, RefCell};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::broker::BrokerCtx;
use crate::cluster::CONTROL_SHARD;
use crate::topics::{write_atomically, TopicError};

/// How many ids one block holds (Kafka's `ProducerIdsBlock` size).
pub const BLOCK_SIZE: i64 = 1000;

const FILE_NAME: &str = "producer_ids.json";

/// Why a block could not be reserved.
#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error("cannot persist the producer id block: {0}")]
    Persist(#[from] TopicError),
    #[error("producer ids are exhausted")]
    Exhausted,
    #[error("the control shard could not reserve a block: {0}")]
    Control(String),
}

/// The durable counter of producer-id blocks. Control shard only.
#[derive(Debug)]
pub struct ProducerIdStore {
    path: PathBuf,
    next_block_start: i64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct OnDisk {
    next_block_start: i64,
}

impl ProducerIdStore {
    /// Opens the counter in `<data_dir>/__cluster`, starting at 0 when there is none.
    pub fn open(data_dir: &Path) -> Result<ProducerIdStore, ProducerIdError> {
        let path = data_dir.join("__cluster").join(FILE_NAME);
        let next_block_start = match std::fs::read(&path) {
            Ok(bytes) => {
                let on_disk: OnDisk =
                    serde_json::from_slice(&bytes).map_err(|e| ProducerIdError::Damaged {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if on_disk.next_block_start < 0 {
                    return Err(ProducerIdError::Damaged {
                        path,
                        reason: format!("negative next block {}", on_disk.next_block_start),
                    });
                }
                on_disk.next_block_start
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => return Err(ProducerIdError::Read { path, source }),
        };
        Ok(ProducerIdStore {
            path,
            next_block_start,
        })
    }

    /// Reserves the next block durably and returns its ids.
    pub fn reserve_block(&mut self) -> Result<Range<i64>, ProducerIdError> {
        let start = self.next_block_start;
        let end = start
            .checked_add(BLOCK_SIZE)
            .ok_or(ProducerIdError::Exhausted)?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| ProducerIdError::Read {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let bytes = serde_json::to_vec(&OnDisk {
            next_block_start: end,
        })
        .map_err(|e| ProducerIdError::Damaged {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        write_atomically(&self.path, &bytes)?;
        self.next_block_start = end;
        Ok(start..end)
    }
}

/// A shard's producer ids: its current block, and on the control shard the durable counter.
#[derive(Debug, Default)]
pub struct ProducerIds {
    block: ShardProducerIds,
    /// `Some` on the control shard only.
    store: Option<RefCell<ProducerIdStore>>,
}

impl ProducerIds {
    /// `store` is given to the control shard only.
    pub fn new(store: Option<ProducerIdStore>) -> ProducerIds {
        ProducerIds {
            block: ShardProducerIds::default(),
            store: store.map(RefCell::new),
        }
    }
}

/// A producer id no producer had before: the next of this shard's block, or of a new block
/// the control shard reserves when the block is used up. Runs on any shard.
pub async fn next_producer_id(ctx: &Rc<BrokerCtx>) -> Result<i64, ProducerIdError> {
    let ids = &ctx.state().producer_ids;
    if let Some(id) = ids.block.take() {
        return Ok(id);
    }
    let block = ctx
        .call(CONTROL_SHARD, |control| async move {
            let Some(store) = &control.state().producer_ids.store else {
                return Err("this shard holds no producer id counter".to_owned());
            };
            // A short blocking write on a rare path (once per thousand producers).
            let reserved = store.borrow_mut().reserve_block();
            reserved.map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| ProducerIdError::Control(e.to_string()))?
        .map_err(ProducerIdError::Control)?;
    // Another request of this shard may have refilled meanwhile; its block is then given up
    // (ids are only ever skipped, never reused).
    ids.block.refill(block);
    ids.block.take().ok_or(ProducerIdError::Exhausted)
}

/// A shard's current block of producer ids.
#[derive(Debug, Default)]
pub struct ShardProducerIds {
    next: Cell<i64>,
    end: Cell<i64>,
}

impl ShardProducerIds {
    /// The next id of the current block, or `None` when the shard needs a new block.
    pub fn take(&self) -> Option<i64> {
        let id = self.next.get();
        if id >= self.end.get() {
            return None;
        }
        self.next.set(id + 1);
        Some(id)
    }

    /// Installs a freshly reserved block.
    pub fn refill(&self, block: Range<i64>) {
        self.next.set(block.start);
        self.end.set(block.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_never_handed_out_twice_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ProducerIdStore::open(dir.path()).unwrap();
        assert_eq!(store.reserve_block().unwrap(), 0..BLOCK_SIZE);
        assert_eq!(store.reserve_block().unwrap(), BLOCK_SIZE..2 * BLOCK_SIZE);
        drop(store);
        // A restart continues after the last reserved block, even if its ids were never used.
        let mut store = ProducerIdStore::open(dir.path()).unwrap();
        assert_eq!(
            store.reserve_block().unwrap(),
            2 * BLOCK_SIZE..3 * BLOCK_SIZE
        );
    }

    #[test]
    fn a_damaged_counter_is_refused_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("__cluster")).unwrap();
        std::fs::write(dir.path().join("__cluster").join(FILE_NAME), b"{\"next").unwrap();
        assert!(matches!(
            ProducerIdStore::open(dir.path()),
            Err(ProducerIdError::Damaged { .. })
        ));
    }

    #[test]
    fn shards_use_their_block_then_ask_for_another() {
        let ids = ShardProducerIds::default();
        assert_eq!(ids.take(), None);
        ids.refill(5..7);
        assert_eq!(
            (ids.take(), ids.take(), ids.take()),
            (Some(5), Some(6), None)
        );
    }
}
