//! The Sluice broker server: listeners, connections, request dispatch, one handler per Kafka API.
