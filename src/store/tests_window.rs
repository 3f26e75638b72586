//! The store's tests of windowed listings: the migration that brings them, what a window
//! writes (nothing when nothing changed), and which pages bring nothing to act on.

use std::collections::HashSet;

use super::state::ClipState;
use super::*;

fn open() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&d.path().join("state.db")).unwrap();
    (d, s)
}

/// An event clip of camera 1, listed with `size` and a `date`.
fn listed(path: &str, size: u64) -> Listed {
    Listed {
        path: path.into(),
        name: path.rsplit('/').next().unwrap_or(path).into(),
        size,
        event: "04".into(),
        camera: 1,
        recorded_at: "2021-04-27 11:51:34".into(),
        priority: 0,
        skip: None,
        refuse: None,
        size_unknown: false,
        too_recent: false,
        date_ms: Some(1_619_524_294_000),
    }
}

#[test]
fn a_version_14_database_gains_listing_windows_and_keeps_its_clips() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        for sql in &schema::MIGRATIONS[..14] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", 14).unwrap();
        c.execute(
            "INSERT INTO clips (imei, path, name, state, recorded_at, first_seen, last_seen)
                VALUES ('1', '/a.mp4', 'a.mp4', 'verified', '2021-04-27 11:51:34', 0, 0)",
            [],
        )
        .unwrap();
    }
    let s = Store::open(&p).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        // No row: the next listing of the camera is a full one.
        assert_eq!(s.listing_window("1").await.unwrap(), None);
        let since = s.on_camera_since("1", "2021-04-27 00:00:00").await.unwrap();
        assert_eq!(since, vec![("/a.mp4".into(), String::new(), 0)]);
        s.listed_in_full("1", Some("2021-04-27 11:51:34".into()), Some(0), "events")
            .await
            .unwrap();
        let w = s.listing_window("1").await.unwrap().unwrap();
        assert_eq!(w.high_water.as_deref(), Some("2021-04-27 11:51:34"));
        assert!(w.full_listed_at.is_some() && w.broken.is_none() && !w.overreach);
    });
}

#[tokio::test]
async fn a_window_that_changed_nothing_writes_nothing() {
    let (_d, s) = open();
    let high = Some("2021-04-27 11:51:34".to_string());
    s.listed_in_full("1", high.clone(), None, "events")
        .await
        .unwrap();
    let changed = |s: &Store| s.with(|c| Ok(c.changes())).unwrap();
    s.window_listed("1", high.clone(), false).await.unwrap();
    assert_eq!(changed(&s), 0, "same high-water mark, no overreach");
    s.window_listed("1", Some("2021-04-28 00:00:00".into()), false)
        .await
        .unwrap();
    assert_eq!(changed(&s), 1);
    s.window_listed("1", Some("2021-04-28 00:00:00".into()), true)
        .await
        .unwrap();
    assert!(s.listing_window("1").await.unwrap().unwrap().overreach);
    s.window_broken("1", "missed").await.unwrap();
    let w = s.listing_window("1").await.unwrap().unwrap();
    assert_eq!(w.broken.as_deref(), Some("missed"));
    assert_eq!(w.high_water.as_deref(), Some("2021-04-28 00:00:00"));
}

#[tokio::test]
async fn a_page_brings_something_to_act_on_until_its_clips_are_settled() {
    let (_d, s) = open();
    let settled = |page: Vec<Listed>| s.page_is_settled("1", page);
    let a = listed("/v/a.mp4", 100);
    assert!(!settled(vec![a.clone()]).await.unwrap(), "a new clip");
    s.reconcile_page("1", vec![a.clone()], HashSet::new())
        .await
        .unwrap();
    assert!(
        !settled(vec![a.clone()]).await.unwrap(),
        "seen: a listing brings it closer to stable"
    );
    s.reconcile_page("1", vec![a.clone()], HashSet::new())
        .await
        .unwrap();
    let clips = s.clips_of("1").await.unwrap();
    assert_eq!(clips[0].state, ClipState::Queued);
    assert!(
        settled(vec![a.clone()]).await.unwrap(),
        "queued, listed alike"
    );
    assert!(settled(Vec::new()).await.unwrap());
    let grown = listed("/v/a.mp4", 200);
    assert!(!settled(vec![grown]).await.unwrap(), "another size");
    let moved = Listed {
        date_ms: Some(0),
        ..a.clone()
    };
    assert!(!settled(vec![moved]).await.unwrap(), "another date");
    let unselected = Listed {
        skip: Some("not wanted".into()),
        ..a.clone()
    };
    assert!(
        !settled(vec![unselected]).await.unwrap(),
        "the selection changed"
    );
    let sizeless = Listed {
        size_unknown: true,
        ..a.clone()
    };
    assert!(!settled(vec![sizeless]).await.unwrap());
    assert!(
        !settled(vec![a.clone(), listed("/v/b.mp4", 1)])
            .await
            .unwrap(),
        "one new clip is enough"
    );
}
