//! The one place that opens network connections to relays.
//!
//! Websocket and HTTP code ask [`Dialer::connect`] for a byte stream to a relay URL and never care
//! how it was made. Clearnet is dialed directly; an overlay network (Tor, I2P, Lokinet) goes
//! through its configured SOCKS5 proxy ([`Routes`], `network.tor_proxy` / `i2p_proxy` /
//! `loki_proxy`), which is handed the host NAME; with no route configured the relay is refused
//! with a clear error. An overlay address is never resolved or dialed directly: that would leak
//! it to the local DNS resolver.
//!
//! SSRF (invariant 6): the URL policy is checked on the name, and then again on every address the
//! name resolves to, so a public name that resolves to 127.0.0.1 or 10.x is refused too.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::protocol::url::{is_refused_ip, Network, RelayUrl, UrlPolicy};

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("{url}: no route to the {network} network is configured (set network.{network}_proxy to a SOCKS5 proxy); the relay is skipped (never resolved or dialed directly)")]
    NoRoute { url: String, network: Network },
    #[error("{url}: refused by the address policy: {reason}")]
    Refused { url: String, reason: String },
    #[error("{url}: DNS lookup failed: {source}")]
    Dns { url: String, source: std::io::Error },
    #[error("{url}: connect failed: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("{url}: {source}")]
    Proxy {
        url: String,
        source: crate::net::socks::SocksError,
    },
    #[error("{url}: connect timed out after {after:?}")]
    Timeout { url: String, after: Duration },
}

/// SOCKS5 proxies per overlay network (IP:port; a proxy is never looked up by name).
#[derive(Debug, Clone, Default)]
pub struct Routes {
    pub tor: Option<SocketAddr>,
    pub i2p: Option<SocketAddr>,
    pub loki: Option<SocketAddr>,
}

impl Routes {
    fn proxy(&self, network: Network) -> Option<SocketAddr> {
        match network {
            Network::Clearnet => None,
            Network::Tor => self.tor,
            Network::I2p => self.i2p,
            Network::Loki => self.loki,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Dialer {
    policy: UrlPolicy,
    timeout: Duration,
    routes: Routes,
}

impl Dialer {
    pub fn new(policy: UrlPolicy, timeout: Duration) -> Self {
        Self {
            policy,
            timeout,
            routes: Routes::default(),
        }
    }

    /// The same dialer with these overlay routes.
    pub fn with_routes(mut self, routes: Routes) -> Self {
        self.routes = routes;
        self
    }

    pub fn policy(&self) -> &UrlPolicy {
        &self.policy
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether relays on `network` can be reached at all (clearnet today; the appliance issue
    /// adds Tor and SOCKS5 routes). Checks skip unroutable relays instead of failing them.
    pub fn has_route(&self, network: Network) -> bool {
        network == Network::Clearnet || self.routes.proxy(network).is_some()
    }

    /// A TCP stream to the relay's host and port (TLS, if any, is the caller's layer).
    pub async fn connect(&self, url: &RelayUrl) -> Result<TcpStream, DialError> {
        if url.network() != Network::Clearnet {
            let Some(proxy) = self.routes.proxy(url.network()) else {
                return Err(DialError::NoRoute {
                    url: url.to_string(),
                    network: url.network(),
                });
            };
            // The name goes to the proxy as is: nothing is resolved here.
            let connect = crate::net::socks::connect(proxy, url.host(), url.port());
            return match tokio::time::timeout(self.timeout, connect).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(DialError::Proxy {
                    url: url.to_string(),
                    source: e,
                }),
                Err(_) => Err(DialError::Timeout {
                    url: url.to_string(),
                    after: self.timeout,
                }),
            };
        }
        crate::protocol::url::check_policy(url, &self.policy).map_err(|e| DialError::Refused {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let host = url
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port();
        let fut = async {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|source| DialError::Dns {
                    url: url.to_string(),
                    source,
                })?
                .collect();
            let allowed_by_name =
                self.policy.allow_local || self.policy.allow_hosts.iter().any(|h| h == url.host());
            let mut last = None;
            for addr in addrs {
                if !allowed_by_name && is_refused_ip(addr.ip()) {
                    last = Some(DialError::Refused {
                        url: url.to_string(),
                        reason: format!(
                            "{} resolves to the non-public address {}",
                            url.host(),
                            addr.ip()
                        ),
                    });
                    continue;
                }
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        // Nagle adds 40 ms stalls to every small REQ on loopback and LANs.
                        let _ = s.set_nodelay(true);
                        return Ok(s);
                    }
                    Err(source) => {
                        last = Some(DialError::Connect {
                            url: url.to_string(),
                            source,
                        })
                    }
                }
            }
            Err(last.unwrap_or_else(|| DialError::Dns {
                url: url.to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
            }))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| DialError::Timeout {
                url: url.to_string(),
                after: self.timeout,
            })?
    }
}
