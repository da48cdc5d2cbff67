//! The policy as text: `policy show`, and the key documentation `ralph-supervise.toml(5)`
//! is built from (by `man.rs`, around the prose in `man/src/ralph-supervise.toml.md`).

use std::fmt::Write as _;
use std::time::Duration;

use super::{Effective, Key, Policy, Source, TABLE, flag_for};

/// The effective policy as TOML, each value followed by where it came from (`# default`,
/// `# <file>`, `# --flag`). Unset optional values are shown as comments, so the output
/// is itself a valid policy file describing the same policy.
pub(crate) fn show(e: &Effective) -> String {
    let mut out = match &e.file {
        Some(path) => format!("# effective policy; file: {}\n", path.display()),
        None => "# effective policy; no policy file, built-in defaults\n".to_string(),
    };
    for (i, key) in TABLE.iter().enumerate() {
        if i == 0 || TABLE[i - 1].section != key.section {
            let _ = writeln!(out, "\n[{}]", key.section);
        }
        let origin = match e.source(key.full) {
            Source::Default => "default".to_string(),
            Source::File(path) => path.display().to_string(),
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

/// One key as `ralph-supervise.toml(5)` documents it.
pub(crate) struct KeyDoc {
    pub(crate) section: &'static str,
    pub(crate) name: &'static str,
    /// "duration", "string", "integer, 1 to 255", ...
    pub(crate) kind: &'static str,
    pub(crate) doc: &'static str,
    /// Each keyword with its meaning; empty for other kinds.
    pub(crate) values: &'static [(&'static str, &'static str)],
    /// The built-in default, as TOML or "not set (...)".
    pub(crate) default: String,
    /// The command-line flag that overrides the key.
    pub(crate) flag: Option<String>,
}

/// Every key, in file order, for the manual page.
pub(crate) fn key_docs() -> Vec<KeyDoc> {
    TABLE
        .iter()
        .map(|key| KeyDoc {
            section: key.section,
            name: key.name,
            kind: key.kind,
            doc: key.doc,
            values: key.values,
            default: default_of(key),
            flag: flag_for(key.full),
        })
        .collect()
}
