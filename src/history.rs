//! `.ralph/supervise/runs.jsonl`: one JSON line per supervised run.
//!
//! Many supervisors (a primary and its worktree loops all write the main repository's
//! history) append at once. Each record is appended on an `O_APPEND` descriptor under an
//! exclusive flock on the file ([`crate::ralph_dir::RalphFile::append`]), so lines never
//! interleave; a line torn by a crash is closed with a newline by the next writer and
//! skipped by readers.

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ralph_dir::Access;
use crate::workspace::RalphDir;

pub(crate) const DIR: &str = "supervise";
pub(crate) const FILE: &str = "runs.jsonl";
/// Kept in [`DIR`]: git then leaves the directory out (`*` matches every
/// file in it, this one too).
const GITIGNORE: &str = ".gitignore";

/// `.ralph/supervise/`, made if missing. What the supervisor keeps there (this history,
/// the hand-over's `loop.json`) is this machine's record, never the project's: the
/// directory gets a `.gitignore` of `*` unless it has one (an earlier version's
/// directory too), so `git add .` (ralph's auto-commit) leaves it out. One that is there
/// is never changed: to have git see the history, empty it (removed, it comes back).
pub(crate) fn own_dir(dir: &RalphDir) -> io::Result<RalphDir> {
    let sub = dir.subdir(DIR, true)?.expect("created");
    match sub.create_new(GITIGNORE) {
        Ok(mut file) => std::io::Write::write_all(&mut file, b"*\n")?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    Ok(sub)
}

/// One run, from lock to release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub(crate) id: String,
    pub(crate) mode: String,
    pub(crate) command: Vec<String>,
    /// The whole prompt (the lock metadata keeps ralph's 100 characters).
    pub(crate) prompt: String,
    /// RFC 3339, UTC.
    pub(crate) start: String,
    pub(crate) end: String,
    /// The last run's exit code, when it exited.
    pub(crate) exit_code: Option<i32>,
    /// The signal that killed the last run, when one did (`SIGTERM`).
    pub(crate) signal: Option<String>,
    /// What `ralph-supervise run` exited with.
    pub(crate) status: u8,
    pub(crate) restarts: u32,
    /// How it was stopped: `signal SIGTERM`, `stop-request`, `max-runtime`, `discarded`,
    /// or `stall` (the last run stalled); `None` when the command ended by itself.
    pub(crate) stopped_by: Option<String>,
    pub(crate) worktree: Option<PathBuf>,
    pub(crate) supervisor_pid: u32,
    pub(crate) child_pid: Option<u32>,
    /// Log lines the supervisor could not write to its stderr (a hung-up terminal, a
    /// closed pipe); left out when none were lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) log_lines_dropped: Option<u64>,
    /// Fleet mode: the fleet lock's key and the run's fencing token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fleet: Option<crate::metadata::FleetFacts>,
    /// How the loop's processes were contained: `cgroup` or `tree`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) containment: Option<String>,
    /// CPU time the loop's processes used (over all runs), in milliseconds: in user
    /// space and in the kernel. From the cgroup, else from the reaped processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cpu_user_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cpu_system_ms: Option<u64>,
    /// Peak memory in bytes: of all the loop's processes together (the cgroup's
    /// `memory.peak`, `memory_peak_of` = `cgroup`), else of its largest process
    /// (`largest-process`, from the reaped processes' rusage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) memory_peak_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) memory_peak_of: Option<String>,
    /// Most processes the loop had at once (the cgroup's `pids.peak`), where the pids
    /// controller is available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) processes_peak: Option<u64>,
}

/// Appends one record (creating `supervise/` and the file as needed, never through a
/// symlink).
pub(crate) fn append(dir: &RalphDir, record: &Record) -> io::Result<()> {
    let mut line = serde_json::to_string(record)?;
    line.push('\n');
    let sub = own_dir(dir)?;
    let file = sub
        .open_locked(FILE, Access::Append, true)?
        .expect("created");
    // One record under the flock: concurrent appends never interleave, and a torn
    // line (a crash, a full disk) is never left behind. No fsync: the history is a
    // record for people, not worth a disk flush on every loop's exit.
    file.append(line.as_bytes())
}

/// All readable records, oldest first; lines that do not parse are skipped (counted in
/// the second value).
pub(crate) fn read(dir: &RalphDir) -> io::Result<(Vec<Record>, usize)> {
    let Some(sub) = dir.subdir(DIR, false)? else {
        return Ok((Vec::new(), 0));
    };
    let Some(file) = sub.open(FILE, Access::Read, false)? else {
        return Ok((Vec::new(), 0));
    };
    Ok(parse(&file.read_all()?))
}

/// Parses history contents line by line: the records that parse, and how many
/// non-blank lines did not (a torn or foreign line, even one that is not UTF-8, costs
/// only itself).
pub fn parse(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut bad = 0;
    let records = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .filter_map(|l| match serde_json::from_slice(l) {
            Ok(r) => Some(r),
            Err(_) => {
                bad += 1;
                None
            }
        })
        .collect();
    (records, bad)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn record(id: &str) -> Record {
        Record {
            id: id.into(),
            mode: "primary".into(),
            command: vec!["true".into()],
            prompt: "p".into(),
            start: "2026-01-01T00:00:00.000Z".into(),
            end: "2026-01-01T00:00:01.000Z".into(),
            exit_code: Some(0),
            signal: None,
            status: 0,
            restarts: 0,
            stopped_by: None,
            worktree: None,
            supervisor_pid: 1,
            child_pid: Some(2),
            log_lines_dropped: None,
            fleet: None,
            containment: None,
            cpu_user_ms: None,
            cpu_system_ms: None,
            memory_peak_bytes: None,
            memory_peak_of: None,
            processes_peak: None,
        }
    }

    #[test]
    fn appends_and_reads_back_skipping_torn_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RalphDir::open_or_create(tmp.path()).unwrap();
        assert_eq!(read(&dir).unwrap(), (vec![], 0));
        append(&dir, &record("a")).unwrap();
        // A crashed writer left half a line.
        let path = tmp.path().join(".ralph/supervise/runs.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"id\":\"torn").unwrap();
        append(&dir, &record("b")).unwrap();
        let (records, bad) = read(&dir).unwrap();
        assert_eq!(
            records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(bad, 1);
    }

    #[test]
    fn refuses_a_symlinked_history_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RalphDir::open_or_create(tmp.path()).unwrap();
        std::os::unix::fs::symlink(tmp.path(), tmp.path().join(".ralph/supervise")).unwrap();
        assert!(append(&dir, &record("a")).is_err());
    }
}
