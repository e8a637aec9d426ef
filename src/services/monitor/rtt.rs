//! NIP-66 round trips: open (websocket handshake), read (`REQ` limit 1 until EVENT or EOSE),
//! write (publish a signed test event, wait for OK, read it back). Every wait has a deadline.
//! Policy answers (`auth-required:`, `pow:`, `payment-required:`, `restricted:`, `blocked:` ...)
//! are recorded as facts about the relay, not as failures.
//!
//! The write test publishes an addressable kind 30078 event (NIP-78, `d` =
//! `bigbrotr-monitor-write-test`): a relay keeps at most one per monitor key, so monitoring
//! never piles test events up.

use std::time::{Duration, Instant};

use nostr::{EventBuilder, JsonUtil, Keys, Kind, Tag};
use serde::Serialize;

use crate::net::dialer::Dialer;
use crate::net::ws::{WsConnection, WsError};
use crate::protocol::message::{parse_relay_message, reason_prefix, ClientMessage, RelayMessage};
use crate::protocol::url::RelayUrl;
use crate::protocol::Filter;

pub const WRITE_TEST_KIND: u16 = 30078;
pub const WRITE_TEST_D: &str = "bigbrotr-monitor-write-test";

/// What the round trips found. `None` RTT: that step did not succeed (see `errors`/policies).
#[derive(Debug, Default, Clone, Serialize)]
pub struct RttReport {
    pub url: String,
    pub open_ms: Option<u64>,
    pub read_ms: Option<u64>,
    pub write_ms: Option<u64>,
    /// The relay's policy answer to the read (e.g. `auth-required`), a fact not a failure.
    pub read_policy: Option<String>,
    /// The relay's policy answer to the write (e.g. `pow`, `restricted`, `blocked`).
    pub write_policy: Option<String>,
    /// The accepted test event was served back by id.
    pub write_read_back: Option<bool>,
    /// Failures: unreachable, timeouts, protocol errors, each prefixed by the step.
    pub errors: Vec<String>,
}

/// Run open, read and write against `url`. Each step is bounded by `timeout` and by what is
/// left until `deadline` (the whole check's bound); a step cut short by the deadline is an
/// error of that step, and what the earlier steps found is kept.
pub async fn round_trips(
    dialer: &Dialer,
    url: &RelayUrl,
    keys: Option<&Keys>,
    max_message_bytes: usize,
    timeout: Duration,
    deadline: Instant,
) -> RttReport {
    let mut r = RttReport {
        url: url.to_string(),
        ..Default::default()
    };
    let step = || timeout.min(deadline.saturating_duration_since(Instant::now()));
    let t = Instant::now();
    let open_limit = step();
    let opened = tokio::time::timeout(
        open_limit,
        WsConnection::connect(dialer, url, max_message_bytes),
    )
    .await;
    let mut ws = match opened {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            r.errors.push(format!("open: {e}"));
            return r;
        }
        Err(_) => {
            r.errors.push(format!(
                "open: not done within {} ms",
                open_limit.as_millis()
            ));
            return r;
        }
    };
    r.open_ms = Some(ms(t));

    let t = Instant::now();
    let read = Filter {
        limit: Some(1),
        ..Default::default()
    };
    match request(&mut ws, "rtt-read", read, None, step()).await {
        Ok(Answer::Served(_, at)) => r.read_ms = Some(at.duration_since(t).as_millis() as u64),
        Ok(Answer::Closed(reason)) => r.read_policy = Some(policy(&reason)),
        Err(e) => r.errors.push(format!("read: {e}")),
    }

    let Some(keys) = keys else {
        // monitor.write_test = false: no write check.
        ws.close().await;
        return r;
    };
    let event = EventBuilder::new(Kind::from(WRITE_TEST_KIND), "bigbrotr monitor write test")
        .tags([Tag::identifier(WRITE_TEST_D)])
        .sign_with_keys(keys);
    let event = match event {
        Ok(ev) => ev,
        Err(e) => {
            r.errors
                .push(format!("write: cannot sign the test event: {e}"));
            ws.close().await;
            return r;
        }
    };
    let id = event.id.to_hex();
    let t = Instant::now();
    match publish(&mut ws, event.as_json(), &id, step()).await {
        Ok((true, _)) => {
            r.write_ms = Some(ms(t));
            let back = Filter {
                ids: vec![id.clone()],
                ..Default::default()
            };
            match request(&mut ws, "rtt-back", back, Some(&id), step()).await {
                Ok(Answer::Served(n, _)) => r.write_read_back = Some(n > 0),
                Ok(Answer::Closed(reason)) => {
                    r.write_read_back = Some(false);
                    r.errors
                        .push(format!("read back: refused: {}", policy(&reason)));
                }
                Err(e) => r.errors.push(format!("read back: {e}")),
            }
        }
        Ok((false, reason)) => r.write_policy = Some(policy(&reason)),
        Err(e) => r.errors.push(format!("write: {e}")),
    }
    ws.close().await;
    r
}

fn ms(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

/// The machine-readable prefix of a refusal, else the whole (capped) message.
pub(crate) fn policy(message: &str) -> String {
    match reason_prefix(message) {
        Some(p) => p.to_string(),
        None => message.chars().take(200).collect(),
    }
}

enum Answer {
    /// EOSE arrived (when); how many (matching) events came before it.
    Served(u64, Instant),
    /// CLOSED with this message.
    Closed(String),
}

/// REQ `filter` on `sub` until EOSE or CLOSED. With `want_id`, only events with that id count
/// (a relay cannot fake a read-back with another event).
async fn request(
    ws: &mut WsConnection,
    sub: &str,
    filter: Filter,
    want_id: Option<&str>,
    timeout: Duration,
) -> Result<Answer, String> {
    ws.send(&ClientMessage::Req {
        sub: sub.to_string(),
        filters: vec![filter],
    })
    .await
    .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let mut events = 0;
    // The read round trip ends at the first EVENT or at EOSE, whichever comes first.
    let mut first: Option<Instant> = None;
    let no_eose = || format!("no EOSE within {} ms", timeout.as_millis());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = if left.is_zero() {
            Err(no_eose())
        } else {
            ws.recv(left).await.map_err(|e| match e {
                WsError::Timeout(_) => no_eose(),
                e => e.to_string(),
            })
        };
        let text = match (got, first) {
            (Ok(t), _) => t,
            // Events came but EOSE did not: the relay did answer.
            (Err(_), Some(at)) if events > 0 => return Ok(Answer::Served(events, at)),
            (Err(e), _) => return Err(e),
        };
        match parse_relay_message(&text) {
            Ok(RelayMessage::Event { sub: s, event }) if s == sub => {
                #[derive(serde::Deserialize)]
                struct Id<'a> {
                    #[serde(borrow)]
                    id: &'a str,
                }
                let matches = match want_id {
                    None => true,
                    Some(want) => {
                        serde_json::from_str::<Id<'_>>(event.get()).is_ok_and(|e| e.id == want)
                    }
                };
                events += u64::from(matches);
                if matches && first.is_none() {
                    first = Some(Instant::now());
                }
            }
            Ok(RelayMessage::Eose { sub: s }) if s == sub => {
                let at = first.unwrap_or_else(Instant::now);
                let _ = ws
                    .send(&ClientMessage::Close {
                        sub: sub.to_string(),
                    })
                    .await;
                return Ok(Answer::Served(events, at));
            }
            Ok(RelayMessage::Closed { sub: s, message }) if s == sub => {
                return Ok(Answer::Closed(message))
            }
            _ => {} // NOTICE, AUTH challenges, other subscriptions: not this answer
        }
    }
}

/// Send EVENT and wait for its OK: (accepted, message).
pub(crate) async fn publish(
    ws: &mut WsConnection,
    event_json: String,
    id: &str,
    timeout: Duration,
) -> Result<(bool, String), String> {
    ws.send(&ClientMessage::Event(event_json))
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no OK within {} s", timeout.as_secs()));
        }
        let text = ws.recv(left).await.map_err(|e| match e {
            WsError::Timeout(_) => format!("no OK within {} s", timeout.as_secs()),
            e => e.to_string(),
        })?;
        if let Ok(RelayMessage::Ok {
            id: got,
            accepted,
            message,
        }) = parse_relay_message(&text)
        {
            if got == id {
                return Ok((accepted, message));
            }
        }
    }
}
