//! `ralph-supervise run`: take the workspace, run the command, give the workspace back.
//!
//! CLI + policy -> settings -> workspace -> lock (or the conflict policy) -> metadata ->
//! spawn with the locked descriptor inherited -> supervise -> release -> exit status.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use tracing::debug;

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
    pub stop_grace: Duration,
    pub kill_orphans: bool,
    pub conflict_exit_code: u8,
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
        Acquire::Held(held) => {
            return Err(Failure::msg(
                ExitStatus::Conflict(settings.conflict_exit_code),
                format!(
                    "workspace {} is taken: loop held by {}; wait for it with `ralph-supervise wait` or stop it with `ralph-supervise stop`",
                    settings.workspace.display(),
                    held.holder().describe()
                ),
            ));
        }
    };
    debug!(lock = %lock.path().display(), "lock acquired");
    let status = run_locked(&settings, &signals, &lock);
    // The child is gone (or never started): empty the metadata while still locked,
    // then unlock explicitly.
    let released = lock.release().or_fail("cannot release the workspace lock");
    let status = status?;
    released?;
    Ok(status)
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
    let prompt = settings
        .prompt
        .clone()
        .unwrap_or_else(|| command_text.join(" "));
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
    let child = supervisor::spawn(&settings.command, lock.raw_fd(), terminal, |_| {})?;
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
        grace: settings.stop_grace,
        kill_orphans: settings.kill_orphans,
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
