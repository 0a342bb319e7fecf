//! What every client subcommand (`topic`, `produce`, `consume`, `group`, `txn`) shares: the
//! `--bootstrap` flag, connecting, parsing `key=value` arguments and printing tables. Runs on
//! the command's main thread.

use std::fmt::Write as _;

use anyhow::Context;
use clap::Args;
use sluice_client::{Client, ClientConfig};

/// Where the broker is.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Broker address to connect to.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
}

impl ConnectArgs {
    /// Connects and negotiates API versions.
    pub fn connect(&self) -> anyhow::Result<Client> {
        Client::connect(&self.bootstrap, ClientConfig::default())
            .with_context(|| format!("cannot talk to the broker at {}", self.bootstrap))
    }
}

/// Ends a client subcommand: a failure is printed as one line, `error: ` followed by the error
/// and its causes, on stderr, and the process exits with status 1. Client errors are for
/// people, so they get no backtrace even when `RUST_BACKTRACE` is set.
pub fn finish(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = result {
        eprintln!("error: {}", error_line(&e));
        std::process::exit(1);
    }
    Ok(())
}

/// The error and its causes joined by ": ", leaving out a cause whose text the line already
/// holds (our error types print their source inline as well as exposing it).
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Parses a `key=value` argument (the value may itself contain '=').
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

/// Milliseconds since the Unix epoch, for record timestamps.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Left-aligned columns separated by two spaces, header first.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut s = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = write!(l, "{cell:<w$}");
        }
        let _ = writeln!(s, "{}", l.trim_end());
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_do_not_repeat_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = anyhow::Error::new(sluice_client::ClientError::Connect {
            addr: "h:1".into(),
            source: io,
        })
        .context("cannot talk to the broker at h:1");
        assert_eq!(
            error_line(&e),
            "cannot talk to the broker at h:1: cannot connect to h:1: refused"
        );
    }

    #[test]
    fn key_values_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_key_value("retention.ms=1000"),
            Ok(("retention.ms".into(), "1000".into()))
        );
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_key_value("a="), Ok(("a".into(), String::new())));
        assert!(parse_key_value("=x").is_err());
        assert!(parse_key_value("novalue").is_err());
    }

    #[test]
    fn tables_align_columns() {
        let text = table(
            &["A", "LONGER"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(text, "A    LONGER\nxyz  1\nq    22\n");
    }
}
