//! One etcd client per endpoint, and requests that move on to the next endpoint when
//! one fails or stays silent.
//!
//! etcd-client balances a single channel over every endpoint: a request that lands on
//! a member that is down fails, and one on a frozen member hangs until HTTP/2 pings
//! notice (up to 3/4 of the TTL). Here each endpoint has a client of its own (connected
//! when first needed); a request goes to the endpoint that answered last and, when it
//! fails with something another member may not say (a connection refused, no leader,
//! a timeout), or gets no answer within [`Pool::attempt`], to the next one.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, Error};
use tokio::sync::Mutex;

type Result<T> = std::result::Result<T, Error>;

#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    options: ConnectOptions,
    clients: Vec<Mutex<Option<Client>>>,
    current: AtomicUsize,
    attempt: Duration,
}

impl Pool {
    /// A pool over `endpoints`; with several, each attempt is given `attempt` (with one
    /// there is nowhere else to go: only the caller's own deadline bounds it).
    pub(crate) fn new(endpoints: &[String], options: ConnectOptions, attempt: Duration) -> Pool {
        let attempt = match endpoints.len() {
            1 => Duration::from_secs(3600),
            _ => attempt,
        };
        Pool {
            inner: Arc::new(Inner {
                endpoints: endpoints.to_vec(),
                options,
                clients: endpoints.iter().map(|_| Mutex::new(None)).collect(),
                current: AtomicUsize::new(0),
                attempt,
            }),
        }
    }

    /// How long one attempt on one endpoint may take before the next is tried.
    pub(crate) fn attempt(&self) -> Duration {
        self.inner.attempt
    }

    /// The endpoint that answered last (or is to be tried next), and its client.
    pub(crate) async fn current(&self) -> (usize, Result<Client>) {
        let i = self.inner.current.load(Ordering::Relaxed);
        (i, self.client(i).await)
    }

    /// Endpoint `i` failed: the next request goes to the one after it.
    pub(crate) fn failed(&self, i: usize) {
        let next = (i + 1) % self.inner.endpoints.len();
        let _ =
            (self.inner.current).compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Endpoint `i`'s client, connected (and authenticated) on first use.
    async fn client(&self, i: usize) -> Result<Client> {
        let mut slot = self.inner.clients[i].lock().await;
        if let Some(client) = &*slot {
            return Ok(client.clone());
        }
        let endpoint = [self.inner.endpoints[i].as_str()];
        let client = Client::connect(endpoint, Some(self.inner.options.clone())).await?;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Runs `op` on the endpoint that answered last, then on each other one in turn
    /// while they fail in a way another member may not: the first answer, an error that
    /// would be the same anywhere (refused credentials, a lease not found), or the last
    /// endpoint's error.
    pub(crate) async fn call<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let n = self.inner.endpoints.len();
        let start = self.inner.current.load(Ordering::Relaxed);
        let mut last = None;
        for k in 0..n {
            let i = (start + k) % n;
            let attempt = async {
                let client = self.client(i).await?;
                op(client).await
            };
            let e = match tokio::time::timeout(self.inner.attempt, attempt).await {
                Ok(Ok(answer)) => {
                    self.inner.current.store(i, Ordering::Relaxed);
                    return Ok(answer);
                }
                Ok(Err(e)) if !elsewhere(&e) => return Err(e),
                Ok(Err(e)) => e,
                Err(_) => silent(self.inner.attempt),
            };
            tracing::debug!("etcd at {}: {e}", self.inner.endpoints[i]);
            self.failed(i);
            last = Some(e);
        }
        Err(last.unwrap_or_else(|| Error::InvalidArgs("no endpoints".into())))
    }
}

/// The error of an attempt that got no answer in time.
pub(crate) fn silent(after: Duration) -> Error {
    let why = format!("no answer within {}", crate::setting::short_duration(after));
    Error::IoError(std::io::Error::new(std::io::ErrorKind::TimedOut, why))
}

/// Whether another member might answer where this one failed: not for refused
/// credentials or a request etcd turned down as such (gRPC's 3 INVALID_ARGUMENT,
/// 5 NOT_FOUND, 6 ALREADY_EXISTS, 9 FAILED_PRECONDITION, 11 OUT_OF_RANGE).
fn elsewhere(e: &Error) -> bool {
    match e {
        Error::GRpcStatus(status) => {
            !super::auth_refused(e) && !matches!(status.code() as i32, 3 | 5 | 6 | 9 | 11)
        }
        Error::InvalidArgs(_) | Error::InvalidUri(_) => false,
        _ => true,
    }
}
