//! [`Secret`]: a value (the camera's hotspot password, a storage key) that never shows in
//! logs or output.

use std::fmt;

use serde::{Deserialize, Serialize};

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

/// `text` with the value of every `password` key masked (`"password":"…"`, also inside a
/// JSON string, `\"password\":\"…\"`): for quoting camera replies in errors, which may
/// carry the hotspot password (`get_device_info`).
///
/// ```
/// assert_eq!(
///     qucam::secret::mask_passwords(r#"{"imei":"1","password":"hunter22"}"#),
///     r#"{"imei":"1","password":"********"}"#
/// );
/// ```
pub fn mask_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.to_ascii_lowercase().find("password") {
        let (head, tail) = rest.split_at(at + "password".len());
        out.push_str(head);
        // Past the key's closing quote, the colon and the value's opening quote.
        let value_at = tail
            .char_indices()
            .take_while(|(_, c)| matches!(c, '"' | '\\' | ':' | ' ' | '\t'))
            .last()
            .map_or(0, |(i, c)| i + c.len_utf8());
        let (lead, value) = tail.split_at(value_at);
        out.push_str(lead);
        if !lead.contains(':') {
            rest = value;
            continue;
        }
        let end = value.find(['"', '\\', ',', '}']).unwrap_or(value.len());
        out.push_str("********");
        rest = &value[end..];
    }
    out.push_str(rest);
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
    fn passwords_are_masked_in_any_quoting() {
        for (text, secret) in [
            (r#"{"password":"hunter22","imei":"1"}"#, "hunter22"),
            (r#"{"data":"{\"Password\": \"s3cr3t!\"}"}"#, "s3cr3t!"),
            (r#"password: plain text"#, "plain"),
        ] {
            let masked = mask_passwords(text);
            assert!(!masked.contains(secret), "{masked}");
            assert!(masked.contains("********"), "{masked}");
        }
        assert_eq!(mask_passwords("no secret here"), "no secret here");
        assert_eq!(mask_passwords("password"), "password");
    }
}
