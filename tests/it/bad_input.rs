//! Bad input: one clear line, the documented code, nothing under `.ralph/` touched.

use std::os::unix::fs::symlink;
use std::process::Command;

use crate::harness::*;

#[test]
fn missing_command_is_127() {
    let ws = Workspace::new();
    let out = ws.run(&["run", "--", "no-such-command-xyz"]);
    assert_eq!(out.code(), 127);
    assert_eq!(
        out.stderr.trim(),
        "ralph-supervise: no-such-command-xyz: command not found; check the name and PATH"
    );
    assert!(!ws.lock_held());
    assert_eq!(std::fs::read_to_string(ws.lock_path()).unwrap(), "");
}

#[test]
fn not_executable_is_126() {
    let ws = Workspace::new();
    let script = ws.path.join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let out = ws.run(&["run", "--", script.to_str().unwrap()]);
    assert_eq!(out.code(), 126, "{out:?}");
    assert!(out.stderr.contains("cannot execute"), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1);
    let dir = ws.run(&["run", "--", "/tmp"]);
    assert_eq!(dir.code(), 126, "{dir:?}");
}

#[test]
fn no_command_is_a_usage_error() {
    let ws = Workspace::new();
    let out = ws.run(&["run"]);
    assert_eq!(out.code(), 2);
    assert!(out.stderr.contains("COMMAND"), "{}", out.stderr);
    let out = ws.run(&["run", "--stop-grace", "soon", "--", "true"]);
    assert_eq!(out.code(), 2);
    assert!(out.stderr.contains("30s"), "{}", out.stderr);
}

#[test]
fn symlinked_lock_is_refused_and_left_alone() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path.join(".ralph")).unwrap();
    let target = ws.path.join("precious.txt");
    std::fs::write(&target, "do not touch").unwrap();
    symlink(&target, ws.lock_path()).unwrap();
    let out = ws.run(&["run", "--", "true"]);
    assert_eq!(out.code(), 125, "{out:?}");
    assert!(out.stderr.contains("symbolic link"), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "do not touch");
    assert!(
        std::fs::symlink_metadata(ws.lock_path())
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn directory_or_fifo_lock_is_refused() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.lock_path()).unwrap();
    let out = ws.run(&["run", "--", "true"]);
    assert_eq!(out.code(), 125);
    assert!(out.stderr.contains("is a directory"), "{}", out.stderr);
    assert!(ws.lock_path().is_dir());

    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path.join(".ralph")).unwrap();
    let status = Command::new("mkfifo").arg(ws.lock_path()).status().unwrap();
    assert!(status.success());
    let out = ws.run(&["run", "--", "true"]);
    assert_eq!(out.code(), 125);
    assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
}

#[test]
fn symlinked_ralph_dir_is_refused() {
    let ws = Workspace::new();
    let elsewhere = ws.path.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    symlink(&elsewhere, ws.path.join(".ralph")).unwrap();
    let out = ws.run(&["run", "--", "true"]);
    assert_eq!(out.code(), 125);
    assert!(
        out.stderr.contains(".ralph: it is a symbolic link"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn unwritable_workspace_is_125_naming_the_path() {
    let ws = Workspace::new();
    let ro = ws.path.join("readonly");
    std::fs::create_dir_all(&ro).unwrap();
    let mut cmd = if nix::unistd::geteuid().is_root() {
        // Root ignores permission bits: drop to nobody for this run.
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()]);
        c
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        Command::new(bin())
    };
    cmd.arg("-C").arg(&ro).args(["run", "--", "true"]);
    let out = Proc::spawn(cmd).finish();
    assert_eq!(out.code(), 125, "{out:?}");
    let line = out.stderr.trim();
    assert!(
        line.contains(&format!("cannot create {}/.ralph", ro.display())),
        "{line}"
    );
    assert!(line.contains("Permission denied"), "{line}");
    assert!(!ro.join(".ralph").exists());
}

#[test]
fn missing_workspace_is_a_usage_error() {
    let out = Proc::spawn({
        let mut c = Command::new(bin());
        c.args(["-C", "/nonexistent/ws", "run", "--", "true"]);
        c
    })
    .finish();
    assert_eq!(out.code(), 2);
    assert!(out.stderr.contains("/nonexistent/ws"), "{}", out.stderr);
}

#[test]
fn a_file_as_the_workspace_is_a_usage_error() {
    let ws = Workspace::new();
    let file = ws.path.join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let mut c = Command::new(bin());
    c.arg("-C").arg(&file).args(["run", "--", "true"]);
    let out = Proc::spawn(c).finish();
    assert_eq!(out.code(), 2, "{out:?}");
    let line = out.stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains("not a directory; pass an existing directory to -C"),
        "{line}"
    );
}

#[test]
fn worktree_launch_without_git_says_so() {
    let ws = Workspace::git();
    let mut holder = ws.start_probe(&[], &["--exit-on", "TERM"]);
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = ws.cmd(&["run", "--on-conflict", "worktree", "--", "/bin/true"]);
    cmd.env("PATH", empty.path());
    let out = Proc::spawn(cmd).finish();
    assert_eq!(out.code(), 125, "{out:?}");
    let last = out
        .stderr
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(last.contains("git is not installed"), "{}", out.stderr);
    assert!(!ws.path.join(".worktrees").exists(), "nothing created");
    holder.signal(nix::sys::signal::Signal::SIGTERM);
    holder.expect_line("cleanup done");
}

#[test]
fn a_prompt_may_start_with_a_dash() {
    let ws = Workspace::new();
    let mut p = ws.start_probe(&["--prompt", "-x marks the spot"], &["--exit-on", "TERM"]);
    assert_eq!(ws.metadata()["prompt"], "-x marks the spot");
    p.signal(nix::sys::signal::Signal::SIGTERM);
    p.expect_line("cleanup done");
}
