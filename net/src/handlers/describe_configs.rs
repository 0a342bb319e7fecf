//! DescribeConfigs (key 32): the configs of topics (resource type 2) and of this broker
//! (resource type 4), with sources, synonyms, types and documentation on request.
//!
//! A topic's overrides are reported as DYNAMIC_TOPIC_CONFIG and every other topic config as
//! DEFAULT_CONFIG with its broker-level synonym; a broker resource lists the broker's own
//! settings (see `broker_configs`). Each resource is answered on its own: an unknown topic is
//! UNKNOWN_TOPIC_OR_PARTITION for that resource only. Reads this shard's topics snapshot; runs
//! on the connection's shard.

use std::rc::Rc;

use sluice_protocol::messages::describe_configs_request::{
    DescribeConfigsRequest, DescribeConfigsResource,
};
use sluice_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
    DescribeConfigsSynonym,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::broker_configs::{check_broker_resource, describe_broker_configs};
use crate::config::BrokerConfig;
use crate::errors;
use crate::topic_configs::{describe_topic_configs, ConfigEntry};
use crate::topics::{validate_topic_name, TopicError, TopicsSnapshot};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 4);

/// Kafka's config resource types.
pub mod resource_type {
    pub const TOPIC: i8 = 2;
    pub const BROKER: i8 = 4;
    pub const BROKER_LOGGER: i8 = 8;
}

/// What the request asks to be included with each config.
#[derive(Clone, Copy, Debug)]
struct Include {
    synonyms: bool,
    documentation: bool,
    /// `is_default` exists only in v0 (later versions report the source instead).
    is_default: bool,
}

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let snapshot = ctx.state().cluster.topics();
    let config = ctx.state().config.clone();
    let include = Include {
        synonyms: request.include_synonyms,
        documentation: request.include_documentation,
        is_default: header.request_api_version == 0,
    };
    let results = request
        .resources
        .into_iter()
        .map(|r| describe(&snapshot, &config, r, include))
        .collect();
    DescribeConfigsResponse {
        throttle_time_ms: 0,
        results,
        ..DescribeConfigsResponse::default()
    }
}

fn describe(
    snapshot: &TopicsSnapshot,
    config: &BrokerConfig,
    resource: DescribeConfigsResource,
    include: Include,
) -> DescribeConfigsResult {
    let entries = match resource.resource_type {
        resource_type::TOPIC => topic_entries(snapshot, &resource.resource_name)
            .map_err(|e| (e.kafka_code(), e.to_string())),
        resource_type::BROKER => match check_broker_resource(config, &resource.resource_name) {
            Ok(true) => Ok(describe_broker_configs(config)),
            // The cluster-wide default resource holds only dynamic defaults, and Sluice has
            // none.
            Ok(false) => Ok(Vec::new()),
            Err(message) => Err((errors::INVALID_REQUEST, message)),
        },
        resource_type::BROKER_LOGGER => Err((
            errors::INVALID_REQUEST,
            "describing broker loggers is not supported; the log level is the broker's \
             --log-level setting"
                .to_string(),
        )),
        other => Err((
            errors::INVALID_REQUEST,
            format!("unsupported config resource type {other}"),
        )),
    };
    let (error_code, error_message, configs) = match entries {
        Ok(entries) => {
            let configs = entries
                .into_iter()
                .filter(|e| {
                    resource
                        .configuration_keys
                        .as_ref()
                        .is_none_or(|keys| keys.contains(&e.name))
                })
                .map(|e| to_wire(e, include))
                .collect();
            (errors::NONE, None, configs)
        }
        Err((code, message)) => (code, Some(message), Vec::new()),
    };
    DescribeConfigsResult {
        error_code,
        error_message,
        resource_type: resource.resource_type,
        resource_name: resource.resource_name,
        configs,
        ..DescribeConfigsResult::default()
    }
}

fn topic_entries(snapshot: &TopicsSnapshot, name: &str) -> Result<Vec<ConfigEntry>, TopicError> {
    match snapshot.topic(name) {
        Some(meta) => Ok(describe_topic_configs(&meta.configs)),
        None => {
            validate_topic_name(name)?;
            Err(TopicError::UnknownTopic(name.to_string()))
        }
    }
}

fn to_wire(e: ConfigEntry, include: Include) -> DescribeConfigsResourceResult {
    let is_default = include.is_default && e.is_default();
    DescribeConfigsResourceResult {
        name: e.name,
        value: e.value,
        read_only: e.read_only,
        is_default,
        config_source: e.source,
        is_sensitive: e.sensitive,
        synonyms: if include.synonyms {
            e.synonyms
                .into_iter()
                .map(|s| DescribeConfigsSynonym {
                    name: s.name,
                    value: s.value,
                    source: s.source,
                    ..DescribeConfigsSynonym::default()
                })
                .collect()
        } else {
            Vec::new()
        },
        config_type: e.config_type,
        documentation: include.documentation.then(|| e.doc.to_string()),
        ..DescribeConfigsResourceResult::default()
    }
}
