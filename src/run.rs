//! `ralph-supervise run`: take the workspace, run the command, give the workspace back.
//!
//! This is the one place that walks a run from start to end; each step's details live
//! in its own module. Read [`run`] top to bottom:
//!
//! 1. signals: blocked and read from a signalfd before anything else ([`Signals`]);
//!    then what the run holds besides the lock: the loop's containment (a cgroup, or
//!    the subreaper's tree, and its limits: [`Containment`]), whether the lock is
//!    handed over to the child ([`crate::handover`]), and in fleet mode etcd ([`Fleet`]);
//! 2. workspace: its `.ralph/` opened once ([`RalphDir`]);
//! 3. lock or conflict: [`conflict::acquire`] answers run here, run in a new worktree,
//!    or exit (in fleet mode after the fleet lock, by the same policy);
//! 4. spawn: metadata written, `hooks.on_start` run ([`hooks`]), the child started with
//!    the locked descriptor inherited;
//! 5. supervise: signals, stop requests, restarts, max runtime ([`supervisor`]);
//! 6. release: history record, then the lock freed; for a worktree, `worktree.on_exit`;
//!    last, `hooks.on_exit`, told how the run ended.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use tracing::{debug, error, info, warn};

use crate::child_env;
use crate::conflict::{self, Moment, Next, OnConflict};
use crate::containment::{Containment, Orphans};
use crate::exit::{ChildOutcome, ExitStatus, Failure, ResultExt};
use crate::fleet::Fleet;
use crate::history;
use crate::hooks;
use crate::lock::{self, Acquire, LockFile};
use crate::metadata::{Metadata, Mode, format_time, truncate_prompt};
use crate::policy::Policy;
use crate::procfs;
use crate::supervisor::machine::{self, Decision, Machine, StopReason, Verdict};
use crate::supervisor::{self, Change, Child, Hooks, Signals};
use crate::terminal::Terminal;
use crate::workspace::RalphDir;
use crate::worktree::{self, Created};
use crate::{signals, stop_request};

/// Everything `run` needs, resolved from flags and the policy file.
#[derive(Debug, Clone)]
pub(crate) struct RunSettings {
    pub(crate) workspace: PathBuf,
    pub(crate) command: Vec<OsString>,
    /// Task text for the metadata, the history and a worktree's context: `--prompt`, or
    /// the command line when not given ([`RunSettings::task`]).
    pub(crate) prompt: String,
    /// The effective policy (flags over file over defaults).
    pub(crate) policy: Policy,
    /// The conflict policy that applies here (auto resolved).
    pub(crate) on_conflict: OnConflict,
    /// The git top-level of the workspace, found once; `None` outside a git repository.
    pub(crate) repo: Option<PathBuf>,
    /// The workspace was named with `-C`: a primary child works in it. (Without `-C`
    /// the child keeps the user's current directory, which may be below the workspace.)
    pub(crate) chdir: bool,
    /// The workspace lock is handed over to the child ([`crate::handover`]): decided by
    /// [`run`] from `[lock] handover` and the command, before the workspace is taken.
    pub(crate) handover: bool,
}

impl RunSettings {
    fn conflict_rules(&self) -> conflict::Rules<'_> {
        conflict::Rules {
            workspace: &self.workspace,
            repo: self.repo.as_deref(),
            policy: self.on_conflict,
            wait_timeout: self.policy.conflict.wait_timeout,
            after_timeout: self.policy.conflict.after_timeout,
            refused: ExitStatus::Conflict(self.policy.conflict.exit_code),
            grace: self.policy.stop.grace,
            stop_signal: self.policy.stop.signal,
            prompt: &self.prompt,
        }
    }

    /// The task text: `prompt` when given, else the command line.
    pub(crate) fn task(prompt: Option<String>, command: &[OsString]) -> String {
        prompt.unwrap_or_else(|| {
            command
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        })
    }
}

pub(crate) fn run(mut settings: RunSettings) -> Result<ExitStatus, Failure> {
    // Before anything else: from here on no signal can kill us or go unseen, and
    // SIGCHLD is no longer ignored (if it was).
    let signals = Signals::install().or_fail("cannot set up signal handling")?;
    // Orphaned descendants are re-parented to us, so we reap them and see them.
    // (A FreeBSD reaper too; macOS has none: see README.)
    let _ = crate::sys::become_subreaper();
    // The loop's containment (a cgroup, or its process tree) and its limits, decided
    // before anything is locked: a limit that must apply and cannot is refused up front
    // (125). The cgroup itself is made once the run will happen (`tree.ready()`).
    let (stop, l) = (&settings.policy.stop, &settings.policy.limits);
    let limits = (l.memory_max, l.pids_max, l.cpu_max);
    let mut tree = Containment::set_up(stop.orphans, stop.containment, limits, l.required)?;

    // Before the workspace is taken: "always" where the system cannot is refused.
    settings.handover = crate::handover::plan(settings.policy.lock.handover, &settings.command)?;
    // Fleet mode: etcd must answer before anything else happens (else 69 or 77).
    let mut fleet = Fleet::for_run(&settings)?;
    let dir = RalphDir::open_or_create(&settings.workspace)?;
    // Set once `on_start` has had its turn: then `on_exit` has one too.
    let mut facts = None;
    // The local lock, then in fleet mode the fleet lock. Before a wait blocks, the
    // cgroup is made and the supervisor's start time and host name looked up, so that
    // the hand-off does without these system calls (a run refused at once does without
    // them altogether). Once the local lock is ours, it names this supervisor at once
    // (before the cgroup is made), under the loop id the run then keeps, also while it
    // waits for the fleet lock.
    let mut loop_id = None;
    let at = |moment: Moment<'_>| match moment {
        Moment::BeforeWait => {
            self_identity();
            tree.ready()
        }
        // First thing once the lock is ours, before the cgroup (a few ms): a locked
        // file is never left empty for a concurrent `ralph run`, which fails hard on one.
        Moment::Holding(lock) => {
            let place = Place::Primary {
                workspace: &settings.workspace,
                loop_id: loop_id.insert(new_loop_id()).clone(),
            };
            if let Err(e) = lock.write_metadata(&metadata(&settings, &place, Utc::now(), &tree)) {
                warn!("cannot write {}: {e}", lock.path().display());
            }
            tree.ready()
        }
    };
    let rules = settings.conflict_rules();
    let next = conflict::acquire(&dir, &rules, &signals, fleet.as_mut(), at)?;
    if !matches!(next, Next::Exit(_)) {
        // The loop's cgroup, now that the run will happen (unless made already).
        tree.ready()?;
    }
    let holds = Holds {
        tree: &mut tree,
        fleet: fleet.as_mut(),
    };
    let status = match next {
        Next::Primary(lock) => {
            if !settings.chdir {
                crate::handover::warn_if_ralph_starts_below(&settings.command, &settings.workspace);
            }
            let place = Place::Primary {
                workspace: &settings.workspace,
                loop_id: loop_id.unwrap_or_else(new_loop_id),
            };
            run_locked(&settings, &signals, &dir, lock, &place, &mut facts, holds).status
        }
        Next::Worktree { repo } => run_in_worktree(&settings, &signals, repo, &mut facts, holds),
        Next::Exit(status) => return Ok(status),
    };
    if let Some(fleet) = fleet.as_mut() {
        fleet.release();
    }
    // The cgroup goes once empty (dropping it on an early return does the same).
    tree.finish();
    // After the last run and the release (and the worktree's `on_exit`).
    if let (Some(mut facts), Some(argv)) = (facts, &settings.policy.hooks.on_exit) {
        facts.exit_status = Some(match &status {
            Ok(status) => status.code(),
            Err(failure) => failure.status.code(),
        });
        let (timeout, stop) = (settings.policy.hooks.timeout, settings.policy.stop.signal);
        hooks::run("on_exit", argv, &facts, timeout, stop, &signals, None);
    }
    status
}

/// Where a run happens: the workspace itself, or a worktree created for this run.
enum Place<'a> {
    Primary {
        workspace: &'a Path,
        loop_id: String,
    },
    Worktree(&'a Created),
}

impl<'a> Place<'a> {
    /// The directory the child works in, recorded in the metadata.
    fn workspace(&self) -> &Path {
        match self {
            Place::Primary { workspace, .. } => workspace,
            Place::Worktree(created) => &created.path,
        }
    }

    fn loop_id(&self) -> &str {
        match self {
            Place::Primary { loop_id, .. } => loop_id,
            Place::Worktree(created) => &created.id,
        }
    }

    fn mode(&self) -> Mode {
        match self {
            Place::Primary { .. } => Mode::Primary,
            Place::Worktree(_) => Mode::Worktree,
        }
    }

    /// `RALPH_LOOP_INDEX`: 0 for the primary, the reserved one for a worktree loop.
    fn loop_index(&self) -> u32 {
        match self {
            Place::Primary { .. } => 0,
            Place::Worktree(created) => created.loop_index,
        }
    }

    fn worktree(&self) -> Option<&'a Created> {
        match *self {
            Place::Primary { .. } => None,
            Place::Worktree(created) => Some(created),
        }
    }
}

/// The directory the child starts in: a worktree's, or the workspace named with `-C`;
/// `None` leaves it the user's current directory.
fn child_cwd<'p>(place: &'p Place<'_>, chdir: bool) -> Option<&'p Path> {
    match place {
        Place::Worktree(created) => Some(&created.path),
        Place::Primary { workspace, .. } => chdir.then_some(*workspace),
    }
}

/// What a run holds besides its local lock: its processes' containment (a cgroup, or
/// the subreaper's tree) and, in fleet mode, the fleet lock.
struct Holds<'h> {
    tree: &'h mut Containment,
    fleet: Option<&'h mut Fleet>,
}

/// Creates a worktree, runs there holding its own lock, applies `worktree.on_exit`.
fn run_in_worktree(
    settings: &RunSettings,
    signals: &Signals,
    repo: PathBuf,
    facts: &mut Option<hooks::Facts>,
    mut holds: Holds<'_>,
) -> Result<ExitStatus, Failure> {
    let spec = worktree::Spec {
        repo,
        dir: settings.policy.worktree.dir.clone(),
        branch_prefix: settings.policy.worktree.branch_prefix.clone(),
        prompt: settings.prompt.clone(),
        carry: settings.policy.worktree.sync,
        copy: settings.policy.worktree.copy.clone(),
    };
    let created = match holds.fleet.as_deref_mut() {
        // Fleet mode: the id (and so the branch) is also reserved fleet-wide.
        Some(fleet) => worktree::create_with(&spec, &fleet.worktree_reserver(settings)?)?,
        None => worktree::create(&spec)?,
    };
    info!(
        "running in worktree {} (branch {})",
        created.path.display(),
        created.branch
    );
    let locked =
        RalphDir::open_or_create(&created.path).and_then(|dir| match lock::try_acquire(&dir)? {
            Acquire::Acquired(lock) => Ok((dir, lock)),
            Acquire::Held(_) => Err(Failure::msg(
                ExitStatus::Failure,
                format!(
                    "the new worktree {} is locked by someone else",
                    created.path.display()
                ),
            )),
        });
    let (dir, lock) = match locked {
        Ok(x) => x,
        Err(e) => {
            rollback(&created);
            return Err(e);
        }
    };
    let ran = run_locked(
        settings,
        signals,
        &dir,
        lock,
        &Place::Worktree(&created),
        facts,
        holds,
    );
    if !ran.spawned {
        // The command never started: leave no worktree, branch or registry entry.
        rollback(&created);
        return ran.status;
    }
    let status = ran.status;
    if ran.discarded {
        info!(
            "worktree {} was removed (discarded): nothing left to keep, remove or queue",
            created.path.display()
        );
        return status;
    }
    let on_exit = settings.policy.worktree.on_exit;
    let success = matches!(status, Ok(ExitStatus::Child(0)));
    match worktree::finish(&created.repo, &created, on_exit, success, &settings.prompt) {
        Ok(done) => info!(
            "worktree {} {}",
            created.path.display(),
            match done {
                worktree::Finish::Kept => "kept",
                worktree::Finish::Removed => "removed with its branch (nothing changed)",
                worktree::Finish::Queued => "queued for merging",
                worktree::Finish::KeptDirty => "kept: it has changes or commits",
            }
        ),
        Err(e) => warn!("worktree {}: {:#}", created.path.display(), e.error),
    }
    status
}

fn rollback(created: &Created) {
    if let Err(e) = worktree::discard(created) {
        warn!(
            "cannot remove the failed worktree {}: {:#}",
            created.path.display(),
            e.error
        );
    }
}

/// How a locked run ended.
struct Ran {
    status: Result<ExitStatus, Failure>,
    /// Whether the command ever started (a worktree whose command never did is removed).
    spawned: bool,
    /// The worktree was removed under the loop.
    discarded: bool,
}

/// Runs the command holding `lock` (of `dir`), then records the run and releases.
/// `facts` is set once `hooks.on_start` has had its turn (run or not configured).
fn run_locked(
    settings: &RunSettings,
    signals: &Signals,
    dir: &RalphDir,
    lock: LockFile,
    place: &Place<'_>,
    facts: &mut Option<hooks::Facts>,
    holds: Holds<'_>,
) -> Ran {
    debug!(lock = %lock.path().display(), "lock acquired");
    let Holds { tree, fleet } = holds;
    let started = crate::metadata::now();
    let mut meta = metadata(settings, place, started, tree);
    meta.fleet = fleet.as_deref().and_then(|f| {
        Some(crate::metadata::FleetFacts {
            key: f.key().to_string(),
            fencing_token: f.token()?,
        })
    });
    let mut session = Session {
        settings,
        place,
        dir,
        lock,
        extra: Vec::new(),
        fleet,
        meta,
        cgroup: tree.placement(),
        terminal: Terminal::detect(),
        child: None,
        registered: false,
        discarded: false,
        watchdog: None,
        handover: settings.handover,
        honours_stop: settings.handover && crate::handover::is_ralph(&settings.command),
        stop_noted: false,
    };
    // The metadata first (a worktree's lock was taken just now; the workspace's names
    // us already), then the rest of the set-up.
    let result = match session.write_metadata() {
        Err(e) => Err(Failure::new(
            ExitStatus::Failure,
            anyhow::Error::new(e)
                .context(format!("cannot write {}", session.lock.path().display())),
        )),
        Ok(()) => {
            // Watch .ralph/ before removing a stale stop request, so a new one is never
            // missed.
            if let Err(e) = crate::watch::watch(dir, signals) {
                warn!(
                    "cannot watch {}: {e}; stop requests will not be seen",
                    dir.path().display()
                );
            }
            if stop_request::remove(dir).unwrap_or(false) {
                info!("removed a stale {}", stop_request::FILE);
            }
            let mut told = run_facts(settings, place);
            let received = match &settings.policy.hooks.on_start {
                None => Vec::new(),
                Some(argv) => {
                    let (timeout, stop) =
                        (settings.policy.hooks.timeout, settings.policy.stop.signal);
                    let side = session.side_channel();
                    hooks::run("on_start", argv, &told, timeout, stop, signals, side)
                }
            };
            let result = match session.stop_before_start(&received) {
                // A stop came while `on_start` ran: the command is never started.
                Some((reason, status)) => {
                    info!("stopped before the command started ({})", reason);
                    crate::service::stopping(Some(&reason.to_string()));
                    let config = machine_config(&settings.policy, false);
                    let machine =
                        Machine::stopped_before_start(config, reason, status, Instant::now());
                    Ok((status, machine))
                }
                None => {
                    hooks::requeue(&received);
                    supervise(&mut session, signals, tree)
                }
            };
            told.reason = result.as_ref().ok().map(|(_, machine)| {
                machine
                    .stop_reason()
                    .map_or_else(|| "exit".to_string(), |reason| reason.to_string())
            });
            *facts = Some(told);
            result
        }
    };
    // History before the release, so that whoever waits for the lock (`stop`) finds the
    // record when the lock frees. (Written after the release, the record was always
    // given the space the lock file freed: a full disk could never show on it.)
    if let Ok((status, machine)) = &result {
        append_history(
            place,
            dir,
            &history_record(&session, *status, machine, started, tree),
        );
    }
    if let Some(created) = place.worktree()
        && let Err(e) = worktree::registry::deregister(&created.repo_ralph_dir(), &created.id)
    {
        warn!("cannot deregister the loop: {:#}", e.error);
    }
    let spawned = session.child.is_some();
    let discarded = session.discarded;
    if session.handover {
        crate::handover::clear_sidecar(dir);
    }
    if session.honours_stop && stop_request::remove(dir).unwrap_or(false) {
        // Left for ralph, which did not get to it (it ended first): no loop is left
        // for it to stop.
        debug!("removed the unhonoured {}", stop_request::FILE);
    }
    // The child is gone (or never started): empty the metadata while still locked,
    // then unlock explicitly.
    let released = session
        .lock
        .release()
        .or_fail("cannot release the workspace lock");
    for extra in session.extra {
        let _ = extra.release();
    }
    let status = result.and_then(|(status, _)| released.map(|()| status));
    Ran {
        status,
        spawned,
        discarded,
    }
}

/// Spawns the child and supervises it (and its restarts) to the end.
fn supervise(
    session: &mut Session<'_>,
    signals: &Signals,
    tree: &mut Containment,
) -> Result<(ExitStatus, Machine), Failure> {
    if session.settings.policy.run.stall_timeout.is_some() {
        session.watchdog = Some(watchdog(session.settings, session.place));
    }
    let child = session.spawn()?;
    tree.spawned(child.pid.as_raw() as u32, session.meta.child_start_time);
    // A stop request written since the watch began is not lost: its change signal is
    // queued in the signalfd, and the event loop reads it first.
    let terminal = session.terminal;
    let config = machine_config(&session.settings.policy, terminal.is_some());
    let mut machine = Machine::new(config, Instant::now());
    let status = supervisor::supervise(child, &mut machine, signals, terminal, session, tree)?;
    crate::service::stopping(None);
    debug!(code = status.code(), "supervision over");
    Ok((status, machine))
}

/// The state machine's settings, from the policy.
fn machine_config(policy: &Policy, job_control: bool) -> machine::Config {
    machine::Config {
        grace: policy.stop.grace,
        stop_signal: policy.stop.signal,
        kill_orphans: policy.stop.orphans == Orphans::Kill,
        job_control,
        restart: machine::Restart {
            when: policy.restart.policy,
            max: policy.restart.max,
            window: policy.restart.window,
            backoff_initial: policy.restart.backoff_initial,
            backoff_max: policy.restart.backoff_max,
            exit: policy.restart.exit.clone(),
        },
        max_runtime: policy.run.max_runtime,
        stall_timeout: policy.run.stall_timeout,
    }
}

/// The stall watchdog for the workspace, without what the supervisor itself writes
/// (`.ralph/supervise/`, the lock's metadata) or other loops' worktrees.
fn watchdog(settings: &RunSettings, place: &Place<'_>) -> crate::activity::Watchdog {
    let workspace = place.workspace();
    let mut skip = vec![
        workspace.join(".ralph/supervise"),
        workspace.join(".ralph/loop.lock"),
    ];
    if let Some(repo) = &settings.repo {
        skip.push(repo.join(&settings.policy.worktree.dir));
    }
    crate::activity::Watchdog::new(workspace, skip)
}

/// What the lock file says before the child starts (its pid is filled in at spawn).
fn metadata(
    settings: &RunSettings,
    place: &Place<'_>,
    started: DateTime<Utc>,
    tree: &Containment,
) -> Metadata {
    let me = std::process::id();
    Metadata {
        pid: me,
        started,
        prompt: truncate_prompt(&settings.prompt),
        supervisor_pid: Some(me),
        supervisor_start_time: self_identity().0,
        child_pid: None,
        child_start_time: None,
        loop_id: Some(place.loop_id().to_owned()),
        mode: Some(place.mode()),
        command: settings
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        workspace: Some(place.workspace().to_path_buf()),
        hostname: self_identity().1.clone(),
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
        pid_namespace: procfs::pid_namespace(),
        loop_index: Some(place.loop_index()),
        restart: Default::default(),
        fleet: None,
        contained: crate::metadata::Contained {
            containment: Some(tree.mode().to_string()),
            cgroup: tree.cgroup_path(),
        },
    }
}

/// The locks and metadata of one run, and what the event loop asks of them.
struct Session<'a> {
    settings: &'a RunSettings,
    place: &'a Place<'a>,
    dir: &'a RalphDir,
    lock: LockFile,
    /// Lock files recreated after `loop.lock` was deleted under us.
    extra: Vec<LockFile>,
    /// Fleet mode: the fleet lock (or the worktree reservation) held with the local one.
    fleet: Option<&'a mut Fleet>,
    meta: Metadata,
    /// The loop's cgroup, which the child is started in (`clone3`), or moves itself
    /// into through its `cgroup.procs` where that cannot be.
    cgroup: Option<crate::sys::Placement>,
    terminal: Option<Terminal>,
    child: Option<Child>,
    /// The worktree loop is in the registry (so its entry going away means something).
    registered: bool,
    /// The worktree was removed under the loop: it is being stopped, and nothing is
    /// created in the worktree any more.
    discarded: bool,
    /// The stall watchdog's eyes, with a `stall_timeout`.
    watchdog: Option<crate::activity::Watchdog>,
    /// The lock is handed over to the child ([`crate::handover`]): the child (ralph)
    /// writes the lock file itself; ours goes to `.ralph/supervise/loop.json`.
    handover: bool,
    /// The child honours `.ralph/stop-requested` itself (ralph with the lock handed
    /// over): the file is left in place for it.
    honours_stop: bool,
    /// A stop request was seen and left for the child (reported once).
    stop_noted: bool,
}

impl Session<'_> {
    fn write_metadata(&self) -> std::io::Result<()> {
        self.lock.write_metadata(&self.meta)?;
        for extra in &self.extra {
            extra.write_metadata(&self.meta)?;
        }
        Ok(())
    }

    /// Writes the metadata after the child started (or before a restart): into the lock
    /// file, or with a hand-over child (which writes the lock file itself) into the
    /// sidecar.
    fn record(&self) -> std::io::Result<()> {
        if self.handover {
            crate::handover::write_sidecar(self.dir, &self.meta)
        } else {
            self.write_metadata()
        }
    }

    fn spawn(&mut self) -> Result<Child, Failure> {
        let place = self.place;
        if let Some(why) = self.fleet.as_deref().and_then(Fleet::lost) {
            return Err(Failure::msg(
                ExitStatus::Unavailable,
                format!("fleet lock lost before the command started: {why}"),
            ));
        }
        let token = self.meta.fleet.as_ref().map(|f| f.fencing_token);
        let answerer = if self.handover {
            // The description the path names now (a recreated file's, if it was deleted).
            let locked = self.extra.last().unwrap_or(&self.lock);
            let started = crate::handover::start_answerer(locked.as_fd());
            Some(started.or_fail("cannot start the lock hand-over's answerer")?)
        } else {
            None
        };
        let child = supervisor::spawn(
            &self.settings.command,
            self.lock.raw_fd(),
            self.terminal,
            answerer.as_ref().map(|sock| sock.as_raw_fd()),
            self.cgroup,
            |cmd| {
                if let Some(dir) = child_cwd(place, self.settings.chdir) {
                    cmd.current_dir(dir);
                }
                // In every mode: the workspace root named is the one we locked.
                let env = &self.settings.policy.run.env;
                child_env::apply(cmd, env, place.workspace(), place.loop_index(), token);
            },
        )?;
        // The child has its copy (or never started): the answerer learns of it from
        // the child alone.
        drop(answerer);
        let pid = child.pid.as_raw() as u32;
        self.meta.pid = pid;
        self.meta.child_pid = Some(pid);
        self.meta.child_start_time = procfs::start_time(pid);
        self.child = Some(child);
        if let Err(e) = self.record() {
            // The child runs and holds the lock, but nobody can see who it is: stop it.
            let _ = nix::sys::signal::killpg(child.pid, nix::sys::signal::Signal::SIGTERM);
            error!(
                "cannot record the child in {}: {e}; stopping it",
                self.lock.path().display()
            );
        }
        self.register(pid);
        crate::service::ready_running(pid, self.place.worktree().map(|c| c.path.as_path()));
        debug!(pid, "running {}", self.meta.prompt);
        Ok(child)
    }
}

impl Session<'_> {
    /// A worktree loop's entry in the repository's `loops.json`, naming `pid`.
    fn register(&mut self, pid: u32) {
        if let Some(created) = self.place.worktree() {
            let entry = worktree::registry::Entry {
                id: created.id.clone(),
                pid,
                started: self.meta.started,
                prompt: self.meta.prompt.clone(),
                worktree_path: created.path.clone(),
                workspace: created.path.clone(),
                pid_namespace: self.meta.pid_namespace,
                loop_index: Some(created.loop_index),
                extra: Default::default(),
            };
            match worktree::registry::register(&created.repo_ralph_dir(), entry) {
                Ok(()) => self.registered = true,
                Err(e) => warn!("cannot register the loop: {:#}", e.error),
            }
        }
    }
}

impl Hooks for Session<'_> {
    fn side_channel(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.fleet.as_deref().map(Fleet::side_fd)
    }

    fn side_events(&mut self) -> Vec<machine::Event> {
        let grace = self.settings.policy.stop.grace;
        (self.fleet.as_deref_mut()).map_or_else(Vec::new, |f| f.supervisor_events(grace))
    }

    fn activity(&mut self) -> (std::time::Duration, bool) {
        (self.watchdog.as_mut()).map_or((std::time::Duration::ZERO, false), |w| w.sample())
    }

    fn respawn(&mut self, restarts: u32) -> Result<Child, Failure> {
        info!("restarting: {}", self.meta.prompt);
        self.meta.restart.restarts = Some(restarts);
        self.meta.restart.next_start = None;
        self.spawn()
    }

    fn decided(&mut self, decision: &Decision) {
        let line = crate::present::decision(decision);
        let Verdict::Restart { delay, .. } = decision.verdict else {
            match decision.verdict {
                Verdict::GiveUp { .. } => warn!("{line}"),
                _ => info!("{line}"),
            }
            return;
        };
        info!("{line}");
        // Until the next run the supervisor is the loop's process: `pid` names it (a
        // `ralph loops stop` reaches it; the old child's pid may be reused).
        let me = std::process::id();
        let (code, signal) = match decision.outcome {
            ChildOutcome::Exited(code) => (Some(code), None),
            ChildOutcome::Signaled(sig) => (None, Some(signals::name(sig))),
        };
        self.meta.pid = me;
        self.meta.child_pid = None;
        self.meta.child_start_time = None;
        let restart = &mut self.meta.restart;
        restart.restarts.get_or_insert(0);
        restart.last_exit = Some(crate::metadata::LastExit {
            code,
            signal,
            status: decision.status,
            why: crate::present::restart_why(decision.why),
        });
        let delay = chrono::TimeDelta::from_std(delay).unwrap_or(chrono::TimeDelta::MAX);
        restart.next_start = Some(
            Utc::now()
                .checked_add_signed(delay)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        );
        // After the child's exit: the lock file (no child to rewrite it) and, with a
        // hand-over child, the sidecar.
        let written = if self.handover {
            self.write_metadata().and_then(|()| self.record())
        } else {
            self.write_metadata()
        };
        if let Err(e) = written {
            warn!(
                "cannot record the coming restart in {}: {e}",
                self.lock.path().display()
            );
        }
        // The registry too: a dead pid there would get the entry pruned meanwhile.
        self.register(me);
        crate::service::status(&format!("waiting to restart: {line}"));
    }

    fn workspace_changed(&mut self) -> Change {
        if self.discarded {
            // Being stopped; the directory is going away: touch nothing in it.
            return Change::Nothing;
        }
        let newest = self.extra.last().unwrap_or(&self.lock);
        let lock_deleted = !newest.still_linked(self.dir);
        if self.worktree_removed(lock_deleted) {
            self.discarded = true;
            warn!(
                "the worktree {} was removed under the loop (ralph loops discard): stopping it",
                self.place.workspace().display()
            );
            return Change::Discarded;
        }
        if lock_deleted {
            self.lock_deleted();
        }
        if self.honours_stop {
            // ralph honours it at its iteration boundary and ends as it ends
            // unsupervised; the file is its to consume.
            if !self.stop_noted && stop_request::present(self.dir) {
                self.stop_noted = true;
                return Change::StopRequestHonoured;
            }
            return Change::Nothing;
        }
        if stop_request::remove(self.dir).unwrap_or(false) {
            Change::StopRequest
        } else {
            Change::Nothing
        }
    }
}

impl Session<'_> {
    /// A stop that came while `hooks.on_start` ran, with the status it ends the run
    /// with; the command is then never started. Read from what the hook's wait took off
    /// the signalfd (`received`), the stop file, and fleet mode's reports.
    fn stop_before_start(
        &mut self,
        received: &[supervisor::Received],
    ) -> Option<(StopReason, ExitStatus)> {
        let stop_signal = self.settings.policy.stop.signal;
        // (Without `on_start` there was no time for a stop.)
        self.settings.policy.hooks.on_start.as_ref()?;
        // `stop --fleet`, or a lease lost: first, as a lost lease decides the status (69)
        // whatever else came, and the command must not start without the key.
        let events = self.side_events();
        let lost = (events.iter()).any(|e| matches!(e, machine::Event::LeaseLost { .. }));
        let asked = events.into_iter().find_map(|event| match event {
            machine::Event::StopRequest { signal } => Some(signal.unwrap_or(stop_signal)),
            _ => None,
        });
        let fleet = match (lost, asked) {
            (true, _) => Some((StopReason::LeaseLost, ExitStatus::Unavailable)),
            (false, asked) => asked.map(|sig| (StopReason::StopRequest, ExitStatus::Signaled(sig))),
        };
        let signalled = hooks::first_stop(received, stop_signal);
        let signalled = signalled.map(|(reason, signal)| (reason, ExitStatus::Signaled(signal)));
        // A stop file written meanwhile (`ralph loops stop`): nobody runs yet to honour
        // it but us. (One left from before was removed at the lock.)
        let file = || {
            let asked = stop_request::remove(self.dir).unwrap_or(false);
            asked.then_some((StopReason::StopRequest, ExitStatus::Signaled(stop_signal)))
        };
        fleet.or(signalled).or_else(file)
    }

    /// Whether this worktree loop's worktree is removed or being removed: its `.ralph/`
    /// is gone, or its `.git` file (`git worktree remove` deletes the whole tree, in
    /// directory order), or — once `loop.lock` was deleted (`lock_deleted`) — its
    /// registry entry, which `ralph loops discard` removes before the directory. Never
    /// for a primary: its workspace is not ours to lose.
    fn worktree_removed(&self, lock_deleted: bool) -> bool {
        let Some(created) = self.place.worktree() else {
            return false;
        };
        if self.dir.removed() || created.path.join(".git").symlink_metadata().is_err() {
            return true;
        }
        // A registry that cannot be read says nothing.
        lock_deleted
            && self.registered
            && worktree::registry::lists(&created.repo_ralph_dir(), &created.id) == Some(false)
    }

    fn lock_deleted(&mut self) {
        warn!(
            "{} was deleted while the loop holds it; recreating and locking it again",
            self.lock.path().display()
        );
        let recreated = LockFile::open(self.dir).and_then(|l| {
            // A prober (`flock -n`, `ralph-supervise status`) may hold the new file for
            // a few microseconds; a loop that took it holds it for good. Tell them
            // apart with a few tries over 100 ms.
            for _ in 0..50 {
                if l.try_lock().or_fail("cannot lock the recreated file")? {
                    return Ok(l);
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(Failure::msg(
                ExitStatus::Failure,
                "another process locked the recreated lock file first: two loops now run in this workspace",
            ))
        });
        match recreated {
            Ok(l) => {
                if let Err(e) = l.write_metadata(&self.meta) {
                    error!("cannot write the recreated lock file: {e}");
                }
                self.extra.push(l);
            }
            Err(e) => error!("{:#}", e.error),
        }
    }
}

fn history_record(
    session: &Session<'_>,
    status: ExitStatus,
    machine: &Machine,
    started: DateTime<Utc>,
    tree: &Containment,
) -> history::Record {
    let used = tree.accounting();
    let (exit_code, signal) = match machine.outcome() {
        Some(ChildOutcome::Exited(code)) => (Some(code), None),
        Some(ChildOutcome::Signaled(sig)) => (None, Some(signals::name(sig))),
        None => (None, None),
    };
    history::Record {
        id: session.place.loop_id().to_owned(),
        mode: session.place.mode().to_string(),
        command: session.meta.command.clone(),
        // Whole: the 100-character cut is the lock metadata's (ralph's), not ours.
        prompt: session.settings.prompt.clone(),
        start: format_time(&started),
        end: format_time(&Utc::now()),
        exit_code,
        signal,
        status: status.code(),
        restarts: machine.restarts(),
        stopped_by: machine.stop_reason().map(|reason| reason.to_string()),
        worktree: session.place.worktree().map(|c| c.path.clone()),
        supervisor_pid: std::process::id(),
        child_pid: session.child.map(|c| c.pid.as_raw() as u32),
        log_lines_dropped: Some(crate::logging::dropped()).filter(|n| *n > 0),
        fleet: session.meta.fleet.clone(),
        containment: Some(tree.mode().to_string()),
        cpu_user_ms: Some(used.user_us / 1000),
        cpu_system_ms: Some(used.system_us / 1000),
        memory_peak_bytes: used.memory_peak,
        memory_peak_of: used.memory_peak.map(|_| {
            match used.memory_peak_cgroup {
                true => "cgroup",
                false => "largest-process",
            }
            .to_string()
        }),
        processes_peak: used.processes_peak,
    }
}

/// The facts hooks are told (without the exit status and reason, known at the end).
fn run_facts(settings: &RunSettings, place: &Place<'_>) -> hooks::Facts {
    let hooked =
        settings.policy.hooks.on_start.is_some() || settings.policy.hooks.on_exit.is_some();
    let branch = match place.worktree() {
        Some(created) => Some(created.branch.clone()),
        // One git call, and only when a hook will be told.
        None if hooked => settings.repo.as_deref().and_then(worktree::current_branch),
        None => None,
    };
    hooks::Facts {
        loop_id: place.loop_id().to_owned(),
        workspace: settings.workspace.clone(),
        worktree: place.worktree().map(|c| c.path.clone()),
        branch,
        loop_index: place.loop_index(),
        exit_status: None,
        reason: None,
    }
}

/// Appends the run's record. Worktree loops write the main repository's history, so one
/// place lists all runs.
/// `dir` is the run's own `.ralph/`, already open: a primary's history goes there.
fn append_history(place: &Place<'_>, dir: &RalphDir, record: &history::Record) {
    let written = match place.worktree() {
        Some(created) => RalphDir::open_or_create(&created.repo)
            .map_err(|e| e.error)
            .and_then(|repo| history::append(&repo, record).map_err(anyhow::Error::from)),
        None => history::append(dir, record).map_err(anyhow::Error::from),
    };
    if let Err(e) = written {
        warn!("cannot record the run in the history: {e:#}");
    }
}

/// The supervisor's kernel start time and the host name, for the metadata: the same for
/// the whole run, looked up once.
fn self_identity() -> &'static (Option<u64>, Option<String>) {
    static IDENTITY: std::sync::OnceLock<(Option<u64>, Option<String>)> =
        std::sync::OnceLock::new();
    IDENTITY.get_or_init(|| {
        (
            procfs::own_start_time(),
            nix::unistd::gethostname()
                .ok()
                .map(|h| h.to_string_lossy().into_owned()),
        )
    })
}

/// `ralph-YYYYMMDD-HHMMSS-xxxx`, ralph's fallback loop-id style.
pub(crate) fn new_loop_id() -> String {
    let now = Utc::now();
    let nanos = now.timestamp_subsec_nanos();
    let mix = (std::process::id() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ nanos as u64;
    format!(
        "ralph-{}-{:04x}",
        now.format("%Y%m%d-%H%M%S"),
        (mix >> 16) & 0xffff
    )
}
