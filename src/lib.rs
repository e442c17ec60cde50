//! ltxd: SQLite replication through an event-sourced log of LTX files.
//!
//! Start at `docs/ARCHITECTURE.md`. This crate holds the LTX format ([`ltx`]), operations on
//! SQLite database files and LTX files ([`database`]), and the command-line interface ([`cli`]).

pub mod backup;
pub mod config;
pub mod database;
pub mod durable;
pub mod layout;
pub mod log;
pub mod ltx;
pub mod metrics;
pub mod mount;
pub mod node;
pub mod proxy;
pub mod replication;
pub mod workload;
