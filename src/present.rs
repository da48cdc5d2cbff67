//! What people and scripts read: the one-line description of a lock holder, the text
//! of `status`, the tables of `list` and `history`, the effective policy of `policy
//! show`, and the JSON shapes of `status --json` and `list --json`.
//!
//! It exists so that the core (`lock`, `conflict`, `control`) finds and decides, and
//! never formats: the wording of a log line or a table column changes here alone. The
//! JSON shapes are `Serialize` structs rather than `json!` literals so that their keys
//! and types are written once, documented, and checked by the compiler; they are part
//! of the interface (scripts parse them) and documented again in the `status` and
//! `list` manual pages. Fields are declared in alphabetical order, the order the keys
//! have always been printed in.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::PathBuf;

use chrono::{TimeDelta, Utc};
use serde::Serialize;

use crate::history;
use crate::lock::{Holder, LoopState, MetaState};
use crate::metadata::{LastExit, Mode, format_time};
use crate::policy::{Effective, Source, TABLE};
use crate::procfs;
use crate::setting::short_duration;
use crate::supervisor::machine::{Decision, Verdict, Why};
use crate::worktree::registry;

/// Whether `c` must not reach a terminal as it is: the C0 and C1 control characters
/// and DEL (Unicode's `Cc`: a newline breaks a table row, ESC starts a terminal
/// escape sequence, and a UTF-8 terminal reads U+009B as ESC `[`), and the
/// bidirectional overrides and isolates, which make a terminal show text in another
/// order than it is ("Trojan Source").
fn unprintable(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` made safe to print: each control character written the way Rust and C write
/// it in a string literal (`\n`, `\t`, `\r`, `\x1b` for the other ASCII ones,
/// `\u{9b}` beyond ASCII); everything else, backslashes included, as it is. The one
/// escaping function of everything ralph-supervise prints for people (never the child's
/// output, which is not ours to touch).
pub(crate) fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unprintable) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii() && unprintable(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if unprintable(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A path made safe to print ([`escape`] of its lossy display).
pub(crate) fn path(p: &std::path::Path) -> String {
    escape(&p.to_string_lossy()).into_owned()
}

/// `3h12m`, `45s`: a short age.
pub(crate) fn human_age(age: TimeDelta) -> String {
    let secs = age.num_seconds().max(0);
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m"),
    }
}

/// Whole seconds since `started`, never negative.
fn age_seconds(started: chrono::DateTime<Utc>) -> i64 {
    Utc::now()
        .signed_duration_since(started)
        .num_seconds()
        .max(0)
}

/// One human line naming the holder of a lock: child pid, prompt, how long it has run
/// and whether its supervisor is alive. For log lines and the conflict message.
pub(crate) fn holder(holder: &Holder) -> String {
    match &holder.metadata {
        MetaState::Valid(m) => {
            let age = Utc::now().signed_duration_since(m.started);
            let mut s = format!(
                "pid {} (\"{}\") since {} ({} ago)",
                m.pid,
                escape(&m.prompt),
                format_time(&m.started),
                human_age(age)
            );
            match m.supervisor_pid {
                _ if crate::lock::pids_elsewhere(m) => {
                    s.push_str(", pids of another pid namespace (a container?)")
                }
                Some(_) if m.restart.next_start.is_some() => {
                    let at = m.restart.next_start.as_ref().map(format_time);
                    let at = at.unwrap_or_default();
                    s.push_str(&format!(", under ralph-supervise (restarting at {at})"));
                }
                Some(sp) if sp == m.pid => s.push_str(", under ralph-supervise (starting)"),
                Some(sp) => {
                    let alive = procfs::alive(sp, m.supervisor_start_time);
                    s.push_str(&format!(
                        ", supervisor pid {sp} {}",
                        if alive { "alive" } else { "gone" }
                    ));
                }
                None => s.push_str(", not supervised (ralph or another tool)"),
            }
            if let Some(procs) = holder.processes.as_deref()
                && !procs.is_empty()
            {
                s.push_str(&format!("; the lock is now held by {}", processes(procs)));
            }
            s
        }
        MetaState::Empty | MetaState::Invalid(_) => {
            let what = match &holder.metadata {
                MetaState::Empty => "no metadata".to_string(),
                MetaState::Invalid(e) => format!("unreadable metadata: {}", escape(e)),
                MetaState::Valid(_) => unreachable!(),
            };
            match (holder.processes.as_deref(), holder.kernel.as_deref()) {
                (Some(procs), _) if !procs.is_empty() => {
                    format!("{} ({what})", processes(procs))
                }
                (_, Some([pid, ..])) => format!("a process (flock taken by pid {pid}; {what})"),
                _ => format!("an unknown process ({what})"),
            }
        }
    }
}

/// `pid N (name), pid M (name)`.
pub(crate) fn processes<'a>(procs: impl IntoIterator<Item = &'a procfs::HoldingProcess>) -> String {
    procs
        .into_iter()
        .map(|p| format!("pid {} ({})", p.pid, escape(&p.name)))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------
// status

/// What the lock file held, as `status --json` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum MetadataKind {
    /// JSON metadata that parses.
    Valid,
    /// An empty (or missing) lock file.
    Empty,
    /// Something that does not parse.
    Invalid,
}

/// `status --json`: one object describing the workspace's own loop. Also the first
/// element of `list --json` when that loop runs or left metadata behind.
///
/// Every key is always present; `null` where the lock file does not say (no metadata,
/// or metadata written by ralph itself without our fields). Keys, in the order printed:
///
/// - `age_seconds` (integer|null): seconds since `started`.
/// - `child_alive` (bool|null): the command's process exists (confirmed by its start
///   time where recorded).
/// - `child_pid` (integer|null): the command's pid.
/// - `command` (array of strings|null): the command line.
/// - `containment` (string|null): `"cgroup"` or `"tree"`, how the loop's processes
///   are contained.
/// - `holders` (array|null): the processes holding the lock now, looked for when it is
///   held and the supervisor and child the metadata names are gone (`null` otherwise):
///   objects with `pid` (integer), `name` (string, the command name) and `loop` (bool:
///   it belongs to the recorded loop, so `stop` may end it).
/// - `id` (string|null): the loop id (`ralph-...`).
/// - `last_exit` (object|null): how the last run ended, once a restart followed one:
///   `code` (integer|null), `signal` (string|null, `"SIGKILL"`), `status` (integer: the
///   code, or 128+N after signal N, as `[restart.exit]` matches it) and `why` (string:
///   the rule that decided the restart, `restart.exit 75 = "30m"`).
/// - `lock_holders` (array of integers): the pids the kernel names as holding the flock.
/// - `metadata` (string): `"valid"`, `"empty"` or `"invalid"`.
/// - `mode` (string|null): `"primary"` or `"worktree"`.
/// - `next_start` (string|null): RFC 3339, UTC: when the next run starts, while the
///   supervisor waits between runs (no command runs then).
/// - `pid` (integer|null): ralph's `pid` field: the command's pid once it runs.
/// - `pid_namespace` (string|null): `"same"` when the recorded pids are numbers of the
///   reader's pid namespace, `"other"` when of another (a container's: they are not
///   judged, so `child_alive` and `supervisor_alive` are null), `null` when the lock
///   file does not say.
/// - `prompt` (string|null): the task, at most 100 characters.
/// - `restarts` (integer|null): restarts so far; `null` until a run ended and another
///   followed.
/// - `running` (bool): somebody holds the flock.
/// - `stale` (bool): nobody holds it but the file still names a loop.
/// - `started` (string|null): RFC 3339, UTC.
/// - `usage` (object|null): what the loop's processes use now, while its supervisor
///   runs here: `cpu_ms` (integer, CPU time so far), `memory_bytes` (integer|null,
///   memory in use) and `processes` (integer, alive now).
/// - `supervisor_alive` (bool|null), `supervisor_pid` (integer|null): the
///   ralph-supervise process holding the lock for the command.
/// - `workspace` (string): the workspace inspected.
/// - `worktree` (string|null): the worktree directory, for a worktree loop.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Status {
    pub(crate) age_seconds: Option<i64>,
    pub(crate) child_alive: Option<bool>,
    pub(crate) child_pid: Option<u32>,
    pub(crate) command: Option<Vec<String>>,
    pub(crate) containment: Option<String>,
    pub(crate) holders: Option<Vec<HolderJson>>,
    pub(crate) id: Option<String>,
    pub(crate) last_exit: Option<LastExit>,
    pub(crate) lock_holders: Vec<u32>,
    pub(crate) metadata: MetadataKind,
    pub(crate) mode: Option<Mode>,
    pub(crate) next_start: Option<String>,
    pub(crate) pid: Option<u32>,
    pub(crate) pid_namespace: Option<&'static str>,
    pub(crate) prompt: Option<String>,
    pub(crate) restarts: Option<u32>,
    pub(crate) running: bool,
    pub(crate) stale: bool,
    pub(crate) started: Option<String>,
    pub(crate) supervisor_alive: Option<bool>,
    pub(crate) supervisor_pid: Option<u32>,
    pub(crate) usage: Option<crate::containment::Live>,
    pub(crate) workspace: PathBuf,
    pub(crate) worktree: Option<PathBuf>,
}

/// One element of `holders` in `status --json`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HolderJson {
    #[serde(rename = "loop")]
    pub(crate) member: bool,
    pub(crate) name: String,
    pub(crate) pid: u32,
}

impl Status {
    pub(crate) fn new(state: &LoopState) -> Status {
        let (supervisor_alive, child_alive) = state.liveness();
        let m = state.meta();
        Status {
            age_seconds: m.map(|m| age_seconds(m.started)),
            child_alive,
            child_pid: m.and_then(|m| m.child_pid),
            command: m.map(|m| m.command.clone()),
            containment: m.and_then(|m| m.contained.containment.clone()),
            holders: state.holders.as_ref().map(|hs| {
                hs.iter()
                    .map(|h| HolderJson {
                        member: h.member,
                        name: h.process.name.clone(),
                        pid: h.process.pid,
                    })
                    .collect()
            }),
            id: m.and_then(|m| m.loop_id.clone()),
            last_exit: m.and_then(|m| m.restart.last_exit.clone()),
            lock_holders: state.lockers.clone(),
            metadata: match &state.metadata {
                MetaState::Valid(_) => MetadataKind::Valid,
                MetaState::Empty => MetadataKind::Empty,
                MetaState::Invalid(_) => MetadataKind::Invalid,
            },
            mode: m.and_then(|m| m.mode),
            next_start: m.and_then(|m| m.restart.next_start.as_ref().map(format_time)),
            pid: m.map(|m| m.pid),
            pid_namespace: m.and_then(|m| m.pid_namespace).map(|_| {
                if state.pids_elsewhere() {
                    "other"
                } else {
                    "same"
                }
            }),
            prompt: m.map(|m| m.prompt.clone()),
            restarts: m.and_then(|m| m.restart.restarts),
            running: state.held,
            stale: !state.held && m.is_some(),
            started: m.map(|m| format_time(&m.started)),
            supervisor_alive,
            supervisor_pid: m.and_then(|m| m.supervisor_pid),
            usage: state.live.clone(),
            workspace: state.workspace.clone(),
            worktree: m
                .filter(|m| m.mode == Some(Mode::Worktree))
                .and_then(|m| m.workspace.clone()),
        }
    }
}

/// The text of `status`: a first line saying whether a loop runs, then `key  value`
/// rows about it.
pub(crate) fn status_text(state: &LoopState) -> String {
    let (sup_alive, child_alive) = state.liveness();
    let elsewhere = state.pids_elsewhere();
    let alive = |a: Option<bool>| match a {
        _ if elsewhere => "in another pid namespace",
        Some(true) => "alive",
        Some(false) => "gone",
        None => "unknown",
    };
    if !state.held {
        return match state.meta() {
            Some(m) => format!("not running (stale metadata from pid {})\n", m.pid),
            None => "not running\n".to_string(),
        };
    }
    let Some(m) = state.meta() else {
        let who = match state.lockers.first() {
            Some(pid) => format!("flock taken by pid {pid}"),
            None => "holder unknown".to_string(),
        };
        let mut out = format!("running ({who}; the lock file has no readable metadata)\n");
        held_by_rows(state, &mut out);
        return out;
    };
    let mut out = format!(
        "running: loop {} ({})\n",
        escape(m.loop_id.as_deref().unwrap_or("-")),
        m.mode
            .map(|x| x.to_string())
            .unwrap_or_else(|| "ralph".into())
    );
    let mut row = |k: &str, v: String| out.push_str(&format!("  {k:<11}{v}\n"));
    match &m.restart.next_start {
        Some(_) => row("child pid", "none (waiting to restart)".into()),
        None => row("child pid", format!("{} ({})", m.pid, alive(child_alive))),
    }
    match m.supervisor_pid {
        Some(sp) => row("supervisor", format!("{sp} ({})", alive(sup_alive))),
        None => row("supervisor", "none (not started by ralph-supervise)".into()),
    }
    row(
        "started",
        format!(
            "{} ({} ago)",
            format_time(&m.started),
            human_age(Utc::now().signed_duration_since(m.started))
        ),
    );
    if let Some(n) = m.restart.restarts {
        row("restarts", n.to_string());
    }
    if let Some(last) = &m.restart.last_exit {
        row("last exit", format!("{} ({})", last_exit(last), last.why));
    }
    if let Some(next) = &m.restart.next_start {
        let wait = human_age(next.signed_duration_since(Utc::now()));
        row("next start", format!("{} (in {wait})", format_time(next)));
    }
    row("prompt", escape(&m.prompt).into_owned());
    if !m.command.is_empty() {
        row("command", escape(&m.command.join(" ")).into_owned());
    }
    row("workspace", path(&state.workspace));
    if m.mode == Some(Mode::Worktree) {
        row(
            "worktree",
            path(m.workspace.as_deref().unwrap_or(&state.workspace)),
        );
    }
    if let Some(how) = &m.contained.containment {
        let cgroup = m.contained.cgroup.as_deref().map(path);
        row(
            "contained",
            format!(
                "{how}{}",
                cgroup.map(|c| format!(" {c}")).unwrap_or_default()
            ),
        );
    }
    if let Some(live) = &state.live {
        row("usage", usage(live));
    }
    held_by_rows(state, &mut out);
    out
}

/// `CPU 1.2s, memory 34.5 MiB, 3 processes`: a loop's live figures.
fn usage(live: &crate::containment::Live) -> String {
    let mut parts = vec![format!("CPU {}", cpu_time(live.cpu_ms))];
    if let Some(bytes) = live.memory_bytes {
        parts.push(format!("memory {}", bytes_text(bytes)));
    }
    let n = live.processes;
    parts.push(format!("{n} process{}", if n == 1 { "" } else { "es" }));
    parts.join(", ")
}

/// Milliseconds of CPU time as `0.42s`, `12.3s`, `4m05s`.
pub(crate) fn cpu_time(ms: u64) -> String {
    match ms {
        0..10_000 => format!("{:.2}s", ms as f64 / 1000.0),
        10_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => human_age(TimeDelta::milliseconds(ms as i64)),
    }
}

/// Bytes as `512 KiB`, `34.5 MiB`, `1.2 GiB`.
pub(crate) fn bytes_text(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ if value < 10.0 => format!("{value:.1} {}", units[unit]),
        _ => format!("{value:.0} {}", units[unit]),
    }
}

/// `held by` rows: who holds the lock when those the metadata names are gone.
fn held_by_rows(state: &LoopState, out: &mut String) {
    let Some(holders) = &state.holders else {
        return;
    };
    if holders.is_empty() {
        let _ = writeln!(
            out,
            "  {:<11}an unseen process (its descriptors cannot be read; try as root)",
            "held by"
        );
    }
    for h in holders {
        let _ = writeln!(
            out,
            "  {:<11}pid {} ({}), {}",
            "held by",
            h.process.pid,
            escape(&h.process.name),
            if h.member {
                "left behind by the loop; `ralph-supervise stop` ends it"
            } else {
                "not known to belong to the loop; `ralph-supervise stop` will not signal it"
            }
        );
    }
}

/// `exit 75`, `killed by SIGKILL (137)`.
fn last_exit(last: &LastExit) -> String {
    match (&last.code, &last.signal) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => format!("killed by {sig} ({})", last.status),
        (None, None) => format!("status {}", last.status),
    }
}

// ---------------------------------------------------------------------------------
// restarts

/// The rule that decided, as the policy spells it: `restart.exit 75 = "30m"`,
/// `restart.policy = "on-failure"`.
pub(crate) fn restart_why(why: Why) -> String {
    match why {
        Why::Exit(status, rule) => format!("restart.exit {status} = \"{rule}\""),
        Why::Policy(when) => format!("restart.policy = \"{when}\""),
    }
}

/// The log line of a decision after a run ended by itself, e.g.
/// `exit 75 (restart.exit 75 = "30m"): restart 3 in 30m`, or the one line that says the
/// restart budget is spent.
pub(crate) fn decision(d: &Decision) -> String {
    let ended = match d.outcome {
        _ if d.stalled => format!("stalled ({})", d.status),
        crate::exit::ChildOutcome::Exited(code) => format!("exit {code}"),
        crate::exit::ChildOutcome::Signaled(sig) => {
            format!("killed by {} ({})", crate::signals::name(sig), d.status)
        }
    };
    let why = restart_why(d.why);
    match d.verdict {
        Verdict::Restart { number, delay, .. } => {
            let when = match delay.is_zero() {
                true => "now".to_string(),
                false => format!("in {}", short_duration(delay)),
            };
            format!("{ended} ({why}): restart {number} {when}")
        }
        Verdict::Finish => format!("{ended} ({why}): not restarting"),
        Verdict::GiveUp { max, window } => {
            let (within, window) = match window {
                Some(w) => {
                    let w = short_duration(w);
                    (
                        format!(" within {w}"),
                        format!(", restart.window = \"{w}\""),
                    )
                }
                None => (String::new(), String::new()),
            };
            format!(
                "giving up after {max} restarts{within} (restart.max = {max}{window}): {ended} would restart ({why}); exiting with status {}",
                d.status
            )
        }
    }
}

// ---------------------------------------------------------------------------------
// policy show

/// `policy show`: the effective policy as TOML, each value followed by where it came from
/// (`# default`, `# <file>`, `# --flag`). Unset optional values are shown as comments, so
/// the output is itself a valid policy file describing the same policy.
pub(crate) fn policy(e: &Effective) -> String {
    let mut out = match &e.file {
        Some(file) => format!("# effective policy; file: {}\n", path(file)),
        None => "# effective policy; no policy file, built-in defaults\n".to_string(),
    };
    for (i, key) in TABLE.iter().enumerate() {
        if i == 0 || TABLE[i - 1].section != key.section {
            let _ = writeln!(out, "\n[{}]", key.section);
        }
        let origin = match &e.sources[key.full] {
            Source::Default => "default".to_string(),
            Source::File(file) => path(file),
            Source::Flag => key.long_flag().unwrap_or_default(),
        };
        let _ = match (key.show)(&e.policy) {
            Some(value) => writeln!(out, "{} = {value}  # {origin}", key.name),
            None => writeln!(out, "# {} not set: {}  # {origin}", key.name, key.unset),
        };
    }
    out
}

// ---------------------------------------------------------------------------------
// list

/// A loop of the registry (`.ralph/loops.json`), as `list --json` prints it. Keys, in
/// the order printed:
///
/// - `age_seconds` (integer): seconds since `started`.
/// - `id` (string): the loop id.
/// - `mode` (string): `"worktree"`, or `"primary"` for an entry without a worktree.
/// - `pid` (integer): the pid ralph would signal (the command's).
/// - `prompt` (string).
/// - `running` (bool): the worktree's lock is held (or, without a worktree, the pid is
///   alive).
/// - `started` (string): RFC 3339, UTC.
/// - `workspace` (string): the workspace root the loop runs in.
/// - `worktree` (string|null): its worktree directory.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Registered {
    pub(crate) age_seconds: i64,
    pub(crate) id: String,
    pub(crate) mode: Mode,
    pub(crate) pid: u32,
    pub(crate) prompt: String,
    pub(crate) running: bool,
    pub(crate) started: String,
    pub(crate) workspace: PathBuf,
    pub(crate) worktree: Option<PathBuf>,
}

impl Registered {
    /// `entry`, whose worktree is `worktree` (`None`: it has none) and which runs or not.
    pub(crate) fn new(
        entry: &registry::Entry,
        worktree: Option<PathBuf>,
        running: bool,
    ) -> Registered {
        Registered {
            age_seconds: age_seconds(entry.started),
            id: entry.id.clone(),
            mode: if worktree.is_some() {
                Mode::Worktree
            } else {
                Mode::Primary
            },
            pid: entry.pid,
            prompt: entry.prompt.clone(),
            running,
            started: format_time(&entry.started),
            workspace: entry.workspace.clone(),
            worktree,
        }
    }
}

/// One element of `list --json`: the workspace's own loop (a [`Status`] whose `mode`
/// is `"primary"` when the lock file does not say), then each registry entry.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(crate) enum ListRow {
    Workspace(Box<Status>),
    Registered(Registered),
}

/// The columns of one `list` row.
struct Cells<'a> {
    id: Option<&'a str>,
    mode: Option<Mode>,
    pid: Option<u32>,
    running: bool,
    age_seconds: Option<i64>,
    prompt: &'a str,
}

impl ListRow {
    fn cells(&self) -> Cells<'_> {
        match self {
            ListRow::Workspace(s) => Cells {
                id: s.id.as_deref(),
                mode: s.mode,
                pid: s.pid,
                running: s.running,
                age_seconds: s.age_seconds,
                prompt: s.prompt.as_deref().unwrap_or(""),
            },
            ListRow::Registered(r) => Cells {
                id: Some(&r.id),
                mode: Some(r.mode),
                pid: Some(r.pid),
                running: r.running,
                age_seconds: Some(r.age_seconds),
                prompt: &r.prompt,
            },
        }
    }
}

/// The table of `list`, or `no loops`.
pub(crate) fn list_table(rows: &[ListRow]) -> String {
    if rows.is_empty() {
        return "no loops\n".into();
    }
    let mut out = format!(
        "{:<36} {:<8} {:>8} {:<7} {:>7}  PROMPT\n",
        "ID", "MODE", "PID", "STATE", "AGE"
    );
    for row in rows {
        let c = row.cells();
        let _ = writeln!(
            out,
            "{:<36} {:<8} {:>8} {:<7} {:>7}  {}",
            escape(c.id.unwrap_or("-")),
            c.mode.map(|m| m.to_string()).as_deref().unwrap_or("-"),
            c.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            if c.running { "running" } else { "dead" },
            c.age_seconds
                .map(|s| human_age(TimeDelta::seconds(s)))
                .unwrap_or_else(|| "-".into()),
            escape(c.prompt),
        );
    }
    out
}

/// `status --fleet` (one `key`) and `list --fleet`: every holder and waiter, and the
/// worktree ids reserved, with host, pid, since and token.
#[cfg(feature = "fleet")]
pub(crate) fn fleet_table(entries: &[crate::fleet::Entry], key: Option<&str>) -> String {
    use crate::fleet::lock::Role;
    if entries.is_empty() {
        return match key {
            Some(key) => format!("fleet key {} is free\n", escape(key)),
            None => "no fleet locks\n".into(),
        };
    }
    let rows: Vec<[String; 6]> = (entries.iter())
        .map(|e| {
            let role = match (e.role, &e.id) {
                (Role::Holder, _) => "holder".to_string(),
                (Role::Waiter, _) => "waiter".to_string(),
                (Role::Worktree, Some(id)) => format!("worktree {}", escape(id)),
                (Role::Worktree, None) => "worktree".to_string(),
            };
            let host = match (&e.host, e.foreign) {
                (Some(host), _) => escape(host).into_owned(),
                (None, true) => "(another tool)".into(),
                (None, false) => "-".into(),
            };
            [
                escape(&e.key).into_owned(),
                role,
                host,
                e.pid.map_or_else(|| "-".into(), |p| p.to_string()),
                e.since
                    .as_deref()
                    .map_or_else(|| "-".into(), |s| escape(s).into_owned()),
                e.token.to_string(),
            ]
        })
        .collect();
    let head = ["KEY", "ROLE", "HOST", "PID", "SINCE", "TOKEN"].map(str::to_string);
    // Each column as wide as its widest cell (a worktree's id, a long key), at least as
    // wide as usual, so that every row's columns line up.
    let mut w = [40, 8, 20, 8, 24, 8];
    for (i, width) in w.iter_mut().enumerate() {
        let widest = rows.iter().map(|r| r[i].chars().count()).max();
        *width = (*width).max(widest.unwrap_or(0));
    }
    let mut out = String::new();
    for [key, role, host, pid, since, token] in std::iter::once(head).chain(rows) {
        let _ = writeln!(
            out,
            "{key:<0$} {role:<1$} {host:<2$} {pid:>3$} {since:<4$} {token:>5$}",
            w[0], w[1], w[2], w[3], w[4], w[5]
        );
    }
    out
}

// ---------------------------------------------------------------------------------
// history and stop

/// The table of `history`: `records`, the selection shown out of `recorded` readable
/// records (`unreadable` lines were skipped). An empty selection is told apart from an
/// empty history. (`history --json` prints the [`history::Record`]s themselves.)
pub(crate) fn history_table(
    records: &[history::Record],
    recorded: usize,
    unreadable: usize,
) -> String {
    let runs = |n: usize| format!("{n} run{}", if n == 1 { "" } else { "s" });
    if records.is_empty() {
        return match (recorded, unreadable) {
            (0, 0) => "no runs recorded\n".into(),
            (0, bad) => format!(
                "no readable runs recorded ({bad} unreadable line{} skipped)\n",
                if bad == 1 { "" } else { "s" }
            ),
            (n, _) => format!("{} recorded; -n 0 shows none\n", runs(n)),
        };
    }
    let mut out = format!(
        "{:<36} {:<8} {:<24} {:>9} {:<16} {:>8} {:<14} {:>8} {:>9} PROMPT\n",
        "ID", "MODE", "START", "DURATION", "RESULT", "RESTARTS", "STOPPED BY", "CPU", "PEAK MEM"
    );
    for r in records {
        let duration = match (
            chrono::DateTime::parse_from_rfc3339(&r.start),
            chrono::DateTime::parse_from_rfc3339(&r.end),
        ) {
            (Ok(a), Ok(b)) => human_age(b.signed_duration_since(a)),
            _ => "-".into(),
        };
        let result = match (&r.exit_code, &r.signal) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => escape(s).into_owned(),
            _ => format!("status {}", r.status),
        };
        let cpu = match (r.cpu_user_ms, r.cpu_system_ms) {
            (None, None) => "-".into(),
            (user, system) => cpu_time(user.unwrap_or(0) + system.unwrap_or(0)),
        };
        let memory = r.memory_peak_bytes.map_or("-".into(), bytes_text);
        let _ = writeln!(
            out,
            "{:<36} {:<8} {:<24} {:>9} {:<16} {:>8} {:<14} {:>8} {:>9} {}",
            escape(&r.id),
            escape(&r.mode),
            escape(&r.start),
            duration,
            result,
            r.restarts,
            escape(r.stopped_by.as_deref().unwrap_or("-")),
            cpu,
            memory,
            escape(&r.prompt)
        );
    }
    out
}

/// How a run ended, for `stop`: `exited with code 0 (stopped by signal SIGTERM)`.
pub(crate) fn run_end(r: &history::Record) -> String {
    let how = match (&r.exit_code, &r.signal) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("killed by {}", escape(sig)),
        (None, None) => "ended".into(),
    };
    match &r.stopped_by {
        Some(by) => format!("{how} (stopped by {})", escape(by)),
        None => how,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Metadata;
    use crate::supervisor::machine::{ExitRule, RestartWhen};

    #[test]
    fn escape_writes_control_characters_as_literals() {
        assert!(matches!(escape("plain é ü \\ text"), Cow::Borrowed(_)));
        assert_eq!(
            escape("a\nb\tc\rd\x1b]0;t\x07\x7f\u{9b}31m\u{202e}z"),
            r"a\nb\tc\rd\x1b]0;t\x07\x7f\u{9b}31m\u{202e}z"
        );
        // Idempotent: escaped text has nothing left to escape.
        let once = escape("x\x1by").into_owned();
        assert_eq!(escape(&once), once);
    }

    #[test]
    fn ages() {
        assert_eq!(human_age(TimeDelta::seconds(5)), "5s");
        assert_eq!(human_age(TimeDelta::seconds(125)), "2m05s");
        assert_eq!(human_age(TimeDelta::seconds(3 * 3600 + 720)), "3h12m");
    }

    fn state(held: bool, metadata: MetaState) -> LoopState {
        LoopState {
            workspace: PathBuf::from("/w"),
            held,
            lockers: vec![7],
            metadata,
            holders: None,
            live: None,
        }
    }

    /// The shape `status --json` has always had: the `json!` literal it replaces.
    #[test]
    fn status_json_keeps_its_shape() {
        let meta = Metadata {
            pid: 2,
            started: chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .unwrap()
                .to_utc(),
            prompt: "p".into(),
            // No such process: pids stay below 2^22.
            supervisor_pid: Some(4_000_000_000),
            supervisor_start_time: None,
            child_pid: None,
            child_start_time: None,
            loop_id: Some("ralph-1".into()),
            mode: Some(Mode::Worktree),
            command: vec!["a".into()],
            workspace: Some(PathBuf::from("/w/.worktrees/ralph-1")),
            hostname: None,
            version: None,
            pid_namespace: None,
            loop_index: None,
            restart: Default::default(),
            fleet: None,
            contained: Default::default(),
        };
        let mut v =
            serde_json::to_value(Status::new(&state(false, MetaState::Valid(Box::new(meta)))))
                .unwrap();
        assert!(v["age_seconds"].as_i64().unwrap() > 0);
        v["age_seconds"] = 0.into();
        assert_eq!(
            v,
            serde_json::json!({
                "age_seconds": 0,
                "child_alive": null,
                "child_pid": null,
                "command": ["a"],
                "containment": null,
                "holders": null,
                "id": "ralph-1",
                "last_exit": null,
                "lock_holders": [7],
                "metadata": "valid",
                "mode": "worktree",
                "next_start": null,
                "pid": 2,
                "pid_namespace": null,
                "prompt": "p",
                "restarts": null,
                "running": false,
                "stale": true,
                "started": "2026-01-01T00:00:00.000Z",
                "supervisor_alive": false,
                "supervisor_pid": 4_000_000_000u32,
                "usage": null,
                "workspace": "/w",
                "worktree": "/w/.worktrees/ralph-1",
            })
        );

        let empty =
            serde_json::to_string_pretty(&Status::new(&state(true, MetaState::Empty))).unwrap();
        let keys: Vec<&str> = empty
            .lines()
            .filter_map(|l| l.trim().strip_prefix('"')?.split_once('"'))
            .map(|(k, _)| k)
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "keys print in alphabetical order");
        assert!(empty.contains("\"metadata\": \"empty\""), "{empty}");
        assert!(empty.contains("\"id\": null"), "{empty}");
    }

    /// The `json!` literal `status --json` was printed from before `Status`, with the
    /// keys added since (`last_exit`, `next_start`, `restarts`): none renamed or removed.
    fn old_status_json(state: &LoopState) -> serde_json::Value {
        let (sup_alive, child_alive) = state.liveness();
        let m = state.meta();
        serde_json::json!({
            "workspace": state.workspace,
            "running": state.held,
            "stale": !state.held && m.is_some(),
            "metadata": match &state.metadata {
                MetaState::Valid(_) => "valid",
                MetaState::Empty => "empty",
                MetaState::Invalid(_) => "invalid",
            },
            "lock_holders": state.lockers,
            "id": m.and_then(|m| m.loop_id.clone()),
            "mode": m.and_then(|m| m.mode.map(|x| x.to_string())),
            "pid": m.map(|m| m.pid),
            "pid_namespace": null,
            "child_pid": m.and_then(|m| m.child_pid),
            "child_alive": child_alive,
            "supervisor_pid": m.and_then(|m| m.supervisor_pid),
            "supervisor_alive": sup_alive,
            "started": m.map(|m| format_time(&m.started)),
            "age_seconds": m.map(|m| age_seconds(m.started)),
            "prompt": m.map(|m| m.prompt.clone()),
            "command": m.map(|m| m.command.clone()),
            "holders": null,
            "worktree": m.and_then(|m| (m.mode == Some(Mode::Worktree)).then(|| m.workspace.clone())).flatten(),
            "restarts": m.and_then(|m| m.restart.restarts),
            "last_exit": m.and_then(|m| m.restart.last_exit.clone()),
            "next_start": m.and_then(|m| m.restart.next_start.as_ref().map(format_time)),
            // Added with containment.
            "containment": m.and_then(|m| m.contained.containment.clone()),
            "usage": null,
        })
    }

    #[test]
    fn status_json_prints_the_same_bytes_as_before() {
        let meta = |mode| Metadata {
            pid: std::process::id(),
            started: Utc::now(),
            prompt: "it's \"quoted\"".into(),
            supervisor_pid: Some(std::process::id()),
            supervisor_start_time: None,
            child_pid: Some(std::process::id()),
            child_start_time: None,
            loop_id: Some("ralph-1".into()),
            mode,
            command: vec!["a".into(), "b c".into()],
            workspace: Some(PathBuf::from("/w/.worktrees/ralph-1")),
            hostname: Some("h".into()),
            version: None,
            pid_namespace: None,
            loop_index: None,
            restart: Default::default(),
            fleet: None,
            contained: Default::default(),
        };
        let states = [
            state(true, MetaState::Empty),
            state(true, MetaState::Invalid("bad".into())),
            state(false, MetaState::Valid(Box::new(meta(None)))),
            state(true, MetaState::Valid(Box::new(meta(Some(Mode::Primary))))),
            state(true, MetaState::Valid(Box::new(meta(Some(Mode::Worktree))))),
        ];
        // The age may tick between the two renderings.
        let without_age = |text: String| {
            text.lines()
                .filter(|l| !l.trim_start().starts_with("\"age_seconds\""))
                .collect::<Vec<_>>()
                .join("\n")
        };
        for state in &states {
            let new = serde_json::to_string_pretty(&Status::new(state)).unwrap();
            let old = serde_json::to_string_pretty(&old_status_json(state)).unwrap();
            assert_eq!(without_age(new), without_age(old), "{state:?}");
        }
    }

    #[test]
    fn registered_rows_and_the_table() {
        let entry = registry::Entry {
            id: "ralph-2".into(),
            pid: 9,
            started: Utc::now(),
            prompt: "q".into(),
            worktree_path: PathBuf::new(),
            workspace: PathBuf::from("/w"),
            pid_namespace: None,
            loop_index: None,
            extra: Default::default(),
        };
        // The `json!` literal `list --json` printed registry rows from before.
        for wt in [None, Some(PathBuf::from("/w/.worktrees/ralph-2"))] {
            let old = serde_json::json!({
                "id": entry.id,
                "mode": if wt.is_some() { "worktree" } else { "primary" },
                "pid": entry.pid,
                "running": true,
                "started": format_time(&entry.started),
                "age_seconds": age_seconds(entry.started),
                "prompt": entry.prompt,
                "worktree": wt,
                "workspace": entry.workspace,
            });
            let new = ListRow::Registered(Registered::new(&entry, wt.clone(), true));
            assert_eq!(
                serde_json::to_string_pretty(&new).unwrap(),
                serde_json::to_string_pretty(&old).unwrap()
            );
        }
        let row = ListRow::Registered(Registered::new(&entry, None, false));
        let v = serde_json::to_value(&row).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "age_seconds",
                "id",
                "mode",
                "pid",
                "prompt",
                "running",
                "started",
                "workspace",
                "worktree"
            ]
        );
        assert_eq!(v["mode"], "primary");
        assert_eq!(v["worktree"], serde_json::Value::Null);
        let table = list_table(&[row]);
        let line = table.lines().nth(1).unwrap();
        assert!(line.starts_with("ralph-2"), "{table}");
        assert!(line.contains(" dead "), "{table}");
        assert!(line.ends_with("  q"), "{table}");
        assert_eq!(list_table(&[]), "no loops\n");
    }

    #[test]
    fn restart_decisions_read_as_the_policy_spells_them() {
        use crate::exit::ChildOutcome;
        use std::time::{Duration, Instant};
        let at = Instant::now();
        let d = |outcome, status, why, verdict| Decision {
            outcome,
            status,
            stalled: false,
            why,
            verdict,
        };
        let delay = Duration::from_secs(1800);
        let lines = [
            d(
                ChildOutcome::Exited(75),
                75,
                Why::Exit(75, ExitRule::After(delay)),
                Verdict::Restart {
                    number: 3,
                    delay,
                    at,
                },
            ),
            d(
                ChildOutcome::Signaled(libc::SIGKILL),
                137,
                Why::Exit(137, ExitRule::Backoff),
                Verdict::Restart {
                    number: 1,
                    delay: Duration::ZERO,
                    at,
                },
            ),
            d(
                ChildOutcome::Exited(0),
                0,
                Why::Exit(0, ExitRule::Stop),
                Verdict::Finish,
            ),
            d(
                ChildOutcome::Exited(1),
                1,
                Why::Policy(RestartWhen::OnFailure),
                Verdict::GiveUp {
                    max: 10,
                    window: Some(Duration::from_secs(3600)),
                },
            ),
            d(
                ChildOutcome::Exited(1),
                1,
                Why::Policy(RestartWhen::Always),
                Verdict::GiveUp {
                    max: 3,
                    window: None,
                },
            ),
        ]
        .map(|x| decision(&x));
        assert_eq!(
            lines,
            [
                "exit 75 (restart.exit 75 = \"30m\"): restart 3 in 30m",
                "killed by SIGKILL (137) (restart.exit 137 = \"restart\"): restart 1 now",
                "exit 0 (restart.exit 0 = \"stop\"): not restarting",
                "giving up after 10 restarts within 1h (restart.max = 10, restart.window = \"1h\"): exit 1 would restart (restart.policy = \"on-failure\"); exiting with status 1",
                "giving up after 3 restarts (restart.max = 3): exit 1 would restart (restart.policy = \"always\"); exiting with status 1",
            ]
        );
    }

    #[test]
    fn status_text_while_waiting_to_restart() {
        use crate::metadata::{LastExit, Metadata, RestartState};
        let meta = Metadata {
            pid: std::process::id(),
            started: Utc::now(),
            prompt: "p".into(),
            supervisor_pid: Some(std::process::id()),
            supervisor_start_time: None,
            child_pid: None,
            child_start_time: None,
            loop_id: Some("ralph-1".into()),
            mode: Some(Mode::Primary),
            command: vec![],
            workspace: None,
            hostname: None,
            version: None,
            pid_namespace: None,
            loop_index: None,
            restart: RestartState {
                restarts: Some(2),
                last_exit: Some(LastExit {
                    code: None,
                    signal: Some("SIGKILL".into()),
                    status: 137,
                    why: "restart.exit 137 = \"5m\"".into(),
                }),
                next_start: Some(Utc::now() + TimeDelta::seconds(300)),
            },
            fleet: None,
            contained: Default::default(),
        };
        let text = status_text(&state(true, MetaState::Valid(Box::new(meta))));
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows[1], "  child pid  none (waiting to restart)", "{text}");
        assert!(rows.contains(&"  restarts   2"), "{text}");
        assert!(
            rows.contains(&"  last exit  killed by SIGKILL (137) (restart.exit 137 = \"5m\")"),
            "{text}"
        );
        let next = rows
            .iter()
            .find(|r| r.starts_with("  next start "))
            .unwrap();
        assert!(
            next.ends_with("(in 4m59s)") || next.ends_with("(in 5m00s)"),
            "{next}"
        );
    }

    #[cfg(feature = "fleet")]
    #[test]
    fn the_fleet_tables_columns_line_up_whatever_the_role_and_key() {
        use crate::fleet::lock::{Entry, Role};
        let entry = |key: &str, role, id: Option<&str>, host: Option<&str>| Entry {
            key: key.into(),
            role,
            id: id.map(str::to_string),
            host: host.map(str::to_string),
            pid: host.map(|_| 4242),
            since: host.map(|_| "2025-01-02T03:04:05Z".to_string()),
            token: 17,
            foreign: host.is_none(),
        };
        let long = "git.example.com/a-rather-long-organisation/api/feature/x";
        let entries = [
            entry("acme/api/main", Role::Holder, None, Some("h1")),
            entry("acme/api/main", Role::Waiter, None, None),
            entry(
                "acme/api/main",
                Role::Worktree,
                Some("fix-login-brave-otter"),
                Some("host-two.example"),
            ),
            entry(long, Role::Holder, None, Some("h3")),
        ];
        let text = fleet_table(&entries, None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        // Every column starts where its heading does.
        let starts = |line: &str| {
            let mut at = vec![0];
            let chars: Vec<char> = line.chars().collect();
            at.extend((1..chars.len()).filter(|&i| chars[i - 1] == ' ' && chars[i] != ' '));
            at
        };
        let head = starts(lines[0]);
        let (role, host, since) = (head[1], head[2], head[4]);
        for line in &lines[1..] {
            let at = |col: usize| line.chars().skip(col).collect::<String>();
            assert!(!line[..role].ends_with(|c: char| c != ' '), "{text}");
            assert!(
                ["holder", "waiter", "worktree"]
                    .iter()
                    .any(|r| at(role).starts_with(r)),
                "{text}"
            );
            assert!(
                ["h1", "(another tool)", "host-two", "h3"]
                    .iter()
                    .any(|h| at(host).starts_with(h)),
                "{text}"
            );
            assert!(
                at(since).starts_with("2025-") || at(since).starts_with('-'),
                "{text}"
            );
            assert!(line.ends_with("17"), "{text}");
            assert_eq!(line.chars().count(), lines[0].chars().count(), "{text}");
        }
    }
}
