//! Which directory is the workspace, and its `.ralph/` directory.
//!
//! The workspace is the git top-level of the current directory when inside a work tree
//! (found by walking up for `.git`, without spawning git), else the current directory;
//! `-C DIR` overrides. `.ralph/` is opened once, without following a symlink, and every
//! file below it is then opened relative to that descriptor, so a path swapped under us
//! cannot redirect a write.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::unistd::mkdir;

use crate::exit::{ExitStatus, Failure};

/// Name of ralph's state directory inside a workspace.
pub const RALPH_DIR: &str = ".ralph";

/// Resolves the workspace: `explicit` (from `-C`), else the enclosing git work tree,
/// else the current directory. Always absolute and canonical.
pub fn resolve(explicit: Option<&Path>) -> Result<PathBuf, Failure> {
    if let Some(dir) = explicit {
        return dir.canonicalize().map_err(|e| {
            Failure::msg(
                ExitStatus::Usage,
                format!(
                    "workspace {}: {e}; pass an existing directory to -C",
                    dir.display()
                ),
            )
        });
    }
    let cwd = std::env::current_dir()
        .and_then(|d| d.canonicalize())
        .map_err(|e| Failure::msg(ExitStatus::Failure, format!("current directory: {e}")))?;
    Ok(git_toplevel(&cwd).unwrap_or(cwd))
}

/// The nearest ancestor of `dir` (itself included) that contains `.git` — a directory
/// in a main work tree, a file in a linked worktree.
pub fn git_toplevel(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join(".git").symlink_metadata().is_ok())
        .map(Path::to_path_buf)
}

/// An open `.ralph/` directory of a workspace.
#[derive(Debug)]
pub struct RalphDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl RalphDir {
    /// Opens `<workspace>/.ralph`, creating it (mode 0755 before umask) if missing.
    /// Refuses a `.ralph` that is a symlink or not a directory.
    pub fn open_or_create(workspace: &Path) -> Result<RalphDir, Failure> {
        let path = workspace.join(RALPH_DIR);
        match open_dir(&path) {
            Ok(fd) => return Ok(RalphDir { fd, path }),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(refuse_dir(&path, e)),
        }
        match mkdir(&path, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(Failure::msg(
                    ExitStatus::Failure,
                    format!(
                        "cannot create {}: {}; make the workspace writable or choose another with -C",
                        path.display(),
                        e.desc()
                    ),
                ));
            }
        }
        open_dir(&path)
            .map(|fd| RalphDir {
                fd,
                path: path.clone(),
            })
            .map_err(|e| refuse_dir(&path, e))
    }

    /// Opens an existing `<workspace>/.ralph`; `Ok(None)` when there is none.
    pub fn open_existing(workspace: &Path) -> Result<Option<RalphDir>, Failure> {
        let path = workspace.join(RALPH_DIR);
        match open_dir(&path) {
            Ok(fd) => Ok(Some(RalphDir { fd, path })),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(refuse_dir(&path, e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsFd for RalphDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn open_dir(path: &Path) -> Result<OwnedFd, Errno> {
    open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn refuse_dir(path: &Path, e: Errno) -> Failure {
    // O_NOFOLLOW|O_DIRECTORY on a symlink says ENOTDIR: ask lstat what it is.
    let is_link = path
        .symlink_metadata()
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false);
    let e = if is_link { Errno::ELOOP } else { e };
    let why = match e {
        Errno::ELOOP => "it is a symbolic link; ralph-supervise does not follow links for its state directory, replace it with a real directory".to_string(),
        Errno::ENOTDIR => "it is not a directory; move it away so .ralph can be created".to_string(),
        e => format!("{}; check its permissions", e.desc()),
    };
    Failure::msg(
        ExitStatus::Failure,
        format!("refusing {}: {why}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_git_toplevel_from_a_subdirectory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        assert_eq!(git_toplevel(&root.join("a/b")), Some(root.clone()));
        // A linked worktree has a .git file.
        std::fs::create_dir_all(root.join("wt/x")).unwrap();
        std::fs::write(root.join("wt/.git"), "gitdir: ../.git/worktrees/wt").unwrap();
        assert_eq!(git_toplevel(&root.join("wt/x")), Some(root.join("wt")));
    }
}
