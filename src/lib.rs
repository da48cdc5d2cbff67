//! ralph-supervise: at most one primary agent loop per workspace.
//!
//! `main` parses the command line, sets up logging and calls [`run`], which returns an
//! exit status or a [`Failure`] that is printed once, with its context chain.
//!
//! `unsafe` is denied everywhere but in [`sys`], where each block says why it is sound.
//! ARCHITECTURE.md says which module holds what.

#![deny(unsafe_code)]

pub(crate) mod activity;
pub(crate) mod cgroup;
pub(crate) mod child_env;
pub mod cli;
pub(crate) mod completions;
pub(crate) mod conflict;
pub(crate) mod containment;
pub(crate) mod control;
pub mod exit;
#[cfg(feature = "fleet")]
pub(crate) mod fleet;
/// Without the `fleet` feature: the same names, and one clear line if asked for.
#[cfg(not(feature = "fleet"))]
#[path = "fleet/off.rs"]
pub(crate) mod fleet;
pub(crate) mod fleet_settings;
pub(crate) mod handover;
pub mod history;
pub(crate) mod hooks;
pub(crate) mod limits;
pub(crate) mod lock;
pub(crate) mod logging;
pub mod man;
pub mod metadata;
pub(crate) mod notify;
pub mod policy;
mod present;
pub(crate) mod probe;
pub(crate) mod procfs;
pub(crate) mod ralph_dir;
pub(crate) mod run;
pub(crate) mod service;
pub(crate) mod setting;
pub(crate) mod signals;
pub(crate) mod stop_request;
pub(crate) mod supervisor;
#[allow(unsafe_code)]
pub(crate) mod sys;
pub(crate) mod terminal;
pub(crate) mod watch;
pub(crate) mod workspace;
pub mod worktree;

use cli::{Cli, Command, GlobalArgs, LogFormat, PolicyArgs, PolicyCommand};
use exit::ResultExt;
pub(crate) use exit::{ExitStatus, Failure};

/// Parses, logs, dispatches, prints the one error line, and returns the exit status.
/// The process's entry point, called once, before any other thread exists: it takes
/// the etcd credentials out of the environment (`sys::take_env`).
pub fn main() -> u8 {
    // What Rust's start-up would have done (the binary skips it, see main.rs): SIGPIPE
    // ignored, so output to a closed pipe fails with EPIPE, which `logging` handles,
    // instead of killing us before the exit status is settled; no standard descriptor
    // left closed.
    sys::start_up();
    fleet_settings::take_credentials();
    let cli = cli::parse();
    let log_format = cli.global.log_format;
    // (The binary's `main` flushes standard output once this returns.)
    match run(cli) {
        Ok(status) => status.code(),
        Err(failure) => {
            // Through the logging writer: a broken stderr must not turn the exit status
            // into a panic.
            logging::print_error(&failure.error, failure.status.code(), log_format);
            failure.status.code()
        }
    }
}

/// Runs one parsed command line.
pub(crate) fn run(cli: Cli) -> Result<ExitStatus, Failure> {
    let global = cli.global;
    match cli.command {
        Command::Run(args) => {
            let (workspace, repo) = workspace::resolve_in_repo(global.workspace.as_deref())?;
            let effective = effective_policy(&workspace, &args.policy, &global)?;
            init_logging(&global, Some(&effective.policy));
            let policy = effective.policy;
            let settings = run::RunSettings {
                on_conflict: conflict::policy_for(policy.conflict.policy, repo.is_some()),
                repo,
                workspace,
                chdir: global.workspace.is_some(),
                handover: false,
                prompt: run::RunSettings::task(
                    args.prompt.map(|p| p.to_string_lossy().into_owned()),
                    &args.command,
                ),
                command: args.command,
                policy,
            };
            let status = run::run(settings)?;
            terminal::end_like_the_command(status);
            Ok(status)
        }
        Command::Policy(PolicyCommand::Show(args)) => {
            init_logging(&global, None);
            let workspace = workspace::resolve(global.workspace.as_deref())?;
            let effective = effective_policy(&workspace, &args, &global)?;
            logging::print(&present::policy(&effective))?;
            Ok(ExitStatus::SUCCESS)
        }
        Command::Policy(PolicyCommand::Check { file }) => {
            init_logging(&global, None);
            policy::load(&file)?;
            logging::print(&format!("{}: ok\n", present::path(&file)))?;
            Ok(ExitStatus::SUCCESS)
        }
        Command::Status { json, fleet } | Command::List { json, fleet } if fleet => {
            init_logging(&global, None);
            let (workspace, repo) = workspace::resolve_in_repo(global.workspace.as_deref())?;
            let effective = effective_policy(&workspace, &PolicyArgs::default(), &global)?;
            let every_key = matches!(cli.command, Command::List { .. });
            fleet::show(&effective.policy, repo.as_deref(), every_key, json)
        }
        Command::Status { json, .. } => {
            init_logging(&global, None);
            control::status(&workspace::resolve(global.workspace.as_deref())?, json)
        }
        Command::List { json, .. } => {
            init_logging(&global, None);
            control::list(&workspace::resolve(global.workspace.as_deref())?, json)
        }
        Command::Stop(args) => {
            init_logging(&global, None);
            let workspace = workspace::resolve(global.workspace.as_deref())?;
            let effective = effective_policy(&workspace, &PolicyArgs::default(), &global)?;
            if let Some(key) = &args.fleet {
                return fleet::stop(&effective.policy, key, args.timeout);
            }
            let settings = control::StopSettings {
                id: args.id,
                signal: args.signal,
                stop_signal: effective.policy.stop.signal,
                timeout: args.timeout,
                kill: args.kill,
                grace: effective.policy.stop.grace,
            };
            control::stop(&workspace, &settings)
        }
        Command::Wait { timeout } => {
            init_logging(&global, None);
            control::wait(&workspace::resolve(global.workspace.as_deref())?, timeout)
        }
        Command::History { json, limit } => {
            init_logging(&global, None);
            control::show_history(
                &workspace::resolve(global.workspace.as_deref())?,
                limit,
                json,
            )
        }
        Command::Gc { dry_run, policy } => {
            init_logging(&global, None);
            let workspace = workspace::resolve(global.workspace.as_deref())?;
            let args = PolicyArgs {
                policy,
                ..PolicyArgs::default()
            };
            let effective = effective_policy(&workspace, &args, &global)?;
            let wt = &effective.policy.worktree;
            control::gc(&workspace, &wt.dir, &wt.branch_prefix, dry_run)
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            completions::generate(shell, cli::command(), &mut script);
            logging::print(&String::from_utf8_lossy(&script))?;
            Ok(ExitStatus::SUCCESS)
        }
        Command::Man { dir } => {
            man::write_all(&dir, cli::command())
                .or_fail(format!("cannot write manual pages to {}", dir.display()))?;
            Ok(ExitStatus::SUCCESS)
        }
        Command::HandoverAnswer { socket, lock } => handover::answer(socket, lock),
        Command::Probe(args) => {
            // The test probe dies of SIGPIPE like any plain Unix tool.
            sys::default_sigpipe();
            probe::probe(args.into())
        }
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
        &|name| std::env::var_os(name),
        &args.overrides(global.log_format),
    )
}

/// Logging from flags, then the policy's `[log]`, then defaults.
fn init_logging(global: &GlobalArgs, policy: Option<&policy::Policy>) {
    let format = global
        .log_format
        .or(policy.map(|p| p.log.format))
        .unwrap_or(LogFormat::Text);
    let level = policy.map_or("info", |p| policy::Keyword::as_str(p.log.level));
    logging::init(format, level, global.verbose, global.quiet);
}
