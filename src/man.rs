//! Manual pages: `ralph-supervise(1)`, one page per subcommand, and
//! `ralph-supervise.toml(5)` for the policy file.
//!
//! The section 1 pages are generated from the clap command by `clap_mangen`, with
//! hand-written EXIT STATUS, SIGNALS, FILES, ENVIRONMENT and SEE ALSO sections added to
//! the top page and the `run` page. Nested subcommands get pages of their own, named
//! like git's: `policy show` is `ralph-supervise-policy-show(1)`, next to
//! `ralph-supervise-policy(1)`. Hidden subcommands get none.
//!
//! The section 5 page is written here with the `roff` crate. Its key list is checked
//! against [`policy::KEYS`](crate::policy::KEYS) by a unit test, and the defaults it
//! shows are taken from [`policy::show`](crate::policy::show) of the built-in policy, so
//! the page cannot drift from the code.
//!
//! The committed copies live in `man/`; the integration test `man` fails when they
//! differ from what this module renders. Regenerate them with
//! `UPDATE_MAN=1 cargo test --test it man::`.

use std::io;
use std::path::Path;

use roff::{Inline, Roff, bold, italic, roman};

use crate::policy;

/// Every page for `cmd`, as (file name, roff source), the top page first and the
/// policy file page last. Pure: nothing is written.
pub fn render(cmd: clap::Command) -> Vec<(String, Vec<u8>)> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let top = cmd.get_name().to_string();
    let version = cmd.get_version().unwrap_or_default().to_string();

    let mut pages = Vec::new();
    let mut names = Vec::new();
    let source = format!("{top} {version}");
    collect(&cmd, &source, &mut pages, &mut names);

    // SEE ALSO of the top page lists every other page.
    let mut see_also: Vec<(String, &str)> = names
        .iter()
        .filter(|n| **n != top)
        .map(|n| (n.clone(), "1"))
        .collect();
    see_also.push((format!("{top}.toml"), "5"));
    see_also.extend(EXTERNAL_SEE_ALSO.iter().map(|(n, s)| (n.to_string(), *s)));

    for (name, roff) in pages.iter_mut() {
        let page = name.trim_end_matches(".1");
        let mut extra = Roff::new();
        if page == top || page == format!("{top}-run") {
            reference_sections(&mut extra);
        }
        if page == top {
            see_also_section(&mut extra, &see_also);
        } else {
            let mut refs = vec![(top.clone(), "1")];
            // A parent page points to its children, a child to its parent.
            refs.extend(
                names
                    .iter()
                    .filter(|n| {
                        (n.starts_with(&format!("{page}-")) && n.len() > page.len())
                            || (page.starts_with(&format!("{n}-")) && **n != top)
                    })
                    .map(|n| (n.clone(), "1")),
            );
            if page == format!("{top}-run") {
                refs.push((format!("{top}.toml"), "5"));
            }
            see_also_section(&mut extra, &refs);
        }
        splice(roff, &body(&extra));
    }

    pages.push((format!("{top}.toml.5"), policy::man_page(&version)));
    pages
}

/// Writes every page of [`render`] into `dir` (created if missing). Files of pages
/// that no longer exist are not removed.
pub fn write_all(dir: &Path, cmd: clap::Command) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in render(cmd) {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

/// Renders `cmd` and, depth first, its visible subcommands. `cmd` must be built, so
/// that subcommands carry their display names (`ralph-supervise-run`) and bin names
/// (`ralph-supervise run`) for the title and the synopsis.
fn collect(
    cmd: &clap::Command,
    source: &str,
    pages: &mut Vec<(String, Vec<u8>)>,
    names: &mut Vec<String>,
) {
    // Subcommands have no version of their own: every page names the program's.
    let man = clap_mangen::Man::new(cmd.clone()).source(source);
    let mut roff = Vec::new();
    man.render(&mut roff)
        .expect("rendering into a Vec cannot fail");
    let name = man.get_filename();
    names.push(name.trim_end_matches(".1").to_string());
    pages.push((name, roff));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, source, pages, names);
    }
}

/// Inserts `extra` before the VERSION (or AUTHORS) section clap_mangen ends with, so
/// the reference sections follow OPTIONS and SUBCOMMANDS; else appends it.
fn splice(page: &mut Vec<u8>, extra: &str) {
    let text = String::from_utf8_lossy(page).into_owned();
    let at = ["\n.SH VERSION\n", "\n.SH AUTHORS\n"]
        .iter()
        .filter_map(|marker| text.find(marker).map(|i| i + 1))
        .min()
        .unwrap_or(text.len());
    let mut out = String::with_capacity(text.len() + extra.len());
    out.push_str(&text[..at]);
    if !out.ends_with('\n') && !out.is_empty() {
        out.push('\n');
    }
    out.push_str(extra);
    out.push_str(&text[at..]);
    *page = out.into_bytes();
}

/// `roff` rendered without the preamble `Roff::render` puts first, for splicing into a
/// page that already has it.
fn body(roff: &Roff) -> String {
    let preamble = Roff::new().render();
    let full = roff.render();
    full.strip_prefix(&preamble).unwrap_or(&full).to_string()
}

const EXTERNAL_SEE_ALSO: [(&str, &str); 6] = [
    ("flock", "1"),
    ("flock", "2"),
    ("git-worktree", "1"),
    ("systemd.service", "5"),
    ("sd_notify", "3"),
    ("launchd.plist", "5"),
];

// ---------------------------------------------------------------------------------
// Light markup for the hand-written text: `code` is bold, *placeholder* is italic.

fn inlines(text: &str) -> Vec<Inline> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(['`', '*']) {
        let mark = rest.as_bytes()[i] as char;
        let Some(len) = rest[i + 1..].find(mark) else {
            break;
        };
        if i > 0 {
            out.push(roman(&rest[..i]));
        }
        let inner = &rest[i + 1..i + 1 + len];
        out.push(if mark == '`' {
            bold(inner)
        } else {
            italic(inner)
        });
        rest = &rest[i + 2 + len..];
    }
    if !rest.is_empty() {
        out.push(roman(rest));
    }
    out
}

fn section(roff: &mut Roff, title: &str) {
    roff.control("SH", [title]);
}

fn para(roff: &mut Roff, text: &str) {
    roff.control("PP", []);
    roff.text(inlines(text));
}

/// A tagged paragraph: `tag` on its own line, `text` indented below.
fn item(roff: &mut Roff, tag: &str, text: &str) {
    roff.control("TP", []);
    roff.text(inlines(tag));
    roff.text(inlines(text));
}

fn see_also_section(roff: &mut Roff, refs: &[(String, &str)]) {
    section(roff, "SEE ALSO");
    let mut text = Vec::new();
    for (i, (name, sect)) in refs.iter().enumerate() {
        text.push(bold(name.as_str()));
        let sep = if i + 1 < refs.len() { "), " } else { ")" };
        text.push(roman(format!("({sect}{sep}")));
    }
    roff.text(text);
}

// ---------------------------------------------------------------------------------
// ralph-supervise(1) and ralph-supervise-run(1): the reference sections.

fn reference_sections(roff: &mut Roff) {
    section(roff, "EXIT STATUS");
    para(
        roff,
        "`run` exits with the command's status; the codes below are ralph-supervise's own, \
         in the style of `timeout`(1) and `env`(1). A command that itself exits with one of \
         them cannot be told apart from the supervisor by the code alone; the log says which.",
    );
    let codes: [(&str, &str); 10] = [
        (
            "*N*",
            "`run`: the command exited with status *N* (0 included). The other \
             subcommands exit 0 on success (`status`: a loop is running).",
        ),
        (
            "128+*N*",
            "The command was killed by signal *N* (143 for TERM, 137 for KILL).",
        ),
        ("2", "Usage error: a bad flag, value or missing argument."),
        (
            "3",
            "`status`, `stop`: nothing is running in the workspace (like `systemctl is-active`).",
        ),
        (
            "75",
            "The workspace is taken and the conflict policy said fail, or a bounded wait \
             expired with `after_timeout` = \"fail\" (EX_TEMPFAIL). \
             `--conflict-exit-code` and `conflict.exit_code` change the number.",
        ),
        (
            "78",
            "The policy file is missing, unreadable or invalid (EX_CONFIG); the message names \
             *file*:*line*:*column*.",
        ),
        (
            "124",
            "`max_runtime` expired and the command was stopped, or `stop` or `wait` timed out.",
        ),
        (
            "125",
            "ralph-supervise itself failed (an unwritable workspace, a lock file that is a \
             symlink or a directory, ...).",
        ),
        ("126", "The command was found but cannot be executed."),
        ("127", "The command was not found."),
    ];
    for (code, meaning) in codes {
        item(roff, code, meaning);
    }

    section(roff, "SIGNALS");
    para(
        roff,
        "The command runs in its own process group. `HUP`, `INT`, `QUIT`, `TERM`, `USR1`, \
         `USR2` and `WINCH` received by ralph-supervise are forwarded to that group.",
    );
    item(
        roff,
        "`TERM`, `INT`",
        "Also begin a stop: when the group has not exited after the grace \
         (`--stop-grace`, `stop.grace`, default 10s) it gets `KILL`. A second `TERM` or \
         `INT` during the grace sends `KILL` at once. A stop ends restarts.",
    );
    item(
        roff,
        "`TSTP`, `CONT`",
        "Job control. At a terminal the command's group owns the terminal, so Ctrl-C and \
         Ctrl-Z reach the command only. When the command stops, ralph-supervise stops \
         itself too, so the shell sees the job stopped; on `CONT` (`fg`, `bg`) it hands \
         the terminal back to the command and continues it.",
    );
    item(
        roff,
        "`CHLD`",
        "Reaps the command and, as a child subreaper (and as PID 1 in a container), every \
         orphaned descendant.",
    );
    item(
        roff,
        "`SIGRTMIN+1`, `IO`",
        "The kernel sends these when an entry of `.ralph/` changes (dnotify): \
         ralph-supervise looks at the directory again (a new stop request stops the \
         command gracefully; a deleted `loop.lock` is recreated and locked again).",
    );
    item(roff, "others", "Ignored and logged.");
    para(
        roff,
        "`KILL` cannot be caught. If ralph-supervise is killed, the command keeps running \
         and keeps the workspace locked through the descriptor it inherited, until it exits.",
    );

    section(roff, "FILES");
    para(
        roff,
        "Paths starting with `.ralph` are relative to the workspace: `-C` *DIR*, else the \
         git top level of the current directory, else the current directory. The first \
         four are ralph-orchestrator's and are shared with it.",
    );
    let files: [(&str, &str); 8] = [
        (
            ".ralph/loop.lock",
            "The workspace lock (BSD `flock`(2)) and, while held, JSON metadata naming the \
             loop (`pid` of the command, `started`, `prompt`, `supervisor_pid`, ...). \
             Created if missing; never deleted or replaced.",
        ),
        (
            ".ralph/loops.json",
            "Registry of loops running in worktrees, edited in place under its own flock.",
        ),
        (
            ".ralph/merge-queue.jsonl",
            "Merge queue; a worktree loop with `on_exit` = \"queue-merge\" appends itself \
             here when it exits 0.",
        ),
        (
            ".ralph/stop-requested",
            "Created by `ralph loops stop` (or `ralph-supervise stop`) to ask the loop to \
             stop gracefully; removed when seen, and before a launch.",
        ),
        (
            ".ralph/supervise.toml",
            "The workspace's policy file; see `ralph-supervise.toml`(5).",
        ),
        (
            ".ralph/supervise/runs.jsonl",
            "History: one JSON record per run (id, mode, command, prompt, start, end, exit \
             code or signal, restarts, stop reason, worktree), read by `history`.",
        ),
        (
            "$XDG_CONFIG_HOME/ralph-supervise/policy.toml",
            "The user's policy file (`~/.config` when `XDG_CONFIG_HOME` is unset).",
        ),
        (
            ".worktrees/",
            "Worktree loops, one per directory `.worktrees/`*loop-id* on branch \
             `ralph/`*loop-id* (`worktree.dir`, `worktree.branch_prefix`); `.worktrees/` \
             is added to `.git/info/exclude`.",
        ),
    ];
    for (path, meaning) in files {
        item(roff, &format!("`{path}`"), meaning);
    }

    section(roff, "ENVIRONMENT");
    para(roff, "Set for the command:");
    item(
        roff,
        "`RALPH_LOCK_FD`",
        "The number of the inherited descriptor that holds the workspace lock. The lock \
         lasts as long as any process keeps it open; do not unlock it.",
    );
    item(
        roff,
        "`RALPH_WORKSPACE_ROOT`",
        "The directory the command works in: the workspace, or its worktree.",
    );
    para(roff, "Read by ralph-supervise:");
    item(
        roff,
        "`RALPH_SUPERVISE_POLICY`",
        "Policy file to use when `--policy` is not given; it must exist.",
    );
    item(
        roff,
        "`XDG_CONFIG_HOME`",
        "Where the user's policy file is looked up (default `~/.config`).",
    );
    item(
        roff,
        "`NOTIFY_SOCKET`",
        "Set by systemd for `Type=notify` services: ralph-supervise sends `READY=1` once \
         the command runs, `STATUS=` lines (waiting for the lock, running pid *N*), and \
         `STOPPING=1`. Not passed on to the command.",
    );
    item(
        roff,
        "`RUST_LOG`",
        "Log filter (e.g. `ralph_supervise=debug`); wins over `-v`, `-q` and `log.level`.",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages() -> Vec<(String, String)> {
        render(crate::cli::command())
            .into_iter()
            .map(|(n, b)| (n, String::from_utf8(b).expect("UTF-8")))
            .collect()
    }

    fn page(name: &str) -> String {
        pages()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no page {name}"))
            .1
    }

    #[test]
    fn every_visible_subcommand_has_a_page_and_hidden_ones_none() {
        let names: Vec<String> = pages().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.first().map(String::as_str), Some("ralph-supervise.1"));
        assert_eq!(
            names.last().map(String::as_str),
            Some("ralph-supervise.toml.5")
        );
        let cmd = crate::cli::command();
        for sub in cmd.get_subcommands() {
            let file = format!("ralph-supervise-{}.1", sub.get_name());
            assert_eq!(names.contains(&file), !sub.is_hide_set(), "{file}");
        }
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
    }

    #[test]
    fn top_and_run_pages_carry_the_reference_sections() {
        for name in ["ralph-supervise.1", "ralph-supervise-run.1"] {
            let text = page(name);
            for heading in [
                ".SH \"EXIT STATUS\"",
                ".SH SIGNALS",
                ".SH FILES",
                ".SH ENVIRONMENT",
                ".SH \"SEE ALSO\"",
            ] {
                assert!(text.contains(heading), "{name}: no {heading}");
            }
            for code in ["124", "125", "126", "127", "75", "78"] {
                assert!(text.contains(&format!("\n{code}\n")), "{name}: no {code}");
            }
            for word in [
                "RALPH_LOCK_FD",
                "RALPH_WORKSPACE_ROOT",
                "RALPH_SUPERVISE_POLICY",
                "NOTIFY_SOCKET",
                "RUST_LOG",
                "XDG_CONFIG_HOME",
                "loop.lock",
                "loops.json",
                "merge\\-queue.jsonl",
                "stop\\-requested",
                "supervise.toml",
                "runs.jsonl",
                ".worktrees/",
                "WINCH",
                "TSTP",
            ] {
                assert!(text.contains(word), "{name}: no {word}");
            }
            // The reference sections come before the VERSION section, if any.
            if let Some(version) = text.find(".SH VERSION") {
                assert!(text.find(".SH \"EXIT STATUS\"").unwrap() < version);
            }
        }
        assert!(page("ralph-supervise.1").contains("ralph\\-supervise.toml"));
    }

    #[test]
    fn markup() {
        assert_eq!(
            inlines("a `b` *c* d"),
            vec![roman("a "), bold("b"), roman(" "), italic("c"), roman(" d")]
        );
        assert_eq!(inlines("no `end"), vec![roman("no `end")]);
    }

    #[test]
    fn write_all_writes_what_render_returns() {
        let dir = tempfile::tempdir().unwrap();
        write_all(dir.path(), crate::cli::command()).unwrap();
        for (name, bytes) in render(crate::cli::command()) {
            assert_eq!(
                std::fs::read(dir.path().join(&name)).unwrap(),
                bytes,
                "{name}"
            );
        }
    }
}
