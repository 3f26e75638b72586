//! The agent's state database as the tests read it: typed rows, and the few writes a test
//! makes to set up a state. Every SQL string the tests use is here, so a schema change
//! touches this file and no test.
//!
//! A plain rusqlite connection, independent of the store's own code (no migrations run).
//! Readers without `try_` panic on an error; the `try_` ones return it, for tests that poll
//! a database the agent is writing (it may not have its tables yet).
#![allow(dead_code)]

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

/// The columns of a row of `clips` that tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipRow {
    pub id: i64,
    pub imei: String,
    /// The camera's path of the clip.
    pub path: String,
    pub name: String,
    pub generation: i64,
    pub size: i64,
    pub state: String,
    pub reason: Option<String>,
    pub attempts: i64,
    /// Unix seconds.
    pub retry_after: Option<i64>,
    pub sha256: Option<String>,
    /// The multipart upload journaled for the clip.
    pub upload_id: Option<String>,
    pub hashed_key: bool,
    pub date_ms: Option<i64>,
    pub verified_at: Option<i64>,
    /// Journaled multipart parts of the clip.
    pub parts: i64,
}

impl ClipRow {
    /// Whether `reason` contains `text`, as SQL's `reason LIKE '%text%'` does (ASCII
    /// letters in either case).
    pub fn reason_like(&self, text: &str) -> bool {
        self.reason
            .as_deref()
            .is_some_and(|r| r.to_ascii_lowercase().contains(&text.to_ascii_lowercase()))
    }
}

/// A row of `parts` (a journaled multipart part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRow {
    pub clip_id: i64,
    pub number: i64,
    pub size: i64,
}

/// A row of `hotspots` (what the agent learned about a camera's hotspot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotspotRow {
    pub bssid: String,
    pub imei: Option<String>,
}

const CLIPS: &str = "SELECT id, imei, path, name, generation, size, state, reason, attempts,
        retry_after, sha256, upload_id, hashed_key, date_ms, verified_at,
        (SELECT COUNT(*) FROM parts WHERE clip_id = clips.id)
    FROM clips ORDER BY id";

/// A connection to a state database.
pub struct Db(Connection);

impl Db {
    /// Opens `path` read-write (as `sqlite3` would: a missing file is created empty).
    pub fn open(path: &Path) -> Db {
        Db(Connection::open(path).expect("open db"))
    }

    /// Opens `path` read-only; `None` while it does not exist or cannot be opened.
    pub fn open_read_only(path: &Path) -> Option<Db> {
        if !path.exists() {
            return None;
        }
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()
            .map(Db)
    }

    /// Every clip, in id order (the order rows were added).
    pub fn clips(&self) -> Vec<ClipRow> {
        self.try_clips().expect("read the clips")
    }

    pub fn try_clips(&self) -> rusqlite::Result<Vec<ClipRow>> {
        let mut st = self.0.prepare(CLIPS)?;
        st.query_map([], |r| {
            Ok(ClipRow {
                id: r.get(0)?,
                imei: r.get(1)?,
                path: r.get(2)?,
                name: r.get(3)?,
                generation: r.get(4)?,
                size: r.get(5)?,
                state: r.get(6)?,
                reason: r.get(7)?,
                attempts: r.get(8)?,
                retry_after: r.get(9)?,
                sha256: r.get(10)?,
                upload_id: r.get(11)?,
                hashed_key: r.get(12)?,
                date_ms: r.get(13)?,
                verified_at: r.get(14)?,
                parts: r.get(15)?,
            })
        })?
        .collect()
    }

    /// The first clip (by id) named `name`.
    pub fn clip(&self, name: &str) -> ClipRow {
        self.clips()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no clip row named {name}"))
    }

    /// Every journaled multipart part, by clip id and part number.
    pub fn try_parts(&self) -> rusqlite::Result<Vec<PartRow>> {
        let mut st = self
            .0
            .prepare("SELECT clip_id, number, size FROM parts ORDER BY clip_id, number")?;
        st.query_map([], |r| {
            Ok(PartRow {
                clip_id: r.get(0)?,
                number: r.get(1)?,
                size: r.get(2)?,
            })
        })?
        .collect()
    }

    /// The IMEIs of the cameras the agent has met, sorted.
    pub fn cameras(&self) -> Vec<String> {
        let mut st = self
            .0
            .prepare("SELECT imei FROM cameras ORDER BY imei")
            .expect("read the cameras");
        st.query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .expect("read the cameras")
    }

    /// The message of the notice under `key`, if there is one.
    pub fn notice(&self, key: &str) -> Option<String> {
        let mut st = self
            .0
            .prepare("SELECT message FROM notices WHERE key = ?1")
            .expect("read the notices");
        let mut rows = st.query([key]).expect("read the notices");
        rows.next()
            .expect("read the notices")
            .map(|r| r.get(0).expect("read the notices"))
    }

    /// Every hotspot the agent knows, by BSSID.
    pub fn hotspots(&self) -> Vec<HotspotRow> {
        let mut st = self
            .0
            .prepare("SELECT bssid, imei FROM hotspots ORDER BY bssid")
            .expect("read the hotspots");
        st.query_map([], |r| {
            Ok(HotspotRow {
                bssid: r.get(0)?,
                imei: r.get(1)?,
            })
        })
        .and_then(|rows| rows.collect())
        .expect("read the hotspots")
    }

    /// SQLite's `PRAGMA integrity_check`: "ok" for a sound database.
    pub fn try_integrity_check(&self) -> rusqlite::Result<String> {
        self.0.query_row("PRAGMA integrity_check", [], |r| r.get(0))
    }

    /// Sets the clip at camera path `path` back to `seen` with size `size`, as if a listing
    /// had shown it grown before its download finished: its digest, stability count, failure
    /// and multipart upload are forgotten. Returns the rows changed.
    pub fn set_back_to_seen(&self, path: &str, size: i64) -> usize {
        self.0
            .execute(
                "UPDATE clips SET state = 'seen', size = ?1, sha256 = NULL, stable_count = 0,
                    failed_stage = NULL, retry_after = NULL, upload_id = NULL WHERE path = ?2",
                rusqlite::params![size, path],
            )
            .expect("update the clip")
    }

    /// Moves every clip's times `secs` into the past (last seen, verified, deleted), as if
    /// the run that wrote them was that long ago. Returns the rows changed.
    pub fn age_clips(&self, secs: i64) -> usize {
        self.0
            .execute(
                "UPDATE clips SET last_seen = last_seen - ?1, verified_at = verified_at - ?1,
                    deleted_at = deleted_at - ?1",
                rusqlite::params![secs],
            )
            .expect("age the clips")
    }

    /// Makes every camera's full listing due, as if `sync.full_listing_every` had passed
    /// since the last one. Returns the cameras changed.
    pub fn make_full_listing_due(&self) -> usize {
        self.0
            .execute("UPDATE listing_windows SET full_listed_at = 0", [])
            .expect("update the listing windows")
    }

    /// Forgets the block digests of every clip, as in a database of schema 8 or earlier
    /// (clips downloaded before the delete challenge existed). Returns the rows changed.
    pub fn forget_block_digests(&self) -> usize {
        self.0
            .execute(
                "UPDATE clips SET blocks = NULL WHERE blocks IS NOT NULL",
                [],
            )
            .expect("update the clips")
    }

    /// The failed joins in a row of hotspot `bssid` and how long it waits from now (ms; none
    /// when it does not wait).
    pub fn hotspot_wait(&self, bssid: &str) -> (u32, Option<i64>) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64;
        self.0
            .query_row(
                "SELECT failures, retry_at FROM hotspots WHERE bssid = ?1",
                [bssid],
                |r| Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.map(|t| t - now))),
            )
            .expect("read the hotspot")
    }

    /// Ends the wait of hotspot `bssid` now, as if its time had come (the clock moved on).
    pub fn end_hotspot_wait(&self, bssid: &str) {
        self.0
            .execute("UPDATE hotspots SET retry_at = 0 WHERE bssid = ?1", [bssid])
            .expect("update the hotspot");
    }

    /// Takes the database's write lock and holds it until [`Db::rollback`] or the
    /// connection is dropped (as an `sqlite3` shell or a backup tool might).
    pub fn begin_exclusive(&self) {
        self.0
            .execute_batch("BEGIN EXCLUSIVE")
            .expect("lock the db");
    }

    /// Ends the transaction [`Db::begin_exclusive`] began, writing nothing.
    pub fn rollback(&self) {
        self.0.execute_batch("ROLLBACK").expect("roll back");
    }
}
