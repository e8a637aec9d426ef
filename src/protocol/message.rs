//! Relay <-> client messages (NIP-01, NIP-42, NIP-45, NIP-77).
//!
//! Relay messages are parsed lazily: an `EVENT` keeps its event as borrowed raw JSON so the
//! synchronizer can look the id up before paying for anything else. Subscription ids from a relay
//! are capped (64 chars, NIP-01); a message that does not fit a known shape is an error, never a
//! panic.

use serde_json::value::RawValue;
use serde_json::Value;

use super::filter::Filter;
use super::ProtocolError;

/// Longest subscription id accepted or sent (NIP-01).
pub const MAX_SUBID_LEN: usize = 64;

/// A message from a relay.
#[derive(Debug)]
pub enum RelayMessage<'a> {
    Event {
        sub: String,
        event: &'a RawValue,
    },
    Eose {
        sub: String,
    },
    Ok {
        id: String,
        accepted: bool,
        message: String,
    },
    Closed {
        sub: String,
        message: String,
    },
    Notice {
        message: String,
    },
    Auth {
        challenge: String,
    },
    Count {
        sub: String,
        count: u64,
        approximate: bool,
    },
    NegMsg {
        sub: String,
        message: String,
    },
    NegErr {
        sub: String,
        reason: String,
    },
}

/// Parse one text frame from a relay.
pub fn parse_relay_message(text: &str) -> Result<RelayMessage<'_>, ProtocolError> {
    let parts: Vec<&RawValue> = serde_json::from_str(text)
        .map_err(|e| ProtocolError::Malformed(format!("not a JSON array: {e}")))?;
    let kind = string_at(&parts, 0)?;
    let msg = match kind.as_str() {
        "EVENT" => RelayMessage::Event {
            sub: sub_at(&parts, 1)?,
            event: parts.get(2).ok_or_else(|| missing("EVENT", 2))?,
        },
        "EOSE" => RelayMessage::Eose {
            sub: sub_at(&parts, 1)?,
        },
        "OK" => RelayMessage::Ok {
            id: string_at(&parts, 1)?,
            accepted: serde_json::from_str(parts.get(2).ok_or_else(|| missing("OK", 2))?.get())
                .map_err(|_| {
                    ProtocolError::Malformed("OK: third element is not a boolean".into())
                })?,
            message: reason_at(&parts, 3),
        },
        "CLOSED" => RelayMessage::Closed {
            sub: sub_at(&parts, 1)?,
            message: reason_at(&parts, 2),
        },
        "NOTICE" => RelayMessage::Notice {
            message: super::text::inert(&string_at(&parts, 1)?, super::text::MAX_REASON_CHARS),
        },
        "AUTH" => RelayMessage::Auth {
            challenge: string_at(&parts, 1)?,
        },
        "COUNT" => {
            let body: Value =
                serde_json::from_str(parts.get(2).ok_or_else(|| missing("COUNT", 2))?.get())
                    .map_err(|e| ProtocolError::Malformed(format!("COUNT: {e}")))?;
            RelayMessage::Count {
                sub: sub_at(&parts, 1)?,
                count: body
                    .get("count")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| ProtocolError::Malformed("COUNT without a count".into()))?,
                approximate: body
                    .get("approximate")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            }
        }
        "NEG-MSG" => RelayMessage::NegMsg {
            sub: sub_at(&parts, 1)?,
            message: string_at(&parts, 2)?,
        },
        "NEG-ERR" => RelayMessage::NegErr {
            sub: sub_at(&parts, 1)?,
            reason: reason_at(&parts, 2),
        },
        other => {
            return Err(ProtocolError::Malformed(format!(
                "unknown message type {:?}",
                truncate(other, 32)
            )))
        }
    };
    Ok(msg)
}

fn missing(kind: &str, idx: usize) -> ProtocolError {
    ProtocolError::Malformed(format!("{kind}: element {idx} missing"))
}

fn string_at(parts: &[&RawValue], idx: usize) -> Result<String, ProtocolError> {
    let raw = parts
        .get(idx)
        .ok_or_else(|| ProtocolError::Malformed(format!("element {idx} missing")))?;
    serde_json::from_str(raw.get())
        .map_err(|_| ProtocolError::Malformed(format!("element {idx} is not a string")))
}

fn opt_string_at(parts: &[&RawValue], idx: usize) -> String {
    parts
        .get(idx)
        .and_then(|r| serde_json::from_str::<String>(r.get()).ok())
        .unwrap_or_default()
}

/// A human-readable reason (OK, CLOSED, NEG-ERR): optional, capped and escaped at parse time
/// (`text::inert`), so no caller can log a relay's 1 MiB of newlines. The machine-readable
/// prefix (`reason_prefix`) survives: it is at the start.
fn reason_at(parts: &[&RawValue], idx: usize) -> String {
    super::text::inert(&opt_string_at(parts, idx), super::text::MAX_REASON_CHARS)
}

fn sub_at(parts: &[&RawValue], idx: usize) -> Result<String, ProtocolError> {
    let sub = string_at(parts, idx)?;
    if sub.len() > MAX_SUBID_LEN {
        return Err(ProtocolError::TooLarge("subscription id"));
    }
    Ok(sub)
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Is `text` an EVENT frame for subscription `sub`? `prefix` is `["EVENT","<sub>",`: the
/// compact spelling is checked without parsing, any other spelling by a full parse.
pub fn is_event_for(text: &str, prefix: &str, sub: &str) -> bool {
    text.starts_with(prefix)
        || matches!(parse_relay_message(text), Ok(RelayMessage::Event { sub: ref s, .. }) if s == sub)
}

/// The machine-readable prefix of an OK/CLOSED/NOTICE message (`rate-limited`, `auth-required`,
/// `duplicate`, `pow`, `blocked`, `invalid`, `restricted`, `mute`, `error`, ...), if any.
pub fn reason_prefix(message: &str) -> Option<&str> {
    let (prefix, _) = message.split_once(':')?;
    let ok = !prefix.is_empty()
        && prefix.len() <= 32
        && prefix.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
    ok.then_some(prefix)
}

/// A message to a relay.
#[derive(Debug, Clone)]
pub enum ClientMessage {
    /// `["EVENT", <event json>]`; the event is already serialized.
    Event(String),
    Req {
        sub: String,
        filters: Vec<Filter>,
    },
    Close {
        sub: String,
    },
    /// `["AUTH", <signed kind 22242 event json>]` (NIP-42).
    Auth(String),
    Count {
        sub: String,
        filters: Vec<Filter>,
    },
    NegOpen {
        sub: String,
        filter: Filter,
        message: String,
    },
    NegMsg {
        sub: String,
        message: String,
    },
    NegClose {
        sub: String,
    },
}

impl ClientMessage {
    /// The JSON text to send.
    pub fn to_json(&self) -> String {
        fn with_filters(kind: &str, sub: &str, filters: &[Filter]) -> String {
            let mut out = format!("[\"{kind}\",{}", Value::from(sub));
            for f in filters {
                out.push(',');
                out.push_str(&f.to_json());
            }
            out.push(']');
            out
        }
        match self {
            ClientMessage::Event(ev) => format!("[\"EVENT\",{ev}]"),
            ClientMessage::Req { sub, filters } => with_filters("REQ", sub, filters),
            ClientMessage::Close { sub } => format!("[\"CLOSE\",{}]", Value::from(sub.as_str())),
            ClientMessage::Auth(ev) => format!("[\"AUTH\",{ev}]"),
            ClientMessage::Count { sub, filters } => with_filters("COUNT", sub, filters),
            ClientMessage::NegOpen {
                sub,
                filter,
                message,
            } => format!(
                "[\"NEG-OPEN\",{},{},{}]",
                Value::from(sub.as_str()),
                filter.to_json(),
                Value::from(message.as_str())
            ),
            ClientMessage::NegMsg { sub, message } => format!(
                "[\"NEG-MSG\",{},{}]",
                Value::from(sub.as_str()),
                Value::from(message.as_str())
            ),
            ClientMessage::NegClose { sub } => {
                format!("[\"NEG-CLOSE\",{}]", Value::from(sub.as_str()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_reasons_are_capped_and_escaped_at_parse_time() {
        let flood = format!("blocked: {}", "line\nINFO bigbrotr: fake\n".repeat(20_000));
        let text = serde_json::json!(["CLOSED", "s", flood]).to_string();
        match parse_relay_message(&text).unwrap() {
            RelayMessage::Closed { message, .. } => {
                assert!(!message.contains('\n'), "one line whatever the relay sent");
                assert!(message.len() < 400, "capped: {} bytes", message.len());
                assert_eq!(reason_prefix(&message), Some("blocked"));
            }
            other => panic!("{other:?}"),
        }
        let text = serde_json::json!(["NOTICE", "a\u{1b}[2Jb"]).to_string();
        assert!(matches!(parse_relay_message(&text).unwrap(),
            RelayMessage::Notice { message } if message == "a\\u{1b}[2Jb"));
    }

    #[test]
    fn parses_every_relay_message() {
        match parse_relay_message(r#"["EVENT","s",{"id":"x"}]"#).unwrap() {
            RelayMessage::Event { sub, event } => {
                assert_eq!(sub, "s");
                assert_eq!(event.get(), r#"{"id":"x"}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(parse_relay_message(r#"["EOSE","s"]"#).unwrap(), RelayMessage::Eose { sub } if sub == "s")
        );
        assert!(
            matches!(parse_relay_message(r#"["OK","ab",false,"duplicate: have it"]"#).unwrap(),
            RelayMessage::Ok { id, accepted: false, message } if id == "ab" && message == "duplicate: have it")
        );
        assert!(
            matches!(parse_relay_message(r#"["CLOSED","s","rate-limited: slow"]"#).unwrap(),
            RelayMessage::Closed { message, .. } if message == "rate-limited: slow")
        );
        assert!(
            matches!(parse_relay_message(r#"["NOTICE","hi"]"#).unwrap(), RelayMessage::Notice { message } if message == "hi")
        );
        assert!(
            matches!(parse_relay_message(r#"["AUTH","chal"]"#).unwrap(), RelayMessage::Auth { challenge } if challenge == "chal")
        );
        assert!(matches!(
            parse_relay_message(r#"["COUNT","s",{"count":42,"approximate":true}]"#).unwrap(),
            RelayMessage::Count {
                count: 42,
                approximate: true,
                ..
            }
        ));
        assert!(
            matches!(parse_relay_message(r#"["NEG-MSG","s","6100"]"#).unwrap(), RelayMessage::NegMsg { message, .. } if message == "6100")
        );
        assert!(
            matches!(parse_relay_message(r#"["NEG-ERR","s","blocked: no"]"#).unwrap(), RelayMessage::NegErr { reason, .. } if reason == "blocked: no")
        );
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        for bad in [
            "",
            "{}",
            "[]",
            "[1]",
            r#"["EVENT"]"#,
            r#"["OK","id","yes"]"#,
            r#"["COUNT","s",{}]"#,
            r#"["WHAT","s"]"#,
            "[\"EOSE\",\"",
            "null",
        ] {
            assert!(parse_relay_message(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!(r#"["EOSE","{}"]"#, "a".repeat(65));
        assert_eq!(
            parse_relay_message(&long).unwrap_err(),
            ProtocolError::TooLarge("subscription id")
        );
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            reason_prefix("rate-limited: slow down"),
            Some("rate-limited")
        );
        assert_eq!(
            reason_prefix("auth-required: who are you"),
            Some("auth-required")
        );
        assert_eq!(reason_prefix("Just a message: no prefix"), None);
        assert_eq!(reason_prefix("no colon"), None);
    }

    #[test]
    fn client_messages_serialize() {
        let f = Filter {
            kinds: vec![1],
            limit: Some(10),
            ..Filter::default()
        };
        let req = ClientMessage::Req {
            sub: "s\"1".into(),
            filters: vec![f],
        }
        .to_json();
        let v: Value = serde_json::from_str(&req).unwrap();
        assert_eq!(v[0], "REQ");
        assert_eq!(v[1], "s\"1");
        assert_eq!(v[2]["kinds"][0], 1);
        assert_eq!(v[2]["limit"], 10);
        let close: Value =
            serde_json::from_str(&ClientMessage::Close { sub: "x".into() }.to_json()).unwrap();
        assert_eq!(close, serde_json::json!(["CLOSE", "x"]));
    }
}
