//! Clip names, and checks of the other strings a camera hands out (paths, IMEIs).
//!
//! A camera names its clips `yyyyMMdd_HHmmss_EE_C.ext` (`EE` the event code, see
//! [`crate::events`]; `C` the camera). A listing comes from the camera and may be hostile:
//! derive file names and storage keys from a name that passed [`ClipName::parse`], never
//! from the camera's path, so a listing cannot steer a file or a key anywhere else.

use std::fmt;

use chrono::NaiveDateTime;

/// Why a camera-supplied name or path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(pub String);

/// A validated clip file name.
///
/// ```
/// use qucam::ClipName;
///
/// let name = ClipName::parse("20210427_115134_04_2.mp4")?;
/// assert_eq!(name.event_code(), "04");
/// assert_eq!(name.camera_label(), "interior");
/// assert_eq!(name.date(), "2021-04-27");
/// assert!(ClipName::parse("../../etc/passwd").is_err());
/// # Ok::<(), qucam::NameError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipName {
    name: String,
    recorded: NaiveDateTime,
    event: String,
    camera: u8,
}

/// Longest name accepted (the real format is 24 characters).
const MAX_NAME: usize = 64;

impl ClipName {
    /// Parses and validates a camera file name such as `20210427_115134_04_1.mp4`.
    pub fn parse(name: &str) -> Result<ClipName, NameError> {
        let bad = |why: &str| NameError(format!("refused clip name {:?}: {why}", excerpt(name)));
        if name.is_empty() {
            return Err(bad("empty"));
        }
        if name.len() > MAX_NAME {
            return Err(bad("too long"));
        }
        if name.contains('\0') {
            return Err(bad("contains NUL"));
        }
        if name.contains('/') || name.contains('\\') || name.contains("..") {
            return Err(bad("contains a path separator or \"..\""));
        }
        let (stem, ext) = name.rsplit_once('.').ok_or_else(|| bad("no extension"))?;
        if !matches!(ext, "mp4" | "ts" | "MP4" | "TS") {
            return Err(bad("extension is not .mp4 or .ts"));
        }
        let parts: Vec<&str> = stem.split('_').collect();
        let [date, time, event, cam] = parts.as_slice() else {
            return Err(bad("not of the form yyyyMMdd_HHmmss_EE_C"));
        };
        let all_digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(date, 8) || !all_digits(time, 6) {
            return Err(bad("date or time is not yyyyMMdd_HHmmss"));
        }
        let recorded = NaiveDateTime::parse_from_str(&format!("{date}{time}"), "%Y%m%d%H%M%S")
            .map_err(|_| bad("date or time out of range"))?;
        if event.len() != 2 || !event.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("event code is not two hex digits"));
        }
        let camera = match *cam {
            "1" => 1,
            "2" => 2,
            _ => return Err(bad("camera is not 1 or 2")),
        };
        Ok(ClipName {
            name: name.to_string(),
            recorded,
            event: event.to_ascii_uppercase(),
            camera,
        })
    }

    /// The name as the camera wrote it.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Recording time as written in the name (camera local time).
    pub fn recorded(&self) -> NaiveDateTime {
        self.recorded
    }

    /// Event code, e.g. `"04"`; `"00"` is a loop recording.
    pub fn event_code(&self) -> &str {
        &self.event
    }

    /// 1 front, 2 interior.
    pub fn camera(&self) -> u8 {
        self.camera
    }

    /// `"front"` or `"interior"`.
    pub fn camera_label(&self) -> &'static str {
        if self.camera == 1 {
            "front"
        } else {
            "interior"
        }
    }

    /// Whether the clip was recorded for an event (anything but a `00` loop recording).
    pub fn is_event(&self) -> bool {
        self.event != "00"
    }

    /// `YYYY-MM-DD` of the recording.
    pub fn date(&self) -> String {
        self.recorded.format("%Y-%m-%d").to_string()
    }
}

impl fmt::Display for ClipName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Checks a camera path: absolute, ends in `/<name>`, no `..`, `.`, empty segments,
/// backslashes, percent signs or control characters.
pub fn check_camera_path(path: &str, name: &ClipName) -> Result<(), NameError> {
    let bad = |why: &str| NameError(format!("refused camera path {:?}: {why}", excerpt(path)));
    if path.len() > 1024 {
        return Err(bad("too long"));
    }
    if !path.starts_with('/') {
        return Err(bad("not absolute"));
    }
    if path
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == '%')
    {
        return Err(bad(
            "contains control characters, backslashes or percent-encoding",
        ));
    }
    let segs: Vec<&str> = path[1..].split('/').collect();
    if segs.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return Err(bad("contains an empty, \".\" or \"..\" segment"));
    }
    if segs.last() != Some(&name.as_str()) {
        return Err(bad("does not end with the clip's name"));
    }
    Ok(())
}

/// Checks an IMEI before it becomes part of a key or a file name.
///
/// ```
/// assert!(qucam::check_imei("867867432522518").is_ok());
/// assert!(qucam::check_imei("../x").is_err());
/// ```
pub fn check_imei(imei: &str) -> Result<(), NameError> {
    if imei.is_empty()
        || imei.len() > 32
        || !imei.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(NameError(format!(
            "refused IMEI {:?}: expected 1-32 letters or digits",
            excerpt(imei)
        )));
    }
    Ok(())
}

/// At most 1024 characters of a hostile string, for storing a camera path.
pub fn excerpt_long(s: &str) -> String {
    s.chars().take(1024).collect()
}

/// At most 60 characters of a hostile string, for messages, made safe to show
/// ([`crate::text::clean`]). A secret in it is masked first ([`crate::secret::mask_secrets`]).
pub fn excerpt(s: &str) -> String {
    let head: String = s.chars().take(4096).collect();
    crate::text::clean(&crate::secret::mask_secrets(&head), 60)
}

/// At most [`MESSAGE_CHARS`](crate::text::MESSAGE_CHARS) characters of a camera's message,
/// secrets masked and made safe to show: a refusal's text, with its line breaks and
/// escape sequences replaced.
pub fn message_excerpt(s: &str) -> String {
    use crate::text::MESSAGE_CHARS;
    let head: String = s.chars().take(MESSAGE_CHARS + 1).collect();
    crate::text::clean(&crate::secret::mask_secrets(&head), MESSAGE_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vendor_example() {
        let n = ClipName::parse("20210427_115134_00_1.mp4").unwrap();
        assert_eq!(n.event_code(), "00");
        assert_eq!(n.camera(), 1);
        assert_eq!(n.date(), "2021-04-27");
        assert!(!n.is_event());
        let n = ClipName::parse("20210916_025007_0A_2.ts").unwrap();
        assert!(n.is_event());
        assert_eq!(n.event_code(), "0A");
    }

    #[test]
    fn refuses_tricks() {
        for bad in [
            "",
            "../20210427_115134_00_1.mp4",
            "20210427_115134_00_1.mp4/..",
            "a/20210427_115134_00_1.mp4",
            "20210427_115134_00_1.mp4\0",
            "..\\20210427_115134_00_1.mp4",
            "20211327_115134_00_1.mp4",
            "20210427_115134_00_3.mp4",
            "20210427_115134_0G_1.mp4",
            "20210427_115134_00_1.exe",
            "20210427_115134_00_1",
            "%2e%2e",
        ] {
            assert!(ClipName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn camera_path_must_match_name() {
        let n = ClipName::parse("20210427_115134_00_1.mp4").unwrap();
        let good = "/storage/sdcard1/queclink/video/20210427/11/20210427_115134_00_1.mp4";
        assert!(check_camera_path(good, &n).is_ok());
        for bad in [
            "/storage/../etc/20210427_115134_00_1.mp4",
            "storage/20210427_115134_00_1.mp4",
            "/storage//20210427_115134_00_1.mp4",
            "/storage/%2e%2e/20210427_115134_00_1.mp4",
            "/storage\\x/20210427_115134_00_1.mp4",
            "/storage/other.mp4",
        ] {
            assert!(check_camera_path(bad, &n).is_err(), "{bad:?} accepted");
        }
    }
}
