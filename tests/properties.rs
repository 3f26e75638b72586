//! Property tests for the clip-name parser, the object-key builder, the camera-path
//! check and the reply envelope: whatever a camera sends, a key never leaves its prefix.

use proptest::prelude::*;
use qucam::CameraError;
use qucam::reply::decode_envelope;
use qucam::{ClipName, check_camera_path};
use qucam_offload::key::object_key;
use serde_json::json;

fn days_in(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `(yyyyMMdd, YYYY-MM-DD)` for any real calendar day of years 0000-9999.
fn date() -> impl Strategy<Value = (String, String)> {
    (0u32..=9999, 1u32..=12)
        .prop_flat_map(|(y, m)| (Just(y), Just(m), 1..=days_in(y, m)))
        .prop_map(|(y, m, d)| {
            (
                format!("{y:04}{m:02}{d:02}"),
                format!("{y:04}-{m:02}-{d:02}"),
            )
        })
}

fn time() -> impl Strategy<Value = String> {
    (0u32..24, 0u32..60, 0u32..60).prop_map(|(h, m, s)| format!("{h:02}{m:02}{s:02}"))
}

fn event() -> impl Strategy<Value = String> {
    "[0-9a-fA-F]{2}"
}

fn camera() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("1"), Just("2")]
}

fn ext() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("mp4"), Just("ts"), Just("MP4"), Just("TS")]
}

/// A well-formed clip name and the date it should file under.
fn valid_name() -> impl Strategy<Value = (String, String)> {
    (date(), time(), event(), camera(), ext())
        .prop_map(|((d, iso), t, e, c, x)| (format!("{d}_{t}_{e}_{c}.{x}"), iso))
}

/// A prefix the config loader accepts: safe segments, maybe with outer slashes.
fn valid_prefix() -> impl Strategy<Value = String> {
    let seg = "[A-Za-z0-9_.-]{1,12}".prop_filter("not . or ..", |s| s != "." && s != "..");
    (
        prop::collection::vec(seg, 0..4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(segs, lead, trail)| {
            let mut p = segs.join("/");
            if lead {
                p.insert(0, '/');
            }
            if trail {
                p.push('/');
            }
            p
        })
}

fn valid_imei() -> impl Strategy<Value = String> {
    "[A-Za-z0-9-]{1,32}"
}

/// Any string at all: every Unicode scalar, NUL and control characters included.
fn any_chars(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

/// Strings assembled from valid-name pieces and traversal tricks, so that some of them
/// get past the parser's first checks.
fn tricky_name() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just("/".to_string()),
        Just("\\".to_string()),
        Just("\0".to_string()),
        Just("%2e".to_string()),
        Just("%2f".to_string()),
        Just("_".to_string()),
        Just("20210427".to_string()),
        Just("115134".to_string()),
        Just("0A".to_string()),
        Just("1".to_string()),
        Just(".mp4".to_string()),
        Just(".ts".to_string()),
        any_chars(3),
        valid_name().prop_map(|(n, _)| n),
    ];
    prop_oneof![
        any_chars(80),
        prop::collection::vec(piece, 0..10).prop_map(|v| v.concat()),
        valid_name().prop_map(|(n, _)| n),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// (a) Every well-formed name parses and files under `{prefix}/{imei}/{date}/{name}`.
    #[test]
    fn valid_names_make_the_documented_key(
        (name, iso) in valid_name(),
        prefix in valid_prefix(),
        imei in valid_imei(),
    ) {
        let clip = ClipName::parse(&name).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(clip.as_str(), name.as_str());
        prop_assert_eq!(clip.date(), iso.clone());
        let key = object_key(&prefix, &imei, &clip).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let p = prefix.trim_matches('/');
        let expected = if p.is_empty() {
            format!("{imei}/{iso}/{name}")
        } else {
            format!("{p}/{imei}/{iso}/{name}")
        };
        prop_assert_eq!(key, expected);
    }

    /// (b) Whatever name the parser accepts, its key stays inside the prefix: no
    /// leading slash, no empty, "." or ".." segment, and exactly imei/date/name after it.
    #[test]
    fn no_accepted_name_escapes_the_prefix(
        name in tricky_name(),
        prefix in valid_prefix(),
        imei in valid_imei(),
    ) {
        let Ok(clip) = ClipName::parse(&name) else { return Ok(()); };
        let key = object_key(&prefix, &imei, &clip).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(!key.starts_with('/'), "{key:?}");
        prop_assert!(!key.contains(['\0', '\\']), "{key:?}");
        prop_assert!(
            key.split('/').all(|s| !s.is_empty() && s != "." && s != ".."),
            "{key:?}"
        );
        let p = prefix.trim_matches('/');
        let rest = if p.is_empty() {
            Some(key.as_str())
        } else {
            key.strip_prefix(&format!("{p}/"))
        };
        prop_assert!(rest.is_some(), "{key:?} is not under {p:?}");
        let segs: Vec<&str> = rest.unwrap().split('/').collect();
        prop_assert_eq!(segs.len(), 3, "{:?}", key);
        prop_assert_eq!(segs[0], imei.as_str());
        prop_assert_eq!(segs[2], name.as_str());
    }

    /// (c) A camera path with a ".." segment is never accepted, wherever it sits.
    #[test]
    fn camera_paths_with_dotdot_are_refused(
        (name, _) in valid_name(),
        before in prop::collection::vec("[a-z0-9.%]{0,6}", 0..4),
        after in prop::collection::vec("[a-z0-9.%]{0,6}", 0..4),
        trailing_slash in any::<bool>(),
    ) {
        let clip = ClipName::parse(&name).unwrap();
        let mut segs = before;
        segs.push("..".into());
        segs.extend(after);
        segs.push(name.clone());
        let mut path = format!("/{}", segs.join("/"));
        if trailing_slash {
            path.push('/');
        }
        prop_assert!(check_camera_path(&path, &clip).is_err(), "{path:?} accepted");
    }

    /// (c') Whatever path is accepted has no "..", "." or empty segment and ends in the name.
    #[test]
    fn accepted_camera_paths_are_clean(
        (name, _) in valid_name(),
        path in prop_oneof![
            any_chars(60),
            prop::collection::vec(
                prop_oneof![Just("..".to_string()), Just(".".to_string()), Just(String::new()),
                            "[a-z0-9%\\\\]{1,5}".prop_map(String::from)],
                0..5,
            ).prop_map(|v| format!("/{}", v.join("/"))),
        ],
    ) {
        let clip = ClipName::parse(&name).unwrap();
        let path = format!("{path}/{name}");
        if check_camera_path(&path, &clip).is_ok() {
            let segs: Vec<&str> = path[1..].split('/').collect();
            prop_assert!(
                segs.iter().all(|s| !s.is_empty() && *s != "." && *s != ".."),
                "{path:?}"
            );
            prop_assert_eq!(*segs.last().unwrap(), name.as_str());
        }
    }

    /// (d) The envelope decoder never panics on arbitrary bytes.
    #[test]
    fn envelope_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_envelope(&body).map_err(|e| e.to_string());
    }

    /// (d) Never panics on JSON-shaped replies with odd fields either.
    #[test]
    fn envelope_never_panics_on_json(
        data in prop_oneof![
            any_chars(40).prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            Just(serde_json::Value::Null),
            Just(json!([])),
            Just(json!([{"name": 1, "size": "x"}])),
        ],
        code in prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            any_chars(8).prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            Just(json!([301])),
        ],
        success in prop_oneof![
            any::<bool>().prop_map(serde_json::Value::from),
            any_chars(6).prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
        ],
    ) {
        let body = json!({"data": data, "errorCode": code, "isSuccess": success}).to_string();
        let _ = decode_envelope(body.as_bytes()).map_err(|e| e.to_string());
    }

    /// (d) A `data` message containing "busy" in any letter case is Busy, whatever the
    /// code and success flag say (a string that is itself a JSON array or object is a
    /// payload, not a message, and is left out).
    #[test]
    fn busy_message_is_busy_in_any_case(
        before in any_chars(20),
        after in any_chars(20),
        upper in prop::array::uniform4(any::<bool>()),
        code in prop_oneof![
            Just(json!(200)),
            Just(json!("200")),
            Just(json!(500)),
            Just(json!("errorCode")),
            Just(serde_json::Value::Null),
        ],
        success in any::<bool>(),
        omit_success in any::<bool>(),
    ) {
        let busy: String = "busy"
            .chars()
            .zip(upper)
            .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
            .collect();
        let data = format!("{before}{busy}{after}");
        let t = data.trim();
        let is_json_doc = (t.starts_with('[') || t.starts_with('{'))
            && serde_json::from_str::<serde_json::Value>(t).is_ok();
        prop_assume!(!is_json_doc);
        let mut env = json!({"data": data, "errorCode": code});
        if !omit_success {
            env["isSuccess"] = json!(success);
        }
        let r = decode_envelope(env.to_string().as_bytes());
        prop_assert!(matches!(r, Err(CameraError::Busy)), "{env} gave {r:?}");
    }
}
