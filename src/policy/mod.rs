//! The policy: command-line flags ([`Overrides`]) over the one policy file [`find`] picks
//! over built-in defaults. Every key is declared once, in `schema!` below (section,
//! [`Kind`], default, man text, flag); the section structs, the serde-derived structs
//! the file is read into, [`Overrides`], `policy show` and `ralph-supervise.toml(5)` are
//! generated from it. A bad file is one line, `file:line:col: what; what to do`, and
//! exit 78.

mod kinds;
mod read;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::ErrorKind::{NotADirectory, NotFound, PermissionDenied};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use kinds::*;
pub use read::parse;
pub(crate) use read::*;

use crate::conflict::{AfterTimeout, OnConflict};
use crate::containment::{ContainmentMode, Orphans};
use crate::exit::{CONFLICT_DEFAULT, ExitStatus, Failure};
use crate::handover::Handover;
use crate::logging::{LogFormat, LogLevel};
use crate::supervisor::machine::{ExitActions, RestartWhen};
use crate::worktree::OnExit;

/// The policy file names: in the environment, in the workspace, in `$XDG_CONFIG_HOME`.
pub(crate) const ENV_POLICY: &str = "RALPH_SUPERVISE_POLICY";
pub(crate) const WORKSPACE_FILE: &str = ".ralph/supervise.toml";
pub(crate) const USER_FILE: &str = "ralph-supervise/policy.toml";

/// The key table: `key: Kind = default, "man text" [, unset "meaning"] [, flag name];`.
macro_rules! schema {
    ($([$sec:ident] $Sec:ident $sdoc:literal {
        $($key:ident: $kind:ty = $default:expr, $doc:literal
            $(, unset $unset:literal)? $(, flag $flag:ident)?;)+
    })+) => {
        $(#[doc = $sdoc]
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub(crate) struct $Sec { $(#[doc = $doc] pub $key: <$kind as Kind>::Out,)+ })+
        /// The effective policy: every value resolved. `default()` is the built-in one.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub(crate) struct Policy { $(pub $sec: $Sec,)+ }
        impl Default for Policy { fn default() -> Policy { Policy { $($sec: $Sec { $($key: $default,)+ },)+ } } }
        /// The file as serde reads it: each section and key optional, none unknown.
        mod file {
            use super::*;
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            pub(crate) struct File { $(pub(crate) $sec: Option<$Sec>,)+ }
            $(#[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            pub(crate) struct $Sec { $(pub(crate) $key: Option<$kind>,)+ })+
        }
        /// Puts the values `file` sets over `to`'s ([`Kind::merge`]); their keys go in `to.set`.
        fn apply(file: file::File, to: &mut PolicyFile) {
            $(if let Some(sec) = file.$sec { $(if let Some(value) = sec.$key {
                <$kind as Kind>::merge(&mut to.values.$sec.$key, value.out());
                to.set.insert(concat!(stringify!($sec), ".", stringify!($key)));
            })+ })+
        }
        /// Every key's row.
        pub(crate) const TABLE: &[Key] = &[$($(Key {
            section: stringify!($sec), name: stringify!($key), doc: $doc,
            full: concat!(stringify!($sec), ".", stringify!($key)),
            kind: <$kind as Kind>::DOC, values: <$kind as Kind>::VALUES,
            expected: <$kind as Kind>::EXPECTED, hint: <$kind as Kind>::HINT,
            unset: { let _u = ""; $(let _u = $unset;)? _u },
            flag: { let _f: Option<&str> = None; $(let _f = Some(stringify!($flag));)? _f },
            entry: <$kind as Kind>::ENTRY,
            show: |p| <$kind as Kind>::show(&p.$sec.$key),
            over: |to, from| <$kind as Kind>::merge(&mut to.$sec.$key, from.$sec.$key.clone()),
        }),+),+];
    };
}

schema! {
    [conflict] Conflict "`[conflict]`: what to do when the workspace is taken." {
        policy: Option<OnConflict> = None, "What `run` does when another loop holds the workspace lock.", unset "worktree in a git repository, fail elsewhere", flag on_conflict;
        wait_timeout: Option<Dur> = None, "How long \"wait\" waits; then `after_timeout` applies.", unset "wait without limit", flag wait_timeout;
        after_timeout: AfterTimeout = AfterTimeout::Fail, "What \"wait\" does when `wait_timeout` expires.";
        exit_code: ExitCode = CONFLICT_DEFAULT, "Exit status for \"fail\" and for a timed-out wait.", flag conflict_exit_code;
    }
    [worktree] Worktree "`[worktree]`: how worktree launches are laid out and cleaned up." {
        dir: Dir = PathBuf::from(".worktrees"), "Directory the worktrees are made in, one subdirectory per loop id: relative to the repository's top level (not leaving it with `..`, not in `.git` or `.ralph`), or absolute.";
        branch_prefix: BranchPrefix = "ralph/".to_string(), "Prefix of each worktree's branch name, followed by the loop id. It must be usable in a git ref name.";
        sync: Bool = true, "Carry uncommitted work (modified, staged, deleted and untracked files that are not ignored) over into the new worktree.";
        on_exit: OnExit = OnExit::Keep, "What happens to a worktree when its loop ends.";
        copy: Globs = Vec::new(), "Ignored or untracked files copied into each new worktree (after `sync`), as globs relative to the repository's top level, like `[\".env\", \"config/*.local.toml\"]`, matched as git matches them: `*` and `?` stay within a directory, `**` crosses directories, `[abc]` matches one of a, b, c. A tracked file or one already there is never overwritten, a symlink is copied as a link only when it points inside the repository, and a glob that matches nothing is skipped with a warning.";
    }
    [stop] Stop "`[stop]`: how the child is stopped." {
        signal: Signal = libc::SIGTERM, "Signal that asks the command to stop: a name (\"TERM\", \"SIGINT\") or a number.", flag stop_signal;
        grace: Dur = Duration::from_secs(10), "Time between the stop signal and KILL.", flag stop_grace;
        orphans: Orphans = Orphans::Kill, "What happens to the processes the command started (its descendants, whatever their process group or session) that still run after it exits.";
        containment: ContainmentMode = ContainmentMode::Auto, "How the loop's processes are contained: \"cgroup\" runs the command in a cgroup v2 of its own (below the one ralph-supervise started in), so that every process it starts is found, stopped (`cgroup.kill`), frozen on Ctrl-Z and accounted, and the cgroup is removed at the end; \"tree\" finds them as descendants (ralph-supervise is their subreaper), confirming each by its start time before a signal. \"auto\" takes a cgroup where one can be made.", flag containment;
    }
    [restart] Restart "`[restart]`: when and how fast the child is started again." {
        policy: RestartWhen = RestartWhen::Never, "When the command is started again after it exits. The workspace lock stays held across restarts; a stop ends them.", flag restart;
        max: Option<Restarts> = None, "Most restarts in one run (or within `window`); then ralph-supervise gives up and exits with the command's status.", unset "unlimited", flag max_restarts;
        backoff_initial: Dur = Duration::from_secs(1), "Delay before the first restart; it doubles with each further restart.", flag restart_delay;
        backoff_max: Dur = Duration::from_secs(60), "Longest delay between restarts; at least `backoff_initial`.";
        window: Option<NonZeroDur> = None, "Span in which `max` counts restarts (a sliding window). One restart more within it, and ralph-supervise gives up with one log line and exits with the command's status. Every restart counts, whatever caused it.", unset "every restart of the run counts", flag restart_window;
        exit: ExitActions = BTreeMap::new(), "What follows an exit status, over `policy`: \"stop\" (no restart), \"restart\" (after the backoff) or a fixed delay like \"30m\" (a usage limit). Written as a [restart.exit] section of CODE = \"ACTION\" lines; CODE is the command's exit code, 128+N when signal N killed it, 124 after a stall. A stop (a signal, a stop request, `max_runtime`) never restarts.", unset "every exit status follows `policy`", flag restart_exit;
    }
    [run] Run "`[run]`: the child's run." {
        max_runtime: Option<NonZeroDur> = None, "Stop the command gracefully when it has run this long, and exit 124.", unset "no limit", flag max_runtime;
        stall_timeout: Option<NonZeroDur> = None, "Stop the command gracefully, as `max_runtime` does, once it has stalled this long: its process tree (the command and everything it started) used less than 1 % of one CPU and no file under the workspace changed (`.git/` included; `.ralph/supervise/` and other loops' worktrees left out). The run then ends with status 124, which `[restart.exit]` and `policy` look up like any other: a stall may restart. The clock pauses while the job is stopped (Ctrl-Z). Checked every tenth of the timeout (1 s to 60 s apart); unset, nothing is checked.", unset "no stall watchdog", flag stall_timeout;
        env: Env = BTreeMap::new(), "Extra environment variables for the command, written as a [run.env] section of NAME = \"value\" lines. The variables ralph-supervise sets or removes itself (`RALPH_LOCK_FD`, `RALPH_WORKSPACE_ROOT`, `RALPH_LOOP_INDEX`, `RALPH_FENCING_TOKEN`, the etcd credentials, `NOTIFY_SOCKET`) are refused.";
    }
    [lock] Lock "`[lock]`: the workspace lock." {
        handover: Handover = Handover::Auto, "Hand the workspace lock over to a command (or one of its descendants) that locks `.ralph/loop.lock` itself, as ralph does: the first to lock it holds it through the supervisor's own locked description and runs as the primary, with no instant at which the workspace is free; every other attempt finds it taken. Linux only (seccomp user notification, Linux 5.9 or later). The command then runs with `no_new_privs`, so set-user-ID programs (sudo) cannot raise privileges inside the loop. Where the system cannot, \"auto\" warns and runs the command without it, \"always\" refuses (status 125). `--handover` alone means \"always\".", flag handover;
    }
    [limits] Limits "`[limits]`: resource limits of the loop's cgroup (with `containment` \"cgroup\" or \"auto\")." {
        memory_max: Option<MemoryMax> = None, "Most memory the loop's processes may use together (cgroup `memory.max`), as systemd's `MemoryMax=`: \"512M\", \"2G\" (K, M, G, T are powers of 1024), a share of the machine's memory like \"50%\", or \"max\".", unset "no limit";
        pids_max: Option<PidsMax> = None, "Most processes (and threads) the loop may have at once (cgroup `pids.max`), as systemd's `TasksMax=`: a number, or \"max\". A fork beyond it fails.", unset "no limit";
        cpu_max: Option<CpuMax> = None, "Most CPU time the loop may use (cgroup `cpu.max`), as systemd's `CPUQuota=`: a share of one CPU, like \"50%\" or \"150%\" (one and a half CPUs), or \"max\".", unset "no limit";
        required: Bool = false, "Whether a limit that cannot be applied (no cgroup, or its controller is not available to the cgroup ralph-supervise started in) is an error (exit 125) rather than one warning line.";
    }
    [hooks] Hooks "`[hooks]`: commands run once before the loop starts and once after it ends." {
        on_start: Option<Argv> = None, "Command run once the workspace lock is taken, before the command first starts, as an array of program and arguments, like `[\"make\", \"services-up\"]`. It gets the run's facts in `RALPH_SUPERVISE_LOOP_ID`, `RALPH_SUPERVISE_WORKSPACE`, `RALPH_SUPERVISE_WORKTREE`, `RALPH_SUPERVISE_BRANCH` and `RALPH_LOOP_INDEX`; its failure is logged and the loop starts anyway.", unset "no hook";
        on_exit: Option<Argv> = None, "Command run once after the last run, once the workspace lock is released (and the worktree's `on_exit` applied), with the facts `on_start` gets plus `RALPH_SUPERVISE_EXIT_STATUS` (ralph-supervise's exit status) and `RALPH_SUPERVISE_REASON` (\"exit\", or what stopped the loop as the history's `stopped_by` says it). Its failure is logged and never changes the exit status.", unset "no hook";
        timeout: Dur = Duration::from_secs(60), "Longest a hook may run; then its process group is killed and that is logged.";
    }
    [fleet] Fleet "`[fleet]`: fleet mode, one lock for a workspace key across hosts, on etcd (a binary built with the `fleet` feature)." {
        endpoints: Option<Endpoints> = None, "etcd client URLs, like [\"http://etcd-1:2379\", \"https://etcd-2:2379\"] (on the command line, comma-separated). Set, the run takes the fleet lock on `key` too, after the local lock and before the command starts. User name and password come only from RALPH_SUPERVISE_ETCD_USER and RALPH_SUPERVISE_ETCD_PASSWORD.", unset "no fleet lock", flag fleet_endpoints;
        key: Option<FleetKey> = None, "The fleet lock's key, made of letters, digits, dots, underscores, dashes and slashes only. Runs on any host with the same key exclude each other.", unset "from `git remote get-url origin` and the current branch, like \"github.com/acme/api/main\"", flag fleet_key;
        ttl: FleetTtl = Duration::from_secs(10), "The lease's time to live, from 2s to 9000000000s (etcd's longest). When keep-alives fail, the command is stopped (grace min(stop.grace, ttl/3)) before the lease can lapse.", flag fleet_ttl;
        tls_ca: Option<TlsFile> = None, "PEM file of the certificate authority that signs the etcd servers' certificates.", unset "none (an https endpoint needs it)";
        tls_cert: Option<TlsFile> = None, "PEM client certificate, with `tls_key`, for etcd servers that ask for one.", unset "none";
        tls_key: Option<TlsFile> = None, "PEM private key of `tls_cert`.", unset "none";
    }
    [log] Log "`[log]`: the supervisor's own logging." {
        format: LogFormat = LogFormat::Text, "Format of ralph-supervise's own log lines on standard error.", flag log_format;
        level: LogLevel = LogLevel::Info, "Least severe level logged. `RUST_LOG`, `-v` and `-q` win over it.";
    }
}
/// One row of the key table: what the file reader, `policy show`, the man page and the
/// command line know about a key.
pub(crate) struct Key {
    pub(crate) section: &'static str,
    pub(crate) name: &'static str,
    pub(crate) full: &'static str,
    /// Its meaning, for the man page and `--help`.
    pub(crate) doc: &'static str,
    /// Its type as the man page names it: "duration", "string", "integer, 1 to 255", ...
    pub(crate) kind: &'static str,
    /// Each keyword with its meaning; empty for other kinds.
    pub(crate) values: &'static [(&'static str, &'static str)],
    /// What leaving the key unset means (`policy show`, the man page).
    pub(crate) unset: &'static str,
    /// The command-line flag's name (`stop_grace`), if the key has one.
    pub(crate) flag: Option<&'static str>,
    /// For a table of entries, how its flag's value is written: [`Kind::ENTRY`].
    pub(crate) entry: Option<&'static str>,
    /// What a value of another type is told it must be, and what to write instead.
    expected: &'static str,
    hint: fn(Option<&str>) -> String,
    /// Its value in a policy as TOML; `None` when unset.
    pub(crate) show: fn(&Policy) -> Option<String>,
    /// Puts its value in the second policy over the first's.
    over: fn(&mut Policy, &Policy),
}
fn key(full: &str) -> Option<&'static Key> {
    TABLE.iter().find(|k| k.full == full)
}
impl Key {
    /// The built-in default as TOML, or what leaving the key unset means.
    pub(crate) fn default(&self) -> Result<String, &'static str> {
        (self.show)(&Policy::default()).ok_or(self.unset)
    }
    /// The command-line flag, `--stop-grace`.
    pub(crate) fn long_flag(&self) -> Option<String> {
        Some(format!("--{}", self.flag?.replace('_', "-")))
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Default,
    File(PathBuf),
    Flag,
}
/// One policy file as written: the keys it sets, with their values in `values` (the
/// others at their defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyFile {
    pub(crate) values: Policy,
    pub(crate) set: BTreeSet<&'static str>,
}
/// The effective policy, the file read (if any), and the [`Source`] of every key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Effective {
    pub(crate) policy: Policy,
    pub(crate) file: Option<PathBuf>,
    pub(crate) sources: BTreeMap<&'static str, Source>,
}

/// Values given on the command line ([`Overrides::set`]), read as the file's are: the
/// last given wins; a table key's flag (`restart_exit`) adds each entry, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Overrides(Box<PolicyFile>);

type EnvFn<'a> = &'a dyn Fn(&str) -> Option<OsString>;
const NAMED: &str = "named by $RALPH_SUPERVISE_POLICY); check the path, or unset the variable";

/// The policy file: `--policy`, `$RALPH_SUPERVISE_POLICY` (not empty), the workspace's,
/// `$XDG_CONFIG_HOME`'s (`$HOME/.config` if unset, empty or relative), or none. The first
/// two must exist (else exit 78); an unreadable one is returned, for [`load`] to report.
pub(crate) fn find(
    explicit: Option<&Path>,
    ws: &Path,
    env: EnvFn,
) -> Result<Option<PathBuf>, Failure> {
    let named = env(ENV_POLICY).filter(|v| !v.is_empty());
    let named = named.map(|path| (PathBuf::from(path), NAMED));
    let given = explicit.map(|path| (path.to_path_buf(), "given by --policy); check the path"));
    if let Some((path, how)) = given.or(named) {
        if std::fs::metadata(&path).is_err_and(|e| e.kind() == NotFound) {
            let msg = format!("{}: policy file not found ({how}", path.display());
            return Err(Failure::msg(ExitStatus::BadPolicy, msg));
        }
        return Ok(Some(path));
    }
    let xdg = env("XDG_CONFIG_HOME").map(PathBuf::from);
    let home = env("HOME").filter(|h| !h.is_empty());
    let home = home.map(|h| PathBuf::from(h).join(".config"));
    let user = xdg.filter(|p| p.is_absolute()).or(home);
    let user = user.map(|config| config.join(USER_FILE));
    let candidates = [Some(ws.join(WORKSPACE_FILE)), user];
    // One counts if it exists, readable or not; one in a directory we may not search
    // (a service user with `HOME=/root`) is skipped like a missing one.
    let absent = [NotFound, PermissionDenied, NotADirectory];
    let present = |p: &PathBuf| !std::fs::metadata(p).is_err_and(|e| absent.contains(&e.kind()));
    Ok(candidates.into_iter().flatten().find(present))
}

/// Flags over the file over defaults. A `backoff_max` below the resulting `backoff_initial`
/// is raised to it (same source), so `--restart-delay 2m` means two minutes.
pub(crate) fn resolve(file: Option<(PathBuf, PolicyFile)>, flags: &Overrides) -> Effective {
    let (file, read) = file.unzip();
    let (mut policy, set) = read.map(|f| (f.values, f.set)).unwrap_or_default();
    let mut sources: BTreeMap<_, _> = TABLE.iter().map(|k| (k.full, Source::Default)).collect();
    for key in TABLE {
        if let Some(path) = file.as_ref().filter(|_| set.contains(key.full)) {
            sources.insert(key.full, Source::File(path.clone()));
        }
        if flags.0.set.contains(key.full) {
            (key.over)(&mut policy, &flags.0.values);
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
        file,
        sources,
    }
}

/// [`find`], [`load`] and [`resolve`] in one: the effective policy for a run.
pub(crate) fn effective(
    at: Option<&Path>,
    ws: &Path,
    env: EnvFn,
    o: &Overrides,
) -> Result<Effective, Failure> {
    let file = find(at, ws, env)?.map(|path| load(&path).map(|f| (path, f)));
    Ok(resolve(file.transpose()?, o))
}

#[cfg(test)]
mod tests;
