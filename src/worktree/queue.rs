//! ralph's merge queue, `<repo>/.ralph/merge-queue.jsonl`: an append-only log of
//! `{"ts","loop_id","event":{"type":"queued","prompt"}}` lines.

use std::path::Path;

use chrono::Utc;
use serde::Serialize;

use crate::exit::{ExitStatus, Failure};
use crate::ralph_dir::{Access, RalphDir};

pub(crate) const QUEUE_FILE: &str = "merge-queue.jsonl";

/// One `queued` line of the merge queue, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub ts: chrono::DateTime<Utc>,
    pub loop_id: String,
    pub prompt: String,
}

/// Parses one line of `merge-queue.jsonl`: `Ok(Some)` for a `queued` event, `Ok(None)`
/// for another event type (ralph writes others), `Err` for a line that is not an event.
pub fn parse_line(line: &[u8]) -> Result<Option<Queued>, String> {
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let field = |v: &serde_json::Value, key: &str| -> Result<String, String> {
        v.get(key)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("no string {key:?}"))
    };
    let event = value.get("event").ok_or("no \"event\"")?;
    if field(event, "type")? != "queued" {
        return Ok(None);
    }
    let ts = chrono::DateTime::parse_from_rfc3339(&field(&value, "ts")?)
        .map_err(|e| format!("ts: {e}"))?
        .with_timezone(&Utc);
    Ok(Some(Queued {
        ts,
        loop_id: field(&value, "loop_id")?,
        prompt: field(event, "prompt")?,
    }))
}

/// A line as this module writes it, in ralph's key order.
#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    loop_id: &'a str,
    event: Event<'a>,
}

#[derive(Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    prompt: &'a str,
}

/// Appends a `queued` event for `loop_id` under an exclusive flock on the file, then
/// syncs. A last line left without its newline (a torn write by someone else) gets one
/// first, so our line stays a line of its own.
pub(crate) fn enqueue(repo_ralph_dir: &Path, loop_id: &str, prompt: &str) -> Result<(), Failure> {
    let dir = RalphDir::at(repo_ralph_dir, true)?.expect("created");
    let file = dir
        .open_locked(QUEUE_FILE, Access::Append, true)?
        .expect("created");
    let event = Line {
        ts: crate::metadata::format_time(&Utc::now()),
        loop_id,
        event: Event {
            kind: "queued",
            prompt,
        },
    };
    let mut line = serde_json::to_vec(&event).expect("strings serialize");
    line.push(b'\n');
    file.append(&line).and_then(|()| file.sync()).map_err(|e| {
        Failure::msg(
            ExitStatus::Failure,
            format!("cannot append to {}: {e}", file.path().display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".ralph");
        enqueue(&dir, "fix-bug-brave-otter", "fix the \"bug\"\nnow").unwrap();
        // A torn line by someone else does not swallow ours.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(QUEUE_FILE))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"torn\":"))
            .unwrap();
        enqueue(&dir, "second-calm-seal", "two").unwrap();
        let text = std::fs::read_to_string(dir.join(QUEUE_FILE)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(text.ends_with('\n'));
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["loop_id"], "fix-bug-brave-otter");
        assert_eq!(first["event"]["type"], "queued");
        assert_eq!(first["event"]["prompt"], "fix the \"bug\"\nnow");
        let ts = first["ts"].as_str().unwrap();
        assert!(ts.ends_with('Z'));
        chrono::DateTime::parse_from_rfc3339(ts).unwrap();
        let third: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(third["loop_id"], "second-calm-seal");
    }
}
