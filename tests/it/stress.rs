//! Stress: many supervisors at once on one workspace. Mutual exclusion is checked by the
//! children themselves (`mkdir` is atomic: a second child inside the lock cannot create
//! the marker directory), and history appends from concurrent supervisors must all land
//! whole.

use std::time::Instant;

use crate::harness::*;

/// Parses `.ralph/supervise/runs.jsonl` strictly: every line must be a whole record.
fn history_lines(ws: &Workspace) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(ws.path.join(".ralph/supervise/runs.jsonl")).unwrap();
    assert!(
        text.ends_with('\n'),
        "history does not end a line: {text:?}"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn record {l:?}: {e}")))
        .collect()
}

#[test]
fn thirty_two_waiters_run_one_at_a_time() {
    const N: usize = 32;
    let ws = Workspace::new();
    let inside = ws.path.join("inside");
    let log = ws.path.join("intervals");
    // Each child proves, itself, that nobody else is inside the lock: mkdir fails if
    // another child's marker is there. It records its start and end (ns since epoch).
    let script = format!(
        "mkdir {inside} || exit 99; s=$(date +%s%N); sleep 0.01; e=$(date +%s%N); \
         echo \"$s $e $1\" >> {log}; rmdir {inside} || exit 98",
        inside = inside.display(),
        log = log.display()
    );
    let started = Instant::now();
    let procs: Vec<Proc> = (0..N)
        .map(|i| {
            Proc::spawn(ws.cmd(&[
                "run",
                "--on-conflict",
                "wait",
                "--wait-timeout",
                "50s",
                "--",
                "sh",
                "-c",
                &script,
                "sh",
                &i.to_string(),
            ]))
        })
        .collect();
    for p in procs {
        let out = p.finish();
        assert_eq!(out.code(), 0, "{out:?}");
    }
    let took = started.elapsed();
    let text = std::fs::read_to_string(&log).unwrap();
    let mut spans: Vec<(u128, u128, usize)> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(spans.len(), N, "{text}");
    spans.sort();
    let mut ids: Vec<usize> = spans.iter().map(|s| s.2).collect();
    ids.sort();
    assert_eq!(ids, (0..N).collect::<Vec<_>>(), "every run ran once");
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two children inside at once: {pair:?}"
        );
    }
    assert!(!inside.exists());
    assert!(!ws.lock_held());
    assert_eq!(std::fs::read_to_string(ws.lock_path()).unwrap(), "");
    assert_eq!(history_lines(&ws).len(), N);
    println!("stress: {N} concurrent waiters, serialised, all exit 0, in {took:?}");
}

#[test]
fn twenty_waiters_append_whole_history_records() {
    const N: usize = 20;
    let ws = Workspace::new();
    let started = Instant::now();
    let procs: Vec<Proc> = (0..N)
        .map(|i| {
            Proc::spawn(ws.cmd(&[
                "run",
                "--on-conflict",
                "wait",
                "--prompt",
                &format!("waiter {i}"),
                "--",
                "true",
            ]))
        })
        .collect();
    let pids: Vec<u32> = procs.iter().map(|p| p.pid().as_raw() as u32).collect();
    for p in procs {
        let out = p.finish();
        assert_eq!(out.code(), 0, "{out:?}");
    }
    let records = history_lines(&ws);
    assert_eq!(records.len(), N);
    let mut prompts: Vec<String> = records
        .iter()
        .map(|r| r["prompt"].as_str().unwrap().to_string())
        .collect();
    prompts.sort();
    let mut want: Vec<String> = (0..N).map(|i| format!("waiter {i}")).collect();
    want.sort();
    assert_eq!(prompts, want);
    let mut sups: Vec<u32> = records
        .iter()
        .map(|r| r["supervisor_pid"].as_u64().unwrap() as u32)
        .collect();
    sups.sort();
    let mut pids = pids;
    pids.sort();
    assert_eq!(sups, pids);
    // `history --json` agrees.
    let out = ws.run(&["history", "--json", "--limit", "1000"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let listed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(N), "{}", out.stdout);
    println!(
        "stress: {N} waiters appended {N} whole history records in {:?}",
        started.elapsed()
    );
}

#[test]
fn twenty_worktree_loops_append_history_at_once() {
    const N: usize = 20;
    let ws = Workspace::git();
    // A primary holds the workspace, so every launch below goes to its own worktree and
    // all of them append the main repository's history concurrently on exit.
    let primary = ws.start_probe(&["--prompt", "primary"], &["--exit-on", "TERM"]);
    let started = Instant::now();
    let procs: Vec<Proc> = (0..N)
        .map(|i| {
            let mut cmd = ws.cmd(&[
                "run",
                "--on-conflict",
                "worktree",
                "--prompt",
                &format!("stress loop {i}"),
                "--",
                "sh",
                "-c",
                "sleep 0.2",
            ]);
            cmd.env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.com")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.com");
            Proc::spawn(cmd)
        })
        .collect();
    for p in procs {
        let out = p.finish();
        assert_eq!(out.code(), 0, "{out:?}");
    }
    let took = started.elapsed();
    primary.signal(nix::sys::signal::Signal::SIGTERM);
    let out = primary.finish();
    assert_eq!(out.code(), 143, "{out:?}");
    let records = history_lines(&ws);
    assert_eq!(records.len(), N + 1);
    let worktree_ids: std::collections::HashSet<&str> = records
        .iter()
        .filter(|r| r["mode"] == "worktree")
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(worktree_ids.len(), N, "distinct loop ids");
    // Every loop deregistered itself: the registry is valid JSON with no loops.
    let reg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.path.join(".ralph/loops.json")).unwrap()).unwrap();
    assert_eq!(reg["loops"].as_array().map(Vec::len), Some(0), "{reg}");
    println!(
        "stress: {N} concurrent worktree loops, {} history records, in {took:?}",
        N + 1
    );
}
