//! The camera reply decoder on hostile bytes: the envelope, then every payload decoder
//! on whatever `data` it yields, the same decoders on the input taken directly as JSON
//! or text, the bounded listing decoder (it agrees with the unbounded one, and a bound
//! below the length is a clean error), the ADAS extrinsics parser and the
//! `Content-Range` parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qucam::reply::{
    AdasExtrinsics, Data, decode_calibration, decode_device_info, decode_envelope,
    decode_file_list, decode_format,
};
use qucam::listing::decode_file_list_reply;
use qucam::{CameraError, parse_content_range};

fuzz_target!(|input: &[u8]| {
    match decode_envelope(input) {
        Ok(data) => {
            // Busy is only ever reported as an error, never handed on as a message.
            if let Data::Text(t) = &data {
                assert!(
                    !t.to_ascii_lowercase().contains("busy"),
                    "busy message passed as data: {t:?}"
                );
            }
            payloads(data);
        }
        Err(e) => {
            let _ = e.to_string();
            if let CameraError::Api { code, code_raw, .. } = &e {
                assert_ne!(*code, Some(301), "301 must be Busy, not Api ({code_raw:?})");
            }
        }
    }
    bounded_listing(input);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(input) {
        payloads(Data::Json(v));
    }
    if let Ok(text) = std::str::from_utf8(input) {
        payloads(Data::Text(text.to_string()));
        extrinsics(text);
        content_range(text);
    }
});

fn payloads(data: Data) {
    match decode_file_list(data.clone()) {
        Ok(list) => {
            let _ = serde_json::to_string(&list).expect("listing serializes");
        }
        Err(e) => drop(e.to_string()),
    }
    match decode_device_info(data.clone()) {
        Ok(info) => {
            let shown = format!("{info:?}");
            assert!(shown.contains("********"), "password not masked in {shown}");
            let json = serde_json::to_string(&info).expect("device info serializes");
            assert!(
                json.contains("\"********\""),
                "password not masked in {json}"
            );
        }
        Err(e) => drop(e.to_string()),
    }
    match decode_calibration(data.clone()) {
        Ok(r) => drop(format!("{r:?}")),
        Err(e) => drop(e.to_string()),
    }
    let _ = decode_format(data);
}

/// Where the unbounded decoder lists entries, the bounded one lists the same; with a bound
/// below that, it ends in `ListingTooLong`.
fn bounded_listing(input: &[u8]) {
    let bounded = decode_file_list_reply(input, 10_000);
    let Ok(list) = decode_envelope(input).and_then(decode_file_list) else {
        return;
    };
    if list.len() > 10_000 {
        return;
    }
    assert_eq!(bounded.expect("bounded listing"), list);
    if !list.is_empty() {
        let short = decode_file_list_reply(input, list.len() - 1);
        assert!(
            matches!(short, Err(CameraError::ListingTooLong { .. })),
            "{short:?}"
        );
    }
}

fn extrinsics(text: &str) {
    if let Ok(x) = AdasExtrinsics::from_wire(text) {
        let wire = x.to_wire();
        let back = AdasExtrinsics::from_wire(&wire).expect("to_wire output parses");
        assert_eq!(back, x, "extrinsics do not round-trip through {wire:?}");
        assert_eq!(wire.split('|').count(), 7);
    }
}

fn content_range(text: &str) {
    if let Some((start, Some(total))) = parse_content_range(text) {
        assert!(
            start < total,
            "{text:?}: start {start} not below total {total}"
        );
    }
}
