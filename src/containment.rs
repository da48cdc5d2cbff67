//! Every process the loop starts ends with it: the containment of the command's
//! process tree, in one of two modes ([`Mode`]), behind one narrow interface the
//! supervisor calls (set up, place the child, signal everything, is anything left,
//! freeze, account, clean up).
//!
//! * **cgroup**: the command runs in a cgroup v2 of its own ([`crate::cgroup`]). Exact:
//!   every process it starts is in it whatever its process group or session, KILL is
//!   one write (`cgroup.kill`, which also catches a fork racing it), emptiness is told
//!   by `cgroup.events` (`POLLPRI`, no polling), Ctrl-Z freezes it, limits apply and
//!   the kernel accounts CPU (and memory and processes with their controllers). A
//!   process running as root can still move itself out of it.
//! * **tree**: ralph-supervise is a child subreaper, so the command's descendants stay
//!   its descendants even when their parent dies (`setsid`, double forks). They are
//!   found in `/proc` (started no earlier than the first command, so nothing the
//!   supervisor started before, like an `on_start` hook's leftovers, is taken for
//!   them), and each is confirmed by its start time through a pidfd before it is
//!   signalled, so a reused pid is never hit. The tree is empty once the subreaper has
//!   no live descendant; every death that matters for that reaches it as SIGCHLD.
//!   macOS has no subreaper and no `/proc`: there the tree mode reaches the command's
//!   process group only (FreeBSD likewise, for now), as before containment existed.
//!
//! With `stop.orphans = "leave"`, stops and the end of a run reach the command's process
//! group only, as before; what is left runs on (in its cgroup, which is then left in
//! place and removed by a later run once empty).

use std::fmt;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, getpgid};
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::cgroup::{self, Cgroup, Hierarchy};
use crate::exit::{ExitStatus, Failure};
use crate::limits::{Cpu, Memory, Pids};
use crate::procfs;
use crate::sys::{ProcessHandle, Rusage};

/// How the loop's processes are kept track of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    Cgroup,
    Tree,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Cgroup => "cgroup",
            Mode::Tree => "tree",
        })
    }
}

crate::setting::keywords! {
    Orphans "What happens to the processes the command started that are still running after it exits." {
        Kill = "kill", "The stop signal, then KILL after `grace`, to every one of them, whatever its process group or session.";
        Leave = "leave", "Leave them running (a stop then reaches the command's process group only).";
    }
    ContainmentMode "How the processes the command starts are kept track of." {
        Auto = "auto", "A cgroup where cgroup v2 is writable, else the process tree.";
        Cgroup = "cgroup", "A cgroup of the loop's own; exit 125 when none can be made.";
        Tree = "tree", "The process tree: the supervisor is a subreaper and finds every descendant in /proc.";
    }
}

/// What a run used, for the history and `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Accounting {
    pub(crate) user_us: u64,
    pub(crate) system_us: u64,
    pub(crate) memory_peak: Option<u64>,
    /// Where `memory_peak` came from: the cgroup's `memory.peak` (all processes
    /// together), or the largest single process (`rusage`).
    pub(crate) memory_peak_cgroup: bool,
    /// Most processes at once (`pids.peak`), with the pids controller.
    pub(crate) processes_peak: Option<u64>,
}

/// What a running loop's processes use now (`status`): CPU time so far (of the
/// processes alive and those reaped), memory in use and the processes alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Live {
    pub(crate) cpu_ms: u64,
    /// The cgroup's `memory.current` (with the memory controller), else the sum of
    /// the resident memory of the processes alive (the cgroup's or the tree's).
    pub(crate) memory_bytes: Option<u64>,
    pub(crate) processes: usize,
}

/// The live figures of the loop `meta` describes, read from its cgroup or its
/// supervisor's process tree; `None` when its supervisor is not running here (gone,
/// or in another pid namespace) or the metadata names no containment.
pub(crate) fn live(meta: &crate::metadata::Metadata) -> Option<Live> {
    let supervisor = meta.supervisor_pid?;
    if meta
        .pid_namespace
        .is_some_and(|ns| Some(ns) != procfs::pid_namespace())
        || !procfs::alive(supervisor, meta.supervisor_start_time)
    {
        return None;
    }
    match meta.contained.containment.as_deref()? {
        "cgroup" => {
            let (usage, members) = cgroup::usage_at(meta.contained.cgroup.as_deref()?)?;
            Some(Live {
                cpu_ms: (usage.user_us + usage.system_us) / 1000,
                memory_bytes: (usage.memory_now)
                    .or_else(|| procfs::processes(&members).as_deref().map(resident)),
                processes: members.len(),
            })
        }
        _ => {
            let members = procfs::descendants(supervisor, 0)?;
            Some(Live {
                cpu_ms: procfs::tree_cpu(supervisor).as_millis() as u64,
                memory_bytes: Some(resident(&members)),
                processes: members.len(),
            })
        }
    }
}

/// The resident memory of `members` together, in bytes.
fn resident(members: &[procfs::Descendant]) -> u64 {
    members.iter().map(|d| d.rss).sum()
}

/// The cgroup of the loop `meta` records, once its supervisor is gone (SIGKILLed): the
/// loop's processes are in it and nowhere else, so `stop` and a takeover end them there.
/// Only a cgroup named after that very supervisor (its pid and start time) counts.
pub(crate) fn orphaned_cgroup(meta: &crate::metadata::Metadata) -> Option<PathBuf> {
    let path = meta.contained.cgroup.as_ref()?;
    let (pid, start) = (meta.supervisor_pid?, meta.supervisor_start_time?);
    let name = path.file_name()?.to_str()?;
    let ours = name.starts_with(&format!("{}{pid}-{start}-", cgroup::PREFIX));
    let populated = || Cgroup::open(path.clone()).is_ok_and(|c| c.populated());
    (ours && !procfs::alive(pid, Some(start)) && populated()).then(|| path.clone())
}

/// `sig` to every process in the orphaned loop's cgroup at `path` ([`orphaned_cgroup`]):
/// KILL in one step (`cgroup.kill`), another signal to each member through a process
/// handle opened before its membership is checked again (a reused pid is not hit).
pub(crate) fn signal_orphaned(path: &std::path::Path, sig: i32) {
    let Ok(group) = Cgroup::open(path.to_path_buf()) else {
        return;
    };
    if sig == libc::SIGKILL {
        if let Err(e) = group.kill() {
            warn!("cannot kill the processes of {}: {e}", path.display());
        }
        return;
    }
    let Ok(hierarchy) = Hierarchy::locate() else {
        return;
    };
    for pid in group.procs() {
        let Ok(process) = ProcessHandle::open(pid as i32) else {
            continue; // gone
        };
        if group.holds(pid, &hierarchy.mount) {
            let _ = process.signal(sig);
        }
    }
}

/// The containment of one supervisor's loop (over all its runs).
pub(crate) struct Containment {
    mode: Mode,
    kill_orphans: bool,
    /// `stop.containment = "cgroup"`: no cgroup is exit 125.
    cgroup_required: bool,
    /// The cgroup is to be made by [`Containment::ready`].
    pending: bool,
    hierarchy: Option<Hierarchy>,
    cgroup: Option<Cgroup>,
    /// Start time of the first command: tree members started no earlier.
    since: Option<u64>,
    /// The current command's process group.
    pgid: Option<Pid>,
    /// Processes outside the command's group stopped for Ctrl-Z (tree mode).
    stopped: Vec<ProcessHandle>,
    /// The cgroup was frozen (Ctrl-Z) and not thawed since.
    frozen: bool,
    /// What the reaped processes used.
    reaped: Rusage,
    /// The first start's tidying is done ([`Containment::spawned`]).
    tidied: bool,
}

/// `[limits]`: the loop's most memory, processes and CPU.
pub(crate) type LimitSettings = (Option<Memory>, Option<Pids>, Option<Cpu>);

/// The controllers a limit needs, with the cgroup file and its value.
fn limit_files(limits: LimitSettings) -> Vec<(&'static str, &'static str, String)> {
    let (memory, pids, cpu) = limits;
    let mut files = Vec::new();
    if let Some(m) = memory {
        files.push(("memory", "memory.max", m.cgroup_value(physical_memory())));
    }
    if let Some(p) = pids {
        files.push(("pids", "pids.max", p.cgroup_value()));
    }
    if let Some(c) = cpu {
        files.push(("cpu", "cpu.max", c.cgroup_value()));
    }
    files
}

/// The machine's memory in bytes (`MemTotal` of `/proc/meminfo`; cgroups are Linux's).
fn physical_memory() -> u64 {
    let meminfo = crate::sys::read_text("/proc/meminfo").unwrap_or_default();
    let kib = meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
    });
    kib.unwrap_or(0) * 1024
}

impl Containment {
    /// Chooses the mode (`stop.containment`) and applies the limits. A cgroup that
    /// cannot be made is one line and the tree mode (`auto`), or exit 125 (`cgroup`); a
    /// limit that cannot be applied is one warning line, or exit 125 with
    /// `limits.required`. Without limits the cgroup is made by [`Containment::ready`],
    /// once the run is going to happen, so that a run refused at once (`--on-conflict
    /// fail`) makes none and looks for none; only `stop.containment = "cgroup"` checks
    /// here that one can be made (the hierarchy found, our cgroup writable).
    pub(crate) fn set_up(
        orphans: Orphans,
        wanted: ContainmentMode,
        limits: LimitSettings,
        required: bool,
    ) -> Result<Containment, Failure> {
        let limits = limit_files(limits);
        let mut this = Containment {
            mode: Mode::Tree,
            kill_orphans: orphans == Orphans::Kill,
            cgroup_required: wanted == ContainmentMode::Cgroup,
            pending: false,
            hierarchy: None,
            cgroup: None,
            since: None,
            pgid: None,
            stopped: Vec::new(),
            frozen: false,
            reaped: Rusage::default(),
            tidied: false,
        };
        let why_not = match wanted {
            ContainmentMode::Tree => Some("stop.containment is \"tree\"".to_string()),
            // No limits: nothing to refuse up front but a cgroup that `cgroup` requires
            // and that cannot be (our cgroup not writable); `ready` does the rest.
            ContainmentMode::Auto if limits.is_empty() => {
                this.pending = true;
                None
            }
            ContainmentMode::Cgroup if limits.is_empty() => {
                match usable_hierarchy() {
                    Ok(h) => this.hierarchy = Some(h),
                    // (Exit 125: `cgroup` is required here.)
                    Err(why) => drop(this.no_cgroup(why)?),
                }
                this.pending = true;
                None
            }
            ContainmentMode::Auto | ContainmentMode::Cgroup => match make_cgroup() {
                Ok((hierarchy, cgroup)) => {
                    this.mode = Mode::Cgroup;
                    this.hierarchy = Some(hierarchy);
                    this.cgroup = Some(cgroup);
                    None
                }
                Err(why) => Some(this.no_cgroup(why)?),
            },
        };
        if limits.is_empty() {
            return Ok(this);
        }
        if let Some(c) = &this.cgroup {
            debug!(cgroup = %c.path.display(), "the loop's cgroup");
        }
        let unapplied = match (&this.hierarchy, &this.cgroup, why_not) {
            (Some(h), Some(c), _) => apply_limits(h, c, &limits),
            (_, _, why) => {
                let names: Vec<&str> = limits.iter().map(|(c, _, _)| *c).collect();
                Some((names, why.unwrap_or_default()))
            }
        };
        if let Some((controllers, why)) = unapplied {
            let missing = match controllers.as_slice() {
                [one] => format!("{one} controller"),
                [many @ .., last] => format!("{} or {last} controller", many.join(", ")),
                [] => "controller".to_string(),
            };
            if required {
                this.finish();
                return Err(Failure::msg(
                    ExitStatus::Failure,
                    format!(
                        "limits cannot be applied: no {missing} for the loop ({why}) and limits.required is true; run where cgroup v2 has it (a systemd service with Delegate=yes), or set limits.required = false"
                    ),
                ));
            }
            warn!("limits not applied: no {missing} for the loop ({why})");
        }
        this.enable_for_accounting();
        Ok(this)
    }

    /// Makes the loop's cgroup where [`Containment::set_up`] only checked that one can be
    /// made: called once the run is going to happen (the lock taken, or before a wait
    /// for it, so that the hand-off does not pay for it). A cgroup that cannot be made
    /// after all is the tree mode (`auto`) or exit 125 (`cgroup`), as in `set_up`.
    pub(crate) fn ready(&mut self) -> Result<(), Failure> {
        if !std::mem::take(&mut self.pending) {
            return Ok(());
        }
        let found = match self.hierarchy.take() {
            Some(h) => Ok(h),
            None => usable_hierarchy(),
        };
        match found.and_then(|h| create_below(&h).map(|c| (h, c))) {
            Ok((h, c)) => {
                debug!(cgroup = %c.path.display(), "the loop's cgroup");
                self.mode = Mode::Cgroup;
                self.hierarchy = Some(h);
                self.cgroup = Some(c);
                self.enable_for_accounting();
            }
            Err(why) => {
                self.no_cgroup(why)?;
            }
        }
        Ok(())
    }

    /// No cgroup for the loop, because `why`: exit 125 with `stop.containment =
    /// "cgroup"`, else one line (where cgroup v2 exists but is not ours to write; quiet
    /// where there is none at all: macOS, FreeBSD, cgroup v1 only) and `why` back.
    fn no_cgroup(&self, why: String) -> Result<String, Failure> {
        if self.cgroup_required {
            return Err(Failure::msg(
                ExitStatus::Failure,
                format!(
                    "stop.containment is \"cgroup\", but {why}; run as root or in a delegated cgroup (systemd's Delegate=yes, systemd-run --user --scope), or use --containment tree"
                ),
            ));
        }
        if Hierarchy::locate().is_ok() {
            info!("no cgroup for the loop ({why}): containing its process tree instead");
        } else {
            debug!("no cgroup for the loop ({why}): containing its process tree");
        }
        Ok(why)
    }

    /// With a cgroup below a cgroup of our own (not the root), turns on the memory and
    /// pids controllers it offers, for `memory.peak` and `pids.peak`; quietly. (The
    /// files they bring are opened once the command runs: [`Containment::spawned`].)
    fn enable_for_accounting(&self) {
        let (Some(h), Some(_)) = (&self.hierarchy, &self.cgroup) else {
            return;
        };
        if h.own_path == "/" {
            return;
        }
        let available = h.available();
        let wanted: Vec<&str> = ["memory", "pids"]
            .into_iter()
            .filter(|c| available.iter().any(|a| a == c))
            .collect();
        if let Err(why) = h.enable(&wanted, &self_leaf()) {
            debug!("no memory or pids accounting by cgroup: {why}");
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// The loop's cgroup directory, in cgroup mode.
    pub(crate) fn cgroup_path(&self) -> Option<PathBuf> {
        self.cgroup.as_ref().map(|c| c.path.clone())
    }

    /// Where the child goes (cgroup mode): the cgroup's directory, to start it there
    /// (`clone3`), and its `cgroup.procs`, which the child writes `0` to before `exec`
    /// where that cannot be done.
    pub(crate) fn placement(&self) -> Option<crate::sys::Placement> {
        self.cgroup.as_ref().map(|c| crate::sys::Placement {
            dir: c.dir_fd(),
            procs: c.procs_fd(),
        })
    }

    /// `cgroup.events`, to `poll` for `POLLPRI` (cgroup mode): a change of `populated`.
    pub(crate) fn events(&self) -> Option<BorrowedFd<'_>> {
        self.cgroup.as_ref().map(Cgroup::events)
    }

    /// The command was started as `pid` (its own process group), at `start` (its start
    /// time, when the caller has read it already).
    pub(crate) fn spawned(&mut self, pid: u32, start: Option<u64>) {
        self.pgid = Some(Pid::from_raw(pid as i32));
        // The command's arrival made the cgroup populated: reading `cgroup.events` now
        // takes that change, so that the first `poll` sleeps until the next one.
        self.rearm();
        if self.since.is_none() {
            self.since = start.or_else(|| procfs::start_time(pid));
        }
        // After the first start, while the command execs (off the launch's path): the
        // files the run's accounting reads at its end opened, so that the end, on the
        // hand-off's path, only reads them; and empty cgroups of earlier runs removed.
        if let (Some(h), Some(c), false) = (&self.hierarchy, &mut self.cgroup, self.tidied) {
            self.tidied = true;
            c.open_accounting();
            remove_stale(h);
        }
    }

    /// A process of the tree was reaped, having used `usage`.
    pub(crate) fn reaped(&mut self, usage: Rusage) {
        self.reaped.user_us += usage.user_us;
        self.reaped.system_us += usage.system_us;
        self.reaped.max_rss = self.reaped.max_rss.max(usage.max_rss);
    }

    /// The tree's live members (tree mode, where `/proc` lists them).
    fn members(&self) -> Option<Vec<procfs::Descendant>> {
        let since = self.since?;
        procfs::descendants(std::process::id(), since)
    }

    /// Whether any process of the loop is left (with `orphans = "leave"`: of the
    /// command's process group).
    pub(crate) fn alive(&self) -> bool {
        if !self.kill_orphans {
            return self.pgid.is_some_and(group_alive);
        }
        if let Some(c) = &self.cgroup {
            return c.populated();
        }
        // The subreaper's tree is empty exactly when it has no live child (a
        // descendant whose parent dies becomes its child): while a child of the
        // command's is alive, a look at its own children answers. (An empty list, or
        // a child from before the command — a hook's leftover — is confirmed by the
        // whole scan: the list is a snapshot that may miss a child exiting meanwhile.)
        if no_children() {
            return false;
        }
        if let (Some(since), Some(children)) = (self.since, procfs::own_children())
            && children.iter().any(|(_, start)| *start >= since)
        {
            return true;
        }
        match self.members() {
            Some(members) => !members.is_empty(),
            None => self.pgid.is_some_and(group_alive),
        }
    }

    /// Reads `cgroup.events` after `poll` reported a change, which re-arms it.
    pub(crate) fn rearm(&self) {
        if let Some(c) = &self.cgroup {
            c.populated();
        }
    }

    /// The pids left, to name those that could not be ended.
    pub(crate) fn left(&self) -> Vec<u32> {
        if let Some(c) = &self.cgroup {
            return c.procs();
        }
        self.members()
            .map(|m| m.iter().map(|d| d.pid).collect())
            .unwrap_or_default()
    }

    /// Sends `sig` to every process of the loop: the whole cgroup or tree (a KILL to a
    /// cgroup is `cgroup.kill`), each confirmed before the signal; with `orphans =
    /// "leave"` (or where no tree can be listed), the command's process group.
    pub(crate) fn signal_all(&mut self, sig: i32) {
        if !self.kill_orphans {
            self.signal_group(sig);
            return;
        }
        if let Some(c) = &self.cgroup {
            if sig == libc::SIGKILL && c.kill().is_ok() {
                debug!("cgroup.kill");
                return;
            }
            // The command's own group first, in one call (it is what a stop signal is
            // mostly for, and the look at each member below takes a while); then every
            // member of another group, each once.
            self.signal_group(sig);
            let group = self.pgid;
            let mount = self.hierarchy.as_ref().map(|h| h.mount.clone());
            let mut sent = 0;
            for pid in c.procs() {
                let in_group =
                    group.is_some_and(|g| getpgid(Some(Pid::from_raw(pid as i32))) == Ok(g));
                // The handle first, then the check: the handle names the process that
                // was in the cgroup when we looked, or none.
                if !in_group
                    && let Ok(h) = ProcessHandle::open(pid as i32)
                    && mount.as_deref().is_some_and(|m| c.holds(pid, m))
                    && h.signal(sig).is_ok()
                {
                    sent += 1;
                }
            }
            debug!(signal = sig, sent, "signalled the cgroup");
            return;
        }
        // KILL: sweep again until a sweep finds nobody new (a process forked before its
        // parent got KILL shows up in the next one; once KILL is pending, a fork fails).
        let rounds = if sig == libc::SIGKILL { 20 } else { 1 };
        let mut seen = std::collections::HashSet::new();
        // The command's own group first, in one call (see above); the sweeps below then
        // leave its members alone.
        self.signal_group(sig);
        let group = self.pgid.map(Pid::as_raw);
        for _ in 0..rounds {
            let Some(members) = self.members() else {
                return;
            };
            // (KILL goes to the group's members again: one forked after the killpg
            // above is caught here; a second KILL harms nobody, a second TERM might.)
            let new: Vec<_> = (members.iter())
                .filter(|d| (sig == libc::SIGKILL || Some(d.pgid) != group) && seen.insert(d.pid))
                .collect();
            if new.is_empty() {
                break;
            }
            let sent = (new.iter())
                .filter(|d| confirmed(d).is_some_and(|h| h.signal(sig).is_ok()))
                .count();
            debug!(signal = sig, sent, "signalled the process tree");
        }
    }

    fn signal_group(&self, sig: i32) {
        if let (Some(pgid), Ok(sig)) = (self.pgid, Signal::try_from(sig)) {
            let _ = killpg(pgid, sig);
        }
    }

    /// The job was stopped (Ctrl-Z): freeze the cgroup, or stop the tree's processes
    /// outside the command's process group (the terminal stopped that).
    pub(crate) fn freeze(&mut self) {
        if let Some(c) = &self.cgroup {
            self.frozen = true;
            if let Err(e) = c.freeze(true) {
                debug!("cannot freeze the cgroup: {e}");
            }
            return;
        }
        for d in self.members().unwrap_or_default() {
            if Some(d.pgid) == self.pgid.map(Pid::as_raw) {
                continue;
            }
            if let Some(h) = confirmed(&d)
                && h.signal(libc::SIGSTOP).is_ok()
            {
                self.stopped.push(h);
            }
        }
    }

    /// The job goes on: thaw the cgroup, continue what [`Containment::freeze`] stopped.
    pub(crate) fn thaw(&mut self) {
        if let Some(c) = &self.cgroup
            && std::mem::take(&mut self.frozen)
        {
            let _ = c.freeze(false);
        }
        for h in self.stopped.drain(..) {
            let _ = h.signal(libc::SIGCONT);
        }
    }

    /// What the loop used so far.
    pub(crate) fn accounting(&self) -> Accounting {
        let from_rusage = Accounting {
            user_us: self.reaped.user_us,
            system_us: self.reaped.system_us,
            memory_peak: Some(self.reaped.max_rss).filter(|b| *b > 0),
            memory_peak_cgroup: false,
            processes_peak: None,
        };
        let Some(c) = &self.cgroup else {
            return from_rusage;
        };
        let u = c.usage();
        Accounting {
            user_us: u.user_us,
            system_us: u.system_us,
            memory_peak: u.memory_peak.or(from_rusage.memory_peak),
            memory_peak_cgroup: u.memory_peak.is_some(),
            processes_peak: u.pids_peak,
        }
    }

    /// The end: the cgroup is removed once empty; one left populated (`orphans =
    /// "leave"`) stays, for a later run to remove once its processes are gone.
    pub(crate) fn finish(&mut self) {
        self.thaw();
        let Some(c) = self.cgroup.take() else {
            return;
        };
        if c.populated() {
            info!(
                "processes left running in cgroup {} ({} in it)",
                c.path.display(),
                c.procs().len()
            );
            return;
        }
        if let Err(e) = c.remove() {
            warn!("cannot remove cgroup {}: {e}", c.path.display());
        }
    }
}

impl Drop for Containment {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A handle on `d`, once it is confirmed to be the process seen (same start time).
fn confirmed(d: &procfs::Descendant) -> Option<ProcessHandle> {
    let h = ProcessHandle::open(d.pid as i32).ok()?;
    (procfs::start_time(d.pid) == Some(d.start_time)).then_some(h)
}

/// This process has no child at all, not even an unreaped one: the kernel's own word
/// (`waitid` fails with ECHILD), so the subreaper's tree is certainly empty.
#[cfg(target_os = "linux")]
fn no_children() -> bool {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    matches!(waitid(Id::All, flags), Err(Errno::ECHILD))
}

#[cfg(not(target_os = "linux"))]
fn no_children() -> bool {
    false
}

fn group_alive(pgid: Pid) -> bool {
    !matches!(killpg(pgid, None), Err(Errno::ESRCH))
}

/// The name of the loop's cgroup: this supervisor's pid, start time and pid namespace.
fn own_name() -> String {
    let me = std::process::id();
    let start = procfs::own_start_time().unwrap_or(0);
    cgroup::name_for(me, start, procfs::pid_namespace().unwrap_or(0))
}

fn self_leaf() -> String {
    format!("{}-self", own_name())
}

/// The loop's cgroup below ours.
fn make_cgroup() -> Result<(Hierarchy, Cgroup), String> {
    let h = usable_hierarchy()?;
    let c = create_below(&h)?;
    Ok((h, c))
}

/// The hierarchy, where our cgroup is ours to make the loop's below.
fn usable_hierarchy() -> Result<Hierarchy, String> {
    let h = Hierarchy::locate()?;
    // Moving the command into a cgroup below ours needs write access to ours.
    if let Err(e) = std::fs::OpenOptions::new()
        .write(true)
        .open(h.own.join("cgroup.procs"))
    {
        return Err(format!("{} is not writable ({e})", h.own.display()));
    }
    Ok(h)
}

/// Makes the loop's cgroup below ours. Stale ones of earlier runs are removed once the
/// command runs ([`Containment::spawned`]), or first when the `mkdir` fails (they may
/// be what fills `cgroup.max.descendants`).
fn create_below(h: &Hierarchy) -> Result<Cgroup, String> {
    let name = own_name();
    let made = h.create(&name).or_else(|_| {
        remove_stale(h);
        h.create(&name)
    });
    made.map_err(|e| format!("cannot make {}: {e}", h.own.join(&name).display()))
}

fn remove_stale(h: &Hierarchy) {
    let removed = h.remove_stale();
    if removed > 0 {
        debug!(removed, "removed empty cgroups of earlier runs");
    }
}

/// Enables the limits' controllers and writes the limits; `Some((missing, why))` for
/// those that could not be applied.
fn apply_limits(
    h: &Hierarchy,
    c: &Cgroup,
    limits: &[(&'static str, &'static str, String)],
) -> Option<(Vec<&'static str>, String)> {
    let available = h.available();
    let (have, missing): (Vec<_>, Vec<_>) = limits
        .iter()
        .partition(|(ctl, _, _)| available.iter().any(|a| a == ctl));
    let mut failed: Vec<&'static str> = missing.iter().map(|(c, _, _)| *c).collect();
    let mut why = match failed.is_empty() {
        true => String::new(),
        false => format!(
            "cgroup {} offers only: {}",
            h.own_path,
            if available.is_empty() {
                "none".to_string()
            } else {
                available.join(" ")
            }
        ),
    };
    let controllers: Vec<&str> = have.iter().map(|(c, _, _)| *c).collect();
    if !controllers.is_empty() {
        if let Err(e) = h.enable(&controllers, &self_leaf()) {
            failed.extend(controllers);
            why = e;
        } else {
            for (ctl, file, value) in have {
                if let Err(e) = c.set(file, value) {
                    failed.push(ctl);
                    why = format!("cannot write {value:?} to {file}: {e}");
                }
            }
        }
    }
    (!failed.is_empty()).then_some((failed, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `status`'s figures for a cgroup without the memory controller (no
    /// `memory.current`): the resident memory of its processes, as in tree mode. The
    /// cgroup is a stand-in directory with the files such a cgroup has, listing this
    /// process, so this runs without a writable cgroup v2 (the real one is
    /// `tests/it/containment.rs`'s `status_shows_the_memory_of_a_loop_in_its_cgroup`).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_cgroup_without_the_memory_controller_reports_resident_memory() {
        let group = tempfile::tempdir().unwrap();
        let me = std::process::id();
        std::fs::write(
            group.path().join("cpu.stat"),
            "usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\n",
        )
        .unwrap();
        std::fs::write(group.path().join("cgroup.procs"), format!("{me}\n")).unwrap();
        let meta = crate::metadata::Metadata::parse(
            serde_json::json!({
                "pid": me,
                "started": "2026-01-02T03:04:05Z",
                "prompt": "p",
                "supervisor_pid": me,
                "supervisor_start_time": procfs::start_time(me),
                "containment": "cgroup",
                "cgroup": group.path(),
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
        .unwrap();
        let now = live(&meta).unwrap();
        assert_eq!((now.cpu_ms, now.processes), (3, 1));
        let ours = procfs::processes(&[me]).unwrap()[0].rss;
        let memory = now
            .memory_bytes
            .expect("resident memory without memory.current");
        // Our resident set, read twice: allocations between the reads move it a little.
        assert!(
            ours > 0 && memory.abs_diff(ours) < 64 << 20,
            "{memory} vs {ours}"
        );
        // With the memory controller, its figure.
        std::fs::write(group.path().join("memory.current"), "12345\n").unwrap();
        assert_eq!(live(&meta).unwrap().memory_bytes, Some(12345));
    }
}
