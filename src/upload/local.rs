//! A local directory destination (the demo, a depot NAS): keys become paths under a root.
//! Files are written to a temporary name in the target directory, fsynced, then linked into
//! place without ever replacing an existing file; verification re-reads and re-hashes.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::{
    ObjectMeta, SentDigests, UploadError, UploadJournal, UploadOutcome, Verification,
    sha256_of_range,
};

/// A directory tree holding one file per key.
#[derive(Debug, Clone)]
pub struct LocalDestination {
    root: PathBuf,
}

/// What is already at a key's path, compared with the clip.
enum Existing {
    Absent,
    Same,
    Different(String),
}

impl LocalDestination {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// E.g. `dir /srv/clips`.
    pub fn describe(&self) -> String {
        format!("dir {}", self.root.display())
    }

    /// The path a key maps to; refuses absolute keys, `..`, `.` and empty components.
    pub fn path_for(&self, key: &str) -> Result<PathBuf, UploadError> {
        let invalid = || UploadError::InvalidKey(key.to_owned());
        if key.is_empty() || key.starts_with('/') || key.contains('\\') || key.contains('\0') {
            return Err(invalid());
        }
        let mut path = self.root.clone();
        for segment in key.split('/') {
            let mut components = Path::new(segment).components();
            match (components.next(), components.next()) {
                (Some(Component::Normal(c)), None) if c == segment => path.push(c),
                _ => return Err(invalid()),
            }
        }
        Ok(path)
    }

    /// Copies `file` to the key's path unless an identical file is already there; a
    /// different file there is a [`UploadError::Conflict`]. The journal is not used: a local
    /// copy restarts from the beginning.
    pub async fn upload(
        &self,
        file: &Path,
        key: &str,
        size: u64,
        meta: &ObjectMeta,
        _journal: &dyn UploadJournal,
    ) -> Result<UploadOutcome, UploadError> {
        let dest = self.path_for(key)?;
        let src = file.to_owned();
        let key = key.to_owned();
        let sha256_hex = meta.sha256_hex.trim().to_ascii_lowercase();
        tokio::task::spawn_blocking(move || store(&src, &dest, &key, size, &sha256_hex))
            .await
            .map_err(|e| UploadError::Other(format!("copy task failed: {e}")))?
    }

    /// Whether a regular file of `size` bytes is under `key`.
    pub async fn holds(&self, key: &str, size: u64) -> Result<bool, UploadError> {
        let path = self.path_for(key)?;
        Ok(tokio::fs::metadata(&path)
            .await
            .is_ok_and(|m| m.is_file() && m.len() == size))
    }

    /// Re-reads the file under `key` and compares its size and SHA-256.
    pub async fn verify(
        &self,
        key: &str,
        size: u64,
        sha256_hex: &str,
    ) -> Result<Verification, UploadError> {
        let dest = self.path_for(key)?;
        let sha256_hex = sha256_hex.trim().to_ascii_lowercase();
        let existing = tokio::task::spawn_blocking(move || compare(&dest, size, &sha256_hex))
            .await
            .map_err(|e| UploadError::Other(format!("verify task failed: {e}")))??;
        Ok(match existing {
            Existing::Absent => Verification::Missing,
            Existing::Same => Verification::Verified,
            Existing::Different(detail) => Verification::Mismatch(detail),
        })
    }
}

/// The blocking copy: temp file in the target dir, hash while copying, fsync, link into place.
fn store(
    src: &Path,
    dest: &Path,
    key: &str,
    size: u64,
    sha256_hex: &str,
) -> Result<UploadOutcome, UploadError> {
    match compare(dest, size, sha256_hex)? {
        Existing::Same => return Ok(UploadOutcome::AlreadyPresent),
        Existing::Different(detail) => return Err(conflict(key, detail)),
        Existing::Absent => {}
    }
    let dir = dest
        .parent()
        .ok_or_else(|| UploadError::InvalidKey(key.to_owned()))?;
    fs::create_dir_all(dir)
        .map_err(|e| UploadError::io(format!("creating {}", dir.display()), e))?;
    let tmp = temp_path(dest);
    let result = copy_to_temp(src, &tmp, size, sha256_hex)
        .and_then(|()| publish(&tmp, dest, key, size, sha256_hex));
    let _ = fs::remove_file(&tmp);
    let outcome = result?;
    sync_dir(dir)?;
    Ok(outcome)
}

/// Copies `src` to `tmp`, checking size and SHA-256 on the way, and fsyncs it.
fn copy_to_temp(src: &Path, tmp: &Path, size: u64, sha256_hex: &str) -> Result<(), UploadError> {
    let io_err =
        |what: &str, path: &Path, e| UploadError::io(format!("{what} {}", path.display()), e);
    let mut input = File::open(src).map_err(|e| io_err("opening", src, e))?;
    let mut output = File::create_new(tmp).map_err(|e| io_err("creating", tmp, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut copied = 0u64;
    loop {
        let n = input
            .read(&mut buf)
            .map_err(|e| io_err("reading", src, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output
            .write_all(&buf[..n])
            .map_err(|e| io_err("writing", tmp, e))?;
        copied += n as u64;
    }
    let actual = hex::encode(hasher.finalize());
    if copied != size || actual != sha256_hex {
        return Err(UploadError::ChecksumMismatch(format!(
            "{}: read {copied} bytes with sha256 {actual}, expected {size} bytes with {sha256_hex}",
            src.display()
        )));
    }
    output.sync_all().map_err(|e| io_err("syncing", tmp, e))
}

/// Moves the finished temp file to `dest` without replacing anything: a hard link fails if
/// `dest` exists (then it is compared instead); where links are unsupported, rename after a
/// final existence check.
fn publish(
    tmp: &Path,
    dest: &Path,
    key: &str,
    size: u64,
    sha256_hex: &str,
) -> Result<UploadOutcome, UploadError> {
    let linked = match fs::hard_link(tmp, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return match compare(dest, size, sha256_hex)? {
                Existing::Same | Existing::Absent => Ok(UploadOutcome::AlreadyPresent),
                Existing::Different(detail) => Err(conflict(key, detail)),
            };
        }
        Err(_) if !dest.exists() => fs::rename(tmp, dest),
        Err(e) => Err(e),
    };
    linked.map_err(|e| UploadError::io(format!("storing {}", dest.display()), e))?;
    Ok(UploadOutcome::Uploaded {
        etag: sha256_hex.to_owned(),
        // The local destination verifies by hashing the stored file.
        sent: SentDigests::Unknown,
    })
}

/// Compares the file at `path` (if any) with the expected size and SHA-256.
fn compare(path: &Path, size: u64, sha256_hex: &str) -> Result<Existing, UploadError> {
    let len = match fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return Ok(Existing::Different("not a regular file".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Absent),
        Err(e) => return Err(UploadError::io(format!("inspecting {}", path.display()), e)),
    };
    if len != size {
        return Ok(Existing::Different(format!(
            "size: stored {len} bytes, expected {size}"
        )));
    }
    let actual = sha256_of_range(path, 0, len)
        .map_err(|e| UploadError::io(format!("hashing {}", path.display()), e))?;
    let actual = hex::encode(actual);
    if actual == sha256_hex {
        Ok(Existing::Same)
    } else {
        Ok(Existing::Different(format!(
            "sha256: stored {actual}, expected {sha256_hex}"
        )))
    }
}

fn conflict(key: &str, detail: String) -> UploadError {
    UploadError::Conflict {
        key: key.to_owned(),
        detail,
    }
}

/// A unique hidden temp name next to `dest` (same directory, so the link/rename is atomic).
fn temp_path(dest: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Makes the new directory entry durable.
fn sync_dir(dir: &Path) -> Result<(), UploadError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| UploadError::io(format!("syncing {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_under_root_and_escapes_are_refused() {
        let d = LocalDestination::new("/srv/clips");
        assert_eq!(
            d.path_for("p/861/2024-05-01/a.mp4").unwrap(),
            Path::new("/srv/clips/p/861/2024-05-01/a.mp4")
        );
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "a//b",
            "./a",
            "a/.",
            "a\\b",
            "a/",
        ] {
            assert!(
                matches!(d.path_for(bad), Err(UploadError::InvalidKey(_))),
                "{bad:?} accepted"
            );
        }
    }
}
