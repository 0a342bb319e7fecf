//! Rebuilding a shard's groups from its partitions of `__consumer_offsets` at start-up.
//!
//! The log is read from its start; the last record of each key wins and a tombstone deletes
//! (the log is not compacted yet, so this is also what compaction would keep). [`Rebuild`] is
//! the pure part, fed with the raw batches; [`load_partition`] reads them from the partition.
//! Runs on the partition's home shard.
//!
//! Transactional batches (TxnOffsetCommit) hold offsets of their producer's open transaction:
//! they are kept aside per producer until a control batch (the transaction marker) ends it; a
//! commit makes them committed offsets where no commit later in the log exists, an abort drops
//! them, and those of transactions still open when the log ends come back as the groups'
//! pending transactional offsets. An offset tombstone also removes the partition's offsets
//! from every open transaction, as in Kafka.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use sluice_engine::batch::BatchIter;
use sluice_engine::partition::now_ms;
use sluice_engine::records::decode_records;
use sluice_engine::types::Offset;

use crate::broker::BrokerCtx;
use crate::groups::coordinator;
use crate::groups::records::{self, GroupValue, RecordKey};
use crate::groups::state::{CommittedOffset, Group, Member};

/// Bytes read from `__consumer_offsets` per step while loading.
const LOAD_READ_BYTES: usize = 1 << 20;
/// Decompressed size cap for a batch read back while loading.
pub(crate) const LOAD_DECOMPRESSED_BYTES_MAX: usize = 64 << 20;

/// Reads one `__consumer_offsets` partition from its start and rebuilds its groups.
///
/// Runs on the partition's home shard.
pub async fn load_partition(ctx: &Rc<BrokerCtx>, partition: i32) -> Result<Vec<Group>, String> {
    let p = coordinator::offsets_partition(ctx, partition)
        .map_err(|code| format!("partition {partition} is not available (error {code})"))?;
    let mut rebuild = Rebuild::new(partition);
    let mut next = p.log_start_offset();
    // The high watermark is read again each round: a transaction marker written while the
    // partition loads is applied from the log, not by the marker hook (which ignores partitions
    // still loading), and nothing can be appended between the last check and the install.
    while next < p.high_watermark() {
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
    let delay = ctx.state().config.group_initial_rebalance_delay_ms as i64;
    Ok(rebuild.into_groups(delay, now_ms()))
}

/// The latest stored state of every group of one partition, as the log is replayed.
pub struct Rebuild {
    partition: i32,
    /// Latest group metadata by group (`None`: deleted).
    metas: HashMap<String, Option<GroupValue>>,
    offsets: HashMap<String, BTreeMap<(String, i32), CommittedOffset>>,
    /// Offsets of open transactions: by producer id, then group.
    txn_offsets: HashMap<i64, TxnOffsets>,
}

/// The offsets one transaction committed, by group.
type TxnOffsets = HashMap<String, BTreeMap<(String, i32), CommittedOffset>>;

impl Rebuild {
    pub fn new(partition: i32) -> Rebuild {
        Rebuild {
            partition,
            metas: HashMap::new(),
            offsets: HashMap::new(),
            txn_offsets: HashMap::new(),
        }
    }

    /// Applies the records of the batches in `buf` that end after `next` (a read may start
    /// inside a batch already applied); returns the offset after the last batch applied.
    /// A control batch (transaction marker) ends its producer's transaction.
    pub fn apply_batches(&mut self, buf: &[u8], next: Offset) -> Result<Offset, String> {
        let mut next = next;
        for item in BatchIter::new(buf) {
            let (_, batch) = item.map_err(|e| e.to_string())?;
            let batch_next = batch.next_offset();
            if batch_next <= next {
                continue;
            }
            next = batch_next;
            // The log cleaner keeps some batches without records (the last batch of an active
            // producer, an emptied marker): they hold nothing to apply.
            if batch.record_count() == 0 {
                continue;
            }
            let decoded = decode_records(
                batch.attributes(),
                batch.records(),
                batch.record_count(),
                LOAD_DECOMPRESSED_BYTES_MAX,
            )
            .map_err(|e| e.to_string())?;
            if batch.is_control() {
                if batch.record_count() == 0 {
                    // The cleaner emptied this marker: its whole transaction is gone from the
                    // log already, so there is nothing to end (as Kafka reads such a batch).
                    continue;
                }
                // A marker record's key: version int16, type int16 (0 abort, 1 commit).
                let marker = decoded.iter().next().and_then(Result::ok).and_then(|r| {
                    r.key
                        .filter(|k| k.len() >= 4)
                        .map(|k| k[3] == 1 && k[2] == 0)
                });
                match marker {
                    Some(committed) => self.end_txn(batch.producer_id(), committed),
                    None => tracing::warn!(
                        partition = self.partition,
                        offset = batch.base_offset().0,
                        "skipping an unreadable transaction marker"
                    ),
                }
                continue;
            }
            let producer = batch.is_transactional().then(|| batch.producer_id());
            let base = batch.base_offset().0;
            for record in decoded.iter() {
                let record = record.map_err(|e| e.to_string())?;
                let Some(key) = record.key else { continue };
                let at = base + i64::from(record.offset_delta);
                match records::decode_key(key) {
                    Ok(key) => self.apply(key, record.value, at, producer),
                    // Kafka skips keys it does not know too (newer record types).
                    Err(e) => tracing::warn!(
                        partition = self.partition,
                        error = %e,
                        "skipping an unreadable key"
                    ),
                }
            }
        }
        Ok(next)
    }

    /// Applies one record stored at `at`; `producer` is the producer of the transactional
    /// batch holding it, if it is in one.
    fn apply(&mut self, key: RecordKey, value: Option<&[u8]>, at: i64, producer: Option<i64>) {
        let partition = self.partition;
        match key {
            RecordKey::Offset {
                group,
                topic,
                partition: p,
            } => match value.map(records::decode_offset_value) {
                None => {
                    let k = (topic, p);
                    if let Some(o) = self.offsets.get_mut(&group) {
                        o.remove(&k);
                    }
                    for txn in self.txn_offsets.values_mut() {
                        if let Some(o) = txn.get_mut(&group) {
                            o.remove(&k);
                        }
                    }
                }
                Some(Ok(v)) => {
                    let o = CommittedOffset {
                        offset: v.offset,
                        leader_epoch: v.leader_epoch,
                        metadata: v.metadata,
                        commit_timestamp_ms: v.commit_timestamp,
                        expire_timestamp_ms: (v.expire_timestamp >= 0)
                            .then_some(v.expire_timestamp),
                        record_offset: at,
                    };
                    let entry = match producer {
                        None => self.offsets.entry(group).or_default(),
                        Some(id) => self
                            .txn_offsets
                            .entry(id)
                            .or_default()
                            .entry(group)
                            .or_default(),
                    };
                    entry.insert((topic, p), o);
                }
                Some(Err(e)) => {
                    tracing::warn!(partition, error = %e, "skipping an unreadable offset commit")
                }
            },
            RecordKey::Group { group } => match value.map(records::decode_group_value) {
                None => {
                    self.metas.insert(group, None);
                }
                Some(Ok(v)) => {
                    self.metas.insert(group, Some(v));
                }
                Some(Err(e)) => {
                    tracing::warn!(partition, error = %e, "skipping unreadable group metadata")
                }
            },
        }
    }

    /// Ends the transaction of `producer_id` (its marker): a commit makes its offsets committed
    /// offsets unless a commit later in the log exists; an abort drops them.
    fn end_txn(&mut self, producer_id: i64, committed: bool) {
        let Some(txn) = self.txn_offsets.remove(&producer_id) else {
            return;
        };
        if !committed {
            return;
        }
        for (group, offsets) in txn {
            let entry = self.offsets.entry(group).or_default();
            for (k, o) in offsets {
                if entry
                    .get(&k)
                    .is_none_or(|old| old.record_offset < o.record_offset)
                {
                    entry.insert(k, o);
                }
            }
        }
    }

    /// The groups that exist after the replay: those with metadata, committed offsets or
    /// offsets in open transactions.
    /// Members come back in their stored generation and must heartbeat within their session
    /// timeout from `now_ms`.
    pub fn into_groups(mut self, initial_delay_ms: i64, now_ms: i64) -> Vec<Group> {
        let mut ids: Vec<String> = self
            .metas
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| k.clone())
            .chain(
                self.offsets
                    .iter()
                    .filter(|(_, o)| !o.is_empty())
                    .map(|(k, _)| k.clone()),
            )
            .chain(
                self.txn_offsets
                    .values()
                    .flat_map(|t| t.iter())
                    .filter(|(_, o)| !o.is_empty())
                    .map(|(k, _)| k.clone()),
            )
            .collect();
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .map(|id| {
                let mut g = Group::new(&id, initial_delay_ms, now_ms);
                if let Some(Some(v)) = self.metas.remove(&id) {
                    restore(&mut g, v, now_ms);
                }
                if let Some(o) = self.offsets.remove(&id) {
                    g.offsets = o;
                }
                for (producer_id, txn) in &mut self.txn_offsets {
                    if let Some(o) = txn.remove(&id).filter(|o| !o.is_empty()) {
                        g.txn_offsets.insert(*producer_id, o);
                    }
                }
                g
            })
            .collect()
    }
}

fn restore(g: &mut Group, v: GroupValue, now_ms: i64) {
    let protocol = v.protocol.clone().unwrap_or_default();
    let members = v
        .members
        .into_iter()
        .map(|m| Member {
            id: m.member_id,
            instance_id: m.group_instance_id,
            client_id: m.client_id,
            client_host: m.client_host,
            session_timeout_ms: m.session_timeout,
            rebalance_timeout_ms: m.rebalance_timeout,
            protocol_type: v.protocol_type.clone(),
            // Only the chosen protocol's metadata is stored, as in Kafka.
            protocols: vec![(protocol.clone(), m.subscription)],
            assignment: m.assignment,
            awaiting_join: false,
            awaiting_sync: false,
            is_new: false,
            last_heartbeat_ms: now_ms,
        })
        .collect();
    g.restore(
        v.protocol_type,
        v.generation,
        v.protocol,
        v.leader,
        v.current_state_timestamp,
        members,
        now_ms,
    );
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use sluice_engine::builder::BatchBuilder;
    use sluice_engine::compression::Codec;

    use super::*;
    use crate::groups::records::{MemberValue, OffsetValue};
    use crate::groups::state::GroupState;

    fn offset(group: &str, topic: &str, p: i32, value: Option<i64>) -> (Bytes, Option<Bytes>) {
        (
            records::offset_key(group, topic, p),
            value.map(|o| {
                records::offset_value(&OffsetValue {
                    offset: o,
                    leader_epoch: -1,
                    metadata: format!("m{o}"),
                    commit_timestamp: 1000 + o,
                    expire_timestamp: -1,
                })
            }),
        )
    }

    fn group(id: &str, members: &[&str]) -> (Bytes, Option<Bytes>) {
        let value = GroupValue {
            protocol_type: "consumer".into(),
            generation: 4,
            protocol: Some("range".into()),
            leader: members.first().map(|m| m.to_string()),
            current_state_timestamp: 500,
            members: members
                .iter()
                .map(|m| MemberValue {
                    member_id: m.to_string(),
                    group_instance_id: None,
                    client_id: "c".into(),
                    client_host: "/10.0.0.1".into(),
                    rebalance_timeout: 30_000,
                    session_timeout: 10_000,
                    subscription: Bytes::from_static(b"sub"),
                    assignment: Bytes::from_static(b"asg"),
                })
                .collect(),
        };
        (records::group_key(id), Some(records::group_value(&value)))
    }

    /// Concatenated batches, one per entry list, with consecutive offsets.
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
    fn the_last_record_of_each_key_wins_and_tombstones_delete() {
        let buf = log(&[
            vec![offset("g1", "t", 0, Some(5)), offset("g1", "t", 1, Some(3))],
            vec![group("g1", &["m-1"]), offset("g2", "t", 0, Some(1))],
            vec![offset("g1", "t", 0, Some(7)), offset("g1", "t", 1, None)],
            vec![group("g3", &[]), (records::group_key("g3"), None)],
            vec![group("g2", &["x"]), (records::group_key("g2"), None)],
        ]);
        let mut r = Rebuild::new(0);
        assert_eq!(r.apply_batches(&buf, Offset(0)).unwrap(), Offset(10));
        let groups = r.into_groups(0, 2_000);
        let ids: Vec<&str> = groups.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids, vec!["g1", "g2"], "g3 was deleted and has no offsets");
        let g1 = &groups[0];
        assert_eq!(g1.state, GroupState::Stable);
        assert_eq!(g1.generation, 4);
        assert_eq!(g1.leader.as_deref(), Some("m-1"));
        assert_eq!(g1.members["m-1"].assignment, Bytes::from_static(b"asg"));
        assert_eq!(g1.members["m-1"].last_heartbeat_ms, 2_000);
        let o: Vec<(&str, i32, i64, &str)> = g1
            .offsets
            .iter()
            .map(|((t, p), o)| (t.as_str(), *p, o.offset, o.metadata.as_str()))
            .collect();
        assert_eq!(o, vec![("t", 0, 7, "m7")]);
        // g2's metadata is gone but its offsets stay: an Empty group that only has offsets.
        let g2 = &groups[1];
        assert_eq!(g2.state, GroupState::Empty);
        assert_eq!(g2.offsets.len(), 1);
    }

    #[test]
    fn batches_already_applied_are_skipped_when_a_read_starts_inside_them() {
        let buf = log(&[
            vec![offset("g", "t", 0, Some(1)), offset("g", "t", 0, Some(2))],
            vec![offset("g", "t", 0, Some(3))],
        ]);
        let mut r = Rebuild::new(0);
        // Offsets 0 and 1 were applied by an earlier read; only the batch at 2 counts.
        r.offsets.entry("g".into()).or_default().insert(
            ("t".into(), 0),
            CommittedOffset {
                offset: 9,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 0,
                expire_timestamp_ms: None,
                record_offset: 0,
            },
        );
        assert_eq!(r.apply_batches(&buf, Offset(2)).unwrap(), Offset(3));
        let groups = r.into_groups(0, 0);
        assert_eq!(groups[0].offsets[&("t".to_string(), 0)].offset, 3);
    }

    /// A batch of `entries` at `base`: transactional for `producer` when given.
    fn batch_at(base: i64, producer: Option<i64>, entries: &[(Bytes, Option<Bytes>)]) -> Vec<u8> {
        let mut b = BatchBuilder::new(Codec::None).base_offset(base);
        if let Some(id) = producer {
            b = b
                .producer(id, 0, sluice_engine::producer_state::NO_SEQUENCE)
                .transactional(true);
        }
        for (k, v) in entries {
            b.append(0, Some(k), v.as_deref(), &[]).unwrap();
        }
        b.build().unwrap().to_vec()
    }

    /// Bytes of a record batch header.
    const BATCH_HEADER: usize = 61;

    fn marker_at(base: i64, producer: i64, commit: bool) -> Vec<u8> {
        let mut m = sluice_engine::builder::control_marker_batch(commit, 0, producer, 0, 0)
            .unwrap()
            .to_vec();
        sluice_engine::batch::set_base_offset(&mut m, Offset(base));
        m
    }

    #[test]
    fn transactional_offsets_wait_for_their_marker_and_open_ones_stay_pending() {
        let mut buf = Vec::new();
        buf.extend(batch_at(0, None, &[offset("g1", "t", 0, Some(5))]));
        buf.extend(batch_at(
            1,
            Some(7),
            &[offset("g1", "t", 0, Some(8)), offset("g1", "t", 1, Some(3))],
        ));
        buf.extend(batch_at(3, Some(9), &[offset("g2", "t", 0, Some(1))]));
        buf.extend(batch_at(4, Some(11), &[offset("g1", "t", 2, Some(4))]));
        // A regular commit later in the log than the transaction's wins over it.
        buf.extend(batch_at(5, None, &[offset("g1", "t", 1, Some(100))]));
        buf.extend(batch_at(6, Some(13), &[offset("g1", "t", 3, Some(6))]));
        // A tombstone removes the partition from the open transaction too.
        buf.extend(batch_at(7, None, &[offset("g1", "t", 3, None)]));
        buf.extend(marker_at(8, 7, true));
        buf.extend(marker_at(9, 9, false));
        buf.extend(marker_at(10, 13, true));
        let mut r = Rebuild::new(0);
        assert_eq!(r.apply_batches(&buf, Offset(0)).unwrap(), Offset(11));
        let groups = r.into_groups(0, 0);
        let ids: Vec<&str> = groups.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(
            ids,
            vec!["g1"],
            "g2 only had offsets of an aborted transaction"
        );
        let g1 = &groups[0];
        let o: Vec<(i32, i64, i64)> = g1
            .offsets
            .iter()
            .map(|((_, p), o)| (*p, o.offset, o.record_offset))
            .collect();
        assert_eq!(o, vec![(0, 8, 1), (1, 100, 5)]);
        // Producer 11's transaction is still open: its offset is pending, not committed.
        assert_eq!(g1.txn_offsets.len(), 1);
        assert_eq!(g1.txn_offsets[&11][&("t".to_string(), 2)].offset, 4);
        assert!(g1.has_pending_txn_offset("t", 2));
    }

    #[test]
    fn a_marker_the_cleaner_emptied_ends_nothing() {
        // A control batch without records: the cleaner removed its whole transaction.
        let marker = marker_at(1, 7, true);
        let mut empty = marker[..BATCH_HEADER].to_vec();
        empty[8..12].copy_from_slice(&((BATCH_HEADER - 12) as i32).to_be_bytes());
        empty[57..61].copy_from_slice(&0i32.to_be_bytes());
        let crc = sluice_engine::builder::batch_crc(&empty).unwrap();
        empty[17..21].copy_from_slice(&crc.to_be_bytes());
        let mut buf = batch_at(0, Some(7), &[offset("g", "t", 0, Some(2))]);
        buf.extend(empty);
        let mut r = Rebuild::new(0);
        assert_eq!(r.apply_batches(&buf, Offset(0)).unwrap(), Offset(2));
        let groups = r.into_groups(0, 0);
        assert!(groups[0].offsets.is_empty());
        assert_eq!(groups[0].txn_offsets[&7].len(), 1);
    }

    #[test]
    fn a_group_with_only_an_open_transaction_exists() {
        let buf = batch_at(0, Some(7), &[offset("g", "t", 0, Some(2))]);
        let mut r = Rebuild::new(0);
        r.apply_batches(&buf, Offset(0)).unwrap();
        let groups = r.into_groups(0, 0);
        assert_eq!(groups.len(), 1);
        assert!(groups[0].offsets.is_empty());
        assert_eq!(groups[0].txn_offsets[&7].len(), 1);
    }

    #[test]
    fn a_corrupt_batch_is_an_error() {
        let mut buf = log(&[vec![offset("g", "t", 0, Some(1))]]);
        let last = buf.len() - 1;
        buf[last] ^= 0xff;
        assert!(Rebuild::new(0).apply_batches(&buf, Offset(0)).is_err());
    }
}
