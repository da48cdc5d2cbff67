//! `ralph-supervise run`: take the workspace, run the command, give the workspace back.
//!
//! CLI + policy -> settings -> workspace -> lock (or the conflict policy) -> metadata ->
//! spawn with the locked descriptor inherited -> supervise -> release -> exit status.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Instant;

use chrono::Utc;
use tracing::{debug, info};

use crate::conflict::{self, TakenOver, Waited};
use crate::policy::{AfterTimeout, OnConflict, Orphans, Policy};
use crate::{signals, stop_request};

use crate::exit::{ExitStatus, Failure, ResultExt};
use crate::lock::{self, Acquire, LockFile};
use crate::metadata::{Metadata, Mode, truncate_prompt};
use crate::procfs;
use crate::supervisor::{self, Signals, machine};
use crate::terminal::Terminal;
use crate::workspace::RalphDir;

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

    let dir = RalphDir::open_or_create(&settings.workspace)?;
    let lock = match lock::try_acquire(&dir)? {
        Acquire::Acquired(lock) => lock,
        Acquire::Held(held) => match on_conflict(&settings, &dir, held, &signals)? {
            Ok(lock) => lock,
            Err(status) => return Ok(status),
        },
    };
    debug!(lock = %lock.path().display(), "lock acquired");
    // A stop request left from an earlier loop must not stop this one.
    if stop_request::remove(&dir).unwrap_or(false) {
        info!("removed a stale {}", stop_request::FILE);
    }
    let status = run_locked(&settings, &signals, &lock);
    // The child is gone (or never started): empty the metadata while still locked,
    // then unlock explicitly.
    let released = lock.release().or_fail("cannot release the workspace lock");
    let status = status?;
    released?;
    Ok(status)
}

/// Applies the conflict policy: `Ok(lock)` to run as primary, `Err(status)` to exit.
fn on_conflict(
    settings: &RunSettings,
    dir: &RalphDir,
    held: LockFile,
    signals: &Signals,
) -> Result<Result<LockFile, ExitStatus>, Failure> {
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
        OnConflict::Worktree => Err(worktree_unavailable(settings, &taken(&held.holder()))),
        OnConflict::Wait => {
            let holder = held.holder();
            conflict::log_waiting(&holder);
            drop(held);
            let deadline = settings
                .policy
                .conflict
                .wait_timeout
                .map(|t| Instant::now() + t);
            match conflict::wait_for_lock(dir, deadline, signals)? {
                Waited::Acquired(lock) => Ok(Ok(lock)),
                Waited::Interrupted(sig) => {
                    info!("{} while waiting: not running", signals::name(sig));
                    Ok(Err(ExitStatus::Signaled(sig)))
                }
                Waited::TimedOut => {
                    let now = LockFile::open(dir)?.holder();
                    let timeout = settings.policy.conflict.wait_timeout.unwrap_or_default();
                    match settings.policy.conflict.after_timeout {
                        AfterTimeout::Fail => Err(Failure::msg(
                            settings.conflict_status(),
                            format!("gave up waiting after {timeout:?}: {}", taken(&now)),
                        )),
                        AfterTimeout::Worktree => Err(worktree_unavailable(settings, &taken(&now))),
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
                TakenOver::Acquired(lock) => Ok(Ok(lock)),
                TakenOver::Interrupted(sig) => Ok(Err(ExitStatus::Signaled(sig))),
            }
        }
    }
}

/// The worktree policy cannot run here.
fn worktree_unavailable(settings: &RunSettings, taken: &str) -> Failure {
    let why = if settings.in_git_repo {
        "worktree launches are not available in this build".to_string()
    } else {
        format!(
            "cannot run in a worktree: {} is not in a git repository",
            settings.workspace.display()
        )
    };
    Failure::msg(
        settings.conflict_status(),
        format!("{taken}; {why}; use --on-conflict wait or fail"),
    )
}

fn run_locked(
    settings: &RunSettings,
    signals: &Signals,
    lock: &LockFile,
) -> Result<ExitStatus, Failure> {
    let me = std::process::id();
    let command_text: Vec<String> = settings
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let prompt = settings.prompt_text();
    let mut meta = Metadata {
        pid: me,
        started: Utc::now(),
        prompt: truncate_prompt(&prompt),
        supervisor_pid: Some(me),
        supervisor_start_time: procfs::start_time(me),
        child_pid: None,
        child_start_time: None,
        loop_id: Some(new_loop_id()),
        mode: Some(Mode::Primary),
        command: command_text,
        workspace: Some(settings.workspace.clone()),
        hostname: nix::unistd::gethostname()
            .ok()
            .map(|h| h.to_string_lossy().into_owned()),
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
    };
    lock.write_metadata(&meta)
        .or_fail(format!("cannot write {}", lock.path().display()))?;

    let terminal = Terminal::detect();
    let child = supervisor::spawn(&settings.command, lock.raw_fd(), terminal, |cmd| {
        cmd.envs(&settings.policy.run.env);
    })?;
    let child_pid = child.pid.as_raw() as u32;
    meta.pid = child_pid;
    meta.child_pid = Some(child_pid);
    meta.child_start_time = procfs::start_time(child_pid);
    if let Err(e) = lock.write_metadata(&meta) {
        // The child runs and holds the lock; recording it failed. Stop it rather than
        // leave a loop nobody can find.
        let _ = nix::sys::signal::killpg(child.pid, nix::sys::signal::Signal::SIGTERM);
        tracing::error!("cannot record the child in {}: {e}", lock.path().display());
    }
    debug!(pid = child_pid, "running {}", meta.prompt);

    let mut machine = machine::Machine::new(machine::Config {
        grace: settings.policy.stop.grace,
        kill_orphans: settings.policy.stop.orphans == Orphans::Kill,
        job_control: terminal.is_some(),
    });
    let status = supervisor::supervise(child, &mut machine, signals, terminal)
        .or_fail("supervision failed")?;
    debug!(code = status.code(), "child finished");
    Ok(status)
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
