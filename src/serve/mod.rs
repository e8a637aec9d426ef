//! The read side (`bigbrotr serve`, or a service of `bigbrotr run` with `[serve] enabled`):
//! one listener (default 127.0.0.1:7777) serving
//! - `/` websocket upgrades: a read-only Nostr relay ([`relay`]);
//! - `/` with `Accept: application/nostr+json`: its NIP-11 document;
//! - `/health`: liveness, as JSON;
//! - `/` in a browser: a page saying what this is.
//!
//! Every connection counts against `serve.max_connections`; request headers must arrive within
//! `serve.header_timeout_secs`.

pub mod access;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod relay;
pub mod rest;

/// How often the live feed looks for newly archived events.
pub const LIVE_POLL: Duration = Duration::from_millis(250);

/// Start the read side over `store` on `listener`: the live feed and the acceptor, both
/// until shutdown. Returns when both ended.
pub async fn serve_store(
    stores: Stores,
    config: Arc<crate::config::Config>,
    listener: Arc<TcpListener>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let (tx, _) = broadcast::channel(live::FEED_CAPACITY);
    let store = stores.events.clone();
    let source: Arc<dyn EventSource> =
        Arc::new(crate::query::local::LocalSource::new(store.clone()));
    let mut ctx = ServeCtx::new(source, config.serve.clone(), tx.clone(), shutdown.clone());
    let keys_env = std::env::var(access::KEYS_ENV).ok();
    let keys = access::read_keys(config.serve_api_keys_file().as_deref(), keys_env.as_deref())?;
    ctx.access = access::Access::new(&config.serve, keys);
    if ctx.access.key_count() > 0 {
        tracing::info!(keys = ctx.access.key_count(), "serve: API keys loaded");
    }
    ctx.stores = Some(stores);
    ctx.config = Some(config);
    let ctx = Arc::new(ctx);
    let mut feed = tokio::spawn(live::run(store, tx, LIVE_POLL, shutdown.clone()));
    // Whichever ends first ends both: a feed that failed would leave subscriptions silent.
    tokio::select! {
        served = run(ctx, listener) => {
            feed.abort();
            served
        }
        fed = &mut feed => {
            match fed {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow::anyhow!("live feed: {e}")),
                Err(e) => Err(anyhow::anyhow!("live feed: {e}")),
            }
        }
    }
}

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ACCEPT, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::config::ServeConfig;
use crate::query::EventSource;
use crate::shutdown::Shutdown;
use crate::store::Stores;

/// Counters of the read side (for `/metrics` and logs).
#[derive(Debug, Default)]
pub struct ServeStats {
    pub connections: AtomicU64,
    pub messages: AtomicU64,
    pub reqs: AtomicU64,
    pub counts: AtomicU64,
    pub negs: AtomicU64,
    pub events_sent: AtomicU64,
    pub slow_disconnects: AtomicU64,
    pub http_requests: AtomicU64,
    /// Requests and messages refused by the rate limits.
    pub rate_limited: AtomicU64,
    /// Requests with a wrong credential (401).
    pub unauthorized: AtomicU64,
    /// Exports started, and events they sent.
    pub exports: AtomicU64,
    pub exported: AtomicU64,
    /// Time to answer a query (REQ to EOSE, COUNT, REST).
    pub query_seconds: metrics::Histogram,
}

/// What every connection shares.
pub struct ServeCtx {
    pub source: Arc<dyn EventSource>,
    pub cfg: ServeConfig,
    pub live: broadcast::Sender<Arc<live::LiveEvent>>,
    pub shutdown: Shutdown,
    pub stats: Arc<ServeStats>,
    /// The node's stores, when serving from them (sightings, relays, status, metrics).
    pub stores: Option<Stores>,
    /// The node's whole configuration (for `/v1/status`).
    pub config: Option<Arc<crate::config::Config>>,
    /// API keys, trusted pubkeys and rate limits.
    pub access: access::Access,
    /// Slots of `serve.max_exports`.
    pub exports: Arc<Semaphore>,
    nip11: String,
    openapi: String,
    docs: String,
}

impl ServeCtx {
    pub fn new(
        source: Arc<dyn EventSource>,
        cfg: ServeConfig,
        live: broadcast::Sender<Arc<live::LiveEvent>>,
        shutdown: Shutdown,
    ) -> ServeCtx {
        let nip11 = nip11_document(&cfg);
        let openapi = openapi::document(&cfg.name).to_string();
        let docs = openapi::docs_page(&cfg.name);
        let access = access::Access::new(&cfg, Vec::new());
        ServeCtx {
            source,
            exports: Arc::new(Semaphore::new(cfg.max_exports)),
            cfg,
            live,
            shutdown,
            stats: Arc::new(ServeStats::default()),
            stores: None,
            config: None,
            access,
            nip11,
            openapi,
            docs,
        }
    }
}

/// The NIP-11 document: exactly what this relay supports, and its limits.
fn nip11_document(cfg: &ServeConfig) -> String {
    let mut doc = serde_json::json!({
        "name": cfg.name,
        "description": cfg.description,
        "supported_nips": [1, 11, 45, 77],
        "software": "https://github.com/bigbrotr/bigbrotr",
        "version": env!("CARGO_PKG_VERSION"),
        "limitation": {
            "max_message_length": cfg.max_message_kb << 10,
            "max_subscriptions": cfg.max_subscriptions,
            "max_filters": cfg.max_filters,
            "max_limit": cfg.max_limit,
            "default_limit": cfg.default_limit,
            "max_subid_length": 64,
            "auth_required": false,
            "payment_required": false,
            "restricted_writes": true,
        },
    });
    if let Some(c) = &cfg.contact {
        doc["contact"] = c.clone().into();
    }
    doc.to_string()
}

/// Bind the listener (a clear error when the port is taken).
pub async fn bind(cfg: &ServeConfig) -> anyhow::Result<TcpListener> {
    let addr = cfg
        .listen_addr()
        .map_err(|e| anyhow::anyhow!("serve.listen: {e}"))?;
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr}: {e}; is another bigbrotr serve (or another program) using it? set serve.listen or pass --listen")
    })
}

/// Accept connections until shutdown.
pub async fn run(ctx: Arc<ServeCtx>, listener: Arc<TcpListener>) -> anyhow::Result<()> {
    let limit = Arc::new(Semaphore::new(ctx.cfg.max_connections));
    let shutdown = ctx.shutdown.clone();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => p?,
            _ = shutdown.wait() => return Ok(()),
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait, never exit.
                    tracing::warn!(error = %e, "serve: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        tokio::spawn(connection(ctx, stream, peer, Arc::new(permit)));
    }
}

/// One TCP connection. `permit` (a slot of `serve.max_connections`) is held until the
/// connection ends, including a websocket session it was upgraded to.
async fn connection(
    ctx: Arc<ServeCtx>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: Arc<tokio::sync::OwnedSemaphorePermit>,
) {
    let io = TokioIo::new(stream);
    let c = ctx.clone();
    let service = hyper::service::service_fn(move |req| {
        let (c, p) = (c.clone(), permit.clone());
        async move { Ok::<_, std::convert::Infallible>(route(c, req, peer, p).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(ctx.cfg.header_timeout_secs))
        .max_buf_size(64 << 10)
        .serve_connection(io, service)
        .with_upgrades();
    let shutdown = ctx.shutdown.clone();
    tokio::select! {
        _ = conn => {}
        _ = shutdown.wait() => {}
    }
}

/// What a response body may fail with (an aborted export).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;
/// Every response's body: whole, or streamed ([`ChannelBody`]).
pub type Body = BoxBody<Bytes, BodyError>;

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A streamed body fed by a task through a bounded channel ([`Feed`]). When the feed is
/// aborted the body ends with an error, so the connection is cut instead of ending the
/// response cleanly: a client never mistakes a partial answer for a whole one.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    aborted: Arc<AtomicBool>,
}

/// The sending side of a [`ChannelBody`].
pub struct Feed {
    tx: mpsc::Sender<Bytes>,
    aborted: Arc<AtomicBool>,
}

impl ChannelBody {
    /// A body holding at most `chunks` chunks not yet written to the socket.
    pub fn new(chunks: usize) -> (ChannelBody, Feed) {
        let (tx, rx) = mpsc::channel(chunks);
        let aborted = Arc::new(AtomicBool::new(false));
        (
            ChannelBody {
                rx,
                aborted: aborted.clone(),
            },
            Feed { tx, aborted },
        )
    }
}

impl Feed {
    /// Queue a chunk; false (and the body aborted) when the client has not made room within
    /// `stall`, or is gone.
    pub async fn send(&self, chunk: Vec<u8>, stall: Duration) -> bool {
        let sent = matches!(
            tokio::time::timeout(stall, self.tx.send(Bytes::from(chunk))).await,
            Ok(Ok(()))
        );
        if !sent {
            self.abort();
        }
        sent
    }

    /// End the body with an error.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
    }
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BodyError>>> {
        match self.rx.poll_recv(cx) {
            std::task::Poll::Ready(Some(b)) => {
                std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(b))))
            }
            std::task::Poll::Ready(None) if self.aborted.load(Ordering::Acquire) => {
                std::task::Poll::Ready(Some(Err("the export was aborted".into())))
            }
            std::task::Poll::Ready(None) => std::task::Poll::Ready(None),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

fn response(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("text/plain")),
    );
    r
}

/// RFC 9457 problem details.
fn problem(status: StatusCode, detail: &str) -> Response<Body> {
    let body = rest::problem_body(status, detail);
    response(status, "application/problem+json", body.to_string())
}

fn json_reply(r: rest::Reply) -> Response<Body> {
    let ct = if r.status.is_success() {
        "application/json"
    } else {
        "application/problem+json"
    };
    let mut resp = cors(response(r.status, ct, r.body.to_string()));
    if let Some(secs) = r.retry_after {
        resp.headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

fn header_has(req: &Request<Incoming>, name: hyper::header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

fn cors(mut r: Response<Body>) -> Response<Body> {
    let h = r.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("*"),
    );
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, OPTIONS"),
    );
    r
}

async fn route(
    ctx: Arc<ServeCtx>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    permit: Arc<tokio::sync::OwnedSemaphorePermit>,
) -> Response<Body> {
    ctx.stats.http_requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    match *req.method() {
        Method::GET => {}
        Method::OPTIONS => return cors(response(StatusCode::NO_CONTENT, "text/plain", "")),
        ref m => {
            let mut r = problem(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{m} is not served here: this is a read-only archive"),
            );
            r.headers_mut().insert(
                hyper::header::ALLOW,
                HeaderValue::from_static("GET, OPTIONS"),
            );
            return r;
        }
    }
    let Some(found) = openapi::find(&path) else {
        let routes: Vec<&str> = openapi::ROUTES.iter().map(|r| r.path).collect();
        return cors(problem(
            StatusCode::NOT_FOUND,
            &format!(
                "no route {path}; routes: {} (see /v1/docs)",
                routes.join(", ")
            ),
        ));
    };
    let now = crate::timefmt::now_secs();
    let caller = match ctx
        .access
        .identify(req.headers(), req.method(), req.uri(), now)
    {
        Ok(c) => c,
        Err(detail) => {
            ctx.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
            let mut r = cors(problem(StatusCode::UNAUTHORIZED, &detail));
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer, Nostr"),
            );
            return r;
        }
    };
    let websocket = path == "/" && header_has(&req, UPGRADE, "websocket");
    let nip11 = path == "/" && header_has(&req, ACCEPT, "application/nostr+json");
    let cost = if websocket || nip11 {
        access::Cost::Light
    } else {
        found.cost
    };
    if let Err(wait) = ctx.access.charge(&caller, peer.ip(), cost) {
        ctx.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
        let mut r = rest::problem(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many requests from your address; try again in {wait} s (serve.rate_limit_per_minute; an API key lifts the limit)"),
        );
        r.retry_after = Some(wait);
        return json_reply(r);
    }
    let query = req.uri().query().map(str::to_owned);
    let query = query.as_deref();
    match found.id {
        "root" if websocket => upgrade(ctx, &mut req, permit, caller, peer),
        "root" if nip11 => cors(response(
            StatusCode::OK,
            "application/nostr+json",
            ctx.nip11.clone(),
        )),
        "root" => {
            let Some(stores) = ctx.stores.clone() else {
                return response(StatusCode::OK, "text/html; charset=utf-8", landing(&ctx));
            };
            let name = ctx.cfg.name.clone();
            match rest::blocking("status page", move || {
                Ok::<_, std::convert::Infallible>(page::render(&stores, &name, now))
            })
            .await
            {
                Ok(html) => response(StatusCode::OK, "text/html; charset=utf-8", html),
                Err(r) => json_reply(r),
            }
        }
        "health" => cors(response(
            StatusCode::OK,
            "application/json",
            serde_json::json!({"status": "ok", "connections": ctx.stats.connections.load(Ordering::Relaxed)}).to_string(),
        )),
        "metrics" => {
            let Some(stores) = ctx.stores.clone() else {
                return problem(StatusCode::NOT_FOUND, "no metrics for this source");
            };
            let stats = ctx.stats.clone();
            match rest::blocking("metrics", move || {
                Ok::<_, std::convert::Infallible>(metrics::render(&stores, &stats, now))
            })
            .await
            {
                Ok(text) => response(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text,
                ),
                Err(r) => json_reply(r),
            }
        }
        "events" => json_reply(rest::events(&ctx, query).await),
        "event" => json_reply(rest::event(&ctx, &path["/v1/events/".len()..]).await),
        "count" => json_reply(rest::count(&ctx, query).await),
        "export" => match rest::export(&ctx, query).await {
            Ok(body) => {
                let mut r = Response::new(BodyExt::boxed(body));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-ndjson"),
                );
                cors(r)
            }
            Err(r) => json_reply(r),
        },
        "stats" => json_reply(rest::stats(&ctx, query).await),
        "status" => json_reply(rest::status(&ctx).await),
        "relays" => json_reply(rest::relays(&ctx, query).await),
        "relay" => json_reply(rest::relay(&ctx, query).await),
        "openapi" => cors(response(
            StatusCode::OK,
            "application/json",
            ctx.openapi.clone(),
        )),
        "docs" => response(
            StatusCode::OK,
            "text/html; charset=utf-8",
            ctx.docs.clone(),
        ),
        other => {
            tracing::error!(route = other, "serve: a route in the table has no handler");
            problem(StatusCode::INTERNAL_SERVER_ERROR, "this route has no handler")
        }
    }
}

fn landing(ctx: &ServeCtx) -> String {
    let name = page::esc(&ctx.cfg.name);
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{name}</title></head><body><h1>{name}</h1><p>A read-only Nostr relay over this node's archive: point a Nostr client at this address (ws://).</p><p><a href=\"/health\">/health</a></p></body></html>"
    )
}

/// Answer a websocket upgrade (RFC 6455) and run the relay session on the upgraded stream.
fn upgrade(
    ctx: Arc<ServeCtx>,
    req: &mut Request<Incoming>,
    permit: Arc<tokio::sync::OwnedSemaphorePermit>,
    caller: access::Caller,
    peer: SocketAddr,
) -> Response<Body> {
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
    else {
        return problem(
            StatusCode::BAD_REQUEST,
            "websocket upgrade without Sec-WebSocket-Key",
        );
    };
    if !header_has(req, CONNECTION, "upgrade") {
        return problem(
            StatusCode::BAD_REQUEST,
            "websocket upgrade without Connection: Upgrade",
        );
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let on_upgrade = hyper::upgrade::on(req);
    let max_message = ctx.cfg.max_message_kb << 10;
    tokio::spawn(async move {
        let _permit = permit;
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        // A 4 KiB read buffer instead of tungstenite's 128 KiB: clients send small messages,
        // and an idle connection should cost little (docs/BENCHMARKS.md, RSS per connection).
        let config = WebSocketConfig::default()
            .read_buffer_size(4 << 10)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(config),
        )
        .await;
        relay::session(ws, ctx, caller, peer.ip()).await;
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    r
}
