//! The command line, and only the command line: clap types stop here. Each subcommand's
//! flags are turned into a plain settings struct for the module that does the work.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit::CONFLICT_DEFAULT;
use crate::probe::ProbeSettings;

#[derive(Debug, Parser)]
#[command(
    name = "ralph-supervise",
    version,
    about = "Run at most one primary agent loop per workspace",
    long_about = "Run at most one primary agent loop per workspace.\n\n\
        ralph-supervise takes the flock on .ralph/loop.lock (the lock ralph-orchestrator \
        uses), hands the locked descriptor to the command it starts so the lock lives \
        exactly as long as the work, forwards signals, records who holds the lock, and \
        releases it when the command exits."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Workspace directory [default: the git top-level of the current directory, else the current directory]
    #[arg(short = 'C', long = "workspace", value_name = "DIR", global = true)]
    pub workspace: Option<PathBuf>,
    /// Log format on stderr
    #[arg(long, value_enum, value_name = "FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
    /// More log output (-v debug, -vv trace)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less log output (-q errors only)
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run COMMAND holding the workspace lock
    Run(RunArgs),
    /// Report what this process inherited, then each signal it receives (for tests)
    #[command(hide = true)]
    Probe(ProbeArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Task text recorded in the lock metadata [default: the command line]
    #[arg(long, value_name = "TEXT", value_parser = clap::value_parser!(OsString))]
    pub prompt: Option<OsString>,
    /// Time between TERM and KILL when stopping the command (e.g. 10s, 1m30s)
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "10s")]
    pub stop_grace: Duration,
    /// Exit code when the workspace is taken
    #[arg(long, value_name = "N", default_value_t = CONFLICT_DEFAULT)]
    pub conflict_exit_code: u8,
    /// The command to run, with its arguments
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND", value_parser = clap::value_parser!(OsString))]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Die by this signal after reporting it (repeatable; TERM, SIGTERM or 15)
    #[arg(long, value_name = "SIG", value_parser = parse_signal)]
    pub exit_on: Vec<i32>,
    /// Exit with this code right after printing ready
    #[arg(long, value_name = "N")]
    pub exit: Option<u8>,
    /// Also write "ready" into this file
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Echo each stdin line as "got LINE"; exit 0 at end of input
    #[arg(long)]
    pub echo_stdin: bool,
}

impl From<ProbeArgs> for ProbeSettings {
    fn from(a: ProbeArgs) -> ProbeSettings {
        ProbeSettings {
            exit_on: a.exit_on,
            exit: a.exit,
            ready_file: a.ready_file,
            echo_stdin: a.echo_stdin,
        }
    }
}

/// Human durations: `30s`, `5m`, `1h30m`, `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e} (use a duration like 30s, 5m or 1h30m)"))
}

fn parse_signal(text: &str) -> Result<i32, String> {
    crate::signals::parse(text).map(|s| s as i32)
}

/// The clap command, for man pages and completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("10").is_err());
    }
}
