//! BigBrotr: a Nostr network observatory. One binary discovers relays, measures them, and
//! archives their events completely, verifying every signature.
//!
//! Layers (folders show them): [`protocol`] is pure (no I/O); [`net`] opens every connection
//! through one dialer; [`store`] keeps events in RocksDB and relational state in SQLite;
//! [`services`] are the long-running parts run under a supervisor; the CLI in `main.rs` is the
//! edge. See docs/ARCHITECTURE.md for the invariants and where each is kept.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod archive;
pub mod cli;
pub mod config;
pub mod keys;
pub mod net;
pub mod protocol;
pub mod query;
pub mod sd_notify;
pub mod serve;
pub mod services;
pub mod shutdown;
pub mod status;
pub mod store;
pub mod timefmt;
