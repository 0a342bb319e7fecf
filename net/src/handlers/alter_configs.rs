//! AlterConfigs (key 33): replaces all config overrides of a resource with the given set.
//!
//! For a topic, the request's configs become the topic's complete set of overrides (keys not
//! given return to their defaults), checked as a whole: one invalid value refuses the resource
//! with INVALID_CONFIG and changes nothing. The change is persisted on the control shard and
//! published; every shard hands the topic's open partitions the new log settings before
//! the response is sent, so the change is in effect when the client hears of it. Broker
//! resources are refused with a message (no dynamic broker configs). This file also holds the
//! topic-change path IncrementalAlterConfigs shares. Runs on the connection's shard.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use sluice_protocol::messages::alter_configs_request::{AlterConfigsRequest, AlterConfigsResource};
use sluice_protocol::messages::alter_configs_response::{
    AlterConfigsResourceResponse, AlterConfigsResponse,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::broker_configs::{check_broker_resource, dynamic_broker_config_refusal};
use crate::cluster;
use crate::config::BrokerConfig;
use crate::errors;
use crate::handlers::describe_configs::resource_type;
use crate::handlers::incremental_alter_configs::{merge, ConfigOp};
use crate::topics::{log_config_for, validate_topic_name, TopicError};

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 2);

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    _header: &RequestHeader,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let duplicates = duplicate_resources(
        request
            .resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let key = (resource.resource_type, resource.resource_name.clone());
        let outcome = if duplicates.contains(&key) {
            Err((
                errors::INVALID_REQUEST,
                "the resource appears more than once in the request".to_string(),
            ))
        } else {
            alter(ctx, &resource, request.validate_only).await
        };
        let (error_code, error_message) = match outcome {
            Ok(()) => (errors::NONE, None),
            Err((code, message)) => (code, Some(message)),
        };
        responses.push(AlterConfigsResourceResponse {
            error_code,
            error_message,
            resource_type: resource.resource_type,
            resource_name: resource.resource_name,
            ..AlterConfigsResourceResponse::default()
        });
    }
    AlterConfigsResponse {
        throttle_time_ms: 0,
        responses,
        ..AlterConfigsResponse::default()
    }
}

async fn alter(
    ctx: &Rc<BrokerCtx>,
    resource: &AlterConfigsResource,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    match resource.resource_type {
        resource_type::TOPIC => {
            let mut configs = BTreeMap::new();
            for c in &resource.configs {
                let Some(value) = &c.value else {
                    return Err((
                        errors::INVALID_REQUEST,
                        format!("config '{}' has a null value", c.name),
                    ));
                };
                if configs.insert(c.name.clone(), value.clone()).is_some() {
                    return Err((
                        errors::INVALID_REQUEST,
                        format!("config '{}' appears more than once", c.name),
                    ));
                }
            }
            change_topic_configs(
                ctx,
                resource.resource_name.clone(),
                TopicChange::Replace(configs),
                validate_only,
            )
            .await
            .map_err(|e| (e.kafka_code(), e.to_string()))
        }
        resource_type::BROKER => refuse_broker_change(
            &ctx.state().config,
            &resource.resource_name,
            resource.configs.is_empty(),
        ),
        other => Err((
            errors::INVALID_REQUEST,
            format!("unsupported config resource type {other}"),
        )),
    }
}

/// A change to a topic's config overrides.
#[derive(Debug, Clone)]
pub enum TopicChange {
    /// The new complete set of overrides (AlterConfigs).
    Replace(BTreeMap<String, String>),
    /// Operations on the current overrides (IncrementalAlterConfigs).
    Incremental(Vec<ConfigOp>),
}

impl TopicChange {
    /// The overrides that result from applying this change to `current`.
    pub fn apply(
        &self,
        current: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, TopicError> {
        match self {
            TopicChange::Replace(configs) => Ok(configs.clone()),
            TopicChange::Incremental(ops) => merge(current, ops),
        }
    }
}

/// Changes a topic's overrides: checks it on this shard's snapshot when `validate_only`, else
/// applies it on the control shard (against the store's current overrides, so concurrent
/// incremental changes compose) and publishes it; the open partitions take the new settings
/// before this returns.
///
/// Runs on the connection's shard.
pub async fn change_topic_configs(
    ctx: &Rc<BrokerCtx>,
    name: String,
    change: TopicChange,
    validate_only: bool,
) -> Result<(), TopicError> {
    if validate_only {
        let snapshot = ctx.state().cluster.topics();
        let Some(meta) = snapshot.topic(&name) else {
            validate_topic_name(&name)?;
            return Err(TopicError::UnknownTopic(name));
        };
        log_config_for(&change.apply(&meta.configs)?)?;
        return Ok(());
    }
    cluster::change_topics(ctx, move |store| {
        let Some(meta) = store.current().topic(&name) else {
            validate_topic_name(&name)?;
            return Err(TopicError::UnknownTopic(name));
        };
        let merged = change.apply(&meta.configs)?;
        store.set_configs(&name, merged, false)
    })
    .await
    .map(|_| ())
}

/// The answer to a change of a BROKER resource. Sluice reads broker settings at start-up only,
/// so only a change that sets nothing (`empty`) succeeds.
pub fn refuse_broker_change(
    config: &BrokerConfig,
    resource_name: &str,
    empty: bool,
) -> Result<(), (i16, String)> {
    check_broker_resource(config, resource_name).map_err(|m| (errors::INVALID_REQUEST, m))?;
    if empty {
        return Ok(());
    }
    Err((
        errors::INVALID_REQUEST,
        dynamic_broker_config_refusal(resource_name),
    ))
}

/// The (type, name) pairs that appear more than once.
pub fn duplicate_resources<'a>(
    resources: impl Iterator<Item = (i8, &'a str)>,
) -> Vec<(i8, String)> {
    let mut counts: HashMap<(i8, &str), usize> = HashMap::new();
    for r in resources {
        *counts.entry(r).or_default() += 1;
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((t, n), _)| (t, n.to_string()))
        .collect()
}
