//! [`Download`]: a clip download in progress, streamed chunk by chunk, resumable from a
//! byte offset; and [`parse_content_range`] for the camera's `Content-Range` replies.

use std::time::Duration;

use bytes::Bytes;

use crate::error::{CameraError, map_reqwest};

/// A download in progress: the response status, what range was served, and the body.
/// Made by [`CameraClient::download`](crate::CameraClient::download).
///
/// ```no_run
/// # async fn resume(camera: &qucam::CameraClient, path: &str, have: u64) -> Result<(), qucam::CameraError> {
/// let mut dl = camera.download(path, have).await?;
/// if !dl.resumed {
///     // The camera sent the whole file from byte 0: throw away the partial copy.
/// }
/// while let Some(chunk) = dl.chunk().await? {
///     // append `chunk` at `dl.start + bytes so far`
/// #   let _ = chunk;
/// }
/// # Ok(())
/// # }
/// ```
pub struct Download {
    pub(crate) response: reqwest::Response,
    pub(crate) idle: Duration,
    /// True when the camera answered 206 from the offset asked; false when it sent the
    /// whole file from byte 0 (the caller must start over).
    pub resumed: bool,
    /// First byte of this body within the file.
    pub start: u64,
    /// Total file size, when the camera said (Content-Range or Content-Length).
    pub total: Option<u64>,
}

impl Download {
    /// The idle timeout this download was opened with.
    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }

    /// The next chunk of the body, `None` at its end. Fails with `Timeout` when the
    /// camera sends nothing for the idle timeout.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, CameraError> {
        match tokio::time::timeout(self.idle, self.response.chunk()).await {
            Err(_) => Err(CameraError::Timeout(format!(
                "no data for {:?} during download",
                self.idle
            ))),
            Ok(r) => r.map_err(map_reqwest),
        }
    }
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`) into `(START, TOTAL)`. A range that is
/// not valid (END before START, or not below a known TOTAL) is `None`, as if absent.
///
/// ```
/// use qucam::parse_content_range;
///
/// assert_eq!(parse_content_range("bytes 100-199/200"), Some((100, Some(200))));
/// assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
/// assert_eq!(parse_content_range("bytes 100-199/100"), None);
/// ```
pub fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    let total: Option<u64> = total.trim().parse().ok();
    if end < start || total.is_some_and(|t| end >= t) {
        return None;
    }
    Some((start, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    /// Fuzz finding (reply_decoder): a range past the total, or ending before it starts,
    /// was taken as valid.
    #[test]
    fn content_range_must_be_consistent() {
        assert_eq!(parse_content_range("bytes 100-199/100"), None);
        assert_eq!(parse_content_range("bytes 100-99/200"), None);
        assert_eq!(parse_content_range("bytes 100-/200"), None);
        assert_eq!(parse_content_range("bytes 0-0/1"), Some((0, Some(1))));
        assert_eq!(parse_content_range("bytes 7-7/*"), Some((7, None)));
    }
}
