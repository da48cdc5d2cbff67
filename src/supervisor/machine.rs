//! The supervisor's decisions, as a pure state machine.
//!
//! Events come in (a signal, the child's exit or stop, the group emptying, a stop
//! request, a deadline); actions come out (signal the child or its group, stop ourselves, spawn the
//! child again). No system call happens here, so every transition is unit-tested without
//! processes; the event loop in [`super`] turns the real world into events and actions
//! back into system calls.
//!
//! ```text
//!            ┌──────────── Spawn ◀── Backoff{until} ◀──────────────┐ restart policy
//!            ▼                                                      │ says so
//!   Running{since} ──stop──▶ Stopping{deadline} ─deadline / 2nd─▶ KILL sent
//!      │ (TERM/INT, stop request, max runtime)  │
//!      └────────────child exits─────────────────┴──▶ Draining{deadline} ──┤
//!                     (what the loop started and left got TERM,            │ tree empty,
//!                      then KILL at the deadline; then the tree's end      │ no restart
//!                      is awaited, bounded by KILL_WAIT)                   ▼
//!                                                                   Exited(status)
//! ```
//!
//! A stop and the end of a run reach every process of the loop ([`Action::SignalTree`]:
//! its cgroup or its process tree, see [`crate::containment`]); forwarded signals
//! (HUP, WINCH, ...) reach the child's process group, as a terminal's would.
//!
//! A stop (signal, stop request, max runtime) ends restarts; the exit status is the last
//! run's, or 124 when `max_runtime` expired.
//!
//! The stall watchdog (`stall_timeout`) is a clock per run: the driver samples the
//! process tree's CPU time and whether a workspace file changed whenever
//! [`Machine::activity_due`] says so ([`Event::Activity`]); a sign of work restarts the
//! clock; once it reaches the timeout the run is stopped like a max runtime, but as a
//! run that ended with 124, which the restart rules look up like any other status. The
//! clock pauses while the job is stopped (job control). Unset, it adds no deadline.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, Visitor};

use crate::exit::{ChildOutcome, ExitStatus};
use crate::signals::{Class, Scope, classify, scope};

crate::setting::keywords! {
    RestartWhen "When the child is started again after it exits." {
        Never = "never", "Never.";
        OnFailure = "on-failure", "When it exits non-zero or is killed by a signal.";
        Always = "always", "Whenever it exits.";
    }
}

/// What follows one exit status, over [`RestartWhen`] (`[restart.exit]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitRule {
    /// No restart.
    Stop,
    /// Restart after the backoff.
    Backoff,
    /// Restart after this fixed delay; the backoff is left as it is.
    After(Duration),
}

/// An exit rule as the policy file and the logs spell it: `stop`, `restart`, `30m`.
impl std::str::FromStr for ExitRule {
    type Err = String;
    fn from_str(text: &str) -> Result<ExitRule, Self::Err> {
        Ok(match text {
            "stop" => ExitRule::Stop,
            "restart" => ExitRule::Backoff,
            delay => ExitRule::After(crate::setting::duration(delay)?),
        })
    }
}
impl std::fmt::Display for ExitRule {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            ExitRule::Stop => f.write_str("stop"),
            ExitRule::Backoff => f.write_str("restart"),
            ExitRule::After(delay) => f.write_str(&crate::setting::short_duration(*delay)),
        }
    }
}

/// An exit rule as the policy file and the command line write it (`[restart.exit]`).
impl<'de> Deserialize<'de> for ExitRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ExitRule, D::Error> {
        let text = String::deserialize(d)?;
        let why = || format!("{text:?} is not an action; {EXIT_ACTION}");
        text.trim().parse().map_err(|_| de::Error::custom(why()))
    }
}
/// How a `[restart.exit]` action is written.
pub(crate) const EXIT_ACTION: &str = "write \"stop\", \"restart\" or a delay like \"30m\"";
const EXIT_STATUS: &str =
    "use an exit code from 0 to 255 (128+N for death by signal N, 124 for a stall)";
/// `[restart.exit]`: `CODE = "stop" | "restart" | "<delay>"`, CODE from 0 to 255.
pub(crate) struct ExitActions(pub(crate) BTreeMap<u8, ExitRule>);
impl<'de> Deserialize<'de> for ExitActions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ExitActions, D::Error> {
        d.deserialize_map(ExitActionsVisitor)
    }
}
struct ExitActionsVisitor;
impl<'de> Visitor<'de> for ExitActionsVisitor {
    type Value = ExitActions;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a table")
    }
    fn visit_map<M: de::MapAccess<'de>>(self, mut map: M) -> Result<ExitActions, M::Error> {
        let mut actions = BTreeMap::new();
        while let Some(code) = map.next_key_seed(Code(&actions))? {
            actions.insert(code, map.next_value()?);
        }
        Ok(ExitActions(actions))
    }
}
/// An exit code as a `[restart.exit]` key, not given before.
struct Code<'a>(&'a BTreeMap<u8, ExitRule>);
impl<'de> DeserializeSeed<'de> for Code<'_> {
    type Value = u8;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u8, D::Error> {
        let name = String::deserialize(d)?;
        let digits = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
        let code = match name.parse::<u32>().ok().filter(|_| digits) {
            Some(code) => u8::try_from(code).map_err(|_| format!("{code} is out of range")),
            None if digits => Err(format!("{name} is out of range")),
            None => Err(format!("{name:?} is not an exit code")),
        };
        let code = code.map_err(|e| de::Error::custom(format!("{e}; {EXIT_STATUS}")))?;
        match self.0.contains_key(&code) {
            true => Err(de::Error::custom(format!(
                "exit code {code} is given twice; keep one"
            ))),
            false => Ok(code),
        }
    }
}
/// Restart settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Restart {
    pub(crate) when: RestartWhen,
    /// Most restarts (within `window`); `None` = unlimited.
    pub(crate) max: Option<u32>,
    /// `max` counts the restarts within any span this long; `None`: within the run.
    pub(crate) window: Option<Duration>,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    /// By the status [`status_matched`] gives: what follows it, over `when`.
    pub(crate) exit: BTreeMap<u8, ExitRule>,
}

impl Restart {
    #[cfg(test)]
    pub(crate) const NEVER: Restart = Restart {
        when: RestartWhen::Never,
        max: None,
        window: None,
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
        exit: BTreeMap::new(),
    };

    /// Delay before the restart after `failures` quick exits in a row:
    /// `backoff_initial * 2^failures`, capped at `backoff_max`.
    pub(crate) fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures).unwrap_or(u32::MAX);
        self.backoff_initial
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.backoff_max)
    }

    /// A run at least this long counts as stable: the backoff starts over.
    pub(crate) fn stable_after(&self) -> Duration {
        self.backoff_max.max(Duration::from_secs(10))
    }
}

/// The status `[restart.exit]` matches for a run that ended with `outcome`: its exit
/// code, or 128+N when signal N killed it. (A stall, which ends a run with 124, matches
/// 124.)
pub(crate) fn status_matched(outcome: ChildOutcome) -> u8 {
    ExitStatus::from_wait(outcome).code()
}

/// What decided whether a run that ended is followed by another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// The `[restart.exit]` entry for this status.
    Exit(u8, ExitRule),
    /// `restart.policy`: no entry matched.
    Policy(RestartWhen),
}

/// What follows a run that ended by itself (not stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Restart number `number` (counting from 1) after `delay`, at `at`.
    Restart {
        number: u32,
        delay: Duration,
        at: Instant,
    },
    /// No restart: the rule says so.
    Finish,
    /// The rule says restart, but `max` restarts happened within `window` already.
    GiveUp { max: u32, window: Option<Duration> },
}

/// The decision after a run ended by itself: the status matched, what matched, what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) outcome: ChildOutcome,
    /// [`status_matched`]: the exit code, 128+N after signal N.
    pub(crate) status: u8,
    /// The run was stopped as stalled (`status` is then 124).
    pub(crate) stalled: bool,
    pub(crate) why: Why,
    pub(crate) verdict: Verdict,
}

/// Fixed settings of one supervision.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Stop-signal→KILL grace, for stops and for processes left after the child.
    pub(crate) grace: Duration,
    /// The signal a stop request or max runtime sends to the child's group.
    pub(crate) stop_signal: i32,
    /// Send TERM then KILL to the processes of the loop left after the child exits.
    pub(crate) kill_orphans: bool,
    /// Stdin is our controlling terminal: mirror the child's stops (shell job control).
    pub(crate) job_control: bool,
    pub(crate) restart: Restart,
    /// Stop the child when it has run this long (over all restarts); exit 124.
    pub(crate) max_runtime: Option<Duration>,
    /// Stop a run that has shown no work for this long; the run ends with 124.
    pub(crate) stall_timeout: Option<Duration>,
}

/// Below this share of one CPU a process tree is idle (an agent's timers are not work).
const IDLE_CPU_PERCENT: u32 = 1;

/// How often the watchdog samples: a tenth of the timeout, 1 s to 60 s apart.
pub(crate) fn stall_check_interval(timeout: Duration) -> Duration {
    (timeout / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// The stall watchdog's clock for the current run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StallClock {
    /// The run has shown no work since then (its start, or the last sign of work).
    idle_since: Instant,
    /// The tree's CPU time at `idle_since`; `None` until the first sample.
    cpu_at: Option<Duration>,
    /// When the driver samples next.
    next_check: Instant,
    /// The job is stopped since then: the clock stands still.
    paused_at: Option<Instant>,
}

impl StallClock {
    /// A run started at `now`: sample at once, for the baseline.
    fn new(now: Instant) -> StallClock {
        StallClock {
            idle_since: now,
            cpu_at: None,
            next_check: now,
            paused_at: None,
        }
    }
}

/// Why a supervision was stopped (for the history).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// A stop signal was sent to the supervisor.
    Signal(i32),
    /// A stop request: `.ralph/stop-requested` appeared (`ralph loops stop`), or
    /// `ralph-supervise stop` or a takeover asked ([`crate::stop_request::ask`]).
    StopRequest,
    /// `max_runtime` expired.
    MaxRuntime,
    /// The loop's worktree was removed under it (`ralph loops discard`).
    Discarded,
    /// The run stalled (`stall_timeout`). Unlike the others it does not end the
    /// restarts: the run ends with 124 and the restart rules decide.
    Stall,
    /// Fleet mode: the fleet lock's lease could not be kept alive; exit 69.
    LeaseLost,
}

/// What stopped the loop, in the history's `stopped_by` words (also `hooks.on_exit`'s
/// `RALPH_SUPERVISE_REASON`, and systemd's STATUS= line).
impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Signal(sig) => write!(f, "signal {}", crate::signals::name(*sig)),
            StopReason::StopRequest => f.write_str("stop-request"),
            StopReason::MaxRuntime => f.write_str("max-runtime"),
            StopReason::Discarded => f.write_str("discarded"),
            StopReason::Stall => f.write_str("stall"),
            StopReason::LeaseLost => f.write_str("fleet-lease-lost"),
        }
    }
}

/// Where the supervision is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// The child runs, since `since`.
    Running { since: Instant },
    /// A stop began; at `deadline` the group gets SIGKILL (once: `killed`). `by_signal`:
    /// it began with a stop signal, so another one escalates.
    Stopping {
        deadline: Instant,
        killed: bool,
        by_signal: bool,
    },
    /// The child exited; what it left got TERM and gets KILL at `deadline`; once
    /// `killed`, `deadline` bounds the wait for the tree's end.
    Draining { deadline: Instant, killed: bool },
    /// Waiting to start the child again at `until`.
    Backoff { until: Instant },
    /// Done: release the lock and exit.
    Exited(ExitStatus),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A signal was sent to the supervisor (never SIGCHLD: that becomes the two below).
    Signal(i32),
    /// The child ended; `tree_alive`: processes of the loop remain.
    ChildExited {
        outcome: ChildOutcome,
        tree_alive: bool,
    },
    /// The child was stopped by this signal.
    ChildStopped(i32),
    /// No process of the loop is left.
    TreeEmpty,
    /// A graceful stop was requested: the stop-request file appeared (`signal` is
    /// `None`), or `stop`/a takeover asked, maybe naming the signal the child is to get.
    StopRequest { signal: Option<i32> },
    /// The stop-request file appeared and the child honours it itself (ralph, with the
    /// lock handed over): no signal, no grace, no escalation, but the run ends there —
    /// recorded as a stop request and never restarted, whatever the child exits with.
    StopRequestHonoured,
    /// The loop's worktree was removed: stop as a stop request does.
    Discarded,
    /// The current deadline passed.
    Deadline,
    /// A watchdog sample (when [`Machine::activity_due`]): the child's process tree has
    /// used `cpu` in all (a running total), and a workspace file changed since the last
    /// sample (`files_changed`).
    Activity { cpu: Duration, files_changed: bool },
    /// Fleet mode: the lease may lapse (keep-alives failed) or is gone. The child is
    /// stopped with this grace, its leftovers KILLed at once, and the run exits 69.
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    LeaseLost { grace: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// `killpg(child_pgid, sig)`.
    SignalGroup(i32),
    /// `sig` to every process of the loop (its cgroup or process tree; with `orphans =
    /// "leave"`, the child's process group), then CONT unless `sig` is KILL: it is always
    /// a stop, which a stopped process must be continued to act on.
    SignalTree(i32),
    /// Processes of the loop outlived KILL by [`KILL_WAIT`]: name them, go on without.
    Unended,
    /// `kill(child_pid, sig)`: the child alone (see [`crate::signals::Scope`]).
    SignalChild(i32),
    /// Take the terminal back and stop ourselves with this signal, so the shell sees the
    /// job stopped; returns when we are continued.
    StopSelf(i32),
    /// We were continued: hand the terminal to the child (if ours) and continue it.
    Resume,
    /// The child is gone: take the terminal back if the child had it.
    TakeTerminal,
    /// Start the child (again); the driver then calls [`Machine::spawned`].
    Spawn,
    /// A run ended by itself and this follows (log it; record a restart to come).
    Decided(Decision),
    /// Log that a signal was ignored.
    Ignored(i32),
    /// Log that the run stalled: no work for this long (it is being stopped).
    Stalled(Duration),
}

#[derive(Debug)]
pub(crate) struct Machine {
    config: Config,
    state: State,
    /// The last run's outcome.
    outcome: Option<ChildOutcome>,
    stop: Option<StopReason>,
    /// Restarts done.
    restarts: u32,
    /// Quick exits in a row, for the backoff.
    failures: u32,
    /// When the restarts within `restart.window` happened (only with a `max`).
    recent: VecDeque<Instant>,
    /// When `max_runtime` expires.
    runtime_deadline: Option<Instant>,
    /// The stall watchdog of the current run (with a `stall_timeout`).
    stall: Option<StallClock>,
    /// The current run was stopped as stalled: it ends with 124.
    stalled: bool,
    /// The current stop's signal went to every process of the loop.
    tree_signalled: bool,
}

/// How long the end of the loop's processes is awaited after KILL (a process in an
/// uninterruptible sleep may take a moment); then they are named and left.
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(5);

impl Machine {
    /// A machine for a child spawned at `now`.
    pub(crate) fn new(config: Config, now: Instant) -> Machine {
        let runtime_deadline = config.max_runtime.map(|d| now + d);
        Machine {
            state: State::Running { since: now },
            outcome: None,
            stop: None,
            restarts: 0,
            failures: 0,
            recent: VecDeque::new(),
            runtime_deadline,
            stall: config.stall_timeout.map(|_| StallClock::new(now)),
            stalled: false,
            tree_signalled: false,
            config,
        }
    }

    /// A machine for a child that is never started: a stop (`reason`) came first, during
    /// `hooks.on_start`. It ends with `status`, as that stop would have ended the child
    /// (128+N for its signal, 69 for a lost lease), with nothing to restart.
    pub(crate) fn stopped_before_start(
        config: Config,
        reason: StopReason,
        status: ExitStatus,
        now: Instant,
    ) -> Machine {
        let mut machine = Machine::new(config, now);
        machine.stop = Some(reason);
        machine.state = State::Exited(status);
        machine
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// The exit status once [`State::Exited`].
    pub(crate) fn finished(&self) -> Option<ExitStatus> {
        match self.state {
            State::Exited(status) => Some(status),
            _ => None,
        }
    }

    /// How the last run ended, once it has.
    pub(crate) fn outcome(&self) -> Option<ChildOutcome> {
        self.outcome
    }

    /// Whether a child is running (its exit is still to come).
    pub(crate) fn child_running(&self) -> bool {
        matches!(self.state, State::Running { .. } | State::Stopping { .. })
    }

    /// What stopped the supervision, or the last run when it stalled.
    pub(crate) fn stop_reason(&self) -> Option<StopReason> {
        self.stop
            .or_else(|| self.stalled.then_some(StopReason::Stall))
    }

    /// Whether the driver is to take a watchdog sample now ([`Event::Activity`]).
    pub(crate) fn activity_due(&self, now: Instant) -> bool {
        matches!(self.state, State::Running { .. })
            && self
                .stall
                .is_some_and(|c| c.paused_at.is_none() && now >= c.next_check)
    }

    pub(crate) fn restarts(&self) -> u32 {
        self.restarts
    }

    /// When the event loop must wake up even if nothing happens.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Running { .. } => {
                let check = (self.stall)
                    .filter(|c| c.paused_at.is_none())
                    .map(|c| c.next_check);
                match (self.runtime_deadline, check) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            State::Stopping {
                deadline,
                killed: false,
                ..
            } => Some(deadline),
            State::Draining { deadline, .. } => Some(deadline),
            // `max_runtime` counts the waits between runs too.
            State::Backoff { until } => Some(self.runtime_deadline.map_or(until, |d| d.min(until))),
            _ => None,
        }
    }

    /// The driver started the child again (after [`Action::Spawn`]).
    pub(crate) fn spawned(&mut self, now: Instant) {
        self.state = State::Running { since: now };
        self.outcome = None;
        self.stalled = false;
        self.tree_signalled = false;
        self.stall = self.config.stall_timeout.map(|_| StallClock::new(now));
    }

    pub(crate) fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        match (self.state, event) {
            (State::Exited(_), _) => vec![],

            (_, Event::LeaseLost { grace }) => self.lease_lost(grace, now),

            (
                _,
                Event::ChildExited {
                    outcome,
                    tree_alive,
                },
            ) => self.child_exited(outcome, tree_alive, now),

            // A stop under way keeps its grace: a command that stops meanwhile (in the
            // background of the terminal, it touched it while ending) is not followed,
            // and KILL ends it at the grace.
            (State::Stopping { .. }, Event::ChildStopped(_)) => vec![],
            (_, Event::ChildStopped(sig)) => {
                if self.config.job_control && self.child_running() {
                    // We stop too, and go on when continued (`Resume`): the clock
                    // stands still meanwhile.
                    if let Some(clock) = &mut self.stall {
                        clock.paused_at.get_or_insert(now);
                    }
                    vec![Action::StopSelf(sig)]
                } else {
                    vec![]
                }
            }

            (State::Draining { .. }, Event::TreeEmpty) => self.after_drain(now),
            (State::Draining { killed: false, .. }, Event::Deadline) => self.kill_tree(now),
            (State::Draining { killed: true, .. }, Event::Deadline) => {
                let mut actions = vec![Action::Unended];
                actions.extend(self.after_drain(now));
                actions
            }

            (State::Backoff { .. }, Event::Deadline)
                if self.runtime_deadline.is_some_and(|d| now >= d) =>
            {
                // No child to stop: the run is over.
                self.stop.get_or_insert(StopReason::MaxRuntime);
                self.exit();
                vec![]
            }
            (State::Backoff { until }, Event::Deadline) if now >= until => self.restart(now),

            (State::Running { .. }, Event::Activity { cpu, files_changed }) => {
                self.sampled(cpu, files_changed, now)
            }
            (_, Event::Activity { .. }) => vec![],

            (State::Running { .. }, Event::Deadline)
                if self.runtime_deadline.is_some_and(|d| now >= d) =>
            {
                self.begin_stop(StopReason::MaxRuntime, self.config.stop_signal, now)
            }

            (
                State::Stopping {
                    killed: false,
                    deadline,
                    ..
                },
                Event::Deadline,
            ) if now >= deadline => {
                self.state = State::Stopping {
                    deadline: now,
                    killed: true,
                    by_signal: true,
                };
                vec![Action::SignalTree(libc::SIGKILL)]
            }

            // `stop --kill`: KILL to the whole loop at once, also when a stop is under
            // way already (it ends the restarts like any stop request).
            (
                State::Running { .. } | State::Stopping { killed: false, .. },
                Event::StopRequest {
                    signal: Some(libc::SIGKILL),
                },
            ) => {
                self.stop.get_or_insert(StopReason::StopRequest);
                self.tree_signalled = true;
                self.state = State::Stopping {
                    deadline: now,
                    killed: true,
                    by_signal: true,
                };
                vec![Action::SignalTree(libc::SIGKILL)]
            }
            // A stop request while already stopping is the same request again: only a
            // second stop *signal* escalates. (After a stall it ends the restarts.)
            (State::Stopping { .. }, Event::StopRequest { .. }) => {
                self.stop.get_or_insert(StopReason::StopRequest);
                vec![]
            }
            (State::Stopping { .. }, Event::Discarded) => {
                self.stop.get_or_insert(StopReason::Discarded);
                vec![]
            }
            (State::Backoff { .. }, Event::StopRequestHonoured) => {
                // Between runs nobody honours it: it ends the restarts.
                self.stop.get_or_insert(StopReason::StopRequest);
                self.exit();
                vec![]
            }
            (_, Event::StopRequestHonoured) => {
                self.stop.get_or_insert(StopReason::StopRequest);
                vec![]
            }
            (_, Event::StopRequest { signal }) => self.stop_requested(
                StopReason::StopRequest,
                signal.unwrap_or(self.config.stop_signal),
                now,
            ),
            (_, Event::Discarded) => {
                self.stop_requested(StopReason::Discarded, self.config.stop_signal, now)
            }

            (_, Event::Signal(sig)) => match classify(sig) {
                Class::Forward { stop: true } => {
                    self.stop_requested(StopReason::Signal(sig), sig, now)
                }
                // Between runs there is nobody to pass a job stop to: stop, like any
                // job, and on CONT simply go on waiting for the restart.
                Class::JobStop if matches!(self.state, State::Backoff { .. }) => {
                    vec![Action::StopSelf(sig)]
                }
                Class::Continue if matches!(self.state, State::Backoff { .. }) => vec![],
                Class::Forward { stop: false } | Class::JobStop => {
                    if self.child_running() {
                        vec![deliver(sig)]
                    } else if matches!(self.state, State::Draining { .. })
                        && scope(sig) == Scope::Group
                    {
                        // The child is gone; its leftover group still gets group signals.
                        vec![Action::SignalGroup(sig)]
                    } else {
                        vec![]
                    }
                }
                Class::Continue => {
                    if let Some(clock) = &mut self.stall
                        && let Some(paused_at) = clock.paused_at.take()
                    {
                        let paused = now.saturating_duration_since(paused_at);
                        clock.idle_since += paused;
                        clock.next_check += paused;
                    }
                    vec![Action::Resume]
                }
                Class::Child => vec![],
                Class::Ignore => vec![Action::Ignored(sig)],
            },

            (_, Event::TreeEmpty | Event::Deadline) => vec![],
        }
    }

    /// A stop signal (`reason` names it; `signal` is it, sent as is) or a stop request
    /// (`signal` is what the child gets).
    fn stop_requested(&mut self, reason: StopReason, signal: i32, now: Instant) -> Vec<Action> {
        match self.state {
            State::Running { .. } => self.begin_stop(reason, signal, now),
            State::Stopping {
                killed: false,
                by_signal: false,
                deadline,
            } if matches!(reason, StopReason::Signal(_)) => {
                // A stop signal right after a stop request is taken for the same stop
                // (a tool may write the file and signal too, as `ralph-supervise stop`
                // once did): the child already got the stop signal. Only a further
                // signal escalates. (After a stall, it ends the restarts.)
                self.stop.get_or_insert(reason);
                self.state = State::Stopping {
                    deadline,
                    killed: false,
                    by_signal: true,
                };
                vec![]
            }
            State::Stopping {
                killed: false,
                by_signal: true,
                ..
            } => {
                // A second stop signal escalates at once.
                self.state = State::Stopping {
                    deadline: now,
                    killed: true,
                    by_signal: true,
                };
                vec![Action::SignalTree(libc::SIGKILL)]
            }
            State::Stopping { killed: false, .. } => vec![],
            State::Draining { killed: false, .. } => {
                self.stop.get_or_insert(reason);
                self.kill_tree(now)
            }
            State::Draining { killed: true, .. } => {
                self.stop.get_or_insert(reason);
                vec![]
            }
            State::Backoff { .. } => {
                // No child: a stop ends the restarts.
                self.stop.get_or_insert(reason);
                self.exit();
                vec![]
            }
            State::Stopping { killed: true, .. } | State::Exited(_) => vec![],
        }
    }

    /// The fleet lease may lapse: whatever else is going on, the child is to be gone
    /// within `grace` (sooner if a stop already runs), and the run ends with 69.
    fn lease_lost(&mut self, grace: Duration, now: Instant) -> Vec<Action> {
        self.stop = Some(StopReason::LeaseLost);
        let deadline = now + grace;
        match self.state {
            State::Running { .. } => {
                self.state = State::Stopping {
                    deadline,
                    killed: false,
                    by_signal: true,
                };
                vec![self.deliver_stop(self.config.stop_signal)]
            }
            State::Stopping {
                deadline: old,
                killed: false,
                by_signal,
            } => {
                self.state = State::Stopping {
                    deadline: old.min(deadline),
                    killed: false,
                    by_signal,
                };
                vec![]
            }
            // The child is gone; its leftovers get no grace.
            State::Draining { killed: false, .. } => self.kill_tree(now),
            State::Backoff { .. } => {
                self.exit();
                vec![]
            }
            State::Draining { killed: true, .. } => vec![],
            State::Stopping { killed: true, .. } | State::Exited(_) => vec![],
        }
    }

    fn begin_stop(&mut self, reason: StopReason, signal: i32, now: Instant) -> Vec<Action> {
        self.stop.get_or_insert(reason);
        self.state = State::Stopping {
            deadline: now + self.config.grace,
            killed: false,
            by_signal: matches!(reason, StopReason::Signal(_)),
        };
        vec![self.deliver_stop(signal)]
    }

    /// A stop signal: to every process of the loop, unless it is one meant for the
    /// child alone ([`Scope::Child`]).
    fn deliver_stop(&mut self, sig: i32) -> Action {
        match scope(sig) {
            Scope::Child => Action::SignalChild(sig),
            Scope::Group => {
                self.tree_signalled = true;
                Action::SignalTree(sig)
            }
        }
    }

    /// KILL to what is left of the loop; then its end is awaited, at most [`KILL_WAIT`].
    fn kill_tree(&mut self, now: Instant) -> Vec<Action> {
        self.state = State::Draining {
            deadline: now + KILL_WAIT,
            killed: true,
        };
        vec![Action::SignalTree(libc::SIGKILL)]
    }

    /// A watchdog sample while the child runs: the clock goes on, starts over on a sign
    /// of work (a file changed, or the tree used at least 1 % of one CPU since the idle
    /// span began), or, having reached the timeout, stops the run as stalled.
    fn sampled(&mut self, cpu: Duration, files_changed: bool, now: Instant) -> Vec<Action> {
        let (Some(timeout), Some(clock)) = (self.config.stall_timeout, self.stall.as_mut()) else {
            return vec![];
        };
        if clock.paused_at.is_some() {
            return vec![];
        }
        clock.next_check = now + stall_check_interval(timeout);
        let Some(before) = clock.cpu_at else {
            // The baseline (changes before it are our own start-up's).
            *clock = StallClock {
                idle_since: now,
                cpu_at: Some(cpu),
                ..*clock
            };
            return vec![];
        };
        let idle = now.saturating_duration_since(clock.idle_since);
        if cpu < before {
            // A process left the tree unaccounted (auto-reaped): count from here.
            clock.cpu_at = Some(cpu);
        }
        let used = cpu.saturating_sub(before);
        if files_changed || used * 100 >= idle * IDLE_CPU_PERCENT {
            clock.idle_since = now;
            clock.cpu_at = Some(cpu);
            return vec![];
        }
        if idle < timeout {
            return vec![];
        }
        self.stalled = true;
        self.state = State::Stopping {
            deadline: now + self.config.grace,
            killed: false,
            by_signal: false,
        };
        let stop = self.deliver_stop(self.config.stop_signal);
        vec![Action::Stalled(idle), stop]
    }

    fn child_exited(
        &mut self,
        outcome: ChildOutcome,
        tree_alive: bool,
        now: Instant,
    ) -> Vec<Action> {
        let before = self.state;
        let ran = match before {
            State::Running { since } => now.saturating_duration_since(since),
            _ => Duration::ZERO,
        };
        self.outcome = Some(outcome);
        if ran >= self.config.restart.stable_after() {
            self.failures = 0;
        }
        let signalled = std::mem::take(&mut self.tree_signalled);
        let mut actions = vec![Action::TakeTerminal];
        if !(tree_alive && self.config.kill_orphans) {
            actions.extend(self.after_drain(now));
            return actions;
        }
        match before {
            // KILL went out already, or the fleet lease may lapse any moment: what is
            // left gets KILL at once.
            State::Stopping { killed: true, .. } => actions.extend(self.kill_tree(now)),
            _ if self.stop == Some(StopReason::LeaseLost) => actions.extend(self.kill_tree(now)),
            // The whole tree got the stop signal: its grace goes on.
            State::Stopping { deadline, .. } if signalled => {
                self.state = State::Draining {
                    deadline,
                    killed: false,
                };
            }
            _ => {
                self.state = State::Draining {
                    deadline: now + self.config.grace,
                    killed: false,
                };
                actions.push(Action::SignalTree(libc::SIGTERM));
            }
        }
        actions
    }

    /// What follows the run that ended with `outcome` at `now`: its `[restart.exit]`
    /// entry, else `restart.policy`; a restart only within the budget (`max` within
    /// `window`, counted at the time the restart would happen).
    fn decide(&self, outcome: ChildOutcome, now: Instant) -> Decision {
        let r = &self.config.restart;
        let status = if self.stalled {
            ExitStatus::Timeout.code()
        } else {
            status_matched(outcome)
        };
        let why = match r.exit.get(&status) {
            Some(rule) => Why::Exit(status, *rule),
            None => Why::Policy(r.when),
        };
        let delay = match why {
            Why::Exit(_, ExitRule::Stop) | Why::Policy(RestartWhen::Never) => None,
            Why::Policy(RestartWhen::OnFailure) if !self.stalled && outcome.success() => None,
            Why::Exit(_, ExitRule::After(delay)) => Some(delay),
            Why::Exit(_, ExitRule::Backoff) | Why::Policy(_) => Some(r.delay(self.failures)),
        };
        let verdict = match delay {
            None => Verdict::Finish,
            Some(delay) => {
                let at = now
                    .checked_add(delay)
                    .unwrap_or(now + Duration::from_secs(86400 * 365));
                let done = match r.window {
                    Some(window) => (self.recent.iter())
                        .filter(|t| at.saturating_duration_since(**t) < window)
                        .count() as u64,
                    None => self.restarts.into(),
                };
                match r.max {
                    Some(max) if done >= max.into() => Verdict::GiveUp {
                        max,
                        window: r.window,
                    },
                    _ => Verdict::Restart {
                        number: self.restarts.saturating_add(1),
                        delay,
                        at,
                    },
                }
            }
        };
        Decision {
            outcome,
            status,
            stalled: self.stalled,
            why,
            verdict,
        }
    }

    /// The child and its group are gone: restart (after its delay), or finish. A stop
    /// ends the restarts whatever the rules say.
    fn after_drain(&mut self, now: Instant) -> Vec<Action> {
        let Some(outcome) = self.outcome.filter(|_| self.stop.is_none()) else {
            self.exit();
            return vec![];
        };
        let decision = self.decide(outcome, now);
        // "never", with no entry matching, goes without saying.
        let mut actions = match decision.why {
            Why::Policy(RestartWhen::Never) => vec![],
            _ => vec![Action::Decided(decision)],
        };
        match decision.verdict {
            Verdict::Restart { delay, at, .. } => {
                if matches!(
                    decision.why,
                    Why::Exit(_, ExitRule::Backoff) | Why::Policy(_)
                ) {
                    self.failures = self.failures.saturating_add(1);
                }
                self.state = State::Backoff { until: at };
                if delay.is_zero() {
                    actions.extend(self.restart(now));
                }
            }
            Verdict::Finish | Verdict::GiveUp { .. } => self.exit(),
        }
        actions
    }

    /// Starts the next run now, and counts it.
    fn restart(&mut self, now: Instant) -> Vec<Action> {
        self.restarts += 1;
        if let (Some(_), Some(window)) = (self.config.restart.max, self.config.restart.window) {
            while self
                .recent
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= window)
            {
                self.recent.pop_front();
            }
            self.recent.push_back(now);
        }
        vec![Action::Spawn]
    }

    fn exit(&mut self) {
        let status = if self.stop == Some(StopReason::LeaseLost) {
            ExitStatus::Unavailable
        } else if self.stop == Some(StopReason::MaxRuntime) || self.stalled {
            ExitStatus::Timeout
        } else {
            self.outcome
                .map(ExitStatus::from_wait)
                .unwrap_or(ExitStatus::Failure)
        };
        self.state = State::Exited(status);
    }
}

/// Sends `sig` to the child or its whole group, as its [`scope`] says.
fn deliver(sig: i32) -> Action {
    match scope(sig) {
        Scope::Child => Action::SignalChild(sig),
        Scope::Group => Action::SignalGroup(sig),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    fn config() -> Config {
        Config {
            grace: GRACE,
            stop_signal: libc::SIGTERM,
            kill_orphans: true,
            job_control: false,
            restart: Restart::NEVER,
            max_runtime: None,
            stall_timeout: None,
        }
    }

    #[test]
    fn a_stop_before_the_start_ends_as_it_would_have_ended_the_child() {
        let restart = Restart {
            when: RestartWhen::Always,
            ..Restart::NEVER
        };
        let config = Config {
            restart,
            ..config()
        };
        let now = Instant::now();
        let killed = ExitStatus::Signaled(15);
        let mut m = Machine::stopped_before_start(config, StopReason::StopRequest, killed, now);
        assert_eq!(m.finished(), Some(ExitStatus::Signaled(15)));
        assert_eq!(m.stop_reason(), Some(StopReason::StopRequest));
        assert_eq!((m.outcome(), m.restarts(), m.deadline()), (None, 0, None));
        // Whatever comes later, nothing starts.
        assert!(m.handle(Event::Signal(libc::SIGINT), now).is_empty());
        assert_eq!(m.finished(), Some(ExitStatus::Signaled(15)));
    }

    fn machine(job_control: bool) -> (Machine, Instant) {
        let now = Instant::now();
        (
            Machine::new(
                Config {
                    job_control,
                    ..config()
                },
                now,
            ),
            now,
        )
    }

    #[test]
    fn a_lost_lease_stops_within_its_grace_and_exits_69() {
        let (mut m, now) = machine(false);
        let grace = Duration::from_secs(2);
        let actions = m.handle(Event::LeaseLost { grace }, now);
        assert_eq!(actions, vec![Action::SignalTree(libc::SIGTERM)]);
        assert_eq!(m.deadline(), Some(now + grace));
        let later = now + grace;
        assert_eq!(
            m.handle(Event::Deadline, later),
            vec![Action::SignalTree(libc::SIGKILL)]
        );
        // Leftovers get no grace: KILL with the child's exit, then the run ends as soon
        // as the tree is empty.
        let actions = m.handle(exited(137, true), later);
        assert!(actions.contains(&Action::SignalTree(libc::SIGKILL)));
        assert_eq!(m.finished(), None);
        m.handle(Event::TreeEmpty, later);
        assert_eq!(m.finished(), Some(ExitStatus::Unavailable));
        assert_eq!(m.stop_reason(), Some(StopReason::LeaseLost));
    }

    #[test]
    fn a_lost_lease_shortens_a_running_stop_and_ends_a_backoff() {
        let (mut m, now) = machine(false);
        m.handle(Event::Signal(libc::SIGTERM), now);
        assert_eq!(m.deadline(), Some(now + GRACE));
        let grace = Duration::from_secs(1);
        assert_eq!(m.handle(Event::LeaseLost { grace }, now), vec![]);
        assert_eq!(m.deadline(), Some(now + grace));
        m.handle(exited(143, false), now);
        assert_eq!(m.finished(), Some(ExitStatus::Unavailable));

        let (mut m, now) = machine(false);
        m.config.restart.when = RestartWhen::Always;
        m.handle(exited(1, false), now);
        assert!(matches!(m.state(), State::Backoff { .. }));
        m.handle(Event::LeaseLost { grace }, now);
        assert_eq!(m.finished(), Some(ExitStatus::Unavailable));
    }

    fn exited(code: i32, tree_alive: bool) -> Event {
        Event::ChildExited {
            outcome: ChildOutcome::Exited(code),
            tree_alive,
        }
    }

    #[test]
    fn forwards_each_forwarded_signal_once() {
        for sig in crate::signals::FORWARDED {
            let (mut m, now) = machine(false);
            let sig = sig as i32;
            let want = if matches!(sig, libc::SIGUSR1 | libc::SIGUSR2) {
                Action::SignalChild(sig)
            } else if classify(sig) == (Class::Forward { stop: true }) {
                // A stop reaches every process of the loop.
                Action::SignalTree(sig)
            } else {
                Action::SignalGroup(sig)
            };
            assert_eq!(m.handle(Event::Signal(sig), now), vec![want]);
        }
    }

    #[test]
    fn usr1_and_usr2_go_to_the_child_alone_even_as_the_stop_signal() {
        let now = Instant::now();
        let mut m = Machine::new(
            Config {
                stop_signal: libc::SIGUSR1,
                ..config()
            },
            now,
        );
        assert_eq!(
            m.handle(Event::Signal(libc::SIGUSR2), now),
            vec![Action::SignalChild(libc::SIGUSR2)]
        );
        assert_eq!(
            m.handle(Event::StopRequest { signal: None }, now),
            vec![Action::SignalChild(libc::SIGUSR1)]
        );
        // The grace still ends with KILL for the whole loop.
        assert_eq!(
            m.handle(Event::Deadline, now + GRACE),
            vec![Action::SignalTree(libc::SIGKILL)]
        );
        // Once the child is gone, its leftovers get group signals only.
        let (mut m, t0) = machine(false);
        m.handle(exited(0, true), t0);
        assert_eq!(m.handle(Event::Signal(libc::SIGUSR1), t0), vec![]);
        assert_eq!(
            m.handle(Event::Signal(libc::SIGHUP), t0),
            vec![Action::SignalGroup(libc::SIGHUP)]
        );
    }

    #[test]
    fn term_starts_grace_then_kill_at_deadline() {
        let (mut m, t0) = machine(false);
        m.handle(Event::Signal(libc::SIGTERM), t0);
        assert_eq!(m.deadline(), Some(t0 + GRACE));
        assert_eq!(
            m.handle(Event::Deadline, t0 + GRACE / 2),
            vec![],
            "not before the deadline"
        );
        assert_eq!(
            m.handle(Event::Deadline, t0 + GRACE),
            vec![Action::SignalTree(libc::SIGKILL)]
        );
        assert_eq!(
            m.deadline(),
            None,
            "KILL is sent once, then no more wake-ups"
        );
        assert_eq!(m.handle(Event::Deadline, t0 + GRACE * 2), vec![]);
        m.handle(
            Event::ChildExited {
                outcome: ChildOutcome::Signaled(libc::SIGKILL),
                tree_alive: false,
            },
            t0 + GRACE,
        );
        assert_eq!(m.finished(), Some(ExitStatus::Signaled(libc::SIGKILL)));
        assert_eq!(m.stop_reason(), Some(StopReason::Signal(libc::SIGTERM)));
    }

    #[test]
    fn second_stop_signal_escalates_at_once() {
        let (mut m, t0) = machine(false);
        assert_eq!(
            m.handle(Event::Signal(libc::SIGINT), t0),
            vec![Action::SignalTree(libc::SIGINT)]
        );
        assert_eq!(
            m.handle(Event::Signal(libc::SIGTERM), t0),
            vec![Action::SignalTree(libc::SIGKILL)]
        );
        assert_eq!(m.deadline(), None);
    }

    #[test]
    fn a_discarded_worktree_stops_like_a_stop_request() {
        let now = Instant::now();
        let mut m = Machine::new(config(), now);
        assert_eq!(
            m.handle(Event::Discarded, now),
            vec![Action::SignalTree(libc::SIGTERM)]
        );
        assert_eq!(m.deadline(), Some(now + GRACE));
        assert_eq!(m.stop_reason(), Some(StopReason::Discarded));
        assert_eq!(m.handle(Event::Discarded, now), vec![], "no escalation");
        assert_eq!(
            m.handle(Event::Deadline, now + GRACE),
            vec![Action::SignalTree(libc::SIGKILL)]
        );
    }

    #[test]
    fn a_kill_request_kills_at_once_even_during_a_stop_and_nothing_restarts() {
        let kill = Event::StopRequest {
            signal: Some(libc::SIGKILL),
        };
        let now = Instant::now();
        let always = Config {
            restart: Restart {
                when: RestartWhen::Always,
                ..Restart::NEVER
            },
            ..config()
        };
        let mut m = Machine::new(always.clone(), now);
        assert_eq!(m.handle(kill, now), vec![Action::SignalTree(libc::SIGKILL)]);
        assert_eq!(m.stop_reason(), Some(StopReason::StopRequest));
        m.handle(exited(137, false), now);
        assert!(m.finished().is_some(), "no restart after a stop");
        // A graceful stop under way (a long grace): the KILL request does not wait for it.
        let mut m = Machine::new(always, now);
        m.handle(Event::StopRequest { signal: None }, now);
        assert_eq!(m.handle(kill, now), vec![Action::SignalTree(libc::SIGKILL)]);
    }

    #[test]
    fn stop_request_sends_the_stop_signal_with_grace() {
        let now = Instant::now();
        let mut m = Machine::new(
            Config {
                stop_signal: libc::SIGINT,
                ..config()
            },
            now,
        );
        assert_eq!(
            m.handle(Event::StopRequest { signal: None }, now),
            vec![Action::SignalTree(libc::SIGINT)]
        );
        assert_eq!(m.deadline(), Some(now + GRACE));
        assert_eq!(m.stop_reason(), Some(StopReason::StopRequest));
        assert_eq!(
            m.handle(Event::StopRequest { signal: None }, now),
            vec![],
            "no escalation"
        );
        // `stop` writes the request and signals the supervisor: one stop, not two.
        assert_eq!(m.handle(Event::Signal(libc::SIGTERM), now), vec![]);
        assert_eq!(m.deadline(), Some(now + GRACE), "the grace still runs");
        // A further signal escalates.
        assert_eq!(
            m.handle(Event::Signal(libc::SIGTERM), now),
            vec![Action::SignalTree(libc::SIGKILL)]
        );
    }

    #[test]
    fn a_stop_request_may_name_the_signal() {
        let (mut m, now) = machine(false);
        assert_eq!(
            m.handle(
                Event::StopRequest {
                    signal: Some(libc::SIGINT)
                },
                now
            ),
            vec![Action::SignalTree(libc::SIGINT)]
        );
        assert_eq!(m.stop_reason(), Some(StopReason::StopRequest));
        assert_eq!(m.deadline(), Some(now + GRACE));
        // The request file of the same stop, seen after it, changes nothing.
        assert_eq!(m.handle(Event::StopRequest { signal: None }, now), vec![]);
        assert_eq!(m.stop_reason(), Some(StopReason::StopRequest));
        // A stop request during a restart's backoff ends the restarts, whatever it names.
        let (mut m, now) = restarting(RestartWhen::Always, None);
        m.handle(exited(1, false), now);
        let request = Event::StopRequest {
            signal: Some(libc::SIGUSR1),
        };
        assert_eq!(m.handle(request, now), vec![]);
        assert_eq!(m.finished(), Some(ExitStatus::Child(1)));
        assert_eq!(m.stop_reason(), Some(StopReason::StopRequest));
    }

    #[test]
    fn leftovers_are_drained() {
        let (mut m, t0) = machine(false);
        assert_eq!(
            m.handle(exited(3, true), t0),
            vec![Action::TakeTerminal, Action::SignalTree(libc::SIGTERM)]
        );
        assert_eq!(m.deadline(), Some(t0 + GRACE));
        assert_eq!(m.finished(), None);
        assert_eq!(m.handle(Event::TreeEmpty, t0), vec![]);
        assert_eq!(m.finished(), Some(ExitStatus::Child(3)));
    }

    #[test]
    fn stubborn_leftovers_get_kill_after_grace() {
        let (mut m, t0) = machine(false);
        m.handle(exited(0, true), t0);
        assert_eq!(
            m.handle(Event::Deadline, t0 + GRACE),
            vec![Action::SignalTree(libc::SIGKILL)]
        );
        // The end of the tree is awaited, KILL_WAIT at most.
        assert_eq!(m.finished(), None);
        assert_eq!(m.deadline(), Some(t0 + GRACE + KILL_WAIT));
        assert_eq!(m.handle(Event::TreeEmpty, t0 + GRACE), vec![]);
        assert_eq!(m.finished(), Some(ExitStatus::Child(0)));
    }

    #[test]
    fn unkillable_leftovers_are_named_and_left() {
        let (mut m, t0) = machine(false);
        m.handle(exited(0, true), t0);
        m.handle(Event::Deadline, t0 + GRACE);
        assert_eq!(
            m.handle(Event::Deadline, t0 + GRACE + KILL_WAIT),
            vec![Action::Unended]
        );
        assert_eq!(m.finished(), Some(ExitStatus::Child(0)));
    }

    #[test]
    fn a_stop_keeps_its_grace_for_what_the_child_leaves() {
        let (mut m, t0) = machine(false);
        m.handle(Event::Signal(libc::SIGTERM), t0);
        // The child exits at once; the rest of the tree got TERM with it already.
        assert_eq!(
            m.handle(
                Event::ChildExited {
                    outcome: ChildOutcome::Signaled(libc::SIGTERM),
                    tree_alive: true
                },
                t0 + GRACE / 2
            ),
            vec![Action::TakeTerminal]
        );
        assert_eq!(m.deadline(), Some(t0 + GRACE), "the stop's grace");
        assert_eq!(
            m.handle(Event::Deadline, t0 + GRACE),
            vec![Action::SignalTree(libc::SIGKILL)]
        );
        // After KILL, what the child leaves gets KILL at once.
        let (mut m, t0) = machine(false);
        m.handle(Event::Signal(libc::SIGTERM), t0);
        m.handle(Event::Deadline, t0 + GRACE);
        assert_eq!(
            m.handle(
                Event::ChildExited {
                    outcome: ChildOutcome::Signaled(libc::SIGKILL),
                    tree_alive: true
                },
                t0 + GRACE
            ),
            vec![Action::TakeTerminal, Action::SignalTree(libc::SIGKILL)]
        );
        assert_eq!(m.deadline(), Some(t0 + GRACE + KILL_WAIT));
    }

    #[test]
    fn leftovers_left_alone_when_configured() {
        let now = Instant::now();
        let mut m = Machine::new(
            Config {
                kill_orphans: false,
                ..config()
            },
            now,
        );
        assert_eq!(m.handle(exited(1, true), now), vec![Action::TakeTerminal]);
        assert_eq!(m.finished(), Some(ExitStatus::Child(1)));
    }

    #[test]
    fn a_stop_under_way_does_not_follow_the_command_stopping() {
        let (mut m, now) = machine(true);
        m.handle(Event::Signal(libc::SIGTERM), now);
        assert_eq!(m.handle(Event::ChildStopped(libc::SIGTTIN), now), vec![]);
        // The grace still ends in KILL.
        assert!(
            m.handle(Event::Deadline, now + Duration::from_secs(3600))
                .contains(&Action::SignalTree(libc::SIGKILL))
        );
    }

    #[test]
    fn job_control_mirrors_child_stops() {
        let (mut m, now) = machine(true);
        assert_eq!(
            m.handle(Event::ChildStopped(libc::SIGTSTP), now),
            vec![Action::StopSelf(libc::SIGTSTP)]
        );
        assert_eq!(
            m.handle(Event::Signal(libc::SIGCONT), now),
            vec![Action::Resume]
        );
        assert!(matches!(m.state(), State::Running { .. }));
        let (mut service, now) = machine(false);
        assert_eq!(
            service.handle(Event::ChildStopped(libc::SIGSTOP), now),
            vec![]
        );
    }

    #[test]
    fn a_job_stop_between_restarts_stops_the_supervisor() {
        let (mut m, now) = restarting(RestartWhen::Always, None);
        m.handle(exited(1, false), now);
        assert!(matches!(m.state(), State::Backoff { .. }));
        assert_eq!(
            m.handle(Event::Signal(libc::SIGTSTP), now),
            vec![Action::StopSelf(libc::SIGTSTP)]
        );
        // Continued: no child to resume; the restart still comes at its time.
        assert_eq!(m.handle(Event::Signal(libc::SIGCONT), now), vec![]);
        let until = m.deadline().unwrap();
        assert_eq!(m.handle(Event::Deadline, until), vec![Action::Spawn]);
    }

    #[test]
    fn stray_signals_are_ignored_not_fatal() {
        let (mut m, now) = machine(false);
        for sig in [
            libc::SIGALRM,
            libc::SIGPIPE,
            libc::SIGVTALRM,
            libc::SIGRTMIN(),
        ] {
            assert_eq!(
                m.handle(Event::Signal(sig), now),
                vec![Action::Ignored(sig)]
            );
        }
        assert!(matches!(m.state(), State::Running { .. }));
    }

    #[test]
    fn every_exit_code_and_signal_maps_through() {
        for code in 0..=255 {
            let (mut m, now) = machine(false);
            m.handle(exited(code, false), now);
            assert_eq!(m.finished().unwrap().code() as i32, code);
        }
        for sig in 1..=64 {
            let (mut m, now) = machine(false);
            m.handle(
                Event::ChildExited {
                    outcome: ChildOutcome::Signaled(sig),
                    tree_alive: false,
                },
                now,
            );
            assert_eq!(m.finished().unwrap().code() as i32, 128 + sig);
        }
    }

    fn restarting(when: RestartWhen, max: Option<u32>) -> (Machine, Instant) {
        let now = Instant::now();
        let m = Machine::new(
            Config {
                restart: Restart {
                    when,
                    max,
                    backoff_initial: Duration::from_secs(1),
                    backoff_max: Duration::from_secs(8),
                    ..Restart::NEVER
                },
                ..config()
            },
            now,
        );
        (m, now)
    }

    #[test]
    fn on_failure_restarts_with_capped_exponential_backoff() {
        let (mut m, mut now) = restarting(RestartWhen::OnFailure, Some(5));
        let mut delays = vec![];
        loop {
            m.handle(exited(1, false), now);
            let Some(until) = m.deadline() else { break };
            delays.push(until - now);
            now = until;
            assert_eq!(m.handle(Event::Deadline, now), vec![Action::Spawn]);
            m.spawned(now);
        }
        let secs: Vec<u64> = delays.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 8], "doubling, capped at backoff_max");
        assert_eq!(m.restarts(), 5);
        assert_eq!(
            m.finished(),
            Some(ExitStatus::Child(1)),
            "the last run's code"
        );
    }

    #[test]
    fn success_ends_on_failure_restarts_but_not_always() {
        let (mut m, now) = restarting(RestartWhen::OnFailure, None);
        m.handle(exited(0, false), now);
        assert_eq!(m.finished(), Some(ExitStatus::Child(0)));
        let (mut m, now) = restarting(RestartWhen::Always, None);
        m.handle(exited(0, false), now);
        assert!(matches!(m.state(), State::Backoff { .. }));
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let (mut m, mut now) = restarting(RestartWhen::Always, None);
        for _ in 0..3 {
            m.handle(exited(1, false), now);
            now = m.deadline().unwrap();
            m.handle(Event::Deadline, now);
            m.spawned(now);
        }
        // Now a long, stable run.
        now += Duration::from_secs(60);
        m.handle(exited(1, false), now);
        assert_eq!(m.deadline().unwrap() - now, Duration::from_secs(1));
    }

    #[test]
    fn an_honoured_stop_request_sends_nothing_and_never_restarts() {
        let (mut m, now) = restarting(RestartWhen::Always, None);
        assert_eq!(m.handle(Event::StopRequestHonoured, now), vec![]);
        assert_eq!(m.deadline(), None, "no grace timer: ralph ends by itself");
        assert_eq!(m.stop_reason(), Some(StopReason::StopRequest));
        // ralph's "Manually stopped" is exit 1, passed through, not restarted.
        m.handle(exited(1, false), now);
        assert_eq!(m.finished(), Some(ExitStatus::Child(1)));
        // Between runs nobody honours it: the restarts end.
        let (mut m, now) = restarting(RestartWhen::Always, None);
        m.handle(exited(1, false), now);
        assert_eq!(m.handle(Event::StopRequestHonoured, now), vec![]);
        assert!(m.finished().is_some());
    }

    #[test]
    fn a_stop_ends_restarts() {
        let (mut m, now) = restarting(RestartWhen::Always, None);
        m.handle(Event::Signal(libc::SIGTERM), now);
        m.handle(exited(143, false), now);
        assert_eq!(m.finished(), Some(ExitStatus::Child(143)));
        // And during the backoff, with no child to signal.
        let (mut m, now) = restarting(RestartWhen::Always, None);
        m.handle(exited(1, false), now);
        assert_eq!(m.handle(Event::StopRequest { signal: None }, now), vec![]);
        assert_eq!(m.finished(), Some(ExitStatus::Child(1)));
    }

    #[test]
    fn max_runtime_stops_gracefully_and_exits_124() {
        let now = Instant::now();
        let mut m = Machine::new(
            Config {
                max_runtime: Some(Duration::from_secs(30)),
                restart: Restart {
                    when: RestartWhen::Always,
                    ..Restart::NEVER
                },
                ..config()
            },
            now,
        );
        assert_eq!(m.deadline(), Some(now + Duration::from_secs(30)));
        let t = now + Duration::from_secs(30);
        assert_eq!(
            m.handle(Event::Deadline, t),
            vec![Action::SignalTree(libc::SIGTERM)]
        );
        assert_eq!(m.stop_reason(), Some(StopReason::MaxRuntime));
        m.handle(
            Event::ChildExited {
                outcome: ChildOutcome::Signaled(libc::SIGTERM),
                tree_alive: false,
            },
            t,
        );
        assert_eq!(m.finished(), Some(ExitStatus::Timeout));
    }

    fn ruled(
        when: RestartWhen,
        max: Option<u32>,
        window: Option<Duration>,
        exit: &[(u8, ExitRule)],
    ) -> (Machine, Instant) {
        let now = Instant::now();
        let restart = Restart {
            when,
            max,
            window,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
            exit: exit.iter().copied().collect(),
        };
        (
            Machine::new(
                Config {
                    restart,
                    ..config()
                },
                now,
            ),
            now,
        )
    }

    const MIN: Duration = Duration::from_secs(60);

    /// The decision the machine announced among `actions`.
    fn decided(actions: &[Action]) -> Decision {
        let found = actions.iter().find_map(|a| match a {
            Action::Decided(d) => Some(*d),
            _ => None,
        });
        found.unwrap_or_else(|| panic!("no decision in {actions:?}"))
    }

    /// Waits out the backoff and spawns; returns the time of the spawn.
    fn restart_at_deadline(m: &mut Machine) -> Instant {
        let until = m.deadline().expect("waiting");
        assert_eq!(m.handle(Event::Deadline, until), vec![Action::Spawn]);
        m.spawned(until);
        until
    }

    #[test]
    fn exit_entries_override_the_policy() {
        let rules = [
            (75, ExitRule::After(30 * MIN)),
            (3, ExitRule::Backoff),
            (0, ExitRule::Stop),
        ];
        let (mut m, t0) = ruled(RestartWhen::Never, None, None, &rules);
        // 3: restart after the backoff, though the policy says never.
        let d = decided(&m.handle(exited(3, false), t0));
        assert_eq!(d.why, Why::Exit(3, ExitRule::Backoff));
        let one = Duration::from_secs(1);
        assert_eq!(
            d.verdict,
            Verdict::Restart {
                number: 1,
                delay: one,
                at: t0 + one
            }
        );
        let t = restart_at_deadline(&mut m);
        // 75: the fixed delay; not before it is over.
        let d = decided(&m.handle(exited(75, false), t));
        assert_eq!(d.status, 75);
        assert_eq!(d.why, Why::Exit(75, ExitRule::After(30 * MIN)));
        assert!(
            matches!(d.verdict, Verdict::Restart { number: 2, delay, .. } if delay == 30 * MIN)
        );
        assert_eq!(m.deadline(), Some(t + 30 * MIN));
        assert_eq!(m.handle(Event::Deadline, t + 29 * MIN), vec![]);
        let t = restart_at_deadline(&mut m);
        // 3 again: the backoff went on from where it was (a fixed delay leaves it be).
        let d = decided(&m.handle(exited(3, false), t));
        assert!(matches!(d.verdict, Verdict::Restart { number: 3, delay, .. } if delay == 2 * one));
        let t = restart_at_deadline(&mut m);
        // 0: stop.
        let d = decided(&m.handle(exited(0, false), t));
        assert_eq!(
            (d.why, d.verdict),
            (Why::Exit(0, ExitRule::Stop), Verdict::Finish)
        );
        assert_eq!(m.finished(), Some(ExitStatus::Child(0)));
        assert_eq!(m.restarts(), 3);
        // An exit no entry matches follows the policy: "never", said by nobody.
        let (mut m, t0) = ruled(RestartWhen::Never, None, None, &rules);
        assert_eq!(m.handle(exited(4, false), t0), vec![Action::TakeTerminal]);
        assert_eq!(m.finished(), Some(ExitStatus::Child(4)));
    }

    #[test]
    fn a_stop_entry_ends_what_the_policy_would_restart() {
        let (mut m, t0) = ruled(RestartWhen::Always, None, None, &[(0, ExitRule::Stop)]);
        let d = decided(&m.handle(exited(1, false), t0));
        assert_eq!(d.why, Why::Policy(RestartWhen::Always));
        let t = restart_at_deadline(&mut m);
        assert_eq!(
            decided(&m.handle(exited(0, false), t)).verdict,
            Verdict::Finish
        );
        assert_eq!(m.finished(), Some(ExitStatus::Child(0)));
        // on-failure after success: finish, and say why.
        let (mut m, t0) = ruled(RestartWhen::OnFailure, None, None, &[]);
        let d = decided(&m.handle(exited(0, false), t0));
        assert_eq!(
            (d.why, d.verdict),
            (Why::Policy(RestartWhen::OnFailure), Verdict::Finish)
        );
    }

    #[test]
    fn death_by_signal_n_matches_128_plus_n_and_124_is_matchable() {
        let killed = |sig| Event::ChildExited {
            outcome: ChildOutcome::Signaled(sig),
            tree_alive: false,
        };
        let rules = [
            (137, ExitRule::Stop),
            (143, ExitRule::After(MIN)),
            (124, ExitRule::After(2 * MIN)),
        ];
        let (mut m, t0) = ruled(RestartWhen::Always, None, None, &rules);
        // A TERM the supervisor did not send: not a stop, so the entry decides.
        let d = decided(&m.handle(killed(libc::SIGTERM), t0));
        assert_eq!(
            (d.status, d.why),
            (143, Why::Exit(143, ExitRule::After(MIN)))
        );
        let t = restart_at_deadline(&mut m);
        assert_eq!(t, t0 + MIN);
        // 124 (a stall ends a run with it; so does a command's own timeout).
        let d = decided(&m.handle(exited(124, false), t));
        assert_eq!(d.why, Why::Exit(124, ExitRule::After(2 * MIN)));
        let t = restart_at_deadline(&mut m);
        let d = decided(&m.handle(killed(libc::SIGKILL), t));
        assert_eq!((d.status, d.verdict), (137, Verdict::Finish));
        assert_eq!(m.finished(), Some(ExitStatus::Signaled(libc::SIGKILL)));
        assert_eq!(
            status_matched(ChildOutcome::Exited(300)),
            44,
            "codes are 8 bits"
        );
    }

    #[test]
    fn a_zero_delay_restarts_at_once() {
        let (mut m, t0) = ruled(
            RestartWhen::Never,
            None,
            None,
            &[(1, ExitRule::After(Duration::ZERO))],
        );
        let actions = m.handle(exited(1, false), t0);
        assert_eq!(actions.last(), Some(&Action::Spawn), "{actions:?}");
        assert_eq!(m.restarts(), 1);
    }

    #[test]
    fn the_window_budget_gives_up_with_the_last_status() {
        let window = Some(10 * Duration::from_secs(1));
        let (mut m, mut t) = ruled(RestartWhen::Always, Some(2), window, &[]);
        for _ in 0..2 {
            let d = decided(&m.handle(exited(7, false), t));
            assert!(matches!(d.verdict, Verdict::Restart { .. }), "{d:?}");
            t = restart_at_deadline(&mut m);
        }
        // The third restart would be the third within 10 s.
        let d = decided(&m.handle(exited(7, false), t));
        assert_eq!(d.verdict, Verdict::GiveUp { max: 2, window });
        assert_eq!(m.finished(), Some(ExitStatus::Child(7)));
        assert_eq!(m.restarts(), 2);
        // Without a window, `max` counts the whole run, and says so the same way.
        let (mut m, mut t) = ruled(RestartWhen::Always, Some(1), None, &[]);
        m.handle(exited(7, false), t);
        t = restart_at_deadline(&mut m);
        t += 1000 * MIN;
        let d = decided(&m.handle(exited(7, false), t));
        assert_eq!(
            d.verdict,
            Verdict::GiveUp {
                max: 1,
                window: None
            }
        );
        // `max = 0`: not one restart.
        let (mut m, t) = ruled(RestartWhen::Always, Some(0), window, &[]);
        assert_eq!(
            decided(&m.handle(exited(7, false), t)).verdict,
            Verdict::GiveUp { max: 0, window }
        );
    }

    #[test]
    fn the_window_slides() {
        let sec = Duration::from_secs(1);
        // One restart per 10 s: delays of 11 s keep each restart alone in its window.
        let (mut m, mut t) = ruled(
            RestartWhen::Never,
            Some(1),
            Some(10 * sec),
            &[(1, ExitRule::After(11 * sec))],
        );
        for number in 1..=5 {
            let d = decided(&m.handle(exited(1, false), t));
            assert!(
                matches!(d.verdict, Verdict::Restart { number: n, .. } if n == number),
                "{d:?}"
            );
            t = restart_at_deadline(&mut m);
        }
        // Counted at the time the restart would happen: a long run frees the budget...
        let (mut m, t0) = ruled(RestartWhen::Always, Some(1), Some(10 * sec), &[]);
        m.handle(exited(1, false), t0);
        let t = restart_at_deadline(&mut m) + 20 * sec;
        let d = decided(&m.handle(exited(1, false), t));
        assert!(
            matches!(d.verdict, Verdict::Restart { number: 2, .. }),
            "{d:?}"
        );
        // ...a quick exit after it does not.
        let t = restart_at_deadline(&mut m);
        let d = decided(&m.handle(exited(1, false), t));
        assert!(matches!(d.verdict, Verdict::GiveUp { max: 1, .. }), "{d:?}");
    }

    #[test]
    fn deliberate_stops_never_restart_whatever_the_entries() {
        let rules = [
            (143, ExitRule::Backoff),
            (130, ExitRule::Backoff),
            (124, ExitRule::Backoff),
            (1, ExitRule::After(MIN)),
        ];
        let killed = |sig| Event::ChildExited {
            outcome: ChildOutcome::Signaled(sig),
            tree_alive: false,
        };
        let stops = [
            (
                Event::Signal(libc::SIGTERM),
                libc::SIGTERM,
                StopReason::Signal(libc::SIGTERM),
            ),
            (
                Event::Signal(libc::SIGINT),
                libc::SIGINT,
                StopReason::Signal(libc::SIGINT),
            ),
            (
                Event::StopRequest { signal: None },
                libc::SIGTERM,
                StopReason::StopRequest,
            ),
        ];
        for (stop, sig, reason) in stops {
            let (mut m, t0) = ruled(RestartWhen::Always, None, None, &rules);
            m.handle(stop, t0);
            let actions = m.handle(killed(sig), t0);
            assert!(
                !actions
                    .iter()
                    .any(|a| matches!(a, Action::Decided(_) | Action::Spawn)),
                "{actions:?}"
            );
            assert_eq!(m.finished(), Some(ExitStatus::Signaled(sig)));
            assert_eq!(m.stop_reason(), Some(reason));
            // The same stop while waiting between runs: no child, the run is over.
            let (mut m, t0) = ruled(RestartWhen::Always, None, None, &rules);
            m.handle(exited(1, false), t0);
            assert_eq!(m.handle(stop, t0), vec![]);
            assert_eq!(m.finished(), Some(ExitStatus::Child(1)));
            assert_eq!(m.stop_reason(), Some(reason));
        }
        // max_runtime: 124, even with an entry that restarts after 124.
        let (mut m, t0) = ruled(RestartWhen::Always, None, None, &rules);
        m.config.max_runtime = Some(MIN);
        m.runtime_deadline = Some(t0 + MIN);
        m.handle(Event::Deadline, t0 + MIN);
        let actions = m.handle(killed(libc::SIGTERM), t0 + MIN);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Decided(_) | Action::Spawn)),
            "{actions:?}"
        );
        assert_eq!(m.finished(), Some(ExitStatus::Timeout));
    }

    #[test]
    fn max_runtime_expires_during_a_wait() {
        let (mut m, t0) = ruled(
            RestartWhen::Never,
            None,
            None,
            &[(75, ExitRule::After(30 * MIN))],
        );
        m.config.max_runtime = Some(MIN);
        m.runtime_deadline = Some(t0 + MIN);
        m.handle(exited(75, false), t0 + Duration::from_secs(10));
        assert_eq!(m.deadline(), Some(t0 + MIN), "the earlier of the two");
        assert_eq!(m.handle(Event::Deadline, t0 + MIN), vec![]);
        assert_eq!(m.finished(), Some(ExitStatus::Timeout));
        assert_eq!(m.stop_reason(), Some(StopReason::MaxRuntime));
    }

    // The stall watchdog.

    const SEC: Duration = Duration::from_secs(1);

    fn stalling(
        timeout: Duration,
        exit: &[(u8, ExitRule)],
        when: RestartWhen,
    ) -> (Machine, Instant) {
        let (mut m, t0) = ruled(when, None, None, exit);
        m.config.stall_timeout = Some(timeout);
        m.stall = Some(StallClock::new(t0));
        (m, t0)
    }

    fn sample(m: &mut Machine, at: Instant, cpu: Duration, files_changed: bool) -> Vec<Action> {
        assert!(m.activity_due(at), "a sample is due at {at:?}");
        m.handle(Event::Activity { cpu, files_changed }, at)
    }

    fn term_killed() -> Event {
        Event::ChildExited {
            outcome: ChildOutcome::Signaled(libc::SIGTERM),
            tree_alive: false,
        }
    }

    #[test]
    fn stall_checks_are_coarse() {
        assert_eq!(stall_check_interval(SEC), SEC);
        assert_eq!(stall_check_interval(Duration::from_millis(300)), SEC);
        assert_eq!(stall_check_interval(100 * SEC), 10 * SEC);
        assert_eq!(stall_check_interval(15 * MIN), MIN);
        assert_eq!(stall_check_interval(24 * 60 * MIN), MIN);
    }

    #[test]
    fn without_a_stall_timeout_nothing_is_sampled() {
        let (mut m, t0) = machine(false);
        assert_eq!(m.deadline(), None, "no wake-up at all");
        assert!(!m.activity_due(t0 + MIN));
        // A stray sample changes nothing.
        let busy = Event::Activity {
            cpu: Duration::ZERO,
            files_changed: false,
        };
        assert_eq!(m.handle(busy, t0 + 60 * MIN), vec![]);
        assert_eq!(m.state(), State::Running { since: t0 });
    }

    #[test]
    fn an_idle_run_is_stopped_as_stalled_and_ends_with_124() {
        let (mut m, t0) = stalling(10 * SEC, &[], RestartWhen::Never);
        // The baseline is taken at once; then a sample every second.
        assert_eq!(m.deadline(), Some(t0));
        let cpu = 5 * SEC; // whatever the tree used before
        assert_eq!(sample(&mut m, t0, cpu, true), vec![]);
        for s in 1..10 {
            assert_eq!(m.deadline(), Some(t0 + s * SEC));
            assert!(!m.activity_due(t0 + s * SEC - Duration::from_millis(1)));
            // Timers: below 1 % of one CPU.
            let used = Duration::from_millis(9 * u64::from(s));
            assert_eq!(
                sample(&mut m, t0 + s * SEC, cpu + used, false),
                vec![],
                "{s}"
            );
        }
        let at = t0 + 10 * SEC;
        assert_eq!(
            sample(&mut m, at, cpu + Duration::from_millis(95), false),
            vec![Action::Stalled(10 * SEC), Action::SignalTree(libc::SIGTERM)]
        );
        assert!(matches!(m.state(), State::Stopping { .. }));
        assert_eq!(m.deadline(), Some(at + GRACE), "the grace, then KILL");
        assert!(!m.activity_due(at + GRACE), "no samples while stopping");
        assert_eq!(
            m.handle(Event::Deadline, at + GRACE),
            vec![Action::SignalTree(libc::SIGKILL)]
        );
        m.handle(
            Event::ChildExited {
                outcome: ChildOutcome::Signaled(libc::SIGKILL),
                tree_alive: false,
            },
            at + GRACE,
        );
        assert_eq!(m.finished(), Some(ExitStatus::Timeout));
        assert_eq!(m.stop_reason(), Some(StopReason::Stall));
    }

    #[test]
    fn cpu_use_or_a_changed_file_starts_the_clock_over() {
        let (mut m, t0) = stalling(10 * SEC, &[], RestartWhen::Never);
        sample(&mut m, t0, Duration::ZERO, false);
        for s in 1..=5 {
            assert_eq!(sample(&mut m, t0 + s * SEC, Duration::ZERO, false), vec![]);
        }
        // 59 ms over the 6 s idle so far: less than 1 %, still idle.
        let cpu = Duration::from_millis(59);
        assert_eq!(sample(&mut m, t0 + 6 * SEC, cpu, false), vec![]);
        // 1 ms more over 7 s, 60 ms is not 1 % any more; 71 ms is: work.
        let cpu = Duration::from_millis(71);
        assert_eq!(sample(&mut m, t0 + 7 * SEC, cpu, false), vec![]);
        for s in 8..=16 {
            assert_eq!(sample(&mut m, t0 + s * SEC, cpu, false), vec![], "{s}");
        }
        // A file changed: the clock starts over again.
        assert_eq!(sample(&mut m, t0 + 17 * SEC, cpu, true), vec![]);
        for s in 18..=26 {
            assert_eq!(sample(&mut m, t0 + s * SEC, cpu, false), vec![], "{s}");
        }
        let stalled = sample(&mut m, t0 + 27 * SEC, cpu, false);
        assert_eq!(stalled[0], Action::Stalled(10 * SEC));
        // A total that drops (a busy process auto-reaped, its time lost) is the new
        // base: use after it counts in full.
        let (mut m, t0) = stalling(10 * SEC, &[], RestartWhen::Never);
        sample(&mut m, t0, 5 * SEC, false);
        assert_eq!(sample(&mut m, t0 + SEC, SEC, false), vec![]);
        for s in 2..=9 {
            assert_eq!(sample(&mut m, t0 + s * SEC, SEC, false), vec![], "{s}");
        }
        let more = SEC + Duration::from_millis(100);
        assert_eq!(
            sample(&mut m, t0 + 10 * SEC, more, false),
            vec![],
            "1 % of 10 s"
        );
        // A busy tree never stalls: 20 ms a second is 2 %.
        let (mut m, t0) = stalling(10 * SEC, &[], RestartWhen::Never);
        sample(&mut m, t0, Duration::ZERO, false);
        for s in 1..=100 {
            let cpu = Duration::from_millis(20 * u64::from(s));
            assert_eq!(sample(&mut m, t0 + s * SEC, cpu, false), vec![], "{s}");
        }
    }

    #[test]
    fn a_stall_is_status_124_for_the_restart_rules() {
        let stall = |m: &mut Machine, t0: Instant| {
            sample(m, t0, Duration::ZERO, false);
            for s in 1..=10 {
                sample(m, t0 + s * SEC, Duration::ZERO, false);
            }
            assert!(matches!(m.state(), State::Stopping { .. }));
            m.handle(term_killed(), t0 + 11 * SEC)
        };
        // `124 = "restart"`: restarted, not blocked as a stop would be.
        let (mut m, t0) = stalling(10 * SEC, &[(124, ExitRule::Backoff)], RestartWhen::Never);
        let d = decided(&stall(&mut m, t0));
        assert_eq!((d.status, d.stalled), (124, true));
        assert_eq!(d.why, Why::Exit(124, ExitRule::Backoff));
        assert!(matches!(d.verdict, Verdict::Restart { number: 1, .. }));
        let t1 = restart_at_deadline(&mut m);
        assert_eq!(m.stop_reason(), None, "the new run has not stalled");
        assert_eq!(m.deadline(), Some(t1), "a new baseline at once");
        // The new run ends by itself: its own status.
        m.handle(exited(0, false), t1 + SEC);
        assert_eq!(m.finished(), Some(ExitStatus::Child(0)));
        assert_eq!(m.stop_reason(), None);
        // on-failure: 124 is a failure (whatever signal ended the run).
        let (mut m, t0) = stalling(10 * SEC, &[], RestartWhen::OnFailure);
        let d = decided(&stall(&mut m, t0));
        assert_eq!(d.why, Why::Policy(RestartWhen::OnFailure));
        assert!(matches!(d.verdict, Verdict::Restart { .. }));
        // `124 = "stop"`, or no rule with "never": the run ends with 124.
        for (rules, when) in [
            (&[(124, ExitRule::Stop)][..], RestartWhen::Always),
            (&[][..], RestartWhen::Never),
        ] {
            let (mut m, t0) = stalling(10 * SEC, rules, when);
            stall(&mut m, t0);
            assert_eq!(m.finished(), Some(ExitStatus::Timeout));
            assert_eq!(m.stop_reason(), Some(StopReason::Stall));
        }
    }

    #[test]
    fn a_stop_during_a_stall_stop_ends_the_restarts() {
        for stop in [
            Event::Signal(libc::SIGTERM),
            Event::StopRequest { signal: None },
        ] {
            let (mut m, t0) = stalling(10 * SEC, &[], RestartWhen::Always);
            sample(&mut m, t0, Duration::ZERO, false);
            for s in 1..=10 {
                sample(&mut m, t0 + s * SEC, Duration::ZERO, false);
            }
            assert_eq!(m.handle(stop, t0 + 11 * SEC), vec![]);
            let actions = m.handle(term_killed(), t0 + 12 * SEC);
            assert!(
                !actions
                    .iter()
                    .any(|a| matches!(a, Action::Decided(_) | Action::Spawn)),
                "{actions:?}"
            );
            assert_eq!(m.finished(), Some(ExitStatus::Timeout));
            assert!(matches!(
                m.stop_reason(),
                Some(StopReason::Signal(_) | StopReason::StopRequest)
            ));
        }
    }

    #[test]
    fn the_stall_clock_pauses_while_the_job_is_stopped() {
        let (mut m, t0) = stalling(10 * SEC, &[], RestartWhen::Never);
        m.config.job_control = true;
        sample(&mut m, t0, Duration::ZERO, false);
        for s in 1..=5 {
            sample(&mut m, t0 + s * SEC, Duration::ZERO, false);
        }
        // Ctrl-Z at 5.5 s; `fg` an hour later.
        let stopped = t0 + 5 * SEC + SEC / 2;
        assert_eq!(
            m.handle(Event::ChildStopped(libc::SIGTSTP), stopped),
            vec![Action::StopSelf(libc::SIGTSTP)]
        );
        assert_eq!(m.deadline(), None, "no samples while stopped");
        assert!(!m.activity_due(stopped + 60 * MIN));
        let fg = stopped + 60 * MIN;
        assert_eq!(
            m.handle(Event::Signal(libc::SIGCONT), fg),
            vec![Action::Resume]
        );
        // 5.5 s of the 10 were left: samples go on where they were.
        assert_eq!(m.deadline(), Some(fg + SEC / 2));
        for s in 0..4 {
            let at = fg + SEC / 2 + s * SEC;
            assert_eq!(sample(&mut m, at, Duration::ZERO, false), vec![], "{s}");
        }
        let stalled = sample(&mut m, fg + SEC / 2 + 4 * SEC, Duration::ZERO, false);
        assert_eq!(stalled[0], Action::Stalled(10 * SEC));
    }
}
