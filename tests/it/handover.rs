//! Lock hand-over with children that are not ralph (`--handover`): flock(1), python's
//! `fcntl.flock` and the shell lock `.ralph/loop.lock` themselves inside the loop and get
//! the supervisor's locked description; everyone else still finds the workspace taken.
//! (The real ralph is in `ralph.rs`.)
//!
//! Handshakes: the children print a line when they hold the lock and block reading a
//! FIFO until the test writes to it, so nothing here sleeps to synchronise.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;

use crate::harness::{LIMIT, Proc, Workspace, alive, wait_until};

/// A FIFO in the workspace that a child blocks on (`read x < NAME`) until [`release`].
fn fifo(ws: &Workspace, name: &str) -> PathBuf {
    let path = ws.path.join(name);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    path
}

/// Lets one `read x < fifo` go on.
fn release(fifo: &Path) {
    let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
    f.write_all(b"go\n").unwrap();
}

/// `flock -w 30` on the workspace lock from outside, printing `file` once it has it.
fn waiter(ws: &Workspace, file: &str) -> Proc {
    let mut c = Command::new("flock");
    c.args(["-w", "30"])
        .arg(ws.lock_path())
        .args(["cat", file])
        .current_dir(&ws.path);
    Proc::spawn(c)
}

fn supervised(ws: &Workspace, opts: &[&str], script: &str) -> Proc {
    let mut args = vec!["run"];
    args.extend_from_slice(opts);
    args.extend(["--", "sh", "-c", script]);
    Proc::spawn(ws.cmd(&args))
}

/// A program named `ralph` (so "auto" hands the lock over to it) that tries the
/// workspace lock and prints `inner=0` when it got it, `inner=1` when it is taken.
fn fake_ralph(ws: &Workspace) -> PathBuf {
    let bin = ws.path.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let ralph = bin.join("ralph");
    let script = "#!/bin/sh\nflock -n .ralph/loop.lock true; echo inner=$?\n";
    std::fs::write(&ralph, script).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&ralph, mode).unwrap();
    ralph
}

/// The sidecar's child pid (`.ralph/supervise/loop.json`), once written.
fn sidecar_child(ws: &Workspace) -> i64 {
    let path = ws.path.join(".ralph/supervise/loop.json");
    let mut pid = 0;
    wait_until("the child in the sidecar", LIMIT, || {
        pid = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|m| m["child_pid"].as_i64())
            .unwrap_or(0);
        pid != 0
    });
    pid
}

#[test]
fn a_child_that_locks_the_file_holds_it_and_nobody_else_gets_it() {
    let ws = Workspace::new();
    let gate = fifo(&ws, "gate");
    let script = "flock -n .ralph/loop.lock sh -c '\
        echo held; \
        flock -n .ralph/loop.lock true; echo nested=$?; \
        read x < gate; echo last write > log'";
    let mut sup = supervised(&ws, &["--handover"], script);
    sup.expect_line("held");
    // A second asker inside the loop finds it taken, as it would beside another loop.
    sup.expect_line("nested=1");
    // The supervisor wrote the lock file before the spawn only; its own record of the
    // child is the sidecar.
    let meta = ws.metadata();
    assert_eq!(meta["pid"].as_i64(), Some(sup.pid().as_raw() as i64));
    assert_eq!(meta["supervisor_pid"], meta["pid"]);
    let child = sidecar_child(&ws);
    let status = ws.run(&["status", "--json"]);
    assert_eq!(status.code(), 0, "{}", status.stderr);
    assert!(
        status.stdout.contains(&format!("{child}")),
        "{}",
        status.stdout
    );
    // From outside: a blocked waiter and hundreds of probes never get it.
    let wait = waiter(&ws, "log");
    for _ in 0..200 {
        assert!(ws.lock_held(), "a probe got the workspace");
    }
    release(&gate);
    let out = sup.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    // The waiter got it only after the child's last write.
    let w = wait.finish();
    assert_eq!(w.code(), 0, "{}", w.stderr);
    assert_eq!(w.stdout, "last write");
    assert!(!ws.lock_held());
}

#[test]
fn the_handed_descriptions_unlock_is_absorbed_while_the_supervisor_holds_it() {
    let ws = Workspace::new();
    let gate = fifo(&ws, "gate");
    // python's flock: lock, unlock explicitly (as ralph's guard does at its end), and
    // unlock the inherited RALPH_LOCK_FD too; the workspace must stay taken.
    let script = r#"python3 -c '
import fcntl, os
f = open(".ralph/loop.lock", "r+")
fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
fcntl.flock(f, fcntl.LOCK_UN)
fcntl.flock(int(os.environ["RALPH_LOCK_FD"]), fcntl.LOCK_UN)
print("unlocked", flush=True)
open("gate").read()
'"#;
    let mut sup = supervised(&ws, &["--handover"], script);
    sup.expect_line("unlocked");
    assert!(ws.lock_held(), "the child's LOCK_UN freed the workspace");
    release(&gate);
    let out = sup.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(!ws.lock_held());
}

#[test]
fn a_killed_supervisor_leaves_the_loop_working_and_the_lock_held_until_it_ends() {
    let ws = Workspace::new();
    let (gate, end) = (fifo(&ws, "gate"), fifo(&ws, "end"));
    let script = "flock -n .ralph/loop.lock sh -c '\
        echo held; read x < gate; \
        flock -n other.lock echo other lock ok; \
        flock -n .ralph/loop.lock true; echo probe=$?; \
        read y < end'";
    let mut sup = supervised(&ws, &["--handover"], script);
    sup.expect_line("held");
    let child = sidecar_child(&ws) as i32;
    let answerer = answerer_of(sup.pid().as_raw());
    sup.signal(Signal::SIGKILL);
    sup.wait(LIMIT);
    assert!(alive(child));
    assert!(alive(answerer), "the answerer went with the supervisor");
    release(&gate);
    // Its flock calls still get answered: no ENOSYS, no hang.
    sup.expect_line("other lock ok");
    sup.expect_line("probe=1");
    assert!(ws.lock_held(), "the lock went with the supervisor");
    release(&end);
    wait_until("the child to end", LIMIT, || !alive(child));
    wait_until("the workspace to be free", LIMIT, || !ws.lock_held());
    // Its tree gone, the answerer is gone too.
    wait_until("the answerer to exit", LIMIT, || !alive(answerer));
}

/// The answerer the supervisor `sup` started (its child running `handover-answer`).
fn answerer_of(sup: i32) -> i32 {
    let mut found = 0;
    wait_until(
        "the answerer among the supervisor's children",
        LIMIT,
        || {
            found = crate::harness::children_of(sup)
                .into_iter()
                .find(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("handover-answer"))
                })
                .unwrap_or(0);
            found != 0
        },
    );
    found
}

#[test]
fn restarts_keep_the_lock_from_a_waiter() {
    let ws = Workspace::new();
    let gate = fifo(&ws, "gate");
    let opts = [
        "--handover",
        "--restart",
        "always",
        "--max-restarts",
        "1",
        "--restart-delay",
        "50ms",
    ];
    let script =
        "flock -n .ralph/loop.lock sh -c 'echo run >> log; echo held; read x < gate'; exit 1";
    let mut sup = supervised(&ws, &opts, script);
    sup.expect_line("held");
    let wait = waiter(&ws, "log");
    release(&gate);
    // The second run takes it through the supervisor again: the first run's end did
    // not hand it to the waiter.
    sup.expect_line("held");
    assert!(ws.lock_held());
    release(&gate);
    let out = sup.finish();
    assert_eq!(out.code(), 1, "{}", out.stderr);
    let w = wait.finish();
    assert_eq!(w.code(), 0, "{}", w.stderr);
    assert_eq!(w.stdout, "run\nrun");
}

#[test]
fn a_stop_request_is_consumed_for_a_child_that_is_not_ralph() {
    let ws = Workspace::new();
    let probe = [crate::harness::bin(), "probe", "--exit-on", "TERM"];
    let sup_args = [&["run", "--handover", "--"][..], &probe].concat();
    let mut sup = Proc::spawn(ws.cmd(&sup_args));
    sup.expect_line("ready");
    sidecar_child(&ws);
    std::fs::write(ws.path.join(".ralph/stop-requested"), "").unwrap();
    sup.expect_line("signal SIGTERM");
    let out = sup.finish();
    assert_eq!(out.code(), 143, "{}", out.stderr);
    assert!(!ws.path.join(".ralph/stop-requested").exists());
}

#[test]
fn without_seccomp_always_refuses_and_auto_warns() {
    let ws = Workspace::new();
    let mut cmd = ws.cmd(&["run", "--handover", "--", "true"]);
    cmd.env("RALPH_SUPERVISE_TEST_NO_SECCOMP", "1");
    let out = Proc::spawn(cmd).finish();
    assert_eq!(out.code(), 125, "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("seccomp"), "{}", out.stderr);
    assert!(!ws.lock_path().exists() || !ws.lock_held());
    // auto, a program named ralph: a warning, and it runs as without hand-over (it
    // finds the workspace taken).
    let ralph = fake_ralph(&ws);
    let ralph = ralph.to_str().unwrap();
    let mut cmd = ws.cmd(&["run", "--", ralph]);
    cmd.env("RALPH_SUPERVISE_TEST_NO_SECCOMP", "1");
    let out = Proc::spawn(cmd).finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(out.stderr.contains("no lock hand-over"), "{}", out.stderr);
    assert_eq!(out.stdout, "inner=1");
    // Where it is available, the same program gets the lock.
    let out = ws.run(&["run", "--", ralph]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout, "inner=0");
    // And never means never.
    let out = ws.run(&["run", "--handover=never", "--", ralph]);
    assert_eq!(out.stdout, "inner=1");
}

/// Without CAP_SYS_ADMIN (an ordinary user) the filter needs `no_new_privs`: the child
/// runs with it (set-user-ID programs cannot raise privileges) and gets the lock all
/// the same; with it (root here) the child's privileges are left alone.
#[test]
fn no_new_privs_only_when_the_filter_needs_it() {
    let script = "grep NoNewPrivs /proc/self/status; flock -n .ralph/loop.lock echo got it";
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: not root (the other hand-over tests run unprivileged already)");
        return;
    }
    let ws = Workspace::new();
    let out = ws.run(&["run", "--handover", "--", "sh", "-c", script]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout, "NoNewPrivs:\t0\ngot it");
    let ws = Workspace::new();
    std::os::unix::fs::chown(&ws.path, Some(65534), Some(65534)).unwrap();
    let cmd = ws.nobody_cmd(&["run", "--handover", "--", "sh", "-c", script]);
    let out = Proc::spawn(cmd).finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout, "NoNewPrivs:\t1\ngot it");
}

/// A child that rewrites the lock file as ralph does (truncate, then `{pid, started,
/// prompt}` of its own): `status`, `list`, `stop` and a takeover still find the loop
/// through the supervisor's sidecar, confirmed by start times.
#[test]
fn status_list_and_takeover_work_when_the_child_rewrites_the_lock_file() {
    let ws = Workspace::new();
    let script = r#"exec python3 -c '
import fcntl, json, os, signal
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
f = open(".ralph/loop.lock", "r+")
fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
f.truncate(0)
f.write(json.dumps({"pid": os.getpid(), "started": "2026-01-01T00:00:00Z", "prompt": "own write"}))
f.flush()
print("written", flush=True)
signal.sigwait([signal.SIGTERM])
print("terminated", flush=True)
'"#;
    let mut sup = supervised(&ws, &["--handover"], script);
    sup.expect_line("written");
    let child = sidecar_child(&ws);
    assert_eq!(ws.metadata()["pid"].as_i64(), Some(child));
    assert!(ws.metadata().get("supervisor_pid").is_none());
    let status = ws.run(&["status", "--json"]);
    assert_eq!(status.code(), 0, "{}", status.stderr);
    let s: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let text = s.to_string();
    assert!(text.contains(&sup.pid().as_raw().to_string()), "{text}");
    assert!(text.contains(&child.to_string()), "{text}");
    let list = ws.run(&["list"]);
    assert_eq!(list.code(), 0, "{}", list.stderr);
    assert!(list.stdout.contains("primary"), "{}", list.stdout);
    // A takeover asks the supervisor to stop (its child gets TERM), then runs.
    let take = ws.run(&["run", "--on-conflict", "takeover", "--", "true"]);
    assert_eq!(take.code(), 0, "{}", take.stderr);
    sup.expect_line("terminated");
    let out = sup.finish();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(!ws.lock_held());
}

/// A loop with the lock handed over, inside another one (a supervised ralph started
/// from a supervised loop): the kernel allows one seccomp listener per chain, so the
/// inner supervisor says so in one line and, with "auto", runs its ralph without the
/// hand-over (it finds its workspace taken); "always" refuses with 125. Nothing of the
/// inner loops outlives them (their answerers end with them), so the outer loop ends
/// at once, with nothing left for its clean-up to KILL.
#[test]
fn a_hand_over_inside_another_says_why_and_auto_runs_without() {
    let outer = Workspace::new();
    let inner = Workspace::new();
    let ralph = fake_ralph(&inner);
    let script = format!(
        "cd '{ws}' && '{b}' run -- '{r}'; echo auto=$?; '{b}' run --handover -- '{r}'; echo always=$?",
        ws = inner.path.display(),
        b = crate::harness::bin(),
        r = ralph.display(),
    );
    let out = supervised(&outer, &["--handover", "--stop-grace", "30s"], &script).finish();
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.stdout, "inner=1\nauto=0\nalways=125", "{out:?}");
    let why = "a seccomp listener is already installed above this process";
    let lines: Vec<&str> = out.stderr.lines().filter(|l| l.contains(why)).collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert!(lines[0].contains("warning: no lock hand-over"), "{out:?}");
    assert!(
        lines[1].contains("cannot hand the workspace lock over"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("did not end"), "{out:?}");
}
