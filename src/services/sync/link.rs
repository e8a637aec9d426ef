//! One websocket session with a relay, speaking just enough protocol for synchronization:
//! `REQ` until `EOSE`, `COUNT` (NIP-45), negentropy (NIP-77), and NIP-42 `AUTH` with the node key.
//!
//! Every wait has a deadline (`sync.page_timeout_secs` for a whole page, so a relay that drips a
//! byte a second or never sends EOSE costs one timeout, not a stuck slot). Messages for other
//! subscriptions are dropped; NOTICE floods are counted, not logged one by one. Event frames are
//! not parsed here: they are handed raw to the ingest step, which parses each exactly once.

use std::time::Duration;

use nostr::{EventBuilder, Keys};

use crate::net::dialer::Dialer;
use crate::net::ws::{WsConnection, WsError};
use crate::protocol::message::{parse_relay_message, reason_prefix, RelayMessage};
use crate::protocol::url::RelayUrl;
use crate::protocol::{ClientMessage, Filter};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Ws(#[from] WsError),
    #[error("relay is rate-limiting us: {0}")]
    RateLimited(String),
    #[error("relay requires authentication: {0}")]
    AuthRequired(String),
    #[error("relay closed the subscription: {0}")]
    Closed(String),
    #[error("page did not finish (no EOSE) within {0:?}")]
    PageTimeout(Duration),
    #[error("page exceeded {0} bytes before EOSE")]
    PageTooLarge(usize, usize),
    /// The node-wide page memory was taken by other relays' pages; the page was let go.
    #[error("page memory busy")]
    Busy,
}

/// Most ids one negentropy reconciliation may ask for; beyond it the relay is treated as not
/// offering NIP-77 for this window (memory bound against a relay that keeps answering).
const MAX_NEGENTROPY_NEED: usize = 100_000;

/// How a relay met a COUNT or NEG-OPEN. Only a message that answers the request itself is a
/// verdict on the feature; silence (or a NOTICE about something else) says nothing lasting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    Answered(T),
    /// CLOSED or NEG-ERR for this subscription, or a NOTICE naming the verb.
    Refused,
    /// No answer before the deadline.
    Silent,
}

/// A NOTICE that names `verb` (e.g. "unknown command COUNT") answers a request with that verb.
fn notice_names(message: &str, verb: &str) -> bool {
    message.to_ascii_uppercase().contains(verb)
}

/// The raw answer to one REQ.
#[derive(Debug, Default)]
pub struct RawPage {
    /// Full text frames of `["EVENT", sub, ...]` messages, unparsed.
    pub frames: Vec<String>,
    /// The node-wide buffer budget these frames hold (released when the page is dropped).
    pub permits: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Take `bytes` from the node-wide buffer budget (one permit per byte), waiting for room.
pub async fn take_budget(
    budget: &std::sync::Arc<tokio::sync::Semaphore>,
    bytes: usize,
) -> Result<tokio::sync::OwnedSemaphorePermit, LinkError> {
    let n = u32::try_from(bytes.max(1)).unwrap_or(u32::MAX);
    budget
        .clone()
        .acquire_many_owned(n)
        .await
        .map_err(|_| LinkError::Closed("shutting down".into()))
}

/// How long a page that already holds part of the buffer budget waits for more before it lets
/// go of all of it (`LinkError::Busy`): pages that each hold some and wait for more would
/// otherwise wait for each other until their timeouts.
const BUDGET_WAIT_WHILE_HOLDING: Duration = Duration::from_millis(500);

pub struct Link {
    conn: WsConnection,
    url: RelayUrl,
    keys: Option<Keys>,
    page_timeout: Duration,
    /// Bytes of event frames one page may buffer (memory bound: a relay can send up to
    /// `limit` frames of `max_message_bytes` each); the session lowers its limit when hit.
    max_page_bytes: usize,
    /// The node-wide budget of buffered event bytes (KiB permits), see `SyncContext`.
    budget: std::sync::Arc<tokio::sync::Semaphore>,
    next_sub: u64,
    /// NOTICE messages seen on this link (a flood is a fact about the relay, not log spam).
    pub notices: u64,
    /// Last AUTH challenge received and whether we answered it successfully.
    challenge: Option<String>,
    authed: bool,
}

impl Link {
    pub async fn connect(
        dialer: &Dialer,
        url: &RelayUrl,
        max_message_bytes: usize,
        keys: Option<Keys>,
        page_timeout: Duration,
        max_page_bytes: usize,
        budget: std::sync::Arc<tokio::sync::Semaphore>,
    ) -> Result<Link, LinkError> {
        let conn = WsConnection::connect(dialer, url, max_message_bytes).await?;
        Ok(Link {
            conn,
            url: url.clone(),
            keys,
            page_timeout,
            max_page_bytes,
            budget,
            next_sub: 0,
            notices: 0,
            challenge: None,
            authed: false,
        })
    }

    fn sub_id(&mut self, kind: &str) -> String {
        self.next_sub += 1;
        format!("bb-{kind}-{}", self.next_sub)
    }

    /// Handle a message that is not for the subscription being awaited.
    async fn side_message(&mut self, msg: RelayMessage<'_>) -> Result<(), LinkError> {
        match msg {
            RelayMessage::Notice { .. } => self.notices += 1,
            RelayMessage::Auth { challenge } => {
                self.challenge = Some(challenge);
                self.authed = false;
                self.authenticate().await?;
            }
            RelayMessage::Ok { accepted, .. } if accepted && self.challenge.is_some() => {
                self.authed = true;
            }
            _ => {}
        }
        Ok(())
    }

    /// Answer the last challenge with a signed kind 22242 (NIP-42), if we have a key.
    async fn authenticate(&mut self) -> Result<bool, LinkError> {
        let (Some(keys), Some(challenge)) = (&self.keys, &self.challenge) else {
            return Ok(false);
        };
        let Ok(relay) = nostr::RelayUrl::parse(self.url.as_str()) else {
            return Ok(false);
        };
        let Ok(ev) = EventBuilder::auth(challenge.clone(), relay).sign_with_keys(keys) else {
            return Ok(false);
        };
        use nostr::JsonUtil;
        self.conn.send(&ClientMessage::Auth(ev.as_json())).await?;
        Ok(true)
    }

    /// Wait for the OK to our AUTH (bounded), so a retried REQ is not refused again.
    async fn await_auth_ok(&mut self, deadline: tokio::time::Instant) -> Result<(), LinkError> {
        while !self.authed {
            let Some(text) = self.next_before(deadline).await? else {
                return Err(LinkError::AuthRequired(
                    "no OK to our AUTH before the deadline".into(),
                ));
            };
            if let Ok(msg) = parse_relay_message(&text) {
                if let RelayMessage::Ok {
                    accepted, message, ..
                } = msg
                {
                    if !accepted {
                        return Err(LinkError::AuthRequired(message));
                    }
                    self.authed = true;
                } else {
                    self.side_message(msg).await?;
                }
            }
        }
        Ok(())
    }

    /// Send `REQ` and collect event frames until `EOSE`.
    pub async fn request(&mut self, filters: Vec<Filter>) -> Result<RawPage, LinkError> {
        self.request_with(filters, None).await
    }

    /// `request`, with the page's memory taken up front (`reserved`, a whole page's worth)
    /// instead of frame by frame; what the page did not use goes back at EOSE. For a page
    /// that lost its memory to others once (`LinkError::Busy`): it cannot lose it again.
    pub async fn request_with(
        &mut self,
        filters: Vec<Filter>,
        mut reserved: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<RawPage, LinkError> {
        let mut retried_auth = false;
        loop {
            let sub = self.sub_id("req");
            self.conn
                .send(&ClientMessage::Req {
                    sub: sub.clone(),
                    filters: filters.clone(),
                })
                .await?;
            let deadline = tokio::time::Instant::now() + self.page_timeout;
            let mut page = RawPage::default();
            let mut bytes = 0usize;
            let event_prefix = format!("[\"EVENT\",\"{sub}\",");
            loop {
                let Some(text) = self.next_before(deadline).await? else {
                    return Err(LinkError::PageTimeout(self.page_timeout));
                };
                // Fast path: our events are the bulk of the traffic and are parsed once, by
                // ingest. Every other frame is parsed here, once; an EVENT for our subscription
                // in another spelling falls through to the push below.
                if !text.starts_with(&event_prefix) {
                    let Ok(msg) = parse_relay_message(&text) else {
                        continue;
                    };
                    match msg {
                        RelayMessage::Event { sub: s, .. } if s == sub => {}
                        RelayMessage::Eose { sub: s } if s == sub => {
                            let _ = self.conn.send(&ClientMessage::Close { sub }).await;
                            if let Some(mut r) = reserved.take() {
                                // Keep what the frames use; the rest goes back now.
                                page.permits = r.split(bytes.min(r.num_permits()));
                            }
                            return Ok(page);
                        }
                        RelayMessage::Closed { sub: s, message } if s == sub => {
                            match reason_prefix(&message) {
                                Some("auth-required") if !retried_auth && self.keys.is_some() => {
                                    retried_auth = true;
                                    if !self.authed {
                                        if self.challenge.is_none() {
                                            return Err(LinkError::AuthRequired(message));
                                        }
                                        self.authenticate().await?;
                                        self.await_auth_ok(deadline).await?;
                                    }
                                    break; // re-send the REQ
                                }
                                Some("auth-required") => {
                                    return Err(LinkError::AuthRequired(message))
                                }
                                Some("rate-limited") => {
                                    return Err(LinkError::RateLimited(message))
                                }
                                _ => return Err(LinkError::Closed(message)),
                            }
                        }
                        other => {
                            self.side_message(other).await?;
                            continue;
                        }
                    }
                }
                bytes += text.len();
                if bytes > self.max_page_bytes {
                    let _ = self.conn.send(&ClientMessage::Close { sub }).await;
                    return Err(LinkError::PageTooLarge(
                        self.max_page_bytes,
                        page.frames.len(),
                    ));
                }
                // Memory is budgeted by what is buffered: this frame's bytes, taken now (a
                // wait here is back-pressure on this relay only, bounded by the deadline).
                if reserved.is_some() {
                    page.frames.push(text);
                    continue;
                }
                let wait = if page.permits.is_some() {
                    deadline.min(tokio::time::Instant::now() + BUDGET_WAIT_WHILE_HOLDING)
                } else {
                    deadline
                };
                let more = match tokio::time::timeout_at(
                    wait,
                    take_budget(&self.budget, text.len()),
                )
                .await
                {
                    Ok(permit) => permit?,
                    Err(_) if page.permits.is_some() && wait < deadline => {
                        // Let go of what this page holds (dropped with it) and ask again later.
                        let _ = self.conn.send(&ClientMessage::Close { sub }).await;
                        return Err(LinkError::Busy);
                    }
                    Err(_) => return Err(LinkError::PageTimeout(self.page_timeout)),
                };
                match &mut page.permits {
                    Some(p) => p.merge(more),
                    None => page.permits = Some(more),
                }
                page.frames.push(text);
            }
        }
    }

    /// NIP-45 COUNT: the count and whether the relay marked it approximate.
    pub async fn count(&mut self, filter: Filter) -> Result<Answer<(u64, bool)>, LinkError> {
        let sub = self.sub_id("count");
        self.conn
            .send(&ClientMessage::Count {
                sub: sub.clone(),
                filters: vec![filter],
            })
            .await?;
        let deadline = tokio::time::Instant::now() + self.page_timeout.min(Duration::from_secs(10));
        loop {
            let Some(text) = self.next_before(deadline).await? else {
                return Ok(Answer::Silent);
            };
            let Ok(msg) = parse_relay_message(&text) else {
                continue;
            };
            match msg {
                RelayMessage::Count {
                    sub: s,
                    count,
                    approximate,
                } if s == sub => return Ok(Answer::Answered((count, approximate))),
                RelayMessage::Closed { sub: s, .. } if s == sub => return Ok(Answer::Refused),
                RelayMessage::Notice { message } => {
                    self.notices += 1;
                    if notice_names(&message, "COUNT") {
                        return Ok(Answer::Refused);
                    }
                }
                other => self.side_message(other).await?,
            }
        }
    }

    /// NIP-77: reconcile `items` (what this relay already gave us for `filter`) with the relay's
    /// set. Returns the ids the relay has that we lack. `Refused` also covers answers that
    /// cannot be used (undecodable, or more ids than a saturated second can hold).
    pub async fn negentropy(
        &mut self,
        filter: Filter,
        items: &[(u64, [u8; 32])],
    ) -> Result<Answer<Vec<[u8; 32]>>, LinkError> {
        use negentropy::{Id, Negentropy, NegentropyStorageVector};
        let mut storage = NegentropyStorageVector::with_capacity(items.len());
        for (ts, id) in items {
            if storage.insert(*ts, Id::from_byte_array(*id)).is_err() {
                return Ok(Answer::Silent);
            }
        }
        if storage.seal().is_err() {
            return Ok(Answer::Silent);
        }
        let Ok(mut neg) = Negentropy::owned(storage, 60_000) else {
            return Ok(Answer::Silent);
        };
        let Ok(init) = neg.initiate() else {
            return Ok(Answer::Silent);
        };
        let sub = self.sub_id("neg");
        self.conn
            .send(&ClientMessage::NegOpen {
                sub: sub.clone(),
                filter,
                message: hex::encode(init),
            })
            .await?;
        let deadline = tokio::time::Instant::now() + self.page_timeout;
        let mut need: Vec<[u8; 32]> = Vec::new();
        loop {
            let Some(text) = self.next_before(deadline).await? else {
                return Ok(Answer::Silent);
            };
            let Ok(msg) = parse_relay_message(&text) else {
                continue;
            };
            match msg {
                RelayMessage::NegMsg { sub: s, message } if s == sub => {
                    let Ok(bytes) = hex::decode(&message) else {
                        return Ok(Answer::Refused);
                    };
                    let (mut have_ids, mut need_ids) = (Vec::new(), Vec::new());
                    let next = match neg.reconcile_with_ids(&bytes, &mut have_ids, &mut need_ids) {
                        Ok(n) => n,
                        Err(_) => return Ok(Answer::Refused),
                    };
                    need.extend(need_ids.iter().map(|id| id.to_bytes()));
                    if need.len() > MAX_NEGENTROPY_NEED {
                        // Not a saturated second any more: not what this tool is for.
                        let _ = self.conn.send(&ClientMessage::NegClose { sub }).await;
                        return Ok(Answer::Silent);
                    }
                    match next {
                        Some(m) => {
                            self.conn
                                .send(&ClientMessage::NegMsg {
                                    sub: sub.clone(),
                                    message: hex::encode(m),
                                })
                                .await?
                        }
                        None => {
                            let _ = self.conn.send(&ClientMessage::NegClose { sub }).await;
                            need.sort_unstable();
                            need.dedup();
                            return Ok(Answer::Answered(need));
                        }
                    }
                }
                RelayMessage::NegErr { sub: s, .. } if s == sub => return Ok(Answer::Refused),
                RelayMessage::Closed { sub: s, .. } if s == sub => return Ok(Answer::Refused),
                RelayMessage::Notice { message } => {
                    self.notices += 1;
                    if notice_names(&message, "NEG-") {
                        return Ok(Answer::Refused);
                    }
                }
                other => self.side_message(other).await?,
            }
        }
    }

    /// Receive the next frame (live mode); `Ok(None)` on idle timeout.
    pub async fn recv_live(&mut self, idle: Duration) -> Result<Option<String>, LinkError> {
        self.next_before(tokio::time::Instant::now() + idle).await
    }

    /// The next text frame before `deadline`; `Ok(None)` once it has passed.
    async fn next_before(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<Option<String>, LinkError> {
        // Checked explicitly: a relay that never stops sending (NOTICE floods, other
        // subscriptions) would otherwise keep a ready frame ahead of the timer forever.
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        match self.conn.recv(deadline - now).await {
            Err(WsError::Timeout(_)) => Ok(None),
            other => Ok(Some(other?)),
        }
    }

    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), LinkError> {
        Ok(self.conn.send(msg).await?)
    }

    pub async fn ping(&mut self) -> Result<(), LinkError> {
        Ok(self.conn.ping().await?)
    }

    pub fn new_sub(&mut self, kind: &str) -> String {
        self.sub_id(kind)
    }

    pub async fn handle_side(&mut self, text: &str) -> Result<(), LinkError> {
        if let Ok(msg) = parse_relay_message(text) {
            self.side_message(msg).await?;
        }
        Ok(())
    }

    pub async fn close(self) {
        self.conn.close().await;
    }
}
