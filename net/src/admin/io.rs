//! The bridge between glommio's `TcpStream` (futures-io `AsyncRead`/`AsyncWrite`) and hyper's
//! own I/O traits (`hyper::rt::Read`/`Write`), so hyper's HTTP/1.1 server runs on a shard's
//! executor without tokio.
//!
//! Reads go through a small owned buffer: hyper hands out uninitialised memory, and filling it
//! from a futures-io reader without `unsafe` needs an initialised slice. The admin listener
//! moves a few kilobytes per scrape, so the extra copy costs nothing that matters. Every
//! completed read or write stamps the connection's last-activity time, which the listener's
//! idle watchdog reads. Lives on the shard that accepted the connection.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use hyper::rt::ReadBufCursor;

/// Bytes read from the socket per `poll_read`.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// A glommio TCP stream that hyper can serve HTTP on.
///
/// Owned by the shard that accepted the connection; never crosses cores.
pub struct HyperIo {
    stream: TcpStream,
    scratch: Box<[u8]>,
    last_activity: Rc<Cell<Instant>>,
}

impl HyperIo {
    /// Wraps `stream`; `last_activity` is updated on every read or write that moved bytes.
    pub fn new(stream: TcpStream, last_activity: Rc<Cell<Instant>>) -> HyperIo {
        HyperIo {
            stream,
            scratch: vec![0u8; READ_CHUNK_BYTES].into_boxed_slice(),
            last_activity,
        }
    }
}

impl hyper::rt::Read for HyperIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let want = buf.remaining().min(this.scratch.len());
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut this.stream).poll_read(cx, &mut this.scratch[..want]) {
            Poll::Ready(Ok(n)) => {
                // Zero bytes is end of stream, which hyper reads from an unchanged cursor.
                buf.put_slice(&this.scratch[..n]);
                this.last_activity.set(Instant::now());
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl hyper::rt::Write for HyperIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(_)) = polled {
            this.last_activity.set(Instant::now());
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}
