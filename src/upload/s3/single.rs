//! The single conditional PUT, and one read of the file that checks its SHA-256 against the
//! download's and computes its MD5 (the ETag an unencrypted object has on a store that
//! keeps no checksum). With [`ChecksumMode::Sha256`] the store checks the body against the
//! download's SHA-256 itself, so the read runs alongside the PUT; without, it runs first,
//! so bytes that are not the download's are never sent.

use std::path::Path;
use std::time::Instant;

use super::super::digests::file_digests;
use super::super::{ObjectMeta, SentDigests, UploadError, UploadOutcome};
use super::errors::{is_precondition_failed, map_sdk_err};
use super::settings::ChecksumMode;
use super::{S3Destination, content_type_for, file_body, to_i64};

impl S3Destination {
    pub(super) async fn put_single(
        &self,
        file: &Path,
        key: &str,
        size: u64,
        meta: &ObjectMeta,
        sha256_b64: &str,
    ) -> Result<UploadOutcome, UploadError> {
        let checked_by_store = self.checksum == ChecksumMode::Sha256;
        let md5_first = if checked_by_store {
            None
        } else {
            Some(file_md5(file, size, &meta.sha256_hex).await?)
        };
        let body = file_body(file, 0, size).await?;
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body)
            .content_length(to_i64(size)?)
            .content_type(content_type_for(key))
            .set_metadata(Some(meta.to_metadata()))
            .if_none_match("*");
        if self.checksum == ChecksumMode::Sha256 {
            request = request.checksum_sha256(sha256_b64);
        }
        tracing::debug!(key, size, "PutObject");
        let started = Instant::now();
        let (md5_hex, sent) = match md5_first {
            Some(md5_hex) => (Ok(md5_hex), request.send().await),
            None => tokio::join!(file_md5(file, size, &meta.sha256_hex), request.send()),
        };
        match sent {
            Ok(out) => {
                self.rate.observe(size, started);
                Ok(UploadOutcome::Uploaded {
                    etag: out.e_tag().unwrap_or_default().to_owned(),
                    sent: SentDigests::Single { md5_hex: md5_hex? },
                })
            }
            Err(e) => {
                let err = map_sdk_err("PutObject", e);
                if is_precondition_failed(&err) {
                    self.after_precondition_failed(key, size, &meta.sha256_hex)
                        .await
                } else {
                    Err(err)
                }
            }
        }
    }
}

/// The MD5 (hex) of the file, after checking its SHA-256 is `sha256_hex` (one read).
async fn file_md5(file: &Path, size: u64, sha256_hex: &str) -> Result<String, UploadError> {
    file_digests(file, vec![size], sha256_hex)
        .await?
        .pop()
        .map(|d| d.md5_hex)
        .ok_or_else(|| UploadError::Other("no digest for a single PUT".into()))
}
