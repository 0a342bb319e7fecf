//! The client's one error type. Every failure says what was being done and, for an error the
//! broker answered with, carries the Kafka error code, its Kafka name and the broker's message,
//! so a command-line tool can print "create topic 'x': ... (TOPIC_ALREADY_EXISTS)" and exit
//! non-zero. Plain data; used on whichever thread owns the client.

use std::io;

use sluice_protocol::{ApiKey, DecodeError, EncodeError};
use thiserror::Error;

use crate::error_codes;

/// An error code the broker answered with, and where.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{context}: {} ({})", self.text(), self.name())]
pub struct KafkaError {
    /// Kafka's error code.
    pub code: i16,
    /// The broker's own message, if it sent one.
    pub message: Option<String>,
    /// What was being done, e.g. "create topic 'x'" or "produce to x-0".
    pub context: String,
}

impl KafkaError {
    pub fn new(code: i16, message: Option<String>, context: impl Into<String>) -> KafkaError {
        KafkaError {
            code,
            message: message.filter(|m| !m.is_empty()),
            context: context.into(),
        }
    }

    /// Kafka's name for the code ("TOPIC_ALREADY_EXISTS"), or "ERROR_<code>" for a code newer
    /// than this client.
    pub fn name(&self) -> String {
        match error_codes::name(self.code) {
            Some(name) => name.to_owned(),
            None => format!("ERROR_{}", self.code),
        }
    }

    fn text(&self) -> String {
        match &self.message {
            Some(message) => message.clone(),
            None => error_codes::describe(self.code),
        }
    }
}

/// Everything that can go wrong talking to a broker.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("{api:?} request to {addr}: {source}")]
    Io {
        addr: String,
        api: ApiKey,
        #[source]
        source: io::Error,
    },
    #[error("{api:?} request to {addr}: the broker closed the connection")]
    Closed { addr: String, api: ApiKey },
    #[error("{api:?} request to {addr}: no response within {timeout_ms} ms")]
    Timeout {
        addr: String,
        api: ApiKey,
        timeout_ms: u128,
    },
    #[error("{api:?} v{version} request could not be encoded: {source}")]
    Encode {
        api: ApiKey,
        version: i16,
        #[source]
        source: EncodeError,
    },
    #[error("{api:?} v{version} response could not be decoded: {source}")]
    Decode {
        api: ApiKey,
        version: i16,
        #[source]
        source: DecodeError,
    },
    #[error("{api:?} response frame size {len} is outside 0..={max}")]
    FrameSize { api: ApiKey, len: i64, max: usize },
    #[error("{api:?} response has correlation id {got}, expected {expected}")]
    CorrelationMismatch {
        api: ApiKey,
        expected: i32,
        got: i32,
    },
    #[error(
        "the broker does not support {api:?} in any version this client speaks \
         (broker: {broker}, client: v{client_min}-v{client_max})"
    )]
    UnsupportedApi {
        api: ApiKey,
        /// The broker's range as "vMIN-vMAX", or "not offered".
        broker: String,
        client_min: i16,
        client_max: i16,
    },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("{context}: the response is missing {what}")]
    MissingInResponse { context: String, what: String },
    #[error("topic '{topic}' has no partition {partition} (it has {partitions})")]
    NoSuchPartition {
        topic: String,
        partition: i32,
        partitions: usize,
    },
    #[error("could not build a record batch: {0}")]
    Build(#[from] sluice_engine::builder::BuildError),
    #[error("invalid record batch from {topic}-{partition} at byte {pos}: {reason}")]
    BadBatch {
        topic: String,
        partition: i32,
        pos: usize,
        reason: String,
    },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    /// The Kafka error code this error carries, if the broker answered with one.
    pub fn kafka_code(&self) -> Option<i16> {
        match self {
            ClientError::Kafka(e) => Some(e.code),
            _ => None,
        }
    }
}

/// Turns a response's error code into a result: `Ok` for `NONE`.
pub fn check(code: i16, message: Option<&str>, context: impl FnOnce() -> String) -> Result<()> {
    if code == error_codes::NONE {
        return Ok(());
    }
    Err(KafkaError::new(code, message.map(str::to_owned), context()).into())
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_errors_name_the_code_and_the_context() {
        let e = KafkaError::new(36, None, "create topic 'x'");
        assert_eq!(
            e.to_string(),
            "create topic 'x': topic already exists (TOPIC_ALREADY_EXISTS)"
        );
        let e = KafkaError::new(40, Some("retention.ms must be a number".into()), "alter");
        assert_eq!(
            e.to_string(),
            "alter: retention.ms must be a number (INVALID_CONFIG)"
        );
        let e = KafkaError::new(4000, Some(String::new()), "x");
        assert_eq!(e.to_string(), "x: unknown error code 4000 (ERROR_4000)");
    }

    #[test]
    fn check_passes_none_and_fails_everything_else() {
        assert!(check(0, Some("ignored"), || unreachable!()).is_ok());
        let err = check(3, None, || "describe 't'".into()).unwrap_err();
        assert_eq!(err.kafka_code(), Some(3));
    }
}
