//! Network facts about a relay from this vantage point: its network (clearnet, tor, i2p, loki)
//! and, for clearnet names, the addresses the system resolver gives. An overlay address is
//! never resolved (that would leak it to the local DNS resolver).
//!
//! The system resolver (getaddrinfo) reports no TTL, so none is recorded; an IP literal is
//! recorded as such, without a lookup.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::protocol::url::{Network, RelayUrl};

#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    pub network: String,
    pub dns: Option<Dns>,
    /// The certificate a wss relay presented (see [`super::tls`]); `None` for ws and overlays.
    pub tls: Option<super::tls::TlsFacts>,
    /// Country, city, geohash, ASN of the first resolved address the configured MaxMind files
    /// know; `None` without such files.
    pub geo: Option<super::geo::Geo>,
}

/// DNS (and geo from its addresses), then (for wss) the TLS probe; every step bounded by
/// `timeout` and by what is left until `until`.
pub async fn gather(
    dialer: &crate::net::dialer::Dialer,
    geo: &super::geo::GeoDb,
    url: &RelayUrl,
    timeout: Duration,
    until: Instant,
) -> Facts {
    let step = || timeout.min(until.saturating_duration_since(Instant::now()));
    let mut f = Facts::network_only(url);
    f.dns = dns(url, step()).await;
    if let Some(d) = &f.dns {
        let ips: Vec<std::net::IpAddr> =
            d.addresses.iter().filter_map(|a| a.parse().ok()).collect();
        f.geo = geo.lookup(&ips);
    }
    if dialer.has_route(url.network()) {
        f.tls = super::tls::probe(dialer, url, step()).await;
    }
    f
}

#[derive(Debug, Clone, Serialize)]
pub struct Dns {
    /// The host is an IP address: nothing was looked up.
    pub literal: bool,
    /// Addresses, sorted and deduplicated.
    pub addresses: Vec<String>,
    pub ms: Option<u64>,
    pub error: Option<String>,
}

impl Facts {
    pub fn network_only(url: &RelayUrl) -> Facts {
        Facts {
            network: url.network().as_str().to_string(),
            dns: None,
            tls: None,
            geo: None,
        }
    }
}

/// Resolve a clearnet relay's host (bounded by `timeout`); overlays get the network only.
pub async fn dns(url: &RelayUrl, timeout: Duration) -> Option<Dns> {
    if url.network() != Network::Clearnet {
        return None;
    }
    let host = url.host().trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Some(Dns {
            literal: true,
            addresses: vec![ip.to_string()],
            ms: None,
            error: None,
        });
    }
    let t = Instant::now();
    let looked = tokio::time::timeout(timeout, crate::net::resolve::lookup(host, url.port())).await;
    let ms = Some(t.elapsed().as_millis() as u64);
    Some(match looked {
        Ok(Ok(addrs)) => {
            let mut addresses: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            addresses.sort();
            addresses.dedup();
            Dns {
                literal: false,
                addresses,
                ms,
                error: None,
            }
        }
        Ok(Err(e)) => Dns {
            literal: false,
            addresses: Vec::new(),
            ms,
            error: Some(e.to_string()),
        },
        Err(_) => Dns {
            literal: false,
            addresses: Vec::new(),
            ms,
            error: Some(format!("no answer within {} s", timeout.as_secs())),
        },
    })
}
