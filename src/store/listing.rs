//! What a camera's listing does to the clips: [`Store::reconcile_page`] (new clips, sizes,
//! stability, the selection), [`Store::mark_missing`] (clips that left the camera), and the
//! bucket check of `lost` clips ([`Store::lost_unchecked`], [`Store::lost_confirmed`],
//! [`Store::found_elsewhere`]). Every state write is guarded by the states it leaves.

use std::collections::HashSet;

use anyhow::Result;
use rusqlite::{OptionalExtension, Transaction, params};

use super::state::ClipState::{self, *};
use super::state::{Group, Stage};
use super::transitions::guarded;
use super::{CLIP_COLS, Clip, Store, clip_from_row, now, now_ms};

/// Why a clip is `lost` before the bucket was checked for it ([`Store::lost_unchecked`]).
const LOST_UNCHECKED: &str = "left the camera before it was offloaded (overwritten?)";
/// Why a clip is `lost` once the bucket was checked and does not hold it either.
pub(super) const LOST_CONFIRMED: &str =
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
pub(super) const RESIZED_FROM: Group = Group::BEFORE_DOWNLOAD;
pub(super) const SUPERSEDED_FROM: Group = only(&[Verified]);
/// States that hold the whole clip's bytes (or their object): a listing with another size
/// or `date` is then a new clip (with `retained`, and `failed` at upload).
const DOWNLOADED: [ClipState; 4] = [ClipState::Downloaded, Uploading, Uploaded, Verified];
pub(super) const STABLE_FROM: Group = only(&[Seen]);
pub(super) const MISSING_FROM: Group = Group::BEFORE_DOWNLOAD;
pub(super) const GONE_AFTER_VERIFIED_FROM: Group = only(&[Verified]);
pub(super) const LOST_FROM: Group = only(&[Lost]);
/// A clip refused for a reason that can pass, now listed as a clip.
pub(super) const REFUSAL_PASSED_FROM: Group = only(&[Refused]);
/// A clip the agent deleted, listed again with the verified size and `date`.
pub(super) const DELETE_NOT_TAKEN_FROM: Group = only(&[Deleted]);

/// Why a deleted clip is verified again.
pub(super) const DELETE_NOT_TAKEN: &str =
    "the camera acknowledged its delete but still lists it: the delete is tried again later";

/// Seconds the next delete of a clip whose delete did not take `misses` times waits: a
/// minute, doubling, at most six hours.
pub(crate) fn delete_retry_secs(misses: i64) -> i64 {
    (60i64 << (misses - 1).clamp(0, 9)).min(6 * 3600)
}
pub(super) const UNDATED_FROM: Group = only(&[Verified]);

/// Why a clip verified before the listing's `date` was recorded (a row from schema 3) is
/// kept on the camera: its bytes cannot be tied to any listing's `date`.
pub(super) const UNDATED: &str = "verified before the agent recorded the listing's date \
    (upgraded from schema 3): kept on the camera, since a listing cannot show that these are \
    the bytes verified";

/// The refusal of an entry listed as a directory: it can pass (the same path may be listed
/// as a clip later), so a clip refused for it is looked at again at every listing.
pub const REFUSED_AS_DIRECTORY: &str = "listed as a directory";
/// The refusal of schema 7 and earlier for an entry listed without a size. Such an entry is
/// no longer refused (it is `seen`, not stable yet), but rows refused for it before the
/// upgrade are looked at again as well.
pub const REFUSED_WITHOUT_SIZE: &str = "listing gives no size";
/// Refusals for a reason that can pass (see [`REFUSED_AS_DIRECTORY`]).
pub const PASSING_REFUSALS: &[&str] = &[REFUSED_AS_DIRECTORY, REFUSED_WITHOUT_SIZE];

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
    /// The listing gave no size (a clip still being written): `size` is 0 and means
    /// nothing; the clip is seen but not stable, and nothing known of it changes.
    pub size_unknown: bool,
    /// Recorded less than `sync.stable_after` ago: may still be recording.
    pub too_recent: bool,
    /// The listing's `date` (ms since the epoch), when it gave one.
    pub date_ms: Option<i64>,
}

/// What [`Store::reconcile_page`] did.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Clips new to the store (new generations of a path included).
    pub new: usize,
    /// Clips whose file changed on the camera before they were downloaded: their partial
    /// download (`.part`) is of other bytes and must go.
    pub stale_parts: Vec<Clip>,
    /// Entries refused by this page that were not refused before: (path, reason).
    pub refused: Vec<(String, String)>,
    /// Clips the agent deleted that this page lists again with their verified size and
    /// `date`: the camera acknowledged the delete and did not perform it.
    pub delete_not_taken: usize,
    /// Clips whose `date` moved with every other on the page (a clock or time-zone change,
    /// by this many ms): the same clips, their bytes checked by the challenge.
    pub shifted: Option<(usize, i64)>,
}

impl Store {
    /// Reconciles one listing page in one transaction.
    ///
    /// New clips become `queued` (selected), `skipped` or `refused`. A clip listed
    /// again with the same size gains stability; a size (or `date`) change resets it and
    /// sends a not-yet-downloaded clip back to `seen`. A path that holds a new clip (see
    /// `holds_new_clip`) gets a new generation. `stable_now` lists paths known to be
    /// finished (a newer clip of the same camera exists), which are queued at once. Every
    /// listed row records what this listing showed (`listed_size`, `listed_date`,
    /// `listed_at`), for retention.
    ///
    /// The delete challenge is taken to be on: see [`Store::reconcile_page_with`].
    pub async fn reconcile_page(
        &self,
        imei: &str,
        page: Vec<Listed>,
        stable_now: HashSet<String>,
    ) -> Result<Reconciled> {
        self.reconcile_page_with(imei, page, stable_now, true).await
    }

    /// [`Store::reconcile_page`]; `challenge`: whether the camera's bytes are read (the
    /// delete challenge) before a delete. Only then is a listing that cannot tell the
    /// camera's bytes from those verified taken for the same clip, its challenge due: a
    /// clip the agent deleted listed again with the verified size and `date` (a delete that
    /// did not take), or the page's verified clips all listed with their `date` moved by
    /// the same multiple of 15 minutes (a clock or time-zone change, [`page_shift`]).
    /// Without the challenge, such a listing is a new generation (a second copy, never a
    /// clip lost).
    pub async fn reconcile_page_with(
        &self,
        imei: &str,
        page: Vec<Listed>,
        stable_now: HashSet<String>,
        challenge: bool,
    ) -> Result<Reconciled> {
        let imei = imei.to_string();
        self.call(move |c| {
            let tx = c.transaction()?;
            let t = now();
            let mut out = Reconciled::default();
            let shift = if challenge {
                page_shift(&tx, &imei, &page)?
            } else {
                None
            };
            for l in &page {
                let finished = stable_now.contains(&l.path) && !l.too_recent;
                let how = How {
                    finished,
                    challenge,
                    shift,
                };
                reconcile_one(&tx, &imei, l, how, t, &mut out)?;
            }
            tx.commit()?;
            Ok(out)
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

/// The latest generation of a path, as reconciling needs it.
pub(super) struct Latest {
    id: i64,
    pub(super) size: i64,
    pub(super) state: ClipState,
    stage: Option<Stage>,
    pub(super) on_camera: bool,
    pub(super) date_ms: Option<i64>,
    generation: i64,
    pub(super) reason: Option<String>,
    /// Block digests are recorded: the delete challenge can read its bytes on the camera.
    has_blocks: bool,
}

pub(super) fn latest(
    tx: &rusqlite::Connection,
    imei: &str,
    path: &str,
) -> rusqlite::Result<Option<Latest>> {
    tx.query_row(
        "SELECT id, size, state, failed_stage, on_camera, date_ms, generation, reason,
                blocks IS NOT NULL
           FROM clips WHERE imei = ?1 AND path = ?2 ORDER BY generation DESC LIMIT 1",
        params![imei, path],
        |r| {
            Ok(Latest {
                id: r.get(0)?,
                size: r.get(1)?,
                state: r.get(2)?,
                stage: r.get(3)?,
                on_camera: r.get(4)?,
                date_ms: r.get(5)?,
                generation: r.get(6)?,
                reason: r.get(7)?,
                has_blocks: r.get(8)?,
            })
        },
    )
    .optional()
}

/// Whether the listing shows another clip than the one `row` holds (see
/// `docs/clip-lifecycle.md`, Identity): the path was listed again after its clip left the
/// camera for good (deleted, offloaded elsewhere, lost for sure, retained then gone), or
/// with another size or `date` after the clip was downloaded.
fn holds_new_clip(row: &Latest, l: &Listed) -> bool {
    let changed = row.size != l.size as i64 || row.date_ms.is_some_and(|d| Some(d) != l.date_ms);
    match row.state {
        Deleted | Elsewhere => true,
        // Refused for good (a size no clip has): another entry there later is another clip.
        Refused => l.refuse.is_none() && changed,
        Lost => row.reason.as_deref() == Some(LOST_CONFIRMED),
        Retained => !row.on_camera || changed,
        Failed => row.stage == Some(Stage::Upload) && changed,
        s => DOWNLOADED.contains(&s) && changed,
    }
}

/// How to reconcile one entry: whether its clip is known to be finished, whether the
/// delete challenge is on, and the page's clock shift (ms), if any.
#[derive(Debug, Clone, Copy)]
struct How {
    finished: bool,
    challenge: bool,
    shift: Option<i64>,
}

/// Steps of a clock or time-zone change (ms): time zones are whole quarter hours apart.
const SHIFT_STEP_MS: i64 = 15 * 60 * 1000;
/// The largest clock or time-zone change taken for one (ms): 26 hours, UTC-12 to UTC+14.
const SHIFT_MAX_MS: i64 = 26 * 3600 * 1000;

/// By how much (ms) the listing moved the `date` of `row`'s clip, when the clip is one whose
/// `date` matters (its bytes are downloaded, their digests recorded, and it is still on the
/// camera with the same size) and its `date` moved by a plausible clock shift.
fn shifted_by(row: &Latest, l: &Listed) -> Option<i64> {
    let kept = matches!(row.state, Verified | Retained) && row.on_camera;
    if !kept || !row.has_blocks || row.size != l.size as i64 || l.size_unknown {
        return None;
    }
    // `date` is the camera's word: any value, so no arithmetic may overflow.
    let delta = l.date_ms?.checked_sub(row.date_ms?)?;
    (delta != 0
        && delta % SHIFT_STEP_MS == 0
        && delta.unsigned_abs() <= SHIFT_MAX_MS.unsigned_abs())
    .then_some(delta)
}

/// The page's clock shift (ms): `Some` when every clip on the page whose `date` matters
/// (verified or retained, still on the camera, digests recorded, listed with its size) is
/// listed with its `date` moved, all by the same whole number of quarter hours. One that did
/// not move, or moved otherwise, means no shift: those moved are new clips.
fn page_shift(tx: &Transaction<'_>, imei: &str, page: &[Listed]) -> rusqlite::Result<Option<i64>> {
    let mut shift = None;
    for l in page
        .iter()
        .filter(|l| l.refuse.is_none() && !l.size_unknown)
    {
        let Some(row) = latest(tx, imei, &l.path)? else {
            continue;
        };
        if !(matches!(row.state, Verified | Retained) && row.on_camera && row.has_blocks) {
            continue;
        }
        match (shifted_by(&row, l), shift) {
            (None, _) => return Ok(None),
            (Some(d), None) => shift = Some(d),
            (Some(d), Some(s)) if d != s => return Ok(None),
            _ => {}
        }
    }
    Ok(shift)
}

/// Reconciles one listed entry into `out`.
fn reconcile_one(
    tx: &Transaction<'_>,
    imei: &str,
    l: &Listed,
    how: How,
    t: i64,
    out: &mut Reconciled,
) -> rusqlite::Result<()> {
    let finished = how.finished;
    let refused_now = |out: &mut Reconciled| {
        if let Some(r) = &l.refuse {
            out.refused.push((l.path.clone(), r.clone()));
        }
    };
    let Some(row) = latest(tx, imei, &l.path)? else {
        out.new += 1;
        refused_now(out);
        return insert_first(tx, imei, l, finished, t);
    };
    let id = row.id;
    let passing = row.state == Refused
        && row
            .reason
            .as_deref()
            .is_some_and(|r| PASSING_REFUSALS.contains(&r));
    if passing && l.refuse.is_none() {
        // Refused for a reason that passed (a directory, or a size missing before the
        // upgrade): a clip like any new one, not stable yet.
        guarded(
            tx,
            "size = ?2, stable_count = 0, state = ?3, reason = NULL, last_seen = ?4,
                on_camera = 1, date_ms = ?5",
            REFUSAL_PASSED_FROM,
            &[&id, &(l.size as i64), &Seen, &t, &l.date_ms],
        )?;
        return listed_at(tx, id, l);
    }
    if l.size_unknown {
        // Nothing is learnt from an entry without a size (a clip still being written, or a
        // glitch) but that it is on the camera: a lost clip is back in the running (with
        // the size it had), nothing else changes, and nothing is deletable on its word.
        tx.execute(
            "UPDATE clips SET last_seen = ?2, on_camera = 1 WHERE id = ?1",
            params![id, t],
        )?;
        guarded(
            tx,
            "stable_count = 0, state = ?2, reason = NULL",
            RELISTED_FROM,
            &[&id, &Seen],
        )?;
        return listed_at(tx, id, l);
    }
    if how.challenge
        && row.has_blocks
        && row.state == Deleted
        && row.reason.is_none()
        && row.size == l.size as i64
        && row.date_ms.is_some()
        && row.date_ms == l.date_ms
    {
        // Deleted by the agent and still here, the same bytes by every sign a listing
        // gives: a delete that did not take (a read-only card), not a new clip. It stays
        // verified (not offloaded again) and its delete is tried again after a backoff.
        // Its challenge is due at once: a clip recorded again under the name with the same
        // size and `date` (a clock reset) has other bytes, and goes to a new generation.
        let t_now = now();
        let misses: i64 = tx.query_row(
            "SELECT delete_misses FROM clips WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )?;
        let retry = t_now + delete_retry_secs(misses + 1);
        if guarded(
            tx,
            "state = ?2, on_camera = 1, deleted_at = NULL, last_seen = ?3, reason = ?4,
                delete_misses = delete_misses + 1, retry_after = ?5, challenge_due = 1",
            DELETE_NOT_TAKEN_FROM,
            &[&id, &Verified, &t, &DELETE_NOT_TAKEN, &retry],
        )? {
            out.delete_not_taken += 1;
        }
        return listed_at(tx, id, l);
    }
    if let Some(delta) = how.shift
        && shifted_by(&row, l) == Some(delta)
    {
        // Every verified clip on the page moved by the same whole offset: a clock or
        // time-zone change, not a new clip. It takes the new `date`, and its bytes are
        // checked by the challenge before anything else is deleted on its strength.
        tx.execute(
            "UPDATE clips SET date_ms = ?2, last_seen = ?3, on_camera = 1, challenge_due = 1
             WHERE id = ?1",
            params![id, l.date_ms, t],
        )?;
        let n = out.shifted.map_or(0, |(n, _)| n);
        out.shifted = Some((n + 1, delta));
        return listed_at(tx, id, l);
    }
    if holds_new_clip(&row, l) {
        supersede(tx, row.id, t)?;
        insert_new(tx, imei, l, finished, t, (row.generation + 1, true))?;
        out.new += 1;
        refused_now(out);
        return Ok(());
    }
    let listed_size = l.size as i64;
    let same = row.size == listed_size;
    let same_date = row.date_ms.is_none() || row.date_ms == l.date_ms;
    let st = row.state;
    if st == Lost {
        // Listed again after all (a listing glitch): back in the running.
        guarded(
            tx,
            "size = ?2, stable_count = 0, state = ?3, last_seen = ?4, on_camera = 1, reason = NULL,
                date_ms = ?5",
            RELISTED_FROM,
            &[&id, &listed_size, &Seen, &t, &l.date_ms],
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
            "size = ?2, state = ?3, reason = NULL, last_seen = ?4, on_camera = 1, date_ms = ?5",
            SELECTED_FROM,
            &[&id, &listed_size, &to, &t, &l.date_ms],
        )?;
    } else if (st == Seen || st == Queued) && l.skip.is_some() {
        // The selection changed: no longer wanted.
        guarded(
            tx,
            "state = ?2, reason = ?3, last_seen = ?4, on_camera = 1",
            UNSELECTED_FROM,
            &[&id, &Skipped, &l.skip, &t],
        )?;
    } else if !(same && same_date) && RESIZED_FROM.contains(st, row.stage) {
        // Still recording (or rewritten) before it was downloaded: wait until it settles;
        // a partial download of the old bytes is worthless.
        if matches!(st, Downloading | Failed) {
            out.stale_parts.push(clip_by_id(tx, id)?);
        }
        guarded(
            tx,
            "size = ?2, stable_count = 0, state = ?3, last_seen = ?4, on_camera = 1, date_ms = ?5,
                failed_stage = NULL, retry_after = NULL",
            RESIZED_FROM,
            &[&id, &listed_size, &Seen, &t, &l.date_ms],
        )?;
    } else {
        listed_again(tx, &row, l, (same && !l.too_recent) || finished, t)?;
    }
    listed_at(tx, id, l)
}

/// Records what this listing showed of clip `id` (for retention: only a clip listed with
/// its verified size and `date` may be deleted; an entry without a size never is).
fn listed_at(tx: &Transaction<'_>, id: i64, l: &Listed) -> rusqlite::Result<()> {
    let size = (!l.size_unknown).then_some(l.size as i64);
    tx.execute(
        "UPDATE clips SET listed_size = ?2, listed_date = ?3, listed_at = ?4 WHERE id = ?1",
        params![id, size, l.date_ms, now_ms()],
    )?;
    Ok(())
}

/// A clip listed again with nothing to change but its stability (and, before its download,
/// a `date` it had none of); `stable`: it may be queued. A clip verified without a `date`
/// (a row from schema 3) that a listing now shows with one is kept on the camera
/// (`retained`, [`UNDATED`]).
fn listed_again(
    tx: &Transaction<'_>,
    row: &Latest,
    l: &Listed,
    stable: bool,
    t: i64,
) -> rusqlite::Result<()> {
    let (id, st) = (row.id, row.state);
    let same = row.size == l.size as i64;
    // Only a clip not yet downloaded may take the listing's `date` as its own (a row from
    // schema 3 has none): the bytes of one past its download may be older.
    let adopt = RESIZED_FROM.contains(st, row.stage);
    tx.execute(
        "UPDATE clips SET last_seen = ?2, on_camera = 1,
            date_ms = CASE WHEN ?5 THEN COALESCE(date_ms, ?4) ELSE date_ms END,
            stable_count = CASE WHEN ?3 THEN stable_count + 1 ELSE stable_count END
         WHERE id = ?1",
        params![id, t, same, l.date_ms, adopt],
    )?;
    if st == Seen && stable {
        guarded(tx, "state = ?2", STABLE_FROM, &[&id, &Queued])?;
    }
    if row.date_ms.is_none() && l.date_ms.is_some() {
        guarded(
            tx,
            "state = ?2, reason = ?3",
            UNDATED_FROM,
            &[&id, &Retained, &UNDATED],
        )?;
    }
    Ok(())
}

/// A path listed for the first time. Its key is hashed when the camera's file name is
/// already taken by a clip at another path (a second folder or card); a clip from the spool
/// quarantine does not count (it may be this very clip: the same bytes at the plain key are
/// found there, other bytes send the later upload to its hashed key).
fn insert_first(
    tx: &Transaction<'_>,
    imei: &str,
    l: &Listed,
    finished: bool,
    t: i64,
) -> rusqlite::Result<()> {
    let taken: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM clips WHERE imei = ?1 AND name = ?2 AND state != ?3
            AND origin IS NULL)",
        params![imei, l.name, Refused],
        |r| r.get(0),
    )?;
    insert_new(tx, imei, l, finished, t, (0, taken))
}

/// The earlier generation of a path that now holds a new clip: off the camera for good, so
/// nothing is ever deleted from the camera on its strength. A `verified` one is settled
/// (`deleted`: its file left the camera, not by the agent's hand); one still on its way
/// (downloaded, uploading, …) is finished under its own key.
fn supersede(tx: &Transaction<'_>, id: i64, t: i64) -> rusqlite::Result<()> {
    tx.execute("UPDATE clips SET on_camera = 0 WHERE id = ?1", params![id])?;
    guarded(
        tx,
        "state = ?2, deleted_at = ?3, reason = 'replaced on the camera by a new clip at the \
            same path (not deleted by the agent)'",
        SUPERSEDED_FROM,
        &[&id, &Deleted, &t],
    )?;
    Ok(())
}

fn clip_by_id(tx: &Transaction<'_>, id: i64) -> rusqlite::Result<Clip> {
    tx.query_row(
        &format!("SELECT {CLIP_COLS} FROM clips WHERE id = ?1"),
        params![id],
        clip_from_row,
    )
}

/// A clip listed for the first time: `refused` (hostile or unusable entry), `skipped` (not
/// selected), `queued` (known finished) or `seen`.
/// `generation`: its number and whether its key is hashed.
fn insert_new(
    tx: &Transaction<'_>,
    imei: &str,
    l: &Listed,
    finished: bool,
    t: i64,
    (generation, hashed_key): (i64, bool),
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
            state, reason, first_seen, last_seen, generation, hashed_key, date_ms,
            listed_size, listed_date, listed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13, ?14, ?4, ?14, ?15)",
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
            t,
            generation,
            hashed_key,
            l.date_ms,
            now_ms()
        ],
    )?;
    Ok(())
}
