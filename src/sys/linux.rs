//! Linux's room: signalfd, dnotify, pidfd, `prctl`, `fallocate` and glibc's reserved
//! real-time signals. Everything here has a counterpart of the same name in
//! `kqueue.rs` (macOS, FreeBSD); `sys.rs` lists them.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::Received;

/// The signals the supervisor resets and blocks: every one up to `SIGRTMAX` except
/// the two real-time signals glibc reserves for itself (32 and 33), neither ours to
/// reset at start-up (the child hook does it) nor to block.
pub(crate) fn signal_numbers() -> impl Iterator<Item = i32> {
    (1..=libc::SIGRTMAX()).filter(|sig| !reserved_signals().contains(sig))
}

/// glibc's reserved real-time signals.
pub(crate) fn reserved_signals() -> std::ops::Range<i32> {
    32..libc::SIGRTMIN()
}

/// The first real-time signal glibc lets programs use.
pub(crate) fn realtime_min() -> Option<i32> {
    Some(libc::SIGRTMIN())
}

/// The signal dnotify sends on a change in a watched directory.
pub(crate) fn watch_signal() -> i32 {
    libc::SIGRTMIN() + 1
}

/// `si_code` of a signal sent by `sigqueue(3)`.
pub(crate) const SI_QUEUE: i32 = libc::SI_QUEUE;
/// `si_code` of a signal the kernel sent, as the terminal's job-control signals are.
pub(crate) const SI_KERNEL: i32 = libc::SI_KERNEL;

/// Signals, child exits and `.ralph/` changes, read in order from one descriptor: a
/// signalfd (dnotify's changes arrive as [`watch_signal`]).
pub(crate) struct EventSource {
    fd: SignalFd,
}

impl EventSource {
    /// Resets and blocks every catchable signal and opens the signalfd that receives them.
    pub(crate) fn install() -> io::Result<EventSource> {
        let set = super::reset_and_block_signals()?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(EventSource { fd })
    }

    /// The next pending signal with what came with it, if any.
    pub(crate) fn next(&self) -> io::Result<Option<Received>> {
        match self.fd.read_signal() {
            Ok(Some(info)) => Ok(Some(Received {
                signo: info.ssi_signo as i32,
                code: info.ssi_code,
                value: info.ssi_ptr,
            })),
            Ok(None) => Ok(None),
            Err(Errno::EINTR) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reports every change of `dir`'s entries as [`watch_signal`], for as long as `dir`
    /// stays open.
    pub(crate) fn watch_directory(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        notify_directory(dir, watch_signal())
    }
}

impl AsFd for EventSource {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A handle on one process: its descriptor turns readable when the process exits, and
/// signals sent through it reach that process only (never one that reused its pid).
pub(crate) struct ProcessHandle {
    fd: OwnedFd,
}

impl ProcessHandle {
    /// Opens a handle on `pid`; fails (ESRCH) when it is gone.
    pub(crate) fn open(pid: i32) -> io::Result<ProcessHandle> {
        Ok(ProcessHandle {
            fd: pidfd_open(pid)?,
        })
    }

    /// Sends `sig` to the process, if it has not exited.
    pub(crate) fn signal(&self, sig: i32) -> io::Result<()> {
        pidfd_send_signal(self.fd.as_fd(), sig)
    }
}

impl AsFd for ProcessHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Makes this process a child subreaper: orphaned descendants are re-parented to it.
pub(crate) fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// The address of the abstract `AF_UNIX` socket `name` (systemd's `@name`).
pub(crate) fn abstract_socket_addr(name: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name)
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
pub(crate) fn reset_reserved_signal(sig: i32) {
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

/// Makes sure the bytes `offset..offset + len` of `fd`'s file have disk space, without
/// changing the file's size (`fallocate(FALLOC_FL_KEEP_SIZE)`), so that a write that
/// follows cannot stop half-way with ENOSPC after overwriting part of what was there.
/// File systems without `fallocate` are let through (the write then takes its chance).
pub(crate) fn reserve(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
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
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: a plain system call with integer arguments; on success the return value is
    // a new descriptor that nothing else owns.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) })
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
