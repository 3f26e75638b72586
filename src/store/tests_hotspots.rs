//! The `hotspots` table (schema 6, the failure's reason schema 7, the suspicious mark schema
//! 11, the refused credentials schema 12) and `camera_work`: a v5 database gains the table, a v6 one keeps its refused
//! passwords as reasons, a v10 one gains the mark unset, a v11 one keeps a refusal's wait
//! with no refused credentials, each method's effect on the row,
//! and which clip states count as work for the next visit.

use rusqlite::params;

use super::state::ClipState::{self, *};
use super::*;

fn open() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&d.path().join("state.db")).unwrap();
    (d, s)
}

async fn row(s: &Store, bssid: &str) -> HotspotRow {
    let rows = s.hotspots().await.unwrap();
    rows.into_iter().find(|r| r.bssid == bssid).expect(bssid)
}

const A: &str = "AA:AA:AA:AA:AA:01";
const B: &str = "AA:AA:AA:AA:AA:02";

#[tokio::test]
async fn a_version_5_database_gains_the_hotspots_table() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        for sql in &schema::MIGRATIONS[..5] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", 5).unwrap();
        c.execute(
            "INSERT INTO clips (imei, path, name, state, first_seen, last_seen)
                VALUES ('1', '/a.mp4', 'a.mp4', 'queued', 0, 0)",
            [],
        )
        .unwrap();
    }
    let s = Store::open(&p).unwrap();
    let (v, clips): (i64, i64) = s
        .with(|c| {
            Ok((
                c.query_row("PRAGMA user_version", [], |r| r.get(0))?,
                c.query_row("SELECT COUNT(*) FROM clips", [], |r| r.get(0))?,
            ))
        })
        .unwrap();
    assert_eq!((v, clips), (SCHEMA_VERSION, 1));
    assert!(s.hotspots().await.unwrap().is_empty());
    s.hotspots_seen(vec![(A.into(), "queclinkgh".into(), 70)], 5)
        .await
        .unwrap();
    assert_eq!(s.hotspots().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_scan_updates_ssid_signal_and_last_seen_and_keeps_the_rest() {
    let (_d, s) = open();
    s.hotspots_seen(
        vec![(A.into(), "t1".into(), 40), (B.into(), "t2".into(), 90)],
        10,
    )
    .await
    .unwrap();
    s.hotspot_joined(A.into(), 11).await.unwrap();
    s.hotspot_complete(A.into(), 12).await.unwrap();
    s.hotspots_seen(vec![(A.into(), "renamed".into(), 55)], 20)
        .await
        .unwrap();
    let a = row(&s, A).await;
    assert_eq!(
        a,
        HotspotRow {
            bssid: A.into(),
            ssid: "renamed".into(),
            imei: None,
            signal: Some(55),
            last_seen: Some(20),
            last_joined: Some(11),
            last_complete: Some(12),
            failures: 0,
            retry_at: None,
            last_failure: None,
            wrong_password: false,
            refused_credentials: None,
            suspicious: None,
        }
    );
    let b = row(&s, B).await;
    assert_eq!(
        (b.signal, b.last_seen, b.last_joined),
        (Some(90), Some(10), None)
    );
}

#[tokio::test]
async fn a_wrong_password_is_reported_once_until_a_join_succeeds() {
    let (_d, s) = open();
    s.hotspots_seen(vec![(A.into(), "t1".into(), 40)], 1)
        .await
        .unwrap();
    // The retry time is computed from the failures recorded before, in the same transaction.
    let fail = |bssid: &str, reason: JoinFailure| {
        s.hotspot_failed(bssid.into(), reason, "fp".into(), |before| {
            1000 + i64::from(before)
        })
    };
    let f = fail(A, JoinFailure::WrongPassword).await.unwrap();
    assert!(f.first_wrong_password, "first: report");
    assert_eq!(f.failures_before, 0);
    let f = fail(A, JoinFailure::WrongPassword).await.unwrap();
    assert!(!f.first_wrong_password, "again: quiet");
    assert_eq!(f.failures_before, 1);
    let f = fail(A, JoinFailure::Timeout).await.unwrap();
    assert_eq!((f.first_wrong_password, f.failures_before), (false, 2));
    // Failures of other kinds do not make a refusal's wait longer: only refusals in a row.
    let b = "0A:00:00:00:00:0B";
    for _ in 0..4 {
        fail(b, JoinFailure::Timeout).await.unwrap();
    }
    let f = fail(b, JoinFailure::WrongPassword).await.unwrap();
    assert_eq!(f.failures_before, 0, "the first refusal waits the shortest");
    let f = fail(b, JoinFailure::WrongPassword).await.unwrap();
    assert_eq!(f.failures_before, 1);
    let a = row(&s, A).await;
    assert_eq!(
        (a.failures, a.retry_at, a.last_failure),
        (3, Some(1002), Some(JoinFailure::Timeout)),
        "the reason of the last failure"
    );
    assert!(
        a.wrong_password,
        "a refused password stays shown until a join"
    );
    // Another failure between two refusals does not make the second one news.
    // (Its wait grows with the refusals in a row: two before it.)
    let f = fail(A, JoinFailure::WrongPassword).await.unwrap();
    assert_eq!((f.first_wrong_password, f.failures_before), (false, 2));
    let a = row(&s, A).await;
    assert_eq!(
        (a.failures, a.retry_at, a.last_failure),
        (4, Some(1002), Some(JoinFailure::WrongPassword))
    );
    s.hotspot_joined(A.into(), 400).await.unwrap();
    let a = row(&s, A).await;
    assert_eq!(
        (a.failures, a.retry_at, a.last_failure, a.last_joined),
        (0, None, None, Some(400))
    );
    assert!(!a.wrong_password, "cleared by the join");
    let f = fail(A, JoinFailure::WrongPassword).await.unwrap();
    assert!(f.first_wrong_password, "after a join: report again");
    assert_eq!(f.failures_before, 0);
    // A failure at a BSSID no scan recorded still makes its row.
    let f = fail(B, JoinFailure::Gone).await.unwrap();
    assert_eq!((f.first_wrong_password, f.failures_before), (false, 0));
    let b = row(&s, B).await;
    assert_eq!((b.failures, b.last_failure), (1, Some(JoinFailure::Gone)));
}

#[tokio::test]
async fn a_version_6_database_keeps_a_refused_password_as_the_reason() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        for sql in &schema::MIGRATIONS[..6] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", 6).unwrap();
        c.execute_batch(
            "INSERT INTO hotspots (bssid, ssid, failures, retry_at, wrong_password)
                VALUES ('AA:AA:AA:AA:AA:01', 't1', 2, 1000, 1),
                       ('AA:AA:AA:AA:AA:02', 't2', 1, 2000, 0),
                       ('AA:AA:AA:AA:AA:03', 't3', 0, NULL, 0);",
        )
        .unwrap();
    }
    let s = Store::open(&p).unwrap();
    let got: Vec<_> = s
        .hotspots()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.ssid, r.failures, r.retry_at, r.last_failure))
        .collect();
    assert_eq!(
        got,
        [
            ("t1".into(), 2, Some(1000), Some(JoinFailure::WrongPassword)),
            ("t2".into(), 1, Some(2000), None),
            ("t3".into(), 0, None, None),
        ]
    );
    // The refusal was reported before the upgrade: not again.
    let f = s
        .hotspot_failed(A.into(), JoinFailure::WrongPassword, "fp".into(), |_| 0)
        .await
        .unwrap();
    assert!(!f.first_wrong_password);
    let f = s
        .hotspot_failed(B.into(), JoinFailure::WrongPassword, "fp".into(), |_| 0)
        .await
        .unwrap();
    assert!(f.first_wrong_password);
}

#[tokio::test]
async fn join_failures_read_back_as_written() {
    for f in JoinFailure::ALL {
        assert_eq!(JoinFailure::parse(f.as_str()), Some(f));
        assert_eq!(serde_json::to_value(f).unwrap(), f.as_str());
    }
    assert_eq!(JoinFailure::parse("wrong password"), None);
    let (_d, s) = open();
    s.with(|c| {
        c.execute(
            "INSERT INTO hotspots (bssid, ssid, last_failure) VALUES ('x', 'y', 'struck by lightning')",
            [],
        )?;
        Ok(())
    })
    .unwrap();
    let rows = s
        .hotspots()
        .await
        .expect("an unknown reason hides nothing else");
    assert_eq!(
        rows.iter().find(|r| r.bssid == "x").map(|r| r.last_failure),
        Some(None),
        "an unknown reason reads as none, never a panic"
    );
}

#[tokio::test]
async fn another_imei_behind_a_bssid_returns_the_one_recorded() {
    let (_d, s) = open();
    assert_eq!(
        s.hotspot_identified(A.into(), "111".into()).await.unwrap(),
        None
    );
    assert_eq!(
        s.hotspot_identified(A.into(), "111".into()).await.unwrap(),
        None
    );
    assert_eq!(
        s.hotspot_identified(A.into(), "222".into()).await.unwrap(),
        Some("111".into())
    );
    assert_eq!(row(&s, A).await.imei.as_deref(), Some("222"));
}

/// A clip of `imei` put straight into `state` (failed at `stage`), on the camera or not.
fn clip(s: &Store, imei: &str, state: ClipState, stage: Option<Stage>, on_camera: bool) {
    s.with(|c| {
        let n: i64 = c.query_row("SELECT COUNT(*) FROM clips", [], |r| r.get(0))?;
        c.execute(
            "INSERT INTO clips (imei, path, name, state, failed_stage, on_camera, first_seen, last_seen)
             VALUES (?1, ?2, 'x.mp4', ?3, ?4, ?5, 0, 0)",
            params![imei, format!("/v/{n}.mp4"), state, stage, on_camera],
        )?;
        Ok(())
    })
    .unwrap();
}

#[tokio::test]
async fn camera_work_counts_clips_to_download_and_verified_ones_on_the_camera() {
    let (_d, s) = open();
    for state in ClipState::ALL.into_iter().filter(|s| *s != Failed) {
        clip(&s, "1", state, None, true);
    }
    clip(&s, "1", Failed, Some(Stage::Download), true);
    clip(&s, "1", Failed, Some(Stage::Upload), true);
    clip(&s, "1", Verified, None, false);
    clip(&s, "2", Verified, None, true);
    clip(&s, "2", Verified, None, true);
    clip(&s, "3", Uploaded, None, true);
    let work = s.camera_work().await.unwrap();
    // seen, queued, downloading, failed at download; verified (still on the camera).
    assert_eq!(
        work.get("1"),
        Some(&CameraWork {
            to_download: 4,
            verified: 1
        })
    );
    assert_eq!(
        work.get("2"),
        Some(&CameraWork {
            to_download: 0,
            verified: 2
        })
    );
    assert_eq!(work.get("3"), None, "nothing for the camera to do");
    assert_eq!(work.len(), 2);
}

#[tokio::test]
async fn an_unknown_reason_reads_as_none_and_hides_nothing_else() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    let s = Store::open(&p).unwrap();
    s.hotspots_seen(vec![(A.into(), "t1".into(), 40)], 1)
        .await
        .unwrap();
    s.hotspot_failed(A.into(), JoinFailure::Timeout, "fp".into(), |_| 5000)
        .await
        .unwrap();
    // A newer build's reason, read after a downgrade.
    let c = rusqlite::Connection::open(&p).unwrap();
    c.execute(
        "UPDATE hotspots SET last_failure = 'from_the_future' WHERE bssid = ?1",
        params![A],
    )
    .unwrap();
    let a = row(&s, A).await;
    assert_eq!(
        (a.last_failure, a.failures, a.retry_at),
        (None, 1, Some(5000))
    );
}

#[tokio::test]
async fn a_version_10_database_gains_the_suspicious_mark_unset() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    {
        let mut c = rusqlite::Connection::open(&p).unwrap();
        c.pragma_update(None, "foreign_keys", "OFF").unwrap();
        for sql in &schema::MIGRATIONS[..10] {
            let tx = c.transaction().unwrap();
            tx.execute_batch(sql).unwrap();
            tx.commit().unwrap();
        }
        c.pragma_update(None, "user_version", 10).unwrap();
        c.execute(
            "INSERT INTO hotspots (bssid, ssid, failures, retry_at, last_failure)
                VALUES ('AA:AA:AA:AA:AA:01', 't1', 1, 1000, 'timeout')",
            [],
        )
        .unwrap();
    }
    let s = Store::open(&p).unwrap();
    let a = row(&s, A).await;
    assert_eq!(
        (a.failures, a.retry_at, a.last_failure, a.suspicious),
        (1, Some(1000), Some(JoinFailure::Timeout), None)
    );
}

#[tokio::test]
async fn a_suspicious_hotspot_waits_until_a_join_passes_or_its_credentials_change() {
    let (_d, s) = open();
    s.hotspot_failed(A.into(), JoinFailure::Suspicious, "fp".into(), |_| 5_000)
        .await
        .unwrap();
    s.hotspot_suspicious(A.into(), 5_000, "leased 0.0.0.0/1".into(), "fp1".into())
        .await
        .unwrap();
    let a = row(&s, A).await;
    assert_eq!(a.retry_at, Some(5_000));
    assert_eq!(a.last_failure, Some(JoinFailure::Suspicious));
    let mark = a.suspicious.expect("marked");
    assert_eq!(
        (mark.until, mark.reason.as_str(), mark.credentials.as_str()),
        (5_000, "leased 0.0.0.0/1", "fp1")
    );
    // The fingerprint is never shown.
    let shown = serde_json::to_string(&row(&s, A).await).unwrap();
    assert!(
        shown.contains("leased 0.0.0.0/1") && !shown.contains("fp1"),
        "{shown}"
    );
    // Other credentials: the mark and its wait are gone.
    s.hotspot_trusted_again(A.into()).await.unwrap();
    let a = row(&s, A).await;
    assert_eq!((a.suspicious, a.retry_at, a.failures), (None, None, 0));
    // A join that passes the check clears it too.
    s.hotspot_suspicious(B.into(), 9_000, "r".into(), "fp".into())
        .await
        .unwrap();
    s.hotspot_joined(B.into(), 10).await.unwrap();
    assert_eq!(row(&s, B).await.suspicious, None);
}

#[tokio::test]
async fn a_version_11_database_keeps_a_refusals_wait_with_no_refused_credentials() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        for sql in &schema::MIGRATIONS[..11] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", 11).unwrap();
        c.execute_batch(
            "INSERT INTO hotspots (bssid, ssid, failures, retry_at, last_failure,
                wrong_password_reported) VALUES ('AA:AA:AA:AA:AA:01', 't1', 1, 9000, 'wrong_password', 1);",
        )
        .unwrap();
    }
    let s = Store::open(&p).unwrap();
    let a = row(&s, A).await;
    assert_eq!(
        (
            a.failures,
            a.retry_at,
            a.wrong_password,
            a.refused_credentials
        ),
        (1, Some(9000), true, None)
    );
    // Nothing to compare with: the wait stands.
    s.hotspot_credentials_changed(A.into()).await.unwrap();
    assert_eq!(row(&s, A).await.retry_at, Some(9000));
}

#[tokio::test]
async fn other_credentials_clear_a_refusals_wait_but_not_a_suspicious_mark() {
    let (_d, s) = open();
    let fail = |reason: JoinFailure, fp: &str| {
        s.hotspot_failed(A.into(), reason, fp.into(), |before| {
            1000 + i64::from(before)
        })
    };
    fail(JoinFailure::WrongPassword, "old").await.unwrap();
    // Another failure keeps the credentials refused last.
    fail(JoinFailure::Timeout, "old").await.unwrap();
    let a = row(&s, A).await;
    assert_eq!(
        (a.failures, a.retry_at, a.refused_credentials.as_deref()),
        (2, Some(1001), Some("old"))
    );
    s.hotspot_credentials_changed(A.into()).await.unwrap();
    let a = row(&s, A).await;
    assert_eq!(
        (a.failures, a.retry_at, a.last_failure, a.wrong_password),
        (0, None, None, false),
        "tried at once, and a refusal of the new credentials is news"
    );
    assert_eq!(a.refused_credentials, None);
    let f = fail(JoinFailure::WrongPassword, "new").await.unwrap();
    assert!(f.first_wrong_password);
    // A join clears the refused credentials.
    s.hotspot_joined(A.into(), 5).await.unwrap();
    assert_eq!(row(&s, A).await.refused_credentials, None);
    // A suspicious mark keeps its own wait.
    fail(JoinFailure::WrongPassword, "x").await.unwrap();
    s.hotspot_suspicious(A.into(), 7777, "wide".into(), "y".into())
        .await
        .unwrap();
    s.hotspot_credentials_changed(A.into()).await.unwrap();
    let a = row(&s, A).await;
    assert_eq!(
        (a.retry_at, a.suspicious.map(|s| s.until)),
        (Some(7777), Some(7777))
    );
}
