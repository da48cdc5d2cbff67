//! Logging: tracing to stderr, `text` for people and `json` for collectors.
//!
//! The child's stdout and stderr are never touched: they are inherited descriptors, and
//! the supervisor only ever writes its own lines to its own stderr. Text lines look like
//! the one error line `main` prints (`ralph-supervise: warning: ...`), coloured only when
//! stderr is a terminal.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

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
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal();
            builder
                .with_ansi(ansi)
                .event_format(Text { ansi })
                .try_init()
        }
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
}

/// `ralph-supervise: warning: message key=value`.
struct Text {
    ansi: bool,
}

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let (name, colour) = match *event.metadata().level() {
            Level::ERROR => ("error", "31"),
            Level::WARN => ("warning", "33"),
            Level::INFO => ("info", "32"),
            Level::DEBUG => ("debug", "34"),
            Level::TRACE => ("trace", "35"),
        };
        write!(writer, "ralph-supervise: ")?;
        if self.ansi {
            write!(writer, "\x1b[{colour}m{name}\x1b[0m: ")?;
        } else {
            write!(writer, "{name}: ")?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
