//! Which strings in an event are relay URLs (PROTOCOL.md, "Where relay URLs come from").
//! Pure: returns raw candidates; the Finder normalizes them and applies the SSRF policy.

use crate::protocol::Event;

/// NIP-51 lists whose `relay` tags name relays: blocked (10006), search (10007), favourite
/// relays (10012), DM relays (10050), relay sets (30002).
const RELAY_LIST_KINDS: [u16; 5] = [10006, 10007, 10012, 10050, 30002];

/// Raw relay URL candidates in `ev`, in tag order, possibly with duplicates and junk.
pub fn candidates(ev: &Event) -> Vec<&str> {
    let mut out = Vec::new();
    for tag in &ev.tags {
        let (Some(name), Some(value)) = (tag.first(), tag.get(1)) else {
            continue;
        };
        match name.as_str() {
            // NIP-65 relay list; also simple-group lists (10009) carry relays in `r`.
            "r" if ev.kind == 10002 || ev.kind == 10009 => out.push(value.as_str()),
            "relay" if RELAY_LIST_KINDS.contains(&ev.kind) => out.push(value.as_str()),
            // NIP-66: the `d` tag of a relay discovery event is the relay URL.
            "d" if ev.kind == 30166 => out.push(value.as_str()),
            // Relay hints: third element of e/p/a/q tags on any kind.
            "e" | "p" | "a" | "q" => {
                if let Some(hint) = tag.get(2).filter(|h| !h.is_empty()) {
                    out.push(hint.as_str());
                }
            }
            _ => {}
        }
    }
    // Kind 3's legacy relay map: {"wss://...": {"read": true, "write": true}, ...}.
    if ev.kind == 3 && ev.content.trim_start().starts_with('{') {
        if let Ok(serde_json::Value::Object(map)) =
            serde_json::from_str::<serde_json::Value>(&ev.content)
        {
            // Borrow from the content: find each key's text in it (keys are plain URLs).
            for key in map.keys() {
                if let Some(pos) = ev.content.find(key.as_str()) {
                    out.push(&ev.content[pos..pos + key.len()]);
                }
            }
        }
    }
    out
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
    }
}
