//! Is the stored object really the clip we hold: [`S3Destination::verify`] and `holds`,
//! HeadObject compared with the file, the store's SHA-256 checksum checked, and the
//! GET-and-hash fallback when the store keeps none.

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use sha2::{Digest, Sha256};

use super::super::{SHA256_META_KEY, UploadError, UploadOutcome, Verification, hex_to_b64};
use super::S3Destination;
use super::errors::map_sdk_err;
use super::settings::{MAX_PARTS, MIN_PART_SIZE, part_count};

impl S3Destination {
    /// Checks the object under `key` with HeadObject: its size and `sha256` metadata must
    /// match, and when the store reports a SHA-256 checksum it must be either the full-object
    /// form (`base64(sha256(file))`, single PUT) or the multipart composite form
    /// `base64(sha256(part digests))-N`.
    ///
    /// The composite cannot be recomputed here (the part digests are gone by verify time), so
    /// only its shape is checked: N must be a part count that a legal part size could give
    /// for this size, `1 ..= ceil(size / 5 MiB)` (our own uploads use
    /// `ceil(size / part_size)`, which is in that range; accepting the range keeps objects
    /// uploaded before a `part_size` change verifiable). The content itself is covered by the
    /// `sha256` metadata and by the per-part SHA-256 checksums the store validated on upload.
    ///
    /// When the store reports no SHA-256 checksum at all (`checksum = "when_required"`, an
    /// object someone else put, a store that keeps none for multipart objects), the metadata
    /// is only a claim: the object is read with GetObject and its bytes hashed.
    pub async fn verify(
        &self,
        key: &str,
        size: u64,
        sha256_hex: &str,
    ) -> Result<Verification, UploadError> {
        let Some(head) = self.head(key).await? else {
            return Ok(Verification::Missing);
        };
        if let Err(detail) = compare_head(&head, size, sha256_hex) {
            return Ok(Verification::Mismatch(detail));
        }
        let checked = match head.checksum_sha256() {
            Some(c) => check_store_checksum(c, sha256_hex, size),
            // No SHA-256 from the store (put without one, or a store that keeps none for
            // multipart objects): the metadata is only a claim, so hash the bytes themselves.
            None => match self.object_sha256(key).await? {
                None => return Ok(Verification::Missing),
                Some(s) if s.eq_ignore_ascii_case(sha256_hex.trim()) => Ok(()),
                Some(s) => Err(format!(
                    "sha256 of the stored bytes: {s}, expected {sha256_hex}"
                )),
            },
        };
        Ok(match checked {
            Ok(()) => Verification::Verified,
            Err(detail) => Verification::Mismatch(detail),
        })
    }

    /// SHA-256 (hex) of the object's bytes, read with GetObject; `None` when it is gone.
    async fn object_sha256(&self, key: &str) -> Result<Option<String>, UploadError> {
        let result = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        let mut body = match result {
            Ok(out) => out.body,
            Err(SdkError::ServiceError(se)) if se.err().is_no_such_key() => return Ok(None),
            Err(e) => return Err(map_sdk_err("GetObject", e)),
        };
        let mut hasher = Sha256::new();
        while let Some(chunk) = body.try_next().await.map_err(|e| UploadError::Network {
            op: "GetObject",
            message: e.to_string(),
        })? {
            hasher.update(&chunk);
        }
        Ok(Some(hex::encode(hasher.finalize())))
    }

    /// Whether an object of `size` bytes with `sha256` metadata is under `key`.
    pub async fn holds(&self, key: &str, size: u64) -> Result<bool, UploadError> {
        Ok(self.head(key).await?.is_some_and(|h| {
            h.content_length() == i64::try_from(size).ok()
                && h.metadata()
                    .is_some_and(|m| m.keys().any(|k| k.eq_ignore_ascii_case(SHA256_META_KEY)))
        }))
    }

    /// Our conditional write lost (412): someone else finished the key first.
    pub(super) async fn after_precondition_failed(
        &self,
        key: &str,
        size: u64,
        sha256_hex: &str,
    ) -> Result<UploadOutcome, UploadError> {
        match self.head(key).await? {
            Some(head) => match compare_head(&head, size, sha256_hex) {
                Ok(()) => Ok(UploadOutcome::AlreadyPresent),
                Err(detail) => Err(UploadError::Conflict {
                    key: key.to_owned(),
                    detail,
                }),
            },
            None => Err(UploadError::Service {
                op: "PutObject",
                status: 412,
                code: "PreconditionFailed".into(),
                message: "precondition failed but the object is not there; retry".into(),
                transient: true,
            }),
        }
    }
}

/// `Err(what differs)` unless the object has `size` bytes and `sha256` metadata `sha256_hex`.
pub(super) fn compare_head(
    head: &HeadObjectOutput,
    size: u64,
    sha256_hex: &str,
) -> Result<(), String> {
    let stored_len = head.content_length().unwrap_or(-1);
    if u64::try_from(stored_len).ok() != Some(size) {
        return Err(format!("size: stored {stored_len} bytes, expected {size}"));
    }
    let stored_sha = head.metadata().and_then(|m| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(SHA256_META_KEY))
            .map(|(_, v)| v.as_str())
    });
    match stored_sha {
        Some(s) if s.eq_ignore_ascii_case(sha256_hex.trim()) => Ok(()),
        Some(s) => Err(format!(
            "sha256 metadata: stored {s}, expected {sha256_hex}"
        )),
        None => Err("sha256 metadata: missing".into()),
    }
}

/// Checks the store's `checksum_sha256`: the full-object form must equal the file's digest;
/// the composite form `...-N` must have a part count possible for `size` (see `verify`).
fn check_store_checksum(checksum: &str, sha256_hex: &str, size: u64) -> Result<(), String> {
    if let Some((_, n)) = checksum.rsplit_once('-') {
        let max_parts = part_count(size, MIN_PART_SIZE).clamp(1, MAX_PARTS);
        return match n.parse::<u64>() {
            Ok(n) if (1..=max_parts).contains(&n) => Ok(()),
            _ => Err(format!(
                "composite checksum {checksum}: impossible part count for {size} bytes \
                 (1..={max_parts})"
            )),
        };
    }
    let expected = hex_to_b64(sha256_hex).map_err(|e| e.to_string())?;
    if checksum == expected {
        Ok(())
    } else {
        Err(format!(
            "checksum sha256: stored {checksum}, expected {expected}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn store_checksum_forms() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let full = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert!(check_store_checksum(full, hex, 0).is_ok());
        assert!(check_store_checksum("AAAA", hex, 0).is_err());
        assert!(check_store_checksum("abc=-3", hex, 12 * MIB).is_ok());
        assert!(check_store_checksum("abc=-2", hex, 12 * MIB).is_ok());
        assert!(check_store_checksum("abc=-4", hex, 12 * MIB).is_err());
        assert!(check_store_checksum("abc=-0", hex, 12 * MIB).is_err());
        assert!(check_store_checksum("abc=-x", hex, 12 * MIB).is_err());
    }
}
