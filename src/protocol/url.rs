//! Relay URLs: strict parsing, one normal form, network classification and the SSRF policy.
//!
//! Relay URLs reach BigBrotr from untrusted Nostr events (NIP-65 relay lists, relay hints in
//! tags, contact lists), so nothing from the network is trusted. [`normalize`] accepts only
//! `ws://` and `wss://` URLs and rewrites every spelling of a relay to a single string, so one
//! relay is one key in the archive; it refuses junk outright instead of guessing what the author
//! meant. [`check_policy`]
//! then refuses, by default, relays on loopback, private, link-local and reserved addresses and
//! local-only host names, so a hostile event cannot make the crawler dial into the operator's own
//! network (SSRF). The operator switch [`UrlPolicy::allow_local`] (or a per-host
//! [`UrlPolicy::allow_hosts`] entry) allows them, e.g. for a relay on the same machine.
//!
//! A name that passes the policy can still resolve to a refused address (DNS rebinding), so the
//! dialer must call [`is_refused_ip`] again on every address it resolves.
//!
//! This module does no I/O at all: no DNS, no sockets. Tor (`.onion`), I2P (`.i2p`) and Lokinet
//! (`.loki`) hosts are classified by name only and must never be resolved through DNS; they are
//! dialled through their own proxies, so the address policy does not apply to them.
//!
//! The normal form is `scheme://host[:port][/path]`: scheme and host lowercased, internationalized
//! names in punycode, one trailing dot of the host removed, the default port (80 for `ws`, 443 for
//! `wss`) removed, trailing slashes of the path removed, so `wss://Relay.Damus.io:443/` becomes
//! `wss://relay.damus.io`. Nothing else is collapsed. Refused outright:
//!
//! - empty input, input over [`MAX_URL_LEN`] bytes (measured before trimming);
//! - whitespace, control or invisible formatting characters or a backslash anywhere after the
//!   surrounding whitespace is trimmed, and any of these percent-encoded (`%20`, `%0A`, `%C2%A0`…);
//! - a scheme other than `ws`/`wss`, or one not followed by `://` (`wss:relay.example`);
//! - two URLs glued together: a host that is itself a scheme name (`wss://https//host`,
//!   `wss://wss://host`, `ws://http:host`) or `//` right after the host;
//! - credentials (`user:pass@`), query strings and fragments: a relay URL is an address, and a
//!   relay URL with `?` or `#` is junk in practice (tracking parameters, copy-paste debris), so
//!   keeping them would only split one relay into many keys;
//! - `.` and `..` path segments (the URL parser would silently collapse them);
//! - an empty host, empty labels (`a..b`), labels over 63 or names over 253 bytes, port 0;
//! - a `.onion` host that is not a v3 address (56 base32 characters in the label before
//!   `.onion`; the checksum is not verified).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ::url::{Host, Url};

/// The longest relay URL accepted, in bytes, measured on the raw input.
pub const MAX_URL_LEN: usize = 2048;

/// Names that, found as a host, mean two URLs were glued together.
const SCHEME_NAMES: [&str; 4] = ["ws", "wss", "http", "https"];

/// Characters that render as nothing and that IDNA would silently drop.
const INVISIBLE: [char; 6] = [
    '\u{00AD}', '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}',
];

/// Host name suffixes that only resolve on a local network (RFC 6761, RFC 8375, RFC 6762 App. G).
/// A host equal to a suffix or ending in `.suffix` is refused unless local hosts are allowed.
const LOCAL_SUFFIXES: [&str; 10] = [
    "localhost",
    "local",
    "internal",
    "lan",
    "home.arpa",
    "localdomain",
    "intranet",
    "private",
    "corp",
    "home",
];

/// The overlay network a relay lives on, decided by its host name alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Network {
    Clearnet,
    Tor,
    I2p,
    Loki,
}

impl Network {
    /// The stable lowercase name, as stored and as written in configuration.
    pub fn as_str(&self) -> &'static str {
        match self {
            Network::Clearnet => "clearnet",
            Network::Tor => "tor",
            Network::I2p => "i2p",
            Network::Loki => "loki",
        }
    }

    /// The inverse of [`Network::as_str`]; ASCII case-insensitive, surrounding whitespace ignored.
    pub fn parse(s: &str) -> Option<Network> {
        let s = s.trim();
        [Network::Clearnet, Network::Tor, Network::I2p, Network::Loki]
            .into_iter()
            .find(|n| n.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A syntactically valid relay URL in normal form. Only [`normalize`] and [`parse_relay_url`]
/// make one, so holding a `RelayUrl` means the string is normalized; it does not mean the policy
/// was checked unless it came from [`parse_relay_url`]. Ordered and compared by its string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayUrl {
    // `url` first: the derived ordering is the ordering of the normalized strings; the other
    // fields are functions of it.
    url: String,
    host: String,
    port: u16,
    network: Network,
    secure: bool,
}

impl RelayUrl {
    /// The normalized URL, e.g. `wss://relay.damus.io` or `ws://abc.b32.i2p:8080/inbox`.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    pub fn network(&self) -> Network {
        self.network
    }

    /// The normalized host: lowercase, punycode, no trailing dot; IPv4 as dotted quad; IPv6 in
    /// brackets in its canonical compressed form (`[::1]`), as the `url` crate writes it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port to dial: the explicit one, or 80 for `ws` and 443 for `wss`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True for `wss://`.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The NIP-11 document URL: `ws` -> `http`, `wss` -> `https`, same host, port and path.
    /// The default ports coincide, so a stripped port stays correct.
    pub fn http_url(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        let rest = self.url.split_once("://").map_or("", |(_, rest)| rest);
        format!("{scheme}://{rest}")
    }
}

impl fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// What [`check_policy`] lets through. The default refuses every local address and name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    /// Allow loopback, private, link-local and reserved addresses and local-only names.
    pub allow_local: bool,
    /// Hosts allowed even when `allow_local` is false, matched exactly against the normalized
    /// host (no port). Entries are normalized the same way: case, trailing dot, IDN; IP entries
    /// are compared as addresses, so `::1`, `[::1]` and `[0::1]` are the same entry.
    pub allow_hosts: Vec<String>,
}

/// Why a relay URL was refused. Every message names the URL (escaped, so it is safe to log) and
/// says what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("relay URL is empty")]
    Empty,
    #[error("relay URL is {len} bytes long; the limit is {max} bytes")]
    TooLong { len: usize, max: usize },
    #[error(
        "relay URL {url:?} contains {what}; relay URLs may not contain whitespace, control \
         characters or backslashes"
    )]
    ForbiddenCharacter { url: String, what: String },
    #[error(
        "relay URL {url:?} contains percent-encoded {what}; this is junk, not a relay address"
    )]
    EncodedJunk { url: String, what: String },
    #[error("relay URL {url:?} has no scheme; a relay URL starts with wss:// (or ws://)")]
    MissingScheme { url: String },
    #[error("relay URL {url:?} has scheme {scheme:?}; only ws:// and wss:// relays exist")]
    UnsupportedScheme { url: String, scheme: String },
    #[error(
        "relay URL {url:?} is two URLs glued together ({detail}); fix the source that published it"
    )]
    GluedUrl { url: String, detail: &'static str },
    #[error(
        "relay URL {url:?} contains credentials (user@ or user:password@); relay URLs must not"
    )]
    Credentials { url: String },
    #[error(
        "relay URL {url:?} has a query string ('?'); relay URLs with a query are refused as junk"
    )]
    Query { url: String },
    #[error(
        "relay URL {url:?} has a fragment ('#'); relay URLs with a fragment are refused as junk"
    )]
    Fragment { url: String },
    #[error("relay URL {url:?} has a '.' or '..' path segment; write the path without them")]
    DotSegment { url: String },
    #[error("relay URL {url:?} has no host")]
    EmptyHost { url: String },
    #[error("relay URL {url:?} has an invalid host {host:?}: {reason}")]
    InvalidHost {
        url: String,
        host: String,
        reason: &'static str,
    },
    #[error("relay URL {url:?} has port 0, which cannot be dialled")]
    PortZero { url: String },
    #[error(
        "relay URL {url:?} has host {host:?}, which is not a v3 onion address (56 base32 \
         characters a-z, 2-7 before .onion); v2 onions no longer exist"
    )]
    InvalidOnion { url: String, host: String },
    #[error("relay URL {url:?} cannot be parsed: {reason}")]
    Malformed {
        url: String,
        reason: ::url::ParseError,
    },
    #[error(
        "relay URL {url:?} points at {what}; refused to prevent SSRF (set allow_local, or add \
         {host:?} to allow_hosts, to allow it)"
    )]
    Refused {
        url: String,
        host: String,
        what: String,
    },
}

/// Parse, normalize and classify a relay URL. Checks syntax only; see [`check_policy`].
pub fn normalize(raw: &str) -> Result<RelayUrl, UrlError> {
    if raw.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong {
            len: raw.len(),
            max: MAX_URL_LEN,
        });
    }
    let s = raw.trim();
    if s.is_empty() {
        return Err(UrlError::Empty);
    }
    let err_url = || s.to_string();

    // The URL parser silently deletes tabs and newlines and rewrites backslashes, which would
    // turn junk into a valid-looking relay: refuse them before parsing.
    if let Some((i, c)) = s
        .char_indices()
        .find(|&(_, c)| forbidden(c).is_some() || c == '\\')
    {
        let kind = forbidden(c).unwrap_or("a backslash");
        return Err(UrlError::ForbiddenCharacter {
            url: err_url(),
            what: format!("{kind} (U+{:04X}) at byte {i}", u32::from(c)),
        });
    }
    if s.contains('%') {
        let decoded = percent_decode(s);
        let decoded = String::from_utf8_lossy(&decoded);
        if let Some(kind) = decoded.chars().find_map(forbidden) {
            return Err(UrlError::EncodedJunk {
                url: err_url(),
                what: kind.to_string(),
            });
        }
    }

    // Scheme: exactly `scheme://`. The parser would accept `wss:host` and `wss:/host`.
    let Some((scheme, rest)) = s.split_once("://").filter(|(scheme, _)| is_scheme(scheme)) else {
        return Err(UrlError::MissingScheme { url: err_url() });
    };
    let secure = if scheme.eq_ignore_ascii_case("wss") {
        true
    } else if scheme.eq_ignore_ascii_case("ws") {
        false
    } else {
        return Err(UrlError::UnsupportedScheme {
            url: err_url(),
            scheme: scheme.to_ascii_lowercase(),
        });
    };
    if starts_with_scheme_name(rest) {
        return Err(UrlError::GluedUrl {
            url: err_url(),
            detail: "the host is a scheme name",
        });
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(authority_end);
    if authority.contains('@') {
        return Err(UrlError::Credentials { url: err_url() });
    }
    if authority.is_empty() {
        // The parser would skip the extra slashes of `wss:///host` and find a host.
        return Err(UrlError::EmptyHost { url: err_url() });
    }
    let raw_path = after.split(['?', '#']).next().unwrap_or("");
    if raw_path.split('/').any(is_dot_segment) {
        return Err(UrlError::DotSegment { url: err_url() });
    }

    let parsed = Url::parse(s).map_err(|reason| match reason {
        ::url::ParseError::EmptyHost => UrlError::EmptyHost { url: err_url() },
        reason => UrlError::Malformed {
            url: err_url(),
            reason,
        },
    })?;
    // Re-check on the parsed form; the pre-checks above should already have caught these.
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(UrlError::Credentials { url: err_url() });
    }
    if parsed.query().is_some() {
        return Err(UrlError::Query { url: err_url() });
    }
    if parsed.fragment().is_some() {
        return Err(UrlError::Fragment { url: err_url() });
    }

    let host = match parsed.host() {
        None => return Err(UrlError::EmptyHost { url: err_url() }),
        Some(Host::Domain(domain)) => normalize_domain(domain, s)?,
        Some(Host::Ipv4(ip)) => ip.to_string(),
        Some(Host::Ipv6(ip)) => format!("[{ip}]"),
    };

    if parsed.port() == Some(0) {
        return Err(UrlError::PortZero { url: err_url() });
    }
    let default_port = if secure { 443 } else { 80 };
    let port = parsed.port().unwrap_or(default_port);
    // The parser already reports the scheme's default port as `None`.
    let port_part = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();

    let path = parsed.path().trim_end_matches('/');
    if path.starts_with("//") {
        return Err(UrlError::GluedUrl {
            url: err_url(),
            detail: "'//' follows the host",
        });
    }

    let network = classify(&host).ok_or_else(|| UrlError::InvalidOnion {
        url: err_url(),
        host: host.clone(),
    })?;

    let scheme = if secure { "wss" } else { "ws" };
    Ok(RelayUrl {
        url: format!("{scheme}://{host}{port_part}{path}"),
        host,
        port,
        network,
        secure,
    })
}

/// Refuse a relay the policy does not allow. Overlay networks (Tor, I2P, Lokinet) are never
/// refused here; clearnet hosts are refused when they are local-only names (`localhost`,
/// `*.localhost`, `*.local`, `*.internal`, `*.lan`, `*.home.arpa`, `*.localdomain`,
/// `*.intranet`, `*.private`, `*.corp`, `*.home`, any single-label name) or IP literals for which
/// [`is_refused_ip`] is true, unless `allow_local` is set or the host is in `allow_hosts`.
pub fn check_policy(url: &RelayUrl, policy: &UrlPolicy) -> Result<(), UrlError> {
    if url.network != Network::Clearnet || policy.allow_local {
        return Ok(());
    }
    if policy
        .allow_hosts
        .iter()
        .any(|entry| allow_entry_matches(entry, &url.host))
    {
        return Ok(());
    }
    match local_host_reason(&url.host) {
        None => Ok(()),
        Some(what) => Err(UrlError::Refused {
            url: url.url.clone(),
            host: url.host.clone(),
            what,
        }),
    }
}

/// [`normalize`], then [`check_policy`].
pub fn parse_relay_url(raw: &str, policy: &UrlPolicy) -> Result<RelayUrl, UrlError> {
    let url = normalize(raw)?;
    check_policy(&url, policy)?;
    Ok(url)
}

/// True for addresses that are refused unless local relays are allowed: not globally routable
/// unicast (loopback, private, link-local, shared, documentation, benchmarking, multicast,
/// reserved, broadcast, and IPv6 forms embedding such an IPv4 address). The dialer calls this on
/// every address a host name resolves to.
pub fn is_refused_ip(ip: IpAddr) -> bool {
    ip_refusal(ip).is_some()
}

/// Why an address is refused, for error messages; `None` if it is allowed.
fn ip_refusal(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(v4) => ipv4_refusal(v4).map(|what| format!("{what} {v4}")),
        IpAddr::V6(v6) => ipv6_refusal(v6),
    }
}

fn ipv4_refusal(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let what = match (a, b, c) {
        (0, _, _) => "the \"this network\" address block 0.0.0.0/8:",
        (127, _, _) => "the loopback address",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "the private address",
        (169, 254, _) => "the link-local address",
        (100, 64..=127, _) => "the shared (carrier-grade NAT) address",
        (192, 0, 0) => "the IETF protocol assignment address",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "the documentation address",
        (198, 18..=19, _) => "the benchmarking address",
        (224..=239, _, _) => "the multicast address",
        (240..=255, _, _) => "the reserved or broadcast address",
        _ => return None,
    };
    Some(what)
}

fn ipv6_refusal(ip: Ipv6Addr) -> Option<String> {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    let judged_by_v4 = |form: &str, v4: Ipv4Addr| {
        ipv4_refusal(v4).map(|what| format!("the {form} IPv6 address {ip}, embedding {what} {v4}"))
    };
    let what = if ip.is_unspecified() {
        "the unspecified address"
    } else if ip.is_loopback() {
        "the loopback address"
    } else if let Some(v4) = ip.to_ipv4_mapped() {
        return judged_by_v4("IPv4-mapped", v4);
    } else if s[..6] == [0; 6] {
        return judged_by_v4("IPv4-compatible", embedded(s[6], s[7]));
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return judged_by_v4("NAT64", embedded(s[6], s[7]));
    } else if s[..3] == [0x64, 0xff9b, 1] {
        "the local-use NAT64 address (64:ff9b:1::/48)"
    } else if s[0] == 0x2002 {
        return judged_by_v4("6to4", embedded(s[1], s[2]));
    } else if s[..2] == [0x2001, 0] {
        "the Teredo address (2001::/32)"
    } else if s[..2] == [0x2001, 0x0db8] || (s[0] == 0x3fff && s[1] & 0xf000 == 0) {
        "the documentation address"
    } else if s[..3] == [0x2001, 2, 0] {
        "the benchmarking address (2001:2::/48)"
    } else if s[..4] == [0x100, 0, 0, 0] {
        "the discard-only address (100::/64)"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "the unique local address (fc00::/7)"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "the link-local address (fe80::/10)"
    } else if s[0] & 0xffc0 == 0xfec0 {
        "the site-local address (fec0::/10)"
    } else if s[0] & 0xff00 == 0xff00 {
        "the multicast address"
    } else {
        return None;
    };
    Some(format!("{what} {ip}"))
}

/// Why a clearnet host is local-only, or `None` if it may be dialled.
fn local_host_reason(host: &str) -> Option<String> {
    if let Some(ip) = host_ip(host) {
        return ip_refusal(ip);
    }
    if let Some(suffix) = LOCAL_SUFFIXES
        .iter()
        .find(|suffix| has_suffix(host, suffix))
    {
        return Some(format!("the local-only host name {host:?} (.{suffix})"));
    }
    if !host.contains('.') {
        return Some(format!(
            "the single-label host name {host:?}, which only resolves on a local network"
        ));
    }
    None
}

/// `host` is `suffix` or ends in `.suffix`.
fn has_suffix(host: &str, suffix: &str) -> bool {
    host.strip_suffix(suffix)
        .is_some_and(|head| head.is_empty() || head.ends_with('.'))
}

/// The address of a normalized IP-literal host (`1.2.3.4` or `[::1]`).
fn host_ip(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

fn allow_entry_matches(entry: &str, host: &str) -> bool {
    let entry = entry.trim();
    let entry = entry.strip_suffix('.').unwrap_or(entry);
    if entry.is_empty() {
        return false;
    }
    let bare = entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .unwrap_or(entry);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return host_ip(host) == Some(ip);
    }
    match Host::parse(entry) {
        Ok(Host::Domain(domain)) => domain == host,
        Ok(Host::Ipv4(ip)) => host_ip(host) == Some(IpAddr::V4(ip)),
        Ok(Host::Ipv6(ip)) => host_ip(host) == Some(IpAddr::V6(ip)),
        Err(_) => false,
    }
}

/// Tor for v3 `.onion` names, I2P, Lokinet, otherwise clearnet; `None` for an invalid onion.
fn classify(host: &str) -> Option<Network> {
    if let Some(head) = host.strip_suffix(".onion") {
        let label = head.rsplit('.').next().unwrap_or(head);
        let v3 = label.len() == 56
            && label
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'));
        return v3.then_some(Network::Tor);
    }
    if host.ends_with(".i2p") {
        Some(Network::I2p)
    } else if host.ends_with(".loki") {
        Some(Network::Loki)
    } else {
        Some(Network::Clearnet)
    }
}

/// The parser's lowercase punycode domain, minus one trailing dot, checked label by label.
fn normalize_domain(domain: &str, url: &str) -> Result<String, UrlError> {
    let host = domain.strip_suffix('.').unwrap_or(domain);
    let invalid = |reason| UrlError::InvalidHost {
        url: url.to_string(),
        host: domain.to_string(),
        reason,
    };
    if host.is_empty() {
        return Err(UrlError::EmptyHost {
            url: url.to_string(),
        });
    }
    if host.len() > 253 {
        return Err(invalid("the name is longer than 253 bytes"));
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err(invalid("it has an empty label"));
        }
        if label.len() > 63 {
            return Err(invalid("a label is longer than 63 bytes"));
        }
    }
    if SCHEME_NAMES.contains(&host) {
        return Err(UrlError::GluedUrl {
            url: url.to_string(),
            detail: "the host is a scheme name",
        });
    }
    Ok(host.to_string())
}

/// A description of a character refused anywhere in a relay URL, or `None` if it is allowed.
fn forbidden(c: char) -> Option<&'static str> {
    if c.is_whitespace() {
        Some("whitespace")
    } else if c.is_control() {
        Some("a control character")
    } else if INVISIBLE.contains(&c) {
        Some("an invisible formatting character")
    } else {
        None
    }
}

/// RFC 3986 scheme syntax: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// `rest` (what follows `scheme://`) starts with a scheme name that ends the host:
/// `https//x`, `wss://x`, `http:x`, or just `ws`.
fn starts_with_scheme_name(rest: &str) -> bool {
    let end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    let (word, tail) = rest.split_at(end);
    SCHEME_NAMES.iter().any(|n| word.eq_ignore_ascii_case(n))
        && matches!(tail.chars().next(), None | Some(':' | '/' | '?' | '#'))
}

/// `.` or `..`, also percent-encoded.
fn is_dot_segment(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase().replace("%2e", ".");
    lower == "." || lower == ".."
}

fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            if let (Some(hi), Some(lo)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                // Two hex digits: at most 0xff.
                out.push(((hi << 4) | lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests;
