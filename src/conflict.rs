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
//! In fleet mode the same four policies then apply to the fleet lock across hosts
//! ([`fleet_lock`]); [`crate::fleet`] only carries them out on etcd.
//!
//! `stop` and `wait` reuse the waiting and stopping parts ([`wait_for_lock`],
//! [`confirm_targets`], [`request_stop`], [`kill_holder`]).
//!
//! Waiting blocks in the kernel, in `flock(LOCK_EX)` on its own open file description,
//! through [`crate::sys::LockWaiter`]: on Linux this thread blocks in `flock` itself,
//! so that the holder letting go wakes only the thread that runs the command (one
//! wake-up, as flock(1)), while a watcher thread interrupts it when a signal or a
//! `.ralph/` change is readable from the event source or the deadline passes; the
//! signals are then read and acted on here, and the wait goes on. (macOS and FreeBSD:
//! a helper thread in `flock` wakes this thread's `poll`.) Polling with `LOCK_NB` would
//! burn wake-ups and add latency to the hand-off.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tracing::{info, warn};

use crate::exit::{ExitStatus, Failure, ResultExt};
use crate::fleet::Fleet;
use crate::lock::{self, Acquire, Holder, LockFile, MetaState};
use crate::metadata::Metadata;
use crate::procfs::{self, HoldingProcess};
use crate::signals::{self, Class, classify};
use crate::stop_request;
use crate::supervisor::Signals;
use crate::sys::LockWait;
use crate::workspace::RalphDir;

crate::setting::keywords! {
    OnConflict "What `run` does when the workspace lock is already held." {
        Worktree = "worktree", "Run the command in a new git worktree (see [worktree]).";
        Wait = "wait", "Block until the lock is free, without polling; bounded by `wait_timeout`.";
        Fail = "fail", "Exit with `exit_code`, naming the holder.";
        Takeover = "takeover", "Stop the holder as `ralph-supervise stop` does (its grace, then KILL), then take the lock.";
    }
    AfterTimeout "What `wait` does once `wait_timeout` expires." {
        Fail = "fail", "Exit with `exit_code`.";
        Worktree = "worktree", "Run the command in a new git worktree.";
    }
}

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
    /// The task, as a fleet lock's record names it.
    pub(crate) prompt: &'a str,
}

/// Where a run stands in the fleet lock's queue ([`Fleet::queue`]). (Made only by the
/// `fleet` build.)
#[cfg_attr(not(feature = "fleet"), allow(dead_code))]
pub(crate) enum Turn {
    /// The fleet lock is ours.
    Ours,
    /// Behind `holder` (described); `askable`: a ralph-supervise that takes stop requests.
    Behind { holder: String, askable: bool },
}

/// The moments of taking the workspace at which `run` acts (see [`acquire`]).
pub(crate) enum Moment<'a> {
    /// A `wait` is about to block: what the run needs once it has the lock is made now,
    /// so that the hand-off does not wait for it.
    BeforeWait,
    /// The local lock is ours (however it was taken: at once, after a wait, by a
    /// takeover): the run names itself in it before anything else, so that a
    /// concurrent `ralph run` finds the locked file naming its holder (it fails hard on
    /// an empty one), also while a fleet lock is waited for.
    Holding(&'a LockFile),
}

/// Takes the workspace lock of `dir`; if it is held, applies the conflict policy. In
/// fleet mode the fleet lock is then taken by the same policy. `at` is called at each
/// [`Moment`].
pub(crate) fn acquire(
    dir: &RalphDir,
    rules: &Rules<'_>,
    signals: &Signals,
    fleet: Option<&mut Fleet>,
    mut at: impl FnMut(Moment<'_>) -> Result<(), Failure>,
) -> Result<Next, Failure> {
    let next = local_lock(dir, rules, signals, &mut at)?;
    if let Next::Primary(lock) = &next
        && let Err(e) = at(Moment::Holding(lock))
    {
        if let Next::Primary(lock) = next {
            let _ = lock.release();
        }
        return Err(e);
    }
    match (next, fleet) {
        (Next::Primary(lock), Some(fleet)) => fleet_lock(lock, fleet, rules, signals),
        (next, _) => Ok(next),
    }
}

/// The workspace's flock, by the policy.
fn local_lock(
    dir: &RalphDir,
    rules: &Rules<'_>,
    signals: &Signals,
    at: &mut impl FnMut(Moment<'_>) -> Result<(), Failure>,
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
        OnConflict::Wait => {
            at(Moment::BeforeWait)?;
            wait(dir, held, rules, signals)
        }
        OnConflict::Takeover => takeover(dir, held, rules, signals),
    }
}

/// The fleet lock on top of the local `lock`, by the same policy across hosts. A
/// takeover asks the holder through etcd and waits, bounded by `wait_timeout`; nobody's
/// lease is revoked. Anything but the fleet lock gives the local one back.
fn fleet_lock(
    lock: LockFile,
    fleet: &mut Fleet,
    rules: &Rules<'_>,
    signals: &Signals,
) -> Result<Next, Failure> {
    let next = fleet_turn(fleet, rules, signals);
    match next {
        Ok(None) => Ok(Next::Primary(lock)),
        Ok(Some(instead)) => {
            let _ = lock.release();
            Ok(instead)
        }
        Err(e) => {
            let _ = lock.release();
            Err(e)
        }
    }
}

/// The policy on the fleet lock: `None` once it is ours, else what to do instead.
fn fleet_turn(
    fleet: &mut Fleet,
    rules: &Rules<'_>,
    signals: &Signals,
) -> Result<Option<Next>, Failure> {
    let key = fleet.key().to_owned();
    let (holder, askable) = match fleet.queue(rules.workspace, rules.prompt, rules.grace)? {
        Turn::Ours => return Ok(None),
        Turn::Behind { holder, askable } => (holder, askable),
    };
    let taken = format!("fleet key {key} is taken: {holder}");
    let refuse = |fleet: &mut Fleet, msg: String| {
        fleet.release();
        Err(rules.refuse(msg))
    };
    match (rules.policy, rules.repo) {
        (OnConflict::Fail, _) if askable => {
            return refuse(
                fleet,
                format!(
                    "{taken}; wait for it (--on-conflict wait) or ask it to stop (ralph-supervise stop --fleet {key})"
                ),
            );
        }
        (OnConflict::Fail, _) => {
            return refuse(
                fleet,
                format!(
                    "{taken}; wait for it (--on-conflict wait) or end it where it runs (not a ralph-supervise, it cannot be asked to stop)"
                ),
            );
        }
        (OnConflict::Worktree, Some(repo)) => {
            info!("{taken}; running in a new worktree");
            fleet.leave_queue();
            let repo = repo.to_path_buf();
            return Ok(Some(Next::Worktree { repo }));
        }
        (OnConflict::Worktree, None) => {
            return refuse(
                fleet,
                format!(
                    "{taken}; cannot run in a worktree outside a git repository; wait for it (--on-conflict wait)"
                ),
            );
        }
        (OnConflict::Takeover, _) if askable => {
            info!("{taken}; asking it to stop (takeover)");
            fleet.ask_holder_to_stop()?;
        }
        (OnConflict::Takeover, _) => {
            warn!("{taken}; it cannot be asked to stop (not a ralph-supervise): waiting for it")
        }
        (OnConflict::Wait, _) => {
            info!("{taken}; waiting for it");
            crate::service::status(&format!("waiting for the fleet lock held by {holder}"));
        }
    }
    match fleet.wait_for_turn(rules.wait_timeout, signals)? {
        Waited::Acquired(()) => Ok(None),
        Waited::Interrupted(sig) => {
            info!(
                "{} while waiting for the fleet lock: not running",
                signals::name(sig)
            );
            fleet.release();
            Ok(Some(Next::Exit(ExitStatus::Signaled(sig))))
        }
        Waited::TimedOut => {
            let timeout = rules.wait_timeout.unwrap_or_default();
            let taken = format!("fleet key {key} is taken: {}", fleet.holder_now());
            match (rules.after_timeout, rules.repo) {
                (AfterTimeout::Worktree, Some(repo)) => {
                    info!("gave up waiting after {timeout:?}: {taken}; running in a new worktree");
                    fleet.leave_queue();
                    let repo = repo.to_path_buf();
                    Ok(Some(Next::Worktree { repo }))
                }
                _ => refuse(fleet, format!("gave up waiting after {timeout:?}: {taken}")),
            }
        }
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

/// How a wait for a lock (the workspace's, or the fleet's: `T = ()`) ended.
#[derive(Debug)]
pub(crate) enum Waited<T = LockFile> {
    Acquired(T),
    TimedOut,
    /// A TERM, INT or HUP arrived: the caller exits 128+N without running anything.
    Interrupted(i32),
}

/// What a signal does to a wait for the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnSignal {
    /// TERM, INT, HUP: give up waiting (the caller exits 128+N).
    Interrupt,
    /// TSTP, TTIN, TTOU: stop, as a job does (there is no child to pass them to).
    StopSelf,
    /// CHLD, and CONT (we were continued: keep waiting).
    Nothing,
    /// Anything else: logged, and the wait goes on.
    Warn,
}

pub(crate) fn while_waiting(sig: i32) -> OnSignal {
    match classify(sig) {
        Class::Forward { stop: true } => OnSignal::Interrupt,
        _ if sig == libc::SIGHUP => OnSignal::Interrupt,
        Class::JobStop => OnSignal::StopSelf,
        Class::Child | Class::Continue => OnSignal::Nothing,
        Class::Forward { stop: false } | Class::Ignore => OnSignal::Warn,
    }
}

/// Blocks until the workspace lock is ours, `deadline` passes, or a stop signal comes.
pub(crate) fn wait_for_lock(
    dir: &RalphDir,
    deadline: Option<Instant>,
    signals: Option<&Signals>,
) -> Result<Waited, Failure> {
    wait_on(dir, deadline, signals, |dir| LockFile::open(dir).map(Some))?.ok_or_else(|| {
        Failure::msg(
            ExitStatus::Failure,
            format!("{} vanished while we waited for it", dir.path().display()),
        )
    })
}

/// How a watcher's wait for a free workspace ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freed {
    Free,
    TimedOut,
    Interrupted(i32),
}

/// Blocks until nobody holds the workspace lock (`stop`, `wait`), needing only read
/// access: the lock file is opened read-only and never created (a missing one means
/// free); the lock, once taken, is let go at once without touching the file.
pub(crate) fn wait_until_free(
    dir: &RalphDir,
    deadline: Option<Instant>,
    signals: Option<&Signals>,
) -> Result<Freed, Failure> {
    Ok(
        match wait_on(dir, deadline, signals, LockFile::open_to_probe)? {
            None => Freed::Free,
            Some(Waited::Acquired(lock)) => {
                lock.unlock();
                Freed::Free
            }
            Some(Waited::TimedOut) => Freed::TimedOut,
            Some(Waited::Interrupted(sig)) => Freed::Interrupted(sig),
        },
    )
}

/// The wait itself, on the lock file `open` gives; `None` when `open` finds none.
fn wait_on(
    dir: &RalphDir,
    deadline: Option<Instant>,
    signals: Option<&Signals>,
    open: impl Fn(&RalphDir) -> Result<Option<LockFile>, Failure>,
) -> Result<Option<Waited>, Failure> {
    loop {
        let Some(lock) = open(dir)? else {
            return Ok(None);
        };
        let mut waiter =
            crate::sys::LockWaiter::new(lock.as_fd()).or_fail("cannot wait for the lock")?;
        loop {
            let woken = waiter
                .wait(signals.map(AsFd::as_fd), deadline)
                .or_fail("cannot lock the workspace")?;
            if woken == LockWait::Locked {
                if lock.still_linked(dir) {
                    return Ok(Some(Waited::Acquired(lock)));
                }
                // The file was replaced while we waited: wait on the new one.
                break;
            }
            while let Some(received) = match signals {
                Some(s) => s.next_info().or_fail("cannot read signals")?,
                None => None,
            } {
                let sig = received.signo;
                match while_waiting(sig) {
                    OnSignal::Interrupt => return Ok(Some(Waited::Interrupted(sig))),
                    OnSignal::StopSelf => {
                        // Ctrl-Z: stop like any job; returns on `fg`/`bg`, and the wait
                        // goes on.
                        info!("{}: stopped while waiting for the lock", signals::name(sig));
                        let job_has_it = crate::terminal::sent_to_the_job(sig, received.code);
                        crate::terminal::stop_self(sig, job_has_it);
                    }
                    OnSignal::Nothing => {}
                    OnSignal::Warn => {
                        warn!("ignoring {} while waiting for the lock", signals::name(sig))
                    }
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Some(Waited::TimedOut));
            }
        }
    }
}

/// Pids of a holder that may be signalled: each confirmed alive by its recorded start
/// time. `Err` says why nothing can be signalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Targets {
    /// The holder's supervisor (a ralph-supervise), if alive.
    pub(crate) supervisor: Option<Pid>,
    /// The child, leader of its own process group, if alive.
    pub(crate) child: Option<Pid>,
    /// With the supervisor and the child gone: the processes of the loop still holding
    /// its lock (descendants of the child that left its group), with their start times.
    pub(crate) leftovers: Vec<HoldingProcess>,
    /// With the supervisor gone: the loop's cgroup, where every process it started is
    /// ([`crate::containment::orphaned_cgroup`]).
    pub(crate) cgroup: Option<PathBuf>,
}

/// Whether `p`, a process holding the lock, belongs to the loop `m` records (its
/// supervisor and child being gone): it holds the very open file description the
/// recorded supervisor locked (the kernel names the supervisor as the one that took
/// the lock, `takers`, and that pid is not another process now), which only the child
/// got a copy of (the supervisor's own is close-on-exec), and it started no earlier
/// than the child. So it is the child's descendant, or was handed the descriptor by
/// one. Someone's `flock(1)` locks a description of its own and is never a member.
pub(crate) fn member_of_loop(m: &Metadata, takers: &[u32], p: &HoldingProcess) -> bool {
    let (Some(sup), Some(sup_start), Some(child_start)) = (
        m.supervisor_pid,
        m.supervisor_start_time,
        m.child_start_time,
    ) else {
        return false;
    };
    let taken_by_supervisor =
        takers.contains(&sup) && procfs::start_time(sup).is_none_or(|t| t == sup_start);
    taken_by_supervisor && p.start_time.is_some_and(|t| t >= child_start)
}

/// Confirms the holder's pids against `/proc` before anything is signalled. When the
/// supervisor and the child are gone, the processes still holding the lock are
/// targets if they all belong to the loop ([`member_of_loop`]); any that does not is
/// named, and nothing is signalled.
pub(crate) fn confirm_targets(holder: &Holder) -> Result<Targets, String> {
    let MetaState::Valid(m) = &holder.metadata else {
        let why = "its lock file has no readable metadata, so no pid can be trusted";
        return Err(match holder.processes.as_deref() {
            Some(procs) if !procs.is_empty() => format!(
                "the lock is held by {}, and {why}",
                crate::present::processes(procs)
            ),
            _ => why.into(),
        });
    };
    if crate::lock::pids_elsewhere(m) {
        return Err(format!(
            "its pids ({}) are numbers in another pid namespace (a container?), so they cannot be confirmed or signalled from here; the stop request file asks it to stop, or stop it from inside its namespace",
            recorded_pids(m)
        ));
    }
    let confirm = |pid: Option<u32>, start: Option<u64>| -> Option<Pid> {
        let (pid, start) = (pid?, start?);
        procfs::alive(pid, Some(start)).then(|| Pid::from_raw(pid as i32))
    };
    let supervisor = confirm(m.supervisor_pid, m.supervisor_start_time);
    let child = confirm(m.child_pid, m.child_start_time);
    let cgroup = crate::containment::orphaned_cgroup(m);
    if supervisor.is_some() || child.is_some() || cgroup.is_some() {
        return Ok(Targets {
            supervisor,
            child,
            leftovers: vec![],
            cgroup,
        });
    }
    let recorded = match (m.supervisor_start_time, m.child_start_time) {
        (None, None) => format!(
            "pid {} has no recorded start time (not started by ralph-supervise), so its identity cannot be confirmed",
            m.pid
        ),
        _ => format!(
            "the recorded start times do not match a living process (pid {} was reused or is gone)",
            m.pid
        ),
    };
    let takers = holder.kernel.as_deref().unwrap_or_default();
    if let Some(procs) = holder.processes.as_deref()
        && !procs.is_empty()
    {
        let (members, strangers): (Vec<&HoldingProcess>, Vec<&HoldingProcess>) =
            procs.iter().partition(|p| member_of_loop(m, takers, p));
        if strangers.is_empty() {
            return Ok(Targets {
                supervisor: None,
                child: None,
                leftovers: members.into_iter().cloned().collect(),
                cgroup: None,
            });
        }
        return Err(format!(
            "{recorded}, and the lock is held by {}, which {} not part of the loop",
            crate::present::processes(strangers.iter().copied()),
            if strangers.len() == 1 { "is" } else { "are" }
        ));
    }
    Err(recorded)
}

/// `supervisor N, child M` (or `pid N`), as the metadata records them.
fn recorded_pids(m: &Metadata) -> String {
    let mut parts = Vec::new();
    if let Some(sup) = m.supervisor_pid {
        parts.push(format!("supervisor {sup}"));
    }
    match m.child_pid {
        Some(child) => parts.push(format!("child {child}")),
        None if m.supervisor_pid.is_none() => parts.push(format!("pid {}", m.pid)),
        None => {}
    }
    parts.join(", ")
}

/// Signals a leftover holder, exactly the process its pid and start time name: through
/// a process handle (a pidfd on Linux) opened before the start time is checked, so a
/// pid reused in between is not hit.
fn signal_leftover(p: &HoldingProcess, sig: Signal) {
    let Ok(process) = crate::sys::ProcessHandle::open(p.pid as i32) else {
        return; // gone
    };
    if p.start_time.is_some() && procfs::start_time(p.pid) == p.start_time {
        let _ = process.signal(sig as i32);
    }
}

/// Asks the holder to stop the way `stop` does. A live supervisor gets a stop request
/// naming `signal` ([`stop_request::ask`]; `None`: its own `stop.signal`) and escalates
/// on its own grace. Without one, the stop request file (which ralph honours) is
/// written, and the child gets `signal` (`None`: `fallback`), to its scope, or, when the
/// child is gone too, the loop's leftover holders of the lock.
pub(crate) fn request_stop(
    dir: &RalphDir,
    targets: Result<Targets, String>,
    signal: Option<i32>,
    fallback: i32,
) {
    if let Ok(t) = &targets
        && let Some(sup) = t.supervisor
    {
        match stop_request::ask(sup, signal) {
            Ok(()) => return,
            // No signal with a payload here (macOS): the stop request file asks the
            // supervisor, which watches `.ralph/` and stops with its own stop.signal.
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                if let Some(sig) = signal {
                    warn!(
                        "this system cannot send a stop request naming a signal ({}): the loop stops with its own stop.signal",
                        signals::name(sig)
                    );
                }
                if let Err(e) = stop_request::create(dir) {
                    warn!("cannot write the stop request: {e:#}");
                }
                return;
            }
            // It exited since it was confirmed: its child, if any, is the target.
            Err(e) => warn!("cannot ask the loop's supervisor (pid {sup}) to stop: {e}"),
        }
    }
    if let Err(e) = stop_request::create(dir) {
        warn!("cannot write the stop request: {e:#}");
    }
    let Ok(t) = targets else { return };
    let Ok(sig) = Signal::try_from(signal.unwrap_or(fallback)) else {
        return;
    };
    // Each target gets the signal, then CONT (as a supervisor sends them): a stopped
    // process acts on it.
    for sig in [sig, Signal::SIGCONT] {
        if let Some(cgroup) = &t.cgroup
            && signals::scope(sig as i32) == signals::Scope::Group
        {
            // No supervisor to carry the stop to the rest of the loop: its cgroup does
            // (the child is in it too).
            crate::containment::signal_orphaned(cgroup, sig as i32);
        } else if let Some(child) = t.child {
            let _ = match signals::scope(sig as i32) {
                signals::Scope::Child => kill(child, sig),
                signals::Scope::Group => killpg(child, sig),
            };
        } else {
            // Supervisor and child gone: the loop's leftover holders of the lock.
            for p in &t.leftovers {
                signal_leftover(p, sig);
            }
        }
    }
}

/// Kills what is left of the holder: the child's group, its supervisor, the leftovers.
pub(crate) fn kill_holder(t: &Targets) {
    if let Some(child) = t.child {
        let _ = killpg(child, Signal::SIGKILL);
    }
    if let Some(sup) = t.supervisor {
        let _ = kill(sup, Signal::SIGKILL);
    }
    if let Some(cgroup) = &t.cgroup {
        crate::containment::signal_orphaned(cgroup, libc::SIGKILL);
    }
    for p in &t.leftovers {
        signal_leftover(p, Signal::SIGKILL);
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
    // The holder's supervisor stops with its own stop signal; a child without one gets ours.
    request_stop(dir, targets.clone(), None, rules.stop_signal);
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
    kill_holder(&t);
    match wait_for_lock(dir, Some(Instant::now() + grace + margin), Some(signals))? {
        Waited::Acquired(lock) => Ok(Next::Primary(lock)),
        Waited::Interrupted(sig) => Ok(Next::Exit(ExitStatus::Signaled(sig))),
        Waited::TimedOut => Err(rules.refuse(
            "the workspace is still locked after killing its holder: a process outside its group holds the lock; find it with `ralph-supervise status`",
        )),
    }
}

/// The conflict policy in force: the configured one, else `worktree` in a git repository
/// and `fail` elsewhere (a worktree needs git).
pub(crate) fn policy_for(configured: Option<OnConflict>, in_git_repo: bool) -> OnConflict {
    let auto = in_git_repo.then_some(OnConflict::Worktree);
    configured.or(auto).unwrap_or(OnConflict::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_signals_do_to_a_wait() {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            assert_eq!(while_waiting(sig), OnSignal::Interrupt, "{sig}");
        }
        for sig in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
            assert_eq!(while_waiting(sig), OnSignal::StopSelf, "{sig}");
        }
        for sig in [libc::SIGCHLD, libc::SIGCONT] {
            assert_eq!(while_waiting(sig), OnSignal::Nothing, "{sig}");
        }
        for sig in [libc::SIGUSR1, libc::SIGWINCH, libc::SIGALRM] {
            assert_eq!(while_waiting(sig), OnSignal::Warn, "{sig}");
        }
    }

    #[test]
    fn unset_policy_is_worktree_in_git_and_fail_elsewhere() {
        assert_eq!(policy_for(None, true), OnConflict::Worktree);
        assert_eq!(policy_for(None, false), OnConflict::Fail);
        for in_git in [true, false] {
            assert_eq!(policy_for(Some(OnConflict::Wait), in_git), OnConflict::Wait);
        }
    }
}
