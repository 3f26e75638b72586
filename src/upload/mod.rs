//! Upload destinations: S3 (with resumable, checksummed multipart) or a local directory, and
//! verification that a stored object is really the clip we hold.
//!
//! What this module guarantees (see `docs/clip-lifecycle.md`):
//! - **Exactly one object per key, never overwritten.** Before sending, the key is looked up; an
//!   identical object (same size and `sha256` metadata, and its content tied exactly to the
//!   clip's bytes as verification ties it) is [`UploadOutcome::AlreadyPresent`], a different
//!   one (other bytes under the same size and metadata included) is the permanent error
//!   [`UploadError::Conflict`]. Writes are conditional
//!   (`If-None-Match: *` on PutObject and CompleteMultipartUpload) so two agents racing on one
//!   bucket cannot overwrite each other either.
//! - **Integrity end to end.** Every PUT / part carries its SHA-256 (`x-amz-checksum-sha256`)
//!   unless [`ChecksumMode::WhenRequired`] is configured; the whole-file SHA-256 is stored as
//!   object metadata (`x-amz-meta-sha256`). The spool file is read once, in order, to check
//!   that SHA-256 (nothing is completed before it matched) and compute the file's or each
//!   part's SHA-256 and MD5 ([`SentDigests`]), which [`S3Destination::verify_sent`]
//!   compares exactly with the store's checksum or ETag. Where the store's ETags are MD5s,
//!   each part's ETag must be its MD5, as it is sent and when a resume reuses it; a part
//!   that is not is sent again, never completed into the object.
//! - **Resumable after kill -9.** Multipart progress (upload id and finished parts) goes to an
//!   [`UploadJournal`] as each part completes; the next attempt resumes the same upload id and
//!   sends only the parts the store does not already hold with the right size and checksum.
//! - **Errors say whether retrying can help** ([`UploadError::is_transient`]).
//!
//! Keys are full object keys ([`crate::key`] joins the configured prefix, and the agent's
//! `work` builds each clip's key); the `prefix` in [`S3Settings`] is only used to describe
//! the destination.
//!
//! The modules: `s3` (the S3 destination: client, threshold, single, multipart, overlap,
//! verify, forms, check, errors, stall), `local` (a directory), `digests` (what was sent),
//! `growing` (a file read as it grows, for an upload next to its download), `outage`
//! (which failures are the destination's, and the probe), `from_config`.

mod digests;
mod from_config;
mod growing;
mod local;
mod outage;
mod s3;

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;

use base64::Engine as _;
use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

pub use digests::SentDigests;
pub use from_config::{destination, s3_settings};
pub use growing::{Growing, GrowingWriter, growing};
pub use local::LocalDestination;
pub use s3::CheckStep;
pub use s3::{
    AUTO_MULTIPART_FLOOR, AUTO_MULTIPART_RISK, ChecksumMode, DEFAULT_MULTIPART_THRESHOLD,
    DEFAULT_PART_CONCURRENCY, DEFAULT_PART_SIZE, MIN_PART_SIZE, MultipartThreshold, S3Destination,
    S3Settings, StaticCredentials,
};
pub use s3::{
    error_chain, http_client as s3_http_client, requests_in_flight as s3_requests_in_flight,
};

/// What we store as object metadata (`x-amz-meta-*`): imei, device-name, camera-path,
/// event-code, event-name, camera, recorded-at, sha256, and `origin` for a clip that did
/// not come from its camera's listing (`spool-quarantine`: a spool file no clip named,
/// offloaded from the quarantine, its camera-path then the quarantined file's path in the
/// state dir); a clip its camera listed records no origin.
///
/// S3 limits an object's user metadata to 2 KB (keys plus values), and neither the camera
/// path (up to 1,024 characters) nor the device name (unbounded) is ours to size, so
/// [`to_metadata`](ObjectMeta::to_metadata) fits them by a fixed rule:
/// 1. every value is made printable ASCII (anything else becomes `_`), so bytes are
///    characters;
/// 2. `sha256` is never cut or dropped (verification reads it); an empty `sha256_hex`
///    (an upload that starts before its download finished) gives [`OVERLAPPED_META_KEY`]
///    instead;
/// 3. the small fields (imei, event-code, event-name, camera, recorded-at, origin) and the
///    device-name keep at most [`META_FIELD_MAX`] characters, a longer value ending in
///    `...` in place of its tail;
/// 4. the camera-path gets the room left under [`METADATA_LIMIT`]; a longer one keeps its
///    end (the file name) behind a leading `...`.
///
/// Keys are counted with their `x-amz-meta-` prefix, so the total stays under the limit
/// whichever way a store counts. Real values (15-digit IMEI, a 1,024-character path, a
/// model name) are never cut.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    pub imei: String,
    pub device_name: String,
    pub camera_path: String,
    pub event_code: String,
    pub event_name: String,
    pub camera: String,
    pub recorded_at: String,
    /// Lowercase hex SHA-256 of the whole file.
    pub sha256_hex: String,
    /// Where the clip came from when not from its camera's listing ([`ORIGIN_META_KEY`]);
    /// empty: listed by its camera, nothing recorded.
    pub origin: String,
}

/// The metadata key of a clip's origin when it is not its camera's listing (see
/// [`ObjectMeta`]).
pub const ORIGIN_META_KEY: &str = "origin";
/// The [`ORIGIN_META_KEY`] value of a clip offloaded from the spool quarantine.
pub const ORIGIN_SPOOL_QUARANTINE: &str = "spool-quarantine";

/// The metadata key (without `x-amz-meta-`) that holds the whole-file SHA-256 in hex.
pub const SHA256_META_KEY: &str = "sha256";
/// The metadata key (value `true`) of an object uploaded while its clip downloaded, in place
/// of [`SHA256_META_KEY`]: the object was created before the file's SHA-256 existed. Such an
/// object is verified by its checksum or ETag against the agent's digests, or by reading it
/// back, never by size and metadata alone.
pub const OVERLAPPED_META_KEY: &str = "overlapped";
/// S3's limit on an object's user metadata, bytes of keys (with `x-amz-meta-`) and values.
pub const METADATA_LIMIT: usize = 2048;
/// The most characters kept of a metadata value other than the camera path and sha256.
pub const META_FIELD_MAX: usize = 64;
/// Marks where a metadata value was cut.
const CUT: &str = "...";
const META_PREFIX: &str = "x-amz-meta-";

impl ObjectMeta {
    /// The user metadata map sent with the object (keys without the `x-amz-meta-` prefix),
    /// under [`METADATA_LIMIT`] by the rule in [`ObjectMeta`]'s documentation.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = [
            ("imei", &self.imei),
            ("device-name", &self.device_name),
            ("event-code", &self.event_code),
            ("event-name", &self.event_name),
            ("camera", &self.camera),
            ("recorded-at", &self.recorded_at),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), cut_end(&header_safe(v), META_FIELD_MAX)))
        .collect();
        if !self.origin.is_empty() {
            let origin = cut_end(&header_safe(&self.origin), META_FIELD_MAX);
            m.insert(ORIGIN_META_KEY.to_owned(), origin);
        }
        if self.sha256_hex.is_empty() {
            m.insert(OVERLAPPED_META_KEY.to_owned(), "true".to_owned());
        } else {
            m.insert(SHA256_META_KEY.to_owned(), header_safe(&self.sha256_hex));
        }
        let used: usize = m.iter().map(|(k, v)| meta_bytes(k, v)).sum();
        let room = METADATA_LIMIT.saturating_sub(used + meta_bytes("camera-path", ""));
        m.insert(
            "camera-path".to_owned(),
            cut_start(&header_safe(&self.camera_path), room),
        );
        m
    }
}

/// What one metadata entry counts towards [`METADATA_LIMIT`].
fn meta_bytes(key: &str, value: &str) -> usize {
    META_PREFIX.len() + key.len() + value.len()
}

/// At most `max` bytes of `s`: its start, then [`CUT`] (cut on a character boundary).
fn cut_end(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let Some(mut keep) = max.checked_sub(CUT.len()) else {
        return String::new();
    };
    while !s.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{CUT}", &s[..keep])
}

/// At most `max` bytes of `s`: [`CUT`], then its end (cut on a character boundary).
fn cut_start(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let Some(keep) = max.checked_sub(CUT.len()) else {
        return String::new();
    };
    let mut start = s.len() - keep;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("{CUT}{}", &s[start..])
}

/// Metadata travels in HTTP headers: keep it printable ASCII so no store rejects the request.
fn header_safe(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Persists multipart progress so a restarted process resumes (the agent implements it over
/// the state database). Async, so an implementation never blocks a runtime thread.
pub trait UploadJournal: Send + Sync {
    /// The upload id and finished parts, if an upload was begun.
    fn multipart(&self) -> BoxFuture<'_, Option<MultipartProgress>>;
    /// Records that a multipart upload was created.
    fn begin_multipart<'a>(
        &'a self,
        upload_id: &'a str,
        part_size: u64,
    ) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Called as each part finishes (before completing).
    fn part_done<'a>(&'a self, part: &'a DonePart) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Forgets the multipart upload (completed, aborted or gone).
    fn clear_multipart(&self) -> BoxFuture<'_, anyhow::Result<()>>;
}

/// A multipart upload in progress, as persisted by an [`UploadJournal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartProgress {
    pub upload_id: String,
    pub part_size: u64,
    pub parts: Vec<DonePart>,
}

/// One uploaded part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DonePart {
    /// 1-based part number.
    pub number: i32,
    pub etag: String,
    /// Base64 of the part's SHA-256 (the `x-amz-checksum-sha256` form).
    pub sha256_b64: String,
    /// Hex MD5 of the part (its ETag on a store that keeps no checksum); empty when a
    /// journal written by an older version does not have it.
    pub md5_hex: String,
    pub size: u64,
}

/// A journal that keeps progress in memory only (tests, demos, the local destination).
#[derive(Debug, Default)]
pub struct MemoryJournal {
    state: Mutex<Option<MultipartProgress>>,
}

impl MemoryJournal {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<MultipartProgress>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MemoryJournal {
    fn begin(&self, upload_id: &str, part_size: u64) {
        *self.lock() = Some(MultipartProgress {
            upload_id: upload_id.to_owned(),
            part_size,
            parts: Vec::new(),
        });
    }

    fn add_part(&self, part: &DonePart) -> anyhow::Result<()> {
        let mut state = self.lock();
        let progress = state
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("part_done without begin_multipart"))?;
        progress.parts.retain(|p| p.number != part.number);
        progress.parts.push(part.clone());
        Ok(())
    }
}

impl UploadJournal for MemoryJournal {
    fn multipart(&self) -> BoxFuture<'_, Option<MultipartProgress>> {
        Box::pin(std::future::ready(self.lock().clone()))
    }

    fn begin_multipart<'a>(
        &'a self,
        upload_id: &'a str,
        part_size: u64,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        self.begin(upload_id, part_size);
        Box::pin(std::future::ready(Ok(())))
    }

    fn part_done<'a>(&'a self, part: &'a DonePart) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(std::future::ready(self.add_part(part)))
    }

    fn clear_multipart(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        *self.lock() = None;
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The result of a successful upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadOutcome {
    /// The store accepted the object; `sent` is what verification compares it with.
    Uploaded { etag: String, sent: SentDigests },
    /// An object with that key, same size and sha256 metadata and its content tied exactly
    /// to the clip's bytes, already existed: nothing sent.
    AlreadyPresent,
}

impl Verification {
    /// Whether the object counts as the clip ([`Verification::Verified`] or
    /// [`Verification::SizeAndMetadataOnly`]).
    pub fn is_verified(&self) -> bool {
        matches!(self, Self::Verified | Self::SizeAndMetadataOnly(_))
    }

    /// Why the verification is only by size and metadata, if it is.
    pub fn weakness(&self) -> Option<&str> {
        match self {
            Self::SizeAndMetadataOnly(why) => Some(why),
            _ => None,
        }
    }
}

/// What the store holds under a key, compared with the clip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The object is the clip: size, `sha256` metadata, and its content tied exactly to the
    /// bytes (a checksum, an MD5 ETag, or the bytes read back).
    Verified,
    /// Size and `sha256` metadata match, but nothing the store reports ties the content to
    /// the bytes (why): an SSE-KMS/SSE-C object this agent uploaded, to a store that keeps no
    /// checksum. Accepted as verified, and reported as weaker (log and `status`).
    SizeAndMetadataOnly(String),
    Missing,
    /// What differs.
    Mismatch(String),
}

/// Why an upload, verification or abort failed. [`UploadError::is_transient`] says whether a
/// later retry can succeed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The request never got a usable answer: connection refused/reset, garbled reply.
    #[error("{op}: network error: {message}")]
    Network { op: &'static str, message: String },
    /// The request waited out a whole timeout (connect, `stall_timeout`, the probe's limit):
    /// transient and the destination's, but not worth retrying on the spot
    /// ([`UploadError::retry_now`]), which would wait the same time again.
    #[error("{op}: timed out: {message}")]
    TimedOut { op: &'static str, message: String },
    /// The store answered with an error.
    #[error("{op}: store returned HTTP {status}{}", code_and_message(.code, .message))]
    Service {
        op: &'static str,
        status: u16,
        code: String,
        message: String,
        transient: bool,
    },
    /// A different object already exists under the key; it is never overwritten.
    #[error("conflict: {key} already exists with different content ({detail})")]
    Conflict { key: String, detail: String },
    /// The bytes sent do not match their checksum (the file changed, or corruption in transit).
    #[error("checksum mismatch: {0}")]
    ChecksumMismatch(String),
    /// The key cannot be used (absolute, `..`, empty components).
    #[error("invalid key {0:?}")]
    InvalidKey(String),
    /// Reading the clip or writing the local destination failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The upload journal could not persist progress.
    #[error("upload journal: {0:#}")]
    Journal(anyhow::Error),
    /// Anything else that retrying will not fix (bad input, an impossible reply).
    #[error("{0}")]
    Other(String),
}

impl UploadError {
    /// True when the failure is about the destination, not the clip (see `outage`): the
    /// agent then pauses uploads instead of charging the clip an attempt.
    pub fn is_destination_wide(&self) -> bool {
        outage::is_destination_wide(self)
    }

    /// True when the failure may go away by itself (network, 5xx, throttling, timeouts, a busy
    /// journal); false when retrying the same request cannot help (access denied, no such
    /// bucket, conflict, checksum mismatch, bad key).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Network { .. } | Self::TimedOut { .. } | Self::Journal(_) => true,
            Self::Service { transient, .. } => *transient,
            Self::Io { source, .. } => io_is_transient(source),
            Self::Conflict { .. }
            | Self::ChecksumMismatch(_)
            | Self::InvalidKey(_)
            | Self::Other(_) => false,
        }
    }

    /// Whether to retry the request on the spot (a short backoff): transient, and not a
    /// request that already waited out a timeout. A destination that black-holes requests
    /// would otherwise cost the timeout once per retry and clip before the agent notices
    /// the outage; a timed-out request goes straight to the destination probe instead.
    pub fn retry_now(&self) -> bool {
        self.is_transient() && !matches!(self, Self::TimedOut { .. })
    }

    /// The store's error code, if the store answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

fn code_and_message(code: &str, message: &str) -> String {
    match (code.is_empty(), message.is_empty()) {
        (true, true) => " (no error code)".to_owned(),
        (false, true) => format!(" {code}"),
        (true, false) => format!(": {message}"),
        (false, false) => format!(" {code}: {message}"),
    }
}

fn io_is_transient(err: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        err.kind(),
        K::Interrupted
            | K::TimedOut
            | K::WouldBlock
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::ConnectionRefused
            | K::NotConnected
            | K::BrokenPipe
            | K::StorageFull
            | K::ResourceBusy
    )
}

/// Where clips go: an S3 bucket or a local directory.
#[derive(Debug)]
pub enum Destination {
    S3(S3Destination),
    Local(LocalDestination),
}

impl Destination {
    /// A cheap request that succeeds only when the destination takes uploads (see
    /// `outage`): HeadBucket for S3, the directory being there for a local destination.
    pub async fn probe(&self) -> Result<(), UploadError> {
        outage::probe(self).await
    }

    /// Uploads `file` (of `size` bytes, whose SHA-256 is `meta.sha256_hex`) under `key`.
    pub async fn upload(
        &self,
        file: &Path,
        key: &str,
        size: u64,
        meta: &ObjectMeta,
        journal: &dyn UploadJournal,
    ) -> Result<UploadOutcome, UploadError> {
        match self {
            Self::S3(d) => d.upload(file, key, size, meta, journal).await,
            Self::Local(d) => d.upload(file, key, size, meta, journal).await,
        }
    }

    /// Whether a clip of `size` bytes may be uploaded while it downloads: it goes multipart
    /// to S3 (never for a local directory).
    pub fn uploads_early(&self, size: u64) -> bool {
        match self {
            Self::S3(d) => d.goes_multipart(size),
            Self::Local(_) => false,
        }
    }

    /// Uploads the clip being downloaded into `file` as its bytes land (see
    /// [`S3Destination::upload_growing`]); `Ok(None)` when not started (a local directory,
    /// or an object already under the key).
    pub async fn upload_growing(
        &self,
        file: &Path,
        key: &str,
        size: u64,
        meta: &ObjectMeta,
        journal: &dyn UploadJournal,
        growing: Growing,
    ) -> Result<Option<UploadOutcome>, UploadError> {
        match self {
            Self::S3(d) => {
                d.upload_growing(file, key, size, meta, journal, growing)
                    .await
            }
            Self::Local(_) => Ok(None),
        }
    }

    /// Checks that the object under `key` has `size` bytes and SHA-256 `sha256_hex`, for an
    /// object this agent has no upload digests of ([`SentDigests::Unknown`]).
    pub async fn verify(
        &self,
        key: &str,
        size: u64,
        sha256_hex: &str,
    ) -> Result<Verification, UploadError> {
        self.verify_sent(key, size, sha256_hex, &SentDigests::Unknown)
            .await
    }

    /// [`Destination::verify`] knowing what was sent (`sent`, from [`UploadOutcome`]): the
    /// store's checksum or ETag can then be compared exactly with the agent's own digests.
    pub async fn verify_sent(
        &self,
        key: &str,
        size: u64,
        sha256_hex: &str,
        sent: &SentDigests,
    ) -> Result<Verification, UploadError> {
        match self {
            Self::S3(d) => d.verify_sent(key, size, sha256_hex, sent).await,
            Self::Local(d) => d.verify(key, size, sha256_hex).await,
        }
    }

    /// Whether an object of `size` bytes is under `key`, written by an agent (for S3: it
    /// carries the `sha256` metadata). Used for clips that left the camera before this agent
    /// offloaded them; the content itself was verified by whoever wrote it.
    pub async fn holds(&self, key: &str, size: u64) -> Result<bool, UploadError> {
        match self {
            Self::S3(d) => d.holds(key, size).await,
            Self::Local(d) => d.holds(key, size).await,
        }
    }

    /// Aborts a multipart upload left behind (no-op for a local directory).
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), UploadError> {
        match self {
            Self::S3(d) => d.abort_multipart(key, upload_id).await,
            Self::Local(_) => Ok(()),
        }
    }

    /// A short human description, e.g. `s3://bucket/prefix` or `dir /srv/clips`.
    pub fn describe(&self) -> String {
        match self {
            Self::S3(d) => d.describe(),
            Self::Local(d) => d.describe(),
        }
    }
}

/// Base64 of the raw digest given in hex (what `x-amz-checksum-sha256` carries).
pub(crate) fn hex_to_b64(sha256_hex: &str) -> Result<String, UploadError> {
    let raw = hex::decode(sha256_hex.trim())
        .ok()
        .filter(|r| r.len() == 32)
        .ok_or_else(|| UploadError::Other(format!("not a SHA-256 in hex: {sha256_hex:?}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(raw))
}

/// SHA-256 of `len` bytes of `path` starting at `offset` (blocking; call from `spawn_blocking`).
pub(crate) fn sha256_of_range(path: &Path, offset: u64, len: u64) -> std::io::Result<[u8; 32]> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = file.take(len);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    if total != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{} is shorter than expected", path.display()),
        ));
    }
    Ok(hasher.finalize().into())
}

/// Fails unless the file on disk has exactly the size the caller expects.
pub(crate) async fn check_file_size(file: &Path, size: u64) -> Result<(), UploadError> {
    let actual = tokio::fs::metadata(file)
        .await
        .map_err(|e| UploadError::io(format!("reading {}", file.display()), e))?
        .len();
    if actual == size {
        Ok(())
    } else {
        Err(UploadError::ChecksumMismatch(format!(
            "{} has {actual} bytes, expected {size}",
            file.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_to_b64_roundtrip() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            hex_to_b64(hex).unwrap(),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert!(hex_to_b64("zz").is_err());
    }

    #[test]
    fn metadata_keys_and_safety() {
        let meta = ObjectMeta {
            imei: "8612".into(),
            device_name: "Truck\u{e9} 7\n".into(),
            sha256_hex: "ab".into(),
            ..Default::default()
        };
        let m = meta.to_metadata();
        assert_eq!(m["imei"], "8612");
        assert_eq!(m["device-name"], "Truck_ 7_");
        assert_eq!(m[SHA256_META_KEY], "ab");
        assert_eq!(m.len(), 8);
    }

    /// What `to_metadata` counts against S3's limit: keys with `x-amz-meta-`, values.
    fn total_bytes(m: &HashMap<String, String>) -> usize {
        m.iter().map(|(k, v)| meta_bytes(k, v)).sum()
    }

    #[test]
    fn metadata_stays_under_2_kb_for_hostile_values_and_keeps_the_sha256() {
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let name = "20210427_115134_04_1.mp4";
        let hostile = ObjectMeta {
            imei: "8".repeat(5000),
            device_name: "\u{e9}\u{1F600}x".repeat(10_000),
            camera_path: format!("/{}/{name}", "d\u{e9}\u{1F600}/".repeat(2000)),
            event_code: "\u{1F600}".repeat(300),
            event_name: "n".repeat(3000),
            camera: "c".repeat(3000),
            recorded_at: "r".repeat(3000),
            sha256_hex: sha.into(),
            origin: "o".repeat(3000),
        };
        let m = hostile.to_metadata();
        assert_eq!(m.len(), 9);
        assert_eq!(m[ORIGIN_META_KEY].len(), META_FIELD_MAX);
        assert!(total_bytes(&m) <= METADATA_LIMIT, "{}", total_bytes(&m));
        assert_eq!(m[SHA256_META_KEY], sha);
        let path = &m["camera-path"];
        assert!(path.starts_with(CUT) && path.ends_with(name), "{path}");
        assert_eq!(m["device-name"].len(), META_FIELD_MAX);
        assert!(m["device-name"].ends_with(CUT));
        for (k, v) in &m {
            assert!(
                v.chars().all(|c| c.is_ascii_graphic() || c == ' '),
                "{k}: {v}"
            );
        }
        // Only the path fills the room left.
        assert!(total_bytes(&m) > METADATA_LIMIT - 8, "{}", total_bytes(&m));
    }

    #[test]
    fn real_metadata_is_never_cut() {
        let path = format!("/{}/20210427_115134_04_1.mp4", "a".repeat(998));
        assert_eq!(path.len(), 1024);
        let meta = ObjectMeta {
            imei: "867867432522518".into(),
            device_name: "CV200 Truck 7, depot North-East".into(),
            camera_path: path.clone(),
            event_code: "04".into(),
            event_name: "Crash (harsh impact)".into(),
            camera: "front".into(),
            recorded_at: "2021-04-27T11:51:34".into(),
            sha256_hex: "ab".repeat(32),
            origin: String::new(),
        };
        let m = meta.to_metadata();
        assert!(
            !m.contains_key(ORIGIN_META_KEY),
            "a camera's clip records none"
        );
        assert_eq!(m["camera-path"], path);
        assert_eq!(m["device-name"], meta.device_name);
        assert_eq!(m["event-name"], meta.event_name);
        assert!(total_bytes(&m) <= METADATA_LIMIT);
    }

    #[test]
    fn cuts_respect_utf8_boundaries() {
        let s = "\u{e9}\u{1F600}\u{e9}\u{1F600}\u{e9}";
        for max in 0..=s.len() + 1 {
            let end = cut_end(s, max);
            let start = cut_start(s, max);
            assert!(
                end.len() <= max && start.len() <= max,
                "{max}: {end:?} {start:?}"
            );
            if max >= s.len() {
                assert_eq!((end.as_str(), start.as_str()), (s, s));
            } else if max >= CUT.len() {
                assert!(end.ends_with(CUT) && start.starts_with(CUT), "{max}");
                assert!(s.starts_with(end.trim_end_matches(CUT)), "{max}: {end:?}");
                assert!(
                    s.ends_with(start.trim_start_matches(CUT)),
                    "{max}: {start:?}"
                );
            } else {
                assert!(end.is_empty() && start.is_empty());
            }
        }
    }

    #[test]
    fn transient_classification() {
        let svc = |status, transient| UploadError::Service {
            op: "PutObject",
            status,
            code: String::new(),
            message: String::new(),
            transient,
        };
        assert!(svc(503, true).is_transient());
        assert!(!svc(403, false).is_transient());
        assert!(
            UploadError::Network {
                op: "x",
                message: String::new()
            }
            .is_transient()
        );
        assert!(
            !UploadError::Conflict {
                key: "k".into(),
                detail: String::new()
            }
            .is_transient()
        );
        assert!(!UploadError::ChecksumMismatch(String::new()).is_transient());
    }

    #[tokio::test]
    async fn memory_journal_tracks_parts() {
        let j = MemoryJournal::new();
        assert!(j.multipart().await.is_none());
        j.begin_multipart("u1", 5).await.unwrap();
        let part = DonePart {
            number: 1,
            etag: "e".into(),
            sha256_b64: "s".into(),
            md5_hex: "m".into(),
            size: 5,
        };
        j.part_done(&part).await.unwrap();
        j.part_done(&part).await.unwrap();
        assert_eq!(j.multipart().await.unwrap().parts, vec![part]);
        j.clear_multipart().await.unwrap();
        assert!(j.multipart().await.is_none());
    }
}
