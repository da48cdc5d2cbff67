//! Watching a workspace's `.ralph/` directory (no polling).
//!
//! Two things happen there that the supervisor must react to at once: the stop-request
//! file appears (`ralph loops stop` wrote it), and `loop.lock` is deleted or replaced
//! while held (ralph's docs advise `rm .ralph/loop.lock` for a stale lock; a newcomer
//! would then create a new inode and lock it: two primaries).
//!
//! The kernel signals every change of the directory's entries (on Linux dnotify, which
//! sends [`signal`]; on macOS and FreeBSD an `EVFILT_VNODE` event on the kqueue,
//! reported as [`signal`]), which the supervisor reads from its event source; it then
//! looks at the directory again. Changes coalesce, so the answer
//! is always "look again", never "this happened".

use std::io;
use std::os::fd::AsFd;

use crate::supervisor::Signals;
use crate::workspace::RalphDir;

/// The real-time signal the kernel sends on a change in `.ralph/` (Linux), or the number
/// the kqueue's `EVFILT_VNODE` events are reported as (macOS, FreeBSD).
pub(crate) fn signal() -> i32 {
    crate::sys::watch_signal()
}

/// Whether `sig` means "look at `.ralph/` again": our watch signal, or SIGIO, which the
/// kernel sends instead when the real-time signal queue is full.
pub(crate) fn is_watch_signal(sig: i32) -> bool {
    sig == signal() || sig == libc::SIGIO
}

/// Starts watching `dir` (for as long as it stays open); its changes arrive through
/// `signals`.
pub(crate) fn watch(dir: &RalphDir, signals: &Signals) -> io::Result<()> {
    signals.watch_directory(dir.as_fd())
}
