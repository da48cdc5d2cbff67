//! Carrying the user's uncommitted state from the main work tree into a new worktree:
//! untracked-not-ignored, modified, staged (into the worktree's index, as staged) and
//! deleted files. Symlinks stay symlinks (their target text copied verbatim), file modes
//! are kept. `.git`, the worktrees directory and `.ralph/` are never carried (ralph's
//! shared state is linked instead, the rest of `.ralph/` is per-loop).
//!
//! Only changed paths are touched, so the cost is proportional to the change set, not to
//! the size of the repository. Staged content needs no copying: a linked worktree shares
//! the object database, so the blobs the main index names are written into the
//! worktree's index with `git update-index --index-info`.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::git;
use crate::exit::{ExitStatus, Failure};

/// What was carried.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Carried {
    /// Files and symlinks written into the worktree.
    pub(crate) copied: usize,
    /// Paths removed from the worktree because they are deleted in the main one.
    pub(crate) deleted: usize,
    /// Index entries set (staged content or staged deletions).
    pub(crate) staged: usize,
}

/// Copies the uncommitted state of `main` (a work tree top-level) into the fresh worktree
/// `wt`. `skip_dir` is the worktrees directory relative to `main`, when inside it.
pub(crate) fn carry(
    main: &Path,
    wt: &Path,
    skip_dir: Option<&Path>,
    oid_len: usize,
) -> Result<Carried, Failure> {
    let keep = |rel: &Path| carriable(rel, skip_dir);
    let mut carried = Carried::default();

    // Working tree: every path that differs from HEAD, plus untracked-not-ignored files.
    let diff = git::run(
        main,
        [
            "diff",
            "--name-only",
            "-z",
            "--no-renames",
            "--no-ext-diff",
            "HEAD",
            "--",
        ],
        None,
    )?;
    check(&diff, main, "git diff")?;
    let untracked = git::run(
        main,
        ["ls-files", "-z", "--others", "--exclude-standard"],
        None,
    )?;
    check(&untracked, main, "git ls-files --others")?;
    let mut paths = BTreeSet::new();
    for raw in git::nul_list(&diff.stdout)
        .into_iter()
        .chain(git::nul_list(&untracked.stdout))
    {
        if raw.last() == Some(&b'/') {
            // An embedded repository git does not descend into: not ours to copy.
            tracing::warn!(path = %String::from_utf8_lossy(&raw), "not carrying a nested git repository into the worktree");
            continue;
        }
        let rel = PathBuf::from(OsStr::from_bytes(&raw));
        if keep(&rel) {
            paths.insert(rel);
        }
    }
    // Deletions first, so a file replaced by a directory (or the reverse) has room.
    let (gone, present): (Vec<_>, Vec<_>) = paths
        .into_iter()
        .partition(|rel| matches!(main.join(rel).symlink_metadata(), Err(e) if e.kind() == io::ErrorKind::NotFound));
    for rel in &gone {
        if remove_in(wt, rel).map_err(|e| io_fail(wt, rel, e))? {
            carried.deleted += 1;
        }
    }
    for rel in &present {
        if copy_one(main, wt, rel).map_err(|e| io_fail(wt, rel, e))? {
            carried.copied += 1;
        }
    }

    // Index: paths whose staged state differs from HEAD get the main index's entry.
    let cached = git::run(
        main,
        [
            "diff",
            "--cached",
            "--name-only",
            "-z",
            "--no-renames",
            "HEAD",
            "--",
        ],
        None,
    )?;
    check(&cached, main, "git diff --cached")?;
    let staged: Vec<Vec<u8>> = git::nul_list(&cached.stdout)
        .into_iter()
        .filter(|raw| keep(Path::new(OsStr::from_bytes(raw))))
        .collect();
    if !staged.is_empty() {
        let listing = git::run(main, ["ls-files", "-s", "-z"], None)?;
        check(&listing, main, "git ls-files -s")?;
        // path -> (mode, oid, stage)
        let mut index: HashMap<Vec<u8>, Vec<(String, String, u8)>> = HashMap::new();
        for rec in git::nul_list(&listing.stdout) {
            let Some(tab) = rec.iter().position(|b| *b == b'\t') else {
                continue;
            };
            let (meta, path) = (&rec[..tab], rec[tab + 1..].to_vec());
            let meta = String::from_utf8_lossy(meta);
            let mut f = meta.split(' ');
            if let (Some(mode), Some(oid), Some(stage)) = (f.next(), f.next(), f.next()) {
                index.entry(path).or_default().push((
                    mode.to_string(),
                    oid.to_string(),
                    stage.parse().unwrap_or(0),
                ));
            }
        }
        let zero = "0".repeat(oid_len);
        let mut input = Vec::new();
        for path in &staged {
            let line = match index.get(path).map(Vec::as_slice) {
                Some([(mode, oid, 0)]) => format!("{mode} {oid} 0\t"),
                Some(_) => {
                    // Unmerged: the working-tree file was carried; the index keeps HEAD.
                    tracing::warn!(path = %String::from_utf8_lossy(path), "unmerged path carried as a working-tree change only");
                    continue;
                }
                // Staged deletion: mode 0 removes the entry.
                None => format!("0 {zero}\t"),
            };
            input.extend_from_slice(line.as_bytes());
            input.extend_from_slice(path);
            input.push(0);
            carried.staged += 1;
        }
        if !input.is_empty() {
            let out = git::run(wt, ["update-index", "-z", "--index-info"], Some(input))?;
            check(&out, wt, "git update-index --index-info")?;
        }
    }
    Ok(carried)
}

/// Whether a path reported by git may be carried.
pub(super) fn carriable(rel: &Path, skip_dir: Option<&Path>) -> bool {
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return false;
    }
    let first = rel.components().next().map(|c| c.as_os_str());
    if first == Some(OsStr::new(".git")) || first == Some(OsStr::new(crate::workspace::RALPH_DIR)) {
        return false;
    }
    !skip_dir.is_some_and(|d| rel.starts_with(d))
}

fn check(out: &git::Output, dir: &Path, what: &str) -> Result<(), Failure> {
    if out.ok {
        Ok(())
    } else {
        Err(Failure::msg(
            ExitStatus::Failure,
            format!(
                "carrying uncommitted work: {what} failed in {}: {}",
                dir.display(),
                out.complaint()
            ),
        ))
    }
}

fn io_fail(wt: &Path, rel: &Path, e: io::Error) -> Failure {
    Failure::msg(
        ExitStatus::Failure,
        format!("carrying uncommitted work: {}: {e}", wt.join(rel).display()),
    )
}

/// Removes `wt/rel` (a file or symlink; a directory only when it is a leftover of a
/// tracked tree). Returns whether something was removed.
fn remove_in(wt: &Path, rel: &Path) -> io::Result<bool> {
    if !parent_is_real(wt, rel) {
        return Ok(false);
    }
    let dest = wt.join(rel);
    match dest.symlink_metadata() {
        Ok(m) if m.is_dir() => fs::remove_dir_all(&dest).map(|()| true),
        Ok(_) => fs::remove_file(&dest).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether every parent of `rel` inside `wt` is a real directory (no symlink to
/// follow out of the worktree).
pub(super) fn parent_is_real(wt: &Path, rel: &Path) -> bool {
    let mut at = wt.to_path_buf();
    let Some(parent) = rel.parent() else {
        return true;
    };
    for c in parent.components() {
        at.push(c);
        match at.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            _ => return false,
        }
    }
    true
}

/// Makes every parent of `rel` inside `wt` a real directory, replacing files or
/// symlinks that stand in the way (the main work tree has a directory there).
fn make_parents(wt: &Path, rel: &Path) -> io::Result<()> {
    let mut at = wt.to_path_buf();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for c in parent.components() {
        at.push(c);
        match at.symlink_metadata() {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => fs::remove_file(&at)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fs::create_dir(&at)?;
    }
    Ok(())
}

/// Copies `main/rel` to `wt/rel` as what it is: a symlink as a symlink, a file with its
/// mode. Never writes through an existing symlink. Returns whether something was written.
fn copy_one(main: &Path, wt: &Path, rel: &Path) -> io::Result<bool> {
    let src = main.join(rel);
    let meta = src.symlink_metadata()?;
    make_parents(wt, rel)?;
    let dest = wt.join(rel);
    let ft = meta.file_type();
    match dest.symlink_metadata() {
        Ok(m) if m.is_dir() && ft.is_dir() => return Ok(false),
        Ok(m) if m.is_dir() => fs::remove_dir_all(&dest)?,
        Ok(_) => fs::remove_file(&dest)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(&src)?, &dest)?;
    } else if ft.is_file() {
        fs::copy(&src, &dest)?;
    } else if ft.is_dir() {
        // A tracked path that became a directory (its files are listed on their own).
        fs::create_dir(&dest)?;
        return Ok(false);
    } else {
        tracing::warn!(path = %src.display(), "not carrying a special file into the worktree");
        return Ok(false);
    }
    Ok(true)
}
