//! Every metric dropguard exports, with its help text, in one place.
//!
//! Other modules never touch the registry: they get typed handles from [`Metrics`]
//! (or report through small traits that `app.rs` connects to it), so the catalogue
//! stays complete and names, types and labels cannot drift apart.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The registry behind `/metrics`.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Every metric family registered, by name: the catalogue.
    names: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl Metrics {
    /// Builds the registry: `dropguard_build_info` plus the process collector
    /// (`process_cpu_seconds_total`, `process_resident_memory_bytes`, open fds, …).
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new(
                "dropguard_build_info",
                "Always 1; its labels name the running dropguard build.",
            ),
            &["version", "rustc"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("DROPGUARD_RUSTC_VERSION")])
            .set(1);
        let metrics = Self {
            registry,
            names: Default::default(),
        };
        metrics.register(build_info)?;
        metrics.register(prometheus::process_collector::ProcessCollector::for_self())?;
        Ok(metrics)
    }

    /// Registers `collector`, noting its families' names in the catalogue.
    pub fn register(
        &self,
        collector: impl prometheus::core::Collector + 'static,
    ) -> Result<(), prometheus::Error> {
        let names: Vec<String> = collector
            .desc()
            .iter()
            .map(|desc| desc.fq_name.clone())
            .collect();
        self.registry.register(Box::new(collector))?;
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(names);
        Ok(())
    }

    /// The name of every metric family the daemon can export, labelled ones
    /// included before their first sample: what dashboards and rules may use.
    pub fn catalogue() -> Result<std::collections::BTreeSet<String>, prometheus::Error> {
        let metrics = Self::new()?;
        metrics.sources()?;
        metrics.detection()?;
        metrics.alerts()?;
        metrics.vault()?;
        metrics.restores()?;
        metrics.gate()?;
        Ok(metrics
            .names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone())
    }

    /// The sources' counters, registered with this registry.
    pub fn sources(&self) -> Result<crate::sources::SourceStats, prometheus::Error> {
        crate::sources::SourceStats::register(self)
    }

    /// Detection's metrics, registered with this registry.
    pub fn detection(&self) -> Result<DetectStats, prometheus::Error> {
        let stats = DetectStats {
            deploys: IntCounterVec::new(
                Opts::new(
                    "dropguard_deploys_total",
                    "Deploys seen (migrations applied or announced), by where they were seen.",
                ),
                &["origin"],
            )?,
            watch_windows: IntGauge::new(
                "dropguard_watch_windows_open",
                "Deploys whose watch window is open: their errors are being correlated.",
            )?,
            correlated: IntCounterVec::new(
                Opts::new(
                    "dropguard_correlated_errors_total",
                    "Error events naming a table or column a deploy dropped or renamed (column empty for the table).",
                ),
                &["migration", "table", "column"],
            )?,
            incidents: IntGaugeVec::new(
                Opts::new(
                    "dropguard_incidents",
                    "Incidents known to this instance, by state.",
                ),
                &["state"],
            )?,
            opened: IntCounterVec::new(
                Opts::new(
                    "dropguard_incidents_opened_total",
                    "Incidents opened, by what opened them (errors, spike, unpreserved).",
                ),
                &["trigger"],
            )?,
            detect_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "dropguard_detect_seconds",
                    "Time the detector took per event, journaling of what it opened included.",
                )
                .buckets(vec![
                    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1,
                ]),
                &["kind"],
            )?,
            backlog: IntGauge::new(
                "dropguard_detect_backlog_events",
                "Events the sources handed on that the detector has not read yet.",
            )?,
            lag_seconds: prometheus::Gauge::new(
                "dropguard_detect_lag_seconds",
                "How long the event the detector read last had waited since its source read it.",
            )?,
        };
        self.register(stats.backlog.clone())?;
        self.register(stats.lag_seconds.clone())?;
        self.register(stats.deploys.clone())?;
        self.register(stats.watch_windows.clone())?;
        self.register(stats.correlated.clone())?;
        self.register(stats.incidents.clone())?;
        self.register(stats.opened.clone())?;
        self.register(stats.detect_seconds.clone())?;
        for state in crate::detect::incident::State::ALL {
            stats.incidents.with_label_values(&[state.as_str()]).set(0);
        }
        for trigger in ["errors", "spike", "unpreserved"] {
            stats.opened.with_label_values(&[trigger]).inc_by(0);
        }
        Ok(stats)
    }

    /// The alert outbox's metrics, registered with this registry.
    pub fn alerts(&self) -> Result<AlertStats, prometheus::Error> {
        let stats = AlertStats {
            sent: IntCounterVec::new(
                Opts::new(
                    "dropguard_alerts_sent_total",
                    "Alert messages a receiver accepted, by receiver (slack, webhook[N], alertmanager[N]).",
                ),
                &["receiver"],
            )?,
            failed: IntCounterVec::new(
                Opts::new(
                    "dropguard_alerts_failed_total",
                    "Failed alert deliveries, by receiver and reason: retry (will be tried again) or dead (moved to outbox/dead, never retried).",
                ),
                &["receiver", "reason"],
            )?,
            depth: IntGauge::new(
                "dropguard_alert_outbox_depth",
                "Alert messages in the outbox waiting to be delivered.",
            )?,
            delivery_seconds: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "dropguard_alert_delivery_seconds",
                    "Time from an alert message being queued to a receiver accepting it, retries included.",
                )
                .buckets(vec![
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                ]),
            )?,
        };
        self.register(stats.sent.clone())?;
        self.register(stats.failed.clone())?;
        self.register(stats.depth.clone())?;
        self.register(stats.delivery_seconds.clone())?;
        Ok(stats)
    }

    /// The vault's metrics (snapshots the daemon takes), registered with this registry.
    pub fn vault(&self) -> Result<VaultStats, prometheus::Error> {
        let stats = VaultStats {
            snapshots: IntCounterVec::new(
                Opts::new(
                    "dropguard_snapshots_total",
                    "Snapshots of pending destructive migrations taken automatically, by outcome: complete, reused (another instance took it), failed.",
                ),
                &["outcome"],
            )?,
            rows: prometheus::IntCounter::new(
                "dropguard_snapshot_rows_total",
                "Rows preserved in complete snapshots.",
            )?,
            bytes: prometheus::IntCounter::new(
                "dropguard_snapshot_bytes_total",
                "Compressed bytes written to the vault by complete snapshots.",
            )?,
            seconds: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "dropguard_snapshot_seconds",
                    "Time to take one complete snapshot, reading, writing, fsync and verification included.",
                )
                .buckets(vec![
                    0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                ]),
            )?,
            unprotected: IntGauge::new(
                "dropguard_unprotected_migrations",
                "Pending destructive migrations without a complete snapshot after the last automatic pass (the last attempt failed).",
            )?,
        };
        self.register(stats.snapshots.clone())?;
        self.register(stats.rows.clone())?;
        self.register(stats.bytes.clone())?;
        self.register(stats.seconds.clone())?;
        self.register(stats.unprotected.clone())?;
        for outcome in ["complete", "reused", "failed"] {
            stats.snapshots.with_label_values(&[outcome]).inc_by(0);
        }
        Ok(stats)
    }

    /// The restore workflow's metrics, registered with this registry.
    pub fn restores(&self) -> Result<RestoreStats, prometheus::Error> {
        let stats = RestoreStats {
            runs: IntCounterVec::new(
                Opts::new(
                    "dropguard_restores_total",
                    "Restore runs of incidents (modes approve and auto) that ended, by outcome: restored or failed.",
                ),
                &["outcome"],
            )?,
            step_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "dropguard_restore_step_seconds",
                    "Time each step of a restore run took, by step: rollback, schema_check, restore, verification, notification.",
                )
                .buckets(vec![
                    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                ]),
                &["step"],
            )?,
        };
        self.register(stats.runs.clone())?;
        self.register(stats.step_seconds.clone())?;
        for outcome in ["restored", "failed"] {
            stats.runs.with_label_values(&[outcome]).inc_by(0);
        }
        Ok(stats)
    }

    /// The usage gate's metrics, registered with this registry.
    pub fn gate(&self) -> Result<GateStats, prometheus::Error> {
        let stats = GateStats {
            in_use: IntGaugeVec::new(
                Opts::new(
                    "dropguard_gate_in_use",
                    "Per object a pending destructive migration drops: 1 when the last usage check saw it read or written, 0 when it saw nothing; absent while the check cannot tell (column empty for a whole table).",
                ),
                &["migration", "table", "column"],
            )?,
            objects: IntGaugeVec::new(
                Opts::new(
                    "dropguard_gate_objects",
                    "Objects of pending destructive migrations by the last usage check's status: unused, in_use, unknown.",
                ),
                &["status"],
            )?,
            checks: IntCounterVec::new(
                Opts::new(
                    "dropguard_gate_checks_total",
                    "Usage checks that ended, by outcome: unused (every object), in_use (some object), unknown (some object cannot be told), failed (the check could not run).",
                ),
                &["outcome"],
            )?,
            applied_in_use: IntCounter::new(
                "dropguard_gate_applied_in_use_total",
                "Destructive migrations applied while the last usage check saw one of their objects in use.",
            )?,
        };
        self.register(stats.in_use.clone())?;
        self.register(stats.objects.clone())?;
        self.register(stats.checks.clone())?;
        self.register(stats.applied_in_use.clone())?;
        for status in ["unused", "in_use", "unknown"] {
            stats.objects.with_label_values(&[status]).set(0);
        }
        for outcome in ["unused", "in_use", "unknown", "failed"] {
            stats.checks.with_label_values(&[outcome]).inc_by(0);
        }
        Ok(stats)
    }

    /// The current value of every metric in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|err| prometheus::Error::Msg(err.to_string()))
    }
}

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Detection's metrics; object labels appear only for dropped or renamed objects.
#[derive(Clone)]
pub struct DetectStats {
    /// `dropguard_deploys_total{origin}`.
    pub deploys: IntCounterVec,
    /// `dropguard_watch_windows_open`.
    pub watch_windows: IntGauge,
    /// `dropguard_correlated_errors_total{migration, table, column}`.
    pub correlated: IntCounterVec,
    /// `dropguard_incidents{state}`.
    pub incidents: IntGaugeVec,
    /// `dropguard_incidents_opened_total{trigger}`.
    pub opened: IntCounterVec,
    /// `dropguard_detect_seconds{kind}`: `log`, `rate` or `deploy`.
    pub detect_seconds: HistogramVec,
    /// `dropguard_detect_backlog_events`.
    pub backlog: IntGauge,
    /// `dropguard_detect_lag_seconds`.
    pub lag_seconds: prometheus::Gauge,
}

/// The vault's metrics.
#[derive(Clone)]
pub struct VaultStats {
    /// `dropguard_snapshots_total{outcome}`.
    pub snapshots: IntCounterVec,
    /// `dropguard_snapshot_rows_total`.
    pub rows: prometheus::IntCounter,
    /// `dropguard_snapshot_bytes_total`.
    pub bytes: prometheus::IntCounter,
    /// `dropguard_snapshot_seconds`.
    pub seconds: prometheus::Histogram,
    /// `dropguard_unprotected_migrations`.
    pub unprotected: IntGauge,
}

/// The restore workflow's metrics.
#[derive(Clone)]
pub struct RestoreStats {
    /// `dropguard_restores_total{outcome}`.
    pub runs: IntCounterVec,
    /// `dropguard_restore_step_seconds{step}`.
    pub step_seconds: HistogramVec,
}

/// The alert outbox's metrics; receivers are labelled by kind and index, never by URL.
#[derive(Clone)]
pub struct AlertStats {
    /// `dropguard_alerts_sent_total{receiver}`.
    pub sent: IntCounterVec,
    /// `dropguard_alerts_failed_total{receiver, reason}`: `retry` or `dead`.
    pub failed: IntCounterVec,
    /// `dropguard_alert_outbox_depth`.
    pub depth: IntGauge,
    /// `dropguard_alert_delivery_seconds`.
    pub delivery_seconds: prometheus::Histogram,
}

/// The usage gate's metrics; object labels only for objects of pending
/// destructive migrations.
#[derive(Clone)]
pub struct GateStats {
    /// `dropguard_gate_in_use{migration, table, column}`.
    pub in_use: IntGaugeVec,
    /// `dropguard_gate_objects{status}`.
    pub objects: IntGaugeVec,
    /// `dropguard_gate_checks_total{outcome}`.
    pub checks: IntCounterVec,
    /// `dropguard_gate_applied_in_use_total`.
    pub applied_in_use: IntCounter,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metric names in README's "Metrics" table.
    fn documented() -> std::collections::BTreeSet<String> {
        let readme = include_str!("../README.md");
        let section = readme
            .split("### Metrics")
            .nth(1)
            .expect("README has a Metrics section");
        section
            .lines()
            .skip_while(|line| !line.starts_with("| name |"))
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .filter_map(|line| {
                let name = line.split('|').nth(1)?.trim().trim_matches('`');
                Some(name.to_string())
            })
            .collect()
    }

    #[test]
    fn every_metric_is_documented_in_the_readme_and_nothing_else_is() {
        let catalogue = Metrics::catalogue().unwrap();
        let documented = documented();
        let missing: Vec<_> = catalogue.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&catalogue).collect();
        assert!(missing.is_empty(), "exported, not in README: {missing:?}");
        assert!(stale.is_empty(), "in README, not exported: {stale:?}");
        assert!(catalogue.contains("dropguard_correlated_errors_total"));
        assert!(catalogue.contains("process_resident_memory_bytes"));
    }
}
