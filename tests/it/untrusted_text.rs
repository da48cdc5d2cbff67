//! Text that came from the command line (prompts, command words, paths, ids) never
//! reaches the terminal raw: tables, status text, log lines and error lines write
//! control characters escaped (`\n`, `\x1b`), so a newline cannot break a table row and
//! an escape sequence cannot retitle or recolour the user's terminal. JSON keeps the
//! text exact, and the history keeps the whole prompt.

use std::process::Command;

use crate::harness::*;

/// A prompt with a newline, a carriage return, a tab, an OSC title sequence, a C1 CSI
/// and a bidi override, longer than the lock metadata's 100 characters.
fn nasty_prompt() -> String {
    format!(
        "fix\nthe \x1b]0;pwned\x07 bug\r\tnow \u{9b}31m \u{202e}desrever {}end",
        "and more ".repeat(12)
    )
}

/// `text` has no control character but the newlines ending its lines.
fn assert_clean(what: &str, text: &str) {
    let bad: Vec<char> = text
        .chars()
        .filter(|c| (c.is_control() && *c != '\n') || ('\u{202a}'..='\u{202e}').contains(c))
        .collect();
    assert!(bad.is_empty(), "{what} printed {bad:?} raw: {text:?}");
}

#[test]
fn tables_status_and_log_lines_escape_control_characters() {
    let ws = Workspace::git();
    let prompt = nasty_prompt();
    let escaped_start = r"fix\nthe \x1b]0;pwned\x07 bug\r\tnow \u{9b}31m \u{202e}desrever";
    let mut primary = ws.start_probe(&["--prompt", &prompt], &["--exit-on", "TERM"]);
    // The second loop goes to a worktree (registry row in `list`), logging at debug
    // level, where the prompt is quoted in log lines.
    let mut beside = ws.start_probe(&["-v", "--prompt", &prompt], &["--exit-on", "TERM"]);

    let status = ws.run(&["status"]);
    assert_eq!(status.code(), 0, "{status:?}");
    assert_clean("status", &status.stdout);
    assert!(status.stdout.contains(escaped_start), "{}", status.stdout);

    let list = ws.run(&["list"]);
    assert_eq!(list.code(), 0, "{list:?}");
    assert_clean("list", &list.stdout);
    assert_eq!(
        list.stdout.lines().count(),
        3,
        "header and two rows: {list:?}"
    );
    for row in list.stdout.lines().skip(1) {
        assert!(row.contains(escaped_start), "{row}");
    }
    // JSON is exact (serde escapes); the registry has the metadata's 100 characters.
    let rows: serde_json::Value =
        serde_json::from_str(&ws.run(&["list", "--json"]).stdout).unwrap();
    let id = rows[1]["id"].as_str().unwrap().to_string();
    let cut = rows[1]["prompt"].as_str().unwrap();
    assert!(prompt.starts_with(cut.trim_end_matches("...")), "{cut:?}");

    assert_eq!(ws.run(&["stop", &id]).code(), 0);
    assert_eq!(ws.run(&["stop"]).code(), 0);
    primary.expect_line("signal SIGTERM");
    beside.expect_line("signal SIGTERM");
    let beside = beside.finish();
    assert!(beside.stderr.contains("running in worktree"), "{beside:?}");
    assert_clean("the worktree loop's log", &beside.stderr);
    assert!(
        beside.stderr.contains(escaped_start),
        "the debug line quoting the prompt: {}",
        beside.stderr
    );
    assert_clean("the primary's log", &primary.finish().stderr);

    let history = ws.run(&["history"]);
    assert_eq!(history.code(), 0, "{history:?}");
    assert_clean("history", &history.stdout);
    assert_eq!(history.stdout.lines().count(), 3, "{history:?}");
    // The history keeps the whole prompt; only the lock metadata is cut to 100.
    let records: serde_json::Value =
        serde_json::from_str(&ws.run(&["history", "--json"]).stdout).unwrap();
    for r in records.as_array().unwrap() {
        assert_eq!(r["prompt"].as_str().unwrap(), prompt, "{r}");
    }
    assert!(history.stdout.lines().nth(1).unwrap().ends_with("end"));
}

#[test]
fn error_lines_escape_what_they_quote() {
    let ws = Workspace::new();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(bin());
        cmd.args(args).current_dir(&ws.path).env_remove("RUST_LOG");
        Proc::spawn(cmd).finish()
    };
    // A workspace path, a command word, a loop id, a policy file name, each with an
    // OSC sequence and a newline.
    let dir = ws.path.join("no\x1b]0;pwned\x07\ndir");
    let dir = dir.to_str().unwrap();
    let file = ws.path.join("p\x1b]0;pwned\x07\n.toml");
    let file = file.to_str().unwrap();
    for (args, code) in [
        (vec!["-C", dir, "status"], 2),
        (vec!["run", "--", "no-such\x1b]0;pwned\x07\ncommand"], 127),
        (vec!["stop", "loop\x1b]0;pwned\x07\nid"], 3),
        (vec!["policy", "check", file], 78),
        (vec!["run", "--policy", file, "--", "true"], 78),
        // Usage errors, where clap quotes the argument it rejects.
        (vec!["stop", "--signal", "TERM\x1b]0;pwned\x07\nx"], 2),
        (vec!["no-such-subcommand\x1b]0;pwned\x07\nx"], 2),
        (
            vec!["run", "--on-conflict", "x\x1b]0;pwned\x07\nx", "--", "true"],
            2,
        ),
    ] {
        let out = run(&args);
        assert_eq!(out.code(), code, "{args:?}: {out:?}");
        assert_clean(&format!("{args:?}"), &out.stdout);
        assert_clean(&format!("{args:?}"), &out.stderr);
        assert!(
            out.stderr.contains(r"\x1b") && out.stderr.contains(r"\n"),
            "{args:?}: {out:?}"
        );
        let first = out.stderr.lines().next().unwrap_or_default();
        assert!(first.contains(r"\x1b]0;pwned\x07"), "{args:?}: {out:?}");
        if code != 2 {
            assert_eq!(out.stderr.lines().count(), 1, "one error line: {out:?}");
        }
    }
}
