//! Rewriting one stored batch for the cleaner: which records stay, and the new bytes.
//!
//! The rules follow Kafka's cleaner (`MemoryRecords.filterTo` with the cleaner's record
//! filter):
//! - a batch keeps its base offset and its `lastOffsetDelta` whatever records go, so the first
//!   and last offsets (and with them an idempotent producer's sequence range) stay visible;
//!   removed records leave gaps, nothing is renumbered;
//! - a batch whose records all stay and that needs no new delete horizon is copied unchanged;
//! - a rewritten batch keeps its codec, producer fields, leader epoch, timestamp type and every
//!   retained record's key, value, headers and timestamp; the CRC is recomputed;
//! - a batch holding a retained tombstone gets a delete horizon (`now + delete.retention.ms`)
//!   the first time it is cleaned: attributes bit 6 set and the base timestamp carrying the
//!   horizon, the record timestamp deltas rewritten against it (KIP-534). Tombstones in a
//!   batch whose horizon has passed are removed;
//! - a batch left without records disappears, unless it must be kept
//!   ([`EmptyBatch::Keep`]: the last batch of an active producer, or the last batch of the
//!   cleaned range); then only its 61-byte header remains, with zero records.
//!
//! Pure functions over byte slices; run on whichever shard owns the partition being cleaned.

use crate::batch::{
    BatchView, TimestampType, ATTRIBUTES_AT, ATTRIBUTES_CODEC_MASK, ATTRIBUTES_DELETE_HORIZON,
    BASE_TIMESTAMP_AT, BATCH_LENGTH_AT, CRC_AT, MAX_TIMESTAMP_AT, RECORD_COUNT_AT,
};
use crate::compression::{self, Codec};
use crate::error::{Error, Result};
use crate::limits::{BATCH_HEADER_BYTES, BATCH_LOG_OVERHEAD_BYTES};
use crate::records::{decode_records, put_varlong, Record};
use crate::types::Offset;

/// What to do with a batch that ends up with no records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyBatch {
    Drop,
    Keep,
}

/// The fate of one batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    /// Copy the batch as it is.
    Unchanged,
    /// Write these bytes instead (a complete batch with a valid CRC).
    Rewritten(Vec<u8>),
    /// Write nothing.
    Dropped,
}

/// Counts of one batch's filtering, for the cleaner's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterCounts {
    pub records_read: u64,
    pub records_kept: u64,
}

/// One record as the retention decision sees it.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub offset: Offset,
    pub key: Option<&'a [u8]>,
    pub is_tombstone: bool,
}

/// Filters the records of `batch` with `keep` (which is told the record and whether the
/// batch's delete horizon has passed) and returns what to write. `now_ms` and
/// `delete_retention_ms` set a new delete horizon, when a retained record is a tombstone or
/// `wants_horizon` (a transaction marker); `max_out` caps decompression.
#[allow(clippy::too_many_arguments)]
pub fn filter_batch(
    batch: &BatchView<'_>,
    now_ms: i64,
    delete_retention_ms: i64,
    wants_horizon: bool,
    empty: EmptyBatch,
    max_out: usize,
    counts: &mut FilterCounts,
    mut keep: impl FnMut(&RecordRef<'_>, bool) -> bool,
) -> Result<Filtered> {
    let attributes = batch.attributes();
    let base = batch.base_offset();
    let horizon = batch.has_delete_horizon().then(|| batch.base_timestamp());
    let horizon_passed = horizon.is_some_and(|h| h <= now_ms);
    let decoded = decode_records(attributes, batch.records(), batch.record_count(), max_out)
        .map_err(|e| corrupt(batch, &e.to_string()))?;
    let mut kept: Vec<Record<'_>> = Vec::new();
    let mut all_kept = true;
    let mut tombstones = false;
    for record in decoded.iter() {
        let record = record.map_err(|e| corrupt(batch, &e.to_string()))?;
        counts.records_read += 1;
        let r = RecordRef {
            offset: base.plus(i64::from(record.offset_delta)),
            key: record.key,
            is_tombstone: record.value.is_none(),
        };
        if keep(&r, horizon_passed) {
            tombstones |= r.is_tombstone;
            kept.push(record);
        } else {
            all_kept = false;
        }
    }
    counts.records_kept += kept.len() as u64;
    if kept.is_empty() {
        return Ok(match empty {
            EmptyBatch::Keep if batch.record_count() == 0 => Filtered::Unchanged,
            EmptyBatch::Keep => Filtered::Rewritten(empty_header(batch)),
            EmptyBatch::Drop => Filtered::Dropped,
        });
    }
    let needs_horizon = (tombstones || wants_horizon) && horizon.is_none();
    if all_kept && !needs_horizon {
        return Ok(Filtered::Unchanged);
    }
    let old_base_ts = batch.base_timestamp();
    let new_base_ts = if needs_horizon {
        now_ms.saturating_add(delete_retention_ms)
    } else {
        old_base_ts
    };
    let mut section = Vec::with_capacity(decoded.bytes().len());
    let mut max_ts = i64::MIN;
    for r in &kept {
        let ts = old_base_ts.saturating_add(r.timestamp_delta);
        max_ts = max_ts.max(ts);
        encode_record(&mut section, r, ts.saturating_sub(new_base_ts));
    }
    let codec = Codec::from_attributes(attributes).map_err(|e| corrupt(batch, &e.to_string()))?;
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + section.len());
    out.extend_from_slice(&batch.as_bytes()[..BATCH_HEADER_BYTES]);
    compression::compress_into(codec, &section, None, &mut out)
        .map_err(|e| corrupt(batch, &e.to_string()))?;
    let mut attrs = attributes;
    if needs_horizon {
        attrs |= ATTRIBUTES_DELETE_HORIZON;
    }
    let max_timestamp = match batch.timestamp_type() {
        TimestampType::LogAppendTime => batch.max_timestamp(),
        TimestampType::CreateTime => max_ts,
    };
    finish_header(
        &mut out,
        attrs,
        new_base_ts,
        max_timestamp,
        kept.len() as i32,
    )?;
    Ok(Filtered::Rewritten(out))
}

/// The 61-byte header of `batch` with zero records: offsets, producer fields, epoch, timestamp
/// type and the transactional/control flags kept; no codec, no delete horizon; both timestamps
/// the batch's max timestamp (as Kafka writes an empty batch).
fn empty_header(batch: &BatchView<'_>) -> Vec<u8> {
    let mut out = batch.as_bytes()[..BATCH_HEADER_BYTES].to_vec();
    let attrs = batch.attributes() & !ATTRIBUTES_CODEC_MASK & !ATTRIBUTES_DELETE_HORIZON;
    let ts = batch.max_timestamp();
    // A 61-byte header always fits its length field.
    let _ = finish_header(&mut out, attrs, ts, ts, 0);
    out
}

/// Writes the length, attributes, timestamps, count and CRC of a batch whose header was copied
/// from the original and whose records section follows it in `out`.
fn finish_header(
    out: &mut [u8],
    attributes: i16,
    base_timestamp: i64,
    max_timestamp: i64,
    count: i32,
) -> Result<()> {
    let length = i32::try_from(out.len() - BATCH_LOG_OVERHEAD_BYTES).map_err(|_| {
        Error::RecordListTooLarge {
            size: out.len(),
            max: i32::MAX as usize,
        }
    })?;
    out[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
    out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    out[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8].copy_from_slice(&base_timestamp.to_be_bytes());
    out[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    out[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Appends `r` encoded as a v2 record with `timestamp_delta` (its offset delta, key, value and
/// headers unchanged).
fn encode_record(out: &mut Vec<u8>, r: &Record<'_>, timestamp_delta: i64) {
    let mut body = Vec::with_capacity(r.encoded_len() + 8);
    body.push(r.attributes as u8);
    put_varlong(&mut body, timestamp_delta);
    put_varlong(&mut body, i64::from(r.offset_delta));
    put_bytes(&mut body, r.key);
    put_bytes(&mut body, r.value);
    put_varlong(&mut body, i64::from(r.header_count()));
    for h in r.headers() {
        put_bytes(&mut body, Some(h.key));
        put_bytes(&mut body, h.value);
    }
    put_varlong(out, body.len() as i64);
    out.extend_from_slice(&body);
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => put_varlong(out, -1),
    }
}

fn corrupt(batch: &BatchView<'_>, what: &str) -> Error {
    Error::CorruptLog {
        segment: std::path::PathBuf::new(),
        pos: crate::types::FilePos(0),
        detail: format!(
            "cleaner could not read the batch at offset {}: {what}",
            batch.base_offset()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::BatchBuilder;
    use crate::records::{Header, RecordIter};

    fn build(codec: Codec, recs: &[(&[u8], Option<&[u8]>)], base_ts: i64) -> Vec<u8> {
        let mut b = BatchBuilder::new(codec).base_offset(100).producer(7, 1, 40);
        for (i, (k, v)) in recs.iter().enumerate() {
            let h = [Header {
                key: b"h",
                value: Some(b"x"),
            }];
            b.append(base_ts + i as i64, Some(k), *v, &h).unwrap();
        }
        b.build().unwrap().to_vec()
    }

    /// (offset, key, value, timestamp) of every record.
    type Rec = (i64, Vec<u8>, Option<Vec<u8>>, i64);

    fn records_of(batch: &[u8]) -> Vec<Rec> {
        let v = BatchView::parse(batch, 0).unwrap();
        assert_eq!(v.compute_crc(), v.crc());
        let d = decode_records(v.attributes(), v.records(), v.record_count(), 1 << 20).unwrap();
        RecordIter::new(d.bytes(), v.record_count())
            .map(|r| {
                let r = r.unwrap();
                assert_eq!(r.headers().count(), 1);
                (
                    v.base_offset().0 + i64::from(r.offset_delta),
                    r.key.unwrap().to_vec(),
                    r.value.map(<[u8]>::to_vec),
                    v.base_timestamp() + r.timestamp_delta,
                )
            })
            .collect()
    }

    #[test]
    fn keeps_offsets_codec_timestamps_and_sets_the_delete_horizon() {
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let raw = build(
                codec,
                &[(b"a", Some(b"1")), (b"b", None), (b"c", Some(b"3"))],
                1_000,
            );
            let v = BatchView::parse(&raw, 0).unwrap();
            let mut counts = FilterCounts::default();
            let out = filter_batch(
                &v,
                5_000,
                100,
                false,
                EmptyBatch::Drop,
                1 << 20,
                &mut counts,
                |r, _| r.key != Some(b"a"),
            )
            .unwrap();
            let Filtered::Rewritten(out) = out else {
                panic!("expected a rewrite")
            };
            let nv = BatchView::parse(&out, 0).unwrap();
            nv.validate_stored(0, 1 << 20).unwrap();
            assert_eq!(nv.compression_id(), codec.id());
            assert_eq!(nv.base_offset(), Offset(100));
            assert_eq!(nv.last_offset(), Offset(102), "last offset kept");
            assert_eq!(nv.record_count(), 2);
            assert_eq!(nv.producer_id(), 7);
            assert_eq!(nv.base_sequence(), 40);
            assert!(nv.has_delete_horizon());
            assert_eq!(nv.base_timestamp(), 5_100);
            assert_eq!(nv.max_timestamp(), 1_002);
            assert_eq!(
                records_of(&out),
                vec![
                    (101, b"b".to_vec(), None, 1_001),
                    (102, b"c".to_vec(), Some(b"3".to_vec()), 1_002)
                ]
            );
            assert_eq!(
                counts,
                FilterCounts {
                    records_read: 3,
                    records_kept: 2
                }
            );
        }
    }

    #[test]
    fn unchanged_dropped_and_empty_batches() {
        let raw = build(Codec::None, &[(b"a", Some(b"1"))], 10);
        let v = BatchView::parse(&raw, 0).unwrap();
        let mut c = FilterCounts::default();
        let f = |keep: bool, e| {
            let mut c = FilterCounts::default();
            filter_batch(&v, 0, 0, false, e, 1 << 20, &mut c, |_, _| keep).unwrap()
        };
        assert_eq!(f(true, EmptyBatch::Drop), Filtered::Unchanged);
        assert_eq!(f(false, EmptyBatch::Drop), Filtered::Dropped);
        let Filtered::Rewritten(e) = f(false, EmptyBatch::Keep) else {
            panic!("expected an empty batch")
        };
        assert_eq!(e.len(), BATCH_HEADER_BYTES);
        let ev = BatchView::parse(&e, 0).unwrap();
        ev.validate_stored(0, 1 << 20).unwrap();
        assert_eq!(ev.record_count(), 0);
        assert_eq!(
            (ev.base_offset(), ev.last_offset()),
            (Offset(100), Offset(100))
        );
        assert_eq!(ev.producer_id(), 7);
        // The horizon passed: the callback is told so.
        let tomb = build(Codec::None, &[(b"a", None)], 10);
        let tv = BatchView::parse(&tomb, 0).unwrap();
        let Filtered::Rewritten(with_h) = filter_batch(
            &tv,
            50,
            10,
            false,
            EmptyBatch::Drop,
            1 << 20,
            &mut c,
            |_, _| true,
        )
        .unwrap() else {
            panic!("tombstone batch gets a horizon")
        };
        let hv = BatchView::parse(&with_h, 0).unwrap();
        let mut passed = None;
        filter_batch(
            &hv,
            61,
            10,
            false,
            EmptyBatch::Drop,
            1 << 20,
            &mut c,
            |_, p| {
                passed = Some(p);
                true
            },
        )
        .unwrap();
        assert_eq!(passed, Some(true));
        assert_eq!(
            records_of(&with_h)[0].3,
            10,
            "record timestamp survives the horizon"
        );
    }
}
