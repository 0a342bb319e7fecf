//! IncrementalAlterConfigs (key 44): SET, DELETE, APPEND and SUBTRACT on single config keys.
//!
//! The operations of a resource are applied together to the topic's current overrides on the
//! control shard (so two concurrent requests compose rather than overwrite each other), and the
//! result is checked as a whole: any invalid key, value or operation refuses the resource and
//! changes nothing. APPEND and SUBTRACT apply only to list configs (`cleanup.policy`, the
//! replica throttle lists), as in Kafka. The new settings are in effect on the open partitions
//! before the response is sent. Broker resources are refused with a message (no dynamic broker
//! configs). Runs on the connection's shard.

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use sluice_protocol::messages::incremental_alter_configs_request::IncrementalAlterConfigsRequest;
use sluice_protocol::messages::incremental_alter_configs_response::{
    AlterConfigsResourceResponse, IncrementalAlterConfigsResponse,
};
use sluice_protocol::messages::request_header::RequestHeader;

use crate::broker::BrokerCtx;
use crate::errors;
use crate::handlers::alter_configs::{
    change_topic_configs, duplicate_resources, refuse_broker_change, TopicChange,
};
use crate::handlers::describe_configs::resource_type;
use crate::topic_configs;
use crate::topics::TopicError;

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 1);

/// Kafka's incremental config operations.
pub mod op {
    pub const SET: i8 = 0;
    pub const DELETE: i8 = 1;
    pub const APPEND: i8 = 2;
    pub const SUBTRACT: i8 = 3;
}

/// One operation on one config key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigOp {
    pub name: String,
    pub op: i8,
    pub value: Option<String>,
}

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    _header: &RequestHeader,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let duplicates = duplicate_resources(
        request
            .resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let key = (resource.resource_type, resource.resource_name.clone());
        let ops: Vec<ConfigOp> = resource
            .configs
            .into_iter()
            .map(|c| ConfigOp {
                name: c.name,
                op: c.config_operation,
                value: c.value,
            })
            .collect();
        let outcome = if duplicates.contains(&key) {
            Err((
                errors::INVALID_REQUEST,
                "the resource appears more than once in the request".to_string(),
            ))
        } else {
            match resource.resource_type {
                resource_type::TOPIC => change_topic_configs(
                    ctx,
                    resource.resource_name.clone(),
                    TopicChange::Incremental(ops),
                    request.validate_only,
                )
                .await
                .map_err(|e| (e.kafka_code(), e.to_string())),
                resource_type::BROKER | resource_type::BROKER_LOGGER => refuse_broker_change(
                    &ctx.state().config,
                    &resource.resource_name,
                    ops.is_empty(),
                ),
                other => Err((
                    errors::INVALID_REQUEST,
                    format!("unsupported config resource type {other}"),
                )),
            }
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
    IncrementalAlterConfigsResponse {
        throttle_time_ms: 0,
        responses,
        ..IncrementalAlterConfigsResponse::default()
    }
}

/// Applies `ops` to a topic's `current` overrides. Values are checked later as a whole (by
/// the store); this checks keys, operations and list-ness.
pub fn merge(
    current: &BTreeMap<String, String>,
    ops: &[ConfigOp],
) -> Result<BTreeMap<String, String>, TopicError> {
    let mut seen = HashSet::new();
    let mut next = current.clone();
    for o in ops {
        if !seen.insert(o.name.as_str()) {
            return Err(TopicError::InvalidRequest(format!(
                "config '{}' appears more than once in the request",
                o.name
            )));
        }
        let Some(def) = topic_configs::find(&o.name) else {
            return Err(TopicError::InvalidConfig(format!(
                "unknown topic config '{}'",
                o.name
            )));
        };
        let value = || {
            o.value.clone().ok_or_else(|| {
                TopicError::InvalidConfig(format!("config '{}' needs a value", o.name))
            })
        };
        match o.op {
            op::SET => {
                next.insert(o.name.clone(), value()?);
            }
            op::DELETE => {
                next.remove(&o.name);
            }
            op::APPEND | op::SUBTRACT => {
                if !def.kind.is_list() {
                    return Err(TopicError::InvalidConfig(format!(
                        "config '{}' is not a list; APPEND and SUBTRACT apply only to list \
                         configs",
                        o.name
                    )));
                }
                let given = value()?;
                let mut items: Vec<String> =
                    list_items(next.get(&o.name).map_or(def.default, String::as_str));
                for item in list_items(&given) {
                    if o.op == op::APPEND {
                        if !items.contains(&item) {
                            items.push(item);
                        }
                    } else {
                        items.retain(|i| *i != item);
                    }
                }
                next.insert(o.name.clone(), items.join(","));
            }
            other => {
                return Err(TopicError::InvalidRequest(format!(
                    "unknown config operation {other} for config '{}'",
                    o.name
                )))
            }
        }
    }
    Ok(next)
}

fn list_items(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(name: &str, op: i8, value: Option<&str>) -> ConfigOp {
        ConfigOp {
            name: name.into(),
            op,
            value: value.map(Into::into),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn set_and_delete_change_only_their_keys() {
        let current = map(&[("retention.ms", "1000"), ("segment.bytes", "8192")]);
        let next = merge(
            &current,
            &[
                o("retention.ms", op::DELETE, None),
                o("max.message.bytes", op::SET, Some("500")),
            ],
        )
        .unwrap();
        assert_eq!(
            next,
            map(&[("max.message.bytes", "500"), ("segment.bytes", "8192")])
        );
        // Deleting a key that is not overridden is not an error.
        assert_eq!(
            merge(&next, &[o("flush.ms", op::DELETE, None)]).unwrap(),
            next
        );
    }

    #[test]
    fn append_and_subtract_work_on_lists_from_the_default() {
        let next = merge(
            &BTreeMap::new(),
            &[o("cleanup.policy", op::APPEND, Some("compact"))],
        )
        .unwrap();
        assert_eq!(next, map(&[("cleanup.policy", "delete,compact")]));
        let again = merge(&next, &[o("cleanup.policy", op::APPEND, Some("compact"))]).unwrap();
        assert_eq!(again, next);
        let back = merge(&next, &[o("cleanup.policy", op::SUBTRACT, Some("delete"))]).unwrap();
        assert_eq!(back, map(&[("cleanup.policy", "compact")]));
    }

    #[test]
    fn bad_operations_are_refused_with_precise_codes() {
        let code = |ops: &[ConfigOp]| merge(&BTreeMap::new(), ops).unwrap_err().kafka_code();
        assert_eq!(
            code(&[o("retention.ms", op::APPEND, Some("1"))]),
            errors::INVALID_CONFIG
        );
        assert_eq!(
            code(&[o("no.such", op::SET, Some("1"))]),
            errors::INVALID_CONFIG
        );
        assert_eq!(
            code(&[o("retention.ms", op::SET, None)]),
            errors::INVALID_CONFIG
        );
        assert_eq!(
            code(&[o("retention.ms", 9, Some("1"))]),
            errors::INVALID_REQUEST
        );
        assert_eq!(
            code(&[
                o("retention.ms", op::SET, Some("1")),
                o("retention.ms", op::DELETE, None)
            ]),
            errors::INVALID_REQUEST
        );
    }
}
