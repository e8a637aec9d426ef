//! NIP-01 filters: fields AND, list values OR, `since <= created_at <= until` inclusive.
//!
//! Used both ways: the synchronizer sends filters to relays, and `events export --filter` reads
//! one from the operator. Parsing is strict (an unknown field is an error that names it) because a
//! filter that silently ignores a typo would export the wrong data.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::event::{decode_hex, Event};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Event ids, 64-char lowercase hex.
    pub ids: Vec<String>,
    /// Author pubkeys, 64-char lowercase hex.
    pub authors: Vec<String>,
    pub kinds: Vec<u16>,
    /// `#x` tag filters: single-letter tag name -> accepted values.
    pub tags: BTreeMap<char, Vec<String>>,
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub limit: Option<u64>,
}

impl Filter {
    pub fn to_json(&self) -> String {
        let mut m = Map::new();
        if !self.ids.is_empty() {
            m.insert("ids".into(), self.ids.clone().into());
        }
        if !self.authors.is_empty() {
            m.insert("authors".into(), self.authors.clone().into());
        }
        if !self.kinds.is_empty() {
            m.insert("kinds".into(), self.kinds.clone().into());
        }
        for (k, v) in &self.tags {
            m.insert(format!("#{k}"), v.clone().into());
        }
        if let Some(s) = self.since {
            m.insert("since".into(), s.into());
        }
        if let Some(u) = self.until {
            m.insert("until".into(), u.into());
        }
        if let Some(l) = self.limit {
            m.insert("limit".into(), l.into());
        }
        Value::Object(m).to_string()
    }

    /// Parse a filter written by an operator; errors name the offending field.
    pub fn from_json(text: &str) -> Result<Filter, String> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| format!("filter is not JSON: {e}"))?;
        let Value::Object(m) = v else {
            return Err("filter must be a JSON object such as {\"kinds\":[1]}".into());
        };
        let mut f = Filter::default();
        for (key, value) in m {
            match key.as_str() {
                "ids" | "authors" => {
                    let list = string_list(&key, &value)?;
                    if let Some(bad) = list.iter().find(|s| decode_hex::<32>(s).is_none()) {
                        return Err(format!(
                            "filter field {key:?}: {bad:?} is not 64 lowercase hex characters"
                        ));
                    }
                    if key == "ids" {
                        f.ids = list;
                    } else {
                        f.authors = list;
                    }
                }
                "kinds" => {
                    let arr = value
                        .as_array()
                        .ok_or("filter field \"kinds\" must be a list of integers")?;
                    for k in arr {
                        let k = k
                            .as_u64()
                            .and_then(|k| u16::try_from(k).ok())
                            .ok_or("filter field \"kinds\": every kind is an integer 0-65535")?;
                        f.kinds.push(k);
                    }
                }
                "since" | "until" | "limit" => {
                    let n = value
                        .as_u64()
                        .ok_or_else(|| format!("filter field {key:?} must be a non-negative integer"))?;
                    match key.as_str() {
                        "since" => f.since = Some(n),
                        "until" => f.until = Some(n),
                        _ => f.limit = Some(n),
                    }
                }
                tag if tag.len() == 2 && tag.starts_with('#') => {
                    let letter = tag.chars().nth(1).filter(char::is_ascii_alphabetic).ok_or_else(
                        || format!("filter field {tag:?}: tag filters are '#' plus one letter"),
                    )?;
                    f.tags.insert(letter, string_list(tag, &value)?);
                }
                other => {
                    return Err(format!(
                        "unknown filter field {other:?}; fields are ids, authors, kinds, #<letter>, since, until, limit"
                    ))
                }
            }
        }
        Ok(f)
    }

    /// The longest value list of any field (what a server caps per filter).
    pub fn max_values(&self) -> usize {
        self.ids
            .len()
            .max(self.authors.len())
            .max(self.kinds.len())
            .max(self.tags.values().map(Vec::len).max().unwrap_or(0))
    }

    /// Does the event match every field of this filter (`limit` is not a matching field)?
    pub fn matches(&self, ev: &Event) -> bool {
        if let Some(s) = self.since {
            if ev.created_at < s {
                return false;
            }
        }
        if let Some(u) = self.until {
            if ev.created_at > u {
                return false;
            }
        }
        if !self.kinds.is_empty() && !self.kinds.contains(&ev.kind) {
            return false;
        }
        if !self.ids.is_empty() && !self.ids.iter().any(|i| decode_hex::<32>(i) == Some(ev.id)) {
            return false;
        }
        if !self.authors.is_empty()
            && !self
                .authors
                .iter()
                .any(|a| decode_hex::<32>(a) == Some(ev.pubkey))
        {
            return false;
        }
        self.tags.iter().all(|(letter, values)| {
            let mut buf = [0u8; 4];
            let name: &str = letter.encode_utf8(&mut buf);
            ev.tags.iter().any(|t| {
                t.first().map(String::as_str) == Some(name)
                    && t.get(1).is_some_and(|v| values.contains(v))
            })
        })
    }
}

fn string_list(key: &str, value: &Value) -> Result<Vec<String>, String> {
    value
        .as_array()
        .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect())
        .ok_or_else(|| format!("filter field {key:?} must be a list of strings"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(created_at: u64, kind: u16, tags: Vec<Vec<String>>) -> Event {
        Event {
            id: [1; 32],
            pubkey: [2; 32],
            created_at,
            kind,
            tags,
            content: String::new(),
            sig: [0; 64],
        }
    }

    #[test]
    fn since_until_are_inclusive_and_fields_and() {
        let f = Filter::from_json(r#"{"since":10,"until":20,"kinds":[1,7]}"#).unwrap();
        assert!(f.matches(&ev(10, 1, vec![])));
        assert!(f.matches(&ev(20, 7, vec![])));
        assert!(!f.matches(&ev(9, 1, vec![])));
        assert!(!f.matches(&ev(21, 1, vec![])));
        assert!(!f.matches(&ev(15, 2, vec![])));
    }

    #[test]
    fn tag_and_author_filters() {
        let pk = hex::encode([2u8; 32]);
        let f = Filter::from_json(&format!(r##"{{"authors":["{pk}"],"#p":["x","y"]}}"##)).unwrap();
        assert!(f.matches(&ev(1, 1, vec![vec!["p".into(), "y".into()]])));
        assert!(!f.matches(&ev(1, 1, vec![vec!["e".into(), "y".into()]])));
        let other =
            Filter::from_json(&format!(r#"{{"authors":["{}"]}}"#, hex::encode([3u8; 32]))).unwrap();
        assert!(!other.matches(&ev(1, 1, vec![])));
    }

    #[test]
    fn strict_parsing_names_the_field() {
        assert!(Filter::from_json(r#"{"kind":[1]}"#)
            .unwrap_err()
            .contains("\"kind\""));
        assert!(Filter::from_json(r#"{"since":-1}"#)
            .unwrap_err()
            .contains("\"since\""));
        assert!(Filter::from_json(r#"{"authors":["ABC"]}"#)
            .unwrap_err()
            .contains("authors"));
        assert!(Filter::from_json(r#"{"kinds":[70000]}"#).is_err());
        assert!(Filter::from_json("[1]").is_err());
    }

    #[test]
    fn json_round_trip() {
        let f =
            Filter::from_json(r##"{"kinds":[1],"#t":["nostr"],"since":5,"until":9,"limit":3}"##)
                .unwrap();
        assert_eq!(Filter::from_json(&f.to_json()).unwrap(), f);
    }
}
