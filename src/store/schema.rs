//! The schema of the state database and its migrations: [`SCHEMA_VERSION`] and the steps
//! that bring any older database up to it, one transaction per step.

use anyhow::{Result, anyhow};
use rusqlite::{Connection, OptionalExtension};

/// Current schema version; [`migrate`] brings any older database up to it.
pub const SCHEMA_VERSION: i64 = 15;

pub(super) const MIGRATIONS: &[&str] = &[
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
    // 3: what the agent computed about the bytes it uploaded, for exact verification after
    // the parts are forgotten (NULL: found already there, or uploaded by an older version):
    // sent_md5 (hex; single PUT: of the file, multipart: of the part MD5s), sent_parts (the
    // part count, multipart only), sent_sha256 (the composite SHA-256, base64, multipart
    // only); and each journaled part's MD5.
    r#"
    ALTER TABLE clips ADD COLUMN sent_md5 TEXT;
    ALTER TABLE clips ADD COLUMN sent_parts INTEGER;
    ALTER TABLE clips ADD COLUMN sent_sha256 TEXT;
    ALTER TABLE parts ADD COLUMN md5 TEXT;
    "#,
    // 4: clip identity. A path that holds a new clip is a new row (`generation` + 1), so
    // `UNIQUE (imei, path)` becomes `UNIQUE (imei, path, generation)` (SQLite cannot drop a
    // constraint: the table is rebuilt, every row kept as generation 0). `hashed_key`: the
    // clip's key carries `~<8 hex of its SHA-256>` (a later generation, or the same name at
    // another path). `date_ms`: the listing's `date` of the bytes this row holds (frozen from
    // the download on, like `size`); `listed_size`, `listed_date`, `listed_at` (ms): what the
    // latest listing showed at this path, which retention compares before a delete.
    r#"
    CREATE TABLE clips_v4 (
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
        sent_md5      TEXT,
        sent_parts    INTEGER,
        sent_sha256   TEXT,
        generation    INTEGER NOT NULL DEFAULT 0,
        hashed_key    INTEGER NOT NULL DEFAULT 0,
        date_ms       INTEGER,
        listed_size   INTEGER,
        listed_date   INTEGER,
        listed_at     INTEGER,
        UNIQUE (imei, path, generation)
    );
    INSERT INTO clips_v4 (id, imei, path, name, size, stable_count, recorded_at, event, camera,
        priority, state, reason, failed_stage, attempts, retry_after, sha256, object_key, etag,
        upload_id, part_size, on_camera, first_seen, last_seen, downloaded_at, uploaded_at,
        verified_at, deleted_at, bytes_received, sent_md5, sent_parts, sent_sha256)
    SELECT id, imei, path, name, size, stable_count, recorded_at, event, camera,
        priority, state, reason, failed_stage, attempts, retry_after, sha256, object_key, etag,
        upload_id, part_size, on_camera, first_seen, last_seen, downloaded_at, uploaded_at,
        verified_at, deleted_at, bytes_received, sent_md5, sent_parts, sent_sha256
    FROM clips;
    DROP TABLE clips;
    ALTER TABLE clips_v4 RENAME TO clips;
    CREATE INDEX clips_state ON clips (state, priority, recorded_at);
    CREATE INDEX clips_name ON clips (imei, name);
    UPDATE clips SET hashed_key = 1
     WHERE state IN ('seen', 'queued', 'skipped', 'lost')
       AND EXISTS (SELECT 1 FROM clips o
                    WHERE o.imei = clips.imei AND o.name = clips.name AND o.id < clips.id);
    "#,
    // 5: how a verified clip's object was tied to its bytes, when only weakly (size and
    // metadata: an SSE-KMS/SSE-C object whose store keeps no checksum); NULL = exactly.
    r#"
    ALTER TABLE clips ADD COLUMN weak_proof TEXT;
    "#,
    // 6: depot Wi-Fi: one row per camera hotspot (BSSID) met, with the IMEI that answered
    // behind it, when it was last seen, joined and completely offloaded (ms), and its join
    // failures (`retry_at`: not before, ms; `wrong_password`: reported once until a join
    // succeeds).
    r#"
    CREATE TABLE hotspots (
        bssid          TEXT PRIMARY KEY,
        ssid           TEXT NOT NULL,
        imei           TEXT,
        signal         INTEGER,
        last_seen      INTEGER,
        last_joined    INTEGER,
        last_complete  INTEGER,
        failures       INTEGER NOT NULL DEFAULT 0,
        retry_at       INTEGER,
        wrong_password INTEGER NOT NULL DEFAULT 0
    );
    "#,
    // 7: a failed join keeps its reason: `last_failure` (a `JoinFailure` text, NULL once a
    // join succeeds; a refused password recorded before becomes 'wrong_password', other
    // failures recorded before have none). The flag keeps only its other use, under a name
    // that says so: `wrong_password_reported` (reported once until a join succeeds).
    r#"
    ALTER TABLE hotspots ADD COLUMN last_failure TEXT;
    UPDATE hotspots SET last_failure = 'wrong_password' WHERE wrong_password = 1;
    ALTER TABLE hotspots RENAME COLUMN wrong_password TO wrong_password_reported;
    "#,
    // 8: deletes the camera acknowledged but did not perform: `delete_misses` counts them
    // for a clip (its path listed again with the verified size and `date` after the agent
    // deleted it); the next delete waits for `retry_after` (Unix seconds), doubling.
    r#"
    ALTER TABLE clips ADD COLUMN delete_misses INTEGER NOT NULL DEFAULT 0;
    "#,
    // 9: the delete challenge: `blocks`, the SHA-256 of each 1 MiB block of the bytes
    // downloaded (32 bytes each; NULL for clips downloaded before), and `challenge_due`, set
    // when a listing cannot tell the camera's bytes from those verified (a delete that did
    // not take, a shift of every `date`): the challenge reads the camera's bytes in this
    // pass, whatever the delete policy.
    r#"
    ALTER TABLE clips ADD COLUMN blocks BLOB;
    ALTER TABLE clips ADD COLUMN challenge_due INTEGER NOT NULL DEFAULT 0;
    "#,
    // 10: where a clip came from: `origin` NULL for a clip a camera listed (every row before
    // this step), 'spool' for a finished spool file no clip named, taken from the quarantine
    // (`docs/clip-lifecycle.md`, Identity): such a clip never allows a delete from a camera.
    r#"
    ALTER TABLE clips ADD COLUMN origin TEXT;
    "#,
    // 11: a camera hotspot whose network failed the check after a join (a lease wider than
    // /24, overlapping a network another device routes, or without the camera's address):
    // not joined before `suspicious_until` (ms) unless its credentials change
    // (`suspicious_credentials`, a SHA-256 fingerprint of those it was joined with);
    // `suspicious_reason` says why, in words. NULL: not suspicious.
    r#"
    ALTER TABLE hotspots ADD COLUMN suspicious_until INTEGER;
    ALTER TABLE hotspots ADD COLUMN suspicious_reason TEXT;
    ALTER TABLE hotspots ADD COLUMN suspicious_credentials TEXT;
    "#,
    // 12: a refused password's ban: `refused_credentials`, the SHA-256 fingerprint of the
    // credentials refused last (NULL: none refused since the last join): other credentials
    // for the hotspot clear the wait at once. A ban recorded before keeps its wait.
    r#"
    ALTER TABLE hotspots ADD COLUMN refused_credentials TEXT;
    "#,
    // 13: `refusals`, the hotspot's refused passwords in a row (reset by a join or other
    // credentials): a wrong password's wait doubles with these only, not with other
    // failures (a truck at the edge of range that timed out is not banned longer).
    r#"
    ALTER TABLE hotspots ADD COLUMN refusals INTEGER NOT NULL DEFAULT 0;
    "#,
    // 14: state that stays small. `clips_imei_state`: a pass reads a camera's clips by state
    // and counts them, never its whole history. `pruned`: what pruning removed, per camera
    // and state (clips, bytes, the latest `verified_at`), so `status` and `/metrics` count
    // the same after rows in final states are pruned (`Store::prune`).
    r#"
    CREATE INDEX clips_imei_state ON clips (imei, state);
    CREATE TABLE pruned (
        imei         TEXT NOT NULL,
        state        TEXT NOT NULL,
        clips        INTEGER NOT NULL DEFAULT 0,
        bytes        INTEGER NOT NULL DEFAULT 0,
        last_verified INTEGER,
        PRIMARY KEY (imei, state)
    );
    "#,
    // 15: windowed listings (`store::window`): per camera, the newest recording time listed
    // (`high_water`, the `recorded_at` form), when it was last listed in full (ms), the
    // offset of its `date` from its clip names (ms), why its windows are not trusted
    // (`broken`, NULL: trusted) and whether its last window returned clips outside it. No
    // row: never listed in full since this step (the next listing is a full one).
    // `selection`: the clip selection of the last full listing (another one lists in full:
    // clips skipped before may be wanted now). The
    // index serves the check of what a window must contain.
    r#"
    CREATE TABLE listing_windows (
        imei            TEXT PRIMARY KEY,
        high_water      TEXT,
        full_listed_at  INTEGER,
        date_offset_ms  INTEGER,
        broken          TEXT,
        overreach       INTEGER NOT NULL DEFAULT 0,
        selection       TEXT
    );
    CREATE INDEX clips_window ON clips (imei, recorded_at);
    "#,
];

/// Brings the schema to [`SCHEMA_VERSION`], one transaction per step.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(anyhow!(
            "the state database has schema version {version}, newer than this program's {SCHEMA_VERSION}: upgrade qucam-offload"
        ));
    }
    // Step 4 rebuilds `clips`, which `parts` references: dropping the old table must not
    // cascade to the parts (foreign keys can only be switched outside a transaction).
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        let broken: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()?;
        if let Some(table) = broken {
            return Err(anyhow!("migration {} broke a reference in {table}", i + 1));
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}
