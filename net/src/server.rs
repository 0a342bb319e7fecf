//! The listener side of the broker: one Kafka listener per shard, connection accounting, and
//! graceful shutdown.
//!
//! Every shard binds the same address with SO_REUSEPORT (glommio's `TcpListener::bind` sets
//! it), so the kernel spreads incoming connections across cores and a connection is served
//! entirely by the shard that accepted it. Open connections are counted across all shards
//! against `max_connections`; one over the limit is closed at once. On shutdown every shard
//! stops accepting, lets its open connections finish the requests they already sent for a short
//! grace period, and then returns so the caller can flush and close the logs. Connections stop
//! reading new requests at once, answer the ones in flight, and close, so a shutdown does not
//! wait on idle clients.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::TcpListener;

use crate::connection::{self, ConnectionEnd, ConnectionEvent, ConnectionLimits, Handler};

/// How often a waiting shard looks at the shutdown flag (set from a signal handler thread).
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);
/// How long open connections get to finish their in-flight requests at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// State shared by the listeners of all shards. `Send + Sync`: plain atomics only.
#[derive(Debug, Default)]
pub struct ListenerShared {
    pub open_connections: AtomicUsize,
    pub shutdown: AtomicBool,
    /// Shards whose connections have all ended after the shutdown flag was set.
    pub drained_shards: AtomicUsize,
}

/// Settings of a shard's listener.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    pub max_connections: usize,
    pub limits: ConnectionLimits,
}

/// Binds this shard's listener (SO_REUSEPORT on the shared address).
///
/// Runs on the shard that will serve the listener's connections.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(std::io::Error::from)
}

/// Accepts connections until shutdown, serving each in its own task with `handler`; then tells
/// the handler (so that waiting requests answer now) and waits, up to a grace period, for this
/// shard's connections to finish.
///
/// Runs on the shard that bound `listener`.
pub async fn accept_loop<H: Handler>(
    listener: TcpListener,
    config: ListenerConfig,
    shared: Arc<ListenerShared>,
    handler: Rc<H>,
) {
    let local_open = Rc::new(std::cell::Cell::new(0usize));
    // One stop sender per open connection; dropping them all tells every connection to stop
    // reading and close once its in-flight requests are answered.
    let stops: Rc<RefCell<HashMap<u64, LocalSender<()>>>> = Rc::default();
    let mut next_id = 0u64;
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            wait_for_shutdown(&shared).await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                // EMFILE and friends: keep the listener, back off briefly.
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let open = shared.open_connections.fetch_add(1, Ordering::SeqCst) + 1;
        if open > config.max_connections {
            shared.open_connections.fetch_sub(1, Ordering::SeqCst);
            handler.connection_event(ConnectionEvent::Refused);
            tracing::warn!(%peer, max = config.max_connections, "too many connections; closing");
            drop(stream);
            continue;
        }
        local_open.set(local_open.get() + 1);
        handler.connection_event(ConnectionEvent::Opened);
        let shared = shared.clone();
        let handler = handler.clone();
        let limits = config.limits;
        let local = local_open.clone();
        let (stop_tx, stop_rx) = local_channel::new_bounded(1);
        let id = next_id;
        next_id += 1;
        stops.borrow_mut().insert(id, stop_tx);
        let conn_stops = stops.clone();
        glommio::spawn_local(async move {
            let end =
                connection::serve(stream, peer, limits, handler.for_peer(peer), stop_rx).await;
            conn_stops.borrow_mut().remove(&id);
            match &end {
                ConnectionEnd::ClientClosed | ConnectionEnd::Shutdown => {
                    tracing::debug!(%peer, reason = %end, "closed")
                }
                ConnectionEnd::Idle(_) => tracing::debug!(%peer, reason = %end, "closed"),
                _ => tracing::warn!(%peer, reason = %end, "closed connection"),
            }
            shared.open_connections.fetch_sub(1, Ordering::SeqCst);
            handler.connection_event(ConnectionEvent::Closed);
            local.set(local.get() - 1);
        })
        .detach();
    }
    drop(listener);
    stops.borrow_mut().clear();
    handler.shutting_down();
    let deadline = std::time::Instant::now() + SHUTDOWN_GRACE;
    while local_open.get() > 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

/// Resolves once the shutdown flag is set.
pub async fn wait_for_shutdown(shared: &ListenerShared) {
    while !shared.shutdown.load(Ordering::SeqCst) {
        glommio::timer::sleep(SHUTDOWN_POLL).await;
    }
}

/// Resolves a listen address with port 0 to a concrete free port, so that every shard binds
/// the same port (binding port 0 separately on each shard would give each a different one).
pub fn concrete_listen_addr(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let probe = std::net::TcpListener::bind(addr)?;
    probe.local_addr()
}

/// Proof that this process is the only Sluice broker serving a port: an abstract-namespace
/// Unix socket named after the port, held for the broker's lifetime.
///
/// The shards share their listen address with SO_REUSEPORT, which would equally let a second
/// broker of the same user bind it and silently take part of the connections. A plain bind
/// cannot guard against that: after a kill -9 the dead broker's accepted sockets linger with
/// SO_REUSEPORT set, and a plain bind would then refuse the restart. An abstract socket name
/// has neither problem: binding it twice fails with "address in use", and the kernel releases
/// it the moment its holder dies, however it dies. The claim is per port, not per address,
/// because wildcard and specific addresses of one port overlap under SO_REUSEPORT.
#[derive(Debug)]
pub struct PortClaim {
    _socket: std::os::unix::net::UnixListener,
}

/// Claims `addr`'s port for this broker; fails with `AddrInUse` when another Sluice broker
/// in this network namespace serves the port.
pub fn claim_listen_port(addr: SocketAddr) -> std::io::Result<PortClaim> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("sluice-broker-port-{}", addr.port());
    let unix_addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    match std::os::unix::net::UnixListener::bind_addr(&unix_addr) {
        Ok(socket) => Ok(PortClaim { _socket: socket }),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!(
                "another Sluice broker is already serving port {} (address in use)",
                addr.port()
            ),
        )),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod claim_tests {
    use super::*;

    #[test]
    fn a_port_is_claimed_once_and_released_with_the_claim() {
        // A port number no test broker uses: the claim does not bind the TCP port itself.
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let first = claim_listen_port(addr).unwrap();
        let second = claim_listen_port(addr).unwrap_err();
        assert_eq!(second.kind(), std::io::ErrorKind::AddrInUse);
        assert!(second.to_string().contains("port 1"), "{second}");
        // Another address on the same port overlaps under SO_REUSEPORT, so it is refused too.
        assert!(claim_listen_port("0.0.0.0:1".parse().unwrap()).is_err());
        drop(first);
        claim_listen_port(addr).unwrap();
    }
}
