//! The primary path of `run`: exit statuses, the lock's life, metadata, inheritance.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::Signal;

use crate::harness::*;

#[test]
fn every_exit_code_passes_through() {
    let ws = Workspace::new();
    for code in 0..=255 {
        let out = ws.run(&["run", "--", "sh", "-c", &format!("exit {code}")]);
        assert_eq!(out.code(), code, "{out:?}");
    }
}

#[test]
fn signal_deaths_exit_128_plus_n() {
    let ws = Workspace::new();
    for sig in [
        1, 2, 3, 6, 9, 10, 11, 12, 13, 14, 15, 24, 26, 27, 31, 34, 40, 64,
    ] {
        let out = ws.run(&["run", "--", "sh", "-c", &format!("kill -{sig} $$")]);
        assert_eq!(out.code(), 128 + sig, "signal {sig}: {out:?}");
    }
}

#[test]
fn child_inherits_the_locked_fd_and_nothing_else() {
    let ws = Workspace::new();
    // What the test process itself passes on (a CI runner may leak some) is the baseline.
    let baseline = Proc::spawn({
        let mut c = std::process::Command::new(bin());
        c.args(["probe", "--exit", "0"])
            .stdin(std::process::Stdio::null());
        c
    });
    let mut baseline = baseline;
    baseline.expect_line("ready");
    let inherited: Vec<String> = baseline.value("fds").split(' ').map(String::from).collect();
    let mut p = ws.start_probe(&[], &[]);
    let fd = p.value("lock_fd");
    let mut want = inherited.clone();
    want.push(fd.clone());
    want.sort_by_key(|f| f.parse::<u32>().unwrap());
    assert_eq!(
        p.value("fds"),
        want.join(" "),
        "only what we were given, plus the lock fd"
    );
    assert_eq!(
        p.value(&format!("fd {fd}")),
        ws.lock_path().display().to_string()
    );
    // The supervisor's own copy is close-on-exec; the child's is not.
    let sup = p.pid().as_raw();
    let child: i32 = p.value("pid").parse().unwrap();
    let flags = |pid: i32| -> u32 {
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
        let octal = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap();
        u32::from_str_radix(octal.trim(), 8).unwrap()
    };
    assert_ne!(
        flags(sup) & libc::O_CLOEXEC as u32,
        0,
        "supervisor copy is CLOEXEC"
    );
    assert_eq!(
        flags(child) & libc::O_CLOEXEC as u32,
        0,
        "child copy is inherited"
    );
    assert!(ws.lock_held());
    p.signal(Signal::SIGTERM);
    p.expect_line("signal SIGTERM");
    p.signal(Signal::SIGTERM); // second stop signal: KILL at once
    assert_eq!(p.finish().code(), 128 + 9);
}

#[test]
fn metadata_names_the_child_and_is_emptied_on_release() {
    let ws = Workspace::new();
    let ino_before = {
        std::fs::create_dir_all(ws.path.join(".ralph")).unwrap();
        std::fs::write(ws.lock_path(), "").unwrap();
        std::fs::metadata(ws.lock_path()).unwrap().ino()
    };
    let p = ws.start_probe(&["--prompt", &"p".repeat(150)], &["--exit-on", "TERM"]);
    let child: u32 = p.value("pid").parse().unwrap();
    let m = ws.metadata();
    assert_eq!(m["pid"], child, "ralph's pid field is the child's");
    assert_eq!(m["child_pid"], child);
    assert_eq!(m["supervisor_pid"], p.pid().as_raw());
    assert_eq!(m["mode"], "primary");
    assert_eq!(m["workspace"], ws.path.display().to_string());
    let prompt = m["prompt"].as_str().unwrap();
    assert_eq!(prompt.chars().count(), 100);
    assert!(prompt.ends_with("..."));
    let started = m["started"].as_str().unwrap();
    assert!(started.ends_with('Z'), "{started}");
    chrono::DateTime::parse_from_rfc3339(started).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap();
    let start: u64 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(m["child_start_time"], start);
    assert_eq!(m["command"][1], "probe");

    p.signal(Signal::SIGTERM);
    let out = p.finish();
    assert_eq!(out.code(), 128 + 15);
    assert!(out.stdout.contains("cleanup done"));
    assert_eq!(std::fs::read_to_string(ws.lock_path()).unwrap(), "");
    assert_eq!(
        std::fs::metadata(ws.lock_path()).unwrap().ino(),
        ino_before,
        "same inode: never recreated"
    );
    assert!(!ws.lock_held());
}

#[test]
fn lock_survives_supervisor_sigkill_until_child_exits() {
    let ws = Workspace::new();
    let mut p = ws.start_probe(&[], &[]);
    let child: i32 = p.value("pid").parse().unwrap();
    p.signal(Signal::SIGKILL);
    p.wait(LIMIT);
    assert!(alive(child));
    assert!(
        ws.lock_held(),
        "the living child keeps the workspace locked"
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), Signal::SIGKILL).unwrap();
    wait_until("the lock to be freed by the child's exit", LIMIT, || {
        !ws.lock_held()
    });
}

#[test]
fn second_run_is_refused_naming_the_holder() {
    let ws = Workspace::new();
    let mut p = ws.start_probe(&["--prompt", "fix the login bug"], &["--exit-on", "TERM"]);
    let child = p.value("pid");
    let out = ws.run(&["run", "--", "true"]);
    assert_eq!(out.code(), 75, "{out:?}");
    let line = out.stderr.trim();
    assert_eq!(line.lines().count(), 1, "one line: {line}");
    assert!(line.contains(&format!("pid {child}")), "{line}");
    assert!(line.contains("fix the login bug"), "{line}");
    assert!(
        line.contains(&format!("supervisor pid {} alive", p.pid())),
        "{line}"
    );
    p.signal(Signal::SIGTERM);
    p.expect_line("cleanup done");
    assert_eq!(p.finish().code(), 143);
}

#[test]
fn flock1_and_ralph_supervise_see_each_other() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path.join(".ralph")).unwrap();
    // flock(1) holds the lock; it prints once it has it.
    let mut holder = Proc::spawn({
        let mut c = Command::new("flock");
        c.arg(ws.lock_path())
            .args(["sh", "-c", "echo locked; exec sleep 600"]);
        c.process_group(0);
        c
    });
    holder.expect_line("locked");
    let out = ws.run(&["run", "--", "true"]);
    assert_eq!(out.code(), 75, "{out:?}");
    assert!(out.stderr.contains("is taken"), "{}", out.stderr);
    // flock(1) and its sleep are one process group.
    nix::sys::signal::killpg(holder.pid(), Signal::SIGKILL).unwrap();
    drop(holder);
    wait_until("flock(1) to let go", LIMIT, || !ws.lock_held());
    // And the other way round: while we hold it, flock -n fails.
    let p = ws.start_probe(&[], &["--exit-on", "TERM"]);
    assert!(ws.lock_held());
    p.signal(Signal::SIGTERM);
    p.finish();
}

#[test]
fn leftover_group_members_get_term_then_kill() {
    let ws = Workspace::new();
    // The child exits at once, leaving a probe in its process group that ignores TERM.
    let script = background_probe(&ws, "", "exit 5");
    let mut p = Proc::spawn(ws.cmd(&["run", "--stop-grace", "300ms", "--", "sh", "-c", &script]));
    p.expect_line("ready");
    let orphan: i32 = p.value("pid").parse().unwrap();
    p.expect_line("signal SIGTERM");
    let out = p.finish();
    assert_eq!(out.code(), 5, "the child's own status: {out:?}");
    wait_until("the leftover to be killed", LIMIT, || !alive(orphan));
}

#[test]
fn cooperative_leftovers_end_on_term() {
    let ws = Workspace::new();
    let script = background_probe(&ws, "--exit-on TERM", "exit 0");
    let mut p = Proc::spawn(ws.cmd(&["run", "--stop-grace", "60s", "--", "sh", "-c", &script]));
    p.expect_line("ready");
    let orphan: i32 = p.value("pid").parse().unwrap();
    p.expect_line("cleanup done");
    let out = p.finish();
    assert_eq!(out.code(), 0);
    wait_until("the leftover to end", LIMIT, || !alive(orphan));
}

#[test]
fn leaked_grandchild_with_the_fd_cannot_keep_the_lock() {
    let ws = Workspace::new();
    // With `orphans = "leave"` the leftovers run on (by default they are ended: see
    // `containment.rs`). setsid puts the grandchild out of the child's group; it keeps
    // a copy of the lock fd. The child exits once the grandchild has reported its pid
    // from its new session.
    ws.write_policy("[stop]\norphans = \"leave\"\n");
    let pidfile = ws.path.join("leaked.pid");
    let script = format!(
        "setsid sh -c 'echo $$ > {p}.tmp && mv {p}.tmp {p} && exec sleep 600' </dev/null >/dev/null 2>&1 & \
         i=0; while [ ! -e {p} ] && [ $i -lt 2000 ]; do sleep 0.01; i=$((i+1)); done",
        p = pidfile.display()
    );
    let out = ws.run(&["run", "--", "sh", "-c", &script]);
    assert_eq!(out.code(), 0, "{out:?}");
    let leaked: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let holds_fd = || {
        std::fs::read_dir(format!("/proc/{leaked}/fd"))
            .map(|d| {
                d.filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
                    .any(|t| t == ws.lock_path())
            })
            .unwrap_or(false)
    };
    assert!(
        alive(leaked) && holds_fd(),
        "the grandchild lives with a copy of the lock fd"
    );
    assert!(!ws.lock_held(), "released explicitly despite the copy");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(leaked), Signal::SIGKILL).unwrap();
}

#[test]
fn orphans_are_reaped_by_the_subreaper() {
    let ws = Workspace::new();
    // Double-forked sleeps are re-parented to the supervisor, which must reap them.
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8; do (sleep 0.01 &) ; done; exec {} probe --exit-on TERM",
        bin()
    );
    let mut p = Proc::spawn(ws.cmd(&["run", "--", "sh", "-c", &script]));
    p.expect_line("ready");
    let probe: i32 = p.value("pid").parse().unwrap();
    let sup = p.pid().as_raw();
    wait_until("orphans reaped: only the probe is left", LIMIT, || {
        children_of(sup) == vec![probe]
    });
    p.signal(Signal::SIGTERM);
    assert_eq!(p.finish().code(), 143);
}

#[test]
fn idle_supervisor_does_not_wake_up() {
    let ws = Workspace::new();
    let p = ws.start_probe(&[], &["--exit-on", "TERM"]);
    // An idle supervisor sleeps in the kernel: not one wake-up in half a second.
    assert_idle(p.pid().as_raw(), std::time::Duration::from_millis(500));
    p.signal(Signal::SIGTERM);
    p.finish();
}

#[test]
fn workspace_defaults_to_git_toplevel() {
    let ws = Workspace::git();
    let sub = ws.path.join("a/b");
    std::fs::create_dir_all(&sub).unwrap();
    let out = Proc::spawn({
        let mut c = Command::new(bin());
        c.args([
            "run",
            "--",
            "sh",
            "-c",
            "cat \"$PWD/../../.ralph/loop.lock\" >/dev/null && echo ok",
        ]);
        c.current_dir(&sub);
        c
    })
    .finish();
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(ws.path.join(".ralph/loop.lock").exists());
    assert!(!sub.join(".ralph").exists());
}

#[test]
fn other_ralph_files_are_untouched() {
    let ws = Workspace::new();
    let agent = ws.path.join(".ralph/agent");
    std::fs::create_dir_all(&agent).unwrap();
    std::fs::write(agent.join("memories.md"), "remember this\n").unwrap();
    std::fs::write(ws.path.join(".ralph/loops.json"), "{\"loops\":[]}").unwrap();
    assert_eq!(ws.run(&["run", "--", "true"]).code(), 0);
    assert_eq!(
        std::fs::read_to_string(agent.join("memories.md")).unwrap(),
        "remember this\n"
    );
    assert_eq!(
        std::fs::read_to_string(ws.path.join(".ralph/loops.json")).unwrap(),
        "{\"loops\":[]}"
    );
}

/// A shell script that starts a probe in the background (in the child's process group),
/// waits for its ready file (so it has its signal handlers), then runs `then`.
fn background_probe(ws: &Workspace, probe_args: &str, then: &str) -> String {
    let ready = ws.path.join("probe.ready");
    let ready = ready.display();
    format!(
        "{bin} probe {probe_args} --ready-file {ready} & \
         i=0; while [ ! -e {ready} ] && [ $i -lt 2000 ]; do sleep 0.01; i=$((i+1)); done; {then}",
        bin = bin()
    )
}

/// `ralph-supervise -C WS run -- probe --exit 0`, started from `cwd`: the probe's report.
fn probe_report(ws: &Workspace, with_c: bool, cwd: &std::path::Path) -> Output {
    let mut cmd = Command::new(bin());
    if with_c {
        cmd.arg("-C").arg(&ws.path);
    }
    cmd.args(["run", "--", bin(), "probe", "--exit", "0"])
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .env_remove("RUST_LOG")
        .env_remove("RALPH_WORKSPACE_ROOT");
    let out = Proc::spawn(cmd).finish();
    assert_eq!(out.code(), 0, "{out:?}");
    out
}

fn reported<'a>(out: &'a Output, key: &str) -> &'a str {
    let prefix = format!("{key} ");
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key:?} line in {out:?}"))
}

#[test]
fn dash_c_makes_the_workspace_the_primary_childs_directory_and_root() {
    let ws = Workspace::new();
    let elsewhere = Workspace::new();
    let out = probe_report(&ws, true, &elsewhere.path);
    let ws_path = ws.path.to_str().unwrap();
    assert_eq!(reported(&out, "cwd"), ws_path, "{out:?}");
    assert_eq!(reported(&out, "workspace_root"), ws_path, "{out:?}");
}

#[test]
fn without_dash_c_the_child_keeps_the_users_directory_and_knows_the_root() {
    let ws = Workspace::git();
    let sub = ws.path.join("src/deep");
    std::fs::create_dir_all(&sub).unwrap();
    let out = probe_report(&ws, false, &sub);
    assert_eq!(reported(&out, "cwd"), sub.to_str().unwrap(), "{out:?}");
    assert_eq!(
        reported(&out, "workspace_root"),
        ws.path.to_str().unwrap(),
        "the git top level is the workspace: {out:?}"
    );
}

#[test]
fn the_policy_env_cannot_override_what_the_child_is_told() {
    let ws = Workspace::new();
    // Refused (78, file:line:col) rather than silently overridden.
    ws.write_policy("[run.env]\nRALPH_WORKSPACE_ROOT = \"/nowhere\"\nEXTRA = \"kept\"\n");
    let out = ws.run(&["run", "--", "true"]);
    assert_eq!(out.code(), 78, "{out:?}");
    assert!(
        out.stderr
            .contains(":2:1: run.env: RALPH_WORKSPACE_ROOT is ralph-supervise's"),
        "{out:?}"
    );
    // What the child is told comes from the supervisor, whatever the environment it
    // was started in says.
    ws.write_policy("[run.env]\nEXTRA = \"kept\"\n");
    let mut cmd = Command::new(bin());
    cmd.arg("-C").arg(&ws.path);
    cmd.args(["run", "--", bin(), "probe", "--exit", "0"])
        .stdin(std::process::Stdio::null())
        .env_remove("RUST_LOG")
        .env("RALPH_WORKSPACE_ROOT", "/nowhere")
        .env("RALPH_LOCK_FD", "99");
    let out = Proc::spawn(cmd).finish();
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(reported(&out, "workspace_root"), ws.path.to_str().unwrap());
    let fd = reported(&out, "lock_fd");
    assert_ne!(fd, "99", "{out:?}");
    assert_eq!(
        reported(&out, &format!("fd {fd}")),
        ws.lock_path().to_str().unwrap(),
        "RALPH_LOCK_FD names the inherited lock: {out:?}"
    );
}

/// The supervisor's own files never reach a commit: `.ralph/supervise/` gets a
/// `.gitignore` of `*` (an earlier version's directory too), so `git add .` (ralph's
/// auto-commit) leaves the history out; one that is there is never changed.
#[test]
fn the_supervisors_own_files_stay_out_of_git() {
    let ws = Workspace::git();
    // A history an earlier version left, without a .gitignore.
    let dir = ws.path.join(".ralph/supervise");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("runs.jsonl"), "").unwrap();
    let out = ws.run(&["run", "--", "true"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join(".gitignore")).unwrap(),
        "*\n"
    );
    ws.git_cmd(&["add", "."]);
    let staged = ws.git_cmd(&["diff", "--cached", "--name-only"]);
    assert!(
        staged.contains(".ralph/loop.lock"),
        "git add . did run: {staged}"
    );
    assert!(!staged.contains(".ralph/supervise"), "{staged}");

    // Emptied by someone who wants the history committed: left as it is.
    std::fs::write(dir.join(".gitignore"), "").unwrap();
    let out = ws.run(&["run", "--", "true"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(dir.join(".gitignore")).unwrap(), "");
    assert_eq!(
        std::fs::read_to_string(dir.join("runs.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );
}
