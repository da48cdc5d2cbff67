//! Security: hostile prompts cannot steer a worktree out of `.worktrees/`, files get
//! sane modes and are never written through a planted symlink, and secrets in the
//! supervisor's environment never reach `.ralph/`.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use crate::harness::*;

/// Holds the workspace lock with flock(1), as any other primary would (its command
/// reports its pid, so the harness kills it too: flock(1) alone dying would leave it).
fn hold(ws: &Workspace) -> Proc {
    std::fs::create_dir_all(ws.path.join(".ralph")).unwrap();
    let mut p = Proc::spawn({
        let mut c = Command::new("flock");
        c.arg(ws.lock_path())
            .args(["sh", "-c", "echo \"pid $$\"; echo ready; exec sleep 60"]);
        c
    });
    p.expect_line("ready");
    p
}

/// Every path below `root` (not following links), relative.
fn tree(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().to_path_buf());
            if e.file_type().unwrap().is_dir() && e.file_name() != ".git" {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn hostile_prompts_stay_inside_worktrees_dir() {
    // The repository is a subdirectory, so that anything escaping it shows up beside it.
    let outer = Workspace::new();
    let repo = outer.path.join("repo");
    std::fs::create_dir(&repo).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "hi\n").unwrap();
    git(&["add", "README"]);
    git(&["commit", "-q", "-m", "init"]);
    std::fs::create_dir_all(repo.join(".ralph")).unwrap();
    let mut holder = Proc::spawn({
        let mut c = Command::new("flock");
        c.arg(repo.join(".ralph/loop.lock")).args([
            "sh",
            "-c",
            "echo \"pid $$\"; echo ready; exec sleep 60",
        ]);
        c
    });
    holder.expect_line("ready");
    let run = |args: &[&str]| {
        let mut cmd = Command::new(bin());
        cmd.arg("-C").arg(&repo).args(args).current_dir(&repo);
        cmd.stdin(std::process::Stdio::null());
        Proc::spawn(cmd).finish()
    };
    let long = "../".repeat(2000) + "x";
    let prompts = [
        "../../x",
        "a/../../b",
        "/etc/passwd",
        "..",
        ".",
        "-rf --force",
        "ralph/../../../escape",
        "$(touch pwned) `touch pwned2`",
        "x\ny\rz\tw",
        "é 漢字 😀",
        long.as_str(),
        "",
    ];
    let before_outer: Vec<_> = std::fs::read_dir(&outer.path)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    for prompt in prompts {
        let out = run(&[
            "run",
            "--on-conflict",
            "worktree",
            &format!("--prompt={prompt}"),
            "--",
            "sh",
            "-c",
            "pwd > \"$RALPH_WORKSPACE_ROOT/../../where-$$\"",
        ]);
        assert_eq!(out.code(), 0, "{prompt:?}: {out:?}");
    }
    // Every worktree is a direct child of .worktrees with a plain id.
    let wts: Vec<String> = std::fs::read_dir(repo.join(".worktrees"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert_eq!(wts.len(), prompts.len(), "{wts:?}");
    for id in &wts {
        assert!(
            id.len() <= 64
                && id.split('-').all(|p| !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())),
            "id {id:?}"
        );
    }
    // Each child ran inside its worktree (the where-* files, written relative to it,
    // land in the repository root), and nothing appeared beside the repository.
    let wheres: Vec<String> = std::fs::read_dir(&repo)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("where-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert_eq!(wheres.len(), prompts.len());
    for w in &wheres {
        assert!(
            w.trim()
                .starts_with(&format!("{}/.worktrees/", repo.display())),
            "{w}"
        );
    }
    let after_outer: Vec<_> = std::fs::read_dir(&outer.path)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before_outer, after_outer);
    assert!(!repo.join("pwned").exists() && !repo.join("pwned2").exists());
    let branches = git(&["branch", "--format=%(refname)"]);
    for b in branches.lines().filter(|b| *b != "refs/heads/main") {
        let id = b.strip_prefix("refs/heads/ralph/").expect(b);
        assert!(wts.iter().any(|w| w == id), "branch {b} without a worktree");
    }
}

#[test]
fn files_get_sane_modes_under_any_umask() {
    for (umask, file_mode, dir_mode) in [
        ("022", 0o644, 0o755),
        ("077", 0o600, 0o700),
        ("000", 0o644, 0o755),
    ] {
        let ws = Workspace::new();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(bin())
            .arg("-C")
            .arg(&ws.path)
            .args(["run", "--", "true"]);
        let out = Proc::spawn(cmd).finish();
        assert_eq!(out.code(), 0, "{out:?}");
        let mode = |p: &str| {
            std::fs::symlink_metadata(ws.path.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode(".ralph"), dir_mode, "umask {umask}");
        assert_eq!(mode(".ralph/supervise"), dir_mode, "umask {umask}");
        assert_eq!(mode(".ralph/loop.lock"), file_mode, "umask {umask}");
        assert_eq!(
            mode(".ralph/supervise/runs.jsonl"),
            file_mode,
            "umask {umask}"
        );
    }
}

#[test]
fn planted_history_symlink_is_refused_and_its_target_untouched() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path.join(".ralph/supervise")).unwrap();
    let target = ws.path.join("victim");
    std::fs::write(&target, "precious\n").unwrap();
    symlink(&target, ws.path.join(".ralph/supervise/runs.jsonl")).unwrap();
    let out = ws.run(&["run", "--", "true"]);
    // The command ran; its record was refused, said so in one warning.
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stderr.contains("cannot record the run"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    let hist = ws.run(&["history"]);
    assert_eq!(hist.code(), 125, "{hist:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
}

#[test]
fn planted_registry_symlink_refuses_the_launch_and_leaves_its_target() {
    let ws = Workspace::git();
    let _holder = hold(&ws);
    let victim = ws.path.join("victim.json");
    std::fs::write(&victim, "{\"precious\":true}\n").unwrap();
    symlink(&victim, ws.path.join(".ralph/loops.json")).unwrap();
    let out = ws.run(&["run", "--on-conflict", "worktree", "--", "true"]);
    assert_eq!(out.code(), 125, "{out:?}");
    let errors = crate::faults::error_lines(&out.stderr);
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    assert!(
        errors[0].contains("loops.json: it is a symbolic link"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "{\"precious\":true}\n"
    );
    assert!(
        std::fs::symlink_metadata(ws.path.join(".ralph/loops.json"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // No worktree or branch was left behind.
    let branches = ws.git_cmd(&["branch", "--list", "ralph/*"]);
    assert_eq!(branches.trim(), "", "{branches}");
    let list = ws.run(&["list"]);
    assert_ne!(list.code(), 0, "list reads through the link: {list:?}");
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "{\"precious\":true}\n"
    );
}

#[test]
fn planted_merge_queue_symlink_is_refused_and_its_target_untouched() {
    let ws = Workspace::git();
    let _holder = hold(&ws);
    let victim = ws.path.join("victim.jsonl");
    std::fs::write(&victim, "precious\n").unwrap();
    symlink(&victim, ws.path.join(".ralph/merge-queue.jsonl")).unwrap();
    let out = run_a_loop_that_queues_its_merge(&ws);
    // The loop ran; queueing its merge was refused, in one warning.
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stderr
            .contains("merge-queue.jsonl: it is a symbolic link"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn environment_secrets_never_reach_ralph_files() {
    let ws = Workspace::git();
    let secrets = [
        ("GITHUB_TOKEN", "secret123-gh"),
        ("OPENAI_API_KEY", "sk-secret456-openai"),
        ("ANTHROPIC_API_KEY", "sk-ant-secret789"),
        ("AWS_SECRET_ACCESS_KEY", "aws-secret-000"),
    ];
    let with_env = |args: &[&str]| {
        let mut cmd = ws.cmd(args);
        for (k, v) in secrets {
            cmd.env(k, v);
        }
        Proc::spawn(cmd)
    };
    // A primary, a worktree loop beside it (registry, merge queue, history), and
    // control commands, all with the secrets in their environment.
    let mut primary = with_env(&["run", "--", bin(), "probe", "--exit-on", "TERM"]);
    primary.expect_line("ready");
    let policy = ws.path.join("queue.toml");
    std::fs::write(&policy, "[worktree]\non_exit = \"queue-merge\"\n").unwrap();
    let out = with_env(&[
        "run",
        "--policy",
        policy.to_str().unwrap(),
        "--on-conflict",
        "worktree",
        "--",
        "sh",
        "-c",
        "test ${#GITHUB_TOKEN} -eq 12 && cp .ralph/loop.lock ../../wt-meta && \
         git -c user.name=t -c user.email=t@example.com commit --allow-empty -qm work",
    ])
    .finish();
    assert_eq!(
        out.code(),
        0,
        "the child still gets its environment: {out:?}"
    );
    for args in [&["status", "--json"][..], &["list", "--json"], &["history"]] {
        assert_eq!(with_env(args).finish().code(), 0, "{args:?}");
    }
    let meta = std::fs::read(ws.lock_path()).unwrap();
    primary.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(primary.finish().code(), 143);
    let mut scanned = vec![("loop.lock during the run".to_string(), meta)];
    scanned.push((
        "worktree loop.lock during the run".into(),
        std::fs::read(ws.path.join("wt-meta")).unwrap(),
    ));
    for rel in tree(&ws.path) {
        let p = ws.path.join(&rel);
        let s = rel.to_string_lossy();
        if (s.contains(".ralph") || s.starts_with(".worktrees")) && p.is_file() && !p.is_symlink() {
            scanned.push((s.into_owned(), std::fs::read(&p).unwrap()));
        }
    }
    assert!(
        scanned.len() >= 6,
        "{:?}",
        scanned.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    for (name, bytes) in &scanned {
        let text = String::from_utf8_lossy(bytes);
        for (k, v) in secrets {
            assert!(!text.contains(v), "{k}'s value leaked into {name}");
        }
    }
}

/// The etcd credentials are the supervisor's alone: the command, both hooks, and git with
/// the repository's own git hooks (shared by every worktree, so an agent may plant one)
/// see neither variable nor its value, not even in the supervisor's /proc/PID/environ.
#[test]
fn etcd_credentials_reach_no_process_the_supervisor_starts() {
    let ws = Workspace::git();
    let out_dir = tempfile::tempdir().unwrap();
    let seen = |name: &str| out_dir.path().join(name);
    let dump = |name: &str| format!("env > {}", seen(name).display());
    let git_hook = ws.path.join(".git/hooks/post-checkout");
    std::fs::write(&git_hook, format!("#!/bin/sh\n{}\n", dump("git-hook"))).unwrap();
    std::fs::set_permissions(&git_hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let policy = ws.path.join("hooks.toml");
    let hook = |name: &str| format!("[\"sh\", \"-c\", {:?}]", dump(name));
    let text = format!(
        "[hooks]\non_start = {}\non_exit = {}\n",
        hook("on-start"),
        hook("on-exit")
    );
    std::fs::write(&policy, text).unwrap();
    // Held, so that the run is a worktree launch: git makes the worktree and runs the hook.
    let _primary = hold(&ws);
    let mut cmd = ws.cmd(&[
        "run",
        "--policy",
        policy.to_str().unwrap(),
        "--on-conflict",
        "worktree",
        "--",
        "sh",
        "-c",
        // And what the supervisor started with, as /proc shows it to the same user.
        &format!(
            "{}; cat /proc/$PPID/environ > {}",
            dump("command"),
            seen("supervisor").display()
        ),
    ]);
    cmd.env("RALPH_SUPERVISE_ETCD_USER", "agents-user")
        .env("RALPH_SUPERVISE_ETCD_PASSWORD", "pw-s3cret");
    let out = Proc::spawn(cmd).finish();
    assert_eq!(out.code(), 0, "{out:?}");
    for name in ["git-hook", "on-start", "command", "on-exit", "supervisor"] {
        wait_until(name, LIMIT, || seen(name).exists());
        let env = std::fs::read_to_string(seen(name)).unwrap();
        // (The environment did reach it: HOME and PATH are passed on.)
        assert!(env.contains("PATH="), "{name}: {env}");
        for leak in ["RALPH_SUPERVISE_ETCD", "agents-user", "pw-s3cret"] {
            assert!(!env.contains(leak), "{leak} reached the {name}: {env}");
        }
    }
}

/// A library preloaded into the supervisor that changes the password before `main`:
/// `putenv` with a string of its own (read-only: writing to it would crash the
/// supervisor), or `setenv` (a copy: the string the supervisor started with stays in
/// /proc/PID/environ unless that is blanked too).
#[test]
fn credentials_changed_before_main_are_still_taken_and_blanked() {
    let ws = Workspace::new();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("pre.c");
    std::fs::write(
        &source,
        "#include <stdlib.h>\n\
         __attribute__((constructor)) static void init(void) {\n\
           if (getenv(\"PRE_PUTENV\")) putenv(\"RALPH_SUPERVISE_ETCD_PASSWORD=in-rodata\");\n\
           if (getenv(\"PRE_SETENV\")) setenv(\"RALPH_SUPERVISE_ETCD_PASSWORD\", \"copy\", 1);\n\
         }\n",
    )
    .unwrap();
    let library = dir.path().join("pre.so");
    let built = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .output()
        .expect("gcc");
    assert!(built.status.success(), "{built:?}");
    for how in ["PRE_PUTENV", "PRE_SETENV"] {
        let seen = dir.path().join(format!("{how}.environ"));
        let copy = format!("cat /proc/$PPID/environ > {}", seen.display());
        let mut cmd = ws.cmd(&["run", "--", "sh", "-c", &copy]);
        cmd.env("LD_PRELOAD", &library)
            .env(how, "1")
            .env("RALPH_SUPERVISE_ETCD_USER", "agents-user")
            .env("RALPH_SUPERVISE_ETCD_PASSWORD", "pw-s3cret");
        let out = Proc::spawn(cmd).finish();
        assert_eq!(out.code(), 0, "{how}: {out:?}");
        let environ = String::from_utf8_lossy(&std::fs::read(&seen).unwrap()).into_owned();
        assert!(environ.contains(how), "{how}: {environ}");
        assert!(!environ.contains("pw-s3cret"), "{how}: {environ}");
    }
}

/// Plants `victim` as a second name (hard link) at `.ralph/<name>`.
fn hard_link_victim(ws: &Workspace, name: &str, contents: &str) -> std::path::PathBuf {
    let link = ws.path.join(".ralph").join(name);
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    let victim = ws.path.join("precious.txt");
    std::fs::write(&victim, contents).unwrap();
    std::fs::hard_link(&victim, &link).unwrap();
    victim
}

#[test]
fn hard_linked_lock_is_refused_and_the_other_file_kept() {
    let ws = Workspace::new();
    let victim = hard_link_victim(&ws, "loop.lock", "precious\n");
    let out = ws.run(&["run", "--", "true"]);
    assert_eq!(out.code(), 125, "{out:?}");
    let errors = crate::faults::error_lines(&out.stderr);
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    assert!(
        errors[0].contains("loop.lock: it has 2 names (hard links)"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    // Those who only look may still read it, and find no loop.
    assert_eq!(ws.run(&["status"]).code(), 3);
    assert_eq!(ws.run(&["wait"]).code(), 0);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn hard_linked_history_is_refused_and_the_other_file_kept() {
    let ws = Workspace::new();
    let victim = hard_link_victim(&ws, "supervise/runs.jsonl", "precious\n");
    let out = ws.run(&["run", "--", "true"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stderr.contains("cannot record the run") && out.stderr.contains("hard links"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn hard_linked_registry_is_not_written_and_the_other_file_kept() {
    let ws = Workspace::git();
    let _holder = hold(&ws);
    let victim = hard_link_victim(&ws, "loops.json", "{\"loops\": []}\n");
    // Reading the registry (to pick a free id) is harmless; registering is refused, with
    // a warning, as any failure to register is.
    let out = ws.run(&["run", "--on-conflict", "worktree", "--", "true"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stderr.contains("cannot register the loop: refusing")
            && out.stderr.contains("loops.json: it has 2 names"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "{\"loops\": []}\n"
    );
}

#[test]
fn hard_linked_merge_queue_and_repo_lock_are_refused() {
    let ws = Workspace::git();
    let _holder = hold(&ws);
    let victim = hard_link_victim(&ws, "merge-queue.jsonl", "precious\n");
    let out = run_a_loop_that_queues_its_merge(&ws);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stderr.contains("merge-queue.jsonl: it has 2 names"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");

    // The repository's worktree lock is only locked, never written: still refused, as
    // locking another's file could block whoever owns it.
    let other = ws.path.join("other.txt");
    std::fs::write(&other, "mine\n").unwrap();
    std::fs::hard_link(&other, ws.path.join(".ralph/worktree.lock")).unwrap_or_else(|_| {
        std::fs::remove_file(ws.path.join(".ralph/worktree.lock")).unwrap();
        std::fs::hard_link(&other, ws.path.join(".ralph/worktree.lock")).unwrap();
    });
    let out = ws.run(&["run", "--on-conflict", "worktree", "--", "true"]);
    assert_eq!(out.code(), 125, "{out:?}");
    assert!(
        out.stderr.contains("worktree.lock: it has 2 names"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "mine\n");
}

#[test]
fn worktree_context_is_not_written_through_a_tracked_symlink() {
    let ws = Workspace::git();
    let victim = ws.path.join("precious.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::create_dir_all(ws.path.join(".ralph/agent")).unwrap();
    symlink(&victim, ws.path.join(".ralph/agent/context.md")).unwrap();
    ws.git_cmd(&["add", "-f", ".ralph/agent/context.md", "precious.txt"]);
    ws.git_cmd(&["commit", "-qm", "a link where the loop context goes"]);
    let _holder = hold(&ws);
    let out = ws.run(&["run", "--on-conflict", "worktree", "--", "true"]);
    assert_eq!(out.code(), 125, "{out:?}");
    assert!(
        out.stderr.contains("context.md: it is a symbolic link"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

/// A worktree loop (the workspace is held) that commits and ends with `on_exit =
/// "queue-merge"`, so its exit writes the merge queue.
fn run_a_loop_that_queues_its_merge(ws: &Workspace) -> Output {
    let policy = ws.path.join("queue.toml");
    std::fs::write(&policy, "[worktree]\non_exit = \"queue-merge\"\n").unwrap();
    let commit = "git -c user.name=t -c user.email=t@example.com commit --allow-empty -qm work";
    let policy = policy.to_str().unwrap();
    let args = ["run", "--policy", policy, "--on-conflict", "worktree", "--"];
    let mut args: Vec<&str> = args.to_vec();
    args.extend(commit.split(' '));
    ws.run(&args)
}
