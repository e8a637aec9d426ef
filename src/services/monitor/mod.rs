//! The Monitor (issue 4), first step: NIP-66 round trips from this vantage point (`rtt.rs`)
//! and `bigbrotr monitor --relay URL --once`. Scheduling, history, DNS/TLS/geo checks and
//! publishing kind 30166/10166 are not built yet.

pub mod rtt;
