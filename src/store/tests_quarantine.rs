//! The store's tests of clips from the spool quarantine (origin `spool`): how a quarantined
//! file becomes a clip, that such a clip never allows a delete from a camera whatever a
//! listing shows, and the v7 → v8 migration that added `origin`.

use std::collections::HashSet;

use rusqlite::params;

use super::state::ClipState::{self, Deleted, Lost};
use super::*;

const IMEI: &str = "867867432522518";
const NAME: &str = "20210101_000012_01_1.mp4";
const DATE: i64 = 1_609_459_212_000;

fn open() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&d.path().join("state.db")).unwrap();
    (d, s)
}

/// The quarantined file `file` of 100 bytes with SHA-256 `sha`.
fn quarantined(file: &str, sha: &str) -> Quarantined {
    Quarantined {
        imei: IMEI.into(),
        path: format!("quarantine/{IMEI}/{file}"),
        name: NAME.into(),
        size: 100,
        date_ms: Some(DATE),
        sha256: sha.into(),
        event: "01".into(),
        camera: 1,
        recorded_at: "2021-01-01 00:00:12".into(),
        priority: 0,
    }
}

fn entry(path: &str, size: u64, date_ms: Option<i64>) -> Listed {
    Listed {
        path: path.into(),
        name: NAME.into(),
        size,
        event: "01".into(),
        camera: 1,
        recorded_at: "2021-01-01 00:00:12".into(),
        priority: 0,
        skip: None,
        refuse: None,
        size_unknown: false,
        too_recent: false,
        date_ms,
    }
}

async fn list(s: &Store, e: Listed) {
    let finished: HashSet<String> = [e.path.clone()].into();
    s.reconcile_page(IMEI, vec![e], finished).await.unwrap();
}

async fn new_clip(s: &Store, q: Quarantined) -> i64 {
    match s.take_in_quarantined(q).await.unwrap() {
        TakenIn::New(id) => id,
        other => panic!("not taken in: {other:?}"),
    }
}

#[tokio::test]
async fn a_quarantined_file_becomes_a_downloaded_clip_from_the_spool_once() {
    let (_d, s) = open();
    let file = format!("{NAME}~3-100-{DATE}");
    let id = new_clip(&s, quarantined(&file, "aa")).await;
    let c = s.clip(id).await.unwrap();
    assert_eq!((c.state, c.origin), (ClipState::Downloaded, Origin::Spool));
    assert_eq!((c.size, c.date_ms), (100, Some(DATE)));
    assert_eq!(c.sha256.as_deref(), Some("aa"));
    assert!(
        !c.hashed_key,
        "the plain key first, as the generation rules say"
    );
    assert_eq!(
        s.next_uploads(vec![], 10).await.unwrap()[0].id,
        id,
        "the uploader's"
    );
    // While it has work left, the same file is not taken in twice.
    let again = s.take_in_quarantined(quarantined(&file, "aa")).await;
    assert_eq!(again.unwrap(), TakenIn::Working);
    // Offloaded: the same bytes are done (the file may go); other bytes under the name
    // are a new generation of that path.
    assert!(s.start_upload(id).await.unwrap());
    let sent = SentRow::default();
    assert!(s.uploaded(id, "k".into(), None, sent).await.unwrap());
    assert_eq!(s.verified(id, None).await.unwrap(), Verified::LeftCamera);
    let done = s.clip(id).await.unwrap();
    assert_eq!(done.state, Deleted);
    assert!(done.reason.unwrap().contains("spool quarantine"));
    let again = s.take_in_quarantined(quarantined(&file, "aa")).await;
    assert_eq!(again.unwrap(), TakenIn::Offloaded);
    let other = new_clip(&s, quarantined(&file, "bb")).await;
    assert_eq!(s.clip(other).await.unwrap().generation, 1);
}

#[tokio::test]
async fn a_clip_from_the_quarantine_never_allows_a_delete_from_a_camera() {
    let (_d, s) = open();
    let file = format!("{NAME}~3-100-{DATE}");
    let id = new_clip(&s, quarantined(&file, "aa")).await;
    let path = s.clip(id).await.unwrap().path;
    // A listing shows its very path, with its size and date (a hostile camera could).
    let since = now_ms();
    list(&s, entry(&path, 100, Some(DATE))).await;
    assert!(s.deletable(IMEI, since).await.unwrap().is_empty());
    assert!(
        s.next_downloads(IMEI, 10).await.unwrap().is_empty(),
        "its copy was the one: never downloaded"
    );
    // Verified while a listing shows it: still nothing left to delete.
    assert!(s.start_upload(id).await.unwrap());
    let sent = SentRow::default();
    assert!(s.uploaded(id, "k".into(), None, sent).await.unwrap());
    assert_eq!(s.verified(id, None).await.unwrap(), Verified::LeftCamera);
    assert_eq!(s.clip(id).await.unwrap().state, Deleted);
    // Even forced to `verified` and listed as verified, it is never deletable, and the
    // camera's delete is never recorded for it.
    s.with(|c| {
        Ok(c.execute(
            "UPDATE clips SET state = 'verified', on_camera = 1 WHERE id = ?1",
            params![id],
        )?)
    })
    .unwrap();
    list(&s, entry(&path, 100, Some(DATE))).await;
    assert!(s.deletable(IMEI, since).await.unwrap().is_empty());
    assert_eq!(s.deleted(vec![id]).await.unwrap(), 0);
    // Its spool copy gone: lost, never queued for a download from a camera.
    let file = format!("{NAME}~4-100-{DATE}");
    let gone = new_clip(&s, quarantined(&file, "cc")).await;
    list(
        &s,
        entry(&format!("quarantine/{IMEI}/{file}"), 100, Some(DATE)),
    )
    .await;
    assert!(s.requeue_for_download(gone).await.unwrap());
    assert_eq!(s.clip(gone).await.unwrap().state, Lost);
}

#[tokio::test]
async fn a_clip_from_the_quarantine_leaves_a_camera_clip_of_its_name_its_plain_key() {
    let (_d, s) = open();
    new_clip(&s, quarantined(&format!("{NAME}~3-100-{DATE}"), "aa")).await;
    let camera_path = format!("/sdcard/DCIM/{NAME}");
    list(&s, entry(&camera_path, 100, Some(DATE))).await;
    let listed: Vec<Clip> = s
        .clips_of(IMEI)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.path == camera_path)
        .collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].origin, Origin::Camera);
    assert!(
        !listed[0].hashed_key,
        "the same bytes at the plain key are found there; other bytes send the later upload to its hashed key"
    );
}

#[test]
fn a_version_7_database_gains_the_origin_column() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        for sql in &schema::MIGRATIONS[..7] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", 7).unwrap();
        c.execute(
            "INSERT INTO clips (imei, path, name, state, first_seen, last_seen)
                VALUES ('1', '/a.mp4', 'a.mp4', 'downloaded', 0, 0)",
            [],
        )
        .unwrap();
    }
    let s = Store::open(&p).unwrap();
    let origin: Option<String> = s
        .with(|c| Ok(c.query_row("SELECT origin FROM clips", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(origin, None, "every earlier clip came from a camera");
    let c = s
        .with(|c| Ok(c.query_row(&format!("SELECT {CLIP_COLS} FROM clips"), [], clip_from_row)?))
        .unwrap();
    assert_eq!(c.origin, Origin::Camera);
}
