//! `.ralph/stop-requested`: what `ralph loops stop` writes to ask a loop to stop.
//!
//! A stale one (left from an earlier loop) is removed before launch; while a loop runs,
//! its appearance is a graceful stop. ralph-supervise writes it too, when it takes a
//! workspace over, so that a ralph holding the lock stops at its next iteration.

use std::io;

use crate::workspace::RalphDir;

pub(crate) const FILE: &str = "stop-requested";

/// Creates the stop request (no symlink followed; an existing one is left as it is).
pub(crate) fn create(dir: &RalphDir) -> io::Result<()> {
    dir.create_if_missing(FILE)
}

/// Removes the stop request; `Ok(false)` when there was none.
pub(crate) fn remove(dir: &RalphDir) -> io::Result<bool> {
    dir.remove(FILE)
}
