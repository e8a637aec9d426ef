//! SOCKS5 CONNECT (RFC 1928, no authentication) by host NAME: the proxy resolves the name, this
//! node never does. Used by the dialer for overlay networks (an external Tor's SocksPort, an I2P
//! or Lokinet SOCKS proxy), so an `.onion`/`.i2p`/`.loki` name never reaches the local resolver.
//!
//! Every byte the proxy sends is checked; the whole exchange runs under the caller's timeout.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum SocksError {
    #[error("SOCKS5 proxy {proxy}: {source}")]
    Io {
        proxy: SocketAddr,
        source: std::io::Error,
    },
    #[error("SOCKS5 proxy {proxy}: {reason}")]
    Protocol { proxy: SocketAddr, reason: String },
    #[error("SOCKS5 proxy {proxy} could not connect to {host}:{port}: {reason}")]
    Refused {
        proxy: SocketAddr,
        host: String,
        port: u16,
        reason: &'static str,
    },
}

fn reply_reason(code: u8) -> &'static str {
    match code {
        1 => "general failure",
        2 => "not allowed by the proxy's rules",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown error",
    }
}

/// A TCP stream to `host:port` through the SOCKS5 proxy at `proxy`.
pub async fn connect(proxy: SocketAddr, host: &str, port: u16) -> Result<TcpStream, SocksError> {
    let io = |source| SocksError::Io { proxy, source };
    let bad = |reason: String| SocksError::Protocol { proxy, reason };
    if host.is_empty() || host.len() > 255 {
        return Err(bad(format!(
            "host name of {} bytes cannot be sent",
            host.len()
        )));
    }
    let mut s = TcpStream::connect(proxy).await.map_err(io)?;
    let _ = s.set_nodelay(true);
    // Greeting: version 5, one method, "no authentication".
    s.write_all(&[5, 1, 0]).await.map_err(io)?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await.map_err(io)?;
    if choice != [5, 0] {
        return Err(bad(format!(
            "does not accept unauthenticated clients (answered {choice:?})"
        )));
    }
    // CONNECT to a domain name (address type 3): the proxy resolves it.
    let mut req = Vec::with_capacity(7 + host.len());
    req.extend([5, 1, 0, 3, host.len() as u8]);
    req.extend(host.as_bytes());
    req.extend(port.to_be_bytes());
    s.write_all(&req).await.map_err(io)?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.map_err(io)?;
    if head[0] != 5 {
        return Err(bad(format!("answered version {}", head[0])));
    }
    if head[1] != 0 {
        return Err(SocksError::Refused {
            proxy,
            host: host.to_string(),
            port,
            reason: reply_reason(head[1]),
        });
    }
    // The bound address: skip it (and its port), whatever its type.
    let skip = match head[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await.map_err(io)?;
            usize::from(len[0])
        }
        other => return Err(bad(format!("answered address type {other}"))),
    };
    let mut rest = vec![0u8; skip + 2];
    s.read_exact(&mut rest).await.map_err(io)?;
    Ok(s)
}
