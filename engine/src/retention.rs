//! Time and size retention: deletes whole closed segments (never the active one) and moves the
//! log start offset past them, as Kafka does for `cleanup.policy=delete`.
//!
//! The shard runtime calls [`enforce_retention`] periodically for each of its partitions from a
//! low-priority task queue. Runs on the partition's home shard.

use crate::error::Result;
use crate::partition::Partition;
use crate::types::Offset;

/// What one retention pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub deleted_segments: usize,
    pub log_start_offset: Offset,
}

/// Deletes the oldest closed segments that are past `retention.ms` (their newest timestamp is
/// older than `now_ms - retention.ms`) or that the log can lose while staying at or above
/// `retention.bytes`. Deletion stops at the first segment that must be kept, so the log stays
/// contiguous.
pub async fn enforce_retention(p: &Partition, now_ms: i64) -> Result<RetentionOutcome> {
    let cfg = p.config().clone();
    // A poisoned partition's files may be mid-change (a failed cleaner swap): only start-up
    // recovery touches them.
    if !cfg.deletes() || (cfg.retention_ms < 0 && cfg.retention_bytes < 0) || p.poisoned().is_some()
    {
        return Ok(RetentionOutcome {
            deleted_segments: 0,
            log_start_offset: p.log_start_offset(),
        });
    }
    let mut total = p.size_bytes();
    let mut n = 0usize;
    for seg in p.closed_segments() {
        if cfg.retention_ms >= 0 {
            seg.ensure_indexes(cfg.index_interval_bytes).await?;
        }
        let newest = seg.meta.borrow().max_timestamp.map(|(t, _)| t);
        let by_time = cfg.retention_ms >= 0
            && newest.is_some_and(|t| now_ms.saturating_sub(t) > cfg.retention_ms);
        let by_size = cfg.retention_bytes >= 0
            && total.saturating_sub(seg.size()) >= cfg.retention_bytes as u64;
        if !(by_time || by_size) {
            break;
        }
        n += 1;
        total -= seg.size();
    }
    let log_start_offset = if n > 0 {
        p.delete_oldest_segments(n).await?
    } else {
        p.log_start_offset()
    };
    Ok(RetentionOutcome {
        deleted_segments: n,
        log_start_offset,
    })
}
