//! Rebuilding a shard's transactional ids from its partitions of `__transaction_state` at
//! start-up.
//!
//! The log is read from its start; the last record of each key wins and a tombstone deletes
//! (what compaction would keep too). [`Rebuild`] is the pure part, fed with the raw batches;
//! [`load_partition`] reads them from the partition. Runs on the partition's home shard.

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use sluice_engine::batch::BatchIter;
use sluice_engine::records::decode_records;
use sluice_engine::types::Offset;

use crate::broker::BrokerCtx;
use crate::txn::coordinator;
use crate::txn::records;
use crate::txn::state::{TxnData, TxnMetadata, TxnState, NO_PRODUCER_EPOCH};

/// Bytes read from `__transaction_state` per step while loading.
const LOAD_READ_BYTES: usize = 1 << 20;
/// Decompressed size cap for a batch read back while loading.
const LOAD_DECOMPRESSED_BYTES_MAX: usize = 64 << 20;

/// Reads one `__transaction_state` partition from its start and rebuilds its ids.
///
/// Runs on the partition's home shard.
pub async fn load_partition(
    ctx: &Rc<BrokerCtx>,
    partition: i32,
) -> Result<Vec<TxnMetadata>, String> {
    let p = coordinator::txn_partition(ctx, partition)
        .map_err(|code| format!("partition {partition} is not available (error {code})"))?;
    let mut rebuild = Rebuild::new(partition);
    let mut next = p.log_start_offset();
    let end = p.high_watermark();
    while next < end {
        let read = p
            .read(next, LOAD_READ_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        if read.is_empty() {
            break;
        }
        let after = rebuild.apply_batches(&read.to_vec(), next)?;
        if after == next {
            break;
        }
        next = after;
    }
    Ok(rebuild.into_txns())
}

/// The latest stored state of every transactional id of one partition, as the log is
/// replayed (`None`: expired).
pub struct Rebuild {
    partition: i32,
    txns: HashMap<String, Option<TxnData>>,
}

impl Rebuild {
    pub fn new(partition: i32) -> Rebuild {
        Rebuild {
            partition,
            txns: HashMap::new(),
        }
    }

    /// Applies the records of the batches in `buf` that end after `next`; returns the offset
    /// after the last batch applied. Control batches carry no state and are skipped.
    pub fn apply_batches(&mut self, buf: &[u8], next: Offset) -> Result<Offset, String> {
        let mut next = next;
        for item in BatchIter::new(buf) {
            let (_, batch) = item.map_err(|e| e.to_string())?;
            let batch_next = batch.next_offset();
            if batch_next <= next {
                continue;
            }
            next = batch_next;
            if batch.is_control() {
                continue;
            }
            let decoded = decode_records(
                batch.attributes(),
                batch.records(),
                batch.record_count(),
                LOAD_DECOMPRESSED_BYTES_MAX,
            )
            .map_err(|e| e.to_string())?;
            for record in decoded.iter() {
                let record = record.map_err(|e| e.to_string())?;
                let Some(key) = record.key else { continue };
                let id = match records::decode_key(key) {
                    Ok(id) => id,
                    Err(e) => {
                        tracing::warn!(partition = self.partition, error = %e, "skipping an unreadable key");
                        continue;
                    }
                };
                match record.value.map(records::decode_value) {
                    None => {
                        self.txns.insert(id, None);
                    }
                    Some(Ok(v)) => match data_of(&v) {
                        Some(d) => {
                            self.txns.insert(id, Some(d));
                        }
                        None => tracing::warn!(
                            partition = self.partition,
                            transactional_id = %id,
                            status = v.status,
                            "skipping a transaction state with an unknown status"
                        ),
                    },
                    Some(Err(e)) => tracing::warn!(
                        partition = self.partition,
                        transactional_id = %id,
                        error = %e,
                        "skipping an unreadable transaction state"
                    ),
                }
            }
        }
        Ok(next)
    }

    /// The ids that exist after the replay.
    pub fn into_txns(self) -> Vec<TxnMetadata> {
        let mut out: Vec<TxnMetadata> = self
            .txns
            .into_iter()
            .filter_map(|(id, d)| d.map(|d| TxnMetadata::restored(&id, d)))
            .filter(|m| m.state() != TxnState::Dead)
            .collect();
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        out
    }
}

fn data_of(v: &records::TxnValue) -> Option<TxnData> {
    let state = TxnState::from_id(v.status)?;
    let partitions: BTreeSet<(String, i32)> = v
        .partitions
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
        .collect();
    Some(TxnData {
        producer_id: v.producer_id,
        last_producer_id: v.previous_producer_id,
        producer_epoch: v.producer_epoch,
        last_producer_epoch: NO_PRODUCER_EPOCH,
        timeout_ms: v.timeout_ms,
        state,
        partitions,
        start_ms: v.start_ms,
        last_update_ms: v.last_update_ms,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use sluice_engine::builder::BatchBuilder;
    use sluice_engine::compression::Codec;

    use super::*;

    fn state(
        id: &str,
        status: TxnState,
        epoch: i16,
        parts: &[(&str, i32)],
    ) -> (Bytes, Option<Bytes>) {
        let d = TxnData {
            producer_id: 7,
            last_producer_id: -1,
            producer_epoch: epoch,
            last_producer_epoch: -1,
            timeout_ms: 1000,
            state: status,
            partitions: parts.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
            start_ms: 5,
            last_update_ms: 6,
        };
        (
            records::key(id),
            Some(records::value(
                &coordinator::stored(&d),
                records::VALUE_VERSION,
            )),
        )
    }

    fn log(batches: &[Vec<(Bytes, Option<Bytes>)>]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut base = 0i64;
        for entries in batches {
            let mut b = BatchBuilder::new(Codec::None).base_offset(base);
            for (k, v) in entries {
                b.append(0, Some(k), v.as_deref(), &[]).unwrap();
            }
            out.extend_from_slice(&b.build().unwrap());
            base += entries.len() as i64;
        }
        out
    }

    #[test]
    fn the_last_state_of_each_id_wins_and_tombstones_remove() {
        let buf = log(&[
            vec![state("a", TxnState::Empty, 0, &[])],
            vec![
                state("a", TxnState::Ongoing, 0, &[("t", 1)]),
                state("b", TxnState::Empty, 3, &[]),
            ],
            vec![state(
                "a",
                TxnState::PrepareCommit,
                0,
                &[("t", 1), ("u", 0)],
            )],
            vec![
                (records::key("b"), None),
                state("c", TxnState::CompleteAbort, 2, &[]),
            ],
        ]);
        let mut r = Rebuild::new(0);
        assert_eq!(r.apply_batches(&buf, Offset(0)).unwrap(), Offset(6));
        let txns = r.into_txns();
        let ids: Vec<&str> = txns.iter().map(|m| m.transactional_id.as_str()).collect();
        assert_eq!(ids, vec!["a", "c"]);
        assert_eq!(txns[0].state(), TxnState::PrepareCommit);
        assert_eq!(txns[0].data.partitions.len(), 2);
        assert_eq!(txns[1].data.producer_epoch, 2);
        assert_eq!(txns[0].pending, None);
    }

    #[test]
    fn a_read_that_starts_inside_an_applied_batch_skips_it() {
        let buf = log(&[
            vec![
                state("a", TxnState::Ongoing, 0, &[("t", 0)]),
                state("a", TxnState::Empty, 1, &[]),
            ],
            vec![state("a", TxnState::Empty, 4, &[])],
        ]);
        let mut r = Rebuild::new(0);
        assert_eq!(r.apply_batches(&buf, Offset(2)).unwrap(), Offset(3));
        assert_eq!(r.into_txns()[0].data.producer_epoch, 4);
    }
}
