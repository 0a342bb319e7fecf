//! The `sluice` binary: command-line interface and wiring of the engine and the server.

fn main() -> anyhow::Result<()> {
    Ok(())
}
