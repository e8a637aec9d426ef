//! Relay-controlled text made inert before it reaches a log line or a terminal.
//!
//! CLOSED/OK/NOTICE reasons and NIP-11 strings are whatever a relay chose to send: up to a whole
//! websocket message, with newlines, ANSI escapes or lines that look like the node's own log
//! records. [`inert`] caps such text and escapes every control character, so one log record stays
//! one line and a terminal shows the bytes instead of obeying them.

/// Longest relay reason kept (characters); the rest is replaced by a note of how much was cut.
pub const MAX_REASON_CHARS: usize = 200;

/// `text` with control characters (C0, DEL, C1, and the Unicode line/paragraph separators and
/// bidi overrides) escaped as `\n`, `\t`, `\u{..}`, capped at `max_chars` characters.
pub fn inert(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars + 16));
    for (kept, (i, c)) in text.char_indices().enumerate() {
        if kept >= max_chars {
            out.push_str(&format!("… ({} more bytes)", text.len() - i));
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push('\\'),
            c if c.is_control() || is_invisible_format(c) => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// Characters that move or reorder what a terminal shows without being `is_control`.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_caps_length() {
        assert_eq!(inert("blocked: no", 200), "blocked: no");
        assert_eq!(
            inert("a\nINFO fake line\r\x1b[31m\u{202e}x", 200),
            "a\\nINFO fake line\\r\\u{1b}[31m\\u{202e}x"
        );
        let long = "x".repeat(500_000);
        let s = inert(&long, 10);
        assert_eq!(s, format!("xxxxxxxxxx… ({} more bytes)", 500_000 - 10));
        assert!(!inert(&"\n".repeat(1000), 200).contains('\n'));
        // Multi-byte characters are counted, not split.
        assert_eq!(inert("ééé", 2), "éé… (2 more bytes)");
    }
}
