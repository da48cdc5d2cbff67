//! What the kernel says about processes and locks, read from `/proc`.
//!
//! Files lie (a pid in a lock file may be stale or reused); the kernel does not. Before
//! the supervisor signals a pid it found in a file it confirms the process by its start
//! time, and to learn whether a lock is held without taking it, it reads `/proc/locks`.

use std::fs;

use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Start time of a process in clock ticks since boot (field 22 of `/proc/PID/stat`).
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    // One read into a buffer large enough for any stat line (it sits on the launch
    // path; `read_to_string` would grow from 32 bytes in five reads).
    use std::io::Read;
    let mut buf = [0u8; 1024];
    let n = fs::File::open(format!("/proc/{pid}/stat"))
        .ok()?
        .read(&mut buf)
        .ok()?;
    parse_stat_start_time(std::str::from_utf8(&buf[..n]).ok()?)
}

fn parse_stat_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); field 22 is the 20th from there.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is alive and, when a start time was recorded, still the same process.
pub(crate) fn alive(pid: u32, recorded_start: Option<u64>) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    match recorded_start {
        Some(recorded) => start_time(pid) == Some(recorded) && !is_zombie(pid),
        None => kill(Pid::from_raw(pid as i32), None).is_ok() && !is_zombie(pid),
    }
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_ascii_whitespace().next().map(|st| st == "Z")
        })
        .unwrap_or(false)
}

/// A flock held on a file, as `/proc/locks` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldLock {
    /// The process that took the lock (it may have died since, leaving the lock to a
    /// child that inherited the descriptor).
    pub(crate) pid: u32,
}

/// The FLOCK holders of the file with this device and inode, from `/proc/locks`.
/// `None` when `/proc/locks` cannot be read (not Linux, no procfs).
pub(crate) fn flock_holders(dev: u64, ino: u64) -> Option<Vec<HeldLock>> {
    let text = read_locks()?;
    Some(parse_locks(&text, dev, ino))
}

/// `/proc/locks`. The kernel walks its lock list anew for each page it hands out, so
/// while other processes lock and unlock, an entry can be skipped: callers treat
/// "not listed" as "ask the kernel again" (a non-blocking flock probe), never as proof.
fn read_locks() -> Option<String> {
    fs::read_to_string("/proc/locks").ok()
}

fn parse_locks(text: &str, dev: u64, ino: u64) -> Vec<HeldLock> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let mut held = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let _id = fields.next();
        let Some(kind) = fields.next() else {
            continue;
        };
        if kind == "->" {
            // A waiter blocked on the lock, not a holder.
            continue;
        }
        if kind != "FLOCK" {
            continue;
        }
        let _advisory = fields.next();
        let _mode = fields.next(); // READ / WRITE
        let (Some(pid), Some(file)) = (fields.next(), fields.next()) else {
            continue;
        };
        let mut parts = file.split(':');
        let (Some(maj), Some(min), Some(inode)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let same = u32::from_str_radix(maj, 16).ok() == Some(major)
            && u32::from_str_radix(min, 16).ok() == Some(minor)
            && inode.parse::<u64>().ok() == Some(ino);
        if same && let Ok(pid) = pid.parse() {
            held.push(HeldLock { pid });
        }
    }
    held
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
        assert_eq!(parse_locks(text, dev, 555), vec![HeldLock { pid: 4242 }]);
        assert_eq!(parse_locks(text, dev, 557), vec![]);
    }
}
