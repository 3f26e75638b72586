//! The store's tests: every allowed transition (state before → method → state after), every
//! disallowed one refused, the SQL groups against the Rust groups, and the listing.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use rusqlite::params;

use super::state::ClipState::{self, *};
use super::*;
use crate::blocks::BlockDigests;

fn listed(path: &str, size: u64) -> Listed {
    let name = path.rsplit('/').next().unwrap().to_string();
    Listed {
        path: path.into(),
        name,
        size,
        event: "04".into(),
        camera: 1,
        recorded_at: "2021-04-27 11:51:34".into(),
        priority: 0,
        skip: None,
        refuse: None,
        size_unknown: false,
        too_recent: false,
        date_ms: None,
    }
}

fn open() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&d.path().join("state.db")).unwrap();
    (d, s)
}

/// A clip of camera "1" put straight into `state` (failed at `stage`), due for a retry.
fn clip_in(s: &Store, state: ClipState, stage: Option<Stage>) -> i64 {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = format!("/v/{}.mp4", N.fetch_add(1, Ordering::Relaxed));
    s.with(|c| {
        c.execute(
            "INSERT INTO clips (imei, path, name, size, state, failed_stage, retry_after,
                first_seen, last_seen, listed_size, listed_at)
             VALUES ('1', ?1, 'x.mp4', 7, ?2, ?3, 0, 0, 0, 7, 0)",
            params![path, state, stage],
        )?;
        Ok(c.last_insert_rowid())
    })
    .unwrap()
}

/// Clip `id` with block digests recorded (one block of 7 bytes), as every clip downloaded
/// since schema 9 has.
fn digested(s: &Store, id: i64) -> i64 {
    s.with(|c| {
        let blob = vec![0u8; 32];
        c.execute(
            "UPDATE clips SET blocks = ?2 WHERE id = ?1",
            params![id, blob],
        )?;
        Ok(())
    })
    .unwrap();
    id
}

/// Where a clip is: its state, and the stage a `failed` clip failed at.
type Pos = (ClipState, Option<Stage>);

/// Every place a clip can be: each state, with `failed` at either stage.
fn positions() -> Vec<Pos> {
    let mut v: Vec<_> = ClipState::ALL
        .into_iter()
        .filter(|s| *s != Failed)
        .map(|s| (s, None))
        .collect();
    v.push((Failed, Some(Stage::Download)));
    v.push((Failed, Some(Stage::Upload)));
    v
}

const FD: Pos = (Failed, Some(Stage::Download));
const FU: Pos = (Failed, Some(Stage::Upload));
const fn at(s: ClipState) -> Pos {
    (s, None)
}

#[derive(Debug, Clone, Copy)]
enum Op {
    StartDownload,
    Downloaded,
    FailedDownload,
    StartUpload,
    RequeueForDownload,
    Uploaded,
    DownloadedAndUploaded,
    FailedUpload,
    Verified,
    VerifyPostponed,
    Retained,
    Deleted,
    RequeueMissingObject,
    Refuse,
    FoundElsewhere,
    DownloadDiscarded,
    ChangedOnCamera,
}

async fn apply(s: &Store, id: i64, op: Op) -> bool {
    let r = match op {
        Op::StartDownload => s.start_download(id).await,
        Op::Downloaded => s.downloaded(id, "00".into(), BlockDigests::default()).await,
        Op::FailedDownload => s.failed(id, Stage::Download, "x".into(), 0).await,
        Op::StartUpload => s.start_upload(id).await,
        Op::RequeueForDownload => s.requeue_for_download(id).await,
        Op::Uploaded => s.uploaded(id, "k".into(), None, SentRow::default()).await,
        Op::DownloadedAndUploaded => {
            let sent = SentRow::default();
            s.downloaded_and_uploaded(
                id,
                ("00".into(), BlockDigests::default()),
                "k".into(),
                None,
                sent,
            )
            .await
        }
        Op::FailedUpload => s.failed(id, Stage::Upload, "x".into(), 0).await,
        Op::Verified => s
            .verified(id, None)
            .await
            .map(|v| v != super::Verified::NotApplied),
        Op::VerifyPostponed => s.verify_postponed(id, "x".into()).await,
        Op::Retained => s.retained(vec![id]).await.map(|n| n == 1),
        Op::Deleted => s.deleted(vec![id]).await.map(|n| n == 1),
        Op::RequeueMissingObject => s.requeue_missing_object(id).await,
        Op::Refuse => s.refuse(id, "x".into()).await,
        Op::FoundElsewhere => s.found_elsewhere(id).await,
        Op::DownloadDiscarded => s.download_discarded(id).await,
        Op::ChangedOnCamera => s.changed_on_camera(id, Changed::Bytes).await,
    };
    r.unwrap()
}

/// The transition table (as in the module doc and `docs/clip-lifecycle.md`), written out
/// independently of the guards in the code: (method, from, to).
fn table() -> Vec<(Op, Vec<Pos>, ClipState)> {
    vec![
        (
            Op::StartDownload,
            vec![at(Queued), at(Downloading), FD],
            Downloading,
        ),
        (Op::Downloaded, vec![at(Downloading)], ClipState::Downloaded),
        (Op::FailedDownload, vec![at(Downloading)], Failed),
        (
            Op::StartUpload,
            vec![at(ClipState::Downloaded), at(Uploading), FU],
            Uploading,
        ),
        (
            Op::RequeueForDownload,
            vec![at(ClipState::Downloaded), at(Uploading), FU],
            Queued,
        ),
        (Op::Uploaded, vec![at(Uploading)], ClipState::Uploaded),
        (
            Op::DownloadedAndUploaded,
            vec![at(Downloading)],
            ClipState::Uploaded,
        ),
        (
            Op::FailedUpload,
            vec![at(Uploading), at(ClipState::Uploaded)],
            Failed,
        ),
        (
            Op::Verified,
            vec![at(ClipState::Uploaded)],
            ClipState::Verified,
        ),
        (
            Op::VerifyPostponed,
            vec![at(ClipState::Uploaded)],
            ClipState::Uploaded,
        ),
        (Op::Retained, vec![at(ClipState::Verified)], Retained),
        (
            Op::Deleted,
            vec![at(ClipState::Verified), at(Retained)],
            Deleted,
        ),
        (
            Op::RequeueMissingObject,
            vec![at(ClipState::Verified), at(Retained)],
            Queued,
        ),
        (
            Op::Refuse,
            vec![
                at(Seen),
                at(Queued),
                at(Downloading),
                at(ClipState::Downloaded),
                at(Uploading),
                at(ClipState::Uploaded),
                FD,
                FU,
            ],
            Refused,
        ),
        (Op::FoundElsewhere, vec![at(Lost)], Elsewhere),
        (Op::DownloadDiscarded, vec![at(Downloading)], Queued),
        (
            Op::ChangedOnCamera,
            vec![at(ClipState::Verified), at(Retained)],
            Deleted,
        ),
    ]
}

#[tokio::test]
async fn every_allowed_transition_applies_and_every_other_is_refused() {
    let (_d, s) = open();
    for (op, from, to) in table() {
        for pos in positions() {
            let id = clip_in(&s, pos.0, pos.1);
            let allowed = from.contains(&pos);
            assert_eq!(apply(&s, id, op).await, allowed, "{op:?} from {pos:?}");
            let after = s.clip(id).await.unwrap().state;
            let expected = if allowed { to } else { pos.0 };
            assert_eq!(after, expected, "{op:?} from {pos:?}");
        }
    }
}

#[tokio::test]
async fn disallowed_transitions_are_refused() {
    let (_d, s) = open();
    let queued = clip_in(&s, Queued, None);
    assert_eq!(s.deleted(vec![queued]).await.unwrap(), 0);
    assert_eq!(s.clip(queued).await.unwrap().state, Queued);
    let verified = clip_in(&s, ClipState::Verified, None);
    assert!(
        !s.downloaded(verified, "00".into(), BlockDigests::default())
            .await
            .unwrap()
    );
    assert!(!s.refuse(verified, "no".into()).await.unwrap());
    assert_eq!(s.clip(verified).await.unwrap().state, ClipState::Verified);
}

#[tokio::test]
async fn verified_when_already_off_the_camera_is_deleted() {
    let (_d, s) = open();
    let on = clip_in(&s, ClipState::Uploaded, None);
    let off = clip_in(&s, ClipState::Uploaded, None);
    s.with(|c| Ok(c.execute("UPDATE clips SET on_camera = 0 WHERE id = ?1", [off])?))
        .unwrap();
    assert_eq!(
        s.verified(on, None).await.unwrap(),
        super::Verified::StillOnCamera
    );
    assert_eq!(
        s.verified(off, None).await.unwrap(),
        super::Verified::LeftCamera
    );
    assert_eq!(s.clip(on).await.unwrap().state, ClipState::Verified);
    assert_eq!(s.clip(off).await.unwrap().state, Deleted);
    assert_eq!(
        s.verified(on, None).await.unwrap(),
        super::Verified::NotApplied
    );
}

#[tokio::test]
async fn mark_missing_follows_the_table() {
    let (_d, s) = open();
    let ids: Vec<_> = positions()
        .into_iter()
        .map(|p| (p, clip_in(&s, p.0, p.1)))
        .collect();
    let lost = s.mark_missing("1", HashSet::new()).await.unwrap();
    for (pos, id) in ids {
        let after = s.clip(id).await.unwrap().state;
        let expected = if [at(Seen), at(Queued), at(Downloading), FD].contains(&pos) {
            assert!(lost.iter().any(|c| c.id == id), "{pos:?}");
            Lost
        } else if pos == at(ClipState::Verified) {
            Deleted
        } else {
            pos.0
        };
        assert_eq!(after, expected, "{pos:?}");
    }
}

#[tokio::test]
async fn lost_clips_are_checked_once_then_confirmed_or_elsewhere() {
    let (_d, s) = open();
    let stable: HashSet<String> = ["/w/a.mp4".to_string(), "/w/b.mp4".to_string()].into();
    s.reconcile_page(
        "2",
        vec![listed("/w/a.mp4", 1), listed("/w/b.mp4", 1)],
        stable,
    )
    .await
    .unwrap();
    s.mark_missing("2", HashSet::new()).await.unwrap();
    let unchecked = s.lost_unchecked("2").await.unwrap();
    assert_eq!(unchecked.len(), 2);
    assert!(s.lost_confirmed(unchecked[0].id).await.unwrap());
    assert!(
        !s.lost_confirmed(unchecked[0].id).await.unwrap(),
        "only once"
    );
    assert!(s.found_elsewhere(unchecked[1].id).await.unwrap());
    assert!(s.lost_unchecked("2").await.unwrap().is_empty());
    assert_eq!(s.clip(unchecked[1].id).await.unwrap().state, Elsewhere);
}

#[tokio::test]
async fn listing_transitions() {
    let (_d, s) = open();
    let none = HashSet::new();
    let state_of = |path: &'static str| {
        let s = s.clone();
        async move {
            s.clips_of("3")
                .await
                .unwrap()
                .into_iter()
                .find(|c| c.path == path)
                .unwrap()
                .state
        }
    };
    // new → seen; seen → queued once the size holds.
    s.reconcile_page("3", vec![listed("/3/a.mp4", 5)], none.clone())
        .await
        .unwrap();
    assert_eq!(state_of("/3/a.mp4").await, Seen);
    s.reconcile_page("3", vec![listed("/3/a.mp4", 5)], none.clone())
        .await
        .unwrap();
    assert_eq!(state_of("/3/a.mp4").await, Queued);
    // queued → seen when the size changes.
    s.reconcile_page("3", vec![listed("/3/a.mp4", 6)], none.clone())
        .await
        .unwrap();
    assert_eq!(state_of("/3/a.mp4").await, Seen);
    // seen → skipped when the selection drops it; skipped → queued when it wants it again.
    let mut skip = listed("/3/a.mp4", 6);
    skip.skip = Some("not selected".into());
    s.reconcile_page("3", vec![skip], none.clone())
        .await
        .unwrap();
    assert_eq!(state_of("/3/a.mp4").await, Skipped);
    s.reconcile_page("3", vec![listed("/3/a.mp4", 6)], none.clone())
        .await
        .unwrap();
    assert_eq!(state_of("/3/a.mp4").await, Queued);
    // lost → seen when listed again.
    s.mark_missing("3", HashSet::new()).await.unwrap();
    assert_eq!(state_of("/3/a.mp4").await, Lost);
    s.reconcile_page("3", vec![listed("/3/a.mp4", 6)], none.clone())
        .await
        .unwrap();
    assert_eq!(state_of("/3/a.mp4").await, Seen);
    // A hostile entry is refused at once.
    let mut bad = listed("/3/b.mp4", 6);
    bad.refuse = Some("bad name".into());
    s.reconcile_page("3", vec![bad], none).await.unwrap();
    assert_eq!(state_of("/3/b.mp4").await, Refused);
}

/// The SQL conditions generated from the groups select exactly the clips the Rust groups
/// contain.
#[tokio::test]
async fn sql_groups_match_rust_groups() {
    for pos in positions() {
        let (_d2, one) = open();
        let id = clip_in(&one, pos.0, pos.1);
        let c = one.clip(id).await.unwrap();
        let downloads = one.next_downloads("1", 10).await.unwrap();
        assert_eq!(
            !downloads.is_empty(),
            c.is_in(Group::DOWNLOAD_WORK),
            "{pos:?}"
        );
        let uploads = one.next_uploads(vec![], 10).await.unwrap();
        assert_eq!(!uploads.is_empty(), c.is_in(Group::UPLOAD_WORK), "{pos:?}");
        let spool = one.spool_bytes().await.unwrap();
        assert_eq!(spool > 0, c.is_in(Group::IN_SPOOL), "{pos:?}");
        let tally = one.tally("1", 0).await.unwrap();
        assert_eq!(tally.pending == 1, c.state.is_pending(), "{pos:?}");
        let deletable = one.deletable("1", 0).await.unwrap();
        assert_eq!(
            !deletable.is_empty(),
            transitions::DELETED_FROM.contains(pos.0, pos.1),
            "{pos:?}"
        );
    }
}

#[tokio::test]
async fn an_unknown_state_is_an_error_not_a_panic() {
    let (_d, s) = open();
    let id = clip_in(&s, Queued, None);
    s.with(|c| Ok(c.execute("UPDATE clips SET state = 'exploded' WHERE id = ?1", [id])?))
        .unwrap();
    let e = s.clips_of("1").await.unwrap_err();
    assert!(format!("{e:#}").contains("exploded"), "{e:#}");
}

#[tokio::test]
async fn growing_clip_waits_until_stable() {
    let (_d, s) = open();
    let none = HashSet::new();
    s.reconcile_page("1", vec![listed("/v/a.mp4", 10)], none.clone())
        .await
        .unwrap();
    assert!(s.next_downloads("1", 10).await.unwrap().is_empty());
    s.reconcile_page("1", vec![listed("/v/a.mp4", 20)], none.clone())
        .await
        .unwrap();
    assert!(s.next_downloads("1", 10).await.unwrap().is_empty());
    s.reconcile_page("1", vec![listed("/v/a.mp4", 20)], none.clone())
        .await
        .unwrap();
    let q = s.next_downloads("1", 10).await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].size, 20);
}

#[tokio::test]
async fn missing_before_download_is_lost_but_downloaded_is_not() {
    let (_d, s) = open();
    let stable: HashSet<String> = ["/v/a.mp4".to_string(), "/v/b.mp4".to_string()].into();
    s.reconcile_page(
        "1",
        vec![listed("/v/a.mp4", 1), listed("/v/b.mp4", 1)],
        stable,
    )
    .await
    .unwrap();
    let b = s.next_downloads("1", 10).await.unwrap()[1].clone();
    assert!(s.start_download(b.id).await.unwrap());
    assert!(
        s.downloaded(b.id, "00".into(), BlockDigests::default())
            .await
            .unwrap()
    );
    let lost = s.mark_missing("1", Default::default()).await.unwrap();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].path, "/v/a.mp4");
    assert_eq!(s.clip(b.id).await.unwrap().state, ClipState::Downloaded);
}

#[tokio::test]
async fn multipart_journal_round_trips() {
    let (_d, s) = open();
    let id = clip_in(&s, Uploading, None);
    assert!(s.multipart(id).await.unwrap().is_none());
    s.begin_multipart(id, "u1".into(), 5).await.unwrap();
    s.part_done(id, (1, "e".into(), "h".into(), 5, Some("m".into())))
        .await
        .unwrap();
    let (upload_id, part_size, parts) = s.multipart(id).await.unwrap().unwrap();
    assert_eq!((upload_id.as_str(), part_size, parts.len()), ("u1", 5, 1));
    assert_eq!(parts[0].4.as_deref(), Some("m"));
    s.clear_multipart(id).await.unwrap();
    assert!(s.multipart(id).await.unwrap().is_none());
}

#[tokio::test]
async fn the_digests_of_what_was_sent_outlive_the_parts() {
    let (_d, s) = open();
    let id = clip_in(&s, Uploading, None);
    assert_eq!(s.sent_digests(id).await.unwrap(), SentRow::default());
    s.begin_multipart(id, "u1".into(), 5).await.unwrap();
    let sent = SentRow {
        md5: Some("abc".into()),
        parts: Some(3),
        composite_sha256: Some("c29tZQ==".into()),
    };
    assert!(
        s.uploaded(id, "k".into(), None, sent.clone())
            .await
            .unwrap()
    );
    // The parts are gone after Complete; what verification needs is on the clip row.
    assert!(s.multipart(id).await.unwrap().is_none());
    assert_eq!(s.sent_digests(id).await.unwrap(), sent);
    assert_eq!(
        s.verified(id, None).await.unwrap(),
        super::Verified::StillOnCamera
    );
    assert!(s.requeue_missing_object(id).await.unwrap());
    assert_eq!(s.sent_digests(id).await.unwrap(), SentRow::default());
}

#[test]
fn a_version_2_database_gains_the_sent_digest_columns() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        for sql in &schema::MIGRATIONS[..2] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", 2).unwrap();
        c.execute(
            "INSERT INTO clips (imei, path, name, state, first_seen, last_seen)
                VALUES ('1', '/a.mp4', 'a.mp4', 'uploaded', 0, 0)",
            [],
        )
        .unwrap();
    }
    let s = Store::open(&p).unwrap();
    let (md5, parts): (Option<String>, Option<i64>) = s
        .with(|c| {
            Ok(
                c.query_row("SELECT sent_md5, sent_parts FROM clips", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?,
            )
        })
        .unwrap();
    assert_eq!((md5, parts), (None, None));
}

#[test]
fn reopen_keeps_schema() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    drop(Store::open(&p).unwrap());
    let s = Store::open(&p).unwrap();
    let v: i64 = s
        .with(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
}

#[test]
fn garbage_file_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    std::fs::write(
        &p,
        b"this is not a database, it is a text file of some length....",
    )
    .unwrap();
    let e = Store::open(&p).err().unwrap();
    assert!(format!("{e:#}").contains("state.db"), "{e:#}");
}

/// The transition table of `docs/clip-lifecycle.md` is the one in the store's doc comment
/// (which the tests above check against the code).
#[test]
fn the_documented_tables_agree() {
    fn rows(text: &str) -> Vec<String> {
        text.lines()
            .map(|l| l.trim_start_matches("//!").trim())
            .skip_while(|l| !l.starts_with("| from |"))
            .take_while(|l| l.starts_with('|'))
            .map(String::from)
            .collect()
    }
    let doc = rows(include_str!("../../docs/clip-lifecycle.md"));
    let code = rows(include_str!("mod.rs"));
    assert!(doc.len() > 20, "{doc:?}");
    assert_eq!(doc, code);
}

/// The rows of camera "1" at `path`, oldest generation first: (generation, state, size).
async fn at_path(s: &Store, path: &str) -> Vec<(i64, ClipState, u64)> {
    let mut v: Vec<_> = s
        .clips_of("1")
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.path == path)
        .map(|c| (c.generation, c.state, c.size))
        .collect();
    v.sort();
    v
}

fn sizeless(path: &str) -> Listed {
    Listed {
        size_unknown: true,
        too_recent: true,
        ..listed(path, 0)
    }
}

#[tokio::test]
async fn a_clip_listed_without_a_size_is_seen_until_its_size_is_listed_twice() {
    let (_d, s) = open();
    let page = |l: Listed| s.reconcile_page("1", vec![l], HashSet::new());
    for _ in 0..3 {
        page(sizeless("/v/a.mp4")).await.unwrap();
        assert_eq!(
            at_path(&s, "/v/a.mp4").await,
            [(0, Seen, 0)],
            "never stable"
        );
    }
    page(listed("/v/a.mp4", 20)).await.unwrap();
    page(listed("/v/a.mp4", 20)).await.unwrap();
    assert_eq!(at_path(&s, "/v/a.mp4").await, [(0, Queued, 20)]);
    let r = page(sizeless("/v/a.mp4")).await.unwrap();
    assert!(r.refused.is_empty());
    assert_eq!(
        at_path(&s, "/v/a.mp4").await,
        [(0, Queued, 20)],
        "a listing without a size changes nothing known"
    );
    // A clip that left the listing, then is listed again without a size, is on the camera.
    let missing = s.mark_missing("1", HashSet::new()).await.unwrap();
    assert_eq!(missing.len(), 1);
    assert_eq!(at_path(&s, "/v/a.mp4").await, [(0, Lost, 20)]);
    page(sizeless("/v/a.mp4")).await.unwrap();
    assert_eq!(at_path(&s, "/v/a.mp4").await, [(0, Seen, 20)], "not lost");
}

#[tokio::test]
async fn a_verified_clip_listed_without_a_size_is_no_new_clip_and_not_deletable() {
    let (_d, s) = open();
    let id = clip_in(&s, ClipState::Verified, None);
    let path = s.clip(id).await.unwrap().path;
    let since = crate::store::now_ms();
    s.reconcile_page("1", vec![sizeless(&path)], HashSet::new())
        .await
        .unwrap();
    assert_eq!(at_path(&s, &path).await, [(0, ClipState::Verified, 7)]);
    assert!(
        s.deletable("1", since).await.unwrap().is_empty(),
        "not deleted on the word of a listing that gives no size"
    );
}

#[tokio::test]
async fn a_refusal_that_can_pass_is_looked_at_again_one_for_good_is_not() {
    let (_d, s) = open();
    let page = |l: Listed| s.reconcile_page("1", vec![l], HashSet::new());
    // Listed as a directory, then as a clip.
    let dir = Listed {
        refuse: Some(REFUSED_AS_DIRECTORY.into()),
        ..listed("/v/d.mp4", 10)
    };
    let r = page(dir.clone()).await.unwrap();
    assert_eq!(r.refused.len(), 1, "reported the first time");
    let r = page(dir).await.unwrap();
    assert!(r.refused.is_empty(), "and only then");
    assert_eq!(at_path(&s, "/v/d.mp4").await, [(0, Refused, 10)]);
    page(listed("/v/d.mp4", 10)).await.unwrap();
    assert_eq!(at_path(&s, "/v/d.mp4").await, [(0, Seen, 10)]);
    page(listed("/v/d.mp4", 10)).await.unwrap();
    assert_eq!(at_path(&s, "/v/d.mp4").await, [(0, Queued, 10)]);
    // A row refused before the upgrade for a missing size passes too.
    s.with(|c| {
        c.execute(
            "INSERT INTO clips (imei, path, name, size, state, reason, first_seen, last_seen)
             VALUES ('1', '/v/n.mp4', 'n.mp4', 0, ?1, 'listing gives no size', 0, 0)",
            params![Refused],
        )?;
        Ok(())
    })
    .unwrap();
    page(listed("/v/n.mp4", 30)).await.unwrap();
    assert_eq!(at_path(&s, "/v/n.mp4").await, [(0, Seen, 30)]);
    // Refused for good (a negative size): the same entry stays refused; a clip listed
    // there later is a new generation.
    let bad = Listed {
        refuse: Some("listing gives a negative size (-5)".into()),
        ..listed("/v/b.mp4", 0)
    };
    page(bad.clone()).await.unwrap();
    page(bad).await.unwrap();
    assert_eq!(at_path(&s, "/v/b.mp4").await, [(0, Refused, 0)]);
    page(listed("/v/b.mp4", 40)).await.unwrap();
    assert_eq!(
        at_path(&s, "/v/b.mp4").await,
        [(0, Refused, 0), (1, Seen, 40)]
    );
}

#[tokio::test]
async fn a_delete_that_did_not_take_is_no_new_clip_and_waits_before_its_retry() {
    let (_d, s) = open();
    let id = digested(&s, clip_in(&s, ClipState::Verified, None));
    let path = s.clip(id).await.unwrap().path;
    s.with(|c| Ok(c.execute("UPDATE clips SET date_ms = 1000 WHERE id = ?1", [id])?))
        .unwrap();
    let dated = |size: u64, date: i64| Listed {
        date_ms: Some(date),
        ..listed(&path, size)
    };
    assert_eq!(s.deleted(vec![id]).await.unwrap(), 1);
    // The camera acknowledged the delete, and lists the same bytes again.
    let since = crate::store::now_ms();
    let r = s
        .reconcile_page("1", vec![dated(7, 1000)], HashSet::new())
        .await
        .unwrap();
    assert_eq!((r.new, r.delete_not_taken), (0, 1));
    assert_eq!(at_path(&s, &path).await, [(0, ClipState::Verified, 7)]);
    let c = s.clip(id).await.unwrap();
    assert!(c.retry_after.is_some_and(|t| t > crate::store::now()));
    assert!(
        c.challenge_due,
        "its bytes are read on the camera in this pass"
    );
    assert_eq!(s.challenges_due("1", since).await.unwrap().len(), 1);
    let set_retry = |t: i64| {
        s.with(|c| {
            Ok(c.execute(
                "UPDATE clips SET retry_after = ?2 WHERE id = ?1",
                params![id, t],
            )?)
        })
        .unwrap()
    };
    set_retry(0);
    assert!(
        s.deletable("1", since).await.unwrap().is_empty(),
        "never deleted before its due challenge passed"
    );
    set_retry(crate::store::now() + 60);
    s.challenge_passed(id).await.unwrap();
    assert!(s.challenges_due("1", since).await.unwrap().is_empty());
    assert!(
        s.deletable("1", since).await.unwrap().is_empty(),
        "its next delete waits for the backoff"
    );
    assert_eq!(s.deletes_not_taken().await.unwrap().get("1"), Some(&1));
    // Once the backoff is over it may be deleted again.
    s.with(|c| Ok(c.execute("UPDATE clips SET retry_after = 0 WHERE id = ?1", [id])?))
        .unwrap();
    s.reconcile_page("1", vec![dated(7, 1000)], HashSet::new())
        .await
        .unwrap();
    assert_eq!(s.deletable("1", since).await.unwrap().len(), 1);
    assert_eq!(s.deleted(vec![id]).await.unwrap(), 1);
    // Other bytes at the path after a delete are a new clip, as before.
    let r = s
        .reconcile_page("1", vec![dated(9, 1000)], HashSet::new())
        .await
        .unwrap();
    assert_eq!((r.new, r.delete_not_taken), (1, 0));
    assert_eq!(at_path(&s, &path).await, [(0, Deleted, 7), (1, Seen, 9)]);
    assert_eq!(s.deletes_not_taken().await.unwrap().get("1"), None);
}

#[test]
fn delete_retries_wait_a_minute_doubling_up_to_six_hours() {
    let waits: Vec<i64> = (1..=11).map(super::listing::delete_retry_secs).collect();
    assert_eq!(
        waits,
        [
            60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 21600, 21600
        ]
    );
}

#[tokio::test]
async fn without_the_challenge_or_digests_a_deleted_path_listed_again_is_a_new_clip() {
    for (challenge, digests) in [(false, true), (true, false)] {
        let (_d, s) = open();
        let mut id = clip_in(&s, ClipState::Verified, None);
        if digests {
            id = digested(&s, id);
        }
        let path = s.clip(id).await.unwrap().path;
        s.with(|c| Ok(c.execute("UPDATE clips SET date_ms = 1000 WHERE id = ?1", [id])?))
            .unwrap();
        assert_eq!(s.deleted(vec![id]).await.unwrap(), 1);
        let again = Listed {
            date_ms: Some(1000),
            ..listed(&path, 7)
        };
        let r = s
            .reconcile_page_with("1", vec![again], HashSet::new(), challenge)
            .await
            .unwrap();
        // Nothing can tell these bytes from the deleted ones: a second copy, never a loss.
        assert_eq!((r.new, r.delete_not_taken), (1, 0), "{challenge} {digests}");
        assert_eq!(
            at_path(&s, &path).await,
            [(0, Deleted, 7), (1, Seen, 7)],
            "{challenge} {digests}"
        );
    }
}

#[tokio::test]
async fn every_date_on_a_page_moved_alike_is_a_clock_shift_not_new_clips() {
    const HOUR: i64 = 3_600_000;
    let page = |paths: &[String], shifts: &[i64]| -> Vec<Listed> {
        paths
            .iter()
            .zip(shifts)
            .map(|(p, d)| Listed {
                date_ms: Some(1_000_000 + d),
                ..listed(p, 7)
            })
            .collect()
    };
    let setup = |s: &Store, states: [ClipState; 3]| -> Vec<String> {
        states
            .iter()
            .map(|st| {
                let id = digested(s, clip_in(s, *st, None));
                s.with(
                    |c| Ok(c.execute("UPDATE clips SET date_ms = 1000000 WHERE id = ?1", [id])?),
                )
                .unwrap();
                let path: String = s
                    .with(|c| {
                        Ok(
                            c.query_row("SELECT path FROM clips WHERE id = ?1", [id], |r| {
                                r.get(0)
                            })?,
                        )
                    })
                    .unwrap();
                path
            })
            .collect()
    };
    let kept = [ClipState::Verified, Retained, ClipState::Verified];
    // All three moved by one hour: the same clips, their challenges due.
    let (_d, s) = open();
    let paths = setup(&s, kept);
    let since = crate::store::now_ms();
    let r = s
        .reconcile_page("1", page(&paths, &[HOUR, HOUR, HOUR]), HashSet::new())
        .await
        .unwrap();
    assert_eq!((r.new, r.shifted), (0, Some((3, HOUR))));
    for p in &paths {
        let rows = at_path(&s, p).await;
        assert_eq!(rows.len(), 1, "{p}: no new generation");
    }
    let due = s.challenges_due("1", since).await.unwrap();
    assert_eq!(due.len(), 3);
    assert!(due.iter().all(|c| c.date_ms == Some(1_000_000 + HOUR)));
    // A time zone of a quarter hour (UTC+05:45) moves alike too.
    let (_d, s) = open();
    let paths = setup(&s, kept);
    let q = 5 * HOUR + 45 * 60_000;
    let r = s
        .reconcile_page("1", page(&paths, &[q, q, q]), HashSet::new())
        .await
        .unwrap();
    assert_eq!((r.new, r.shifted), (0, Some((3, q))));
    // Moved unalike, by an odd amount, or one not moved: new clips, as before.
    for shifts in [[HOUR, 2 * HOUR, HOUR], [1000, 1000, 1000], [HOUR, HOUR, 0]] {
        let (_d, s) = open();
        let paths = setup(&s, kept);
        let r = s
            .reconcile_page("1", page(&paths, &shifts), HashSet::new())
            .await
            .unwrap();
        let moved = shifts.iter().filter(|d| **d != 0).count();
        assert_eq!((r.new, r.shifted), (moved, None), "{shifts:?}");
    }
    // Without the challenge nothing could check the bytes: new clips.
    let (_d, s) = open();
    let paths = setup(&s, kept);
    let r = s
        .reconcile_page_with("1", page(&paths, &[HOUR; 3]), HashSet::new(), false)
        .await
        .unwrap();
    assert_eq!((r.new, r.shifted), (3, None));
}

#[tokio::test]
async fn a_clip_changed_on_the_camera_becomes_a_new_generation_under_a_hashed_key() {
    let (_d, s) = open();
    let id = digested(&s, clip_in(&s, ClipState::Verified, None));
    let path = s.clip(id).await.unwrap().path;
    assert!(s.block_digests(id).await.unwrap().is_some());
    assert!(s.changed_on_camera(id, Changed::Bytes).await.unwrap());
    assert_eq!(at_path(&s, &path).await, [(0, Deleted, 7), (1, Queued, 7)]);
    let old = s.clip(id).await.unwrap();
    assert!(old.reason.unwrap().contains("nothing deleted"));
    let rows = s.clips_of("1").await.unwrap();
    let new = rows.iter().find(|c| c.generation == 1).unwrap();
    assert!(new.hashed_key, "never the key of the bytes verified");
    assert!(s.block_digests(new.id).await.unwrap().is_none());
    assert!(
        !s.changed_on_camera(id, Changed::Unchecked).await.unwrap(),
        "once"
    );
}
