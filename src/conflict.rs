//! What `run` does when the workspace lock is already held: fail, wait, or take over.
//! (The fourth policy, a worktree launch, lives in [`crate::worktree`].)
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
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tracing::{info, warn};

use crate::exit::{ExitStatus, Failure, ResultExt};
use crate::lock::{Holder, LockFile, MetaState};
use crate::procfs;
use crate::signals::{self, Class, classify};
use crate::supervisor::Signals;
use crate::workspace::RalphDir;

/// How a wait for the lock ended.
#[derive(Debug)]
pub enum Waited {
    Acquired(LockFile),
    TimedOut,
    /// A TERM, INT or HUP arrived: the caller exits 128+N without running anything.
    Interrupted(i32),
}

/// Blocks until the workspace lock is ours, `deadline` passes, or a stop signal comes.
pub fn wait_for_lock(
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

/// "waiting for the lock held by pid N (prompt) since T", logged once.
pub fn log_waiting(holder: &Holder) {
    info!(
        "waiting for the lock held by {}",
        crate::present::holder(holder)
    );
}

/// Pids of a holder that may be signalled: each confirmed alive by its recorded start
/// time. `Err` says why nothing can be signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets {
    /// The holder's supervisor (a ralph-supervise), if alive.
    pub supervisor: Option<Pid>,
    /// The child, leader of its own process group, if alive.
    pub child: Option<Pid>,
}

/// Confirms the holder's pids against `/proc` before anything is signalled.
pub fn confirm_targets(holder: &Holder) -> Result<Targets, String> {
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
pub fn request_stop(dir: &RalphDir, targets: Result<Targets, String>, signal: i32) {
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
pub fn kill_holder(t: Targets) {
    if let Some(child) = t.child {
        let _ = killpg(child, Signal::SIGKILL);
    }
    if let Some(sup) = t.supervisor {
        let _ = kill(sup, Signal::SIGKILL);
    }
}

/// How a takeover ended.
#[derive(Debug)]
pub enum TakenOver {
    Acquired(LockFile),
    Interrupted(i32),
}

/// Takes the workspace from its holder: ask it to stop, wait `grace`, kill it, acquire.
/// Refuses (with the conflict code) to signal anything whose identity is not confirmed.
pub fn takeover(
    dir: &RalphDir,
    held: LockFile,
    grace: Duration,
    stop_signal: i32,
    conflict: ExitStatus,
    signals: &Signals,
) -> Result<TakenOver, Failure> {
    let holder = held.holder();
    drop(held);
    let targets = confirm_targets(&holder);
    info!(
        "taking over the workspace from {}",
        crate::present::holder(&holder)
    );
    request_stop(dir, targets.clone(), stop_signal);
    // The holder's own supervisor escalates after its grace; allow for ours plus a
    // margin before we escalate ourselves.
    let margin = Duration::from_secs(1);
    match wait_for_lock(dir, Some(Instant::now() + grace + margin), Some(signals))? {
        Waited::Acquired(lock) => return Ok(TakenOver::Acquired(lock)),
        Waited::Interrupted(sig) => return Ok(TakenOver::Interrupted(sig)),
        Waited::TimedOut => {}
    }
    let t = match targets {
        Ok(t) => t,
        Err(why) => {
            return Err(Failure::msg(
                conflict,
                format!(
                    "refusing to take over the workspace: {why}; not signalling it. Stop it yourself (ralph loops stop, or kill the holder), then run again"
                ),
            ));
        }
    };
    warn!("the holder did not stop within {grace:?}; killing it");
    kill_holder(t);
    match wait_for_lock(dir, Some(Instant::now() + grace + margin), Some(signals))? {
        Waited::Acquired(lock) => Ok(TakenOver::Acquired(lock)),
        Waited::Interrupted(sig) => Ok(TakenOver::Interrupted(sig)),
        Waited::TimedOut => Err(Failure::msg(
            conflict,
            "the workspace is still locked after killing its holder: a process outside its group holds the lock; find it with `ralph-supervise status`",
        )),
    }
}
