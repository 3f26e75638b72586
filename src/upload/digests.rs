//! What the agent knows about the bytes it sent, for exact verification: [`SentDigests`]
//! (the file's MD5 for a single PUT; the composite SHA-256, the MD5 of the part MD5s and
//! the part count for a multipart upload) and the range hashing that produces them.
//!
//! A store reports an object's content in one of these forms, and each is compared exactly
//! (see `s3::forms`): the full-object SHA-256 checksum (`base64(sha256(file))`), the
//! composite SHA-256 checksum of a multipart object (`base64(sha256(d1 ‖ … ‖ dN))`, with or
//! without `-N`, where `di` are the raw part digests), or, when it keeps no checksum, the
//! ETag: `hex(md5(file))` for a single PUT, `hex(md5(m1 ‖ … ‖ mN))-N` for a multipart upload.

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use md5::Md5;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{DonePart, UploadError};

/// What the agent computed about the bytes of an object it uploaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SentDigests {
    /// Not uploaded by this agent (found already there, or by an older version): nothing
    /// to compare but the object's own bytes.
    #[default]
    Unknown,
    /// One PUT: the MD5 of the file (hex), what the ETag of an unencrypted object is.
    Single { md5_hex: String },
    /// Multipart: `parts` parts, the composite SHA-256 (base64, without `-N`) and the MD5 of
    /// the part MD5s (hex, without `-N`).
    Multipart {
        parts: u32,
        sha256_b64: String,
        md5_hex: String,
    },
}

impl SentDigests {
    /// The digests of a multipart object made of `parts` (in part-number order, numbered
    /// 1..=N); `Unknown` if a part's digests are not well-formed.
    pub fn of_parts(parts: &[DonePart]) -> Self {
        let mut sha = Sha256::new();
        let mut md5 = Md5::new();
        for (i, p) in parts.iter().enumerate() {
            let raw_sha = base64::engine::general_purpose::STANDARD
                .decode(p.sha256_b64.trim())
                .ok()
                .filter(|r| r.len() == 32);
            let raw_md5 = hex::decode(p.md5_hex.trim()).ok().filter(|r| r.len() == 16);
            let (Some(raw_sha), Some(raw_md5)) = (raw_sha, raw_md5) else {
                return Self::Unknown;
            };
            if usize::try_from(p.number).ok() != Some(i + 1) {
                return Self::Unknown;
            }
            sha.update(&raw_sha);
            md5.update(&raw_md5);
        }
        match u32::try_from(parts.len()) {
            Ok(n) if n > 0 => Self::Multipart {
                parts: n,
                sha256_b64: base64::engine::general_purpose::STANDARD.encode(sha.finalize()),
                md5_hex: hex::encode(md5.finalize()),
            },
            _ => Self::Unknown,
        }
    }
}

/// The SHA-256 (base64) and MD5 (hex) of one part of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartDigests {
    pub sha256_b64: String,
    pub md5_hex: String,
}

/// Hashing of a file in parts under way (see [`hash_in_parts`]): [`WholeFileCheck::finish`]
/// says whether the bytes read were the file that was downloaded.
pub(crate) struct WholeFileCheck {
    /// The whole file's SHA-256 as read, and the download's (both hex).
    task: tokio::task::JoinHandle<std::io::Result<(String, String)>>,
    shown: String,
}

impl WholeFileCheck {
    /// The hashing under way on the blocking pool; it gives (SHA-256 read, SHA-256 of the
    /// download).
    pub(crate) fn new(
        task: tokio::task::JoinHandle<std::io::Result<(String, String)>>,
        path: &Path,
    ) -> Self {
        let shown = path.display().to_string();
        WholeFileCheck { task, shown }
    }

    /// `ChecksumMismatch` unless every part was read and the whole file's SHA-256 is the
    /// download's (the spool file changed, or is short, otherwise). The SHA-256 (hex).
    pub(crate) async fn finish(self) -> Result<String, UploadError> {
        let (full, expected) = self
            .task
            .await
            .map_err(|e| UploadError::Other(format!("hashing task failed: {e}")))?
            .map_err(|e| UploadError::io(format!("hashing {}", self.shown), e))?;
        let expected = expected.trim().to_ascii_lowercase();
        if full == expected {
            Ok(full)
        } else {
            Err(UploadError::ChecksumMismatch(format!(
                "{} now has sha256 {full}, downloaded as {expected}",
                self.shown
            )))
        }
    }
}

/// Starts reading `path` once, in order, on the blocking pool: the digests of each
/// consecutive part (of the lengths `lens`) arrive on the receiver as soon as they are
/// computed, at most `ahead` parts ahead of the consumer, while the whole file is hashed in
/// the same read. Parts can be sent while later ones are hashed; nothing may be completed
/// before [`WholeFileCheck::finish`] succeeds. This ties the part digests, and so the
/// store's checksum or ETag, to the bytes downloaded (`sha256_hex`). One read buffer,
/// whatever the part size.
pub(crate) fn hash_in_parts(
    path: &Path,
    lens: Vec<u64>,
    sha256_hex: &str,
    ahead: usize,
) -> (mpsc::Receiver<PartDigests>, WholeFileCheck) {
    let (tx, rx) = mpsc::channel(ahead.max(1));
    let owned: PathBuf = path.to_owned();
    let expected = sha256_hex.to_owned();
    let task = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&owned)?;
        let full = hash_parts(&mut file, &owned, &lens, |d| tx.blocking_send(d).is_ok())?;
        Ok((full, expected))
    });
    (rx, WholeFileCheck::new(task, path))
}

/// [`hash_in_parts`], all parts at once (after the whole-file check).
pub(crate) async fn file_digests(
    path: &Path,
    lens: Vec<u64>,
    sha256_hex: &str,
) -> Result<Vec<PartDigests>, UploadError> {
    let count = lens.len();
    let (mut rx, check) = hash_in_parts(path, lens, sha256_hex, count);
    let mut parts = Vec::with_capacity(count);
    while let Some(d) = rx.recv().await {
        parts.push(d);
    }
    check.finish().await?;
    Ok(parts)
}

/// Hashes the parts of `file` (at `path`) in order, giving each part's digests to `each`
/// (which says whether to go on); the whole file's SHA-256 (hex).
pub(crate) fn hash_parts(
    file: &mut impl Read,
    path: &Path,
    lens: &[u64],
    mut each: impl FnMut(PartDigests) -> bool,
) -> std::io::Result<String> {
    let mut full = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    for &len in lens {
        let (mut sha, mut md5) = (Sha256::new(), Md5::new());
        let mut left = len;
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{} is shorter than expected", path.display()),
                ));
            }
            sha.update(&buf[..n]);
            md5.update(&buf[..n]);
            full.update(&buf[..n]);
            left -= n as u64;
        }
        let digests = PartDigests {
            sha256_b64: base64::engine::general_purpose::STANDARD.encode(sha.finalize()),
            md5_hex: hex::encode(md5.finalize()),
        };
        if !each(digests) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "nobody waits for the digests",
            ));
        }
    }
    Ok(hex::encode(full.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(number: i32, data: &[u8]) -> DonePart {
        DonePart {
            number,
            etag: String::new(),
            sha256_b64: base64::engine::general_purpose::STANDARD.encode(Sha256::digest(data)),
            md5_hex: hex::encode(Md5::digest(data)),
            size: data.len() as u64,
        }
    }

    #[test]
    fn composite_of_parts_is_the_digest_of_the_raw_part_digests() {
        let (a, b) = (b"first part".as_slice(), b"second".as_slice());
        let mut raw_sha = Sha256::digest(a).to_vec();
        raw_sha.extend_from_slice(&Sha256::digest(b));
        let mut raw_md5 = Md5::digest(a).to_vec();
        raw_md5.extend_from_slice(&Md5::digest(b));
        assert_eq!(
            SentDigests::of_parts(&[part(1, a), part(2, b)]),
            SentDigests::Multipart {
                parts: 2,
                sha256_b64: base64::engine::general_purpose::STANDARD
                    .encode(Sha256::digest(&raw_sha)),
                md5_hex: hex::encode(Md5::digest(&raw_md5)),
            }
        );
        // Out of order, a gap, a missing MD5 or no parts: nothing to claim.
        assert_eq!(SentDigests::of_parts(&[part(2, b)]), SentDigests::Unknown);
        let mut no_md5 = part(1, a);
        no_md5.md5_hex.clear();
        assert_eq!(SentDigests::of_parts(&[no_md5]), SentDigests::Unknown);
        assert_eq!(SentDigests::of_parts(&[]), SentDigests::Unknown);
    }

    #[tokio::test]
    async fn file_digests_cut_parts_and_check_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let whole = hex::encode(Sha256::digest(b"0123456789"));
        let parts = file_digests(&path, vec![4, 4, 2], &whole).await.unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            parts[1].sha256_b64,
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"4567"))
        );
        assert_eq!(parts[2].md5_hex, hex::encode(Md5::digest(b"89")));
        // The file is not the one downloaded: refused, whatever its parts hash to.
        let other = hex::encode(Sha256::digest(b"something else"));
        assert!(matches!(
            file_digests(&path, vec![10], &other).await,
            Err(UploadError::ChecksumMismatch(_))
        ));
        assert!(file_digests(&path, vec![8, 8], &whole).await.is_err());
    }
}
