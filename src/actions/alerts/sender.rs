//! The sender: delivers the outbox's messages, oldest first, until shutdown.
//!
//! Each receiver gets its messages in order: while its oldest message waits for
//! a retry, its later ones wait too (a "restored" never overtakes its "opened"),
//! but other receivers go on. 2xx delivers; 429 waits `Retry-After`; 408, 5xx,
//! connection errors and timeouts back off exponentially with jitter; any other
//! status is final and the message is dead-lettered. Errors are described
//! without the URL, which is the credential for Slack.
//!
//! A message is marked delivered after the receiver accepted it; a crash in
//! between sends it again after the restart (at least once), which is why every
//! request carries the message's key as `Idempotency-Key`.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::outbox::Message;
use super::{Alerts, Receiver, ReceiverId};

/// The sender's timing: production defaults, shortened in tests.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Longest one request may take, connecting included.
    pub request_timeout: Duration,
    /// The wait after a first failure; it doubles with every further failure…
    pub first_retry: Duration,
    /// …up to this. Each wait is jittered down by up to half, so many instances
    /// recovering together do not hit a receiver at the same moment.
    pub max_retry: Duration,
    /// The longest `Retry-After` honoured; a longer one is cut to this.
    pub max_retry_after: Duration,
    /// How long to wait before reading the outbox again after it could not be read.
    pub outbox_error_wait: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(5 * 60),
            max_retry_after: Duration::from_secs(60 * 60),
            outbox_error_wait: Duration::from_secs(5),
        }
    }
}

impl Timing {
    /// The production defaults with `alerts.max_retry_interval` as the cap.
    pub fn with_max_retry(max_retry: Duration) -> Self {
        let defaults = Self::default();
        Self {
            max_retry,
            first_retry: defaults.first_retry.min(max_retry),
            ..defaults
        }
    }

    /// The wait after `failures` consecutive failures (1 for the first), jittered.
    fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .first_retry
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(30)));
        let full = doubled.min(self.max_retry);
        // Somewhere in [full/2, full]: RandomState is seeded anew per call.
        let random = RandomState::new().hash_one(Instant::now());
        let fraction = 0.5 + (random % 1000) as f64 / 2000.0;
        full.mul_f64(fraction)
    }
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    /// Try again after this long; `status` and `error` say why.
    Retry {
        after: Option<Duration>,
        why: String,
    },
    Dead {
        why: String,
    },
}

/// Delivers until `shutdown`; a request in flight then is finished (it is
/// bounded by `timing.request_timeout`), what is still pending stays in the
/// outbox for the next start.
pub async fn run(
    alerts: Alerts,
    timing: Timing,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .user_agent(concat!("dropguard/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timing.request_timeout)
        .timeout(timing.request_timeout)
        // A redirect would re-send the body elsewhere; a receiver that moved is an error.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|err| format!("building the alerts' HTTP client: {}", describe(&err)))?;
    // Consecutive failures of a pending message, and when it may be tried again.
    let mut waits: HashMap<String, (u32, Instant)> = HashMap::new();
    // Delivered but not yet moved out of the pending directory (a disk error).
    let mut done: HashSet<String> = HashSet::new();
    while !shutdown.is_cancelled() {
        let outbox = alerts.outbox().clone();
        let pending = match tokio::task::spawn_blocking(move || outbox.pending()).await {
            Ok(Ok(pending)) => pending,
            Ok(Err(err)) => {
                tracing::error!(error = %err, "cannot read the alert outbox; trying again");
                pause(&alerts, timing.outbox_error_wait, &shutdown).await;
                continue;
            }
            Err(err) => return Err(format!("reading the alert outbox panicked: {err}")),
        };
        let pending: Vec<Message> = pending
            .into_iter()
            .filter(|m| !done.contains(&m.key))
            .collect();
        alerts
            .inner
            .stats
            .depth
            .set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
        waits.retain(|key, _| pending.iter().any(|m| &m.key == key));

        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut attempted = false;
        let mut heads: HashSet<ReceiverId> = HashSet::new();
        for message in &pending {
            if !heads.insert(message.receiver) {
                continue;
            }
            if let Some(&(_, at)) = waits.get(&message.key)
                && at > now
            {
                next = Some(next.map_or(at, |n| n.min(at)));
                continue;
            }
            if shutdown.is_cancelled() {
                break;
            }
            attempted = true;
            let receiver = alerts.receivers().iter().find(|r| r.id == message.receiver);
            let attempt = match receiver {
                Some(receiver) => send(&client, receiver, message).await,
                None => Attempt::Dead {
                    why: "the receiver is no longer configured".into(),
                },
            };
            settle(&alerts, &timing, message, attempt, &mut waits, &mut done).await;
        }
        if attempted {
            continue;
        }
        let wait = next.map_or(Duration::from_secs(24 * 60 * 60), |at| {
            at.saturating_duration_since(Instant::now())
        });
        pause(&alerts, wait, &shutdown).await;
    }
    Ok(())
}

/// Waits `wait`, or less when a message is queued or shutdown begins.
async fn pause(alerts: &Alerts, wait: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = alerts.inner.wake.notified() => {}
        () = shutdown.cancelled() => {}
    }
}

async fn send(client: &reqwest::Client, receiver: &Receiver, message: &Message) -> Attempt {
    let body = match serde_json::to_vec(&message.body) {
        Ok(body) => body,
        Err(err) => {
            return Attempt::Dead {
                why: format!("the body cannot be encoded: {err}"),
            };
        }
    };
    let sent = client
        .post(receiver.endpoint())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", &message.key)
        .body(body)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(err) => {
            return Attempt::Retry {
                after: None,
                why: describe(&err),
            };
        }
    };
    let status = response.status();
    if status.is_success() {
        return Attempt::Delivered;
    }
    let why = format!("HTTP {status}");
    match status.as_u16() {
        429 => {
            let after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Attempt::Retry { after, why }
        }
        408 | 500..=599 => Attempt::Retry { after: None, why },
        _ => Attempt::Dead { why },
    }
}

/// Records an attempt: on disk, in the metrics, in the log, in `waits`.
async fn settle(
    alerts: &Alerts,
    timing: &Timing,
    message: &Message,
    attempt: Attempt,
    waits: &mut HashMap<String, (u32, Instant)>,
    done: &mut HashSet<String>,
) {
    let stats = &alerts.inner.stats;
    let receiver = message.receiver.to_string();
    let key = message.key.clone();
    match attempt {
        Attempt::Delivered => {
            stats.sent.with_label_values(&[&receiver]).inc();
            let waited = (chrono::Utc::now() - message.queued_at)
                .to_std()
                .unwrap_or_default();
            stats.delivery_seconds.observe(waited.as_secs_f64());
            tracing::info!(receiver, key, incident = %message.incident, event = message.event.as_str(), "alert delivered");
            waits.remove(&key);
            let outbox = alerts.outbox().clone();
            let moved = {
                let key = key.clone();
                tokio::task::spawn_blocking(move || outbox.delivered(&key)).await
            };
            if !matches!(moved, Ok(Ok(()))) {
                let error = match moved {
                    Ok(Err(err)) => err.to_string(),
                    Err(err) => err.to_string(),
                    Ok(Ok(())) => String::new(),
                };
                tracing::error!(
                    receiver,
                    key,
                    error,
                    "cannot mark the alert delivered; it would be sent again after a restart (is the state dir writable?)"
                );
                done.insert(key);
            }
        }
        Attempt::Retry { after, why } => {
            stats.failed.with_label_values(&[&receiver, "retry"]).inc();
            let failures = waits.get(&key).map_or(0, |&(n, _)| n) + 1;
            let wait = match after {
                Some(after) => after.min(timing.max_retry_after),
                None => timing.backoff(failures),
            };
            tracing::warn!(receiver, key, error = why, failures, retry_in = ?wait, "alert not delivered; retrying");
            waits.insert(key, (failures, Instant::now() + wait));
        }
        Attempt::Dead { why } => {
            stats.failed.with_label_values(&[&receiver, "dead"]).inc();
            tracing::error!(
                receiver,
                key,
                error = why,
                "alert refused; moved to outbox/dead and not retried (check the receiver's configuration)"
            );
            waits.remove(&key);
            let outbox = alerts.outbox().clone();
            let moved = {
                let key = key.clone();
                tokio::task::spawn_blocking(move || outbox.dead(&key)).await
            };
            if !matches!(moved, Ok(Ok(()))) {
                tracing::error!(
                    receiver,
                    key,
                    "cannot move the refused alert to outbox/dead; it is skipped until the restart"
                );
                done.insert(key);
            }
        }
    }
}

/// An HTTP client error with its causes, without the URL reqwest puts in it.
fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "no answer within the request timeout".to_string();
    }
    let what = if err.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // The causes are hyper's and the OS's: they name no URL.
    match std::error::Error::source(err) {
        Some(cause) => format!("{what}: {}", crate::error_chain(cause)),
        None => what.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_jittered_down_by_at_most_half() {
        let timing = Timing::default();
        for (failures, full) in [(1, 1), (2, 2), (3, 4), (9, 256), (10, 300), (40, 300)] {
            let full = Duration::from_secs(full);
            for _ in 0..20 {
                let wait = timing.backoff(failures);
                assert!(
                    wait >= full / 2 && wait <= full,
                    "{failures}: {wait:?} vs {full:?}"
                );
            }
        }
    }
}
