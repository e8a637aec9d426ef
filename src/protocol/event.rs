//! Nostr events (NIP-01): parsing from the wire, id recomputation, signature verification, and
//! the compact binary form the store keeps.
//!
//! Invariant 1 of the architecture starts here: an event is accepted only after its id was
//! recomputed from its own fields with NIP-01's exact escaping and its BIP-340 signature verified
//! against that id. The id a relay sends is never trusted. The work is split so that the caller
//! can skip the expensive half: [`parse`] does the cheap checks (shape, sizes, hex, id hash) and
//! [`ParsedEvent::verify`] does the Schnorr verification (~44 us, the ingest ceiling), which the
//! synchronizer calls only for a copy whose (id, sig) is not already stored.
//!
//! NIP-01 escaping: inside strings only `\n \" \\ \r \t \b \f` are escaped; every other
//! character, `/`, non-ASCII and the other control characters included, is written verbatim.
//! Serializers that emit `\u0001` (serde_json does) compute a different id, so this module
//! writes the canonical form itself.

use std::borrow::Cow;
use std::sync::LazyLock;

use nostr::secp256k1::{schnorr, Message, Secp256k1, VerifyOnly, XOnlyPublicKey};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::ProtocolError;

/// Verification-only secp256k1 context, built once (building one costs far more than a verify).
static SECP: LazyLock<Secp256k1<VerifyOnly>> = LazyLock::new(Secp256k1::verification_only);

/// Size caps applied to every event before any expensive work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    /// Maximum bytes of `content` (default: 256 KiB).
    pub max_content_bytes: usize,
    /// Maximum number of tags (default: 2,000).
    pub max_tags: usize,
    /// Maximum total bytes over all tag values (default: 256 KiB).
    pub max_tag_bytes: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        Self {
            max_content_bytes: 256 * 1024,
            max_tags: 2_000,
            max_tag_bytes: 256 * 1024,
        }
    }
}

/// The wire form of an event, borrowed from the message text where no unescaping was needed.
#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    pubkey: Cow<'a, str>,
    created_at: u64,
    kind: u64,
    tags: Vec<Vec<String>>,
    #[serde(borrow)]
    content: Cow<'a, str>,
    #[serde(borrow)]
    sig: Cow<'a, str>,
}

/// Parsed x-only public keys by their bytes (bounded; cleared when full).
#[derive(Default)]
pub struct PubkeyCache {
    keys: std::collections::HashMap<[u8; 32], XOnlyPublicKey>,
}

impl PubkeyCache {
    const MAX: usize = 4096;
}

/// A well-formed event whose id was recomputed and matched, but whose signature is not yet
/// verified. Only [`ParsedEvent::verify`] turns it into an [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEvent {
    event: Event,
}

impl ParsedEvent {
    /// The id (already recomputed from the fields and equal to the id sent).
    pub fn id(&self) -> &[u8; 32] {
        &self.event.id
    }

    /// The signature as sent (not verified yet).
    pub fn sig(&self) -> &[u8; 64] {
        &self.event.sig
    }

    /// The fields, for filter matching before verification. Never store this unverified.
    pub fn unverified(&self) -> &Event {
        &self.event
    }

    /// Verify the BIP-340 signature over the id; the only way to obtain an [`Event`].
    pub fn verify(self) -> Result<Event, ProtocolError> {
        self.verify_with(&mut PubkeyCache::default())
    }

    /// [`ParsedEvent::verify`], reusing parsed public keys: decompressing an x-only key costs
    /// about a tenth of a verification, and a page usually holds several events per author.
    pub fn verify_with(self, cache: &mut PubkeyCache) -> Result<Event, ProtocolError> {
        let pk = match cache.keys.get(&self.event.pubkey) {
            Some(pk) => *pk,
            None => {
                let pk = XOnlyPublicKey::from_slice(&self.event.pubkey).map_err(|_| {
                    ProtocolError::InvalidEvent("pubkey is not a valid x-only point")
                })?;
                if cache.keys.len() >= PubkeyCache::MAX {
                    cache.keys.clear();
                }
                cache.keys.insert(self.event.pubkey, pk);
                pk
            }
        };
        let sig = schnorr::Signature::from_slice(&self.event.sig)
            .map_err(|_| ProtocolError::InvalidEvent("signature is malformed"))?;
        let msg = Message::from_digest(self.event.id);
        SECP.verify_schnorr(&sig, &msg, &pk)
            .map_err(|_| ProtocolError::InvalidEvent("signature does not verify"))?;
        Ok(self.event)
    }

    /// Accept without verifying: only for a copy whose identical (id, sig) is already stored,
    /// i.e. one that was verified when it was first stored (invariant 1's exception).
    pub fn into_known_verified(self) -> Event {
        self.event
    }
}

/// A verified event (or one read back from the store, where only verified events are written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: [u8; 32],
    pub pubkey: [u8; 32],
    pub created_at: u64,
    pub kind: u16,
    pub tags: Vec<Vec<String>>,
    pub content: String,
    pub sig: [u8; 64],
}

/// Parse one event object and recompute its id. Cheap checks only; see [`ParsedEvent::verify`].
pub fn parse(raw: &RawValue, limits: &EventLimits) -> Result<ParsedEvent, ProtocolError> {
    let wire: WireEvent<'_> = serde_json::from_str(raw.get())
        .map_err(|e| ProtocolError::Malformed(format!("event: {e}")))?;
    if wire.content.len() > limits.max_content_bytes {
        return Err(ProtocolError::TooLarge("event content"));
    }
    if wire.tags.len() > limits.max_tags {
        return Err(ProtocolError::TooLarge("event tag count"));
    }
    let tag_bytes: usize = wire.tags.iter().flatten().map(String::len).sum();
    if tag_bytes > limits.max_tag_bytes {
        return Err(ProtocolError::TooLarge("event tags"));
    }
    if wire.tags.iter().any(Vec::is_empty) {
        return Err(ProtocolError::InvalidEvent("empty tag"));
    }
    let kind =
        u16::try_from(wire.kind).map_err(|_| ProtocolError::InvalidEvent("kind is above 65535"))?;
    if wire.created_at > i64::MAX as u64 {
        return Err(ProtocolError::InvalidEvent("created_at out of range"));
    }
    let sent_id = decode_hex::<32>(&wire.id).ok_or(ProtocolError::InvalidEvent(
        "id is not 64 lowercase hex characters",
    ))?;
    let pubkey = decode_hex::<32>(&wire.pubkey).ok_or(ProtocolError::InvalidEvent(
        "pubkey is not 64 lowercase hex characters",
    ))?;
    let sig = decode_hex::<64>(&wire.sig).ok_or(ProtocolError::InvalidEvent(
        "sig is not 128 lowercase hex characters",
    ))?;
    let id = compute_id(
        &wire.pubkey,
        wire.created_at,
        kind,
        &wire.tags,
        &wire.content,
    );
    if id != sent_id {
        return Err(ProtocolError::InvalidEvent(
            "id does not match the event's fields",
        ));
    }
    Ok(ParsedEvent {
        event: Event {
            id,
            pubkey,
            created_at: wire.created_at,
            kind,
            tags: wire.tags,
            content: wire.content.into_owned(),
            sig,
        },
    })
}

/// sha256 of the NIP-01 canonical serialization.
pub fn compute_id(
    pubkey_hex: &str,
    created_at: u64,
    kind: u16,
    tags: &[Vec<String>],
    content: &str,
) -> [u8; 32] {
    let mut buf = Vec::with_capacity(128 + content.len() + tags.len() * 80);
    write_canonical(&mut buf, pubkey_hex, created_at, kind, tags, content);
    Sha256::digest(&buf).into()
}

/// `[0,"<pubkey>",<created_at>,<kind>,<tags>,"<content>"]` with NIP-01's escaping, no whitespace.
pub fn write_canonical(
    buf: &mut Vec<u8>,
    pubkey_hex: &str,
    created_at: u64,
    kind: u16,
    tags: &[Vec<String>],
    content: &str,
) {
    buf.extend_from_slice(b"[0,\"");
    buf.extend_from_slice(pubkey_hex.as_bytes());
    buf.extend_from_slice(b"\",");
    buf.extend_from_slice(created_at.to_string().as_bytes());
    buf.push(b',');
    buf.extend_from_slice(kind.to_string().as_bytes());
    buf.extend_from_slice(b",[");
    for (i, tag) in tags.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.push(b'[');
        for (j, value) in tag.iter().enumerate() {
            if j > 0 {
                buf.push(b',');
            }
            write_nip01_string(buf, value);
        }
        buf.push(b']');
    }
    buf.extend_from_slice(b"],");
    write_nip01_string(buf, content);
    buf.push(b']');
}

fn write_nip01_string(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\n' => b"\\n",
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.extend_from_slice(esc);
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

/// Decode exactly `N` bytes of lowercase hex; anything else is `None`.
pub fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let (hi, lo) = (HEX[pair[0] as usize], HEX[pair[1] as usize]);
        if (hi | lo) & 0xf0 != 0 {
            return None;
        }
        out[i] = (hi << 4) | lo;
    }
    Some(out)
}

/// Lowercase hex digit values; 0xff marks every other byte. A table, because three ids of
/// 32-64 bytes are decoded for every event received.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut j = 0;
    while j < 6 {
        t[b'a' as usize + j] = 10 + j as u8;
        j += 1;
    }
    t
};

impl Event {
    /// The event as NIP-01 JSON (standard JSON escaping: this is the transport form).
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(400 + self.content.len());
        write_json(
            &mut out,
            JsonParts {
                id: &self.id,
                pubkey: &self.pubkey,
                created_at: self.created_at,
                kind: self.kind,
                content: &self.content,
                sig: &self.sig,
            },
            |out| {
                // Strings and arrays of strings cannot fail to serialize.
                let _ = serde_json::to_writer(out, &self.tags);
            },
        );
        String::from_utf8(out).unwrap_or_default()
    }

    /// Compact binary form kept in the store:
    /// `[1][sig 64][pubkey 32][created_at u64 BE][kind u16 BE][tags_len u32 BE][tags JSON][content]`.
    pub fn encode(&self) -> Vec<u8> {
        let tags = serde_json::to_vec(&self.tags).unwrap_or_else(|_| b"[]".to_vec());
        let mut out = Vec::with_capacity(1 + 64 + 32 + 8 + 2 + 4 + tags.len() + self.content.len());
        out.push(1);
        out.extend_from_slice(&self.sig);
        out.extend_from_slice(&self.pubkey);
        out.extend_from_slice(&self.created_at.to_be_bytes());
        out.extend_from_slice(&self.kind.to_be_bytes());
        out.extend_from_slice(&(tags.len() as u32).to_be_bytes());
        out.extend_from_slice(&tags);
        out.extend_from_slice(self.content.as_bytes());
        out
    }

    /// Inverse of [`Event::encode`]; `None` for a corrupt record (the caller quarantines it).
    pub fn decode(id: [u8; 32], bytes: &[u8]) -> Option<Event> {
        let tags_end = record_tags_end(bytes)?;
        let sig: [u8; 64] = bytes[1..65].try_into().ok()?;
        let pubkey: [u8; 32] = bytes[65..97].try_into().ok()?;
        let created_at = u64::from_be_bytes(bytes[97..105].try_into().ok()?);
        let kind = u16::from_be_bytes(bytes[105..107].try_into().ok()?);
        let tags: Vec<Vec<String>> = serde_json::from_slice(&bytes[111..tags_end]).ok()?;
        let content = std::str::from_utf8(&bytes[tags_end..]).ok()?.to_owned();
        Some(Event {
            id,
            pubkey,
            created_at,
            kind,
            tags,
            content,
            sig,
        })
    }

    /// The signature stored in an encoded record, for the dedup check without decoding it all.
    pub fn encoded_sig(bytes: &[u8]) -> Option<&[u8]> {
        bytes.get(1..65)
    }

    /// The `created_at` of a whole encoded record ([`Event::encode`]); `None` for anything
    /// else (a record kept for an evicted event, a corrupt one).
    pub fn encoded_created_at(bytes: &[u8]) -> Option<u64> {
        record_tags_end(bytes)?;
        bytes.get(97..105)?.try_into().ok().map(u64::from_be_bytes)
    }
}

/// Where the tags of a whole record ([`Event::encode`]) end: its header is there, it is tagged
/// as a whole event (not an evicted one) and its tags length stays inside it; else `None`.
fn record_tags_end(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < 111 || bytes[0] != 1 {
        return None;
    }
    let tags_len = u32::from_be_bytes(bytes[107..111].try_into().ok()?) as usize;
    111usize
        .checked_add(tags_len)
        .filter(|&end| end <= bytes.len())
}

/// The fields of an event's JSON besides its tags.
struct JsonParts<'a> {
    id: &'a [u8; 32],
    pubkey: &'a [u8; 32],
    created_at: u64,
    kind: u16,
    content: &'a str,
    sig: &'a [u8; 64],
}

/// Write an event's NIP-01 JSON into `out`, field by field (the serving hot path: building a
/// `serde_json::Value` first cost more than reading the event from the store); `tags` writes
/// the tags array.
fn write_json(out: &mut Vec<u8>, e: JsonParts<'_>, tags: impl FnOnce(&mut Vec<u8>)) {
    fn hex_into(out: &mut Vec<u8>, bytes: &[u8]) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for b in bytes {
            out.push(DIGITS[usize::from(b >> 4)]);
            out.push(DIGITS[usize::from(b & 15)]);
        }
    }
    out.extend_from_slice(b"{\"id\":\"");
    hex_into(out, e.id);
    out.extend_from_slice(b"\",\"pubkey\":\"");
    hex_into(out, e.pubkey);
    out.extend_from_slice(b"\",\"created_at\":");
    out.extend_from_slice(itoa::Buffer::new().format(e.created_at).as_bytes());
    out.extend_from_slice(b",\"kind\":");
    out.extend_from_slice(itoa::Buffer::new().format(e.kind).as_bytes());
    out.extend_from_slice(b",\"tags\":");
    tags(out);
    out.extend_from_slice(b",\"content\":");
    // A string cannot fail to serialize.
    let _ = serde_json::to_writer(&mut *out, e.content);
    out.extend_from_slice(b",\"sig\":\"");
    hex_into(out, e.sig);
    out.extend_from_slice(b"\"}");
}

/// An event as the store keeps it ([`Event::encode`]), read without decoding its tags. The
/// serving hot path writes its JSON from here: the stored tags are already the JSON array
/// `serde_json` wrote for them at ingest (the same serializer [`Event::to_json`] uses), so they
/// are copied as they are instead of being parsed into strings and written again.
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    id: [u8; 32],
    bytes: Vec<u8>,
    tags_end: usize,
}

impl EncodedEvent {
    /// Check a stored record's frame (header, tags bounds, UTF-8 content); `None` for anything
    /// else (an evicted record, a corrupt one).
    pub fn new(id: [u8; 32], bytes: Vec<u8>) -> Option<EncodedEvent> {
        let tags_end = record_tags_end(&bytes)?;
        let tags = &bytes[111..tags_end];
        if tags.first() != Some(&b'[') || tags.last() != Some(&b']') {
            return None;
        }
        // Tags and content in one pass: the JSON written from them is then valid UTF-8.
        std::str::from_utf8(&bytes[111..]).ok()?;
        Some(EncodedEvent {
            id,
            bytes,
            tags_end,
        })
    }

    pub fn id(&self) -> &[u8; 32] {
        &self.id
    }

    pub fn pubkey(&self) -> &[u8; 32] {
        self.bytes[65..97].try_into().expect("checked in new")
    }

    pub fn created_at(&self) -> u64 {
        u64::from_be_bytes(self.bytes[97..105].try_into().expect("checked in new"))
    }

    pub fn kind(&self) -> u16 {
        u16::from_be_bytes(self.bytes[105..107].try_into().expect("checked in new"))
    }

    fn sig(&self) -> &[u8; 64] {
        self.bytes[1..65].try_into().expect("checked in new")
    }

    fn content(&self) -> &str {
        // Checked in `new`; never panics.
        std::str::from_utf8(&self.bytes[self.tags_end..]).unwrap_or_default()
    }

    /// The tags, parsed; `None` if the stored JSON is corrupt.
    pub fn tags(&self) -> Option<Vec<Vec<String>>> {
        serde_json::from_slice(&self.bytes[111..self.tags_end]).ok()
    }

    /// The whole event; `None` if its stored tags are corrupt.
    pub fn decode(&self) -> Option<Event> {
        Some(Event {
            id: self.id,
            pubkey: *self.pubkey(),
            created_at: self.created_at(),
            kind: self.kind(),
            tags: self.tags()?,
            content: self.content().to_owned(),
            sig: *self.sig(),
        })
    }

    /// `prefix`, the event's NIP-01 JSON (the same bytes as [`Event::to_json`]), `suffix`.
    pub fn framed_json(&self, prefix: &str, suffix: &str) -> String {
        let mut out = Vec::with_capacity(prefix.len() + 300 + 2 * self.bytes.len() + suffix.len());
        out.extend_from_slice(prefix.as_bytes());
        self.write_json(&mut out);
        out.extend_from_slice(suffix.as_bytes());
        // Valid UTF-8 (checked in `new`, hex and digits otherwise); never the default.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Append the event's NIP-01 JSON to `out`: the same bytes as [`Event::to_json`].
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let parts = JsonParts {
            id: &self.id,
            pubkey: self.pubkey(),
            created_at: self.created_at(),
            kind: self.kind(),
            content: self.content(),
            sig: self.sig(),
        };
        write_json(out, parts, |out| {
            out.extend_from_slice(&self.bytes[111..self.tags_end])
        });
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// NIP-01 kind classes.
pub fn is_ephemeral(kind: u16) -> bool {
    (20_000..30_000).contains(&kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::secp256k1::{Keypair, SecretKey};

    fn keypair() -> Keypair {
        let sk = SecretKey::from_slice(&[7u8; 32]).unwrap();
        Keypair::from_secret_key(&Secp256k1::new(), &sk)
    }

    fn signed(content: &str, tags: Vec<Vec<String>>) -> String {
        let kp = keypair();
        let (xonly, _) = kp.x_only_public_key();
        let pk = hex::encode(xonly.serialize());
        let id = compute_id(&pk, 1_700_000_000, 1, &tags, content);
        let sig = Secp256k1::new().sign_schnorr_no_aux_rand(&Message::from_digest(id), &kp);
        serde_json::json!({"id": hex::encode(id), "pubkey": pk, "created_at": 1_700_000_000u64,
            "kind": 1, "tags": tags, "content": content, "sig": hex::encode(sig.serialize())})
        .to_string()
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn canonical_escaping_is_nip01_exact() {
        let mut buf = Vec::new();
        let tags = vec![vec!["e".to_string(), "a/b\u{1}".to_string()]];
        write_canonical(&mut buf, "ab", 5, 1, &tags, "x\n\"\\\r\t\u{8}\u{c}\u{1}/é");
        let expected = "[0,\"ab\",5,1,[[\"e\",\"a/b\u{1}\"]],\"x\\n\\\"\\\\\\r\\t\\b\\f\u{1}/é\"]";
        assert_eq!(String::from_utf8(buf).unwrap(), expected);
    }

    #[test]
    fn valid_event_parses_and_verifies() {
        let json = signed("hello / wörld \u{1}", vec![vec!["p".into(), "x".into()]]);
        let parsed = parse(&raw(&json), &EventLimits::default()).unwrap();
        let ev = parsed.verify().unwrap();
        assert_eq!(ev.content, "hello / wörld \u{1}");
        assert_eq!(ev.tags, vec![vec!["p".to_string(), "x".to_string()]]);
    }

    #[test]
    fn forged_signature_is_rejected() {
        let json = signed("hi", vec![]);
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let sig = v["sig"].as_str().unwrap().to_string();
        let flipped = if sig.starts_with('0') { "1" } else { "0" };
        v["sig"] = format!("{flipped}{}", &sig[1..]).into();
        let parsed = parse(&raw(&v.to_string()), &EventLimits::default()).unwrap();
        assert!(parsed.verify().is_err());
    }

    #[test]
    fn tampered_content_fails_the_id_check() {
        let json = signed("hi", vec![]);
        let tampered = json.replace("\"hi\"", "\"ho\"");
        let err = parse(&raw(&tampered), &EventLimits::default()).unwrap_err();
        assert!(matches!(err, ProtocolError::InvalidEvent(m) if m.contains("id does not match")));
    }

    #[test]
    fn uppercase_hex_and_wrong_lengths_are_refused() {
        let json = signed("hi", vec![]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let mut upper = v.clone();
        upper["id"] = v["id"].as_str().unwrap().to_uppercase().into();
        assert!(parse(&raw(&upper.to_string()), &EventLimits::default()).is_err());
        let mut short = v.clone();
        short["sig"] = "ab".into();
        assert!(parse(&raw(&short.to_string()), &EventLimits::default()).is_err());
        let mut big_kind = v;
        big_kind["kind"] = 70_000.into();
        assert!(parse(&raw(&big_kind.to_string()), &EventLimits::default()).is_err());
    }

    #[test]
    fn size_caps_apply_before_hashing() {
        let json = signed(&"a".repeat(100), vec![vec!["t".into(); 3]]);
        let tight = EventLimits {
            max_content_bytes: 99,
            ..EventLimits::default()
        };
        assert_eq!(
            parse(&raw(&json), &tight).unwrap_err(),
            ProtocolError::TooLarge("event content")
        );
        let few_tags = EventLimits {
            max_tags: 0,
            ..EventLimits::default()
        };
        assert_eq!(
            parse(&raw(&json), &few_tags).unwrap_err(),
            ProtocolError::TooLarge("event tag count")
        );
    }

    #[test]
    fn encode_decode_round_trip() {
        let json = signed(
            "round \u{0} trip",
            vec![vec!["e".into(), "1".into(), "wss://r".into()]],
        );
        let ev = parse(&raw(&json), &EventLimits::default())
            .unwrap()
            .verify()
            .unwrap();
        let bytes = ev.encode();
        assert_eq!(Event::decode(ev.id, &bytes).unwrap(), ev);
        assert_eq!(Event::encoded_sig(&bytes).unwrap(), &ev.sig[..]);
        assert_eq!(Event::encoded_created_at(&bytes), Some(ev.created_at));
        assert!(Event::decode(ev.id, &bytes[..50]).is_none());
        let back: serde_json::Value = serde_json::from_str(&ev.to_json()).unwrap();
        assert_eq!(back["content"], "round \u{0} trip");
        assert_eq!(back["id"], hex::encode(ev.id));
    }

    #[test]
    fn to_json_parses_back_to_the_same_verified_event() {
        let content = "q\"uote\\ back\nnew\tline \u{1} é 🦀 </script>";
        let tags = vec![
            vec!["e".into(), "ab".repeat(32), "wss://r".into()],
            vec!["t".into(), "\"x\"".into()],
        ];
        let ev = parse(&raw(&signed(content, tags)), &EventLimits::default())
            .unwrap()
            .verify()
            .unwrap();
        let json = ev.to_json();
        // The NIP-01 field order, and the same event again (id recomputed, signature verified).
        assert!(json.starts_with("{\"id\":\""), "{json}");
        let again = parse(&raw(&json), &EventLimits::default())
            .unwrap()
            .verify()
            .unwrap();
        assert_eq!(again, ev);
    }

    #[test]
    fn stored_records_give_the_same_json_and_event_without_decoding() {
        let content = "q\"uote\\ back\nnew\tline \u{1} \u{7f} é 🦀 </script>";
        let tags = vec![
            vec!["e".into(), "ab".repeat(32), "wss://r".into()],
            vec!["t".into(), "\"x\"\\\u{2028}é".into()],
            vec!["d".into(), String::new()],
        ];
        let ev = parse(&raw(&signed(content, tags)), &EventLimits::default())
            .unwrap()
            .verify()
            .unwrap();
        let enc = EncodedEvent::new(ev.id, ev.encode()).expect("a sound record");
        assert_eq!(enc.framed_json("[", "]"), format!("[{}]", ev.to_json()));
        assert_eq!(enc.decode().as_ref(), Some(&ev));
        assert_eq!(
            (enc.id(), enc.pubkey(), enc.created_at(), enc.kind()),
            (&ev.id, &ev.pubkey, ev.created_at, ev.kind)
        );
        // Corrupt frames are refused, never read past: short, wrong tag, tags length past the
        // end, tags that are not an array, content that is not UTF-8.
        let good = ev.encode();
        let mut bad: Vec<Vec<u8>> = vec![good[..110].to_vec(), {
            let mut b = good.clone();
            b[0] = 2;
            b
        }];
        let mut long = good.clone();
        long[107..111].copy_from_slice(&u32::MAX.to_be_bytes());
        bad.push(long);
        let mut not_array = good.clone();
        not_array[111] = b'{';
        bad.push(not_array);
        let mut not_utf8 = good.clone();
        not_utf8.push(0xff);
        bad.push(not_utf8);
        for b in bad {
            assert!(EncodedEvent::new(ev.id, b).is_none());
        }
        // Sound frame, tags not JSON: no event, and no matter for the JSON path's callers,
        // which check `decode` / `tags` where they need them.
        let mut broken = good.clone();
        broken[112] = b'x';
        let enc = EncodedEvent::new(ev.id, broken).expect("frame");
        assert!(enc.decode().is_none() && enc.tags().is_none());
    }
}
