//! `sluice group list|describe|delete|reset-offsets`: consumer-group administration over the
//! Kafka protocol against a running broker, in the manner of Kafka's kafka-consumer-groups
//! tool. Group requests go to the group's coordinator (FindCoordinator first). Runs on the
//! command's main thread.
//!
//! `reset-offsets` only changes the offsets of an inactive group (Empty, or unknown to the
//! coordinator): a group with live members owns its offsets and would overwrite a reset at its
//! next commit, and the coordinator refuses commits from non-members of an active group
//! anyway. New offsets are clamped into the partition's [log start, log end], as Kafka's tool
//! does. Without `--execute` it only prints the plan.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::{bail, Context};
use clap::{ArgGroup, Args, Subcommand};
use sluice_client::{
    Assignment, Client, CommittedOffset, GroupDescription, OffsetSpec, OffsetToCommit,
};

use crate::cli_common::{table, ConnectArgs};

#[derive(Args, Debug)]
pub struct GroupArgs {
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// List groups, one per line (with --long: state and protocol type too).
    List {
        /// Only groups in this state (Empty, Stable, PreparingRebalance, CompletingRebalance,
        /// Dead); repeat for several.
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
        /// Print a table with each group's state and protocol type.
        #[arg(long)]
        long: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show a group's state, members, and committed offsets with their lag.
    Describe {
        group: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete inactive groups and their committed offsets.
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Move an inactive group's committed offsets (a dry run unless --execute is given).
    #[command(group(ArgGroup::new("target").required(true).args([
        "to_earliest", "to_latest", "to_offset", "shift_by", "to_datetime"
    ])))]
    #[command(group(ArgGroup::new("scope").required(true).args(["topics", "all_topics"])))]
    ResetOffsets {
        group: String,
        /// TOPIC or TOPIC:P1,P2,... to reset; repeat for several.
        #[arg(long = "topic", value_name = "TOPIC[:PARTITIONS]", value_parser = parse_topic_scope)]
        topics: Vec<TopicScope>,
        /// Every topic the group has committed offsets for.
        #[arg(long)]
        all_topics: bool,
        /// To the log start offset.
        #[arg(long)]
        to_earliest: bool,
        /// To the log end offset (the high watermark).
        #[arg(long)]
        to_latest: bool,
        /// To this offset.
        #[arg(long, value_name = "OFFSET")]
        to_offset: Option<i64>,
        /// By this many offsets from the committed offset (negative moves back).
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        shift_by: Option<i64>,
        /// To the first offset at or after this time: milliseconds since the epoch, or
        /// YYYY-MM-DDTHH:MM:SS[.mmm][Z|+HH:MM|-HH:MM] (UTC when no zone is given).
        #[arg(long, value_name = "TIME", value_parser = parse_datetime_ms)]
        to_datetime: Option<i64>,
        /// Only print the plan (the default).
        #[arg(long, conflicts_with = "execute")]
        dry_run: bool,
        /// Commit the new offsets.
        #[arg(long)]
        execute: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// `--topic` of reset-offsets: a topic, and optionally some of its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicScope {
    topic: String,
    /// `None` for every partition of the topic.
    partitions: Option<Vec<i32>>,
}

/// Where reset-offsets moves each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
    Shift(i64),
    Time(i64),
}

/// One partition of a reset plan.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PlannedReset {
    topic: String,
    partition: i32,
    current: Option<i64>,
    new: i64,
}

pub fn run(args: GroupArgs) -> anyhow::Result<()> {
    match args.command {
        GroupCommand::List {
            states,
            long,
            connect,
        } => {
            let mut client = connect.connect()?;
            let groups = client.list_groups(&states)?;
            let mut out = String::new();
            if long {
                let rows: Vec<Vec<String>> = groups
                    .iter()
                    .map(|g| {
                        vec![
                            g.group_id.clone(),
                            g.state.clone().unwrap_or_else(|| "-".to_owned()),
                            display_protocol_type(&g.protocol_type),
                        ]
                    })
                    .collect();
                out = table(&["GROUP", "STATE", "PROTOCOL-TYPE"], &rows);
            } else {
                for g in &groups {
                    let _ = writeln!(out, "{}", g.group_id);
                }
            }
            print!("{out}");
        }
        GroupCommand::Describe { group, connect } => {
            let mut client = coordinator_client(&connect, &group)?;
            let description = client.describe_group(&group)?;
            let committed = client.committed_offsets(&group)?;
            if description.state == "Dead" && committed.is_empty() {
                bail!("group '{group}' does not exist");
            }
            let log_ends = log_end_offsets(&mut client, &description, &committed)?;
            print!("{}", describe_text(&description, &committed, &log_ends));
        }
        GroupCommand::Delete { groups, connect } => {
            if let [group] = groups.as_slice() {
                coordinator_client(&connect, group)?.delete_group(group)?;
                println!("deleted group '{group}'");
                return Ok(());
            }
            let mut failed = 0;
            for group in &groups {
                let result = coordinator_client(&connect, group)
                    .and_then(|mut client| Ok(client.delete_group(group)?));
                match result {
                    Ok(()) => println!("deleted group '{group}'"),
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} of {} groups were not deleted", groups.len());
            }
        }
        GroupCommand::ResetOffsets {
            group,
            topics,
            all_topics,
            to_earliest,
            to_latest,
            to_offset,
            shift_by,
            to_datetime,
            dry_run: _,
            execute,
            connect,
        } => {
            let to = if to_earliest {
                ResetTo::Earliest
            } else if to_latest {
                ResetTo::Latest
            } else if let Some(offset) = to_offset {
                ResetTo::Offset(offset)
            } else if let Some(n) = shift_by {
                ResetTo::Shift(n)
            } else if let Some(t) = to_datetime {
                ResetTo::Time(t)
            } else {
                bail!("give one of --to-earliest, --to-latest, --to-offset, --shift-by, --to-datetime");
            };
            let mut client = coordinator_client(&connect, &group)?;
            let description = client.describe_group(&group)?;
            if !matches!(description.state.as_str(), "Empty" | "Dead") {
                bail!(
                    "offsets of group '{group}' can only be reset while it is inactive; it is {} \
                     with {} member(s): stop its consumers first",
                    description.state,
                    description.members.len()
                );
            }
            let committed = client.committed_offsets(&group)?;
            let scope = if all_topics {
                committed_scope(&committed)
            } else {
                topics
            };
            if scope.is_empty() {
                bail!("group '{group}' has no committed offsets; name the topics with --topic");
            }
            let plan = plan_reset(&mut client, &scope, &committed, to)?;
            if execute {
                let offsets: Vec<OffsetToCommit> = plan
                    .iter()
                    .map(|p| OffsetToCommit {
                        topic: p.topic.clone(),
                        partition: p.partition,
                        offset: p.new,
                        metadata: None,
                    })
                    .collect();
                client.commit_offsets(&group, &offsets)?;
            }
            print!("{}", plan_text(&plan));
            if execute {
                println!("committed new offsets of {} partition(s)", plan.len());
            } else {
                println!("dry run: nothing committed (add --execute to commit)");
            }
        }
    }
    Ok(())
}

/// A client connected to `group`'s coordinator.
fn coordinator_client(connect: &ConnectArgs, group: &str) -> anyhow::Result<Client> {
    let mut client = connect.connect()?;
    let coordinator = client.find_group_coordinator(group)?;
    let address = coordinator.address();
    if address == connect.bootstrap {
        return Ok(client);
    }
    ConnectArgs { bootstrap: address }
        .connect()
        .with_context(|| format!("the coordinator of group '{group}' is unreachable"))
}

/// Log end offsets of every partition the group has assigned or committed, by topic.
/// A topic that no longer exists is left out (its rows show "-").
fn log_end_offsets(
    client: &mut Client,
    description: &GroupDescription,
    committed: &[CommittedOffset],
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let mut wanted: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for c in committed {
        wanted
            .entry(c.topic.clone())
            .or_default()
            .insert(c.partition);
    }
    for m in &description.members {
        if let Assignment::Partitions(parts) = &m.assignment {
            for (topic, ps) in parts {
                wanted.entry(topic.clone()).or_default().extend(ps);
            }
        }
    }
    let mut out = BTreeMap::new();
    for (topic, partitions) in wanted {
        let partitions: Vec<i32> = partitions.into_iter().collect();
        match client.list_offsets(&topic, &partitions, OffsetSpec::Latest) {
            Ok(ends) => {
                for (p, end) in ends {
                    out.insert((topic.clone(), p), end);
                }
            }
            Err(e) if e.kafka_code().is_some() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// The `group describe` report: `Key: value` lines about the group, then one row per
/// partition it has assigned or committed (lag = log end - committed), then its members.
fn describe_text(
    description: &GroupDescription,
    committed: &[CommittedOffset],
    log_ends: &BTreeMap<(String, i32), i64>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Group: {}", description.group_id);
    let _ = writeln!(s, "State: {}", description.state);
    let _ = writeln!(
        s,
        "ProtocolType: {}",
        display_protocol_type(&description.protocol_type)
    );
    if !description.protocol.is_empty() {
        let _ = writeln!(s, "Protocol: {}", description.protocol);
    }
    let _ = writeln!(s, "Members: {}", description.members.len());

    let mut owner: BTreeMap<(String, i32), usize> = BTreeMap::new();
    for (i, m) in description.members.iter().enumerate() {
        if let Assignment::Partitions(parts) = &m.assignment {
            for (topic, ps) in parts {
                for p in ps {
                    owner.insert((topic.clone(), *p), i);
                }
            }
        }
    }
    let mut keys: BTreeSet<(String, i32)> = owner.keys().cloned().collect();
    keys.extend(committed.iter().map(|c| (c.topic.clone(), c.partition)));
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|key| {
            let current = committed
                .iter()
                .find(|c| c.topic == key.0 && c.partition == key.1)
                .map(|c| c.offset);
            let end = log_ends.get(key).copied();
            let lag = match (current, end) {
                (Some(c), Some(e)) => (e - c).max(0).to_string(),
                _ => "-".to_owned(),
            };
            let member = owner.get(key).map(|&i| &description.members[i]);
            vec![
                key.0.clone(),
                key.1.to_string(),
                current.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                end.map_or_else(|| "-".to_owned(), |e| e.to_string()),
                lag,
                member.map_or_else(|| "-".to_owned(), |m| m.member_id.clone()),
                member.map_or_else(|| "-".to_owned(), |m| or_dash(&m.client_host)),
                member.map_or_else(|| "-".to_owned(), |m| or_dash(&m.client_id)),
            ]
        })
        .collect();
    let _ = writeln!(s);
    s.push_str(&table(
        &[
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
        ],
        &rows,
    ));
    if !description.members.is_empty() {
        let _ = writeln!(s);
        let rows: Vec<Vec<String>> = description
            .members
            .iter()
            .map(|m| {
                vec![
                    m.member_id.clone(),
                    m.instance_id.clone().unwrap_or_else(|| "-".to_owned()),
                    or_dash(&m.client_host),
                    or_dash(&m.client_id),
                    assignment_text(&m.assignment),
                ]
            })
            .collect();
        s.push_str(&table(
            &[
                "CONSUMER-ID",
                "INSTANCE-ID",
                "HOST",
                "CLIENT-ID",
                "ASSIGNMENT",
            ],
            &rows,
        ));
    }
    s
}

fn assignment_text(assignment: &Assignment) -> String {
    match assignment {
        Assignment::Partitions(parts) if parts.is_empty() => "-".to_owned(),
        Assignment::Partitions(parts) => parts
            .iter()
            .map(|(topic, ps)| {
                let ps: Vec<String> = ps.iter().map(i32::to_string).collect();
                format!("{topic}:{}", ps.join(","))
            })
            .collect::<Vec<_>>()
            .join(" "),
        Assignment::Opaque(bytes) => format!("({} bytes)", bytes.len()),
    }
}

fn display_protocol_type(protocol_type: &str) -> String {
    or_dash(protocol_type)
}

/// A table cell: "-" for an empty value, so that columns stay countable.
fn or_dash(value: &str) -> String {
    if value.is_empty() {
        "-".to_owned()
    } else {
        value.to_owned()
    }
}

/// Every topic the group has committed offsets for, with exactly those partitions.
fn committed_scope(committed: &[CommittedOffset]) -> Vec<TopicScope> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for c in committed {
        by_topic.entry(&c.topic).or_default().push(c.partition);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| TopicScope {
            topic: topic.to_owned(),
            partitions: Some(partitions),
        })
        .collect()
}

/// Works out the new offset of every partition in `scope`.
fn plan_reset(
    client: &mut Client,
    scope: &[TopicScope],
    committed: &[CommittedOffset],
    to: ResetTo,
) -> anyhow::Result<Vec<PlannedReset>> {
    let mut plan = Vec::new();
    for s in scope {
        let metadata = client.topic_metadata(&s.topic)?;
        let all: Vec<i32> = metadata.partitions.iter().map(|p| p.index).collect();
        let partitions = match &s.partitions {
            None => all,
            Some(ps) => {
                if let Some(p) = ps.iter().find(|p| !all.contains(p)) {
                    bail!(
                        "topic '{}' has no partition {p} (it has {})",
                        s.topic,
                        all.len()
                    );
                }
                ps.clone()
            }
        };
        let starts = client.list_offsets(&s.topic, &partitions, OffsetSpec::Earliest)?;
        let ends = client.list_offsets(&s.topic, &partitions, OffsetSpec::Latest)?;
        let by_time = match to {
            ResetTo::Time(t) => {
                Some(client.list_offsets(&s.topic, &partitions, OffsetSpec::Timestamp(t))?)
            }
            _ => None,
        };
        for (i, &partition) in partitions.iter().enumerate() {
            let (start, end) = (starts[i].1, ends[i].1);
            let current = committed
                .iter()
                .find(|c| c.topic == s.topic && c.partition == partition)
                .map(|c| c.offset);
            let wanted = match to {
                ResetTo::Earliest => start,
                ResetTo::Latest => end,
                ResetTo::Offset(o) => o,
                ResetTo::Shift(n) => match current {
                    Some(c) => c.saturating_add(n),
                    None => bail!(
                        "{}-{partition} has no committed offset to shift from",
                        s.topic
                    ),
                },
                // No record at or after the time: the log end, as Kafka's tool does.
                ResetTo::Time(_) => match by_time.as_ref().map(|v| v[i].1) {
                    Some(o) if o >= 0 => o,
                    _ => end,
                },
            };
            plan.push(PlannedReset {
                topic: s.topic.clone(),
                partition,
                current,
                new: wanted.clamp(start, end.max(start)),
            });
        }
    }
    Ok(plan)
}

fn plan_text(plan: &[PlannedReset]) -> String {
    let rows: Vec<Vec<String>> = plan
        .iter()
        .map(|p| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                p.current.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                p.new.to_string(),
            ]
        })
        .collect();
    table(
        &["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"],
        &rows,
    )
}

/// Parses `TOPIC` or `TOPIC:P1,P2,...`.
pub fn parse_topic_scope(s: &str) -> Result<TopicScope, String> {
    let (topic, partitions) = match s.split_once(':') {
        None => (s, None),
        Some((topic, list)) => {
            let ps: Result<Vec<i32>, _> = list.split(',').map(|p| p.trim().parse()).collect();
            match ps {
                Ok(ps) if !ps.is_empty() && ps.iter().all(|p| *p >= 0) => (topic, Some(ps)),
                _ => {
                    return Err(format!(
                        "expected TOPIC:P1,P2,... with partition numbers, got {s:?}"
                    ))
                }
            }
        }
    };
    if topic.is_empty() {
        return Err(format!("no topic name in {s:?}"));
    }
    Ok(TopicScope {
        topic: topic.to_owned(),
        partitions,
    })
}

/// Parses milliseconds since the epoch, or an ISO-8601 date-time
/// `YYYY-MM-DDTHH:MM:SS[.fraction][Z|+HH:MM|-HH:MM]` (UTC without a zone).
pub fn parse_datetime_ms(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || format!("expected milliseconds or YYYY-MM-DDTHH:MM:SS[.mmm][Z|+HH:MM], got {s:?}");
    let (date, rest) = s.split_once(['T', ' ']).ok_or_else(bad)?;
    let date: Vec<&str> = date.split('-').collect();
    let [year, month, day] = date.as_slice() else {
        return Err(bad());
    };
    let num = |v: &str, lo: i64, hi: i64| -> Result<i64, String> {
        match v.parse::<i64>() {
            Ok(n) if (lo..=hi).contains(&n) && !v.starts_with(['+', '-']) => Ok(n),
            _ => Err(bad()),
        }
    };
    let (year, month, day) = (num(year, 1970, 9999)?, num(month, 1, 12)?, num(day, 1, 31)?);
    // The zone: "Z", "+HH:MM", "-HH:MM" or nothing (UTC).
    let (time, offset_minutes) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else if let Some(pos) = rest.rfind(['+', '-']) {
        let (t, zone) = rest.split_at(pos);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..].split_once(':').ok_or_else(bad)?;
        (t, sign * (num(h, 0, 23)? * 60 + num(m, 0, 59)?))
    } else {
        (rest, 0)
    };
    let (time, fraction) = match time.split_once('.') {
        Some((t, f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            let millis: String = f.chars().chain("000".chars()).take(3).collect();
            (t, num(&millis, 0, 999)?)
        }
        Some(_) => return Err(bad()),
        None => (time, 0),
    };
    let hms: Vec<&str> = time.split(':').collect();
    let [h, m, sec] = hms.as_slice() else {
        return Err(bad());
    };
    let (h, m, sec) = (num(h, 0, 23)?, num(m, 0, 59)?, num(sec, 0, 60)?);
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + h * 3600 + m * 60 + sec - offset_minutes * 60;
    Ok(seconds * 1000 + fraction)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use sluice_client::GroupMember;

    use super::*;

    #[test]
    fn datetimes_parse_as_utc_milliseconds() {
        assert_eq!(parse_datetime_ms("1700000000123"), Ok(1_700_000_000_123));
        assert_eq!(parse_datetime_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_datetime_ms("1970-01-01T00:00:00"), Ok(0));
        // 2026-11-22T10:30:15.250Z, checked against `date -u -d ... +%s`.
        assert_eq!(
            parse_datetime_ms("2026-11-22T10:30:15.250Z"),
            Ok(1_795_343_415_250)
        );
        assert_eq!(
            parse_datetime_ms("2026-11-22T12:30:15.25+02:00"),
            Ok(1_795_343_415_250)
        );
        assert_eq!(
            parse_datetime_ms("2026-11-22T05:30:15.250-05:00"),
            Ok(1_795_343_415_250)
        );
        assert_eq!(
            parse_datetime_ms("2000-02-29T00:00:00Z"),
            Ok(951_782_400_000)
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00",
            "2026-11-22",
            "2026-11-22T25:00:00",
        ] {
            assert!(parse_datetime_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topic_scopes_name_a_topic_and_maybe_partitions() {
        assert_eq!(
            parse_topic_scope("orders"),
            Ok(TopicScope {
                topic: "orders".into(),
                partitions: None
            })
        );
        assert_eq!(
            parse_topic_scope("orders:0,2"),
            Ok(TopicScope {
                topic: "orders".into(),
                partitions: Some(vec![0, 2])
            })
        );
        for bad in ["orders:", "orders:x", ":1", "orders:-1"] {
            assert!(parse_topic_scope(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn describe_shows_lag_per_partition_and_its_owner() {
        let description = GroupDescription {
            group_id: "g".into(),
            state: "Stable".into(),
            protocol_type: "consumer".into(),
            protocol: "range".into(),
            members: vec![GroupMember {
                member_id: "m-1".into(),
                instance_id: None,
                client_id: "app".into(),
                client_host: "/127.0.0.1".into(),
                assignment: Assignment::Partitions(vec![("t".into(), vec![0, 1])]),
            }],
        };
        let committed = vec![CommittedOffset {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            leader_epoch: -1,
            metadata: None,
        }];
        let ends = BTreeMap::from([(("t".to_owned(), 0), 10), (("t".to_owned(), 1), 4)]);
        let text = describe_text(&description, &committed, &ends);
        assert!(text.starts_with("Group: g\nState: Stable\n"), "{text}");
        assert!(text.contains("Protocol: range\n"));
        let rows: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| l.starts_with("t "))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            vec![
                vec!["t", "0", "7", "10", "3", "m-1", "/127.0.0.1", "app"],
                vec!["t", "1", "-", "4", "-", "m-1", "/127.0.0.1", "app"],
            ]
        );
        assert!(text.contains("t:0,1"), "{text}");
    }
}
