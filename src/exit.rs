//! Exit statuses, in one place.
//!
//! Scripts, systemd's `RestartPreventExitStatus=` and shells depend on the number
//! `ralph-supervise` exits with, so every code it can produce is a variant here: the
//! child's own status passed through, `128 + N` for a child killed by signal N, and the
//! supervisor's own codes in the coreutils style (`timeout(1)`, `env(1)`, `nohup(1)`).

use std::fmt;

/// Default code for a run that found the workspace taken (`EX_TEMPFAIL`).
pub(crate) const CONFLICT_DEFAULT: u8 = 75;

/// What the process exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// The child exited with this code (0 included).
    Child(u8),
    /// The child was killed by this signal number; exits `128 + N`.
    Signaled(i32),
    /// `status`/`stop`: nothing is running in the workspace (like `systemctl is-active`).
    NotRunning,
    /// Command-line usage error.
    Usage,
    /// The workspace is taken and the policy said fail (default 75, configurable).
    Conflict(u8),
    /// The policy file is malformed.
    BadPolicy,
    /// Fleet mode: the fleet lock is unavailable (etcd unreachable at start) or was lost
    /// (keep-alives failed); `EX_UNAVAILABLE`.
    Unavailable,
    /// Fleet mode: etcd refused the credentials; `EX_NOPERM`.
    NoPermission,
    /// `max_runtime` expired, or a `stop`/`wait` timed out.
    Timeout,
    /// The supervisor itself failed.
    Failure,
    /// The command exists but cannot be executed.
    NotExecutable,
    /// The command was not found.
    NotFound,
}

impl ExitStatus {
    /// The supervisor ran, and there is nothing to report.
    pub(crate) const SUCCESS: ExitStatus = ExitStatus::Child(0);

    /// The process exit code for this status.
    pub(crate) fn code(self) -> u8 {
        match self {
            ExitStatus::Child(code) => code,
            // Signal numbers on Linux stop at 64, so this never wraps; clamp anyway.
            ExitStatus::Signaled(sig) => (128 + sig.clamp(0, 127)) as u8,
            ExitStatus::NotRunning => 3,
            ExitStatus::Usage => 2,
            ExitStatus::Conflict(code) => code,
            ExitStatus::BadPolicy => 78,
            ExitStatus::Unavailable => 69,
            ExitStatus::NoPermission => 77,
            ExitStatus::Timeout => 124,
            ExitStatus::Failure => 125,
            ExitStatus::NotExecutable => 126,
            ExitStatus::NotFound => 127,
        }
    }

    /// Maps a `waitpid` result of the child to its exit status.
    pub(crate) fn from_wait(outcome: ChildOutcome) -> ExitStatus {
        match outcome {
            ChildOutcome::Exited(code) => ExitStatus::Child((code & 0xff) as u8),
            ChildOutcome::Signaled(sig) => ExitStatus::Signaled(sig),
        }
    }
}

/// How a child process ended, as `waitpid` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildOutcome {
    Exited(i32),
    Signaled(i32),
}

impl ChildOutcome {
    pub(crate) fn success(self) -> bool {
        self == ChildOutcome::Exited(0)
    }
}

impl fmt::Display for ChildOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ChildOutcome::Exited(code) => write!(f, "exited with code {code}"),
            ChildOutcome::Signaled(sig) => write!(f, "killed by {}", crate::signals::name(sig)),
        }
    }
}

/// An error that knows which exit status it ends the process with.
///
/// Everything below `main` returns this; `main` prints it once, with its context chain.
#[derive(Debug)]
pub struct Failure {
    pub status: ExitStatus,
    pub error: anyhow::Error,
}

impl Failure {
    pub(crate) fn new(status: ExitStatus, error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            status,
            error: error.into(),
        }
    }

    pub(crate) fn msg(status: ExitStatus, msg: impl fmt::Display) -> Failure {
        Failure::new(status, anyhow::anyhow!("{msg}"))
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure {
            status: ExitStatus::Failure,
            error,
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Failure {
        Failure::new(ExitStatus::Failure, error)
    }
}

/// Attaches an exit status to an error result.
pub(crate) trait ResultExt<T> {
    /// A supervisor failure (125), with `what` as context.
    fn or_fail(self, what: impl fmt::Display) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> ResultExt<T> for Result<T, E> {
    fn or_fail(self, what: impl fmt::Display) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(ExitStatus::Failure, e.into().context(what.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_child_code_passes_through() {
        for code in 0..=255 {
            let status = ExitStatus::from_wait(ChildOutcome::Exited(code));
            assert_eq!(status.code() as i32, code);
        }
    }

    #[test]
    fn signal_deaths_are_128_plus_n() {
        for sig in 1..=64 {
            let status = ExitStatus::from_wait(ChildOutcome::Signaled(sig));
            assert_eq!(status.code() as i32, 128 + sig);
        }
    }

    #[test]
    fn own_codes_are_documented_values() {
        let table = [
            (ExitStatus::NotRunning, 3),
            (ExitStatus::Usage, 2),
            (ExitStatus::Conflict(CONFLICT_DEFAULT), 75),
            (ExitStatus::Conflict(9), 9),
            (ExitStatus::BadPolicy, 78),
            (ExitStatus::Unavailable, 69),
            (ExitStatus::NoPermission, 77),
            (ExitStatus::Timeout, 124),
            (ExitStatus::Failure, 125),
            (ExitStatus::NotExecutable, 126),
            (ExitStatus::NotFound, 127),
        ];
        for (status, code) in table {
            assert_eq!(status.code(), code, "{status:?}");
        }
    }
}
