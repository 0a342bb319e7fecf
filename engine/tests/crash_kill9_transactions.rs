//! Transactions under SIGKILL: a child process (this test binary re-executed) runs several
//! transactional producers at once (transactional batches, then a commit or abort marker), and
//! first aborts the transactions the previous child left open, as a recovering coordinator
//! does; it prints every marker once `append_marker` answered (durable). The parent kills it at
//! random moments, reopens the log and checks that every acknowledged marker is there, that
//! the aborted-transaction index equals what the log itself says (every abort marker with its
//! transaction's first offset), and that the last stable offset is the first offset of the
//! oldest transaction the log leaves open.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failure should panic loudly.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use sluice_engine::batch::BatchIter;
use sluice_engine::builder::BatchBuilder;
use sluice_engine::compression::Codec;
use sluice_engine::config::LogConfig;
use sluice_engine::durability::Durability;
use sluice_engine::partition::{Partition, ShardContext};
use sluice_engine::records::RecordIter;
use sluice_engine::txn_index::AbortedTxn;
use sluice_engine::types::Offset;

const CHILD_ENV: &str = "SLUICE_TXN_CRASH_CHILD_DIR";
const ROUNDS: i64 = 12;
const WRITERS: i64 = 4;

fn cfg() -> Arc<LogConfig> {
    Arc::new(
        LogConfig::from_pairs([("segment.bytes", "16384"), ("index.interval.bytes", "1024")])
            .unwrap(),
    )
}

fn pid(round: i64, writer: i64) -> i64 {
    1000 + round * WRITERS + writer
}

/// A transactional batch of `pid` at sequence `seq`.
fn txn_batch(pid: i64, seq: i32) -> bytes::Bytes {
    let mut b = BatchBuilder::new(Codec::None)
        .producer(pid, 0, seq)
        .transactional(true);
    b.append(i64::from(seq), None, Some(&[b'x'; 400]), &[])
        .unwrap();
    b.build().unwrap()
}

/// Runs only when re-executed by the parent: writes transactions until killed.
#[test]
fn txn_crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let root = std::path::PathBuf::from(dir);
    let round: i64 = std::env::var("SLUICE_CRASH_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    run(&root.clone(), || async move {
        let p = Partition::open(&root, tp(), cfg(), ShardContext::default())
            .await
            .unwrap();
        if round > 0 {
            for w in 0..WRITERS {
                let at = p
                    .append_marker(pid(round - 1, w), 0, false, 0)
                    .await
                    .unwrap();
                println!("MARKER {} {} 0", pid(round - 1, w), at.0);
            }
        }
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let p = p.clone();
            tasks.push(glommio::spawn_local(async move {
                let pid = pid(round, w);
                let mut seq = 0i32;
                for txn in 0.. {
                    for _ in 0..1 + (txn + w) % 3 {
                        p.append(txn_batch(pid, seq), Durability::Written)
                            .await
                            .unwrap();
                        seq += 1;
                    }
                    let commit = (txn + w) % 2 == 0;
                    let at = p.append_marker(pid, 0, commit, 0).await.unwrap();
                    println!("MARKER {pid} {} {}", at.0, i32::from(commit));
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
}

/// What the log says: the aborted transactions (producer, first offset) and the first offsets
/// of the transactions still open at its end; and the markers found, by offset.
async fn scan(p: &Partition) -> (Vec<AbortedTxn>, Vec<i64>, BTreeMap<i64, (i64, bool)>) {
    let log = read_all(p, 0).await;
    let mut open: BTreeMap<i64, i64> = BTreeMap::new();
    let mut aborted = Vec::new();
    let mut markers = BTreeMap::new();
    for item in BatchIter::new(&log) {
        let (_, v) = item.unwrap();
        let pid = v.producer_id();
        if v.is_control() {
            let record = RecordIter::new(v.records(), v.record_count())
                .next()
                .unwrap()
                .unwrap();
            let commit = record.key.unwrap()[3] == 1;
            let first = open.remove(&pid).unwrap_or(v.base_offset().0);
            if !commit {
                aborted.push(AbortedTxn {
                    producer_id: pid,
                    first_offset: Offset(first),
                });
            }
            markers.insert(v.base_offset().0, (pid, commit));
        } else if v.is_transactional() {
            open.entry(pid).or_insert(v.base_offset().0);
        }
    }
    let mut still_open: Vec<i64> = open.into_values().collect();
    still_open.sort_unstable();
    (aborted, still_open, markers)
}

#[test]
fn acknowledged_markers_the_aborted_index_and_the_lso_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<(i64, i64, bool)> = Vec::new();
    let mut seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "txn_crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
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
                if let Some(rest) = line.strip_prefix("MARKER ") {
                    let v: Vec<i64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
                    l2.lock().unwrap().push((v[0], v[1], v[2] == 1));
                }
            }
        });
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait_ms = 40 + (seed >> 33) % 250;
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        acked.extend(lines.lock().unwrap().iter().copied());

        let root = dir.path().to_path_buf();
        let acked_now = acked.clone();
        run(dir.path(), || async move {
            let p = Partition::open(&root, tp(), cfg(), ShardContext::default())
                .await
                .unwrap();
            let (aborted, still_open, markers) = scan(&p).await;
            eprintln!(
                "round {round}: {} markers acknowledged so far, {} in the log, {} aborted, {} \
                 open, log end {}, {} segments, recovery {:?}",
                acked_now.len(),
                markers.len(),
                aborted.len(),
                still_open.len(),
                p.log_end_offset(),
                p.segment_count(),
                p.open_report().tail
            );
            for (pid, at, commit) in &acked_now {
                assert_eq!(
                    markers.get(at),
                    Some(&(*pid, *commit)),
                    "round {round}: acknowledged marker at {at} is missing"
                );
            }
            let end = p.log_end_offset();
            let mut indexed = p.aborted_transactions(Offset(0), end).unwrap();
            indexed.sort_by_key(|a| (a.first_offset, a.producer_id));
            let mut expected = aborted.clone();
            expected.sort_by_key(|a| (a.first_offset, a.producer_id));
            assert_eq!(indexed, expected, "round {round}: aborted index");
            let lso = still_open
                .first()
                .map_or(p.high_watermark(), |&o| Offset(o));
            assert_eq!(p.last_stable_offset(), lso, "round {round}: LSO");
            p.close().await.unwrap();
        });
    }
    let aborts = acked.iter().filter(|(_, _, commit)| !commit).count();
    assert!(
        aborts > ROUNDS as usize,
        "children acknowledged only {aborts} abort markers"
    );
}
