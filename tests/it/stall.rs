//! The stall watchdog (`[run] stall_timeout`, `--stall-timeout`) with real processes: an
//! idle child is stopped as stalled (124, `stopped_by: "stall"`), a child that writes
//! files or burns CPU is not, and a stall is a status the restart rules look up.
//!
//! "Not stopped over several timeouts" is observed through the supervisor's own
//! `stall check` debug lines (one per sample): the test waits for enough of them.

use nix::sys::signal::Signal;

use crate::harness::*;

fn last_history(ws: &Workspace) -> serde_json::Value {
    let out = ws.run(&["history", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("history json");
    v.as_array()
        .and_then(|a| a.last())
        .cloned()
        .expect("a record")
}

/// Starts `run -v --stall-timeout 1s [opts] -- sh -c SCRIPT` in `ws`.
fn start_sh(ws: &Workspace, opts: &[&str], script: &str) -> Proc {
    let mut args = vec!["run", "-v", "--stall-timeout", "1s"];
    args.extend_from_slice(opts);
    args.extend(["--", "sh", "-c", script]);
    Proc::spawn(ws.cmd(&args))
}

/// Waits until the supervisor has sampled `n` times.
fn wait_for_checks(p: &Proc, n: usize) {
    wait_until(&format!("{n} stall checks"), LIMIT, || {
        p.stderr().matches("stall check").count() >= n
    });
}

#[test]
fn a_sleeping_child_is_stopped_as_stalled() {
    let ws = Workspace::new();
    let mut p = ws.start_probe(&["--stall-timeout", "1s"], &["--exit-on", "TERM"]);
    p.expect_line("cleanup done");
    let out = p.finish();
    assert_eq!(out.code(), 124, "{out:?}");
    assert!(out.stderr.contains("stalled"), "{}", out.stderr);
    let h = last_history(&ws);
    assert_eq!(h["stopped_by"], "stall");
    assert_eq!(h["status"], 124);
    assert!(!ws.lock_held());
}

#[test]
fn a_child_writing_files_is_not_stopped() {
    let ws = Workspace::new();
    // A write every 200 ms, in a subdirectory made after the watch began.
    let script = "mkdir -p out/deep; while :; do date >> out/deep/log; sleep 0.2; done";
    let p = start_sh(&ws, &[], script);
    // Six samples a second apart: five timeouts.
    wait_for_checks(&p, 7);
    assert!(!p.stderr().contains("stalled"), "{}", p.stderr());
    p.signal(Signal::SIGTERM);
    let out = p.finish();
    assert_eq!(out.code(), 143, "{out:?}");
    assert_eq!(last_history(&ws)["stopped_by"], "signal SIGTERM");
}

#[test]
fn a_child_burning_cpu_is_not_stopped() {
    let ws = Workspace::new();
    let p = start_sh(&ws, &[], "while :; do :; done");
    wait_for_checks(&p, 7);
    assert!(!p.stderr().contains("stalled"), "{}", p.stderr());
    p.signal(Signal::SIGTERM);
    assert_eq!(p.finish().code(), 143);
}

#[test]
fn a_stall_restarts_by_the_restart_rules() {
    let ws = Workspace::new();
    let opts = [
        "--stall-timeout",
        "1s",
        "--restart-exit",
        "124=restart",
        "--restart-delay",
        "10ms",
        "--max-restarts",
        "1",
    ];
    let mut p = ws.start_probe(&opts, &["--exit-on", "TERM"]);
    p.expect_line("cleanup done");
    // Restarted: a second run, which stalls too; then the budget is spent.
    p.expect_line("ready");
    p.expect_line("cleanup done");
    let out = p.finish();
    assert_eq!(out.code(), 124, "{out:?}");
    assert!(out.stderr.contains("stalled (124)"), "{}", out.stderr);
    let h = last_history(&ws);
    assert_eq!(h["restarts"], 1);
    assert_eq!(h["stopped_by"], "stall");
}

#[test]
fn a_stall_without_a_restart_rule_ends_the_run_with_124() {
    let ws = Workspace::new();
    // `always` restarts every status but the one whose rule says "stop".
    let opts = [
        "--stall-timeout",
        "1s",
        "--restart",
        "always",
        "--restart-exit",
        "124=stop",
    ];
    let mut p = ws.start_probe(&opts, &["--exit-on", "TERM"]);
    p.expect_line("cleanup done");
    let out = p.finish();
    assert_eq!(out.code(), 124, "{out:?}");
    let lines: Vec<String> = out.stdout.lines().map(String::from).collect();
    assert_eq!(count(&lines, "ready"), 1, "one run only: {lines:?}");
    let h = last_history(&ws);
    assert_eq!(h["restarts"], 0);
    assert_eq!(h["stopped_by"], "stall");
}

#[test]
fn the_clock_pauses_while_the_job_is_stopped() {
    use std::time::{Duration, Instant};
    let ws = Workspace::new();
    let mut sh = PtyShell::bash(&ws.path);
    sh.send(&format!(
        "{} -C {} run --stall-timeout 4s -- {} probe --exit-on TERM\n",
        bin(),
        ws.path.display(),
        bin()
    ));
    sh.expect("ready");
    sh.send("\x1a");
    sh.expect("Stopped");
    sh.expect(PROMPT);
    // Stopped for longer than the timeout: the time under test, not a handshake.
    let stopped = Instant::now();
    wait_until("6 s with the job stopped", LIMIT, || {
        stopped.elapsed() >= Duration::from_secs(6)
    });
    assert!(ws.lock_held(), "still there, stopped");
    sh.send("fg\n");
    sh.expect("signal SIGCONT");
    let resumed = Instant::now();
    sh.expect("cleanup done");
    let after = resumed.elapsed();
    sh.expect(PROMPT);
    assert_eq!(sh.status_of_last(), 124);
    assert_eq!(last_history(&ws)["stopped_by"], "stall");
    // Had the clock run while stopped, the first check after `fg` would have found 6 s
    // idle and stopped it at once; paused, most of the 4 s were still to go.
    println!("stalled {after:?} after fg");
    assert!(after >= Duration::from_millis(1500), "{after:?}");
}
