//! Which directory is the workspace.
//!
//! The workspace is the git top-level of the current directory when inside a work tree
//! (found by walking up for `.git`, without spawning git), else the current directory;
//! `-C DIR` overrides. Its `.ralph/` is opened through [`crate::ralph_dir`], the one
//! door to ralph's state files.

use std::path::{Path, PathBuf};

use crate::exit::{ExitStatus, Failure};
pub(crate) use crate::ralph_dir::{RALPH_DIR, RalphDir};

/// Resolves the workspace: `explicit` (from `-C`), else the enclosing git work tree,
/// else the current directory. Always absolute and canonical.
pub(crate) fn resolve(explicit: Option<&Path>) -> Result<PathBuf, Failure> {
    resolve_in_repo(explicit).map(|(workspace, _)| workspace)
}

/// [`resolve`], with the git top-level the workspace is in (if any), found in the same
/// walk up.
pub(crate) fn resolve_in_repo(
    explicit: Option<&Path>,
) -> Result<(PathBuf, Option<PathBuf>), Failure> {
    if let Some(dir) = explicit {
        let usage = |why: &dyn std::fmt::Display| {
            let dir = crate::present::path(dir);
            let msg = format!("workspace {dir}: {why}; pass an existing directory to -C");
            Failure::msg(ExitStatus::Usage, msg)
        };
        let dir = dir.canonicalize().map_err(|e| usage(&e))?;
        if !dir.is_dir() {
            return Err(usage(&"not a directory"));
        }
        let repo = git_toplevel(&dir);
        return Ok((dir, repo));
    }
    let cwd = std::env::current_dir()
        .and_then(|d| d.canonicalize())
        .map_err(|e| Failure::msg(ExitStatus::Failure, format!("current directory: {e}")))?;
    let repo = git_toplevel(&cwd);
    Ok((repo.clone().unwrap_or(cwd), repo))
}

/// The nearest ancestor of `dir` (itself included) that contains `.git` — a directory
/// in a main work tree, a file in a linked worktree.
fn git_toplevel(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join(".git").symlink_metadata().is_ok())
        .map(Path::to_path_buf)
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
