//! status, list, stop, wait, history; stop requests, restarts, max runtime, and a lock
//! file deleted under a running loop.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::*;

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// Replaces run-specific values (pids, times, paths) so a JSON shape can be compared.
fn redact(v: &mut serde_json::Value) {
    for key in [
        "pid",
        "child_pid",
        "supervisor_pid",
        "started",
        "age_seconds",
        "id",
        "workspace",
        "lock_holders",
    ] {
        if let Some(x) = v.get_mut(key)
            && !x.is_null()
        {
            *x = serde_json::json!("<redacted>");
        }
    }
}

#[test]
fn status_exit_codes_and_json() {
    let ws = Workspace::new();
    let none = ws.run(&["status"]);
    assert_eq!(none.code(), 3);
    assert_eq!(none.stdout, "not running");

    let p = ws.start_probe(&["--prompt", "write docs"], &["--exit-on", "TERM"]);
    let out = ws.run(&["status", "--json"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let mut v = json(&out);
    assert_eq!(v["child_pid"].to_string(), p.value("pid"));
    assert_eq!(v["supervisor_pid"], p.pid().as_raw());
    assert_eq!(
        v["lock_holders"][0],
        p.pid().as_raw(),
        "the kernel names the supervisor"
    );
    redact(&mut v);
    let expected = serde_json::json!({
        "workspace": "<redacted>",
        "running": true,
        "stale": false,
        "metadata": "valid",
        "lock_holders": "<redacted>",
        "id": "<redacted>",
        "mode": "primary",
        "pid": "<redacted>",
        "pid_namespace": "same",
        "child_pid": "<redacted>",
        "child_alive": true,
        "supervisor_pid": "<redacted>",
        "supervisor_alive": true,
        "started": "<redacted>",
        "age_seconds": "<redacted>",
        "prompt": "write docs",
        "command": [bin(), "probe", "--exit-on", "TERM"],
        "holders": null,
        "worktree": null,
        // Added with [restart.exit]: null until a restart follows a run.
        "restarts": null,
        "last_exit": null,
        "next_start": null,
        // Added with containment: how, and what the loop's processes use now.
        "containment": "<redacted>",
        "usage": "<redacted>",
    });
    assert!(
        ["cgroup", "tree"].contains(&v["containment"].as_str().unwrap()),
        "{v}"
    );
    assert_eq!(v["usage"]["processes"], 1, "{v}");
    assert!(v["usage"]["cpu_ms"].is_u64(), "{v}");
    v["containment"] = serde_json::json!("<redacted>");
    v["usage"] = serde_json::json!("<redacted>");
    assert_eq!(v, expected);
    let text = ws.run(&["status"]);
    assert!(
        text.stdout.starts_with("running: loop ralph-"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("prompt     write docs"),
        "{}",
        text.stdout
    );
    p.signal(Signal::SIGTERM);
    p.finish();
    assert_eq!(ws.run(&["status"]).code(), 3);
}

#[test]
fn stale_metadata_is_not_running_and_truncated_held_lock_is_running() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path.join(".ralph")).unwrap();
    std::fs::write(
        ws.lock_path(),
        r#"{"pid":999999,"started":"2026-01-01T00:00:00Z","prompt":"old"}"#,
    )
    .unwrap();
    let out = ws.run(&["status"]);
    assert_eq!(out.code(), 3);
    assert_eq!(out.stdout, "not running (stale metadata from pid 999999)");
    assert_eq!(json(&ws.run(&["status", "--json"]))["stale"], true);

    let p = ws.start_probe(&[], &["--exit-on", "TERM"]);
    // Someone empties the file while the loop holds the lock.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(ws.lock_path())
        .unwrap();
    let out = ws.run(&["status"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("flock taken by pid {}", p.pid())),
        "{}",
        out.stdout
    );
    p.signal(Signal::SIGTERM);
    p.finish();
}

#[test]
fn list_shows_the_primary() {
    let ws = Workspace::new();
    assert_eq!(ws.run(&["list"]).stdout, "no loops");
    let p = ws.start_probe(&["--prompt", "listed"], &["--exit-on", "TERM"]);
    let out = ws.run(&["list", "--json"]);
    assert_eq!(out.code(), 0);
    let v = json(&out);
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["mode"], "primary");
    assert_eq!(v[0]["running"], true, "{v}");
    assert_eq!(v[0]["prompt"], "listed");
    let table = ws.run(&["list"]).stdout;
    assert!(table.lines().nth(1).unwrap().contains("running"), "{table}");
    p.signal(Signal::SIGTERM);
    p.finish();
}

#[test]
fn stop_a_cooperative_loop() {
    let ws = Workspace::new();
    let mut p = ws.start_probe(&[], &["--exit-on", "TERM"]);
    let id = ws.metadata()["loop_id"].as_str().unwrap().to_string();
    let out = ws.run(&["stop"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stdout.starts_with(&format!("stopped {id} in ")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("killed by SIGTERM"), "{}", out.stdout);
    p.expect_line("cleanup done");
    let lines: Vec<String> = p.finish().stdout.lines().map(String::from).collect();
    assert_eq!(
        count(&lines, "signal SIGTERM"),
        1,
        "one stop, no escalation: {lines:?}"
    );
    assert_eq!(ws.run(&["stop"]).code(), 3, "nothing running any more");
}

#[test]
fn stop_a_loop_that_ignores_term_through_its_supervisor() {
    let ws = Workspace::new();
    let mut p = ws.start_probe(&["--stop-grace", "300ms"], &[]);
    let out = ws.run(&["stop"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("killed by SIGKILL"), "{}", out.stdout);
    assert_eq!(p.wait(LIMIT).code(), Some(137));
}

#[test]
fn stop_times_out_with_124() {
    let ws = Workspace::new();
    let mut p = ws.start_probe(&["--stop-grace", "10m"], &[]);
    let out = ws.run(&["stop", "--timeout", "300ms"]);
    assert_eq!(out.code(), 124, "{out:?}");
    assert!(out.stderr.contains("still running"), "{}", out.stderr);
    assert!(ws.lock_held());
    let killed = ws.run(&["stop", "--kill"]);
    assert_eq!(killed.code(), 0, "{killed:?}");
    assert_eq!(p.wait(LIMIT).code(), Some(137));
    let log = p.stderr();
    assert!(
        log.contains("a stop request with SIGKILL: KILL to every process of the loop"),
        "{log}"
    );
}

#[test]
fn stop_when_the_supervisor_was_killed() {
    let ws = Workspace::new();
    ws.write_policy("[stop]\ngrace = \"300ms\"\n");
    // A child that ignores TERM, orphaned by a SIGKILLed supervisor: stop signals the
    // child's group itself, then escalates after the grace.
    let mut p = ws.start_probe(&[], &[]);
    let child: i32 = p.value("pid").parse().unwrap();
    p.signal(Signal::SIGKILL);
    p.wait(LIMIT);
    assert!(ws.lock_held(), "the orphaned child keeps the lock");
    let out = ws.run(&["stop"]);
    assert_eq!(out.code(), 0, "{out:?}");
    wait_until("the child to die", LIMIT, || !alive(child));
    assert!(!ws.lock_held());
}

#[test]
fn wait_returns_when_free_or_times_out() {
    let ws = Workspace::new();
    assert_eq!(ws.run(&["wait"]).code(), 0, "nothing to wait for");
    let p = ws.start_probe(&[], &["--exit-on", "TERM"]);
    assert_eq!(ws.run(&["wait", "--timeout", "200ms"]).code(), 124);
    let mut waiter = Proc::spawn(ws.cmd(&["wait"]));
    let sup = waiter.pid().as_raw();
    wait_until("wait to block in flock", LIMIT, || asleep_waiting(sup));
    p.signal(Signal::SIGTERM);
    p.finish();
    assert_eq!(waiter.wait(LIMIT).code(), Some(0));
    assert!(!ws.lock_held(), "wait let go of the lock it probed with");
    assert_eq!(
        std::fs::read_to_string(ws.lock_path()).unwrap(),
        "",
        "and wrote nothing"
    );
}

#[test]
fn live_stop_request_stops_gracefully_and_is_removed() {
    let ws = Workspace::new();
    let mut p = ws.start_probe(&[], &["--exit-on", "TERM"]);
    std::fs::write(ws.path.join(".ralph/stop-requested"), "").unwrap();
    p.expect_line("cleanup done");
    assert_eq!(p.finish().code(), 143);
    assert!(!ws.path.join(".ralph/stop-requested").exists());
    let h = json(&ws.run(&["history", "--json"]));
    assert_eq!(h[0]["stopped_by"], "stop-request");
}

#[test]
fn stale_stop_request_is_removed_before_launch() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path.join(".ralph")).unwrap();
    std::fs::write(ws.path.join(".ralph/stop-requested"), "").unwrap();
    let mut p = ws.start_probe(&[], &["--exit-on", "TERM"]);
    assert!(!ws.path.join(".ralph/stop-requested").exists());
    // Still running: it was not stopped by the stale request.
    p.signal(Signal::SIGUSR1);
    p.expect_line("signal SIGUSR1");
    assert!(!p.seen().iter().any(|l| l == "signal SIGTERM"));
    p.signal(Signal::SIGTERM);
    assert_eq!(p.finish().code(), 143);
}

#[test]
fn restarts_hold_the_lock_back_off_and_return_the_last_code() {
    let ws = Workspace::new();
    let runs = ws.path.join("runs");
    let script = format!("echo $$ >> {}; exit 3", runs.display());
    let t0 = Instant::now();
    let mut p = Proc::spawn(ws.cmd(&[
        "run",
        "--restart",
        "on-failure",
        "--max-restarts",
        "3",
        "--restart-delay",
        "100ms",
        "--",
        "sh",
        "-c",
        &script,
    ]));
    // During the first backoff the workspace stays locked.
    wait_until("the first run", LIMIT, || {
        std::fs::read_to_string(&runs).is_ok_and(|t| !t.is_empty())
    });
    assert!(ws.lock_held(), "held across restarts");
    assert_eq!(p.wait(LIMIT).code(), Some(3), "the last run's code");
    let elapsed = t0.elapsed();
    let pids: Vec<String> = std::fs::read_to_string(&runs)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(pids.len(), 4, "1 run + 3 restarts: {pids:?}");
    assert!(
        elapsed >= Duration::from_millis(100 + 200 + 400),
        "backoff doubles: {elapsed:?}"
    );
    let h = json(&ws.run(&["history", "--json"]));
    assert_eq!(h[0]["restarts"], 3);
    assert_eq!(h[0]["exit_code"], 3);
}

#[test]
fn a_stop_ends_restarts() {
    let ws = Workspace::new();
    let mut p = ws.start_probe(
        &["--restart", "always", "--restart-delay", "10ms"],
        &["--exit-on", "TERM"],
    );
    p.signal(Signal::SIGTERM);
    p.expect_line("cleanup done");
    assert_eq!(p.finish().code(), 143);
    let lines = ws.run(&["history", "--json"]);
    assert_eq!(json(&lines)[0]["restarts"], 0);
}

#[test]
fn max_runtime_stops_gracefully_and_exits_124() {
    let ws = Workspace::new();
    let t0 = Instant::now();
    let mut p = ws.start_probe(&["--max-runtime", "300ms"], &["--exit-on", "TERM"]);
    p.expect_line("cleanup done");
    let out = p.finish();
    assert_eq!(out.code(), 124);
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert!(out.stderr.contains("max_runtime reached"), "{}", out.stderr);
    assert_eq!(
        json(&ws.run(&["history", "--json"]))[0]["stopped_by"],
        "max-runtime"
    );
}

/// A command that ignores the stop signal gets KILL after the grace, and the log says so.
#[test]
fn the_kill_after_the_grace_is_logged() {
    let ws = Workspace::new();
    let mut p = ws.start_probe(&["--max-runtime", "200ms", "--stop-grace", "300ms"], &[]);
    p.expect_line("signal SIGTERM");
    let out = p.finish();
    assert_eq!(out.code(), 124, "{out:?}");
    assert!(
        out.stderr
            .contains("did not stop within its stop grace: KILL"),
        "{}",
        out.stderr
    );
}

#[test]
fn deleted_lock_file_is_recreated_and_a_newcomer_refused() {
    let ws = Workspace::new();
    let p = ws.start_probe(&["--prompt", "keep me"], &["--exit-on", "TERM"]);
    std::fs::remove_file(ws.lock_path()).unwrap();
    wait_until("the lock file to be recreated and held", LIMIT, || {
        ws.lock_path().exists() && ws.lock_held()
    });
    wait_until("its metadata to be written", LIMIT, || {
        std::fs::read_to_string(ws.lock_path()).is_ok_and(|t| t.contains("keep me"))
    });
    let newcomer = ws.run(&["run", "--on-conflict", "fail", "--", "true"]);
    assert_eq!(newcomer.code(), 75, "{newcomer:?}");
    assert!(newcomer.stderr.contains("keep me"), "{}", newcomer.stderr);
    p.signal(Signal::SIGTERM);
    let out = p.finish();
    assert!(
        out.stderr.contains("was deleted while the loop holds it"),
        "{}",
        out.stderr
    );
    assert!(!ws.lock_held());
}

#[test]
fn history_appends_from_many_supervisors_never_tear() {
    let ws = Workspace::new();
    // 20 supervisors, one after another through the lock, all appending at the end.
    let procs: Vec<Proc> = (0..20)
        .map(|i| {
            let prompt = format!("run {i} {}", "x".repeat(200));
            Proc::spawn(ws.cmd(&[
                "run",
                "--on-conflict",
                "wait",
                "--prompt",
                &prompt,
                "--",
                "true",
            ]))
        })
        .collect();
    for p in procs {
        assert_eq!(p.finish().code(), 0);
    }
    let text = std::fs::read_to_string(ws.path.join(".ralph/supervise/runs.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}")))
        .collect();
    assert_eq!(records.len(), 20);
    let mut prompts: Vec<String> = records
        .iter()
        .map(|r| {
            r["prompt"]
                .as_str()
                .unwrap()
                .split(' ')
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    prompts.sort();
    prompts.dedup();
    assert_eq!(prompts.len(), 20, "every run recorded once");
    let shown = json(&ws.run(&["history", "--json", "-n", "5"]));
    assert_eq!(shown.as_array().unwrap().len(), 5);
}

#[test]
fn ralph_loops_stop_style_request_reaches_a_waiting_holder_only_once() {
    // A flock(1) holder has no supervisor: `stop` cannot confirm it and says so.
    let ws = Workspace::new();
    let holder = FlockHolder::start(&ws);
    let out = ws.run(&["stop", "--kill"]);
    assert_eq!(out.code(), 125, "{out:?}");
    assert!(out.stderr.contains("refusing to kill"), "{}", out.stderr);
    assert!(
        kill(Pid::from_raw(holder.pid().as_raw()), None).is_ok(),
        "not signalled"
    );
    holder.release();
}

/// Starts a probe that dies of any of `exit_on`, stops it with `stop_args`, and returns
/// the signals the probe reported and the history record's `stopped_by`.
fn stop_with(ws: &Workspace, exit_on: &[&str], stop_args: &[&str]) -> (Vec<String>, String) {
    let mut probe_args = vec![];
    for sig in exit_on {
        probe_args.extend(["--exit-on", sig]);
    }
    let mut p = ws.start_probe(&[], &probe_args);
    let mut args = vec!["stop"];
    args.extend_from_slice(stop_args);
    let out = ws.run(&args);
    assert_eq!(out.code(), 0, "{out:?}");
    p.expect_line("cleanup done");
    let lines: Vec<String> = p
        .finish()
        .stdout
        .lines()
        .filter(|l| l.starts_with("signal "))
        .map(String::from)
        .collect();
    let history = json(&ws.run(&["history", "--json"]));
    let last = history.as_array().unwrap().last().unwrap().clone();
    (
        lines,
        last["stopped_by"].as_str().unwrap_or("null").to_string(),
    )
}

#[test]
fn stop_signal_reaches_the_child_and_the_stop_has_one_name() {
    let ws = Workspace::new();
    for (sig, name) in [("INT", "SIGINT"), ("USR1", "SIGUSR1"), ("TERM", "SIGTERM")] {
        let (signals, stopped_by) = stop_with(&ws, &["INT", "USR1", "TERM"], &["--signal", sig]);
        assert_eq!(
            signals,
            vec![format!("signal {name}")],
            "stop --signal {sig}"
        );
        assert_eq!(stopped_by, "stop-request", "stop --signal {sig}");
    }
}

#[test]
fn stop_without_signal_uses_the_loops_own_stop_signal_and_one_name() {
    let ws = Workspace::new();
    ws.write_policy("[stop]\nsignal = \"INT\"\n");
    // The same stop, repeated: the signal and the name never depend on timing.
    for round in 0..5 {
        let (signals, stopped_by) = stop_with(&ws, &["INT", "TERM"], &[]);
        assert_eq!(signals, vec!["signal SIGINT"], "round {round}");
        assert_eq!(stopped_by, "stop-request", "round {round}");
        assert!(
            !ws.path.join(".ralph/stop-requested").exists(),
            "no request file is left behind"
        );
    }
}

#[test]
fn stop_signal_without_a_supervisor_goes_where_the_supervisor_would_send_it() {
    let ws = Workspace::new();
    ws.write_policy("[stop]\ngrace = \"300ms\"\n");
    let (mut p, sleep, helper_out) = crate::signals::child_with_helpers(&ws, &[], "USR1");
    let helper = crate::signals::helper_pid(&helper_out);
    let child: i32 = p.value("pid").parse().unwrap();
    p.signal(Signal::SIGKILL);
    p.wait(LIMIT);
    assert!(ws.lock_held(), "the orphaned loop keeps the lock");
    let out = ws.run(&["stop", "--signal", "USR1"]);
    assert_eq!(out.code(), 0, "{out:?}");
    wait_until("the child to die", LIMIT, || !alive(child));
    // The helpers were spared USR1 (the child alone gets it) and killed after the grace.
    let lines = std::fs::read_to_string(&helper_out).unwrap();
    assert!(!lines.contains("signal SIGUSR1"), "{lines}");
    wait_until("the helpers to be killed", LIMIT, || {
        !alive(sleep) && !alive(helper)
    });
    assert!(!ws.lock_held());
}

/// An empty selection is not an empty history: `-n 0` does not claim that no runs were
/// recorded, nor does a history whose lines are all unreadable.
#[test]
fn history_tells_an_empty_selection_from_an_empty_history() {
    let ws = Workspace::new();
    let none = ws.run(&["history", "-n", "0"]);
    assert_eq!(none.code(), 0, "{none:?}");
    assert_eq!(none.stdout, "no runs recorded");
    for _ in 0..2 {
        assert_eq!(ws.run(&["run", "--", "true"]).code(), 0);
    }
    let zero = ws.run(&["history", "-n", "0"]);
    assert_eq!(zero.code(), 0, "{zero:?}");
    assert!(!zero.stdout.contains("no runs recorded"), "{zero:?}");
    assert_eq!(zero.stdout, "2 runs recorded; -n 0 shows none");
    assert_eq!(ws.run(&["history", "-n", "1"]).stdout.lines().count(), 2);
    assert_eq!(
        json(&ws.run(&["history", "--json", "-n", "0"])),
        serde_json::json!([])
    );

    let other = Workspace::new();
    std::fs::create_dir_all(other.path.join(".ralph/supervise")).unwrap();
    std::fs::write(
        other.path.join(".ralph/supervise/runs.jsonl"),
        "not json\n{\"torn\n",
    )
    .unwrap();
    let bad = other.run(&["history"]);
    assert_eq!(bad.code(), 0, "{bad:?}");
    assert_eq!(
        bad.stdout,
        "no readable runs recorded (2 unreadable lines skipped)"
    );
}

/// `stop --kill` of a loop whose supervisor lives: the supervisor KILLs the loop itself,
/// so a restart policy restarts nothing and the history names the stop. (A KILL sent
/// past the supervisor was a crash to restart, and the stop timed out.)
#[test]
fn stop_kill_is_carried_out_by_the_supervisor_and_nothing_restarts() {
    let ws = Workspace::new();
    let mut p = ws.start_probe(&["--restart", "always"], &[]);
    let out = ws.run(&["stop", "--kill", "--timeout", "20s"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(p.wait(LIMIT).code(), Some(137));
    let shown = json(&ws.run(&["history", "--json", "-n", "1"]));
    assert_eq!(shown[0]["stopped_by"], "stop-request", "{shown}");
    assert_eq!(shown[0]["restarts"], 0, "{shown}");
}
