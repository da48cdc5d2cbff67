//! Faults of the machine: a full file system, a read-only `.ralph`, too few file
//! descriptors, no `/dev/null`. Each gets one clear line and the documented code, and nothing written
//! earlier under `.ralph/` is corrupted (its bytes are compared before and after).
//!
//! Full and read-only file systems need a mount namespace (`unshare --mount`); where
//! that is not permitted the test says so and returns.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::*;

fn mount_ns_permitted() -> bool {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs `script` with `sh` in a private mount namespace, with `$W` (the workspace),
/// `$BIN` (the binary) and `$OUT` (a directory outside any mount made there).
fn in_mount_ns(ws: &Workspace, out: &Path, script: &str) -> Output {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-ec", script])
        .env("W", &ws.path)
        .env("BIN", bin())
        .env("OUT", out)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    Proc::spawn(cmd).finish()
}

/// `name -> sha256` lines as written by `sha256sum`, for the files in `file`.
fn sums(file: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| {
            let (sum, name) = l.split_once("  ").unwrap();
            (name.to_string(), sum.to_string())
        })
        .collect()
}

fn read(out: &Path, name: &str) -> String {
    std::fs::read_to_string(out.join(name)).unwrap_or_default()
}

/// The final error lines of stderr: `ralph-supervise: ...` but not the log's own
/// `ralph-supervise: info: ...`, `warning: ...` lines.
pub fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| {
            l.strip_prefix("ralph-supervise: ").is_some_and(|rest| {
                !["info:", "warning:", "debug:", "trace:"]
                    .iter()
                    .any(|level| rest.starts_with(level))
            })
        })
        .collect()
}

/// The one error line (the log's own lines, if any, are warnings and go first).
fn assert_one_error_line(stderr: &str, want: &str) {
    let errors = error_lines(stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(want), "{stderr}");
}

/// A history record, as an earlier run would have left it.
const OLD_RECORD: &str = r#"{"id":"ralph-20260101-000000-0001","mode":"primary","command":["true"],"prompt":"earlier","start":"2026-01-01T00:00:00.000Z","end":"2026-01-01T00:00:01.000Z","exit_code":0,"signal":null,"status":0,"restarts":0,"stopped_by":null,"worktree":null,"supervisor_pid":1,"child_pid":2}"#;

/// Shell lines that fill `$W/.ralph` with earlier state: history of `hist_len` bytes
/// (whole records, then a blank line padding it), a registry with a foreign loop of
/// `reg_len` bytes, and an empty lock file.
fn earlier_state(hist_len: usize, reg_len: usize) -> String {
    let mut hist = format!("{OLD_RECORD}\n");
    assert!(hist_len > hist.len() + 1);
    hist.push_str(&" ".repeat(hist_len - hist.len() - 1));
    hist.push('\n');
    let reg_head = r#"{"loops":[{"id":"foreign-loop","pid":1,"note":"keep me"}],"pad":""#;
    let reg_tail = "\"}\n";
    let reg = format!(
        "{reg_head}{}{reg_tail}",
        "x".repeat(reg_len - reg_head.len() - reg_tail.len())
    );
    assert_eq!(reg.len(), reg_len);
    format!(
        "mkdir -p \"$W/.ralph/supervise\" \"$W/.ralph/agent\" \"$W/.ralph/specs\" \"$W/.ralph/tasks\"\n\
         touch \"$W/.ralph/agent/memories.md\"\n\
         printf '%s' '{hist}' > \"$W/.ralph/supervise/runs.jsonl\"\n\
         printf '%s' '{reg}' > \"$W/.ralph/loops.json\"\n"
    )
}

const SNAPSHOT: &str =
    "(cd \"$W/.ralph\" && find . -type f ! -name 'loop.lock' | sort | xargs sha256sum)";

fn assert_unchanged(out: &Path) {
    let before = sums(&out.join("before"));
    let after = sums(&out.join("after"));
    assert!(!before.is_empty());
    for (name, sum) in &before {
        assert_eq!(
            after.get(name),
            Some(sum),
            "{name} changed: {before:?} vs {after:?}"
        );
    }
}

#[test]
fn full_disk_while_writing_the_lock_metadata() {
    if !mount_ns_permitted() {
        println!("skipped: unshare --mount is not permitted here");
        return;
    }
    let ws = Workspace::new();
    let out = tempfile::tempdir().unwrap();
    let script = format!(
        "mount -t tmpfs -o size=256k tmpfs \"$W\"\n{}\n{SNAPSHOT} > \"$OUT/before\"\n\
         dd if=/dev/zero of=\"$W/fill\" bs=4096 2>/dev/null || true\n\
         set +e\n\"$BIN\" -C \"$W\" run -- true 2> \"$OUT/stderr\"; echo $? > \"$OUT/code\"\n\
         {SNAPSHOT} > \"$OUT/after\"\n\
         cat \"$W/.ralph/loop.lock\" > \"$OUT/lock\"\n",
        earlier_state(1000, 500)
    );
    let o = in_mount_ns(&ws, out.path(), &script);
    assert_eq!(o.code(), 0, "{o:?}");
    assert_eq!(
        read(out.path(), "code").trim(),
        "125",
        "{}",
        read(out.path(), "stderr")
    );
    assert_one_error_line(
        &read(out.path(), "stderr"),
        "loop.lock: No space left on device",
    );
    assert_eq!(read(out.path(), "lock"), "", "the lock file is left empty");
    assert_unchanged(out.path());
}

#[test]
fn full_disk_while_appending_history() {
    if !mount_ns_permitted() {
        println!("skipped: unshare --mount is not permitted here");
        return;
    }
    let ws = Workspace::new();
    let out = tempfile::tempdir().unwrap();
    // The lock file already has a page of its own (so the metadata fits), the history
    // ends 96 bytes before a page boundary: the record only half fits.
    let script = format!(
        "mount -t tmpfs -o size=256k tmpfs \"$W\"\n{}\n\
         printf '%4096s' '' > \"$W/.ralph/loop.lock\"\n\
         {SNAPSHOT} > \"$OUT/before\"\n\
         dd if=/dev/zero of=\"$W/fill\" bs=4096 2>/dev/null || true\n\
         set +e\n\"$BIN\" -C \"$W\" run -- true 2> \"$OUT/stderr\"; echo $? > \"$OUT/code\"\n\
         {SNAPSHOT} > \"$OUT/after\"\n\
         \"$BIN\" -C \"$W\" history --json > \"$OUT/history\" 2>&1 || true\n",
        earlier_state(4000, 500)
    );
    let o = in_mount_ns(&ws, out.path(), &script);
    assert_eq!(o.code(), 0, "{o:?}");
    let stderr = read(out.path(), "stderr");
    // The command ran and succeeded; only its record is lost, and said so in one line.
    assert_eq!(read(out.path(), "code").trim(), "0", "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot record the run in the history")
            && stderr.contains("No space left on device"),
        "{stderr}"
    );
    assert_unchanged(out.path());
    assert!(read(out.path(), "history").contains("earlier"));
}

#[test]
fn full_disk_while_registering_a_worktree_loop() {
    if !mount_ns_permitted() {
        println!("skipped: unshare --mount is not permitted here");
        return;
    }
    let ws = Workspace::git();
    let out = tempfile::tempdir().unwrap();
    // Only the main repository's .ralph is small and full; the worktree goes beside it.
    // The primary waits on a conflict: the script's own `flock -n` probe may hold the
    // lock for an instant just when the primary tries it.
    // A primary holds the workspace, so the second run launches a worktree loop whose
    // registration in loops.json (4000 bytes, a page boundary 96 bytes on) cannot fit.
    let script = format!(
        "mkdir -p \"$W/.ralph\"\nmount -t tmpfs -o size=128k tmpfs \"$W/.ralph\"\n{}\n\
         printf '%4096s' '' > \"$W/.ralph/loop.lock\"\n\
         \"$BIN\" -C \"$W\" -q run --prompt primary --on-conflict wait -- sleep 30 2>/dev/null &\n\
         while flock -n \"$W/.ralph/loop.lock\" true; do sleep 0.01; done\n\
         {SNAPSHOT} > \"$OUT/before\"\n\
         cp \"$W/.ralph/loops.json\" \"$OUT/reg-before\"\n\
         dd if=/dev/zero of=\"$W/.ralph/fill\" bs=4096 2>/dev/null || true\n\
         set +e\n\"$BIN\" -C \"$W\" run --on-conflict worktree -- true 2> \"$OUT/stderr\"; echo $? > \"$OUT/code\"\n\
         cp \"$W/.ralph/loops.json\" \"$OUT/reg-after\"\n\
         rm -f \"$W/.ralph/fill\"\n\
         {SNAPSHOT} > \"$OUT/after\"\n\
         kill $!; wait\n",
        earlier_state(1000, 4000)
    );
    let o = in_mount_ns(&ws, out.path(), &script);
    assert_eq!(o.code(), 0, "{o:?}");
    let stderr = read(out.path(), "stderr");
    assert_eq!(read(out.path(), "code").trim(), "0", "{stderr}");
    assert!(
        stderr.contains("cannot register the loop") && stderr.contains("No space left"),
        "{stderr}"
    );
    // loops.json lost nothing: the foreign loop and the other keys are all there (the
    // deregistration at the loop's end may rewrite the same data in another layout).
    let json = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out.path().join(name)).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}; {stderr}"))
    };
    assert_eq!(json("reg-before"), json("reg-after"), "{stderr}");
}

#[test]
fn read_only_ralph_dir_is_125_and_untouched() {
    if !mount_ns_permitted() {
        println!("skipped: unshare --mount is not permitted here");
        return;
    }
    let ws = Workspace::new();
    let out = tempfile::tempdir().unwrap();
    for (i, lock) in ["", "printf '' > \"$W/.ralph/loop.lock\"\n"]
        .iter()
        .enumerate()
    {
        let script = format!(
            "{}{lock}{SNAPSHOT} > \"$OUT/before\"\n\
             mount --bind \"$W/.ralph\" \"$W/.ralph\"\nmount -o remount,bind,ro \"$W/.ralph\"\n\
             set +e\n\"$BIN\" -C \"$W\" run -- true 2> \"$OUT/stderr\"; echo $? > \"$OUT/code\"\n\
             {SNAPSHOT} > \"$OUT/after\"\n",
            earlier_state(1000, 500)
        );
        let o = in_mount_ns(&ws, out.path(), &script);
        assert_eq!(o.code(), 0, "{o:?}");
        let stderr = read(out.path(), "stderr");
        assert_eq!(read(out.path(), "code").trim(), "125", "case {i}: {stderr}");
        assert_one_error_line(&stderr, "loop.lock: Read-only file system");
        assert_unchanged(out.path());
    }
}

#[test]
fn unwritable_ralph_dir_for_another_user_is_125() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root to drop to uid 65534");
        return;
    }
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path.join(".ralph")).unwrap();
    std::fs::write(ws.lock_path(), "").unwrap();
    let out = Proc::spawn(ws.nobody_cmd(&["run", "--", "true"])).finish();
    assert_eq!(out.code(), 125, "{out:?}");
    assert_one_error_line(&out.stderr, "loop.lock: Permission denied");
    assert_eq!(std::fs::read(ws.lock_path()).unwrap(), b"");
}

#[test]
fn too_few_file_descriptors_fail_cleanly() {
    let ws = Workspace::new();
    // An earlier run's state.
    assert_eq!(ws.run(&["run", "--", "true"]).code(), 0);
    let history = ws.path.join(".ralph/supervise/runs.jsonl");
    let mut ok = 0;
    let mut failed = 0;
    // Below 6 the dynamic loader itself cannot start the binary (exit 127, not ours).
    for limit in 6..=24 {
        let before = std::fs::read(&history).unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
            .arg(bin())
            .arg("-C")
            .arg(&ws.path)
            .args(["run", "--", "true"])
            .stdin(Stdio::null());
        let out = Proc::spawn(cmd).finish();
        match out.code() {
            0 => ok += 1,
            125 => {
                failed += 1;
                let errors = error_lines(&out.stderr);
                assert_eq!(errors.len(), 1, "limit {limit}: {}", out.stderr);
                assert!(
                    errors[0].contains("Too many open files"),
                    "limit {limit}: {}",
                    out.stderr
                );
            }
            other => panic!("limit {limit}: exit {other}: {out:?}"),
        }
        // Never held afterwards, never invalid, history only ever appended to.
        assert!(!ws.lock_held(), "limit {limit}");
        let lock = std::fs::read(ws.lock_path()).unwrap();
        assert!(lock.is_empty(), "limit {limit}: {lock:?}");
        let after = std::fs::read(&history).unwrap();
        assert!(
            after.starts_with(&before),
            "limit {limit}: history rewritten"
        );
        for line in after.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            serde_json::from_slice::<serde_json::Value>(line).unwrap();
        }
    }
    assert!(ok > 0 && failed > 0, "ok {ok}, failed {failed}");
    println!("faults: fd limits 6..=24: {failed} refused with EMFILE (125), {ok} ran");
}

/// No `/dev/null` (a bare chroot or mount namespace) to put on a standard descriptor the
/// supervisor was started without: it stops at once (SIGABRT, as Rust's own start-up
/// does), before it opens anything that could take that descriptor's place, such as the
/// lock file, which its log lines would then fill. (It ran on, with fd 2 left closed.)
#[test]
fn no_dev_null_for_a_closed_stderr_stops_before_anything_is_opened() {
    use std::os::unix::process::ExitStatusExt;
    if !mount_ns_permitted() {
        println!("skipped: unshare --mount is not permitted here");
        return;
    }
    let ws = Workspace::new();
    let out = tempfile::tempdir().unwrap();
    let script = "mount -t tmpfs tmpfs /dev; exec \"$BIN\" -C \"$W\" -vv run -- true 2>&-";
    let o = in_mount_ns(&ws, out.path(), script);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{o:?}");
    assert!(!ws.path.join(".ralph").exists(), "{o:?}");
}
