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
    #[error("camera unreachable: {0}")]
    Unreachable(String),
    #[error("camera timed out: {0}")]
    Timeout(String),
    #[error("camera busy")]
    Busy,
    #[error("camera refused the request (errorCode {code_raw}): {message}")]
    Api {
        code: Option<i64>,
        code_raw: String,
        message: String,
    },
    #[error("camera answered HTTP {status}: {excerpt}")]
    Http { status: u16, excerpt: String },
    #[error("malformed camera reply ({what}): {excerpt:?}")]
    Malformed { what: String, excerpt: String },
    #[error("camera did not honour the range: asked from byte {asked}, {got}")]
    RangeNotHonoured { asked: u64, got: String },
    #[error("camera reply larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("invalid camera path {0:?}")]
    InvalidPath(String),
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
