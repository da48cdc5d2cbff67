//! Worktree launches through the real binary ("Worktree launch when the workspace is
//! taken"): real git repositories, real supervisors and children, the registry, the
//! merge queue, the history and `gc` as the CLI shows them.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use nix::sys::signal::{Signal, killpg};
use serde_json::Value;

use crate::harness::*;

/// The directories under `<repo>/.worktrees`, sorted.
fn worktree_dirs(ws: &Workspace) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(ws.path.join(".worktrees"))
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// The only worktree under `<repo>/.worktrees`.
fn only_worktree(ws: &Workspace) -> PathBuf {
    let dirs = worktree_dirs(ws);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

/// Branches under `ralph/`.
fn ralph_branches(ws: &Workspace) -> Vec<String> {
    ws.git_cmd(&[
        "for-each-ref",
        "--format=%(refname:lstrip=2)",
        "refs/heads/ralph/",
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

/// Paths `git worktree list` knows, the main work tree included.
fn git_worktrees(ws: &Workspace) -> Vec<PathBuf> {
    ws.git_cmd(&["worktree", "list", "--porcelain"])
        .lines()
        .filter_map(|l| l.strip_prefix("worktree "))
        .map(PathBuf::from)
        .collect()
}

/// The entries of `<repo>/.ralph/loops.json` (none when the file is missing or empty),
/// read under a shared flock as a careful reader does; `None` when it is not JSON.
fn try_registry(ws: &Workspace) -> Option<Vec<Value>> {
    use nix::fcntl::{Flock, FlockArg};
    use std::io::Read;
    let Ok(file) = std::fs::File::open(ws.path.join(".ralph/loops.json")) else {
        return Some(Vec::new());
    };
    let mut locked = Flock::lock(file, FlockArg::LockShared)
        .map_err(|(_, e)| e)
        .unwrap();
    let mut text = String::new();
    locked.read_to_string(&mut text).unwrap();
    if text.trim().is_empty() {
        return Some(Vec::new());
    }
    let v: Value = serde_json::from_str(&text).ok()?;
    Some(v["loops"].as_array().cloned().unwrap_or_default())
}

fn registry(ws: &Workspace) -> Vec<Value> {
    try_registry(ws).unwrap_or_else(|| {
        panic!(
            "loops.json is not JSON: {:?}",
            std::fs::read_to_string(ws.path.join(".ralph/loops.json"))
        )
    })
}

fn id_of(wt: &Path) -> String {
    wt.file_name().unwrap().to_str().unwrap().to_string()
}

fn json_of(out: &Output) -> Value {
    assert_eq!(out.code(), 0, "{out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{:?}: {e}", out.stdout))
}

/// A policy file outside the repository (an untracked file inside would be carried
/// into the worktree and make it dirty).
fn policy_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, text).unwrap();
    let s = path.to_str().unwrap().to_string();
    (dir, s)
}

/// A primary loop holding the repository, until TERMed or dropped.
fn hold(ws: &Workspace) -> Proc {
    ws.start_probe(&["--prompt", "primary"], &["--exit-on", "TERM"])
}

/// `stop` (its output) stopped worktree loop `id` (a probe that exits on TERM), which
/// cleaned up and left the registry.
fn stopped_by_id(ws: &Workspace, stop: Output, id: &str, mut wt_loop: Proc) {
    assert_eq!(stop.code(), 0, "{stop:?}");
    assert!(
        stop.stdout.starts_with(&format!("stopped {id} in "))
            && stop.stdout.contains("killed by SIGTERM"),
        "{}",
        stop.stdout
    );
    wt_loop.expect_line("cleanup done");
    assert_eq!(wt_loop.finish().code(), 143);
    assert!(
        registry(ws).iter().all(|e| e["id"] != id),
        "deregistered: {:?}",
        registry(ws)
    );
}

fn git_identity(cmd: &mut Command) -> &mut Command {
    cmd.env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
}

fn backdate(path: &Path) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
}

#[test]
fn a_taken_git_workspace_runs_the_second_loop_in_a_worktree() {
    let ws = Workspace::git();
    std::fs::write(ws.path.join(".gitignore"), "target/\n").unwrap();
    ws.git_cmd(&["add", ".gitignore"]);
    ws.git_cmd(&["commit", "-q", "-m", "ignore"]);
    let mut holder = hold(&ws);

    let wt_loop = ws.start_probe(&["--prompt", "fix the parser"], &["--exit-on", "TERM"]);
    let wt = only_worktree(&ws);
    let id = id_of(&wt);
    assert_eq!(wt_loop.value("cwd"), wt.to_str().unwrap());
    assert_eq!(wt_loop.value("workspace_root"), wt.to_str().unwrap());
    assert!(id.starts_with("fix-parser-"), "{id}");
    assert_eq!(ralph_branches(&ws), vec![format!("ralph/{id}")]);
    assert!(git_worktrees(&ws).contains(&wt));
    let exclude = std::fs::read_to_string(ws.path.join(".git/info/exclude")).unwrap();
    assert!(exclude.lines().any(|l| l == "/.worktrees/"), "{exclude}");
    assert_eq!(
        std::fs::read_to_string(ws.path.join(".gitignore")).unwrap(),
        "target/\n"
    );
    assert_eq!(ws.git_cmd(&["status", "--porcelain", ".gitignore"]), "");

    let child: u64 = wt_loop.value("pid").parse().unwrap();
    let lock = wt.join(".ralph/loop.lock");
    // The child holds the worktree's own lock, not the primary's.
    let fd = wt_loop.value("lock_fd");
    assert_eq!(wt_loop.value(&format!("fd {fd}")), lock.to_str().unwrap());
    let mut meta = Value::Null;
    wait_until("the worktree lock to name the child", LIMIT, || {
        meta = serde_json::from_str(&std::fs::read_to_string(&lock).unwrap()).unwrap_or_default();
        meta["pid"] == child
    });
    assert_eq!(meta["mode"], "worktree", "{meta}");
    assert_eq!(meta["loop_id"], id.as_str(), "{meta}");
    assert_eq!(meta["supervisor_pid"], wt_loop.pid().as_raw(), "{meta}");
    // The primary's lock is untouched: it still names the primary's child.
    assert_eq!(ws.metadata()["pid"].to_string(), holder.value("pid"));

    let mut entry = Value::Null;
    wait_until("the loop in loops.json", LIMIT, || {
        entry = registry(&ws)
            .into_iter()
            .find(|e| e["id"] == id.as_str())
            .unwrap_or_default();
        !entry.is_null()
    });
    assert_eq!(entry["pid"], child, "{entry}");
    assert_eq!(entry["worktree_path"], wt.to_str().unwrap(), "{entry}");
    assert!(Path::new(entry["worktree_path"].as_str().unwrap()).is_absolute());

    let status = Proc::spawn({
        let mut c = Command::new(bin());
        c.arg("-C").arg(&wt).arg("status");
        c
    })
    .finish();
    assert_eq!(status.code(), 0, "{status:?}");
    assert!(status.stdout.contains(&id), "{}", status.stdout);

    let list = json_of(&ws.run(&["list", "--json"]));
    let rows = list.as_array().unwrap();
    let row = rows
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(row["mode"], "worktree", "{row}");
    assert_eq!(row["running"], true, "{row}");
    assert_eq!(row["worktree"], wt.to_str().unwrap(), "{row}");
    assert!(
        rows.iter()
            .any(|r| r["mode"] == "primary" && r["running"] == true),
        "{list}"
    );

    // `stop <id>` from the main repository finds the loop through the registry.
    stopped_by_id(
        &ws,
        ws.run(&["stop", &id, "--timeout", "10s"]),
        &id,
        wt_loop,
    );
    assert!(wt.is_dir(), "on_exit = keep leaves the worktree");
    assert_eq!(ralph_branches(&ws), vec![format!("ralph/{id}")]);
    let history = json_of(&ws.run(&["history", "--json"]));
    let record = history
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("no record of {id} in {history}"));
    assert_eq!(record["mode"], "worktree", "{record}");
    assert_eq!(record["worktree"], wt.to_str().unwrap(), "{record}");
    assert_eq!(record["signal"], "SIGTERM", "{record}");
    assert_eq!(record["child_pid"], child, "{record}");

    assert!(ws.lock_held(), "the primary still runs");
    holder.signal(Signal::SIGTERM);
    holder.expect_line("cleanup done");
}

#[test]
fn uncommitted_work_is_carried_into_the_worktree() {
    let ws = Workspace::git();
    for f in ["a.txt", "staged.txt", "gone.txt", "rmd.txt"] {
        std::fs::write(ws.path.join(f), format!("{f} v1\n")).unwrap();
    }
    ws.git_cmd(&["add", "."]);
    ws.git_cmd(&["commit", "-q", "-m", "files"]);
    // Modified, not staged.
    std::fs::write(ws.path.join("a.txt"), "a.txt v2\n").unwrap();
    // Staged v2, then modified again to v3 in the working tree.
    std::fs::write(ws.path.join("staged.txt"), "staged v2\n").unwrap();
    ws.git_cmd(&["add", "staged.txt"]);
    std::fs::write(ws.path.join("staged.txt"), "staged v3\n").unwrap();
    // A new file, staged.
    std::fs::write(ws.path.join("added.txt"), "added\n").unwrap();
    ws.git_cmd(&["add", "added.txt"]);
    // Deleted in the working tree only, and deleted as a staged change.
    std::fs::remove_file(ws.path.join("gone.txt")).unwrap();
    ws.git_cmd(&["rm", "-q", "rmd.txt"]);
    // Untracked: a file, a file in a new directory, a symlink.
    std::fs::write(ws.path.join("new.txt"), "untracked\n").unwrap();
    std::fs::create_dir(ws.path.join("sub")).unwrap();
    std::fs::write(ws.path.join("sub/deep.txt"), "deep\n").unwrap();
    std::os::unix::fs::symlink("a.txt", ws.path.join("link")).unwrap();
    let mut holder = hold(&ws);
    let main_status = ws.git_cmd(&["status", "--porcelain"]);
    let script = r#"
printf 'pwd=%s\n' "$(pwd -P)"
printf 'a=%s\n' "$(cat a.txt)"
printf 'staged=%s\n' "$(cat staged.txt)"
printf 'index=%s\n' "$(git show :staged.txt)"
printf 'added=%s\n' "$(cat added.txt)"
printf 'new=%s\n' "$(cat new.txt)"
printf 'deep=%s\n' "$(cat sub/deep.txt)"
printf 'link=%s\n' "$(readlink link)"
[ -e gone.txt ] && echo gone=present || echo gone=absent
[ -e rmd.txt ] && echo rmd=present || echo rmd=absent
printf 'cached=%s\n' "$(git diff --cached --name-only | tr '\n' ' ')"
"#;
    let out = ws.run(&["run", "--", "sh", "-c", script]);
    assert_eq!(out.code(), 0, "{out:?}");
    let wt = only_worktree(&ws);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let expected = [
        format!("pwd={}", wt.display()),
        "a=a.txt v2".into(),
        "staged=staged v3".into(),
        "index=staged v2".into(),
        "added=added".into(),
        "new=untracked".into(),
        "deep=deep".into(),
        "link=a.txt".into(),
        "gone=absent".into(),
        "rmd=absent".into(),
        "cached=added.txt rmd.txt staged.txt ".into(),
    ];
    assert_eq!(
        lines,
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(
        std::fs::symlink_metadata(wt.join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // The worktree shows the same changes as the main work tree (and nothing of .ralph).
    let wt_status = String::from_utf8(
        Command::new("git")
            .args(["status", "--porcelain"])
            .current_dir(&wt)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let strip_ralph = |s: &str| -> Vec<String> {
        let mut v: Vec<String> = s
            .lines()
            .filter(|l| !l.ends_with(".ralph/"))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    assert_eq!(strip_ralph(&wt_status), strip_ralph(&main_status));
    // The main work tree is untouched.
    assert_eq!(ws.git_cmd(&["status", "--porcelain"]), main_status);
    holder.signal(Signal::SIGTERM);
    holder.expect_line("cleanup done");
}

#[test]
fn remove_if_clean_removes_a_clean_worktree_and_keeps_a_dirty_one() {
    let ws = Workspace::git();
    let (_p, policy) = policy_file("[worktree]\non_exit = \"remove-if-clean\"\n");
    let mut holder = hold(&ws);

    let out = ws.run(&["run", "--policy", &policy, "--", "true"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(worktree_dirs(&ws), Vec::<PathBuf>::new());
    assert_eq!(ralph_branches(&ws), Vec::<String>::new());
    assert_eq!(git_worktrees(&ws), vec![ws.path.clone()]);
    let history = json_of(&ws.run(&["history", "--json"]));
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    assert_eq!(history[0]["mode"], "worktree");

    let out = ws.run(&[
        "run",
        "--policy",
        &policy,
        "--",
        "sh",
        "-c",
        "echo left > left.txt",
    ]);
    assert_eq!(out.code(), 0, "{out:?}");
    let wt = only_worktree(&ws);
    assert_eq!(
        std::fs::read_to_string(wt.join("left.txt")).unwrap(),
        "left\n"
    );
    assert_eq!(ralph_branches(&ws), vec![format!("ralph/{}", id_of(&wt))]);
    holder.signal(Signal::SIGTERM);
    holder.expect_line("cleanup done");
}

#[test]
fn queue_merge_queues_a_successful_loop_with_commits_only() {
    let ws = Workspace::git();
    let (_p, policy) = policy_file("[worktree]\non_exit = \"queue-merge\"\n");
    let queue = ws.path.join(".ralph/merge-queue.jsonl");
    let mut holder = hold(&ws);
    let commit = "echo c > c.txt && git add c.txt && git commit -q -m c";
    let run = |prompt: &str, script: &str| {
        let mut cmd = ws.cmd(&[
            "run", "--policy", &policy, "--prompt", prompt, "--", "sh", "-c", script,
        ]);
        git_identity(&mut cmd);
        Proc::spawn(cmd).finish()
    };

    let out = run("add the c file", commit);
    assert_eq!(out.code(), 0, "{out:?}");
    let wt = only_worktree(&ws);
    let id = id_of(&wt);
    let text = std::fs::read_to_string(&queue).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let event: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(event["loop_id"], id.as_str(), "{event}");
    assert_eq!(event["event"]["type"], "queued", "{event}");
    assert_eq!(event["event"]["prompt"], "add the c file", "{event}");
    let ts = event["ts"].as_str().unwrap();
    chrono::DateTime::parse_from_rfc3339(ts).unwrap();
    assert_eq!(event.as_object().unwrap().len(), 3, "{event}");
    assert!(wt.is_dir(), "queued worktrees stay for the merge");

    // A failing loop with commits, and a successful one without: not queued.
    let out = run("fail after committing", &format!("{commit}; exit 3"));
    assert_eq!(out.code(), 3, "{out:?}");
    let out = run("do nothing", "true");
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(worktree_dirs(&ws).len(), 3);
    assert_eq!(std::fs::read_to_string(&queue).unwrap(), text);
    holder.signal(Signal::SIGTERM);
    holder.expect_line("cleanup done");
}

#[test]
fn a_command_that_does_not_exist_leaves_no_worktree_behind() {
    let ws = Workspace::git();
    let mut holder = hold(&ws);
    let out = ws.run(&["run", "--", "ralph-supervise-no-such-command"]);
    assert_eq!(out.code(), 127, "{out:?}");
    assert!(out.stderr.contains("command not found"), "{}", out.stderr);
    assert_eq!(worktree_dirs(&ws), Vec::<PathBuf>::new());
    assert_eq!(ralph_branches(&ws), Vec::<String>::new());
    assert_eq!(git_worktrees(&ws), vec![ws.path.clone()]);
    assert_eq!(registry(&ws), Vec::<Value>::new());
    holder.signal(Signal::SIGTERM);
    holder.expect_line("cleanup done");
}

#[test]
fn worktree_policy_outside_git_exits_with_the_conflict_code() {
    let ws = Workspace::new();
    let mut holder = hold(&ws);
    let out = ws.run(&["run", "--on-conflict", "worktree", "--", "true"]);
    assert_eq!(out.code(), 75, "{out:?}");
    let err = out.stderr.trim();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is not in a git repository"), "{err}");
    assert!(!ws.path.join(".worktrees").exists());
    holder.signal(Signal::SIGTERM);
    holder.expect_line("cleanup done");
}

#[test]
fn wait_then_worktree_after_the_timeout() {
    let ws = Workspace::git();
    let (_p, policy) = policy_file(
        "[conflict]\npolicy = \"wait\"\nwait_timeout = \"200ms\"\nafter_timeout = \"worktree\"\n",
    );
    let mut holder = hold(&ws);
    let mut waiter = Proc::spawn(ws.cmd(&[
        "run",
        "--policy",
        &policy,
        "--",
        bin(),
        "probe",
        "--exit",
        "0",
    ]));
    waiter.expect_line("ready");
    let wt = only_worktree(&ws);
    assert_eq!(waiter.value("cwd"), wt.to_str().unwrap());
    assert_eq!(waiter.value("workspace_root"), wt.to_str().unwrap());
    let out = waiter.finish();
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stderr.contains("waiting for the lock"),
        "{}",
        out.stderr
    );
    assert!(ws.lock_held(), "the primary was never disturbed");
    holder.signal(Signal::SIGTERM);
    holder.expect_line("cleanup done");
}

#[test]
fn twelve_concurrent_worktree_launches() {
    const N: usize = 12;
    let ws = Workspace::git();
    let mut holder = hold(&ws);
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("gate");
    let gate = gate.to_str().unwrap();
    let mut g = Command::new("flock");
    g.args([gate, "sh", "-c", "echo locked; exec sleep 600"])
        .process_group(0);
    let mut gate_holder = Proc::spawn(g);
    gate_holder.expect_line("locked");

    let loops: Vec<Proc> = (0..N)
        .map(|_| Proc::spawn(ws.cmd(&["run", "--", "flock", "-s", gate, "true"])))
        .collect();
    let mut entries = Vec::new();
    wait_until("12 loops in loops.json", LIMIT, || {
        entries = registry(&ws);
        entries.len() == N
    });
    let ids: BTreeSet<String> = entries
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), N, "{entries:?}");
    for e in &entries {
        let pid = e["pid"].as_i64().unwrap() as i32;
        assert!(alive(pid), "{e}");
        let wt = PathBuf::from(e["worktree_path"].as_str().unwrap());
        assert_eq!(id_of(&wt), e["id"].as_str().unwrap());
    }
    let dirs: BTreeSet<String> = worktree_dirs(&ws).iter().map(|d| id_of(d)).collect();
    assert_eq!(dirs, ids);
    let branches: BTreeSet<String> = ralph_branches(&ws).into_iter().collect();
    let expected: BTreeSet<String> = ids.iter().map(|id| format!("ralph/{id}")).collect();
    assert_eq!(branches, expected);
    assert_eq!(git_worktrees(&ws).len(), N + 1);

    killpg(gate_holder.pid(), Signal::SIGKILL).unwrap();
    for p in loops {
        let out = p.finish();
        assert_eq!(out.code(), 0, "{out:?}");
    }
    assert_eq!(registry(&ws), Vec::<Value>::new());
    holder.signal(Signal::SIGTERM);
    holder.expect_line("cleanup done");
}

#[test]
fn gc_removes_clean_finished_worktrees_and_prunes_dead_entries() {
    let ws = Workspace::git();
    let mut holder = hold(&ws);
    assert_eq!(ws.run(&["run", "--", "true"]).code(), 0);
    let clean = only_worktree(&ws);
    assert_eq!(
        ws.run(&["run", "--", "sh", "-c", "echo x > dirty.txt"])
            .code(),
        0
    );
    let dirty = worktree_dirs(&ws)
        .into_iter()
        .find(|d| *d != clean)
        .unwrap();
    let mut running = ws.start_probe(&[], &["--exit-on", "TERM"]);
    let running_wt = PathBuf::from(running.value("cwd"));
    // Out of the launch grace: judged by what they are, not by their age.
    for wt in [&clean, &dirty, &running_wt] {
        backdate(&wt.join(".ralph/agent/context.md"));
    }
    let child: u64 = running.value("pid").parse().unwrap();
    wait_until("the running loop in loops.json", LIMIT, || {
        registry(&ws).iter().any(|e| e["pid"] == child)
    });
    // A registry entry whose process is gone (a reaped child's pid).
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let dead_pid = gone.id();
    let registry_path = ws.path.join(".ralph/loops.json");
    let mut reg: Value =
        serde_json::from_str(&std::fs::read_to_string(&registry_path).unwrap()).unwrap();
    reg["loops"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "id": "dead-loop-calm-otter",
            "pid": dead_pid,
            "started": "2024-01-01T00:00:00Z",
            "prompt": "dead",
            "worktree_path": ws.path.join(".worktrees/dead-loop-calm-otter"),
            "workspace": ws.path.join(".worktrees/dead-loop-calm-otter"),
        }));
    std::fs::write(&registry_path, serde_json::to_vec_pretty(&reg).unwrap()).unwrap();
    let before_registry = std::fs::read(&registry_path).unwrap();
    let before_branches = ralph_branches(&ws);
    assert_eq!(before_branches.len(), 3);

    let out = ws.run(&["gc", "--dry-run"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let says = |text: &str| {
        assert!(
            out.stdout.lines().any(|l| l == text),
            "{text:?} in {}",
            out.stdout
        )
    };
    says("would prune registry entry dead-loop-calm-otter (its process is gone)");
    says(&format!(
        "would remove {} (finished and clean)",
        clean.display()
    ));
    says(&format!("keep {} (unmerged work)", dirty.display()));
    says(&format!(
        "keep {} (running, or launched in the last 2 minutes)",
        running_wt.display()
    ));
    assert_eq!(out.stdout.lines().count(), 4, "{}", out.stdout);
    // The same from a subdirectory and from inside a worktree loop: gc works on the
    // repository's registry and worktrees wherever in it it runs.
    std::fs::create_dir(ws.path.join("sub")).unwrap();
    for dir in [ws.path.join("sub"), running_wt.clone()] {
        let there = Proc::spawn(ws.cmd_in(&dir, &["gc", "--dry-run"])).finish();
        assert_eq!(there.code(), 0, "{there:?}");
        assert_eq!(there.stdout, out.stdout, "-C {}", dir.display());
    }
    assert_eq!(std::fs::read(&registry_path).unwrap(), before_registry);
    assert_eq!(ralph_branches(&ws), before_branches);
    assert_eq!(worktree_dirs(&ws).len(), 3);

    let out = ws.run(&["gc"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let says = |text: &str| {
        assert!(
            out.stdout.lines().any(|l| l == text),
            "{text:?} in {}",
            out.stdout
        )
    };
    says("prune registry entry dead-loop-calm-otter (its process is gone)");
    says(&format!("remove {} (finished and clean)", clean.display()));
    says(&format!("keep {} (unmerged work)", dirty.display()));
    says(&format!(
        "keep {} (running, or launched in the last 2 minutes)",
        running_wt.display()
    ));
    assert!(!clean.exists());
    assert!(dirty.is_dir() && running_wt.is_dir());
    let branches = ralph_branches(&ws);
    assert_eq!(
        branches,
        before_branches
            .into_iter()
            .filter(|b| *b != format!("ralph/{}", id_of(&clean)))
            .collect::<Vec<_>>()
    );
    assert!(!git_worktrees(&ws).contains(&clean));
    let left: Vec<Value> = registry(&ws);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["pid"], child);

    // Nothing more to do, and the running loop still runs.
    let out = ws.run(&["gc"]);
    assert!(out.stdout.contains("nothing to clean up"), "{}", out.stdout);
    running.signal(Signal::SIGTERM);
    running.expect_line("cleanup done");
    assert_eq!(running.finish().code(), 143);
    holder.signal(Signal::SIGTERM);
    holder.expect_line("cleanup done");
}

#[test]
fn a_corrupt_registry_is_kept_aside_and_the_launch_still_works() {
    let ws = Workspace::git();
    let mut holder = hold(&ws);
    let registry_path = ws.path.join(".ralph/loops.json");
    std::fs::write(&registry_path, b"{not json").unwrap();

    let mut wt_loop = ws.start_probe(&[], &["--exit-on", "TERM"]);
    let wt = only_worktree(&ws);
    assert_eq!(wt_loop.value("cwd"), wt.to_str().unwrap());
    let child: u64 = wt_loop.value("pid").parse().unwrap();
    // Until the launch registers, the corrupt file is still in place.
    wait_until("the loop in the new loops.json", LIMIT, || {
        try_registry(&ws).is_some_and(|r| r.iter().any(|e| e["pid"] == child))
    });
    let entries = registry(&ws);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["id"], id_of(&wt).as_str());
    let copies: Vec<PathBuf> = std::fs::read_dir(ws.path.join(".ralph"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("loops.json.corrupt-")
        })
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(std::fs::read(&copies[0]).unwrap(), b"{not json");

    wt_loop.signal(Signal::SIGTERM);
    wt_loop.expect_line("cleanup done");
    assert_eq!(wt_loop.finish().code(), 143);
    assert_eq!(registry(&ws), Vec::<Value>::new());
    holder.signal(Signal::SIGTERM);
    holder.expect_line("cleanup done");
}

#[test]
fn a_loop_launched_from_inside_a_worktree_loop_goes_to_the_main_repository() {
    let ws = Workspace::git();
    let mut primary = ws.start_probe(&["--prompt", "primary"], &["--exit-on", "TERM"]);
    // A worktree loop, because the primary holds the repository.
    let mut outer = ws.start_probe(&["--prompt", "outer loop"], &["--exit-on", "TERM"]);
    let outer_wt = std::path::PathBuf::from(outer.value("cwd"));
    assert!(
        outer_wt.starts_with(ws.path.join(".worktrees")),
        "{outer_wt:?}"
    );
    std::fs::write(outer_wt.join("from-outer.txt"), "carried\n").unwrap();
    // From inside the outer loop's worktree (which it holds), launch another loop.
    let out = Proc::spawn({
        let mut c = std::process::Command::new(bin());
        c.args([
            "run",
            "--prompt",
            "inner loop",
            "--",
            "sh",
            "-c",
            "pwd; cat from-outer.txt",
        ])
        .current_dir(&outer_wt)
        .stdin(std::process::Stdio::null());
        c
    })
    .finish();
    assert_eq!(out.code(), 0, "{out:?}");
    let mut lines = out.stdout.lines();
    let inner_wt = std::path::PathBuf::from(lines.next().unwrap());
    assert_eq!(
        inner_wt.parent(),
        Some(ws.path.join(".worktrees").as_path()),
        "beside the outer one, not nested in it"
    );
    assert_eq!(
        lines.next(),
        Some("carried"),
        "the outer tree's work came along"
    );
    assert!(!outer_wt.join(".worktrees").exists());
    // Recorded in the main repository's history, like every other loop.
    let history = ws.run(&["history", "--json"]);
    let records: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    assert!(
        records
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["prompt"] == "inner loop" && r["worktree"] == inner_wt.display().to_string()),
        "{records}"
    );
    for p in [&mut outer, &mut primary] {
        p.signal(nix::sys::signal::Signal::SIGTERM);
        p.expect_line("cleanup done");
    }
}

/// `-C` naming a subdirectory: the primary locks `<sub>/.ralph/loop.lock`, but a worktree
/// loop is registered in `<repo>/.ralph/loops.json` (where ralph looks), and `list` and
/// `stop ID` find it there with the same `-C`, from the top, and from a worktree.
#[test]
fn list_and_stop_with_c_naming_a_subdirectory_find_its_worktree_loops() {
    let ws = Workspace::git();
    let sub = ws.path.join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("file"), "tracked\n").unwrap();
    ws.git_cmd(&["add", "sub/file"]);
    ws.git_cmd(&["commit", "-q", "-m", "sub"]);
    let mut primary = ws.start_probe_in(&sub, &["--prompt", "primary"], &["--exit-on", "TERM"]);
    assert!(
        sub.join(".ralph/loop.lock").is_file(),
        "the primary's lock is the subdirectory's"
    );
    let wt_loop = ws.start_probe_in(&sub, &["--prompt", "sub three"], &["--exit-on", "TERM"]);
    let wt = only_worktree(&ws);
    let id = id_of(&wt);
    assert_eq!(wt_loop.value("cwd"), wt.to_str().unwrap());
    wait_until("the loop in the repository's loops.json", LIMIT, || {
        registry(&ws).iter().any(|e| e["id"] == id.as_str())
    });

    let list_in = |dir: &Path| json_of(&Proc::spawn(ws.cmd_in(dir, &["list", "--json"])).finish());
    for dir in [sub.as_path(), ws.path.as_path(), wt.as_path()] {
        let list = list_in(dir);
        let row = list
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id.as_str())
            .unwrap_or_else(|| panic!("-C {} list: no {id} in {list}", dir.display()));
        assert_eq!(row["mode"], "worktree", "{row}");
        assert_eq!(row["running"], true, "{row}");
        assert_eq!(row["worktree"], wt.to_str().unwrap(), "{row}");
    }
    // With `-C sub`, the subdirectory's own primary is listed too.
    let list = list_in(&sub);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|r| r["mode"] == "primary" && r["running"] == true && r["prompt"] == "primary"),
        "{list}"
    );

    let stop = Proc::spawn(ws.cmd_in(&sub, &["stop", &id, "--timeout", "10s"])).finish();
    stopped_by_id(&ws, stop, &id, wt_loop);
    // The primary in the subdirectory was not touched.
    let status = Proc::spawn(ws.cmd_in(&sub, &["status"])).finish();
    assert_eq!(status.code(), 0, "{status:?}");
    primary.signal(Signal::SIGTERM);
    primary.expect_line("cleanup done");
    assert_eq!(primary.finish().code(), 143);
}

/// `ralph loops discard <id>` as ralph does it: the registry entry removed in place
/// under the file's flock, then `git worktree remove --force`.
fn discard_like_ralph(ws: &Workspace, id: &str, wt: &Path) -> std::process::Output {
    use nix::fcntl::{Flock, FlockArg};
    use std::io::{Read, Seek, Write};
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(ws.path.join(".ralph/loops.json"))
        .unwrap();
    let mut locked = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    let mut text = String::new();
    locked.read_to_string(&mut text).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["loops"].as_array_mut().unwrap().retain(|e| e["id"] != id);
    locked.set_len(0).unwrap();
    locked.rewind().unwrap();
    locked
        .write_all(serde_json::to_string_pretty(&v).unwrap().as_bytes())
        .unwrap();
    drop(locked);
    Command::new("git")
        .args(["worktree", "remove", "--force"])
        .arg(wt)
        .current_dir(&ws.path)
        .output()
        .unwrap()
}

/// A worktree removed under a running loop (`ralph loops discard`) means the loop is
/// discarded: it is stopped as a stop request would stop it, nothing is re-created in
/// the directory being deleted (so git's removal succeeds), and the run is recorded.
#[test]
fn discarding_a_running_worktree_loop_stops_it_and_lets_git_remove_the_worktree() {
    let ws = Workspace::git();
    let mut holder = hold(&ws);
    let mut beside = ws.start_probe(&["--prompt", "discard me"], &["--exit-on", "TERM"]);
    let wt = only_worktree(&ws);
    let id = id_of(&wt);
    assert!(registry(&ws).iter().any(|e| e["id"] == id.as_str()));

    let removed = discard_like_ralph(&ws, &id, &wt);
    assert!(
        removed.status.success(),
        "git worktree remove: {}",
        String::from_utf8_lossy(&removed.stderr)
    );
    beside.expect_line("signal SIGTERM");
    beside.expect_line("cleanup done");
    let out = beside.finish();
    assert_eq!(out.code(), 143, "{out:?}");
    assert!(out.stderr.contains("was removed under the loop"), "{out:?}");
    assert!(!wt.exists(), "nothing re-created it");
    assert!(git_worktrees(&ws).iter().all(|p| p != &wt));

    let history = json_of(&ws.run(&["history", "--json"]));
    let record = history
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .expect("the discarded run is recorded");
    assert_eq!(record["stopped_by"], "discarded", "{record}");
    assert_eq!(record["status"], 143, "{record}");

    // The primary was never disturbed; nothing about the loop is left to list.
    assert!(ws.lock_held());
    let list = json_of(&ws.run(&["list", "--json"]));
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|r| r["id"] != id.as_str()),
        "{list}"
    );
    holder.signal(Signal::SIGTERM);
    holder.expect_line("cleanup done");
}

#[test]
fn a_worktree_loop_waiting_to_restart_stays_registered_under_its_supervisor() {
    let ws = Workspace::git();
    let _primary = hold(&ws);
    let mut wt_loop = Proc::spawn(ws.cmd(&[
        "run",
        "--on-conflict",
        "worktree",
        "--restart-exit",
        "75=30m",
        "--",
        "sh",
        "-c",
        "echo started; exit 75",
    ]));
    wt_loop.expect_line("started");
    let sup = wt_loop.pid().as_raw();
    // Once the child has exited and the restart is due later, the metadata says so
    // (the registry named the supervisor already while the worktree was made, so it
    // is no sign of the wait).
    let wt = only_worktree(&ws);
    let status = || {
        let mut cmd = Command::new(bin());
        cmd.arg("-C").arg(&wt).args(["status", "--json"]);
        json_of(&Proc::spawn(cmd).finish())
    };
    wait_until("the metadata to show the coming restart", LIMIT, || {
        status()["next_start"].is_string()
    });
    // While it waits, loops.json names the supervisor (the child is gone; its pid
    // would get the entry pruned, or name a stranger once reused).
    wait_until("loops.json to name the supervisor", LIMIT, || {
        registry(&ws).iter().any(|e| e["pid"] == sup)
    });
    let status = status();
    assert_eq!(status["restarts"], 0, "{status}");
    assert_eq!(status["last_exit"]["status"], 75, "{status}");
    assert!(status["next_start"].is_string(), "{status}");
    // `stop ID` reaches it through the registry and ends the wait.
    let stop = ws.run(&["stop", &id_of(&wt)]);
    assert_eq!(stop.code(), 0, "{stop:?}");
    assert_eq!(wt_loop.finish().code(), 75);
    assert!(!registry(&ws).iter().any(|e| e["pid"] == sup));
}
