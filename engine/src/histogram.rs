//! A fixed-bucket latency histogram for shard-local statistics (fsync, request latency).
//!
//! The buckets are the same for every histogram in the broker, so histograms of different shards
//! can be added bucket by bucket when a metrics scrape merges them, and so the exported
//! `le` labels never change between scrapes. Recording is a few `Cell` updates: no atomics, no
//! allocation. A [`LatencyHistogram`] is owned by its shard and never crosses cores; what
//! crosses cores is the plain-data [`HistogramSnapshot`] a scrape takes of it.

use std::cell::Cell;
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds (the last, implicit bucket is +Inf). They span
/// the 100 µs a cached fetch takes to the 10 s a stalled disk or a long poll may take, roughly
/// 1-2.5-5 per decade, as Prometheus client libraries do.
pub const LATENCY_BUCKET_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Number of buckets, the +Inf bucket included.
pub const LATENCY_BUCKETS: usize = LATENCY_BUCKET_BOUNDS_US.len() + 1;

const _: () = {
    let mut i = 1;
    while i < LATENCY_BUCKET_BOUNDS_US.len() {
        assert!(LATENCY_BUCKET_BOUNDS_US[i - 1] < LATENCY_BUCKET_BOUNDS_US[i]);
        i += 1;
    }
};

/// A latency histogram of one shard.
///
/// Owned by its shard; never crosses cores.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative): `counts[i]` holds those in
    /// `(bound[i-1], bound[i]]`, the last one those above every bound.
    counts: [Cell<u64>; LATENCY_BUCKETS],
    sum_ns: Cell<u64>,
}

impl LatencyHistogram {
    pub fn new() -> LatencyHistogram {
        LatencyHistogram::default()
    }

    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKET_BOUNDS_US.partition_point(|&bound| bound < us);
        let cell = &self.counts[bucket];
        cell.set(cell.get() + 1);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.set(self.sum_ns.get().saturating_add(ns));
    }

    /// A copy of the current figures, to send to another shard.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].get()),
            sum_ns: self.sum_ns.get(),
        }
    }
}

/// The figures of a [`LatencyHistogram`] at one moment: plain data, `Send`, addable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket, not cumulative (see [`LatencyHistogram`]).
    pub counts: [u64; LATENCY_BUCKETS],
    /// Sum of all observations, in nanoseconds.
    pub sum_ns: u64,
}

impl HistogramSnapshot {
    /// Total number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s observations to these (merging shards).
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_bucket_whose_bound_covers_them() {
        let h = LatencyHistogram::new();
        h.observe(Duration::from_micros(100)); // on the first bound: first bucket
        h.observe(Duration::from_micros(101)); // just above: second
        h.observe(Duration::from_millis(3)); // (2.5 ms, 5 ms]
        h.observe(Duration::from_secs(60)); // above every bound: +Inf
        let s = h.snapshot();
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.counts[5], 1);
        assert_eq!(s.counts[LATENCY_BUCKETS - 1], 1);
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum_ns, 100_000 + 101_000 + 3_000_000 + 60_000_000_000);
    }

    #[test]
    fn snapshots_of_shards_add_up() {
        let a = LatencyHistogram::new();
        let b = LatencyHistogram::new();
        a.observe(Duration::from_micros(50));
        b.observe(Duration::from_micros(60));
        b.observe(Duration::from_millis(20));
        let mut merged = a.snapshot();
        merged.merge(&b.snapshot());
        assert_eq!(merged.counts[0], 2);
        assert_eq!(merged.counts[7], 1);
        assert_eq!(merged.count(), 3);
        assert_eq!(merged.sum_ns, 50_000 + 60_000 + 20_000_000);
    }
}
