//! Inspecting and controlling loops from another shell: `status`, `list`, `stop`,
//! `wait`, `history`, `gc`.
//!
//! Who holds a workspace is the kernel's word (`/proc/locks`, by device and inode), not
//! the lock file's: a file can be stale (its writer died) or emptied by hand while the
//! lock is still held. The file then says *who* (pids, prompt, start times), and every
//! pid is confirmed by its recorded start time before anything is signalled.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};

use crate::conflict::{self, Waited};
use crate::exit::{ExitStatus, Failure, ResultExt};
use crate::history;
use crate::lock::{LockFile, MetaState, human_age};
use crate::metadata::{Metadata, format_time};
use crate::procfs;
use crate::supervisor::Signals;
use crate::workspace::RalphDir;
use crate::worktree;

/// What the kernel and the lock file say about one workspace.
#[derive(Debug)]
pub struct LoopState {
    pub workspace: PathBuf,
    /// Somebody holds the flock.
    pub held: bool,
    /// Pids `/proc/locks` names as having taken the flock.
    pub lockers: Vec<u32>,
    pub metadata: MetaState,
}

impl LoopState {
    fn meta(&self) -> Option<&Metadata> {
        match &self.metadata {
            MetaState::Valid(m) => Some(m),
            _ => None,
        }
    }

    /// `(supervisor alive, child alive)`, each confirmed by start time where recorded.
    fn liveness(&self) -> (Option<bool>, Option<bool>) {
        let Some(m) = self.meta() else {
            return (None, None);
        };
        let sup = m
            .supervisor_pid
            .map(|p| procfs::alive(p, m.supervisor_start_time));
        let child = m
            .child_pid
            .map(|p| procfs::alive(p, m.child_start_time))
            .or_else(|| (m.supervisor_pid.is_none()).then(|| procfs::alive(m.pid, None)));
        (sup, child)
    }

    fn to_json(&self) -> Value {
        let (sup_alive, child_alive) = self.liveness();
        let m = self.meta();
        json!({
            "workspace": self.workspace,
            "running": self.held,
            "stale": !self.held && m.is_some(),
            "metadata": match &self.metadata {
                MetaState::Valid(_) => "valid",
                MetaState::Empty => "empty",
                MetaState::Invalid(_) => "invalid",
            },
            "lock_holders": self.lockers,
            "id": m.and_then(|m| m.loop_id.clone()),
            "mode": m.and_then(|m| m.mode.map(|x| x.to_string())),
            "pid": m.map(|m| m.pid),
            "child_pid": m.and_then(|m| m.child_pid),
            "child_alive": child_alive,
            "supervisor_pid": m.and_then(|m| m.supervisor_pid),
            "supervisor_alive": sup_alive,
            "started": m.map(|m| format_time(&m.started)),
            "age_seconds": m.map(|m| Utc::now().signed_duration_since(m.started).num_seconds().max(0)),
            "prompt": m.map(|m| m.prompt.clone()),
            "command": m.map(|m| m.command.clone()),
            "worktree": m.and_then(|m| (m.mode == Some(crate::metadata::Mode::Worktree)).then(|| m.workspace.clone())).flatten(),
        })
    }

    fn describe(&self) -> String {
        let (sup_alive, child_alive) = self.liveness();
        let alive = |a: Option<bool>| match a {
            Some(true) => "alive",
            Some(false) => "gone",
            None => "unknown",
        };
        if !self.held {
            return match self.meta() {
                Some(m) => format!("not running (stale metadata from pid {})\n", m.pid),
                None => "not running\n".to_string(),
            };
        }
        let Some(m) = self.meta() else {
            let who = match self.lockers.first() {
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
        row("workspace", self.workspace.display().to_string());
        if m.mode == Some(crate::metadata::Mode::Worktree) {
            row(
                "worktree",
                m.workspace
                    .as_deref()
                    .unwrap_or(&self.workspace)
                    .display()
                    .to_string(),
            );
        }
        out
    }
}

/// Reads the state of `workspace` without taking its lock or creating anything.
pub fn inspect(workspace: &Path) -> Result<LoopState, Failure> {
    let empty = || LoopState {
        workspace: workspace.to_path_buf(),
        held: false,
        lockers: vec![],
        metadata: MetaState::Empty,
    };
    let Some(dir) = RalphDir::open_existing(workspace)? else {
        return Ok(empty());
    };
    let Some(lock) = LockFile::open_existing(&dir)? else {
        return Ok(empty());
    };
    let holder = lock.holder_with_kernel();
    let (held, lockers) = match holder.kernel {
        Some(pids) if !pids.is_empty() => (true, pids),
        // Not listed (or no /proc/locks): the kernel's own answer, by a non-blocking
        // attempt that lets go at once without touching the file.
        pids => (!lock.probe_free(), pids.unwrap_or_default()),
    };
    Ok(LoopState {
        workspace: workspace.to_path_buf(),
        held,
        lockers,
        metadata: holder.metadata,
    })
}

/// `status`: 0 when a loop holds the workspace, 3 when none.
pub fn status(workspace: &Path, as_json: bool) -> Result<ExitStatus, Failure> {
    let state = inspect(workspace)?;
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&state.to_json()).unwrap()
        )
        .or_fail("stdout")?;
    } else {
        write!(out, "{}", state.describe()).or_fail("stdout")?;
    }
    Ok(if state.held {
        ExitStatus::SUCCESS
    } else {
        ExitStatus::NotRunning
    })
}

/// The primary loop and every registered (worktree) loop, with liveness.
pub fn list(workspace: &Path, as_json: bool) -> Result<ExitStatus, Failure> {
    let primary = inspect(workspace)?;
    let mut rows: Vec<Value> = Vec::new();
    if primary.held || primary.meta().is_some() {
        let mut v = primary.to_json();
        v["mode"] = json!(v["mode"].as_str().unwrap_or("primary"));
        rows.push(v);
    }
    let registry = worktree::registry::list(&workspace.join(crate::workspace::RALPH_DIR))?;
    for entry in registry {
        let wt = (!entry.worktree_path.as_os_str().is_empty()).then(|| entry.worktree_path.clone());
        let state = match &wt {
            Some(path) => inspect(path).ok(),
            None => None,
        };
        let running = state
            .as_ref()
            .map(|s| s.held)
            .unwrap_or_else(|| procfs::alive(entry.pid, None));
        rows.push(json!({
            "id": entry.id,
            "mode": if wt.is_some() { "worktree" } else { "primary" },
            "pid": entry.pid,
            "running": running,
            "started": format_time(&entry.started),
            "age_seconds": Utc::now().signed_duration_since(entry.started).num_seconds().max(0),
            "prompt": entry.prompt,
            "worktree": wt,
            "workspace": entry.workspace,
        }));
    }
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows).unwrap()).or_fail("stdout")?;
        return Ok(ExitStatus::SUCCESS);
    }
    if rows.is_empty() {
        writeln!(out, "no loops").or_fail("stdout")?;
        return Ok(ExitStatus::SUCCESS);
    }
    writeln!(
        out,
        "{:<36} {:<8} {:>8} {:<7} {:>7}  PROMPT",
        "ID", "MODE", "PID", "STATE", "AGE"
    )
    .or_fail("stdout")?;
    for r in &rows {
        let age = r["age_seconds"]
            .as_i64()
            .map(|s| human_age(chrono::TimeDelta::seconds(s)));
        writeln!(
            out,
            "{:<36} {:<8} {:>8} {:<7} {:>7}  {}",
            r["id"].as_str().unwrap_or("-"),
            r["mode"].as_str().unwrap_or("-"),
            r["pid"]
                .as_u64()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            if r["running"].as_bool() == Some(true) {
                "running"
            } else {
                "dead"
            },
            age.unwrap_or_else(|| "-".into()),
            r["prompt"].as_str().unwrap_or(""),
        )
        .or_fail("stdout")?;
    }
    Ok(ExitStatus::SUCCESS)
}

/// How `stop` stops.
#[derive(Debug, Clone)]
pub struct StopSettings {
    /// A worktree loop's id; `None` = the workspace's own loop.
    pub id: Option<String>,
    pub signal: i32,
    pub timeout: Duration,
    pub kill: bool,
    /// Grace before KILL when stop signals the child itself (its supervisor is gone).
    pub grace: Duration,
}

/// `stop`: 0 stopped, 3 nothing running, 124 still running at the timeout.
pub fn stop(workspace: &Path, settings: &StopSettings) -> Result<ExitStatus, Failure> {
    let signals = Signals::install().or_fail("cannot set up signal handling")?;
    let target = match &settings.id {
        None => workspace.to_path_buf(),
        Some(id) => match find_loop(workspace, id)? {
            Some(path) => path,
            None => {
                eprintln!("ralph-supervise: no loop {id:?} in {}", workspace.display());
                return Ok(ExitStatus::NotRunning);
            }
        },
    };
    let state = inspect(&target)?;
    if !state.held {
        eprintln!("ralph-supervise: nothing running in {}", target.display());
        return Ok(ExitStatus::NotRunning);
    }
    let dir = RalphDir::open_or_create(&target)?;
    let lock = LockFile::open(&dir)?;
    let holder = lock.holder();
    drop(lock);
    let loop_id = state.meta().and_then(|m| m.loop_id.clone());
    let targets = conflict::confirm_targets(&holder);
    let started = Instant::now();
    let deadline = started + settings.timeout;
    if settings.kill {
        match &targets {
            Ok(t) => {
                if let Some(child) = t.child {
                    let _ = nix::sys::signal::killpg(child, nix::sys::signal::Signal::SIGKILL);
                } else {
                    conflict::kill_holder(*t);
                }
            }
            Err(why) => {
                return Err(Failure::msg(
                    ExitStatus::Failure,
                    format!("refusing to kill: {why}"),
                ));
            }
        }
    } else {
        conflict::request_stop(&dir, targets.clone(), settings.signal);
    }
    // With no supervisor to escalate, `stop` escalates itself after the grace.
    let escalate =
        matches!(&targets, Ok(t) if t.supervisor.is_none() && t.child.is_some()) && !settings.kill;
    let mut waited = conflict::wait_for_lock(
        &dir,
        Some(if escalate {
            (started + settings.grace).min(deadline)
        } else {
            deadline
        }),
        Some(&signals),
    )?;
    if escalate && matches!(waited, Waited::TimedOut) && Instant::now() < deadline {
        if let Ok(t) = &targets {
            conflict::kill_holder(*t);
        }
        waited = conflict::wait_for_lock(&dir, Some(deadline), Some(&signals))?;
    }
    match waited {
        Waited::Acquired(lock) => {
            lock.unlock();
            // The supervisor writes its history record right after it lets go of the
            // lock: wait (briefly) for it to exit before reading the record.
            if let Ok(t) = &targets
                && let Some(sup) = t.supervisor
            {
                wait_exit(sup, Duration::from_secs(2));
            }
            let how = loop_id
                .as_deref()
                .and_then(|id| last_record(workspace, &target, id))
                .map(|r| describe_end(&r))
                .unwrap_or_else(|| "its lock was released".into());
            println!(
                "stopped {} in {:.1}s: {how}",
                loop_id.as_deref().unwrap_or("the loop"),
                started.elapsed().as_secs_f64()
            );
            Ok(ExitStatus::SUCCESS)
        }
        Waited::TimedOut => {
            eprintln!(
                "ralph-supervise: {} still running after {:?}; try --kill",
                loop_id.as_deref().unwrap_or("the loop"),
                settings.timeout
            );
            Ok(ExitStatus::Timeout)
        }
        Waited::Interrupted(sig) => Ok(ExitStatus::Signaled(sig)),
    }
}

/// Waits until process `pid` has exited, at most `limit` (no polling: a pidfd).
fn wait_exit(pid: nix::unistd::Pid, limit: Duration) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let Ok(fd) = crate::sys::pidfd_open(pid.as_raw()) else {
        return; // already gone
    };
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(limit.as_millis()).unwrap_or(PollTimeout::MAX);
    let _ = poll(&mut fds, ms);
}

/// The worktree path of loop `id`: a registry entry, or the primary's own id.
fn find_loop(workspace: &Path, id: &str) -> Result<Option<PathBuf>, Failure> {
    let primary = inspect(workspace)?;
    if primary.meta().and_then(|m| m.loop_id.as_deref()) == Some(id) {
        return Ok(Some(workspace.to_path_buf()));
    }
    let entries = worktree::registry::list(&workspace.join(crate::workspace::RALPH_DIR))?;
    Ok(entries.into_iter().find(|e| e.id == id).map(|e| {
        if e.worktree_path.as_os_str().is_empty() {
            e.workspace
        } else {
            e.worktree_path
        }
    }))
}

/// The newest history record of loop `id` (worktree loops write the main repository's
/// history; look in both places).
fn last_record(workspace: &Path, target: &Path, id: &str) -> Option<history::Record> {
    [workspace, target].iter().find_map(|ws| {
        let dir = RalphDir::open_existing(ws).ok()??;
        let (records, _) = history::read(&dir).ok()?;
        records.into_iter().rev().find(|r| r.id == id)
    })
}

fn describe_end(r: &history::Record) -> String {
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

/// `wait`: blocks until the workspace is free. 0, or 124 at the timeout.
pub fn wait(workspace: &Path, timeout: Option<Duration>) -> Result<ExitStatus, Failure> {
    let signals = Signals::install().or_fail("cannot set up signal handling")?;
    if !inspect(workspace)?.held {
        return Ok(ExitStatus::SUCCESS);
    }
    let dir = RalphDir::open_or_create(workspace)?;
    match conflict::wait_for_lock(&dir, timeout.map(|t| Instant::now() + t), Some(&signals))? {
        Waited::Acquired(lock) => {
            lock.unlock();
            Ok(ExitStatus::SUCCESS)
        }
        Waited::TimedOut => Ok(ExitStatus::Timeout),
        Waited::Interrupted(sig) => Ok(ExitStatus::Signaled(sig)),
    }
}

/// `history`: the last `n` runs, oldest first.
pub fn show_history(workspace: &Path, n: usize, as_json: bool) -> Result<ExitStatus, Failure> {
    let records = match RalphDir::open_existing(workspace)? {
        Some(dir) => {
            let (records, bad) = history::read(&dir).or_fail("cannot read the history")?;
            if bad > 0 {
                tracing::warn!("skipped {bad} unreadable history lines");
            }
            records
        }
        None => vec![],
    };
    let recent = &records[records.len().saturating_sub(n)..];
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(recent).unwrap()).or_fail("stdout")?;
        return Ok(ExitStatus::SUCCESS);
    }
    if recent.is_empty() {
        writeln!(out, "no runs recorded").or_fail("stdout")?;
        return Ok(ExitStatus::SUCCESS);
    }
    writeln!(
        out,
        "{:<36} {:<8} {:<24} {:>9} {:<16} {:>8} {:<14} PROMPT",
        "ID", "MODE", "START", "DURATION", "RESULT", "RESTARTS", "STOPPED BY"
    )
    .or_fail("stdout")?;
    for r in recent {
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
        writeln!(
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
        )
        .or_fail("stdout")?;
    }
    Ok(ExitStatus::SUCCESS)
}

/// `gc`: prune dead registry entries, remove clean finished worktrees, list the rest.
pub fn gc(
    workspace: &Path,
    dir: &Path,
    branch_prefix: &str,
    dry_run: bool,
) -> Result<ExitStatus, Failure> {
    let report = worktree::gc(workspace, dir, branch_prefix, dry_run)?;
    let verb = if dry_run { "would " } else { "" };
    for id in &report.pruned {
        println!("{verb}prune registry entry {id} (its process is gone)");
    }
    for path in &report.removed {
        println!("{verb}remove {} (finished and clean)", path.display());
    }
    for path in &report.unmerged {
        println!("keep {} (unmerged work)", path.display());
    }
    for path in &report.running {
        println!(
            "keep {} (running, or launched in the last 2 minutes)",
            path.display()
        );
    }
    if report.pruned.is_empty() && report.removed.is_empty() {
        println!("nothing to clean up");
    }
    Ok(ExitStatus::SUCCESS)
}
