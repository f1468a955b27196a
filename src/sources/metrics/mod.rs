//! Metrics source: error rates read from the application's own metrics endpoint
//! (scrape mode) or from a Prometheus server (query mode), as [`Payload::Rate`]
//! events.
//!
//! This module owns polling, the text format, selectors and the rate arithmetic.
//! It must never log or label anything with the real URL: endpoint paths and query
//! strings sometimes carry tokens, so only [`SecretUrl::masked`] is shown. A failed
//! poll (no answer, a bad status, an unreadable body) is logged, counted in
//! `dropguard_source_errors_total` with kind `scrape` or `parse`, and retried at the
//! next interval; only shutdown ends a source.

mod exposition;
mod query;
mod rate;
mod selector;

pub use exposition::{MetricType, ParseError, Sample, parse as parse_exposition};
pub use query::{Answer, query_url, read_answer};
pub use rate::{CounterRates, FORGET_AFTER, Rate};
pub use selector::{Selector, parse_selector};

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::SourceStats;
use crate::config::{QueryConfig, ScrapeConfig, SecretUrl};
use crate::event::{Event, Payload};

/// A response larger than this is refused: an endpoint gone wrong must not make
/// dropguard hold gigabytes. A large Django exposition is a few hundred kilobytes.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// What the scrape asks for: the text format Prometheus itself negotiates, so that
/// an endpoint able to serve OpenMetrics or protobuf serves this one.
const ACCEPT_TEXT: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";

/// A failed poll. Operational: logged, counted by [`MetricsError::kind`], retried.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// No answer: refused, timed out, TLS, a broken body. Never holds the URL.
    #[error("{0}")]
    Unreachable(String),
    #[error("answered HTTP {status} instead of 200{detail}")]
    Status { status: u16, detail: String },
    #[error("the response is larger than {MAX_BODY_BYTES} bytes; is the URL a metrics endpoint?")]
    TooLarge,
    #[error("the response is not UTF-8 text; is the URL a Prometheus text-format endpoint?")]
    NotText,
    #[error("unreadable exposition, {0}")]
    Exposition(#[from] ParseError),
    /// A Prometheus API answer that is refused or not of the expected shape.
    #[error("{0}")]
    Answer(String),
    #[error("the URL cannot be used: {0}; fix it in the configuration")]
    Url(String),
}

impl MetricsError {
    /// The `kind` label of `dropguard_source_errors_total`: `scrape` when the
    /// endpoint did not answer well, `parse` when its answer could not be read.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable(_) | Self::Status { .. } | Self::TooLarge | Self::Url(_) => "scrape",
            Self::NotText | Self::Exposition(_) | Self::Answer(_) => "parse",
        }
    }
}

/// Scrapes `config.url` every `config.interval` and, from the second scrape on,
/// sends one rate per selector of `config.counters`: the increase of the series it
/// matches, summed, per second since the previous scrape that could be read.
///
/// Events come from `scrape:<masked url>`, which is also the `source` label of the
/// counters. Returns when `shutdown` is cancelled or the receiver is gone, never on
/// a failed scrape. A counter that is not a valid selector is logged, counted as a
/// `parse` error and left out (configuration validation rejects it beforehand).
pub async fn run_scrape(
    config: ScrapeConfig,
    tx: mpsc::Sender<Event>,
    stats: SourceStats,
    shutdown: CancellationToken,
) {
    let source: Arc<str> = format!("scrape:{}", config.url.masked()).into();
    let mut selectors = Vec::new();
    for text in &config.counters {
        match parse_selector(text) {
            Ok(selector) => selectors.push(selector),
            Err(err) => {
                stats.errors.with_label_values(&[&*source, "parse"]).inc();
                tracing::error!(source = %source, error = %err, "counter left out; fix it in metrics.scrape.counters");
            }
        }
    }
    if selectors.is_empty() {
        tracing::error!(source = %source, "no usable counter selector; this source stays idle until shutdown");
        shutdown.cancelled().await;
        return;
    }
    let mut rates = CounterRates::new(selectors);
    let poller = Poller {
        source,
        target: Ok(config.url.expose().to_string()),
        url: config.url,
        interval: config.interval.0,
        timeout: config.timeout.0,
        accept: ACCEPT_TEXT,
    };
    poller
        .run(tx, stats, shutdown, |at, status, body| {
            if status != 200 {
                return Err(MetricsError::Status {
                    status,
                    detail: String::new(),
                });
            }
            let text = std::str::from_utf8(body).map_err(|_| MetricsError::NotText)?;
            let samples = parse_exposition(text)?;
            Ok(rates
                .observe(at, &samples)
                .into_iter()
                .map(|rate| (rate.series, rate.per_second))
                .collect())
        })
        .await;
}

/// Runs `config.query` against the Prometheus server at `config.url` every
/// `config.interval` and sends the sum of the values it returns as a rate whose
/// series is the query. Events come from `query:<masked url>`. Returns when
/// `shutdown` is cancelled or the receiver is gone, never on a failed query.
pub async fn run_query(
    config: QueryConfig,
    tx: mpsc::Sender<Event>,
    stats: SourceStats,
    shutdown: CancellationToken,
) {
    let source: Arc<str> = format!("query:{}", config.url.masked()).into();
    let query = config.query.clone();
    let log_source = source.clone();
    let poller = Poller {
        source,
        target: query_url(config.url.expose(), &config.query).map(String::from),
        url: config.url,
        interval: config.interval.0,
        timeout: config.timeout.0,
        accept: "application/json",
    };
    poller
        .run(tx, stats, shutdown, |_, status, body| {
            let answer = read_answer(status, body)?;
            for warning in &answer.warnings {
                tracing::warn!(source = %log_source, warning = %warning, "Prometheus warned about the query");
            }
            Ok(vec![(query.clone(), answer.value)])
        })
        .await;
}

/// The polling loop both modes share.
struct Poller {
    /// `scrape:<masked url>` or `query:<masked url>`: event source and counter label.
    source: Arc<str>,
    /// Kept to scrub error texts of any part of the real URL.
    url: SecretUrl,
    /// Where requests go: the URL, or the API URL built from it, or why that could
    /// not be built (then every interval fails and is counted, so that it shows).
    target: Result<String, String>,
    interval: Duration,
    timeout: Duration,
    accept: &'static str,
}

impl Poller {
    /// Every interval: fetch, `read` the answer into (series, per second) pairs,
    /// send them. `read` gets the time the request started, which is when the
    /// counters were read as closely as can be known.
    async fn run(
        self,
        tx: mpsc::Sender<Event>,
        stats: SourceStats,
        shutdown: CancellationToken,
        mut read: impl FnMut(Instant, u16, &[u8]) -> Result<Vec<(String, f64)>, MetricsError>,
    ) {
        let source = &*self.source;
        // tokio's interval panics on zero; validation rejects it, this keeps a bad
        // value from becoming a busy loop all the same.
        let mut ticker = tokio::time::interval(self.interval.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut client: Option<reqwest::Client> = None;
        let mut failing = false;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let at = Instant::now();
            let outcome = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                outcome = self.poll(&mut client) => outcome,
            };
            let pairs = outcome.and_then(|(status, body)| {
                stats
                    .bytes
                    .with_label_values(&[source])
                    .inc_by(body.len() as u64);
                read(at, status, &body)
            });
            let pairs = match pairs {
                Ok(pairs) => {
                    if failing {
                        tracing::info!(source, "metrics source answering again");
                        failing = false;
                    }
                    pairs
                }
                Err(err) => {
                    stats.errors.with_label_values(&[source, err.kind()]).inc();
                    tracing::warn!(
                        source,
                        kind = err.kind(),
                        error = %scrub(&err.to_string(), &self.url),
                        "metrics source failed; retrying at the next interval"
                    );
                    failing = true;
                    continue;
                }
            };
            let observed_at = SystemTime::now();
            for (series, per_second) in pairs {
                let event = Event {
                    source: self.source.clone(),
                    observed_at,
                    logged_at: None,
                    written_by: None,
                    payload: Payload::Rate { series, per_second },
                };
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    sent = tx.send(event) => if sent.is_err() {
                        tracing::debug!(source, "event channel closed; metrics source stopping");
                        return;
                    },
                }
                stats.events.with_label_values(&[source]).inc();
            }
        }
    }

    /// One request: its status and body.
    async fn poll(
        &self,
        client: &mut Option<reqwest::Client>,
    ) -> Result<(u16, Vec<u8>), MetricsError> {
        let url = self
            .target
            .as_deref()
            .map_err(|err| MetricsError::Url(err.clone()))?;
        let client = match client {
            Some(client) => client,
            None => client.insert(
                reqwest::Client::builder()
                    .user_agent(concat!("dropguard/", env!("CARGO_PKG_VERSION")))
                    .connect_timeout(self.timeout)
                    .build()
                    .map_err(|err| {
                        MetricsError::Unreachable(format!(
                            "building the HTTP client failed: {}",
                            describe(err, self.timeout)
                        ))
                    })?,
            ),
        };
        let mut response = client
            .get(url)
            .header(reqwest::header::ACCEPT, self.accept)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|err| MetricsError::Unreachable(describe(err, self.timeout)))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| MetricsError::Unreachable(describe(err, self.timeout)))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(MetricsError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }
}

/// An HTTP client error with its causes, without the URL reqwest puts in it.
fn describe(err: reqwest::Error, timeout: Duration) -> String {
    if err.is_timeout() {
        return format!(
            "no complete answer within the timeout of {}",
            humantime::format_duration(timeout)
        );
    }
    crate::error_chain(&err.without_url())
}

/// `text` with the URL, its path and its query replaced by the mask: a last guard
/// should a library ever quote the URL in an error.
fn scrub(text: &str, url: &SecretUrl) -> String {
    let mut scrubbed = text.replace(url.expose(), &url.masked());
    if let Ok(parsed) = url::Url::parse(url.expose()) {
        let mut secrets = vec![parsed.path().to_string()];
        secrets.extend(parsed.query().map(str::to_string));
        secrets.extend(parsed.password().map(str::to_string));
        if !parsed.username().is_empty() {
            secrets.push(parsed.username().to_string());
        }
        for secret in secrets {
            if secret.len() > 1 {
                scrubbed = scrubbed.replace(&secret, "/********");
            }
        }
    }
    scrubbed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_are_the_counter_labels() {
        assert_eq!(MetricsError::Unreachable("x".into()).kind(), "scrape");
        assert_eq!(
            MetricsError::Status {
                status: 500,
                detail: String::new()
            }
            .kind(),
            "scrape"
        );
        assert_eq!(MetricsError::TooLarge.kind(), "scrape");
        assert_eq!(MetricsError::NotText.kind(), "parse");
        assert_eq!(MetricsError::Answer("x".into()).kind(), "parse");
        let parse = parse_exposition("m{").unwrap_err();
        assert_eq!(MetricsError::from(parse).kind(), "parse");
    }

    #[test]
    fn scrubbing_removes_every_part_of_the_url() {
        let url =
            SecretUrl::new("https://user:pw123@metrics.internal:8443/t0ken/metrics?key=abc123");
        let text = format!(
            "failed for {} at /t0ken/metrics with key=abc123 as user pw123",
            url.expose()
        );
        let scrubbed = scrub(&text, &url);
        for secret in ["t0ken", "abc123", "pw123"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert!(scrubbed.contains("metrics.internal"), "{scrubbed}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_described_without_the_url() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/s3cret-path/metrics?token=t0k3n");
        let err = reqwest::Client::new().get(&url).send().await.unwrap_err();
        let text = describe(err, Duration::from_secs(1));
        assert!(
            !text.contains("s3cret") && !text.contains("t0k3n"),
            "{text}"
        );
        assert!(text.to_lowercase().contains("connect"), "{text}");
    }
}
