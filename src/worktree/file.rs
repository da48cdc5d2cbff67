//! Opening `.ralph/` files the careful way: no symlink followed (neither the directory
//! nor the file), close-on-exec, regular files only, and a blocking `flock` on the file
//! itself that is re-checked against the path (a writer that replaced the file by
//! rename would otherwise leave us editing an orphan inode).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, FcntlArg, OFlag, fcntl, open, openat};
use nix::sys::stat::{Mode, SFlag, fstat, fstatat};
use nix::unistd::mkdir;

use crate::exit::{ExitStatus, Failure};
use crate::sys::{FlockOp, flock};

/// Opens directory `dir` without following a symlink; creates it (one level, 0755) when
/// `create`. `Ok(None)` when it does not exist and `create` is false.
pub(crate) fn open_dir(dir: &Path, create: bool) -> Result<Option<OwnedFd>, Failure> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match open(dir, flags, Mode::empty()) {
        Ok(fd) => return Ok(Some(fd)),
        Err(Errno::ENOENT) if create => {}
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(refuse(dir, e)),
    }
    match mkdir(dir, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => {
            return Err(Failure::msg(
                ExitStatus::Failure,
                format!("cannot create {}: {}", dir.display(), e.desc()),
            ));
        }
    }
    open(dir, flags, Mode::empty())
        .map(Some)
        .map_err(|e| refuse(dir, e))
}

/// Opens `<dir>/<name>` with `access` (plus O_CREAT when `create`) and takes a blocking
/// exclusive flock on it, retrying when the path no longer names the locked inode.
/// `Ok(None)` when the file (or the directory) does not exist and `create` is false.
pub(crate) fn open_locked(
    dir: &Path,
    name: &str,
    access: OFlag,
    create: bool,
) -> Result<Option<File>, Failure> {
    let Some(dirfd) = open_dir(dir, create)? else {
        return Ok(None);
    };
    let path = dir.join(name);
    for _ in 0..16 {
        let mut flags =
            access | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        if create {
            flags |= OFlag::O_CREAT;
        }
        let fd = match openat(&dirfd, name, flags, Mode::from_bits_truncate(0o644)) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if !create => return Ok(None),
            Err(e) => return Err(refuse(&path, e)),
        };
        let st = fstat(&fd).map_err(|e| refuse(&path, e))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(Failure::msg(
                ExitStatus::Failure,
                format!(
                    "refusing {}: it is not a regular file; move it away",
                    path.display()
                ),
            ));
        }
        fcntl(&fd, FcntlArg::F_SETFL(access)).map_err(|e| refuse(&path, e))?;
        flock(fd.as_fd(), FlockOp::Exclusive).map_err(|e| {
            Failure::msg(
                ExitStatus::Failure,
                format!("cannot lock {}: {e}", path.display()),
            )
        })?;
        match fstatat(&dirfd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(now) if now.st_dev == st.st_dev && now.st_ino == st.st_ino => {
                return Ok(Some(File::from(fd)));
            }
            Err(Errno::ENOENT) if !create => return Ok(None),
            // Replaced (or removed) while we waited for the lock: start over.
            _ => continue,
        }
    }
    Err(Failure::msg(
        ExitStatus::Failure,
        format!("{} keeps being replaced while we lock it", path.display()),
    ))
}

fn refuse(path: &Path, e: Errno) -> Failure {
    let why = match e {
        Errno::ELOOP => "it is a symbolic link; ralph-supervise does not follow links in .ralph, replace it with a real file".to_string(),
        Errno::EISDIR => "it is a directory; move it away".to_string(),
        Errno::ENOTDIR => "a part of the path is not a directory".to_string(),
        Errno::EACCES | Errno::EPERM | Errno::EROFS => format!("{}; make it writable", e.desc()),
        e => e.desc().to_string(),
    };
    Failure::msg(
        ExitStatus::Failure,
        format!("refusing {}: {why}", path.display()),
    )
}

/// Reads a whole file from offset 0 (pread: independent of the file position).
pub(crate) fn read_all(file: &File) -> Result<Vec<u8>, Failure> {
    use std::os::unix::fs::FileExt;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match file.read_at(&mut chunk, buf.len() as u64) {
            Ok(0) => return Ok(buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Failure::msg(ExitStatus::Failure, format!("read: {e}"))),
        }
    }
}
