//! The kinds of value a key can hold: each reads and checks its value from the file
//! (with the message and the hint for each mistake), and prints it back as TOML.
//! Kinds whose value has rules of its own ([`Signal`], [`BranchPrefix`], [`Env`], ...)
//! are marker types whose [`Kind::Out`] is the plain value the rest of the crate uses.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use toml::de::DeValue;

use super::read::{Bad, Val, in_file_order};
use super::show::{format_duration, quoted, toml_key};

/// Log levels `log.level` accepts, least verbose first.
pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// How one key's value is read from the file and printed back.
pub trait Kind {
    /// The value the effective [`Policy`](super::Policy) holds.
    type Out: Clone;
    /// The type named in the man page.
    const DOC: &'static str;
    /// For keywords: every spelling and what it means, for the man page.
    const VALUES: &'static [(&'static str, &'static str)] = &[];
    fn read(v: &Val) -> Result<Self::Out, Bad>;
    /// The value as TOML; `None` for an unset optional value.
    fn show(value: &Self::Out) -> Option<String>;
}

/// A closed set of lowercase keywords (declared with `keywords!`).
pub trait Keyword: Copy + PartialEq + Send + Sync + 'static + FromStr<Err = String> {
    /// Every value, in documentation order.
    const ALL: &'static [Self];
    /// Every spelling with its man page text, in the order of [`Keyword::ALL`].
    const VALUES: &'static [(&'static str, &'static str)];
    /// A one-line description for `--help` (empty: none).
    fn help(self) -> &'static str;
    /// The spelling used in policy files and on the command line.
    fn as_str(self) -> &'static str {
        let at = Self::ALL.iter().position(|v| *v == self).unwrap_or(0);
        Self::VALUES[at].0
    }
    /// "a, b, c", for messages.
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
        v.string(&hint)?.parse::<K>().map_err(|e| v.bad(e))
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

impl Kind for Duration {
    type Out = Duration;
    const DOC: &'static str = "duration";
    fn read(v: &Val) -> Result<Duration, Bad> {
        const HINT: &str = "write a duration like \"30s\", \"5m\" or \"1h30m\"";
        let Some(text) = v.value.get_ref().as_str() else {
            return Err(v.wrong_type("a duration string", HINT));
        };
        humantime::parse_duration(text.trim()).map_err(|e| {
            // humantime appends the whole unit table to unknown units; the hint suffices.
            let why = e.to_string();
            let why = why.split(", supported units").next().unwrap_or_default();
            v.bad(format!("{text:?} is not a duration ({why}); {HINT}"))
        })
    }
    fn show(value: &Duration) -> Option<String> {
        Some(quoted(&format_duration(*value)))
    }
}

impl Kind for bool {
    type Out = bool;
    const DOC: &'static str = "boolean";
    fn read(v: &Val) -> Result<bool, Bad> {
        let hint = "write true or false, without quotes";
        (v.value.get_ref().as_bool()).ok_or_else(|| v.wrong_type("true or false", hint))
    }
    fn show(value: &bool) -> Option<String> {
        Some(value.to_string())
    }
}

/// An exit code, 1 to 255.
pub struct ExitCode;

impl Kind for ExitCode {
    type Out = u8;
    const DOC: &'static str = "integer, 1 to 255";
    fn read(v: &Val) -> Result<u8, Bad> {
        const RANGE: &str = "an exit code from 1 to 255 (default 75)";
        let code = v.integer(RANGE)?;
        let out_of_range = || v.bad(format!("{code} is out of range; use {RANGE}"));
        u8::try_from(code)
            .ok()
            .filter(|c| *c != 0)
            .ok_or_else(out_of_range)
    }
    fn show(value: &u8) -> Option<String> {
        Some(value.to_string())
    }
}

/// A number of restarts.
pub struct Restarts;

impl Kind for Restarts {
    type Out = u32;
    const DOC: &'static str = "integer, 0 or more";
    fn read(v: &Val) -> Result<u32, Bad> {
        let max = v.integer("a number of restarts (0 or more)")?;
        u32::try_from(max).map_err(|_| {
            let limit = u32::MAX;
            v.bad(format!(
                "{max} is out of range; use 0 to {limit}, or leave the key out for no limit"
            ))
        })
    }
    fn show(value: &u32) -> Option<String> {
        Some(value.to_string())
    }
}

/// A directory, not empty.
pub struct Dir;

impl Kind for Dir {
    type Out = PathBuf;
    const DOC: &'static str = "string";
    fn read(v: &Val) -> Result<PathBuf, Bad> {
        match v.string("write a directory in quotes, like \".worktrees\"")? {
            "" => Err(v.bad("the directory is empty; use a directory like \".worktrees\"")),
            dir => Ok(PathBuf::from(dir)),
        }
    }
    fn show(value: &PathBuf) -> Option<String> {
        Some(quoted(&value.to_string_lossy()))
    }
}

/// A git branch name prefix: git's ref-name rules, as far as a prefix can break them.
pub struct BranchPrefix;

impl BranchPrefix {
    fn check(prefix: &str) -> Result<(), &'static str> {
        let parts = || prefix.split('/');
        if prefix.starts_with('/') || prefix.starts_with('-') {
            Err("it may not start with / or -")
        } else if prefix.contains("..") || prefix.contains("//") || prefix.contains("@{") {
            Err("it may not contain .., // or @{")
        } else if (prefix.chars()).any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c)) {
            Err("it may not contain spaces, control characters or any of ~^:?*[\\")
        } else if parts().any(|part| part.starts_with('.')) {
            Err("no part of it may start with a dot")
        } else if parts().any(|part| part.ends_with(".lock")) {
            Err("no part of it may end in .lock")
        } else {
            Ok(())
        }
    }
}

impl Kind for BranchPrefix {
    type Out = String;
    const DOC: &'static str = "string";
    fn read(v: &Val) -> Result<String, Bad> {
        let prefix = v.string("write a prefix in quotes, like \"ralph/\"")?;
        BranchPrefix::check(prefix).map_err(|why| {
            v.bad(format!(
                "{prefix:?} is not a usable branch prefix ({why}); use a prefix like \"ralph/\""
            ))
        })?;
        Ok(prefix.to_string())
    }
    fn show(value: &String) -> Option<String> {
        Some(quoted(value))
    }
}

/// A signal, by name (`"TERM"`, `"SIGTERM"`) or number.
pub struct Signal;

impl Kind for Signal {
    type Out = i32;
    const DOC: &'static str = "string or integer";
    fn read(v: &Val) -> Result<i32, Bad> {
        const HINT: &str = "use a name like \"TERM\" or \"SIGTERM\", or a number like 15";
        let text = match v.value.get_ref() {
            DeValue::String(s) => s.to_string(),
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => n.to_string(),
                Err(_) => i.as_str().to_string(),
            },
            _ => return Err(v.wrong_type("a signal name or number", HINT)),
        };
        match crate::signals::parse(&text) {
            Ok(signal) => Ok(signal as i32),
            Err(_) if v.value.get_ref().is_integer() => {
                Err(v.bad(format!("{text} is not a signal number; {HINT}")))
            }
            Err(_) => Err(v.bad(format!("{text:?} is not a signal; {HINT}"))),
        }
    }
    fn show(value: &i32) -> Option<String> {
        Some(quoted(&crate::signals::name(*value)))
    }
}

/// Environment variables: names without `=` or NUL, string values without NUL.
pub struct Env;

impl Kind for Env {
    type Out = BTreeMap<String, String>;
    const DOC: &'static str = "table of strings";
    fn read(v: &Val) -> Result<Self::Out, Bad> {
        const HINT: &str = "write a [run.env] section with lines like NAME = \"value\"";
        let DeValue::Table(table) = v.value.get_ref() else {
            return Err(v.wrong_type("a table", HINT));
        };
        let mut env = BTreeMap::new();
        for (name, value) in in_file_order(table) {
            let (span, name) = (name.span(), name.get_ref().as_ref());
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(Bad::at(
                    span,
                    format!(
                        "run.env: {name:?} is not a usable variable name; use a name without = or NUL, like RUST_LOG"
                    ),
                ));
            }
            let full = format!("run.env.{name}");
            let v = Val { key: &full, value };
            let hint = format!("write the value in quotes, like {} = \"1\"", toml_key(name));
            let text = v.string(&hint)?;
            if text.contains('\0') {
                return Err(v.bad("the value contains a NUL character; remove it"));
            }
            env.insert(name.to_string(), text.to_string());
        }
        Ok(env)
    }
    fn show(env: &Self::Out) -> Option<String> {
        let pairs: Vec<String> = (env.iter())
            .map(|(k, v)| format!("{} = {}", toml_key(k), quoted(v)))
            .collect();
        Some(match pairs.is_empty() {
            true => "{}".to_string(),
            false => format!("{{ {} }}", pairs.join(", ")),
        })
    }
}

/// One of [`LOG_LEVELS`].
pub struct LogLevel;

impl Kind for LogLevel {
    type Out = String;
    const DOC: &'static str = "string";
    fn read(v: &Val) -> Result<String, Bad> {
        let list = LOG_LEVELS.join(", ");
        let level = v.string(&format!("write one of {list}, in quotes"))?;
        match LOG_LEVELS.contains(&level) {
            true => Ok(level.to_string()),
            false => Err(v.bad(format!("{level:?} is not valid; expected one of {list}"))),
        }
    }
    fn show(value: &String) -> Option<String> {
        Some(quoted(value))
    }
}
