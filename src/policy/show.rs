//! The policy as text: `policy show`, and the key list of `ralph-supervise.toml(5)`
//! (whose prose is `man/ralph-supervise.toml.5.in`).

use std::fmt::Write as _;
use std::time::Duration;

use super::{Effective, Key, Policy, Source, TABLE, flag_for};

/// The effective policy as TOML, each value followed by where it came from (`# default`,
/// `# <file>`, `# --flag`). Unset optional values are shown as comments, so the output
/// is itself a valid policy file describing the same policy.
pub(crate) fn show(e: &Effective) -> String {
    let mut out = match &e.file {
        Some(path) => format!("# effective policy; file: {}\n", crate::present::path(path)),
        None => "# effective policy; no policy file, built-in defaults\n".to_string(),
    };
    for (i, key) in TABLE.iter().enumerate() {
        if i == 0 || TABLE[i - 1].section != key.section {
            let _ = writeln!(out, "\n[{}]", key.section);
        }
        let origin = match e.source(key.full) {
            Source::Default => "default".to_string(),
            Source::File(path) => crate::present::path(path),
            Source::Flag => flag_for(key.full).unwrap_or_default(),
        };
        let _ = match (key.show)(&e.policy) {
            Some(value) => writeln!(out, "{} = {value}  # {origin}", key.name),
            None => writeln!(out, "# {} not set: {}  # {origin}", key.name, key.unset),
        };
    }
    out
}
/// `1h30m`, `10s`, `250ms`: humantime's form without its spaces (it parses back).
pub(super) fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}
pub(crate) fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}
/// A TOML key: bare when it can be, quoted otherwise.
pub(crate) fn toml_key(key: &str) -> String {
    let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    match !key.is_empty() && key.chars().all(bare) {
        true => key.to_string(),
        false => quoted(key),
    }
}
/// The built-in default as the man page shows it: TOML, or "not set (...)".
pub(crate) fn default_of(key: &Key) -> String {
    let shown = (key.show)(&Policy::default());
    shown.unwrap_or_else(|| format!("not set ({})", key.unset))
}

/// The `ralph-supervise.toml(5)` page, in roff.
pub(crate) fn man_page(version: &str) -> Vec<u8> {
    let mut keys = String::new();
    for (i, key) in TABLE.iter().enumerate() {
        if i == 0 || TABLE[i - 1].section != key.section {
            let _ = writeln!(keys, ".SS [{}]", key.section);
        }
        let (name, kind, doc) = (roff(key.name), roff(key.kind), roff(key.doc));
        let flag = flag_for(key.full).map(|f| format!(" Command-line flag: `{f}`."));
        let flag = flag.unwrap_or_default();
        let default = roff(&format!("Default: `{}`.{flag}", default_of(key)));
        keys += &format!(".TP\n\\fB{name}\\fR = \\fI{kind}\\fR\n{doc}\n{default}\n");
        if !key.values.is_empty() {
            keys.push_str(".RS\n");
            for (value, meaning) in key.values {
                let _ = writeln!(keys, ".TP\n\"{}\"\n{}", roff(value), roff(meaning));
            }
            keys.push_str(".RE\n");
        }
    }
    let page = include_str!("../../man/ralph-supervise.toml.5.in").replace("@VERSION@", version);
    page.replace("@KEYS@", &keys).into_bytes()
}
/// `text` as a roff text line, with `code` in bold.
fn roff(text: &str) -> String {
    let text = text.replace('\\', "\\\\").replace('-', "\\-");
    let text = text.replace('\'', "\\*(Aq");
    let bold = |p: &str| format!("\\fB{p}\\fR");
    let parts = text.split('`').enumerate();
    parts.fold(String::new(), |out, (i, p)| {
        if i % 2 == 1 { out + &bold(p) } else { out + p }
    })
}
