//! `.ralph/stop-requested`: what `ralph loops stop` writes to ask a loop to stop.
//!
//! A stale one (left from an earlier loop) is removed before launch; while a loop runs,
//! its appearance is a graceful stop. ralph-supervise writes it too (`stop`, a takeover)
//! when the holder has no live supervisor, so that a ralph holding the lock stops at its
//! next iteration.
//!
//! A live supervisor is asked differently, by [`ask`]: a TERM with a payload
//! (`sigqueue(3)`) that names the signal its command is to get. One message, read in
//! order from the supervisor's signalfd, says both "stop" and "with what": the requested
//! signal reaches the command, and the history names every such stop `stop-request`,
//! whatever else happens at the same moment. (A file plus a plain TERM raced: whichever
//! the supervisor saw first decided the signal and the name.) A supervisor that does not
//! read the payload still stops: it got a TERM.

use std::io;

use nix::unistd::Pid;

use crate::workspace::RalphDir;

pub(crate) const FILE: &str = "stop-requested";

/// Creates the stop request (no symlink followed; an existing one is left as it is).
pub(crate) fn create(dir: &RalphDir) -> io::Result<()> {
    dir.create_if_missing(FILE)
}

/// Removes the stop request; `Ok(false)` when there was none.
pub(crate) fn remove(dir: &RalphDir) -> io::Result<bool> {
    dir.remove(FILE)
}

/// Whether a stop request is there (left in place: a hand-over child such as ralph
/// consumes it itself).
pub(crate) fn present(dir: &RalphDir) -> bool {
    dir.open(FILE, crate::ralph_dir::Access::Read, false)
        .is_ok_and(|f| f.is_some())
}

/// Tags a stop request's payload, so that a stray `sigqueue` is not taken for one.
const TAG: u32 = 0x5253_0000;

/// The signal that carries a stop request to a supervisor.
pub(crate) const CARRIER: i32 = libc::SIGTERM;

/// The payload asking for a stop with `signal` (`None`: the loop's own `stop.signal`).
pub(crate) fn encode(signal: Option<i32>) -> usize {
    (TAG | signal.map_or(0, |s| s as u32 & 0xff)) as usize
}

/// A received signal as a stop request: `Some(signal)` when `signo`, `code` and `value`
/// (the signalfd's `ssi_signo`, `ssi_code`, `ssi_ptr`) are one, `None` otherwise.
pub(crate) fn decode(signo: i32, code: i32, value: u64) -> Option<Option<i32>> {
    if signo != CARRIER || code != crate::sys::SI_QUEUE || value & !0xff != TAG as u64 {
        return None;
    }
    let sig = (value & 0xff) as i32;
    Some((sig != 0).then_some(sig))
}

/// Asks the supervisor `pid` to stop its loop, its command getting `signal` (`None`: the
/// loop's own `stop.signal`); then continues it, as systemd follows `KillSignal=` with
/// CONT: a supervisor stopped with its job (Ctrl-Z at a terminal) acts on the request now
/// instead of when the job is next continued. (To a running one CONT does nothing.)
pub(crate) fn ask(pid: Pid, signal: Option<i32>) -> io::Result<()> {
    crate::sys::sigqueue(pid.as_raw(), CARRIER, encode(signal))?;
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips() {
        for signal in [None, Some(libc::SIGINT), Some(libc::SIGUSR1), Some(64)] {
            let value = encode(signal) as u64;
            assert_eq!(decode(CARRIER, crate::sys::SI_QUEUE, value), Some(signal));
        }
    }

    #[test]
    fn other_signals_are_not_stop_requests() {
        let value = encode(Some(libc::SIGINT)) as u64;
        // A plain TERM (kill(2)), another signal, or somebody else's payload.
        assert_eq!(decode(CARRIER, libc::SI_USER, value), None);
        assert_eq!(decode(libc::SIGUSR1, crate::sys::SI_QUEUE, value), None);
        assert_eq!(decode(CARRIER, crate::sys::SI_QUEUE, 7), None);
        assert_eq!(decode(CARRIER, crate::sys::SI_QUEUE, 0x1234_0002), None);
    }
}
