//! What the net crate's integration tests share: a broker running in-process on a free
//! loopback port (two shards, `--dev`, no admin listener) and a raw Kafka-protocol client that
//! sends one request at a time and checks the correlation id of each response.

#![allow(dead_code, clippy::unwrap_used)] // test harness: a failed unwrap is a failed test

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_net::config::{BrokerConfig, ConfigLayer};
use sluice_net::server::ListenerShared;
use sluice_protocol::{Request, Response};

/// A broker on its own thread, shut down (and joined) when dropped.
pub struct Broker {
    pub addr: SocketAddr,
    shared: Arc<ListenerShared>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The data directory, when the broker made it (removed after the broker stops).
    _dir: Option<tempfile::TempDir>,
}

impl Broker {
    /// A broker with a fresh temporary data directory.
    pub fn start() -> Broker {
        Broker::start_with(ConfigLayer::default())
    }

    /// A broker with a fresh temporary data directory and the settings in `extra`.
    pub fn start_with(extra: ConfigLayer) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let mut broker = Broker::start_in(&dir.path().join("data"), extra);
        broker._dir = Some(dir);
        broker
    }

    /// A broker on `data_dir`, which outlives it (for restarts over the same data).
    pub fn start_in(data_dir: &Path, extra: ConfigLayer) -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = ConfigLayer {
            data_dir: Some(data_dir.to_path_buf()),
            listen: Some(format!("127.0.0.1:{port}")),
            // Tests run side by side; none of them scrapes metrics.
            admin_listen: Some("off".into()),
            shards: Some(2),
            dev: Some(true),
            ..ConfigLayer::default()
        };
        let config = BrokerConfig::resolve(base.overridden_by(extra)).unwrap();
        std::fs::create_dir_all(&config.data_dir).unwrap();
        let addr = config.listen;
        let shared = Arc::new(ListenerShared::default());
        let run_shared = shared.clone();
        let thread = std::thread::spawn(move || {
            sluice_net::broker::run(config, run_shared).unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "broker did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker {
            addr,
            shared,
            thread: Some(thread),
            _dir: None,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection speaking the Kafka protocol, one request at a time.
pub struct Client {
    stream: TcpStream,
    correlation: i32,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client {
            stream,
            correlation: 0,
        }
    }

    /// Sends `request` at `version` and returns the decoded response.
    pub fn call(&mut self, version: i16, request: Request) -> Response {
        self.correlation += 1;
        let api = request.api_key();
        let frame =
            sluice_protocol::encode_request(self.correlation, version, Some("test"), &request)
                .unwrap();
        for chunk in &frame.chunks {
            self.stream.write_all(chunk).unwrap();
        }
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body).unwrap();
        let (header, response) =
            sluice_protocol::decode_response(api, version, Bytes::from(body)).unwrap();
        assert_eq!(header.correlation_id, self.correlation);
        response
    }
}
