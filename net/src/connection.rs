//! One client connection: framing, pipelining, responses in request order, limits.
//!
//! Kafka frames are a 4-byte big-endian size followed by that many bytes. The reader checks the
//! size against `socket.request.max.bytes` before reading the body, so an oversized or hostile
//! size never makes the broker allocate; it closes the connection with one log line. Each
//! request is handled in its own task as soon as it is read, so a client that pipelines
//! (librdkafka keeps up to five in flight) gets them processed concurrently; the writer awaits
//! the handlers in arrival order, so responses always go out in request order. At most
//! `CONNECTION_IN_FLIGHT_MAX` requests are in flight; past that the reader stops reading and the
//! client's TCP window fills, which is the back-pressure a slow broker should apply.
//!
//! Produce requests of one connection keep their order: a producer with several requests in
//! flight relies on the broker storing them in the order it sent them (Kafka handles one
//! request per connection at a time). The ordering point is the append's place in each
//! partition's log, not the whole request: a Produce is handed an [`OrderPoint`], which its
//! handler releases once every partition append of the request has taken its place (see
//! `Partition::append`), and the next Produce of the connection starts only then. So the
//! requests' device writes and fdatasyncs overlap (and coalesce), while their offsets still
//! follow request order.
//!
//! A connection lives on the shard whose listener accepted it and never leaves it; work for
//! partitions owned by other shards goes through the mesh inside the handlers.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::AsyncReadExt;
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use sluice_protocol::EncodedFrame;

use crate::config::CONNECTION_IN_FLIGHT_MAX;
use crate::socket_writer::SocketWriter;

/// Most replies the writer sends in one go (see `serve`'s writer).
const REPLIES_PER_WRITE_MAX: usize = 64;

/// Adds a finished handler's reply to `frames`; returns how the connection ends if the reply
/// ends it (`Some(None)`: the handler was cancelled at shutdown, nothing more to send).
fn gather(reply: Option<Reply>, frames: &mut Vec<EncodedFrame>) -> Option<Option<ConnectionEnd>> {
    match reply {
        Some(Reply::Frame(frame)) => {
            frames.push(frame);
            None
        }
        Some(Reply::None) => None,
        Some(Reply::Close(why)) => Some(Some(ConnectionEnd::Malformed(why))),
        None => Some(None),
    }
}

/// What a handler returns for one request.
pub enum Reply {
    /// The response frame, size prefix included, as chunks and file ranges to be written in
    /// order (record data stays in its own buffers or files, never copied into the skeleton).
    Frame(EncodedFrame),
    /// No response: Produce with acks=0.
    None,
    /// The request was malformed or hostile: answer nothing more and close the connection.
    Close(String),
}

/// A future that stays on this shard.
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// Handles one request frame (the bytes after the size prefix).
pub trait Handler: 'static {
    fn handle(self: Rc<Self>, frame: Bytes) -> LocalFuture<Reply>;

    /// The handler for one connection from `peer`. Handlers that report the client's address
    /// (group members' host) make one per connection; by default all share this one.
    fn for_peer(self: &Rc<Self>, _peer: SocketAddr) -> Rc<Self> {
        self.clone()
    }

    /// Handles a request whose effects must be ordered after those of the previous ordered
    /// request of the connection and before those of the next one (Produce). The handler
    /// releases `order` once the request's effects have taken their place; the next ordered
    /// request starts only then. By default the whole request is the ordering point.
    fn handle_ordered(self: Rc<Self>, frame: Bytes, order: OrderPoint) -> LocalFuture<Reply> {
        Box::pin(async move {
            let reply = self.handle(frame).await;
            drop(order);
            reply
        })
    }

    /// Told when the listener opens, closes or refuses a connection (metrics).
    fn connection_event(&self, _event: ConnectionEvent) {}

    /// Told once when this shard's listener stops accepting at shutdown, before its
    /// connections are drained: requests that would wait (long-polling fetches) should answer
    /// now.
    fn shutting_down(&self) {}
}

/// The point after which the next ordered request of a connection may start. Released by
/// [`OrderPoint::release`] or by being dropped, so an early return (a decode error, a refused
/// request) can never stall the connection.
pub struct OrderPoint {
    _released_on_drop: Option<local_channel::LocalSender<()>>,
}

impl OrderPoint {
    /// A point and the receiver that completes when it is released.
    fn new() -> (OrderPoint, local_channel::LocalReceiver<()>) {
        let (tx, rx) = local_channel::new_bounded(1);
        (
            OrderPoint {
                _released_on_drop: Some(tx),
            },
            rx,
        )
    }

    /// A point nobody waits for (a request handled outside a connection's order).
    pub fn unordered() -> OrderPoint {
        OrderPoint {
            _released_on_drop: None,
        }
    }

    /// Lets the next ordered request start.
    pub fn release(self) {}
}

/// What happened to a connection of a shard's listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEvent {
    Opened,
    Closed,
    /// Closed at once: the broker already had `max_connections` open.
    Refused,
}

/// Per-connection limits.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// `socket.request.max.bytes`: the largest frame body accepted.
    pub request_max_bytes: usize,
    /// `connections.max.idle.ms`: a connection that sends nothing for this long is closed.
    pub idle: Duration,
}

/// Why a connection ended. Logged once by the caller; never affects other connections.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionEnd {
    #[error("client closed the connection")]
    ClientClosed,
    #[error("broker shutting down")]
    Shutdown,
    #[error("idle for longer than {0:?}")]
    Idle(Duration),
    #[error("request of {size} bytes exceeds socket.request.max.bytes ({max})")]
    Oversized { size: i64, max: usize },
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves one connection until it ends; returns why it ended.
///
/// Runs on the shard that accepted the connection.
///
/// When `stop` closes (broker shutdown), the connection reads no further requests, sends the
/// replies of those already in flight, and closes.
pub async fn serve<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    limits: ConnectionLimits,
    handler: Rc<H>,
    stop: local_channel::LocalReceiver<()>,
) -> ConnectionEnd {
    let _ = stream.set_nodelay(true);
    // Replies go out through the socket writer (vectored sends, file ranges spliced); the
    // stream itself is only read.
    let socket = match SocketWriter::new(stream.as_raw_fd()) {
        Ok(socket) => socket,
        Err(e) => return ConnectionEnd::Io(e),
    };
    let mut reader = stream.buffered_with(glommio::net::Preallocated::new(READ_BUFFER_BYTES));
    let (queue_tx, queue_rx) =
        local_channel::new_bounded::<glommio::task::JoinHandle<Reply>>(CONNECTION_IN_FLIGHT_MAX);

    // The writer owns the write half and answers in arrival order. It ends when the queue
    // closes and drains (the reader is done), or early when a reply asks to close or a write
    // fails — and then the reader must stop too, so the two are raced below.
    //
    // Replies that are already complete when the writer gets to one go out together, in one
    // system call where they hold no file ranges: one device write completing acknowledges
    // every Produce request of the connection that rode it, and each `sendmsg` on a TCP socket
    // costs the sender (and, on loopback, the receiver's stack on the same core) the same
    // whatever its size.
    let writer = async move {
        let mut carried: Option<glommio::task::JoinHandle<Reply>> = None;
        loop {
            let pending = match carried.take() {
                Some(handle) => handle,
                None => match queue_rx.recv().await {
                    Some(handle) => handle,
                    None => return None,
                },
            };
            let mut frames = Vec::new();
            let mut end = gather(pending.await, &mut frames);
            while end.is_none() && frames.len() < REPLIES_PER_WRITE_MAX {
                // Only what is queued and finished now: nothing here waits.
                let Some(Some(mut next)) = futures_lite::future::poll_once(queue_rx.recv()).await
                else {
                    break;
                };
                match futures_lite::future::poll_once(&mut next).await {
                    Some(reply) => end = gather(reply, &mut frames),
                    None => {
                        carried = Some(next);
                        break;
                    }
                }
            }
            if let Err(e) = socket.write_frames(&frames).await {
                return Some(ConnectionEnd::Io(e));
            }
            if let Some(end) = end {
                return end;
            }
        }
    };
    let reader = async move {
        // Released when the last Produce request of this connection has taken its place.
        let mut last_produce: Option<local_channel::LocalReceiver<()>> = None;
        let end = loop {
            let next = futures_lite::future::or(read_frame(&mut reader, &limits), async {
                let _ = stop.recv().await;
                Err(ConnectionEnd::Shutdown)
            });
            let frame = match next.await {
                Ok(frame) => frame,
                Err(end) => break end,
            };
            let task = if is_produce(&frame) {
                // A Produce starts once the previous Produce of this connection has placed its
                // appends (its writes may still be in flight), so its records can never
                // overtake the earlier ones at a partition. The reader does not wait for that:
                // other requests keep flowing.
                let previous = last_produce.take();
                let (order, placed) = OrderPoint::new();
                last_produce = Some(placed);
                let handler = handler.clone();
                glommio::spawn_local(async move {
                    if let Some(previous) = previous {
                        // Completes (with `None`) when the previous point is released.
                        let _ = previous.recv().await;
                    }
                    handler.handle_ordered(frame, order).await
                })
                .detach()
            } else {
                glommio::spawn_local(handler.clone().handle(frame)).detach()
            };
            if queue_tx.send(task).await.is_err() {
                break ConnectionEnd::ClientClosed;
            }
        };
        // Closing the queue lets the writer drain what is in flight and finish.
        drop(queue_tx);
        end
    };
    let mut writer = std::pin::pin!(writer);
    let first = futures_lite::future::or(async { Ok(reader.await) }, async {
        Err((&mut writer).await)
    })
    .await;
    let end = match first {
        // The reader ended (client closed, bad frame, idle): send what is in flight, then close.
        Ok(read_end) => writer.await.unwrap_or(read_end),
        // The writer ended first: a Close reply or a write error ends the connection now.
        Err(write_end) => write_end.unwrap_or(ConnectionEnd::ClientClosed),
    };
    tracing::debug!(%peer, reason = %end, "connection ended");
    end
}

/// Whether a frame is a Produce request (API key 0 in its first two bytes).
fn is_produce(frame: &[u8]) -> bool {
    frame.len() >= 2 && i16::from_be_bytes([frame[0], frame[1]]) == PRODUCE_API_KEY
}

/// Kafka's API key of Produce.
const PRODUCE_API_KEY: i16 = 0;

/// Reads one frame body, enforcing the size limit before allocating and the idle timeout.
async fn read_frame<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut R,
    limits: &ConnectionLimits,
) -> Result<Bytes, ConnectionEnd> {
    let mut size = [0u8; 4];
    match glommio::timer::timeout(limits.idle, async {
        Ok(reader.read_exact(&mut size).await)
    })
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ConnectionEnd::ClientClosed)
        }
        Ok(Err(e)) => return Err(ConnectionEnd::Io(e)),
        Err(_) => return Err(ConnectionEnd::Idle(limits.idle)),
    }
    let size = i32::from_be_bytes(size);
    if size < 0 || size as usize > limits.request_max_bytes {
        return Err(ConnectionEnd::Oversized {
            size: i64::from(size),
            max: limits.request_max_bytes,
        });
    }
    // A request header is at least 8 bytes (api key, version, correlation id); anything shorter
    // cannot be answered because there is no correlation id to answer with.
    if size < 8 {
        return Err(ConnectionEnd::Malformed(format!(
            "frame of {size} bytes is shorter than a request header"
        )));
    }
    // The body is read as it arrives, growing the buffer with what was actually received: a
    // client that announces 100 MiB and sends nothing costs one small buffer, not 100 MiB.
    let size = size as usize;
    let mut body = BytesMut::with_capacity(size.min(READ_CHUNK_BYTES));
    let read_body = async {
        while body.len() < size {
            let filled = body.len();
            let want = (size - filled).min(READ_CHUNK_BYTES);
            body.resize(filled + want, 0);
            let n = reader.read(&mut body[filled..]).await?;
            body.truncate(filled + n);
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
        }
        Ok(())
    };
    // The body of a frame must follow promptly; a client that stalls mid-frame for the whole
    // idle period is treated as idle.
    match glommio::timer::timeout(limits.idle, async { Ok(read_body.await) }).await {
        Ok(Ok(())) => Ok(body.freeze()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(
            ConnectionEnd::Malformed("connection closed in the middle of a frame".into()),
        ),
        Ok(Err(e)) => Err(ConnectionEnd::Io(e)),
        Err(_) => Err(ConnectionEnd::Idle(limits.idle)),
    }
}

/// The connection's receive buffer, allocated when it opens: several small requests, or the
/// size prefix and the start of a large body, arrive with one system call (1 KiB produce
/// requests took 3.9 system calls each instead of 5.6); the rest of a large body is read
/// straight into its frame.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// How much of a frame body is read (and the buffer grown) per read call.
const READ_CHUNK_BYTES: usize = 256 * 1024;
