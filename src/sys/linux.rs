//! Linux's room: signalfd, dnotify, pidfd, `prctl`, `fallocate`, glibc's reserved
//! real-time signals, and the lock hand-over's seccomp filter and listener. Everything here has a counterpart of the same name in
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

/// Overwrites with NULs each `NAME=value` string of variable `name` in the environment
/// block the kernel gave the process at exec (`procfs::own_env_block`), which
/// `/proc/PID/environ` reads whatever `environ` says now. For `sys::take_env`, once the
/// variable is out of `environ`.
pub(crate) fn blank_initial_env(name: &str) {
    let Some((start, end)) = crate::procfs::own_env_block() else {
        return;
    };
    let prefix = [name.as_bytes(), b"="].concat();
    let mut at = start;
    while at < end {
        // SAFETY: `start..end` is this process's environment block as the kernel set it
        // up at exec, on the main thread's stack, mapped and writable for the process's
        // life; reads and writes stay inside it, through raw pointers (no reference to
        // it is made). What is written is only `name`'s strings, which `unsetenv` has
        // just taken out of `environ` (glibc never frees them: not its own), while no
        // other thread exists; `environ` may still point at other strings here, which
        // are left as they are.
        unsafe {
            let string = at as *mut u8;
            let mut len = 0;
            while at + len < end && string.add(len).read() != 0 {
                len += 1;
            }
            let matches =
                len >= prefix.len() && (0..prefix.len()).all(|i| string.add(i).read() == prefix[i]);
            if matches {
                string.write_bytes(0, len);
            }
            at += len + 1;
        }
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

// ---- Lock hand-over: a seccomp user-notification filter on flock(2) ----
//
// The filter is a hand-written classic BPF program of nine instructions rather than
// libseccomp (a C library a fresh machine lacks) or a crate that builds programs: it has
// one job (send `flock` to the listener, allow everything else), and nine instructions
// can be read whole. It checks the architecture first, as every seccomp filter must (a
// system-call number means nothing without it): native calls and the 32-bit compat ABI
// (i386 on x86_64, arm on aarch64) are both trapped; x32 calls (x86_64's arch with bit 30
// set in the number) are let through unseen.

/// `AUDIT_ARCH_*` of this build's native and compat system-call ABIs, and `flock`'s number
/// in each (`<linux/audit.h>`, the kernel's syscall tables).
#[cfg(target_arch = "x86_64")]
const ARCHES: [(u32, u32); 2] = [(0xC000_003E, 73), (0x4000_0003, 143)];
#[cfg(target_arch = "aarch64")]
const ARCHES: [(u32, u32); 2] = [(0xC000_00B7, 32), (0x4000_0028, 143)];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCHES: [(u32, u32); 2] = [(0, u32::MAX), (0, u32::MAX)];

const fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}
/// `BPF_LD | BPF_W | BPF_ABS`, `BPF_JMP | BPF_JEQ | BPF_K`, `BPF_RET | BPF_K`.
const LD_ABS: u16 = 0x20;
const JEQ: u16 = 0x15;
const RET: u16 = 0x06;
/// Offsets in `struct seccomp_data`: `nr` then `arch`.
const NR: u32 = 0;
const ARCH: u32 = 4;

/// The filter: `flock` of either ABI → `SECCOMP_RET_USER_NOTIF`; anything else → allow.
/// Jump offsets count from the next instruction.
static FLOCK_FILTER: [libc::sock_filter; 9] = [
    bpf(LD_ABS, 0, 0, ARCH),                      // 0: A = arch
    bpf(JEQ, 0, 2, ARCHES[0].0),                  // 1: native? 2 : 4
    bpf(LD_ABS, 0, 0, NR),                        // 2: A = nr
    bpf(JEQ, 3, 4, ARCHES[0].1),                  // 3: flock? 7 : 8
    bpf(JEQ, 0, 3, ARCHES[1].0),                  // 4: compat? 5 : 8
    bpf(LD_ABS, 0, 0, NR),                        // 5: A = nr
    bpf(JEQ, 0, 1, ARCHES[1].1),                  // 6: flock? 7 : 8
    bpf(RET, 0, 0, libc::SECCOMP_RET_USER_NOTIF), // 7: ask the listener
    bpf(RET, 0, 0, libc::SECCOMP_RET_ALLOW),      // 8: allow
];

/// For tests: `clone3` of the native ABI fails with ENOSYS, as under a container
/// runtime whose seccomp profile predates it (or a kernel before 5.3), so that the
/// supervisor's fallback spawn (std's) runs. Jump offsets as in [`FLOCK_FILTER`].
static NO_CLONE3_FILTER: [libc::sock_filter; 6] = [
    bpf(LD_ABS, 0, 0, ARCH),                                       // 0: A = arch
    bpf(JEQ, 0, 3, ARCHES[0].0),                                   // 1: native? 2 : 5
    bpf(LD_ABS, 0, 0, NR),                                         // 2: A = nr
    bpf(JEQ, 0, 1, libc::SYS_clone3 as u32),                       // 3: clone3? 4 : 5
    bpf(RET, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32), // 4: fail
    bpf(RET, 0, 0, libc::SECCOMP_RET_ALLOW),                       // 5: allow
];

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, program)`: the system call's result (with
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`, the listener's descriptor), or -1 with `errno`
/// set. Async-signal-safe: a stack value pointing at a static program, one system call.
fn set_filter(program: &'static [libc::sock_filter], flags: libc::c_ulong) -> libc::c_long {
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at the static program for the duration of the call.
    unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    }
}

/// `no_new_privs` for this thread and its children (what seccomp wants of a process
/// without CAP_SYS_ADMIN). Async-signal-safe.
fn no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    match unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Installs [`NO_CLONE3_FILTER`] on this process (inherited by every child; with
/// `no_new_privs`, so that it needs no privilege). For the test probe only.
pub(crate) fn deny_clone3() -> io::Result<()> {
    no_new_privs()?;
    let flags = libc::SECCOMP_FILTER_FLAG_TSYNC;
    match set_filter(&NO_CLONE3_FILTER, flags) {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Whether this machine can hand the lock over: `Err` names what is missing (kernel too
/// old, seccomp not built in, or forbidden by a container's profile).
pub(crate) fn handover_available() -> Result<(), String> {
    if cfg!(not(any(target_arch = "x86_64", target_arch = "aarch64"))) {
        return Err("the lock hand-over's filter is written for x86_64 and aarch64 only".into());
    }
    // SECCOMP_ADDFD_FLAG_SETFD and the CONTINUE flag: Linux 5.9.
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if (major, minor) < (5, 9) {
        return Err(format!(
            "Linux {release} is too old (seccomp's SECCOMP_IOCTL_NOTIF_ADDFD needs 5.9)"
        ));
    }
    let action: u32 = libc::SECCOMP_RET_USER_NOTIF;
    // SAFETY: SECCOMP_GET_ACTION_AVAIL reads one u32 through the pointer, which points at
    // a live local for the duration of the call; it changes nothing.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) => "this kernel has no seccomp user notification".into(),
            Some(libc::ENOSYS) | Some(libc::EINVAL) => {
                "seccomp is not built into this kernel".into()
            }
            _ => format!("seccomp is not allowed here ({e}; a container's seccomp profile?)"),
        });
    }
    // The kernel allows one listener per chain of filters: under a filter that has one
    // (this process runs in another hand-over loop, or under a container runtime's
    // notifier) the child's would fail with EBUSY. Only a filtered process can be in
    // that case, so only then is a listener tried, in a child that exits at once.
    let status = super::read_text("/proc/self/status").unwrap_or_default();
    let filtered = status
        .lines()
        .any(|l| l.split_whitespace().eq(["Seccomp:", "2"]));
    match filtered.then(try_listener) {
        Some(Err(e)) if e.raw_os_error() == Some(libc::EBUSY) => Err(
            "a seccomp listener is already installed above this process (it runs inside another loop with the lock handed over, or under a container runtime's seccomp notifier), and the kernel allows one"
                .into(),
        ),
        Some(Err(e)) => Err(format!("seccomp is not allowed here ({e})")),
        _ => Ok(()),
    }
}

/// Installs [`FLOCK_FILTER`] with a listener in a forked child, which exits at once:
/// whether this process's children can have one.
fn try_listener() -> io::Result<()> {
    // SAFETY: fork; the child makes only async-signal-safe calls (prctl, seccomp, _exit)
    // on a stack value pointing at a static program, then exits without returning.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // (`no_new_privs` and the filter die with this child.)
        let _ = no_new_privs();
        let flags = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
        let r = set_filter(&FLOCK_FILTER, flags);
        // SAFETY: reads this thread's errno, then _exit(2): async-signal-safe.
        unsafe {
            let code = if r < 0 { *libc::__errno_location() } else { 0 };
            libc::_exit(code.clamp(0, 255));
        }
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked, into a local.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(()),
        Some(errno) => Err(io::Error::from_raw_os_error(errno)),
        None => Err(io::Error::other("the probe did not exit")),
    }
}

/// Between fork and exec, in the child: installs [`FLOCK_FILTER`] with a listener and
/// sends the listener over `sock` (SCM_RIGHTS), then closes it. `SPEC_ALLOW`: the
/// filter is no sandbox (it allows every call), so the kernel is told not to switch on
/// its speculative-execution mitigations for the tree as it does for seccomp sandboxes
/// where so configured (that would slow compilers down by several per cent). Without CAP_SYS_ADMIN
/// the kernel wants `no_new_privs` first: it is set only then (so set-user-ID programs
/// cannot raise privileges inside the loop). Async-signal-safe: system calls on stack
/// values and a static program; no allocation.
pub(crate) fn install_flock_filter(sock: RawFd) -> io::Result<()> {
    let flags = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW;
    let install = || set_filter(&FLOCK_FILTER, flags);
    let mut listener = install();
    if listener < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EACCES) {
        no_new_privs()?;
        listener = install();
    }
    if listener < 0 {
        return Err(io::Error::last_os_error());
    }
    let listener = listener as RawFd;
    let sent = send_fd(sock, listener);
    // SAFETY: closes the descriptor the kernel just gave us; the answerer has its copy.
    unsafe {
        libc::close(listener);
    }
    sent
}

/// The header of a message of one byte (`iov`) with room in `control` (8-byte aligned)
/// for one header carrying one descriptor: what [`send_fd`] sends and [`recv_fd`]
/// receives. Plain stores, no allocation: async-signal-safe.
fn one_fd_msg(iov: &mut libc::iovec, control: &mut [u64; 4]) -> libc::msghdr {
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
    msg
}

/// Sends descriptor `fd` over the Unix socket `sock` with one byte of data.
/// Async-signal-safe (used between fork and exec): stack buffers only.
fn send_fd(sock: RawFd, fd: RawFd) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 4];
    let msg = one_fd_msg(&mut iov, &mut control);
    // SAFETY: msg_control points at `control`, large enough for one header and one int
    // (CMSG_SPACE above), so the first header and its data lie inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    loop {
        // SAFETY: `msg` and everything it points at live on this stack frame.
        let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Receives one descriptor sent by [`send_fd`]; `None` when the other end closed
/// without sending one.
fn recv_fd(sock: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 4];
    let mut msg = one_fd_msg(&mut iov, &mut control);
    loop {
        // SAFETY: `msg` and its buffers live on this stack frame; MSG_CMSG_CLOEXEC makes
        // the received descriptor close-on-exec.
        let r = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        break;
    }
    // SAFETY: the kernel filled `control` up to msg_controllen; CMSG_FIRSTHDR returns
    // null when there is no header, and the header's data holds one int when it is an
    // SCM_RIGHTS message of that length.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
            || (*cmsg).cmsg_len as usize
                != libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize
        {
            return Ok(None);
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        Ok(Some(<OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)))
    }
}

/// One trapped `flock(fd, op)` call, waiting for an answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Trapped {
    pub(crate) id: u64,
    /// The calling thread, in our pid namespace (0 when it is not visible from here).
    pub(crate) pid: u32,
    pub(crate) fd: i32,
    pub(crate) op: i32,
}

/// The seccomp listener of a child's filter: every `flock` in the child's tree waits
/// here until it is answered.
pub(crate) struct Listener {
    fd: OwnedFd,
}

impl Listener {
    /// Receives the listener the child sends over `sock` before its `exec`; `None` when
    /// the child closed the socket without sending one.
    pub(crate) fn receive(sock: BorrowedFd<'_>) -> io::Result<Option<Listener>> {
        Ok(recv_fd(sock)?.map(|fd| Listener { fd }))
    }

    /// The next trapped call; `None` when it went away before we read it (its caller
    /// was killed or interrupted by a signal).
    pub(crate) fn next(&self) -> io::Result<Option<Trapped>> {
        // SAFETY: seccomp_notif is plain data; the kernel wants it zeroed.
        let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: the ioctl fills `n`, a live local of the size its number encodes.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &mut n as *mut libc::seccomp_notif,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::EINTR) => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(Trapped {
            id: n.id,
            pid: n.pid,
            fd: n.data.args[0] as i32,
            op: n.data.args[1] as i32,
        }))
    }

    /// Whether the call `id` still waits (its caller's pid still names it).
    pub(crate) fn still_waiting(&self, id: u64) -> bool {
        // SAFETY: the ioctl reads one u64 from a live local.
        unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                &id as *const u64,
            ) == 0
        }
    }

    fn respond(&self, id: u64, val: i64, flags: u32) -> io::Result<()> {
        let resp = libc::seccomp_notif_resp {
            id,
            val,
            error: 0,
            flags,
        };
        // SAFETY: the ioctl reads the response from a live local.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &resp as *const libc::seccomp_notif_resp,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            // The caller is gone or was interrupted: nothing waits for the answer.
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }

    /// Lets the call run in the kernel as if no filter were there.
    pub(crate) fn let_through(&self, id: u64) -> io::Result<()> {
        self.respond(id, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32)
    }

    /// Answers the call with success (returns 0) without performing it.
    pub(crate) fn succeed(&self, id: u64) -> io::Result<()> {
        self.respond(id, 0, 0)
    }

    /// Replaces the caller's descriptor `target` with a copy of our `src`
    /// (`SECCOMP_IOCTL_NOTIF_ADDFD` with `SECCOMP_ADDFD_FLAG_SETFD`: like `dup3` in the
    /// caller), close-on-exec when `cloexec`.
    pub(crate) fn replace_fd(
        &self,
        id: u64,
        src: BorrowedFd<'_>,
        target: i32,
        cloexec: bool,
    ) -> io::Result<()> {
        let add = libc::seccomp_notif_addfd {
            id,
            flags: libc::SECCOMP_ADDFD_FLAG_SETFD as u32,
            srcfd: src.as_raw_fd() as u32,
            newfd: target as u32,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        // SAFETY: the ioctl reads the request from a live local; `src` is borrowed open.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ADDFD,
                &add as *const libc::seccomp_notif_addfd,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The root (in the hierarchy) of the cgroup v2 mount whose mount point is `path`, found
/// by looking at that one mount: `statx` for its id, `statmount(2)` (Linux 6.8) for its
/// file system, root and mount point. Reading `/proc/self/mountinfo` instead formats
/// every mount (31 us with 21 mounts here, against 4.5 us). `None` when `path` is no
/// such mount point, or the kernel cannot say this way.
pub(crate) fn cgroup2_mount_root(path: &std::path::Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    const STATX_MNT_ID_UNIQUE: u32 = 0x4000;
    const SYS_STATMOUNT: libc::c_long = 457;
    // What to ask: the superblock's basics (its magic), the mount's root and its point.
    const WANTED: u64 = 0x1 | 0x8 | 0x10;
    const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
    #[repr(C)]
    struct MntIdReq {
        size: u32,
        spare: u32,
        mnt_id: u64,
        param: u64,
    }
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero `statx` is a valid value of the plain C struct.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated; statx writes one struct into `sx`, ours.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            0,
            STATX_MNT_ID_UNIQUE,
            &mut sx,
        )
    };
    if r != 0 || sx.stx_mask & STATX_MNT_ID_UNIQUE == 0 {
        return None;
    }
    let req = MntIdReq {
        size: std::mem::size_of::<MntIdReq>() as u32,
        spare: 0,
        mnt_id: sx.stx_mnt_id,
        param: WANTED,
    };
    let mut buf = [0u8; 2048];
    // SAFETY: statmount reads `req` (its size in it) and writes at most `buf.len()` bytes
    // into `buf`, ours.
    let r = unsafe { libc::syscall(SYS_STATMOUNT, &req, buf.as_mut_ptr(), buf.len(), 0u32) };
    if r != 0 {
        return None;
    }
    // struct statmount: `mask` at 8, `sb_magic` at 24, the offsets of `mnt_root` and
    // `mnt_point` at 104 and 108 into its strings, which begin at 512.
    let u32_at = |at: usize| {
        buf.get(at..at + 4)
            .map(|b| u32::from_ne_bytes(b.try_into().unwrap_or_default()))
    };
    let u64_at = |at: usize| {
        buf.get(at..at + 8)
            .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or_default()))
    };
    let string = |at: usize| {
        let start = 512 + u32_at(at)? as usize;
        let len = buf.get(start..)?.iter().position(|b| *b == 0)?;
        Some(&buf[start..start + len])
    };
    let ok = u64_at(8)? & WANTED == WANTED && u64_at(24)? == CGROUP2_SUPER_MAGIC;
    if !ok || string(108)? != path.as_os_str().as_bytes() {
        return None;
    }
    Some(String::from_utf8_lossy(string(104)?).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the classic BPF program over one `seccomp_data` (only `nr` and `arch` are
    /// read), as the kernel would: the three opcodes the filter uses.
    fn run(prog: &[libc::sock_filter], nr: u32, arch: u32) -> u32 {
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LD_ABS => a = if i.k == NR { nr } else { arch },
                JEQ => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                RET => return i.k,
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn the_filter_sends_flock_of_either_abi_to_the_listener_and_nothing_else() {
        let notify = libc::SECCOMP_RET_USER_NOTIF;
        let allow = libc::SECCOMP_RET_ALLOW;
        let [(native, flock), (compat, compat_flock)] = ARCHES;
        assert_eq!(run(&FLOCK_FILTER, flock, native), notify);
        assert_eq!(run(&FLOCK_FILTER, compat_flock, compat), notify);
        // The other ABI's flock number is another call here, and the reverse.
        assert_eq!(run(&FLOCK_FILTER, compat_flock, native), allow);
        assert_eq!(run(&FLOCK_FILTER, flock, compat), allow);
        // Every other call, and an unknown architecture, goes through.
        for nr in (0..512).filter(|&nr| nr != flock) {
            assert_eq!(run(&FLOCK_FILTER, nr, native), allow, "nr {nr}");
        }
        assert_eq!(run(&FLOCK_FILTER, flock, 0x1234), allow);
        // x32 (bit 30 of the number) is not trapped: documented.
        assert_eq!(run(&FLOCK_FILTER, flock | 0x4000_0000, native), allow);
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        assert_eq!(flock as libc::c_long, libc::SYS_flock);
    }
}

/// `struct clone_args` of `<linux/sched.h>` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The child's own stack for [`clone_vfork`]: mapped, with a guard page below it
/// (a child running over it faults instead of writing into our memory), unmapped on
/// drop. (x86-64 only, as [`clone_vfork`].)
#[cfg(target_arch = "x86_64")]
pub(crate) struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}
#[cfg(target_arch = "x86_64")]
impl ChildStack {
    /// Room for the child's few frames up to `exec` (system calls on values computed
    /// before the clone): 64 KiB, most of it never touched.
    const SIZE: usize = 64 * 1024;
    pub(crate) fn new() -> io::Result<ChildStack> {
        let page = 4096;
        let len = Self::SIZE + page;
        // SAFETY: an anonymous private mapping of our own; its result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack { base, len };
        // SAFETY: the lowest page of the mapping just made: the guard.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }
}
#[cfg(target_arch = "x86_64")]
impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, unmapped once.
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

/// `clone3(CLONE_VM | CLONE_VFORK)`, with `CLONE_INTO_CGROUP` when `cgroup_dir` is
/// given (the child starts in the cgroup whose directory it is open on): the child
/// shares our memory, runs `child(arg)` on `stack` and exits with its return value
/// unless it execs first; we are suspended
/// until it has exec'd or exited (as `posix_spawn` does it). Nothing of our memory is
/// copied, so the clone costs no page tables and `exec` no tear-down of a copy. `child`
/// must only make system calls and write only to its stack and to what `arg` lets it.
/// Returns the child's pid. x86-64 only (the child's first instructions on its new
/// stack need a few lines of assembly); elsewhere [`clone_into_cgroup`] forks.
#[cfg(target_arch = "x86_64")]
pub(crate) fn clone_vfork(
    cgroup_dir: Option<RawFd>,
    stack: &mut ChildStack,
    child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> io::Result<i32> {
    const CLONE_VM: u64 = libc::CLONE_VM as u64;
    const CLONE_VFORK: u64 = libc::CLONE_VFORK as u64;
    let into = cgroup_dir.map_or(0, |_| CLONE_INTO_CGROUP);
    let args = CloneArgs {
        flags: into | CLONE_VM | CLONE_VFORK,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.base as u64,
        stack_size: stack.len as u64,
        cgroup: cgroup_dir.unwrap_or(0) as u64,
        ..CloneArgs::default()
    };
    let rc: i64;
    // SAFETY: `args` is a valid clone_args of the size passed, alive for the call; its
    // stack is mapped (the guard page at its low end) and 16-byte aligned at the top,
    // where the kernel starts the child. In the parent the system call returns like any
    // other (it clobbers rcx and r11; rdi, rsi, r12 and r13 keep their values). The
    // child starts at the instruction after `syscall` with rax 0 and rsp at the top of
    // its stack: it clears the frame pointer, calls `child(arg)` (the pointers it was
    // given in r12 and r13) and ends with exit_group(2), never returning here. We do
    // not run again until it has exec'd or exited (CLONE_VFORK), so it has our memory
    // to itself but for our other threads, which it does not touch. Signals: the child
    // starts with our mask (every signal we read blocked) and our dispositions, which
    // are the defaults but for glibc's two reserved signals, whose handlers ignore what
    // they were not sent by this very process, and the lock wait's wake signal (a handler
    // of ours that only stores to an atomic); all three are reset in the child before it
    // unblocks anything (`Prepared::apply`). Any other handler of ours would have to be
    // reset there too, or it could run in the child on our memory. A stop signal (Ctrl-Z) caught between the
    // child's `tcsetpgrp` and its `exec` stops it with us still suspended, until a
    // SIGCONT, as with `posix_spawn`.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, {exit_group}",
            "syscall",
            "ud2",
            "2:",
            exit_group = const libc::SYS_exit_group,
            inlateout("rax") libc::SYS_clone3 => rc,
            in("rdi") &args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") child,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if rc < 0 {
        return Err(io::Error::from_raw_os_error(-rc as i32));
    }
    Ok(rc as i32)
}

/// `fork`, but the child starts in the cgroup whose directory `cgroup_dir` is open on
/// (`clone3` with `CLONE_INTO_CGROUP`): 0 in the child, its pid in the parent. The
/// child is a copy of this process like a forked one and must only make system calls
/// until it execs (see `sys/spawn.rs`).
// Compiled everywhere; used where `clone_vfork` is not (not x86-64).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
pub(crate) fn clone_into_cgroup(cgroup_dir: RawFd) -> io::Result<i32> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup_dir as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args of the size passed, alive for the call. No
    // CLONE_VM and no stack: like fork, the child returns here on a copy of our memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as i32)
}
