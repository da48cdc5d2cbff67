//! Loop ids in ralph's style: `<words-from-prompt>-<adjective>-<noun>`, or
//! `ralph-YYYYMMDD-HHMMSS-xxxx` when the prompt has no usable word.
//!
//! An id names a directory under the worktrees dir and a branch `<prefix><id>`, so it is
//! built from `[a-z0-9]` runs joined by single `-` and can never contain `/`, `..` or
//! anything else that escapes that directory.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Words taken from the prompt, at most.
const MAX_WORDS: usize = 3;
/// Characters kept of each prompt word.
const MAX_WORD_LEN: usize = 12;
/// Longest id [`generate_id`] returns.
pub(crate) const MAX_ID_LEN: usize = 64;
/// Word-based candidates tried before falling back to the timestamp form.
const WORD_ATTEMPTS: usize = 64;

const STOPWORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "to", "of", "in", "on", "at", "for", "with", "by",
    "from", "into", "onto", "is", "are", "be", "it", "its", "this", "that", "these", "those",
    "please", "can", "you", "we", "i", "me", "my", "our", "your", "so", "as", "all", "any", "some",
    "then", "than", "do", "does", "make", "should", "would", "could", "will", "let",
];

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "kind", "lively", "merry",
    "nimble", "proud", "quick", "quiet", "bold", "bright", "clever", "cosmic", "daring", "swift",
    "witty", "zesty", "amber", "azure", "crisp", "dapper", "fuzzy", "golden", "hardy", "humble",
    "keen", "lucky", "mellow", "noble", "plucky", "rapid", "rustic", "silver", "sturdy", "sunny",
    "tidy", "vivid", "warm", "wise", "young", "agile", "breezy", "cheery",
];

const NOUNS: &[&str] = &[
    "otter", "falcon", "badger", "beaver", "bison", "cobra", "condor", "coyote", "crane", "dingo",
    "eagle", "ferret", "finch", "gecko", "heron", "ibis", "jackal", "koala", "lemur", "lynx",
    "marten", "moose", "newt", "ocelot", "orca", "osprey", "panda", "puffin", "quail", "raven",
    "robin", "salmon", "seal", "shrew", "sparrow", "stoat", "swan", "tapir", "tiger", "toucan",
    "trout", "walrus", "weasel", "whale", "wombat", "yak", "zebra", "maple",
];

/// A ralph-style loop id for `prompt` that `taken` rejects not.
///
/// `taken` decides uniqueness (existing worktree directory, existing branch, overlap
/// with a live id); it is called once per candidate. After [`WORD_ATTEMPTS`] word-based
/// candidates the timestamp form is used, with a longer random suffix the longer it
/// takes, so this always returns.
pub fn generate_id(prompt: &str, taken: &dyn Fn(&str) -> bool) -> String {
    let words = prompt_words(prompt);
    if !words.is_empty() {
        let stem = words.join("-");
        for _ in 0..WORD_ATTEMPTS {
            let r = random();
            let adj = ADJECTIVES[(r % ADJECTIVES.len() as u64) as usize];
            let noun = NOUNS[((r >> 20) % NOUNS.len() as u64) as usize];
            let id = format!("{stem}-{adj}-{noun}");
            if !taken(&id) {
                return id;
            }
        }
    }
    let mut hex_len = 4;
    let mut attempt = 0u32;
    loop {
        let id = timestamp_id(hex_len);
        if !taken(&id) || hex_len >= 16 {
            return id;
        }
        attempt += 1;
        if attempt.is_multiple_of(16) {
            hex_len += 4;
        }
    }
}

/// `prefix`, if it can start a git branch name `<prefix><id>`; else why it cannot (git's
/// ref-name rules that a prefix can break) and what to use.
pub(crate) fn branch_prefix(prefix: String) -> Result<String, String> {
    let parts = || prefix.split('/');
    let why = if prefix.starts_with('/') || prefix.starts_with('-') {
        "it may not start with / or -"
    } else if prefix.contains("..") || prefix.contains("//") || prefix.contains("@{") {
        "it may not contain .., // or @{"
    } else if prefix
        .chars()
        .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c))
    {
        "it may not contain spaces, control characters or any of ~^:?*[\\"
    } else if parts().any(|part| part.starts_with('.')) {
        "no part of it may start with a dot"
    } else if parts().any(|part| part.ends_with(".lock")) {
        "no part of it may end in .lock"
    } else {
        return Ok(prefix);
    };
    let use_ = "use a prefix like \"ralph/\"";
    Err(format!(
        "{prefix:?} is not a usable branch prefix ({why}); {use_}"
    ))
}

/// Whether `id` has the shape [`generate_id`] produces: `[a-z0-9]` runs joined by single
/// dashes, at most [`MAX_ID_LEN`] characters.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// The usable words of a prompt: ASCII letters and digits, lowercased, stopwords and
/// one-letter words dropped, each cut to [`MAX_WORD_LEN`], at most [`MAX_WORDS`].
fn prompt_words(prompt: &str) -> Vec<String> {
    prompt
        .split(|c: char| !c.is_ascii_alphanumeric())
        .map(str::to_ascii_lowercase)
        .filter(|w| w.len() >= 2 && !STOPWORDS.contains(&w.as_str()))
        .map(|w| w.chars().take(MAX_WORD_LEN).collect())
        .take(MAX_WORDS)
        .collect()
}

fn timestamp_id(hex_len: usize) -> String {
    let now = chrono::Utc::now();
    let mut hex = String::new();
    while hex.len() < hex_len {
        hex.push_str(&format!("{:016x}", random()));
    }
    hex.truncate(hex_len);
    format!("ralph-{}-{hex}", now.format("%Y%m%d-%H%M%S"))
}

/// 64 random-enough bits without a dependency: std's randomly keyed SipHash over the
/// time, the pid and a process-wide counter.
fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(t);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn words_adjective_noun() {
        let id = generate_id("Fix the login bug, please!", &|_| false);
        assert!(id.starts_with("fix-login-bug-"), "{id}");
        assert_eq!(id.split('-').count(), 5, "{id}");
        assert!(is_valid_id(&id), "{id}");
    }

    #[test]
    fn no_words_gives_timestamp_form() {
        for prompt in ["", "  ", "!!! ???", "é ü ß", "a"] {
            let id = generate_id(prompt, &|_| false);
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(parts.len(), 4, "{id}");
            assert_eq!(parts[0], "ralph");
            assert_eq!(parts[1].len(), 8);
            assert_eq!(parts[2].len(), 6);
            assert_eq!(parts[3].len(), 4);
            assert!(is_valid_id(&id), "{id}");
        }
    }

    #[test]
    fn never_escapes_and_stays_short() {
        let long = "supercalifragilisticexpialidocious ".repeat(20);
        for prompt in [
            "../../etc",
            "a/b",
            "/etc/passwd",
            "..",
            "x\0y",
            "ÉNORME\tchange--now",
            "ＦＵＬＬ width",
            long.as_str(),
            "-- -- --",
        ] {
            let id = generate_id(prompt, &|_| false);
            assert!(is_valid_id(&id), "{prompt:?} -> {id}");
            assert!(!id.contains('/') && !id.contains(".."), "{id}");
            assert!(id.len() <= MAX_ID_LEN, "{id}");
        }
        assert!(generate_id("../../etc", &|_| false).starts_with("etc-"));
        assert!(generate_id("a/b", &|_| false).starts_with("ralph-"));
    }

    #[test]
    fn skips_taken_names() {
        let seen = RefCell::new(Vec::new());
        let taken = |c: &str| {
            seen.borrow_mut().push(c.to_string());
            seen.borrow().len() <= 5
        };
        let id = generate_id("add tests", &taken);
        let seen = seen.into_inner();
        assert_eq!(seen.len(), 6);
        assert_eq!(seen.last().unwrap(), &id);
    }

    #[test]
    fn falls_back_when_all_words_taken_and_terminates() {
        let id = generate_id("add tests", &|c| c.starts_with("add-tests"));
        assert!(id.starts_with("ralph-"), "{id}");
        // Everything taken: still returns (the caller's git step then reports it).
        let id = generate_id("add tests", &|_| true);
        assert!(is_valid_id(&id), "{id}");
    }

    #[test]
    fn substring_rule_via_taken() {
        let live = ["fix-bug-brave-otter".to_string()];
        let taken = |c: &str| live.iter().any(|l| l.contains(c) || c.contains(l.as_str()));
        for _ in 0..200 {
            let id = generate_id("fix bug", &taken);
            assert!(!live[0].contains(&id) && !id.contains(&live[0]));
        }
    }
}
