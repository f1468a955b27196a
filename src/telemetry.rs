//! Every metric dropguard exports, with its help text, in one place.
//!
//! Other modules never touch the registry: they get typed handles from [`Metrics`]
//! (or report through small traits that `app.rs` connects to it), so the catalogue
//! stays complete and names, types and labels cannot drift apart.

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

/// The registry behind `/metrics`.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
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
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self { registry })
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
