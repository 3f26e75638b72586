//! Object keys: where a clip goes in the bucket (or the local destination).
//!
//! Keys are built only from a [`ClipName`] that passed [`ClipName::parse`] and an IMEI that
//! passed [`check_imei`], never from the camera's path, so a hostile listing cannot steer a
//! key anywhere else. The key prefix from the config is checked here too.

use qucam::{ClipName, NameError, check_imei};

/// Checks a key prefix (outer slashes aside): no empty, `.` or `..` segment, no control
/// characters or backslashes. The config loader and [`object_key`] both apply it.
pub fn check_prefix(prefix: &str) -> Result<(), NameError> {
    let t = prefix.trim_matches('/');
    if t.is_empty() {
        return Ok(());
    }
    for seg in t.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(NameError(format!(
                "{prefix:?} has an empty, \".\" or \"..\" path segment"
            )));
        }
        if seg.chars().any(|c| c.is_control() || c == '\\') {
            return Err(NameError(format!(
                "{prefix:?} has control characters or backslashes"
            )));
        }
    }
    Ok(())
}

/// The object key: `{prefix}/{imei}/{YYYY-MM-DD}/{file name}` (no prefix: no leading slash).
pub fn object_key(prefix: &str, imei: &str, name: &ClipName) -> Result<String, NameError> {
    check_imei(imei)?;
    check_prefix(prefix)?;
    let prefix = prefix.trim_matches('/');
    let tail = format!("{imei}/{}/{}", name.date(), name.as_str());
    Ok(if prefix.is_empty() {
        tail
    } else {
        format!("{prefix}/{tail}")
    })
}

/// The key of a clip whose key is hashed (a later generation of a path, or the same file
/// name at another path): [`object_key`] with `~<first 8 hex of the SHA-256>` before the
/// extension, e.g. `…/20210101_000012_01_1~1a2b3c4d.mp4`. Two agents holding the same bytes
/// choose the same key; other bytes never land on another clip's key.
pub fn hashed_object_key(
    prefix: &str,
    imei: &str,
    name: &ClipName,
    sha256_hex: &str,
) -> Result<String, NameError> {
    let plain = object_key(prefix, imei, name)?;
    let short = sha256_hex.get(..8).filter(|h| {
        h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    let Some(short) = short else {
        return Err(NameError(format!(
            "not a SHA-256 (hex) for the key of {}",
            name.as_str()
        )));
    };
    let file = name.as_str();
    let (stem, ext) = file.rsplit_once('.').unwrap_or((file, ""));
    let dir = &plain[..plain.len() - file.len()];
    Ok(format!("{dir}{stem}~{short}.{ext}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout() {
        let n = ClipName::parse("20210427_115134_04_2.mp4").unwrap();
        assert_eq!(
            object_key("dashcam", "867867432522518", &n).unwrap(),
            "dashcam/867867432522518/2021-04-27/20210427_115134_04_2.mp4"
        );
        assert_eq!(
            object_key("", "1", &n).unwrap(),
            "1/2021-04-27/20210427_115134_04_2.mp4"
        );
        assert!(object_key("p", "../x", &n).is_err());
    }

    #[test]
    fn a_hashed_key_adds_eight_hex_of_the_digest() {
        let n = ClipName::parse("20210101_000012_01_1.mp4").unwrap();
        let sha = "1a2b3c4d".to_string() + &"0".repeat(56);
        assert_eq!(
            hashed_object_key("dashcam", "867867432522518", &n, &sha).unwrap(),
            "dashcam/867867432522518/2021-01-01/20210101_000012_01_1~1a2b3c4d.mp4"
        );
        let ts = ClipName::parse("20210101_000012_01_2.ts").unwrap();
        assert_eq!(
            hashed_object_key("", "1", &ts, &sha).unwrap(),
            "1/2021-01-01/20210101_000012_01_2~1a2b3c4d.ts"
        );
        for bad in ["", "1a2b", "1A2B3C4D", "../../../x", "zzzzzzzzzz"] {
            assert!(hashed_object_key("", "1", &n, bad).is_err(), "{bad:?}");
        }
    }

    /// Fuzz finding (clip_name): the key builder trusted its prefix, so a prefix with a
    /// control character (or "..", "." or empty segments) went into the key as it was.
    #[test]
    fn key_refuses_unsafe_prefix() {
        let n = ClipName::parse("20210428_115134_00_1.mp4").unwrap();
        for bad in ["d\u{1}4hcam", "a/../b", "..", "a//b", "./a", "a\\b", "a/\0"] {
            assert!(object_key(bad, "867867432522518", &n).is_err(), "{bad:?}");
        }
        for good in ["", "/", "/a/b/", "fleet.video/2024", "a..b"] {
            assert!(object_key(good, "867867432522518", &n).is_ok(), "{good:?}");
        }
    }
}
