//! `ralph-supervise probe` (hidden): the binary as its own test child.
//!
//! It reports what it inherited — pid, process group, session, open descriptors, signal
//! mask and ignored signals, `RALPH_LOCK_FD`, whether it owns the terminal — prints
//! `ready`, then one line per signal it receives. Tests synchronise on these lines
//! instead of sleeping (like dumb-init's `print_signals`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use signal_hook::consts::signal::*;
use signal_hook::iterator::Signals;

use crate::exit::{ExitStatus, Failure, ResultExt};
use crate::signals;

#[derive(Debug, Clone, Default)]
pub(crate) struct ProbeSettings {
    /// Die by these signals (after printing them, and `cleanup done`).
    pub(crate) exit_on: Vec<i32>,
    /// Exit with this code right after `ready`.
    pub(crate) exit: Option<u8>,
    /// Also write `ready` into this file (for when stdout is not a pipe we read).
    pub(crate) ready_file: Option<PathBuf>,
    /// Print `got LINE` for each line of stdin, `eof` and exit 0 at its end.
    pub(crate) echo_stdin: bool,
    /// Also write the report into this file (for when stdout is not ours to read: a hook).
    pub(crate) report_file: Option<PathBuf>,
    /// Use this much CPU time (ms) in a busy loop before `ready` (accounting tests).
    pub(crate) burn_ms: Option<u64>,
    /// Try to start this many `sleep` processes; print how many started (a limit test).
    pub(crate) spawn: Option<u32>,
    /// Panic right after `ready` (the binary's exit status and output on a panic).
    pub(crate) panic: bool,
    /// Exec this command, nothing else, with `clone3` failing ENOSYS in it and its
    /// descendants (the supervisor's fallback spawn, as under an older container runtime).
    pub(crate) exec_without_clone3: Option<Vec<std::ffi::OsString>>,
}

/// Signals the probe reports (and so catches): the forwarded ones plus a few strays.
const REPORTED: [i32; 10] = [
    SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH, SIGALRM, SIGCONT, SIGPIPE,
];

pub(crate) fn probe(settings: ProbeSettings) -> Result<ExitStatus, Failure> {
    if let Some(command) = &settings.exec_without_clone3 {
        use std::os::unix::process::CommandExt;
        crate::sys::deny_clone3().or_fail("probe: cannot deny clone3")?;
        let (program, args) = command.split_first().ok_or_else(|| {
            Failure::msg(
                ExitStatus::Usage,
                "probe: --exec-without-clone3 needs a command",
            )
        })?;
        let e = std::process::Command::new(program).args(args).exec();
        return Err(e).or_fail(format!("probe: cannot run {}", program.to_string_lossy()));
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    let report = report();
    out.write_all(report.as_bytes()).or_fail("probe: stdout")?;
    if let Some(path) = &settings.report_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &report)
            .and_then(|()| std::fs::rename(&tmp, path))
            .or_fail(format!("probe: cannot write {}", path.display()))?;
    }

    let mut signals = Signals::new(REPORTED).or_fail("probe: cannot catch signals")?;
    if let Some(ms) = settings.burn_ms {
        burn(std::time::Duration::from_millis(ms));
    }
    if let Some(n) = settings.spawn {
        let mut started = Vec::new();
        for _ in 0..n {
            match std::process::Command::new("sleep").arg("30").spawn() {
                Ok(child) => started.push(child),
                Err(e) => {
                    writeln!(out, "spawn failed: {e}").or_fail("probe: stdout")?;
                    break;
                }
            }
        }
        writeln!(out, "spawned {}", started.len()).or_fail("probe: stdout")?;
        for mut child in started {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    writeln!(out, "ready").or_fail("probe: stdout")?;
    out.flush().or_fail("probe: stdout")?;
    drop(out);
    if let Some(path) = &settings.ready_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, "ready\n")
            .and_then(|()| std::fs::rename(&tmp, path))
            .or_fail(format!("probe: cannot write {}", path.display()))?;
    }
    if settings.panic {
        panic!("probe: asked to panic");
    }
    if let Some(code) = settings.exit {
        return Ok(ExitStatus::Child(code));
    }
    if settings.echo_stdin {
        std::thread::spawn(|| {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                println!("got {line}");
            }
            println!("eof");
            std::process::exit(0);
        });
    }
    for sig in signals.forever() {
        println!("signal {}", signals::name(sig));
        if settings.exit_on.contains(&sig) {
            println!("cleanup done");
            signal_hook::low_level::emulate_default_handler(sig)
                .or_fail("probe: cannot die by the signal")?;
            return Ok(ExitStatus::Signaled(sig));
        }
    }
    Ok(ExitStatus::SUCCESS)
}

/// Spins until this process has used `cpu` of CPU time (user and system).
fn burn(cpu: std::time::Duration) {
    use nix::sys::resource::{UsageWho, getrusage};
    let used = || {
        getrusage(UsageWho::RUSAGE_SELF).map_or(std::time::Duration::MAX, |u| {
            let t = |tv: nix::sys::time::TimeVal| {
                std::time::Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000)
            };
            t(u.user_time()) + t(u.system_time())
        })
    };
    let mut x = 0u64;
    while used() < cpu {
        for i in 0..100_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
}

/// The `key value` lines describing what this process inherited.
fn report() -> String {
    let mut lines = Vec::new();
    lines.push(format!("pid {}", std::process::id()));
    lines.push(format!("pgid {}", nix::unistd::getpgrp()));
    if let Ok(sid) = nix::unistd::getsid(None) {
        lines.push(format!("sid {sid}"));
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for (key, name) in [("SigBlk:", "sigblk"), ("SigIgn:", "sigign")] {
        if let Some(v) = status.lines().find_map(|l| l.strip_prefix(key)) {
            lines.push(format!("{name} {}", v.trim()));
        }
    }
    let mut fds: Vec<u32> = std::fs::read_dir("/proc/self/fd")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    fds.sort_unstable();
    // The directory listing had a descriptor of its own, closed by now.
    let fds: Vec<u32> = fds
        .into_iter()
        .filter(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok())
        .collect();
    lines.push(format!(
        "fds {}",
        fds.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
    ));
    for fd in fds.iter().filter(|fd| **fd > 2) {
        if let Ok(target) = std::fs::read_link(format!("/proc/self/fd/{fd}")) {
            lines.push(format!("fd {fd} {}", target.display()));
        }
    }
    if let Ok(v) = std::env::var("RALPH_LOCK_FD") {
        lines.push(format!("lock_fd {v}"));
    }
    if let Ok(v) = std::env::var("RALPH_LOOP_INDEX") {
        lines.push(format!("loop_index {v}"));
    }
    if let Ok(v) = std::env::var("RALPH_FENCING_TOKEN") {
        lines.push(format!("fencing_token {v}"));
    }
    // What a hook is told (`env RALPH_SUPERVISE_LOOP_ID=...`), sorted.
    let mut told: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("RALPH_SUPERVISE_") && k != crate::policy::ENV_POLICY)
        .collect();
    told.sort();
    for (k, v) in told {
        lines.push(format!("env {k}={v}"));
    }
    if let Ok(v) = std::env::var("RALPH_WORKSPACE_ROOT") {
        lines.push(format!("workspace_root {v}"));
    }
    if let Ok(cwd) = std::env::current_dir() {
        lines.push(format!("cwd {}", cwd.display()));
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let fg = nix::unistd::tcgetpgrp(std::io::stdin()).ok();
        lines.push(format!(
            "tty_foreground {}",
            if fg == Some(nix::unistd::getpgrp()) {
                "yes"
            } else {
                "no"
            }
        ));
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}
