//! Run set-up over the control connection: version negotiation, the topic, start offsets.
//!
//! Before any load starts, the main thread opens one connection on a short-lived executor,
//! learns the broker's API versions, makes sure the topic exists with the requested number of
//! partitions (CreateTopics when served, else Metadata auto-creation), waits until every
//! partition has a leader, and looks up the offsets consumers start from.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use sluice_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use sluice_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use sluice_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use sluice_protocol::{Request, Response};

use crate::client::{Conn, Versions};

/// Kafka error codes the set-up reacts to.
const TOPIC_ALREADY_EXISTS: i16 = 36;
const LEADER_NOT_AVAILABLE: i16 = 5;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

/// ListOffsets timestamps meaning "log end" and "log start".
pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;

/// How long to wait for a new topic's partitions to get leaders.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the load needs to know about the broker and the topic.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Address every load connection goes to (the partitions' leader).
    pub addr: String,
    pub versions: Versions,
    /// Partition ids of the topic used by the run, ascending.
    pub partitions: Vec<i32>,
    /// Whether this run created the topic.
    pub created: bool,
}

/// Negotiates versions and makes sure `topic` exists with `partitions` partitions.
pub async fn prepare(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    replication_factor: i16,
) -> Result<(Conn, Setup)> {
    let mut conn = Conn::connect(bootstrap).await?;
    let versions = Versions::choose(&conn.api_versions().await?)?;
    let wanted = i32::try_from(partitions).map_err(|_| anyhow!("too many partitions"))?;

    let mut created = false;
    let first = metadata(
        &mut conn,
        &versions,
        topic,
        versions.create_topics.is_none(),
    )
    .await?;
    if first.error_code == UNKNOWN_TOPIC_OR_PARTITION || first.error_code == LEADER_NOT_AVAILABLE {
        if let Some(v) = versions.create_topics {
            create_topic(&mut conn, v, topic, wanted, replication_factor).await?;
            created = true;
        }
    } else if first.error_code != 0 {
        bail!(
            "Metadata for {topic:?} failed with error code {}",
            first.error_code
        );
    }

    // Wait until every partition is known and has a leader.
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    let meta = loop {
        let m = metadata(
            &mut conn,
            &versions,
            topic,
            versions.create_topics.is_none(),
        )
        .await?;
        let ready = m.error_code == 0
            && !m.partitions.is_empty()
            && m.partitions
                .iter()
                .all(|p| p.error_code == 0 && p.leader >= 0);
        if ready {
            break m;
        }
        if Instant::now() > deadline {
            bail!(
                "topic {topic:?} has no leader for every partition after {:?} (error code {})",
                TOPIC_READY_TIMEOUT,
                m.error_code
            );
        }
        glommio::timer::sleep(Duration::from_millis(50)).await;
    };
    if meta.partitions.len() != partitions as usize {
        bail!(
            "topic {topic:?} has {} partitions, the run asks for {partitions}{}",
            meta.partitions.len(),
            if versions.create_topics.is_none() {
                " (the broker does not serve CreateTopics; auto-creation used its default)"
            } else {
                ""
            }
        );
    }
    let leader = meta.partitions[0].leader;
    if meta.partitions.iter().any(|p| p.leader != leader) {
        bail!(
            "the partitions of {topic:?} have different leaders; only one broker is driven per run"
        );
    }
    let addr = meta
        .brokers
        .get(&leader)
        .cloned()
        .unwrap_or_else(|| bootstrap.to_owned());
    let mut ids: Vec<i32> = meta.partitions.iter().map(|p| p.id).collect();
    ids.sort_unstable();
    Ok((
        conn,
        Setup {
            addr,
            versions,
            partitions: ids,
            created,
        },
    ))
}

/// Offsets of `partitions` at `timestamp` (`LATEST` or `EARLIEST`); `None` when the broker
/// does not serve ListOffsets.
pub async fn list_offsets(
    conn: &mut Conn,
    versions: &Versions,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<Option<HashMap<i32, i64>>> {
    let Some(version) = versions.list_offsets else {
        return Ok(None);
    };
    let request = Request::ListOffsets(ListOffsetsRequest {
        replica_id: -1,
        topics: vec![ListOffsetsTopic {
            name: topic.to_owned(),
            partitions: partitions
                .iter()
                .map(|&p| ListOffsetsPartition {
                    partition_index: p,
                    timestamp,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let Response::ListOffsets(r) = conn.call(version, request).await? else {
        bail!("ListOffsets answered with another API's response");
    };
    let mut out = HashMap::new();
    for t in &r.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                bail!(
                    "ListOffsets {}/{} failed with error code {}",
                    t.name,
                    p.partition_index,
                    p.error_code
                );
            }
            out.insert(p.partition_index, p.offset);
        }
    }
    Ok(Some(out))
}

struct PartitionMeta {
    id: i32,
    leader: i32,
    error_code: i16,
}

struct TopicMeta {
    error_code: i16,
    partitions: Vec<PartitionMeta>,
    brokers: HashMap<i32, String>,
}

async fn metadata(
    conn: &mut Conn,
    versions: &Versions,
    topic: &str,
    auto_create: bool,
) -> Result<TopicMeta> {
    let request = Request::Metadata(MetadataRequest {
        topics: Some(vec![MetadataRequestTopic {
            name: Some(topic.to_owned()),
            ..Default::default()
        }]),
        allow_auto_topic_creation: auto_create,
        ..Default::default()
    });
    let Response::Metadata(r) = conn.call(versions.metadata, request).await? else {
        bail!("Metadata answered with another API's response");
    };
    let brokers = r
        .brokers
        .iter()
        .map(|b| (b.node_id, format!("{}:{}", b.host, b.port)))
        .collect();
    let t = r
        .topics
        .iter()
        .find(|t| t.name.as_deref() == Some(topic))
        .ok_or_else(|| anyhow!("Metadata did not mention topic {topic:?}"))?;
    Ok(TopicMeta {
        error_code: t.error_code,
        partitions: t
            .partitions
            .iter()
            .map(|p| PartitionMeta {
                id: p.partition_index,
                leader: p.leader_id,
                error_code: p.error_code,
            })
            .collect(),
        brokers,
    })
}

async fn create_topic(
    conn: &mut Conn,
    version: i16,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
) -> Result<()> {
    let request = Request::CreateTopics(CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: topic.to_owned(),
            num_partitions: partitions,
            replication_factor,
            ..Default::default()
        }],
        timeout_ms: 60_000,
        ..Default::default()
    });
    let Response::CreateTopics(r) = conn.call(version, request).await? else {
        bail!("CreateTopics answered with another API's response");
    };
    for t in &r.topics {
        if t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS {
            bail!(
                "creating topic {:?} failed with error code {}: {}",
                t.name,
                t.error_code,
                t.error_message.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
}
