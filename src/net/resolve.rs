//! Name lookups on threads of their own.
//!
//! The system resolver (`getaddrinfo`) blocks, and a name whose DNS server never answers holds
//! its thread for the resolver's whole retry schedule (tens of seconds). `tokio::net::lookup_host`
//! runs it on the runtime's blocking pool, which is small here (`max_blocking_threads`) and also
//! runs page ingest and check recording: a handful of such names would starve storage. So:
//! - an IP literal is never looked up;
//! - every other lookup runs on a thread of its own, at most [`MAX_LOOKUPS`] at once (a lookup
//!   beyond that waits for a free one, inside its caller's timeout); a caller that gives up
//!   leaves the thread to finish on its own, and its slot is released only when `getaddrinfo`
//!   returns, so stuck lookups can never pile up past the bound;
//! - callers asking for a name already being looked up share that lookup (the synchronizer,
//!   the NIP-11 fetch and the monitor all ask for the same relays), so a few dead names hold a
//!   few threads, not one per caller.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{oneshot, Semaphore};

/// Lookups in flight at once (threads blocked in `getaddrinfo`).
pub const MAX_LOOKUPS: usize = 64;

type Answer = Result<Vec<IpAddr>, String>;

struct Resolver {
    slots: Arc<Semaphore>,
    /// Names being looked up, with the callers waiting for each.
    waiting: Mutex<HashMap<String, Vec<oneshot::Sender<Answer>>>>,
}

fn resolver() -> &'static Resolver {
    static R: OnceLock<Resolver> = OnceLock::new();
    R.get_or_init(|| Resolver {
        slots: Arc::new(Semaphore::new(MAX_LOOKUPS)),
        waiting: Mutex::new(HashMap::new()),
    })
}

/// Resolve `host:port` with the system resolver, off the runtime's thread pools. Wrap the call
/// in a timeout: it returns when the resolver does.
pub async fn lookup(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let r = resolver();
    let (tx, rx) = oneshot::channel();
    let first = {
        let mut w = r.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let callers = w.entry(host.to_string()).or_default();
        callers.push(tx);
        callers.len() == 1
    };
    if first {
        // Detached from this caller: a caller that times out (dropping this future) must not
        // leave the lookup unstarted and its name's waiters without an answer.
        let name = host.to_string();
        tokio::spawn(async move {
            let permit = match resolver().slots.clone().acquire_owned().await {
                Ok(p) => p,
                Err(e) => return finish(&name, Err(e.to_string())),
            };
            let name2 = name.clone();
            let spawned = std::thread::Builder::new()
                .name("dns".into())
                .stack_size(128 * 1024)
                .spawn(move || {
                    let answer: Answer = (name2.as_str(), 0)
                        .to_socket_addrs()
                        .map(|a| a.map(|s| s.ip()).collect())
                        .map_err(|e| e.to_string());
                    drop(permit);
                    finish(&name2, answer);
                });
            if let Err(e) = spawned {
                finish(&name, Err(e.to_string()));
            }
        });
    }
    match rx.await {
        Ok(Ok(ips)) => Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect()),
        Ok(Err(e)) => Err(std::io::Error::other(e)),
        Err(_) => Err(std::io::Error::other("resolver ended without an answer")),
    }
}

/// Hand `answer` to every caller waiting for `name`.
fn finish(name: &str, answer: Answer) {
    let callers = resolver()
        .waiting
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(name)
        .unwrap_or_default();
    for c in callers {
        let _ = c.send(answer.clone());
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn literals_are_never_looked_up_and_names_are_shared() {
        let a = super::lookup("127.0.0.1", 80).await.unwrap();
        assert_eq!(a, vec!["127.0.0.1:80".parse().unwrap()]);
        let v6 = super::lookup("::1", 81).await.unwrap();
        assert_eq!(v6, vec!["[::1]:81".parse().unwrap()]);
        // /etc/hosts, never a DNS query (tests stay on this machine); two callers at once get
        // the same answer with their own ports.
        let (l1, l2) = tokio::join!(super::lookup("localhost", 7), super::lookup("localhost", 8));
        let (l1, l2) = (l1.unwrap(), l2.unwrap());
        assert!(
            l1.iter().all(|a| a.ip().is_loopback() && a.port() == 7),
            "{l1:?}"
        );
        assert!(
            l2.iter().all(|a| a.ip().is_loopback() && a.port() == 8),
            "{l2:?}"
        );
    }
}
