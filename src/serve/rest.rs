//! The REST API under `/v1` (JSON; errors as RFC 9457 problem details):
//! - `GET /v1/events` — events by NIP-01 filter, newest first, with a `next` keyset cursor;
//! - `GET /v1/events/{id}` — one event with every relay it was seen on, and when;
//! - `GET /v1/count` — how many events a filter matches;
//! - `GET /v1/status` — the node's status, as `bigbrotr status --json`;
//! - `GET /v1/relays[?status=...]` — every registered relay with its health;
//! - `GET /v1/relay?url=...[&days=7]` — one relay with its NIP-11/NIP-66 history.
//!
//! A filter is given as query parameters (`ids`, `authors`, `kinds` as comma-separated lists;
//! `since`, `until`, `limit`; tags as `#e=...`, URL-encoded `%23e=...`, or `tag.e=...`), or whole
//! as `filter={...}` (NIP-01 JSON). `after=<cursor>` continues after the `next` of a page.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::{json, Map, Value};

use super::ServeCtx;
use crate::protocol::event::decode_hex;
use crate::protocol::Filter;
use crate::query::{Framing, Position, Query, QueryError, RENDER_BATCH_BYTES};

/// What a handler answers: a status and a JSON body (a problem when not 2xx).
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    /// `Retry-After` seconds (429, 503).
    pub retry_after: Option<u64>,
}

fn ok(body: Value) -> Reply {
    Reply {
        status: StatusCode::OK,
        body,
        retry_after: None,
    }
}

pub fn problem_body(status: StatusCode, detail: &str) -> Value {
    json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "detail": detail,
    })
}

pub fn problem(status: StatusCode, detail: impl Into<String>) -> Reply {
    Reply {
        status,
        body: problem_body(status, &detail.into()),
        retry_after: None,
    }
}

fn bad(detail: impl Into<String>) -> Reply {
    problem(StatusCode::BAD_REQUEST, detail)
}

fn query_problem(e: &QueryError) -> Reply {
    match e {
        QueryError::TimedOut => problem(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        QueryError::NotReady => problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        other => {
            tracing::warn!(error = %other, "serve: query failed");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the archive could not answer this query; try again",
            )
        }
    }
}

/// A request's filter, cursor and version choice.
struct Asked {
    filter: Filter,
    after: Option<Position>,
    all_versions: bool,
}

/// The filter, cursor and `versions` of a request's query string.
fn parse_query(ctx: &ServeCtx, query: Option<&str>) -> Result<Asked, Reply> {
    let mut obj = Map::new();
    let mut after = None;
    let mut all_versions = false;
    let mut whole: Option<String> = None;
    // ids and authors: hex values, none empty (`ids=` is a mistake, not "no ids").
    let hex_list = |k: &str, v: &str| -> Result<Vec<Value>, Reply> {
        v.split(',')
            .map(str::trim)
            .map(|s| {
                if s.is_empty() {
                    Err(bad(format!(
                        "{k}: an empty value; give comma-separated 64-character hex values"
                    )))
                } else {
                    Ok(Value::from(s.to_string()))
                }
            })
            .collect()
    };
    // Tag values as given: an empty one is the value "" (a `d` tag often is).
    let tag_list =
        |v: &str| -> Vec<Value> { v.split(',').map(|s| Value::from(s.to_string())).collect() };
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let (k, v) = (k.as_ref(), v.as_ref());
        match k {
            // An empty `filter=` is no filter (a form left blank).
            "filter" if v.is_empty() => {}
            "filter" => whole = Some(v.to_string()),
            "after" => after = Some(Position::decode(v).map_err(bad)?),
            "versions" => {
                all_versions = match v {
                    "latest" => false,
                    "all" => true,
                    _ => return Err(bad(format!("versions: {v:?} is neither latest nor all"))),
                }
            }
            "ids" | "authors" => {
                obj.insert(k.into(), Value::Array(hex_list(k, v)?));
            }
            "kinds" => {
                let mut kinds = Vec::new();
                for s in v.split(',').map(str::trim) {
                    let n: u16 = s
                        .parse()
                        .map_err(|_| bad(format!("kinds: {s:?} is not an integer 0-65535")))?;
                    kinds.push(Value::from(n));
                }
                obj.insert("kinds".into(), Value::Array(kinds));
            }
            "since" | "until" | "limit" => {
                let n: u64 = v
                    .parse()
                    .map_err(|_| bad(format!("{k}: {v:?} is not a non-negative integer")))?;
                obj.insert(k.into(), n.into());
            }
            tag if (tag.len() == 2 && tag.starts_with('#'))
                || (tag.len() == 5 && tag.starts_with("tag.")) =>
            {
                let letter = &tag[tag.len() - 1..];
                obj.insert(format!("#{letter}"), Value::Array(tag_list(v)));
            }
            other => {
                return Err(bad(format!(
                    "unknown parameter {other:?}; parameters are ids, authors, kinds, #<letter> (or tag.<letter>), since, until, limit, filter, after, versions"
                )))
            }
        }
    }
    let text = match whole {
        Some(w) if obj.is_empty() => w,
        Some(_) => {
            return Err(bad(
                "give the filter either as `filter=` or as parameters, not both",
            ))
        }
        None => Value::Object(obj).to_string(),
    };
    let f = Filter::from_json(&text).map_err(bad)?;
    let values = f.max_values();
    if values > ctx.cfg.max_filter_values {
        return Err(bad(format!(
            "a filter field lists {values} values, at most {} (serve.max_filter_values)",
            ctx.cfg.max_filter_values
        )));
    }
    Ok(Asked {
        filter: f,
        after,
        all_versions,
    })
}

fn event_json(ev: &crate::protocol::Event) -> Value {
    serde_json::from_str(&ev.to_json()).unwrap_or(Value::Null)
}

/// A query of one filter, resumed after `after`, within the time budget.
fn one_filter(ctx: &ServeCtx, asked: Asked) -> Query {
    Query {
        filters: vec![asked.filter],
        after: asked.after,
        deadline: Some(Instant::now() + Duration::from_millis(ctx.cfg.query_timeout_ms)),
        all_versions: asked.all_versions,
    }
}

/// `GET /v1/events`: one page.
pub async fn events(ctx: &ServeCtx, query: Option<&str>) -> Reply {
    let mut asked = match parse_query(ctx, query) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let limit = asked
        .filter
        .limit
        .unwrap_or(ctx.cfg.default_limit)
        .min(ctx.cfg.max_limit);
    asked.filter.limit = Some(limit);
    let q = one_filter(ctx, asked);
    let started = Instant::now();
    let mut rx = ctx.source.query_json(q, Framing::default(), 4);
    let mut out = Vec::new();
    let mut last = None;
    while let Some(item) = rx.recv().await {
        match item {
            Ok(batch) => {
                for r in batch {
                    last = Some(r.position);
                    out.push(serde_json::from_str::<Value>(&r.text).unwrap_or(Value::Null));
                }
            }
            Err(e) => return query_problem(&e),
        }
    }
    ctx.stats.query_seconds.observe(started.elapsed());
    // A full page may have more behind it; a short one is the end.
    let next = last
        .filter(|_| out.len() as u64 == limit && limit > 0)
        .map(|p| p.encode());
    ok(json!({ "events": out, "next": next }))
}

/// `GET /v1/count`.
pub async fn count(ctx: &ServeCtx, query: Option<&str>) -> Reply {
    let asked = match parse_query(ctx, query) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let q = one_filter(ctx, asked);
    let started = Instant::now();
    match ctx.source.count(q).await {
        Ok(n) => {
            ctx.stats.query_seconds.observe(started.elapsed());
            ok(json!({ "count": n }))
        }
        Err(e) => query_problem(&e),
    }
}

/// `GET /v1/events/{id}`: the event (latest-version rules do not apply: it is asked by id) and
/// where it was seen.
pub async fn event(ctx: &ServeCtx, id: &str) -> Reply {
    let Some(raw) = decode_hex::<32>(id) else {
        return bad(format!(
            "{id:?} is not an event id (64 lowercase hex characters)"
        ));
    };
    let Some(stores) = ctx.stores.clone() else {
        return problem(
            StatusCode::NOT_FOUND,
            "sightings are not available from this source",
        );
    };
    let found = blocking("event", move || {
        let ev = stores.events.get(&raw)?;
        let seen = stores.events.sightings(&raw)?;
        let urls = stores.events.bound_relays();
        Ok::<_, crate::store::StoreError>((ev, seen, urls))
    })
    .await;
    let (ev, seen, urls) = match found {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(ev) = ev else {
        let detail = if seen.is_empty() {
            format!("no event {id} in this archive")
        } else {
            format!("event {id} was archived and shipped upstream; its body was evicted here (storage.keep_shipped_days)")
        };
        return problem(StatusCode::NOT_FOUND, detail);
    };
    let url_of = |relay: u32| {
        urls.binary_search_by_key(&relay, |(id, _)| *id)
            .ok()
            .map(|i| urls[i].1.clone())
    };
    let seen_on: Vec<Value> = seen
        .iter()
        .map(|(relay, at)| json!({ "relay": url_of(*relay), "first_seen": at }))
        .collect();
    ok(json!({ "event": event_json(&ev), "seen_on": seen_on }))
}

fn now() -> i64 {
    crate::timefmt::now_secs() as i64
}

/// Run a blocking read of the stores off the async workers. A failure is logged and answered
/// `500`; a task that could not finish (shutdown) `503`.
pub async fn blocking<T, E>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, Reply>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, what, "serve: reading the stores failed");
            Err(problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the node's {what} could not be read; try again"),
            ))
        }
        Err(_) => Err(problem(StatusCode::SERVICE_UNAVAILABLE, "shutting down")),
    }
}

/// `GET /v1/relays[?status=online]`: every registered relay with its health (status, last
/// check, round trips, policies, software, 7-day uptime), as `relays list --json`.
pub async fn relays(ctx: &ServeCtx, query: Option<&str>) -> Reply {
    let mut status = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "status" => match v.as_ref() {
                "online" | "offline" | "unknown" => status = Some(v.into_owned()),
                _ => return bad(format!("status: {v:?} is not online, offline or unknown")),
            },
            other => return bad(format!("unknown parameter {other:?}; the one parameter is status (online, offline or unknown)")),
        }
    }
    let Some(stores) = ctx.stores.clone() else {
        return problem(
            StatusCode::NOT_FOUND,
            "relays are not available from this source",
        );
    };
    match blocking("relay registry", move || {
        stores.state.health(now() - 7 * 86_400)
    })
    .await
    {
        Ok(rows) => {
            let rows: Vec<_> = rows
                .into_iter()
                .filter(|h| status.as_deref().is_none_or(|s| h.status == s))
                .collect();
            ok(json!({ "relays": rows }))
        }
        Err(r) => r,
    }
}

/// `GET /v1/relay?url=wss://...[&days=7]`: one relay with its NIP-11 and NIP-66 history, as
/// `relays show --json`.
pub async fn relay(ctx: &ServeCtx, query: Option<&str>) -> Reply {
    let (mut url, mut days) = (None, 7u32);
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "url" => url = Some(v.into_owned()),
            "days" => match v.parse::<u32>() {
                Ok(d) if (1..=366).contains(&d) => days = d,
                _ => return bad(format!("days: {v:?} is not a number of days 1-366")),
            },
            other => {
                return bad(format!(
                    "unknown parameter {other:?}; parameters are url and days"
                ))
            }
        }
    }
    let Some(url) = url else {
        return bad("url is required, e.g. /v1/relay?url=wss://relay.example.org");
    };
    // Normalized as the registry stores URLs (nothing is dialed: any address may be looked up).
    let lookup = crate::protocol::url::UrlPolicy {
        allow_local: true,
        allow_hosts: Vec::new(),
    };
    let norm = crate::protocol::url::parse_relay_url(&url, &lookup)
        .map(|u| u.to_string())
        .unwrap_or(url);
    let Some(stores) = ctx.stores.clone() else {
        return problem(
            StatusCode::NOT_FOUND,
            "relays are not available from this source",
        );
    };
    let n = norm.clone();
    match blocking("relay registry", move || {
        stores.state.relay_detail(&n, days, now())
    })
    .await
    {
        Ok(Some(v)) => ok(v),
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            format!("{norm} is not registered on this node"),
        ),
        Err(r) => r,
    }
}

/// `GET /v1/status`: what `bigbrotr status --json` prints.
pub async fn status(ctx: &ServeCtx) -> Reply {
    let (Some(stores), Some(cfg)) = (ctx.stores.clone(), ctx.config.clone()) else {
        return problem(StatusCode::NOT_FOUND, "no node status for this source");
    };
    let found = blocking("state", move || {
        crate::status::node_status(&cfg, &stores, now() as u64)
    })
    .await;
    match found {
        Ok(v) => ok(v),
        Err(r) => r,
    }
}

/// Bytes of NDJSON sent to the client at once.
const EXPORT_CHUNK: usize = 64 << 10;

/// `GET /v1/export`: the stream of NDJSON chunks, or why not. Every event the filter matches,
/// newest first, without a time budget (and `limit`, if given, caps the whole export). A
/// client that reads nothing for `serve.write_timeout_secs` has its export aborted; an
/// aborted stream ends with an error (the connection is cut, never a clean end), so a client
/// never takes a partial export for a whole one.
pub async fn export(ctx: &Arc<ServeCtx>, query: Option<&str>) -> Result<super::ChannelBody, Reply> {
    let asked = parse_query(ctx, query)?;
    let Ok(permit) = ctx.exports.clone().try_acquire_owned() else {
        let mut r = problem(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} exports are running, the most at once (serve.max_exports); retry shortly",
                ctx.cfg.max_exports
            ),
        );
        r.retry_after = Some(10);
        return Err(r);
    };
    ctx.stats.exports.fetch_add(1, Ordering::Relaxed);
    let q = Query {
        filters: vec![asked.filter],
        after: asked.after,
        deadline: None,
        all_versions: asked.all_versions,
    };
    let (body, feed) = super::ChannelBody::new(4);
    let stall = Duration::from_secs(ctx.cfg.write_timeout_secs);
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let lines = Framing {
            prefix: String::new(),
            suffix: "\n",
        };
        let mut events = ctx.source.query_json(q, lines, 1);
        let mut chunk = Vec::with_capacity(EXPORT_CHUNK + RENDER_BATCH_BYTES);
        while let Some(item) = events.recv().await {
            match item {
                Ok(batch) => {
                    for r in &batch {
                        chunk.extend_from_slice(r.text.as_bytes());
                    }
                    ctx.stats
                        .exported
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    if chunk.len() >= EXPORT_CHUNK
                        && !feed.send(std::mem::take(&mut chunk), stall).await
                    {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "serve: export failed");
                    feed.abort();
                    return;
                }
            }
        }
        if !chunk.is_empty() {
            feed.send(chunk, stall).await;
        }
    });
    Ok(body)
}

/// `GET /v1/stats[?days=30]`: events per kind and per day (the last `days` UTC days), relays
/// by status, software, network and NIP.
pub async fn stats(ctx: &ServeCtx, query: Option<&str>) -> Reply {
    let mut days = 30u32;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "days" => match v.parse::<u32>() {
                Ok(d) if (1..=3660).contains(&d) => days = d,
                _ => return bad(format!("days: {v:?} is not a number of days 1-3660")),
            },
            other => {
                return bad(format!(
                    "unknown parameter {other:?}; the one parameter is days"
                ))
            }
        }
    }
    let Some(stores) = ctx.stores.clone() else {
        return problem(
            StatusCode::NOT_FOUND,
            "statistics are not available from this source",
        );
    };
    let now = now();
    let found = blocking("statistics", move || {
        let today = (now.max(0) / 86_400) as u32;
        let events = stores
            .events
            .event_stats(today.saturating_sub(days - 1), today)
            .map_err(|e| e.to_string())?;
        let total = stores.events.counters().events;
        let health = stores
            .state
            .health(now - 7 * 86_400)
            .map_err(|e| e.to_string())?;
        let nips = stores.state.relays_by_nip().map_err(|e| e.to_string())?;
        Ok::<_, String>((events, total, health, nips))
    })
    .await;
    let (events, total, health, nips) = match found {
        Ok(x) => x,
        Err(r) => return r,
    };
    let group = |key: &str, values: Vec<String>| -> Vec<Value> {
        let mut m: std::collections::BTreeMap<String, u64> = Default::default();
        for v in values {
            *m.entry(v).or_default() += 1;
        }
        let mut rows: Vec<(String, u64)> = m.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows.into_iter()
            .map(|(k, n)| json!({ key: k, "count": n }))
            .collect()
    };
    let by_status = group("status", health.iter().map(|h| h.status.clone()).collect());
    let by_network = group(
        "network",
        health.iter().map(|h| h.network.clone()).collect(),
    );
    let by_software = group(
        "software",
        health
            .iter()
            .map(|h| {
                h.software.as_deref().map_or("unknown".to_string(), |s| {
                    crate::protocol::text::inert(s, 60)
                })
            })
            .collect(),
    );
    ok(json!({
        "events": {
            "total": total,
            "per_kind": events.kinds.iter().map(|(k, n)| json!({"kind": k, "count": n})).collect::<Vec<_>>(),
            "per_day": events.days.iter().map(|(d, n)| json!({"day": crate::timefmt::date(i64::from(*d)), "count": n})).collect::<Vec<_>>(),
        },
        "relays": {
            "total": health.len(),
            "by_status": by_status,
            "by_software": by_software,
            "by_network": by_network,
            "by_nip": nips.iter().map(|(nip, n)| json!({"nip": nip, "count": n})).collect::<Vec<_>>(),
        }
    }))
}
