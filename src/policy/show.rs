//! `policy show`: the effective policy as TOML, each value with where it came from.

use std::fmt::Write as _;
use std::time::Duration;

use super::{Effective, SECTIONS, Source, key};

/// The effective policy as TOML, each value followed by where it came from (`# default`,
/// `# <file>`, `# --flag`). Unset optional values are shown as comments, so the output
/// is itself a valid policy file describing the same policy.
pub fn show(e: &Effective) -> String {
    let mut out = match &e.file {
        Some(path) => format!("# effective policy; file: {}\n", path.display()),
        None => "# effective policy; no policy file, built-in defaults\n".to_string(),
    };
    for (section, keys) in SECTIONS {
        let _ = writeln!(out, "\n[{section}]");
        for name in *keys {
            let full = format!("{section}.{name}");
            let key = key(&full).expect("every key of SECTIONS is in the table");
            let origin = match e.source(&full) {
                Source::Default => "default".to_string(),
                Source::File(path) => path.display().to_string(),
                Source::Flag => super::flag_for(&full).unwrap_or("command line".into()),
            };
            let _ = match (key.show)(&e.policy) {
                Some(value) => writeln!(out, "{name} = {value}  # {origin}"),
                None => writeln!(out, "# {name} not set: {}  # {origin}", key.unset),
            };
        }
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
    match !key.is_empty() && key.chars().all(bare) {
        true => key.to_string(),
        false => quoted(key),
    }
}
