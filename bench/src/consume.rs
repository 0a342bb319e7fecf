//! One consumer connection: a fetch loop over its partitions that counts records and bytes and,
//! for stamped records, records end-to-end latency at the moment the response arrives.
//!
//! Fetches are sequential per connection (each depends on the offsets the previous one
//! returned, as in every Kafka consumer); parallelism comes from several connections, each
//! owning a disjoint set of partitions. Full fetches without sessions (session id 0, epoch -1)
//! keep the generator independent of the broker's KIP-227 support. Runs on the executor that
//! opened the connection.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sluice_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use sluice_protocol::{Request, Response};

use crate::client::Conn;
use crate::payload::{for_each_stamp, split_batches};
use crate::run::Shared;
use crate::stats::{record_ns, Side};

const OFFSET_OUT_OF_RANGE: i16 = 1;
/// Pause after a partition error before fetching again.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// When a consumer is done.
#[derive(Clone, Debug)]
pub enum Drain {
    /// `consume` mode: read up to these end offsets (missing partitions: up to the high
    /// watermark the first fetch reports).
    UpTo(HashMap<i32, i64>),
    /// `e2e`/`mixed`: follow the producers until everything they had acknowledged is read.
    FollowProducers,
}

/// What one consumer connection does.
#[derive(Clone, Debug)]
pub struct ConsumerPlan {
    pub index: usize,
    pub addr: String,
    pub topic: String,
    /// Partitions and the offsets to start from.
    pub partitions: Vec<(i32, i64)>,
    pub version: i16,
    pub max_wait_ms: i32,
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
    pub stamped: bool,
    pub drain: Drain,
}

/// Runs one consumer connection; returns its counters and latencies.
pub async fn run_consumer(plan: ConsumerPlan, shared: Arc<Shared>) -> Result<Side> {
    let mut conn = Conn::connect(&plan.addr)
        .await
        .with_context(|| format!("consumer {}", plan.index))?;
    shared.wait_for_start().await;
    let mut side = Side::new();
    let mut offsets: HashMap<i32, i64> = plan.partitions.iter().copied().collect();
    let mut targets = match &plan.drain {
        Drain::UpTo(t) => t.clone(),
        Drain::FollowProducers => HashMap::new(),
    };
    let follow = matches!(plan.drain, Drain::FollowProducers);

    loop {
        if shared.aborted() {
            break;
        }
        if follow {
            // Done once producers have stopped and every acknowledged record has been read
            // (by all consumers together), or after a grace period if some never arrive.
            if shared.producers_done() {
                let read = shared.consumed.load(Ordering::Relaxed);
                if read >= shared.produced.load(Ordering::Relaxed) || shared.past_grace() {
                    break;
                }
            }
        } else {
            if shared.past_deadline() || shared.budget_spent() {
                break;
            }
            let caught_up = offsets
                .iter()
                .all(|(p, o)| targets.get(p).is_some_and(|t| o >= t));
            if caught_up {
                break;
            }
        }

        let request = fetch_request(&plan, &offsets);
        let sent = shared.now_ns();
        let Response::Fetch(r) = conn
            .call(plan.version, request)
            .await
            .with_context(|| format!("consumer {} fetching", plan.index))?
        else {
            bail!("a fetch request was answered with another API's response");
        };
        let now = shared.now_ns();
        let counted = shared.counts(now);
        if r.error_code != 0 {
            side.error(|| format!("fetch failed with error code {}", r.error_code));
            glommio::timer::sleep(ERROR_BACKOFF).await;
            continue;
        }
        let mut got = 0u64;
        let mut had_error = false;
        for t in &r.responses {
            for p in &t.partitions {
                let Some(offset) = offsets.get_mut(&p.partition_index) else {
                    continue;
                };
                targets.entry(p.partition_index).or_insert(p.high_watermark);
                if p.error_code == OFFSET_OUT_OF_RANGE && p.log_start_offset > *offset {
                    *offset = p.log_start_offset;
                    continue;
                }
                if p.error_code != 0 {
                    had_error = true;
                    side.error(|| {
                        format!(
                            "fetch {}/{} at offset {} failed with error code {}",
                            t.topic, p.partition_index, offset, p.error_code
                        )
                    });
                    continue;
                }
                // A decoded response holds its records as one slice of the frame (no copy).
                let Some(records) = p.records.as_ref().and_then(|r| r.to_bytes()) else {
                    continue;
                };
                for (info, batch) in split_batches(&records)? {
                    if info.last_offset() < *offset {
                        continue;
                    }
                    let n = if info.base_offset >= *offset {
                        info.record_count.max(0) as u64
                    } else {
                        (info.last_offset() - *offset + 1) as u64
                    };
                    if plan.stamped {
                        let mut stamped = 0u64;
                        for_each_stamp(&info, batch, *offset, shared.run_id, |sent_ns| {
                            stamped += 1;
                            if counted {
                                record_ns(&mut side.e2e, now.saturating_sub(sent_ns), 1);
                            }
                        })?;
                        shared.consumed.fetch_add(stamped, Ordering::Relaxed);
                    }
                    if counted {
                        side.records += n;
                        side.bytes += info.total_bytes as u64;
                    }
                    got += n;
                    *offset = info.last_offset() + 1;
                }
            }
        }
        if !plan.stamped {
            shared.consumed.fetch_add(got, Ordering::Relaxed);
            shared.claim_consumed(got);
        }
        if counted {
            side.requests += 1;
            record_ns(&mut side.latency, now.saturating_sub(sent), 1);
            if got > 0 {
                side.last_event_ns = now;
            }
        }
        if had_error {
            glommio::timer::sleep(ERROR_BACKOFF).await;
        }
    }
    Ok(side)
}

fn fetch_request(plan: &ConsumerPlan, offsets: &HashMap<i32, i64>) -> Request {
    let mut partitions: Vec<FetchPartition> = offsets
        .iter()
        .map(|(&partition, &fetch_offset)| FetchPartition {
            partition,
            fetch_offset,
            partition_max_bytes: plan.partition_max_bytes,
            ..Default::default()
        })
        .collect();
    partitions.sort_unstable_by_key(|p| p.partition);
    Request::Fetch(FetchRequest {
        replica_id: -1,
        max_wait_ms: plan.max_wait_ms,
        min_bytes: 1,
        max_bytes: plan.max_bytes,
        isolation_level: 0,
        session_id: 0,
        session_epoch: -1,
        topics: vec![FetchTopic {
            topic: plan.topic.clone(),
            partitions,
            ..Default::default()
        }],
        ..Default::default()
    })
}
