//! The workspace lock, or what to do when someone else holds it.
//!
//! `run` asks one question here, [`acquire`]: may it run, and where? The answer is a
//! [`Next`]: the lock (run as the primary), a worktree to create (run beside the
//! holder), or an exit status (a stop signal came while waiting). All four conflict
//! policies are decided here and nowhere else, with every message they print:
//!
//! - `fail`: the conflict code (75 by default), naming the holder;
//! - `wait`: block until the lock frees; after `wait_timeout`, `after_timeout` says fail
//!   or worktree;
//! - `takeover`: ask the holder to stop as `stop` does, wait its grace, kill it, acquire;
//! - `worktree`: run in a new git worktree, or outside a git repository refuse with the
//!   conflict code. (Creating the worktree is [`crate::worktree`]'s; `run` does it.)
//!
//! `stop` and `wait` reuse the waiting and stopping parts ([`wait_for_lock`],
//! [`confirm_targets`], [`request_stop`], [`kill_holder`]).
//!
//! Waiting blocks in the kernel: a helper thread sits in `flock(LOCK_EX)` on its own open
//! file description while the main thread sleeps in `poll(2)` on the signalfd and a pipe
//! the helper writes to once it has the lock. Blocking in the main thread would make the
//! wait deaf to Ctrl-C (all signals are blocked there, and flock restarts anyway), and
//! polling with `LOCK_NB` would burn wake-ups and add latency to the hand-off.
//! If the waiter gives up (timeout, signal), the helper stays blocked; should it get the
//! lock later, nobody is listening any more, so it drops the descriptor, which unlocks.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tracing::{info, warn};

use crate::exit::{ExitStatus, Failure, ResultExt};
use crate::lock::{self, Acquire, Holder, LockFile, MetaState};
use crate::policy::{AfterTimeout, OnConflict};
use crate::procfs;
use crate::signals::{self, Class, classify};
use crate::supervisor::Signals;
use crate::workspace::RalphDir;

/// What `run` does next, once the lock question is settled.
#[derive(Debug)]
pub(crate) enum Next {
    /// The workspace lock is ours: run here, as the primary.
    Primary(LockFile),
    /// Run beside the holder, in a new worktree of the repository at `repo` (its top-level).
    Worktree { repo: PathBuf },
    /// Run nothing: a stop signal came while waiting; exit with this status (128+N).
    Exit(ExitStatus),
}

/// What the conflict policies need, resolved from flags and the policy file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules<'a> {
    /// The workspace, as the messages name it.
    pub(crate) workspace: &'a Path,
    /// Its git top-level, found once by the caller; `None` outside a git repository.
    pub(crate) repo: Option<&'a Path>,
    /// The policy that applies (`auto` already resolved).
    pub(crate) policy: OnConflict,
    /// Bound on `wait`; `None` waits without limit.
    pub(crate) wait_timeout: Option<Duration>,
    /// What a timed-out `wait` does.
    pub(crate) after_timeout: AfterTimeout,
    /// The status of a refusal: the conflict code.
    pub(crate) refused: ExitStatus,
    /// How a takeover stops the holder: the grace before killing, and the signal for a
    /// child whose supervisor is gone.
    pub(crate) grace: Duration,
    pub(crate) stop_signal: i32,
}

/// Takes the workspace lock of `dir`; if it is held, applies the conflict policy.
pub(crate) fn acquire(
    dir: &RalphDir,
    rules: &Rules<'_>,
    signals: &Signals,
) -> Result<Next, Failure> {
    let held = match lock::try_acquire(dir)? {
        Acquire::Acquired(lock) => return Ok(Next::Primary(lock)),
        Acquire::Held(held) => held,
    };
    match rules.policy {
        OnConflict::Fail => Err(rules.refuse(format!(
            "{}; wait for it (--on-conflict wait), {}or stop it (ralph-supervise stop)",
            rules.taken(&held.holder()),
            // Only a git repository can have worktrees.
            if rules.repo.is_some() {
                "run beside it (--on-conflict worktree) "
            } else {
                ""
            }
        ))),
        OnConflict::Worktree => rules.worktree_or_refuse(&held.holder(), None),
        OnConflict::Wait => wait(dir, held, rules, signals),
        OnConflict::Takeover => takeover(dir, held, rules, signals),
    }
}

impl Rules<'_> {
    /// "workspace W is taken: loop held by pid N (prompt) since T"
    fn taken(&self, holder: &Holder) -> String {
        format!(
            "workspace {} is taken: loop held by {}",
            self.workspace.display(),
            crate::present::holder(holder)
        )
    }

    fn refuse(&self, msg: impl std::fmt::Display) -> Failure {
        Failure::msg(self.refused, msg)
    }

    /// A worktree launch, or (outside a git repository) the conflict code with the reason.
    /// `waited`: the wait that timed out first, if one did (the advice differs).
    fn worktree_or_refuse(
        &self,
        holder: &Holder,
        waited: Option<Duration>,
    ) -> Result<Next, Failure> {
        let taken = self.taken(holder);
        match self.repo {
            Some(repo) => {
                info!("{taken}; running in a new worktree");
                Ok(Next::Worktree {
                    repo: repo.to_path_buf(),
                })
            }
            None => Err(self.refuse(match waited {
                None => format!(
                    "{taken}; cannot run in a worktree: {} is not in a git repository; wait for it (--on-conflict wait) or stop it (ralph-supervise stop)",
                    self.workspace.display()
                ),
                Some(timeout) => format!(
                    "gave up waiting after {timeout:?}: {taken}; cannot run in a worktree instead: {} is not in a git repository; wait longer (--wait-timeout) or stop it (ralph-supervise stop)",
                    self.workspace.display()
                ),
            })),
        }
    }
}

/// `wait`: blocks until the lock frees, a stop signal comes, or `wait_timeout` passes
/// (then `after_timeout` decides).
fn wait(
    dir: &RalphDir,
    held: LockFile,
    rules: &Rules<'_>,
    signals: &Signals,
) -> Result<Next, Failure> {
    let holder = held.holder();
    info!(
        "waiting for the lock held by {}",
        crate::present::holder(&holder)
    );
    crate::service::status(&format!(
        "waiting for the lock held by {}",
        holder_pid(&holder)
    ));
    drop(held);
    let deadline = rules.wait_timeout.map(|t| Instant::now() + t);
    match wait_for_lock(dir, deadline, Some(signals))? {
        Waited::Acquired(lock) => Ok(Next::Primary(lock)),
        Waited::Interrupted(sig) => {
            info!("{} while waiting: not running", signals::name(sig));
            Ok(Next::Exit(ExitStatus::Signaled(sig)))
        }
        Waited::TimedOut => {
            let now = LockFile::open(dir)?.holder();
            let timeout = rules.wait_timeout.unwrap_or_default();
            match rules.after_timeout {
                AfterTimeout::Fail => Err(rules.refuse(format!(
                    "gave up waiting after {timeout:?}: {}",
                    rules.taken(&now)
                ))),
                AfterTimeout::Worktree => rules.worktree_or_refuse(&now, Some(timeout)),
            }
        }
    }
}

/// "pid N" for the service manager's status line, or "another process".
fn holder_pid(holder: &Holder) -> String {
    match &holder.metadata {
        MetaState::Valid(m) => format!("pid {}", m.pid),
        _ => "another process".into(),
    }
}

/// How a wait for the lock ended.
#[derive(Debug)]
pub(crate) enum Waited {
    Acquired(LockFile),
    TimedOut,
    /// A TERM, INT or HUP arrived: the caller exits 128+N without running anything.
    Interrupted(i32),
}

/// Blocks until the workspace lock is ours, `deadline` passes, or a stop signal comes.
pub(crate) fn wait_for_lock(
    dir: &RalphDir,
    deadline: Option<Instant>,
    signals: Option<&Signals>,
) -> Result<Waited, Failure> {
    loop {
        let lock = LockFile::open(dir)?;
        let (mut wake_rx, mut wake_tx) = std::io::pipe().or_fail("cannot create a pipe")?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("flock-wait".into())
            .spawn(move || {
                let result = lock.lock_blocking();
                // If the waiter is gone the send fails and `lock` is dropped here, which
                // closes its only descriptor and so unlocks.
                if tx.send((lock, result)).is_ok() {
                    let _ = wake_tx.write_all(&[1]);
                }
            })
            .or_fail("cannot start the lock-wait thread")?;
        loop {
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let ms = d
                        .saturating_duration_since(Instant::now())
                        .as_micros()
                        .div_ceil(1000);
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds = vec![PollFd::new(wake_rx.as_fd(), PollFlags::POLLIN)];
            if let Some(signals) = signals {
                fds.push(PollFd::new(signals.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(Failure::from(anyhow::Error::new(e).context("poll"))),
            }
            while let Some(sig) = match signals {
                Some(s) => s.next().or_fail("cannot read signals")?,
                None => None,
            } {
                match classify(sig) {
                    Class::Forward { stop: true } => return Ok(Waited::Interrupted(sig)),
                    _ if sig == libc::SIGHUP => return Ok(Waited::Interrupted(sig)),
                    Class::Child => {}
                    _ => warn!("ignoring {} while waiting for the lock", signals::name(sig)),
                }
            }
            if let Ok((lock, result)) = rx.try_recv() {
                let mut byte = [0u8; 1];
                let _ = wake_rx.read(&mut byte);
                result.or_fail("cannot lock the workspace")?;
                if lock.still_linked(dir) {
                    return Ok(Waited::Acquired(lock));
                }
                // The file was replaced while we waited: wait on the new one.
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Waited::TimedOut);
            }
        }
    }
}

/// Pids of a holder that may be signalled: each confirmed alive by its recorded start
/// time. `Err` says why nothing can be signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Targets {
    /// The holder's supervisor (a ralph-supervise), if alive.
    pub(crate) supervisor: Option<Pid>,
    /// The child, leader of its own process group, if alive.
    pub(crate) child: Option<Pid>,
}

/// Confirms the holder's pids against `/proc` before anything is signalled.
pub(crate) fn confirm_targets(holder: &Holder) -> Result<Targets, String> {
    let MetaState::Valid(m) = &holder.metadata else {
        return Err("its lock file has no readable metadata, so no pid can be trusted".into());
    };
    let confirm = |pid: Option<u32>, start: Option<u64>| -> Option<Pid> {
        let (pid, start) = (pid?, start?);
        procfs::alive(pid, Some(start)).then(|| Pid::from_raw(pid as i32))
    };
    let supervisor = confirm(m.supervisor_pid, m.supervisor_start_time);
    let child = confirm(m.child_pid, m.child_start_time);
    if supervisor.is_none() && child.is_none() {
        return Err(match (m.supervisor_start_time, m.child_start_time) {
            (None, None) => format!(
                "pid {} has no recorded start time (not started by ralph-supervise), so its identity cannot be confirmed",
                m.pid
            ),
            _ => format!(
                "the recorded start times do not match a living process (pid {} was reused or is gone)",
                m.pid
            ),
        });
    }
    Ok(Targets { supervisor, child })
}

/// Asks the holder to stop the way `stop` does: the stop request file (which ralph and
/// ralph-supervise both honour), then a signal to its supervisor, or to its child's
/// group if the supervisor is gone.
pub(crate) fn request_stop(dir: &RalphDir, targets: Result<Targets, String>, signal: i32) {
    if let Err(e) = crate::stop_request::create(dir) {
        warn!("cannot write the stop request: {e:#}");
    }
    let Ok(t) = targets else { return };
    let sig = Signal::try_from(signal).unwrap_or(Signal::SIGTERM);
    if let Some(sup) = t.supervisor {
        // The supervisor forwards to its child's group and escalates on its own grace.
        let _ = kill(sup, Signal::SIGTERM);
    } else if let Some(child) = t.child {
        let _ = killpg(child, sig);
    }
}

/// Kills what is left of the holder: the child's group, then its supervisor.
pub(crate) fn kill_holder(t: Targets) {
    if let Some(child) = t.child {
        let _ = killpg(child, Signal::SIGKILL);
    }
    if let Some(sup) = t.supervisor {
        let _ = kill(sup, Signal::SIGKILL);
    }
}

/// `takeover`: ask the holder to stop, wait `grace`, kill it, acquire. Refuses (with the
/// conflict code) to signal anything whose identity is not confirmed.
fn takeover(
    dir: &RalphDir,
    held: LockFile,
    rules: &Rules<'_>,
    signals: &Signals,
) -> Result<Next, Failure> {
    let grace = rules.grace;
    let holder = held.holder();
    drop(held);
    let targets = confirm_targets(&holder);
    info!(
        "taking over the workspace from {}",
        crate::present::holder(&holder)
    );
    request_stop(dir, targets.clone(), rules.stop_signal);
    // The holder's own supervisor escalates after its grace; allow for ours plus a
    // margin before we escalate ourselves.
    let margin = Duration::from_secs(1);
    match wait_for_lock(dir, Some(Instant::now() + grace + margin), Some(signals))? {
        Waited::Acquired(lock) => return Ok(Next::Primary(lock)),
        Waited::Interrupted(sig) => return Ok(Next::Exit(ExitStatus::Signaled(sig))),
        Waited::TimedOut => {}
    }
    let t = match targets {
        Ok(t) => t,
        Err(why) => {
            return Err(rules.refuse(format!(
                "refusing to take over the workspace: {why}; not signalling it. Stop it yourself (ralph loops stop, or kill the holder), then run again"
            )));
        }
    };
    warn!("the holder did not stop within {grace:?}; killing it");
    kill_holder(t);
    match wait_for_lock(dir, Some(Instant::now() + grace + margin), Some(signals))? {
        Waited::Acquired(lock) => Ok(Next::Primary(lock)),
        Waited::Interrupted(sig) => Ok(Next::Exit(ExitStatus::Signaled(sig))),
        Waited::TimedOut => Err(rules.refuse(
            "the workspace is still locked after killing its holder: a process outside its group holds the lock; find it with `ralph-supervise status`",
        )),
    }
}
