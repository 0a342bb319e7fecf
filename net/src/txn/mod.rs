//! Transactions: the transaction coordinator of transactional producers.
//!
//! Every transactional id maps to one partition of the internal compacted topic
//! `__transaction_state` by `abs(javaStringHashCode(transactional_id)) % partition_count`, as
//! Kafka maps it, so an id lands on the same partition in Kafka and here. That partition's
//! home shard coordinates the id: it alone holds its state ([`coordinator::TxnShard`]), writes
//! every change to the partition in Kafka's record formats ([`records`]) with fdatasync before
//! answering, and reads them back at start-up ([`load`]). The decisions themselves are the pure
//! state machine in [`state`]. Handlers on any shard reach the coordinator with
//! [`on_coordinator`] through the mesh; nothing is shared between shards.
//!
//! Start-up: the control shard creates `__transaction_state` if it is missing before the broker
//! reports ready; then every shard loads its partitions of it in the background, answering
//! COORDINATOR_LOAD_IN_PROGRESS for their ids until the load is done, and completes the
//! transactions the log left prepared (their markers are written again: a marker written twice
//! is harmless, one never written would leave consumers stalled). One timer loop per shard
//! aborts transactions past their timeout and removes ids idle past
//! `transactional.id.expiration.ms`.

pub mod coordinator;
pub mod load;
pub mod records;
pub mod state;

use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::types::TopicPartition;

use crate::broker::BrokerCtx;
use crate::cluster;
use crate::errors;
use crate::groups::coordinator::LoadState;
use crate::server::ListenerShared;
use crate::topics::TopicError;
use coordinator::TxnListing;

/// The internal topic holding transaction state.
pub const TXN_TOPIC: &str = "__transaction_state";

/// The `__transaction_state` partition of a transactional id (the same hash and rule as
/// Kafka's, which groups use too).
pub fn partition_for(transactional_id: &str, partition_count: i32) -> i32 {
    crate::groups::partition_for(transactional_id, partition_count)
}

/// The partition count of `__transaction_state` in this shard's snapshot.
pub fn txn_partition_count(ctx: &BrokerCtx) -> Option<i32> {
    ctx.state()
        .cluster
        .topics()
        .topic(TXN_TOPIC)
        .map(|m| m.partitions)
}

/// Runs `work` on the coordinator shard of `transactional_id` with the id's partition index,
/// once that shard has loaded the partition. Errors are Kafka codes for the whole request:
/// COORDINATOR_NOT_AVAILABLE (no transaction topic or shard unreachable), NOT_COORDINATOR
/// (routing disagreed), COORDINATOR_LOAD_IN_PROGRESS (still loading).
///
/// Runs on the calling shard; `work` runs on the coordinator shard.
pub async fn on_coordinator<R, F, Fut>(
    ctx: &Rc<BrokerCtx>,
    transactional_id: &str,
    work: F,
) -> Result<R, i16>
where
    F: FnOnce(Rc<BrokerCtx>, i32) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    let snapshot = ctx.state().cluster.topics();
    let Some(meta) = snapshot.topic(TXN_TOPIC) else {
        return Err(errors::COORDINATOR_NOT_AVAILABLE);
    };
    let partition = partition_for(transactional_id, meta.partitions);
    let tp = TopicPartition::new(TXN_TOPIC, partition);
    let Some(home) = snapshot.shard_for(&tp) else {
        return Err(errors::COORDINATOR_NOT_AVAILABLE);
    };
    ctx.call(home, move |home_ctx: Rc<BrokerCtx>| async move {
        match home_ctx.state().txns.load_state(partition) {
            // A task of its own, which runs to its end even when the caller gives up (its
            // connection closed, dropping the handler, which on the coordinator's own shard
            // runs this inline): a transition left half-way would keep its id pending, and
            // refused CONCURRENT_TRANSACTIONS, until a restart.
            Some(LoadState::Loaded) => glommio::spawn_local(work(home_ctx.clone(), partition))
                .detach()
                .await
                .ok_or(errors::COORDINATOR_NOT_AVAILABLE),
            Some(LoadState::Loading) => Err(errors::COORDINATOR_LOAD_IN_PROGRESS),
            None if home_ctx.state().cluster.slot(&tp).is_some() => {
                Err(errors::COORDINATOR_LOAD_IN_PROGRESS)
            }
            None => Err(errors::NOT_COORDINATOR),
        }
    })
    .await
    .map_err(|_| errors::COORDINATOR_NOT_AVAILABLE)?
}

/// Every transactional id of the broker, from every coordinator shard, sorted by id; with
/// the error of a shard that is still loading (clients retry ListTransactions on it).
///
/// Runs on the calling shard.
pub async fn list_transactions(ctx: &Rc<BrokerCtx>) -> Result<Vec<TxnListing>, i16> {
    let results = ctx
        .call_all(|shard: Rc<BrokerCtx>| async move {
            let loading = shard.state().txns.loading();
            (loading, shard.state().txns.listing())
        })
        .await;
    let mut out = Vec::new();
    for r in results {
        let (loading, listing) = r.map_err(|_| errors::COORDINATOR_NOT_AVAILABLE)?;
        if loading {
            return Err(errors::COORDINATOR_LOAD_IN_PROGRESS);
        }
        out.extend(listing);
    }
    out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    Ok(out)
}

/// One transactional id as DescribeTransactions reports it; TRANSACTIONAL_ID_NOT_FOUND when
/// the coordinator does not know it.
///
/// Runs on the calling shard.
pub async fn describe_transaction(
    ctx: &Rc<BrokerCtx>,
    transactional_id: &str,
) -> Result<TxnListing, i16> {
    let id = transactional_id.to_string();
    on_coordinator(ctx, transactional_id, move |home, _| async move {
        home.state().txns.describe(&id)
    })
    .await?
    .ok_or(errors::TRANSACTIONAL_ID_NOT_FOUND)
}

/// The error an older client understands for a fenced producer: PRODUCER_FENCED exists from
/// `fenced_from` of the request's API on; before, Kafka answers INVALID_PRODUCER_EPOCH.
pub fn fenced_for_version(code: i16, version: i16, fenced_from: i16) -> i16 {
    if code == errors::PRODUCER_FENCED && version < fenced_from {
        errors::INVALID_PRODUCER_EPOCH
    } else {
        code
    }
}

/// Checks the partitions a transaction wants to add against the topics that exist. `Ok` with
/// the partitions when all exist; otherwise, per partition, UNKNOWN_TOPIC_OR_PARTITION for
/// the missing ones and OPERATION_NOT_ATTEMPTED for the rest, as Kafka answers.
#[allow(clippy::type_complexity)]
pub fn known_partitions(
    ctx: &BrokerCtx,
    wanted: &[(String, i32)],
) -> Result<Vec<(String, i32)>, Vec<(String, i32, i16)>> {
    let snapshot = ctx.state().cluster.topics();
    let exists = |t: &str, p: i32| {
        snapshot
            .topic(t)
            .is_some_and(|m| (0..m.partitions).contains(&p))
    };
    if wanted.iter().all(|(t, p)| exists(t, *p)) {
        return Ok(wanted.to_vec());
    }
    Err(wanted
        .iter()
        .map(|(t, p)| {
            let code = if exists(t, *p) {
                errors::OPERATION_NOT_ATTEMPTED
            } else {
                errors::UNKNOWN_TOPIC_OR_PARTITION
            };
            (t.clone(), *p, code)
        })
        .collect())
}

/// One partition of a Produce request that carries a transactional batch: the request's slot
/// for it, the partition, and the batch's producer id and epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducedTxnBatch {
    pub slot: usize,
    pub topic: String,
    pub partition: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// Checks, before a Produce appends transactional batches, that their partitions are in the
/// producer's ongoing transaction (KIP-890 part 1, as Kafka 3.6+ brokers check): a batch for a
/// partition the transaction never added, or for a transaction that already ended (a produce
/// still in flight when the client aborted), would open a transaction on the partition that no
/// marker ever ends and stall its last stable offset for good. Clients add a partition
/// (AddPartitionsToTxn) and wait for the answer before they produce to it, so well-behaved
/// producers never see these errors. Returns the refused slots with Kafka's codes for
/// producers: INVALID_TXN_STATE for a partition not in the transaction; NOT_ENOUGH_REPLICAS
/// (retriable without a metadata refresh, which older clients need) while the coordinator is
/// busy ending the transaction, loading or unreachable; producer mismatches as the coordinator
/// answers them (INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED).
///
/// Runs on the calling shard; the check runs on the coordinator shard (one call per producer
/// of the request, normally one).
pub async fn verify_produce(
    ctx: &Rc<BrokerCtx>,
    transactional_id: &str,
    batches: Vec<ProducedTxnBatch>,
) -> Vec<(usize, i16)> {
    let mut by_producer: BTreeMap<(i64, i16), Vec<ProducedTxnBatch>> = BTreeMap::new();
    for b in batches {
        by_producer
            .entry((b.producer_id, b.producer_epoch))
            .or_default()
            .push(b);
    }
    let mut refused = Vec::new();
    for ((producer_id, producer_epoch), batches) in by_producer {
        let partitions: Vec<(String, i32)> = batches
            .iter()
            .map(|b| (b.topic.clone(), b.partition))
            .collect();
        let id = transactional_id.to_string();
        let outcome = on_coordinator(ctx, transactional_id, move |home, _| async move {
            coordinator::verify_partitions(&home, &id, producer_id, producer_epoch, &partitions)
        })
        .await
        .and_then(|r| r);
        let codes = match outcome {
            Ok(codes) => codes,
            Err(
                errors::CONCURRENT_TRANSACTIONS
                | errors::COORDINATOR_LOAD_IN_PROGRESS
                | errors::COORDINATOR_NOT_AVAILABLE
                | errors::NOT_COORDINATOR,
            ) => vec![errors::NOT_ENOUGH_REPLICAS; batches.len()],
            Err(code) => vec![code; batches.len()],
        };
        refused.extend(
            batches
                .iter()
                .zip(codes)
                .filter(|(_, code)| *code != errors::NONE)
                .map(|(b, code)| (b.slot, code)),
        );
    }
    refused
}

/// Creates `__transaction_state` if it does not exist: internal, compacted,
/// `transaction.state.log.num.partitions` partitions.
///
/// Runs on any shard; the change runs on the control shard.
pub async fn ensure_txn_topic(ctx: &Rc<BrokerCtx>) -> Result<(), TopicError> {
    if txn_partition_count(ctx).is_some() {
        return Ok(());
    }
    let partitions = ctx.state().config.transaction_state_log_num_partitions;
    // Kafka's `transaction.state.log.segment.bytes`, set on the topic it creates.
    let segment_bytes = ctx.state().config.transaction_state_log_segment_bytes;
    cluster::change_topics(ctx, move |store| {
        if store.current().topic(TXN_TOPIC).is_some() {
            return Ok(store.snapshot());
        }
        let mut configs = BTreeMap::new();
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        configs.insert("segment.bytes".to_string(), segment_bytes.to_string());
        store.create(TXN_TOPIC, partitions, configs, true)
    })
    .await?;
    Ok(())
}

/// Loads this shard's partitions of `__transaction_state`, completes the transactions left
/// prepared, and then runs its transaction timers until shutdown. Spawned once per shard at
/// start-up.
///
/// Runs on its shard.
pub fn start(ctx: &Rc<BrokerCtx>, shared: Arc<ListenerShared>) {
    let weak = Rc::downgrade(ctx);
    glommio::spawn_local(async move {
        // Every partition homed here is "loading" before any is read, so that no request
        // finds an id missing that the log still holds.
        let Some(partitions) =
            cluster::home_partitions_of_internal_topic(&weak, &shared, TXN_TOPIC).await
        else {
            return;
        };
        if let Some(ctx) = weak.upgrade() {
            for p in &partitions {
                ctx.state().txns.set_load_state(*p, LoadState::Loading);
            }
        }
        for p in partitions {
            let tp = TopicPartition::new(TXN_TOPIC, p);
            if cluster::wait_until_open(&weak, &shared, &tp)
                .await
                .is_none()
            {
                return;
            }
            let Some(ctx) = weak.upgrade() else { return };
            let started = Instant::now();
            match load::load_partition(&ctx, p).await {
                Ok(txns) => {
                    let n = txns.len();
                    ctx.state().txns.set_load_state(p, LoadState::Loaded);
                    coordinator::install(&ctx, p, txns);
                    if n > 0 {
                        tracing::info!(
                            partition = p,
                            transactional_ids = n,
                            ms = started.elapsed().as_millis() as u64,
                            "loaded transaction state"
                        );
                    }
                }
                // The partition stays "loading": its ids answer COORDINATOR_LOAD_IN_PROGRESS
                // rather than pretend that their transactions are gone.
                Err(e) => {
                    tracing::error!(partition = p, error = %e, "cannot load transaction state")
                }
            }
        }
        let (abort_every, expire_every) = {
            let Some(ctx) = weak.upgrade() else { return };
            let c = &ctx.state().config;
            (
                Duration::from_millis(
                    c.transaction_abort_timed_out_transaction_cleanup_interval_ms,
                ),
                Duration::from_millis(c.transaction_remove_expired_transaction_cleanup_interval_ms),
            )
        };
        let tick = abort_every
            .min(expire_every)
            .min(Duration::from_millis(100));
        let mut last_abort = Instant::now();
        let mut last_expiry = Instant::now();
        loop {
            glommio::timer::sleep(tick).await;
            let Some(ctx) = weak.upgrade() else { return };
            if shared.shutdown.load(Ordering::SeqCst) {
                ctx.state().txns.stop();
                return;
            }
            if last_abort.elapsed() >= abort_every {
                last_abort = Instant::now();
                coordinator::abort_timed_out(&ctx).await;
            }
            if last_expiry.elapsed() >= expire_every {
                last_expiry = Instant::now();
                coordinator::expire_ids(&ctx).await;
            }
        }
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactional_ids_map_to_partitions_as_kafka_maps_them() {
        // Java: "my-txn".hashCode() == -1061187895, abs % 50 == 45.
        assert_eq!(crate::groups::java_string_hash("my-txn"), -1_061_187_895);
        assert_eq!(partition_for("my-txn", 50), 45);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
    }
}
