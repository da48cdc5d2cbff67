//! `.ralph/stop-requested`: what `ralph loops stop` writes to ask a loop to stop.
//!
//! A stale one (left from an earlier loop) is removed before launch; while a loop runs,
//! its appearance is a graceful stop. ralph-supervise writes it too, when it takes a
//! workspace over, so that a ralph holding the lock stops at its next iteration.

use std::io;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::workspace::RalphDir;

pub const FILE: &str = "stop-requested";

/// Creates the stop request (no symlink followed; an existing one is left as it is).
pub fn create(dir: &RalphDir) -> io::Result<()> {
    openat(
        dir,
        FILE,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )?;
    Ok(())
}

/// Removes the stop request; `Ok(false)` when there was none.
pub fn remove(dir: &RalphDir) -> io::Result<bool> {
    match unlinkat(dir, FILE, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub fn exists(dir: &RalphDir) -> bool {
    fstatat(dir, FILE, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
}
