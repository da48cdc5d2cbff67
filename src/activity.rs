//! What the stall watchdog (`[run] stall_timeout`) looks at: is the loop doing anything?
//!
//! Work shows two ways: CPU time used by the loop's process tree
//! ([`crate::procfs::tree_cpu`]: everything under the supervisor, which is a subreaper,
//! so orphans count too), and files changing under the workspace (`.git/` included;
//! `.ralph/supervise/`, where the supervisor writes its history, `.ralph/loop.lock`,
//! whose metadata it rewrites, and the worktrees directory, where other loops work,
//! left out). The decision is the machine's; this module only measures, when asked.
//!
//! Files are watched with inotify: one watch per directory, set up by one walk of the
//! workspace when the supervision starts, with new directories added as they appear.
//! The events wait in the kernel's queue and are read only when the watchdog samples,
//! so a busy workspace wakes nobody up between samples, and a sample costs what its
//! events cost (a full queue is one more sign of change; the tree is then walked again
//! for directories made meanwhile). When inotify is out of watches
//! (`fs.inotify.max_user_watches`) or instances, each sample scans the workspace for
//! the newest change time instead (a `lstat` per entry): slower, same answer.

#[cfg(target_os = "linux")]
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(target_os = "linux")]
use nix::errno::Errno;
#[cfg(target_os = "linux")]
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tracing::debug;
#[cfg(target_os = "linux")]
use tracing::info;

/// Samples the loop's activity for the watchdog.
pub(crate) struct Watchdog {
    files: Files,
    /// Whether the tree's CPU time can be read (`/proc`; not on macOS or FreeBSD).
    cpu_known: bool,
}

impl Watchdog {
    /// Starts watching `workspace` (walking it once), leaving out the paths in `skip`
    /// (absolute; a directory's whole tree).
    pub(crate) fn new(workspace: &Path, skip: Vec<PathBuf>) -> Watchdog {
        let started = std::time::Instant::now();
        let files = Files::new(workspace.to_path_buf(), skip);
        debug!(
            directories = files.watched(),
            took_ms = started.elapsed().as_millis() as u64,
            "stall watchdog ready"
        );
        // Without the CPU figure idleness cannot be shown: every sample then counts as
        // activity, and the watchdog never stops the loop.
        let cpu_known = Path::new("/proc/self/stat").exists();
        if !cpu_known {
            tracing::warn!(
                "stall_timeout: the loop's CPU time cannot be read here (no /proc); the stall watchdog is off"
            );
        }
        Watchdog { files, cpu_known }
    }

    /// The CPU time the loop's process tree has used so far, and whether a file changed
    /// since the last sample.
    pub(crate) fn sample(&mut self) -> (Duration, bool) {
        let changed = self.files.changed() || !self.cpu_known;
        (crate::procfs::tree_cpu(std::process::id()), changed)
    }
}

/// The workspace's files, watched one way or the other.
struct Files {
    root: PathBuf,
    skip: Vec<PathBuf>,
    how: How,
}

enum How {
    /// inotify, and the directory each watch is on.
    #[cfg(target_os = "linux")]
    Watch {
        inotify: Inotify,
        dirs: HashMap<WatchDescriptor, PathBuf>,
    },
    /// The newest change time (seconds, nanoseconds) found by the last scan.
    Scan { newest: (i64, i64) },
}

#[cfg(target_os = "linux")]
/// What a directory's watch reports: its entries made, removed, renamed, written or
/// with changed metadata (not reads: a reader is not at work).
fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_ONLYDIR
        | AddWatchFlags::IN_DONT_FOLLOW
}

impl Files {
    fn new(root: PathBuf, skip: Vec<PathBuf>) -> Files {
        let how = watch(&root, &skip);
        let how = how.unwrap_or_else(|| How::Scan {
            newest: newest_change(&root, &skip),
        });
        Files { root, skip, how }
    }
}

/// Elsewhere (macOS, FreeBSD: no inotify) every sample scans.
#[cfg(not(target_os = "linux"))]
fn watch(_root: &Path, _skip: &[PathBuf]) -> Option<How> {
    None
}

/// inotify watches on the workspace's directories, or `None` (then samples scan).
#[cfg(target_os = "linux")]
fn watch(root: &Path, skip: &[PathBuf]) -> Option<How> {
    match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
        Ok(inotify) => {
            let mut dirs = HashMap::new();
            match watch_tree(&inotify, &mut dirs, root, skip) {
                Ok(()) => Some(How::Watch { inotify, dirs }),
                Err(e) => {
                    info!(
                        "stall watchdog: cannot watch every directory of the workspace ({e}, after {}); scanning it at each check instead",
                        dirs.len()
                    );
                    None
                }
            }
        }
        Err(e) => {
            info!(
                "stall watchdog: cannot use inotify ({e}); scanning the workspace at each check instead"
            );
            None
        }
    }
}

impl Files {
    fn watched(&self) -> usize {
        match &self.how {
            #[cfg(target_os = "linux")]
            How::Watch { dirs, .. } => dirs.len(),
            How::Scan { .. } => 0,
        }
    }

    /// Whether anything changed since the last call.
    fn changed(&mut self) -> bool {
        match &mut self.how {
            How::Scan { newest } => {
                let now = newest_change(&self.root, &self.skip);
                let changed = now != *newest;
                *newest = now;
                changed
            }
            #[cfg(target_os = "linux")]
            How::Watch { .. } => self.watched_changed(),
        }
    }

    /// [`changed`](Self::changed), from the inotify events queued since the last call.
    #[cfg(target_os = "linux")]
    fn watched_changed(&mut self) -> bool {
        let Files { root, skip, how } = self;
        let How::Watch { inotify, dirs } = how else {
            unreachable!("called for a watch")
        };
        let mut changed = false;
        let mut new_dirs = Vec::new();
        loop {
            let events = match inotify.read_events() {
                Ok(events) => events,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    changed = true;
                    break;
                }
            };
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    // Events were lost, new directories' among them maybe.
                    changed = true;
                    new_dirs = vec![root.clone()];
                    continue;
                }
                if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                    dirs.remove(&event.wd);
                    continue;
                }
                let Some(dir) = dirs.get(&event.wd) else {
                    continue;
                };
                let path = match &event.name {
                    Some(name) => dir.join(name),
                    None => dir.clone(),
                };
                if skip.contains(&path) {
                    continue;
                }
                changed = true;
                if event.mask.contains(AddWatchFlags::IN_ISDIR)
                    && event
                        .mask
                        .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                    && new_dirs.first() != Some(root)
                {
                    new_dirs.push(path);
                }
            }
        }
        for dir in new_dirs {
            if let Err(e) = watch_tree(inotify, dirs, &dir, skip) {
                info!(
                    "stall watchdog: cannot watch every directory of the workspace any more ({e}); scanning it at each check instead"
                );
                *how = How::Scan {
                    newest: newest_change(root, skip),
                };
                return true;
            }
        }
        changed
    }
}

#[cfg(target_os = "linux")]
/// Adds a watch on `top` and every directory under it (not following symlinks, leaving
/// out `skip`). Fails only when inotify is out of watches; directories that vanish or
/// may not be read are passed over.
fn watch_tree(
    inotify: &Inotify,
    dirs: &mut HashMap<WatchDescriptor, PathBuf>,
    top: &Path,
    skip: &[PathBuf],
) -> Result<(), Errno> {
    let mut stack = vec![top.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if skip.contains(&dir) {
            continue;
        }
        match inotify.add_watch(&dir, mask()) {
            Ok(wd) => {
                dirs.insert(wd, dir.clone());
            }
            Err(Errno::ENOSPC) => return Err(Errno::ENOSPC),
            Err(_) => continue,
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}

/// The newest change time (`ctime`: contents or metadata; a directory's changes when an
/// entry is made, removed or renamed) of `top` and everything under it but `skip`.
fn newest_change(top: &Path, skip: &[PathBuf]) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let mut newest = (i64::MIN, 0);
    let mut stack = vec![top.to_path_buf()];
    while let Some(path) = stack.pop() {
        if skip.contains(&path) {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        newest = newest.max((meta.ctime(), meta.ctime_nsec()));
        if meta.is_dir()
            && let Ok(entries) = fs::read_dir(&path)
        {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(files: &mut Files, what: impl FnOnce()) -> bool {
        assert!(!files.changed(), "quiet before");
        what();
        files.changed()
    }

    fn check(scan: bool) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        fs::create_dir_all(root.join(".ralph/supervise")).unwrap();
        fs::create_dir_all(root.join(".git/refs")).unwrap();
        fs::write(root.join("a"), "1").unwrap();
        fs::write(root.join(".ralph/loop.lock"), "").unwrap();
        let skip = vec![root.join(".ralph/supervise"), root.join(".ralph/loop.lock")];
        let mut files = Files::new(root.clone(), skip.clone());
        if scan {
            files.how = How::Scan {
                newest: newest_change(&root, &skip),
            };
        } else {
            assert_eq!(files.watched(), 4);
        }
        // ctime has the file system's granularity: step over it.
        let tick = || std::thread::sleep(Duration::from_millis(if scan { 20 } else { 0 }));
        assert!(!changes(&mut files, || {
            tick();
            fs::write(root.join(".ralph/supervise/runs.jsonl"), "x").unwrap();
            fs::write(root.join(".ralph/loop.lock"), "{}").unwrap();
            let _ = fs::read(root.join("a")).unwrap();
        }));
        assert!(changes(&mut files, || {
            tick();
            fs::write(root.join("a"), "2").unwrap()
        }));
        assert!(changes(&mut files, || {
            tick();
            fs::write(root.join(".git/refs/main"), "x").unwrap()
        }));
        assert!(changes(&mut files, || {
            tick();
            fs::create_dir_all(root.join("new/deeper")).unwrap()
        }));
        // The new directories are watched too.
        assert!(changes(&mut files, || {
            tick();
            fs::write(root.join("new/deeper/f"), "x").unwrap()
        }));
        assert!(changes(&mut files, || {
            tick();
            fs::remove_file(root.join("a")).unwrap()
        }));
        assert!(!files.changed());
    }

    #[test]
    fn inotify_sees_changes_but_not_the_supervisors_own() {
        check(false);
    }

    #[test]
    fn the_scan_sees_the_same() {
        check(true);
    }
}
