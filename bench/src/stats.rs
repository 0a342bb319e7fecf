//! Counters and HDR latency histograms, one set per connection, merged at the end of a run.
//!
//! Each connection task owns its `Side` outright (no sharing, no atomics on the hot path);
//! executors return them when their tasks finish and the main thread merges them. Latencies are
//! recorded in microseconds with three significant digits, up to one hour.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms track exactly (1 hour, in µs); larger values saturate.
const LATENCY_MAX_US: u64 = 3_600_000_000;

/// One direction of traffic (produce or consume) of one or more connections.
#[derive(Clone, Debug)]
pub struct Side {
    pub records: u64,
    /// Record-batch bytes (as on the wire, inside the requests/responses).
    pub bytes: u64,
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// When the last counted record was acknowledged or received (ns since the run epoch).
    pub last_event_ns: u64,
    /// Produce: ack latency; consume: fetch round trip.
    pub latency: Histogram<u64>,
    /// End-to-end latency of stamped records (consumers only).
    pub e2e: Histogram<u64>,
    /// Produce: one sample per request, from its write to the socket to its response, so the
    /// broker's round trip can be told apart from the time records waited in the producer
    /// for a request slot (which `latency` includes).
    pub round_trip: Histogram<u64>,
}

impl Default for Side {
    fn default() -> Self {
        Side::new()
    }
}

impl Side {
    pub fn new() -> Side {
        Side {
            records: 0,
            bytes: 0,
            requests: 0,
            errors: 0,
            first_error: None,
            last_event_ns: 0,
            latency: histogram(),
            e2e: histogram(),
            round_trip: histogram(),
        }
    }

    /// Counts an error; keeps the first message for the report.
    pub fn error(&mut self, message: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message());
        }
    }

    pub fn merge(&mut self, other: &Side) {
        self.records += other.records;
        self.bytes += other.bytes;
        self.requests += other.requests;
        self.errors += other.errors;
        self.last_event_ns = self.last_event_ns.max(other.last_event_ns);
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        // Both histograms share bounds, so adding cannot fail; saturate defensively anyway.
        let _ = self.latency.add(&other.latency);
        let _ = self.e2e.add(&other.e2e);
        let _ = self.round_trip.add(&other.round_trip);
    }
}

/// Records `n` samples of `latency_ns` in microseconds.
pub fn record_ns(h: &mut Histogram<u64>, latency_ns: u64, n: u64) {
    let us = (latency_ns / 1000).clamp(1, LATENCY_MAX_US);
    // Saturating: a value above the bound is recorded as the bound.
    let _ = h.record_n(us, n);
}

/// The latency summary that every report carries.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
        }
    }
}

/// The percentile distribution for plotting: `(percentile, latency_us)` at HDR's usual
/// log-spaced steps (5 per halving of the tail), ending at the maximum.
pub fn distribution(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<(f64, u64)> = h
        .iter_quantiles(5)
        .map(|v| (v.quantile_iterated_to() * 100.0, v.value_iterated_to()))
        .filter(|(p, _)| *p < 100.0)
        .collect();
    out.push((100.0, h.max()));
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

fn histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy hdrhistogram's rules (low >= 1, high >= 2 * low,
    // sigfig <= 5), so construction cannot fail.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("constant histogram bounds are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut side = Side::new();
        for us in 1..=10_000u64 {
            record_ns(&mut side.latency, us * 1000, 1);
        }
        let l = Latency::of(&side.latency);
        assert_eq!(l.count, 10_000);
        assert!((4990..=5010).contains(&l.p50), "{l:?}");
        assert!((9890..=9910).contains(&l.p99), "{l:?}");
        assert!((9980..=10_010).contains(&l.max), "{l:?}");
        let d = distribution(&side.latency);
        assert_eq!(d.last().map(|x| x.0), Some(100.0));
        assert!(d.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    }

    #[test]
    fn merge_adds_counts_and_samples() {
        let mut a = Side::new();
        let mut b = Side::new();
        a.records = 3;
        b.records = 4;
        record_ns(&mut a.latency, 5_000, 2);
        record_ns(&mut b.latency, 9_000_000, 1);
        b.error(|| "first".into());
        b.error(|| "second".into());
        a.merge(&b);
        assert_eq!(a.records, 7);
        assert_eq!(a.latency.len(), 3);
        assert_eq!(a.errors, 2);
        assert_eq!(a.first_error.as_deref(), Some("first"));
        assert!(Latency::of(&a.latency).max >= 9_000);
    }

    #[test]
    fn sub_microsecond_and_huge_values_are_clamped() {
        let mut h = histogram();
        record_ns(&mut h, 10, 1);
        record_ns(&mut h, u64::MAX, 1);
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), 1);
    }
}
