//! A deliberately misbehaving, in-process Nostr relay for integration tests.
//!
//! Real relays (and `nostr-relay-builder`) behave well, so they cannot produce
//! on demand the pathologies an archiver has to survive: silently clamped REQ
//! answers, subscriptions that never reach EOSE, answers dribbled out one byte
//! at a time, connections cut in the middle of a backfill, NOTICE floods,
//! events that do not match the filter, oversized frames, `CLOSED` refusals,
//! and events whose ids or signatures are wrong. [`HostileRelay`] produces
//! each of these when asked through [`Options`].
//!
//! The server is hand-rolled on a plain [`tokio::net::TcpStream`]: the HTTP
//! upgrade is parsed by hand and WebSocket frames are read and written by
//! hand, because the misbehaviour has to happen at the frame and byte level
//! (one byte per write, a TCP close right after an EVENT frame, frames of an
//! exact size), which a WebSocket library would hide or refuse to do. Plain
//! HTTP GETs that are not upgrades get a 404, so a NIP-11 fetch finds no
//! relay information document.
//!
//! Its events are [`RawEvent`]s (`raw_event.rs`), served exactly as given.
//!
//! What the relay speaks, apart from the [`Options`] misbehaviour:
//! - `["REQ",sub,filter…]`: stored events matching any filter (`ids`,
//!   `authors`, `kinds`, inclusive `since`/`until`, `#x` tag filters; unknown
//!   fields ignored), newest first with ties by lowest id, each filter cut to
//!   min(`limit`, clamp), the union cut to clamp; then `EOSE`. No live
//!   subscription is kept. A REQ without filters matches nothing.
//! - `["COUNT",sub,filter…]`: `["COUNT",sub,{"count":n}]`, limits ignored.
//! - `["EVENT",ev]`: `["OK",id,false,"blocked: read-only test relay"]`.
//! - `["CLOSE",sub]`: ignored. Anything else: `["NOTICE","invalid: …"]`.
//! - Ping gets a pong, close gets its code echoed; client frames over 1 MiB
//!   get close 1009, protocol violations close 1002. Unmasked client frames
//!   are tolerated.
//!
//! Only ever bind and connect to 127.0.0.1.

// Each test binary that includes this support module uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Largest HTTP upgrade request accepted (request line plus headers).
const MAX_HTTP_REQUEST: usize = 16 * 1024;
/// Largest incoming WebSocket frame payload, and largest reassembled message.
const MAX_INCOMING: usize = 1024 * 1024;
/// How long a closing connection keeps draining input so that unread client
/// bytes do not turn our FIN into an RST (which could discard sent data).
const LINGER: Duration = Duration::from_secs(2);

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

const CLOSE_PROTOCOL_ERROR: u16 = 1002;
const CLOSE_TOO_BIG: u16 = 1009;

use super::raw_event::json_str;
pub use super::raw_event::{nip01_serialize, sign_event, RawEvent};

// ---------------------------------------------------------------------------
// Part 2: the server
// ---------------------------------------------------------------------------

/// What the relay does wrong. [`Options::default`] is a well-behaved relay
/// that clamps REQ answers at 500 events and supports COUNT.
#[derive(Debug, Clone)]
pub struct Options {
    /// Silent cap on the events of one REQ answer, whatever the asked limit
    /// (a REQ without limit gets at most `clamp` too).
    pub clamp: usize,
    /// Answer REQs with events but never send EOSE.
    pub never_eose: bool,
    /// Write every outgoing byte after the HTTP handshake on its own, with
    /// this delay after each byte.
    pub drip: Option<Duration>,
    /// Close the TCP connection (FIN, no WebSocket close frame) right after
    /// this many EVENT messages were sent on it; with 0, instead of the
    /// first EVENT.
    pub disconnect_after: Option<usize>,
    /// Send this many NOTICE messages before answering each REQ.
    pub notice_flood: usize,
    /// Valid events appended to every REQ answer (after the matching ones,
    /// not subject to `clamp`) even though they do not match its filters.
    pub outside_filter: Vec<RawEvent>,
    /// Before the first answer on each connection, send one text frame whose
    /// payload is exactly this many bytes: `["NOTICE","xxx…"]` (at least 12).
    pub oversized_frame: Option<usize>,
    /// Answer NIP-45 COUNT exactly; if false answer
    /// `["CLOSED",sub,"unsupported: COUNT"]`.
    pub count: bool,
    /// Answer every COUNT with 0 (as some relays do), whatever matches.
    pub count_zero: bool,
    /// If set, answer every REQ with `["CLOSED",sub,reason]` and nothing else
    /// (no NOTICE flood, no events, no EOSE).
    pub closed_reason: Option<String>,
    /// Withhold every answered event whose content starts with this string, after the limit
    /// was applied (as relays do with expired, deleted or auth-hidden events): answers come
    /// back shorter than the clamp although more events exist.
    pub hide_after_limit: Option<String>,
    /// NIP-11 document served (200, application/nostr+json) to plain GETs instead of a 404.
    pub nip11: Option<String>,
    /// Append to every REQ answer this many stored events that match its filters but were
    /// left out of it, the oldest ones (as relays with unsorted storage, buggy ordering or
    /// stale caches do): the answer is correct newest-first, plus a few strays from far older.
    pub stray_older: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clamp: 500,
            never_eose: false,
            drip: None,
            disconnect_after: None,
            notice_flood: 0,
            outside_filter: Vec::new(),
            oversized_frame: None,
            count: true,
            count_zero: false,
            hide_after_limit: None,
            nip11: None,
            closed_reason: None,
            stray_older: 0,
        }
    }
}

struct Shared {
    opts: Options,
    events: Mutex<Arc<Vec<RawEvent>>>,
    events_sent: AtomicU64,
    reqs: AtomicU64,
    /// Largest `limit` any REQ filter asked for.
    max_limit_asked: AtomicU64,
    connections: AtomicU64,
    panics: AtomicU64,
}

impl Shared {
    fn snapshot(&self) -> Arc<Vec<RawEvent>> {
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// The running relay. Dropping it (or [`HostileRelay::shutdown`]) stops the
/// accept loop and drops every open connection.
pub struct HostileRelay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl HostileRelay {
    /// A well-behaved relay with no events that serves `doc` as its NIP-11 document.
    pub async fn serving_nip11(doc: &str) -> HostileRelay {
        let opts = Options {
            nip11: Some(doc.to_string()),
            ..Options::default()
        };
        HostileRelay::start(vec![], opts).await
    }

    /// Bind 127.0.0.1 on a free port and start serving `events`.
    pub async fn start(events: Vec<RawEvent>, opts: Options) -> HostileRelay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("hostile relay: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("hostile relay: local_addr");
        let shared = Arc::new(Shared {
            opts,
            events: Mutex::new(Arc::new(events)),
            events_sent: AtomicU64::new(0),
            reqs: AtomicU64::new(0),
            max_limit_asked: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            panics: AtomicU64::new(0),
        });
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(accept_loop(listener, shared.clone(), stop_rx));
        HostileRelay { addr, shared, stop }
    }

    /// `ws://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// EVENT messages fully written, over all connections (matching and
    /// `outside_filter` events alike).
    pub fn events_sent(&self) -> u64 {
        self.shared.events_sent.load(Ordering::SeqCst)
    }

    /// REQ messages received (including malformed ones).
    /// Largest `limit` any REQ filter asked for so far.
    pub fn max_limit_asked(&self) -> u64 {
        self.shared.max_limit_asked.load(Ordering::SeqCst)
    }

    pub fn reqs(&self) -> u64 {
        self.shared.reqs.load(Ordering::SeqCst)
    }

    /// Completed WebSocket handshakes (plain HTTP requests are not counted).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Connection tasks that panicked; should always be 0.
    pub fn panics(&self) -> u64 {
        self.shared.panics.load(Ordering::SeqCst)
    }

    /// Replace the stored events; later REQs and COUNTs see the new set.
    pub fn set_events(&self, events: Vec<RawEvent>) {
        *self
            .shared
            .events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(events);
    }

    /// Stop accepting and drop every open connection (no close frame).
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for HostileRelay {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Resolves once shutdown was requested (or the relay handle is gone).
async fn wait_stopped(stop: &mut watch::Receiver<bool>) {
    // The returned guard is dropped here: it must not live across awaits.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    let mut stopped = stop.clone();
    loop {
        tokio::select! {
            _ = wait_stopped(&mut stopped) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let conn_shared = shared.clone();
                    let mut conn_stop = stop.clone();
                    let task = tokio::spawn(async move {
                        tokio::select! {
                            _ = serve(stream, conn_shared) => {}
                            _ = wait_stopped(&mut conn_stop) => {}
                        }
                    });
                    let watch_shared = shared.clone();
                    tokio::spawn(async move {
                        if let Err(err) = task.await {
                            if err.is_panic() {
                                watch_shared.panics.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
        shared,
        events_on_conn: 0,
        greeted: false,
    };
    if let Ok(true) = conn.handshake().await {
        conn.shared.connections.fetch_add(1, Ordering::SeqCst);
        let _ = conn.run().await;
    }
    conn.finish().await;
}

/// What to do after handling one client message.
enum Flow {
    Continue,
    /// Close the TCP connection now, without a close frame.
    Drop,
}

enum Incoming {
    Frame {
        fin: bool,
        opcode: u8,
        payload: Vec<u8>,
    },
    Eof,
    TooBig,
}

struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet consumed.
    buf: Vec<u8>,
    shared: Arc<Shared>,
    events_on_conn: usize,
    /// Whether the oversized frame (if any) was already sent.
    greeted: bool,
}

impl Conn {
    /// Read the HTTP request; upgrade it (true) or answer it with an error
    /// status (false).
    async fn handshake(&mut self) -> std::io::Result<bool> {
        let end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                if pos + 4 <= MAX_HTTP_REQUEST {
                    break pos + 4;
                }
            }
            if self.buf.len() >= MAX_HTTP_REQUEST {
                self.http_error("431 Request Header Fields Too Large")
                    .await?;
                return Ok(false);
            }
            if !self.read_more().await? {
                return Ok(false);
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);

        let mut lines = head.split("\r\n");
        let method = lines
            .next()
            .and_then(|line| line.split_whitespace().next())
            .unwrap_or("");
        let mut upgrade = false;
        let mut key = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "upgrade" => {
                    upgrade = value
                        .split(',')
                        .any(|token| token.trim().eq_ignore_ascii_case("websocket"))
                }
                "sec-websocket-key" => key = Some(value.to_string()),
                _ => {}
            }
        }
        if method != "GET" {
            self.http_error("400 Bad Request").await?;
            return Ok(false);
        }
        let key = match key {
            Some(key) if upgrade => key,
            _ => {
                match self.shared.opts.nip11.clone() {
                    Some(doc) => {
                        let response = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/nostr+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{doc}",
                            doc.len()
                        );
                        self.stream.write_all(response.as_bytes()).await?;
                    }
                    None => self.http_error("404 Not Found").await?,
                }
                return Ok(false);
            }
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        self.stream.write_all(response.as_bytes()).await?;
        Ok(true)
    }

    async fn http_error(&mut self, status: &str) -> std::io::Result<()> {
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{status}",
            status.len()
        );
        self.stream.write_all(response.as_bytes()).await
    }

    /// Half-close (FIN) and drain input for a while, so that unread client
    /// bytes do not make the kernel answer with an RST.
    async fn finish(&mut self) {
        let _ = self.stream.shutdown().await;
        let drain = async {
            let mut sink = [0u8; 4096];
            while let Ok(n) = self.stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }

    async fn read_more(&mut self) -> std::io::Result<bool> {
        self.buf.reserve(8192);
        Ok(self.stream.read_buf(&mut self.buf).await? > 0)
    }

    async fn fill(&mut self, n: usize) -> std::io::Result<bool> {
        while self.buf.len() < n {
            if !self.read_more().await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn read_frame(&mut self) -> std::io::Result<Incoming> {
        if !self.fill(2).await? {
            return Ok(Incoming::Eof);
        }
        let (b0, b1) = (self.buf[0], self.buf[1]);
        let (len, mut pos) = match b1 & 0x7f {
            126 => {
                if !self.fill(4).await? {
                    return Ok(Incoming::Eof);
                }
                (u64::from(u16::from_be_bytes([self.buf[2], self.buf[3]])), 4)
            }
            127 => {
                if !self.fill(10).await? {
                    return Ok(Incoming::Eof);
                }
                let mut be = [0u8; 8];
                be.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(be), 10)
            }
            n => (u64::from(n), 2),
        };
        if len > MAX_INCOMING as u64 {
            return Ok(Incoming::TooBig);
        }
        let len = len as usize;
        let mask = if b1 & 0x80 != 0 {
            if !self.fill(pos + 4).await? {
                return Ok(Incoming::Eof);
            }
            let mask = [
                self.buf[pos],
                self.buf[pos + 1],
                self.buf[pos + 2],
                self.buf[pos + 3],
            ];
            pos += 4;
            Some(mask)
        } else {
            None
        };
        if !self.fill(pos + len).await? {
            return Ok(Incoming::Eof);
        }
        let mut payload = self.buf[pos..pos + len].to_vec();
        self.buf.drain(..pos + len);
        if let Some(mask) = mask {
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= mask[i % 4];
            }
        }
        Ok(Incoming::Frame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0f,
            payload,
        })
    }

    async fn run(&mut self) -> std::io::Result<()> {
        // A fragmented message being reassembled: (opcode, data so far).
        let mut partial: Option<(u8, Vec<u8>)> = None;
        loop {
            let (fin, opcode, payload) = match self.read_frame().await? {
                Incoming::Eof => return Ok(()),
                Incoming::TooBig => return self.send_close(CLOSE_TOO_BIG).await,
                Incoming::Frame {
                    fin,
                    opcode,
                    payload,
                } => (fin, opcode, payload),
            };
            let message = match opcode {
                OP_CONTINUATION => {
                    let Some((first_opcode, mut data)) = partial.take() else {
                        return self.send_close(CLOSE_PROTOCOL_ERROR).await;
                    };
                    if data.len() + payload.len() > MAX_INCOMING {
                        return self.send_close(CLOSE_TOO_BIG).await;
                    }
                    data.extend_from_slice(&payload);
                    if !fin {
                        partial = Some((first_opcode, data));
                        continue;
                    }
                    (first_opcode, data)
                }
                OP_TEXT | OP_BINARY => {
                    if partial.is_some() {
                        return self.send_close(CLOSE_PROTOCOL_ERROR).await;
                    }
                    if !fin {
                        partial = Some((opcode, payload));
                        continue;
                    }
                    (opcode, payload)
                }
                OP_CLOSE => {
                    let echo = payload.get(..2).unwrap_or_default().to_vec();
                    return self.send_frame(OP_CLOSE, &echo).await;
                }
                OP_PING => {
                    self.send_frame(OP_PONG, &payload).await?;
                    continue;
                }
                OP_PONG => continue,
                _ => return self.send_close(CLOSE_PROTOCOL_ERROR).await,
            };
            let flow = match message {
                (OP_TEXT, data) => match String::from_utf8(data) {
                    Ok(text) => self.on_text(&text).await?,
                    Err(_) => self.notice("invalid: text frame is not UTF-8").await?,
                },
                _ => {
                    self.notice("invalid: binary frames are not supported")
                        .await?
                }
            };
            if let Flow::Drop = flow {
                return Ok(());
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> std::io::Result<Flow> {
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(err) => return self.notice(&format!("invalid: bad JSON: {err}")).await,
        };
        let Some(msg) = value.as_array() else {
            return self.notice("invalid: message is not a JSON array").await;
        };
        match msg.first().and_then(Value::as_str) {
            Some("REQ") => self.on_req(msg).await,
            Some("COUNT") => self.on_count(msg).await,
            Some("EVENT") => {
                let id = msg
                    .get(1)
                    .and_then(|ev| ev.get("id"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let ok = Value::from(vec![
                    Value::from("OK"),
                    Value::from(id),
                    Value::from(false),
                    Value::from("blocked: read-only test relay"),
                ]);
                self.send_text(&ok.to_string()).await?;
                Ok(Flow::Continue)
            }
            Some("CLOSE") => Ok(Flow::Continue),
            Some(other) => {
                let other = truncate_chars(other, 64);
                self.notice(&format!("invalid: unknown message type {other:?}"))
                    .await
            }
            None => {
                self.notice("invalid: first element must be the message type")
                    .await
            }
        }
    }

    async fn on_req(&mut self, msg: &[Value]) -> std::io::Result<Flow> {
        let shared = self.shared.clone();
        let opts = &shared.opts;
        shared.reqs.fetch_add(1, Ordering::SeqCst);
        let (sub, filters) = match parse_sub_and_filters(msg) {
            Ok(parsed) => parsed,
            Err(err) => return self.notice(&format!("invalid: {err}")).await,
        };
        for limit in filters.iter().filter_map(|f| f.limit) {
            shared.max_limit_asked.fetch_max(limit, Ordering::SeqCst);
        }
        if let Some(reason) = &opts.closed_reason {
            let closed = Value::from(vec!["CLOSED", sub.as_str(), reason.as_str()]);
            self.send_text(&closed.to_string()).await?;
            return Ok(Flow::Continue);
        }
        for i in 0..opts.notice_flood {
            let notice = format!("hostile notice {} of {}", i + 1, opts.notice_flood);
            self.notice(&notice).await?;
        }
        let store = shared.snapshot();
        let mut answer = select_events(&store, &filters, opts.clamp);
        if opts.stray_older > 0 {
            let sent: BTreeSet<usize> = answer.iter().copied().collect();
            let mut left_out: Vec<usize> = matching_indices(&store, &filters)
                .into_iter()
                .filter(|i| !sent.contains(i))
                .collect();
            sort_newest_first(&store, &mut left_out);
            let strays = left_out.len().saturating_sub(opts.stray_older);
            answer.extend_from_slice(&left_out[strays..]);
        }
        let hidden = |e: &&RawEvent| {
            opts.hide_after_limit
                .as_deref()
                .is_some_and(|h| e.content.starts_with(h))
        };
        for event in answer
            .into_iter()
            .map(|i| &store[i])
            .filter(|e| !hidden(e))
            .chain(opts.outside_filter.iter())
        {
            if let Flow::Drop = self.send_event(&sub, event).await? {
                return Ok(Flow::Drop);
            }
        }
        if !opts.never_eose {
            let eose = Value::from(vec!["EOSE", sub.as_str()]);
            self.send_text(&eose.to_string()).await?;
        }
        Ok(Flow::Continue)
    }

    async fn on_count(&mut self, msg: &[Value]) -> std::io::Result<Flow> {
        let (sub, filters) = match parse_sub_and_filters(msg) {
            Ok(parsed) => parsed,
            Err(err) => return self.notice(&format!("invalid: {err}")).await,
        };
        let answer = if self.shared.opts.count {
            let store = self.shared.snapshot();
            let n = if self.shared.opts.count_zero {
                0
            } else {
                matching_indices(&store, &filters).len()
            };
            Value::from(vec![
                Value::from("COUNT"),
                Value::from(sub),
                serde_json::json!({ "count": n }),
            ])
        } else {
            Value::from(vec!["CLOSED", sub.as_str(), "unsupported: COUNT"])
        };
        self.send_text(&answer.to_string()).await?;
        Ok(Flow::Continue)
    }

    async fn send_event(&mut self, sub: &str, event: &RawEvent) -> std::io::Result<Flow> {
        let limit = self.shared.opts.disconnect_after;
        if limit.is_some_and(|limit| self.events_on_conn >= limit) {
            return Ok(Flow::Drop);
        }
        let msg = format!("[\"EVENT\",{},{}]", json_str(sub), event.to_json());
        self.send_text(&msg).await?;
        self.events_on_conn += 1;
        self.shared.events_sent.fetch_add(1, Ordering::SeqCst);
        if limit.is_some_and(|limit| self.events_on_conn >= limit) {
            return Ok(Flow::Drop);
        }
        Ok(Flow::Continue)
    }

    async fn notice(&mut self, text: &str) -> std::io::Result<Flow> {
        let notice = Value::from(vec!["NOTICE", text]);
        self.send_text(&notice.to_string()).await?;
        Ok(Flow::Continue)
    }

    /// Send one answer message, preceded on the connection's first answer by
    /// the oversized frame if configured.
    async fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        if !self.greeted {
            self.greeted = true;
            if let Some(size) = self.shared.opts.oversized_frame {
                let padding = size.saturating_sub(r#"["NOTICE",""]"#.len());
                let big = format!("[\"NOTICE\",\"{}\"]", "x".repeat(padding));
                self.send_frame(OP_TEXT, big.as_bytes()).await?;
            }
        }
        self.send_frame(OP_TEXT, text.as_bytes()).await
    }

    async fn send_close(&mut self, code: u16) -> std::io::Result<()> {
        self.send_frame(OP_CLOSE, &code.to_be_bytes()).await
    }

    /// Write one unmasked, unfragmented frame.
    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 10);
        frame.push(0x80 | opcode);
        match payload.len() {
            len @ 0..=125 => frame.push(len as u8),
            len @ 126..=0xffff => {
                frame.push(126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(payload);
        match self.shared.opts.drip {
            None => self.stream.write_all(&frame).await,
            Some(delay) => {
                for byte in frame {
                    self.stream.write_all(&[byte]).await?;
                    tokio::time::sleep(delay).await;
                }
                Ok(())
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

// ---------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Filter {
    ids: Option<Vec<String>>,
    authors: Option<Vec<String>>,
    kinds: Option<Vec<u64>>,
    since: Option<u64>,
    until: Option<u64>,
    limit: Option<u64>,
    /// `#x` filters: (tag letter, accepted values).
    tags: Vec<(String, Vec<String>)>,
}

impl Filter {
    fn parse(value: &Value) -> Result<Filter, String> {
        let Some(object) = value.as_object() else {
            return Err("filter is not a JSON object".to_string());
        };
        let mut filter = Filter::default();
        for (key, field) in object {
            match key.as_str() {
                "ids" => filter.ids = Some(strings(key, field)?),
                "authors" => filter.authors = Some(strings(key, field)?),
                "kinds" => {
                    let kinds = field
                        .as_array()
                        .and_then(|kinds| kinds.iter().map(Value::as_u64).collect());
                    filter.kinds =
                        Some(kinds.ok_or("\"kinds\" must be an array of non-negative integers")?);
                }
                "since" => filter.since = Some(number(key, field)?),
                "until" => filter.until = Some(number(key, field)?),
                "limit" => filter.limit = Some(number(key, field)?),
                tag if tag.len() == 2
                    && tag.starts_with('#')
                    && tag.as_bytes()[1].is_ascii_alphabetic() =>
                {
                    filter
                        .tags
                        .push((tag[1..].to_string(), strings(key, field)?));
                }
                _ => {} // unknown fields are ignored
            }
        }
        Ok(filter)
    }

    fn matches(&self, event: &RawEvent) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.contains(&event.id))
            && self
                .authors
                .as_ref()
                .is_none_or(|authors| authors.contains(&event.pubkey))
            && self
                .kinds
                .as_ref()
                .is_none_or(|kinds| kinds.contains(&u64::from(event.kind)))
            && self.since.is_none_or(|since| event.created_at >= since)
            && self.until.is_none_or(|until| event.created_at <= until)
            && self.tags.iter().all(|(letter, values)| {
                event
                    .tags
                    .iter()
                    .any(|tag| tag.len() >= 2 && tag[0] == *letter && values.contains(&tag[1]))
            })
    }
}

fn strings(key: &str, field: &Value) -> Result<Vec<String>, String> {
    field
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .ok_or_else(|| format!("{key:?} must be an array of strings"))
}

fn number(key: &str, field: &Value) -> Result<u64, String> {
    field
        .as_u64()
        .ok_or_else(|| format!("{key:?} must be a non-negative integer"))
}

fn parse_sub_and_filters(msg: &[Value]) -> Result<(String, Vec<Filter>), String> {
    let sub = msg
        .get(1)
        .and_then(Value::as_str)
        .ok_or("subscription id must be a string")?;
    let filters = msg[2..]
        .iter()
        .map(Filter::parse)
        .collect::<Result<_, _>>()?;
    Ok((sub.to_string(), filters))
}

/// Newest first, ties by lowest id.
fn sort_newest_first(store: &[RawEvent], indices: &mut [usize]) {
    indices.sort_by(|&a, &b| {
        let (a, b) = (&store[a], &store[b]);
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// Store indices matched by any filter (no limits applied).
fn matching_indices(store: &[RawEvent], filters: &[Filter]) -> BTreeSet<usize> {
    (0..store.len())
        .filter(|&i| filters.iter().any(|filter| filter.matches(&store[i])))
        .collect()
}

/// The REQ answer: each filter's matches truncated to min(limit, clamp), the
/// union sorted newest first and truncated to clamp.
fn select_events(store: &[RawEvent], filters: &[Filter], clamp: usize) -> Vec<usize> {
    let mut union = BTreeSet::new();
    for filter in filters {
        let mut matched: Vec<usize> = (0..store.len())
            .filter(|&i| filter.matches(&store[i]))
            .collect();
        sort_newest_first(store, &mut matched);
        let limit = filter
            .limit
            .map_or(clamp, |limit| usize::try_from(limit).unwrap_or(usize::MAX))
            .min(clamp);
        union.extend(matched.into_iter().take(limit));
    }
    let mut answer: Vec<usize> = union.into_iter().collect();
    sort_newest_first(store, &mut answer);
    answer.truncate(clamp);
    answer
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
// Some imports serve only tests that a bench build (cfg(test), no harness) does not use.
#[allow(unused_imports)]
#[path = "hostile_selftest.rs"]
mod tests;
