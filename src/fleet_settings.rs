//! The settings of fleet mode (`src/fleet/`, the `fleet` feature): etcd endpoints, the
//! lock key, the lease's time to live, TLS files, each with its rules. They are compiled
//! in every build, so that a policy file's `[fleet]` section reads the same whatever the
//! binary was built with; only `run` needs the feature to act on them.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

use crate::policy::Dur;
use crate::present::short_duration as format_duration;

/// `[fleet] endpoints`: etcd client URLs (on the command line, one comma-separated string).
pub(crate) struct Endpoints(pub(crate) Vec<String>);
/// `[fleet] key`: the fleet lock's key.
#[derive(serde::Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct FleetKey(pub(crate) String);
/// `[fleet] ttl`: a duration of at least [`MIN_TTL`].
#[derive(serde::Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct FleetTtl(pub(crate) Duration);
/// `[fleet] tls_*`: a file that exists.
#[derive(serde::Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct TlsFile(pub(crate) PathBuf);

/// The shortest lease: below it a keep-alive round trip and a stop grace do not fit.
pub(crate) const MIN_TTL: Duration = Duration::from_secs(2);
pub(crate) const ENDPOINT: &str = "write URLs like \"http://etcd-1.example:2379\"";

/// One endpoint, checked: `"http://host:port"`, without a trailing slash.
struct Endpoint(String);
impl TryFrom<&str> for Endpoint {
    type Error = String;
    fn try_from(text: &str) -> Result<Endpoint, String> {
        match check_endpoint(text) {
            Ok(()) => Ok(Endpoint(text.trim_end_matches('/').to_string())),
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
}
impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Endpoint, D::Error> {
        Endpoint::try_from(String::deserialize(d)?.as_str()).map_err(de::Error::custom)
    }
}
impl<'de> Deserialize<'de> for Endpoints {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Endpoints, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of URLs")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<String>, E> {
                let url = |t: &str| Endpoint::try_from(t.trim()).map(|e| e.0);
                text.split(',')
                    .map(url)
                    .collect::<Result<_, _>>()
                    .map_err(E::custom)
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Vec<String>, S::Error> {
                let mut urls = Vec::new();
                while let Some(Endpoint(url)) = seq.next_element()? {
                    urls.push(url);
                }
                Ok(urls)
            }
        }
        match d.deserialize_any(V)? {
            urls if urls.is_empty() => Err(de::Error::custom(format!(
                "the array is empty; {ENDPOINT}, or leave the key out"
            ))),
            urls => Ok(Endpoints(urls)),
        }
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

impl TryFrom<String> for FleetKey {
    type Error = String;
    fn try_from(key: String) -> Result<FleetKey, String> {
        match check_fleet_key(&key) {
            Ok(()) => Ok(FleetKey(key)),
            Err(why) => Err(format!("{key:?} is not a usable key ({why})")),
        }
    }
}

impl TryFrom<String> for FleetTtl {
    type Error = String;
    fn try_from(text: String) -> Result<FleetTtl, String> {
        let Dur(ttl) = Dur::try_from(text)?;
        if ttl < MIN_TTL {
            let text = format_duration(ttl);
            return Err(format!(
                "{text:?} is under 2s; use a lease of at least \"2s\" (\"10s\" is usual)"
            ));
        }
        Ok(FleetTtl(ttl))
    }
}

impl TryFrom<String> for TlsFile {
    type Error = String;
    fn try_from(path: String) -> Result<TlsFile, String> {
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(TlsFile(PathBuf::from(path))),
            Ok(_) => Err(format!("{path:?} is not a file; name a PEM file")),
            Err(e) => Err(format!("{path:?}: {e}; name a PEM file that exists")),
        }
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
    fn keys_are_limited() {
        assert!(check_fleet_key("acme/api/main").is_ok());
        assert!(check_fleet_key("github.com/a_b/c-d/feature.x").is_ok());
        for bad in ["", "a b", "a/b@c", "/a", "a/", "a//b", "ü", "a\nb", "a*"] {
            assert!(check_fleet_key(bad).is_err(), "{bad:?}");
        }
    }
}
