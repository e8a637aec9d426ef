//! What `bigbrotr status --json` prints and `GET /v1/status` serves: the node at a glance,
//! read from its stores (exact counters in RocksDB, service state in SQLite).

use crate::config::Config;
use crate::store::{StateError, StoreError, Stores};

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The node's status as JSON (see docs/CLI.md, `status`). Blocking.
pub fn node_status(
    cfg: &Config,
    stores: &Stores,
    now: u64,
) -> Result<serde_json::Value, StatusError> {
    let counters = stores.events.counters();
    let health = stores.state.health(now as i64 - 7 * 86_400)?;
    let count = |s: &str| health.iter().filter(|h| h.status == s).count();
    let (online, offline) = (count("online"), count("offline"));
    let monitor: serde_json::Value = stores
        .state
        .get_state("monitor", "stats")?
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null);
    let (observations, _) = stores.state.observation_count()?;
    let progress = stores.state.progress()?;
    let mut services = serde_json::Map::new();
    for name in ["finder", "synchronizer", "monitor", "shipper"] {
        if let Some(h) = stores.state.get_state(name, "health")? {
            services.insert(
                name.into(),
                serde_json::from_str(&h).unwrap_or(serde_json::Value::Null),
            );
        }
    }
    let sync_stats: serde_json::Value = stores
        .state
        .get_state("synchronizer", "stats")?
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null);
    let ship: Option<crate::services::shipper::ShipStats> = stores
        .state
        .get_state("shipper", "stats")?
        .and_then(|s| serde_json::from_str(&s).ok());
    let tor = tor_summary(cfg, stores)?;
    let oldest = stores.events.spool_oldest_seen_at()?;
    let lag = oldest.map(|t| now.saturating_sub(t));
    let v = serde_json::json!({
        "data_dir": cfg.data_dir(),
        "upstream": cfg.upstream.enabled(),
        "ship_lag_secs": lag,
        "ship_rejected": counters.ship_rejected,
        "ship": ship,
        "relays_known": health.len(),
        "relays_online": online,
        "relays_offline": offline,
        "observations": observations,
        "monitor": monitor,
        "events_stored": counters.events,
        "events_evicted": counters.evicted,
        "sightings": counters.sightings,
        "spool_depth": counters.spool_depth,
        "quarantined": counters.quarantined,
        "services": services,
        "sync_stats": sync_stats,
        "tor": tor,
        "relays": progress,
    });
    Ok(v)
}

fn tor_summary(cfg: &Config, stores: &Stores) -> Result<serde_json::Value, StatusError> {
    let route = if cfg.network.tor_proxy.is_some() {
        "proxy"
    } else if cfg.tor.builtin(&cfg.network) {
        "builtin"
    } else {
        "none"
    };
    let status: serde_json::Value = stores
        .state
        .get_state("tor", "status")?
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null);
    Ok(serde_json::json!({
        "route": route,
        "proxy": cfg.network.tor_proxy,
        "status": if route == "builtin" { status } else { serde_json::Value::Null },
    }))
}
