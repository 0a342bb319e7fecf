//! `sluice txn list|describe|producers`: transaction administration over the Kafka protocol
//! against a running broker, in the manner of Kafka's kafka-transactions tool. `describe` goes
//! to the transactional id's coordinator (FindCoordinator key type 1 first); `producers` shows
//! a partition's active idempotent and transactional producers, which is how a transaction
//! left hanging on a partition is found. Runs on the command's main thread.

use std::fmt::Write as _;

use anyhow::Context;
use clap::{Args, Subcommand};
use sluice_client::{ActiveProducer, Client, ListedTransaction, TransactionDescription};

use crate::cli_common::{now_ms, table, ConnectArgs};

#[derive(Args, Debug)]
pub struct TxnArgs {
    #[command(subcommand)]
    command: TxnCommand,
}

#[derive(Subcommand, Debug)]
enum TxnCommand {
    /// List transactional ids with their producer id and state.
    List {
        /// Only transactions in this state (Empty, Ongoing, PrepareCommit, PrepareAbort,
        /// CompleteCommit, CompleteAbort, Dead, PrepareEpochFence); repeat for several.
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
        /// Only transactions of this producer id; repeat for several.
        #[arg(long = "producer-id", value_name = "ID")]
        producer_ids: Vec<i64>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show a transactional id's state, producer, timeout and the partitions of its open
    /// transaction.
    Describe {
        transactional_id: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show the active producers of a partition (open transactions hold its last stable
    /// offset at their start offset).
    Producers {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

pub fn run(args: TxnArgs) -> anyhow::Result<()> {
    match args.command {
        TxnCommand::List {
            states,
            producer_ids,
            connect,
        } => {
            let mut client = connect.connect()?;
            let listed = client.list_transactions(&states, &producer_ids)?;
            print!("{}", list_text(&listed));
        }
        TxnCommand::Describe {
            transactional_id,
            connect,
        } => {
            let mut client = coordinator_client(&connect, &transactional_id)?;
            let description = client.describe_transaction(&transactional_id)?;
            print!("{}", describe_text(&description, now_ms()));
        }
        TxnCommand::Producers {
            topic,
            partition,
            connect,
        } => {
            let mut client = connect.connect()?;
            let producers = client.describe_producers(&topic, partition)?;
            print!("{}", producers_text(&producers));
        }
    }
    Ok(())
}

/// A client connected to `transactional_id`'s coordinator.
fn coordinator_client(connect: &ConnectArgs, transactional_id: &str) -> anyhow::Result<Client> {
    let mut client = connect.connect()?;
    let coordinator = client.find_transaction_coordinator(transactional_id)?;
    let address = coordinator.address();
    if address == connect.bootstrap {
        return Ok(client);
    }
    ConnectArgs { bootstrap: address }
        .connect()
        .with_context(|| {
            format!("the coordinator of transactional id '{transactional_id}' is unreachable")
        })
}

/// `txn list`: one row per transactional id.
fn list_text(listed: &[ListedTransaction]) -> String {
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|t| {
            vec![
                t.transactional_id.clone(),
                t.producer_id.to_string(),
                t.state.clone(),
            ]
        })
        .collect();
    table(&["TRANSACTIONAL-ID", "PRODUCER-ID", "STATE"], &rows)
}

/// `txn describe`: `Key: value` lines, then the partitions of the open transaction.
fn describe_text(d: &TransactionDescription, now_ms: i64) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "TransactionalId: {}", d.transactional_id);
    let _ = writeln!(s, "State: {}", d.state);
    let _ = writeln!(s, "ProducerId: {}", d.producer_id);
    let _ = writeln!(s, "ProducerEpoch: {}", d.producer_epoch);
    let _ = writeln!(s, "TimeoutMs: {}", d.timeout_ms);
    match d.start_time_ms {
        Some(start) => {
            let _ = writeln!(s, "StartTimeMs: {start}");
            let _ = writeln!(s, "DurationMs: {}", (now_ms - start).max(0));
        }
        None => {
            let _ = writeln!(s, "StartTimeMs: -");
        }
    }
    let count: usize = d.partitions.iter().map(|(_, ps)| ps.len()).sum();
    let _ = writeln!(s, "Partitions: {count}");
    if count > 0 {
        let rows: Vec<Vec<String>> = d
            .partitions
            .iter()
            .flat_map(|(topic, ps)| ps.iter().map(move |p| vec![topic.clone(), p.to_string()]))
            .collect();
        let _ = writeln!(s);
        s.push_str(&table(&["TOPIC", "PARTITION"], &rows));
    }
    s
}

/// `txn producers`: one row per active producer; "-" where the partition knows nothing.
fn producers_text(producers: &[ActiveProducer]) -> String {
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    let rows: Vec<Vec<String>> = producers
        .iter()
        .map(|p| {
            vec![
                p.producer_id.to_string(),
                p.producer_epoch.to_string(),
                dash(p.last_sequence.map(|v| v.to_string())),
                dash(p.last_timestamp_ms.map(|v| v.to_string())),
                dash(p.coordinator_epoch.map(|v| v.to_string())),
                dash(p.current_txn_start_offset.map(|v| v.to_string())),
            ]
        })
        .collect();
    table(
        &[
            "PRODUCER-ID",
            "EPOCH",
            "LAST-SEQUENCE",
            "LAST-TIMESTAMP",
            "COORDINATOR-EPOCH",
            "TXN-START-OFFSET",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_shows_the_open_transactions_partitions_and_duration() {
        let d = TransactionDescription {
            transactional_id: "tx".into(),
            state: "Ongoing".into(),
            producer_id: 7,
            producer_epoch: 2,
            timeout_ms: 60_000,
            start_time_ms: Some(1_000),
            partitions: vec![("a".into(), vec![0, 2]), ("b".into(), vec![1])],
        };
        assert_eq!(
            describe_text(&d, 1_500),
            "TransactionalId: tx\nState: Ongoing\nProducerId: 7\nProducerEpoch: 2\n\
             TimeoutMs: 60000\nStartTimeMs: 1000\nDurationMs: 500\nPartitions: 3\n\n\
             TOPIC  PARTITION\na      0\na      2\nb      1\n"
        );
        let idle = TransactionDescription {
            state: "CompleteCommit".into(),
            start_time_ms: None,
            partitions: Vec::new(),
            ..d
        };
        let text = describe_text(&idle, 1_500);
        assert!(text.contains("StartTimeMs: -\nPartitions: 0\n"), "{text}");
        assert!(!text.contains("TOPIC"), "{text}");
    }

    #[test]
    fn producers_print_dashes_for_what_is_unknown() {
        let text = producers_text(&[ActiveProducer {
            producer_id: 3,
            producer_epoch: 0,
            last_sequence: None,
            last_timestamp_ms: Some(42),
            coordinator_epoch: None,
            current_txn_start_offset: Some(10),
        }]);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[1], vec!["3", "0", "-", "42", "-", "10"]);
    }
}
