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
}
