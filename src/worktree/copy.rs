//! `[worktree] copy`: ignored or untracked files (`.env`, `config/*.local.toml`) copied
//! from the work tree a launch starts in into the new worktree, where git never puts
//! them.
//!
//! Globs are git's own (`:(glob)` pathspecs, the wildmatch of `.gitignore`): git lists
//! the untracked files, ignored ones included, that match (`git ls-files --others`),
//! without descending into nested repositories, other worktrees or symlinked
//! directories. No glob crate is needed, and the matching is the one users know from
//! `.gitignore`. [`check_glob`] rejects at policy-read time what git would take
//! literally or what would leave the repository.
//!
//! Copying never overwrites (a file already in the worktree, tracked or carried, stays),
//! never writes through a symlink in the worktree, and never follows one in the source:
//! a matched symlink is copied as a link when it resolves inside the repository, and
//! skipped otherwise. Nothing here is fatal: a glob that matches nothing, or a file that
//! cannot be copied, is a warning. File contents are never logged.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::{carry, git};

/// How `[worktree] copy` is written.
pub(crate) const GLOBS: &str =
    "write an array of globs relative to the repository, like [\".env\", \"config/*.local.toml\"]";
/// One `[worktree] copy` entry, checked by [`check_glob`].
pub(crate) struct Glob(pub(crate) String);
impl<'de> serde::Deserialize<'de> for Glob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Glob, D::Error> {
        crate::setting::checked_str(d, |text| match check_glob(&text) {
            Ok(()) => Ok(Glob(text)),
            Err(why) => Err(format!("{text:?} is not a usable glob ({why}); {GLOBS}")),
        })
    }
}

/// Why `glob` cannot be a `[worktree] copy` entry, if it cannot.
pub(crate) fn check_glob(glob: &str) -> Result<(), String> {
    if glob.is_empty() {
        return Err("it is empty".into());
    }
    if glob.contains('\0') {
        return Err("it contains a NUL character".into());
    }
    if glob.starts_with('/') {
        return Err("it must be relative to the repository's top level".into());
    }
    let parts: Vec<&str> = glob.split('/').collect();
    if parts.contains(&"..") {
        return Err("it may not leave the repository with ..".into());
    }
    if parts.iter().any(|p| p.is_empty() || *p == ".") {
        return Err("write it without empty or . parts, like config/*.toml".into());
    }
    if matches!(parts[0], ".git" | ".ralph") {
        return Err(format!("{} is never copied", parts[0]));
    }
    if parts.iter().any(|p| p.contains("**") && *p != "**") {
        return Err("** must be a whole part of the path, like **/.env".into());
    }
    for part in parts {
        let mut chars = part.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.next().is_none() => {
                    return Err("it ends with a lone backslash".into());
                }
                '[' => {
                    // `[!...]` or `[^...]` negates; a `]` right after the opening is literal.
                    if matches!(chars.peek(), Some('!' | '^')) {
                        chars.next();
                    }
                    if chars.peek() == Some(&']') {
                        chars.next();
                    }
                    if !chars.by_ref().any(|c| c == ']') {
                        return Err("a [ has no closing ] in the same path part".into());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Copies what `globs` match in `source` (a work tree's top level) into the new worktree
/// `wt`; `skip_dir` is the worktrees directory relative to `source`, never copied from.
/// Returns how many files and links were copied.
pub(crate) fn copy(source: &Path, wt: &Path, skip_dir: Option<&Path>, globs: &[String]) -> usize {
    let top = source
        .canonicalize()
        .unwrap_or_else(|_| source.to_path_buf());
    let mut copied = 0;
    for glob in globs {
        let pathspec = format!(":(glob){glob}");
        let listed = git::run(
            source,
            ["ls-files", "-z", "--others", "--", pathspec.as_str()],
            None,
        );
        let out = match listed {
            Ok(out) if out.ok => out,
            Ok(out) => {
                tracing::warn!(
                    glob,
                    "worktree.copy: git ls-files failed: {}",
                    out.complaint()
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(glob, "worktree.copy: {:#}", e.error);
                continue;
            }
        };
        let paths: Vec<PathBuf> = git::nul_list(&out.stdout)
            .into_iter()
            // A trailing slash is a nested repository git did not enter.
            .filter(|raw| raw.last() != Some(&b'/'))
            .map(|raw| PathBuf::from(OsStr::from_bytes(&raw)))
            .filter(|rel| carry::carriable(rel, skip_dir))
            .collect();
        if paths.is_empty() {
            tracing::warn!(
                glob,
                "worktree.copy: no untracked or ignored file matches in {}; skipped",
                source.display()
            );
            continue;
        }
        for rel in paths {
            match copy_one(&top, source, wt, &rel) {
                Ok(true) => copied += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    path = %rel.display(),
                    "worktree.copy: not copied: {e}"
                ),
            }
        }
    }
    copied
}

/// Copies `source/rel` to `wt/rel` unless something is there already. `Ok(false)`: left
/// alone on purpose (already there, or a link out of the repository: logged).
fn copy_one(top: &Path, source: &Path, wt: &Path, rel: &Path) -> io::Result<bool> {
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Ok(false);
    }
    let not_dir = || io::Error::other("a parent directory is a symlink or not a directory");
    if !carry::parent_is_real(source, rel) {
        return Err(not_dir());
    }
    let src = source.join(rel);
    let meta = src.symlink_metadata()?;
    let dest = wt.join(rel);
    if dest.symlink_metadata().is_ok() {
        tracing::debug!(path = %rel.display(), "worktree.copy: already in the worktree; kept");
        return Ok(false);
    }
    if meta.file_type().is_symlink() {
        let inside = src.canonicalize().is_ok_and(|real| real.starts_with(top));
        if !inside {
            tracing::warn!(
                path = %rel.display(),
                "worktree.copy: a symlink that leads out of the repository (or nowhere); not copied"
            );
            return Ok(false);
        }
        make_dirs(wt, rel)?;
        std::os::unix::fs::symlink(fs::read_link(&src)?, &dest)?;
        return Ok(true);
    }
    if !meta.is_file() {
        tracing::warn!(path = %rel.display(), "worktree.copy: not a regular file; not copied");
        return Ok(false);
    }
    make_dirs(wt, rel)?;
    let mut from = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&src)?;
    // `create_new` (O_EXCL) never follows a symlink and never replaces anything.
    let mut to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(meta.permissions().mode() & 0o7777)
        .open(&dest)?;
    let written = io::copy(&mut from, &mut to)
        .and_then(|_| to.set_permissions(fs::Permissions::from_mode(meta.permissions().mode())));
    if let Err(e) = written {
        // Never leave half a file behind.
        let _ = fs::remove_file(&dest);
        return Err(e);
    }
    Ok(true)
}

/// Creates the missing parents of `rel` in `wt` as real directories; something else in
/// the way (a file, a symlink) is an error: nothing is written through a link.
fn make_dirs(wt: &Path, rel: &Path) -> io::Result<()> {
    let mut at = wt.to_path_buf();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for c in parent.components() {
        at.push(c);
        match at.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} in the worktree is not a directory",
                    at.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&at)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_are_checked() {
        for good in [
            ".env",
            "config/*.local.toml",
            "**/.env",
            "a/**/b",
            "[ab]c",
            "[]x]",
            "[!a]",
            "x\\*",
        ] {
            assert_eq!(check_glob(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("/etc/passwd", "relative"),
            ("../x", ".."),
            ("a/../../x", ".."),
            ("./x", "parts"),
            ("a//b", "parts"),
            (".git/config", "never copied"),
            (".ralph/loops.json", "never copied"),
            ("a**/b", "whole part"),
            ("config/[ab.toml", "closing ]"),
            ("[a/b]", "closing ]"),
            ("x\\", "backslash"),
        ] {
            let err = check_glob(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
