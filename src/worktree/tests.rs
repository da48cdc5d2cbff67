//! Tests against real git repositories in temporary directories.

use super::*;
use std::os::unix::fs::{PermissionsExt, symlink};

/// Runs git with an identity and no signing, so commits work on a fresh machine.
fn g(dir: &Path, args: &[&str]) -> String {
    let out = duct::cmd("git", args)
        .dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// A repository with one commit: README, src/lib.rs, a tracked symlink, a .gitignore.
fn repo() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("repo");
    fs::create_dir(&root).unwrap();
    g(&root, &["-c", "init.defaultBranch=main", "init", "-q"]);
    g(&root, &["config", "commit.gpgsign", "false"]);
    fs::write(root.join("README.md"), "# test\n").unwrap();
    fs::create_dir(root.join("src")).unwrap();
    fs::write(root.join("src/lib.rs"), "pub(crate) fn f() {}\n").unwrap();
    fs::write(root.join("gone.txt"), "delete me\n").unwrap();
    fs::write(root.join("unstage-del.txt"), "staged deletion\n").unwrap();
    fs::write(root.join(".gitignore"), "*.log\n").unwrap();
    symlink("README.md", root.join("readme-link")).unwrap();
    g(&root, &["add", "-A"]);
    g(&root, &["commit", "-q", "-m", "initial"]);
    (tmp, root)
}

fn spec(root: &Path, prompt: &str, carry: bool) -> Spec {
    Spec {
        repo: root.to_path_buf(),
        dir: PathBuf::from(".worktrees"),
        branch_prefix: "ralph/".into(),
        prompt: prompt.into(),
        carry,
        copy: Vec::new(),
    }
}

fn branches(root: &Path) -> Vec<String> {
    g(
        root,
        &[
            "for-each-ref",
            "--format=%(refname:short)",
            "refs/heads/ralph/",
        ],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// Makes a worktree look older than gc's launch grace.
fn age(c: &Created) {
    let old = std::time::SystemTime::now() - 2 * GC_GRACE;
    fs::File::options()
        .write(true)
        .open(c.path.join(CONTEXT_FILE))
        .unwrap()
        .set_modified(old)
        .unwrap();
}

fn commit_in(wt: &Path, name: &str) {
    fs::write(wt.join(name), "new\n").unwrap();
    g(wt, &["add", name]);
    g(wt, &["commit", "-q", "-m", name]);
}

#[test]
fn layout_branch_and_exclude() {
    let (_tmp, root) = repo();
    let gitignore = fs::read(root.join(".gitignore")).unwrap();
    let c = create(&spec(&root, "Fix the login bug", false)).unwrap();
    assert!(c.id.starts_with("fix-login-bug-"), "{}", c.id);
    assert_eq!(c.path, root.join(".worktrees").join(&c.id));
    assert!(c.path.is_absolute());
    assert_eq!(c.branch, format!("ralph/{}", c.id));
    assert_eq!(c.base, g(&root, &["rev-parse", "HEAD"]));
    assert_eq!(c.repo, root);
    assert_eq!(c.source_branch.as_deref(), Some("main"));
    assert_eq!(g(&c.path, &["rev-parse", "--abbrev-ref", "HEAD"]), c.branch);
    assert_eq!(g(&c.path, &["rev-parse", "HEAD"]), c.base);
    assert!(c.path.join("src/lib.rs").is_file());
    // Exclude entry, once; tracked .gitignore untouched; the main tree stays clean of
    // .worktrees.
    let exclude = fs::read_to_string(root.join(".git/info/exclude")).unwrap();
    assert_eq!(exclude.lines().filter(|l| *l == "/.worktrees/").count(), 1);
    let c2 = create(&spec(&root, "Fix the login bug", false)).unwrap();
    assert_ne!(c.id, c2.id);
    let exclude = fs::read_to_string(root.join(".git/info/exclude")).unwrap();
    assert_eq!(exclude.lines().filter(|l| *l == "/.worktrees/").count(), 1);
    assert_eq!(fs::read(root.join(".gitignore")).unwrap(), gitignore);
    let status = g(&root, &["status", "--porcelain", "--untracked-files=all"]);
    assert!(!status.contains(".worktrees"), "{status}");
    // The new worktree is clean but for our own .ralph/.
    assert!(!has_changes(&c.path).unwrap());
}

#[test]
fn ralph_sharing_and_context() {
    let (_tmp, root) = repo();
    let c = create(&spec(&root, "write the docs", false)).unwrap();
    let main = root.join(".ralph");
    for (link, target) in [
        ("agent/memories.md", main.join("agent/memories.md")),
        ("specs", main.join("specs")),
        ("tasks", main.join("tasks")),
    ] {
        let l = c.path.join(".ralph").join(link);
        assert!(
            l.symlink_metadata().unwrap().file_type().is_symlink(),
            "{link}"
        );
        assert_eq!(fs::read_link(&l).unwrap(), target);
        assert!(l.exists(), "{link} dangles");
    }
    // Writing through the worktree's link lands in the main repo.
    fs::write(c.path.join(".ralph/agent/memories.md"), "remember\n").unwrap();
    assert_eq!(
        fs::read_to_string(main.join("agent/memories.md")).unwrap(),
        "remember\n"
    );
    let ctx = fs::read_to_string(c.path.join(CONTEXT_FILE)).unwrap();
    for needle in [
        c.id.as_str(),
        &c.branch,
        &c.base,
        "write the docs",
        root.to_str().unwrap(),
    ] {
        assert!(ctx.contains(needle), "{needle} missing from {ctx}");
    }
    // Existing memories are never truncated by another launch.
    create(&spec(&root, "again", false)).unwrap();
    assert_eq!(
        fs::read_to_string(main.join("agent/memories.md")).unwrap(),
        "remember\n"
    );
}

#[test]
fn carries_every_kind_of_change() {
    let (_tmp, root) = repo();
    // modified, unstaged
    fs::write(root.join("README.md"), "# changed\n").unwrap();
    // staged (and then modified again in the working tree)
    fs::write(root.join("src/lib.rs"), "pub(crate) fn staged() {}\n").unwrap();
    g(&root, &["add", "src/lib.rs"]);
    fs::write(root.join("src/lib.rs"), "pub(crate) fn worktree() {}\n").unwrap();
    // new file, staged
    fs::write(root.join("added.txt"), "added\n").unwrap();
    g(&root, &["add", "added.txt"]);
    // deleted (unstaged) and deleted (staged)
    fs::remove_file(root.join("gone.txt")).unwrap();
    g(&root, &["rm", "-q", "unstage-del.txt"]);
    // untracked, in a new subdirectory, executable
    fs::create_dir_all(root.join("new/dir")).unwrap();
    fs::write(root.join("new/dir/tool.sh"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut fs::metadata(root.join("new/dir/tool.sh"))
            .unwrap()
            .permissions(),
        0o755,
    );
    fs::set_permissions(
        root.join("new/dir/tool.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // untracked symlink (dangling on purpose) and a retargeted tracked symlink
    symlink("../nowhere", root.join("new/link")).unwrap();
    fs::remove_file(root.join("readme-link")).unwrap();
    symlink("src/lib.rs", root.join("readme-link")).unwrap();
    // not carried: ignored, .ralph state, .worktrees content
    fs::write(root.join("debug.log"), "ignored\n").unwrap();
    fs::create_dir_all(root.join(".ralph")).unwrap();
    fs::write(root.join(".ralph/loop.lock"), "{}").unwrap();
    fs::write(root.join(".ralph/events.jsonl"), "x\n").unwrap();
    let first = create(&spec(&root, "first", false)).unwrap();
    fs::write(first.path.join("inside-other-wt.txt"), "x\n").unwrap();

    let c = create(&spec(&root, "carry it all", true)).unwrap();
    let wt = &c.path;
    assert_eq!(
        fs::read_to_string(wt.join("README.md")).unwrap(),
        "# changed\n"
    );
    assert_eq!(
        fs::read_to_string(wt.join("src/lib.rs")).unwrap(),
        "pub(crate) fn worktree() {}\n"
    );
    assert_eq!(fs::read_to_string(wt.join("added.txt")).unwrap(), "added\n");
    assert!(!wt.join("gone.txt").exists());
    assert!(!wt.join("unstage-del.txt").exists());
    assert_eq!(
        fs::read_to_string(wt.join("new/dir/tool.sh")).unwrap(),
        "#!/bin/sh\n"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(wt.join("new/dir/tool.sh"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        fs::read_link(wt.join("new/link")).unwrap(),
        PathBuf::from("../nowhere")
    );
    assert_eq!(
        fs::read_link(wt.join("readme-link")).unwrap(),
        PathBuf::from("src/lib.rs")
    );
    assert!(!wt.join("debug.log").exists());
    assert!(!wt.join(".ralph/loop.lock").exists());
    assert!(!wt.join(".ralph/events.jsonl").exists());
    assert!(!wt.join(".worktrees").exists());
    // Staged as staged: same index content, same status as the main tree.
    let staged_main = g(
        &root,
        &["diff", "--cached", "--name-status", "--no-renames"],
    );
    let staged_wt = g(wt, &["diff", "--cached", "--name-status", "--no-renames"]);
    assert_eq!(staged_wt, staged_main);
    assert_eq!(g(wt, &["show", ":src/lib.rs"]), "pub(crate) fn staged() {}");
    let strip = |s: String| -> Vec<String> {
        let mut v: Vec<String> = s
            .lines()
            .filter(|l| !l.contains(".ralph"))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let status = |d: &Path| strip(g(d, &["status", "--porcelain", "--untracked-files=all"]));
    assert_eq!(
        status(wt),
        status(&root)
            .into_iter()
            .filter(|l| !l.contains("debug.log"))
            .collect::<Vec<_>>()
    );
    assert!(
        c.carried.copied >= 6 && c.carried.deleted >= 2 && c.carried.staged >= 3,
        "{:?}",
        c.carried
    );
    // The main tree is untouched.
    assert_eq!(
        fs::read_to_string(root.join("src/lib.rs")).unwrap(),
        "pub(crate) fn worktree() {}\n"
    );
}

#[test]
fn detached_head() {
    let (_tmp, root) = repo();
    let first = g(&root, &["rev-parse", "HEAD"]);
    commit_in(&root, "second.txt");
    g(&root, &["checkout", "-q", "--detach", &first]);
    let c = create(&spec(&root, "detached work", true)).unwrap();
    assert_eq!(c.base, first);
    assert_eq!(c.source_branch, None);
    assert_eq!(g(&c.path, &["rev-parse", "HEAD"]), first);
    assert!(!c.path.join("second.txt").exists());
    assert!(
        fs::read_to_string(c.path.join(CONTEXT_FILE))
            .unwrap()
            .contains("detached HEAD")
    );
}

#[test]
fn clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain");
    fs::create_dir(&plain).unwrap();
    let err = create(&spec(&plain, "x", false)).unwrap_err();
    assert_eq!(err.status, ExitStatus::Failure);
    assert!(
        err.error.to_string().contains("not in a git repository"),
        "{:#}",
        err.error
    );
    assert!(!err.error.to_string().contains('\n'));

    let bare = tmp.path().join("bare.git");
    g(
        tmp.path(),
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    let err = create(&spec(&bare, "x", false)).unwrap_err();
    assert!(err.error.to_string().contains("bare"), "{:#}", err.error);

    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    g(&empty, &["init", "-q"]);
    let err = create(&spec(&empty, "x", false)).unwrap_err();
    assert!(
        err.error.to_string().contains("no commits"),
        "{:#}",
        err.error
    );

    let (_t, root) = repo();
    let mut s = spec(&root, "x", false);
    s.branch_prefix = "bad..prefix/".into();
    let err = create(&s).unwrap_err();
    assert!(
        err.error.to_string().contains("branch prefix"),
        "{:#}",
        err.error
    );
    let mut s = spec(&root, "x", false);
    s.dir = PathBuf::from("../outside");
    assert!(create(&s).is_err());
}

#[test]
fn pre_existing_branch_name_is_skipped() {
    let (_tmp, root) = repo();
    // Every word-based name is taken as a branch ... by a plain branch that the taken
    // check sees; the id simply moves on.
    let c = create(&spec(&root, "alpha", false)).unwrap();
    finish(&root, &c, OnExit::RemoveIfClean, true, "alpha").unwrap();
    g(&root, &["branch", &c.branch]);
    let taken = c.id.clone();
    for _ in 0..5 {
        let c = create(&spec(&root, "alpha", false)).unwrap();
        assert_ne!(c.id, taken);
    }
}

#[test]
fn rollback_after_injected_failure() {
    let (_tmp, root) = repo();
    fs::write(root.join("untracked.txt"), "x\n").unwrap();
    FAIL_AFTER_ADD.with(|f| f.set(true));
    let err = create(&spec(&root, "doomed", true)).unwrap_err();
    FAIL_AFTER_ADD.with(|f| f.set(false));
    assert_eq!(err.status, ExitStatus::Failure);
    assert!(err.error.to_string().contains("injected"));
    assert!(
        !root.join(".worktrees").exists(),
        "worktrees dir left behind"
    );
    assert!(branches(&root).is_empty(), "{:?}", branches(&root));
    assert_eq!(
        g(&root, &["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        1
    );
    // And the next create works.
    create(&spec(&root, "doomed", true)).unwrap();
}

#[test]
fn rollback_after_git_refuses() {
    let (_tmp, root) = repo();
    // A file ref `ralph` makes every `ralph/<id>` branch impossible (D/F conflict).
    g(&root, &["branch", "ralph"]);
    let err = create(&spec(&root, "cannot branch", false)).unwrap_err();
    assert_eq!(err.status, ExitStatus::Failure);
    assert!(!err.error.to_string().contains('\n'));
    assert!(!root.join(".worktrees").exists());
    assert!(branches(&root).is_empty());
}

#[test]
fn concurrent_creates_are_distinct() {
    let (_tmp, root) = repo();
    let threads: Vec<_> = (0..12)
        .map(|_| {
            let s = spec(&root, "same prompt for all", true);
            std::thread::spawn(move || create(&s))
        })
        .collect();
    let made: Vec<Created> = threads
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    let ids: HashSet<&str> = made.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), 12);
    for c in &made {
        for o in &made {
            if c.id != o.id {
                assert!(!c.id.contains(&o.id), "{} contains {}", c.id, o.id);
            }
        }
        assert!(c.path.join("README.md").is_file());
    }
    assert_eq!(branches(&root).len(), 12);
    assert_eq!(
        g(&root, &["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        13
    );
}

#[test]
fn finish_modes() {
    let (_tmp, root) = repo();
    // remove-if-clean, clean: worktree and branch gone.
    let c = create(&spec(&root, "clean one", false)).unwrap();
    assert_eq!(
        finish(&root, &c, OnExit::RemoveIfClean, true, "clean one").unwrap(),
        Finish::Removed
    );
    assert!(!c.path.exists());
    assert!(!branches(&root).contains(&c.branch));

    // remove-if-clean with an uncommitted change: kept.
    let c = create(&spec(&root, "dirty one", false)).unwrap();
    fs::write(c.path.join("README.md"), "dirty\n").unwrap();
    assert_eq!(
        finish(&root, &c, OnExit::RemoveIfClean, true, "").unwrap(),
        Finish::KeptDirty
    );
    assert!(c.path.exists());

    // remove-if-clean with a commit: kept.
    let c = create(&spec(&root, "committed one", false)).unwrap();
    commit_in(&c.path, "work.txt");
    assert_eq!(
        finish(&root, &c, OnExit::RemoveIfClean, true, "").unwrap(),
        Finish::KeptDirty
    );
    assert!(branches(&root).contains(&c.branch));

    // keep.
    assert_eq!(
        finish(&root, &c, OnExit::Keep, true, "").unwrap(),
        Finish::Kept
    );

    // queue-merge: only on success with commits.
    assert_eq!(
        finish(&root, &c, OnExit::QueueMerge, false, "p").unwrap(),
        Finish::Kept
    );
    let idle = create(&spec(&root, "idle", false)).unwrap();
    assert_eq!(
        finish(&root, &idle, OnExit::QueueMerge, true, "p").unwrap(),
        Finish::Kept
    );
    assert!(!root.join(".ralph/merge-queue.jsonl").exists());
    assert_eq!(
        finish(&root, &c, OnExit::QueueMerge, true, "committed one").unwrap(),
        Finish::Queued
    );
    let text = fs::read_to_string(root.join(".ralph/merge-queue.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(v["loop_id"], c.id.as_str());
    assert_eq!(v["event"]["type"], "queued");
    assert_eq!(v["event"]["prompt"], "committed one");
    assert!(v["ts"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn gc_dry_run_then_real() {
    let (_tmp, root) = repo();
    let clean = create(&spec(&root, "clean", false)).unwrap();
    let dirty = create(&spec(&root, "dirty", false)).unwrap();
    fs::write(dirty.path.join("scratch.txt"), "x\n").unwrap();
    let committed = create(&spec(&root, "committed", false)).unwrap();
    commit_in(&committed.path, "c.txt");
    let running = create(&spec(&root, "running", false)).unwrap();
    let lock = crate::lock::try_acquire(&RalphDir::open_or_create(&running.path).unwrap()).unwrap();
    assert!(matches!(lock, crate::lock::Acquire::Acquired(_)));
    // A merged worktree: its commit is reachable from main's HEAD.
    let merged = create(&spec(&root, "merged", false)).unwrap();
    commit_in(&merged.path, "m.txt");
    g(&root, &["merge", "-q", "--ff-only", &merged.branch]);
    // Just launched (no loop.lock yet): gc leaves it alone.
    let launching = create(&spec(&root, "launching", false)).unwrap();
    // Registry: one dead entry, one live (`create` registered each launch: start afresh).
    let ralph = root.join(".ralph");
    for c in [&clean, &dirty, &committed, &running, &merged, &launching] {
        registry::deregister(&ralph, &c.id).unwrap();
    }
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let entry = |id: &str, pid: u32| registry::Entry {
        id: id.into(),
        pid,
        started: chrono::Utc::now(),
        prompt: "p".into(),
        worktree_path: root.join(".worktrees").join(id),
        workspace: root.join(".worktrees").join(id),
        pid_namespace: None,
        loop_index: None,
        extra: Default::default(),
    };
    registry::register(&ralph, entry(&running.id, std::process::id())).unwrap();
    // Written by hand: register would prune it on the way in.
    let mut raw: serde_json::Value =
        serde_json::from_slice(&fs::read(ralph.join("loops.json")).unwrap()).unwrap();
    raw["loops"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::to_value(entry(&clean.id, dead)).unwrap());
    fs::write(ralph.join("loops.json"), raw.to_string()).unwrap();

    for c in [&clean, &dirty, &committed, &running, &merged] {
        age(c);
    }
    let dry = gc(&root, Path::new(".worktrees"), "ralph/", true).unwrap();
    assert_eq!(dry.pruned, vec![clean.id.clone()]);
    let mut removed = dry.removed.clone();
    removed.sort();
    let mut want = vec![clean.path.clone(), merged.path.clone()];
    want.sort();
    assert_eq!(removed, want);
    let mut unmerged = dry.unmerged.clone();
    unmerged.sort();
    let mut want_un = vec![dirty.path.clone(), committed.path.clone()];
    want_un.sort();
    assert_eq!(unmerged, want_un);
    let mut busy = dry.running.clone();
    busy.sort();
    let mut want_busy = vec![running.path.clone(), launching.path.clone()];
    want_busy.sort();
    assert_eq!(busy, want_busy);
    // Nothing changed.
    assert!(clean.path.exists() && merged.path.exists());
    assert_eq!(registry::list(&ralph).unwrap().len(), 2);
    assert_eq!(branches(&root).len(), 6);

    let real = gc(&root, Path::new(".worktrees"), "ralph/", false).unwrap();
    assert_eq!(real.pruned, dry.pruned);
    assert_eq!(real.removed.len(), 2);
    assert!(!clean.path.exists() && !merged.path.exists());
    assert!(dirty.path.exists() && committed.path.exists() && running.path.exists());
    let left = branches(&root);
    assert!(
        !left.contains(&clean.branch) && !left.contains(&merged.branch),
        "{left:?}"
    );
    assert_eq!(left.len(), 4);
    assert!(launching.path.exists());
    assert_eq!(registry::list(&ralph).unwrap().len(), 1);
    drop(lock);
}

#[test]
fn copy_brings_ignored_files_over_and_nothing_more() {
    let (tmp, root) = repo();
    fs::create_dir_all(root.join("config/deep")).unwrap();
    fs::write(root.join("app.log"), "SECRET=1\n").unwrap();
    fs::set_permissions(root.join("app.log"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(root.join("config/a.local.log"), "a\n").unwrap();
    fs::write(root.join("config/deep/b.local.log"), "b\n").unwrap();
    // Tracked: never overwritten, though the glob names it.
    fs::write(root.join("README.md"), "# changed, not committed\n").unwrap();
    // A link out of the repository is not copied; one inside is, as a link.
    let outside = tmp.path().join("outside.log");
    fs::write(&outside, "not yours\n").unwrap();
    symlink(&outside, root.join("out.log")).unwrap();
    symlink("app.log", root.join("in.log")).unwrap();
    let mut s = spec(&root, "copy things", false);
    s.copy = vec![
        "*.log".into(),
        "config/*.local.log".into(),
        "README.md".into(),
        "nothing-*.here".into(),
    ];
    let c = create(&s).unwrap();
    assert_eq!(
        fs::read_to_string(c.path.join("app.log")).unwrap(),
        "SECRET=1\n"
    );
    let mode = fs::metadata(c.path.join("app.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(c.path.join("config/a.local.log").is_file());
    // `*` stays within a directory.
    assert!(!c.path.join("config/deep/b.local.log").exists());
    assert_eq!(
        fs::read_to_string(c.path.join("README.md")).unwrap(),
        "# test\n"
    );
    assert!(c.path.join("out.log").symlink_metadata().is_err());
    assert_eq!(
        fs::read_link(c.path.join("in.log")).unwrap(),
        Path::new("app.log")
    );
    // The first worktree loop gets index 1 (0 is the primary's), the next 2.
    assert_eq!(c.loop_index, 1);
    let d = create(&spec(&root, "another", false)).unwrap();
    assert_eq!(d.loop_index, 2);
}

/// Fleet mode's reservation: an id the reserver refuses (taken on another host) is
/// never used, as a directory or as a branch. (The reserver here refuses the first three
/// ids it is asked for, and those again whenever they come back: ids are random.)
#[test]
fn ids_refused_by_the_reserver_are_skipped() {
    let (_tmp, root) = repo();
    let refused = std::cell::RefCell::new(Vec::<String>::new());
    let asked = std::cell::RefCell::new(0);
    let reserve = |id: &str| {
        *asked.borrow_mut() += 1;
        let mut refused = refused.borrow_mut();
        if refused.iter().any(|r| r == id) {
            return false;
        }
        if refused.len() < 3 {
            refused.push(id.to_string());
            return false;
        }
        true
    };
    let created = create_with(&spec(&root, "fix the build", false), &reserve).unwrap();
    let refused = refused.into_inner();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(asked.into_inner() >= 4);
    assert!(
        !refused.contains(&created.id),
        "{} in {refused:?}",
        created.id
    );
    assert_eq!(branches(&root), [format!("ralph/{}", created.id)]);
}
