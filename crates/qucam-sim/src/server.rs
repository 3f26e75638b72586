//! The HTTP side: routes, replies in the document's shapes, downloads, request tracking.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::any;
use chrono::NaiveDateTime;
use futures_util::StreamExt;
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::time::Instant;

use qucam::ClipName;

use super::clips::{self, Clip, Rng, VIDEO_ROOT};
use super::{RequestRecord, Shared};

/// Largest request body accepted.
const BODY_LIMIT: usize = 1 << 20;
/// Download chunk size.
const CHUNK: usize = 64 * 1024;
/// Bytes added to a "still recording" clip at each listing.
const GROW_BYTES: u64 = 64 * 1024;
/// Size reported for the simulated SD card: 59.463 GB, like the document's example.
const SD_CARD_BYTES: u64 = 63_847_738_474;
/// A 1x1 grey baseline JPEG, the thumbnail of every clip.
const THUMBNAIL_JPEG: &[u8] = &[
    0xFF, 0xD8, // SOI
    0xFF, 0xDB, 0x00, 0x43, 0x00, // DQT, table 0: all ones
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, // 64 entries
    0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x01, 0x00, 0x01, 0x01, 0x01, 0x11,
    0x00, // SOF0 1x1 grey
    0xFF, 0xC4, 0x00, 0x14, 0x00, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0x00, // DHT DC0: one 1-bit code for category 0
    0xFF, 0xC4, 0x00, 0x14, 0x10, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0x00, // DHT AC0: one 1-bit code for EOB
    0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00, // SOS
    0x3F, // DC 0, EOB, padding
    0xFF, 0xD9, // EOI
];

type Sim = Arc<Shared>;
type Params = HashMap<String, String>;

pub(super) fn router(sim: Sim) -> Router {
    Router::new()
        .route("/device/get_video_files_info", any(list_files))
        .route("/device/delete_file", any(delete_files))
        .route("/device/get_device_info", any(device_info))
        .route("/device/format_sdcard", any(format_sdcard))
        .route("/device/get_video_thumbnail_info", any(thumbnail))
        .route("/device/update_rtmp_state", any(update_rtmp_state))
        .route("/device/driver_assistance_calibration", any(calibrate))
        .route(
            "/device/get_driver_assistance_calibration_params",
            any(calibration_params),
        )
        .fallback(download)
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
            if is_download {
                st.bytes_served += n;
            }
        }
        chunk
    });
    Response::from_parts(parts, Body::from_stream(counted))
}

// ---------------------------------------------------------------------------------------------
// 3.1 get_video_files_info

/// Listing filters and paging.
#[derive(Debug, Default)]
struct ListQuery {
    period: Option<(NaiveDateTime, NaiveDateTime)>,
    events: Vec<String>,
    camera: Option<u8>,
    count: Option<usize>,
    offset: usize,
}

impl ListQuery {
    fn parse(p: &Params) -> Result<ListQuery, String> {
        let mut q = ListQuery::default();
        if let Some(t) = param(p, "time_type") {
            let parse = |s: &str| NaiveDateTime::parse_from_str(s.trim(), "%Y%m%d%H%M%S").ok();
            let (a, b) = t
                .split_once(':')
                .and_then(|(a, b)| Some((parse(a)?, parse(b)?)))
                .ok_or_else(|| format!("bad time_type {t:?}"))?;
            q.period = Some((a, b));
        }
        if let Some(e) = param(p, "event_type") {
            for code in e.split(':').map(|c| c.trim().trim_matches('_')) {
                if code.is_empty() {
                    continue;
                }
                if code.len() != 2 || !code.bytes().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(format!("bad event_type {e:?}"));
                }
                q.events.push(code.to_ascii_uppercase());
            }
        }
        if let Some(c) = param(p, "camera_type") {
            q.camera = match c.trim_matches(|c| c == '_' || c == '.') {
                "1^2" | "2^1" => None,
                "1" => Some(1),
                "2" => Some(2),
                _ => return Err(format!("bad camera_type {c:?}")),
            };
        }
        if let Some(c) = param(p, "count") {
            q.count = Some(c.parse().map_err(|_| format!("bad count {c:?}"))?);
        }
        if let Some(o) = param(p, "offset") {
            q.offset = o.parse().map_err(|_| format!("bad offset {o:?}"))?;
        }
        Ok(q)
    }

    fn matches(&self, c: &ClipName) -> bool {
        let time = c.recorded();
        self.period.is_none_or(|(a, b)| a <= time && time <= b)
            && (self.events.is_empty() || self.events.iter().any(|e| e == c.event_code()))
            && self.camera.is_none_or(|cam| cam == c.camera())
    }
}

/// Newest first: by recording time, then name.
fn sort_newest_first(clips: &mut [Clip]) {
    clips.sort_by(|a, b| (b.parsed.recorded(), &b.name).cmp(&(a.parsed.recorded(), &a.name)));
}

fn format_mb(size: u64) -> String {
    format!("{:.3}MB", size as f64 / (1024.0 * 1024.0))
}

fn format_gb(size: u64) -> String {
    format!("{:.3}GB", size as f64 / (1024.0 * 1024.0 * 1024.0))
}

fn entry_json(c: &Clip) -> Value {
    json!({
        "date": c.parsed.recorded().and_utc().timestamp_millis(),
        "duration": "01m:00s",
        "duration_long": 60000,
        "format_size": format_mb(c.size),
        "header_title": c.parsed.recorded().format("%Y-%m-%d").to_string(),
        "icon": null,
        "isDirectory": false,
        "name": c.name,
        "path": c.camera_path,
        "permission": "rw",
        "select_mode": false,
        "size": c.size,
    })
}

/// Appends [`GROW_BYTES`] to the clip named `name`, if it exists.
fn grow_clip(dir: &Path, name: &str) -> io::Result<()> {
    use std::io::Write;
    let Some(clip) = clips::scan(dir)?.into_iter().find(|c| c.name == name) else {
        tracing::warn!(name, "growing clip not found");
        return Ok(());
    };
    let mut buf = vec![0u8; GROW_BYTES as usize];
    Rng::new(clip.size).fill(&mut buf);
    let mut f = fs::OpenOptions::new().append(true).open(&clip.file)?;
    f.write_all(&buf)
}

/// Creates a loop recording one minute newer than the newest clip.
fn add_newest_clip(dir: &Path) -> io::Result<()> {
    let newest = clips::scan(dir)?
        .into_iter()
        .map(|c| c.parsed.recorded())
        .max();
    let time =
        newest.unwrap_or_else(|| chrono::Utc::now().naive_utc()) + chrono::Duration::minutes(1);
    let name = format!("{}_00_1.mp4", time.format("%Y%m%d_%H%M%S"));
    let mut content = vec![0u8; 32 * 1024];
    Rng::new(time.and_utc().timestamp() as u64).fill(&mut content);
    let path = clips::write_clip(dir, &name, &content)?;
    tracing::info!(%path, "new clip appeared between pages");
    Ok(())
}

async fn list_files(State(sim): State<Sim>, req: Request) -> Response {
    let growing = {
        let mut st = sim.lock();
        if let Some(raw) = st.faults.listing_override.clone() {
            drop(st);
            return json_response(StatusCode::OK, raw);
        }
        if st.faults.busy_listings > 0 {
            st.faults.busy_listings -= 1;
            drop(st);
            return api_ok(&sim, json!("Camera Busy"));
        }
        match &mut st.faults.growing {
            Some((name, n)) if *n > 0 => {
                *n -= 1;
                Some(name.clone())
            }
            _ => None,
        }
    };
    let q = match read_params(req).await.and_then(|p| ListQuery::parse(&p)) {
        Ok(q) => q,
        Err(why) => return bad_request(&sim, &why),
    };
    let new_clip = q.offset == 0 && sim.lock().faults.new_clip_between_pages;
    let dir = sim.dir.clone();
    let listed = blocking(move || {
        if let Some(name) = growing {
            grow_clip(&dir, &name)?;
        }
        let mut all: Vec<Clip> = clips::scan(&dir)?
            .into_iter()
            .filter(|c| q.matches(&c.parsed))
            .collect();
        sort_newest_first(&mut all);
        let page: Vec<Value> = all
            .iter()
            .skip(q.offset)
            .take(q.count.unwrap_or(usize::MAX))
            .map(entry_json)
            .collect();
        if new_clip {
            add_newest_clip(&dir)?;
        }
        Ok(page)
    })
    .await;
    match listed {
        Ok(page) => {
            let data = if sim.lock().faults.data_as_string {
                Value::String(Value::Array(page).to_string())
            } else {
                Value::Array(page)
            };
            api_ok(&sim, data)
        }
        Err(e) => internal(&sim, &e),
    }
}

// ---------------------------------------------------------------------------------------------
// 3.2 delete_file, 3.4 format_sdcard

/// Removes a clip file, then its hour and day folders if they became empty.
fn remove_clip_file(file: &Path) -> io::Result<()> {
    fs::remove_file(file)?;
    for dir in file.ancestors().skip(1).take(2) {
        if fs::remove_dir(dir).is_err() {
            break;
        }
    }
    Ok(())
}

fn delete_paths(body: &[u8], params: &Params) -> Result<Vec<String>, String> {
    let path_of = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("path").and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    let text = std::str::from_utf8(body).unwrap_or("").trim();
    if text.starts_with('[') || text.starts_with('{') {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("bad JSON: {e}"))?;
        let items = match value {
            Value::Array(items) => items,
            one => vec![one],
        };
        return items
            .iter()
            .map(|v| path_of(v).ok_or_else(|| format!("not a path entry: {v}")))
            .collect();
    }
    param(params, "path")
        .map(|p| vec![p.to_string()])
        .ok_or_else(|| "no paths to delete".to_string())
}

async fn delete_files(State(sim): State<Sim>, req: Request) -> Response {
    let paths = match read_body(req).await {
        Ok((params, body)) => delete_paths(&body, &params),
        Err(why) => Err(why),
    };
    let paths = match paths {
        Ok(p) => p,
        Err(why) => return bad_request(&sim, &why),
    };
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        match clips::camera_to_disk(&sim.dir, &path) {
            Some(file) => files.push((path, file)),
            None => return bad_request(&sim, &format!("path outside the video root: {path:?}")),
        }
    }
    let shared = sim.clone();
    let done = blocking(move || {
        for (path, file) in files {
            if !file.is_file() {
                tracing::info!(%path, "delete: no such file");
                continue;
            }
            let hook = shared.lock().on_delete.clone();
            if let Some(hook) = hook {
                hook(&path);
            }
            remove_clip_file(&file)?;
            tracing::info!(%path, "deleted");
            shared.lock().deletes.push(path);
        }
        Ok(())
    })
    .await;
    match done {
        Ok(()) => api_ok(&sim, json!("success")),
        Err(e) => internal(&sim, &e),
    }
}

async fn format_sdcard(State(sim): State<Sim>) -> Response {
    let dir = sim.dir.clone();
    let done = blocking(move || {
        for clip in clips::scan(&dir)? {
            remove_clip_file(&clip.file)?;
        }
        Ok(())
    })
    .await;
    match done {
        Ok(()) => api_ok(&sim, json!("Format Success")),
        Err(e) => {
            tracing::warn!("format failed: {e}");
            api_ok(&sim, json!("Format Failed,Retry Again"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3.3 get_device_info

fn disk_usage(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            total += disk_usage(&entry.path())?;
        } else if ft.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

async fn device_info(State(sim): State<Sim>) -> Response {
    if let Some(raw) = sim.lock().faults.device_info_override.clone() {
        return json_response(StatusCode::OK, raw);
    }
    let dir = sim.dir.clone();
    let used = match blocking(move || disk_usage(&dir)).await {
        Ok(u) => u,
        Err(e) => return internal(&sim, &e),
    };
    let total = SD_CARD_BYTES.max(used);
    let doc = {
        let st = sim.lock();
        let (living, url, camera) = &st.rtmp;
        let preview = json!({
            "isLving": living,
            "needUpdateUrl": !living,
            "previewCameraId": camera.parse::<i64>().ok().filter(|_| *living).unwrap_or(-1),
            "rtmpUrl": url,
        });
        json!({
            "application_version": "V06",
            "cameraPreviewState": preview.to_string(),
            "device_name": st.device_name,
            "imei": st.imei,
            "local_storage": format!("{}/{}", format_gb(total - used), format_gb(total)),
            "password": "12345678",
            "s_n": null,
            "sd_card_format": "FAT32",
            "sd_card_model_no": "SC64G",
            "sd_card_size": format_gb(total),
            "sd_card_type": "SD",
            "sd_card_used_space": format_gb(used),
            "signal": "none",
            "ssid": "queclinkgh",
        })
    };
    api_ok(&sim, Value::String(doc.to_string()))
}

// ---------------------------------------------------------------------------------------------
// 3.5 thumbnail

async fn thumbnail(State(sim): State<Sim>, req: Request) -> Response {
    let params = match read_params(req).await {
        Ok(p) => p,
        Err(why) => return bad_request(&sim, &why),
    };
    let Some(path) = param(&params, "path") else {
        return bad_request(&sim, "missing path");
    };
    let file = clips::camera_to_disk(&sim.dir, path).filter(|f| {
        f.is_file()
            && f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| ClipName::parse(n).is_ok())
    });
    if file.is_none() {
        return api_err(&sim, StatusCode::NOT_FOUND, 404, "no such clip");
    }
    let mut resp = Response::new(Body::from(THUMBNAIL_JPEG));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    resp
}

// ---------------------------------------------------------------------------------------------
// 3.8 RTMP, 3.9 / 3.10 calibration

async fn update_rtmp_state(State(sim): State<Sim>, req: Request) -> Response {
    let params = match read_params(req).await {
        Ok(p) => p,
        Err(why) => return bad_request(&sim, &why),
    };
    let start = match param(&params, "start")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("false" | "0" | "stop") => false,
        Some("true" | "1" | "start") => true,
        Some(other) => return bad_request(&sim, &format!("bad start {other:?}")),
    };
    let camera = param(&params, "cameraId").unwrap_or("").to_string();
    if !matches!(camera.as_str(), "" | "0" | "1") {
        return bad_request(&sim, &format!("bad cameraId {camera:?}"));
    }
    let url = param(&params, "rtmpUrl").unwrap_or("").to_string();
    sim.lock().rtmp = (start, url, camera);
    api_ok(&sim, json!("success"))
}

async fn calibrate(State(sim): State<Sim>, req: Request) -> Response {
    let params = match read_params(req).await {
        Ok(p) => p,
        Err(why) => return bad_request(&sim, &why),
    };
    let kind = param(&params, "type");
    let result = param(&params, "calibration");
    let (Some(kind @ ("1" | "2")), Some(result @ ("0" | "1"))) = (kind, result) else {
        return bad_request(&sim, "type must be 1|2 and calibration 0|1");
    };
    let result: u8 = if result == "1" { 1 } else { 0 };
    let adas_params = if kind == "2" {
        let Some(raw) = param(&params, "adasExtrinsicParams") else {
            return bad_request(&sim, "adasExtrinsicParams required for type 2");
        };
        let values: Vec<&str> = raw.split('|').map(str::trim).collect();
        if values.len() != 7 || values.iter().any(|v| v.parse::<f64>().is_err()) {
            return bad_request(&sim, &format!("bad adasExtrinsicParams {raw:?}"));
        }
        Some(values.join("|"))
    } else {
        None
    };
    {
        let mut st = sim.lock();
        let cal = &mut st.calibration;
        match adas_params {
            Some(p) => {
                cal.adas = Some(result);
                cal.adas_params = p;
            }
            None => cal.dms = Some(result),
        }
    }
    api_ok(
        &sim,
        Value::String(format!(r#"{{"calibration":{result},"type":"{kind}"}}"#)),
    )
}

async fn calibration_params(State(sim): State<Sim>, req: Request) -> Response {
    let params = match read_params(req).await {
        Ok(p) => p,
        Err(why) => return bad_request(&sim, &why),
    };
    if param(&params, "params") != Some("0") {
        return bad_request(&sim, "params must be 0");
    }
    let p = sim.lock().calibration.adas_params.clone();
    api_ok(&sim, Value::String(p))
}

// ---------------------------------------------------------------------------------------------
// 3.6 / 3.7 downloads: GET /<filePath>

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

async fn download(State(sim): State<Sim>, req: Request) -> Response {
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
    let Some(file_path) = clips::camera_to_disk(&sim.dir, &path) else {
        return api_err(
            &sim,
            StatusCode::FORBIDDEN,
            403,
            "path escapes the video root",
        );
    };
    // Refuse symlinks leading out of the directory.
    let inside = match (fs::canonicalize(&file_path), fs::canonicalize(&sim.dir)) {
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
    *resp.body_mut() = body_stream(BodyStream {
        file,
        left: len,
        sent: 0,
        drop_at,
        sim,
        deadline: None,
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

    #[test]
    fn thumbnail_is_a_jpeg() {
        assert_eq!(&THUMBNAIL_JPEG[..2], &[0xFF, 0xD8]);
        assert_eq!(&THUMBNAIL_JPEG[THUMBNAIL_JPEG.len() - 2..], &[0xFF, 0xD9]);
        assert_eq!(THUMBNAIL_JPEG.len(), 2 + 69 + 13 + 22 + 22 + 10 + 1 + 2);
    }

    #[test]
    fn sizes() {
        assert_eq!(format_mb(57_789_466), "55.112MB");
        assert_eq!(format_gb(SD_CARD_BYTES), "59.463GB");
    }
}
