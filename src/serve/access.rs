//! Who may ask how much of the read side:
//! - **Rate limits** per client address: a token bucket each (`serve.rate_limit_per_minute`
//!   refills it, `serve.rate_limit_burst` is its size); every request costs tokens, heavier
//!   routes more ([`Cost`]). A request that finds too few is answered `429` with `Retry-After`
//!   (a websocket REQ gets `CLOSED "rate-limited: ..."`). IPv6 clients are counted per /64,
//!   the block one subscriber usually holds.
//! - **API keys**: bearer tokens (`Authorization: Bearer <token>`) listed in
//!   `serve.api_keys_file` (one per line) or `BIGBROTR_API_KEYS` (comma-separated), never in
//!   config.toml. Only their SHA-256 is kept in memory. A key lifts the rate limits.
//! - **NIP-98**: `Authorization: Nostr <base64 kind-27235 event>` signed by a pubkey in
//!   `serve.trusted_pubkeys` lifts them too. The event must name this request's URL and method
//!   and be at most 60 s from now. A valid event from another pubkey is served as anonymous.
//!
//! A credential that is present but wrong (unknown key, bad signature, stale event) is answered
//! `401` with what is wrong, never silently downgraded: the client meant to be trusted.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use base64::Engine as _;
use hyper::header::{HeaderMap, AUTHORIZATION, HOST};
use hyper::{Method, Uri};
use sha2::{Digest, Sha256};

use crate::config::ServeConfig;

/// The environment variable holding API keys (comma-separated).
pub const KEYS_ENV: &str = "BIGBROTR_API_KEYS";
/// NIP-98's event kind.
pub const NIP98_KIND: u16 = 27235;
/// How far a NIP-98 event's `created_at` may be from now, seconds (NIP-98 suggests 60).
pub const NIP98_WINDOW_SECS: u64 = 60;
/// Client addresses tracked at once; past this, addresses whose buckets are full are forgotten
/// (they lose nothing: a full bucket is what a new one starts as).
const MAX_TRACKED: usize = 100_000;

/// What a request costs, in tokens: reads by id are cheap, filtered queries cost more,
/// statistics and exports most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// `/health`, NIP-11, the OpenAPI document, one event by id, a websocket REQ or COUNT.
    Light = 1,
    /// A filtered query, a status or relays read, the status page, metrics.
    Query = 2,
    /// Statistics, a NIP-77 reconciliation.
    Heavy = 5,
    /// A streaming export.
    Export = 20,
}

/// Who is asking, once credentials are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No credential (or a NIP-98 event from a pubkey not trusted): rate-limited.
    Anonymous,
    /// An API key or a trusted NIP-98 pubkey: not rate-limited. The text names which (never
    /// the key itself).
    Trusted(String),
}

/// Credentials and rate limits of one server.
pub struct Access {
    keys: HashSet<[u8; 32]>,
    trusted: HashSet<[u8; 32]>,
    limiter: Option<Limiter>,
}

impl Access {
    /// Credentials and limits of `cfg` with these API keys ([`read_keys`]). Pubkeys that are
    /// not hex are skipped here: the configuration refuses them when it is loaded.
    pub fn new(cfg: &ServeConfig, keys: Vec<String>) -> Access {
        let keys = keys.iter().map(|k| digest(k)).collect();
        let trusted = cfg
            .trusted_pubkeys
            .iter()
            .filter_map(|pk| crate::protocol::event::decode_hex::<32>(pk))
            .collect();
        let limiter = (cfg.rate_limit_per_minute > 0).then(|| {
            Limiter::new(
                cfg.rate_limit_per_minute as f64 / 60.0,
                cfg.rate_limit_burst.max(1) as f64,
            )
        });
        Access {
            keys,
            trusted,
            limiter,
        }
    }

    /// API keys loaded (for the log line at start).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Check the request's credentials. `Err` names what is wrong with one that was given.
    pub fn identify(
        &self,
        headers: &HeaderMap,
        method: &Method,
        uri: &Uri,
        now: u64,
    ) -> Result<Caller, String> {
        let Some(auth) = headers.get(AUTHORIZATION) else {
            return Ok(Caller::Anonymous);
        };
        let auth = auth
            .to_str()
            .map_err(|_| "the Authorization header is not ASCII".to_string())?;
        let (scheme, value) = auth.split_once(' ').unwrap_or((auth, ""));
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return if self.keys.contains(&digest(value)) {
                Ok(Caller::Trusted("api key".into()))
            } else {
                Err(
                    "this API key is not known here (serve.api_keys_file, BIGBROTR_API_KEYS)"
                        .into(),
                )
            };
        }
        if scheme.eq_ignore_ascii_case("nostr") {
            let host = headers.get(HOST).and_then(|h| h.to_str().ok());
            let pubkey = nip98(value, method, uri, host, now)?;
            return Ok(if self.trusted.contains(&pubkey) {
                Caller::Trusted(format!("nip98 {}", hex::encode(pubkey)))
            } else {
                Caller::Anonymous
            });
        }
        Err(format!(
            "Authorization scheme {scheme:?} is not accepted; use \"Bearer <API key>\" or \"Nostr <NIP-98 event>\""
        ))
    }

    /// Take `cost` tokens from the bucket of `ip`. `Err` is the whole seconds to wait.
    pub fn charge(&self, caller: &Caller, ip: IpAddr, cost: Cost) -> Result<(), u64> {
        match (&self.limiter, caller) {
            (Some(l), Caller::Anonymous) => l.take(client_key(ip), cost as u32 as f64),
            _ => Ok(()),
        }
    }
}

/// The API keys of `keys_file` (`serve.api_keys_file`, resolved) and of `env_keys` (the value
/// of [`KEYS_ENV`], passed in so tests need not touch the process environment).
pub fn read_keys(keys_file: Option<&Path>, env_keys: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut keys = match keys_file {
        Some(path) => read_keys_file(path)?,
        None => Vec::new(),
    };
    keys.extend(
        env_keys
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_string),
    );
    Ok(keys)
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The keys of a keys file: one per line; blank lines and `#` comments are skipped.
fn read_keys_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "serve.api_keys_file {}: {e}; create it (one key per line) or remove the setting",
            path.display()
        )
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// IPv4 addresses as they are; IPv6 by their /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Check a NIP-98 `Authorization: Nostr` value; the signer's pubkey when it holds.
fn nip98(
    value: &str,
    method: &Method,
    uri: &Uri,
    host: Option<&str>,
    now: u64,
) -> Result<[u8; 32], String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(value))
        .map_err(|_| "NIP-98: the Authorization value is not base64".to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "NIP-98: the event is not UTF-8")?;
    let raw: Box<serde_json::value::RawValue> =
        serde_json::from_str(&text).map_err(|e| format!("NIP-98: the event is not JSON: {e}"))?;
    let limits = crate::protocol::EventLimits::default();
    let ev = crate::protocol::event::parse(&raw, &limits)
        .and_then(|p| p.verify())
        .map_err(|e| format!("NIP-98: {e}"))?;
    if ev.kind != NIP98_KIND {
        return Err(format!(
            "NIP-98: the event is kind {}, not {NIP98_KIND}",
            ev.kind
        ));
    }
    if ev.created_at.abs_diff(now) > NIP98_WINDOW_SECS {
        return Err(format!(
            "NIP-98: the event's created_at is {} s from now, more than {NIP98_WINDOW_SECS}; sign a new one for each request",
            ev.created_at.abs_diff(now)
        ));
    }
    let tag = |name: &str| {
        ev.tags
            .iter()
            .find(|t| t.first().map(String::as_str) == Some(name))
            .and_then(|t| t.get(1))
            .map(String::as_str)
    };
    let m = tag("method").ok_or("NIP-98: the event has no method tag")?;
    if !m.eq_ignore_ascii_case(method.as_str()) {
        return Err(format!(
            "NIP-98: the event is for method {m}, this request is {method}"
        ));
    }
    let u = tag("u").ok_or("NIP-98: the event has no u tag")?;
    if !same_url(u, uri, host) {
        return Err(format!(
            "NIP-98: the event is for {u:?}, not this request's URL"
        ));
    }
    Ok(ev.pubkey)
}

/// Does the absolute URL `u` name this request (host and port, path, query)? The scheme is not
/// compared: behind a TLS proxy the request arrives over http.
fn same_url(u: &str, uri: &Uri, host: Option<&str>) -> bool {
    let Ok(parsed) = url::Url::parse(u) else {
        return false;
    };
    let Some(host) = host else { return false };
    let authority = match (parsed.host_str(), parsed.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => return false,
    };
    let theirs = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_string(),
    };
    let ours = uri.path_and_query().map_or("/", |p| p.as_str());
    authority.eq_ignore_ascii_case(host) && theirs == ours
}

/// Token buckets by client address.
struct Limiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl Limiter {
    fn new(per_sec: f64, burst: f64) -> Limiter {
        Limiter {
            per_sec,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn take(&self, key: IpAddr, cost: f64) -> Result<(), u64> {
        self.take_at(key, cost, Instant::now())
    }

    fn take_at(&self, key: IpAddr, cost: f64, now: Instant) -> Result<(), u64> {
        // A request dearer than the whole bucket is charged the whole bucket.
        let cost = cost.min(self.burst);
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
            let (per_sec, burst) = (self.per_sec, self.burst);
            map.retain(|_, (t, at)| {
                *t + now.saturating_duration_since(*at).as_secs_f64() * per_sec < burst
            });
            if map.len() >= MAX_TRACKED {
                // Every tracked client is mid-burst: forgetting the oldest-refilled half only
                // gives them back a full bucket, never more.
                let mut ats: Vec<Instant> = map.values().map(|(_, at)| *at).collect();
                ats.sort_unstable();
                let cut = ats[ats.len() / 2];
                map.retain(|_, (_, at)| *at > cut);
            }
        }
        let (tokens, at) = map.entry(key).or_insert((self.burst, now));
        let refilled = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_sec)
            .min(self.burst);
        *at = now;
        if refilled >= cost {
            *tokens = refilled - cost;
            Ok(())
        } else {
            *tokens = refilled;
            Err(((cost - refilled) / self.per_sec).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_refuses_past_its_burst_and_refills_at_its_rate() {
        let l = Limiter::new(1.0, 10.0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.take_at(ip, 2.0, t0), Ok(()));
        }
        // Empty: 5 tokens short of a 5-token request is 5 s at 1/s.
        assert_eq!(l.take_at(ip, 5.0, t0), Err(5));
        // Another address has its own bucket.
        assert_eq!(l.take_at(other, 5.0, t0), Ok(()));
        // Three seconds later three tokens are back.
        assert_eq!(l.take_at(ip, 3.0, t0 + Duration::from_secs(3)), Ok(()));
        assert_eq!(l.take_at(ip, 1.0, t0 + Duration::from_secs(3)), Err(1));
        // Never more than the burst, however long it waited.
        assert_eq!(l.take_at(ip, 10.0, t0 + Duration::from_secs(1000)), Ok(()));
        assert!(l.take_at(ip, 1.0, t0 + Duration::from_secs(1000)).is_err());
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_tracked_set_stays_bounded() {
        let l = Limiter::new(1.0, 10.0);
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(i));
            let _ = l.take_at(ip, 1.0, t0 + Duration::from_micros(u64::from(i)));
        }
        let n = l.buckets.lock().unwrap().len();
        assert!(n <= MAX_TRACKED, "{n} tracked");
    }

    #[test]
    fn nip98_urls_compare_host_path_and_query_not_scheme() {
        let uri: Uri = "/v1/events?kinds=1".parse().unwrap();
        let host = Some("127.0.0.1:7777");
        assert!(same_url(
            "http://127.0.0.1:7777/v1/events?kinds=1",
            &uri,
            host
        ));
        assert!(same_url(
            "https://127.0.0.1:7777/v1/events?kinds=1",
            &uri,
            host
        ));
        assert!(!same_url(
            "http://127.0.0.1:7777/v1/events?kinds=2",
            &uri,
            host
        ));
        assert!(!same_url("http://127.0.0.1:7777/v1/events", &uri, host));
        assert!(!same_url(
            "http://evil.example:7777/v1/events?kinds=1",
            &uri,
            host
        ));
        assert!(!same_url(
            "http://127.0.0.1:7777/v1/events?kinds=1",
            &uri,
            None
        ));
    }
}
