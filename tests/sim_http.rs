//! The camera simulator over real HTTP on 127.0.0.1.

use std::sync::{Arc, Mutex};

use qucam_sim::{self as sim, Faults, SimHandle, SimOptions, VIDEO_ROOT};
use serde_json::{Value, json};

const NAMES: [&str; 5] = [
    "20240301_100000_00_1.mp4",
    "20240301_100000_00_2.mp4",
    "20240301_100100_0A_1.mp4",
    "20240302_080000_04_2.ts",
    "20240229_235959_00_1.mp4",
];

async fn start_with(faults: Faults) -> (tempfile::TempDir, SimHandle) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, name) in NAMES.iter().enumerate() {
        sim::write_clip(dir.path(), name, &vec![i as u8; 1000 + i]).expect("write clip");
    }
    // Not clips: never listed.
    std::fs::write(dir.path().join("notes.txt"), b"x").expect("write");
    std::fs::write(dir.path().join("20240301_1000_00_1.mp4"), b"x").expect("write");
    let sim = sim::start(SimOptions {
        dir: dir.path().to_path_buf(),
        faults,
        ..SimOptions::default()
    })
    .await
    .expect("start sim");
    (dir, sim)
}

fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("clientId", "test-client".parse().expect("header"));
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

async fn list(sim: &SimHandle, query: &str) -> Value {
    let url = format!("{}/device/get_video_files_info?{query}", sim.url());
    let resp = client().post(url).send().await.expect("list");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

fn names(reply: &Value) -> Vec<String> {
    reply["data"]
        .as_array()
        .expect("data array")
        .iter()
        .map(|e| e["name"].as_str().expect("name").to_string())
        .collect()
}

#[tokio::test]
async fn listing_shape_order_paging_and_filters() {
    let (_dir, sim) = start_with(Faults::default()).await;

    let all = list(&sim, "").await;
    assert_eq!(all["errorCode"], 200);
    assert_eq!(all["isSuccess"], true);
    assert_eq!(
        names(&all),
        [
            "20240302_080000_04_2.ts",
            "20240301_100100_0A_1.mp4",
            "20240301_100000_00_2.mp4",
            "20240301_100000_00_1.mp4",
            "20240229_235959_00_1.mp4",
        ]
    );
    let e = &all["data"][1];
    let expected = json!({
        "date": 1_709_287_260_000_i64,
        "duration": "01m:00s",
        "duration_long": 60000,
        "format_size": "0.001MB",
        "header_title": "2024-03-01",
        "icon": null,
        "isDirectory": false,
        "name": "20240301_100100_0A_1.mp4",
        "path": format!("{VIDEO_ROOT}/20240301/10/20240301_100100_0A_1.mp4"),
        "permission": "rw",
        "select_mode": false,
        "size": 1002,
    });
    assert_eq!(e, &expected);

    // Paging.
    let page = list(&sim, "count=2&offset=1").await;
    assert_eq!(
        names(&page),
        ["20240301_100100_0A_1.mp4", "20240301_100000_00_2.mp4"]
    );
    // Filters: events, camera, time.
    let ev = list(&sim, "event_type=_0A_:_04_:").await;
    assert_eq!(
        names(&ev),
        ["20240302_080000_04_2.ts", "20240301_100100_0A_1.mp4"]
    );
    let cam = list(&sim, "camera_type=_2.").await;
    assert_eq!(
        names(&cam),
        ["20240302_080000_04_2.ts", "20240301_100000_00_2.mp4"]
    );
    let both = list(&sim, "camera_type=1%5E2&event_type=").await;
    assert_eq!(names(&both).len(), 5);
    let time = list(&sim, "time_type=20240301000000:20240301235959").await;
    assert_eq!(names(&time).len(), 3);

    // Same parameters as a form body and as a JSON body.
    let url = format!("{}/device/get_video_files_info", sim.url());
    let form: Value = client()
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("camera_type=_1.&count=1&offset=0")
        .send()
        .await
        .expect("form")
        .json()
        .await
        .expect("json");
    assert_eq!(names(&form), ["20240301_100100_0A_1.mp4"]);
    let body: Value = client()
        .post(&url)
        .json(&json!({"camera_type": "_1.", "count": 2, "offset": 1}))
        .send()
        .await
        .expect("json body")
        .json()
        .await
        .expect("json");
    assert_eq!(
        names(&body),
        ["20240301_100000_00_1.mp4", "20240229_235959_00_1.mp4"]
    );

    // Bad parameters: failure shape.
    let bad = list(&sim, "time_type=yesterday").await;
    assert_eq!(
        bad,
        json!({"data": "[]", "errorCode": 400, "isSuccess": false})
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn busy_string_codes_and_data_as_string() {
    let (_dir, sim) = start_with(Faults {
        busy_listings: 1,
        ..Faults::default()
    })
    .await;
    let busy = list(&sim, "").await;
    assert_eq!(
        busy,
        json!({"data": "Camera Busy", "errorCode": 200, "isSuccess": true})
    );
    assert_eq!(names(&list(&sim, "").await).len(), 5);

    sim.set_faults(|f| {
        f.string_error_codes = true;
        f.data_as_string = true;
    });
    let reply = list(&sim, "count=1").await;
    assert_eq!(reply["errorCode"], "200");
    let inner: Value =
        serde_json::from_str(reply["data"].as_str().expect("data string")).expect("inner json");
    assert_eq!(inner[0]["name"], "20240302_080000_04_2.ts");

    sim.set_faults(|f| f.listing_override = Some("<html>oops</html>".into()));
    let url = format!("{}/device/get_video_files_info", sim.url());
    let raw = client().post(url).send().await.expect("send");
    assert_eq!(raw.text().await.expect("text"), "<html>oops</html>");
    sim.shutdown().await;
}

#[tokio::test]
async fn ranges_and_no_range() {
    let (dir, sim) = start_with(Faults::default()).await;
    let content: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let path = sim::write_clip(dir.path(), "20240305_120000_00_1.mp4", &content).expect("clip");
    let url = format!("{}{path}", sim.url());

    let full = client().get(&url).send().await.expect("get");
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    assert_eq!(full.headers()["content-length"], "100000");
    assert_eq!(full.bytes().await.expect("body").as_ref(), &content[..]);

    let part = client()
        .get(&url)
        .header("Range", "bytes=60000-")
        .send()
        .await
        .expect("get");
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 60000-99999/100000");
    assert_eq!(
        part.bytes().await.expect("body").as_ref(),
        &content[60000..]
    );

    let mid = client()
        .get(&url)
        .header("Range", "bytes=10-19")
        .send()
        .await
        .expect("get");
    assert_eq!(mid.status(), 206);
    assert_eq!(mid.headers()["content-range"], "bytes 10-19/100000");
    assert_eq!(mid.bytes().await.expect("body").as_ref(), &content[10..20]);

    let past = client()
        .get(&url)
        .header("Range", "bytes=100000-")
        .send()
        .await
        .expect("get");
    assert_eq!(past.status(), 416);

    sim.set_faults(|f| f.no_range = true);
    let ignored = client()
        .get(&url)
        .header("Range", "bytes=60000-")
        .send()
        .await
        .expect("get");
    assert_eq!(ignored.status(), 200);
    assert!(ignored.headers().get("content-range").is_none());
    assert_eq!(ignored.bytes().await.expect("body").len(), 100_000);

    let missing = client()
        .get(format!("{}{VIDEO_ROOT}/20240305/12/nope.mp4", sim.url()))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    let escape = client()
        .get(format!("{}{VIDEO_ROOT}/..%2F..%2Fetc/passwd", sim.url()))
        .send()
        .await
        .expect("get");
    assert!(escape.status().is_client_error());

    let records = sim.requests();
    let r = records
        .iter()
        .find(|r| r.range.as_deref() == Some("bytes=10-19"))
        .expect("record");
    assert_eq!((r.status, r.body_bytes), (206, 10));
    assert_eq!(r.client_id.as_deref(), Some("test-client"));
    // A closed range served as such is a spot check, counted apart from downloads.
    assert_eq!(sim.bytes_served(), 100_000 + 40_000 + 100_000);
    assert_eq!(sim.spot_bytes_served(), 10);
    sim.shutdown().await;
}

#[tokio::test]
async fn drop_after_bytes_truncates_then_recovers() {
    let (dir, sim) = start_with(Faults {
        drop_after_bytes: Some(300_000),
        drop_downloads: 1,
        ..Faults::default()
    })
    .await;
    let content = vec![7u8; 1_000_000];
    let path = sim::write_clip(dir.path(), "20240305_120000_00_1.mp4", &content).expect("clip");
    let url = format!("{}{path}", sim.url());

    let mut resp = client().get(&url).send().await.expect("get");
    assert_eq!(resp.headers()["content-length"], "1000000");
    let mut got = 0usize;
    let err = loop {
        match resp.chunk().await {
            Ok(Some(c)) => got += c.len(),
            Ok(None) => panic!("body completed ({got} bytes) despite the fault"),
            Err(e) => break e,
        }
    };
    // The simulator sent exactly 300 000 bytes; the client may miss some of the tail if the
    // cut comes before they were flushed (a loaded machine), never get more.
    let sent = sim
        .requests()
        .last()
        .expect("the download's record")
        .body_bytes;
    assert_eq!(sent, 300_000, "{err}");
    assert!(got > 0 && got <= 300_000, "got {got}: {err}");

    // Resume from where it broke; the fault is spent.
    let rest = client()
        .get(&url)
        .header("Range", format!("bytes={got}-"))
        .send()
        .await
        .expect("get");
    assert_eq!(rest.status(), 206);
    assert_eq!(rest.bytes().await.expect("body").len(), 1_000_000 - got);
    assert_eq!(sim.faults().drop_after_bytes, None);
    sim.shutdown().await;
}

#[tokio::test]
async fn delete_removes_records_and_calls_hook() {
    let (dir, sim) = start_with(Faults::default()).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hook_seen = seen.clone();
    let root = dir.path().to_path_buf();
    sim.set_on_delete(move |path| {
        // The file still exists when the hook runs.
        let rel = path.strip_prefix(VIDEO_ROOT).expect("root");
        let exists = root.join(rel.trim_start_matches('/')).exists();
        hook_seen
            .lock()
            .expect("lock")
            .push((path.to_string(), exists));
    });
    let victim = format!("{VIDEO_ROOT}/20240301/10/20240301_100000_00_1.mp4");
    let url = format!("{}/device/delete_file", sim.url());
    let reply: Value = client()
        .post(&url)
        .json(&json!([{"path": victim}]))
        .send()
        .await
        .expect("delete")
        .json()
        .await
        .expect("json");
    assert_eq!(
        reply,
        json!({"data": "success", "errorCode": 200, "isSuccess": true})
    );
    assert_eq!(sim.deletes(), std::slice::from_ref(&victim));
    assert_eq!(*seen.lock().expect("lock"), [(victim.clone(), true)]);
    assert!(
        !dir.path()
            .join("20240301/10/20240301_100000_00_1.mp4")
            .exists()
    );
    assert_eq!(names(&list(&sim, "").await).len(), 4);

    // Paths outside the video root are refused, nothing is deleted.
    let refused: Value = client()
        .post(&url)
        .json(&json!([{"path": "/etc/passwd"}]))
        .send()
        .await
        .expect("delete")
        .json()
        .await
        .expect("json");
    assert_eq!(refused["isSuccess"], false);
    assert_eq!(sim.deletes().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn device_info_is_doubly_encoded() {
    let (_dir, sim) = start_with(Faults::default()).await;
    sim.set_imei("860000000000001");
    let reply: Value = client()
        .get(format!("{}/device/get_device_info", sim.url()))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(reply["errorCode"], 200);
    let doc: Value =
        serde_json::from_str(reply["data"].as_str().expect("data is a string")).expect("doc");
    assert_eq!(doc["imei"], "860000000000001");
    assert_eq!(doc["device_name"], "CV200");
    assert_eq!(doc["password"], "12345678");
    assert_eq!(doc["sd_card_size"], "59.463GB");
    let preview: Value = serde_json::from_str(
        doc["cameraPreviewState"]
            .as_str()
            .expect("preview is a string"),
    )
    .expect("preview");
    assert_eq!(preview["isLving"], false);
    assert_eq!(preview["previewCameraId"], -1);
    sim.shutdown().await;
}

#[tokio::test]
async fn client_id_reachability_and_misc_endpoints() {
    let (_dir, sim) = start_with(Faults {
        require_client_id: true,
        ..Faults::default()
    })
    .await;
    let url = format!("{}/device/get_device_info", sim.url());
    let anonymous = reqwest::get(&url).await.expect("get");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(client().get(&url).send().await.expect("get").status(), 200);

    let thumb = client()
        .get(format!("{}/device/get_video_thumbnail_info", sim.url()))
        .query(&[(
            "path",
            format!("{VIDEO_ROOT}/20240301/10/20240301_100000_00_1.mp4"),
        )])
        .send()
        .await
        .expect("thumb");
    assert_eq!(thumb.headers()["content-type"], "image/jpeg");
    assert_eq!(&thumb.bytes().await.expect("body")[..2], &[0xFF, 0xD8]);

    let cal: Value = client()
        .post(format!(
            "{}/device/driver_assistance_calibration",
            sim.url()
        ))
        .form(&[
            ("type", "2"),
            ("calibration", "1"),
            ("adasExtrinsicParams", "9|8|7|6|5|4|3"),
        ])
        .send()
        .await
        .expect("cal")
        .json()
        .await
        .expect("json");
    assert_eq!(cal["data"], r#"{"calibration":1,"type":"2"}"#);
    let params: Value = client()
        .get(format!(
            "{}/device/get_driver_assistance_calibration_params?params=0",
            sim.url()
        ))
        .send()
        .await
        .expect("params")
        .json()
        .await
        .expect("json");
    assert_eq!(params["data"], "9|8|7|6|5|4|3");

    let rtmp: Value = client()
        .post(format!("{}/device/update_rtmp_state", sim.url()))
        .form(&[
            ("rtmpUrl", "rtmp://x/y"),
            ("cameraId", "1"),
            ("start", "true"),
        ])
        .send()
        .await
        .expect("rtmp")
        .json()
        .await
        .expect("json");
    assert_eq!(rtmp["data"], "success");
    assert_eq!(sim.rtmp_state(), (true, "rtmp://x/y".into(), "1".into()));

    sim.set_reachable(false);
    let fresh = client();
    assert!(fresh.get(&url).send().await.is_err());
    sim.set_reachable(true);
    assert_eq!(fresh.get(&url).send().await.expect("back").status(), 200);
    sim.shutdown().await;
}

#[test]
fn generated_clips_are_deterministic() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let first = sim::generate_clips(a.path(), 20, 4096, 42).expect("generate");
    let second = sim::generate_clips(b.path(), 20, 4096, 42).expect("generate");
    assert_eq!(first.len(), 20);
    for (x, y) in first.iter().zip(&second) {
        assert_eq!(x.strip_prefix(a.path()).ok(), y.strip_prefix(b.path()).ok());
        assert_eq!(
            std::fs::read(x).expect("read"),
            std::fs::read(y).expect("read")
        );
    }
    let loops = first
        .iter()
        .filter(|p| p.to_string_lossy().contains("_00_"))
        .count();
    assert!((5..=18).contains(&loops), "{loops} loop recordings");
    // Re-running keeps what is there.
    assert_eq!(
        sim::generate_clips(a.path(), 20, 4096, 42).expect("again"),
        first
    );
}

#[tokio::test]
async fn growing_shifting_slow_overridden_and_format() {
    let (_dir, sim) = start_with(Faults {
        growing: Some(("20240302_080000_04_2.ts".into(), 2)),
        ..Faults::default()
    })
    .await;
    let size = |reply: &Value| reply["data"][0]["size"].as_u64().expect("size");
    let s1 = size(&list(&sim, "count=1").await);
    let s2 = size(&list(&sim, "count=1").await);
    let s3 = size(&list(&sim, "count=1").await);
    assert!(s1 < s2 && s2 == s3, "{s1} {s2} {s3}");

    sim.set_faults(|f| f.new_clip_between_pages = true);
    let first = names(&list(&sim, "count=2&offset=0").await);
    let second = names(&list(&sim, "count=2&offset=2").await);
    assert_eq!(first[0], "20240302_080000_04_2.ts");
    // The page boundary shifted by the clip that appeared.
    assert_eq!(second[0], first[1]);
    assert_eq!(names(&list(&sim, "count=1&offset=1").await)[0], first[0]);

    sim.set_faults(|f| {
        f.new_clip_between_pages = false;
        f.bandwidth_bytes_per_sec = Some(20_000);
    });
    let url = format!(
        "{}{VIDEO_ROOT}/20240301/10/20240301_100000_00_1.mp4",
        sim.url()
    );
    let started = std::time::Instant::now();
    let body = client()
        .get(&url)
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(body.len(), 1000);
    assert!(started.elapsed() >= std::time::Duration::from_millis(40));

    sim.set_faults(|f| f.download_override = Some((503, b"<html>busy</html>".to_vec())));
    let html = client().get(&url).send().await.expect("get");
    assert_eq!(html.status(), 503);
    assert_eq!(html.text().await.expect("text"), "<html>busy</html>");

    let formatted: Value = client()
        .get(format!("{}/device/format_sdcard", sim.url()))
        .send()
        .await
        .expect("format")
        .json()
        .await
        .expect("json");
    assert_eq!(formatted["data"], "Format Success");
    assert!(names(&list(&sim, "").await).is_empty());
    sim.shutdown().await;
}
