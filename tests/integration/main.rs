//! The one integration-test binary: the `dropguard` executable driven as a user
//! would, through its command line, its configuration and its HTTP port.

mod harness;
mod locking;

mod abuse;
mod alerts;
mod api;
mod cli;
mod config;
mod crash;
mod daemon;
mod dashboards;
mod db;
mod demo;
mod deploys;
mod detection;
mod django_support;
mod e2e;
mod faults;
mod files;
mod gate;
mod kafka;
mod metrics_source;
mod restore;
mod roundtrip;
mod s3;
mod scan;
mod vault;
