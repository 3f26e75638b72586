//! Decoding the camera's reply envelope and payloads, with every quirk of the vendor
//! document absorbed here: `data` as an array, as a string holding JSON or as a plain
//! message; `errorCode` as a number or a string; "Camera Busy" under code 200; device
//! info as JSON inside a string inside JSON. Unknown fields are ignored, missing ones
//! tolerated.

use std::borrow::Cow;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::clip_name::excerpt;
use crate::error::CameraError;
use crate::secret::Secret;

/// The decoded `data` of a successful reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// A JSON value (a real array or object, or one decoded from a string).
    Json(Value),
    /// A plain message such as `"success"`.
    Text(String),
    /// No `data` at all, or `null`.
    Empty,
}

/// Decodes an envelope `{"data": …, "errorCode": …, "isSuccess": …}`.
///
/// ```
/// use qucam::CameraError;
/// use qucam::reply::{Data, decode_envelope, decode_file_list};
///
/// // "Camera Busy" arrives with isSuccess: true; it is still an error.
/// let busy = decode_envelope(br#"{"data":"Camera Busy","errorCode":200,"isSuccess":true}"#);
/// assert!(matches!(busy, Err(CameraError::Busy)));
///
/// // A listing may come as an array in a string, with the code as a string.
/// let data = decode_envelope(
///     br#"{"data":"[{\"name\":\"20210427_115134_00_1.mp4\",\"size\":\"12\"}]","errorCode":"200","isSuccess":true}"#,
/// )?;
/// assert!(matches!(data, Data::Json(_)));
/// let files = decode_file_list(data)?;
/// assert_eq!(files[0].size, Some(12));
/// # Ok::<(), CameraError>(())
/// ```
pub fn decode_envelope(body: &[u8]) -> Result<Data, CameraError> {
    let env = parse_envelope(body)?;
    let data = match env.data.map(RawValue::get) {
        None | Some("null") => Data::Empty,
        Some(raw) if raw.starts_with('"') => {
            let s: String =
                serde_json::from_str(raw).map_err(|_| malformed("reply is not JSON", body))?;
            decode_string_data(&s)
        }
        Some(raw) => {
            Data::Json(serde_json::from_str(raw).map_err(|_| malformed("reply is not JSON", body))?)
        }
    };
    let busy_text = matches!(&data, Data::Text(t) if mentions_busy(t));
    if busy_text || env.code == Some(301) {
        return Err(CameraError::Busy);
    }
    if !env.success {
        let message = match &data {
            // A refusal may quote the device info, hotspot password included: masked, and
            // its line breaks and escapes replaced.
            Data::Text(t) => crate::clip_name::message_excerpt(t),
            Data::Json(v) => excerpt(&v.to_string()),
            Data::Empty => String::new(),
        };
        return Err(env.refusal(message));
    }
    Ok(data)
}

/// The envelope of a reply, `data` left undecoded (a slice of the reply itself).
pub(crate) struct Envelope<'a> {
    /// `errorCode` as a number, when it is one.
    pub(crate) code: Option<i64>,
    /// `errorCode` as sent.
    code_raw: String,
    /// `isSuccess`, or judged by the code when missing.
    pub(crate) success: bool,
    /// The raw JSON text of `data`, if present.
    pub(crate) data: Option<&'a RawValue>,
}

impl Envelope<'_> {
    /// The error for `isSuccess: false`, with the camera's message.
    pub(crate) fn refusal(self, message: String) -> CameraError {
        CameraError::Api {
            code: self.code,
            code_raw: self.code_raw,
            message,
        }
    }
}

/// Reads the envelope without materialising `data`: unknown fields are skipped, the
/// last of repeated fields wins, a leading BOM is tolerated.
pub(crate) fn parse_envelope(body: &[u8]) -> Result<Envelope<'_>, CameraError> {
    let text = std::str::from_utf8(body).map_err(|_| malformed("reply is not UTF-8", body))?;
    let text = text.trim_start_matches('\u{feff}');
    let fields: EnvelopeFields<'_> = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(_) if serde_json::from_str::<IgnoredAny>(text).is_ok() => {
            return Err(malformed("reply is not a JSON object", body));
        }
        Err(_) => return Err(malformed("reply is not JSON", body)),
    };
    // The camera's text: masked, cut and cleaned, since it is shown in error messages.
    let code_raw = match small_value(fields.error_code) {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => crate::text::clean(&crate::secret::mask_secrets(&s), 32),
        Some(Value::Null) | None => String::new(),
        Some(other) => crate::text::clean(&crate::secret::mask_secrets(&other.to_string()), 32),
    };
    let code = code_raw.trim().parse::<i64>().ok();
    let success = match small_value(fields.is_success) {
        Some(Value::Bool(b)) => b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        // Missing: judge by the code.
        _ => code.is_none_or(|c| c == 200),
    };
    Ok(Envelope {
        code,
        code_raw,
        success,
        data: fields.data,
    })
}

/// A small envelope field as a [`Value`]; a huge one (hostile) as a short string.
fn small_value(raw: Option<&RawValue>) -> Option<Value> {
    let raw = raw?.get();
    if raw.len() > 4096 {
        return Some(Value::String(excerpt(raw)));
    }
    serde_json::from_str(raw).ok()
}

/// The three envelope fields, each as raw JSON text.
#[derive(Default)]
struct EnvelopeFields<'a> {
    error_code: Option<&'a RawValue>,
    is_success: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for EnvelopeFields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EnvelopeVisitor)
    }
}

struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = EnvelopeFields<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = EnvelopeFields::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let slot = match key.as_ref() {
                "errorCode" => &mut out.error_code,
                "isSuccess" => &mut out.is_success,
                "data" => &mut out.data,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value::<&'de RawValue>()?);
        }
        Ok(out)
    }
}

/// The camera's message says it is busy (any letter case), without copying it.
pub(crate) fn mentions_busy(t: &str) -> bool {
    t.as_bytes()
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"busy"))
}

/// A string `data` holding JSON becomes JSON; anything else stays a message.
fn decode_string_data(s: &str) -> Data {
    let t = s.trim();
    if (t.starts_with('[') || t.starts_with('{'))
        && let Ok(v) = serde_json::from_str::<Value>(t)
    {
        return Data::Json(v);
    }
    Data::Text(s.to_string())
}

pub(crate) fn malformed(what: &str, body: &[u8]) -> CameraError {
    let shown = String::from_utf8_lossy(&body[..body.len().min(120)]);
    CameraError::Malformed {
        what: what.to_string(),
        excerpt: excerpt(&shown),
    }
}

/// A number that may arrive as a number, a numeric string, or not at all.
pub(crate) fn lenient_i64(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(crate) fn lenient_str(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(crate) fn lenient_bool(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64().map(|i| i != 0),
        _ => None,
    }
}

/// One entry of `get_video_files_info`, exactly as the camera claimed it (unvalidated).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileEntry {
    /// File name (check it with [`ClipName::parse`](crate::ClipName::parse)).
    pub name: String,
    /// Path on the camera, for downloads and deletes (check it with
    /// [`check_camera_path`](crate::check_camera_path)).
    pub path: String,
    /// Bytes; `None` when missing or not a number (a hostile camera may send anything).
    pub size: Option<i64>,
    /// Recording time, ms since the epoch.
    pub date_ms: Option<i64>,
    /// Length of the recording, ms.
    pub duration_ms: Option<i64>,
    /// The entry is a directory, not a clip.
    pub is_directory: bool,
}

/// Decodes the listing `data` (array, or array in a string; `"[]"` and empty are empty).
///
/// Unbounded, on an already decoded [`Data`]: a listing reply off the wire is decoded by
/// [`listing::decode_file_list_reply`](crate::listing::decode_file_list_reply) instead,
/// which builds no more entries than asked for.
pub fn decode_file_list(data: Data) -> Result<Vec<FileEntry>, CameraError> {
    let items = match data {
        Data::Empty => return Ok(Vec::new()),
        Data::Text(t) if t.trim().is_empty() => return Ok(Vec::new()),
        Data::Text(t) => {
            return Err(CameraError::Malformed {
                what: "file listing is a message, not a list".into(),
                excerpt: excerpt(&t),
            });
        }
        Data::Json(Value::Array(items)) => items,
        Data::Json(other) => {
            return Err(CameraError::Malformed {
                what: "file listing is not a list".into(),
                excerpt: excerpt(&other.to_string()),
            });
        }
    };
    Ok(items
        .iter()
        .filter_map(|it| {
            let o = it.as_object()?;
            Some(FileEntry {
                name: lenient_str(o.get("name")).unwrap_or_default(),
                path: lenient_str(o.get("path")).unwrap_or_default(),
                size: lenient_i64(o.get("size")),
                date_ms: lenient_i64(o.get("date")),
                duration_ms: lenient_i64(o.get("duration_long")),
                is_directory: lenient_bool(o.get("isDirectory")).unwrap_or(false),
            })
        })
        .collect())
}

/// `cameraPreviewState`, itself a JSON string inside device info.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PreviewState {
    /// An RTMP push is running (the vendor spells the key `isLving`).
    pub is_living: Option<bool>,
    /// The camera wants a new RTMP URL.
    pub need_update_url: Option<bool>,
    /// The camera being pushed (0 front, 1 interior), -1 for none.
    pub preview_camera_id: Option<i64>,
    /// The RTMP URL last set.
    pub rtmp_url: Option<String>,
}

/// `get_device_info`, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeviceInfo {
    /// The camera's IMEI, its identity (empty when missing; check it with
    /// [`check_imei`](crate::check_imei) before use).
    pub imei: String,
    /// Model, e.g. `CV100`.
    pub device_name: Option<String>,
    /// Firmware version.
    pub application_version: Option<String>,
    /// Free/total storage as the camera words it, e.g. `52.391GB/59.463GB`.
    pub local_storage: Option<String>,
    /// The Wi-Fi hotspot password (never shown, see [`Secret`]).
    pub password: Secret,
    /// Serial number (`s_n`).
    pub serial_number: Option<String>,
    /// SD card file system, e.g. `FAT32`.
    pub sd_card_format: Option<String>,
    /// SD card model.
    pub sd_card_model_no: Option<String>,
    /// SD card size, e.g. `59.463GB`.
    pub sd_card_size: Option<String>,
    /// SD card type, e.g. `SD`.
    pub sd_card_type: Option<String>,
    /// Space used on the SD card, e.g. `7.072GB`.
    pub sd_card_used_space: Option<String>,
    /// Cellular signal, e.g. `none`.
    pub signal: Option<String>,
    /// The hotspot's SSID, as sent (matched against hotspots; clean it to show it).
    pub ssid: Option<String>,
    /// The RTMP preview state.
    pub preview: Option<PreviewState>,
}

/// Decodes device info (`data` a JSON string holding an object, or a real object).
pub fn decode_device_info(data: Data) -> Result<DeviceInfo, CameraError> {
    let obj = match data {
        Data::Json(Value::Object(o)) => o,
        Data::Json(other) => {
            return Err(CameraError::Malformed {
                what: "device info is not an object".into(),
                excerpt: excerpt(&other.to_string()),
            });
        }
        Data::Text(t) => {
            return Err(CameraError::Malformed {
                what: "device info is a message, not an object".into(),
                excerpt: excerpt(&t),
            });
        }
        Data::Empty => {
            return Err(CameraError::Malformed {
                what: "device info is empty".into(),
                excerpt: String::new(),
            });
        }
    };
    let raw = |k: &str| lenient_str(obj.get(k)).filter(|v| !v.is_empty());
    // Text shown as it is (a device name, a firmware version): cut and cleaned here.
    let s = |k: &str| raw(k).map(|v| crate::text::clean(&v, crate::text::FIELD_CHARS));
    let preview = match obj.get("cameraPreviewState") {
        Some(Value::String(inner)) => serde_json::from_str::<Value>(inner).ok(),
        Some(v @ Value::Object(_)) => Some(v.clone()),
        _ => None,
    }
    .and_then(|v| {
        let o = v.as_object()?.clone();
        Some(PreviewState {
            is_living: lenient_bool(o.get("isLving").or(o.get("isLiving"))),
            need_update_url: lenient_bool(o.get("needUpdateUrl")),
            preview_camera_id: lenient_i64(o.get("previewCameraId")),
            rtmp_url: lenient_str(o.get("rtmpUrl"))
                .map(|v| crate::text::clean(&v, crate::text::FIELD_CHARS)),
        })
    });
    Ok(DeviceInfo {
        // Checked by `check_imei` before any use; matched as sent.
        imei: raw("imei").unwrap_or_default(),
        device_name: s("device_name"),
        application_version: s("application_version"),
        local_storage: s("local_storage"),
        password: Secret::new(raw("password").unwrap_or_default()),
        serial_number: s("s_n"),
        sd_card_format: s("sd_card_format"),
        sd_card_model_no: s("sd_card_model_no"),
        sd_card_size: s("sd_card_size"),
        sd_card_type: s("sd_card_type"),
        sd_card_used_space: s("sd_card_used_space"),
        signal: s("signal"),
        // Matched against the hotspots as sent: clean it to show it.
        ssid: raw("ssid"),
        preview,
    })
}

/// The result of `format_sdcard`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum FormatOutcome {
    /// The SD card was formatted.
    Formatted,
    /// There is no SD card to format.
    NoSdCard,
    /// Anything else, with the camera's message.
    Failed(String),
}

/// Decodes the `format_sdcard` message.
pub fn decode_format(data: Data) -> FormatOutcome {
    match data {
        Data::Text(t) if t.to_ascii_lowercase().contains("success") => FormatOutcome::Formatted,
        Data::Text(t) if t.to_ascii_lowercase().contains("no sd") => FormatOutcome::NoSdCard,
        Data::Text(t) => FormatOutcome::Failed(crate::clip_name::message_excerpt(&t)),
        Data::Json(v) => FormatOutcome::Failed(excerpt(&v.to_string())),
        Data::Empty => FormatOutcome::Failed("empty reply".into()),
    }
}

/// Driver-assistance calibration target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CalibrationKind {
    /// Driver monitoring (interior camera; CV200 only).
    Dms,
    /// Advanced driver assistance (front camera).
    Adas,
}

/// The seven ADAS extrinsic values, in the vendor's order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct AdasExtrinsics {
    /// Pixel row of the horizon.
    pub horizon: f64,
    /// Car middle, pixels (-10..10).
    pub car_middle: f64,
    /// Car width, cm.
    pub car_width: f64,
    /// Camera height, cm.
    pub camera_height: f64,
    /// Camera to front axle, cm.
    pub camera_to_axle: f64,
    /// Camera to bumper, cm.
    pub camera_to_bumper: f64,
    /// Camera to left wheel, cm.
    pub camera_to_left_wheel: f64,
}

impl AdasExtrinsics {
    /// The vendor's wire form, the seven values joined by `|`.
    ///
    /// ```
    /// use qucam::AdasExtrinsics;
    ///
    /// let x = AdasExtrinsics::from_wire("360|0|180|130|150|200|75")?;
    /// assert_eq!(x.car_width, 180.0);
    /// assert_eq!(x.to_wire(), "360|0|180|130|150|200|75");
    /// # Ok::<(), String>(())
    /// ```
    pub fn to_wire(&self) -> String {
        [
            self.horizon,
            self.car_middle,
            self.car_width,
            self.camera_height,
            self.camera_to_axle,
            self.camera_to_bumper,
            self.camera_to_left_wheel,
        ]
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("|")
    }

    /// Parses `1|2|3|4|5|6|7`.
    pub fn from_wire(s: &str) -> Result<Self, String> {
        let vals: Vec<f64> = s
            .trim()
            .split('|')
            .map(|p| {
                p.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("{p:?} is not a number"))
            })
            .collect::<Result<_, _>>()?;
        let [a, b, c, d, e, f, g] = vals.as_slice() else {
            return Err(format!(
                "expected 7 values joined by '|', got {}",
                vals.len()
            ));
        };
        if vals.iter().any(|v| !v.is_finite()) {
            return Err("values must be finite".into());
        }
        Ok(AdasExtrinsics {
            horizon: *a,
            car_middle: *b,
            car_width: *c,
            camera_height: *d,
            camera_to_axle: *e,
            camera_to_bumper: *f,
            camera_to_left_wheel: *g,
        })
    }
}

/// The camera's answer to a calibration request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CalibrationState {
    /// `0`: calibration failed.
    Failed,
    /// `1`: calibrated.
    Successful,
    /// `2`: not ready to calibrate.
    NotReady,
    /// A state the vendor document does not name.
    Other(i64),
}

/// Decodes a calibration reply: the state and, when the camera says, the calibration type.
pub fn decode_calibration(data: Data) -> Result<(CalibrationState, Option<i64>), CameraError> {
    let Data::Json(Value::Object(o)) = data else {
        return Err(CameraError::Malformed {
            what: "calibration reply is not an object".into(),
            excerpt: String::new(),
        });
    };
    let state = match lenient_i64(o.get("calibration")) {
        Some(0) => CalibrationState::Failed,
        Some(1) => CalibrationState::Successful,
        Some(2) => CalibrationState::NotReady,
        Some(n) => CalibrationState::Other(n),
        None => {
            return Err(CameraError::Malformed {
                what: "calibration reply has no calibration state".into(),
                excerpt: excerpt(&Value::Object(o).to_string()),
            });
        }
    };
    Ok((state, lenient_i64(o.get("type"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_under_code_200() {
        let e = decode_envelope(br#"{"data":"Camera Busy","errorCode":200,"isSuccess":true}"#);
        assert!(matches!(e, Err(CameraError::Busy)));
        let e = decode_envelope(br#"{"data":"[]","errorCode":"301","isSuccess":true}"#);
        assert!(matches!(e, Err(CameraError::Busy)));
    }

    #[test]
    fn failure_with_string_code() {
        let e = decode_envelope(br#"{"data":"[]","errorCode":"errorCode","isSuccess":false}"#);
        match e {
            Err(CameraError::Api { code, code_raw, .. }) => {
                assert_eq!(code, None);
                assert_eq!(code_raw, "errorCode");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn list_as_string_or_array() {
        let a = decode_envelope(
            br#"{"data":[{"name":"n","path":"/p","size":"12"}],"errorCode":200,"isSuccess":true}"#,
        )
        .unwrap();
        let b = decode_envelope(br#"{"data":"[{\"name\":\"n\",\"path\":\"/p\",\"size\":12}]","errorCode":"200","isSuccess":true}"#).unwrap();
        let la = decode_file_list(a).unwrap();
        assert_eq!(la, decode_file_list(b).unwrap());
        assert_eq!(la[0].size, Some(12));
        let empty = decode_envelope(br#"{"data":"[]","errorCode":200,"isSuccess":true}"#).unwrap();
        assert!(decode_file_list(empty).unwrap().is_empty());
    }

    #[test]
    fn vendor_device_info_example() {
        let body = br#"{"data":"{\"application_version\":\"V06\",\"cameraPreviewState\":\"{\\\"isLving\\\":false,\\\"needUpdateUrl\\\":true,\\\"previewCameraId\\\":-1,\\\"rtmpUrl\\\":\\\"\\\"}\",\"device_name\":\"CV100\",\"imei\":\"867867432522518\",\"local_storage\":\"52.391GB/59.463GB\",\"password\":\"12345678\",\"s_n\":null,\"sd_card_format\":\"FAT32\",\"sd_card_model_no\":\"SC64G\",\"sd_card_size\":\"59.463GB\",\"sd_card_type\":\"SD\",\"sd_card_used_space\":\"7.072GB\",\"signal\":\"none\",\"ssid\":\"queclinkgh\"}","errorCode":200,"isSuccess":true}"#;
        let info = decode_device_info(decode_envelope(body).unwrap()).unwrap();
        assert_eq!(info.imei, "867867432522518");
        assert_eq!(info.device_name.as_deref(), Some("CV100"));
        assert_eq!(info.password.expose(), "12345678");
        assert_eq!(info.preview.as_ref().unwrap().preview_camera_id, Some(-1));
        let shown = format!("{info:?} {}", serde_json::to_string(&info).unwrap());
        assert!(!shown.contains("12345678"), "password leaked: {shown}");
    }

    #[test]
    fn not_json_is_malformed_with_excerpt() {
        let e = decode_envelope(b"<html><body>502 Bad Gateway</body></html>").unwrap_err();
        assert!(e.to_string().contains("502 Bad Gateway"), "{e}");
        let e = decode_envelope(&[0xff, 0xfe, 0x00]).unwrap_err();
        assert!(matches!(e, CameraError::Malformed { .. }));
    }

    #[test]
    fn extrinsics_round_trip() {
        let x = AdasExtrinsics::from_wire("1|2|3|4|5|6|7").unwrap();
        assert_eq!(x.camera_to_left_wheel, 7.0);
        assert_eq!(x.to_wire(), "1|2|3|4|5|6|7");
        assert!(AdasExtrinsics::from_wire("1|2|3").is_err());
    }

    #[test]
    fn errors_quoting_a_reply_never_show_the_hotspot_password() {
        let refused = br#"{"isSuccess":false,"errorCode":7,"data":"{\"ssid\":\"queclinkgh\",\"password\":\"hunter22\"}"}"#;
        let broken = br#"{"imei":"860000000000001","password":"hunter22","#;
        for body in [&refused[..], &broken[..]] {
            let e = decode_envelope(body).expect_err("not a good reply");
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("hunter22"), "{shown}");
        }
    }
}
