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

/// A loop registry as ralph writes it, with start times in every form RFC 3339 allows
/// (0 to 9 digits of fraction, any offset, years at the edges).
fn registryish() -> impl Strategy<Value = Vec<u8>> {
    let started = (
        prop_oneof![Just(0u32), Just(1), 1970u32..2100, Just(9999)],
        0u32..24,
        "(\\.[0-9]{1,9})?",
        prop_oneof![Just("Z".to_string()), "[+-](0[0-9]|1[0-4]):[0-5][0-9]"],
    )
        .prop_map(|(year, hour, fraction, offset)| {
            format!("{year:04}-01-01T{hour:02}:30:00{fraction}{offset}")
        });
    let entry = ("[a-z]{1,8}", any::<u32>(), started, "\\PC{0,20}").prop_map(|(id, pid, started, prompt)| {
        serde_json::json!({"id": id, "pid": pid, "started": started, "prompt": prompt})
    });
    proptest::collection::vec(entry, 0..4).prop_map(|loops| {
        serde_json::json!({ "loops": loops })
            .to_string()
            .into_bytes()
    })
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
    fn policy_text_parses_or_fails_with_a_location(bytes in prop_oneof![
        tomlish().prop_map(String::into_bytes),
        "\\PC{0,80}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..80),
    ]) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(failure) = policy::parse(&bytes, Path::new("p.toml")) {
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
    fn registry_parses_or_is_corrupt_and_rewrites_to_a_fixed_point(bytes in prop_oneof![jsonish(), registryish()]) {
        if let Ok(entries) = registry::parse(&bytes) {
            let written = registry::rewrite(&bytes).unwrap();
            let again = registry::parse(&written).unwrap();
            prop_assert_eq!(&again, &entries);
            prop_assert_eq!(registry::rewrite(&written).unwrap(), written.clone());
            prop_assert_eq!(registry::rewrite_salvaged(&bytes).unwrap(), written);
        } else {
            // What a corrupt file's salvage writes is a registry of its own.
            let written = registry::rewrite_salvaged(&bytes).unwrap();
            prop_assert_eq!(registry::rewrite(&written).unwrap(), written);
        }
    }

    #[test]
    fn a_cut_registry_keeps_every_whole_entry_before_the_cut(ids in proptest::collection::vec("[a-z]{1,8}", 1..5), cut in any::<proptest::sample::Index>()) {
        let texts: Vec<String> = ids
            .iter()
            .map(|id| {
                serde_json::json!({"id": id, "pid": 1, "started": "2026-01-02T03:04:05.678901234Z", "prompt": "p", "hat": id})
                    .to_string()
            })
            .collect();
        let text = format!("{{\"loops\":[{}],\"v\":1}}", texts.join(","));
        let at = cut.index(text.len());
        let mut whole = Vec::new();
        let mut end = "{\"loops\":[".len();
        for (id, t) in ids.iter().zip(&texts) {
            end += t.len();
            if end <= at {
                whole.push(id.clone());
            }
            end += 1;
        }
        let written = registry::rewrite_salvaged(&text.as_bytes()[..at]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&written).unwrap();
        let loops = v["loops"].as_array().unwrap();
        let kept: Vec<&str> = loops.iter().map(|e| e["id"].as_str().unwrap()).collect();
        prop_assert_eq!(kept, whole);
        for e in loops {
            prop_assert_eq!(&e["hat"], &e["id"]);
            prop_assert_eq!(&e["started"], "2026-01-02T03:04:05.678901234Z");
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
