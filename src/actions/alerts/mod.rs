//! Alerts: one message per incident state change and receiver (Slack, generic
//! webhooks, Alertmanager), queued in a durable outbox in the state dir before
//! anything is sent, and delivered by [`run`] with retries.
//!
//! It owns the message formats and their delivery. It must never write a
//! receiver's URL anywhere but into the request: not to disk (the outbox names
//! receivers by kind and index and looks the URL up in the configuration when
//! sending), not to logs, errors or metrics.

pub mod alertmanager;
pub mod outbox;
mod sender;
pub mod slack;
pub mod webhook;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::{AlertsConfig, SecretUrl};
use crate::detect::incident::Incident;
use crate::telemetry::AlertStats;

pub use outbox::{Outbox, OutboxError};
pub use sender::{Timing, run};

/// The state change a message tells of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    #[serde(rename = "incident.opened")]
    Opened,
    #[serde(rename = "incident.updated")]
    Updated,
    #[serde(rename = "incident.restored")]
    Restored,
    #[serde(rename = "incident.dismissed")]
    Dismissed,
}

impl Event {
    /// The name receivers see (`incident.opened`).
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Opened => "incident.opened",
            Event::Updated => "incident.updated",
            Event::Restored => "incident.restored",
            Event::Dismissed => "incident.dismissed",
        }
    }

    /// Whether the incident is over: Alertmanager's alert ends, Slack gets a follow-up.
    pub fn ends(self) -> bool {
        matches!(self, Event::Restored | Event::Dismissed)
    }
}

/// What kind of receiver, which decides the message format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Slack,
    Webhook,
    Alertmanager,
}

/// A receiver as named in logs, metrics and outbox files: kind and index in the
/// configuration (`slack`, `webhook[0]`, `alertmanager[1]`), never its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReceiverId {
    pub kind: Kind,
    /// The position in `alerts.webhook` or `alerts.alertmanager`; 0 for Slack.
    pub index: usize,
}

impl ReceiverId {
    /// The part of an outbox file name naming it (`webhook0`): file-name safe.
    fn key_part(self) -> String {
        match self.kind {
            Kind::Slack => "slack".to_string(),
            Kind::Webhook => format!("webhook{}", self.index),
            Kind::Alertmanager => format!("alertmanager{}", self.index),
        }
    }
}

impl fmt::Display for ReceiverId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Slack => f.write_str("slack"),
            Kind::Webhook => write!(f, "webhook[{}]", self.index),
            Kind::Alertmanager => write!(f, "alertmanager[{}]", self.index),
        }
    }
}

/// A configured receiver: where its messages go.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub id: ReceiverId,
    url: SecretUrl,
}

impl Receiver {
    /// The URL a message is posted to (Alertmanager's API below its base URL).
    fn endpoint(&self) -> String {
        let url = self.url.expose();
        match self.id.kind {
            Kind::Alertmanager => format!("{}/api/v2/alerts", url.trim_end_matches('/')),
            Kind::Slack | Kind::Webhook => url.to_string(),
        }
    }
}

/// Every configured receiver, in configuration order.
pub fn receivers(config: &AlertsConfig) -> Vec<Receiver> {
    let mut all = Vec::new();
    if let Some(slack) = &config.slack {
        all.push(Receiver {
            id: ReceiverId {
                kind: Kind::Slack,
                index: 0,
            },
            url: slack.webhook_url.clone(),
        });
    }
    for (index, hook) in config.webhook.iter().enumerate() {
        all.push(Receiver {
            id: ReceiverId {
                kind: Kind::Webhook,
                index,
            },
            url: hook.url.clone(),
        });
    }
    for (index, server) in config.alertmanager.iter().enumerate() {
        all.push(Receiver {
            id: ReceiverId {
                kind: Kind::Alertmanager,
                index,
            },
            url: server.url.clone(),
        });
    }
    all
}

/// What the messages point their readers at: the daemon's API address.
#[derive(Debug, Clone)]
pub struct Links {
    /// `http://host:port`, as the curl command in a message shows it.
    pub api_base: String,
}

impl Links {
    /// From `server.listen`; an unspecified address (`0.0.0.0`) becomes a
    /// placeholder the reader fills in.
    pub fn new(listen: SocketAddr) -> Self {
        let api_base = if listen.ip().is_unspecified() {
            format!("http://<dropguard-host>:{}", listen.port())
        } else {
            format!("http://{listen}")
        };
        Self { api_base }
    }
}

/// The body for `kind` about `incident`'s `event`.
pub fn message(kind: Kind, event: Event, incident: &Incident, links: &Links) -> serde_json::Value {
    match kind {
        Kind::Slack => slack::message(event, incident, links),
        Kind::Webhook => webhook::body(event, incident),
        Kind::Alertmanager => alertmanager::body(event, incident, links),
    }
}

/// The daemon's handle on alerting: queues messages for every receiver and
/// wakes the sender. Cheap to clone.
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

struct Inner {
    outbox: Outbox,
    receivers: Vec<Receiver>,
    links: Links,
    stats: AlertStats,
    wake: Notify,
}

impl Alerts {
    pub fn new(outbox: Outbox, receivers: Vec<Receiver>, links: Links, stats: AlertStats) -> Self {
        Self {
            inner: Arc::new(Inner {
                outbox,
                receivers,
                links,
                stats,
                wake: Notify::new(),
            }),
        }
    }

    pub fn receivers(&self) -> &[Receiver] {
        &self.inner.receivers
    }

    pub fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    /// Queues `event` of `incident` for every receiver, each written to disk
    /// before this returns. A message already queued, delivered or dead-lettered
    /// for the same state change and receiver is not queued again. Returns how
    /// many receivers have the message (queued now or before).
    ///
    /// Blocking file I/O (a few small fsynced files): call it off the async threads.
    pub fn enqueue(&self, event: Event, incident: &Incident) -> Result<usize, OutboxError> {
        let inner = &self.inner;
        let mut queued = 0;
        for receiver in &inner.receivers {
            let body = message(receiver.id.kind, event, incident, &inner.links);
            let queued_now =
                inner
                    .outbox
                    .enqueue(&outbox::Message::new(event, incident, receiver.id, body))?;
            if queued_now {
                tracing::info!(incident = %incident.id, event = event.as_str(), receiver = %receiver.id, "alert queued");
            }
            queued += 1;
        }
        self.depth();
        inner.wake.notify_one();
        Ok(queued)
    }

    fn depth(&self) {
        if let Ok(pending) = self.inner.outbox.pending() {
            self.inner
                .stats
                .depth
                .set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
        }
    }
}
