//! Name lookups on threads of their own.
//!
//! The system resolver (`getaddrinfo`) blocks, and a name whose DNS server never answers holds
//! its thread for the resolver's whole retry schedule (tens of seconds). `tokio::net::lookup_host`
//! runs it on the runtime's blocking pool, which is small here (`max_blocking_threads`) and also
//! runs page ingest and check recording: a handful of such names would starve storage. So every
//! lookup runs on a thread of its own, at most [`MAX_LOOKUPS`] at once (a lookup beyond that
//! waits for a free one, inside its caller's timeout); a caller that gives up leaves the thread
//! to finish on its own, and the permit is released only when `getaddrinfo` returns, so stuck
//! lookups can never pile up past the bound.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, OnceLock};

use tokio::sync::Semaphore;

/// Lookups in flight at once (threads blocked in `getaddrinfo`).
pub const MAX_LOOKUPS: usize = 16;

fn slots() -> Arc<Semaphore> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SLOTS
        .get_or_init(|| Arc::new(Semaphore::new(MAX_LOOKUPS)))
        .clone()
}

/// Resolve `host:port` with the system resolver, off the runtime's thread pools. Wrap the call
/// in a timeout: it returns when the resolver does.
pub async fn lookup(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let permit = slots()
        .acquire_owned()
        .await
        .map_err(|_| std::io::Error::other("resolver closed"))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let host = host.to_string();
    std::thread::Builder::new()
        .name("dns".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let r = (host.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>());
            drop(permit);
            let _ = tx.send(r);
        })?;
    rx.await
        .map_err(|_| std::io::Error::other("resolver thread ended without an answer"))?
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn resolves_literals_and_localhost() {
        let a = super::lookup("127.0.0.1", 80).await.unwrap();
        assert_eq!(a, vec!["127.0.0.1:80".parse().unwrap()]);
        // /etc/hosts, never a DNS query (tests stay on this machine).
        let l = super::lookup("localhost", 7).await.unwrap();
        assert!(
            l.iter().all(|a| a.ip().is_loopback() && a.port() == 7),
            "{l:?}"
        );
    }
}
