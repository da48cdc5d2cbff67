//! Reading a policy file: TOML's spanned tree handed to serde's derived readers through
//! [`De`], a `Deserializer` whose error ([`Bad`]) is ours. `De` knows the key it reads
//! (`stop.grace`) and where its value is, so every complaint comes out as
//! `file:line:col: key: what; what to do`; entries are visited in file order, so the
//! first problem in the file is the one reported.

use std::fmt::{self, Display};
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::file::File;
use super::show::{quoted, toml_key};
use super::{Key, Policy, PolicyFile};
use crate::exit::{ExitStatus, Failure};
use crate::present::short_duration as format_duration;

/// A complaint about the policy text. serde's derived code raises the last three; the
/// [`De`] or the table entry that sees one puts the key and the place to it.
#[derive(Debug)]
pub(crate) enum Bad {
    /// Final: the message, at a byte offset (none for a TOML error without a span).
    At(Option<usize>, String),
    /// A value's rule broken (`custom`): "what; what to do".
    Rule(String),
    /// A value of another type (`invalid_type`): what was expected.
    Type(String),
    /// A key no section (or no section of the file) has: the keys there are.
    Unknown(String),
}
impl de::Error for Bad {
    fn custom<T: Display>(msg: T) -> Bad {
        Bad::Rule(msg.to_string())
    }
    fn invalid_type(_: de::Unexpected, expected: &dyn de::Expected) -> Bad {
        Bad::Type(expected.to_string())
    }
    fn unknown_field(_: &str, expected: &'static [&'static str]) -> Bad {
        Bad::Unknown(expected.join(", "))
    }
    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Bad {
        let list = expected.join(", ");
        Bad::Rule(format!("{variant:?} is not valid; expected one of {list}"))
    }
}
impl Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Bad::At(_, m) | Bad::Rule(m) | Bad::Type(m) | Bad::Unknown(m) => f.write_str(m),
        }
    }
}
impl std::error::Error for Bad {}

/// One TOML value being read: its path (`stop.grace`, `run.env.A`, `hooks.on_exit[1]`)
/// and the key it belongs to (none for the file or a whole section).
#[derive(Clone)]
pub(crate) struct De<'a, 'i> {
    path: String,
    key: Option<&'static Key>,
    value: &'a Spanned<DeValue<'i>>,
}
impl<'a, 'i> De<'a, 'i> {
    fn new(path: String, key: Option<&'static Key>, value: &'a Spanned<DeValue<'i>>) -> Self {
        let key = key.or_else(|| super::key(&path));
        De { path, key, value }
    }
    /// Reads the value with `read`, then puts the path and the place to its complaint
    /// (a `try_from`'s comes after the value was read, so it is put here).
    fn read<T>(self, read: impl FnOnce(Self) -> Result<T, Bad>) -> Result<T, Bad> {
        let (at, path, key, value) = (
            self.value.span().start,
            self.path.clone(),
            self.key,
            self.value,
        );
        let msg = match read(self) {
            Err(Bad::Rule(what)) => format!("{path}: {what}"),
            Err(Bad::Type(expected)) => {
                // The key's own words for its value; for an entry or item, serde's, with
                // the key's hint (which may name the entry).
                let item = key.and_then(|k| path.strip_prefix(k.full));
                let item = item.map(|rest| rest.trim_start_matches('.'));
                let item = item.filter(|rest| !rest.is_empty());
                let expected = match key {
                    Some(key) if item.is_none() => key.expected,
                    _ => &expected,
                };
                let hint = key.map_or(String::new(), |k| (k.hint)(item));
                let found = a(value.get_ref().type_str());
                format!("{path} must be {expected}, found {found}; {hint}")
            }
            done => return done,
        };
        Err(Bad::At(Some(at), msg))
    }
}

impl<'de, 'a, 'i> de::Deserializer<'de> for De<'a, 'i> {
    type Error = Bad;
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bad> {
        let value: &Spanned<DeValue> = self.value;
        let (items, map): (Vec<_>, bool) = match value.get_ref() {
            DeValue::String(text) => return v.visit_str(text),
            // Past i64 (TOML's range) as i128, so that a kind's own rule names the number.
            DeValue::Integer(int) => match i128::from_str_radix(int.as_str(), int.radix()) {
                Ok(int) => match i64::try_from(int) {
                    Ok(int) => return v.visit_i64(int),
                    Err(_) => return v.visit_i128(int),
                },
                Err(_) => {
                    let hint = self.key.map_or(String::new(), |k| (k.hint)(None));
                    return Err(Bad::Rule(format!(
                        "{} is out of range; {hint}",
                        int.as_str()
                    )));
                }
            },
            DeValue::Float(float) => {
                return v.visit_f64(float.as_str().parse().unwrap_or(f64::NAN));
            }
            DeValue::Boolean(b) => return v.visit_bool(*b),
            DeValue::Datetime(_) => {
                return Err(de::Error::invalid_type(de::Unexpected::Other(""), &v));
            }
            DeValue::Array(items) => {
                let item = |(i, item): (usize, &'a Spanned<DeValue<'i>>)| {
                    (format!("[{i}]"), item.span().start, item)
                };
                (items.iter().enumerate().map(item).collect(), false)
            }
            DeValue::Table(table) => {
                let entry = |(k, item): (&Spanned<std::borrow::Cow<str>>, _)| {
                    (k.get_ref().to_string(), k.span().start, item)
                };
                let mut items: Vec<_> = table.iter().map(entry).collect();
                items.sort_by_key(|(_, at, _)| *at); // file order
                (items, true)
            }
        };
        let entries = Entries {
            de: &self,
            items: items.into_iter(),
            value: None,
        };
        match map {
            true => v.visit_map(entries),
            false => v.visit_seq(entries),
        }
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bad> {
        v.visit_some(self)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Bad> {
        match self.value.get_ref() {
            DeValue::String(text) => {
                v.visit_enum(IntoDeserializer::<Bad>::into_deserializer(&**text))
            }
            _ => self.deserialize_any(v),
        }
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// A table's entries in file order, or an array's items: each its name (`grace`,
/// `[1]`), where its key begins, its value. A bad key is reported at the key.
struct Entries<'a, 'b, 'i> {
    de: &'a De<'b, 'i>,
    items: std::vec::IntoIter<(String, usize, &'b Spanned<DeValue<'i>>)>,
    value: Option<(String, usize, &'b Spanned<DeValue<'i>>)>,
}
impl<'b, 'i> Entries<'_, 'b, 'i> {
    fn child(&self, name: &str, value: &'b Spanned<DeValue<'i>>) -> De<'b, 'i> {
        let path = match self.de.path.as_str() {
            "" => name.to_string(),
            path if name.starts_with('[') => format!("{path}{name}"),
            path => format!("{path}.{name}"),
        };
        De::new(path, self.de.key, value)
    }
}
impl<'de> MapAccess<'de> for Entries<'_, '_, '_> {
    type Error = Bad;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Bad> {
        let Some((name, at, value)) = self.items.next() else {
            return Ok(None);
        };
        let (key, path) = (
            seed.deserialize(name.as_str().into_deserializer()),
            &self.de.path,
        );
        let msg = match key {
            Ok(key) => {
                self.value = Some((name, at, value));
                return Ok(Some(key));
            }
            Err(Bad::Unknown(keys)) if path.is_empty() => match value.get_ref().is_table() {
                true => format!("unknown section [{name}]; expected one of the sections {keys}"),
                false => format!(
                    "unknown key {name:?} at top level; expected one of the sections {keys}"
                ),
            },
            Err(Bad::Unknown(keys)) => {
                format!("unknown key {name:?} in [{path}]; expected one of {keys}")
            }
            Err(Bad::Rule(what)) => format!("{path}: {what}"),
            Err(other) => return Err(other),
        };
        Err(Bad::At(Some(at), msg))
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Bad> {
        let (sec, at, value) = self.value.take().ok_or(Bad::Rule("no value".into()))?;
        if self.de.path.is_empty() && !value.get_ref().is_table() {
            let (found, fix) = match value.get_ref() {
                DeValue::Array(_) => (
                    "an array".into(),
                    "write a [_] section (one pair of brackets)",
                ),
                other => (a(other.type_str()), "put its keys under a [_] header"),
            };
            let msg = format!(
                "{sec} must be a section, found {found}; {}",
                fix.replace('_', &sec)
            );
            return Err(Bad::At(Some(at), msg));
        }
        self.child(&sec, value).read(|de| seed.deserialize(de))
    }
}
impl<'de> SeqAccess<'de> for Entries<'_, '_, '_> {
    type Error = Bad;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Bad> {
        let Some((name, _, value)) = self.items.next() else {
            return Ok(None);
        };
        self.child(&name, value)
            .read(|de| seed.deserialize(de))
            .map(Some)
    }
}

/// Reads, parses and checks one policy file.
pub(crate) fn load(path: &Path) -> Result<PolicyFile, Failure> {
    let fail = |msg: String| Failure::msg(ExitStatus::BadPolicy, msg);
    let fix = "check that the policy file exists and is readable";
    let bytes = std::fs::read(path).map_err(|e| fail(format!("{}: {e}; {fix}", path.display())))?;
    match std::str::from_utf8(&bytes) {
        Ok(text) => parse_str(text, path),
        Err(e) => {
            // Report where the bad bytes begin, on the valid prefix.
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            let msg = "the file is not valid UTF-8; save it as UTF-8 text";
            Err(located(path, valid, Some(e.valid_up_to()), msg))
        }
    }
}

/// [`load`] without the file system (for tests and fuzzing): errors name `path`.
pub fn parse_str(text: &str, path: &Path) -> Result<PolicyFile, Failure> {
    parse(text).map_err(|bad| match bad {
        Bad::At(at, msg) => located(path, text, at, &msg),
        other => located(path, text, None, &other.to_string()),
    })
}
fn parse(text: &str) -> Result<PolicyFile, Bad> {
    let doc = DeTable::parse(text).map_err(|e| {
        let what = e.message().trim_end();
        let msg = format!("invalid TOML: {what}; fix the syntax there");
        Bad::At(e.span().map(|s| s.start), msg)
    })?;
    let (span, table) = (doc.span(), doc.into_inner());
    let root = Spanned::new(span, DeValue::Table(table));
    let file = De::new(String::new(), None, &root).read(File::deserialize)?;
    let file = PolicyFile::from(file);
    // Checked once the whole file is read: `backoff_max` may come first.
    let (restart, dur) = (&file.values.restart, |d| quoted(&format_duration(d)));
    let set = |key| file.set.contains(key);
    if set("restart.backoff_max")
        && set("restart.backoff_initial")
        && restart.backoff_max < restart.backoff_initial
    {
        let section = root
            .get_ref()
            .as_table()
            .and_then(|root| root.get("restart"));
        let at =
            section.and_then(|r| Some(r.get_ref().as_table()?.get("backoff_max")?.span().start));
        let (max, initial) = (dur(restart.backoff_max), dur(restart.backoff_initial));
        let what = format!("restart.backoff_max {max} is shorter than restart.backoff_initial");
        return Err(Bad::At(
            at,
            format!("{what} {initial}; make it at least as long"),
        ));
    }
    Ok(file)
}
/// Sets `key` from a command-line flag's text, read as the file's value would be: a
/// whole number as an integer, anything else as a string.
/// A table key's flag (`--restart-exit 75=30m`) gives one entry, read as `{ 75 = "30m" }`.
pub(crate) fn read_text(key: &'static Key, policy: &mut Policy, text: &str) -> Result<(), String> {
    let value = |text: &str| match text.trim().parse::<i64>() {
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
    let doc = format!("v = {text}");
    let doc = DeTable::parse(&doc).map_err(|e| e.message().to_string())?;
    let value = doc.get_ref().get("v").ok_or("no value")?;
    let de = De::new(key.full.to_string(), Some(key), value);
    de.read(|de| (key.read)(policy, de))
        .map_err(|bad| bad.to_string())
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
/// "an integer", "a string".
fn a(type_name: &str) -> String {
    let vowel = type_name.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {type_name}", if vowel { "an" } else { "a" })
}
