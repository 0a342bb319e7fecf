//! OffsetFetch (key 9): a group's committed offsets, for the partitions asked or (topics null,
//! v2+) all of them; one group (v0-v7) or several (v8+). A partition without a committed
//! offset is -1 with no error. Group-level failures (COORDINATOR_LOAD_IN_PROGRESS, ...) are
//! the top-level error from v2 and each partition's error before. Offsets committed in open
//! transactions (TxnOffsetCommit) are not returned; with `require_stable` (v7+) a partition
//! that an open transaction holds an offset of is UNSTABLE_OFFSET_COMMIT, which clients retry
//! until the transaction ends (KIP-447). Runs on the connection's shard; the lookup runs on
//! each group's coordinator shard.

use std::rc::Rc;

use sluice_protocol::messages::offset_fetch_request::OffsetFetchRequest;
use sluice_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition,
    OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;
use crate::groups::coordinator::FetchedOffset;
use crate::groups::{self, coordinator};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 9);

/// One partition's answer: (topic, partition, offset, leader epoch, metadata, error).
type Row = (String, i32, i64, i32, String, i16);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let version = header.request_api_version;
    if version >= 8 {
        let mut out = Vec::with_capacity(request.groups.len());
        for g in request.groups {
            let wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name, t.partition_indexes))
                    .collect::<Vec<_>>()
            });
            let (rows, error_code) = fetch(ctx, &g.group_id, wanted, request.require_stable).await;
            out.push(OffsetFetchResponseGroup {
                group_id: g.group_id,
                topics: group_rows(rows)
                    .into_iter()
                    .map(|(name, parts)| OffsetFetchResponseTopics {
                        name,
                        partitions: parts
                            .into_iter()
                            .map(|(p, offset, epoch, metadata, error)| {
                                OffsetFetchResponsePartitions {
                                    partition_index: p,
                                    committed_offset: offset,
                                    committed_leader_epoch: epoch,
                                    metadata: Some(metadata),
                                    error_code: error,
                                    ..OffsetFetchResponsePartitions::default()
                                }
                            })
                            .collect(),
                        ..OffsetFetchResponseTopics::default()
                    })
                    .collect(),
                error_code,
                ..OffsetFetchResponseGroup::default()
            });
        }
        return OffsetFetchResponse {
            groups: out,
            ..OffsetFetchResponse::default()
        };
    }
    let wanted = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect::<Vec<_>>()
    });
    let require_stable = version >= 7 && request.require_stable;
    let (mut rows, error_code) = fetch(ctx, &request.group_id, wanted, require_stable).await;
    if version < 2 && error_code != errors::NONE {
        // No top-level error before v2: every partition carries it.
        for r in &mut rows {
            r.5 = error_code;
        }
    }
    OffsetFetchResponse {
        topics: group_rows(rows)
            .into_iter()
            .map(|(name, parts)| OffsetFetchResponseTopic {
                name,
                partitions: parts
                    .into_iter()
                    .map(
                        |(p, offset, epoch, metadata, error)| OffsetFetchResponsePartition {
                            partition_index: p,
                            committed_offset: offset,
                            committed_leader_epoch: epoch,
                            metadata: Some(metadata),
                            error_code: error,
                            ..OffsetFetchResponsePartition::default()
                        },
                    )
                    .collect(),
                ..OffsetFetchResponseTopic::default()
            })
            .collect(),
        error_code,
        ..OffsetFetchResponse::default()
    }
}

/// The rows of one group and its group-level error.
async fn fetch(
    ctx: &Rc<BrokerCtx>,
    group_id: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> (Vec<Row>, i16) {
    let asked: Vec<(String, i32)> = wanted
        .iter()
        .flatten()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
        .collect();
    let group = group_id.to_string();
    let outcome = if group_id.is_empty() {
        Err(errors::INVALID_GROUP_ID)
    } else {
        groups::on_coordinator(ctx, group_id, move |home, _| async move {
            coordinator::fetch_offsets(&home, &group, wanted, require_stable)
        })
        .await
    };
    match outcome {
        Ok(found) => (found.into_iter().map(row).collect(), errors::NONE),
        Err(code) => (
            asked
                .into_iter()
                .map(|(t, p)| (t, p, -1, -1, String::new(), errors::NONE))
                .collect(),
            code,
        ),
    }
}

fn row(f: FetchedOffset) -> Row {
    match f.offset {
        _ if f.unstable => (
            f.topic,
            f.partition,
            -1,
            -1,
            String::new(),
            errors::UNSTABLE_OFFSET_COMMIT,
        ),
        Some(o) => (
            f.topic,
            f.partition,
            o.offset,
            o.leader_epoch,
            o.metadata,
            errors::NONE,
        ),
        None => (f.topic, f.partition, -1, -1, String::new(), errors::NONE),
    }
}

/// Rows grouped by topic, in the order topics first appear.
#[allow(clippy::type_complexity)]
fn group_rows(rows: Vec<Row>) -> Vec<(String, Vec<(i32, i64, i32, String, i16)>)> {
    let mut out: Vec<(String, Vec<(i32, i64, i32, String, i16)>)> = Vec::new();
    for (t, p, offset, epoch, metadata, error) in rows {
        match out.iter_mut().find(|(name, _)| *name == t) {
            Some((_, parts)) => parts.push((p, offset, epoch, metadata, error)),
            None => out.push((t, vec![(p, offset, epoch, metadata, error)])),
        }
    }
    out
}
