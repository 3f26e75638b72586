//! The SQLite state database: schema, migrations, and the clip state machine.
//!
//! One [`Store`] owns the connection; async callers reach it through
//! [`Store::call`], which runs the closure on tokio's blocking pool, never on an async
//! worker. Every state transition is one transaction. WAL mode with
//! `synchronous=FULL`: a committed transition survives a kill -9 or a power cut.
//!
//! A clip is `(imei, path)`. States follow `shared/clip-lifecycle.md`:
//! `seen → queued → downloading → downloaded → uploading → uploaded → verified →
//! deleted | retained`, with `skipped`, `failed` and `lost` on the side.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;

/// Clip states, as stored.
pub mod state {
    pub const SEEN: &str = "seen";
    pub const SKIPPED: &str = "skipped";
    pub const QUEUED: &str = "queued";
    pub const DOWNLOADING: &str = "downloading";
    pub const DOWNLOADED: &str = "downloaded";
    pub const UPLOADING: &str = "uploading";
    pub const UPLOADED: &str = "uploaded";
    pub const VERIFIED: &str = "verified";
    pub const DELETED: &str = "deleted";
    pub const RETAINED: &str = "retained";
    pub const FAILED: &str = "failed";
    pub const LOST: &str = "lost";
    /// Left the camera before this agent offloaded it, but its object is in the bucket under
    /// its key with the listed size: another agent (another depot machine) offloaded it.
    pub const ELSEWHERE: &str = "elsewhere";
    /// Refused for good: a hostile or unusable listing entry (kept with its reason).
    pub const REFUSED: &str = "refused";
}

/// Why a clip is `lost` before the bucket was checked for it ([`Store::lost_unchecked`]).
const LOST_UNCHECKED: &str = "left the camera before it was offloaded (overwritten?)";
/// Why a clip is `lost` once the bucket was checked and does not hold it either.
const LOST_CONFIRMED: &str =
    "left the camera before it was offloaded (overwritten?); not in the bucket either";

/// Where a failed clip goes back to.
pub mod stage {
    pub const DOWNLOAD: &str = "download";
    pub const UPLOAD: &str = "upload";
}

/// Current schema version; [`migrate`] brings any older database up to it.
pub const SCHEMA_VERSION: i64 = 2;

const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE cameras (
        imei         TEXT PRIMARY KEY,
        config_name  TEXT,
        url          TEXT,
        device_name  TEXT,
        firmware     TEXT,
        storage      TEXT,
        first_seen   INTEGER NOT NULL,
        last_seen    INTEGER NOT NULL
    );
    CREATE TABLE clips (
        id            INTEGER PRIMARY KEY,
        imei          TEXT NOT NULL,
        path          TEXT NOT NULL,
        name          TEXT NOT NULL,
        size          INTEGER NOT NULL DEFAULT 0,
        stable_count  INTEGER NOT NULL DEFAULT 0,
        recorded_at   TEXT,
        event         TEXT,
        camera        INTEGER,
        priority      INTEGER NOT NULL DEFAULT 10,
        state         TEXT NOT NULL,
        reason        TEXT,
        failed_stage  TEXT,
        attempts      INTEGER NOT NULL DEFAULT 0,
        retry_after   INTEGER,
        sha256        TEXT,
        object_key    TEXT,
        etag          TEXT,
        upload_id     TEXT,
        part_size     INTEGER,
        on_camera     INTEGER NOT NULL DEFAULT 1,
        first_seen    INTEGER NOT NULL,
        last_seen     INTEGER NOT NULL,
        downloaded_at INTEGER,
        uploaded_at   INTEGER,
        verified_at   INTEGER,
        deleted_at    INTEGER,
        bytes_received INTEGER NOT NULL DEFAULT 0,
        UNIQUE (imei, path)
    );
    CREATE INDEX clips_state ON clips (state, priority, recorded_at);
    CREATE TABLE parts (
        clip_id   INTEGER NOT NULL REFERENCES clips(id) ON DELETE CASCADE,
        number    INTEGER NOT NULL,
        etag      TEXT NOT NULL,
        sha256    TEXT NOT NULL,
        size      INTEGER NOT NULL,
        PRIMARY KEY (clip_id, number)
    );
    "#,
    // 2: notices the agent wants `status` to show (e.g. downloads paused: disk full).
    r#"
    CREATE TABLE notices (
        key      TEXT PRIMARY KEY,
        message  TEXT NOT NULL,
        at       INTEGER NOT NULL
    );
    "#,
];

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Brings the schema to [`SCHEMA_VERSION`], one transaction per step.
fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(anyhow!(
            "the state database has schema version {version}, newer than this program's {SCHEMA_VERSION}: upgrade qucam-offload"
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
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
    pub state: String,
    pub reason: Option<String>,
    pub failed_stage: Option<String>,
    pub attempts: i64,
    pub retry_after: Option<i64>,
    pub sha256: Option<String>,
    pub object_key: Option<String>,
    pub etag: Option<String>,
    pub upload_id: Option<String>,
    pub part_size: Option<i64>,
    pub first_seen: i64,
}

const CLIP_COLS: &str = "id, imei, path, name, size, event, camera, recorded_at, state, reason, \
    failed_stage, attempts, retry_after, sha256, object_key, etag, upload_id, part_size, first_seen";

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
    })
}

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

/// A persisted multipart part: (number, ETag, SHA-256 base64, size).
pub type PartRow = (i32, String, String, u64);

/// Device info kept per IMEI.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CameraRow {
    pub imei: String,
    pub config_name: Option<String>,
    pub url: Option<String>,
    pub device_name: Option<String>,
    pub firmware: Option<String>,
    pub storage: Option<String>,
    pub first_seen: i64,
    pub last_seen: i64,
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
                "cannot open the state database {}: if it is corrupt, stop the agent, move the file aside and start again (clips already in the bucket are recognised and not sent twice)",
                path.display()
            )
        };
        let mut conn = Connection::open(path).with_context(hint)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .with_context(hint)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn).with_context(hint)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction half-applied
        // (SQLite rolls it back), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with the connection, synchronously (for blocking contexts).
    pub fn with<R>(&self, f: impl FnOnce(&mut Connection) -> Result<R>) -> Result<R> {
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
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.with(f))
            .await
            .map_err(|e| anyhow!("state database task failed: {e}"))?
    }

    /// Records a camera sighting and its device info.
    pub async fn camera_seen(&self, row: CameraRow) -> Result<()> {
        self.call(move |c| {
            let t = now();
            c.execute(
                "INSERT INTO cameras (imei, config_name, url, device_name, firmware, storage, first_seen, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
                 ON CONFLICT(imei) DO UPDATE SET config_name = ?2, url = ?3, device_name = ?4,
                    firmware = ?5, storage = ?6, last_seen = ?7",
                params![row.imei, row.config_name, row.url, row.device_name, row.firmware, row.storage, t],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn cameras(&self) -> Result<Vec<CameraRow>> {
        self.call(|c| {
            let mut st = c.prepare(
                "SELECT imei, config_name, url, device_name, firmware, storage, first_seen, last_seen
                 FROM cameras ORDER BY config_name, imei",
            )?;
            let rows = st
                .query_map([], |r| {
                    Ok(CameraRow {
                        imei: r.get(0)?,
                        config_name: r.get(1)?,
                        url: r.get(2)?,
                        device_name: r.get(3)?,
                        firmware: r.get(4)?,
                        storage: r.get(5)?,
                        first_seen: r.get(6)?,
                        last_seen: r.get(7)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

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
        stable_now: std::collections::HashSet<String>,
    ) -> Result<usize> {
        let imei = imei.to_string();
        self.call(move |c| {
            let tx = c.transaction()?;
            let t = now();
            let mut new = 0;
            for l in &page {
                let existing: Option<(i64, i64, String, i64)> = tx
                    .query_row(
                        "SELECT id, size, state, stable_count FROM clips WHERE imei = ?1 AND path = ?2",
                        params![imei, l.path],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional()?;
                let finished = stable_now.contains(&l.path) && !l.too_recent;
                match existing {
                    None => {
                        new += 1;
                        let (st, reason) = if let Some(r) = &l.refuse {
                            (state::REFUSED, Some(r.clone()))
                        } else if let Some(r) = &l.skip {
                            (state::SKIPPED, Some(r.clone()))
                        } else if finished {
                            (state::QUEUED, None)
                        } else {
                            (state::SEEN, None)
                        };
                        tx.execute(
                            "INSERT INTO clips (imei, path, name, size, recorded_at, event, camera, priority,
                                state, reason, first_seen, last_seen)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
                            params![imei, l.path, l.name, l.size as i64, l.recorded_at, l.event,
                                    l.camera, l.priority, st, reason, t],
                        )?;
                    }
                    Some((id, _, st, _)) if st == state::LOST => {
                        // Listed again after all (a listing glitch): back in the running.
                        tx.execute(
                            "UPDATE clips SET size = ?2, stable_count = 0, state = ?3, last_seen = ?4,
                                on_camera = 1, reason = NULL WHERE id = ?1",
                            params![id, l.size as i64, state::SEEN, t],
                        )?;
                    }
                    Some((id, size, st, _))
                        if st == state::SKIPPED && l.skip.is_none() && l.refuse.is_none() =>
                    {
                        // The selection changed: offload it after all.
                        let same = size == l.size as i64;
                        let to = if (same && !l.too_recent) || finished {
                            state::QUEUED
                        } else {
                            state::SEEN
                        };
                        tx.execute(
                            "UPDATE clips SET size = ?2, state = ?3, reason = NULL, last_seen = ?4,
                                on_camera = 1 WHERE id = ?1",
                            params![id, l.size as i64, to, t],
                        )?;
                    }
                    Some((id, _, st, _))
                        if (st == state::SEEN || st == state::QUEUED) && l.skip.is_some() =>
                    {
                        // The selection changed: no longer wanted.
                        tx.execute(
                            "UPDATE clips SET state = ?2, reason = ?3, last_seen = ?4, on_camera = 1
                             WHERE id = ?1",
                            params![id, state::SKIPPED, l.skip, t],
                        )?;
                    }
                    Some((id, size, st, _)) => {
                        let same = size == l.size as i64;
                        let pre_download = st == state::SEEN || st == state::QUEUED
                            || (st == state::FAILED && size != l.size as i64);
                        if !same && pre_download {
                            // Still recording: wait until the size settles.
                            tx.execute(
                                "UPDATE clips SET size = ?2, stable_count = 0, state = ?3, last_seen = ?4,
                                    on_camera = 1 WHERE id = ?1",
                                params![id, l.size as i64, state::SEEN, t],
                            )?;
                            continue;
                        }
                        let promote = st == state::SEEN && ((same && !l.too_recent) || finished);
                        tx.execute(
                            "UPDATE clips SET last_seen = ?2, on_camera = 1,
                                stable_count = CASE WHEN ?3 THEN stable_count + 1 ELSE stable_count END,
                                state = CASE WHEN ?4 THEN ?5 ELSE state END
                             WHERE id = ?1",
                            params![id, t, same, promote, state::QUEUED],
                        )?;
                    }
                }
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
    /// `lost` clips of `imei` whose objects were not looked for in the bucket yet (the agent
    /// was killed, or the bucket was unreachable, since they left the camera).
    pub async fn lost_unchecked(&self, imei: &str) -> Result<Vec<Clip>> {
        let imei = imei.to_string();
        self.call(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {CLIP_COLS} FROM clips WHERE imei = ?1 AND state = ?2 AND reason = ?3"
            ))?;
            let rows = st
                .query_map(params![imei, state::LOST, LOST_UNCHECKED], clip_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    /// A `lost` clip the bucket does not hold either: lost for good. `false` when the clip was
    /// no longer `lost` or already checked.
    pub async fn lost_confirmed(&self, id: i64) -> Result<bool> {
        self.call(move |c| {
            Ok(c.execute(
                "UPDATE clips SET reason = ?2 WHERE id = ?1 AND state = ?3 AND reason = ?4",
                params![id, LOST_CONFIRMED, state::LOST, LOST_UNCHECKED],
            )? == 1)
        })
        .await
    }

    /// A `lost` clip whose object turned out to be in the bucket: `elsewhere`. `false` when
    /// the clip was no longer `lost`.
    pub async fn found_elsewhere(&self, id: i64) -> Result<bool> {
        self.call(move |c| {
            Ok(c.execute(
                "UPDATE clips SET state = ?2, reason = 'left the camera before this agent offloaded it; \
                 its object is in the bucket (offloaded by another agent)' \
                 WHERE id = ?1 AND state = ?3",
                params![id, state::ELSEWHERE, state::LOST],
            )? == 1)
        })
        .await
    }

    pub async fn mark_missing(
        &self,
        imei: &str,
        listed: std::collections::HashSet<String>,
    ) -> Result<Vec<Clip>> {
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
                let before_download = matches!(
                    clip.state.as_str(),
                    state::SEEN | state::QUEUED | state::DOWNLOADING
                ) || (clip.state == state::FAILED
                    && clip.failed_stage.as_deref() == Some(stage::DOWNLOAD));
                if before_download {
                    tx.execute(
                        "UPDATE clips SET state = ?2, on_camera = 0, reason = ?3,
                            retry_after = NULL WHERE id = ?1",
                        params![clip.id, state::LOST, LOST_UNCHECKED],
                    )?;
                    lost.push(clip);
                } else if clip.state == state::VERIFIED {
                    // Verified in the bucket and gone from the camera: its life is over.
                    // This is a delete the camera did but the agent never recorded (a kill
                    // or a lost reply between `delete_file` and `deleted`); left `verified`
                    // it would count as work forever.
                    tx.execute(
                        "UPDATE clips SET state = ?2, on_camera = 0, deleted_at = ?3,
                            reason = 'left the camera after it was verified (delete not confirmed)'
                         WHERE id = ?1",
                        params![clip.id, state::DELETED, now()],
                    )?;
                } else {
                    tx.execute(
                        "UPDATE clips SET on_camera = 0 WHERE id = ?1",
                        params![clip.id],
                    )?;
                }
            }
            tx.commit()?;
            Ok(lost)
        })
        .await
    }

    /// The next clips to download for `imei`: most severe first, then oldest first.
    pub async fn next_downloads(&self, imei: &str, limit: usize) -> Result<Vec<Clip>> {
        let imei = imei.to_string();
        self.call(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {CLIP_COLS} FROM clips WHERE imei = ?1 AND on_camera = 1 AND (
                    state IN ('queued', 'downloading')
                    OR (state = 'failed' AND failed_stage = 'download' AND retry_after <= ?2))
                 ORDER BY priority, recorded_at, name LIMIT ?3"
            ))?;
            let rows = st
                .query_map(params![imei, now(), limit as i64], clip_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    /// Clips waiting for the upload stage (any camera).
    pub async fn next_uploads(&self, exclude: Vec<i64>, limit: usize) -> Result<Vec<Clip>> {
        self.call(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {CLIP_COLS} FROM clips WHERE (
                    state IN ('downloaded', 'uploading', 'uploaded')
                    OR (state = 'failed' AND failed_stage = 'upload' AND retry_after <= ?1))
                 ORDER BY priority, recorded_at, name"
            ))?;
            let rows: Vec<Clip> = st
                .query_map(params![now()], clip_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows
                .into_iter()
                .filter(|c| !exclude.contains(&c.id))
                .take(limit)
                .collect())
        })
        .await
    }

    pub async fn clip(&self, id: i64) -> Result<Clip> {
        self.call(move |c| {
            Ok(c.query_row(
                &format!("SELECT {CLIP_COLS} FROM clips WHERE id = ?1"),
                params![id],
                clip_from_row,
            )?)
        })
        .await
    }

    pub async fn clips_of(&self, imei: &str) -> Result<Vec<Clip>> {
        let imei = imei.to_string();
        self.call(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {CLIP_COLS} FROM clips WHERE imei = ?1 ORDER BY recorded_at, name"
            ))?;
            let rows = st
                .query_map(params![imei], clip_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    /// Moves a clip to `to` if it is in one of `from` (one transaction); false if not.
    pub async fn transition(
        &self,
        id: i64,
        from: &'static [&'static str],
        to: &'static str,
    ) -> Result<bool> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let ok = set_state(&tx, id, from, to)?;
            tx.commit()?;
            Ok(ok)
        })
        .await
    }

    /// `downloading → downloaded`, with the hash, after the file is fsynced and renamed.
    pub async fn downloaded(&self, id: i64, sha256: String) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "UPDATE clips SET state = 'downloaded', sha256 = ?2, downloaded_at = ?3,
                    reason = NULL, failed_stage = NULL, retry_after = NULL
                 WHERE id = ?1",
                params![id, sha256, now()],
            )?;
            Ok(())
        })
        .await
    }

    /// Adds to the bytes received for a clip (also on failed attempts, to measure overhead).
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

    /// `→ uploaded` with the key and ETag.
    pub async fn uploaded(&self, id: i64, key: String, etag: Option<String>) -> Result<()> {
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE clips SET state = 'uploaded', object_key = ?2, etag = ?3, uploaded_at = ?4,
                    upload_id = NULL, reason = NULL, failed_stage = NULL, retry_after = NULL WHERE id = ?1",
                params![id, key, etag, now()],
            )?;
            tx.execute("DELETE FROM parts WHERE clip_id = ?1", params![id])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// `uploaded → verified`: the bucket confirmed size and checksum.
    pub async fn verified(&self, id: i64) -> Result<()> {
        self.call(move |c| {
            // A clip that already left the camera (another agent deleted it, or the camera
            // overwrote it after we downloaded it) has nothing left to do: it is settled.
            c.execute(
                "UPDATE clips SET verified_at = ?2,
                    state = CASE WHEN on_camera = 1 THEN 'verified' ELSE 'deleted' END,
                    deleted_at = CASE WHEN on_camera = 1 THEN deleted_at ELSE ?2 END,
                    reason = CASE WHEN on_camera = 1 THEN reason
                        ELSE 'left the camera before retention (another agent, or overwritten)' END
                 WHERE id = ?1 AND state = 'uploaded'",
                params![id, now()],
            )?;
            Ok(())
        })
        .await
    }

    /// Records a failed attempt: back to `stage` after `retry_after` seconds.
    pub async fn failed(
        &self,
        id: i64,
        failed_stage: &'static str,
        error: String,
        retry_in_secs: i64,
    ) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "UPDATE clips SET state = 'failed', failed_stage = ?2, reason = ?3,
                    attempts = attempts + 1, retry_after = ?4 WHERE id = ?1",
                params![id, failed_stage, error, now() + retry_in_secs],
            )?;
            Ok(())
        })
        .await
    }

    /// Records an error on a clip without changing its state (e.g. a verification that
    /// could not reach the bucket: the clip stays `uploaded` and is verified later).
    pub async fn note_error(&self, id: i64, error: String) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "UPDATE clips SET reason = ?2, attempts = attempts + 1 WHERE id = ?1",
                params![id, error],
            )?;
            Ok(())
        })
        .await
    }

    /// `verified | retained → queued`: the bucket no longer confirms the object, so the
    /// clip is offloaded again from the camera (which still has it).
    pub async fn requeue(&self, id: i64) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "UPDATE clips SET state = 'queued', object_key = NULL, etag = NULL,
                    verified_at = NULL WHERE id = ?1 AND state IN ('verified', 'retained')",
                params![id],
            )?;
            Ok(())
        })
        .await
    }

    /// Bytes of clips held in the spool and not yet verified (the `[spool] max_bytes` cap).
    pub async fn spool_bytes(&self) -> Result<u64> {
        self.call(|c| {
            let used: i64 = c.query_row(
                "SELECT COALESCE(SUM(size), 0) FROM clips WHERE state IN
                    ('downloading', 'downloaded', 'uploading', 'uploaded')
                    OR (state = 'failed' AND failed_stage = 'upload')",
                [],
                |r| r.get(0),
            )?;
            Ok(used.max(0) as u64)
        })
        .await
    }

    /// Refuses a clip for good (hostile or unusable entry).
    pub async fn refuse(&self, id: i64, reason: String) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "UPDATE clips SET state = 'refused', reason = ?2, attempts = attempts + 1 WHERE id = ?1",
                params![id, reason],
            )?;
            Ok(())
        })
        .await
    }

    /// Verified clips of `imei` still on the camera, with their first-seen time.
    pub async fn deletable(&self, imei: &str) -> Result<Vec<Clip>> {
        let imei = imei.to_string();
        self.call(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {CLIP_COLS} FROM clips WHERE imei = ?1 AND on_camera = 1
                    AND state IN ('verified', 'retained') ORDER BY recorded_at"
            ))?;
            let rows = st
                .query_map(params![imei], clip_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    /// Marks clips `retained` (kept on the camera by policy, for now).
    pub async fn retained(&self, ids: Vec<i64>) -> Result<()> {
        self.call(move |c| {
            let tx = c.transaction()?;
            for id in ids {
                tx.execute(
                    "UPDATE clips SET state = 'retained' WHERE id = ?1 AND state = 'verified'",
                    params![id],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Marks clips `deleted` after the camera confirmed the delete. Only verified or
    /// retained clips can be marked: the store refuses anything else.
    pub async fn deleted(&self, ids: Vec<i64>) -> Result<()> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let t = now();
            for id in ids {
                tx.execute(
                    "UPDATE clips SET state = 'deleted', deleted_at = ?2, on_camera = 0
                     WHERE id = ?1 AND state IN ('verified', 'retained')",
                    params![id, t],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Persists the start of a multipart upload.
    pub fn begin_multipart(&self, id: i64, upload_id: &str, part_size: u64) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM parts WHERE clip_id = ?1", params![id])?;
            tx.execute(
                "UPDATE clips SET upload_id = ?2, part_size = ?3 WHERE id = ?1",
                params![id, upload_id, part_size as i64],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Persists one finished part.
    pub fn part_done(
        &self,
        id: i64,
        number: i32,
        etag: &str,
        sha256: &str,
        size: u64,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO parts (clip_id, number, etag, sha256, size) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, number, etag, sha256, size as i64],
            )?;
            Ok(())
        })
    }

    /// The persisted multipart upload of a clip, if any: (upload id, part size, parts).
    pub fn multipart(&self, id: i64) -> Result<Option<(String, u64, Vec<PartRow>)>> {
        self.with(|c| {
            let head: Option<(Option<String>, Option<i64>)> = c
                .query_row(
                    "SELECT upload_id, part_size FROM clips WHERE id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((Some(upload_id), part_size)) = head else {
                return Ok(None);
            };
            let mut st = c.prepare(
                "SELECT number, etag, sha256, size FROM parts WHERE clip_id = ?1 ORDER BY number",
            )?;
            let parts = st
                .query_map(params![id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? as u64))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Some((
                upload_id,
                part_size.unwrap_or(0).max(0) as u64,
                parts,
            )))
        })
    }

    /// Forgets a clip's multipart upload (completed or abandoned).
    pub fn clear_multipart(&self, id: i64) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM parts WHERE clip_id = ?1", params![id])?;
            tx.execute(
                "UPDATE clips SET upload_id = NULL, part_size = NULL WHERE id = ?1",
                params![id],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Clip counts by state for one camera.
    pub async fn counts(&self, imei: &str) -> Result<Vec<(String, i64, i64)>> {
        let imei = imei.to_string();
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT state, COUNT(*), COALESCE(SUM(size), 0) FROM clips WHERE imei = ?1 GROUP BY state ORDER BY state",
            )?;
            let rows = st
                .query_map(params![imei], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    /// Sets (or with `None` clears) a notice shown by `status`.
    pub async fn set_notice(&self, key: String, message: Option<String>) -> Result<()> {
        self.call(move |c| {
            match message {
                Some(m) => c.execute(
                    "INSERT INTO notices (key, message, at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(key) DO UPDATE SET message = ?2, at = ?3",
                    params![key, m, now()],
                )?,
                None => c.execute("DELETE FROM notices WHERE key = ?1", params![key])?,
            };
            Ok(())
        })
        .await
    }

    /// The notice under `key`, if any: (message, since).
    pub async fn notice(&self, key: String) -> Result<Option<(String, i64)>> {
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT message, at FROM notices WHERE key = ?1",
                params![key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
        })
        .await
    }

    /// `PRAGMA integrity_check` result (`"ok"` when healthy).
    pub async fn integrity_check(&self) -> Result<String> {
        self.call(|c| Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?))
            .await
    }
}

fn set_state(tx: &Transaction<'_>, id: i64, from: &[&str], to: &str) -> Result<bool> {
    let cur: Option<String> = tx
        .query_row("SELECT state FROM clips WHERE id = ?1", params![id], |r| {
            r.get(0)
        })
        .optional()?;
    match cur {
        Some(s) if from.contains(&s.as_str()) => {
            tx.execute("UPDATE clips SET state = ?2 WHERE id = ?1", params![id, to])?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            too_recent: false,
        }
    }

    #[tokio::test]
    async fn growing_clip_waits_until_stable() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("state.db")).unwrap();
        let none = std::collections::HashSet::new();
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
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("state.db")).unwrap();
        let stable: std::collections::HashSet<String> =
            ["/v/a.mp4".to_string(), "/v/b.mp4".to_string()].into();
        s.reconcile_page(
            "1",
            vec![listed("/v/a.mp4", 1), listed("/v/b.mp4", 1)],
            stable,
        )
        .await
        .unwrap();
        let b = s.next_downloads("1", 10).await.unwrap()[1].clone();
        s.transition(b.id, &[state::QUEUED], state::DOWNLOADING)
            .await
            .unwrap();
        s.downloaded(b.id, "00".into()).await.unwrap();
        let lost = s.mark_missing("1", Default::default()).await.unwrap();
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].path, "/v/a.mp4");
        assert_eq!(s.clip(b.id).await.unwrap().state, state::DOWNLOADED);
    }

    #[tokio::test]
    async fn only_verified_clips_can_be_marked_deleted() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("state.db")).unwrap();
        let stable: std::collections::HashSet<String> = ["/v/a.mp4".to_string()].into();
        s.reconcile_page("1", vec![listed("/v/a.mp4", 1)], stable)
            .await
            .unwrap();
        let a = s.next_downloads("1", 1).await.unwrap()[0].clone();
        s.deleted(vec![a.id]).await.unwrap();
        assert_eq!(s.clip(a.id).await.unwrap().state, state::QUEUED);
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
}
