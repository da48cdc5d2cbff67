//! Telling a service manager what the supervisor is doing (systemd's sd_notify).
//!
//! `READY=1` once the child runs (never before the lock is held), `STATUS=` lines while
//! waiting and running, `STOPPING=1` when stopping. Without `$NOTIFY_SOCKET` every call
//! is a no-op.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::notify::Notifier;

fn notifier() -> Option<&'static Notifier> {
    static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();
    NOTIFIER.get_or_init(Notifier::from_env).as_ref()
}

/// STATUS= while waiting for the lock.
pub(crate) fn status(text: &str) {
    if let Some(n) = notifier() {
        n.status(text);
    }
}

/// READY=1 with a STATUS= line once the child runs: `pid M, primary` or
/// `pid M, worktree X`.
pub(crate) fn ready_running(pid: u32, worktree: Option<&std::path::Path>) {
    if let Some(n) = notifier() {
        let text = match worktree {
            Some(path) => format!("running pid {pid}, worktree {}", path.display()),
            None => format!("running pid {pid}, primary"),
        };
        n.ready_with_status(&text);
    }
}

/// STOPPING=1, once: when a stop begins (with `why`, for a STATUS= line: systemd then
/// shows the service deactivating while the command has its grace, even when systemd
/// did not start the stop), else at the end.
pub(crate) fn stopping(why: Option<&str>) {
    static SENT: AtomicBool = AtomicBool::new(false);
    if let Some(n) = notifier()
        && !SENT.swap(true, Ordering::Relaxed)
    {
        match why {
            Some(why) => n.send(&format!("STOPPING=1\nSTATUS=stopping: {why}")),
            None => n.stopping(),
        };
    }
}
