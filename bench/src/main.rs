//! `sluice-bench`: a Kafka-protocol load generator for any Kafka-compatible broker.
//!
//! It speaks the wire protocol through `sluice-protocol` and builds record batches with
//! `sluice_engine::builder`, runs its connections on its own glommio executors (one per
//! `--threads`, optionally pinned with `--cpus`), keeps several requests in flight per producer
//! connection, and reports throughput and HDR-histogram latency percentiles as a table and as
//! JSON (`--json`). `plot` turns reports into an SVG chart. The main thread only parses
//! arguments, starts executors and writes the report.

mod admin;
mod cli;
mod client;
mod consume;
mod limits;
mod payload;
mod plot;
mod produce;
mod report;
mod run;
mod stats;

use anyhow::{bail, Result};
use clap::Parser;

use crate::cli::{Cli, Command, LoadArgs, Mode};

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Produce(args) => load(Mode::Produce, &args),
        Command::Consume(args) => load(Mode::Consume, &args),
        Command::E2e(args) => load(Mode::E2e, &args),
        Command::Mixed(args) => load(Mode::Mixed, &args),
        Command::Plot(args) => plot::plot(&args.reports, &args.out, &args.title),
        Command::Limits(command) => limits::run(&command),
    }
}

fn load(mode: Mode, args: &LoadArgs) -> Result<()> {
    let outcome = run::run(mode, args)?;
    let report = report::build(mode, args, &outcome);
    if let Some(path) = &args.json {
        report::write_json(&report, path)?;
    }
    if !args.quiet {
        print!("{}", report::table(&report));
    }
    let moved = report.produce.as_ref().map_or(0, |s| s.records)
        + report.consume.as_ref().map_or(0, |s| s.records);
    if moved == 0 && report.errors > 0 {
        bail!(
            "no record was acknowledged or read; {} errors, the first: {}",
            report.errors,
            report.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}
