//! One blocking connection to a broker: framing, correlation ids and version negotiation.
//!
//! `Client::connect` opens a TCP connection (with a timeout), sends ApiVersions and keeps, for
//! every API, the highest version that both the broker and this client support. Each call then
//! writes one request frame and reads one response frame, checking that the correlation id
//! matches the one it sent; requests are never pipelined, so a mismatch means the stream is
//! out of step and is reported, not skipped. A response frame larger than
//! [`RESPONSE_BYTES_MAX`] is refused before anything is allocated for it, and the body is read
//! incrementally so a size prefix that lies costs no memory. The client is owned by one thread.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::messages::api_versions_request::ApiVersionsRequest;
use sluice_protocol::messages::api_versions_response::ApiVersionsResponse;
use sluice_protocol::{decode_response, encode_request, ApiKey, Request, Response};

use crate::error::{ClientError, KafkaError, Result};
use crate::error_codes;

/// Largest response frame the client accepts (a Fetch asks for at most 64 MiB).
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// The versions of each API this client knows how to build requests for and read responses
/// of. The lower bounds are semantic: Produce v3 and Fetch v4 are the first versions that carry
/// magic-v2 record batches, the only format we build and read.
pub const CLIENT_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 0, 7),
    (ApiKey::DeleteTopics, 0, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    // v0 reads offsets Kafka kept in ZooKeeper; v1+ those in __consumer_offsets.
    (ApiKey::OffsetFetch, 1, 9),
    // v2+ carry the generation and member id the coordinator checks.
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
];

/// The ApiVersions version sent first. v3 is what current clients send; a broker that does not
/// know it answers in v0 with its own range (KIP-511), and we retry within that range.
const API_VERSIONS_FIRST: i16 = 3;

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Sent in every request header and as ClientSoftwareName.
    pub client_id: String,
    pub connect_timeout: Duration,
    /// How long to wait for a response beyond any wait the request itself asks the broker
    /// for (a Fetch's `max_wait_ms`).
    pub request_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            client_id: "sluice-cli".to_owned(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A connection to one broker. Owned by one thread.
pub struct Client {
    stream: TcpStream,
    addr: String,
    config: ClientConfig,
    next_correlation_id: i32,
    /// Negotiated version per API: the highest both sides support.
    versions: BTreeMap<ApiKey, i16>,
    /// The broker's advertised range per API key, as it sent them.
    broker_versions: BTreeMap<i16, (i16, i16)>,
}

impl Client {
    /// Connects to `bootstrap` ("host:port") and negotiates versions.
    pub fn connect(bootstrap: &str, config: ClientConfig) -> Result<Client> {
        let addrs: Vec<SocketAddr> = bootstrap
            .to_socket_addrs()
            .map_err(|source| ClientError::Resolve {
                addr: bootstrap.to_owned(),
                source,
            })?
            .collect();
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no addresses");
        let mut stream = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, config.connect_timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_error = e,
            }
        }
        let stream = stream.ok_or_else(|| ClientError::Connect {
            addr: bootstrap.to_owned(),
            source: last_error,
        })?;
        let connect_err = |source| ClientError::Connect {
            addr: bootstrap.to_owned(),
            source,
        };
        stream.set_nodelay(true).map_err(connect_err)?;
        stream
            .set_write_timeout(Some(config.request_timeout))
            .map_err(connect_err)?;
        let mut client = Client {
            stream,
            addr: bootstrap.to_owned(),
            config,
            next_correlation_id: 1,
            versions: BTreeMap::new(),
            broker_versions: BTreeMap::new(),
        };
        client.negotiate()?;
        Ok(client)
    }

    /// How long a request may take, as configured.
    pub fn request_timeout(&self) -> Duration {
        self.config.request_timeout
    }

    /// The address this client was given.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The negotiated version of `api`, or why there is none.
    pub fn version(&self, api: ApiKey) -> Result<i16> {
        if let Some(v) = self.versions.get(&api) {
            return Ok(*v);
        }
        let (client_min, client_max) = client_range(api).unwrap_or((0, -1));
        let broker = match self.broker_versions.get(&(api as i16)) {
            Some((lo, hi)) => format!("v{lo}-v{hi}"),
            None => "not offered".to_owned(),
        };
        Err(ClientError::UnsupportedApi {
            api,
            broker,
            client_min,
            client_max,
        })
    }

    /// The broker's advertised version range for an API key, as it sent it.
    pub fn broker_range(&self, api_key: i16) -> Option<(i16, i16)> {
        self.broker_versions.get(&api_key).copied()
    }

    /// Sends `request` at the negotiated version and returns the response.
    pub fn call(&mut self, request: Request) -> Result<Response> {
        let version = self.version(request.api_key())?;
        self.call_at(&request, version, Duration::ZERO)
    }

    /// As [`Client::call`], telling the client that the broker may legitimately hold the request
    /// for `broker_wait` (Fetch long polling) before answering.
    pub fn call_waiting(&mut self, request: Request, broker_wait: Duration) -> Result<Response> {
        let version = self.version(request.api_key())?;
        self.call_at(&request, version, broker_wait)
    }

    /// Sends `request` and does not wait: for Produce with acks=0, which the broker never
    /// answers.
    pub fn send_only(&mut self, request: Request) -> Result<()> {
        let version = self.version(request.api_key())?;
        self.write_request(&request, version).map(|_| ())
    }

    /// Sends `request` at an explicit `version`.
    pub fn call_at(
        &mut self,
        request: &Request,
        version: i16,
        broker_wait: Duration,
    ) -> Result<Response> {
        let api = request.api_key();
        let correlation_id = self.write_request(request, version)?;
        let frame = self.read_frame(api, broker_wait)?;
        let (header, response) =
            decode_response(api, version, frame).map_err(|source| ClientError::Decode {
                api,
                version,
                source,
            })?;
        if header.correlation_id != correlation_id {
            return Err(ClientError::CorrelationMismatch {
                api,
                expected: correlation_id,
                got: header.correlation_id,
            });
        }
        Ok(response)
    }

    fn write_request(&mut self, request: &Request, version: i16) -> Result<i32> {
        let api = request.api_key();
        let correlation_id = self.next_correlation_id;
        // Correlation ids only need to be unique among requests in flight (one, here); wrapping
        // keeps a long-running consumer from ever overflowing.
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1).max(1);
        let frame = encode_request(
            correlation_id,
            version,
            Some(&self.config.client_id),
            request,
        )
        .map_err(|source| ClientError::Encode {
            api,
            version,
            source,
        })?;
        for chunk in &frame.chunks {
            self.stream
                .write_all(chunk)
                .map_err(|source| self.io_error(api, source))?;
        }
        Ok(correlation_id)
    }

    fn read_frame(&mut self, api: ApiKey, broker_wait: Duration) -> Result<Bytes> {
        let timeout = self.config.request_timeout + broker_wait;
        self.stream
            .set_read_timeout(Some(timeout))
            .map_err(|source| self.io_error(api, source))?;
        let mut prefix = [0u8; 4];
        self.read_exact(api, &mut prefix, timeout)?;
        let len = i32::from_be_bytes(prefix);
        let len = usize::try_from(len)
            .ok()
            .filter(|n| *n <= RESPONSE_BYTES_MAX)
            .ok_or(ClientError::FrameSize {
                api,
                len: i64::from(len),
                max: RESPONSE_BYTES_MAX,
            })?;
        // Read through `take` so the buffer grows with the bytes that really arrive rather
        // than with what the prefix claims.
        let mut body = Vec::with_capacity(len.min(64 * 1024));
        let got = (&mut self.stream)
            .take(len as u64)
            .read_to_end(&mut body)
            .map_err(|source| self.read_error(api, source, timeout))?;
        if got < len {
            return Err(ClientError::Closed {
                addr: self.addr.clone(),
                api,
            });
        }
        Ok(Bytes::from(body))
    }

    fn read_exact(&mut self, api: ApiKey, buf: &mut [u8], timeout: Duration) -> Result<()> {
        match self.stream.read_exact(buf) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ClientError::Closed {
                addr: self.addr.clone(),
                api,
            }),
            Err(e) => Err(self.read_error(api, e, timeout)),
        }
    }

    fn read_error(&self, api: ApiKey, source: io::Error, timeout: Duration) -> ClientError {
        match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout {
                addr: self.addr.clone(),
                api,
                timeout_ms: timeout.as_millis(),
            },
            _ => self.io_error(api, source),
        }
    }

    fn io_error(&self, api: ApiKey, source: io::Error) -> ClientError {
        ClientError::Io {
            addr: self.addr.clone(),
            api,
            source,
        }
    }

    /// ApiVersions handshake. The first attempt uses v3; a broker that does not support it
    /// answers with UNSUPPORTED_VERSION in the v0 format with its own ApiVersions range, and we
    /// retry once at the highest version both sides know.
    fn negotiate(&mut self) -> Result<()> {
        let request = Request::ApiVersions(ApiVersionsRequest {
            client_software_name: self.config.client_id.clone(),
            client_software_version: env!("CARGO_PKG_VERSION").to_owned(),
            ..ApiVersionsRequest::default()
        });
        let api = ApiKey::ApiVersions;
        let correlation_id = self.write_request(&request, API_VERSIONS_FIRST)?;
        let frame = self.read_frame(api, Duration::ZERO)?;
        let response = match decode_response(api, API_VERSIONS_FIRST, frame.clone()) {
            Ok((header, Response::ApiVersions(r))) => {
                check_correlation(api, correlation_id, header.correlation_id)?;
                r
            }
            Ok(_) => return Err(missing("ApiVersions", "an ApiVersions body")),
            Err(first_error) => {
                // KIP-511: the broker fell back to v0 because it does not know our version.
                let Ok((header, Response::ApiVersions(r))) = decode_response(api, 0, frame) else {
                    return Err(ClientError::Decode {
                        api,
                        version: API_VERSIONS_FIRST,
                        source: first_error,
                    });
                };
                check_correlation(api, correlation_id, header.correlation_id)?;
                r
            }
        };
        let response = if response.error_code == error_codes::UNSUPPORTED_VERSION {
            let retry = response
                .api_keys
                .iter()
                .find(|k| k.api_key == api as i16)
                .and_then(|k| pick(api, k.min_version, k.max_version))
                .ok_or_else(|| {
                    KafkaError::new(
                        response.error_code,
                        None,
                        "ApiVersions: the broker supports no version this client speaks",
                    )
                })?;
            match self.call_at(&request, retry, Duration::ZERO)? {
                Response::ApiVersions(r) => r,
                _ => return Err(missing("ApiVersions", "an ApiVersions body")),
            }
        } else {
            response
        };
        self.apply(&response)
    }

    fn apply(&mut self, response: &ApiVersionsResponse) -> Result<()> {
        crate::error::check(response.error_code, None, || "ApiVersions".to_owned())?;
        self.broker_versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        self.versions = negotiate_versions(&self.broker_versions);
        Ok(())
    }
}

/// For each API this client speaks, the highest version inside both ranges.
pub fn negotiate_versions(broker: &BTreeMap<i16, (i16, i16)>) -> BTreeMap<ApiKey, i16> {
    CLIENT_VERSIONS
        .iter()
        .filter_map(|&(api, _, _)| {
            let &(lo, hi) = broker.get(&(api as i16))?;
            Some((api, pick(api, lo, hi)?))
        })
        .collect()
}

/// The highest version of `api` in both this client's range and `broker_min..=broker_max`.
fn pick(api: ApiKey, broker_min: i16, broker_max: i16) -> Option<i16> {
    let (client_min, client_max) = client_range(api)?;
    let v = client_max.min(broker_max).min(api.info().max_version);
    (v >= client_min.max(broker_min)).then_some(v)
}

fn client_range(api: ApiKey) -> Option<(i16, i16)> {
    CLIENT_VERSIONS
        .iter()
        .find(|(a, _, _)| *a == api)
        .map(|&(_, lo, hi)| (lo, hi))
}

fn check_correlation(api: ApiKey, expected: i32, got: i32) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(ClientError::CorrelationMismatch { api, expected, got })
    }
}

pub(crate) fn missing(context: &str, what: &str) -> ClientError {
    ClientError::MissingInResponse {
        context: context.to_owned(),
        what: what.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(ranges: &[(ApiKey, i16, i16)]) -> BTreeMap<i16, (i16, i16)> {
        ranges
            .iter()
            .map(|&(api, lo, hi)| (api as i16, (lo, hi)))
            .collect()
    }

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        let v = negotiate_versions(&broker(&[
            (ApiKey::Produce, 0, 9),
            (ApiKey::Fetch, 0, 99),
            (ApiKey::Metadata, 0, 12),
            (ApiKey::JoinGroup, 0, 9),
        ]));
        assert_eq!(v.get(&ApiKey::Produce), Some(&9));
        assert_eq!(v.get(&ApiKey::Fetch), Some(&17));
        assert_eq!(v.get(&ApiKey::Metadata), Some(&12));
        // Not an API this client speaks, and not offered: both absent.
        assert_eq!(v.get(&ApiKey::JoinGroup), None);
        assert_eq!(v.get(&ApiKey::CreateTopics), None);
    }

    #[test]
    fn negotiation_refuses_ranges_without_overlap() {
        // A broker offering only Produce v0-v2 cannot take magic-v2 batches.
        let v = negotiate_versions(&broker(&[(ApiKey::Produce, 0, 2), (ApiKey::Fetch, 5, 3)]));
        assert!(v.is_empty());
    }
}
