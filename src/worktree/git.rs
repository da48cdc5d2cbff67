//! Running git: captured output, one clear error line, never an inherited lock.
//!
//! Every descriptor this crate opens is close-on-exec (std and our `openat` calls set
//! it), so git never inherits a lock. Variables that would redirect git to another
//! repository (set when we are run from a git hook, say) are removed.

use std::ffi::OsStr;
use std::io;
use std::path::Path;

use crate::exit::{ExitStatus, Failure};

/// What a git process produced.
pub(crate) struct Output {
    pub(crate) ok: bool,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: String,
}

impl Output {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim_end().to_string()
    }

    /// git's complaint on one line.
    pub(crate) fn complaint(&self) -> String {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.is_empty() {
            "git failed without a message".to_string()
        } else {
            lines.join("; ")
        }
    }
}

const REDIRECTING_VARS: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
];

/// Runs `git <args>` in `dir`, whatever its exit status.
pub(crate) fn run<I, S>(dir: &Path, args: I, stdin: Option<Vec<u8>>) -> Result<Output, Failure>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    if !dir.is_dir() {
        return Err(Failure::msg(
            ExitStatus::Failure,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let mut expr = duct::cmd("git", &args)
        .dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdout_capture()
        .stderr_capture()
        .unchecked();
    for var in REDIRECTING_VARS {
        expr = expr.env_remove(var);
    }
    expr = match stdin {
        Some(bytes) => expr.stdin_bytes(bytes),
        None => expr.stdin_null(),
    };
    match expr.run() {
        Ok(out) => Ok(Output {
            ok: out.status.success(),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Failure::msg(
            ExitStatus::Failure,
            "git is not installed (not found on PATH); install git: worktree loops need it",
        )),
        Err(e) => Err(Failure::msg(
            ExitStatus::Failure,
            format!("cannot run git in {}: {e}", dir.display()),
        )),
    }
}

/// Runs `git <args>` in `dir` and returns its trimmed stdout; a failure names `what`.
pub(crate) fn ok<I, S>(dir: &Path, args: I, what: &str) -> Result<String, Failure>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = run(dir, args, None)?;
    if out.ok {
        Ok(out.text())
    } else {
        Err(Failure::msg(
            ExitStatus::Failure,
            format!("{what} failed in {}: {}", dir.display(), out.complaint()),
        ))
    }
}

/// NUL-separated stdout as paths (git's `-z` output).
pub(crate) fn nul_list(stdout: &[u8]) -> Vec<Vec<u8>> {
    stdout
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}
