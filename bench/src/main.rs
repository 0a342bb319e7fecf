//! `sluice-bench`: a Kafka-protocol load generator for any Kafka-compatible broker.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("sluice-bench: no workloads yet")
}
