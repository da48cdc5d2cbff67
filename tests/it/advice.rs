//! The advice in a message fits the situation it is printed in: no `git init` for
//! `gc`, no worktree outside git, no `--kill` to a stop that already killed, no
//! `--on-conflict wait` to a run that already waited.

use crate::harness::*;

/// The dead registry entry ralph-supervise or ralph may leave behind.
fn dead_entry(ws: &Workspace, id: &str) {
    std::fs::create_dir_all(ws.path.join(".ralph")).unwrap();
    std::fs::write(
        ws.path.join(".ralph/loops.json"),
        format!(
            r#"{{"loops":[{{"id":"{id}","pid":4000000,"started":"2026-01-01T00:00:00Z","prompt":"p","workspace":"{}"}}]}}"#,
            ws.path.display()
        ),
    )
    .unwrap();
}

#[test]
fn gc_outside_git_prunes_the_registry_and_gives_no_git_advice() {
    let ws = Workspace::new();
    let out = ws.run(&["gc"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(!out.stderr.contains("git init"), "{out:?}");
    assert!(!out.stderr.contains("conflict policy"), "{out:?}");
    assert!(
        out.stdout.contains("not in a git repository")
            && out.stdout.contains("nothing to clean up"),
        "{out:?}"
    );
    assert!(!ws.path.join(".ralph").exists(), "gc created nothing");

    dead_entry(&ws, "ralph-dead-primary");
    let dry = ws.run(&["gc", "--dry-run"]);
    assert_eq!(dry.code(), 0, "{dry:?}");
    assert!(
        dry.stdout
            .contains("would prune registry entry ralph-dead-primary"),
        "{dry:?}"
    );
    let out = ws.run(&["gc"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stdout
            .contains("prune registry entry ralph-dead-primary"),
        "{out:?}"
    );
    let text = std::fs::read_to_string(ws.path.join(".ralph/loops.json")).unwrap();
    assert!(!text.contains("ralph-dead-primary"), "{text}");
}

#[test]
fn gc_in_a_repository_without_commits_is_not_an_error() {
    let ws = Workspace::new();
    ws.git_cmd(&["init", "-q", "-b", "main"]);
    let out = ws.run(&["gc"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("nothing to clean up"), "{out:?}");
}

#[test]
fn the_taken_message_offers_a_worktree_only_in_git() {
    for git in [false, true] {
        let ws = if git {
            Workspace::git()
        } else {
            Workspace::new()
        };
        let mut holder = ws.start_probe(&[], &["--exit-on", "TERM"]);
        let out = ws.run(&["run", "--on-conflict", "fail", "--", "true"]);
        assert_eq!(out.code(), 75, "{out:?}");
        assert!(out.stderr.contains("is taken"), "{out:?}");
        assert_eq!(
            out.stderr.contains("--on-conflict worktree"),
            git,
            "git: {git}: {out:?}"
        );
        assert!(out.stderr.contains("--on-conflict wait"), "{out:?}");

        if !git {
            // The worktree policy outside git: refused; the advice names what works.
            let out = ws.run(&["run", "--on-conflict", "worktree", "--", "true"]);
            assert_eq!(out.code(), 75, "{out:?}");
            assert!(out.stderr.contains("not in a git repository"), "{out:?}");
            assert!(!out.stderr.contains("or fail"), "{out:?}");
            assert!(out.stderr.contains("--on-conflict wait"), "{out:?}");

            // After a wait: not "use --on-conflict wait" again.
            let policy = ws.path.join("policy.toml");
            std::fs::write(
                &policy,
                "[conflict]\npolicy = \"wait\"\nwait_timeout = \"100ms\"\nafter_timeout = \"worktree\"\n",
            )
            .unwrap();
            let out = ws.run(&["run", "--policy", policy.to_str().unwrap(), "--", "true"]);
            assert_eq!(out.code(), 75, "{out:?}");
            let last = out.stderr.lines().last().unwrap();
            assert!(last.contains("gave up waiting"), "{out:?}");
            assert!(!last.contains("--on-conflict wait"), "{out:?}");
            assert!(last.contains("--wait-timeout"), "{out:?}");
        }
        holder.signal(nix::sys::signal::Signal::SIGTERM);
        holder.expect_line("cleanup done");
    }
}
