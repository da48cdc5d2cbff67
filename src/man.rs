//! Manual pages: `ralph-supervise(1)`, one page per subcommand, and
//! `ralph-supervise.toml(5)` for the policy file.
//!
//! The pages are built rather than written by hand so that they cannot drift from the
//! CLI. Each section 1 page is assembled from `clap_mangen`'s own sections (title, NAME,
//! SYNOPSIS, DESCRIPTION, OPTIONS, SUBCOMMANDS, ..., VERSION), with hand-written
//! sections before VERSION. The prose of those lives in `man/src/*.md`, included at
//! build time: `PROSE` says which file goes on which page, and `man/src/README.md` and
//! `prose` describe the small Markdown subset it is written in. SEE ALSO is generated
//! (every page points to the top page, parents to children and children to parents,
//! the top page to all); a prose file's SEE ALSO adds to it. Nested subcommands get
//! pages of their own, named like git's: `policy show` is
//! `ralph-supervise-policy-show(1)`, next to `ralph-supervise-policy(1)`. Hidden
//! subcommands get none.
//!
//! The section 5 page is written here with the `roff` crate. Its key list is checked
//! against [`policy::KEYS`] by a unit test, and the defaults it shows are taken from
//! [`policy::show`] of the built-in policy, so the page cannot drift from the code.
//!
//! The committed copies live in `man/`; the integration test `man` fails when they
//! differ from what this module renders. Regenerate them with
//! `UPDATE_MAN=1 cargo test --test it man::`.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use clap_mangen::Man;
use roff::{Inline, Roff, bold, italic, roman};

use crate::policy;

/// Every page for `cmd`, as (file name, roff source), the top page first and the
/// policy file page last. Pure: nothing is written.
pub fn render(cmd: clap::Command) -> Vec<(String, Vec<u8>)> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let top = cmd.get_name().to_string();
    let version = cmd.get_version().unwrap_or_default().to_string();
    // Subcommands have no version of their own: every page names the program's.
    let source = format!("{top} {version}");

    let mut commands = Vec::new();
    collect(&cmd, &mut commands);
    let mans: Vec<Man> = commands
        .iter()
        .map(|c| Man::new((*c).clone()).source(source.as_str()))
        .collect();
    let names: Vec<String> = mans
        .iter()
        .map(|m| m.get_filename().trim_end_matches(".1").to_string())
        .collect();

    let mut pages = Vec::new();
    for ((cmd, man), page) in commands.iter().zip(&mans).zip(&names) {
        let mut extra = Roff::new();
        let mut refs = generated_see_also(&top, page, &names);
        for (_, text) in PROSE.iter().filter(|(p, _)| p == page) {
            for text in *text {
                refs.extend(prose(&mut extra, text));
            }
        }
        see_also_section(&mut extra, &refs);
        pages.push((man.get_filename(), assemble(cmd, man, &extra)));
    }

    pages.push((format!("{top}.toml.5"), policy_page(&top, &version)));
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

/// `cmd` and, depth first, its visible subcommands. `cmd` must be built, so that
/// subcommands carry their display names (`ralph-supervise-run`) and bin names
/// (`ralph-supervise run`) for the title and the synopsis.
fn collect<'a>(cmd: &'a clap::Command, out: &mut Vec<&'a clap::Command>) {
    out.push(cmd);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, out);
    }
}

/// The SEE ALSO references made from the page names: the top page lists every other
/// page; another page lists the top page, its parent and its children.
fn generated_see_also(top: &str, page: &str, names: &[String]) -> Vec<(String, &'static str)> {
    if page == top {
        return names
            .iter()
            .filter(|n| *n != top)
            .map(|n| (n.clone(), "1"))
            .collect();
    }
    let mut refs = vec![(top.to_string(), "1")];
    refs.extend(
        names
            .iter()
            .filter(|n| {
                (n.starts_with(&format!("{page}-")) && n.len() > page.len())
                    || (page.starts_with(&format!("{n}-")) && *n != top)
            })
            .map(|n| (n.clone(), "1")),
    );
    refs
}

/// One of `clap_mangen`'s section renderers.
type Section = fn(&Man, &mut dyn io::Write) -> io::Result<()>;

/// A page from `clap_mangen`'s sections, in the order `Man::render` puts them, with
/// `extra` after OPTIONS, SUBCOMMANDS and EXTRA and before VERSION and AUTHORS. Each
/// renderer starts its output with the `roff` preamble; the page has it once.
fn assemble(cmd: &clap::Command, man: &Man, extra: &Roff) -> Vec<u8> {
    let mut head: Vec<Section> = vec![
        Man::render_title,
        Man::render_name_section,
        Man::render_synopsis_section,
        Man::render_description_section,
    ];
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        head.push(Man::render_options_section);
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        head.push(Man::render_subcommands_section);
    }
    if cmd.get_after_long_help().is_some() || cmd.get_after_help().is_some() {
        head.push(Man::render_extra_section);
    }
    let mut tail: Vec<Section> = Vec::new();
    if cmd
        .get_version()
        .or_else(|| cmd.get_long_version())
        .is_some()
    {
        tail.push(Man::render_version_section);
    }
    if cmd.get_author().is_some() {
        tail.push(Man::render_authors_section);
    }

    let preamble = Roff::new().render();
    let strip = |rendered: &[u8]| -> Vec<u8> {
        rendered
            .strip_prefix(preamble.as_bytes())
            .expect("roff output starts with its preamble")
            .to_vec()
    };
    let body = |render: Section| {
        let mut out = Vec::new();
        render(man, &mut out).expect("rendering into a Vec cannot fail");
        strip(&out)
    };
    let mut page = preamble.clone().into_bytes();
    for render in head {
        page.extend(body(render));
    }
    page.extend(strip(extra.render().as_bytes()));
    for render in tail {
        page.extend(body(render));
    }
    page
}

// ---------------------------------------------------------------------------------
// The hand-written sections of the section 1 pages.

/// The EXIT STATUS, SIGNALS, FILES and ENVIRONMENT sections, on the top page and the
/// `run` page.
const REFERENCE: &str = include_str!("../man/src/reference.md");

/// The prose files of each page, by page name, in the order they are rendered.
const PROSE: [(&str, &[&str]); 5] = [
    (
        "ralph-supervise",
        &[REFERENCE, include_str!("../man/src/ralph-supervise.md")],
    ),
    (
        "ralph-supervise-run",
        &[REFERENCE, include_str!("../man/src/ralph-supervise-run.md")],
    ),
    (
        "ralph-supervise-status",
        &[include_str!("../man/src/ralph-supervise-status.md")],
    ),
    (
        "ralph-supervise-list",
        &[include_str!("../man/src/ralph-supervise-list.md")],
    ),
    (
        "ralph-supervise-history",
        &[include_str!("../man/src/ralph-supervise-history.md")],
    ),
];

/// Renders one prose file into `roff` and returns the references of its SEE ALSO
/// section, which the caller adds to the generated ones.
///
/// The format is a small subset of Markdown, read line by line:
///
/// - `# TITLE` starts a section (`.SH`), `## Title` a subsection (`.SS`).
/// - Blank lines separate blocks. A block is a paragraph (`.PP`), its lines joined
///   with spaces, unless it is a definition list: a tag line, then its text on lines
///   starting with `: `, continued on indented lines (`.TP` for each tag).
/// - Lines between two ```` ``` ```` lines are shown as they are (an indented `.nf`
///   block).
/// - In text and tags, `` `code` `` is bold and `*placeholder*` is italic.
/// - The SEE ALSO section holds one block of `name(section)` references separated by
///   commas.
///
/// Panics on a definition list tag without text: the prose files are part of the
/// source, and the unit tests render them all.
fn prose(roff: &mut Roff, text: &'static str) -> Vec<(String, &'static str)> {
    let mut refs = Vec::new();
    let mut see_also = false;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(title) = line.strip_prefix("# ") {
            see_also = title == "SEE ALSO";
            if !see_also {
                section(roff, title);
            }
            continue;
        }
        if let Some(title) = line.strip_prefix("## ") {
            subsection(roff, title);
            continue;
        }
        if line.starts_with("```") {
            let mut shown = Vec::new();
            for line in lines.by_ref() {
                if line.starts_with("```") {
                    break;
                }
                shown.push(line);
            }
            literal(roff, &shown);
            continue;
        }
        let mut block = vec![line];
        while let Some(next) = lines.peek() {
            if next.trim().is_empty() || next.starts_with('#') || next.starts_with("```") {
                break;
            }
            block.push(next);
            lines.next();
        }
        if see_also {
            refs.extend(block.into_iter().flat_map(references));
        } else if block.iter().any(|l| l.starts_with(": ")) {
            definitions(roff, &block);
        } else {
            para(roff, &joined(&block));
        }
    }
    refs
}

/// Lines trimmed and joined with single spaces.
fn joined(lines: &[&str]) -> String {
    lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ")
}

/// A definition list: a tag line, then `: text` with indented continuation lines.
fn definitions(roff: &mut Roff, lines: &[&str]) {
    let mut tag: Option<&str> = None;
    let mut text: Vec<&str> = Vec::new();
    let mut flush = |tag: Option<&str>, text: &mut Vec<&str>| {
        if let Some(tag) = tag {
            assert!(!text.is_empty(), "man prose: the tag {tag:?} has no text");
            item(roff, tag, &joined(text));
            text.clear();
        }
    };
    for line in lines {
        if let Some(first) = line.strip_prefix(": ") {
            text.push(first);
        } else if line.starts_with(char::is_whitespace) && !text.is_empty() {
            text.push(line);
        } else {
            flush(tag, &mut text);
            tag = Some(line.trim());
        }
    }
    flush(tag, &mut text);
}

/// `flock(1), git-worktree(1)` as (name, section) pairs.
fn references(line: &'static str) -> impl Iterator<Item = (String, &'static str)> {
    line.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            let (name, sect) = r
                .strip_suffix(')')
                .and_then(|r| r.rsplit_once('('))
                .unwrap_or_else(|| panic!("man prose: {r:?} is not a name(section) reference"));
            (name.to_string(), sect)
        })
}

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

fn subsection(roff: &mut Roff, title: &str) {
    roff.control("SS", [title]);
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

/// Lines shown as they are, indented (examples).
fn literal(roff: &mut Roff, lines: &[&str]) {
    roff.control("PP", []);
    roff.control("RS", ["4"]);
    roff.control("nf", []);
    for line in lines {
        roff.text([roman(*line)]);
    }
    roff.control("fi", []);
    roff.control("RE", []);
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
// ralph-supervise.toml(5)

/// One key of the policy file: type, meaning, and (for keywords) each value.
struct KeyDoc {
    key: &'static str,
    kind: &'static str,
    meaning: &'static str,
    values: &'static [(&'static str, &'static str)],
}

const KEY_DOCS: [KeyDoc; 19] = [
    KeyDoc {
        key: "conflict.policy",
        kind: "string",
        meaning: "What `run` does when another loop holds the workspace lock.",
        values: &[
            (
                "worktree",
                "Run the command in a new git worktree (see [worktree]).",
            ),
            (
                "wait",
                "Block until the lock is free, without polling; bounded by `wait_timeout`.",
            ),
            ("fail", "Exit with `exit_code`, naming the holder."),
            (
                "takeover",
                "Stop the holder as `ralph-supervise stop` does (its grace, then KILL), then \
                 take the lock.",
            ),
        ],
    },
    KeyDoc {
        key: "conflict.wait_timeout",
        kind: "duration",
        meaning: "How long \"wait\" waits; then `after_timeout` applies.",
        values: &[],
    },
    KeyDoc {
        key: "conflict.after_timeout",
        kind: "string",
        meaning: "What \"wait\" does when `wait_timeout` expires.",
        values: &[
            ("fail", "Exit with `exit_code`."),
            ("worktree", "Run the command in a new git worktree."),
        ],
    },
    KeyDoc {
        key: "conflict.exit_code",
        kind: "integer, 1 to 255",
        meaning: "Exit status for \"fail\" and for a timed-out wait.",
        values: &[],
    },
    KeyDoc {
        key: "worktree.dir",
        kind: "string",
        meaning: "Directory the worktrees are made in, one subdirectory per loop id; \
                  relative to the repository's top level.",
        values: &[],
    },
    KeyDoc {
        key: "worktree.branch_prefix",
        kind: "string",
        meaning: "Prefix of each worktree's branch name, followed by the loop id. It must \
                  be usable in a git ref name.",
        values: &[],
    },
    KeyDoc {
        key: "worktree.sync",
        kind: "boolean",
        meaning: "Carry uncommitted work (modified, staged, deleted and untracked files that \
                  are not ignored) over into the new worktree.",
        values: &[],
    },
    KeyDoc {
        key: "worktree.on_exit",
        kind: "string",
        meaning: "What happens to a worktree when its loop ends.",
        values: &[
            ("keep", "Leave it in place."),
            (
                "remove-if-clean",
                "Remove it if it has no changes and no commits beyond its base.",
            ),
            (
                "queue-merge",
                "On exit 0, append it to `.ralph/merge-queue.jsonl` for `ralph loops merge`.",
            ),
        ],
    },
    KeyDoc {
        key: "stop.signal",
        kind: "string or integer",
        meaning: "Signal that asks the command to stop: a name (\"TERM\", \"SIGINT\") or a \
                  number.",
        values: &[],
    },
    KeyDoc {
        key: "stop.grace",
        kind: "duration",
        meaning: "Time between the stop signal and KILL.",
        values: &[],
    },
    KeyDoc {
        key: "stop.orphans",
        kind: "string",
        meaning: "What happens to members of the command's process group still running \
                  after it exits.",
        values: &[
            ("kill", "TERM, then KILL after `grace`."),
            ("leave", "Leave them running."),
        ],
    },
    KeyDoc {
        key: "restart.policy",
        kind: "string",
        meaning: "When the command is started again after it exits. The workspace lock \
                  stays held across restarts; a stop ends them.",
        values: &[
            ("never", "Never."),
            (
                "on-failure",
                "When it exits non-zero or is killed by a signal.",
            ),
            ("always", "Whenever it exits."),
        ],
    },
    KeyDoc {
        key: "restart.max",
        kind: "integer, 0 or more",
        meaning: "Most restarts in one run; then ralph-supervise exits with the command's \
                  status.",
        values: &[],
    },
    KeyDoc {
        key: "restart.backoff_initial",
        kind: "duration",
        meaning: "Delay before the first restart; it doubles with each further restart.",
        values: &[],
    },
    KeyDoc {
        key: "restart.backoff_max",
        kind: "duration",
        meaning: "Longest delay between restarts; at least `backoff_initial`.",
        values: &[],
    },
    KeyDoc {
        key: "run.max_runtime",
        kind: "duration",
        meaning: "Stop the command gracefully when it has run this long, and exit 124.",
        values: &[],
    },
    KeyDoc {
        key: "run.env",
        kind: "table of strings",
        meaning: "Extra environment variables for the command, written as a [run.env] \
                  section of NAME = \"value\" lines.",
        values: &[],
    },
    KeyDoc {
        key: "log.format",
        kind: "string",
        meaning: "Format of ralph-supervise's own log lines on standard error.",
        values: &[
            ("text", "For people."),
            ("json", "One JSON object per line, for collectors."),
        ],
    },
    KeyDoc {
        key: "log.level",
        kind: "string",
        meaning: "Least severe level logged: \"error\", \"warn\", \"info\", \"debug\" or \
                  \"trace\". `RUST_LOG`, `-v` and `-q` win over it.",
        values: &[],
    },
];

/// The built-in default of every key, as `policy show` prints it: a TOML value, or
/// "not set (...)" for optional keys.
fn defaults() -> BTreeMap<String, String> {
    let shown = policy::show(&policy::resolve(None, &policy::Overrides::default()));
    let mut section = "";
    let mut out = BTreeMap::new();
    for line in shown.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
        } else if let Some(rest) = line.strip_prefix("# ")
            && let Some((key, why)) = rest.split_once(" not set: ")
        {
            let why = why.rsplit_once("  # ").map_or(why, |(w, _)| w);
            out.insert(format!("{section}.{key}"), format!("not set ({why})"));
        } else if !line.starts_with('#')
            && let Some((key, value)) = line.split_once(" = ")
        {
            let value = value.rsplit_once("  # ").map_or(value, |(v, _)| v);
            out.insert(format!("{section}.{key}"), value.to_string());
        }
    }
    out
}

fn policy_page(top: &str, version: &str) -> Vec<u8> {
    let mut r = Roff::new();
    let title = format!("{top}.toml");
    let source = format!("{top} {version}");
    r.control("TH", [title.as_str(), "5", "", source.as_str(), ""]);

    section(&mut r, "NAME");
    r.text([roman(format!(
        "{title} - policy file of {top}: conflicts, worktrees, stopping, restarts, logging"
    ))]);

    section(&mut r, "SYNOPSIS");
    r.text([bold(policy::WORKSPACE_FILE)]);
    r.control("br", []);
    r.text([bold("$XDG_CONFIG_HOME/"), bold(policy::USER_FILE)]);
    r.control("br", []);
    r.text([
        bold(format!("{top} run --policy ")),
        italic("FILE"),
        bold(" ..."),
    ]);

    section(&mut r, "DESCRIPTION");
    para(
        &mut r,
        "The policy file says what `ralph-supervise run` does when the workspace is taken, \
         how worktree loops are laid out, how the command is stopped and restarted, and how \
         ralph-supervise logs. It is TOML: a few sections, each holding keys. Every key is \
         optional; a key left out keeps its default. Command-line flags override the file.",
    );
    para(
        &mut r,
        "`ralph-supervise policy show` prints the effective policy and where each value came \
         from; `ralph-supervise policy check` *FILE* checks a file without running anything.",
    );

    section(&mut r, "LOOKUP");
    para(
        &mut r,
        "One file is read, the first found of these; files are not merged:",
    );
    let order: [(&str, &str); 5] = [
        ("1.", "`--policy` *FILE* (it must exist)."),
        (
            "2.",
            "`$RALPH_SUPERVISE_POLICY`, when set and not empty (it must exist).",
        ),
        ("3.", "*workspace*`/.ralph/supervise.toml`."),
        (
            "4.",
            "`$XDG_CONFIG_HOME/ralph-supervise/policy.toml`; `~/.config` stands for \
             `$XDG_CONFIG_HOME` when that is unset, empty or relative.",
        ),
        ("5.", "None: the built-in defaults."),
    ];
    for (n, text) in order {
        item(&mut r, n, text);
    }

    section(&mut r, "VALUES");
    item(
        &mut r,
        "*duration*",
        "A string with a number and a unit, optionally several: \"250ms\", \"30s\", \"5m\", \
         \"1h30m\", \"2days\".",
    );
    item(
        &mut r,
        "*string*",
        "In double quotes. Keywords are lowercase and spelled as listed.",
    );
    item(
        &mut r,
        "*integer*, *boolean*",
        "Without quotes: 75, true, false.",
    );

    section(&mut r, "SECTIONS AND KEYS");
    let defaults = defaults();
    for (name, keys) in policy::SECTIONS {
        subsection(&mut r, &format!("[{name}]"));
        for key in keys {
            let full = format!("{name}.{key}");
            let doc = KEY_DOCS
                .iter()
                .find(|d| d.key == full)
                .unwrap_or_else(|| panic!("{full} is not documented in man::KEY_DOCS"));
            let default = defaults
                .get(&full)
                .map(String::as_str)
                .unwrap_or("see text");
            let flag = policy::flag_for(&full)
                .map(|f| format!(" Command-line flag: `{f}`."))
                .unwrap_or_default();
            r.control("TP", []);
            r.text([bold(*key), roman(" = "), italic(doc.kind)]);
            r.text(inlines(doc.meaning));
            r.text(inlines(&format!("Default: `{default}`.{flag}")));
            if !doc.values.is_empty() {
                r.control("RS", []);
                for (value, meaning) in doc.values {
                    item(&mut r, &format!("\"{value}\""), meaning);
                }
                r.control("RE", []);
            }
        }
    }
    para(
        &mut r,
        "When `conflict.policy` is not set, it is \"worktree\" in a git repository and \
         \"fail\" elsewhere. Outside a git repository \"worktree\" cannot work: run exits \
         with `conflict.exit_code` unless the policy is \"wait\".",
    );

    section(&mut r, "DIAGNOSTICS");
    para(
        &mut r,
        "An unknown section or key, a value of the wrong type, an unknown keyword, a \
         duration or signal that does not parse, an exit code out of range, and invalid \
         TOML are errors. Each is reported as one line naming the place and what to write \
         instead, and ralph-supervise exits with status 78 without starting anything:",
    );
    literal(
        &mut r,
        &[
            "ralph-supervise: .ralph/supervise.toml:7:1: unknown key \"grce\" in [stop];",
            "  expected one of signal, grace, orphans",
        ],
    );
    para(
        &mut r,
        "Lines and columns count from 1; the column counts characters. A file named by \
         `--policy` or `$RALPH_SUPERVISE_POLICY` that does not exist is reported the same \
         way.",
    );

    section(&mut r, "EXAMPLE");
    para(
        &mut r,
        "A service that waits its turn for the workspace and restarts the loop on failure:",
    );
    literal(
        &mut r,
        &[
            "[conflict]",
            "policy = \"wait\"",
            "wait_timeout = \"1h\"",
            "",
            "[stop]",
            "grace = \"2m\"",
            "",
            "[restart]",
            "policy = \"on-failure\"",
            "max = 10",
            "backoff_initial = \"5s\"",
            "backoff_max = \"5m\"",
            "",
            "[run.env]",
            "CI = \"true\"",
        ],
    );
    para(
        &mut r,
        "Commented examples for a terminal, CI, parallel agents and systemd are in the \
         `config/` directory of the source.",
    );

    see_also_section(
        &mut r,
        &[
            (top.to_string(), "1"),
            (format!("{top}-run"), "1"),
            ("systemd.service".to_string(), "5"),
        ],
    );
    r.render().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{AfterTimeout, OnConflict, OnExit, Orphans, RestartPolicy};

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
    fn the_policy_page_documents_every_key_with_its_default() {
        let documented: Vec<&str> = KEY_DOCS.iter().map(|d| d.key).collect();
        assert_eq!(
            documented,
            policy::KEYS,
            "KEY_DOCS must follow policy::KEYS"
        );
        let defaults = defaults();
        for key in policy::KEYS {
            assert!(defaults.contains_key(key), "no default shown for {key}");
        }
        assert_eq!(defaults["stop.grace"], "\"10s\"");
        assert_eq!(defaults["conflict.exit_code"], "75");
        assert!(defaults["restart.max"].starts_with("not set ("));

        let text = page("ralph-supervise.toml.5");
        for (name, keys) in policy::SECTIONS {
            assert!(text.contains(&format!(".SS [{name}]")), "no [{name}]");
            for key in keys {
                let escaped = key.replace('-', "\\-");
                assert!(text.contains(&format!("\\fB{escaped}\\fR")), "no {key}");
            }
        }
        for word in [
            "78",
            "line",
            "column",
            "RALPH_SUPERVISE_POLICY",
            "XDG_CONFIG_HOME",
        ] {
            assert!(text.contains(word), "no {word}");
        }
    }

    #[test]
    fn keyword_values_match_the_code() {
        fn spelled<T: Copy>(all: &[T], f: fn(T) -> &'static str) -> Vec<&'static str> {
            all.iter().map(|v| f(*v)).collect()
        }
        let expected: [(&str, Vec<&str>); 6] = [
            (
                "conflict.policy",
                spelled(OnConflict::ALL, OnConflict::as_str),
            ),
            (
                "conflict.after_timeout",
                spelled(AfterTimeout::ALL, AfterTimeout::as_str),
            ),
            ("worktree.on_exit", spelled(OnExit::ALL, OnExit::as_str)),
            ("stop.orphans", spelled(Orphans::ALL, Orphans::as_str)),
            (
                "restart.policy",
                spelled(RestartPolicy::ALL, RestartPolicy::as_str),
            ),
            ("log.format", vec!["text", "json"]),
        ];
        for (key, values) in expected {
            let doc = KEY_DOCS.iter().find(|d| d.key == key).unwrap();
            let listed: Vec<&str> = doc.values.iter().map(|(v, _)| *v).collect();
            assert_eq!(listed, values, "{key}");
        }
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
    fn prose_format() {
        let mut r = Roff::new();
        let refs = prose(
            &mut r,
            "# TITLE\n\nA `b`\n  c.\n\n## Sub\n\n*N*\n: one\n  two\nx\n: y\n\n```\n{ a }\n\n b\n```\n\n# SEE ALSO\n\nflock(1), git-worktree(1),\nsd_notify(3)\n",
        );
        assert_eq!(
            r.to_roff(),
            ".SH TITLE\n.PP\nA \\fBb\\fR c.\n.SS Sub\n.TP\n\\fIN\\fR\none two\n.TP\nx\ny\n\
             .PP\n.RS 4\n.nf\n{ a }\n\n b\n.fi\n.RE\n"
        );
        assert_eq!(
            refs,
            [
                ("flock".to_string(), "1"),
                ("git-worktree".to_string(), "1"),
                ("sd_notify".to_string(), "3")
            ]
        );
    }

    /// Without hand-written sections a page is what `Man::render` makes: `assemble`
    /// picks the same sections, in the same order.
    #[test]
    fn assemble_follows_man_render() {
        let mut cmd = crate::cli::command().disable_help_subcommand(true);
        cmd.build();
        let mut commands = Vec::new();
        collect(&cmd, &mut commands);
        for cmd in commands {
            let man = Man::new(cmd.clone());
            let mut whole = Vec::new();
            man.render(&mut whole).unwrap();
            assert_eq!(
                String::from_utf8(assemble(cmd, &man, &Roff::new())).unwrap(),
                String::from_utf8(whole).unwrap(),
                "{}",
                man.get_filename()
            );
        }
    }

    #[test]
    fn every_prose_file_belongs_to_a_page() {
        let names: Vec<String> = pages().into_iter().map(|(n, _)| n).collect();
        for (page, _) in PROSE {
            assert!(names.contains(&format!("{page}.1")), "no page {page}");
        }
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
