//! Which directory is the workspace.
//!
//! The workspace is the git top-level of the current directory when inside a work tree
//! (found by walking up for `.git`, without spawning git), else the current directory;
//! `-C DIR` overrides. Its `.ralph/` is opened through [`crate::ralph_dir`], the one
//! door to ralph's state files.
//!
//! What a repository's loops share lives in its main work tree's `.ralph/` ([`repo_root`]),
//! wherever in the repository the workspace is: the registry of worktree loops
//! (`loops.json`), the merge queue, the worktree lock and the worktree loops' history,
//! beside `.worktrees/`. `run` registers there and `list`, `stop ID` and `gc` look
//! there, so `-C sub` (a subdirectory, whose own `.ralph/loop.lock` its primary
//! holds) and the top level see the same worktree loops, as `ralph loops` does.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
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

/// Where the repository `workspace` is in keeps what its loops share (`.ralph/loops.json`,
/// `.ralph/merge-queue.jsonl`, `.worktrees/`): the main work tree of that git repository,
/// also from a subdirectory or a linked worktree; the workspace itself outside git.
pub(crate) fn repo_root(workspace: &Path) -> PathBuf {
    match git_toplevel(workspace) {
        Some(top) => main_work_tree(&top),
        None => workspace.to_path_buf(),
    }
}

/// The main work tree of the repository whose work tree `top` is (`top` holds `.git`):
/// `top` itself, unless `top/.git` is a file naming a linked worktree's git directory,
/// whose `commondir` names the main work tree's `.git` (gitrepository-layout(5)). A
/// `.git` file without `commondir` (a submodule, `--separate-git-dir`) is its own main
/// work tree. Read without spawning git.
pub(crate) fn main_work_tree(top: &Path) -> PathBuf {
    let linked = || -> Option<PathBuf> {
        // A directory (the usual main work tree) fails to read as a file.
        let text = std::fs::read(top.join(".git")).ok()?;
        let gitdir = top.join(OsStr::from_bytes(
            text.strip_prefix(b"gitdir:")?.trim_ascii(),
        ));
        let common = std::fs::read(gitdir.join("commondir")).ok()?;
        let common = gitdir
            .join(OsStr::from_bytes(common.trim_ascii()))
            .canonicalize()
            .ok()?;
        if common.file_name()? != ".git" {
            return None;
        }
        common
            .parent()
            .filter(|m| m.is_dir())
            .map(Path::to_path_buf)
    };
    linked().unwrap_or_else(|| top.to_path_buf())
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

    #[test]
    fn the_repo_root_is_the_main_work_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let main = root.join("main");
        std::fs::create_dir_all(main.join(".git/worktrees/wt")).unwrap();
        std::fs::create_dir_all(main.join("sub/deeper")).unwrap();
        std::fs::write(main.join(".git/worktrees/wt/commondir"), "../..\n").unwrap();
        // A subdirectory of the main work tree.
        assert_eq!(repo_root(&main.join("sub/deeper")), main);
        // A linked worktree (absolute gitdir, as git writes it) and a subdirectory of it.
        let wt = main.join(".worktrees/wt");
        std::fs::create_dir_all(wt.join("src")).unwrap();
        let gitdir = format!("gitdir: {}\n", main.join(".git/worktrees/wt").display());
        std::fs::write(wt.join(".git"), gitdir).unwrap();
        assert_eq!(repo_root(&wt.join("src")), main);
        // A relative gitdir (worktree.useRelativePaths).
        let rel = root.join("rel");
        std::fs::create_dir_all(&rel).unwrap();
        std::fs::write(rel.join(".git"), "gitdir: ../main/.git/worktrees/wt").unwrap();
        assert_eq!(repo_root(&rel), main);
        // A submodule's .git file names a git directory without commondir: its own.
        let module = root.join("module");
        std::fs::create_dir_all(main.join(".git/modules/m")).unwrap();
        std::fs::create_dir_all(&module).unwrap();
        std::fs::write(module.join(".git"), "gitdir: ../main/.git/modules/m\n").unwrap();
        assert_eq!(repo_root(&module), module);
    }
}
