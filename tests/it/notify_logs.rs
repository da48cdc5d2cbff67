//! The supervisor as a service: sd_notify datagrams on a real socket, JSON logs that
//! parse, completions that generate.

use std::os::unix::net::UnixDatagram;

use nix::sys::signal::Signal;

use crate::harness::*;

/// Receives datagrams until one contains `want`; returns everything received.
fn recv_until(sock: &UnixDatagram, got: &mut Vec<String>, want: &str) {
    sock.set_read_timeout(Some(LIMIT)).unwrap();
    let mut buf = [0u8; 4096];
    while !got.iter().any(|m| m.contains(want)) {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {want:?} datagram ({e}); got {got:?}"));
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
}

#[test]
fn sd_notify_ready_status_and_stopping() {
    let ws = Workspace::new();
    let sock_path = ws.path.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();

    // A holder, so that the service first waits.
    let holder = ws.start_probe(&[], &["--exit-on", "TERM"]);
    let holder_child = holder.value("pid");
    let mut cmd = ws.cmd(&[
        "run",
        "--on-conflict",
        "wait",
        "--",
        "sh",
        "-c",
        "echo notify=${NOTIFY_SOCKET:-unset}; exec \"$0\" probe --exit-on TERM",
        bin(),
    ]);
    cmd.env("NOTIFY_SOCKET", &sock_path);
    let mut service = Proc::spawn(cmd);
    let mut got = Vec::new();
    recv_until(&sock, &mut got, "STATUS=waiting for the lock held by pid");
    assert!(got[0].contains(&format!("pid {holder_child}")), "{got:?}");
    assert!(
        !got.iter().any(|m| m.contains("READY=1")),
        "not ready before the lock: {got:?}"
    );

    holder.signal(Signal::SIGTERM);
    holder.finish();
    recv_until(&sock, &mut got, "READY=1");
    service.expect_line("ready");
    let child = service.value("pid");
    let ready = got.iter().find(|m| m.contains("READY=1")).unwrap();
    assert_eq!(
        ready,
        &format!("READY=1\nSTATUS=running pid {child}, primary")
    );
    assert!(
        service.seen().contains(&"notify=unset".to_string()),
        "the child does not get the socket"
    );

    service.signal(Signal::SIGTERM);
    recv_until(&sock, &mut got, "STOPPING=1");
    assert_eq!(service.finish().code(), 143);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path.join(".ralph")).unwrap();
    std::fs::write(ws.path.join(".ralph/stop-requested"), "").unwrap();
    let out = ws.run(&["--log-format", "json", "-v", "run", "--", "true"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(lines.len() >= 2, "debug output expected: {lines:?}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{v}"
        );
    }
    assert!(
        out.stderr.contains("removed a stale stop-requested"),
        "{}",
        out.stderr
    );
}

#[test]
fn quiet_and_rust_log() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path.join(".ralph")).unwrap();
    std::fs::write(ws.path.join(".ralph/stop-requested"), "").unwrap();
    let quiet = ws.run(&["-q", "run", "--", "true"]);
    assert_eq!(quiet.stderr, "", "-q hides info");
    std::fs::write(ws.path.join(".ralph/stop-requested"), "").unwrap();
    let mut cmd = ws.cmd(&["run", "--", "true"]);
    cmd.env("RUST_LOG", "ralph_supervise=debug");
    let out = Proc::spawn(cmd).finish();
    assert!(
        out.stderr.contains("ralph-supervise: debug: "),
        "RUST_LOG honoured: {}",
        out.stderr
    );
    // Text logs on a pipe carry no colour codes.
    assert!(!out.stderr.contains('\x1b'), "{:?}", out.stderr);
}

#[test]
fn completions_generate_for_each_shell() {
    let ws = Workspace::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = ws.run(&["completions", shell]);
        assert_eq!(out.code(), 0, "{shell}: {out:?}");
        assert!(out.stdout.contains("ralph-supervise"), "{shell}");
        assert!(
            out.stdout.contains("on-conflict"),
            "{shell}: flags completed"
        );
    }
    let out = ws.run(&["completions", "tcsh"]);
    assert_eq!(out.code(), 2);
}

#[test]
fn stopping_is_sent_when_the_stop_begins_not_when_the_loop_has_ended() {
    // systemd shows the service deactivating through the command's grace, also for a
    // stop it did not start itself (here, a stop request).
    let ws = Workspace::new();
    let sock_path = ws.path.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut cmd = ws.cmd(&["run", "--stop-grace", "60s", "--", bin(), "probe"]);
    cmd.env("NOTIFY_SOCKET", &sock_path);
    let mut service = Proc::spawn(cmd);
    service.expect_line("ready");
    let child: i32 = service.value("pid").parse().unwrap();
    let mut got = Vec::new();
    recv_until(&sock, &mut got, "READY=1");
    let stop = Proc::spawn(ws.cmd(&["stop", "--timeout", "60s"]));
    recv_until(&sock, &mut got, "STOPPING=1");
    // The probe reports TERM and goes on: its grace has 60 s to run.
    service.expect_line("signal SIGTERM");
    assert!(
        alive(child),
        "STOPPING=1 came with the stop, not at the end"
    );
    let stopping = got.iter().find(|m| m.contains("STOPPING=1")).unwrap();
    assert_eq!(stopping, "STOPPING=1\nSTATUS=stopping: stop-request");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), Signal::SIGKILL).unwrap();
    assert_eq!(service.finish().code(), 137);
    assert_eq!(stop.finish().code(), 0);
    // Once: nothing more after the end.
    assert_eq!(got.iter().filter(|m| m.contains("STOPPING=1")).count(), 1);
}

#[test]
fn lines_carry_their_syslog_priority_when_stderr_is_the_journal() {
    // systemd names the journal's stream in JOURNAL_STREAM (device:inode of stderr);
    // journald reads a leading <N> as the line's priority.
    let ws = Workspace::new();
    let as_journal = |format: &str| {
        let mut cmd = std::process::Command::new("sh");
        cmd.args([
            "-c",
            "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec \"$@\"",
            "sh",
            bin(),
            "-C",
        ])
        .arg(&ws.path)
        .args([
            "--log-format",
            format,
            "-v",
            "run",
            "--",
            "/nonexistent/agent",
        ])
        .stdin(std::process::Stdio::null())
        .env_remove("RUST_LOG");
        Proc::spawn(cmd).finish()
    };
    let out = as_journal("text");
    assert_eq!(out.code(), 127, "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<7>ralph-supervise: debug: ")),
        "{lines:?}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("<3>ralph-supervise: ") && l.contains("not found")),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| l.starts_with('<')), "{lines:?}");
    let out = as_journal("json");
    for line in out.stderr.lines() {
        let (prefix, json) = line.split_at(3);
        let v: serde_json::Value =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let want = match v["level"].as_str() {
            Some("ERROR") => "<3>",
            Some("DEBUG") => "<7>",
            other => panic!("{other:?} in {line:?}"),
        };
        assert_eq!(prefix, want, "{line}");
    }
    // Elsewhere (stderr not the stream named), no prefix.
    let mut cmd = ws.cmd(&["run", "--", "/nonexistent/agent"]);
    cmd.env("JOURNAL_STREAM", "1:2");
    let out = Proc::spawn(cmd).finish();
    assert!(
        out.stderr.starts_with("ralph-supervise: "),
        "{}",
        out.stderr
    );
}
