//! The uploader: the one part that talks to the destination. It owns what uploads need:
//! the clips in flight, the uploads that overlap their downloads (`overlap`), the
//! destination's outage state (`outage`), the multipart journal and the digests sent
//! (`journal`), and in a `--once` run the clips that failed in it.
//!
//! **SQLite is the queue between download and upload.** A camera worker that finished a
//! download records the clip `downloaded` in the store and calls [`Uploader::ready`]; the
//! uploader's loop ([`Uploader::run`]) takes the next clips from the store
//! (`Store::next_uploads`), up to `upload_concurrency` at a time while the radio is home and
//! the destination is not paused, and works each one (`clip`: upload or resume, verify,
//! record, free the spool). A kill -9 loses nothing: the queue is the store.
//!
//! Camera workers reach it through a narrow interface: [`Uploader::ready`], the waits for a
//! camera's uploads ([`Uploader::wait_uploads`], [`Uploader::wait_overlaps`]), an upload
//! next to a download ([`Uploader::start_early`]), forgetting an upload whose bytes were
//! discarded ([`Uploader::forget_upload`]), and the bucket checks that deletes and lost
//! clips need ([`Uploader::confirm_in_bucket`], [`Uploader::in_bucket`]). The rotation
//! waits for it to settle before the radio leaves ([`Uploader::settle`]).

mod clip;
pub(crate) mod journal;
mod outage;
pub(crate) mod overlap;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, anyhow};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::events::Events;
use super::radio::RadioView;
use super::spool::Spool;
use super::work::{Work, record};
use super::{Mode, Stops};
use crate::config::Config;
use crate::store::{Clip, Store};
use crate::upload::Destination;
use journal::StoreJournal;
use overlap::{Early, Overlapping, may_overlap};

pub use outage::DESTINATION_PAUSED_KEY;
pub(crate) use outage::Outage;

/// Uploads downloaded clips, verifies them, and answers for the destination.
pub(crate) struct Uploader {
    store: Store,
    dest: Arc<Destination>,
    cfg: Arc<Config>,
    spool: Spool,
    events: Events,
    stops: Stops,
    /// Uploads start only while the radio is home.
    radio: RadioView,
    mode: Mode,
    /// Woken when a clip becomes ready for upload (or a slot frees up).
    wake: Arc<Notify>,
    /// Woken when an upload finishes (spool space freed, clips verified).
    done: Arc<Notify>,
    /// Clips the uploader is working on.
    in_flight: Mutex<HashSet<i64>>,
    /// Clips uploading while they download (id → IMEI).
    overlapping: Overlapping,
    /// In a `--once` run: clips whose upload failed in this run (not retried until the
    /// next run, so the run ends). Always empty in a daemon.
    failed_this_run: Mutex<HashSet<i64>>,
    outage: Outage,
}

/// The parts the uploader works with.
pub(crate) struct UploaderParts {
    pub(crate) store: Store,
    pub(crate) dest: Arc<Destination>,
    pub(crate) cfg: Arc<Config>,
    pub(crate) spool: Spool,
    pub(crate) events: Events,
    pub(crate) stops: Stops,
    pub(crate) radio: RadioView,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Uploader {
    pub(crate) fn new(p: UploaderParts, mode: Mode) -> Uploader {
        let outage = Outage::new(
            p.dest.clone(),
            p.store.clone(),
            p.radio.clone(),
            mode,
            p.cfg.sync.destination_wait,
        );
        Uploader {
            store: p.store,
            dest: p.dest,
            cfg: p.cfg,
            spool: p.spool,
            events: p.events,
            stops: p.stops,
            radio: p.radio,
            mode,
            wake: Arc::new(Notify::new()),
            done: Arc::new(Notify::new()),
            in_flight: Mutex::new(HashSet::new()),
            overlapping: Overlapping::default(),
            failed_this_run: Mutex::new(HashSet::new()),
            outage,
        }
    }

    /// A clip is ready for upload (or the radio is back home): the loop looks again.
    pub(crate) fn ready(&self) {
        self.wake.notify_one();
    }

    /// Resolves when an upload finishes (spool space may be free, clips verified).
    pub(crate) async fn upload_finished(&self) {
        self.done.notified().await;
    }

    /// Whether the bucket can be reached now (the radio that carries the uplink is home).
    pub(crate) fn bucket_reachable(&self) -> bool {
        self.radio.now().uploads_may_run()
    }

    /// Whether uploads are paused because the destination is down.
    pub(crate) fn destination_paused(&self) -> bool {
        self.outage.paused()
    }

    /// Why this `--once` run gave up on the destination, if it did.
    pub(crate) fn gave_up_reason(&self) -> Option<String> {
        self.outage.gave_up_reason()
    }

    /// Whether uploads may start now: the radio is home, the destination is not paused
    /// (nor given up on), and no stop was asked for.
    fn open(&self) -> bool {
        self.radio.now().uploads_may_run()
            && !self.outage.paused()
            && !self.outage.given_up()
            && !self.stops.soft.is_cancelled()
    }

    /// Uploads clips as they become ready until `stop`.
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        let conc = self.cfg.sync.upload_concurrency;
        let mut running = FuturesUnordered::new();
        if !self.outage.paused() {
            self.outage.clear_notice().await;
        }
        loop {
            if stop.is_cancelled() || self.stops.stopping() {
                break;
            }
            // While the destination is paused nothing new starts; it is probed instead (not
            // while the radio is on a camera's hotspot: the destination is away by design).
            if !self.radio.now().destination_away() && self.outage.probe_if_due().await {
                self.wake.notify_one();
            }
            let open = !self.outage.paused() && !self.outage.given_up();
            // Uploads running while their clip downloads take slots too.
            let slots = conc.saturating_sub(self.overlapping.count());
            if open && running.len() < slots && self.radio.now().uploads_may_run() {
                let next = self
                    .store
                    .next_uploads(self.not_now(), slots - running.len())
                    .await
                    .unwrap_or_default();
                if !next.is_empty() {
                    for c in next {
                        lock(&self.in_flight).insert(c.id);
                        let me = self.clone();
                        running.push(async move {
                            let _busy = super::heartbeat::busy();
                            let id = c.id;
                            clip::upload_one(&me, c).await;
                            id
                        });
                    }
                    continue;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.stops.shutdown.cancelled() => break,
                _ = self.stops.soft.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                Some(id) = running.next(), if !running.is_empty() => {
                    lock(&self.in_flight).remove(&id);
                    self.done.notify_waiters();
                }
            }
        }
        // Let in-flight uploads record their progress for a moment, then drop them:
        // finished parts are in the store and the upload resumes next time.
        let drain = async {
            while let Some(id) = running.next().await {
                lock(&self.in_flight).remove(&id);
            }
        };
        tokio::pin!(drain);
        // Without a shutdown (end of a pass, soft stop) uploads in flight may finish; a
        // shutdown, even one arriving meanwhile, leaves them 2 s.
        let drained = !self.stops.shutdown.is_cancelled()
            && tokio::time::timeout(Duration::from_secs(3600), async {
                tokio::select! {
                    _ = &mut drain => true,
                    _ = self.stops.shutdown.cancelled() => false,
                }
            })
            .await
            .unwrap_or(false);
        if !drained {
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut drain).await;
        }
        self.done.notify_waiters();
    }

    /// Clips the uploader must not pick now: in flight, or failed in this `--once` run.
    fn not_now(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = lock(&self.in_flight).iter().copied().collect();
        ids.extend(self.failed_this_run());
        ids
    }

    /// In a `--once` run, the clips whose upload failed in it (none in a daemon).
    fn failed_this_run(&self) -> Vec<i64> {
        lock(&self.failed_this_run).iter().copied().collect()
    }

    /// A clip's upload failed: a `--once` run does not try it again (so the run ends).
    fn gave_up_on(&self, id: i64) {
        match self.mode {
            Mode::Once => {
                lock(&self.failed_this_run).insert(id);
            }
            Mode::Daemon => {}
        }
    }

    /// Whether the uploader has work it will still do in this run (in flight, or due; not
    /// while the destination is paused and the run does not wait for it).
    pub(crate) async fn uploads_pending(&self) -> Result<bool> {
        if self.outage.stop_waiting() {
            return Ok(false);
        }
        let flying = !lock(&self.in_flight).is_empty();
        Ok(flying
            || self.overlapping.any(None)
            || !self.store.next_uploads(self.not_now(), 1).await?.is_empty())
    }

    /// Waits until no clip (of `imei`, or of any camera) waits for the uploader, or the
    /// destination is paused and this run does not wait for it.
    pub(crate) async fn wait_uploads(&self, imei: Option<&str>) {
        loop {
            if self.stops.stopping()
                || self.outage.stop_waiting()
                || !self.radio.now().uploads_may_run()
            {
                // (No uploads while the radio is on a camera's hotspot: store and forward.)
                return;
            }
            let pending = match self
                .store
                .next_uploads(self.failed_this_run(), usize::MAX)
                .await
            {
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
            if lock(&self.in_flight).is_empty() && self.failed_this_run().is_empty() {
                // The clips wait for a retry or for the uploader's turn: by design.
                super::heartbeat::beat();
            }
            tokio::select! {
                _ = self.done.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = self.stops.shutdown.cancelled() => return,
                _ = self.stops.soft.cancelled() => return,
            }
        }
    }

    /// Waits until no clip (of `imei`, or of any camera) uploads while it downloads, or
    /// shutdown.
    pub(crate) async fn wait_overlaps(&self, imei: Option<&str>) {
        while self.overlapping.any(imei) && !self.stops.shutdown.is_cancelled() {
            tokio::select! {
                _ = self.done.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = self.stops.shutdown.cancelled() => {}
            }
        }
    }

    /// Waits until nothing is in flight (the radio is about to leave: uploads were held),
    /// or a stop.
    pub(crate) async fn settle(&self) {
        while !self.stops.stopping()
            && (!lock(&self.in_flight).is_empty() || self.overlapping.any(None))
        {
            tokio::select! {
                _ = self.done.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Starts uploading `w` from its partial file `part` while it downloads, when it may
    /// overlap and uploads may start now.
    pub(crate) async fn start_early(&self, w: &Work, part: &Path) -> Option<Early> {
        let busy = lock(&self.in_flight).len() + self.overlapping.count();
        if !may_overlap(w, &self.dest) || busy >= self.cfg.sync.upload_concurrency || !self.open() {
            return None;
        }
        let registered =
            self.overlapping
                .register(w.id, &w.imei, self.done.clone(), self.wake.clone())?;
        let device_name = clip::device_name(&self.store, &w.imei).await;
        // The SHA-256 is not known yet: the object is marked as overlapped instead.
        let meta = clip::object_meta(w, &device_name, "");
        let journal = StoreJournal {
            store: self.store.clone(),
            id: w.id,
        };
        Some(Early::spawn(
            self.dest.clone(),
            w,
            part.to_owned(),
            meta,
            journal,
            registered,
        ))
    }

    /// Aborts and forgets the multipart upload journaled for `c`, if any: its parts came
    /// from a partial file that was discarded or truncated.
    pub(crate) async fn forget_upload(&self, c: &Clip) {
        let Some(Some((upload_id, _, _))) = record(
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
        record(r, "forget the multipart upload", c);
        info!(clip = %c.name, "partial file discarded: its multipart upload is aborted");
    }

    /// For a clip that left the camera before this agent offloaded it: whether its object is
    /// in the bucket under its key with the listed size (another agent offloaded it).
    /// `None` when the bucket could not be asked.
    pub(crate) async fn in_bucket(&self, c: &Clip) -> Option<bool> {
        let Ok(w) = Work::parse(c.clone(), self.cfg.prefix()) else {
            return Some(false);
        };
        if w.key_needs_hash() && w.sha256.is_none() {
            return Some(false); // never downloaded: no key to look for
        }
        match self.dest.holds(&w.key, c.size).await {
            Ok(found) => Some(found),
            Err(e) => {
                debug!(imei = %c.imei, clip = %c.name, error = %e, "bucket check for a lost clip failed; trying again next pass");
                None
            }
        }
    }

    /// The clips of `clips` (verified ones of camera `imei`) whose objects the bucket still
    /// confirms, checked now, until `deadline` if any; a clip it no longer confirms is
    /// offloaded again. Also whether every clip was checked (not when the deadline or an
    /// outage cut it short: the rest wait for a later pass or visit).
    pub(crate) async fn confirm_in_bucket(
        &self,
        imei: &str,
        clips: Vec<Clip>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(Vec<Clip>, bool)> {
        let mut ok = Vec::new();
        for c in clips {
            let (Some(key), Some(sha)) = (c.object_key.clone(), c.sha256.clone()) else {
                continue;
            };
            let sent = journal::sent_digests(&self.store, c.id).await;
            let verify = self.dest.verify_sent(&key, c.size, &sha, &sent);
            let verified = match deadline {
                Some(d) => match tokio::time::timeout_at(d, verify).await {
                    Ok(v) => v,
                    Err(_) => return Ok((ok, false)),
                },
                None => verify.await,
            };
            match verified {
                Ok(v) if v.is_verified() => ok.push(c),
                Ok(v) => {
                    warn!(clip = %c.name, "not deleting from the camera: the bucket no longer confirms it ({v:?}); offloading it again");
                    self.store.requeue_missing_object(c.id).await?;
                }
                Err(e) if self.outage.destination_down(&e).await => {
                    // The destination's outage, not the clips': their deletes wait for the
                    // next pass (uploads are paused and probed as for any outage).
                    info!(imei = %imei, "deletes from the camera wait until the bucket can confirm the objects again: {e}");
                    return Ok((ok, false));
                }
                Err(e) => return Err(anyhow!("cannot re-check {key} before deleting: {e}")),
            }
        }
        Ok((ok, true))
    }
}
