//! Reads, as named methods returning typed rows: the work queues of the agent, and what
//! `status`, the progress bars and `/metrics` show. Also the camera rows and the notices
//! (small writes that are not clip transitions).

use std::collections::{BTreeMap, HashSet};

use anyhow::Result;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::state::{ClipState, Group, in_list};
use super::transitions::DELETED_FROM;
use super::{CLIP_COLS, Clip, Store, clip_from_row, now};

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

/// How many clips of a camera are in one state, and their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateCount {
    pub state: ClipState,
    pub clips: i64,
    pub bytes: i64,
}

/// A camera's progress, from one query so a bar never runs backwards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Clips in [`ClipState::PENDING`].
    pub pending: u64,
    /// Clips verified since the given time, and their bytes.
    pub verified: u64,
    pub verified_bytes: u64,
}

fn clips(c: &rusqlite::Connection, sql_where: &str, p: impl rusqlite::Params) -> Result<Vec<Clip>> {
    let mut st = c.prepare(&format!("SELECT {CLIP_COLS} FROM clips WHERE {sql_where}"))?;
    let rows = st
        .query_map(p, clip_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

impl Store {
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

    /// Every camera ever seen, by configured name.
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

    /// The next clips to download for `imei` ([`Group::DOWNLOAD_WORK`], failed ones once their
    /// retry time has come): most severe first, then oldest first.
    pub async fn next_downloads(&self, imei: &str, limit: usize) -> Result<Vec<Clip>> {
        let imei = imei.to_string();
        self.call(move |c| {
            let cond = format!(
                "imei = ?1 AND on_camera = 1 AND origin IS NULL AND {}
                    AND (state != 'failed' OR retry_after <= ?2)
                 ORDER BY priority, recorded_at, name LIMIT ?3",
                Group::DOWNLOAD_WORK.sql()
            );
            clips(c, &cond, params![imei, now(), limit as i64])
        })
        .await
    }

    /// Clips waiting for the uploader ([`Group::UPLOAD_WORK`], failed ones once their retry
    /// time has come), any camera, except `exclude`.
    pub async fn next_uploads(&self, exclude: Vec<i64>, limit: usize) -> Result<Vec<Clip>> {
        self.call(move |c| {
            let cond = format!(
                "{} AND (state != 'failed' OR retry_after <= ?1) ORDER BY priority, recorded_at, name",
                Group::UPLOAD_WORK.sql()
            );
            let rows = clips(c, &cond, params![now()])?;
            Ok(rows
                .into_iter()
                .filter(|c| !exclude.contains(&c.id))
                .take(limit)
                .collect())
        })
        .await
    }

    /// Every clip of `imei`, oldest first.
    pub async fn clips_of(&self, imei: &str) -> Result<Vec<Clip>> {
        let imei = imei.to_string();
        self.call(move |c| clips(c, "imei = ?1 ORDER BY recorded_at, name", params![imei]))
            .await
    }

    /// The clips of `imei` in `states`, oldest first: a pass reads what it needs by state
    /// (the `clips_imei_state` index), never the camera's whole history.
    pub async fn clips_in(&self, imei: &str, states: &'static [ClipState]) -> Result<Vec<Clip>> {
        let imei = imei.to_string();
        self.call(move |c| {
            let cond = format!(
                "imei = ?1 AND state IN {} ORDER BY recorded_at, name",
                in_list(states)
            );
            clips(c, &cond, params![imei])
        })
        .await
    }

    /// How many clips of `imei` are in `states` (an aggregate, by the `clips_imei_state`
    /// index).
    pub async fn count_in(&self, imei: &str, states: Vec<ClipState>) -> Result<usize> {
        let imei = imei.to_string();
        self.call(move |c| {
            let sql = format!(
                "SELECT COUNT(*) FROM clips WHERE imei = ?1 AND state IN {}",
                in_list(&states)
            );
            let n: i64 = c.query_row(&sql, params![imei], |r| r.get(0))?;
            Ok(n.max(0) as usize)
        })
        .await
    }

    /// Which of `paths` no row of `imei` has (paths new to the store), by the
    /// `(imei, path, generation)` index.
    pub async fn unknown_paths(&self, imei: &str, paths: Vec<String>) -> Result<HashSet<String>> {
        let imei = imei.to_string();
        self.call(move |c| {
            let mut st =
                c.prepare_cached("SELECT 1 FROM clips WHERE imei = ?1 AND path = ?2 LIMIT 1")?;
            let mut out = HashSet::new();
            for p in paths {
                if !st.exists(params![imei, p])? {
                    out.insert(p);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Clips of `imei` still on the camera that may be deleted from it (verified or
    /// retained: the guard of [`Store::deleted`]), oldest first: only those a listing since
    /// `listed_since` (ms, [`super::now_ms`]) showed with the size and `date` of the bytes
    /// that were verified (a path that now holds other bytes is never deleted on the old
    /// clip's strength). Never a clip from the spool quarantine (its camera path is unknown),
    /// nor one whose challenge is due and has not passed (a listing could not tell its bytes
    /// on the camera from those verified).
    pub async fn deletable(&self, imei: &str, listed_since: i64) -> Result<Vec<Clip>> {
        let imei = imei.to_string();
        self.call(move |c| {
            let cond = format!(
                "imei = ?1 AND on_camera = 1 AND origin IS NULL AND {} AND listed_at >= ?2
                    AND listed_size = size AND listed_date IS date_ms AND challenge_due = 0
                    AND (delete_misses = 0 OR retry_after IS NULL OR retry_after <= ?3)
                    ORDER BY recorded_at",
                DELETED_FROM.sql()
            );
            clips(c, &cond, params![imei, listed_since, now()])
        })
        .await
    }

    /// Clips of `imei` whose challenge is due (see [`Store::reconcile_page_with`]) and that a
    /// listing since `listed_since` (ms) showed with the size and `date` verified: their
    /// bytes on the camera are read in this pass, whatever the delete policy.
    pub async fn challenges_due(&self, imei: &str, listed_since: i64) -> Result<Vec<Clip>> {
        let imei = imei.to_string();
        self.call(move |c| {
            let cond = format!(
                "imei = ?1 AND on_camera = 1 AND origin IS NULL AND challenge_due = 1 AND {}
                    AND listed_at >= ?2
                    AND listed_size = size AND listed_date IS date_ms ORDER BY recorded_at",
                DELETED_FROM.sql()
            );
            clips(c, &cond, params![imei, listed_since])
        })
        .await
    }

    /// Per camera (IMEI), the clips still on it whose delete the camera acknowledged and
    /// did not perform (verified again, their delete waiting for a retry).
    pub async fn deletes_not_taken(&self) -> Result<std::collections::HashMap<String, usize>> {
        self.call(|c| {
            let sql = format!(
                "SELECT imei, COUNT(*) FROM clips WHERE delete_misses > 0 AND on_camera = 1
                    AND {} GROUP BY imei",
                DELETED_FROM.sql()
            );
            let mut st = c.prepare(&sql)?;
            let rows = st
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    /// Bytes of clips in [`Group::IN_SPOOL`] (the `[spool] max_bytes` cap).
    pub async fn spool_bytes(&self) -> Result<u64> {
        self.call(|c| {
            let sql = format!(
                "SELECT COALESCE(SUM(size), 0) FROM clips WHERE {}",
                Group::IN_SPOOL.sql()
            );
            let used: i64 = c.query_row(&sql, [], |r| r.get(0))?;
            Ok(used.max(0) as u64)
        })
        .await
    }

    /// Clip counts and bytes by state for one camera (states without clips are left out),
    /// the rows pruned included (`Store::prune`): pruning changes no count.
    pub async fn counts(&self, imei: &str) -> Result<Vec<StateCount>> {
        let imei = imei.to_string();
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT state, SUM(n), SUM(b) FROM (
                    SELECT state, COUNT(*) AS n, COALESCE(SUM(size), 0) AS b FROM clips
                     WHERE imei = ?1 GROUP BY state
                    UNION ALL
                    SELECT state, clips, bytes FROM pruned WHERE imei = ?1)
                 GROUP BY state ORDER BY state",
            )?;
            let rows = st
                .query_map(params![imei], |r| {
                    Ok(StateCount {
                        state: r.get(0)?,
                        clips: r.get(1)?,
                        bytes: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    /// A camera's pending clips and those verified since `since` (Unix time).
    pub async fn tally(&self, imei: &str, since: i64) -> Result<Tally> {
        let imei = imei.to_string();
        self.call(move |c| {
            let sql = format!(
                "SELECT
                    COALESCE(SUM(state IN {}), 0),
                    COALESCE(SUM(verified_at >= ?2), 0),
                    COALESCE(SUM(CASE WHEN verified_at >= ?2 THEN size ELSE 0 END), 0)
                 FROM clips WHERE imei = ?1",
                in_list(ClipState::PENDING)
            );
            Ok(c.query_row(&sql, params![imei, since], |r| {
                Ok(Tally {
                    pending: r.get::<_, i64>(0)?.max(0) as u64,
                    verified: r.get::<_, i64>(1)?.max(0) as u64,
                    verified_bytes: r.get::<_, i64>(2)?.max(0) as u64,
                })
            })?)
        })
        .await
    }

    /// When each camera's last clip was verified (IMEI → Unix time), pruned rows included.
    pub async fn last_verified(&self) -> Result<BTreeMap<String, i64>> {
        self.call(|c| {
            let mut st = c.prepare(
                "SELECT imei, MAX(t) FROM (
                    SELECT imei, verified_at AS t FROM clips WHERE verified_at IS NOT NULL
                    UNION ALL
                    SELECT imei, last_verified FROM pruned WHERE last_verified > 0)
                 GROUP BY imei",
            )?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    /// Whether the database answers a query (the health check).
    pub async fn ping(&self) -> Result<()> {
        self.call(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
            Ok(())
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

    /// One clip, for tests.
    #[cfg(test)]
    pub(crate) async fn clip(&self, id: i64) -> Result<Clip> {
        self.call(move |c| {
            clips(c, "id = ?1", params![id])?
                .pop()
                .ok_or_else(|| anyhow::anyhow!("no clip {id}"))
        })
        .await
    }
}
