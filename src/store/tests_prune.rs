//! The store's tests of pruning: the generation rules hold for a path whose rows were
//! pruned, what pruning keeps, the counts `status` and `/metrics` show do not change, and
//! the v12 → v13 migration.

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

fn entry(path: &str, size: u64, date_ms: i64) -> Listed {
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
        date_ms: Some(date_ms),
    }
}

async fn list(s: &Store, e: Listed) -> Reconciled {
    let finished: HashSet<String> = [e.path.clone()].into();
    s.reconcile_page(IMEI, vec![e], finished).await.unwrap()
}

/// Every row at `path` as (generation, state), oldest generation first.
async fn at(s: &Store, path: &str) -> Vec<(i64, ClipState)> {
    let mut v: Vec<(i64, ClipState)> = s
        .clips_of(IMEI)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.path == path)
        .map(|c| (c.generation, c.state))
        .collect();
    v.sort();
    v
}

/// The latest row at `path`.
async fn latest(s: &Store, path: &str) -> Clip {
    let mut v: Vec<Clip> = s.clips_of(IMEI).await.unwrap();
    v.retain(|c| c.path == path);
    v.sort_by_key(|c| c.generation);
    v.pop().unwrap()
}

/// Clip `id` verified with its bytes hashed and (with `digests`) its block digests
/// recorded, as if it got there.
fn verify(s: &Store, id: i64, digests: bool) {
    s.with(|c| {
        let blocks = digests.then(|| vec![0u8; 32]);
        c.execute(
            "UPDATE clips SET state = 'verified', sha256 = 'ab', failed_stage = NULL,
                blocks = ?2, verified_at = 5 WHERE id = ?1",
            params![id, blocks],
        )?;
        Ok(())
    })
    .unwrap();
}

/// Every row's times set far in the past: all of them old enough to prune.
fn age_everything(s: &Store) {
    s.with(|c| {
        c.execute(
            "UPDATE clips SET last_seen = 1, deleted_at = MIN(COALESCE(deleted_at, 1), 1),
                verified_at = MIN(verified_at, 5)",
            [],
        )?;
        Ok(())
    })
    .unwrap();
}

/// A clip the agent deleted (the camera acknowledged), listed with `size` and `date`.
async fn deleted_by_the_agent(s: &Store, path: &str, size: u64, date: i64, digests: bool) {
    list(s, entry(path, size, date)).await;
    let id = latest(s, path).await.id;
    verify(s, id, digests);
    assert_eq!(s.deleted(vec![id]).await.unwrap(), 1);
}

const A: &str = "/mnt/sdcard/DCIM/20210101_000012_01_1.mp4";
const B: &str = "/mnt/sdcard/DCIM/20210101_000112_01_1.mp4";
const C: &str = "/mnt/sdcard/DCIM/20210101_000212_01_1.mp4";

#[tokio::test]
async fn a_delete_that_did_not_take_is_still_told_after_its_older_generations_are_pruned() {
    let (_d, s) = open();
    deleted_by_the_agent(&s, A, 10, 1000, true).await;
    // A clock reset: other bytes at the path, a second generation, also deleted.
    deleted_by_the_agent(&s, A, 20, 2000, true).await;
    assert_eq!(at(&s, A).await, [(0, Deleted), (1, Deleted)]);
    age_everything(&s);
    assert_eq!(s.prune(now()).await.unwrap(), 1);
    assert_eq!(
        at(&s, A).await,
        [(1, Deleted)],
        "the latest generation deleted by the agent with its digests is kept"
    );
    // The camera still lists the bytes it acknowledged deleting: a delete that did not
    // take, not a new clip to offload again.
    let r = list(&s, entry(A, 20, 2000)).await;
    assert_eq!((r.new, r.delete_not_taken), (0, 1));
    assert_eq!(at(&s, A).await, [(1, Verified)]);
    // Other bytes there are a new generation, numbered after the latest.
    deleted_by_the_agent(&s, A, 30, 3000, true).await;
    assert_eq!(at(&s, A).await, [(1, Deleted), (2, Deleted)]);
}

#[tokio::test]
async fn a_pruned_path_listed_again_is_a_new_clip_as_the_rules_say() {
    let (_d, s) = open();
    // Deleted without block digests: listed again with the same size and `date`, the
    // rules make it a new generation (a second copy, never a clip lost).
    deleted_by_the_agent(&s, B, 10, 1000, false).await;
    // Left the camera before its download, and not in the bucket either.
    list(&s, entry(C, 10, 1000)).await;
    let keep: HashSet<String> = [A.to_string()].into();
    assert_eq!(s.mark_missing(IMEI, keep.clone()).await.unwrap().len(), 1);
    age_everything(&s);
    assert_eq!(
        s.prune(now()).await.unwrap(),
        1,
        "a clip lost before the bucket was checked is kept: it may come back"
    );
    assert_eq!(at(&s, C).await, [(0, Lost)]);
    let c = latest(&s, C).await.id;
    assert!(s.lost_confirmed(c).await.unwrap());
    age_everything(&s);
    assert_eq!(s.prune(now()).await.unwrap(), 1);
    for p in [B, C] {
        assert_eq!(at(&s, p).await, [], "{p} pruned");
        let r = list(&s, entry(p, 10, 1000)).await;
        assert_eq!((r.new, r.delete_not_taken), (1, 0), "{p}");
        assert_eq!(
            at(&s, p).await,
            [(0, Queued)],
            "{p}: offloaded as a new clip"
        );
    }
}

#[tokio::test]
async fn pruning_keeps_what_is_recent_on_the_camera_or_still_to_do() {
    let (_d, s) = open();
    deleted_by_the_agent(&s, B, 10, 1000, false).await;
    list(&s, entry(C, 10, 1000)).await;
    let cutoff = now() - 30 * 86400;
    assert_eq!(s.prune(cutoff).await.unwrap(), 0, "nothing is that old");
    age_everything(&s);
    // C is queued (and on the camera): never pruned, however old.
    assert_eq!(s.prune(cutoff).await.unwrap(), 1);
    assert_eq!(at(&s, C).await, [(0, Queued)]);
}

#[tokio::test]
async fn pruning_changes_no_count() {
    let (_d, s) = open();
    deleted_by_the_agent(&s, A, 10, 1000, true).await;
    deleted_by_the_agent(&s, A, 20, 2000, true).await;
    deleted_by_the_agent(&s, B, 30, 1000, false).await;
    list(&s, entry(C, 40, 1000)).await;
    s.mark_missing(IMEI, HashSet::new()).await.unwrap();
    let c = latest(&s, C).await.id;
    assert!(s.lost_confirmed(c).await.unwrap());
    age_everything(&s);
    let counts = s.counts(IMEI).await.unwrap();
    let verified = s.last_verified().await.unwrap();
    assert_eq!(s.prune(now()).await.unwrap(), 3);
    assert_eq!(s.counts(IMEI).await.unwrap(), counts);
    assert_eq!(s.last_verified().await.unwrap(), verified);
    // Pruned twice over: the counts add up.
    deleted_by_the_agent(&s, C, 50, 1000, false).await;
    age_everything(&s);
    assert_eq!(s.prune(now()).await.unwrap(), 1);
    let deleted = s.counts(IMEI).await.unwrap();
    let deleted = deleted.iter().find(|r| r.state == Deleted).unwrap();
    assert_eq!((deleted.clips, deleted.bytes), (4, 10 + 20 + 30 + 50));
}

#[test]
fn a_version_13_database_gains_the_pruned_counts_and_the_state_index() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.db");
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        for sql in &schema::MIGRATIONS[..13] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", 13).unwrap();
        c.execute(
            "INSERT INTO clips (imei, path, name, size, state, first_seen, last_seen, on_camera)
             VALUES (?1, ?2, 'x.mp4', 7, 'skipped', 1, 1, 0)",
            params![IMEI, A],
        )
        .unwrap();
    }
    let s = Store::open(&p).unwrap();
    let (v, index): (i64, i64) = s
        .with(|c| {
            let v = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            let i = c.query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'clips_imei_state'",
                [],
                |r| r.get(0),
            )?;
            Ok((v, i))
        })
        .unwrap();
    assert_eq!((v, index), (SCHEMA_VERSION, 1));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        assert_eq!(s.prune(now()).await.unwrap(), 1);
        let counts = s.counts(IMEI).await.unwrap();
        assert_eq!(counts.len(), 1);
        assert_eq!(
            (counts[0].state, counts[0].clips, counts[0].bytes),
            (Skipped, 1, 7)
        );
    });
}
