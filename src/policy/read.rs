//! Reading a policy file: TOML's spanned tree, walked in file order against the key
//! table, so the first problem in the file is the one reported, as `file:line:col`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{PolicyFile, SECTIONS, format_duration, key, show::quoted};
use crate::exit::{ExitStatus, Failure};

/// A complaint about the policy text, at a byte offset.
#[derive(Debug)]
pub struct Bad(Option<usize>, String);

impl Bad {
    pub(crate) fn at(span: Range<usize>, msg: impl Into<String>) -> Bad {
        Bad(Some(span.start), msg.into())
    }
}

/// One value being checked, with its full key (`stop.grace`) for messages.
pub struct Val<'a, 'i> {
    pub(crate) key: &'a str,
    pub(crate) value: &'a Spanned<DeValue<'i>>,
}

impl Val<'_, '_> {
    pub(crate) fn bad(&self, what: impl Display) -> Bad {
        Bad::at(self.value.span(), format!("{}: {what}", self.key))
    }
    pub(crate) fn wrong_type(&self, expected: &str, hint: &str) -> Bad {
        let found = a(self.value.get_ref().type_str());
        let msg = format!("{} must be {expected}, found {found}; {hint}", self.key);
        Bad::at(self.value.span(), msg)
    }
    /// A string; `hint` says what to write instead.
    pub(crate) fn string(&self, hint: &str) -> Result<&str, Bad> {
        let text = self.value.get_ref().as_str();
        text.ok_or_else(|| self.wrong_type("a string", hint))
    }
    pub(crate) fn integer(&self, example: &str) -> Result<i64, Bad> {
        let Some(int) = self.value.get_ref().as_integer() else {
            return Err(self.wrong_type("an integer", &format!("write {example}, without quotes")));
        };
        let out_of_range = |_| self.bad(format!("{} is out of range; use {example}", int.as_str()));
        i64::from_str_radix(int.as_str(), int.radix()).map_err(out_of_range)
    }
}

/// Reads, parses and checks one policy file.
pub fn load(path: &Path) -> Result<PolicyFile, Failure> {
    let fail = |msg: String| Failure::msg(ExitStatus::BadPolicy, msg);
    let fix = "check that the policy file exists and is readable";
    let bytes = std::fs::read(path).map_err(|e| fail(format!("{}: {e}; {fix}", path.display())))?;
    std::str::from_utf8(&bytes).map_or_else(
        |e| {
            // Report where the bad bytes begin, on the valid prefix.
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            let msg = "the file is not valid UTF-8; save it as UTF-8 text";
            Err(located(path, valid, Some(e.valid_up_to()), msg))
        },
        |text| parse_str(text, path),
    )
}

/// [`load`] without the file system (for tests and fuzzing): errors name `path`.
pub fn parse_str(text: &str, path: &Path) -> Result<PolicyFile, Failure> {
    parse(text).map_err(|Bad(at, msg)| located(path, text, at, &msg))
}

fn parse(text: &str) -> Result<PolicyFile, Bad> {
    let doc = DeTable::parse(text).map_err(|e| {
        let what = e.message().trim_end();
        Bad(
            e.span().map(|s| s.start),
            format!("invalid TOML: {what}; fix the syntax there"),
        )
    })?;
    let (mut file, mut spans) = (PolicyFile::default(), BTreeMap::new());
    for (name, section) in in_file_order(doc.get_ref()) {
        let (at, sec) = (name.span(), name.get_ref().as_ref());
        let Some((_, keys)) = SECTIONS.iter().find(|(s, _)| *s == sec) else {
            let what = match section.get_ref().is_table() {
                true => format!("unknown section [{sec}]"),
                false => format!("unknown key {sec:?} at top level"),
            };
            let sections: Vec<&str> = SECTIONS.iter().map(|(s, _)| *s).collect();
            let expected = format!("expected one of the sections {}", sections.join(", "));
            return Err(Bad::at(at, format!("{what}; {expected}")));
        };
        let table = match section.get_ref() {
            DeValue::Table(table) => table,
            DeValue::Array(_) => {
                let msg = format!(
                    "{sec} must be a section, found an array; write a [{sec}] section (one pair of brackets)"
                );
                return Err(Bad::at(at, msg));
            }
            other => {
                let found = a(other.type_str());
                let msg = format!(
                    "{sec} must be a section, found {found}; put its keys under a [{sec}] header"
                );
                return Err(Bad::at(at, msg));
            }
        };
        for (name, value) in in_file_order(table) {
            let (at, full) = (name.span(), format!("{sec}.{}", name.get_ref()));
            let Some(key) = key(&full) else {
                let what = format!("unknown key {:?} in [{sec}]", name.get_ref().as_ref());
                return Err(Bad::at(
                    at,
                    format!("{what}; expected one of {}", keys.join(", ")),
                ));
            };
            (key.read)(&mut file.values, &Val { key: &full, value })?;
            file.set.insert(key.full);
            spans.insert(key.full, value.span());
        }
    }
    // Checked once the whole file is read: `backoff_max` may come first.
    let (restart, dur) = (&file.values.restart, |d| quoted(&format_duration(d)));
    if let Some(span) = spans.get("restart.backoff_max")
        && file.set.contains("restart.backoff_initial")
        && restart.backoff_max < restart.backoff_initial
    {
        let (max, initial) = (dur(restart.backoff_max), dur(restart.backoff_initial));
        let what = format!("restart.backoff_max {max} is shorter than restart.backoff_initial");
        let msg = format!("{what} {initial}; make it at least as long");
        return Err(Bad::at(span.clone(), msg));
    }
    Ok(file)
}

/// `<file>:<line>:<col>: <msg>`, status 78.
fn located(path: &Path, text: &str, at: Option<usize>, msg: &str) -> Failure {
    let place = match at.map(|offset| line_col(text, offset)) {
        Some((line, col)) => format!("{}:{line}:{col}", path.display()),
        None => path.display().to_string(),
    };
    Failure::msg(ExitStatus::BadPolicy, format!("{place}: {msg}"))
}

/// 1-based line and character (not byte) column of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (before.matches('\n').count() + 1, col)
}

type Entry<'a, 'i> = (&'a Spanned<Cow<'i, str>>, &'a Spanned<DeValue<'i>>);

/// Table entries in the order they appear in the file.
pub(crate) fn in_file_order<'a, 'i>(table: &'a DeTable<'i>) -> Vec<Entry<'a, 'i>> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// "an integer", "a string".
fn a(type_name: &str) -> String {
    let vowel = type_name.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {type_name}", if vowel { "an" } else { "a" })
}
