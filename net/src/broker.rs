//! Wiring of the broker: shards, each with its Kafka listener and its request handler.
//!
//! `run` starts one shard per configured core. Each shard primes glommio's DMA probe, joins the
//! cross-core mesh with its `ShardState`, binds the shared listener address (SO_REUSEPORT), and
//! serves connections until shutdown. Shard 0 prints the ready line once every shard is
//! listening, so a supervisor (or a test) that waits for that line can connect at once. Shard 0
//! also serves the admin HTTP listener ([`crate::admin`]), bound on the main thread before the
//! shards start.

use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_engine::shard::{self, RuntimeConfig, ShardBoot, ShardCtx};

use crate::cluster::{self, ClusterState, CONTROL_SHARD};
use crate::config::BrokerConfig;
use crate::connection::{ConnectionLimits, Handler, LocalFuture, OrderPoint, Reply};
use crate::server::{self, ListenerConfig, ListenerShared};
use crate::topics::{TopicStore, TopicsSnapshot};

/// Why the broker could not run.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot resolve the listen address {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    PortTaken {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load topic metadata: {0}")]
    Topics(#[from] crate::topics::TopicError),
    #[error("cannot read or create the cluster id: {0}")]
    ClusterId(#[source] std::io::Error),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminBindError),
    #[error(transparent)]
    ProducerIds(#[from] crate::producer_ids::ProducerIdError),
    #[error(transparent)]
    Shards(#[from] sluice_engine::shard::ShardError),
    #[error("shard {shard} failed: {message}")]
    Shard { shard: u32, message: String },
}

/// A shard's own broker state.
///
/// Owned by its shard; never crosses cores.
pub struct ShardState {
    pub config: Arc<BrokerConfig>,
    pub cluster_id: Arc<str>,
    pub cluster: ClusterState,
    /// Wakes long-polling fetches when this shard's partitions get appends.
    pub notifier: crate::notify::AppendNotifier,
    /// Ends this shard's long-polling fetches when the broker starts to shut down.
    pub shutdown: crate::notify::ShutdownSignal,
    /// Incremental fetch sessions of this shard's connections.
    pub fetch_sessions: crate::fetch_sessions::FetchSessions,
    /// This shard's request, data and resource figures, gathered by `/metrics`.
    pub metrics: crate::metrics::ShardMetrics,
    /// The consumer groups this shard coordinates.
    pub groups: crate::groups::coordinator::GroupsShard,
    /// The transactional ids this shard coordinates.
    pub txns: crate::txn::coordinator::TxnShard,
    /// Producer ids for idempotent producers (the durable counter on the control shard).
    pub producer_ids: crate::producer_ids::ProducerIds,
}

/// The shard context every handler gets.
pub type BrokerCtx = ShardCtx<ShardState>;

/// Runs the broker until `shared.shutdown` is set. Blocks the calling thread.
pub fn run(config: BrokerConfig, shared: Arc<ListenerShared>) -> Result<(), BrokerError> {
    let mut config = config;
    config.listen =
        server::concrete_listen_addr(config.listen).map_err(|source| BrokerError::Listen {
            addr: config.listen,
            source,
        })?;
    if config.advertised_port == 0 {
        config.advertised_port = config.listen.port();
    }
    // Held until the broker stops; see `PortClaim` for why SO_REUSEPORT needs it.
    let _port_claim =
        server::claim_listen_port(config.listen).map_err(|source| BrokerError::PortTaken {
            addr: config.listen,
            source,
        })?;
    // Bound here, before any shard starts: a taken admin port is a start-up error, and port 0
    // becomes the real port the ready line prints.
    let admin = match config.admin_listen {
        Some(addr) => {
            let listener = crate::admin::bind(addr)?;
            config.admin_listen = Some(
                listener
                    .local_addr()
                    .map_err(|source| crate::admin::AdminBindError { addr, source })?,
            );
            Some(listener)
        }
        None => None,
    };
    let admin = Arc::new(std::sync::Mutex::new(admin));
    let cluster_id: Arc<str> = crate::data_dir::load_or_create_cluster_id(&config.data_dir)
        .map_err(BrokerError::ClusterId)?
        .into();
    let store = TopicStore::open(&config.data_dir, config.shards)?;
    let initial = store.snapshot();
    // The store itself goes to the control shard, its single writer; every shard starts from
    // the same snapshot.
    let store = Arc::new(std::sync::Mutex::new(Some(store)));
    let producer_id_store = Arc::new(std::sync::Mutex::new(Some(
        crate::producer_ids::ProducerIdStore::open(&config.data_dir)?,
    )));
    let config = Arc::new(config);
    let runtime = RuntimeConfig {
        nr_shards: config.shards,
        pin_to_cores: config.shards as usize
            <= std::thread::available_parallelism().map_or(1, |n| n.get()),
        name: "sluice-shard".into(),
    };
    let listening = Arc::new(AtomicU32::new(0));
    let results = shard::run_shards(&runtime, move |boot: ShardBoot<ShardState>| {
        let config = config.clone();
        let shared = shared.clone();
        let listening = listening.clone();
        let cluster_id = cluster_id.clone();
        let initial = initial.clone();
        let (store, admin, producer_id_store) = if boot.id() == CONTROL_SHARD {
            (
                store.lock().ok().and_then(|mut s| s.take()),
                admin.lock().ok().and_then(|mut a| a.take()),
                producer_id_store.lock().ok().and_then(|mut p| p.take()),
            )
        } else {
            (None, None, None)
        };
        let boot_state = BootState {
            config,
            cluster_id,
            initial,
            store,
            admin,
            producer_id_store,
        };
        async move { run_shard(boot, boot_state, shared, listening).await }
    })?;
    for (i, result) in results.into_iter().enumerate() {
        result.map_err(|message| BrokerError::Shard {
            shard: i as u32,
            message,
        })?;
    }
    Ok(())
}

/// What a shard starts from.
struct BootState {
    config: Arc<BrokerConfig>,
    cluster_id: Arc<str>,
    initial: Arc<TopicsSnapshot>,
    store: Option<TopicStore>,
    /// The admin HTTP listener; `Some` only on the control shard, which serves it.
    admin: Option<std::net::TcpListener>,
    /// The producer-id counter; `Some` only on the control shard.
    producer_id_store: Option<crate::producer_ids::ProducerIdStore>,
}

/// Runs on shard `boot.id()` for the broker's whole life.
async fn run_shard(
    boot: ShardBoot<ShardState>,
    boot_state: BootState,
    shared: Arc<ListenerShared>,
    listening: Arc<AtomicU32>,
) -> Result<(), String> {
    let BootState {
        config,
        cluster_id,
        initial,
        store,
        admin,
        producer_id_store,
    } = boot_state;
    let id = boot.id();
    let nr_shards = boot.nr_shards();
    sluice_engine::io::prime_executor(&config.data_dir)
        .await
        .map_err(|e| format!("DMA probe in {}: {e}", config.data_dir.display()))?;
    if config.io_workers_per_shard > 0 {
        match crate::socket_writer::set_blocking_io_workers(config.io_workers_per_shard) {
            Ok(previous) => tracing::debug!(
                previous,
                workers = config.io_workers_per_shard,
                "blocking io_uring workers of this shard"
            ),
            // Older kernels (before 5.15) cannot change it; the shard works with their default.
            Err(e) => {
                tracing::warn!(error = %e, "cannot set the shard's blocking io_uring workers")
            }
        }
    }
    let ctx = boot
        .start(ShardState {
            config: config.clone(),
            cluster_id,
            cluster: ClusterState::new(initial.clone(), store, config.batch_cache_bytes_per_shard),
            notifier: crate::notify::AppendNotifier::new(),
            shutdown: crate::notify::ShutdownSignal::default(),
            fetch_sessions: crate::fetch_sessions::FetchSessions::new(
                id.0,
                nr_shards,
                crate::fetch_sessions::FETCH_SESSIONS_PER_SHARD_MAX,
            ),
            metrics: crate::metrics::ShardMetrics::new(),
            groups: crate::groups::coordinator::GroupsShard::default(),
            txns: crate::txn::coordinator::TxnShard::default(),
            producer_ids: crate::producer_ids::ProducerIds::new(producer_id_store),
        })
        .await
        .map_err(|e| e.to_string())?;
    // The admin listener answers (503) while partitions recover; it stops after them below.
    let (admin_stop, admin_task) = match admin {
        Some(listener) => {
            let (stop, stopped) = glommio::channels::local_channel::new_bounded::<()>(1);
            let status = crate::admin::BrokerStatus {
                listening: listening.clone(),
                nr_shards,
                shared: shared.clone(),
            };
            let stopped = async move {
                let _ = stopped.recv().await;
            };
            let task =
                glommio::spawn_local(crate::admin::serve(ctx.clone(), listener, status, stopped));
            (Some(stop), Some(task))
        }
        None => (None, None),
    };
    // Open (and recover) this shard's partitions before accepting any connection.
    cluster::apply_snapshot(&ctx, initial).await;
    // The offsets topic exists on every shard before the broker reports ready.
    if id == CONTROL_SHARD {
        crate::groups::ensure_offsets_topic(&ctx)
            .await
            .map_err(|e| format!("cannot create {}: {e}", crate::groups::OFFSETS_TOPIC))?;
        crate::txn::ensure_txn_topic(&ctx)
            .await
            .map_err(|e| format!("cannot create {}: {e}", crate::txn::TXN_TOPIC))?;
    }
    let listener = server::bind(config.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    listening.fetch_add(1, Ordering::SeqCst);
    if id.0 == 0 {
        while listening.load(Ordering::SeqCst) < nr_shards {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        // The one line a supervisor waits for; stdout so it is easy to pick out from logs.
        let admin = match config.admin_listen {
            Some(addr) => format!(", admin on http://{addr}"),
            None => String::new(),
        };
        println!(
            "sluice ready: listening on {} ({} shards, data in {}){admin}",
            config.listen,
            nr_shards,
            config.data_dir.display()
        );
    }
    let listener_config = ListenerConfig {
        addr: config.listen,
        max_connections: config.max_connections,
        limits: ConnectionLimits {
            request_max_bytes: config.socket_request_max_bytes,
            idle: Duration::from_millis(config.connections_max_idle_ms),
        },
    };
    spawn_retention(&ctx, shared.clone());
    spawn_cleaner(&ctx, shared.clone());
    crate::groups::start(&ctx, shared.clone());
    crate::txn::start(&ctx, shared.clone());
    let handler = Rc::new(KafkaHandler {
        ctx: ctx.clone(),
        peer: None,
    });
    server::accept_loop(listener, listener_config, shared.clone(), handler).await;
    // Every shard keeps serving the others' calls until all have drained their connections:
    // a request still in flight on one shard may read or write a partition homed on another
    // (a long-poll fetch reads again at its deadline), and a shard that had already closed
    // its partitions and left the mesh would leave that request waiting out the whole
    // shutdown grace period.
    shared.drained_shards.fetch_add(1, Ordering::SeqCst);
    while shared.drained_shards.load(Ordering::SeqCst) < nr_shards as usize {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    cluster::close_all(&ctx).await;
    drop(admin_stop);
    if let Some(task) = admin_task {
        task.await;
    }
    ctx.close_mesh();
    Ok(())
}

/// Deletes expired segments of this shard's partitions every
/// `log.retention.check.interval.ms`, on the low-priority background queue so that it yields to
/// the request path.
///
/// Runs on the shard that owns the partitions.
fn spawn_retention(ctx: &Rc<BrokerCtx>, shared: Arc<ListenerShared>) {
    let interval = Duration::from_millis(ctx.state().config.log_retention_check_interval_ms);
    let weak = Rc::downgrade(ctx);
    ctx.spawn_background(async move {
        loop {
            glommio::timer::sleep(interval).await;
            if shared.shutdown.load(Ordering::SeqCst) {
                return;
            }
            let Some(ctx) = weak.upgrade() else { return };
            let now = sluice_engine::partition::now_ms();
            for p in ctx.state().cluster.online_partitions() {
                match sluice_engine::retention::enforce_retention(&p, now).await {
                    Ok(outcome) if outcome.deleted_segments > 0 => tracing::info!(
                        tp = %p.topic_partition(),
                        deleted = outcome.deleted_segments,
                        log_start = %outcome.log_start_offset,
                        "retention deleted segments"
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(tp = %p.topic_partition(), error = %e, "retention failed")
                    }
                }
            }
        }
    });
}

/// Runs this shard's log cleaner (compaction of `cleanup.policy=compact` topics, internal
/// ones included) every `log.cleaner.backoff.ms`, on the low-priority background queue so
/// that it yields to the request path; its totals feed the shard's metrics.
///
/// Runs on the shard that owns the partitions.
fn spawn_cleaner(ctx: &Rc<BrokerCtx>, shared: Arc<ListenerShared>) {
    let backoff = Duration::from_millis(ctx.state().config.log_cleaner_backoff_ms);
    let io_limit = ctx.state().config.log_cleaner_io_max_bytes_per_second;
    let pace = ctx.state().config.log_cleaner_pace;
    let key_map_bytes = ctx.state().config.log_cleaner_key_map_bytes_per_shard;
    let weak = Rc::downgrade(ctx);
    ctx.spawn_background(async move {
        let mut cleaner =
            sluice_engine::cleaner::Cleaner::new(sluice_engine::cleaner::CleanerOptions {
                io_bytes_per_sec: io_limit,
                backlog_pace: pace,
                key_map_bytes,
                ..sluice_engine::cleaner::CleanerOptions::default()
            });
        loop {
            glommio::timer::sleep(backoff).await;
            if shared.shutdown.load(Ordering::SeqCst) {
                return;
            }
            let Some(ctx) = weak.upgrade() else { return };
            let parts = ctx.state().cluster.online_partitions();
            cleaner
                .run_round(&parts, sluice_engine::partition::now_ms())
                .await;
            ctx.state().metrics.cleaner_totals(&cleaner);
        }
    });
}

/// Decodes Kafka requests, dispatches them to the handlers and encodes the responses.
struct KafkaHandler {
    ctx: Rc<BrokerCtx>,
    /// The client's address, on the handler of one connection.
    peer: Option<std::net::SocketAddr>,
}

impl Handler for KafkaHandler {
    fn handle(self: Rc<Self>, frame: Bytes) -> LocalFuture<Reply> {
        Box::pin(async move {
            crate::handlers::handle_frame_ordered(
                &self.ctx,
                frame,
                OrderPoint::unordered(),
                self.peer,
            )
            .await
        })
    }

    fn for_peer(self: &Rc<Self>, peer: std::net::SocketAddr) -> Rc<Self> {
        Rc::new(KafkaHandler {
            ctx: self.ctx.clone(),
            peer: Some(peer),
        })
    }

    fn connection_event(&self, event: crate::connection::ConnectionEvent) {
        self.ctx.state().metrics.connection_event(event);
    }
    fn shutting_down(&self) {
        self.ctx.state().shutdown.trigger();
    }
    fn handle_ordered(self: Rc<Self>, frame: Bytes, order: OrderPoint) -> LocalFuture<Reply> {
        Box::pin(async move {
            crate::handlers::handle_frame_ordered(&self.ctx, frame, order, self.peer).await
        })
    }
}
