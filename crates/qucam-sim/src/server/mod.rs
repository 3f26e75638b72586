//! The HTTP side: routes, replies in the document's shapes, request parameters and request
//! tracking. The endpoints are in [`listing`] (3.1), [`device`] (3.2-3.5, 3.8-3.10) and
//! [`download`] (3.6/3.7, `GET /<path>` with `Range`).

mod device;
mod download;
mod listing;

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::any;
use futures_util::StreamExt;
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};

use super::clips::VIDEO_ROOT;
use super::{RequestRecord, Shared};

/// Largest request body accepted.
const BODY_LIMIT: usize = 1 << 20;
type Sim = Arc<Shared>;
type Params = HashMap<String, String>;

pub(super) fn router(sim: Sim) -> Router {
    Router::new()
        .route("/device/get_video_files_info", any(listing::list_files))
        .route("/device/delete_file", any(device::delete_files))
        .route("/device/get_device_info", any(device::device_info))
        .route("/device/format_sdcard", any(device::format_sdcard))
        .route("/device/get_video_thumbnail_info", any(device::thumbnail))
        .route("/device/update_rtmp_state", any(device::update_rtmp_state))
        .route(
            "/device/driver_assistance_calibration",
            any(device::calibrate),
        )
        .route(
            "/device/get_driver_assistance_calibration_params",
            any(device::calibration_params),
        )
        .fallback(download::download)
        .layer(middleware::from_fn_with_state(sim.clone(), track))
        .with_state(sim)
}

// ---------------------------------------------------------------------------------------------
// Replies

fn error_code(sim: &Shared, code: u16) -> Value {
    if sim.lock().faults.string_error_codes {
        Value::String(code.to_string())
    } else {
        json!(code)
    }
}

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `{"data": data, "errorCode": 200, "isSuccess": true}`
fn api_ok(sim: &Shared, data: Value) -> Response {
    let body = json!({"data": data, "errorCode": error_code(sim, 200), "isSuccess": true});
    json_response(StatusCode::OK, body.to_string())
}

/// `{"data":"[]","errorCode":code,"isSuccess":false}`; the reason goes to the log and the
/// `x-sim-error` header only.
fn api_err(sim: &Shared, status: StatusCode, code: u16, why: &str) -> Response {
    tracing::warn!(code, "error reply: {why}");
    let body = json!({"data": "[]", "errorCode": error_code(sim, code), "isSuccess": false});
    let mut resp = json_response(status, body.to_string());
    if let Ok(v) = HeaderValue::from_str(why) {
        resp.headers_mut().insert("x-sim-error", v);
    }
    resp
}

fn bad_request(sim: &Shared, why: &str) -> Response {
    api_err(sim, StatusCode::OK, 400, why)
}

fn internal(sim: &Shared, e: &io::Error) -> Response {
    api_err(sim, StatusCode::INTERNAL_SERVER_ERROR, 500, &e.to_string())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

// ---------------------------------------------------------------------------------------------
// Request parameters: query string, form body or JSON object body, merged.

fn decode_component(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn parse_form(s: &str, into: &mut Params) {
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        into.insert(decode_component(k), decode_component(v));
    }
}

async fn read_body(req: Request) -> Result<(Params, Bytes), String> {
    let mut params = Params::new();
    if let Some(q) = req.uri().query() {
        parse_form(q, &mut params);
    }
    let body = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
        .await
        .map_err(|e| format!("reading body: {e}"))?;
    let text = std::str::from_utf8(&body).map_err(|_| "body is not UTF-8".to_string())?;
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        let obj: serde_json::Map<String, Value> =
            serde_json::from_str(trimmed).map_err(|e| format!("bad JSON body: {e}"))?;
        for (k, v) in obj {
            let v = match v {
                Value::String(s) => s,
                Value::Null => String::new(),
                other => other.to_string(),
            };
            params.insert(k, v);
        }
    } else if !trimmed.starts_with('[') {
        parse_form(trimmed, &mut params);
    }
    Ok((params, body))
}

async fn read_params(req: Request) -> Result<Params, String> {
    read_body(req).await.map(|(p, _)| p)
}

fn param<'a>(p: &'a Params, name: &str) -> Option<&'a str> {
    p.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Request tracking and clientId

fn decoded_path(req: &Request) -> String {
    percent_decode_str(req.uri().path())
        .decode_utf8_lossy()
        .into_owned()
}

async fn track(State(sim): State<Sim>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let mut record = RequestRecord {
        method: req.method().to_string(),
        path: decoded_path(&req),
        query: req.uri().query().map(str::to_string),
        range: header("range"),
        client_id: header("clientid"),
        status: 0,
        body_bytes: 0,
    };
    let hook = sim.lock().on_request.clone();
    if let Some(hook) = hook {
        let device = super::SimDevice {
            shared: sim.clone(),
        };
        hook(&record.path, &device);
    }
    let require_client_id = sim.lock().faults.require_client_id;
    let resp = if require_client_id && record.client_id.is_none() {
        api_err(
            &sim,
            StatusCode::UNAUTHORIZED,
            401,
            "missing clientId header",
        )
    } else {
        next.run(req).await
    };
    record.status = resp.status().as_u16();
    tracing::info!(method = %record.method, path = %record.path, status = record.status, "request");
    let is_download = record.path.starts_with(VIDEO_ROOT) && matches!(record.status, 200 | 206);
    // A closed range (`bytes=A-B`) served as such is a spot check of bytes already
    // downloaded.
    let spot = record.status == 206
        && record
            .range
            .as_deref()
            .is_some_and(|r| !r.trim_end().ends_with('-'));
    let index = {
        let mut st = sim.lock();
        st.requests.push(record);
        st.requests.len() - 1
    };

    // Count body bytes as they are actually sent.
    let (mut parts, body) = resp.into_parts();
    if let Some(n) = body.size_hint().exact() {
        parts
            .headers
            .entry(header::CONTENT_LENGTH)
            .or_insert(n.into());
    }
    let counted = body.into_data_stream().map(move |chunk| {
        if let Ok(bytes) = &chunk {
            let n = bytes.len() as u64;
            let mut st = sim.lock();
            if let Some(r) = st.requests.get_mut(index) {
                r.body_bytes += n;
            }
            if is_download && spot {
                st.spot_bytes_served += n;
            } else if is_download {
                st.bytes_served += n;
            }
        }
        chunk
    });
    Response::from_parts(parts, Body::from_stream(counted))
}

/// A size as the camera words it in listings, e.g. `55.112MB`.
fn format_mb(size: u64) -> String {
    format!("{:.3}MB", size as f64 / (1024.0 * 1024.0))
}

/// A size as the camera words it in device info, e.g. `59.463GB`.
fn format_gb(size: u64) -> String {
    format!("{:.3}GB", size as f64 / (1024.0 * 1024.0 * 1024.0))
}
