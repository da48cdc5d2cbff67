//! `[hooks] on_start` / `on_exit` and `[worktree] copy` / `RALPH_LOOP_INDEX` through the
//! real binary: hooks are real processes (the probe reports what they inherited), and
//! worktree launches run concurrently in a real git repository.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::*;

/// A policy file in its own directory (kept alive by the returned guard).
fn policy_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path.to_str().unwrap().to_string())
}

/// A TOML array of strings.
fn argv(items: &[&str]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| toml::Value::String(s.to_string()).to_string())
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// The `key value` lines of a probe's report file, once it exists.
fn report(path: &Path) -> Vec<String> {
    wait_until(&format!("{}", path.display()), LIMIT, || path.exists());
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn value<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    let prefix = format!("{key} ");
    lines.iter().find_map(|l| l.strip_prefix(&prefix))
}

/// `NAME=value` lines (as `env` prints them) as a map.
fn env_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, String> {
    lines
        .into_iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn hooks_are_told_the_run_and_never_hold_the_lock() {
    let ws = Workspace::git();
    let out_dir = tempfile::tempdir().unwrap();
    let start = out_dir.path().join("start.report");
    let exit_env = out_dir.path().join("exit.env");
    let exit_lock = out_dir.path().join("exit.lock");
    let on_start = argv(&[
        bin(),
        "probe",
        "--exit",
        "0",
        "--report-file",
        start.to_str().unwrap(),
    ]);
    // After the release: the workspace lock is free, and the facts include the end.
    let script = "env | grep -E '^RALPH_(SUPERVISE_|LOOP_INDEX=)' > \"$1\"; \
                  flock -n \"$RALPH_SUPERVISE_WORKSPACE/.ralph/loop.lock\" true && echo free > \"$2\"";
    let on_exit = argv(&[
        "sh",
        "-c",
        script,
        "sh",
        exit_env.to_str().unwrap(),
        exit_lock.to_str().unwrap(),
    ]);
    let (_p, policy) = policy_file(&format!(
        "[hooks]\non_start = {on_start}\non_exit = {on_exit}\ntimeout = \"20s\"\n"
    ));
    // The command sees the hook's report already written: on_start ran before it.
    let check = format!("test -s {} && exit 3; exit 4", start.display());
    let out = ws.run(&["run", "--policy", &policy, "--", "sh", "-c", &check]);
    assert_eq!(out.code(), 3, "{out:?}");

    let start = report(&start);
    // What the test process itself passes on (a CI runner may leak some) is the baseline.
    let mut baseline = Proc::spawn({
        let mut c = std::process::Command::new(bin());
        c.args(["probe", "--exit", "0"])
            .stdin(std::process::Stdio::null());
        c
    });
    baseline.expect_line("ready");
    // No descriptor of the supervisor's (the lock was held then), and a clean mask.
    assert_eq!(
        value(&start, "fds"),
        Some(baseline.value("fds").as_str()),
        "{start:?}"
    );
    assert!(!start.iter().any(|l| l.contains("loop.lock")), "{start:?}");
    assert_eq!(
        value(&start, "sigblk"),
        Some("0000000000000000"),
        "{start:?}"
    );
    assert_eq!(value(&start, "lock_fd"), None, "{start:?}");
    let told = env_lines(start.iter().filter_map(|l| l.strip_prefix("env ")));
    let ws_path = ws.path.to_str().unwrap();
    assert_eq!(told["RALPH_SUPERVISE_WORKSPACE"], ws_path, "{told:?}");
    assert_eq!(told["RALPH_SUPERVISE_BRANCH"], "main", "{told:?}");
    assert!(
        told["RALPH_SUPERVISE_LOOP_ID"].starts_with("ralph-"),
        "{told:?}"
    );
    assert!(!told.contains_key("RALPH_SUPERVISE_WORKTREE"), "{told:?}");
    assert!(
        !told.contains_key("RALPH_SUPERVISE_EXIT_STATUS"),
        "{told:?}"
    );
    assert!(!told.contains_key("RALPH_SUPERVISE_REASON"), "{told:?}");
    assert_eq!(value(&start, "loop_index"), Some("0"), "{start:?}");
    // The hook's output went to stderr, never into the loop's stdout.
    assert!(!out.stdout.contains("ready"), "{out:?}");

    wait_until("the on_exit hook's files", LIMIT, || exit_lock.exists());
    let told_at_exit = env_lines(
        std::fs::read_to_string(&exit_env)
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
    );
    assert_eq!(told_at_exit["RALPH_SUPERVISE_EXIT_STATUS"], "3");
    assert_eq!(told_at_exit["RALPH_SUPERVISE_REASON"], "exit");
    assert_eq!(told_at_exit["RALPH_LOOP_INDEX"], "0");
    assert_eq!(
        told_at_exit["RALPH_SUPERVISE_LOOP_ID"],
        told["RALPH_SUPERVISE_LOOP_ID"]
    );
    // The history has the same loop id.
    let history = std::fs::read_to_string(ws.path.join(".ralph/supervise/runs.jsonl")).unwrap();
    assert!(
        history.contains(&told["RALPH_SUPERVISE_LOOP_ID"]),
        "{history}"
    );
}

#[test]
fn a_failing_or_slow_hook_is_logged_and_changes_no_exit_status() {
    let ws = Workspace::new();
    let pid_dir = tempfile::tempdir().unwrap();
    let pid_file = pid_dir.path().join("sleeper.pid");
    // on_exit leaves a grandchild in its group and outlives the timeout: both are killed.
    let slow = format!("sleep 60 & echo $! > {}; wait", pid_file.display());
    let (_p, policy) = policy_file(&format!(
        "[hooks]\non_start = {}\non_exit = {}\ntimeout = \"500ms\"\n",
        argv(&["sh", "-c", "echo hook-noise; exit 7"]),
        argv(&["sh", "-c", &slow]),
    ));
    let started = Instant::now();
    let out = ws.run(&["run", "--policy", &policy, "--", "sh", "-c", "exit 5"]);
    assert_eq!(out.code(), 5, "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "{out:?}");
    assert!(
        out.stderr
            .contains("hooks.on_start: sh exited with status 7"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("hooks.on_exit: sh ran longer than hooks.timeout (500ms)"),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("hook-noise"), "{out:?}");
    let sleeper: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until("the hook's grandchild to be killed", LIMIT, || {
        !alive(sleeper)
    });

    // A hook that cannot start is a warning too; success stays success.
    let (_q, policy) = policy_file(&format!(
        "[hooks]\non_start = {}\n",
        argv(&["/nonexistent/hook"])
    ));
    let out = ws.run(&["run", "--policy", &policy, "--", "true"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stderr
            .contains("hooks.on_start: cannot start /nonexistent/hook"),
        "{}",
        out.stderr
    );
}

/// A run whose `on_start` hook is stopped: its files, in a directory of their own.
struct StoppedStart {
    _dir: tempfile::TempDir,
    _policy: tempfile::TempDir,
    /// Written by the hook once it runs.
    ready: PathBuf,
    /// Written by the command, were it ever started.
    started: PathBuf,
    /// The `on_exit` hook's environment.
    exit_env: PathBuf,
    policy: String,
}

impl StoppedStart {
    /// `on_start` writes `ready` and then runs until `stop` (a signal's name), or with
    /// `stop` "file" until the workspace's stop file is there; `on_exit` writes its
    /// environment.
    fn new(stop: &str) -> StoppedStart {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let (ready, started, exit_env) = (path("hook.ready"), path("started"), path("exit.env"));
        let ready_arg = ready.to_str().unwrap();
        let on_start = match stop {
            "file" => {
                let wait =
                    "touch \"$1\"; while [ ! -e .ralph/stop-requested ]; do sleep 0.01; done";
                argv(&["sh", "-c", wait, "sh", ready_arg])
            }
            _ => argv(&[bin(), "probe", "--exit-on", stop, "--ready-file", ready_arg]),
        };
        let on_exit = argv(&["sh", "-c", "env > \"$1\"", "sh", exit_env.to_str().unwrap()]);
        let (policy_dir, policy) = policy_file(&format!(
            "[hooks]\non_start = {on_start}\non_exit = {on_exit}\ntimeout = \"20s\"\n"
        ));
        StoppedStart {
            _dir: dir,
            _policy: policy_dir,
            ready,
            started,
            exit_env,
            policy,
        }
    }

    /// `run --policy <it> <opts> -- <a command that writes started>`, its hook running.
    fn run(&self, ws: &Workspace, opts: &[&str]) -> Proc {
        let touch = format!("touch {}", self.started.display());
        let mut args = vec!["run", "--policy", &self.policy];
        args.extend_from_slice(opts);
        args.extend(["--", "sh", "-c", &touch]);
        let p = Proc::spawn(ws.cmd(&args));
        wait_until("the on_start hook to be ready", LIMIT, || {
            self.ready.exists()
        });
        p
    }

    /// The run ended with `code` without starting the command; what `on_exit` was told.
    fn check(&self, out: &Output, code: i32) -> String {
        assert_eq!(out.code(), code, "{out:?}");
        assert!(
            !self.started.exists(),
            "the command ran after the stop: {out:?}"
        );
        wait_until("the on_exit hook", LIMIT, || self.exit_env.exists());
        std::fs::read_to_string(&self.exit_env).unwrap()
    }
}

/// The history's last record.
fn last_record(ws: &Workspace) -> serde_json::Value {
    let history = std::fs::read_to_string(ws.path.join(".ralph/supervise/runs.jsonl")).unwrap();
    serde_json::from_str(history.lines().last().unwrap()).unwrap()
}

#[test]
fn a_stop_during_on_start_reaches_the_hook_and_the_command_never_starts() {
    let ws = Workspace::new();
    let stopped = StoppedStart::new("TERM");
    let p = stopped.run(&ws, &[]);
    p.signal(Signal::SIGTERM);
    let out = p.finish();
    let told = stopped.check(&out, 128 + 15);
    // The hook died of the TERM passed on.
    assert!(out.stderr.contains("hooks.on_start:"), "{out:?}");
    assert!(out.stderr.contains("killed by SIGTERM"), "{out:?}");
    assert!(
        told.contains("RALPH_SUPERVISE_REASON=signal SIGTERM"),
        "{told}"
    );
    assert!(told.contains("RALPH_SUPERVISE_EXIT_STATUS=143"), "{told}");
    assert!(!ws.lock_held(), "{out:?}");
    let record = last_record(&ws);
    assert_eq!(record["stopped_by"], "signal SIGTERM", "{record}");
    assert_eq!(record["status"], 143, "{record}");
    assert_eq!(record["child_pid"], serde_json::Value::Null, "{record}");
}

/// `ralph loops stop` (its stop file) during `on_start`: nobody runs to honour it but
/// the supervisor, which takes it and never starts the command.
#[test]
fn a_stop_file_written_during_on_start_means_the_command_never_starts() {
    let ws = Workspace::new();
    let stopped = StoppedStart::new("file");
    let p = stopped.run(&ws, &[]);
    std::fs::write(ws.path.join(".ralph/stop-requested"), "").unwrap();
    let told = stopped.check(&p.finish(), 128 + 15);
    assert!(
        told.contains("RALPH_SUPERVISE_REASON=stop-request"),
        "{told}"
    );
    assert!(!ws.path.join(".ralph/stop-requested").exists());
    let record = last_record(&ws);
    assert_eq!(record["stopped_by"], "stop-request", "{record}");
    // (No child at all: one started and stopped at once may not get to its `touch`.)
    assert_eq!(record["child_pid"], serde_json::Value::Null, "{record}");
}

/// `ralph-supervise stop` (naming no signal) during `on_start` reaches the hook as the
/// policy's stop signal, as it would reach the command, and ends the run with it.
#[test]
fn a_stop_request_during_on_start_is_the_policys_stop_signal() {
    let ws = Workspace::new();
    let stopped = StoppedStart::new("INT");
    let p = stopped.run(&ws, &["--stop-signal", "INT"]);
    let stop = ws.run(&["stop", "--timeout", "20s"]);
    assert_eq!(stop.code(), 0, "{stop:?}");
    let out = p.finish();
    let told = stopped.check(&out, 128 + 2);
    assert!(out.stderr.contains("killed by SIGINT"), "{out:?}");
    assert!(
        told.contains("RALPH_SUPERVISE_REASON=stop-request"),
        "{told}"
    );
}

/// Ctrl-C during a worktree loop's `on_start`: nothing starts, and the worktree made for
/// it is taken away again, branch and registry entry with it.
#[test]
fn a_stop_during_on_start_leaves_no_worktree() {
    let ws = Workspace::git();
    let stopped = StoppedStart::new("INT");
    let primary = ws.start_probe(&["--prompt", "primary"], &["--exit-on", "TERM"]);
    let branches = ws.git_cmd(&["branch", "--list"]);
    let p = stopped.run(
        &ws,
        &["--on-conflict", "worktree", "--prompt", "never started"],
    );
    p.signal(Signal::SIGINT);
    let told = stopped.check(&p.finish(), 128 + 2);
    assert!(
        told.contains("RALPH_SUPERVISE_REASON=signal SIGINT"),
        "{told}"
    );
    let left: Vec<_> = std::fs::read_dir(ws.path.join(".worktrees"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(ws.git_cmd(&["branch", "--list"]), branches);
    let list = ws.run(&["list", "--json"]);
    assert!(!list.stdout.contains("never-started"), "{list:?}");
    primary.signal(Signal::SIGTERM);
    assert_eq!(primary.finish().code(), 143);
}

#[test]
fn concurrent_worktree_loops_get_the_env_file_and_distinct_indexes() {
    const N: usize = 3;
    let ws = Workspace::git();
    std::fs::write(ws.path.join(".gitignore"), ".env\n.hook-*\n").unwrap();
    ws.git_cmd(&["add", ".gitignore"]);
    ws.git_cmd(&["commit", "-q", "-m", "ignore"]);
    std::fs::write(ws.path.join(".env"), "API_KEY=not-a-real-one\n").unwrap();
    // Each loop's on_start hook records what it was told, in the main workspace.
    let record = "echo \"$RALPH_LOOP_INDEX $RALPH_SUPERVISE_BRANCH $RALPH_SUPERVISE_WORKTREE\" \
                  > \"$RALPH_SUPERVISE_WORKSPACE/.hook-$RALPH_SUPERVISE_LOOP_ID\"";
    let (_p, policy) = policy_file(&format!(
        "[worktree]\ncopy = [\".env\", \"config/*.local.toml\"]\n[hooks]\non_start = {}\n",
        argv(&["sh", "-c", record])
    ));
    let mut primary = ws.start_probe(&["--policy", &policy], &["--exit-on", "TERM"]);
    assert_eq!(primary.value("loop_index"), "0");

    let mut loops: Vec<Proc> = (0..N)
        .map(|_| {
            Proc::spawn(ws.cmd(&[
                "run",
                "--policy",
                &policy,
                "--",
                bin(),
                "probe",
                "--exit-on",
                "TERM",
            ]))
        })
        .collect();
    let mut seen = BTreeMap::new();
    for p in &mut loops {
        p.expect_line("ready");
        let cwd = PathBuf::from(p.value("cwd"));
        let index: u32 = p.value("loop_index").parse().unwrap();
        // The ignored file came along (its absence is a warning, never an error).
        assert_eq!(
            std::fs::read_to_string(cwd.join(".env")).unwrap(),
            "API_KEY=not-a-real-one\n"
        );
        seen.insert(index, cwd);
    }
    let indexes: BTreeSet<u32> = seen.keys().copied().collect();
    assert_eq!(indexes, BTreeSet::from([1, 2, 3]), "{seen:?}");

    // The registry records each index beside its loop, as concurrent launches read them.
    let mut registered = BTreeMap::new();
    wait_until("three loops with indexes in loops.json", LIMIT, || {
        let text = std::fs::read_to_string(ws.path.join(".ralph/loops.json")).unwrap_or_default();
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return false;
        };
        registered = v["loops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let wt = PathBuf::from(e["worktree_path"].as_str().unwrap());
                (e["loop_index"].as_u64().unwrap_or(0) as u32, wt)
            })
            .collect();
        registered.len() == N
    });
    assert_eq!(registered, seen);
    // Each hook was told its loop's index, branch and worktree.
    for (index, wt) in &seen {
        let id = wt.file_name().unwrap().to_str().unwrap();
        let told = std::fs::read_to_string(ws.path.join(format!(".hook-{id}"))).unwrap();
        assert_eq!(
            told.trim_end(),
            format!("{index} ralph/{id} {}", wt.display()),
            "{told}"
        );
    }

    for p in &loops {
        p.signal(Signal::SIGTERM);
    }
    for p in loops {
        let out = p.finish();
        assert_eq!(out.code(), 128 + 15, "{out:?}");
        assert!(
            out.stderr.contains("no untracked or ignored file matches"),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("not-a-real-one"), "{}", out.stderr);
    }
    primary.signal(Signal::SIGTERM);
    primary.expect_line("cleanup done");
}
