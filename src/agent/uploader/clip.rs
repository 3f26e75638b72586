//! The upload stage: the uploader loop (up to `upload_concurrency` clips at a time, when
//! the schedule lets uploads run), uploading or resuming each downloaded clip, verifying
//! its object in the destination, and recording the outcome. Also how a pass waits for the
//! uploads of its camera. The multipart journal each upload keeps in the store, and the
//! digests it sent, live in [`super::journal`].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::journal::{StoreJournal, sent_digests, sent_row};
use super::work::Work;
use super::{Agent, AgentEvent};
use crate::store::{Clip, ClipState, Stage, Verified};
use crate::upload::{ObjectMeta, SentDigests, UploadError, UploadOutcome, Verification};

fn upload_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(300))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(4)
        .with_jitter()
}

impl Agent {
    /// Runs a request of clip `w` with the on-the-spot retries ([`UploadError::retry_now`]).
    /// A request that timed out is not retried on the spot, but when the destination then
    /// answers its probe the stall was this request's: it is tried once more before the
    /// failure is left to the caller (to pause uploads, or charge the clip an attempt).
    async fn retrying<T, F, Fut>(&self, w: &Work, op: F) -> Result<T, UploadError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, UploadError>>,
    {
        let once = || {
            (&op)
                .retry(upload_backoff())
                .when(UploadError::retry_now)
                .notify(|e, d| debug!(clip = %w.name, "retry in {d:?}: {e}"))
        };
        match once().await {
            Err(e)
                if matches!(e, UploadError::TimedOut { .. })
                    && !self.destination_down(&e).await =>
            {
                debug!(clip = %w.name, "{e}; the destination answers: trying once more");
                once().await
            }
            r => r,
        }
    }

    /// Whether the uploader has work it will still do in this run (in flight, or due; not
    /// while the destination is paused, see [`Agent::stop_waiting_for_destination`]).
    pub(super) async fn uploads_pending(&self) -> Result<bool> {
        if self.stop_waiting_for_destination() {
            return Ok(false);
        }
        let flying = self
            .in_flight
            .lock()
            .map(|s| !s.is_empty())
            .unwrap_or(false);
        Ok(flying
            || self.overlapping.any(None)
            || !self
                .store
                .next_uploads(self.in_flight_ids(), 1)
                .await?
                .is_empty())
    }

    /// Clips the uploader must not pick now: in flight, or failed in this `--once` run.
    fn in_flight_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .in_flight
            .lock()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        if let Ok(Some(f)) = self.once_failed.lock().as_deref() {
            ids.extend(f.iter().copied());
        }
        ids
    }

    fn upload_gave_up(&self, id: i64) {
        if let Ok(mut f) = self.once_failed.lock()
            && let Some(set) = f.as_mut()
        {
            set.insert(id);
        }
    }

    /// Waits until no clip (of `imei`, or of any camera) waits for the uploader, or the
    /// destination is paused and this run does not wait for it
    /// ([`Agent::stop_waiting_for_destination`]).
    pub(super) async fn wait_uploads(&self, imei: Option<&str>) {
        loop {
            if self.shutdown.is_cancelled()
                || self.soft_stop.is_cancelled()
                || self.stop_waiting_for_destination()
                || !self.schedule.uploads_may_run()
            {
                // (No uploads while the radio is on a camera's hotspot: store and forward.)
                return;
            }
            let given_up: Vec<i64> = match self.once_failed.lock().as_deref() {
                Ok(Some(f)) => f.iter().copied().collect(),
                _ => Vec::new(),
            };
            let pending = match self.store.next_uploads(given_up, usize::MAX).await {
                Ok(p) => p,
                Err(_) => return,
            };
            // Clips in flight are still in an upload state, so they show up in `pending`;
            // clips uploading while they download are `downloading`, so they are asked for.
            if !pending.iter().any(|c| imei.is_none_or(|i| c.imei == i))
                && !self.overlapping.any(imei)
            {
                return;
            }
            if self.in_flight_ids().is_empty() {
                // The clips wait for a retry or for the uploader's turn: by design.
                super::heartbeat::beat();
            }
            tokio::select! {
                _ = self.upload_done.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = self.shutdown.cancelled() => return,
                _ = self.soft_stop.cancelled() => return,
            }
        }
    }

    /// Uploads clips as they become ready until `stop`.
    pub(super) async fn upload_loop(self: Arc<Self>, stop: CancellationToken) {
        let conc = self.cfg.sync.upload_concurrency;
        let mut running = FuturesUnordered::new();
        if !self.destination_paused() {
            self.clear_destination_notice().await;
        }
        loop {
            if stop.is_cancelled() || self.shutdown.is_cancelled() || self.soft_stop.is_cancelled()
            {
                break;
            }
            // While the destination is paused nothing new starts; it is probed instead (not
            // while the radio is on a camera's hotspot: the destination is away by design).
            if !self.schedule.destination_away() {
                self.probe_if_due().await;
            }
            let open = !self.destination_paused() && !self.destination_given_up();
            // Uploads running while their clip downloads take slots too.
            let slots = conc.saturating_sub(self.overlapping.count());
            if open && running.len() < slots && self.schedule.uploads_may_run() {
                let next = self
                    .store
                    .next_uploads(self.in_flight_ids(), slots - running.len())
                    .await
                    .unwrap_or_default();
                if !next.is_empty() {
                    for c in next {
                        if let Ok(mut s) = self.in_flight.lock() {
                            s.insert(c.id);
                        }
                        let me = self.clone();
                        running.push(async move {
                            let _busy = super::heartbeat::busy();
                            let id = c.id;
                            me.upload_one(c).await;
                            id
                        });
                    }
                    continue;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.shutdown.cancelled() => break,
                _ = self.soft_stop.cancelled() => break,
                _ = self.upload_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                Some(id) = running.next(), if !running.is_empty() => {
                    if let Ok(mut s) = self.in_flight.lock() {
                        s.remove(&id);
                    }
                    self.upload_done.notify_waiters();
                }
            }
        }
        // Let in-flight uploads record their progress for a moment, then drop them:
        // finished parts are in the store and the upload resumes next time.
        let drain = async {
            while let Some(id) = running.next().await {
                if let Ok(mut s) = self.in_flight.lock() {
                    s.remove(&id);
                }
            }
        };
        tokio::pin!(drain);
        // Without a shutdown (end of a pass, soft stop) uploads in flight may finish; a
        // shutdown, even one arriving meanwhile, leaves them 2 s.
        let drained = !self.shutdown.is_cancelled()
            && tokio::time::timeout(Duration::from_secs(3600), async {
                tokio::select! {
                    _ = &mut drain => true,
                    _ = self.shutdown.cancelled() => false,
                }
            })
            .await
            .unwrap_or(false);
        if !drained {
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut drain).await;
        }
        self.upload_done.notify_waiters();
    }

    pub(super) fn object_meta(&self, w: &Work, device_name: &str, sha: &str) -> ObjectMeta {
        ObjectMeta {
            imei: w.imei.clone(),
            device_name: device_name.to_string(),
            camera_path: w.path.clone(),
            event_code: w.parsed.event_code().to_string(),
            event_name: qucam::event_name(w.parsed.event_code()).to_string(),
            camera: w.parsed.camera_label().to_string(),
            recorded_at: w.parsed.recorded().format("%Y-%m-%dT%H:%M:%S").to_string(),
            sha256_hex: sha.to_string(),
        }
    }

    /// The camera's device name as last seen (for the object's metadata), or "".
    pub(super) async fn device_name(&self, imei: &str) -> String {
        self.store
            .cameras()
            .await
            .ok()
            .and_then(|cs| cs.into_iter().find(|r| r.imei == imei))
            .and_then(|r| r.device_name)
            .unwrap_or_default()
    }

    /// Uploads (or resumes), then verifies one clip; records the outcome.
    async fn upload_one(self: &Arc<Self>, c: Clip) {
        let started = Instant::now();
        let Some(w) = self.take(c).await else {
            return;
        };
        let Some(sha) = w.sha256.clone() else {
            // Downloaded without a hash cannot happen; download again to be safe.
            let r = self.store.requeue_for_download(w.id).await;
            self.applied(r, "requeue for download", &w);
            return;
        };
        let file = self.file_path(&w);
        let device_name = self.device_name(&w.imei).await;
        // A clip already `uploaded` (verification postponed, or a kill) is only verified.
        let sent = if w.state == ClipState::Uploaded {
            false
        } else {
            let Some(sent) = self.send(&w, &file, &sha, &device_name).await else {
                return;
            };
            sent
        };
        self.verify(&w, &file, &sha, &device_name, sent, started)
            .await;
    }

    /// Uploads the spool file of `w` (resuming a multipart upload) and records it as
    /// uploaded. `Some(sent)`: uploaded (`sent` false when the object was already there);
    /// `None`: not (requeued, failed, or the clip moved on), recorded.
    async fn send(&self, w: &Work, file: &Path, sha: &str, device_name: &str) -> Option<bool> {
        if tokio::fs::metadata(file).await.is_err() {
            warn!(clip = %w.name, "spool file missing: downloading it again");
            let r = self.store.requeue_for_download(w.id).await;
            self.applied(r, "requeue for download", w);
            return None;
        }
        let moved = self.store.start_upload(w.id).await;
        if !self.applied(moved, "start upload", w) {
            return None;
        }
        let meta = self.object_meta(w, device_name, sha);
        let journal = StoreJournal {
            store: self.store.clone(),
            id: w.id,
        };
        let result = self
            .retrying(w, || async {
                self.dest
                    .upload(file, &w.key, w.size, &meta, &journal)
                    .await
            })
            .await;
        match result {
            Ok(outcome) => {
                let (sent, etag, digests) = match outcome {
                    UploadOutcome::Uploaded { etag, sent } => (true, Some(etag), sent),
                    UploadOutcome::AlreadyPresent => (false, None, SentDigests::Unknown),
                };
                let r = self
                    .store
                    .uploaded(w.id, w.key.clone(), etag, sent_row(&digests))
                    .await;
                self.applied(r, "mark uploaded", w).then_some(sent)
            }
            Err(e @ UploadError::Conflict { .. }) if !w.key_needs_hash() => {
                match self.holds_our_bytes(w, sha).await {
                    Ok(true) => {
                        // Another agent put these very bytes there a moment before us.
                        let none = sent_row(&SentDigests::Unknown);
                        let r = self.store.uploaded(w.id, w.key.clone(), None, none).await;
                        self.applied(r, "mark uploaded", w).then_some(false)
                    }
                    Ok(false) => {
                        self.plain_key_taken(w, e).await;
                        None
                    }
                    // The object there could not be read: the key stays as it is and the
                    // upload is tried again later (a second copy under the hashed key
                    // would be the same bytes twice).
                    Err(read) => {
                        self.upload_not_done(w, read).await;
                        None
                    }
                }
            }
            Err(e) => {
                self.upload_not_done(w, e).await;
                None
            }
        }
    }

    /// An upload did not get done: the destination's failure, not the clip's (or the
    /// uplink's radio left for a hotspot under it), leaves it `uploading` (with its
    /// multipart journal) and counts no attempt; anything else is recorded as a failure.
    async fn upload_not_done(&self, w: &Work, e: UploadError) {
        if !self.destination_down(&e).await {
            self.upload_failed(w, e).await;
        }
    }

    /// Whether the object at the key of `w` is verified as this clip's bytes (SHA-256
    /// `sha`): two agents raced to the same clip and the other won. `Err` when it could not
    /// be read for a transient reason (after retries): nobody knows yet.
    async fn holds_our_bytes(&self, w: &Work, sha: &str) -> Result<bool, UploadError> {
        let unknown = SentDigests::Unknown;
        let v = self
            .retrying(w, || async {
                self.dest.verify_sent(&w.key, w.size, sha, &unknown).await
            })
            .await;
        match v {
            Ok(v) => Ok(v.is_verified()),
            Err(e) if e.is_transient() => Err(e),
            // Not readable for good (refused, say): another object, as before.
            Err(_) => Ok(false),
        }
    }

    /// Another object holds the plain key of `w` (another agent, or a state database that
    /// never knew the earlier generation there): the clip is a later one and goes to its
    /// hashed key instead (its multipart upload to the plain key is aborted), and uploads
    /// again at once, no attempt counted. The object there is never touched.
    async fn plain_key_taken(&self, w: &Work, e: UploadError) {
        if let Some(id) = w.upload_id.as_deref() {
            let _ = self.dest.abort_multipart(&w.key, id).await;
        }
        let r = self.store.use_hashed_key(w.id).await;
        if self.applied(r, "use the hashed key", w) {
            info!(imei = %w.imei, clip = %w.name, "{e}: uploading it under its hashed key");
            self.upload_wake.notify_one();
        } else {
            self.upload_failed(w, e).await;
        }
    }

    /// Records a failed upload (a permanent failure also abandons its multipart upload).
    async fn upload_failed(&self, w: &Work, e: UploadError) {
        let transient = e.is_transient();
        if !transient && let Some(id) = w.upload_id.as_deref() {
            let _ = self.dest.abort_multipart(&w.key, id).await;
            let r = self.store.clear_multipart(w.id).await;
            self.record(r, "forget the multipart upload", w);
        }
        warn!(imei = %w.imei, clip = %w.name, "upload failed: {e}");
        self.emit(AgentEvent::Failed {
            imei: w.imei.clone(),
            clip: w.name.clone(),
            stage: Stage::Upload.as_str(),
            error: e.to_string(),
        });
        self.upload_gave_up(w.id);
        let r = self
            .store
            .failed(w.id, Stage::Upload, e.to_string(), self.retry_secs(w))
            .await;
        self.applied(r, "mark failed", w);
    }

    /// Verifies the object of `w`: only a verified clip may ever be deleted from the
    /// camera. Records the verdict; frees the spool copy once verified.
    async fn verify(
        &self,
        w: &Work,
        file: &Path,
        sha: &str,
        device_name: &str,
        sent: bool,
        started: Instant,
    ) {
        let digests = sent_digests(&self.store, w.id).await;
        let verdict = self
            .retrying(w, || async {
                self.dest.verify_sent(&w.key, w.size, sha, &digests).await
            })
            .await;
        match verdict {
            Ok(v) if v.is_verified() => {
                let weak = v.weakness().map(str::to_owned);
                match self.record(self.store.verified(w.id, weak).await, "mark verified", w) {
                    Some(Verified::StillOnCamera) => {}
                    Some(Verified::LeftCamera) => {
                        debug!(clip = %w.name, "verified; it already left the camera: deleted");
                    }
                    Some(Verified::NotApplied) | None => return,
                }
                if !self.cfg.retention.keep_local {
                    let _ = tokio::fs::remove_file(file).await;
                }
                self.offloaded(w, sha, device_name, sent, started);
            }
            Ok(other) => {
                let why = match other {
                    Verification::Mismatch(m) => format!("object does not match: {m}"),
                    _ => "object missing after upload".to_string(),
                };
                warn!(imei = %w.imei, clip = %w.name, "verification failed: {why}");
                self.upload_gave_up(w.id);
                // Upload again later; the spool copy is kept until a verification passes.
                let r = self
                    .store
                    .failed(w.id, Stage::Upload, why, self.retry_secs(w))
                    .await;
                self.applied(r, "mark failed", w);
            }
            Err(e) if self.destination_down(&e).await => {} // stays `uploaded`, no attempt
            Err(e) => {
                // Stays `uploaded`: verification is retried by the uploader.
                warn!(clip = %w.name, "verification failed: {e}");
                self.upload_gave_up(w.id);
                let r = self.store.verify_postponed(w.id, e.to_string()).await;
                self.applied(r, "postpone verification", w);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Logs and reports a clip offloaded (uploaded or found, and verified).
    fn offloaded(&self, w: &Work, sha: &str, device_name: &str, sent: bool, started: Instant) {
        let secs = started.elapsed().as_secs_f64().max(0.001);
        info!(
            imei = %w.imei, clip = %w.name, key = %w.key, size = w.size,
            event = qucam::event_name(w.parsed.event_code()),
            "{} and verified in {secs:.1}s ({:.1} MB/s)",
            if sent { "uploaded" } else { "already in the bucket" },
            if sent { w.size as f64 / secs / 1e6 } else { 0.0 }
        );
        self.emit(AgentEvent::Offloaded {
            imei: w.imei.clone(),
            device_name: device_name.to_string(),
            clip: w.name.clone(),
            key: w.key.clone(),
            event_code: w.parsed.event_code().to_string(),
            size: w.size,
            sha256: sha.to_string(),
            sent: if sent { w.size } else { 0 },
            secs,
        });
    }
}
