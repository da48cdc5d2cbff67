//! The supervisor's decisions, as a pure state machine.
//!
//! Events come in (a signal, the child's exit or stop, the group emptying, a deadline);
//! actions come out (signal the group, stop ourselves, finish). No system call happens
//! here, so every transition is unit-tested without processes; the event loop in
//! [`super`] turns the real world into events and actions back into system calls.
//!
//! ```text
//!   Running ──TERM/INT──▶ Stopping{deadline} ──deadline or 2nd TERM/INT──▶ (KILL sent)
//!      │                        │
//!      └──────child exits───────┴──▶ Draining{deadline} (leftover group members got TERM)
//!                                        │ group empty, or deadline (KILL sent)
//!                                        ▼
//!                                      Exited(status)
//! ```

use std::time::{Duration, Instant};

use crate::exit::{ChildOutcome, ExitStatus};
use crate::signals::{Class, classify};

/// Fixed settings of one supervision.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// TERM→KILL grace, for stops and for leftover group members.
    pub grace: Duration,
    /// Send TERM then KILL to group members left after the child exits.
    pub kill_orphans: bool,
    /// Stdin is our controlling terminal: mirror the child's stops (shell job control).
    pub job_control: bool,
}

/// Where the supervision is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The child runs.
    Running,
    /// A stop began; at `deadline` the group gets SIGKILL (once: `killed`).
    Stopping { deadline: Instant, killed: bool },
    /// The child exited; leftover group members got TERM and get KILL at `deadline`.
    Draining { deadline: Instant },
    /// Done: release the lock and exit.
    Exited(ExitStatus),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A signal was sent to the supervisor (never SIGCHLD: that becomes the two below).
    Signal(i32),
    /// The child ended; `group_alive`: members of its process group remain.
    ChildExited {
        outcome: ChildOutcome,
        group_alive: bool,
    },
    /// The child was stopped by this signal.
    ChildStopped(i32),
    /// The child's process group has no members left.
    GroupEmpty,
    /// The current deadline passed.
    Deadline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `killpg(child_pgid, sig)`.
    SignalGroup(i32),
    /// Take the terminal back and stop ourselves with this signal, so the shell sees the
    /// job stopped; returns when we are continued.
    StopSelf(i32),
    /// We were continued: hand the terminal to the child (if ours) and continue it.
    Resume,
    /// The child is gone: take the terminal back if the child had it.
    TakeTerminal,
    /// Log that a signal was ignored.
    Ignored(i32),
}

#[derive(Debug)]
pub struct Machine {
    config: Config,
    state: State,
    outcome: Option<ChildOutcome>,
}

impl Machine {
    pub fn new(config: Config) -> Machine {
        Machine {
            config,
            state: State::Running,
            outcome: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The exit status once [`State::Exited`].
    pub fn finished(&self) -> Option<ExitStatus> {
        match self.state {
            State::Exited(status) => Some(status),
            _ => None,
        }
    }

    /// How the child ended, once it has.
    pub fn outcome(&self) -> Option<ChildOutcome> {
        self.outcome
    }

    /// When the event loop must wake up even if nothing happens.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Stopping {
                deadline,
                killed: false,
            } => Some(deadline),
            State::Draining { deadline } => Some(deadline),
            _ => None,
        }
    }

    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let grace = self.config.grace;
        match (self.state, event) {
            (State::Exited(_), _) => vec![],

            (State::Draining { .. }, Event::GroupEmpty) => {
                self.exit();
                vec![]
            }
            (State::Draining { .. }, Event::Deadline) => {
                self.exit();
                vec![Action::SignalGroup(libc::SIGKILL)]
            }
            (State::Draining { .. }, Event::Signal(sig))
                if classify(sig) == (Class::Forward { stop: true }) =>
            {
                self.exit();
                vec![Action::SignalGroup(libc::SIGKILL)]
            }

            (
                _,
                Event::ChildExited {
                    outcome,
                    group_alive,
                },
            ) => {
                self.outcome = Some(outcome);
                if group_alive && self.config.kill_orphans {
                    self.state = State::Draining {
                        deadline: now + grace,
                    };
                    vec![Action::TakeTerminal, Action::SignalGroup(libc::SIGTERM)]
                } else {
                    self.exit();
                    vec![Action::TakeTerminal]
                }
            }

            (_, Event::ChildStopped(sig)) => {
                if self.config.job_control {
                    vec![Action::StopSelf(sig)]
                } else {
                    vec![]
                }
            }

            (State::Stopping { killed: false, .. }, Event::Deadline) => {
                self.state = State::Stopping {
                    deadline: now,
                    killed: true,
                };
                vec![Action::SignalGroup(libc::SIGKILL)]
            }

            (state, Event::Signal(sig)) => match classify(sig) {
                Class::Forward { stop: true } => match state {
                    State::Running => {
                        self.state = State::Stopping {
                            deadline: now + grace,
                            killed: false,
                        };
                        vec![Action::SignalGroup(sig)]
                    }
                    State::Stopping { killed: false, .. } => {
                        // A second stop signal escalates at once.
                        self.state = State::Stopping {
                            deadline: now,
                            killed: true,
                        };
                        vec![Action::SignalGroup(libc::SIGKILL)]
                    }
                    _ => vec![Action::SignalGroup(sig)],
                },
                Class::Forward { stop: false } | Class::JobStop => vec![Action::SignalGroup(sig)],
                Class::Continue => vec![Action::Resume],
                Class::Child => vec![],
                Class::Ignore => vec![Action::Ignored(sig)],
            },

            (_, Event::GroupEmpty | Event::Deadline) => vec![],
        }
    }

    fn exit(&mut self) {
        let status = self
            .outcome
            .map(ExitStatus::from_wait)
            .unwrap_or(ExitStatus::Failure);
        self.state = State::Exited(status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    fn machine(job_control: bool) -> Machine {
        Machine::new(Config {
            grace: GRACE,
            kill_orphans: true,
            job_control,
        })
    }

    fn exited(code: i32, group_alive: bool) -> Event {
        Event::ChildExited {
            outcome: ChildOutcome::Exited(code),
            group_alive,
        }
    }

    #[test]
    fn forwards_each_forwarded_signal_once() {
        let now = Instant::now();
        for sig in crate::signals::FORWARDED {
            let mut m = machine(false);
            assert_eq!(
                m.handle(Event::Signal(sig as i32), now),
                vec![Action::SignalGroup(sig as i32)]
            );
        }
    }

    #[test]
    fn term_starts_grace_then_kill_at_deadline() {
        let t0 = Instant::now();
        let mut m = machine(false);
        m.handle(Event::Signal(libc::SIGTERM), t0);
        assert_eq!(m.deadline(), Some(t0 + GRACE));
        assert_eq!(
            m.handle(Event::Deadline, t0 + GRACE),
            vec![Action::SignalGroup(libc::SIGKILL)]
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
                group_alive: false,
            },
            t0 + GRACE,
        );
        assert_eq!(m.finished(), Some(ExitStatus::Signaled(libc::SIGKILL)));
    }

    #[test]
    fn second_stop_signal_escalates_at_once() {
        let t0 = Instant::now();
        let mut m = machine(false);
        assert_eq!(
            m.handle(Event::Signal(libc::SIGINT), t0),
            vec![Action::SignalGroup(libc::SIGINT)]
        );
        assert_eq!(
            m.handle(Event::Signal(libc::SIGTERM), t0),
            vec![Action::SignalGroup(libc::SIGKILL)]
        );
        assert_eq!(m.deadline(), None);
    }

    #[test]
    fn leftover_group_members_are_drained() {
        let t0 = Instant::now();
        let mut m = machine(false);
        assert_eq!(
            m.handle(exited(3, true), t0),
            vec![Action::TakeTerminal, Action::SignalGroup(libc::SIGTERM)]
        );
        assert_eq!(m.deadline(), Some(t0 + GRACE));
        assert_eq!(m.finished(), None);
        assert_eq!(m.handle(Event::GroupEmpty, t0), vec![]);
        assert_eq!(m.finished(), Some(ExitStatus::Child(3)));
    }

    #[test]
    fn stubborn_leftovers_get_kill_after_grace() {
        let t0 = Instant::now();
        let mut m = machine(false);
        m.handle(exited(0, true), t0);
        assert_eq!(
            m.handle(Event::Deadline, t0 + GRACE),
            vec![Action::SignalGroup(libc::SIGKILL)]
        );
        assert_eq!(m.finished(), Some(ExitStatus::Child(0)));
    }

    #[test]
    fn leftovers_left_alone_when_configured() {
        let mut m = Machine::new(Config {
            grace: GRACE,
            kill_orphans: false,
            job_control: false,
        });
        assert_eq!(
            m.handle(exited(1, true), Instant::now()),
            vec![Action::TakeTerminal]
        );
        assert_eq!(m.finished(), Some(ExitStatus::Child(1)));
    }

    #[test]
    fn job_control_mirrors_child_stops() {
        let now = Instant::now();
        let mut m = machine(true);
        assert_eq!(
            m.handle(Event::ChildStopped(libc::SIGTSTP), now),
            vec![Action::StopSelf(libc::SIGTSTP)]
        );
        assert_eq!(
            m.handle(Event::Signal(libc::SIGCONT), now),
            vec![Action::Resume]
        );
        assert_eq!(m.state(), State::Running);
        let mut service = machine(false);
        assert_eq!(
            service.handle(Event::ChildStopped(libc::SIGSTOP), now),
            vec![]
        );
    }

    #[test]
    fn stray_signals_are_ignored_not_fatal() {
        let mut m = machine(false);
        for sig in [
            libc::SIGALRM,
            libc::SIGPIPE,
            libc::SIGVTALRM,
            libc::SIGRTMIN(),
        ] {
            assert_eq!(
                m.handle(Event::Signal(sig), Instant::now()),
                vec![Action::Ignored(sig)]
            );
        }
        assert_eq!(m.state(), State::Running);
    }

    #[test]
    fn every_exit_code_and_signal_maps_through() {
        for code in 0..=255 {
            let mut m = machine(false);
            m.handle(exited(code, false), Instant::now());
            assert_eq!(m.finished().unwrap().code() as i32, code);
        }
        for sig in 1..=31 {
            let mut m = machine(false);
            m.handle(
                Event::ChildExited {
                    outcome: ChildOutcome::Signaled(sig),
                    group_alive: false,
                },
                Instant::now(),
            );
            assert_eq!(m.finished().unwrap().code() as i32, 128 + sig);
        }
    }
}
