//! Spawning the child and supervising it until it is gone.
//!
//! This module is the supervisor's contact with the system: it turns signals, exits and
//! `.ralph/` changes into [`machine::Event`]s and the machine's [`machine::Action`]s
//! into system calls. What to do is decided in [`machine`], which stays pure; what the
//! run owns (the lock, the metadata, a respawn) is reached through [`Hooks`].
//!
//! # Theory of operation
//!
//! At start-up every catchable signal is reset to its default disposition and blocked
//! ([`crate::sys::reset_and_block_signals`]); the supervisor receives them through a
//! signalfd instead of handlers. That gives it four properties at once: signals can be
//! read in order from a descriptor that `poll(2)` waits on; nothing runs in signal
//! context; the child starts from a clean state (std clears the mask in the child, and
//! a default disposition is what `exec` passes on); and, as PID 1 of a container, the
//! kernel queues signals for us instead of dropping them (it never drops a blocked one).
//! On macOS and FreeBSD a kqueue takes the signalfd's place ([`sys::EventSource`]):
//! the same blocked signals, recorded on the kqueue as they are sent.
//!
//! The child is spawned in its own process group, with the locked descriptor passed open
//! and, when interactive, the terminal handed to its group before it runs. Then one loop:
//!
//! 1. `poll` on the signalfd (the only descriptor it needs) with the state machine's next
//!    deadline as the timeout, or none: an idle supervisor sleeps in the kernel;
//! 2. drain the signalfd: SIGCHLD means reap in a loop with `waitpid(-1, WNOHANG)` (the
//!    supervisor is the only reaper: it is a child subreaper, so orphaned descendants come
//!    back to it, and SIGCHLD coalesces), every other signal is an event;
//! 3. feed the events to the [`machine::Machine`], which answers with actions;
//! 4. carry the actions out (`carry_out`, the one dispatch): signal the child or its group,
//!    stop ourselves, hand the terminal over or take it back, spawn again;
//! 5. once the machine says the supervision is over, return its exit status.
//!
//! With a `stall_timeout`, the machine's deadline also covers its watchdog's next
//! sample: when [`Machine::activity_due`], the owner measures ([`Hooks::activity`]) and
//! the sample goes to the machine as an event.
//!
//! The workspace's `.ralph/` directory is watched through the same signalfd (the kernel
//! sends [`crate::watch::signal`] on every change): a stop-request file means a graceful
//! stop, a deleted lock file is recreated and locked again by the owner ([`Hooks`]) —
//! unless the loop's worktree is being removed (`ralph loops discard`), which stops
//! the loop as a stop request does and creates nothing there any more —
//! which also spawns the child again on a restart.

pub(crate) mod machine;

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tracing::{debug, info, warn};

use crate::containment::Containment;
use crate::exit::{ChildOutcome, ExitStatus, Failure};
use crate::signals::{self, Class, classify};
use crate::sys::{self, ChildSetup, Reaped};
use crate::terminal::{self, Terminal};
use crate::{stop_request, watch};
use machine::{Action, Event, Machine, State, StopReason};

/// The supervisor's signal plumbing, set up before anything else happens: the
/// platform's event source (a signalfd on Linux, a kqueue on macOS and FreeBSD).
pub(crate) struct Signals {
    source: sys::EventSource,
}

impl Signals {
    /// Resets and blocks every catchable signal and opens the event source that
    /// receives them; also resets SIGCHLD to default (someone may have left it ignored,
    /// and the kernel would then reap our children itself).
    pub(crate) fn install() -> io::Result<Signals> {
        Ok(Signals {
            source: sys::EventSource::install()?,
        })
    }

    /// The next pending signal with what came with it, if any.
    pub(crate) fn next_info(&self) -> io::Result<Option<Received>> {
        self.source.next()
    }

    /// Reports changes of directory `dir`'s entries as [`watch::signal`].
    pub(crate) fn watch_directory(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        self.source.watch_directory(dir)
    }
}

/// One signal read from the event source.
pub(crate) use sys::Received;

impl Received {
    /// `Some(signal)` when this is a stop request ([`stop_request::ask`]).
    fn stop_request(&self) -> Option<Option<i32>> {
        stop_request::decode(self.signo, self.code, self.value)
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.source.as_fd()
    }
}

/// A spawned child: its pid is also its process-group id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Child {
    pub(crate) pid: Pid,
}

/// Spawns `command` in its own process group, `inherit_fd` passed open (and exported as
/// `RALPH_LOCK_FD`), the terminal handed to it when we are in the foreground, placed in
/// the loop's cgroup when there is one (started in it by `clone3`, or where that
/// cannot be, moved there by a write to its `cgroup.procs` before `exec`: see
/// `sys::spawn_direct`);
/// with `handover` (a socket to the answerer), under the lock hand-over's `flock` filter.
pub(crate) fn spawn(
    command: &[OsString],
    inherit_fd: RawFd,
    terminal: Option<Terminal>,
    handover: Option<RawFd>,
    cgroup: Option<sys::Placement>,
    configure: impl FnOnce(&mut Command),
) -> Result<Child, Failure> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Failure::msg(ExitStatus::Usage, "no command given"))?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    configure(&mut cmd);
    // After `configure` (which applies the policy's `[run] env`): the number of the
    // descriptor the child really inherits is a fact, not a setting.
    cmd.env("RALPH_LOCK_FD", inherit_fd.to_string());
    let tty = terminal.filter(|t| t.can_hand_over()).map(|t| t.raw_fd());
    let setup = ChildSetup {
        inherit_fd: Some(inherit_fd),
        tty,
        handover,
        cgroup_procs: None,
    };
    // Started in the cgroup, so that it never has to move there, without a copy of our
    // memory (see sys/spawn.rs); else the usual way.
    let cloned = sys::spawn_direct(&cmd, &sys::Prepared::new(setup), cgroup.map(|c| c.dir));
    let pid = match cloned {
        Some(started) => {
            Pid::from_raw(started.map_err(|e| spawn_failure(&program.to_string_lossy(), e))? as i32)
        }
        None => {
            let setup = ChildSetup {
                cgroup_procs: cgroup.map(|c| c.procs),
                ..setup
            };
            sys::install_child_setup(&mut cmd, setup);
            let child = cmd
                .spawn()
                .map_err(|e| spawn_failure(&program.to_string_lossy(), e))?;
            let pid = Pid::from_raw(child.id() as i32);
            // The `Child` handle is dropped without waiting: the event loop is the only
            // reaper.
            drop(child);
            pid
        }
    };
    if let (Some(t), Some(_)) = (terminal, tty) {
        // The child did this too; whichever of us runs first, the terminal is its.
        t.give_to(pid);
    }
    Ok(Child { pid })
}

/// `command not found` (127) or `cannot execute` (126), like a shell says them.
fn spawn_failure(program: &str, e: io::Error) -> Failure {
    match e.raw_os_error() {
        Some(libc::ENOENT) => Failure::msg(
            ExitStatus::NotFound,
            format!("{program}: command not found; check the name and PATH"),
        ),
        Some(
            libc::EACCES
            | libc::ENOEXEC
            | libc::EISDIR
            | libc::ENOTDIR
            | libc::ELOOP
            | libc::ETXTBSY
            | libc::EPERM,
        ) => Failure::msg(
            ExitStatus::NotExecutable,
            format!("{program}: cannot execute: {e}; check that it is an executable file"),
        ),
        _ => Failure::new(
            ExitStatus::Failure,
            anyhow::Error::new(e).context(format!("cannot start {program}")),
        ),
    }
}

/// What a look at `.ralph/` found, for the event loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Nothing,
    /// A stop request (consumed).
    StopRequest,
    /// A stop request left in place for the child, which honours it itself (ralph).
    StopRequestHonoured,
    /// The loop's worktree was removed under it.
    Discarded,
}

/// What the event loop asks of its owner (who holds the lock and the metadata).
pub(crate) trait Hooks {
    /// Starts the child again (restart number `restarts`); records it.
    fn respawn(&mut self, restarts: u32) -> Result<Child, Failure>;
    /// A run ended by itself and `decision` follows: log it, record a restart to come.
    fn decided(&mut self, decision: &machine::Decision);
    /// Something changed in `.ralph/`: recreate a deleted lock file (unless the
    /// worktree was removed: then say so); consume a stop request (or, for a child that
    /// honours it itself, leave it) and say if there was one.
    fn workspace_changed(&mut self) -> Change;
    /// A stall watchdog sample: the CPU time the child's process tree has used so far,
    /// and whether a workspace file changed since the last sample.
    fn activity(&mut self) -> (Duration, bool);
    /// A second descriptor to wait on besides the signals (fleet mode: its helper
    /// thread's notifications), if the owner has one.
    fn side_channel(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    /// The side channel is readable: the events it brings (a lost lease, a stop asked
    /// for through etcd).
    fn side_events(&mut self) -> Vec<Event> {
        Vec::new()
    }
}

/// Supervises `child` until the machine says it is over; returns the exit status.
/// `tree` contains every process the child starts (and its restarts).
pub(crate) fn supervise(
    mut child: Child,
    machine: &mut Machine,
    signals: &Signals,
    terminal: Option<Terminal>,
    hooks: &mut dyn Hooks,
    tree: &mut Containment,
) -> Result<ExitStatus, Failure> {
    let mut events = Vec::new();
    // The terminal sent a job-control stop to our whole process group (see `act`).
    let mut job_has_stop = false;
    loop {
        if let Some(status) = machine.finished() {
            return Ok(status);
        }
        let timeout = sys::poll_timeout(machine.deadline());
        // The loop's cgroup, if any, raises POLLPRI when it empties (`cgroup.events`);
        // fleet mode's side channel is readable when its lock needs attention.
        let side = hooks.side_channel();
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let cgroup = tree.events().map(|e| PollFd::new(e, PollFlags::POLLPRI));
        let cgroup_at = cgroup.is_some().then_some(fds.len());
        fds.extend(cgroup);
        let side_at = side.is_some().then_some(fds.len());
        fds.extend(side.map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(anyhow::Error::new(e).context("poll").into()),
        }
        let ready = |at: Option<usize>| {
            let revents = at.and_then(|i| fds.get(i)).and_then(PollFd::revents);
            revents.is_some_and(|r| !r.is_empty())
        };
        let (cgroup_changed, side_ready) = (ready(cgroup_at), ready(side_at));
        drop(fds);
        if cgroup_changed {
            tree.rearm();
        }
        let now = Instant::now();
        if side_ready {
            events.extend(hooks.side_events());
        }
        let mut looked = false;
        while let Some(received) = signals.next_info()? {
            let sig = received.signo;
            if watch::is_watch_signal(sig) {
                // Changes coalesce: one look serves every signal of this batch.
                if !looked {
                    match hooks.workspace_changed() {
                        Change::Nothing => {}
                        Change::StopRequest => {
                            info!("stop requested ({})", stop_request::FILE);
                            events.push(Event::StopRequest { signal: None });
                        }
                        Change::StopRequestHonoured => {
                            info!(
                                "stop requested ({}): left for the command to honour",
                                stop_request::FILE
                            );
                            events.push(Event::StopRequestHonoured);
                        }
                        Change::Discarded => events.push(Event::Discarded),
                    }
                }
                looked = true;
            } else if classify(sig) == Class::Child {
                reap(child, &mut events, tree)?;
            } else if let Some(signal) = received.stop_request() {
                info!(
                    "stop requested{}",
                    signal
                        .map(|s| format!(" with {}", signals::name(s)))
                        .unwrap_or_default()
                );
                events.push(Event::StopRequest { signal });
            } else {
                // Ctrl-Z in a pipeline: the terminal stopped the rest of the job already.
                job_has_stop |= terminal::sent_to_the_job(sig, received.code);
                events.push(Event::Signal(sig));
            }
        }
        if machine.activity_due(now) {
            let sampling = Instant::now();
            let (cpu, files_changed) = hooks.activity();
            let took_us = sampling.elapsed().as_micros() as u64;
            debug!(
                cpu_ms = cpu.as_millis() as u64,
                files_changed, took_us, "stall check"
            );
            events.push(Event::Activity { cpu, files_changed });
        }
        if machine.deadline().is_some_and(|d| now >= d) {
            events.push(Event::Deadline);
        }
        let mut ctx = Context {
            child: &mut child,
            terminal,
            hooks,
            job_has_stop: &mut job_has_stop,
            tree,
        };
        for event in events.drain(..) {
            carry_out(machine, event, now, &mut ctx)?;
        }
        if matches!(machine.state(), machine::State::Draining { .. }) && !ctx.tree.alive() {
            carry_out(machine, Event::TreeEmpty, now, &mut ctx)?;
        }
    }
}

/// What carrying out an action reaches.
struct Context<'a> {
    child: &'a mut Child,
    terminal: Option<Terminal>,
    hooks: &'a mut dyn Hooks,
    /// The terminal sent a job-control stop to our whole process group (see [`act`]).
    job_has_stop: &'a mut bool,
    tree: &'a mut Containment,
}

/// Feeds one event to the machine and carries out the actions it answers: a spawn
/// through the owner (`child` becomes the new one), everything else by system calls.
fn carry_out(
    machine: &mut Machine,
    event: Event,
    now: Instant,
    ctx: &mut Context<'_>,
) -> Result<(), Failure> {
    // Said here, where the machine's answers meet the log: a stop for running too long,
    // and the KILL that ends a grace.
    let was_stopping = matches!(machine.state(), State::Stopping { killed: false, .. });
    let was_draining = matches!(machine.state(), State::Draining { killed: false, .. });
    let had_reason = machine.stop_reason();
    let actions = machine.handle(event, now);
    if had_reason.is_none() && machine.stop_reason() == Some(StopReason::MaxRuntime) {
        info!("max_runtime reached: stopping the command (status 124)");
    }
    // A stop under way (its grace runs): the service is stopping. Not a stop request
    // left for the command to honour (ralph finishes its iteration first, and systemd
    // counts TimeoutStopSec from STOPPING=1), nor a stall, which may restart.
    if !was_stopping
        && matches!(machine.state(), State::Stopping { .. })
        && let Some(reason) = machine.stop_reason().filter(|r| *r != StopReason::Stall)
    {
        crate::service::stopping(Some(&reason.to_string()));
    }
    if was_stopping && actions.contains(&Action::SignalTree(libc::SIGKILL)) {
        let why = match event {
            Event::Deadline => "the command did not stop within its stop grace".to_string(),
            Event::Signal(sig) => format!("a second stop signal ({})", signals::name(sig)),
            Event::StopRequest { signal: Some(sig) } => {
                format!("a stop request with {}", signals::name(sig))
            }
            _ => "a second stop".to_string(),
        };
        warn!("{why}: KILL to every process of the loop");
    }
    if was_draining && actions.contains(&Action::SignalTree(libc::SIGKILL)) {
        let n = ctx.tree.left().len();
        warn!(
            "{n} process{} the command left did not end within the stop grace: KILL",
            if n == 1 { "" } else { "es" }
        );
    }
    for action in actions {
        if action == Action::Spawn {
            *ctx.child = ctx.hooks.respawn(machine.restarts())?;
            ctx.tree.spawned(ctx.child.pid.as_raw() as u32, None);
            machine.spawned(Instant::now());
        } else if let Action::Decided(decision) = action {
            ctx.hooks.decided(&decision);
        } else {
            act(action, ctx);
        }
    }
    Ok(())
}

fn reap(child: Child, events: &mut Vec<Event>, tree: &mut Containment) -> io::Result<()> {
    while let Some((pid, reaped, usage)) = sys::reap_one()? {
        if !matches!(reaped, Reaped::Stopped(_)) {
            tree.reaped(usage);
        }
        if pid != child.pid.as_raw() {
            debug!(pid, ?reaped, "reaped a descendant");
            continue;
        }
        let outcome = match reaped {
            Reaped::Exited(code) => ChildOutcome::Exited(code),
            Reaped::Signaled(sig) => ChildOutcome::Signaled(sig),
            Reaped::Stopped(sig) => {
                events.push(Event::ChildStopped(sig));
                continue;
            }
        };
        debug!(pid, %outcome, "child ended");
        events.push(Event::ChildExited {
            outcome,
            tree_alive: tree.alive(),
        });
    }
    Ok(())
}

/// `job_has_stop`: the terminal sent the job-control stop to our whole group; the
/// supervisor's own stop then leaves the other members alone (see [`terminal::stop_self`]).
fn act(action: Action, ctx: &mut Context<'_>) {
    let (child, terminal) = (*ctx.child, ctx.terminal);
    match action {
        Action::SignalTree(sig) => {
            debug!(signal = %signals::name(sig), mode = %ctx.tree.mode(), "signalling every process of the loop");
            ctx.tree.signal_all(sig);
            // A stop signal is followed by CONT, as systemd's `KillSignal=` is: a
            // process stopped meanwhile (`kill -STOP`, Ctrl-Z with nobody to continue
            // it) gets it now, and may stop gracefully instead of waiting for KILL.
            if sig != libc::SIGKILL {
                ctx.tree.thaw();
                ctx.tree.signal_all(libc::SIGCONT);
            }
        }
        Action::Unended => {
            let left = ctx.tree.left();
            warn!(
                "could not end {} process{} of the loop within {}s of KILL: pid {}",
                left.len(),
                if left.len() == 1 { "" } else { "es" },
                machine::KILL_WAIT.as_secs(),
                left.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Action::SignalGroup(sig) => {
            debug!(signal = %signals::name(sig), pgid = child.pid.as_raw(), "signalling the child's group");
            if let Ok(sig) = Signal::try_from(sig) {
                let _ = killpg(child.pid, sig);
            }
        }
        Action::SignalChild(sig) => {
            debug!(signal = %signals::name(sig), pid = child.pid.as_raw(), "signalling the child");
            if let Ok(sig) = Signal::try_from(sig) {
                let _ = kill(child.pid, sig);
            }
        }
        Action::StopSelf(sig) => {
            // In a pipeline the command runs in the background of the terminal (see
            // `terminal`): reading it or setting its modes stops it (TTIN, TTOU). While
            // the job has the terminal, the command gets it and goes on, as it would
            // sharing the job's group; the rest of the pipeline writes on behind it.
            if let Some(t) = terminal
                && [libc::SIGTTIN, libc::SIGTTOU].contains(&sig)
                && t.surely_foreground()
            {
                debug!(signal = %signals::name(sig), "the command asked for the terminal: it gets it");
                t.lend_to(child.pid);
                terminal::continue_self();
                return;
            }
            if let Some(t) = terminal
                && t.foreground_is(child.pid)
            {
                t.take_back();
            }
            // Processes of the loop outside the child's group stop too (the cgroup
            // freezes).
            ctx.tree.freeze();
            debug!(signal = %signals::name(sig), "child stopped; stopping too");
            terminal::stop_self(sig, std::mem::take(ctx.job_has_stop));
        }
        Action::Resume => {
            if let Some(t) = terminal
                && t.can_hand_over()
            {
                t.give_to(child.pid);
            }
            ctx.tree.thaw();
            let _ = killpg(child.pid, Signal::SIGCONT);
        }
        Action::TakeTerminal => {
            if let Some(t) = terminal
                && t.foreground_is(child.pid)
            {
                t.take_back();
            }
        }
        Action::Ignored(sig) => warn!("ignoring {}", signals::name(sig)),
        Action::Stalled(idle) => warn!(
            "stalled: under 1 % of a CPU and no file changed for {}; stopping the command (status 124)",
            crate::setting::short_duration(Duration::from_secs(idle.as_secs()))
        ),
        Action::Spawn | Action::Decided(_) => unreachable!("carry_out spawns and records"),
    }
}
