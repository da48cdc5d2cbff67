//! How a room declares the values of its settings, so that the policy file, the command
//! line and the man page read them alike, without the room importing the policy (which
//! imports the room's types): keyword enums ([`keywords!`]: a closed set of spellings,
//! each with its meaning, for serde, clap's possible values and the man page) and
//! strings with a rule ([`checked_str`]), values that are a string or an integer
//! ([`Text`]), each declared in the room that acts on it (`conflict`, `worktree`,
//! `logging`, `hooks`, `fleet_settings`, ...); and durations, read and written as
//! humantime spells them ([`duration`], [`short_duration`]).

use serde::de::{Deserialize, Deserializer, Error, Visitor};

/// A closed set of keywords (declared with [`keywords!`]): every value, in documentation
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

/// Declares keyword enums: [`Keyword`] (spelling and meaning), serde's `Deserialize`,
/// `FromStr`, `Display`.
macro_rules! keywords {
    ($($name:ident $doc:literal {
        $($variant:ident = $text:literal, $man:literal;)+
    })+) => {$(
        #[doc = $doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
        #[serde(try_from = "String")]
        pub(crate) enum $name { $(#[doc = $man] $variant,)+ }
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<$name, String> { $crate::setting::Keyword::parse(&text) }
        }
        impl $crate::setting::Keyword for $name {
            const ALL: &'static [$name] = &[$($name::$variant),+];
            const VALUES: &'static [(&'static str, &'static str)] = &[$(($text, $man)),+];
        }
        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<$name, String> { $crate::setting::Keyword::parse(text) }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str($crate::setting::Keyword::as_str(*self))
            }
        }
    )+};
}
pub(crate) use keywords;

/// Reads a string and checks it with `check` (`Err`: what is wrong; what to write) within
/// the deserializer's call, so that a complaint is placed at the string itself, an array
/// item included (a `try_from` runs after the call, where toml places it at the array).
pub(crate) fn checked_str<'de, D: Deserializer<'de>, T>(
    d: D,
    check: impl FnOnce(String) -> Result<T, String>,
) -> Result<T, D::Error> {
    struct Checked<F>(F);
    impl<T, F: FnOnce(String) -> Result<T, String>> Visitor<'_> for Checked<F> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: Error>(self, text: &str) -> Result<T, E> {
            (self.0)(text.to_string()).map_err(E::custom)
        }
    }
    d.deserialize_str(Checked(check))
}

/// A value that may be a string or an integer (a signal, a limit). Read by hand, as
/// serde's untagged enums would lose the reason a value is refused.
pub(crate) enum Text {
    Str(String),
    Int(i128),
}
impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        d.deserialize_any(TextVisitor)
    }
}
struct TextVisitor;
impl Visitor<'_> for TextVisitor {
    type Value = Text;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string or an integer")
    }
    fn visit_str<E: Error>(self, text: &str) -> Result<Text, E> {
        Ok(Text::Str(text.to_string()))
    }
    fn visit_i64<E: Error>(self, n: i64) -> Result<Text, E> {
        Ok(Text::Int(n.into()))
    }
    fn visit_u64<E: Error>(self, n: u64) -> Result<Text, E> {
        Ok(Text::Int(n.into()))
    }
    fn visit_i128<E: Error>(self, n: i128) -> Result<Text, E> {
        Ok(Text::Int(n))
    }
}

/// What to write for a duration.
pub(crate) const DURATION: &str = "write a duration like \"30s\", \"5m\" or \"1h30m\"";

/// A human duration, `"1h30m"`.
pub(crate) fn duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        let why = e.to_string(); // without the unit table humantime appends: the hint suffices
        let why = why.split(", supported units").next().unwrap_or_default();
        format!("{text:?} is not a duration ({why}); {DURATION}")
    })
}

/// `1h30m`, `250ms`.
pub(crate) fn short_duration(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}
