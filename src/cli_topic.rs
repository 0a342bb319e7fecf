//! `sluice topic create|list|describe|delete|alter-config|add-partitions`: topic
//! administration over the Kafka protocol against a running broker. Each subcommand is one or
//! a few blocking requests; failures print the Kafka error name and exit non-zero. Runs on the
//! command's main thread.

use std::io::Write;

use anyhow::Context;
use clap::{Args, Subcommand};
use sluice_client::admin::topic_id_string;
use sluice_client::{AlterConfigOp, ConfigEntry, NewTopic, OffsetSpec, TopicMetadata};

use crate::cli_common::{parse_key_value, ConnectArgs};

#[derive(Args, Debug)]
pub struct TopicArgs {
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(Subcommand, Debug)]
enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions [default: the broker's num.partitions].
        #[arg(long)]
        partitions: Option<i32>,
        /// Replication factor [default: the broker's default.replication.factor].
        #[arg(long)]
        replication_factor: Option<i16>,
        /// A topic config, NAME=VALUE; repeat for several.
        #[arg(long = "config", value_name = "NAME=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        /// Only check that the topic could be created.
        #[arg(long)]
        validate_only: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List topic names, one per line.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show a topic's partitions, offsets and configs.
    Describe {
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete a topic and its data.
    Delete {
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Set or remove topic configs (removing restores the default).
    AlterConfig {
        name: String,
        /// Set a config, NAME=VALUE; repeat for several.
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// Remove a config override; repeat for several.
        #[arg(long = "delete", value_name = "NAME")]
        delete: Vec<String>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Grow a topic to a total number of partitions.
    AddPartitions {
        name: String,
        /// The new total number of partitions.
        #[arg(long)]
        partitions: i32,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

pub fn run(args: TopicArgs) -> anyhow::Result<()> {
    match args.command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            validate_only,
            connect,
        } => {
            let mut client = connect.connect()?;
            client.create_topic(&NewTopic {
                name: name.clone(),
                partitions: partitions.unwrap_or(-1),
                replication_factor: replication_factor.unwrap_or(-1),
                configs,
                validate_only,
            })?;
            if validate_only {
                println!("topic '{name}' can be created");
            } else {
                println!("created topic '{name}'");
            }
        }
        TopicCommand::List { connect } => {
            let mut client = connect.connect()?;
            let md = client.metadata(None)?;
            let mut out = std::io::stdout().lock();
            for topic in md.topics {
                writeln!(out, "{}", topic.name)?;
            }
        }
        TopicCommand::Describe { name, connect } => {
            let mut client = connect.connect()?;
            let topic = client.topic_metadata(&name)?;
            let indexes: Vec<i32> = topic.partitions.iter().map(|p| p.index).collect();
            let starts = client.list_offsets(&name, &indexes, OffsetSpec::Earliest)?;
            let ends = client.list_offsets(&name, &indexes, OffsetSpec::Latest)?;
            let offsets: Vec<(i64, i64)> = starts
                .iter()
                .zip(&ends)
                .map(|((_, start), (_, end))| (*start, *end))
                .collect();
            let configs = client.describe_topic_configs(&name)?;
            print!("{}", describe_text(&topic, &offsets, &configs));
        }
        TopicCommand::Delete { name, connect } => {
            let mut client = connect.connect()?;
            client.delete_topic(&name)?;
            println!("deleted topic '{name}'");
        }
        TopicCommand::AlterConfig {
            name,
            set,
            delete,
            connect,
        } => {
            let ops: Vec<AlterConfigOp> = set
                .into_iter()
                .map(|(name, value)| AlterConfigOp::Set { name, value })
                .chain(
                    delete
                        .into_iter()
                        .map(|name| AlterConfigOp::Delete { name }),
                )
                .collect();
            if ops.is_empty() {
                anyhow::bail!("nothing to change: give --set NAME=VALUE and/or --delete NAME");
            }
            let mut client = connect.connect()?;
            client.alter_topic_configs(&name, &ops)?;
            println!("altered configs of topic '{name}'");
        }
        TopicCommand::AddPartitions {
            name,
            partitions,
            connect,
        } => {
            let mut client = connect.connect()?;
            client
                .create_partitions(&name, partitions)
                .with_context(|| format!("topic '{name}' keeps its partitions"))?;
            println!("topic '{name}' now has {partitions} partitions");
        }
    }
    Ok(())
}

/// The `topic describe` report. Plain aligned text, stable enough for scripts to grep:
/// one `key: value` line per topic property, one line per partition, one per config.
fn describe_text(topic: &TopicMetadata, offsets: &[(i64, i64)], configs: &[ConfigEntry]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let replication = topic.partitions.first().map_or(0, |p| p.replicas.len());
    let _ = writeln!(s, "Topic: {}", topic.name);
    let _ = writeln!(s, "TopicId: {}", topic_id_string(&topic.id));
    let _ = writeln!(s, "Partitions: {}", topic.partitions.len());
    let _ = writeln!(s, "ReplicationFactor: {replication}");
    if topic.internal {
        let _ = writeln!(s, "Internal: true");
    }
    let _ = writeln!(
        s,
        "  {:>9}  {:>6}  {:>10}  {:>10}  {:>14}  {:>14}",
        "Partition", "Leader", "Replicas", "Isr", "LogStartOffset", "HighWatermark"
    );
    for (p, (start, end)) in topic.partitions.iter().zip(offsets) {
        let _ = writeln!(
            s,
            "  {:>9}  {:>6}  {:>10}  {:>10}  {:>14}  {:>14}",
            p.index,
            p.leader,
            join(&p.replicas),
            join(&p.isr),
            start,
            end
        );
    }
    let _ = writeln!(s, "Configs:");
    for c in configs {
        let value = if c.sensitive {
            "(sensitive)".to_owned()
        } else {
            c.value.clone().unwrap_or_else(|| "null".to_owned())
        };
        let _ = writeln!(s, "  {}={}  ({})", c.name, value, c.source.label());
    }
    s
}

fn join(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use sluice_client::{ConfigSource, PartitionMetadata};
    use sluice_protocol::Uuid;

    use super::*;

    #[test]
    fn describe_shows_partitions_offsets_and_config_sources() {
        let topic = TopicMetadata {
            name: "orders".into(),
            id: Uuid::ZERO,
            internal: false,
            error_code: 0,
            partitions: (0..2)
                .map(|i| PartitionMetadata {
                    index: i,
                    error_code: 0,
                    leader: 1,
                    leader_epoch: 0,
                    replicas: vec![1],
                    isr: vec![1],
                })
                .collect(),
        };
        let configs = vec![
            ConfigEntry {
                name: "cleanup.policy".into(),
                value: Some("delete".into()),
                source: ConfigSource::Default,
                read_only: false,
                sensitive: false,
                synonyms: Vec::new(),
            },
            ConfigEntry {
                name: "retention.ms".into(),
                value: Some("1000".into()),
                source: ConfigSource::Topic,
                read_only: false,
                sensitive: false,
                synonyms: Vec::new(),
            },
        ];
        let text = describe_text(&topic, &[(0, 5), (2, 7)], &configs);
        assert!(text.starts_with("Topic: orders\n"), "{text}");
        assert!(text.contains("Partitions: 2\n"));
        assert!(text.contains("ReplicationFactor: 1\n"));
        let rows: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            vec![
                vec!["0", "1", "1", "1", "0", "5"],
                vec!["1", "1", "1", "1", "2", "7"]
            ]
        );
        assert!(text.contains("  retention.ms=1000  (topic)\n"));
        assert!(text.contains("  cleanup.policy=delete  (default)\n"));
    }
}
