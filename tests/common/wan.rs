//! Helpers for WAN scenarios (a camera polled at its URL): clip names relative to now, and
//! what the agent asked the simulator, read from its request log (which sees parameters
//! sent in the query string: `params = "query"`).
#![allow(dead_code)]

use qucam_sim::{RequestRecord, SimHandle};

use super::fleet::Fleet;

/// The device-info endpoint (the probe and every IMEI check).
pub const DEVICE_INFO: &str = "/device/get_device_info";
/// The listing endpoint.
pub const LISTING: &str = "/device/get_video_files_info";

/// A clip name recorded `minutes` before now (the camera's clock taken as UTC), with event
/// code `event` ("00": a loop recording) on camera 1.
pub fn recorded_ago(minutes: i64, event: &str) -> String {
    let t = chrono::Utc::now().naive_utc() - chrono::Duration::minutes(minutes);
    format!("{}_{event}_1.mp4", t.format("%Y%m%d_%H%M%S"))
}

/// The bytes of a clip of `size` bytes written by [`write_clip`].
fn clip_bytes(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 13 % 251) as u8).collect()
}

/// Writes a clip of `size` bytes called `name` on the fleet's camera.
pub fn write_clip(f: &Fleet, name: &str, size: usize) {
    qucam_sim::write_clip(&f.camera_dir, name, &clip_bytes(size)).expect("write clip");
}

/// Asserts the bucket holds the clip `name` of `size` bytes written by [`write_clip`].
pub fn assert_offloaded(f: &Fleet, name: &str, size: usize) {
    let key = f.key(name);
    let got = f.s3.object_bytes(&key);
    assert!(got.is_some(), "{key} missing from the bucket");
    assert!(
        got == Some(clip_bytes(size)),
        "{key}: other bytes in the bucket"
    );
}

/// The requests the simulator answered from the `from`-th on.
pub fn requests_since(sim: &SimHandle, from: usize) -> Vec<RequestRecord> {
    sim.requests().into_iter().skip(from).collect()
}

/// A query parameter of a request, as sent.
pub fn param(r: &RequestRecord, name: &str) -> Option<String> {
    r.query
        .as_deref()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .map(str::to_owned)
}

/// The `time_type` of each listing request among `requests` (empty: the whole listing).
pub fn listing_windows(requests: &[RequestRecord]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.path == LISTING)
        .map(|r| param(r, "time_type").unwrap_or_default())
        .collect()
}

/// Bytes on the wire for `requests`, as far as the simulator can count them: each
/// request's line (method, path, query; headers not counted) and its reply body.
pub fn bytes_of(requests: &[RequestRecord]) -> u64 {
    requests
        .iter()
        .map(|r| {
            let line = r.method.len() + r.path.len() + r.query.as_ref().map_or(0, |q| q.len() + 1);
            line as u64 + r.body_bytes
        })
        .sum()
}
