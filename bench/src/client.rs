//! A minimal Kafka connection for the load generator: framing, correlation ids, version choice.
//!
//! `Conn` is used for the control requests of a run (ApiVersions, Metadata, CreateTopics,
//! ListOffsets) and for consumers, one request at a time. Producers split the socket into a
//! writer and a reader half (`produce.rs`) to keep several requests in flight; they reuse
//! `read_frame` from here. Every connection lives on the glommio executor that opened it and
//! never crosses threads.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use sluice_protocol::messages::api_versions_request::ApiVersionsRequest;
use sluice_protocol::{
    check_frame_len, decode_response, encode_request, ApiKey, Request, Response,
};

/// Client id sent in every request header.
pub const CLIENT_ID: &str = "sluice-bench";
/// Largest response frame accepted (a fetch of `--fetch-max-bytes` plus its skeleton).
pub const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;

/// The API versions this load generator speaks to a given broker.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Versions {
    pub produce: i16,
    pub fetch: i16,
    pub metadata: i16,
    pub list_offsets: Option<i16>,
    pub create_topics: Option<i16>,
}

/// Highest versions we use. Fetch stops at 12 because v13+ names topics by id only.
const PRODUCE_MAX: i16 = 9;
const FETCH_MAX: i16 = 12;
const METADATA_MAX: i16 = 12;
const LIST_OFFSETS_MAX: i16 = 7;
const CREATE_TOPICS_MAX: i16 = 7;

impl Versions {
    /// Picks, for each API, the highest version both sides support.
    pub fn choose(broker: &HashMap<i16, (i16, i16)>) -> Result<Versions> {
        let pick = |key: ApiKey, ours_min: i16, ours_max: i16| -> Option<i16> {
            let (lo, hi) = *broker.get(&(key as i16))?;
            let v = hi.min(ours_max).min(key.info().max_version);
            (v >= lo.max(ours_min)).then_some(v)
        };
        // Produce v3+ and Fetch v4+ carry magic-v2 record batches, which is all we build.
        let produce = pick(ApiKey::Produce, 3, PRODUCE_MAX)
            .ok_or_else(|| anyhow!("the broker does not serve Produce v3-{PRODUCE_MAX}"))?;
        let fetch = pick(ApiKey::Fetch, 4, FETCH_MAX)
            .ok_or_else(|| anyhow!("the broker does not serve Fetch v4-{FETCH_MAX}"))?;
        let metadata = pick(ApiKey::Metadata, 4, METADATA_MAX)
            .ok_or_else(|| anyhow!("the broker does not serve Metadata v4-{METADATA_MAX}"))?;
        Ok(Versions {
            produce,
            fetch,
            metadata,
            list_offsets: pick(ApiKey::ListOffsets, 1, LIST_OFFSETS_MAX),
            create_topics: pick(ApiKey::CreateTopics, 0, CREATE_TOPICS_MAX),
        })
    }
}

/// One connection used request-by-request. Owned by one executor.
pub struct Conn {
    stream: TcpStream,
    next_correlation_id: i32,
}

impl Conn {
    /// Opens a connection.
    pub async fn connect(addr: &str) -> Result<Conn> {
        let stream = connect(addr).await?;
        Ok(Conn {
            stream,
            next_correlation_id: 1,
        })
    }

    /// Sends one request and waits for its response.
    pub async fn call(&mut self, version: i16, request: Request) -> Result<Response> {
        let api = request.api_key();
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = encode_request(correlation_id, version, Some(CLIENT_ID), &request)
            .map_err(|e| anyhow!("encoding {api:?} v{version}: {e}"))?;
        self.stream.write_all(&frame.to_contiguous()).await?;
        let body = read_frame(&mut self.stream).await?;
        let (header, response) = decode_response(api, version, body)
            .map_err(|e| anyhow!("decoding the {api:?} v{version} response: {e}"))?;
        if header.correlation_id != correlation_id {
            bail!(
                "{api:?} response has correlation id {} where {correlation_id} was expected",
                header.correlation_id
            );
        }
        Ok(response)
    }

    /// Asks the broker which API versions it serves.
    pub async fn api_versions(&mut self) -> Result<HashMap<i16, (i16, i16)>> {
        // v0 is understood by every broker; we only need the version table.
        let request = Request::ApiVersions(ApiVersionsRequest {
            client_software_name: CLIENT_ID.to_owned(),
            client_software_version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        });
        let Response::ApiVersions(r) = self.call(0, request).await? else {
            bail!("ApiVersions answered with another API's response");
        };
        if r.error_code != 0 {
            bail!("ApiVersions failed with error code {}", r.error_code);
        }
        Ok(r.api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect())
    }
}

/// Opens a TCP connection with Nagle disabled (requests are whole frames).
pub async fn connect(addr: &str) -> Result<TcpStream> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| anyhow!("connecting to {addr}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| anyhow!("setting TCP_NODELAY: {e}"))?;
    Ok(stream)
}

/// Reads one size-prefixed frame and returns its body.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Bytes> {
    let mut prefix = [0u8; 4];
    reader.read_exact(&mut prefix).await?;
    let len = check_frame_len(i32::from_be_bytes(prefix), MAX_RESPONSE_BYTES)?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;
    Ok(Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_capped_on_both_sides() {
        let broker: HashMap<i16, (i16, i16)> = [
            (ApiKey::Produce as i16, (0, 11)),
            (ApiKey::Fetch as i16, (4, 16)),
            (ApiKey::Metadata as i16, (0, 8)),
        ]
        .into_iter()
        .collect();
        let v = Versions::choose(&broker).expect("compatible");
        assert_eq!(v.produce, PRODUCE_MAX);
        assert_eq!(v.fetch, FETCH_MAX);
        assert_eq!(v.metadata, 8);
        assert_eq!(v.list_offsets, None);
        assert_eq!(v.create_topics, None);
    }

    #[test]
    fn a_broker_without_v2_batches_is_refused() {
        let broker: HashMap<i16, (i16, i16)> = [
            (ApiKey::Produce as i16, (0, 2)),
            (ApiKey::Fetch as i16, (0, 16)),
            (ApiKey::Metadata as i16, (0, 12)),
        ]
        .into_iter()
        .collect();
        assert!(Versions::choose(&broker).is_err());
    }
}
