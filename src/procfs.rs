//! What the kernel says about processes and locks, read from `/proc`.
//!
//! Files lie (a pid in a lock file may be stale or reused); the kernel does not. Before
//! the supervisor signals a pid it found in a file it confirms the process by its start
//! time, and to learn whether a lock is held without taking it, it reads `/proc/locks`.
//!
//! macOS and FreeBSD have no `/proc`: a start time comes from `proc_pidinfo` or
//! `kinfo_proc` there ([`crate::sys::process_identity`]); [`LocksSnapshot`] answers
//! `None` and [`holding_processes`] finds nobody, and [`crate::lock`] asks the kernel by
//! a non-blocking probe instead.

use std::fs;

use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Start time of a process: on Linux in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), on macOS and FreeBSD in microseconds since the epoch. A number to
/// compare with one recorded earlier on the same machine, nothing more.
#[cfg(target_os = "linux")]
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let mut buf = [0u8; 1024];
    parse_stat_start_time(read_stat(pid, &mut buf)?)
}

/// `/proc/PID/stat` in one `read` into `buf`, large enough for any stat line: it sits
/// on the launch path and on every registry edit (each entry's liveness), where
/// `read_to_string` made an `fstat` and five reads of it, growing from 32 bytes.
#[cfg(target_os = "linux")]
fn read_stat(pid: u32, buf: &mut [u8; 1024]) -> Option<&str> {
    use std::io::Read;
    let n = fs::File::open(format!("/proc/{pid}/stat"))
        .ok()?
        .read(buf)
        .ok()?;
    std::str::from_utf8(&buf[..n]).ok()
}

#[cfg(target_os = "linux")]
fn parse_stat_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); field 22 is the 20th from there.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Where the kernel put this process's environment at exec: `env_start`..`env_end`
/// (fields 50 and 51 of `/proc/self/stat`), the bytes `/proc/PID/environ` shows.
#[cfg(target_os = "linux")]
pub(crate) fn own_env_block() -> Option<(usize, usize)> {
    let mut buf = [0; 1024];
    let stat = read_stat(std::process::id(), &mut buf)?;
    // `rest` starts at field 3 (state); field 50 is the 48th from there.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(47);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    crate::sys::process_identity(pid).map(|(start, _)| start)
}

/// This process's start time ([`start_time`]), read once.
pub(crate) fn own_start_time() -> Option<u64> {
    static START: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *START.get_or_init(|| start_time(std::process::id()))
}

/// This process's pid namespace: the inode of `/proc/self/ns/pid` (`None` without
/// procfs). Pids are numbers in a namespace; another namespace numbers them otherwise.
pub(crate) fn pid_namespace() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    static NS: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *NS.get_or_init(|| fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino()))
}

/// Whether `pid` is alive and, when a start time was recorded, still the same process.
pub(crate) fn alive(pid: u32, recorded_start: Option<u64>) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    match recorded_start {
        Some(recorded) => identity(pid).is_some_and(|(start, zombie)| start == recorded && !zombie),
        None => kill(Pid::from_raw(pid as i32), None).is_ok() && !is_zombie(pid),
    }
}

fn is_zombie(pid: u32) -> bool {
    identity(pid).is_some_and(|(_, zombie)| zombie)
}

/// A process's start time ([`start_time`]) and whether it is a zombie, in one look.
#[cfg(not(target_os = "linux"))]
fn identity(pid: u32) -> Option<(u64, bool)> {
    crate::sys::process_identity(pid)
}

#[cfg(target_os = "linux")]
fn identity(pid: u32) -> Option<(u64, bool)> {
    let mut buf = [0u8; 1024];
    let stat = read_stat(pid, &mut buf)?;
    let state = stat[stat.rfind(')')? + 1..]
        .split_ascii_whitespace()
        .next()?;
    Some((parse_stat_start_time(stat)?, state == "Z"))
}

/// A flock held on a file, as `/proc/locks` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldLock {
    /// The process that took the lock (it may have died since, leaving the lock to a
    /// child that inherited the descriptor).
    pub(crate) pid: u32,
}

/// `/proc/locks` read once, on the first lookup, for the lookups of many files (`list`
/// asks about every loop's lock: one reading of `/proc/locks` instead of one per loop,
/// each of which costs the kernel a walk of every lock on the system, once per page).
/// Like every reading, a snapshot: "not listed" still means "ask the kernel again".
#[derive(Debug, Default)]
pub(crate) struct LocksSnapshot {
    /// Every FLOCK holder, sorted; `None` without `/proc/locks`.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    flocks: std::cell::OnceCell<Option<Vec<Flock>>>,
}

/// A FLOCK holder as `/proc/locks` lists it: the file's device (major, minor) and
/// inode, and the pid that took the lock.
type Flock = (u32, u32, u64, u32);

impl LocksSnapshot {
    /// The FLOCK holders of the file with this device and inode, from the one
    /// reading; `None` when `/proc/locks` cannot be read (not Linux, no procfs).
    #[cfg(target_os = "linux")]
    pub(crate) fn flock_holders(&self, dev: u64, ino: u64) -> Option<Vec<HeldLock>> {
        let flocks = self.flocks.get_or_init(read_flocks).as_ref()?;
        let key = (libc::major(dev), libc::minor(dev), ino);
        let first = flocks.partition_point(|&(ma, mi, i, _)| (ma, mi, i) < key);
        Some(
            flocks[first..]
                .iter()
                .take_while(|&&(ma, mi, i, _)| (ma, mi, i) == key)
                .map(|&(.., pid)| HeldLock { pid })
                .collect(),
        )
    }

    #[cfg(not(target_os = "linux"))]
    pub(crate) fn flock_holders(&self, _dev: u64, _ino: u64) -> Option<Vec<HeldLock>> {
        None
    }
}

#[cfg(target_os = "linux")]
fn read_flocks() -> Option<Vec<Flock>> {
    let text = read_locks()?;
    let mut flocks: Vec<_> = flock_lines(&text).collect();
    flocks.sort_unstable();
    Some(flocks)
}

/// `/proc/locks`. The kernel walks its lock list anew for each page it hands out, so
/// while other processes lock and unlock, an entry can be skipped: callers treat
/// "not listed" as "ask the kernel again" (a non-blocking flock probe), never as proof.
///
/// `RALPH_SUPERVISE_TEST_NO_PROC_LOCKS=1` makes it missing, as on macOS and FreeBSD, so
/// that the Linux test suite runs the probe-based lookup those systems use.
#[cfg(target_os = "linux")]
fn read_locks() -> Option<String> {
    if std::env::var_os(NO_PROC_LOCKS).is_some_and(|v| v == "1") {
        return None;
    }
    crate::sys::read_text("/proc/locks").ok()
}

/// The environment variable that hides `/proc/locks` ([`read_locks`]), for tests.
#[cfg(target_os = "linux")]
pub(crate) const NO_PROC_LOCKS: &str = "RALPH_SUPERVISE_TEST_NO_PROC_LOCKS";

/// The FLOCK holders `/proc/locks` lists (not its waiters, nor POSIX or OFD locks), as
/// (device major, minor, inode, pid).
#[cfg(target_os = "linux")]
fn flock_lines(text: &str) -> impl Iterator<Item = Flock> + '_ {
    text.lines().filter_map(|line| {
        let mut fields = line.split_ascii_whitespace();
        let _id = fields.next();
        // `->`: a waiter blocked on the lock, not a holder.
        if fields.next()? != "FLOCK" {
            return None;
        }
        let _advisory = fields.next();
        let _mode = fields.next(); // READ / WRITE
        let (pid, file) = (fields.next()?, fields.next()?);
        let mut parts = file.split(':');
        let (maj, min, inode) = (parts.next()?, parts.next()?, parts.next()?);
        Some((
            u32::from_str_radix(maj, 16).ok()?,
            u32::from_str_radix(min, 16).ok()?,
            inode.parse().ok()?,
            pid.parse().ok()?,
        ))
    })
}

/// A process that holds a flock through a descriptor of its own: it has the locked open
/// file description open (its `/proc/PID/fdinfo` lists the lock), whoever took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HoldingProcess {
    pub(crate) pid: u32,
    /// Kernel start time (clock ticks since boot), to confirm the pid before signalling.
    pub(crate) start_time: Option<u64>,
    /// Its command name (`/proc/PID/comm`).
    pub(crate) name: String,
}

/// The living processes holding a flock on the file with this device and inode, found
/// by scanning every process's descriptors (`/proc/*/fd`, then the matching fdinfo for
/// its `lock:` line): unlike `/proc/locks`, which names the process that *took* the
/// lock even after it died, this names the processes that hold it now (children that
/// inherited the descriptor, say). Processes whose descriptors we may not read are
/// missed. This process is never listed. Costs a `stat` per descriptor on the system:
/// for the rare case the recorded holders are gone.
#[cfg(target_os = "linux")]
pub(crate) fn holding_processes(dev: u64, ino: u64) -> Vec<HoldingProcess> {
    use std::os::unix::fs::MetadataExt;
    let me = std::process::id();
    let want = lock_file_id(dev, ino);
    let Ok(procs) = fs::read_dir("/proc") else {
        return vec![];
    };
    let mut found = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            let same = fs::metadata(fd.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino);
            same && fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .is_ok_and(|info| fdinfo_holds_flock(&info, &want))
        });
        if holds && !is_zombie(pid) {
            found.push(HoldingProcess {
                pid,
                start_time: start_time(pid),
                name: fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|c| c.trim_end().to_string())
                    .unwrap_or_default(),
            });
        }
    }
    found
}

/// Nobody, where there is no `/proc` to scan (macOS, FreeBSD).
#[cfg(not(target_os = "linux"))]
pub(crate) fn holding_processes(_dev: u64, _ino: u64) -> Vec<HoldingProcess> {
    vec![]
}

/// `maj:min:ino` as `/proc/locks` and fdinfo write a file's identity (hex device).
#[cfg(target_os = "linux")]
fn lock_file_id(dev: u64, ino: u64) -> String {
    format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev))
}

/// Whether an fdinfo text lists a FLOCK held (not waited for) through that descriptor
/// on the file `id`.
#[cfg(target_os = "linux")]
fn fdinfo_holds_flock(info: &str, id: &str) -> bool {
    info.lines().any(|l| {
        let Some(lock) = l.strip_prefix("lock:") else {
            return false;
        };
        let fields: Vec<&str> = lock.split_ascii_whitespace().collect();
        fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&id)
    })
}

/// Every process's `/proc/PID/stat`, read into one reused buffer and kept where `parse`
/// (given the pid and the text) makes something of it; `None` without `/proc`.
fn every_stat<T>(parse: impl Fn(u32, &str) -> Option<T>) -> Option<Vec<(u32, T)>> {
    use std::io::Read;
    let mut all = Vec::new();
    let mut buf = Vec::with_capacity(1024);
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = (entry.file_name().to_str()).and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        buf.clear();
        let read =
            fs::File::open(format!("/proc/{pid}/stat")).and_then(|mut f| f.read_to_end(&mut buf));
        if read.is_ok()
            && let Some(parsed) = std::str::from_utf8(&buf).ok().and_then(|s| parse(pid, s))
        {
            all.push((pid, parsed));
        }
    }
    Some(all)
}

/// CPU time (user and system) used so far by the processes under `root`: every live
/// descendant (found by each process's parent in `/proc/*/stat`), with what each of them
/// reaped, and what `root` itself reaped (`cutime`, `cstime`: a subreaper gets the
/// orphans). Not `root`'s own time. Processes that die unreaped drop out; callers compare
/// running totals and treat a drop as no use. One `/proc/PID/stat` read per process on
/// the system.
pub(crate) fn tree_cpu(root: u32) -> std::time::Duration {
    let Some(all) = every_stat(|_, stat| parse_stat_times(stat)) else {
        return std::time::Duration::ZERO;
    };
    let mut ticks = all
        .iter()
        .find(|(pid, _)| *pid == root)
        .map_or(0, |(_, t)| t.reaped);
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for (pid, t) in &all {
            if t.ppid == parent && *pid != root {
                ticks += t.own + t.reaped;
                parents.push(*pid);
            }
        }
    }
    ticks_to_duration(ticks)
}

/// A live (not zombie) process of a loop (a descendant of its supervisor, or a member
/// of its cgroup), as `/proc/PID/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Descendant {
    pub(crate) pid: u32,
    /// Its process group.
    pub(crate) pgid: i32,
    /// Kernel start time ([`start_time`]), to confirm it before a signal.
    pub(crate) start_time: u64,
    /// Resident memory in bytes.
    pub(crate) rss: u64,
}

/// Every live descendant of `root` (not `root` itself) started at `since` or later
/// (start times as [`start_time`] gives them), found by each process's parent in
/// `/proc/*/stat`: orphans re-parented to a subreaper `root` included, whatever their
/// process group or session. Zombies are left out (they are dead; their parent reaps
/// them). `None` without `/proc` (macOS, FreeBSD).
#[cfg(target_os = "linux")]
pub(crate) fn descendants(root: u32, since: u64) -> Option<Vec<Descendant>> {
    // (pid, (ppid, state is zombie, descendant))
    let page = page_size();
    let all = every_stat(|pid, stat| parse_process(pid, stat, page))?;
    let mut found = Vec::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for (_, (ppid, zombie, d)) in &all {
            if *ppid == parent && d.pid != root {
                parents.push(d.pid);
                if !zombie && d.start_time >= since {
                    found.push(*d);
                }
            }
        }
    }
    Some(found)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn descendants(_root: u32, _since: u64) -> Option<Vec<Descendant>> {
    None
}

/// The live (not zombie) processes among `pids` (a cgroup's members), as
/// [`descendants`] gives them; those gone are left out. `None` without `/proc`.
#[cfg(target_os = "linux")]
pub(crate) fn processes(pids: &[u32]) -> Option<Vec<Descendant>> {
    let page = page_size();
    let live = pids.iter().filter_map(|&pid| {
        let stat = crate::sys::read_text(format!("/proc/{pid}/stat")).ok()?;
        let (_, zombie, d) = parse_process(pid, &stat, page)?;
        (!zombie).then_some(d)
    });
    Some(live.collect())
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn processes(_pids: &[u32]) -> Option<Vec<Descendant>> {
    None
}

/// The live (not zombie) children of this process, with their start times, from
/// `/proc/self/task/*/children`: a look at a few files where [`descendants`] reads
/// every process's. `None` where the kernel does not list children.
#[cfg(target_os = "linux")]
pub(crate) fn own_children() -> Option<Vec<(u32, u64)>> {
    let mut children = Vec::new();
    for task in fs::read_dir("/proc/self/task").ok()?.flatten() {
        let list = crate::sys::read_text(task.path().join("children")).ok()?;
        for pid in list
            .split_ascii_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let Ok(stat) = crate::sys::read_text(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if let Some((_, false, d)) = parse_descendant(pid, &stat) {
                children.push((pid, d.start_time));
            }
        }
    }
    Some(children)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn own_children() -> Option<Vec<(u32, u64)>> {
    None
}

#[cfg(target_os = "linux")]
fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096)
}

/// (ppid, zombie, the descendant) from a stat line, its rss in bytes of `page`.
#[cfg(target_os = "linux")]
fn parse_process(pid: u32, stat: &str, page: u64) -> Option<(u32, bool, Descendant)> {
    let (ppid, zombie, d) = parse_descendant(pid, stat)?;
    let rss = d.rss * page;
    Some((ppid, zombie, Descendant { rss, ..d }))
}

/// (ppid, zombie, the descendant with rss in pages) from a stat line.
#[cfg(target_os = "linux")]
fn parse_descendant(pid: u32, stat: &str) -> Option<(u32, bool, Descendant)> {
    // After the command name: state (3), ppid (4), pgrp (5), ... utime (14) stime (15)
    // cutime (16) cstime (17) ... starttime (22), vsize (23), rss (24).
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().take(22).collect();
    let num = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some((
        f.get(1)?.parse().ok()?,
        *f.first()? == "Z",
        Descendant {
            pid,
            pgid: f.get(2)?.parse().ok()?,
            start_time: num(19)?,
            rss: num(21)?,
        },
    ))
}

/// The fields of a `/proc/PID/stat` line [`tree_cpu`] needs, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatTimes {
    ppid: u32,
    /// utime + stime.
    own: u64,
    /// cutime + cstime: what its waited-for children used.
    reaped: u64,
}

fn parse_stat_times(stat: &str) -> Option<StatTimes> {
    // After the command name: state (3), ppid (4), ..., utime (14), stime (15),
    // cutime (16), cstime (17).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().take(15).collect();
    let num = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(StatTimes {
        ppid: fields.get(1)?.parse().ok()?,
        own: num(11)? + num(12)?,
        reaped: num(13)? + num(14)?,
    })
}

fn ticks_to_duration(ticks: u64) -> std::time::Duration {
    static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let hz = *HZ.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .and_then(|hz| u64::try_from(hz).ok())
            .filter(|hz| *hz > 0)
            .unwrap_or(100)
    });
    std::time::Duration::from_nanos(ticks.saturating_mul(1_000_000_000 / hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_start_time_with_odd_comm() {
        let stat =
            "123 (a b) c) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat_start_time(stat), Some(987654));
    }

    #[test]
    fn own_start_time_is_stable() {
        let me = std::process::id();
        let a = start_time(me).unwrap();
        assert_eq!(start_time(me), Some(a));
        assert!(alive(me, Some(a)));
        assert!(!alive(me, Some(a + 1)));
    }

    /// The start-time interface as every platform uses it: a child has one of its own,
    /// and once it is gone its recorded identity is no longer alive.
    #[test]
    fn a_child_is_alive_by_its_start_time_until_reaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = start_time(pid).expect("a living child has a start time");
        assert!(start >= start_time(std::process::id()).unwrap());
        assert!(alive(pid, Some(start)));
        assert!(alive(pid, None));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!alive(pid, Some(start)));
    }

    #[test]
    fn locks_parse_by_device_and_inode() {
        let dev = libc::makedev(0xfd, 0x01);
        let text = "\
1: POSIX  ADVISORY  WRITE 10 fd:01:555 0 EOF
2: FLOCK  ADVISORY  WRITE 4242 fd:01:555 0 EOF
2: -> FLOCK  ADVISORY  WRITE 4343 fd:01:555 0 EOF
3: FLOCK  ADVISORY  WRITE 77 fd:01:556 0 EOF
4: OFDLCK ADVISORY  WRITE -1 fd:01:555 0 EOF
";
        let mut flocks: Vec<_> = flock_lines(text).collect();
        flocks.sort_unstable();
        let snapshot = LocksSnapshot {
            flocks: Some(flocks).into(),
        };
        assert_eq!(
            snapshot.flock_holders(dev, 555),
            Some(vec![HeldLock { pid: 4242 }])
        );
        assert_eq!(
            snapshot.flock_holders(dev, 556),
            Some(vec![HeldLock { pid: 77 }])
        );
        assert_eq!(snapshot.flock_holders(dev, 557), Some(vec![]));
    }

    #[test]
    fn a_snapshot_names_the_holder_of_each_of_many_locks() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let files: Vec<_> = (0..3)
            .map(|i| {
                let f = std::fs::File::create(tmp.path().join(i.to_string())).unwrap();
                crate::sys::flock(std::os::fd::AsFd::as_fd(&f), crate::sys::FlockOp::Exclusive)
                    .unwrap();
                f
            })
            .collect();
        let free = std::fs::File::create(tmp.path().join("free")).unwrap();
        let snapshot = LocksSnapshot::default();
        let me = std::process::id();
        for f in &files {
            let m = f.metadata().unwrap();
            assert_eq!(
                snapshot.flock_holders(m.dev(), m.ino()),
                Some(vec![HeldLock { pid: me }])
            );
        }
        let m = free.metadata().unwrap();
        assert_eq!(snapshot.flock_holders(m.dev(), m.ino()), Some(vec![]));
    }

    #[test]
    fn fdinfo_lock_lines() {
        let id = lock_file_id(libc::makedev(0xfe, 0), 10027267);
        assert_eq!(id, "fe:00:10027267");
        let info = "pos:\t0\nflags:\t0100001\nmnt_id:\t27\nino:\t10027267\n\
                    lock:\t1: FLOCK  ADVISORY  WRITE 11103 fe:00:10027267 0 EOF\n";
        assert!(fdinfo_holds_flock(info, &id));
        assert!(!fdinfo_holds_flock(info, "fe:00:1002726"));
        let posix = "lock:\t1: POSIX  ADVISORY  WRITE 11103 fe:00:10027267 0 EOF\n";
        assert!(!fdinfo_holds_flock(posix, &id));
    }

    #[test]
    fn finds_a_child_holding_a_copy_of_the_descriptor() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        let file = std::fs::File::create(&path).unwrap();
        crate::sys::flock(
            std::os::fd::AsFd::as_fd(&file),
            crate::sys::FlockOp::Exclusive,
        )
        .unwrap();
        let meta = file.metadata().unwrap();
        // This process is never listed; a child holding a copy of the descriptor is.
        let me = std::process::id();
        assert!(
            !holding_processes(meta.dev(), meta.ino())
                .iter()
                .any(|p| p.pid == me)
        );
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(file.try_clone().unwrap())
            .spawn()
            .unwrap();
        let pid = child.id();
        let found = holding_processes(meta.dev(), meta.ino());
        let _ = child.kill();
        let _ = child.wait();
        // (Another test's child, between fork and exec, may briefly hold a copy too.)
        assert!(found.iter().any(|p| p.pid == pid), "{found:?}");
    }

    #[test]
    fn descendant_fields_parse() {
        let stat = "9 (a b) c) S 77 9 9 0 -1 4194560 100 0 0 0 11 22 33 44 20 0 1 0 987654 1000 10";
        let (ppid, zombie, d) = parse_descendant(9, stat).unwrap();
        assert_eq!((ppid, zombie), (77, false));
        assert_eq!((d.pgid, d.start_time, d.rss), (9, 987654, 10));
    }

    #[test]
    fn descendants_include_grandchildren_not_zombies() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & echo $!; exec sleep 30"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let grandchild: u32 = line.trim().parse().unwrap();
        let found = descendants(me, 0).unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(grandchild as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.iter().any(|d| d.pid == child.id()), "{found:?}");
        assert!(found.iter().any(|d| d.pid == grandchild), "{found:?}");
        // A later start bound leaves them out.
        let later = start_time(me).unwrap() + 1_000_000_000;
        assert!(descendants(me, later).unwrap().is_empty());
    }

    #[test]
    fn stat_times_parse() {
        let stat = "123 (a b) c) S 77 123 123 0 -1 4194560 100 0 0 0 11 22 33 44 20 0 1 0 987654";
        let t = parse_stat_times(stat).unwrap();
        assert_eq!(
            t,
            StatTimes {
                ppid: 77,
                own: 33,
                reaped: 77
            }
        );
        assert_eq!(parse_stat_times("1 (x) S 0"), None);
    }

    #[test]
    fn tree_cpu_counts_a_busy_child() {
        let me = std::process::id();
        let before = tree_cpu(me);
        // A child that burns CPU for a while, then is reaped: its time moves into ours.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        child.wait().unwrap();
        assert!(tree_cpu(me) > before);
    }
}
