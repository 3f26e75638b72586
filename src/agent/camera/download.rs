//! The download stage: take queued clips of a camera from the store (most severe first,
//! then oldest), `download_concurrency` at a time, while the spool has room; fetch each
//! into a `.part` file (resuming), rename it into place, and hand it to the uploader.
//! A clip's own failure is recorded on the clip; what is not the clip's fault (a full
//! disk, a camera gone) stops the pass's downloads as a [`PassStop`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tracing::{debug, info, warn};

use qucam::CameraClient;

use super::identity::{Identity, confirm_imei};
use crate::agent::events::Events;
use crate::agent::spool::Spool;
use crate::agent::uploader::Uploader;
use crate::agent::uploader::journal::sent_row;
use crate::agent::uploader::overlap::Early;
use crate::agent::work::{Work, applied, record, retry_secs, take};
use crate::agent::{AgentEvent, Stops, pause_key};
use crate::blocks::hash_file;
use crate::config::Config;
use crate::download::{self as dl, DownloadError, Fetched};
use crate::store::{Clip, Stage, Store};
use crate::upload::UploadOutcome;

/// Why a pass's downloads stop early. Not the clip's fault: it keeps its state and its
/// partial file, and resumes in a later pass.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PassStop {
    /// The spool's disk is full: downloads pause until space returns.
    #[error("local disk full: {0}; downloads paused until space returns")]
    DiskFull(DownloadError),
    /// The camera went away mid-download.
    #[error("camera lost during downloads: {0}")]
    CameraGone(DownloadError),
    /// The camera at the address could not be confirmed as the pass's own (see
    /// `identity`): before a request (nothing was sent; the `.part` resumes later), or
    /// after a download (another camera's was discarded; one that could not be asked is
    /// kept and checked again).
    #[error("{0}; downloads stopped")]
    Identity(Identity),
}

/// A finished `.part` file that could not be put in place.
#[derive(Debug, thiserror::Error)]
#[error("cannot rename {} into place: {source}", part.display())]
pub(crate) struct FinishError {
    part: PathBuf,
    source: std::io::Error,
}

/// Whether an I/O error means the disk (or the user's quota) is full.
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || e.raw_os_error() == Some(28)
}

/// Renames the finished `.part` into place and fsyncs the directory.
async fn finish_file(part: &Path, fin: &Path) -> Result<(), FinishError> {
    tokio::fs::rename(part, fin)
        .await
        .map_err(|source| FinishError {
            part: part.to_path_buf(),
            source,
        })?;
    if let Some(dir) = fin.parent() {
        let dir = dir.to_path_buf();
        let _ = tokio::task::spawn_blocking(move || {
            std::fs::File::open(&dir).and_then(|d| d.sync_all())
        })
        .await;
    }
    Ok(())
}

/// The downloads of one pass over the camera confirmed as `imei`. Cheap to clone: the tail
/// of an upload that ran with a download puts its file in place in a task of its own.
#[derive(Clone)]
pub(super) struct Downloads {
    pub(super) client: CameraClient,
    pub(super) imei: String,
    pub(super) store: Store,
    pub(super) cfg: Arc<Config>,
    pub(super) spool: Spool,
    /// Told when a clip is ready; uploads a large clip while it downloads.
    pub(super) uploader: Arc<Uploader>,
    pub(super) events: Events,
    pub(super) stops: Stops,
}

impl Downloads {
    /// Downloads every queued clip of the camera, `download_concurrency` at a time.
    pub(super) async fn run(&self) -> Result<()> {
        let imei = self.imei.as_str();
        let conc = self.cfg.sync.download_concurrency;
        let mut tried: HashSet<i64> = HashSet::new();
        let mut running = FuturesUnordered::new();
        let mut stop: Option<PassStop> = None;
        // Clips that can never fit in the spool (see `Spool::could_ever_fit`).
        let mut too_large: Vec<String> = Vec::new();
        loop {
            if self.stops.shutdown.is_cancelled() {
                break;
            }
            if running.len() < conc && stop.is_none() && !self.stops.soft.is_cancelled() {
                let next = self
                    .store
                    .next_downloads(imei, conc * 2 + tried.len())
                    .await?;
                if let Some(c) = next.into_iter().find(|c| !tried.contains(&c.id)) {
                    let need = self.spool.still_needed(&c).await;
                    if !self
                        .spool
                        .has_room(&self.store, &self.cfg.spool, need)
                        .await?
                    {
                        // Full for this visit when no upload can free space now (none
                        // pending, or the radio is on this camera's hotspot).
                        if running.is_empty()
                            && (!self.uploader.bucket_reachable()
                                || !self.uploader.uploads_pending().await?)
                        {
                            if !self
                                .spool
                                .could_ever_fit(&self.store, &self.cfg.spool, need)
                                .await?
                            {
                                // This clip can never fit (its listed size is more than the
                                // whole disk above the floor): the others go on, it waits.
                                warn!(
                                    imei = %imei, clip = %c.name, need,
                                    "not downloaded: it needs more than the spool's disk holds above spool.min_free_bytes; the camera's other clips go on"
                                );
                                too_large.push(c.name.clone());
                                tried.insert(c.id);
                                continue;
                            }
                            let msg = "downloads paused: the spool is full (spool.max_bytes or spool.min_free_bytes); they resume when uploads free space";
                            warn!(imei = %imei, "{msg}");
                            self.store
                                .set_notice(pause_key(imei), Some(msg.into()))
                                .await?;
                            break;
                        }
                        tokio::select! {
                            _ = self.uploader.upload_finished() => {}
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            Some(r) = running.next(), if !running.is_empty() => {
                                if let Err(e) = r { stop = Some(e); }
                            }
                        }
                        continue;
                    }
                    tried.insert(c.id);
                    running.push(self.download_one(c));
                    continue;
                }
            }
            if running.is_empty() {
                break;
            }
            tokio::select! {
                _ = self.stops.shutdown.cancelled() => break,
                Some(r) = running.next() => {
                    if let Err(e) = r {
                        stop = Some(e);
                    }
                }
            }
        }
        if let Some(first) = too_large.first() {
            // Said after the downloads that ran (each clears the pause notice).
            let msg = format!(
                "{} clip(s) ({first}{}) need more than the spool's disk holds above spool.min_free_bytes: not downloaded",
                too_large.len(),
                if too_large.len() > 1 { ", …" } else { "" }
            );
            self.store.set_notice(pause_key(imei), Some(msg)).await?;
        }
        match stop {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Downloads one clip. `Err` only when the pass's downloads should stop (camera gone,
    /// disk full); every other failure is recorded on the clip.
    async fn download_one(&self, c: Clip) -> Result<(), PassStop> {
        let client = &self.client;
        let Some(w) = take(&self.store, c, self.cfg.prefix()).await else {
            return Ok(());
        };
        let moved = self.store.start_download(w.id).await;
        if !applied(moved, "start download", &w) {
            return Ok(());
        }
        let dir = self.spool.camera_dir(&w.imei);
        if let Err(e) = tokio::fs::create_dir_all(&dir).await {
            let why = format!("cannot create {}: {e}", dir.display());
            self.download_failed(&w, why).await;
            return Ok(());
        }
        let part = self.spool.part_path(&w);
        let fin = self.spool.file_path(&w);
        if self.already_whole(&w, &fin).await {
            return Ok(());
        }
        let started = Instant::now();
        let early = self.uploader.start_early(&w, &part).await;
        match self.fetch(client, &w, &part, early.as_ref()).await {
            Ok(f) => {
                // Kept only once the camera that served them is confirmed as the clip's.
                if let Err(why) = confirm_imei(client, &w.imei).await {
                    return Err(self.not_confirmed_after(&w, &part, early, why).await);
                }
                match early {
                    Some(e) => self.finish_early(e, w, f, started),
                    None => self.put_in_place(&w, f, started, None).await,
                }
                Ok(())
            }
            Err(e) => {
                if let Some(early) = early
                    && early.stop().await
                {
                    self.uploader.forget_upload(&w).await;
                }
                self.fetch_failed(client, &w, e, &part).await
            }
        }
    }

    /// The download of `w` finished (`f`) while its upload ran (`early`): the upload's
    /// tail finishes in the background (the downloads move on to the next clip), then the
    /// file is put in place and the clip recorded, uploaded when the upload completed.
    fn finish_early(&self, early: Early, w: Work, f: Fetched, started: Instant) {
        let me = self.clone();
        tokio::spawn(async move {
            // The upload reads the `.part` file: it ends before the rename.
            let (sent, discarded, registered) = early.finish(&f.sha256_hex).await;
            if discarded {
                // The upload read bytes that were truncated away: never to be completed.
                me.uploader.forget_upload(&w).await;
            }
            me.put_in_place(&w, f, started, sent).await;
            // Only now may a pass or run that waits for uploads stop waiting for this clip.
            drop(registered);
        });
    }

    /// Renames the finished `.part` of `w` into place and records the download (and the
    /// upload that ran with it, if it completed).
    async fn put_in_place(
        &self,
        w: &Work,
        f: Fetched,
        started: Instant,
        sent: Option<UploadOutcome>,
    ) {
        let part = self.spool.part_path(w);
        let fin = self.spool.file_path(w);
        match finish_file(&part, &fin).await {
            Ok(()) => self.downloaded(w, f, started, sent).await,
            Err(e) => self.download_failed(w, e.to_string()).await,
        }
    }

    /// A kill between rename and the state update leaves the whole file in place: if it is
    /// there with the listed size, records it as downloaded (true). `fin` is named by this
    /// exact listing (size and `date`, see [`super::work::spool_name`]): a file of another
    /// listing is never found here.
    async fn already_whole(&self, w: &Work, fin: &Path) -> bool {
        if !tokio::fs::metadata(fin)
            .await
            .is_ok_and(|m| m.len() == w.size)
        {
            return false;
        }
        let f2 = fin.to_path_buf();
        let Ok(Ok((sha, blocks))) = tokio::task::spawn_blocking(move || hash_file(&f2)).await
        else {
            return false;
        };
        let r = self.store.downloaded(w.id, sha, blocks).await;
        applied(r, "mark downloaded", w);
        self.uploader.ready();
        true
    }

    /// Fetches the clip into `part` (resuming, with retries for transient errors) and
    /// counts the bytes received in the store.
    async fn fetch(
        &self,
        client: &CameraClient,
        w: &Work,
        part: &Path,
        early: Option<&Early>,
    ) -> Result<Fetched, DownloadError> {
        let received = Arc::new(AtomicU64::new(0));
        let last = Arc::new(AtomicU64::new(u64::MAX));
        let progress = {
            let received = received.clone();
            let last = last.clone();
            move |done: u64, _total: Option<u64>| {
                crate::agent::heartbeat::beat();
                if let Some(e) = early {
                    e.writer.landed(done);
                }
                let prev = last.swap(done, Ordering::Relaxed);
                if prev == u64::MAX {
                    return;
                }
                let add = if done >= prev { done - prev } else { done };
                received.fetch_add(add, Ordering::Relaxed);
            }
        };
        // Each request (every attempt, every resume) goes to the camera just confirmed as
        // the clip's: all bytes in the `.part` were served by it.
        let before = move || -> BoxFuture<'_, Result<(), DownloadError>> {
            Box::pin(async move {
                confirm_imei(client, &w.imei)
                    .await
                    .map_err(Identity::before_download)
            })
        };
        // The free-space floor holds while the body streams, not only before it starts.
        let spool_dir = part.parent().unwrap_or(part);
        let free = |dir: &Path| fs4::available_space(dir);
        let floor = dl::SpaceFloor {
            dir: spool_dir,
            min_free: self.cfg.spool.min_free_bytes,
            free: &free,
        };
        let floor = (floor.min_free > 0).then_some(&floor);
        let attempt = || async {
            last.store(u64::MAX, Ordering::Relaxed);
            dl::fetch_checked(
                client,
                &w.path,
                part,
                Some(w.size),
                &progress,
                &before,
                floor,
            )
            .await
        };
        let result = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(300))
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_times(4)
                    .with_jitter(),
            )
            .when(|e: &DownloadError| e.is_transient())
            .notify(|e, d| debug!(clip = %w.name, "download retry in {d:?}: {e}"))
            .await;
        let got = received.load(Ordering::Relaxed);
        record(self.store.add_received(w.id, got).await, "count bytes", w);
        result
    }

    /// Records a finished download (and the upload that ran with it, if it completed) and
    /// wakes the uploader.
    async fn downloaded(
        &self,
        w: &Work,
        f: Fetched,
        started: Instant,
        sent: Option<UploadOutcome>,
    ) {
        let r = match sent {
            Some(UploadOutcome::Uploaded { etag, sent }) => {
                let (key, sent) = (w.key.clone(), sent_row(&sent));
                let hashes = (f.sha256_hex.clone(), f.blocks.clone());
                self.store
                    .downloaded_and_uploaded(w.id, hashes, key, Some(etag), sent)
                    .await
            }
            _ => {
                let (sha, blocks) = (f.sha256_hex.clone(), f.blocks.clone());
                self.store.downloaded(w.id, sha, blocks).await
            }
        };
        if !applied(r, "mark downloaded", w) {
            return;
        }
        let r = self.store.set_notice(pause_key(&w.imei), None).await;
        record(r, "clear the pause notice", w);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        info!(
            imei = %w.imei, clip = %w.name, size = f.size, resumed_from = f.resumed_from,
            "downloaded in {secs:.1}s ({:.1} MB/s)", f.received as f64 / secs / 1e6
        );
        self.events.emit(AgentEvent::Downloaded {
            imei: w.imei.clone(),
            clip: w.name.clone(),
            bytes: f.received,
            secs,
        });
        self.uploader.ready();
    }

    /// Drops the download of `w` (its `.part`) because the camera at the address is not
    /// confirmed as its own; the clip is queued again without counting an attempt.
    async fn discard_download(&self, w: &Work, part: &Path, why: Identity) -> PassStop {
        warn!(imei = %w.imei, clip = %w.name, "{why}: discarding the download");
        let _ = tokio::fs::remove_file(part).await;
        // Parts sent from these bytes while they downloaded must never be completed.
        self.uploader.forget_upload(w).await;
        let r = self.store.download_discarded(w.id).await;
        applied(r, "discard the download", w);
        PassStop::Identity(why)
    }

    /// The camera could not be confirmed after the download of `w`. Another camera: the
    /// download is discarded. One that cannot be asked: every request was confirmed before
    /// it was sent, so the whole `.part` is kept and the clip stays `downloading`, checked
    /// again in the next pass (no attempt counted, nothing uploaded); an upload that ran
    /// with it stops and keeps its journal.
    async fn not_confirmed_after(
        &self,
        w: &Work,
        part: &Path,
        early: Option<Early>,
        why: Identity,
    ) -> PassStop {
        let truncated = match early {
            Some(early) => early.stop().await,
            None => false,
        };
        if matches!(why, Identity::Swapped { .. }) {
            return self.discard_download(w, part, why).await;
        }
        if truncated {
            self.uploader.forget_upload(w).await;
        }
        warn!(imei = %w.imei, clip = %w.name, "{why}: keeping the download for the next pass");
        PassStop::Identity(why)
    }

    /// A failed fetch: the pass stops when it is not the clip's fault (disk full, camera
    /// gone, another camera at the address); otherwise the failure is recorded on the clip.
    async fn fetch_failed(
        &self,
        client: &CameraClient,
        w: &Work,
        e: DownloadError,
        part: &Path,
    ) -> Result<(), PassStop> {
        let e = match e {
            // Another camera answers: nothing was asked of it, the `.part` holds our
            // camera's bytes and resumes when it is back.
            DownloadError::Refused(why) => match why.downcast::<Identity>() {
                Ok(why) => return Err(PassStop::Identity(*why)),
                Err(why) => DownloadError::Refused(why),
            },
            e => e,
        };
        if matches!(
            e,
            DownloadError::TooLong { .. } | DownloadError::SizeMismatch { .. }
        ) {
            // What is on disk cannot be trusted as a prefix of the clip.
            let _ = tokio::fs::remove_file(part).await;
            self.uploader.forget_upload(w).await;
        }
        if let DownloadError::Io { source, .. } = &e
            && is_disk_full(source)
        {
            // Not the clip's fault either: pause downloads, keep the partial file.
            let stop = PassStop::DiskFull(e);
            let msg = stop.to_string();
            warn!(imei = %w.imei, clip = %w.name, "{msg}");
            let r = self.store.set_notice(pause_key(&w.imei), Some(msg)).await;
            record(r, "set the pause notice", w);
            return Err(stop);
        }
        if matches!(&e, DownloadError::Camera(ce) if ce.is_unreachable()) {
            // Not the clip's fault: it stays `downloading` and resumes next time.
            return Err(PassStop::CameraGone(e));
        }
        // The clip's own failure only if its own camera served it (another one at the
        // address may well list other sizes). A camera that cannot be asked is gone: the
        // clip stays `downloading`, its partial file is checked again when it completes.
        match confirm_imei(client, &w.imei).await {
            Ok(()) => {}
            Err(why @ Identity::Swapped { .. }) => {
                return Err(self.discard_download(w, part, why).await);
            }
            Err(why) => return Err(PassStop::Identity(why)),
        }
        let msg = e.to_string();
        warn!(imei = %w.imei, clip = %w.name, "download failed: {msg}");
        self.events.emit(AgentEvent::Failed {
            imei: w.imei.clone(),
            clip: w.name.clone(),
            stage: Stage::Download.as_str(),
            error: msg.clone(),
        });
        self.download_failed(w, msg).await;
        Ok(())
    }

    /// Records a download failure on the clip (retried after [`retry_secs`]).
    async fn download_failed(&self, w: &Work, why: String) {
        let wait = retry_secs(w.attempts, &self.cfg.sync);
        let r = self.store.failed(w.id, Stage::Download, why, wait).await;
        applied(r, "mark failed", w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn a_full_disk_or_quota_is_disk_full_and_nothing_else_is() {
        assert!(is_disk_full(&Error::from(ErrorKind::StorageFull)));
        assert!(is_disk_full(&Error::from(ErrorKind::QuotaExceeded)));
        assert!(is_disk_full(&Error::from_raw_os_error(28))); // ENOSPC
        assert!(!is_disk_full(&Error::from(ErrorKind::PermissionDenied)));
        assert!(!is_disk_full(&Error::from_raw_os_error(5))); // EIO
        assert!(!is_disk_full(&Error::other("local disk full")));
    }

    #[test]
    fn a_pass_stop_reads_as_before() {
        let io = DownloadError::Io {
            path: "/spool/x.part".into(),
            source: Error::from_raw_os_error(28),
        };
        let full = PassStop::DiskFull(io).to_string();
        assert!(full.starts_with("local disk full: local file error on /spool/x.part"));
        assert!(full.ends_with("; downloads paused until space returns"));
        let short = DownloadError::Short {
            got: 1,
            expected: 2,
        };
        assert_eq!(
            PassStop::CameraGone(short).to_string(),
            "camera lost during downloads: download ended at 1 of 2 bytes"
        );
    }

    #[tokio::test]
    async fn finish_file_puts_the_part_in_place_or_says_why_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (part, fin) = (dir.path().join("a.part"), dir.path().join("a"));
        std::fs::write(&part, b"clip").expect("write");
        finish_file(&part, &fin).await.expect("renamed");
        assert_eq!(std::fs::read(&fin).expect("read"), b"clip");
        assert!(!part.exists());
        let e = finish_file(&part, &fin)
            .await
            .expect_err("no part any more");
        assert!(e.to_string().starts_with("cannot rename "), "{e}");
        assert_eq!(e.source.kind(), ErrorKind::NotFound);
    }
}
