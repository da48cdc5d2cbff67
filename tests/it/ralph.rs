//! The real ralph-cli 2.10.1 as the supervised loop: with the lock handed over it runs
//! as the primary in every mode (`-a`, the TUI on a terminal, `--exclusive`,
//! `features.parallel: false`, a worktree's primary), while nobody outside gets the
//! workspace; `ralph loops stop` (with and without `--force`), restarts and a SIGKILLed
//! supervisor behave as the issue says.
//!
//! ralph is found by `RALPH_BIN` or on `PATH` (`.ci/run` installs it into a cache); a
//! machine without it skips these tests with a printed reason, except under CI (`CI`
//! set), where they fail. Its agent is a shell script (`cli.backend: custom`) that
//! counts its iterations in a control directory outside the workspace, blocks on a FIFO
//! gate when told to, and prints the completion promise when the `promise` file exists.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;

use crate::harness::{FlockHolder, LIMIT, PROMPT, Proc, PtyShell, Workspace, alive, wait_until};

/// The ralph binary, or `None` (skip) outside CI.
fn ralph_bin() -> Option<PathBuf> {
    let named = std::env::var_os("RALPH_BIN").filter(|v| !v.is_empty());
    let found = named.map(PathBuf::from).or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join("ralph"))
            .find(|p| p.is_file())
    });
    if let Some(path) = found.filter(|p| p.is_file()) {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "ralph-cli 2.10.1 is not installed (RALPH_BIN or PATH), and CI must run the ralph tests (.ci/run installs it)"
    );
    eprintln!("skipped: ralph-cli 2.10.1 not found (set RALPH_BIN or put ralph on PATH)");
    None
}

/// A git workspace, a control directory with the agent and the config, and ralph.
struct Ralph {
    ws: Workspace,
    ctl: tempfile::TempDir,
    bin: PathBuf,
}

const AGENT: &str = r#"#!/bin/sh
ctl="$(dirname "$0")"
n=$(( $(cat "$ctl/iterations" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$ctl/iterations"
: > "$ctl/started-$n"
if [ -p "$ctl/gate" ]; then read x < "$ctl/gate"; fi
if [ -e "$ctl/promise" ]; then echo LOOP_COMPLETE; else echo "not done yet"; fi
"#;

impl Ralph {
    fn new(parallel: bool) -> Option<Ralph> {
        let bin = ralph_bin()?;
        let ws = Workspace::git();
        let ctl = tempfile::tempdir().unwrap();
        let agent = ctl.path().join("agent.sh");
        std::fs::write(&agent, AGENT).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&agent, mode).unwrap();
        let config = format!(
            "cli:\n  backend: custom\n  command: {}\nevent_loop:\n  max_iterations: 20\nfeatures:\n  parallel: {parallel}\n",
            agent.display()
        );
        std::fs::write(ctl.path().join("ralph.yml"), config).unwrap();
        Some(Ralph { ws, ctl, bin })
    }

    fn ctl(&self, name: &str) -> PathBuf {
        self.ctl.path().join(name)
    }

    /// The agent prints the completion promise from now on.
    fn promise(&self) {
        std::fs::write(self.ctl("promise"), "").unwrap();
    }

    /// Each iteration blocks until [`Self::open_gate`].
    fn gate(&self) {
        nix::unistd::mkfifo(
            &self.ctl("gate"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
    }

    fn open_gate(&self) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.ctl("gate"))
            .unwrap();
        f.write_all(b"go\n").unwrap();
    }

    /// Opens the gate if an agent waits at it (one left over after its ralph was
    /// stopped: ralph starts its agent in a process group of its own).
    fn open_gate_if_waiting(&self) {
        use std::os::unix::fs::OpenOptionsExt;
        let gate = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(self.ctl("gate"));
        if let Ok(mut f) = gate {
            let _ = f.write_all(b"go\n");
        }
    }

    fn wait_iteration(&self, n: u32) {
        let file = self.ctl(&format!("started-{n}"));
        wait_until(&format!("ralph's iteration {n}"), LIMIT, || file.exists());
    }

    /// `ralph run -c <config> -p task <extra>` as argv.
    fn run_argv(&self, extra: &[&str]) -> Vec<String> {
        let mut argv = vec![
            self.bin.display().to_string(),
            "run".into(),
            "-c".into(),
            self.ctl("ralph.yml").display().to_string(),
            "-p".into(),
            "supervised task".into(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv
    }

    /// `ralph-supervise -C ws run <opts> -- ralph run ... <extra>`.
    fn supervise(&self, opts: &[&str], extra: &[&str]) -> Proc {
        let argv = self.run_argv(extra);
        let mut args = vec!["run"];
        args.extend_from_slice(opts);
        args.push("--");
        args.extend(argv.iter().map(String::as_str));
        let mut cmd = self.ws.cmd(&args);
        git_identity(&mut cmd);
        Proc::spawn(cmd)
    }

    /// Runs ralph itself (`loops list`, `loops stop`) in the workspace.
    fn ralph(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).current_dir(&self.ws.path);
        cmd.env_remove("RALPH_WORKSPACE_ROOT");
        cmd.output().unwrap()
    }

    /// ralph's own word on its loops.
    fn loops_list(&self) -> String {
        let out = self.ralph(&["loops", "list"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pid ralph wrote into the lock file itself (no supervisor fields in it).
    fn ralph_pid(&self, dir: &Path) -> i32 {
        let lock = dir.join(".ralph/loop.lock");
        let mut pid = 0;
        wait_until("ralph's own write in the lock file", LIMIT, || {
            let meta = std::fs::read_to_string(&lock)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
            pid = meta
                .filter(|m| m.get("supervisor_pid").is_none())
                .and_then(|m| m["pid"].as_i64())
                .unwrap_or(0) as i32;
            pid != 0
        });
        pid
    }

    /// The supervisor's history records.
    fn history(&self) -> Vec<serde_json::Value> {
        let text =
            std::fs::read_to_string(self.ws.path.join(".ralph/supervise/runs.jsonl")).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn no_worktree(&self) {
        assert!(
            !self.ws.path.join(".worktrees").exists(),
            "ralph made a worktree: it did not run as the primary"
        );
    }

    /// `flock -w 30` on the lock from outside; once it has it, says whether ralph `pid`
    /// is still alive and prints the supervisor's history.
    fn waiter(&self, pid: i32) -> Proc {
        let script = format!(
            "kill -0 {pid} 2>/dev/null && echo ralph still alive; cat .ralph/supervise/runs.jsonl"
        );
        let mut c = Command::new("flock");
        c.args(["-w", "30"])
            .arg(self.ws.lock_path())
            .args(["sh", "-c", &script])
            .current_dir(&self.ws.path);
        Proc::spawn(c)
    }
}

/// ralph commits in its landing: give git an identity whatever the machine has.
fn git_identity(cmd: &mut Command) {
    for (k, v) in [
        ("GIT_AUTHOR_NAME", "t"),
        ("GIT_AUTHOR_EMAIL", "t@example.com"),
        ("GIT_COMMITTER_NAME", "t"),
        ("GIT_COMMITTER_EMAIL", "t@example.com"),
    ] {
        cmd.env(k, v);
    }
}

/// `-a`: primary, seen by `ralph loops list` and `status`, while a blocked waiter and
/// hundreds of probes never get the workspace; the waiter gets it after ralph is gone.
#[test]
fn autonomous_ralph_runs_as_the_primary_and_nobody_else_gets_the_workspace() {
    let Some(r) = Ralph::new(true) else { return };
    r.promise();
    r.gate();
    let sup = r.supervise(&[], &["-a"]);
    r.wait_iteration(1);
    let pid = r.ralph_pid(&r.ws.path);
    r.no_worktree();
    let list = r.loops_list();
    assert!(
        list.lines()
            .any(|l| l.contains("(primary)") && l.contains("running")),
        "{list}"
    );
    let status = r.ws.run(&["status", "--json"]);
    assert_eq!(status.code(), 0, "{}", status.stderr);
    assert!(status.stdout.contains("\"primary\""), "{}", status.stdout);
    let wait = r.waiter(pid);
    for _ in 0..200 {
        assert!(r.ws.lock_held(), "a probe got the workspace");
    }
    let fail = r.ws.run(&["run", "--on-conflict", "fail", "--", "true"]);
    assert_eq!(fail.code(), 75, "{}", fail.stderr);
    r.open_gate();
    let out = sup.finish();
    assert_eq!(out.code(), 0, "{}\n{}", out.stdout, out.stderr);
    assert!(!out.stderr.contains("ENOSYS"), "{}", out.stderr);
    r.no_worktree();
    let w = wait.finish();
    assert_eq!(w.code(), 0, "{}", w.stderr);
    assert!(!w.stdout.contains("ralph still alive"), "{}", w.stdout);
    assert!(w.stdout.contains("\"exit_code\":0"), "{}", w.stdout);
}

#[test]
fn exclusive_ralph_runs_as_the_primary() {
    let Some(r) = Ralph::new(true) else { return };
    r.promise();
    let out = r.supervise(&[], &["-a", "--exclusive"]).finish();
    assert_eq!(out.code(), 0, "{}\n{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains("waiting for lock"), "{}", out.stdout);
    r.no_worktree();
    assert_eq!(r.history()[0]["mode"], "primary");
}

#[test]
fn ralph_without_parallel_loops_runs_as_the_primary() {
    let Some(r) = Ralph::new(false) else { return };
    r.promise();
    let out = r.supervise(&[], &["-a"]).finish();
    assert_eq!(out.code(), 0, "{}\n{}", out.stdout, out.stderr);
    assert!(!out.stderr.contains("Another loop"), "{}", out.stderr);
    r.no_worktree();
}

/// The TUI on a real terminal (its loop runs in a subprocess that takes the lock), and
/// Ctrl-C ends it and frees the workspace.
#[test]
fn ralph_tui_on_a_terminal_runs_as_the_primary_and_ctrl_c_ends_it() {
    let Some(r) = Ralph::new(true) else { return };
    r.gate();
    let mut sh = PtyShell::bash(&r.ws.path);
    let argv = r.run_argv(&[]);
    let line = format!(
        "GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.com GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@example.com {} run -- {}\n",
        crate::harness::bin(),
        argv.iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    sh.send(&line);
    r.wait_iteration(1);
    let pid = r.ralph_pid(&r.ws.path);
    assert!(alive(pid));
    // The TUI runs its loop in a subprocess: a descendant of the child took the lock.
    let sidecar = std::fs::read_to_string(r.ws.path.join(".ralph/supervise/loop.json")).unwrap();
    let child: serde_json::Value = serde_json::from_str(&sidecar).unwrap();
    assert_ne!(child["child_pid"].as_i64(), Some(pid as i64), "{sidecar}");
    r.no_worktree();
    assert!(r.ws.lock_held());
    // Ctrl-C reaches ralph's process group (the agent blocked in its gate too) and
    // ends the loop, as it would unsupervised.
    sh.send("\x03");
    sh.expect(PROMPT);
    let rc = sh.status_of_last();
    assert!(rc == 1 || rc == 130, "exit {rc}: {}", sh.screen());
    wait_until("the workspace to be free", LIMIT, || !r.ws.lock_held());
    r.no_worktree();
}

/// `--on-conflict worktree`: ralph is the primary of the new worktree's own lock.
#[test]
fn ralph_in_a_supervised_worktree_is_that_worktrees_primary() {
    let Some(r) = Ralph::new(true) else { return };
    r.promise();
    r.gate();
    let holder = FlockHolder::start(&r.ws);
    let sup = r.supervise(&["--on-conflict", "worktree"], &["-a"]);
    r.wait_iteration(1);
    let trees: Vec<_> = std::fs::read_dir(r.ws.path.join(".worktrees"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(trees.len(), 1, "{trees:?}");
    let wt = &trees[0];
    let pid = r.ralph_pid(wt);
    assert!(alive(pid));
    assert!(
        !wt.join(".worktrees").exists(),
        "ralph made its own worktree"
    );
    r.open_gate();
    let out = sup.finish();
    assert_eq!(out.code(), 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(r.history()[0]["mode"], "worktree");
    holder.release();
}

/// `ralph loops stop`: the file is ralph's; it stops at its iteration boundary
/// ("Manually stopped", exit 1, passed through); recorded `stop-request`, no restart.
#[test]
fn ralph_loops_stop_is_honoured_by_ralph_and_never_restarted() {
    let Some(r) = Ralph::new(true) else { return };
    r.gate();
    let sup = r.supervise(&["--restart", "always", "--restart-delay", "50ms"], &["-a"]);
    r.wait_iteration(1);
    let stop = r.ralph(&["loops", "stop"]);
    assert!(stop.status.success(), "{stop:?}");
    r.open_gate();
    let out = sup.finish();
    assert_eq!(out.code(), 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("Manually stopped"), "{}", out.stdout);
    let record = &r.history()[0];
    assert_eq!(record["stopped_by"], "stop-request", "{record}");
    assert_eq!(record["restarts"], 0, "{record}");
    assert!(!r.ctl("started-2").exists(), "ralph ran another iteration");
    assert!(!r.ws.path.join(".ralph/stop-requested").exists());
}

/// `ralph loops stop --force` SIGKILLs ralph: a kill from outside, which the restart
/// rules handle; the restarted ralph takes the lock through the supervisor again.
#[test]
fn ralph_loops_stop_force_follows_the_restart_rules() {
    let Some(r) = Ralph::new(true) else { return };
    r.gate();
    let opts = [
        "--restart",
        "on-failure",
        "--max-restarts",
        "1",
        "--restart-delay",
        "50ms",
    ];
    let sup = r.supervise(&opts, &["-a"]);
    r.wait_iteration(1);
    let first = r.ralph_pid(&r.ws.path);
    let stop = r.ralph(&["loops", "stop", "--force"]);
    assert!(stop.status.success(), "{stop:?}");
    wait_until("ralph killed", LIMIT, || !alive(first));
    r.promise();
    r.wait_iteration(2);
    r.open_gate();
    let out = sup.finish();
    assert_eq!(out.code(), 0, "{}\n{}", out.stdout, out.stderr);
    let record = &r.history()[0];
    assert_eq!(record["restarts"], 1, "{record}");
    r.no_worktree();
}

/// Restarts keep the lock: a waiter blocked from the first run gets it only after the
/// last run's ralph is gone.
#[test]
fn restarted_ralph_keeps_the_workspace_from_a_waiter() {
    let Some(r) = Ralph::new(true) else { return };
    r.promise();
    r.gate();
    let opts = [
        "--restart",
        "always",
        "--max-restarts",
        "1",
        "--restart-delay",
        "50ms",
    ];
    let sup = r.supervise(&opts, &["-a"]);
    r.wait_iteration(1);
    let wait = r.waiter(r.ralph_pid(&r.ws.path));
    r.open_gate();
    r.wait_iteration(2);
    let second = r.ralph_pid(&r.ws.path);
    assert!(r.ws.lock_held());
    r.no_worktree();
    r.open_gate();
    let out = sup.finish();
    assert_eq!(out.code(), 0, "{}\n{}", out.stdout, out.stderr);
    let w = wait.finish();
    assert_eq!(w.code(), 0, "{}", w.stderr);
    assert!(!alive(second));
    assert!(w.stdout.contains("\"restarts\":1"), "{}", w.stdout);
}

/// SIGKILL of the supervisor mid-run: ralph finishes as it would unsupervised (its
/// history and registry flocks still work), and the lock is held until it exits.
#[test]
fn ralph_finishes_after_its_supervisor_is_killed() {
    let Some(r) = Ralph::new(true) else { return };
    r.promise();
    r.gate();
    let mut sup = r.supervise(&[], &["-a"]);
    r.wait_iteration(1);
    let pid = r.ralph_pid(&r.ws.path);
    sup.signal(Signal::SIGKILL);
    sup.wait(LIMIT);
    assert!(r.ws.lock_held());
    r.open_gate();
    wait_until("ralph to finish", LIMIT, || !alive(pid));
    let out = sup.finish();
    assert!(out.stdout.contains("Completion promise"), "{}", out.stdout);
    for failure in ["ENOSYS", "Failed to record", "flock failed"] {
        assert!(!out.stdout.contains(failure), "{}", out.stdout);
        assert!(!out.stderr.contains(failure), "{}", out.stderr);
    }
    wait_until("the workspace to be free", LIMIT, || !r.ws.lock_held());
    r.no_worktree();
}

/// The supervisor's own stop (`ralph-supervise stop`) works as before: ralph gets the
/// stop signal, and the run is recorded as a stop request, not restarted.
#[test]
fn ralph_supervise_stop_stops_a_supervised_ralph() {
    let Some(r) = Ralph::new(true) else { return };
    r.gate();
    let sup = r.supervise(&["--restart", "always"], &["-a"]);
    r.wait_iteration(1);
    let pid = r.ralph_pid(&r.ws.path);
    let stop = r.ws.run(&["stop", "--timeout", "15s"]);
    assert_eq!(stop.code(), 0, "{}\n{}", stop.stdout, stop.stderr);
    r.open_gate_if_waiting();
    let out = sup.finish();
    assert!(!alive(pid));
    assert_ne!(out.status.code(), Some(0), "{}", out.stderr);
    let record = &r.history()[0];
    assert_eq!(record["stopped_by"], "stop-request", "{record}");
    assert_eq!(record["restarts"], 0, "{record}");
    assert!(!r.ws.lock_held());
}

/// Started from a subdirectory: ralph 2.10.1's `run` takes its working directory as its
/// workspace (over `RALPH_WORKSPACE_ROOT`), so without `-C` the supervisor says that it
/// will lock a file of its own there; with `-C` it starts in the workspace and locks the
/// very file the supervisor holds.
#[test]
fn ralph_started_in_a_subdirectory() {
    let Some(r) = Ralph::new(true) else { return };
    r.promise();
    let sub = r.ws.path.join("src/deep");
    std::fs::create_dir_all(&sub).unwrap();
    let run = |dash_c: bool| {
        let mut cmd = Command::new(crate::harness::bin());
        if dash_c {
            cmd.arg("-C").arg(&r.ws.path);
        }
        cmd.arg("run")
            .arg("--")
            .args(r.run_argv(&["-a"]))
            .current_dir(&sub)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null());
        git_identity(&mut cmd);
        Proc::spawn(cmd).finish()
    };
    let out = run(false);
    assert_eq!(out.code(), 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("takes its working directory") && out.stderr.contains("-C"),
        "{}",
        out.stderr
    );
    r.gate();
    let mut cmd_done = None;
    std::thread::scope(|s| {
        let h = s.spawn(|| run(true));
        r.wait_iteration(2);
        let pid = r.ralph_pid(&r.ws.path);
        assert!(alive(pid));
        r.open_gate();
        cmd_done = Some(h.join().unwrap());
    });
    let out = cmd_done.unwrap();
    assert_eq!(out.code(), 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        !out.stderr.contains("takes its working directory"),
        "{}",
        out.stderr
    );
    r.no_worktree();
}

/// A worktree loop ralph started itself (the primary is ralph's own too) holds no lock
/// in its worktree: ralph judges it by its registry entry (pid alive, directory there).
/// `gc` keeps it, also once past the launch grace; `list` shows it running; `stop ID`
/// stops it as `ralph loops stop` does (the stop request in its worktree, honoured at
/// its next iteration) and reports it.
#[test]
fn native_ralph_worktree_loops_are_running_for_gc_list_and_stop() {
    let Some(r) = Ralph::new(true) else { return };
    // ralph's state and the worktrees ignored: a finished worktree would be clean.
    std::fs::write(r.ws.path.join(".gitignore"), ".ralph/\n.worktrees/\n").unwrap();
    r.ws.git_cmd(&["add", ".gitignore"]);
    r.ws.git_cmd(&["commit", "-q", "-m", "ignore"]);
    r.gate();
    let native = |prompt: &str| {
        let mut cmd = Command::new(&r.bin);
        cmd.args(["run", "-a", "-c"])
            .arg(r.ctl("ralph.yml"))
            .args(["-p", prompt])
            .current_dir(&r.ws.path)
            .env_remove("RALPH_WORKSPACE_ROOT")
            .stdin(std::process::Stdio::null());
        git_identity(&mut cmd);
        Proc::spawn(cmd)
    };
    let mut primary = native("native primary");
    r.wait_iteration(1);
    let mut second = native("native worktree");
    r.wait_iteration(2);
    let registry = r.ws.path.join(".ralph/loops.json");
    let mut entry = serde_json::Value::Null;
    wait_until("the worktree loop in ralph's registry", LIMIT, || {
        let loops: serde_json::Value = std::fs::read_to_string(&registry)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        if let Some(e) = loops["loops"].as_array().into_iter().flatten().find(|e| {
            e["worktree_path"].as_str().is_some()
                && e["pid"].as_i64() == Some(second.pid().as_raw().into())
        }) {
            entry = e.clone();
        }
        !entry.is_null()
    });
    let id = entry["id"].as_str().unwrap().to_string();
    let wt = PathBuf::from(entry["worktree_path"].as_str().unwrap());
    // Past the launch grace: only the registry says it runs.
    let context = std::fs::File::options()
        .write(true)
        .open(wt.join(".ralph/agent/context.md"))
        .unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(180);
    context.set_modified(old).unwrap();
    drop(context);

    let gc = r.ws.run(&["gc"]);
    assert_eq!(gc.code(), 0, "{}\n{}", gc.stdout, gc.stderr);
    assert!(
        wt.is_dir(),
        "gc removed a running loop's worktree: {}",
        gc.stdout
    );
    let kept = format!("keep {} (running", wt.display());
    assert!(gc.stdout.contains(&kept), "{}", gc.stdout);
    let list = r.ws.run(&["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed: {rows}"));
    assert_eq!(row["running"], true, "{row}");
    assert!(
        r.loops_list()
            .lines()
            .any(|l| l.contains(&id) && l.contains("running"))
    );

    let stop = Proc::spawn(r.ws.cmd(&["stop", &id, "--timeout", "15s"]));
    let request = wt.join(".ralph/stop-requested");
    wait_until("the stop request in the worktree", LIMIT, || {
        request.exists()
    });
    // The agents finish their iteration; the worktree loop then honours the request.
    r.open_gate();
    let out = stop.finish();
    assert_eq!(out.code(), 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!("stopped {id}")),
        "{}",
        out.stdout
    );
    assert!(second.wait(LIMIT).code().is_some());
    assert!(!alive(second.pid().as_raw()));
    // The primary is left running: ralph's own, stopped here by ralph's own means.
    assert!(alive(primary.pid().as_raw()));
    primary.signal(Signal::SIGTERM);
    r.open_gate_if_waiting();
    primary.wait(LIMIT);
}
