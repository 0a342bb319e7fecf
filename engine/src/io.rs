//! The fault-injection seam: every byte of a segment file goes through [`LogFile`].
//!
//! Production uses [`DirectFile`] (a glommio `DmaFile`, O_DIRECT through io_uring); tests use
//! [`FaultyFile`], which wraps a real `DirectFile` and injects EIO on write/read, torn writes
//! (only a prefix of the sectors reaches the file, then EIO) and failed fsyncs, as armed by a
//! shared [`FaultPlan`]. The engine holds an [`AnyFile`], an enum over the two, so the hot path
//! costs one match and no allocation per call. Files are owned by the shard that opened them
//! and never cross cores.

use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use crate::limits::SECTOR_BYTES;

/// A log file as the engine sees it. Positions and lengths of `write_at` must be multiples of
/// [`SECTOR_BYTES`]; `read_at` takes any position and length and returns at most `len` bytes
/// (fewer at end of file).
#[allow(async_fn_in_trait)]
pub trait LogFile {
    async fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<usize>;
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes>;
    async fn sync(&self) -> io::Result<()>;
    async fn set_len(&self, len: u64) -> io::Result<()>;
    async fn size(&self) -> io::Result<u64>;
    fn path(&self) -> &Path;
}

/// How a shard opens its segment files: for real, or through a fault plan (tests).
#[derive(Clone, Default)]
pub enum IoBackend {
    #[default]
    Direct,
    Faulty(Rc<FaultPlan>),
}

impl IoBackend {
    /// Opens (and with `create`, creates) a file for direct reads and writes.
    pub async fn open(&self, path: &Path, create: bool) -> io::Result<AnyFile> {
        let direct = DirectFile::open(path, create).await?;
        Ok(match self {
            IoBackend::Direct => AnyFile::Direct(direct),
            IoBackend::Faulty(plan) => AnyFile::Faulty(FaultyFile {
                inner: direct,
                plan: plan.clone(),
            }),
        })
    }
}

/// A real O_DIRECT file.
pub struct DirectFile {
    file: DmaFile,
    path: PathBuf,
}

impl DirectFile {
    pub async fn open(path: &Path, create: bool) -> io::Result<DirectFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await
            .map_err(io::Error::from)?;
        Ok(DirectFile {
            file,
            path: path.to_path_buf(),
        })
    }
}

impl LogFile for DirectFile {
    async fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<usize> {
        debug_assert_eq!(pos % SECTOR_BYTES, 0);
        debug_assert_eq!(buf.len() as u64 % SECTOR_BYTES, 0);
        self.file
            .write_rc_at(buf, pos)
            .await
            .map_err(io::Error::from)
    }
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        // glommio's unaligned `read_at` over-reports the length of a read that crosses end of
        // file, so align the read here and clamp to what the kernel actually returned.
        let start = align_down(pos);
        let skip = (pos - start) as usize;
        let size = align_up((len + skip) as u64) as usize;
        let r = self
            .file
            .read_at_aligned(start, size)
            .await
            .map_err(io::Error::from)?;
        let end = r.len().min(skip + len);
        Ok(Bytes::copy_from_slice(r.get(skip..end).unwrap_or(&[])))
    }
    async fn sync(&self) -> io::Result<()> {
        self.file.fdatasync().await.map_err(io::Error::from)
    }
    async fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.truncate(len).await.map_err(io::Error::from)
    }
    async fn size(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(io::Error::from)
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

/// What the next write does when a fault is armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFault {
    /// Nothing reaches the file; the write fails with EIO.
    Eio,
    /// Only the first `sectors` sectors of the write reach the file; then it fails with EIO.
    Torn { sectors: u64 },
}

/// Faults to inject, shared by every [`FaultyFile`] opened through the same backend. Each armed
/// fault fires once, after `writes_before_fault` more successful writes.
#[derive(Default)]
pub struct FaultPlan {
    pub write_fault: Cell<Option<WriteFault>>,
    pub writes_before_fault: Cell<u32>,
    pub read_eio: Cell<bool>,
    pub sync_eio: Cell<bool>,
    pub writes: Cell<u64>,
    pub syncs: Cell<u64>,
}

/// A real file with injected faults (tests only, but compiled always so integration tests and
/// benches can use it).
pub struct FaultyFile {
    inner: DirectFile,
    plan: Rc<FaultPlan>,
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

impl LogFile for FaultyFile {
    async fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<usize> {
        let p = &self.plan;
        if let Some(fault) = p.write_fault.get() {
            if p.writes_before_fault.get() == 0 {
                p.write_fault.set(None);
                if let WriteFault::Torn { sectors } = fault {
                    let keep = (sectors * SECTOR_BYTES).min(buf.len() as u64) as usize;
                    if keep > 0 {
                        let mut prefix = glommio::allocate_dma_buffer_global(keep);
                        prefix
                            .as_bytes_mut()
                            .copy_from_slice(&buf.as_bytes()[..keep]);
                        self.inner.write_at(Rc::new(prefix), pos).await?;
                    }
                }
                return Err(eio());
            }
            p.writes_before_fault.set(p.writes_before_fault.get() - 1);
        }
        p.writes.set(p.writes.get() + 1);
        self.inner.write_at(buf, pos).await
    }
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        if self.plan.read_eio.get() {
            return Err(eio());
        }
        self.inner.read_at(pos, len).await
    }
    async fn sync(&self) -> io::Result<()> {
        if self.plan.sync_eio.get() {
            return Err(eio());
        }
        self.plan.syncs.set(self.plan.syncs.get() + 1);
        self.inner.sync().await
    }
    async fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len).await
    }
    async fn size(&self) -> io::Result<u64> {
        self.inner.size().await
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}

/// The file type the engine holds: static dispatch over the real and the fault-injecting file.
pub enum AnyFile {
    Direct(DirectFile),
    Faulty(FaultyFile),
}

impl AnyFile {
    /// A second, blocking descriptor of the same open file (`dup`), for work that must run off
    /// the shard thread.
    pub fn duplicate(&self) -> io::Result<std::fs::File> {
        use std::os::fd::{AsRawFd, BorrowedFd};
        let dma = match self {
            AnyFile::Direct(f) => &f.file,
            AnyFile::Faulty(f) => &f.inner.file,
        };
        // SAFETY: the descriptor belongs to `dma`, which stays open for this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(dma.as_raw_fd()) };
        Ok(std::fs::File::from(fd.try_clone_to_owned()?))
    }
}

impl LogFile for AnyFile {
    async fn write_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<usize> {
        match self {
            AnyFile::Direct(f) => f.write_at(buf, pos).await,
            AnyFile::Faulty(f) => f.write_at(buf, pos).await,
        }
    }
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        match self {
            AnyFile::Direct(f) => f.read_at(pos, len).await,
            AnyFile::Faulty(f) => f.read_at(pos, len).await,
        }
    }
    async fn sync(&self) -> io::Result<()> {
        match self {
            AnyFile::Direct(f) => f.sync().await,
            AnyFile::Faulty(f) => f.sync().await,
        }
    }
    async fn set_len(&self, len: u64) -> io::Result<()> {
        match self {
            AnyFile::Direct(f) => f.set_len(len).await,
            AnyFile::Faulty(f) => f.set_len(len).await,
        }
    }
    async fn size(&self) -> io::Result<u64> {
        match self {
            AnyFile::Direct(f) => f.size().await,
            AnyFile::Faulty(f) => f.size().await,
        }
    }
    fn path(&self) -> &Path {
        match self {
            AnyFile::Direct(f) => f.path(),
            AnyFile::Faulty(f) => f.path(),
        }
    }
}

/// Primes glommio's DMA polling probe on the current executor by reading one small file that
/// already exists in `dir`: a freshly created file can otherwise trip the probe (EOPNOTSUPP on
/// the first DMA read). Call once per executor before opening partitions in `dir`.
/// Runs on the shard that will own the files.
pub async fn prime_executor(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // One probe file per executor: shards prime concurrently in the same directory, and a
    // shared name would let one shard remove the file another is about to open.
    let probe = dir.join(format!(".sluice-dma-probe-{}", glommio::executor().id()));
    std::fs::write(&probe, vec![0u8; SECTOR_BYTES as usize])?;
    let f = DmaFile::open(&probe).await.map_err(io::Error::from)?;
    let _ = f
        .read_at_aligned(0, SECTOR_BYTES as usize)
        .await
        .map_err(io::Error::from)?;
    f.close().await.map_err(io::Error::from)?;
    std::fs::remove_file(&probe)
}

/// Rounds `v` up to a whole number of sectors.
pub fn align_up(v: u64) -> u64 {
    (v + SECTOR_BYTES - 1) & !(SECTOR_BYTES - 1)
}

/// Rounds `v` down to a whole number of sectors.
pub fn align_down(v: u64) -> u64 {
    v & !(SECTOR_BYTES - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::LocalExecutor;

    fn run<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F) {
        LocalExecutor::default().run(f());
    }

    fn sector_buf(byte: u8, sectors: usize) -> Rc<DmaBuffer> {
        let mut b = glommio::allocate_dma_buffer_global(sectors * SECTOR_BYTES as usize);
        b.as_bytes_mut().fill(byte);
        Rc::new(b)
    }

    #[test]
    fn direct_file_round_trips_and_truncates() {
        let dir = tempfile::tempdir().unwrap();
        run(|| async move {
            prime_executor(dir.path()).await.unwrap();
            let f = IoBackend::Direct
                .open(&dir.path().join("a.log"), true)
                .await
                .unwrap();
            f.write_at(sector_buf(7, 2), 0).await.unwrap();
            assert_eq!(f.size().await.unwrap(), 8192);
            let got = f.read_at(100, 10).await.unwrap();
            assert_eq!(&got[..], &[7u8; 10]);
            f.set_len(5000).await.unwrap();
            f.sync().await.unwrap();
            assert_eq!(f.size().await.unwrap(), 5000);
            assert_eq!(f.read_at(4990, 100).await.unwrap().len(), 10);
        });
    }

    #[test]
    fn faulty_file_injects_eio_torn_writes_and_failed_sync() {
        let dir = tempfile::tempdir().unwrap();
        run(|| async move {
            prime_executor(dir.path()).await.unwrap();
            let plan = Rc::new(FaultPlan::default());
            let f = IoBackend::Faulty(plan.clone())
                .open(&dir.path().join("b.log"), true)
                .await
                .unwrap();
            plan.write_fault.set(Some(WriteFault::Eio));
            assert!(f.write_at(sector_buf(1, 1), 0).await.is_err());
            assert_eq!(f.size().await.unwrap(), 0);
            plan.write_fault.set(Some(WriteFault::Torn { sectors: 1 }));
            plan.writes_before_fault.set(1);
            f.write_at(sector_buf(2, 1), 0).await.unwrap();
            assert!(f.write_at(sector_buf(3, 3), 4096).await.is_err());
            assert_eq!(f.size().await.unwrap(), 8192, "one torn sector landed");
            plan.sync_eio.set(true);
            assert!(f.sync().await.is_err());
            plan.read_eio.set(true);
            assert!(f.read_at(0, 1).await.is_err());
        });
    }
}
