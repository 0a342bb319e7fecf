//! `sluice produce TOPIC`: every line on stdin becomes one record, sent to a running broker.
//!
//! A reader thread turns stdin into lines; the main thread gathers whatever lines are already
//! waiting (so piped input goes out in large batches while a person typing sees each line sent
//! at once), builds one magic-v2 batch per partition with `BatchBuilder`, and sends them in one
//! Produce request, waiting for the acknowledgement before the next request so that records
//! keep their order. Keyed records go to Kafka's default partition for their key (murmur2, as
//! the Java client does); unkeyed records go to one partition per request, round robin.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::sync::mpsc;

use anyhow::{bail, Context};
use clap::Args;
use sluice_client::error_codes;
use sluice_client::partitioner::partition_for_key;
use sluice_client::Bytes;
use sluice_client::{Acks, BatchBuilder, Client, Codec, TopicMetadata};

use crate::cli_common::{now_ms, ConnectArgs};

/// Uncompressed bytes gathered into one Produce request before it is sent; below Kafka's
/// default `max.message.bytes` (1 MiB) so an uncompressed batch is accepted.
const REQUEST_BYTES_TARGET: usize = 512 * 1024;
/// Lines buffered between the reader thread and the sender.
const LINES_IN_FLIGHT_MAX: usize = 16 * 1024;
/// How often to ask again for a topic the broker is still auto-creating.
const METADATA_ATTEMPTS: u32 = 20;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic to write to.
    topic: String,
    /// Split each line into key and value at the first occurrence of this string.
    #[arg(long)]
    key_separator: Option<String>,
    /// Write every record to this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// Acknowledgements to wait for: 0, 1 or all.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    acks: Acks,
    /// Batch compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_codec)]
    compression: Codec,
    /// A key or value equal to this string is sent as null.
    #[arg(long)]
    null_marker: Option<String>,
    /// How long the broker may take to acknowledge a request.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: i32,
    #[command(flatten)]
    connect: ConnectArgs,
}

fn parse_acks(s: &str) -> Result<Acks, String> {
    Acks::parse(s).ok_or_else(|| format!("expected 0, 1 or all, got {s:?}"))
}

fn parse_codec(s: &str) -> Result<Codec, String> {
    Codec::from_name(s)
        .ok_or_else(|| format!("expected none, gzip, snappy, lz4 or zstd, got {s:?}"))
}

/// One line split into key and value (`None` = null).
#[derive(Debug, PartialEq, Eq)]
struct LineRecord {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect()?;
    let topic = topic_for_produce(&mut client, &args.topic)?;
    let partitions = i32::try_from(topic.partitions.len()).context("too many partitions")?;
    if let Some(p) = args.partition {
        if !(0..partitions).contains(&p) {
            bail!(
                "topic '{}' has no partition {p} (it has {partitions})",
                args.topic
            );
        }
    }

    let (tx, rx) = mpsc::sync_channel::<std::io::Result<Vec<u8>>>(LINES_IN_FLIGHT_MAX);
    std::thread::spawn(move || read_lines(tx));

    let mut line_number: u64 = 0;
    let mut next_unkeyed_partition: i32 = 0;
    let mut builders: BTreeMap<i32, BatchBuilder> = BTreeMap::new();
    // Each turn: block for one line, then take whatever else is already waiting. A line that
    // cannot be used ends the command, but only after the lines before it have been sent.
    while let Ok(first) = rx.recv() {
        let mut pending_bytes = 0usize;
        let mut next = Some(first);
        let mut failure = None;
        while let Some(line) = next.take() {
            line_number += 1;
            let record = line.context("cannot read stdin").and_then(|line| {
                split_line(
                    &line,
                    args.key_separator.as_deref(),
                    args.null_marker.as_deref(),
                )
                .with_context(|| format!("line {line_number}"))
            });
            let record = match record {
                Ok(record) => record,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            let partition = match (args.partition, &record.key) {
                (Some(p), _) => p,
                (None, Some(key)) => partition_for_key(key, partitions),
                (None, None) => next_unkeyed_partition,
            };
            let builder = builders
                .entry(partition)
                .or_insert_with(|| BatchBuilder::new(args.compression));
            let before = builder.uncompressed_bytes();
            builder.append(
                now_ms(),
                record.key.as_deref(),
                record.value.as_deref(),
                &[],
            )?;
            pending_bytes += builder.uncompressed_bytes() - before;
            if pending_bytes < REQUEST_BYTES_TARGET {
                next = rx.try_recv().ok();
            }
        }
        let mut batches: Vec<(i32, Bytes)> = Vec::with_capacity(builders.len());
        for (partition, builder) in builders.iter_mut() {
            if builder.record_count() > 0 {
                batches.push((*partition, builder.build()?));
            }
        }
        client.produce(&args.topic, batches, args.acks, args.timeout_ms)?;
        next_unkeyed_partition = (next_unkeyed_partition + 1) % partitions.max(1);
        if let Some(e) = failure {
            return Err(e);
        }
    }
    Ok(())
}

/// Metadata of the topic to write to. Like Kafka producers, this lets the broker auto-create a
/// missing topic (if its `auto.create.topics.enable` allows) and waits while it does.
fn topic_for_produce(client: &mut Client, topic: &str) -> anyhow::Result<TopicMetadata> {
    for _ in 0..METADATA_ATTEMPTS {
        let md = client.metadata_with(Some(&[topic]), true)?;
        let found = md.topics.into_iter().find(|t| t.name == topic);
        match found {
            Some(t) if t.error_code == error_codes::NONE && !t.partitions.is_empty() => {
                return Ok(t)
            }
            Some(t) if t.error_code == error_codes::LEADER_NOT_AVAILABLE || t.error_code == 0 => {}
            Some(t) => {
                return Err(sluice_client::KafkaError::new(
                    t.error_code,
                    None,
                    format!("topic '{topic}'"),
                )
                .into())
            }
            None => {}
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    bail!("topic '{topic}' has no partitions available after waiting")
}

/// Reads stdin line by line (bytes, not necessarily UTF-8), without the line ending.
fn read_lines(tx: mpsc::SyncSender<std::io::Result<Vec<u8>>>) {
    let mut stdin = BufReader::with_capacity(256 * 1024, std::io::stdin().lock());
    loop {
        let mut line = Vec::new();
        match stdin.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                if tx.send(Ok(line)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// Splits a line into key and value. Without a separator the whole line is the value; with
/// one, a line that lacks it is an error, as in Kafka's console producer.
fn split_line(
    line: &[u8],
    separator: Option<&str>,
    null_marker: Option<&str>,
) -> anyhow::Result<LineRecord> {
    let null = |part: &[u8]| -> Option<Vec<u8>> {
        match null_marker {
            Some(marker) if part == marker.as_bytes() => None,
            _ => Some(part.to_vec()),
        }
    };
    let Some(sep) = separator.filter(|s| !s.is_empty()) else {
        return Ok(LineRecord {
            key: None,
            value: null(line),
        });
    };
    let sep = sep.as_bytes();
    let Some(at) = line.windows(sep.len()).position(|w| w == sep) else {
        bail!(
            "no key separator {:?} in {:?}",
            String::from_utf8_lossy(sep),
            String::from_utf8_lossy(line)
        );
    };
    Ok(LineRecord {
        key: null(&line[..at]),
        value: null(&line[at + sep.len()..]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: Option<&str>, value: Option<&str>) -> LineRecord {
        LineRecord {
            key: key.map(|k| k.as_bytes().to_vec()),
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn lines_split_at_the_first_separator() {
        assert_eq!(
            split_line(b"hello", None, None).unwrap(),
            rec(None, Some("hello"))
        );
        assert_eq!(
            split_line(b"k:v:w", Some(":"), None).unwrap(),
            rec(Some("k"), Some("v:w"))
        );
        assert_eq!(
            split_line(b"k::v", Some("::"), None).unwrap(),
            rec(Some("k"), Some("v"))
        );
        assert_eq!(
            split_line(b":v", Some(":"), None).unwrap(),
            rec(Some(""), Some("v"))
        );
        assert_eq!(split_line(b"", None, None).unwrap(), rec(None, Some("")));
        let err = split_line(b"nokey", Some(":"), None).unwrap_err();
        assert!(err.to_string().contains("no key separator"), "{err}");
    }

    #[test]
    fn the_null_marker_makes_nulls() {
        assert_eq!(
            split_line(b"NULL=NULL", Some("="), Some("NULL")).unwrap(),
            rec(None, None)
        );
        assert_eq!(
            split_line(b"k=", Some("="), Some("NULL")).unwrap(),
            rec(Some("k"), Some(""))
        );
    }
}
