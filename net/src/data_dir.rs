//! The broker's data directory: exclusive ownership and the direct-I/O check.
//!
//! Two brokers writing one log directory would corrupt it silently, so the broker takes an
//! exclusive `flock` on `<data-dir>/.lock` before it opens anything, and holds it for its whole
//! life (the kernel drops it when the process dies, even by SIGKILL, so a crash never leaves a
//! stale lock behind). The storage engine writes with O_DIRECT; a file system that refuses it
//! (tmpfs, some overlay set-ups) is refused at start-up with a clear message unless `--dev`
//! allows the broker to run there anyway. Both checks run once on the main thread.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create data directory {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "data directory {path} is locked by another process (is another broker running on it?)"
    )]
    Locked { path: PathBuf },
    #[error("cannot lock data directory {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "data directory {path} does not support O_DIRECT ({source}); Sluice writes with direct \
         I/O. Use a file system that supports it (ext4, xfs), or pass --dev to run anyway"
    )]
    NoDirectIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The exclusive lock on a data directory; released when dropped or when the process exits.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// The directory this lock protects.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates the directory if needed and takes its exclusive lock without waiting.
pub fn lock(dir: &Path) -> Result<DataDirLock, DataDirError> {
    std::fs::create_dir_all(dir).map_err(|source| DataDirError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    let lock_path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(|source| DataDirError::Lock {
            path: dir.to_path_buf(),
            source,
        })?;
    // SAFETY: flock on a file descriptor we own, with constant flags; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            DataDirError::Locked {
                path: dir.to_path_buf(),
            }
        } else {
            DataDirError::Lock {
                path: dir.to_path_buf(),
                source: err,
            }
        });
    }
    Ok(DataDirLock {
        _file: file,
        path: dir.to_path_buf(),
    })
}

/// Checks that files in `dir` can be opened and written with O_DIRECT.
pub fn check_direct_io(dir: &Path) -> Result<(), DataDirError> {
    let probe = dir.join(".direct-io-probe");
    let no_direct = |source| DataDirError::NoDirectIo {
        path: dir.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .map_err(no_direct)?;
    // O_DIRECT needs an aligned buffer; a Vec<u8> is not guaranteed to be, so over-allocate and
    // write from the first 4096-aligned address inside it.
    let raw = vec![0u8; 2 * 4096];
    let start = raw.as_ptr().align_offset(4096);
    let result = file.write_all(&raw[start..start + 4096]);
    drop(file);
    let _ = std::fs::remove_file(&probe);
    result.map_err(no_direct)
}

/// Reads the cluster id from `<dir>/meta.properties`, creating the file with a new random id
/// (22 characters of URL-safe base64 of 16 random bytes, as Kafka's ids look) if it is missing.
/// The id must never change for a data directory: clients compare it across reconnects.
pub fn load_or_create_cluster_id(dir: &Path) -> std::io::Result<String> {
    let path = dir.join("meta.properties");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            for line in text.lines() {
                if let Some(id) = line.trim().strip_prefix("cluster.id=") {
                    if !id.is_empty() {
                        return Ok(id.to_string());
                    }
                }
            }
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} has no cluster.id", path.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut random = [0u8; 16];
            File::open("/dev/urandom")?.read_exact(&mut random)?;
            let id = base64_url(&random);
            // Written to a temporary name, synced, then renamed: a crash leaves either no file
            // or a complete one, never a torn id.
            let tmp = dir.join("meta.properties.tmp");
            let mut f = File::create(&tmp)?;
            f.write_all(format!("version=1\ncluster.id={id}\n").as_bytes())?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        assert!(matches!(lock(dir.path()), Err(DataDirError::Locked { .. })));
        drop(first);
        assert!(lock(dir.path()).is_ok());
    }

    #[test]
    fn lock_creates_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        let l = lock(&nested).unwrap();
        assert_eq!(l.path(), nested.as_path());
        assert!(nested.join(".lock").exists());
    }

    #[test]
    fn the_direct_io_check_matches_the_file_system() {
        // The test's temporary directory may or may not be on a file system with O_DIRECT;
        // whichever it is, the check must agree with a direct attempt.
        let dir = tempfile::tempdir().unwrap();
        let direct = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(dir.path().join("x"))
            .is_ok();
        assert_eq!(check_direct_io(dir.path()).is_ok(), direct);
        assert!(!dir.path().join(".direct-io-probe").exists());
    }

    #[test]
    fn the_cluster_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_cluster_id(dir.path()).unwrap();
        assert_eq!(first.len(), 22);
        assert!(first
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(load_or_create_cluster_id(dir.path()).unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create_cluster_id(other.path()).unwrap(), first);
    }

    #[test]
    fn base64_url_matches_known_vectors() {
        assert_eq!(base64_url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_url(b"fo"), "Zm8");
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8");
    }
}
