//! Request dispatch: one table of handlers, one file per Kafka API.
//!
//! The `handlers!` table below is the single list of what the broker serves. It produces both
//! the dispatch `match` and the ApiVersions advertisement, so what is advertised is exactly
//! what is served. Each handler file declares the versions it serves at its top (`VERSIONS`);
//! the advertised range is that range intersected with what the codec supports.
//!
//! Handlers run on the shard that owns the connection; work on a partition goes to the
//! partition's home shard through the mesh inside the handler.

use std::rc::Rc;

use bytes::Bytes;
use sluice_protocol::messages::request_header::RequestHeader;
use sluice_protocol::{ApiKey, Request, Response};

use crate::broker::BrokerCtx;
use crate::connection::{OrderPoint, Reply};

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_transactions;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

/// A served API: its key and the version range the broker advertises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    pub key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
}

macro_rules! handlers {
    ($($variant:ident => $module:ident),* $(,)?) => {
        /// Every API the broker serves, with the versions it advertises.
        pub fn served() -> Vec<Served> {
            let mut out = Vec::new();
            $(
                let info = ApiKey::$variant.info();
                let (lo, hi) = $module::VERSIONS;
                // Kafka marks some latest versions unstable; clients must not be offered them.
                let codec_max = if info.unstable_latest { info.max_version - 1 } else { info.max_version };
                let min_version = lo.max(info.min_version);
                let max_version = hi.min(codec_max);
                if min_version <= max_version {
                    out.push(Served { key: ApiKey::$variant, min_version, max_version });
                }
            )*
            out
        }

        /// Runs the handler of `request`'s API; `None` when the API is not served.
        async fn dispatch(ctx: &Rc<BrokerCtx>, header: &RequestHeader, request: Request) -> Option<Response> {
            match request {
                $( Request::$variant(r) => Some(Response::$variant($module::handle(ctx, header, r).await)), )*
                #[allow(unreachable_patterns)]
                _ => None,
            }
        }
    };
}

handlers! {
    ApiVersions => api_versions,
    Metadata => metadata,
    CreateTopics => create_topics,
    DeleteTopics => delete_topics,
    CreatePartitions => create_partitions,
    DescribeConfigs => describe_configs,
    AlterConfigs => alter_configs,
    IncrementalAlterConfigs => incremental_alter_configs,
    DescribeCluster => describe_cluster,
    DescribeLogDirs => describe_log_dirs,
    Produce => produce,
    Fetch => fetch,
    ListOffsets => list_offsets,
    OffsetForLeaderEpoch => offset_for_leader_epoch,
    DeleteRecords => delete_records,
    InitProducerId => init_producer_id,
    FindCoordinator => find_coordinator,
    JoinGroup => join_group,
    SyncGroup => sync_group,
    Heartbeat => heartbeat,
    LeaveGroup => leave_group,
    OffsetCommit => offset_commit,
    OffsetFetch => offset_fetch,
    OffsetDelete => offset_delete,
    ListGroups => list_groups,
    DescribeGroups => describe_groups,
    DeleteGroups => delete_groups,
    AddPartitionsToTxn => add_partitions_to_txn,
    AddOffsetsToTxn => add_offsets_to_txn,
    EndTxn => end_txn,
    DescribeTransactions => describe_transactions,
    ListTransactions => list_transactions,
    TxnOffsetCommit => txn_offset_commit,
    DescribeProducers => describe_producers,
    WriteTxnMarkers => write_txn_markers,
}

/// The advertised version range of `key`, if the broker serves it.
pub fn served_range(key: ApiKey) -> Option<(i16, i16)> {
    served()
        .into_iter()
        .find(|s| s.key == key)
        .map(|s| (s.min_version, s.max_version))
}

/// Decodes one request frame, runs its handler and encodes the reply.
///
/// Runs on the connection's shard.
pub async fn handle_frame(ctx: &Rc<BrokerCtx>, frame: Bytes) -> Reply {
    handle_frame_ordered(ctx, frame, OrderPoint::unordered(), None).await
}

/// [`handle_frame`] for a request in its connection's order (Produce): `order` is released
/// once the request's appends have taken their places, or when it is dropped on any other path.
/// `peer` is the client's address when known (JoinGroup records it as the member's host).
///
/// Runs on the connection's shard.
pub async fn handle_frame_ordered(
    ctx: &Rc<BrokerCtx>,
    frame: Bytes,
    order: OrderPoint,
    peer: Option<std::net::SocketAddr>,
) -> Reply {
    let (header, request) = match sluice_protocol::decode_request(frame) {
        Ok(decoded) => decoded,
        Err(err) => {
            ctx.state().metrics.count_undecodable();
            return api_versions::answer_undecodable(&err);
        }
    };
    let api = request.api_key();
    let _timer =
        ctx.state()
            .metrics
            .request_started(api, header.request_api_version, header.correlation_id);
    let version = header.request_api_version;
    match served_range(api) {
        Some((lo, hi)) if (lo..=hi).contains(&version) => {}
        // A client must not send a version that was not advertised; Kafka closes the
        // connection in that case, because the response could not be parsed by the client.
        _ => {
            ctx.state()
                .metrics
                .count_error(api, crate::errors::UNSUPPORTED_VERSION);
            return Reply::Close(format!(
                "{api:?} v{version} is not served (correlation id {})",
                header.correlation_id
            ));
        }
    }
    // Produce with acks=0 gets no response; Kafka signals its failures by closing the connection.
    let no_response = matches!(&request, Request::Produce(r) if produce::wants_no_response(r));
    let response = match request {
        Request::Produce(r) => Some(Response::Produce(
            produce::handle_ordered(ctx, &header, r, order).await,
        )),
        Request::JoinGroup(r) => {
            order.release();
            Some(Response::JoinGroup(
                join_group::handle_from(ctx, &header, r, peer).await,
            ))
        }
        other => {
            order.release();
            dispatch(ctx, &header, other).await
        }
    };
    let Some(response) = response else {
        return Reply::Close(format!("{api:?} has no handler"));
    };
    ctx.state()
        .metrics
        .observe_response(&ctx.state().cluster, &response);
    if no_response {
        return match &response {
            Response::Produce(r) if produce::any_error(r) => {
                Reply::Close("a produce with acks=0 failed".into())
            }
            _ => Reply::None,
        };
    }
    encode(header.correlation_id, header.request_api_version, &response)
}

/// Encodes a response at `api_version` as a reply frame.
pub fn encode(correlation_id: i32, api_version: i16, response: &Response) -> Reply {
    match sluice_protocol::encode_response(correlation_id, api_version, response) {
        Ok(frame) => Reply::Frame(frame),
        Err(e) => {
            // A response we cannot encode is a broker bug, not the client's fault; the client
            // would wait forever for an answer, so close and say so loudly.
            tracing::error!(api = ?response.api_key(), error = %e, "cannot encode response");
            Reply::Close(format!("cannot encode response: {e}"))
        }
    }
}
