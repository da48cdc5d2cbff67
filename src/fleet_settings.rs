//! The settings of fleet mode (`src/fleet/`, the `fleet` feature) and their rules: etcd
//! endpoints, the lock key, the lease's time to live, TLS files. They are compiled in
//! every build, so that a policy file's `[fleet]` section reads the same whatever the
//! binary was built with; only `run` needs the feature to act on them.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

use crate::setting::short_duration as format_duration;

/// The credentials, from the environment only (never the policy file, never logged).
pub(crate) const ENV_USER: &str = "RALPH_SUPERVISE_ETCD_USER";
pub(crate) const ENV_PASSWORD: &str = "RALPH_SUPERVISE_ETCD_PASSWORD";
static CREDENTIALS: OnceLock<Option<(String, String)>> = OnceLock::new();

/// Reads the etcd user name and password once, at start-up, and takes both variables out
/// of the process's environment, so that nothing ralph-supervise starts (the command, a
/// hook, git and the repository's own git hooks) inherits them, whatever it is built
/// with. Called from `main` before any thread is started.
pub(crate) fn take_credentials() {
    let [user, password] = [ENV_USER, ENV_PASSWORD].map(|name| {
        let value = crate::sys::take_env(name)?;
        value.into_string().ok()
    });
    let user = user.filter(|u| !u.is_empty());
    let _ = CREDENTIALS.set(user.map(|user| (user, password.unwrap_or_default())));
}
/// The user name and password [`take_credentials`] found, if a user name was set.
#[cfg_attr(
    not(feature = "fleet"),
    expect(dead_code, reason = "read by fleet mode only")
)]
pub(crate) fn credentials() -> Option<&'static (String, String)> {
    CREDENTIALS.get()?.as_ref()
}

/// The shortest lease: below it a keep-alive round trip and a stop grace do not fit.
pub(crate) const MIN_TTL: Duration = Duration::from_secs(2);
pub(crate) const ENDPOINT: &str = "write URLs like \"http://etcd-1.example:2379\"";

/// An etcd client URL, checked, without a trailing slash.
pub(crate) fn endpoint(text: &str) -> Result<String, String> {
    match check_endpoint(text) {
        Ok(()) => Ok(text.trim_end_matches('/').to_string()),
        // A URL with a password in it is not repeated.
        Err(why) => {
            let shown = match text.contains('@') {
                true => "the URL".to_string(),
                false => format!("{text:?}"),
            };
            Err(format!("{shown} is not an etcd URL ({why}); {ENDPOINT}"))
        }
    }
}

/// `[fleet] endpoints`: an array of URLs, or one string of comma-separated URLs (as the
/// command line gives them); each [`endpoint`] checked (an item of the array where it
/// is), and not none.
pub(crate) struct Endpoints(pub(crate) Vec<String>);
impl<'de> Deserialize<'de> for Endpoints {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Endpoints, D::Error> {
        d.deserialize_any(EndpointsVisitor)
    }
}
struct EndpointsVisitor;
impl EndpointsVisitor {
    fn not_empty<E: de::Error>(urls: Vec<String>) -> Result<Endpoints, E> {
        match urls.is_empty() {
            true => Err(E::custom(format!(
                "the array is empty; {ENDPOINT}, or leave the key out"
            ))),
            false => Ok(Endpoints(urls)),
        }
    }
}
impl<'de> Visitor<'de> for EndpointsVisitor {
    type Value = Endpoints;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of URLs")
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<Endpoints, E> {
        let urls = text.split(',').map(|url| endpoint(url.trim()));
        Self::not_empty(urls.collect::<Result<_, _>>().map_err(E::custom)?)
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Endpoints, S::Error> {
        let mut urls = Vec::new();
        while let Some(Endpoint(url)) = seq.next_element()? {
            urls.push(url);
        }
        Self::not_empty(urls)
    }
}
/// One item of [`Endpoints`].
struct Endpoint(String);
impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Endpoint, D::Error> {
        crate::setting::checked_str(d, |url| endpoint(&url).map(Endpoint))
    }
}

/// The longest lease etcd grants (its `MaxLeaseTTL`, in seconds; etcd 3.4 answers a
/// longer one "too large lease TTL").
pub(crate) const MAX_TTL_SECS: u64 = 9_000_000_000;

/// The lease's time to live: at least [`MIN_TTL`], at most [`MAX_TTL_SECS`] (the lease
/// is granted in whole seconds, rounded up).
pub(crate) fn ttl(ttl: Duration) -> Result<Duration, String> {
    if ttl < MIN_TTL {
        Err(format!(
            "{:?} is under 2s; use a lease of at least \"2s\" (\"10s\" is usual)",
            format_duration(ttl)
        ))
    } else if ttl > Duration::from_secs(MAX_TTL_SECS) {
        Err(format!(
            "{:?} is over etcd's longest lease, {MAX_TTL_SECS}s; use a shorter lease (\"10s\" is usual)",
            format_duration(ttl)
        ))
    } else {
        Ok(ttl)
    }
}

/// A TLS file (a CA, a client certificate or key): it must exist.
pub(crate) fn tls_file(path: &str) -> Result<PathBuf, String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(PathBuf::from(path)),
        Ok(_) => Err(format!("{path:?} is not a file; name a PEM file")),
        Err(e) => Err(format!("{path:?}: {e}; name a PEM file that exists")),
    }
}

/// `http://host[:port]` or `https://...`, nothing else (no user, path or query).
fn check_endpoint(text: &str) -> Result<(), &'static str> {
    let rest = (text.strip_prefix("http://"))
        .or_else(|| text.strip_prefix("https://"))
        .ok_or("it must start with http:// or https://")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err("no user or password in it: set RALPH_SUPERVISE_ETCD_USER and _PASSWORD");
    }
    if rest.contains(['/', '?', '#']) {
        return Err("no path, query or fragment");
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => (host, Some(port)),
        _ => (rest, None),
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("no host name");
    }
    if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
        return Err("the port is not a number from 1 to 65535");
    }
    Ok(())
}

/// `fleet.key`: `key`, if it can be a fleet key ([`check_fleet_key`]).
pub(crate) fn key(key: String) -> Result<String, String> {
    match check_fleet_key(&key) {
        Ok(()) => Ok(key),
        Err(why) => Err(format!("{key:?} is not a usable key ({why})")),
    }
}

/// Why `key` cannot be a fleet key, if it cannot: etcd takes any bytes, but the key is
/// also a name in logs, `etcdctl` commands and shells.
pub(crate) fn check_fleet_key(key: &str) -> Result<(), String> {
    let bad = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._/-".contains(*c)));
    if key.is_empty() {
        Err("it is empty".into())
    } else if let Some(c) = bad {
        Err(format!(
            "{c:?} is not allowed: use letters, digits and . _ / - only"
        ))
    } else if key.starts_with('/') || key.ends_with('/') || key.contains("//") {
        Err("it may not start or end with / or contain //".into())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_plain_http_urls() {
        for good in [
            "http://127.0.0.1:2379",
            "https://etcd.example",
            "http://[::1]:2379/",
        ] {
            assert_eq!(check_endpoint(good), Ok(()), "{good}");
        }
        for bad in [
            "127.0.0.1:2379",
            "etcd:2379",
            "http://",
            "http://u:p@h:1",
            "http://h:1/v3",
            "http://h:x",
            "http://h:0",
            "unix:///run/etcd.sock",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ttl_is_one_etcd_grants() {
        let max = Duration::from_secs(MAX_TTL_SECS);
        assert_eq!(ttl(MIN_TTL), Ok(MIN_TTL));
        assert_eq!(ttl(max), Ok(max));
        for bad in [
            MIN_TTL - Duration::from_millis(1),
            max + Duration::from_millis(1),
        ] {
            assert!(ttl(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_are_limited() {
        assert!(check_fleet_key("acme/api/main").is_ok());
        assert!(check_fleet_key("github.com/a_b/c-d/feature.x").is_ok());
        for bad in ["", "a b", "a/b@c", "/a", "a/", "a//b", "ü", "a\nb", "a*"] {
            assert!(check_fleet_key(bad).is_err(), "{bad:?}");
        }
    }
}
