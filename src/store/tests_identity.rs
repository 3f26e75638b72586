//! The store's tests of clip identity: generations of a path, hashed keys for the same name
//! at two paths, what retention may delete after a listing, and the v3 → v4 migration.

use std::collections::HashSet;

use rusqlite::params;

use super::state::ClipState::{self, *};
use super::*;

const IMEI: &str = "867867432522518";

fn open() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&d.path().join("state.db")).unwrap();
    (d, s)
}

fn entry(path: &str, size: u64, date_ms: Option<i64>) -> Listed {
    Listed {
        path: path.into(),
        name: path.rsplit('/').next().unwrap().to_string(),
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

async fn list(s: &Store, e: Listed) -> Reconciled {
    let finished: HashSet<String> = [e.path.clone()].into();
    s.reconcile_page(IMEI, vec![e], finished).await.unwrap()
}

/// Every row at `path`, oldest generation first.
async fn rows(s: &Store, path: &str) -> Vec<Clip> {
    let mut v: Vec<Clip> = s
        .clips_of(IMEI)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.path == path)
        .collect();
    v.sort_by_key(|c| c.generation);
    v
}

/// Puts clip `id` into `state` with its bytes hashed, as if it got there.
fn force(s: &Store, id: i64, state: ClipState) {
    s.with(|c| {
        c.execute(
            "UPDATE clips SET state = ?2, sha256 = 'ab', failed_stage = NULL WHERE id = ?1",
            params![id, state],
        )?;
        Ok(())
    })
    .unwrap();
}

const P: &str = "/mnt/sdcard/DCIM/20210101_000012_01_1.mp4";

#[tokio::test]
async fn a_path_listed_again_after_its_clip_was_deleted_is_a_new_generation() {
    let (_d, s) = open();
    assert_eq!(list(&s, entry(P, 10, Some(1))).await.new, 1);
    let first = rows(&s, P).await[0].clone();
    assert!(!first.hashed_key, "the first generation keeps today's key");
    force(&s, first.id, Verified);
    assert_eq!(s.deleted(vec![first.id]).await.unwrap(), 1);
    // The camera's clock reset: the same name again, even with the same size and date.
    assert_eq!(list(&s, entry(P, 10, Some(1))).await.new, 1);
    let r = rows(&s, P).await;
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].state, r[0].generation), (Deleted, 0));
    assert_eq!((r[1].state, r[1].generation), (Queued, 1));
    assert!(r[1].hashed_key);
    // Listed once more: the same (new) clip, no third generation.
    assert_eq!(list(&s, entry(P, 10, Some(1))).await.new, 0);
    assert_eq!(rows(&s, P).await.len(), 2);
}

#[tokio::test]
async fn another_size_or_date_after_the_download_is_a_new_generation() {
    for (state, size, date) in [
        (ClipState::Downloaded, 11, Some(1)),
        (Uploading, 10, Some(2)),
        (ClipState::Uploaded, 11, Some(1)),
        (Verified, 11, Some(1)),
        (Retained, 10, Some(2)),
    ] {
        let (_d, s) = open();
        list(&s, entry(P, 10, Some(1))).await;
        let old = rows(&s, P).await[0].id;
        force(&s, old, state);
        // Unchanged: the same clip.
        assert_eq!(list(&s, entry(P, 10, Some(1))).await.new, 0, "{state:?}");
        assert_eq!(list(&s, entry(P, size, date)).await.new, 1, "{state:?}");
        let r = rows(&s, P).await;
        assert_eq!(r.len(), 2, "{state:?}");
        let expected = if state == Verified { Deleted } else { state };
        assert_eq!(
            r[0].state, expected,
            "{state:?}: the old one keeps its history"
        );
        assert_eq!(r[0].size, 10, "{state:?}");
        assert_eq!((r[1].size, r[1].date_ms), (size, date), "{state:?}");
        // Nothing is ever deleted from the camera for the old one.
        let deletable = s.deletable(IMEI, 0).await.unwrap();
        assert!(deletable.iter().all(|c| c.id != old), "{state:?}");
    }
}

#[tokio::test]
async fn before_the_download_a_change_waits_and_drops_a_partial_file() {
    let (_d, s) = open();
    list(&s, entry(P, 10, Some(1))).await;
    let id = rows(&s, P).await[0].id;
    assert!(s.start_download(id).await.unwrap());
    let out = list(&s, entry(P, 12, Some(1))).await;
    assert_eq!(out.new, 0);
    assert_eq!(
        out.stale_parts.len(),
        1,
        "the partial download is of other bytes"
    );
    let r = rows(&s, P).await;
    assert_eq!((r.len(), r[0].state, r[0].size), (1, Seen, 12));
    // A date change alone also means other bytes.
    list(&s, entry(P, 12, Some(1))).await;
    assert_eq!(rows(&s, P).await[0].state, Queued);
    list(&s, entry(P, 12, Some(5))).await;
    assert_eq!(rows(&s, P).await[0].state, Seen);
}

#[tokio::test]
async fn lost_for_sure_or_retained_then_gone_then_listed_is_a_new_generation() {
    let (_d, s) = open();
    list(&s, entry(P, 10, Some(1))).await;
    let id = rows(&s, P).await[0].id;
    s.mark_missing(IMEI, HashSet::new()).await.unwrap();
    // Unchecked (a listing glitch?): the same row comes back.
    list(&s, entry(P, 10, Some(1))).await;
    assert_eq!(rows(&s, P).await.len(), 1);
    s.mark_missing(IMEI, HashSet::new()).await.unwrap();
    assert!(s.lost_confirmed(id).await.unwrap());
    list(&s, entry(P, 10, Some(1))).await;
    assert_eq!(rows(&s, P).await.len(), 2);

    let q = "/mnt/sdcard/DCIM/20210101_000013_01_1.mp4";
    list(&s, entry(q, 10, Some(1))).await;
    let id = rows(&s, q).await[0].id;
    force(&s, id, Retained);
    s.mark_missing(IMEI, [P.to_string()].into()).await.unwrap();
    list(&s, entry(q, 10, Some(1))).await;
    let r = rows(&s, q).await;
    assert_eq!((r.len(), r[0].state), (2, Retained));
}

#[tokio::test]
async fn the_same_name_at_another_path_gets_a_hashed_key() {
    let (_d, s) = open();
    let other = "/mnt/sdcard2/DCIM/20210101_000012_01_1.mp4";
    let out = s
        .reconcile_page(
            IMEI,
            vec![entry(P, 10, Some(1)), entry(other, 20, Some(1))],
            HashSet::new(),
        )
        .await
        .unwrap();
    assert_eq!(out.new, 2);
    assert!(!rows(&s, P).await[0].hashed_key);
    assert!(rows(&s, other).await[0].hashed_key);
}

#[tokio::test]
async fn retention_needs_a_listing_with_the_verified_size_and_date() {
    let (_d, s) = open();
    let before = now_ms();
    list(&s, entry(P, 10, Some(1))).await;
    let id = rows(&s, P).await[0].id;
    force(&s, id, Verified);
    assert_eq!(s.deletable(IMEI, before).await.unwrap().len(), 1);
    // Not listed since: not deletable.
    assert!(s.deletable(IMEI, now_ms() + 1).await.unwrap().is_empty());
    // Listed with another date: a new generation, and the old one is never deleted.
    list(&s, entry(P, 10, Some(9))).await;
    assert!(s.deletable(IMEI, before).await.unwrap().is_empty());
    // A row whose listed size or date disagrees with its own is not offered either.
    let q = "/mnt/sdcard/DCIM/20210101_000013_01_1.mp4";
    list(&s, entry(q, 10, Some(1))).await;
    let id = rows(&s, q).await[0].id;
    force(&s, id, Retained);
    s.with(|c| Ok(c.execute("UPDATE clips SET listed_size = 11 WHERE id = ?1", [id])?))
        .unwrap();
    assert!(s.deletable(IMEI, before).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_old_generation_whose_spool_copy_is_gone_is_lost_not_queued() {
    let (_d, s) = open();
    list(&s, entry(P, 10, Some(1))).await;
    let id = rows(&s, P).await[0].id;
    force(&s, id, ClipState::Downloaded);
    list(&s, entry(P, 11, Some(1))).await;
    assert!(s.requeue_for_download(id).await.unwrap());
    assert_eq!(s.clip(id).await.unwrap().state, Lost);
}

/// A schema-3 database at `p` with three clips (two of the same name) and a journaled part.
fn v3_database(p: &std::path::Path) {
    {
        let c = rusqlite::Connection::open(p).unwrap();
        for sql in &schema::MIGRATIONS[..3] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", 3).unwrap();
        for (path, state) in [
            ("/a/x.mp4", "uploading"),
            ("/b/x.mp4", "queued"),
            ("/a/y.mp4", "verified"),
        ] {
            c.execute(
                "INSERT INTO clips (imei, path, name, size, state, first_seen, last_seen, sent_md5)
                    VALUES ('1', ?1, ?2, 5, ?3, 0, 0, 'm')",
                params![path, path.rsplit('/').next().unwrap(), state],
            )
            .unwrap();
        }
        c.execute(
            "INSERT INTO parts (clip_id, number, etag, sha256, size, md5) VALUES (1, 1, 'e', 'h', 5, 'm')",
            [],
        )
        .unwrap();
        let dup = c.execute(
            "INSERT INTO clips (imei, path, name, state, first_seen, last_seen)
                VALUES ('1', '/a/x.mp4', 'x.mp4', 'seen', 0, 0)",
            [],
        );
        assert!(dup.is_err(), "v3: one row per path");
    }
}

#[test]
fn a_version_3_database_keeps_its_clips_as_generation_0() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    v3_database(&p);
    let s = Store::open(&p).unwrap();
    let got: Vec<(i64, String, String, i64, bool, Option<String>)> = s
        .with(|c| {
            let mut st = c.prepare(
                "SELECT id, path, state, generation, hashed_key, sent_md5 FROM clips ORDER BY id",
            )?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .unwrap();
    let m = || Some("m".to_string());
    assert_eq!(
        got,
        vec![
            (1, "/a/x.mp4".into(), "uploading".into(), 0, false, m()),
            // The same name at a second path, not yet on its way: its key is hashed.
            (2, "/b/x.mp4".into(), "queued".into(), 0, true, m()),
            (3, "/a/y.mp4".into(), "verified".into(), 0, false, m()),
        ]
    );
    let parts: i64 = s
        .with(|c| Ok(c.query_row("SELECT COUNT(*) FROM parts", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(parts, 1, "the multipart journal survives the rebuild");
    let insert = |generation: i64| {
        s.with(move |c| {
            Ok(c.execute(
                "INSERT INTO clips (imei, path, name, state, first_seen, last_seen, generation)
                    VALUES ('1', '/a/x.mp4', 'x.mp4', 'seen', 0, 0, ?1)",
                [generation],
            )?)
        })
    };
    assert!(insert(0).is_err(), "(imei, path, generation) is unique");
    assert!(insert(1).is_ok(), "a new generation of the path");
    let fk: bool = s
        .with(|c| Ok(c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?))
        .unwrap();
    assert!(fk, "foreign keys are on again");
}

#[tokio::test]
async fn a_clip_verified_under_schema_3_never_takes_a_listed_date_and_is_kept() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    v3_database(&p);
    let s = Store::open(&p).unwrap();
    // Rewritten at the same size before the upgrade: the listing shows a date the verified
    // bytes may not have.
    let page = vec![
        entry("/a/y.mp4", 5, Some(7)),
        entry("/b/x.mp4", 5, Some(8)),
        entry("/a/x.mp4", 5, Some(9)),
    ];
    let all: HashSet<String> = page.iter().map(|l| l.path.clone()).collect();
    s.reconcile_page("1", page, all).await.unwrap();
    let by_path = |p: &'static str| {
        let s = &s;
        async move {
            let v = s.clips_of("1").await.unwrap();
            v.into_iter().find(|c| c.path == p).unwrap()
        }
    };
    let verified = by_path("/a/y.mp4").await;
    assert_eq!(verified.date_ms, None, "past its download: no date adopted");
    assert_eq!(verified.state, Retained, "kept on the camera");
    assert_eq!(verified.reason.as_deref(), Some(listing::UNDATED));
    assert_eq!(
        by_path("/a/x.mp4").await.date_ms,
        None,
        "uploading: none either"
    );
    assert_eq!(
        by_path("/b/x.mp4").await.date_ms,
        Some(8),
        "queued: takes it"
    );
    assert!(s.deletable("1", 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_verified_clip_without_a_date_is_not_deletable_by_a_dated_listing() {
    let (_d, s) = open();
    let before = now_ms();
    list(&s, entry(P, 10, Some(1))).await;
    let id = rows(&s, P).await[0].id;
    force(&s, id, Verified);
    s.with(|c| Ok(c.execute("UPDATE clips SET date_ms = NULL WHERE id = ?1", [id])?))
        .unwrap();
    list(&s, entry(P, 10, Some(1))).await;
    assert!(s.deletable(IMEI, before).await.unwrap().is_empty());
    assert_eq!(s.clip(id).await.unwrap().date_ms, None);
    // A camera that lists no dates at all: the size is all there is to compare.
    let q = "/mnt/sdcard/DCIM/20210101_000013_01_1.mp4";
    list(&s, entry(q, 10, None)).await;
    let id = rows(&s, q).await[0].id;
    force(&s, id, Verified);
    list(&s, entry(q, 10, None)).await;
    let ids: Vec<i64> = s
        .deletable(IMEI, before)
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, [id]);
}

#[tokio::test]
async fn only_an_uploading_clip_with_a_plain_key_and_a_hash_moves_to_its_hashed_key() {
    let (_d, s) = open();
    list(&s, entry(P, 10, Some(1))).await;
    let id = rows(&s, P).await[0].id;
    assert!(!s.use_hashed_key(id).await.unwrap(), "queued: not yet");
    force(&s, id, Uploading);
    s.begin_multipart(id, "up-1".into(), 5).await.unwrap();
    assert!(s.use_hashed_key(id).await.unwrap());
    let c = s.clip(id).await.unwrap();
    assert_eq!(
        (c.state, c.hashed_key, c.upload_id),
        (Uploading, true, None)
    );
    assert!(s.multipart(id).await.unwrap().is_none(), "journal cleared");
    assert!(!s.use_hashed_key(id).await.unwrap(), "already hashed");
}
