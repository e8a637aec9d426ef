//! Test events kept exactly as given, with NIP-01-exact ids: [`nip01_serialize`] and
//! [`sign_event`] write the id preimage themselves because rust-nostr's serializer writes control
//! characters as `\u00XX`, which NIP-01 forbids, so it cannot be trusted for escape tests.
//! [`RawEvent::with_bad_sig`] and [`RawEvent::with_wrong_id`] break one on purpose.

use nostr::secp256k1::{Keypair, Message, SECP256K1};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A Nostr event kept exactly as given: nothing is validated or normalised,
/// so it may carry a wrong id or signature on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub id: String,
    pub pubkey: String,
    pub created_at: u64,
    pub kind: u16,
    pub tags: Vec<Vec<String>>,
    pub content: String,
    pub sig: String,
}

impl RawEvent {
    /// The transport form: a JSON object with keys `id, pubkey, created_at,
    /// kind, tags, content, sig` in that order (serde_json string escaping).
    pub fn to_json(&self) -> String {
        format!(
            "{{\"id\":{},\"pubkey\":{},\"created_at\":{},\"kind\":{},\"tags\":{},\"content\":{},\"sig\":{}}}",
            json_str(&self.id),
            json_str(&self.pubkey),
            self.created_at,
            self.kind,
            Value::from(self.tags.clone()),
            json_str(&self.content),
            json_str(&self.sig),
        )
    }

    /// The same event with one signature byte flipped (id untouched).
    pub fn with_bad_sig(&self) -> RawEvent {
        let sig = match hex::decode(&self.sig) {
            Ok(mut bytes) if !bytes.is_empty() => {
                bytes[0] ^= 0x01;
                hex::encode(bytes)
            }
            _ => bump_last_hex_digit(&self.sig),
        };
        RawEvent {
            sig,
            ..self.clone()
        }
    }

    /// The same event with one hex digit of the id changed (sig untouched).
    pub fn with_wrong_id(&self) -> RawEvent {
        RawEvent {
            id: bump_last_hex_digit(&self.id),
            ..self.clone()
        }
    }
}

pub(crate) fn json_str(s: &str) -> String {
    Value::from(s).to_string()
}

/// Replace the last character with a different lowercase hex digit.
fn bump_last_hex_digit(s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    match chars.last_mut() {
        Some(c) => {
            *c = match *c {
                '0'..='8' | 'a'..='e' => char::from(*c as u8 + 1),
                '9' => 'a',
                _ => '0',
            }
        }
        None => chars.push('0'),
    }
    chars.into_iter().collect()
}

/// The NIP-01 id preimage `[0,"pubkey",created_at,kind,tags,"content"]`,
/// without whitespace. Inside strings only `\n \" \\ \r \t \b \f` are
/// escaped; every other character (other control characters, `/`,
/// non-ASCII) is written verbatim.
pub fn nip01_serialize(
    pubkey: &str,
    created_at: u64,
    kind: u16,
    tags: &[Vec<String>],
    content: &str,
) -> String {
    let mut out = String::with_capacity(128 + content.len());
    out.push_str("[0,");
    push_nip01_str(&mut out, pubkey);
    out.push(',');
    out.push_str(&created_at.to_string());
    out.push(',');
    out.push_str(&kind.to_string());
    out.push_str(",[");
    for (i, tag) in tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        for (j, item) in tag.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            push_nip01_str(&mut out, item);
        }
        out.push(']');
    }
    out.push_str("],");
    push_nip01_str(&mut out, content);
    out.push(']');
    out
}

fn push_nip01_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Build and sign an event: id = sha256([`nip01_serialize`]), sig = BIP-340
/// Schnorr signature of the 32-byte id with `keys`.
pub fn sign_event(
    keys: &nostr::Keys,
    created_at: u64,
    kind: u16,
    tags: Vec<Vec<String>>,
    content: &str,
) -> RawEvent {
    let pubkey = keys.public_key().to_hex();
    let preimage = nip01_serialize(&pubkey, created_at, kind, &tags, content);
    let id: [u8; 32] = Sha256::digest(preimage.as_bytes()).into();
    let keypair = Keypair::from_secret_key(SECP256K1, keys.secret_key());
    let sig = keypair.sign_schnorr(Message::from_digest(id));
    RawEvent {
        id: hex::encode(id),
        pubkey,
        created_at,
        kind,
        tags,
        content: content.to_string(),
        sig: hex::encode(sig.serialize()),
    }
}
