//! Reading a policy file: toml parses it into a spanned tree, and serde's derived readers
//! read that through toml's own deserializer, which puts on each complaint the span of
//! the key or value it was reading; `serde_path_to_error` records that key or value's
//! path. [`complaint`] follows the path to it in the tree and writes the one line
//! `file:line:col: key: what; what to do` in the key's words (the schema's `expected` and
//! `hint`): serde's own wording for a value of another type and for an unknown key (its
//! `Error::invalid_type` and `unknown_field`) is recognised and rewritten. Sections are
//! checked first; within them, entries are read in file order (toml's `preserve_order`),
//! so the first problem in the file is the one reported.

use std::path::Path;

use serde_path_to_error::Segment;
use toml::Spanned;
use toml::de::{DeTable, DeValue, Error, ValueDeserializer};

use super::file::File;
use super::{Key, Overrides, PolicyFile, TABLE, apply, quoted, toml_key};
use crate::exit::{ExitStatus, Failure};
use crate::setting::short_duration as format_duration;

/// A complaint: where it is (a byte offset; none for a TOML error without a span), what.
type Bad = (Option<usize>, String);

/// `hooks.on_exit` and `[1]` as `hooks.on_exit[1]`, `run` and `env` as `run.env`.
fn child_path(path: &str, name: &str) -> String {
    match path {
        "" => name.to_string(),
        _ if name.starts_with('[') => format!("{path}{name}"),
        _ => format!("{path}.{name}"),
    }
}

/// toml's complaint `e` about the file `root` as our one line, at the key or value it is
/// about: serde's path leads to the value (the outermost with the complaint's span), and
/// a span before the value's is its key's.
fn complaint(root: &Spanned<DeValue>, e: &serde_path_to_error::Error<Error>) -> Bad {
    let (msg, span) = (e.inner().message(), e.inner().span().unwrap_or(root.span()));
    let (mut table, mut path, mut name, mut value) = (String::new(), String::new(), None, root);
    for segment in e.path() {
        // (Not into an item that begins and ends with it: `[[hooks.on_start]]`'s table.)
        if value.span() == span {
            break;
        }
        let child = match (segment, value.get_ref()) {
            (Segment::Map { key }, DeValue::Table(table)) => table.get(key.as_str()),
            (Segment::Seq { index }, DeValue::Array(items)) => items.get(*index),
            _ => None,
        };
        let Some(child) = child else { break };
        let next = child_path(&path, &segment.to_string());
        (table, path, name, value) = (path, next, Some(segment.to_string()), child);
    }
    let msg = match (msg, name) {
        (m, Some(name)) if m.starts_with("unknown field") => {
            let keys = TABLE.iter().filter(|k| k.section == table).map(|k| k.name);
            let keys = keys.collect::<Vec<_>>().join(", ");
            format!("unknown key {name:?} in [{table}]; expected one of {keys}")
        }
        // A rule on a key (`[run.env]`'s names, `[restart.exit]`'s codes).
        (m, _) if span.start < value.span().start => format!("{table}: {m}"),
        (m, _) if m.starts_with("invalid type: ") => {
            let expected = m.rsplit_once(", expected ").map_or("", |(_, e)| e);
            wrong_type(&path, expected, value.get_ref())
        }
        ("integer number overflowed", _) => {
            format!("{path}: the number is out of range; {}", hint(&path))
        }
        (m, _) => format!("{path}: {m}"),
    };
    (Some(span.start), msg)
}
/// The key `path` is at or in (`run.env` for `run.env.A`), and the entry or item in it
/// (`A`, `[1]`): a key is `section.name`, neither with a dot or a bracket.
fn key_of(path: &str) -> (Option<&'static Key>, Option<&str>) {
    let name = path.find('.').map_or(path.len(), |dot| dot + 1);
    let end = path[name..]
        .find(['.', '['])
        .map_or(path.len(), |end| name + end);
    let item = path[end..].trim_start_matches('.');
    (super::key(&path[..end]), (!item.is_empty()).then_some(item))
}
/// What to write at `path`, in its key's words.
fn hint(path: &str) -> String {
    let (key, item) = key_of(path);
    key.map_or(String::new(), |k| (k.hint)(item))
}
/// `KEY must be EXPECTED, found a TYPE; HINT`: the key's own words for its value; for an
/// entry or item, serde's (`expected`) with the key's hint.
fn wrong_type(path: &str, expected: &str, value: &DeValue) -> String {
    let expected = match key_of(path) {
        (Some(key), None) => key.expected,
        _ => expected,
    };
    let found = a(value);
    format!("{path} must be {expected}, found {found}; {}", hint(path))
}

/// The sections of the file, in file order: each must be one of the schema's, and a
/// table; and no key in them takes a date (toml would hand one to a table's reader as a
/// table). A problem comes with where its section begins (`[[x]]` before its key).
fn sections(root: &Spanned<DeValue>) -> Result<(), (usize, Bad)> {
    let mut names: Vec<&str> = TABLE.iter().map(|k| k.section).collect();
    names.dedup();
    let list = names.join(", ");
    for (name, value) in root.get_ref().as_table().into_iter().flatten() {
        let from = name.span().start.min(value.span().start);
        let (at, value, name) = (name.span().start, value.get_ref(), &**name.get_ref());
        let msg = match value {
            DeValue::Table(_) if !names.contains(&name) => {
                format!("unknown section [{name}]; expected one of the sections {list}")
            }
            _ if !names.contains(&name) => {
                format!("unknown key {name:?} at top level; expected one of the sections {list}")
            }
            DeValue::Table(keys) => match keys.iter().find(|(_, v)| v.get_ref().is_datetime()) {
                None => continue,
                Some((key, v)) => {
                    let msg = wrong_type(&child_path(name, key.get_ref()), "", v.get_ref());
                    return Err((v.span().start, (Some(v.span().start), msg)));
                }
            },
            DeValue::Array(_) => format!(
                "{name} must be a section, found an array; write a [{name}] section (one pair of brackets)"
            ),
            other => format!(
                "{name} must be a section, found {}; put its keys under a [{name}] header",
                a(other)
            ),
        };
        return Err((from, (Some(at), msg)));
    }
    Ok(())
}

/// Reads, parses and checks one policy file.
pub(crate) fn load(path: &Path) -> Result<PolicyFile, Failure> {
    let fix = "check that the policy file exists and is readable";
    let bytes = std::fs::read(path).map_err(|e| located(path, "", None, &format!("{e}; {fix}")))?;
    parse(&bytes, path)
}

/// [`load`] without the file system (for tests and fuzzing): errors name `path`.
pub fn parse(bytes: &[u8], path: &Path) -> Result<PolicyFile, Failure> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        // Where the bad bytes begin, on the valid prefix.
        let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
        let msg = "the file is not valid UTF-8; save it as UTF-8 text";
        located(path, valid, Some(e.valid_up_to()), msg)
    })?;
    let mut file = PolicyFile::default();
    read(text, &mut file).map_err(|(at, msg)| located(path, text, at, &msg))?;
    Ok(file)
}
/// Reads policy file `text` over `to`: its values, and the keys it sets.
fn read(text: &str, to: &mut PolicyFile) -> Result<(), Bad> {
    let doc = DeTable::parse(text).map_err(|e| {
        let what = e.message().trim_end();
        let msg = format!("invalid TOML: {what}; fix the syntax there");
        (e.span().map(|s| s.start), msg)
    })?;
    let (span, table) = (doc.span(), doc.into_inner());
    let root = Spanned::new(span, DeValue::Table(table));
    let file = serde_path_to_error::deserialize::<_, File>(ValueDeserializer::from(root.clone()));
    // The first problem in the file: in its sections' shape, or in what serde reads.
    match (sections(&root), file.map_err(|e| complaint(&root, &e))) {
        (Err((from, _)), Err(read)) if read.0 < Some(from) => return Err(read),
        (Err((_, bad)), _) | (_, Err(bad)) => return Err(bad),
        (Ok(()), Ok(file)) => apply(file, to),
    }
    // Checked once the whole file is read: `backoff_max` may come first.
    let restart = &to.values.restart;
    let key = |name: &str| root.get_ref().get("restart")?.get_ref().get(name);
    if let (Some(at), Some(_)) = (key("backoff_max"), key("backoff_initial"))
        && restart.backoff_max < restart.backoff_initial
    {
        let dur = |d| quoted(&format_duration(d));
        let (max, initial) = (dur(restart.backoff_max), dur(restart.backoff_initial));
        let what = format!("restart.backoff_max {max} is shorter than restart.backoff_initial");
        let msg = format!("{what} {initial}; make it at least as long");
        return Err((Some(at.span().start), msg));
    }
    Ok(())
}
impl Overrides {
    /// Sets flag `name`'s (`stop_grace`) key from `text`, read by [`read`] as a file that
    /// sets only that key: a whole number as an integer, anything else as a string. A
    /// table key's flag (`--restart-exit 75=30m`) adds one entry, read as `{ 75 = "30m" }`.
    /// `Err` says why the value is not valid.
    pub(crate) fn set(&mut self, name: &str, text: &str) -> Result<(), String> {
        let key = TABLE
            .iter()
            .find(|k| k.flag == Some(name))
            .ok_or("no such flag")?;
        // (Past i64, TOML's range, too: the key's own rule then says it is out of range.)
        let value = |text: &str| match text.trim().parse::<i128>() {
            Ok(number) => number.to_string(),
            Err(_) => quoted(text),
        };
        let text = match key.entry {
            None => value(text),
            Some(entry) => match text.split_once('=') {
                Some((name, v)) => format!("{{ {} = {} }}", toml_key(name.trim()), value(v)),
                None => return Err(format!("{text:?} is not {entry}; write it like 75=30m")),
            },
        };
        let doc = format!("[{}]\n{} = {text}", key.section, key.name);
        read(&doc, &mut self.0).map_err(|(_, msg)| msg)
    }
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
    let within = |(i, c): &(usize, char)| i + c.len_utf8() <= offset;
    let before = text.char_indices().take_while(within);
    before.fold((1, 1), |(line, col), (_, c)| match c {
        '\n' => (line + 1, 1),
        _ => (line, col + 1),
    })
}
/// "an integer", "a string"; "an array of tables" for `[[hooks.on_start]]`, not "an
/// array", which an array of strings also is.
fn a(value: &DeValue) -> String {
    let table = |item: &Spanned<DeValue>| item.get_ref().is_table();
    let type_name = match value {
        DeValue::Array(items) if !items.is_empty() && items.iter().all(table) => "array of tables",
        _ => value.type_str(),
    };
    let vowel = type_name.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {type_name}", if vowel { "an" } else { "a" })
}
