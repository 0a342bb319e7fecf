//! Broker metrics: kept per shard in plain cells, gathered through the mesh at scrape time.
//!
//! Every shard owns one [`ShardMetrics`] in its `ShardState`. The request path updates it with
//! `Cell` arithmetic only — no atomics, no locks, no cross-core traffic — because a shard is one
//! thread. A scrape (`/metrics` on the admin listener) asks every shard for a [`ShardSnapshot`]
//! with `ShardCtx::call_all`; the snapshots are plain `Send` data, merged on the scraping shard
//! and rendered in Prometheus text format by [`render`].
//!
//! Where a figure is counted decides which shard holds it, and the merge makes that invisible:
//! - per-API request counts, latency and errors, bytes and records fetched: the shard of the
//!   connection that sent the request;
//! - bytes and records produced: the partition's home shard, once the append succeeded;
//! - fsync latency, batch-cache hits and misses, busy time, connections: the shard itself, and
//!   exported with a `shard` label, since they describe that core's disk, memory and CPU.
//!
//! Request latency is measured from the decoded request to the encoded response (it includes
//! waiting for fdatasync and long polling, not the time the frame waited in the socket). Bytes
//! are record-batch bytes as stored (after any recompression the topic asks for); records are
//! counted from the batch headers, so a fetched batch that starts before the fetch offset counts
//! whole, exactly as the client receives it. Headers are read only where the response holds
//! them in memory: a batch sent as a range of its segment file (cold data the kernel moves to
//! the socket) counts in bytes, but not in records, because reading its header would be a disk
//! read on the request path.

pub mod exposition;
pub mod process;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_engine::batch::BatchHeader;
use sluice_engine::durability::FlushStats;
use sluice_engine::histogram::{HistogramSnapshot, LatencyHistogram};
use sluice_engine::limits::BATCH_HEADER_BYTES;
use sluice_engine::types::TopicPartition;
use sluice_protocol::{ApiKey, Records, RecordsPiece, Response, Uuid};

use crate::broker::BrokerCtx;
use crate::cluster::ClusterState;
use exposition::{Exposition, Kind};
use sluice_engine::cleaner::{Cleaner, CleanerStats, Uncleanable};

/// The metrics of one shard.
///
/// Owned by its shard; never crosses cores.
pub struct ShardMetrics {
    /// Indexed by API key.
    apis: Vec<ApiMetrics>,
    partitions: RefCell<HashMap<TopicPartition, PartitionCounters>>,
    undecodable: Cell<u64>,
    fetches_parked: Cell<u64>,
    connections_open: Cell<u64>,
    connections_accepted: Cell<u64>,
    connections_refused: Cell<u64>,
    /// glommio hands out its executor statistics as deltas (reading resets them), so the
    /// running totals are kept here.
    busy: Cell<Duration>,
    task_time: Cell<Duration>,
    tasks: Cell<u64>,
    /// The shard's log cleaner: totals since start and its last round's duration (µs).
    cleaner: Cell<CleanerStats>,
    cleaner_last_round_us: Cell<u64>,
    /// The partitions the shard's cleaner gave up, as of its last round.
    cleaner_uncleanable: Cell<Uncleanable>,
    /// The I/O rate of the cleaner's last round (0: unpaced).
    cleaner_io_rate: Cell<u64>,
}

#[derive(Default)]
struct ApiMetrics {
    requests: Cell<u64>,
    in_flight: Cell<u64>,
    latency: LatencyHistogram,
    /// (error code, responses or partitions answered with it); a handful of codes at most.
    errors: RefCell<Vec<(i16, u64)>>,
}

/// Bytes and records moved for one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionCounters {
    pub produced_bytes: u64,
    pub produced_records: u64,
    pub fetched_bytes: u64,
    pub fetched_records: u64,
}

impl PartitionCounters {
    fn add(&mut self, other: &PartitionCounters) {
        self.produced_bytes += other.produced_bytes;
        self.produced_records += other.produced_records;
        self.fetched_bytes += other.fetched_bytes;
        self.fetched_records += other.fetched_records;
    }
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics::new()
    }
}

impl ShardMetrics {
    pub fn new() -> ShardMetrics {
        let slots = ApiKey::ALL
            .iter()
            .map(|k| *k as i16 as usize + 1)
            .max()
            .unwrap_or(0);
        ShardMetrics {
            apis: (0..slots).map(|_| ApiMetrics::default()).collect(),
            partitions: RefCell::new(HashMap::new()),
            undecodable: Cell::new(0),
            fetches_parked: Cell::new(0),
            connections_open: Cell::new(0),
            connections_accepted: Cell::new(0),
            connections_refused: Cell::new(0),
            busy: Cell::new(Duration::ZERO),
            task_time: Cell::new(Duration::ZERO),
            tasks: Cell::new(0),
            cleaner: Cell::new(CleanerStats::default()),
            cleaner_last_round_us: Cell::new(0),
            cleaner_uncleanable: Cell::new(Uncleanable::default()),
            cleaner_io_rate: Cell::new(0),
        }
    }

    /// Records the shard cleaner's totals after a round.
    pub fn cleaner_totals(&self, cleaner: &Cleaner) {
        self.cleaner.set(cleaner.totals());
        self.cleaner_last_round_us.set(cleaner.last_round_us());
        self.cleaner_uncleanable.set(cleaner.uncleanable());
        self.cleaner_io_rate.set(cleaner.io_rate().unwrap_or(0));
    }

    /// Starts timing a request of `api`; the returned guard counts it (and its latency) when it
    /// is dropped, however the request ends, and logs it at debug level.
    ///
    /// Runs on the connection's shard.
    pub fn request_started(
        &self,
        api: ApiKey,
        version: i16,
        correlation_id: i32,
    ) -> RequestTimer<'_> {
        let m = self.api(api);
        if let Some(m) = m {
            bump(&m.in_flight, 1);
        }
        RequestTimer {
            api,
            version,
            correlation_id,
            metrics: m,
            started: Instant::now(),
        }
    }

    /// Counts one error `code` answered to a request of `api`.
    pub fn count_error(&self, api: ApiKey, code: i16) {
        if let Some(m) = self.api(api) {
            let mut errors = m.errors.borrow_mut();
            match errors.iter_mut().find(|(c, _)| *c == code) {
                Some((_, n)) => *n += 1,
                None => errors.push((code, 1)),
            }
        }
    }

    /// Counts a frame that could not be decoded as a request at all.
    pub fn count_undecodable(&self) {
        bump(&self.undecodable, 1);
    }

    /// Counts what a response tells about the data path: the error codes of Produce and Fetch
    /// responses (top level and per partition), and the bytes and records a Fetch returns.
    ///
    /// Runs on the connection's shard, before the response is encoded.
    pub fn observe_response(&self, cluster: &ClusterState, response: &Response) {
        self.observe(response, |id| {
            cluster.topics().topic_by_id(id).map(|m| m.name.clone())
        });
    }

    /// [`ShardMetrics::observe_response`], with `topic_name` naming topics that a response
    /// gives by id only.
    fn observe(&self, response: &Response, topic_name: impl Fn(&Uuid) -> Option<Arc<str>>) {
        match response {
            Response::Produce(r) => {
                for p in r.responses.iter().flat_map(|t| &t.partition_responses) {
                    if p.error_code != crate::errors::NONE {
                        self.count_error(ApiKey::Produce, p.error_code);
                    }
                }
            }
            Response::Fetch(r) => {
                if r.error_code != crate::errors::NONE {
                    self.count_error(ApiKey::Fetch, r.error_code);
                }
                for t in &r.responses {
                    // From v13 responses name topics by id only.
                    let name = if t.topic.is_empty() {
                        topic_name(&t.topic_id)
                    } else {
                        Some(Arc::from(t.topic.as_str()))
                    };
                    for p in &t.partitions {
                        if p.error_code != crate::errors::NONE {
                            self.count_error(ApiKey::Fetch, p.error_code);
                        }
                        let (Some(name), Some(records)) = (&name, &p.records) else {
                            continue;
                        };
                        if records.byte_len() == 0 {
                            continue;
                        }
                        let tp = TopicPartition {
                            topic: name.clone(),
                            partition: p.partition_index,
                        };
                        self.update_partition(&tp, |c| {
                            c.fetched_bytes += records.byte_len() as u64;
                            c.fetched_records += count_records(records);
                        });
                    }
                }
            }
            _ => {}
        }
    }

    /// Counts a successful append of `bytes` bytes holding `records` records to `tp`.
    ///
    /// Runs on `tp`'s home shard.
    pub fn produced(&self, tp: &TopicPartition, bytes: usize, records: i64) {
        self.update_partition(tp, |c| {
            c.produced_bytes += bytes as u64;
            c.produced_records += records.max(0) as u64;
        });
    }

    /// Marks a fetch as parked (waiting for appends) while the returned guard lives.
    ///
    /// Runs on the connection's shard.
    pub fn fetch_parked(&self) -> GaugeGuard<'_> {
        GaugeGuard::new(&self.fetches_parked)
    }

    /// Tells the metrics about a connection of this shard's listener.
    pub fn connection_event(&self, event: crate::connection::ConnectionEvent) {
        use crate::connection::ConnectionEvent;
        match event {
            ConnectionEvent::Opened => {
                bump(&self.connections_accepted, 1);
                bump(&self.connections_open, 1);
            }
            ConnectionEvent::Closed => {
                self.connections_open
                    .set(self.connections_open.get().saturating_sub(1));
            }
            ConnectionEvent::Refused => bump(&self.connections_refused, 1),
        }
    }

    /// This shard's figures now, engine statistics included.
    ///
    /// Runs on this shard (glommio's executor statistics are read from the calling thread).
    pub fn snapshot(&self, ctx: &BrokerCtx) -> ShardSnapshot {
        let stats = glommio::executor().executor_stats();
        self.busy.set(self.busy.get() + stats.total_runtime());
        self.task_time
            .set(self.task_time.get() + stats.executor_runtime());
        bump(&self.tasks, stats.tasks_executed());

        let cluster = &ctx.state().cluster;
        let topics = cluster.topics();
        // Series of deleted topics go away with them.
        self.partitions
            .borrow_mut()
            .retain(|tp, _| topics.topic(&tp.topic).is_some());
        let engine = cluster.engine();
        let (cache_hits, cache_misses) = engine.cache.stats();
        ShardSnapshot {
            shard: ctx.id().0,
            apis: ApiKey::ALL
                .iter()
                .filter_map(|&key| {
                    let m = self.api(key)?;
                    Some(ApiSnapshot {
                        key,
                        requests: m.requests.get(),
                        in_flight: m.in_flight.get(),
                        latency: m.latency.snapshot(),
                        errors: m.errors.borrow().clone(),
                    })
                })
                .collect(),
            partitions: self
                .partitions
                .borrow()
                .iter()
                .map(|(tp, c)| (tp.clone(), *c))
                .collect(),
            undecodable: self.undecodable.get(),
            fetches_parked: self.fetches_parked.get(),
            connections_open: self.connections_open.get(),
            connections_accepted: self.connections_accepted.get(),
            connections_refused: self.connections_refused.get(),
            busy: self.busy.get(),
            task_time: self.task_time.get(),
            tasks: self.tasks.get(),
            flush: engine.flusher.stats(),
            write_latency: engine.write_latency.snapshot(),
            cache_hits,
            cache_misses,
            cache_bytes: engine.cache.bytes() as u64,
            partitions_online: cluster.online_partitions().len() as u64,
            cleaner: self.cleaner.get(),
            cleaner_last_round_us: self.cleaner_last_round_us.get(),
            cleaner_uncleanable: self.cleaner_uncleanable.get(),
            cleaner_io_rate: self.cleaner_io_rate.get(),
        }
    }

    fn api(&self, api: ApiKey) -> Option<&ApiMetrics> {
        self.apis.get(api as i16 as usize)
    }

    fn update_partition(&self, tp: &TopicPartition, f: impl FnOnce(&mut PartitionCounters)) {
        let mut parts = self.partitions.borrow_mut();
        match parts.get_mut(tp) {
            Some(c) => f(c),
            None => f(parts.entry(tp.clone()).or_default()),
        }
    }
}

/// Times one request; counts and logs it when dropped.
pub struct RequestTimer<'a> {
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    metrics: Option<&'a ApiMetrics>,
    started: Instant,
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        if let Some(m) = self.metrics {
            m.in_flight.set(m.in_flight.get().saturating_sub(1));
            bump(&m.requests, 1);
            m.latency.observe(elapsed);
        }
        tracing::debug!(
            api = self.api.info().name,
            version = self.version,
            correlation_id = self.correlation_id,
            elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "request handled"
        );
    }
}

/// Holds one unit of a shard-local gauge while it lives.
pub struct GaugeGuard<'a>(&'a Cell<u64>);

impl<'a> GaugeGuard<'a> {
    fn new(gauge: &'a Cell<u64>) -> GaugeGuard<'a> {
        bump(gauge, 1);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

fn bump(cell: &Cell<u64>, by: u64) {
    cell.set(cell.get().wrapping_add(by));
}

/// Record data as a Fetch response carries it: its length, and the batch header at a position
/// when those bytes are in memory.
pub trait RecordData {
    fn byte_len(&self) -> usize;
    fn header_at(&self, pos: usize) -> Option<BatchHeader>;
}

impl RecordData for Bytes {
    fn byte_len(&self) -> usize {
        self.len()
    }

    fn header_at(&self, pos: usize) -> Option<BatchHeader> {
        self.get(pos..).and_then(BatchHeader::read)
    }
}

/// Response records are pieces: buffers (batch cache, a batch often as header and body) and
/// file ranges (cold data the kernel sends from the segment file). A header may span buffers;
/// one inside a file range is not read here (that would be a disk read on the request path).
impl RecordData for Records {
    fn byte_len(&self) -> usize {
        self.len()
    }

    fn header_at(&self, mut pos: usize) -> Option<BatchHeader> {
        let mut header = [0u8; BATCH_HEADER_BYTES];
        let mut filled = 0;
        for piece in self.pieces() {
            let len = piece.len();
            if pos >= len {
                pos -= len;
                continue;
            }
            let RecordsPiece::Bytes(bytes) = piece else {
                return None;
            };
            let take = (len - pos).min(BATCH_HEADER_BYTES - filled);
            header[filled..filled + take].copy_from_slice(&bytes[pos..pos + take]);
            filled += take;
            pos = 0;
            if filled == BATCH_HEADER_BYTES {
                return BatchHeader::read(&header);
            }
        }
        None
    }
}

/// Records in the whole batches of `records` (as a fetch returns them), from their headers.
/// Counting stops at the first header that is not in memory.
pub fn count_records(records: &impl RecordData) -> u64 {
    let mut pos = 0usize;
    let mut total = 0u64;
    while let Some(h) = records.header_at(pos) {
        total += h.record_count.max(0) as u64;
        let Ok(len) = usize::try_from(h.total_len) else {
            break;
        };
        if len == 0 {
            break;
        }
        pos = pos.saturating_add(len);
    }
    total
}

/// One API's figures on one shard.
#[derive(Debug, Clone)]
pub struct ApiSnapshot {
    pub key: ApiKey,
    pub requests: u64,
    pub in_flight: u64,
    pub latency: HistogramSnapshot,
    pub errors: Vec<(i16, u64)>,
}

/// One shard's figures at one moment: plain data, sent to the shard serving the scrape.
#[derive(Debug, Clone)]
pub struct ShardSnapshot {
    pub shard: u32,
    pub apis: Vec<ApiSnapshot>,
    pub partitions: Vec<(TopicPartition, PartitionCounters)>,
    pub undecodable: u64,
    pub fetches_parked: u64,
    pub connections_open: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub busy: Duration,
    pub task_time: Duration,
    pub tasks: u64,
    pub flush: FlushStats,
    /// Latencies of the writes of active segments (the engine's `ShardContext::write_latency`).
    pub write_latency: HistogramSnapshot,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_bytes: u64,
    pub partitions_online: u64,
    pub cleaner: CleanerStats,
    pub cleaner_last_round_us: u64,
    pub cleaner_uncleanable: Uncleanable,
    pub cleaner_io_rate: u64,
}

/// Why a scrape could not gather every shard's figures.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    #[error("shard {shard} did not answer: {reason}")]
    Shard { shard: u32, reason: String },
    #[error("the shards did not answer within {0:?}")]
    Timeout(Duration),
}

/// Collects every shard's snapshot through the mesh, in shard order. Fails if any shard does
/// not answer within `timeout`: a scrape that silently lacked a shard would show its counters
/// dropping, which a monitoring system reads as a reset.
///
/// Runs on the shard serving the scrape.
pub async fn gather(
    ctx: &Rc<BrokerCtx>,
    timeout: Duration,
) -> Result<Vec<ShardSnapshot>, GatherError> {
    let calls =
        ctx.call_all(|shard: Rc<BrokerCtx>| async move { shard.state().metrics.snapshot(&shard) });
    let answers = futures_lite::future::or(async { Some(calls.await) }, async {
        glommio::timer::sleep(timeout).await;
        None
    })
    .await
    .ok_or(GatherError::Timeout(timeout))?;
    answers
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.map_err(|e| GatherError::Shard {
                shard: i as u32,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Renders the shards' snapshots (and the process's figures, when they could be read) as one
/// Prometheus text exposition. Request and partition figures are summed over shards; per-core
/// resources keep a `shard` label.
pub fn render(shards: &[ShardSnapshot], process: Option<&process::ProcessStats>) -> String {
    let mut e = Exposition::new();
    e.family(
        "sluice_build_info",
        Kind::Gauge,
        "Always 1; the version label names the running build.",
    );
    e.sample(
        "sluice_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    e.family(
        "sluice_shards",
        Kind::Gauge,
        "Shards (cores) the broker runs.",
    );
    e.sample("sluice_shards", &[], shards.len() as u64);
    render_requests(&mut e, shards);
    render_partitions(&mut e, shards);
    render_shards(&mut e, shards);
    render_cleaner(&mut e, shards);
    if let Some(p) = process {
        render_process(&mut e, p);
    }
    e.finish()
}

/// The process collector's families, as Prometheus client libraries name them.
fn render_process(e: &mut Exposition, p: &process::ProcessStats) {
    let families: [(&str, Kind, &str, f64); 6] = [
        (
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        ),
        (
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
            p.resident_bytes as f64,
        ),
        (
            "process_virtual_memory_bytes",
            Kind::Gauge,
            "Virtual memory size in bytes.",
            p.virtual_bytes as f64,
        ),
        (
            "process_open_fds",
            Kind::Gauge,
            "Number of open file descriptors.",
            p.open_fds as f64,
        ),
        (
            "process_max_fds",
            Kind::Gauge,
            "Maximum number of open file descriptors.",
            p.max_fds as f64,
        ),
        (
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        ),
    ];
    for (name, kind, help, value) in families {
        e.family(name, kind, help);
        e.sample_f64(name, &[], value);
    }
}

/// Per-API figures summed over shards. Every served API has series from the start, so that
/// rates work from the first request; an API that is not served appears once it was asked for.
fn render_requests(e: &mut Exposition, shards: &[ShardSnapshot]) {
    let served: Vec<ApiKey> = crate::handlers::served().iter().map(|s| s.key).collect();
    let empty = |key| ApiSnapshot {
        key,
        requests: 0,
        in_flight: 0,
        latency: HistogramSnapshot::default(),
        errors: Vec::new(),
    };
    let mut apis: BTreeMap<ApiKey, ApiSnapshot> =
        served.iter().map(|&key| (key, empty(key))).collect();
    for a in shards.iter().flat_map(|s| &s.apis) {
        let merged = apis.entry(a.key).or_insert_with(|| empty(a.key));
        merged.requests += a.requests;
        merged.in_flight += a.in_flight;
        merged.latency.merge(&a.latency);
        for &(code, n) in &a.errors {
            match merged.errors.iter_mut().find(|(c, _)| *c == code) {
                Some((_, m)) => *m += n,
                None => merged.errors.push((code, n)),
            }
        }
    }
    apis.retain(|key, a| {
        served.contains(key) || a.requests > 0 || a.in_flight > 0 || !a.errors.is_empty()
    });
    let name = |k: &ApiKey| k.info().name;

    e.family(
        "sluice_requests_total",
        Kind::Counter,
        "Kafka requests answered, by API.",
    );
    for (k, a) in &apis {
        e.sample("sluice_requests_total", &[("api", name(k))], a.requests);
    }
    e.family(
        "sluice_request_duration_seconds",
        Kind::Histogram,
        "Time from a decoded Kafka request to its encoded response, by API.",
    );
    for (k, a) in &apis {
        e.histogram(
            "sluice_request_duration_seconds",
            &[("api", name(k))],
            &a.latency,
        );
    }
    e.family(
        "sluice_requests_in_flight",
        Kind::Gauge,
        "Kafka requests being handled now, by API (the produce and fetch queue depths).",
    );
    for (k, a) in &apis {
        e.sample(
            "sluice_requests_in_flight",
            &[("api", name(k))],
            a.in_flight,
        );
    }
    e.family(
        "sluice_request_errors_total",
        Kind::Counter,
        "Kafka error codes answered, by API and code: request-level codes, and for Produce and \
         Fetch each partition's code.",
    );
    for (k, a) in &apis {
        let mut errors = a.errors.clone();
        errors.sort_unstable();
        for (code, n) in errors {
            let code = code.to_string();
            e.sample(
                "sluice_request_errors_total",
                &[("api", name(k)), ("code", &code)],
                n,
            );
        }
    }
    e.family(
        "sluice_requests_undecodable_total",
        Kind::Counter,
        "Request frames that could not be decoded (the connection is closed or answered with \
         an error).",
    );
    e.sample(
        "sluice_requests_undecodable_total",
        &[],
        shards.iter().map(|s| s.undecodable).sum(),
    );
    e.family(
        "sluice_fetches_parked",
        Kind::Gauge,
        "Fetch requests waiting (long polling) for appends.",
    );
    e.sample(
        "sluice_fetches_parked",
        &[],
        shards.iter().map(|s| s.fetches_parked).sum(),
    );
}

/// Reads one counter of a partition's figures.
type PartitionField = fn(&PartitionCounters) -> u64;

/// Bytes and records per topic and partition, summed over shards.
fn render_partitions(e: &mut Exposition, shards: &[ShardSnapshot]) {
    let mut parts: BTreeMap<&TopicPartition, PartitionCounters> = BTreeMap::new();
    for (tp, c) in shards.iter().flat_map(|s| &s.partitions) {
        parts.entry(tp).or_default().add(c);
    }
    let families: [(&str, &str, PartitionField); 4] = [
        (
            "sluice_partition_produced_bytes_total",
            "Record-batch bytes appended by Produce requests.",
            |c| c.produced_bytes,
        ),
        (
            "sluice_partition_produced_records_total",
            "Records appended by Produce requests.",
            |c| c.produced_records,
        ),
        (
            "sluice_partition_fetched_bytes_total",
            "Record-batch bytes returned by Fetch responses.",
            |c| c.fetched_bytes,
        ),
        (
            "sluice_partition_fetched_records_total",
            "Records returned by Fetch responses (whole batches, as sent).",
            |c| c.fetched_records,
        ),
    ];
    for (family, help, value) in families {
        e.family(family, Kind::Counter, help);
        for (tp, c) in &parts {
            let partition = tp.partition.to_string();
            e.sample(
                family,
                &[("topic", &tp.topic), ("partition", &partition)],
                value(c),
            );
        }
    }
}

/// Figures of each core's own resources, labelled by shard.
fn render_shards(e: &mut Exposition, shards: &[ShardSnapshot]) {
    let ids: Vec<String> = shards.iter().map(|s| s.shard.to_string()).collect();
    let each = |e: &mut Exposition,
                family: &str,
                kind: Kind,
                help: &str,
                f: &dyn Fn(&ShardSnapshot) -> u64| {
        e.family(family, kind, help);
        for (s, id) in shards.iter().zip(&ids) {
            e.sample(family, &[("shard", id)], f(s));
        }
    };
    each(
        e,
        "sluice_connections_open",
        Kind::Gauge,
        "Kafka client connections open on the shard.",
        &|s| s.connections_open,
    );
    each(
        e,
        "sluice_connections_accepted_total",
        Kind::Counter,
        "Kafka client connections accepted by the shard.",
        &|s| s.connections_accepted,
    );
    each(
        e,
        "sluice_connections_refused_total",
        Kind::Counter,
        "Kafka client connections closed at once because the broker had max-connections open.",
        &|s| s.connections_refused,
    );
    each(
        e,
        "sluice_shard_partitions",
        Kind::Gauge,
        "Online partitions whose home is the shard.",
        &|s| s.partitions_online,
    );
    let each_histogram =
        |e: &mut Exposition,
         family: &str,
         help: &str,
         f: &dyn Fn(&ShardSnapshot) -> &HistogramSnapshot| {
            e.family(family, Kind::Histogram, help);
            for (s, id) in shards.iter().zip(&ids) {
                e.histogram(family, &[("shard", id)], f(s));
            }
        };
    each_histogram(
        e,
        "sluice_fsync_duration_seconds",
        "Time to make one partition durable in a group-commit round (its last buffered write \
         plus fdatasync).",
        &|s| &s.flush.flush_latency,
    );
    each_histogram(
        e,
        "sluice_log_write_duration_seconds",
        "Time of one write of an active segment, from submission to completion (acks=1 \
         waits for the write that carries its batch, and for the one in flight before it).",
        &|s| &s.write_latency,
    );
    each(
        e,
        "sluice_flush_rounds_total",
        Kind::Counter,
        "Group-commit flush rounds completed (one fdatasync per dirty partition each).",
        &|s| s.flush.rounds,
    );
    each(
        e,
        "sluice_fsync_waiting_appends",
        Kind::Gauge,
        "acks=all appends waiting for a flush round to cover them.",
        &|s| s.flush.syncs_waiting,
    );
    each(
        e,
        "sluice_batch_cache_hits_total",
        Kind::Counter,
        "Reads served from the shard's batch cache (hit ratio: hits / (hits + misses)).",
        &|s| s.cache_hits,
    );
    each(
        e,
        "sluice_batch_cache_misses_total",
        Kind::Counter,
        "Reads the shard's batch cache could not serve (read from the segment files).",
        &|s| s.cache_misses,
    );
    each(
        e,
        "sluice_batch_cache_bytes",
        Kind::Gauge,
        "Bytes held by the shard's batch cache.",
        &|s| s.cache_bytes,
    );
    let seconds =
        |e: &mut Exposition, family: &str, help: &str, f: &dyn Fn(&ShardSnapshot) -> Duration| {
            e.family(family, Kind::Counter, help);
            for (s, id) in shards.iter().zip(&ids) {
                e.sample_f64(family, &[("shard", id)], f(s).as_secs_f64());
            }
        };
    seconds(
        e,
        "sluice_shard_busy_seconds_total",
        "Time the shard's executor was not parked: running tasks and polling I/O (glommio's \
         total runtime).",
        &|s| s.busy,
    );
    seconds(
        e,
        "sluice_shard_task_seconds_total",
        "Time the shard's executor spent running tasks (glommio's executor runtime).",
        &|s| s.task_time,
    );
    each(
        e,
        "sluice_shard_tasks_total",
        Kind::Counter,
        "Tasks the shard's executor ran.",
        &|s| s.tasks,
    );
}

/// The log cleaner's figures, per shard (each shard cleans its own partitions).
fn render_cleaner(e: &mut Exposition, shards: &[ShardSnapshot]) {
    /// (name, help, the figure).
    type Counter = (&'static str, &'static str, fn(&CleanerStats) -> u64);
    let counters: [Counter; 5] = [
        (
            "sluice_cleaner_bytes_read_total",
            "Bytes of segments the log cleaner read.",
            |c| c.bytes_read + c.map_bytes_read,
        ),
        (
            "sluice_cleaner_bytes_written_total",
            "Bytes of cleaned segments the log cleaner wrote.",
            |c| c.bytes_written,
        ),
        (
            "sluice_cleaner_passes_total",
            "Cleaning passes (a pass maps as many keys as the key map holds and rewrites the segments below).",
            |c| c.passes,
        ),
        (
            "sluice_cleaner_records_removed_total",
            "Records the log cleaner removed (superseded, expired tombstones, aborted).",
            |c| c.records_read - c.records_kept,
        ),
        (
            "sluice_cleaner_segments_replaced_total",
            "Segments replaced by cleaned ones.",
            |c| c.segments_replaced,
        ),
    ];
    for (name, help, get) in counters {
        e.family(name, Kind::Counter, help);
        for s in shards {
            e.sample(name, &[("shard", &s.shard.to_string())], get(&s.cleaner));
        }
    }
    let name = "sluice_cleaner_io_rate_bytes_per_second";
    e.family(
        name,
        Kind::Gauge,
        "The I/O rate (reads and writes) the cleaner's last round was paced at: its backlog \
         spread over --log-cleaner-pace-seconds, capped by log.cleaner.io.max.bytes.per.second \
         (0: unpaced).",
    );
    for s in shards {
        e.sample(name, &[("shard", &s.shard.to_string())], s.cleaner_io_rate);
    }
    let name = "sluice_cleaner_last_round_seconds";
    e.family(
        name,
        Kind::Gauge,
        "Duration of the last cleaner round that cleaned something.",
    );
    for s in shards {
        e.sample_f64(
            name,
            &[("shard", &s.shard.to_string())],
            s.cleaner_last_round_us as f64 / 1e6,
        );
    }
    /// (name, help, the figure).
    type Gauge = (&'static str, &'static str, fn(&Uncleanable) -> u64);
    let gauges: [Gauge; 2] = [
        (
            "sluice_cleaner_uncleanable_partitions",
            "Compacted partitions the log cleaner gave up after a failure (corrupt data, I/O \
             error) and skips until a restart or until the topic is re-created (Kafka's \
             uncleanable-partitions-count).",
            |u| u.partitions,
        ),
        (
            "sluice_cleaner_uncleanable_bytes",
            "Dirty bytes of the uncleanable partitions, left uncleaned (Kafka's uncleanable-bytes).",
            |u| u.bytes,
        ),
    ];
    for (name, help, get) in gauges {
        e.family(name, Kind::Gauge, help);
        for s in shards {
            e.sample(
                name,
                &[("shard", &s.shard.to_string())],
                get(&s.cleaner_uncleanable),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_engine::builder::BatchBuilder;
    use sluice_engine::compression::Codec;

    fn batch(records: usize) -> Vec<u8> {
        let mut b = BatchBuilder::new(Codec::None);
        for i in 0..records {
            b.append(1000 + i as i64, None, Some(b"v"), &[]).unwrap();
        }
        b.build().unwrap().to_vec()
    }

    #[test]
    fn records_are_counted_from_every_batch_header() {
        let mut two = batch(3);
        two.extend(batch(5));
        assert_eq!(count_records(&Bytes::from(two.clone())), 8);
        assert_eq!(count_records(&Bytes::new()), 0);
        // A truncated trailing header is not counted (fetches return whole batches only).
        let cut = two.len() - batch(5).len() + 30;
        assert_eq!(count_records(&Bytes::from(two[..cut].to_vec())), 3);
        // Headers split across pieces, as the batch cache hands batches out.
        let bytes = Bytes::from(two);
        let split = Records::from_pieces(vec![
            RecordsPiece::Bytes(bytes.slice(..20)),
            RecordsPiece::Bytes(bytes.slice(20..61)),
            RecordsPiece::Bytes(bytes.slice(61..100)),
            RecordsPiece::Bytes(bytes.slice(100..)),
        ]);
        assert_eq!(count_records(&split), 8);
        assert_eq!(split.byte_len(), bytes.len());
    }

    #[test]
    fn responses_count_partition_errors_and_fetched_data_by_topic_name_or_id() {
        use sluice_protocol::messages::fetch_response::{
            FetchResponse, FetchableTopicResponse, PartitionData,
        };
        use sluice_protocol::messages::produce_response::{
            PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
        };
        let m = ShardMetrics::new();
        let produce = ProduceResponse {
            responses: vec![TopicProduceResponse {
                name: "t".into(),
                partition_responses: vec![
                    PartitionProduceResponse {
                        index: 0,
                        error_code: 0,
                        ..PartitionProduceResponse::default()
                    },
                    PartitionProduceResponse {
                        index: 1,
                        error_code: 6,
                        ..PartitionProduceResponse::default()
                    },
                ],
                ..TopicProduceResponse::default()
            }],
            ..ProduceResponse::default()
        };
        m.observe(&Response::Produce(produce), |_| None);
        let mut three = batch(2);
        three.extend(batch(1));
        let id = Uuid([7; 16]);
        let fetch = FetchResponse {
            responses: vec![
                // v13+: by id only.
                FetchableTopicResponse {
                    topic_id: id,
                    partitions: vec![PartitionData {
                        partition_index: 2,
                        records: Some(Records::from(three.clone())),
                        ..PartitionData::default()
                    }],
                    ..FetchableTopicResponse::default()
                },
                FetchableTopicResponse {
                    topic: "t".into(),
                    partitions: vec![PartitionData {
                        partition_index: 0,
                        error_code: 1,
                        records: Some(Records::new()),
                        ..PartitionData::default()
                    }],
                    ..FetchableTopicResponse::default()
                },
            ],
            ..FetchResponse::default()
        };
        m.observe(&Response::Fetch(fetch), |asked| {
            (*asked == id).then(|| Arc::from("by-id"))
        });
        let errors = |api| m.api(api).map(|a| a.errors.borrow().clone());
        assert_eq!(errors(ApiKey::Produce), Some(vec![(6, 1)]));
        assert_eq!(errors(ApiKey::Fetch), Some(vec![(1, 1)]));
        let parts = m.partitions.borrow();
        let by_id = parts.get(&TopicPartition::new("by-id", 2)).copied();
        assert_eq!(
            by_id,
            Some(PartitionCounters {
                fetched_bytes: three.len() as u64,
                fetched_records: 3,
                ..PartitionCounters::default()
            })
        );
        // An empty records field moves nothing.
        assert!(parts.get(&TopicPartition::new("t", 0)).is_none());
    }

    /// `shard + 1` writes of at most 250 µs and one of over 10 s.
    fn write_latency(shard: u32) -> HistogramSnapshot {
        let h = LatencyHistogram::new();
        for _ in 0..=shard {
            h.observe(Duration::from_micros(200));
        }
        h.observe(Duration::from_secs(11));
        h.snapshot()
    }

    fn snapshot(shard: u32, produced: u64, requests: u64) -> ShardSnapshot {
        let mut latency = HistogramSnapshot::default();
        latency.counts[0] = requests;
        ShardSnapshot {
            shard,
            apis: vec![ApiSnapshot {
                key: ApiKey::Produce,
                requests,
                in_flight: 1,
                latency,
                errors: vec![(6, 1)],
            }],
            partitions: vec![(
                TopicPartition::new("t\"x", 0),
                PartitionCounters {
                    produced_bytes: produced,
                    produced_records: 1,
                    fetched_bytes: 0,
                    fetched_records: 0,
                },
            )],
            undecodable: 0,
            fetches_parked: 0,
            connections_open: 2,
            connections_accepted: 3,
            connections_refused: 0,
            busy: Duration::from_millis(1500),
            task_time: Duration::from_millis(500),
            tasks: 10,
            flush: FlushStats::default(),
            write_latency: write_latency(shard),
            cache_hits: 4,
            cache_misses: 1,
            cache_bytes: 0,
            partitions_online: 1,
            cleaner: CleanerStats::default(),
            cleaner_last_round_us: 0,
            cleaner_uncleanable: Uncleanable {
                partitions: 1,
                bytes: 4096,
            },
            cleaner_io_rate: 8 << 20,
        }
    }

    #[test]
    fn rendering_sums_request_and_partition_figures_over_shards() {
        let process = process::ProcessStats {
            cpu_seconds: 1.5,
            resident_bytes: 8 << 20,
            virtual_bytes: 16 << 20,
            open_fds: 42,
            max_fds: 1024,
            start_time_seconds: 1_795_300_000.5,
        };
        let text = render(&[snapshot(0, 100, 2), snapshot(1, 50, 3)], Some(&process));
        let has = |line: &str| text.lines().any(|l| l == line);
        // The process collector's names, as client libraries export them.
        assert!(has("# TYPE process_cpu_seconds_total counter"), "{text}");
        assert!(has("process_cpu_seconds_total 1.5"), "{text}");
        assert!(has("process_resident_memory_bytes 8388608"), "{text}");
        assert!(has("process_virtual_memory_bytes 16777216"), "{text}");
        assert!(has("process_open_fds 42"), "{text}");
        assert!(has("process_max_fds 1024"), "{text}");
        assert!(has("process_start_time_seconds 1795300000.5"), "{text}");
        // Without them (unreadable), the families are left out rather than zero.
        let without = render(&[snapshot(0, 100, 2)], None);
        assert!(!without.contains("process_"), "{without}");
        assert!(has("sluice_shards 2"), "{text}");
        assert!(has("sluice_requests_total{api=\"Produce\"} 5"), "{text}");
        assert!(has("sluice_requests_in_flight{api=\"Produce\"} 2"));
        assert!(has(
            "sluice_request_duration_seconds_bucket{api=\"Produce\",le=\"0.0001\"} 5"
        ));
        assert!(has(
            "sluice_request_duration_seconds_count{api=\"Produce\"} 5"
        ));
        assert!(has(
            "sluice_request_errors_total{api=\"Produce\",code=\"6\"} 2"
        ));
        assert!(has(
            "sluice_partition_produced_bytes_total{topic=\"t\\\"x\",partition=\"0\"} 150"
        ));
        // Served APIs without traffic still have their series.
        assert!(has("sluice_requests_total{api=\"Fetch\"} 0"));
        // Per-core figures keep their shard.
        assert!(has("sluice_connections_open{shard=\"0\"} 2"));
        assert!(has("sluice_connections_open{shard=\"1\"} 2"));
        assert!(has("sluice_shard_busy_seconds_total{shard=\"1\"} 1.5"));
        assert!(has("sluice_batch_cache_hits_total{shard=\"0\"} 4"));
        assert!(has("sluice_fsync_duration_seconds_count{shard=\"0\"} 0"));
        // Write latency, per shard: cumulative buckets, and the outlier only in +Inf.
        assert!(has(
            "sluice_log_write_duration_seconds_bucket{shard=\"1\",le=\"0.00025\"} 2"
        ));
        assert!(has(
            "sluice_log_write_duration_seconds_bucket{shard=\"1\",le=\"10\"} 2"
        ));
        assert!(has(
            "sluice_log_write_duration_seconds_bucket{shard=\"1\",le=\"+Inf\"} 3"
        ));
        assert!(has(
            "sluice_log_write_duration_seconds_count{shard=\"0\"} 2"
        ));
        assert!(has("sluice_cleaner_uncleanable_partitions{shard=\"1\"} 1"));
        assert!(has("sluice_cleaner_uncleanable_bytes{shard=\"0\"} 4096"));
        assert!(has(
            "sluice_cleaner_io_rate_bytes_per_second{shard=\"1\"} 8388608"
        ));
        // Every family is announced exactly once, before its samples.
        let mut seen = std::collections::HashSet::new();
        for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = l.split(' ').nth(2).unwrap();
            assert!(seen.insert(name.to_string()), "{name} announced twice");
        }
    }
}
