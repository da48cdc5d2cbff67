//! The JSON object inside `.ralph/loop.lock`.
//!
//! ralph-orchestrator reads `pid`, `started` and `prompt` and ignores everything else, so
//! those three keep ralph's names and types exactly; the rest is ours, and optional on
//! read so that a lock written by ralph itself parses too.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Longest prompt ralph stores; longer ones are cut to 97 characters plus `...`.
pub(crate) const PROMPT_MAX: usize = 100;

/// How a loop uses its workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Primary,
    Worktree,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Primary => "primary",
            Mode::Worktree => "worktree",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// ralph: the pid `ralph loops stop --force` signals — the child's once it runs.
    pub pid: u32,
    /// ralph: when the loop started, RFC 3339 in UTC with `Z`.
    #[serde(with = "rfc3339")]
    pub started: DateTime<Utc>,
    /// ralph: the task, at most 100 characters.
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_pid: Option<u32>,
    /// Kernel start time of the supervisor, to detect pid reuse ([`crate::procfs::start_time`]:
    /// clock ticks since boot on Linux, microseconds since the epoch on macOS and FreeBSD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_start_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_pid: Option<u32>,
    /// Kernel start time of the child, to detect pid reuse (as `supervisor_start_time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_start_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Written lossily when not UTF-8 (JSON strings are text): never fails to serialise.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "lossy_path"
    )]
    pub workspace: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The supervisor's pid namespace (the inode of `/proc/self/ns/pid`): the pids above
    /// are numbers in it, and mean nothing (or another process) in any other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<u64>,
    /// The loop's `RALPH_LOOP_INDEX` (0 for the primary). `loops.json` has it too, but
    /// ralph drops fields it does not know when it rewrites that file: this copy stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_index: Option<u32>,
    /// Restarts so far, the last exit and the next start; absent before the first exit
    /// that a restart follows.
    #[serde(flatten)]
    pub restart: RestartState,
    /// Fleet mode: the fleet lock's key and fencing token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetFacts>,
    /// How the loop's processes are contained (`"cgroup"` or `"tree"`) and the loop's
    /// cgroup directory, for `status`'s live figures.
    #[serde(flatten)]
    pub contained: Contained,
}

/// What a run in fleet mode holds: the etcd lock's key and its fencing token (the
/// lock's etcd revision, larger for every later holder; `RALPH_FENCING_TOKEN`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetFacts {
    pub key: String,
    pub fencing_token: i64,
}

/// The containment fields of the metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contained {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containment: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "lossy_path"
    )]
    pub cgroup: Option<PathBuf>,
}

/// The restart fields of the metadata, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartState {
    /// Restarts so far in this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u32>,
    /// How the last run ended, and why a restart follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<LastExit>,
    /// When the next run starts, while the supervisor waits for it (no child runs then).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rfc3339_option"
    )]
    pub next_start: Option<DateTime<Utc>>,
}

/// How a run ended, as `[restart.exit]` matched it, and what rule decided what follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastExit {
    /// The exit code, when the command exited.
    #[serde(default)]
    pub code: Option<i32>,
    /// The signal that killed it (`SIGKILL`), when one did.
    #[serde(default)]
    pub signal: Option<String>,
    /// The status matched: the code, or 128+N after signal N.
    pub status: u8,
    /// The rule, as the policy spells it: `restart.exit 75 = "30m"`.
    pub why: String,
}

impl Metadata {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("metadata always serialises")
    }

    /// Parses lock-file contents. Empty or whitespace-only means "no metadata".
    pub fn parse(bytes: &[u8]) -> Result<Option<Metadata>, serde_json::Error> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(bytes).map(Some)
    }
}

fn lossy_path<S: serde::Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => s.serialize_some(&p.to_string_lossy()),
        None => s.serialize_none(),
    }
}

/// Cuts a prompt the way ralph does: at most 100 characters, longer ones become the
/// first 97 plus `...`. Counts characters, never splits one.
pub fn truncate_prompt(prompt: &str) -> String {
    if prompt.chars().count() <= PROMPT_MAX {
        return prompt.to_string();
    }
    let mut cut: String = prompt.chars().take(PROMPT_MAX - 3).collect();
    cut.push_str("...");
    cut
}

/// `2026-11-28T15:04:05.123Z`: RFC 3339, UTC, with `Z`.
pub(crate) fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Now, to the millisecond: what [`format_time`] writes, so that the time held is the
/// time written (the metadata's `started`, our loop registry entries').
pub(crate) fn now() -> DateTime<Utc> {
    // As `Utc::now` makes it, with the nanoseconds cut before (chrono's `trunc_subsecs`
    // would bring its date arithmetic onto every run's path).
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let nanos = now.subsec_millis() * 1_000_000;
    DateTime::from_timestamp(now.as_secs() as i64, nanos).unwrap_or_default()
}

/// An RFC 3339 time, in UTC. One RFC 3339 cannot write in UTC (before year 0 or after
/// 9999, once its offset is applied) is refused, so that a registry entry holding one is
/// kept as it was rather than written back unreadable.
fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    let t = DateTime::parse_from_rfc3339(text).map_err(|e| e.to_string())?;
    let t = t.with_timezone(&Utc);
    match t.year() {
        0..=9999 => Ok(t),
        _ => Err(format!("{text:?} is out of range in UTC")),
    }
}

/// [`rfc3339`] for an optional time.
pub(crate) mod rfc3339_option {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        t: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&super::format_time(t)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => super::parse_time(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Serde helpers for `DateTime<Utc>` as RFC 3339 with `Z` (ralph's timestamps).
pub(crate) mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(t))
    }

    /// For a file that holds other writers' times (`loops.json`): the same instant, as
    /// precisely as it is (no fraction, or 3, 6 or 9 digits), in UTC with `Z`: chrono's
    /// own form, which is how ralph writes its times, so they go back as they came.
    pub(crate) fn exact<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_time(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Timelike;

    #[test]
    fn prompt_cut_like_ralph() {
        assert_eq!(truncate_prompt("short"), "short");
        let exact: String = "x".repeat(100);
        assert_eq!(truncate_prompt(&exact), exact);
        let long: String = "é".repeat(150);
        let cut = truncate_prompt(&long);
        assert_eq!(cut.chars().count(), 100);
        assert!(cut.ends_with("..."));
        assert!(cut.starts_with(&"é".repeat(97)));
    }

    #[test]
    fn ralph_written_lock_parses() {
        let ralph =
            br#"{"pid":4242,"started":"2026-01-02T03:04:05.678901234Z","prompt":"fix the tests"}"#;
        let m = Metadata::parse(ralph).unwrap().unwrap();
        assert_eq!(m.pid, 4242);
        assert_eq!(m.prompt, "fix the tests");
        assert_eq!(m.child_pid, None);
    }

    #[test]
    fn padded_and_empty_contents() {
        assert_eq!(Metadata::parse(b"").unwrap(), None);
        assert_eq!(Metadata::parse(b"   \n").unwrap(), None);
        let m = Metadata::parse(br#"{"pid":1,"started":"2026-01-02T03:04:05Z","prompt":""}      "#)
            .unwrap()
            .unwrap();
        assert_eq!(m.pid, 1);
        assert!(Metadata::parse(b"{\"pid\":").is_err());
    }

    #[test]
    fn non_utf8_workspace_serialises() {
        use std::os::unix::ffi::OsStringExt;
        let mut m = Metadata::parse(br#"{"pid":1,"started":"2026-01-02T03:04:05Z","prompt":""}"#)
            .unwrap()
            .unwrap();
        m.workspace = Some(PathBuf::from(std::ffi::OsString::from_vec(
            b"/w/\xff".to_vec(),
        )));
        let json = m.to_json();
        assert!(json.contains("\"workspace\":\"/w/\u{fffd}\""), "{json}");
        assert!(Metadata::parse(json.as_bytes()).unwrap().is_some());
    }

    #[test]
    fn registry_times_go_back_as_the_same_instant_as_precisely() {
        #[derive(Deserialize, Serialize)]
        struct T {
            #[serde(serialize_with = "rfc3339::exact")]
            #[serde(deserialize_with = "rfc3339::deserialize")]
            t: DateTime<Utc>,
        }
        let again = |text: &str| {
            let json = serde_json::json!({ "t": text }).to_string();
            let read: Result<T, _> = serde_json::from_str(&json);
            read.map(|t| {
                serde_json::to_value(t).unwrap()["t"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
        };
        // ralph's (chrono's own form) as they came; others' as the same instant.
        for same in [
            "2026-01-02T03:04:05.678901234Z",
            "2026-01-02T03:04:05.678901Z",
            "2026-01-02T03:04:05.120Z",
            "2026-01-02T03:04:05Z",
        ] {
            assert_eq!(again(same).unwrap(), same);
        }
        assert_eq!(
            again("2026-01-02T03:04:05.000Z").unwrap(),
            "2026-01-02T03:04:05Z"
        );
        assert_eq!(
            again("2026-01-02T05:04:05.5+02:00").unwrap(),
            "2026-01-02T03:04:05.500Z"
        );
        // What UTC cannot write as RFC 3339 is refused (the registry keeps that entry as
        // it was).
        assert!(again("0000-01-01T00:30:00+01:00").is_err());
        assert!(again("9999-12-31T23:59:59-01:00").is_err());
        let t = now();
        assert_eq!(t.nanosecond() % 1_000_000, 0, "{t}");
        assert!((Utc::now() - t).num_milliseconds() < 60_000, "{t}");
    }

    #[test]
    fn started_is_utc_with_z() {
        let m = Metadata {
            pid: 7,
            started: DateTime::parse_from_rfc3339("2026-11-28T15:04:05.5+02:00")
                .unwrap()
                .with_timezone(&Utc),
            prompt: "p".into(),
            supervisor_pid: Some(6),
            supervisor_start_time: None,
            child_pid: None,
            child_start_time: None,
            loop_id: None,
            mode: Some(Mode::Primary),
            command: vec!["true".into()],
            workspace: None,
            hostname: None,
            version: None,
            pid_namespace: Some(4026531836),
            loop_index: None,
            restart: RestartState::default(),
            fleet: None,
            contained: Default::default(),
        };
        let json = m.to_json();
        assert!(
            json.contains(r#""started":"2026-11-28T13:04:05.500Z""#),
            "{json}"
        );
        assert_eq!(Metadata::parse(json.as_bytes()).unwrap().unwrap(), m);
    }
}
