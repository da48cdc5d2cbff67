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

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, FcntlArg, OFlag, fcntl, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::sys::uio::{pread, pwrite};
use nix::unistd::ftruncate;

use crate::exit::{ExitStatus, Failure};
use crate::metadata::Metadata;
use crate::procfs;
use crate::sys::{FlockOp, flock};
use crate::workspace::RalphDir;

pub const LOCK_FILE: &str = "loop.lock";

/// Largest metadata file read back; anything larger is not ours or ralph's.
const READ_LIMIT: usize = 1 << 20;

/// An open `.ralph/loop.lock`, locked or not.
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
    dev: u64,
    ino: u64,
}

/// Result of trying the lock.
#[derive(Debug)]
pub enum Acquire {
    Acquired(LockFile),
    /// Someone holds it; the file is open (unlocked) for reading who.
    Held(LockFile),
}

impl LockFile {
    /// Opens (creating if missing, mode 0644 before umask) the lock file of `dir`,
    /// without following a symlink. Refuses anything but a regular file.
    pub fn open(dir: &RalphDir) -> Result<LockFile, Failure> {
        let path = dir.path().join(LOCK_FILE);
        let fd: OwnedFd = openat(
            dir,
            LOCK_FILE,
            // O_NONBLOCK so that a FIFO planted here cannot hang the open; cleared below.
            OFlag::O_RDWR
                | OFlag::O_CREAT
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(|e| refuse(&path, e))?;
        let st = fstat(&fd).map_err(|e| refuse(&path, e))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(Failure::msg(
                ExitStatus::Failure,
                format!(
                    "refusing {}: it is not a regular file; remove it so a lock file can be created",
                    path.display()
                ),
            ));
        }
        // The child inherits this open file description: give it ordinary flags.
        fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_RDWR)).map_err(|e| refuse(&path, e))?;
        Ok(LockFile {
            file: File::from(fd),
            path,
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    /// Opens the lock file of `dir` if it exists (never creates it).
    pub fn open_existing(dir: &RalphDir) -> Result<Option<LockFile>, Failure> {
        match fstatat(dir, LOCK_FILE, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(None),
            _ => LockFile::open(dir).map(Some),
        }
    }

    /// Whether nobody holds the lock, by a non-blocking attempt that, if it succeeds,
    /// lets go at once without touching the file (for systems without `/proc/locks`).
    pub fn probe_free(&self) -> bool {
        match self.try_lock() {
            Ok(true) => {
                let _ = flock(self.file.as_fd(), FlockOp::Unlock);
                true
            }
            _ => false,
        }
    }

    /// Lets go of a lock taken only to learn that the workspace is free (`wait`,
    /// `stop`): unlocks without touching the file, whose contents are not ours.
    pub fn unlock(self) {
        let _ = flock(self.file.as_fd(), FlockOp::Unlock);
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn dev_ino(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` when someone else holds it.
    pub fn try_lock(&self) -> io::Result<bool> {
        match flock(self.file.as_fd(), FlockOp::TryExclusive) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `flock(LOCK_EX)`, blocking in the kernel until the lock is ours.
    pub fn lock_blocking(&self) -> io::Result<()> {
        flock(self.file.as_fd(), FlockOp::Exclusive)
    }

    /// Whether `.ralph/loop.lock` still names the inode we opened.
    pub fn still_linked(&self, dir: &RalphDir) -> bool {
        matches!(
            fstatat(dir, LOCK_FILE, AtFlags::AT_SYMLINK_NOFOLLOW),
            Ok(FileStat { st_dev, st_ino, .. }) if st_dev == self.dev && st_ino == self.ino
        )
    }

    /// Replaces the metadata without the file ever being empty or invalid: the new JSON,
    /// padded with spaces to the old length, is written over the old bytes in one
    /// `pwrite`, then the file is truncated to the JSON's length.
    pub fn write_metadata(&self, meta: &Metadata) -> io::Result<()> {
        let json = meta.to_json();
        let old_len = fstat(&self.file).map(|s| s.st_size as usize).unwrap_or(0);
        let mut buf = json.into_bytes();
        let len = buf.len();
        if buf.len() < old_len {
            buf.resize(old_len, b' ');
        } else {
            // A full disk must fail the write before it touches the old metadata.
            crate::sys::reserve(self.file.as_fd(), 0, len as u64)?;
        }
        let mut written = 0;
        while written < buf.len() {
            match pwrite(&self.file, &buf[written..], written as i64) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => written += n,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if old_len > len {
            ftruncate(&self.file, len as i64)?;
        }
        Ok(())
    }

    /// The file's contents (capped), whatever they are.
    pub fn read_raw(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        let mut len = 0;
        loop {
            if len == buf.len() {
                if buf.len() >= READ_LIMIT {
                    break;
                }
                buf.resize(buf.len() * 2, 0);
            }
            match pread(&self.file, &mut buf[len..], len as i64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        buf.truncate(len);
        Ok(buf)
    }

    /// Who holds the lock: the file's word, and the kernel's (`/proc/locks`) only when
    /// the file does not say. Reading `/proc/locks` costs an RCU grace period (the kernel
    /// takes a global write lock for it: measured 4-15 ms), too much for every conflict.
    pub fn holder(&self) -> Holder {
        let mut holder = self.holder_from_file();
        if !matches!(holder.metadata, MetaState::Valid(_)) {
            holder.kernel = self.kernel_holders();
        }
        holder
    }

    /// Who holds the lock, asking the kernel in any case (`status`, `list`).
    pub fn holder_with_kernel(&self) -> Holder {
        let mut holder = self.holder_from_file();
        holder.kernel = self.kernel_holders();
        holder
    }

    fn kernel_holders(&self) -> Option<Vec<u32>> {
        procfs::flock_holders(self.dev, self.ino)
            .map(|holders| holders.into_iter().map(|h| h.pid).collect())
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
    pub fn release(self) -> io::Result<()> {
        let truncated = ftruncate(&self.file, 0).map_err(io::Error::from);
        flock(self.file.as_fd(), FlockOp::Unlock)?;
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
pub fn try_acquire(dir: &RalphDir) -> Result<Acquire, Failure> {
    for _ in 0..16 {
        let lock = LockFile::open(dir)?;
        let locked = lock
            .try_lock()
            .map_err(|e| Failure::new(ExitStatus::Failure, e))?;
        if !locked {
            return Ok(Acquire::Held(lock));
        }
        if lock.still_linked(dir) {
            return Ok(Acquire::Acquired(lock));
        }
        // We locked an inode that is no longer (or not yet) at the path: drop it (our
        // descriptor is its only one, so closing unlocks) and try the new file.
    }
    Err(Failure::msg(
        ExitStatus::Failure,
        format!(
            "{}/{LOCK_FILE} keeps being replaced while we lock it; find the process that recreates it",
            dir.path().display()
        ),
    ))
}

/// What the lock file said about its holder.
#[derive(Debug, Clone)]
pub enum MetaState {
    Valid(Box<Metadata>),
    Empty,
    Invalid(String),
}

/// The holder of a lock: the file's word and the kernel's.
#[derive(Debug, Clone)]
pub struct Holder {
    pub metadata: MetaState,
    /// Pids `/proc/locks` lists as having taken the flock; `None` when not asked (the
    /// metadata said who) or without procfs.
    pub kernel: Option<Vec<u32>>,
}

fn refuse(path: &std::path::Path, e: Errno) -> Failure {
    let why = match e {
        Errno::ELOOP => {
            "it is a symbolic link; ralph-supervise never follows links for the lock, remove it"
                .to_string()
        }
        Errno::EISDIR => "it is a directory, not a lock file; remove it".to_string(),
        Errno::EACCES | Errno::EPERM | Errno::EROFS => format!(
            "{}; make the workspace writable or choose another with -C",
            e.desc()
        ),
        e => e.desc().to_string(),
    };
    Failure::msg(
        ExitStatus::Failure,
        format!("refusing {}: {why}", path.display()),
    )
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
