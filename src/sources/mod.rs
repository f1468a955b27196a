//! Sources: application log files, Kafka topics, metrics endpoints and the
//! deploy watcher, each turned into [`Event`]s handed on over a bounded channel.
//!
//! A source owns reading, positions (checkpoints, committed offsets) and its own
//! failures: an unreadable file or a broker outage is logged, counted and retried
//! while the other sources go on. It never imports detection or actions; what an
//! event means is not its business.

pub mod deploys;
pub mod file;
pub mod kafka;
pub mod metrics;
mod record;

pub use record::decode_record;

use prometheus::{IntCounterVec, IntGaugeVec, Opts};

pub use crate::event::{Event, Payload, Record};

/// The counters sources report through, by source (the configured glob, topic or
/// masked URL: as many label values as configured sources). `app.rs` registers
/// them with the exported registry; `replay` and tests use [`SourceStats::detached`].
#[derive(Clone)]
pub struct SourceStats {
    /// `dropguard_source_events_total{source}`: events handed on.
    pub events: IntCounterVec,
    /// `dropguard_source_bytes_total{source}`: bytes read.
    pub bytes: IntCounterVec,
    /// `dropguard_source_truncated_events_total{source}`: events cut to `max_event_bytes`.
    pub truncated: IntCounterVec,
    /// `dropguard_source_invalid_utf8_total{source}`: events holding bytes that are
    /// not UTF-8, decoded with U+FFFD in their place.
    pub invalid_utf8: IntCounterVec,
    /// `dropguard_source_errors_total{source, kind}`: failures to read, by kind
    /// (`open`, `read`, `checkpoint`, `broker`, `commit`, `scrape`, `parse`, `poll`,
    /// `announcement`).
    pub errors: IntCounterVec,
    /// `dropguard_source_files{source}`: files currently tailed.
    pub files: IntGaugeVec,
    /// `dropguard_kafka_consumer_lag{topic, partition}`: messages behind the
    /// partition's high watermark.
    pub kafka_lag: IntGaugeVec,
}

impl SourceStats {
    /// Creates the counters and registers them with `metrics`.
    pub fn register(metrics: &crate::telemetry::Metrics) -> Result<Self, prometheus::Error> {
        let stats = Self::detached()?;
        metrics.register(stats.events.clone())?;
        metrics.register(stats.bytes.clone())?;
        metrics.register(stats.truncated.clone())?;
        metrics.register(stats.invalid_utf8.clone())?;
        metrics.register(stats.errors.clone())?;
        metrics.register(stats.files.clone())?;
        metrics.register(stats.kafka_lag.clone())?;
        Ok(stats)
    }

    /// Counters not exported anywhere (offline replay, tests).
    pub fn detached() -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels)
        };
        Ok(Self {
            events: counter(
                "dropguard_source_events_total",
                "Events (log records, rates) handed on by each source.",
                &["source"],
            )?,
            bytes: counter(
                "dropguard_source_bytes_total",
                "Bytes read by each source.",
                &["source"],
            )?,
            truncated: counter(
                "dropguard_source_truncated_events_total",
                "Events longer than the source's max_event_bytes, cut to it.",
                &["source"],
            )?,
            invalid_utf8: counter(
                "dropguard_source_invalid_utf8_total",
                "Events with bytes that are not UTF-8, decoded with U+FFFD in their place.",
                &["source"],
            )?,
            errors: counter(
                "dropguard_source_errors_total",
                "Failures to read a source, by kind (open, read, checkpoint, broker, commit, scrape, parse, poll, announcement).",
                &["source", "kind"],
            )?,
            files: gauge(
                "dropguard_source_files",
                "Files each file source is tailing now.",
                &["source"],
            )?,
            kafka_lag: gauge(
                "dropguard_kafka_consumer_lag",
                "Messages between the consumer's position and the partition's high watermark.",
                &["topic", "partition"],
            )?,
        })
    }
}
