//! Property: under random appends, reads, truncations, delete-records, retention, clean
//! reopens and crash reopens, the partition log always matches a simple in-memory model
//! (a list of batches with their offsets and bytes, and a log start offset).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test and benchmark code: a failure should panic loudly.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use sluice_engine::batch::{set_base_offset, BatchIter};
use sluice_engine::config::LogConfig;
use sluice_engine::durability::Durability;
use sluice_engine::partition::{Partition, ShardContext};
use sluice_engine::retention::enforce_retention;
use sluice_engine::types::Offset;

#[derive(Debug, Clone)]
enum Op {
    Append {
        batches: Vec<(i32, usize)>,
        durability: u8,
    },
    Read {
        pick: u16,
        max_bytes: usize,
    },
    Truncate {
        pick: u16,
    },
    DeleteRecords {
        pick: u16,
    },
    Retention,
    Reopen,
    CrashReopen,
    OffsetForTime {
        pick: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec((1i32..6, 0usize..900), 1..4), 0u8..3)
            .prop_map(|(batches, durability)| Op::Append { batches, durability }),
        4 => (any::<u16>(), 1usize..3000).prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
        1 => any::<u16>().prop_map(|pick| Op::Truncate { pick }),
        1 => any::<u16>().prop_map(|pick| Op::DeleteRecords { pick }),
        1 => Just(Op::Retention),
        1 => Just(Op::Reopen),
        1 => Just(Op::CrashReopen),
        1 => any::<u16>().prop_map(|pick| Op::OffsetForTime { pick }),
    ]
}

#[derive(Clone)]
struct ModelBatch {
    base: i64,
    next: i64,
    ts: i64,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct Model {
    batches: Vec<ModelBatch>,
    start: i64,
    end: i64,
    ts_counter: i64,
}

impl Model {
    fn end(&self) -> i64 {
        self.end
    }
    fn containing(&self, o: i64) -> Option<usize> {
        self.batches.iter().position(|b| b.base <= o && o < b.next)
    }
    fn pick(&self, pick: u16) -> i64 {
        let (s, e) = (self.start, self.end());
        s + i64::from(pick) % (e - s + 1)
    }
}

fn cfg() -> Arc<LogConfig> {
    Arc::new(
        LogConfig::from_pairs([
            ("segment.bytes", "4096"),
            ("index.interval.bytes", "512"),
            ("retention.bytes", "6000"),
            ("retention.ms", "-1"),
        ])
        .unwrap(),
    )
}

async fn check(p: &Partition, m: &Model) {
    assert_eq!(p.log_end_offset(), Offset(m.end()), "log end");
    assert_eq!(p.high_watermark(), Offset(m.end()), "high watermark");
    assert_eq!(p.log_start_offset(), Offset(m.start), "log start");
    // Reading everything from the start gives exactly the model's batches.
    let first = m.containing(m.start);
    let expect: Vec<u8> = match first {
        Some(i) => m.batches[i..]
            .iter()
            .flat_map(|b| b.bytes.clone())
            .collect(),
        None => Vec::new(),
    };
    assert_eq!(read_all(p, m.start).await, expect, "whole log");
}

async fn run_ops(root: std::path::PathBuf, ops: Vec<Op>) {
    let cfg = cfg();
    let ctx = ShardContext::default();
    let mut p = Partition::open(&root, tp(), cfg.clone(), ctx.clone())
        .await
        .unwrap();
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Append {
                batches,
                durability,
            } => {
                let mut blob = Vec::new();
                let mut model_new = Vec::new();
                let mut next = m.end();
                for (i, (records, payload)) in batches.iter().enumerate() {
                    m.ts_counter += 1;
                    let b = batch(*records, *payload, m.ts_counter, i as u8 + next as u8);
                    let mut stored = b.to_vec();
                    set_base_offset(&mut stored, Offset(next));
                    model_new.push(ModelBatch {
                        base: next,
                        next: next + i64::from(*records),
                        ts: m.ts_counter,
                        bytes: stored,
                    });
                    next += i64::from(*records);
                    blob.extend_from_slice(&b);
                }
                let d = [
                    Durability::Buffered,
                    Durability::Written,
                    Durability::Synced,
                ][durability as usize];
                let info = p.append(Bytes::from(blob), d).await.unwrap();
                assert_eq!(info.base_offset, Offset(m.end()));
                m.batches.extend(model_new);
                m.end = next;
                if d == Durability::Buffered {
                    p.flush().await.unwrap();
                }
                if d == Durability::Synced {
                    assert!(p.durable_offset() >= Offset(m.end()));
                }
            }
            Op::Read { pick, max_bytes } => {
                let o = m.pick(pick);
                let r = p.read(Offset(o), max_bytes).await.unwrap();
                let bytes = r.to_vec();
                match m.containing(o) {
                    None => assert!(bytes.is_empty(), "read at end must be empty"),
                    Some(i) => {
                        let got: Vec<_> = BatchIter::new(&bytes)
                            .map(|b| b.unwrap().1.base_offset().0)
                            .collect();
                        assert_eq!(got[0], m.batches[i].base, "first batch contains the offset");
                        assert!(bytes.len() <= max_bytes || got.len() == 1, "KIP-74 bound");
                        let want: Vec<u8> = m.batches[i..i + got.len()]
                            .iter()
                            .flat_map(|b| b.bytes.clone())
                            .collect();
                        assert_eq!(bytes, want);
                        let slice_total: u64 = r.slices.iter().map(|s| s.len).sum();
                        assert_eq!(slice_total, bytes.len() as u64);
                    }
                }
            }
            Op::Truncate { pick } => {
                let o = m.pick(pick);
                let new_end = p.truncate_to(Offset(o)).await.unwrap();
                if let Some(i) = m.containing(o) {
                    m.end = m.batches[i].base;
                    m.batches.truncate(i);
                }
                m.start = m.start.min(m.end);
                assert_eq!(new_end, Offset(m.end()));
            }
            Op::DeleteRecords { pick } => {
                let o = m.pick(pick);
                let s = p.delete_records(Offset(o)).await.unwrap();
                m.start = m.start.max(o);
                assert_eq!(s, Offset(m.start));
                m.batches.retain(|b| b.next > m.start);
            }
            Op::Retention => {
                let out = enforce_retention(&p, 0).await.unwrap();
                let s = out.log_start_offset.0;
                assert!(s >= m.start && s <= m.end());
                if s > m.start {
                    assert!(
                        m.batches.iter().any(|b| b.base == s) || s == m.end(),
                        "retention cuts at batch boundaries"
                    );
                    m.start = s;
                    m.batches.retain(|b| b.next > s);
                }
                let total: u64 = m.batches.iter().map(|b| b.bytes.len() as u64).sum();
                assert!(out.deleted_segments == 0 || total >= 6000 || p.segment_count() == 1);
            }
            Op::Reopen => {
                p.close().await.unwrap();
                p = Partition::open(&root, tp(), cfg.clone(), ctx.clone())
                    .await
                    .unwrap();
            }
            Op::CrashReopen => {
                p.flush().await.unwrap();
                drop(p);
                p = Partition::open(&root, tp(), cfg.clone(), ShardContext::default())
                    .await
                    .unwrap();
            }
            Op::OffsetForTime { pick } => {
                let ts = i64::from(pick) % (m.ts_counter + 2);
                let got = p.offset_for_timestamp(ts).await.unwrap();
                let want = m
                    .batches
                    .iter()
                    .find(|b| b.ts >= ts && b.next > m.start)
                    .map(|b| (Offset(b.base.max(m.start)), b.ts));
                assert_eq!(got, want, "offset for timestamp {ts}");
            }
        }
        check(&p, &m).await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let done = Rc::new(RefCell::new(false));
        let d2 = done.clone();
        run(dir.path(), || async move {
            run_ops(root, ops).await;
            *d2.borrow_mut() = true;
        });
        prop_assert!(*done.borrow());
    }
}
