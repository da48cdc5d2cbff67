//! Keyword enums: a closed set of spellings, each with its meaning, that the policy file,
//! the command line (clap's possible values) and the man page all take from one
//! declaration. Each enum is declared with [`keywords!`] in the room that acts on it
//! (`conflict`, `worktree`, `logging`, ...); this module is neutral, so that a room need not
//! import the policy (which imports the room's type) to declare one.

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
        pub(crate) enum $name { $(#[doc = $man] #[serde(rename = $text)] $variant,)+ }
        impl $crate::keyword::Keyword for $name {
            const ALL: &'static [$name] = &[$($name::$variant),+];
            const VALUES: &'static [(&'static str, &'static str)] = &[$(($text, $man)),+];
        }
        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<$name, String> { $crate::keyword::Keyword::parse(text) }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str($crate::keyword::Keyword::as_str(*self))
            }
        }
    )+};
}
pub(crate) use keywords;
