//! Signal names and the supervisor's signal classes.
//!
//! The supervisor sorts every signal it can receive into one class: forwarded, job
//! control, child status, or ignored with a warning; and every signal it sends into a
//! [`Scope`]: the child alone, or the child's whole process group. Keeping the classes
//! here (and not spread over the event loop) is what lets the state machine be tested
//! without processes.

use nix::sys::signal::Signal;

use crate::setting::Text;

/// Signals forwarded to the child (each to its [`scope`]), as `DESIGN.md` lists them.
pub(crate) const FORWARDED: [Signal; 7] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Synchronous fault signals: never blocked or caught (blocking them does not stop the
/// kernel from killing the process, and catching them hides real crashes).
pub(crate) const FAULTS: [Signal; 6] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGTRAP,
    Signal::SIGSYS,
];

/// How the supervisor treats a signal sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Forward to the child (to its [`scope`]); `stop` says whether it also begins a stop.
    Forward { stop: bool },
    /// TSTP, TTIN, TTOU: pass to the child's group (it stops, then so do we).
    JobStop,
    /// CONT: hand the terminal back and continue the child.
    Continue,
    /// CHLD: reap.
    Child,
    /// Anything else catchable: logged and ignored, never fatal.
    Ignore,
}

/// Who gets a signal meant for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The child alone. USR1 and USR2 mean what the loop's main process defines; the
    /// helpers it runs in its group (`sleep`, a compiler, a test runner) do not handle
    /// them, and their default action kills (tini's default, without `-g`).
    Child,
    /// The child's whole process group, as a terminal sends its signals: HUP, INT, QUIT,
    /// TERM, WINCH, job control, KILL, and anything else.
    Group,
}

/// Where `sig` goes when the supervisor forwards it or stops the loop with it.
pub(crate) fn scope(sig: i32) -> Scope {
    match Signal::try_from(sig) {
        Ok(Signal::SIGUSR1 | Signal::SIGUSR2) => Scope::Child,
        _ => Scope::Group,
    }
}

pub(crate) fn classify(sig: i32) -> Class {
    match Signal::try_from(sig) {
        Ok(Signal::SIGINT | Signal::SIGTERM) => Class::Forward { stop: true },
        Ok(s) if FORWARDED.contains(&s) => Class::Forward { stop: false },
        Ok(Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU) => Class::JobStop,
        Ok(Signal::SIGCONT) => Class::Continue,
        Ok(Signal::SIGCHLD) => Class::Child,
        _ => Class::Ignore,
    }
}

/// `SIGTERM`-style name of a signal number (`SIGRT+3` style for real-time signals).
pub(crate) fn name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => match crate::sys::realtime_min() {
            Some(rtmin) if sig >= rtmin => format!("SIGRTMIN+{}", sig - rtmin),
            _ => format!("signal {sig}"),
        },
    }
}

/// How a signal setting (`[stop] signal`) is written.
pub(crate) const SIGNAL: &str = "use a name like \"TERM\" or \"SIGTERM\", or a number like 15";
/// A signal setting, a name or a number, as its number.
pub(crate) fn setting(text: Text) -> Result<i32, String> {
    let (parsed, what) = match &text {
        Text::Str(name) => (parse(name), format!("{name:?} is not a signal")),
        Text::Int(n) => (parse(&n.to_string()), format!("{n} is not a signal number")),
    };
    parsed
        .map(|s| s as i32)
        .map_err(|_| format!("{what}; {SIGNAL}"))
}

/// Parses `TERM`, `SIGTERM`, `term` or `15`.
pub(crate) fn parse(text: &str) -> Result<Signal, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("{n} is not a signal number"));
    }
    let upper = t.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<Signal>().map_err(|_| {
        format!("unknown signal \"{t}\" (use a name like TERM or SIGTERM, or a number like 15)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_numbers() {
        for text in ["TERM", "SIGTERM", "term", "15", " SIGterm "] {
            assert_eq!(parse(text), Ok(Signal::SIGTERM), "{text}");
        }
        assert_eq!(parse("HUP"), Ok(Signal::SIGHUP));
        assert!(parse("NOPE").is_err());
        assert!(parse("0").is_err());
        assert!(parse("99").is_err());
    }

    #[test]
    fn classes() {
        assert_eq!(classify(libc::SIGTERM), Class::Forward { stop: true });
        assert_eq!(classify(libc::SIGINT), Class::Forward { stop: true });
        for sig in [
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGWINCH,
        ] {
            assert_eq!(classify(sig), Class::Forward { stop: false });
        }
        assert_eq!(classify(libc::SIGTSTP), Class::JobStop);
        assert_eq!(classify(libc::SIGCONT), Class::Continue);
        assert_eq!(classify(libc::SIGCHLD), Class::Child);
        assert_eq!(classify(libc::SIGALRM), Class::Ignore);
        assert_eq!(classify(libc::SIGRTMIN() + 2), Class::Ignore);
    }

    #[test]
    fn scopes() {
        for sig in [libc::SIGUSR1, libc::SIGUSR2] {
            assert_eq!(scope(sig), Scope::Child, "{}", name(sig));
        }
        for sig in [
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGTERM,
            libc::SIGWINCH,
            libc::SIGTSTP,
            libc::SIGCONT,
            libc::SIGKILL,
        ] {
            assert_eq!(scope(sig), Scope::Group, "{}", name(sig));
        }
    }

    #[test]
    fn names() {
        assert_eq!(name(libc::SIGTERM), "SIGTERM");
        assert_eq!(name(libc::SIGRTMIN() + 3), "SIGRTMIN+3");
    }
}
