//! Property tests over the readers of files others write (policy, lock metadata, loop
//! registry, merge queue, history) and over loop ids: the quick counterpart of the fuzz
//! targets in `fuzz/`, run by `cargo test`.

use std::path::Path;

use proptest::prelude::*;
use ralph_supervise::exit::ExitStatus;
use ralph_supervise::metadata::{Metadata, truncate_prompt};
use ralph_supervise::worktree::{id, queue, registry};
use ralph_supervise::{history, policy};

/// Bytes that look like JSON often enough to get past the first byte.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        "[{}\\[\\]\":,0-9a-z \\n\\\\-]{0,200}".prop_map(String::into_bytes),
        (
            any::<u32>(),
            "\\PC{0,40}",
            proptest::option::of(any::<u32>())
        )
            .prop_map(|(pid, prompt, child)| {
                serde_json::json!({
                    "pid": pid,
                    "started": "2026-01-02T03:04:05.678901234Z",
                    "prompt": prompt,
                    "child_pid": child,
                })
                .to_string()
                .into_bytes()
            }),
    ]
}

fn tomlish() -> impl Strategy<Value = String> {
    let section = prop_oneof![
        Just("conflict"),
        Just("worktree"),
        Just("stop"),
        Just("restart"),
        Just("run"),
        Just("log"),
        Just("nope"),
    ];
    let key = prop_oneof![
        Just("policy"),
        Just("wait_timeout"),
        Just("after_timeout"),
        Just("exit_code"),
        Just("dir"),
        Just("on_exit"),
        Just("signal"),
        Just("grace"),
        Just("orphans"),
        Just("max"),
        Just("backoff_initial"),
        Just("max_runtime"),
        Just("env"),
        Just("format"),
        Just("level"),
    ];
    let value = prop_oneof![
        "\"[a-z0-9 ]{0,8}\"",
        "-?[0-9]{1,4}",
        Just("true".to_string()),
        Just("\"30s\"".to_string()),
        Just("\"wait\"".to_string()),
        Just("{ A = \"1\" }".to_string()),
        Just("[1, 2]".to_string()),
        "[\\PC\\n]{0,6}",
    ];
    proptest::collection::vec(
        (section, proptest::collection::vec((key, value), 0..4)),
        0..4,
    )
    .prop_map(|sections| {
        let mut text = String::new();
        for (name, pairs) in sections {
            text.push_str(&format!("[{name}]\n"));
            for (k, v) in pairs {
                text.push_str(&format!("{k} = {v}\n"));
            }
        }
        text
    })
}

proptest! {
    #[test]
    fn policy_text_parses_or_fails_with_a_location(text in prop_oneof![tomlish(), "\\PC{0,80}"]) {
        if let Err(failure) = policy::parse(text.as_bytes(), Path::new("p.toml")) {
            prop_assert_eq!(failure.status, ExitStatus::BadPolicy);
            let msg = format!("{:#}", failure.error);
            // p.toml:LINE:COL: ...
            let mut parts = msg.splitn(4, ':');
            prop_assert_eq!(parts.next(), Some("p.toml"));
            let line: usize = parts.next().unwrap_or("").parse().map_err(|_| TestCaseError::fail(msg.clone()))?;
            let col: usize = parts.next().unwrap_or("").parse().map_err(|_| TestCaseError::fail(msg.clone()))?;
            prop_assert!(line >= 1 && col >= 1, "{}", msg);
            prop_assert!(line <= text.lines().count().max(1) + 1, "{}", msg);
            prop_assert!(!msg.contains('\n') || text.contains('\n'), "{}", msg);
        }
    }

    #[test]
    fn metadata_parses_or_fails_and_round_trips(bytes in jsonish()) {
        if let Ok(Some(meta)) = Metadata::parse(&bytes) {
            let json = meta.to_json();
            let again = Metadata::parse(json.as_bytes()).unwrap().unwrap();
            prop_assert_eq!(again.pid, meta.pid);
            prop_assert_eq!(&again.prompt, &meta.prompt);
            prop_assert_eq!(again.to_json(), json);
        }
    }

    #[test]
    fn registry_parses_or_is_corrupt_and_rewrites_to_a_fixed_point(bytes in jsonish()) {
        if let Ok(entries) = registry::parse(&bytes) {
            let written = registry::rewrite(&bytes).unwrap();
            let again = registry::parse(&written).unwrap();
            prop_assert_eq!(again.len(), entries.len());
            prop_assert_eq!(registry::rewrite(&written).unwrap(), written);
        }
    }

    #[test]
    fn registry_keeps_foreign_entries(ids in proptest::collection::vec("[a-z]{1,8}", 0..6), junk in "\\PC{0,20}") {
        let loops: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| serde_json::json!({"id": id, "pid": "x", "junk": junk}))
            .collect();
        let text = serde_json::json!({"loops": loops, "other": junk}).to_string();
        let written = registry::rewrite(text.as_bytes()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&written).unwrap();
        prop_assert_eq!(v["loops"].as_array().unwrap().len(), ids.len());
        prop_assert_eq!(&v["other"], &serde_json::Value::from(junk));
    }

    #[test]
    fn queue_lines_parse_or_fail(line in jsonish(), prompt in "\\PC{0,40}", id in "[a-z-]{1,20}") {
        let _ = queue::parse_line(&line);
        let good = serde_json::json!({
            "ts": "2026-01-02T03:04:05.000Z",
            "loop_id": id,
            "event": {"type": "queued", "prompt": prompt},
        })
        .to_string();
        let q = queue::parse_line(good.as_bytes()).unwrap().unwrap();
        prop_assert_eq!(q.loop_id, id);
        prop_assert_eq!(q.prompt, prompt);
    }

    #[test]
    fn history_counts_every_line(lines in proptest::collection::vec(jsonish(), 0..8)) {
        let mut bytes = Vec::new();
        for l in &lines {
            bytes.extend_from_slice(l);
            bytes.push(b'\n');
        }
        let (records, bad) = history::parse(&bytes);
        let nonblank = bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .count();
        prop_assert_eq!(records.len() + bad, nonblank);
    }

    #[test]
    fn loop_ids_are_plain_names_whatever_the_prompt(prompt in prop_oneof![
        "\\PC{0,300}",
        "(\\.\\./|/|\\x00|a){0,50}",
        any::<String>(),
    ]) {
        let generated = id::generate_id(&prompt, &|_| false);
        prop_assert!(id::is_valid_id(&generated), "{:?} -> {:?}", prompt, generated);
        prop_assert!(!generated.contains('/') && !generated.contains(".."));
        prop_assert!(!generated.contains('\0'));
        // Uniqueness pressure still yields a valid id.
        let crowded = id::generate_id(&prompt, &|c| !c.starts_with("ralph-"));
        prop_assert!(id::is_valid_id(&crowded), "{:?}", crowded);
    }

    #[test]
    fn prompts_are_cut_like_ralph(prompt in "\\PC{0,300}") {
        let cut = truncate_prompt(&prompt);
        prop_assert!(cut.chars().count() <= 100);
        if prompt.chars().count() <= 100 {
            prop_assert_eq!(cut, prompt);
        } else {
            prop_assert!(cut.ends_with("..."));
        }
    }
}
