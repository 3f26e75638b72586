//! Large clips overlap: a clip that goes multipart to S3 starts uploading its parts while it
//! downloads ([`Early`]), instead of after. The download stage starts the upload next to
//! the fetch, reports the bytes on disk as they land, and when the download ends either
//! hands over its SHA-256 (the upload completes only if it is the one read from the parts:
//! the clip goes `downloading → uploaded` in one transition) or says it stopped (the
//! upload stops too, keeping its journal and parts for the resume; the clip fails once, at
//! its download). While it overlaps, the clip stays `downloading` with a multipart journal;
//! after its download the download stage moves on while the upload's tail finishes in the
//! background, then the file is renamed into place. At most `upload_concurrency` uploads
//! (the uploader's and these) start this way; a pass and a run wait for them.
//!
//! Whenever the `.part` file is discarded or truncated, the upload begun from it is
//! aborted and its journal cleared ([`Agent::forget_upload`]), so no part of old bytes can
//! be completed (and the parts are checked against the bytes on disk anyway).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::Agent;
use super::journal::StoreJournal;
use super::work::Work;
use crate::download::Fetched;
use crate::store::Clip;
use crate::upload::{Destination, GrowingWriter, UploadOutcome, growing};

/// Whether clip `w` may start uploading before its download finished: it goes multipart to
/// an S3 destination, and its key is known before its bytes are (a clip whose key carries
/// its hash, a later generation or the same name at another path, is hashed first). The one
/// place this is decided.
pub(crate) fn may_overlap(w: &Work, dest: &Destination) -> bool {
    !w.key_needs_hash() && dest.uploads_early(w.size)
}

/// The clips uploading while they download (id → IMEI): a pass and a run wait for them as
/// for the uploader's clips.
#[derive(Debug, Default, Clone)]
pub(super) struct Overlapping(Arc<Mutex<HashMap<i64, String>>>);

impl Overlapping {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many clips upload while they download (they count against
    /// `upload_concurrency`, as the uploader's own).
    pub(super) fn count(&self) -> usize {
        self.lock().len()
    }

    /// Whether a clip (of `imei`, or of any camera) is uploading while it downloads.
    pub(super) fn any(&self, imei: Option<&str>) -> bool {
        self.lock()
            .values()
            .any(|i| imei.is_none_or(|want| want == i))
    }
}

/// One clip's entry in [`Overlapping`], removed (and the waiters woken) when dropped.
struct Registered {
    set: Overlapping,
    id: i64,
    done: Arc<Notify>,
    /// The uploader's wake-up: a slot of `upload_concurrency` is free again.
    wake: Arc<Notify>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.set.lock().remove(&self.id);
        self.done.notify_waiters();
        self.wake.notify_one();
    }
}

/// An upload running while its clip downloads.
pub(super) struct Early {
    pub(super) writer: GrowingWriter,
    task: JoinHandle<Option<UploadOutcome>>,
    _registered: Registered,
}

impl Early {
    /// The download finished with SHA-256 `sha256_hex`: waits for the upload. `Some` when
    /// the object was completed (from the bytes downloaded, checked); whether the partial
    /// file was truncated meanwhile (a restart from zero); the registration, which keeps
    /// the clip counted as overlapping until it is dropped (after the clip is recorded).
    async fn finish(self, sha256_hex: &str) -> (Option<UploadOutcome>, bool, Registered) {
        let Early {
            writer,
            task,
            _registered: registered,
        } = self;
        writer.done(sha256_hex);
        let sent = task.await.ok().flatten();
        (sent, writer.discarded(), registered)
    }

    /// The download stopped: waits for the parts in flight. Whether the partial file was
    /// truncated meanwhile (the upload begun from it must then be forgotten).
    pub(super) async fn stop(self) -> bool {
        self.writer.stopped();
        let _ = self.task.await;
        self.writer.discarded()
    }
}

impl Agent {
    /// Starts uploading `w` from its partial file `part` while it downloads, when it may
    /// overlap and uploads may run now.
    pub(super) async fn start_early(self: &Arc<Self>, w: &Work, part: &Path) -> Option<Early> {
        let busy = self.in_flight.lock().map_or(0, |s| s.len()) + self.overlapping.count();
        if !may_overlap(w, &self.dest)
            || busy >= self.cfg.sync.upload_concurrency
            || !self.schedule.uploads_may_run()
            || self.destination_paused()
            || self.destination_given_up()
            || self.soft_stop.is_cancelled()
        {
            return None;
        }
        {
            let mut set = self.overlapping.lock();
            if set.contains_key(&w.id) {
                // Its earlier tail is still running (passes wait for it; never two at once).
                return None;
            }
            set.insert(w.id, w.imei.clone());
        }
        let registered = Registered {
            set: self.overlapping.clone(),
            id: w.id,
            done: self.upload_done.clone(),
            wake: self.upload_wake.clone(),
        };
        let (writer, growing) = growing();
        let device_name = self.device_name(&w.imei).await;
        // The SHA-256 is not known yet: the object is marked as overlapped instead.
        let meta = self.object_meta(w, &device_name, "");
        let journal = StoreJournal {
            store: self.store.clone(),
            id: w.id,
        };
        let (dest, file, key, size) = (self.dest.clone(), part.to_owned(), w.key.clone(), w.size);
        let name = w.name.clone();
        let task = tokio::spawn(async move {
            let _busy = super::heartbeat::busy();
            let r = dest
                .upload_growing(&file, &key, size, &meta, &journal, growing)
                .await;
            match r {
                Ok(Some(outcome)) => Some(outcome),
                Ok(None) => {
                    debug!(clip = %name, "an object is already under the key: uploaded after the download");
                    None
                }
                Err(e) => {
                    info!(clip = %name, "upload during the download stopped: {e}; it goes on after the download");
                    None
                }
            }
        });
        debug!(clip = %w.name, "uploading while downloading");
        Some(Early {
            writer,
            task,
            _registered: registered,
        })
    }

    /// The download of `w` into `part` finished (`f`): the upload that ran with it finishes
    /// in the background (the download stage moves on to the next clip), then the file is
    /// put in place and the clip recorded, uploaded when the upload completed.
    pub(super) fn finish_early(
        self: &Arc<Self>,
        early: Early,
        w: Work,
        f: Fetched,
        started: Instant,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            // The upload reads the `.part` file: it ends before the rename.
            let (sent, discarded, registered) = early.finish(&f.sha256_hex).await;
            if discarded {
                // The upload read bytes that were truncated away: never to be completed.
                me.forget_upload(&w).await;
            }
            me.put_in_place(&w, f, started, sent).await;
            // Only now may a pass or run that waits for uploads stop waiting for this clip.
            drop(registered);
        });
    }

    /// Waits until no clip (of `imei`, or of any camera) uploads while it downloads, or
    /// shutdown.
    pub(super) async fn wait_overlaps(&self, imei: Option<&str>) {
        while self.overlapping.any(imei) && !self.shutdown.is_cancelled() {
            tokio::select! {
                _ = self.upload_done.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
    }

    /// Aborts and forgets the multipart upload journaled for `c`, if any: its parts came
    /// from a partial file that was discarded or truncated.
    pub(super) async fn forget_upload(&self, c: &Clip) {
        let Some(Some((upload_id, _, _))) = self.record(
            self.store.multipart(c.id).await,
            "read the multipart upload",
            c,
        ) else {
            return;
        };
        match Work::parse(c.clone(), self.cfg.prefix()) {
            Ok(w) => {
                if let Err(e) = self.dest.abort_multipart(&w.key, &upload_id).await {
                    warn!(clip = %c.name, "could not abort the multipart upload of a discarded partial file: {e}");
                }
            }
            Err(e) => warn!(clip = %c.name, "cannot abort its multipart upload: {e}"),
        }
        let r = self.store.clear_multipart(c.id).await;
        self.record(r, "forget the multipart upload", c);
        info!(clip = %c.name, "partial file discarded: its multipart upload is aborted");
    }
}
