//! Clip names, camera paths and object keys on hostile input.
//!
//! The input is up to four lines: name, camera path, prefix, IMEI (missing ones take
//! vendor-example defaults). Whatever is accepted must keep every key inside the
//! prefix and every camera path free of traversal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qucam::{ClipName, check_camera_path, check_imei};
use qucam_offload::key::object_key;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let mut lines = text.splitn(4, '\n');
    let name = lines.next().unwrap_or_default();
    let path = lines.next();
    let prefix = lines.next().unwrap_or("dashcam");
    let imei = lines.next().unwrap_or("867867432522518");

    if check_imei(imei).is_ok() {
        assert!(!imei.is_empty() && imei.len() <= 32);
        assert!(imei.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    }

    // The whole input as a name too, so single-line seeds exercise the parser alone.
    for candidate in [name, text] {
        let Ok(clip) = ClipName::parse(candidate) else {
            continue;
        };
        check_name(candidate, &clip);
        check_key(prefix, imei, &clip);
        let default_path;
        let path = match path {
            Some(p) => p,
            None => {
                default_path = format!("/storage/sdcard1/queclink/video/{candidate}");
                &default_path
            }
        };
        if check_camera_path(path, &clip).is_ok() {
            check_path(path, &clip);
        }
    }
});

fn check_name(raw: &str, clip: &ClipName) {
    assert_eq!(clip.as_str(), raw);
    assert!(raw.len() <= 64);
    assert!(
        !raw.contains(['/', '\\', '\0', '%']) && !raw.contains(".."),
        "{raw:?}"
    );
    assert!(!raw.chars().any(char::is_control), "{raw:?}");
    assert!(clip.camera() == 1 || clip.camera() == 2);
    assert_eq!(clip.event_code().len(), 2);
    let date = clip.date();
    assert_eq!(date.len(), 10, "{date:?}");
    assert!(
        date.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 {
            b == b'-'
        } else {
            b.is_ascii_digit()
        }),
        "{date:?}"
    );
}

fn check_key(prefix: &str, imei: &str, clip: &ClipName) {
    let Ok(key) = object_key(prefix, imei, clip) else {
        return;
    };
    let bad = |why: &str| panic!("key {key:?} from prefix {prefix:?}, imei {imei:?}: {why}");
    if key.starts_with('/') {
        bad("leading slash");
    }
    if key.contains("//") {
        bad("empty segment");
    }
    if key.contains(['\0', '\\']) || key.chars().any(char::is_control) {
        bad("NUL, backslash or control character");
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        bad("empty, \".\" or \"..\" segment");
    }
    let p = prefix.trim_matches('/');
    let rest = if p.is_empty() {
        key.as_str()
    } else {
        match key.strip_prefix(p).and_then(|r| r.strip_prefix('/')) {
            Some(r) => r,
            None => bad("does not start with the prefix"),
        }
    };
    let segs: Vec<&str> = rest.split('/').collect();
    if segs != [imei, clip.date().as_str(), clip.as_str()] {
        bad("is not {prefix}/{imei}/{date}/{name}");
    }
}

fn check_path(path: &str, clip: &ClipName) {
    assert!(path.starts_with('/'), "{path:?}");
    assert!(
        !path.contains(['\\', '%']) && !path.chars().any(char::is_control),
        "{path:?}"
    );
    let segs: Vec<&str> = path[1..].split('/').collect();
    assert!(
        !segs.iter().any(|s| s.is_empty() || *s == "." || *s == ".."),
        "{path:?}"
    );
    assert_eq!(segs.last().copied(), Some(clip.as_str()), "{path:?}");
}
