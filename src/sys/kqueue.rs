//! macOS's and FreeBSD's room: one kqueue for signals and `.ralph/` changes
//! (`EVFILT_SIGNAL`, `EVFILT_VNODE`), `EVFILT_PROC`/`NOTE_EXIT` for a process handle,
//! start times from `proc_pidinfo` (macOS) or `kinfo_proc` (FreeBSD), and
//! `procctl(PROC_REAP_ACQUIRE)` on FreeBSD. The same names as `linux.rs`; `sys.rs`
//! lists them.
//!
//! Compiled and linted in CI for `aarch64-apple-darwin`, `x86_64-apple-darwin` and
//! `x86_64-unknown-freebsd`, never run there: keep this glue thin.
//!
//! Signals stay blocked as on Linux (a blocked signal stays pending, and `exec` gives
//! the child a clean disposition). The kernel records each one on the kqueue when it is
//! sent, whatever the mask; the event loop then takes the pending signal off the
//! process ([`take_pending`]), on FreeBSD with its `siginfo` (a `sigqueue` payload).
//! Timers are the timeout of the `poll` that waits on the kqueue's descriptor, as on
//! Linux, so `EVFILT_TIMER` is not needed.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::event::{EvFlags, EventFilter, FilterFlag, KEvent, Kqueue};

use super::Received;

/// FreeBSD's real-time signals (`SIGRTMIN`..=`SIGRTMAX` in `<sys/signal.h>`).
#[cfg(target_os = "freebsd")]
const RT: std::ops::RangeInclusive<i32> = 65..=126;

/// The signals the supervisor resets and blocks: the classic 1..=31, and on FreeBSD
/// the real-time ones (32 and 33 belong to the thread library).
pub(crate) fn signal_numbers() -> impl Iterator<Item = i32> {
    let classic = 1..32;
    #[cfg(target_os = "freebsd")]
    return classic.chain(RT);
    #[cfg(not(target_os = "freebsd"))]
    classic
}

/// No signals reserved by the C library that `exec` could pass on ignored.
pub(crate) fn reserved_signals() -> std::ops::Range<i32> {
    0..0
}

/// The first real-time signal, where there are any (not on macOS).
pub(crate) fn realtime_min() -> Option<i32> {
    #[cfg(target_os = "freebsd")]
    return Some(*RT.start());
    #[cfg(not(target_os = "freebsd"))]
    None
}

/// The number a `.ralph/` change is reported as (no signal is sent for it here; a real
/// SIGIO, which Linux sends when its queue overflows, also means "look again").
pub(crate) fn watch_signal() -> i32 {
    libc::SIGIO
}

/// `si_code` of a signal sent by `sigqueue(3)` (`<sys/signal.h>`, both systems).
pub(crate) const SI_QUEUE: i32 = 0x10002;

/// `si_code` of a signal the kernel sent, as the terminal's job-control signals are
/// (FreeBSD's `<sys/signal.h>`). macOS has no such code: its value matches nothing, and
/// a job-control stop then always goes to the whole job (see `terminal::stop_self`).
#[cfg(target_os = "freebsd")]
pub(crate) const SI_KERNEL: i32 = 0x10006;
#[cfg(target_os = "macos")]
pub(crate) const SI_KERNEL: i32 = i32::MIN;

fn no_wait() -> Option<libc::timespec> {
    Some(libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    })
}

fn empty_event() -> KEvent {
    KEvent::new(
        0,
        EventFilter::EVFILT_SIGNAL,
        EvFlags::empty(),
        FilterFlag::empty(),
        0,
        0,
    )
}

/// Signals, child exits (SIGCHLD) and `.ralph/` changes, on one kqueue whose descriptor
/// the event loop polls.
pub(crate) struct EventSource {
    kq: Kqueue,
    /// Read off the kqueue, not yet handed out.
    queue: RefCell<VecDeque<Received>>,
}

impl EventSource {
    /// Resets and blocks every catchable signal and registers each on a new kqueue.
    pub(crate) fn install() -> io::Result<EventSource> {
        super::reset_and_block_signals()?;
        let kq = Kqueue::new()?;
        let changes: Vec<KEvent> = super::blocked_signals()
            .map(|sig| {
                KEvent::new(
                    sig as usize,
                    EventFilter::EVFILT_SIGNAL,
                    EvFlags::EV_ADD,
                    FilterFlag::empty(),
                    0,
                    0,
                )
            })
            .collect();
        kq.kevent(&changes, &mut [], no_wait())?;
        Ok(EventSource {
            kq,
            queue: RefCell::new(VecDeque::new()),
        })
    }

    /// The next pending signal or change, if any.
    pub(crate) fn next(&self) -> io::Result<Option<Received>> {
        let mut queue = self.queue.borrow_mut();
        if queue.is_empty() {
            let mut events = [empty_event(); 32];
            let n = match self.kq.kevent(&[], &mut events, no_wait()) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(e.into()),
            };
            for event in &events[..n] {
                match event.filter() {
                    Ok(EventFilter::EVFILT_SIGNAL) => {
                        // The kqueue says how often it was sent since the last look;
                        // the pending set says what is still to be handled (a classic
                        // signal sent twice is pending once, as a signalfd reads it
                        // once; one taken in an earlier batch is not read again).
                        let signo = event.ident() as i32;
                        for _ in 0..event.data().max(1) {
                            let Some((code, value)) = take_pending(signo) else {
                                break;
                            };
                            queue.push_back(Received { signo, code, value });
                        }
                    }
                    Ok(EventFilter::EVFILT_VNODE) => queue.push_back(Received {
                        signo: watch_signal(),
                        code: 0,
                        value: 0,
                    }),
                    _ => {}
                }
            }
        }
        Ok(queue.pop_front())
    }

    /// Reports every change of `dir`'s entries (and its own removal) as
    /// [`watch_signal`], for as long as `dir` stays open.
    pub(crate) fn watch_directory(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        let change = KEvent::new(
            dir.as_raw_fd() as usize,
            EventFilter::EVFILT_VNODE,
            EvFlags::EV_ADD | EvFlags::EV_CLEAR,
            FilterFlag::NOTE_WRITE | FilterFlag::NOTE_DELETE | FilterFlag::NOTE_RENAME,
            0,
            0,
        );
        self.kq.kevent(&[change], &mut [], no_wait())?;
        Ok(())
    }
}

impl AsFd for EventSource {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.kq.as_fd()
    }
}

/// Takes one pending instance of the blocked signal `sig` off the process: `(si_code,
/// payload)`, `None` when none is pending.
#[cfg(target_os = "freebsd")]
fn take_pending(sig: i32) -> Option<(i32, u64)> {
    let set = one_signal(sig);
    let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::zeroed();
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `set` is an initialised sigset_t, `info` a writable siginfo_t and `zero`
    // a valid timespec, all for the duration of the call.
    let got = unsafe { libc::sigtimedwait(&set, info.as_mut_ptr(), &zero) };
    if got != sig {
        return None;
    }
    // SAFETY: sigtimedwait filled `info` in (it returned the signal); it was zeroed
    // before in any case.
    let info = unsafe { info.assume_init() };
    Some((info.si_code, info.si_value.sival_ptr as u64))
}

/// Takes the pending blocked signal `sig` off the process (macOS has no
/// `sigtimedwait`: `sigwait` returns at once for a signal known to be pending, and
/// there is no payload to read). `None` when it is not pending.
#[cfg(target_vendor = "apple")]
fn take_pending(sig: i32) -> Option<(i32, u64)> {
    let mut pending = super::empty_sigset();
    // SAFETY: `pending` is a writable, initialised sigset_t.
    if unsafe { libc::sigpending(&mut pending) } != 0 {
        return None;
    }
    // SAFETY: `pending` was filled by sigpending; `sig` is a valid signal number.
    if unsafe { libc::sigismember(&pending, sig) } != 1 {
        return None;
    }
    let set = one_signal(sig);
    let mut got = 0;
    // SAFETY: `set` is initialised and `got` writable; the signal is pending and
    // blocked in this thread, so sigwait returns without waiting.
    if unsafe { libc::sigwait(&set, &mut got) } != 0 {
        return None;
    }
    Some((0, 0))
}

fn one_signal(sig: i32) -> libc::sigset_t {
    let mut set = super::empty_sigset();
    // SAFETY: `set` is an initialised sigset_t and `sig` a valid signal number.
    unsafe {
        libc::sigaddset(&mut set, sig);
    }
    set
}

/// A handle on one process: a kqueue watching for its exit (`EVFILT_PROC`,
/// `NOTE_EXIT`), readable once it has exited. Signals go by pid after a look at that
/// kqueue, so a process that has exited is never signalled; only a pid reused in the
/// instant between the look and `kill` could be (a pidfd closes even that gap).
pub(crate) struct ProcessHandle {
    kq: Kqueue,
    pid: i32,
}

impl ProcessHandle {
    /// Opens a handle on `pid`; fails (ESRCH) when it is gone.
    pub(crate) fn open(pid: i32) -> io::Result<ProcessHandle> {
        let kq = Kqueue::new()?;
        let change = KEvent::new(
            pid as usize,
            EventFilter::EVFILT_PROC,
            EvFlags::EV_ADD | EvFlags::EV_ONESHOT,
            FilterFlag::NOTE_EXIT,
            0,
            0,
        );
        kq.kevent(&[change], &mut [], no_wait())?;
        Ok(ProcessHandle { kq, pid })
    }

    /// Sends `sig` to the process, if it has not exited (ESRCH when it has).
    pub(crate) fn signal(&self, sig: i32) -> io::Result<()> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(self.kq.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::ZERO)? > 0 {
            return Err(Errno::ESRCH.into());
        }
        // SAFETY: a plain system call on integers.
        if unsafe { libc::kill(self.pid, sig) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl AsFd for ProcessHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.kq.as_fd()
    }
}

/// What the kernel says about one process: its start time (microseconds since the
/// epoch) and whether it is a zombie. `None` when there is no such process.
#[cfg(target_vendor = "apple")]
pub(crate) fn process_identity(pid: u32) -> Option<(u64, bool)> {
    let mut info = std::mem::MaybeUninit::<libc::proc_bsdinfo>::zeroed();
    let size = std::mem::size_of::<libc::proc_bsdinfo>() as libc::c_int;
    // SAFETY: `info` is a writable buffer of exactly `size` bytes for the duration of
    // the call.
    let n = unsafe {
        libc::proc_pidinfo(
            pid as libc::c_int,
            libc::PROC_PIDTBSDINFO,
            0,
            info.as_mut_ptr().cast(),
            size,
        )
    };
    if n != size {
        return None;
    }
    // SAFETY: proc_pidinfo wrote the whole structure (it returned its size).
    let info = unsafe { info.assume_init() };
    let start = info.pbi_start_tvsec * 1_000_000 + info.pbi_start_tvusec;
    Some((start, info.pbi_status == libc::SZOMB))
}

/// What the kernel says about one process: its start time (microseconds since the
/// epoch, from `kinfo_proc`) and whether it is a zombie. `None` when there is no such
/// process.
#[cfg(target_os = "freebsd")]
pub(crate) fn process_identity(pid: u32) -> Option<(u64, bool)> {
    let mut mib = [
        libc::CTL_KERN,
        libc::KERN_PROC,
        libc::KERN_PROC_PID,
        pid as libc::c_int,
    ];
    let mut info = std::mem::MaybeUninit::<libc::kinfo_proc>::zeroed();
    let mut len = std::mem::size_of::<libc::kinfo_proc>();
    // SAFETY: `mib` names four integers, `info` is a writable buffer of `len` bytes and
    // `len` is updated in place; nothing is written to the kernel (null new value).
    let rc = unsafe {
        libc::sysctl(
            mib.as_mut_ptr(),
            mib.len() as libc::c_uint,
            info.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null(),
            0,
        )
    };
    if rc != 0 || len != std::mem::size_of::<libc::kinfo_proc>() {
        return None;
    }
    // SAFETY: the kernel filled the whole structure (`len` is its size); it was zeroed
    // before in any case.
    let info = unsafe { info.assume_init() };
    let start = info.ki_start.tv_sec as u64 * 1_000_000 + info.ki_start.tv_usec as u64;
    Some((start, info.ki_stat == libc::SZOMB))
}

/// Linux blanks the variable in the environment block the process started with; here
/// the kernel's copy (`ps e`, `KERN_PROCARGS2`) is left as it is: `sys::take_env` only
/// takes it out of `environ`.
pub(crate) fn blank_initial_env(_name: &str) {}

/// Makes this process the reaper of its descendants (`procctl(PROC_REAP_ACQUIRE)`).
#[cfg(target_os = "freebsd")]
pub(crate) fn become_subreaper() -> io::Result<()> {
    // SAFETY: a plain system call on integers and a null argument, which
    // PROC_REAP_ACQUIRE takes.
    let rc = unsafe {
        libc::procctl(
            libc::P_PID,
            libc::getpid() as libc::id_t,
            libc::PROC_REAP_ACQUIRE,
            std::ptr::null_mut(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// macOS has no subreaper: orphaned descendants go to launchd (see README).
#[cfg(target_vendor = "apple")]
pub(crate) fn become_subreaper() -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Abstract `AF_UNIX` sockets exist on Linux only.
pub(crate) fn abstract_socket_addr(_name: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist on Linux only",
    ))
}

/// macOS has no `sigqueue(3)`: callers fall back to the stop-request file.
#[cfg(target_vendor = "apple")]
pub(crate) fn sigqueue(_pid: i32, _sig: i32, _value: usize) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Never called: there are no reserved signals here ([`reserved_signals`] is empty).
pub(crate) fn reset_reserved_signal(_sig: i32) {}

/// No cgroups and no `clone3` here (Linux's `sys/spawn.rs`): the command is spawned the
/// usual way.
pub(crate) fn spawn_direct(
    _cmd: &std::process::Command,
    _prepared: &super::Prepared,
    _cgroup_dir: Option<std::os::fd::RawFd>,
) -> Option<io::Result<u32>> {
    None
}

/// No cgroups here.
pub(crate) fn cgroup2_mount_root(_path: &std::path::Path) -> Option<String> {
    None
}

/// Disk space is not reserved ahead of a rewrite here (no `FALLOC_FL_KEEP_SIZE`): the
/// write takes its chance, as on a Linux file system without `fallocate`.
pub(crate) fn reserve(_fd: BorrowedFd<'_>, _offset: u64, _len: u64) -> io::Result<()> {
    Ok(())
}

/// No lock hand-over here: macOS and FreeBSD have no seccomp user notification (nor any
/// other way to answer another process's `flock` for it).
pub(crate) fn handover_available() -> Result<(), String> {
    Err("this system has no seccomp user notification (the hand-over is Linux's)".into())
}

/// No `clone3` here to deny: the spawn is std's already (for the test probe).
pub(crate) fn deny_clone3() -> io::Result<()> {
    Ok(())
}

/// Never called ([`handover_available`] says no).
pub(crate) fn install_flock_filter(_sock: std::os::fd::RawFd) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// One trapped `flock` (never, here).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Trapped {
    pub(crate) id: u64,
    pub(crate) pid: u32,
    pub(crate) fd: i32,
    pub(crate) op: i32,
}

/// The hand-over's listener: none exists here; every method says unsupported.
pub(crate) struct Listener {
    fd: std::os::fd::OwnedFd,
}

impl Listener {
    pub(crate) fn receive(_sock: BorrowedFd<'_>) -> io::Result<Option<Listener>> {
        Err(io::ErrorKind::Unsupported.into())
    }
    pub(crate) fn next(&self) -> io::Result<Option<Trapped>> {
        Err(io::ErrorKind::Unsupported.into())
    }
    pub(crate) fn still_waiting(&self, _id: u64) -> bool {
        false
    }
    pub(crate) fn let_through(&self, _id: u64) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    pub(crate) fn succeed(&self, _id: u64) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    pub(crate) fn replace_fd(
        &self,
        _id: u64,
        _src: BorrowedFd<'_>,
        _target: i32,
        _cloexec: bool,
    ) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

impl std::os::fd::AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }
}

/// Waits for the exclusive flock of one open file description, with two wake-ups: a
/// helper thread blocks in `flock` on its own descriptor of it and writes to a socket
/// the waiting thread polls beside the event source. (Linux's room wakes once: its
/// waiting thread blocks in `flock` itself, interrupted by a signal from a watcher;
/// here that would be untested glue for a few tens of microseconds per hand-off.) If
/// the wait is given up, the helper stays in `flock`; should it get the lock later,
/// nobody listens any more, and closing its descriptor, the last one, unlocks.
pub(crate) struct LockWaiter<'a> {
    woken: std::os::unix::net::UnixStream,
    _lock: std::marker::PhantomData<BorrowedFd<'a>>,
}

impl<'a> LockWaiter<'a> {
    /// Starts the helper thread on a descriptor of its own of `lock`'s description.
    pub(crate) fn new(lock: BorrowedFd<'a>) -> io::Result<LockWaiter<'a>> {
        use std::io::Write;
        let own = lock.try_clone_to_owned()?;
        let (woken, mut tell) = std::os::unix::net::UnixStream::pair()?;
        std::thread::Builder::new()
            .name("flock-wait".into())
            .spawn(move || {
                let errno = match super::flock(own.as_fd(), super::FlockOp::Exclusive) {
                    Ok(()) => 0,
                    Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
                };
                let _ = tell.write_all(&errno.to_ne_bytes());
            })?;
        Ok(LockWaiter {
            woken,
            _lock: std::marker::PhantomData,
        })
    }

    /// Until the lock is ours, `events` turns readable, or `deadline` passes.
    pub(crate) fn wait(
        &mut self,
        events: Option<BorrowedFd<'_>>,
        deadline: Option<std::time::Instant>,
    ) -> io::Result<super::LockWait> {
        use nix::poll::{PollFd, PollFlags, poll};
        use std::io::Read;
        loop {
            let timeout = super::poll_timeout(deadline);
            let mut fds = vec![PollFd::new(self.woken.as_fd(), PollFlags::POLLIN)];
            fds.extend(events.map(|e| PollFd::new(e, PollFlags::POLLIN)));
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let ready = |i: usize| {
                fds.get(i)
                    .and_then(PollFd::revents)
                    .is_some_and(|r| !r.is_empty())
            };
            let (locked, evented) = (ready(0), ready(1));
            drop(fds);
            if locked {
                let mut errno = [0u8; 4];
                self.woken.read_exact(&mut errno)?;
                return match i32::from_ne_bytes(errno) {
                    0 => Ok(super::LockWait::Locked),
                    e => Err(io::Error::from_raw_os_error(e)),
                };
            }
            if evented {
                return Ok(super::LockWait::Events);
            }
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Ok(super::LockWait::Deadline);
            }
        }
    }
}
