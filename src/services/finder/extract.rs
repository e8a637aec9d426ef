//! Which strings in an event are relay URLs (PROTOCOL.md, "Where relay URLs come from").
//! Pure: returns raw candidates; the Finder normalizes them and applies the SSRF policy.

use std::borrow::Cow;

use crate::protocol::Event;

/// Candidates taken from one event: a real relay list names a few dozen relays; an event naming
/// thousands is a flood, and its tail is ignored.
pub const MAX_CANDIDATES_PER_EVENT: usize = 64;

/// NIP-51 lists whose `relay` tags name relays: blocked (10006), search (10007), favourite
/// relays (10012), DM relays (10050), relay sets (30002).
const RELAY_LIST_KINDS: [u16; 5] = [10006, 10007, 10012, 10050, 30002];

/// Raw relay URL candidates in `ev`, in tag order, possibly with duplicates and junk; at most
/// [`MAX_CANDIDATES_PER_EVENT`].
pub fn candidates(ev: &Event) -> Vec<Cow<'_, str>> {
    let mut out: Vec<Cow<'_, str>> = Vec::new();
    for tag in &ev.tags {
        if out.len() >= MAX_CANDIDATES_PER_EVENT {
            return out;
        }
        let (Some(name), Some(value)) = (tag.first(), tag.get(1)) else {
            continue;
        };
        match name.as_str() {
            // NIP-65 relay list; also simple-group lists (10009) carry relays in `r`.
            "r" if ev.kind == 10002 || ev.kind == 10009 => out.push(value.into()),
            "relay" if RELAY_LIST_KINDS.contains(&ev.kind) => out.push(value.into()),
            // NIP-66: the `d` tag of a relay discovery event is the relay URL.
            "d" if ev.kind == 30166 => out.push(value.into()),
            // Relay hints: third element of e/p/a/q tags on any kind.
            "e" | "p" | "a" | "q" => {
                if let Some(hint) = tag.get(2).filter(|h| !h.is_empty()) {
                    out.push(hint.into());
                }
            }
            _ => {}
        }
    }
    // Kind 3's legacy relay map: {"wss://...": {"read": true, "write": true}, ...}. Parsed as a
    // map whose keys are decoded (a key written "wss:\/\/x.com" is wss://x.com) and whose
    // values are skipped unread; only the first keys up to the cap are kept.
    if ev.kind == 3 && ev.content.trim_start().starts_with('{') {
        let room = MAX_CANDIDATES_PER_EVENT.saturating_sub(out.len());
        out.extend(
            relay_map_keys(&ev.content, room)
                .into_iter()
                .map(Cow::Owned),
        );
    }
    out
}

/// The first `max` keys of a JSON object (decoded), or none if `content` is not one.
fn relay_map_keys(content: &str, max: usize) -> Vec<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Keys(usize);
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a relay map")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if keys.len() < self.0 {
                    keys.push(k);
                }
            }
            Ok(keys)
        }
    }
    serde_json::Deserializer::from_str(content)
        .deserialize_map(Keys(max))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: u16, tags: Vec<Vec<&str>>, content: &str) -> Event {
        Event {
            id: [0; 32],
            pubkey: [0; 32],
            created_at: 0,
            kind,
            tags: tags
                .into_iter()
                .map(|t| t.into_iter().map(String::from).collect())
                .collect(),
            content: content.into(),
            sig: [0; 64],
        }
    }

    #[test]
    fn every_source_is_found() {
        assert_eq!(
            candidates(&ev(
                10002,
                vec![vec!["r", "wss://a.com"], vec!["r", "wss://b.com", "read"]],
                ""
            )),
            vec!["wss://a.com", "wss://b.com"]
        );
        assert_eq!(
            candidates(&ev(1, vec![vec!["r", "wss://not-a-list.com"]], "")),
            Vec::<&str>::new()
        );
        assert_eq!(
            candidates(&ev(
                1,
                vec![
                    vec!["e", "id", "wss://hint.com"],
                    vec!["p", "pk", ""],
                    vec!["a", "30023:pk:d", "wss://a-hint.com"]
                ],
                ""
            )),
            vec!["wss://hint.com", "wss://a-hint.com"]
        );
        assert_eq!(
            candidates(&ev(10050, vec![vec!["relay", "wss://dm.com"]], "")),
            vec!["wss://dm.com"]
        );
        assert_eq!(
            candidates(&ev(
                30002,
                vec![vec!["relay", "wss://set.com"], vec!["d", "x"]],
                ""
            )),
            vec!["wss://set.com"]
        );
        assert_eq!(
            candidates(&ev(30166, vec![vec!["d", "wss://monitored.com"]], "")),
            vec!["wss://monitored.com"]
        );
        assert_eq!(
            candidates(&ev(30023, vec![vec!["d", "wss://not-relay.com"]], "")),
            Vec::<&str>::new()
        );
        let k3_event = ev(
            3,
            vec![],
            r#"{"wss://x.com":{"read":true},"wss://y.com/":{"write":true}}"#,
        );
        let mut k3 = candidates(&k3_event);
        k3.sort();
        assert_eq!(k3, vec!["wss://x.com", "wss://y.com/"]);
        assert!(candidates(&ev(3, vec![], "not json")).is_empty());
        // Escaped slashes are decoded (a text search for the key would miss them).
        let escaped = ev(3, vec![], r#"{"wss:\/\/esc.com":{"read":true}}"#);
        assert_eq!(candidates(&escaped), vec!["wss://esc.com"]);
    }

    #[test]
    fn a_flood_of_candidates_is_capped_per_event() {
        let map: String = (0..16_000)
            .map(|i| format!(r#""wss://r{i}.junk.invalid":{{}}"#))
            .collect::<Vec<_>>()
            .join(",");
        let k3 = ev(3, vec![], &format!("{{{map}}}"));
        let c = candidates(&k3);
        assert_eq!(c.len(), MAX_CANDIDATES_PER_EVENT);
        assert_eq!(c[0], "wss://r0.junk.invalid");
        let tags: Vec<Vec<String>> = (0..1_000)
            .map(|i| vec!["r".into(), format!("wss://t{i}.junk.invalid")])
            .collect();
        let mut list = ev(10002, vec![], "");
        list.tags = tags;
        assert_eq!(candidates(&list).len(), MAX_CANDIDATES_PER_EVENT);
    }
}
