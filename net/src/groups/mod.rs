//! Consumer groups: the classic group coordinator and committed offsets.
//!
//! Every group maps to one partition of the internal compacted topic `__consumer_offsets`:
//! `abs(javaStringHashCode(group_id)) % partition_count`, as Kafka maps it, so the same group
//! lands on the same partition in Kafka and here. That partition's home shard coordinates the
//! group: it alone holds the group's state ([`coordinator::GroupsShard`]), writes its offset
//! commits and metadata to the partition in Kafka's record formats ([`records`]), and reads
//! them back at start-up. Handlers on any shard reach it with [`on_coordinator`] through the
//! mesh; there is no global lock and no state shared between shards.
//!
//! Start-up: the control shard creates `__consumer_offsets` if it is missing before the broker
//! reports ready; then every shard loads its partitions of it in the background, answering
//! COORDINATOR_LOAD_IN_PROGRESS for their groups until the load is done, and runs one timer
//! loop for session and rebalance timeouts and offset retention.

pub mod coordinator;
pub mod load;
pub mod records;
pub mod state;

use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sluice_engine::types::TopicPartition;

use crate::broker::BrokerCtx;
use crate::cluster;
use crate::errors;
use crate::server::ListenerShared;
use crate::topics::TopicError;
use coordinator::LoadState;
use state::{Group, GroupState};

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How often each shard lets time pass for its groups (session and rebalance timeouts are
/// enforced to within this).
pub const GROUP_TICK_MS: u64 = 100;
/// Kafka's `offset.metadata.max.bytes`: longer commit metadata is OFFSET_METADATA_TOO_LARGE.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;

/// Java's `String.hashCode` over UTF-16 code units, as Kafka computes it for a group id.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The `__consumer_offsets` partition of a group (Kafka's `Utils.abs(hash) % count`).
pub fn partition_for(group_id: &str, partition_count: i32) -> i32 {
    let h = java_string_hash(group_id);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partition_count.max(1)
}

/// The partition count of `__consumer_offsets` in this shard's snapshot.
pub fn offsets_partition_count(ctx: &BrokerCtx) -> Option<i32> {
    ctx.state()
        .cluster
        .topics()
        .topic(OFFSETS_TOPIC)
        .map(|m| m.partitions)
}

/// Runs `work` on the coordinator shard of `group_id` with the group's partition index, once
/// that shard has loaded the partition. Errors are Kafka codes for the whole request:
/// COORDINATOR_NOT_AVAILABLE (no offsets topic or shard unreachable), NOT_COORDINATOR
/// (routing disagreed), COORDINATOR_LOAD_IN_PROGRESS (still loading).
///
/// Runs on the calling shard; `work` runs on the coordinator shard.
pub async fn on_coordinator<R, F, Fut>(
    ctx: &Rc<BrokerCtx>,
    group_id: &str,
    work: F,
) -> Result<R, i16>
where
    F: FnOnce(Rc<BrokerCtx>, i32) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    let snapshot = ctx.state().cluster.topics();
    let Some(meta) = snapshot.topic(OFFSETS_TOPIC) else {
        return Err(errors::COORDINATOR_NOT_AVAILABLE);
    };
    let partition = partition_for(group_id, meta.partitions);
    let tp = TopicPartition::new(OFFSETS_TOPIC, partition);
    let Some(home) = snapshot.shard_for(&tp) else {
        return Err(errors::COORDINATOR_NOT_AVAILABLE);
    };
    ctx.call(home, move |home_ctx: Rc<BrokerCtx>| async move {
        // At start-up the partition is this shard's before it is open and before its load
        // begins: that is loading too (NOT_COORDINATOR would send clients to look the
        // coordinator up again, only to be sent here).
        let routed_here = || {
            home_ctx.state().cluster.slot(&tp).is_some()
                || home_ctx.state().cluster.topics().shard_for(&tp) == Some(home_ctx.id())
        };
        match home_ctx.state().groups.load_state(partition) {
            Some(LoadState::Loaded) => Ok(work(home_ctx.clone(), partition).await),
            Some(LoadState::Loading) => Err(errors::COORDINATOR_LOAD_IN_PROGRESS),
            None if routed_here() => Err(errors::COORDINATOR_LOAD_IN_PROGRESS),
            None => Err(errors::NOT_COORDINATOR),
        }
    })
    .await
    .map_err(|_| errors::COORDINATOR_NOT_AVAILABLE)?
}

/// A group as other components see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

/// One committed offset as other components see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffsetInfo {
    pub tp: TopicPartition,
    pub offset: i64,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// Every group of the broker with its state (no Dead ones), from every coordinator shard.
///
/// Runs on the calling shard.
pub async fn list_groups(ctx: &Rc<BrokerCtx>) -> Vec<GroupListing> {
    let results = ctx
        .call_all(|shard: Rc<BrokerCtx>| async move { shard.state().groups.listing() })
        .await;
    let mut out: Vec<GroupListing> = results
        .into_iter()
        .flatten()
        .flatten()
        .map(|(group_id, protocol_type, state)| GroupListing {
            group_id,
            protocol_type,
            state,
        })
        .collect();
    out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    out
}

/// The committed offsets of `group_id`, sorted by topic and partition (empty for a group that
/// does not exist). Cheap: one mesh round trip to the coordinator shard, no disk access.
///
/// Runs on the calling shard.
pub async fn committed_offsets(
    ctx: &Rc<BrokerCtx>,
    group_id: &str,
) -> Result<Vec<CommittedOffsetInfo>, i16> {
    let group = group_id.to_string();
    let offsets = on_coordinator(ctx, group_id, move |home, _| async move {
        coordinator::fetch_offsets(&home, &group, None, false)
    })
    .await?;
    Ok(offsets
        .into_iter()
        .filter_map(|f| {
            f.offset.map(|o| CommittedOffsetInfo {
                tp: TopicPartition::new(&f.topic, f.partition),
                offset: o.offset,
                metadata: o.metadata,
                commit_timestamp_ms: o.commit_timestamp_ms,
            })
        })
        .collect())
}

/// One partition of a group as lag evaluation sees it: where the group is, where the log
/// ends, and when the record the group will read next was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    pub tp: TopicPartition,
    pub committed: CommittedOffsetInfo,
    /// The partition's high watermark, or `None` when the partition is unknown or offline.
    pub high_watermark: Option<i64>,
    /// The timestamp of the record at the committed offset (the next one the group reads);
    /// `None` when the group is caught up, or that record is gone (retention) or unreadable.
    pub committed_record_timestamp_ms: Option<i64>,
}

/// The committed offsets of `group_id` with, per partition, the high watermark and the
/// timestamp of the record at the committed offset: what consumer-lag evaluation needs. One
/// mesh round trip to the coordinator, then one per partition to its home shard (a read of
/// one batch, from the batch cache when the group is near the end).
///
/// Runs on the calling shard.
pub async fn group_lag(ctx: &Rc<BrokerCtx>, group_id: &str) -> Result<Vec<PartitionLag>, i16> {
    let committed = committed_offsets(ctx, group_id).await?;
    let mut out = Vec::with_capacity(committed.len());
    for c in committed {
        let offset = c.offset;
        let position = cluster::with_partition(ctx, c.tp.clone(), move |p| async move {
            let hw = p.high_watermark().0;
            let ts = if offset < hw && offset >= p.log_start_offset().0 {
                record_timestamp(&p, offset).await
            } else {
                None
            };
            (hw, ts)
        })
        .await
        .ok();
        out.push(PartitionLag {
            tp: c.tp.clone(),
            high_watermark: position.map(|(hw, _)| hw),
            committed_record_timestamp_ms: position.and_then(|(_, ts)| ts),
            committed: c,
        });
    }
    Ok(out)
}

/// The timestamp of the record at `offset` (LogAppendTime batches carry it as their max
/// timestamp), read from the one batch that holds it.
async fn record_timestamp(p: &sluice_engine::partition::Partition, offset: i64) -> Option<i64> {
    let read = p.read(sluice_engine::types::Offset(offset), 1).await.ok()?;
    let bytes = read.to_vec();
    let (_, view) = sluice_engine::batch::BatchIter::new(&bytes).next()?.ok()?;
    if view.timestamp_type() == sluice_engine::batch::TimestampType::LogAppendTime {
        return Some(view.max_timestamp());
    }
    let records = sluice_engine::records::decode_records(
        view.attributes(),
        view.records(),
        view.record_count(),
        load::LOAD_DECOMPRESSED_BYTES_MAX,
    )
    .ok()?;
    let base = view.base_offset().0;
    records
        .iter()
        .filter_map(Result::ok)
        .find(|r| base + i64::from(r.offset_delta) >= offset)
        .and_then(|r| r.timestamp(view.base_timestamp()))
}

/// Deletes every group's committed offsets of `topic` (just deleted), on every coordinator
/// shard, with tombstones.
///
/// Runs on the calling shard.
pub async fn topic_deleted(ctx: &Rc<BrokerCtx>, topic: &str) {
    let topic = topic.to_string();
    ctx.call_all(move |shard: Rc<BrokerCtx>| async move {
        coordinator::forget_topic(&shard, &topic).await;
    })
    .await;
}

/// The topics a consumer group's members subscribe to, read from their `consumer` protocol
/// metadata; `None` when the group's protocol is not `consumer` (its metadata is opaque).
pub fn subscribed_topics(g: &Group) -> Option<Vec<String>> {
    if g.protocol_type.as_deref() != Some("consumer") {
        return None;
    }
    let protocol = g.protocol.clone().unwrap_or_default();
    let mut topics = Vec::new();
    for m in g.members.values() {
        topics.extend(subscription_topics(&m.metadata(&protocol)));
    }
    topics.sort();
    topics.dedup();
    Some(topics)
}

/// The topic names in a ConsumerProtocolSubscription (`int16` version, then an array of
/// strings in every version); nothing when it cannot be parsed.
fn subscription_topics(metadata: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    if metadata.len() < 6 {
        return out;
    }
    let count = i32::from_be_bytes([metadata[2], metadata[3], metadata[4], metadata[5]]);
    let mut at = 6usize;
    for _ in 0..count.max(0) {
        let Some(len) = metadata.get(at..at + 2) else {
            break;
        };
        let len = i16::from_be_bytes([len[0], len[1]]);
        at += 2;
        if len < 0 {
            break;
        }
        let Some(name) = metadata.get(at..at + len as usize) else {
            break;
        };
        at += len as usize;
        if let Ok(name) = std::str::from_utf8(name) {
            out.push(name.to_string());
        }
    }
    out
}

/// Creates `__consumer_offsets` if it does not exist: internal, compacted,
/// `offsets.topic.num.partitions` partitions.
///
/// Runs on any shard; the change runs on the control shard.
pub async fn ensure_offsets_topic(ctx: &Rc<BrokerCtx>) -> Result<(), TopicError> {
    if ctx.state().cluster.topics().topic(OFFSETS_TOPIC).is_some() {
        return Ok(());
    }
    let partitions = ctx.state().config.offsets_topic_num_partitions;
    cluster::change_topics(ctx, move |store| {
        if store.current().topic(OFFSETS_TOPIC).is_some() {
            return Ok(store.snapshot());
        }
        let mut configs = BTreeMap::new();
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        store.create(OFFSETS_TOPIC, partitions, configs, true)
    })
    .await?;
    Ok(())
}

/// Loads this shard's partitions of `__consumer_offsets` and then runs its group timers until
/// shutdown. Spawned once per shard at start-up.
///
/// Runs on its shard.
pub fn start(ctx: &Rc<BrokerCtx>, shared: Arc<ListenerShared>) {
    let weak = Rc::downgrade(ctx);
    glommio::spawn_local(async move {
        // Every partition homed here is "loading" before any is read, so that no request
        // finds a group missing that the log still holds.
        let Some(partitions) =
            cluster::home_partitions_of_internal_topic(&weak, &shared, OFFSETS_TOPIC).await
        else {
            return;
        };
        if let Some(ctx) = weak.upgrade() {
            for p in &partitions {
                ctx.state().groups.set_load_state(*p, LoadState::Loading);
            }
        }
        for p in partitions {
            let tp = TopicPartition::new(OFFSETS_TOPIC, p);
            if cluster::wait_until_open(&weak, &shared, &tp)
                .await
                .is_none()
            {
                return;
            }
            let Some(ctx) = weak.upgrade() else { return };
            let started = std::time::Instant::now();
            match load::load_partition(&ctx, p).await {
                Ok(groups) => {
                    let n = groups.len();
                    ctx.state().groups.install(groups);
                    ctx.state().groups.set_load_state(p, LoadState::Loaded);
                    if n > 0 {
                        tracing::info!(
                            partition = p,
                            groups = n,
                            ms = started.elapsed().as_millis() as u64,
                            "loaded consumer groups"
                        );
                    }
                }
                // The partition stays "loading": its groups answer COORDINATOR_LOAD_IN_PROGRESS
                // rather than pretend that their committed offsets are gone.
                Err(e) => tracing::error!(partition = p, error = %e, "cannot load consumer groups"),
            }
        }
        let mut last_expiry = std::time::Instant::now();
        loop {
            glommio::timer::sleep(Duration::from_millis(GROUP_TICK_MS)).await;
            if shared.shutdown.load(Ordering::SeqCst) {
                if let Some(ctx) = weak.upgrade() {
                    ctx.state().groups.fail_waiters(errors::NOT_COORDINATOR);
                }
                return;
            }
            let Some(ctx) = weak.upgrade() else { return };
            coordinator::tick(&ctx).await;
            let every =
                Duration::from_millis(ctx.state().config.offsets_retention_check_interval_ms);
            if last_expiry.elapsed() >= every {
                last_expiry = std::time::Instant::now();
                coordinator::expire_offsets(&ctx).await;
            }
        }
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_map_to_partitions_as_kafka_maps_them() {
        // Java: "".hashCode() == 0, "a".hashCode() == 97, "my-group".hashCode() == -1906497762
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("my-group"), -1_906_497_762);
        assert_eq!(partition_for("my-group", 50), 12);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE: Kafka's Utils.abs gives 0.
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        // Negative hashes use the absolute value.
        let h = java_string_hash("console-consumer-12345");
        assert_eq!(
            partition_for("console-consumer-12345", 50),
            h.unsigned_abs() as i32 % 50
        );
    }

    #[test]
    fn subscription_topics_are_read_from_consumer_metadata() {
        let mut m = vec![0u8, 1, 0, 0, 0, 2];
        for t in ["a", "bc"] {
            m.extend_from_slice(&(t.len() as i16).to_be_bytes());
            m.extend_from_slice(t.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(
            subscription_topics(&m),
            vec!["a".to_string(), "bc".to_string()]
        );
        assert!(subscription_topics(&m[..7]).is_empty());
    }
}
