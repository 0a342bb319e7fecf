//! The crash-safe replacement of closed segments by the cleaner's output, and what start-up
//! does with a replacement a crash interrupted.
//!
//! A group of consecutive closed segments `[X, …, Y]` is replaced by one segment with base `X`.
//! The steps, each durable before the next (the directory is fsynced where a rename or a
//! removal must be):
//!
//! | step | on disk                                                   | a crash here leaves            |
//! |------|-----------------------------------------------------------|--------------------------------|
//! | 1    | `X.log.cleaned` written and fdatasynced                   | old segments + a `.cleaned` file, which start-up deletes |
//! | 2    | `X.txnindex.cleaned` → `X.txnindex.swap` (when any)       | same: a `.swap` index without a `.swap` log is not committed |
//! | 3    | `X.log.cleaned` → `X.log.swap`, directory fsynced: **commit** | start-up finishes the swap |
//! | 4    | index files of the old segments removed, then their `.log` files newest first (not `X.log`) | start-up finishes the swap |
//! | 5    | `X.log.swap` → `X.log` (atomically replaces the old `X.log`), `X.txnindex.swap` → `X.txnindex`, directory fsynced | the new segment |
//!
//! Finishing a swap at start-up ([`recover_interrupted_swaps`]) repeats steps 4 and 5 for every
//! `X.log.swap` found: it removes the old segments whose base lies in `(X, L]`, `L` being the
//! last offset in the swap file. An old segment of the group with a base past `L` (possible when
//! the cleaner removed the group's last batches, and step 4 had not reached it) is left in
//! place: it holds original, uncleaned records at offsets the new segment does not cover, which
//! a later cleaning pass removes again. Either way every offset is served by exactly one
//! segment and the log reads as the old or the new data, never a mix within a range.
//!
//! The renames, removals and fsyncs are blocking system calls (a directory fsync can take
//! milliseconds on a busy device), so [`commit_off_shard`] runs the whole sequence on the
//! executor's blocking thread, in the order above, while the shard keeps serving requests. The
//! partition holds its append turn meanwhile ([`crate::partition::Partition`]'s
//! `replace_segments`): nothing else changes its segment files until the swap is done.
//! Start-up recovery ([`recover_interrupted_swaps`]) runs the same steps directly, before the
//! partition serves anything.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::batch::peek_offset_and_len;
use crate::error::{Error, Result};
use crate::limits::BATCH_HEADER_BYTES;
use crate::segment::{log_file_name, parse_log_file_name};
use crate::types::Offset;

/// Suffix of a file the cleaner is writing (not yet committed).
pub const CLEANED_SUFFIX: &str = ".cleaned";
/// Suffix of a committed replacement not yet renamed into place.
pub const SWAP_SUFFIX: &str = ".swap";

/// A step of the swap, for fault injection: the cleaner stops right after it, as if the process
/// had been killed there (nothing after it runs, the in-memory partition is left as it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapStep {
    CleanedWritten,
    Committed,
    OldRemoved,
    Renamed,
}

/// The files of the segment with base `base` other than its `.log`.
pub fn side_files(dir: &Path, base: Offset) -> [PathBuf; 3] {
    [
        dir.join(format!("{:020}.index", base.0)),
        dir.join(format!("{:020}.timeindex", base.0)),
        dir.join(crate::txn_index::txn_index_file_name(base)),
    ]
}

pub fn cleaned_log_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{}{CLEANED_SUFFIX}", log_file_name(base)))
}

pub fn cleaned_txn_index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!(
        "{}{CLEANED_SUFFIX}",
        crate::txn_index::txn_index_file_name(base)
    ))
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// [`commit`] on the executor's blocking thread, so that the shard does not stall in the file
/// system; resolves when every step is done (or one failed). Nothing happens until the returned
/// future is first polled. Runs on the partition's home shard.
pub async fn commit_off_shard(
    dir: PathBuf,
    old: Vec<Offset>,
    crash_at: Option<SwapStep>,
) -> Result<()> {
    off_shard(move || commit(&dir, &old, crash_at)).await
}

/// Runs blocking file-system work `f` on the shard's blocking thread (glommio's
/// `spawn_blocking`) and waits for it without blocking the shard.
pub(crate) async fn off_shard<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}

/// Steps 2-5 for a group whose new `.log` (and optional `.txnindex`) were written with the
/// `.cleaned` suffix and synced. `old` are the bases of the replaced segments, oldest first;
/// the first is the new segment's base. `crash_at` stops after a step (tests). Blocking: the
/// cleaner calls it through [`commit_off_shard`].
pub fn commit(dir: &Path, old: &[Offset], crash_at: Option<SwapStep>) -> Result<()> {
    let Some(&base) = old.first() else {
        return Ok(());
    };
    if crash_at == Some(SwapStep::CleanedWritten) {
        return Err(injected());
    }
    let log = dir.join(log_file_name(base));
    let txn = dir.join(crate::txn_index::txn_index_file_name(base));
    let txn_cleaned = with_suffix(&txn, CLEANED_SUFFIX);
    if txn_cleaned.exists() {
        rename(&txn_cleaned, &with_suffix(&txn, SWAP_SUFFIX))?;
    }
    rename(
        &cleaned_log_path(dir, base),
        &with_suffix(&log, SWAP_SUFFIX),
    )?;
    sync_dir(dir)?;
    if crash_at == Some(SwapStep::Committed) {
        return Err(injected());
    }
    remove_old(dir, base, old.iter().skip(1).rev().copied())?;
    if crash_at == Some(SwapStep::OldRemoved) {
        return Err(injected());
    }
    finish(dir, base)?;
    if crash_at == Some(SwapStep::Renamed) {
        return Err(injected());
    }
    Ok(())
}

/// Removes the side files of every old segment and the `.log` files of `others` (the group's
/// segments after the first, newest first).
fn remove_old(dir: &Path, base: Offset, others: impl Iterator<Item = Offset>) -> Result<()> {
    for p in side_files(dir, base) {
        if !p.ends_with(crate::txn_index::txn_index_file_name(base)) {
            remove(&p)?;
        }
    }
    for b in others {
        for p in side_files(dir, b) {
            remove(&p)?;
        }
        remove(&dir.join(log_file_name(b)))?;
    }
    Ok(())
}

/// Step 5: the swap files take their final names; the old `X.log` goes with the rename.
fn finish(dir: &Path, base: Offset) -> Result<()> {
    let log = dir.join(log_file_name(base));
    let txn = dir.join(crate::txn_index::txn_index_file_name(base));
    let txn_swap = with_suffix(&txn, SWAP_SUFFIX);
    if txn_swap.exists() {
        rename(&txn_swap, &txn)?;
    } else {
        // The new segment has no aborted transactions: the old X's entries must not survive.
        remove(&txn)?;
    }
    rename(&with_suffix(&log, SWAP_SUFFIX), &log)?;
    sync_dir(dir)
}

/// Start-up: deletes uncommitted `.cleaned` files (and a `.swap` index whose log was not
/// committed), and finishes every committed swap. Runs before the partition lists its segments.
pub fn recover_interrupted_swaps(dir: &Path) -> Result<usize> {
    let mut names = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list partition", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list partition", dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    let mut finished = 0;
    for name in &names {
        if name.ends_with(CLEANED_SUFFIX) {
            tracing::info!(file = %name, "removing an unfinished cleaner output");
            remove(&dir.join(name))?;
        }
    }
    let swaps: Vec<Offset> = names
        .iter()
        .filter_map(|n| n.strip_suffix(SWAP_SUFFIX))
        .filter_map(parse_log_file_name)
        .collect();
    for name in &names {
        if let Some(stem) = name.strip_suffix(SWAP_SUFFIX) {
            let is_log = parse_log_file_name(stem).is_some();
            let committed = stem
                .strip_suffix(".txnindex")
                .and_then(|b| b.parse::<i64>().ok())
                .is_some_and(|b| swaps.contains(&Offset(b)));
            if !is_log && !committed {
                remove(&dir.join(name))?;
            }
        }
    }
    for base in swaps {
        let swap = with_suffix(&dir.join(log_file_name(base)), SWAP_SUFFIX);
        let last = last_offset_in(&swap)?;
        tracing::warn!(swap = %swap.display(), ?last, "finishing a segment swap interrupted by a crash");
        let mut others: Vec<Offset> = Vec::new();
        for n in &names {
            if let Some(b) = parse_log_file_name(n) {
                if b > base && last.is_some_and(|l| b <= l) {
                    others.push(b);
                }
            }
        }
        others.sort();
        remove_old(dir, base, others.into_iter().rev())?;
        finish(dir, base)?;
        finished += 1;
    }
    Ok(finished)
}

/// The last offset of the last batch in a segment file (headers only), `None` when it holds
/// no batch. The file was fdatasynced before it was committed, so it is whole.
fn last_offset_in(path: &Path) -> Result<Option<Offset>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("open swap file", path, e))?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)
        .map_err(|e| Error::io("read swap file", path, e))?;
    let mut at = 0usize;
    let mut last = None;
    while let Some((base, len)) = peek_offset_and_len(&data[at..]) {
        if len < BATCH_HEADER_BYTES as i64 || at + len as usize > data.len() {
            break;
        }
        let h = crate::batch::BatchHeader::read(&data[at..]);
        if let Some(h) = h {
            last = Some(h.last_offset());
        } else {
            last = Some(Offset(base));
        }
        at += len as usize;
    }
    Ok(last)
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| Error::io("rename cleaned segment", from, e))
}

fn remove(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove replaced segment file", p, e)),
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", dir, e))
}

fn injected() -> Error {
    Error::io(
        "cleaner swap",
        PathBuf::new(),
        std::io::Error::other("injected crash (test)"),
    )
}
