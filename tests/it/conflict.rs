//! Conflict policies against real second processes holding the lock: the binary itself
//! and flock(1).

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::*;

/// flock(1) holding the workspace lock in its own process group, until killed.
/// Waits until the process's stderr contains `text`.
fn stderr_has(p: &Proc, text: &str) {
    wait_until(&format!("{text:?} on stderr"), LIMIT, || {
        p.stderr().contains(text)
    });
}

#[test]
fn fail_names_the_holder_with_the_configured_code() {
    let ws = Workspace::git();
    let mut holder = ws.start_probe(&["--prompt", "refactor parser"], &["--exit-on", "TERM"]);
    let out = ws.run(&[
        "run",
        "--on-conflict",
        "fail",
        "--conflict-exit-code",
        "9",
        "--",
        "true",
    ]);
    assert_eq!(out.code(), 9, "{out:?}");
    let line = out.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains(&format!("pid {}", holder.value("pid"))),
        "{line}"
    );
    assert!(line.contains("\"refactor parser\""), "{line}");
    assert!(line.contains(" ago)"), "how long it has run: {line}");
    assert!(
        line.contains(&format!("supervisor pid {} alive", holder.pid())),
        "{line}"
    );
    holder.signal(Signal::SIGTERM);
    holder.expect_line("cleanup done");
}

#[test]
fn wait_blocks_without_polling_and_hands_off_on_release() {
    let ws = Workspace::new();
    let holder = FlockHolder::start(&ws);
    let mut waiter = Proc::spawn(waiting_probe(&ws));
    stderr_has(&waiter, "waiting for the lock held by");
    // Waiting costs no wake-ups.
    assert_idle(waiter.pid().as_raw(), Duration::from_millis(300));
    assert!(
        waiter.seen().is_empty(),
        "the child does not run while the lock is held"
    );
    holder.release();
    waiter.expect_line("ready");
    assert_eq!(waiter.finish().code(), 0);
}

#[test]
fn wait_timeout_fails_with_the_conflict_code() {
    let ws = Workspace::new();
    let holder = FlockHolder::start(&ws);
    let t0 = Instant::now();
    let out = ws.run(&[
        "run",
        "--on-conflict",
        "wait",
        "--wait-timeout",
        "300ms",
        "--",
        "true",
    ]);
    let waited = t0.elapsed();
    assert_eq!(out.code(), 75, "{out:?}");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(
        out.stderr.contains("gave up waiting after 300ms"),
        "{}",
        out.stderr
    );
    holder.release();
}

#[test]
fn wait_timeout_then_worktree_outside_git_says_so() {
    let ws = Workspace::new();
    let policy = ws.path.join("p.toml");
    std::fs::write(
        &policy,
        "[conflict]\npolicy = \"wait\"\nwait_timeout = \"100ms\"\nafter_timeout = \"worktree\"\n",
    )
    .unwrap();
    let holder = FlockHolder::start(&ws);
    let out = ws.run(&["run", "--policy", policy.to_str().unwrap(), "--", "true"]);
    assert_eq!(out.code(), 75, "{out:?}");
    assert!(
        out.stderr.contains("is not in a git repository"),
        "{}",
        out.stderr
    );
    holder.release();
}

#[test]
fn stop_signals_end_the_wait_and_nothing_runs() {
    for (sig, code) in [
        (Signal::SIGTERM, 143),
        (Signal::SIGINT, 130),
        (Signal::SIGHUP, 129),
    ] {
        let ws = Workspace::new();
        let mut holder = ws.start_probe(&["--prompt", "holder"], &["--exit-on", "TERM"]);
        let before = std::fs::read(ws.lock_path()).unwrap();
        let ran = ws.path.join("ran");
        let mut waiter = waiter_touching(&ws, &ran);
        waiter.signal(sig);
        assert_eq!(waiter.wait(LIMIT).code(), Some(code), "{sig}");
        assert!(!ran.exists(), "the child never ran");
        assert_eq!(
            std::fs::read(ws.lock_path()).unwrap(),
            before,
            "holder's metadata untouched"
        );
        assert!(ws.lock_held());
        holder.signal(Signal::SIGTERM);
        holder.expect_line("cleanup done");
    }
}

#[test]
fn stray_signals_neither_kill_nor_end_the_wait() {
    let ws = Workspace::new();
    let holder = FlockHolder::start(&ws);
    let mut waiter = Proc::spawn(waiting_probe(&ws));
    stderr_has(&waiter, "waiting for the lock held by");
    for sig in [Signal::SIGALRM, Signal::SIGUSR1, Signal::SIGWINCH] {
        waiter.signal(sig);
        stderr_has(&waiter, &format!("ignoring {} while waiting", sig.as_str()));
    }
    assert!(waiter.seen().is_empty(), "still waiting");
    holder.release();
    waiter.expect_line("ready");
    assert_eq!(waiter.finish().code(), 0);
}

/// The wait blocks in flock(2) itself and a watcher thread interrupts it: a stop
/// signal sent the moment the wait begins (before or after the flock is entered) still
/// ends it, every time.
#[test]
fn a_stop_signal_as_the_wait_begins_still_ends_it() {
    let ws = Workspace::new();
    let holder = FlockHolder::start(&ws);
    let ran = ws.path.join("ran");
    for _ in 0..8 {
        // Said just before the wait blocks: the signal lands around the flock's start.
        let mut waiter = waiter_touching(&ws, &ran);
        waiter.signal(Signal::SIGTERM);
        assert_eq!(waiter.wait(LIMIT).code(), Some(143));
    }
    assert!(!ran.exists(), "the child never ran");
    holder.release();
}

/// Signals that interrupt the blocked flock but do not end the wait (a stray one, the
/// real-time signal the wait uses for itself sent by someone else, a stop and a
/// continue from outside) each leave it waiting, and the hand-off still happens.
#[test]
fn the_wait_goes_on_after_stray_signals_and_a_stop() {
    let ws = Workspace::new();
    let holder = FlockHolder::start(&ws);
    let mut cmd = waiting_probe(&ws);
    // A job of its own: a job-control stop sent to it alone stops its whole group.
    cmd.process_group(0);
    let mut waiter = Proc::spawn(cmd);
    let pid = waiter.pid().as_raw();
    stderr_has(&waiter, "waiting for the lock held by");
    wait_until("the wait to block", LIMIT, || asleep_waiting(pid));
    // SIGRTMIN+2: the signal the wait interrupts its own flock with.
    let wake = libc::SIGRTMIN() + 2;
    // SAFETY: kill(2) of a child we started, with a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, wake) }, 0);
    stderr_has(&waiter, "ignoring SIGRTMIN+2 while waiting");
    waiter.signal(Signal::SIGUSR1);
    stderr_has(&waiter, "ignoring SIGUSR1 while waiting");
    // Ctrl-Z's signal from outside: it stops itself, as a job does, until continued.
    waiter.signal(Signal::SIGTSTP);
    wait_until("the waiter to stop", LIMIT, || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('T'))
    });
    waiter.signal(Signal::SIGCONT);
    wait_until("the wait to block again", LIMIT, || asleep_waiting(pid));
    assert!(waiter.seen().is_empty(), "still waiting");
    holder.release();
    waiter.expect_line("ready");
    assert_eq!(waiter.finish().code(), 0);
}

#[test]
fn takeover_of_a_cooperative_holder() {
    let ws = Workspace::new();
    let mut holder = ws.start_probe(&[], &["--exit-on", "TERM"]);
    let mut taker = Proc::spawn(ws.cmd(&[
        "run",
        "--on-conflict",
        "takeover",
        "--",
        bin(),
        "probe",
        "--exit-on",
        "TERM",
    ]));
    holder.expect_line("cleanup done");
    assert_eq!(holder.wait(LIMIT).code(), Some(143));
    taker.expect_line("ready");
    // The supervisor records the child's pid after spawning it: wait for the write.
    let pid: u64 = taker.value("pid").parse().unwrap();
    wait_until("the metadata to name the taker's child", LIMIT, || {
        std::fs::read_to_string(ws.lock_path())
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|m| m["pid"] == pid)
    });
    assert!(
        !ws.path.join(".ralph/stop-requested").exists(),
        "the request was consumed"
    );
    taker.signal(Signal::SIGTERM);
    assert_eq!(taker.finish().code(), 143);
}

#[test]
fn takeover_of_a_holder_that_ignores_term_escalates() {
    let ws = Workspace::new();
    // The holder's own supervisor would wait 10 minutes; the taker's grace is 300ms.
    let mut holder = ws.start_probe(&["--stop-grace", "10m"], &[]);
    let holder_child: i32 = holder.value("pid").parse().unwrap();
    let mut taker = Proc::spawn(ws.cmd(&[
        "run",
        "--on-conflict",
        "takeover",
        "--stop-grace",
        "300ms",
        "--",
        bin(),
        "probe",
        "--exit-on",
        "TERM",
    ]));
    holder.expect_line("signal SIGTERM");
    taker.expect_line("ready");
    stderr_has(&taker, "killing it");
    // The holder's supervisor is killed, or sees its child killed first and exits 137.
    let status = holder.wait(LIMIT);
    assert!(
        status.signal() == Some(9) || status.code() == Some(137),
        "{status:?}"
    );
    wait_until("the holder's child to die", LIMIT, || !alive(holder_child));
    taker.signal(Signal::SIGTERM);
    assert_eq!(taker.finish().code(), 143);
}

#[test]
fn takeover_refuses_to_signal_an_unconfirmed_pid() {
    let ws = Workspace::new();
    let holder = FlockHolder::start(&ws);
    // Metadata as ralph writes it: no start time, so the pid cannot be confirmed.
    let pid = holder.pid().as_raw();
    let meta =
        format!(r#"{{"pid":{pid},"started":"2026-01-01T00:00:00Z","prompt":"ralph's own loop"}}"#);
    std::fs::write(ws.lock_path(), &meta).unwrap();
    let out = ws.run(&[
        "run",
        "--on-conflict",
        "takeover",
        "--stop-grace",
        "100ms",
        "--",
        "true",
    ]);
    assert_eq!(out.code(), 75, "{out:?}");
    assert!(
        out.stderr.contains("identity cannot be confirmed"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("refusing to take over"),
        "{}",
        out.stderr
    );
    assert!(alive(pid), "flock(1) was not signalled");
    assert_eq!(
        std::fs::read_to_string(ws.lock_path()).unwrap(),
        meta,
        "holder's metadata untouched"
    );
    assert!(
        ws.path.join(".ralph/stop-requested").exists(),
        "asked politely, as ralph loops stop does"
    );

    // A recorded start time that does not match is refused too.
    let fake = format!(
        r#"{{"pid":{pid},"started":"2026-01-01T00:00:00Z","prompt":"p","child_pid":{pid},"child_start_time":1}}"#
    );
    std::fs::write(ws.lock_path(), &fake).unwrap();
    let out = ws.run(&[
        "run",
        "--on-conflict",
        "takeover",
        "--stop-grace",
        "100ms",
        "--",
        "true",
    ]);
    assert_eq!(out.code(), 75, "{out:?}");
    assert!(out.stderr.contains("do not match"), "{}", out.stderr);
    assert!(alive(pid));
    holder.release();
}

#[test]
fn bad_policy_file_is_78_before_anything_is_locked() {
    let ws = Workspace::new();
    let policy = ws.path.join("bad.toml");
    std::fs::write(&policy, "[stop]\ngrase = \"10s\"\n").unwrap();
    let out = ws.run(&[
        "run",
        "--policy",
        policy.to_str().unwrap(),
        "--",
        "touch",
        "ran",
    ]);
    assert_eq!(out.code(), 78, "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        format!(
            "ralph-supervise: {}:2:1: unknown key \"grase\" in [stop]; expected one of signal, grace, orphans, containment",
            policy.display()
        )
    );
    assert!(!ws.path.join(".ralph").exists(), "nothing locked");
    assert!(!ws.path.join("ran").exists(), "nothing run");
    let check = ws.run(&["policy", "check", policy.to_str().unwrap()]);
    assert_eq!(check.code(), 78);
}

#[test]
fn workspace_policy_file_is_found_and_flags_win() {
    let ws = Workspace::new();
    ws.write_policy("[conflict]\npolicy = \"fail\"\nexit_code = 9\n[stop]\ngrace = \"3s\"\n");
    let holder = FlockHolder::start(&ws);
    assert_eq!(ws.run(&["run", "--", "true"]).code(), 9, "from the file");
    assert_eq!(
        ws.run(&["run", "--conflict-exit-code", "11", "--", "true"])
            .code(),
        11,
        "flag wins"
    );
    holder.release();
    let show = ws.run(&["policy", "show", "--stop-grace", "5s"]);
    assert_eq!(show.code(), 0, "{show:?}");
    let file = ws.path.join(".ralph/supervise.toml").display().to_string();
    let line = |key: &str| {
        show.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("{key} in {}", show.stdout))
            .to_string()
    };
    assert!(line("exit_code").contains(&file), "{}", line("exit_code"));
    assert!(
        line("grace").contains("\"5s\"") && line("grace").contains("--stop-grace"),
        "{}",
        line("grace")
    );
    assert!(line("orphans").contains("default"), "{}", line("orphans"));
}

#[test]
fn shipped_example_policies_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = Proc::spawn({
                let mut c = Command::new(bin());
                c.args(["policy", "check"]).arg(&path);
                c
            })
            .finish();
            assert_eq!(out.code(), 0, "{}: {out:?}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 4, "examples for each way of use");
}

/// `run --on-conflict wait -- touch RAN`, once it says it waits for the holder.
fn waiter_touching(ws: &Workspace, ran: &std::path::Path) -> Proc {
    let ran = ran.to_str().unwrap();
    let waiter = Proc::spawn(ws.cmd(&["run", "--on-conflict", "wait", "--", "touch", ran]));
    stderr_has(&waiter, "waiting for the lock held by");
    waiter
}

/// `run --on-conflict wait -- ralph-supervise probe --exit 0`, not yet spawned.
fn waiting_probe(ws: &Workspace) -> std::process::Command {
    ws.cmd(&[
        "run",
        "--on-conflict",
        "wait",
        "--",
        bin(),
        "probe",
        "--exit",
        "0",
    ])
}

/// The kernel's record of what happened in `.ralph/`, in order: `(name, what)`.
fn ralph_dir_events(inotify: &nix::sys::inotify::Inotify) -> Vec<(String, &'static str)> {
    use nix::sys::inotify::AddWatchFlags as F;
    let mut seen = Vec::new();
    while let Ok(events) = inotify.read_events() {
        for e in events {
            let name = e.name.map(|n| n.to_string_lossy().into_owned());
            let what = if e.mask.contains(F::IN_DELETE) {
                "deleted"
            } else {
                "modified"
            };
            seen.push((name.unwrap_or_default(), what));
        }
    }
    seen
}

/// Once the lock is ours, the file names us before anything else is set up (the cgroup,
/// the directory watch, a stale stop request's removal: milliseconds, during which a
/// concurrent `ralph run` failed hard on the empty file with "Failed to parse lock
/// metadata: Empty lock file"). The kernel orders the events: the lock file's write
/// comes before the stale `stop-requested` goes, taken at once or after a wait.
#[test]
fn the_lock_names_its_holder_before_the_rest_of_the_set_up() {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    for contended in [false, true] {
        let ws = Workspace::new();
        std::fs::create_dir_all(ws.path.join(".ralph")).unwrap();
        std::fs::write(ws.lock_path(), "").unwrap();
        std::fs::write(ws.path.join(".ralph/stop-requested"), "").unwrap();
        let holder = contended.then(|| FlockHolder::start(&ws));
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).unwrap();
        inotify
            .add_watch(
                &ws.path.join(".ralph"),
                AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_DELETE,
            )
            .unwrap();
        let mut p = Proc::spawn(ws.cmd(&["run", "--on-conflict", "wait", "--", "true"]));
        if let Some(holder) = holder {
            stderr_has(&p, "waiting for the lock held by");
            holder.release();
        }
        assert_eq!(p.wait(LIMIT).code(), Some(0), "{}", p.stderr());
        let events = ralph_dir_events(&inotify);
        let at = |want: (&str, &str)| {
            events
                .iter()
                .position(|(n, w)| (n.as_str(), *w) == want)
                .unwrap_or_else(|| panic!("no {want:?} in {events:?}"))
        };
        assert!(
            at(("loop.lock", "modified")) < at(("stop-requested", "deleted")),
            "contended {contended}: the stale stop request went before the lock file named \
             its holder: {events:?}"
        );
    }
}

/// A reader that reads the locked file as ralph does (`flock(LOCK_EX | LOCK_NB)`
/// refused, then `read_to_string`, which sizes its read by `fstat`) while the supervisor
/// rewrites it, here at every restart (the child's pid, the restart's record), a
/// thousand times: the file never shrinks under it while the lock is held (nor grows
/// but with room to spare), so such a read gets one version whole. It used to be cut to
/// each version's length: a read sized before a rewrite that grew it got the old
/// contents followed by the tail of the new (about 1 read in 1,000 here). Reads are not
/// atomic against a concurrent write on every file system (ext4: a `read` racing a
/// `pwrite` of the same page may mix them at 16-byte steps, about 1 in 5,000 here), so
/// torn reads are counted and printed, and the file's sizes are what is asserted.
#[test]
fn a_contending_reader_never_sees_the_locked_file_shrink() {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path.join(".ralph")).unwrap();
    let path = ws.lock_path();
    std::fs::write(&path, "").unwrap();
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        std::thread::spawn(move || {
            let (mut sizes, mut torn) = (Vec::new(), 0);
            while !done.load(Ordering::Relaxed) {
                let file = std::fs::File::open(&path).unwrap();
                let mut file = match nix::fcntl::Flock::lock(
                    file,
                    nix::fcntl::FlockArg::LockExclusiveNonblock,
                ) {
                    // Free: let go at once (dropping unlocks).
                    Ok(_free) => continue,
                    Err((file, _)) => file,
                };
                sizes.push(file.metadata().unwrap().size());
                let mut text = String::new();
                file.read_to_string(&mut text).unwrap();
                if !text.trim().is_empty()
                    && serde_json::from_str::<serde_json::Value>(&text).is_err()
                {
                    torn += 1;
                }
            }
            (sizes, torn)
        })
    };
    // `wait`: the reader's own probe may hold the lock for an instant as it starts.
    let out = ws.run(&[
        "run",
        "--on-conflict",
        "wait",
        "--restart",
        "always",
        "--max-restarts",
        "1000",
        "--restart-delay",
        "0s",
        "--",
        "true",
    ]);
    done.store(true, Ordering::Relaxed);
    let (sizes, torn) = reader.join().unwrap();
    println!("{} reads of the locked file, {torn} torn", sizes.len());
    assert!(out.stderr.contains("giving up"), "{out:?}");
    assert!(
        sizes.len() > 100,
        "the reader hardly ever met the lock held: {sizes:?}"
    );
    // Empty (0) only before the first write and after the release's truncation.
    let written: Vec<u64> = sizes.into_iter().filter(|&s| s > 0).collect();
    let shrunk = written.windows(2).filter(|w| w[1] < w[0]).count();
    let mut distinct = written.clone();
    distinct.dedup();
    assert_eq!(
        shrunk, 0,
        "the locked file shrank {shrunk} times: sizes {distinct:?}"
    );
    assert!(
        distinct.len() <= 3,
        "the locked file grew at many rewrites: {distinct:?}"
    );
}
