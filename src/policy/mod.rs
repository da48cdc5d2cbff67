//! The policy file: where it is found, how it is read and checked, and how it combines
//! with the command line into the effective [`Policy`].
//!
//! Precedence, highest first: command-line flags ([`Overrides`]), the one policy file
//! [`find`] picks, built-in defaults. Only one file is ever read; files are not merged.
//!
//! Every key is declared once, in the [`schema!`] table below: its section, [`Kind`]
//! (which reads, checks and prints the value), default, documentation and flag. The
//! section structs, [`Overrides`], `policy show` and `ralph-supervise.toml(5)` all come
//! from that table. To add a key, add one line to it (and a flag in `cli.rs` if it has
//! one). Every complaint about a file is one line naming `file:line:column`, what is
//! wrong and what to do, and exits 78 ([`ExitStatus::BadPolicy`]).

mod doc;
mod kinds;
mod read;
mod show;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use doc::man_page;
pub use kinds::{
    BranchPrefix, Dir, Env, ExitCode, Keyword, Kind, LOG_LEVELS, LogLevel, Restarts, Signal,
};
pub use read::{Bad, Val, load, parse_str};
pub use show::{format_duration, show};

use crate::exit::{CONFLICT_DEFAULT, ExitStatus, Failure};

/// Environment variable naming the policy file (second in the lookup order).
pub const ENV_POLICY: &str = "RALPH_SUPERVISE_POLICY";
/// The workspace's own policy file, relative to the workspace.
pub const WORKSPACE_FILE: &str = ".ralph/supervise.toml";
/// The user's policy file, relative to `$XDG_CONFIG_HOME`.
pub const USER_FILE: &str = "ralph-supervise/policy.toml";

/// Declares a closed set of keywords: the enum, [`Keyword`] (spellings, CLI help, and
/// the man page's text for each value), `FromStr` and `Display`.
macro_rules! keywords {
    ($(#[$meta:meta])* $name:ident {
        $($(#[$vmeta:meta])* $variant:ident = $text:literal, $help:literal, $man:literal;)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* #[doc = $man] $variant,)+ }

        impl Keyword for $name {
            const ALL: &'static [$name] = &[$($name::$variant),+];
            const VALUES: &'static [(&'static str, &'static str)] = &[$(($text, $man)),+];
            fn help(self) -> &'static str {
                match self { $($name::$variant => $help,)+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<$name, String> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text).ok_or_else(|| {
                    format!("{text:?} is not valid; expected one of {}", Self::list())
                })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

keywords! {
    /// What `run` does when the workspace lock is already held.
    OnConflict {
        Worktree = "worktree", "Run the command in a new git worktree",
            "Run the command in a new git worktree (see [worktree]).";
        Wait = "wait", "Block until the lock frees (optionally bounded by `wait_timeout`)",
            "Block until the lock is free, without polling; bounded by `wait_timeout`.";
        Fail = "fail", "Exit with the conflict code, naming the holder",
            "Exit with `exit_code`, naming the holder.";
        Takeover = "takeover", "Stop the holder (grace, then KILL) and take the lock",
            "Stop the holder as `ralph-supervise stop` does (its grace, then KILL), then take the lock.";
    }
}

keywords! {
    /// What `wait` does once `wait_timeout` expires.
    AfterTimeout {
        Fail = "fail", "Exit with the conflict code", "Exit with `exit_code`.";
        Worktree = "worktree", "Run the command in a new git worktree",
            "Run the command in a new git worktree.";
    }
}

keywords! {
    /// What happens to a worktree when its loop ends.
    OnExit {
        Keep = "keep", "Leave it in place", "Leave it in place.";
        RemoveIfClean = "remove-if-clean",
            "Remove it if it has no changes and no commits beyond its base",
            "Remove it if it has no changes and no commits beyond its base.";
        QueueMerge = "queue-merge", "On exit 0, queue it in `.ralph/merge-queue.jsonl`",
            "On exit 0, append it to `.ralph/merge-queue.jsonl` for `ralph loops merge`.";
    }
}

keywords! {
    /// What happens to members of the child's process group left after it exits.
    Orphans {
        Kill = "kill", "TERM, then KILL after the grace", "TERM, then KILL after `grace`.";
        Leave = "leave", "Leave them running", "Leave them running.";
    }
}

keywords! {
    /// When the child is started again after it exits.
    RestartPolicy {
        Never = "never", "Never", "Never.";
        OnFailure = "on-failure", "When it exits non-zero or dies of a signal",
            "When it exits non-zero or is killed by a signal.";
        Always = "always", "Whenever it exits (a stop still ends the run)", "Whenever it exits.";
    }
}

keywords! {
    /// The format of the supervisor's own log lines.
    LogFormat {
        Text = "text", "", "For people.";
        Json = "json", "", "One JSON object per line, for collectors.";
    }
}

/// Declares every key once; see the module documentation. Each line is
/// `key: Kind = default, "man page text" [, unset "what None means"] [, flag field: Type];`.
macro_rules! schema {
    ($($(#[$sdoc:meta])* [$sec:ident] $Sec:ident {
        $($key:ident: $kind:ty = $default:expr, $doc:literal
            $(, unset $unset:literal)? $(, flag $flag:ident: $fty:ty)?;)+
    })+) => {
        $($(#[$sdoc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $Sec { $(#[doc = $doc] pub $key: <$kind as Kind>::Out,)+ })+

        /// The effective policy: every value resolved.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Policy { $(pub $sec: $Sec,)+ }

        impl Default for Policy {
            /// The built-in defaults.
            fn default() -> Policy {
                Policy { $($sec: $Sec { $($key: $default,)+ },)+ }
            }
        }

        /// Values given on the command line, one per flag. All optional; set ones win.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Overrides { $($($(pub $flag: Option<$fty>,)?)+)+ }

        /// Every section and its keys, in documentation order.
        pub const SECTIONS: &[(&str, &[&str])] = &[$((stringify!($sec), &[$(stringify!($key)),+])),+];

        /// Every key, as `"section.key"`, in documentation order.
        pub const KEYS: &[&str] = &[$($(concat!(stringify!($sec), ".", stringify!($key))),+),+];

        const TABLE: &[Key] = &[$($(Key {
            full: concat!(stringify!($sec), ".", stringify!($key)),
            doc: $doc,
            kind: <$kind as Kind>::DOC,
            values: <$kind as Kind>::VALUES,
            unset: { let _u = ""; $(let _u = $unset;)? _u },
            flag: { let _f: Option<&str> = None; $(let _f = Some(stringify!($flag));)? _f },
            read: |p, v| Ok(p.$sec.$key = <$kind as Kind>::read(v)?),
            copy: |p, from| p.$sec.$key = from.$sec.$key.clone(),
            show: |p| <$kind as Kind>::show(&p.$sec.$key),
            flagged: |_p, _o| {
                $(if let Some(v) = &_o.$flag {
                    _p.$sec.$key = v.clone().into();
                    return true;
                })?
                false
            },
        }),+),+];
    };
}

schema! {
    /// `[conflict]`: what to do when the workspace is taken.
    [conflict] Conflict {
        policy: Option<OnConflict> = None,
            "What `run` does when another loop holds the workspace lock.",
            unset "worktree in a git repository, fail elsewhere", flag on_conflict: OnConflict;
        wait_timeout: Option<Duration> = None,
            "How long \"wait\" waits; then `after_timeout` applies.",
            unset "wait without limit", flag wait_timeout: Duration;
        after_timeout: AfterTimeout = AfterTimeout::Fail,
            "What \"wait\" does when `wait_timeout` expires.";
        exit_code: ExitCode = CONFLICT_DEFAULT,
            "Exit status for \"fail\" and for a timed-out wait.", flag conflict_exit_code: u8;
    }
    /// `[worktree]`: how worktree launches are laid out and cleaned up.
    [worktree] Worktree {
        dir: Dir = PathBuf::from(".worktrees"),
            "Directory the worktrees are made in, one subdirectory per loop id; relative to the repository's top level.";
        branch_prefix: BranchPrefix = "ralph/".to_string(),
            "Prefix of each worktree's branch name, followed by the loop id. It must be usable in a git ref name.";
        sync: bool = true,
            "Carry uncommitted work (modified, staged, deleted and untracked files that are not ignored) over into the new worktree.";
        on_exit: OnExit = OnExit::Keep, "What happens to a worktree when its loop ends.";
    }
    /// `[stop]`: how the child is stopped.
    [stop] Stop {
        signal: Signal = libc::SIGTERM,
            "Signal that asks the command to stop: a name (\"TERM\", \"SIGINT\") or a number.",
            flag stop_signal: i32;
        grace: Duration = Duration::from_secs(10), "Time between the stop signal and KILL.",
            flag stop_grace: Duration;
        orphans: Orphans = Orphans::Kill,
            "What happens to members of the command's process group still running after it exits.";
    }
    /// `[restart]`: when and how fast the child is started again.
    [restart] Restart {
        policy: RestartPolicy = RestartPolicy::Never,
            "When the command is started again after it exits. The workspace lock stays held across restarts; a stop ends them.",
            flag restart: RestartPolicy;
        max: Option<Restarts> = None,
            "Most restarts in one run; then ralph-supervise exits with the command's status.",
            unset "unlimited", flag max_restarts: u32;
        backoff_initial: Duration = Duration::from_secs(1),
            "Delay before the first restart; it doubles with each further restart.",
            flag restart_delay: Duration;
        backoff_max: Duration = Duration::from_secs(60),
            "Longest delay between restarts; at least `backoff_initial`.";
    }
    /// `[run]`: the child's run.
    [run] Run {
        max_runtime: Option<Duration> = None,
            "Stop the command gracefully when it has run this long, and exit 124.",
            unset "no limit", flag max_runtime: Duration;
        env: Env = BTreeMap::new(),
            "Extra environment variables for the command, written as a [run.env] section of NAME = \"value\" lines.";
    }
    /// `[log]`: the supervisor's own logging.
    [log] Log {
        format: LogFormat = LogFormat::Text,
            "Format of ralph-supervise's own log lines on standard error.", flag log_format: LogFormat;
        level: LogLevel = "info".to_string(),
            "Least severe level logged: \"error\", \"warn\", \"info\", \"debug\" or \"trace\". `RUST_LOG`, `-v` and `-q` win over it.";
    }
}

/// One row of the key table.
struct Key {
    full: &'static str,
    doc: &'static str,
    kind: &'static str,
    values: &'static [(&'static str, &'static str)],
    unset: &'static str,
    flag: Option<&'static str>,
    read: fn(&mut Policy, &Val) -> Result<(), Bad>,
    copy: fn(&mut Policy, &Policy),
    show: fn(&Policy) -> Option<String>,
    flagged: fn(&mut Policy, &Overrides) -> bool,
}

fn key(full: &str) -> Option<&'static Key> {
    TABLE.iter().find(|k| k.full == full)
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

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Built in.
    Default,
    /// The policy file at this path.
    File(PathBuf),
    /// A command-line flag; [`flag_for`] names it.
    Flag,
}

/// One policy file as written: the keys it sets (as `"section.key"`), with their
/// values in `values` (every other value there is the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyFile {
    pub values: Policy,
    pub set: BTreeSet<&'static str>,
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

/// The command-line flag that sets `key` (`"stop.grace"` → `--stop-grace`), if any.
pub fn flag_for(full: &str) -> Option<String> {
    key(full)?
        .flag
        .map(|f| format!("--{}", f.replace('_', "-")))
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
    Ok(config_home
        .map(|dir| dir.join(USER_FILE))
        .filter(|file| present(file)))
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

/// Combines the file and the flags: flags override the file, the file overrides the
/// built-in defaults. If the resulting `backoff_initial` is longer than `backoff_max`,
/// `backoff_max` is raised to it (and credited to the same source), so `--restart-delay
/// 2m` means two minutes even against the default 60 s cap.
pub fn resolve(file: Option<(PathBuf, PolicyFile)>, flags: &Overrides) -> Effective {
    let mut policy = Policy::default();
    let mut sources: BTreeMap<&'static str, Source> =
        KEYS.iter().map(|key| (*key, Source::Default)).collect();
    let path = file.as_ref().map(|(path, _)| path.clone());
    for key in TABLE {
        if let Some((path, f)) = &file
            && f.set.contains(key.full)
        {
            (key.copy)(&mut policy, &f.values);
            sources.insert(key.full, Source::File(path.clone()));
        }
        if (key.flagged)(&mut policy, flags) {
            sources.insert(key.full, Source::Flag);
        }
    }
    let restart = &mut policy.restart;
    if restart.backoff_max < restart.backoff_initial {
        restart.backoff_max = restart.backoff_initial;
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
        Some(path) => Some((path.clone(), load(&path)?)),
        None => None,
    };
    Ok(resolve(file, flags))
}

#[cfg(test)]
mod tests;
