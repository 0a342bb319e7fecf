//! The transaction coordinator of one shard: the transactional ids whose `__transaction_state`
//! partition this shard is the home of, their persistence, their markers and their timers.
//!
//! Every function here runs on the coordinator shard (the handlers reach it through
//! `txn::on_coordinator`). Changes follow one pattern: a `prepare_*` of the pure
//! [`TxnMetadata`] marks the transition pending, the new state is written to the id's
//! partition with fdatasync, then the transition completes (or is dropped if the write
//! failed). EndTxn answers once its PrepareCommit/PrepareAbort is durable, as Kafka does; the
//! markers are then written by a task of this shard, retried until every partition has one,
//! and the CompleteCommit/CompleteAbort follows. The state lives in `RefCell`s that are never
//! borrowed across an await.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_engine::builder::BatchBuilder;
use sluice_engine::compression::Codec;
use sluice_engine::durability::Durability;
use sluice_engine::partition::{now_ms, Partition};
use sluice_engine::types::TopicPartition;

use crate::broker::BrokerCtx;
use crate::cluster::Slot;
use crate::errors;
use crate::groups::coordinator::LoadState;
use crate::txn::records::{self, TxnValue};
use crate::txn::state::{EndStep, InitPlan, TxnData, TxnMetadata, TxnState};
use crate::txn::TXN_TOPIC;
use sluice_engine::order::{AppendOrder, Turn};

/// The coordinator epoch markers carry: a single node never changes the leader of its
/// `__transaction_state` partitions.
pub const COORDINATOR_EPOCH: i32 = 0;
/// First wait before markers that failed are written again; doubles up to the maximum.
const MARKER_RETRY_MS: u64 = 50;
const MARKER_RETRY_MS_MAX: u64 = 2_000;
/// How long AddPartitionsToTxn, AddOffsetsToTxn and InitProducerId wait for the id's previous
/// transaction to finish (its markers and Complete state) before they answer
/// CONCURRENT_TRANSACTIONS. Markers normally take a few fdatasyncs; waiting here saves the
/// client a retry, and spares librdkafka a race: a transaction it aborts while its first
/// AddPartitionsToTxn was refused CONCURRENT_TRANSACTIONS still gets an EndTxn(abort), which
/// the previous transaction's CompleteCommit state would have to refuse INVALID_TXN_STATE, a
/// fatal error for that producer.
const SETTLE_WAIT_MS: u64 = 1_000;
const SETTLE_POLL_MS: u64 = 2;

/// The coordinator state of one shard.
///
/// Owned by its shard; never crosses cores.
#[derive(Default)]
pub struct TxnShard {
    txns: RefCell<HashMap<String, TxnMetadata>>,
    /// The `__transaction_state` partitions this shard coordinates, by partition index.
    partitions: RefCell<HashMap<i32, LoadState>>,
    /// Set once the broker stops: marker tasks give up (the log keeps the Prepare state,
    /// and the next start completes it).
    stopping: Cell<bool>,
    /// Per transactional id with requests in progress, their order (see [`in_turn`]).
    orders: RefCell<HashMap<String, Rc<AppendOrder>>>,
}

/// A transactional id as DescribeTransactions and ListTransactions see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnListing {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub state: TxnState,
    pub timeout_ms: i32,
    pub start_ms: i64,
    pub partitions: Vec<(String, i32)>,
}

impl TxnShard {
    /// The load state of one of this shard's partitions (`None`: not coordinated here).
    pub fn load_state(&self, partition: i32) -> Option<LoadState> {
        self.partitions.borrow().get(&partition).copied()
    }

    pub(crate) fn set_load_state(&self, partition: i32, state: LoadState) {
        self.partitions.borrow_mut().insert(partition, state);
    }

    /// Whether any partition of this shard is still being loaded.
    pub fn loading(&self) -> bool {
        self.partitions
            .borrow()
            .values()
            .any(|s| *s == LoadState::Loading)
    }

    pub(crate) fn stop(&self) {
        self.stopping.set(true);
    }

    /// Every transactional id of this shard (none that is being removed).
    pub fn listing(&self) -> Vec<TxnListing> {
        self.txns
            .borrow()
            .values()
            .filter(|m| m.state() != TxnState::Dead && m.pending != Some(TxnState::Dead))
            .map(listing)
            .collect()
    }

    /// One transactional id, if this shard has it.
    pub fn describe(&self, transactional_id: &str) -> Option<TxnListing> {
        self.txns
            .borrow()
            .get(transactional_id)
            .filter(|m| m.state() != TxnState::Dead && m.pending != Some(TxnState::Dead))
            .map(listing)
    }
}

fn listing(m: &TxnMetadata) -> TxnListing {
    TxnListing {
        transactional_id: m.transactional_id.clone(),
        producer_id: m.data.producer_id,
        producer_epoch: m.data.producer_epoch,
        state: m.state(),
        timeout_ms: m.data.timeout_ms,
        start_ms: m.data.start_ms,
        partitions: m.data.partitions.iter().cloned().collect(),
    }
}

/// Installs ids rebuilt from partition `partition` of the log (start-up) and starts the
/// markers of the transactions the log left prepared.
///
/// Runs on the coordinator shard.
pub(crate) fn install(ctx: &Rc<BrokerCtx>, partition: i32, txns: Vec<TxnMetadata>) {
    let mut prepared = Vec::new();
    {
        let mut map = ctx.state().txns.txns.borrow_mut();
        for m in txns {
            if matches!(m.state(), TxnState::PrepareCommit | TxnState::PrepareAbort) {
                prepared.push(m.transactional_id.clone());
            }
            map.insert(m.transactional_id.clone(), m);
        }
    }
    for id in prepared {
        tracing::info!(transactional_id = %id, partition, "completing a transaction the log left prepared");
        spawn_markers(ctx, id, partition);
    }
}

/// Handles InitProducerId for a transactional id: the producer id and epoch to use.
///
/// Runs on the coordinator shard.
pub async fn init_producer_id(
    ctx: &Rc<BrokerCtx>,
    partition: i32,
    transactional_id: &str,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
) -> Result<(i64, i16), i16> {
    let _turn = in_turn(ctx, transactional_id).await;
    init_producer_id_in_turn(ctx, partition, transactional_id, timeout_ms, expected).await
}

/// Handles AddPartitionsToTxn (and AddOffsetsToTxn's offsets partition): one error for all
/// of `partitions`.
///
/// Runs on the coordinator shard.
pub async fn add_partitions(
    ctx: &Rc<BrokerCtx>,
    partition: i32,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[(String, i32)],
) -> i16 {
    let _turn = in_turn(ctx, transactional_id).await;
    add_partitions_in_turn(
        ctx,
        partition,
        transactional_id,
        producer_id,
        producer_epoch,
        partitions,
    )
    .await
}

/// Handles EndTxn: answers once the PrepareCommit/PrepareAbort is durable; the markers and
/// the Complete state follow in the background.
///
/// Runs on the coordinator shard.
pub async fn end_txn(
    ctx: &Rc<BrokerCtx>,
    partition: i32,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
) -> i16 {
    let _turn = in_turn(ctx, transactional_id).await;
    end_txn_in_turn(
        ctx,
        partition,
        transactional_id,
        producer_id,
        producer_epoch,
        commit,
    )
    .await
}

/// The turn of one client request on a transactional id. Requests on one id are served one
/// at a time, in the order they reached this shard, as Kafka serves a connection's requests
/// in order: a client that pipelines AddPartitionsToTxn and EndTxn (librdkafka aborting while
/// its partitions are being registered) gets them applied in that order, even when the first
/// waits for the previous transaction's markers.
///
/// Runs on the coordinator shard.
async fn in_turn<'a>(ctx: &'a Rc<BrokerCtx>, transactional_id: &str) -> InTurn<'a> {
    let shard = &ctx.state().txns;
    // The place is taken synchronously, on arrival.
    let ticket = shard
        .orders
        .borrow_mut()
        .entry(transactional_id.to_string())
        .or_default()
        .ticket();
    let mut guard = InTurn {
        shard,
        transactional_id: transactional_id.to_string(),
        turn: None,
    };
    guard.turn = Some(ticket.turn().await);
    guard
}

/// Ends a request's turn when dropped, and forgets the order of an id nobody waits on.
struct InTurn<'a> {
    shard: &'a TxnShard,
    transactional_id: String,
    turn: Option<Turn>,
}

impl Drop for InTurn<'_> {
    fn drop(&mut self) {
        self.turn.take();
        let mut orders = self.shard.orders.borrow_mut();
        if orders
            .get(&self.transactional_id)
            .is_some_and(|o| o.queued() == 0)
        {
            orders.remove(&self.transactional_id);
        }
    }
}

/// InitProducerId in its turn.
async fn init_producer_id_in_turn(
    ctx: &Rc<BrokerCtx>,
    partition: i32,
    transactional_id: &str,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
) -> Result<(i64, i16), i16> {
    let shard = &ctx.state().txns;
    if !shard.txns.borrow().contains_key(transactional_id) {
        let id = fresh_producer_id(ctx).await?;
        shard
            .txns
            .borrow_mut()
            .entry(transactional_id.to_string())
            .or_insert_with(|| TxnMetadata::new(transactional_id, id, timeout_ms, now_ms()));
    }
    settle(ctx, transactional_id).await;
    let plan = with_txn(ctx, transactional_id, |m| m.plan_init(expected))?;
    let next = match plan {
        InitPlan::FenceOngoing => {
            // Abort the ongoing transaction with a bumped epoch; the client retries and then
            // gets an epoch above the fenced one.
            let next = with_txn(ctx, transactional_id, |m| m.prepare_fence_abort(now_ms()))?;
            match write_then_apply(ctx, partition, transactional_id, next).await {
                Ok(()) => {
                    spawn_markers(ctx, transactional_id.to_string(), partition);
                    return Err(errors::CONCURRENT_TRANSACTIONS);
                }
                Err(code) => return Err(code),
            }
        }
        InitPlan::RotateProducerId => {
            let id = fresh_producer_id(ctx).await?;
            with_txn(ctx, transactional_id, |m| {
                m.prepare_init(timeout_ms, expected, Some(id), now_ms())
            })?
        }
        InitPlan::BumpEpoch => with_txn(ctx, transactional_id, |m| {
            m.prepare_init(timeout_ms, expected, None, now_ms())
        })?,
    };
    let answer = (next.producer_id, next.producer_epoch);
    write_then_apply(ctx, partition, transactional_id, next).await?;
    tracing::debug!(
        transactional_id,
        producer_id = answer.0,
        epoch = answer.1,
        "initialised a transactional producer"
    );
    Ok(answer)
}

/// AddPartitionsToTxn in its turn.
async fn add_partitions_in_turn(
    ctx: &Rc<BrokerCtx>,
    partition: i32,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[(String, i32)],
) -> i16 {
    settle(ctx, transactional_id).await;
    let prepared = with_txn(ctx, transactional_id, |m| {
        m.prepare_add_partitions(producer_id, producer_epoch, partitions, now_ms())
    });
    match prepared {
        Err(code) => code,
        Ok(None) => errors::NONE,
        Ok(Some(next)) => match write_then_apply(ctx, partition, transactional_id, next).await {
            Ok(()) => errors::NONE,
            Err(code) => code,
        },
    }
}

/// Handles the verify-only form of AddPartitionsToTxn: per partition, whether it is in the
/// ongoing transaction.
///
/// Runs on the coordinator shard.
pub fn verify_partitions(
    ctx: &Rc<BrokerCtx>,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[(String, i32)],
) -> Result<Vec<i16>, i16> {
    with_txn(ctx, transactional_id, |m| {
        m.verify_partitions(producer_id, producer_epoch, partitions)
    })
}

/// EndTxn in its turn.
async fn end_txn_in_turn(
    ctx: &Rc<BrokerCtx>,
    partition: i32,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
) -> i16 {
    let step = with_txn(ctx, transactional_id, |m| {
        m.prepare_end(producer_id, producer_epoch, commit, now_ms())
    });
    match step {
        Err(code) => code,
        Ok(EndStep::AlreadyDone) => errors::NONE,
        Ok(EndStep::Write(next)) => {
            match write_then_apply(ctx, partition, transactional_id, next).await {
                Ok(()) => {
                    spawn_markers(ctx, transactional_id.to_string(), partition);
                    errors::NONE
                }
                Err(code) => code,
            }
        }
    }
}

/// Aborts, with an epoch bump that fences their producers, the transactions of this shard
/// that have been open longer than their timeout.
///
/// Runs on the coordinator shard.
pub async fn abort_timed_out(ctx: &Rc<BrokerCtx>) {
    let now = now_ms();
    let due: Vec<(String, i64)> = ctx
        .state()
        .txns
        .txns
        .borrow()
        .values()
        .filter(|m| m.timed_out(now))
        .map(|m| (m.transactional_id.clone(), m.data.producer_id))
        .collect();
    let Some(count) = super::txn_partition_count(ctx) else {
        return;
    };
    for (id, producer_id) in due {
        // Earlier aborts were awaited: look at this id again as it is now (`Err(NONE)`: it
        // ended or moved on meanwhile, nothing to do).
        let prepared = with_txn(ctx, &id, |m| {
            if m.data.producer_id != producer_id || !m.timed_out(now_ms()) {
                return Err(errors::NONE);
            }
            m.prepare_fence_abort(now_ms())
        });
        let Ok(next) = prepared else { continue };
        let partition = super::partition_for(&id, count);
        tracing::info!(
            transactional_id = %id,
            producer_id,
            epoch = next.producer_epoch,
            "aborting a transaction open longer than its timeout"
        );
        match write_then_apply(ctx, partition, &id, next).await {
            Ok(()) => spawn_markers(ctx, id, partition),
            Err(code) => {
                tracing::warn!(transactional_id = %id, code, "cannot abort a timed-out transaction")
            }
        }
    }
}

/// Removes the transactional ids idle for `transactional.id.expiration.ms`, with tombstones.
///
/// Runs on the coordinator shard.
pub async fn expire_ids(ctx: &Rc<BrokerCtx>) {
    let expiration_ms = ctx.state().config.transactional_id_expiration_ms as i64;
    let now = now_ms();
    let Some(count) = super::txn_partition_count(ctx) else {
        return;
    };
    let due: Vec<String> = ctx
        .state()
        .txns
        .txns
        .borrow()
        .values()
        .filter(|m| m.expired(now, expiration_ms))
        .map(|m| m.transactional_id.clone())
        .collect();
    for id in due {
        // Used again meanwhile (`Err(NONE)`): it stays.
        let prepared = with_txn(ctx, &id, |m| {
            if !m.expired(now_ms(), expiration_ms) {
                return Err(errors::NONE);
            }
            m.prepare_dead()
        });
        if prepared.is_err() {
            continue;
        }
        let partition = super::partition_for(&id, count);
        let written = append(ctx, partition, vec![(records::key(&id), None)]).await;
        let mut txns = ctx.state().txns.txns.borrow_mut();
        match written {
            Ok(()) => {
                txns.remove(&id);
                tracing::info!(transactional_id = %id, "expired an idle transactional id");
            }
            Err(code) => {
                if let Some(m) = txns.get_mut(&id) {
                    m.abort_transition();
                }
                tracing::warn!(transactional_id = %id, code, "cannot expire a transactional id");
            }
        }
    }
}

/// Waits, up to [`SETTLE_WAIT_MS`], while `transactional_id` has a state write in flight or a
/// transaction whose markers are still being written.
///
/// Runs on the coordinator shard.
async fn settle(ctx: &Rc<BrokerCtx>, transactional_id: &str) {
    let deadline = Instant::now() + Duration::from_millis(SETTLE_WAIT_MS);
    loop {
        let busy = ctx
            .state()
            .txns
            .txns
            .borrow()
            .get(transactional_id)
            .is_some_and(|m| {
                m.pending.is_some()
                    || matches!(m.state(), TxnState::PrepareCommit | TxnState::PrepareAbort)
            });
        if !busy || Instant::now() >= deadline || ctx.state().txns.stopping.get() {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(SETTLE_POLL_MS)).await;
    }
}

/// Runs `f` on the metadata of `transactional_id`; INVALID_PRODUCER_ID_MAPPING when the id
/// is unknown (as Kafka answers every request but InitProducerId).
fn with_txn<R>(
    ctx: &Rc<BrokerCtx>,
    transactional_id: &str,
    f: impl FnOnce(&mut TxnMetadata) -> Result<R, i16>,
) -> Result<R, i16> {
    let mut txns = ctx.state().txns.txns.borrow_mut();
    match txns.get_mut(transactional_id) {
        Some(m) if m.state() != TxnState::Dead => f(m),
        _ => Err(errors::INVALID_PRODUCER_ID_MAPPING),
    }
}

async fn fresh_producer_id(ctx: &Rc<BrokerCtx>) -> Result<i64, i16> {
    crate::producer_ids::next_producer_id(ctx)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot hand out a producer id");
            errors::COORDINATOR_NOT_AVAILABLE
        })
}

/// Writes the pending transition `next` of `transactional_id` durably and makes it current;
/// on failure the transition is dropped.
///
/// Runs on the coordinator shard.
async fn write_then_apply(
    ctx: &Rc<BrokerCtx>,
    partition: i32,
    transactional_id: &str,
    next: TxnData,
) -> Result<(), i16> {
    let value = records::value(&stored(&next), records::VALUE_VERSION);
    let written = append(
        ctx,
        partition,
        vec![(records::key(transactional_id), Some(value))],
    )
    .await;
    let mut txns = ctx.state().txns.txns.borrow_mut();
    let Some(m) = txns.get_mut(transactional_id) else {
        return Err(errors::NOT_COORDINATOR);
    };
    match written {
        Ok(()) => {
            m.complete_transition(next);
            Ok(())
        }
        Err(code) => {
            m.abort_transition();
            Err(code)
        }
    }
}

/// The stored form of a transaction state.
pub fn stored(d: &TxnData) -> TxnValue {
    let mut partitions: Vec<(String, Vec<i32>)> = Vec::new();
    for (topic, p) in &d.partitions {
        match partitions.last_mut() {
            Some((t, ps)) if t == topic => ps.push(*p),
            _ => partitions.push((topic.clone(), vec![*p])),
        }
    }
    TxnValue {
        producer_id: d.producer_id,
        previous_producer_id: d.last_producer_id,
        next_producer_id: -1,
        producer_epoch: d.producer_epoch,
        timeout_ms: d.timeout_ms,
        status: d.state.id(),
        partitions,
        last_update_ms: d.last_update_ms,
        start_ms: d.start_ms,
        client_transaction_version: 0,
    }
}

/// Writes the markers of `transactional_id`'s prepared transaction to every partition still
/// without one, retrying failures with backoff, then writes its Complete state. A partition
/// whose topic was deleted needs no marker. Spawned once per PrepareCommit/PrepareAbort.
///
/// Runs on the coordinator shard.
fn spawn_markers(ctx: &Rc<BrokerCtx>, transactional_id: String, partition: i32) {
    let weak = Rc::downgrade(ctx);
    glommio::spawn_local(async move {
        send_markers(weak, transactional_id, partition).await;
    })
    .detach();
}

async fn send_markers(weak: Weak<BrokerCtx>, id: String, partition: i32) {
    let mut wait = MARKER_RETRY_MS;
    loop {
        let Some(ctx) = weak.upgrade() else { return };
        if ctx.state().txns.stopping.get() {
            return;
        }
        let job = {
            let txns = ctx.state().txns.txns.borrow();
            let Some(m) = txns.get(&id) else { return };
            let commit = match m.state() {
                TxnState::PrepareCommit => true,
                TxnState::PrepareAbort => false,
                _ => return,
            };
            (
                m.data.producer_id,
                m.data.producer_epoch,
                commit,
                m.data.partitions.iter().cloned().collect::<Vec<_>>(),
            )
        };
        let (producer_id, epoch, commit, wanted) = job;
        // Partitions of deleted topics (or shrunk away) get no marker.
        let snapshot = ctx.state().cluster.topics();
        let (live, gone): (Vec<_>, Vec<_>) = wanted.into_iter().partition(|(t, p)| {
            snapshot
                .topic(t)
                .is_some_and(|meta| *p >= 0 && *p < meta.partitions)
        });
        let mut done: Vec<(String, i32)> = gone;
        let mut failed = 0usize;
        if !live.is_empty() {
            let results = crate::txn_markers::write_markers(
                &ctx,
                producer_id,
                epoch,
                commit,
                COORDINATOR_EPOCH,
                &live,
            )
            .await;
            for (topic, p, code) in results {
                // A topic deleted while its marker was written needs none.
                let deleted = code == errors::UNKNOWN_TOPIC_OR_PARTITION
                    && ctx.state().cluster.topics().topic(&topic).is_none();
                if code == errors::NONE || deleted {
                    done.push((topic, p));
                } else {
                    failed += 1;
                    tracing::warn!(
                        transactional_id = %id,
                        topic = %topic,
                        partition = p,
                        code,
                        "cannot write a transaction marker yet; retrying"
                    );
                }
            }
        }
        {
            let mut txns = ctx.state().txns.txns.borrow_mut();
            let Some(m) = txns.get_mut(&id) else { return };
            for (t, p) in &done {
                m.marker_written(t, *p);
            }
            if failed == 0 && !m.data.partitions.is_empty() {
                // A result is missing for a partition: treat it as failed.
                failed = m.data.partitions.len();
            }
        }
        if failed == 0 {
            break;
        }
        drop(ctx);
        glommio::timer::sleep(Duration::from_millis(wait)).await;
        wait = (wait * 2).min(MARKER_RETRY_MS_MAX);
    }
    // Every marker is written: the transaction is complete once that is durable.
    let mut wait = MARKER_RETRY_MS;
    loop {
        let Some(ctx) = weak.upgrade() else { return };
        if ctx.state().txns.stopping.get() {
            return;
        }
        let Ok(next) = with_txn(&ctx, &id, |m| m.prepare_complete(now_ms())) else {
            return;
        };
        let state = next.state;
        match write_then_apply(&ctx, partition, &id, next).await {
            Ok(()) => {
                tracing::debug!(transactional_id = %id, state = state.name(), "transaction complete");
                return;
            }
            Err(code) => {
                tracing::warn!(transactional_id = %id, code, "cannot write a transaction's completion; retrying")
            }
        }
        drop(ctx);
        glommio::timer::sleep(Duration::from_millis(wait)).await;
        wait = (wait * 2).min(MARKER_RETRY_MS_MAX);
    }
}

/// Appends records (key, value or tombstone) to this shard's partition `partition` of
/// `__transaction_state` and waits for fdatasync.
///
/// Runs on the coordinator shard.
async fn append(
    ctx: &Rc<BrokerCtx>,
    partition: i32,
    entries: Vec<(Bytes, Option<Bytes>)>,
) -> Result<(), i16> {
    let p = txn_partition(ctx, partition)?;
    let now = now_ms();
    let mut builder = BatchBuilder::new(Codec::None);
    for (key, value) in &entries {
        builder
            .append(now, Some(key), value.as_deref(), &[])
            .map_err(|e| {
                tracing::error!(error = %e, "cannot build a __transaction_state batch");
                errors::UNKNOWN_SERVER_ERROR
            })?;
    }
    let batch = builder.build().map_err(|e| {
        tracing::error!(error = %e, "cannot build a __transaction_state batch");
        errors::UNKNOWN_SERVER_ERROR
    })?;
    p.append(batch, Durability::Synced).await.map_err(|e| {
        tracing::error!(partition, error = %e, "cannot write to __transaction_state");
        // Kafka answers a failed write of the transaction log with NOT_COORDINATOR /
        // COORDINATOR_NOT_AVAILABLE so that clients look the coordinator up again.
        errors::COORDINATOR_NOT_AVAILABLE
    })?;
    Ok(())
}

/// This shard's open partition `partition` of `__transaction_state`.
pub(crate) fn txn_partition(ctx: &Rc<BrokerCtx>, partition: i32) -> Result<Partition, i16> {
    let tp = TopicPartition::new(TXN_TOPIC, partition);
    match ctx.state().cluster.slot(&tp) {
        Some(Slot::Online(p)) => Ok(p),
        Some(Slot::Offline(_)) => Err(errors::COORDINATOR_NOT_AVAILABLE),
        None => Err(errors::NOT_COORDINATOR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn partitions_are_stored_grouped_by_topic() {
        let mut partitions = BTreeSet::new();
        for (t, p) in [("b", 0), ("a", 2), ("a", 0)] {
            partitions.insert((t.to_string(), p));
        }
        let d = TxnData {
            producer_id: 5,
            last_producer_id: -1,
            producer_epoch: 1,
            last_producer_epoch: -1,
            timeout_ms: 100,
            state: TxnState::Ongoing,
            partitions,
            start_ms: 1,
            last_update_ms: 2,
        };
        let v = stored(&d);
        assert_eq!(
            v.partitions,
            vec![("a".to_string(), vec![0, 2]), ("b".to_string(), vec![0])]
        );
        assert_eq!(v.status, 1);
    }
}
