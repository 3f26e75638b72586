//! Large clips overlap: a clip that goes multipart to S3 starts uploading its parts while it
//! downloads ([`Early`]), instead of after. The download stage starts the upload next to
//! the fetch, reports the bytes on disk as they land, and when the download ends either
//! hands over its SHA-256 (the upload completes only if it is the one read from the parts:
//! the clip goes `downloading → uploaded` in one transition) or says it stopped (the
//! upload stops too, keeping its journal and parts for the resume; the clip fails once, at
//! its download). While it overlaps, the clip stays `downloading` with a multipart journal.
//!
//! Whenever the `.part` file is discarded or truncated, the upload begun from it is
//! aborted and its journal cleared ([`Agent::forget_upload`]), so no part of old bytes can
//! be completed (and the parts are checked against the bytes on disk anyway).

use std::path::Path;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::Agent;
use super::upload::StoreJournal;
use super::work::Work;
use crate::store::Clip;
use crate::upload::{Destination, GrowingWriter, UploadOutcome, growing};

/// Whether clip `w` may start uploading before its download finished: it goes multipart to
/// an S3 destination. The one place this is decided (a clip whose key needs its hash must
/// not overlap).
pub(crate) fn may_overlap(w: &Work, dest: &Destination) -> bool {
    dest.uploads_early(w.size)
}

/// An upload running while its clip downloads.
pub(super) struct Early {
    pub(super) writer: GrowingWriter,
    task: JoinHandle<Option<UploadOutcome>>,
}

impl Early {
    /// The download finished with SHA-256 `sha256_hex`: waits for the upload. `Some` when
    /// the object was completed (from the bytes downloaded, checked).
    pub(super) async fn finish(self, sha256_hex: &str) -> Option<UploadOutcome> {
        self.writer.done(sha256_hex);
        self.task.await.ok().flatten()
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
        if !may_overlap(w, &self.dest)
            || !self.schedule.uploads_may_run()
            || self.destination_paused()
            || self.destination_given_up()
            || self.soft_stop.is_cancelled()
        {
            return None;
        }
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
        Some(Early { writer, task })
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
