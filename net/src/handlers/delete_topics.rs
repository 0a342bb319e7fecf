//! DeleteTopics (key 20): deletes topics by name (v0+) or by topic id (v6+).
//!
//! Each topic is answered on its own. The deletion is made on the control shard (persisted,
//! then published); every shard closes the topic's partitions it is home of and removes their
//! directories before the response is sent, so a topic re-created under the same name starts
//! empty. A name that does not exist is UNKNOWN_TOPIC_OR_PARTITION, an id that does not exist
//! UNKNOWN_TOPIC_ID. Internal topics (`__consumer_offsets`) are refused with
//! TOPIC_AUTHORIZATION_FAILED. Runs on the connection's shard.

use std::collections::HashMap;
use std::rc::Rc;

use sluice_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use sluice_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use sluice_protocol::messages::request_header::RequestHeader;
use sluice_protocol::Uuid;

use crate::broker::BrokerCtx;
use crate::cluster;
use crate::errors;
use crate::groups;
use crate::topics::TopicError;

/// Versions served.
pub const VERSIONS: (i16, i16) = (0, 6);

/// One topic the request names: by name, or (v6+) by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Name(String),
    Id(Uuid),
}

/// Runs on the connection's shard.
pub async fn handle(
    ctx: &Rc<BrokerCtx>,
    header: &RequestHeader,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let version = header.request_api_version;
    let targets: Vec<Result<Target, (Option<String>, Uuid)>> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| match (t.name, t.topic_id) {
                (Some(name), id) if id == Uuid::default() => Ok(Target::Name(name)),
                (None, id) if id != Uuid::default() => Ok(Target::Id(id)),
                (name, id) => Err((name, id)),
            })
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| Ok(Target::Name(n)))
            .collect()
    };
    let mut counts: HashMap<Target, usize> = HashMap::new();
    for t in targets.iter().flatten() {
        *counts.entry(t.clone()).or_default() += 1;
    }
    let mut responses = Vec::with_capacity(targets.len());
    for target in targets {
        let target = match target {
            Ok(t) => t,
            Err((name, id)) => {
                responses.push(result(
                    name,
                    id,
                    Err(TopicError::InvalidRequest(
                        "give either a topic name or a topic id, not both or neither".into(),
                    )),
                ));
                continue;
            }
        };
        // The response names the topic both ways when it is known, as Kafka does.
        let snapshot = ctx.state().cluster.topics();
        let (name, id) = match &target {
            Target::Name(n) => (
                Some(n.clone()),
                snapshot.topic(n).map_or(Uuid::default(), |m| m.id),
            ),
            Target::Id(id) => (snapshot.topic_by_id(id).map(|m| m.name.to_string()), *id),
        };
        if counts.get(&target).copied().unwrap_or(0) > 1 {
            responses.push(result(
                name,
                id,
                Err(TopicError::InvalidRequest(
                    "the topic appears more than once in the request".into(),
                )),
            ));
            continue;
        }
        // Internal topics hold broker state (committed offsets); a client may not delete
        // them, and is told so the way Kafka refuses a deletion it does not authorize.
        if name
            .as_deref()
            .and_then(|n| snapshot.topic(n))
            .is_some_and(|m| m.internal)
        {
            responses.push(DeletableTopicResult {
                name,
                topic_id: id,
                error_code: errors::TOPIC_AUTHORIZATION_FAILED,
                error_message: Some("internal topics cannot be deleted".into()),
                ..DeletableTopicResult::default()
            });
            continue;
        }
        let change_target = target.clone();
        let outcome = cluster::change_topics(ctx, move |store| {
            let name = match &change_target {
                Target::Name(n) => n.clone(),
                Target::Id(id) => match store.current().topic_by_id(id) {
                    Some(meta) => meta.name.to_string(),
                    None => return Err(TopicError::UnknownTopicId(format_id(id))),
                },
            };
            store.delete(&name)
        })
        .await;
        if let (Ok(_), Some(deleted)) = (&outcome, &name) {
            // Committed offsets of a deleted topic go with it, as in Kafka, so a topic
            // re-created under the name does not inherit positions in a log that is gone.
            groups::topic_deleted(ctx, deleted).await;
        }
        responses.push(result(name, id, outcome.map(|_| ())));
    }
    DeleteTopicsResponse {
        throttle_time_ms: 0,
        responses,
        ..DeleteTopicsResponse::default()
    }
}

fn result(name: Option<String>, id: Uuid, outcome: Result<(), TopicError>) -> DeletableTopicResult {
    let (error_code, error_message) = match outcome {
        Ok(()) => (errors::NONE, None),
        Err(e) => (e.kafka_code(), Some(e.to_string())),
    };
    DeletableTopicResult {
        name,
        topic_id: id,
        error_code,
        error_message,
        ..DeletableTopicResult::default()
    }
}

/// A topic id as Kafka prints it: URL-safe base64 without padding (22 characters).
pub fn format_id(id: &Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    for chunk in id.0.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // A full chunk gives 4 characters; the final single byte gives 2.
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_kafka_prints_them() {
        assert_eq!(format_id(&Uuid([0; 16])), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(format_id(&Uuid([0xff; 16])), "_____________________w");
        let mut one = [0u8; 16];
        one[15] = 1;
        assert_eq!(format_id(&Uuid(one)), "AAAAAAAAAAAAAAAAAAAAAQ");
    }
}
