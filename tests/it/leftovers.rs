//! A workspace held by an escaped process after the supervisor and the child died: the
//! holder is named, `stop` ends it when it belongs to the loop, and refuses otherwise.

use std::process::Command;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::*;

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// A loop whose child started a grandchild in a session of its own holding the
/// inherited lock descriptor; then the supervisor and the child were SIGKILLed. Returns
/// the (dead) supervisor's `Proc` (which kills the grandchild when dropped) and the
/// grandchild's pid.
fn escaped_holder(ws: &Workspace) -> (Proc, i32) {
    escaped_holder_named(ws, "sleep")
}

/// [`escaped_holder`] with the grandchild run as `program` (a `sleep`).
fn escaped_holder_named(ws: &Workspace, program: &str) -> (Proc, i32) {
    let script = "setsid \"$0\" 1000 & echo \"pid $!\"; echo ready; exec sleep 1000";
    let mut sup = Proc::spawn(ws.cmd(&["run", "--", "sh", "-c", script, program]));
    sup.expect_line("ready");
    let grandchild: i32 = sup.value("pid").parse().unwrap();
    let child = ws.child_pid();
    wait_until("the grandchild to hold the lock descriptor", LIMIT, || {
        std::fs::read_dir(format!("/proc/{grandchild}/fd"))
            .map(|fds| {
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == ws.lock_path()))
            })
            .unwrap_or(false)
    });
    sup.signal(Signal::SIGKILL);
    sup.wait(LIMIT);
    kill(Pid::from_raw(child), Signal::SIGKILL).unwrap();
    wait_until("the child to die", LIMIT, || !alive(child));
    assert!(alive(grandchild));
    assert!(ws.lock_held(), "the grandchild holds the lock");
    (sup, grandchild)
}

#[test]
fn status_names_an_escaped_holder_and_stop_ends_it() {
    let ws = Workspace::new();
    let (_sup, grandchild) = escaped_holder(&ws);

    let out = ws.run(&["status"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "held by    pid {grandchild} (sleep), left behind by the loop"
        )),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("(gone)"), "{}", out.stdout);
    let v = json(&ws.run(&["status", "--json"]));
    assert_eq!(
        v["holders"],
        serde_json::json!([{"loop": true, "name": "sleep", "pid": grandchild}]),
        "{v}"
    );

    let out = ws.run(&["stop", "--timeout", "10s"]);
    assert_eq!(out.code(), 0, "{out:?}");
    wait_until("the grandchild to die", LIMIT, || !alive(grandchild));
    assert!(!ws.lock_held());
    assert_eq!(ws.run(&["status"]).code(), 3);
}

#[test]
fn stop_kill_ends_an_escaped_holder() {
    let ws = Workspace::new();
    let (_sup, grandchild) = escaped_holder(&ws);
    let out = ws.run(&["stop", "--kill", "--timeout", "10s"]);
    assert_eq!(out.code(), 0, "{out:?}");
    wait_until("the grandchild to die", LIMIT, || !alive(grandchild));
    assert!(!ws.lock_held());
}

#[test]
fn a_foreign_holder_after_a_dead_loop_is_named_and_never_signalled() {
    let ws = Workspace::new();
    // A loop dies whole (supervisor and child SIGKILLed): its metadata stays behind.
    let mut sup = Proc::spawn(ws.cmd(&["run", "--", "sh", "-c", "echo ready; exec sleep 1000"]));
    sup.expect_line("ready");
    let child = ws.child_pid();
    sup.signal(Signal::SIGKILL);
    sup.wait(LIMIT);
    kill(Pid::from_raw(child), Signal::SIGKILL).unwrap();
    wait_until("the lock to be free", LIMIT, || !ws.lock_held());
    // Then someone takes the lock with flock(1), started after the loop's child.
    let mut flock = Proc::spawn({
        let mut c = Command::new("flock");
        c.arg(ws.lock_path())
            .args(["sh", "-c", "echo \"pid $$\"; echo ready; exec sleep 1000"]);
        c
    });
    flock.expect_line("ready");
    let holder = flock.pid().as_raw();
    let sleeper: i32 = flock.value("pid").parse().unwrap();

    let out = ws.run(&["status"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "held by    pid {holder} (flock), not known to belong"
        )),
        "{}",
        out.stdout
    );
    let v = json(&ws.run(&["status", "--json"]));
    assert_eq!(v["holders"][0]["loop"], false, "{v}");

    let out = ws.run(&["stop", "--kill", "--timeout", "1s"]);
    assert_eq!(out.code(), 125, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("and the lock is held by pid {holder} (flock), pid {sleeper} (sleep), which are not part of the loop")),
        "{}",
        out.stderr
    );
    let out = ws.run(&["stop", "--timeout", "300ms"]);
    assert_eq!(out.code(), 124, "{out:?}");
    assert!(alive(holder) && alive(sleeper), "flock(1) was signalled");
    assert!(ws.lock_held());
}

#[test]
fn takeover_ends_an_escaped_holder() {
    let ws = Workspace::new();
    let (_sup, grandchild) = escaped_holder(&ws);
    let out = ws.run(&[
        "run",
        "--on-conflict",
        "takeover",
        "--stop-grace",
        "1s",
        "--",
        "true",
    ]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(!alive(grandchild));
    assert!(!ws.lock_held());
}

/// A holder's process name is the name it was run by: outside text, printed escaped.
#[test]
fn an_escaped_holders_name_is_printed_escaped() {
    let ws = Workspace::new();
    let bin = ws.path.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let name = bin.join("sl\x1b]0;x\x07p");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sleep = std::env::split_paths(&path).map(|d| d.join("sleep"));
    let sleep = sleep
        .into_iter()
        .find(|p| p.is_file())
        .expect("sleep on PATH");
    std::os::unix::fs::symlink(sleep, &name).unwrap();
    let (_sup, grandchild) = escaped_holder_named(&ws, name.to_str().unwrap());
    let out = ws.run(&["status"]);
    assert!(!out.stdout.contains('\x1b'), "{:?}", out.stdout);
    assert!(
        out.stdout
            .contains(&format!("pid {grandchild} (sl\\x1b]0;x\\x07p)")),
        "{:?}",
        out.stdout
    );
    let v = json(&ws.run(&["status", "--json"]));
    assert_eq!(v["holders"][0]["name"], "sl\x1b]0;x\x07p", "{v}");
}
