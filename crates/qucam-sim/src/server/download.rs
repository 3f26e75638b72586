//! 3.6/3.7 downloads, `GET /<path>`: `Range` requests, paced and droppable bodies, and the
//! download faults.

use std::fs;
use std::io;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::time::Instant;

use super::{Sim, api_err, decoded_path, internal};
use crate::clips::{self, VIDEO_ROOT};

/// Download chunk size.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
enum RangeReq {
    Full,
    /// Inclusive byte range.
    Part(u64, u64),
    Unsatisfiable,
}

/// Parses a single `bytes=` range; anything else (several ranges, bad syntax) is ignored.
fn parse_range(h: Option<&str>, size: u64) -> RangeReq {
    let Some(spec) = h.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeReq::Full;
    };
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return match b.parse::<u64>() {
            Ok(0) => RangeReq::Unsatisfiable,
            Ok(_) if size == 0 => RangeReq::Unsatisfiable,
            Ok(n) => RangeReq::Part(size - n.min(size), size - 1),
            Err(_) => RangeReq::Full,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeReq::Full;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(end) if end >= start => end,
            _ => return RangeReq::Full,
        }
    };
    if start >= size {
        RangeReq::Unsatisfiable
    } else {
        RangeReq::Part(start, end.min(size - 1))
    }
}

struct BodyStream {
    file: tokio::fs::File,
    left: u64,
    sent: u64,
    drop_at: Option<u64>,
    sim: Sim,
    deadline: Option<Instant>,
    /// Serve other bytes than the file's (every byte inverted): `Faults::other_bytes`.
    invert: bool,
}

/// Streams `len` bytes of `file` in chunks, paced by the bandwidth fault, failing after
/// `drop_at` bytes if set.
fn body_stream(state: BodyStream) -> Body {
    let stream = futures_util::stream::unfold(Some(state), |state| async move {
        let mut s = state?;
        if s.left == 0 {
            return None;
        }
        if s.drop_at.is_some_and(|d| s.sent >= d) {
            // Give the server a moment to flush what was sent, then cut the connection.
            tokio::time::sleep(Duration::from_millis(20)).await;
            tracing::info!(sent = s.sent, "dropping download (fault)");
            let err = io::Error::new(io::ErrorKind::ConnectionAborted, "simulated drop");
            return Some((Err(err), None));
        }
        let bps = s
            .sim
            .lock()
            .faults
            .bandwidth_bytes_per_sec
            .filter(|b| *b > 0);
        let mut want = s.left.min(CHUNK as u64);
        if let Some(d) = s.drop_at {
            want = want.min(d - s.sent);
        }
        if let Some(bps) = bps {
            want = want.min((bps / 20).clamp(1024, CHUNK as u64));
        }
        let mut buf = vec![0u8; want as usize];
        if let Err(e) = s.file.read_exact(&mut buf).await {
            return Some((Err(e), None));
        }
        if s.invert {
            buf.iter_mut().for_each(|b| *b = !*b);
        }
        if let Some(bps) = bps {
            let now = Instant::now();
            let start = s.deadline.filter(|d| *d > now).unwrap_or(now);
            let deadline = start + Duration::from_secs_f64(want as f64 / bps as f64);
            tokio::time::sleep_until(deadline).await;
            s.deadline = Some(deadline);
        }
        s.left -= want;
        s.sent += want;
        Some((Ok(Bytes::from(buf)), Some(s)))
    });
    Body::from_stream(stream)
}

fn content_type(name: &str) -> &'static str {
    if name.ends_with(".ts") {
        "video/mp2t"
    } else {
        "video/mp4"
    }
}

pub(super) async fn download(State(sim): State<Sim>, req: Request) -> Response {
    let path = decoded_path(&req);
    let is_head = req.method() == Method::HEAD;
    if !(is_head || req.method() == Method::GET) || !path.starts_with(VIDEO_ROOT) {
        return api_err(&sim, StatusCode::NOT_FOUND, 404, "unknown endpoint");
    }
    let (no_range, override_reply) = {
        let st = sim.lock();
        (st.faults.no_range, st.faults.download_override.clone())
    };
    if let Some((status, body)) = override_reply {
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return resp;
    }
    let Some(file_path) = clips::camera_to_disk(&sim.dir(), &path) else {
        return api_err(
            &sim,
            StatusCode::FORBIDDEN,
            403,
            "path escapes the video root",
        );
    };
    // Refuse symlinks leading out of the directory.
    let inside = match (fs::canonicalize(&file_path), fs::canonicalize(sim.dir())) {
        (Ok(f), Ok(d)) => f.starts_with(d),
        _ => false,
    };
    let opened = match tokio::fs::File::open(&file_path).await {
        Ok(f) => f.metadata().await.map(|m| (f, m)),
        Err(e) => Err(e),
    };
    let (mut file, meta) = match opened {
        Ok((f, m)) if inside && m.is_file() => (f, m),
        _ => return api_err(&sim, StatusCode::NOT_FOUND, 404, "no such file"),
    };
    let size = meta.len();
    let range_header = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let range = if no_range {
        RangeReq::Full
    } else {
        parse_range(range_header, size)
    };
    let mut resp = Response::new(Body::empty());
    let headers = resp.headers_mut();
    if !no_range {
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    let (start, len) = match range {
        RangeReq::Full => (0, size),
        RangeReq::Part(a, b) => {
            let value = format!("bytes {a}-{b}/{size}");
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            (a, b - a + 1)
        }
        RangeReq::Unsatisfiable => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            return resp;
        }
    };
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
    if is_head || len == 0 {
        return resp;
    }
    if start > 0
        && let Err(e) = file.seek(io::SeekFrom::Start(start)).await
    {
        return internal(&sim, &e);
    }
    let drop_at = {
        let mut st = sim.lock();
        let f = &mut st.faults;
        match f.drop_after_bytes {
            Some(n) if f.drop_downloads > 0 => {
                f.drop_downloads -= 1;
                if f.drop_downloads == 0 {
                    f.drop_after_bytes = None;
                }
                Some(n)
            }
            other => other,
        }
    };
    let invert = {
        let name = path.rsplit('/').next().unwrap_or_default();
        sim.lock().faults.other_bytes.iter().any(|n| n == name)
    };
    *resp.body_mut() = body_stream(BodyStream {
        file,
        left: len,
        sent: 0,
        drop_at,
        sim,
        deadline: None,
        invert,
    });
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeReq::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(parse_range(Some("bytes=0-"), 10), Part(0, 9));
        assert_eq!(parse_range(Some("bytes=4-"), 10), Part(4, 9));
        assert_eq!(parse_range(Some("bytes=4-5"), 10), Part(4, 5));
        assert_eq!(parse_range(Some("bytes=4-50"), 10), Part(4, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Part(7, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-4"), 10), Full);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
    }
}
