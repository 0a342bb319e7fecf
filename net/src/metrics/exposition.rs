//! Prometheus text exposition format (version 0.0.4), written by hand: the format is small and
//! a client library would bring its own registry and atomics, which the shard-local metrics do
//! not need.
//!
//! A family is announced once with `# HELP` and `# TYPE`, then its samples follow on lines of
//! `name{label="value",...} value`. HELP text escapes `\` and newline; label values also escape
//! `"`. A histogram is exported as cumulative `_bucket` samples with an `le` label (the last one
//! `le="+Inf"`, equal to `_count`), then `_sum` and `_count`. Plain functions over a `String`;
//! runs on whichever shard serves the scrape.

use std::fmt::Write;

use sluice_engine::histogram::{HistogramSnapshot, LATENCY_BUCKET_BOUNDS_US};

/// The Content-Type of a scrape response in this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The kind of a metric family, as `# TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Label names and values of one sample, in order.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// A scrape body being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. Every sample of the family must follow
    /// before the next family starts.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_help(&mut self.out, help);
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind.as_str());
        self.out.push('\n');
    }

    /// One sample of an integer counter or gauge.
    pub fn sample(&mut self, name: &str, labels: Labels<'_>, value: u64) {
        self.sample_start(name, labels);
        let _ = writeln!(self.out, "{value}");
    }

    /// One sample with a fractional value (seconds, ratios).
    pub fn sample_f64(&mut self, name: &str, labels: Labels<'_>, value: f64) {
        self.sample_start(name, labels);
        write_f64(&mut self.out, value);
        self.out.push('\n');
    }

    /// The samples of one latency histogram (in seconds): cumulative buckets, sum and count.
    pub fn histogram(&mut self, name: &str, labels: Labels<'_>, h: &HistogramSnapshot) {
        let bucket_name = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count;
            let le = match LATENCY_BUCKET_BOUNDS_US.get(i) {
                Some(&us) => format_seconds(us as f64 / 1e6),
                None => "+Inf".to_string(),
            };
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket_name, &with_le, cumulative);
        }
        self.sample_f64(&format!("{name}_sum"), labels, h.sum_ns as f64 / 1e9);
        self.sample(&format!("{name}_count"), labels, cumulative);
    }

    /// The finished body.
    pub fn finish(self) -> String {
        self.out
    }

    fn sample_start(&mut self, name: &str, labels: Labels<'_>) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                escape_label_value(&mut self.out, value);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
    }
}

/// Escapes HELP text: backslash and line feed.
fn escape_help(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Writes a float as Prometheus reads it (`+Inf`, `-Inf`, `NaN` for the special values).
fn write_f64(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

/// A bucket bound in seconds, shortest exact decimal ("0.0001", "2.5", "10").
fn format_seconds(s: f64) -> String {
    format!("{s}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sluice_engine::histogram::LatencyHistogram;

    use super::*;

    #[test]
    fn families_have_help_and_type_and_labels_are_escaped() {
        let mut e = Exposition::new();
        e.family(
            "sluice_x_total",
            Kind::Counter,
            "Things with a \\ and a\nnewline.",
        );
        e.sample(
            "sluice_x_total",
            &[("topic", "a\"b\\c\nd"), ("partition", "3")],
            42,
        );
        e.family("sluice_up", Kind::Gauge, "Up.");
        e.sample("sluice_up", &[], 1);
        e.sample_f64("sluice_up", &[("shard", "0")], 0.25);
        assert_eq!(
            e.finish(),
            "# HELP sluice_x_total Things with a \\\\ and a\\nnewline.\n\
             # TYPE sluice_x_total counter\n\
             sluice_x_total{topic=\"a\\\"b\\\\c\\nd\",partition=\"3\"} 42\n\
             # HELP sluice_up Up.\n\
             # TYPE sluice_up gauge\n\
             sluice_up 1\n\
             sluice_up{shard=\"0\"} 0.25\n"
        );
    }

    #[test]
    fn special_floats_are_spelled_as_prometheus_reads_them() {
        let mut e = Exposition::new();
        e.sample_f64("a", &[], f64::INFINITY);
        e.sample_f64("b", &[], f64::NAN);
        e.sample_f64("c", &[], 1e-4);
        assert_eq!(e.finish(), "a +Inf\nb NaN\nc 0.0001\n");
    }

    #[test]
    fn histograms_have_cumulative_buckets_ending_in_inf_then_sum_and_count() {
        let h = LatencyHistogram::new();
        h.observe(Duration::from_micros(80));
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_secs(30));
        let mut e = Exposition::new();
        e.family("lat_seconds", Kind::Histogram, "Latency.");
        e.histogram("lat_seconds", &[("api", "Produce")], &h.snapshot());
        let text = e.finish();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# HELP lat_seconds Latency.");
        assert_eq!(lines[1], "# TYPE lat_seconds histogram");
        assert_eq!(
            lines[2],
            "lat_seconds_bucket{api=\"Produce\",le=\"0.0001\"} 1"
        );
        assert_eq!(
            lines[3],
            "lat_seconds_bucket{api=\"Produce\",le=\"0.00025\"} 1"
        );
        assert_eq!(
            lines[4],
            "lat_seconds_bucket{api=\"Produce\",le=\"0.0005\"} 3"
        );
        assert_eq!(
            lines[5],
            "lat_seconds_bucket{api=\"Produce\",le=\"0.001\"} 3"
        );
        let buckets = LATENCY_BUCKET_BOUNDS_US.len() + 1;
        assert_eq!(
            lines[2 + buckets - 2],
            "lat_seconds_bucket{api=\"Produce\",le=\"10\"} 3"
        );
        assert_eq!(
            lines[2 + buckets - 1],
            "lat_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 4"
        );
        assert_eq!(
            lines[2 + buckets],
            "lat_seconds_sum{api=\"Produce\"} 30.00068"
        );
        assert_eq!(lines[3 + buckets], "lat_seconds_count{api=\"Produce\"} 4");
        assert_eq!(lines.len(), 4 + buckets);
    }
}
