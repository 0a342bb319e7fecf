//! DescribeLogDirs (key 35): the broker's one log directory, the size of every partition in
//! it, and (v4+) the size and free space of the volume it is on.
//!
//! Sizes come from each partition's home shard (one call per shard, gathered concurrently), so
//! they are the segment sizes at the moment of the request. A single node has no replica lag
//! and no future logs: the offset lag is 0 and `is_future_key` false. Partitions that are
//! offline are left out, as are requested topics that do not exist (Kafka does the same).
//! Runs on the connection's shard.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use sluice_protocol::messages::describe_log_dirs_request::DescribeLogDirsRequest;
use sluice_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResponse, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 4);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    _header: &RequestHeader,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let wanted: Option<HashSet<(String, i32)>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .flat_map(|t| {
                let topic = t.topic;
                t.partitions.into_iter().map(move |p| (topic.clone(), p))
            })
            .collect()
    });
    let per_shard = ctx
        .call_all(|shard: Rc<BrokerCtx>| async move {
            shard
                .state()
                .cluster
                .online_partitions()
                .into_iter()
                .map(|p| {
                    let tp = p.topic_partition();
                    (tp.topic.clone(), tp.partition, p.size_bytes())
                })
                .collect::<Vec<(Arc<str>, i32, u64)>>()
        })
        .await;
    let mut topics: BTreeMap<Arc<str>, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    let mut error_code = errors::NONE;
    for result in per_shard {
        let Ok(partitions) = result else {
            // A shard that cannot answer leaves its partitions' sizes unknown.
            error_code = errors::KAFKA_STORAGE_ERROR;
            continue;
        };
        for (topic, partition, size) in partitions {
            if let Some(w) = &wanted {
                if !w.contains(&(topic.to_string(), partition)) {
                    continue;
                }
            }
            topics
                .entry(topic)
                .or_default()
                .push(DescribeLogDirsPartition {
                    partition_index: partition,
                    partition_size: i64::try_from(size).unwrap_or(i64::MAX),
                    offset_lag: 0,
                    is_future_key: false,
                    ..DescribeLogDirsPartition::default()
                });
        }
    }
    let data_dir = &ctx.state().config.data_dir;
    let log_dir = std::fs::canonicalize(data_dir)
        .unwrap_or_else(|_| data_dir.clone())
        .display()
        .to_string();
    let (total_bytes, usable_bytes) = volume_bytes(data_dir).unwrap_or((-1, -1));
    DescribeLogDirsResponse {
        throttle_time_ms: 0,
        error_code: errors::NONE,
        results: vec![DescribeLogDirsResult {
            error_code,
            log_dir,
            topics: topics
                .into_iter()
                .map(|(name, mut partitions)| {
                    partitions.sort_by_key(|p| p.partition_index);
                    DescribeLogDirsTopic {
                        name: name.to_string(),
                        partitions,
                        ..DescribeLogDirsTopic::default()
                    }
                })
                .collect(),
            total_bytes,
            usable_bytes,
            ..DescribeLogDirsResult::default()
        }],
        ..DescribeLogDirsResponse::default()
    }
}

/// Total and usable (available to unprivileged users) bytes of the volume holding `dir`.
pub fn volume_bytes(dir: &Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value of a plain C struct of integers.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `st` a valid, writable statvfs.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let block = u128::from(st.f_frsize);
    let clamp = |blocks: u64| i64::try_from(u128::from(blocks) * block).unwrap_or(i64::MAX);
    Some((clamp(st.f_blocks), clamp(st.f_bavail)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_volume_of_a_real_directory_has_a_size() {
        let dir = tempfile::tempdir().unwrap();
        let (total, usable) = volume_bytes(dir.path()).unwrap();
        assert!(total > 0);
        assert!((0..=total).contains(&usable));
        assert!(volume_bytes(Path::new("/no/such/dir/anywhere")).is_none());
    }
}
