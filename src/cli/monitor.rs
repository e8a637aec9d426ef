//! `bigbrotr monitor`, `bigbrotr relays list` and `bigbrotr relays show`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{dialer, now_secs, runtime, watch_signals};
use crate::config::Config;
use crate::protocol::url::parse_relay_url;
use crate::services::monitor::publish::Publisher;
use crate::services::monitor::{self, MonitorContext, RelayReport};
use crate::shutdown::Shutdown;
use crate::store::health::DueRelay;
use crate::store::{State, Stores};
use crate::timefmt::{date, datetime};

/// The monitor's context, with a publisher when `monitor.publish` is on. Call inside the
/// runtime; await the handle after dropping the context to flush what was queued.
pub(super) fn context(
    cfg: &Config,
    state: Arc<State>,
    shutdown: Shutdown,
) -> Result<(MonitorContext, Option<tokio::task::JoinHandle<()>>)> {
    let (keys, _) = crate::keys::load_or_create(&cfg.key_file())?;
    let (city, asn) = cfg.geoip_files();
    let geo = crate::services::monitor::geo::GeoDb::open(city.as_deref(), asn.as_deref())
        .map_err(anyhow::Error::msg)?;
    let (publisher, handle) = if cfg.monitor.publish {
        let policy = cfg.network.url_policy();
        let targets = cfg
            .monitor
            .publish_relays
            .iter()
            .map(|r| parse_relay_url(r, &policy))
            .collect::<Result<Vec<_>, _>>()?;
        let (p, h) = Publisher::start(
            dialer(cfg),
            targets,
            cfg.network.max_message_bytes,
            Duration::from_secs(cfg.monitor.check_timeout_secs),
        );
        (Some(p), Some(h))
    } else {
        (None, None)
    };
    Ok((
        MonitorContext {
            state,
            dialer: dialer(cfg),
            keys,
            cfg: cfg.monitor.clone(),
            max_message_bytes: cfg.network.max_message_bytes,
            shutdown,
            publisher,
            upstream: cfg.upstream.enabled(),
            geo,
            data_dir: cfg.data_dir(),
            min_free_disk_mb: cfg.storage.min_free_disk_mb,
        },
        handle,
    ))
}

pub(super) fn cmd_monitor(
    cfg: Config,
    relay: Option<&str>,
    once: bool,
    json: bool,
) -> Result<ExitCode> {
    let state = Stores::open_state(&cfg)?;
    // Every check is written to state.sqlite.
    Stores::check_free_disk(&cfg)?;
    let one = match relay {
        Some(r) => {
            let url = parse_relay_url(r, &cfg.network.url_policy()).with_context(|| {
                format!(
                    "cannot check {r:?} (set [network] allow_local = true for loopback/private relays)"
                )
            })?;
            let (id, _) = state.add_relay(&url, "cli")?;
            Some((id, url))
        }
        None => None,
    };
    let rt = runtime()?;
    rt.block_on(async move {
        let shutdown = Shutdown::new();
        watch_signals(shutdown.clone());
        // Checking one named relay once waits for the built-in Tor (the user asked for that
        // relay); a sweep or the service does not.
        #[cfg(feature = "tor")]
        crate::net::tor::shared(&cfg, once && one.is_some());
        let (ctx, publishing) = context(&cfg, state, shutdown)?;
        let ctx = Arc::new(ctx);
        if let (true, Some(p)) = (once, &ctx.publisher) {
            // `run` announces itself on start; a one-off sweep does it here.
            match monitor::publish::announcement_event(&ctx.keys, &ctx.cfg, ctx.geo.is_configured())
            {
                Ok(ev) => p.send(ev),
                Err(e) => tracing::warn!(error = %e, "cannot sign kind 10166"),
            }
        }
        if !once {
            tracing::info!(
                max_concurrent = cfg.monitor.max_concurrent,
                "monitor running; SIGINT/SIGTERM stops it"
            );
            monitor::run(ctx.clone()).await?;
            finish(ctx, publishing).await;
            return Ok(ExitCode::SUCCESS);
        }
        let reports = match &one {
            Some((id, url)) => {
                let due = DueRelay {
                    id: *id,
                    url: url.to_string(),
                    status: String::new(),
                    open_due: true,
                    nip11_due: true,
                    nip66_due: true,
                };
                vec![monitor::check_relay(&ctx, &due, true).await]
            }
            None => monitor::sweep(ctx.clone()).await.1,
        };
        finish(ctx, publishing).await;
        print_reports(&reports, one.is_some(), json)?;
        // A relay that could not be opened is a failed check (policy answers are facts).
        let opened = |r: &RelayReport| r.rtt.as_ref().is_some_and(|t| t.open_ms.is_some());
        Ok(if one.is_none() || reports.iter().all(opened) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

/// Drop the context (closing the publishing queue) and wait until everything queued was sent.
async fn finish(ctx: Arc<MonitorContext>, publishing: Option<tokio::task::JoinHandle<()>>) {
    let stats = ctx.publisher.as_ref().map(|p| p.stats.clone());
    drop(ctx);
    if let Some(h) = publishing {
        let _ = h.await;
    }
    if let Some(s) = stats {
        use std::sync::atomic::Ordering::Relaxed;
        tracing::info!(
            accepted = s.accepted.load(Relaxed),
            refused = s.refused.load(Relaxed),
            failed = s.failed.load(Relaxed),
            dropped = s.dropped.load(Relaxed),
            "published NIP-66 events"
        );
    }
}

fn print_reports(reports: &[RelayReport], one: bool, json: bool) -> Result<()> {
    if json {
        let v = if one {
            serde_json::to_value(&reports[0])?
        } else {
            serde_json::to_value(reports)?
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let show = |v: Option<u64>| v.map_or("-".to_string(), |m| format!("{m} ms"));
    if !one {
        let online = reports.iter().filter(|r| r.status == "online").count();
        println!("{} relays checked, {} online", reports.len(), online);
        for r in reports {
            let rtt = r.rtt.clone().unwrap_or_default();
            println!(
                "{:<50} {:<8} open {:>8} read {:>8} write {:>8}",
                r.url,
                r.status,
                show(rtt.open_ms),
                show(rtt.read_ms),
                show(rtt.write_ms)
            );
        }
        return Ok(());
    }
    let r = &reports[0];
    println!("relay:        {}", r.url);
    println!("status:       {}", r.status);
    if let Some(e) = &r.error {
        println!("error:        {}", term(e));
    }
    match (&r.nip11, &r.nip11_error) {
        (Some(doc), _) => println!("nip11:        {}", term(doc)),
        (None, Some(e)) => println!("nip11:        failed: {}", term(e)),
        _ => {}
    }
    if let Some(rtt) = &r.rtt {
        println!(
            "rtt:          open {}, read {}, write {}",
            show(rtt.open_ms),
            show(rtt.read_ms),
            show(rtt.write_ms)
        );
        if let Some(p) = &rtt.read_policy {
            println!("read policy:  {}", term(p));
        }
        if let Some(p) = &rtt.write_policy {
            println!("write policy: {}", term(p));
        }
        if let Some(b) = rtt.write_read_back {
            println!("read back:    {}", if b { "yes" } else { "no" });
        }
        for e in &rtt.errors {
            println!("error:        {}", term(e));
        }
    }
    if let Some(f) = &r.facts {
        println!("network:      {}", f.network);
        if let Some(d) = &f.dns {
            println!(
                "dns:          {}{}",
                d.addresses.join(", "),
                d.error
                    .as_ref()
                    .map(|e| format!(" (failed: {e})"))
                    .unwrap_or_default()
            );
        }
        if let Some(g) = &f.geo {
            println!(
                "geo:          {} {} {} (geohash {}), AS{} {}",
                g.address,
                g.country.as_deref().unwrap_or("-"),
                g.city.as_deref().unwrap_or("-"),
                g.geohash.as_deref().unwrap_or("-"),
                g.asn.map_or("-".into(), |a| a.to_string()),
                g.as_org.as_deref().unwrap_or("")
            );
        }
        if let Some(t) = &f.tls {
            println!(
                "tls:          {} issuer {:?}, names {:?}, expires {}{}",
                if t.verified { "valid," } else { "NOT valid," },
                t.issuer.as_deref().unwrap_or("-"),
                t.names,
                t.not_after.map_or("-".into(), |s| date(s / 86_400)),
                t.verify_error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

pub(super) fn cmd_relays_list(cfg: &Config, json: bool) -> Result<ExitCode> {
    let since = now_secs() as i64 - 7 * 86_400;
    let rows = Stores::open_state(cfg)?.health(since)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<45} {:<9} {:<8} {:>10} {:>6} {:>6} {:>6} {:>7}  software",
        "url", "network", "status", "checked", "open", "read", "write", "up 7d"
    );
    let ms = |v: Option<i64>| v.map_or("-".to_string(), |m| m.to_string());
    for r in rows {
        println!(
            "{:<45} {:<9} {:<8} {:>10} {:>6} {:>6} {:>6} {:>7}  {}",
            r.url,
            r.network,
            r.status,
            r.checked_at.map_or("never".into(), ago),
            ms(r.open_ms),
            ms(r.read_ms),
            ms(r.write_ms),
            r.uptime_7d
                .map_or("-".into(), |u| format!("{:.1}%", u * 100.0)),
            [
                term(r.software.unwrap_or_default()),
                term(r.version.unwrap_or_default())
            ]
            .join(" ")
            .trim()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn cmd_relays_show(cfg: &Config, url: &str, days: u32, json: bool) -> Result<ExitCode> {
    let state = Stores::open_state(cfg)?;
    let norm = parse_relay_url(url, &cfg.network.url_policy())
        .map(|u| u.to_string())
        .unwrap_or_else(|_| url.to_string());
    let Some((id, h)) = state.health_of(&norm)? else {
        anyhow::bail!("{norm} is not registered (add it with `bigbrotr relays add {norm}`)");
    };
    let now = now_secs() as i64;
    let since = now - i64::from(days) * 86_400;
    let doc = |id: &Option<String>| -> Result<serde_json::Value> {
        Ok(match id {
            Some(id) => state
                .document(id)?
                .and_then(|d| serde_json::from_str(&d).ok())
                .unwrap_or(serde_json::Value::Null),
            None => serde_json::Value::Null,
        })
    };
    let nip11 = doc(&h.nip11_id)?;
    let nip66 = doc(&h.nip66_id)?;
    let daily = state.daily_uptime(id, since - since.rem_euclid(86_400))?;
    let history = state.history(id, since, i64::MAX, 50)?;
    if json {
        let v = state.relay_detail(&norm, days, now)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("relay:       {} ({})", h.url, h.network);
    println!(
        "status:      {} ({} failed opens in a row), last check {}, last online {}",
        h.status,
        h.failures,
        h.checked_at.map_or("never".into(), ago),
        h.last_online_at.map_or("never".into(), ago)
    );
    if let Some(e) = &h.last_error {
        println!("last error:  {}", term(e));
    }
    println!(
        "rtt:         open {} ms, read {} ms, write {} ms{}{}",
        h.open_ms.map_or("-".into(), |v| v.to_string()),
        h.read_ms.map_or("-".into(), |v| v.to_string()),
        h.write_ms.map_or("-".into(), |v| v.to_string()),
        h.read_policy
            .as_ref()
            .map(|p| format!(", read policy {}", term(p)))
            .unwrap_or_default(),
        h.write_policy
            .as_ref()
            .map(|p| format!(", write policy {}", term(p)))
            .unwrap_or_default(),
    );
    match (&h.nip11_at, &h.nip11_error) {
        (Some(at), _) => println!(
            "nip11:       fetched {}: {}",
            ago(*at),
            term(serde_json::to_string(&nip11)?)
        ),
        (None, Some(e)) => println!("nip11:       failed: {}", term(e)),
        _ => println!("nip11:       never fetched"),
    }
    if let Some(at) = h.nip66_at {
        println!(
            "nip66:       {}: {}",
            ago(at),
            term(serde_json::to_string(&nip66)?)
        );
    }
    println!("uptime by day (UTC), last {days} days:");
    for d in &daily {
        println!(
            "  {} {}  {:>6} up  ({:.1} h watched; {} of {} checks opened)",
            date(d.day),
            weekday(d.day),
            d.uptime()
                .map_or("-".to_string(), |u| format!("{:.1}%", u * 100.0)),
            (d.up_secs + d.down_secs) as f64 / 3600.0,
            d.online,
            d.checks
        );
    }
    println!("recent checks:");
    for o in history.iter().take(20) {
        println!(
            "  {} {:<6} {:<4} {}",
            datetime(o.checked_at),
            o.kind,
            if o.ok { "ok" } else { "FAIL" },
            o.rtt_open.map_or(String::new(), |v| format!("open {v} ms"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn ago(t: i64) -> String {
    crate::timefmt::ago(now_secs() as i64, t)
}

fn weekday(day: i64) -> &'static str {
    ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][day.rem_euclid(7) as usize]
}

/// Relay-controlled text (errors quoting relays, NIP-11 and NIP-66 documents, policy answers)
/// as printed on a terminal: control characters escaped, capped (`--json` prints it whole).
fn term(s: impl std::fmt::Display) -> String {
    crate::protocol::text::inert(&s.to_string(), 4_000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_and_weekdays() {
        assert_eq!(super::date(0), "1970-01-01");
        assert_eq!(super::weekday(0), "Thu");
        // 2026-11-24 was a Tuesday.
        let d = 20_781;
        assert_eq!(super::date(d), "2026-11-24");
        assert_eq!(super::weekday(d), "Tue");
        assert_eq!(super::date(11_016), "2000-02-29");
        assert_eq!(super::datetime(1_764_320_461), "2025-11-28 09:01:01");
    }
}
