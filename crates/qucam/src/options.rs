//! How a [`CameraClient`](crate::CameraClient) talks to one camera ([`ClientOptions`],
//! [`ParamStyle`]) and what a listing or an RTMP push asks for ([`ListQuery`], [`CameraId`]).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// How POST parameters are sent to a camera (the vendor document does not say).
///
/// Deserializes from `"form"`, `"query"` or `"json"`; displays the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ParamStyle {
    /// `application/x-www-form-urlencoded` body (default).
    #[default]
    Form,
    /// URL query string.
    Query,
    /// JSON object body.
    Json,
}

impl fmt::Display for ParamStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamStyle::Form => "form",
            ParamStyle::Query => "query",
            ParamStyle::Json => "json",
        })
    }
}

/// Client settings for one camera.
///
/// Start from [`ClientOptions::new`] and change what you need:
///
/// ```
/// use std::time::Duration;
/// use qucam::{ClientOptions, ParamStyle};
///
/// let opts = ClientOptions {
///     params: ParamStyle::Json,
///     connect_timeout: Duration::from_secs(1),
///     ..ClientOptions::new("depot-7")
/// };
/// assert_eq!(opts.client_id, "depot-7");
/// ```
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Sent as the `clientId` header of every request (see [`client_id`](crate::client_id())
    /// for one kept across restarts).
    pub client_id: String,
    /// How POST parameters are sent.
    pub params: ParamStyle,
    /// TCP connect timeout: how fast an absent camera is noticed.
    pub connect_timeout: Duration,
    /// Longest silence while reading a reply or a download.
    pub idle_timeout: Duration,
    /// Longest an API call (not a download) may take in all.
    pub request_timeout: Duration,
    /// Largest listing reply read (`get_video_files_info`; decoded without building more
    /// entries than asked for, so a hostile camera cannot exhaust memory).
    pub max_reply_bytes: usize,
    /// Largest reply read from every other API endpoint (device info, delete, format,
    /// RTMP, calibration): these are a few hundred bytes from a real camera.
    pub max_small_reply_bytes: usize,
    /// Largest thumbnail image read.
    pub max_thumbnail_bytes: usize,
    /// Called whenever bytes of a reply arrive: a slow reply still shows progress (a
    /// service watchdog's heartbeat). A silent camera calls nothing.
    pub on_progress: Option<fn()>,
}

impl ClientOptions {
    /// Defaults: form parameters, 3 s to connect, 10 s of silence, 60 s per API call,
    /// listings up to 64 MiB, thumbnails up to 4 MiB, every other reply up to 64 KiB.
    pub fn new(client_id: impl Into<String>) -> Self {
        ClientOptions {
            client_id: client_id.into(),
            params: ParamStyle::Form,
            connect_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_reply_bytes: 64 * 1024 * 1024,
            max_small_reply_bytes: 64 * 1024,
            max_thumbnail_bytes: 4 * 1024 * 1024,
            on_progress: None,
        }
    }
}

/// Filters and paging for `get_video_files_info`. `Default` lists everything.
///
/// ```
/// use qucam::ListQuery;
///
/// // The second page of 50 crash and SOS clips from the front camera.
/// let q = ListQuery {
///     event_types: vec!["_04_".into(), "_0A_".into()],
///     camera_type: "_1.".into(),
///     count: Some(50),
///     offset: Some(50),
///     ..ListQuery::default()
/// };
/// # let _ = q;
/// ```
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// `yyyyMMddHHmmss:yyyyMMddHHmmss`, or empty for all time.
    pub time_window: String,
    /// Event codes such as `_04_`; empty for all.
    pub event_types: Vec<String>,
    /// `""`, `"_1."`, `"_2."` or `"1^2"`.
    pub camera_type: String,
    /// Page size; `None` lets the camera choose.
    pub count: Option<u32>,
    /// Entries to skip (newest first); `None` is 0.
    pub offset: Option<u32>,
    /// The most entries accepted in the reply (more is
    /// [`CameraError::ListingTooLong`](crate::CameraError::ListingTooLong), and no more are
    /// ever built). `None`: `count` plus [`LIST_SLACK`](crate::listing::LIST_SLACK), or
    /// [`DEFAULT_MAX_ENTRIES`](crate::listing::DEFAULT_MAX_ENTRIES) without a `count`. A
    /// caller that must accept firmware ignoring `count` (before V2.1, which sends the
    /// whole listing at once) sets its own bound here.
    pub max_entries: Option<usize>,
}

impl ListQuery {
    /// The most entries accepted in the reply (see [`ListQuery::max_entries`]).
    ///
    /// ```
    /// use qucam::ListQuery;
    ///
    /// assert_eq!(ListQuery { count: Some(50), ..ListQuery::default() }.entry_limit(), 66);
    /// assert_eq!(ListQuery::default().entry_limit(), 200_000);
    /// ```
    pub fn entry_limit(&self) -> usize {
        use crate::listing::{DEFAULT_MAX_ENTRIES, LIST_SLACK};
        self.max_entries.unwrap_or(match self.count {
            Some(c) => (c as usize).saturating_add(LIST_SLACK),
            None => DEFAULT_MAX_ENTRIES,
        })
    }

    /// The request parameters, in the vendor document's names.
    pub(crate) fn params(&self) -> Vec<(&'static str, String)> {
        let mut event = self.event_types.join(":");
        if !event.is_empty() {
            event.push(':');
        }
        let mut p = vec![
            ("time_type", self.time_window.clone()),
            ("event_type", event),
            ("camera_type", self.camera_type.clone()),
        ];
        if let Some(c) = self.count {
            p.push(("count", c.to_string()));
        }
        if let Some(o) = self.offset {
            p.push(("offset", o.to_string()));
        }
        p
    }
}

/// Which camera an RTMP push is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraId {
    /// The road-facing camera (camera 1 in clip names).
    Front,
    /// The cabin camera (camera 2 in clip names; CV200 only).
    Interior,
}
