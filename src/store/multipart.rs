//! The upload journal of a clip: the multipart upload id, its part size and the finished
//! parts, so an interrupted upload resumes where it stopped; and, once uploaded, the digests
//! of what was sent ([`SentRow`]), which verification compares with the store's checksum or
//! ETag. Not state transitions: the parts belong to a clip while it is `uploading`.

use anyhow::Result;
use rusqlite::{OptionalExtension, params};

use super::Store;

/// A persisted multipart part: (number, ETag, SHA-256 base64, size, MD5 hex; `None` when
/// journaled by an older version).
pub type PartRow = (i32, String, String, u64, Option<String>);

/// What the agent computed about the bytes it uploaded (all `None`: found already there, or
/// uploaded by an older version). Written by [`Store::uploaded`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentRow {
    /// Hex MD5: of the file (single PUT) or of the part MD5s (multipart).
    pub md5: Option<String>,
    /// The part count of a multipart upload.
    pub parts: Option<u32>,
    /// The composite SHA-256 of a multipart upload (base64, without `-N`).
    pub composite_sha256: Option<String>,
}

impl Store {
    /// Persists the start of a multipart upload (forgetting any earlier parts).
    pub async fn begin_multipart(&self, id: i64, upload_id: String, part_size: u64) -> Result<()> {
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM parts WHERE clip_id = ?1", params![id])?;
            tx.execute(
                "UPDATE clips SET upload_id = ?2, part_size = ?3 WHERE id = ?1",
                params![id, upload_id, part_size as i64],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Persists one finished part.
    pub async fn part_done(&self, id: i64, part: PartRow) -> Result<()> {
        self.call(move |c| {
            let (number, etag, sha256, size, md5) = part;
            c.execute(
                "INSERT OR REPLACE INTO parts (clip_id, number, etag, sha256, size, md5)
                    VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, number, etag, sha256, size as i64, md5],
            )?;
            Ok(())
        })
        .await
    }

    /// The persisted multipart upload of a clip, if any: (upload id, part size, parts).
    pub async fn multipart(&self, id: i64) -> Result<Option<(String, u64, Vec<PartRow>)>> {
        self.call(move |c| {
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
                "SELECT number, etag, sha256, size, md5 FROM parts WHERE clip_id = ?1
                    ORDER BY number",
            )?;
            let parts = st
                .query_map(params![id], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get::<_, i64>(3)? as u64,
                        r.get(4)?,
                    ))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Some((
                upload_id,
                part_size.unwrap_or(0).max(0) as u64,
                parts,
            )))
        })
        .await
    }

    /// Forgets a clip's multipart upload (completed or abandoned).
    pub async fn clear_multipart(&self, id: i64) -> Result<()> {
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM parts WHERE clip_id = ?1", params![id])?;
            tx.execute(
                "UPDATE clips SET upload_id = NULL, part_size = NULL WHERE id = ?1",
                params![id],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// What was sent for a clip's object, as [`Store::uploaded`] recorded it (all `None` for
    /// an unknown clip).
    pub async fn sent_digests(&self, id: i64) -> Result<SentRow> {
        self.call(move |c| {
            let row = c
                .query_row(
                    "SELECT sent_md5, sent_parts, sent_sha256 FROM clips WHERE id = ?1",
                    params![id],
                    |r| {
                        Ok(SentRow {
                            md5: r.get(0)?,
                            parts: r
                                .get::<_, Option<i64>>(1)?
                                .and_then(|n| u32::try_from(n).ok()),
                            composite_sha256: r.get(2)?,
                        })
                    },
                )
                .optional()?;
            Ok(row.unwrap_or_default())
        })
        .await
    }
}
