//! What an upload leaves in the store: the multipart journal of each clip
//! ([`StoreJournal`], so a restart resumes the upload where it stopped) and the digests of
//! what was sent (read back by verification and by retention).

use anyhow::Result;
use futures_util::future::BoxFuture;
use tracing::warn;

use crate::store::{SentRow, Store};
use crate::upload::{DonePart, MultipartProgress, SentDigests, UploadJournal};

/// The upload journal of one clip, kept in the store (each call runs on the store's
/// blocking pool, never on an async worker).
pub(crate) struct StoreJournal {
    pub(crate) store: Store,
    pub(crate) id: i64,
}

impl UploadJournal for StoreJournal {
    fn multipart(&self) -> BoxFuture<'_, Option<MultipartProgress>> {
        Box::pin(async move {
            let (upload_id, part_size, parts) = match self.store.multipart(self.id).await {
                Ok(mp) => mp?,
                Err(e) => {
                    warn!(
                        clip_id = self.id,
                        "state database: read the multipart upload failed: {e:#}"
                    );
                    return None;
                }
            };
            Some(MultipartProgress {
                upload_id,
                part_size,
                parts: parts
                    .into_iter()
                    .map(|(number, etag, sha256_b64, size, md5)| DonePart {
                        number,
                        etag,
                        sha256_b64,
                        md5_hex: md5.unwrap_or_default(),
                        size,
                    })
                    .collect(),
            })
        })
    }

    fn begin_multipart<'a>(
        &'a self,
        upload_id: &'a str,
        part_size: u64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(
            self.store
                .begin_multipart(self.id, upload_id.to_string(), part_size),
        )
    }

    fn part_done<'a>(&'a self, p: &'a DonePart) -> BoxFuture<'a, Result<()>> {
        crate::agent::heartbeat::beat();
        let md5 = Some(p.md5_hex.clone()).filter(|m| !m.is_empty());
        let row = (p.number, p.etag.clone(), p.sha256_b64.clone(), p.size, md5);
        Box::pin(self.store.part_done(self.id, row))
    }

    fn clear_multipart(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.store.clear_multipart(self.id))
    }
}

/// The digests of what was sent, as the store keeps them.
pub(crate) fn sent_row(sent: &SentDigests) -> SentRow {
    match sent {
        SentDigests::Unknown => SentRow::default(),
        SentDigests::Single { md5_hex } => SentRow {
            md5: Some(md5_hex.clone()),
            ..SentRow::default()
        },
        SentDigests::Multipart {
            parts,
            sha256_b64,
            md5_hex,
        } => SentRow {
            md5: Some(md5_hex.clone()),
            parts: Some(*parts),
            composite_sha256: Some(sha256_b64.clone()),
        },
    }
}

/// What was sent for clip `id`, read back from the store (`Unknown` if it cannot be read:
/// verification then reads the object's bytes instead, which is exact but costs traffic).
pub(crate) async fn sent_digests(store: &Store, id: i64) -> SentDigests {
    match store.sent_digests(id).await {
        Ok(SentRow {
            md5: Some(md5_hex),
            parts: None,
            composite_sha256: None,
        }) => SentDigests::Single { md5_hex },
        Ok(SentRow {
            md5: Some(md5_hex),
            parts: Some(parts),
            composite_sha256: Some(sha256_b64),
        }) => SentDigests::Multipart {
            parts,
            sha256_b64,
            md5_hex,
        },
        Ok(_) => SentDigests::Unknown,
        Err(e) => {
            warn!(
                clip_id = id,
                "state database: read the upload digests failed: {e:#}"
            );
            SentDigests::Unknown
        }
    }
}
