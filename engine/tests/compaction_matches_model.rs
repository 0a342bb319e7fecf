//! Property: under random keyed appends (values and tombstones, every codec), cleaner passes
//! with a key map far smaller than the key set (so passes split), clean reopens and crash
//! reopens, the compacted log always agrees with a model of what was appended: offsets strictly
//! increase, every visible record is the record appended at its offset, the latest record of
//! every key is visible (a latest tombstone may have been removed), and no key shows a value
//! older than its latest. Also: a crash at each step of the segment swap leaves a log that
//! reopens as either the old or the new segments, and cleaning then completes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failure should panic loudly.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use sluice_engine::builder::BatchBuilder;
use sluice_engine::cleaner::{Cleaner, CleanerOptions, SwapStep};
use sluice_engine::compression::Codec;
use sluice_engine::config::LogConfig;
use sluice_engine::durability::Durability;
use sluice_engine::partition::{now_ms, Partition, ShardContext};

/// (offset, key, value) of one record.
type Rec = (i64, Vec<u8>, Option<Vec<u8>>);

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: Vec<(u8, Option<u16>)>,
        codec: u8,
    },
    Clean,
    Reopen,
    CrashReopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (prop::collection::vec((0u8..40, prop::option::weighted(0.85, any::<u16>())), 1..12), 0u8..5)
            .prop_map(|(records, codec)| Op::Append { records, codec }),
        3 => Just(Op::Clean),
        1 => Just(Op::Reopen),
        1 => Just(Op::CrashReopen),
    ]
}

fn codec(c: u8) -> Codec {
    [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ][c as usize % 5]
}

fn config(delete_retention_ms: i64) -> Arc<LogConfig> {
    Arc::new(
        LogConfig::from_pairs([
            ("segment.bytes", "4096"),
            ("index.interval.bytes", "256"),
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0"),
            (
                "delete.retention.ms",
                delete_retention_ms.to_string().as_str(),
            ),
        ])
        .unwrap(),
    )
}

fn key(k: u8) -> Vec<u8> {
    format!("key-{k:03}").into_bytes()
}

fn value(v: u16) -> Vec<u8> {
    // Large enough that segments roll every few batches.
    format!("value-{v:05}-{}", "x".repeat(usize::from(v % 97))).into_bytes()
}

async fn append(p: &Partition, recs: &[(u8, Option<u16>)], c: u8) -> i64 {
    let mut b = BatchBuilder::new(codec(c));
    for (k, v) in recs {
        let v = v.map(value);
        b.append(now_ms(), Some(&key(*k)), v.as_deref(), &[])
            .unwrap();
    }
    let info = p
        .append(b.build().unwrap(), Durability::Written)
        .await
        .unwrap();
    info.base_offset.0
}

/// Every visible record from the log start, checking offsets increase.
async fn visible(p: &Partition) -> Vec<Rec> {
    records_from(p, p.log_start_offset())
        .await
        .into_iter()
        .map(|(off, k, v)| (off, k.unwrap(), v))
        .collect()
}

/// Cleans `p` with a fresh default cleaner, checks the log against the model and returns what
/// it shows.
async fn clean_and_check(
    p: &Partition,
    appended: &BTreeMap<i64, (Vec<u8>, Option<Vec<u8>>)>,
) -> Vec<Rec> {
    Cleaner::new(CleanerOptions::default())
        .clean(p, now_ms())
        .await
        .unwrap();
    let vis = visible(p).await;
    check(&vis, appended);
    vis
}

/// The checks against the model (`appended`: every record ever appended, by offset).
fn check(vis: &[Rec], appended: &BTreeMap<i64, (Vec<u8>, Option<Vec<u8>>)>) {
    let mut latest: BTreeMap<&[u8], i64> = BTreeMap::new();
    for (off, (k, _)) in appended {
        latest.insert(k, *off);
    }
    let mut seen: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for (off, k, v) in vis {
        let (ak, av) = appended.get(off).expect("a visible offset was appended");
        assert_eq!(
            (ak, av),
            (k, v),
            "record at {off} differs from what was appended"
        );
        seen.insert(k.clone(), *off);
    }
    for (k, off) in &latest {
        let (_, v) = &appended[off];
        match (seen.get(*k), v) {
            (Some(s), _) => assert_eq!(
                s,
                off,
                "key {:?}: last visible offset {s} is not its latest {off}",
                String::from_utf8_lossy(k)
            ),
            (None, Some(_)) => panic!(
                "key {:?}: latest value at {off} is gone",
                String::from_utf8_lossy(k)
            ),
            (None, None) => {} // a tombstone past its horizon was removed
        }
    }
}

fn run_ops(root: &Path, ops: Vec<Op>, delete_retention_ms: i64) {
    let cfg = config(delete_retention_ms);
    run(root, || async move {
        let ctx = ShardContext::default();
        let mut p = open(root, &cfg, &ctx).await;
        let mut cleaner = Cleaner::new(CleanerOptions {
            // 16 slots (14 usable): a log of 40 keys needs several passes.
            key_map_bytes: 16 * 24,
            ..CleanerOptions::default()
        });
        let mut appended: BTreeMap<i64, (Vec<u8>, Option<Vec<u8>>)> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Append { records, codec } => {
                    let base = append(&p, &records, codec).await;
                    for (i, (k, v)) in records.iter().enumerate() {
                        appended.insert(base + i as i64, (key(*k), v.map(value)));
                    }
                }
                Op::Clean => {
                    cleaner.clean(&p, now_ms()).await.unwrap();
                }
                Op::Reopen => {
                    p.close().await.unwrap();
                    p = open(root, &cfg, &ctx).await;
                }
                Op::CrashReopen => {
                    p.flush().await.unwrap();
                    drop(p);
                    p = open(root, &cfg, &ctx).await;
                }
            }
            let vis = visible(&p).await;
            check(&vis, &appended);
        }
        // A final full clean leaves one record per live key in the cleaned range.
        cleaner.clean(&p, now_ms()).await.unwrap();
        let vis = visible(&p).await;
        check(&vis, &appended);
        p.close().await.unwrap();
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn compacted_log_matches_the_model(ops in prop::collection::vec(op(), 1..60), drop_tombstones in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        run_ops(dir.path(), ops, if drop_tombstones { 0 } else { 86_400_000 });
    }
}

#[test]
fn many_versions_shrink_to_one_per_key_with_segments_merged() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let cfg = config(86_400_000);
    run(&root.clone(), || async move {
        let ctx = ShardContext::default();
        let p = open(&root, &cfg, &ctx).await;
        let mut appended = BTreeMap::new();
        let mut cleaner = Cleaner::new(CleanerOptions::default());
        let mut counts = Vec::new();
        for pass in 0..2u16 {
            for round in 0..40u16 {
                let recs: Vec<(u8, Option<u16>)> =
                    (0..10u8).map(|k| (k, Some(pass * 100 + round))).collect();
                let base = append(&p, &recs, 0).await;
                for (i, (k, v)) in recs.iter().enumerate() {
                    appended.insert(base + i as i64, (key(*k), v.map(value)));
                }
            }
            let before = p.segment_count();
            let stats = cleaner.clean(&p, now_ms()).await.unwrap();
            assert!(
                stats.passes >= 1 && stats.bytes_written < stats.bytes_read,
                "{stats:?}"
            );
            counts.push((before, p.segment_count()));
            check(&visible(&p).await, &appended);
        }
        // The second clean merges the small segments the first one left.
        let (before, after) = counts[1];
        assert!(after < before, "segments {counts:?}");
        let vis = visible(&p).await;
        // At most the active segment's records plus one per key below it.
        let active_records = vis
            .iter()
            .filter(|(o, _, _)| *o >= p.log_end_offset().0 - 400)
            .count();
        assert!(vis.len() <= active_records + 10, "{} visible", vis.len());
        // The log reopens with the cleaned segments and shows the same records.
        p.close().await.unwrap();
        let p = open(&root, &cfg, &ctx).await;
        assert_eq!(visible(&p).await, vis);
        p.close().await.unwrap();
    });
}

#[test]
fn a_crash_at_each_swap_step_leaves_old_or_new_segments() {
    for step in [
        SwapStep::CleanedWritten,
        SwapStep::Committed,
        SwapStep::OldRemoved,
        SwapStep::Renamed,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let cfg = config(86_400_000);
        run(&root.clone(), || async move {
            let ctx = ShardContext::default();
            let p = open(&root, &cfg, &ctx).await;
            let mut appended = BTreeMap::new();
            for round in 0..30u16 {
                let recs: Vec<(u8, Option<u16>)> = (0..8u8)
                    .map(|k| (k, (k != 3 || round < 29).then_some(round)))
                    .collect();
                let base = append(&p, &recs, 0).await;
                for (i, (k, v)) in recs.iter().enumerate() {
                    appended.insert(base + i as i64, (key(*k), v.map(value)));
                }
            }
            p.flush().await.unwrap();
            let all = visible(&p).await;
            let mut crashing = Cleaner::new(CleanerOptions {
                crash_at: Some(step),
                ..CleanerOptions::default()
            });
            assert!(
                crashing.clean(&p, now_ms()).await.is_err(),
                "{step:?}: injected crash"
            );
            assert!(
                p.poisoned().is_some(),
                "{step:?}: a failed swap stops the partition's writes until a restart"
            );
            drop(p);
            let p = open(&root, &cfg, &ctx).await;
            let vis = visible(&p).await;
            check(&vis, &appended);
            if step == SwapStep::CleanedWritten {
                assert_eq!(vis, all, "an uncommitted swap leaves the old segments");
            } else {
                assert!(
                    vis.len() < all.len(),
                    "{step:?}: a committed swap is finished"
                );
            }
            let leftovers: Vec<String> = std::fs::read_dir(p.dir())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
                .collect();
            assert!(leftovers.is_empty(), "{step:?}: {leftovers:?}");
            clean_and_check(&p, &appended).await;
            p.close().await.unwrap();
        });
    }
}

#[test]
fn truncation_below_the_cleaned_range_makes_new_appends_dirty_again() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let cfg = config(86_400_000);
    run(&root.clone(), || async move {
        let ctx = ShardContext::default();
        let p = open(&root, &cfg, &ctx).await;
        let mut appended = BTreeMap::new();
        eight_keys_per_round(&p, 0..30, |_| 0, &mut appended).await;
        let mut cleaner = Cleaner::new(CleanerOptions::default());
        cleaner.clean(&p, now_ms()).await.unwrap();
        let checkpoint = sluice_engine::cleaner::read_checkpoint(p.dir())
            .unwrap()
            .unwrap();
        let cut = sluice_engine::types::Offset(checkpoint.0 / 2);
        let end = p.truncate_to(cut).await.unwrap();
        let stored = sluice_engine::cleaner::read_checkpoint(p.dir())
            .unwrap()
            .unwrap();
        assert!(
            stored <= end,
            "checkpoint {stored} past the truncated end {end}"
        );
        appended.retain(|o, _| *o < end.0);
        eight_keys_per_round(&p, 100..130, |_| 0, &mut appended).await;
        cleaner.clean(&p, now_ms()).await.unwrap();
        check(&visible(&p).await, &appended);
        p.close().await.unwrap();
    });
}

/// Keeps the executor's one blocking thread busy until the returned sender is used (or
/// dropped), so that file work the cleaner queues there (its swap) waits behind it.
async fn hold_blocking_thread() -> (std::sync::mpsc::Sender<()>, glommio::task::JoinHandle<()>) {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let holder = glommio::spawn_local(glommio::executor().spawn_blocking(move || {
        let _ = held.recv();
    }))
    .detach();
    // Let the holder task enqueue its job before anything else does.
    glommio::executor().yield_task_queue_now().await;
    (release, holder)
}

/// Waits until the cleaner has written and synced a group's output (`.cleaned`): its swap is
/// the next thing it does.
async fn wait_for_cleaned_file(dir: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !has_cleaned_file(dir) {
        assert!(
            std::time::Instant::now() < deadline,
            "the cleaner wrote nothing"
        );
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    }
}

fn has_cleaned_file(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".cleaned")
    })
}

/// 30 rounds of the 8 keys; returns what was appended, by offset.
async fn eight_keys_thirty_times(p: &Partition) -> BTreeMap<i64, (Vec<u8>, Option<Vec<u8>>)> {
    let mut appended = BTreeMap::new();
    eight_keys_per_round(p, 0..30, |round| (round % 5) as u8, &mut appended).await;
    appended
}

/// Appends one batch per round holding the eight keys with the round as their value, in the
/// codec `codec(round)`, and records each offset in `appended`.
async fn eight_keys_per_round(
    p: &Partition,
    rounds: std::ops::Range<u16>,
    codec: impl Fn(u16) -> u8,
    appended: &mut BTreeMap<i64, (Vec<u8>, Option<Vec<u8>>)>,
) {
    for round in rounds {
        let recs: Vec<(u8, Option<u16>)> = (0..8u8).map(|k| (k, Some(round))).collect();
        let base = append(p, &recs, codec(round)).await;
        for (i, (k, v)) in recs.iter().enumerate() {
            appended.insert(base + i as i64, (key(*k), v.map(value)));
        }
    }
}

fn spawn_clean(
    p: &Partition,
) -> glommio::task::JoinHandle<sluice_engine::error::Result<sluice_engine::cleaner::CleanerStats>> {
    let p = p.clone();
    glommio::spawn_local(async move {
        Cleaner::new(CleanerOptions::default())
            .clean(&p, now_ms())
            .await
    })
    .detach()
}

#[test]
fn the_swap_waits_on_the_blocking_thread_while_the_shard_serves() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let cfg = config(86_400_000);
    run(&root.clone(), || async move {
        let ctx = ShardContext::default();
        let p = open(&root, &cfg, &ctx).await;
        let other = sluice_engine::partition::Partition::open(
            &root,
            sluice_engine::types::TopicPartition::new("other", 0),
            small_segments(1 << 20),
            ctx.clone(),
        )
        .await
        .unwrap();
        let appended = eight_keys_thirty_times(&p).await;
        let all = visible(&p).await;
        let (release, holder) = hold_blocking_thread().await;
        let cleaning = spawn_clean(&p);
        wait_for_cleaned_file(p.dir()).await;
        glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
        // The shard serves meanwhile: appends to another partition, reads of this one.
        for i in 0..20 {
            other
                .append(batch(1, 100, i, 1), Durability::Written)
                .await
                .unwrap();
        }
        assert!(
            visible(&p).await == all,
            "reads see the old segments: the swap has not happened"
        );
        assert!(
            has_cleaned_file(p.dir()),
            "the swap did not start: it waits for the blocking thread"
        );
        release.send(()).unwrap();
        holder.await;
        let stats = cleaning.await.unwrap().unwrap();
        assert!(stats.segments_replaced > 0, "{stats:?}");
        let vis = visible(&p).await;
        assert!(vis.len() < all.len());
        check(&vis, &appended);
        other.close().await.unwrap();
        p.close().await.unwrap();
    });
}

/// Waits until the cleaner's output exists and its swap holds the partition's append turn
/// (the caller holds the blocking thread, so the swap stays there).
async fn wait_until_the_swap_holds_the_turn(p: &sluice_engine::partition::Partition) {
    wait_for_cleaned_file(p.dir()).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while p.append_turns_queued() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the swap never started"
        );
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    }
}

#[test]
fn delete_records_and_appends_during_a_swap_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let cfg = config(86_400_000);
    run(&root.clone(), || async move {
        let ctx = ShardContext::default();
        let p = open(&root, &cfg, &ctx).await;
        let mut appended = eight_keys_thirty_times(&p).await;
        let cut = sluice_engine::types::Offset(p.log_end_offset().0 / 3);
        let (release, holder) = hold_blocking_thread().await;
        let cleaning = spawn_clean(&p);
        // Nothing else is queued on the partition: a held turn is the swap's.
        wait_until_the_swap_holds_the_turn(&p).await;
        // The swap holds the partition's append turn until its file work is done: DeleteRecords
        // (which removes segment files) and appends queue behind it.
        let deleting = {
            let p = p.clone();
            glommio::spawn_local(async move { p.delete_records(cut).await }).detach()
        };
        let appending = {
            let p = p.clone();
            glommio::spawn_local(async move {
                let recs: Vec<(u8, Option<u16>)> = (0..8u8).map(|k| (k, Some(999))).collect();
                (append(&p, &recs, 0).await, recs)
            })
            .detach()
        };
        glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(
            p.log_start_offset(),
            sluice_engine::types::Offset(0),
            "DeleteRecords waits for the swap"
        );
        release.send(()).unwrap();
        holder.await;
        cleaning.await.unwrap().unwrap();
        assert_eq!(deleting.await.unwrap().unwrap(), cut);
        let (base, recs) = appending.await.unwrap();
        for (i, (k, v)) in recs.iter().enumerate() {
            appended.insert(base + i as i64, (key(*k), v.map(value)));
        }
        appended.retain(|o, _| *o >= cut.0);
        let vis = clean_and_check(&p, &appended).await;
        p.close().await.unwrap();
        let p = open(&root, &cfg, &ctx).await;
        assert!(visible(&p).await == vis, "the log reopens as it was");
        p.close().await.unwrap();
    });
}

#[test]
fn a_truncation_during_a_pass_keeps_the_checkpoint_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let cfg = config(86_400_000);
    run(&root.clone(), || async move {
        let ctx = ShardContext::default();
        let p = open(&root, &cfg, &ctx).await;
        let mut appended = eight_keys_thirty_times(&p).await;
        let (release, holder) = hold_blocking_thread().await;
        let cleaning = spawn_clean(&p);
        wait_until_the_swap_holds_the_turn(&p).await;
        // Queued behind the first swap, the truncation runs before the pass can store its
        // checkpoint (which is past the truncation point).
        let cut = sluice_engine::types::Offset(p.log_end_offset().0 / 2);
        let truncating = {
            let p = p.clone();
            glommio::spawn_local(async move { p.truncate_to(cut).await }).detach()
        };
        glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        release.send(()).unwrap();
        holder.await;
        cleaning.await.unwrap().unwrap();
        let end = truncating.await.unwrap().unwrap();
        let stored = sluice_engine::cleaner::read_checkpoint(p.dir())
            .unwrap()
            .unwrap_or(sluice_engine::types::Offset(0));
        assert!(
            stored <= end,
            "checkpoint {stored} past the truncated end {end}"
        );
        appended.retain(|o, _| *o < end.0);
        // What is appended again there is dirty, and cleaned.
        eight_keys_per_round(&p, 100..130, |_| 0, &mut appended).await;
        clean_and_check(&p, &appended).await;
        p.close().await.unwrap();
    });
}

/// A cleaner paced by its backlog picks its rate from the log it is about to clean (the
/// estimate spread over the pace) and holds its reads and writes to that rate; an unpaced one
/// has no rate.
#[test]
fn a_paced_clean_spreads_its_io_over_the_pace() {
    use sluice_engine::cleaner::{dirtiness, io_rate, PACE_FLOOR_BYTES_PER_SEC};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let cfg = Arc::new(
        LogConfig::from_pairs([
            ("segment.bytes", "1048576"),
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0"),
        ])
        .unwrap(),
    );
    run(&root.clone(), || async move {
        let ctx = ShardContext::default();
        let p = open(&root, &cfg, &ctx).await;
        // About 6 MiB: 60 batches of 100 one-KiB values over 50 keys.
        let value = vec![b'v'; 1024];
        for _ in 0..60 {
            let mut b = BatchBuilder::new(Codec::None);
            for k in 0..100u8 {
                b.append(now_ms(), Some(&key(k % 50)), Some(&value), &[])
                    .unwrap();
            }
            p.append(b.build().unwrap(), Durability::Written)
                .await
                .unwrap();
        }
        let d = dirtiness(&p, now_ms()).await.unwrap().unwrap();
        let pace = Duration::from_secs(1);
        let expected = d.io_estimate();
        assert!(expected > PACE_FLOOR_BYTES_PER_SEC, "{d:?}");
        let mut cleaner = Cleaner::new(CleanerOptions {
            backlog_pace: Some(pace),
            ..CleanerOptions::default()
        });
        let t = Instant::now();
        let stats = cleaner.clean(&p, now_ms()).await.unwrap();
        let took = t.elapsed();
        assert_eq!(cleaner.io_rate(), Some(expected));
        assert_eq!(cleaner.io_rate(), io_rate(expected, Some(pace), None));
        let io = stats.map_bytes_read + stats.bytes_read + stats.bytes_written;
        // The pacer lets the I/O run ahead of the rate by at most one 256 KiB chunk and a
        // slice of work.
        let least = Duration::from_secs_f64(io.saturating_sub(2 << 18) as f64 / expected as f64);
        assert!(
            took >= least,
            "{io} bytes of I/O at {expected} B/s took {took:?}, less than {least:?}"
        );
        assert!(stats.bytes_written < stats.bytes_read, "{stats:?}");
        // The next round has nothing to clean; an unpaced cleaner has no rate.
        let mut unpaced = Cleaner::new(CleanerOptions {
            backlog_pace: None,
            ..CleanerOptions::default()
        });
        unpaced.clean(&p, now_ms()).await.unwrap();
        assert_eq!(unpaced.io_rate(), None);
        p.close().await.unwrap();
    });
}

#[test]
fn the_pace_has_a_floor_grows_with_the_backlog_and_obeys_the_cap() {
    use sluice_engine::cleaner::{io_rate, PACE_FLOOR_BYTES_PER_SEC as FLOOR};
    use std::time::Duration;
    let minute = Some(Duration::from_secs(60));
    assert_eq!(io_rate(0, minute, None), Some(FLOOR));
    assert_eq!(io_rate(1 << 20, minute, None), Some(FLOOR));
    assert_eq!(io_rate(60 << 30, minute, None), Some(1 << 30));
    assert_eq!(io_rate(60 << 30, minute, Some(100 << 20)), Some(100 << 20));
    assert_eq!(io_rate(60 << 30, None, Some(100 << 20)), Some(100 << 20));
    assert_eq!(io_rate(60 << 30, None, None), None);
    assert_eq!(io_rate(60 << 30, None, Some(0)), None);
}
