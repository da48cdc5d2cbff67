//! The supervisor as PID 1 of a fresh pid namespace, as a container entrypoint.

use std::process::Command;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::*;

fn unshare_permitted() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `ralph-supervise -C <ws> run -- sh -c <script>` as PID 1 of a fresh pid namespace.
fn run_as_pid1(ws: &Workspace, script: &str) -> Proc {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", bin(), "-C"])
        .arg(&ws.path)
        .args(["run", "--", "sh", "-c", script])
        .stdin(std::process::Stdio::null());
    Proc::spawn(cmd)
}

#[test]
fn pid1_reaps_orphans_forwards_term_and_exits_with_the_child() {
    if !unshare_permitted() {
        println!("skipped: unshare --pid is not permitted here");
        return;
    }
    let ws = Workspace::new();
    let script = format!(
        "for i in $(seq 20); do (sleep 0.01 &) ; done; exec {} probe --exit-on TERM",
        bin()
    );
    let mut p = run_as_pid1(&ws, &script);
    p.expect_line("ready");
    assert_eq!(p.value("pid"), "2", "the child of PID 1");
    // The supervisor is unshare's only child; inside the namespace it is PID 1.
    let sup = children_of(p.pid().as_raw());
    assert_eq!(sup.len(), 1, "{sup:?}");
    let sup = sup[0];
    let status = std::fs::read_to_string(format!("/proc/{sup}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.ends_with("\t1")),
        "{status}"
    );
    wait_until("PID 1 to reap the orphaned sleeps", LIMIT, || {
        children_of(sup).len() == 1
    });
    kill(Pid::from_raw(sup), Signal::SIGTERM).unwrap();
    p.expect_line("cleanup done");
    let out = p.finish();
    assert_eq!(out.code(), 143, "{out:?}");
}

#[test]
fn pid1_reaps_a_hundred_orphaned_grandchildren() {
    if !unshare_permitted() {
        println!("skipped: unshare --pid is not permitted here");
        return;
    }
    const N: usize = 100;
    let ws = Workspace::new();
    let parents = ws.path.join("parents");
    // Each grandchild is orphaned at once (its subshell exits), then records, from
    // inside the namespace, who its parent became: PID 1, the supervisor.
    let script = format!(
        "for i in $(seq {N}); do (sh -c 'sleep 0.1; read p c s ppid r < /proc/$$/stat; echo $ppid >> {}' &); done; \
         exec {} probe --exit-on TERM",
        parents.display(),
        bin()
    );
    let started = std::time::Instant::now();
    let mut p = run_as_pid1(&ws, &script);
    p.expect_line("ready");
    let sup = children_of(p.pid().as_raw());
    assert_eq!(sup.len(), 1, "{sup:?}");
    let sup = sup[0];
    wait_until("all orphans to report their parent", LIMIT, || {
        std::fs::read_to_string(&parents)
            .map(|t| t.lines().count() == N)
            .unwrap_or(false)
    });
    // Only the probe is left: every orphan was reaped (no zombie stays a child).
    wait_until("PID 1 to reap the hundred orphans", LIMIT, || {
        children_of(sup).len() == 1
    });
    let text = std::fs::read_to_string(&parents).unwrap();
    assert!(text.lines().all(|l| l == "1"), "{text}");
    kill(Pid::from_raw(sup), Signal::SIGTERM).unwrap();
    p.expect_line("signal SIGTERM");
    let out = p.finish();
    assert_eq!(out.code(), 143, "{out:?}");
    println!(
        "pid1: {N} orphans reparented to and reaped by PID 1, TERM forwarded, exit 143, in {:?}",
        started.elapsed()
    );
}

/// From the host, a loop in its own pid namespace records pids the host cannot judge:
/// status says so instead of alive or gone, and stop never signals those numbers here
/// (it asks through the stop request file, which the loop honours).
#[test]
fn status_from_outside_says_the_pids_are_another_namespace() {
    if !unshare_permitted() {
        println!("skipped: unshare --pid is not permitted here (needs root)");
        return;
    }
    let ws = Workspace::new();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        bin(),
        "-C",
    ])
    .arg(&ws.path)
    .args([
        "run",
        "--prompt",
        "in a container",
        "--",
        bin(),
        "probe",
        "--exit-on",
        "TERM",
    ])
    .stdin(std::process::Stdio::null());
    let mut p = Proc::spawn(cmd);
    p.expect_line("ready");
    assert_eq!(p.value("pid"), "2", "the child is pid 2 in its namespace");
    wait_until("the child's pid in the metadata", LIMIT, || {
        std::fs::read_to_string(ws.lock_path())
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|m| m["child_pid"] == 2)
    });

    let out = ws.run(&["status"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stdout
            .contains("child pid  2 (in another pid namespace)")
            && out
                .stdout
                .contains("supervisor 1 (in another pid namespace)"),
        "{}",
        out.stdout
    );
    let v: serde_json::Value = serde_json::from_str(&ws.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(v["pid_namespace"], "other", "{v}");
    assert_eq!(v["child_alive"], serde_json::Value::Null, "{v}");
    assert_eq!(v["supervisor_alive"], serde_json::Value::Null, "{v}");
    assert_eq!(v["holders"], serde_json::Value::Null, "{v}");

    // --kill would signal numbers that mean other processes here: refused.
    let out = ws.run(&["stop", "--kill", "--timeout", "1s"]);
    assert_eq!(out.code(), 125, "{out:?}");
    assert!(
        out.stderr.contains("another pid namespace"),
        "{}",
        out.stderr
    );
    // A plain stop asks through the stop request, which the supervisor inside honours.
    let out = ws.run(&["stop", "--timeout", "10s"]);
    assert_eq!(out.code(), 0, "{out:?}");
    p.expect_line("signal SIGTERM");
    let status = p.wait(LIMIT);
    assert_eq!(status.code(), Some(128 + 15), "{}", p.stderr());
}
