//! `sluice consume TOPIC`: prints records of a topic as lines on stdout.
//!
//! It reads without a consumer group: it looks the topic up, picks the start offset of each
//! partition (latest by default, earliest with `--from-beginning`, or `--offset`), then
//! fetches all chosen partitions in one long-polling Fetch after another and prints each
//! record's value (with `--print-key`, key, separator, value). Nulls print as `null`, as in
//! Kafka's console consumer. It stops after `--max-messages` records, after `--timeout-ms`
//! without a new record, or when stdout is closed. Runs on the command's main thread.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use sluice_client::error_codes;
use sluice_client::{ConsumedRecord, FetchOptions, OffsetSpec, TopicRef};

use crate::cli_common::ConnectArgs;

/// Longest single long poll; shorter when `--timeout-ms` is closer.
const POLL_WAIT_MS_MAX: u64 = 500;
/// Largest per-partition fetch size the consumer grows to when a batch does not fit.
const PARTITION_MAX_BYTES_CEILING: i32 = 64 * 1024 * 1024;

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Start at the earliest offset instead of the end.
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start offset: a number, "earliest" or "latest".
    #[arg(long, value_parser = parse_start)]
    offset: Option<Start>,
    /// Read only this partition [default: all partitions].
    #[arg(long)]
    partition: Option<i32>,
    /// Exit after printing this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Exit when no record arrives for this long.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Print each record's key before its value.
    #[arg(long)]
    print_key: bool,
    /// Print each record's timestamp (as CreateTime:MS or LogAppendTime:MS) first.
    #[arg(long)]
    print_timestamp: bool,
    /// Print each record's partition (as Partition:P).
    #[arg(long)]
    print_partition: bool,
    /// Print each record's offset (as Offset:N).
    #[arg(long)]
    print_offset: bool,
    /// Print each record's headers (as k1:v1,k2:v2, or NO_HEADERS).
    #[arg(long)]
    print_headers: bool,
    /// What to put between the printed fields (key and value, and the others when asked for).
    #[arg(long, default_value = "\t")]
    key_separator: String,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Earliest,
    Latest,
    Offset(i64),
}

fn parse_start(s: &str) -> Result<Start, String> {
    match s {
        "earliest" => Ok(Start::Earliest),
        "latest" => Ok(Start::Latest),
        _ => match s.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Start::Offset(n)),
            _ => Err(format!(
                "expected a non-negative offset, \"earliest\" or \"latest\", got {s:?}"
            )),
        },
    }
}

pub fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect()?;
    let topic = client.topic_metadata(&args.topic)?;
    let all: Vec<i32> = topic.partitions.iter().map(|p| p.index).collect();
    let chosen = match args.partition {
        Some(p) if all.contains(&p) => vec![p],
        Some(p) => bail!(
            "topic '{}' has no partition {p} (it has {})",
            args.topic,
            all.len()
        ),
        None => all,
    };
    let start = match (args.from_beginning, args.offset) {
        (true, _) => Start::Earliest,
        (false, Some(s)) => s,
        (false, None) => Start::Latest,
    };
    let mut positions = match start {
        Start::Earliest => client.list_offsets(&args.topic, &chosen, OffsetSpec::Earliest)?,
        Start::Latest => client.list_offsets(&args.topic, &chosen, OffsetSpec::Latest)?,
        Start::Offset(n) => chosen.iter().map(|&p| (p, n)).collect(),
    };
    let topic_ref = TopicRef {
        name: topic.name.clone(),
        id: topic.id,
    };

    let mut out = io::BufWriter::with_capacity(256 * 1024, io::stdout().lock());
    let mut printed: u64 = 0;
    let mut last_record_at = Instant::now();
    let timeout = args.timeout_ms.map(Duration::from_millis);
    let mut partition_max_bytes = FetchOptions::default().partition_max_bytes;
    let format = Format {
        timestamp: args.print_timestamp,
        partition: args.print_partition,
        offset: args.print_offset,
        headers: args.print_headers,
        key: args.print_key,
        separator: args.key_separator.clone(),
    };
    loop {
        if args.max_messages.is_some_and(|max| printed >= max) {
            break;
        }
        let wait = match timeout {
            Some(t) => {
                let left = t.saturating_sub(last_record_at.elapsed());
                if left.is_zero() {
                    break;
                }
                left.as_millis().min(u128::from(POLL_WAIT_MS_MAX)) as u64
            }
            None => POLL_WAIT_MS_MAX,
        };
        let options = FetchOptions {
            max_wait_ms: i32::try_from(wait).unwrap_or(i32::MAX),
            partition_max_bytes,
            max_bytes: partition_max_bytes.max(FetchOptions::default().max_bytes),
            ..FetchOptions::default()
        };
        let fetched = client.fetch(&topic_ref, &positions, options)?;
        let mut any = false;
        for part in fetched {
            let before = positions
                .iter()
                .find(|(p, _)| *p == part.partition)
                .map_or(part.next_offset, |(_, o)| *o);
            if part.error.is_none() && part.bytes > 0 && part.next_offset == before {
                // Only part of a batch came back: the batch is larger than the per-partition
                // limit (a broker without KIP-74). Ask for more next time.
                if partition_max_bytes >= PARTITION_MAX_BYTES_CEILING {
                    bail!(
                        "a record batch in {}-{} at offset {before} is larger than {} bytes",
                        args.topic,
                        part.partition,
                        PARTITION_MAX_BYTES_CEILING
                    );
                }
                partition_max_bytes = partition_max_bytes.saturating_mul(2);
            }
            if let Some(error) = part.error {
                if error.code == error_codes::OFFSET_OUT_OF_RANGE {
                    bail!(
                        "{error}: partition {} has offsets {}..{}",
                        part.partition,
                        part.log_start_offset,
                        part.high_watermark
                    );
                }
                return Err(error.into());
            }
            for record in &part.records {
                if args.max_messages.is_some_and(|max| printed >= max) {
                    break;
                }
                let written = format.write(&mut out, part.partition, record);
                if stdout_closed(&written) {
                    return Ok(());
                }
                written.context("cannot write to stdout")?;
                printed += 1;
                any = true;
            }
            if let Some(pos) = positions.iter_mut().find(|(p, _)| *p == part.partition) {
                pos.1 = part.next_offset;
            }
        }
        let flushed = out.flush();
        if stdout_closed(&flushed) {
            return Ok(());
        }
        flushed.context("cannot write to stdout")?;
        if any {
            last_record_at = Instant::now();
        }
    }
    drop(out);
    eprintln!("Processed a total of {printed} messages");
    Ok(())
}

/// Which fields a record line shows, in Kafka's console-consumer layout:
/// `[CreateTime:TS SEP][Partition:P SEP][Offset:N SEP][HEADERS SEP][KEY SEP]VALUE`.
struct Format {
    timestamp: bool,
    partition: bool,
    offset: bool,
    headers: bool,
    key: bool,
    separator: String,
}

impl Format {
    /// Writes one record as a line; null keys and values print as `null`.
    fn write(
        &self,
        out: &mut impl Write,
        partition: i32,
        record: &ConsumedRecord,
    ) -> io::Result<()> {
        let sep = self.separator.as_bytes();
        if self.timestamp {
            let kind = if record.log_append_time {
                "LogAppendTime"
            } else {
                "CreateTime"
            };
            write!(out, "{kind}:{}", record.timestamp)?;
            out.write_all(sep)?;
        }
        if self.partition {
            write!(out, "Partition:{partition}")?;
            out.write_all(sep)?;
        }
        if self.offset {
            write!(out, "Offset:{}", record.offset)?;
            out.write_all(sep)?;
        }
        if self.headers {
            if record.headers.is_empty() {
                out.write_all(b"NO_HEADERS")?;
            }
            for (i, (k, v)) in record.headers.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                out.write_all(k)?;
                out.write_all(b":")?;
                out.write_all(v.as_deref().unwrap_or(b"null"))?;
            }
            out.write_all(sep)?;
        }
        if self.key {
            out.write_all(record.key.as_deref().unwrap_or(b"null"))?;
            out.write_all(sep)?;
        }
        out.write_all(record.value.as_deref().unwrap_or(b"null"))?;
        out.write_all(b"\n")
    }
}

/// A reader that went away (`| head`) ends the command quietly, as with other Unix tools.
fn stdout_closed(result: &io::Result<()>) -> bool {
    matches!(result, Err(e) if e.kind() == io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests {
    use sluice_client::Bytes;

    use super::*;

    fn record(key: Option<&'static str>, value: Option<&'static str>) -> ConsumedRecord {
        ConsumedRecord {
            offset: 0,
            timestamp: 0,
            log_append_time: false,
            key: key.map(Bytes::from_static_str),
            value: value.map(Bytes::from_static_str),
            headers: Vec::new(),
        }
    }

    trait FromStaticStr {
        fn from_static_str(s: &'static str) -> Bytes;
    }
    impl FromStaticStr for Bytes {
        fn from_static_str(s: &'static str) -> Bytes {
            Bytes::from_static(s.as_bytes())
        }
    }

    fn format(key: bool, all: bool) -> Format {
        Format {
            timestamp: all,
            partition: all,
            offset: all,
            headers: all,
            key,
            separator: ":".into(),
        }
    }

    #[test]
    fn records_print_as_lines_with_optional_keys() {
        let mut out = Vec::new();
        format(true, false)
            .write(&mut out, 0, &record(Some("k"), Some("v")))
            .unwrap();
        format(true, false)
            .write(&mut out, 0, &record(None, Some("v2")))
            .unwrap();
        format(false, false)
            .write(&mut out, 0, &record(Some("k"), None))
            .unwrap();
        format(false, false)
            .write(&mut out, 0, &record(None, Some("")))
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "k:v\nnull:v2\nnull\n\n");
    }

    #[test]
    fn every_field_prints_in_kafkas_order() {
        let mut r = record(Some("k"), Some("v"));
        r.offset = 7;
        r.timestamp = 1234;
        r.headers = vec![
            (Bytes::from_static(b"a"), Some(Bytes::from_static(b"1"))),
            (Bytes::from_static(b"b"), None),
        ];
        let mut out = Vec::new();
        format(true, true).write(&mut out, 3, &r).unwrap();
        r.headers.clear();
        r.log_append_time = true;
        format(false, true).write(&mut out, 3, &r).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "CreateTime:1234:Partition:3:Offset:7:a:1,b:null:k:v\n\
             LogAppendTime:1234:Partition:3:Offset:7:NO_HEADERS:v\n"
        );
    }

    #[test]
    fn start_offsets_parse() {
        assert_eq!(parse_start("earliest"), Ok(Start::Earliest));
        assert_eq!(parse_start("latest"), Ok(Start::Latest));
        assert_eq!(parse_start("42"), Ok(Start::Offset(42)));
        assert!(parse_start("-1").is_err());
        assert!(parse_start("soon").is_err());
    }
}
