//! The only module with `unsafe`: raw system calls nix does not wrap the way we need.
//!
//! * signal dispositions reset to default at start-up (an ignored disposition survives
//!   `exec`, so the child would inherit it);
//! * BSD `flock(2)` without a guard that unlocks on drop (nix's `Flock` does, and an early
//!   return must never free the workspace while the child lives);
//! * the code that runs in the child between `fork` and `exec`, which must be
//!   async-signal-safe: no allocation, no logging, no locks;
//! * `sigqueue(3)`, a signal with a payload (nix does not wrap it);
//! * the lock hand-over's seccomp filter (installed last between fork and exec) and
//!   its listener ([`Listener`]; see [`crate::handover`]).
//!
//! # Platforms
//!
//! What is the same on every Unix lives here; each platform has one room below with
//! the same names in it, and callers never branch on the platform:
//!
//! * `linux.rs`: signalfd, dnotify, pidfd, `prctl`, `fallocate`, seccomp user
//!   notification;
//! * `kqueue.rs` (macOS, FreeBSD): one kqueue (`EVFILT_SIGNAL`, `EVFILT_VNODE`,
//!   `EVFILT_PROC`), `proc_pidinfo` / `kinfo_proc`, `procctl`;
//! * `spawn.rs` (Linux): the command started in the loop's cgroup (`clone3`), which the
//!   kqueue room answers with "spawn the usual way";
//! * `flock_wait.rs` (Linux): [`LockWaiter`], a wait for the workspace lock with one
//!   wake-up (the waiting thread blocks in `flock` itself; a watcher thread interrupts
//!   it with a signal for an event or the deadline). The kqueue room keeps the
//!   two-wake-up wait: a helper thread in `flock` wakes the waiting thread's `poll`.
//!
//! The narrow interface each room provides: [`EventSource`] (signals, child exits by
//! SIGCHLD, `.ralph/` changes; timers are the timeout of the `poll` on its
//! descriptor), [`LockWaiter`] (a blocking flock that still hears the event source
//! and a deadline), [`ProcessHandle`] (wait for one process's exit, signal only it),
//! [`become_subreaper`], [`sigqueue`], [`reserve`], [`abstract_socket_addr`], the signal
//! numbers, and on macOS and FreeBSD `process_identity` (a start time; Linux reads
//! `/proc` in [`crate::procfs`]). Lock holders where `/proc/locks` is missing are
//! found by a non-blocking probe in [`crate::lock`], which needs nothing from here.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::signals::FAULTS;

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "freebsd")))]
compile_error!("ralph-supervise is written for Linux, macOS and FreeBSD");

#[cfg(target_os = "linux")]
mod flock_wait;
#[cfg(any(target_os = "macos", target_os = "freebsd"))]
mod kqueue;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
mod spawn;
#[cfg(any(target_os = "macos", target_os = "freebsd"))]
use kqueue as os;
#[cfg(target_os = "linux")]
use linux as os;

#[cfg(target_os = "linux")]
pub(crate) use flock_wait::LockWaiter;
#[cfg(any(target_os = "macos", target_os = "freebsd"))]
pub(crate) use os::LockWaiter;
#[cfg(any(target_os = "macos", target_os = "freebsd"))]
pub(crate) use os::process_identity;
#[cfg(target_vendor = "apple")]
pub(crate) use os::sigqueue;
#[cfg(any(target_os = "macos", target_os = "freebsd"))]
pub(crate) use os::spawn_direct;
pub(crate) use os::{
    EventSource, Listener, ProcessHandle, SI_KERNEL, SI_QUEUE, Trapped, abstract_socket_addr,
    become_subreaper, cgroup2_mount_root, deny_clone3, handover_available, realtime_min, reserve,
    watch_signal,
};
#[cfg(target_os = "linux")]
pub(crate) use spawn::spawn_direct;

/// How a [`LockWaiter`]'s wait for a flock ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockWait {
    /// The lock is ours.
    Locked,
    /// The event source turned readable: read it, then wait again.
    Events,
    /// The deadline passed.
    Deadline,
}

/// `sigqueue(3)`: sends `sig` to `pid` with `value` as its payload, which the reader
/// sees as `ssi_ptr` (Linux's signalfd) or `si_value` (FreeBSD), with `si_code`
/// [`SI_QUEUE`]. macOS has none: its room answers `Unsupported`.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
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

/// Whether `sig` is pending for this thread or the process (blocked, not yet read).
pub(crate) fn pending(sig: i32) -> bool {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending fills the set it is given; it is read only when it succeeded.
    unsafe { libc::sigpending(set.as_mut_ptr()) == 0 && libc::sigismember(set.as_ptr(), sig) == 1 }
}

/// Dies of signal `sig`, as the command did, without a core file (the command's was
/// written, if any): its default action restored, unblocked, raised. Returns when it
/// does not kill us: as PID 1 of a namespace, where the kernel drops a signal whose
/// action is the default.
pub(crate) fn die_of(sig: i32) {
    use nix::sys::resource::{Resource, setrlimit};
    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
    // A core_pattern that pipes to a program (systemd-coredump, apport) ignores the
    // limit: not dumpable, the kernel calls no handler (as GNU timeout does).
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_dumpable(false);
    // SAFETY: SIG_DFL installs no code of ours; KILL and STOP, whose action cannot be
    // changed, fail with EINVAL, and are raised as they are.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
    if let Ok(signal) = nix::sys::signal::Signal::try_from(sig) {
        let mut only = nix::sys::signal::SigSet::empty();
        only.add(signal);
        let _ = only.thread_unblock();
        let _ = nix::sys::signal::raise(signal);
        let _ = only.thread_block();
    }
}

/// One signal (or `.ralph/` change, as [`watch_signal`]) read from an [`EventSource`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    pub(crate) signo: i32,
    /// How it was sent (`SI_USER` by kill(2), [`SI_QUEUE`] by sigqueue(3), ...; 0 when
    /// the platform does not say).
    pub(crate) code: i32,
    /// A `sigqueue` payload.
    pub(crate) value: u64,
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
    for sig in blocked_signals() {
        if ignored.is_none_or(|mask| sig > 64 || mask & (1u64 << (sig - 1)) != 0) {
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

/// The signals the supervisor blocks and reads: every catchable one but the faults
/// (and, on Linux, glibc's two reserved real-time signals).
pub(crate) fn blocked_signals() -> impl Iterator<Item = i32> {
    os::signal_numbers().filter(|&sig| {
        sig != libc::SIGKILL && sig != libc::SIGSTOP && !FAULTS.iter().any(|f| *f as i32 == sig)
    })
}

/// The `SigIgn` mask of this process (bit N-1 = signal N), from `/proc/self/status`;
/// `None` without it (not Linux).
fn ignored_signals() -> Option<u64> {
    let status = read_text("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// A small file the kernel generates (`/proc`, cgroup files), read in as few system
/// calls as it takes: `open`, `read`s of 4 KiB and more until one returns nothing,
/// `close`. (`std::fs::read_to_string` first asks for the size, a `statx` that says 0
/// for these, then reads 32 bytes, 32, 64, 128...: eight reads for `/proc/self/status`;
/// `File::read_to_string` still asks, with a `statx` and an `lseek`.)
pub(crate) fn read_text(path: impl AsRef<std::path::Path>) -> io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let (mut buf, mut len) = (vec![0u8; 4096], 0);
    loop {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// `poll`'s timeout for `deadline` (none: wait without one), rounded up to the next
/// millisecond, so that a wake-up never comes just before the deadline and spins.
pub(crate) fn poll_timeout(deadline: Option<std::time::Instant>) -> nix::poll::PollTimeout {
    let Some(deadline) = deadline else {
        return nix::poll::PollTimeout::NONE;
    };
    let ms = deadline
        .saturating_duration_since(std::time::Instant::now())
        .as_micros()
        .div_ceil(1000);
    nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX)
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
    /// Lock hand-over: install the `flock` filter last and send its listener over this
    /// socket (see [`crate::handover`]).
    pub(crate) handover: Option<RawFd>,
    /// The `cgroup.procs` of the loop's cgroup, opened by the parent: the child writes
    /// `0` to it (moving itself there) before `exec`, so nothing of the command runs
    /// outside the cgroup. A failed write fails the spawn.
    pub(crate) cgroup_procs: Option<RawFd>,
}

/// The steps [`ChildSetup`] asks for, with everything they need computed before the
/// fork, so that running them ([`Prepared::apply`]) allocates nothing.
#[derive(Clone)]
pub(crate) struct Prepared {
    setup: ChildSetup,
    ttou: libc::sigset_t,
    empty: libc::sigset_t,
    reserved: std::ops::Range<i32>,
    /// The one signal we install a handler of our own for (the lock wait's, Linux):
    /// reset in the child like the reserved ones, so that no code of ours can run there
    /// in signal context (on x86-64 the child shares our memory until it execs).
    own_handler: Option<i32>,
}

impl Prepared {
    pub(crate) fn new(setup: ChildSetup) -> Prepared {
        let mut ttou = empty_sigset();
        // SAFETY: `ttou` is an initialised sigset_t; SIGTTOU is a valid signal.
        unsafe {
            libc::sigaddset(&mut ttou, libc::SIGTTOU);
        }
        Prepared {
            setup,
            ttou,
            empty: empty_sigset(),
            // glibc refuses to touch the real-time signals it reserves (32 and 33), yet
            // a parent can leave them ignored (glibc's own posix_spawn does) and `exec`
            // keeps an ignored disposition: reset them in the child with the raw
            // system call.
            reserved: os::reserved_signals(),
            #[cfg(target_os = "linux")]
            own_handler: Some(flock_wait::wake_signal()),
            #[cfg(not(target_os = "linux"))]
            own_handler: None,
        }
    }

    /// Runs in the child between fork and exec. Only async-signal-safe calls (write,
    /// fcntl, setpgid, sigprocmask, tcsetpgrp, getpid, rt_sigaction, seccomp), on
    /// values computed before the fork: no allocation, no locks.
    pub(crate) fn apply(&self) -> io::Result<()> {
        let setup = &self.setup;
        if let Some(fd) = setup.cgroup_procs {
            // SAFETY: write(2) of a static byte to an fd number the parent keeps open
            // until the spawn returns; async-signal-safe.
            if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
                return Err(io::Error::last_os_error());
            }
        }
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
                libc::pthread_sigmask(libc::SIG_BLOCK, &self.ttou, std::ptr::null_mut());
                libc::tcsetpgrp(tty, libc::getpid());
            }
        }
        for sig in self.reserved.clone().chain(self.own_handler) {
            os::reset_reserved_signal(sig);
        }
        // SAFETY: restores the empty mask std gave the child; async-signal-safe.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.empty, std::ptr::null_mut());
        }
        if let Some(sock) = setup.handover {
            // Last: from here on every flock of this process and its descendants waits
            // for the answerer. (Two system calls and a sendmsg on stack values.)
            os::install_flock_filter(sock)?;
        }
        Ok(())
    }
}

/// The loop's cgroup, for the child: its directory and its `cgroup.procs`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement {
    pub(crate) dir: RawFd,
    pub(crate) procs: RawFd,
}

/// Puts the child in a process group of its own and installs `setup` to run in the
/// child before `exec`. std resets the child's signal mask; we clear it again after
/// our own use of it.
pub(crate) fn install_child_setup(cmd: &mut Command, setup: ChildSetup) {
    cmd.process_group(0);
    // Everything the hook needs is computed here, before fork, so the hook itself does
    // no allocation.
    let prepared = Prepared::new(setup);
    let hook = move || -> io::Result<()> { prepared.apply() };
    // SAFETY: the hook only makes async-signal-safe calls and allocates nothing (see
    // `Prepared::apply`), as `pre_exec` requires of code running between fork and exec.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Takes ownership of descriptor `fd`, inherited from the parent (named on our command
/// line); fails when it is not open.
pub(crate) fn inherited_fd(fd: RawFd) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: F_GETFD only asks whether `fd` is open.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: `fd` is open, was passed to this process for it to own, and nothing else
    // in this process knows its number.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
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

/// What a reaped process (with the descendants it reaped) used, from `wait4`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Rusage {
    pub(crate) user_us: u64,
    pub(crate) system_us: u64,
    /// Its largest resident set, in bytes (of it or of one descendant it reaped).
    pub(crate) max_rss: u64,
}

impl Rusage {
    fn from_raw(r: &libc::rusage) -> Rusage {
        let us = |t: libc::timeval| (t.tv_sec.max(0) as u64) * 1_000_000 + t.tv_usec.max(0) as u64;
        // Kilobytes on Linux and FreeBSD, bytes on macOS.
        let unit = if cfg!(target_vendor = "apple") {
            1
        } else {
            1024
        };
        Rusage {
            user_us: us(r.ru_utime),
            system_us: us(r.ru_stime),
            max_rss: (r.ru_maxrss.max(0) as u64).saturating_mul(unit),
        }
    }
}

/// Reaps (or notes the stop of) one child, any child, without blocking, with what it
/// used (zero for a stop).
/// `Ok(None)` when no child has anything to report, or there are no children.
///
/// Raw `wait4` rather than nix's `waitpid`, whose signal conversion rejects real-time
/// signals and would lose the status of a child killed by one.
pub(crate) fn reap_one() -> io::Result<Option<(i32, Reaped, Rusage)>> {
    loop {
        let mut status: libc::c_int = 0;
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `status` and `usage` are valid out-pointers for the duration of the
        // call.
        let pid = unsafe {
            libc::wait4(
                -1,
                &mut status,
                libc::WNOHANG | libc::WUNTRACED,
                usage.as_mut_ptr(),
            )
        };
        if pid > 0 {
            // SAFETY: zero-initialised, and filled by the kernel on success.
            let usage = unsafe { usage.assume_init() };
            let usage = Rusage::from_raw(&usage);
            let reaped = if libc::WIFEXITED(status) {
                Reaped::Exited(libc::WEXITSTATUS(status))
            } else if libc::WIFSIGNALED(status) {
                Reaped::Signaled(libc::WTERMSIG(status))
            } else if libc::WIFSTOPPED(status) {
                Reaped::Stopped(libc::WSTOPSIG(status))
            } else {
                continue;
            };
            return Ok(Some((pid, reaped, usage)));
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

/// What Rust's runtime does before `main` and this binary's own entry point (main.rs)
/// must do itself: SIGPIPE ignored (a write to a closed pipe then fails with EPIPE), and
/// `/dev/null` opened on any standard descriptor that was closed, so that no file we
/// open later becomes standard output or error. Harmless when the runtime did it.
pub(crate) fn start_up() {
    // SAFETY: installing SIG_IGN runs no code of ours in signal context.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: `fds` is an array of three initialised pollfd structures, as passed.
    let polled = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } >= 0;
    for pollfd in &fds {
        let closed = match polled {
            true => pollfd.revents & libc::POLLNVAL != 0,
            // (poll may fail for want of memory: then each is asked, as std does.)
            // SAFETY: F_GETFD on a descriptor number reads its flags and changes nothing.
            false => unsafe {
                libc::fcntl(pollfd.fd, libc::F_GETFD) == -1
                    && io::Error::last_os_error().raw_os_error() == Some(libc::EBADF)
            },
        };
        if !closed {
            continue;
        }
        // The lowest free descriptor, so this one (lower ones are open or reopened);
        // not close-on-exec, as the command inherits it: kept open for good.
        let mode = nix::sys::stat::Mode::empty();
        match nix::fcntl::open("/dev/null", nix::fcntl::OFlag::O_RDWR, mode) {
            Ok(null) => {
                debug_assert_eq!(null.as_raw_fd(), pollfd.fd);
                let _ = std::os::fd::IntoRawFd::into_raw_fd(null);
            }
            // Left closed, the next file opened (the lock file) would take its place
            // and log lines would land in it: stop here, as Rust's own start-up does.
            Err(_) => std::process::abort(),
        }
    }
}

/// Takes variable `name` out of the process's environment, so that no process started
/// later inherits it, and blanks it in the environment the process started with, where
/// the system keeps it readable to the same user (Linux: `/proc/PID/environ`, `ps e`);
/// its value, if it was set.
pub(crate) fn take_env(name: &str) -> Option<std::ffi::OsString> {
    let value = std::env::var_os(name)?;
    // SAFETY: called only at start-up, from `main`, before any thread is started (the
    // signal, fleet and log threads come later), so nothing reads the environment
    // meanwhile; and before any spawn borrows its strings (`spawn::environ`).
    unsafe { std::env::remove_var(name) };
    os::blank_initial_env(name);
    Some(value)
}

/// Restores SIGPIPE's default action (ignored at start-up, [`start_up`]), so that the test
/// probe, whose output is piped into `head`, ends like any other Unix tool. (The
/// subcommands keep it ignored and handle EPIPE: see `logging`.)
pub(crate) fn default_sigpipe() {
    // SAFETY: installing SIG_DFL runs no code of ours in signal context.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A standard descriptor (0, 1 or 2): never closed by the supervisor.
pub(crate) fn std_fd(fd: RawFd) -> BorrowedFd<'static> {
    debug_assert!((0..=2).contains(&fd));
    // SAFETY: the standard descriptors stay open for the life of the process (the
    // supervisor never closes them, and [`start_up`] reopened any that was closed).
    unsafe { BorrowedFd::borrow_raw(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;

    /// The process-handle interface (a pidfd here, a kqueue on macOS and FreeBSD):
    /// readable once the process has exited, and it signals only a living process.
    #[test]
    fn process_handle_is_readable_at_exit() {
        let mut child = Command::new("sleep").arg("600").spawn().unwrap();
        let handle = ProcessHandle::open(child.id() as i32).unwrap();
        let mut fds = [PollFd::new(handle.as_fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::ZERO).unwrap(), 0, "alive");
        handle.signal(libc::SIGKILL).unwrap();
        // Readable when it has exited, before anyone reaps it.
        let mut fds = [PollFd::new(handle.as_fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::NONE).unwrap(), 1);
        child.wait().unwrap();
        assert!(handle.signal(libc::SIGTERM).is_err(), "gone");
    }
}
