//! Writes response frames to a connection's socket without copying record data in user space.
//!
//! A frame is a list of buffers and file ranges ([`EncodedFrame`]). Consecutive buffers go out
//! in one vectored `sendmsg` (the response skeleton and the batch cache's buffers, however many,
//! in one system call). A file range (a segment's batches read from disk) is moved by the
//! kernel: `splice` from the file into a pipe, then from the pipe into the socket, so the page
//! cache's pages are handed to the socket and the bytes never enter user space.
//!
//! Neither may block the shard. The socket is switched to non-blocking mode (glommio's own
//! socket calls already pass `MSG_DONTWAIT`, so its reads are unaffected), and sends that find
//! the socket full wait for it to drain. Filling the pipe from the file may wait for the disk,
//! and glommio 0.9 offers neither splice nor a way to await an arbitrary descriptor, so that
//! splice and those waits are submitted to a second, small io_uring ring of this shard (the
//! `io-uring` crate), whose completions are signalled on an eventfd that the shard reads
//! through glommio (an io_uring read of the eventfd, which completes when the counter is
//! non-zero). A splice from a file runs in a kernel worker; the shard never waits for it.
//!
//! Everything an operation in the ring refers to (the pipe, the file, a duplicate of the
//! socket descriptor) is owned by the operation until its completion is reaped, so a
//! connection that ends early (peer reset, shutdown) can never let a descriptor number be
//! reused under a pending operation. A file range whose file turns out shorter than the range
//! (a segment truncated after the read) ends the connection: the frame's length was already
//! promised, and Kafka's broker does the same.
//!
//! The ring, its eventfd and a small pool of pipes belong to one shard (one per thread, as
//! glommio runs one executor per thread) and never cross cores.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use glommio::io::BufferedFile;
use io_uring::{opcode, types, IoUring};
use sluice_protocol::{EncodedFrame, FileRange};

/// Entries of the per-shard ring: a few operations per connection that is sending from disk
/// or waiting for a full socket. Submissions beyond it wait for room.
const RING_ENTRIES: u32 = 256;

/// The pipe size asked for (Linux's default limit for unprivileged users): one splice from the
/// file moves up to this much.
const PIPE_BYTES: i32 = 1 << 20;

/// Pipes kept for reuse per shard.
const PIPE_POOL_MAX: usize = 16;

/// At most this many buffers per `sendmsg` (Linux's `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// Writes frames to one connection's socket. Owned by the connection's task; never crosses
/// cores.
pub struct SocketWriter {
    /// A duplicate of the connection's socket descriptor: pending ring operations hold it, so
    /// it stays valid until they complete even if the connection closes its own.
    fd: Rc<OwnedFd>,
}

impl SocketWriter {
    /// Prepares writing to `socket`: duplicates it and makes it non-blocking.
    pub fn new(socket: RawFd) -> io::Result<SocketWriter> {
        // SAFETY: `socket` is the open descriptor of the connection's stream, borrowed for the
        // duration of the call; `F_DUPFD_CLOEXEC` returns a new descriptor that we own.
        let dup = unsafe { libc::fcntl(socket, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `dup` was just returned by fcntl and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(dup) };
        set_nonblocking(fd.as_raw_fd())?;
        Ok(SocketWriter { fd: Rc::new(fd) })
    }

    /// Writes whole frames, in order. Frames made only of buffers go out together in vectored
    /// `sendmsg` calls (one for up to `IOV_MAX` buffers); a frame with file ranges is written
    /// on its own. Runs on the connection's shard.
    pub async fn write_frames(&self, frames: &[EncodedFrame]) -> io::Result<()> {
        if let [frame] = frames {
            // The usual case: no list of every frame's buffers to build.
            return self.write_frame(frame).await;
        }
        let mut buffers: Vec<Bytes> = Vec::new();
        for frame in frames {
            if frame.files.is_empty() {
                buffers.extend(frame.chunks.iter().cloned());
                continue;
            }
            if !buffers.is_empty() {
                self.send_buffers(&buffers, true).await?;
                buffers.clear();
            }
            self.write_frame(frame).await?;
        }
        if !buffers.is_empty() {
            self.send_buffers(&buffers, false).await?;
        }
        Ok(())
    }

    /// Writes the whole frame, in order. Runs on the connection's shard.
    pub async fn write_frame(&self, frame: &EncodedFrame) -> io::Result<()> {
        if !frame.files.is_empty() {
            // Start reading every range of the frame from the disk now (pages already cached
            // are skipped): the reads of all partitions are in flight together, in large
            // requests, while the splices below take what has arrived.
            let ring = ring()?;
            for (_, range) in &frame.files {
                ring.prefetch(&range.file, range.offset, range.len);
            }
        }
        let mut files = frame.files.iter().peekable();
        let mut start = 0usize;
        loop {
            // The buffers up to the next file range (or the end) go out together.
            let stop = files.peek().map_or(frame.chunks.len(), |(at, _)| *at);
            let more_after = stop < frame.chunks.len() || files.peek().is_some();
            if stop > start {
                self.send_buffers(&frame.chunks[start..stop], more_after)
                    .await?;
            }
            start = stop;
            match files.next() {
                Some((_, range)) => {
                    let last = start >= frame.chunks.len() && files.peek().is_none();
                    self.send_file_range(range, !last).await?;
                }
                None => return Ok(()),
            }
        }
    }

    /// Sends `bufs` with vectored, non-blocking `sendmsg` calls, waiting for room as needed.
    /// `more` tells the kernel that more of the frame follows (`MSG_MORE`).
    async fn send_buffers(&self, bufs: &[Bytes], more: bool) -> io::Result<()> {
        let total: usize = bufs.iter().map(Bytes::len).sum();
        let mut sent = 0usize;
        while sent < total {
            let mut iov: Vec<libc::iovec> = Vec::with_capacity(bufs.len().min(IOV_MAX));
            let mut skip = sent;
            for b in bufs {
                if skip >= b.len() {
                    skip -= b.len();
                    continue;
                }
                let rest = &b[skip..];
                skip = 0;
                iov.push(libc::iovec {
                    iov_base: rest.as_ptr() as *mut libc::c_void,
                    iov_len: rest.len(),
                });
                if iov.len() == IOV_MAX {
                    break;
                }
            }
            // SAFETY: an all-zero msghdr is valid; the iovecs point into `bufs`, which
            // outlive the call, and the kernel only reads them.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = iov.len() as _;
            let mut flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
            if more {
                flags |= libc::MSG_MORE;
            }
            // SAFETY: `msg` is fully initialised above and the descriptor is open.
            let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, flags) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => ring()?.wait_writable(&self.fd).await?,
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(e),
                }
                continue;
            }
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            sent += n as usize;
        }
        Ok(())
    }

    /// Moves a file range to the socket: file → pipe in the ring (may wait for the disk),
    /// pipe → socket from here (non-blocking; waits for room in the ring).
    async fn send_file_range(&self, range: &FileRange, more: bool) -> io::Result<()> {
        let ring = ring()?;
        let pipe = ring.take_pipe()?;
        let mut sent = 0u64;
        while sent < range.len {
            let want = (range.len - sent).min(pipe.capacity as u64) as u32;
            let filled = ring
                .splice_to_pipe(&range.file, range.offset + sent, &pipe, want)
                .await?;
            if filled == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "segment file ends before the {} bytes promised at {} (truncated?)",
                        range.len, range.offset
                    ),
                ));
            }
            let mut left = filled;
            while left > 0 {
                let mut flags = libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE;
                if more || sent + u64::from(filled) < range.len {
                    flags |= libc::SPLICE_F_MORE;
                }
                // SAFETY: both descriptors are open; null offsets mean "current position",
                // which pipes and sockets require.
                let n = unsafe {
                    libc::splice(
                        pipe.read.as_raw_fd(),
                        std::ptr::null_mut(),
                        self.fd.as_raw_fd(),
                        std::ptr::null_mut(),
                        left as usize,
                        flags,
                    )
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => ring.wait_writable(&self.fd).await?,
                        io::ErrorKind::Interrupted => {}
                        // The pipe still holds data: it is dropped, not reused.
                        _ => return Err(e),
                    }
                    continue;
                }
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                left -= n as u32;
            }
            sent += u64::from(filled);
        }
        ring.return_pipe(pipe);
        Ok(())
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fcntl calls on an open descriptor.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A pipe used to move pages from a file to a socket. Empty whenever it is in the pool.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: i32,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A larger pipe means fewer round trips per range; the default (64 KiB) still works.
        // SAFETY: fcntl on a pipe descriptor we own.
        let capacity = unsafe {
            libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES);
            libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        if capacity <= 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }
}

thread_local! {
    /// This shard's ring, created on first use, with the id of the executor it was made for
    /// (its eventfd is read through that executor, so a later executor on the same thread
    /// gets a new ring).
    static RING: RefCell<Option<(usize, Rc<Ring>)>> = const { RefCell::new(None) };
}

/// This shard's ring.
fn ring() -> io::Result<Rc<Ring>> {
    let executor = glommio::executor().id();
    RING.with(|slot| {
        if let Some((id, r)) = slot.borrow().as_ref() {
            if *id == executor {
                return Ok(r.clone());
            }
        }
        let r = Rc::new(Ring::new()?);
        *slot.borrow_mut() = Some((executor, r.clone()));
        Ok(r)
    })
}

/// Sets how many kernel workers may run this thread's blocking io_uring work at once (the
/// "bounded" io-wq workers: regular file I/O that cannot complete without blocking, such as
/// every O_DIRECT write that extends a file on ext4). The limit belongs to the thread, so it
/// covers glommio's rings as well as this module's; the kernel's default follows the CPUs the
/// thread may run on (two for a shard pinned to one core on the development VM). Returns the
/// previous limit.
pub fn set_blocking_io_workers(max: u32) -> io::Result<u32> {
    let ring = ring()?;
    let mut limits = [max, 0];
    ring.uring
        .borrow()
        .submitter()
        .register_iowq_max_workers(&mut limits)?;
    Ok(limits[0])
}

/// One operation in the ring: its result once reaped, who waits for it, and what it refers
/// to (kept alive until the kernel is done with it).
struct Op {
    result: Option<i32>,
    waker: Option<Waker>,
    abandoned: bool,
    _keep: Box<dyn Any>,
}

/// The shard's second io_uring ring. Owned by one shard; never crosses cores.
struct Ring {
    uring: RefCell<IoUring>,
    ops: RefCell<HashMap<u64, Op>>,
    next_id: Cell<u64>,
    /// Completions are signalled here; reading it through glommio wakes the shard.
    event: Rc<BufferedFile>,
    driving: Cell<bool>,
    pipes: RefCell<Vec<Pipe>>,
}

impl Ring {
    fn new() -> io::Result<Ring> {
        let uring = IoUring::new(RING_ENTRIES)?;
        // SAFETY: plain eventfd creation; the descriptor is handed to glommio below.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        if let Err(e) = uring.submitter().register_eventfd(efd) {
            // SAFETY: `efd` is ours and not yet handed to anyone.
            unsafe { libc::close(efd) };
            return Err(e);
        }
        // SAFETY: `efd` is a fresh descriptor that glommio now owns (and closes).
        let event = Rc::new(unsafe { BufferedFile::from_raw_fd(efd) });
        Ok(Ring {
            uring: RefCell::new(uring),
            ops: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            event,
            driving: Cell::new(false),
            pipes: RefCell::new(Vec::new()),
        })
    }

    fn take_pipe(&self) -> io::Result<Rc<Pipe>> {
        match self.pipes.borrow_mut().pop() {
            Some(p) => Ok(Rc::new(p)),
            None => Ok(Rc::new(Pipe::new()?)),
        }
    }

    /// Puts an emptied pipe back for reuse.
    fn return_pipe(&self, pipe: Rc<Pipe>) {
        if let Ok(p) = Rc::try_unwrap(pipe) {
            let mut pool = self.pipes.borrow_mut();
            if pool.len() < PIPE_POOL_MAX {
                pool.push(p);
            }
        }
    }

    /// Splices up to `len` bytes at `offset` of `file` into `pipe`; the byte count moved.
    async fn splice_to_pipe(
        self: &Rc<Self>,
        file: &Arc<std::fs::File>,
        offset: u64,
        pipe: &Rc<Pipe>,
        len: u32,
    ) -> io::Result<u32> {
        let entry = opcode::Splice::new(
            types::Fd(file.as_raw_fd()),
            offset as i64,
            types::Fd(pipe.write.as_raw_fd()),
            -1,
            len,
        )
        .flags(libc::SPLICE_F_MOVE)
        .build();
        let n = self
            .submit(entry, Box::new((file.clone(), pipe.clone())))
            .await?;
        Ok(n as u32)
    }

    /// Asks the kernel to read a file range into the page cache (`POSIX_FADV_WILLNEED`, run
    /// by a kernel worker). Nobody waits for it; the ring keeps the file open until it is done.
    fn prefetch(self: &Rc<Self>, file: &Arc<std::fs::File>, offset: u64, len: u64) {
        let entry = opcode::Fadvise::new(
            types::Fd(file.as_raw_fd()),
            len.min(i64::MAX as u64) as libc::off_t,
            libc::POSIX_FADV_WILLNEED,
        )
        .offset(offset)
        .build();
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.ops.borrow_mut().insert(
            id,
            Op {
                result: None,
                waker: None,
                abandoned: true,
                _keep: Box::new(file.clone()),
            },
        );
        match self.push(entry.user_data(id)) {
            Ok(()) => self.ensure_driver(),
            Err(e) => {
                self.ops.borrow_mut().remove(&id);
                tracing::debug!(error = %e, "zero-copy ring: prefetch not submitted");
            }
        }
    }

    /// Waits until the socket can take more data (or has failed: the next send says how).
    async fn wait_writable(self: &Rc<Self>, fd: &Rc<OwnedFd>) -> io::Result<()> {
        let entry = opcode::PollAdd::new(
            types::Fd(fd.as_raw_fd()),
            (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) as u32,
        )
        .build();
        self.submit(entry, Box::new(fd.clone())).await.map(|_| ())
    }

    /// Submits one operation and waits for its result (a negative result is an errno).
    fn submit(self: &Rc<Self>, entry: io_uring::squeue::Entry, keep: Box<dyn Any>) -> OpFuture {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.ops.borrow_mut().insert(
            id,
            Op {
                result: None,
                waker: None,
                abandoned: false,
                _keep: keep,
            },
        );
        let pushed = self.push(entry.user_data(id));
        if let Err(e) = pushed {
            self.ops.borrow_mut().remove(&id);
            return OpFuture {
                ring: self.clone(),
                id,
                failed: Some(e),
            };
        }
        self.ensure_driver();
        OpFuture {
            ring: self.clone(),
            id,
            failed: None,
        }
    }

    /// Queues an entry and tells the kernel.
    fn push(&self, entry: io_uring::squeue::Entry) -> io::Result<()> {
        let mut uring = self.uring.borrow_mut();
        // SAFETY: every buffer and descriptor the entry refers to is kept alive by its `Op`
        // until its completion is reaped.
        let full = unsafe { uring.submission().push(&entry).is_err() };
        if full {
            uring.submit()?;
            // SAFETY: as above.
            if unsafe { uring.submission().push(&entry).is_err() } {
                return Err(io::Error::other("zero-copy ring full"));
            }
        }
        uring.submit()?;
        Ok(())
    }

    /// Records the completions that are ready and wakes their waiters.
    fn reap(&self) {
        let mut done = Vec::new();
        {
            let mut uring = self.uring.borrow_mut();
            for cqe in uring.completion() {
                done.push((cqe.user_data(), cqe.result()));
            }
        }
        let mut ops = self.ops.borrow_mut();
        for (id, result) in done {
            let abandoned = match ops.get_mut(&id) {
                Some(op) => {
                    op.result = Some(result);
                    if let Some(w) = op.waker.take() {
                        w.wake();
                    }
                    op.abandoned
                }
                // A cancellation request's own completion.
                None => false,
            };
            if abandoned {
                ops.remove(&id);
            }
        }
    }

    /// Runs the task that reads the eventfd while operations are pending.
    fn ensure_driver(self: &Rc<Self>) {
        if self.driving.replace(true) {
            return;
        }
        let me = self.clone();
        glommio::spawn_local(async move {
            loop {
                me.reap();
                let pending = me.ops.borrow().values().any(|op| op.result.is_none());
                if !pending {
                    break;
                }
                if let Err(e) = me.event.read_at(0, 8).await {
                    // Without the eventfd nothing would wake the waiters: fail them all.
                    tracing::error!(error = %e, "zero-copy ring: reading its eventfd failed");
                    let mut ops = me.ops.borrow_mut();
                    for op in ops.values_mut().filter(|op| op.result.is_none()) {
                        op.result = Some(-libc::EIO);
                        if let Some(w) = op.waker.take() {
                            w.wake();
                        }
                    }
                    break;
                }
            }
            me.driving.set(false);
        })
        .detach();
    }
}

/// Resolves to an operation's result. Dropping it early leaves the operation's resources with
/// the ring until the kernel completes it, and asks the kernel to cancel it.
struct OpFuture {
    ring: Rc<Ring>,
    id: u64,
    failed: Option<io::Error>,
}

impl Future for OpFuture {
    type Output = io::Result<i32>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<i32>> {
        if let Some(e) = self.failed.take() {
            return Poll::Ready(Err(e));
        }
        let mut ops = self.ring.ops.borrow_mut();
        let Some(op) = ops.get_mut(&self.id) else {
            return Poll::Ready(Err(io::Error::other("zero-copy ring lost an operation")));
        };
        match op.result {
            Some(r) => {
                ops.remove(&self.id);
                Poll::Ready(if r < 0 {
                    Err(io::Error::from_raw_os_error(-r))
                } else {
                    Ok(r)
                })
            }
            None => {
                op.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for OpFuture {
    fn drop(&mut self) {
        let pending = {
            let mut ops = self.ring.ops.borrow_mut();
            match ops.get_mut(&self.id) {
                Some(op) if op.result.is_none() => {
                    op.abandoned = true;
                    op.waker = None;
                    true
                }
                Some(_) => {
                    ops.remove(&self.id);
                    false
                }
                None => false,
            }
        };
        if pending {
            // Best effort: a splice blocked on a socket that is never read would otherwise
            // hold a kernel worker. Its completion (and the operation's) is reaped as usual.
            let cancel = opcode::AsyncCancel::new(self.id).build().user_data(0);
            if let Err(e) = self.ring.push(cancel) {
                tracing::debug!(error = %e, "zero-copy ring: cancel not submitted");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blocking_worker_limit_is_set_for_the_thread() {
        glommio::LocalExecutor::default().run(async {
            set_blocking_io_workers(64).unwrap();
            // The kernel answers each change with the limit it replaces.
            assert_eq!(set_blocking_io_workers(17).unwrap(), 64);
            assert_eq!(set_blocking_io_workers(64).unwrap(), 17);
        });
    }
}
