//! Watching a workspace's `.ralph/` directory with inotify (no polling).
//!
//! Two things happen there that the supervisor must react to at once: the stop-request
//! file appears (`ralph loops stop` wrote it), and `loop.lock` is deleted while held
//! (ralph's docs advise `rm .ralph/loop.lock` for a stale lock; a newcomer would then
//! create a new inode and lock it: two primaries).

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::lock::LOCK_FILE;
use crate::stop_request;

/// What happened in `.ralph/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    StopRequested,
    LockDeleted,
}

#[derive(Debug)]
pub struct Watch {
    inotify: Inotify,
}

impl Watch {
    /// Watches `ralph_dir` for the stop request and the lock file's removal.
    pub fn new(ralph_dir: &Path) -> nix::Result<Watch> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(
            ralph_dir,
            AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_ONLYDIR,
        )?;
        Ok(Watch { inotify })
    }

    /// The changes queued since the last call (never blocks).
    pub fn changes(&self) -> Vec<Change> {
        let mut changes = Vec::new();
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) => events,
                Err(Errno::EAGAIN | Errno::EINTR) => break,
                Err(_) => break,
            };
            for ev in events {
                let Some(name) = ev.name.as_deref() else {
                    continue;
                };
                let created = ev
                    .mask
                    .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO);
                let removed = ev
                    .mask
                    .intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM);
                if created && name == stop_request::FILE {
                    changes.push(Change::StopRequested);
                } else if removed && name == LOCK_FILE {
                    changes.push(Change::LockDeleted);
                }
            }
        }
        changes
    }
}

impl AsFd for Watch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }
}
