//! The broker process's own figures, under the names every Prometheus client library's process
//! collector uses (`process_resident_memory_bytes`, `process_cpu_seconds_total`, ...), so the
//! dashboards and alerts operators already have for other services work unchanged.
//!
//! They answer what the shards' figures cannot: how much memory the process holds beyond what
//! the batch cache accounts for (`process_resident_memory_bytes` against
//! `sluice_batch_cache_bytes`), and how close ten thousand partitions' segment and index files
//! bring it to its file-descriptor limit. They are read from `/proc/self` at scrape time, on
//! the executor's blocking thread: listing the descriptors of a broker with many partitions
//! reads a directory of tens of thousands of entries.

use std::io;

/// The process figures at one moment. Plain data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    /// The soft `RLIMIT_NOFILE`.
    pub max_fds: u64,
    /// Start time, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// Reads this process's figures from `/proc`.
pub fn read() -> io::Result<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let boot_time = boot_time_seconds(&std::fs::read_to_string("/proc/stat")?)
        .ok_or_else(|| invalid("/proc/stat has no btime line"))?;
    // SAFETY: sysconf only reads a system constant.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if ticks <= 0 || page <= 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stats = parse_stat(&stat, ticks as u64, page as u64, boot_time)
        .ok_or_else(|| invalid("unexpected /proc/self/stat"))?;
    stats.open_fds = std::fs::read_dir("/proc/self/fd")?.count() as u64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    stats.max_fds = limit.rlim_cur;
    Ok(stats)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// The `btime` line of `/proc/stat`: boot time in seconds since the epoch.
fn boot_time_seconds(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The figures in a `/proc/<pid>/stat` line (descriptor counts are left at zero). The command
/// name (field 2) is in parentheses and may itself hold spaces and parentheses, so fields are
/// counted from the last `)`.
fn parse_stat(
    line: &str,
    ticks_per_second: u64,
    page_bytes: u64,
    boot_time: u64,
) -> Option<ProcessStats> {
    let after_comm = &line[line.rfind(')')? + 1..];
    // Field 3 (state) is the first after the command name.
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let ticks = ticks_per_second as f64;
    Some(ProcessStats {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        start_time_seconds: boot_time as f64 + field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page_bytes,
        open_fds: 0,
        max_fds: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_from_the_last_parenthesis() {
        // A command name with a space and a parenthesis of its own; utime 250, stime 50,
        // starttime 1234 ticks after boot, vsize 987654321, rss 2048 pages.
        let line = "4242 (sluice (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 \
                    5 0 1234 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 \
                    0 0 0 0 0";
        let s = parse_stat(line, 100, 4096, 1_700_000_000).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.start_time_seconds, 1_700_000_012.34);
        assert_eq!(s.virtual_bytes, 987_654_321);
        assert_eq!(s.resident_bytes, 2048 * 4096);
        assert!(parse_stat("4242 (truncated) S 1 2", 100, 4096, 0).is_none());
    }

    #[test]
    fn the_boot_time_is_the_btime_line() {
        let proc_stat = "cpu  1 2 3\nintr 5\nbtime 1795300000\nprocesses 9\n";
        assert_eq!(boot_time_seconds(proc_stat), Some(1_795_300_000));
        assert_eq!(boot_time_seconds("cpu 1\n"), None);
    }

    #[test]
    fn this_process_reads_as_running_now_with_memory_and_descriptors() {
        let s = read().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // This test's process started moments ago.
        assert!(s.start_time_seconds <= now + 1.0, "{s:?}");
        assert!(s.start_time_seconds > now - 600.0, "{s:?}");
        assert!(s.resident_bytes > 1 << 20, "{s:?}");
        assert!(s.virtual_bytes >= s.resident_bytes, "{s:?}");
        // stdin, stdout, stderr and the directory being listed, at least.
        assert!(s.open_fds >= 3, "{s:?}");
        assert!(s.max_fds >= s.open_fds, "{s:?}");
        assert!(s.cpu_seconds >= 0.0, "{s:?}");
    }
}
