//! etcd's lock recipe (as `clientv3/concurrency.Mutex` and so `etcdctl lock` do it),
//! with the records ralph-supervise keeps beside it: who holds or waits (a JSON value),
//! stop requests, worktree reservations. See the layout in [`super`].

use chrono::Utc;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget,
    Txn, TxnOp, TxnOpResponse, WatchFilterType, WatchOptions,
};
use serde::{Deserialize, Serialize};

use super::pool::Pool;

type Result<T> = std::result::Result<T, etcd_client::Error>;

/// Every lock's keys are under this prefix.
pub(crate) const LOCKS: &str = "ralph-supervise/lock/";
const STOPS: &str = "ralph-supervise/stop/";
const WORKTREES: &str = "ralph-supervise/worktree/";

/// The lock's prefix for `key` (what `etcdctl lock` is given, plus `/`).
fn prefix(key: &str) -> String {
    format!("{LOCKS}{key}/")
}

/// A contender's key: the prefix and its lease in hex (as etcd's recipe names it).
pub(crate) fn lock_key(key: &str, lease: i64) -> String {
    format!("{}{lease:x}", prefix(key))
}

fn stop_key(key: &str, holder: i64) -> String {
    format!("{STOPS}{key}/{holder:x}")
}

/// What a supervisor writes as the value of its lock key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) host: String,
    pub(crate) pid: u32,
    /// RFC 3339: when it began waiting, then when it took the lock.
    pub(crate) since: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) workspace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) prompt: Option<String>,
}

impl Record {
    pub(crate) fn new(workspace: &std::path::Path, prompt: &str) -> Record {
        Record {
            host: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            pid: std::process::id(),
            since: crate::metadata::format_time(&Utc::now()),
            workspace: Some(workspace.to_string_lossy().into_owned()),
            prompt: Some(crate::metadata::truncate_prompt(prompt)),
        }
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The same record with `since` now.
    pub(crate) fn refresh_since(json: &str) -> String {
        match serde_json::from_str::<Record>(json) {
            Ok(mut r) => {
                r.since = crate::metadata::format_time(&Utc::now());
                r.to_json()
            }
            Err(_) => json.to_string(),
        }
    }

    /// "host H pid P" for a stop request's `by`.
    pub(crate) fn by(&self) -> String {
        format!("host {} pid {}", self.host, self.pid)
    }
}

/// The owner of a lock, or one of its queue.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    /// Its create revision: the fencing token it holds (or will).
    pub(crate) revision: i64,
    /// The lease its key was put with (from the key's name).
    pub(crate) lease: Option<i64>,
    /// `None`: not a ralph-supervise (`etcdctl lock`, another tool).
    pub(crate) record: Option<Record>,
    pub(crate) key: String,
    /// The revision etcd answered at (0 when not known): a watch from after it sees
    /// what happens to the key next.
    pub(crate) seen_at: i64,
}

impl Owner {
    fn from_kv(kv: &KeyValue) -> Owner {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let lease = key
            .rsplit('/')
            .next()
            .and_then(|hex| i64::from_str_radix(hex, 16).ok());
        Owner {
            revision: kv.create_revision(),
            lease,
            record: serde_json::from_slice(kv.value()).ok(),
            key,
            seen_at: 0,
        }
    }

    /// "host H, pid P, since S (token T)", or what is known of another tool's key.
    pub(crate) fn describe(&self) -> String {
        match &self.record {
            Some(r) => format!(
                "host {}, pid {}, since {} (fencing token {})",
                crate::present::escape(&r.host),
                r.pid,
                r.since,
                self.revision
            ),
            None => format!(
                "another tool (etcd key {}, as `etcdctl lock` makes; fencing token {})",
                crate::present::escape(&self.key),
                self.revision
            ),
        }
    }
}

/// Our place in the queue.
pub(crate) struct Queued {
    /// Our key's create revision: the fencing token once we hold the lock.
    pub(crate) revision: i64,
    /// Whoever holds the lock now (maybe us).
    pub(crate) owner: Option<Owner>,
}

/// Every key under a lock's prefix, oldest first. (No limit: keys of a nested lock,
/// `<key>/<sub>/<lease>`, share the prefix and are skipped by [`of_lock`].)
fn first_created() -> GetOptions {
    GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
}

/// Whether `kv` is a contender of the lock with prefix `pfx` itself (`<pfx><lease>`),
/// not of a lock on a key nested below it.
fn of_lock(pfx: &str, kv: &KeyValue) -> bool {
    (kv.key().strip_prefix(pfx.as_bytes())).is_some_and(|rest| !rest.contains(&b'/'))
}

/// Puts our key (once), and reads the owner, in one transaction.
pub(crate) async fn enqueue(
    c: &mut Client,
    key: &str,
    lease: i64,
    value: String,
) -> Result<Queued> {
    let (pfx, my) = (prefix(key), lock_key(key, lease));
    let txn = Txn::new()
        .when([Compare::create_revision(my.clone(), CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(my.clone(), value, Some(PutOptions::new().with_lease(lease))),
            TxnOp::get(pfx.clone(), Some(first_created())),
        ])
        .or_else([
            TxnOp::get(my.clone(), None),
            TxnOp::get(pfx.clone(), Some(first_created())),
        ]);
    let resp = c.txn(txn).await?;
    let responses = resp.op_responses();
    let revision = if resp.succeeded() {
        resp.header().map_or(0, |h| h.revision())
    } else {
        match responses.first() {
            Some(TxnOpResponse::Get(get)) => get.kvs().first().map_or(0, |kv| kv.create_revision()),
            _ => 0,
        }
    };
    let owner = match responses.last() {
        Some(TxnOpResponse::Get(get)) => (get.kvs().iter())
            .find(|kv| of_lock(&pfx, kv))
            .map(Owner::from_kv),
        _ => None,
    };
    Ok(Queued { revision, owner })
}

/// Rewrites our key's value (its create revision stays).
pub(crate) async fn update(c: &mut Client, key: &str, lease: i64, value: String) -> Result<()> {
    let my = lock_key(key, lease);
    c.put(my, value, Some(PutOptions::new().with_lease(lease)))
        .await?;
    Ok(())
}

/// The lock's owner now, if any.
pub(crate) async fn owner(c: &mut Client, key: &str) -> Result<Option<Owner>> {
    let pfx = prefix(key);
    let resp = c.get(pfx.clone(), Some(first_created())).await?;
    let at = resp.header().map_or(0, |h| h.revision());
    Ok((resp.kvs().iter())
        .find(|kv| of_lock(&pfx, kv))
        .map(|kv| Owner {
            seen_at: at,
            ..Owner::from_kv(kv)
        }))
}

/// How a request that failed is tried again: an expired or forgotten auth token is
/// renewed at once; anything else after a pause (doubling up to 2 s), at debug level,
/// with one warning once it persists. Refused credentials, and a refusal right after a
/// new token was given, cannot be helped: they end the retrying.
pub(crate) struct Retry {
    what: &'static str,
    pause: std::time::Duration,
    failures: u32,
    warned: bool,
    renewed: Option<std::time::Instant>,
}

impl Retry {
    pub(crate) fn new(what: &'static str) -> Retry {
        Retry {
            what,
            pause: std::time::Duration::from_millis(100),
            failures: 0,
            warned: false,
            renewed: None,
        }
    }

    /// A request went through: failures from now on count afresh.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
        self.pause = std::time::Duration::from_millis(100);
    }

    /// After `e`, which was not about the credentials, on an endpoint left for the next:
    /// once it is time to try again.
    pub(crate) async fn after_elsewhere(&mut self, e: etcd_client::Error) {
        self.failures += 1;
        if self.failures >= 5 && !self.warned {
            self.warned = true;
            tracing::warn!("{}: {}; still trying", self.what, super::why(&e));
        } else {
            tracing::debug!("{}: {e}; trying again", self.what);
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(std::time::Duration::from_secs(2));
    }

    /// After `e`: `Ok` once it is time to try again, `Err` when trying again cannot help.
    pub(crate) async fn after(&mut self, c: &Client, e: etcd_client::Error) -> Result<()> {
        let mut e = e;
        if super::auth_refused(&e) {
            // A token renewed less than a second ago and refused again: not a matter of
            // its age (etcd's tokens live whole seconds), but of the user's rights.
            if self.renewed.is_some_and(|at| at.elapsed().as_secs() < 1) {
                return Err(e);
            }
            match c.refresh_token().await {
                Ok(()) => {
                    tracing::debug!("{}: {e}; authenticated again", self.what);
                    self.renewed = Some(std::time::Instant::now());
                    return Ok(());
                }
                Err(refresh) if super::auth_refused(&refresh) => return Err(refresh),
                Err(refresh) => e = refresh,
            }
        }
        self.after_elsewhere(e).await;
        Ok(())
    }
}

/// Waits until no key queued before `revision` is left (etcd's `waitDeletes`): each
/// time, the newest older key is watched until it is deleted. A failed request (a
/// connection lost, a member restarting, a token expired) is tried again ([`Retry`]);
/// refused credentials end the wait with their error. The loss of our own lease also
/// ends it (the caller watches for that).
pub(crate) async fn wait_turn(pool: &Pool, key: &str, revision: i64) -> Result<()> {
    retrying(pool, "waiting for the fleet lock", |mut c| async move {
        wait_turn_once(&mut c, key, revision).await
    })
    .await
}

/// [`wait_gone`], tried again (on the next endpoint) when it fails ([`Retry`]).
pub(crate) async fn wait_gone_retrying(pool: &Pool, key: &str, at: i64) -> Result<()> {
    retrying(
        pool,
        "waiting for the fleet lock's holder to let go",
        |mut c| async move { wait_gone(&mut c, key, at).await },
    )
    .await
}

/// Runs `op` on the pool's endpoint until it succeeds: a failure moves on to the next
/// endpoint and is tried again ([`Retry`], which names it `what`); an expired token is
/// renewed; refused credentials end it with their error.
async fn retrying<F, Fut>(pool: &Pool, what: &'static str, mut op: F) -> Result<()>
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut retry = Retry::new(what);
    loop {
        let (i, c) = pool.current().await;
        let e = match c {
            Ok(c) => match op(c.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if super::auth_refused(&e) => {
                    retry.after(&c, e).await?;
                    continue;
                }
                Err(e) => e,
            },
            Err(e) => e,
        };
        pool.failed(i);
        retry.after_elsewhere(e).await;
    }
}

async fn wait_turn_once(c: &mut Client, key: &str, revision: i64) -> Result<()> {
    let pfx = prefix(key);
    loop {
        let options = GetOptions::new()
            .with_prefix()
            .with_max_create_revision(revision - 1)
            .with_sort(SortTarget::Create, SortOrder::Descend);
        let resp = c.get(pfx.clone(), Some(options)).await?;
        let Some(before) = resp.kvs().iter().find(|kv| of_lock(&pfx, kv)) else {
            return Ok(());
        };
        let at = resp.header().map_or(0, |h| h.revision());
        wait_gone(c, &String::from_utf8_lossy(before.key()), at).await?;
    }
}

/// A watch etcd cancelled for a reason (a token it did not take: "permission
/// denied"), as an error.
fn cancelled(resp: &etcd_client::WatchResponse) -> Option<etcd_client::Error> {
    let reason = resp.cancel_reason();
    (resp.canceled() && !reason.is_empty())
        .then(|| etcd_client::Error::WatchError(reason.to_string()))
}

/// Waits until `key` is deleted after revision `at` (at once if it was meanwhile). A
/// watch etcd cancels because it compacted past `at` (or that ends) proves nothing:
/// the key is looked up again, and watched from the revision of that answer.
pub(crate) async fn wait_gone(c: &mut Client, key: &str, at: i64) -> Result<()> {
    let mut at = at;
    loop {
        let options = WatchOptions::new()
            .with_start_revision(at + 1)
            .with_filters([WatchFilterType::NoPut]);
        let mut stream = c.watch(key, Some(options)).await?;
        while let Some(resp) = stream.message().await? {
            if let Some(e) = cancelled(&resp) {
                return Err(e);
            }
            if resp.canceled() {
                break;
            }
            if (resp.events().iter()).any(|e| e.event_type() == EventType::Delete) {
                return Ok(());
            }
        }
        let resp = c
            .get(key, Some(GetOptions::new().with_count_only()))
            .await?;
        if resp.count() == 0 {
            return Ok(());
        }
        at = resp.header().map_or(at, |h| h.revision());
    }
}

/// The stop request a takeover or `stop --fleet` writes for the holder with lease
/// `holder`; it lives on `lease` (the asker's), if given.
pub(crate) async fn ask_stop(
    c: &mut Client,
    key: &str,
    holder: i64,
    by: &str,
    lease: Option<i64>,
) -> Result<()> {
    let value = serde_json::json!({ "by": by, "at": crate::metadata::format_time(&Utc::now()) });
    let options = lease.map(|l| PutOptions::new().with_lease(l));
    c.put(stop_key(key, holder), value.to_string(), options)
        .await?;
    Ok(())
}

/// What a [`follow`]ed key showed.
enum Seen<'a> {
    /// An event the watch let through.
    Event(&'a etcd_client::Event),
    /// After etcd compacted past the watch's start: the key now (`None`: absent).
    Now(Option<&'a KeyValue>),
}

/// Watches `key` from revision `from` on, with `filter`, and hands `seen` what it shows
/// (and the revision the watch would start from again) until `seen` says it is done.
/// A broken watch is opened again from after the last event ([`Retry`], named
/// `watching`); one etcd compacted past that revision is answered by a look at the key.
/// Credentials refused for good leave the holder blind to `what`, which is said once,
/// and it keeps trying.
async fn follow(
    pool: Pool,
    (watching, what): (&'static str, &'static str),
    key: String,
    from: i64,
    filter: WatchFilterType,
    mut seen: impl FnMut(Seen<'_>, i64) -> std::ops::ControlFlow<()>,
) {
    let mut next = from;
    let mut retry = Retry::new(watching);
    let mut deaf = false;
    'watch: loop {
        let (i, c) = pool.current().await;
        let mut c = match c {
            Ok(c) => c,
            Err(e) => {
                pool.failed(i);
                retry.after_elsewhere(e).await;
                continue;
            }
        };
        let options = WatchOptions::new()
            .with_start_revision(next)
            .with_filters([filter]);
        let broken = match c.watch(key.clone(), Some(options)).await {
            Err(e) => e,
            Ok(mut stream) => loop {
                match stream.message().await {
                    Err(e) => break e,
                    Ok(None) => break etcd_client::Error::WatchError("the watch ended".into()),
                    Ok(Some(resp)) => {
                        if let Some(e) = cancelled(&resp) {
                            break e;
                        }
                        retry.reset();
                        if resp.compact_revision() > 0 {
                            // Compacted past `next` (while the watch was away): the key
                            // as it is now says what happened meanwhile.
                            match c.get(key.clone(), None).await {
                                Ok(got) => {
                                    if seen(Seen::Now(got.kvs().first()), next).is_break() {
                                        return;
                                    }
                                    let at = got.header().map_or(0, |h| h.revision());
                                    next = next.max(at + 1);
                                    continue 'watch;
                                }
                                Err(e) => break e,
                            }
                        }
                        for event in resp.events() {
                            if let Some(kv) = event.kv() {
                                next = next.max(kv.mod_revision() + 1);
                            }
                            if seen(Seen::Event(event), next).is_break() {
                                return;
                            }
                        }
                    }
                }
            },
        };
        if !super::auth_refused(&broken) {
            pool.failed(i);
            retry.after_elsewhere(broken).await;
        } else if let Err(e) = retry.after(&c, broken).await {
            if !deaf {
                deaf = true;
                tracing::warn!(
                    "etcd refuses this holder's credentials ({}): it cannot {what} until they are taken again; check {} and {}",
                    super::why(&e),
                    super::ENV_USER,
                    super::ENV_PASSWORD
                );
            }
            retry = Retry::new(watching);
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    }
}

/// Watches this holder's stop-request key from `from` on; each request is reported.
pub(crate) async fn watch_stop(
    pool: Pool,
    key: String,
    lease: i64,
    from: i64,
    notifier: super::Notifier,
) {
    let stop = stop_key(&key, lease);
    follow(
        pool,
        (
            "watching for fleet stop requests",
            "hear fleet stop requests",
        ),
        stop,
        from,
        WatchFilterType::NoDelete,
        |seen, from| {
            let asked = match seen {
                Seen::Event(event) => event.kv(),
                // What was asked while the watch was away is still there.
                Seen::Now(kv) => kv.filter(|kv| kv.mod_revision() >= from),
            };
            if let Some(kv) = asked {
                notifier.send(super::FleetEvent::StopAsked(asked_by(kv)));
            }
            std::ops::ControlFlow::Continue(())
        },
    )
    .await
}

/// Watches the holder's own lock key (created at revision `token`): its deletion, by
/// hand (`etcdctl del`) or with its lease (`etcdctl lease revoke`), means the lock is
/// no longer ours, and is reported at once as a lost lease. (Our own release aborts
/// this task before it revokes the lease.)
pub(crate) async fn watch_held(
    pool: Pool,
    key: String,
    lease: i64,
    token: i64,
    notifier: super::Notifier,
) {
    let my = lock_key(&key, lease);
    let deleted = format!(
        "the fleet lock key was deleted ({my}: removed by hand, or its lease revoked); the lock is no longer held"
    );
    follow(
        pool,
        (
            "watching the fleet lock key",
            "see its fleet lock key deleted",
        ),
        my,
        token,
        WatchFilterType::NoPut,
        |seen, _| {
            let gone = match seen {
                Seen::Event(event) => event.event_type() == EventType::Delete,
                // Absent, or put again (not ours: another create revision).
                Seen::Now(kv) => kv.is_none_or(|kv| kv.create_revision() != token),
            };
            if !gone {
                return std::ops::ControlFlow::Continue(());
            }
            tracing::warn!("{}: stopping the command", crate::present::escape(&deleted));
            notifier.send(super::FleetEvent::LeaseLost(deleted.clone()));
            std::ops::ControlFlow::Break(())
        },
    )
    .await
}

/// Who asked, from a stop request's value ("someone" if it does not say).
fn asked_by(kv: &KeyValue) -> String {
    serde_json::from_slice::<serde_json::Value>(kv.value())
        .ok()
        .and_then(|v| v.get("by")?.as_str().map(str::to_string))
        .unwrap_or_else(|| "someone".into())
}

/// Reserves worktree id `id` under `key` for `lease`; false if another has it.
pub(crate) async fn reserve(
    c: &mut Client,
    key: &str,
    id: &str,
    lease: i64,
    value: String,
) -> Result<bool> {
    let name = format!("{WORKTREES}{key}/{id}");
    let txn = Txn::new()
        .when([Compare::create_revision(name.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            name,
            value,
            Some(PutOptions::new().with_lease(lease)),
        )]);
    Ok(c.txn(txn).await?.succeeded())
}

/// Whether a lock key holds or waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    Holder,
    Waiter,
    /// A worktree loop's reserved id.
    Worktree,
}

/// One holder, waiter or worktree reservation, for `status/list --fleet`. As JSON (see
/// ralph-supervise-status(1)): keys in alphabetical order (the fields' order), every key
/// always present.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Entry {
    /// Not a ralph-supervise (`etcdctl lock`).
    pub(crate) foreign: bool,
    pub(crate) host: Option<String>,
    /// The worktree loop's id (reservations only).
    pub(crate) id: Option<String>,
    pub(crate) key: String,
    pub(crate) pid: Option<u32>,
    pub(crate) role: Role,
    pub(crate) since: Option<String>,
    /// The create revision: the fencing token (a holder's), or the queue position.
    pub(crate) token: i64,
}

/// Every lock key (and reservation) under `key`, or under all keys; in each lock, the
/// oldest holds and the rest wait.
pub(crate) async fn list(c: &mut Client, key: Option<&str>) -> Result<Vec<Entry>> {
    let sorted = || {
        GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
    };
    let (locks, worktrees) = match key {
        Some(k) => (prefix(k), format!("{WORKTREES}{k}/")),
        None => (LOCKS.to_string(), WORKTREES.to_string()),
    };
    let mut entries = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for kv in c.get(locks, Some(sorted())).await?.kvs() {
        let owner = Owner::from_kv(kv);
        let Some(name) = owner
            .key
            .strip_prefix(LOCKS)
            .and_then(|k| k.rsplit_once('/'))
        else {
            continue;
        };
        let lock = name.0.to_string();
        if key.is_some_and(|k| k != lock) {
            continue;
        }
        let role = match seen.insert(lock.clone()) {
            true => Role::Holder,
            false => Role::Waiter,
        };
        entries.push(entry(lock, role, None, &owner));
    }
    for kv in c.get(worktrees, Some(sorted())).await?.kvs() {
        let owner = Owner::from_kv(kv);
        let Some((lock, id)) = owner
            .key
            .strip_prefix(WORKTREES)
            .and_then(|k| k.rsplit_once('/'))
        else {
            continue;
        };
        if key.is_some_and(|k| k != lock) {
            continue;
        }
        entries.push(entry(
            lock.to_string(),
            Role::Worktree,
            Some(id.to_string()),
            &owner,
        ));
    }
    entries.sort_by(|a, b| {
        (&a.key, a.role == Role::Worktree, a.token).cmp(&(
            &b.key,
            b.role == Role::Worktree,
            b.token,
        ))
    });
    Ok(entries)
}

fn entry(key: String, role: Role, id: Option<String>, owner: &Owner) -> Entry {
    let r = owner.record.as_ref();
    Entry {
        key,
        role,
        id,
        host: r.map(|r| r.host.clone()),
        pid: r.map(|r| r.pid),
        since: r.map(|r| r.since.clone()),
        token: owner.revision,
        foreign: r.is_none(),
    }
}
