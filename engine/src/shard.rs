//! Shards: one glommio executor per core, and the bounded cross-core mesh between them.
//!
//! A shard is one `LocalExecutor` pinned to one CPU (`Placement::Fixed`). It owns its state
//! outright — partitions, segments, caches — and that state never crosses cores: it is created
//! on the shard, held in an `Rc`, and reached from other cores only by sending a job through the
//! mesh to the shard that owns it. The mesh is glommio's `channel_mesh`, one bounded channel per
//! ordered pair of shards, so a slow shard pushes back on its senders instead of queueing
//! without limit.
//!
//! A job is a `Send` closure that runs on the target shard and gets that shard's context; the
//! future it returns is local to the target (it may borrow `Rc` state there), and only its
//! `Send` result travels back, through a oneshot channel (glommio wakers accept wake-ups from
//! other threads). A call to one's own shard runs in place without touching the mesh.
//!
//! Every shard also gets a low-priority task queue for background work (retention, compaction,
//! index building), so that such work yields to the request path.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::oneshot;
use glommio::channels::channel_mesh::{MeshBuilder, Senders};
use glommio::{Latency, LocalExecutorBuilder, Placement, Shares, TaskQueueHandle};

use crate::types::ShardId;

/// Why a cross-shard call or the shard runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("shard {target:?} does not exist (there are {nr_shards} shards)")]
    NoSuchShard { target: ShardId, nr_shards: u32 },
    #[error("shard {target:?} is shutting down and dropped the call")]
    Stopped { target: ShardId },
    // glommio's error type is not `Sync`, so its text is kept instead of the value.
    #[error("cannot start shard {shard:?}: {message}")]
    Start { shard: ShardId, message: String },
    #[error("shard {shard:?} panicked")]
    Panicked { shard: ShardId },
    #[error("shard count {requested} is outside 1..={max}")]
    BadShardCount { requested: u32, max: u32 },
    #[error("cannot join the cross-shard mesh on shard {shard:?}")]
    Mesh { shard: ShardId },
}

impl ShardError {
    /// The Kafka error code a client sees when a call to a partition's shard fails.
    pub fn kafka_code(&self) -> i16 {
        // A shard that is stopping or unreachable means the partition cannot be served right now:
        // clients retry NOT_LEADER_OR_FOLLOWER (6) after refreshing metadata, which is what a
        // broker that is shutting down should make them do. Start-up failures never reach a
        // client, so they share the unknown-server-error code (-1).
        match self {
            ShardError::NoSuchShard { .. } | ShardError::Stopped { .. } => 6,
            _ => -1,
        }
    }
}

/// The most shards one broker runs (one per core; far above today's largest machines).
pub const SHARDS_MAX: u32 = 1024;

/// Jobs that may wait in one shard-to-shard channel before the sender waits for room.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

/// A unit of work sent to another shard: runs there with that shard's context.
pub type Job<S> = Box<dyn FnOnce(Rc<ShardCtx<S>>) -> LocalFuture + Send>;

/// A future that stays on the shard that created it.
pub type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

/// How to start the shards.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Number of shards (executors); at most `SHARDS_MAX`.
    pub nr_shards: u32,
    /// Pin shard i to CPU i (`Placement::Fixed`). Off only where pinning is impossible, for
    /// example in tests that start more shards than the machine has cores.
    pub pin_to_cores: bool,
    /// Executor thread name prefix; shard i's thread is `<prefix>-<i>`.
    pub name: String,
}

impl RuntimeConfig {
    /// One pinned shard per online CPU.
    pub fn per_core(name: &str) -> RuntimeConfig {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        RuntimeConfig {
            nr_shards: cores.clamp(1, SHARDS_MAX),
            pin_to_cores: true,
            name: name.to_string(),
        }
    }
}

/// What a shard's body gets before its state exists: who it is, and the means to join the mesh.
pub struct ShardBoot<S: 'static> {
    id: ShardId,
    nr_shards: u32,
    mesh: MeshBuilder<Job<S>, glommio::channels::channel_mesh::Full>,
}

impl<S: 'static> ShardBoot<S> {
    /// This shard's id.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// How many shards the runtime started.
    pub fn nr_shards(&self) -> u32 {
        self.nr_shards
    }

    /// Joins the mesh with this shard's state and starts serving jobs from other shards.
    /// Every shard must call this (the mesh completes only when all have joined).
    ///
    /// Runs on this shard.
    pub async fn start(self, state: S) -> Result<Rc<ShardCtx<S>>, ShardError> {
        let (senders, mut receivers) = self
            .mesh
            .join()
            .await
            .map_err(|_| ShardError::Mesh { shard: self.id })?;
        // Mesh peer ids follow executor creation order, which is shard order; a mismatch would
        // route every job to the wrong core, so it is checked once here rather than trusted.
        assert_eq!(
            senders.peer_id(),
            self.id.0 as usize,
            "mesh peer id disagrees with shard id"
        );
        let background = glommio::executor().create_task_queue(
            Shares::Static(BACKGROUND_SHARES),
            Latency::NotImportant,
            "background",
        );
        let ctx = Rc::new(ShardCtx {
            id: self.id,
            nr_shards: self.nr_shards,
            senders,
            background,
            state,
        });
        for (_peer, stream) in receivers.streams() {
            let weak = Rc::downgrade(&ctx);
            glommio::spawn_local(async move {
                while let Some(job) = stream.recv().await {
                    let Some(ctx) = weak.upgrade() else { break };
                    // Each job is its own task, so a job that waits on I/O never holds up the
                    // jobs queued behind it.
                    glommio::spawn_local(job(ctx)).detach();
                }
            })
            .detach();
        }
        Ok(ctx)
    }
}

/// Shares of CPU the background queue gets relative to the default queue's 1000.
pub const BACKGROUND_SHARES: usize = 50;

/// A shard's context: its id, its state, and the way to reach the other shards.
///
/// Owned by its shard; never crosses cores (it is `!Send` through `Rc` and the state).
pub struct ShardCtx<S: 'static> {
    id: ShardId,
    nr_shards: u32,
    senders: Senders<Job<S>>,
    background: TaskQueueHandle,
    state: S,
}

impl<S: 'static> ShardCtx<S> {
    /// This shard's id.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// How many shards there are.
    pub fn nr_shards(&self) -> u32 {
        self.nr_shards
    }

    /// This shard's own state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// Runs `job` on shard `target` and returns its result here. On this shard's own id the
    /// job runs in place; otherwise it goes through the bounded mesh, waiting for room if the
    /// target's queue is full.
    ///
    /// Runs on the calling shard; `job` runs on `target`.
    pub async fn call<R, F, Fut>(self: &Rc<Self>, target: ShardId, job: F) -> Result<R, ShardError>
    where
        F: FnOnce(Rc<ShardCtx<S>>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        if target == self.id {
            return Ok(job(self.clone()).await);
        }
        if target.0 >= self.nr_shards {
            return Err(ShardError::NoSuchShard {
                target,
                nr_shards: self.nr_shards,
            });
        }
        let (tx, rx) = oneshot::channel();
        let boxed: Job<S> = Box::new(move |ctx: Rc<ShardCtx<S>>| {
            Box::pin(async move {
                assert_eq!(ctx.id(), target, "job routed to the wrong shard");
                let out = job(ctx).await;
                // The caller may have given up (its connection closed); the result is then
                // simply dropped.
                let _ = tx.send(out);
            }) as LocalFuture
        });
        self.senders
            .send_to(target.0 as usize, boxed)
            .await
            .map_err(|_| ShardError::Stopped { target })?;
        rx.await.map_err(|_| ShardError::Stopped { target })
    }

    /// Runs `job` on every shard (this one included) concurrently; results in shard order.
    ///
    /// Runs on the calling shard; each copy of `job` runs on its shard.
    pub async fn call_all<R, F, Fut>(self: &Rc<Self>, job: F) -> Vec<Result<R, ShardError>>
    where
        F: FnOnce(Rc<ShardCtx<S>>) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        // Spawning first starts every call before any is awaited, so they run concurrently.
        let tasks: Vec<_> = (0..self.nr_shards)
            .map(|i| {
                let me = self.clone();
                let job = job.clone();
                glommio::spawn_local(async move { me.call(ShardId(i), job).await })
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            out.push(task.await);
        }
        out
    }

    /// Spawns `fut` on this shard's low-priority background queue.
    ///
    /// Runs on this shard.
    pub fn spawn_background<F>(&self, fut: F) -> glommio::task::JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        match glommio::spawn_local_into(fut, self.background) {
            Ok(task) => task.detach(),
            // The queue was created by this shard and is never removed, so spawning into it
            // cannot fail; if glommio ever says otherwise that is a bug worth stopping for.
            Err(e) => panic!("background task queue of shard {:?} is gone: {e}", self.id),
        }
    }

    /// Stops accepting jobs from other shards: their pending and later calls fail with
    /// `ShardError::Stopped`.
    pub fn close_mesh(&self) {
        self.senders.close();
    }
}

/// How often [`park_guard`] wakes its executor.
const PARK_GUARD_TICK: Duration = Duration::from_millis(50);

/// Keeps a timer pending on the shard at all times, so the executor never parks without a
/// deadline. glommio 0.9's run loop can park while a task is runnable: when its preemption
/// timer fires before the first task queue runs (the thread was descheduled for longer than
/// the preemption slice, which happens on a loaded machine), `run_task_queues` reports that
/// nothing ran and the executor sleeps in `io_uring_enter` until some event arrives. With no
/// I/O and no timer pending, nothing arrives: a broker hung at start-up for 18 minutes that
/// way until a debugger's attach interrupted the syscall (the fix upstream is glommio PR #53
/// of the glommio/glommio fork). With this timer the stall lasts one tick at most.
async fn park_guard() {
    loop {
        glommio::timer::sleep(PARK_GUARD_TICK).await;
    }
}

/// Starts `config.nr_shards` executors, runs `body` on each with its `ShardBoot`, and waits for
/// all of them to finish. Returns the bodies' results in shard order.
///
/// `body` must call `ShardBoot::start` (every shard joins the mesh) before it makes calls.
pub fn run_shards<S, F, Fut, T>(config: &RuntimeConfig, body: F) -> Result<Vec<T>, ShardError>
where
    S: 'static,
    F: Fn(ShardBoot<S>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    if config.nr_shards == 0 || config.nr_shards > SHARDS_MAX {
        return Err(ShardError::BadShardCount {
            requested: config.nr_shards,
            max: SHARDS_MAX,
        });
    }
    let mesh = MeshBuilder::full(config.nr_shards as usize, MESH_CHANNEL_CAPACITY);
    let mut handles = Vec::with_capacity(config.nr_shards as usize);
    // Executors are created in shard order on purpose: the mesh numbers its peers by executor
    // creation order, and `ShardBoot::start` checks that the two agree.
    for i in 0..config.nr_shards {
        let id = ShardId(i);
        let placement = if config.pin_to_cores {
            Placement::Fixed(i as usize)
        } else {
            Placement::Unbound
        };
        let boot = ShardBoot {
            id,
            nr_shards: config.nr_shards,
            mesh: mesh.clone(),
        };
        let body = body.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("{}-{}", config.name, i))
            .spin_before_park(Duration::from_micros(0))
            .spawn(move || async move {
                glommio::spawn_local(park_guard()).detach();
                body(boot).await
            })
            .map_err(|e| ShardError::Start {
                shard: id,
                message: e.to_string(),
            })?;
        handles.push((id, handle));
    }
    let mut results = Vec::with_capacity(handles.len());
    for (id, handle) in handles {
        results.push(
            handle
                .join()
                .map_err(|_| ShardError::Panicked { shard: id })?,
        );
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    fn config(n: u32) -> RuntimeConfig {
        RuntimeConfig {
            nr_shards: n,
            pin_to_cores: false,
            name: "test-shard".into(),
        }
    }

    #[test]
    fn calls_run_on_the_target_shard_and_return_results() {
        let done = Arc::new(AtomicU32::new(0));
        let results = run_shards(&config(3), move |boot: ShardBoot<Cell<u64>>| {
            let done = done.clone();
            async move {
                let me = boot.id();
                let ctx = boot.start(Cell::new(0)).await.unwrap();
                // Every shard adds its id + 1 to every shard's counter, itself included.
                let out = ctx
                    .call_all(move |target| async move {
                        target
                            .state()
                            .set(target.state().get() + u64::from(me.0) + 1);
                        target.id()
                    })
                    .await;
                let ids: Vec<ShardId> = out.into_iter().map(|r| r.unwrap()).collect();
                assert_eq!(ids, vec![ShardId(0), ShardId(1), ShardId(2)]);
                // Wait (without blocking this executor, which must keep serving the others' jobs)
                // until every shard has finished its calls, then read the final counter.
                done.fetch_add(1, Ordering::SeqCst);
                while done.load(Ordering::SeqCst) < 3 {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                ctx.state().get()
            }
        })
        .unwrap();
        // 1 + 2 + 3 from the three shards.
        assert_eq!(results, vec![6, 6, 6]);
    }

    #[test]
    fn calling_a_missing_shard_is_an_error() {
        let results = run_shards(&config(1), |boot: ShardBoot<()>| async move {
            let ctx = boot.start(()).await.unwrap();
            match ctx.call(ShardId(7), |_| async {}).await {
                Err(ShardError::NoSuchShard { target, nr_shards }) => (target, nr_shards),
                other => panic!("unexpected {other:?}"),
            }
        })
        .unwrap();
        assert_eq!(results, vec![(ShardId(7), 1)]);
    }

    #[test]
    fn a_zero_shard_runtime_is_refused() {
        let err = run_shards(&config(0), |_boot: ShardBoot<()>| async {}).unwrap_err();
        assert!(matches!(
            err,
            ShardError::BadShardCount { requested: 0, .. }
        ));
    }

    #[test]
    fn background_tasks_run() {
        let results = run_shards(&config(1), |boot: ShardBoot<()>| async move {
            let ctx = boot.start(()).await.unwrap();
            ctx.spawn_background(async { 41 + 1 }).await
        })
        .unwrap();
        assert_eq!(results, vec![Some(42)]);
    }
}
