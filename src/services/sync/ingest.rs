//! The per-page ingest step: parse -> dedup -> verify -> one atomic write.
//!
//! Invariant 1 is enforced in this order on purpose: the id is recomputed for every copy (cheap,
//! ~1 us), then looked up; a copy whose identical (id, sig) is already stored skips the Schnorr
//! verification (~44 us) and is only recorded as seen on this relay. Everything else must verify.
//! Events that do not match the filter asked are stored if valid but are reported separately so
//! they never move a cursor. Ephemeral kinds (20000-29999) are never archived.
//! This runs on a blocking thread: it is CPU-bound and must not stall the async runtime.

use std::collections::HashSet;
use std::sync::Arc;

use crate::protocol::event::{self, is_ephemeral, PubkeyCache};
use crate::protocol::message::{parse_relay_message, RelayMessage};
use crate::protocol::{Event, EventLimits, Filter};
use crate::store::{EventStore, StoreError, WriteStats};

/// What one page produced.
#[derive(Debug, Default, Clone)]
pub struct PageResult {
    /// Distinct valid events that match the filter: the only ones that count for completeness
    /// and cursors.
    pub matching: Vec<Matched>,
    /// Event frames received (the wire count, duplicates included).
    pub received: u64,
    /// Frames refused: malformed, over a cap, wrong id, bad signature.
    pub invalid: u64,
    /// Valid events outside the filter (stored, never counted for a cursor).
    pub outside_filter: u64,
    /// Signatures verified (copies not already stored).
    pub verified: u64,
    /// The `created_at` of every event the relay sent inside the asked window (valid,
    /// ephemeral, or invalid with a readable `created_at`), newest first: the relay ranked its
    /// newest-first answer by these values, so they bound what the answer proves. Duplicates
    /// included (each occupied a slot of the answer).
    pub answered: Vec<u64>,
    pub write: WriteStats,
}

/// The fields of a matching event that the pass logic needs (to narrow a saturated second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched {
    pub created_at: u64,
    pub id: [u8; 32],
    pub pubkey: [u8; 32],
    pub kind: u16,
}

impl PageResult {
    fn answered(&mut self, created_at: u64, filter: Option<&Filter>) {
        let in_window = filter.is_none_or(|f| {
            f.since.is_none_or(|s| created_at >= s) && f.until.is_none_or(|u| created_at <= u)
        });
        if in_window {
            self.answered.push(created_at);
        }
    }

    /// Oldest `created_at` answered inside the window.
    pub fn oldest_answered(&self) -> Option<u64> {
        self.answered.last().copied()
    }
}

/// The `created_at` an invalid event claims, if it can be read at all.
fn claimed_created_at(raw: &serde_json::value::RawValue) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Claim {
        created_at: u64,
    }
    serde_json::from_str::<Claim>(raw.get())
        .ok()
        .map(|c| c.created_at)
}

pub fn ingest(
    store: &Arc<EventStore>,
    relay: u32,
    seen_at: u64,
    frames: &[String],
    filter: Option<&Filter>,
    limits: &EventLimits,
) -> Result<PageResult, StoreError> {
    let mut res = PageResult {
        received: frames.len() as u64,
        ..PageResult::default()
    };
    let mut events: Vec<Event> = Vec::with_capacity(frames.len());
    // Read before any lookup: lets write_page trust our "not stored" answers if nothing was
    // committed in between.
    let generation = store.generation();
    let mut distinct: HashSet<[u8; 32]> = HashSet::with_capacity(frames.len());
    let mut pubkeys = PubkeyCache::default();
    let mut known: Vec<bool> = Vec::with_capacity(frames.len());
    for frame in frames {
        let Ok(RelayMessage::Event { event: raw, .. }) = parse_relay_message(frame) else {
            res.invalid += 1;
            continue;
        };
        let parsed = match event::parse(raw, limits) {
            Ok(p) => p,
            Err(e) => {
                res.invalid += 1;
                if let Some(t) = claimed_created_at(raw) {
                    res.answered(t, filter);
                }
                tracing::debug!(relay, error = %e, "event refused");
                continue;
            }
        };
        res.answered(parsed.unverified().created_at, filter);
        if is_ephemeral(parsed.unverified().kind) || !distinct.insert(*parsed.id()) {
            continue;
        }
        let (ev, is_known) = match store.stored_sig(parsed.id())? {
            Some(sig) if &sig == parsed.sig() => (parsed.into_known_verified(), true),
            stored => {
                res.verified += 1;
                match parsed.verify_with(&mut pubkeys) {
                    // Same id, another valid signature (BIP-340 signatures are not unique):
                    // the stored event stands; this copy is a sighting.
                    Ok(ev) => (ev, stored.is_some()),
                    Err(e) => {
                        res.invalid += 1;
                        tracing::debug!(relay, error = %e, "event refused");
                        continue;
                    }
                }
            }
        };
        if filter.is_none_or(|f| f.matches(&ev)) {
            res.matching.push(Matched {
                created_at: ev.created_at,
                id: ev.id,
                pubkey: ev.pubkey,
                kind: ev.kind,
            });
        } else {
            res.outside_filter += 1;
        }
        events.push(ev);
        known.push(is_known);
    }
    res.write = store.write_page(relay, seen_at, &events, &known, Some(generation))?;
    res.answered.sort_unstable_by(|a, b| b.cmp(a));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventStore, EventStoreOptions};
    use nostr::{EventBuilder, JsonUtil, Keys, Kind, Timestamp};

    fn frame(ev: &nostr::Event) -> String {
        format!("[\"EVENT\",\"s\",{}]", ev.as_json())
    }

    fn note(keys: &Keys, t: u64, kind: u16) -> nostr::Event {
        EventBuilder::new(Kind::from(kind), format!("n{t}"))
            .custom_created_at(Timestamp::from(t))
            .sign_with_keys(keys)
            .unwrap()
    }

    #[test]
    fn classifies_matching_outside_invalid_ephemeral_and_dedups_before_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EventStore::open(dir.path(), &EventStoreOptions::default()).unwrap());
        let k = Keys::generate();
        let inside = note(&k, 100, 1);
        let outside = note(&k, 500, 1);
        let ephemeral = note(&k, 100, 20_001);
        let mut forged: serde_json::Value =
            serde_json::from_str(&note(&k, 101, 1).as_json()).unwrap();
        let sig = forged["sig"].as_str().unwrap().to_string();
        forged["sig"] = format!(
            "{}{}",
            if sig.starts_with('0') { "1" } else { "0" },
            &sig[1..]
        )
        .into();
        let frames = vec![
            frame(&inside),
            frame(&outside),
            frame(&ephemeral),
            format!("[\"EVENT\",\"s\",{forged}]"),
            frame(&inside),
            "[\"EVENT\",\"s\",{\"id\":1}]".to_string(),
        ];
        let filter = Filter {
            since: Some(0),
            until: Some(200),
            ..Filter::default()
        };
        let res = ingest(
            &store,
            1,
            7,
            &frames,
            Some(&filter),
            &EventLimits::default(),
        )
        .unwrap();
        assert_eq!(res.received, 6);
        assert_eq!(
            res.matching.len(),
            1,
            "only the in-window event counts for the cursor"
        );
        assert_eq!(res.matching[0].created_at, 100);
        assert_eq!(res.outside_filter, 1);
        assert_eq!(res.invalid, 2);
        assert_eq!(
            res.write.new_events, 2,
            "inside and outside are stored, ephemeral and forged not"
        );
        assert_eq!(res.verified, 3);
        assert!(!store.contains(&ephemeral.id.to_bytes()).unwrap());
        // Second page from another relay: the stored copies are not verified again.
        let res = ingest(
            &store,
            2,
            8,
            &[frame(&inside), frame(&outside)],
            None,
            &EventLimits::default(),
        )
        .unwrap();
        assert_eq!(res.verified, 0);
        assert_eq!(res.write.new_sightings, 2);
        assert_eq!(res.write.new_events, 0);
    }
}
