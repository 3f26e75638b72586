//! One clip's upload, as the uploader works it: take it from the store, upload it (or
//! resume its multipart upload, or find its object already there), verify the object in
//! the destination, record the outcome and free the spool copy. A failure that is the
//! destination's pauses uploads (`outage`) instead of charging the clip an attempt. The
//! multipart journal each upload keeps in the store, and the digests it sent, live in
//! [`super::journal`].

use std::path::Path;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use tracing::{debug, info, warn};

use super::Uploader;
use super::journal::{StoreJournal, sent_digests, sent_row};
use crate::agent::AgentEvent;
use crate::agent::work::{Work, applied, record, retry_secs, take};
use crate::store::{Clip, ClipState, Origin, Stage, Store, Verified};
use crate::upload::{
    ORIGIN_SPOOL_QUARANTINE, ObjectMeta, SentDigests, UploadError, UploadOutcome, Verification,
};

fn upload_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(300))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(4)
        .with_jitter()
}

/// Runs a request of clip `w` with the on-the-spot retries ([`UploadError::retry_now`]).
/// A request that timed out is not retried on the spot, but when the destination then
/// answers its probe the stall was this request's: it is tried once more before the
/// failure is left to the caller (to pause uploads, or charge the clip an attempt).
async fn retrying<T, F, Fut>(up: &Uploader, w: &Work, op: F) -> Result<T, UploadError>
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
                && !up.outage.destination_down(&e).await =>
        {
            debug!(clip = %w.name, "{e}; the destination answers: trying once more");
            once().await
        }
        r => r,
    }
}

/// The object's metadata for clip `w` (a clip from the spool quarantine says so: see
/// [`ObjectMeta`]).
pub(crate) fn object_meta(w: &Work, device_name: &str, sha: &str) -> ObjectMeta {
    let origin = match w.origin {
        Origin::Camera => "",
        Origin::Spool => ORIGIN_SPOOL_QUARANTINE,
    };
    ObjectMeta {
        imei: w.imei.clone(),
        device_name: device_name.to_string(),
        camera_path: w.path.clone(),
        event_code: w.parsed.event_code().to_string(),
        event_name: qucam::event_name(w.parsed.event_code()).to_string(),
        camera: w.parsed.camera_label().to_string(),
        recorded_at: w.parsed.recorded().format("%Y-%m-%dT%H:%M:%S").to_string(),
        sha256_hex: sha.to_string(),
        origin: origin.to_string(),
    }
}

/// The camera's device name as last seen (for the object's metadata), or "".
pub(crate) async fn device_name(store: &Store, imei: &str) -> String {
    store
        .cameras()
        .await
        .ok()
        .and_then(|cs| cs.into_iter().find(|r| r.imei == imei))
        .and_then(|r| r.device_name)
        .unwrap_or_default()
}

/// Uploads (or resumes), then verifies one clip; records the outcome.
pub(super) async fn upload_one(up: &Uploader, c: Clip) {
    let started = Instant::now();
    let Some(w) = take(&up.store, c, up.cfg.prefix()).await else {
        return;
    };
    let Some(sha) = w.sha256.clone() else {
        // Downloaded without a hash cannot happen; download again to be safe.
        let r = up.store.requeue_for_download(w.id).await;
        applied(r, "requeue for download", &w);
        return;
    };
    let file = up.spool.file_path(&w);
    let device_name = device_name(&up.store, &w.imei).await;
    // A clip already `uploaded` (verification postponed, or a kill) is only verified.
    let sent = if w.state == ClipState::Uploaded {
        false
    } else {
        let Some(sent) = send(up, &w, &file, &sha, &device_name).await else {
            return;
        };
        sent
    };
    verify(up, &w, &file, &sha, &device_name, sent, started).await;
}

/// Uploads the spool file of `w` (resuming a multipart upload) and records it as
/// uploaded. `Some(sent)`: uploaded (`sent` false when the object was already there);
/// `None`: not (requeued, failed, or the clip moved on), recorded.
async fn send(up: &Uploader, w: &Work, file: &Path, sha: &str, device_name: &str) -> Option<bool> {
    if tokio::fs::metadata(file).await.is_err() {
        match w.origin {
            Origin::Camera => warn!(clip = %w.name, "spool file missing: downloading it again"),
            Origin::Spool => {
                warn!(clip = %w.name, file = %file.display(), "quarantined file missing: lost")
            }
        }
        let r = up.store.requeue_for_download(w.id).await;
        applied(r, "requeue for download", w);
        return None;
    }
    let moved = up.store.start_upload(w.id).await;
    if !applied(moved, "start upload", w) {
        return None;
    }
    let meta = object_meta(w, device_name, sha);
    let journal = StoreJournal {
        store: up.store.clone(),
        id: w.id,
    };
    let result = retrying(up, w, || async {
        up.dest.upload(file, &w.key, w.size, &meta, &journal).await
    })
    .await;
    match result {
        Ok(outcome) => {
            let (sent, etag, digests) = match outcome {
                UploadOutcome::Uploaded { etag, sent } => (true, Some(etag), sent),
                UploadOutcome::AlreadyPresent => (false, None, SentDigests::Unknown),
            };
            let r = up
                .store
                .uploaded(w.id, w.key.clone(), etag, sent_row(&digests))
                .await;
            applied(r, "mark uploaded", w).then_some(sent)
        }
        Err(e @ UploadError::Conflict { .. }) if !w.key_needs_hash() => {
            match holds_our_bytes(up, w, sha).await {
                Ok(true) => {
                    // Another agent put these very bytes there a moment before us.
                    let none = sent_row(&SentDigests::Unknown);
                    let r = up.store.uploaded(w.id, w.key.clone(), None, none).await;
                    applied(r, "mark uploaded", w).then_some(false)
                }
                Ok(false) => {
                    plain_key_taken(up, w, e).await;
                    None
                }
                // The object there could not be read: the key stays as it is and the
                // upload is tried again later (a second copy under the hashed key
                // would be the same bytes twice).
                Err(read) => {
                    upload_not_done(up, w, read).await;
                    None
                }
            }
        }
        Err(e) => {
            upload_not_done(up, w, e).await;
            None
        }
    }
}

/// An upload did not get done: the destination's failure, not the clip's (or the
/// uplink's radio left for a hotspot under it), leaves it `uploading` (with its
/// multipart journal) and counts no attempt; anything else is recorded as a failure.
async fn upload_not_done(up: &Uploader, w: &Work, e: UploadError) {
    if !up.outage.destination_down(&e).await {
        upload_failed(up, w, e).await;
    }
}

/// Whether the object at the key of `w` is verified as this clip's bytes (SHA-256
/// `sha`): two agents raced to the same clip and the other won. `Err` when it could not
/// be read for a transient reason (after retries): nobody knows yet.
async fn holds_our_bytes(up: &Uploader, w: &Work, sha: &str) -> Result<bool, UploadError> {
    let unknown = SentDigests::Unknown;
    let v = retrying(up, w, || async {
        up.dest.verify_sent(&w.key, w.size, sha, &unknown).await
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
async fn plain_key_taken(up: &Uploader, w: &Work, e: UploadError) {
    if let Some(id) = w.upload_id.as_deref() {
        let _ = up.dest.abort_multipart(&w.key, id).await;
    }
    let r = up.store.use_hashed_key(w.id).await;
    if applied(r, "use the hashed key", w) {
        info!(imei = %w.imei, clip = %w.name, "{e}: uploading it under its hashed key");
        up.wake.notify_one();
    } else {
        upload_failed(up, w, e).await;
    }
}

/// Records a failed upload (a permanent failure also abandons its multipart upload).
async fn upload_failed(up: &Uploader, w: &Work, e: UploadError) {
    let transient = e.is_transient();
    if !transient && let Some(id) = w.upload_id.as_deref() {
        let _ = up.dest.abort_multipart(&w.key, id).await;
        let r = up.store.clear_multipart(w.id).await;
        record(r, "forget the multipart upload", w);
    }
    warn!(imei = %w.imei, clip = %w.name, "upload failed: {e}");
    up.events.emit(AgentEvent::Failed {
        imei: w.imei.clone(),
        clip: w.name.clone(),
        stage: Stage::Upload.as_str(),
        error: e.to_string(),
    });
    up.gave_up_on(w.id);
    let r = up
        .store
        .failed(
            w.id,
            Stage::Upload,
            e.to_string(),
            retry_secs(w.attempts, &up.cfg.sync),
        )
        .await;
    applied(r, "mark failed", w);
}

/// Verifies the object of `w`: only a verified clip may ever be deleted from the
/// camera. Records the verdict; frees the spool copy once verified.
async fn verify(
    up: &Uploader,
    w: &Work,
    file: &Path,
    sha: &str,
    device_name: &str,
    sent: bool,
    started: Instant,
) {
    let digests = sent_digests(&up.store, w.id).await;
    let verdict = retrying(up, w, || async {
        up.dest.verify_sent(&w.key, w.size, sha, &digests).await
    })
    .await;
    match verdict {
        Ok(v) if v.is_verified() => {
            let weak = v.weakness().map(str::to_owned);
            match record(up.store.verified(w.id, weak).await, "mark verified", w) {
                Some(Verified::StillOnCamera) => {}
                Some(Verified::LeftCamera) => {
                    debug!(clip = %w.name, "verified; it already left the camera: deleted");
                }
                Some(Verified::NotApplied) | None => return,
            }
            // A quarantined file goes once it is in the bucket, `keep_local` or not: the
            // quarantine is no spool to keep.
            if !up.cfg.retention.keep_local || w.origin == Origin::Spool {
                let _ = tokio::fs::remove_file(file).await;
            }
            offloaded(up, w, sha, device_name, sent, started);
        }
        Ok(other) => {
            let why = match other {
                Verification::Mismatch(m) => format!("object does not match: {m}"),
                _ => "object missing after upload".to_string(),
            };
            warn!(imei = %w.imei, clip = %w.name, "verification failed: {why}");
            up.gave_up_on(w.id);
            // Upload again later; the spool copy is kept until a verification passes.
            let r = up
                .store
                .failed(
                    w.id,
                    Stage::Upload,
                    why,
                    retry_secs(w.attempts, &up.cfg.sync),
                )
                .await;
            applied(r, "mark failed", w);
        }
        Err(e) if up.outage.destination_down(&e).await => {} // stays `uploaded`, no attempt
        Err(e) => {
            // Stays `uploaded`: verification is retried by the uploader.
            warn!(clip = %w.name, "verification failed: {e}");
            up.gave_up_on(w.id);
            let r = up.store.verify_postponed(w.id, e.to_string()).await;
            applied(r, "postpone verification", w);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Logs and reports a clip offloaded (uploaded or found, and verified).
fn offloaded(up: &Uploader, w: &Work, sha: &str, device_name: &str, sent: bool, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(0.001);
    info!(
        imei = %w.imei, clip = %w.name, key = %w.key, size = w.size,
        event = qucam::event_name(w.parsed.event_code()),
        "{} and verified in {secs:.1}s ({:.1} MB/s)",
        if sent { "uploaded" } else { "already in the bucket" },
        if sent { w.size as f64 / secs / 1e6 } else { 0.0 }
    );
    up.events.emit(AgentEvent::Offloaded {
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
