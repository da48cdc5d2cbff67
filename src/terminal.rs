//! The controlling terminal, shared with a child that runs in its own process group.
//!
//! When `ralph-supervise run` is typed at a shell, the shell made the supervisor's
//! process group the terminal's foreground group. The child runs in a group of its own
//! (so that signals to it never hit the supervisor), so the supervisor hands it the
//! terminal: Ctrl-C and Ctrl-Z then reach the child only, and a full-screen program can
//! own the screen. When the child stops, the supervisor takes the terminal back and stops
//! itself, so the shell sees the job stopped; when continued, it hands the terminal back.
//! All signals are blocked in the supervisor, so its own `tcsetpgrp` from the background
//! never raises SIGTTOU.

use std::io::IsTerminal;
use std::os::fd::{AsFd, RawFd};

use nix::sys::signal::{SigSet, Signal, kill, raise};
use nix::sys::termios::tcgetsid;
use nix::unistd::{Pid, getpgrp, getpid, getsid, tcgetpgrp, tcsetpgrp};

/// Standard input, when it is our controlling terminal.
#[derive(Debug, Clone, Copy)]
pub struct Terminal {
    fd: RawFd,
}

impl Terminal {
    /// Stdin, if it is a terminal and the controlling terminal of our session (job
    /// control applies). Under systemd, in CI or with redirected stdin: `None`.
    pub fn detect() -> Option<Terminal> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let session = tcgetsid(stdin.as_fd()).ok()?;
        (getsid(None).ok()? == session).then_some(Terminal { fd: 0 })
    }

    /// The terminal (stdin: never closed by us, so always valid to use).
    fn fd(&self) -> std::io::Stdin {
        std::io::stdin()
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd
    }

    /// Whether our process group is the terminal's foreground group.
    pub fn is_foreground(&self) -> bool {
        tcgetpgrp(self.fd()).ok() == Some(getpgrp())
    }

    /// Whether the terminal's foreground group is `pgid`.
    pub fn foreground_is(&self, pgid: Pid) -> bool {
        tcgetpgrp(self.fd()).ok() == Some(pgid)
    }

    /// Makes `pgid` the foreground group. Errors (the terminal went away) are ignored:
    /// there is nothing better to do than carry on.
    pub fn give_to(&self, pgid: Pid) {
        let _ = tcsetpgrp(self.fd(), pgid);
    }

    /// Makes our own group the foreground group again.
    pub fn take_back(&self) {
        let _ = tcsetpgrp(self.fd(), getpgrp());
    }
}

/// Stops the supervisor with `sig` (TSTP, TTIN or TTOU, so the shell reports why; STOP
/// otherwise), returning once something continues it.
pub fn stop_self(sig: i32) {
    let job_stop = [Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGTTOU];
    match Signal::try_from(sig) {
        Ok(s) if job_stop.contains(&s) => {
            let mut only = SigSet::empty();
            only.add(s);
            // The signal is blocked (all are); unblock it just around raise() so that
            // its default action, stopping, applies to us.
            let _ = only.thread_unblock();
            let _ = raise(s);
            let _ = only.thread_block();
        }
        _ => {
            let _ = kill(getpid(), Signal::SIGSTOP);
        }
    }
}
