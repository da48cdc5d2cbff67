//! The policy as text: `policy show`, and each key's default as the man page and
//! `--help` show it.

use std::fmt::Write as _;

use super::{Effective, Source, TABLE};

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
            Source::Flag => key.long_flag().unwrap_or_default(),
        };
        let _ = match (key.show)(&e.policy) {
            Some(value) => writeln!(out, "{} = {value}  # {origin}", key.name),
            None => writeln!(out, "# {} not set: {}  # {origin}", key.name, key.unset),
        };
    }
    out
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
