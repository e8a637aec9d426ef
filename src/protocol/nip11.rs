//! The NIP-11 relay information document, parsed leniently. Pure: the bytes come from
//! `net::nip11`, which fetches them through the dialer with a size cap and a timeout.
//!
//! Relays publish all kinds of slightly-wrong documents (numbers as strings, wrong types, old
//! fields), and one wrong field must not lose the rest: typed fields hold what could be
//! understood, [`RelayInfo::raw`] keeps the whole document as received. Advertised is not
//! actual (PROTOCOL.md): callers treat these values as hints.

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

/// `Accept` value for NIP-11 requests.
pub const NIP11_ACCEPT: &str = "application/nostr+json";
/// `max_body` when fetching a NIP-11 document (1 MiB).
pub const NIP11_MAX_BYTES: usize = 1024 * 1024;
/// Longest string kept in a typed [`RelayInfo`] field.
const MAX_INFO_STRING_BYTES: usize = 4 * 1024;

/// A relay information document (NIP-11), parsed leniently.
///
/// Typed fields hold what could be understood; [`RelayInfo::raw`] keeps the
/// whole document as received.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RelayInfo {
    /// The whole document as received (always a JSON object), as text: never expanded into a
    /// tree (a 1 MiB array of zeros would take tens of MiB as `serde_json::Value`). It is not
    /// sanitised: strings in it may contain `\u0000` or be arbitrarily long. Serialized as
    /// the JSON it is.
    #[serde(serialize_with = "as_raw_json")]
    pub raw: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub pubkey: Option<String>,
    pub contact: Option<String>,
    pub software: Option<String>,
    pub version: Option<String>,
    /// Sorted, deduplicated.
    pub supported_nips: Vec<u32>,
    /// Defaults (all `None`) when absent or not an object.
    pub limitation: Limitation,
}

/// The `limitation` object of a NIP-11 document.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Limitation {
    pub max_message_length: Option<u64>,
    pub max_subscriptions: Option<u64>,
    pub max_limit: Option<u64>,
    pub max_subid_length: Option<u64>,
    pub max_event_tags: Option<u64>,
    pub max_content_length: Option<u64>,
    pub min_pow_difficulty: Option<u64>,
    pub auth_required: Option<bool>,
    pub payment_required: Option<bool>,
    pub restricted_writes: Option<bool>,
    pub created_at_lower_limit: Option<u64>,
    pub created_at_upper_limit: Option<u64>,
    pub default_limit: Option<u64>,
}

/// Why a body is not a NIP-11 document. These are the only failures of
/// [`parse_relay_info`]: any problem with an individual field is ignored.
#[derive(Debug, thiserror::Error)]
pub enum Nip11Error {
    /// The body is not JSON (after stripping a UTF-8 BOM).
    #[error("NIP-11 document is not valid JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    /// The body is JSON but not an object.
    #[error("NIP-11 document must be a JSON object, got {found}")]
    NotAnObject { found: &'static str },
}

/// Parses a NIP-11 document leniently.
///
/// * A leading UTF-8 BOM is stripped. Only a body that is not JSON, or not a
///   JSON object, is an error.
/// * A field of the wrong type is ignored (`None` / empty / default).
/// * Numeric fields accept non-negative integers, also written as strings
///   (`"500"`) or as integral floats (`500.0`, `"5e2"`); negative, fractional
///   and out-of-range values are ignored.
/// * `supported_nips` keeps entries that are such numbers fitting in `u32`,
///   drops the rest, and is sorted and deduplicated.
/// * Typed string fields have NUL characters removed (they cannot be stored in
///   PostgreSQL text) and are truncated to 4 KiB on a char boundary.
///
/// It does not limit the body size itself: fetch with
/// `max_body = NIP11_MAX_BYTES`.
pub fn parse_relay_info(body: &[u8]) -> Result<RelayInfo, Nip11Error> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let text = std::str::from_utf8(body)
        .map_err(|_| Nip11Error::InvalidJson(serde::de::Error::custom("document is not UTF-8")))?;
    // Only the known fields are kept, as raw slices of the body; every other value is skipped
    // without being built. A known field larger than any honest one is ignored, so no part of
    // a hostile document is ever expanded into a tree much larger than itself.
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = match de.deserialize_any(KnownFields) {
        Ok(Some(f)) => f,
        Ok(None) => {
            let found = serde_json::from_str::<&RawValue>(text)
                .map(|r| raw_type_name(r.get()))
                .unwrap_or("something else");
            return Err(Nip11Error::NotAnObject { found });
        }
        Err(e) => return Err(Nip11Error::InvalidJson(e)),
    };
    de.end()?;
    let value = |key: &str| -> Option<Value> {
        let raw = fields.iter().find(|(k, _)| k == key)?.1;
        (raw.get().len() <= MAX_KNOWN_FIELD_BYTES)
            .then(|| serde_json::from_str(raw.get()).ok())
            .flatten()
    };
    let string = |key: &str| lenient_string(value(key).as_ref());
    Ok(RelayInfo {
        raw: text.to_string(),
        name: string("name"),
        description: string("description"),
        pubkey: string("pubkey"),
        contact: string("contact"),
        software: string("software"),
        version: string("version"),
        supported_nips: lenient_nips(value("supported_nips").as_ref()),
        limitation: value("limitation")
            .as_ref()
            .and_then(Value::as_object)
            .map(parse_limitation)
            .unwrap_or_default(),
    })
}

/// Fields read from a document; larger values are ignored (a `description` of 64 KiB is
/// kept, truncated; a `supported_nips` of a million entries is not).
const MAX_KNOWN_FIELD_BYTES: usize = 64 * 1024;
const KNOWN: [&str; 8] = [
    "name",
    "description",
    "pubkey",
    "contact",
    "software",
    "version",
    "supported_nips",
    "limitation",
];

/// Visits the top level: `None` if it is not an object, else the known fields as raw JSON.
struct KnownFields;

impl<'de> Visitor<'de> for KnownFields {
    type Value = Option<Vec<(String, &'de RawValue)>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if KNOWN.contains(&key.as_str()) && !out.iter().any(|(k, _)| *k == key) {
                out.push((key, map.next_value::<&'de RawValue>()?));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Some(out))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

fn as_raw_json<S: serde::Serializer>(raw: &str, s: S) -> Result<S::Ok, S::Error> {
    match serde_json::from_str::<&RawValue>(raw) {
        Ok(r) => r.serialize(s),
        Err(_) => s.serialize_unit(),
    }
}

/// The JSON type of a raw value, from its first character.
fn raw_type_name(raw: &str) -> &'static str {
    match raw.trim_start().as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

fn parse_limitation(map: &Map<String, Value>) -> Limitation {
    let num = |key: &str| map.get(key).and_then(lenient_u64);
    let flag = |key: &str| map.get(key).and_then(Value::as_bool);
    Limitation {
        max_message_length: num("max_message_length"),
        max_subscriptions: num("max_subscriptions"),
        max_limit: num("max_limit"),
        max_subid_length: num("max_subid_length"),
        max_event_tags: num("max_event_tags"),
        max_content_length: num("max_content_length"),
        min_pow_difficulty: num("min_pow_difficulty"),
        auth_required: flag("auth_required"),
        payment_required: flag("payment_required"),
        restricted_writes: flag("restricted_writes"),
        created_at_lower_limit: num("created_at_lower_limit"),
        created_at_upper_limit: num("created_at_upper_limit"),
        default_limit: num("default_limit"),
    }
}

fn lenient_string(value: Option<&Value>) -> Option<String> {
    let s = value?.as_str()?;
    let cleaned: String = if s.contains('\0') {
        s.chars().filter(|&c| c != '\0').collect()
    } else {
        s.to_owned()
    };
    Some(truncate_on_char_boundary(cleaned, MAX_INFO_STRING_BYTES))
}

fn truncate_on_char_boundary(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn lenient_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => number_to_u64(n),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<u64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(f64_to_u64))
        }
        _ => None,
    }
}

fn number_to_u64(n: &Number) -> Option<u64> {
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    if n.is_i64() {
        return None; // negative
    }
    n.as_f64().and_then(f64_to_u64)
}

fn f64_to_u64(f: f64) -> Option<u64> {
    // 2^64, the first value that does not fit.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < LIMIT {
        Some(f as u64)
    } else {
        None
    }
}

fn lenient_nips(value: Option<&Value>) -> Vec<u32> {
    let Some(Value::Array(items)) = value else {
        return Vec::new();
    };
    let mut nips: Vec<u32> = items
        .iter()
        .filter_map(lenient_u64)
        .filter_map(|n| u32::try_from(n).ok())
        .collect();
    nips.sort_unstable();
    nips.dedup();
    nips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nip11_full_document() {
        let doc = br#"{
            "name": "JellyFish",
            "description": "Stay Immortal!",
            "pubkey": "bf2bee5281149c7c350f5d12ae32f514c7864ff10805182f4178538c2c421007",
            "contact": "hi@dezh.tech",
            "software": "https://github.com/dezh-tech/immortal",
            "version": "immortal - 0.0.9",
            "supported_nips": [1, 9, 11, 13, 17, 40, 42, 59, 62, 70],
            "limitation": {
                "max_message_length": 70000, "max_subscriptions": 350, "max_limit": 5000,
                "max_subid_length": 256, "max_event_tags": 2000, "max_content_length": 70000,
                "min_pow_difficulty": 0, "auth_required": false, "payment_required": true,
                "restricted_writes": true, "created_at_lower_limit": 0,
                "created_at_upper_limit": 2147483647, "default_limit": 500
            },
            "icon": "https://example.com/icon.png"
        }"#;
        let info = parse_relay_info(doc).unwrap();
        assert_eq!(info.name.as_deref(), Some("JellyFish"));
        assert_eq!(info.description.as_deref(), Some("Stay Immortal!"));
        assert_eq!(info.pubkey.as_deref().map(str::len), Some(64));
        assert_eq!(info.contact.as_deref(), Some("hi@dezh.tech"));
        assert_eq!(
            info.software.as_deref(),
            Some("https://github.com/dezh-tech/immortal")
        );
        assert_eq!(info.version.as_deref(), Some("immortal - 0.0.9"));
        assert_eq!(
            info.supported_nips,
            vec![1, 9, 11, 13, 17, 40, 42, 59, 62, 70]
        );
        let l = &info.limitation;
        assert_eq!(l.max_message_length, Some(70000));
        assert_eq!(l.max_subscriptions, Some(350));
        assert_eq!(l.max_limit, Some(5000));
        assert_eq!(l.max_subid_length, Some(256));
        assert_eq!(l.max_event_tags, Some(2000));
        assert_eq!(l.max_content_length, Some(70000));
        assert_eq!(l.min_pow_difficulty, Some(0));
        assert_eq!(l.auth_required, Some(false));
        assert_eq!(l.payment_required, Some(true));
        assert_eq!(l.restricted_writes, Some(true));
        assert_eq!(l.created_at_lower_limit, Some(0));
        assert_eq!(l.created_at_upper_limit, Some(2147483647));
        assert_eq!(l.default_limit, Some(500));
        let raw: Value = serde_json::from_str(&info.raw).unwrap();
        assert_eq!(raw["icon"], "https://example.com/icon.png");
        // Serializes (raw included).
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["limitation"]["max_limit"], 5000);
        assert_eq!(json["raw"]["name"], "JellyFish");
    }

    #[test]
    fn nip11_wrong_types_are_ignored() {
        let doc = br#"{
            "name": 42, "description": ["x"], "pubkey": null, "contact": {"a": 1},
            "software": true, "version": 1.2,
            "supported_nips": [1, "x", null, -5, 2.5, 11, 1, {"n": 3}, 4294967296],
            "limitation": {
                "max_message_length": "lots", "max_subscriptions": -1, "max_limit": 2.5,
                "auth_required": "yes", "payment_required": 1, "restricted_writes": false,
                "default_limit": [100], "max_event_tags": true
            }
        }"#;
        let info = parse_relay_info(doc).unwrap();
        assert_eq!(info.name, None);
        assert_eq!(info.description, None);
        assert_eq!(info.pubkey, None);
        assert_eq!(info.contact, None);
        assert_eq!(info.software, None);
        assert_eq!(info.version, None);
        assert_eq!(info.supported_nips, vec![1, 11]);
        let l = &info.limitation;
        assert_eq!(l.max_message_length, None);
        assert_eq!(l.max_subscriptions, None);
        assert_eq!(l.max_limit, None);
        assert_eq!(l.auth_required, None);
        assert_eq!(l.payment_required, None);
        assert_eq!(l.restricted_writes, Some(false));
        assert_eq!(l.default_limit, None);
        assert_eq!(l.max_event_tags, None);

        let info = parse_relay_info(br#"{"supported_nips": "1,2", "limitation": []}"#).unwrap();
        assert!(info.supported_nips.is_empty());
        assert_eq!(info.limitation.max_limit, None);
    }

    #[test]
    fn nip11_numeric_strings() {
        let doc = br#"{
            "supported_nips": ["11", " 1 ", 50, "9", "nip-42", "1.5", "-2", 11.0],
            "limitation": {"max_limit": "500", "max_subscriptions": " 20 ", "max_message_length": 16384.0,
                           "default_limit": "1e2", "min_pow_difficulty": "-3", "max_subid_length": "2.5"}
        }"#;
        let info = parse_relay_info(doc).unwrap();
        assert_eq!(info.supported_nips, vec![1, 9, 11, 50]);
        let l = &info.limitation;
        assert_eq!(l.max_limit, Some(500));
        assert_eq!(l.max_subscriptions, Some(20));
        assert_eq!(l.max_message_length, Some(16384));
        assert_eq!(l.default_limit, Some(100));
        assert_eq!(l.min_pow_difficulty, None);
        assert_eq!(l.max_subid_length, None);
    }

    #[test]
    fn nip11_non_object_is_error() {
        for doc in [&b"[1,2]"[..], b"\"relay\"", b"null", b"42"] {
            let err = parse_relay_info(doc).unwrap_err();
            assert!(matches!(err, Nip11Error::NotAnObject { .. }), "{err:?}");
        }
    }

    #[test]
    fn nip11_invalid_json_is_error() {
        for doc in [
            &b"<html>nope</html>"[..],
            b"{\"name\": ",
            b"",
            b"{} trailing",
        ] {
            let err = parse_relay_info(doc).unwrap_err();
            assert!(matches!(err, Nip11Error::InvalidJson(_)), "{err:?}");
        }
    }

    #[test]
    fn hostile_documents_are_never_expanded() {
        // A megabyte of zeros: not an object, refused, named.
        let zeros = format!("[{}0]", "0,".repeat(500_000));
        let err = parse_relay_info(zeros.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("an array"), "{err}");
        // The same inside an object, under a known and an unknown key: the rest is read.
        let doc = format!(
            r#"{{"junk":{zeros},"supported_nips":{zeros},"name":"ok","limitation":{{"max_limit":"40"}}}}"#
        );
        let info = parse_relay_info(doc.as_bytes()).unwrap();
        assert_eq!(info.name.as_deref(), Some("ok"));
        assert!(
            info.supported_nips.is_empty(),
            "an oversized field is ignored"
        );
        assert_eq!(info.limitation.max_limit, Some(40));
        assert_eq!(info.raw.len(), doc.len(), "the raw text is kept as served");
        // Trailing garbage is still an error.
        assert!(parse_relay_info(br#"{"name":"x"} extra"#).is_err());
        // Duplicate keys: the first wins (serde_json's Value kept the last; either is lenient).
        let info = parse_relay_info(br#"{"name":"a","name":"b"}"#).unwrap();
        assert_eq!(info.name.as_deref(), Some("a"));
    }

    #[test]
    fn nip11_bom_is_stripped() {
        let info = parse_relay_info(b"\xEF\xBB\xBF{\"name\":\"bom\"}").unwrap();
        assert_eq!(info.name.as_deref(), Some("bom"));
        assert!(info.raw.starts_with('{'));
    }

    #[test]
    fn nip11_long_strings_truncated_on_char_boundary() {
        // 'é' is two bytes: 4097 bytes of "a" + "é"... ensure a boundary falls mid-char.
        let long = format!("a{}", "é".repeat(3000));
        let doc = serde_json::json!({ "description": long, "name": "a\u{0}b" }).to_string();
        let info = parse_relay_info(doc.as_bytes()).unwrap();
        let description = info.description.unwrap();
        assert!(description.len() <= MAX_INFO_STRING_BYTES);
        assert!(description.len() >= MAX_INFO_STRING_BYTES - 3);
        assert!(long.starts_with(&description));
        assert_eq!(info.name.as_deref(), Some("ab"));
        // raw is untouched.
        let raw: Value = serde_json::from_str(&info.raw).unwrap();
        assert_eq!(raw["description"].as_str().map(str::len), Some(long.len()));
    }
}
