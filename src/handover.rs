//! Lock hand-over: a child that locks `.ralph/loop.lock` itself (ralph does) ends up
//! holding the lock through the supervisor's own locked open file description, so that
//! it runs as the primary and the workspace is never free in between.
//!
//! A flock belongs to an open file description. ralph opens the lock path afresh and
//! calls `flock(LOCK_EX|LOCK_NB)` on its new description, which conflicts with the one
//! the supervisor holds for it. So on Linux the child is started under a seccomp filter
//! ([`crate::sys`]: nine BPF instructions) that sends every `flock(2)` of its process
//! tree to a listener before it runs. An *answerer* process holds the listener and a copy
//! of the locked description and answers each call:
//!
//! * a call on any other file is let through (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`):
//!   cargo's, git's and ralph's history and registry locks cost one round trip;
//! * the first call on the lock file through a fresh description gets that descriptor
//!   replaced by a copy of the locked one (`SECCOMP_IOCTL_NOTIF_ADDFD` with
//!   `SECCOMP_ADDFD_FLAG_SETFD`) and is answered with success; that process is the
//!   *holder* until it exits (then the next asker, a restart's, gets it);
//! * any call on the locked description itself (the holder's `LOCK_UN` as it ends, one
//!   through `RALPH_LOCK_FD`) is answered with success and not performed, while the
//!   supervisor holds the lock: the lock stays held between runs;
//! * every other attempt on the lock file (a nested `ralph run`, a `ralph loops list`
//!   probe, a second asker while the holder lives) is let through against its own
//!   description, which conflicts, exactly as without a supervisor.
//!
//! Which file a call is on is read from `/proc/PID/fd/N` (device and inode); whether
//! the caller's description is the locked one from `/proc/PID/fdinfo/N` (a description
//! that holds the flock lists it; while the supervisor holds it exclusively, only its
//! description can). The call's id is checked again after those reads, so a pid reused
//! meanwhile is never acted on.
//!
//! The answerer is a separate process (this binary re-executed, hidden subcommand
//! [`ANSWER_COMMAND`]), one per spawn, in a process group of its own with every signal
//! blocked: if the supervisor is SIGKILLed, trapped calls would otherwise fail (ENOSYS
//! once the listener closes) or hang (while unanswered). It lives as long as the
//! filtered tree does (the listener reports POLLHUP when the last filtered task is
//! gone), keeping the lock held through its copy until then, and exits.
//!
//! Only the supervisor's own stop requests and metadata change with a hand-over child
//! (see `run.rs`): ralph rewrites the lock file itself, so the supervisor's fields live
//! in [`SIDECAR`] under `.ralph/supervise/`.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tracing::warn;

use crate::exit::{ExitStatus, Failure, ResultExt};
use crate::metadata::Metadata;
use crate::ralph_dir::Access;
use crate::sys::{self, Listener, ProcessHandle, Trapped};
use crate::workspace::RalphDir;

crate::setting::keywords! {
    Handover "When the workspace lock is handed over to a command that locks it itself." {
        Auto = "auto", "When the command's program file name is `ralph`.";
        Always = "always", "For any command; where the system cannot (not Linux 5.9 or later, seccomp unavailable or forbidden), refuse with status 125.";
        Never = "never", "Never: a command that locks the workspace itself finds it taken.";
    }
}

/// The hidden subcommand the answerer runs as.
pub(crate) const ANSWER_COMMAND: &str = "handover-answer";

/// The supervisor's own fields while a hand-over child runs, under `.ralph/supervise/`.
pub(crate) const SIDECAR: &str = "loop.json";

/// Set to 1, the hand-over is taken for unavailable (for the tests).
const NO_SECCOMP_ENV: &str = "RALPH_SUPERVISE_TEST_NO_SECCOMP";

/// Whether `command` is ralph: its program's file name is `ralph`.
pub(crate) fn is_ralph(command: &[OsString]) -> bool {
    command
        .first()
        .and_then(|p| Path::new(p).file_name())
        .is_some_and(|name| name == "ralph")
}

/// Whether this run hands the lock over. `always` where the machine cannot is exit 125;
/// `auto` then warns and runs the command as without hand-over.
pub(crate) fn plan(when: Handover, command: &[OsString]) -> Result<bool, Failure> {
    let wanted = match when {
        Handover::Never => false,
        Handover::Always => true,
        Handover::Auto => is_ralph(command),
    };
    if !wanted {
        return Ok(false);
    }
    // The tests' stand-in for a machine without seccomp (an old kernel, a container).
    let available = match std::env::var_os(NO_SECCOMP_ENV) {
        Some(v) if v == "1" => {
            Err("seccomp is unavailable (RALPH_SUPERVISE_TEST_NO_SECCOMP=1)".into())
        }
        _ => sys::handover_available(),
    };
    match available {
        Ok(()) => Ok(true),
        Err(missing) if when == Handover::Always => Err(Failure::msg(
            ExitStatus::Failure,
            format!(
                "cannot hand the workspace lock over to the command: {missing}; use --handover=never to run it anyway (it will find the workspace taken)"
            ),
        )),
        Err(missing) => {
            warn!(
                "no lock hand-over: {missing}; the command will find the workspace taken (ralph then runs in a worktree, waits or refuses, as beside another loop)"
            );
            Ok(false)
        }
    }
}

/// ralph 2.10.1's `run` takes its working directory as its workspace (it sets its
/// workspace root from it, over `RALPH_WORKSPACE_ROOT`): started below the workspace it
/// would lock a `.ralph/loop.lock` of its own there, beside the one we hold. Say so
/// (once, before the start) rather than move it: its relative arguments (`-c
/// ralph.yml`) mean the directory it was started in.
pub(crate) fn warn_if_ralph_starts_below(command: &[OsString], workspace: &Path) {
    let Ok(cwd) = std::env::current_dir() else {
        return;
    };
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    if is_ralph(command) && !same(&cwd, workspace) {
        warn!(
            "ralph takes its working directory {} as its workspace, not {}: it will lock its own .ralph/loop.lock there; start it from the workspace or pass -C {}",
            cwd.display(),
            workspace.display(),
            workspace.display()
        );
    }
}

/// Starts the answerer for one spawn with a copy of `lock` (the locked description);
/// returns the child's end of the socket that carries the listener to it.
pub(crate) fn start_answerer(lock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // A stream: when the child ends without sending the listener (its start failed), the
    // answerer reads end-of-file and exits.
    let (ours, child_end) = std::os::unix::net::UnixStream::pair()?;
    // Inheritable copies, alive only across this spawn (nothing else is spawned
    // meanwhile): std then starts it with posix_spawn, without a pre-exec hook.
    let sock = nix::unistd::dup(ours.as_fd())?;
    let lock = nix::unistd::dup(lock)?;
    drop(ours);
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("ralph-supervise")
        .arg(ANSWER_COMMAND)
        .arg(sock.as_raw_fd().to_string())
        .arg(lock.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // A process group of its own: the terminal's Ctrl-C and the end-of-run
        // clean-up of the child's group never reach it.
        .process_group(0);
    // Never waited for here: the event loop reaps it like any descendant.
    drop(cmd.spawn()?);
    Ok(child_end.into())
}

/// What the answerer does with one trapped call on the lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Run it as if there were no filter.
    LetThrough,
    /// Answer success without performing it.
    Pretend,
    /// Give the caller the locked description and answer success.
    HandOver,
}

/// The answer to `flock(fd, op)` on the lock file. `supervisor_holds`: the locked
/// description still holds the lock; `ours`: the caller's descriptor is that
/// description; `holder`: a process given it is still alive.
pub(crate) fn decide(op: i32, supervisor_holds: bool, ours: bool, holder: bool) -> Reply {
    if !supervisor_holds {
        Reply::LetThrough
    } else if ours {
        Reply::Pretend
    } else if op & libc::LOCK_UN != 0 || op & (libc::LOCK_EX | libc::LOCK_SH) == 0 || holder {
        Reply::LetThrough
    } else {
        Reply::HandOver
    }
}

/// `ralph-supervise handover-answer SOCK LOCK`: receive the listener from the child over
/// `SOCK`, answer its tree's `flock` calls, exit when the tree is gone.
pub(crate) fn answer(sock: RawFd, lock: RawFd) -> Result<ExitStatus, Failure> {
    // Nothing but SIGKILL ends us early: the tree's flock calls depend on us.
    let _ = sys::reset_and_block_signals();
    let sock = sys::inherited_fd(sock).or_fail("handover-answer: the socket is not open")?;
    let lock = sys::inherited_fd(lock).or_fail("handover-answer: the lock is not open")?;
    let Some(listener) = Listener::receive(sock.as_fd()).or_fail("handover-answer: receive")?
    else {
        // The child never installed its filter (its start failed).
        return Ok(ExitStatus::SUCCESS);
    };
    drop(sock);
    let lock = std::fs::File::from(lock);
    let meta = lock.metadata().or_fail("handover-answer: fstat")?;
    let mut answerer = Answerer {
        fdinfo: format!("/proc/self/fdinfo/{}", lock.as_raw_fd()),
        listener,
        lock,
        dev: meta.dev(),
        ino: meta.ino(),
        holder: None,
    };
    answerer.serve().or_fail("handover-answer")?;
    Ok(ExitStatus::SUCCESS)
}

struct Answerer {
    listener: Listener,
    lock: std::fs::File,
    /// `/proc/self/fdinfo/<lock>`.
    fdinfo: String,
    dev: u64,
    ino: u64,
    /// The process given the locked description, until it exits.
    holder: Option<ProcessHandle>,
}

impl Answerer {
    fn serve(&mut self) -> io::Result<()> {
        loop {
            let (calls, hung_up, holder_gone) = {
                let mut fds = vec![PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
                if let Some(h) = &self.holder {
                    fds.push(PollFd::new(h.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
                let l = fds[0].revents().unwrap_or(PollFlags::empty());
                let h = fds.get(1).and_then(|f| f.revents());
                (
                    l.contains(PollFlags::POLLIN),
                    l.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL),
                    h.is_some_and(|h| !h.is_empty()),
                )
            };
            if holder_gone {
                self.holder = None;
            }
            if calls {
                if let Some(call) = self.listener.next()? {
                    self.handle(call)?;
                }
            } else if hung_up {
                // The last filtered task is gone.
                return Ok(());
            }
        }
    }

    fn handle(&mut self, call: Trapped) -> io::Result<()> {
        let fd_path = format!("/proc/{}/fd/{}", call.pid, call.fd);
        let on_lock = call.pid != 0
            && std::fs::metadata(&fd_path)
                .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if !on_lock {
            return self.listener.let_through(call.id);
        }
        let supervisor_holds = std::fs::read_to_string(&self.fdinfo).is_ok_and(|t| holds_flock(&t));
        let theirs = std::fs::read_to_string(format!("/proc/{}/fdinfo/{}", call.pid, call.fd))
            .unwrap_or_default();
        let ours = supervisor_holds && holds_flock(&theirs);
        match decide(call.op, supervisor_holds, ours, self.holder.is_some()) {
            Reply::LetThrough => self.listener.let_through(call.id),
            Reply::Pretend => self.listener.succeed(call.id),
            Reply::HandOver => {
                let handle = tgid(call.pid).and_then(|pid| ProcessHandle::open(pid as i32).ok());
                let Some(handle) = handle else {
                    return self.listener.let_through(call.id);
                };
                // The reads above named the caller by pid: act only if that pid still
                // names the waiting caller.
                if !self.listener.still_waiting(call.id) {
                    return Ok(());
                }
                let cloexec = fdinfo_flags(&theirs).is_some_and(|f| f & libc::O_CLOEXEC != 0);
                match self
                    .listener
                    .replace_fd(call.id, self.lock.as_fd(), call.fd, cloexec)
                {
                    Ok(()) => {
                        self.holder = Some(handle);
                        self.listener.succeed(call.id)
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
                    Err(_) => self.listener.let_through(call.id),
                }
            }
        }
    }
}

/// Whether an fdinfo text lists a flock held through that very description.
fn holds_flock(fdinfo: &str) -> bool {
    fdinfo
        .lines()
        .any(|l| l.starts_with("lock:") && l.contains("FLOCK"))
}

/// The open flags an fdinfo text reports (octal).
fn fdinfo_flags(fdinfo: &str) -> Option<i32> {
    let text = fdinfo.lines().find_map(|l| l.strip_prefix("flags:"))?;
    i32::from_str_radix(text.trim(), 8).ok()
}

/// The process (thread group) thread `tid` belongs to.
fn tgid(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Tgid:"))?;
    line.trim().parse().ok()
}

/// Records the supervisor's own metadata (pids, start times, mode, command) in
/// `.ralph/supervise/loop.json`, which `status`, `list`, `stop` and a takeover read
/// while ralph's own write is in the lock file.
pub(crate) fn write_sidecar(dir: &RalphDir, meta: &Metadata) -> io::Result<()> {
    let sub = crate::history::own_dir(dir)?;
    let file = sub
        .open(SIDECAR, Access::ReadWrite, true)
        .map_err(io::Error::from)?
        .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
    file.write_in_place(meta.to_json().into_bytes())
}

/// Empties the sidecar at the end of the run (before the lock is released).
pub(crate) fn clear_sidecar(dir: &RalphDir) {
    if let Ok(Some(sub)) = dir.subdir(crate::history::DIR, false)
        && let Ok(Some(file)) = sub.open(SIDECAR, Access::ReadWrite, false)
    {
        let _ = file.truncate(0);
    }
}

/// The sidecar's metadata, when it names a loop still running: its supervisor or its
/// child alive with the recorded start time. A stale one (a SIGKILLed run's) says nothing.
pub(crate) fn read_sidecar(dir: &RalphDir) -> Option<Metadata> {
    let sub = dir.subdir(crate::history::DIR, false).ok()??;
    let file = sub.open(SIDECAR, Access::Read, false).ok()??;
    let meta = Metadata::parse(&file.read_up_to(1 << 20).ok()?).ok()??;
    let alive = |pid: Option<u32>, start: Option<u64>| {
        pid.zip(start)
            .is_some_and(|(pid, start)| crate::procfs::alive(pid, Some(start)))
    };
    (alive(meta.supervisor_pid, meta.supervisor_start_time)
        || alive(meta.child_pid, meta.child_start_time))
    .then_some(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_asker_gets_it_others_conflict() {
        let ex_nb = libc::LOCK_EX | libc::LOCK_NB;
        assert_eq!(decide(ex_nb, true, false, false), Reply::HandOver);
        assert_eq!(decide(libc::LOCK_EX, true, false, false), Reply::HandOver);
        assert_eq!(decide(ex_nb, true, false, true), Reply::LetThrough);
        // The locked description's own unlock is absorbed while the supervisor holds it.
        assert_eq!(decide(libc::LOCK_UN, true, true, true), Reply::Pretend);
        assert_eq!(decide(libc::LOCK_UN, true, true, false), Reply::Pretend);
        // A fresh description's unlock changes nothing: let it through.
        assert_eq!(decide(libc::LOCK_UN, true, false, false), Reply::LetThrough);
        // Released by the supervisor: everything as without a filter.
        assert_eq!(decide(ex_nb, false, false, false), Reply::LetThrough);
        assert_eq!(decide(libc::LOCK_UN, false, false, true), Reply::LetThrough);
        assert_eq!(decide(0, true, false, false), Reply::LetThrough);
    }

    #[test]
    fn fdinfo_texts() {
        let held = "pos:\t0\nflags:\t02100002\nmnt_id:\t30\nino:\t5\nlock:\t1: FLOCK  ADVISORY  WRITE 42 00:1f:5 0 EOF\n";
        assert!(holds_flock(held));
        assert_eq!(fdinfo_flags(held), Some(0o2100002));
        assert!(fdinfo_flags(held).unwrap() & libc::O_CLOEXEC != 0);
        assert!(!holds_flock("pos:\t0\nflags:\t0100002\n"));
    }

    #[test]
    fn ralph_by_file_name() {
        let cmd = |s: &str| vec![OsString::from(s), OsString::from("run")];
        assert!(is_ralph(&cmd("ralph")));
        assert!(is_ralph(&cmd("/opt/bin/ralph")));
        assert!(!is_ralph(&cmd("ralph-cli")));
        assert!(!is_ralph(&cmd("sh")));
        assert!(!is_ralph(&[]));
    }
}
