//! The S3 destination: conditional single PUT or resumable SHA-256-checksummed multipart
//! (chosen by [`MultipartThreshold`], by size or by the upload rate measured lately),
//! HeadObject verification, and SDK error mapping.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    Region, RequestChecksumCalculation, ResponseChecksumValidation, SharedHttpClient,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::head_object::{HeadObjectError, HeadObjectOutput};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, Part};
use base64::Engine as _;
use futures_util::StreamExt as _;
use sha2::{Digest, Sha256};

use super::{
    DonePart, MultipartProgress, ObjectMeta, SHA256_META_KEY, UploadError, UploadJournal,
    UploadOutcome, Verification, check_file_size, hex_to_b64, sha256_of_range_async,
};

/// The default multipart choice: [`MultipartThreshold::Auto`].
pub const DEFAULT_MULTIPART_THRESHOLD: MultipartThreshold = MultipartThreshold::Auto;
/// With [`MultipartThreshold::Auto`], files smaller than this (or than the part size) always
/// go in one PUT.
pub const AUTO_MULTIPART_FLOOR: u64 = 16 * 1024 * 1024;
/// With [`MultipartThreshold::Auto`], a file goes in one PUT only when, at the upload rate
/// measured lately, it takes less than this: an interruption then costs at most about this
/// much uplink time, and larger or slower uploads go multipart and resume part by part.
pub const AUTO_MULTIPART_RISK: Duration = Duration::from_secs(10);
/// A measured upload rate older than this is not trusted (the link may have changed: a
/// gateway box leaves the depot's Wi-Fi for cellular).
const RATE_MAX_AGE: Duration = Duration::from_secs(300);
/// Requests smaller than this say more about latency than about the link's rate.
const RATE_MIN_SAMPLE: u64 = 1024 * 1024;
/// S3's largest single PUT.
const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;
/// Default multipart part size.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
/// S3's minimum size for every part but the last.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Default number of parts in flight at once.
pub const DEFAULT_PART_CONCURRENCY: usize = 4;
/// S3's maximum number of parts in one upload.
const MAX_PARTS: u64 = 10_000;
/// Read buffer of a PUT or part streamed from disk (per request in flight).
const READ_BUFFER: usize = 256 * 1024;

/// When a file is uploaded multipart (resumable part by part) rather than in one PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultipartThreshold {
    /// Files of at least this many bytes go multipart, whatever the link (and so do files
    /// over S3's 5 GiB single-PUT limit, whatever the threshold).
    Fixed(u64),
    /// Files from [`AUTO_MULTIPART_FLOOR`] (or the part size, if larger) go multipart unless
    /// the upload rate measured lately would send them in under [`AUTO_MULTIPART_RISK`]. With
    /// no recent measurement, or after an upload failed, they go multipart. On a fast link
    /// a single PUT is cheaper (one request, no reassembly in the store) and an interruption
    /// costs seconds; on a slow or flaky one, parts make the upload resumable.
    Auto,
}

impl MultipartThreshold {
    /// Whether a file of `size` bytes goes multipart, given the upload rate measured lately
    /// (bytes per second per request; `None`: not known).
    pub fn wants_multipart(self, size: u64, part_size: u64, rate: Option<f64>) -> bool {
        if size > MAX_SINGLE_PUT {
            // S3 refuses a larger PUT, whatever the threshold says.
            return true;
        }
        match self {
            MultipartThreshold::Fixed(threshold) => size >= threshold,
            MultipartThreshold::Auto => {
                if size < AUTO_MULTIPART_FLOOR.max(part_size) {
                    return false;
                }
                rate.is_none_or(|r| size as f64 / r >= AUTO_MULTIPART_RISK.as_secs_f64())
            }
        }
    }
}

/// The upload rate of recent requests (PUTs and parts), each request's own bytes over its
/// own time, smoothed, for [`MultipartThreshold::Auto`]. Parts sent in parallel each see a
/// share of the link, so the figure errs low: towards multipart.
#[derive(Debug, Default)]
struct LinkRate(std::sync::Mutex<RateState>);

#[derive(Debug, Default)]
struct RateState {
    /// Bytes per second and when it was last updated.
    rate: Option<(f64, Instant)>,
    /// When the rate was last forgotten: requests that started before then do not count.
    forgotten_at: Option<Instant>,
}

impl LinkRate {
    fn state(&self) -> std::sync::MutexGuard<'_, RateState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a request body of `bytes` sent (and acknowledged) by a request that started
    /// at `started`.
    fn observe(&self, bytes: u64, started: Instant) {
        if bytes < RATE_MIN_SAMPLE {
            return;
        }
        let rate = bytes as f64 / started.elapsed().as_secs_f64().max(1e-3);
        let mut state = self.state();
        if state.forgotten_at.is_some_and(|f| started < f) {
            // It began before a failure: it says nothing about the link since.
            return;
        }
        let smoothed = match state.rate {
            Some((old, at)) if at.elapsed() < RATE_MAX_AGE => (old + rate) / 2.0,
            _ => rate,
        };
        state.rate = Some((smoothed, Instant::now()));
    }

    /// Forgets the rate: after a failed upload, the next ones are resumable until a request
    /// started since has shown the link's rate again.
    fn forget(&self) {
        let mut state = self.state();
        state.rate = None;
        state.forgotten_at = Some(Instant::now());
    }

    fn get(&self) -> Option<f64> {
        self.state()
            .rate
            .filter(|(_, at)| at.elapsed() < RATE_MAX_AGE)
            .map(|(rate, _)| rate)
    }
}

/// Which integrity checksums requests carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChecksumMode {
    /// Every PUT and part carries `x-amz-checksum-sha256`; multipart uploads are created with
    /// the SHA-256 algorithm, so the store validates every byte it keeps.
    #[default]
    Sha256,
    /// Send no flexible checksums at all (neither ours nor the SDK's default CRC32), for
    /// S3-compatible stores that reject them. Integrity then rests on the `sha256` metadata
    /// and [`S3Destination::verify`].
    WhenRequired,
}

/// How to reach the bucket and how to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// Only used to describe the destination: keys passed to `upload` are full keys.
    pub prefix: String,
    /// Empty: let the standard AWS chain decide.
    pub region: String,
    /// A custom endpoint (MinIO, a test server), e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    /// When files go multipart.
    pub multipart_threshold: MultipartThreshold,
    /// Raised to [`MIN_PART_SIZE`] if smaller, and as needed to stay within 10 000 parts.
    pub part_size: u64,
    pub part_concurrency: usize,
    pub checksum: ChecksumMode,
    /// Static credentials from the config; `None`: the standard AWS chain.
    pub credentials: Option<StaticCredentials>,
}

/// An access key pair given in the config. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"********")
            .finish()
    }
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            prefix: String::new(),
            region: String::new(),
            endpoint: None,
            force_path_style: false,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            part_size: DEFAULT_PART_SIZE,
            part_concurrency: DEFAULT_PART_CONCURRENCY,
            checksum: ChecksumMode::Sha256,
            credentials: None,
        }
    }
}

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
}

/// One part of the file: its number, where it starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartPlan {
    number: i32,
    offset: u64,
    len: u64,
}

/// The multipart upload being worked on and the parts already safely in the store.
struct Session {
    upload_id: String,
    part_size: u64,
    done: BTreeMap<i32, DonePart>,
}

/// The HTTPS client for S3 and for the credential chain (IMDS, SSO, STS): hyper 1.x with
/// rustls and its `ring` provider, the crypto reqwest already uses, so the binary carries one
/// TLS stack (see README, "Dependencies"). Otherwise as the SDK's default client: the
/// system's root certificates, and the proxy from `HTTPS_PROXY`/`NO_PROXY`.
pub fn http_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    use aws_smithy_http_client::{Builder, ConnectorBuilder, proxy::ProxyConfig};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut conn = ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::Ring));
        conn.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            conn.set_sleep_impl(components.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        conn.build()
    })
}

impl S3Destination {
    /// Builds a client from the standard AWS credential chain (environment, profile, web
    /// identity, IMDS, ...), with the settings' region, endpoint and addressing style.
    pub async fn new(settings: &S3Settings) -> anyhow::Result<Self> {
        anyhow::ensure!(!settings.bucket.is_empty(), "S3 bucket name is empty");
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http_client());
        if !settings.region.is_empty() {
            loader = loader.region(Region::new(settings.region.clone()));
        }
        if settings.checksum == ChecksumMode::WhenRequired {
            loader = loader
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        if let Some(c) = &settings.credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                None,
                None,
                "qucam-offload config",
            ));
        }
        let sdk_config = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk_config)
            .force_path_style(settings.force_path_style);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(Self::from_client(
            Client::from_conf(builder.build()),
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
            s.push_str(&format!(" at {endpoint}"));
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
            .existing_outcome(key, size, &meta.sha256_hex, journal)
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

    /// Aborts a multipart upload; an upload that no longer exists counts as aborted.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), UploadError> {
        let result = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        match result.map_err(|e| map_sdk_err("AbortMultipartUpload", e)) {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn effective_part_size(&self, size: u64) -> u64 {
        self.part_size.max(size.div_ceil(MAX_PARTS))
    }

    // ---- existence ------------------------------------------------------------------------

    /// Whether an object of `size` bytes with `sha256` metadata is under `key`.
    pub async fn holds(&self, key: &str, size: u64) -> Result<bool, UploadError> {
        Ok(self.head(key).await?.is_some_and(|h| {
            h.content_length() == i64::try_from(size).ok()
                && h.metadata()
                    .is_some_and(|m| m.keys().any(|k| k.eq_ignore_ascii_case(SHA256_META_KEY)))
        }))
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

    /// `Some(AlreadyPresent)` when an identical object exists, `Conflict` when a different
    /// one does, `None` when the key is free. Either way a journaled multipart for this key is
    /// finished with (it completed earlier, or can never complete).
    async fn existing_outcome(
        &self,
        key: &str,
        size: u64,
        sha256_hex: &str,
        journal: &dyn UploadJournal,
    ) -> Result<Option<UploadOutcome>, UploadError> {
        let Some(head) = self.head(key).await? else {
            return Ok(None);
        };
        self.forget_multipart(key, journal).await?;
        match compare_head(&head, size, sha256_hex) {
            Ok(()) => Ok(Some(UploadOutcome::AlreadyPresent)),
            Err(detail) => Err(UploadError::Conflict {
                key: key.to_owned(),
                detail,
            }),
        }
    }

    /// Our conditional write lost (412): someone else finished the key first.
    async fn after_precondition_failed(
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

    /// Aborts (best effort) and forgets the journaled multipart upload, if any.
    async fn forget_multipart(
        &self,
        key: &str,
        journal: &dyn UploadJournal,
    ) -> Result<(), UploadError> {
        if let Some(progress) = journal.multipart().await {
            if let Err(e) = self.abort_multipart(key, &progress.upload_id).await {
                tracing::warn!(key, error = %e, "could not abort a stale multipart upload");
            }
            journal
                .clear_multipart()
                .await
                .map_err(UploadError::Journal)?;
        }
        Ok(())
    }

    // ---- single PUT -----------------------------------------------------------------------

    async fn put_single(
        &self,
        file: &Path,
        key: &str,
        size: u64,
        meta: &ObjectMeta,
        sha256_b64: &str,
    ) -> Result<UploadOutcome, UploadError> {
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
        match request.send().await {
            Ok(out) => {
                self.rate.observe(size, started);
                Ok(UploadOutcome::Uploaded {
                    etag: out.e_tag().unwrap_or_default().to_owned(),
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

    // ---- multipart ------------------------------------------------------------------------

    async fn put_multipart(
        &self,
        file: &Path,
        key: &str,
        size: u64,
        meta: &ObjectMeta,
        journal: &dyn UploadJournal,
    ) -> Result<UploadOutcome, UploadError> {
        let mut session = self.open_session(file, key, size, meta, journal).await?;
        if let Err(e) = self
            .send_missing_parts(file, key, size, &mut session, journal)
            .await
        {
            return Err(self.fail_upload(key, &session.upload_id, journal, e).await);
        }
        let parts: Vec<DonePart> = session.done.into_values().collect();
        match self.complete(key, &session.upload_id, &parts).await {
            Ok(etag) => {
                journal
                    .clear_multipart()
                    .await
                    .map_err(UploadError::Journal)?;
                Ok(UploadOutcome::Uploaded { etag })
            }
            Err(e) if is_precondition_failed(&e) => {
                self.forget_multipart(key, journal).await?;
                self.after_precondition_failed(key, size, &meta.sha256_hex)
                    .await
            }
            Err(e) => {
                // A retried Complete whose first try went through fails (the upload id is
                // gone): if the object is there and right, the upload did complete.
                if !e.is_transient()
                    && let Ok(Some(head)) = self.head(key).await
                    && compare_head(&head, size, &meta.sha256_hex).is_ok()
                {
                    journal
                        .clear_multipart()
                        .await
                        .map_err(UploadError::Journal)?;
                    let etag = head.e_tag().unwrap_or_default().to_owned();
                    return Ok(UploadOutcome::Uploaded { etag });
                }
                Err(self.fail_upload(key, &session.upload_id, journal, e).await)
            }
        }
    }

    /// Resumes the journaled upload if the store still has it, else creates a new one.
    async fn open_session(
        &self,
        file: &Path,
        key: &str,
        size: u64,
        meta: &ObjectMeta,
        journal: &dyn UploadJournal,
    ) -> Result<Session, UploadError> {
        if let Some(progress) = journal.multipart().await {
            if let Some(session) = self.resume(file, key, size, &progress, journal).await? {
                return Ok(session);
            }
            journal
                .clear_multipart()
                .await
                .map_err(UploadError::Journal)?;
        }
        let part_size = self.effective_part_size(size);
        let upload_id = self.create(key, meta).await?;
        if let Err(e) = journal.begin_multipart(&upload_id, part_size).await {
            let _ = self.abort_multipart(key, &upload_id).await;
            return Err(UploadError::Journal(e));
        }
        tracing::debug!(key, upload_id, part_size, "multipart upload created");
        Ok(Session {
            upload_id,
            part_size,
            done: BTreeMap::new(),
        })
    }

    /// `None` when the journaled upload cannot be resumed (gone, or an unusable part size).
    async fn resume(
        &self,
        file: &Path,
        key: &str,
        size: u64,
        progress: &MultipartProgress,
        journal: &dyn UploadJournal,
    ) -> Result<Option<Session>, UploadError> {
        if progress.part_size < MIN_PART_SIZE || part_count(size, progress.part_size) > MAX_PARTS {
            let _ = self.abort_multipart(key, &progress.upload_id).await;
            return Ok(None);
        }
        let listed = match self.list_parts_all(key, &progress.upload_id).await {
            Ok(listed) => listed,
            Err(e) if e.code() == Some("NoSuchUpload") => {
                tracing::info!(key, "journaled multipart upload is gone; starting over");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let done = reusable_parts(file, size, progress, &listed, journal).await?;
        tracing::info!(
            key,
            upload_id = progress.upload_id,
            reused = done.len(),
            "resuming multipart upload"
        );
        Ok(Some(Session {
            upload_id: progress.upload_id.clone(),
            part_size: progress.part_size,
            done,
        }))
    }

    async fn create(&self, key: &str, meta: &ObjectMeta) -> Result<String, UploadError> {
        let mut request = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type_for(key))
            .set_metadata(Some(meta.to_metadata()));
        if self.checksum == ChecksumMode::Sha256 {
            request = request.checksum_algorithm(ChecksumAlgorithm::Sha256);
        }
        let out = request
            .send()
            .await
            .map_err(|e| map_sdk_err("CreateMultipartUpload", e))?;
        out.upload_id()
            .map(str::to_owned)
            .ok_or_else(|| UploadError::Other("CreateMultipartUpload returned no upload id".into()))
    }

    /// All parts the store holds for the upload (following ListParts pagination).
    async fn list_parts_all(&self, key: &str, upload_id: &str) -> Result<Vec<Part>, UploadError> {
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.clone())
                .send()
                .await
                .map_err(|e| map_sdk_err("ListParts", e))?;
            parts.extend_from_slice(out.parts());
            let next = out.next_part_number_marker().map(str::to_owned);
            if out.is_truncated() != Some(true) || next.is_none() || next == marker {
                return Ok(parts);
            }
            marker = next;
        }
    }

    /// Sends every planned part not in `session.done`, `part_concurrency` at a time, journaling
    /// each as it completes. After the first failure no new part starts, but parts already in
    /// flight finish and are journaled, so a resume repeats as little as possible.
    async fn send_missing_parts(
        &self,
        file: &Path,
        key: &str,
        size: u64,
        session: &mut Session,
        journal: &dyn UploadJournal,
    ) -> Result<(), UploadError> {
        let missing: Vec<PartPlan> = plan_parts(size, session.part_size)
            .into_iter()
            .filter(|p| !session.done.contains_key(&p.number))
            .collect();
        let stop = AtomicBool::new(false);
        let upload_id = session.upload_id.as_str();
        let mut results = futures_util::stream::iter(missing)
            .map(|part| {
                let stop = &stop;
                async move {
                    if stop.load(Ordering::SeqCst) {
                        return None;
                    }
                    Some(self.send_part(file, key, upload_id, part).await)
                }
            })
            .buffer_unordered(self.part_concurrency);
        let mut failure: Option<UploadError> = None;
        while let Some(result) = results.next().await {
            let error = match result {
                None => continue,
                Some(Ok(done)) => match journal.part_done(&done).await {
                    Ok(()) => {
                        session.done.insert(done.number, done);
                        continue;
                    }
                    Err(e) => UploadError::Journal(e),
                },
                Some(Err(e)) => e,
            };
            stop.store(true, Ordering::SeqCst);
            // Keep the first permanent error if there is one: it decides whether to abort.
            if failure.as_ref().is_none_or(UploadError::is_transient) {
                failure = Some(error);
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Hashes one part of the file, then uploads it with its checksum, streamed from disk: a
    /// part in flight holds one read buffer, not the whole part, so memory does not grow
    /// with `part_size` × `part_concurrency` × `upload_concurrency`. (The spool file is the
    /// agent's own and does not change; in [`ChecksumMode::Sha256`] the store checks the
    /// streamed bytes against the hash anyway.)
    async fn send_part(
        &self,
        file: &Path,
        key: &str,
        upload_id: &str,
        part: PartPlan,
    ) -> Result<DonePart, UploadError> {
        let sha256_b64 = b64(&sha256_of_range_async(file, part.offset, part.len).await?);
        let body = file_body(file, part.offset, part.len).await?;
        let mut request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part.number)
            .content_length(to_i64(part.len)?)
            .body(body);
        if self.checksum == ChecksumMode::Sha256 {
            request = request.checksum_sha256(&sha256_b64);
        }
        let started = Instant::now();
        let out = request
            .send()
            .await
            .map_err(|e| map_sdk_err("UploadPart", e))?;
        self.rate.observe(part.len, started);
        let etag = out
            .e_tag()
            .ok_or_else(|| UploadError::Other("UploadPart returned no ETag".into()))?;
        tracing::debug!(key, part = part.number, len = part.len, "part uploaded");
        Ok(DonePart {
            number: part.number,
            etag: etag.to_owned(),
            sha256_b64,
            size: part.len,
        })
    }

    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[DonePart],
    ) -> Result<String, UploadError> {
        let completed: Vec<CompletedPart> = parts
            .iter()
            .map(|p| {
                let part = CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(&p.etag);
                if self.checksum == ChecksumMode::Sha256 {
                    part.checksum_sha256(&p.sha256_b64).build()
                } else {
                    part.build()
                }
            })
            .collect();
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .if_none_match("*")
            .send()
            .await
            .map_err(|e| map_sdk_err("CompleteMultipartUpload", e))?;
        Ok(out.e_tag().unwrap_or_default().to_owned())
    }

    /// Decides what a failed multipart attempt leaves behind: transient failures keep the
    /// upload and journal for a resume; a vanished upload is forgotten (the retry starts
    /// over, so it is reported transient); any other permanent failure aborts the upload.
    async fn fail_upload(
        &self,
        key: &str,
        upload_id: &str,
        journal: &dyn UploadJournal,
        err: UploadError,
    ) -> UploadError {
        if err.is_transient() {
            return err;
        }
        if let Err(e) = journal.clear_multipart().await {
            tracing::warn!(key, error = %e, "could not clear the upload journal");
        }
        if err.code() == Some("NoSuchUpload") {
            return match err {
                UploadError::Service {
                    op,
                    status,
                    code,
                    message,
                    ..
                } => UploadError::Service {
                    op,
                    status,
                    code,
                    message,
                    transient: true,
                },
                other => other,
            };
        }
        tracing::warn!(key, error = %err, "aborting multipart upload after a permanent failure");
        if let Err(e) = self.abort_multipart(key, upload_id).await {
            tracing::warn!(key, error = %e, "could not abort the multipart upload");
        }
        err
    }
}

/// Which journaled or listed parts can be kept: the store lists them with the expected size,
/// and the checksum recorded for them (journal, else listing) equals the SHA-256 of that
/// range of the file now. Listed-but-unjournaled parts that qualify are journaled.
async fn reusable_parts(
    file: &Path,
    size: u64,
    progress: &MultipartProgress,
    listed: &[Part],
    journal: &dyn UploadJournal,
) -> Result<BTreeMap<i32, DonePart>, UploadError> {
    let plan: HashMap<i32, PartPlan> = plan_parts(size, progress.part_size)
        .into_iter()
        .map(|p| (p.number, p))
        .collect();
    let journaled: HashMap<i32, &DonePart> = progress.parts.iter().map(|p| (p.number, p)).collect();
    let mut keep = BTreeMap::new();
    for lp in listed {
        let Some(plan) = lp.part_number().and_then(|n| plan.get(&n)) else {
            continue;
        };
        if lp.size().and_then(|s| u64::try_from(s).ok()) != Some(plan.len) {
            continue;
        }
        let jp = journaled.get(&plan.number).filter(|j| j.size == plan.len);
        let recorded = jp.map(|j| j.sha256_b64.as_str()).or(lp.checksum_sha256());
        let etag = lp.e_tag().or(jp.map(|j| j.etag.as_str()));
        let (Some(recorded), Some(etag)) = (recorded, etag) else {
            continue;
        };
        if lp.checksum_sha256().is_some_and(|c| c != recorded) {
            continue;
        }
        let actual = b64(&sha256_of_range_async(file, plan.offset, plan.len).await?);
        if actual != recorded {
            continue;
        }
        let done = DonePart {
            number: plan.number,
            etag: etag.to_owned(),
            sha256_b64: actual,
            size: plan.len,
        };
        if jp.is_none() {
            journal
                .part_done(&done)
                .await
                .map_err(UploadError::Journal)?;
        }
        keep.insert(plan.number, done);
    }
    Ok(keep)
}

/// Cuts `size` bytes into parts of `part_size` (the last one shorter).
fn plan_parts(size: u64, part_size: u64) -> Vec<PartPlan> {
    let count = part_count(size, part_size).max(1);
    (0..count)
        .map(|i| {
            let offset = i * part_size;
            PartPlan {
                number: i32::try_from(i + 1).unwrap_or(i32::MAX),
                offset,
                len: part_size.min(size.saturating_sub(offset)),
            }
        })
        .collect()
}

fn part_count(size: u64, part_size: u64) -> u64 {
    size.div_ceil(part_size.max(1))
}

/// `Err(what differs)` unless the object has `size` bytes and `sha256` metadata `sha256_hex`.
fn compare_head(head: &HeadObjectOutput, size: u64, sha256_hex: &str) -> Result<(), String> {
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

fn is_precondition_failed(err: &UploadError) -> bool {
    matches!(err, UploadError::Service { status: 412, .. })
        || err.code() == Some("PreconditionFailed")
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

fn b64(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

fn to_i64(n: u64) -> Result<i64, UploadError> {
    i64::try_from(n).map_err(|_| UploadError::Other(format!("size {n} out of range")))
}

/// Maps an SDK error to [`UploadError`]: no usable answer (dispatch failure, timeout,
/// unparseable response) is transient; a service error is classified by code and status.
pub(crate) fn map_sdk_err<E>(op: &'static str, err: SdkError<E>) -> UploadError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or_default().to_owned();
            let message = se.err().message().unwrap_or_default().to_owned();
            service_error(op, status, code, message)
        }
        SdkError::ConstructionFailure(_) => UploadError::Other(format!(
            "{op}: could not build the request: {}",
            error_chain(&err)
        )),
        other => UploadError::Network {
            op,
            message: error_chain(&other),
        },
    }
}

/// An error and its causes as one readable line, `outer: cause: root cause`, for people
/// (status, doctor, logs). The SDK's own `DisplayErrorContext` appends a `Debug` dump of
/// its error structs (`DispatchFailure(DispatchFailure { source: ConnectorError { … `),
/// which says nothing more to a reader. A cause whose text the line already holds is skipped.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = e.source();
    }
    // One line: a multi-line cause (the credential chain lists each provider) is joined.
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

const CHECKSUM_CODES: &[&str] = &[
    "BadDigest",
    "InvalidDigest",
    "XAmzContentSHA256Mismatch",
    "XAmzContentChecksumMismatch",
];

const PERMANENT_CODES: &[&str] = &[
    "NoSuchBucket",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
    "AccountProblem",
    "InvalidBucketName",
    "NotImplemented",
];

const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "BandwidthLimitExceeded",
    "OperationAborted",
    "ConditionalRequestConflict",
    "RequestTimeTooSkewed",
];

fn service_error(op: &'static str, status: u16, code: String, message: String) -> UploadError {
    if CHECKSUM_CODES.contains(&code.as_str()) {
        return UploadError::ChecksumMismatch(format!("{op}: {code}: {message}"));
    }
    let transient = if PERMANENT_CODES.contains(&code.as_str()) {
        false
    } else {
        TRANSIENT_CODES.contains(&code.as_str()) || status >= 500 || status == 429 || status == 408
    };
    UploadError::Service {
        op,
        status,
        code,
        message,
        transient,
    }
}

/// One step of [`S3Destination::check`] (`qucam-offload doctor`): what was checked and what
/// it found (`Ok`) or why it failed (`Err`).
#[derive(Debug, Clone)]
pub struct CheckStep {
    pub what: &'static str,
    pub outcome: Result<String, String>,
}

impl S3Destination {
    /// Checks that the bucket answers HeadBucket; with `write_test`,
    /// also PUTs, GETs and DELETEs a probe object `{prefix}/.qucam-offload-doctor-<uuid>`.
    /// Stops at the first failing step.
    pub async fn check(&self, write_test: bool) -> Vec<CheckStep> {
        const LIMIT: std::time::Duration = std::time::Duration::from_secs(30);
        let timed_out = |op: &str| format!("{op}: no answer within {LIMIT:?}");
        let mut steps = Vec::new();
        let head = self.client.head_bucket().bucket(&self.bucket).send();
        let bucket = match tokio::time::timeout(LIMIT, head).await {
            Err(_) => Err(timed_out("HeadBucket")),
            Ok(Err(e)) => Err(map_sdk_err("HeadBucket", e).to_string()),
            Ok(Ok(_)) => Ok(format!("{} reachable", self.describe())),
        };
        let failed = bucket.is_err();
        steps.push(CheckStep {
            what: "s3 bucket",
            outcome: bucket,
        });
        if failed || !write_test {
            return steps;
        }
        let prefix = self.prefix.trim_matches('/');
        let name = format!(".qucam-offload-doctor-{}", uuid::Uuid::new_v4());
        let key = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let body = format!("qucam-offload doctor probe {key}\n");
        let outcome = async {
            let put = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .body(ByteStream::from(body.clone().into_bytes()))
                .send();
            match tokio::time::timeout(LIMIT, put).await {
                Err(_) => return Err(timed_out("PutObject")),
                Ok(r) => r.map_err(|e| map_sdk_err("PutObject", e).to_string())?,
            };
            let get = async {
                let out = self
                    .client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
                    .await;
                let out = out.map_err(|e| map_sdk_err("GetObject", e).to_string())?;
                let got = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| format!("GetObject: {}", error_chain(&e)))?;
                if got.into_bytes() != body.as_bytes() {
                    return Err("GetObject: the probe came back different".to_owned());
                }
                Ok(())
            };
            let got = tokio::time::timeout(LIMIT, get)
                .await
                .unwrap_or_else(|_| Err(timed_out("GetObject")));
            let delete = self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(&key)
                .send();
            let deleted = match tokio::time::timeout(LIMIT, delete).await {
                Err(_) => Err(timed_out("DeleteObject")),
                Ok(r) => r
                    .map(|_| ())
                    .map_err(|e| map_sdk_err("DeleteObject", e).to_string()),
            };
            got?;
            deleted.map_err(|e| format!("{e} (remove {key} by hand)"))?;
            Ok(format!("PUT, GET and DELETE of {key}"))
        }
        .await;
        steps.push(CheckStep {
            what: "s3 write test",
            outcome,
        });
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn auto_threshold_weighs_the_time_a_single_put_is_at_risk() {
        let auto = MultipartThreshold::Auto;
        let part = 8 * MIB;
        // Below the floor: one PUT, whatever the link.
        assert!(!auto.wants_multipart(16 * MIB - 1, part, None));
        assert!(
            !auto.wants_multipart(20 * MIB, 32 * MIB, None),
            "floor is the part size"
        );
        // Rate unknown: multipart.
        assert!(auto.wants_multipart(16 * MIB, part, None));
        // 64 MiB at 100 MB/s is 0.7 s: one PUT. At 5 MB/s it is 13 s: multipart.
        assert!(!auto.wants_multipart(64 * MIB, part, Some(100e6)));
        assert!(auto.wants_multipart(64 * MIB, part, Some(5e6)));
        // Over S3's single-PUT limit: multipart however fast.
        assert!(auto.wants_multipart(MAX_SINGLE_PUT + 1, part, Some(1e12)));
        // A fixed threshold ignores the rate.
        let fixed = MultipartThreshold::Fixed(16 * MIB);
        assert!(fixed.wants_multipart(16 * MIB, part, Some(1e12)));
        assert!(!fixed.wants_multipart(16 * MIB - 1, part, Some(1.0)));
        // ... but not S3's single-PUT limit.
        let huge = MultipartThreshold::Fixed(8 << 30);
        assert!(huge.wants_multipart(MAX_SINGLE_PUT + 1, part, Some(1e12)));
    }

    #[test]
    fn link_rate_is_smoothed_and_forgotten() {
        let ago = |secs: u64| Instant::now() - Duration::from_secs(secs);
        let near =
            |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() / want < 0.01);
        let rate = LinkRate::default();
        assert_eq!(rate.get(), None);
        rate.observe(1000, ago(1));
        assert_eq!(rate.get(), None, "small requests are not samples");
        rate.observe(8 * MIB, ago(1));
        assert!(near(rate.get(), (8 * MIB) as f64), "{:?}", rate.get());
        rate.observe(8 * MIB, ago(4));
        assert!(
            near(rate.get(), (8 * MIB) as f64 * 0.625),
            "{:?}",
            rate.get()
        );
        // A request that was in flight when an upload failed does not bring the rate back.
        let in_flight = ago(1);
        rate.forget();
        assert_eq!(rate.get(), None);
        rate.observe(8 * MIB, in_flight);
        assert_eq!(rate.get(), None, "started before the failure");
        rate.observe(8 * MIB, Instant::now());
        assert!(rate.get().is_some(), "a request started since counts");
    }

    #[test]
    fn plans_parts_with_short_last_part() {
        let plan = plan_parts(12 * MIB, 5 * MIB);
        assert_eq!(plan.len(), 3);
        assert_eq!(plan[2].offset, 10 * MIB);
        assert_eq!(plan[2].len, 2 * MIB);
        assert_eq!(plan_parts(10 * MIB, 5 * MIB).len(), 2);
        assert_eq!(plan_parts(0, 5 * MIB).len(), 1);
    }

    #[test]
    fn classifies_service_errors() {
        let e = |status, code: &str| service_error("Op", status, code.into(), String::new());
        assert!(e(503, "SlowDown").is_transient());
        assert!(e(503, "").is_transient());
        assert!(e(500, "InternalError").is_transient());
        assert!(e(400, "RequestTimeout").is_transient());
        assert!(e(429, "").is_transient());
        assert!(!e(403, "AccessDenied").is_transient());
        assert!(!e(404, "NoSuchBucket").is_transient());
        assert!(!e(403, "InvalidAccessKeyId").is_transient());
        assert!(!e(501, "NotImplemented").is_transient());
        assert!(matches!(
            e(400, "BadDigest"),
            UploadError::ChecksumMismatch(_)
        ));
    }

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

    #[test]
    fn error_chain_is_one_line_without_debug_dumps() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("dispatch failure")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused\n  (twice)",
        ));
        assert_eq!(
            error_chain(&e),
            "dispatch failure: connection refused (twice)"
        );
    }

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
