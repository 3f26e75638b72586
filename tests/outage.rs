//! Outages are the destination's, not the clip's: S3 refusing connections pauses the
//! uploads (no clip is charged an attempt, `status` says so), `run --once` waits for it up
//! to `sync.destination_wait` and then exits 1 naming it, and once S3 is back a `run
//! --once` finishes everything. A failure about the clip itself still counts.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::fleet::{Fleet, IMEI, Knobs};
use qucam_offload::agent::PassOutcome;

const BIN: &str = env!("CARGO_BIN_EXE_qucam-offload");

/// Clips charged an attempt or parked as failed: (name, state, attempts).
fn charged(f: &Fleet) -> Vec<(String, String, i64)> {
    f.db()
        .clips()
        .into_iter()
        .filter(|c| c.attempts > 0 || c.state == "failed")
        .map(|c| (c.name, c.state, c.attempts))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_refusing_pauses_uploads_without_charging_clips_and_the_next_run_finishes() {
    let f = Fleet::start(10, 50_000).await;
    let events = f.event_clips();
    f.s3.set_refusing(true);
    let agent = f.agent(&Knobs::default());
    let out = agent.run_once().await.remove(0).1;
    assert!(
        matches!(out, PassOutcome::Done { remaining, .. } if remaining > 0),
        "{out:?}"
    );
    // (a) No clip was charged for the outage, and `status` says the uploads are paused.
    assert_eq!(charged(&f), vec![], "attempts counted for an outage");
    assert!(f.sim.deletes().is_empty(), "deleted while S3 was down");
    let st = status_text(&agent).await;
    assert!(
        st.contains("uploads to s3://fleet-video") && st.contains("paused"),
        "status:\n{st}"
    );
    let why = agent.destination_gave_up();
    assert!(
        why.as_deref()
            .is_some_and(|w| w.contains("s3://fleet-video")),
        "{why:?}"
    );
    drop(agent);

    // (b) S3 is back: a run started at once takes every clip up and finishes.
    f.s3.set_refusing(false);
    let agent = f.agent(&Knobs::default());
    let out = agent.run_once().await.remove(0).1;
    assert_eq!(
        out,
        PassOutcome::Done {
            imei: IMEI.into(),
            remaining: 0
        }
    );
    assert_eq!(agent.destination_gave_up(), None);
    for n in &events {
        f.assert_in_bucket(n);
        assert!(!f.clip_on_camera(n), "{n} stayed on the camera");
    }
    assert_eq!(charged(&f), vec![]);
    let st = status_text(&agent).await;
    assert!(!st.contains("paused"), "status after the outage:\n{st}");
}

async fn status_text(agent: &qucam_offload::agent::Agent) -> String {
    let st = qucam_offload::commands::collect_status(agent.store())
        .await
        .unwrap();
    qucam_offload::commands::format_status(&st)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_gives_up_on_a_destination_down_too_long_naming_it_then_exits_0_once_back() {
    let f = Fleet::start(6, 30_000).await;
    let cfg = f.write_config(&Knobs {
        sync: "destination_wait = \"2s\"".into(),
        ..Knobs::default()
    });
    let run = || async {
        tokio::process::Command::new(BIN)
            .env_clear()
            .envs(f.child_env())
            .current_dir(f.child_home())
            .args(["-c", cfg.to_str().unwrap(), "run", "--once"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .unwrap()
    };
    // (c) S3 down for longer than the bound: exit 1, naming the destination and why.
    f.s3.set_refusing(true);
    let out = tokio::time::timeout(Duration::from_secs(90), run())
        .await
        .expect("run --once ended by itself");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("destination s3://fleet-video") && stderr.contains("sync.destination_wait"),
        "{stderr}"
    );
    assert_eq!(charged(&f), vec![]);
    // And once it is back, a run started at once finishes everything: exit 0.
    f.s3.set_refusing(false);
    let out = tokio::time::timeout(Duration::from_secs(90), run())
        .await
        .expect("run --once ended by itself");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for n in f.event_clips() {
        f.assert_in_bucket(&n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_about_the_clip_itself_still_counts_an_attempt() {
    let f = Fleet::start(6, 30_000).await;
    let events = f.event_clips();
    // (d) Other objects already hold one clip's key and its hashed key (where a plain-key
    // conflict sends it): a conflict, the clip's alone.
    let taken = &events[0];
    let bytes = std::fs::read(common::fleet::clip_path(&f.camera_dir, taken)).unwrap();
    let hashed = f.key(taken).replace(
        ".mp4",
        &format!("~{}.mp4", &common::fleet::sha256_hex(&bytes)[..8]),
    );
    for key in [f.key(taken), hashed] {
        f.s3.client()
            .put_object()
            .bucket("fleet-video")
            .key(key)
            .body(b"someone else's bytes".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let agent = f.agent(&Knobs::default());
    let out = agent.run_once().await.remove(0).1;
    assert!(
        matches!(out, PassOutcome::Done { remaining, .. } if remaining > 0),
        "{out:?}"
    );
    let charged = charged(&f);
    assert_eq!(charged.len(), 1, "{charged:?}");
    assert_eq!(&charged[0].0, taken);
    assert_eq!((charged[0].1.as_str(), charged[0].2), ("failed", 1));
    assert_eq!(agent.destination_gave_up(), None, "the destination is fine");
    let st = status_text(&agent).await;
    assert!(!st.contains("uploads to"), "status:\n{st}");
    for n in events.iter().filter(|n| *n != taken) {
        f.assert_in_bucket(n);
    }
}

/// Journaled multipart parts: (clip name, upload id, parts).
fn journals(f: &Fleet) -> Vec<(String, String, i64)> {
    let mut rows: Vec<(String, String, i64)> = f
        .db()
        .clips()
        .into_iter()
        .filter_map(|c| Some((c.name, c.upload_id?, c.parts)))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_going_down_mid_multipart_keeps_the_upload_and_its_parts() {
    const MIB: u64 = 1024 * 1024;
    let f = Fleet::start(4, 12 * MIB).await;
    let k = Knobs {
        s3: "multipart_threshold = \"6MiB\"\npart_size = \"5MiB\"\npart_concurrency = 1".into(),
        sync: "upload_concurrency = 1".into(),
        ..Knobs::default()
    };
    f.s3.set_delay(Some(Duration::from_millis(150)));
    let agent = f.agent(&k);
    let run = tokio::spawn({
        let agent = agent.clone();
        async move { agent.run_once().await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !journals(&f).iter().any(|(_, _, parts)| *parts >= 1) {
        assert!(std::time::Instant::now() < deadline, "no part journaled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // S3 goes down in the middle of a multipart upload.
    f.s3.set_refusing(true);
    let before = journals(&f);
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("run --once ended by itself")
        .unwrap()
        .remove(0)
        .1;
    assert!(
        matches!(out, PassOutcome::Done { remaining, .. } if remaining > 0),
        "{out:?}"
    );
    assert_eq!(charged(&f), vec![], "attempts counted for an outage");
    // The interrupted upload keeps its id and at least the parts it had.
    let after = journals(&f);
    for (name, id, parts) in &before {
        assert!(
            after
                .iter()
                .any(|(n, i, p)| n == name && i == id && p >= parts),
            "{name}: journal lost; before {before:?}, after {after:?}"
        );
    }
    assert!(agent.destination_gave_up().is_some());
    drop(agent);
    f.s3.set_delay(None);
    f.s3.set_refusing(false);
    let out = f.run_once(&k).await;
    assert_eq!(
        out,
        PassOutcome::Done {
            imei: IMEI.into(),
            remaining: 0
        }
    );
    for n in f.event_clips() {
        f.assert_in_bucket(&n);
    }
    assert_eq!(charged(&f), vec![]);
}

/// Polls `cond` every 50 ms; fails after `secs` seconds.
async fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_goes_on_downloading_while_uploads_are_paused_and_resumes_them() {
    use qucam_offload::upload::{Destination, S3Destination, s3_settings};
    let f = Fleet::start(6, 20_000).await;
    f.s3.set_refusing(true);
    let cfg = f.config(&Knobs::default());
    let settings = s3_settings(cfg.s3.as_ref().unwrap());
    let dest = Destination::S3(S3Destination::from_client(f.s3.client(), &settings));
    let token = tokio_util::sync::CancellationToken::new();
    let agent =
        std::sync::Arc::new(qucam_offload::agent::Agent::new(cfg, dest, token.clone()).unwrap());
    let daemon = tokio::spawn({
        let agent = agent.clone();
        async move { agent.run().await }
    });
    let paused = || {
        f.db()
            .notice(qucam_offload::agent::DESTINATION_PAUSED_KEY)
            .is_some()
    };
    wait_for("uploads paused", 60, paused).await;
    // A clip recorded during the outage (now: a later pass lists only the window since
    // the newest clip known) is still downloaded by a later pass.
    let late = format!("{}_04_1.mp4", chrono::Utc::now().format("%Y%m%d_%H%M%S"));
    let bytes: Vec<u8> = (0..20_000).map(|i| (i * 7 % 251) as u8).collect();
    qucam_sim::write_clip(&f.camera_dir, &late, &bytes).unwrap();
    wait_for("the late clip downloaded while paused", 60, || {
        f.states().get(&late).map(String::as_str) == Some("downloaded")
    })
    .await;
    assert!(paused(), "still paused");
    assert_eq!(charged(&f), vec![], "attempts counted for an outage");
    // S3 back: a probe finds it and every clip goes up.
    f.s3.set_refusing(false);
    let mut all = f.event_clips();
    all.push(late.clone());
    wait_for("every clip in the bucket", 120, || {
        let keys = f.bucket_keys();
        all.iter().all(|n| keys.contains(&f.key(n)))
    })
    .await;
    wait_for("the pause notice cleared", 10, || !paused()).await;
    assert_eq!(charged(&f), vec![]);
    token.cancel();
    tokio::time::timeout(Duration::from_secs(30), daemon)
        .await
        .expect("the daemon stopped")
        .unwrap();
}

/// S3 goes down between a clip's verification and its delete (kept on the camera until it
/// is `min_age_on_camera` old): the re-check right before the delete meets the outage. The
/// deletes wait (nothing deleted, nothing charged, uploads paused) instead of the pass
/// failing; once S3 is back the next run deletes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_down_at_the_re_check_before_deleting_makes_the_deletes_wait() {
    let f = Fleet::start(4, 20_000).await;
    let knobs = Knobs {
        retention: "min_age_on_camera = \"2s\"".into(),
        ..Knobs::default()
    };
    let events = f.event_clips();
    assert!(!events.is_empty());
    assert!(matches!(f.run_once(&knobs).await, PassOutcome::Done { .. }));
    for n in &events {
        f.assert_in_bucket(n);
        assert!(f.clip_on_camera(n), "{n} deleted before min_age_on_camera");
    }
    // The clips come of age (a configured threshold, not a race), then S3 goes away.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    f.s3.set_refusing(true);
    let agent = f.agent(&knobs);
    let out = agent.run_once().await.remove(0).1;
    assert!(matches!(out, PassOutcome::Done { .. }), "{out:?}");
    assert!(f.sim.deletes().is_empty(), "deleted with S3 down");
    assert_eq!(charged(&f), vec![], "attempts counted for an outage");
    let st = status_text(&agent).await;
    assert!(st.contains("paused"), "status during the outage:\n{st}");
    f.s3.set_refusing(false);
    assert!(matches!(
        f.run_once(&knobs).await,
        PassOutcome::Done { remaining: 0, .. }
    ));
    for n in &events {
        assert!(!f.clip_on_camera(n), "{n} not deleted once S3 was back");
    }
}
