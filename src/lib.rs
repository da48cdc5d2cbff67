//! ralph-supervise: at most one primary agent loop per workspace.
//!
//! `main` parses the command line, sets up logging and calls [`run`], which returns an
//! exit status or a [`Failure`] that is printed once, with its context chain.

pub mod cli;
pub mod completions;
pub mod exit;
pub mod lock;
pub mod logging;
pub mod man;
pub mod metadata;
pub mod notify;
pub mod policy;
pub mod probe;
pub mod procfs;
pub mod run;
pub mod signals;
pub mod supervisor;
pub mod sys;
pub mod terminal;
pub mod workspace;

use std::process::ExitCode;

use cli::{Cli, Command, LogFormat};
pub use exit::{ExitStatus, Failure};

/// Parses, logs, dispatches, prints the one error line, and exits.
pub fn main() -> ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    logging::init(
        cli.global.log_format.unwrap_or(LogFormat::Text),
        cli.global.verbose,
        cli.global.quiet,
    );
    match run(cli) {
        Ok(status) => ExitCode::from(status.code()),
        Err(failure) => {
            eprintln!("ralph-supervise: {:#}", failure.error);
            ExitCode::from(failure.status.code())
        }
    }
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<ExitStatus, Failure> {
    let global = cli.global;
    match cli.command {
        Command::Run(args) => {
            let settings = run::RunSettings {
                workspace: workspace::resolve(global.workspace.as_deref())?,
                prompt: args.prompt.map(|p| p.to_string_lossy().into_owned()),
                command: args.command,
                stop_grace: args.stop_grace,
                kill_orphans: true,
                conflict_exit_code: args.conflict_exit_code,
            };
            run::run(settings)
        }
        Command::Probe(args) => probe::probe(args.into()),
    }
}
