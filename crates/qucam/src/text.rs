//! Camera text made safe to show: every string a camera sends (a device name, a refusal
//! message, an error page) reaches a log line, `status`, the CLI, `/metrics` or a
//! notification only through [`clean`]: cut to a length, with control characters (newlines,
//! terminal escapes, C1 controls) and bidirectional overrides replaced by `\u{fffd}`, so it
//! can neither forge a line nor drive a terminal. [`escape_markup`] further escapes it for
//! the markup of a desktop notification.

/// Characters of a refusal message kept in an error ([`CameraError::Api`](crate::CameraError::Api)).
pub const MESSAGE_CHARS: usize = 1024;
/// Characters of a device-info field kept (a device name, a firmware version, …).
pub const FIELD_CHARS: usize = 256;

/// `s` cut to `max_chars` characters (with `…` when cut), every control character and
/// bidirectional override replaced by `\u{fffd}`.
///
/// ```
/// assert_eq!(qucam::text::clean("CV200\n\u{1b}[31mFORGED", 64), "CV200\u{fffd}\u{fffd}[31mFORGED");
/// assert_eq!(qucam::text::clean("abcdef", 3), "abc…");
/// ```
pub fn clean(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars.saturating_mul(4)));
    let mut chars = s.chars();
    for c in chars.by_ref().take(max_chars) {
        out.push(if is_unsafe(c) { '\u{fffd}' } else { c });
    }
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// A character that must never reach a terminal or a log line from a camera: C0 and C1
/// controls (newline, escape, …), line and paragraph separators, and the bidirectional
/// formatting characters that can make text read other than it is.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// `s` with the characters of markup (`&`, `<`, `>`, quotes) escaped as XML entities, for
/// the body of a desktop notification (which the notification server reads as markup).
///
/// ```
/// assert_eq!(qucam::text::escape_markup("<b>a&b</b>"), "&lt;b&gt;a&amp;b&lt;/b&gt;");
/// ```
pub fn escape_markup(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_escapes_and_overrides_are_replaced() {
        let s = clean(
            "a\r\nb\u{1b}]0;title\u{7}c\u{9b}d\u{202e}e\u{2028}f\tg",
            100,
        );
        assert!(!s.chars().any(is_unsafe), "{s:?}");
        assert_eq!(s.lines().count(), 1, "{s:?}");
        assert!(s.starts_with('a') && s.ends_with('g'), "{s:?}");
    }

    #[test]
    fn cut_at_a_character_count_never_inside_one() {
        let s = clean(&"\u{e9}".repeat(10), 4);
        assert_eq!(s, "\u{e9}\u{e9}\u{e9}\u{e9}…");
        assert_eq!(clean("abc", 3), "abc");
        assert_eq!(clean("", 3), "");
    }
}
