//! What a camera's listing does to the clips: [`Store::reconcile_page`] (new clips, sizes,
//! stability, the selection), [`Store::mark_missing`] (clips that left the camera), and the
//! bucket check of `lost` clips ([`Store::lost_unchecked`], [`Store::lost_confirmed`],
//! [`Store::found_elsewhere`]). Every state write is guarded by the states it leaves.

use std::collections::HashSet;

use anyhow::Result;
use rusqlite::{OptionalExtension, Transaction, params};

use super::state::ClipState::{self, *};
use super::state::Group;
use super::transitions::guarded;
use super::{CLIP_COLS, Clip, Store, clip_from_row, now};

/// Why a clip is `lost` before the bucket was checked for it ([`Store::lost_unchecked`]).
const LOST_UNCHECKED: &str = "left the camera before it was offloaded (overwritten?)";
/// Why a clip is `lost` once the bucket was checked and does not hold it either.
const LOST_CONFIRMED: &str =
    "left the camera before it was offloaded (overwritten?); not in the bucket either";

const fn only(states: &'static [ClipState]) -> Group {
    Group {
        states,
        failed_at: None,
    }
}

pub(super) const RELISTED_FROM: Group = only(&[Lost]);
pub(super) const SELECTED_FROM: Group = only(&[Skipped]);
pub(super) const UNSELECTED_FROM: Group = only(&[Seen, Queued]);
pub(super) const RESIZED_FROM: Group = only(&[Seen, Queued, Failed]);
pub(super) const STABLE_FROM: Group = only(&[Seen]);
pub(super) const MISSING_FROM: Group = Group::BEFORE_DOWNLOAD;
pub(super) const GONE_AFTER_VERIFIED_FROM: Group = only(&[Verified]);
pub(super) const LOST_FROM: Group = only(&[Lost]);

/// A listing entry after validation, ready to reconcile.
#[derive(Debug, Clone)]
pub struct Listed {
    pub path: String,
    pub name: String,
    pub size: u64,
    pub event: String,
    pub camera: i64,
    pub recorded_at: String,
    pub priority: i64,
    /// `None`: selected; `Some(reason)`: skipped by the selection.
    pub skip: Option<String>,
    /// `Some(reason)`: refused (hostile or unusable entry).
    pub refuse: Option<String>,
    /// Recorded less than `sync.stable_after` ago: may still be recording.
    pub too_recent: bool,
}

impl Store {
    /// Reconciles one listing page in one transaction. Returns how many clips were new.
    ///
    /// New clips become `queued` (selected), `skipped` or `refused`. A clip listed
    /// again with the same size gains stability; a size change resets it and sends a
    /// not-yet-downloaded clip back to `seen`. `stable_now` lists paths known to be
    /// finished (a newer clip of the same camera exists), which are queued at once.
    pub async fn reconcile_page(
        &self,
        imei: &str,
        page: Vec<Listed>,
        stable_now: HashSet<String>,
    ) -> Result<usize> {
        let imei = imei.to_string();
        self.call(move |c| {
            let tx = c.transaction()?;
            let t = now();
            let mut new = 0;
            for l in &page {
                let finished = stable_now.contains(&l.path) && !l.too_recent;
                new += usize::from(reconcile_one(&tx, &imei, l, finished, t)?);
            }
            tx.commit()?;
            Ok(new)
        })
        .await
    }

    /// After a complete listing: clips of `imei` not in `listed` have left the camera.
    /// Those not yet safely downloaded are `lost`, verified ones are `deleted` (their
    /// delete went through unrecorded, or the camera overwrote them); the rest are marked
    /// off-camera. Returns the clips newly marked lost.
    pub async fn mark_missing(&self, imei: &str, listed: HashSet<String>) -> Result<Vec<Clip>> {
        let imei = imei.to_string();
        self.call(move |c| {
            let tx = c.transaction()?;
            let rows: Vec<Clip> = {
                let mut st = tx.prepare(&format!(
                    "SELECT {CLIP_COLS} FROM clips WHERE imei = ?1 AND on_camera = 1"
                ))?;
                st.query_map(params![imei], clip_from_row)?
                    .collect::<rusqlite::Result<_>>()?
            };
            let mut lost = Vec::new();
            for clip in rows.into_iter().filter(|c| !listed.contains(&c.path)) {
                let id = clip.id;
                if guarded(
                    &tx,
                    "state = ?2, on_camera = 0, reason = ?3, retry_after = NULL",
                    MISSING_FROM,
                    &[&id, &Lost, &LOST_UNCHECKED],
                )? {
                    lost.push(clip);
                } else if guarded(
                    // Verified in the bucket and gone from the camera: its life is over.
                    // This is a delete the camera did but the agent never recorded (a kill
                    // or a lost reply between `delete_file` and `deleted`); left `verified`
                    // it would count as work forever.
                    &tx,
                    "state = ?2, on_camera = 0, deleted_at = ?3,
                        reason = 'left the camera after it was verified (delete not confirmed)'",
                    GONE_AFTER_VERIFIED_FROM,
                    &[&id, &Deleted, &now()],
                )? {
                } else {
                    tx.execute("UPDATE clips SET on_camera = 0 WHERE id = ?1", params![id])?;
                }
            }
            tx.commit()?;
            Ok(lost)
        })
        .await
    }

    /// `lost` clips of `imei` whose objects were not looked for in the bucket yet (the agent
    /// was killed, or the bucket was unreachable, since they left the camera).
    pub async fn lost_unchecked(&self, imei: &str) -> Result<Vec<Clip>> {
        let imei = imei.to_string();
        self.call(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {CLIP_COLS} FROM clips WHERE imei = ?1 AND state = ?2 AND reason = ?3"
            ))?;
            let rows = st
                .query_map(params![imei, Lost, LOST_UNCHECKED], clip_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    /// A `lost` clip the bucket does not hold either: lost for good. `false` when the clip was
    /// no longer `lost` or already checked.
    pub async fn lost_confirmed(&self, id: i64) -> Result<bool> {
        self.call(move |c| {
            // Only the first check counts: the reason must still be the unchecked one.
            let sql = format!(
                "UPDATE clips SET reason = ?2 WHERE id = ?1 AND {} AND reason = ?3",
                LOST_FROM.sql()
            );
            Ok(c.execute(&sql, params![id, LOST_CONFIRMED, LOST_UNCHECKED])? == 1)
        })
        .await
    }

    /// A `lost` clip whose object turned out to be in the bucket: `elsewhere`. `false` when
    /// the clip was no longer `lost`.
    pub async fn found_elsewhere(&self, id: i64) -> Result<bool> {
        self.call(move |c| {
            Ok(guarded(
                c,
                "state = ?2, reason = 'left the camera before this agent offloaded it; \
                    its object is in the bucket (offloaded by another agent)'",
                LOST_FROM,
                &[&id, &Elsewhere],
            )?)
        })
        .await
    }
}

/// Reconciles one listed entry; whether it was new.
fn reconcile_one(
    tx: &Transaction<'_>,
    imei: &str,
    l: &Listed,
    finished: bool,
    t: i64,
) -> rusqlite::Result<bool> {
    let existing: Option<(i64, i64, ClipState)> = tx
        .query_row(
            "SELECT id, size, state FROM clips WHERE imei = ?1 AND path = ?2",
            params![imei, l.path],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((id, size, st)) = existing else {
        insert_new(tx, imei, l, finished, t)?;
        return Ok(true);
    };
    let listed_size = l.size as i64;
    let same = size == listed_size;
    if st == Lost {
        // Listed again after all (a listing glitch): back in the running.
        guarded(
            tx,
            "size = ?2, stable_count = 0, state = ?3, last_seen = ?4, on_camera = 1, reason = NULL",
            RELISTED_FROM,
            &[&id, &listed_size, &Seen, &t],
        )?;
    } else if st == Skipped && l.skip.is_none() && l.refuse.is_none() {
        // The selection changed: offload it after all.
        let to = if (same && !l.too_recent) || finished {
            Queued
        } else {
            Seen
        };
        guarded(
            tx,
            "size = ?2, state = ?3, reason = NULL, last_seen = ?4, on_camera = 1",
            SELECTED_FROM,
            &[&id, &listed_size, &to, &t],
        )?;
    } else if (st == Seen || st == Queued) && l.skip.is_some() {
        // The selection changed: no longer wanted.
        guarded(
            tx,
            "state = ?2, reason = ?3, last_seen = ?4, on_camera = 1",
            UNSELECTED_FROM,
            &[&id, &Skipped, &l.skip, &t],
        )?;
    } else if !same && RESIZED_FROM.contains(st, None) {
        // Still recording: wait until the size settles.
        guarded(
            tx,
            "size = ?2, stable_count = 0, state = ?3, last_seen = ?4, on_camera = 1",
            RESIZED_FROM,
            &[&id, &listed_size, &Seen, &t],
        )?;
    } else {
        tx.execute(
            "UPDATE clips SET last_seen = ?2, on_camera = 1,
                stable_count = CASE WHEN ?3 THEN stable_count + 1 ELSE stable_count END
             WHERE id = ?1",
            params![id, t, same],
        )?;
        if st == Seen && ((same && !l.too_recent) || finished) {
            guarded(tx, "state = ?2", STABLE_FROM, &[&id, &Queued])?;
        }
    }
    Ok(false)
}

/// A clip listed for the first time: `refused` (hostile or unusable entry), `skipped` (not
/// selected), `queued` (known finished) or `seen`.
fn insert_new(
    tx: &Transaction<'_>,
    imei: &str,
    l: &Listed,
    finished: bool,
    t: i64,
) -> rusqlite::Result<()> {
    let (st, reason) = if let Some(r) = &l.refuse {
        (Refused, Some(r.clone()))
    } else if let Some(r) = &l.skip {
        (Skipped, Some(r.clone()))
    } else if finished {
        (Queued, None)
    } else {
        (Seen, None)
    };
    tx.execute(
        "INSERT INTO clips (imei, path, name, size, recorded_at, event, camera, priority,
            state, reason, first_seen, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
        params![
            imei,
            l.path,
            l.name,
            l.size as i64,
            l.recorded_at,
            l.event,
            l.camera,
            l.priority,
            st,
            reason,
            t
        ],
    )?;
    Ok(())
}
