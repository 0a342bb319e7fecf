//! ApiVersions (key 18): which APIs and versions this broker serves.
//!
//! The list comes from the handler table, so it is exactly what is served. A client that asks
//! with a version newer than ours gets UNSUPPORTED_VERSION and our list in the v0 format
//! (KIP-511): every client can parse v0, then retries with a version we advertise.

use std::rc::Rc;

use sluice_protocol::messages::api_versions_request::ApiVersionsRequest;
use sluice_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use sluice_protocol::messages::request_header::RequestHeader;
use sluice_protocol::{ApiKey, RequestDecodeError, Response};

use crate::broker::BrokerCtx;
use crate::connection::Reply;
use crate::errors::{NONE, UNSUPPORTED_VERSION};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 4);

/// Runs on the connection's shard.
pub async fn handle(
    _ctx: &Rc<BrokerCtx>,
    _header: &RequestHeader,
    _request: ApiVersionsRequest,
) -> ApiVersionsResponse {
    ApiVersionsResponse {
        error_code: NONE,
        api_keys: advertised(),
        ..ApiVersionsResponse::default()
    }
}

fn advertised() -> Vec<ApiVersion> {
    super::served()
        .into_iter()
        .map(|s| ApiVersion {
            api_key: s.key as i16,
            min_version: s.min_version,
            max_version: s.max_version,
            ..ApiVersion::default()
        })
        .collect()
}

/// Answers a request that could not be decoded. An ApiVersions request of a version newer
/// than ours gets the KIP-511 fallback; anything else that fails to decode closes the
/// connection (the caller logs why).
pub fn answer_undecodable(err: &RequestDecodeError) -> Reply {
    let fallback = match err {
        RequestDecodeError::UnsupportedVersion {
            api: ApiKey::ApiVersions,
            prefix,
        } if prefix.api_version > VERSIONS.1 => Some(prefix.correlation_id),
        _ => None,
    };
    let Some(correlation_id) = fallback else {
        return Reply::Close(format!("undecodable request: {err}"));
    };
    let response = ApiVersionsResponse {
        error_code: UNSUPPORTED_VERSION,
        api_keys: advertised(),
        ..ApiVersionsResponse::default()
    };
    super::encode(correlation_id, 0, &Response::ApiVersions(response))
}
