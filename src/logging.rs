//! Logging: tracing to stderr, `text` for people and `json` for collectors.
//!
//! The child's stdout and stderr are never touched: they are inherited descriptors, and
//! the supervisor only ever writes its own lines to its own stderr. Text lines look like
//! the one error line `main` prints (`ralph-supervise: warning: ...`), coloured only when
//! stderr is a terminal. When stderr is the journal's stream (systemd's `JOURNAL_STREAM`),
//! each line begins with its syslog priority, `<4>` for a warning.
//!
//! A broken stderr never ends supervision. Every line goes through [`write_stderr`],
//! which drops a line it cannot write (a hung-up terminal says EIO, a pipe whose reader
//! is gone EPIPE) and counts it ([`dropped`], recorded in the run's history) instead of
//! failing: tracing-subscriber answers a failed write with `eprintln!`, which panics on
//! the same broken stderr, and `panic = "abort"` would take the supervisor down with
//! the agent still running and holding the lock. After EPIPE or EIO nothing more is
//! written at all: neither comes back, and with SIGPIPE blocked (the supervisor's
//! signalfd) every further write would queue one more SIGPIPE to ignore and log.
//!
//! Subcommands print their output through [`print`], which never panics either: a
//! reader that went away (`| head -c0`, `| grep -q`) ends the output, not the command,
//! which exits with its own status. (ralph-supervise leaves SIGPIPE ignored, as Rust
//! starts it, so that a write to a closed pipe fails with EPIPE instead of killing it;
//! the children it starts get the default action back from std and from the
//! supervisor's signal reset.)
//!
//! The subscriber installed is [`Lazy`]: the filter answers at each call site, and the
//! formatter with tracing's span registry is built at the first line or span that
//! passes it, so a run with nothing to say (the usual one) never pays for them.
//!
//! Log messages quote what came from outside (prompts, command words, paths, error
//! messages): in text lines every control character is written escaped
//! ([`crate::present::escape`]), so that a newline cannot forge a second line and an
//! escape sequence never reaches the terminal. JSON lines are escaped by serde.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_core::span::Current;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::exit::{ExitStatus, Failure};
use crate::present::escape;

crate::setting::keywords! {
    LogFormat "The format of the supervisor's own log lines." {
        Text = "text", "For people.";
        Json = "json", "One JSON object per line, for collectors.";
    }
    LogLevel "The least severe level logged." {
        Error = "error", "Errors only.";
        Warn = "warn", "Warnings and errors.";
        Info = "info", "What the supervisor does: lock taken, child started and ended.";
        Debug = "debug", "Each decision and system event, for finding a problem.";
        Trace = "trace", "Everything.";
    }
}

/// Lines that could not be written to stderr (log lines and the final error line).
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Set once stderr failed for good (EPIPE, EIO): nothing is written after that.
static BROKEN: AtomicBool = AtomicBool::new(false);
/// Set once stdout's reader went away (EPIPE): the rest of the output is dropped.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
/// The format [`init`] chose: 0 not yet chosen, 1 text, 2 JSON.
static FORMAT: AtomicU8 = AtomicU8::new(0);

/// How many lines were dropped because stderr failed.
pub(crate) fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Writes `buf` (one whole line) to stderr; returns whether it was written. Never
/// panics and never fails: a line stderr does not take is dropped and counted.
pub(crate) fn write_stderr(buf: &[u8]) -> bool {
    if BROKEN.load(Ordering::Relaxed) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    let stderr = io::stderr();
    let mut stderr = stderr.lock();
    let mut rest = buf;
    while !rest.is_empty() {
        match stderr.write(rest) {
            Ok(0) => break,
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if matches!(e.raw_os_error(), Some(libc::EPIPE | libc::EIO)) {
                    BROKEN.store(true, Ordering::Relaxed);
                }
                break;
            }
        }
    }
    if rest.is_empty() {
        return true;
    }
    // Anything else (a full disk, a non-blocking descriptor that would block): drop
    // this line, try the next.
    DROPPED.fetch_add(1, Ordering::Relaxed);
    false
}

/// Writes `text` to stdout: the one way subcommands print their output. Never panics.
/// A reader that has gone away (EPIPE) is not an error: this and later output is
/// dropped, and the subcommand exits with its own status (for `status`, its answer).
/// Any other failure (a full disk) fails the command (125): its output is incomplete.
pub(crate) fn print(text: &str) -> Result<(), Failure> {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
            STDOUT_GONE.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(Failure::new(
            ExitStatus::Failure,
            anyhow::Error::new(e).context("cannot write to stdout"),
        )),
    }
}

/// Whether stderr is the journal's stream (systemd sets `JOURNAL_STREAM` to its
/// `device:inode`; a stderr redirected elsewhere has another): then each line begins with
/// its syslog priority, `<3>` to `<7>`, which journald reads as the line's priority
/// (`SyslogLevelPrefix=`, on by default), so `journalctl -p warning` finds warnings.
fn journal() -> bool {
    static JOURNAL: OnceLock<bool> = OnceLock::new();
    *JOURNAL.get_or_init(|| {
        let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        nix::sys::stat::fstat(io::stderr())
            .is_ok_and(|st| stream.to_str() == Some(&format!("{}:{}", st.st_dev, st.st_ino)))
    })
}

/// A line's syslog priority prefix, when stderr is the journal's.
fn priority(level: Level) -> &'static str {
    if !journal() {
        return "";
    }
    match level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// The subscriber's writer: [`write_stderr`] for each formatted event (tracing-subscriber
/// formats an event into one buffer and writes it with one `write_all`), after the
/// event's [`priority`] prefix.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stderr {
    prefix: &'static str,
}

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.prefix {
            "" => write_stderr(buf),
            prefix => write_stderr(&[prefix.as_bytes(), buf].concat()),
        };
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Makes a [`Stderr`] for each event, with its level's prefix.
struct MakeStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MakeStderr {
    type Writer = Stderr;
    fn make_writer(&'a self) -> Stderr {
        Stderr::default()
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Stderr {
        Stderr {
            prefix: priority(*meta.level()),
        }
    }
}

/// Prints `main`'s one error line: `ralph-supervise: message` as text, or, in the JSON
/// log format, an object shaped like the log lines (`level` `ERROR`, the message under
/// `fields`, with the exit status). The format is the one logging was set up with, else
/// `flag` (an error can come before logging is set up), else text.
pub(crate) fn print_error(error: &anyhow::Error, status: u8, flag: Option<LogFormat>) {
    let json = match FORMAT.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => flag == Some(LogFormat::Json),
    };
    let mut line = if json {
        // Keys in the log lines' order (a `json!` map would sort them).
        let text = |s: &str| serde_json::Value::from(s).to_string();
        format!(
            r#"{{"timestamp":{},"level":"ERROR","fields":{{"message":{},"status":{status}}},"target":"ralph_supervise"}}"#,
            text(&chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            text(&format!("{error:#}")),
        )
    } else {
        format!("ralph-supervise: {}", escape(&format!("{error:#}")))
    };
    line.insert_str(0, priority(Level::ERROR));
    line.push('\n');
    write_stderr(line.as_bytes());
}

/// Installs the global subscriber. `RUST_LOG` wins over `-v`/`-q`, which win over
/// `level` (the policy's `log.level`).
pub(crate) fn init(format: LogFormat, level: &str, verbose: u8, quiet: u8) {
    let level = match (verbose, quiet) {
        (_, q) if q > 0 => "error",
        (0, _) => level,
        (1, _) => "debug",
        _ => "trace",
    };
    // RUST_LOG's target=level directives (`Targets` rather than `EnvFilter`: no span or
    // field filters, and no regex engine in the binary).
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| {
            format!("ralph_supervise={level}")
                .parse()
                .unwrap_or_else(|_| Targets::new().with_target("ralph_supervise", Level::INFO))
        });
    FORMAT.store(
        match format {
            LogFormat::Text => 1,
            LogFormat::Json => 2,
        },
        Ordering::Relaxed,
    );
    let lazy = Lazy {
        filter,
        format,
        made: OnceLock::new(),
    };
    let _ = tracing::subscriber::set_global_default(lazy);
}

/// The installed subscriber: `filter` decides at each call site, and the formatter with
/// tracing's span registry (a 32 KiB table zeroed, about 40,000 instructions) is built
/// at the first event or span that passes it, so a run that logs nothing (the usual one
/// at the default level) never builds it. (Building it must not log: a line from
/// `make` would wait for itself. `downcast_raw` is not passed on: nothing asks the
/// dispatcher for a subscriber's type.)
struct Lazy {
    filter: Targets,
    format: LogFormat,
    made: OnceLock<Box<dyn Subscriber + Send + Sync>>,
}

impl Lazy {
    fn made(&self) -> &(dyn Subscriber + Send + Sync) {
        let make = || -> Box<dyn Subscriber + Send + Sync> {
            // The builder filters at INFO by default; `filter` decides instead.
            let builder = tracing_subscriber::fmt()
                .with_max_level(Level::TRACE)
                .with_writer(MakeStderr);
            match self.format {
                LogFormat::Text => {
                    let ansi = std::io::stderr().is_terminal();
                    Box::new(builder.with_ansi(ansi).event_format(Text { ansi }).finish())
                }
                LogFormat::Json => Box::new(builder.json().with_current_span(false).finish()),
            }
        };
        &**self.made.get_or_init(make)
    }
}

impl Subscriber for Lazy {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        match self.enabled(metadata) {
            true => Interest::always(),
            false => Interest::never(),
        }
    }
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter
            .would_enable(metadata.target(), metadata.level())
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Layer::<tracing_subscriber::Registry>::max_level_hint(&self.filter)
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.made().new_span(span)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        self.made().record(span, values)
    }
    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.made().record_follows_from(span, follows)
    }
    fn event(&self, event: &Event<'_>) {
        self.made().event(event)
    }
    fn enter(&self, span: &Id) {
        self.made().enter(span)
    }
    fn exit(&self, span: &Id) {
        self.made().exit(span)
    }
    fn clone_span(&self, id: &Id) -> Id {
        self.made().clone_span(id)
    }
    fn try_close(&self, id: Id) -> bool {
        self.made().try_close(id)
    }
    fn current_span(&self) -> Current {
        self.made
            .get()
            .map_or_else(Current::none, |made| made.current_span())
    }
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
        // The message and fields quote outside text: escape them as a whole (our own
        // colour codes above stay as they are).
        let mut fields = String::new();
        ctx.field_format()
            .format_fields(Writer::new(&mut fields), event)?;
        writeln!(writer, "{}", escape(&fields))
    }
}
