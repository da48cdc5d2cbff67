//! The loop's own cgroup (cgroup v2): made below the cgroup ralph-supervise started in,
//! never above it; the command starts in it (`clone3` into its directory,
//! [`crate::sys::spawn_direct`]; else its child-side setup writes to
//! `cgroup.procs`, see [`crate::sys::ChildSetup`]), limits are written to it,
//! `cgroup.kill` ends everything in it, `cgroup.freeze` stops it on Ctrl-Z,
//! `cgroup.events` says without polling when it is empty, and `cpu.stat` /
//! `memory.peak` / `pids.peak` account for it. Only files are read and written here
//! (no `unsafe`); [`crate::containment`] decides when.
//!
//! The hierarchy is found where systemd mounts it (`/sys/fs/cgroup`, or
//! `/sys/fs/cgroup/unified` on hybrid hosts), looking at that one mount
//! ([`crate::sys::cgroup2_mount_root`], Linux 6.8), else from `/proc/self/mountinfo` (the
//! first `cgroup2` mount, wherever it is) and the process's
//! own cgroup from the `0::` line of `/proc/self/cgroup`. Without either (no cgroup v2,
//! or not Linux) there is none, and the process tree contains the loop instead.
//!
//! Names: the loop's cgroup is `ralph-supervise-<pid>-<start time>-<pid namespace>`
//! (the supervisor's: unique even among supervisors that are each PID 1 of their own
//! pid namespace),
//! and when controllers must be enabled for it while the supervisor's own cgroup still
//! holds the supervisor (cgroup v2 allows no process in a cgroup that hands controllers
//! down), the supervisor first moves itself into a leaf named the same with `-self`.
//! A later run removes such cgroups once they are empty and their supervisor is gone
//! ([`Hierarchy::remove_stale`], once its command has started, or before it makes its
//! own if that fails): one that was SIGKILLed, or left processes behind with
//! `stop.orphans = "leave"`. Only a supervisor of the same pid namespace is
//! judged (a pid means another process in another namespace).

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

/// The prefix of every cgroup ralph-supervise makes.
pub(crate) const PREFIX: &str = "ralph-supervise-";

/// The cgroup v2 hierarchy and the cgroup this process started in.
#[derive(Debug, Clone)]
pub(crate) struct Hierarchy {
    /// Where cgroup v2 is mounted.
    pub(crate) mount: PathBuf,
    /// The directory of the cgroup we started in (never written above).
    pub(crate) own: PathBuf,
    /// Its path in the hierarchy, `/` for the root.
    pub(crate) own_path: String,
}

/// Why there is no usable cgroup, in words for one log line.
pub(crate) type WhyNot = String;

impl Hierarchy {
    /// The cgroup v2 mount and our cgroup in it.
    pub(crate) fn locate() -> Result<Hierarchy, WhyNot> {
        // Where systemd mounts it (one mount looked at each), else the first cgroup2
        // mount of all.
        let usual = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"].map(PathBuf::from);
        let found =
            (usual.into_iter()).find_map(|m| Some((crate::sys::cgroup2_mount_root(&m)?, m)));
        let (root, mount) = match found {
            Some(found) => found,
            None => {
                let mountinfo = crate::sys::read_text("/proc/self/mountinfo")
                    .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
                cgroup2_mount(&mountinfo).ok_or("no cgroup v2 file system is mounted")?
            }
        };
        let cgroup = crate::sys::read_text("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let own_path = cgroup
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or("this process is in no cgroup v2 (no 0:: line in /proc/self/cgroup)")?
            .to_string();
        // The mount shows the hierarchy from `root` down: our cgroup must be below it.
        let rel = Path::new(&own_path)
            .strip_prefix(&root)
            .map_err(|_| format!("our cgroup {own_path} is outside the mounted part {root}"))?;
        let own = mount.join(rel);
        if !own.join("cgroup.procs").exists() {
            return Err(format!("{} is not a cgroup directory", own.display()));
        }
        Ok(Hierarchy {
            mount,
            own,
            own_path,
        })
    }

    /// The controllers our cgroup can hand to its children (`cgroup.controllers`).
    pub(crate) fn available(&self) -> Vec<String> {
        words(&self.own.join("cgroup.controllers"))
    }

    /// The controllers our cgroup hands to its children now (`cgroup.subtree_control`).
    pub(crate) fn enabled(&self) -> Vec<String> {
        words(&self.own.join("cgroup.subtree_control"))
    }

    /// Makes a cgroup below ours.
    pub(crate) fn create(&self, name: &str) -> io::Result<Cgroup> {
        let path = self.own.join(name);
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        Cgroup::open(path)
    }

    /// Enables `controllers` for the children of our cgroup. When our cgroup holds
    /// processes (it is no root), only we may be among them: we move into the leaf
    /// `self_leaf` first (the root cgroup is exempt from the no-internal-process rule).
    /// Errors say why, for the warning line.
    pub(crate) fn enable(&self, controllers: &[&str], self_leaf: &str) -> Result<(), WhyNot> {
        let missing: Vec<&str> = (controllers.iter().copied())
            .filter(|c| !self.enabled().iter().any(|e| e == c))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if self.own_path != "/" {
            let me = std::process::id();
            let others: Vec<u32> = pids(&self.own.join("cgroup.procs"))
                .into_iter()
                .filter(|p| *p != me)
                .collect();
            if !others.is_empty() {
                return Err(format!(
                    "cgroup {} holds other processes ({}), so it cannot hand controllers down",
                    self.own_path,
                    others.len()
                ));
            }
            if pids(&self.own.join("cgroup.procs")).contains(&me) {
                let leaf = self.create(self_leaf).map_err(|e| {
                    format!("cannot make {}: {e}", self.own.join(self_leaf).display())
                })?;
                write(&leaf.path.join("cgroup.procs"), "0")
                    .map_err(|e| format!("cannot move into {}: {e}", leaf.path.display()))?;
            }
        }
        let text: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
        write(&self.own.join("cgroup.subtree_control"), &text.join(" ")).map_err(|e| {
            format!(
                "cannot enable {} in {}: {e}",
                missing.join(", "),
                self.own.join("cgroup.subtree_control").display()
            )
        })
    }

    /// Removes the cgroups an earlier run made here that are empty and whose
    /// supervisor is gone (it was SIGKILLed, or its loop left processes behind that
    /// have ended since). Returns how many were removed.
    pub(crate) fn remove_stale(&self) -> usize {
        let Ok(entries) = fs::read_dir(&self.own) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((pid, start, ns)) = owner(name) else {
                continue;
            };
            // (Ours is never stale, whatever its name says of our start time.)
            let ours = pid == std::process::id();
            if ours
                || Some(ns) != crate::procfs::pid_namespace()
                || crate::procfs::alive(pid, Some(start))
            {
                continue;
            }
            let path = entry.path();
            if populated(&path) == Some(false) && remove_tree(&path).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// The supervisor (pid, start time, pid namespace) a cgroup name of ours belongs to.
fn owner(name: &str) -> Option<(u32, u64, u64)> {
    let rest = name.strip_prefix(PREFIX)?;
    let rest = rest.strip_suffix("-self").unwrap_or(rest);
    let mut parts = rest.split('-');
    let owner = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    parts.next().is_none().then_some(owner)
}

/// The name of the loop's cgroup for the supervisor (pid, start time, pid namespace);
/// its own leaf adds `-self`.
pub(crate) fn name_for(pid: u32, start: u64, ns: u64) -> String {
    format!("{PREFIX}{pid}-{start}-{ns}")
}

/// Removes a cgroup and the (empty) cgroups below it, deepest first.
fn remove_tree(path: &Path) -> io::Result<()> {
    // Mostly there is nothing below it: one rmdir.
    if fs::remove_dir(path).is_ok() {
        return Ok(());
    }
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path())?;
            }
        }
    }
    fs::remove_dir(path)
}

/// `(root, mount point)` of the first `cgroup2` mount in `/proc/self/mountinfo`: its line
/// found by the file system type written after the line's one ` - ` (a space in a path
/// is written `\040`), in one search of the whole text rather than one per line.
fn cgroup2_mount(mountinfo: &str) -> Option<(String, PathBuf)> {
    let at = mountinfo.find(" - cgroup2 ")?;
    let start = mountinfo[..at].rfind('\n').map_or(0, |i| i + 1);
    parse_cgroup2_mount(mountinfo[start..].lines().next()?)
}

/// `(root, mount point)` of a `cgroup2` line of `/proc/self/mountinfo`.
fn parse_cgroup2_mount(line: &str) -> Option<(String, PathBuf)> {
    let (before, after) = line.split_once(" - ")?;
    if after.split_ascii_whitespace().next()? != "cgroup2" {
        return None;
    }
    let mut fields = before.split_ascii_whitespace();
    let root = fields.nth(3)?;
    let mount = fields.next()?;
    Some((unescape(root), PathBuf::from(unescape(mount))))
}

/// mountinfo writes space, tab, newline and backslash as octal escapes (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Some(Ok(v)) = field.get(i + 1..i + 4).map(|o| u8::from_str_radix(o, 8))
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn words(path: &Path) -> Vec<String> {
    crate::sys::read_text(path)
        .unwrap_or_default()
        .split_ascii_whitespace()
        .map(str::to_string)
        .collect()
}

fn pids(path: &Path) -> Vec<u32> {
    crate::sys::read_text(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// One write of `text` (cgroup files take one value per write).
fn write(path: &Path, text: &str) -> io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(text.as_bytes())
}

/// `populated` of `cgroup.events`; `None` when it cannot be read.
fn populated(path: &Path) -> Option<bool> {
    let events = crate::sys::read_text(path.join("cgroup.events")).ok()?;
    key_value(&events, "populated").map(|v| v != 0)
}

fn key_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A cgroup of ours, open: its `cgroup.events` (for `poll`'s `POLLPRI`, raised when
/// `populated` or `frozen` changes) and its `cgroup.procs` (written by the child before
/// `exec`).
#[derive(Debug)]
pub(crate) struct Cgroup {
    pub(crate) path: PathBuf,
    /// The directory, for `clone3(CLONE_INTO_CGROUP)`.
    dir: fs::File,
    events: fs::File,
    procs: fs::File,
    /// `cpu.stat`, `memory.peak` and `pids.peak`, opened once their controllers are
    /// settled ([`Cgroup::open_accounting`]; a file whose controller is off is `None`),
    /// so that reading them as the run ends, before the lock is let go, is one `pread`
    /// each and no failed lookups.
    accounting: Option<[Option<fs::File>; 3]>,
}

/// CPU time and memory a cgroup accounted for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) user_us: u64,
    pub(crate) system_us: u64,
    /// `memory.peak`, with the memory controller.
    pub(crate) memory_peak: Option<u64>,
    /// `memory.current`, with the memory controller.
    pub(crate) memory_now: Option<u64>,
    /// `pids.peak`, with the pids controller.
    pub(crate) pids_peak: Option<u64>,
}

impl Cgroup {
    /// Opens the cgroup at `path` (made by [`Hierarchy::create`], or recorded in a lock
    /// file's metadata, for `status`).
    pub(crate) fn open(path: PathBuf) -> io::Result<Cgroup> {
        let dir = fs::File::open(&path)?;
        let events = fs::File::open(path.join("cgroup.events"))?;
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(path.join("cgroup.procs"))?;
        Ok(Cgroup {
            path,
            dir,
            events,
            procs,
            accounting: None,
        })
    }

    /// The descriptor of the cgroup's directory, to start the child in it (`clone3`).
    pub(crate) fn dir_fd(&self) -> RawFd {
        self.dir.as_raw_fd()
    }

    /// The descriptor of `cgroup.procs` the child writes `0` to before `exec`.
    pub(crate) fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// `cgroup.events`, for `poll` (`POLLPRI` on a change).
    pub(crate) fn events(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }

    /// Whether any live process is in it (or below it). Read through the descriptor
    /// `poll` watches: reading it is what re-arms its `POLLPRI`.
    pub(crate) fn populated(&self) -> bool {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 256];
        match self.events.read_at(&mut buf, 0) {
            Ok(n) => {
                key_value(&String::from_utf8_lossy(&buf[..n]), "populated").is_some_and(|v| v != 0)
            }
            Err(_) => populated(&self.path).unwrap_or(false),
        }
    }

    /// The processes in it (not below it).
    pub(crate) fn procs(&self) -> Vec<u32> {
        pids(&self.path.join("cgroup.procs"))
    }

    /// KILL to every process in it and below it, in one step (`cgroup.kill`), so a
    /// fork racing the kill is caught too.
    pub(crate) fn kill(&self) -> io::Result<()> {
        write(&self.path.join("cgroup.kill"), "1")
    }

    /// Freezes (`true`) or thaws it (`cgroup.freeze`).
    pub(crate) fn freeze(&self, frozen: bool) -> io::Result<()> {
        write(
            &self.path.join("cgroup.freeze"),
            if frozen { "1" } else { "0" },
        )
    }

    /// Writes a limit (`memory.max`, `pids.max`, `cpu.max`).
    pub(crate) fn set(&self, file: &str, value: &str) -> io::Result<()> {
        write(&self.path.join(file), value)
    }

    /// Whether `pid` is in this cgroup (its `0::` line names it).
    pub(crate) fn holds(&self, pid: u32, mount: &Path) -> bool {
        let Ok(text) = crate::sys::read_text(format!("/proc/{pid}/cgroup")) else {
            return false;
        };
        text.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .is_some_and(|p| {
                mount
                    .join(p.trim_start_matches('/'))
                    .starts_with(&self.path)
            })
    }

    /// Opens the files [`Cgroup::usage`] reads: call it once the controllers the
    /// cgroup will have are enabled (a file appears with its controller).
    pub(crate) fn open_accounting(&mut self) {
        let open = |file: &str| fs::File::open(self.path.join(file)).ok();
        self.accounting = Some([open("cpu.stat"), open("memory.peak"), open("pids.peak")]);
    }

    /// What it has used so far (`memory_now` is not read). Through the files
    /// [`Cgroup::open_accounting`] opened, else by path.
    pub(crate) fn usage(&self) -> Usage {
        let Some([cpu, memory_peak, pids_peak]) = &self.accounting else {
            return read_usage(&self.path).unwrap_or_default();
        };
        let usage = parse_usage(|name| {
            use std::os::unix::fs::FileExt;
            let file = match name {
                "cpu.stat" => cpu,
                "memory.peak" => memory_peak,
                "pids.peak" => pids_peak,
                _ => return None,
            };
            let mut buf = [0u8; 4096];
            let n = file.as_ref()?.read_at(&mut buf, 0).ok()?;
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        });
        usage.unwrap_or_default()
    }

    /// Removes it (and empty cgroups the loop made below it); fails while a process
    /// is left in it.
    pub(crate) fn remove(&self) -> io::Result<()> {
        remove_tree(&self.path)
    }
}

/// What a cgroup recorded in a lock file has used so far, and the pids in it and in the
/// cgroups below it (for `status`).
pub(crate) fn usage_at(path: &Path) -> Option<(Usage, Vec<u32>)> {
    let usage = read_usage(path)?;
    let mut members = Vec::new();
    let mut groups = vec![path.to_path_buf()];
    while let Some(group) = groups.pop() {
        members.extend(pids(&group.join("cgroup.procs")));
        let below = fs::read_dir(&group).into_iter().flatten().flatten();
        groups.extend(
            below
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    Some((usage, members))
}

/// What the cgroup at `path` has used: CPU from `cpu.stat` (`None` when it cannot be
/// read), memory and processes where those controllers are on.
fn read_usage(path: &Path) -> Option<Usage> {
    parse_usage(|name| crate::sys::read_text(path.join(name)).ok())
}

/// A cgroup's usage from the text of its files as `text` gives it (`None`: not there or
/// unreadable): `None` without `cpu.stat`.
fn parse_usage(text: impl Fn(&str) -> Option<String>) -> Option<Usage> {
    let cpu = text("cpu.stat")?;
    let number = |file: &str| text(file).and_then(|t| t.trim().parse().ok());
    Some(Usage {
        user_us: key_value(&cpu, "user_usec").unwrap_or(0),
        system_us: key_value(&cpu, "system_usec").unwrap_or(0),
        memory_peak: number("memory.peak"),
        memory_now: number("memory.current"),
        pids_peak: number("pids.peak"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_anywhere() {
        let hybrid = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        assert_eq!(
            parse_cgroup2_mount(hybrid),
            Some(("/".into(), PathBuf::from("/sys/fs/cgroup/unified")))
        );
        let v1 = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory";
        assert_eq!(parse_cgroup2_mount(v1), None);
        let spaced = "41 31 0:38 /a\\040b /mnt/c\\040g rw shared:1 - cgroup2 cgroup2 rw";
        assert_eq!(
            parse_cgroup2_mount(spaced),
            Some(("/a b".into(), PathBuf::from("/mnt/c g")))
        );
        // In the whole file: the first cgroup2 line, wherever it is; none, none.
        let file = format!("{v1}\n22 27 0:21 / /proc rw - proc proc rw\n{spaced}\n{hybrid}\n");
        assert_eq!(cgroup2_mount(&file), parse_cgroup2_mount(spaced));
        assert_eq!(cgroup2_mount(spaced), parse_cgroup2_mount(spaced));
        assert_eq!(cgroup2_mount(&format!("{v1}\n{v1}\n")), None);
        assert_eq!(cgroup2_mount(""), None);
    }

    /// The look at one mount agrees with `/proc/self/mountinfo` where systemd mounts
    /// cgroup v2, and finds nothing where it is not mounted.
    #[cfg(target_os = "linux")]
    #[test]
    fn one_mount_looked_at_agrees_with_mountinfo() {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mut agreed = 0;
        for m in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/proc", "/"] {
            let in_table = (mountinfo.lines().filter_map(parse_cgroup2_mount))
                .find(|(_, point)| point == Path::new(m));
            match crate::sys::cgroup2_mount_root(Path::new(m)) {
                Some(root) => {
                    assert_eq!(Some((root, PathBuf::from(m))), in_table, "{m}");
                    agreed += 1;
                }
                None if in_table.is_some() => {
                    eprintln!("{m}: not looked at alone (statmount needs Linux 6.8)")
                }
                None => {}
            }
        }
        if agreed == 0 {
            eprintln!("no cgroup v2 at /sys/fs/cgroup(/unified) looked at alone here");
        }
    }

    #[test]
    fn names_say_whose_they_are() {
        let name = name_for(42, 1234, 4026531836);
        assert_eq!(owner(&name), Some((42, 1234, 4026531836)));
        assert_eq!(owner(&format!("{name}-self")), Some((42, 1234, 4026531836)));
        assert_eq!(owner("user.slice"), None);
        assert_eq!(owner("ralph-supervise-x-1-2"), None);
        assert_eq!(owner("ralph-supervise-1-2"), None);
        assert_eq!(owner("ralph-supervise-1-2-3-4"), None);
    }

    #[test]
    fn reads_key_value_files() {
        let stat = "usage_usec 10\nuser_usec 7\nsystem_usec 3\n";
        assert_eq!(key_value(stat, "user_usec"), Some(7));
        assert_eq!(key_value(stat, "usage"), None);
    }
}
