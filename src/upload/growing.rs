//! A spool file still being downloaded, as the upload of a large clip sees it: the download's
//! write loop reports the bytes on disk ([`GrowingWriter`]), the upload reads them as they
//! land ([`Growing`]). [`hash_growing`] reads the file once, in order, waiting for each
//! part's bytes, and hashes each part and the whole file; its check passes only when the
//! download finished and its SHA-256 is the one read, so nothing is completed from bytes
//! that are not the downloaded file.

use std::io::Read;
use std::path::{Path, PathBuf};

use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use super::digests::{PartDigests, WholeFileCheck, hash_parts};

/// What the download has put on disk so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Landed {
    /// Bytes written to the file (a write may still be in flight: see [`GrowingRead`]).
    bytes: u64,
    end: Option<End>,
}

/// How a download ended, as the upload reading its file sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// The whole file is on disk, fsynced, with this SHA-256 (hex).
    Done(String),
    /// The download stopped (failed, or the camera went away): the bytes on disk stay for
    /// its resume; the upload stops and waits.
    Stopped,
    /// The file was truncated (the camera did not honour the range): bytes read before are
    /// gone, and the upload begun from them must be abandoned.
    Discarded,
}

/// The download's side: reports bytes as they land, then how the download ended.
#[derive(Debug)]
pub struct GrowingWriter(watch::Sender<Landed>);

/// The upload's side of a spool file being downloaded.
#[derive(Debug, Clone)]
pub struct Growing(watch::Receiver<Landed>);

/// A new pair for one download.
pub fn growing() -> (GrowingWriter, Growing) {
    let (tx, rx) = watch::channel(Landed::default());
    (GrowingWriter(tx), Growing(rx))
}

impl GrowingWriter {
    /// The file now holds `bytes` bytes. Fewer than before: it was truncated (discarded).
    pub fn landed(&self, bytes: u64) {
        self.0.send_if_modified(|l| {
            if l.end.is_some() || bytes == l.bytes {
                return false;
            }
            if bytes < l.bytes {
                l.end = Some(End::Discarded);
            } else {
                l.bytes = bytes;
            }
            true
        });
    }

    /// The download finished: the whole file is on disk with SHA-256 `sha256_hex`.
    pub fn done(&self, sha256_hex: &str) {
        self.end(End::Done(sha256_hex.to_owned()));
    }

    /// The download stopped before the end.
    pub fn stopped(&self) {
        self.end(End::Stopped);
    }

    /// Whether the file was truncated while the upload read it.
    pub fn discarded(&self) -> bool {
        self.0.borrow().end == Some(End::Discarded)
    }

    fn end(&self, end: End) {
        self.0.send_if_modified(|l| {
            let first = l.end.is_none();
            if first {
                l.end = Some(end);
            }
            first
        });
    }
}

/// Reads the growing file at `path` from the start, never past the bytes reported landed
/// (blocking: runs on the blocking pool and waits on the runtime's `Handle`). A download
/// that stopped or was discarded ends the read with `Interrupted`.
struct GrowingRead {
    path: PathBuf,
    file: Option<std::fs::File>,
    growing: watch::Receiver<Landed>,
    handle: Handle,
    pos: u64,
}

fn interrupted(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::Interrupted, why.to_owned())
}

impl GrowingRead {
    /// Waits until there are bytes past `pos` or the download ended; how many may be read
    /// (`None`: up to the end of the finished file).
    fn wait_for_bytes(&mut self) -> std::io::Result<Option<u64>> {
        let pos = self.pos;
        let landed = self
            .handle
            .block_on(self.growing.wait_for(|l| l.bytes > pos || l.end.is_some()))
            .map_err(|_| interrupted("the download went away"))?
            .clone();
        match landed.end {
            Some(End::Done(_)) => Ok(None),
            Some(End::Stopped) => Err(interrupted("the download stopped")),
            Some(End::Discarded) => Err(interrupted("the partial file was discarded")),
            None => Ok(Some(landed.bytes - pos)),
        }
    }

    /// The download's SHA-256, once it finished.
    fn downloaded_sha256(&mut self) -> std::io::Result<String> {
        let landed = self
            .handle
            .block_on(self.growing.wait_for(|l| l.end.is_some()))
            .map_err(|_| interrupted("the download went away"))?
            .clone();
        match landed.end {
            Some(End::Done(sha)) => Ok(sha),
            _ => Err(interrupted("the download did not finish")),
        }
    }
}

impl Read for GrowingRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let room = self.wait_for_bytes()?;
            let file = match &mut self.file {
                Some(f) => f,
                None => self.file.insert(std::fs::File::open(&self.path)?),
            };
            let want = room.map_or(buf.len(), |r| r.min(buf.len() as u64) as usize);
            let n = file.read(&mut buf[..want])?;
            self.pos += n as u64;
            if n > 0 || room.is_none() {
                return Ok(n);
            }
            // Reported but not yet readable (the writer's last write is in flight): wait
            // for the next report, which comes after it.
            let _ = self.handle.block_on(self.growing.changed());
        }
    }
}

/// [`super::digests::hash_in_parts`] for a file still being downloaded: each part's digests
/// arrive as soon as its bytes are on disk and read, at most `ahead` parts ahead of the
/// consumer. The check passes when the download finished and its SHA-256 is the one read.
pub(crate) fn hash_growing(
    path: &Path,
    lens: Vec<u64>,
    growing: Growing,
    ahead: usize,
) -> (mpsc::Receiver<PartDigests>, WholeFileCheck) {
    let (tx, rx) = mpsc::channel(ahead.max(1));
    let mut reader = GrowingRead {
        path: path.to_owned(),
        file: None,
        growing: growing.0,
        handle: Handle::current(),
        pos: 0,
    };
    let task = tokio::task::spawn_blocking(move || {
        let shown = reader.path.clone();
        let full = hash_parts(&mut reader, &shown, &lens, |d| tx.blocking_send(d).is_ok())?;
        let expected = reader.downloaded_sha256()?;
        Ok((full, expected))
    });
    (rx, WholeFileCheck::new(task, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::io::Write;

    #[tokio::test]
    async fn parts_are_hashed_as_they_land_and_checked_against_the_download() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let mut f = std::fs::File::create(&path).unwrap();
        let (w, g) = growing();
        let (mut rx, check) = hash_growing(&path, vec![4, 4, 2], g, 1);
        f.write_all(b"0123").unwrap();
        w.landed(4);
        let first = rx.recv().await.expect("part 1 once its bytes landed");
        assert_eq!(
            first.sha256_b64,
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                Sha256::digest(b"0123")
            )
        );
        f.write_all(b"456789").unwrap();
        w.landed(10);
        assert!(rx.recv().await.is_some() && rx.recv().await.is_some());
        w.done(&hex::encode(Sha256::digest(b"0123456789")));
        assert_eq!(
            check.finish().await.unwrap(),
            hex::encode(Sha256::digest(b"0123456789"))
        );
    }

    #[tokio::test]
    async fn a_download_that_differs_stops_or_is_discarded_fails_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        std::fs::write(&path, b"0123").unwrap();
        let (w, g) = growing();
        let (mut rx, check) = hash_growing(&path, vec![4], g, 1);
        w.landed(4);
        assert!(rx.recv().await.is_some());
        w.done(&hex::encode(Sha256::digest(b"other")));
        assert!(matches!(
            check.finish().await,
            Err(super::super::UploadError::ChecksumMismatch(_))
        ));

        let (w, g) = growing();
        let (_rx, check) = hash_growing(&path, vec![4, 4], g, 1);
        w.landed(4);
        w.stopped();
        let e = check.finish().await.unwrap_err();
        assert!(e.is_transient(), "the upload waits for the download: {e}");

        let (w, g) = growing();
        let (_rx, check) = hash_growing(&path, vec![4, 4], g, 1);
        w.landed(4);
        w.landed(0);
        assert!(w.discarded());
        assert!(check.finish().await.is_err());
    }
}
