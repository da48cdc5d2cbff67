//! A broken stderr (a pipe whose reader is gone, a terminal that hung up) never ends
//! supervision: log lines are dropped and counted, the loop still stops on request,
//! records its run and releases the workspace. Also: the final error line in JSON, and
//! what the binary's own entry point must do at start-up and on a panic.

use nix::fcntl::OFlag;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};

use crate::harness::*;

/// Starts `ralph-supervise <flags> run -- probe --exit-on TERM` with `stderr` as its
/// stderr; returns once the probe is ready and recorded in the lock metadata.
fn start(ws: &Workspace, flags: &[&str], stderr: OwnedFd) -> Child {
    let ready = ws.path.join("probe-ready");
    let ready_arg = ready.display().to_string();
    let mut args = flags.to_vec();
    args.extend([
        "run",
        "--",
        bin(),
        "probe",
        "--exit-on",
        "TERM",
        "--ready-file",
        &ready_arg,
    ]);
    let mut cmd = ws.cmd(&args);
    cmd.stdout(Stdio::null()).stderr(Stdio::from(stderr));
    let mut child = cmd.spawn().expect("spawn");
    // Our copy of the descriptor goes with the command.
    drop(cmd);
    wait_until("the probe's ready file", LIMIT, || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the supervisor ended before its child was ready: {status:?}");
        }
        ready.exists()
    });
    ws.child_pid();
    child
}

/// A pipe, both ends close-on-exec from the start: a reader leaked into a process that
/// another test spawns at the same moment would keep the pipe from breaking.
fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap()
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let mut status = None;
    wait_until("the supervisor to exit", LIMIT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

fn last_record(ws: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(ws.join(".ralph/supervise/runs.jsonl")).expect("a history record");
    let line = text.lines().last().expect("a history line");
    serde_json::from_str(line).unwrap()
}

/// `stop` works on a supervisor whose stderr broke, and the run is recorded with the
/// lines it lost.
fn stop_and_check(ws: &Workspace, mut child: Child) {
    let pid: i32 = ws.metadata()["child_pid"].as_i64().unwrap() as i32;
    let stop = ws.run(&["stop", "--timeout", "15s"]);
    assert_eq!(stop.code(), 0, "{stop:?}");
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(143), "the child's TERM, not a crash");
    assert!(!alive(pid), "the child is gone");
    assert!(!ws.lock_held());
    let record = last_record(&ws.path);
    assert_eq!(record["status"], 143, "{record}");
    assert!(
        record["log_lines_dropped"].as_u64().is_some_and(|n| n >= 1),
        "the lost lines are counted: {record}"
    );
}

#[test]
fn a_closed_stderr_pipe_does_not_end_supervision() {
    // With -v lines are written from the start; without, the first is "stop requested".
    for flags in [&["-v"][..], &[][..]] {
        let ws = Workspace::new();
        let (reader, writer) = pipe();
        drop(reader);
        let child = start(&ws, flags, writer);
        stop_and_check(&ws, child);
    }
}

#[test]
fn a_hung_up_terminal_on_stderr_does_not_end_supervision() {
    let ws = Workspace::new();
    let (master, slave) = pty();
    let child = start(&ws, &["-v"], slave);
    // Closing the master hangs the terminal up: writes to it now fail with EIO.
    drop(master);
    stop_and_check(&ws, child);
}

#[test]
fn the_final_error_line_survives_a_closed_stderr() {
    let ws = Workspace::new();
    let (reader, writer) = pipe();
    drop(reader);
    let mut cmd = ws.cmd(&["run", "--", "/nonexistent/command"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::from(writer));
    let mut child = cmd.spawn().expect("spawn");
    drop(cmd);
    assert_eq!(wait_exit(&mut child).code(), Some(127), "not a panic");
}

fn assert_json_error(stderr: &str, status: u64, message: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    let last = lines.last().unwrap_or_else(|| panic!("no error line"));
    let v: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{last:?} is not JSON: {e}"));
    assert_eq!(v["level"], "ERROR", "{v}");
    assert_eq!(v["fields"]["status"], status, "{v}");
    assert!(v["timestamp"].is_string(), "{v}");
    let text = v["fields"]["message"].as_str().unwrap();
    assert!(text.contains(message), "{v}");
    for line in lines {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"));
    }
}

#[test]
fn the_final_error_line_is_json_in_the_json_log_format() {
    let ws = Workspace::new();
    // Before logging is set up (the policy fails to load): the flag decides.
    let out = ws.run(&[
        "--log-format",
        "json",
        "run",
        "--policy",
        "/nonexistent/p.toml",
        "--",
        "true",
    ]);
    assert_eq!(out.code(), 78, "{out:?}");
    assert_json_error(&out.stderr, 78, "policy file not found");
    // The policy file's format, with -v lines before the error.
    ws.write_policy("[log]\nformat = \"json\"\n");
    let out = ws.run(&["-v", "run", "--", "/nonexistent/command"]);
    assert_eq!(out.code(), 127, "{out:?}");
    assert_json_error(&out.stderr, 127, "command not found");
    // Text stays as it was.
    let out = ws.run(&["--log-format", "text", "run", "--", "/nonexistent/command"]);
    assert_eq!(out.code(), 127, "{out:?}");
    assert!(
        out.stderr
            .starts_with("ralph-supervise: /nonexistent/command: command not found"),
        "{out:?}"
    );
}

/// Which of the subcommand's standard streams is a pipe whose reader is gone.
#[derive(Debug, Clone, Copy)]
enum Closed {
    Stdout,
    Stderr,
}

/// Runs `ralph-supervise -C <ws> <args>` with `closed` a pipe nobody reads; returns
/// its exit status and what it wrote to the other stream.
fn run_closed(ws: &Workspace, args: &[&str], closed: Closed) -> (ExitStatus, String) {
    use std::io::Read;
    let (reader, writer) = pipe();
    drop(reader);
    let mut cmd = ws.cmd(args);
    match closed {
        Closed::Stdout => cmd.stdout(Stdio::from(writer)).stderr(Stdio::piped()),
        Closed::Stderr => cmd.stderr(Stdio::from(writer)).stdout(Stdio::piped()),
    };
    let mut child = cmd.spawn().expect("spawn");
    drop(cmd);
    let mut other: Box<dyn Read + Send> = match closed {
        Closed::Stdout => Box::new(child.stderr.take().unwrap()),
        Closed::Stderr => Box::new(child.stdout.take().unwrap()),
    };
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = other.read_to_string(&mut text);
        text
    });
    let status = wait_exit(&mut child);
    (status, reader.join().unwrap())
}

/// Every subcommand's output goes through one writer that never panics: a reader that
/// went away (`ralph-supervise status | head -c0`) or a stderr nobody reads ends the
/// output, not the command, which exits with its own status.
#[test]
fn closed_output_pipes_never_panic_and_keep_the_exit_status() {
    let ws = Workspace::git();
    let idle: &[(&[&str], i32)] = &[
        (&["status"], 3),
        (&["status", "--json"], 3),
        (&["list"], 0),
        (&["history"], 0),
        (&["gc", "--dry-run"], 0),
        (&["policy", "show"], 0),
        (&["completions", "bash"], 0),
        (&["wait"], 0),
        (&["stop"], 3),
        (&["stop", "no-such-loop"], 3),
        (&["-v", "stop", "no-such-loop"], 3),
    ];
    for closed in [Closed::Stdout, Closed::Stderr] {
        for (args, code) in idle {
            let (status, other) = run_closed(&ws, args, closed);
            assert_eq!(status.code(), Some(*code), "{args:?} {closed:?}: {other}");
            assert!(!other.contains("panicked"), "{args:?} {closed:?}: {other}");
        }
    }

    // A running loop: status answers 0, stop stops it and says so into a closed pipe.
    for closed in [Closed::Stdout, Closed::Stderr] {
        let mut p = ws.start_probe(&[], &["--exit-on", "TERM"]);
        let (status, other) = run_closed(&ws, &["status"], closed);
        assert_eq!(status.code(), Some(0), "{closed:?}: {other}");
        let (status, other) = run_closed(&ws, &["-v", "stop"], closed);
        assert_eq!(status.code(), Some(0), "{closed:?}: {other}");
        assert!(!other.contains("panicked"), "{closed:?}: {other}");
        if let Closed::Stderr = closed {
            assert!(other.starts_with("stopped "), "{other}");
        }
        p.expect_line("cleanup done");
        assert_eq!(p.wait(LIMIT).code(), Some(143));
        assert!(!ws.lock_held());
    }
}

/// Started with its standard descriptors closed (a careless service manager), the
/// supervisor puts `/dev/null` on them before it opens anything, as Rust's own start-up
/// would (the binary skips that start-up, see src/main.rs): its log lines cannot land in
/// the lock file or the history, and the command gets `/dev/null` too.
#[test]
fn closed_standard_descriptors_are_reopened_on_dev_null() {
    let ws = Workspace::new();
    let seen = ws.path.join("fds");
    let script = format!(
        "fds=$(readlink /proc/$$/fd/0 /proc/$$/fd/1 /proc/$$/fd/2); echo \"$fds\" > {}",
        seen.display()
    );
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("exec 0<&- 1>&- 2>&-; exec \"$@\"")
        .arg("sh")
        .arg(bin())
        .arg("-C")
        .arg(&ws.path)
        .args(["-vv", "run", "--", "sh", "-c", &script]);
    let mut child = cmd.spawn().expect("spawn");
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(0));
    let fds = std::fs::read_to_string(&seen).unwrap();
    assert_eq!(
        fds, "/dev/null\n/dev/null\n/dev/null\n",
        "the command's descriptors"
    );
    assert_eq!(
        std::fs::read(ws.lock_path()).unwrap(),
        b"",
        "released, no log line in it"
    );
    assert_eq!(
        last_record(&ws.path)["status"],
        0,
        "the history is JSON lines"
    );
}

/// The binary's entry point is C's `main` (src/main.rs), yet a panic ends as under Rust's
/// own start-up: its message once, then status 101 where panics unwind (debug builds;
/// release builds abort), not a second panic for unwinding out of a C function.
#[test]
fn a_panic_is_one_message_and_status_101() {
    let ws = Workspace::new();
    let out = ws.run(&["probe", "--panic"]);
    assert!(out.stdout.ends_with("ready"), "{out:?}");
    assert_eq!(out.stderr.matches("panicked at").count(), 1, "{out:?}");
    assert!(out.stderr.contains("probe: asked to panic"), "{out:?}");
    assert!(!out.stderr.contains("cannot unwind"), "{out:?}");
    if cfg!(debug_assertions) {
        assert_eq!(out.status.code(), Some(101), "{out:?}");
    }
}
