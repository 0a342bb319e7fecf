//! The group coordinator of one shard: the groups whose `__consumer_offsets` partition this
//! shard is the home of, the JoinGroup/SyncGroup calls waiting on them, their timers, and
//! their persistence.
//!
//! Every function here runs on the coordinator shard (the handlers reach it through
//! `groups::on_coordinator`). Changes follow one pattern: apply an event to the pure
//! [`Group`] state machine, write what must be durable to the group's partition of
//! `__consumer_offsets` with fdatasync (offset commits before they are acknowledged, group
//! metadata before SyncGroup answers go out), then answer the waiting calls. The state lives in
//! `RefCell`s that are never borrowed across an await.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalSender};
use sluice_engine::builder::BatchBuilder;
use sluice_engine::compression::Codec;
use sluice_engine::durability::Durability;
use sluice_engine::error::Error as EngineError;
use sluice_engine::partition::{now_ms, Partition};
use sluice_engine::producer_state::NO_SEQUENCE;
use sluice_engine::types::TopicPartition;

use crate::broker::BrokerCtx;
use crate::cluster::Slot;
use crate::errors;
use crate::groups::records::{self, GroupValue, MemberValue, OffsetValue};
use crate::groups::state::{
    CommittedOffset, Effects, Group, GroupLimits, GroupState, JoinOutcome, JoinReply, JoinRequest,
    Leaving, SyncOutcome, SyncReply,
};
use crate::groups::OFFSETS_TOPIC;

/// Whether a `__consumer_offsets` partition of this shard has been read back yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadState {
    Loading,
    Loaded,
}

/// The coordinator state of one shard.
///
/// Owned by its shard; never crosses cores.
#[derive(Default)]
pub struct GroupsShard {
    groups: RefCell<HashMap<String, Group>>,
    /// The `__consumer_offsets` partitions this shard coordinates, by partition index.
    partitions: RefCell<HashMap<i32, LoadState>>,
    join_waiters: RefCell<HashMap<(String, String), LocalSender<JoinReply>>>,
    sync_waiters: RefCell<HashMap<(String, String), LocalSender<SyncReply>>>,
    /// Makes member ids unique on this shard.
    member_seq: Cell<u64>,
    /// The last transaction marker of each producer on each of this shard's offsets
    /// partitions, by (partition, producer id). A TxnOffsetCommit whose write completes after
    /// the marker that ends its transaction was applied finds the outcome here (see
    /// [`txn_commit`]).
    markers: RefCell<HashMap<(i32, i64), AppliedMarker>>,
    /// The groups that may hold offsets of each producer's open transaction, so that a marker
    /// visits those groups only (Kafka's open transactions by group). An id may outlive its
    /// group's pending offsets (a deleted group); the marker then finds nothing there.
    txn_groups: RefCell<HashMap<i64, HashSet<String>>>,
}

/// A transaction marker applied to the groups of an offsets partition.
#[derive(Clone, Copy, Debug)]
struct AppliedMarker {
    offset: i64,
    committed: bool,
    applied_ms: i64,
}

impl GroupsShard {
    /// The load state of one of this shard's offsets partitions (`None`: not coordinated
    /// here).
    pub fn load_state(&self, partition: i32) -> Option<LoadState> {
        self.partitions.borrow().get(&partition).copied()
    }

    pub(crate) fn set_load_state(&self, partition: i32, state: LoadState) {
        self.partitions.borrow_mut().insert(partition, state);
    }

    /// Installs groups rebuilt from the log (start-up).
    pub(crate) fn install(&self, groups: Vec<Group>) {
        let mut map = self.groups.borrow_mut();
        let mut txn_groups = self.txn_groups.borrow_mut();
        for g in groups {
            for producer_id in g.txn_offsets.keys() {
                txn_groups
                    .entry(*producer_id)
                    .or_default()
                    .insert(g.id.clone());
            }
            map.insert(g.id.clone(), g);
        }
    }

    /// A copy of a group, if it exists.
    pub fn group(&self, group_id: &str) -> Option<Group> {
        self.groups.borrow().get(group_id).cloned()
    }

    /// Every group of this shard with its protocol type and state.
    pub fn listing(&self) -> Vec<(String, String, GroupState)> {
        self.groups
            .borrow()
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect()
    }

    /// Answers every waiting JoinGroup and SyncGroup with `error` (the broker is stopping:
    /// clients look for the coordinator again instead of waiting on a closing connection).
    pub fn fail_waiters(&self, error: i16) {
        for ((_, member_id), tx) in self.join_waiters.borrow_mut().drain() {
            let _ = tx.try_send(JoinReply {
                error,
                generation: -1,
                member_id,
                ..JoinReply::default()
            });
        }
        for (_, tx) in self.sync_waiters.borrow_mut().drain() {
            let _ = tx.try_send(SyncReply {
                error,
                ..SyncReply::default()
            });
        }
    }

    /// A member id as Kafka makes them: the client id, a dash and a UUID.
    fn new_member_id(&self, shard: u32, client_id: &str) -> String {
        let seq = self.member_seq.get() + 1;
        self.member_seq.set(seq);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let hi = mix(nanos ^ u64::from(shard).rotate_left(48));
        let lo = mix(seq ^ nanos.rotate_left(17));
        format!(
            "{client_id}-{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xfff,
            0x8000 | (lo >> 48) & 0x3fff,
            lo & 0xffff_ffff_ffff
        )
    }
}

/// splitmix64: spreads the bits of a counter so ids do not look sequential.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The group settings of the broker config.
pub fn limits(ctx: &BrokerCtx) -> GroupLimits {
    let c = &ctx.state().config;
    GroupLimits {
        min_session_timeout_ms: c.group_min_session_timeout_ms,
        max_session_timeout_ms: c.group_max_session_timeout_ms,
        initial_rebalance_delay_ms: c.group_initial_rebalance_delay_ms as i64,
        max_size: c.group_max_size,
    }
}

/// Handles a JoinGroup; waits for the rebalance when the member must.
///
/// Runs on the coordinator shard.
pub async fn join(ctx: &Rc<BrokerCtx>, group_id: String, mut req: JoinRequest) -> JoinReply {
    let shard = &ctx.state().groups;
    let now = now_ms();
    let limits = limits(ctx);
    req.new_member_id = shard.new_member_id(ctx.id().0, &req.client_id);
    let (outcome, fx) = {
        let mut groups = shard.groups.borrow_mut();
        if !groups.contains_key(&group_id) {
            if !req.member_id.is_empty() {
                return JoinReply {
                    error: errors::UNKNOWN_MEMBER_ID,
                    generation: -1,
                    member_id: req.member_id,
                    ..JoinReply::default()
                };
            }
            groups.insert(
                group_id.clone(),
                Group::new(&group_id, limits.initial_rebalance_delay_ms, now),
            );
        }
        let Some(group) = groups.get_mut(&group_id) else {
            return JoinReply {
                error: errors::COORDINATOR_NOT_AVAILABLE,
                ..JoinReply::default()
            };
        };
        let (outcome, fx) = group.join(req, &limits, now);
        // A group that a refused first JoinGroup created stays empty: forget it again.
        if group.state == GroupState::Empty
            && !group.has_members()
            && group.pending.is_empty()
            && group.offsets.is_empty()
            && group.txn_offsets.is_empty()
            && group.generation == 0
        {
            groups.remove(&group_id);
        }
        (outcome, fx)
    };
    let waiter = match outcome {
        JoinOutcome::Reply(reply) => {
            finish(ctx, &group_id, fx).await;
            return reply;
        }
        JoinOutcome::Wait(member_id) => {
            let (tx, rx) = local_channel::new_bounded(1);
            shard
                .join_waiters
                .borrow_mut()
                .insert((group_id.clone(), member_id.clone()), tx);
            (rx, member_id)
        }
    };
    finish(ctx, &group_id, fx).await;
    let (rx, member_id) = waiter;
    match rx.recv().await {
        Some(reply) => reply,
        // The waiter was replaced by a newer JoinGroup of the same member.
        None => JoinReply {
            error: errors::UNKNOWN_MEMBER_ID,
            generation: -1,
            member_id,
            ..JoinReply::default()
        },
    }
}

/// A SyncGroup as the handler received it.
pub struct SyncCall {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

/// Handles a SyncGroup; the followers wait for the leader's assignment.
///
/// Runs on the coordinator shard.
pub async fn sync(ctx: &Rc<BrokerCtx>, call: SyncCall) -> SyncReply {
    let shard = &ctx.state().groups;
    let now = now_ms();
    let (outcome, fx) = {
        let mut groups = shard.groups.borrow_mut();
        let Some(group) = groups.get_mut(&call.group_id) else {
            return SyncReply {
                error: errors::UNKNOWN_MEMBER_ID,
                ..SyncReply::default()
            };
        };
        group.sync(
            &call.member_id,
            call.instance_id.as_deref(),
            call.generation,
            call.protocol_type.as_deref(),
            call.protocol_name.as_deref(),
            call.assignments,
            now,
        )
    };
    match outcome {
        SyncOutcome::Reply(reply) => {
            finish(ctx, &call.group_id, fx).await;
            reply
        }
        SyncOutcome::Wait => {
            let (tx, rx) = local_channel::new_bounded(1);
            shard
                .sync_waiters
                .borrow_mut()
                .insert((call.group_id.clone(), call.member_id.clone()), tx);
            finish(ctx, &call.group_id, fx).await;
            rx.recv().await.unwrap_or(SyncReply {
                error: errors::UNKNOWN_MEMBER_ID,
                ..SyncReply::default()
            })
        }
    }
}

/// Handles a Heartbeat.
///
/// Runs on the coordinator shard.
pub fn heartbeat(
    ctx: &Rc<BrokerCtx>,
    group_id: &str,
    member_id: &str,
    instance_id: Option<&str>,
    generation: i32,
) -> i16 {
    let mut groups = ctx.state().groups.groups.borrow_mut();
    match groups.get_mut(group_id) {
        Some(g) => g.heartbeat(member_id, instance_id, generation, now_ms()),
        None => errors::UNKNOWN_MEMBER_ID,
    }
}

/// Handles a LeaveGroup: each member's error, or one error for the whole request.
///
/// Runs on the coordinator shard.
pub async fn leave(
    ctx: &Rc<BrokerCtx>,
    group_id: &str,
    leaving: Vec<Leaving>,
) -> Result<Vec<i16>, i16> {
    let (codes, fx) = {
        let mut groups = ctx.state().groups.groups.borrow_mut();
        let Some(g) = groups.get_mut(group_id) else {
            return Err(errors::UNKNOWN_MEMBER_ID);
        };
        if g.state == GroupState::Dead {
            return Err(errors::COORDINATOR_NOT_AVAILABLE);
        }
        g.leave(&leaving, now_ms())
    };
    finish(ctx, group_id, fx).await;
    Ok(codes)
}

/// One partition's offset to commit.
pub struct OffsetToCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: CommittedOffset,
}

/// Handles an OffsetCommit whose partitions the handler already checked: validates the
/// member and generation, writes every offset durably, then makes them visible.
///
/// Runs on the coordinator shard.
pub async fn commit(
    ctx: &Rc<BrokerCtx>,
    partition: i32,
    group_id: &str,
    member_id: &str,
    instance_id: Option<&str>,
    generation: i32,
    offsets: Vec<OffsetToCommit>,
) -> Result<(), i16> {
    {
        let mut groups = ctx.state().groups.groups.borrow_mut();
        match groups.get(group_id) {
            Some(g) => g.validate_commit(member_id, instance_id, generation)?,
            None if generation < 0 => {
                let delay = ctx.state().config.group_initial_rebalance_delay_ms as i64;
                groups.insert(group_id.to_string(), Group::new(group_id, delay, now_ms()));
            }
            // A member of a generation this coordinator does not know.
            None => return Err(errors::ILLEGAL_GENERATION),
        }
    }
    if offsets.is_empty() {
        return Ok(());
    }
    let base = append(ctx, partition, offset_entries(group_id, &offsets), None).await?;
    let mut groups = ctx.state().groups.groups.borrow_mut();
    if let Some(g) = groups.get_mut(group_id) {
        for (i, mut o) in offsets.into_iter().enumerate() {
            o.offset.record_offset = base + i as i64;
            g.commit(&o.topic, o.partition, o.offset);
        }
    }
    Ok(())
}

/// A TxnOffsetCommit as the handler received it, its partitions already checked.
pub struct TxnCommitCall {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub offsets: Vec<OffsetToCommit>,
}

/// Handles a TxnOffsetCommit: validates the member and generation (when given), writes the
/// offsets to the group's partition as a transactional batch of the producer, durably, and
/// keeps them pending in the group until the producer's transaction ends.
///
/// The batch carries the producer id and epoch, so the partition's producer state opens the
/// transaction there (its last stable offset stalls until the marker) and refuses an epoch
/// older than the producer's (INVALID_PRODUCER_EPOCH: a fenced producer cannot commit
/// offsets). The marker that ends the transaction reaches [`txn_marker_written`].
///
/// Runs on the coordinator shard.
pub async fn txn_commit(
    ctx: &Rc<BrokerCtx>,
    partition: i32,
    call: TxnCommitCall,
) -> Result<(), i16> {
    let shard = &ctx.state().groups;
    {
        let mut groups = shard.groups.borrow_mut();
        match groups.get(&call.group_id) {
            Some(g) => g.validate_txn_commit(
                &call.member_id,
                call.instance_id.as_deref(),
                call.generation,
            )?,
            None if call.generation < 0 => {
                let delay = ctx.state().config.group_initial_rebalance_delay_ms as i64;
                groups.insert(
                    call.group_id.clone(),
                    Group::new(&call.group_id, delay, now_ms()),
                );
            }
            None => return Err(errors::ILLEGAL_GENERATION),
        }
    }
    if call.offsets.is_empty() {
        return Ok(());
    }
    let producer = (call.producer_id, call.producer_epoch);
    let entries = offset_entries(&call.group_id, &call.offsets);
    let base = append(ctx, partition, entries, Some(producer)).await?;
    // The marker ending this transaction may have been applied while this write waited for
    // its fdatasync (both complete in the same flush round): then its outcome applies now.
    let ended = shard
        .markers
        .borrow()
        .get(&(partition, call.producer_id))
        .filter(|m| m.offset > base)
        .map(|m| m.committed);
    let mut groups = shard.groups.borrow_mut();
    // A group deleted meanwhile took its pending offsets with it (Kafka's tombstones do).
    if let Some(g) = groups.get_mut(&call.group_id) {
        for (i, mut o) in call.offsets.into_iter().enumerate() {
            o.offset.record_offset = base + i as i64;
            match ended {
                None => {
                    g.txn_commit(call.producer_id, &o.topic, o.partition, o.offset);
                    shard
                        .txn_groups
                        .borrow_mut()
                        .entry(call.producer_id)
                        .or_default()
                        .insert(call.group_id.clone());
                }
                Some(true) => g.commit(&o.topic, o.partition, o.offset),
                Some(false) => {}
            }
        }
    }
    Ok(())
}

/// A transaction marker of `producer_id` is durable at `marker_offset` of this shard's
/// partition `partition` of `__consumer_offsets`: the offsets the producer's transaction
/// committed there become the committed offsets of their groups (a commit marker), or are
/// dropped (an abort). Nothing is written: the marker itself is what a restart replays.
///
/// A partition still loading has nothing to apply it to; the load reads the log up to the
/// high watermark it sees last, which includes this marker, and applies it from there.
///
/// Runs on the partition's home shard.
pub fn txn_marker_written(
    ctx: &BrokerCtx,
    partition: i32,
    producer_id: i64,
    committed: bool,
    marker_offset: i64,
) {
    let shard = &ctx.state().groups;
    if shard.load_state(partition) != Some(LoadState::Loaded) {
        return;
    }
    let Some(n) = super::offsets_partition_count(ctx) else {
        return;
    };
    shard.markers.borrow_mut().insert(
        (partition, producer_id),
        AppliedMarker {
            offset: marker_offset,
            committed,
            applied_ms: now_ms(),
        },
    );
    let mut txn_groups = shard.txn_groups.borrow_mut();
    let Some(ids) = txn_groups.get_mut(&producer_id) else {
        return;
    };
    // The producer's groups on this partition; those on other partitions of this shard wait
    // for their own marker.
    let here: Vec<String> = ids
        .iter()
        .filter(|id| super::partition_for(id, n) == partition)
        .cloned()
        .collect();
    for id in &here {
        ids.remove(id);
    }
    if ids.is_empty() {
        txn_groups.remove(&producer_id);
    }
    let mut groups = shard.groups.borrow_mut();
    for id in here {
        if let Some(g) = groups.get_mut(&id) {
            let count = g.complete_txn(producer_id, committed);
            tracing::debug!(
                group = %id,
                producer_id,
                committed,
                offsets = count,
                "transactional offset commits completed"
            );
        }
    }
}

/// How long a marker is remembered for TxnOffsetCommit writes that complete after it: far
/// longer than one flush round.
const MARKER_MEMORY_MS: i64 = 60_000;

/// The records of offset commits.
fn offset_entries(group_id: &str, offsets: &[OffsetToCommit]) -> Vec<(Bytes, Option<Bytes>)> {
    offsets
        .iter()
        .map(|o| {
            (
                records::offset_key(group_id, &o.topic, o.partition),
                Some(records::offset_value(&OffsetValue {
                    offset: o.offset.offset,
                    leader_epoch: o.offset.leader_epoch,
                    metadata: o.offset.metadata.clone(),
                    commit_timestamp: o.offset.commit_timestamp_ms,
                    expire_timestamp: o.offset.expire_timestamp_ms.unwrap_or(-1),
                })),
            )
        })
        .collect()
}

/// One partition's answer to an offset fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: i32,
    /// `None` for a partition without a committed offset.
    pub offset: Option<CommittedOffset>,
    /// An open transaction holds an offset of this partition (only reported when the fetch
    /// asked for stable offsets: OffsetFetch answers UNSTABLE_OFFSET_COMMIT for it).
    pub unstable: bool,
}

/// The committed offsets of a group: every one when `wanted` is `None`, else those asked
/// for. Offsets of open transactions are never returned; with `require_stable` the
/// partitions they touch are marked unstable. A group that does not exist has no offsets.
///
/// Runs on the coordinator shard.
pub fn fetch_offsets(
    ctx: &Rc<BrokerCtx>,
    group_id: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Vec<FetchedOffset> {
    let groups = ctx.state().groups.groups.borrow();
    let group = groups.get(group_id);
    let row = |topic: String, partition: i32| {
        let unstable =
            require_stable && group.is_some_and(|g| g.has_pending_txn_offset(&topic, partition));
        let offset = group
            .and_then(|g| g.offsets.get(&(topic.clone(), partition)))
            .cloned();
        FetchedOffset {
            topic,
            partition,
            offset,
            unstable,
        }
    };
    match wanted {
        None => group
            .map(|g| g.offsets.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|(t, p)| row(t, p))
            .collect(),
        Some(topics) => topics
            .into_iter()
            .flat_map(|(t, parts)| parts.into_iter().map(move |p| (t.clone(), p)))
            .map(|(t, p)| row(t, p))
            .collect(),
    }
}

/// Handles an OffsetDelete: a group with members keeps the offsets of topics it consumes
/// (GROUP_SUBSCRIBED_TO_TOPIC); the others are deleted with tombstones.
///
/// Runs on the coordinator shard.
pub async fn delete_offsets(
    ctx: &Rc<BrokerCtx>,
    partition: i32,
    group_id: &str,
    targets: Vec<(String, i32)>,
) -> Result<Vec<i16>, i16> {
    let (codes, tombstones) = {
        let groups = ctx.state().groups.groups.borrow();
        let Some(g) = groups.get(group_id) else {
            return Err(errors::GROUP_ID_NOT_FOUND);
        };
        if g.state == GroupState::Dead {
            return Err(errors::GROUP_ID_NOT_FOUND);
        }
        let subscribed = if g.state == GroupState::Empty {
            Some(Vec::new())
        } else {
            super::subscribed_topics(g)
        };
        let Some(subscribed) = subscribed else {
            // Members of a protocol whose subscriptions we cannot read.
            return Err(errors::NON_EMPTY_GROUP);
        };
        let mut codes = Vec::with_capacity(targets.len());
        let mut tombstones = Vec::new();
        for (t, p) in &targets {
            if subscribed.iter().any(|s| s == t) {
                codes.push(errors::GROUP_SUBSCRIBED_TO_TOPIC);
            } else {
                codes.push(errors::NONE);
                // An offset of an open transaction gets a tombstone too (its commit marker
                // must not bring it back), as in Kafka.
                if g.offsets.contains_key(&(t.clone(), *p)) || g.has_pending_txn_offset(t, *p) {
                    tombstones.push((t.clone(), *p));
                }
            }
        }
        (codes, tombstones)
    };
    if !tombstones.is_empty() {
        let entries = tombstones
            .iter()
            .map(|(t, p)| (records::offset_key(group_id, t, *p), None))
            .collect();
        append(ctx, partition, entries, None).await?;
        let mut groups = ctx.state().groups.groups.borrow_mut();
        if let Some(g) = groups.get_mut(group_id) {
            for (t, p) in tombstones {
                g.remove_offset(&t, p);
            }
        }
    }
    Ok(codes)
}

/// Handles one group of a DeleteGroups: only a group without members can go; its metadata
/// and offsets, those of open transactions included, are tombstoned (Kafka does not wait for
/// the transactions: their markers then find nothing to commit).
///
/// Runs on the coordinator shard.
pub async fn delete_group(ctx: &Rc<BrokerCtx>, partition: i32, group_id: &str) -> i16 {
    let keys = {
        let groups = ctx.state().groups.groups.borrow();
        let Some(g) = groups.get(group_id) else {
            return errors::GROUP_ID_NOT_FOUND;
        };
        match g.state {
            GroupState::Dead => return errors::GROUP_ID_NOT_FOUND,
            GroupState::Empty => {}
            _ => return errors::NON_EMPTY_GROUP,
        }
        g.offset_partitions()
    };
    let mut entries: Vec<(Bytes, Option<Bytes>)> = keys
        .iter()
        .map(|(t, p)| (records::offset_key(group_id, t, *p), None))
        .collect();
    entries.push((records::group_key(group_id), None));
    if let Err(code) = append(ctx, partition, entries, None).await {
        return code;
    }
    let mut groups = ctx.state().groups.groups.borrow_mut();
    if let Some(mut g) = groups.remove(group_id) {
        g.mark_dead(now_ms());
    }
    errors::NONE
}

/// Lets time pass for every group of this shard: session expiry, rebalance and sync
/// timeouts.
///
/// Runs on the coordinator shard.
pub async fn tick(ctx: &Rc<BrokerCtx>) {
    let now = now_ms();
    ctx.state()
        .groups
        .markers
        .borrow_mut()
        .retain(|_, m| now - m.applied_ms < MARKER_MEMORY_MS);
    let due: Vec<(String, Effects)> = {
        let mut groups = ctx.state().groups.groups.borrow_mut();
        groups
            .values_mut()
            .filter(|g| g.next_deadline().is_some_and(|d| d <= now))
            .map(|g| (g.id.clone(), g.tick(now)))
            .collect()
    };
    for (group_id, fx) in due {
        finish(ctx, &group_id, fx).await;
    }
}

/// Deletes the offsets that `offsets.retention.minutes` expired, and the groups left with
/// neither members nor offsets.
///
/// Runs on the coordinator shard.
pub async fn expire_offsets(ctx: &Rc<BrokerCtx>) {
    let now = now_ms();
    let retention_ms = (ctx.state().config.offsets_retention_minutes as i64).saturating_mul(60_000);
    let nr = super::offsets_partition_count(ctx);
    let due: Vec<String> = {
        let groups = ctx.state().groups.groups.borrow();
        groups
            .values()
            .filter(|g| expiry(g, now, retention_ms).is_some())
            .map(|g| g.id.clone())
            .collect()
    };
    for group_id in due {
        let Some(partition) = nr.map(|n| super::partition_for(&group_id, n)) else {
            return;
        };
        // Earlier groups' writes were awaited: look at this group again as it is now.
        let Some((expired, emptied)) = ctx
            .state()
            .groups
            .groups
            .borrow()
            .get(&group_id)
            .and_then(|g| expiry(g, now, retention_ms))
        else {
            continue;
        };
        let mut entries: Vec<(Bytes, Option<Bytes>)> = expired
            .iter()
            .map(|((t, p), _)| (records::offset_key(&group_id, t, *p), None))
            .collect();
        if emptied {
            entries.push((records::group_key(&group_id), None));
        }
        if let Err(code) = append(ctx, partition, entries, None).await {
            tracing::warn!(group = %group_id, code, "cannot expire offsets");
            continue;
        }
        let mut groups = ctx.state().groups.groups.borrow_mut();
        if let Some(g) = groups.get_mut(&group_id) {
            for (k, o) in &expired {
                // A commit made while the tombstone was being written stays.
                if g.offsets.get(k) == Some(o) {
                    g.offsets.remove(k);
                }
            }
            if emptied
                && g.state == GroupState::Empty
                && g.offsets.is_empty()
                && g.txn_offsets.is_empty()
                && g.pending.is_empty()
            {
                groups.remove(&group_id);
            }
        }
        tracing::info!(group = %group_id, offsets = expired.len(), "expired committed offsets");
    }
}

/// Deletes the committed offsets of `topic` in every group of this shard.
///
/// Runs on the coordinator shard.
pub async fn forget_topic(ctx: &Rc<BrokerCtx>, topic: &str) {
    let Some(n) = super::offsets_partition_count(ctx) else {
        return;
    };
    let work: Vec<(String, Vec<i32>)> = {
        let groups = ctx.state().groups.groups.borrow();
        groups
            .values()
            .filter_map(|g| {
                let parts: Vec<i32> = g
                    .offset_partitions()
                    .into_iter()
                    .filter(|(t, _)| t == topic)
                    .map(|(_, p)| p)
                    .collect();
                (!parts.is_empty()).then(|| (g.id.clone(), parts))
            })
            .collect()
    };
    for (group_id, parts) in work {
        let entries = parts
            .iter()
            .map(|p| (records::offset_key(&group_id, topic, *p), None))
            .collect();
        let partition = super::partition_for(&group_id, n);
        if let Err(code) = append(ctx, partition, entries, None).await {
            tracing::warn!(group = %group_id, topic, code, "cannot delete offsets of a deleted topic");
            continue;
        }
        if let Some(g) = ctx.state().groups.groups.borrow_mut().get_mut(&group_id) {
            for p in parts {
                g.remove_offset(topic, p);
            }
        }
    }
}

/// What retention takes from a group now: its expired offsets, and whether the group itself
/// goes (no members, no member ids being handed out, no offsets left: Kafka turns it Dead,
/// whether or not it ever had a generation). `None` when nothing is due.
#[allow(clippy::type_complexity)]
fn expiry(
    g: &Group,
    now_ms: i64,
    retention_ms: i64,
) -> Option<(Vec<((String, i32), CommittedOffset)>, bool)> {
    let expired: Vec<((String, i32), CommittedOffset)> = g
        .expired_offsets(now_ms, retention_ms)
        .into_iter()
        .filter_map(|k| g.offsets.get(&k).cloned().map(|o| (k, o)))
        .collect();
    // A group with open transactions stays: their offsets may still become committed ones.
    let emptied = g.state == GroupState::Empty
        && g.pending.is_empty()
        && g.txn_offsets.is_empty()
        && expired.len() == g.offsets.len();
    (!expired.is_empty() || emptied).then_some((expired, emptied))
}

/// Carries out an event's effects: answers the waiting JoinGroups, writes the group's
/// metadata when asked, then answers the waiting SyncGroups (with an error if the write
/// failed, after which the group rebalances).
///
/// Runs on the coordinator shard.
async fn finish(ctx: &Rc<BrokerCtx>, group_id: &str, fx: Effects) {
    let shard = &ctx.state().groups;
    let mut fx = fx;
    loop {
        for (member, reply) in fx.joins.drain(..) {
            let waiter = shard
                .join_waiters
                .borrow_mut()
                .remove(&(group_id.to_string(), member));
            if let Some(tx) = waiter {
                let _ = tx.try_send(reply);
            }
        }
        let syncs: Vec<(LocalSender<SyncReply>, SyncReply)> = fx
            .syncs
            .drain(..)
            .filter_map(|(member, reply)| {
                shard
                    .sync_waiters
                    .borrow_mut()
                    .remove(&(group_id.to_string(), member))
                    .map(|tx| (tx, reply))
            })
            .collect();
        let mut next = Effects::default();
        let failed = fx.persist && persist_group(ctx, group_id).await.is_err();
        for (tx, mut reply) in syncs {
            if failed && reply.error == errors::NONE {
                reply = SyncReply {
                    error: errors::COORDINATOR_NOT_AVAILABLE,
                    ..SyncReply::default()
                };
            }
            let _ = tx.try_send(reply);
        }
        if failed {
            if let Some(g) = shard.groups.borrow_mut().get_mut(group_id) {
                next = g.persist_failed(now_ms());
            }
        }
        if next == Effects::default() {
            return;
        }
        fx = next;
    }
}

/// Writes the group's current metadata (a tombstone for a group that is gone).
///
/// Runs on the coordinator shard.
async fn persist_group(ctx: &Rc<BrokerCtx>, group_id: &str) -> Result<(), i16> {
    let value = {
        let groups = ctx.state().groups.groups.borrow();
        groups.get(group_id).map(group_value)
    };
    let Some(n) = super::offsets_partition_count(ctx) else {
        return Err(errors::COORDINATOR_NOT_AVAILABLE);
    };
    let partition = super::partition_for(group_id, n);
    append(
        ctx,
        partition,
        vec![(records::group_key(group_id), value)],
        None,
    )
    .await
    .map(|_| ())
}

/// The stored form of a group.
pub fn group_value(g: &Group) -> Bytes {
    let protocol = g.protocol.clone().unwrap_or_default();
    records::group_value(&GroupValue {
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        generation: g.generation,
        protocol: g.protocol.clone(),
        leader: g.leader.clone(),
        current_state_timestamp: g.state_since_ms,
        members: g
            .members
            .values()
            .map(|m| MemberValue {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout: m.rebalance_timeout_ms,
                session_timeout: m.session_timeout_ms,
                subscription: m.metadata(&protocol),
                assignment: m.assignment.clone(),
            })
            .collect(),
    })
}

/// Appends records (key, value or tombstone) to this shard's partition `partition` of
/// `__consumer_offsets` and waits for fdatasync; returns the offset of the first record.
/// With `transaction` (producer id and epoch) the batch is transactional, without sequence
/// numbers, as Kafka writes transactional offset commits; the producer's epoch is checked
/// against the partition's producer state (INVALID_PRODUCER_EPOCH for a fenced one).
///
/// Runs on the coordinator shard.
async fn append(
    ctx: &Rc<BrokerCtx>,
    partition: i32,
    entries: Vec<(Bytes, Option<Bytes>)>,
    transaction: Option<(i64, i16)>,
) -> Result<i64, i16> {
    let p = offsets_partition(ctx, partition)?;
    let now = now_ms();
    let mut builder = BatchBuilder::new(Codec::None);
    if let Some((producer_id, producer_epoch)) = transaction {
        builder = builder
            .producer(producer_id, producer_epoch, NO_SEQUENCE)
            .transactional(true);
    }
    for (key, value) in &entries {
        builder
            .append(now, Some(key), value.as_deref(), &[])
            .map_err(|e| {
                tracing::error!(error = %e, "cannot build a __consumer_offsets batch");
                errors::UNKNOWN_SERVER_ERROR
            })?;
    }
    let batch = builder.build().map_err(|e| {
        tracing::error!(error = %e, "cannot build a __consumer_offsets batch");
        errors::UNKNOWN_SERVER_ERROR
    })?;
    let written = if transaction.is_some() {
        p.append_from_coordinator(batch, Durability::Synced).await
    } else {
        p.append(batch, Durability::Synced).await
    };
    match written {
        Ok(info) => Ok(info.base_offset.0),
        // A fenced producer: the client learns it, nothing was written.
        Err(e @ EngineError::Producer { .. }) => Err(e.kafka_code()),
        Err(e) => {
            tracing::error!(partition, error = %e, "cannot write to __consumer_offsets");
            // Kafka answers a failed write of the coordinator log with NOT_COORDINATOR /
            // COORDINATOR_NOT_AVAILABLE so that clients look the coordinator up again.
            Err(errors::COORDINATOR_NOT_AVAILABLE)
        }
    }
}

/// This shard's open partition `partition` of `__consumer_offsets`.
pub(crate) fn offsets_partition(ctx: &Rc<BrokerCtx>, partition: i32) -> Result<Partition, i16> {
    let tp = TopicPartition::new(OFFSETS_TOPIC, partition);
    match ctx.state().cluster.slot(&tp) {
        Some(Slot::Online(p)) => Ok(p),
        Some(Slot::Offline(_)) => Err(errors::COORDINATOR_NOT_AVAILABLE),
        None => Err(errors::NOT_COORDINATOR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_removes_empty_groups_and_expired_offsets_only() {
        let mut g = Group::new("g", 0, 0);
        // Nothing left in it: the group goes, even though it never had a generation.
        assert_eq!(expiry(&g, 10, 1_000), Some((vec![], true)));
        // A member id handed out (KIP-394) keeps it.
        g.pending.insert("m".into(), 100);
        assert_eq!(expiry(&g, 10, 1_000), None);
        g.pending.clear();
        let o = CommittedOffset {
            offset: 3,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 50,
            expire_timestamp_ms: None,
            record_offset: 0,
        };
        g.commit("t", 0, o.clone());
        assert_eq!(expiry(&g, 1_049, 1_000), None);
        assert_eq!(
            expiry(&g, 1_050, 1_000),
            Some((vec![(("t".to_string(), 0), o)], true))
        );
    }
}
