//! The benchmarks' own code run in a tiny test mode under `cargo test`, so they never rot.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test and benchmark code: a failure should panic loudly.

#[path = "../benches/append_throughput.rs"]
#[allow(dead_code)]
mod append_throughput;

#[path = "../benches/cleaner.rs"]
#[allow(dead_code)]
mod cleaner;

#[path = "../benches/recovery.rs"]
#[allow(dead_code)]
mod recovery;

#[test]
fn append_throughput_runs_in_test_mode() {
    let dir = tempfile::tempdir().unwrap();
    let p = append_throughput::Params::from_env(true);
    let results = append_throughput::run_all(dir.path(), &p);
    assert_eq!(results.len(), 4);
    for r in &results {
        assert!(
            r.raw_bytes_per_sec > 0.0 && r.engine_bytes_per_sec > 0.0,
            "{r:?}"
        );
    }
    let json = append_throughput::report_json(&p, &results);
    assert!(json.contains("\"ratio\""));
}

#[test]
fn recovery_bench_runs_in_test_mode() {
    let dir = tempfile::tempdir().unwrap();
    let r = recovery::measure(dir.path(), 3 << 20, 512 << 10, 1 << 20);
    assert!(r.segments >= 3, "{r:?}");
    // Only the unflushed tail is scanned, not the store.
    assert!(
        r.scanned_bytes >= 512 << 10 && r.scanned_bytes < 2 << 20,
        "{r:?}"
    );
    assert!(r.store_bytes >= 3 << 20);
}

#[test]
fn cleaner_bench_runs_in_test_mode() {
    let dir = tempfile::tempdir().unwrap();
    let p = cleaner::Params::from_env(true);
    let r = cleaner::measure(dir.path(), &p);
    // 1000 keys over 2 MiB: cleaning must shrink the log and both probes must have produced.
    assert!(r.stats.bytes_written < r.stats.bytes_read / 2, "{r:?}");
    assert!(r.alone.count > 0 && r.while_cleaning.count > 0, "{r:?}");
    assert!(cleaner::report_json(&p, &r).contains("\"p99_ratio\""));
}
