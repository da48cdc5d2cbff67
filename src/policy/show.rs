//! The policy as text: `policy show` (each value with where it came from), and
//! `ralph-supervise.toml(5)`, whose prose is `man/ralph-supervise.toml.5.in` and whose
//! list of sections and keys is generated here from the key table.

use std::fmt::Write as _;
use std::time::Duration;

use roff::{Inline, Roff, bold, italic, roman};

use super::{Effective, Key, Policy, Source, TABLE, flag_for};

/// Every row of the key table, with whether it is the first of its section.
fn rows() -> impl Iterator<Item = (bool, &'static Key)> {
    let first = |i: usize| i == 0 || TABLE[i - 1].section != TABLE[i].section;
    (0..TABLE.len()).map(move |i| (first(i), &TABLE[i]))
}

/// The effective policy as TOML, each value followed by where it came from (`# default`,
/// `# <file>`, `# --flag`). Unset optional values are shown as comments, so the output
/// is itself a valid policy file describing the same policy.
pub fn show(e: &Effective) -> String {
    let mut out = match &e.file {
        Some(path) => format!("# effective policy; file: {}\n", path.display()),
        None => "# effective policy; no policy file, built-in defaults\n".to_string(),
    };
    for (first, key) in rows() {
        if first {
            let _ = writeln!(out, "\n[{}]", key.section);
        }
        let origin = match e.source(key.full) {
            Source::Default => "default".to_string(),
            Source::File(path) => path.display().to_string(),
            Source::Flag => flag_for(key.full).unwrap_or("command line".into()),
        };
        let _ = match (key.show)(&e.policy) {
            Some(value) => writeln!(out, "{} = {value}  # {origin}", key.name),
            None => writeln!(out, "# {} not set: {}  # {origin}", key.name, key.unset),
        };
    }
    out
}

/// `1h30m`, `10s`, `250ms`: humantime's form without its spaces (it parses back).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}

/// A TOML string.
pub(crate) fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// A TOML key: bare when it can be, quoted otherwise.
pub(crate) fn toml_key(key: &str) -> String {
    let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let is_bare = !key.is_empty() && key.chars().all(bare);
    if is_bare {
        key.to_string()
    } else {
        quoted(key)
    }
}

/// The built-in default of `key` as the man page shows it: a TOML value, or
/// "not set (...)" for optional keys.
pub(crate) fn default_of(key: &Key) -> String {
    let shown = (key.show)(&Policy::default());
    shown.unwrap_or_else(|| format!("not set ({})", key.unset))
}

/// The `ralph-supervise.toml(5)` page, in roff.
pub fn man_page(top: &str, version: &str) -> Vec<u8> {
    const PAGE: &str = include_str!("../../man/ralph-supervise.toml.5.in");
    let mut r = Roff::new();
    for (first, key) in rows() {
        if first {
            r.control("SS", [format!("[{}]", key.section).as_str()]);
        }
        let flag = flag_for(key.full).map(|f| format!(" Command-line flag: `{f}`."));
        r.control("TP", []);
        r.text([bold(key.name), roman(" = "), italic(key.kind)]);
        r.text(inlines(key.doc));
        let default = default_of(key);
        r.text(inlines(&format!(
            "Default: `{default}`.{}",
            flag.unwrap_or_default()
        )));
        if !key.values.is_empty() {
            r.control("RS", []);
            for (value, meaning) in key.values {
                r.control("TP", []);
                r.text(inlines(&format!("\"{value}\"")));
                r.text(inlines(meaning));
            }
            r.control("RE", []);
        }
    }
    let mut head = Roff::new();
    let (title, source) = (format!("{top}.toml"), format!("{top} {version}"));
    head.control("TH", [title.as_str(), "5", "", source.as_str(), ""]);
    let (preamble, keys) = (Roff::new().render(), r.render());
    let keys = keys.strip_prefix(preamble.as_str()).unwrap_or(&keys);
    let (before, after) = PAGE
        .split_once(".\\\" KEYS:")
        .expect("the page marks its key list");
    let after = after.split_once('\n').map_or("", |(_, rest)| rest);
    format!("{}{before}{keys}{after}", head.render()).into_bytes()
}

/// Text with `code` in bold.
fn inlines(text: &str) -> Vec<Inline> {
    let parts = text
        .split('`')
        .enumerate()
        .filter(|(_, part)| !part.is_empty());
    parts
        .map(|(i, part)| if i % 2 == 1 { bold(part) } else { roman(part) })
        .collect()
}
