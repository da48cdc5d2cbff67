//! `[hooks] on_start` and `on_exit`: a command run once before the loop's first spawn
//! (the workspace lock held) and once after its last run (the lock released), told the
//! run's facts in `RALPH_SUPERVISE_*` variables.
//!
//! A hook is spawned the way the loop's command is (`sys::install_child_setup`): in a
//! process group of its own, with the signal mask the supervisor blocks cleared and the
//! dispositions reset, and with no descriptor but 0, 1 and 2 (everything the supervisor
//! opens is close-on-exec, and no descriptor is passed on: a hook never holds the lock).
//! Its standard input is `/dev/null` and its standard output goes to our standard error
//! (as git does with its hooks), so a hook never reads the terminal or writes into the
//! loop's output stream.
//!
//! The supervisor waits for it on its signalfd, bounded by `[hooks] timeout`; then the
//! hook's process group is killed. A stop (INT, TERM, HUP, QUIT, a stop request, and
//! for `on_start` fleet mode's `stop --fleet` or lost lease) that arrives meanwhile is
//! passed on to the hook; every signal read while a hook runs is handed back to the
//! caller. After `on_start`, a stop among them (or a stop file, or a fleet report) means
//! the command is never started ([`first_stop`], `run`'s `stop_before_start`), as
//! systemd starts no `ExecStart=` once a stop came during `ExecStartPre=`; other
//! signals are queued again for the event loop. A hook's failure is logged (its program
//! name and status, never its environment) and changes nothing else.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, Visitor};
use tracing::{debug, info, warn};

use crate::signals::{self, Class, classify};
use crate::supervisor::machine::StopReason;
use crate::supervisor::{Received, Signals};
use crate::sys::{self, ChildSetup};

/// The facts of a run, as hooks are told them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    pub(crate) loop_id: String,
    /// The workspace `run` was given (the main one, also for a worktree loop).
    pub(crate) workspace: PathBuf,
    /// The loop's worktree, for a worktree loop.
    pub(crate) worktree: Option<PathBuf>,
    /// The worktree's branch, or the branch the workspace has checked out.
    pub(crate) branch: Option<String>,
    pub(crate) loop_index: u32,
    /// `on_exit` only: ralph-supervise's exit status.
    pub(crate) exit_status: Option<u8>,
    /// `on_exit` only: `exit`, or what stopped the loop (the history's `stopped_by`).
    pub(crate) reason: Option<String>,
}

impl Facts {
    /// Every variable, with `None` for those this hook is not told (removed, so that one
    /// inherited from an outer loop cannot mislead it).
    fn env(&self) -> [(&'static str, Option<String>); 7] {
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        [
            ("RALPH_SUPERVISE_LOOP_ID", Some(self.loop_id.clone())),
            ("RALPH_SUPERVISE_WORKSPACE", Some(path(&self.workspace))),
            ("RALPH_SUPERVISE_WORKTREE", self.worktree.as_ref().map(path)),
            ("RALPH_SUPERVISE_BRANCH", self.branch.clone()),
            ("RALPH_LOOP_INDEX", Some(self.loop_index.to_string())),
            (
                "RALPH_SUPERVISE_EXIT_STATUS",
                self.exit_status.map(|s| s.to_string()),
            ),
            ("RALPH_SUPERVISE_REASON", self.reason.clone()),
        ]
    }

    /// Where a hook runs: the loop's worktree while it exists, else the workspace.
    fn cwd(&self) -> PathBuf {
        match &self.worktree {
            Some(wt) if wt.is_dir() => wt.clone(),
            _ => self.workspace.clone(),
        }
    }
}

/// How a hook is written, for a value of another type.
pub(crate) const ARGV: &str =
    "write the program and its arguments as an array, like [\"make\", \"up\"]";
/// `[hooks] on_start` / `on_exit` as written: a program and its arguments, not empty.
pub(crate) struct Words(pub(crate) Vec<String>);
impl<'de> Deserialize<'de> for Words {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Words, D::Error> {
        d.deserialize_seq(WordsVisitor)
    }
}
struct WordsVisitor;
impl<'de> Visitor<'de> for WordsVisitor {
    type Value = Words;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of strings")
    }
    fn visit_seq<S: de::SeqAccess<'de>>(self, mut seq: S) -> Result<Words, S::Error> {
        let mut argv = Vec::new();
        while let Some(arg) = seq.next_element_seed(Arg(argv.is_empty()))? {
            argv.push(arg);
        }
        match argv.is_empty() {
            true => Err(de::Error::custom(format!(
                "the array is empty; {ARGV}, or leave the key out"
            ))),
            false => Ok(Words(argv)),
        }
    }
}
/// One of the [`Words`]; the first is the program.
struct Arg(bool);
impl<'de> DeserializeSeed<'de> for Arg {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        crate::setting::checked_str(d, |text| match text.as_str() {
            _ if text.contains('\0') => Err("it contains a NUL character; remove it".into()),
            "" if self.0 => Err("the program name is empty; name a program, like \"make\"".into()),
            _ => Ok(text),
        })
    }
}

/// Runs hook `name` (`on_start`) with `argv` to its end or `timeout`; returns the
/// signals read meanwhile (see the module documentation). A stop request that names
/// no signal, and a report on fleet mode's `side` channel, reach the hook as
/// `stop_signal` (the policy's), as they would the command.
pub(crate) fn run(
    name: &str,
    argv: &[String],
    facts: &Facts,
    timeout: Duration,
    stop_signal: i32,
    signals: &Signals,
    mut side: Option<BorrowedFd<'_>>,
) -> Vec<Received> {
    let Some((program, args)) = argv.split_first() else {
        return Vec::new();
    };
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(facts.cwd()).stdin(Stdio::null());
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(stderr) => cmd.stdout(Stdio::from(stderr)),
        Err(_) => cmd.stdout(Stdio::null()),
    };
    // Facts, not settings: no lock descriptor is passed, and the notify socket is ours.
    cmd.env_remove("RALPH_LOCK_FD")
        .env_remove(crate::notify::ENV);
    for (var, value) in facts.env() {
        match value {
            Some(value) => cmd.env(var, value),
            None => cmd.env_remove(var),
        };
    }
    sys::install_child_setup(
        &mut cmd,
        ChildSetup {
            inherit_fd: None,
            tty: None,
            handover: None,
            cgroup_procs: None,
        },
    );
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            warn!("hooks.{name}: cannot start {program}: {e}; going on without it");
            return Vec::new();
        }
    };
    let pgid = Pid::from_raw(child.id() as i32);
    debug!(pid = pgid.as_raw(), "hooks.{name}: {program} started");
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => {
                warn!("hooks.{name}: cannot wait for {program}: {e}");
                break None;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let limit = crate::setting::short_duration(timeout);
            warn!("hooks.{name}: {program} ran longer than hooks.timeout ({limit}); killing it");
            let _ = killpg(pgid, Signal::SIGKILL);
            break child.wait().ok();
        }
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        fds.extend(side.map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
        match poll(&mut fds, crate::sys::poll_timeout(Some(deadline))) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                warn!("hooks.{name}: poll: {e}");
                break child.wait().ok();
            }
        }
        if fds
            .get(1)
            .and_then(PollFd::revents)
            .is_some_and(|r| !r.is_empty())
        {
            // Fleet mode reports only stops (a lost lease, `stop --fleet`): passed on
            // once; the caller reads which it was.
            debug!(
                "hooks.{name}: a fleet report: passing {} on",
                signals::name(stop_signal)
            );
            if let Ok(sig) = Signal::try_from(stop_signal) {
                let _ = killpg(pgid, sig);
            }
            side = None;
        }
        while let Ok(Some(signal)) = signals.next_info() {
            if classify(signal.signo) == Class::Child {
                continue; // the hook's, or an orphan's (reaped by the event loop later)
            }
            if let Some((_, sig)) = stop(&signal, stop_signal) {
                debug!("hooks.{name}: passing {} on", signals::name(sig));
                if let Ok(sig) = Signal::try_from(sig) {
                    let _ = killpg(pgid, sig);
                }
            }
            received.push(signal);
        }
    };
    match status {
        Some(s) if s.success() => info!("hooks.{name}: {program} done"),
        Some(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
            (Some(code), _) => warn!("hooks.{name}: {program} exited with status {code}"),
            (None, Some(sig)) => {
                warn!(
                    "hooks.{name}: {program} was killed by {}",
                    signals::name(sig)
                )
            }
            _ => warn!("hooks.{name}: {program} ended abnormally"),
        },
        None => {}
    }
    received
}

/// The first stop among `received` (read while `on_start` ran): see [`stop`].
pub(crate) fn first_stop(received: &[Received], default: i32) -> Option<(StopReason, i32)> {
    received.iter().find_map(|signal| stop(signal, default))
}

/// What a signal read from the signalfd stops for, if it is a stop, and the signal it
/// means: its own, or the one a stop request names (`default` when it names none).
fn stop(signal: &Received, default: i32) -> Option<(StopReason, i32)> {
    if let Some(requested) = crate::stop_request::decode(signal.signo, signal.code, signal.value) {
        return Some((StopReason::StopRequest, requested.unwrap_or(default)));
    }
    match Signal::try_from(signal.signo) {
        Ok(Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP | Signal::SIGQUIT) => {
            Some((StopReason::Signal(signal.signo), signal.signo))
        }
        _ => None,
    }
}

/// Queues `received` to ourselves again (with their payloads), for the event loop.
pub(crate) fn requeue(received: &[Received]) {
    let me = std::process::id() as i32;
    for signal in received {
        if let Err(e) = sys::sigqueue(me, signal.signo, signal.value as usize) {
            warn!("cannot keep {} for later: {e}", signals::name(signal.signo));
        }
    }
}
