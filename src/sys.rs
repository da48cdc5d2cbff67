//! The only module with `unsafe`: raw system calls nix does not wrap the way we need.
//!
//! * signal dispositions reset to default at start-up (an ignored disposition survives
//!   `exec`, so the child would inherit it);
//! * BSD `flock(2)` without a guard that unlocks on drop (nix's `Flock` does, and an early
//!   return must never free the workspace while the child lives);
//! * the code that runs in the child between `fork` and `exec`, which must be
//!   async-signal-safe: no allocation, no logging, no locks;
//! * `sigqueue(3)`, a signal with a payload (nix does not wrap it).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::signals::FAULTS;

/// `sigqueue(3)`: sends `sig` to `pid` with `value` as its payload, which a signalfd
/// reader sees as `ssi_ptr` (and `ssi_code` = `SI_QUEUE`).
pub(crate) fn sigqueue(pid: i32, sig: i32, value: usize) -> io::Result<()> {
    // The union's pointer member carries a number; nobody dereferences it.
    let value = libc::sigval {
        sival_ptr: value as *mut libc::c_void,
    };
    // SAFETY: a plain system call on values; no memory is shared with the kernel.
    if unsafe { libc::sigqueue(pid, sig, value) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Resets every catchable signal to its default disposition and blocks it in this
/// thread (threads spawned later inherit the mask). Returns the blocked set, to read
/// through a signalfd.
///
/// Whoever started us may have left SIGCHLD ignored (the kernel would then reap our
/// children itself and their status would be lost) or INT/QUIT ignored (a shell's
/// background job); a child would inherit either through `exec`.
pub(crate) fn reset_and_block_signals() -> io::Result<nix::sys::signal::SigSet> {
    // At start-up a disposition is either the default or SIG_IGN (handlers do not
    // survive exec; std's own SIGPIPE is SIG_IGN too), so resetting the ignored ones is
    // enough: one read of /proc instead of sixty system calls. Without /proc, reset all.
    let ignored = ignored_signals();
    let mut raw = empty_sigset();
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP || FAULTS.iter().any(|f| *f as i32 == sig) {
            continue;
        }
        // glibc reserves two real-time signals for itself: neither ours to reset here
        // (the child hook does it) nor to block.
        if (32..libc::SIGRTMIN()).contains(&sig) {
            continue;
        }
        if ignored.is_none_or(|mask| mask & (1u64 << (sig - 1)) != 0) {
            // SAFETY: installing SIG_DFL runs no code of ours in signal context.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        // SAFETY: `raw` is an initialised sigset_t and `sig` a valid signal number.
        unsafe {
            libc::sigaddset(&mut raw, sig);
        }
    }
    // SAFETY: `raw` was initialised by sigemptyset and filled by sigaddset only.
    let set = unsafe { nix::sys::signal::SigSet::from_sigset_t_unchecked(raw) };
    set.thread_set_mask().map_err(io::Error::from)?;
    Ok(set)
}

/// The `SigIgn` mask of this process (bit N-1 = signal N), from `/proc/self/status`.
fn ignored_signals() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// `flock(2)` operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlockOp {
    /// Shared, blocking (readers).
    Shared,
    /// Exclusive, blocking.
    Exclusive,
    /// Exclusive, non-blocking (`EWOULDBLOCK` when held).
    TryExclusive,
    /// Release.
    Unlock,
}

/// BSD `flock(2)`: the lock kind ralph-orchestrator uses. Never fcntl/OFD locks, which do
/// not see flocks.
pub(crate) fn flock(fd: BorrowedFd<'_>, op: FlockOp) -> io::Result<()> {
    let op = match op {
        FlockOp::Shared => libc::LOCK_SH,
        FlockOp::Exclusive => libc::LOCK_EX,
        FlockOp::TryExclusive => libc::LOCK_EX | libc::LOCK_NB,
        FlockOp::Unlock => libc::LOCK_UN,
    };
    loop {
        // SAFETY: `fd` is a borrowed, open descriptor for the duration of the call.
        let rc = unsafe { libc::flock(fd.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// What the child needs done between `fork` and `exec`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildSetup {
    /// The locked descriptor to pass open to the child (close-on-exec is cleared for it
    /// in the child only; the supervisor's copy keeps the flag).
    pub(crate) inherit_fd: Option<RawFd>,
    /// The terminal to make the child's process group the foreground of.
    pub(crate) tty: Option<RawFd>,
}

/// Puts the child in a process group of its own and installs `setup` to run in the
/// child before `exec`. std resets the child's signal mask; we clear it again after
/// our own use of it.
pub(crate) fn install_child_setup(cmd: &mut Command, setup: ChildSetup) {
    cmd.process_group(0);
    // Everything the hook needs is computed here, before fork, so the hook itself does
    // no allocation.
    let mut ttou = empty_sigset();
    // SAFETY: `ttou` is an initialised sigset_t; SIGTTOU is a valid signal.
    unsafe {
        libc::sigaddset(&mut ttou, libc::SIGTTOU);
    }
    let empty = empty_sigset();
    // glibc refuses to touch the real-time signals it reserves (32 and 33), yet a
    // parent can leave them ignored (glibc's own posix_spawn does) and `exec` keeps an
    // ignored disposition: reset them in the child with the raw system call.
    let reserved = 32..libc::SIGRTMIN();
    let hook = move || -> io::Result<()> {
        // Only async-signal-safe calls below (fcntl, setpgid, sigprocmask, tcsetpgrp,
        // getpid), on values copied into the closure: no allocation, no locks.
        if let Some(fd) = setup.inherit_fd {
            // SAFETY: fcntl on an fd number we own; async-signal-safe.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some(tty) = setup.tty {
            // SAFETY: async-signal-safe calls on plain values. SIGTTOU is blocked so a
            // background-group tcsetpgrp does not stop us; shells do the same in the
            // child so that the terminal is the child's before it runs a single
            // instruction of its own (the parent does it too, whichever runs first).
            unsafe {
                libc::setpgid(0, 0);
                libc::pthread_sigmask(libc::SIG_BLOCK, &ttou, std::ptr::null_mut());
                libc::tcsetpgrp(tty, libc::getpid());
            }
        }
        for sig in reserved.clone() {
            reset_reserved_signal(sig);
        }
        // SAFETY: restores the empty mask std gave the child; async-signal-safe.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe calls and allocates nothing (see
    // above), as `pre_exec` requires of code running between fork and exec.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// The kernel's `struct sigaction` (the same layout on x86_64 and aarch64).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// `rt_sigaction(sig, SIG_DFL)` without glibc's filter. Async-signal-safe: one system
/// call on a stack value.
fn reset_reserved_signal(sig: i32) {
    let action = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: `action` is a valid kernel sigaction for the duration of the call, the
    // old-action pointer is null (not wanted) and 8 is the kernel's sigset size.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            &action as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            8usize,
        );
    }
}

fn empty_sigset() -> libc::sigset_t {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the whole set.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        set.assume_init()
    }
}

/// What `waitpid` reported for one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reaped {
    Exited(i32),
    Signaled(i32),
    Stopped(i32),
}

/// Reaps (or notes the stop of) one child, any child, without blocking.
/// `Ok(None)` when no child has anything to report, or there are no children.
///
/// Raw `waitpid` rather than nix's, whose signal conversion rejects real-time signals
/// and would lose the status of a child killed by one.
pub(crate) fn reap_one() -> io::Result<Option<(i32, Reaped)>> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::WUNTRACED) };
        if pid > 0 {
            let reaped = if libc::WIFEXITED(status) {
                Reaped::Exited(libc::WEXITSTATUS(status))
            } else if libc::WIFSIGNALED(status) {
                Reaped::Signaled(libc::WTERMSIG(status))
            } else if libc::WIFSTOPPED(status) {
                Reaped::Stopped(libc::WSTOPSIG(status))
            } else {
                continue;
            };
            return Ok(Some((pid, reaped)));
        }
        if pid == 0 {
            return Ok(None);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => return Ok(None),
            _ => return Err(err),
        }
    }
}

/// Restores SIGPIPE's default action (Rust ignores it at start-up), so that the test
/// probe, whose output is piped into `head`, ends like any other Unix tool. (The
/// subcommands keep it ignored and handle EPIPE: see `logging`.)
pub(crate) fn default_sigpipe() {
    // SAFETY: installing SIG_DFL runs no code of ours in signal context.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Makes sure the bytes `offset..offset + len` of `fd`'s file have disk space, without
/// changing the file's size (`fallocate(FALLOC_FL_KEEP_SIZE)`), so that a write that
/// follows cannot stop half-way with ENOSPC after overwriting part of what was there.
/// File systems without `fallocate` are let through (the write then takes its chance).
pub(crate) fn reserve(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    use nix::errno::Errno;
    use nix::fcntl::{FallocateFlags, fallocate};
    if len == 0 {
        return Ok(());
    }
    match fallocate(
        fd,
        FallocateFlags::FALLOC_FL_KEEP_SIZE,
        offset as libc::off_t,
        len as libc::off_t,
    ) {
        Ok(()) | Err(Errno::EOPNOTSUPP) | Err(Errno::ENOSYS) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Linux `fcntl` values for dnotify, which the libc crate does not export for every
/// target (`<linux/fcntl.h>`; the same on x86_64 and aarch64).
const F_SETSIG: libc::c_int = 10;
const DN_CREATE: libc::c_int = 0x0000_0004;
const DN_DELETE: libc::c_int = 0x0000_0008;
const DN_RENAME: libc::c_int = 0x0000_0010;
const DN_MULTISHOT: libc::c_int = 0x8000_0000_u32 as libc::c_int;

/// Asks the kernel to send `sig` whenever an entry of directory `dir` is created,
/// deleted or renamed (dnotify), for as long as `dir` stays open.
///
/// dnotify rather than inotify: closing an inotify instance waits for an RCU grace
/// period (measured here: 15 ms on every exit), while dnotify's marks belong to one
/// global group and go away without a wait. The signal arrives through the signalfd
/// like any other.
pub(crate) fn notify_directory(dir: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: fcntl on a borrowed open descriptor with integer arguments.
    unsafe {
        if libc::fcntl(dir.as_raw_fd(), F_SETSIG, sig) == -1 {
            return Err(io::Error::last_os_error());
        }
        if libc::fcntl(
            dir.as_raw_fd(),
            libc::F_NOTIFY,
            DN_CREATE | DN_DELETE | DN_RENAME | DN_MULTISHOT,
        ) == -1
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `pidfd_open(2)`: a descriptor that becomes readable when process `pid` exits.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: a plain system call with integer arguments; on success the return value is
    // a new descriptor that nothing else owns.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(2)`: signals exactly the process `pidfd` refers to (a pid reused
/// since the descriptor was opened is not hit).
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: a plain system call: a descriptor we borrow for its duration, a signal
    // number, a null siginfo (the kernel fills in the default) and no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A standard descriptor (0, 1 or 2): never closed by the supervisor.
pub(crate) fn std_fd(fd: RawFd) -> BorrowedFd<'static> {
    debug_assert!((0..=2).contains(&fd));
    // SAFETY: the standard descriptors stay open for the life of the process (the
    // supervisor never closes them; if one was closed at start-up, calls on it fail
    // with EBADF and it is not taken for a terminal).
    unsafe { BorrowedFd::borrow_raw(fd) }
}
