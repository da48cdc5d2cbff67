//! Fleet mode (cargo feature `fleet`): the workspace lock one level up, across hosts,
//! on etcd.
//!
//! A flock protects a workspace on one machine; clones of one repository on several
//! hosts share a *key* (`[fleet] key`, by default the `origin` URL and the branch) and
//! take an etcd lock on it as well, after the local flock and before the child starts.
//!
//! # Layout in etcd (compatible with `etcdctl lock`)
//!
//! The lock is etcd's own recipe (`clientv3/concurrency.Mutex`, which `etcdctl lock`
//! uses): every contender puts `ralph-supervise/lock/<key>/<lease id in hex>` with its
//! lease; the key with the lowest create revision holds the lock, the others wait, each
//! watching the deletion of the one just before it (a watch, no polling). So
//! `etcdctl lock ralph-supervise/lock/<key>` and a supervisor see each other. The value
//! of a supervisor's key is a JSON [`lock::Record`] (host, pid, since); `etcdctl`'s is
//! empty. The holder's create revision is the **fencing token**: the owner is always
//! the oldest key, so every later holder's token is larger. It reaches the child as
//! `RALPH_FENCING_TOKEN` and is written to the metadata and the history.
//!
//! `ralph-supervise/stop/<key>/<lease hex>`: a request to the holder with that lease to
//! stop (a takeover, `stop --fleet`); the holder watches it. Nobody revokes another's
//! lease. `ralph-supervise/worktree/<key>/<id>`: a worktree loop's id (and so its
//! branch) reserved fleet-wide while it runs.
//!
//! # Never two holders working
//!
//! The lease is kept alive by a task ([`lease`]); if no keep-alive has been answered
//! for so long that the lease might lapse within the stop grace plus a margin, the
//! supervisor is told ([`FleetEvent::LeaseLost`]): it stops the child with the fleet
//! grace `min(stop.grace, ttl/3)`, KILLs what is left, and exits 69 — before the lease
//! can expire and another host can acquire.
//! The holder also watches its own lock key: deleted by hand (`etcdctl del`) or with
//! its lease (`etcdctl lease revoke`), the lock is no longer its own, and that is
//! reported at once as the same loss ([`lock::watch_held`]).
//!
//! # Threads
//!
//! etcd's client is async: a one-worker tokio runtime runs it, in this process's one
//! extra thread. The supervisor's event loop stays as it is: it waits on the runtime's
//! notifications through a socket ([`Fleet::side_fd`]), as it waits on signals. The
//! default build has none of this.

pub(crate) mod key;
mod lease;
pub(crate) mod lock;
mod pool;

use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use pool::Pool;
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::conflict::{Turn, Waited};
use crate::exit::{ExitStatus, Failure, ResultExt};
use crate::policy::Policy;
use crate::run::RunSettings;
use crate::supervisor::Signals;
use crate::supervisor::machine::Event;

pub(crate) use key::default_key;
pub(crate) use lock::Entry;

pub(crate) use crate::fleet_settings::{ENV_PASSWORD, ENV_USER};

/// Fleet mode's settings for one run, from the policy.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) endpoints: Vec<String>,
    pub(crate) key: String,
    pub(crate) ttl: Duration,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

impl Settings {
    /// `None` unless `[fleet] endpoints` is set; the key defaults to the repository's.
    pub(crate) fn from_policy(
        policy: &Policy,
        repo: Option<&Path>,
    ) -> Result<Option<Settings>, Failure> {
        let Some(endpoints) = policy.fleet.endpoints.clone() else {
            return Ok(None);
        };
        let key = match &policy.fleet.key {
            Some(key) => key.clone(),
            None => default_key(repo, key::FIX_RUN)?,
        };
        Ok(Some(Settings::with(policy, endpoints, key)))
    }

    /// The policy's `[fleet]` settings with these endpoints and this key.
    fn with(policy: &Policy, endpoints: Vec<String>, key: String) -> Settings {
        Settings {
            endpoints,
            key,
            ttl: policy.fleet.ttl,
            tls_ca: policy.fleet.tls_ca.clone(),
            tls_cert: policy.fleet.tls_cert.clone(),
            tls_key: policy.fleet.tls_key.clone(),
        }
    }

    /// The grace a lost lease leaves the child: `min(stop.grace, ttl/3)`.
    pub(crate) fn grace(&self, stop_grace: Duration) -> Duration {
        stop_grace.min(self.ttl / 3)
    }

    fn options(&self) -> Result<ConnectOptions, Failure> {
        let limit = self.connect_limit();
        // HTTP/2 pings find a dead connection (a frozen member) so that a client of
        // several members moves on; every ttl/2, not to wake an idle supervisor more.
        let ping = (self.ttl / 2).max(Duration::from_secs(1));
        let mut options = ConnectOptions::new()
            .with_connect_timeout(limit)
            .with_keep_alive(ping, (self.ttl / 4).max(Duration::from_secs(1)));
        if let Some((user, password)) = crate::fleet_settings::credentials() {
            // etcd's tokens expire (`--auth-token-ttl`, 5 min by default) and are forgotten
            // when it restarts: each request refused for its token authenticates again.
            options = options
                .with_user(user.as_str(), password.as_str())
                .with_auto_token_refresh(true);
        }
        if self.tls_ca.is_some() || self.tls_cert.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.tls_ca {
                tls = tls.ca_certificate(Certificate::from_pem(read_pem("tls_ca", ca)?));
            }
            match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => {
                    let (cert, key) = (read_pem("tls_cert", cert)?, read_pem("tls_key", key)?);
                    tls = tls.identity(Identity::from_pem(cert, key));
                }
                (None, None) => {}
                _ => {
                    return Err(Failure::msg(
                        ExitStatus::BadPolicy,
                        "fleet.tls_cert and fleet.tls_key go together; set both or neither",
                    ));
                }
            }
            options = options.with_tls(tls);
        }
        Ok(options)
    }

    /// How long an unanswered start-up may take before etcd counts as unreachable.
    fn connect_limit(&self) -> Duration {
        (self.ttl / 2).clamp(Duration::from_secs(1), Duration::from_secs(5))
    }

    /// With several endpoints, how long one may stay silent before the next is asked:
    /// well inside the keep-alive's danger budget (see [`lease`]), so that a frozen
    /// member costs one attempt, not the lease.
    fn attempt_limit(&self) -> Duration {
        (self.ttl / 8).clamp(Duration::from_millis(250), Duration::from_secs(2))
    }
}

/// The PEM file `[fleet] <setting>` names, read, if it holds what the setting needs: a
/// private key for `tls_key`, a certificate for `tls_ca` and `tls_cert` (else the TLS
/// library's error would come at the connection, and not name the file). 78 otherwise.
fn read_pem(setting: &str, path: &Path) -> Result<Vec<u8>, Failure> {
    let bad = |why: String| Failure::msg(ExitStatus::BadPolicy, why);
    let file = crate::present::path(path);
    let pem = std::fs::read(path).map_err(|e| {
        bad(format!(
            "[fleet] {setting} {file}: {e}; name a readable PEM file"
        ))
    })?;
    let (wanted, fix) = match setting {
        "tls_key" => (
            "PRIVATE KEY",
            "name the PEM file of the client certificate's private key",
        ),
        "tls_cert" => ("CERTIFICATE", "name the PEM file of the client certificate"),
        _ => (
            "CERTIFICATE",
            "name the PEM file of the authority that signed etcd's certificate",
        ),
    };
    // The labels of its blocks: `-----BEGIN EC PRIVATE KEY-----` is "EC PRIVATE KEY".
    let text = String::from_utf8_lossy(&pem);
    let labels: Vec<&str> = (text.lines())
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .filter(|label| (label.chars()).all(|c| c.is_ascii_uppercase() || c == ' '))
        .collect();
    if labels.iter().any(|label| label.ends_with(wanted)) {
        return Ok(pem);
    }
    let holds = match labels.first() {
        Some(label) => format!("holds a \"{label}\" block"),
        None => "holds no PEM block".to_string(),
    };
    let wanted = wanted.to_lowercase();
    Err(bad(format!(
        "[fleet] {setting} {file} {holds}, not a {wanted}; {fix}"
    )))
}

/// What the runtime tells the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FleetEvent {
    /// The lease may lapse (or did): stop the child now. Why, for the log.
    LeaseLost(String),
    /// Someone asked this holder to stop (a takeover, `stop --fleet`): who.
    StopAsked(String),
}

/// Sends [`FleetEvent`]s from the runtime and wakes the supervisor's `poll`.
#[derive(Clone)]
pub(crate) struct Notifier {
    tx: mpsc::Sender<FleetEvent>,
    wake: std::sync::Arc<UnixStream>,
}

impl Notifier {
    fn send(&self, event: FleetEvent) {
        if self.tx.send(event).is_ok() {
            let _ = (&*self.wake).write(&[1]);
        }
    }
}

/// One connection to etcd, and (in `run`) this run's lease and lock.
pub(crate) struct Fleet {
    rt: Runtime,
    pool: Pool,
    pub(crate) settings: Settings,
    /// This run's lease, once granted.
    lease: Option<i64>,
    /// The lock's fencing token, once held.
    token: Option<i64>,
    /// `Some(why)` once the lease is lost (or may be).
    lost: watch::Receiver<Option<String>>,
    lost_tx: watch::Sender<Option<String>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    events: mpsc::Receiver<FleetEvent>,
    wake_rx: UnixStream,
    notifier: Notifier,
    /// Set while this run waits behind another holder.
    queued: Option<Queued>,
}

/// This run's place in the fleet lock's queue while it waits (see [`Fleet::queue`]).
struct Queued {
    token: i64,
    /// The record put with our key (its `since` is refreshed once the lock is ours).
    value: String,
    record: lock::Record,
    /// The holder's lease, when it is a ralph-supervise that can be asked to stop.
    holder: Option<i64>,
}

impl Fleet {
    /// Connects to etcd and checks that it answers: unreachable → 69, credentials
    /// refused → 77.
    pub(crate) fn connect(settings: Settings) -> Result<Fleet, Failure> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fleet")
            .enable_all()
            .build()
            .or_fail("cannot start the fleet runtime")?;
        let options = settings.options()?;
        let limit = settings.connect_limit();
        let pool = Pool::new(&settings.endpoints, options, settings.attempt_limit());
        // Several endpoints: each may take its attempt, and one more for the answer.
        let limit = match settings.endpoints.len() {
            1 => limit,
            n => limit.max(settings.attempt_limit() * (n as u32 + 1)),
        };
        let connected = rt.block_on(async {
            let probe = pool.call(|mut client| async move {
                // A read: proves the cluster answers (and the credentials are taken).
                let probe = etcd_client::GetOptions::new().with_count_only();
                client.get(lock::LOCKS, Some(probe)).await
            });
            tokio::time::timeout(limit, probe).await
        });
        match connected {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(connect_failure(&settings, &e)),
            Err(_) => {
                return Err(Failure::msg(
                    ExitStatus::Unavailable,
                    format!(
                        "etcd at {} did not answer within {}; check [fleet] endpoints and that etcd runs (nothing was started)",
                        settings.endpoints.join(", "),
                        crate::setting::short_duration(limit)
                    ),
                ));
            }
        }
        let (lost_tx, lost) = watch::channel(None);
        let (tx, events) = mpsc::channel();
        let (wake_rx, wake_tx) = UnixStream::pair().or_fail("cannot create a socket pair")?;
        wake_rx.set_nonblocking(true).or_fail("socket")?;
        wake_tx.set_nonblocking(true).or_fail("socket")?;
        debug!(endpoints = ?settings.endpoints, key = %settings.key, "connected to etcd");
        Ok(Fleet {
            rt,
            pool,
            settings,
            lease: None,
            token: None,
            lost,
            lost_tx,
            tasks: Vec::new(),
            events,
            wake_rx,
            notifier: Notifier {
                tx,
                wake: std::sync::Arc::new(wake_tx),
            },
            queued: None,
        })
    }

    /// Grants this run's lease and keeps it alive from now on; `grace` is the child's
    /// fleet grace (see [`Settings::grace`]).
    fn grant(&mut self, grace: Duration) -> Result<i64, Failure> {
        let ttl_secs = self.settings.ttl.as_secs_f64().ceil() as i64;
        let pool = self.pool.clone();
        let limit = self.settings.connect_limit();
        let sent = Instant::now();
        let granted = self.rt.block_on(async move {
            let grant = pool.call(|mut c| async move { c.lease_grant(ttl_secs, None).await });
            tokio::time::timeout(limit, grant).await
        });
        let id = match granted {
            Ok(Ok(resp)) => resp.id(),
            Ok(Err(e)) => return Err(failure(&self.settings, &e)),
            Err(_) => {
                return Err(unavailable(
                    &self.settings.endpoints,
                    "no answer to a lease grant",
                ));
            }
        };
        self.lease = Some(id);
        let task = lease::keep_alive(lease::KeepAlive {
            pool: self.pool.clone(),
            lease: id,
            ttl: self.settings.ttl,
            grace,
            confirmed: sent,
            lost: self.lost_tx.clone(),
            notifier: self.notifier.clone(),
        });
        self.tasks.push(self.rt.spawn(task));
        debug!(lease = format!("{id:x}"), "lease granted");
        Ok(id)
    }

    /// Queues for the fleet lock on the key (a lease granted, our key put): the lock is
    /// ours at once, or we stand behind its holder. What to do then is the conflict
    /// policy's ([`crate::conflict`]), with the calls below.
    pub(crate) fn queue(
        &mut self,
        workspace: &Path,
        prompt: &str,
        stop_grace: Duration,
    ) -> Result<Turn, Failure> {
        let lease = self.grant(self.settings.grace(stop_grace))?;
        let record = lock::Record::new(workspace, prompt);
        let value = record.to_json();
        let pool = self.pool.clone();
        let limit = self.settings.connect_limit();
        let (k, v) = (self.settings.key.clone(), value.clone());
        let queued = self.rt.block_on(async move {
            let enqueue = pool.call(|mut c| {
                let (k, v) = (k.clone(), v.clone());
                async move { lock::enqueue(&mut c, &k, lease, v).await }
            });
            tokio::time::timeout(limit, enqueue).await
        });
        let queued = match queued {
            Ok(Ok(q)) => q,
            Ok(Err(e)) => return Err(failure(&self.settings, &e)),
            Err(_) => return Err(unavailable(&self.settings.endpoints, "no answer")),
        };
        let token = queued.revision;
        let owner = match queued.owner {
            Some(owner) if owner.revision != token => owner,
            _ => {
                self.held(token, None);
                return Ok(Turn::Ours);
            }
        };
        let askable = owner.record.is_some();
        self.queued = Some(Queued {
            token,
            value,
            record,
            holder: owner.lease.filter(|_| askable),
        });
        Ok(Turn::Behind {
            holder: owner.describe(),
            askable: askable && owner.lease.is_some(),
        })
    }

    /// Asks the holder we queued behind to stop (a takeover); it must be askable.
    pub(crate) fn ask_holder_to_stop(&mut self) -> Result<(), Failure> {
        let queued = self.queued.as_ref().expect("queued");
        let (holder, by) = (queued.holder.expect("askable"), queued.record.by());
        let key = self.settings.key.clone();
        self.ask_stop_lease(&key, holder, &by)
    }

    /// Waits for our turn (every key queued before ours gone): then the lock is ours.
    pub(crate) fn wait_for_turn(
        &mut self,
        timeout: Option<Duration>,
        signals: &Signals,
    ) -> Result<Waited<()>, Failure> {
        let Queued { token, .. } = *self.queued.as_ref().expect("queued");
        let key = self.settings.key.clone();
        let waited = self.wait_turn(&key, token, timeout, signals)?;
        if let Waited::Acquired(()) = waited {
            let queued = self.queued.take().expect("queued");
            self.held(queued.token, Some(&queued.value));
        }
        Ok(waited)
    }

    /// Who holds the key now, described ("someone" if etcd cannot say).
    pub(crate) fn holder_now(&mut self) -> String {
        let key = self.settings.key.clone();
        (self.owner_now(&key).map(|o| o.describe())).unwrap_or_else(|| "someone".into())
    }

    /// Leaves the queue (the run goes to a worktree instead), keeping the lease for the
    /// worktree's reservation.
    pub(crate) fn leave_queue(&mut self) {
        self.queued = None;
        let (Some(lease), key) = (self.lease, self.settings.key.clone()) else {
            return;
        };
        let pool = self.pool.clone();
        let my = lock::lock_key(&key, lease);
        let limit = self.settings.connect_limit();
        let _ = self.rt.block_on(async move {
            let delete = pool.call(|mut c| {
                let my = my.clone();
                async move { c.delete(my, None).await }
            });
            tokio::time::timeout(limit, delete).await
        });
    }

    /// The lock is ours: record it, watch for stop requests and for the deletion of our
    /// lock key. `waited`: the record put when we queued, whose `since` becomes now
    /// (taken at once, it is right already).
    fn held(&mut self, token: i64, waited: Option<&str>) {
        self.token = Some(token);
        let lease = self.lease.expect("granted");
        let key = self.settings.key.clone();
        if let Some(value) = waited {
            let pool = self.pool.clone();
            let (k, v) = (key.clone(), lock::Record::refresh_since(value));
            let limit = self.settings.connect_limit();
            let _ = self.rt.block_on(async move {
                let update = pool.call(|mut c| {
                    let (k, v) = (k.clone(), v.clone());
                    async move { lock::update(&mut c, &k, lease, v).await }
                });
                tokio::time::timeout(limit, update).await
            });
        }
        let task = lock::watch_stop(
            self.pool.clone(),
            key.clone(),
            lease,
            token,
            self.notifier.clone(),
        );
        self.tasks.push(self.rt.spawn(task));
        let task = lock::watch_held(
            self.pool.clone(),
            key.clone(),
            lease,
            token,
            self.notifier.clone(),
        );
        self.tasks.push(self.rt.spawn(task));
        info!("fleet lock {key} held (fencing token {token})");
    }

    /// Reserves worktree loop id `id` fleet-wide; false if another host has it (or etcd
    /// cannot say).
    pub(crate) fn reserve_worktree(&self, id: &str, record: &lock::Record) -> bool {
        let Some(lease) = self.lease else {
            return false;
        };
        let pool = self.pool.clone();
        let (key, id, value) = (self.settings.key.clone(), id.to_string(), record.to_json());
        let limit = self.settings.connect_limit();
        let done = self.rt.block_on(async move {
            let reserve = pool.call(|mut c| {
                let (key, id, value) = (key.clone(), id.clone(), value.clone());
                async move { lock::reserve(&mut c, &key, &id, lease, value).await }
            });
            tokio::time::timeout(limit, reserve).await
        });
        matches!(done, Ok(Ok(true)))
    }

    /// Asks the holder with lease `holder` to stop.
    fn ask_stop_lease(&mut self, key: &str, holder: i64, by: &str) -> Result<(), Failure> {
        let pool = self.pool.clone();
        let lease = self.lease;
        let (key, by) = (key.to_string(), by.to_string());
        let limit = self.settings.connect_limit();
        let asked = self.rt.block_on(async move {
            let ask = pool.call(|mut c| {
                let (key, by) = (key.clone(), by.clone());
                async move { lock::ask_stop(&mut c, &key, holder, &by, lease).await }
            });
            tokio::time::timeout(limit, ask).await
        });
        match asked {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(failure(&self.settings, &e)),
            Err(_) => Err(unavailable(&self.settings.endpoints, "no answer")),
        }
    }

    fn owner_now(&mut self, key: &str) -> Option<lock::Owner> {
        let pool = self.pool.clone();
        let key = key.to_string();
        let limit = self.settings.connect_limit();
        self.rt
            .block_on(async move {
                let owner = pool.call(|mut c| {
                    let key = key.clone();
                    async move { lock::owner(&mut c, &key).await }
                });
                tokio::time::timeout(limit, owner).await
            })
            .ok()?
            .ok()?
    }

    /// Waits for every key queued before ours to go, a stop signal, the timeout, or the
    /// loss of our lease (then 69).
    fn wait_turn(
        &mut self,
        key: &str,
        token: i64,
        timeout: Option<Duration>,
        signals: &Signals,
    ) -> Result<Waited<()>, Failure> {
        let pool = self.pool.clone();
        let key = key.to_string();
        let mut lost = self.lost.clone();
        let task = async move {
            tokio::select! {
                done = lock::wait_turn(&pool, &key, token) => done.map_err(Err),
                _ = lost.wait_for(|l| l.is_some()) => Err(Ok("the lease was lost while waiting".to_string())),
            }
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        match self.interruptible(task, deadline, signals)? {
            Interruptible::Done(Ok(())) => Ok(Waited::Acquired(())),
            Interruptible::Done(Err(Ok(why))) => {
                self.release();
                Err(unavailable(&self.settings.endpoints, &why))
            }
            Interruptible::Done(Err(Err(e))) => {
                self.release();
                Err(failure(&self.settings, &e))
            }
            Interruptible::Interrupted(sig) => Ok(Waited::Interrupted(sig)),
            Interruptible::TimedOut => Ok(Waited::TimedOut),
        }
    }

    /// Runs `task` on the runtime while this thread waits on the signals: a stop
    /// signal or the deadline abandons it.
    fn interruptible<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
        deadline: Option<Instant>,
        signals: &Signals,
    ) -> Result<Interruptible<T>, Failure> {
        let (mut done_rx, done_tx) = UnixStream::pair().or_fail("cannot create a socket pair")?;
        let (tx, rx) = mpsc::channel();
        let handle = self.rt.spawn(async move {
            let out = task.await;
            if tx.send(out).is_ok() {
                let _ = (&done_tx).write(&[1]);
            }
        });
        let result = loop {
            let timeout = crate::sys::poll_timeout(deadline);
            let mut fds = [
                PollFd::new(done_rx.as_fd(), PollFlags::POLLIN),
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => break Err(Failure::from(anyhow::Error::new(e).context("poll"))),
            }
            let mut interrupted = None;
            while let Some(received) = signals.next_info().or_fail("cannot read signals")? {
                let sig = received.signo;
                match crate::conflict::while_waiting(sig) {
                    crate::conflict::OnSignal::Interrupt => interrupted = Some(sig),
                    crate::conflict::OnSignal::StopSelf => {
                        let job_has_it = crate::terminal::sent_to_the_job(sig, received.code);
                        crate::terminal::stop_self(sig, job_has_it);
                    }
                    crate::conflict::OnSignal::Nothing => {}
                    crate::conflict::OnSignal::Warn => {
                        warn!(
                            "ignoring {} while waiting for the fleet lock",
                            crate::signals::name(sig)
                        )
                    }
                }
            }
            if let Some(sig) = interrupted {
                break Ok(Interruptible::Interrupted(sig));
            }
            if let Ok(out) = rx.try_recv() {
                let _ = done_rx.read(&mut [0u8; 1]);
                break Ok(Interruptible::Done(out));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break Ok(Interruptible::TimedOut);
            }
        };
        handle.abort();
        result
    }

    /// The fencing token, once the lock is held.
    pub(crate) fn token(&self) -> Option<i64> {
        self.token
    }

    /// Why the lease is (or may be) lost, if it is.
    pub(crate) fn lost(&self) -> Option<String> {
        self.lost.borrow().clone()
    }

    /// The descriptor that is readable when [`Fleet::events`] has something.
    pub(crate) fn side_fd(&self) -> BorrowedFd<'_> {
        self.wake_rx.as_fd()
    }

    /// What the runtime reported since the last call.
    pub(crate) fn events(&mut self) -> Vec<FleetEvent> {
        let mut buf = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut buf), Ok(n) if n > 0) {}
        self.events.try_iter().collect()
    }

    /// Gives the lock (and every reservation) back: revokes the lease, which deletes
    /// our keys at once. Best effort, bounded: etcd may be gone.
    pub(crate) fn release(&mut self) {
        // Each task gone before the lease is revoked: the deletion of our lock key that
        // the revocation causes is not reported as a loss.
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = self.rt.block_on(task);
        }
        let Some(lease) = self.lease.take() else {
            return;
        };
        if self.lost().is_some() {
            return;
        }
        let pool = self.pool.clone();
        let limit = self.settings.connect_limit();
        let revoked = self.rt.block_on(async move {
            let revoke = pool.call(|mut c| async move { c.lease_revoke(lease).await });
            tokio::time::timeout(limit, revoke).await
        });
        match revoked {
            Ok(Ok(_)) => debug!("fleet lock released"),
            // Revoked by an attempt whose answer was lost, or expired: gone either way.
            Ok(Err(etcd_client::Error::GRpcStatus(status)))
                if status.message().contains("lease not found") =>
            {
                debug!("fleet lock released (the lease was gone already)")
            }
            _ => warn!(
                "cannot release the fleet lock {} (revoking the lease failed); it frees when the lease expires, within {}",
                self.settings.key,
                crate::setting::short_duration(self.settings.ttl)
            ),
        }
    }

    /// Every holder and waiter under `key`, or under every key.
    pub(crate) fn list(&mut self, key: Option<&str>) -> Result<Vec<Entry>, Failure> {
        let pool = self.pool.clone();
        let key = key.map(str::to_string);
        let limit = self.settings.connect_limit();
        let listed = self.rt.block_on(async move {
            let list = pool.call(|mut c| {
                let key = key.clone();
                async move { lock::list(&mut c, key.as_deref()).await }
            });
            tokio::time::timeout(limit, list).await
        });
        match listed {
            Ok(Ok(entries)) => Ok(entries),
            Ok(Err(e)) => Err(failure(&self.settings, &e)),
            Err(_) => Err(unavailable(&self.settings.endpoints, "no answer")),
        }
    }

    /// `stop --fleet KEY`: asks KEY's holder to stop and waits (up to `timeout`) until
    /// it lets go. `Ok(None)`: nothing holds KEY.
    pub(crate) fn stop(
        &mut self,
        key: &str,
        timeout: Duration,
        by: &str,
        signals: &Signals,
    ) -> Result<StopOutcome, Failure> {
        let Some(owner) = self.owner_now(key) else {
            return Ok(StopOutcome::NotHeld);
        };
        let (Some(holder), Some(_)) = (owner.lease, owner.record.as_ref()) else {
            return Ok(StopOutcome::Foreign(owner.describe()));
        };
        // The request lives as long as this short lease.
        let ttl = timeout.as_secs().clamp(5, 3600) as i64;
        let pool = self.pool.clone();
        let limit = self.settings.connect_limit();
        let lease = self.rt.block_on(async move {
            let grant = pool.call(|mut c| async move { c.lease_grant(ttl, None).await });
            tokio::time::timeout(limit, grant).await
        });
        let lease = match lease {
            Ok(Ok(resp)) => resp.id(),
            Ok(Err(e)) => return Err(failure(&self.settings, &e)),
            Err(_) => return Err(unavailable(&self.settings.endpoints, "no answer")),
        };
        self.lease = Some(lease);
        self.ask_stop_lease(key, holder, by)?;
        let pool = self.pool.clone();
        let gone = lock::lock_key(key, holder);
        // From the revision etcd showed the holder at (its own may be compacted away).
        let rev = owner.seen_at.max(owner.revision);
        let task = async move { lock::wait_gone_retrying(&pool, &gone, rev).await };
        let outcome = match self.interruptible(task, Some(Instant::now() + timeout), signals)? {
            Interruptible::Done(Ok(())) => StopOutcome::Stopped(owner.describe()),
            Interruptible::Done(Err(e)) => return Err(failure(&self.settings, &e)),
            Interruptible::Interrupted(sig) => StopOutcome::Interrupted(sig),
            Interruptible::TimedOut => StopOutcome::TimedOut(owner.describe()),
        };
        self.release();
        Ok(outcome)
    }

    /// Grants the lease a worktree loop's reservation lives on (no lock queued).
    pub(crate) fn start_lease(&mut self, grace: Duration) -> Result<(), Failure> {
        if self.lease.is_none() {
            self.grant(grace)?;
        }
        Ok(())
    }
}

/// What `run` asks of fleet mode (the default build has the same names in `off.rs`).
impl Fleet {
    /// Connects when `[fleet] endpoints` is set: etcd must answer before anything runs.
    pub(crate) fn for_run(run: &RunSettings) -> Result<Option<Fleet>, Failure> {
        match Settings::from_policy(&run.policy, run.repo.as_deref())? {
            None => Ok(None),
            Some(settings) => Fleet::connect(settings).map(Some),
        }
    }

    /// A worktree run: its lease (if none yet) and a check that reserves ids.
    pub(crate) fn worktree_reserver(
        &mut self,
        run: &RunSettings,
    ) -> Result<impl Fn(&str) -> bool + '_, Failure> {
        self.start_lease(self.settings.grace(run.policy.stop.grace))?;
        let record = lock::Record::new(&run.workspace, &run.prompt);
        Ok(move |id: &str| {
            let reserved = self.reserve_worktree(id, &record);
            if !reserved {
                debug!(id, "worktree id taken in the fleet (or etcd cannot say)");
            }
            reserved
        })
    }

    /// The key.
    pub(crate) fn key(&self) -> &str {
        &self.settings.key
    }

    /// The runtime's reports as supervision events; a lost lease stops the child
    /// with `min(stop_grace, ttl/3)`.
    pub(crate) fn supervisor_events(&mut self, stop_grace: Duration) -> Vec<Event> {
        let grace = self.settings.grace(stop_grace);
        (self.events().into_iter())
            .map(|event| match event {
                FleetEvent::LeaseLost(_) => Event::LeaseLost { grace },
                FleetEvent::StopAsked(by) => {
                    info!(
                        "stop asked through the fleet lock by {}",
                        crate::present::escape(&by)
                    );
                    Event::StopRequest { signal: None }
                }
            })
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.release();
    }
}

/// How `stop --fleet` ended.
pub(crate) enum StopOutcome {
    NotHeld,
    /// Held by something that cannot be asked (`etcdctl lock`): described.
    Foreign(String),
    Stopped(String),
    TimedOut(String),
    Interrupted(i32),
}

enum Interruptible<T> {
    Done(T),
    TimedOut,
    Interrupted(i32),
}

fn unavailable(endpoints: &[String], why: &str) -> Failure {
    unavailable_with(endpoints, why, "check [fleet] endpoints and that etcd runs")
}

fn unavailable_with(endpoints: &[String], why: &str, fix: &str) -> Failure {
    let msg = format!(
        "etcd at {} is unavailable ({why}); {fix}",
        endpoints.join(", ")
    );
    Failure::msg(ExitStatus::Unavailable, msg)
}

/// What went wrong, with the deepest cause when it says more: "transport error: stream
/// closed because of a broken pipe", "tcp connect error: Connection refused (os error 111)".
fn why(e: &etcd_client::Error) -> String {
    let (why, mut cause) = match e {
        etcd_client::Error::GRpcStatus(status) => (
            status.message().to_string(),
            std::error::Error::source(status),
        ),
        e => (e.to_string(), std::error::Error::source(e)),
    };
    let mut deepest = None;
    while let Some(inner) = cause {
        deepest = Some(inner.to_string());
        cause = inner.source();
    }
    match deepest {
        Some(inner) if !why.contains(&inner) => format!("{why}: {inner}"),
        _ => why,
    }
}

/// Whether etcd refused the credentials or the token: gRPC's codes 7
/// PERMISSION_DENIED, 16 UNAUTHENTICATED, or etcd's own words (not a cause below them:
/// "permission denied" may be the system's, on a connect); a watch etcd cancelled as
/// not permitted.
pub(crate) fn auth_refused(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            matches!(status.code() as i32, 7 | 16)
                || message.contains("authentication failed")
                || message.contains("user name is empty")
                || message.contains("invalid auth token")
                || message.contains("permission denied")
        }
        etcd_client::Error::WatchError(reason) => reason.contains("permission denied"),
        _ => false,
    }
}

/// An etcd error as an exit status: refused credentials 77, anything else 69.
fn failure(settings: &Settings, e: &etcd_client::Error) -> Failure {
    let endpoints = &settings.endpoints;
    let why = why(e);
    if let etcd_client::Error::GRpcStatus(status) = e {
        let message = status.message();
        if message.contains("authentication is not enabled") {
            return Failure::msg(
                ExitStatus::NoPermission,
                format!(
                    "etcd at {} does not use authentication, but {ENV_USER} is set; unset {ENV_USER} and {ENV_PASSWORD}, or enable authentication in etcd",
                    endpoints.join(", ")
                ),
            );
        }
    }
    if auth_refused(e) {
        return Failure::msg(
            ExitStatus::NoPermission,
            format!(
                "etcd at {} refused the credentials ({why}); check {ENV_USER} and {ENV_PASSWORD}",
                endpoints.join(", ")
            ),
        );
    }
    unavailable(endpoints, &why)
}

/// How a TLS connection that the server ended shows, after the TCP connect: the end of
/// the stream, or the server's alert (which of the two depends on timing).
const TLS_ENDED: &[&str] = &[
    "broken pipe",
    "connection reset",
    "fatal alert",
    "close_notify",
];

/// [`failure`] for the first connection, where TLS mistakes show, each naming what to
/// set: a certificate of etcd's that `tls_ca`'s authority did not sign, one for another
/// name than the endpoint's, one refused otherwise (its dates, its key usage); and an
/// https connection etcd ended, which it does to a client without a certificate its
/// authority signed.
fn connect_failure(settings: &Settings, e: &etcd_client::Error) -> Failure {
    let why = why(e);
    let https = settings
        .endpoints
        .iter()
        .any(|url| url.starts_with("https://"));
    let fix = if why.contains("invalid peer certificate: UnknownIssuer") {
        "set [fleet] tls_ca to the PEM file of the authority that signed etcd's certificate"
    } else if why.contains("invalid peer certificate: certificate not valid for name") {
        "name etcd in [fleet] endpoints as its certificate does"
    } else if why.contains("invalid peer certificate") {
        "check etcd's certificate (its dates, its key usage) and [fleet] tls_ca"
    } else if https && TLS_ENDED.iter().any(|end| why.contains(end)) {
        match settings.tls_cert {
            None => "etcd may ask for a client certificate: set [fleet] tls_cert and tls_key",
            Some(_) => {
                "check [fleet] tls_cert and tls_key: etcd takes client certificates its authority signed"
            }
        }
    } else {
        return failure(settings, e);
    };
    unavailable_with(&settings.endpoints, &why, fix)
}

/// The settings `status/list/stop --fleet` connect with: the policy's endpoints (a
/// missing key is not needed by `list` or `stop`).
fn control_settings(
    policy: &Policy,
    repo: Option<&Path>,
    need_key: bool,
) -> Result<Settings, Failure> {
    let Some(endpoints) = policy.fleet.endpoints.clone() else {
        return Err(Failure::msg(
            ExitStatus::Usage,
            "no [fleet] endpoints in the policy: set them in .ralph/supervise.toml (or the file $RALPH_SUPERVISE_POLICY names)",
        ));
    };
    let key = match (&policy.fleet.key, need_key) {
        (Some(key), _) => key.clone(),
        (None, true) => default_key(repo, key::FIX_STATUS)?,
        (None, false) => String::new(),
    };
    Ok(Settings::with(policy, endpoints, key))
}

/// `status --fleet` (this workspace's key; exit 0 when held, 3 when not) and `list
/// --fleet` (every key).
pub(crate) fn show(
    policy: &Policy,
    repo: Option<&Path>,
    every_key: bool,
    json: bool,
) -> Result<ExitStatus, Failure> {
    let settings = control_settings(policy, repo, !every_key)?;
    let key = (!every_key).then(|| settings.key.clone());
    let mut fleet = Fleet::connect(settings)?;
    let entries = fleet.list(key.as_deref())?;
    let text = match json {
        true => serde_json::to_string_pretty(&entries).unwrap_or_default() + "\n",
        false => crate::present::fleet_table(&entries, key.as_deref()),
    };
    crate::logging::print(&text)?;
    let held = entries.iter().any(|e| e.role == lock::Role::Holder);
    Ok(match held || every_key {
        true => ExitStatus::SUCCESS,
        false => ExitStatus::NotRunning,
    })
}

/// `stop --fleet KEY`: asks KEY's holder to stop and waits until it lets go (0), the
/// timeout (124), or says nothing holds it (3) or that its holder cannot be asked (69).
pub(crate) fn stop(policy: &Policy, key: &str, timeout: Duration) -> Result<ExitStatus, Failure> {
    if let Err(why) = crate::fleet_settings::check_fleet_key(key) {
        return Err(Failure::msg(
            ExitStatus::Usage,
            format!("{key:?} is not a fleet key ({why})"),
        ));
    }
    let signals = Signals::install().or_fail("cannot set up signal handling")?;
    let mut settings = control_settings(policy, None, false)?;
    settings.key = key.to_string();
    let mut fleet = Fleet::connect(settings)?;
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let by = format!(
        "host {host} pid {} (ralph-supervise stop --fleet)",
        std::process::id()
    );
    let line = |text: String| crate::logging::print(&format!("{text}\n"));
    match fleet.stop(key, timeout, &by, &signals)? {
        StopOutcome::NotHeld => Err(Failure::msg(
            ExitStatus::NotRunning,
            format!("nothing holds fleet key {key}"),
        )),
        // Nothing here failed: a stop through etcd is not available for this holder.
        StopOutcome::Foreign(who) => Err(Failure::msg(
            ExitStatus::Unavailable,
            format!(
                "fleet key {key} is held by {who}, which cannot be asked to stop; stop it where it runs"
            ),
        )),
        StopOutcome::Stopped(who) => {
            line(format!(
                "stopped: fleet key {key} was held by {who} and is released"
            ))?;
            Ok(ExitStatus::SUCCESS)
        }
        StopOutcome::TimedOut(who) => Err(Failure::msg(
            ExitStatus::Timeout,
            format!(
                "fleet key {key} is still held by {who} after {}; it was asked to stop",
                crate::setting::short_duration(timeout)
            ),
        )),
        StopOutcome::Interrupted(sig) => Ok(ExitStatus::Signaled(sig)),
    }
}
