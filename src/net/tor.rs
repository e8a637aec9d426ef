//! Built-in Tor (arti) for `.onion` relays: one Tor client per process, created without touching
//! the network and bootstrapped in the background, so clearnet work never waits for it.
//!
//! - State and directory cache live in `<data_dir>/tor/{state,cache}`: a restart reuses the
//!   cached consensus instead of downloading it again.
//! - Memory for queued Tor traffic is capped by `tor.memory_max_mb` (arti's default is derived
//!   from the machine's RAM, gigabytes on a server).
//! - `bigbrotr run` starts the bootstrap at once and never waits for it: an onion relay dialed
//!   before Tor is ready gets [`TorNotReady`] and is tried again later (so do the standalone
//!   `monitor` service and `sync --relay URL` without `--once`). One-shot commands
//!   (`sync --relay URL --once`, `monitor --relay URL --once`) start it on their first onion
//!   dial and wait for it once, up to `network.overlay_connect_timeout_secs`.
//! - Progress is polled once a second, logged when it changes, and kept in [`TorStatus`] for
//!   `bigbrotr status`.
//!
//! Only onion addresses are ever handed to Tor: clearnet relays are dialed directly.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arti_client::config::TorClientConfigBuilder;
use arti_client::{BootstrapBehavior, TorClient, TorClientConfig};
use tor_rtcompat::PreferredRuntime;

use crate::config::Config;

/// What `bigbrotr status` shows about the built-in Tor client.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct TorStatus {
    /// `starting` (created, bootstrap not begun), `bootstrapping`, `ready`, `stuck`, or `failed`
    /// (the client could not be created; the error says why).
    pub state: String,
    /// Bootstrap progress, 0-100.
    pub percent: u32,
    /// arti's own one-line summary, e.g. "Stuck at 0%: We seem to be offline (...)".
    pub summary: String,
    /// Unix time of this reading.
    pub at: u64,
}

/// An onion relay was dialed before the built-in Tor finished bootstrapping.
#[derive(Debug, thiserror::Error)]
#[error("built-in Tor is not ready yet ({0}); onion relays are tried again once it is")]
pub struct TorNotReady(pub String);

#[derive(Debug, thiserror::Error)]
pub enum TorError {
    #[error(transparent)]
    NotReady(#[from] TorNotReady),
    #[error("built-in Tor could not be started: {0}")]
    Unavailable(String),
    #[error("through Tor: {0}")]
    Connect(String),
}

/// The process's built-in Tor client.
pub struct BuiltinTor {
    /// The arti configuration (checked when the node's config was loaded).
    config: Result<TorClientConfig, String>,
    dirs: (PathBuf, PathBuf),
    /// Created on first use: a command that never dials an onion relay never starts arti.
    client: OnceLock<Result<Arc<TorClient<PreferredRuntime>>, String>>,
    /// `run`: bootstrap at start, never wait in a dial. One-shot commands: wait in the dial.
    wait_in_dial: bool,
    bootstrap_started: std::sync::atomic::AtomicBool,
    /// A dial already waited its whole timeout for the bootstrap: later dials of this process
    /// (the NIP-11 fetch, then the websocket of the same relay) do not wait again.
    waited_out: std::sync::atomic::AtomicBool,
    status: Mutex<TorStatus>,
}

impl std::fmt::Debug for BuiltinTor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinTor")
            .field("status", &self.status())
            .finish()
    }
}

static SHARED: OnceLock<Arc<BuiltinTor>> = OnceLock::new();

/// The process's Tor client, created on first use (inside the tokio runtime; no network I/O).
/// `None` when the configuration does not use the built-in Tor.
pub fn shared(cfg: &Config, wait_in_dial: bool) -> Option<Arc<BuiltinTor>> {
    if !cfg.tor.builtin(&cfg.network) {
        return None;
    }
    Some(
        SHARED
            .get_or_init(|| Arc::new(BuiltinTor::create(cfg, wait_in_dial)))
            .clone(),
    )
}

/// The arti configuration for this node: state and cache in the data dir, the memory cap, and
/// the operator's `[tor.arti]` overrides (e.g. a private network's fallback directories).
pub fn arti_config(cfg: &Config) -> Result<TorClientConfig, String> {
    let mut b: TorClientConfigBuilder = match &cfg.tor.arti {
        Some(t) => {
            // arti's builders skip unknown keys; a typo would silently mean the default (say,
            // the real network's fallbacks instead of a private network's), so refuse it.
            let mut unknown = Vec::new();
            let b = serde_ignored::deserialize(toml::Value::Table(t.clone()), |path| {
                unknown.push(format!("tor.arti.{path}"))
            })
            .map_err(|e| format!("tor.arti: {e}"))?;
            if !unknown.is_empty() {
                return Err(format!(
                    "tor.arti: unknown key(s) {} (see arti's arti.toml reference)",
                    unknown.join(", ")
                ));
            }
            b
        }
        None => TorClientConfigBuilder::default(),
    };
    let (state, cache) = dirs(cfg);
    b.storage()
        .state_dir(arti_client::config::CfgPath::new_literal(state))
        .cache_dir(arti_client::config::CfgPath::new_literal(cache));
    let max = (cfg.tor.memory_max_mb as usize).saturating_mul(1024 * 1024);
    b.system().memory().max(max).low_water(max / 4 * 3);
    b.build().map_err(|e| format!("tor.arti: {e}"))
}

/// `<data_dir>/tor/state` and `<data_dir>/tor/cache`.
pub fn dirs(cfg: &Config) -> (PathBuf, PathBuf) {
    let base = cfg.data_dir().join("tor");
    (base.join("state"), base.join("cache"))
}

impl BuiltinTor {
    fn create(cfg: &Config, wait_in_dial: bool) -> BuiltinTor {
        BuiltinTor {
            config: arti_config(cfg),
            dirs: dirs(cfg),
            client: OnceLock::new(),
            wait_in_dial,
            bootstrap_started: Default::default(),
            waited_out: Default::default(),
            status: Mutex::new(TorStatus {
                state: "starting".into(),
                summary: "not bootstrapping yet".into(),
                at: now(),
                ..Default::default()
            }),
        }
    }

    /// Create the arti client now (no network I/O) if it was not yet; inside the tokio runtime.
    pub fn create_client(&self) {
        let _ = self.client();
    }

    /// The client could not be created (see the status): onion relays have no route.
    pub fn failed(&self) -> bool {
        matches!(self.client.get(), Some(Err(_)))
    }

    /// The arti client, created (without network I/O) on first call; must run inside the tokio
    /// runtime.
    fn client(&self) -> Result<&Arc<TorClient<PreferredRuntime>>, String> {
        self.client
            .get_or_init(|| {
                let made = self.make_client();
                if let Err(e) = &made {
                    tracing::warn!(error = %e, "built-in Tor could not be started; onion relays are skipped (set network.tor_proxy to use an external tor)");
                    *self.status.lock().unwrap_or_else(|p| p.into_inner()) = TorStatus {
                        state: "failed".into(),
                        summary: e.clone(),
                        at: now(),
                        ..Default::default()
                    };
                }
                made
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn make_client(&self) -> Result<Arc<TorClient<PreferredRuntime>>, String> {
        let config = self.config.clone()?;
        {
            // arti refuses directories others can write to; create ours private.
            let (state, cache) = &self.dirs;
            for d in [state, cache] {
                std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700));
                    if let Some(p) = d.parent() {
                        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
                    }
                }
            }
        }
        TorClient::builder()
            .config(config)
            .bootstrap_behavior(BootstrapBehavior::Manual)
            .create_unbootstrapped()
            .map_err(|e| chain(&e))
    }

    /// The latest status reading.
    pub fn status(&self) -> TorStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Start bootstrapping in the background (once; later calls do nothing). Never blocks.
    pub fn start_bootstrap(self: &Arc<Self>) {
        let Ok(client) = self.client() else { return };
        if self
            .bootstrap_started
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        tracing::info!("built-in Tor: bootstrapping in the background");
        let c = client.clone();
        tokio::spawn(async move {
            // Offline, arti retries forever inside this call; that is what we want.
            if let Err(e) = c.bootstrap().await {
                tracing::warn!(error = %e, "built-in Tor: bootstrap failed");
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            // Logged when the state or the tens digit of the percent changes; offline, arti's
            // reading flips between "stuck" and "bootstrapping" on every retry, so at most once
            // a minute unless it became ready.
            let mut last = (String::new(), u32::MAX);
            let mut logged_at: Option<tokio::time::Instant> = None;
            loop {
                let reading = me.read();
                let key = (reading.state.clone(), reading.percent / 10);
                let quiet = logged_at.is_some_and(|t| t.elapsed() < Duration::from_secs(60));
                if key != last && (!quiet || reading.state == "ready") {
                    logged_at = Some(tokio::time::Instant::now());
                    if reading.state == "stuck" {
                        tracing::warn!(
                            percent = reading.percent,
                            "built-in Tor: {}",
                            reading.summary
                        );
                    } else {
                        tracing::info!(percent = reading.percent, state = %reading.state, "built-in Tor: {}", reading.summary);
                    }
                    last = key;
                }
                *me.status.lock().unwrap_or_else(|p| p.into_inner()) = reading;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    fn read(&self) -> TorStatus {
        let Some(Ok(client)) = self.client.get() else {
            return self.status();
        };
        let s = client.bootstrap_status();
        let percent = (s.as_frac() * 100.0).round().clamp(0.0, 100.0) as u32;
        let state = match s.blocked() {
            _ if s.ready_for_traffic() => "ready",
            // "Waiting to be told to bootstrap": the instant before the bootstrap task runs.
            Some(b) if matches!(b.kind(), arti_client::status::BlockageKind::Disabled) => {
                "bootstrapping"
            }
            Some(_) => "stuck",
            None => "bootstrapping",
        };
        TorStatus {
            state: state.into(),
            percent,
            summary: s.to_string(),
            at: now(),
        }
    }

    /// For a process that does not wait in dials (`run`): `Some(status)` while Tor is not ready
    /// (and the bootstrap is started if it was not). `None`: dial away.
    pub fn not_ready_for_dial(self: &Arc<Self>) -> Option<String> {
        if self.wait_in_dial || self.ready() {
            return None;
        }
        self.start_bootstrap();
        Some(TorNotReady(self.read().to_string()).to_string())
    }

    fn ready(&self) -> bool {
        matches!(self.client.get(), Some(Ok(c)) if c.bootstrap_status().ready_for_traffic())
    }

    /// A stream to `host:port` (an onion address) through Tor, within `timeout`.
    pub async fn connect(
        self: &Arc<Self>,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<arti_client::DataStream, TorError> {
        let client = self.client().map_err(TorError::Unavailable)?;
        self.start_bootstrap();
        let deadline = tokio::time::Instant::now() + timeout;
        if !self.ready() {
            use std::sync::atomic::Ordering::SeqCst;
            if !self.wait_in_dial || self.waited_out.load(SeqCst) {
                return Err(TorNotReady(self.read().to_string()).into());
            }
            while !self.ready() {
                if tokio::time::Instant::now() >= deadline {
                    self.waited_out.store(true, SeqCst);
                    return Err(TorNotReady(self.read().to_string()).into());
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        match tokio::time::timeout_at(deadline, client.connect((host, port))).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(TorError::Connect(chain(&e))),
            Err(_) => Err(TorError::Connect(format!(
                "no connection within {timeout:?} (raise network.overlay_connect_timeout_secs)"
            ))),
        }
    }
}

impl std::fmt::Display for TorStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}%: {}", self.state, self.percent, self.summary)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An error and its causes on one line (arti's errors nest the useful part).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        next = s.source();
    }
    out
}
