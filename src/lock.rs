//! The workspace lock: `flock(2)` on `.ralph/loop.lock`, exactly as ralph-orchestrator
//! takes it.
//!
//! The lock belongs to the open file description, not to a process. The supervisor's
//! descriptor is close-on-exec; the child gets its own copy of the same description (see
//! [`crate::sys::install_child_setup`]), so the lock lives as long as either of them.
//! Dropping a [`LockFile`] only closes our descriptor: it never unlocks, because an early
//! return while the child lives must not free the workspace. Unlocking is explicit, in
//! [`LockFile::release`].
//!
//! The file is never deleted, renamed or recreated (a new inode would mean two primaries),
//! and from the first write after locking until the release it always holds valid JSON:
//! new metadata is written in one `pwrite` over the old bytes, padded with spaces to the
//! file's size, which does not shrink while locked (see [`RalphFile::write_in_place`]).
//! The metadata is written first thing once the lock is taken ([`crate::conflict`]'s
//! `Moment::Holding`); the release empties the file, so the next taker's file is empty
//! between its `flock` and its first write (ralph's own taking has that instant too).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;

use crate::exit::Failure;
use crate::metadata::Metadata;
use crate::procfs::{self, HoldingProcess};
use crate::ralph_dir::{Access, RalphFile, TryLock};
use crate::sys::FlockOp;
use crate::workspace::RalphDir;

pub(crate) use crate::ralph_dir::LOCK_FILE;

/// Largest metadata file read back; anything larger is not ours or ralph's.
const READ_LIMIT: usize = 1 << 20;

/// An open `.ralph/loop.lock`, locked or not.
#[derive(Debug)]
pub(crate) struct LockFile {
    file: RalphFile,
    /// A hand-over loop's own metadata (`.ralph/supervise/loop.json`), read when the
    /// lock was found held: its child (ralph) rewrote the lock file with its own three
    /// fields, so the supervisor's pids and start times are there.
    sidecar: Option<Box<Metadata>>,
}

/// Result of trying the lock.
#[derive(Debug)]
pub(crate) enum Acquire {
    Acquired(LockFile),
    /// Someone holds it; the file is open (unlocked) for reading who.
    Held(LockFile),
}

impl LockFile {
    /// Opens (creating if missing, mode 0644 before umask) the lock file of `dir`,
    /// without following a symlink. Refuses anything but a regular file.
    pub(crate) fn open(dir: &RalphDir) -> Result<LockFile, Failure> {
        let file = dir
            .open(LOCK_FILE, Access::ReadWrite, true)?
            .expect("created");
        Ok(LockFile {
            file,
            sidecar: None,
        })
    }

    /// Opens the lock file of `dir` read-only if it exists (never creates it), for those
    /// who only look (`status`, `list`, `wait`, `stop`, `gc`): they need no write access
    /// (a read-only user, a read-only mount), can try the lock and read who holds it.
    pub(crate) fn open_to_probe(dir: &RalphDir) -> Result<Option<LockFile>, Failure> {
        Ok(dir
            .open(LOCK_FILE, Access::Read, false)?
            .map(|file| LockFile {
                file,
                sidecar: crate::handover::read_sidecar(dir).map(Box::new),
            }))
    }

    /// Whether nobody holds the lock, by a non-blocking attempt that, if it succeeds,
    /// lets go at once without touching the file (for systems without `/proc/locks`).
    pub(crate) fn probe_free(&self) -> bool {
        match self.try_lock() {
            Ok(true) => {
                let _ = self.file.unlock();
                true
            }
            _ => false,
        }
    }

    /// Lets go of a lock taken only to learn that the workspace is free (`wait`,
    /// `stop`): unlocks without touching the file, whose contents are not ours.
    pub(crate) fn unlock(self) {
        let _ = self.file.unlock();
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        self.file.path()
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` when someone else holds it.
    pub(crate) fn try_lock(&self) -> io::Result<bool> {
        self.file.lock(FlockOp::TryExclusive)
    }

    /// Whether `.ralph/loop.lock` still names the inode we opened.
    pub(crate) fn still_linked(&self, dir: &RalphDir) -> bool {
        self.file.still_linked(dir)
    }

    /// Replaces the metadata without the file ever being empty, cut or invalid: the new
    /// JSON, padded with spaces to the file's size, in one write over the old bytes.
    pub(crate) fn write_metadata(&self, meta: &Metadata) -> io::Result<()> {
        self.file.write_in_place(meta.to_json().into_bytes())
    }

    /// The file's contents (capped), whatever they are.
    pub(crate) fn read_raw(&self) -> io::Result<Vec<u8>> {
        self.file.read_up_to(READ_LIMIT)
    }

    /// Who holds the lock: the file's word, and the kernel's (`/proc/locks`) only when
    /// the file does not say. Reading `/proc/locks` costs an RCU grace period (the kernel
    /// takes a global write lock for it: measured 4-15 ms), too much for every conflict.
    /// When the processes the file names are gone (not when they are another pid
    /// namespace's), the processes that hold the lock now are looked for too (a scan of
    /// `/proc/*/fd`, 2-3 ms): call it only when the lock is known to be held. A file
    /// that names nobody (ralph's lock between runs, `flock(1)`) is not scanned for: the
    /// kernel's word names the holder, and the fail-fast path stays cheap.
    pub(crate) fn holder(&self) -> Holder {
        let mut holder = self.holder_from_file();
        let named = matches!(holder.metadata, MetaState::Valid(_));
        if !named {
            holder.kernel = self.kernel_holders(&procfs::LocksSnapshot::default());
        }
        if named && holder.needs_scan() {
            if holder.kernel.is_none() {
                holder.kernel = self.kernel_holders(&procfs::LocksSnapshot::default());
            }
            holder.processes = Some(self.holding_processes());
        }
        holder
    }

    /// Who holds the lock, asking the kernel in any case (`status`, `list`), through
    /// `locks`: one reading of `/proc/locks` for all the files `list` looks at.
    pub(crate) fn holder_with_kernel(&self, locks: &procfs::LocksSnapshot) -> Holder {
        let mut holder = self.holder_from_file();
        holder.kernel = self.kernel_holders(locks);
        holder
    }

    /// The living processes that hold the lock through a descriptor of their own.
    pub(crate) fn holding_processes(&self) -> Vec<procfs::HoldingProcess> {
        let (dev, ino) = self.file.dev_ino();
        procfs::holding_processes(dev, ino)
    }

    /// The pids that took the flock: `/proc/locks`'s word, or where it is missing
    /// (macOS, FreeBSD) [`Self::holders_by_probe`].
    fn kernel_holders(&self, locks: &procfs::LocksSnapshot) -> Option<Vec<u32>> {
        let (dev, ino) = self.file.dev_ino();
        match locks.flock_holders(dev, ino) {
            Some(holders) => Some(holders.into_iter().map(|h| h.pid).collect()),
            None => Some(self.holders_by_probe()),
        }
    }

    /// Who took the flock, found without `/proc/locks`: a non-blocking attempt (on this
    /// description, never one we lock with: it lets go at once) says whether anybody
    /// holds it, and the metadata, which only the taker writes, says who: its
    /// supervisor, or for a lock ralph took itself its `pid`, when that process is alive
    /// (confirmed by its recorded start time) in our pid namespace. Empty when the lock
    /// is free or its taker cannot be confirmed (gone, say, while a descendant that
    /// inherited the descriptor holds on): weaker than `/proc/locks`, which names a dead
    /// taker too, so such leftovers are named as unknown and never signalled.
    pub(crate) fn holders_by_probe(&self) -> Vec<u32> {
        if self.probe_free() {
            return vec![];
        }
        let MetaState::Valid(m) = self.holder_from_file().metadata else {
            return vec![];
        };
        if pids_elsewhere(&m) {
            return vec![];
        }
        let taker = match m.supervisor_pid {
            Some(sup) => m
                .supervisor_start_time
                .is_some_and(|start| procfs::alive(sup, Some(start)))
                .then_some(sup),
            None => procfs::alive(m.pid, None).then_some(m.pid),
        };
        taker.into_iter().collect()
    }

    fn holder_from_file(&self) -> Holder {
        let metadata = match self.read_raw() {
            // A running hand-over loop's own record wins over its child's write.
            _ if self.sidecar.is_some() => MetaState::Valid(self.sidecar.clone().expect("checked")),
            Ok(bytes) => match Metadata::parse(&bytes) {
                Ok(Some(m)) => MetaState::Valid(Box::new(m)),
                Ok(None) => MetaState::Empty,
                Err(e) => MetaState::Invalid(e.to_string()),
            },
            Err(e) => MetaState::Invalid(e.to_string()),
        };
        Holder {
            metadata,
            kernel: None,
            processes: None,
        }
    }

    /// Ends the lock when the work is over: empties the metadata while still holding
    /// the lock, unlocks explicitly (a leaked grandchild holding a copy of the
    /// descriptor would otherwise keep the workspace locked), then closes.
    ///
    /// Then yields the CPU: a waiter the unlock woke is most often queued on this CPU,
    /// and the scheduler would otherwise let it wait until our own clean-up (closing,
    /// removing the cgroup, exiting) is over: 0.1-0.2 ms of every hand-off (perf
    /// tracepoints, BENCHMARKS.md). With nobody waiting, `sched_yield` returns at once.
    pub(crate) fn release(self) -> io::Result<()> {
        let truncated = self.file.truncate(0);
        self.file.unlock()?;
        std::thread::yield_now();
        truncated
    }
}

impl AsFd for LockFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Tries to take the workspace lock once (non-blocking), re-checking after locking that
/// the path still names the locked inode (if someone replaced the file, start over).
pub(crate) fn try_acquire(dir: &RalphDir) -> Result<Acquire, Failure> {
    Ok(match dir.try_lock(LOCK_FILE)? {
        TryLock::Locked(file) => Acquire::Acquired(LockFile {
            file,
            sidecar: None,
        }),
        TryLock::Held(file) => Acquire::Held(LockFile {
            file,
            sidecar: crate::handover::read_sidecar(dir).map(Box::new),
        }),
    })
}

/// What the lock file said about its holder.
#[derive(Debug, Clone)]
pub(crate) enum MetaState {
    Valid(Box<Metadata>),
    Empty,
    Invalid(String),
}

/// The holder of a lock: the file's word and the kernel's.
#[derive(Debug, Clone)]
pub(crate) struct Holder {
    pub(crate) metadata: MetaState,
    /// Pids `/proc/locks` lists as having taken the flock; `None` when not asked (the
    /// metadata said who) or without procfs.
    pub(crate) kernel: Option<Vec<u32>>,
    /// The processes holding the lock now, looked for when those the metadata names are
    /// gone (a descendant of the child that escaped its group, someone's `flock(1)`);
    /// `None` when not looked for.
    pub(crate) processes: Option<Vec<procfs::HoldingProcess>>,
}

impl Holder {
    /// Whether a process the metadata names as holding the lock (the supervisor or the
    /// child, confirmed by start time; ralph's own pid) is alive.
    pub(crate) fn recorded_alive(&self) -> bool {
        match &self.metadata {
            MetaState::Valid(m) => recorded_alive(m),
            _ => false,
        }
    }

    /// Whether the metadata's pids are another pid namespace's ([`pids_elsewhere`]).
    pub(crate) fn pids_elsewhere(&self) -> bool {
        matches!(&self.metadata, MetaState::Valid(m) if pids_elsewhere(m))
    }

    /// Whether to look for the processes holding the lock: nobody the metadata names
    /// is alive, as far as this namespace can tell.
    pub(crate) fn needs_scan(&self) -> bool {
        !self.recorded_alive() && !self.pids_elsewhere()
    }
}

/// Whether the pids `m` records are numbers of another pid namespace than ours (a loop
/// in a container seen from the host, say): they must not be judged alive or gone
/// here, and never signalled. `false` when the metadata does not say (ralph's own).
pub(crate) fn pids_elsewhere(m: &Metadata) -> bool {
    m.pid_namespace
        .is_some_and(|ns| procfs::pid_namespace().is_some_and(|ours| ours != ns))
}

/// Whether the supervisor or the child `m` records is alive (confirmed by start time
/// where recorded), or, for a lock ralph wrote itself, its `pid`. Pids of another
/// namespace are not judged: `false`.
pub(crate) fn recorded_alive(m: &Metadata) -> bool {
    if pids_elsewhere(m) {
        return false;
    }
    let sup = m
        .supervisor_pid
        .is_some_and(|p| procfs::alive(p, m.supervisor_start_time));
    let child = match m.child_pid {
        Some(p) => procfs::alive(p, m.child_start_time),
        None => m.supervisor_pid.is_none() && procfs::alive(m.pid, None),
    };
    sup || child
}

/// What the kernel and the lock file say about one workspace.
#[derive(Debug)]
pub(crate) struct LoopState {
    pub(crate) workspace: PathBuf,
    /// Somebody holds the flock.
    pub(crate) held: bool,
    /// Pids `/proc/locks` names as having taken the flock.
    pub(crate) lockers: Vec<u32>,
    pub(crate) metadata: MetaState,
    /// The processes holding the lock now, looked for only when it is held and the
    /// processes the metadata names are gone (`None`: not looked for).
    pub(crate) holders: Option<Vec<HeldBy>>,
    /// What the loop's processes use now, when its supervisor runs here.
    pub(crate) live: Option<crate::containment::Live>,
}

/// A process holding the lock, and whether it belongs to the recorded loop (see
/// `conflict::member_of_loop`): `stop` may end it then, and only then.
#[derive(Debug, Clone)]
pub(crate) struct HeldBy {
    pub(crate) process: HoldingProcess,
    pub(crate) member: bool,
}

impl LoopState {
    pub(crate) fn meta(&self) -> Option<&Metadata> {
        match &self.metadata {
            MetaState::Valid(m) => Some(m),
            _ => None,
        }
    }

    /// Whether the metadata's pids are another pid namespace's: not judged here.
    pub(crate) fn pids_elsewhere(&self) -> bool {
        self.meta().is_some_and(pids_elsewhere)
    }

    /// `(supervisor alive, child alive)`, each confirmed by start time where recorded;
    /// `None` where not recorded, or recorded in another pid namespace.
    pub(crate) fn liveness(&self) -> (Option<bool>, Option<bool>) {
        let Some(m) = self.meta() else {
            return (None, None);
        };
        if self.pids_elsewhere() {
            return (None, None);
        }
        let sup = m
            .supervisor_pid
            .map(|p| procfs::alive(p, m.supervisor_start_time));
        let child = m
            .child_pid
            .map(|p| procfs::alive(p, m.child_start_time))
            .or_else(|| (m.supervisor_pid.is_none()).then(|| procfs::alive(m.pid, None)));
        (sup, child)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> (tempfile::TempDir, RalphDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RalphDir::open_or_create(tmp.path()).unwrap();
        (tmp, dir)
    }

    fn meta(prompt: &str) -> Metadata {
        Metadata {
            pid: 1,
            started: chrono::Utc::now(),
            prompt: prompt.into(),
            supervisor_pid: None,
            supervisor_start_time: None,
            child_pid: None,
            child_start_time: None,
            loop_id: None,
            mode: None,
            command: vec![],
            workspace: None,
            hostname: None,
            version: None,
            pid_namespace: None,
            loop_index: None,
            restart: Default::default(),
            fleet: None,
            contained: Default::default(),
        }
    }

    #[test]
    fn shorter_metadata_replaces_longer_and_parses() {
        let (_tmp, dir) = workspace();
        let Acquire::Acquired(lock) = try_acquire(&dir).unwrap() else {
            panic!("fresh lock held")
        };
        lock.write_metadata(&meta(&"long ".repeat(20))).unwrap();
        lock.write_metadata(&meta("short")).unwrap();
        let raw = lock.read_raw().unwrap();
        let parsed = Metadata::parse(&raw).unwrap().unwrap();
        assert_eq!(parsed.prompt, "short");
        // Padded, never shrunk while locked: a reader that sized its read before the
        // rewrite still gets one version whole.
        let long = meta(&"long ".repeat(20)).to_json().len();
        assert!(raw.len() > long, "{}", raw.len());
        assert!(
            raw[meta("short").to_json().len()..]
                .iter()
                .all(|&b| b == b' ')
        );
        // Longer again: it fits in the room left, the size stays.
        lock.write_metadata(&meta(&"longer ".repeat(14))).unwrap();
        assert_eq!(lock.read_raw().unwrap().len(), raw.len());
    }

    /// The lookup used where there is no `/proc/locks` (macOS, FreeBSD), run here on
    /// Linux: it names the taker the metadata records, confirmed by start time, and
    /// agrees with `/proc/locks` while that taker lives.
    #[test]
    fn probe_lookup_names_the_confirmed_taker() {
        let (tmp, dir) = workspace();
        let Acquire::Acquired(lock) = try_acquire(&dir).unwrap() else {
            panic!("fresh lock held")
        };
        let me = std::process::id();
        let start = procfs::start_time(me).unwrap();
        let mut m = meta("mine");
        m.supervisor_pid = Some(me);
        m.supervisor_start_time = Some(start);
        lock.write_metadata(&m).unwrap();
        let Acquire::Held(other) = try_acquire(&dir).unwrap() else {
            panic!("lock not exclusive")
        };
        assert_eq!(other.holders_by_probe(), vec![me]);
        #[cfg(target_os = "linux")]
        {
            let (dev, ino) = other.file.dev_ino();
            let listed: Vec<u32> = procfs::LocksSnapshot::default()
                .flock_holders(dev, ino)
                .unwrap()
                .into_iter()
                .map(|h| h.pid)
                .collect();
            assert_eq!(listed, vec![me], "/proc/locks agrees");
        }
        // The probe let go at once: the lock is still ours, the other still sees it held.
        assert!(!other.try_lock().unwrap());

        // A recorded start time that is not the process's: a reused pid, not the taker.
        m.supervisor_start_time = Some(start + 1);
        lock.write_metadata(&m).unwrap();
        assert_eq!(other.holders_by_probe(), Vec::<u32>::new());
        // No start time recorded for a supervisor: not confirmed either.
        m.supervisor_start_time = None;
        lock.write_metadata(&m).unwrap();
        assert_eq!(other.holders_by_probe(), Vec::<u32>::new());
        // A lock ralph took itself: its pid, alive.
        let mut ralph = meta("ralph");
        ralph.pid = me;
        lock.write_metadata(&ralph).unwrap();
        assert_eq!(other.holders_by_probe(), vec![me]);
        // Unreadable metadata: held, taker unknown.
        std::fs::write(tmp.path().join(".ralph").join(LOCK_FILE), "not json").unwrap();
        assert_eq!(other.holders_by_probe(), Vec::<u32>::new());

        // Free: nobody, and probing does not take it.
        lock.release().unwrap();
        assert_eq!(other.holders_by_probe(), Vec::<u32>::new());
        let Acquire::Acquired(again) = try_acquire(&dir).unwrap() else {
            panic!("the probe kept the lock")
        };
        again.release().unwrap();
    }

    /// The probe sees a lock held by another process, through its own open file
    /// description (as `status` on macOS does for a loop started by someone else).
    #[test]
    fn probe_lookup_sees_another_process_hold_it() {
        let (tmp, dir) = workspace();
        let path = tmp.path().join(".ralph").join(LOCK_FILE);
        std::fs::write(&path, "").unwrap();
        // flock(1) holds the lock and tells us so through its stdout; it exits when
        // its stdin closes.
        let mut child = std::process::Command::new("flock")
            .arg(&path)
            .args(["-c", "echo locked; read _"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "locked\n");
        let Acquire::Held(other) = try_acquire(&dir).unwrap() else {
            panic!("flock(1) does not hold it")
        };
        let mut m = meta("flock");
        m.pid = child.id();
        std::fs::write(&path, m.to_json()).unwrap();
        assert_eq!(other.holders_by_probe(), vec![child.id()]);
        drop(child.stdin.take());
        child.wait().unwrap();
        assert_eq!(other.holders_by_probe(), Vec::<u32>::new());
    }

    #[test]
    fn second_description_sees_it_held_until_release() {
        let (_tmp, dir) = workspace();
        let Acquire::Acquired(lock) = try_acquire(&dir).unwrap() else {
            panic!("fresh lock held")
        };
        lock.write_metadata(&meta("mine")).unwrap();
        let Acquire::Held(other) = try_acquire(&dir).unwrap() else {
            panic!("lock not exclusive")
        };
        match other.holder().metadata {
            MetaState::Valid(m) => assert_eq!(m.prompt, "mine"),
            m => panic!("{m:?}"),
        }
        lock.release().unwrap();
        assert!(other.try_lock().unwrap());
        assert!(other.read_raw().unwrap().is_empty());
    }
}
