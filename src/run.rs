//! `ralph-supervise run`: take the workspace, run the command, give the workspace back.
//!
//! CLI + policy -> settings -> workspace -> lock (or the conflict policy: fail, wait,
//! take over, or a fresh git worktree) -> metadata -> spawn with the locked descriptor
//! inherited -> supervise (signals, stop requests, restarts, max runtime) -> history
//! record -> release -> exit status.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tracing::{debug, error, info, warn};

use crate::conflict::{self, TakenOver, Waited};
use crate::exit::{ChildOutcome, ExitStatus, Failure, ResultExt};
use crate::history;
use crate::lock::{self, Acquire, LockFile};
use crate::metadata::{Metadata, Mode, format_time, truncate_prompt};
use crate::policy::{AfterTimeout, OnConflict, OnExit, Orphans, Policy, RestartPolicy};
use crate::procfs;
use crate::supervisor::machine::{self, Machine, RestartWhen, StopReason};
use crate::supervisor::{self, Child, Hooks, Signals};
use crate::terminal::Terminal;
use crate::workspace::RalphDir;
use crate::worktree::{self, Created};
use crate::{signals, stop_request};

/// Everything `run` needs, resolved from flags and the policy file.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub workspace: PathBuf,
    pub command: Vec<OsString>,
    /// Task text for the metadata; the command line when not given.
    pub prompt: Option<String>,
    /// The effective policy (flags over file over defaults).
    pub policy: Policy,
    /// The conflict policy that applies here (auto resolved).
    pub on_conflict: OnConflict,
    /// Whether the workspace is inside a git work tree.
    pub in_git_repo: bool,
}

impl RunSettings {
    fn conflict_status(&self) -> ExitStatus {
        ExitStatus::Conflict(self.policy.conflict.exit_code)
    }

    fn prompt_text(&self) -> String {
        self.prompt.clone().unwrap_or_else(|| {
            self.command
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        })
    }
}

pub fn run(settings: RunSettings) -> Result<ExitStatus, Failure> {
    // Before anything else: from here on no signal can kill us or go unseen, and
    // SIGCHLD is no longer ignored (if it was).
    let signals = Signals::install().or_fail("cannot set up signal handling")?;
    // Orphaned descendants are re-parented to us, so we reap them and see them.
    let _ = nix::sys::prctl::set_child_subreaper(true);

    // Looked up now, so that a wait for the lock hands off without these system calls.
    self_identity();
    let dir = RalphDir::open_or_create(&settings.workspace)?;
    let lock = match lock::try_acquire(&dir)? {
        Acquire::Acquired(lock) => lock,
        Acquire::Held(held) => match on_conflict(&settings, &dir, held, &signals)? {
            Next::Primary(lock) => lock,
            Next::Worktree => return run_in_worktree(&settings, &signals),
            Next::Exit(status) => return Ok(status),
        },
    };
    let place = Place {
        workspace: settings.workspace.clone(),
        mode: Mode::Primary,
        loop_id: new_loop_id(),
        worktree: None,
    };
    run_locked(&settings, &signals, &dir, lock, &place, &mut false)
}

/// Where a run happens.
struct Place<'a> {
    /// The workspace the child runs in (the worktree for a worktree launch).
    workspace: PathBuf,
    mode: Mode,
    loop_id: String,
    worktree: Option<&'a Created>,
}

/// What to do after the conflict policy.
enum Next {
    Primary(LockFile),
    Worktree,
    Exit(ExitStatus),
}

/// Applies the conflict policy.
fn on_conflict(
    settings: &RunSettings,
    dir: &RalphDir,
    held: LockFile,
    signals: &Signals,
) -> Result<Next, Failure> {
    let taken = |holder: &lock::Holder| {
        format!(
            "workspace {} is taken: loop held by {}",
            settings.workspace.display(),
            holder.describe()
        )
    };
    match settings.on_conflict {
        OnConflict::Fail => Err(Failure::msg(
            settings.conflict_status(),
            format!(
                "{}; wait for it (--on-conflict wait), run beside it (--on-conflict worktree) or stop it (ralph-supervise stop)",
                taken(&held.holder())
            ),
        )),
        OnConflict::Worktree => worktree_or_refuse(settings, &taken(&held.holder())),
        OnConflict::Wait => {
            let holder = held.holder();
            conflict::log_waiting(&holder);
            crate::service::status(&format!(
                "waiting for the lock held by {}",
                holder_pid(&holder)
            ));
            drop(held);
            let deadline = settings
                .policy
                .conflict
                .wait_timeout
                .map(|t| Instant::now() + t);
            match conflict::wait_for_lock(dir, deadline, Some(signals))? {
                Waited::Acquired(lock) => Ok(Next::Primary(lock)),
                Waited::Interrupted(sig) => {
                    info!("{} while waiting: not running", signals::name(sig));
                    Ok(Next::Exit(ExitStatus::Signaled(sig)))
                }
                Waited::TimedOut => {
                    let now = LockFile::open(dir)?.holder();
                    let timeout = settings.policy.conflict.wait_timeout.unwrap_or_default();
                    match settings.policy.conflict.after_timeout {
                        AfterTimeout::Fail => Err(Failure::msg(
                            settings.conflict_status(),
                            format!("gave up waiting after {timeout:?}: {}", taken(&now)),
                        )),
                        AfterTimeout::Worktree => worktree_or_refuse(settings, &taken(&now)),
                    }
                }
            }
        }
        OnConflict::Takeover => {
            match conflict::takeover(
                dir,
                held,
                settings.policy.stop.grace,
                settings.policy.stop.signal,
                settings.conflict_status(),
                signals,
            )? {
                TakenOver::Acquired(lock) => Ok(Next::Primary(lock)),
                TakenOver::Interrupted(sig) => Ok(Next::Exit(ExitStatus::Signaled(sig))),
            }
        }
    }
}

fn holder_pid(holder: &lock::Holder) -> String {
    match &holder.metadata {
        lock::MetaState::Valid(m) => format!("pid {}", m.pid),
        _ => "another process".into(),
    }
}

/// A worktree launch, or (outside a git repository) the conflict code with the reason.
fn worktree_or_refuse(settings: &RunSettings, taken: &str) -> Result<Next, Failure> {
    if settings.in_git_repo {
        info!("{taken}; running in a new worktree");
        return Ok(Next::Worktree);
    }
    Err(Failure::msg(
        settings.conflict_status(),
        format!(
            "{taken}; cannot run in a worktree: {} is not in a git repository; use --on-conflict wait or fail",
            settings.workspace.display()
        ),
    ))
}

/// Creates a worktree, runs there holding its own lock, applies `worktree.on_exit`.
fn run_in_worktree(settings: &RunSettings, signals: &Signals) -> Result<ExitStatus, Failure> {
    let repo = crate::workspace::git_toplevel(&settings.workspace)
        .unwrap_or_else(|| settings.workspace.clone());
    let prompt = settings.prompt_text();
    let created = worktree::create(&worktree::Spec {
        repo,
        dir: settings.policy.worktree.dir.clone(),
        branch_prefix: settings.policy.worktree.branch_prefix.clone(),
        prompt: prompt.clone(),
        carry: settings.policy.worktree.sync,
    })?;
    info!(
        "running in worktree {} (branch {})",
        created.path.display(),
        created.branch
    );
    let locked =
        RalphDir::open_or_create(&created.path).and_then(|dir| match lock::try_acquire(&dir)? {
            Acquire::Acquired(lock) => Ok((dir, lock)),
            Acquire::Held(_) => Err(Failure::msg(
                ExitStatus::Failure,
                format!(
                    "the new worktree {} is locked by someone else",
                    created.path.display()
                ),
            )),
        });
    let (dir, lock) = match locked {
        Ok(x) => x,
        Err(e) => {
            rollback(&created);
            return Err(e);
        }
    };
    let place = Place {
        workspace: created.path.clone(),
        mode: Mode::Worktree,
        loop_id: created.id.clone(),
        worktree: Some(&created),
    };
    let mut spawned = false;
    let status = run_locked(settings, signals, &dir, lock, &place, &mut spawned);
    if !spawned {
        // The command never started: leave no worktree, branch or registry entry.
        rollback(&created);
        return status;
    }
    let on_exit = match settings.policy.worktree.on_exit {
        OnExit::Keep => worktree::OnExit::Keep,
        OnExit::RemoveIfClean => worktree::OnExit::RemoveIfClean,
        OnExit::QueueMerge => worktree::OnExit::QueueMerge,
    };
    let success = matches!(status, Ok(ExitStatus::Child(0)));
    match worktree::finish(&created.repo, &created, on_exit, success, &prompt) {
        Ok(done) => info!(
            "worktree {} {}",
            created.path.display(),
            match done {
                worktree::Finish::Kept => "kept",
                worktree::Finish::Removed => "removed with its branch (nothing changed)",
                worktree::Finish::Queued => "queued for merging",
                worktree::Finish::KeptDirty => "kept: it has changes or commits",
            }
        ),
        Err(e) => warn!("worktree {}: {:#}", created.path.display(), e.error),
    }
    status
}

fn rollback(created: &Created) {
    if let Err(e) = worktree::discard(created) {
        warn!(
            "cannot remove the failed worktree {}: {:#}",
            created.path.display(),
            e.error
        );
    }
}

/// The locks and metadata of one run, and what the event loop asks of them.
struct Session<'a> {
    settings: &'a RunSettings,
    place: &'a Place<'a>,
    dir: &'a RalphDir,
    lock: LockFile,
    /// Lock files recreated after `loop.lock` was deleted under us.
    extra: Vec<LockFile>,
    meta: Metadata,
    terminal: Option<Terminal>,
    child: Option<Child>,
}

impl Session<'_> {
    fn write_metadata(&self) -> std::io::Result<()> {
        self.lock.write_metadata(&self.meta)?;
        for extra in &self.extra {
            extra.write_metadata(&self.meta)?;
        }
        Ok(())
    }

    fn spawn(&mut self) -> Result<Child, Failure> {
        let place = self.place;
        let child = supervisor::spawn(
            &self.settings.command,
            self.lock.raw_fd(),
            self.terminal,
            |cmd| {
                cmd.envs(&self.settings.policy.run.env);
                // The notify socket is ours: a child (say `ralph run`) must not report
                // READY for us.
                cmd.env_remove(crate::notify::ENV);
                if place.mode == Mode::Worktree {
                    cmd.current_dir(&place.workspace);
                    cmd.env("RALPH_WORKSPACE_ROOT", &place.workspace);
                }
            },
        )?;
        let pid = child.pid.as_raw() as u32;
        self.meta.pid = pid;
        self.meta.child_pid = Some(pid);
        self.meta.child_start_time = procfs::start_time(pid);
        self.child = Some(child);
        if let Err(e) = self.write_metadata() {
            // The child runs and holds the lock, but nobody can see who it is: stop it.
            let _ = nix::sys::signal::killpg(child.pid, nix::sys::signal::Signal::SIGTERM);
            error!(
                "cannot record the child in {}: {e}; stopping it",
                self.lock.path().display()
            );
        }
        if let Some(created) = self.place.worktree {
            let entry = worktree::registry::Entry {
                id: created.id.clone(),
                pid,
                started: self.meta.started,
                prompt: self.meta.prompt.clone(),
                worktree_path: created.path.clone(),
                workspace: created.path.clone(),
                extra: Default::default(),
            };
            if let Err(e) = worktree::registry::register(&created.repo_ralph_dir(), entry) {
                warn!("cannot register the loop: {:#}", e.error);
            }
        }
        crate::service::ready_running(pid, self.place.worktree.map(|c| c.path.as_path()));
        debug!(pid, "running {}", self.meta.prompt);
        Ok(child)
    }
}

impl Hooks for Session<'_> {
    fn respawn(&mut self) -> Result<Child, Failure> {
        info!("restarting: {}", self.meta.prompt);
        self.spawn()
    }

    fn workspace_changed(&mut self) -> bool {
        let newest = self.extra.last().unwrap_or(&self.lock);
        if !newest.still_linked(self.dir) {
            self.lock_deleted();
        }
        stop_request::remove(self.dir).unwrap_or(false)
    }
}

impl Session<'_> {
    fn lock_deleted(&mut self) {
        warn!(
            "{} was deleted while the loop holds it; recreating and locking it again",
            self.lock.path().display()
        );
        let recreated = LockFile::open(self.dir).and_then(|l| {
            // A prober (`flock -n`, `ralph-supervise status`) may hold the new file for
            // a few microseconds; a loop that took it holds it for good. Tell them
            // apart with a few tries over 100 ms.
            for _ in 0..50 {
                if l.try_lock().or_fail("cannot lock the recreated file")? {
                    return Ok(l);
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(Failure::msg(
                ExitStatus::Failure,
                "another process locked the recreated lock file first: two loops now run in this workspace",
            ))
        });
        match recreated {
            Ok(l) => {
                if let Err(e) = l.write_metadata(&self.meta) {
                    error!("cannot write the recreated lock file: {e}");
                }
                self.extra.push(l);
            }
            Err(e) => error!("{:#}", e.error),
        }
    }
}

/// Runs the command holding `lock` (of `dir`), then records the run and releases.
fn run_locked(
    settings: &RunSettings,
    signals: &Signals,
    dir: &RalphDir,
    lock: LockFile,
    place: &Place<'_>,
    spawned: &mut bool,
) -> Result<ExitStatus, Failure> {
    debug!(lock = %lock.path().display(), "lock acquired");
    // Watch .ralph/ before removing a stale stop request, so a new one is never missed.
    if let Err(e) = crate::watch::watch(dir) {
        warn!(
            "cannot watch {}: {e}; stop requests will not be seen",
            dir.path().display()
        );
    }
    if stop_request::remove(dir).unwrap_or(false) {
        info!("removed a stale {}", stop_request::FILE);
    }
    let me = std::process::id();
    let started = Utc::now();
    let meta = Metadata {
        pid: me,
        started,
        prompt: truncate_prompt(&settings.prompt_text()),
        supervisor_pid: Some(me),
        supervisor_start_time: self_identity().0,
        child_pid: None,
        child_start_time: None,
        loop_id: Some(place.loop_id.clone()),
        mode: Some(place.mode),
        command: settings
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        workspace: Some(place.workspace.clone()),
        hostname: self_identity().1.clone(),
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
    };
    let mut session = Session {
        settings,
        place,
        dir,
        lock,
        extra: Vec::new(),
        meta,
        terminal: Terminal::detect(),
        child: None,
    };
    let result = match session.write_metadata() {
        Err(e) => Err(Failure::new(
            ExitStatus::Failure,
            anyhow::Error::new(e)
                .context(format!("cannot write {}", session.lock.path().display())),
        )),
        Ok(()) => supervise(&mut session, signals, spawned),
    };
    // History before the release, so that whoever waits for the lock (`stop`) finds the
    // record when the lock frees. (Written after the release, the record was always
    // given the space the lock file freed: a full disk could never show on it.)
    if let Ok((status, machine)) = &result {
        append_history(
            place,
            dir,
            &history_record(&session, *status, machine, started),
        );
    }
    if let Some(created) = place.worktree
        && let Err(e) = worktree::registry::deregister(&created.repo_ralph_dir(), &created.id)
    {
        warn!("cannot deregister the loop: {:#}", e.error);
    }
    // The child is gone (or never started): empty the metadata while still locked,
    // then unlock explicitly.
    let released = session
        .lock
        .release()
        .or_fail("cannot release the workspace lock");
    for extra in session.extra {
        let _ = extra.release();
    }
    let (status, _) = result?;
    released?;
    Ok(status)
}

fn supervise(
    session: &mut Session<'_>,
    signals: &Signals,
    spawned: &mut bool,
) -> Result<(ExitStatus, Machine), Failure> {
    let child = session.spawn()?;
    *spawned = true;
    // A stop request written since the watch began is not lost: its change signal is
    // queued in the signalfd, and the event loop reads it first.
    let policy = &session.settings.policy;
    let mut machine = Machine::new(
        machine::Config {
            grace: policy.stop.grace,
            stop_signal: policy.stop.signal,
            kill_orphans: policy.stop.orphans == Orphans::Kill,
            job_control: session.terminal.is_some(),
            restart: machine::Restart {
                when: match policy.restart.policy {
                    RestartPolicy::Never => RestartWhen::Never,
                    RestartPolicy::OnFailure => RestartWhen::OnFailure,
                    RestartPolicy::Always => RestartWhen::Always,
                },
                max: policy.restart.max,
                backoff_initial: policy.restart.backoff_initial,
                backoff_max: policy.restart.backoff_max,
            },
            max_runtime: policy.run.max_runtime,
        },
        Instant::now(),
    );
    let terminal = session.terminal;
    let status = supervisor::supervise(child, &mut machine, signals, terminal, session)?;
    crate::service::stopping();
    debug!(code = status.code(), "supervision over");
    Ok((status, machine))
}

fn history_record(
    session: &Session<'_>,
    status: ExitStatus,
    machine: &Machine,
    started: DateTime<Utc>,
) -> history::Record {
    let (exit_code, signal) = match machine.outcome() {
        Some(ChildOutcome::Exited(code)) => (Some(code), None),
        Some(ChildOutcome::Signaled(sig)) => (None, Some(signals::name(sig))),
        None => (None, None),
    };
    history::Record {
        id: session.place.loop_id.clone(),
        mode: session.place.mode.to_string(),
        command: session.meta.command.clone(),
        prompt: session.meta.prompt.clone(),
        start: format_time(&started),
        end: format_time(&Utc::now()),
        exit_code,
        signal,
        status: status.code(),
        restarts: machine.restarts(),
        stopped_by: machine.stop_reason().map(|r| match r {
            StopReason::Signal(sig) => format!("signal {}", signals::name(sig)),
            StopReason::StopRequest => "stop-request".into(),
            StopReason::MaxRuntime => "max-runtime".into(),
        }),
        worktree: session.place.worktree.map(|c| c.path.clone()),
        supervisor_pid: std::process::id(),
        child_pid: session.child.map(|c| c.pid.as_raw() as u32),
        log_lines_dropped: Some(crate::logging::dropped()).filter(|n| *n > 0),
    }
}

/// Appends the run's record. Worktree loops write the main repository's history, so one
/// place lists all runs.
/// `dir` is the run's own `.ralph/`, already open: a primary's history goes there.
fn append_history(place: &Place<'_>, dir: &RalphDir, record: &history::Record) {
    let written = match place.worktree {
        Some(created) => RalphDir::open_or_create(&created.repo)
            .map_err(|e| e.error)
            .and_then(|repo| history::append(&repo, record).map_err(anyhow::Error::from)),
        None => history::append(dir, record).map_err(anyhow::Error::from),
    };
    if let Err(e) = written {
        warn!("cannot record the run in the history: {e:#}");
    }
}

/// The supervisor's kernel start time and the host name, for the metadata: the same for
/// the whole run, looked up once.
fn self_identity() -> &'static (Option<u64>, Option<String>) {
    static IDENTITY: std::sync::OnceLock<(Option<u64>, Option<String>)> =
        std::sync::OnceLock::new();
    IDENTITY.get_or_init(|| {
        (
            procfs::start_time(std::process::id()),
            nix::unistd::gethostname()
                .ok()
                .map(|h| h.to_string_lossy().into_owned()),
        )
    })
}

/// `ralph-YYYYMMDD-HHMMSS-xxxx`, ralph's fallback loop-id style.
pub fn new_loop_id() -> String {
    let now = Utc::now();
    let nanos = now.timestamp_subsec_nanos();
    let mix = (std::process::id() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ nanos as u64;
    format!(
        "ralph-{}-{:04x}",
        now.format("%Y%m%d-%H%M%S"),
        (mix >> 16) & 0xffff
    )
}
