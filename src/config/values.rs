//! Durations and sizes as written in the file (`"30s"`, `"64MiB"`, `1048576`, `"auto"`),
//! parsed exactly, and the serde hooks that use them.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses a duration such as `30s`, `5m`, `1h 30m` or `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("invalid duration {s:?} ({e}); write e.g. \"30s\", \"5m\", \"1h\""))
}

/// Parses a byte size: an integer, or a string such as `64MiB`, `8 MiB`, `1.5GB`, `512k`
/// (decimal `k`/`KB`, `M`/`MB`, …; binary `KiB`, `MiB`, …; case-insensitive), exactly in
/// integers by `parse-size` (a fraction of a byte rounds to the nearest byte).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    parse_size::parse_size(s.trim())
        .map_err(|_| format!("invalid size {s:?}; write e.g. 1048576, \"64MiB\", \"2GB\""))
}

pub(super) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// A size as written in the file: a number of bytes or a string such as `"16MiB"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Num(i64),
    Str(String),
}

impl SizeValue {
    fn bytes(self) -> Result<u64, String> {
        match self {
            SizeValue::Num(n) => {
                u64::try_from(n).map_err(|_| format!("size must not be negative (got {n})"))
            }
            SizeValue::Str(s) => parse_bytes(&s),
        }
    }
}

pub(super) fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    SizeValue::deserialize(d)?
        .bytes()
        .map_err(serde::de::Error::custom)
}

/// `"auto"` → `None`; a size (as for [`de_bytes`]) → `Some`.
pub(super) fn de_threshold<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match SizeValue::deserialize(d)? {
        SizeValue::Str(s) if s.trim().eq_ignore_ascii_case("auto") => Ok(None),
        v => v
            .bytes()
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{e} (or \"auto\")"))),
    }
}
