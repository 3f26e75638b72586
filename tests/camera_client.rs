//! `CameraClient` and `download::fetch` against the camera simulator over real HTTP on
//! 127.0.0.1: every endpoint of the vendor document, then every quirk and fault.

mod common;

use std::time::{Duration, Instant};

use common::sim::{
    FIXTURE, FIXTURE_NEWEST_FIRST, RawServer, SIM_IMEI, SIM_PASSWORD, TestSim, content, sha256_hex,
    start_fixture, start_one, write_test_clip,
};
use qucam::{
    AdasExtrinsics, CalibrationKind, CalibrationState, CameraClient, CameraError, CameraId,
    ClientOptions, FormatOutcome, ListQuery, ParamStyle,
};
use qucam_offload::download::{self, DownloadError};
use qucam_sim::{Faults, VIDEO_ROOT};

const CLIENT_ID: &str = "camera-client-test";
const LIST: &str = "/device/get_video_files_info";

fn opts() -> ClientOptions {
    ClientOptions::new(CLIENT_ID)
}

fn client(t: &TestSim) -> CameraClient {
    CameraClient::new(&t.url(), opts()).expect("client")
}

fn client_with(url: &str, f: impl FnOnce(&mut ClientOptions)) -> CameraClient {
    let mut o = opts();
    f(&mut o);
    CameraClient::new(url, o).expect("client")
}

fn names(entries: &[qucam::FileEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.name.as_str()).collect()
}

async fn read_all(dl: &mut qucam::Download) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(c) = dl.chunk().await.expect("chunk") {
        out.extend_from_slice(&c);
    }
    out
}

fn no_progress(_: u64, _: Option<u64>) {}

// ---------------------------------------------------------------------------------------------
// 3.1 listing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_all_is_newest_first_with_sizes_paths_and_dates() {
    let t = start_fixture(Faults::default()).await;
    let files = client(&t).list_files(&ListQuery::default()).await.unwrap();
    assert_eq!(names(&files), FIXTURE_NEWEST_FIRST);
    for f in &files {
        let clip = t.clip(&f.name);
        assert_eq!(f.path, clip.camera_path);
        assert!(f.path.starts_with(VIDEO_ROOT), "{}", f.path);
        assert_eq!(f.size, Some(clip.size() as i64), "{}", f.name);
        assert_eq!(f.duration_ms, Some(60_000));
        assert!(!f.is_directory);
    }
    // 20240302_090000 as ms since the epoch.
    assert_eq!(files[0].date_ms, Some(1_709_370_000_000));
    // Every request carried the clientId header.
    let reqs = t.sim.requests();
    assert!(!reqs.is_empty());
    assert!(
        reqs.iter()
            .all(|r| r.client_id.as_deref() == Some(CLIENT_ID))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_time_window_event_and_camera() {
    let t = start_fixture(Faults::default()).await;
    let c = client(&t);

    let window = ListQuery {
        time_window: "20240301000000:20240301235959".into(),
        ..Default::default()
    };
    assert_eq!(
        names(&c.list_files(&window).await.unwrap()),
        [
            "20240301_100100_0A_1.mp4",
            "20240301_100000_00_2.mp4",
            "20240301_100000_00_1.mp4"
        ]
    );

    let events = ListQuery {
        event_types: vec!["_04_".into(), "_0A_".into()],
        ..Default::default()
    };
    assert_eq!(
        names(&c.list_files(&events).await.unwrap()),
        [
            "20240302_090000_04_1.mp4",
            "20240302_080000_04_2.ts",
            "20240301_100100_0A_1.mp4"
        ]
    );

    let front = ListQuery {
        camera_type: "_1.".into(),
        ..Default::default()
    };
    let got = c.list_files(&front).await.unwrap();
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|f| f.name.ends_with("_1.mp4")), "{got:?}");

    let interior = ListQuery {
        camera_type: "_2.".into(),
        ..Default::default()
    };
    assert_eq!(
        names(&c.list_files(&interior).await.unwrap()),
        ["20240302_080000_04_2.ts", "20240301_100000_00_2.mp4"]
    );

    let both = ListQuery {
        camera_type: "1^2".into(),
        ..Default::default()
    };
    assert_eq!(c.list_files(&both).await.unwrap().len(), FIXTURE.len());

    // All three at once.
    let combined = ListQuery {
        time_window: "20240302000000:20240302235959".into(),
        event_types: vec!["_04_".into()],
        camera_type: "_2.".into(),
        ..Default::default()
    };
    assert_eq!(
        names(&c.list_files(&combined).await.unwrap()),
        ["20240302_080000_04_2.ts"]
    );

    // A window with nothing in it is an empty list, not an error.
    let empty = ListQuery {
        time_window: "20200101000000:20200102000000".into(),
        ..Default::default()
    };
    assert!(c.list_files(&empty).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_with_count_and_offset() {
    let t = start_fixture(Faults::default()).await;
    let c = client(&t);
    let mut all = Vec::new();
    for offset in (0..FIXTURE.len() as u32).step_by(4) {
        let page = c
            .list_files(&ListQuery {
                count: Some(4),
                offset: Some(offset),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.len() <= 4);
        all.extend(page);
    }
    assert_eq!(names(&all), FIXTURE_NEWEST_FIRST);

    let one = c
        .list_files(&ListQuery {
            count: Some(1),
            offset: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(names(&one), [FIXTURE_NEWEST_FIRST[2]]);

    let past_end = c
        .list_files(&ListQuery {
            count: Some(10),
            offset: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(past_end.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_works_with_every_param_style() {
    let t = start_fixture(Faults::default()).await;
    // A filtered query: if the parameters were lost, the whole list would come back.
    let q = ListQuery {
        event_types: vec!["_04_".into()],
        camera_type: "_1.".into(),
        count: Some(5),
        offset: Some(0),
        ..Default::default()
    };
    for style in [ParamStyle::Form, ParamStyle::Query, ParamStyle::Json] {
        let c = client_with(&t.url(), |o| o.params = style);
        let got = c.list_files(&q).await.unwrap();
        assert_eq!(names(&got), ["20240302_090000_04_1.mp4"], "{style}");
        let last = t.api_requests(LIST).pop().expect("a listing request");
        assert_eq!(last.method, "POST", "{style}");
        match style {
            ParamStyle::Query => {
                let query = last.query.expect("query string");
                assert!(query.contains("event_type=_04_"), "{query}");
                assert!(query.contains("camera_type=_1."), "{query}");
            }
            // Form and JSON send the parameters in the body.
            ParamStyle::Form | ParamStyle::Json => assert_eq!(last.query, None, "{style}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3.2 delete

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_a_batch() {
    let t = start_fixture(Faults::default()).await;
    let c = client(&t);
    let a = t.clip("20240301_100000_00_1.mp4");
    let b = t.clip("20240302_080000_04_2.ts");
    c.delete_files(&[a.camera_path.clone(), b.camera_path.clone()])
        .await
        .unwrap();
    assert_eq!(
        t.sim.deletes(),
        [a.camera_path.clone(), b.camera_path.clone()]
    );
    assert!(!a.file.exists() && !b.file.exists());
    let left = c.list_files(&ListQuery::default()).await.unwrap();
    assert_eq!(left.len(), FIXTURE.len() - 2);
    assert!(!names(&left).contains(&a.name.as_str()));
    assert!(!names(&left).contains(&b.name.as_str()));
    // An empty batch is fine and deletes nothing more.
    c.delete_files(&[]).await.unwrap();
    assert_eq!(t.sim.deletes().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// 3.3 device info

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_info_decodes_nested_json_and_hides_the_password() {
    let t = start_fixture(Faults::default()).await;
    let c = client(&t);
    let info = c.device_info().await.unwrap();
    assert_eq!(info.imei, SIM_IMEI);
    assert_eq!(info.device_name.as_deref(), Some("CV200"));
    assert_eq!(info.application_version.as_deref(), Some("V06"));
    assert_eq!(info.sd_card_format.as_deref(), Some("FAT32"));
    assert_eq!(info.sd_card_size.as_deref(), Some("59.463GB"));
    assert_eq!(info.ssid.as_deref(), Some("queclinkgh"));
    assert_eq!(info.serial_number, None, "s_n is null");
    assert_eq!(info.password.expose(), SIM_PASSWORD);
    // The nested cameraPreviewState (a JSON string inside the JSON string).
    let p = info.preview.clone().expect("preview state");
    assert_eq!(p.is_living, Some(false));
    assert_eq!(p.need_update_url, Some(true));
    assert_eq!(p.preview_camera_id, Some(-1));
    assert_eq!(p.rtmp_url.as_deref(), Some(""));

    let debug = format!("{info:?}");
    let json = serde_json::to_string(&info).unwrap();
    assert!(!debug.contains(SIM_PASSWORD), "{debug}");
    assert!(!json.contains(SIM_PASSWORD), "{json}");
    assert!(debug.contains(SIM_IMEI), "Debug shows the rest: {debug}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["password"], "********");
    assert_eq!(v["imei"], SIM_IMEI);

    // The preview state follows an RTMP push.
    c.rtmp_start("rtmp://127.0.0.1/live/x", CameraId::Interior)
        .await
        .unwrap();
    let p = c.device_info().await.unwrap().preview.expect("preview");
    assert_eq!(p.is_living, Some(true));
    assert_eq!(p.need_update_url, Some(false));
    assert_eq!(p.preview_camera_id, Some(1));
    assert_eq!(p.rtmp_url.as_deref(), Some("rtmp://127.0.0.1/live/x"));
}

// ---------------------------------------------------------------------------------------------
// 3.4 format

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_sd_erases_every_clip() {
    let t = start_fixture(Faults::default()).await;
    let c = client(&t);
    assert_eq!(t.clips_on_disk().len(), FIXTURE.len());
    assert_eq!(c.format_sd().await.unwrap(), FormatOutcome::Formatted);
    assert!(t.clips_on_disk().is_empty(), "{:?}", t.clips_on_disk());
    assert!(
        c.list_files(&ListQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// 3.5 thumbnail

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnail_is_a_jpeg_for_the_named_clip() {
    let t = start_fixture(Faults::default()).await;
    let c = client(&t);
    let clip = t.clip("20240301_100100_0A_1.mp4");
    let img = c.thumbnail(&clip.camera_path).await.unwrap();
    assert_eq!(&img[..2], &[0xFF, 0xD8], "JPEG SOI");
    assert_eq!(&img[img.len() - 2..], &[0xFF, 0xD9], "JPEG EOI");
    let req = t
        .api_requests("/device/get_video_thumbnail_info")
        .pop()
        .unwrap();
    assert_eq!(req.method, "GET");
    assert!(req.query.unwrap().contains("path="));

    // A clip that is not there: the camera's 404 is an HTTP error, not an image.
    let missing = format!("{VIDEO_ROOT}/20200101/00/20200101_000000_00_1.mp4");
    match c.thumbnail(&missing).await {
        Err(CameraError::Http { status: 404, .. }) => {}
        other => panic!("expected HTTP 404, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 3.6 download

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_from_zero_and_from_an_offset() {
    let t = start_fixture(Faults::default()).await;
    let c = client(&t);
    let clip = t.clip("20240302_080000_04_2.ts");

    let mut dl = c.download(&clip.camera_path, 0).await.unwrap();
    assert!(!dl.resumed);
    assert_eq!(dl.start, 0);
    assert_eq!(dl.total, Some(clip.size()));
    assert_eq!(read_all(&mut dl).await, clip.content);
    let first = t.download_requests().pop().unwrap();
    assert_eq!(first.range, None, "no Range from byte 0");
    assert_eq!(first.status, 200);

    let offset = 12_345;
    let mut dl = c.download(&clip.camera_path, offset).await.unwrap();
    assert!(dl.resumed, "206 from the offset asked");
    assert_eq!(dl.start, offset);
    assert_eq!(dl.total, Some(clip.size()));
    assert_eq!(read_all(&mut dl).await, &clip.content[offset as usize..]);
    let second = t.download_requests().pop().unwrap();
    assert_eq!(second.range.as_deref(), Some("bytes=12345-"));
    assert_eq!(second.status, 206);
    assert_eq!(second.body_bytes, clip.size() - offset);

    // Past the end: the camera's 416 is reported as a range not honoured.
    match c.download(&clip.camera_path, clip.size()).await {
        Err(e @ CameraError::RangeNotHonoured { .. }) => assert!(e.is_transient()),
        Err(other) => panic!("expected RangeNotHonoured, got {other:?}"),
        Ok(_) => panic!("expected RangeNotHonoured, got a download"),
    }

    // A clip that does not exist.
    let missing = format!("{VIDEO_ROOT}/20200101/00/20200101_000000_00_1.mp4");
    match c.download(&missing, 0).await {
        Err(CameraError::Http { status: 404, .. }) => {}
        Err(other) => panic!("expected HTTP 404, got {other:?}"),
        Ok(_) => panic!("expected HTTP 404, got a download"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_writes_the_file_and_resumes_a_partial_one() {
    let t = start_fixture(Faults::default()).await;
    let c = client(&t);
    let clip = t.clip("20240229_235959_00_1.mp4");
    let out = t.dir.path().join("out.mp4");

    let done = download::fetch(&c, &clip.camera_path, &out, Some(clip.size()), &no_progress)
        .await
        .unwrap();
    assert_eq!(done.size, clip.size());
    assert_eq!(done.sha256_hex, clip.sha256_hex());
    assert_eq!(done.received, clip.size());
    assert_eq!((done.resumed_from, done.restarted), (0, false));
    assert_eq!(std::fs::read(&out).unwrap(), clip.content);

    // Half the file already there: only the rest is asked for.
    let half = clip.content.len() / 2;
    std::fs::write(&out, &clip.content[..half]).unwrap();
    let done = download::fetch(&c, &clip.camera_path, &out, Some(clip.size()), &no_progress)
        .await
        .unwrap();
    assert_eq!(done.resumed_from, half as u64);
    assert_eq!(done.received, clip.size() - half as u64);
    assert_eq!(
        done.sha256_hex,
        clip.sha256_hex(),
        "hash covers the prefix on disk"
    );
    assert_eq!(std::fs::read(&out).unwrap(), clip.content);
    let last = t.download_requests().pop().unwrap();
    assert_eq!(last.range, Some(format!("bytes={half}-")));

    // Already complete: nothing is downloaded.
    let before = t.download_requests().len();
    let done = download::fetch(&c, &clip.camera_path, &out, Some(clip.size()), &no_progress)
        .await
        .unwrap();
    assert_eq!(done.received, 0);
    assert_eq!(done.sha256_hex, clip.sha256_hex());
    assert_eq!(t.download_requests().len(), before);

    // The listing's size disagrees with the camera's: refused before writing anything.
    let fresh = t.dir.path().join("fresh.mp4");
    match download::fetch(
        &c,
        &clip.camera_path,
        &fresh,
        Some(clip.size() + 1),
        &no_progress,
    )
    .await
    {
        Err(DownloadError::SizeMismatch { listed, actual }) => {
            assert_eq!((listed, actual), (clip.size() + 1, clip.size()));
        }
        other => panic!("expected SizeMismatch, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_stops_while_streaming_when_free_space_falls_under_the_floor_and_resumes() {
    const MIB: u64 = 1024 * 1024;
    let size = 12 * MIB;
    let t = start_one("20240301_080000_04_1.mp4", size as usize, Faults::default()).await;
    let c = client(&t);
    let clip = t.clip("20240301_080000_04_1.mp4");
    let out = t.dir.path().join("floor.mp4");
    // A disk with 10 MiB free before the download, each byte written taking one: the 5 MiB
    // floor is crossed about half way through the clip.
    let free = |_: &std::path::Path| -> std::io::Result<u64> {
        let written = std::fs::metadata(&out).map_or(0, |m| m.len());
        Ok((10 * MIB).saturating_sub(written))
    };
    let floor = download::SpaceFloor {
        dir: t.dir.path(),
        min_free: 5 * MIB,
        free: &free,
    };
    let unchecked = || -> futures_util::future::BoxFuture<'_, Result<(), DownloadError>> {
        Box::pin(async { Ok(()) })
    };
    let err = download::fetch_checked(
        &c,
        &clip.camera_path,
        &out,
        Some(size),
        &no_progress,
        &unchecked,
        Some(&floor),
    )
    .await
    .expect_err("the floor stops the download");
    match &err {
        DownloadError::Io { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{err}");
            assert!(err.to_string().contains("spool.min_free_bytes"), "{err}");
        }
        other => panic!("expected a disk-full I/O error, got {other:?}"),
    }
    // It stopped within a check interval of the floor, and what it wrote stays to resume.
    let kept = std::fs::metadata(&out).unwrap().len();
    assert!(
        (5 * MIB..5 * MIB + download::FLOOR_CHECK_EVERY + MIB).contains(&kept),
        "{kept} bytes kept"
    );
    // Space returns: the download resumes from what it kept and completes.
    let done = download::fetch(&c, &clip.camera_path, &out, Some(size), &no_progress)
        .await
        .unwrap();
    assert_eq!(done.resumed_from, kept);
    assert_eq!(done.sha256_hex, clip.sha256_hex());
}

// ---------------------------------------------------------------------------------------------
// 3.8 RTMP

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_start_and_stop() {
    let t = start_fixture(Faults::default()).await;
    let c = client(&t);
    assert_eq!(t.sim.rtmp_state(), (false, String::new(), String::new()));

    c.rtmp_start("rtmp://127.0.0.1:1935/live/front", CameraId::Front)
        .await
        .unwrap();
    assert_eq!(
        t.sim.rtmp_state(),
        (true, "rtmp://127.0.0.1:1935/live/front".into(), "0".into())
    );

    c.rtmp_start("rtmp://127.0.0.1:1935/live/cab", CameraId::Interior)
        .await
        .unwrap();
    assert_eq!(
        t.sim.rtmp_state(),
        (true, "rtmp://127.0.0.1:1935/live/cab".into(), "1".into())
    );

    c.rtmp_stop().await.unwrap();
    assert!(!t.sim.rtmp_state().0, "{:?}", t.sim.rtmp_state());
}

// ---------------------------------------------------------------------------------------------
// 3.9 / 3.10 calibration

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibration_dms_and_adas_with_seven_values() {
    let t = start_fixture(Faults::default()).await;
    let c = client(&t);
    let cal = t.sim.calibration();
    assert_eq!((cal.dms, cal.adas), (None, None));

    let s = c.calibrate(CalibrationKind::Dms, true, None).await.unwrap();
    assert_eq!(s, CalibrationState::Successful);
    assert_eq!(t.sim.calibration().dms, Some(1));

    let s = c
        .calibrate(CalibrationKind::Dms, false, None)
        .await
        .unwrap();
    assert_eq!(s, CalibrationState::Failed);
    assert_eq!(t.sim.calibration().dms, Some(0));
    assert_eq!(t.sim.calibration().adas, None, "DMS does not touch ADAS");

    let x = AdasExtrinsics::from_wire("240|-3|180|135|95|110|70").unwrap();
    let s = c
        .calibrate(CalibrationKind::Adas, true, Some(&x))
        .await
        .unwrap();
    assert_eq!(s, CalibrationState::Successful);
    let cal = t.sim.calibration();
    assert_eq!(cal.adas, Some(1));
    assert_eq!(cal.adas_params, "240|-3|180|135|95|110|70");

    // 3.10 reads back what was recorded, in the vendor's order.
    let back = c.calibration_params().await.unwrap();
    assert_eq!(back, x);
    assert_eq!(back.horizon, 240.0);
    assert_eq!(back.car_middle, -3.0);
    assert_eq!(back.camera_to_left_wheel, 70.0);

    // ADAS without the values is refused before any request.
    let before = t.sim.requests().len();
    assert!(
        c.calibrate(CalibrationKind::Adas, true, None)
            .await
            .is_err()
    );
    assert_eq!(t.sim.requests().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibration_params_default_to_the_documented_example() {
    let t = start_fixture(Faults::default()).await;
    let x = client(&t).calibration_params().await.unwrap();
    assert_eq!(x.to_wire(), "1|2|3|4|5|6|7");
    assert_eq!(x.horizon, 1.0);
    assert_eq!(x.camera_to_left_wheel, 7.0);
    let req = t
        .api_requests("/device/get_driver_assistance_calibration_params")
        .pop()
        .unwrap();
    assert_eq!(req.method, "GET");
    assert_eq!(req.query.as_deref(), Some("params=0"));
}

// ---------------------------------------------------------------------------------------------
// Quirks of the reply format

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_listings_are_busy_then_clear() {
    let t = start_fixture(Faults {
        busy_listings: 2,
        ..Faults::default()
    })
    .await;
    let c = client(&t);
    for _ in 0..2 {
        match c.list_files(&ListQuery::default()).await {
            Err(e @ CameraError::Busy) => assert!(e.is_transient()),
            other => panic!("expected Busy, got {other:?}"),
        }
    }
    assert_eq!(
        c.list_files(&ListQuery::default()).await.unwrap().len(),
        FIXTURE.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_error_codes_and_data_as_a_string_decode_the_same() {
    let t = start_fixture(Faults {
        string_error_codes: true,
        data_as_string: true,
        ..Faults::default()
    })
    .await;
    let c = client(&t);
    // Check the simulator really sends both quirks.
    let raw: serde_json::Value = reqwest::Client::new()
        .post(format!("{}{LIST}", t.url()))
        .header("clientId", "raw")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw["errorCode"], "200");
    assert!(raw["data"].is_string(), "{raw}");

    let files = c.list_files(&ListQuery::default()).await.unwrap();
    assert_eq!(names(&files), FIXTURE_NEWEST_FIRST);
    assert!(files.iter().all(|f| f.size.is_some()));
    // Every other endpoint copes with string codes too.
    assert_eq!(c.device_info().await.unwrap().imei, SIM_IMEI);
    c.rtmp_stop().await.unwrap();
    assert_eq!(
        c.calibration_params().await.unwrap().to_wire(),
        "1|2|3|4|5|6|7"
    );
    c.delete_files(&[files[0].path.clone()]).await.unwrap();
    assert_eq!(t.sim.deletes(), [files[0].path.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_failure_shape_is_an_api_error() {
    let t = start_fixture(Faults {
        listing_override: Some(r#"{"data":"[]","errorCode":"errorCode","isSuccess":false}"#.into()),
        ..Faults::default()
    })
    .await;
    match client(&t).list_files(&ListQuery::default()).await {
        Err(e @ CameraError::Api { .. }) => {
            assert!(!e.is_transient());
            let CameraError::Api { code, code_raw, .. } = e else {
                unreachable!()
            };
            assert_eq!(code, None);
            assert_eq!(code_raw, "errorCode");
        }
        other => panic!("expected Api, got {other:?}"),
    }
    // A numeric failure code is kept as a number.
    t.sim.set_faults(|f| {
        f.listing_override = Some(r#"{"data":"no card","errorCode":500,"isSuccess":false}"#.into())
    });
    match client(&t).list_files(&ListQuery::default()).await {
        Err(CameraError::Api {
            code: Some(500),
            message,
            ..
        }) => assert_eq!(message, "no card"),
        other => panic!("expected Api 500, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_replies_are_malformed_with_an_excerpt() {
    let t = start_fixture(Faults {
        listing_override: Some("<html><body>502 Bad Gateway</body></html>".into()),
        device_info_override: Some("<html><title>Login</title></html>".into()),
        ..Faults::default()
    })
    .await;
    let c = client(&t);
    match c.list_files(&ListQuery::default()).await {
        Err(CameraError::Malformed { excerpt, .. }) => {
            assert!(excerpt.contains("502 Bad Gateway"), "{excerpt}")
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    match c.device_info().await {
        Err(e @ CameraError::Malformed { .. }) => {
            assert!(e.to_string().contains("Login"), "{e}");
            assert!(!e.is_transient());
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    // JSON of the wrong shape is malformed too.
    t.sim.set_faults(|f| {
        f.listing_override = Some(r#"{"data":"hello","errorCode":200,"isSuccess":true}"#.into())
    });
    assert!(matches!(
        c.list_files(&ListQuery::default()).await,
        Err(CameraError::Malformed { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_replies_are_malformed_with_an_excerpt() {
    // The simulator's overrides are strings, so a raw server on 127.0.0.1 sends the bytes.
    let body: &[u8] = b"OK \xff\xfe\xfd garbage";
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    resp.extend_from_slice(body);
    let raw = RawServer::start(resp);
    let c = client_with(&raw.url(), |_| {});
    match c.device_info().await {
        Err(CameraError::Malformed { what, excerpt }) => {
            assert!(what.contains("UTF-8"), "{what}");
            assert!(excerpt.starts_with("OK "), "{excerpt:?}");
            assert!(excerpt.contains("garbage"), "{excerpt:?}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    let seen = raw.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].line, "GET /device/get_device_info HTTP/1.1");
    assert_eq!(seen[0].header("clientId"), Some(CLIENT_ID));
}

// ---------------------------------------------------------------------------------------------
// Download faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_range_means_not_resumed_from_zero() {
    let t = start_fixture(Faults {
        no_range: true,
        ..Faults::default()
    })
    .await;
    let c = client(&t);
    let clip = t.clip("20240301_100000_00_2.mp4");
    let mut dl = c.download(&clip.camera_path, 1000).await.unwrap();
    assert!(!dl.resumed);
    assert_eq!(dl.start, 0);
    assert_eq!(dl.total, Some(clip.size()));
    assert_eq!(read_all(&mut dl).await, clip.content, "the whole file");
    assert_eq!(
        t.download_requests().pop().unwrap().range.as_deref(),
        Some("bytes=1000-"),
        "the range was asked for"
    );

    // fetch over a partial file restarts from zero and still ends with the right bytes.
    let out = t.dir.path().join("partial.mp4");
    std::fs::write(&out, &clip.content[..1000]).unwrap();
    let done = download::fetch(&c, &clip.camera_path, &out, Some(clip.size()), &no_progress)
        .await
        .unwrap();
    assert!(done.restarted);
    assert_eq!(done.resumed_from, 0);
    assert_eq!(done.sha256_hex, clip.sha256_hex());
    assert_eq!(std::fs::read(&out).unwrap(), clip.content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_download_resumes_with_a_range_and_the_hash_matches() {
    let size = 300_000;
    let t = start_one("20240301_100000_04_1.mp4", size, Faults::default()).await;
    let clip = t.clips[0].clone();
    t.sim.set_faults(|f| {
        f.drop_after_bytes = Some(100_000);
        f.drop_downloads = 1;
    });
    let c = client(&t);
    let out = t.dir.path().join("dl.mp4");

    let err = download::fetch(&c, &clip.camera_path, &out, Some(clip.size()), &no_progress)
        .await
        .expect_err("the connection is cut");
    assert!(err.is_transient(), "{err:?}");
    let partial = std::fs::metadata(&out).unwrap().len();
    assert!(partial > 0 && partial <= 100_000, "partial {partial}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        &clip.content[..partial as usize]
    );

    let done = download::fetch(&c, &clip.camera_path, &out, Some(clip.size()), &no_progress)
        .await
        .unwrap();
    assert_eq!(done.resumed_from, partial);
    assert!(!done.restarted);
    assert_eq!(done.sha256_hex, clip.sha256_hex());
    // The block digests of a resumed download are those of the whole file read at once.
    assert_eq!(
        done.blocks,
        qucam_offload::blocks::hash_file(&out).unwrap().1
    );
    assert_eq!(
        qucam_offload::blocks::hash_file(&out).unwrap().0,
        sha256_hex(&clip.content)
    );

    let dls = t.download_requests();
    assert_eq!(dls.len(), 2);
    assert_eq!(dls[0].range, None);
    assert_eq!(dls[1].range, Some(format!("bytes={partial}-")));
    assert_eq!(dls[1].status, 206);
    let served = t.sim.bytes_served();
    assert!(
        (served as f64) < 1.5 * size as f64,
        "served {served} for a {size}-byte clip"
    );
    assert_eq!(dls[1].body_bytes, clip.size() - partial);
    assert_eq!(served, dls[0].body_bytes + dls[1].body_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_id_is_sent() {
    let t = start_fixture(Faults {
        require_client_id: true,
        ..Faults::default()
    })
    .await;
    // Without the header the simulator refuses: the fault is on.
    let status = reqwest::Client::new()
        .get(format!("{}/device/get_device_info", t.url()))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);

    let c = client_with(&t.url(), |o| o.client_id = "fleet-7".into());
    assert_eq!(c.device_info().await.unwrap().imei, SIM_IMEI);
    let files = c.list_files(&ListQuery::default()).await.unwrap();
    assert_eq!(files.len(), FIXTURE.len());
    let mut dl = c.download(&files[0].path, 0).await.unwrap();
    assert_eq!(read_all(&mut dl).await, t.clip(&files[0].name).content);
    c.thumbnail(&files[0].path).await.unwrap();

    let reqs = t.sim.requests();
    assert_eq!(reqs[0].client_id, None);
    assert_eq!(reqs[0].status, 401);
    assert_eq!(reqs.len(), 5);
    for r in &reqs[1..] {
        assert_eq!(r.client_id.as_deref(), Some("fleet-7"), "{r:?}");
        assert!(matches!(r.status, 200 | 206), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_camera_times_out_on_idle() {
    let t = start_one("20240301_100000_04_1.mp4", 200_000, Faults::default()).await;
    let clip = t.clips[0].clone();
    let c = client_with(&t.url(), |o| o.idle_timeout = Duration::from_millis(300));
    // Control: without the limit the same download completes.
    let mut dl = c.download(&clip.camera_path, 0).await.unwrap();
    assert_eq!(read_all(&mut dl).await, clip.content);

    // 100 B/s: the first 1 KiB chunk would take ~10 s.
    t.sim.set_faults(|f| f.bandwidth_bytes_per_sec = Some(100));
    let started = Instant::now();
    // The headers may or may not get through before the body stalls: a Timeout either way.
    let err = match c.download(&clip.camera_path, 0).await {
        Err(e) => e,
        Ok(mut dl) => loop {
            match dl.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the download finished despite the limit"),
                Err(e) => break e,
            }
        },
    };
    assert!(matches!(err, CameraError::Timeout(_)), "{err:?}");
    assert!(err.is_transient() && err.is_unreachable());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Through fetch: a transient camera timeout, nothing claimed done.
    let out = t.dir.path().join("slow.mp4");
    let started = Instant::now();
    match download::fetch(&c, &clip.camera_path, &out, Some(clip.size()), &no_progress).await {
        Err(e @ DownloadError::Camera(CameraError::Timeout(_))) => assert!(e.is_transient()),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_camera_fails_fast_and_recovers() {
    let t = start_fixture(Faults::default()).await;
    let c = client(&t);
    c.device_info().await.unwrap();

    t.sim.set_reachable(false);
    let started = Instant::now();
    for _ in 0..2 {
        match c.list_files(&ListQuery::default()).await {
            Err(e) => {
                assert!(
                    matches!(e, CameraError::Unreachable(_) | CameraError::Timeout(_)),
                    "{e:?}"
                );
                assert!(e.is_unreachable() && e.is_transient());
            }
            Ok(v) => panic!("listed {} clips from an unreachable camera", v.len()),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    t.sim.set_reachable(true);
    assert_eq!(
        c.list_files(&ListQuery::default()).await.unwrap().len(),
        FIXTURE.len()
    );

    // Nothing listening at all: connection refused. The port stays reserved meanwhile (a
    // released one could be given to another test's server).
    let (_closed, addr) = common::sim::refusing_addr();
    let gone = client_with(&format!("http://{addr}"), |_| {});
    let started = Instant::now();
    match gone.device_info().await {
        Err(CameraError::Unreachable(_) | CameraError::Timeout(_)) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbounded_reply_is_too_large() {
    // A "listing" of 4 MB.
    let entry = r#"{"name":"20240301_100000_00_1.mp4","path":"/x","size":1},"#;
    let mut big = String::from(r#"{"data":["#);
    while big.len() < 4 << 20 {
        big.push_str(entry);
    }
    big.push_str(r#"{}],"errorCode":200,"isSuccess":true}"#);
    let t = start_fixture(Faults {
        listing_override: Some(big),
        ..Faults::default()
    })
    .await;
    let c = client_with(&t.url(), |o| o.max_reply_bytes = 64 * 1024);
    match c.list_files(&ListQuery::default()).await {
        Err(e @ CameraError::TooLarge { limit, endpoint }) => {
            assert_eq!((endpoint, limit), ("get_video_files_info", 64 * 1024));
            assert!(e.to_string().contains("get_video_files_info"), "{e}");
        }
        other => panic!("expected TooLarge, got {:?}", other.map(|v| v.len())),
    }
    // Control: with the default limit the same reply decodes.
    let ok = client(&t).list_files(&ListQuery::default()).await.unwrap();
    assert!(ok.len() > 60_000, "{}", ok.len());
}

/// A raw download reply without any length: the body ends when the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_info_reply_over_64_kib_is_too_large_naming_the_endpoint() {
    // Well-formed, but a real camera's device info is a few hundred bytes: this one carries
    // a device name of 1 MiB.
    let info = |name: &str| {
        serde_json::json!({
            "data": serde_json::json!({"imei": SIM_IMEI, "device_name": name}).to_string(),
            "errorCode": 200,
            "isSuccess": true,
        })
        .to_string()
    };
    let t = start_fixture(Faults {
        device_info_override: Some(info(&"x".repeat(1 << 20))),
        ..Faults::default()
    })
    .await;
    match client(&t).device_info().await {
        Err(e @ CameraError::TooLarge { endpoint, limit }) => {
            assert_eq!((endpoint, limit), ("get_device_info", 64 * 1024));
            let shown = e.to_string();
            assert!(
                shown.contains("get_device_info") && shown.contains("65536"),
                "{shown}"
            );
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The same reply with no length (read until the connection closes): reading stops at
    // the limit.
    let mut raw =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n".to_vec();
    raw.extend_from_slice(info(&"x".repeat(1 << 20)).as_bytes());
    let no_length = RawServer::start(raw);
    match client_with(&no_length.url(), |_| {}).device_info().await {
        Err(CameraError::TooLarge { endpoint, limit }) => {
            assert_eq!((endpoint, limit), ("get_device_info", 64 * 1024))
        }
        other => panic!("expected TooLarge without a length, got {other:?}"),
    }
    // Under the limit, a long name with line breaks and escapes is cut and cleaned.
    t.sim
        .set_faults(|x| x.device_info_override = Some(info(&"CV200\n\u{1b}[2J".repeat(2000))));
    let got = client(&t)
        .device_info()
        .await
        .expect("device info under the limit");
    let name = got.device_name.expect("a device name");
    assert!(name.chars().count() <= 257, "{}", name.chars().count());
    assert!(!name.contains(['\n', '\u{1b}']), "{name:?}");
    assert_eq!(got.imei, SIM_IMEI);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_text_with_line_breaks_and_escapes_is_one_clean_line() {
    let forged = "denied\nINFO qucam_offload: FORGED line\r\n\u{1b}[31mred\u{1b}]0;title\u{7}";
    let refusal =
        serde_json::json!({"isSuccess": false, "errorCode": 7, "data": forged.repeat(400)})
            .to_string();
    let t = start_fixture(Faults {
        listing_override: Some(refusal.clone()),
        device_info_override: Some(refusal),
        ..Faults::default()
    })
    .await;
    let c = client(&t);
    let listing = c.list_files(&ListQuery::default()).await.map(|_| ());
    let info = c.device_info().await.map(|_| ());
    for got in [listing, info] {
        let Err(e @ CameraError::Api { .. }) = got else {
            panic!("expected a refusal, got {got:?}");
        };
        let shown = e.to_string();
        assert!(shown.contains("FORGED line"), "{shown}");
        assert!(!shown.chars().any(qucam::text::is_unsafe), "{shown:?}");
        assert!(shown.chars().count() < 1200, "{}", shown.chars().count());
    }
    // The error code as text, too.
    let code = serde_json::json!({"isSuccess": false, "errorCode": forged, "data": "no"});
    t.sim
        .set_faults(|f| f.device_info_override = Some(code.to_string()));
    let e = c.device_info().await.expect_err("a refusal");
    let shown = e.to_string();
    assert!(!shown.chars().any(qucam::text::is_unsafe), "{shown:?}");
    assert!(
        !shown.contains("FORGED line"),
        "cut to 32 characters: {shown}"
    );
}

fn unsized_download(body: &[u8]) -> RawServer {
    let mut resp =
        b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nConnection: close\r\n\r\n".to_vec();
    resp.extend_from_slice(body);
    RawServer::start(resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_longer_than_listed_is_too_long() {
    let listed = 50_000u64;
    let body = content(5, 60_000);
    let raw = unsized_download(&body);
    let c = client_with(&raw.url(), |_| {});
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("long.mp4");
    let path = format!("{VIDEO_ROOT}/20240301/10/20240301_100000_04_1.mp4");
    match download::fetch(&c, &path, &out, Some(listed), &no_progress).await {
        Err(e @ DownloadError::TooLong { expected }) => {
            assert_eq!(expected, listed);
            assert!(!e.is_transient());
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
    // Never more than the listed size on disk.
    assert_eq!(
        std::fs::read(&out).unwrap(),
        &body[..listed as usize],
        "stopped at the listed size"
    );
    assert_eq!(
        raw.requests()[0].line,
        "GET /storage/sdcard1/queclink/video/20240301/10/20240301_100000_04_1.mp4 HTTP/1.1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_listed_is_short() {
    let listed = 50_000u64;
    let body = content(6, 30_000);
    let raw = unsized_download(&body);
    let c = client_with(&raw.url(), |_| {});
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("short.mp4");
    let path = format!("{VIDEO_ROOT}/20240301/10/20240301_100000_04_1.mp4");
    match download::fetch(&c, &path, &out, Some(listed), &no_progress).await {
        Err(e @ DownloadError::Short { got, expected }) => {
            assert_eq!((got, expected), (30_000, listed));
            assert!(e.is_transient(), "a short body is resumed later");
        }
        other => panic!("expected Short, got {other:?}"),
    }
    // What arrived stays on disk for the next attempt.
    assert_eq!(std::fs::read(&out).unwrap(), body);
}

// ---------------------------------------------------------------------------------------------
// Paths

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_percent_encoded() {
    let t = start_fixture(Faults::default()).await;
    // A directory whose name needs encoding: a space, '#', '?' and '%'.
    let odd = "night drive #2 ?50%";
    let sub = t.dir.path().join(odd);
    std::fs::create_dir_all(&sub).unwrap();
    let name = "20240303_120000_04_1.mp4";
    let body = content(77, 33_333);
    std::fs::write(sub.join(name), &body).unwrap();
    let camera_path = format!("{VIDEO_ROOT}/{odd}/{name}");

    let c = client(&t);
    let listed = c
        .list_files(&ListQuery {
            time_window: "20240303000000:20240303235959".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].path, camera_path);

    let url = c.file_url(&listed[0].path).unwrap();
    assert_eq!(
        url.path(),
        "/storage/sdcard1/queclink/video/night%20drive%20%232%20%3F50%25/20240303_120000_04_1.mp4"
    );
    assert_eq!(url.query(), None);
    assert_eq!(url.fragment(), None);

    let mut dl = c.download(&listed[0].path, 0).await.unwrap();
    assert_eq!(read_all(&mut dl).await, body);
    let req = t.download_requests().pop().unwrap();
    assert_eq!(req.path, camera_path, "the camera saw the real path");
    assert_eq!(req.query, None);

    // And via fetch, resumed.
    let out = t.dir.path().join("odd.mp4");
    std::fs::write(&out, &body[..1000]).unwrap();
    let done = download::fetch(
        &c,
        &camera_path,
        &out,
        Some(body.len() as u64),
        &no_progress,
    )
    .await
    .unwrap();
    assert_eq!(done.resumed_from, 1000);
    assert_eq!(done.sha256_hex, sha256_hex(&body));

    // The thumbnail's path is a query parameter: encoded there too.
    c.thumbnail(&camera_path).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_dot_and_other_bad_paths_send_nothing() {
    let t = start_fixture(Faults::default()).await;
    let c = client(&t);
    let out = t.dir.path().join("never.mp4");
    for bad in [
        format!("{VIDEO_ROOT}/../../../etc/passwd"),
        format!("{VIDEO_ROOT}/20240301/../10/x.mp4"),
        format!("{VIDEO_ROOT}/./x.mp4"),
        format!("{VIDEO_ROOT}//x.mp4"),
        format!("{VIDEO_ROOT}/a\\..\\b.mp4"),
        format!("{VIDEO_ROOT}/a\n.mp4"),
        "relative/x.mp4".to_string(),
    ] {
        assert!(
            matches!(c.download(&bad, 0).await, Err(CameraError::InvalidPath(_))),
            "{bad:?}"
        );
        assert!(
            matches!(c.file_url(&bad), Err(CameraError::InvalidPath(_))),
            "{bad:?}"
        );
        match download::fetch(&c, &bad, &out, None, &no_progress).await {
            Err(DownloadError::Camera(CameraError::InvalidPath(_))) => {}
            other => panic!("{bad:?}: expected InvalidPath, got {other:?}"),
        }
    }
    assert!(t.sim.requests().is_empty(), "{:?}", t.sim.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clips_written_by_write_test_clip_are_listed() {
    // The helper's own contract: a clip written at run time is listed with its bytes.
    let t = start_fixture(Faults::default()).await;
    let extra = write_test_clip(t.dir.path(), "20240305_010203_0F_2.mp4", content(9, 1234));
    let c = client(&t);
    let files = c.list_files(&ListQuery::default()).await.unwrap();
    assert_eq!(files[0].name, extra.name);
    assert_eq!(files[0].path, extra.camera_path);
    let mut dl = c.download(&extra.camera_path, 0).await.unwrap();
    assert_eq!(read_all(&mut dl).await, extra.content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_read_gives_exactly_the_bytes_asked_or_says_the_range_was_ignored() {
    let size = 300_000;
    let t = start_one("20240301_100000_04_1.mp4", size, Faults::default()).await;
    let clip = t.clips[0].clone();
    let c = client(&t);
    let got = c.read_range(&clip.camera_path, 1000, 5000).await.unwrap();
    assert_eq!(&got[..], &clip.content[1000..6000]);
    let tail = c
        .read_range(&clip.camera_path, size as u64 - 10, 10)
        .await
        .unwrap();
    assert_eq!(&tail[..], &clip.content[size - 10..]);
    assert_eq!(
        t.sim.requests().last().unwrap().range.as_deref(),
        Some(format!("bytes={}-{}", size - 10, size - 1).as_str())
    );
    // Past the end: the camera sends less than asked, which is no block of the clip.
    let short = c.read_range(&clip.camera_path, size as u64 - 10, 20).await;
    assert!(
        matches!(short, Err(qucam::CameraError::Malformed { .. })),
        "{short:?}"
    );
    t.sim.set_faults(|f| f.no_range = true);
    let ignored = c.read_range(&clip.camera_path, 1000, 5000).await;
    assert!(
        matches!(ignored, Err(qucam::CameraError::RangeNotHonoured { .. })),
        "{ignored:?}"
    );
}
