//! The policy file: where it is found, how it is read and checked, and how it combines
//! with the command line into the effective [`Policy`].
//!
//! Precedence, highest first: command-line flags ([`Overrides`]), the one policy file
//! [`find`] picks, built-in defaults. Only one file is ever read; files are not merged.
//!
//! The file is parsed into TOML's spanned document tree and checked here, key by key,
//! so every complaint is one line naming `file:line:column` of the offending key or
//! value, what is wrong, and what to do. Every such error exits 78
//! ([`ExitStatus::BadPolicy`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fmt::Write as _;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub use crate::cli::LogFormat;
use crate::exit::{CONFLICT_DEFAULT, ExitStatus, Failure};

/// Environment variable naming the policy file (second in the lookup order).
pub const ENV_POLICY: &str = "RALPH_SUPERVISE_POLICY";
/// The workspace's own policy file, relative to the workspace.
pub const WORKSPACE_FILE: &str = ".ralph/supervise.toml";
/// The user's policy file, relative to `$XDG_CONFIG_HOME`.
pub const USER_FILE: &str = "ralph-supervise/policy.toml";
/// Log levels `log.level` accepts, least verbose first.
pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
const LEVEL_HINT: &str = "expected one of error, warn, info, debug, trace";

/// Defines a closed set of lowercase keywords: the enum, `ALL`, `as_str`, `FromStr` and
/// `Display`. The enums also derive `clap::ValueEnum` (same kebab-case spellings), so
/// the command line can take them directly.
macro_rules! keywords {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in documentation order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling used in policy files and on the command line.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<$name, String> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "{text:?} is not valid; expected one of {}",
                        one_of($name::ALL.iter().map(|v| v.as_str()))
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

keywords! {
    /// What `run` does when the workspace lock is already held.
    pub enum OnConflict {
        /// Run the command in a new git worktree.
        Worktree => "worktree",
        /// Block until the lock frees (optionally bounded by `wait_timeout`).
        Wait => "wait",
        /// Exit with the conflict code, naming the holder.
        Fail => "fail",
        /// Stop the holder (grace, then KILL) and take the lock.
        Takeover => "takeover",
    }
}

keywords! {
    /// What `wait` does once `wait_timeout` expires.
    pub enum AfterTimeout {
        /// Exit with the conflict code.
        Fail => "fail",
        /// Run the command in a new git worktree.
        Worktree => "worktree",
    }
}

keywords! {
    /// What happens to a worktree when its loop ends.
    pub enum OnExit {
        /// Leave it in place.
        Keep => "keep",
        /// Remove it if it has no changes and no commits beyond its base.
        RemoveIfClean => "remove-if-clean",
        /// On exit 0, queue it in `.ralph/merge-queue.jsonl`.
        QueueMerge => "queue-merge",
    }
}

keywords! {
    /// What happens to members of the child's process group left after it exits.
    pub enum Orphans {
        /// TERM, then KILL after the grace.
        Kill => "kill",
        /// Leave them running.
        Leave => "leave",
    }
}

keywords! {
    /// When the child is started again after it exits.
    pub enum RestartPolicy {
        /// Never.
        Never => "never",
        /// When it exits non-zero or dies of a signal.
        OnFailure => "on-failure",
        /// Whenever it exits (a stop still ends the run).
        Always => "always",
    }
}

/// `[conflict]`: what to do when the workspace is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// `None` = auto: `worktree` in a git repository, `fail` elsewhere.
    pub policy: Option<OnConflict>,
    /// Bound on `wait`; `None` waits without limit.
    pub wait_timeout: Option<Duration>,
    /// What `wait` does when `wait_timeout` expires.
    pub after_timeout: AfterTimeout,
    /// Exit code for `fail` and for a timed-out `wait` (1..=255).
    pub exit_code: u8,
}

impl Conflict {
    /// The policy that applies: the configured one, else `worktree` in a git
    /// repository and `fail` elsewhere.
    pub fn effective(&self, in_git_repo: bool) -> OnConflict {
        match self.policy {
            Some(policy) => policy,
            None if in_git_repo => OnConflict::Worktree,
            None => OnConflict::Fail,
        }
    }
}

/// `[worktree]`: how worktree launches are laid out and cleaned up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worktree {
    /// Where worktrees go; relative paths are relative to the repository top level.
    pub dir: PathBuf,
    /// Branch name prefix; the branch is `<prefix><loop id>`.
    pub branch_prefix: String,
    /// Carry the user's uncommitted work over into the new worktree.
    pub sync: bool,
    /// What happens to the worktree when the loop ends.
    pub on_exit: OnExit,
}

/// `[stop]`: how the child is stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// Signal that asks the child to stop (a number; see [`crate::signals::name`]).
    pub signal: i32,
    /// Time between that signal and SIGKILL.
    pub grace: Duration,
    /// What happens to the child's group left after it exits.
    pub orphans: Orphans,
}

/// `[restart]`: when and how fast the child is started again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    pub policy: RestartPolicy,
    /// Most restarts; `None` = unlimited.
    pub max: Option<u32>,
    /// Delay before the first restart; doubles each time up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest delay between restarts (never below `backoff_initial`).
    pub backoff_max: Duration,
}

impl Restart {
    /// The delay before restart number `n` (0 = the first): `backoff_initial * 2^n`,
    /// at most `backoff_max`.
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n).unwrap_or(u32::MAX);
        self.backoff_initial
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.backoff_max)
    }
}

/// `[run]`: the child's run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Stop the child gracefully when this expires, and exit 124.
    pub max_runtime: Option<Duration>,
    /// Extra environment for the child.
    pub env: BTreeMap<String, String>,
}

/// `[log]`: the supervisor's own logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub format: LogFormat,
    /// One of [`LOG_LEVELS`].
    pub level: String,
}

/// The effective policy: every value resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub conflict: Conflict,
    pub worktree: Worktree,
    pub stop: Stop,
    pub restart: Restart,
    pub run: Run,
    pub log: Log,
}

impl Default for Policy {
    /// The built-in defaults.
    fn default() -> Policy {
        Policy {
            conflict: Conflict {
                policy: None,
                wait_timeout: None,
                after_timeout: AfterTimeout::Fail,
                exit_code: CONFLICT_DEFAULT,
            },
            worktree: Worktree {
                dir: PathBuf::from(".worktrees"),
                branch_prefix: "ralph/".to_string(),
                sync: true,
                on_exit: OnExit::Keep,
            },
            stop: Stop {
                signal: libc::SIGTERM,
                grace: Duration::from_secs(10),
                orphans: Orphans::Kill,
            },
            restart: Restart {
                policy: RestartPolicy::Never,
                max: None,
                backoff_initial: Duration::from_secs(1),
                backoff_max: Duration::from_secs(60),
            },
            run: Run {
                max_runtime: None,
                env: BTreeMap::new(),
            },
            log: Log {
                format: LogFormat::Text,
                level: "info".to_string(),
            },
        }
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Built in.
    Default,
    /// The policy file at this path.
    File(PathBuf),
    /// This environment variable. [`resolve`] never produces it; it is here for callers
    /// that take a value from the environment (e.g. `RUST_LOG` for `log.level`).
    Env(&'static str),
    /// A command-line flag; [`flag_for`] names it.
    Flag,
}

/// Values given on the command line. All optional; set ones beat the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--on-conflict`
    pub on_conflict: Option<OnConflict>,
    /// `--wait-timeout`
    pub wait_timeout: Option<Duration>,
    /// `--conflict-exit-code`
    pub conflict_exit_code: Option<u8>,
    /// `--stop-grace`
    pub stop_grace: Option<Duration>,
    /// `--stop-signal`
    pub stop_signal: Option<i32>,
    /// `--restart`
    pub restart: Option<RestartPolicy>,
    /// `--max-restarts`
    pub max_restarts: Option<u32>,
    /// `--restart-delay` (= `restart.backoff_initial`)
    pub restart_delay: Option<Duration>,
    /// `--max-runtime`
    pub max_runtime: Option<Duration>,
    /// `--log-format`
    pub log_format: Option<LogFormat>,
}

/// One policy file as written: only the keys it sets, every value checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyFile {
    pub conflict_policy: Option<OnConflict>,
    pub wait_timeout: Option<Duration>,
    pub after_timeout: Option<AfterTimeout>,
    pub exit_code: Option<u8>,
    pub worktree_dir: Option<PathBuf>,
    pub branch_prefix: Option<String>,
    pub sync: Option<bool>,
    pub on_exit: Option<OnExit>,
    pub stop_signal: Option<i32>,
    pub stop_grace: Option<Duration>,
    pub orphans: Option<Orphans>,
    pub restart_policy: Option<RestartPolicy>,
    pub max_restarts: Option<u32>,
    pub backoff_initial: Option<Duration>,
    pub backoff_max: Option<Duration>,
    pub max_runtime: Option<Duration>,
    pub env: Option<BTreeMap<String, String>>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
}

/// The effective policy, the file it came from, and where each value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub policy: Policy,
    /// The policy file read, if any.
    pub file: Option<PathBuf>,
    /// Provenance of every key in [`KEYS`], keyed `"section.key"`.
    pub sources: BTreeMap<&'static str, Source>,
}

impl Effective {
    /// Where `key` (`"stop.grace"`) came from; [`Source::Default`] for unknown keys.
    pub fn source(&self, key: &str) -> &Source {
        self.sources.get(key).unwrap_or(&Source::Default)
    }
}

/// Every section and its keys, in documentation order.
pub const SECTIONS: [(&str, &[&str]); 6] = [
    (
        "conflict",
        &["policy", "wait_timeout", "after_timeout", "exit_code"],
    ),
    ("worktree", &["dir", "branch_prefix", "sync", "on_exit"]),
    ("stop", &["signal", "grace", "orphans"]),
    (
        "restart",
        &["policy", "max", "backoff_initial", "backoff_max"],
    ),
    ("run", &["max_runtime", "env"]),
    ("log", &["format", "level"]),
];

/// Every key, as `"section.key"`, in documentation order.
pub const KEYS: [&str; 19] = [
    "conflict.policy",
    "conflict.wait_timeout",
    "conflict.after_timeout",
    "conflict.exit_code",
    "worktree.dir",
    "worktree.branch_prefix",
    "worktree.sync",
    "worktree.on_exit",
    "stop.signal",
    "stop.grace",
    "stop.orphans",
    "restart.policy",
    "restart.max",
    "restart.backoff_initial",
    "restart.backoff_max",
    "run.max_runtime",
    "run.env",
    "log.format",
    "log.level",
];

/// The command-line flag that sets `key`, if there is one.
pub fn flag_for(key: &str) -> Option<&'static str> {
    Some(match key {
        "conflict.policy" => "--on-conflict",
        "conflict.wait_timeout" => "--wait-timeout",
        "conflict.exit_code" => "--conflict-exit-code",
        "stop.signal" => "--stop-signal",
        "stop.grace" => "--stop-grace",
        "restart.policy" => "--restart",
        "restart.max" => "--max-restarts",
        "restart.backoff_initial" => "--restart-delay",
        "run.max_runtime" => "--max-runtime",
        "log.format" => "--log-format",
        _ => return None,
    })
}

/// The process environment, for [`find`].
pub fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// Picks the policy file, in this order: `explicit` (`--policy FILE`),
/// `$RALPH_SUPERVISE_POLICY`, `<workspace>/.ralph/supervise.toml`,
/// `$XDG_CONFIG_HOME/ralph-supervise/policy.toml` (`$HOME/.config` when
/// `XDG_CONFIG_HOME` is unset, empty or relative), else none.
///
/// A file named by `--policy` or the environment must exist (else exit 78, naming it);
/// the implicit ones are skipped when absent. An empty `$RALPH_SUPERVISE_POLICY` counts
/// as unset. A path that exists but cannot be read is returned, so [`load`] reports why.
pub fn find(
    explicit: Option<&Path>,
    workspace: &Path,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Option<PathBuf>, Failure> {
    if let Some(path) = explicit {
        return required(path, "given by --policy", "check the path");
    }
    if let Some(value) = env(ENV_POLICY).filter(|v| !v.is_empty()) {
        return required(
            Path::new(&value),
            "named by $RALPH_SUPERVISE_POLICY",
            "check the path, or unset the variable",
        );
    }
    let workspace_file = workspace.join(WORKSPACE_FILE);
    if present(&workspace_file) {
        return Ok(Some(workspace_file));
    }
    let config_home = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            env("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        });
    if let Some(user_file) = config_home.map(|dir| dir.join(USER_FILE))
        && present(&user_file)
    {
        return Ok(Some(user_file));
    }
    Ok(None)
}

fn required(path: &Path, how: &str, fix: &str) -> Result<Option<PathBuf>, Failure> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Failure::msg(
            ExitStatus::BadPolicy,
            format!("{}: policy file not found ({how}); {fix}", path.display()),
        )),
        _ => Ok(Some(path.to_path_buf())),
    }
}

/// Whether an implicit candidate is there: a file that exists counts even if we may not
/// read it (so it is reported rather than silently skipped); one whose directory we may
/// not even search (a service user with `HOME=/root`) cannot be known to exist, and is
/// skipped like a missing one.
fn present(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::NotFound
                | io::ErrorKind::PermissionDenied
                | io::ErrorKind::NotADirectory
        ),
    }
}

/// Reads, parses and checks one policy file.
pub fn load(path: &Path) -> Result<PolicyFile, Failure> {
    let bytes = std::fs::read(path).map_err(|e| {
        Failure::msg(
            ExitStatus::BadPolicy,
            format!(
                "{}: {e}; check that the policy file exists and is readable",
                path.display()
            ),
        )
    })?;
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text,
        Err(e) => {
            // Report where the bad bytes begin, on the valid prefix.
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            return Err(located(
                path,
                valid,
                Some(e.valid_up_to()),
                "the file is not valid UTF-8; save it as UTF-8 text",
            ));
        }
    };
    parse_str(text, path)
}

/// Parses and checks policy text as if read from `path` (named in errors as
/// `file:line:col`): [`load`] without the file system, for tests and fuzzing.
pub fn parse_str(text: &str, path: &Path) -> Result<PolicyFile, Failure> {
    parse(text).map_err(|bad| located(path, text, bad.at, &bad.msg))
}

/// Parses and checks policy text (what [`load`] does after reading the file). The error
/// carries a byte offset; [`load`] turns it into `file:line:col`.
fn parse(text: &str) -> Result<PolicyFile, Bad> {
    let doc = DeTable::parse(text).map_err(|e| Bad {
        at: e.span().map(|s| s.start),
        msg: format!(
            "invalid TOML: {}; fix the syntax there",
            e.message().trim_end()
        ),
    })?;
    let mut file = PolicyFile::default();
    let mut backoff_max_at = None;
    for (name, section) in in_file_order(doc.get_ref()) {
        let keys = match SECTIONS.iter().find(|(s, _)| *s == name.get_ref().as_ref()) {
            Some((_, keys)) => *keys,
            None => {
                let what = if section.get_ref().is_table() {
                    format!("unknown section [{}]", name.get_ref())
                } else {
                    format!("unknown key {:?} at top level", name.get_ref().as_ref())
                };
                return Err(Bad::at(
                    name.span(),
                    format!(
                        "{what}; expected one of the sections {}",
                        one_of(SECTIONS.iter().map(|(s, _)| *s))
                    ),
                ));
            }
        };
        let section_name = name.get_ref().as_ref();
        let table = match section.get_ref() {
            DeValue::Table(table) => table,
            DeValue::Array(_) => {
                return Err(Bad::at(
                    name.span(),
                    format!(
                        "{section_name} must be a section, found an array; write a [{section_name}] section (one pair of brackets)"
                    ),
                ));
            }
            other => {
                return Err(Bad::at(
                    name.span(),
                    format!(
                        "{section_name} must be a section, found {}; put its keys under a [{section_name}] header",
                        a(other.type_str())
                    ),
                ));
            }
        };
        for (key, value) in in_file_order(table) {
            let key_name = key.get_ref().as_ref();
            if !keys.contains(&key_name) {
                return Err(Bad::at(
                    key.span(),
                    format!(
                        "unknown key {key_name:?} in [{section_name}]; expected one of {}",
                        one_of(keys.iter().copied())
                    ),
                ));
            }
            let full = format!("{section_name}.{key_name}");
            let v = Val { key: &full, value };
            match full.as_str() {
                "conflict.policy" => file.conflict_policy = Some(v.keyword()?),
                "conflict.wait_timeout" => file.wait_timeout = Some(v.duration()?),
                "conflict.after_timeout" => file.after_timeout = Some(v.keyword()?),
                "conflict.exit_code" => {
                    let code = v.integer("an exit code from 1 to 255 (default 75)")?;
                    file.exit_code = Some(u8::try_from(code).ok().filter(|c| *c != 0).ok_or_else(
                        || {
                            v.bad(format!(
                                "{code} is out of range; use an exit code from 1 to 255 (default 75)"
                            ))
                        },
                    )?);
                }
                "worktree.dir" => {
                    let dir = v.string("write a directory in quotes, like \".worktrees\"")?;
                    if dir.is_empty() {
                        return Err(
                            v.bad("the directory is empty; use a directory like \".worktrees\"")
                        );
                    }
                    file.worktree_dir = Some(PathBuf::from(dir));
                }
                "worktree.branch_prefix" => {
                    let prefix = v.string("write a prefix in quotes, like \"ralph/\"")?;
                    if let Err(why) = check_branch_prefix(prefix) {
                        return Err(v.bad(format!(
                            "{prefix:?} is not a usable branch prefix ({why}); use a prefix like \"ralph/\""
                        )));
                    }
                    file.branch_prefix = Some(prefix.to_string());
                }
                "worktree.sync" => file.sync = Some(v.boolean()?),
                "worktree.on_exit" => file.on_exit = Some(v.keyword()?),
                "stop.signal" => file.stop_signal = Some(v.signal()?),
                "stop.grace" => file.stop_grace = Some(v.duration()?),
                "stop.orphans" => file.orphans = Some(v.keyword()?),
                "restart.policy" => file.restart_policy = Some(v.keyword()?),
                "restart.max" => {
                    let max = v.integer("a number of restarts (0 or more)")?;
                    file.max_restarts = Some(u32::try_from(max).map_err(|_| {
                        v.bad(format!(
                            "{max} is out of range; use 0 to {}, or leave the key out for no limit",
                            u32::MAX
                        ))
                    })?);
                }
                "restart.backoff_initial" => file.backoff_initial = Some(v.duration()?),
                "restart.backoff_max" => {
                    file.backoff_max = Some(v.duration()?);
                    backoff_max_at = Some(value.span());
                }
                "run.max_runtime" => file.max_runtime = Some(v.duration()?),
                "run.env" => file.env = Some(v.env()?),
                "log.format" => file.log_format = Some(v.log_format()?),
                "log.level" => {
                    let level =
                        v.string("write one of error, warn, info, debug, trace, in quotes")?;
                    if !LOG_LEVELS.contains(&level) {
                        return Err(v.bad(format!("{level:?} is not valid; {LEVEL_HINT}")));
                    }
                    file.log_level = Some(level.to_string());
                }
                other => unreachable!("key {other} is listed in SECTIONS but not handled"),
            }
        }
    }
    // Checked once the whole file is read: `backoff_max` may come first.
    if let (Some(initial), Some(max), Some(span)) =
        (file.backoff_initial, file.backoff_max, backoff_max_at)
        && max < initial
    {
        return Err(Bad::at(
            span,
            format!(
                "restart.backoff_max {} is shorter than restart.backoff_initial {}; make it at least as long",
                quoted(&format_duration(max)),
                quoted(&format_duration(initial))
            ),
        ));
    }
    Ok(file)
}

/// Git's ref-name rules, as far as a prefix can break them.
fn check_branch_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.starts_with('/') || prefix.starts_with('-') {
        return Err("it may not start with / or -");
    }
    if prefix.contains("..") || prefix.contains("//") || prefix.contains("@{") {
        return Err("it may not contain .., // or @{");
    }
    if prefix
        .chars()
        .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c))
    {
        return Err("it may not contain spaces, control characters or any of ~^:?*[\\");
    }
    if prefix.split('/').any(|part| part.starts_with('.')) {
        return Err("no part of it may start with a dot");
    }
    if prefix.split('/').any(|part| part.ends_with(".lock")) {
        return Err("no part of it may end in .lock");
    }
    Ok(())
}

/// A complaint about the policy text, at a byte offset.
#[derive(Debug)]
struct Bad {
    at: Option<usize>,
    msg: String,
}

impl Bad {
    fn at(span: Range<usize>, msg: impl Into<String>) -> Bad {
        Bad {
            at: Some(span.start),
            msg: msg.into(),
        }
    }
}

/// `<file>:<line>:<col>: <msg>`, status 78. Line and column are 1-based; the column
/// counts characters.
fn located(path: &Path, text: &str, at: Option<usize>, msg: &str) -> Failure {
    let text_msg = match at {
        Some(offset) => {
            let (line, col) = line_col(text, offset);
            format!("{}:{line}:{col}: {msg}", path.display())
        }
        None => format!("{}: {msg}", path.display()),
    };
    Failure::msg(ExitStatus::BadPolicy, text_msg)
}

/// 1-based line and character column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

type Entry<'a, 'i> = (
    &'a Spanned<std::borrow::Cow<'i, str>>,
    &'a Spanned<DeValue<'i>>,
);

/// Table entries in the order they appear in the file, so the first problem in the file
/// is the one reported.
fn in_file_order<'a, 'i>(table: &'a DeTable<'i>) -> Vec<Entry<'a, 'i>> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// One value being checked, with its full key for messages.
struct Val<'a, 'i> {
    key: &'a str,
    value: &'a Spanned<DeValue<'i>>,
}

impl Val<'_, '_> {
    fn bad(&self, what: impl fmt::Display) -> Bad {
        Bad::at(self.value.span(), format!("{}: {what}", self.key))
    }

    fn wrong_type(&self, expected: &str, hint: &str) -> Bad {
        Bad::at(
            self.value.span(),
            format!(
                "{} must be {expected}, found {}; {hint}",
                self.key,
                a(self.value.get_ref().type_str())
            ),
        )
    }

    /// `hint` says what to write instead.
    fn string(&self, hint: &str) -> Result<&str, Bad> {
        self.value
            .get_ref()
            .as_str()
            .ok_or_else(|| self.wrong_type("a string", hint))
    }

    fn boolean(&self) -> Result<bool, Bad> {
        self.value
            .get_ref()
            .as_bool()
            .ok_or_else(|| self.wrong_type("true or false", "write true or false, without quotes"))
    }

    fn integer(&self, example: &str) -> Result<i64, Bad> {
        let Some(int) = self.value.get_ref().as_integer() else {
            return Err(self.wrong_type("an integer", &format!("write {example}, without quotes")));
        };
        i64::from_str_radix(int.as_str(), int.radix())
            .map_err(|_| self.bad(format!("{} is out of range; use {example}", int.as_str())))
    }

    fn duration(&self) -> Result<Duration, Bad> {
        const HINT: &str = "write a duration like \"30s\", \"5m\" or \"1h30m\"";
        let Some(text) = self.value.get_ref().as_str() else {
            return Err(self.wrong_type("a duration string", HINT));
        };
        humantime::parse_duration(text.trim()).map_err(|e| {
            // humantime appends the whole unit table to unknown units; the hint suffices.
            let why = e.to_string();
            let why = why.split(", supported units").next().unwrap_or_default();
            self.bad(format!("{text:?} is not a duration ({why}); {HINT}"))
        })
    }

    fn signal(&self) -> Result<i32, Bad> {
        const HINT: &str = "use a name like \"TERM\" or \"SIGTERM\", or a number like 15";
        let text = match self.value.get_ref() {
            DeValue::String(s) => s.to_string(),
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => n.to_string(),
                Err(_) => i.as_str().to_string(),
            },
            _ => return Err(self.wrong_type("a signal name or number", HINT)),
        };
        match crate::signals::parse(&text) {
            Ok(signal) => Ok(signal as i32),
            Err(_) if self.value.get_ref().is_integer() => {
                Err(self.bad(format!("{text} is not a signal number; {HINT}")))
            }
            Err(_) => Err(self.bad(format!("{text:?} is not a signal; {HINT}"))),
        }
    }

    fn keyword<K>(&self) -> Result<K, Bad>
    where
        K: std::str::FromStr<Err = String> + KeywordList,
    {
        let Some(text) = self.value.get_ref().as_str() else {
            return Err(self.wrong_type(
                "a string",
                &format!("write one of {}, in quotes", K::list()),
            ));
        };
        text.parse::<K>().map_err(|e| self.bad(e))
    }

    fn log_format(&self) -> Result<LogFormat, Bad> {
        const LIST: &str = "text, json";
        let Some(text) = self.value.get_ref().as_str() else {
            return Err(self.wrong_type("a string", &format!("write one of {LIST}, in quotes")));
        };
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(self.bad(format!("{text:?} is not valid; expected one of {LIST}"))),
        }
    }

    fn env(&self) -> Result<BTreeMap<String, String>, Bad> {
        const HINT: &str = "write a [run.env] section with lines like NAME = \"value\"";
        let DeValue::Table(table) = self.value.get_ref() else {
            return Err(self.wrong_type("a table", HINT));
        };
        let mut env = BTreeMap::new();
        for (name, value) in in_file_order(table) {
            let name_text = name.get_ref().as_ref();
            if name_text.is_empty() || name_text.contains(['=', '\0']) {
                return Err(Bad::at(
                    name.span(),
                    format!(
                        "run.env: {name_text:?} is not a usable variable name; use a name without = or NUL, like RUST_LOG"
                    ),
                ));
            }
            let full = format!("run.env.{name_text}");
            let v = Val { key: &full, value };
            let text = v.string(&format!(
                "write the value in quotes, like {} = \"1\"",
                toml_key(name_text)
            ))?;
            if text.contains('\0') {
                return Err(v.bad("the value contains a NUL character; remove it"));
            }
            env.insert(name_text.to_string(), text.to_string());
        }
        Ok(env)
    }
}

/// The spellings of a keyword enum, for messages.
trait KeywordList {
    fn list() -> String;
}

macro_rules! keyword_list {
    ($($name:ident),+) => {
        $(impl KeywordList for $name {
            fn list() -> String {
                one_of($name::ALL.iter().map(|v| v.as_str()))
            }
        })+
    };
}
keyword_list!(OnConflict, AfterTimeout, OnExit, Orphans, RestartPolicy);

fn one_of<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// "an integer", "a string".
fn a(type_name: &str) -> String {
    let article = if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {type_name}")
}

/// Combines the file and the flags: flags override the file, the file overrides the
/// built-in defaults. If the resulting `backoff_initial` is longer than `backoff_max`,
/// `backoff_max` is raised to it (and credited to the same source), so `--restart-delay
/// 2m` means two minutes even against the default 60 s cap.
pub fn resolve(file: Option<(PathBuf, PolicyFile)>, flags: &Overrides) -> Effective {
    let mut policy = Policy::default();
    let mut sources: BTreeMap<&'static str, Source> =
        KEYS.iter().map(|key| (*key, Source::Default)).collect();

    let path = file.as_ref().map(|(path, _)| path.clone());
    if let Some((path, f)) = file {
        let mut set = |key: &'static str| {
            sources.insert(key, Source::File(path.clone()));
        };
        macro_rules! take {
            ($value:expr, $key:literal, $target:expr) => {
                if let Some(v) = $value {
                    $target = v;
                    set($key);
                }
            };
        }
        let p = &mut policy;
        take!(
            f.conflict_policy.map(Some),
            "conflict.policy",
            p.conflict.policy
        );
        take!(
            f.wait_timeout.map(Some),
            "conflict.wait_timeout",
            p.conflict.wait_timeout
        );
        take!(
            f.after_timeout,
            "conflict.after_timeout",
            p.conflict.after_timeout
        );
        take!(f.exit_code, "conflict.exit_code", p.conflict.exit_code);
        take!(f.worktree_dir, "worktree.dir", p.worktree.dir);
        take!(
            f.branch_prefix,
            "worktree.branch_prefix",
            p.worktree.branch_prefix
        );
        take!(f.sync, "worktree.sync", p.worktree.sync);
        take!(f.on_exit, "worktree.on_exit", p.worktree.on_exit);
        take!(f.stop_signal, "stop.signal", p.stop.signal);
        take!(f.stop_grace, "stop.grace", p.stop.grace);
        take!(f.orphans, "stop.orphans", p.stop.orphans);
        take!(f.restart_policy, "restart.policy", p.restart.policy);
        take!(f.max_restarts.map(Some), "restart.max", p.restart.max);
        take!(
            f.backoff_initial,
            "restart.backoff_initial",
            p.restart.backoff_initial
        );
        take!(f.backoff_max, "restart.backoff_max", p.restart.backoff_max);
        take!(
            f.max_runtime.map(Some),
            "run.max_runtime",
            p.run.max_runtime
        );
        take!(f.env, "run.env", p.run.env);
        take!(f.log_format, "log.format", p.log.format);
        take!(f.log_level, "log.level", p.log.level);
    }

    {
        let mut set = |key: &'static str| {
            sources.insert(key, Source::Flag);
        };
        macro_rules! take {
            ($value:expr, $key:literal, $target:expr) => {
                if let Some(v) = $value {
                    $target = v;
                    set($key);
                }
            };
        }
        let p = &mut policy;
        take!(
            flags.on_conflict.map(Some),
            "conflict.policy",
            p.conflict.policy
        );
        take!(
            flags.wait_timeout.map(Some),
            "conflict.wait_timeout",
            p.conflict.wait_timeout
        );
        take!(
            flags.conflict_exit_code,
            "conflict.exit_code",
            p.conflict.exit_code
        );
        take!(flags.stop_signal, "stop.signal", p.stop.signal);
        take!(flags.stop_grace, "stop.grace", p.stop.grace);
        take!(flags.restart, "restart.policy", p.restart.policy);
        take!(flags.max_restarts.map(Some), "restart.max", p.restart.max);
        take!(
            flags.restart_delay,
            "restart.backoff_initial",
            p.restart.backoff_initial
        );
        take!(
            flags.max_runtime.map(Some),
            "run.max_runtime",
            p.run.max_runtime
        );
        take!(flags.log_format, "log.format", p.log.format);
    }

    if policy.restart.backoff_max < policy.restart.backoff_initial {
        policy.restart.backoff_max = policy.restart.backoff_initial;
        let source = sources["restart.backoff_initial"].clone();
        sources.insert("restart.backoff_max", source);
    }

    Effective {
        policy,
        file: path,
        sources,
    }
}

/// [`find`], [`load`] and [`resolve`] in one: the effective policy for a run.
pub fn effective(
    explicit: Option<&Path>,
    workspace: &Path,
    env: &dyn Fn(&str) -> Option<OsString>,
    flags: &Overrides,
) -> Result<Effective, Failure> {
    let file = match find(explicit, workspace, env)? {
        Some(path) => {
            let parsed = load(&path)?;
            Some((path, parsed))
        }
        None => None,
    };
    Ok(resolve(file, flags))
}

/// The effective policy as TOML, each value followed by where it came from (`# default`,
/// `# <file>`, `# --flag`). Unset optional values are shown as comments, so the output
/// is itself a valid policy file describing the same policy.
pub fn show(e: &Effective) -> String {
    let p = &e.policy;
    let mut out = String::new();
    match &e.file {
        Some(path) => {
            let _ = writeln!(out, "# effective policy; file: {}", path.display());
        }
        None => out.push_str("# effective policy; no policy file, built-in defaults\n"),
    }
    let mut section = |name: &str, lines: Vec<(&'static str, Option<String>, &str)>| {
        let _ = writeln!(out, "\n[{name}]");
        for (key, value, unset) in lines {
            let full = format!("{name}.{key}");
            let origin = match e.source(&full) {
                Source::Default => "default".to_string(),
                Source::File(path) => path.display().to_string(),
                Source::Env(var) => format!("${var}"),
                Source::Flag => flag_for(&full).unwrap_or("command line").to_string(),
            };
            match value {
                Some(value) => {
                    let _ = writeln!(out, "{key} = {value}  # {origin}");
                }
                None => {
                    let _ = writeln!(out, "# {key} not set: {unset}  # {origin}");
                }
            }
        }
    };
    let dur = |d: Duration| quoted(&format_duration(d));
    section(
        "conflict",
        vec![
            (
                "policy",
                p.conflict.policy.map(|v| quoted(v.as_str())),
                "worktree in a git repository, fail elsewhere",
            ),
            (
                "wait_timeout",
                p.conflict.wait_timeout.map(dur),
                "wait without limit",
            ),
            (
                "after_timeout",
                Some(quoted(p.conflict.after_timeout.as_str())),
                "",
            ),
            ("exit_code", Some(p.conflict.exit_code.to_string()), ""),
        ],
    );
    section(
        "worktree",
        vec![
            ("dir", Some(quoted(&p.worktree.dir.to_string_lossy())), ""),
            ("branch_prefix", Some(quoted(&p.worktree.branch_prefix)), ""),
            ("sync", Some(p.worktree.sync.to_string()), ""),
            ("on_exit", Some(quoted(p.worktree.on_exit.as_str())), ""),
        ],
    );
    section(
        "stop",
        vec![
            (
                "signal",
                Some(quoted(&crate::signals::name(p.stop.signal))),
                "",
            ),
            ("grace", Some(dur(p.stop.grace)), ""),
            ("orphans", Some(quoted(p.stop.orphans.as_str())), ""),
        ],
    );
    section(
        "restart",
        vec![
            ("policy", Some(quoted(p.restart.policy.as_str())), ""),
            ("max", p.restart.max.map(|m| m.to_string()), "unlimited"),
            ("backoff_initial", Some(dur(p.restart.backoff_initial)), ""),
            ("backoff_max", Some(dur(p.restart.backoff_max)), ""),
        ],
    );
    let env = if p.run.env.is_empty() {
        "{}".to_string()
    } else {
        let pairs: Vec<String> = p
            .run
            .env
            .iter()
            .map(|(k, v)| format!("{} = {}", toml_key(k), quoted(v)))
            .collect();
        format!("{{ {} }}", pairs.join(", "))
    };
    section(
        "run",
        vec![
            ("max_runtime", p.run.max_runtime.map(dur), "no limit"),
            ("env", Some(env), ""),
        ],
    );
    let format = match p.log.format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    section(
        "log",
        vec![
            ("format", Some(quoted(format)), ""),
            ("level", Some(quoted(&p.log.level)), ""),
        ],
    );
    out
}

/// `1h30m`, `10s`, `250ms`: humantime's form without its spaces (it parses back).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}

/// A TOML basic string.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// A TOML key: bare when it can be, quoted otherwise.
fn toml_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_string()
    } else {
        quoted(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Writes `text` to `<tmp>/supervise.toml` and loads it.
    fn load_text(text: &str) -> (tempfile::TempDir, PathBuf, Result<PolicyFile, Failure>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("supervise.toml");
        std::fs::write(&path, text).unwrap();
        let result = load(&path);
        (dir, path, result)
    }

    fn parsed(text: &str) -> PolicyFile {
        let (_dir, _path, result) = load_text(text);
        result.unwrap_or_else(|e| panic!("{text:?}: {:#}", e.error))
    }

    /// The one error line for `text`, with the temp path replaced by `P`; asserts 78.
    fn error(text: &str) -> String {
        let (_dir, path, result) = load_text(text);
        let failure = result.expect_err(text);
        assert_eq!(failure.status, ExitStatus::BadPolicy, "{text:?}");
        assert_eq!(failure.status.code(), 78);
        let msg = format!("{:#}", failure.error);
        assert!(!msg.contains('\n'), "one line: {msg:?}");
        msg.replace(&path.display().to_string(), "P")
    }

    const FULL: &str = r#"
[conflict]
policy = "wait"
wait_timeout = "5m"
after_timeout = "worktree"
exit_code = 9

[worktree]
dir = "trees"
branch_prefix = "agents/"
sync = false
on_exit = "queue-merge"

[stop]
signal = "INT"
grace = "1m30s"
orphans = "leave"

[restart]
policy = "always"
max = 4
backoff_initial = "250ms"
backoff_max = "1h"

[run]
max_runtime = "2h"
env = { FOO = "bar", "WITH SPACE" = "x y" }

[log]
format = "json"
level = "trace"
"#;

    fn full_file() -> PolicyFile {
        PolicyFile {
            conflict_policy: Some(OnConflict::Wait),
            wait_timeout: Some(Duration::from_secs(300)),
            after_timeout: Some(AfterTimeout::Worktree),
            exit_code: Some(9),
            worktree_dir: Some(PathBuf::from("trees")),
            branch_prefix: Some("agents/".into()),
            sync: Some(false),
            on_exit: Some(OnExit::QueueMerge),
            stop_signal: Some(libc::SIGINT),
            stop_grace: Some(Duration::from_secs(90)),
            orphans: Some(Orphans::Leave),
            restart_policy: Some(RestartPolicy::Always),
            max_restarts: Some(4),
            backoff_initial: Some(Duration::from_millis(250)),
            backoff_max: Some(Duration::from_secs(3600)),
            max_runtime: Some(Duration::from_secs(7200)),
            env: Some(BTreeMap::from([
                ("FOO".to_string(), "bar".to_string()),
                ("WITH SPACE".to_string(), "x y".to_string()),
            ])),
            log_format: Some(LogFormat::Json),
            log_level: Some("trace".into()),
        }
    }

    #[test]
    fn every_key_parses() {
        assert_eq!(parsed(FULL), full_file());
    }

    #[test]
    fn every_enum_value_parses() {
        for v in OnConflict::ALL {
            let f = parsed(&format!("[conflict]\npolicy = \"{v}\"\n"));
            assert_eq!(f.conflict_policy, Some(*v));
        }
        for v in AfterTimeout::ALL {
            let f = parsed(&format!("[conflict]\nafter_timeout = \"{v}\"\n"));
            assert_eq!(f.after_timeout, Some(*v));
        }
        for v in OnExit::ALL {
            let f = parsed(&format!("[worktree]\non_exit = \"{v}\"\n"));
            assert_eq!(f.on_exit, Some(*v));
        }
        for v in Orphans::ALL {
            let f = parsed(&format!("[stop]\norphans = \"{v}\"\n"));
            assert_eq!(f.orphans, Some(*v));
        }
        for v in RestartPolicy::ALL {
            let f = parsed(&format!("[restart]\npolicy = \"{v}\"\n"));
            assert_eq!(f.restart_policy, Some(*v));
        }
        for level in LOG_LEVELS {
            let f = parsed(&format!("[log]\nlevel = \"{level}\"\n"));
            assert_eq!(f.log_level.as_deref(), Some(level));
        }
        assert_eq!(
            parsed("[log]\nformat = \"text\"\n").log_format,
            Some(LogFormat::Text)
        );
    }

    #[test]
    fn keywords_match_clap_spellings() {
        fn check<E: clap::ValueEnum + Copy + fmt::Display>(all: &[E]) {
            for v in all {
                let clap_name = v.to_possible_value().unwrap().get_name().to_string();
                assert_eq!(clap_name, v.to_string());
            }
        }
        check(OnConflict::ALL);
        check(AfterTimeout::ALL);
        check(OnExit::ALL);
        check(Orphans::ALL);
        check(RestartPolicy::ALL);
        assert_eq!("on-failure".parse(), Ok(RestartPolicy::OnFailure));
        assert_eq!("remove-if-clean".parse(), Ok(OnExit::RemoveIfClean));
        assert_eq!(
            "Wait".parse::<OnConflict>(),
            Err("\"Wait\" is not valid; expected one of worktree, wait, fail, takeover".into())
        );
    }

    #[test]
    fn signals_by_name_and_number() {
        for text in ["\"TERM\"", "\"SIGTERM\"", "\"term\"", "15", "\"15\""] {
            let f = parsed(&format!("[stop]\nsignal = {text}\n"));
            assert_eq!(f.stop_signal, Some(libc::SIGTERM), "{text}");
        }
        assert_eq!(
            parsed("[stop]\nsignal = 0x1\n").stop_signal,
            Some(libc::SIGHUP)
        );
        assert_eq!(
            parsed("[stop]\nsignal = \"USR1\"\n").stop_signal,
            Some(libc::SIGUSR1)
        );
    }

    #[test]
    fn durations() {
        let f = parsed("[conflict]\nwait_timeout = \"1h30m\"\n[run]\nmax_runtime = \"1h 30m\"\n");
        assert_eq!(f.wait_timeout, Some(Duration::from_secs(5400)));
        assert_eq!(f.max_runtime, Some(Duration::from_secs(5400)));
        assert_eq!(
            parsed("[stop]\ngrace = \"0s\"\n").stop_grace,
            Some(Duration::ZERO)
        );
        for d in [1, 90, 5400, 86_400 + 3] {
            let d = Duration::from_secs(d);
            assert_eq!(humantime::parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn other_spellings_of_sections() {
        // Dotted keys, inline tables, a [run.env] header, and an empty file.
        let f = parsed(
            "stop.grace = \"3s\"\nrestart = { policy = \"always\" }\n[run.env]\nA = \"1\"\n",
        );
        assert_eq!(f.stop_grace, Some(Duration::from_secs(3)));
        assert_eq!(f.restart_policy, Some(RestartPolicy::Always));
        assert_eq!(f.env, Some(BTreeMap::from([("A".into(), "1".into())])));
        assert_eq!(parsed(""), PolicyFile::default());
        assert_eq!(parsed("# only a comment\n[stop]\n"), PolicyFile::default());
        // Exit codes at both ends, restart.max 0.
        assert_eq!(parsed("[conflict]\nexit_code = 1\n").exit_code, Some(1));
        assert_eq!(parsed("[conflict]\nexit_code = 255\n").exit_code, Some(255));
        assert_eq!(parsed("[restart]\nmax = 0\n").max_restarts, Some(0));
        assert_eq!(
            parsed("[worktree]\nbranch_prefix = \"\"\n").branch_prefix,
            Some(String::new())
        );
    }

    #[test]
    fn defaults() {
        let e = resolve(None, &Overrides::default());
        assert_eq!(e.file, None);
        assert_eq!(e.sources.len(), KEYS.len());
        assert!(e.sources.values().all(|s| *s == Source::Default));
        let p = e.policy;
        assert_eq!(p, Policy::default());
        assert_eq!(p.conflict.policy, None);
        assert_eq!(p.conflict.wait_timeout, None);
        assert_eq!(p.conflict.after_timeout, AfterTimeout::Fail);
        assert_eq!(p.conflict.exit_code, 75);
        assert_eq!(p.worktree.dir, PathBuf::from(".worktrees"));
        assert_eq!(p.worktree.branch_prefix, "ralph/");
        assert!(p.worktree.sync);
        assert_eq!(p.worktree.on_exit, OnExit::Keep);
        assert_eq!(p.stop.signal, libc::SIGTERM);
        assert_eq!(p.stop.grace, Duration::from_secs(10));
        assert_eq!(p.stop.orphans, Orphans::Kill);
        assert_eq!(p.restart.policy, RestartPolicy::Never);
        assert_eq!(p.restart.max, None);
        assert_eq!(p.restart.backoff_initial, Duration::from_secs(1));
        assert_eq!(p.restart.backoff_max, Duration::from_secs(60));
        assert_eq!(p.run.max_runtime, None);
        assert!(p.run.env.is_empty());
        assert_eq!(p.log.format, LogFormat::Text);
        assert_eq!(p.log.level, "info");
        // An empty file changes nothing but the provenance of nothing.
        let e = resolve(
            Some(("/x.toml".into(), PolicyFile::default())),
            &Overrides::default(),
        );
        assert_eq!(e.policy, Policy::default());
        assert_eq!(e.file, Some(PathBuf::from("/x.toml")));
        assert!(e.sources.values().all(|s| *s == Source::Default));
    }

    #[test]
    fn every_key_has_a_section_entry() {
        let from_sections: Vec<String> = SECTIONS
            .iter()
            .flat_map(|(s, keys)| keys.iter().map(move |k| format!("{s}.{k}")))
            .collect();
        assert_eq!(from_sections, KEYS.to_vec());
    }

    #[test]
    fn file_overrides_defaults_and_flags_override_file() {
        let path = PathBuf::from("/etc/ralph/supervise.toml");
        let file = PolicyFile {
            conflict_policy: Some(OnConflict::Wait),
            stop_grace: Some(Duration::from_secs(20)),
            stop_signal: Some(libc::SIGINT),
            restart_policy: Some(RestartPolicy::OnFailure),
            max_restarts: Some(3),
            log_level: Some("debug".into()),
            ..PolicyFile::default()
        };
        let flags = Overrides {
            on_conflict: Some(OnConflict::Takeover),
            stop_grace: Some(Duration::from_secs(5)),
            max_runtime: Some(Duration::from_secs(60)),
            ..Overrides::default()
        };
        let e = resolve(Some((path.clone(), file)), &flags);
        let p = &e.policy;
        // Flag over file.
        assert_eq!(p.conflict.policy, Some(OnConflict::Takeover));
        assert_eq!(e.source("conflict.policy"), &Source::Flag);
        assert_eq!(p.stop.grace, Duration::from_secs(5));
        assert_eq!(e.source("stop.grace"), &Source::Flag);
        // Flag over default.
        assert_eq!(p.run.max_runtime, Some(Duration::from_secs(60)));
        assert_eq!(e.source("run.max_runtime"), &Source::Flag);
        // File over default.
        assert_eq!(p.stop.signal, libc::SIGINT);
        assert_eq!(e.source("stop.signal"), &Source::File(path.clone()));
        assert_eq!(p.restart.policy, RestartPolicy::OnFailure);
        assert_eq!(p.restart.max, Some(3));
        assert_eq!(e.source("restart.max"), &Source::File(path.clone()));
        assert_eq!(p.log.level, "debug");
        // Default.
        assert_eq!(p.stop.orphans, Orphans::Kill);
        assert_eq!(e.source("stop.orphans"), &Source::Default);
        assert_eq!(e.source("conflict.exit_code"), &Source::Default);

        let flagged: Vec<_> = e
            .sources
            .iter()
            .filter(|(_, s)| **s == Source::Flag)
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(
            flagged,
            ["conflict.policy", "run.max_runtime", "stop.grace"]
        );
        let from_file: Vec<_> = e
            .sources
            .iter()
            .filter(|(_, s)| matches!(s, Source::File(_)))
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(
            from_file,
            ["log.level", "restart.max", "restart.policy", "stop.signal"]
        );
    }

    #[test]
    fn every_flag_overrides_the_full_file() {
        let path = PathBuf::from("/p.toml");
        let flags = Overrides {
            on_conflict: Some(OnConflict::Fail),
            wait_timeout: Some(Duration::from_secs(7)),
            conflict_exit_code: Some(99),
            stop_grace: Some(Duration::from_secs(2)),
            stop_signal: Some(libc::SIGHUP),
            restart: Some(RestartPolicy::Never),
            max_restarts: Some(1),
            restart_delay: Some(Duration::from_secs(3)),
            max_runtime: Some(Duration::from_secs(4)),
            log_format: Some(LogFormat::Text),
        };
        let e = resolve(Some((path.clone(), full_file())), &flags);
        let p = &e.policy;
        assert_eq!(p.conflict.policy, Some(OnConflict::Fail));
        assert_eq!(p.conflict.wait_timeout, Some(Duration::from_secs(7)));
        assert_eq!(p.conflict.exit_code, 99);
        assert_eq!(p.stop.grace, Duration::from_secs(2));
        assert_eq!(p.stop.signal, libc::SIGHUP);
        assert_eq!(p.restart.policy, RestartPolicy::Never);
        assert_eq!(p.restart.max, Some(1));
        assert_eq!(p.restart.backoff_initial, Duration::from_secs(3));
        assert_eq!(p.run.max_runtime, Some(Duration::from_secs(4)));
        assert_eq!(p.log.format, LogFormat::Text);
        // Keys without a flag keep the file's values.
        assert_eq!(p.conflict.after_timeout, AfterTimeout::Worktree);
        assert_eq!(p.worktree.on_exit, OnExit::QueueMerge);
        assert_eq!(p.restart.backoff_max, Duration::from_secs(3600));
        assert_eq!(p.log.level, "trace");
        for key in KEYS {
            let expected = if flag_for(key).is_some() {
                Source::Flag
            } else {
                Source::File(path.clone())
            };
            assert_eq!(e.source(key), &expected, "{key}");
        }
    }

    #[test]
    fn restart_delay_raises_a_shorter_backoff_max() {
        let flags = Overrides {
            restart_delay: Some(Duration::from_secs(120)),
            ..Overrides::default()
        };
        let e = resolve(None, &flags);
        assert_eq!(e.policy.restart.backoff_initial, Duration::from_secs(120));
        assert_eq!(e.policy.restart.backoff_max, Duration::from_secs(120));
        assert_eq!(e.source("restart.backoff_max"), &Source::Flag);
        assert_eq!(e.policy.restart.delay(0), Duration::from_secs(120));
        assert_eq!(e.policy.restart.delay(5), Duration::from_secs(120));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = Policy::default().restart;
        let secs: Vec<u64> = (0..9).map(|n| r.delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(r.delay(200), Duration::from_secs(60));
    }

    #[test]
    fn auto_conflict_policy() {
        let mut c = Policy::default().conflict;
        assert_eq!(c.effective(true), OnConflict::Worktree);
        assert_eq!(c.effective(false), OnConflict::Fail);
        c.policy = Some(OnConflict::Wait);
        assert_eq!(c.effective(true), OnConflict::Wait);
        assert_eq!(c.effective(false), OnConflict::Wait);
    }

    #[test]
    fn show_defaults() {
        let shown = show(&resolve(None, &Overrides::default()));
        let expected = r#"# effective policy; no policy file, built-in defaults

[conflict]
# policy not set: worktree in a git repository, fail elsewhere  # default
# wait_timeout not set: wait without limit  # default
after_timeout = "fail"  # default
exit_code = 75  # default

[worktree]
dir = ".worktrees"  # default
branch_prefix = "ralph/"  # default
sync = true  # default
on_exit = "keep"  # default

[stop]
signal = "SIGTERM"  # default
grace = "10s"  # default
orphans = "kill"  # default

[restart]
policy = "never"  # default
# max not set: unlimited  # default
backoff_initial = "1s"  # default
backoff_max = "1m"  # default

[run]
# max_runtime not set: no limit  # default
env = {}  # default

[log]
format = "text"  # default
level = "info"  # default
"#;
        assert_eq!(shown, expected);
    }

    #[test]
    fn show_names_each_source() {
        let path = PathBuf::from("/w/.ralph/supervise.toml");
        let file = PolicyFile {
            stop_grace: Some(Duration::from_secs(20)),
            conflict_policy: Some(OnConflict::Wait),
            env: Some(BTreeMap::from([("A B".into(), "say \"hi\"".into())])),
            ..PolicyFile::default()
        };
        let flags = Overrides {
            wait_timeout: Some(Duration::from_secs(5400)),
            stop_signal: Some(libc::SIGINT),
            ..Overrides::default()
        };
        let shown = show(&resolve(Some((path, file)), &flags));
        let lines: Vec<&str> = shown.lines().collect();
        for line in [
            "# effective policy; file: /w/.ralph/supervise.toml",
            "policy = \"wait\"  # /w/.ralph/supervise.toml",
            "wait_timeout = \"1h30m\"  # --wait-timeout",
            "signal = \"SIGINT\"  # --stop-signal",
            "grace = \"20s\"  # /w/.ralph/supervise.toml",
            "orphans = \"kill\"  # default",
            "env = { \"A B\" = 'say \"hi\"' }  # /w/.ralph/supervise.toml",
        ] {
            assert!(lines.contains(&line), "{line:?} missing from:\n{shown}");
        }
    }

    #[test]
    fn show_output_is_a_policy_file_for_the_same_policy() {
        let e = resolve(Some(("/p.toml".into(), full_file())), &Overrides::default());
        let (_dir, path, loaded) = load_text(&show(&e));
        let again = resolve(Some((path, loaded.unwrap())), &Overrides::default());
        assert_eq!(again.policy, e.policy);
        let (_dir, path, loaded) = load_text(&show(&resolve(None, &Overrides::default())));
        let again = resolve(Some((path, loaded.unwrap())), &Overrides::default());
        assert_eq!(again.policy, Policy::default());
    }

    /// A fake environment.
    fn env_of(vars: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn lookup_order() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let workspace = root.join("ws");
        let home = root.join("home");
        let xdg = root.join("xdg");
        let explicit = root.join("explicit.toml");
        let named = root.join("named.toml");
        let ws_file = workspace.join(".ralph/supervise.toml");
        let xdg_file = xdg.join("ralph-supervise/policy.toml");
        let home_file = home.join(".config/ralph-supervise/policy.toml");
        for f in [&explicit, &named, &ws_file, &xdg_file, &home_file] {
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, "").unwrap();
        }
        let all = env_of(&[
            (ENV_POLICY, &named),
            ("XDG_CONFIG_HOME", &xdg),
            ("HOME", &home),
        ]);
        let no_env = env_of(&[("XDG_CONFIG_HOME", &xdg), ("HOME", &home)]);
        let found = |explicit: Option<&Path>, env: &dyn Fn(&str) -> Option<OsString>| {
            find(explicit, &workspace, env).unwrap()
        };

        assert_eq!(found(Some(&explicit), &all), Some(explicit.clone()));
        assert_eq!(found(None, &all), Some(named.clone()));
        // An empty variable counts as unset.
        let empty = env_of(&[(ENV_POLICY, Path::new("")), ("HOME", &home)]);
        assert_eq!(found(None, &empty), Some(ws_file.clone()));
        assert_eq!(found(None, &no_env), Some(ws_file.clone()));
        std::fs::remove_file(&ws_file).unwrap();
        assert_eq!(found(None, &no_env), Some(xdg_file.clone()));
        // XDG_CONFIG_HOME unset, empty or relative: $HOME/.config.
        let home_only = env_of(&[("HOME", &home)]);
        assert_eq!(found(None, &home_only), Some(home_file.clone()));
        let relative = env_of(&[("XDG_CONFIG_HOME", Path::new("rel")), ("HOME", &home)]);
        assert_eq!(found(None, &relative), Some(home_file.clone()));
        let blank = env_of(&[("XDG_CONFIG_HOME", Path::new("")), ("HOME", &home)]);
        assert_eq!(found(None, &blank), Some(home_file.clone()));
        // The XDG directory is used even if $HOME/.config also has a file.
        assert_eq!(found(None, &no_env), Some(xdg_file.clone()));
        // A set XDG_CONFIG_HOME replaces $HOME/.config; it is not searched as well.
        std::fs::remove_file(&xdg_file).unwrap();
        assert_eq!(found(None, &no_env), None);
        assert_eq!(found(None, &home_only), Some(home_file.clone()));
        std::fs::remove_file(&home_file).unwrap();
        assert_eq!(found(None, &home_only), None);
        assert_eq!(found(None, &env_of(&[])), None);
    }

    #[test]
    fn named_files_must_exist() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing.toml");
        let ws = tmp.path();
        let m = missing.display().to_string();

        let e = find(Some(&missing), ws, &env_of(&[])).unwrap_err();
        assert_eq!(e.status, ExitStatus::BadPolicy);
        assert_eq!(
            format!("{:#}", e.error),
            format!("{m}: policy file not found (given by --policy); check the path")
        );

        let e = find(None, ws, &env_of(&[(ENV_POLICY, &missing)])).unwrap_err();
        assert_eq!(e.status.code(), 78);
        assert_eq!(
            format!("{:#}", e.error),
            format!(
                "{m}: policy file not found (named by $RALPH_SUPERVISE_POLICY); check the path, or unset the variable"
            )
        );

        // An explicit file beats a broken variable.
        let present = tmp.path().join("present.toml");
        std::fs::write(&present, "").unwrap();
        let env = env_of(&[(ENV_POLICY, &missing)]);
        assert_eq!(
            find(Some(&present), ws, &env).unwrap(),
            Some(present.clone())
        );
    }

    #[test]
    fn effective_finds_loads_and_resolves() {
        let tmp = tempfile::tempdir().unwrap();
        let ws_file = tmp.path().join(".ralph/supervise.toml");
        std::fs::create_dir_all(ws_file.parent().unwrap()).unwrap();
        std::fs::write(&ws_file, "[stop]\ngrace = \"3s\"\n").unwrap();
        let e = effective(None, tmp.path(), &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(e.file, Some(ws_file.clone()));
        assert_eq!(e.policy.stop.grace, Duration::from_secs(3));
        assert_eq!(e.source("stop.grace"), &Source::File(ws_file.clone()));
        std::fs::write(&ws_file, "[stop]\ngrace = 3\n").unwrap();
        let err = effective(None, tmp.path(), &env_of(&[]), &Overrides::default()).unwrap_err();
        assert_eq!(err.status, ExitStatus::BadPolicy);
    }

    #[test]
    fn unknown_keys_and_sections() {
        assert_eq!(
            error("[stop]\ngrase = \"1s\"\n"),
            "P:2:1: unknown key \"grase\" in [stop]; expected one of signal, grace, orphans"
        );
        assert_eq!(
            error("[stop]\nsignal = \"TERM\"\n  grase = \"1s\"\n"),
            "P:3:3: unknown key \"grase\" in [stop]; expected one of signal, grace, orphans"
        );
        assert_eq!(
            error("# policy\n\n[stoop]\ngrace = \"1s\"\n"),
            "P:3:2: unknown section [stoop]; expected one of the sections conflict, worktree, stop, restart, run, log"
        );
        assert_eq!(
            error("grace = \"1s\"\n"),
            "P:1:1: unknown key \"grace\" at top level; expected one of the sections conflict, worktree, stop, restart, run, log"
        );
        assert_eq!(
            error("[stop.extra]\nx = 1\n"),
            "P:1:7: unknown key \"extra\" in [stop]; expected one of signal, grace, orphans"
        );
        assert_eq!(
            error("[conflict]\npolicy = \"wait\"\n[restart]\nmax = 1\nbackof = \"1s\"\n"),
            "P:5:1: unknown key \"backof\" in [restart]; expected one of policy, max, backoff_initial, backoff_max"
        );
        // The first problem in the file is reported, not the first in key order.
        assert_eq!(
            error("[stop]\nzzz = 1\naaa = 1\n"),
            "P:2:1: unknown key \"zzz\" in [stop]; expected one of signal, grace, orphans"
        );
    }

    #[test]
    fn wrong_types() {
        let cases = [
            (
                "[stop]\ngrace = 10\n",
                "P:2:9: stop.grace must be a duration string, found an integer; write a duration like \"30s\", \"5m\" or \"1h30m\"",
            ),
            (
                "stop = 1\n",
                "P:1:1: stop must be a section, found an integer; put its keys under a [stop] header",
            ),
            (
                "[[stop]]\n",
                "P:1:3: stop must be a section, found an array; write a [stop] section (one pair of brackets)",
            ),
            (
                "log = [\"json\"]\n",
                "P:1:1: log must be a section, found an array; write a [log] section (one pair of brackets)",
            ),
            (
                "[conflict]\nexit_code = \"75\"\n",
                "P:2:13: conflict.exit_code must be an integer, found a string; write an exit code from 1 to 255 (default 75), without quotes",
            ),
            (
                "[worktree]\nsync = \"yes\"\n",
                "P:2:8: worktree.sync must be true or false, found a string; write true or false, without quotes",
            ),
            (
                "[worktree]\ndir = 1\n",
                "P:2:7: worktree.dir must be a string, found an integer; write a directory in quotes, like \".worktrees\"",
            ),
            (
                "[restart]\npolicy = true\n",
                "P:2:10: restart.policy must be a string, found a boolean; write one of never, on-failure, always, in quotes",
            ),
            (
                "[stop]\nsignal = 1.5\n",
                "P:2:10: stop.signal must be a signal name or number, found a float; use a name like \"TERM\" or \"SIGTERM\", or a number like 15",
            ),
            (
                "[run]\nenv = [\"A=1\"]\n",
                "P:2:7: run.env must be a table, found an array; write a [run.env] section with lines like NAME = \"value\"",
            ),
            (
                "[run.env]\nA = 1\n",
                "P:2:5: run.env.A must be a string, found an integer; write the value in quotes, like A = \"1\"",
            ),
            (
                "[log]\nlevel = 3\n",
                "P:2:9: log.level must be a string, found an integer; write one of error, warn, info, debug, trace, in quotes",
            ),
            (
                "[run]\nmax_runtime = 1979-05-27\n",
                "P:2:15: run.max_runtime must be a duration string, found a datetime; write a duration like \"30s\", \"5m\" or \"1h30m\"",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(error(text), expected, "{text:?}");
        }
    }

    #[test]
    fn bad_values() {
        let cases = [
            (
                "[stop]\ngrace = \"10 parsecs\"\n",
                "P:2:9: stop.grace: \"10 parsecs\" is not a duration (unknown time unit \"parsecs\"); write a duration like \"30s\", \"5m\" or \"1h30m\"",
            ),
            (
                "[conflict]\nwait_timeout = \"10\"\n",
                "P:2:16: conflict.wait_timeout: \"10\" is not a duration (time unit needed, for example 10sec or 10ms); write a duration like \"30s\", \"5m\" or \"1h30m\"",
            ),
            (
                "[stop]\nsignal = \"SIGFOO\"\n",
                "P:2:10: stop.signal: \"SIGFOO\" is not a signal; use a name like \"TERM\" or \"SIGTERM\", or a number like 15",
            ),
            (
                "[stop]\nsignal = 99\n",
                "P:2:10: stop.signal: 99 is not a signal number; use a name like \"TERM\" or \"SIGTERM\", or a number like 15",
            ),
            (
                "[restart]\npolicy = \"sometimes\"\n",
                "P:2:10: restart.policy: \"sometimes\" is not valid; expected one of never, on-failure, always",
            ),
            (
                "[conflict]\npolicy = \"Worktree\"\n",
                "P:2:10: conflict.policy: \"Worktree\" is not valid; expected one of worktree, wait, fail, takeover",
            ),
            (
                "[conflict]\nafter_timeout = \"wait\"\n",
                "P:2:17: conflict.after_timeout: \"wait\" is not valid; expected one of fail, worktree",
            ),
            (
                "[worktree]\non_exit = \"remove\"\n",
                "P:2:11: worktree.on_exit: \"remove\" is not valid; expected one of keep, remove-if-clean, queue-merge",
            ),
            (
                "[stop]\norphans = \"reap\"\n",
                "P:2:11: stop.orphans: \"reap\" is not valid; expected one of kill, leave",
            ),
            (
                "[conflict]\nexit_code = 0\n",
                "P:2:13: conflict.exit_code: 0 is out of range; use an exit code from 1 to 255 (default 75)",
            ),
            (
                "[conflict]\nexit_code = 256\n",
                "P:2:13: conflict.exit_code: 256 is out of range; use an exit code from 1 to 255 (default 75)",
            ),
            (
                "[conflict]\nexit_code = -75\n",
                "P:2:13: conflict.exit_code: -75 is out of range; use an exit code from 1 to 255 (default 75)",
            ),
            (
                "[restart]\nmax = -1\n",
                "P:2:7: restart.max: -1 is out of range; use 0 to 4294967295, or leave the key out for no limit",
            ),
            (
                "[log]\nlevel = \"verbose\"\n",
                "P:2:9: log.level: \"verbose\" is not valid; expected one of error, warn, info, debug, trace",
            ),
            (
                "[log]\nformat = \"xml\"\n",
                "P:2:10: log.format: \"xml\" is not valid; expected one of text, json",
            ),
            (
                "[worktree]\ndir = \"\"\n",
                "P:2:7: worktree.dir: the directory is empty; use a directory like \".worktrees\"",
            ),
            (
                "[worktree]\nbranch_prefix = \"a b/\"\n",
                "P:2:17: worktree.branch_prefix: \"a b/\" is not a usable branch prefix (it may not contain spaces, control characters or any of ~^:?*[\\); use a prefix like \"ralph/\"",
            ),
            (
                "[worktree]\nbranch_prefix = \"ralph/.x\"\n",
                "P:2:17: worktree.branch_prefix: \"ralph/.x\" is not a usable branch prefix (no part of it may start with a dot); use a prefix like \"ralph/\"",
            ),
            (
                "[run.env]\n\"A=B\" = \"1\"\n",
                "P:2:1: run.env: \"A=B\" is not a usable variable name; use a name without = or NUL, like RUST_LOG",
            ),
            (
                "[restart]\nbackoff_max = \"1s\"\nbackoff_initial = \"5s\"\n",
                "P:2:15: restart.backoff_max \"1s\" is shorter than restart.backoff_initial \"5s\"; make it at least as long",
            ),
            // Columns count characters, not bytes.
            (
                "# é\n[stop]\nsignal = \"É\"\n",
                "P:3:10: stop.signal: \"É\" is not a signal; use a name like \"TERM\" or \"SIGTERM\", or a number like 15",
            ),
            (
                "[stop] # «x»\ngrace = \"x\" ; orphans = \"kill\"\n",
                "P:2:13: invalid TOML: unexpected key or value, expected newline, `#`; fix the syntax there",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(error(text), expected, "{text:?}");
        }
    }

    #[test]
    fn invalid_toml() {
        let cases = [
            (
                "[stop\n",
                "P:1:6: invalid TOML: unclosed table, expected `]`; fix the syntax there",
            ),
            (
                "[stop]\ngrace = \n",
                "P:2:9: invalid TOML: string values must be quoted, expected literal string; fix the syntax there",
            ),
            (
                "[stop]\ngrace = \"1s\"\ngrace = \"2s\"\n",
                "P:3:1: invalid TOML: duplicate key; fix the syntax there",
            ),
            (
                "a = = 1",
                "P:1:5: invalid TOML: extra `=`, expected nothing; fix the syntax there",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(error(text), expected, "{text:?}");
        }
    }

    #[test]
    fn not_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, b"[stop]\ngrace = \"1\xffs\"\n").unwrap();
        let e = load(&path).unwrap_err();
        assert_eq!(e.status, ExitStatus::BadPolicy);
        assert_eq!(
            format!("{:#}", e.error),
            format!(
                "{}:2:11: the file is not valid UTF-8; save it as UTF-8 text",
                path.display()
            )
        );
    }

    #[test]
    fn unreadable_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone.toml");
        let e = load(&missing).unwrap_err();
        assert_eq!(e.status, ExitStatus::BadPolicy);
        assert_eq!(
            format!("{:#}", e.error),
            format!(
                "{}: No such file or directory (os error 2); check that the policy file exists and is readable",
                missing.display()
            )
        );
        let e = load(dir.path()).unwrap_err();
        assert_eq!(e.status.code(), 78);
        assert_eq!(
            format!("{:#}", e.error),
            format!(
                "{}: Is a directory (os error 21); check that the policy file exists and is readable",
                dir.path().display()
            )
        );
    }

    #[test]
    fn line_and_column() {
        let text = "ab\nçd\n\nx";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 2), (1, 3));
        assert_eq!(line_col(text, 3), (2, 1));
        assert_eq!(line_col(text, 5), (2, 2)); // after the two-byte ç
        assert_eq!(line_col(text, 4), (2, 1)); // inside ç: its start
        assert_eq!(line_col(text, 8), (4, 1));
        assert_eq!(line_col(text, 99), (4, 2));
        assert_eq!(line_col("a\r\nb", 3), (2, 1));
    }

    #[test]
    fn shipped_examples_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let file = load(&path).unwrap_or_else(|e| panic!("{:#}", e.error));
                assert_ne!(
                    file,
                    PolicyFile::default(),
                    "{} sets nothing",
                    path.display()
                );
                names.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        names.sort();
        for expected in [
            "ci.toml",
            "interactive.toml",
            "parallel-agents.toml",
            "systemd.toml",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "config/{expected} missing"
            );
        }
        // Spot-check that each example says what its comments promise.
        let get = |name: &str| load(&dir.join(name)).unwrap();
        assert_eq!(
            get("interactive.toml").conflict_policy,
            Some(OnConflict::Worktree)
        );
        let systemd = get("systemd.toml");
        assert_eq!(systemd.conflict_policy, Some(OnConflict::Wait));
        assert_eq!(systemd.restart_policy, Some(RestartPolicy::OnFailure));
        assert!(systemd.stop_grace.unwrap() > Duration::from_secs(10));
        assert_eq!(get("ci.toml").conflict_policy, Some(OnConflict::Fail));
        let parallel = get("parallel-agents.toml");
        assert_eq!(parallel.conflict_policy, Some(OnConflict::Worktree));
        assert!(matches!(
            parallel.on_exit,
            Some(OnExit::QueueMerge | OnExit::RemoveIfClean)
        ));
    }
}
