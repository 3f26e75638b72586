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
