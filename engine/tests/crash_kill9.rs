//! Crash safety under SIGKILL: a child process (this test binary re-executed) appends with
//! Synced durability from several concurrent tasks and prints every acknowledged batch; the
//! parent kills it at random moments, reopens the log and checks that every acknowledged batch
//! is present and byte-identical, and that the log is a contiguous run of valid batches (a torn
//! write never shows up as data).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test and benchmark code: a failure should panic loudly.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use sluice_engine::batch::testing::{make_batch, TestBatch};
use sluice_engine::batch::{set_base_offset, BatchIter};
use sluice_engine::config::LogConfig;
use sluice_engine::durability::Durability;
use sluice_engine::partition::{Partition, ShardContext};
use sluice_engine::types::Offset;

const CHILD_ENV: &str = "SLUICE_CRASH_CHILD_DIR";
const ROUNDS: u32 = 20;

fn cfg() -> Arc<LogConfig> {
    Arc::new(
        LogConfig::from_pairs([("segment.bytes", "65536"), ("index.interval.bytes", "1024")])
            .unwrap(),
    )
}

/// The batch a writer sends for its `seq`-th append.
fn spec(writer: u32, seq: u32) -> TestBatch {
    TestBatch {
        record_count: 1 + (seq % 4) as i32,
        payload_bytes: 50 + ((seq * 131 + writer * 17) % 3000) as usize,
        base_timestamp: i64::from(seq),
        max_timestamp: i64::from(seq),
        codec: 0,
        fill: (writer * 31 + seq) as u8,
    }
}

/// Runs only when re-executed by the parent: appends until killed.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let root = std::path::PathBuf::from(dir);
    let round: u32 = std::env::var("SLUICE_CRASH_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    run(&root.clone(), || async move {
        let p = Partition::open(&root, tp(), cfg(), ShardContext::default())
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for w in 0..4u32 {
            let p = p.clone();
            tasks.push(glommio::spawn_local(async move {
                for seq in 0.. {
                    let s = spec(w + round * 4, seq);
                    let b = bytes::Bytes::from(make_batch(s));
                    let info = p.append(b, Durability::Synced).await.unwrap();
                    println!("DURABLE {} {} {}", info.base_offset.0, w + round * 4, seq);
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
}

#[test]
fn every_acknowledged_synced_batch_survives_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<(i64, u32, u32)> = Vec::new();
    let mut seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env("SLUICE_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("DURABLE ") {
                    let v: Vec<i64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
                    l2.lock().unwrap().push((v[0], v[1] as u32, v[2] as u32));
                }
            }
        });
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait_ms = 30 + (seed >> 33) % 250;
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        acked.extend(lines.lock().unwrap().iter().copied());

        // Reopen and verify in this process.
        let root = dir.path().to_path_buf();
        let acked_now = acked.clone();
        run(dir.path(), || async move {
            let p = Partition::open(&root, tp(), cfg(), ShardContext::default())
                .await
                .unwrap();
            eprintln!(
                "round {round}: {} acknowledged so far, recovery {:?}, log end {}",
                acked_now.len(),
                p.open_report().tail,
                p.log_end_offset()
            );
            let log = read_all(&p, 0).await;
            // A contiguous run of valid batches, nothing else.
            let mut next = Offset(0);
            let mut starts = std::collections::HashMap::new();
            for item in BatchIter::new(&log) {
                let (pos, v) = item.unwrap();
                v.validate(pos, 1 << 20).unwrap();
                assert_eq!(v.base_offset(), next, "contiguous offsets");
                starts.insert(v.base_offset().0, (pos, v.total_len()));
                next = v.next_offset();
            }
            assert_eq!(next, p.log_end_offset());
            for &(off, writer, seq) in &acked_now {
                let mut want = make_batch(spec(writer, seq));
                set_base_offset(&mut want, Offset(off));
                let &(pos, len) = starts
                    .get(&off)
                    .unwrap_or_else(|| panic!("acknowledged batch at {off} is missing"));
                assert_eq!(&log[pos..pos + len], &want[..], "batch at {off} differs");
            }
            p.close().await.unwrap();
        });
    }
    assert!(
        acked.len() > ROUNDS as usize,
        "children acknowledged only {} batches",
        acked.len()
    );
}
