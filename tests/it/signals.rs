//! Signals sent to the supervisor: forwarded once each, stops with grace and escalation,
//! and a clean signal state for the child whatever the supervisor inherited.

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::*;

#[test]
fn each_forwarded_signal_reaches_the_child_exactly_once() {
    let ws = Workspace::new();
    let mut p = ws.start_probe(&[], &["--exit-on", "INT"]);
    for sig in [
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        p.signal(sig);
        p.expect_line(&format!("signal {}", sig.as_str()));
    }
    // A stray signal is neither fatal nor forwarded.
    p.signal(Signal::SIGALRM);
    p.signal(Signal::SIGINT);
    p.expect_line("cleanup done");
    let out = p.finish();
    assert_eq!(out.code(), 128 + 2);
    let lines: Vec<String> = out.stdout.lines().map(String::from).collect();
    for name in [
        "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGINT",
    ] {
        assert_eq!(
            count(&lines, &format!("signal {name}")),
            1,
            "{name}: {lines:?}"
        );
    }
    assert_eq!(count(&lines, "signal SIGALRM"), 0, "ALRM is not forwarded");
    assert!(out.stderr.contains("ignoring SIGALRM"), "{}", out.stderr);
}

#[test]
fn term_is_forwarded_once_and_the_child_decides() {
    let ws = Workspace::new();
    let mut p = ws.start_probe(&[], &["--exit-on", "TERM"]);
    p.signal(Signal::SIGTERM);
    p.expect_line("cleanup done");
    let out = p.finish();
    assert_eq!(out.code(), 143);
    let lines: Vec<String> = out.stdout.lines().map(String::from).collect();
    assert_eq!(count(&lines, "signal SIGTERM"), 1);
}

#[test]
fn stray_signals_do_not_kill_the_supervisor() {
    let ws = Workspace::new();
    let mut p = ws.start_probe(&[], &["--exit-on", "TERM"]);
    for sig in [
        Signal::SIGALRM,
        Signal::SIGPIPE,
        Signal::SIGVTALRM,
        Signal::SIGPROF,
        Signal::SIGXCPU,
        Signal::SIGURG,
        Signal::SIGIO,
        Signal::SIGPWR,
    ] {
        p.signal(sig);
    }
    let rt = libc::SIGRTMIN() + 4;
    Command::new("kill")
        .arg(format!("-{rt}"))
        .arg(p.pid().to_string())
        .status()
        .unwrap();
    // Still alive and still forwarding.
    p.signal(Signal::SIGUSR1);
    p.expect_line("signal SIGUSR1");
    p.signal(Signal::SIGTERM);
    let out = p.finish();
    assert_eq!(out.code(), 143, "{out:?}");
    assert!(out.stderr.contains("ignoring SIGRTMIN+4"), "{}", out.stderr);
}

#[test]
fn stop_grace_then_kill() {
    let ws = Workspace::new();
    // The probe reports TERM but does not exit on it.
    let mut p = ws.start_probe(&["--stop-grace", "1s"], &[]);
    let t0 = Instant::now();
    p.signal(Signal::SIGTERM);
    p.expect_line("signal SIGTERM");
    let status = p.wait(LIMIT);
    let waited = t0.elapsed();
    assert_eq!(status.code(), Some(128 + 9));
    assert!(
        waited >= Duration::from_secs(1),
        "KILL never comes before the grace: {waited:?}"
    );
}

#[test]
fn second_stop_signal_escalates_at_once() {
    let ws = Workspace::new();
    let mut p = ws.start_probe(&["--stop-grace", "10m"], &[]);
    p.signal(Signal::SIGINT);
    p.expect_line("signal SIGINT");
    p.signal(Signal::SIGTERM);
    // With a 10-minute grace, exiting at all proves the escalation.
    assert_eq!(p.wait(LIMIT).code(), Some(128 + 9));
    // And the log says what escalated, not a grace that never ran out.
    let log = p.stderr();
    assert!(
        log.contains("a second stop signal (SIGTERM): KILL to every process of the loop"),
        "{log}"
    );
    assert!(!log.contains("stop grace"), "{log}");
}

/// Starts the supervisor from python with SIGCHLD ignored and INT/TERM blocked — the
/// state a careless parent can leave behind.
fn hostile_parent(ws: &Workspace, args: &[&str]) -> Command {
    let mut argv = vec![
        bin().to_string(),
        "-C".into(),
        ws.path.display().to_string(),
    ];
    argv.extend(args.iter().map(|s| s.to_string()));
    let script = "import os, signal, sys\n\
signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n\
signal.signal(signal.SIGQUIT, signal.SIG_IGN)\n\
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})\n\
os.execv(sys.argv[1], sys.argv[1:])\n";
    let mut c = Command::new("python3");
    c.arg("-c").arg(script).args(&argv);
    c
}

#[test]
fn sigchld_ignored_and_blocked_mask_do_not_leak_into_the_child() {
    let ws = Workspace::new();
    let out = Proc::spawn(hostile_parent(
        &ws,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "grep -E '^Sig(Blk|Ign)' /proc/self/status; exit 9",
        ],
    ))
    .finish();
    assert_eq!(
        out.code(),
        9,
        "the exit status survives SIGCHLD ignored: {out:?}"
    );
    assert!(
        out.stdout.contains("SigBlk:\t0000000000000000"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("SigIgn:\t0000000000000000"),
        "{}",
        out.stdout
    );
}

#[test]
fn signals_work_when_started_with_them_blocked() {
    let ws = Workspace::new();
    let mut cmd = hostile_parent(&ws, &["run", "--", bin(), "probe", "--exit-on", "TERM"]);
    cmd.stdin(std::process::Stdio::null());
    let mut p = Proc::spawn(cmd);
    p.expect_line("ready");
    assert_eq!(p.value("sigblk"), "0000000000000000");
    p.signal(Signal::SIGTERM);
    p.expect_line("cleanup done");
    assert_eq!(p.finish().code(), 143);
}

/// `run -- sh -c ...`: a `sleep` and a second probe (writing to `helper.out`) in the
/// background, then the probe as the child itself. Returns the supervisor, the sleep's
/// pid and the helper's output file, once child and helper are ready.
/// The child dies of `exit_on`.
pub(crate) fn child_with_helpers(
    ws: &Workspace,
    run_opts: &[&str],
    exit_on: &str,
) -> (Proc, i32, std::path::PathBuf) {
    let helper_out = ws.path.join("helper.out");
    let script = format!(
        "sleep 600 & echo \"sleep $!\"; {bin} probe > {out} & exec {bin} probe --exit-on {exit_on}",
        bin = bin(),
        out = helper_out.display()
    );
    let mut args = vec!["run"];
    args.extend_from_slice(run_opts);
    args.extend(["--", "sh", "-c", &script]);
    let mut p = Proc::spawn(ws.cmd(&args));
    p.expect_line("ready");
    let sleep: i32 = p.value("sleep").parse().unwrap();
    wait_until("the helper probe to be ready", LIMIT, || {
        std::fs::read_to_string(&helper_out).is_ok_and(|t| t.lines().any(|l| l == "ready"))
    });
    (p, sleep, helper_out)
}

pub(crate) fn helper_pid(helper_out: &std::path::Path) -> i32 {
    std::fs::read_to_string(helper_out)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .and_then(|p| p.parse().ok())
        .expect("the helper's pid line")
}

#[test]
fn usr1_and_usr2_reach_the_child_alone_and_spare_its_helpers() {
    let ws = Workspace::new();
    let (mut p, sleep, helper_out) = child_with_helpers(&ws, &[], "TERM");
    let helper = helper_pid(&helper_out);
    p.signal(Signal::SIGUSR1);
    p.expect_line("signal SIGUSR1");
    p.signal(Signal::SIGUSR2);
    p.expect_line("signal SIGUSR2");
    // WINCH still goes to the whole group, after USR1 and USR2: once the helper reports
    // it, it would have reported them too, had they been sent to it.
    p.signal(Signal::SIGWINCH);
    p.expect_line("signal SIGWINCH");
    let helper_lines = || std::fs::read_to_string(&helper_out).unwrap();
    wait_until("the helper to report WINCH", LIMIT, || {
        helper_lines().contains("signal SIGWINCH")
    });
    let lines = helper_lines();
    assert!(!lines.contains("signal SIGUSR1"), "{lines}");
    assert!(!lines.contains("signal SIGUSR2"), "{lines}");
    assert!(
        alive(sleep),
        "a sleep in the child's group survives USR1/USR2"
    );
    assert!(alive(helper));
    p.signal(Signal::SIGTERM);
    p.expect_line("cleanup done");
    assert_eq!(p.finish().code(), 143);
    wait_until("the helpers to be drained", LIMIT, || {
        !alive(sleep) && !alive(helper)
    });
}

/// A storm of signals at the supervisor while it starts its command again and again
/// (each start a `clone3` that suspends the supervisor until the child has exec'd, see
/// `sys/spawn.rs`): forwarded ones (WINCH, which the command ignores), a stray one
/// (URG) and spurious CHLDs. Every run starts and is counted, the supervisor exits with
/// the command's status when its restart budget is spent, and nothing is left. (Some
/// 40,000-70,000 signals here. All three are ignored by default, so the few that may
/// reach another process after ours is reaped do it no harm.)
#[test]
fn a_signal_storm_during_restarts_loses_no_run() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const RESTARTS: usize = 40;
    let ws = Workspace::new();
    ws.write_policy("[restart]\nbackoff_initial = \"1ms\"\nbackoff_max = \"1ms\"\n");
    let runs = ws.path.join("runs");
    let script = format!("echo run >> {}; echo run", runs.display());
    let max = RESTARTS.to_string();
    let args = ["run", "--restart", "always", "--max-restarts", &max, "--"];
    let mut args = args.to_vec();
    args.extend(["sh", "-c", &script]);
    let mut p = Proc::spawn(ws.cmd(&args));
    p.expect_line("run");
    let pid = p.pid();
    let done = Arc::new(AtomicBool::new(false));
    let storm = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !done.load(Ordering::Relaxed) {
                for sig in [Signal::SIGWINCH, Signal::SIGCHLD, Signal::SIGURG] {
                    if nix::sys::signal::kill(pid, sig).is_err() {
                        return sent;
                    }
                    sent += 1;
                }
                std::thread::yield_now();
            }
            sent
        })
    };
    for _ in 0..RESTARTS {
        p.expect_line("run");
    }
    let out = p.finish();
    done.store(true, Ordering::Relaxed);
    let sent = storm.join().unwrap();
    assert!(sent > 0, "no signal was sent");
    assert_eq!(out.code(), 0, "the command's status: {out:?}");
    let lines = std::fs::read_to_string(&runs).unwrap().lines().count();
    assert_eq!(lines, RESTARTS + 1, "every run ran once: {out:?}");
    let text = std::fs::read_to_string(ws.path.join(".ralph/supervise/runs.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(record["restarts"], RESTARTS as u64, "{record}");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(!ws.lock_held());
}

/// Whether process `pid` is stopped (`T` in `/proc/PID/stat`).
fn stopped(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(") ").next().map(|rest| rest.starts_with('T')))
        .unwrap_or(false)
}

#[test]
fn a_stopped_command_is_continued_after_its_stop_signal() {
    // `docker stop` (a plain TERM) to a loop whose command was stopped meanwhile: as
    // systemd's KillSignal= is, the stop signal is followed by CONT, so the command
    // stops gracefully (143 from its TERM) instead of waiting out the grace for KILL.
    let ws = Workspace::new();
    let mut p = ws.start_probe(&["--stop-grace", "60s"], &["--exit-on", "TERM"]);
    let child: i32 = p.value("pid").parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), Signal::SIGSTOP).unwrap();
    wait_until("the command to stop", LIMIT, || stopped(child));
    p.signal(Signal::SIGTERM);
    p.expect_line("cleanup done");
    let out = p.finish();
    assert_eq!(out.code(), 143, "{}", out.stderr);
}
