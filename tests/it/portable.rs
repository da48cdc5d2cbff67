//! The portable layer's Linux-run paths: what macOS and FreeBSD do without
//! `/proc/locks` (a non-blocking probe, and the metadata's word confirmed by start
//! time), forced here with `RALPH_SUPERVISE_TEST_NO_PROC_LOCKS=1`.

use crate::harness::*;

const NO_PROC_LOCKS: &str = "RALPH_SUPERVISE_TEST_NO_PROC_LOCKS";

/// `ralph-supervise -C <ws> <args>` as it runs where there is no `/proc/locks`.
fn run_without_proc_locks(ws: &Workspace, args: &[&str]) -> Output {
    let mut cmd = ws.cmd(args);
    cmd.env(NO_PROC_LOCKS, "1");
    Proc::spawn(cmd).finish()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[test]
fn status_names_the_supervisor_by_probe() {
    let ws = Workspace::new();
    let p = ws.start_probe(&["--prompt", "probed"], &["--exit-on", "TERM"]);
    let out = run_without_proc_locks(&ws, &["status", "--json"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let v = json(&out);
    assert_eq!(v["running"], true);
    assert_eq!(v["supervisor_alive"], true);
    assert_eq!(
        v["lock_holders"],
        serde_json::json!([p.pid().as_raw()]),
        "the metadata's supervisor, confirmed by its start time"
    );
    // A second loop is refused naming the holder, as with /proc/locks.
    let refused = run_without_proc_locks(&ws, &["run", "--on-conflict", "fail", "--", "true"]);
    assert_eq!(refused.code(), 75, "{refused:?}");
    assert!(refused.stderr.contains("probed"), "{}", refused.stderr);
    // And `stop` ends it.
    let stopped = run_without_proc_locks(&ws, &["stop"]);
    assert_eq!(stopped.code(), 0, "{stopped:?}");
    p.finish();
    let after = run_without_proc_locks(&ws, &["status", "--json"]);
    assert_eq!(after.code(), 3, "{after:?}");
    assert_eq!(json(&after)["lock_holders"], serde_json::json!([]));
}

#[test]
fn a_holder_without_metadata_is_running_but_unnamed() {
    // flock(1) writes no metadata: the probe sees the lock held, nobody is named, and
    // `stop` refuses to signal what it cannot confirm.
    let ws = Workspace::new();
    let holder = FlockHolder::start(&ws);
    let out = run_without_proc_locks(&ws, &["status"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("holder unknown"), "{}", out.stdout);
    let v = json(&run_without_proc_locks(&ws, &["status", "--json"]));
    assert_eq!(v["running"], true);
    assert_eq!(v["lock_holders"], serde_json::json!([]));
    let refused = run_without_proc_locks(&ws, &["stop", "--kill"]);
    assert_eq!(refused.code(), 125, "{refused:?}");
    assert!(alive(holder.pid().as_raw()), "not signalled");
    holder.release();
}
