//! `sluice-bench limits`: the machine limits every throughput figure is divided by, measured
//! in the same run as the workloads.
//!
//! - `disk`: sequential O_DIRECT writes to a file in the data directory's filesystem, once
//!   without syncing and once with `fdatasync` after every `--sync-every-kb` (the unit that a
//!   group commit makes durable at once), then sequential O_DIRECT reads of what was written
//!   (what a consumer of data that is in no cache can get at most).
//! - `loopback`: one TCP stream over 127.0.0.1, one writer thread and one reader thread moving
//!   1 MiB buffers, which is the path a single producer or consumer connection takes.
//!
//! Both print one JSON object on stdout. They run on plain threads, outside any executor.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

#[derive(Subcommand, Debug)]
pub enum LimitsCommand {
    /// Raw O_DIRECT sequential write bandwidth of a directory's filesystem.
    Disk(DiskArgs),
    /// Loopback TCP bandwidth of one stream.
    Loopback(LoopbackArgs),
}

#[derive(Args, Debug)]
pub struct DiskArgs {
    /// Directory whose filesystem is measured (the broker's data directory).
    #[arg(long)]
    pub dir: PathBuf,
    /// MiB written per pass.
    #[arg(long, default_value_t = 512)]
    pub mb: usize,
    /// Size of each write in KiB (a multiple of 4).
    #[arg(long, default_value_t = 1024)]
    pub block_kb: usize,
    /// In the synced pass, KiB written between two fdatasync calls.
    #[arg(long, default_value_t = 1024)]
    pub sync_every_kb: usize,
}

#[derive(Args, Debug)]
pub struct LoopbackArgs {
    /// Seconds to stream.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Bytes per write and read call, in KiB.
    #[arg(long, default_value_t = 1024)]
    pub buffer_kb: usize,
}

#[derive(Debug, Serialize)]
pub struct DiskLimits {
    pub path: String,
    pub bytes: u64,
    pub block_bytes: usize,
    pub sync_every_bytes: usize,
    pub direct_write_bytes_per_sec: f64,
    pub direct_fdatasync_write_bytes_per_sec: f64,
    pub fdatasync_per_sec: f64,
    pub direct_read_bytes_per_sec: f64,
}

#[derive(Debug, Serialize)]
pub struct LoopbackLimits {
    pub bytes: u64,
    pub seconds: f64,
    pub buffer_bytes: usize,
    pub bytes_per_sec: f64,
}

/// O_DIRECT needs buffers, offsets and lengths aligned to the logical block size; 4 KiB covers
/// every common device.
const ALIGN: usize = 4096;

pub fn run(command: &LimitsCommand) -> Result<()> {
    let json = match command {
        LimitsCommand::Disk(a) => serde_json::to_string_pretty(&disk(a)?)?,
        LimitsCommand::Loopback(a) => serde_json::to_string_pretty(&loopback(a)?)?,
    };
    println!("{json}");
    Ok(())
}

pub fn disk(args: &DiskArgs) -> Result<DiskLimits> {
    let block = args.block_kb * 1024;
    let sync_every = args.sync_every_kb * 1024;
    if block == 0 || block % ALIGN != 0 || sync_every == 0 || sync_every % block != 0 {
        bail!("--block-kb must be a positive multiple of 4 and divide --sync-every-kb");
    }
    let total = (args.mb * 1024 * 1024) / block * block;
    if total == 0 {
        bail!("--mb must be at least one block");
    }
    let path = args.dir.join(".sluice-bench-disk-probe");
    let mut backing = vec![0u8; block + ALIGN];
    let start = backing.as_ptr().align_offset(ALIGN);
    let buf = &mut backing[start..start + block];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let result = (|| {
        let unsynced = write_pass(&path, buf, total, None)?;
        let synced = write_pass(&path, buf, total, Some(sync_every))?;
        let read = read_pass(&path, buf, total)?;
        Ok(DiskLimits {
            path: args.dir.display().to_string(),
            bytes: total as u64,
            block_bytes: block,
            sync_every_bytes: sync_every,
            direct_write_bytes_per_sec: (total as f64 / unsynced.as_secs_f64()).round(),
            direct_fdatasync_write_bytes_per_sec: (total as f64 / synced.as_secs_f64()).round(),
            fdatasync_per_sec: ((total / sync_every) as f64 / synced.as_secs_f64()).round(),
            direct_read_bytes_per_sec: (total as f64 / read.as_secs_f64()).round(),
        })
    })();
    let _ = std::fs::remove_file(&path);
    result
}

fn write_pass(
    path: &Path,
    buf: &[u8],
    total: usize,
    sync_every: Option<usize>,
) -> Result<Duration> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .with_context(|| format!("opening {} with O_DIRECT", path.display()))?;
    let started = Instant::now();
    let mut written = 0;
    let mut since_sync = 0;
    while written < total {
        file.write_all(buf)
            .with_context(|| format!("O_DIRECT write to {}", path.display()))?;
        written += buf.len();
        since_sync += buf.len();
        if let Some(every) = sync_every {
            if since_sync >= every {
                file.sync_data()
                    .with_context(|| format!("fdatasync of {}", path.display()))?;
                since_sync = 0;
            }
        }
    }
    Ok(started.elapsed())
}

/// Reads the probe file back sequentially with O_DIRECT, one block per read.
fn read_pass(path: &Path, buf: &mut [u8], total: usize) -> Result<Duration> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .with_context(|| format!("opening {} with O_DIRECT", path.display()))?;
    let started = Instant::now();
    let mut read = 0;
    while read < total {
        let n = file
            .read(buf)
            .with_context(|| format!("O_DIRECT read of {}", path.display()))?;
        if n == 0 {
            bail!("{} ended after {read} of {total} bytes", path.display());
        }
        read += n;
    }
    Ok(started.elapsed())
}

pub fn loopback(args: &LoopbackArgs) -> Result<LoopbackLimits> {
    let size = args.buffer_kb.max(1) * 1024;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> Result<(u64, Duration)> {
        let (mut stream, _) = listener.accept()?;
        let mut buf = vec![0u8; size];
        let mut total = 0u64;
        let started = Instant::now();
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        Ok((total, started.elapsed()))
    });
    let mut stream = TcpStream::connect(addr)?;
    let buf = vec![7u8; size];
    let until = Instant::now() + Duration::from_secs_f64(args.seconds);
    while Instant::now() < until {
        stream.write_all(&buf)?;
    }
    drop(stream);
    let (bytes, elapsed) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the loopback reader thread panicked"))??;
    let seconds = elapsed.as_secs_f64();
    Ok(LoopbackLimits {
        bytes,
        seconds: (seconds * 1000.0).round() / 1000.0,
        buffer_bytes: size,
        bytes_per_sec: (bytes as f64 / seconds).round(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_moves_bytes() {
        let l = loopback(&LoopbackArgs {
            seconds: 0.1,
            buffer_kb: 64,
        })
        .expect("loopback probe");
        assert!(l.bytes > 0);
        assert!(l.bytes_per_sec > 0.0);
    }

    #[test]
    fn disk_probe_writes_and_cleans_up_or_reports_no_direct_io() {
        let dir = tempfile::tempdir().expect("tempdir");
        match disk(&DiskArgs {
            dir: dir.path().to_owned(),
            mb: 4,
            block_kb: 256,
            sync_every_kb: 1024,
        }) {
            Ok(d) => {
                assert_eq!(d.bytes, 4 * 1024 * 1024);
                assert!(d.direct_write_bytes_per_sec > 0.0);
                assert!(d.direct_fdatasync_write_bytes_per_sec > 0.0);
                assert!(d.direct_read_bytes_per_sec > 0.0);
            }
            // tmpfs has no O_DIRECT; the probe must say so rather than measure the page cache.
            Err(e) => assert!(format!("{e:#}").contains("O_DIRECT"), "{e:#}"),
        }
        assert!(!dir.path().join(".sluice-bench-disk-probe").exists());
    }

    #[test]
    fn misaligned_blocks_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(disk(&DiskArgs {
            dir: dir.path().to_owned(),
            mb: 1,
            block_kb: 3,
            sync_every_kb: 3,
        })
        .is_err());
    }
}
