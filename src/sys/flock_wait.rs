//! Linux: waiting for a flock with one wake-up ([`LockWaiter`]).
//!
//! The calling thread blocks in `flock(LOCK_EX)` itself, so that when the holder lets
//! go the kernel wakes exactly the thread that goes on to run the command (flock(1)'s
//! one wake-up; a helper thread in `flock` that then wakes the main thread costs a
//! second one on every hand-off: 0.05-0.10 ms, measured with perf tracepoints).
//!
//! What the wait must still hear (the event source turning readable: a signal, a
//! `.ralph/` change; the deadline) is watched by a small thread in `poll(2)`. It
//! cannot stop a `flock` in another thread by itself: it sends that thread
//! [`wake_signal`] with `tgkill`, which the waiting thread unblocks only for the
//! duration of its `flock`, with a handler that does nothing and no `SA_RESTART`, so
//! the `flock` returns `EINTR`. A signal that arrives just before the thread enters
//! `flock` runs the handler and is spent, and the `flock` would block on: so the
//! watcher sends again (after 1 ms, then less and less often) until the waiting thread
//! says it has returned. All other signals stay blocked throughout and are read from
//! the event source as before, by the caller; the watcher only looks (`poll`), it reads
//! nothing. The hand-off path is the `flock` returning and one `write` to stop the
//! watcher: no thread is joined there.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};
use std::time::Instant;

use super::LockWait;

/// The real-time signal that interrupts a waiting `flock` (`SIGRTMIN+2`; `+1` is
/// dnotify's). Blocked at all times but during that `flock`; one sent to the process
/// by someone else meanwhile is passed on to the event source (see [`LockWaiter::wait`]),
/// so it is still warned about as any other stray signal is.
pub(crate) fn wake_signal() -> i32 {
    libc::SIGRTMIN() + 2
}

/// The watcher's states, in [`Shared::state`].
const WAITING: u8 = 0;
/// The watcher saw something and is interrupting the waiting thread.
const INTERRUPTING: u8 = 1;
/// The waiting thread is out of its `flock`: the watcher stops.
const DONE: u8 = 2;

/// What the watcher saw, in [`Shared::reason`].
const SAW_EVENTS: u8 = 0;
const SAW_DEADLINE: u8 = 1;

/// Set by the handler when a [`wake_signal`] came from anyone but the watcher.
static FOREIGN: AtomicBool = AtomicBool::new(false);
/// Our pid, for the handler to tell the watcher's signals from others'.
static OUR_PID: AtomicI32 = AtomicI32::new(0);

/// Runs in signal context: only atomics.
extern "C" fn on_wake(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler; reading its
    // code and sender is async-signal-safe.
    let (code, pid) = unsafe { ((*info).si_code, (*info).si_pid()) };
    if code != libc::SI_TKILL || pid != OUR_PID.load(Ordering::Relaxed) {
        FOREIGN.store(true, Ordering::Relaxed);
    }
}

/// Installs [`on_wake`] for [`wake_signal`] once per process (it stays blocked but
/// during a waiting `flock`; `exec` resets it for children).
fn install_handler() -> io::Result<()> {
    static INSTALLED: std::sync::OnceLock<Result<(), i32>> = std::sync::OnceLock::new();
    let done = INSTALLED.get_or_init(|| {
        OUR_PID.store(std::process::id() as i32, Ordering::Relaxed);
        let mut sa = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
        // SAFETY: `sa` is zero-initialised (a valid sigaction), filled here before use;
        // the handler only touches atomics (async-signal-safe); no SA_RESTART, so that
        // the interrupted `flock` returns EINTR instead of restarting.
        let rc = unsafe {
            let sa = sa.as_mut_ptr();
            (*sa).sa_sigaction = on_wake as *const () as usize;
            (*sa).sa_flags = libc::SA_SIGINFO;
            libc::sigfillset(&mut (*sa).sa_mask);
            libc::sigaction(wake_signal(), sa, std::ptr::null_mut())
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL))
        }
    });
    done.map_err(io::Error::from_raw_os_error)
}

fn wake_set() -> libc::sigset_t {
    let mut set = super::empty_sigset();
    // SAFETY: `set` is an initialised sigset_t and the signal number valid.
    unsafe {
        libc::sigaddset(&mut set, wake_signal());
    }
    set
}

/// Blocks (`SIG_BLOCK`) or unblocks (`SIG_UNBLOCK`) [`wake_signal`] in this thread.
fn mask_wake(how: libc::c_int, set: &libc::sigset_t) {
    // SAFETY: `set` is an initialised sigset_t; the old mask is not asked for.
    unsafe {
        libc::pthread_sigmask(how, set, std::ptr::null_mut());
    }
}

/// Takes every [`wake_signal`] pending for this thread off it (the watcher may have
/// sent one more after the `flock` returned).
fn drain(set: &libc::sigset_t) {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `set` and `zero` are valid for the call; no siginfo is asked for.
    while unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &zero) } > 0 {}
}

/// What the waiting thread and its watcher share.
struct Shared {
    state: AtomicU8,
    reason: AtomicU8,
    /// An eventfd: written once the waiting thread is done, so the watcher stops.
    stop: OwnedFd,
}

impl Shared {
    fn stop_watcher(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: an 8-byte write from a stack buffer to an eventfd we own.
        unsafe {
            libc::write(self.stop.as_raw_fd(), one.as_ptr().cast(), one.len());
        }
    }
}

/// Waits for the exclusive flock of one open file description ([`Self::wait`]).
pub(crate) struct LockWaiter<'a> {
    lock: BorrowedFd<'a>,
}

impl<'a> LockWaiter<'a> {
    /// Nothing happens until [`Self::wait`].
    pub(crate) fn new(lock: BorrowedFd<'a>) -> io::Result<LockWaiter<'a>> {
        Ok(LockWaiter { lock })
    }

    /// Blocks in `flock(LOCK_EX)` in this thread until the lock is ours
    /// ([`LockWait::Locked`]), `events` turns readable ([`LockWait::Events`]: read it,
    /// then wait again), or `deadline` passes ([`LockWait::Deadline`]).
    pub(crate) fn wait(
        &mut self,
        events: Option<BorrowedFd<'_>>,
        deadline: Option<Instant>,
    ) -> io::Result<LockWait> {
        if events.is_none() && deadline.is_none() {
            // Nothing to hear: the plain blocking call.
            super::flock(self.lock, super::FlockOp::Exclusive)?;
            return Ok(LockWait::Locked);
        }
        install_handler()?;
        let set = wake_set();
        // Blocked here (the supervisor blocks it from the start anyway) before the
        // watcher is spawned, so that the watcher inherits it blocked: the signal can
        // only ever reach this thread, and only inside its `flock`.
        mask_wake(libc::SIG_BLOCK, &set);
        // SAFETY: eventfd(2) with flags only; the descriptor it returns is ours.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop < 0 {
            return Err(io::Error::last_os_error());
        }
        let shared = Arc::new(Shared {
            state: AtomicU8::new(WAITING),
            reason: AtomicU8::new(SAW_EVENTS),
            // SAFETY: `stop` was just returned by eventfd and is owned by nobody else.
            stop: unsafe { OwnedFd::from_raw_fd(stop) },
        });
        // The watcher's own descriptor: it may still be in `poll` for a moment after
        // this call returns.
        let events = events.map(|e| e.try_clone_to_owned()).transpose()?;
        // SAFETY: gettid(2) takes no arguments.
        let waiting_tid = unsafe { libc::gettid() };
        let theirs = Arc::clone(&shared);
        let watcher = std::thread::Builder::new()
            .name("flock-watch".into())
            .stack_size(64 * 1024)
            .spawn(move || watch(&theirs, events, deadline, waiting_tid))?;
        let result = loop {
            mask_wake(libc::SIG_UNBLOCK, &set);
            // SAFETY: `lock` is an open descriptor for the duration of the call.
            let rc = unsafe { libc::flock(self.lock.as_raw_fd(), libc::LOCK_EX) };
            let result = if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            };
            mask_wake(libc::SIG_BLOCK, &set);
            let interrupted = matches!(&result, Err(e) if e.kind() == io::ErrorKind::Interrupted);
            // Interrupted, but not by the watcher and not by anyone else's wake
            // signal: wait on.
            if interrupted
                && shared.state.load(Ordering::Acquire) == WAITING
                && !FOREIGN.load(Ordering::Relaxed)
            {
                continue;
            }
            break result;
        };
        let before = shared.state.swap(DONE, Ordering::AcqRel);
        shared.stop_watcher();
        if before == INTERRUPTING {
            // It may send once more between our return and seeing DONE: wait for it to
            // stop, then take what it sent.
            let _ = watcher.join();
            drain(&set);
        }
        let foreign = FOREIGN.swap(false, Ordering::Relaxed);
        if foreign {
            // Someone else's wake signal, spent on our handler: send it to the process
            // again (blocked everywhere now), for the event source to report.
            // SAFETY: kill(2) to ourselves with a valid signal number.
            unsafe {
                libc::kill(libc::getpid(), wake_signal());
            }
        }
        match result {
            Ok(()) => Ok(LockWait::Locked),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(
                if before == INTERRUPTING && shared.reason.load(Ordering::Acquire) == SAW_DEADLINE {
                    LockWait::Deadline
                } else {
                    LockWait::Events
                },
            ),
            Err(e) => Err(e),
        }
    }
}

/// The watcher: waits until `events` is readable or `deadline` passes (or it is told
/// to stop), then interrupts the thread `waiting_tid` until that thread says it is
/// out of its `flock`.
fn watch(shared: &Shared, events: Option<OwnedFd>, deadline: Option<Instant>, waiting_tid: i32) {
    let events_fd: RawFd = events.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    let reason = loop {
        let mut fds = [
            libc::pollfd {
                fd: shared.stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            // A negative descriptor is skipped by poll.
            libc::pollfd {
                fd: events_fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let timeout = i32::from(super::poll_timeout(deadline));
        // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if shared.state.load(Ordering::Acquire) == DONE || fds[0].revents != 0 {
            return;
        }
        if n > 0 && fds[1].revents != 0 {
            break SAW_EVENTS;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break SAW_DEADLINE;
        }
    };
    shared.reason.store(reason, Ordering::Release);
    if shared
        .state
        .compare_exchange(WAITING, INTERRUPTING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return; // the lock came first
    }
    let mut pause_ms = 1;
    while shared.state.load(Ordering::Acquire) == INTERRUPTING {
        // SAFETY: tgkill(2) to a thread of this process, with a valid signal number.
        unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                OUR_PID.load(Ordering::Relaxed),
                waiting_tid,
                wake_signal(),
            );
        }
        let mut fds = [libc::pollfd {
            fd: shared.stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: `fds` is a valid array of one pollfd for the duration of the call.
        unsafe {
            libc::poll(fds.as_mut_ptr(), 1, pause_ms);
        }
        pause_ms = (pause_ms * 2).min(64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A lock file held through another open file description (flock conflicts between
    /// descriptions, in one process too), and a second description to wait on.
    fn held() -> (tempfile::TempDir, std::fs::File, std::fs::File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loop.lock");
        let holder = std::fs::File::create(&path).unwrap();
        super::super::flock(holder.as_fd(), super::super::FlockOp::Exclusive).unwrap();
        let waiter = std::fs::File::open(&path).unwrap();
        (dir, holder, waiter)
    }

    /// Runs `f` on a thread of its own (the wait blocks the thread it runs in), and
    /// fails instead of hanging if it does not return within 10 s.
    fn within_limit<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the wait did not return within 10 s")
    }

    /// An event that is there before the waiting thread even enters `flock` (the
    /// watcher's first signal then lands before the call and is spent on the handler)
    /// still ends the wait: the watcher sends again. Repeated, so that both orders occur.
    #[test]
    fn an_event_as_the_wait_starts_still_interrupts_it() {
        for _ in 0..50 {
            let (_dir, _holder, waiter) = held();
            let (rx, mut tx) = std::os::unix::net::UnixStream::pair().unwrap();
            tx.write_all(b"x").unwrap();
            let woken = within_limit(move || {
                let mut w = LockWaiter::new(waiter.as_fd()).unwrap();
                w.wait(Some(rx.as_fd()), None).unwrap()
            });
            assert_eq!(woken, LockWait::Events);
        }
    }

    #[test]
    fn the_deadline_ends_the_wait_and_the_lock_ends_it_when_freed() {
        let (dir, holder, waiter) = held();
        let (rx, _tx) = std::os::unix::net::UnixStream::pair().unwrap();
        let started = Instant::now();
        let (woken, waiter, rx) = within_limit(move || {
            let mut w = LockWaiter::new(waiter.as_fd()).unwrap();
            let woken = w
                .wait(
                    Some(rx.as_fd()),
                    Some(Instant::now() + Duration::from_millis(50)),
                )
                .unwrap();
            (woken, waiter, rx)
        });
        assert_eq!(woken, LockWait::Deadline);
        assert!(started.elapsed() >= Duration::from_millis(50));
        // Now the holder lets go while the waiter blocks (a deadline far away).
        let (tx, freed) = mpsc::channel();
        let release = std::thread::spawn(move || {
            freed.recv().unwrap();
            drop(holder);
        });
        let woken = within_limit(move || {
            let mut w = LockWaiter::new(waiter.as_fd()).unwrap();
            tx.send(()).unwrap();
            let woken = w
                .wait(
                    Some(rx.as_fd()),
                    Some(Instant::now() + Duration::from_secs(60)),
                )
                .unwrap();
            // Ours: another description cannot take it.
            let other = std::fs::File::open(dir.path().join("loop.lock")).unwrap();
            let free = super::super::flock(other.as_fd(), super::super::FlockOp::TryExclusive);
            (woken, free.is_ok())
        });
        release.join().unwrap();
        assert_eq!(woken, (LockWait::Locked, false));
    }
}
