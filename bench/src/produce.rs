//! One producer connection: a writer task that keeps `in_flight` produce requests outstanding
//! and a reader task that matches responses to them and records acknowledgement latency.
//!
//! Both tasks run on the executor that opened the connection and share only an in-order queue
//! of pending requests (responses come back in request order on a Kafka connection) and a
//! semaphore that bounds the requests in flight. In throughput runs every request is
//! pre-encoded once and re-sent with a new correlation id; in fixed-rate runs records fall due
//! at `load_start + i / rate` and each request carries the records due when a slot frees up, so
//! latency is measured from each record's intended send time, not from when it was sent.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures_lite::io::BufReader;
use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel;
use glommio::sync::Semaphore;
use sluice_engine::compression::Codec;
use sluice_protocol::{decode_response, ApiKey, Response};

use crate::client::{connect, read_frame};
use crate::payload::{produce_frame, set_correlation_id, BatchMaker};
use crate::run::Shared;
use crate::stats::{record_ns, Side};

/// What one producer connection does.
#[derive(Clone, Debug)]
pub struct ProducerPlan {
    pub index: usize,
    pub addr: String,
    pub topic: String,
    /// Partitions this connection writes to.
    pub partitions: Vec<i32>,
    pub partitions_per_request: usize,
    pub version: i16,
    pub acks: i16,
    pub timeout_ms: i32,
    pub codec: Codec,
    pub record_size: usize,
    pub batch_records: usize,
    pub in_flight: usize,
    /// This connection's share of `--rate`, in records/s.
    pub rate: Option<f64>,
    pub linger: Duration,
    /// Whether record values carry their intended send time (e2e and mixed runs).
    pub stamped: bool,
}

/// A request on the wire whose response has not been read yet.
struct Pending {
    correlation_id: i32,
    records: u64,
    bytes: u64,
    /// Intended send time of the first record (ns since the run epoch).
    first_ns: u64,
    /// Spacing of the following records' intended times (0: all share `first_ns`).
    step_ns: f64,
    /// When the request had been written to the socket (ns since the run epoch).
    sent_ns: u64,
}

/// Runs one producer connection until the deadline or the record budget; returns what its
/// reader counted (or, at acks=0, what the writer sent).
pub async fn run_producer(plan: ProducerPlan, shared: Arc<Shared>) -> Result<Side> {
    let stream = connect(&plan.addr)
        .await
        .with_context(|| format!("producer {}", plan.index))?;
    let mut writer_state = Writer::new(&plan, &shared)?;
    shared.wait_for_start().await;

    let (reader, mut writer) = futures_lite::io::split(stream);
    if plan.acks == 0 {
        // Kafka sends no response at acks=0: throughput is what the socket accepted.
        let mut side = Side::new();
        while let Some((frame, pending)) = writer_state.next(&shared).await? {
            writer.write_all(frame).await?;
            let now = shared.now_ns();
            shared
                .produced
                .fetch_add(pending.records, Ordering::Relaxed);
            if shared.counts(pending.first_ns) {
                side.records += pending.records;
                side.bytes += pending.bytes;
                side.requests += 1;
                side.last_event_ns = now;
            }
        }
        writer.flush().await?;
        return Ok(side);
    }

    let slots = Rc::new(Semaphore::new(plan.in_flight as u64));
    let (tx, rx) = local_channel::new_unbounded::<Pending>();
    let reader_task = glommio::spawn_local(read_acks(
        BufReader::with_capacity(64 * 1024, reader),
        rx,
        slots.clone(),
        plan.version,
        shared.clone(),
    ));
    let written: Result<()> = async {
        loop {
            if slots.acquire(1).await.is_err() {
                // The reader closed the slots: the connection failed; its error is reported.
                break;
            }
            let Some((frame, mut pending)) = writer_state.next(&shared).await? else {
                break;
            };
            writer.write_all(frame).await?;
            pending.sent_ns = shared.now_ns();
            if tx.send(pending).await.is_err() {
                break;
            }
        }
        Ok(())
    }
    .await;
    drop(tx);
    let side = reader_task.await;
    written.with_context(|| format!("producer {} writing", plan.index))?;
    side.with_context(|| format!("producer {} reading acks", plan.index))
}

/// The writer's request source.
struct Writer {
    plan: ProducerPlan,
    maker: BatchMaker,
    /// Pre-encoded requests, one per group of partitions (throughput runs without stamps).
    frames: Vec<(Vec<u8>, u64, u64)>,
    /// Scratch frame for requests built on the fly.
    scratch: Vec<u8>,
    groups: Vec<Vec<i32>>,
    next_group: usize,
    next_correlation_id: i32,
    /// Records handed out so far (fixed-rate runs number intended times by it).
    sent_records: u64,
    stamps: Vec<u64>,
}

impl Writer {
    fn new(plan: &ProducerPlan, shared: &Shared) -> Result<Writer> {
        let groups: Vec<Vec<i32>> = plan
            .partitions
            .chunks(plan.partitions_per_request)
            .map(<[i32]>::to_vec)
            .collect();
        if groups.is_empty() {
            bail!("producer {} has no partitions", plan.index);
        }
        let seed = shared.run_id ^ (plan.index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut maker = BatchMaker::new(plan.codec, plan.record_size, shared.run_id, seed);
        let mut frames = Vec::new();
        if plan.rate.is_none() && !plan.stamped {
            // All partitions get the same batch bytes; only the partition index differs.
            let batch = maker.plain(plan.batch_records, wall_clock_ms())?;
            for g in &groups {
                let batches: Vec<(i32, Bytes)> = g.iter().map(|&p| (p, batch.clone())).collect();
                let frame = produce_frame(
                    plan.version,
                    plan.acks,
                    plan.timeout_ms,
                    &plan.topic,
                    batches,
                )?;
                let records = (g.len() * plan.batch_records) as u64;
                frames.push((frame, records, (g.len() * batch.len()) as u64));
            }
        }
        Ok(Writer {
            plan: plan.clone(),
            maker,
            frames,
            scratch: Vec::new(),
            groups,
            next_group: 0,
            next_correlation_id: 1,
            sent_records: 0,
            stamps: Vec::new(),
        })
    }

    /// The next request to send and its bookkeeping, or `None` when the run is over.
    async fn next(&mut self, shared: &Shared) -> Result<Option<(&[u8], Pending)>> {
        if shared.finished() {
            return Ok(None);
        }
        let group = self.next_group;
        self.next_group = (self.next_group + 1) % self.groups.len();
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1).max(1);
        let capacity = (self.groups[group].len() * self.plan.batch_records) as u64;

        let (count, first_ns, step_ns) = match self.plan.rate {
            None => (capacity, shared.now_ns(), 0.0),
            Some(rate) => {
                let step_ns = 1e9 / rate;
                let first_ns = shared.start_ns() + (self.sent_records as f64 * step_ns) as u64;
                // Wait for the first record to fall due, then for the linger to let more
                // accumulate, unless a full request is due already.
                let full_at = first_ns + ((capacity - 1) as f64 * step_ns) as u64;
                let linger_end = first_ns + self.plan.linger.as_nanos() as u64;
                let wait_until = full_at.min(linger_end).max(first_ns);
                let now = shared.now_ns();
                if now < wait_until {
                    glommio::timer::sleep(Duration::from_nanos(wait_until - now)).await;
                }
                if shared.finished() {
                    return Ok(None);
                }
                let now = shared.now_ns();
                let due = ((now.saturating_sub(first_ns)) as f64 / step_ns) as u64 + 1;
                (due.min(capacity), first_ns, step_ns)
            }
        };
        let count = shared.claim(count);
        if count == 0 {
            return Ok(None);
        }
        self.sent_records += count;

        let pending = |bytes: u64| Pending {
            correlation_id,
            records: count,
            bytes,
            first_ns,
            step_ns,
            sent_ns: 0,
        };
        if count == capacity && !self.frames.is_empty() {
            let (frame, _, bytes) = &mut self.frames[group];
            set_correlation_id(frame, correlation_id);
            let bytes = *bytes;
            return Ok(Some((&self.frames[group].0[..], pending(bytes))));
        }

        // Built on the fly: stamped records, fixed-rate batches or the last, partial request.
        let partitions = &self.groups[group];
        let k = partitions.len() as u64;
        let mut batches = Vec::with_capacity(partitions.len());
        let mut bytes = 0u64;
        let mut i = 0u64;
        let timestamp_ms = wall_clock_ms();
        for (j, &p) in partitions.iter().enumerate() {
            let n = count / k + u64::from((j as u64) < count % k);
            if n == 0 {
                continue;
            }
            let batch = if self.plan.stamped {
                self.stamps.clear();
                let send_ns = shared.now_ns();
                for r in i..i + n {
                    self.stamps.push(if step_ns > 0.0 {
                        first_ns + (r as f64 * step_ns) as u64
                    } else {
                        send_ns
                    });
                }
                self.maker.stamped(&self.stamps, timestamp_ms)?
            } else {
                self.maker.plain(n as usize, timestamp_ms)?
            };
            i += n;
            bytes += batch.len() as u64;
            batches.push((p, batch));
        }
        self.scratch = produce_frame(
            self.plan.version,
            self.plan.acks,
            self.plan.timeout_ms,
            &self.plan.topic,
            batches,
        )?;
        set_correlation_id(&mut self.scratch, correlation_id);
        Ok(Some((&self.scratch[..], pending(bytes))))
    }
}

/// Reads produce responses in order, checks them and records latency.
async fn read_acks<R: futures_lite::AsyncRead + Unpin>(
    mut reader: R,
    pending: local_channel::LocalReceiver<Pending>,
    slots: Rc<Semaphore>,
    version: i16,
    shared: Arc<Shared>,
) -> Result<Side> {
    let mut side = Side::new();
    let result: Result<()> = async {
        while let Some(p) = pending.recv().await {
            let body = read_frame(&mut reader).await?;
            let now = shared.now_ns();
            slots.signal(1);
            let (header, response) = decode_response(ApiKey::Produce, version, body)
                .map_err(|e| anyhow!("decoding a produce response: {e}"))?;
            if header.correlation_id != p.correlation_id {
                bail!(
                    "produce response has correlation id {} where {} was expected",
                    header.correlation_id,
                    p.correlation_id
                );
            }
            let Response::Produce(r) = response else {
                bail!("a produce request was answered with another API's response");
            };
            let failed = r
                .responses
                .iter()
                .flat_map(|t| t.partition_responses.iter().map(move |pr| (t, pr)))
                .find(|(_, pr)| pr.error_code != 0);
            if let Some((t, pr)) = failed {
                side.error(|| {
                    format!(
                        "produce to {}/{} failed with error code {}{}",
                        t.name,
                        pr.index,
                        pr.error_code,
                        pr.error_message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    )
                });
                continue;
            }
            shared.produced.fetch_add(p.records, Ordering::Relaxed);
            if !shared.counts(p.first_ns) {
                continue;
            }
            side.records += p.records;
            side.bytes += p.bytes;
            side.requests += 1;
            side.last_event_ns = now;
            record_ns(&mut side.round_trip, now.saturating_sub(p.sent_ns), 1);
            if p.step_ns == 0.0 {
                record_ns(&mut side.latency, now.saturating_sub(p.first_ns), p.records);
            } else {
                for r in 0..p.records {
                    let intended = p.first_ns + (r as f64 * p.step_ns) as u64;
                    record_ns(&mut side.latency, now.saturating_sub(intended), 1);
                }
            }
        }
        Ok(())
    }
    .await;
    // Wake a writer waiting for a slot so that it notices the end.
    slots.close();
    result.map(|()| side)
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
