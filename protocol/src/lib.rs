//! Sluice's Kafka wire codec. It does no I/O: bytes in, typed messages out, and back.
