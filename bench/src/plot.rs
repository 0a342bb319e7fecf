//! `sluice-bench plot`: renders JSON reports into one SVG with two panels — latency by
//! percentile (log-log, as HDR histograms are usually shown) and throughput per report.
//!
//! The SVG is written by hand (a few primitives) so that charts need no font or graphics
//! library on the machine. Runs on the main thread; reads only the report fields it draws, so
//! reports of older versions still plot.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

/// One series of the chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub label: String,
    /// `(percentile, latency_us)`.
    pub points: Vec<(f64, u64)>,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    pub latency_kind: String,
}

const WIDTH: f64 = 1100.0;
const HEIGHT: f64 = 480.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
/// x positions are "nines": -log10(1 - p/100); the maximum is drawn at `X_MAX`.
const X_MAX: f64 = 5.0;
const X_CLIP: f64 = 4.8;

/// Reads the reports and writes the chart.
pub fn plot(reports: &[impl AsRef<Path>], out: &Path, title: &str) -> Result<()> {
    let mut series = Vec::new();
    for path in reports {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        series.push(series_of(&value).with_context(|| format!("in {}", path.display()))?);
    }
    let svg = render(&series, title);
    std::fs::write(out, svg).with_context(|| format!("writing {}", out.display()))
}

/// Extracts what the chart shows from one report.
pub fn series_of(report: &Value) -> Result<Series> {
    let label = report["label"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let p = &report["parameters"];
            format!(
                "{} {}p {}B acks={}",
                report["mode"].as_str().unwrap_or("?"),
                p["partitions"].as_u64().unwrap_or(0),
                p["record_size"].as_u64().unwrap_or(0),
                p["acks"].as_str().unwrap_or("?")
            )
        });
    let points = report["percentiles"]
        .as_array()
        .ok_or_else(|| anyhow!("the report has no percentiles"))?
        .iter()
        .filter_map(|pt| Some((pt.get(0)?.as_f64()?, pt.get(1)?.as_u64()?)))
        .collect();
    Ok(Series {
        label,
        points,
        records_per_sec: report["records_per_sec"].as_f64().unwrap_or(0.0),
        mb_per_sec: report["mb_per_sec"].as_f64().unwrap_or(0.0),
        latency_kind: report["latency_kind"].as_str().unwrap_or("").to_owned(),
    })
}

/// The whole SVG document.
pub fn render(series: &[Series], title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="16" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    latency_panel(&mut s, series, (60.0, 50.0, 560.0, 360.0));
    throughput_panel(&mut s, series, (720.0, 50.0, 340.0, 360.0));
    s.push_str("</svg>\n");
    s
}

fn latency_panel(s: &mut String, series: &[Series], (x0, y0, w, h): (f64, f64, f64, f64)) {
    let all: Vec<u64> = series
        .iter()
        .flat_map(|x| x.points.iter().map(|p| p.1))
        .collect();
    let lo = all.iter().copied().min().unwrap_or(1).max(1) as f64;
    let hi = all.iter().copied().max().unwrap_or(10).max(2) as f64;
    let (ylo, yhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let px = |nines: f64| x0 + nines / X_MAX * w;
    let py = |us: f64| y0 + h - (us.max(1.0).log10() - ylo) / (yhi - ylo) * h;
    let kinds: Vec<&str> = series.iter().map(|x| x.latency_kind.as_str()).collect();
    let kind = if kinds.windows(2).all(|k| k[0] == k[1]) {
        kinds.first().copied().unwrap_or("")
    } else {
        "mixed kinds"
    };
    frame(
        s,
        (x0, y0, w, h),
        &format!("latency by percentile ({kind})"),
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "max"]
        .iter()
        .enumerate()
    {
        let x = px(i as f64);
        grid_line(s, x, y0, x, y0 + h);
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            y0 + h + 16.0
        );
    }
    let mut e = ylo as i32;
    while f64::from(e) <= yhi {
        let y = py(10f64.powi(e));
        grid_line(s, x0, y, x0 + w, y);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            x0 - 6.0,
            y + 4.0,
            duration_label(10f64.powi(e))
        );
        e += 1;
    }
    for (i, x) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = x
            .points
            .iter()
            .map(|&(p, us)| {
                let nines = if p >= 100.0 {
                    X_MAX
                } else {
                    (-(1.0 - p / 100.0).log10()).clamp(0.0, X_CLIP)
                };
                format!("{:.1},{:.1}", px(nines), py(us as f64))
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        let ly = y0 + 14.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            x0 + 10.0,
            ly - 9.0,
            x0 + 26.0,
            ly,
            escape(&x.label)
        );
    }
}

fn throughput_panel(s: &mut String, series: &[Series], (x0, y0, w, h): (f64, f64, f64, f64)) {
    frame(s, (x0, y0, w, h), "throughput (records/s)");
    let max = series
        .iter()
        .map(|x| x.records_per_sec)
        .fold(0.0f64, f64::max)
        .max(1.0);
    let n = series.len().max(1) as f64;
    let slot = h / n;
    let bar = (slot * 0.6).min(40.0);
    for (i, x) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let y = y0 + slot * i as f64 + (slot - bar) / 2.0;
        let len = x.records_per_sec / max * (w - 10.0);
        let _ = writeln!(
            s,
            r#"<rect x="{x0:.1}" y="{y:.1}" width="{len:.1}" height="{bar:.1}" fill="{color}" opacity="0.8"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{:.0} rec/s · {:.1} MB/s</text>"#,
            x0 + 4.0,
            y + bar / 2.0 + 4.0,
            x.records_per_sec,
            x.mb_per_sec
        );
    }
}

fn frame(s: &mut String, (x0, y0, w, h): (f64, f64, f64, f64), title: &str) {
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">{}</text>"#,
        x0 + w / 2.0,
        y0 - 8.0,
        escape(title)
    );
}

fn grid_line(s: &mut String, x1: f64, y1: f64, x2: f64, y2: f64) {
    let _ = writeln!(
        s,
        r##"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="#ddd"/>"##
    );
}

fn duration_label(us: f64) -> String {
    if us >= 1e6 {
        format!("{}s", us / 1e6)
    } else if us >= 1e3 {
        format!("{}ms", us / 1e3)
    } else {
        format!("{us}µs")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_renders_to_svg_with_its_series() {
        let report = serde_json::json!({
            "mode": "produce",
            "label": "one <partition>",
            "latency_kind": "produce_ack",
            "records_per_sec": 123456.0,
            "mb_per_sec": 12.5,
            "parameters": {"partitions": 1, "record_size": 100, "acks": "1"},
            "percentiles": [[0.0, 50], [50.0, 100], [99.0, 900], [99.9, 2000], [100.0, 5000]],
        });
        let series = series_of(&report).expect("series");
        assert_eq!(series.points.len(), 5);
        let svg = render(&[series], "t");
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("one &lt;partition&gt;"));
        assert!(svg.contains("123456 rec/s"));
        assert_eq!(svg.matches("<polyline").count(), 1);
    }

    #[test]
    fn a_report_without_percentiles_is_refused() {
        assert!(series_of(&serde_json::json!({"mode": "produce"})).is_err());
    }
}
