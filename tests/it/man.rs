//! The committed manual pages in `man/` match the CLI, and render without warnings.
//!
//! Regenerate them after changing the CLI or the hand-written sections with
//!
//!     UPDATE_MAN=1 cargo test --test it man::
//!
//! which rewrites `man/` (removing pages of subcommands that are gone) and passes.

use std::path::{Path, PathBuf};
use std::process::Command;

const REGENERATE: &str = "UPDATE_MAN=1 cargo test --test it man::";

fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("man")
}

fn pages() -> Vec<(String, Vec<u8>)> {
    ralph_supervise::man::render(ralph_supervise::cli::command())
}

/// Page files in `man/`: `*.1` and `*.5`.
fn committed() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(man_dir())
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".1") || n.ends_with(".5"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn committed_pages_match_the_cli() {
    let pages = pages();
    let dir = man_dir();
    if std::env::var_os("UPDATE_MAN").is_some_and(|v| !v.is_empty()) {
        ralph_supervise::man::write_all(&dir, ralph_supervise::cli::command()).unwrap();
        for stale in committed() {
            if !pages.iter().any(|(n, _)| *n == stale) {
                std::fs::remove_file(dir.join(&stale)).unwrap();
                eprintln!("removed stale man/{stale}");
            }
        }
        eprintln!("wrote {} pages to {}", pages.len(), dir.display());
    }

    let mut problems = Vec::new();
    for (name, bytes) in &pages {
        match std::fs::read(dir.join(name)) {
            Ok(on_disk) if on_disk == *bytes => {}
            Ok(_) => problems.push(format!("man/{name} differs from the CLI")),
            Err(e) => problems.push(format!("man/{name}: {e}")),
        }
    }
    for name in committed() {
        if !pages.iter().any(|(n, _)| *n == name) {
            problems.push(format!("man/{name} is not generated any more"));
        }
    }
    assert!(
        problems.is_empty(),
        "the manual pages are out of date:\n  {}\nregenerate them with `{REGENERATE}` and commit man/",
        problems.join("\n  ")
    );
}

/// Whether `tool` can be started at all.
fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

/// Every page renders with groff (`-ww`: all warnings) and, where installed, passes
/// `mandoc -T lint`. Checked on the rendered bytes, so it holds before committing.
#[test]
fn pages_render_without_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let pages = pages();
    for (name, bytes) in &pages {
        std::fs::write(tmp.path().join(name), bytes).unwrap();
    }
    let mut checked = false;

    if have("groff") {
        checked = true;
        for (name, _) in &pages {
            let out = Command::new("groff")
                .args(["-man", "-Tutf8", "-ww", "-z"])
                .arg(tmp.path().join(name))
                .output()
                .expect("groff");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && stderr.trim().is_empty(),
                "groff warns about {name}:\n{stderr}"
            );
        }
    } else {
        eprintln!("skipping the groff check: groff is not installed");
    }

    if have("mandoc") {
        checked = true;
        for (name, _) in &pages {
            let out = Command::new("mandoc")
                .args(["-T", "lint", "-W", "warning"])
                .arg(tmp.path().join(name))
                .output()
                .expect("mandoc");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "mandoc warns about {name}:\n{text}");
        }
    } else {
        eprintln!("skipping the mandoc check: mandoc is not installed");
    }

    if have("man") {
        // What a user sees: the top page formats, and mentions every subcommand page.
        let out = Command::new("man")
            .arg("-l")
            .arg(tmp.path().join("ralph-supervise.1"))
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "")
            .env_remove("MANPAGER")
            .env("PAGER", "cat")
            .output()
            .expect("man");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "man -l failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("EXIT STATUS"), "man -l output:\n{text}");
    } else {
        eprintln!("skipping the man -l check: man is not installed");
    }

    if !checked {
        eprintln!("no roff checker installed (groff, mandoc): pages were not linted");
    }
}
