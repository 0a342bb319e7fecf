//! A load run: set-up on a control executor, then one glommio executor per `--threads`, each
//! running its share of producer and consumer connections, then the merged result.
//!
//! The only state shared between executors is `Shared`: fixed times (start, end of warm-up,
//! deadline) and a few relaxed atomic counters that decide when the run ends (the record
//! budget, records acknowledged and consumed, producers still running). Counters and
//! histograms of the measurement itself stay inside each connection task until the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use glommio::{LocalExecutorBuilder, Placement};

use crate::admin::{self, Setup, EARLIEST, LATEST};
use crate::cli::{LoadArgs, Mode, Settings, StartFrom};
use crate::consume::{run_consumer, ConsumerPlan, Drain};
use crate::produce::{run_producer, ProducerPlan};
use crate::stats::Side;

/// Time between the end of set-up and the first request, so every connection is open first.
const START_DELAY: Duration = Duration::from_millis(300);
/// How long consumers may trail the producers' end before the run gives up on them.
const DRAIN_GRACE: Duration = Duration::from_secs(15);

/// What every connection of a run may read or update. Shared by all executors.
pub struct Shared {
    epoch: Instant,
    /// Distinguishes this run's stamped records from older ones on the same topic.
    pub run_id: u64,
    start_ns: u64,
    measure_ns: u64,
    deadline_ns: u64,
    grace_ns: u64,
    /// Records still allowed (produce side, or consume side in `consume` mode).
    budget: Option<AtomicU64>,
    /// Records acknowledged by the broker (including warm-up).
    pub produced: AtomicU64,
    /// Records read by consumers (stamped runs: only this run's records).
    pub consumed: AtomicU64,
    producers_left: AtomicUsize,
    abort: AtomicBool,
}

impl Shared {
    fn new(args: &LoadArgs, producers: usize) -> Shared {
        let epoch = Instant::now();
        let start_ns = START_DELAY.as_nanos() as u64;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let run_id = nanos ^ (u64::from(std::process::id()) << 40);
        let duration_ns = (args.duration * 1e9) as u64;
        let deadline_ns = start_ns + duration_ns;
        Shared {
            epoch,
            run_id,
            start_ns,
            measure_ns: start_ns + (args.warmup * 1e9) as u64,
            deadline_ns,
            grace_ns: deadline_ns + DRAIN_GRACE.as_nanos() as u64,
            budget: args.records.map(AtomicU64::new),
            produced: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            producers_left: AtomicUsize::new(producers),
            abort: AtomicBool::new(false),
        }
    }

    /// Nanoseconds since the run epoch (comparable across executors).
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// When the load starts, in ns since the epoch.
    pub fn start_ns(&self) -> u64 {
        self.start_ns
    }

    /// Sleeps until the common start time.
    pub async fn wait_for_start(&self) {
        let now = self.now_ns();
        if now < self.start_ns {
            glommio::timer::sleep(Duration::from_nanos(self.start_ns - now)).await;
        }
    }

    /// Whether an event at `t_ns` falls after the warm-up and is counted.
    pub fn counts(&self, t_ns: u64) -> bool {
        t_ns >= self.measure_ns
    }

    /// Producers stop: deadline reached, budget spent or the run aborted.
    pub fn finished(&self) -> bool {
        self.past_deadline() || self.aborted() || self.budget_spent()
    }

    pub fn past_deadline(&self) -> bool {
        self.now_ns() >= self.deadline_ns
    }

    pub fn past_grace(&self) -> bool {
        self.now_ns() >= self.grace_ns
    }

    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }

    pub fn producers_done(&self) -> bool {
        self.producers_left.load(Ordering::Acquire) == 0
    }

    pub fn budget_spent(&self) -> bool {
        self.budget
            .as_ref()
            .is_some_and(|b| b.load(Ordering::Relaxed) == 0)
    }

    /// Takes up to `n` records from the budget; returns how many may be sent.
    pub fn claim(&self, n: u64) -> u64 {
        let Some(budget) = &self.budget else {
            return n;
        };
        let mut granted = 0;
        let _ = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            granted = left.min(n);
            Some(left - granted)
        });
        granted
    }

    /// Consumers in `consume` mode spend the budget as they read.
    pub fn claim_consumed(&self, n: u64) {
        if let Some(budget) = &self.budget {
            let _ = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left.saturating_sub(n))
            });
        }
    }
}

/// The merged outcome of a run, for the report.
pub struct Outcome {
    pub setup: Setup,
    pub settings: Settings,
    pub produce: Option<Side>,
    pub consume: Option<Side>,
    /// Seconds between the end of the warm-up and the last counted event of each side.
    pub produce_seconds: f64,
    pub consume_seconds: f64,
    pub started_at_unix_ms: u64,
}

enum Job {
    Producer(ProducerPlan),
    Consumer(ConsumerPlan),
}

/// Executes a load run.
pub fn run(mode: Mode, args: &LoadArgs) -> Result<Outcome> {
    let settings = args.validate(mode)?;
    let started_at_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);

    // Set-up on a short-lived executor: versions, topic, start offsets.
    let (setup, starts, ends) = {
        let args = args.clone();
        LocalExecutorBuilder::new(Placement::Unbound)
            .name("bench-setup")
            .spawn(move || async move { set_up(mode, &args).await })
            .map_err(|e| anyhow!("starting the set-up executor: {e}"))?
            .join()
            .map_err(|e| anyhow!("set-up executor: {e}"))??
    };

    let producers = if mode.produces() { args.producers } else { 0 };
    let consumers = if mode.consumes() { args.consumers } else { 0 };
    if consumers > setup.partitions.len() {
        bail!(
            "{consumers} consumers for {} partitions: each consumer needs a partition of its own",
            setup.partitions.len()
        );
    }
    let shared = Arc::new(Shared::new(args, producers));
    let mut jobs = Vec::new();
    for i in 0..producers {
        jobs.push(Job::Producer(ProducerPlan {
            index: i,
            addr: setup.addr.clone(),
            topic: args.topic.clone(),
            partitions: share(&setup.partitions, i, producers),
            partitions_per_request: args.partitions_per_request,
            version: setup.versions.produce,
            acks: settings.acks,
            timeout_ms: args.request_timeout_ms,
            codec: settings.codec,
            record_size: args.record_size,
            batch_records: settings.batch_records,
            in_flight: args.in_flight,
            rate: args.rate.map(|r| r / producers as f64),
            linger: Duration::from_secs_f64(args.linger_ms / 1000.0),
            stamped: mode.stamps_records(),
        }));
    }
    for i in 0..consumers {
        let partitions = share(&setup.partitions, i, consumers)
            .into_iter()
            .map(|p| (p, starts.get(&p).copied().unwrap_or(0)))
            .collect();
        jobs.push(Job::Consumer(ConsumerPlan {
            index: i,
            addr: setup.addr.clone(),
            topic: args.topic.clone(),
            partitions,
            version: setup.versions.fetch,
            max_wait_ms: args.fetch_max_wait_ms,
            max_bytes: args.fetch_max_bytes,
            partition_max_bytes: args.partition_max_bytes,
            stamped: mode.stamps_records(),
            drain: if mode == Mode::Consume {
                Drain::UpTo(ends.clone())
            } else {
                Drain::FollowProducers
            },
        }));
    }

    // Connections are dealt out to the executors round-robin.
    let threads = args.threads.min(jobs.len()).max(1);
    let mut per_thread: Vec<Vec<Job>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, job) in jobs.into_iter().enumerate() {
        per_thread[i % threads].push(job);
    }
    let mut handles = Vec::new();
    for (t, jobs) in per_thread.into_iter().enumerate() {
        let placement = match args.cpus.get(t % args.cpus.len().max(1)) {
            Some(&cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let shared = shared.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("bench-{t}"))
            .spawn(move || async move { run_jobs(jobs, shared).await })
            .map_err(|e| anyhow!("starting load executor {t}: {e}"))?;
        handles.push(handle);
    }

    let mut produce = Side::new();
    let mut consume = Side::new();
    let mut first_failure = None;
    for handle in handles {
        let results = handle.join().map_err(|e| anyhow!("load executor: {e}"))?;
        for (is_producer, result) in results {
            match result {
                Ok(side) if is_producer => produce.merge(&side),
                Ok(side) => consume.merge(&side),
                Err(e) => {
                    first_failure.get_or_insert(e);
                }
            }
        }
    }
    if let Some(e) = first_failure {
        return Err(e.context("the run failed"));
    }

    let seconds = |side: &Side| {
        let ns = side.last_event_ns.saturating_sub(shared.measure_ns);
        if ns == 0 {
            0.0
        } else {
            ns as f64 / 1e9
        }
    };
    Ok(Outcome {
        produce_seconds: seconds(&produce),
        consume_seconds: seconds(&consume),
        produce: mode.produces().then_some(produce),
        consume: mode.consumes().then_some(consume),
        setup,
        settings,
        started_at_unix_ms,
    })
}

/// Runs the connection tasks of one executor and waits for all of them.
async fn run_jobs(jobs: Vec<Job>, shared: Arc<Shared>) -> Vec<(bool, Result<Side>)> {
    let mut tasks = Vec::new();
    for job in jobs {
        let shared = shared.clone();
        tasks.push(glommio::spawn_local(async move {
            match job {
                Job::Producer(plan) => {
                    let result = run_producer(plan, shared.clone()).await;
                    if result.is_err() {
                        shared.abort.store(true, Ordering::Relaxed);
                    }
                    shared.producers_left.fetch_sub(1, Ordering::Release);
                    (true, result)
                }
                Job::Consumer(plan) => {
                    let result = run_consumer(plan, shared.clone()).await;
                    if result.is_err() {
                        shared.abort.store(true, Ordering::Relaxed);
                    }
                    (false, result)
                }
            }
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await);
    }
    out
}

/// Connects, prepares the topic and finds where consumers start and (in `consume` mode) stop.
async fn set_up(
    mode: Mode,
    args: &LoadArgs,
) -> Result<(Setup, HashMap<i32, i64>, HashMap<i32, i64>)> {
    let (mut conn, setup) = admin::prepare(
        &args.bootstrap,
        &args.topic,
        args.partitions,
        args.replication_factor,
    )
    .await
    .context("preparing the topic")?;
    let mut starts = HashMap::new();
    let mut ends = HashMap::new();
    if mode.consumes() {
        // Tailing consumers start at the end; `consume` starts where --from says.
        let from = if mode == Mode::Consume && args.from == StartFrom::Earliest {
            EARLIEST
        } else {
            LATEST
        };
        if let Some(o) = admin::list_offsets(
            &mut conn,
            &setup.versions,
            &args.topic,
            &setup.partitions,
            from,
        )
        .await?
        {
            starts = o;
        }
        if mode == Mode::Consume {
            if let Some(o) = admin::list_offsets(
                &mut conn,
                &setup.versions,
                &args.topic,
                &setup.partitions,
                LATEST,
            )
            .await?
            {
                ends = o;
            }
        }
    }
    Ok((setup, starts, ends))
}

/// The partitions connection `i` of `n` works on: a disjoint round-robin share, or one
/// partition each when there are more connections than partitions.
fn share(partitions: &[i32], i: usize, n: usize) -> Vec<i32> {
    if n > partitions.len() {
        return vec![partitions[i % partitions.len()]];
    }
    partitions
        .iter()
        .enumerate()
        .filter(|(j, _)| j % n == i)
        .map(|(_, &p)| p)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_disjoint_and_cover_everything() {
        let parts: Vec<i32> = (0..10).collect();
        let mut all: Vec<i32> = (0..3).flat_map(|i| share(&parts, i, 3)).collect();
        all.sort_unstable();
        assert_eq!(all, parts);
        assert_eq!(share(&parts, 1, 3), vec![1, 4, 7]);
        assert_eq!(share(&[0, 1], 3, 4), vec![1]);
    }
}
