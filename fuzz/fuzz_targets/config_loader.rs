//! The config loader on arbitrary UTF-8: it must refuse, never panic, and whatever it
//! accepts must hold the validated invariants (a destination, a safe prefix, ...).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use qucam::ClipName;
use qucam_offload::key::object_key;
use qucam_offload::config::{Config, parse_bytes, parse_duration};

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let _ = parse_bytes(text);
    let _ = parse_duration(text);
    let cfg = match Config::parse(text, Path::new("fuzz.toml")) {
        Ok(cfg) => cfg,
        Err(e) => {
            let m = e.to_string();
            assert!(m.contains("fuzz.toml"), "error does not name the file: {m}");
            return;
        }
    };
    assert!(!cfg.cameras.is_empty());
    assert!(
        cfg.s3.is_some() != cfg.local.is_some(),
        "exactly one destination"
    );
    assert!((1..=1000).contains(&cfg.sync.page_size));
    assert!(
        cfg.camera(cfg.cameras.first().map(|c| c.name.as_str()))
            .is_ok()
    );
    let prefix = cfg.prefix();
    assert!(
        !prefix.starts_with('/') && !prefix.ends_with('/'),
        "{prefix:?}"
    );
    let clip = ClipName::parse("20210427_115134_00_1.mp4").unwrap();
    let key = object_key(prefix, "867867432522518", &clip).expect("a valid prefix makes a key");
    assert!(
        key.split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".."),
        "{key:?}"
    );
    assert!(
        key.ends_with("/867867432522518/2021-04-27/20210427_115134_00_1.mp4") || prefix.is_empty()
    );
});
