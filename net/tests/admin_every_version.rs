//! Every admin API at every version the broker advertises, against an in-process broker.
//!
//! Real clients each pick one version per API; this drives all of them, so a field written
//! outside its versions, a version-dependent default or a decode mismatch fails here. Each
//! response is decoded with the codec's own client side and its error codes are checked.

#![allow(clippy::unwrap_used)] // test harness helpers: a failed unwrap is a failed test

mod common;

use common::{Broker, Client};

use sluice_net::errors;
use sluice_protocol::messages::alter_configs_request::{
    AlterConfigsRequest, AlterConfigsResource, AlterableConfig,
};
use sluice_protocol::messages::create_partitions_request::{
    CreatePartitionsRequest, CreatePartitionsTopic,
};
use sluice_protocol::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
};
use sluice_protocol::messages::delete_topics_request::{DeleteTopicState, DeleteTopicsRequest};
use sluice_protocol::messages::describe_cluster_request::DescribeClusterRequest;
use sluice_protocol::messages::describe_configs_request::{
    DescribeConfigsRequest, DescribeConfigsResource,
};
use sluice_protocol::messages::describe_log_dirs_request::DescribeLogDirsRequest;
use sluice_protocol::messages::incremental_alter_configs_request as incremental;
use sluice_protocol::{ApiKey, Request, Response};

fn versions(key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let (lo, hi) = sluice_net::handlers::served_range(key).unwrap();
    lo..=hi
}

fn create(name: &str, partitions: i32, configs: &[(&str, &str)]) -> CreatableTopic {
    CreatableTopic {
        name: name.into(),
        num_partitions: partitions,
        replication_factor: 1,
        configs: configs
            .iter()
            .map(|(k, v)| CreatableTopicConfig {
                name: (*k).into(),
                value: Some((*v).into()),
                ..CreatableTopicConfig::default()
            })
            .collect(),
        ..CreatableTopic::default()
    }
}

#[test]
fn every_admin_api_answers_at_every_advertised_version() {
    let broker = Broker::start();
    let mut c = Client::connect(broker.addr);

    let existing = CreateTopicsRequest {
        topics: vec![create("existing", 1, &[])],
        timeout_ms: 10_000,
        ..CreateTopicsRequest::default()
    };
    let Response::CreateTopics(r) = c.call(0, Request::CreateTopics(existing)) else {
        panic!("wrong response type");
    };
    assert_eq!(r.topics[0].error_code, errors::NONE);

    for v in versions(ApiKey::CreateTopics) {
        let name = format!("t{v}");
        let request = CreateTopicsRequest {
            topics: vec![
                create(&name, 2, &[("retention.ms", "1000")]),
                create("existing", 1, &[]),
                create("bad name", 1, &[]),
            ],
            timeout_ms: 10_000,
            ..CreateTopicsRequest::default()
        };
        let Response::CreateTopics(r) = c.call(v, Request::CreateTopics(request)) else {
            panic!("wrong response type");
        };
        let codes: Vec<i16> = r.topics.iter().map(|t| t.error_code).collect();
        assert_eq!(
            codes,
            [
                errors::NONE,
                errors::TOPIC_ALREADY_EXISTS,
                errors::INVALID_TOPIC_EXCEPTION
            ],
            "v{v}"
        );
        if v >= 5 {
            assert_eq!(r.topics[0].num_partitions, 2, "v{v}");
            let configs = r.topics[0].configs.as_ref().unwrap();
            let retention = configs.iter().find(|c| c.name == "retention.ms").unwrap();
            assert_eq!(retention.value.as_deref(), Some("1000"));
            assert_eq!(retention.config_source, 1);
        }
        if v >= 7 {
            assert_ne!(r.topics[0].topic_id, sluice_protocol::Uuid::default());
        }
    }

    for v in versions(ApiKey::CreatePartitions) {
        let request = CreatePartitionsRequest {
            topics: vec![CreatePartitionsTopic {
                name: format!("t{v}"),
                count: 3,
                assignments: None,
                ..CreatePartitionsTopic::default()
            }],
            timeout_ms: 10_000,
            ..CreatePartitionsRequest::default()
        };
        let Response::CreatePartitions(r) = c.call(v, Request::CreatePartitions(request)) else {
            panic!("wrong response type");
        };
        assert_eq!(
            r.results[0].error_code,
            errors::NONE,
            "v{v}: {:?}",
            r.results
        );
    }

    for v in versions(ApiKey::DescribeConfigs) {
        let request = DescribeConfigsRequest {
            resources: vec![
                DescribeConfigsResource {
                    resource_type: 2,
                    resource_name: "t1".into(),
                    configuration_keys: None,
                    ..DescribeConfigsResource::default()
                },
                DescribeConfigsResource {
                    resource_type: 4,
                    resource_name: "1".into(),
                    configuration_keys: Some(vec!["num.partitions".into()]),
                    ..DescribeConfigsResource::default()
                },
                DescribeConfigsResource {
                    resource_type: 2,
                    resource_name: "nosuch".into(),
                    configuration_keys: None,
                    ..DescribeConfigsResource::default()
                },
            ],
            include_synonyms: v >= 1,
            include_documentation: v >= 3,
            ..DescribeConfigsRequest::default()
        };
        let Response::DescribeConfigs(r) = c.call(v, Request::DescribeConfigs(request)) else {
            panic!("wrong response type");
        };
        let codes: Vec<i16> = r.results.iter().map(|x| x.error_code).collect();
        assert_eq!(
            codes,
            [
                errors::NONE,
                errors::NONE,
                errors::UNKNOWN_TOPIC_OR_PARTITION
            ],
            "v{v}"
        );
        let retention = r.results[0]
            .configs
            .iter()
            .find(|c| c.name == "retention.ms")
            .unwrap();
        assert_eq!(retention.value.as_deref(), Some("1000"));
        if v >= 1 {
            assert_eq!(retention.config_source, 1, "v{v}");
            assert_eq!(retention.synonyms.len(), 2, "v{v}");
        } else {
            assert!(!retention.is_default);
        }
        if v >= 3 {
            assert_eq!(retention.config_type, 5, "v{v}: LONG");
            assert!(!retention.documentation.as_deref().unwrap().is_empty());
        }
        let [num_partitions] = r.results[1].configs.as_slice() else {
            panic!("v{v}: the key filter was not applied");
        };
        assert_eq!(num_partitions.value.as_deref(), Some("1"));
    }

    for v in versions(ApiKey::AlterConfigs) {
        let request = AlterConfigsRequest {
            resources: vec![
                AlterConfigsResource {
                    resource_type: 2,
                    resource_name: "t1".into(),
                    configs: vec![AlterableConfig {
                        name: "retention.ms".into(),
                        value: Some(format!("{}", 2000 + i64::from(v))),
                        ..AlterableConfig::default()
                    }],
                    ..AlterConfigsResource::default()
                },
                AlterConfigsResource {
                    resource_type: 4,
                    resource_name: "1".into(),
                    configs: vec![AlterableConfig {
                        name: "num.partitions".into(),
                        value: Some("3".into()),
                        ..AlterableConfig::default()
                    }],
                    ..AlterConfigsResource::default()
                },
            ],
            validate_only: false,
            ..AlterConfigsRequest::default()
        };
        let Response::AlterConfigs(r) = c.call(v, Request::AlterConfigs(request)) else {
            panic!("wrong response type");
        };
        let codes: Vec<i16> = r.responses.iter().map(|x| x.error_code).collect();
        assert_eq!(codes, [errors::NONE, errors::INVALID_REQUEST], "v{v}");
        assert!(r.responses[1]
            .error_message
            .as_deref()
            .unwrap()
            .contains("dynamic broker configs"));
    }

    for v in versions(ApiKey::IncrementalAlterConfigs) {
        let request = incremental::IncrementalAlterConfigsRequest {
            resources: vec![incremental::AlterConfigsResource {
                resource_type: 2,
                resource_name: "t1".into(),
                configs: vec![
                    incremental::AlterableConfig {
                        name: "retention.ms".into(),
                        config_operation: 1,
                        value: None,
                        ..incremental::AlterableConfig::default()
                    },
                    incremental::AlterableConfig {
                        name: "segment.bytes".into(),
                        config_operation: 0,
                        value: Some("4".into()),
                        ..incremental::AlterableConfig::default()
                    },
                ],
                ..incremental::AlterConfigsResource::default()
            }],
            validate_only: false,
            ..incremental::IncrementalAlterConfigsRequest::default()
        };
        let Response::IncrementalAlterConfigs(r) =
            c.call(v, Request::IncrementalAlterConfigs(request))
        else {
            panic!("wrong response type");
        };
        // segment.bytes=4 is below the minimum: the whole resource is refused.
        assert_eq!(r.responses[0].error_code, errors::INVALID_CONFIG, "v{v}");
        assert!(r.responses[0]
            .error_message
            .as_deref()
            .unwrap()
            .contains("segment.bytes"));
    }

    for v in versions(ApiKey::DescribeCluster) {
        let request = DescribeClusterRequest {
            include_cluster_authorized_operations: true,
            ..DescribeClusterRequest::default()
        };
        let Response::DescribeCluster(r) = c.call(v, Request::DescribeCluster(request)) else {
            panic!("wrong response type");
        };
        assert_eq!(r.error_code, errors::NONE, "v{v}");
        assert_eq!(r.controller_id, 1);
        assert_eq!(r.brokers.len(), 1);
        assert_eq!(r.brokers[0].port, i32::from(broker.addr.port()));
        assert_ne!(r.cluster_authorized_operations, i32::MIN);
    }

    for v in versions(ApiKey::DescribeLogDirs) {
        let Response::DescribeLogDirs(r) = c.call(
            v,
            Request::DescribeLogDirs(DescribeLogDirsRequest {
                topics: None,
                ..DescribeLogDirsRequest::default()
            }),
        ) else {
            panic!("wrong response type");
        };
        let [dir] = r.results.as_slice() else {
            panic!("v{v}: one log dir expected");
        };
        let t1 = dir.topics.iter().find(|t| t.name == "t1").unwrap();
        assert_eq!(t1.partitions.len(), 3, "v{v}");
        if v >= 4 {
            assert!(dir.total_bytes > 0);
        }
    }

    for v in versions(ApiKey::DeleteTopics) {
        let name = format!("t{v}");
        let request = if v >= 6 {
            DeleteTopicsRequest {
                topics: vec![
                    DeleteTopicState {
                        name: Some(name.clone()),
                        topic_id: sluice_protocol::Uuid::default(),
                        ..DeleteTopicState::default()
                    },
                    DeleteTopicState {
                        name: None,
                        topic_id: sluice_protocol::Uuid([7; 16]),
                        ..DeleteTopicState::default()
                    },
                ],
                timeout_ms: 10_000,
                ..DeleteTopicsRequest::default()
            }
        } else {
            DeleteTopicsRequest {
                topic_names: vec![name.clone(), "nosuch".into()],
                timeout_ms: 10_000,
                ..DeleteTopicsRequest::default()
            }
        };
        let Response::DeleteTopics(r) = c.call(v, Request::DeleteTopics(request)) else {
            panic!("wrong response type");
        };
        let codes: Vec<i16> = r.responses.iter().map(|x| x.error_code).collect();
        let unknown = if v >= 6 {
            errors::UNKNOWN_TOPIC_ID
        } else {
            errors::UNKNOWN_TOPIC_OR_PARTITION
        };
        assert_eq!(codes, [errors::NONE, unknown], "v{v}");
    }
}
