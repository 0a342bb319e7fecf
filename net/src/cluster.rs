//! A shard's view of the cluster: the latest topics snapshot, the partitions this shard is the
//! home of, and the ways to reach a partition or change topics from any shard.
//!
//! Partition state lives only on the partition's home shard. A handler running on a
//! connection's shard reaches it with [`with_partition`], which sends the work through the mesh
//! (or runs it in place when the connection's shard is the home). Topic changes go to the
//! control shard (shard 0) with [`change_topics`], which persists them and publishes the new
//! snapshot to every shard before answering, so when a CreateTopics response reaches the client
//! every shard already knows the topic and its partitions are open.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sluice_engine::partition::{Partition, ShardContext};
use sluice_engine::types::{ShardId, TopicPartition};

use crate::broker::BrokerCtx;
use crate::errors;
use crate::server::ListenerShared;
use crate::topics::{TopicError, TopicStore, TopicsSnapshot};

/// The control shard: the single writer of topic metadata.
pub const CONTROL_SHARD: ShardId = ShardId(0);

/// A partition this shard is the home of.
#[derive(Clone)]
pub enum Slot {
    Online(Partition),
    /// Recovery found corruption it must not repair; the partition answers KAFKA_STORAGE_ERROR
    /// and the rest of the broker keeps working.
    Offline(Arc<str>),
}

/// The cluster state a shard holds.
///
/// Owned by its shard; never crosses cores.
pub struct ClusterState {
    topics: RefCell<Arc<TopicsSnapshot>>,
    partitions: RefCell<HashMap<TopicPartition, Slot>>,
    engine: ShardContext,
    /// The topic store; `Some` only on the control shard.
    store: Option<RefCell<TopicStore>>,
    /// Serializes [`apply_snapshot`] on this shard: an apply awaits closes and opens, and two
    /// interleaved applies could otherwise open the same partition twice.
    apply_lock: glommio::sync::Semaphore,
    /// Serializes topic changes with their publication on the control shard, so every shard
    /// receives snapshots in version order (a deletion is always seen before a re-creation of
    /// the same name).
    change_lock: glommio::sync::Semaphore,
}

impl ClusterState {
    /// A shard's initial state; `store` is given to the control shard only. `cache_bytes` is
    /// the budget of the shard's batch cache.
    pub fn new(
        initial: Arc<TopicsSnapshot>,
        store: Option<TopicStore>,
        cache_bytes: usize,
    ) -> ClusterState {
        ClusterState {
            topics: RefCell::new(initial),
            partitions: RefCell::new(HashMap::new()),
            engine: ShardContext {
                cache: sluice_engine::batch_cache::BatchCache::new(cache_bytes),
                ..ShardContext::default()
            },
            store: store.map(RefCell::new),
            apply_lock: glommio::sync::Semaphore::new(1),
            change_lock: glommio::sync::Semaphore::new(1),
        }
    }

    /// The latest topics snapshot this shard has.
    pub fn topics(&self) -> Arc<TopicsSnapshot> {
        self.topics.borrow().clone()
    }

    /// The engine's shard-level objects (flusher, batch cache).
    pub fn engine(&self) -> &ShardContext {
        &self.engine
    }

    /// The partition slot, if this shard is its home.
    pub fn slot(&self, tp: &TopicPartition) -> Option<Slot> {
        self.partitions.borrow().get(tp).cloned()
    }

    /// Every online partition this shard owns.
    pub fn online_partitions(&self) -> Vec<Partition> {
        self.partitions
            .borrow()
            .values()
            .filter_map(|s| match s {
                Slot::Online(p) => Some(p.clone()),
                Slot::Offline(_) => None,
            })
            .collect()
    }
}

/// Why a partition could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PartitionError {
    #[error("unknown topic or partition {0}")]
    Unknown(TopicPartition),
    #[error("partition {tp} is offline: {reason}")]
    Offline {
        tp: TopicPartition,
        reason: Arc<str>,
    },
    #[error("the home shard of {tp} is unavailable: {reason}")]
    ShardUnavailable { tp: TopicPartition, reason: String },
}

impl PartitionError {
    pub fn kafka_code(&self) -> i16 {
        match self {
            PartitionError::Unknown(_) => errors::UNKNOWN_TOPIC_OR_PARTITION,
            PartitionError::Offline { .. } => errors::KAFKA_STORAGE_ERROR,
            PartitionError::ShardUnavailable { .. } => errors::NOT_LEADER_OR_FOLLOWER,
        }
    }
}

/// Runs `work` with the partition `tp` on its home shard and returns the result here.
///
/// Runs on the calling shard; `work` runs on the partition's home shard.
pub async fn with_partition<R, F, Fut>(
    ctx: &Rc<BrokerCtx>,
    tp: TopicPartition,
    work: F,
) -> Result<R, PartitionError>
where
    F: FnOnce(Partition) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    let Some(home) = ctx.state().cluster.topics().shard_for(&tp) else {
        return Err(PartitionError::Unknown(tp));
    };
    let tp_for_err = tp.clone();
    ctx.call(home, move |home_ctx: Rc<BrokerCtx>| async move {
        match home_ctx.state().cluster.slot(&tp) {
            Some(Slot::Online(p)) => Ok(work(p).await),
            Some(Slot::Offline(reason)) => Err(PartitionError::Offline { tp, reason }),
            // The snapshot the caller routed by may be newer or older than the home's: the
            // partition is not (yet, or any more) open here.
            None => Err(PartitionError::Unknown(tp)),
        }
    })
    .await
    .map_err(|e| PartitionError::ShardUnavailable {
        tp: tp_for_err,
        reason: e.to_string(),
    })?
}

/// Applies a change to the topic store on the control shard, publishes the resulting snapshot
/// to every shard, and returns the change's result once every shard has applied it.
///
/// Runs on the calling shard; `change` runs on the control shard.
pub async fn change_topics<F>(
    ctx: &Rc<BrokerCtx>,
    change: F,
) -> Result<Arc<TopicsSnapshot>, TopicError>
where
    F: FnOnce(&mut TopicStore) -> Result<Arc<TopicsSnapshot>, TopicError> + Send + 'static,
{
    let outcome = ctx
        .call(CONTROL_SHARD, move |control: Rc<BrokerCtx>| async move {
            let Ok(_permit) = control.state().cluster.change_lock.acquire_permit(1).await else {
                return Err(TopicError::Storage(
                    "the control shard is shutting down".into(),
                ));
            };
            let snapshot = {
                let Some(store) = control.state().cluster.store.as_ref() else {
                    return Err(TopicError::Storage(
                        "the control shard has no topic store".into(),
                    ));
                };
                // No await while the store is borrowed: changes apply one at a time.
                let mut store = store.borrow_mut();
                change(&mut store)?
            };
            publish(&control, snapshot.clone()).await;
            Ok(snapshot)
        })
        .await;
    match outcome {
        Ok(result) => result,
        Err(e) => Err(TopicError::Storage(format!(
            "the control shard is unavailable: {e}"
        ))),
    }
}

/// Sends `snapshot` to every shard and waits until each has applied it.
///
/// Runs on the control shard.
async fn publish(ctx: &Rc<BrokerCtx>, snapshot: Arc<TopicsSnapshot>) {
    let results = ctx
        .call_all(move |shard: Rc<BrokerCtx>| async move {
            apply_snapshot(&shard, snapshot).await;
        })
        .await;
    for (i, r) in results.into_iter().enumerate() {
        if let Err(e) = r {
            tracing::warn!(shard = i, error = %e, "a shard did not apply the topics snapshot");
        }
    }
}

/// Makes this shard's partitions match `snapshot`: opens the partitions that are now homed
/// here, closes and deletes the data of partitions whose topic was deleted (or deleted and
/// re-created under the same name: a different topic id), and hands open partitions whose
/// topic's log settings changed the new settings. Older snapshots than the
/// current one are ignored. Applies run one at a time on a shard.
///
/// Runs on the shard being updated.
pub async fn apply_snapshot(ctx: &Rc<BrokerCtx>, snapshot: Arc<TopicsSnapshot>) {
    let state = &ctx.state().cluster;
    let Ok(_permit) = state.apply_lock.acquire_permit(1).await else {
        // The semaphore is closed only when the shard is going away.
        return;
    };
    let previous = state.topics();
    if snapshot.version < previous.version {
        return;
    }
    *state.topics.borrow_mut() = snapshot.clone();
    let me = ctx.id();
    let data_dir = ctx.state().config.data_dir.clone();
    // A topic that now has another id than before was deleted and re-created in between
    // (snapshots may reach a shard out of order, so the deletion may never be seen alone).
    let replaced = |topic: &str| match (previous.topic(topic), snapshot.topic(topic)) {
        (Some(old), Some(new)) => old.id != new.id,
        _ => false,
    };

    // Partitions to drop: those that are open here but no longer homed here, or whose topic
    // was replaced by a new one of the same name.
    let gone: Vec<(TopicPartition, Slot)> = state
        .partitions
        .borrow()
        .iter()
        .filter(|(tp, _)| snapshot.shard_for(tp) != Some(me) || replaced(&tp.topic))
        .map(|(tp, slot)| (tp.clone(), slot.clone()))
        .collect();
    for (tp, slot) in gone {
        state.partitions.borrow_mut().remove(&tp);
        if let Slot::Online(p) = slot {
            if let Err(e) = p.close().await {
                tracing::warn!(%tp, error = %e, "closing a deleted partition failed");
            }
        }
        // The topic was deleted (partitions never move between shards yet): its data goes.
        // A topic re-created under the same name must start empty.
        if snapshot.topic(&tp.topic).is_none() || replaced(&tp.topic) {
            let dir = data_dir.join(tp.dir_name());
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(%tp, error = %e, "cannot delete partition data");
                }
            }
        }
    }

    // Partitions whose topic's log settings changed take the new settings in place.
    for slot in state.partitions.borrow().values() {
        if let Slot::Online(p) = slot {
            if let Some(meta) = snapshot.topic(&p.topic_partition().topic) {
                if *p.config() != *meta.log_config {
                    p.set_config(meta.log_config.clone());
                }
            }
        }
    }

    // Partitions to open: homed here but not open yet.
    let wanted = snapshot.placement.partitions_of(me);
    for tp in wanted {
        if state.partitions.borrow().contains_key(&tp) {
            continue;
        }
        let Some(meta) = snapshot.topic(&tp.topic) else {
            continue;
        };
        let slot = match Partition::open(
            &data_dir,
            tp.clone(),
            meta.log_config.clone(),
            state.engine.clone(),
        )
        .await
        {
            Ok(p) => Slot::Online(p),
            Err(e) => {
                tracing::error!(%tp, error = %e, "partition is offline");
                Slot::Offline(Arc::from(e.to_string()))
            }
        };
        state.partitions.borrow_mut().insert(tp, slot);
    }
}

/// Closes every partition of this shard (flushing what is buffered). Called at shutdown.
///
/// Runs on the shard being stopped.
pub async fn close_all(ctx: &Rc<BrokerCtx>) {
    let partitions = ctx.state().cluster.online_partitions();
    for p in partitions {
        if let Err(e) = p.close().await {
            tracing::warn!(tp = %p.topic_partition(), error = %e, "close failed");
        }
    }
}

/// How often a coordinator starting up looks again for its internal topic and partitions.
const INTERNAL_TOPIC_POLL: Duration = Duration::from_millis(5);

/// The partitions of the internal `topic` (`__consumer_offsets`, `__transaction_state`) homed
/// on this shard, once the control shard has created the topic; this shard may start its
/// coordinator first. At shutdown it stops waiting and answers what it knows. `None` once the
/// shard is gone.
///
/// Runs on the shard whose coordinator starts.
pub async fn home_partitions_of_internal_topic(
    weak: &Weak<BrokerCtx>,
    shared: &ListenerShared,
    topic: &str,
) -> Option<Vec<i32>> {
    loop {
        let ctx = weak.upgrade()?;
        let snapshot = ctx.state().cluster.topics();
        if let Some(meta) = snapshot.topic(topic) {
            let me = ctx.id();
            return Some(
                (0..meta.partitions)
                    .filter(|p| snapshot.shard_for(&TopicPartition::new(topic, *p)) == Some(me))
                    .collect(),
            );
        }
        if shared.shutdown.load(Ordering::SeqCst) {
            return Some(Vec::new());
        }
        drop(ctx);
        glommio::timer::sleep(INTERNAL_TOPIC_POLL).await;
    }
}

/// Waits until this shard has opened `tp` (the topic snapshot names a partition before its
/// home shard opens it), or until shutdown. `None` once the shard is gone.
///
/// Runs on `tp`'s home shard.
pub async fn wait_until_open(
    weak: &Weak<BrokerCtx>,
    shared: &ListenerShared,
    tp: &TopicPartition,
) -> Option<()> {
    loop {
        let ctx = weak.upgrade()?;
        if ctx.state().cluster.slot(tp).is_some() || shared.shutdown.load(Ordering::SeqCst) {
            return Some(());
        }
        drop(ctx);
        glommio::timer::sleep(INTERNAL_TOPIC_POLL).await;
    }
}
