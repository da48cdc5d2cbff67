//! Reading a policy file: TOML's spanned tree, walked in file order against the key
//! table, so the first problem in the file is the one reported, as `file:line:col`; and
//! the kinds of value a key holds, each read and checked (a message and a hint for each
//! mistake) and shown as TOML. Kinds with rules of their own are marker types
//! ([`Signal`], [`BranchPrefix`], ...) whose [`Kind::Out`] is the plain value.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::show::{quoted, toml_key};
use super::{Key, Policy, PolicyFile, SECTIONS, key};
use crate::exit::{ExitStatus, Failure};
use crate::present::short_duration as format_duration;
use crate::supervisor::machine::ExitRule;

/// A complaint about the policy text, at a byte offset.
#[derive(Debug)]
pub(crate) struct Bad(Option<usize>, String);
impl Bad {
    pub(crate) fn at(span: Range<usize>, msg: impl Into<String>) -> Bad {
        Bad(Some(span.start), msg.into())
    }
}

/// One value being checked, with its full key (`stop.grace`) for messages.
pub(crate) struct Val<'a, 'i> {
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
    parse(text).map_err(|Bad(at, msg)| located(path, text, at, &msg))
}
fn parse(text: &str) -> Result<PolicyFile, Bad> {
    let doc = DeTable::parse(text).map_err(|e| {
        let what = e.message().trim_end();
        let msg = format!("invalid TOML: {what}; fix the syntax there");
        Bad(e.span().map(|s| s.start), msg)
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
            other => {
                let (found, fix) = match other {
                    DeValue::Array(_) => (
                        "an array".into(),
                        "write a [_] section (one pair of brackets)",
                    ),
                    _ => (a(other.type_str()), "put its keys under a [_] header"),
                };
                let fix = fix.replace('_', sec);
                let msg = format!("{sec} must be a section, found {found}; {fix}");
                return Err(Bad::at(at, msg));
            }
        };
        for (name, value) in in_file_order(table) {
            let (at, full) = (name.span(), format!("{sec}.{}", name.get_ref()));
            let Some(key) = key(&full) else {
                let (name, keys) = (name.get_ref().as_ref(), keys.join(", "));
                let msg = format!("unknown key {name:?} in [{sec}]; expected one of {keys}");
                return Err(Bad::at(at, msg));
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
/// Sets `key` from a command-line flag's text, read as the file's value would be: a
/// whole number as an integer, anything else as a string.
/// A table key's flag (`--restart-exit 75=30m`) gives one entry, read as `{ 75 = "30m" }`.
pub(crate) fn read_text(key: &Key, policy: &mut Policy, text: &str) -> Result<(), String> {
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
    let v = Val {
        key: key.full,
        value,
    };
    (key.read)(policy, &v).map_err(|Bad(_, msg)| msg)
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
pub(crate) fn in_file_order<'a, 'i>(table: &'a DeTable<'i>) -> Vec<Entry<'a, 'i>> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}
/// A TOML array of strings: `["a", "b"]`.
fn strings(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[{}]", items.join(", "))
}
/// An inline TOML table, `{ a = 1, b = 2 }`, of keys and values already written as TOML.
fn inline_table(pairs: impl Iterator<Item = (String, String)>) -> String {
    let pairs: Vec<String> = pairs
        .map(|(k, v)| format!("{} = {v}", toml_key(&k)))
        .collect();
    if pairs.is_empty() {
        "{}".into()
    } else {
        format!("{{ {} }}", pairs.join(", "))
    }
}
type Item<'a, 'i> = (Range<usize>, &'a str, &'a Spanned<DeValue<'i>>);
/// A table's entries in file order: each key's span and name, and its value.
fn entries<'a, 'i>(v: &Val<'a, 'i>, lines: &str) -> Result<Vec<Item<'a, 'i>>, Bad> {
    let DeValue::Table(table) = v.value.get_ref() else {
        let hint = format!("write a [{}] section with {lines}", v.key);
        return Err(v.wrong_type("a table", &hint));
    };
    let entry = |(k, value): Entry<'a, 'i>| (k.span(), k.get_ref().as_ref(), value);
    Ok(in_file_order(table).into_iter().map(entry).collect())
}
/// An array of strings, each checked by `check(index, text)`, which says why not.
fn string_array(
    v: &Val,
    hint: &str,
    check: impl Fn(usize, &str) -> Result<(), String>,
) -> Result<Vec<String>, Bad> {
    let DeValue::Array(items) = v.value.get_ref() else {
        return Err(v.wrong_type("an array of strings", hint));
    };
    let read = |(i, value)| {
        let item = Val {
            key: &format!("{}[{i}]", v.key),
            value,
        };
        let text = item.string(hint)?;
        check(i, text).map_err(|why| item.bad(why))?;
        Ok(text.to_string())
    };
    items.iter().enumerate().map(read).collect()
}
/// "an integer", "a string".
fn a(type_name: &str) -> String {
    let vowel = type_name.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {type_name}", if vowel { "an" } else { "a" })
}

/// How a key's value is read, checked and shown. `DOC` names the type in the man page;
/// `VALUES` lists a keyword's spellings and meanings; `show` is `None` when unset.
pub(crate) trait Kind {
    type Out: Clone;
    const DOC: &'static str;
    const VALUES: &'static [(&'static str, &'static str)] = &[];
    /// A table whose flag takes one entry per use, written like this (`CODE=ACTION`);
    /// each use adds its entry over the file's.
    const ENTRY: Option<&'static str> = None;
    fn read(v: &Val) -> Result<Self::Out, Bad>;
    fn show(value: &Self::Out) -> Option<String>;
    /// Puts a value read over the one there: replaces it (a table of entries adds them).
    fn merge(into: &mut Self::Out, value: Self::Out) {
        *into = value;
    }
}

/// A closed set of keywords (declared with `keywords!`): every value, in documentation
/// order, with its spelling and meaning.
pub(crate) trait Keyword: Copy + PartialEq + Send + Sync + 'static {
    const ALL: &'static [Self];
    const VALUES: &'static [(&'static str, &'static str)];
    fn as_str(self) -> &'static str {
        Self::VALUES[Self::ALL.iter().position(|v| *v == self).unwrap_or(0)].0
    }
    fn parse(text: &str) -> Result<Self, String> {
        let found = Self::ALL.iter().copied().find(|v| v.as_str() == text);
        found.ok_or_else(|| format!("{text:?} is not valid; expected one of {}", Self::list()))
    }
    fn list() -> String {
        let names: Vec<&str> = Self::VALUES.iter().map(|(name, _)| *name).collect();
        names.join(", ")
    }
}
impl<K: Keyword> Kind for K {
    type Out = K;
    const DOC: &'static str = "string";
    const VALUES: &'static [(&'static str, &'static str)] = K::VALUES;
    fn read(v: &Val) -> Result<K, Bad> {
        let hint = format!("write one of {}, in quotes", K::list());
        K::parse(v.string(&hint)?).map_err(|e| v.bad(e))
    }
    fn show(value: &K) -> Option<String> {
        Some(quoted(value.as_str()))
    }
}
impl<K: Kind> Kind for Option<K> {
    type Out = Option<K::Out>;
    const DOC: &'static str = K::DOC;
    const VALUES: &'static [(&'static str, &'static str)] = K::VALUES;
    fn read(v: &Val) -> Result<Self::Out, Bad> {
        K::read(v).map(Some)
    }
    fn show(value: &Self::Out) -> Option<String> {
        value.as_ref().and_then(K::show)
    }
}
/// `Type => Out, "man page type", |v| { read } |x| shown;`
macro_rules! kinds {
    ($($ty:ty => $out:ty, $doc:literal, |$v:ident| $read:block |$x:ident| $show:expr;)+) => {$(
        impl Kind for $ty {
            type Out = $out; const DOC: &'static str = $doc;
            fn read($v: &Val) -> Result<$out, Bad> $read
            fn show($x: &$out) -> Option<String> { Some($show) }
        }
    )+};
}
const EXIT_ACTION: &str = "write \"stop\", \"restart\" or a delay like \"30m\"";
const EXIT_STATUS: &str =
    "use an exit code from 0 to 255 (128+N for death by signal N, 124 for a stall)";

/// `[restart.exit]`: `CODE = "stop" | "restart" | "<delay>"`, CODE from 0 to 255.
impl Kind for ExitActions {
    type Out = BTreeMap<u8, ExitRule>;
    const DOC: &'static str = "table of exit actions";
    const ENTRY: Option<&'static str> = Some("CODE=ACTION");
    fn read(v: &Val) -> Result<Self::Out, Bad> {
        let mut actions = BTreeMap::new();
        for (span, name, value) in entries(v, "lines like 75 = \"30m\"")? {
            let digits = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
            let code = match name.parse::<u32>().ok().filter(|_| digits) {
                Some(code) => u8::try_from(code).map_err(|_| format!("{code} is out of range")),
                None if digits => Err(format!("{name} is out of range")),
                None => Err(format!("{name:?} is not an exit code")),
            };
            let what = |what: String| format!("{}: {what}", v.key);
            let code =
                code.map_err(|e| Bad::at(span.clone(), what(format!("{e}; {EXIT_STATUS}"))))?;
            if actions.contains_key(&code) {
                let twice = format!("exit code {code} is given twice; keep one");
                return Err(Bad::at(span, what(twice)));
            }
            let full = format!("{}.{code}", v.key);
            let v = Val { key: &full, value };
            let text = v.string(EXIT_ACTION)?;
            let not = |_| v.bad(format!("{text:?} is not an action; {EXIT_ACTION}"));
            actions.insert(code, text.trim().parse().map_err(not)?);
        }
        Ok(actions)
    }
    fn show(actions: &Self::Out) -> Option<String> {
        // None: not set, every exit status follows `restart.policy`.
        let pair = |(code, rule): (&u8, &ExitRule)| (code.to_string(), quoted(&rule.to_string()));
        let pairs = actions.iter().map(pair);
        (!actions.is_empty()).then(|| inline_table(pairs))
    }
    fn merge(into: &mut Self::Out, value: Self::Out) {
        into.extend(value);
    }
}

/// The variables ralph-supervise sets or removes for the command itself, after `[run.env]`
/// (`run.rs`, `supervisor::spawn`): a value for them there would be silently lost.
const OWN_ENV: [&str; 7] = [
    "RALPH_LOCK_FD",
    "RALPH_WORKSPACE_ROOT",
    "RALPH_LOOP_INDEX",
    "RALPH_FENCING_TOKEN",
    "RALPH_SUPERVISE_ETCD_USER",
    "RALPH_SUPERVISE_ETCD_PASSWORD",
    "NOTIFY_SOCKET",
];

/// Kinds with rules of their own (an exit code, 1 to 255; a non-empty directory; a git
/// branch prefix; a signal name or number; environment variables; ...): see `kinds!`.
pub(crate) struct ExitCode;
pub(crate) struct Restarts;
pub(crate) struct Dir;
pub(crate) struct BranchPrefix;
pub(crate) struct Signal;
pub(crate) struct Env;
pub(crate) struct ExitActions;
pub(crate) struct Argv;
pub(crate) struct Globs;
pub(crate) struct NonZeroDuration;
const DURATION: &str = "write a duration like \"30s\", \"5m\" or \"1h30m\"";
const EXIT_CODE: &str = "an exit code from 1 to 255 (default 75)";
const SIGNAL: &str = "use a name like \"TERM\" or \"SIGTERM\", or a number like 15";

kinds! {
    Duration => Duration, "duration", |v| {
        let text = v.value.get_ref().as_str().ok_or_else(|| v.wrong_type("a duration string", DURATION))?;
        humantime::parse_duration(text.trim()).map_err(|e| {
            let why = e.to_string(); // without the unit table humantime appends: the hint suffices
            let why = why.split(", supported units").next().unwrap_or_default();
            v.bad(format!("{text:?} is not a duration ({why}); {DURATION}"))
        })
    } |d| quoted(&format_duration(*d));
    NonZeroDuration => Duration, "duration, more than 0", |v| {
        let d = <Duration as Kind>::read(v)?;
        if d.is_zero() {
            let text = v.value.get_ref().as_str().unwrap_or_default();
            return Err(v.bad(format!("{text:?} is zero; {DURATION}, or leave the key out")));
        }
        Ok(d)
    } |d| quoted(&format_duration(*d));
    bool => bool, "boolean", |v| {
        let hint = "write true or false, without quotes";
        v.value.get_ref().as_bool().ok_or_else(|| v.wrong_type("true or false", hint))
    } |b| b.to_string();
    ExitCode => u8, "integer, 1 to 255", |v| {
        let code = v.integer(EXIT_CODE)?;
        let out_of_range = || v.bad(format!("{code} is out of range; use {EXIT_CODE}"));
        u8::try_from(code).ok().filter(|c| *c != 0).ok_or_else(out_of_range)
    } |code| code.to_string();
    Restarts => u32, "integer, 0 or more", |v| {
        let max = v.integer("a number of restarts (0 or more)")?;
        let use_ = format!("use 0 to {}, or leave the key out for no limit", u32::MAX);
        u32::try_from(max).map_err(|_| v.bad(format!("{max} is out of range; {use_}")))
    } |max| max.to_string();
    Dir => PathBuf, "string", |v| {
        match v.string("write a directory in quotes, like \".worktrees\"")? {
            "" => Err(v.bad("the directory is empty; use a directory like \".worktrees\"")),
            dir => Ok(PathBuf::from(dir)),
        }
    } |dir| quoted(&dir.to_string_lossy());
    BranchPrefix => String, "string", |v| {
        let prefix = v.string("write a prefix in quotes, like \"ralph/\"")?;
        match crate::worktree::id::branch_prefix_problem(prefix) {
            None => Ok(prefix.to_string()),
            Some(why) => Err(v.bad(format!("{prefix:?} is not a usable branch prefix ({why}); use a prefix like \"ralph/\""))),
        }
    } |prefix| quoted(prefix);
    Signal => i32, "string or integer", |v| {
        let text = match v.value.get_ref() {
            DeValue::String(s) => s.to_string(),
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).map_or(i.as_str().into(), |n| n.to_string()),
            _ => return Err(v.wrong_type("a signal name or number", SIGNAL)),
        };
        match crate::signals::parse(&text) {
            Ok(signal) => Ok(signal as i32),
            Err(_) if v.value.get_ref().is_integer() => Err(v.bad(format!("{text} is not a signal number; {SIGNAL}"))),
            Err(_) => Err(v.bad(format!("{text:?} is not a signal; {SIGNAL}"))),
        }
    } |signal| quoted(&crate::signals::name(*signal));
    Env => BTreeMap<String, String>, "table of strings", |v| {
        let mut env = BTreeMap::new();
        for (span, name, value) in entries(v, "lines like NAME = \"value\"")? {
            if name.is_empty() || name.contains(['=', '\0']) {
                let use_ = "use a name without = or NUL, like RUST_LOG";
                let msg = format!("run.env: {name:?} is not a usable variable name; {use_}");
                return Err(Bad::at(span, msg));
            }
            if OWN_ENV.contains(&name) {
                let msg = format!("run.env: {name} is ralph-supervise's to set (or remove) for every run, over [run.env]; remove it");
                return Err(Bad::at(span, msg));
            }
            let (full, example) = (format!("run.env.{name}"), toml_key(name));
            let v = Val { key: &full, value };
            let text = v.string(&format!("write the value in quotes, like {example} = \"1\""))?;
            if text.contains('\0') {
                return Err(v.bad("the value contains a NUL character; remove it"));
            }
            env.insert(name.to_string(), text.to_string());
        }
        Ok(env)
    } |env| inline_table(env.iter().map(|(k, v)| (k.clone(), quoted(v))));
    Argv => Vec<String>, "array of strings", |v| {
        let hint = "write the program and its arguments as an array, like [\"make\", \"up\"]";
        if v.value.get_ref().as_array().is_some_and(|a| a.is_empty()) {
            return Err(v.bad(format!("the array is empty; {hint}, or leave the key out")));
        }
        string_array(v, hint, |i, text| match text {
            _ if text.contains('\0') => Err("it contains a NUL character; remove it".into()),
            "" if i == 0 => Err("the program name is empty; name a program, like \"make\"".into()),
            _ => Ok(()),
        })
    } |argv| strings(argv);
    Globs => Vec<String>, "array of strings", |v| {
        let hint = "write an array of globs relative to the repository, like [\".env\", \"config/*.local.toml\"]";
        string_array(v, hint, |_, text| crate::worktree::copy::check_glob(text)
            .map_err(|why| format!("{text:?} is not a usable glob ({why}); {hint}")))
    } |globs| strings(globs);
}
