//! Launching a loop in a fresh git worktree, laid out the way ralph-orchestrator lays
//! its parallel loops out, so that `ralph loops list|stop|merge` see ours:
//!
//! * `<repo>/<dir>/<id>` on branch `<prefix><id>` from HEAD (`.worktrees`, `ralph/`);
//!   `/<dir>/` goes into `.git/info/exclude` (the tracked `.gitignore` is never edited);
//! * the user's uncommitted work carried over ([`carry`]), and the ignored files the
//!   policy names (`.env`) copied ([`copy`]);
//! * ralph's sharing: `<wt>/.ralph/agent/memories.md`, `<wt>/.ralph/specs` and
//!   `<wt>/.ralph/tasks` are symlinks to the main repo's, and
//!   `<wt>/.ralph/agent/context.md` describes the loop;
//! * the loop registered in `<repo>/.ralph/loops.json` ([`registry`]) and, on a
//!   successful exit with commits, queued in `<repo>/.ralph/merge-queue.jsonl`
//!   ([`queue`]).
//!
//! Creating and removing worktrees is serialised by a blocking flock on
//! `<repo>/.ralph/worktree.lock`: concurrent `git worktree add` calls race on git's own
//! lock files, and an abandoned attempt leaves a branch behind. Creation is all or
//! nothing: on any failure the directory and the branch are removed again.

pub(crate) mod carry;
pub(crate) mod copy;
pub(crate) mod git;
pub mod id;
pub mod queue;
pub mod registry;

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;

pub(crate) use carry::Carried;

use crate::exit::{ExitStatus, Failure};
use crate::lock::LockFile;
use crate::ralph_dir::{Access, RalphFile};
use crate::workspace::{RALPH_DIR, RalphDir};

/// The repo-level lock serialising worktree creation and removal.
pub(crate) const REPO_LOCK_FILE: &str = "worktree.lock";
/// ralph's context file, relative to a worktree.
pub(crate) const CONTEXT_FILE: &str = ".ralph/agent/context.md";
/// [`gc`] leaves a worktree alone while its context file is younger than this: between
/// [`create`] returning and the supervisor locking `<wt>/.ralph/loop.lock` a launch is
/// in progress, and the worktree looks finished and clean.
pub(crate) const GC_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spec {
    /// The main work tree (its top-level; a subdirectory is resolved to it).
    pub(crate) repo: PathBuf,
    /// Where worktrees go, relative to `repo` (`.worktrees`).
    pub(crate) dir: PathBuf,
    /// Branch name prefix (`ralph/`).
    pub(crate) branch_prefix: String,
    /// The task; it names the loop id.
    pub(crate) prompt: String,
    /// Copy uncommitted work over.
    pub(crate) carry: bool,
    /// Globs of ignored or untracked files to copy over (`[worktree] copy`).
    pub(crate) copy: Vec<String>,
}

/// A created worktree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Created {
    pub(crate) id: String,
    /// Absolute path of the worktree: the loop's workspace.
    pub(crate) path: PathBuf,
    /// `<prefix><id>`.
    pub(crate) branch: String,
    /// Full commit id the branch started from.
    pub(crate) base: String,
    /// The main work tree's top-level, canonical (its `.ralph/` holds loops.json and
    /// merge-queue.jsonl).
    pub(crate) repo: PathBuf,
    /// The work tree the launch started from (the main one, or a linked worktree when a
    /// loop launches another): its uncommitted work is carried over.
    pub(crate) source: PathBuf,
    /// The branch the main work tree was on, `None` for a detached HEAD.
    pub(crate) source_branch: Option<String>,
    /// What was carried over (all zero when `carry` was off).
    pub(crate) carried: Carried,
    /// `RALPH_LOOP_INDEX`: the smallest index no other live loop of the repository has
    /// (0 is the primary's), reserved in the registry under the repo lock.
    pub(crate) loop_index: u32,
}

impl Created {
    /// `<repo>/.ralph`: where [`registry`] and [`queue`] live.
    pub(crate) fn repo_ralph_dir(&self) -> PathBuf {
        self.repo.join(RALPH_DIR)
    }
}

crate::setting::keywords! {
    OnExit "What happens to a worktree when its loop ends." {
        Keep = "keep", "Leave it in place.";
        RemoveIfClean = "remove-if-clean", "Remove it if it has no changes and no commits beyond its base.";
        QueueMerge = "queue-merge", "On exit 0, append it to `.ralph/merge-queue.jsonl` for `ralph loops merge`.";
    }
}

/// What [`finish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    Kept,
    Removed,
    Queued,
    /// `remove-if-clean`, but the worktree had changes or commits: kept.
    KeptDirty,
}

/// What [`gc`] did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GcReport {
    /// Registry ids whose pid is dead.
    pub(crate) pruned: Vec<String>,
    /// Worktrees removed (with their branches).
    pub(crate) removed: Vec<PathBuf>,
    /// Finished worktrees kept because they have changes or unmerged commits.
    pub(crate) unmerged: Vec<PathBuf>,
    /// Worktrees whose loop is running (their `loop.lock` is held, or the registry lists
    /// a live loop there, as ralph's own worktree loops hold no lock) or is being
    /// launched (created less than [`GC_GRACE`] ago): left alone.
    pub(crate) running: Vec<PathBuf>,
    /// The workspace is not in a git repository: only the registry was looked at.
    pub(crate) not_git: bool,
}

/// What we learn about the repository before touching it.
struct Repo {
    /// The work tree we were started in (its HEAD and uncommitted work are the base).
    root: PathBuf,
    /// The main work tree: where `.worktrees/` and `.ralph/loops.json` live, also when
    /// `root` is itself a linked worktree (a loop launching another).
    main: PathBuf,
    exclude: PathBuf,
    head: String,
    head_branch: Option<String>,
}

/// Why the repository is inspected: its messages give the advice that fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A worktree launch (the `worktree` conflict policy).
    Launch,
    /// `gc`: outside a git repository there are no worktrees to clean up, which is not
    /// an error; nor is a repository without commits.
    Gc,
}

/// The repository `dir` is in; `None` when it is in none and `purpose` is [`Purpose::Gc`].
fn inspect(dir: &Path, purpose: Purpose) -> Result<Option<Repo>, Failure> {
    let dir_for_git = if dir.is_dir() {
        dir.to_path_buf()
    } else {
        return Err(Failure::msg(
            ExitStatus::Failure,
            match purpose {
                Purpose::Launch => format!(
                    "{} is not a directory; worktree launches need a git repository",
                    dir.display()
                ),
                Purpose::Gc => format!("{} is not a directory", dir.display()),
            },
        ));
    };
    let bare = git::run(&dir_for_git, ["rev-parse", "--is-bare-repository"], None)?;
    if !bare.ok {
        if purpose == Purpose::Gc {
            return Ok(None);
        }
        return Err(Failure::msg(
            ExitStatus::Failure,
            format!(
                "{} is not in a git repository ({}); run `git init` there or choose another conflict policy",
                dir.display(),
                bare.complaint()
            ),
        ));
    }
    if bare.text() == "true" {
        return Err(Failure::msg(
            ExitStatus::Failure,
            match purpose {
                Purpose::Launch => format!(
                    "{} is a bare git repository; worktree launches need a work tree",
                    dir.display()
                ),
                Purpose::Gc => format!(
                    "{} is a bare git repository; run gc in a work tree of it (-C)",
                    dir.display()
                ),
            },
        ));
    }
    let out = git::run(
        &dir_for_git,
        [
            "rev-parse",
            "--path-format=absolute",
            "--show-toplevel",
            "--git-path",
            "info/exclude",
        ],
        None,
    )?;
    let text = out.text();
    let mut lines = text.lines();
    let (Some(root), Some(exclude), true) = (lines.next(), lines.next(), out.ok) else {
        return Err(Failure::msg(
            ExitStatus::Failure,
            format!(
                "{} is not inside a git work tree: {}",
                dir.display(),
                out.complaint()
            ),
        ));
    };
    let head = git::run(
        &dir_for_git,
        ["rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
        None,
    )?;
    if (!head.ok || head.text().is_empty()) && purpose == Purpose::Launch {
        return Err(Failure::msg(
            ExitStatus::Failure,
            format!(
                "the git repository at {root} has no commits yet; commit once so a worktree can branch from HEAD"
            ),
        ));
    }
    let branch = git::run(
        &dir_for_git,
        ["symbolic-ref", "--quiet", "--short", "HEAD"],
        None,
    )?;
    // The one rule `list`, `stop` and `gc` find the registry by, too.
    let main = crate::workspace::main_work_tree(Path::new(root));
    Ok(Some(Repo {
        main,
        root: PathBuf::from(root),
        exclude: PathBuf::from(exclude),
        head: head.text(),
        head_branch: branch.ok.then(|| branch.text()).filter(|b| !b.is_empty()),
    }))
}

/// Why `dir` cannot be `[worktree] dir`, if it cannot: it is relative to the
/// repository's top level without `..`, and not in `.git` or `.ralph`, or absolute.
pub(crate) fn check_dir(dir: &Path) -> Result<(), String> {
    let first = dir.components().find_map(|c| match c {
        Component::Normal(name) if dir.is_relative() => Some(name),
        _ => None,
    });
    let why = if dir.as_os_str().is_empty() {
        return Err("the directory is empty; use a directory like \".worktrees\"".into());
    } else if dir.components().any(|c| c == Component::ParentDir) {
        "it may not leave the repository with .."
    } else if first.is_some_and(|first| first == ".git" || first == RALPH_DIR) {
        "git's and ralph's own directories are not for worktrees"
    } else {
        return Ok(());
    };
    let use_ = "use a directory inside the repository like \".worktrees\", or an absolute path";
    Err(format!(
        "{:?} is not a usable worktree directory ({why}); {use_}",
        dir.display()
    ))
}

/// The absolute worktrees directory for `dir` (see [`check_dir`]), and its path
/// relative to the repo root when inside it.
fn worktrees_dir(root: &Path, dir: &Path) -> Result<(PathBuf, Option<PathBuf>), Failure> {
    check_dir(dir).map_err(|why| Failure::msg(ExitStatus::Failure, why))?;
    let abs = root.join(dir);
    let rel = abs.strip_prefix(root).ok().map(|r| {
        r.components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect::<PathBuf>()
    });
    Ok((abs, rel.filter(|r| !r.as_os_str().is_empty())))
}

/// An exclusive flock on `<repo>/.ralph/worktree.lock`, released when dropped (the
/// descriptor is close-on-exec, so git never holds a copy).
struct RepoLock {
    _file: RalphFile,
}

fn repo_lock(root: &Path) -> Result<RepoLock, Failure> {
    let dir = RalphDir::open_or_create(root)?;
    let file = dir
        .open_locked(REPO_LOCK_FILE, Access::ReadWrite, true)?
        .expect("created");
    Ok(RepoLock { _file: file })
}

/// Adds `/<rel>/` to `info/exclude` unless a line already covers it.
fn ensure_excluded(exclude: &Path, rel: &Path) -> Result<(), Failure> {
    let rel = rel.to_string_lossy();
    let wanted = format!("/{rel}/");
    let accepted = [
        wanted.clone(),
        format!("{rel}/"),
        format!("/{rel}"),
        rel.to_string(),
    ];
    let old = match fs::read_to_string(exclude) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(Failure::msg(
                ExitStatus::Failure,
                format!("cannot read {}: {e}", exclude.display()),
            ));
        }
    };
    if old.lines().any(|l| accepted.iter().any(|a| a == l.trim())) {
        return Ok(());
    }
    let fail = |e: io::Error| {
        Failure::msg(
            ExitStatus::Failure,
            format!("cannot add {wanted} to {}: {e}", exclude.display()),
        )
    };
    if let Some(parent) = exclude.parent() {
        fs::create_dir_all(parent).map_err(fail)?;
    }
    let mut line = String::new();
    if !old.is_empty() && !old.ends_with('\n') {
        line.push('\n');
    }
    line.push_str("# ralph loop worktrees\n");
    line.push_str(&wanted);
    line.push('\n');
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(exclude)
        .map_err(fail)?;
    io::Write::write_all(&mut f, line.as_bytes()).map_err(fail)
}

/// The branch `dir`'s work tree has checked out; `None` when detached or not in git.
pub(crate) fn current_branch(dir: &Path) -> Option<String> {
    let out = git::run(dir, ["symbolic-ref", "--quiet", "--short", "HEAD"], None).ok()?;
    Some(out.text()).filter(|b| out.ok && !b.is_empty())
}

fn branch_exists(root: &Path, branch: &str) -> Result<bool, Failure> {
    let refname = format!("refs/heads/{branch}");
    Ok(git::run(
        root,
        ["show-ref", "--verify", "--quiet", refname.as_str()],
        None,
    )?
    .ok)
}

/// Paths of the registered worktrees and the branch each has checked out.
fn worktree_list(root: &Path) -> Result<Vec<(PathBuf, Option<String>)>, Failure> {
    let out = git::run(root, ["worktree", "list", "--porcelain", "-z"], None)?;
    if !out.ok {
        return Err(Failure::msg(
            ExitStatus::Failure,
            format!(
                "git worktree list failed in {}: {}",
                root.display(),
                out.complaint()
            ),
        ));
    }
    let mut list: Vec<(PathBuf, Option<String>)> = Vec::new();
    for field in git::nul_list(&out.stdout) {
        if let Some(path) = field.strip_prefix(b"worktree ") {
            list.push((PathBuf::from(std::ffi::OsStr::from_bytes(path)), None));
        } else if let (Some(b), Some(last)) =
            (field.strip_prefix(b"branch refs/heads/"), list.last_mut())
        {
            last.1 = Some(String::from_utf8_lossy(b).into_owned());
        }
    }
    Ok(list)
}

/// Removes what a failed `git worktree add` may have left: the branch (unless some
/// worktree has it checked out) and the directory (unless git registered it).
fn clean_failed_add(root: &Path, path: &Path, branch: &str) -> Result<(), Failure> {
    let _ = git::run(root, ["worktree", "prune"], None)?;
    let list = worktree_list(root)?;
    if !list.iter().any(|(p, _)| p == path) && path.symlink_metadata().is_ok() {
        let _ = fs::remove_dir_all(path);
    }
    if !list.iter().any(|(_, b)| b.as_deref() == Some(branch)) && branch_exists(root, branch)? {
        git::ok(root, ["branch", "-D", "--quiet", branch], "git branch -D")?;
    }
    Ok(())
}

/// Removes worktree `path` and branch `branch` completely. Caller holds the repo lock.
fn remove_worktree(root: &Path, path: &Path, branch: Option<&str>) -> Result<(), Failure> {
    let mut errors = Vec::new();
    if path.symlink_metadata().is_ok() {
        let out = git::run(
            root,
            [
                std::ffi::OsStr::new("worktree"),
                "remove".as_ref(),
                "--force".as_ref(),
                path.as_os_str(),
            ],
            None,
        )?;
        if !out.ok {
            // Not (or no longer) registered, or half made: remove the directory ourselves.
            if let Err(e) = fs::remove_dir_all(path).or_else(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            }) {
                errors.push(format!("cannot remove {}: {e}", path.display()));
            }
        }
    }
    let _ = git::run(root, ["worktree", "prune"], None)?;
    if let Some(branch) = branch.filter(|b| branch_exists(root, b).unwrap_or(true)) {
        let out = git::run(root, ["branch", "-D", "--quiet", branch], None)?;
        if !out.ok {
            errors.push(format!(
                "cannot delete branch {branch}: {}",
                out.complaint()
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Failure::msg(ExitStatus::Failure, errors.join("; ")))
    }
}

#[cfg(test)]
thread_local! {
    /// Test hook: make `create` fail after `git worktree add` (to test the rollback).
    static FAIL_AFTER_ADD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Creates the worktree for a new loop (see the module documentation).
pub(crate) fn create(spec: &Spec) -> Result<Created, Failure> {
    create_with(spec, &|_| true)
}

/// [`create`], with `reserve` asked last about each free candidate id: false means it
/// is taken elsewhere (fleet mode reserves ids across hosts).
pub(crate) fn create_with(spec: &Spec, reserve: &dyn Fn(&str) -> bool) -> Result<Created, Failure> {
    let repo = inspect(&spec.repo, Purpose::Launch)?.expect("a launch never gets None");
    // Worktrees, the registry and the repo lock belong to the main work tree; the base
    // commit and the work carried over come from the tree we were started in.
    let root = repo.main.clone();
    let (wt_root, wt_rel) = worktrees_dir(&root, &spec.dir)?;
    let probe_ref = format!("refs/heads/{}x", spec.branch_prefix);
    if spec.branch_prefix.is_empty()
        || !git::run(&root, ["check-ref-format", probe_ref.as_str()], None)?.ok
    {
        return Err(Failure::msg(
            ExitStatus::Failure,
            format!(
                "branch prefix {:?} does not make valid branch names; use something like \"ralph/\"",
                spec.branch_prefix
            ),
        ));
    }
    let live: Vec<String> = registry::list(&root.join(RALPH_DIR))?
        .into_iter()
        .filter(registry::Entry::alive)
        .map(|e| e.id)
        .collect();
    let created_root = wt_root.symlink_metadata().is_err();

    let mut last_error = None;
    let mut made = None;
    for _attempt in 0..3 {
        let lock = repo_lock(&root)?;
        if let Some(rel) = &wt_rel {
            ensure_excluded(&repo.exclude, rel)?;
        }
        let refs = git::run(
            &root,
            [
                "for-each-ref",
                "--format=%(refname:lstrip=2)",
                "refs/heads/",
            ],
            None,
        )?;
        let branches: HashSet<String> = refs.text().lines().map(str::to_string).collect();
        let dirs: Vec<String> = fs::read_dir(&wt_root)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        let others: Vec<&String> = live.iter().chain(dirs.iter()).collect();
        let taken = |c: &str| {
            wt_root.join(c).symlink_metadata().is_ok()
                || branches.contains(&format!("{}{c}", spec.branch_prefix))
                || others
                    .iter()
                    .any(|o| o.contains(c) || c.contains(o.as_str()))
                || !reserve(c)
        };
        let id = id::generate_id(&spec.prompt, &taken);
        let branch = format!("{}{id}", spec.branch_prefix);
        let path = wt_root.join(&id);
        let add = git::run(
            &root,
            [
                std::ffi::OsStr::new("worktree"),
                "add".as_ref(),
                "--quiet".as_ref(),
                "-b".as_ref(),
                branch.as_ref(),
                path.as_os_str(),
                repo.head.as_ref(),
            ],
            None,
        )?;
        if add.ok {
            // Still under the repo lock: a concurrent launch sees this loop's index.
            let ralph = root.join(RALPH_DIR);
            let index = registry::reserve(&ralph, &id, &path, &spec.prompt).unwrap_or_else(|e| {
                // As when the child's registration fails: the loop runs, unlisted.
                let index = registry::free_index(&ralph);
                tracing::warn!(
                    "cannot register the loop: {:#}; its RALPH_LOOP_INDEX {index} is not reserved",
                    e.error
                );
                index
            });
            drop(lock);
            made = Some((id, path, branch, index));
            break;
        }
        let error = if branches.contains(&branch) {
            format!("branch {branch} already exists; delete it or pick another prefix")
        } else {
            format!(
                "git worktree add {} failed: {}",
                path.display(),
                add.complaint()
            )
        };
        clean_failed_add(&root, &path, &branch)?;
        drop(lock);
        last_error = Some(Failure::msg(ExitStatus::Failure, error));
    }
    let Some((id, path, branch, loop_index)) = made else {
        if created_root {
            let _ = fs::remove_dir(&wt_root);
        }
        return Err(last_error.expect("an attempt failed"));
    };

    let mut created = Created {
        id,
        path,
        branch,
        base: repo.head.clone(),
        repo: root.clone(),
        source: repo.root.clone(),
        source_branch: repo.head_branch.clone(),
        carried: Carried::default(),
        loop_index,
    };
    match set_up(spec, &created, wt_rel.as_deref()) {
        Ok(carried) => {
            created.carried = carried;
            Ok(created)
        }
        Err(failure) => {
            let _ = registry::deregister(&created.repo_ralph_dir(), &created.id);
            let rollback = repo_lock(&root)
                .and_then(|_lock| remove_worktree(&root, &created.path, Some(&created.branch)));
            if created_root {
                let _ = fs::remove_dir(&wt_root);
            }
            if let Err(r) = rollback {
                tracing::error!(
                    "rolling back worktree {}: {:#}",
                    created.path.display(),
                    r.error
                );
            }
            Err(failure)
        }
    }
}

/// Everything after `git worktree add`: carry, sharing links, context file.
fn set_up(spec: &Spec, created: &Created, wt_rel: Option<&Path>) -> Result<Carried, Failure> {
    let carried = if spec.carry {
        carry::carry(&created.source, &created.path, wt_rel, created.base.len())?
    } else {
        Carried::default()
    };
    if !spec.copy.is_empty() {
        let n = copy::copy(&created.source, &created.path, wt_rel, &spec.copy);
        tracing::info!("copied {n} file(s) named by worktree.copy into the worktree");
    }
    #[cfg(test)]
    if FAIL_AFTER_ADD.with(|f| f.get()) {
        return Err(Failure::msg(
            ExitStatus::Failure,
            "injected failure after git worktree add",
        ));
    }
    share(&created.repo, &created.path)?;
    write_context(created, &spec.prompt)?;
    Ok(carried)
}

/// ralph's sharing: memories, specs and tasks of the worktree are the main repo's.
fn share(root: &Path, wt: &Path) -> Result<(), Failure> {
    let main_dir = RalphDir::open_or_create(root)?;
    let main = main_dir.path().to_path_buf();
    let fail = |what: &Path, e: io::Error| {
        Failure::msg(
            ExitStatus::Failure,
            format!("sharing ralph state: {}: {e}", what.display()),
        )
    };
    for d in ["agent", "specs", "tasks"] {
        fs::create_dir_all(main.join(d)).map_err(|e| fail(&main.join(d), e))?;
    }
    let memories = main.join("agent/memories.md");
    main_dir
        .create_if_missing("agent/memories.md")
        .map_err(|e| fail(&memories, e))?;
    let wt_ralph = RalphDir::open_or_create(wt)?.path().to_path_buf();
    fs::create_dir_all(wt_ralph.join("agent")).map_err(|e| fail(&wt_ralph.join("agent"), e))?;
    for (link, target) in [
        (wt_ralph.join("agent/memories.md"), memories.clone()),
        (wt_ralph.join("specs"), main.join("specs")),
        (wt_ralph.join("tasks"), main.join("tasks")),
    ] {
        match link.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => {
                if fs::read_link(&link).ok().as_deref() == Some(&target) {
                    continue;
                }
                fs::remove_file(&link).map_err(|e| fail(&link, e))?;
            }
            Ok(_) => {
                // Checked out from the branch: the repository tracks it. Leave it.
                tracing::warn!(path = %link.display(), "tracked in git; not replaced by a link to the main repo's");
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(&link, e)),
        }
        std::os::unix::fs::symlink(&target, &link).map_err(|e| fail(&link, e))?;
    }
    Ok(())
}

fn write_context(created: &Created, prompt: &str) -> Result<(), Failure> {
    let path = created.path.join(CONTEXT_FILE);
    let source = created
        .source_branch
        .as_deref()
        .map_or_else(|| "detached HEAD".to_string(), |b| format!("branch `{b}`"));
    let text = format!(
        "# Loop context\n\n\
         This is a ralph worktree loop started by ralph-supervise because the main\n\
         workspace was busy. Work and commit here; the main repository is untouched.\n\n\
         - Loop ID: `{id}`\n\
         - Branch: `{branch}`\n\
         - Base commit: `{base}` (from {source})\n\
         - Worktree: `{wt}`\n\
         - Main repository: `{repo}`\n\
         - Created: {now}\n\n\
         Shared with the main repository (symlinks): `.ralph/agent/memories.md`,\n\
         `.ralph/specs/`, `.ralph/tasks/`.\n\n\
         ## Prompt\n\n{prompt}\n",
        id = created.id,
        branch = created.branch,
        base = created.base,
        wt = created.path.display(),
        repo = created.repo.display(),
        now = crate::metadata::format_time(&chrono::Utc::now()),
    );
    // Through the door: the worktree's `.ralph/` came from the repository's tree, and a
    // symlink or hard link planted there must not redirect the write.
    let fail = |e: &dyn std::fmt::Display| {
        Failure::msg(
            ExitStatus::Failure,
            format!("cannot write {}: {e}", path.display()),
        )
    };
    let agent = RalphDir::open_or_create(&created.path)?.subdir("agent", true)?;
    let agent = agent.ok_or_else(|| fail(&"no .ralph/agent directory"))?;
    let file = agent.open("context.md", Access::ReadWrite, true)?;
    let file = file.ok_or_else(|| fail(&"the file vanished"))?;
    file.write_in_place(text.into_bytes()).map_err(|e| fail(&e))
}

/// Uncommitted changes in a worktree, ignoring our own untracked `.ralph/`.
fn has_changes(wt: &Path) -> Result<bool, Failure> {
    let out = git::run(
        wt,
        ["status", "--porcelain=v1", "-z", "--untracked-files=normal"],
        None,
    )?;
    if !out.ok {
        return Err(Failure::msg(
            ExitStatus::Failure,
            format!("git status failed in {}: {}", wt.display(), out.complaint()),
        ));
    }
    Ok(git::nul_list(&out.stdout).iter().any(|rec| {
        let untracked_ralph = rec.starts_with(b"?? ") && {
            let p = &rec[3..];
            p == b".ralph/" || p.starts_with(b".ralph/")
        };
        !untracked_ralph
    }))
}

/// Commits in `wt`'s HEAD (and in `branch`, when it exists) not reachable from `base`.
fn commits_beyond(
    root: &Path,
    wt: &Path,
    base: &str,
    branch: Option<&str>,
) -> Result<u64, Failure> {
    let count = |dir: &Path, tip: &str| -> Result<u64, Failure> {
        let range = format!("{base}..{tip}");
        let text = git::ok(dir, ["rev-list", "--count", range.as_str()], "git rev-list")?;
        Ok(text.trim().parse().unwrap_or(0))
    };
    let mut n = 0;
    if wt.is_dir() {
        n += count(wt, "HEAD")?;
    }
    if let Some(branch) = branch.filter(|b| branch_exists(root, b).unwrap_or(true)) {
        n += count(root, &format!("refs/heads/{branch}"))?;
    }
    Ok(n)
}

/// Applies `on_exit` when the loop in `created` has ended (`success`: it exited 0).
///
/// Call it after the worktree's `loop.lock` has been released. `queue-merge` without
/// success or without commits keeps the worktree.
pub(crate) fn finish(
    repo: &Path,
    created: &Created,
    on_exit: OnExit,
    success: bool,
    prompt: &str,
) -> Result<Finish, Failure> {
    match on_exit {
        OnExit::Keep => Ok(Finish::Kept),
        OnExit::RemoveIfClean => {
            let _lock = repo_lock(repo)?;
            if !created.path.is_dir() {
                // Already gone (removed by hand): drop the branch only if it is clean.
                if commits_beyond(repo, &created.path, &created.base, Some(&created.branch))? == 0 {
                    remove_worktree(repo, &created.path, Some(&created.branch))?;
                    return Ok(Finish::Removed);
                }
                return Ok(Finish::KeptDirty);
            }
            if has_changes(&created.path)?
                || commits_beyond(repo, &created.path, &created.base, Some(&created.branch))? > 0
            {
                return Ok(Finish::KeptDirty);
            }
            remove_worktree(repo, &created.path, Some(&created.branch))?;
            Ok(Finish::Removed)
        }
        OnExit::QueueMerge => {
            if success
                && commits_beyond(repo, &created.path, &created.base, Some(&created.branch))? > 0
            {
                queue::enqueue(&repo.join(RALPH_DIR), &created.id, prompt)?;
                Ok(Finish::Queued)
            } else {
                Ok(Finish::Kept)
            }
        }
    }
}

/// Rolls back a launch that failed after [`create`] (the command could not be started):
/// removes the worktree and its branch, so a failed launch leaves nothing behind.
pub(crate) fn discard(created: &Created) -> Result<(), Failure> {
    let _ = registry::deregister(&created.repo_ralph_dir(), &created.id);
    let _lock = repo_lock(&created.repo)?;
    remove_worktree(&created.repo, &created.path, Some(&created.branch))
}

/// Whether a loop runs in worktree `wt`: its `.ralph/loop.lock` is flock-held. When it
/// is free, the returned lock file holds it, so no loop starts there while we remove.
/// A `.ralph` that is not a directory (or has no lock file) has no loop.
fn probe_loop_lock(wt: &Path) -> Result<(bool, Option<LockFile>), Failure> {
    let dir = match RalphDir::at(&wt.join(RALPH_DIR), false) {
        Ok(Some(dir)) => dir,
        Ok(None) => return Ok((false, None)),
        Err(e) if e.errno() == Some(Errno::ENOTDIR) => return Ok((false, None)),
        Err(e) => return Err(e.into()),
    };
    let Some(lock) = LockFile::open_to_probe(&dir)? else {
        return Ok((false, None));
    };
    let free = lock.try_lock().map_err(|e| {
        Failure::msg(
            ExitStatus::Failure,
            format!("cannot probe {}: {e}", lock.path().display()),
        )
    })?;
    Ok((!free, free.then_some(lock)))
}

/// Prunes dead registry entries and removes finished, clean worktrees under
/// `<repo>/<dir>` with their branches (when named `<prefix>...`). A worktree is clean
/// when it has no uncommitted changes and no commit the main work tree's HEAD lacks.
/// Those with unmerged work are listed, never deleted. `dry_run` changes nothing.
/// `repo` is any directory of the repository (a subdirectory, a linked worktree).
pub(crate) fn gc(
    repo: &Path,
    dir: &Path,
    branch_prefix: &str,
    dry_run: bool,
) -> Result<GcReport, Failure> {
    let Some(info) = inspect(repo, Purpose::Gc)? else {
        // No worktrees outside git; a registry (ralph lists its primary there too) may
        // still have dead entries.
        return Ok(GcReport {
            pruned: prune_registry(&repo.join(RALPH_DIR), dry_run)?,
            not_git: true,
            ..GcReport::default()
        });
    };
    // Worktrees, the registry and the repo lock belong to the main work tree, as in
    // `create_with`, also when gc runs in a linked worktree (in a worktree loop); a
    // worktree is clean against the main work tree's HEAD.
    let info = if info.main == info.root {
        info
    } else {
        inspect(&info.main, Purpose::Gc)?.unwrap_or(info)
    };
    let root = info.root;
    let (wt_root, _) = worktrees_dir(&root, dir)?;
    let mut report = GcReport {
        pruned: prune_registry(&root.join(RALPH_DIR), dry_run)?,
        ..GcReport::default()
    };
    if info.head.is_empty() {
        // No commits yet: no worktree can branch from anything.
        return Ok(report);
    }
    let _lock = if dry_run {
        None
    } else {
        Some(repo_lock(&root)?)
    };
    let wt_root = wt_root.canonicalize().unwrap_or(wt_root);
    // Loops that hold no lock in their worktree (ralph's own worktree loops) run as long
    // as the registry's entry does by ralph's measure: its pid alive, its directory there.
    let registered: Vec<registry::Entry> = registry::list(&root.join(RALPH_DIR))?
        .into_iter()
        .filter(registry::Entry::running)
        .collect();
    for (path, branch) in worktree_list(&root)? {
        if path.parent() != Some(wt_root.as_path()) || !path.is_dir() {
            continue;
        }
        // (`_guard` holds a free lock until the worktree is dealt with.)
        let (held, _guard) = probe_loop_lock(&path)?;
        let running = held || registered.iter().any(|e| e.runs_in(&path));
        let launching = fs::metadata(path.join(CONTEXT_FILE))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < GC_GRACE));
        if running || launching {
            report.running.push(path);
            continue;
        }
        let ours = branch.as_deref().filter(|b| b.starts_with(branch_prefix));
        let unmerged = has_changes(&path)? || commits_beyond(&root, &path, &info.head, None)? > 0;
        if unmerged {
            report.unmerged.push(path);
            continue;
        }
        if !dry_run {
            remove_worktree(&root, &path, ours)?;
        }
        report.removed.push(path);
    }
    Ok(report)
}

/// The ids of the dead entries of the registry in `ralph_dir`, removed unless `dry_run`.
fn prune_registry(ralph_dir: &Path, dry_run: bool) -> Result<Vec<String>, Failure> {
    let dead = if dry_run {
        registry::list(ralph_dir)?
            .into_iter()
            .filter(|e| !e.alive())
            .collect()
    } else {
        registry::prune(ralph_dir)?
    };
    Ok(dead.into_iter().map(|e| e.id).collect())
}

#[cfg(test)]
mod tests;
