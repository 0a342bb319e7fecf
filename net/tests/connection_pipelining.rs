//! Proves the connection layer's contract with a fake handler: pipelined requests are answered
//! in request order even when later ones finish first; a frame over the size limit, or a
//! truncated one, closes only that connection; a reply of `Close` closes the connection.

#![allow(clippy::unwrap_used)] // test harness helpers: a failed unwrap is a failed test

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bytes::Bytes;
use glommio::LocalExecutorBuilder;
use sluice_net::connection::{ConnectionLimits, Handler, LocalFuture, Reply};
use sluice_net::server::{self, ListenerConfig, ListenerShared};

/// Request: [delay_ms u32][id u32][8 bytes padding]. Reply: [size=4][id u32].
/// id 0xFFFF_FFFF asks for no reply (like acks=0); id 0xDEAD asks to close.
struct Echo;

impl Handler for Echo {
    fn handle(self: Rc<Self>, frame: Bytes) -> LocalFuture<Reply> {
        Box::pin(async move {
            let delay = u32::from_be_bytes(frame[0..4].try_into().unwrap());
            let id = u32::from_be_bytes(frame[4..8].try_into().unwrap());
            glommio::timer::sleep(Duration::from_millis(u64::from(delay))).await;
            match id {
                0xFFFF_FFFF => Reply::None,
                0xDEAD => Reply::Close("asked to close".into()),
                _ => {
                    let mut out = Vec::new();
                    out.extend_from_slice(&4u32.to_be_bytes());
                    out.extend_from_slice(&id.to_be_bytes());
                    Reply::Frame(Bytes::from(out).into())
                }
            }
        })
    }
}

fn start() -> (SocketAddr, Arc<ListenerShared>, std::thread::JoinHandle<()>) {
    let shared = Arc::new(ListenerShared::default());
    let (tx, rx) = mpsc::channel();
    let s = shared.clone();
    let handle = LocalExecutorBuilder::default()
        .spawn(move || async move {
            let addr = server::concrete_listen_addr("127.0.0.1:0".parse().unwrap()).unwrap();
            let listener = server::bind(addr).unwrap();
            tx.send(addr).unwrap();
            let config = ListenerConfig {
                addr,
                max_connections: 2,
                limits: ConnectionLimits {
                    request_max_bytes: 1024,
                    idle: Duration::from_secs(5),
                },
            };
            server::accept_loop(listener, config, s, Rc::new(Echo)).await;
        })
        .unwrap();
    let addr = rx.recv().unwrap();
    (addr, shared, handle.into_inner_thread())
}

trait IntoThread {
    fn into_inner_thread(self) -> std::thread::JoinHandle<()>;
}

impl IntoThread for glommio::ExecutorJoinHandle<()> {
    fn into_inner_thread(self) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            self.join().unwrap();
        })
    }
}

fn request(delay_ms: u32, id: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&16u32.to_be_bytes());
    v.extend_from_slice(&delay_ms.to_be_bytes());
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&[0u8; 8]);
    v
}

fn read_reply(c: &mut TcpStream) -> u32 {
    let mut buf = [0u8; 8];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(u32::from_be_bytes(buf[0..4].try_into().unwrap()), 4);
    u32::from_be_bytes(buf[4..8].try_into().unwrap())
}

fn assert_closed(c: &mut TcpStream) {
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1];
    match c.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("connection still open: {other:?}"),
    }
}

#[test]
fn broker_connection_contract() {
    let (addr, shared, thread) = start();

    // Pipelined: the first request is the slowest, yet replies come back in request order,
    // and a no-reply request in the middle produces nothing.
    let mut c = TcpStream::connect(addr).unwrap();
    let mut all = Vec::new();
    for (delay, id) in [(120, 1), (60, 2), (0, 0xFFFF_FFFF), (0, 3)] {
        all.extend(request(delay, id));
    }
    c.write_all(&all).unwrap();
    assert_eq!(
        [read_reply(&mut c), read_reply(&mut c), read_reply(&mut c)],
        [1, 2, 3]
    );

    // A frame over request_max_bytes closes that connection; the other one keeps working.
    let mut bad = TcpStream::connect(addr).unwrap();
    bad.write_all(&(1_000_000u32).to_be_bytes()).unwrap();
    assert_closed(&mut bad);
    c.write_all(&request(0, 7)).unwrap();
    assert_eq!(read_reply(&mut c), 7);

    // A negative size and a frame too short to hold a header are refused the same way.
    let mut bad = TcpStream::connect(addr).unwrap();
    bad.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert_closed(&mut bad);
    let mut bad = TcpStream::connect(addr).unwrap();
    bad.write_all(&3u32.to_be_bytes()).unwrap();
    bad.write_all(&[1, 2, 3]).unwrap();
    assert_closed(&mut bad);

    // A handler's Close reply closes the connection after earlier replies were sent.
    let mut closing = TcpStream::connect(addr).unwrap();
    let mut two = request(0, 9);
    two.extend(request(0, 0xDEAD));
    closing.write_all(&two).unwrap();
    assert_eq!(read_reply(&mut closing), 9);
    assert_closed(&mut closing);

    // max_connections = 2: with `c` open, a second and third client; the third is refused.
    let _second = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut third = TcpStream::connect(addr).unwrap();
    assert_closed(&mut third);
    c.write_all(&request(0, 11)).unwrap();
    assert_eq!(read_reply(&mut c), 11);

    // Shutdown with clients still connected and idle: the broker closes their connections
    // at once instead of waiting out its grace period for them.
    let started = std::time::Instant::now();
    shared.shutdown.store(true, Ordering::SeqCst);
    assert_closed(&mut c);
    thread.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown waited {:?} for idle connections",
        started.elapsed()
    );
    drop(_second);
    assert_eq!(shared.open_connections.load(Ordering::SeqCst), 0);
}
