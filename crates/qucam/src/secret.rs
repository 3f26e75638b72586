//! [`Secret`]: a value (the camera's hotspot password, a storage key) that never shows in
//! logs or output.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A secret (the hotspot password): never shown by `Debug`, `Display` or `Serialize`.
/// It deserializes from a plain string, so a configuration file can hold one.
///
/// ```
/// use qucam::Secret;
///
/// let s = Secret::new("12345678");
/// assert_eq!(format!("{s} {s:?}"), "******** \"********\"");
/// assert_eq!(s.expose(), "12345678");
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The real value, for the one place that asked for it explicitly.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"********\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("********")
    }
}

/// Words that make a key name a secret's (case-insensitive, anywhere in the name):
/// `password`, `passwd`, `pwd`, `psk`, `secret`, `token`, `apiKey`, `access_key`, …
const SECRET_WORDS: [&str; 6] = ["pass", "pwd", "psk", "secret", "token", "key"];
/// Longest text parsed as JSON to find its secrets; longer text gets the text rule.
const MAX_JSON: usize = 64 * 1024;
/// How deep JSON held in strings (device info inside a reply) is followed.
const MAX_DEPTH: usize = 4;
const MASK: &str = "********";

/// `text` with the value of every key that holds a secret masked, for quoting camera
/// replies in errors (`get_device_info` carries the hotspot password).
///
/// Text that is JSON is parsed (objects inside JSON strings too): every value under a
/// secret key (see [`is_secret_key`]) is replaced wherever it appears, in any quoting. Text
/// that is not JSON (an excerpt cut short, a plain message) gets a conservative rule: after
/// a secret key word followed by `:` or `=` (across quotes, backslashes, spaces and line
/// breaks), the rest of that line is masked.
///
/// ```
/// use qucam::secret::mask_secrets;
///
/// assert_eq!(
///     mask_secrets(r#"{"imei":"1","password":"hunter22"}"#),
///     r#"{"imei":"1","password":"********"}"#
/// );
/// // Cut short, not JSON: the rest of the line goes.
/// assert_eq!(mask_secrets(r#"{"psk":"a,b\"c"#), r#"{"psk":"********"#);
/// ```
pub fn mask_secrets(text: &str) -> String {
    if text.len() <= MAX_JSON
        && let Ok(v) = serde_json::from_str::<Value>(text.trim())
    {
        let mut secrets = Vec::new();
        collect_secrets(&v, false, 0, &mut secrets);
        let masked = replace_secrets(text, secrets);
        // A value the parse did not give as written (another escaped form, a duplicate key
        // the parse dropped): the text rule, by position, instead.
        if !value_left_after_a_key(&masked) {
            return masked;
        }
    }
    mask_text(text)
}

/// Whether some secret key word in `text` is followed by a `:` or `=` and then a value that
/// is neither the mask nor an object or array (whose values are looked at in turn).
fn value_left_after_a_key(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let b = lower.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let Some((j, separated)) = after_key(b, i) else {
            i += 1;
            continue;
        };
        if separated && j < b.len() && !text[j..].starts_with(MASK) && !matches!(b[j], b'{' | b'[')
        {
            return true;
        }
        i = j.max(i + 1);
    }
    false
}

/// When a secret key word starts at `i` of `b` (lower case): where its value starts (past
/// the rest of the key name, quotes, spaces, line breaks and a separator), and whether a
/// `:` or `=` separated them.
fn after_key(b: &[u8], i: usize) -> Option<(usize, bool)> {
    let w = SECRET_WORDS
        .iter()
        .find(|w| b[i..].starts_with(w.as_bytes()))?;
    let mut j = i + w.len();
    while j < b.len() && (b[j].is_ascii_alphanumeric() || matches!(b[j], b'_' | b'-')) {
        j += 1;
    }
    let mut separated = false;
    while j < b.len()
        && matches!(
            b[j],
            b'"' | b'\'' | b'\\' | b' ' | b'\t' | b'\r' | b'\n' | b':' | b'='
        )
    {
        separated |= matches!(b[j], b':' | b'=');
        j += 1;
    }
    Some((j, separated))
}

/// A key name that holds a secret: it contains one of `pass`, `pwd`, `psk`, `secret`,
/// `token` or `key`, in any letter case.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| k.contains(w))
}

/// Every scalar under a secret key of `v` (all of them when `secret`), as text.
fn collect_secrets(v: &Value, secret: bool, depth: usize, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                collect_secrets(x, secret || is_secret_key(k), depth, out);
            }
        }
        Value::Array(a) => a
            .iter()
            .for_each(|x| collect_secrets(x, secret, depth, out)),
        Value::String(s) => {
            let t = s.trim();
            let inner = (depth < MAX_DEPTH && (t.starts_with('{') || t.starts_with('[')))
                .then(|| serde_json::from_str::<Value>(t).ok())
                .flatten();
            match inner {
                Some(inner) => collect_secrets(&inner, secret, depth + 1, out),
                // A message that names a secret in it: the whole message is one.
                None if secret || mask_text(s) != *s => out.push(s.clone()),
                None => {}
            }
        }
        Value::Number(n) if secret => out.push(n.to_string()),
        Value::Bool(b) if secret => out.push(b.to_string()),
        _ => {}
    }
}

/// `text` with every secret replaced, raw and in each JSON quoting up to [`MAX_DEPTH`].
fn replace_secrets(text: &str, secrets: Vec<String>) -> String {
    let mut forms: Vec<String> = Vec::new();
    for s in secrets.into_iter().filter(|s| !s.is_empty()) {
        let mut form = s;
        for _ in 0..=MAX_DEPTH {
            let quoted = serde_json::to_string(&form).unwrap_or_default();
            let next = quoted
                .strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .unwrap_or_default()
                .to_string();
            forms.push(form);
            if next == *forms.last().unwrap_or(&String::new()) {
                break;
            }
            form = next;
        }
    }
    // Longest first, so a secret holding another is masked whole.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    let mut out = text.to_string();
    for f in forms {
        if out.contains(&f) {
            out = out.replace(&f, MASK);
        }
    }
    out
}

/// The text rule: after a secret key word and a `:` or `=`, the rest of the line is masked.
fn mask_text(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let b = lower.as_bytes();
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut i) = (0, 0);
    while i < b.len() {
        let Some((j, separated)) = after_key(b, i) else {
            i += 1;
            continue;
        };
        if !separated {
            i = j.max(i + 1);
            continue;
        }
        let end = b[j..]
            .iter()
            .position(|&c| c == b'\n' || c == b'\r')
            .map_or(b.len(), |p| j + p);
        if end > j {
            out.push_str(&text[copied..j]);
            out.push_str(MASK);
            copied = end;
        }
        i = end.max(i + 1);
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shown() {
        let s = Secret::new("hunter22");
        assert_eq!(s.expose(), "hunter22");
        let shown = format!("{s} {s:?} {}", serde_json::to_string(&s).unwrap());
        assert!(!shown.contains("hunter22"), "{shown}");
        let back: Secret = serde_json::from_str("\"pw\"").unwrap();
        assert_eq!(back.expose(), "pw");
    }

    #[test]
    fn a_secret_the_parse_gives_otherwise_than_written_is_masked_by_position() {
        for (text, secret) in [
            // `/` written `\/`, `=` written as a unicode escape (org.json, Gson).
            (r#"{"info":"{\"password\":\"a\\/b\u003dc\"}"}"#, "a\\/b"),
            (r#"{"password":"a\/b"}"#, "a\\/b"),
            // A duplicate key: the parse keeps the last one only.
            (r#"{"password":"real","password":"x"}"#, "real"),
        ] {
            let masked = mask_secrets(text);
            assert!(!masked.contains(secret), "{text} -> {masked}");
            assert!(masked.contains(MASK), "{masked}");
        }
        // Masked values and nested objects are left as they are.
        assert_eq!(
            mask_secrets(r#"{"keys":{"psk":"x1"},"imei":"1"}"#),
            r#"{"keys":{"psk":"********"},"imei":"1"}"#
        );
    }

    #[test]
    fn passwords_are_masked_in_any_quoting() {
        for (text, secret) in [
            (r#"{"password":"hunter22","imei":"1"}"#, "hunter22"),
            (r#"{"data":"{\"Password\": \"s3cr3t!\"}"}"#, "s3cr3t!"),
            (r#"password: plain text"#, "plain"),
        ] {
            let masked = mask_secrets(text);
            assert!(!masked.contains(secret), "{masked}");
            assert!(masked.contains("********"), "{masked}");
        }
        assert_eq!(mask_secrets("no secret here"), "no secret here");
        assert_eq!(mask_secrets("password"), "password");
    }

    #[test]
    fn every_secret_key_is_masked_in_parsed_json_whatever_its_value_holds() {
        let text = r#"{"ssid":"q","password":"a,b}\"c\\d","psk":"p s k","apiKey":12345678,"token":["t0k3n"],"wifi":{"Pwd":"x\ny"},"data":"{\"secret\":\"s3,}\\\"x\"}"}"#;
        let masked = mask_secrets(text);
        for secret in [
            "a,b", "c\\\\d", "p s k", "12345678", "t0k3n", "x\\ny", "s3", "x\\\"",
        ] {
            assert!(!masked.contains(secret), "{secret} in {masked}");
        }
        assert!(masked.contains(r#""ssid":"q""#), "{masked}");
    }

    #[test]
    fn a_value_after_a_line_break_or_cut_short_is_masked() {
        for (text, secret) in [
            ("{\"password\"\n:\n\"hunter22\"", "hunter22"),
            ("password =\r\n  hunter22", "hunter22"),
            (r#"{"imei":"1","password":"hun,ter}22\"x"#, "ter}22"),
            (r#"{\"psk\":\"a\\\"b,c"#, "b,c"),
            ("refused: token: abc def\nnext line", "abc def"),
        ] {
            let masked = mask_secrets(text);
            assert!(!masked.contains(secret), "{secret} in {masked:?}");
            assert!(masked.contains("********"), "{masked:?}");
        }
        assert!(mask_secrets("token: x\nnext line").ends_with("\nnext line"));
    }
}
