//! The readers of the `[fleet]` keys (fleet mode, `src/fleet/`): etcd endpoints, the
//! lock key, the lease's time to live, TLS files. They exist in every build, so that a
//! policy file reads the same whatever the binary was built with; only `run` needs the
//! `fleet` feature to act on them.

use std::path::PathBuf;
use std::time::Duration;

use toml::de::DeValue;

use super::read::{Bad, Kind, Val};
use super::show::quoted;
use crate::present::short_duration as format_duration;

/// `[fleet] endpoints`: etcd client URLs.
pub(crate) struct Endpoints;
/// `[fleet] key`: the fleet lock's key.
pub(crate) struct FleetKey;
/// `[fleet] ttl`: a duration of at least [`MIN_TTL`].
pub(crate) struct FleetTtl;
/// `[fleet] tls_*`: a file that exists.
pub(crate) struct TlsFile;

/// The shortest lease: below it a keep-alive round trip and a stop grace do not fit.
pub(crate) const MIN_TTL: Duration = Duration::from_secs(2);
const ENDPOINT: &str = "write URLs like \"http://etcd-1.example:2379\"";

impl Kind for Endpoints {
    type Out = Vec<String>;
    const DOC: &'static str = "array of strings";
    fn read(v: &Val) -> Result<Vec<String>, Bad> {
        // The command line gives one string, comma-separated.
        let texts: Vec<(String, Val)> = match v.value.get_ref() {
            DeValue::String(text) => (text.split(','))
                .map(|t| {
                    (
                        t.trim().to_string(),
                        Val {
                            key: v.key,
                            value: v.value,
                        },
                    )
                })
                .collect(),
            DeValue::Array(items) => {
                let mut texts = Vec::new();
                for item in items {
                    let item = Val {
                        key: v.key,
                        value: item,
                    };
                    texts.push((item.string(ENDPOINT)?.to_string(), item));
                }
                texts
            }
            _ => return Err(v.wrong_type("an array of URLs", ENDPOINT)),
        };
        if texts.is_empty() {
            return Err(v.bad(format!(
                "the array is empty; {ENDPOINT}, or leave the key out"
            )));
        }
        let mut out = Vec::new();
        for (text, item) in texts {
            if let Err(why) = check_endpoint(&text) {
                // A URL with a password in it is not repeated.
                let shown = match text.contains('@') {
                    true => "the URL".to_string(),
                    false => format!("{text:?}"),
                };
                return Err(item.bad(format!("{shown} is not an etcd URL ({why}); {ENDPOINT}")));
            }
            out.push(text.trim_end_matches('/').to_string());
        }
        Ok(out)
    }
    fn show(value: &Vec<String>) -> Option<String> {
        let items: Vec<String> = value.iter().map(|s| quoted(s)).collect();
        Some(format!("[{}]", items.join(", ")))
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

impl Kind for FleetKey {
    type Out = String;
    const DOC: &'static str = "string";
    fn read(v: &Val) -> Result<String, Bad> {
        let key = v.string("write a key in quotes, like \"acme/api/main\"")?;
        check_fleet_key(key)
            .map_err(|why| v.bad(format!("{key:?} is not a usable key ({why})")))?;
        Ok(key.to_string())
    }
    fn show(value: &String) -> Option<String> {
        Some(quoted(value))
    }
}

impl Kind for FleetTtl {
    type Out = Duration;
    const DOC: &'static str = "duration, at least 2s";
    fn read(v: &Val) -> Result<Duration, Bad> {
        let ttl = <Duration as Kind>::read(v)?;
        if ttl < MIN_TTL {
            let text = format_duration(ttl);
            let msg =
                format!("{text:?} is under 2s; use a lease of at least \"2s\" (\"10s\" is usual)");
            return Err(v.bad(msg));
        }
        Ok(ttl)
    }
    fn show(value: &Duration) -> Option<String> {
        Some(quoted(&format_duration(*value)))
    }
}

impl Kind for TlsFile {
    type Out = PathBuf;
    const DOC: &'static str = "string (a file)";
    fn read(v: &Val) -> Result<PathBuf, Bad> {
        let path = v.string("write the PEM file's path in quotes")?;
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => Ok(PathBuf::from(path)),
            Ok(_) => Err(v.bad(format!("{path:?} is not a file; name a PEM file"))),
            Err(e) => Err(v.bad(format!("{path:?}: {e}; name a PEM file that exists"))),
        }
    }
    fn show(value: &PathBuf) -> Option<String> {
        Some(quoted(&value.to_string_lossy()))
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
