//! Is the stored object really the clip we hold: [`S3Destination::verify_sent`] and `holds`.
//! HeadObject's size and `sha256` metadata must match; then what the store reports about
//! the content is compared exactly with what the agent computed (`forms::judge`), and when
//! nothing reported can be compared, the object is read back and hashed.

use std::collections::HashSet;
use std::sync::Mutex;

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use sha2::{Digest, Sha256};

use super::super::{
    OVERLAPPED_META_KEY, SHA256_META_KEY, SentDigests, UploadError, UploadOutcome, Verification,
};
use super::S3Destination;
use super::errors::map_sdk_err;
use super::forms::{self, Reported, Verdict, judge};

/// Keys already warned about being verified on size and metadata only (bounded).
#[derive(Debug, Default)]
pub(super) struct WarnedOnce(Mutex<HashSet<String>>);

impl WarnedOnce {
    /// True the first time for `key` (the set is cleared when it grows large).
    fn first(&self, key: &str) -> bool {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= 10_000 {
            set.clear();
        }
        set.insert(key.to_owned())
    }
}

impl S3Destination {
    /// [`S3Destination::verify_sent`] for an object the agent has no upload digests of.
    pub async fn verify(
        &self,
        key: &str,
        size: u64,
        sha256_hex: &str,
    ) -> Result<Verification, UploadError> {
        self.verify_sent(key, size, sha256_hex, &SentDigests::Unknown)
            .await
    }

    /// Checks the object under `key` with HeadObject: its size and `sha256` metadata must
    /// match, and its content must be tied to the clip's bytes by the first form that
    /// applies (see `forms`): the store's SHA-256 checksum (full-object, or composite equal
    /// to the one computed from the part digests in `sent`), else the ETag (equal to the MD5
    /// or MD5-of-MD5s`-N` in `sent`), else the object is read back with GetObject and hashed
    /// (costs its size in traffic). An SSE-KMS/SSE-C object the agent uploaded itself, whose
    /// store keeps no checksum, is accepted on size and metadata, with a warning per key.
    pub async fn verify_sent(
        &self,
        key: &str,
        size: u64,
        sha256_hex: &str,
        sent: &SentDigests,
    ) -> Result<Verification, UploadError> {
        let Some(head) = self.head(key).await? else {
            return Ok(Verification::Missing);
        };
        self.judge_head(key, &head, size, sha256_hex, sent).await
    }

    /// [`S3Destination::verify_sent`] of the object whose HeadObject is `head`.
    async fn judge_head(
        &self,
        key: &str,
        head: &HeadObjectOutput,
        size: u64,
        sha256_hex: &str,
        sent: &SentDigests,
    ) -> Result<Verification, UploadError> {
        if let Err(detail) = compare_head(head, size, sha256_hex) {
            return Ok(Verification::Mismatch(detail));
        }
        let reported = Reported {
            checksum_sha256: head.checksum_sha256(),
            etag: head.e_tag(),
            encrypted: encryption(head),
        };
        let verdict = match judge(&reported, sha256_hex, sent) {
            // No `sha256` metadata to rely on: only the bytes can settle it.
            Verdict::SizeAndMetadata(_) if overlapped(head) => {
                Verdict::ReadBytes("an overlapped object has no sha256 metadata")
            }
            v => v,
        };
        Ok(match verdict {
            Verdict::Exact(form) => {
                tracing::debug!(key, form, "verified");
                Verification::Verified
            }
            Verdict::Mismatch(detail) => Verification::Mismatch(detail),
            Verdict::SizeAndMetadata(why) => {
                if self.warned.first(key) {
                    tracing::warn!(
                        key,
                        "verified by size and metadata only ({why}); with checksum = \"sha256\" \
                         a store that keeps checksums ties the object to the bytes"
                    );
                }
                Verification::SizeAndMetadataOnly(why)
            }
            Verdict::ReadBytes(why) => {
                tracing::info!(key, size, "verifying by reading the object back: {why}");
                match self.object_sha256(key).await? {
                    None => Verification::Missing,
                    Some(s) if s.eq_ignore_ascii_case(sha256_hex.trim()) => Verification::Verified,
                    Some(s) => Verification::Mismatch(format!(
                        "sha256 of the stored bytes: {s}, expected {sha256_hex}"
                    )),
                }
            }
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
                && (overlapped(&h)
                    || h.metadata()
                        .is_some_and(|m| m.keys().any(|k| k.eq_ignore_ascii_case(SHA256_META_KEY))))
        }))
    }

    /// What differs between the object (`head` of `key`) and the clip, `None` when it is the
    /// clip: verified as [`S3Destination::verify_sent`] verifies (`sent`: the digests of an
    /// upload of ours that may have made it, else [`SentDigests::Unknown`]), exactly, or read
    /// back and hashed when nothing the store reports settles it; never by its size and
    /// metadata alone unless it is our own encrypted upload. An object of the clip's size
    /// and metadata whose bytes are others is not the clip.
    pub(super) async fn differs(
        &self,
        key: &str,
        head: &HeadObjectOutput,
        size: u64,
        sha256_hex: &str,
        sent: &SentDigests,
    ) -> Result<Option<String>, UploadError> {
        Ok(
            match self.judge_head(key, head, size, sha256_hex, sent).await? {
                v if v.is_verified() => None,
                Verification::Mismatch(detail) => Some(detail),
                _ => Some("the object went away while it was read".into()),
            },
        )
    }

    /// Our conditional write lost (412): someone else finished the key first.
    pub(super) async fn after_precondition_failed(
        &self,
        key: &str,
        size: u64,
        sha256_hex: &str,
    ) -> Result<UploadOutcome, UploadError> {
        match self.head(key).await? {
            Some(head) => match self
                .differs(key, &head, size, sha256_hex, &SentDigests::Unknown)
                .await?
            {
                None => Ok(UploadOutcome::AlreadyPresent),
                Some(detail) => Err(UploadError::Conflict {
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
        // Created before its SHA-256 existed: the content must be tied exactly (below).
        None if overlapped(head) => Ok(()),
        None => Err("sha256 metadata: missing".into()),
    }
}

/// Whether the object was uploaded while its clip downloaded (`OVERLAPPED_META_KEY`), so
/// its metadata has no `sha256`.
pub(super) fn overlapped(head: &HeadObjectOutput) -> bool {
    head.metadata().is_some_and(|m| {
        m.iter()
            .any(|(k, v)| k.eq_ignore_ascii_case(OVERLAPPED_META_KEY) && v == "true")
    })
}

/// Why the object's ETag is not an MD5 of its bytes, if it is encrypted (`forms::encryption`).
fn encryption(head: &HeadObjectOutput) -> Option<&'static str> {
    forms::encryption(head.server_side_encryption(), head.sse_customer_algorithm())
}
