//! A `read_committed` consumer over the engine sees exactly the committed records: random
//! interleavings of plain appends, transactions of several producers, commit and abort markers
//! (some for producers with nothing open), segment rolls, clean restarts and crashes; the
//! consumer reads below the last stable offset in fetches of random sizes and drops aborted
//! records the way Kafka's clients do, from the aborted transactions each read lists.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use common::{open, run, small_segments};
use sluice_engine::batch::BatchIter;
use sluice_engine::builder::BatchBuilder;
use sluice_engine::compression::Codec;
use sluice_engine::durability::Durability;
use sluice_engine::partition::{Partition, SendPiece, ShardContext};
use sluice_engine::records::RecordIter;
use sluice_engine::types::Offset;

const PRODUCERS: i64 = 4;

/// A small deterministic generator (xorshift64*), so every seed replays the same run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One record's value is its id; every record of the run has its own.
fn batch(pid: Option<(i64, i32)>, ids: &[u64]) -> Bytes {
    let mut b = BatchBuilder::new(Codec::None);
    if let Some((pid, seq)) = pid {
        b = b.producer(pid, 0, seq).transactional(true);
    }
    for id in ids {
        let value = format!("{id:>80}");
        b.append(1_000, None, Some(value.as_bytes()), &[]).unwrap();
    }
    b.build().unwrap()
}

/// What the test knows: each producer's next sequence and its open transaction's records and
/// first offset; the records every read_committed reader must see, by offset.
#[derive(Default)]
struct Model {
    next_id: u64,
    seq: BTreeMap<i64, i32>,
    open: BTreeMap<i64, (i64, Vec<(i64, u64)>)>,
    visible: BTreeMap<i64, u64>,
}

impl Model {
    fn lso(&self, end: i64) -> i64 {
        self.open
            .values()
            .map(|(first, _)| *first)
            .min()
            .unwrap_or(end)
    }

    fn expected_below(&self, lso: i64) -> Vec<u64> {
        self.visible.range(..lso).map(|(_, id)| *id).collect()
    }
}

async fn step(p: &Partition, m: &mut Model, rng: &mut Rng) {
    let count = 1 + rng.below(3) as usize;
    let ids: Vec<u64> = (0..count)
        .map(|_| {
            m.next_id += 1;
            m.next_id
        })
        .collect();
    match rng.below(10) {
        0..=2 => {
            let info = p
                .append(batch(None, &ids), Durability::Written)
                .await
                .unwrap();
            for (i, id) in ids.iter().enumerate() {
                m.visible.insert(info.base_offset.0 + i as i64, *id);
            }
        }
        3..=6 => {
            let pid = 1 + rng.below(PRODUCERS as u64) as i64;
            let seq = m.seq.entry(pid).or_insert(0);
            let info = p
                .append(batch(Some((pid, *seq)), &ids), Durability::Written)
                .await
                .unwrap();
            *seq += count as i32;
            let txn = m
                .open
                .entry(pid)
                .or_insert((info.base_offset.0, Vec::new()));
            for (i, id) in ids.iter().enumerate() {
                txn.1.push((info.base_offset.0 + i as i64, *id));
            }
        }
        _ => {
            let pid = 1 + rng.below(PRODUCERS as u64) as i64;
            let commit = rng.below(2) == 0;
            p.append_marker(pid, 0, commit, 0).await.unwrap();
            if let Some((_, records)) = m.open.remove(&pid) {
                if commit {
                    m.visible.extend(records);
                }
            }
        }
    }
}

/// Reads everything a read_committed consumer may read, in fetches of random sizes, and
/// returns the ids it keeps, filtering as Kafka's Java client does.
async fn consume(p: &Partition, rng: &mut Rng) -> Vec<u64> {
    let mut out = Vec::new();
    let mut offset = Offset(0);
    loop {
        let lso = p.last_stable_offset();
        let max_bytes = 1 + rng.below(3000) as usize;
        let r = p.read_for_send_below(offset, max_bytes, lso).await.unwrap();
        if r.is_empty() {
            return out;
        }
        let mut bytes = Vec::new();
        for piece in &r.pieces {
            match piece {
                SendPiece::Mem(b) => bytes.extend_from_slice(b),
                SendPiece::File { file, pos, len } => {
                    let mut buf = vec![0u8; *len as usize];
                    file.read_exact_at(&mut buf, *pos).unwrap();
                    bytes.extend_from_slice(&buf);
                }
            }
        }
        // A fetch response is cut to its limit at a batch end.
        let cut = r
            .batch_ends
            .iter()
            .copied()
            .take_while(|&e| e <= max_bytes as u64)
            .last()
            .unwrap_or(r.batch_ends[0]);
        bytes.truncate(cut as usize);
        let mut aborted = p.aborted_transactions(offset, r.upper_bound).unwrap();
        aborted.sort_by_key(|a| a.first_offset);
        let mut aborted = aborted.into_iter().peekable();
        let mut aborting: HashSet<i64> = HashSet::new();
        for item in BatchIter::new(&bytes) {
            let (_, v) = item.unwrap();
            assert!(
                v.last_offset() < lso,
                "data at or past the LSO was returned"
            );
            offset = v.next_offset();
            if v.is_transactional() {
                // Markers count too: an abort of nothing is listed as a transaction that
                // starts and ends at its marker.
                while let Some(a) = aborted.next_if(|a| a.first_offset <= v.last_offset()) {
                    aborting.insert(a.producer_id);
                }
            }
            if v.is_control() {
                // Markers are never delivered; an abort marker ends its producer's abort.
                aborting.remove(&v.producer_id());
                continue;
            }
            if v.is_transactional() && aborting.contains(&v.producer_id()) {
                continue;
            }
            for record in RecordIter::new(v.records(), v.record_count()) {
                let value = record.unwrap().value.unwrap();
                out.push(std::str::from_utf8(value).unwrap().trim().parse().unwrap());
            }
        }
    }
}

#[test]
fn read_committed_consumers_see_exactly_the_committed_records() {
    for seed in 1..=6u64 {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        run(dir.path(), || async move {
            let ctx = ShardContext::default();
            let cfg = small_segments(4096);
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut m = Model::default();
            let mut p = open(&root, &cfg, &ctx).await;
            for round in 0..12 {
                for _ in 0..25 {
                    step(&p, &mut m, &mut rng).await;
                }
                let lso = p.last_stable_offset();
                assert_eq!(
                    lso.0,
                    m.lso(p.high_watermark().0),
                    "seed {seed} round {round}"
                );
                let got = consume(&p, &mut rng).await;
                assert_eq!(got, m.expected_below(lso.0), "seed {seed} round {round}");
                match rng.below(3) {
                    0 => {
                        p.close().await.unwrap();
                        drop(p);
                        p = open(&root, &cfg, &ctx).await;
                    }
                    1 => {
                        // A crash after everything was made durable.
                        p.flush().await.unwrap();
                        drop(p);
                        p = open(&root, &cfg, &ctx).await;
                    }
                    _ => {}
                }
                assert_eq!(
                    p.last_stable_offset(),
                    lso,
                    "seed {seed} round {round}: reopened"
                );
            }
            assert!(p.segment_count() > 10, "the run needs rolls");
            p.close().await.unwrap();
        });
    }
}
