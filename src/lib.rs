//! ralph-supervise: at most one primary agent loop per workspace.
//!
//! `main` parses the command line, sets up logging and calls [`run`], which returns an
//! exit status or a [`Failure`] that is printed once, with its context chain.

pub mod cli;
pub mod conflict;
pub mod exit;
pub mod lock;
pub mod logging;
pub mod metadata;
pub mod policy;
pub mod probe;
pub mod procfs;
pub mod run;
pub mod service;
pub mod history;
pub mod signals;
pub mod stop_request;
pub mod supervisor;
pub mod sys;
pub mod terminal;
pub mod watch;
pub mod workspace;
pub mod worktree;

use std::process::ExitCode;

use cli::{Cli, Command, GlobalArgs, LogFormat, PolicyArgs, PolicyCommand};
pub use exit::{ExitStatus, Failure};

/// Parses, logs, dispatches, prints the one error line, and exits.
pub fn main() -> ExitCode {
    let cli = <Cli as clap::Parser>::parse();
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
            let workspace = workspace::resolve(global.workspace.as_deref())?;
            let effective = effective_policy(&workspace, &args.policy, &global)?;
            init_logging(&global, Some(&effective.policy));
            let in_git_repo = workspace::git_toplevel(&workspace).is_some();
            let policy = effective.policy;
            let settings = run::RunSettings {
                on_conflict: policy.conflict.effective(in_git_repo),
                in_git_repo,
                workspace,
                prompt: args.prompt.map(|p| p.to_string_lossy().into_owned()),
                command: args.command,
                policy,
            };
            run::run(settings)
        }
        Command::Policy(PolicyCommand::Show(args)) => {
            init_logging(&global, None);
            let workspace = workspace::resolve(global.workspace.as_deref())?;
            let effective = effective_policy(&workspace, &args, &global)?;
            print!("{}", policy::show(&effective));
            Ok(ExitStatus::SUCCESS)
        }
        Command::Policy(PolicyCommand::Check { file }) => {
            init_logging(&global, None);
            policy::load(&file)?;
            println!("{}: ok", file.display());
            Ok(ExitStatus::SUCCESS)
        }
        Command::Probe(args) => probe::probe(args.into()),
    }
}

fn effective_policy(
    workspace: &std::path::Path,
    args: &PolicyArgs,
    global: &GlobalArgs,
) -> Result<policy::Effective, Failure> {
    policy::effective(
        args.policy.as_deref(),
        workspace,
        &policy::process_env,
        &args.overrides(global.log_format),
    )
}

/// Logging from flags, then the policy's `[log]`, then defaults.
fn init_logging(global: &GlobalArgs, policy: Option<&policy::Policy>) {
    let format = global
        .log_format
        .or(policy.map(|p| p.log.format))
        .unwrap_or(LogFormat::Text);
    let level = policy.map(|p| p.log.level.as_str()).unwrap_or("info");
    logging::init(format, level, global.verbose, global.quiet);
}
