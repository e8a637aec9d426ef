//! The service supervisor (the seed's Service wrapper).
//!
//! Every service runs under [`Supervisor::spawn`]: started, restarted with exponential backoff
//! (1 s doubling to 60 s) when it fails or panics, stopped gracefully on shutdown (services check
//! the shutdown signal between units of work, so a write batch in flight completes). Health is
//! written to SQLite `service_state` (`<service>`/`health`, JSON) on every transition, so
//! `bigbrotr status` in another process shows it.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;

use crate::shutdown::Shutdown;
use crate::store::Stores;

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub state: &'static str,
    pub restarts: u64,
    pub last_error: Option<String>,
    pub since: u64,
}

pub struct Supervisor {
    stores: Stores,
    shutdown: Shutdown,
    tasks: JoinSet<()>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Supervisor {
    pub fn new(stores: Stores, shutdown: Shutdown) -> Self {
        Self {
            stores,
            shutdown,
            tasks: JoinSet::new(),
        }
    }

    /// Run `make()` until it returns Ok or shutdown; restart it after failures.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, make: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let stores = self.stores.clone();
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            let mut restarts = 0u64;
            let mut backoff = Duration::from_secs(1);
            loop {
                report(&stores, name, "running", restarts, None);
                tracing::info!(service = name, restarts, "service started");
                let started = tokio::time::Instant::now();
                let result = tokio::spawn(make()).await;
                let error = match result {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("{e:#}")),
                    Err(e) => Some(format!("panicked: {e}")),
                };
                if shutdown.is_triggered() || error.is_none() {
                    report(&stores, name, "stopped", restarts, error.as_deref());
                    tracing::info!(service = name, "service stopped");
                    return;
                }
                let error = error.unwrap_or_default();
                if started.elapsed() > Duration::from_secs(300) {
                    backoff = Duration::from_secs(1);
                }
                restarts += 1;
                report(&stores, name, "restarting", restarts, Some(&error));
                tracing::error!(service = name, error = %error, retry_in_secs = backoff.as_secs(), "service failed");
                if shutdown.sleep(backoff).await {
                    report(&stores, name, "stopped", restarts, Some(&error));
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        });
    }

    /// Wait for every service to stop (after shutdown was triggered).
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

fn report(stores: &Stores, name: &str, state: &'static str, restarts: u64, error: Option<&str>) {
    let h = Health {
        state,
        restarts,
        last_error: error.map(str::to_owned),
        since: now(),
    };
    let json = serde_json::to_string(&h).unwrap_or_default();
    if let Err(e) = stores.state.set_state(name, "health", &json) {
        tracing::warn!(service = name, error = %e, "cannot record service health");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    fn setup() -> (tempfile::TempDir, Stores, Shutdown, Supervisor) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("[node]\ndata_dir = \"{}\"\n", dir.path().display());
        let stores = Stores::open(&Config::parse(&text, None).unwrap()).unwrap();
        let shutdown = Shutdown::new();
        let sup = Supervisor::new(stores.clone(), shutdown.clone());
        (dir, stores, shutdown, sup)
    }

    #[tokio::test(start_paused = true)]
    async fn failed_service_is_restarted_with_backoff_and_health_recorded() {
        let (_dir, stores, _shutdown, mut sup) = setup();
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        sup.spawn("flaky", move || {
            let c = c.clone();
            async move {
                if c.fetch_add(1, Ordering::SeqCst) < 2 {
                    anyhow::bail!("boom");
                }
                Ok(())
            }
        });
        sup.join().await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let h: serde_json::Value =
            serde_json::from_str(&stores.state.get_state("flaky", "health").unwrap().unwrap())
                .unwrap();
        assert_eq!(h["state"], "stopped");
        assert_eq!(h["restarts"], 2);
        assert_eq!(h["last_error"], serde_json::Value::Null);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_a_failing_service_instead_of_restarting() {
        let (_dir, stores, shutdown, mut sup) = setup();
        sup.spawn("doomed", || async { anyhow::bail!("always") });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        shutdown.trigger();
        sup.join().await;
        let h: serde_json::Value =
            serde_json::from_str(&stores.state.get_state("doomed", "health").unwrap().unwrap())
                .unwrap();
        assert_eq!(h["state"], "stopped");
        assert!(h["restarts"].as_u64().unwrap() >= 1);
        assert_eq!(h["last_error"], "always");
    }
}
