//! Fleet mode in a build without the `fleet` feature: the same names `run` and the
//! control commands use, and one clear line (exit 69, the fleet lock is unavailable)
//! when a policy or a command line asks for fleet mode. [`Fleet`] has no values, so
//! nothing else here can run.

use std::os::fd::BorrowedFd;
use std::path::Path;
use std::time::Duration;

use crate::conflict::{Turn, Waited};
use crate::exit::{ExitStatus, Failure};
use crate::run::RunSettings;
use crate::supervisor::Signals;
use crate::supervisor::machine::Event;

/// Never made: there is no fleet mode in this build.
pub(crate) enum Fleet {}

/// The one line for a build without fleet mode.
pub(crate) fn not_built(what: &str) -> Failure {
    Failure::msg(
        ExitStatus::Unavailable,
        format!(
            "{what} needs fleet mode, which this ralph-supervise was built without; build it with `cargo install --features fleet` (and protoc), or run without fleet mode"
        ),
    )
}

impl Fleet {
    pub(crate) fn for_run(run: &RunSettings) -> Result<Option<Fleet>, Failure> {
        match run.policy.fleet.endpoints {
            None => Ok(None),
            Some(_) => Err(not_built("[fleet] endpoints (or --fleet-endpoints)")),
        }
    }
    pub(crate) fn queue(&mut self, _: &Path, _: &str, _: Duration) -> Result<Turn, Failure> {
        match *self {}
    }
    pub(crate) fn ask_holder_to_stop(&mut self) -> Result<(), Failure> {
        match *self {}
    }
    pub(crate) fn wait_for_turn(
        &mut self,
        _: Option<Duration>,
        _: &Signals,
    ) -> Result<Waited<()>, Failure> {
        match *self {}
    }
    pub(crate) fn holder_now(&mut self) -> String {
        match *self {}
    }
    pub(crate) fn leave_queue(&mut self) {
        match *self {}
    }
    pub(crate) fn worktree_reserver(
        &mut self,
        _: &RunSettings,
    ) -> Result<impl Fn(&str) -> bool + '_, Failure> {
        match *self {}
        #[allow(unreachable_code)]
        Ok(|_: &str| true)
    }
    pub(crate) fn key(&self) -> &str {
        match *self {}
    }
    pub(crate) fn token(&self) -> Option<i64> {
        match *self {}
    }
    pub(crate) fn lost(&self) -> Option<String> {
        match *self {}
    }
    pub(crate) fn side_fd(&self) -> BorrowedFd<'_> {
        match *self {}
    }
    pub(crate) fn supervisor_events(&mut self, _: Duration) -> Vec<Event> {
        match *self {}
    }
    pub(crate) fn release(&mut self) {
        match *self {}
    }
}

/// `status/list --fleet` without fleet mode.
pub(crate) fn show(
    _: &crate::policy::Policy,
    _: Option<&std::path::Path>,
    _: bool,
    _: bool,
) -> Result<ExitStatus, Failure> {
    Err(not_built("--fleet"))
}

/// `stop --fleet` without fleet mode.
pub(crate) fn stop(_: &crate::policy::Policy, _: &str, _: Duration) -> Result<ExitStatus, Failure> {
    Err(not_built("stop --fleet"))
}
