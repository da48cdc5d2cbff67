//! Restart rules by exit status (`[restart.exit]`), the restart budget (`max` within
//! `window`), and `status` while the supervisor waits between runs. Gaps between runs
//! are measured on the lines each run prints as it starts; only lower bounds are
//! asserted (speed belongs to the benchmarks).

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::*;

/// `sh -c SCRIPT`: each run appends to `runs`, prints `run N` (N from 0), and exits
/// with `codes[N]` (the last code for later runs); a code of -9 means SIGKILL itself.
fn runs_command(runs: &Path, codes: &[i32]) -> Vec<String> {
    let mut cases = String::new();
    for (n, code) in codes.iter().enumerate() {
        let end = match code {
            -9 => "kill -9 $$".to_string(),
            code => format!("exit {code}"),
        };
        let n = if n + 1 == codes.len() {
            "*".to_string()
        } else {
            n.to_string()
        };
        cases.push_str(&format!("{n}) {end};; "));
    }
    let runs = runs.display();
    let script = format!(
        "n=0; [ -f {runs} ] && n=$(($(wc -l < {runs}))); echo run >> {runs}; echo \"run $n\"; case $n in {cases}esac"
    );
    vec!["sh".into(), "-c".into(), script]
}

/// Starts `run OPTS -- <runs_command>` in `ws`.
fn start(ws: &Workspace, opts: &[&str], codes: &[i32]) -> Proc {
    let command = runs_command(&ws.path.join("runs"), codes);
    let mut args: Vec<&str> = vec!["run"];
    args.extend_from_slice(opts);
    args.push("--");
    args.extend(command.iter().map(String::as_str));
    Proc::spawn(ws.cmd(&args))
}

/// Waits for `run 0` .. `run N-1`; returns the gaps between their starts.
fn gaps(p: &mut Proc, runs: usize) -> Vec<Duration> {
    let mut starts = Vec::new();
    for n in 0..runs {
        p.expect_line(&format!("run {n}"));
        starts.push(Instant::now());
    }
    starts.windows(2).map(|w| w[1] - w[0]).collect()
}

fn policy(ws: &Workspace, text: &str) -> String {
    let path = ws.path.join("policy.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

fn last_history(ws: &Workspace) -> serde_json::Value {
    let h = json(&ws.run(&["history", "--json"]));
    h.as_array().unwrap().last().unwrap().clone()
}

fn ms(gaps: &[Duration]) -> Vec<u128> {
    gaps.iter().map(|g| g.as_millis()).collect()
}

#[test]
fn restart_entry_backs_off_even_over_a_never_policy() {
    let ws = Workspace::new();
    let file = policy(
        &ws,
        "[restart]\npolicy = \"never\"\nbackoff_initial = \"100ms\"\n[restart.exit]\n3 = \"restart\"\n",
    );
    let mut p = start(&ws, &["--policy", &file], &[3, 3, 3, 0]);
    let gaps = gaps(&mut p, 4);
    println!("restart with backoff 100ms: gaps {:?} ms", ms(&gaps));
    let out = p.finish();
    assert_eq!(out.code(), 0, "exit 0 matches no entry: never: {out:?}");
    for (gap, least) in gaps.iter().zip([100, 200, 400]) {
        assert!(*gap >= Duration::from_millis(least), "{gaps:?}");
    }
    assert!(
        out.stderr
            .contains("exit 3 (restart.exit 3 = \"restart\"): restart 3 in 400ms"),
        "{}",
        out.stderr
    );
    assert_eq!(last_history(&ws)["restarts"], 3);
}

#[test]
fn delay_entry_waits_its_fixed_delay_every_time() {
    let ws = Workspace::new();
    let file = policy(
        &ws,
        "[restart]\npolicy = \"on-failure\"\nbackoff_initial = \"10ms\"\n[restart.exit]\n75 = \"300ms\"\n",
    );
    let mut p = start(&ws, &["--policy", &file], &[75, 75, 75, 0]);
    let gaps = gaps(&mut p, 4);
    println!("fixed delay 300ms: gaps {:?} ms", ms(&gaps));
    let out = p.finish();
    assert_eq!(out.code(), 0, "{out:?}");
    for gap in &gaps {
        assert!(*gap >= Duration::from_millis(300), "{gaps:?}");
    }
    assert!(
        out.stderr
            .contains("exit 75 (restart.exit 75 = \"300ms\"): restart 1 in 300ms"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("exit 0 (restart.policy = \"on-failure\"): not restarting"),
        "{}",
        out.stderr
    );
}

#[test]
fn stop_entry_ends_an_always_policy() {
    let ws = Workspace::new();
    // From the command line this time: repeatable --restart-exit.
    let opts = [
        "--restart",
        "always",
        "--restart-delay",
        "10ms",
        "--restart-exit",
        "0=stop",
        "--restart-exit",
        "137=150ms",
    ];
    let mut p = start(&ws, &opts, &[1, -9, 0, 1]);
    let gaps = gaps(&mut p, 3);
    println!("always, 137 = 150ms, 0 = stop: gaps {:?} ms", ms(&gaps));
    let out = p.finish();
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(
        count(
            &out.stdout.lines().map(String::from).collect::<Vec<_>>(),
            "run 3"
        ),
        0
    );
    // Death by SIGKILL matched 137.
    assert!(gaps[1] >= Duration::from_millis(150), "{gaps:?}");
    assert!(
        out.stderr
            .contains("killed by SIGKILL (137) (restart.exit 137 = \"150ms\"): restart 2 in 150ms"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("exit 0 (restart.exit 0 = \"stop\"): not restarting"),
        "{}",
        out.stderr
    );
    let h = last_history(&ws);
    assert_eq!(
        (h["restarts"].as_u64(), h["exit_code"].as_i64()),
        (Some(2), Some(0))
    );
}

#[test]
fn the_window_budget_gives_up_with_one_clear_line() {
    let ws = Workspace::new();
    let opts = [
        "--max-restarts",
        "2",
        "--restart-window",
        "1h",
        "--restart-delay",
        "10ms",
        "--restart-exit",
        "4=restart",
    ];
    let mut p = start(&ws, &opts, &[4]);
    gaps(&mut p, 3);
    let out = p.finish();
    assert_eq!(out.code(), 4, "the child's status: {out:?}");
    let given_up: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("giving up"))
        .collect();
    assert_eq!(given_up.len(), 1, "{}", out.stderr);
    for words in [
        "giving up after 2 restarts within 1h",
        "(restart.max = 2, restart.window = \"1h\")",
        ": exit 4 would restart (restart.exit 4 = \"restart\")",
        "; exiting with status 4",
    ] {
        assert!(
            given_up[0].contains(words),
            "{words:?} not in {}",
            given_up[0]
        );
    }
    assert!(!out.stdout.contains("run 3"), "{out:?}");
    assert_eq!(last_history(&ws)["restarts"], 2);
}

#[test]
fn the_window_slides() {
    let ws = Workspace::new();
    // One restart per 250 ms at most, each 300 ms after the last exit: never two in
    // one window, so five restarts go ahead although max is 1.
    let opts = [
        "--max-restarts",
        "1",
        "--restart-window",
        "250ms",
        "--restart-exit",
        "5=300ms",
    ];
    let mut p = start(&ws, &opts, &[5, 5, 5, 5, 5, 0]);
    let gaps = gaps(&mut p, 6);
    println!("window 250ms, max 1, delay 300ms: gaps {:?} ms", ms(&gaps));
    let out = p.finish();
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(!out.stderr.contains("giving up"), "{}", out.stderr);
    assert_eq!(last_history(&ws)["restarts"], 5);
}

/// Starts a probe that restarts on every status a stop could leave (143, 130, 124).
fn restart_minded_probe(ws: &Workspace, extra: &[&str]) -> Proc {
    let mut opts = vec![
        "--restart",
        "always",
        "--restart-delay",
        "10ms",
        "--restart-exit",
        "143=restart",
        "--restart-exit",
        "130=restart",
        "--restart-exit",
        "124=restart",
    ];
    opts.extend_from_slice(extra);
    ws.start_probe(&opts, &["--exit-on", "TERM", "--exit-on", "INT"])
}

/// The run ended with `code`, once, stopped by `by`: no second run.
fn ended_without_restart(ws: &Workspace, p: Proc, code: i32, by: &str) {
    let out = p.finish();
    assert_eq!(out.code(), code, "{out:?}");
    let lines: Vec<String> = out.stdout.lines().map(String::from).collect();
    assert_eq!(count(&lines, "ready"), 1, "one run only: {lines:?}");
    assert!(!out.stderr.contains("restart"), "{}", out.stderr);
    let h = last_history(ws);
    assert_eq!(h["restarts"], 0);
    assert_eq!(h["stopped_by"], by);
    assert!(!ws.lock_held());
}

#[test]
fn no_restart_after_term() {
    let ws = Workspace::new();
    let mut p = restart_minded_probe(&ws, &[]);
    p.signal(Signal::SIGTERM);
    p.expect_line("cleanup done");
    ended_without_restart(&ws, p, 143, "signal SIGTERM");
}

#[test]
fn no_restart_after_int() {
    let ws = Workspace::new();
    let mut p = restart_minded_probe(&ws, &[]);
    p.signal(Signal::SIGINT);
    p.expect_line("cleanup done");
    ended_without_restart(&ws, p, 130, "signal SIGINT");
}

#[test]
fn no_restart_after_the_stop_command() {
    let ws = Workspace::new();
    let p = restart_minded_probe(&ws, &[]);
    let stop = ws.run(&["stop"]);
    assert_eq!(stop.code(), 0, "{stop:?}");
    assert!(stop.stdout.contains("stopped by stop-request"), "{stop:?}");
    ended_without_restart(&ws, p, 143, "stop-request");
}

#[test]
fn no_restart_after_a_stop_request_file() {
    let ws = Workspace::new();
    let mut p = restart_minded_probe(&ws, &[]);
    std::fs::write(ws.path.join(".ralph/stop-requested"), "").unwrap();
    p.expect_line("cleanup done");
    ended_without_restart(&ws, p, 143, "stop-request");
}

#[test]
fn no_restart_after_max_runtime() {
    let ws = Workspace::new();
    let mut p = restart_minded_probe(&ws, &["--max-runtime", "300ms"]);
    p.expect_line("cleanup done");
    ended_without_restart(&ws, p, 124, "max-runtime");
}

#[test]
fn status_shows_restarts_last_exit_and_next_start_while_waiting() {
    let ws = Workspace::new();
    let opts = ["--restart-exit", "76=50ms", "--restart-exit", "75=30m"];
    let mut p = start(&ws, &opts, &[76, 75, 0]);
    gaps(&mut p, 2);
    // The second run exited 75: the supervisor now waits 30 minutes.
    wait_until("next_start in the lock metadata", LIMIT, || {
        ws.metadata()["next_start"].is_string()
    });
    let t = chrono::Utc::now();
    assert!(ws.lock_held(), "the lock is held while waiting");
    let out = ws.run(&["status", "--json"]);
    assert_eq!(out.code(), 0, "running: {out:?}");
    let v = json(&out);
    assert_eq!(v["restarts"], 1);
    assert_eq!(
        v["last_exit"],
        serde_json::json!({"code": 75, "signal": null, "status": 75, "why": "restart.exit 75 = \"30m\""})
    );
    let next = chrono::DateTime::parse_from_rfc3339(v["next_start"].as_str().unwrap()).unwrap();
    let wait = next.signed_duration_since(t);
    println!("next start {} s after status read it", wait.num_seconds());
    assert!(wait >= chrono::TimeDelta::minutes(29), "{v}");
    // No child runs: the supervisor is the loop's process meanwhile.
    assert_eq!(v["pid"], p.pid().as_raw());
    assert_eq!(v["child_pid"], serde_json::Value::Null);
    let text = ws.run(&["status"]).stdout;
    for row in [
        "  child pid  none (waiting to restart)",
        "  restarts   1",
        "  last exit  exit 75 (restart.exit 75 = \"30m\")",
        "  next start ",
    ] {
        assert!(text.contains(row), "{row:?} not in\n{text}");
    }
    // Waiting costs nothing: the supervisor sleeps in the kernel.
    assert_idle(p.pid().as_raw(), Duration::from_millis(300));
    // A stop during the wait ends the run at once, with the last run's status.
    let t0 = Instant::now();
    let stop = ws.run(&["stop"]);
    assert_eq!(stop.code(), 0, "{stop:?}");
    let out = p.finish();
    println!("stop during the 30m wait took {:?}", t0.elapsed());
    assert_eq!(out.code(), 75, "{out:?}");
    assert!(!out.stdout.contains("run 2"), "{out:?}");
    let h = last_history(&ws);
    assert_eq!(h["restarts"], 1);
    assert_eq!(h["stopped_by"], "stop-request");
}
