//! What people and scripts read: the one-line description of a lock holder, the text
//! of `status`, the tables of `list` and `history`, and the JSON shapes of `status
//! --json` and `list --json`.
//!
//! It exists so that the core (`lock`, `conflict`, `control`) finds and decides, and
//! never formats: the wording of a log line or a table column changes here alone. The
//! JSON shapes are `Serialize` structs rather than `json!` literals so that their keys
//! and types are written once, documented, and checked by the compiler; they are part
//! of the interface (scripts parse them) and documented again in the `status` and
//! `list` manual pages. Fields are declared in alphabetical order, the order the keys
//! have always been printed in.

use std::fmt::Write as _;
use std::path::PathBuf;

use chrono::{TimeDelta, Utc};
use serde::Serialize;

use crate::control::LoopState;
use crate::history;
use crate::lock::{Holder, MetaState};
use crate::metadata::{Mode, format_time};
use crate::procfs;
use crate::worktree::registry;

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
                "pid {} ({:?}) since {} ({} ago)",
                m.pid,
                m.prompt,
                format_time(&m.started),
                human_age(age)
            );
            match m.supervisor_pid {
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
            s
        }
        MetaState::Empty | MetaState::Invalid(_) => {
            let what = match &holder.metadata {
                MetaState::Empty => "no metadata".to_string(),
                MetaState::Invalid(e) => format!("unreadable metadata: {e}"),
                MetaState::Valid(_) => unreachable!(),
            };
            match holder.kernel.as_deref() {
                Some([pid, ..]) => format!("a process (flock taken by pid {pid}; {what})"),
                _ => format!("an unknown process ({what})"),
            }
        }
    }
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
/// - `id` (string|null): the loop id (`ralph-...`).
/// - `lock_holders` (array of integers): the pids the kernel names as holding the flock.
/// - `metadata` (string): `"valid"`, `"empty"` or `"invalid"`.
/// - `mode` (string|null): `"primary"` or `"worktree"`.
/// - `pid` (integer|null): ralph's `pid` field: the command's pid once it runs.
/// - `prompt` (string|null): the task, at most 100 characters.
/// - `running` (bool): somebody holds the flock.
/// - `stale` (bool): nobody holds it but the file still names a loop.
/// - `started` (string|null): RFC 3339, UTC.
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
    pub(crate) id: Option<String>,
    pub(crate) lock_holders: Vec<u32>,
    pub(crate) metadata: MetadataKind,
    pub(crate) mode: Option<Mode>,
    pub(crate) pid: Option<u32>,
    pub(crate) prompt: Option<String>,
    pub(crate) running: bool,
    pub(crate) stale: bool,
    pub(crate) started: Option<String>,
    pub(crate) supervisor_alive: Option<bool>,
    pub(crate) supervisor_pid: Option<u32>,
    pub(crate) workspace: PathBuf,
    pub(crate) worktree: Option<PathBuf>,
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
            id: m.and_then(|m| m.loop_id.clone()),
            lock_holders: state.lockers.clone(),
            metadata: match &state.metadata {
                MetaState::Valid(_) => MetadataKind::Valid,
                MetaState::Empty => MetadataKind::Empty,
                MetaState::Invalid(_) => MetadataKind::Invalid,
            },
            mode: m.and_then(|m| m.mode),
            pid: m.map(|m| m.pid),
            prompt: m.map(|m| m.prompt.clone()),
            running: state.held,
            stale: !state.held && m.is_some(),
            started: m.map(|m| format_time(&m.started)),
            supervisor_alive,
            supervisor_pid: m.and_then(|m| m.supervisor_pid),
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
    let alive = |a: Option<bool>| match a {
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
        return format!("running ({who}; the lock file has no readable metadata)\n");
    };
    let mut out = format!(
        "running: loop {} ({})\n",
        m.loop_id.as_deref().unwrap_or("-"),
        m.mode
            .map(|x| x.to_string())
            .unwrap_or_else(|| "ralph".into())
    );
    let mut row = |k: &str, v: String| out.push_str(&format!("  {k:<11}{v}\n"));
    row("child pid", format!("{} ({})", m.pid, alive(child_alive)));
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
    row("prompt", m.prompt.clone());
    if !m.command.is_empty() {
        row("command", m.command.join(" "));
    }
    row("workspace", state.workspace.display().to_string());
    if m.mode == Some(Mode::Worktree) {
        row(
            "worktree",
            m.workspace
                .as_deref()
                .unwrap_or(&state.workspace)
                .display()
                .to_string(),
        );
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
    Workspace(Status),
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
            c.id.unwrap_or("-"),
            c.mode.map(|m| m.to_string()).as_deref().unwrap_or("-"),
            c.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            if c.running { "running" } else { "dead" },
            c.age_seconds
                .map(|s| human_age(TimeDelta::seconds(s)))
                .unwrap_or_else(|| "-".into()),
            c.prompt,
        );
    }
    out
}

// ---------------------------------------------------------------------------------
// history and stop

/// The table of `history`, or `no runs recorded`. (`history --json` prints the
/// [`history::Record`]s themselves.)
pub(crate) fn history_table(records: &[history::Record]) -> String {
    if records.is_empty() {
        return "no runs recorded\n".into();
    }
    let mut out = format!(
        "{:<36} {:<8} {:<24} {:>9} {:<16} {:>8} {:<14} PROMPT\n",
        "ID", "MODE", "START", "DURATION", "RESULT", "RESTARTS", "STOPPED BY"
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
            (None, Some(s)) => s.clone(),
            _ => format!("status {}", r.status),
        };
        let _ = writeln!(
            out,
            "{:<36} {:<8} {:<24} {:>9} {:<16} {:>8} {:<14} {}",
            r.id,
            r.mode,
            r.start,
            duration,
            result,
            r.restarts,
            r.stopped_by.as_deref().unwrap_or("-"),
            r.prompt
        );
    }
    out
}

/// How a run ended, for `stop`: `exited with code 0 (stopped by signal SIGTERM)`.
pub(crate) fn run_end(r: &history::Record) -> String {
    let how = match (&r.exit_code, &r.signal) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("killed by {sig}"),
        (None, None) => "ended".into(),
    };
    match &r.stopped_by {
        Some(by) => format!("{how} (stopped by {by})"),
        None => how,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Metadata;

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
                "id": "ralph-1",
                "lock_holders": [7],
                "metadata": "valid",
                "mode": "worktree",
                "pid": 2,
                "prompt": "p",
                "running": false,
                "stale": true,
                "started": "2026-01-01T00:00:00.000Z",
                "supervisor_alive": false,
                "supervisor_pid": 4_000_000_000u32,
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

    /// The `json!` literal `status --json` was printed from before `Status`.
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
            "child_pid": m.and_then(|m| m.child_pid),
            "child_alive": child_alive,
            "supervisor_pid": m.and_then(|m| m.supervisor_pid),
            "supervisor_alive": sup_alive,
            "started": m.map(|m| format_time(&m.started)),
            "age_seconds": m.map(|m| age_seconds(m.started)),
            "prompt": m.map(|m| m.prompt.clone()),
            "command": m.map(|m| m.command.clone()),
            "worktree": m.and_then(|m| (m.mode == Some(Mode::Worktree)).then(|| m.workspace.clone())).flatten(),
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
}
