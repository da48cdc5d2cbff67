//! The kinds of value a key holds: each a newtype serde reads as a plain value (a
//! string, an integer, an array, a table) and then checks, with a message and a hint for
//! each mistake; and its [`Kind`]: what the man page calls it, what a value of the wrong
//! type is told, and how it is shown as TOML. A rule that belongs to a domain is that
//! room's own (`crate::limits`, `crate::fleet_settings`, `crate::signals`, `crate::hooks`,
//! `crate::worktree::copy`, `crate::worktree::id`, `crate::supervisor::machine`,
//! `crate::child_env`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserialize, DeserializeOwned, Deserializer};

use crate::child_env::{EnvName, EnvValue};
use crate::fleet_settings::{self as fleet, ENDPOINT};
use crate::hooks::{self, Words};
use crate::limits::{CPU, Cpu, MEMORY, Memory, PIDS, Pids};
use crate::setting::short_duration as format_duration;
use crate::setting::{DURATION, duration};
pub(crate) use crate::setting::{Keyword, Text};
use crate::signals::{self, SIGNAL};
use crate::supervisor::machine::{EXIT_ACTION, ExitActions, ExitRule};
use crate::worktree::check_dir;
use crate::worktree::copy::{GLOBS, Glob};
use crate::worktree::id::branch_prefix;

/// How a key's value is read, checked and shown: what its [`Key`](super::Key) row holds
/// (`DOC` is its `kind`; `HINT` is for the value, or for one entry or item of it).
pub(crate) trait Kind: DeserializeOwned {
    type Out: Clone;
    const DOC: &'static str;
    const EXPECTED: &'static str;
    const VALUES: &'static [(&'static str, &'static str)] = &[];
    /// A table whose flag takes one entry per use, written like this (`CODE=ACTION`);
    /// each use adds its entry over the file's.
    const ENTRY: Option<&'static str> = None;
    const HINT: fn(Option<&str>) -> String;
    fn out(self) -> Self::Out;
    fn show(value: &Self::Out) -> Option<String>;
    /// Puts a value read over the one there: replaces it (a table of entries adds them).
    fn merge(into: &mut Self::Out, value: Self::Out) {
        *into = value;
    }
}

impl<K: Keyword + DeserializeOwned> Kind for K {
    type Out = K;
    const DOC: &'static str = "string";
    const EXPECTED: &'static str = "a string";
    const VALUES: &'static [(&'static str, &'static str)] = K::VALUES;
    const HINT: fn(Option<&str>) -> String = |_| format!("write one of {}, in quotes", K::list());
    fn out(self) -> K {
        self
    }
    fn show(value: &K) -> Option<String> {
        Some(quoted(value.as_str()))
    }
}
impl<K: Kind> Kind for Option<K> {
    type Out = Option<K::Out>;
    const DOC: &'static str = K::DOC;
    const EXPECTED: &'static str = K::EXPECTED;
    const VALUES: &'static [(&'static str, &'static str)] = K::VALUES;
    const HINT: fn(Option<&str>) -> String = K::HINT;
    fn out(self) -> Self::Out {
        self.map(K::out)
    }
    fn show(value: &Self::Out) -> Option<String> {
        value.as_ref().and_then(K::show)
    }
}

/// `Name(Out) from Raw, "man page type", "expected", |item| hint, |raw| checked, |value| shown;`:
/// a newtype serde reads as `Raw`, then checks (`Err` is the message: what is wrong; what
/// to write), that is a key's [`Kind`].
macro_rules! kinds {
    ($($name:ident($out:ty) from $raw:ty, $doc:literal, $expected:literal, |$i:pat_param| $hint:expr,
        |$r:ident| $check:expr, |$x:ident| $show:expr;)+) => {$(
        pub(crate) struct $name(pub(crate) $out);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                fn check($r: $raw) -> Result<$out, String> { $check }
                check(<$raw>::deserialize(d)?).map($name).map_err(de::Error::custom)
            }
        }
        impl Kind for $name {
            type Out = $out;
            const DOC: &'static str = $doc;
            const EXPECTED: &'static str = $expected;
            const HINT: fn(Option<&str>) -> String = |$i| $hint.into();
            fn out(self) -> $out { self.0 }
            fn show($x: &$out) -> Option<String> { Some($show) }
        }
    )+};
}

const EXIT_CODE: &str = "an exit code from 1 to 255 (default 75)";

kinds! {
    Dur(Duration) from String, "duration", "a duration string", |_| DURATION, |text| duration(&text), |d| quoted(&format_duration(*d));
    NonZeroDur(Duration) from String, "duration, more than 0", "a duration string", |_| DURATION, |text| match duration(&text)? {
        d if d.is_zero() => Err(format!("{text:?} is zero; {DURATION}, or leave the key out")),
        d => Ok(d),
    }, |d| quoted(&format_duration(*d));
    Bool(bool) from bool, "boolean", "true or false", |_| "write true or false, without quotes", |b| Ok(b), |b| b.to_string();
    ExitCode(u8) from i128, "integer, 1 to 255", "an integer", |_| format!("write {EXIT_CODE}, without quotes"), |code| {
        u8::try_from(code).ok().filter(|c| *c != 0).ok_or_else(|| format!("{code} is out of range; use {EXIT_CODE}"))
    }, |code| code.to_string();
    Restarts(u32) from i128, "integer, 0 or more", "an integer", |_| "write a number of restarts (0 or more), without quotes", |max| {
        let use_ = format!("use 0 to {}, or leave the key out for no limit", u32::MAX);
        u32::try_from(max).map_err(|_| format!("{max} is out of range; {use_}"))
    }, |max| max.to_string();
    Dir(PathBuf) from String, "string", "a string", |_| "write a directory in quotes, like \".worktrees\"", |dir| {
        check_dir(Path::new(&dir)).map(|()| PathBuf::from(dir))
    }, |dir| quoted(&dir.to_string_lossy());
    BranchPrefix(String) from String, "string", "a string", |_| "write a prefix in quotes, like \"ralph/\"", |prefix| branch_prefix(prefix), |prefix| quoted(prefix);
    Signal(i32) from Text, "string or integer", "a signal name or number", |_| SIGNAL, |text| signals::setting(text), |signal| quoted(&signals::name(*signal));
    Globs(Vec<String>) from Vec<Glob>, "array of strings", "an array of strings", |_| GLOBS, |globs| {
        Ok(globs.into_iter().map(|glob| glob.0).collect())
    }, |globs| toml_value(globs);
    MemoryMax(Memory) from Text, "string or integer (bytes)", "a string", |_| MEMORY, |text| match text {
        Text::Int(bytes) => Memory::bytes(bytes),
        Text::Str(text) => text.parse(),
    }, |memory| quoted(&memory.to_string());
    PidsMax(Pids) from Text, "integer or \"max\"", "a string", |_| PIDS, |text| match text {
        Text::Int(n) => Pids::count(n),
        Text::Str(text) => text.parse(),
    }, |pids| match pids { Pids::Count(n) => n.to_string(), Pids::Max => quoted("max") };
    CpuMax(Cpu) from String, "string", "a string", |_| CPU, |text| text.parse(), |cpu| quoted(&cpu.to_string());
    Endpoints(Vec<String>) from fleet::Endpoints, "array of strings", "an array of URLs", |_| ENDPOINT, |urls| Ok(urls.0), |urls| toml_value(urls);
    FleetKey(String) from String, "string", "a string", |_| "write a key in quotes, like \"acme/api/main\"", |key| fleet::key(key), |key| quoted(key);
    FleetTtl(Duration) from String, "duration, 2s to 9000000000s", "a duration string", |_| DURATION, |text| fleet::ttl(duration(&text)?), |d| quoted(&format_duration(*d));
    TlsFile(PathBuf) from String, "string (a file)", "a string", |_| "write the PEM file's path in quotes", |path| fleet::tls_file(&path), |path| quoted(&path.to_string_lossy());
    Argv(Vec<String>) from Words, "array of strings", "an array of strings", |_| hooks::ARGV, |words| Ok(words.0), |argv| toml_value(argv);
    Env(BTreeMap<String, String>) from BTreeMap<EnvName, EnvValue>, "table of strings", "a table", |item| match item {
        None => "write a [run.env] section with lines like NAME = \"value\"".into(),
        Some(name) => format!("write the value in quotes, like {} = \"1\"", toml_key(name)),
    }, |env| Ok(env.into_iter().map(|(name, value)| (name.0, value.0)).collect()), |env| toml_value(env);
}

impl Kind for ExitActions {
    type Out = BTreeMap<u8, ExitRule>;
    const DOC: &'static str = "table of exit actions";
    const EXPECTED: &'static str = "a table";
    const ENTRY: Option<&'static str> = Some("CODE=ACTION");
    const HINT: fn(Option<&str>) -> String = |item| {
        let table = "write a [restart.exit] section with lines like 75 = \"30m\"";
        item.map_or(table, |_| EXIT_ACTION).into()
    };
    fn out(self) -> Self::Out {
        self.0
    }
    fn show(actions: &Self::Out) -> Option<String> {
        // None: not set, every exit status follows `restart.policy`.
        let pair = |(code, rule): (&u8, &ExitRule)| (code.to_string(), rule.to_string());
        let actions: BTreeMap<String, String> = actions.iter().map(pair).collect();
        (!actions.is_empty()).then(|| toml_value(&actions))
    }
    fn merge(into: &mut Self::Out, value: Self::Out) {
        into.extend(value);
    }
}

/// A string as TOML writes it: `"a \"b\""`.
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
/// A value as TOML writes it: `["a", "b"]`, `{ A = "1" }`.
fn toml_value<T: Clone + Into<toml::Value>>(value: &T) -> String {
    value.clone().into().to_string()
}
