//! `ralph-supervise.toml(5)`: the prose lives in `man/ralph-supervise.toml.5.in`; the
//! list of sections and keys (type, meaning, default, flag, keyword values) is
//! generated here from the key table, so the page cannot drift from the code.

use roff::{Inline, Roff, bold, italic, roman};

use super::{Policy, SECTIONS, key};

const PAGE: &str = include_str!("../../man/ralph-supervise.toml.5.in");
const KEYS_MARK: &str = ".\\\" KEYS:";

/// The built-in default of `key` as the man page shows it: a TOML value, or
/// "not set (...)" for optional keys.
pub(crate) fn default_of(full: &str) -> Option<String> {
    let key = key(full)?;
    let shown = (key.show)(&Policy::default());
    Some(shown.unwrap_or_else(|| format!("not set ({})", key.unset)))
}

/// The `ralph-supervise.toml(5)` page, in roff.
pub fn man_page(top: &str, version: &str) -> Vec<u8> {
    let mut head = Roff::new();
    let (title, source) = (format!("{top}.toml"), format!("{top} {version}"));
    head.control("TH", [title.as_str(), "5", "", source.as_str(), ""]);
    let mut r = Roff::new();
    for (section, keys) in SECTIONS {
        r.control("SS", [format!("[{section}]").as_str()]);
        for name in *keys {
            let full = format!("{section}.{name}");
            let key = key(&full).expect("every key of SECTIONS is in the table");
            let default = default_of(&full).unwrap_or_default();
            let flag = super::flag_for(&full)
                .map(|f| format!(" Command-line flag: `{f}`."))
                .unwrap_or_default();
            r.control("TP", []);
            r.text([bold(*name), roman(" = "), italic(key.kind)]);
            r.text(inlines(key.doc));
            r.text(inlines(&format!("Default: `{default}`.{flag}")));
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
    }
    let preamble = Roff::new().render();
    let keys = r.render();
    let keys = keys.strip_prefix(preamble.as_str()).unwrap_or(&keys);
    let (before, after) = PAGE
        .split_once(KEYS_MARK)
        .expect("the page marks its key list");
    let after = after.split_once('\n').map_or("", |(_, rest)| rest);
    format!("{}{before}{keys}{after}", head.render()).into_bytes()
}

/// Text with `code` in bold and *words* in italics.
pub(crate) fn inlines(text: &str) -> Vec<Inline> {
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
