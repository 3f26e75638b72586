//! Depot Wi-Fi in a simulated yard: trucks (each a `qucam-sim` camera with its own SSID,
//! BSSID, password, IMEI and clips) come into range and leave, a NetworkManager stand-in on
//! a private D-Bus joins their hotspots, a router makes the joined truck answer at the
//! shared hotspot address, and the real `qucam-offload` binary offloads them to S3.
//!
//! Every wait polls with a deadline; every child process is killed when dropped.

mod common;

use std::sync::{Arc, Mutex};

use common::moto::Store;
use common::yard::{TruckSpec, UPLINK, Yard, wait_until};

/// A yard with truck 0 (`spec`) in range, offloaded by one `run --once` with one radio
/// (`extra_wifi` in `[wifi]`): its clips verified in the bucket, deletes waiting.
async fn offloaded_once(spec: TruckSpec, extra_wifi: &str) -> Yard {
    let y = Yard::start(Store::S3sFs, &[spec]).await;
    y.arrive(0).await;
    y.write_config(true, extra_wifi, "");
    let mut a = y.spawn(&["run", "--once"]);
    assert_eq!(a.exit(60).await, Some(0), "{}", a.log());
    assert!(y.all_in_bucket(0), "{}", a.log());
    y
}

/// A daemon joined to a slow truck (two 4 MB clips at 500 kB/s), with one radio.
async fn joined_to_a_slow_truck() -> (Yard, common::yard::AgentProc) {
    let y = Yard::start(Store::S3sFs, &[TruckSpec::new(0, 2, 4_000_000)]).await;
    y.trucks[0]
        .sim
        .set_faults(|f| f.bandwidth_bytes_per_sec = Some(500_000));
    y.arrive(0).await;
    y.write_config(true, "", "");
    let a = y.spawn(&["run"]);
    let bssid = y.trucks[0].bssid.clone();
    let joined = y.nm.joined();
    wait_until(30, "joined to the truck", || async {
        joined.borrow().eq_ignore_ascii_case(&bssid)
    })
    .await;
    (y, a)
}

/// Two trucks in range with the factory SSID and password (`queclinkgh`, as the vendor's
/// example), three clips each.
async fn two_factory_trucks_in_range() -> Yard {
    let factory = |i| TruckSpec {
        ssid: "queclinkgh".into(),
        psk: "12345678".into(),
        ..TruckSpec::new(i, 3, 100_000)
    };
    let y = Yard::start(Store::S3sFs, &[factory(0), factory(1)]).await;
    y.arrive(0).await;
    y.arrive(1).await;
    y
}

/// The S3 requests received while a camera's hotspot (not the uplink) was joined, sampled
/// at every change of the joined access point.
fn s3_requests_while_joined(y: &Yard) -> Arc<Mutex<u64>> {
    let total = Arc::new(Mutex::new(0u64));
    let t = total.clone();
    let mut joined = y.nm.joined();
    let s3 = y.s3.request_counter();
    tokio::spawn(async move {
        let mut since: Option<u64> = None;
        loop {
            let now = joined.borrow_and_update().clone();
            let on_camera =
                !now.is_empty() && !now.eq_ignore_ascii_case(common::yard::UPLINK_BSSID);
            let b = s3();
            if let Some(start) = since.take() {
                *t.lock().unwrap() += b - start;
            }
            if on_camera {
                since = Some(b);
            }
            if joined.changed().await.is_err() {
                return;
            }
        }
    });
    total
}

/// One radio for real: while a camera's hotspot is joined, the S3 server refuses new
/// connections and cuts live ones (it is out of reach until the uplink is back).
fn s3_out_of_reach_while_joined(y: &Yard) {
    let mut joined = y.nm.joined();
    let s3 = y.s3.fault_handle();
    tokio::spawn(async move {
        loop {
            let now = joined.borrow_and_update().clone();
            let on_camera =
                !now.is_empty() && !now.eq_ignore_ascii_case(common::yard::UPLINK_BSSID);
            s3.set_refusing(on_camera);
            if joined.changed().await.is_err() {
                return;
            }
        }
    });
}

async fn three_trucks_are_offloaded_in_turn_and_the_uplink_is_restored_after_each(store: Store) {
    let y = Yard::start(
        store,
        &[
            TruckSpec::new(0, 4, 200_000),
            TruckSpec::new(1, 4, 200_000),
            TruckSpec::new(2, 4, 200_000),
        ],
    )
    .await;
    for i in 0..3 {
        y.arrive(i).await;
    }
    y.write_config(true, "", "");
    let during = s3_requests_while_joined(&y);
    let mut a = y.spawn(&["run", "--once"]);
    assert_eq!(a.exit(120).await, Some(0), "{}", a.log());
    for i in 0..3 {
        assert!(y.all_in_bucket(i), "truck {i} offloaded:\n{}", a.log());
        assert!(
            y.trucks[i].sim.deletes().is_empty(),
            "deletes wait for the next visit"
        );
    }
    let calls = y.nm.calls().await;
    let joins: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.starts_with("AddAndActivateConnection2"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(joins.len(), 3, "one join per truck: {calls:?}");
    for w in joins.windows(2) {
        assert!(
            calls[w[0]..w[1]]
                .iter()
                .any(|c| c.starts_with("ActivateConnection")),
            "the uplink is activated between two joins: {calls:?}"
        );
    }
    assert!(
        calls[*joins.last().unwrap()..]
            .iter()
            .any(|c| c.starts_with("ActivateConnection"))
    );
    assert_eq!(y.nm.active_id().await.as_deref(), Some(UPLINK));
    assert_eq!(
        *during.lock().unwrap(),
        0,
        "nothing sent to S3 while on a camera's hotspot"
    );
    assert!(
        !y.nm
            .profiles()
            .await
            .iter()
            .any(|p| p.starts_with("qucam-offload/")),
        "no camera profile is left behind"
    );
}
on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    three_trucks_are_offloaded_in_turn_and_the_uplink_is_restored_after_each
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_radio_uploads_on_the_uplink_and_deletes_only_at_the_next_visit() {
    let y = Yard::start(Store::S3sFs, &[TruckSpec::new(0, 4, 300_000)]).await;
    y.arrive(0).await;
    y.write_config(true, "", "");
    let during = s3_requests_while_joined(&y);
    let mut a = y.spawn(&["run", "--once"]);
    assert_eq!(a.exit(60).await, Some(0), "{}", a.log());
    assert!(y.all_in_bucket(0));
    assert!(
        y.trucks[0].sim.deletes().is_empty(),
        "nothing deleted at the visit that took them"
    );
    assert!(
        y.states(0).values().filter(|s| *s == "verified").count() == y.event_clips(0).len(),
        "verified, deletes at next visit: {:?}",
        y.states(0)
    );
    let st = y.status().await;
    let cam = st
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["imei"] == y.trucks[0].imei.as_str()))
        .unwrap_or_else(|| panic!("the truck in status: {st}"));
    assert_eq!(
        cam["waiting_for_next_visit"],
        y.event_clips(0).len(),
        "{cam}"
    );
    assert_eq!(cam["hotspot"]["bssid"], y.trucks[0].bssid.as_str(), "{cam}");
    assert!(
        cam["hotspot"]["last_joined"].is_i64() && cam["hotspot"]["signal"] == 50,
        "{cam}"
    );
    assert!(
        !st.to_string().contains(&y.trucks[0].psk),
        "no password in status"
    );
    // The next visit: checked in the bucket from the uplink, deleted while joined.
    let mut a = y.spawn(&["run", "--once"]);
    assert_eq!(a.exit(60).await, Some(0), "{}", a.log());
    let mut deleted = y.trucks[0].sim.deletes();
    deleted.sort();
    assert_eq!(deleted.len(), y.event_clips(0).len(), "{}", a.log());
    assert_eq!(*during.lock().unwrap(), 0, "no S3 traffic while joined");
    assert_eq!(y.nm.active_id().await.as_deref(), Some(UPLINK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truck_that_leaves_mid_download_resumes_at_its_next_visit() {
    let size = 3_000_000;
    let y = Yard::start(Store::S3sFs, &[TruckSpec::new(0, 2, size)]).await;
    y.trucks[0]
        .sim
        .set_faults(|f| f.bandwidth_bytes_per_sec = Some(2_000_000));
    y.arrive(0).await;
    y.write_config(true, "", "");
    let mut a = y.spawn(&["run"]);
    let sim = &y.trucks[0].sim;
    wait_until(60, "the download is under way", || async {
        sim.bytes_served() > size / 2
    })
    .await;
    y.leave(0).await;
    wait_until(30, "back on the uplink", || async {
        y.nm.active_id().await.as_deref() == Some(UPLINK)
    })
    .await;
    assert!(
        !y.all_in_bucket(0),
        "the truck left before its clips were taken"
    );
    let served_before = sim.bytes_served();
    sim.set_faults(|f| f.bandwidth_bytes_per_sec = None);
    y.arrive(0).await;
    wait_until(90, "offloaded at the next visit", || async {
        y.all_in_bucket(0)
    })
    .await;
    let total = y.event_clips(0).len() as u64 * size;
    assert!(
        sim.bytes_served() - served_before < total,
        "the interrupted clip resumed (Range) instead of starting over: {} after {}",
        sim.bytes_served(),
        served_before
    );
    a.signal("-TERM");
    assert_eq!(a.exit(60).await, Some(0), "{}", a.log());
    assert_eq!(y.nm.active_id().await.as_deref(), Some(UPLINK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_leaves_the_others_unaffected_and_is_reported_once() {
    let mut specs = vec![TruckSpec::new(0, 3, 100_000), TruckSpec::new(1, 3, 100_000)];
    specs[0].psk = "what-the-camera-uses".into();
    let y = Yard::start(Store::S3sFs, &specs).await;
    // The config has truck 0's old password.
    let cfg = y
        .config_text(true, "", "")
        .replace("what-the-camera-uses", "an-old-password");
    y.write_config_text(&cfg);
    y.arrive(0).await;
    y.arrive(1).await;
    let mut a = y.spawn(&["run"]);
    wait_until(60, "truck 1 offloaded", || async { y.all_in_bucket(1) }).await;
    // Three more rotations, then SIGTERM (scan_interval 1 s).
    let log = a.stop_after_rotations(3).await;
    assert_eq!(
        log.matches("wrong password for this camera's hotspot")
            .count(),
        1,
        "{log}"
    );
    assert!(
        !log.contains("an-old-password") && !log.contains("what-the-camera-uses"),
        "no password in the log"
    );
    let joins0 = log
        .lines()
        .filter(|l| l.contains("joining the camera's hotspot") && l.contains(&y.trucks[0].bssid))
        .count();
    assert_eq!(
        joins0, 1,
        "a wrong password is not retried every scan: {log}"
    );
    assert!(!y.all_in_bucket(0));
    assert_eq!(y.nm.active_id().await.as_deref(), Some(UPLINK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_waits_minutes_growing_across_visits_and_new_credentials_end_it() {
    // A cloned access point without the password, or two handshakes lost in a row, must
    // not keep the real truck off the radio for hours.
    let mut specs = vec![TruckSpec::new(0, 3, 100_000)];
    specs[0].psk = "what-the-camera-uses".into();
    let y = Yard::start(Store::S3sFs, &specs).await;
    let bssid = y.trucks[0].bssid.clone();
    let right = y.config_text(true, "", "");
    y.write_config_text(&right.replace("what-the-camera-uses", "an-old-password"));
    y.arrive(0).await;
    let joins = |log: &str| {
        log.lines()
            .filter(|l| l.contains("joining the camera's hotspot") && l.contains(&bssid))
            .count()
    };
    let once = || async {
        let mut a = y.spawn(&["run", "--once"]);
        assert!(a.exit(60).await.is_some(), "{}", a.log());
        a.log()
    };
    let minutes = |ms: Option<i64>| ms.map(|m| (m + 30_000) / 60_000);
    // First visit: refused, tried again in 5 minutes, not 6 hours.
    let log = once().await;
    assert!(
        log.contains("wrong password for this camera's hotspot"),
        "{log}"
    );
    let (failures, wait) = y.db().hotspot_wait(&bssid);
    assert_eq!((failures, minutes(wait)), (1, Some(5)), "{log}");
    // Within the wait: not joined.
    assert_eq!(joins(&once().await), 0);
    // The wait is over: refused at this visit too, so the next wait doubles.
    y.db().end_hotspot_wait(&bssid);
    let log = once().await;
    assert_eq!(joins(&log), 1, "{log}");
    let (failures, wait) = y.db().hotspot_wait(&bssid);
    assert_eq!((failures, minutes(wait)), (2, Some(10)), "{log}");
    // The password corrected in the config: joined at once, within the wait.
    y.write_config_text(&right);
    let log = once().await;
    assert!(log.contains("refused its password changed"), "{log}");
    assert!(y.all_in_bucket(0), "offloaded at once:\n{log}");
    assert_eq!(y.db().hotspot_wait(&bssid), (0, None));
    assert!(
        !log.contains("an-old-password") && !log.contains("what-the-camera-uses"),
        "no password in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_lost_to_a_weak_signal_is_not_taken_for_a_wrong_password() {
    let y = Yard::start(Store::S3sFs, &[TruckSpec::new(0, 3, 100_000)]).await;
    y.arrive(0).await;
    // NetworkManager reports "no secrets" for the first join, as it does when the 4-way
    // handshake times out at the edge of the yard.
    y.nm.fail_next_joins(&y.trucks[0].bssid, 1).await;
    y.write_config(true, "", "");
    let mut a = y.spawn(&["run", "--once"]);
    assert_eq!(a.exit(60).await, Some(0), "{}", a.log());
    assert!(y.all_in_bucket(0), "offloaded at this visit:\n{}", a.log());
    assert!(
        !a.log().contains("wrong password for this camera's hotspot"),
        "{}",
        a.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replugged_adapter_or_restarted_networkmanager_is_found_again() {
    let y = Yard::start(
        Store::S3sFs,
        &[TruckSpec::new(0, 2, 100_000), TruckSpec::new(1, 2, 100_000)],
    )
    .await;
    y.arrive(0).await;
    y.write_config(true, "", "");
    let mut a = y.spawn(&["run"]);
    wait_until(60, "truck 0 offloaded", || async { y.all_in_bucket(0) }).await;
    // The device and its access points come back under new object paths.
    y.nm.replug_device().await;
    y.arrive(1).await;
    wait_until(60, "truck 1 offloaded after the replug", || async {
        y.all_in_bucket(1)
    })
    .await;
    a.signal("-TERM");
    assert_eq!(a.exit(60).await, Some(0), "{}", a.log());
    assert!(
        a.log().contains("NetworkManager found again"),
        "{}",
        a.log()
    );
    assert_eq!(y.nm.active_id().await.as_deref(), Some(UPLINK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_cut_by_the_radio_leaving_cost_no_attempt_and_pause_nothing() {
    let y = Yard::start(
        Store::S3sFs,
        &[TruckSpec::new(0, 4, 200_000), TruckSpec::new(1, 2, 200_000)],
    )
    .await;
    s3_out_of_reach_while_joined(&y);
    // A slow bucket: every request waits 40 s, longer than the radio waits for uploads
    // after truck 0 and before truck 1 (max_per_camera 15 s, each).
    y.s3.set_delay(Some(std::time::Duration::from_secs(40)));
    // Truck 1's visit lasts its whole turn, longer than the SDK's and the agent's own
    // retries of the cut uploads (about 10 s): the failure reaches the outage logic.
    y.trucks[1]
        .sim
        .set_faults(|f| f.bandwidth_bytes_per_sec = Some(5_000));
    y.arrive(0).await;
    y.write_config(true, "max_per_camera = \"15s\"", "");
    let mut a = y.spawn(&["run"]);
    wait_until(60, "truck 0's uploads outlast the turn", || async {
        a.log()
            .contains("uploads go on at the next return to the uplink")
    })
    .await;
    // Truck 1 takes the radio while truck 0's uploads are in flight.
    y.arrive(1).await;
    wait_until(
        60,
        "the radio left with uploads in flight, and came back",
        || async {
            let log = a.log();
            log.contains("uploads still running when the radio leaves for a camera")
                && log.contains("visit over hotspot=truck-1")
        },
    )
    .await;
    y.s3.set_delay(None);
    wait_until(90, "both trucks in the bucket", || async {
        y.all_in_bucket(0) && y.all_in_bucket(1)
    })
    .await;
    a.signal("-TERM");
    assert_eq!(a.exit(60).await, Some(0), "{}", a.log());
    let log = a.log();
    assert!(
        !log.contains("uploads paused"),
        "S3 out of reach while on a hotspot is no outage:\n{log}"
    );
    assert!(!log.contains("upload failed"), "{log}");
    let attempts: i64 = y.db().clips().iter().map(|c| c.attempts).sum();
    assert_eq!(attempts, 0, "no clip charged an attempt:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_joined_restores_the_uplink() {
    let (y, mut a) = joined_to_a_slow_truck().await;
    wait_until(30, "downloading", || async {
        y.trucks[0].sim.bytes_served() > 0
    })
    .await;
    a.signal("-TERM");
    assert_eq!(a.exit(60).await, Some(0), "{}", a.log());
    assert_eq!(
        y.nm.active_id().await.as_deref(),
        Some(UPLINK),
        "{}",
        a.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_joined_then_the_restart_restores_the_uplink_first() {
    let (y, mut a) = joined_to_a_slow_truck().await;
    a.signal("-KILL");
    assert_eq!(a.exit(10).await, None);
    // NetworkManager drops the connection bound to the dead client, and nothing brings the
    // uplink back by itself.
    wait_until(10, "the camera connection dropped", || async {
        y.nm.active_id().await.is_none()
    })
    .await;
    let before = y.nm.calls().await.len();
    // The truck is still in range: the restart restores the uplink before it joins again.
    let mut b = y.spawn(&["run"]);
    wait_until(30, "joined again", || async {
        y.nm.calls().await[before..]
            .iter()
            .any(|c| c.starts_with("AddAndActivateConnection2"))
    })
    .await;
    let calls = y.nm.calls().await;
    let after = &calls[before..];
    let first_activate = after
        .iter()
        .position(|c| c.starts_with("ActivateConnection"));
    let first_join = after
        .iter()
        .position(|c| c.starts_with("AddAndActivateConnection2"));
    assert!(
        first_activate.is_some_and(|u| Some(u) < first_join),
        "uplink first: {after:?}"
    );
    b.signal("-TERM");
    assert_eq!(b.exit(60).await, Some(0), "{}", b.log());
    assert_eq!(y.nm.active_id().await.as_deref(), Some(UPLINK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hotspot_answering_with_another_imei_is_not_trusted() {
    // S3 over another path (no uplink on the radio): a trusted camera's clips would be
    // downloaded, verified and deleted in one visit.
    let y = Yard::start(Store::S3sFs, &[TruckSpec::new(0, 3, 100_000)]).await;
    y.arrive(0).await;
    y.write_config(false, "", "");
    let mut a = y.spawn(&["run", "--once"]);
    assert_eq!(a.exit(60).await, Some(0), "{}", a.log());
    let first = y.trucks[0].sim.deletes().len();
    assert_eq!(
        first,
        y.event_clips(0).len(),
        "a trusted camera is offloaded and cleaned in one visit"
    );
    // Another camera behind the same hotspot now.
    let other_dir = y.dir.path().join("other-camera");
    std::fs::create_dir_all(&other_dir).unwrap();
    let clips = qucam_sim::generate_clips(&other_dir, 3, 100_000, 999).unwrap();
    let other_imei = "867867432599999";
    y.trucks[0].sim.device().swap(other_imei, other_dir.clone());
    let mut a = y.spawn(&["run", "--once"]);
    let code = a.exit(60).await;
    let log = a.log();
    assert!(
        log.contains("another camera answers behind this hotspot"),
        "{log}"
    );
    assert_eq!(
        y.trucks[0].sim.deletes().len(),
        first,
        "nothing deleted from the camera not trusted yet: {log}"
    );
    for p in &clips {
        assert!(p.exists(), "{} still on the camera", p.display());
    }
    let imei: String = y
        .db()
        .hotspots()
        .into_iter()
        .find(|h| h.bssid == y.trucks[0].bssid)
        .and_then(|h| h.imei)
        .expect("the hotspot's IMEI");
    assert_eq!(imei, other_imei, "the record is corrected");
    assert_eq!(
        code,
        Some(0),
        "its clips are offloaded, attributed to the IMEI that answered: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trucks_with_the_factory_ssid_are_told_apart_by_bssid_and_imei() {
    let y = two_factory_trucks_in_range().await;
    // No [[camera]] at all: the factory password for the factory SSID.
    let cfg = y.config_with("", true, "[wifi.passwords]\nqueclinkgh = \"12345678\"", "");
    y.write_config_text(&cfg);
    let mut a = y.spawn(&["run", "--once"]);
    assert_eq!(a.exit(60).await, Some(0), "{}", a.log());
    for i in 0..2 {
        assert!(
            y.all_in_bucket(i),
            "truck {i}, under its own IMEI:\n{}",
            a.log()
        );
    }
    let rows: Vec<(String, String)> = y
        .db()
        .hotspots()
        .into_iter()
        .map(|h| (h.bssid, h.imei.expect("the hotspot's IMEI")))
        .collect();
    assert_eq!(
        rows,
        vec![
            (y.trucks[0].bssid.clone(), y.trucks[0].imei.clone()),
            (y.trucks[1].bssid.clone(), y.trucks[1].imei.clone())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_unknown_false_joins_only_known_cameras() {
    let y = two_factory_trucks_in_range().await;
    // Truck 0 is a known camera (its BSSID); truck 1 only matches the default password.
    let cams = format!(
        "[[camera]]\nname = \"truck-0\"\nbssid = \"{}\"\n",
        y.trucks[0].bssid
    );
    let cfg = y.config_with(
        &cams,
        true,
        "join_unknown = false\n[wifi.passwords]\nqueclinkgh = \"12345678\"",
        "",
    );
    y.write_config_text(&cfg);
    let mut a = y.spawn(&["run", "--once"]);
    assert_eq!(a.exit(60).await, Some(0), "{}", a.log());
    assert!(y.all_in_bucket(0), "{}", a.log());
    assert_eq!(
        y.trucks[1].sim.bytes_served(),
        0,
        "the unknown truck is not joined"
    );
    assert!(y.trucks[1].sim.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_truck_holds_the_radio_longer_than_max_per_camera() {
    let y = Yard::start(
        Store::S3sFs,
        &[
            TruckSpec::new(0, 6, 2_000_000),
            TruckSpec::new(1, 2, 100_000),
        ],
    )
    .await;
    // Truck 0 is slow: all of its clips take about 12 s.
    y.trucks[0]
        .sim
        .set_faults(|f| f.bandwidth_bytes_per_sec = Some(1_000_000));
    y.arrive(0).await;
    y.write_config(true, "max_per_camera = \"2s\"", "");
    let mut a = y.spawn(&["run"]);
    let joined = y.nm.joined();
    let b0 = y.trucks[0].bssid.clone();
    wait_until(30, "on truck 0", || async {
        joined.borrow().eq_ignore_ascii_case(&b0)
    })
    .await;
    y.arrive(1).await;
    wait_until(30, "truck 1 offloaded", || async { y.all_in_bucket(1) }).await;
    assert!(
        !y.all_in_bucket(0),
        "truck 1 did not wait for all of truck 0's clips"
    );
    wait_until(90, "truck 0 offloaded over several visits", || async {
        y.all_in_bucket(0)
    })
    .await;
    a.signal("-TERM");
    assert_eq!(a.exit(60).await, Some(0), "{}", a.log());
    assert!(a.log().contains("turn over"), "{}", a.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_passwords_open_hotspots_and_stay_private() {
    use std::os::unix::fs::PermissionsExt;
    let y = Yard::start(Store::S3sFs, &[TruckSpec::new(0, 2, 100_000)]).await;
    y.arrive(0).await;
    // The camera is also reachable by its URL (WAN mode, a cable): no password configured.
    let cams = format!(
        "[[camera]]\nname = \"truck-0-wan\"\nurl = \"{}\"\n",
        y.trucks[0].sim.url()
    );
    let cfg = y.config_with(&cams, true, "learn = true\njoin_unknown = false", "");
    y.write_config_text(&cfg);
    let mut a = y.spawn(&["run"]);
    // (The visit may be over between two looks at the joined access point: the log keeps
    // it.)
    wait_until(
        60,
        "its hotspot joined with the learned password",
        || async { a.log().contains("joined the camera's hotspot") },
    )
    .await;
    a.signal("-TERM");
    assert_eq!(a.exit(60).await, Some(0), "{}", a.log());
    let learned = std::fs::read_dir(&y.state_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().contains("wifi-credentials"))
        .expect("the learned file in the state dir");
    let mode = learned.metadata().unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "readable by the service user only");
    assert!(!a.log().contains(&y.trucks[0].psk), "never logged");
    assert!(
        !y.status().await.to_string().contains(&y.trucks[0].psk),
        "never in status"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_fleet_line_and_an_unsafe_learned_file_disable_only_themselves() {
    use std::os::unix::fs::PermissionsExt;
    let y = Yard::start(
        Store::S3sFs,
        &[TruckSpec::new(0, 2, 100_000), TruckSpec::new(1, 2, 100_000)],
    )
    .await;
    y.arrive(0).await;
    y.arrive(1).await;
    let (t0, t1) = (&y.trucks[0], &y.trucks[1]);
    // Truck 1's line has a password too short for WPA; truck 0's is sound.
    let fleet = y.state_dir.with_file_name("fleet.csv");
    std::fs::write(
        &fleet,
        format!(
            "imei,ssid,bssid,password\n{},{},{},short\n{},{},{},{}\n",
            t1.imei, t1.ssid, t1.bssid, t0.imei, t0.ssid, t0.bssid, t0.psk
        ),
    )
    .unwrap();
    // A learned file an operator made group-readable.
    std::fs::create_dir_all(&y.state_dir).unwrap();
    let learned = y.state_dir.join("wifi-credentials.json");
    let body = format!(
        r#"{{"cameras":[{{"imei":"{}","ssid":"{}","password":"{}"}}]}}"#,
        t1.imei, t1.ssid, t1.psk
    );
    std::fs::write(&learned, &body).unwrap();
    std::fs::set_permissions(&learned, std::fs::Permissions::from_mode(0o640)).unwrap();
    let extra = format!(
        "cameras_file = {:?}\nlearn = true\njoin_unknown = false",
        fleet.display().to_string()
    );
    y.write_config_text(&y.config_with("", true, &extra, ""));
    let mut a = y.spawn(&["run", "--once"]);
    assert_eq!(a.exit(90).await, Some(0), "{}", a.log());
    let log = a.log();
    assert!(y.all_in_bucket(0), "truck 0 offloaded:\n{log}");
    assert!(!y.all_in_bucket(1), "truck 1 has no usable password");
    assert!(
        log.contains("fleet.csv, line 2: password") && log.contains("the line is skipped"),
        "{log}"
    );
    assert!(
        log.contains("wifi-credentials.json") && log.contains("no learned password is used"),
        "{log}"
    );
    assert!(
        !log.contains(&t0.psk) && !log.contains(&t1.psk),
        "no password in the log"
    );
    assert_eq!(
        std::fs::read_to_string(&learned).unwrap(),
        body,
        "the learned file is not written over"
    );
    assert_eq!(y.nm.active_id().await.as_deref(), Some(UPLINK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learned_password_is_pinned_to_its_first_join_and_not_offered_to_a_clone() {
    let y = Yard::start(Store::S3sFs, &[TruckSpec::new(0, 2, 100_000)]).await;
    let t0 = &y.trucks[0];
    // Met by URL first (a cable, WAN mode): its hotspot's password is learned, no BSSID.
    let cams = format!(
        "[[camera]]\nname = \"truck-0-wan\"\nurl = \"{}\"\n",
        t0.sim.url()
    );
    let cfg = y.config_with(&cams, true, "learn = true\njoin_unknown = false", "");
    y.write_config_text(&cfg);
    let learned = y.state_dir.join("wifi-credentials.json");
    let mut a = y.spawn(&["run"]);
    wait_until(60, "the hotspot's password learned", || async {
        learned.exists()
    })
    .await;
    a.signal("-TERM");
    assert_eq!(a.exit(60).await, Some(0), "{}", a.log());
    // The truck arrives, and so does a clone with its SSID (weaker: visited after it, in
    // the same rotation). Only the truck is offered the learned password.
    let clone = "0E:00:00:00:00:77";
    y.arrive(0).await;
    y.nm.add_ap(&t0.ssid, clone, 20, &t0.psk).await;
    let mut a = y.spawn(&["run", "--once"]);
    assert_eq!(a.exit(90).await, Some(0), "{}", a.log());
    let log = a.log();
    assert!(log.contains("joined the camera's hotspot"), "{log}");
    let joins = |bssid: &str| {
        log.lines()
            .filter(|l| l.contains("joining the camera's hotspot") && l.contains(bssid))
            .count()
    };
    assert_eq!((joins(&t0.bssid), joins(clone)), (1, 0), "{log}");
    let text = std::fs::read_to_string(&learned).unwrap();
    assert!(text.contains(&t0.bssid), "pinned to the truck's BSSID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_networkmanager_and_lists_known_hotspots_in_range() {
    let y = Yard::start(
        Store::S3sFs,
        &[TruckSpec::new(0, 1, 1000), TruckSpec::new(1, 1, 1000)],
    )
    .await;
    y.arrive(0).await;
    y.nm.add_ap(
        "someone-elses-wifi",
        "0E:00:00:00:00:99",
        70,
        "not-ours-123",
    )
    .await;
    y.write_config(true, "", "");
    let mut a = y.spawn(&["doctor"]);
    let _ = a.exit(60).await;
    let out = std::fs::read_to_string(a.stderr.with_extension("stdout")).unwrap();
    assert!(
        out.contains("wifi: NetworkManager") && out.contains("interface wlan0 is Wi-Fi"),
        "{out}"
    );
    assert!(
        out.contains("wifi: uplink") && out.contains("depot-wifi"),
        "{out}"
    );
    let in_range = out
        .lines()
        .find(|l| l.contains("wifi: in range"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(in_range.contains(&y.trucks[0].bssid), "{in_range}");
    assert!(
        !in_range.contains("someone-elses-wifi"),
        "only known hotspots: {in_range}"
    );
    assert!(!out.contains(&y.trucks[0].psk), "no password: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truck_fully_offloaded_is_not_joined_again_before_revisit_after() {
    let y = Yard::start(Store::S3sFs, &[TruckSpec::new(0, 2, 100_000)]).await;
    y.arrive(0).await;
    y.write_config(true, "", "");
    let mut a = y.spawn(&["run"]);
    let sim = &y.trucks[0].sim;
    // Taken at the first visit, deleted at the second.
    wait_until(60, "deleted at the second visit", || async {
        sim.deletes().len() == y.event_clips(0).len()
    })
    .await;
    let joins = |log: &str| log.matches("joining the camera's hotspot").count();
    wait_until(30, "the second visit over", || async {
        a.log().contains("visit over") && joins(&a.log()) >= 2
    })
    .await;
    let after_two = sim.requests().len();
    // Three more rotations (scan_interval 1 s) with nothing to do for this truck, then SIGTERM.
    let log = a.stop_after_rotations(3).await;
    assert_eq!(
        joins(&log),
        2,
        "no visit before revisit_after (15m):\n{log}"
    );
    assert_eq!(
        sim.requests().len(),
        after_two,
        "the camera was not asked again"
    );
}

/// The joins of camera hotspots the stand-in was asked for.
async fn joins(y: &Yard) -> usize {
    let calls = y.nm.calls().await;
    calls
        .iter()
        .filter(|c| c.starts_with("AddAndActivateConnection2"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_met_by_the_check_before_a_visit_pauses_uploads_and_the_radio_does_not_hop_back()
{
    let y = offloaded_once(TruckSpec::new(0, 3, 100_000), "").await;
    let before = joins(&y).await;
    // The bucket is down when the radio is about to go back to the truck: the check of
    // its verified clips, from the uplink, meets the outage.
    y.s3.set_failing(Some(503));
    let mut a = y.spawn(&["run"]);
    wait_until(60, "the first visit over", || async {
        a.log().contains("visit over")
    })
    .await;
    let log = a.stop_after_rotations(3).await;
    assert!(
        log.contains("uploads paused"),
        "an S3 failure on the uplink is an outage, paused and probed:\n{log}"
    );
    assert_eq!(
        joins(&y).await - before,
        1,
        "deletes that cannot be checked do not send the radio back to the truck at every rotation:\n{log}"
    );
    assert!(
        y.trucks[0].sim.deletes().is_empty(),
        "nothing checked, nothing deleted"
    );
    assert_eq!(y.nm.active_id().await.as_deref(), Some(UPLINK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_before_a_visit_cut_short_keeps_what_it_confirmed() {
    // The check before a visit gets at most max_per_camera (3 s) of the uplink.
    let y = offloaded_once(TruckSpec::new(0, 12, 50_000), "max_per_camera = \"3s\"").await;
    let verified = y.event_clips(0).len();
    let before = joins(&y).await;
    // A slow bucket: every answer takes 1 s, so checking every clip (6) takes longer than
    // the check may.
    y.s3.set_reply_delay(Some(std::time::Duration::from_secs(1)));
    let mut a = y.spawn(&["run"]);
    wait_until(60, "the visit over", || async {
        a.log().contains("visit over")
    })
    .await;
    let log = a.stop_after_rotations(3).await;
    let deleted = y.trucks[0].sim.deletes().len();
    assert!(
        deleted > 0 && deleted < verified,
        "the clips confirmed before the bound are deleted, the rest wait ({deleted} of {verified}):\n{log}"
    );
    assert!(log.contains("was cut short"), "{log}");
    assert_eq!(
        joins(&y).await - before,
        1,
        "clips whose check was cut short do not send the radio back at every rotation:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_radio_cameras_met_by_url_are_offloaded_before_the_rotation() {
    let y = Yard::start(Store::S3sFs, &[TruckSpec::new(0, 4, 300_000)]).await;
    y.trucks[0]
        .sim
        .set_faults(|f| f.bandwidth_bytes_per_sec = Some(1_000_000));
    y.arrive(0).await;
    // A camera met by its URL (WAN mode), over the same uplink.
    let wan_dir = y.dir.path().join("wan-camera");
    std::fs::create_dir_all(&wan_dir).unwrap();
    qucam_sim::generate_clips(&wan_dir, 6, 300_000, 777).unwrap();
    let wan_imei = "867867432588888";
    let wan = qucam_sim::start(qucam_sim::SimOptions {
        dir: wan_dir.clone(),
        imei: wan_imei.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    wan.set_faults(|f| f.bandwidth_bytes_per_sec = Some(1_000_000));
    let t = &y.trucks[0];
    let cams = format!(
        "[[camera]]\nname = \"wan\"\nurl = \"http://{}\"\n\n[[camera]]\nname = \"truck-0\"\nssid = \"{}\"\npassword = \"{}\"\n",
        wan.addr(),
        t.ssid,
        t.psk
    );
    y.write_config_text(&y.config_with(&cams, true, "", ""));
    let mut a = y.spawn(&["run", "--once"]);
    assert_eq!(
        a.exit(120).await,
        Some(0),
        "every clip taken is verified, the WAN camera's deletes done:\n{}",
        a.log()
    );
    assert_eq!(
        wan.deletes().len(),
        y.s3.object_keys()
            .iter()
            .filter(|k| k.contains(wan_imei))
            .count(),
        "the WAN camera's clips are verified in the bucket, then deleted:\n{}",
        a.log()
    );
    assert!(!wan.deletes().is_empty(), "{}", a.log());
    assert!(y.all_in_bucket(0), "{}", a.log());
    assert_eq!(y.nm.active_id().await.as_deref(), Some(UPLINK));
}

/// The yard benchmark (BENCHMARKS.md, "Depot Wi-Fi"), not a test: no timing is asserted.
/// `scripts/test --test yard -- --ignored --nocapture yard_benchmark`. Prints the agent's
/// own overhead from "access point visible" (and from "joined") to "first byte downloaded"
/// (the stand-in activates in 50 ms, so this measures the agent, not Wi-Fi), and the yard
/// throughput in clips per hour for N trucks of M clips, one radio and Ethernet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run it by name with --ignored"]
async fn yard_benchmark() {
    const N: usize = 5;
    const M: usize = 8;
    const SIZE: u64 = 2_000_000;
    // 1. Overhead: the daemon waits on the uplink; one truck arrives at a time.
    let specs: Vec<TruckSpec> = (0..N).map(|i| TruckSpec::new(i, M, SIZE)).collect();
    let y = Yard::start(Store::S3sFs, &specs).await;
    y.write_config(true, "", "");
    let mut a = y.spawn(&["run"]);
    wait_until(30, "on the uplink", || async {
        y.nm.active_id().await.as_deref() == Some(UPLINK)
    })
    .await;
    let joined = y.nm.joined();
    let (mut visible, mut after_join) = (Vec::new(), Vec::new());
    for i in (0..N).filter(|i| !y.event_clips(*i).is_empty()) {
        let t0 = std::time::Instant::now();
        y.arrive(i).await;
        let b = y.trucks[i].bssid.clone();
        let mut t_joined = None;
        let deadline = t0 + std::time::Duration::from_secs(30);
        while y.trucks[i].sim.bytes_served() == 0 {
            assert!(std::time::Instant::now() < deadline, "{}", a.log());
            if t_joined.is_none() && joined.borrow().eq_ignore_ascii_case(&b) {
                t_joined = Some(std::time::Instant::now());
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let t1 = std::time::Instant::now();
        visible.push((t1 - t0).as_secs_f64() * 1000.0);
        after_join.push((t1 - t_joined.unwrap_or(t1)).as_secs_f64() * 1000.0);
        wait_until(60, "offloaded", || async { y.all_in_bucket(i) }).await;
        y.leave(i).await;
    }
    a.signal("-TERM");
    a.exit(60).await;
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "BENCH overhead (scan_interval 1s, {} arrivals): AP visible -> first byte median {:.0} ms (min {:.0}, max {:.0}); joined -> first byte median {:.0} ms (min {:.0}, max {:.0})",
        visible.len(),
        med(&mut visible.clone()),
        visible.iter().cloned().fold(f64::MAX, f64::min),
        visible.iter().cloned().fold(0.0, f64::max),
        med(&mut after_join.clone()),
        after_join.iter().cloned().fold(f64::MAX, f64::min),
        after_join.iter().cloned().fold(0.0, f64::max),
    );
    // 2. Throughput: N trucks of M clips in range, `run --once`.
    for (uplink, bw) in [
        (true, None),
        (true, Some(10_000_000)),
        (false, Some(10_000_000)),
    ] {
        let specs: Vec<TruckSpec> = (0..N).map(|i| TruckSpec::new(i, M, SIZE)).collect();
        let y = Yard::start(Store::S3sFs, &specs).await;
        for i in 0..N {
            y.trucks[i]
                .sim
                .set_faults(|f| f.bandwidth_bytes_per_sec = bw);
            y.arrive(i).await;
        }
        y.write_config(uplink, "", "");
        let t0 = std::time::Instant::now();
        let mut a = y.spawn(&["run", "--once"]);
        assert_eq!(a.exit(600).await, Some(0), "{}", a.log());
        let secs = t0.elapsed().as_secs_f64();
        let clips: usize = (0..N).map(|i| y.event_clips(i).len()).sum();
        println!(
            "BENCH yard {N} trucks x {M} clips of {SIZE} B ({clips} event clips), {}, camera link {}: {secs:.1} s, {:.0} clips/hour",
            if uplink {
                "one radio (store and forward)"
            } else {
                "uplink on Ethernet"
            },
            bw.map_or("unthrottled".to_string(), |b| format!(
                "{} MB/s",
                b / 1_000_000
            )),
            clips as f64 / secs * 3600.0
        );
    }
}

/// The stdout of `qucam-offload <args>` in the yard (its exit code not checked).
async fn stdout_of(y: &Yard, args: &[&str]) -> String {
    let mut a = y.spawn(args);
    let _ = a.exit(60).await;
    std::fs::read_to_string(a.stderr.with_extension("stdout")).expect("stdout")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_hotspot_with_the_factory_ssid_is_left_at_once_and_not_joined_again() {
    // Truck 1 is a rogue access point with the factory SSID and password: its DHCP server
    // leases 10.0.0.2/1, a route to half the Internet (S3, webhooks, NTP).
    let y = two_factory_trucks_in_range().await;
    let rogue = y.trucks[1].bssid.clone();
    y.nm.set_lease(&rogue, "10.0.0.2", 1).await;
    let factory = "suspicious_for = \"1h\"\n[wifi.passwords]\nqueclinkgh = \"12345678\"";
    y.write_config_text(&y.config_with("", true, factory, ""));
    let mut a = y.spawn(&["run"]);
    wait_until(60, "truck 0 offloaded", || async { y.all_in_bucket(0) }).await;
    let log = a.stop_after_rotations(3).await;
    assert!(
        log.contains("SUSPICIOUS hotspot") && log.contains("wider than /24"),
        "{log}"
    );
    let joins = |log: &str| {
        log.lines()
            .filter(|l| l.contains("joining the camera's hotspot") && l.contains(&rogue))
            .count()
    };
    assert_eq!(
        joins(&log),
        1,
        "not joined again within suspicious_for: {log}"
    );
    assert!(
        y.trucks[1].sim.requests().is_empty(),
        "no camera request (no delete) through the rogue"
    );
    assert_eq!(y.trucks[1].sim.bytes_served(), 0);
    assert_eq!(y.nm.active_id().await.as_deref(), Some(UPLINK), "{log}");
    // The sound lease of truck 0 was joined as before: its clips are in the bucket.
    assert!(y.all_in_bucket(0));
    // `status` and `doctor` name it.
    let status = stdout_of(&y, &["status"]).await;
    assert!(
        status.contains(&format!("queclinkgh ({rogue}): SUSPICIOUS network")),
        "{status}"
    );
    let doctor = stdout_of(&y, &["doctor"]).await;
    let line = doctor
        .lines()
        .find(|l| l.contains("wifi: suspicious hotspots"))
        .unwrap_or_else(|| panic!("{doctor}"));
    assert!(line.contains(&rogue), "{line}");
    // Other credentials for it clear the mark: it is tried again at once (and its password
    // refused, here).
    let cams =
        format!("[[camera]]\nname = \"truck-1\"\nbssid = \"{rogue}\"\npassword = \"another-pw\"\n");
    y.write_config_text(&y.config_with(&cams, true, factory, ""));
    let mut a = y.spawn(&["run", "--once"]);
    let _ = a.exit(60).await;
    let log = a.log();
    assert_eq!(joins(&log), 1, "tried again with its new password: {log}");
    assert!(log.contains("marked suspicious changed"), "{log}");
    assert!(y.trucks[1].sim.requests().is_empty());
}
