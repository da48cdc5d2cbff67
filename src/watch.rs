//! Watching a workspace's `.ralph/` directory (no polling).
//!
//! Two things happen there that the supervisor must react to at once: the stop-request
//! file appears (`ralph loops stop` wrote it), and `loop.lock` is deleted or replaced
//! while held (ralph's docs advise `rm .ralph/loop.lock` for a stale lock; a newcomer
//! would then create a new inode and lock it: two primaries).
//!
//! The kernel signals every change of the directory's entries (dnotify, see
//! [`crate::sys::notify_directory`]) with [`signal`], which the supervisor reads from
//! its signalfd; it then looks at the directory again. Changes coalesce, so the answer
//! is always "look again", never "this happened".

use std::io;
use std::os::fd::AsFd;

use crate::workspace::RalphDir;

/// The real-time signal the kernel sends on a change in `.ralph/`.
pub(crate) fn signal() -> i32 {
    libc::SIGRTMIN() + 1
}

/// Whether `sig` means "look at `.ralph/` again": our watch signal, or SIGIO, which the
/// kernel sends instead when the real-time signal queue is full.
pub(crate) fn is_watch_signal(sig: i32) -> bool {
    sig == signal() || sig == libc::SIGIO
}

/// Starts watching `dir` (for as long as it stays open).
pub(crate) fn watch(dir: &RalphDir) -> io::Result<()> {
    crate::sys::notify_directory(dir.as_fd(), signal())
}
