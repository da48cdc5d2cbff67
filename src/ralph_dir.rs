//! The one door to `.ralph/`: every file ralph-supervise opens there goes through
//! [`RalphDir`] and [`RalphFile`].
//!
//! `.ralph/` is shared with ralph, with other tools and, in a shared checkout, with
//! other users, so each open there needs the same care, and that care lives here only:
//!
//! * the directory is opened once without following a symlink, and every file below it
//!   is opened relative to that descriptor (`openat`, `O_NOFOLLOW`): a path swapped
//!   under us cannot redirect a write;
//! * only regular files are used (a FIFO planted there cannot hang the open: it is
//!   opened non-blocking, then refused), and every descriptor is close-on-exec;
//! * a file opened to be written (or locked) must have one name only: a hard link
//!   planted there (`ln precious.txt .ralph/loop.lock`) would have us overwrite, truncate
//!   or lock another file's contents, so a link count above one is refused as a symlink
//!   is (reading such a file is harmless and allowed);
//! * a flock is taken on the file itself and then re-checked against the name (fstat of
//!   the descriptor vs fstatat of the name): a file replaced while we waited is let go
//!   and the new one locked instead;
//! * contents are read with `pread` and changed in place, never by write-and-rename
//!   (ralph holds its locks on the inode): a rewrite pads the new bytes over the old and
//!   then truncates, an append is one record under the lock; disk space is reserved
//!   first, so a full disk fails before anything is overwritten or half appended
//!   (unless the write lies within one block of the file: see [`needs_reserve`]).
//!
//! A refusal is one line naming the path and what to do about it ([`Error`]).

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, FcntlArg, OFlag, fcntl, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat};
use nix::sys::uio::{pread, pwrite};
use nix::unistd::{UnlinkatFlags, ftruncate, unlinkat};

use crate::exit::{ExitStatus, Failure};
use crate::sys::{FlockOp, flock};

/// Name of ralph's state directory inside a workspace.
pub(crate) const RALPH_DIR: &str = ".ralph";

/// The workspace lock's name in it (refusals of it are worded for a lock).
pub(crate) const LOCK_FILE: &str = "loop.lock";

/// How many times a lock is retried when the file keeps being replaced under us.
const LOCK_ATTEMPTS: usize = 16;

/// An open `.ralph/` directory (or a directory below it).
#[derive(Debug)]
pub(crate) struct RalphDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    ReadWrite,
    /// Read and write, every write at the end (`O_APPEND`).
    Append,
}

impl Access {
    fn flags(self) -> OFlag {
        match self {
            Access::Read => OFlag::O_RDONLY,
            Access::ReadWrite => OFlag::O_RDWR,
            Access::Append => OFlag::O_RDWR | OFlag::O_APPEND,
        }
    }
}

/// What a non-blocking lock attempt found.
#[derive(Debug)]
pub(crate) enum TryLock {
    /// Ours, and the name still links to it.
    Locked(RalphFile),
    /// Someone else holds it; the file is open, unlocked.
    Held(RalphFile),
}

impl RalphDir {
    /// Opens `<workspace>/.ralph`, creating it (mode 0755 before umask) if missing.
    /// Refuses a `.ralph` that is a symlink or not a directory.
    pub(crate) fn open_or_create(workspace: &Path) -> Result<RalphDir, Failure> {
        Ok(RalphDir::at(&workspace.join(RALPH_DIR), true)?.expect("created"))
    }

    /// Opens an existing `<workspace>/.ralph`; `Ok(None)` when there is none.
    pub(crate) fn open_existing(workspace: &Path) -> Result<Option<RalphDir>, Failure> {
        Ok(RalphDir::at(&workspace.join(RALPH_DIR), false)?)
    }

    /// Opens the directory `path` itself (a `.ralph` named by its path, such as the main
    /// repository's), creating it (one level) when `create`; `Ok(None)` when it is
    /// missing and `create` is false.
    pub(crate) fn at(path: &Path, create: bool) -> Result<Option<RalphDir>, Error> {
        open_dir(AT_FDCWD, path, path.to_path_buf(), create)
    }

    /// Opens the directory `name` below this one, creating it when `create`.
    pub(crate) fn subdir(&self, name: &str, create: bool) -> Result<Option<RalphDir>, Error> {
        if create {
            self.refuse_if_removed(name)?;
        }
        open_dir(
            self.fd.as_fd(),
            Path::new(name),
            self.path.join(name),
            create,
        )
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this directory was removed (its link count is 0): nothing may be created
    /// in it any more. (Linux refuses already; the refusal here names the reason.)
    pub(crate) fn removed(&self) -> bool {
        fstat(&self.fd).is_ok_and(|st| st.st_nlink == 0)
    }

    /// Refuses to create `name` in a removed directory.
    fn refuse_if_removed(&self, name: &str) -> Result<(), Error> {
        if self.removed() {
            return Err(refuse(&self.path.join(name), Why::DirRemoved));
        }
        Ok(())
    }

    /// Opens the regular file `name` (creating it, mode 0644 before umask, when
    /// `create`), without following a symlink. `Ok(None)` when it is missing and
    /// `create` is false.
    pub(crate) fn open(
        &self,
        name: &str,
        access: Access,
        create: bool,
    ) -> Result<Option<RalphFile>, Error> {
        let path = self.path.join(name);
        // O_NONBLOCK so that a FIFO planted here cannot hang the open; cleared below.
        let mut flags = access.flags()
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY;
        if create {
            self.refuse_if_removed(name)?;
            flags |= OFlag::O_CREAT;
        }
        let fd = match openat(&self.fd, name, flags, Mode::from_bits_truncate(0o644)) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if !create => return Ok(None),
            Err(e) => return Err(refuse(&path, Why::Sys(e))),
        };
        let st = fstat(&fd).map_err(|e| refuse(&path, Why::Sys(e)))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(refuse(&path, Why::NotRegular));
        }
        // A second name for the inode (a hard link planted here, `ln precious .ralph/x`)
        // would have us overwrite or lock a file that is not ours. Reading is harmless.
        if access != Access::Read && st.st_nlink > 1 {
            return Err(refuse(&path, Why::HardLinked(st.st_nlink as u64)));
        }
        // A child may inherit this open file description: give it ordinary flags.
        fcntl(&fd, FcntlArg::F_SETFL(access.flags())).map_err(|e| refuse(&path, Why::Sys(e)))?;
        Ok(Some(RalphFile {
            file: File::from(fd),
            path,
            name: name.to_string(),
            dev: dev_id(&st),
            ino: st.st_ino,
        }))
    }

    /// Opens `name` as [`open`](Self::open) does and takes a blocking flock on it:
    /// shared to read, exclusive to write. `Ok(None)` when it is missing (or vanished
    /// while we waited) and `create` is false.
    pub(crate) fn open_locked(
        &self,
        name: &str,
        access: Access,
        create: bool,
    ) -> Result<Option<RalphFile>, Error> {
        let op = match access {
            Access::Read => FlockOp::Shared,
            Access::ReadWrite | Access::Append => FlockOp::Exclusive,
        };
        Ok(self.lock(name, access, create, op)?.map(|(file, _)| file))
    }

    /// Opens (creating) `name` for reading and writing and tries its exclusive flock
    /// once, without blocking.
    pub(crate) fn try_lock(&self, name: &str) -> Result<TryLock, Error> {
        let (file, locked) = self
            .lock(name, Access::ReadWrite, true, FlockOp::TryExclusive)?
            .expect("created");
        Ok(if locked {
            TryLock::Locked(file)
        } else {
            TryLock::Held(file)
        })
    }

    /// Opens and locks `name`, re-checking after locking that the name still links to
    /// the locked inode; if not, someone replaced the file: start over on the new one.
    /// The flag says whether the lock is ours (`false` only for a `TryExclusive` that
    /// found it held).
    fn lock(
        &self,
        name: &str,
        access: Access,
        create: bool,
        op: FlockOp,
    ) -> Result<Option<(RalphFile, bool)>, Error> {
        let path = self.path.join(name);
        for _ in 0..LOCK_ATTEMPTS {
            let Some(file) = self.open(name, access, create)? else {
                return Ok(None);
            };
            let locked = file.lock(op).map_err(|e| Error {
                errno: e.raw_os_error().map(Errno::from_raw),
                message: format!("cannot lock {}: {e}", path.display()),
            })?;
            if !locked {
                return Ok(Some((file, false)));
            }
            match self.stat(name) {
                Ok(now) if dev_id(&now) == file.dev && now.st_ino == file.ino => {
                    return Ok(Some((file, true)));
                }
                Err(Errno::ENOENT) if !create => return Ok(None),
                // We locked an inode that is no longer (or not yet) at the name: drop it
                // (our descriptor is its only one, so closing unlocks) and try again.
                _ => continue,
            }
        }
        Err(Error {
            errno: None,
            message: format!(
                "{} keeps being replaced while we lock it; find the process that recreates it",
                path.display()
            ),
        })
    }

    /// Removes `name` (never a directory); `Ok(false)` when there was none.
    pub(crate) fn remove(&self, name: &str) -> io::Result<bool> {
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates `name` as a new, empty regular file for writing (mode 0644 before umask);
    /// fails with `AlreadyExists` when anything, a symlink included, is there.
    pub(crate) fn create_new(&self, name: &str) -> io::Result<File> {
        self.refuse_if_removed(name)?;
        let fd = openat(
            &self.fd,
            name,
            OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC
                | OFlag::O_NOCTTY,
            Mode::from_bits_truncate(0o644),
        )?;
        Ok(File::from(fd))
    }

    /// Creates an empty `name` unless something (a symlink included) is there already,
    /// which is left as it is. `name` may have directories in front (`agent/x.md`).
    pub(crate) fn create_if_missing(&self, name: &str) -> io::Result<()> {
        match self.create_new(name) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            r => r.map(drop),
        }
    }

    fn stat(&self, name: &str) -> nix::Result<FileStat> {
        fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
    }
}

impl AsFd for RalphDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Opens directory `name` relative to `base` (`path` names it in messages), creating
/// it first when `create`.
fn open_dir(
    base: BorrowedFd<'_>,
    name: &Path,
    path: PathBuf,
    create: bool,
) -> Result<Option<RalphDir>, Error> {
    let open = || {
        openat(
            base,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    let refused = |e: Errno| {
        // O_NOFOLLOW|O_DIRECTORY on a symlink says ENOTDIR: ask lstat what it is.
        let is_link = fstatat(base, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| {
            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
        });
        refuse(&path, Why::Dir(if is_link { Errno::ELOOP } else { e }))
    };
    match open() {
        Ok(fd) => return Ok(Some(RalphDir { fd, path })),
        Err(Errno::ENOENT) if create => {}
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(refused(e)),
    }
    match mkdirat(base, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(refuse(&path, Why::Mkdir(e))),
    }
    match open() {
        Ok(fd) => Ok(Some(RalphDir { fd, path })),
        Err(e) => Err(refused(e)),
    }
}

/// A file's device number as a `u64` (`dev_t` is an `i32` on macOS).
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn dev_id(st: &FileStat) -> u64 {
    st.st_dev as u64
}

/// An open regular file in `.ralph/`, locked or not. Dropping it closes the descriptor
/// (which frees a flock only if no copy of the descriptor lives on, in a child say).
#[derive(Debug)]
pub(crate) struct RalphFile {
    file: File,
    path: PathBuf,
    name: String,
    dev: u64,
    ino: u64,
}

impl RalphFile {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn dev_ino(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// Whether the name we opened in `dir` still links to this file's inode.
    pub(crate) fn still_linked(&self, dir: &RalphDir) -> bool {
        matches!(
            dir.stat(&self.name),
            Ok(st) if dev_id(&st) == self.dev && st.st_ino == self.ino
        )
    }

    /// `flock(2)` with `op`: `Ok(false)` when a non-blocking attempt finds it held.
    pub(crate) fn lock(&self, op: FlockOp) -> io::Result<bool> {
        match flock(self.file.as_fd(), op) {
            Ok(()) => Ok(true),
            Err(e)
                if op == FlockOp::TryExclusive && e.raw_os_error() == Some(libc::EWOULDBLOCK) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// `flock(LOCK_UN)`: frees the lock for every descriptor sharing this description.
    pub(crate) fn unlock(&self) -> io::Result<()> {
        flock(self.file.as_fd(), FlockOp::Unlock)
    }

    /// The contents, from offset 0 whatever the file position, up to `limit` bytes.
    pub(crate) fn read_up_to(&self, limit: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; limit.min(4096)];
        let mut len = 0;
        loop {
            if len == buf.len() {
                if len >= limit {
                    break;
                }
                buf.resize(len.saturating_mul(2).min(limit), 0);
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

    /// The whole contents.
    pub(crate) fn read_all(&self) -> io::Result<Vec<u8>> {
        self.read_up_to(usize::MAX)
    }

    /// Replaces the contents with `bytes` so that a reader never sees them empty, cut or
    /// torn: one `pwrite` at offset 0 of the new bytes padded with spaces (JSON's
    /// whitespace) to the file's size, which is never made smaller here and grows only
    /// when the bytes do not fit, then with [`WRITE_ROOM`] to spare. A reader that sizes
    /// its read by `fstat` (ralph's `read_to_string`, Python's `read()`) gets the file in
    /// one `read`; a file that grew between its `fstat` and that read would hand it the
    /// old contents followed by the tail of the new (seen: 3 in 30,000 reads while the
    /// size changed at every write). Growing, the space is reserved first, so a full
    /// disk fails the write before it touches the old contents. Emptying is
    /// [`Self::truncate`]'s, at release.
    pub(crate) fn write_in_place(&self, mut bytes: Vec<u8>) -> io::Result<()> {
        let st = fstat(&self.file)?;
        let old_len = st.st_size as usize;
        let len = bytes.len();
        let size = if len <= old_len {
            old_len
        } else {
            (len + WRITE_ROOM).next_multiple_of(WRITE_ROOM)
        };
        if size > old_len && needs_reserve(&st, 0, size as u64) {
            crate::sys::reserve(self.file.as_fd(), 0, size as u64)?;
        }
        bytes.resize(size, b' ');
        let mut written = 0;
        while written < bytes.len() {
            match pwrite(&self.file, &bytes[written..], written as i64) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => written += n,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Appends `line` (a record ending in a newline) at the end; the file is opened
    /// with [`Access::Append`] and locked. A last line left without its newline (a
    /// writer that crashed) is ended first, so the record stands on its own line. The
    /// space is reserved first (a full disk fails before a byte is appended); should a
    /// write still stop half-way, the torn record is cut off again.
    pub(crate) fn append(&self, line: &[u8]) -> io::Result<()> {
        let st = fstat(&self.file)?;
        let len = st.st_size as u64;
        let mut record = Vec::with_capacity(line.len() + 1);
        if len > 0 {
            let mut last = [0u8; 1];
            if self.file.read_at(&mut last, len - 1)? == 1 && last[0] != b'\n' {
                record.push(b'\n');
            }
        }
        record.extend_from_slice(line);
        if needs_reserve(&st, len, record.len() as u64) {
            crate::sys::reserve(self.file.as_fd(), len, record.len() as u64)?;
        }
        if let Err(e) = (&self.file).write_all(&record) {
            let _ = self.file.set_len(len);
            return Err(e);
        }
        Ok(())
    }

    /// Truncates to `len` bytes.
    pub(crate) fn truncate(&self, len: u64) -> io::Result<()> {
        ftruncate(&self.file, len as i64).map_err(io::Error::from)
    }

    /// `fsync(2)`.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

impl AsFd for RalphFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for RalphFile {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Why the door refused or failed: one line naming the path and what to do, with the
/// system error (when there is one) for callers that tell cases apart.
#[derive(Debug)]
pub(crate) struct Error {
    errno: Option<Errno>,
    message: String,
}

impl Error {
    /// The system error behind it: `ELOOP` for a symlink (also where the kernel said
    /// `ENOTDIR` for a symlinked directory), `None` for a file that is not regular.
    pub(crate) fn errno(&self) -> Option<Errno> {
        self.errno
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::msg(ExitStatus::Failure, e.message)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = e
            .errno
            .map_or(io::ErrorKind::Other, |errno| io::Error::from(errno).kind());
        io::Error::new(kind, e)
    }
}

/// What went wrong with a path.
enum Why {
    /// Opening the directory at the path.
    Dir(Errno),
    /// Creating the directory at the path.
    Mkdir(Errno),
    /// Opening the file at the path.
    Sys(Errno),
    /// The file is a FIFO, a device, a socket: not a regular file.
    NotRegular,
    /// The file has this many names (hard links): writing it would change another's file.
    HardLinked(u64),
    /// The directory to create the file in was removed.
    DirRemoved,
}

/// The one wording of every refusal. `loop.lock` gets its own, naming the lock.
fn refuse(path: &Path, why: Why) -> Error {
    let is_lock = path.file_name() == Some(LOCK_FILE.as_ref());
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let (errno, why) = match why {
        Why::Dir(e) => (
            Some(e),
            match e {
                Errno::ELOOP => "it is a symbolic link; ralph-supervise does not follow links for its state directory, replace it with a real directory".to_string(),
                Errno::ENOTDIR => format!("it is not a directory; move it away so {name} can be created"),
                e => format!("{}; check its permissions", e.desc()),
            },
        ),
        Why::Mkdir(e) => {
            return Error {
                errno: Some(e),
                message: format!(
                    "cannot create {}: {}; make the workspace writable or choose another with -C",
                    path.display(),
                    e.desc()
                ),
            };
        }
        Why::Sys(e) if is_lock => (
            Some(e),
            match e {
                Errno::ELOOP => "it is a symbolic link; ralph-supervise never follows links for the lock, remove it".to_string(),
                Errno::EISDIR => "it is a directory, not a lock file; remove it".to_string(),
                Errno::EACCES | Errno::EPERM | Errno::EROFS => format!(
                    "{}; make the workspace writable or choose another with -C",
                    e.desc()
                ),
                e => e.desc().to_string(),
            },
        ),
        Why::Sys(e) => (
            Some(e),
            match e {
                Errno::ELOOP => "it is a symbolic link; ralph-supervise does not follow links in .ralph, replace it with a real file".to_string(),
                Errno::EISDIR => "it is a directory; move it away".to_string(),
                Errno::ENOTDIR => "a part of the path is not a directory".to_string(),
                Errno::EACCES | Errno::EPERM | Errno::EROFS => format!("{}; make it writable", e.desc()),
                e => e.desc().to_string(),
            },
        ),
        Why::NotRegular if is_lock => (
            None,
            "it is not a regular file; remove it so a lock file can be created".to_string(),
        ),
        Why::NotRegular => (None, "it is not a regular file; move it away".to_string()),
        Why::HardLinked(n) => (
            None,
            format!(
                "it has {n} names (hard links), so writing it would change the file behind the other names too; remove the name that does not belong (find the others with `find / -xdev -samefile {}`)",
                path.display()
            ),
        ),
        Why::DirRemoved => (
            Some(Errno::ENOENT),
            "its directory was removed; not creating anything in it".to_string(),
        ),
    };
    Error {
        errno,
        message: format!("refusing {}: {why}", path.display()),
    }
}

/// The room [`RalphFile::write_in_place`] leaves after contents that grew the file, so
/// that the next rewrites (a child's pid, a restart's record) fit without growing it.
const WRITE_ROOM: usize = 512;

/// Whether writing `len` bytes at `offset` needs disk space reserved first. Not when
/// they lie within one block of the file (at most a page): such a write either finds
/// its block already the file's (an overwrite, or an extension inside the last block)
/// and needs no space, or needs that one block and gets it or fails with ENOSPC before
/// a byte is copied (file systems reserve space per block as a write begins), so it
/// cannot stop half-way. The lock file's metadata is such a write: reserving its
/// block made each release's truncation free an allocated block (ext4: 0.25 ms or
/// more, on the hand-off's path), against microseconds for a block only written.
fn needs_reserve(st: &FileStat, offset: u64, len: u64) -> bool {
    let block = (st.st_blksize as u64).clamp(512, 4096);
    len > 0 && offset / block != (offset + len - 1) / block
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, RalphDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RalphDir::open_or_create(tmp.path()).unwrap();
        (tmp, dir)
    }

    #[test]
    fn rewrites_in_place_shorter_and_longer() {
        let (tmp, dir) = dir();
        let file = dir.open("f", Access::ReadWrite, true).unwrap().unwrap();
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(file.path()).unwrap());
        file.write_in_place(b"a longer first text".to_vec())
            .unwrap();
        // The size stays (room left, spaces after the text): never cut under a reader.
        let size = file.read_all().unwrap().len();
        assert_eq!(size, 1024);
        file.write_in_place(b"short".to_vec()).unwrap();
        let text = file.read_all().unwrap();
        assert_eq!((text.len(), text.trim_ascii_end()), (size, &b"short"[..]));
        file.write_in_place(b"longer again".to_vec()).unwrap();
        let text = std::fs::read(tmp.path().join(".ralph/f")).unwrap();
        assert_eq!(
            (text.len(), text.trim_ascii_end()),
            (size, &b"longer again"[..])
        );
        assert_eq!(file.read_up_to(6).unwrap(), b"longer");
        // Growing past the size leaves room again.
        file.write_in_place(vec![b'x'; 1100]).unwrap();
        assert_eq!(file.read_all().unwrap().len(), 2048);
        let after = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(file.path()).unwrap());
        assert_eq!(ino, after);
    }

    #[test]
    fn refuses_links_fifos_and_directories() {
        let (tmp, dir) = dir();
        let ralph = tmp.path().join(".ralph");
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), ralph.join("link")).unwrap();
        let e = dir.open("link", Access::ReadWrite, true).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::ELOOP));
        assert!(e.to_string().contains("link: it is a symbolic link"), "{e}");
        assert!(!tmp.path().join("elsewhere").exists());

        nix::unistd::mkfifo(&ralph.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let e = dir.open("fifo", Access::Read, false).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");

        std::fs::create_dir(ralph.join("d")).unwrap();
        let e = dir.open("d", Access::ReadWrite, true).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");

        std::os::unix::fs::symlink(tmp.path(), ralph.join("sub")).unwrap();
        let e = dir.subdir("sub", true).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::ELOOP));

        assert!(dir.open("missing", Access::Read, false).unwrap().is_none());
        assert!(dir.subdir("none", false).unwrap().is_none());
    }

    #[test]
    fn refuses_to_write_a_file_with_another_name() {
        let (tmp, dir) = dir();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::hard_link(&victim, tmp.path().join(".ralph/f")).unwrap();
        for access in [Access::ReadWrite, Access::Append] {
            let e = dir.open("f", access, true).unwrap_err();
            assert!(e.to_string().contains("f: it has 2 names"), "{e}");
        }
        assert!(dir.try_lock("f").is_err());
        let read = dir.open("f", Access::Read, false).unwrap().unwrap();
        assert_eq!(read.read_all().unwrap(), b"precious");
    }

    #[test]
    fn a_replaced_file_is_locked_anew() {
        let (tmp, dir) = dir();
        let first = dir
            .open_locked("f", Access::ReadWrite, true)
            .unwrap()
            .unwrap();
        let ralph = tmp.path().join(".ralph");
        std::fs::write(ralph.join("g"), b"").unwrap();
        std::fs::rename(ralph.join("g"), ralph.join("f")).unwrap();
        assert!(!first.still_linked(&dir));
        let second = dir
            .open_locked("f", Access::ReadWrite, true)
            .unwrap()
            .unwrap();
        assert!(second.still_linked(&dir));
        assert_ne!(first.dev_ino(), second.dev_ino());
        let TryLock::Held(_) = dir.try_lock("f").unwrap() else {
            panic!("exclusive lock not seen")
        };
    }

    #[test]
    fn appends_end_a_torn_line_first() {
        let (tmp, dir) = dir();
        let file = dir.open_locked("q", Access::Append, true).unwrap().unwrap();
        file.append(b"one\n").unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(tmp.path().join(".ralph/q"))
            .and_then(|mut f| f.write_all(b"torn"))
            .unwrap();
        file.append(b"two\n").unwrap();
        assert_eq!(file.read_all().unwrap(), b"one\ntorn\ntwo\n");
    }

    #[test]
    fn nothing_is_created_in_a_removed_directory() {
        let (tmp, dir) = dir();
        assert!(!dir.removed());
        std::fs::remove_dir(tmp.path().join(".ralph")).unwrap();
        assert!(dir.removed());
        let e = dir.open("loop.lock", Access::ReadWrite, true).unwrap_err();
        assert!(e.to_string().contains("was removed"), "{e}");
        assert!(dir.create_new("stop-requested").is_err());
        assert!(dir.subdir("supervise", true).is_err());
    }

    #[test]
    fn create_if_missing_leaves_what_is_there() {
        let (tmp, dir) = dir();
        let ralph = tmp.path().join(".ralph");
        std::os::unix::fs::symlink(tmp.path().join("target"), ralph.join("link")).unwrap();
        dir.create_if_missing("link").unwrap();
        assert!(!tmp.path().join("target").exists());
        dir.create_if_missing("new").unwrap();
        assert!(ralph.join("new").is_file());
        assert!(dir.remove("new").unwrap());
        assert!(!dir.remove("new").unwrap());
    }

    #[test]
    fn space_is_reserved_only_for_writes_across_a_block() {
        let (_tmp, dir) = dir();
        let f = dir.open("r.txt", Access::ReadWrite, true).unwrap().unwrap();
        let st = fstat(&f.file).unwrap();
        let block = (st.st_blksize as u64).clamp(512, 4096);
        assert!(!needs_reserve(&st, 0, 450), "metadata: one block");
        assert!(
            !needs_reserve(&st, block - 10, 10),
            "ends at the block's end"
        );
        assert!(needs_reserve(&st, block - 10, 11), "crosses into the next");
        assert!(needs_reserve(&st, 0, block + 1));
        assert!(!needs_reserve(&st, 5, 0));
    }
}
