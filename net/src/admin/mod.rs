//! The admin HTTP listener: Prometheus metrics and status probes (hyper, HTTP/1.1, on glommio).
//!
//! Endpoints (GET or HEAD; other methods get 405, unknown paths 404):
//! - `/metrics`: every shard's figures in Prometheus text format ([`crate::metrics`]);
//! - `/v1/status/ready`: 200 once every shard listens for Kafka clients and answers on the
//!   mesh, 503 while the broker starts (partitions recovering) or shuts down;
//! - `/v1/status/live`: 200 whenever the listener answers at all (the process and its control
//!   shard are alive), for a supervisor that restarts wedged processes.
//!
//! One listener, on the control shard (shard 0), not one per shard with SO_REUSEPORT: every
//! scrape and readiness probe must visit all shards through the mesh anyway, so spreading
//! admin connections over cores would buy nothing, and a single socket bound without
//! SO_REUSEPORT makes a second broker on the same admin address fail at start-up instead of
//! silently taking half of the scrapes. The socket is bound on the main thread before the
//! shards start (a taken port is a start-up error, and port 0 resolves to the real port that
//! the ready line prints), and it is served from the moment shard 0 joins the mesh, so probes
//! see 503 while partitions recover. The work per request is small; the one thing that could
//! hurt the Kafka path on shard 0 — slow or idle admin clients — is bounded by a connection
//! limit and an idle timeout.

mod io;

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::broker::BrokerCtx;
use crate::server::ListenerShared;

/// Admin connections served at once; more are closed on accept.
pub const ADMIN_CONNECTIONS_MAX: usize = 64;
/// An admin connection that moves no bytes for this long is closed (also bounds a client that
/// sends its request headers slowly).
pub const ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a scrape or a readiness probe waits for every shard to answer.
pub const SHARD_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for admin HTTP on {addr}: {source}")]
pub struct AdminBindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds the admin address on the calling thread (without SO_REUSEPORT: see the module doc).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, AdminBindError> {
    std::net::TcpListener::bind(addr).map_err(|source| AdminBindError { addr, source })
}

/// What the status endpoints need to know about the broker as a whole.
#[derive(Clone)]
pub struct BrokerStatus {
    /// Shards whose Kafka listener is bound (they count up once, during start-up).
    pub listening: Arc<AtomicU32>,
    pub nr_shards: u32,
    pub shared: Arc<ListenerShared>,
}

/// Serves admin HTTP on `listener` until `stop` resolves; connections still open then are
/// dropped with the shard.
///
/// Runs on the control shard.
pub async fn serve(
    ctx: Rc<BrokerCtx>,
    listener: std::net::TcpListener,
    status: BrokerStatus,
    stop: impl std::future::Future<Output = ()>,
) {
    // SAFETY: the descriptor comes from `into_raw_fd` of a bound, listening socket that nothing
    // else owns; glommio's listener takes ownership of it and closes it when dropped.
    let listener = unsafe { glommio::net::TcpListener::from_raw_fd(listener.into_raw_fd()) };
    let open = Rc::new(Cell::new(0usize));
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            (&mut stop).await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "admin accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.get() >= ADMIN_CONNECTIONS_MAX {
            tracing::warn!(
                max = ADMIN_CONNECTIONS_MAX,
                "too many admin connections; closing"
            );
            continue;
        }
        open.set(open.get() + 1);
        let open = open.clone();
        let ctx = ctx.clone();
        let status = status.clone();
        glommio::spawn_local(async move {
            serve_connection(ctx, stream, status).await;
            open.set(open.get() - 1);
        })
        .detach();
    }
}

/// Serves one HTTP/1.1 connection (keep-alive) until the client closes it or it idles out.
///
/// Runs on the control shard.
async fn serve_connection(
    ctx: Rc<BrokerCtx>,
    stream: glommio::net::TcpStream,
    status: BrokerStatus,
) {
    let peer = stream.peer_addr().ok();
    let last_activity = Rc::new(Cell::new(Instant::now()));
    let io = io::HyperIo::new(stream, last_activity.clone());
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let ctx = ctx.clone();
        let status = status.clone();
        async move { Ok::<_, std::convert::Infallible>(respond(&ctx, &status, &request).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    let idle = async {
        loop {
            let quiet = last_activity.get().elapsed();
            if quiet >= ADMIN_IDLE_TIMEOUT {
                return;
            }
            glommio::timer::sleep(ADMIN_IDLE_TIMEOUT - quiet).await;
        }
    };
    let ended = futures_lite::future::or(async { Some(connection.await) }, async {
        idle.await;
        None
    })
    .await;
    match ended {
        Some(Ok(())) => {}
        Some(Err(e)) => tracing::debug!(?peer, error = %e, "admin connection failed"),
        None => tracing::debug!(?peer, "admin connection idle; closed"),
    }
}

/// Routes one request.
///
/// Runs on the control shard.
async fn respond(
    ctx: &Rc<BrokerCtx>,
    status: &BrokerStatus,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let path = request.uri().path();
    let lag_group = group_lag_path(path);
    let known =
        matches!(path, "/metrics" | "/v1/status/ready" | "/v1/status/live") || lag_group.is_some();
    let response = if !known {
        text(StatusCode::NOT_FOUND, "not found\n")
    } else if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else {
        match (path, lag_group) {
            (_, Some(group)) => group_lag(ctx, &group).await,
            ("/metrics", _) => metrics(ctx).await,
            ("/v1/status/ready", _) => ready(ctx, status).await,
            _ => json(StatusCode::OK, "live"),
        }
    };
    tracing::debug!(
        method = %request.method(),
        path,
        status = response.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "admin request"
    );
    response
}

async fn metrics(ctx: &Rc<BrokerCtx>) -> Response<Full<Bytes>> {
    match crate::metrics::gather(ctx, SHARD_ANSWER_TIMEOUT).await {
        Ok(shards) => {
            // Off the shard: listing the descriptors of many partitions' files takes a while.
            let process = glommio::executor()
                .spawn_blocking(crate::metrics::process::read)
                .await;
            if let Err(e) = &process {
                tracing::debug!(error = %e, "cannot read the process figures");
            }
            let body = crate::metrics::render(&shards, process.as_ref().ok());
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::exposition::CONTENT_TYPE),
            );
            r
        }
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{e}\n")),
    }
}

/// 200 when every shard listens and answers a call through the mesh; 503 with the reason
/// otherwise.
async fn ready(ctx: &Rc<BrokerCtx>, status: &BrokerStatus) -> Response<Full<Bytes>> {
    if status.shared.shutdown.load(Ordering::SeqCst) {
        return json(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    if status.listening.load(Ordering::SeqCst) < status.nr_shards {
        return json(StatusCode::SERVICE_UNAVAILABLE, "starting");
    }
    let pings = ctx.call_all(|_shard: Rc<BrokerCtx>| async {});
    let answered = futures_lite::future::or(async { Some(pings.await) }, async {
        glommio::timer::sleep(SHARD_ANSWER_TIMEOUT).await;
        None
    })
    .await;
    match answered {
        Some(results) if results.iter().all(Result::is_ok) => json(StatusCode::OK, "ready"),
        _ => json(StatusCode::SERVICE_UNAVAILABLE, "shards not answering"),
    }
}

/// The group of a `/v1/groups/{group}/lag` path (percent-decoded), if it is one.
fn group_lag_path(path: &str) -> Option<String> {
    let group = path.strip_prefix("/v1/groups/")?.strip_suffix("/lag")?;
    let decoded = percent_decode(group)?;
    (!decoded.is_empty()).then_some(decoded)
}

/// Decodes `%XX` escapes; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A group's committed offsets with the high watermark, the lag and the timestamp of the
/// record at the committed offset per partition, as JSON (for lag evaluation and consoles).
/// 404 for a group without committed offsets; 503 while its coordinator is loading.
async fn group_lag(ctx: &Rc<BrokerCtx>, group: &str) -> Response<Full<Bytes>> {
    let partitions = match crate::groups::group_lag(ctx, group).await {
        Ok(p) if p.is_empty() => {
            return text(
                StatusCode::NOT_FOUND,
                "the group has no committed offsets\n",
            )
        }
        Ok(p) => p,
        Err(code) => {
            let msg = format!("the group's coordinator answered error code {code}\n");
            return text(StatusCode::SERVICE_UNAVAILABLE, &msg);
        }
    };
    let rows: Vec<serde_json::Value> = partitions
        .iter()
        .map(|p| {
            serde_json::json!({
                "topic": p.tp.topic.as_ref(),
                "partition": p.tp.partition,
                "committed_offset": p.committed.offset,
                "metadata": p.committed.metadata,
                "commit_timestamp_ms": p.committed.commit_timestamp_ms,
                "high_watermark": p.high_watermark,
                "lag": p.high_watermark.map(|hw| (hw - p.committed.offset).max(0)),
                "committed_record_timestamp_ms": p.committed_record_timestamp_ms,
            })
        })
        .collect();
    let body = serde_json::json!({ "group": group, "partitions": rows });
    let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn text(code: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *r.status_mut() = code;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(code: StatusCode, status: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!(
        "{{\"status\":\"{status}\"}}\n"
    ))));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_lag_paths_name_a_percent_decoded_group() {
        assert_eq!(
            group_lag_path("/v1/groups/billing/lag").as_deref(),
            Some("billing")
        );
        assert_eq!(
            group_lag_path("/v1/groups/a%2Fb%20c/lag").as_deref(),
            Some("a/b c")
        );
        assert_eq!(group_lag_path("/v1/groups//lag"), None);
        assert_eq!(group_lag_path("/v1/groups/x%zz/lag"), None);
        assert_eq!(group_lag_path("/v1/groups/x"), None);
        assert_eq!(group_lag_path("/metrics"), None);
    }
}
