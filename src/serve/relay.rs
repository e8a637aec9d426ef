//! The read-only Nostr relay: one websocket connection (NIP-01 REQ/EOSE/CLOSE, NIP-45 COUNT,
//! EVENT refused, live delivery after EOSE).
//!
//! Memory per connection is bounded: what is queued for the client is counted in bytes
//! (`serve.outbound_buffer_kb`). A stored answer waits for room (up to
//! `serve.write_timeout_secs`, then the connection is closed); a live event that finds no room
//! closes the connection (it cannot wait: the feed moves on). The reader waits for room too,
//! so a client that sends without reading its answers stops being read.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{self, Message};

use super::access::{Caller, Cost};
use super::live::LiveEvent;
use super::ServeCtx;
use crate::protocol::Filter;
use crate::query::{Framing, Matcher, Query, QueryError};

/// Longest subscription id accepted (NIP-01 leaves it to relays; 64 is what most use).
const MAX_SUB_ID: usize = 64;
/// Live events held for a subscription while its stored answer is still being sent; more
/// close it (the client subscribes again).
const MAX_PENDING_LIVE: usize = 1000;
/// Longest text of a client's message quoted back in a NOTICE.
const QUOTE: usize = 80;
/// Bytes of frames written to a client in one flush.
const WRITE_BATCH: usize = 256 << 10;
/// Largest NIP-77 message this relay sends (the protocol splits larger answers in rounds).
const NEG_FRAME_LIMIT: u64 = 256 << 10;

/// The frames queued for one client, bounded in bytes.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::UnboundedSender<Vec<String>>,
    budget: Arc<Semaphore>,
    max: usize,
    write_timeout: Duration,
    kill: Arc<watch::Sender<Option<String>>>,
}

impl Outbox {
    /// Queue a frame, waiting for room; false once the connection is being closed.
    async fn send(&self, frame: String) -> bool {
        self.send_all(vec![frame]).await
    }

    /// Queue frames (a stored answer's batch), waiting for room; false once the connection
    /// is being closed.
    async fn send_all(&self, frames: Vec<String>) -> bool {
        let n = cost(&frames, self.max) as u32;
        match tokio::time::timeout(self.write_timeout, self.budget.acquire_many(n)).await {
            Ok(Ok(p)) => {
                p.forget();
                self.tx.send(frames).is_ok()
            }
            _ => {
                self.close(format!(
                    "the client read nothing for {} s with its buffer full",
                    self.write_timeout.as_secs()
                ));
                false
            }
        }
    }

    /// Queue a frame now or close the connection (live events cannot wait).
    fn send_now(&self, frame: String) -> bool {
        let frames = vec![frame];
        match self.budget.try_acquire_many(cost(&frames, self.max) as u32) {
            Ok(p) => {
                p.forget();
                self.tx.send(frames).is_ok()
            }
            Err(_) => {
                self.close("the client does not read fast enough to follow live events".into());
                false
            }
        }
    }

    fn close(&self, why: String) {
        self.kill.send_if_modified(|k| {
            if k.is_none() {
                *k = Some(why);
                true
            } else {
                false
            }
        });
    }
}

/// What queued frames count against a connection's outbound budget (`max` bytes): their bytes,
/// at least one each, at most the whole budget (a batch larger than the budget waits until it
/// is all free).
fn cost(frames: &[String], max: usize) -> usize {
    frames
        .iter()
        .map(|f| f.len().max(1))
        .sum::<usize>()
        .clamp(1, max)
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// What goes around an event's JSON in an EVENT frame of subscription `sub`: one definition
/// for stored answers (rendered by the source) and live events.
fn event_framing(sub: &str) -> Framing {
    Framing {
        prefix: format!("[\"EVENT\",{},", json_str(sub)),
        suffix: "]",
    }
}

fn event_frame(sub: &str, ev: &crate::protocol::Event) -> String {
    let f = event_framing(sub);
    format!("{}{}{}", f.prefix, ev.to_json(), f.suffix)
}

fn closed_frame(sub: &str, why: &str) -> String {
    format!("[\"CLOSED\",{},{}]", json_str(sub), json_str(why))
}

fn notice_frame(why: &str) -> String {
    format!("[\"NOTICE\",{}]", json_str(why))
}

/// A client's text quoted in an answer: short, one line.
fn quote(s: &str) -> String {
    crate::protocol::text::inert(s, QUOTE)
}

struct Sub {
    generation: u64,
    task: Option<JoinHandle<()>>,
    matchers: Vec<Matcher>,
    all_versions: bool,
    /// Live events that arrived while the stored answer was being sent (None once live).
    pending: Option<Vec<Arc<LiveEvent>>>,
}

enum Done {
    Eose {
        sub: String,
        generation: u64,
        sent: HashSet<[u8; 32]>,
    },
    Failed {
        sub: String,
        generation: u64,
    },
}

/// Parsed filters of a REQ or COUNT, or the CLOSED reason.
fn parse_filters(ctx: &ServeCtx, raw: &[Value], for_count: bool) -> Result<Vec<Filter>, String> {
    let cfg = &ctx.cfg;
    if raw.is_empty() {
        return Err("invalid: a REQ needs at least one filter".into());
    }
    if raw.len() > cfg.max_filters {
        return Err(format!(
            "invalid: {} filters, at most {} per request (serve.max_filters)",
            raw.len(),
            cfg.max_filters
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    for v in raw {
        let Value::Object(m) = v else {
            return Err("invalid: every filter is a JSON object".into());
        };
        // A field with no values matches no event ("any of none"): the filter adds nothing.
        if m.iter()
            .any(|(k, v)| k != "limit" && v.as_array().is_some_and(|a| a.is_empty()))
        {
            continue;
        }
        let mut f = Filter::from_json(&v.to_string()).map_err(|e| format!("invalid: {e}"))?;
        let values = f.max_values();
        if values > cfg.max_filter_values {
            return Err(format!(
                "invalid: a filter field lists {values} values, at most {} (serve.max_filter_values)",
                cfg.max_filter_values
            ));
        }
        if !for_count {
            f.limit = Some(f.limit.unwrap_or(cfg.default_limit).min(cfg.max_limit));
        }
        out.push(f);
    }
    Ok(out)
}

fn sub_id(v: Option<&Value>) -> Result<String, String> {
    match v.and_then(Value::as_str) {
        Some(s) if !s.is_empty() && s.len() <= MAX_SUB_ID => Ok(s.to_string()),
        _ => Err(format!(
            "invalid: the subscription id must be a string of 1-{MAX_SUB_ID} characters"
        )),
    }
}

/// Serve one websocket connection until either side closes it or the node shuts down.
/// Serve one websocket connection from `peer`, whose credentials (on the upgrade request) made
/// it `caller`: every REQ, COUNT and NEG-OPEN is charged to its rate limit.
pub async fn session<S>(ws: S, ctx: Arc<ServeCtx>, caller: Caller, peer: IpAddr)
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Sink<Message> + Send + Unpin + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<String>>();
    let max = ctx.cfg.outbound_buffer_kb << 10;
    let budget = Arc::new(Semaphore::new(max));
    let (kill_tx, mut kill_rx) = watch::channel(None::<String>);
    let out = Outbox {
        tx,
        budget: budget.clone(),
        max,
        write_timeout: Duration::from_secs(ctx.cfg.write_timeout_secs),
        kill: Arc::new(kill_tx),
    };
    let writer = tokio::spawn(async move {
        // Frames already queued go out in one flush (one write for a page of events instead of
        // one per event), at most WRITE_BATCH bytes at a time.
        'frames: while let Some(mut frames) = rx.recv().await {
            let mut n = cost(&frames, max);
            loop {
                for frame in frames {
                    if sink.feed(Message::text(frame)).await.is_err() {
                        break 'frames;
                    }
                }
                if n >= WRITE_BATCH {
                    break;
                }
                let Ok(more) = rx.try_recv() else { break };
                n += cost(&more, max);
                frames = more;
            }
            if sink.flush().await.is_err() {
                break;
            }
            budget.add_permits(n);
        }
        let _ = sink.close().await;
    });
    ctx.stats
        .connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut live_rx = ctx.live.subscribe();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut subs: HashMap<String, Sub> = HashMap::new();
    let mut negs: HashMap<String, Neg> = HashMap::new();
    let mut generation = 0u64;
    let counts = Arc::new(Semaphore::new(ctx.cfg.max_subscriptions));
    let shutdown = ctx.shutdown.clone();
    loop {
        tokio::select! {
            msg = stream.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(_))) => {
                        if !out.send(notice_frame("invalid: binary frames are not Nostr messages")).await {
                            break;
                        }
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                ctx.stats.messages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut conn = Conn { subs: &mut subs, negs: &mut negs, generation: &mut generation, done_tx: &done_tx, counts: &counts, caller: &caller, peer };
                let keep = handle(&ctx, &out, text.as_str(), &mut conn).await;
                if !keep {
                    break;
                }
            }
            Some(done) = done_rx.recv() => {
                match done {
                    Done::Eose { sub, generation: g, sent } => {
                        if let Some(s) = subs.get_mut(&sub).filter(|s| s.generation == g) {
                            s.task = None;
                            let pending = s.pending.take().unwrap_or_default();
                            for ev in pending {
                                if !sent.contains(&ev.event.id) && !out.send_now(event_frame(&sub, &ev.event)) {
                                    break;
                                }
                            }
                        }
                    }
                    Done::Failed { sub, generation: g } => {
                        if subs.get(&sub).is_some_and(|s| s.generation == g) {
                            subs.remove(&sub);
                        }
                    }
                }
            }
            live = live_rx.recv() => {
                match live {
                    Ok(ev) => deliver(&out, &mut subs, &ev),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        // This connection fell behind the feed: its live subscriptions end, with
                        // the reason (the client re-subscribes with `since`).
                        let why = format!("error: {n} live events were dropped because this connection fell behind; subscribe again");
                        for (id, s) in subs.drain() {
                            if let Some(t) = s.task { t.abort(); }
                            if !out.send_now(closed_frame(&id, &why)) { break; }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
            _ = kill_rx.changed() => {
                if let Some(why) = kill_rx.borrow().clone() {
                    tracing::debug!(reason = %why, "serve: connection closed");
                    ctx.stats.slow_disconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                break;
            }
            _ = shutdown.wait() => break,
        }
    }
    for (_, s) in subs.drain() {
        if let Some(t) = s.task {
            t.abort();
        }
    }
    drop(out);
    // The writer ends once every task holding the outbox is gone; a client that reads nothing
    // does not hold the connection open past the write timeout.
    let mut writer = writer;
    if tokio::time::timeout(Duration::from_secs(ctx.cfg.write_timeout_secs), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    ctx.stats
        .connections
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

fn deliver(out: &Outbox, subs: &mut HashMap<String, Sub>, ev: &Arc<LiveEvent>) {
    let mut dropped = Vec::new();
    for (id, s) in subs.iter_mut() {
        if !(ev.latest || s.all_versions) || !s.matchers.iter().any(|m| m.matches(&ev.event)) {
            continue;
        }
        match &mut s.pending {
            Some(p) if p.len() >= MAX_PENDING_LIVE => dropped.push(id.clone()),
            Some(p) => p.push(ev.clone()),
            None => {
                if !out.send_now(event_frame(id, &ev.event)) {
                    return;
                }
            }
        }
    }
    for id in dropped {
        if let Some(s) = subs.remove(&id) {
            if let Some(t) = s.task {
                t.abort();
            }
        }
        let why = "error: too many new events arrived while the stored answer was sent; subscribe again with since";
        if !out.send_now(closed_frame(&id, why)) {
            return;
        }
    }
}

type Neg = negentropy::Negentropy<'static, negentropy::NegentropyStorageVector>;

/// One connection's state, as the message handler sees it.
struct Conn<'a> {
    subs: &'a mut HashMap<String, Sub>,
    negs: &'a mut HashMap<String, Neg>,
    generation: &'a mut u64,
    done_tx: &'a mpsc::UnboundedSender<Done>,
    counts: &'a Arc<Semaphore>,
    caller: &'a Caller,
    peer: IpAddr,
}

/// Charge a message to the connection's rate limit: the refusal's reason when it is spent.
fn over_limit(ctx: &ServeCtx, caller: &Caller, peer: IpAddr, cost: Cost) -> Option<String> {
    let wait = ctx.access.charge(caller, peer, cost).err()?;
    ctx.stats
        .rate_limited
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(format!(
        "rate-limited: too many requests from your address; try again in {wait} s (serve.rate_limit_per_minute)"
    ))
}

fn neg_err(sub: &str, why: &str) -> String {
    format!("[\"NEG-ERR\",{},{}]", json_str(sub), json_str(why))
}

fn neg_msg(sub: &str, msg: &[u8]) -> String {
    format!("[\"NEG-MSG\",{},\"{}\"]", json_str(sub), hex::encode(msg))
}

/// NIP-77 NEG-OPEN: the (created_at, id) of every event the filter matches (at most
/// `serve.max_negentropy_items`), then the first reconciliation step.
async fn neg_open(ctx: &Arc<ServeCtx>, msg: &[Value], sub: &str) -> Result<(Neg, Vec<u8>), String> {
    let filters = parse_filters(ctx, msg.get(2..3).unwrap_or_default(), true)?;
    let Some(initial) = msg
        .get(3)
        .and_then(Value::as_str)
        .and_then(|h| hex::decode(h).ok())
    else {
        return Err("invalid: NEG-OPEN needs a filter and a hex initial message".into());
    };
    let max = ctx.cfg.max_negentropy_items;
    let mut storage = negentropy::NegentropyStorageVector::new();
    if let Some(mut f) = filters.into_iter().next() {
        f.limit = Some(max as u64 + 1);
        let q = Query {
            filters: vec![f],
            deadline: Some(Instant::now() + Duration::from_millis(ctx.cfg.query_timeout_ms)),
            ..Query::default()
        };
        let mut rx = ctx.source.query_positions(q, 4);
        let mut n = 0;
        while let Some(item) = rx.recv().await {
            for p in item.map_err(|e| query_reason(&e))? {
                n += 1;
                if n > max {
                    return Err(format!(
                        "blocked: more than {max} events match this filter (serve.max_negentropy_items); narrow it with since/until"
                    ));
                }
                storage
                    .insert(p.created_at, negentropy::Id::from_byte_array(p.id))
                    .map_err(|e| format!("error: {e}"))?;
            }
        }
    }
    storage.seal().map_err(|e| format!("error: {e}"))?;
    let mut neg = negentropy::Negentropy::owned(storage, NEG_FRAME_LIMIT)
        .map_err(|e| format!("error: {e}"))?;
    let reply = neg
        .reconcile(&initial)
        .map_err(|e| format!("invalid: negentropy message for {}: {e}", quote(sub)))?;
    Ok((neg, reply))
}

/// Handle one client message; false ends the connection.
async fn handle(ctx: &Arc<ServeCtx>, out: &Outbox, text: &str, conn: &mut Conn<'_>) -> bool {
    let Conn {
        subs,
        negs,
        generation,
        done_tx,
        counts,
        caller,
        peer,
    } = conn;
    let (caller, peer) = (*caller, *peer);
    let msg: Vec<Value> = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            return out
                .send(notice_frame(&format!(
                    "invalid: not a Nostr message (a JSON array): {e}; got {}",
                    quote(text)
                )))
                .await
        }
    };
    let kind = msg.first().and_then(Value::as_str).unwrap_or("");
    match kind {
        "REQ" => {
            let sub = match sub_id(msg.get(1)) {
                Ok(s) => s,
                Err(e) => return out.send(notice_frame(&e)).await,
            };
            if let Some(why) = over_limit(ctx, caller, peer, Cost::Light) {
                return out.send(closed_frame(&sub, &why)).await;
            }
            let filters = match parse_filters(ctx, &msg[2..], false) {
                Ok(f) => f,
                Err(e) => return out.send(closed_frame(&sub, &e)).await,
            };
            // A REQ with an open subscription's id replaces it (NIP-01).
            if let Some(old) = subs.remove(&sub) {
                if let Some(t) = old.task {
                    t.abort();
                }
            } else if subs.len() + negs.len() >= ctx.cfg.max_subscriptions {
                return out
                    .send(closed_frame(
                        &sub,
                        &format!(
                            "blocked: {} subscriptions open, at most {} per connection (serve.max_subscriptions); CLOSE one first",
                            subs.len(),
                            ctx.cfg.max_subscriptions
                        ),
                    ))
                    .await;
            }
            ctx.stats
                .reqs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            **generation += 1;
            let g = **generation;
            let matchers = filters.iter().map(Matcher::new).collect();
            let q = Query {
                filters,
                deadline: Some(Instant::now() + Duration::from_millis(ctx.cfg.query_timeout_ms)),
                ..Query::default()
            };
            let task = tokio::spawn(history(
                ctx.clone(),
                out.clone(),
                sub.clone(),
                g,
                q,
                (*done_tx).clone(),
            ));
            subs.insert(
                sub,
                Sub {
                    generation: g,
                    task: Some(task),
                    matchers,
                    all_versions: false,
                    pending: Some(Vec::new()),
                },
            );
            true
        }
        "CLOSE" => {
            let sub = match sub_id(msg.get(1)) {
                Ok(s) => s,
                Err(e) => return out.send(notice_frame(&e)).await,
            };
            if let Some(s) = subs.remove(&sub) {
                if let Some(t) = s.task {
                    t.abort();
                }
            }
            true
        }
        "COUNT" => {
            let sub = match sub_id(msg.get(1)) {
                Ok(s) => s,
                Err(e) => return out.send(notice_frame(&e)).await,
            };
            if let Some(why) = over_limit(ctx, caller, peer, Cost::Light) {
                return out.send(closed_frame(&sub, &why)).await;
            }
            let filters = match parse_filters(ctx, &msg[2..], true) {
                Ok(f) => f,
                Err(e) => return out.send(closed_frame(&sub, &e)).await,
            };
            let Ok(permit) = Arc::clone(counts).try_acquire_owned() else {
                return out
                    .send(closed_frame(
                        &sub,
                        "blocked: too many queries at once on this connection; wait for an answer",
                    ))
                    .await;
            };
            ctx.stats
                .counts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (ctx, out) = (ctx.clone(), out.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let q = Query {
                    filters,
                    deadline: Some(
                        Instant::now() + Duration::from_millis(ctx.cfg.query_timeout_ms),
                    ),
                    ..Query::default()
                };
                let frame = if q.filters.is_empty() {
                    format!("[\"COUNT\",{},{{\"count\":0}}]", json_str(&sub))
                } else {
                    let started = Instant::now();
                    let counted = ctx.source.count(q).await;
                    ctx.stats.query_seconds.observe(started.elapsed());
                    match counted {
                        Ok(n) => format!("[\"COUNT\",{},{{\"count\":{n}}}]", json_str(&sub)),
                        Err(e) => closed_frame(&sub, &query_reason(&e)),
                    }
                };
                out.send(frame).await;
            });
            true
        }
        "EVENT" => {
            if let Some(why) = over_limit(ctx, caller, peer, Cost::Light) {
                return out.send(notice_frame(&why)).await;
            }
            let id = msg
                .get(1)
                .and_then(|e| e.get("id"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            match id {
                Some(id) => {
                    out.send(format!(
                        "[\"OK\",{},false,\"blocked: read-only archive\"]",
                        json_str(&id)
                    ))
                    .await
                }
                None => out.send(notice_frame("invalid: EVENT without an event object with an id; this relay is a read-only archive anyway")).await,
            }
        }
        "AUTH" => {
            out.send(notice_frame("unsupported: this relay needs no AUTH"))
                .await
        }
        "NEG-OPEN" => {
            let sub = match sub_id(msg.get(1)) {
                Ok(s) => s,
                Err(e) => return out.send(notice_frame(&e)).await,
            };
            // NIP-77: a NEG-OPEN with an open id replaces it.
            negs.remove(&sub);
            if let Some(why) = over_limit(ctx, caller, peer, Cost::Heavy) {
                return out.send(neg_err(&sub, &why)).await;
            }
            if subs.len() + negs.len() >= ctx.cfg.max_subscriptions {
                let why = format!(
                    "blocked: at most {} subscriptions and reconciliations open per connection (serve.max_subscriptions)",
                    ctx.cfg.max_subscriptions
                );
                return out.send(neg_err(&sub, &why)).await;
            }
            ctx.stats
                .negs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match neg_open(ctx, &msg, &sub).await {
                Ok((neg, reply)) => {
                    negs.insert(sub.clone(), neg);
                    out.send(neg_msg(&sub, &reply)).await
                }
                Err(why) => out.send(neg_err(&sub, &why)).await,
            }
        }
        "NEG-MSG" => {
            let sub = match sub_id(msg.get(1)) {
                Ok(s) => s,
                Err(e) => return out.send(notice_frame(&e)).await,
            };
            let Some(neg) = negs.get_mut(&sub) else {
                return out
                    .send(neg_err(
                        &sub,
                        "closed: no open reconciliation with this id; send NEG-OPEN first",
                    ))
                    .await;
            };
            let step = msg
                .get(2)
                .and_then(Value::as_str)
                .and_then(|h| hex::decode(h).ok())
                .ok_or_else(|| "invalid: NEG-MSG needs a hex message".to_string())
                .and_then(|m| {
                    neg.reconcile(&m)
                        .map_err(|e| format!("invalid: negentropy message: {e}"))
                });
            match step {
                Ok(reply) => out.send(neg_msg(&sub, &reply)).await,
                Err(why) => {
                    negs.remove(&sub);
                    out.send(neg_err(&sub, &why)).await
                }
            }
        }
        "NEG-CLOSE" => {
            if let Ok(sub) = sub_id(msg.get(1)) {
                negs.remove(&sub);
            }
            true
        }
        other => {
            if let Some(why) = over_limit(ctx, caller, peer, Cost::Light) {
                return out.send(notice_frame(&why)).await;
            }
            out.send(notice_frame(&format!(
                "invalid: unknown message type {}; this relay answers REQ, CLOSE, COUNT, NEG-OPEN/MSG/CLOSE (EVENT is refused)",
                quote(other)
            )))
            .await
        }
    }
}

fn query_reason(e: &QueryError) -> String {
    match e {
        QueryError::TimedOut | QueryError::NotReady => format!("error: {e}"),
        other => {
            tracing::warn!(error = %other, "serve: query failed");
            "error: the archive could not answer this query; try again".into()
        }
    }
}

/// Send a subscription's stored answer, then EOSE; tell the session when done.
async fn history(
    ctx: Arc<ServeCtx>,
    out: Outbox,
    sub: String,
    generation: u64,
    q: Query,
    done: mpsc::UnboundedSender<Done>,
) {
    let mut sent = HashSet::new();
    let started = Instant::now();
    if !q.filters.is_empty() {
        let mut rx = ctx.source.query_json(q, event_framing(&sub), 2);
        while let Some(item) = rx.recv().await {
            match item {
                Ok(batch) => {
                    sent.extend(batch.iter().map(|r| r.position.id));
                    ctx.stats
                        .events_sent
                        .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    if !out
                        .send_all(batch.into_iter().map(|r| r.text).collect())
                        .await
                    {
                        return;
                    }
                }
                Err(e) => {
                    out.send(closed_frame(&sub, &query_reason(&e))).await;
                    let _ = done.send(Done::Failed { sub, generation });
                    return;
                }
            }
        }
    }
    ctx.stats.query_seconds.observe(started.elapsed());
    if out.send(format!("[\"EOSE\",{}]", json_str(&sub))).await {
        let _ = done.send(Done::Eose {
            sub,
            generation,
            sent,
        });
    }
}
