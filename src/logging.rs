//! Logging: tracing to stderr, `text` for people and `json` for collectors.
//!
//! The child's stdout and stderr are never touched: they are inherited descriptors, and
//! the supervisor only ever writes its own lines to its own stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber. `RUST_LOG` wins over `-v`/`-q`, which win over
/// `level` (the policy's `log.level`).
pub fn init(format: LogFormat, level: &str, verbose: u8, quiet: u8) {
    let level = match (verbose, quiet) {
        (_, q) if q > 0 => "error",
        (0, _) => level,
        (1, _) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("ralph_supervise={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .without_time()
            .with_target(false)
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
}
