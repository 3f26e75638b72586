//! Resumable, hashed downloads from a camera into a file.
//!
//! The file on disk is the truth about progress: a partial file is resumed from its
//! length with `Range: bytes=N-`, and restarted from zero when the camera does not
//! honour the range. The SHA-256, and the block digests the delete challenge needs
//! ([`crate::blocks`]), are computed while streaming (the existing prefix is re-read from
//! disk on resume), the transfer stops at the expected size, and the file
//! is fsynced before success is reported. Memory use does not depend on the clip size.

use std::path::Path;

use futures_util::future::BoxFuture;
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use qucam::{CameraClient, CameraError, Download};

use crate::blocks::{BlockDigests, ClipHasher};

/// Slowest transfer tolerated, bytes per second (see [`fetch`]).
pub const MIN_RATE: u64 = 1024;

/// Why a download attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Camera(#[from] CameraError),
    #[error("local file error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("camera sent more than the listed {expected} bytes")]
    TooLong { expected: u64 },
    #[error("download ended at {got} of {expected} bytes")]
    Short { got: u64, expected: u64 },
    #[error("camera reports {actual} bytes but the listing said {listed}")]
    SizeMismatch { listed: u64, actual: u64 },
    /// The check run before each request ([`fetch_checked`]) refused it: nothing was sent.
    #[error(transparent)]
    Refused(Box<dyn std::error::Error + Send + Sync>),
}

impl DownloadError {
    /// Worth retrying soon: the network or camera may recover and the file resumes.
    pub fn is_transient(&self) -> bool {
        match self {
            DownloadError::Camera(e) => e.is_transient(),
            DownloadError::Short { .. } => true,
            _ => false,
        }
    }
}

/// What a finished download did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Final file size.
    pub size: u64,
    /// SHA-256 of the whole file, hex.
    pub sha256_hex: String,
    /// SHA-256 of each block of the file.
    pub blocks: BlockDigests,
    /// Body bytes received from the camera in this call.
    pub received: u64,
    /// Offset this call resumed from (0 when it started or restarted from zero).
    pub resumed_from: u64,
    /// The camera ignored the range and the file was restarted from zero.
    pub restarted: bool,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A floor of free space kept under the download while it streams (`[spool]
/// min_free_bytes`): every [`FLOOR_CHECK_EVERY`] bytes written, `free(dir)` is asked, and
/// under `min_free` the download stops with a disk-full I/O error
/// ([`std::io::ErrorKind::StorageFull`]), its `.part` kept to resume.
pub struct SpaceFloor<'a> {
    /// The directory whose file system is watched.
    pub dir: &'a Path,
    /// Free bytes to keep.
    pub min_free: u64,
    /// Free bytes on `dir`'s file system (`fs4::available_space` in the agent).
    pub free: &'a (dyn Fn(&Path) -> std::io::Result<u64> + Send + Sync),
}

/// How many bytes a download writes between two checks of its [`SpaceFloor`].
pub const FLOOR_CHECK_EVERY: u64 = 4 * 1024 * 1024;

impl SpaceFloor<'_> {
    /// A disk-full error when the free space is under the floor. A file system that
    /// cannot say is not stopped (writes still fail with ENOSPC when it is full).
    fn check(&self) -> Result<(), std::io::Error> {
        match (self.free)(self.dir) {
            Ok(free) if free < self.min_free => Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "{free} bytes free, under spool.min_free_bytes ({})",
                    self.min_free
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// Run right before each request for a clip's bytes (e.g. to confirm which camera answers
/// at the address); an error ends the download before that request is sent.
pub type BeforeRequest<'a> =
    dyn Fn() -> BoxFuture<'a, Result<(), DownloadError>> + Send + Sync + 'a;

/// Downloads `camera_path` into `file`, resuming from the file's current length.
///
/// `expected` is the size the listing gave: the transfer stops there and fails if the
/// camera's body is longer or shorter. `progress(done, total)` is called as bytes arrive.
pub async fn fetch(
    client: &CameraClient,
    camera_path: &str,
    file: &Path,
    expected: Option<u64>,
    progress: &(dyn Fn(u64, Option<u64>) + Send + Sync),
) -> Result<Fetched, DownloadError> {
    let unchecked = || -> BoxFuture<'_, Result<(), DownloadError>> { Box::pin(async { Ok(()) }) };
    fetch_checked(
        client,
        camera_path,
        file,
        expected,
        progress,
        &unchecked,
        None,
    )
    .await
}

/// [`fetch`], running `before` right before each request to the camera (a complete file
/// is reported without a request, and without `before`), and keeping `floor`'s free space
/// while the body streams.
pub async fn fetch_checked(
    client: &CameraClient,
    camera_path: &str,
    file: &Path,
    expected: Option<u64>,
    progress: &(dyn Fn(u64, Option<u64>) + Send + Sync),
    before: &BeforeRequest<'_>,
    floor: Option<&SpaceFloor<'_>>,
) -> Result<Fetched, DownloadError> {
    let request = async |offset: u64| -> Result<Download, DownloadError> {
        before().await?;
        Ok(client.download(camera_path, offset).await?)
    };
    let (mut f, mut have, mut hasher) = open_partial(file, expected).await?;
    if expected == Some(have) && have > 0 {
        f.sync_all().await.map_err(io_err(file))?;
        let (sha256_hex, blocks) = hasher.finish();
        return Ok(Fetched {
            size: have,
            sha256_hex,
            blocks,
            received: 0,
            resumed_from: have,
            restarted: false,
        });
    }
    let mut restarted = false;
    let mut dl = match request(have).await {
        Ok(d) => d,
        Err(DownloadError::Camera(CameraError::RangeNotHonoured { .. })) if have > 0 => {
            restarted = true;
            request(0).await?
        }
        Err(e) => return Err(e),
    };
    if dl.start != have {
        // The camera sent the whole file: start over.
        truncate(&mut f, file).await?;
        hasher = ClipHasher::new();
        have = 0;
        restarted = true;
    }
    if let (Some(listed), Some(total)) = (expected, dl.total)
        && total != listed
    {
        return Err(DownloadError::SizeMismatch {
            listed,
            actual: total,
        });
    }
    let total = expected.or(dl.total);
    let resumed_from = have;
    progress(have, total);
    let mut sink = Sink {
        f: &mut f,
        path: file,
        hasher: &mut hasher,
        have,
        received: 0,
        floor,
    };
    let result = sink.stream(&mut dl, total, progress).await;
    let (have, received) = (sink.have, sink.received);
    // Whatever happened, what was written stays on disk for the next attempt.
    f.flush().await.map_err(io_err(file))?;
    result?;
    if let Some(t) = total
        && have < t
    {
        return Err(DownloadError::Short {
            got: have,
            expected: t,
        });
    }
    f.sync_all().await.map_err(io_err(file))?;
    let (sha256_hex, blocks) = hasher.finish();
    Ok(Fetched {
        size: have,
        sha256_hex,
        blocks,
        received,
        resumed_from,
        restarted,
    })
}

/// Opens (creating) the partial file: its length and the hash of what it holds. A file
/// longer than `expected` cannot be a prefix of the clip and starts over.
async fn open_partial(
    file: &Path,
    expected: Option<u64>,
) -> Result<(File, u64, ClipHasher), DownloadError> {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(file)
        .await
        .map_err(io_err(file))?;
    let mut have = f.metadata().await.map_err(io_err(file))?.len();
    if expected.is_some_and(|e| have > e) {
        truncate(&mut f, file).await?;
        have = 0;
    }
    let hasher = hash_prefix(&mut f, file, have).await?;
    Ok((f, have, hasher))
}

/// Where the body goes: the file and the running hash, with the counts so far.
struct Sink<'a> {
    f: &'a mut File,
    path: &'a Path,
    hasher: &'a mut ClipHasher,
    /// Bytes in the file.
    have: u64,
    /// Body bytes received in this call (including any past `total`).
    received: u64,
    floor: Option<&'a SpaceFloor<'a>>,
}

impl Sink<'_> {
    /// Writes the body until it ends, stopping at `total`. A slow-loris camera (a byte now
    /// and then, never idle long enough for the idle timeout) is cut off when a window of
    /// 3 idle timeouts brings under [`MIN_RATE`].
    async fn stream(
        &mut self,
        dl: &mut Download,
        total: Option<u64>,
        progress: &(dyn Fn(u64, Option<u64>) + Send + Sync),
    ) -> Result<(), DownloadError> {
        let window = (dl.idle_timeout() * 3).max(std::time::Duration::from_secs(1));
        let mut window_start = std::time::Instant::now();
        let mut window_bytes = 0u64;
        let mut unchecked = 0u64;
        while let Some(chunk) = dl.chunk().await? {
            window_bytes += chunk.len() as u64;
            if window_start.elapsed() >= window {
                if window_bytes < MIN_RATE * window.as_secs().max(1) {
                    return Err(DownloadError::Camera(CameraError::Timeout(format!(
                        "camera sent {window_bytes} bytes in {window:?}, under {MIN_RATE} bytes/s"
                    ))));
                }
                window_start = std::time::Instant::now();
                window_bytes = 0;
            }
            self.received += chunk.len() as u64;
            let room = total.map_or(u64::MAX, |t| t.saturating_sub(self.have));
            let take = (chunk.len() as u64).min(room) as usize;
            self.f
                .write_all(&chunk[..take])
                .await
                .map_err(io_err(self.path))?;
            self.hasher.update(&chunk[..take]);
            self.have += take as u64;
            progress(self.have, total);
            unchecked += take as u64;
            if let Some(floor) = self.floor
                && unchecked >= FLOOR_CHECK_EVERY
            {
                unchecked = 0;
                floor.check().map_err(io_err(self.path))?;
            }
            if take < chunk.len() {
                return Err(DownloadError::TooLong {
                    expected: total.unwrap_or(self.have),
                });
            }
        }
        Ok(())
    }
}

async fn truncate(f: &mut File, path: &Path) -> Result<(), DownloadError> {
    f.set_len(0).await.map_err(io_err(path))?;
    f.seek(std::io::SeekFrom::Start(0))
        .await
        .map_err(io_err(path))?;
    Ok(())
}

/// Hashes the first `len` bytes of the file and leaves the cursor at `len`.
async fn hash_prefix(f: &mut File, path: &Path, len: u64) -> Result<ClipHasher, DownloadError> {
    let mut hasher = ClipHasher::new();
    f.seek(std::io::SeekFrom::Start(0))
        .await
        .map_err(io_err(path))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        let want = (buf.len() as u64).min(left) as usize;
        let n = f.read(&mut buf[..want]).await.map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    f.seek(std::io::SeekFrom::Start(len))
        .await
        .map_err(io_err(path))?;
    Ok(hasher)
}
