//! The one place that opens network connections to relays.
//!
//! Websocket and HTTP code ask [`Dialer::connect`] for a byte stream to a relay URL and never care
//! how it was made ([`RelayStream`]). Clearnet is dialed directly. `.onion` relays go through
//! the built-in Tor client ([`crate::net::tor`], the default) or, when `network.tor_proxy` is
//! set, through that SOCKS5 proxy; I2P and Lokinet relays through their SOCKS5 proxies
//! (`network.i2p_proxy` / `loki_proxy`). Proxies are handed the host NAME. With no route
//! configured the relay is refused with a clear error. An overlay address is never resolved or
//! dialed directly: that would leak it to the local DNS resolver.
//!
//! SSRF (invariant 6): the URL policy is checked on the name, and then again on every address the
//! name resolves to, so a public name that resolves to 127.0.0.1 or 10.x is refused too.

use std::net::SocketAddr;
#[cfg(feature = "tor")]
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::protocol::url::{is_refused_ip, Network, RelayUrl, UrlPolicy};

/// Anything a relay connection can run over: a TCP socket, a SOCKS5-proxied one, a Tor stream.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// A byte stream to a relay (TLS, if any, is the caller's layer).
pub type RelayStream = Box<dyn Stream>;

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("{url}: no route to the {network} network is configured ({fix}); the relay is skipped (never resolved or dialed directly)", fix = route_fix(*network))]
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
    /// The built-in Tor is still bootstrapping: not the relay's fault, try again later.
    #[error("{url}: {reason}")]
    TorNotReady { url: String, reason: String },
    #[error("{url}: {reason}")]
    Tor { url: String, reason: String },
    /// The built-in Tor client could not be created (its error says why): no route.
    #[error("{url}: {reason}; onion relays are skipped (fix the cause, or set network.tor_proxy)")]
    TorUnavailable { url: String, reason: String },
}

impl DialError {
    /// The relay could not even be tried (no route, refused by policy, Tor not ready): says
    /// nothing about whether it is up.
    pub fn is_not_tried(&self) -> bool {
        matches!(
            self,
            DialError::NoRoute { .. }
                | DialError::Refused { .. }
                | DialError::TorNotReady { .. }
                | DialError::TorUnavailable { .. }
        )
    }
}

fn route_fix(network: Network) -> String {
    match network {
        Network::Tor if cfg!(feature = "tor") => {
            "turn on the built-in Tor ([tor] enabled = true) or set network.tor_proxy to a SOCKS5 proxy".into()
        }
        _ => format!("set network.{network}_proxy to a SOCKS5 proxy"),
    }
}

/// How each overlay network is reached: SOCKS5 proxies (IP:port; a proxy is never looked up by
/// name) and the built-in Tor client.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    pub tor: Option<SocketAddr>,
    pub i2p: Option<SocketAddr>,
    pub loki: Option<SocketAddr>,
    /// Used for `.onion` relays when `tor` (an external proxy) is not set.
    #[cfg(feature = "tor")]
    pub builtin_tor: Option<Arc<crate::net::tor::BuiltinTor>>,
    /// Connect timeout for overlay relays (Tor and the SOCKS5 proxies); `None`: the dialer's.
    pub overlay_timeout: Option<Duration>,
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
        network == Network::Clearnet
            || self.routes.proxy(network).is_some()
            || (network == Network::Tor && self.builtin_tor_usable())
    }

    /// When onion relays go through the built-in Tor and it is not ready for traffic yet (and
    /// this process does not wait for it in a dial), its status line; otherwise `None`.
    pub fn tor_not_ready(&self, network: Network) -> Option<String> {
        if network != Network::Tor || self.routes.tor.is_some() {
            return None;
        }
        #[cfg(feature = "tor")]
        if let Some(t) = self.builtin_tor() {
            return t.not_ready_for_dial();
        }
        None
    }

    /// A built-in Tor client exists, or may still be created (it has not failed).
    fn builtin_tor_usable(&self) -> bool {
        #[cfg(feature = "tor")]
        return self.builtin_tor().is_some_and(|t| !t.failed());
        #[cfg(not(feature = "tor"))]
        return false;
    }

    #[cfg(feature = "tor")]
    fn builtin_tor(&self) -> Option<&Arc<crate::net::tor::BuiltinTor>> {
        self.routes.builtin_tor.as_ref()
    }

    /// The connect timeout for a relay on `network`.
    pub fn timeout_for(&self, network: Network) -> Duration {
        match (network, self.routes.overlay_timeout) {
            (Network::Clearnet, _) | (_, None) => self.timeout,
            (_, Some(t)) => t,
        }
    }

    /// A stream to the relay's host and port (TLS, if any, is the caller's layer).
    pub async fn connect(&self, url: &RelayUrl) -> Result<RelayStream, DialError> {
        if url.network() != Network::Clearnet {
            let timeout = self.timeout_for(url.network());
            let Some(proxy) = self.routes.proxy(url.network()) else {
                #[cfg(feature = "tor")]
                if let (Network::Tor, Some(tor)) = (url.network(), self.builtin_tor()) {
                    use crate::net::tor::TorError;
                    return match tor.connect(url.host(), url.port(), timeout).await {
                        Ok(s) => Ok(Box::new(s)),
                        Err(TorError::NotReady(e)) => Err(DialError::TorNotReady {
                            url: url.to_string(),
                            reason: e.to_string(),
                        }),
                        Err(e @ TorError::Unavailable(_)) => Err(DialError::TorUnavailable {
                            url: url.to_string(),
                            reason: e.to_string(),
                        }),
                        Err(e) => Err(DialError::Tor {
                            url: url.to_string(),
                            reason: e.to_string(),
                        }),
                    };
                }
                return Err(DialError::NoRoute {
                    url: url.to_string(),
                    network: url.network(),
                });
            };
            // The name goes to the proxy as is: nothing is resolved here.
            let connect = crate::net::socks::connect(proxy, url.host(), url.port());
            return match tokio::time::timeout(timeout, connect).await {
                Ok(Ok(s)) => Ok(Box::new(s)),
                Ok(Err(e)) => Err(DialError::Proxy {
                    url: url.to_string(),
                    source: e,
                }),
                Err(_) => Err(DialError::Timeout {
                    url: url.to_string(),
                    after: timeout,
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
            let addrs: Vec<SocketAddr> =
                super::resolve::lookup(&host, port)
                    .await
                    .map_err(|source| DialError::Dns {
                        url: url.to_string(),
                        source,
                    })?;
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
                        return Ok(Box::new(s) as RelayStream);
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
