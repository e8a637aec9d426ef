//! Configuration: `config.toml`, validated once at load.
//!
//! Every section is a plain struct with `#[serde(default, deny_unknown_fields)]`: a file that sets
//! only `[node] data_dir` and `[network] allow_local` works, every other key taking the default
//! written beside it, and a typo is an error that names the key instead of a silently ignored
//! setting. Secrets never live here (invariant 7): the node key comes from `BIGBROTR_NODE_KEY` or
//! a key file, see [`crate::keys`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::protocol::url::UrlPolicy;
use crate::protocol::EventLimits;

/// The embedded default, identical to `config.toml` at the repository root.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config.toml");
/// The embedded seed list, identical to `seed_relays.txt` at the repository root.
pub const EMBEDDED_SEEDS: &str = include_str!("../seed_relays.txt");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: `{key}` {problem}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        problem: String,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub log: LogConfig,
    pub network: NetworkConfig,
    pub storage: StorageConfig,
    pub seeder: SeederConfig,
    pub finder: FinderConfig,
    pub sync: SyncConfig,
    pub monitor: MonitorConfig,
    pub spool: SpoolConfig,
    pub upstream: UpstreamConfig,
    pub archive: ArchiveConfig,
    pub tor: TorConfig,
    pub serve: ServeConfig,
    /// Where the file was loaded from (`None`: the embedded default). Not a config key.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[tor]`: the built-in Tor client (arti) for `.onion` relays.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TorConfig {
    /// Reach `.onion` relays through the built-in Tor (default: true in builds with the `tor`
    /// cargo feature, which is the default build). Ignored when `network.tor_proxy` is set: an
    /// external tor is used instead.
    pub enabled: Option<bool>,
    /// Memory arti may use for queued Tor traffic before it sheds load, MiB (default: 32).
    pub memory_max_mb: u64,
    /// arti's own configuration (its `arti.toml` keys), for what is not covered above, e.g.
    /// `[tor.arti.tor_network]` fallback caches and authorities of a private Tor network.
    /// `storage` and `system.memory` are always set from the keys above.
    pub arti: Option<toml::Table>,
}

impl Default for TorConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            memory_max_mb: 32,
            arti: None,
        }
    }
}

impl TorConfig {
    /// Whether onion relays go through the built-in Tor in this build with this config.
    pub fn builtin(&self, network: &NetworkConfig) -> bool {
        cfg!(feature = "tor") && self.enabled.unwrap_or(true) && network.tor_proxy.is_none()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Where all node state lives (default: `./data`, relative to the config file's directory).
    pub data_dir: PathBuf,
    /// Human name for this node, used upstream (default: `bigbrotr`).
    pub name: String,
    /// Node key file (default: `<data_dir>/node.key`); `BIGBROTR_NODE_KEY` overrides it.
    pub key_file: Option<PathBuf>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            name: "bigbrotr".into(),
            key_file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json` (default: `text`).
    pub format: LogFormat,
    /// A tracing filter such as `info` or `bigbrotr=debug` (default: `info`); `RUST_LOG` overrides.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Allow loopback, private, link-local and reserved addresses (default: false). Only for tests
    /// and private deployments: relay URLs come from untrusted events (SSRF).
    pub allow_local: bool,
    /// Hosts allowed even when `allow_local` is false, e.g. `["127.0.0.1"]` (default: none).
    pub allow_hosts: Vec<String>,
    /// TCP + TLS + websocket handshake timeout in seconds (default: 15).
    pub connect_timeout_secs: u64,
    /// The same for `.onion`, `.i2p` and `.loki` relays, whose circuits take longer (default: 60).
    pub overlay_connect_timeout_secs: u64,
    /// Largest websocket message accepted from a relay, bytes (default: 1 MiB).
    pub max_message_bytes: usize,
    /// Largest event `content`, bytes (default: 256 KiB).
    pub max_content_bytes: usize,
    /// Most tags per event (default: 2,000).
    pub max_tags: usize,
    /// Largest total of tag values per event, bytes (default: 256 KiB).
    pub max_tag_bytes: usize,
    /// SOCKS5 proxy (`IP:port`) for `.onion` relays, e.g. an external tor's SocksPort
    /// `127.0.0.1:9050`. Unset: onion relays are skipped (never resolved or dialed directly).
    pub tor_proxy: Option<String>,
    /// SOCKS5 proxy for `.i2p` relays (e.g. i2pd's `127.0.0.1:4447`). Unset: skipped.
    pub i2p_proxy: Option<String>,
    /// SOCKS5 proxy for `.loki` relays (Lokinet). Unset: skipped.
    pub loki_proxy: Option<String>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        let limits = EventLimits::default();
        Self {
            allow_local: false,
            allow_hosts: Vec::new(),
            connect_timeout_secs: 15,
            overlay_connect_timeout_secs: 60,
            max_message_bytes: 1024 * 1024,
            max_content_bytes: limits.max_content_bytes,
            max_tags: limits.max_tags,
            max_tag_bytes: limits.max_tag_bytes,
            tor_proxy: None,
            i2p_proxy: None,
            loki_proxy: None,
        }
    }
}

impl NetworkConfig {
    /// The overlay routes (validated at load: each is an `IP:port`).
    pub fn routes(&self) -> crate::net::dialer::Routes {
        let parse = |p: &Option<String>| p.as_deref().and_then(|s| s.trim().parse().ok());
        crate::net::dialer::Routes {
            tor: parse(&self.tor_proxy),
            i2p: parse(&self.i2p_proxy),
            loki: parse(&self.loki_proxy),
            overlay_timeout: Some(std::time::Duration::from_secs(
                self.overlay_connect_timeout_secs,
            )),
            // The built-in client is the process's own (crate::net::tor::shared), added by the CLI.
            #[cfg(feature = "tor")]
            builtin_tor: None,
        }
    }

    pub fn url_policy(&self) -> UrlPolicy {
        UrlPolicy {
            allow_local: self.allow_local,
            allow_hosts: self.allow_hosts.clone(),
        }
    }

    pub fn event_limits(&self) -> EventLimits {
        EventLimits {
            max_content_bytes: self.max_content_bytes,
            max_tags: self.max_tags,
            max_tag_bytes: self.max_tag_bytes,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// RocksDB block cache, MiB (default: 8). Small on purpose: a Pi shares its memory.
    pub block_cache_mb: usize,
    /// Total RocksDB memtable budget across column families, MiB (default: 16).
    pub write_buffer_mb: usize,
    /// Refuse to start, and pause syncing, below this much free disk, MiB (default: 256).
    pub min_free_disk_mb: u64,
    /// fsync the RocksDB WAL for every page written before a cursor moves (default: true).
    /// Off survives a process crash but not a power cut.
    pub sync_writes: bool,
    /// With `[upstream]`: evict the bodies of events the archive has acknowledged once they
    /// have been stored this long, days (default: 30; 0 = as soon as shipped). Ids and
    /// sightings are kept for dedup. A node without upstream keeps everything.
    pub keep_shipped_days: f64,
    /// With `[upstream]`: evict shipped events at all (default: true). Off: the node keeps
    /// every event and pauses at `min_free_disk_mb`, as a node without upstream does.
    pub evict_shipped: bool,
}

impl StorageConfig {
    /// How long shipped events are kept, if this node evicts them at all (`upstream` set).
    pub fn shipped_retention(&self, upstream: bool) -> Option<std::time::Duration> {
        (upstream && self.evict_shipped)
            .then(|| std::time::Duration::from_secs_f64(self.keep_shipped_days.max(0.0) * 86_400.0))
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            block_cache_mb: 8,
            write_buffer_mb: 16,
            min_free_disk_mb: 256,
            sync_writes: true,
            keep_shipped_days: 30.0,
            evict_shipped: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeederConfig {
    /// Register the seed relays at start (default: true).
    pub enabled: bool,
    /// Seed list, one relay URL per line, `#` comments (default: the embedded `seed_relays.txt`).
    pub file: Option<PathBuf>,
}

impl Default for SeederConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinderConfig {
    /// Discover relays from archived events (default: true).
    pub enabled: bool,
    /// Seconds between scans (default: 60).
    pub interval_secs: u64,
    /// Events read per atomic step (default: 5,000).
    pub batch: usize,
    /// New relays registered per hour at most (default: 500); the rest are dropped.
    pub max_new_per_hour: usize,
    /// New relays per site (IP, or the last two labels of the name) per hour (default: 20).
    pub max_new_per_site_per_hour: usize,
}

impl Default for FinderConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: 60,
            batch: 5_000,
            max_new_per_hour: 500,
            max_new_per_site_per_hour: 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// Archive events from relays (default: true).
    pub enabled: bool,
    /// Relays synchronized at once; bounds sockets and memory (default: 16).
    pub max_relays: usize,
    /// `limit` asked per page; lowered to a relay's NIP-11 `max_limit` (default: 500).
    pub page_limit: u64,
    /// Longest wait for a page to finish (EOSE) in seconds (default: 30).
    pub page_timeout_secs: u64,
    /// Longest silence on a live subscription before a ping, seconds (default: 60).
    pub idle_timeout_secs: u64,
    /// Seconds a relay keeps its slot on a live subscription when others wait (default: 600).
    pub live_turn_secs: u64,
    /// Pages one relay may fetch per turn before yielding its slot (default: 2,000).
    pub max_pages_per_turn: u64,
    /// Wall time of a turn's backfill before the relay's session slot is released (default:
    /// 600 s); the relay is due again at once.
    pub max_turn_secs: u64,
    /// Reconnect backoff bounds, seconds (default: 5 and 3,600).
    pub backoff_min_secs: u64,
    pub backoff_max_secs: u64,
    /// Subset queries allowed to resolve one saturated second (default: 256).
    pub max_narrowing_queries: usize,
    /// Answer NIP-42 AUTH challenges with the node key (default: true).
    pub auth: bool,
    /// Pages buffered at once across all relays; bounds memory whatever `max_relays` is
    /// (default: 4).
    pub max_pages_in_flight: usize,
    /// Event bytes one page may buffer before the limit is lowered, MiB (default: 8).
    pub max_page_mb: usize,
    /// Each new pass re-checks this many seconds below the last complete point, for events
    /// published late with an older `created_at` (default: 300).
    pub overlap_secs: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_relays: 16,
            page_limit: 500,
            page_timeout_secs: 30,
            idle_timeout_secs: 60,
            live_turn_secs: 600,
            max_pages_per_turn: 2_000,
            max_turn_secs: 600,
            backoff_min_secs: 5,
            backoff_max_secs: 3_600,
            max_narrowing_queries: 256,
            auth: true,
            overlap_secs: 300,
            max_page_mb: 8,
            max_pages_in_flight: 4,
        }
    }
}

/// `[monitor]`: relay health checks (NIP-11, NIP-66), their history, and optional publishing.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Check relay health (default: true).
    pub enabled: bool,
    /// Seconds between cheap open (websocket handshake) checks per relay (default: 300).
    pub open_interval_secs: u64,
    /// Seconds between NIP-11 document fetches per relay (default: 3,600).
    pub nip11_interval_secs: u64,
    /// Seconds between full NIP-66 checks (open, read, write, DNS, TLS) per relay (default: 7,200).
    pub nip66_interval_secs: u64,
    /// Failed opens in a row after which a relay is offline (default: 3).
    pub failure_threshold: u64,
    /// Longest wait between open checks of an offline relay, seconds (default: 86,400).
    pub max_backoff_secs: u64,
    /// Relays checked at once; each holds at most one socket (default: 32).
    pub max_concurrent: usize,
    /// Deadline for one whole check of one relay, seconds (default: 20).
    pub check_timeout_secs: u64,
    /// Publish a signed test event in the NIP-66 write check (default: true).
    pub write_test: bool,
    /// Days of check history kept in SQLite (default: 30). Unshipped observations are kept,
    /// up to `max_unshipped_days`.
    pub history_days: u64,
    /// With `[upstream]`: observations the archive has not taken are kept this many days at
    /// most (default: 90), so an archive unreachable for months cannot fill the disk. Never
    /// below `history_days`.
    pub max_unshipped_days: u64,
    /// Publish kind 30166 per checked relay and a kind 10166 announcement (default: false).
    pub publish: bool,
    /// Relays the 30166/10166 events are sent to.
    pub publish_relays: Vec<String>,
    /// A MaxMind-format City database (e.g. GeoLite2-City.mmdb) for country, city and geohash.
    /// Unset: no geo facts. Never downloaded by the node.
    pub geoip_city_file: Option<PathBuf>,
    /// A MaxMind-format ASN database (e.g. GeoLite2-ASN.mmdb). Unset: no ASN facts.
    pub geoip_asn_file: Option<PathBuf>,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            open_interval_secs: 300,
            nip11_interval_secs: 3_600,
            nip66_interval_secs: 7_200,
            failure_threshold: 3,
            max_backoff_secs: 86_400,
            max_concurrent: 32,
            check_timeout_secs: 20,
            write_test: true,
            history_days: 30,
            max_unshipped_days: 90,
            publish: false,
            publish_relays: Vec::new(),
            geoip_city_file: None,
            geoip_asn_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    /// Record every stored event and sighting for shipping upstream (default: false; the
    /// `[upstream]` section of the archive issue turns it on).
    pub enabled: bool,
    /// Spool entries at which synchronization pauses until the shipper catches up
    /// (default: 20,000,000, about 1 GB).
    pub max_entries: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_entries: 20_000_000,
        }
    }
}

/// `[serve]`: the read side (`bigbrotr serve`, or a service of `bigbrotr run` when enabled): a
/// read-only Nostr relay on one listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Serve inside `bigbrotr run` too (default: false; `bigbrotr serve` always serves).
    pub enabled: bool,
    /// Address and port to listen on (default: 127.0.0.1:7777).
    pub listen: String,
    /// Allow `listen` on an address other than loopback (default: false).
    pub allow_public: bool,
    /// Open connections at once; more wait in the kernel's backlog (default: 512).
    pub max_connections: usize,
    /// Open subscriptions per websocket connection (default: 20).
    pub max_subscriptions: usize,
    /// Filters per REQ or COUNT (default: 10).
    pub max_filters: usize,
    /// Largest `limit` honoured per filter; larger ones are lowered to it (default: 5000).
    pub max_limit: u64,
    /// `limit` of a filter that has none (default: 500).
    pub default_limit: u64,
    /// Values per filter field (ids, authors, kinds, each tag) (default: 1000).
    pub max_filter_values: usize,
    /// Time one query may take before it is stopped with an error, ms (default: 3000).
    pub query_timeout_ms: u64,
    /// Events one NIP-77 reconciliation may cover; a filter matching more is refused with
    /// NEG-ERR (default: 100,000; 40 bytes each while it is open).
    pub max_negentropy_items: usize,
    /// Bytes queued for one connection that its client has not read yet; past this a live
    /// event disconnects it, and a stored answer waits up to `write_timeout_secs` (default:
    /// 1024 KiB).
    pub outbound_buffer_kb: usize,
    /// How long a client may leave a full buffer unread before it is disconnected (default: 30).
    pub write_timeout_secs: u64,
    /// Largest message a client may send, KiB (default: 64).
    pub max_message_kb: usize,
    /// Time a client has to send its request headers (default: 10 s).
    pub header_timeout_secs: u64,
    /// Relay name in the NIP-11 document (default: "BigBrotr archive").
    pub name: String,
    /// Description in the NIP-11 document.
    pub description: String,
    /// Operator contact in the NIP-11 document (default: none).
    pub contact: Option<String>,
    /// Tokens each client address earns per minute; requests spend them (1 for a lookup by id,
    /// 2 for a query, 5 for statistics, 20 for an export). 0 turns rate limits off
    /// (default: 1200).
    pub rate_limit_per_minute: u64,
    /// Tokens a client address can save up: its largest burst (default: 600).
    pub rate_limit_burst: u64,
    /// File of API keys, one per line, that lift the rate limits (`Authorization: Bearer`).
    /// Keys may also come from `BIGBROTR_API_KEYS`; never from config.toml (default: none).
    pub api_keys_file: Option<PathBuf>,
    /// Public keys (hex) whose NIP-98 `Authorization: Nostr` lifts the rate limits
    /// (default: none).
    pub trusted_pubkeys: Vec<String>,
    /// Streaming exports (`/v1/export`) running at once; more are answered 503 (default: 32).
    pub max_exports: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "127.0.0.1:7777".into(),
            allow_public: false,
            max_connections: 512,
            max_subscriptions: 20,
            max_filters: 10,
            max_limit: 5000,
            default_limit: 500,
            max_filter_values: 1000,
            query_timeout_ms: 3000,
            max_negentropy_items: 100_000,
            outbound_buffer_kb: 1024,
            write_timeout_secs: 30,
            max_message_kb: 64,
            header_timeout_secs: 10,
            name: "BigBrotr archive".into(),
            description: "A read-only archive of Nostr events, kept by a BigBrotr node.".into(),
            contact: None,
            rate_limit_per_minute: 1200,
            rate_limit_burst: 600,
            api_keys_file: None,
            trusted_pubkeys: Vec::new(),
            max_exports: 32,
        }
    }
}

impl ServeConfig {
    /// The listen address, refused unless it is loopback or `allow_public` is set.
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, String> {
        let addr: std::net::SocketAddr = self.listen.trim().parse().map_err(|_| {
            format!(
                "{:?} is not an IP:port such as \"127.0.0.1:7777\"",
                self.listen
            )
        })?;
        if !addr.ip().is_loopback() && !self.allow_public {
            return Err(format!(
                "{addr} is not a loopback address: serving beyond this machine must be explicit; set serve.allow_public = true (and see docs/SERVE.md on access), or listen on 127.0.0.1"
            ));
        }
        Ok(addr)
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        self.listen_addr().map_err(|e| ("serve.listen", e))?;
        for (key, v) in [
            ("serve.max_connections", self.max_connections as u64),
            ("serve.max_subscriptions", self.max_subscriptions as u64),
            ("serve.max_filters", self.max_filters as u64),
            ("serve.max_limit", self.max_limit),
            ("serve.max_filter_values", self.max_filter_values as u64),
            ("serve.query_timeout_ms", self.query_timeout_ms),
            (
                "serve.max_negentropy_items",
                self.max_negentropy_items as u64,
            ),
            ("serve.outbound_buffer_kb", self.outbound_buffer_kb as u64),
            ("serve.write_timeout_secs", self.write_timeout_secs),
            ("serve.max_message_kb", self.max_message_kb as u64),
            ("serve.header_timeout_secs", self.header_timeout_secs),
            ("serve.rate_limit_burst", self.rate_limit_burst),
            ("serve.max_exports", self.max_exports as u64),
        ] {
            if v == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        for (i, pk) in self.trusted_pubkeys.iter().enumerate() {
            if crate::protocol::event::decode_hex::<32>(pk).is_none() {
                return Err((
                    "serve.trusted_pubkeys",
                    format!("entry {i} ({pk:?}) is not a public key: give 64 lowercase hex characters (not an npub)"),
                ));
            }
        }
        if self.default_limit > self.max_limit {
            return Err((
                "serve.default_limit",
                "must not exceed serve.max_limit".into(),
            ));
        }
        Ok(())
    }
}

/// `[upstream]`: the central archive this node ships to (through PgBouncer). Shipping is on when
/// `database_url` is set; the password comes only from `BIGBROTR_DB_PASSWORD` or `password_file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `postgres://NAME@HOST:PORT/DB` (no password). Unset: this node keeps everything locally.
    pub database_url: Option<String>,
    /// File holding the password (first line), when `BIGBROTR_DB_PASSWORD` is not set.
    pub password_file: Option<PathBuf>,
    /// Spool entries (events and sightings) per transaction (default 2000).
    pub batch_size: usize,
    /// Event bytes per transaction, whatever the count (default 16 MiB).
    pub batch_max_mb: usize,
    /// Batches in flight at once, each on its own connection (default 2).
    pub connections: usize,
    /// How often an empty spool is looked at again (default 1 s).
    pub poll_secs: u64,
    /// Retry delays while the archive is unreachable: exponential with jitter (1 s .. 60 s).
    pub retry_min_secs: u64,
    pub retry_max_secs: u64,
    /// Limit for connecting and for one batch (default 10 s and 120 s).
    pub connect_timeout_secs: u64,
    pub batch_timeout_secs: u64,
    /// `ship --once` gives up (exit 1) after failing this long without progress (default 60 s).
    pub give_up_secs: u64,
    /// PEM file of CA certificates trusted for TLS to the archive, in addition to the webpki
    /// roots (`sslmode=require` in the URL makes TLS mandatory).
    pub ca_file: Option<PathBuf>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            database_url: None,
            password_file: None,
            batch_size: 2000,
            batch_max_mb: 16,
            connections: 2,
            poll_secs: 1,
            retry_min_secs: 1,
            retry_max_secs: 60,
            connect_timeout_secs: 10,
            batch_timeout_secs: 120,
            give_up_secs: 60,
            ca_file: None,
        }
    }
}

impl UpstreamConfig {
    pub fn enabled(&self) -> bool {
        self.database_url.is_some()
    }
}

/// `[archive]`: the database that `bigbrotr archive ...` administers (an owner or superuser
/// URL). `DATABASE_URL` in the environment takes precedence.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveConfig {
    pub database_url: Option<String>,
}

impl Config {
    /// Load from `path`, or the embedded default when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (text, source) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?,
                Some(p.to_path_buf()),
            ),
            None => (EMBEDDED_DEFAULT.to_string(), None),
        };
        Self::parse(&text, source)
    }

    pub fn parse(text: &str, source: Option<PathBuf>) -> Result<Config, ConfigError> {
        let shown = source
            .clone()
            .unwrap_or_else(|| PathBuf::from("<embedded config.toml>"));
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            message: e.to_string().trim().to_string(),
        })?;
        cfg.source = source;
        cfg.validate(&shown)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &'static str, problem: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            problem: problem.to_string(),
        };
        if self.node.data_dir.as_os_str().is_empty() {
            return Err(bad("node.data_dir", "must not be empty"));
        }
        if !(1..=1024).contains(&self.sync.max_relays) {
            return Err(bad("sync.max_relays", "must be between 1 and 1024"));
        }
        if !(1..=10_000).contains(&self.sync.page_limit) {
            return Err(bad("sync.page_limit", "must be between 1 and 10000"));
        }
        for (key, v) in [
            ("sync.page_timeout_secs", self.sync.page_timeout_secs),
            ("sync.idle_timeout_secs", self.sync.idle_timeout_secs),
            ("sync.live_turn_secs", self.sync.live_turn_secs),
            ("sync.max_pages_per_turn", self.sync.max_pages_per_turn),
            ("sync.max_turn_secs", self.sync.max_turn_secs),
            ("sync.backoff_min_secs", self.sync.backoff_min_secs),
            (
                "network.connect_timeout_secs",
                self.network.connect_timeout_secs,
            ),
            ("finder.interval_secs", self.finder.interval_secs),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        if self.sync.page_timeout_secs > 3600 {
            return Err(bad("sync.page_timeout_secs", "must be at most 3600"));
        }
        if self.sync.backoff_max_secs < self.sync.backoff_min_secs {
            return Err(bad(
                "sync.backoff_max_secs",
                "must be >= sync.backoff_min_secs",
            ));
        }
        if self.network.max_message_bytes < 4096 {
            return Err(bad("network.max_message_bytes", "must be at least 4096"));
        }
        if self.sync.max_pages_in_flight == 0 {
            return Err(bad("sync.max_pages_in_flight", "must be at least 1"));
        }
        if self.sync.max_page_mb == 0 {
            return Err(bad("sync.max_page_mb", "must be at least 1"));
        }
        if self.finder.batch == 0 {
            return Err(bad("finder.batch", "must be at least 1"));
        }
        if !(0.0..=36_500.0).contains(&self.storage.keep_shipped_days) {
            return Err(bad(
                "storage.keep_shipped_days",
                "must be between 0 and 36500 (set storage.evict_shipped = false to keep everything)",
            ));
        }
        if self.storage.write_buffer_mb < 2 {
            return Err(bad("storage.write_buffer_mb", "must be at least 2"));
        }
        if self.log.level.trim().is_empty() {
            return Err(bad("log.level", "must not be empty (e.g. \"info\")"));
        }
        for (key, url) in [
            ("upstream.database_url", &self.upstream.database_url),
            ("archive.database_url", &self.archive.database_url),
        ] {
            if let Some(url) = url {
                let parsed: tokio_postgres::Config = url
                    .parse()
                    .map_err(|e| bad(key, &format!("is not a PostgreSQL URL: {e}")))?;
                let overlay = parsed.get_hosts().iter().any(|h| match h {
                    tokio_postgres::config::Host::Tcp(name) => {
                        let n = name.trim_end_matches('.').to_ascii_lowercase();
                        [".onion", ".i2p", ".loki"].iter().any(|s| n.ends_with(s))
                    }
                    _ => false,
                });
                if overlay {
                    return Err(bad(
                        key,
                        "names an overlay (.onion/.i2p/.loki) host; the database client would resolve it with the system resolver, leaking it. Reach the archive on clearnet or through a local tunnel (e.g. 127.0.0.1:PORT)",
                    ));
                }
                if parsed.get_password().is_some() {
                    return Err(bad(
                        key,
                        "contains a password; remove it and set BIGBROTR_DB_PASSWORD (or upstream.password_file)",
                    ));
                }
            }
        }
        if !(1..=crate::archive::admin::NODE_CONNECTION_LIMIT).contains(&self.upstream.connections)
        {
            return Err(bad(
                "upstream.connections",
                "must be between 1 and 4 (the archive allows each node role 4 connections)",
            ));
        }
        if !(1..=1024).contains(&self.upstream.batch_max_mb) {
            return Err(bad("upstream.batch_max_mb", "must be between 1 and 1024"));
        }
        if !(1..=100_000).contains(&self.upstream.batch_size) {
            return Err(bad("upstream.batch_size", "must be between 1 and 100000"));
        }
        for (key, v) in [
            ("upstream.poll_secs", self.upstream.poll_secs),
            ("upstream.retry_min_secs", self.upstream.retry_min_secs),
            (
                "upstream.connect_timeout_secs",
                self.upstream.connect_timeout_secs,
            ),
            (
                "upstream.batch_timeout_secs",
                self.upstream.batch_timeout_secs,
            ),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        if self.upstream.retry_max_secs < self.upstream.retry_min_secs {
            return Err(bad(
                "upstream.retry_max_secs",
                "must be >= upstream.retry_min_secs",
            ));
        }
        for (key, v) in [
            (
                "monitor.open_interval_secs",
                self.monitor.open_interval_secs,
            ),
            (
                "monitor.nip11_interval_secs",
                self.monitor.nip11_interval_secs,
            ),
            (
                "monitor.nip66_interval_secs",
                self.monitor.nip66_interval_secs,
            ),
            ("monitor.failure_threshold", self.monitor.failure_threshold),
            (
                "monitor.check_timeout_secs",
                self.monitor.check_timeout_secs,
            ),
            ("monitor.history_days", self.monitor.history_days),
            (
                "monitor.max_unshipped_days",
                self.monitor.max_unshipped_days,
            ),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        if self.monitor.check_timeout_secs > 600 {
            return Err(bad("monitor.check_timeout_secs", "must be at most 600"));
        }
        if !(1..=1024).contains(&self.monitor.max_concurrent) {
            return Err(bad("monitor.max_concurrent", "must be between 1 and 1024"));
        }
        if self.monitor.max_backoff_secs < self.monitor.open_interval_secs {
            return Err(bad(
                "monitor.max_backoff_secs",
                "must be >= monitor.open_interval_secs",
            ));
        }
        if self.monitor.publish && self.monitor.publish_relays.is_empty() {
            return Err(bad(
                "monitor.publish_relays",
                "must list at least one relay when monitor.publish = true",
            ));
        }
        for r in &self.monitor.publish_relays {
            if let Err(e) = crate::protocol::url::parse_relay_url(r, &self.network.url_policy()) {
                return Err(bad("monitor.publish_relays", &format!("{r:?}: {e}")));
            }
        }
        for (key, proxy) in [
            ("network.tor_proxy", &self.network.tor_proxy),
            ("network.i2p_proxy", &self.network.i2p_proxy),
            ("network.loki_proxy", &self.network.loki_proxy),
        ] {
            if let Some(p) = proxy {
                if p.trim().parse::<std::net::SocketAddr>().is_err() {
                    return Err(bad(
                        key,
                        &format!("{p:?} is not an IP:port such as \"127.0.0.1:9050\" (a proxy is never looked up by name)"),
                    ));
                }
            }
        }
        if self.tor.enabled == Some(true) && !cfg!(feature = "tor") {
            return Err(bad(
                "tor.enabled",
                "is true, but this bigbrotr was built without Tor (cargo feature `tor`); set tor.enabled = false, or network.tor_proxy to an external tor's SOCKS port",
            ));
        }
        if self.tor.memory_max_mb == 0 {
            return Err(bad("tor.memory_max_mb", "must be at least 1"));
        }
        if !(1..=600).contains(&self.network.overlay_connect_timeout_secs) {
            return Err(bad(
                "network.overlay_connect_timeout_secs",
                "must be between 1 and 600",
            ));
        }
        #[cfg(feature = "tor")]
        if self.tor.builtin(&self.network) {
            if let Err(e) = crate::net::tor::arti_config(self) {
                return Err(bad("tor.arti", e.trim_start_matches("tor.arti: ")));
            }
        }
        for host in &self.network.allow_hosts {
            if host.trim().is_empty() || host.contains('/') {
                return Err(bad(
                    "network.allow_hosts",
                    "entries are bare hosts such as \"127.0.0.1\"",
                ));
            }
        }
        self.serve
            .validate()
            .map_err(|(key, problem)| bad(key, &problem))?;
        Ok(())
    }

    /// Directory that relative paths in the file are resolved against.
    fn base_dir(&self) -> PathBuf {
        self.source
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir().join(p)
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.resolve(&self.node.data_dir)
    }

    pub fn key_file(&self) -> PathBuf {
        match &self.node.key_file {
            Some(p) => self.resolve(p),
            None => self.data_dir().join("node.key"),
        }
    }

    pub fn seed_file(&self) -> Option<PathBuf> {
        self.seeder.file.as_deref().map(|p| self.resolve(p))
    }

    pub fn upstream_password_file(&self) -> Option<PathBuf> {
        self.upstream
            .password_file
            .as_deref()
            .map(|p| self.resolve(p))
    }

    /// `monitor.geoip_city_file` and `monitor.geoip_asn_file`, resolved like every path here.
    pub fn geoip_files(&self) -> (Option<PathBuf>, Option<PathBuf>) {
        let m = &self.monitor;
        (
            m.geoip_city_file.as_deref().map(|p| self.resolve(p)),
            m.geoip_asn_file.as_deref().map(|p| self.resolve(p)),
        )
    }

    /// `serve.api_keys_file`, resolved like every path here.
    pub fn serve_api_keys_file(&self) -> Option<PathBuf> {
        self.serve.api_keys_file.as_deref().map(|p| self.resolve(p))
    }

    pub fn upstream_ca_file(&self) -> Option<PathBuf> {
        self.upstream.ca_file.as_deref().map(|p| self.resolve(p))
    }

    /// The spool is written when shipping is configured, or when asked for explicitly.
    pub fn spool_enabled(&self) -> bool {
        self.spool.enabled || self.upstream.enabled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let cfg = Config::load(None).unwrap();
        assert!(!cfg.network.allow_local);
        assert_eq!(cfg.node.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn two_key_file_works() {
        let cfg = Config::parse(
            "[node]\ndata_dir = \"/tmp/x\"\n[network]\nallow_local = true\n",
            Some(PathBuf::from("/etc/b/config.toml")),
        )
        .unwrap();
        assert!(cfg.network.allow_local);
        assert_eq!(cfg.sync.page_limit, 500);
        assert_eq!(cfg.data_dir(), PathBuf::from("/tmp/x"));
        assert_eq!(cfg.key_file(), PathBuf::from("/tmp/x/node.key"));
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let cfg = Config::parse("", Some(PathBuf::from("/etc/b/config.toml"))).unwrap();
        assert_eq!(cfg.data_dir(), PathBuf::from("/etc/b/./data"));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[sync]\npage_limt = 5\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("page_limt"), "{err}");
        let err = Config::parse("[nodes]\n", None).unwrap_err().to_string();
        assert!(err.contains("nodes"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::parse("[sync]\nmax_relays = 0\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sync.max_relays"), "{err}");
        let err = Config::parse("[sync]\npage_limit = \"x\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("page_limit"), "{err}");
        let err = Config::parse("[log]\nformat = \"xml\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("xml") || err.contains("format"), "{err}");
    }

    #[test]
    fn overlay_archive_hosts_are_refused() {
        let e = Config::parse(
            "[upstream]\ndatabase_url = \"postgres://n@abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuvwx.onion:5432/b\"\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("upstream.database_url") && e.contains("overlay"),
            "{e}"
        );
    }

    #[test]
    fn upstream_password_in_config_is_refused() {
        let err = Config::parse(
            "[upstream]\ndatabase_url = \"postgres://n1:secret@h:6432/db\"\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("upstream.database_url"), "{err}");
        assert!(err.contains("BIGBROTR_DB_PASSWORD"), "{err}");
        assert!(!err.contains("secret"), "the password is not echoed: {err}");
        let cfg = Config::parse(
            "[upstream]\ndatabase_url = \"postgres://n1@h:6432/db\"\n",
            None,
        )
        .unwrap();
        assert!(cfg.upstream.enabled() && cfg.spool_enabled());
        assert!(!Config::load(None).unwrap().spool_enabled());
        let err = Config::parse("[archive]\ndatabase_url = \"http://x\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("archive.database_url"), "{err}");
    }
}
