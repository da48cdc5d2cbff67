//! Inspecting and controlling loops from another shell: `status`, `list`, `stop`,
//! `wait`, `history`, `gc`.
//!
//! Who holds a workspace is the kernel's word (`/proc/locks`, by device and inode), not
//! the lock file's: a file can be stale (its writer died) or emptied by hand while the
//! lock is still held. The file then says *who* (pids, prompt, start times), and every
//! pid is confirmed by its recorded start time before anything is signalled.
//!
//! This module finds things out and acts; what it prints (text, tables, the JSON
//! shapes) is formatted in the `present` module.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::conflict::{self, Freed};
use crate::exit::{ExitStatus, Failure, ResultExt};
use crate::history;
use crate::lock::{HeldBy, LockFile, LoopState, MetaState};
use crate::logging::print;
use crate::metadata::Mode;
use crate::present::{self, ListRow, Registered, Status};
use crate::procfs::LocksSnapshot;
use crate::supervisor::Signals;
use crate::workspace::RalphDir;
use crate::worktree;

/// Reads the state of `workspace` without taking its lock or creating anything.
pub(crate) fn inspect(workspace: &Path) -> Result<LoopState, Failure> {
    inspect_with(workspace, &LocksSnapshot::default())
}

/// [`inspect`], asking the kernel who holds the lock through `locks` (`list` inspects
/// every loop with one reading of `/proc/locks`).
fn inspect_with(workspace: &Path, locks: &LocksSnapshot) -> Result<LoopState, Failure> {
    let empty = || LoopState {
        workspace: workspace.to_path_buf(),
        held: false,
        lockers: vec![],
        metadata: MetaState::Empty,
        holders: None,
        live: None,
    };
    let Some(dir) = RalphDir::open_existing(workspace)? else {
        return Ok(empty());
    };
    // Read-only: looking needs no write access (a read-only user, a read-only mount).
    let Some(lock) = LockFile::open_to_probe(&dir)? else {
        return Ok(empty());
    };
    let holder = lock.holder_with_kernel(locks);
    let (held, lockers) = match holder.kernel.clone() {
        Some(pids) if !pids.is_empty() => (true, pids),
        // Not listed (or no /proc/locks): the kernel's own answer, by a non-blocking
        // attempt that lets go at once without touching the file.
        pids => (!lock.probe_free(), pids.unwrap_or_default()),
    };
    // Held, but nobody the file names is alive: name who holds it.
    let holders = (held && holder.needs_scan()).then(|| {
        lock.holding_processes()
            .into_iter()
            .map(|process| HeldBy {
                member: match &holder.metadata {
                    MetaState::Valid(m) => conflict::member_of_loop(m, &lockers, &process),
                    _ => false,
                },
                process,
            })
            .collect()
    });
    let live = match &holder.metadata {
        MetaState::Valid(m) if held => crate::containment::live(m),
        _ => None,
    };
    Ok(LoopState {
        workspace: workspace.to_path_buf(),
        held,
        lockers,
        metadata: holder.metadata,
        holders,
        live,
    })
}

/// `status`: 0 when a loop holds the workspace, 3 when none.
pub(crate) fn status(workspace: &Path, as_json: bool) -> Result<ExitStatus, Failure> {
    let state = inspect(workspace)?;
    if as_json {
        print(&json(&Status::new(&state)))?;
    } else {
        print(&present::status_text(&state))?;
    }
    Ok(if state.held {
        ExitStatus::SUCCESS
    } else {
        ExitStatus::NotRunning
    })
}

/// The primary loop and every registered (worktree) loop, with liveness.
pub(crate) fn list(workspace: &Path, as_json: bool) -> Result<ExitStatus, Failure> {
    let locks = LocksSnapshot::default();
    let primary = inspect_with(workspace, &locks)?;
    let mut rows = Vec::new();
    if primary.held || primary.meta().is_some() {
        let mut status = Status::new(&primary);
        status.mode.get_or_insert(Mode::Primary);
        rows.push(ListRow::Workspace(Box::new(status)));
    }
    let registry = worktree::registry::list(&registry_dir(workspace))?;
    for entry in registry {
        let wt = (!entry.worktree_path.as_os_str().is_empty()).then(|| entry.worktree_path.clone());
        let state = match &wt {
            Some(path) => inspect_with(path, &locks).ok(),
            None => None,
        };
        // Held, or by ralph's measure (a worktree loop ralph started holds no lock).
        let running = state.as_ref().is_some_and(|s| s.held) || entry.running();
        rows.push(ListRow::Registered(Registered::new(&entry, wt, running)));
    }
    if as_json {
        print(&json(&rows))?;
    } else {
        print(&present::list_table(&rows))?;
    }
    Ok(ExitStatus::SUCCESS)
}

/// How `stop` stops.
#[derive(Debug, Clone)]
pub(crate) struct StopSettings {
    /// A worktree loop's id; `None` = the workspace's own loop.
    pub(crate) id: Option<String>,
    /// The signal the loop's command gets; `None`: the loop's own `stop.signal`.
    pub(crate) signal: Option<i32>,
    /// The signal for a child whose supervisor is gone, when `signal` is `None`.
    pub(crate) stop_signal: i32,
    pub(crate) timeout: Duration,
    pub(crate) kill: bool,
    /// Grace before KILL when stop signals the child itself (its supervisor is gone).
    pub(crate) grace: Duration,
}

/// `stop`: 0 stopped, 3 nothing running, 124 still running at the timeout.
pub(crate) fn stop(workspace: &Path, settings: &StopSettings) -> Result<ExitStatus, Failure> {
    let signals = Signals::install().or_fail("cannot set up signal handling")?;
    let target = match &settings.id {
        None => workspace.to_path_buf(),
        Some(id) => match find_loop(workspace, id)? {
            Some(path) => path,
            None => {
                return Err(Failure::msg(
                    ExitStatus::NotRunning,
                    format!(
                        "no loop \"{}\" in {}",
                        present::escape(id),
                        present::path(workspace)
                    ),
                ));
            }
        },
    };
    let state = inspect(&target)?;
    if !state.held
        && let Some(id) = &settings.id
        && let Some(entry) = worktree::registry::list(&registry_dir(workspace))?
            .into_iter()
            .find(|e| &e.id == id && e.runs_in(&target) && e.running())
    {
        return stop_unlocked(&entry, &target, settings, &signals);
    }
    if !state.held {
        return Err(Failure::msg(
            ExitStatus::NotRunning,
            format!("nothing running in {}", present::path(&target)),
        ));
    }
    let dir = RalphDir::open_or_create(&target)?;
    let Some(lock) = LockFile::open_to_probe(&dir)? else {
        return Err(Failure::msg(
            ExitStatus::NotRunning,
            format!("nothing running in {}", present::path(&target)),
        ));
    };
    let holder = lock.holder();
    drop(lock);
    let loop_id = state.meta().and_then(|m| m.loop_id.clone());
    let targets = conflict::confirm_targets(&holder);
    let started = Instant::now();
    let deadline = started + settings.timeout;
    if settings.kill {
        match &targets {
            // A live supervisor KILLs its loop itself, so that it records the stop and
            // restarts nothing (a KILL behind its back is a crash to its restart policy).
            Ok(t)
                if t.supervisor.is_some_and(|sup| {
                    crate::stop_request::ask(sup, Some(libc::SIGKILL)).is_ok()
                }) => {}
            Ok(t) => {
                if let Some(cgroup) = &t.cgroup {
                    // The supervisor is gone: everything the loop started is there.
                    crate::containment::signal_orphaned(cgroup, libc::SIGKILL);
                } else if let Some(child) = t.child {
                    let _ = nix::sys::signal::killpg(child, nix::sys::signal::Signal::SIGKILL);
                } else {
                    conflict::kill_holder(t);
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
        conflict::request_stop(&dir, targets.clone(), settings.signal, settings.stop_signal);
    }
    // With no supervisor to escalate, `stop` escalates itself after the grace.
    let escalate = matches!(&targets, Ok(t) if t.supervisor.is_none()
        && (t.child.is_some() || !t.leftovers.is_empty()))
        && !settings.kill;
    let mut waited = conflict::wait_until_free(
        &dir,
        Some(if escalate {
            (started + settings.grace).min(deadline)
        } else {
            deadline
        }),
        Some(&signals),
    )?;
    if escalate && waited == Freed::TimedOut && Instant::now() < deadline {
        if let Ok(t) = &targets {
            conflict::kill_holder(t);
        }
        waited = conflict::wait_until_free(&dir, Some(deadline), Some(&signals))?;
    }
    match waited {
        Freed::Free => {
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
                .map(|r| present::run_end(&r))
                .unwrap_or_else(|| "its lock was released".into());
            print(&format!(
                "stopped {} in {:.1}s: {how}\n",
                present::escape(loop_id.as_deref().unwrap_or("the loop")),
                started.elapsed().as_secs_f64()
            ))?;
            Ok(ExitStatus::SUCCESS)
        }
        Freed::TimedOut => {
            let name = present::escape(loop_id.as_deref().unwrap_or("the loop"));
            Err(Failure::msg(
                ExitStatus::Timeout,
                if settings.kill {
                    // KILL was sent already: whatever holds the lock is outside the group.
                    format!(
                        "{name} still holds the workspace {:?} after KILL: a process outside its group holds the lock; find it with `ralph-supervise status`",
                        settings.timeout
                    )
                } else {
                    format!(
                        "{name} still running after {:?}; try --kill",
                        settings.timeout
                    )
                },
            ))
        }
        Freed::Interrupted(sig) => Ok(ExitStatus::Signaled(sig)),
    }
}

/// `stop ID` of a worktree loop that holds no lock (ralph's own: it judges such a loop
/// by its registry entry), stopped as `ralph loops stop` does: the stop request file in
/// the worktree's `.ralph/`, which ralph honours at its next iteration boundary; with
/// `--signal` that signal to its pid, with `--kill` SIGKILL (`ralph loops stop
/// --force`). Then waits, up to `--timeout`, for the process to exit.
fn stop_unlocked(
    entry: &worktree::registry::Entry,
    wt: &Path,
    settings: &StopSettings,
    signals: &Signals,
) -> Result<ExitStatus, Failure> {
    use nix::sys::signal::{Signal, kill};
    let pid = nix::unistd::Pid::from_raw(entry.pid as i32);
    let name = present::escape(&entry.id).into_owned();
    let started = Instant::now();
    // Opened now: once the process is gone, its pid may name another.
    let process = crate::sys::ProcessHandle::open(pid.as_raw()).ok();
    let signal = match (settings.kill, settings.signal) {
        (true, _) => Some(libc::SIGKILL),
        (false, signal) => signal,
    };
    match signal {
        Some(sig) => {
            let sig = Signal::try_from(sig).or_fail("cannot stop the loop")?;
            match &process {
                Some(p) => p.signal(sig as i32),
                None => kill(pid, sig).map_err(std::io::Error::from),
            }
            .or_fail(format!("cannot signal {name} (pid {pid})"))?;
        }
        None => {
            let dir = RalphDir::open_or_create(wt)?;
            crate::stop_request::create(&dir).or_fail(format!(
                "cannot write the stop request in {}",
                present::path(dir.path())
            ))?;
        }
    }
    let deadline = started + settings.timeout;
    match wait_exit_or_signal(entry, process.as_ref(), deadline, signals)? {
        Freed::Free => {}
        Freed::Interrupted(sig) => return Ok(ExitStatus::Signaled(sig)),
        Freed::TimedOut => {
            return Err(Failure::msg(
                ExitStatus::Timeout,
                format!(
                    "{name} (pid {pid}, not supervised) still running after {:?}; ralph stops at its next iteration boundary: wait longer (--timeout) or try --kill",
                    settings.timeout
                ),
            ));
        }
    }
    print(&format!(
        "stopped {name} in {:.1}s: its process (pid {pid}, not supervised) exited\n",
        started.elapsed().as_secs_f64()
    ))?;
    Ok(ExitStatus::SUCCESS)
}

/// Waits until the loop of `entry` has exited (`process`, its handle, readable), a stop
/// signal comes, or `deadline` passes. Without a handle (the process was gone when it
/// was opened, or a kernel without pidfds) the registry's measure is asked every 50 ms.
fn wait_exit_or_signal(
    entry: &worktree::registry::Entry,
    process: Option<&crate::sys::ProcessHandle>,
    deadline: Instant,
    signals: &Signals,
) -> Result<Freed, Failure> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    loop {
        if process.is_none() && !entry.running() {
            return Ok(Freed::Free);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Freed::TimedOut);
        }
        let mut left = deadline - now;
        if process.is_none() {
            left = left.min(Duration::from_millis(50));
        }
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if let Some(p) = process {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        let ms = PollTimeout::try_from(left.as_millis()).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(std::io::Error::from(e)).or_fail("cannot wait for the loop"),
        }
        let exited = fds
            .get(1)
            .and_then(|fd| fd.revents())
            .is_some_and(|r| !r.is_empty());
        while let Some(received) = signals.next_info().or_fail("cannot read signals")? {
            if conflict::while_waiting(received.signo) == conflict::OnSignal::Interrupt {
                return Ok(Freed::Interrupted(received.signo));
            }
        }
        if exited {
            return Ok(Freed::Free);
        }
    }
}

/// Waits until process `pid` has exited, at most `limit` (no polling: a process handle,
/// readable once it has exited).
fn wait_exit(pid: nix::unistd::Pid, limit: Duration) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let Ok(process) = crate::sys::ProcessHandle::open(pid.as_raw()) else {
        return; // already gone
    };
    let mut fds = [PollFd::new(process.as_fd(), PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(limit.as_millis()).unwrap_or(PollTimeout::MAX);
    let _ = poll(&mut fds, ms);
}

/// The worktree path of loop `id`: a registry entry, or the primary's own id.
fn find_loop(workspace: &Path, id: &str) -> Result<Option<PathBuf>, Failure> {
    let primary = inspect(workspace)?;
    if primary.meta().and_then(|m| m.loop_id.as_deref()) == Some(id) {
        return Ok(Some(workspace.to_path_buf()));
    }
    let entries = worktree::registry::list(&registry_dir(workspace))?;
    Ok(entries.into_iter().find(|e| e.id == id).map(|e| {
        if e.worktree_path.as_os_str().is_empty() {
            e.workspace
        } else {
            e.worktree_path
        }
    }))
}

/// The `.ralph/` holding the registry of the worktree loops of `workspace`'s repository:
/// its main work tree's, where `run` registers them ([`crate::workspace::repo_root`]).
fn registry_dir(workspace: &Path) -> PathBuf {
    crate::workspace::repo_root(workspace).join(crate::workspace::RALPH_DIR)
}

/// The newest history record of loop `id` (worktree loops write the main repository's
/// history, a primary its workspace's: look in both places).
fn last_record(workspace: &Path, target: &Path, id: &str) -> Option<history::Record> {
    [target, crate::workspace::repo_root(workspace).as_path()]
        .iter()
        .find_map(|ws| {
            let dir = RalphDir::open_existing(ws).ok()??;
            let (records, _) = history::read(&dir).ok()?;
            records.into_iter().rev().find(|r| r.id == id)
        })
}

/// `wait`: blocks until the workspace is free. 0, or 124 at the timeout.
pub(crate) fn wait(workspace: &Path, timeout: Option<Duration>) -> Result<ExitStatus, Failure> {
    let signals = Signals::install().or_fail("cannot set up signal handling")?;
    if !inspect(workspace)?.held {
        return Ok(ExitStatus::SUCCESS);
    }
    let Some(dir) = RalphDir::open_existing(workspace)? else {
        return Ok(ExitStatus::SUCCESS);
    };
    match conflict::wait_until_free(&dir, timeout.map(|t| Instant::now() + t), Some(&signals))? {
        Freed::Free => Ok(ExitStatus::SUCCESS),
        Freed::TimedOut => Ok(ExitStatus::Timeout),
        Freed::Interrupted(sig) => Ok(ExitStatus::Signaled(sig)),
    }
}

/// `history`: the last `n` runs, oldest first.
pub(crate) fn show_history(
    workspace: &Path,
    n: usize,
    as_json: bool,
) -> Result<ExitStatus, Failure> {
    let (records, bad) = match RalphDir::open_existing(workspace)? {
        Some(dir) => {
            let (records, bad) = history::read(&dir).or_fail("cannot read the history")?;
            if bad > 0 {
                tracing::warn!("skipped {bad} unreadable history lines");
            }
            (records, bad)
        }
        None => (vec![], 0),
    };
    let recent = &records[records.len().saturating_sub(n)..];
    if as_json {
        print(&json(&recent))?;
    } else {
        print(&present::history_table(recent, records.len(), bad))?;
    }
    Ok(ExitStatus::SUCCESS)
}

/// `value` as pretty JSON, with a final newline.
fn json(value: &impl serde::Serialize) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("our JSON shapes serialize");
    text.push('\n');
    text
}

/// `gc`: prune dead registry entries, remove clean finished worktrees, list the rest.
pub(crate) fn gc(
    workspace: &Path,
    dir: &Path,
    branch_prefix: &str,
    dry_run: bool,
) -> Result<ExitStatus, Failure> {
    let report = worktree::gc(workspace, dir, branch_prefix, dry_run)?;
    let verb = if dry_run { "would " } else { "" };
    let mut out = String::new();
    for id in &report.pruned {
        let id = present::escape(id);
        let _ = writeln!(out, "{verb}prune registry entry {id} (its process is gone)");
    }
    for path in &report.removed {
        let path = present::path(path);
        let _ = writeln!(out, "{verb}remove {path} (finished and clean)");
    }
    for path in &report.unmerged {
        let _ = writeln!(out, "keep {} (unmerged work)", present::path(path));
    }
    for path in &report.running {
        let path = present::path(path);
        let _ = writeln!(
            out,
            "keep {path} (running, or launched in the last 2 minutes)"
        );
    }
    if report.not_git {
        let path = present::path(workspace);
        let _ = writeln!(
            out,
            "no worktrees to check: {path} is not in a git repository"
        );
    }
    if report.pruned.is_empty() && report.removed.is_empty() {
        out.push_str("nothing to clean up\n");
    }
    print(&out)?;
    Ok(ExitStatus::SUCCESS)
}
