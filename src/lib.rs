//! dropguard: makes destructive schema migrations safe to ship and safe to undo.
//!
//! Data flows one way: **sources → events → detector/correlator → incidents →
//! actions**. Where things live:
//!
//! - [`config`]: the TOML file, `${VAR}` expansion, validation, secret masking;
//! - [`db`]: the one adapter trait over PostgreSQL, MySQL/MariaDB and SQLite;
//! - [`app`]: the only wiring — builds every stage, connects them, readiness, shutdown;
//! - [`http`]: `/metrics`, `/healthz`, `/readyz` and the API, on hyper;
//! - [`health`]: which components are ready;
//! - [`telemetry`]: every metric, with its help text;
//! - [`event`]: the one event type every source emits;
//! - [`sources`]: log files, Kafka topics and metrics endpoints, as events;
//! - [`detect`]: which dropped object an error names (signatures), deploys and
//!   their watch windows, and the incidents they open (pure, synchronous);
//! - [`incidents`]: the incident journal in the state dir and the shared view of it;
//! - [`actions`]: preserve and restore (alerts arrive with issue 7);
//! - [`gate`]: whether anything still uses what the pending plan drops, from the
//!   database's own statistics (the CLI's `gate` and the daemon's usage check).
//!
//! `sources`, `detect` and `actions` never import one another.

pub mod actions;
pub mod announce;
pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod demo;
pub mod detect;
pub mod detection;
pub mod event;
pub mod gate;
pub mod health;
pub mod http;
pub mod incidents;
pub mod migrations;
pub mod plan;
pub mod progress;
pub mod resolve;
pub mod sources;
pub mod statefile;
pub mod telemetry;
pub mod vault;

/// An error and its causes in one line, `outer: inner: innermost`, a cause
/// left out when the text before already says it.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = inner.source();
    }
    text
}
