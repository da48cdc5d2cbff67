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
//! and while locked it always holds valid JSON: new metadata is written padded with spaces
//! over the old bytes, then the file is truncated to length.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use crate::exit::Failure;
use crate::metadata::Metadata;
use crate::procfs;
use crate::ralph_dir::{Access, RalphFile, TryLock};
use crate::sys::FlockOp;
use crate::workspace::RalphDir;

pub(crate) const LOCK_FILE: &str = "loop.lock";

/// Largest metadata file read back; anything larger is not ours or ralph's.
const READ_LIMIT: usize = 1 << 20;

/// An open `.ralph/loop.lock`, locked or not.
#[derive(Debug)]
pub(crate) struct LockFile {
    file: RalphFile,
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
        Ok(LockFile { file })
    }

    /// Opens the lock file of `dir` if it exists (never creates it).
    pub(crate) fn open_existing(dir: &RalphDir) -> Result<Option<LockFile>, Failure> {
        Ok(dir
            .open(LOCK_FILE, Access::ReadWrite, false)?
            .map(|file| LockFile { file }))
    }

    /// Opens the lock file of `dir` read-only if it exists, for a prober that may find
    /// the workspace unwritable (`gc`): it can try the lock and read who holds it.
    pub(crate) fn open_to_probe(dir: &RalphDir) -> Result<Option<LockFile>, Failure> {
        Ok(dir
            .open(LOCK_FILE, Access::Read, false)?
            .map(|file| LockFile { file }))
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

    /// `flock(LOCK_EX)`, blocking in the kernel until the lock is ours.
    pub(crate) fn lock_blocking(&self) -> io::Result<()> {
        self.file.lock(FlockOp::Exclusive).map(drop)
    }

    /// Whether `.ralph/loop.lock` still names the inode we opened.
    pub(crate) fn still_linked(&self, dir: &RalphDir) -> bool {
        self.file.still_linked(dir)
    }

    /// Replaces the metadata without the file ever being empty or invalid: the new JSON,
    /// padded with spaces to the old length, is written over the old bytes, then the
    /// file is truncated to the JSON's length.
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
    pub(crate) fn holder(&self) -> Holder {
        let mut holder = self.holder_from_file();
        if !matches!(holder.metadata, MetaState::Valid(_)) {
            holder.kernel = self.kernel_holders();
        }
        holder
    }

    /// Who holds the lock, asking the kernel in any case (`status`, `list`).
    pub(crate) fn holder_with_kernel(&self) -> Holder {
        let mut holder = self.holder_from_file();
        holder.kernel = self.kernel_holders();
        holder
    }

    fn kernel_holders(&self) -> Option<Vec<u32>> {
        let (dev, ino) = self.file.dev_ino();
        procfs::flock_holders(dev, ino).map(|holders| holders.into_iter().map(|h| h.pid).collect())
    }

    fn holder_from_file(&self) -> Holder {
        let metadata = match self.read_raw() {
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
        }
    }

    /// Ends the lock when the work is over: empties the metadata while still holding
    /// the lock, unlocks explicitly (a leaked grandchild holding a copy of the
    /// descriptor would otherwise keep the workspace locked), then closes.
    pub(crate) fn release(self) -> io::Result<()> {
        let truncated = self.file.truncate(0);
        self.file.unlock()?;
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
        TryLock::Locked(file) => Acquire::Acquired(LockFile { file }),
        TryLock::Held(file) => Acquire::Held(LockFile { file }),
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
            restart: Default::default(),
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
        assert_eq!(raw.len(), meta("short").to_json().len());
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
