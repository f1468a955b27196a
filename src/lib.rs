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
//! - [`telemetry`]: every metric, with its help text.
//!
//! The vault, sources, detection and actions arrive as their own modules; `sources`, `detect` and `actions` will never import one another.

pub mod actions;
pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod health;
pub mod http;
pub mod migrations;
pub mod plan;
pub mod telemetry;
pub mod vault;
