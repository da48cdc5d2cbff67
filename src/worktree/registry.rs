//! ralph's loop registry, `<repo>/.ralph/loops.json`:
//! `{"loops":[{"id","pid","started","prompt","worktree_path","workspace"}]}`.
//!
//! Edited only in place, under a blocking `flock` on the file itself, exactly as ralph
//! does (never write-and-rename: ralph holds its lock on the inode). The new JSON is
//! written over the old bytes padded with spaces, then the file is truncated to length
//! and synced, so even a reader that ignores the lock never sees it empty or cut.
//! Nothing anybody else wrote is lost: unknown fields of an entry, unknown top-level
//! keys and entries we cannot read are written back as they were; a file that is not
//! JSON at all is copied aside before it is replaced, and what can still be read of it
//! (every whole entry, so no live loop drops out of `ralph loops list`) is carried into
//! the new list ([`Data::salvage`]).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::exit::{ExitStatus, Failure};
use crate::ralph_dir::{Access, RalphDir, RalphFile};

pub(crate) const REGISTRY_FILE: &str = "loops.json";

/// One running loop, as ralph lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub(crate) id: String,
    /// The pid `ralph loops stop` signals: the child's.
    pub(crate) pid: u32,
    /// Ours to the millisecond, as in the lock's metadata; others' written back as the
    /// same instant, as precisely (`rfc3339::exact`).
    #[serde(serialize_with = "crate::metadata::rfc3339::exact")]
    #[serde(deserialize_with = "crate::metadata::rfc3339::deserialize")]
    pub(crate) started: DateTime<Utc>,
    pub(crate) prompt: String,
    /// Absolute; empty for a loop in the main workspace (ralph omits the field then).
    #[serde(default, skip_serializing_if = "path_is_empty")]
    pub(crate) worktree_path: PathBuf,
    /// Absolute workspace root the loop runs in.
    #[serde(default)]
    pub(crate) workspace: PathBuf,
    /// Ours: the pid namespace `pid` is a number of (see [`Metadata`]'s); an entry of
    /// another namespace is never judged dead here, so never pruned.
    ///
    /// [`Metadata`]: crate::metadata::Metadata
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pid_namespace: Option<u64>,
    /// Ours: the loop's `RALPH_LOOP_INDEX` (ralph ignores fields it does not know).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) loop_index: Option<u32>,
    /// Fields we do not know, kept as they were.
    #[serde(flatten)]
    pub(crate) extra: Map<String, Value>,
}

fn path_is_empty(p: &Path) -> bool {
    p.as_os_str().is_empty()
}

/// One element of the `loops` array: ours to read, or someone's we keep verbatim.
#[derive(Debug, Clone)]
enum Slot {
    Known(Entry),
    Opaque(Value),
}

impl Slot {
    fn read(item: Value) -> Slot {
        match serde_json::from_value::<Entry>(item.clone()) {
            Ok(entry) => Slot::Known(entry),
            Err(_) => Slot::Opaque(item),
        }
    }
}

/// The whole file.
#[derive(Debug, Default)]
struct Data {
    loops: Vec<Slot>,
    /// Top-level keys other than `loops`.
    rest: Map<String, Value>,
}

impl Data {
    fn parse(bytes: &[u8]) -> Result<Data, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Data::default());
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let Value::Object(mut rest) = value else {
            return Err("the top level is not a JSON object".into());
        };
        let loops = match rest.remove("loops") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.into_iter().map(Slot::read).collect(),
            Some(_) => return Err("\"loops\" is not an array".into()),
        };
        Ok(Data { loops, rest })
    }

    /// What can still be read of a file [`Data::parse`] calls corrupt (cut short, two
    /// entries without a comma between them, junk after the end): walked as the JSON it
    /// should be, element by element, each whole top-level key and each whole element of
    /// `loops` is kept as it was; past the point where that walk breaks, every whole
    /// object that reads as one of our entries is taken for one (once per id), wherever
    /// it sits. What is cut or unreadable is dropped here (the caller keeps a copy of the
    /// file). On a file `parse` reads, this is the same data. The search past the break
    /// is bounded however the file is made ([`SALVAGE_BUDGET`]).
    fn salvage(bytes: &[u8]) -> Data {
        let mut data = Data::default();
        let mut cursor = Cursor { bytes, at: 0 };
        let _ = cursor.walk(&mut data);
        let (mut at, mut budget) = (cursor.at, SALVAGE_BUDGET);
        let mut ids: std::collections::HashSet<String> =
            data.known().into_iter().map(|e| e.id).collect();
        while let Some(found) = bytes[at..].iter().position(|&b| b == b'{') {
            let start = at + found;
            // No try reads further: an entry is far shorter (one longer, a path of
            // thousands of escaped characters, is not found past the break).
            let mut entry = Cursor {
                bytes: &bytes[..bytes.len().min(start + SALVAGE_WINDOW)],
                at: start,
            };
            let (read, next) = match entry.try_value().map(Slot::read) {
                Ok(Slot::Known(known)) => {
                    if ids.insert(known.id.clone()) {
                        data.loops.push(Slot::Known(known));
                    }
                    (0, entry.at)
                }
                // Something else whole (entries may be inside it), or nothing.
                Ok(Slot::Opaque(_)) => (entry.at - start, start + 1),
                Err(read) => (read, start + 1),
            };
            let Some(left) = budget.checked_sub(read) else {
                break;
            };
            (budget, at) = (left, next);
        }
        data
    }

    fn to_json(&self) -> Result<Vec<u8>, Failure> {
        let mut loops = Vec::with_capacity(self.loops.len());
        for slot in &self.loops {
            loops.push(match slot {
                Slot::Known(e) => serde_json::to_value(e).map_err(|err| {
                    Failure::msg(
                        ExitStatus::Failure,
                        format!("loop {}: cannot record it in {REGISTRY_FILE}: {err}", e.id),
                    )
                })?,
                Slot::Opaque(v) => v.clone(),
            });
        }
        let mut top = Map::new();
        top.insert("loops".into(), Value::Array(loops));
        for (k, v) in &self.rest {
            top.insert(k.clone(), v.clone());
        }
        let mut bytes = serde_json::to_vec_pretty(&Value::Object(top))
            .map_err(|e| Failure::msg(ExitStatus::Failure, format!("{REGISTRY_FILE}: {e}")))?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Drops known entries whose pid is dead; returns them.
    fn prune(&mut self) -> Vec<Entry> {
        let mut removed = Vec::new();
        self.loops.retain(|slot| match slot {
            Slot::Known(e) if !e.alive() => {
                removed.push(e.clone());
                false
            }
            _ => true,
        });
        removed
    }

    fn known(&self) -> Vec<Entry> {
        self.loops
            .iter()
            .filter_map(|s| match s {
                Slot::Known(e) => Some(e.clone()),
                Slot::Opaque(_) => None,
            })
            .collect()
    }
}

/// The most [`Data::salvage`] reads past the point where a corrupt file breaks, beyond
/// the entries it finds there (give or take one try; 0.33 s at worst, measured on
/// crafted files), and the most one try reads.
const SALVAGE_BUDGET: usize = 8 << 20;
const SALVAGE_WINDOW: usize = 16 << 10;

/// A place in a registry's bytes, for [`Data::salvage`]'s walk.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    /// Skips whitespace, then takes `byte` if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
        let next = self.bytes.get(self.at) == Some(&byte);
        self.at += usize::from(next);
        next
    }

    /// The whole JSON value next (read as [`Data::parse`] reads it), moving past it;
    /// `None`, not moving, when there is none.
    fn value(&mut self) -> Option<Value> {
        self.try_value().ok()
    }

    /// [`Cursor::value`], or how many bytes were read before it was found wanting.
    fn try_value(&mut self) -> Result<Value, usize> {
        let rest = &self.bytes[self.at..];
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
        match values.next() {
            Some(Ok(value)) => {
                self.at += values.byte_offset();
                Ok(value)
            }
            // Where it broke: serde_json's line (1-based) and its column in bytes.
            Some(Err(e)) => {
                let lines = rest.split(|&b| b == b'\n').take(e.line().saturating_sub(1));
                let line_start: usize = lines.map(|line| line.len() + 1).sum();
                Err(rest.len().min(line_start + e.column()))
            }
            None => Err(rest.len()),
        }
    }

    /// Reads the top-level object into `data` as far as it is well-formed; `None` where
    /// it breaks (`self.at` is there).
    fn walk(&mut self, data: &mut Data) -> Option<()> {
        self.eat(b'{').then_some(())?;
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            let Value::String(key) = self.value()? else {
                return None;
            };
            self.eat(b':').then_some(())?;
            if key == "loops" {
                // A repeated key counts once, its last time, as `parse` reads it.
                data.loops.clear();
                if !self.eat(b'[') {
                    // Not a list (null, or something `parse` refuses): no entries.
                    self.value()?;
                } else if !self.eat(b']') {
                    loop {
                        data.loops.push(Slot::read(self.value()?));
                        if self.eat(b']') {
                            break;
                        }
                        self.eat(b',').then_some(())?;
                    }
                }
            } else {
                let value = self.value()?;
                data.rest.insert(key, value);
            }
            if self.eat(b'}') {
                return Some(());
            }
            self.eat(b',').then_some(())?;
        }
    }
}

/// Parses registry contents the way every edit does: the readable entries, or why the
/// file is corrupt (it would then be kept aside). Empty or blank means no loops.
pub fn parse(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    Data::parse(bytes).map(|data| data.known())
}

/// What an edit writes back for `bytes` (unchanged entries, foreign ones kept): the
/// parse/serialise round trip, for tests and fuzzing. `Err` when `bytes` is corrupt.
pub fn rewrite(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let data = Data::parse(bytes)?;
    data.to_json().map_err(|f| format!("{:#}", f.error))
}

/// What an edit writes back for corrupt `bytes`, before its change: the entries and
/// keys that could still be read ([`Data::salvage`]), for tests and fuzzing.
pub fn rewrite_salvaged(bytes: &[u8]) -> Result<Vec<u8>, String> {
    Data::salvage(bytes)
        .to_json()
        .map_err(|f| format!("{:#}", f.error))
}

impl Entry {
    /// Whether the loop may be alive: its pid exists, or it is a number of another pid
    /// namespace (a container's), which cannot be judged here.
    pub(crate) fn alive(&self) -> bool {
        let elsewhere = self
            .pid_namespace
            .is_some_and(|ns| crate::procfs::pid_namespace().is_some_and(|ours| ours != ns));
        elsewhere || pid_alive(self.pid)
    }

    /// Whether the loop runs, as ralph judges it (`LoopEntry::is_alive`): its pid alive
    /// ([`Self::alive`]; an entry records no start time to confirm it by) and its
    /// worktree, when it names one, still a directory. A worktree loop ralph started
    /// itself holds no lock in its worktree: this is all there is to tell it runs.
    pub(crate) fn running(&self) -> bool {
        self.alive() && (self.worktree_path.as_os_str().is_empty() || self.worktree_path.is_dir())
    }

    /// Whether the entry is the loop of worktree `wt` (paths compared resolved).
    pub(crate) fn runs_in(&self, wt: &Path) -> bool {
        let resolved = |p: &Path| p.canonicalize().ok();
        !self.worktree_path.as_os_str().is_empty()
            && (self.worktree_path == wt
                || resolved(&self.worktree_path).is_some_and(|p| Some(p) == resolved(wt)))
    }
}

/// Whether a process with this pid exists (EPERM: it does, another user's).
fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    crate::procfs::alive(pid, None)
        || matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None),
            Err(nix::errno::Errno::EPERM)
        )
}

/// Adds (or replaces, by id) `entry`, pruning dead entries.
pub(crate) fn register(repo_ralph_dir: &Path, entry: Entry) -> Result<(), Failure> {
    edit(repo_ralph_dir, true, |data| {
        data.prune();
        data.loops
            .retain(|s| !matches!(s, Slot::Known(e) if e.id == entry.id));
        data.loops.push(Slot::Known(entry));
    })
    .map(|_| ())
}

/// Registers loop `id` (worktree `path`) for the supervisor itself, before its child
/// runs, with the smallest loop index above 0 (the primary's) that no live entry has;
/// returns it. Concurrent launches are serialised by the caller's repo lock, and each
/// sees the indexes reserved before it. [`register`] later puts the child's pid in.
pub(crate) fn reserve(
    repo_ralph_dir: &Path,
    id: &str,
    path: &Path,
    prompt: &str,
) -> Result<u32, Failure> {
    let entry = Entry {
        id: id.to_string(),
        pid: std::process::id(),
        started: crate::metadata::now(),
        prompt: crate::metadata::truncate_prompt(prompt),
        worktree_path: path.to_path_buf(),
        workspace: path.to_path_buf(),
        pid_namespace: crate::procfs::pid_namespace(),
        loop_index: None,
        extra: Map::new(),
    };
    let index = edit(repo_ralph_dir, true, |data| {
        data.prune();
        data.loops
            .retain(|s| !matches!(s, Slot::Known(e) if e.id == entry.id));
        let index = smallest_free(&data.known());
        data.loops.push(Slot::Known(Entry {
            loop_index: Some(index),
            ..entry
        }));
        index
    })?;
    Ok(index.unwrap_or(1))
}

/// The smallest loop index above 0 that none of `live` has. An entry that lost its
/// index (ralph rewrote `loops.json` without the fields it does not know) is asked
/// through its worktree's lock metadata, which keeps a copy.
fn smallest_free(live: &[Entry]) -> u32 {
    let used: Vec<u32> = live
        .iter()
        .filter_map(|e| e.loop_index.or_else(|| index_in_lock(&e.worktree_path)))
        .collect();
    (1..).find(|i| !used.contains(i)).unwrap_or(u32::MAX)
}

/// The loop index in the lock metadata of the worktree at `path`, read-only.
fn index_in_lock(path: &Path) -> Option<u32> {
    let dir = RalphDir::open_existing(path).ok()??;
    let lock = crate::lock::LockFile::open_to_probe(&dir).ok()??;
    match lock.holder().metadata {
        crate::lock::MetaState::Valid(m) => m.loop_index,
        _ => None,
    }
}

/// The index [`reserve`] would give, read without registering (when it cannot write).
pub(crate) fn free_index(repo_ralph_dir: &Path) -> u32 {
    let live: Vec<Entry> = list(repo_ralph_dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| pid_alive(e.pid))
        .collect();
    smallest_free(&live)
}

/// Removes the entry `id` (no error when it is not there), pruning dead entries.
pub(crate) fn deregister(repo_ralph_dir: &Path, id: &str) -> Result<(), Failure> {
    edit(repo_ralph_dir, false, |data| {
        data.prune();
        data.loops
            .retain(|s| !matches!(s, Slot::Known(e) if e.id == id));
    })
    .map(|_| ())
}

/// The entries as the file lists them (dead ones included), read under a shared lock.
/// A corrupt file lists what can still be read of it (with a warning) and is left for
/// the next edit to keep.
pub(crate) fn list(repo_ralph_dir: &Path) -> Result<Vec<Entry>, Failure> {
    let Some(dir) = RalphDir::at(repo_ralph_dir, false)? else {
        return Ok(Vec::new());
    };
    let Some(file) = dir.open_locked(REGISTRY_FILE, Access::Read, false)? else {
        return Ok(Vec::new());
    };
    let bytes = read(&file)?;
    match Data::parse(&bytes) {
        Ok(data) => Ok(data.known()),
        Err(why) => {
            let known = Data::salvage(&bytes).known();
            tracing::warn!(
                path = %file.path().display(),
                "loop registry is corrupt ({why}); listing {} of its loops (the ones still readable)",
                known.len()
            );
            Ok(known)
        }
    }
}

/// Whether the registry lists loop `id`: `Some(false)` when it does not (or there is no
/// registry), `None` when that cannot be told (unreadable or corrupt).
pub(crate) fn lists(repo_ralph_dir: &Path, id: &str) -> Option<bool> {
    let Some(dir) = RalphDir::at(repo_ralph_dir, false).ok()? else {
        return Some(false);
    };
    let Some(file) = dir.open_locked(REGISTRY_FILE, Access::Read, false).ok()? else {
        return Some(false);
    };
    let data = Data::parse(&read(&file).ok()?).ok()?;
    Some(data.known().iter().any(|e| e.id == id))
}

/// Removes the entries whose pid is dead; returns them.
pub(crate) fn prune(repo_ralph_dir: &Path) -> Result<Vec<Entry>, Failure> {
    Ok(edit(repo_ralph_dir, false, Data::prune)?.unwrap_or_default())
}

/// Locks, reads, applies `change`, writes back in place and syncs. Without `create`, a
/// missing file (or directory) is left missing: `Ok(None)`.
fn edit<R>(
    repo_ralph_dir: &Path,
    create: bool,
    change: impl FnOnce(&mut Data) -> R,
) -> Result<Option<R>, Failure> {
    let Some(dir) = RalphDir::at(repo_ralph_dir, create)? else {
        return Ok(None);
    };
    let Some(file) = dir.open_locked(REGISTRY_FILE, Access::ReadWrite, create)? else {
        return Ok(None);
    };
    let old = read(&file)?;
    let mut data = match Data::parse(&old) {
        Ok(data) => data,
        Err(why) => {
            let aside = keep_aside(&dir, &old)?;
            let salvaged = Data::salvage(&old);
            tracing::warn!(
                path = %file.path().display(),
                copy = %aside.display(),
                "loop registry was corrupt ({why}); kept a copy, and {} of its entries \
                 (the ones still readable) in the new list",
                salvaged.loops.len()
            );
            salvaged
        }
    };
    let result = change(&mut data);
    let new = data.to_json()?;
    // In place (ralph holds its lock on this inode), padded over the old bytes, space
    // reserved first: a full disk fails before the first byte is overwritten, where a
    // write that stopped half-way would leave a cut file and lose every entry in it.
    file.write_in_place(new)
        .and_then(|()| file.sync())
        .map_err(|e| {
            Failure::msg(
                ExitStatus::Failure,
                format!("cannot write {}: {e}", file.path().display()),
            )
        })?;
    Ok(Some(result))
}

fn read(file: &RalphFile) -> Result<Vec<u8>, Failure> {
    file.read_all()
        .map_err(|e| Failure::msg(ExitStatus::Failure, format!("read: {e}")))
}

/// Copies an unreadable registry to `loops.json.corrupt-<timestamp>` (never replacing
/// anything) and syncs it.
fn keep_aside(dir: &RalphDir, bytes: &[u8]) -> Result<PathBuf, Failure> {
    use std::io::Write;
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    for n in 0..100 {
        let name = if n == 0 {
            format!("{REGISTRY_FILE}.corrupt-{stamp}")
        } else {
            format!("{REGISTRY_FILE}.corrupt-{stamp}-{n}")
        };
        let path = dir.path().join(&name);
        match dir.create_new(&name) {
            Ok(mut f) => {
                f.write_all(bytes)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| {
                        Failure::msg(
                            ExitStatus::Failure,
                            format!(
                                "cannot keep a copy of the corrupt registry at {}: {e}",
                                path.display()
                            ),
                        )
                    })?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Failure::msg(
                    ExitStatus::Failure,
                    format!(
                        "{} is corrupt and a copy cannot be kept at {}: {e}; fix or move it by hand",
                        dir.path().join(REGISTRY_FILE).display(),
                        path.display()
                    ),
                ));
            }
        }
    }
    Err(Failure::msg(
        ExitStatus::Failure,
        format!(
            "too many corrupt registry copies in {}",
            dir.path().display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, pid: u32) -> Entry {
        Entry {
            id: id.into(),
            pid,
            started: Utc::now(),
            prompt: format!("prompt of {id}"),
            worktree_path: PathBuf::from(format!("/repo/.worktrees/{id}")),
            workspace: PathBuf::from(format!("/repo/.worktrees/{id}")),
            pid_namespace: None,
            loop_index: None,
            extra: Map::new(),
        }
    }

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn reserve_takes_the_smallest_free_index_above_zero() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".ralph");
        let wt = |id: &str| PathBuf::from(format!("/repo/.worktrees/{id}"));
        assert_eq!(reserve(&dir, "a", &wt("a"), "p").unwrap(), 1);
        assert_eq!(reserve(&dir, "b", &wt("b"), "p").unwrap(), 2);
        // A dead loop's index is free again; a live one's is not.
        let mut dead = entry("dead", dead_pid());
        dead.loop_index = Some(3);
        let mut raw: Value =
            serde_json::from_slice(&std::fs::read(dir.join(REGISTRY_FILE)).unwrap()).unwrap();
        raw["loops"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::to_value(&dead).unwrap());
        std::fs::write(dir.join(REGISTRY_FILE), raw.to_string()).unwrap();
        deregister(&dir, "a").unwrap();
        assert_eq!(reserve(&dir, "c", &wt("c"), "p").unwrap(), 1);
        assert_eq!(reserve(&dir, "d", &wt("d"), "p").unwrap(), 3);
        let listed = list(&dir).unwrap();
        let index = |id: &str| {
            listed
                .iter()
                .find(|e| e.id == id)
                .and_then(|e| e.loop_index)
        };
        assert_eq!(
            (index("b"), index("c"), index("d")),
            (Some(2), Some(1), Some(3))
        );
        // The child's registration keeps the index the launch reserved.
        let mut child = entry("c", std::process::id());
        child.loop_index = Some(1);
        register(&dir, child).unwrap();
        let raw: Value =
            serde_json::from_slice(&std::fs::read(dir.join(REGISTRY_FILE)).unwrap()).unwrap();
        assert!(raw.to_string().contains("\"loop_index\":1"), "{raw}");
    }

    #[test]
    fn an_index_ralph_dropped_from_the_registry_is_read_from_the_loops_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".ralph");
        // A live loop whose entry ralph rewrote without `loop_index`; its worktree's
        // lock metadata still says 1.
        let wt = tmp.path().join(".worktrees/kept");
        std::fs::create_dir_all(wt.join(".ralph")).unwrap();
        let meta = serde_json::json!({"pid": std::process::id(), "started":
            "2026-01-01T00:00:00Z", "prompt": "p", "loop_index": 1});
        std::fs::write(wt.join(".ralph/loop.lock"), meta.to_string()).unwrap();
        let mut kept = entry("kept", std::process::id());
        kept.worktree_path = wt;
        register(&dir, kept).unwrap();
        assert!(list(&dir).unwrap()[0].loop_index.is_none());
        let other = PathBuf::from("/repo/.worktrees/new");
        assert_eq!(reserve(&dir, "new", &other, "p").unwrap(), 2);
    }

    #[test]
    fn register_list_deregister() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".ralph");
        assert!(list(&dir).unwrap().is_empty());
        let me = std::process::id();
        register(&dir, entry("one-brave-otter", me)).unwrap();
        register(&dir, entry("two-calm-seal", me)).unwrap();
        // Re-registering an id replaces it.
        let mut again = entry("one-brave-otter", me);
        again.prompt = "changed".into();
        register(&dir, again).unwrap();
        let listed = list(&dir).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].id, "two-calm-seal");
        assert_eq!(listed[1].prompt, "changed");

        // ralph's shape on disk.
        let raw: Value =
            serde_json::from_slice(&std::fs::read(dir.join(REGISTRY_FILE)).unwrap()).unwrap();
        let first = &raw["loops"][0];
        for key in [
            "id",
            "pid",
            "started",
            "prompt",
            "worktree_path",
            "workspace",
        ] {
            assert!(first.get(key).is_some(), "{key} missing: {raw}");
        }
        assert!(first["started"].as_str().unwrap().ends_with('Z'));

        deregister(&dir, "two-calm-seal").unwrap();
        deregister(&dir, "no-such-loop").unwrap();
        let listed = list(&dir).unwrap();
        assert_eq!(
            listed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["one-brave-otter"]
        );
    }

    #[test]
    fn pids_of_another_namespace_are_never_pruned() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".ralph");
        let ours = crate::procfs::pid_namespace().unwrap();
        let mut theirs = entry("container-loop", dead_pid());
        theirs.pid_namespace = Some(ours + 1);
        let mut mine = entry("dead-here", dead_pid());
        mine.pid_namespace = Some(ours);
        register(&dir, theirs).unwrap();
        register(&dir, mine).unwrap();
        assert_eq!(
            prune(&dir)
                .unwrap()
                .into_iter()
                .map(|e| e.id)
                .collect::<Vec<_>>(),
            ["dead-here"]
        );
        let listed = list(&dir).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, "container-loop");
        assert_eq!(listed[0].pid_namespace, Some(ours + 1));
    }

    #[test]
    fn dead_pids_are_pruned() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".ralph");
        let dead = dead_pid();
        register(&dir, entry("dead-loop", dead)).unwrap();
        register(&dir, entry("live-loop", std::process::id())).unwrap();
        // Registering live-loop pruned dead-loop already.
        assert_eq!(list(&dir).unwrap().len(), 1);
        register(&dir, entry("dead-again", dead)).unwrap();
        let removed = prune(&dir).unwrap();
        assert_eq!(
            removed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["dead-again"]
        );
        assert_eq!(list(&dir).unwrap()[0].id, "live-loop");
    }

    #[test]
    fn unknown_fields_and_foreign_entries_survive() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".ralph");
        std::fs::create_dir(&dir).unwrap();
        let me = std::process::id();
        let ralph = format!(
            r#"{{"loops":[
              {{"id":"loop-1700000000-ab12","pid":{me},"started":"2026-01-02T03:04:05.678901234Z","prompt":"primary","workspace":"/repo","hat":"builder"}},
              {{"id":"weird","pid":"not a number","note":"keep me"}}
            ],"version":3}}"#
        );
        std::fs::write(dir.join(REGISTRY_FILE), ralph).unwrap();
        register(&dir, entry("mine-brave-otter", me)).unwrap();
        let raw: Value =
            serde_json::from_slice(&std::fs::read(dir.join(REGISTRY_FILE)).unwrap()).unwrap();
        assert_eq!(raw["version"], 3);
        let loops = raw["loops"].as_array().unwrap();
        assert_eq!(loops.len(), 3, "{raw}");
        assert_eq!(loops[0]["hat"], "builder");
        assert_eq!(loops[0]["started"], "2026-01-02T03:04:05.678901234Z");
        assert!(
            loops[0].get("worktree_path").is_none(),
            "primary entry grew a worktree_path"
        );
        assert_eq!(loops[1]["note"], "keep me");
        assert_eq!(loops[1]["pid"], "not a number");
        let listed = list(&dir).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].extra.get("hat"), Some(&Value::from("builder")));
    }

    #[test]
    fn foreign_numbers_survive_rewrites_unchanged() {
        // Found by the registry fuzz target: a long foreign number was read with
        // serde_json's fast (not always correctly rounded) float parser, so every edit
        // wrote it back one ulp off, drifting another tool's data.
        let text = concat!(
            r#"{"lo#o_h":"/r/.worktrees/loop-1","workversion":"#,
            "5555555555555555555555555555455555555555555555555555555555555555555555555555555555555555553}"
        );
        let once = rewrite(text.as_bytes()).unwrap();
        let twice = rewrite(&once).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&once),
            String::from_utf8_lossy(&twice)
        );
        let v: Value = serde_json::from_slice(&once).unwrap();
        let original: Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["workversion"], original["workversion"]);
    }

    #[test]
    fn corrupt_file_is_kept_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".ralph");
        std::fs::create_dir(&dir).unwrap();
        let garbage = b"{\"loops\":[{\"id\":\"half-writ";
        std::fs::write(dir.join(REGISTRY_FILE), garbage).unwrap();
        let inode = std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(dir.join(REGISTRY_FILE)).unwrap(),
        );
        // Listing does not touch it.
        assert!(list(&dir).unwrap().is_empty());
        register(&dir, entry("after-corrupt", std::process::id())).unwrap();
        let copies: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("loops.json.corrupt-"))
            .collect();
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert_eq!(std::fs::read(dir.join(&copies[0])).unwrap(), garbage);
        assert_eq!(list(&dir).unwrap()[0].id, "after-corrupt");
        // Edited in place: same inode.
        let after = std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(dir.join(REGISTRY_FILE)).unwrap(),
        );
        assert_eq!(inode, after);
        // Wrong shape is corrupt too.
        std::fs::write(dir.join(REGISTRY_FILE), b"[1,2,3]").unwrap();
        register(&dir, entry("after-shape", std::process::id())).unwrap();
        assert_eq!(list(&dir).unwrap().len(), 1);
    }

    fn ids(listed: &[Entry]) -> Vec<&str> {
        listed.iter().map(|e| e.id.as_str()).collect()
    }

    #[test]
    fn a_corrupt_file_keeps_the_entries_still_readable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".ralph");
        std::fs::create_dir(&dir).unwrap();
        let me = std::process::id();
        let dead = dead_pid();
        // Cut short in its last entry: ralph's live loop (a field and a precision of
        // its own), someone's entry we cannot read, a dead loop, a foreign key.
        let cut = format!(
            r#"{{"version":3,"loops":[
              {{"id":"loop-1700000000-ab12","pid":{me},"started":"2026-01-02T03:04:05.678901234Z","prompt":"primary","workspace":"/repo","hat":"builder"}},
              {{"id":"weird","pid":"not a number","note":"keep me"}},
              {{"id":"dead-one","pid":{dead},"started":"2026-01-02T03:04:05Z","prompt":"p","workspace":"/repo"}},
              {{"id":"cut-short","pid":{me},"star"#
        );
        std::fs::write(dir.join(REGISTRY_FILE), &cut).unwrap();
        // Listing reads what it can and leaves the file as it is.
        assert_eq!(
            ids(&list(&dir).unwrap()),
            ["loop-1700000000-ab12", "dead-one"]
        );
        assert_eq!(
            std::fs::read(dir.join(REGISTRY_FILE)).unwrap(),
            cut.as_bytes()
        );

        register(&dir, entry("after-corrupt", me)).unwrap();
        let raw: Value =
            serde_json::from_slice(&std::fs::read(dir.join(REGISTRY_FILE)).unwrap()).unwrap();
        assert_eq!(raw["version"], 3, "{raw}");
        let loops = raw["loops"].as_array().unwrap();
        assert_eq!(loops.len(), 3, "{raw}");
        assert_eq!(loops[0]["id"], "loop-1700000000-ab12");
        assert_eq!(loops[0]["hat"], "builder");
        assert_eq!(loops[0]["started"], "2026-01-02T03:04:05.678901234Z");
        assert!(loops[0].get("worktree_path").is_none(), "{raw}");
        assert_eq!(loops[1]["note"], "keep me");
        assert_eq!(loops[2]["id"], "after-corrupt");
        let copies: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("loops.json.corrupt-"))
            .collect();
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert_eq!(std::fs::read(dir.join(&copies[0])).unwrap(), cut.as_bytes());

        // No comma between two entries, junk after the end, an entry after the junk.
        let entry_text = |id: &str| {
            format!(
                r#"{{"id":"{id}","pid":{me},"started":"2026-01-02T03:04:05Z","prompt":"p","workspace":"/repo"}}"#
            )
        };
        let broken = format!(
            "{{\"loops\":[{} {}]}} junk {{\"x\": {}}}",
            entry_text("one"),
            entry_text("two"),
            entry_text("three")
        );
        std::fs::write(dir.join(REGISTRY_FILE), &broken).unwrap();
        assert_eq!(ids(&list(&dir).unwrap()), ["one", "two", "three"]);
        prune(&dir).unwrap();
        assert_eq!(ids(&list(&dir).unwrap()), ["one", "two", "three"]);

        // Written twice: each entry once.
        let whole = format!(
            r#"{{"loops":[{},{}]}}"#,
            entry_text("one"),
            entry_text("two")
        );
        std::fs::write(dir.join(REGISTRY_FILE), format!("{whole}\n{whole}")).unwrap();
        assert_eq!(ids(&list(&dir).unwrap()), ["one", "two"]);
    }

    /// Past the break, the search for entries reads a bounded number of bytes, however
    /// the file is made: an entry behind more junk than that is not looked for.
    #[test]
    fn the_search_past_the_break_is_bounded() {
        let me = std::process::id();
        let entry = format!(
            r#"{{"id":"far","pid":{me},"started":"2026-01-02T03:04:05Z","prompt":"p","workspace":"/r"}}"#
        );
        // Each junk object reads as JSON to the end of its try, and fails there.
        let junk = format!("{{\"k\":\"{}", "x".repeat(SALVAGE_WINDOW));
        let file = |tries: usize| format!("x{}{entry}", junk.repeat(tries)).into_bytes();
        let within = SALVAGE_BUDGET / SALVAGE_WINDOW - 1;
        assert_eq!(ids(&Data::salvage(&file(within)).known()), ["far"]);
        assert!(Data::salvage(&file(within + 2)).known().is_empty());
    }

    #[test]
    fn salvage_reads_a_valid_file_as_parse_does() {
        let me = std::process::id();
        for text in [
            String::new(),
            " \n".into(),
            "{}".into(),
            r#"{"loops":null,"a":1}"#.into(),
            r#"{"loops":[{"x":1}],"b":{"c":[1,2]},"loops":[]}"#.into(),
            r#"{"a":1,"loops":5,"b":2,"loops":[]}"#.into(),
            format!(
                r#"{{ "loops" : [ {{"id":"a","pid":{me},"started":"2026-01-02T03:04:05Z","prompt":"p"}} , 7 ] , "v" : 2.5 }}"#
            ),
        ] {
            assert_eq!(
                rewrite_salvaged(text.as_bytes()).unwrap(),
                rewrite(text.as_bytes()).unwrap(),
                "{text}"
            );
        }
    }

    #[test]
    fn symlinked_registry_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".ralph");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(tmp.path().join("elsewhere"), b"{}").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), dir.join(REGISTRY_FILE)).unwrap();
        let err = register(&dir, entry("x", std::process::id())).unwrap_err();
        assert_eq!(err.status, ExitStatus::Failure);
        assert!(
            err.error.to_string().contains("symbolic link"),
            "{:#}",
            err.error
        );
        assert_eq!(std::fs::read(tmp.path().join("elsewhere")).unwrap(), b"{}");
    }

    #[test]
    fn concurrent_registrations_all_land() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".ralph");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    register(&dir, entry(&format!("loop-{i}"), std::process::id())).unwrap()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(list(&dir).unwrap().len(), 8);
    }
}
