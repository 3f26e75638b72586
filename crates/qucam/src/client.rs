//! [`CameraClient`]: one typed method per endpoint of the camera's web API (vendor
//! document sections 3.1-3.10).
//!
//! Every request carries the `clientId` header. Replies are decoded by [`crate::reply`],
//! which absorbs the camera's quirks, so callers only ever see typed values or a typed
//! [`CameraError`]. Downloads stream and resume from a byte offset; [`Download::resumed`]
//! says whether the camera honoured the range.

use std::time::Duration;

use bytes::Bytes;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};

use crate::clip_name::excerpt;
use crate::download::{Download, parse_content_range};
use crate::error::{CameraError, map_reqwest};
use crate::listing;
use crate::options::{CameraId, ClientOptions, ListQuery, ParamStyle};
use crate::reply::{
    self, AdasExtrinsics, CalibrationKind, CalibrationState, DeviceInfo, FileEntry, FormatOutcome,
};

/// Characters escaped in a path segment of a download URL.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');

/// Slowest a [`CameraClient::read_range`] may go, bytes per second (after the idle timeout).
pub const RANGE_MIN_RATE: u64 = 32 * 1024;

/// The most bytes of an HTTP error reply read, for its excerpt.
const ERROR_BODY_BYTES: usize = 4096;

/// A typed client for one camera. Cheap to clone (clones share one connection pool).
///
/// ```no_run
/// use qucam::{CameraClient, ClientOptions};
///
/// # async fn run() -> Result<(), qucam::CameraError> {
/// let camera = CameraClient::new("http://192.168.43.1:2345", ClientOptions::new("my-client"))?;
/// let info = camera.device_info().await?;
/// println!("IMEI {}, storage {:?}", info.imei, info.local_storage);
/// camera.delete_files(&["/storage/sdcard1/queclink/video/20210427/11/20210427_115134_00_1.mp4".into()]).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CameraClient {
    http: reqwest::Client,
    base: Url,
    opts: ClientOptions,
}

impl CameraClient {
    /// A client for the camera at `base_url` (e.g. `http://192.168.43.1:2345`).
    pub fn new(base_url: &str, opts: ClientOptions) -> Result<Self, CameraError> {
        let base = Url::parse(base_url).map_err(|_| CameraError::InvalidUrl(base_url.into()))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(CameraError::InvalidUrl(base_url.into()));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        let id = reqwest::header::HeaderValue::from_str(&opts.client_id)
            .map_err(|_| CameraError::InvalidUrl(format!("bad clientId {:?}", opts.client_id)))?;
        headers.insert("clientId", id);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.idle_timeout)
            .pool_idle_timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("qucam-offload/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CameraError::InvalidUrl(e.to_string()))?;
        Ok(CameraClient { http, base, opts })
    }

    /// The camera's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn endpoint(&self, path: &str) -> Url {
        let mut u = self.base.clone();
        u.set_path(path);
        u.set_query(None);
        u
    }

    /// A download URL from a camera path, each segment percent-encoded. Paths with
    /// `.`/`..`/empty segments, backslashes or control characters are refused.
    pub fn file_url(&self, camera_path: &str) -> Result<Url, CameraError> {
        let rest = camera_path
            .strip_prefix('/')
            .ok_or_else(|| CameraError::InvalidPath(excerpt(camera_path)))?;
        let mut encoded = String::new();
        for seg in rest.split('/') {
            if seg.is_empty()
                || seg == "."
                || seg == ".."
                || seg.chars().any(|c| c.is_control() || c == '\\')
            {
                return Err(CameraError::InvalidPath(excerpt(camera_path)));
            }
            encoded.push('/');
            encoded.extend(utf8_percent_encode(seg, SEGMENT));
        }
        let mut u = self.base.clone();
        u.set_path(&encoded);
        u.set_query(None);
        Ok(u)
    }

    /// Reads a reply body, at most `limit` bytes (a `Content-Length` over it is refused
    /// before a byte is read; past the limit reading stops), each read within the idle
    /// timeout; each chunk that arrives is reported to [`ClientOptions::on_progress`].
    async fn read_capped(
        &self,
        mut resp: reqwest::Response,
        endpoint: &'static str,
        limit: usize,
    ) -> Result<Vec<u8>, CameraError> {
        let too_large = CameraError::TooLarge { endpoint, limit };
        if resp
            .content_length()
            .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
        {
            return Err(too_large);
        }
        let mut body = Vec::new();
        loop {
            let next = tokio::time::timeout(self.opts.idle_timeout, resp.chunk())
                .await
                .map_err(|_| CameraError::Timeout("reply stalled".into()))?
                .map_err(map_reqwest)?;
            match next {
                None => return Ok(body),
                Some(c) => {
                    if body.len() + c.len() > limit {
                        return Err(too_large);
                    }
                    if let Some(progress) = self.opts.on_progress {
                        progress();
                    }
                    body.extend_from_slice(&c);
                }
            }
        }
    }

    /// The start of an error reply (at most [`ERROR_BODY_BYTES`]), for its excerpt; the
    /// rest is never read.
    /// Reading it takes at most the idle timeout in all (a camera that drips an error page
    /// is not waited for), and each chunk counts as progress.
    async fn error_excerpt(&self, mut resp: reqwest::Response) -> String {
        let mut body = Vec::new();
        let read = async {
            while body.len() < ERROR_BODY_BYTES {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        if let Some(progress) = self.opts.on_progress {
                            progress();
                        }
                        let room = ERROR_BODY_BYTES - body.len();
                        body.extend_from_slice(&c[..c.len().min(room)]);
                    }
                    _ => break,
                }
            }
        };
        let _ = tokio::time::timeout(self.opts.idle_timeout, read).await;
        excerpt(&String::from_utf8_lossy(&body[..body.len().min(200)]))
    }

    /// Sends a request to `endpoint` and reads its reply, at most `limit` bytes.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        endpoint: &'static str,
        limit: usize,
    ) -> Result<Vec<u8>, CameraError> {
        let fut = async {
            let resp = req.send().await.map_err(map_reqwest)?;
            let status = resp.status();
            if !status.is_success() {
                return Err(CameraError::Http {
                    status: status.as_u16(),
                    excerpt: self.error_excerpt(resp).await,
                });
            }
            self.read_capped(resp, endpoint, limit).await
        };
        tokio::time::timeout(self.opts.request_timeout, fut)
            .await
            .map_err(|_| CameraError::Timeout("request took too long".into()))?
    }

    /// A small reply from `path` (`/device/NAME`), bounded by `max_small_reply_bytes`.
    async fn send_small(
        &self,
        req: reqwest::RequestBuilder,
        path: &'static str,
    ) -> Result<Vec<u8>, CameraError> {
        let endpoint = path.rsplit('/').next().unwrap_or(path);
        self.send(req, endpoint, self.opts.max_small_reply_bytes)
            .await
    }

    async fn get_api(
        &self,
        path: &'static str,
        query: &[(&str, String)],
    ) -> Result<reply::Data, CameraError> {
        let req = self.http.get(self.endpoint(path)).query(query);
        reply::decode_envelope(&self.send_small(req, path).await?)
    }

    async fn post_api(
        &self,
        path: &'static str,
        params: &[(&str, String)],
    ) -> Result<reply::Data, CameraError> {
        let req = self.post_request(path, params);
        reply::decode_envelope(&self.send_small(req, path).await?)
    }

    fn post_request(&self, path: &str, params: &[(&str, String)]) -> reqwest::RequestBuilder {
        let url = self.endpoint(path);
        match self.opts.params {
            ParamStyle::Form => self.http.post(url).form(params),
            ParamStyle::Query => self.http.post(url).query(params),
            ParamStyle::Json => {
                let obj: serde_json::Map<String, Value> = params
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), Value::String(v.clone())))
                    .collect();
                self.http.post(url).json(&obj)
            }
        }
    }

    /// 3.1 `get_video_files_info`: one page of the listing, newest first. At most
    /// [`ListQuery::entry_limit`] entries are accepted (decoded without ever building
    /// more); a longer reply is [`CameraError::ListingTooLong`].
    pub async fn list_files(&self, q: &ListQuery) -> Result<Vec<FileEntry>, CameraError> {
        let req = self.post_request("/device/get_video_files_info", &q.params());
        let body = self
            .send(req, "get_video_files_info", self.opts.max_reply_bytes)
            .await?;
        listing::decode_file_list_reply(&body, q.entry_limit())
    }

    /// 3.2 `delete_file`: deletes a batch of clips by camera path.
    pub async fn delete_files(&self, paths: &[String]) -> Result<(), CameraError> {
        let body: Vec<Value> = paths.iter().map(|p| json!({ "path": p })).collect();
        let req = self
            .http
            .post(self.endpoint("/device/delete_file"))
            .json(&body);
        match reply::decode_envelope(&self.send_small(req, "/device/delete_file").await?)? {
            reply::Data::Text(t) if t.eq_ignore_ascii_case("success") => Ok(()),
            reply::Data::Json(Value::Array(a)) if a.is_empty() => Ok(()),
            reply::Data::Empty => Ok(()),
            other => Err(CameraError::Malformed {
                what: "delete reply is not \"success\"".into(),
                excerpt: excerpt(&format!("{other:?}")),
            }),
        }
    }

    /// 3.3 `get_device_info`.
    pub async fn device_info(&self) -> Result<DeviceInfo, CameraError> {
        reply::decode_device_info(self.get_api("/device/get_device_info", &[]).await?)
    }

    /// 3.4 `format_sdcard`: destroys every recording on the camera.
    pub async fn format_sd(&self) -> Result<FormatOutcome, CameraError> {
        Ok(reply::decode_format(
            self.get_api("/device/format_sdcard", &[]).await?,
        ))
    }

    /// 3.5 `get_video_thumbnail_info`: the thumbnail image of a clip (its path in `path`).
    pub async fn thumbnail(&self, camera_path: &str) -> Result<Bytes, CameraError> {
        let req = self
            .http
            .get(self.endpoint("/device/get_video_thumbnail_info"))
            .query(&[("path", camera_path)]);
        let body = self
            .send(
                req,
                "get_video_thumbnail_info",
                self.opts.max_thumbnail_bytes,
            )
            .await?;
        // Some firmware answers errors in the JSON envelope even here; only a small one is
        // decoded (an image is never taken apart as JSON).
        if body.first() == Some(&b'{') {
            if body.len() <= self.opts.max_small_reply_bytes {
                reply::decode_envelope(&body)?;
            }
            return Err(reply::malformed(
                "thumbnail reply is JSON, not an image",
                &body,
            ));
        }
        Ok(Bytes::from(body))
    }

    /// 3.6 Download a clip from byte `offset` (0 = whole file). Sends `Range: bytes=N-`
    /// when `offset > 0`; see [`Download::resumed`].
    pub async fn download(&self, camera_path: &str, offset: u64) -> Result<Download, CameraError> {
        let url = self.file_url(camera_path)?;
        let mut req = self.http.get(url);
        if offset > 0 {
            req = req.header(RANGE, format!("bytes={offset}-"));
        }
        let resp = tokio::time::timeout(self.opts.request_timeout, req.send())
            .await
            .map_err(|_| CameraError::Timeout("no response to download".into()))?
            .map_err(map_reqwest)?;
        let status = resp.status();
        let idle = self.opts.idle_timeout;
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let cr = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                match parse_content_range(&cr) {
                    Some((start, total)) if start == offset => Ok(Download {
                        response: resp,
                        idle,
                        resumed: offset > 0,
                        start,
                        total,
                    }),
                    _ => Err(CameraError::RangeNotHonoured {
                        asked: offset,
                        got: format!("206 with Content-Range {:?}", excerpt(&cr)),
                    }),
                }
            }
            StatusCode::OK => {
                let total = resp.content_length();
                Ok(Download {
                    response: resp,
                    idle,
                    resumed: false,
                    start: 0,
                    total,
                })
            }
            StatusCode::RANGE_NOT_SATISFIABLE => Err(CameraError::RangeNotHonoured {
                asked: offset,
                got: "416 Range Not Satisfiable".into(),
            }),
            s => Err(CameraError::Http {
                status: s.as_u16(),
                excerpt: self.error_excerpt(resp).await,
            }),
        }
    }

    /// Reads exactly `len` bytes of a clip from byte `start` (`Range: bytes=start-end`): a
    /// spot check of bytes already downloaded. The reply is bounded by `len`: a camera that
    /// sends more, or less, is [`CameraError::Malformed`]; one slower than
    /// [`RANGE_MIN_RATE`] (after the idle timeout) is [`CameraError::Timeout`]. A camera
    /// that ignores the range
    /// (200 with the whole file, 416, or another range) is [`CameraError::RangeNotHonoured`],
    /// and nothing of its body is read.
    pub async fn read_range(
        &self,
        camera_path: &str,
        start: u64,
        len: u64,
    ) -> Result<Bytes, CameraError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let url = self.file_url(camera_path)?;
        let end = start.saturating_add(len - 1);
        let req = self
            .http
            .get(url)
            .header(RANGE, format!("bytes={start}-{end}"));
        let resp = tokio::time::timeout(self.opts.request_timeout, req.send())
            .await
            .map_err(|_| CameraError::Timeout("no response to a range read".into()))?
            .map_err(map_reqwest)?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let cr = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                if parse_content_range(&cr).map(|(s, _)| s) != Some(start) {
                    return Err(CameraError::RangeNotHonoured {
                        asked: start,
                        got: format!("206 with Content-Range {:?}", excerpt(&cr)),
                    });
                }
                let mut dl = Download {
                    response: resp,
                    idle: self.opts.idle_timeout,
                    resumed: true,
                    start,
                    total: None,
                };
                let cap = usize::try_from(len).unwrap_or(usize::MAX);
                let mut body = Vec::with_capacity(cap.min(4 << 20));
                // A camera that drips bytes just inside the idle timeout is cut off: the
                // whole read must go at RANGE_MIN_RATE at least.
                let deadline = self.opts.idle_timeout + Duration::from_secs(len / RANGE_MIN_RATE);
                let read = async {
                    while let Some(chunk) = dl.chunk().await? {
                        if let Some(progress) = self.opts.on_progress {
                            progress();
                        }
                        if body.len() + chunk.len() > cap {
                            return Err(CameraError::Malformed {
                                what: format!("range read sent more than the {len} bytes asked"),
                                excerpt: String::new(),
                            });
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(())
                };
                tokio::time::timeout(deadline, read).await.map_err(|_| {
                    CameraError::Timeout(format!(
                        "range read of {len} bytes slower than {RANGE_MIN_RATE} bytes/s"
                    ))
                })??;
                if body.len() != cap {
                    return Err(CameraError::Malformed {
                        what: format!("range read sent {} of the {len} bytes asked", body.len()),
                        excerpt: String::new(),
                    });
                }
                Ok(Bytes::from(body))
            }
            StatusCode::OK => Err(CameraError::RangeNotHonoured {
                asked: start,
                got: "200 with the whole file".into(),
            }),
            StatusCode::RANGE_NOT_SATISFIABLE => Err(CameraError::RangeNotHonoured {
                asked: start,
                got: "416 Range Not Satisfiable".into(),
            }),
            s => Err(CameraError::Http {
                status: s.as_u16(),
                excerpt: self.error_excerpt(resp).await,
            }),
        }
    }

    /// 3.8 `update_rtmp_state`: start a push to `rtmp_url` from one camera.
    pub async fn rtmp_start(&self, rtmp_url: &str, camera: CameraId) -> Result<(), CameraError> {
        let id = match camera {
            CameraId::Front => "0",
            CameraId::Interior => "1",
        };
        self.post_api(
            "/device/update_rtmp_state",
            &[
                ("rtmpUrl", rtmp_url.to_string()),
                ("cameraId", id.to_string()),
                ("start", "true".to_string()),
            ],
        )
        .await
        .map(|_| ())
    }

    /// 3.8 `update_rtmp_state`: stop the push.
    pub async fn rtmp_stop(&self) -> Result<(), CameraError> {
        self.post_api(
            "/device/update_rtmp_state",
            &[("start", "false".to_string())],
        )
        .await
        .map(|_| ())
    }

    /// 3.9 `driver_assistance_calibration`. ADAS needs the seven extrinsic values.
    pub async fn calibrate(
        &self,
        kind: CalibrationKind,
        successful: bool,
        adas: Option<&AdasExtrinsics>,
    ) -> Result<CalibrationState, CameraError> {
        let mut params = vec![
            (
                "type",
                match kind {
                    CalibrationKind::Dms => "1",
                    CalibrationKind::Adas => "2",
                }
                .to_string(),
            ),
            (
                "calibration",
                if successful { "1" } else { "0" }.to_string(),
            ),
        ];
        match (kind, adas) {
            (CalibrationKind::Adas, Some(x)) => params.push(("adasExtrinsicParams", x.to_wire())),
            (CalibrationKind::Adas, None) => {
                return Err(CameraError::InvalidPath(
                    "ADAS calibration needs the seven extrinsic values".into(),
                ));
            }
            _ => {}
        }
        let data = self
            .post_api("/device/driver_assistance_calibration", &params)
            .await?;
        Ok(reply::decode_calibration(data)?.0)
    }

    /// 3.10 `get_driver_assistance_calibration_params` (ADAS extrinsics).
    pub async fn calibration_params(&self) -> Result<AdasExtrinsics, CameraError> {
        let data = self
            .get_api(
                "/device/get_driver_assistance_calibration_params",
                &[("params", "0".to_string())],
            )
            .await?;
        let text = match data {
            reply::Data::Text(t) => t,
            other => format!("{other:?}"),
        };
        AdasExtrinsics::from_wire(&text).map_err(|what| CameraError::Malformed {
            what,
            excerpt: excerpt(&text),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_are_encoded_and_checked() {
        let c = CameraClient::new("http://127.0.0.1:9", ClientOptions::new("x")).unwrap();
        let u = c.file_url("/storage/sd card/a#b?.mp4").unwrap();
        assert_eq!(u.path(), "/storage/sd%20card/a%23b%3F.mp4");
        assert!(u.query().is_none());
        for bad in [
            "relative/a.mp4",
            "/a/../b.mp4",
            "/a//b.mp4",
            "/a/./b",
            "/a\\b",
            "/a/\0",
        ] {
            assert!(c.file_url(bad).is_err(), "{bad:?}");
        }
    }
}
