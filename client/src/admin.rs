//! Topic administration: Metadata, CreateTopics, DeleteTopics, CreatePartitions,
//! DescribeConfigs and IncrementalAlterConfigs, each as one blocking call that returns plain
//! data or a [`ClientError`] carrying the broker's error code for that topic. Each request
//! names one topic so that a failure is about exactly that topic. Runs on the client's thread.

use sluice_protocol::messages::create_partitions_request::{
    CreatePartitionsRequest, CreatePartitionsTopic,
};
use sluice_protocol::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
};
use sluice_protocol::messages::delete_topics_request::{DeleteTopicState, DeleteTopicsRequest};
use sluice_protocol::messages::describe_configs_request::{
    DescribeConfigsRequest, DescribeConfigsResource,
};
use sluice_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig, IncrementalAlterConfigsRequest,
};
use sluice_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use sluice_protocol::messages::metadata_response::MetadataResponse;
use sluice_protocol::{ApiKey, Request, Response, Uuid};

use crate::connection::{missing, Client};
use crate::error::{check, ClientError, Result};

/// Kafka's resource type for topics in DescribeConfigs/IncrementalAlterConfigs.
pub const RESOURCE_TYPE_TOPIC: i8 = 2;

/// How long the broker may take over an admin request, sent as the request's `timeout_ms`.
const ADMIN_TIMEOUT_MS: i32 = 30_000;

/// The cluster as one Metadata response describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterMetadata {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: Vec<BrokerMetadata>,
    pub topics: Vec<TopicMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMetadata {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// One topic in a Metadata response. `error_code` is the topic's own error (for example
/// UNKNOWN_TOPIC_OR_PARTITION when it was asked for by name and does not exist).
#[derive(Debug, Clone, PartialEq)]
pub struct TopicMetadata {
    pub name: String,
    /// The topic id, `Uuid::ZERO` before Metadata v10.
    pub id: Uuid,
    pub internal: bool,
    pub error_code: i16,
    /// Sorted by partition index.
    pub partitions: Vec<PartitionMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub index: i32,
    pub error_code: i16,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// A topic to create. `partitions` and `replication_factor` of -1 ask for the broker's
/// defaults (`num.partitions`, `default.replication.factor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
    pub validate_only: bool,
}

impl NewTopic {
    pub fn new(name: impl Into<String>) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions: -1,
            replication_factor: -1,
            configs: Vec::new(),
            validate_only: false,
        }
    }
}

/// Where a config value comes from, as DescribeConfigs reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    Unknown,
    Topic,
    DynamicBroker,
    DynamicDefaultBroker,
    StaticBroker,
    Default,
    Other(i8),
}

impl ConfigSource {
    pub fn from_wire(source: i8) -> ConfigSource {
        match source {
            -1 | 0 => ConfigSource::Unknown,
            1 => ConfigSource::Topic,
            2 => ConfigSource::DynamicBroker,
            3 => ConfigSource::DynamicDefaultBroker,
            4 => ConfigSource::StaticBroker,
            5 => ConfigSource::Default,
            other => ConfigSource::Other(other),
        }
    }

    /// Short label for display ("topic", "default", ...).
    pub fn label(self) -> String {
        match self {
            ConfigSource::Unknown => "unknown".to_owned(),
            ConfigSource::Topic => "topic".to_owned(),
            ConfigSource::DynamicBroker => "dynamic broker".to_owned(),
            ConfigSource::DynamicDefaultBroker => "dynamic default broker".to_owned(),
            ConfigSource::StaticBroker => "static broker".to_owned(),
            ConfigSource::Default => "default".to_owned(),
            ConfigSource::Other(n) => format!("source {n}"),
        }
    }
}

/// One config of a topic as DescribeConfigs returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    /// `None` for sensitive values and for configs without a value.
    pub value: Option<String>,
    pub source: ConfigSource,
    pub read_only: bool,
    pub sensitive: bool,
    /// (name, value, source) in precedence order, when the broker sends synonyms.
    pub synonyms: Vec<(String, Option<String>, ConfigSource)>,
}

/// One change for IncrementalAlterConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterConfigOp {
    /// Sets the config on the topic.
    Set { name: String, value: String },
    /// Removes the topic's override, so the default applies again.
    Delete { name: String },
    /// Adds a value to a list config.
    Append { name: String, value: String },
    /// Removes a value from a list config.
    Subtract { name: String, value: String },
}

impl AlterConfigOp {
    fn to_wire(&self) -> AlterableConfig {
        let (name, op, value) = match self {
            AlterConfigOp::Set { name, value } => (name, 0, Some(value.clone())),
            AlterConfigOp::Delete { name } => (name, 1, None),
            AlterConfigOp::Append { name, value } => (name, 2, Some(value.clone())),
            AlterConfigOp::Subtract { name, value } => (name, 3, Some(value.clone())),
        };
        AlterableConfig {
            name: name.clone(),
            config_operation: op,
            value,
            ..AlterableConfig::default()
        }
    }
}

impl Client {
    /// Metadata for `topics` (`None` = every topic). Never asks the broker to auto-create.
    pub fn metadata(&mut self, topics: Option<&[&str]>) -> Result<ClusterMetadata> {
        self.metadata_with(topics, false)
    }

    /// Metadata for `topics`, letting the broker auto-create the named topics when
    /// `allow_auto_create` is set and its `auto.create.topics.enable` allows it (as producers
    /// ask).
    pub fn metadata_with(
        &mut self,
        topics: Option<&[&str]>,
        allow_auto_create: bool,
    ) -> Result<ClusterMetadata> {
        let request = MetadataRequest {
            topics: topics.map(|names| {
                names
                    .iter()
                    .map(|name| MetadataRequestTopic {
                        topic_id: Uuid::ZERO,
                        name: Some((*name).to_owned()),
                        ..MetadataRequestTopic::default()
                    })
                    .collect()
            }),
            allow_auto_topic_creation: allow_auto_create,
            ..MetadataRequest::default()
        };
        match self.call(Request::Metadata(request))? {
            Response::Metadata(r) => Ok(cluster_metadata(r)),
            _ => Err(missing("Metadata", "a Metadata body")),
        }
    }

    /// Metadata of one topic; an error if the broker reports one for it.
    pub fn topic_metadata(&mut self, topic: &str) -> Result<TopicMetadata> {
        let md = self.metadata(Some(&[topic]))?;
        let found = md
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| missing(&format!("metadata of topic '{topic}'"), "the topic"))?;
        check(found.error_code, None, || format!("topic '{topic}'"))?;
        Ok(found)
    }

    /// Creates one topic (or, with `validate_only`, only checks that it could be created).
    pub fn create_topic(&mut self, topic: &NewTopic) -> Result<()> {
        let request = CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: topic.name.clone(),
                num_partitions: topic.partitions,
                replication_factor: topic.replication_factor,
                assignments: Vec::new(),
                configs: topic
                    .configs
                    .iter()
                    .map(|(name, value)| CreatableTopicConfig {
                        name: name.clone(),
                        value: Some(value.clone()),
                        ..CreatableTopicConfig::default()
                    })
                    .collect(),
                ..CreatableTopic::default()
            }],
            timeout_ms: ADMIN_TIMEOUT_MS,
            validate_only: topic.validate_only,
            ..CreateTopicsRequest::default()
        };
        let context = || format!("create topic '{}'", topic.name);
        let Response::CreateTopics(r) = self.call(Request::CreateTopics(request))? else {
            return Err(missing(&context(), "a CreateTopics body"));
        };
        let result = r
            .topics
            .iter()
            .find(|t| t.name == topic.name)
            .ok_or_else(|| missing(&context(), "the topic's result"))?;
        check(result.error_code, result.error_message.as_deref(), context)
    }

    /// Deletes one topic by name.
    pub fn delete_topic(&mut self, name: &str) -> Result<()> {
        let version = self.version(ApiKey::DeleteTopics)?;
        // v6 names topics in `topics` (by name or id); earlier versions in `topic_names`.
        let request = if version >= 6 {
            DeleteTopicsRequest {
                topics: vec![DeleteTopicState {
                    name: Some(name.to_owned()),
                    topic_id: Uuid::ZERO,
                    ..DeleteTopicState::default()
                }],
                timeout_ms: ADMIN_TIMEOUT_MS,
                ..DeleteTopicsRequest::default()
            }
        } else {
            DeleteTopicsRequest {
                topic_names: vec![name.to_owned()],
                timeout_ms: ADMIN_TIMEOUT_MS,
                ..DeleteTopicsRequest::default()
            }
        };
        let context = || format!("delete topic '{name}'");
        let Response::DeleteTopics(r) = self.call(Request::DeleteTopics(request))? else {
            return Err(missing(&context(), "a DeleteTopics body"));
        };
        let result = r
            .responses
            .iter()
            .find(|t| t.name.as_deref() == Some(name))
            .or(r.responses.first())
            .ok_or_else(|| missing(&context(), "the topic's result"))?;
        check(result.error_code, result.error_message.as_deref(), context)
    }

    /// Grows a topic to `total` partitions.
    pub fn create_partitions(&mut self, name: &str, total: i32) -> Result<()> {
        let request = CreatePartitionsRequest {
            topics: vec![CreatePartitionsTopic {
                name: name.to_owned(),
                count: total,
                assignments: None,
                ..CreatePartitionsTopic::default()
            }],
            timeout_ms: ADMIN_TIMEOUT_MS,
            validate_only: false,
            ..CreatePartitionsRequest::default()
        };
        let context = || format!("add partitions to topic '{name}'");
        let Response::CreatePartitions(r) = self.call(Request::CreatePartitions(request))? else {
            return Err(missing(&context(), "a CreatePartitions body"));
        };
        let result = r
            .results
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| missing(&context(), "the topic's result"))?;
        check(result.error_code, result.error_message.as_deref(), context)
    }

    /// Every config of a topic, with its source, sorted by name.
    pub fn describe_topic_configs(&mut self, name: &str) -> Result<Vec<ConfigEntry>> {
        let request = DescribeConfigsRequest {
            resources: vec![DescribeConfigsResource {
                resource_type: RESOURCE_TYPE_TOPIC,
                resource_name: name.to_owned(),
                configuration_keys: None,
                ..DescribeConfigsResource::default()
            }],
            include_synonyms: true,
            include_documentation: false,
            ..DescribeConfigsRequest::default()
        };
        let context = || format!("describe configs of topic '{name}'");
        let Response::DescribeConfigs(r) = self.call(Request::DescribeConfigs(request))? else {
            return Err(missing(&context(), "a DescribeConfigs body"));
        };
        let result = r
            .results
            .into_iter()
            .find(|t| t.resource_name == name)
            .ok_or_else(|| missing(&context(), "the topic's result"))?;
        check(result.error_code, result.error_message.as_deref(), context)?;
        let mut entries: Vec<ConfigEntry> = result
            .configs
            .into_iter()
            .map(|c| {
                // v0 has no source field; `is_default` is all it says.
                let source = if c.config_source == -1 && c.is_default {
                    ConfigSource::Default
                } else {
                    ConfigSource::from_wire(c.config_source)
                };
                ConfigEntry {
                    name: c.name,
                    value: c.value,
                    source,
                    read_only: c.read_only,
                    sensitive: c.is_sensitive,
                    synonyms: c
                        .synonyms
                        .into_iter()
                        .map(|s| (s.name, s.value, ConfigSource::from_wire(s.source)))
                        .collect(),
                }
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Applies config changes to a topic in one IncrementalAlterConfigs request (atomically,
    /// as Kafka applies one resource's changes).
    pub fn alter_topic_configs(&mut self, name: &str, ops: &[AlterConfigOp]) -> Result<()> {
        if ops.is_empty() {
            return Err(ClientError::InvalidArgument(
                "no config changes given".to_owned(),
            ));
        }
        let request = IncrementalAlterConfigsRequest {
            resources: vec![AlterConfigsResource {
                resource_type: RESOURCE_TYPE_TOPIC,
                resource_name: name.to_owned(),
                configs: ops.iter().map(AlterConfigOp::to_wire).collect(),
                ..AlterConfigsResource::default()
            }],
            validate_only: false,
            ..IncrementalAlterConfigsRequest::default()
        };
        let context = || format!("alter configs of topic '{name}'");
        let Response::IncrementalAlterConfigs(r) =
            self.call(Request::IncrementalAlterConfigs(request))?
        else {
            return Err(missing(&context(), "an IncrementalAlterConfigs body"));
        };
        let result = r
            .responses
            .iter()
            .find(|t| t.resource_name == name)
            .ok_or_else(|| missing(&context(), "the topic's result"))?;
        check(result.error_code, result.error_message.as_deref(), context)
    }
}

fn cluster_metadata(r: MetadataResponse) -> ClusterMetadata {
    let mut topics: Vec<TopicMetadata> = r
        .topics
        .into_iter()
        .map(|t| {
            let mut partitions: Vec<PartitionMetadata> = t
                .partitions
                .into_iter()
                .map(|p| PartitionMetadata {
                    index: p.partition_index,
                    error_code: p.error_code,
                    leader: p.leader_id,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes,
                    isr: p.isr_nodes,
                })
                .collect();
            partitions.sort_by_key(|p| p.index);
            TopicMetadata {
                name: t.name.unwrap_or_default(),
                id: t.topic_id,
                internal: t.is_internal,
                error_code: t.error_code,
                partitions,
            }
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    ClusterMetadata {
        cluster_id: r.cluster_id,
        controller_id: r.controller_id,
        brokers: r
            .brokers
            .into_iter()
            .map(|b| BrokerMetadata {
                node_id: b.node_id,
                host: b.host,
                port: b.port,
                rack: b.rack,
            })
            .collect(),
        topics,
    }
}

/// Formats a topic id as Kafka prints them: URL-safe base64 without padding (22 characters).
pub fn topic_id_string(id: &Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = &id.0;
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let b0 = u32::from(chunk[0]);
        let b1 = chunk.get(1).copied().map_or(0, u32::from);
        let b2 = chunk.get(2).copied().map_or(0, u32::from);
        let n = (b0 << 16) | (b1 << 8) | b2;
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let index = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_print_as_22_url_safe_base64_characters() {
        assert_eq!(topic_id_string(&Uuid::ZERO), "AAAAAAAAAAAAAAAAAAAAAA");
        let id = Uuid([0xff; 16]);
        assert_eq!(topic_id_string(&id), "_____________________w");
        let mut bytes = [0u8; 16];
        bytes[0] = 0xfb;
        bytes[1] = 0xef;
        assert_eq!(&topic_id_string(&Uuid(bytes))[..3], "--8");
    }

    #[test]
    fn alter_ops_use_kafka_operation_codes() {
        let set = AlterConfigOp::Set {
            name: "retention.ms".into(),
            value: "1000".into(),
        }
        .to_wire();
        assert_eq!(
            (set.config_operation, set.value.as_deref()),
            (0, Some("1000"))
        );
        let delete = AlterConfigOp::Delete {
            name: "retention.ms".into(),
        }
        .to_wire();
        assert_eq!((delete.config_operation, delete.value), (1, None));
    }

    #[test]
    fn config_sources_follow_kafka_numbering() {
        assert_eq!(ConfigSource::from_wire(1), ConfigSource::Topic);
        assert_eq!(ConfigSource::from_wire(5), ConfigSource::Default);
        assert_eq!(ConfigSource::from_wire(4).label(), "static broker");
        assert_eq!(ConfigSource::from_wire(-1), ConfigSource::Unknown);
    }
}
