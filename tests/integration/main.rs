//! The one integration-test binary: the `dropguard` executable driven as a user
//! would, through its command line, its configuration and its HTTP port.

mod harness;
mod locking;

mod cli;
mod config;
mod daemon;
mod db;
mod django_support;
mod restore;
mod roundtrip;
mod s3;
mod scan;
mod vault;
