//! The S3 destination: conditional single PUT or resumable SHA-256-checksummed multipart
//! (chosen by [`MultipartThreshold`], by size or by the upload rate measured lately),
//! HeadObject verification, and SDK error mapping.
//!
//! The rooms: `settings` (what the config says), `client` (the HTTP and SDK clients),
//! `threshold` (single PUT or multipart), `single`, `multipart` (with `parts`, and `overlap`: uploading while downloading), `verify`, `forms` (the
//! checksum and ETag forms a store reports, compared exactly), `errors` (SDK errors mapped
//! to [`UploadError`]) and `check` (the doctor's checks). This file holds
//! [`S3Destination`] itself, the upload entry point and the helpers the rooms share.

mod check;
mod client;
mod errors;
mod forms;
mod multipart;
mod overlap;
mod parts;
mod settings;
mod single;
mod stall;
mod threshold;
mod verify;

use std::path::Path;
use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::head_object::{HeadObjectError, HeadObjectOutput};
use aws_sdk_s3::primitives::{ByteStream, Length};

use super::{
    ObjectMeta, SentDigests, UploadError, UploadJournal, UploadOutcome, check_file_size, hex_to_b64,
};
pub use check::CheckStep;
pub use client::http_client;
pub use errors::error_chain;
pub(crate) use errors::map_sdk_err;
use settings::part_count;
pub use settings::{
    ChecksumMode, DEFAULT_PART_CONCURRENCY, DEFAULT_PART_SIZE, MIN_PART_SIZE, S3Settings,
    StaticCredentials,
};
pub use stall::requests_in_flight;
use threshold::LinkRate;
pub use threshold::{
    AUTO_MULTIPART_FLOOR, AUTO_MULTIPART_RISK, DEFAULT_MULTIPART_THRESHOLD, MultipartThreshold,
};
use verify::WarnedOnce;

/// Read buffer of a PUT or part streamed from disk (per request in flight).
const READ_BUFFER: usize = 256 * 1024;

/// An S3 bucket (or S3-compatible store) that clips are uploaded to.
#[derive(Debug, Clone)]
pub struct S3Destination {
    client: Client,
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
    multipart_threshold: MultipartThreshold,
    /// Shared by clones: every upload to this destination measures the same link.
    rate: Arc<LinkRate>,
    part_size: u64,
    part_concurrency: usize,
    checksum: ChecksumMode,
    /// Keys already warned about being verified on size and metadata only.
    warned: Arc<WarnedOnce>,
}

impl S3Destination {
    /// Builds a client from the standard AWS credential chain (environment, profile, web
    /// identity, IMDS, ...), with the settings' region, endpoint and addressing style.
    pub async fn new(settings: &S3Settings) -> anyhow::Result<Self> {
        anyhow::ensure!(!settings.bucket.is_empty(), "S3 bucket name is empty");
        Ok(Self::from_client(
            client::sdk_client(settings).await,
            settings,
        ))
    }

    /// Uses a ready client (tests); the settings' bucket and upload tuning still apply.
    pub fn from_client(client: Client, settings: &S3Settings) -> Self {
        Self {
            client,
            bucket: settings.bucket.clone(),
            prefix: settings.prefix.clone(),
            endpoint: settings.endpoint.clone(),
            multipart_threshold: settings.multipart_threshold,
            rate: Arc::default(),
            part_size: settings.part_size.max(MIN_PART_SIZE),
            part_concurrency: settings.part_concurrency.max(1),
            checksum: settings.checksum,
            warned: Arc::default(),
        }
    }

    /// E.g. `s3://fleet-video/clips` (with the endpoint when it is not AWS).
    pub fn describe(&self) -> String {
        let prefix = self.prefix.trim_matches('/');
        let mut s = if prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{prefix}", self.bucket)
        };
        if let Some(endpoint) = &self.endpoint {
            s.push_str(&format!(" at {}", crate::config::redact_url(endpoint)));
        }
        s
    }

    /// Uploads `file` (`size` bytes, SHA-256 `meta.sha256_hex`) as `key`, unless an identical
    /// object is already there. Resumes a multipart upload recorded in `journal`.
    pub async fn upload(
        &self,
        file: &Path,
        key: &str,
        size: u64,
        meta: &ObjectMeta,
        journal: &dyn UploadJournal,
    ) -> Result<UploadOutcome, UploadError> {
        let result = self.upload_once(file, key, size, meta, journal).await;
        if result.is_err() {
            // The link may be worse than it looked: resumable uploads until it shows its
            // rate again.
            self.rate.forget();
        }
        result
    }

    async fn upload_once(
        &self,
        file: &Path,
        key: &str,
        size: u64,
        meta: &ObjectMeta,
        journal: &dyn UploadJournal,
    ) -> Result<UploadOutcome, UploadError> {
        let sha256_b64 = hex_to_b64(&meta.sha256_hex)?;
        check_file_size(file, size).await?;
        if let Some(outcome) = self
            .existing_outcome(file, key, size, &meta.sha256_hex, journal)
            .await?
        {
            return Ok(outcome);
        }
        let multipart = journal.multipart().await.is_some()
            || self
                .multipart_threshold
                .wants_multipart(size, self.part_size, self.rate.get());
        if multipart {
            self.put_multipart(file, key, size, meta, journal).await
        } else {
            self.put_single(file, key, size, meta, &sha256_b64).await
        }
    }

    /// Whether a file of `size` bytes goes multipart now (by the threshold and the rate).
    pub fn goes_multipart(&self, size: u64) -> bool {
        self.multipart_threshold
            .wants_multipart(size, self.part_size, self.rate.get())
    }

    /// HeadObject (asking for checksums); `None` when there is no such key.
    async fn head(&self, key: &str) -> Result<Option<HeadObjectOutput>, UploadError> {
        let result = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await;
        match result {
            Ok(head) => Ok(Some(head)),
            Err(SdkError::ServiceError(se)) if matches!(se.err(), HeadObjectError::NotFound(_)) => {
                Ok(None)
            }
            Err(e) => Err(map_sdk_err("HeadObject", e)),
        }
    }

    /// `Some(AlreadyPresent)` when the object there is the clip (verified exactly, see
    /// `differs`), `Conflict` when it is not (another size or metadata, or other bytes),
    /// `None` when the key is free. Either way a journaled multipart for this key is finished
    /// with (it completed earlier, or can never complete).
    async fn existing_outcome(
        &self,
        file: &Path,
        key: &str,
        size: u64,
        sha256_hex: &str,
        journal: &dyn UploadJournal,
    ) -> Result<Option<UploadOutcome>, UploadError> {
        let Some(head) = self.head(key).await? else {
            return Ok(None);
        };
        let journaled = journal
            .multipart()
            .await
            .map(|p| journaled_digests(p.parts, size))
            .unwrap_or_default();
        self.forget_multipart(key, journal).await?;
        let digests = match journaled {
            SentDigests::Unknown => self.file_digests_for(file, &head, size, sha256_hex).await,
            ours => ours,
        };
        match self.differs(key, &head, size, sha256_hex, &digests).await? {
            None => Ok(Some(UploadOutcome::AlreadyPresent)),
            Some(detail) => Err(UploadError::Conflict {
                key: key.to_owned(),
                detail,
            }),
        }
    }

    /// The digests an unencrypted object with an MD5 ETag (`head`) has if it holds the
    /// clip's bytes, computed from the file (a local read, where comparing otherwise costs
    /// reading the object back): the file's MD5 for one PUT, or its part digests at our part
    /// size when that makes as many parts as the ETag counts. [`SentDigests::Unknown`] for
    /// an encrypted object (its ETag is no MD5, and known digests would let size and
    /// metadata settle it), another ETag, or a file that is not the clip's bytes.
    async fn file_digests_for(
        &self,
        file: &Path,
        head: &HeadObjectOutput,
        size: u64,
        sha256_hex: &str,
    ) -> SentDigests {
        let encrypted =
            forms::encryption(head.server_side_encryption(), head.sse_customer_algorithm());
        let shape = match head.e_tag().and_then(forms::md5_etag) {
            Some(shape) if encrypted.is_none() => shape,
            _ => return SentDigests::Unknown,
        };
        let part_size = self.effective_part_size(size);
        let lens: Vec<u64> = match shape {
            forms::Md5Etag::Single => vec![size],
            forms::Md5Etag::Parts(n) if u64::from(n) == part_count(size, part_size) => {
                parts::plan_parts(size, part_size)
                    .iter()
                    .map(|p| p.len)
                    .collect()
            }
            forms::Md5Etag::Parts(_) => return SentDigests::Unknown,
        };
        let digests = match super::digests::file_digests(file, lens.clone(), sha256_hex).await {
            Ok(digests) => digests,
            // Not the clip's bytes, or unreadable: the object is read back instead.
            Err(e) => {
                tracing::debug!(file = %file.display(), "no digests of the file: {e}");
                return SentDigests::Unknown;
            }
        };
        if shape == forms::Md5Etag::Single {
            return digests
                .into_iter()
                .next()
                .map_or(SentDigests::Unknown, |d| SentDigests::Single {
                    md5_hex: d.md5_hex,
                });
        }
        let parts: Vec<super::DonePart> = digests
            .into_iter()
            .zip(lens)
            .zip(1..)
            .map(|((d, len), number)| super::DonePart {
                number,
                etag: String::new(),
                sha256_b64: d.sha256_b64,
                md5_hex: d.md5_hex,
                size: len,
            })
            .collect();
        SentDigests::of_parts(&parts)
    }
}

/// The digests of the object a journaled multipart upload made if it completed: its parts
/// in order, when they cover all `size` bytes; else [`SentDigests::Unknown`].
fn journaled_digests(mut parts: Vec<super::DonePart>, size: u64) -> SentDigests {
    parts.sort_by_key(|p| p.number);
    if parts.iter().map(|p| p.size).sum::<u64>() == size {
        SentDigests::of_parts(&parts)
    } else {
        SentDigests::Unknown
    }
}

fn content_type_for(key: &str) -> &'static str {
    let ext = key.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("mp4") => "video/mp4",
        Some("ts") => "video/mp2t",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// A request body of `len` bytes of `file` from `offset`, streamed from disk through one
/// read buffer (memory does not grow with the clip or part size).
async fn file_body(file: &Path, offset: u64, len: u64) -> Result<ByteStream, UploadError> {
    ByteStream::read_from()
        .path(file)
        .offset(offset)
        .length(Length::Exact(len))
        .buffer_size(READ_BUFFER)
        .build()
        .await
        .map_err(|e| {
            UploadError::io(
                format!("reading {}", file.display()),
                std::io::Error::other(e),
            )
        })
}

fn to_i64(n: u64) -> Result<i64, UploadError> {
    i64::try_from(n).map_err(|_| UploadError::Other(format!("size {n} out of range")))
}

#[cfg(test)]
mod tests {
    use aws_config::BehaviorVersion;
    use aws_sdk_s3::config::Region;

    use super::*;

    #[test]
    fn describes_itself() {
        let settings = S3Settings {
            bucket: "fleet-video".into(),
            prefix: "clips/".into(),
            ..Default::default()
        };
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .http_client(http_client())
            .build();
        let d = S3Destination::from_client(Client::from_conf(conf), &settings);
        assert_eq!(d.describe(), "s3://fleet-video/clips");
        assert_eq!(d.part_size, DEFAULT_PART_SIZE);
    }
}
