//! Large clips overlap: a clip that goes multipart to S3 starts uploading its parts while it
//! downloads ([`Early`]), instead of after. The download stage asks the uploader to start
//! the upload next to the fetch (`Uploader::start_early`), reports the bytes on disk as they
//! land, and when the download ends either hands over its SHA-256 ([`Early::finish`]: the
//! upload completes only if it is the one read from the parts, and the clip goes
//! `downloading → uploaded` in one transition) or says it stopped ([`Early::stop`]: the
//! upload stops too, keeping its journal and parts for the resume; the clip fails once, at
//! its download). While it overlaps, the clip stays `downloading` with a multipart journal;
//! after its download the download stage moves on while the upload's tail finishes in the
//! background, then the file is renamed into place. At most `upload_concurrency` uploads
//! (the uploader's and these) start this way; a pass and a run wait for them
//! ([`Overlapping`]).
//!
//! Whenever the `.part` file is discarded or truncated, the upload begun from it is
//! aborted and its journal cleared (`Uploader::forget_upload`), so no part of old bytes can
//! be completed (and the parts are checked against the bytes on disk anyway).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use super::journal::StoreJournal;
use crate::agent::work::Work;
use crate::upload::{Destination, GrowingWriter, ObjectMeta, UploadOutcome, growing};

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
pub(crate) struct Overlapping(Arc<Mutex<HashMap<i64, String>>>);

impl Overlapping {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many clips upload while they download (they count against
    /// `upload_concurrency`, as the uploader's own).
    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }

    /// Whether a clip (of `imei`, or of any camera) is uploading while it downloads.
    pub(crate) fn any(&self, imei: Option<&str>) -> bool {
        self.lock()
            .values()
            .any(|i| imei.is_none_or(|want| want == i))
    }

    /// Registers clip `id` of `imei`; `None` when it is registered already (its earlier
    /// tail still runs: never two at once). Dropping the registration removes it and wakes
    /// `done` (a pass waiting for it) and `wake` (the uploader: a slot is free again).
    pub(crate) fn register(
        &self,
        id: i64,
        imei: &str,
        done: Arc<Notify>,
        wake: Arc<Notify>,
    ) -> Option<Registered> {
        let mut set = self.lock();
        if set.contains_key(&id) {
            return None;
        }
        set.insert(id, imei.to_string());
        Some(Registered {
            set: self.clone(),
            id,
            done,
            wake,
        })
    }
}

/// One clip's entry in [`Overlapping`], removed (and the waiters woken) when dropped.
pub(crate) struct Registered {
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
pub(crate) struct Early {
    pub(crate) writer: GrowingWriter,
    task: JoinHandle<Option<UploadOutcome>>,
    _registered: Registered,
}

impl Early {
    /// Starts uploading clip `w` from its partial file `part` (to grow as it downloads)
    /// under the registration `registered`.
    pub(crate) fn spawn(
        dest: Arc<Destination>,
        w: &Work,
        part: PathBuf,
        meta: ObjectMeta,
        journal: StoreJournal,
        registered: Registered,
    ) -> Early {
        let (writer, growing) = growing();
        let (key, size, name) = (w.key.clone(), w.size, w.name.clone());
        let task = tokio::spawn(async move {
            let _busy = crate::agent::heartbeat::busy();
            let r = dest
                .upload_growing(&part, &key, size, &meta, &journal, growing)
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
        Early {
            writer,
            task,
            _registered: registered,
        }
    }

    /// The download finished with SHA-256 `sha256_hex`: waits for the upload. `Some` when
    /// the object was completed (from the bytes downloaded, checked); whether the partial
    /// file was truncated meanwhile (a restart from zero); the registration, which keeps
    /// the clip counted as overlapping until it is dropped (after the clip is recorded).
    pub(crate) async fn finish(
        self,
        sha256_hex: &str,
    ) -> (Option<UploadOutcome>, bool, Registered) {
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
    pub(crate) async fn stop(self) -> bool {
        self.writer.stopped();
        let _ = self.task.await;
        self.writer.discarded()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Clip;

    const NAME: &str = "20210427_115134_04_2.mp4";
    const IMEI: &str = "867867432522518";

    fn clip() -> Clip {
        crate::agent::work::test_clip(NAME, &format!("/sdcard/DCIM/{NAME}"), IMEI)
    }

    /// An S3 destination whose multipart threshold is 1 MiB; no request is ever sent.
    fn s3_destination() -> crate::upload::Destination {
        use crate::upload::{MultipartThreshold, S3Destination, S3Settings};
        use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("k", "s", None, None, "unit test"))
            .endpoint_url("http://127.0.0.1:9")
            .build();
        let settings = S3Settings {
            multipart_threshold: MultipartThreshold::Fixed(1024 * 1024),
            ..S3Settings::default()
        };
        crate::upload::Destination::S3(S3Destination::from_client(
            aws_sdk_s3::Client::from_conf(conf),
            &settings,
        ))
    }

    #[test]
    fn only_a_clip_whose_key_is_known_before_its_bytes_overlaps() {
        let dest = s3_destination();
        let mut c = clip();
        c.size = 64 * 1024 * 1024;
        let first = Work::parse(c.clone(), "dashcam").expect("a good clip");
        assert!(
            may_overlap(&first, &dest),
            "a multipart clip with a known key"
        );
        c.hashed_key = true;
        let later = Work::parse(c.clone(), "dashcam").expect("a good clip");
        assert!(!may_overlap(&later, &dest), "its key waits for its hash");
        c.hashed_key = false;
        c.size = 1000;
        let small = Work::parse(c, "dashcam").expect("a good clip");
        assert!(!may_overlap(&small, &dest), "a single PUT");
    }
}
