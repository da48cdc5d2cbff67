//! Looking needs only read access: `status`, `list`, `wait` (and `history`) for a user
//! who cannot write the workspace, and on a read-only mount.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use nix::sys::signal::Signal;

use crate::harness::*;

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// [`Workspace::nobody_cmd`], run to its end.
fn as_nobody(ws: &Workspace, args: &[&str]) -> Output {
    Proc::spawn(ws.nobody_cmd(args)).finish()
}

/// A workspace nobody may read but not write: the temporary directory is made
/// searchable, everything in it stays root's.
fn readable_workspace() -> Workspace {
    let ws = Workspace::new();
    std::fs::set_permissions(&ws.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    ws
}

fn assert_not_writable_by_nobody(ws: &Workspace) {
    for p in [ws.path.join(".ralph"), ws.lock_path()] {
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o002,
            0,
            "{} is world-writable",
            p.display()
        );
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
    }
}

#[test]
fn status_list_wait_and_history_work_for_a_user_who_cannot_write() {
    if !root() {
        println!("skipped: switching to user nobody needs root");
        return;
    }
    let ws = readable_workspace();
    let mut p = ws.start_probe(&["--prompt", "read only"], &["--exit-on", "TERM"]);
    assert_not_writable_by_nobody(&ws);
    let before = std::fs::read(ws.lock_path()).unwrap();

    let status = as_nobody(&ws, &["status"]);
    assert_eq!(status.code(), 0, "{status:?}");
    assert!(
        status.stdout.starts_with("running: loop ralph-"),
        "{status:?}"
    );
    let json = as_nobody(&ws, &["status", "--json"]);
    assert_eq!(json.code(), 0, "{json:?}");
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["prompt"], "read only");
    assert_eq!(v["running"], true);

    let list = as_nobody(&ws, &["list"]);
    assert_eq!(list.code(), 0, "{list:?}");
    assert!(list.stdout.contains("read only"), "{list:?}");

    let history = as_nobody(&ws, &["history"]);
    assert_eq!(history.code(), 0, "{history:?}");

    let wait = as_nobody(&ws, &["wait", "--timeout", "100ms"]);
    assert_eq!(wait.code(), 124, "{wait:?}");

    // A waiter blocked on the lock sees it freed.
    let mut waiter = Proc::spawn(ws.nobody_cmd(&["wait", "--timeout", "20s"]));
    assert_eq!(std::fs::read(ws.lock_path()).unwrap(), before);
    p.signal(Signal::SIGTERM);
    p.wait(LIMIT);
    let status = waiter.wait(LIMIT);
    assert_eq!(status.code(), Some(0), "{}", waiter.stderr());

    let after = as_nobody(&ws, &["status"]);
    assert_eq!(after.code(), 3, "{after:?}");
    // Nothing was created for the readers.
    assert!(!ws.path.join(".ralph/stop-requested").exists());
}

#[test]
fn status_list_and_wait_work_on_a_read_only_mount() {
    if !root() {
        println!("skipped: a bind mount needs root");
        return;
    }
    let probe = Command::new("unshare")
        .args(["-m", "true"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !probe {
        println!("skipped: unshare -m is not permitted here");
        return;
    }
    let ws = Workspace::new();
    let p = ws.start_probe(
        &["--prompt", "on a read-only mount"],
        &["--exit-on", "TERM"],
    );
    let script = format!(
        "mount --bind -o ro \"$1\" \"$1\" && touch \"$1/.ralph/x\" 2>/dev/null && exit 99; \
         for a in status list 'wait --timeout 100ms'; do {} -C \"$1\" $a; echo \"rc=$?\"; done",
        bin()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(&ws.path)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null());
    let out = Proc::spawn(cmd).finish();
    assert_eq!(out.code(), 0, "{out:?}");
    let codes: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("rc="))
        .collect();
    assert_eq!(codes, ["rc=0", "rc=0", "rc=124"], "{out:?}");
    assert!(out.stdout.contains("on a read-only mount"), "{out:?}");
    drop(p);
}
