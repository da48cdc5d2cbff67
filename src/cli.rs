//! The command line, and only the command line: clap types stop here. Each subcommand's
//! flags are turned into a plain settings struct for the module that does the work.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};

pub(crate) use crate::logging::LogFormat;
use crate::policy::{Key, Overrides, TABLE};
use crate::probe::ProbeSettings;
use crate::setting::Keyword;

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
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// Workspace directory [default: the git top-level of the current directory, else the current directory]
    #[arg(short = 'C', long = "workspace", value_name = "DIR", global = true)]
    pub(crate) workspace: Option<PathBuf>,
    /// Log format on stderr
    #[arg(long, value_name = "FORMAT", global = true, value_parser = keyword::<LogFormat>())]
    pub(crate) log_format: Option<LogFormat>,
    /// More log output (-v debug, -vv trace)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Less log output (-q errors only)
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: u8,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run COMMAND holding the workspace lock
    Run(RunArgs),
    /// Show who holds the workspace (exit 0 if a loop runs, 3 if none)
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// The workspace's fleet key instead: its holder and waiters on every host, from etcd ([fleet] in the policy)
        #[arg(long)]
        fleet: bool,
    },
    /// List the primary loop and every worktree loop
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// Every fleet key's holders, waiters and reserved worktree ids, on every host, from etcd
        #[arg(long)]
        fleet: bool,
    },
    /// Stop a loop gracefully and wait until its lock is released
    Stop(StopArgs),
    /// Block until the workspace is free (exit 0, or 124 at the timeout)
    Wait {
        /// Give up after this long
        #[arg(long, value_name = "DUR", value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// Show the runs recorded in .ralph/supervise/runs.jsonl
    History {
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// How many of the latest runs
        #[arg(short = 'n', long = "limit", value_name = "N", default_value_t = 20)]
        limit: usize,
    },
    /// Prune dead registry entries and remove clean, finished worktrees
    ///
    /// A worktree under worktree.dir is removed when no loop holds it (nor runs there
    /// by the registry: a worktree loop ralph started itself holds no lock, and runs
    /// while its pid lives and its directory is there), it has no
    /// uncommitted changes and no commit the main work tree's HEAD lacks; its branch
    /// is deleted with it when the name starts with worktree.branch_prefix. Worktrees
    /// with unmerged work are listed, never deleted; one whose .ralph/agent/context.md
    /// is less than 2 minutes old is taken for a launch in progress and left alone.
    /// Outside a git repository there are no worktrees: only the registry
    /// (.ralph/loops.json) is pruned.
    Gc {
        /// Say what would be done, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Policy file (for worktree.dir and worktree.branch_prefix)
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// Show or check the policy file
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Print a shell completion script
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: crate::completions::Shell,
    },
    /// Write the manual pages into DIR (for packagers)
    #[command(hide = true)]
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Report what this process inherited, then each signal it receives (for tests)
    #[command(hide = true)]
    Probe(ProbeArgs),
    /// Answer the lock hand-over's trapped flock calls (started by `run`)
    #[command(name = "handover-answer", hide = true)]
    HandoverAnswer {
        /// The socket the child sends its seccomp listener over
        socket: i32,
        /// The locked descriptor
        lock: i32,
    },
}

/// `run`'s arguments; the policy flags are `P` ([`UnhelpedPolicyArgs`] in [`parse`]'s
/// parser of `run` alone).
#[derive(Debug, Args)]
pub(crate) struct RunArgs<P: Args = PolicyArgs> {
    /// Task text recorded in the lock metadata [default: the command line]
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true, value_parser = clap::value_parser!(OsString))]
    pub(crate) prompt: Option<OsString>,
    #[command(flatten)]
    pub(crate) policy: P,
    /// The command to run, with its arguments
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND", value_parser = clap::value_parser!(OsString))]
    pub(crate) command: Vec<OsString>,
}

/// Flags that override the policy file (shared by `run` and `policy show`): `--policy`,
/// and one flag per policy key that has one, made from the policy's key table (name,
/// meaning, default, keywords), so that a key's flag is declared where the key is.
#[derive(Debug, Clone, Default)]
pub(crate) struct PolicyArgs {
    /// `--policy FILE`.
    pub(crate) policy: Option<PathBuf>,
    pub(crate) overrides: Overrides,
}

/// Global flags of the key table, declared in [`GlobalArgs`] instead.
const GLOBAL_FLAGS: [&str; 1] = ["log_format"];

fn policy_flags() -> impl Iterator<Item = &'static Key> {
    let local = |key: &&Key| key.flag.is_some_and(|f| !GLOBAL_FLAGS.contains(&f));
    TABLE.iter().filter(local)
}

/// `--stop-grace`'s argument: help from the key's meaning and default (without `help`,
/// none: see [`parse`]), keyword values as possible values, the value checked by
/// [`Overrides::set`] (a bad one exits 2).
fn policy_flag(key: &'static Key, help: bool) -> clap::Arg {
    let plain = |text: &str| text.replace('`', "");
    let name = key.flag.unwrap_or_default();
    let text = || {
        let default = key
            .default()
            .map_or_else(String::from, |d| d.trim_matches('"').into());
        let meaning = plain(key.doc.split(". ").next().unwrap_or(key.doc));
        let meaning = meaning.trim_end_matches('.');
        match key.entry {
            None => format!("{meaning} [default: {default}]"),
            Some(_) => format!("{meaning} (repeatable)"),
        }
    };
    let value_name = match key.kind {
        _ if key.entry.is_some() => key.entry.unwrap_or_default().to_string(),
        kind if kind.starts_with("duration") => "DUR".to_string(),
        "string or integer" => "SIG".to_string(),
        kind if kind.starts_with("integer") => "N".to_string(),
        _ => key.name.to_uppercase(),
    };
    let check = move |text: &str| {
        let mut overrides = Overrides::default();
        overrides.set(name, text).map(|()| text.to_string())
    };
    let arg = clap::Arg::new(name)
        .long(name.replace('_', "-"))
        .value_name(value_name);
    let arg = if help { arg.help(text()) } else { arg };
    let arg = match key.entry {
        Some(_) => arg.action(clap::ArgAction::Append),
        None => arg,
    };
    // `--handover` alone: "always" (an optional value must then follow `=`).
    let arg = match bare_value(name) {
        Some(value) => arg
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value(value),
        None => arg,
    };
    match key.values {
        [] => arg.value_parser(check),
        values => arg.value_parser(PossibleValuesParser::new(values.iter().map(
            |(v, meaning)| match help {
                true => PossibleValue::new(*v).help(plain(meaning)),
                false => PossibleValue::new(*v),
            },
        ))),
    }
}

/// The value of flag `name` given alone (`--handover` is `--handover=always`); such a
/// flag's value must follow `=`.
fn bare_value(name: &str) -> Option<&'static str> {
    (name == "handover").then_some("always")
}

/// `--policy` and the policy flags, with their help or (`help` false) without.
fn policy_args(cmd: clap::Command, help: bool) -> clap::Command {
    let policy = clap::Arg::new("policy")
        .long("policy")
        .value_name("FILE")
        .value_parser(clap::value_parser!(PathBuf))
        .help("Policy file [default: $RALPH_SUPERVISE_POLICY, .ralph/supervise.toml, $XDG_CONFIG_HOME/ralph-supervise/policy.toml]");
    let flags = policy_flags().map(|key| policy_flag(key, help));
    cmd.arg(policy).args(flags.collect::<Vec<_>>())
}

impl clap::Args for PolicyArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        policy_args(cmd, true)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// [`PolicyArgs`] without the help texts, for the `run` parser of [`parse`]: writing
/// each flag's help (its default as TOML, its keywords' meanings) was most of that
/// parser's work, and its help is never shown.
#[derive(Debug, Clone, Default)]
pub(crate) struct UnhelpedPolicyArgs(PolicyArgs);

impl clap::Args for UnhelpedPolicyArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        policy_args(cmd, false)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for UnhelpedPolicyArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        PolicyArgs::from_arg_matches(m).map(UnhelpedPolicyArgs)
    }
    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(m)
    }
}

impl clap::FromArgMatches for PolicyArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut args = PolicyArgs {
            policy: m.get_one::<PathBuf>("policy").cloned(),
            overrides: Overrides::default(),
        };
        for name in policy_flags().filter_map(|key| key.flag) {
            for text in m.get_many::<String>(name).into_iter().flatten() {
                let set = args.overrides.set(name, text);
                set.map_err(|e| clap::Error::raw(clap::error::ErrorKind::ValueValidation, e))?;
            }
        }
        Ok(args)
    }
    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl PolicyArgs {
    /// The flags as policy overrides, with the global `--log-format`.
    pub(crate) fn overrides(&self, log_format: Option<LogFormat>) -> Overrides {
        let mut overrides = self.overrides.clone();
        if let Some(format) = log_format {
            let set = overrides.set(GLOBAL_FLAGS[0], format.as_str());
            debug_assert!(set.is_ok(), "{set:?}");
        }
        overrides
    }
}

#[derive(Debug, Args)]
pub(crate) struct StopArgs {
    /// A worktree loop's id (see `list`) [default: the workspace's own loop]
    #[arg(value_name = "ID", conflicts_with = "fleet")]
    pub(crate) id: Option<String>,
    /// Ask the holder of fleet key KEY, on whatever host, to stop (through etcd), and wait until it lets go
    #[arg(long, value_name = "KEY", conflicts_with = "kill")]
    pub(crate) fleet: Option<String>,
    /// Signal the loop's command gets (TERM, SIGINT, 15, ...) [default: the loop's stop.signal, TERM unless set]
    #[arg(long, value_name = "SIG", value_parser = parse_signal)]
    pub(crate) signal: Option<i32>,
    /// How long to wait for the lock to be released (longer than the loop's stop grace, when that is long)
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "60s")]
    pub(crate) timeout: Duration,
    /// Kill the loop at once instead of asking it to stop: its supervisor sends KILL to every process of the loop (no grace, no restart); with the supervisor gone, the command's process group or the loop's cgroup is killed from here
    #[arg(long)]
    pub(crate) kill: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Print the effective policy and where each value came from
    Show(PolicyArgs),
    /// Validate a policy file (exit 0 when valid, 78 when not)
    Check {
        /// The policy file to check
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ProbeArgs {
    /// Die by this signal after reporting it (repeatable; TERM, SIGTERM or 15)
    #[arg(long, value_name = "SIG", value_parser = parse_signal)]
    pub(crate) exit_on: Vec<i32>,
    /// Exit with this code right after printing ready
    #[arg(long, value_name = "N")]
    pub(crate) exit: Option<u8>,
    /// Also write "ready" into this file
    #[arg(long, value_name = "PATH")]
    pub(crate) ready_file: Option<PathBuf>,
    /// Echo each stdin line as "got LINE"; exit 0 at end of input
    #[arg(long)]
    pub(crate) echo_stdin: bool,
    /// Also write the report into this file
    #[arg(long, value_name = "PATH")]
    pub(crate) report_file: Option<PathBuf>,
    /// Before ready, use this much CPU time (milliseconds) in a busy loop
    #[arg(long, value_name = "MS")]
    pub(crate) burn_ms: Option<u64>,
    /// Before ready, try to start N `sleep` processes and print "spawned K"
    #[arg(long, value_name = "N")]
    pub(crate) spawn: Option<u32>,
    /// Panic right after ready (the binary's panic path)
    #[arg(long)]
    pub(crate) panic: bool,
    /// Instead of reporting, exec the command after `--` with clone3 failing (ENOSYS),
    /// as under a seccomp profile that predates it: the supervisor's fallback spawn
    #[arg(long, requires = "command")]
    pub(crate) exec_without_clone3: bool,
    /// The command for --exec-without-clone3
    #[arg(last = true, value_name = "COMMAND")]
    pub(crate) command: Vec<OsString>,
}

impl From<ProbeArgs> for ProbeSettings {
    fn from(a: ProbeArgs) -> ProbeSettings {
        ProbeSettings {
            exit_on: a.exit_on,
            exit: a.exit,
            ready_file: a.ready_file,
            echo_stdin: a.echo_stdin,
            report_file: a.report_file,
            burn_ms: a.burn_ms,
            spawn: a.spawn,
            panic: a.panic,
            exec_without_clone3: a.exec_without_clone3.then_some(a.command),
        }
    }
}

/// A policy keyword: its spellings (with their help) are the possible values.
fn keyword<K: Keyword>() -> impl TypedValueParser<Value = K> {
    let values = K::VALUES
        .iter()
        .map(|(v, meaning)| PossibleValue::new(*v).help(*meaning));
    PossibleValuesParser::new(values).map(|text| K::parse(&text).expect("a possible value"))
}

/// Human durations: `30s`, `5m`, `1h30m`, `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::setting::duration(text)
}

fn parse_signal(text: &str) -> Result<i32, String> {
    crate::signals::parse(text).map(|s| s as i32)
}

/// `run` alone: building clap's whole command tree (every subcommand) takes longer than
/// everything else the supervisor does before it spawns (measured: 210 us of a 1.2 ms
/// start), and `run` sits on every loop start.
#[derive(Debug, Parser)]
#[command(name = "ralph-supervise")]
struct RunOnly {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: RunOnlyCommand,
}

#[derive(Debug, Subcommand)]
enum RunOnlyCommand {
    Run(RunArgs<UnhelpedPolicyArgs>),
}

/// Parses the command line. A `run` line goes through a parser that knows only `run`;
/// anything else, and any `run` line that parser does not accept as it is (help,
/// errors), goes through the full parser, so every message is the full parser's.
pub(crate) fn parse() -> Cli {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if let Some(cli) = plain_run(&args) {
        return cli;
    }
    if subcommand_name(args.into_iter()).is_some_and(|name| name == "run")
        && let Ok(r) = <RunOnly as Parser>::try_parse()
    {
        let RunOnlyCommand::Run(args) = r.command;
        let args = RunArgs {
            prompt: args.prompt,
            policy: args.policy.0,
            command: args.command,
        };
        return Cli {
            global: r.global,
            command: Command::Run(args),
        };
    }
    match <Cli as Parser>::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => escaped_error(e).exit(),
    }
}

/// The common `run` lines, read without clap: building even the `run`-only parser and
/// running it was 45 % of the instructions of a refused run (`--on-conflict fail`).
/// Global flags (`-C DIR`, `--workspace[=]DIR`, `--log-format[=]FORMAT`, `-v`..., `-q`...)
/// and `run`'s flags (`--prompt`, `--policy` and the policy flags, each `--flag VALUE`
/// or `--flag=VALUE`; `--handover` alone or `--handover=VALUE`), then `--` and the
/// command. Each value is checked as clap's parser checks it. Anything else (another
/// spelling, a flag given twice, a value that starts with `-` or is empty, a word that
/// is not UTF-8, a bad value, help) is `None`, and clap parses the line: every message
/// and every decision other than these lines' is clap's.
fn plain_run(args: &[OsString]) -> Option<Cli> {
    let mut global = GlobalArgs {
        workspace: None,
        log_format: None,
        verbose: 0,
        quiet: 0,
    };
    let (mut prompt, mut policy, mut run) = (None, PolicyArgs::default(), false);
    let mut seen = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let word = word.to_str()?;
        if word == "--" {
            let command: Vec<OsString> = words.cloned().collect();
            // (-v with -q, and no command, are clap's errors to report.)
            let clap_refuses = (global.verbose > 0 && global.quiet > 0) || command.is_empty();
            return (run && !clap_refuses).then_some(Cli {
                global,
                command: Command::Run(RunArgs {
                    prompt,
                    policy,
                    command,
                }),
            });
        }
        if word == "run" && !run {
            run = true;
            continue;
        }
        // `-v`, `-vv`, `-q`...: counted, as clap counts them.
        if let Some(letters) = word.strip_prefix('-')
            && let Some(letter) = letters.bytes().next().filter(|l| b"vq".contains(l))
            && letters.bytes().all(|b| b == letter)
        {
            // (Given both before and after `run`, clap keeps the count after it.)
            let (count, side) = match letter {
                b'v' => (&mut global.verbose, ["-v", "run -v"]),
                _ => (&mut global.quiet, ["-q", "run -q"]),
            };
            if seen.contains(&side[usize::from(!run)]) {
                return None;
            }
            seen.push(side[usize::from(run)]);
            *count = count.checked_add(u8::try_from(letters.len()).ok()?)?;
            continue;
        }
        let (flag, inline) = match word.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value)),
            _ => (word, None),
        };
        let name = match flag {
            "-C" if inline.is_none() => "workspace",
            _ => flag.strip_prefix("--")?,
        };
        let key = TABLE
            .iter()
            .find(|k| k.flag.is_some_and(|f| f.replace('_', "-") == name));
        let repeatable = key.is_some_and(|k| k.entry.is_some());
        if seen.contains(&name) && !repeatable {
            return None;
        }
        seen.push(name);
        let bare = key.and_then(|k| bare_value(k.flag?));
        let value = match (inline, bare) {
            (Some(value), _) => value,
            (None, Some(value)) => value,
            (None, None) => words.next()?.to_str()?,
        };
        if value.is_empty() || value.starts_with('-') {
            return None;
        }
        match (name, key) {
            ("workspace", _) => global.workspace = Some(PathBuf::from(value)),
            ("log-format", _) => global.log_format = Some(LogFormat::parse(value).ok()?),
            ("prompt", _) if run => prompt = Some(OsString::from(value)),
            ("policy", _) if run => policy.policy = Some(PathBuf::from(value)),
            (_, Some(key)) if run && !GLOBAL_FLAGS.contains(&key.flag?) => {
                policy.overrides.set(key.flag?, value).ok()?;
            }
            _ => return None,
        }
    }
    None
}

/// A usage error whose quoted arguments have their control characters escaped: clap
/// quotes what it rejects as it is, so the same command line is parsed again with each
/// argument escaped ([`crate::present::escape`]) and that error is shown instead, when
/// it is the same kind of error (else the original, which then quotes nothing raw that
/// the escaped line would not have).
fn escaped_error(original: clap::Error) -> clap::Error {
    let args = std::env::args_os().map(|arg| match arg.to_str() {
        Some(text) => OsString::from(crate::present::escape(text).into_owned()),
        None => arg,
    });
    match <Cli as Parser>::try_parse_from(args) {
        Err(e) if e.kind() == original.kind() => e,
        _ => original,
    }
}

/// The first word that is neither a global flag nor a global flag's value.
fn subcommand_name(mut args: impl Iterator<Item = OsString>) -> Option<OsString> {
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-C" | "--workspace" | "--log-format") => {
                args.next();
            }
            Some(a) if a.starts_with('-') => {}
            _ => return Some(arg),
        }
    }
    None
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
    fn run_lines_are_recognised_past_global_flags() {
        let name = |args: &[&str]| subcommand_name(args.iter().map(OsString::from));
        assert_eq!(name(&["run", "--", "x"]), Some("run".into()));
        assert_eq!(
            name(&["-C", "run", "status"]),
            Some("status".into()),
            "-C's value is skipped"
        );
        assert_eq!(
            name(&["-v", "--workspace", "/w", "run"]),
            Some("run".into())
        );
        assert_eq!(name(&["--log-format", "json", "run"]), Some("run".into()));
        assert_eq!(name(&["-q"]), None);
    }

    #[test]
    fn the_run_only_parser_agrees_with_the_full_one() {
        let argv = [
            "ralph-supervise",
            "-C",
            "/w",
            "-v",
            "run",
            "--prompt",
            "p",
            "--on-conflict",
            "wait",
            "--stop-grace",
            "3s",
            "--",
            "cmd",
            "--flag",
        ];
        let full = <Cli as Parser>::try_parse_from(argv).unwrap();
        let fast = <RunOnly as Parser>::try_parse_from(argv).unwrap();
        let (Command::Run(a), RunOnlyCommand::Run(b)) = (full.command, fast.command) else {
            panic!("not run")
        };
        assert_eq!(format!("{:?}", a.policy), format!("{:?}", b.policy.0));
        assert_eq!((a.prompt, a.command), (b.prompt, b.command));
        assert_eq!(format!("{:?}", full.global), format!("{:?}", fast.global));
    }

    fn words(line: &[&str]) -> Vec<OsString> {
        line.iter().map(OsString::from).collect()
    }

    /// What clap makes of `line`, as text (`None`: a usage error, help or version).
    fn by_clap(line: &[OsString]) -> Option<String> {
        let argv = std::iter::once(OsString::from("ralph-supervise")).chain(line.iter().cloned());
        <Cli as Parser>::try_parse_from(argv)
            .ok()
            .map(|cli| format!("{cli:?}"))
    }

    #[test]
    fn common_run_lines_are_read_without_clap_as_clap_reads_them() {
        for line in [
            &["run", "--", "ralph", "run"][..],
            &[
                "-C",
                "/w",
                "run",
                "--on-conflict",
                "wait",
                "--",
                "x",
                "--flag",
            ],
            &[
                "-q",
                "--workspace=/w",
                "run",
                "--stop-grace=3s",
                "--handover",
                "--",
                "x",
            ],
            &[
                "run",
                "-vv",
                "--restart-exit",
                "75=30m",
                "--restart-exit=1=stop",
                "--",
                "x",
            ],
            &[
                "--log-format",
                "json",
                "run",
                "--policy",
                "p.toml",
                "--prompt",
                "a task",
                "--",
                "x",
            ],
        ] {
            let line = words(line);
            let plain = plain_run(&line).map(|cli| format!("{cli:?}"));
            assert!(plain.is_some(), "{line:?} is read without clap");
            assert_eq!(plain, by_clap(&line), "{line:?}");
        }
        // Left to clap: its own messages, or spellings this reader does not take.
        for line in [
            &["run", "--stop-grace", "1s", "--stop-grace", "2s", "--", "x"][..],
            &["run", "--handover", "never", "--", "x"],
            &["-v", "-q", "run", "--", "x"],
            // (clap keeps the count given after `run`: found by the property test below)
            &["-v", "run", "-v", "--", "x"],
            &["run", "--stop-grace", "soon", "--", "x"],
            &["run", "--max-restarts", "-1", "--", "x"],
            &["run", "--help"],
            &["run", "x"],
            &["run", "--"],
            &["-vq", "run", "--", "x"],
            &["--on-conflict", "wait", "run", "--", "x"],
            &["status", "--", "x"],
        ] {
            assert!(
                plain_run(&words(line)).is_none(),
                "{line:?} is left to clap"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        /// Whatever the reader without clap accepts, clap reads the same way.
        #[test]
        fn the_plain_run_reader_agrees_with_clap(
            before in proptest::collection::vec(proptest::sample::select(GLOBAL_WORDS), 0..4),
            run in proptest::bool::weighted(0.9),
            flags in proptest::collection::vec(proptest::sample::select(RUN_WORDS), 0..7),
            end in proptest::bool::weighted(0.9),
            command in proptest::collection::vec(proptest::sample::select(&["x", "--y", "-", "--", "run"][..]), 0..3),
        ) {
            let mut line: Vec<&str> = before;
            line.extend(run.then_some("run"));
            line.extend(flags);
            line.extend(end.then_some("--"));
            line.extend(command);
            let line = words(&line);
            if let Some(cli) = plain_run(&line) {
                proptest::prop_assert_eq!(Some(format!("{cli:?}")), by_clap(&line), "{:?}", line);
            }
        }
    }

    const GLOBAL_WORDS: &[&str] = &[
        "-C",
        "/w",
        "--workspace",
        "--workspace=/v",
        "-v",
        "-vv",
        "-q",
        "-qq",
        "-vq",
        "--log-format",
        "json",
        "--log-format=text",
        "--log-format=xml",
        "run",
        "",
    ];
    const RUN_WORDS: &[&str] = &[
        "--prompt",
        "a task",
        "--prompt=-dash",
        "--policy",
        "p.toml",
        "--policy=",
        "-C",
        "/w",
        "--on-conflict",
        "wait",
        "fail",
        "Wait",
        "--on-conflict=worktree",
        "--stop-grace",
        "3s",
        "soon",
        "--stop-grace=1m",
        " 5s",
        "--restart-exit",
        "75=30m",
        "--restart-exit=1=stop",
        "--restart-exit=x",
        "--handover",
        "--handover=never",
        "never",
        "--max-restarts",
        "5",
        "-1",
        "--wait-timeout=",
        "--wait-timeout",
        "0s",
        "--restart",
        "on-failure",
        "--containment",
        "tree",
        "--stop-signal=INT",
        "--help",
        "-h",
        "-x",
        "--nope",
        "é",
        "-v",
        "-q",
        "--log-format",
        "json",
    ];

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("10").is_err());
    }

    #[test]
    fn keywords_match_clap_spellings() {
        use crate::conflict::{AfterTimeout, OnConflict};
        use crate::containment::{ContainmentMode, Orphans};
        use crate::supervisor::machine::RestartWhen;
        use crate::worktree::OnExit;
        fn check<K: Keyword + std::fmt::Display>() {
            let parser = keyword::<K>();
            let clap_names: Vec<String> = (parser.possible_values().unwrap())
                .map(|v| v.get_name().to_string())
                .collect();
            let names: Vec<String> = K::ALL.iter().map(|v| v.to_string()).collect();
            assert_eq!(clap_names, names);
        }
        check::<OnConflict>();
        check::<AfterTimeout>();
        check::<OnExit>();
        check::<Orphans>();
        check::<ContainmentMode>();
        check::<RestartWhen>();
        check::<LogFormat>();
        assert_eq!("on-failure".parse(), Ok(RestartWhen::OnFailure));
        assert_eq!("remove-if-clean".parse(), Ok(OnExit::RemoveIfClean));
        assert_eq!(
            "Wait".parse::<OnConflict>(),
            Err("\"Wait\" is not valid; expected one of worktree, wait, fail, takeover".into())
        );
    }
}
