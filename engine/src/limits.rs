//! Every numeric limit of the storage engine, in one place.
//!
//! Units are the last word of each name (`_bytes`, `_ms`, `_count`). Relations between limits are
//! checked at compile time below, so a change that breaks one fails the build instead of a test.
//! These are plain constants: they live on every core and cost nothing.

/// Size of one direct-I/O sector. Every DMA write starts on and covers whole sectors. 4096 is
/// the logical block size of every device we target and a multiple of the 512-byte minimum.
pub const SECTOR_BYTES: u64 = 4096;

/// Size of the fixed record-batch header (magic v2), up to and including `recordCount`.
pub const BATCH_HEADER_BYTES: usize = 61;

/// Bytes of a batch before the `batchLength` field's coverage starts (`baseOffset` + `batchLength`).
pub const BATCH_LOG_OVERHEAD_BYTES: usize = 12;

/// Largest batch we accept at all, whatever the topic says (Kafka's wire limit is an i32 size).
pub const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Default `max.message.bytes` (Kafka's default: 1 MiB + the 12-byte log overhead).
pub const MAX_MESSAGE_BYTES_DEFAULT: usize = 1_048_588;

/// Capacity of a segment's write buffer when allocated while a write is in flight (larger when
/// the append that allocates it is larger, up to [`WRITE_CHUNK_BYTES`]); from idle it is the
/// size of the append. It is released after its write.
pub const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Largest write buffer, and so largest DMA write. When a buffer fills while a write is in
/// flight it is queued whole and the next one is twice as large, up to this: a busy partition
/// writes in chunks of this size (never copying a buffer to grow it), which is where ext4 O_DIRECT
/// writes that extend the file reach the device's bandwidth (measured: 128 KiB writes reach a
/// third of what 1 MiB writes do; see perf/README.md).
pub const WRITE_CHUNK_BYTES: usize = 2 * 1024 * 1024;

/// While a DMA write is in flight, appends keep filling the next buffer; past this many bytes an
/// append waits for the write in flight (back-pressure for acks=0 producers).
pub const WRITE_BUFFER_PENDING_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Default `segment.bytes` (1 GiB).
pub const SEGMENT_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;

/// Smallest `segment.bytes` we accept (Kafka's minimum is 14 bytes; we need at least a sector).
pub const SEGMENT_BYTES_MIN: u64 = SECTOR_BYTES;

/// Largest `segment.bytes`: positions in the offset index are u32.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;

/// Default `segment.ms` and `retention.ms`: 7 days.
pub const WEEK_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// One day in milliseconds (Kafka's default `delete.retention.ms`).
pub const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Default `index.interval.bytes`.
pub const INDEX_INTERVAL_BYTES_DEFAULT: u32 = 4096;

/// Default `segment.index.bytes` (10 MiB, Kafka's default).
pub const SEGMENT_INDEX_BYTES_DEFAULT: u32 = 10 * 1024 * 1024;

/// One offset-index entry: relative offset (u32) + file position (u32).
pub const OFFSET_INDEX_ENTRY_BYTES: usize = 8;

/// One time-index entry: timestamp (i64) + relative offset (u32).
pub const TIME_INDEX_ENTRY_BYTES: usize = 12;

/// Bytes read per I/O when scanning a segment (recovery, index rebuild).
pub const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

/// Default byte budget of one shard's batch cache.
pub const BATCH_CACHE_BYTES_DEFAULT: usize = 64 * 1024 * 1024;

/// A segment whose write buffer saw no append for this long releases the buffer.
pub const WRITE_BUFFER_IDLE_MS: u64 = 1000;

const _: () = assert!(SECTOR_BYTES.is_power_of_two());
const _: () = assert!(SECTOR_BYTES % 512 == 0);
const _: () = assert!(WRITE_BUFFER_BYTES as u64 % SECTOR_BYTES == 0);
const _: () = assert!(WRITE_CHUNK_BYTES as u64 % SECTOR_BYTES == 0);
const _: () = assert!(WRITE_CHUNK_BYTES >= WRITE_BUFFER_BYTES);
const _: () = assert!(WRITE_BUFFER_PENDING_BYTES_MAX >= WRITE_CHUNK_BYTES);
const _: () = assert!(SEGMENT_BYTES_MIN % SECTOR_BYTES == 0);
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX);
const _: () = assert!(MAX_MESSAGE_BYTES_DEFAULT <= BATCH_BYTES_MAX);
const _: () = assert!(BATCH_BYTES_MAX as u64 <= SEGMENT_BYTES_MAX);
const _: () = assert!(SCAN_CHUNK_BYTES >= 2 * BATCH_HEADER_BYTES);
const _: () = assert!(SEGMENT_INDEX_BYTES_DEFAULT as usize % OFFSET_INDEX_ENTRY_BYTES == 0);
