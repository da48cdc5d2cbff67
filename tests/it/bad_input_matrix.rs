//! The bad-input matrix through the binary: malformed policy files (78 with
//! `file:line:col`), bad flag values (2), non-UTF-8 arguments and prompts, corrupt,
//! binary and huge lock, registry and history files. `docs/RELIABILITY.md` lists each
//! row with its message and code.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::process::Command;

use crate::harness::*;

/// (policy text, where the error points `line:col`, words the message must contain)
const BAD_POLICIES: &[(&str, &str, &str)] = &[
    ("[conflict\npolicy = \"wait\"\n", "1:10", "invalid TOML"),
    ("[nope]\n", "1:2", "unknown section [nope]"),
    (
        "colour = \"red\"\n",
        "1:1",
        "unknown key \"colour\" at top level",
    ),
    ("conflict = 1\n", "1:1", "conflict"),
    ("[[conflict]]\npolicy = \"wait\"\n", "1:3", "found an array"),
    ("[conflict]\npolicy = \"sometimes\"\n", "2:10", "sometimes"),
    ("[conflict]\nmystery = 1\n", "2:1", "mystery"),
    (
        "[run.env]\nRUST_LOG = \"1\"\nRALPH_LOCK_FD = \"9\"\n",
        "3:1",
        "run.env: RALPH_LOCK_FD is ralph-supervise's to set",
    ),
    ("[conflict]\nwait_timeout = \"soon\"\n", "2:16", "soon"),
    ("[conflict]\nwait_timeout = 5\n", "2:16", "wait_timeout"),
    ("[conflict]\nexit_code = 300\n", "2:13", "exit_code"),
    ("[conflict]\nexit_code = 0\n", "2:13", "exit_code"),
    ("[conflict]\nafter_timeout = \"retry\"\n", "2:17", "retry"),
    (
        "[conflict]\npolicy = \"wait\"\npolicy = \"fail\"\n",
        "3:1",
        "duplicate",
    ),
    ("[worktree]\non_exit = \"explode\"\n", "2:11", "explode"),
    ("[worktree]\nsync = \"yes\"\n", "2:8", "sync"),
    ("[stop]\nsignal = \"SIGNOPE\"\n", "2:10", "SIGNOPE"),
    ("[stop]\ngrace = \"-5s\"\n", "2:9", "-5s"),
    ("[stop]\norphans = \"maybe\"\n", "2:11", "maybe"),
    ("[lock]\nhandover = \"sometimes\"\n", "2:12", "sometimes"),
    ("[stop]\ncontainment = \"jail\"\n", "2:15", "jail"),
    (
        "[limits]\nmemory_max = \"lots\"\n",
        "2:14",
        "limits.memory_max: \"lots\" is not a size",
    ),
    (
        "[limits]\nmemory_max = \"0%\"\n",
        "2:14",
        "share of the memory",
    ),
    ("[limits]\npids_max = 0\n", "2:12", "limits.pids_max: 0"),
    (
        "[limits]\npids_max = \"many\"\n",
        "2:12",
        "\"many\" is not a number",
    ),
    (
        "[limits]\ncpu_max = \"fast\"\n",
        "2:11",
        "\"fast\" is not a CPU share",
    ),
    (
        "[limits]\ncpu_max = 150\n",
        "2:11",
        "limits.cpu_max must be a string",
    ),
    ("[limits]\nrequired = \"yes\"\n", "2:12", "limits.required"),
    ("[restart]\nmax = -1\n", "2:7", "max"),
    ("[restart]\npolicy = \"sometimes\"\n", "2:10", "sometimes"),
    (
        "[restart.exit]\n75 = \"later\"\n",
        "2:6",
        "\"later\" is not an action",
    ),
    (
        "[restart.exit]\n75 = 30\n",
        "2:6",
        "restart.exit.75 must be a string",
    ),
    (
        "[restart.exit]\n256 = \"stop\"\n",
        "2:1",
        "256 is out of range",
    ),
    (
        "[restart.exit]\n-1 = \"stop\"\n",
        "2:1",
        "\"-1\" is not an exit code",
    ),
    (
        "[restart]\nexit = \"stop\"\n",
        "2:8",
        "restart.exit must be a table",
    ),
    (
        "[restart]\nwindow = \"an hour\"\n",
        "2:10",
        "\"an hour\" is not a duration",
    ),
    (
        "[restart]\nwindow = 3600\n",
        "2:10",
        "restart.window must be a duration",
    ),
    ("[run]\nenv = 3\n", "2:7", "env"),
    ("[run]\nenv = { A = 1 }\n", "2:13", "A"),
    ("[run]\nmax_runtime = \"1x\"\n", "2:15", "1x"),
    (
        "[run]\nstall_timeout = \"0s\"\n",
        "2:17",
        "run.stall_timeout: \"0s\" is zero",
    ),
    (
        "[run]\nmax_runtime = \"0s\"\n",
        "2:15",
        "run.max_runtime: \"0s\" is zero",
    ),
    (
        "[restart]\nwindow = \"0s\"\n",
        "2:10",
        "restart.window: \"0s\" is zero",
    ),
    (
        "[hooks]\non_start = \"make up\"\n",
        "2:12",
        "hooks.on_start must be an array of strings",
    ),
    (
        "[hooks]\n[[hooks.on_start]]\n",
        "2:1",
        "hooks.on_start must be an array of strings, found an array of tables",
    ),
    ("[hooks]\non_exit = []\n", "2:11", "the array is empty"),
    ("[hooks]\ntimeout = \"soon\"\n", "2:11", "soon"),
    (
        "[worktree]\ncopy = [\"config/[ab.toml\"]\n",
        "2:9",
        "is not a usable glob",
    ),
    ("[log]\nformat = \"xml\"\n", "2:10", "xml"),
    ("[log]\nlevel = 7\n", "2:9", "level"),
    ("policy = \"wait\"\n", "1:1", "policy"),
    (
        "[fleet]\nendpoints = [\"etcd-1:2379\"]\n",
        "2:14",
        "\"etcd-1:2379\" is not an etcd URL (it must start with http:// or https://)",
    ),
    (
        "[fleet]\nendpoints = [\"http://a:2379\", \"http://b:port\"]\n",
        "2:31",
        "the port is not a number",
    ),
    (
        "[fleet]\nendpoints = [\"http://root:s3cret@etcd:2379\"]\n",
        "2:14",
        "no user or password in it",
    ),
    ("[fleet]\nttl = \"1s\"\n", "2:7", "\"1s\" is under 2s"),
    ("[fleet]\nttl = \"1500ms\"\n", "2:7", "under 2s"),
    (
        "[fleet]\nttl = \"100000000000s\"\n",
        "2:7",
        "is over etcd's longest lease, 9000000000s; use a shorter lease",
    ),
    (
        "[fleet]\nkey = \"acme/api main\"\n",
        "2:7",
        "\"acme/api main\" is not a usable key (' ' is not allowed",
    ),
    ("[fleet]\nkey = \"acme//api\"\n", "2:7", "not a usable key"),
    (
        "[fleet]\ntls_ca = \"/nonexistent/ca.pem\"\n",
        "2:10",
        "name a PEM file that exists",
    ),
    (
        "[fleet]\ntls_cert = \"/nonexistent/cert.pem\"\n",
        "2:12",
        "fleet.tls_cert",
    ),
];

fn check_bad_policy(ws: &Workspace, file: &std::path::Path, at: &str, words: &str) {
    for args in [
        vec!["policy", "check", file.to_str().unwrap()],
        vec!["run", "--policy", file.to_str().unwrap(), "--", "true"],
    ] {
        let out = ws.run(&args);
        let text = std::fs::read_to_string(file).unwrap_or_default();
        assert_eq!(out.code(), 78, "{text:?} via {args:?}: {out:?}");
        let line = out.stderr.trim_end();
        assert_eq!(line.lines().count(), 1, "{text:?}: {line}");
        let want = format!("ralph-supervise: {}:{at}: ", file.display());
        assert!(
            line.starts_with(&want),
            "{text:?}: want {want:?}, got {line}"
        );
        assert!(line.contains(words), "{text:?}: {words:?} not in {line}");
    }
    // The command never ran, and the workspace lock was never taken.
    assert!(!ws.lock_path().exists() || std::fs::read(ws.lock_path()).unwrap().is_empty());
}

#[test]
fn every_malformed_policy_shape_is_78_with_file_line_col() {
    let ws = Workspace::new();
    for (i, (text, at, words)) in BAD_POLICIES.iter().enumerate() {
        let file = ws.path.join(format!("bad-{i}.toml"));
        std::fs::write(&file, text).unwrap();
        check_bad_policy(&ws, &file, at, words);
    }
    // Not UTF-8: points at the first bad byte.
    let file = ws.path.join("latin1.toml");
    std::fs::write(&file, b"[log]\nlevel = \"caf\xe9\"\n").unwrap();
    check_bad_policy(&ws, &file, "2:13", "not valid UTF-8");
}

#[test]
fn unreadable_policy_paths_are_78() {
    let ws = Workspace::new();
    for (path, words) in [
        (ws.path.join("missing.toml"), "policy file not found"),
        (ws.path.clone(), "Is a directory"),
    ] {
        let out = ws.run(&["run", "--policy", path.to_str().unwrap(), "--", "true"]);
        assert_eq!(out.code(), 78, "{out:?}");
        assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains(words), "{}", out.stderr);
    }
}

#[test]
fn bad_flag_values_are_usage_errors() {
    let ws = Workspace::new();
    let cases: &[&[&str]] = &[
        &["run", "--on-conflict", "sometimes", "--", "true"],
        &["run", "--wait-timeout", "soon", "--", "true"],
        &["run", "--wait-timeout", "-1s", "--", "true"],
        &["run", "--conflict-exit-code", "300", "--", "true"],
        &["run", "--conflict-exit-code", "0", "--", "true"],
        &["run", "--conflict-exit-code", "x", "--", "true"],
        &["run", "--restart", "maybe", "--", "true"],
        &["run", "--max-restarts", "-1", "--", "true"],
        &["run", "--restart-delay", "later", "--", "true"],
        &["run", "--restart-window", "soon", "--", "true"],
        &["run", "--restart-exit", "75=later", "--", "true"],
        &["run", "--restart-exit", "256=stop", "--", "true"],
        &["run", "--restart-exit", "75", "--", "true"],
        &["run", "--max-runtime", "1x", "--", "true"],
        &["run", "--stall-timeout", "0s", "--", "true"],
        &["run", "--max-runtime", "0s", "--", "true"],
        &["run", "--restart-window", "0s", "--", "true"],
        &["run", "--stop-grace", "", "--", "true"],
        &["run", "--handover=sometimes", "--", "true"],
        &["run", "--log-format", "xml", "--", "true"],
        &["run", "--fleet-ttl", "1s", "--", "true"],
        &["run", "--fleet-ttl", "9000000001s", "--", "true"],
        &["run", "--fleet-endpoints", "etcd:2379", "--", "true"],
        &["run", "--fleet-key", "a b", "--", "true"],
        &["run", "--containment", "jail", "--", "true"],
        &["run", "--frobnicate", "--", "true"],
        &["run"],
        &["stop", "--signal", "SIGNOPE"],
        &["stop", "--timeout", "forever"],
        &["wait", "--timeout", "x"],
        &["history", "--limit", "many"],
        &["completions", "klingon"],
        &["no-such-subcommand"],
    ];
    for args in cases {
        let out = ws.run(args);
        assert_eq!(out.code(), 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains("error:"), "{args:?}: {}", out.stderr);
    }
    // A whole number past TOML's 64 bits is still a number, out of the key's range.
    let out = ws.run(&[
        "run",
        "--max-restarts",
        "99999999999999999999",
        "--",
        "true",
    ]);
    assert_eq!(out.code(), 2, "{out:?}");
    let words = "restart.max: 99999999999999999999 is out of range";
    assert!(out.stderr.contains(words), "{}", out.stderr);
    assert!(
        !ws.path.join(".ralph").exists(),
        "a usage error touched .ralph"
    );
}

#[test]
fn non_utf8_arguments_and_prompt_pass_through_exactly() {
    let ws = Workspace::new();
    let during = ws.path.join("meta-during");
    let got = ws.path.join("arg-bytes");
    let arg = OsStr::from_bytes(b"a\xffb\xc3(");
    let prompt = OsStr::from_bytes(b"fix \xfe the \xc0\xaf bug");
    let script = format!(
        "printf %s \"$1\" > {}; cat {} > {}",
        got.display(),
        ws.lock_path().display(),
        during.display()
    );
    let mut cmd = ws.cmd(&["run", "--prompt"]);
    cmd.arg(prompt)
        .args(["--", "sh", "-c", &script, "sh"])
        .arg(arg);
    let out = Proc::spawn(cmd).finish();
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(std::fs::read(&got).unwrap(), arg.as_bytes(), "exact bytes");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&during).unwrap()).expect("valid JSON metadata");
    assert_eq!(meta["prompt"], "fix \u{fffd} the \u{fffd}\u{fffd} bug");
    assert_eq!(meta["command"][4], "a\u{fffd}b\u{fffd}(");
    let history = std::fs::read(ws.path.join(".ralph/supervise/runs.jsonl")).unwrap();
    serde_json::from_slice::<serde_json::Value>(&history).expect("valid history");
    assert_eq!(std::fs::read(ws.lock_path()).unwrap(), b"");
}

#[test]
fn non_utf8_workspace_path_runs_with_valid_metadata() {
    let base = Workspace::new();
    let dir = base.path.join(OsString::from_vec(b"ws-\xff\xfe".to_vec()));
    std::fs::create_dir(&dir).unwrap();
    let during = base.path.join("meta-during");
    let mut cmd = Command::new(bin());
    cmd.arg("-C")
        .arg(&dir)
        .args(["run", "--", "sh", "-c", "cat .ralph/loop.lock > \"$0\""])
        .arg(&during)
        .current_dir(&dir);
    let out = Proc::spawn(cmd).finish();
    assert_eq!(out.code(), 0, "{out:?}");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&during).unwrap()).expect("valid JSON metadata");
    assert!(meta["pid"].is_u64(), "{meta}");
    assert_eq!(std::fs::read(dir.join(".ralph/loop.lock")).unwrap(), b"");
}

#[test]
fn odd_lock_paths_are_refused() {
    // A dangling symlink, and .ralph a regular file (the symlink, directory and FIFO
    // rows are in bad_input.rs).
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path.join(".ralph")).unwrap();
    std::os::unix::fs::symlink(ws.path.join("nowhere"), ws.lock_path()).unwrap();
    let out = ws.run(&["run", "--", "true"]);
    assert_eq!(out.code(), 125, "{out:?}");
    assert!(out.stderr.contains("symbolic link"), "{}", out.stderr);
    assert!(
        !ws.path.join("nowhere").exists(),
        "followed the dangling link"
    );

    let ws = Workspace::new();
    std::fs::write(ws.path.join(".ralph"), "not a dir").unwrap();
    let out = ws.run(&["run", "--", "true"]);
    assert_eq!(out.code(), 125, "{out:?}");
    assert!(out.stderr.contains("not a directory"), "{}", out.stderr);
    assert_eq!(out.stderr.trim_end().lines().count(), 1);
    assert_eq!(
        std::fs::read_to_string(ws.path.join(".ralph")).unwrap(),
        "not a dir"
    );
}

/// 50 MB of pseudo-random bytes.
fn garbage(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn corrupt_unlocked_lock_files_are_overwritten() {
    for (what, bytes) in [
        ("truncated", b"{\"pid\":12".to_vec()),
        ("binary", garbage(4096)),
        ("huge", garbage(50 << 20)),
        ("not an object", b"[1,2,3]".to_vec()),
    ] {
        let ws = Workspace::new();
        std::fs::create_dir_all(ws.path.join(".ralph")).unwrap();
        std::fs::write(ws.lock_path(), &bytes).unwrap();
        let during = ws.path.join("meta-during");
        let out = ws.run(&[
            "run",
            "--",
            "sh",
            "-c",
            &format!(
                "head -c 65536 {} > {}",
                ws.lock_path().display(),
                during.display()
            ),
        ]);
        assert_eq!(out.code(), 0, "{what}: {out:?}");
        let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&during).unwrap())
            .unwrap_or_else(|e| panic!("{what}: metadata during the run is not JSON: {e}"));
        assert!(meta["pid"].is_u64(), "{what}: {meta}");
        assert_eq!(std::fs::read(ws.lock_path()).unwrap(), b"", "{what}");
    }
}

#[test]
fn corrupt_locked_lock_file_names_the_holder_and_is_kept() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path.join(".ralph")).unwrap();
    let bytes = garbage(3000);
    std::fs::write(ws.lock_path(), &bytes).unwrap();
    let mut holder = Proc::spawn({
        let mut c = Command::new("flock");
        c.arg(ws.lock_path())
            .args(["sh", "-c", "echo \"pid $$\"; echo ready; exec sleep 30"]);
        c
    });
    holder.expect_line("ready");
    let out = ws.run(&["run", "--on-conflict", "fail", "--", "true"]);
    assert_eq!(out.code(), 75, "{out:?}");
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("unreadable metadata"), "{}", out.stderr);
    assert_eq!(
        std::fs::read(ws.lock_path()).unwrap(),
        bytes,
        "held file kept"
    );
    let status = ws.run(&["status", "--json"]);
    assert_eq!(status.code(), 0, "{status:?}");
}

/// The contents of every copy of a corrupt registry kept aside in `.ralph/`.
fn corrupt_copies(ws: &Workspace) -> Vec<Vec<u8>> {
    let entries = std::fs::read_dir(ws.path.join(".ralph")).unwrap().flatten();
    let copies = entries.filter(|e| {
        let name = e.file_name();
        name.to_string_lossy().starts_with("loops.json.corrupt-")
    });
    copies.map(|e| std::fs::read(e.path()).unwrap()).collect()
}

#[test]
fn corrupt_registry_is_kept_aside_on_a_worktree_launch() {
    for (what, bytes) in [
        ("truncated", b"{\"loops\":[{\"id\":\"x\",\"pid\":".to_vec()),
        ("binary", garbage(4096)),
        ("huge", garbage(50 << 20)),
        ("loops not an array", b"{\"loops\":7}".to_vec()),
    ] {
        let ws = Workspace::git();
        std::fs::create_dir_all(ws.path.join(".ralph")).unwrap();
        let registry = ws.path.join(".ralph/loops.json");
        std::fs::write(&registry, &bytes).unwrap();
        let mut holder = Proc::spawn({
            let mut c = Command::new("flock");
            c.arg(ws.lock_path())
                .args(["sh", "-c", "echo \"pid $$\"; echo ready; exec sleep 30"]);
            c
        });
        holder.expect_line("ready");
        let during = ws.path.join("registry-during");
        let out = ws.run(&[
            "run",
            "--on-conflict",
            "worktree",
            "--prompt",
            "corrupt registry",
            "--",
            "sh",
            "-c",
            &format!(
                // Read under a shared flock, as ralph reads it: an edit in progress
                // (50 MB of padding being written) is never seen half done. The loop
                // is registered after it is spawned (the entry holds its pid): wait
                // for a key of our entry, not `"id"`, which the truncated file has.
                "until flock -s {reg} grep -q '\"worktree_path\"' {reg}; do sleep 0.01; done; \
                 flock -s {reg} cat {reg} > {}",
                during.display(),
                reg = registry.display()
            ),
        ]);
        assert_eq!(out.code(), 0, "{what}: {out:?}");
        assert!(out.stderr.contains("kept a copy"), "{what}: {}", out.stderr);
        assert_eq!(corrupt_copies(&ws), std::slice::from_ref(&bytes), "{what}");
        let reg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&during).unwrap()).unwrap();
        assert_eq!(reg["loops"].as_array().unwrap().len(), 1, "{what}: {reg}");
        let after: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&registry).unwrap()).unwrap();
        assert_eq!(after["loops"].as_array().unwrap().len(), 0, "{what}");
    }
}

#[test]
fn corrupt_registry_keeps_its_live_loops_on_a_worktree_launch() {
    // ralph's loop, alive (a real process), and an entry cut short after it.
    let ws = Workspace::git();
    std::fs::create_dir_all(ws.path.join(".ralph")).unwrap();
    let live = Proc::spawn({
        let mut c = Command::new("sleep");
        c.arg("100");
        c
    });
    let ralph_entry = format!(
        r#"{{"id":"loop-1700000000-ab12","pid":{},"started":"2026-01-02T03:04:05.678901234Z","prompt":"ralph's","workspace":"{}","hat":"builder"}}"#,
        live.pid(),
        ws.path.display()
    );
    let bytes = format!(r#"{{"loops":[{ralph_entry},{{"id":"loop-1700000001-cd34","pid":"#);
    let registry = ws.path.join(".ralph/loops.json");
    std::fs::write(&registry, &bytes).unwrap();
    let listed = |ws: &Workspace| {
        let out = ws.run(&["list", "--json"]);
        assert_eq!(out.code(), 0, "{out:?}");
        out.stdout
    };
    assert!(listed(&ws).contains("loop-1700000000-ab12"));

    let holder = FlockHolder::start(&ws);
    let out = ws.run(&[
        "run",
        "--on-conflict",
        "worktree",
        "--prompt",
        "x",
        "--",
        "true",
    ]);
    holder.release();
    assert_eq!(out.code(), 0, "{out:?}");
    let warnings: Vec<_> = out
        .stderr
        .lines()
        .filter(|l| l.contains("loop registry was corrupt"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    assert!(
        warnings[0].contains("kept a copy, and 1 of its entries"),
        "{}",
        out.stderr
    );
    assert_eq!(corrupt_copies(&ws), [bytes.as_bytes()]);
    // The live loop is still listed, every field of it as ralph wrote it.
    let after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&registry).unwrap()).unwrap();
    let want: serde_json::Value = serde_json::from_str(&ralph_entry).unwrap();
    assert_eq!(after["loops"], serde_json::json!([want]), "{after}");
    assert!(listed(&ws).contains("loop-1700000000-ab12"));
    drop(live);
}

#[test]
fn corrupt_history_costs_only_its_bad_lines() {
    let ws = Workspace::new();
    assert_eq!(ws.run(&["run", "--", "true"]).code(), 0);
    let path = ws.path.join(".ralph/supervise/runs.jsonl");
    let mut text = std::fs::read(&path).unwrap();
    text.extend_from_slice(b"\xff\xfe binary \x00 junk\n{\"id\":\"torn");
    std::fs::write(&path, &text).unwrap();
    assert_eq!(ws.run(&["run", "--", "true"]).code(), 0);
    let out = ws.run(&["history", "--json"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let listed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{}", out.stdout);
    let out = ws.run(&["history"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        std::fs::read(&path).unwrap().starts_with(&text),
        "history rewritten"
    );
}

/// A password written into an endpoint URL is refused, and not repeated.
#[test]
fn a_password_in_a_fleet_endpoint_is_refused_without_repeating_it() {
    let ws = Workspace::new();
    let file = ws.path.join("p.toml");
    std::fs::write(
        &file,
        "[fleet]\nendpoints = [\"http://root:s3cret@etcd:2379\"]\n",
    )
    .unwrap();
    for args in [
        vec!["policy", "check", file.to_str().unwrap()],
        vec!["policy", "show", "--policy", file.to_str().unwrap()],
        vec!["run", "--policy", file.to_str().unwrap(), "--", "true"],
    ] {
        let out = ws.run(&args);
        assert_eq!(out.code(), 78, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("RALPH_SUPERVISE_ETCD_USER"),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("s3cret") && !out.stdout.contains("s3cret"));
    }
}

/// A build without the `fleet` feature asked for fleet mode: one line, 69, nothing run.
#[cfg(not(feature = "fleet"))]
#[test]
fn fleet_mode_in_a_build_without_it_is_one_line_and_69() {
    let ws = Workspace::new();
    let marker = ws.path.join("ran");
    let script = format!("touch {}", marker.display());
    ws.write_policy("[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]\n");
    for args in [
        vec!["run", "--", "sh", "-c", &script],
        vec!["status", "--fleet"],
        vec!["list", "--fleet"],
        vec!["stop", "--fleet", "acme/api/main"],
    ] {
        let out = ws.run(&args);
        assert_eq!(out.code(), 69, "{args:?}: {out:?}");
        assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains("--features fleet"), "{}", out.stderr);
    }
    assert!(!marker.exists());
}
