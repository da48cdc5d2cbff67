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
//! The section 5 page is written the same way, from `man/src/ralph-supervise.toml.md`,
//! except for its key list: the `@KEYS@` line there stands for every key's type,
//! meaning, default and flag, taken from the policy schema ([`policy::TABLE`]), so
//! the page cannot drift from the code.
//!
//! The committed copies live in `man/`; the integration test `man` fails when they
//! differ from what this module renders. Regenerate them with
//! `UPDATE_MAN=1 cargo test --test it man::`.

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

    pages.push((format!("{top}.toml.5"), policy_page(&source)));
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

/// The EXIT STATUS, CONTAINMENT, SIGNALS, FILES and ENVIRONMENT sections, on the top page and the
/// `run` page.
const REFERENCE: &str = include_str!("../man/src/reference.md");

/// The prose files of each page, by page name, in the order they are rendered.
const PROSE: [(&str, &[&str]); 6] = [
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
    (
        "ralph-supervise-stop",
        &[include_str!("../man/src/ralph-supervise-stop.md")],
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
/// - A line `@KEYS@` stands for the policy keys, generated from [`policy::TABLE`].
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
        if line.trim() == "@KEYS@" {
            policy_keys(roff);
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
// ralph-supervise.toml(5): prose from `man/src/ralph-supervise.toml.md`, keys from the
// policy schema.

fn policy_page(source: &str) -> Vec<u8> {
    let mut roff = Roff::new();
    roff.control("TH", ["ralph-supervise.toml", "5", "", source]);
    let refs = prose(
        &mut roff,
        include_str!("../man/src/ralph-supervise.toml.md"),
    );
    see_also_section(&mut roff, &refs);
    roff.render().into_bytes()
}

/// Each key under its section: name, type, meaning, default, flag, and each keyword.
fn policy_keys(roff: &mut Roff) {
    let mut section = "";
    for key in policy::TABLE {
        if key.section != section {
            section = key.section;
            subsection(roff, &format!("[{section}]"));
        }
        roff.control("TP", []);
        roff.text([bold(key.name), roman(" = "), italic(key.kind)]);
        roff.text(inlines(key.doc));
        let flag = key
            .long_flag()
            .map(|f| format!(" Command-line flag: `{f}`."));
        let default = key
            .default()
            .unwrap_or_else(|unset| format!("not set ({unset})"));
        let default = format!("Default: `{default}`.{}", flag.unwrap_or_default());
        roff.text(inlines(&default));
        if !key.values.is_empty() {
            roff.control("RS", []);
            for (value, meaning) in key.values {
                item(roff, &format!("\"{value}\""), meaning);
            }
            roff.control("RE", []);
        }
    }
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
