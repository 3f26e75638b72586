//! The schema of the state database and its migrations: [`SCHEMA_VERSION`] and the steps
//! that bring any older database up to it, one transaction per step.

use anyhow::{Result, anyhow};
use rusqlite::Connection;

/// Current schema version; [`migrate`] brings any older database up to it.
pub const SCHEMA_VERSION: i64 = 3;

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
];

/// Brings the schema to [`SCHEMA_VERSION`], one transaction per step.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
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
