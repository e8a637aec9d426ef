//! The status page at `/` for browsers: what the node is doing, server-rendered from the stores
//! (no JavaScript, no assets beyond this HTML), readable on a phone, refreshing itself.
//! Everything a relay controls (URLs, software names, errors) is escaped.

use std::fmt::Write as _;

use crate::store::Stores;

/// Relays listed on the page; the rest are counted.
const MAX_ROWS: usize = 300;
/// Days shown in "events per day".
const DAYS: u32 = 14;
/// Seconds between the page's own reloads.
const REFRESH_SECS: u32 = 30;

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:0 .8rem;color:#222;background:#fafafa}\
h1{font-size:1.4rem;margin:.8rem 0 .2rem}h2{font-size:1.1rem;margin:1.2rem 0 .4rem}\
.cards{display:flex;flex-wrap:wrap;gap:.5rem}.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.4rem .7rem;min-width:9rem}\
.card b{display:block;font-size:1.2rem}.wrap{overflow-x:auto}table{border-collapse:collapse;width:100%;background:#fff}\
th,td{border-bottom:1px solid #eee;padding:.25rem .45rem;text-align:left;white-space:nowrap}td.url{white-space:normal;word-break:break-all}\
.bar{display:inline-block;height:.7rem;background:#4a7bd0;min-width:1px}#per-day td:last-child{width:50%}.online{color:#176b2c}.offline{color:#a11}.unknown,.muted{color:#777}@media(max-width:600px){.hide-s{display:none}}";

/// HTML-escape `s` (text and attribute values); control characters become spaces.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn ago(now: u64, t: Option<i64>) -> String {
    t.map_or("never".into(), |t| crate::timefmt::ago(now as i64, t))
}

/// `YYYY-MM-DD HH:MM` (UTC), or "-".
fn utc(t: Option<u64>) -> String {
    t.map_or("-".into(), |t| {
        let full = crate::timefmt::datetime(t as i64);
        full[..full.len() - 3].to_string()
    })
}

fn card(out: &mut String, label: &str, value: &str) {
    let _ = write!(
        out,
        "<div class=\"card\">{}<b>{}</b></div>",
        esc(label),
        esc(value)
    );
}

/// The page. Blocking (SQLite and RocksDB reads): call it off the async workers.
pub fn render(stores: &Stores, name: &str, now: u64) -> String {
    let mut out = String::with_capacity(32 << 10);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\"><title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1><p class=\"muted\">A read-only Nostr relay over this archive answers at this address (ws://). Updated {} UTC; this page reloads every {REFRESH_SECS} s. <a href=\"/metrics\">metrics</a> · <a href=\"/v1/events?limit=20\">latest events</a></p>",
        esc(name),
        esc(name),
        utc(Some(now))
    );
    let c = stores.events.counters();
    let health = stores
        .state
        .health(now as i64 - 7 * 86_400)
        .unwrap_or_default();
    let online = health.iter().filter(|h| h.status == "online").count();
    let lag = stores
        .events
        .spool_oldest_seen_at()
        .ok()
        .flatten()
        .map(|t| now.saturating_sub(t));
    let tor: serde_json::Value = stores
        .state
        .get_state("tor", "status")
        .ok()
        .flatten()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null);
    let tor_text = match (
        tor.get("state").and_then(|v| v.as_str()),
        tor.get("percent"),
    ) {
        (Some(s), Some(p)) => format!("{s} {p}%"),
        _ => "off".into(),
    };
    out.push_str("<section class=\"cards\" id=\"figures\">");
    card(&mut out, "events stored", &c.events.to_string());
    card(&mut out, "sightings", &c.sightings.to_string());
    card(
        &mut out,
        "relays online",
        &format!("{online} of {}", health.len()),
    );
    card(&mut out, "spool depth", &c.spool_depth.to_string());
    card(
        &mut out,
        "ship lag",
        &lag.map_or("nothing to ship".into(), |l| format!("{l} s")),
    );
    card(&mut out, "Tor", &tor_text);
    out.push_str("</section>");

    // Relays: online first, then by URL.
    let mut rows: Vec<_> = health.iter().collect();
    rows.sort_by(|a, b| (a.status != "online", &a.url).cmp(&(b.status != "online", &b.url)));
    let _ = write!(
        out,
        "<h2>Relays</h2><div class=\"wrap\"><table id=\"relays\"><thead><tr><th>relay</th><th>status</th><th>uptime 7 d</th><th>open / read ms</th><th class=\"hide-s\">software</th><th class=\"hide-s\">checked</th></tr></thead><tbody>"
    );
    for h in rows.iter().take(MAX_ROWS) {
        let status_class = match h.status.as_str() {
            "online" => "online",
            "offline" => "offline",
            _ => "unknown",
        };
        let uptime = h
            .uptime_7d
            .map_or("-".into(), |u| format!("{:.0} %", u * 100.0));
        let rtt = format!(
            "{} / {}",
            h.open_ms.map_or("-".into(), |v| v.to_string()),
            h.read_ms.map_or("-".into(), |v| v.to_string())
        );
        let sw = match (&h.software, &h.version) {
            (Some(s), Some(v)) => format!("{s} {v}"),
            (Some(s), None) => s.clone(),
            _ => "-".into(),
        };
        let _ = write!(
            out,
            "<tr><td class=\"url\">{}</td><td class=\"{status_class}\">{}</td><td>{}</td><td>{}</td><td class=\"hide-s\">{}</td><td class=\"hide-s\">{}</td></tr>",
            esc(&h.url),
            esc(&h.status),
            esc(&uptime),
            esc(&rtt),
            esc(&crate::protocol::text::inert(&sw, 60)),
            esc(&ago(now, h.checked_at))
        );
    }
    out.push_str("</tbody></table></div>");
    if rows.len() > MAX_ROWS {
        let _ = write!(
            out,
            "<p class=\"muted\">{} more relays: <code>bigbrotr relays list</code>.</p>",
            rows.len() - MAX_ROWS
        );
    }

    // Events per day of created_at, the last DAYS days, as bars scaled to the busiest.
    let today = (now / 86_400) as u32;
    let per_day = stores
        .events
        .event_stats(today.saturating_sub(DAYS - 1), today)
        .map(|s| s.days)
        .unwrap_or_default();
    let busiest = per_day.iter().map(|d| d.1).max().unwrap_or(0).max(1);
    let _ = write!(
        out,
        "<h2>Events per day</h2><div class=\"wrap\"><table id=\"per-day\"><thead><tr><th>day (UTC, created_at)</th><th>events</th><th class=\"hide-s\"></th></tr></thead><tbody>"
    );
    for day in (today.saturating_sub(DAYS - 1)..=today).rev() {
        let n = per_day.iter().find(|d| d.0 == day).map_or(0, |d| d.1);
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{n}</td><td class=\"hide-s\"><span class=\"bar\" style=\"width:{}%\"></span></td></tr>",
            crate::timefmt::date(i64::from(day)),
            n * 100 / busiest
        );
    }
    out.push_str("</tbody></table></div>");

    let progress = stores.state.progress().unwrap_or_default();
    let _ = write!(
        out,
        "<h2>Sync progress</h2><div class=\"wrap\"><table id=\"sync\"><thead><tr><th>relay</th><th>complete up to</th><th>pass at</th><th>received</th><th>new</th><th class=\"hide-s\">unproven s</th></tr></thead><tbody>"
    );
    for p in progress.iter().take(MAX_ROWS) {
        let _ = write!(
            out,
            "<tr><td class=\"url\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"hide-s\">{}</td></tr>",
            esc(&p.url),
            esc(&utc(p.done_until)),
            esc(&utc(p.pass_frontier)),
            p.events_received,
            p.events_new,
            p.unproven_seconds
        );
    }
    out.push_str("</tbody></table></div></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_text_is_escaped_and_dates_are_utc() {
        assert_eq!(
            esc("<script>alert('x')</script>&\u{7}"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp; "
        );
        assert_eq!(utc(Some(1_700_000_000)), "2023-11-14 22:13");
        assert_eq!(utc(Some(951_782_400)), "2000-02-29 00:00");
        assert_eq!(utc(None), "-");
        assert_eq!(ago(1000, Some(990)), "10 s ago");
        assert_eq!(ago(100_000, Some(0)), "27 h ago");
    }
}
