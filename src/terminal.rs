//! The controlling terminal, shared with a child that runs in its own process group.
//!
//! When `ralph-supervise run` is typed at a shell, the shell made the supervisor's
//! process group the terminal's foreground group. The child runs in a group of its own
//! (so that signals to it never hit the supervisor), so the supervisor hands it the
//! terminal: Ctrl-C and Ctrl-Z then reach the child only, and a full-screen program can
//! own the screen. When the child stops, the supervisor takes the terminal back and stops
//! its job too, so the shell sees the job stopped; when continued, it hands the terminal
//! back. All signals are blocked in the supervisor, so its own `tcsetpgrp` from the
//! background never raises SIGTTOU.
//!
//! In a pipeline the supervisor is not the whole job. In `ralph-supervise run -- X |
//! less` the pager shares the supervisor's process group and reads the terminal: handing
//! the terminal to the child's group would put the pager in the background, where its
//! first read stops it (SIGTTIN), and a Ctrl-Z would then stop the child's group while
//! `cat -n` in `X | cat -n` ran on and the shell waited for it. So when the supervisor's
//! standard output is a pipe (or socket), it keeps the terminal: the job's own group
//! stays in the foreground, the terminal's Ctrl-C and Ctrl-Z reach the supervisor and the
//! rest of the job, and the supervisor forwards them to the child's group, once. A child
//! that reads the terminal (or sets its modes) there stops for it (TTIN, TTOU): then it
//! is lent the terminal and continued, as it could read it sharing the job's group.
//!
//! Whoever else is in the job, a child that stops for job control (TSTP, TTIN, TTOU)
//! stops the whole job, as the terminal's signal would have without a supervisor: a
//! `producer | ralph-supervise run -- less` or a wrapper script that runs the supervisor
//! is stopped with it, and the shell sees the job stopped.

use std::os::fd::{BorrowedFd, RawFd};

use nix::sys::signal::{SigSet, Signal, kill, killpg};
use nix::sys::stat::{SFlag, fstat};
use nix::sys::termios::tcgetsid;
use nix::unistd::{Pid, getpgrp, getpid, getsid, isatty, tcgetpgrp, tcsetpgrp};

use crate::exit::ExitStatus;
use crate::sys::std_fd;

/// Our controlling terminal, as one of our standard descriptors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Terminal {
    fd: RawFd,
    /// Whether the child's group may be given the terminal (we are not writing into a
    /// pipeline whose other members share our group).
    hand_over: bool,
}

impl Terminal {
    /// The first of stdin, stdout and stderr that is the controlling terminal of our
    /// session (job control applies). Under systemd, in CI or with no terminal: `None`.
    pub(crate) fn detect() -> Option<Terminal> {
        let session = getsid(None).ok()?;
        let fd = (0..=2).find(|&fd| {
            let fd = std_fd(fd);
            isatty(fd).unwrap_or(false) && tcgetsid(fd).ok() == Some(session)
        })?;
        Some(Terminal {
            fd,
            hand_over: !writes_to_a_pipeline(),
        })
    }

    fn fd(&self) -> BorrowedFd<'static> {
        std_fd(self.fd)
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd
    }

    /// Whether our process group is the terminal's foreground group.
    pub(crate) fn is_foreground(&self) -> bool {
        tcgetpgrp(self.fd()).ok() == Some(getpgrp())
    }

    /// [`Terminal::is_foreground`], known for sure: our process group is in our pid
    /// namespace (outside it, `getpgrp` and `tcgetpgrp` both say 0, whoever has it).
    pub(crate) fn surely_foreground(&self) -> bool {
        getpgrp().as_raw() != 0 && self.is_foreground()
    }

    /// Whether the child's group should get the terminal now: we are in the foreground
    /// and not the writing end of a pipeline (see the module's documentation).
    pub(crate) fn can_hand_over(&self) -> bool {
        self.hand_over && self.is_foreground()
    }

    /// Whether the terminal's foreground group is `pgid`.
    pub(crate) fn foreground_is(&self, pgid: Pid) -> bool {
        tcgetpgrp(self.fd()).ok() == Some(pgid)
    }

    /// Makes `pgid` the foreground group (never when [`Terminal::can_hand_over`] says
    /// no). Errors (the terminal went away) are ignored: there is nothing better to do
    /// than carry on.
    pub(crate) fn give_to(&self, pgid: Pid) {
        if self.hand_over {
            let _ = tcsetpgrp(self.fd(), pgid);
        }
    }

    /// Makes `pgid` the foreground group even in a pipeline: the command asked for the
    /// terminal (it stopped reading it from the background).
    pub(crate) fn lend_to(&self, pgid: Pid) {
        let _ = tcsetpgrp(self.fd(), pgid);
    }

    /// Makes our own group the foreground group again.
    pub(crate) fn take_back(&self) {
        let _ = tcsetpgrp(self.fd(), getpgrp());
    }
}

/// Whether our standard output is a pipe or a socket: we are the writing end of a
/// pipeline (`X | less`, `X | cat -n`), and the readers share our process group.
///
/// Not "is anybody else in our process group" (a scan of `/proc`): the shell forks the
/// pipeline's later members after us, so a scan can run before they exist, and a member
/// that does not need the terminal (the shell running a wrapper script, `producer` in
/// `producer | ralph-supervise run -- less`) is no reason to keep it from the child.
fn writes_to_a_pipeline() -> bool {
    fstat(std_fd(1)).is_ok_and(|st| {
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        kind == SFlag::S_IFIFO || kind == SFlag::S_IFSOCK
    })
}

/// Stops the supervisor with `sig`, returning once something continues it. TSTP, TTIN
/// and TTOU (so the shell reports why) go to our whole process group, the job, as the
/// terminal sends them: the other members of a pipeline or the shell running a wrapper
/// script stop with us, so the shell sees the job stopped instead of waiting for it.
/// When the terminal itself sent `sig` to our group (`job_has_it`: Ctrl-Z with the
/// supervisor in the foreground job), every member has it already and only we stop: a
/// second TSTP would stay pending in a member that catches it (less does) and stop it
/// again at `fg`. Anything else stops only us, with STOP.
///
/// Where nobody above does job control (`tmux new-window CMD`, `ssh -t host CMD`, PID 1
/// with a terminal), our process group is orphaned and the kernel discards TSTP, TTIN
/// and TTOU, as it would for the command run directly: we are not stopped, and nothing
/// will continue us. Then (no CONT pending on return) we continue ourselves: the loop
/// resumes the command at once, as if continued.
pub(crate) fn stop_self(sig: i32, job_has_it: bool) {
    let job_stop = [Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGTTOU];
    match Signal::try_from(sig) {
        Ok(s) if job_stop.contains(&s) => {
            let mut only = SigSet::empty();
            only.add(s);
            // The signal is blocked (all are); unblock it just around sending it so that
            // its default action, stopping, applies to us (a process-directed signal
            // goes to a thread that does not block it: this one).
            let _ = only.thread_unblock();
            if job_has_it || killpg(getpgrp(), s).is_err() {
                let _ = kill(getpid(), s);
            }
            let _ = only.thread_block();
        }
        _ => {
            let _ = kill(getpid(), Signal::SIGSTOP);
        }
    }
    // (Not when our process group is outside our pid namespace, `getpgrp` 0: as PID 1
    // of `unshare --fork --pid` run by a shell, our own stop is dropped, but the job's
    // other members stopped, and the shell will continue the job with `fg`.)
    if !crate::sys::pending(libc::SIGCONT) && getpgrp().as_raw() != 0 {
        continue_self();
    }
}

/// Sends ourselves CONT: the event loop reads it as any CONT and resumes the command.
pub(crate) fn continue_self() {
    let _ = kill(getpid(), Signal::SIGCONT);
}

/// The end of `run` as a job of an interactive shell: when the status says the command
/// died of signal N (or a stop by N came before it started), the supervisor dies of N
/// too, everything else done, instead of exiting 128+N. The shell then does what it
/// does when the command runs directly: it restores the terminal's modes that a
/// full-screen program killed in raw mode left, and after INT it ends the loop typed at
/// it (bash ends a loop only when a job died of INT). `$?` is 128+N either way.
/// Elsewhere — no terminal (a service, CI), a program or script that runs us in its own
/// process group (Python's `subprocess`, `bash script.sh`), PID 1 — the exit status is
/// 128+N, as DESIGN says.
pub(crate) fn end_like_the_command(status: ExitStatus) {
    if let ExitStatus::Signaled(sig) = status
        && Terminal::detect().is_some()
        && job_control_above()
    {
        let _ = std::io::Write::flush(&mut std::io::stdout());
        crate::sys::die_of(sig);
    }
}

/// Whether a job-control shell runs us: our parent, in our session, put us in a process
/// group of our own (a job). Not a program or a non-interactive script, which leave us in
/// theirs, nor a parent outside our pid namespace (`getppid` 0).
fn job_control_above() -> bool {
    let parent = nix::unistd::getppid();
    parent.as_raw() != 0
        && getsid(Some(parent)).ok() == getsid(None).ok()
        && nix::unistd::getpgid(Some(parent)).ok() != Some(getpgrp())
}

/// Whether a job-control stop signal the supervisor received was sent by the terminal
/// to its whole process group (`si_code` `SI_KERNEL`), not by a `kill` to it alone.
pub(crate) fn sent_to_the_job(sig: i32, code: i32) -> bool {
    [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU].contains(&sig) && code == crate::sys::SI_KERNEL
}
