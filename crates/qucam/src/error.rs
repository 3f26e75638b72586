//! [`CameraError`]: everything that can go wrong talking to a camera, and whether it is
//! worth retrying.

/// Everything that can go wrong talking to a camera.
///
/// Callers branch on it: [`is_transient`](CameraError::is_transient) errors are worth a
/// retry later, [`is_unreachable`](CameraError::is_unreachable) ones mean the camera is
/// out of reach (a vehicle that drove away) rather than answering badly.
///
/// ```
/// use qucam::CameraError;
///
/// assert!(CameraError::Busy.is_transient());
/// assert!(!CameraError::Busy.is_unreachable());
/// let e = CameraError::Http { status: 503, excerpt: String::new() };
/// assert!(e.is_transient());
/// ```
#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    /// No connection could be made, or it broke (the camera is out of reach).
    #[error("camera unreachable: {0}")]
    Unreachable(String),
    /// The camera accepted the connection but went silent for too long.
    #[error("camera timed out: {0}")]
    Timeout(String),
    /// The camera said it is busy (`"Camera Busy"`, even under a success code, or code 301).
    #[error("camera busy")]
    Busy,
    /// The camera answered with `isSuccess: false`.
    #[error("camera refused the request (errorCode {code_raw}): {message}")]
    Api {
        /// `errorCode` as a number, when it is one.
        code: Option<i64>,
        /// `errorCode` as sent (some firmware sends words).
        code_raw: String,
        /// The camera's message (`data`), if any.
        message: String,
    },
    /// The camera answered with an HTTP error status.
    #[error("camera answered HTTP {status}: {excerpt}")]
    Http {
        /// The HTTP status code.
        status: u16,
        /// The start of the body, made safe to show.
        excerpt: String,
    },
    /// The reply could not be decoded.
    #[error("malformed camera reply ({what}): {excerpt:?}")]
    Malformed {
        /// What was wrong with it.
        what: String,
        /// The start of the reply, made safe to show.
        excerpt: String,
    },
    /// A resumed download did not start at the byte asked for.
    #[error("camera did not honour the range: asked from byte {asked}, {got}")]
    RangeNotHonoured {
        /// The offset asked for.
        asked: u64,
        /// What the camera answered instead.
        got: String,
    },
    /// The reply exceeded its endpoint's limit ([`ClientOptions::max_reply_bytes`](crate::ClientOptions::max_reply_bytes)
    /// for a listing, [`max_small_reply_bytes`](crate::ClientOptions::max_small_reply_bytes)
    /// or [`max_thumbnail_bytes`](crate::ClientOptions::max_thumbnail_bytes) for the others).
    /// Nothing past the limit was kept.
    #[error("camera reply to {endpoint} larger than its limit of {limit} bytes")]
    TooLarge {
        /// The endpoint, e.g. `get_device_info`.
        endpoint: &'static str,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A listing reply held more entries than the client accepts (the `count` asked for
    /// plus [`LIST_SLACK`](crate::listing::LIST_SLACK), or
    /// [`ListQuery::max_entries`](crate::ListQuery::max_entries)): a broken or hostile
    /// camera. The entries beyond the bound were never built.
    #[error("camera listed more entries than asked for: {listed} listed, at most {limit} accepted")]
    ListingTooLong {
        /// The most entries accepted.
        limit: usize,
        /// The entries the reply held.
        listed: usize,
    },
    /// A camera path was refused before anything was sent (relative, `..`, control
    /// characters, ...), or a request lacked what it needs.
    #[error("invalid camera path {0:?}")]
    InvalidPath(String),
    /// The base URL or the client id cannot be used.
    #[error("invalid camera URL {0:?}")]
    InvalidUrl(String),
}

impl CameraError {
    /// Worth retrying later (the camera may come back, stop being busy, or recover).
    pub fn is_transient(&self) -> bool {
        match self {
            CameraError::Unreachable(_)
            | CameraError::Timeout(_)
            | CameraError::Busy
            | CameraError::RangeNotHonoured { .. } => true,
            CameraError::Http { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// The camera could not be reached at all (as opposed to answering badly).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, CameraError::Unreachable(_) | CameraError::Timeout(_))
    }
}

pub(crate) fn map_reqwest(e: reqwest::Error) -> CameraError {
    let timeout = e.is_timeout();
    let e = e.without_url();
    let mut full = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        full = format!("{full}: {s}");
        src = s.source();
    }
    if timeout {
        CameraError::Timeout(full)
    } else {
        CameraError::Unreachable(full)
    }
}
