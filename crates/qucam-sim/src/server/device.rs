//! The small endpoints: 3.2 `delete_file`, 3.3 `get_device_info`, 3.4 `format_sdcard`,
//! 3.5 thumbnails, 3.8 RTMP and 3.9/3.10 calibration.

use std::fs;
use std::io;
use std::path::Path;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use qucam::ClipName;

use super::{
    Params, Sim, api_err, api_ok, bad_request, blocking, format_gb, internal, json_response, param,
    read_body, read_params,
};
use crate::clips;

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

pub(super) async fn delete_files(State(sim): State<Sim>, req: Request) -> Response {
    let paths = match read_body(req).await {
        Ok((params, body)) => delete_paths(&body, &params),
        Err(why) => Err(why),
    };
    let paths = match paths {
        Ok(p) => p,
        Err(why) => return bad_request(&sim, &why),
    };
    {
        let mut st = sim.lock();
        if st.faults.busy_deletes > 0 {
            st.faults.busy_deletes -= 1;
            drop(st);
            return api_ok(&sim, json!("Camera Busy"));
        }
        if st.faults.ignore_deletes {
            // A read-only SD card: the delete is acknowledged, nothing is removed.
            st.ignored_deletes.extend(paths.iter().cloned());
            drop(st);
            return api_ok(&sim, json!("success"));
        }
    }
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        match clips::camera_to_disk(&sim.dir(), &path) {
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

pub(super) async fn format_sdcard(State(sim): State<Sim>) -> Response {
    let dir = sim.dir();
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

pub(super) async fn device_info(State(sim): State<Sim>) -> Response {
    if let Some(raw) = sim.lock().faults.device_info_override.clone() {
        return json_response(StatusCode::OK, raw);
    }
    let dir = sim.dir();
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
            "password": st.password,
            "s_n": null,
            "sd_card_format": "FAT32",
            "sd_card_model_no": "SC64G",
            "sd_card_size": format_gb(total),
            "sd_card_type": "SD",
            "sd_card_used_space": format_gb(used),
            "signal": "none",
            "ssid": st.ssid,
        })
    };
    api_ok(&sim, Value::String(doc.to_string()))
}

// ---------------------------------------------------------------------------------------------
// 3.5 thumbnail

pub(super) async fn thumbnail(State(sim): State<Sim>, req: Request) -> Response {
    let params = match read_params(req).await {
        Ok(p) => p,
        Err(why) => return bad_request(&sim, &why),
    };
    let Some(path) = param(&params, "path") else {
        return bad_request(&sim, "missing path");
    };
    let file = clips::camera_to_disk(&sim.dir(), path).filter(|f| {
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

pub(super) async fn update_rtmp_state(State(sim): State<Sim>, req: Request) -> Response {
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

pub(super) async fn calibrate(State(sim): State<Sim>, req: Request) -> Response {
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

pub(super) async fn calibration_params(State(sim): State<Sim>, req: Request) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::format_mb;

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
