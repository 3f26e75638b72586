//! The SQLite state database: one row per clip, the only place its lifecycle is written.
//!
//! One [`Store`] owns the connection. Every public method is `async` and runs its SQL on
//! tokio's blocking pool, never on an async worker; no SQL exists outside this module.
//! Every state transition is one guarded statement or transaction (`… WHERE id = ? AND state
//! IN (…)`) and reports whether it applied. WAL mode with `synchronous=FULL`: a committed
//! transition survives a kill -9 or a power cut.
//!
//! A clip is `(imei, path, generation)`: a path that holds a new clip gets a new row (see
//! `docs/clip-lifecycle.md`, Identity). A clip taken in from the spool quarantine has
//! [`Origin::Spool`] (its path is its quarantined file): it is never downloaded, offered for
//! a delete from a camera or recorded as deleted by one. The states
//! are [`ClipState`]; the sets of states the program reasons about are defined once there.
//! The rooms: [`schema`] (migrations), [`state`] (states and groups), `transitions` (one
//! guarded method per transition), `listing` (reconciling listings, clips that left the
//! camera), `queries` (reads for the agent, `status`, progress and metrics), `multipart`
//! (the upload journal), `hotspots` (depot Wi-Fi: the camera hotspots met, per BSSID), `window` (windowed
//! listings: per camera, the high-water mark and when it was last listed in full).
//!
//! # Transitions
//!
//! `failed@download` is a `failed` clip whose `failed_stage` is `download`. A transition
//! whose guard does not hold changes nothing and returns `false` (or [`Verified::NotApplied`]).
//! The same table, with the invariants, is `docs/clip-lifecycle.md`.
//!
//! | from | method | to |
//! |---|---|---|
//! | (new) | `reconcile_page` | `refused` (hostile or unusable entry), `skipped` (not selected), `queued` (known finished), else `seen` (listed without a size: never stable until a listing gives one); also a path's new generation (Identity), a later clip at a path refused for good included |
//! | seen | `reconcile_page` | queued (same size listed again and not too recent, or finished) |
//! | seen, queued, downloading, failed@download | `reconcile_page` | seen (listed with another size or `date`: still recording; a partial download is dropped) |
//! | verified | `reconcile_page` | deleted (its path holds a new clip, a new generation: left the camera, not deleted by the agent) |
//! | verified | `reconcile_page` | retained (verified before listings' `date` was recorded, schema 3, and now listed with a `date`: never deleted, see Identity) |
//! | seen, queued | `reconcile_page` | skipped (the selection no longer wants it) |
//! | skipped | `reconcile_page` | queued or seen (the selection wants it now) |
//! | lost | `reconcile_page` | seen (listed again after all) |
//! | refused | `reconcile_page` | seen (refused for a reason that can pass, listed as a directory, and now listed as a clip) |
//! | deleted | `reconcile_page` | verified (deleted by the agent, and listed again with the verified size and `date`: the delete did not take; its challenge due at once, its delete tried again after a backoff) |
//! | seen, queued, downloading, failed@download | `mark_missing` | lost (left the camera before it was downloaded) |
//! | verified | `mark_missing` | deleted (left the camera after it was verified; the delete was not recorded) |
//! | lost | `found_elsewhere` | elsewhere (its object is in the bucket) |
//! | lost | `lost_confirmed` | lost (reason only: the bucket does not hold it either) |
//! | queued, downloading, failed@download | `start_download` | downloading |
//! | downloading | `downloaded` | downloaded |
//! | downloading | `failed(Stage::Download)` | failed |
//! | (new) | `take_in_quarantined` | downloaded (a finished spool file no clip named, from the quarantine: origin `spool`, off the camera for good; its verification makes it deleted, never a delete from a camera) |
//! | downloading | `download_discarded` | queued (another camera answers at the address: bytes dropped, no attempt counted) |
//! | downloaded, uploading, failed@upload | `start_upload` | uploading |
//! | downloaded, uploading, failed@upload | `requeue_for_download` | queued (spool file missing, or no hash); lost when the camera no longer holds it |
//! | uploading | `uploaded` | uploaded |
//! | downloading | `downloaded_and_uploaded` | uploaded (a large clip uploaded while it downloaded, completed after its hash matched) |
//! | uploading, uploaded | `failed(Stage::Upload)` | failed |
//! | uploaded | `verify_postponed` | uploaded (reason only: the bucket could not be asked) |
//! | uploaded | `verified` | verified (still on the camera) |
//! | uploaded | `verified` | **deleted** (already left the camera, or from the quarantine: nothing left to do) |
//! | verified | `retained` | retained |
//! | verified, retained | `deleted` | deleted (the camera confirmed the delete) |
//! | verified, retained | `requeue_missing_object` | queued (the bucket no longer confirms it) |
//! | verified, retained | `changed_on_camera` | deleted (the delete challenge read other bytes on the camera: nothing deleted, the reason says so; the camera's bytes are a new generation, `queued` under a hashed key) |
//! | seen, queued, downloading, downloaded, uploading, uploaded, failed | `refuse` | refused |
//!
//! Nothing else writes `state`. `elsewhere` has no way out; `refused` has one when its
//! reason can pass (a directory), `deleted` one when the camera did not perform the delete.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use rusqlite::Connection;
use serde::Serialize;

mod hotspots;
mod listing;
mod multipart;
mod prune;
mod queries;
pub mod schema;
pub mod state;
mod transitions;
mod window;

pub use hotspots::{CameraWork, HotspotRow, JoinFailed, JoinFailure, Suspicious};
pub use listing::{Listed, PASSING_REFUSALS, REFUSED_AS_DIRECTORY, Reconciled};
pub use multipart::{PartRow, SentRow};
pub use queries::{CameraRow, StateCount, Tally};
pub use schema::SCHEMA_VERSION;
pub use state::{ClipState, Group, Origin, Stage};
pub use transitions::{Changed, Quarantined, TakenIn, Verified};
pub use window::ListingWindow;

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The handle to the state database.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

/// One clip row.
#[derive(Debug, Clone, Serialize)]
pub struct Clip {
    pub id: i64,
    pub imei: String,
    pub path: String,
    pub name: String,
    pub size: u64,
    pub event: String,
    pub camera: i64,
    pub recorded_at: String,
    pub state: ClipState,
    pub reason: Option<String>,
    pub failed_stage: Option<Stage>,
    pub attempts: i64,
    pub retry_after: Option<i64>,
    pub sha256: Option<String>,
    pub object_key: Option<String>,
    pub etag: Option<String>,
    pub upload_id: Option<String>,
    pub part_size: Option<i64>,
    pub first_seen: i64,
    /// 0 for the first clip at this path; + 1 each time the path held a new clip.
    pub generation: i64,
    /// The key carries `~<8 hex of the SHA-256>`: a later generation, or the same file name
    /// at another path (the key is only known once the bytes are hashed).
    pub hashed_key: bool,
    /// The listing's `date` (ms) of the bytes this row holds, when the camera gave one.
    pub date_ms: Option<i64>,
    /// Verified by size and metadata only, and why (nothing the store reports ties the
    /// object to the bytes); `None` when verified exactly, or not verified.
    pub weak_proof: Option<String>,
    /// The delete challenge must read its bytes on the camera in this pass: a listing could
    /// not tell them from those verified (a delete that did not take, a clock shift).
    pub challenge_due: bool,
    /// Where the clip came from: its camera's listing, or the spool quarantine.
    pub origin: Origin,
}

impl Clip {
    /// Whether the clip belongs to `group`.
    pub fn is_in(&self, group: Group) -> bool {
        group.contains(self.state, self.failed_stage)
    }
}

const CLIP_COLS: &str = "id, imei, path, name, size, event, camera, recorded_at, state, reason, \
    failed_stage, attempts, retry_after, sha256, object_key, etag, upload_id, part_size, first_seen, \
    generation, hashed_key, date_ms, weak_proof, challenge_due, origin";

fn clip_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Clip> {
    Ok(Clip {
        id: r.get(0)?,
        imei: r.get(1)?,
        path: r.get(2)?,
        name: r.get(3)?,
        size: r.get::<_, i64>(4)?.max(0) as u64,
        event: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
        camera: r.get::<_, Option<i64>>(6)?.unwrap_or(0),
        recorded_at: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
        state: r.get(8)?,
        reason: r.get(9)?,
        failed_stage: r.get(10)?,
        attempts: r.get(11)?,
        retry_after: r.get(12)?,
        sha256: r.get(13)?,
        object_key: r.get(14)?,
        etag: r.get(15)?,
        upload_id: r.get(16)?,
        part_size: r.get(17)?,
        first_seen: r.get(18)?,
        generation: r.get(19)?,
        hashed_key: r.get(20)?,
        date_ms: r.get(21)?,
        weak_proof: r.get(22)?,
        challenge_due: r.get(23)?,
        origin: r.get(24)?,
    })
}

impl Store {
    /// Opens (creating if needed) the database at `path`, in WAL mode, migrated.
    /// A corrupt or foreign file is an error naming the file, never a silent reset.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        }
        let hint = || {
            format!(
                "cannot open the state database {}: if it is corrupt, stop the agent, move the file aside and start again (clips already in the bucket are recognised and not sent twice; downloaded clips waiting in the spool that the new database does not know are moved to the quarantine dir beside it and offloaded from there, never deleted)",
                path.display()
            )
        };
        let mut conn = Connection::open(path).with_context(hint)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .with_context(hint)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        schema::migrate(&mut conn).with_context(hint)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction half-applied
        // (SQLite rolls it back), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with the connection, synchronously (on the blocking pool, via [`Self::call`]).
    fn with<R>(&self, f: impl FnOnce(&mut Connection) -> Result<R>) -> Result<R> {
        let mut c = self.lock();
        f(&mut c).map_err(|e| self.explain(e))
    }

    /// Names the file and the way out when another process holds the database's lock.
    fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        let locked = e.chain().any(|c| {
            matches!(
                c.downcast_ref::<rusqlite::Error>(),
                Some(rusqlite::Error::SqliteFailure(f, _))
                    if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            )
        });
        if locked {
            e.context(format!(
                "the state database {} is locked by another process: stop whatever holds it (an sqlite3 shell, a backup tool, another agent) and the agent carries on",
                self.path.display()
            ))
        } else {
            e
        }
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.with(f))
            .await
            .map_err(|e| anyhow!("state database task failed: {e}"))?
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_hotspots;
#[cfg(test)]
mod tests_identity;
#[cfg(test)]
mod tests_prune;
#[cfg(test)]
mod tests_quarantine;
#[cfg(test)]
mod tests_window;
