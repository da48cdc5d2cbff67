//! Keeping the run's lease alive, and saying in time when it might lapse.
//!
//! etcd lets a lease expire `ttl` after the last keep-alive it received; a keep-alive
//! sent at `t` and answered was received after `t`, so the lease lasts at least until
//! `t + ttl`. The task sends one every `ttl/4`; when none has been answered for
//! `ttl - grace - ttl/6` (a margin of a sixth for the stop and the KILL to land), it
//! reports [`FleetEvent::LeaseLost`]: the child is stopped with `grace` and KILLed,
//! before `t + ttl`. A keep-alive answered with a TTL of 0 means the lease is gone
//! (expired or revoked): reported at once.
//!
//! With several endpoints, a keep-alive that fails or is not answered within the
//! pool's attempt limit (ttl/8) is sent again at once to the next endpoint: a member
//! down or frozen costs one attempt, well inside the danger budget (at least ttl/2).

use std::time::Duration;

use super::pool::Pool;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};
use tracing::{debug, warn};

use super::{FleetEvent, Notifier};

pub(super) struct KeepAlive {
    pub(super) pool: Pool,
    pub(super) lease: i64,
    pub(super) ttl: Duration,
    /// The child's fleet grace.
    pub(super) grace: Duration,
    /// When the grant (the first "keep-alive") was sent.
    pub(super) confirmed: std::time::Instant,
    pub(super) lost: watch::Sender<Option<String>>,
    pub(super) notifier: Notifier,
}

/// How long after the last answered keep-alive the lease counts as in danger.
pub(crate) fn danger_after(ttl: Duration, grace: Duration) -> Duration {
    ttl.saturating_sub(grace).saturating_sub(ttl / 6)
}

pub(super) async fn keep_alive(k: KeepAlive) {
    let KeepAlive {
        pool,
        lease,
        ttl,
        grace,
        confirmed,
        lost,
        notifier,
    } = k;
    let interval = ttl / 4;
    let danger = danger_after(ttl, grace);
    let mut confirmed = Instant::from_std(confirmed);
    let mut stream = None;
    let mut on = 0;
    let why = loop {
        let deadline = confirmed + danger;
        let attempt = async {
            if stream.is_none() {
                let (i, client) = pool.current().await;
                on = i;
                stream = Some(client?.lease_keep_alive(lease).await?);
            }
            let (keeper, responses) = stream.as_mut().expect("set");
            let sent = Instant::now();
            keeper.keep_alive().await?;
            let answer = responses.message().await?;
            Ok::<_, etcd_client::Error>((sent, answer))
        };
        let limit = deadline.min(Instant::now() + pool.attempt());
        match timeout_at(limit, attempt).await {
            Err(_) if Instant::now() < deadline => {
                debug!(
                    "keep-alive not answered within {:?}; asking the next endpoint",
                    pool.attempt()
                );
                pool.failed(on);
                stream = None;
            }
            Err(_) => {
                break format!(
                    "no keep-alive of the fleet lease was answered for {}ms; the lease ({}s) might lapse",
                    danger.as_millis(),
                    ttl.as_secs_f64()
                );
            }
            Ok(Ok((sent, Some(answer)))) => {
                if answer.ttl() <= 0 {
                    break "the fleet lease expired or was revoked".to_string();
                }
                confirmed = sent;
                sleep_until(sent + interval).await;
            }
            Ok(Ok((_, None))) => {
                debug!("keep-alive stream ended; opening another");
                stream = None;
                sleep(interval / 4).await;
            }
            Ok(Err(e)) => {
                debug!("keep-alive failed: {e}");
                pool.failed(on);
                stream = None;
                sleep(interval / 8).await;
            }
        }
    };
    warn!("{why}: stopping the command");
    let _ = lost.send(Some(why.clone()));
    notifier.send(FleetEvent::LeaseLost(why));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_is_gone_before_the_lease_can_lapse() {
        for secs in [2, 3, 10, 60] {
            let ttl = Duration::from_secs(secs);
            for stop_grace in [
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::from_secs(30),
            ] {
                let grace = stop_grace.min(ttl / 3);
                let danger = danger_after(ttl, grace);
                // Noticed at `danger`, KILL at `danger + grace`: a sixth of the TTL left.
                assert!(danger + grace + ttl / 6 <= ttl, "{ttl:?} {grace:?}");
                // At least two keep-alives (every ttl/4) may fail first.
                assert!(danger >= ttl / 4 * 2, "{ttl:?} {grace:?}");
            }
        }
    }
}
