//! How to reach the bucket and how to upload: [`S3Settings`], [`ChecksumMode`],
//! [`StaticCredentials`], and the part-size limits.

use std::time::Duration;

use super::threshold::{DEFAULT_MULTIPART_THRESHOLD, MultipartThreshold};

/// Default multipart part size.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
/// S3's minimum size for every part but the last.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Default number of parts in flight at once.
pub const DEFAULT_PART_CONCURRENCY: usize = 4;
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default stall timeout: a request that sends and receives nothing this long fails.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// S3's maximum number of parts in one upload.
pub(super) const MAX_PARTS: u64 = 10_000;

/// How many parts of `part_size` bytes hold `size` bytes.
pub(super) fn part_count(size: u64, part_size: u64) -> u64 {
    size.div_ceil(part_size.max(1))
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
    /// and [`S3Destination::verify`](super::S3Destination::verify).
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
    /// How long a TCP (and TLS) connect may take.
    pub connect_timeout: Duration,
    /// A request that sends and receives no bytes for this long fails.
    pub stall_timeout: Duration,
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
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }
}
