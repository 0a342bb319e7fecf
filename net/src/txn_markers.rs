//! Writing transaction markers: the step that ends a transaction on its data partitions.
//!
//! The transaction coordinator, once it has durably decided to commit or abort, calls
//! [`write_markers`] with every partition of the transaction; the WriteTxnMarkers API (key 27)
//! serves the same function to tools and, later, to other brokers. Each partition gets a
//! control batch (Kafka's COMMIT or ABORT marker) through `Partition::append_marker`, on its
//! home shard; the call answers only when every marker is fdatasync'd, because the coordinator
//! then writes CompleteCommit/CompleteAbort and forgets the transaction: a marker lost after
//! that would leave the partition's last stable offset stuck behind the transaction forever.
//!
//! Markers of one call go to their shards concurrently (one mesh call per home shard; on a
//! shard every marker takes its place in its partition's append order before any is awaited).
//! After a marker is durable, `read_committed` fetches waiting on the partition are woken:
//! the marker moved the partition's last stable offset.

use std::collections::HashMap;
use std::rc::Rc;

use sluice_engine::types::{Offset, ShardId, TopicPartition};

use crate::broker::BrokerCtx;
use crate::cluster::Slot;
use crate::errors;

/// Writes a commit (`committed`) or abort marker of `producer_id` at `producer_epoch` from a
/// coordinator at `coordinator_epoch` to every partition of `partitions`, and answers, in the
/// order of `partitions`, each partition with its Kafka error code (0: the marker is durable).
///
/// Codes: UNKNOWN_TOPIC_OR_PARTITION (no such partition here), INVALID_PRODUCER_EPOCH (the
/// producer has a newer epoch on the partition), TRANSACTION_COORDINATOR_FENCED (a newer
/// coordinator wrote this producer's last marker), KAFKA_STORAGE_ERROR (offline or poisoned
/// partition), NOT_LEADER_OR_FOLLOWER (its home shard is unavailable).
///
/// Runs on any shard.
pub async fn write_markers(
    ctx: &Rc<BrokerCtx>,
    producer_id: i64,
    producer_epoch: i16,
    committed: bool,
    coordinator_epoch: i32,
    partitions: &[(String, i32)],
) -> Vec<(String, i32, i16)> {
    let snapshot = ctx.state().cluster.topics();
    let mut codes: Vec<i16> = vec![errors::UNKNOWN_TOPIC_OR_PARTITION; partitions.len()];
    let mut per_shard: HashMap<ShardId, Vec<(usize, TopicPartition)>> = HashMap::new();
    for (i, (topic, partition)) in partitions.iter().enumerate() {
        let tp = TopicPartition::new(topic, *partition);
        if let Some(home) = snapshot.shard_for(&tp) {
            per_shard.entry(home).or_default().push((i, tp));
        }
    }
    let marker = MarkerSpec {
        producer_id,
        producer_epoch,
        committed,
        coordinator_epoch,
    };
    let calls: Vec<_> = per_shard
        .into_iter()
        .map(|(home, items)| {
            let ctx = ctx.clone();
            glommio::spawn_local(async move {
                let slots: Vec<usize> = items.iter().map(|(i, _)| *i).collect();
                let answer = ctx
                    .call(home, move |home_ctx: Rc<BrokerCtx>| async move {
                        write_on_home(&home_ctx, items, marker).await
                    })
                    .await;
                answer.unwrap_or_else(|e| {
                    tracing::warn!(shard = home.0, error = %e, "transaction markers not written: home shard unavailable");
                    slots
                        .into_iter()
                        .map(|i| (i, errors::NOT_LEADER_OR_FOLLOWER))
                        .collect()
                })
            })
        })
        .collect();
    for call in calls {
        for (i, code) in call.await {
            if let Some(slot) = codes.get_mut(i) {
                *slot = code;
            }
        }
    }
    partitions
        .iter()
        .zip(codes)
        .map(|((topic, partition), code)| (topic.clone(), *partition, code))
        .collect()
}

/// What a marker says, minus where it goes.
#[derive(Debug, Clone, Copy)]
struct MarkerSpec {
    producer_id: i64,
    producer_epoch: i16,
    committed: bool,
    coordinator_epoch: i32,
}

/// Appends the marker to each partition of `items` (all placed before any is awaited) and
/// answers each slot's error code once its marker is durable or refused.
///
/// Runs on the home shard of every partition in `items`.
async fn write_on_home(
    home: &Rc<BrokerCtx>,
    items: Vec<(usize, TopicPartition)>,
    m: MarkerSpec,
) -> Vec<(usize, i16)> {
    let mut out = Vec::with_capacity(items.len());
    let mut pending = Vec::with_capacity(items.len());
    for (i, tp) in items {
        match home.state().cluster.slot(&tp) {
            Some(Slot::Online(p)) => {
                let append = p.append_marker(
                    m.producer_id,
                    m.producer_epoch,
                    m.committed,
                    m.coordinator_epoch,
                );
                // On `__consumer_offsets` the marker ends the transaction's offset commits
                // there (TxnOffsetCommit): the group coordinator applies (commit) or drops
                // (abort) them once the marker is durable, in the marker's own task, so that a
                // dropped call cannot leave them pending.
                let groups_hook = (tp.topic.as_ref() == crate::groups::OFFSETS_TOPIC)
                    .then(|| (home.clone(), tp.partition));
                let append = async move {
                    let written = append.await;
                    if let (Ok(offset), Some((ctx, partition))) = (&written, &groups_hook) {
                        crate::groups::coordinator::txn_marker_written(
                            ctx,
                            *partition,
                            m.producer_id,
                            m.committed,
                            offset.0,
                        );
                    }
                    written
                };
                // Its own task: the marker is written even if this call is dropped meanwhile.
                pending.push((i, tp, glommio::spawn_local(append).detach()));
            }
            Some(Slot::Offline(_)) => out.push((i, errors::KAFKA_STORAGE_ERROR)),
            None => out.push((i, errors::UNKNOWN_TOPIC_OR_PARTITION)),
        }
    }
    for (i, tp, task) in pending {
        let code = match task.await {
            Some(Ok(offset)) => {
                after_marker(home, &tp, m, offset).await;
                errors::NONE
            }
            Some(Err(e)) => {
                tracing::warn!(%tp, producer_id = m.producer_id, error = %e, "transaction marker refused");
                // A storage failure may have left part of the marker in the write buffer;
                // waking fetches is harmless either way.
                home.state().notifier.notify(&tp);
                e.kafka_code()
            }
            None => errors::NOT_LEADER_OR_FOLLOWER,
        };
        out.push((i, code));
    }
    out
}

/// What follows a durable marker on `tp`'s home shard: waiting fetches are woken (the last
/// stable offset moved, which `read_committed` fetches wait for).
///
/// Runs on `tp`'s home shard.
async fn after_marker(home: &Rc<BrokerCtx>, tp: &TopicPartition, m: MarkerSpec, offset: Offset) {
    home.state().notifier.notify(tp);
    tracing::debug!(%tp, producer_id = m.producer_id, committed = m.committed, offset = offset.0, "transaction marker written");
}
