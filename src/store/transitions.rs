//! One guarded method per transition of the download, upload and retention stages (the
//! listing's transitions are in `listing`). Each `UPDATE` carries its `AND state IN (…)`
//! guard, generated from the `*_FROM` group next to it, and reports whether it applied.

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, ToSql, params};

use super::state::ClipState::{self, *};
use super::state::{Group, Origin, Stage};
use super::{SentRow, Store, now};
use crate::blocks::BlockDigests;

const fn only(states: &'static [ClipState]) -> Group {
    Group {
        states,
        failed_at: None,
    }
}

pub(super) const START_DOWNLOAD_FROM: Group = Group::DOWNLOAD_WORK;
pub(super) const DOWNLOADED_FROM: Group = only(&[Downloading]);
pub(super) const FAILED_DOWNLOAD_FROM: Group = only(&[Downloading]);
pub(super) const START_UPLOAD_FROM: Group = Group {
    states: &[Downloaded, Uploading],
    failed_at: Some(Stage::Upload),
};
pub(super) const REQUEUE_FOR_DOWNLOAD_FROM: Group = START_UPLOAD_FROM;
pub(super) const DOWNLOAD_DISCARDED_FROM: Group = only(&[Downloading]);
pub(super) const UPLOADED_FROM: Group = only(&[Uploading]);
pub(super) const HASHED_KEY_FROM: Group = only(&[Uploading]);
pub(super) const DOWNLOADED_AND_UPLOADED_FROM: Group = only(&[Downloading]);
pub(super) const FAILED_UPLOAD_FROM: Group = only(&[Uploading, Uploaded]);
pub(super) const VERIFIED_FROM: Group = only(&[Uploaded]);
pub(super) const RETAINED_FROM: Group = only(&[Verified]);
pub(super) const DELETED_FROM: Group = only(&[Verified, Retained]);
pub(super) const REQUEUE_MISSING_OBJECT_FROM: Group = only(&[Verified, Retained]);
pub(super) const CHANGED_ON_CAMERA_FROM: Group = only(&[Verified, Retained]);

/// Why [`Store::changed_on_camera`] settles a verified clip's row: its object holds the bytes
/// downloaded; the camera's go to a new generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    /// The delete challenge read other bytes on the camera.
    Bytes,
    /// A listing could not tell the camera's bytes from those verified (a delete that did
    /// not take, a clock shift), and the challenge that was due cannot be made (the camera
    /// ignores `Range`, or the challenge was turned off): a second copy, never a clip lost.
    Unchecked,
}

impl Changed {
    fn reason(self) -> &'static str {
        match self {
            Changed::Bytes => {
                "the camera holds other bytes at this path than those verified (delete \
                 challenge): nothing deleted; the camera's bytes are offloaded as a new generation"
            }
            Changed::Unchecked => {
                "the camera's bytes at this path could not be checked against those verified \
                 (the delete challenge that was due could not be made): nothing deleted; the \
                 camera's bytes are offloaded again as a new generation"
            }
        }
    }
}
pub(super) const REFUSE_FROM: Group = only(ClipState::STILL_TO_DO);

/// Why a downloaded clip is `lost` when its spool copy is gone and the camera no longer
/// holds it.
const SPOOL_COPY_GONE: &str =
    "its spool copy is gone and the camera no longer holds it (left, or replaced)";

/// Why a clip verified after it left the camera is `deleted` (nothing left to do).
const LEFT_CAMERA: &str = "left the camera before retention (another agent, or overwritten)";
/// Why a clip from the spool quarantine is `deleted` once verified: it never was, and never
/// will be, deleted from a camera by the agent.
pub(super) const FROM_QUARANTINE: &str = "offloaded from the spool quarantine (its camera \
    path is unknown): never deleted from a camera by the agent";

/// A finished spool file found in the quarantine, hashed: what
/// [`Store::take_in_quarantined`] records. Its name, size and `date` come from its spool
/// name; event, camera, recording time and priority from its validated clip name.
#[derive(Debug, Clone)]
pub struct Quarantined {
    pub imei: String,
    /// The file, relative to the state dir (`quarantine/{imei}/{file}`): the row's `path`.
    pub path: String,
    pub name: String,
    pub size: u64,
    pub date_ms: Option<i64>,
    pub sha256: String,
    pub event: String,
    pub camera: i64,
    pub recorded_at: String,
    pub priority: i64,
}

/// What [`Store::take_in_quarantined`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakenIn {
    /// A new clip (this row id), `downloaded`, from the quarantine.
    New(i64),
    /// A clip from this file still has work left: nothing changed.
    Working,
    /// A clip from this file, with these bytes, is already offloaded (verified in the
    /// bucket): the file may go.
    Offloaded,
}

/// What [`Store::verified`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// `uploaded → verified`: the clip is still on the camera, retention decides next.
    StillOnCamera,
    /// `uploaded → deleted`: the clip already left the camera (another agent deleted it, or
    /// the camera overwrote it after the download): nothing is left to do.
    LeftCamera,
    /// The clip was not `uploaded`: nothing changed.
    NotApplied,
}

/// `UPDATE clips SET {set} WHERE id = ?1 AND {from}`; `params[0]` is the id. Whether a row
/// changed.
pub(super) fn guarded(
    c: &Connection,
    set: &str,
    from: Group,
    params: &[&dyn ToSql],
) -> rusqlite::Result<bool> {
    let sql = format!("UPDATE clips SET {set} WHERE id = ?1 AND {}", from.sql());
    Ok(c.execute(&sql, params)? == 1)
}

impl Store {
    /// `queued | downloading | failed@download → downloading`: a download begins (or resumes).
    pub async fn start_download(&self, id: i64) -> Result<bool> {
        self.call(move |c| {
            let to = Downloading;
            Ok(guarded(c, "state = ?2", START_DOWNLOAD_FROM, &[&id, &to])?)
        })
        .await
    }

    /// `downloading → downloaded`, with the hash and the block digests, after the file is
    /// fsynced and renamed.
    pub async fn downloaded(&self, id: i64, sha256: String, blocks: BlockDigests) -> Result<bool> {
        self.call(move |c| {
            Ok(guarded(
                c,
                "state = ?2, sha256 = ?3, downloaded_at = ?4, reason = NULL, failed_stage = NULL,
                    retry_after = NULL, blocks = ?5",
                DOWNLOADED_FROM,
                &[&id, &Downloaded, &sha256, &now(), &blocks.as_blob()],
            )?)
        })
        .await
    }

    /// `downloaded | uploading | failed@upload → uploading`: an upload begins (or resumes).
    pub async fn start_upload(&self, id: i64) -> Result<bool> {
        self.call(move |c| {
            Ok(guarded(
                c,
                "state = ?2",
                START_UPLOAD_FROM,
                &[&id, &Uploading],
            )?)
        })
        .await
    }

    /// `downloaded | uploading | failed@upload → queued`: the spool copy is missing (or has no
    /// hash), so the clip is downloaded again; `→ lost` when the camera no longer holds it
    /// (it left, or its path holds a newer clip).
    pub async fn requeue_for_download(&self, id: i64) -> Result<bool> {
        self.call(move |c| {
            // A clip from the quarantine cannot be downloaded again: its copy was the one.
            Ok(guarded(
                c,
                "state = CASE WHEN on_camera = 1 AND origin IS NULL THEN ?2 ELSE ?3 END,
                 reason = CASE WHEN on_camera = 1 AND origin IS NULL THEN reason ELSE ?4 END",
                REQUEUE_FOR_DOWNLOAD_FROM,
                &[&id, &Queued, &Lost, &SPOOL_COPY_GONE],
            )?)
        })
        .await
    }

    /// `downloading → queued`: the download is discarded without counting an attempt (the
    /// camera at the address is no longer the one the clip belongs to).
    pub async fn download_discarded(&self, id: i64) -> Result<bool> {
        self.call(move |c| {
            Ok(guarded(
                c,
                "state = ?2",
                DOWNLOAD_DISCARDED_FROM,
                &[&id, &Queued],
            )?)
        })
        .await
    }

    /// An `uploading` clip whose plain key holds another object (another agent, or a
    /// database that forgot an earlier generation): its key becomes the hashed one
    /// (`name~<8 hex of its SHA-256>`) and its multipart journal is forgotten, in one
    /// statement; it stays `uploading`, no attempt counted. `false` when it was not
    /// `uploading`, already hashed, or has no SHA-256 yet.
    pub async fn use_hashed_key(&self, id: i64) -> Result<bool> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let sql = format!(
                "UPDATE clips SET hashed_key = 1, upload_id = NULL, part_size = NULL
                  WHERE id = ?1 AND hashed_key = 0 AND sha256 IS NOT NULL AND {}",
                HASHED_KEY_FROM.sql()
            );
            let done = tx.execute(&sql, params![id])? == 1;
            if done {
                tx.execute("DELETE FROM parts WHERE clip_id = ?1", params![id])?;
            }
            tx.commit()?;
            Ok(done)
        })
        .await
    }

    /// `uploading → uploaded` with the key, the ETag and the digests of what was sent
    /// (verification compares them with the store's); the multipart journal is forgotten.
    pub async fn uploaded(
        &self,
        id: i64,
        key: String,
        etag: Option<String>,
        sent: SentRow,
    ) -> Result<bool> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let ok = guarded(
                &tx,
                "state = ?2, object_key = ?3, etag = ?4, uploaded_at = ?5, upload_id = NULL,
                    reason = NULL, failed_stage = NULL, retry_after = NULL, sent_md5 = ?6,
                    sent_parts = ?7, sent_sha256 = ?8",
                UPLOADED_FROM,
                &[
                    &id,
                    &ClipState::Uploaded,
                    &key,
                    &etag,
                    &now(),
                    &sent.md5,
                    &sent.parts,
                    &sent.composite_sha256,
                ],
            )?;
            if ok {
                tx.execute("DELETE FROM parts WHERE clip_id = ?1", params![id])?;
            }
            tx.commit()?;
            Ok(ok)
        })
        .await
    }

    /// `downloading → uploaded`: a clip whose multipart upload ran while it downloaded
    /// (`crate::agent` overlaps large clips) and was completed only after the whole download
    /// was hashed and matched: the hash, key, ETag and sent digests at once, in one
    /// transaction; the multipart journal is forgotten.
    pub async fn downloaded_and_uploaded(
        &self,
        id: i64,
        (sha256, blocks): (String, BlockDigests),
        key: String,
        etag: Option<String>,
        sent: SentRow,
    ) -> Result<bool> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let t = now();
            let ok = guarded(
                &tx,
                "state = ?2, sha256 = ?3, downloaded_at = ?4, uploaded_at = ?4, object_key = ?5,
                    etag = ?6, upload_id = NULL, reason = NULL, failed_stage = NULL,
                    retry_after = NULL, sent_md5 = ?7, sent_parts = ?8, sent_sha256 = ?9,
                    blocks = ?10",
                DOWNLOADED_AND_UPLOADED_FROM,
                &[
                    &id,
                    &ClipState::Uploaded,
                    &sha256,
                    &t,
                    &key,
                    &etag,
                    &sent.md5,
                    &sent.parts,
                    &sent.composite_sha256,
                    &blocks.as_blob(),
                ],
            )?;
            if ok {
                tx.execute("DELETE FROM parts WHERE clip_id = ?1", params![id])?;
            }
            tx.commit()?;
            Ok(ok)
        })
        .await
    }

    /// `uploaded → verified`, or `uploaded → deleted` when the clip already left the camera
    /// (another agent deleted it, or the camera overwrote it after the download): such a clip
    /// is settled, there is nothing left to delete. `weak_proof`: why the object was
    /// verified by size and metadata only, if it was (`status` says so).
    pub async fn verified(&self, id: i64, weak_proof: Option<String>) -> Result<Verified> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let t = now();
            // A clip from the spool quarantine is never on a camera for the agent: its
            // camera path is unknown, so nothing may ever be deleted on its strength.
            let on_camera: Option<bool> = tx
                .query_row(
                    "SELECT on_camera = 1 AND origin IS NULL FROM clips WHERE id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()?;
            let outcome = match on_camera {
                Some(false)
                    if guarded(
                        &tx,
                        "state = ?2, verified_at = ?3, deleted_at = ?3, weak_proof = ?4, \
                            reason = CASE WHEN origin IS NULL THEN ?5 ELSE ?6 END",
                        VERIFIED_FROM,
                        &[
                            &id,
                            &Deleted,
                            &t,
                            &weak_proof,
                            &LEFT_CAMERA,
                            &FROM_QUARANTINE,
                        ],
                    )? =>
                {
                    Verified::LeftCamera
                }
                Some(true)
                    if guarded(
                        &tx,
                        "state = ?2, verified_at = ?3, weak_proof = ?4",
                        VERIFIED_FROM,
                        &[&id, &ClipState::Verified, &t, &weak_proof],
                    )? =>
                {
                    Verified::StillOnCamera
                }
                _ => Verified::NotApplied,
            };
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }

    /// Records a verification that could not ask the bucket: the clip stays `uploaded` (with
    /// the error and one more attempt) and is verified later.
    pub async fn verify_postponed(&self, id: i64, error: String) -> Result<bool> {
        self.call(move |c| {
            Ok(guarded(
                c,
                "reason = ?2, attempts = attempts + 1",
                VERIFIED_FROM,
                &[&id, &error],
            )?)
        })
        .await
    }

    /// Records a failed attempt at `stage`: `failed`, back to `stage` after `retry_in_secs`.
    /// From `downloading` (download) or `uploading | uploaded` (upload, or a failed
    /// verification).
    pub async fn failed(
        &self,
        id: i64,
        stage: Stage,
        error: String,
        retry_in_secs: i64,
    ) -> Result<bool> {
        let from = match stage {
            Stage::Download => FAILED_DOWNLOAD_FROM,
            Stage::Upload => FAILED_UPLOAD_FROM,
        };
        self.call(move |c| {
            Ok(guarded(
                c,
                "state = ?2, failed_stage = ?3, reason = ?4, attempts = attempts + 1,
                    retry_after = ?5",
                from,
                &[&id, &Failed, &stage, &error, &(now() + retry_in_secs)],
            )?)
        })
        .await
    }

    /// Refuses a clip for good (hostile or unusable entry), from any state still to do.
    pub async fn refuse(&self, id: i64, reason: String) -> Result<bool> {
        self.call(move |c| {
            Ok(guarded(
                c,
                "state = ?2, reason = ?3, attempts = attempts + 1",
                REFUSE_FROM,
                &[&id, &Refused, &reason],
            )?)
        })
        .await
    }

    /// `verified | retained → queued`: the bucket no longer confirms the object, so the clip
    /// is offloaded again from the camera (which still has it).
    pub async fn requeue_missing_object(&self, id: i64) -> Result<bool> {
        self.call(move |c| {
            Ok(guarded(
                c,
                "state = ?2, object_key = NULL, etag = NULL, verified_at = NULL,
                    sent_md5 = NULL, sent_parts = NULL, sent_sha256 = NULL",
                REQUEUE_MISSING_OBJECT_FROM,
                &[&id, &Queued],
            )?)
        })
        .await
    }

    /// `verified → retained` (kept on the camera by policy, for now). How many applied.
    pub async fn retained(&self, ids: Vec<i64>) -> Result<usize> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let mut n = 0;
            for id in ids {
                n += usize::from(guarded(
                    &tx,
                    "state = ?2",
                    RETAINED_FROM,
                    &[&id, &Retained],
                )?);
            }
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    /// `verified | retained → deleted` after the camera confirmed the delete. Nothing else can
    /// be marked deleted this way, and never a clip from the spool quarantine. How many
    /// applied.
    pub async fn deleted(&self, ids: Vec<i64>) -> Result<usize> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let t = now();
            let sql = format!(
                // No reason: deleted by the agent, which the camera confirmed (a listing may
                // yet show that it did not: see `reconcile_page`).
                "UPDATE clips SET state = ?2, deleted_at = ?3, on_camera = 0, reason = NULL
                  WHERE id = ?1 AND origin IS NULL AND {}",
                DELETED_FROM.sql()
            );
            let mut n = 0;
            for id in ids {
                n += tx.execute(&sql, params![id, Deleted, t])?;
            }
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    /// `verified | retained → deleted`, and a new generation of its path `queued`: the delete
    /// challenge read other bytes from the camera than those verified, or one that was due
    /// cannot be made ([`Changed`]). Nothing was deleted
    /// (the old row's reason says so; it is off the camera for good); the camera's bytes,
    /// listed with the same size and `date`, are a new clip under a hashed key. `false` when
    /// the clip was no longer verified or retained.
    pub async fn changed_on_camera(&self, id: i64, why: Changed) -> Result<bool> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let t = now();
            let ok = guarded(
                &tx,
                "state = ?2, on_camera = 0, deleted_at = ?3, reason = ?4, challenge_due = 0",
                CHANGED_ON_CAMERA_FROM,
                &[&id, &Deleted, &t, &why.reason()],
            )?;
            if ok {
                tx.execute(
                    "INSERT INTO clips (imei, path, name, size, recorded_at, event, camera,
                        priority, state, first_seen, last_seen, generation, hashed_key, date_ms,
                        listed_size, listed_date, listed_at)
                     SELECT imei, path, name, size, recorded_at, event, camera, priority, ?2,
                        ?3, ?3, generation + 1, 1, date_ms, listed_size, listed_date, listed_at
                     FROM clips WHERE id = ?1",
                    params![id, Queued, t],
                )?;
            }
            tx.commit()?;
            Ok(ok)
        })
        .await
    }

    /// The delete challenge read the bytes verified from the camera: a challenge that was
    /// due (see `reconcile_page`) is done. Not a transition.
    pub async fn challenge_passed(&self, id: i64) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "UPDATE clips SET challenge_due = 0 WHERE id = ?1",
                params![id],
            )?;
            Ok(())
        })
        .await
    }

    /// The block digests recorded when the clip was downloaded; `None` for a clip downloaded
    /// before they were recorded (schema 8 and earlier), or whose digests do not fit its
    /// size.
    pub async fn block_digests(&self, id: i64) -> Result<Option<BlockDigests>> {
        self.call(move |c| {
            let row: Option<(Option<Vec<u8>>, i64)> = c
                .query_row(
                    "SELECT blocks, size FROM clips WHERE id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            Ok(row.and_then(|(blob, size)| {
                BlockDigests::from_blob(blob?).filter(|b| b.fit(size.max(0) as u64))
            }))
        })
        .await
    }

    /// `(new) → downloaded`: a finished spool file no clip named, found in the quarantine
    /// and hashed, becomes a clip of origin `spool` (off the camera, its key the plain one
    /// until a conflict says otherwise), which the uploader offloads like any downloaded
    /// clip. Not when a clip from that file has work left ([`TakenIn::Working`]) or was
    /// offloaded with these very bytes ([`TakenIn::Offloaded`]); a file of other bytes
    /// under a name taken in before is a new generation of that path.
    pub async fn take_in_quarantined(&self, q: Quarantined) -> Result<TakenIn> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let earlier: Vec<(ClipState, Option<String>, i64)> = {
                let mut st = tx.prepare(
                    "SELECT state, sha256, generation FROM clips WHERE imei = ?1 AND path = ?2",
                )?;
                st.query_map(params![q.imei, q.path], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<rusqlite::Result<_>>()?
            };
            if earlier.iter().any(|(s, _, _)| s.is_still_to_do()) {
                return Ok(TakenIn::Working);
            }
            let same = |sha: &Option<String>| sha.as_deref() == Some(q.sha256.as_str());
            if earlier
                .iter()
                .any(|(s, sha, _)| s.is_offloaded() && same(sha))
            {
                return Ok(TakenIn::Offloaded);
            }
            let generation = earlier.iter().map(|e| e.2 + 1).max().unwrap_or(0);
            let t = now();
            tx.execute(
                "INSERT INTO clips (imei, path, name, size, recorded_at, event, camera, priority,
                    state, sha256, on_camera, first_seen, last_seen, downloaded_at, generation,
                    hashed_key, date_ms, origin)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, ?11, ?11, ?11, ?12, 0, ?13,
                    ?14)",
                params![
                    q.imei,
                    q.path,
                    q.name,
                    q.size as i64,
                    q.recorded_at,
                    q.event,
                    q.camera,
                    q.priority,
                    ClipState::Downloaded,
                    q.sha256,
                    t,
                    generation,
                    q.date_ms,
                    Origin::Spool
                ],
            )?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok(TakenIn::New(id))
        })
        .await
    }

    /// Adds to the bytes received for a clip (also on failed attempts, to measure overhead).
    /// Not a transition.
    pub async fn add_received(&self, id: i64, received: u64) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "UPDATE clips SET bytes_received = bytes_received + ?2 WHERE id = ?1",
                params![id, received as i64],
            )?;
            Ok(())
        })
        .await
    }
}
