//! A camera worker: one camera's passes. It owns the camera's client and config, and gets
//! the rest (store, spool, uploader, events, stops) when it is built; a pass is given its
//! [`Turn`] (a pass on the schedule, or a hotspot visit with its delete gate and name).
//!
//! **The clip walk**, one pass:
//! 1. probe `get_device_info`: the IMEI is the camera's identity (`identity`); record it;
//! 2. `listing`: list the window since the newest clip known, or the whole listing (the
//!    first time, every `sync.full_listing_every`, after a swap or a clock change, or when a
//!    window missed a clip); reconcile each page into the store (each page of a full
//!    listing between two IMEI checks, a window's after the probe and, when it brings
//!    something to act on, before it is taken), settle the clips that left the camera (a
//!    full listing only); read the bytes of clips the listing cannot tell from those
//!    verified (`challenge`, a due challenge);
//! 3. sweep the spool of files no clip names (`spool`; a finished one goes to the
//!    quarantine, and is offloaded from there: `quarantine`);
//! 4. `download`: fetch queued clips (most severe first, then oldest) into `.part` files,
//!    put each in place, record it `downloaded` and tell the uploader ([`Uploader::ready`]);
//!    a large clip uploads while it downloads (`Uploader::start_early`);
//! 5. wait for the camera's uploads: the uploader uploads, verifies and frees the spool;
//! 6. `retention`: list again in full, check each verified object in the bucket again, read a few
//!    blocks of each clip on the camera (`challenge`), confirm the IMEI, delete from the
//!    camera what the policy and the turn's gate allow;
//! 7. report what remains.
//!
//! When the next pass starts is the schedule's decision (`schedule`), not the worker's.

mod challenge;
mod download;
mod identity;
mod listing;
mod retention;

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tracing::{debug, info, warn};

use qucam::CameraClient;

use super::events::Events;
use super::learn::Learner;
use super::quarantine;
use super::schedule::{Again, SWAP_WINDOW, Schedule};
use super::spool::Spool;
use super::uploader::Uploader;
use super::{AgentEvent, PassOutcome, Stops};
use crate::config::{CameraConfig, Config, DeletePolicy};
use crate::store::{CameraRow, ClipState, Store};
use download::{Downloads, PassStop};
use identity::Identity;
use listing::Listing;
use retention::Retention;

pub(crate) use identity::device_info;
pub(crate) use retention::DeleteGate;

/// Which turn a pass is.
#[derive(Debug)]
pub(crate) enum Turn {
    /// A camera met by URL, its pass due on the schedule: it may delete what the policy
    /// allows, each object checked in the bucket again right before.
    Polled,
    /// A visit to a camera hotspot (the rotation's): it may delete only what `gate` lets
    /// through, and the camera is called `name` (its `[[camera]]` name, else its SSID).
    Visit { gate: DeleteGate, name: String },
}

/// How a pass ended, and whether another camera took the address in the middle of it (its
/// pass is then due at once).
#[derive(Debug)]
pub(crate) struct PassEnd {
    pub(crate) outcome: PassOutcome,
    pub(crate) swapped: bool,
}

/// What a camera worker is built with.
pub(crate) struct WorkerParts {
    pub(crate) store: Store,
    pub(crate) cfg: Arc<Config>,
    pub(crate) spool: Spool,
    pub(crate) uploader: Arc<Uploader>,
    pub(crate) events: Events,
    pub(crate) stops: Stops,
    pub(crate) learner: Learner,
}

/// One camera's passes.
pub(crate) struct CameraWorker {
    camera: CameraConfig,
    client: CameraClient,
    store: Store,
    cfg: Arc<Config>,
    spool: Spool,
    uploader: Arc<Uploader>,
    events: Events,
    stops: Stops,
    learner: Learner,
    /// Whether the camera was reported as acknowledging deletes it does not perform.
    warned_not_deleting: AtomicBool,
    /// What the worker warned of about the camera's delete challenges.
    warned_challenge: challenge::ChallengeWarnings,
    /// The IMEI of the worker's last pass: another one at the address is listed in full.
    last_imei: Mutex<Option<String>>,
}

impl CameraWorker {
    pub(crate) fn new(camera: CameraConfig, client: CameraClient, p: WorkerParts) -> CameraWorker {
        CameraWorker {
            camera,
            client,
            store: p.store,
            cfg: p.cfg,
            spool: p.spool,
            uploader: p.uploader,
            events: p.events,
            stops: p.stops,
            learner: p.learner,
            warned_not_deleting: AtomicBool::new(false),
            warned_challenge: challenge::ChallengeWarnings::default(),
            last_imei: Mutex::new(None),
        }
    }

    /// The camera's config name.
    pub(crate) fn name(&self) -> &str {
        &self.camera.name
    }

    /// The URL the camera answers at.
    pub(crate) fn url(&self) -> &str {
        &self.camera.url
    }

    /// The camera's client (the rotation asks which camera answers behind a hotspot).
    pub(crate) fn client(&self) -> &CameraClient {
        &self.client
    }

    /// The camera's passes (camera `i` of the schedule), each when the schedule says it is
    /// due, until it says stop. Reports the camera appearing and going away.
    pub(crate) async fn run(&self, schedule: &Schedule, i: usize) {
        let name = self.camera.name.clone();
        let mut present: Option<String> = None;
        let mut turns = schedule.turns(i);
        while turns.next().await {
            let end = {
                let _busy = super::heartbeat::busy();
                self.pass(&Turn::Polled).await
            };
            if end.swapped
                && let Again::BackedOff(n) = schedule.again(i)
            {
                warn!(
                    camera = %name,
                    "the camera at this address changed {n} times within {}s: its next pass waits for the poll interval",
                    SWAP_WINDOW.as_secs()
                );
            }
            let outcome = end.outcome;
            self.events.emit(AgentEvent::PassFinished {
                camera: name.clone(),
                outcome: outcome.clone(),
            });
            let now_here = match &outcome {
                PassOutcome::Away => None,
                PassOutcome::Done { imei, .. } => Some(imei.clone()),
                PassOutcome::Failed { imei, .. } => imei.clone(),
            };
            if now_here != present {
                if let Some(old) = &present {
                    info!(camera = %name, imei = %old, "camera went away");
                    self.events.emit(AgentEvent::CameraGone {
                        camera: name.clone(),
                        imei: old.clone(),
                    });
                }
                if let Some(new) = &now_here {
                    info!(camera = %name, imei = %new, "camera appeared");
                    self.events.emit(AgentEvent::CameraAppeared {
                        camera: name.clone(),
                        imei: new.clone(),
                    });
                }
                present = now_here;
            }
            if let PassOutcome::Failed { error, .. } = &outcome {
                warn!(camera = %name, "pass failed: {error}");
            }
        }
    }

    /// One pass: probe, list, download, wait for uploads, retention.
    pub(crate) async fn pass(&self, turn: &Turn) -> PassEnd {
        let ended = |outcome| PassEnd {
            outcome,
            swapped: false,
        };
        let cam = &self.camera;
        let info = match self.client.device_info().await {
            Ok(info) => info,
            Err(e) if e.is_unreachable() => {
                debug!(camera = %cam.name, "camera not reachable: {e}");
                return ended(PassOutcome::Away);
            }
            Err(e) => {
                return ended(PassOutcome::Failed {
                    imei: None,
                    error: format!("device info: {e}"),
                });
            }
        };
        if let Err(e) = qucam::check_imei(&info.imei) {
            return ended(PassOutcome::Failed {
                imei: None,
                error: format!("device info: {e}"),
            });
        }
        let imei = info.imei.clone();
        let name = match turn {
            Turn::Polled => {
                // A camera met by its URL (WAN mode, a cable): its hotspot, with `wifi.learn`.
                self.learner.learn(&info, None).await;
                cam.name.clone()
            }
            Turn::Visit { name, .. } => name.clone(),
        };
        let known = self
            .store
            .cameras()
            .await
            .map(|cs| cs.iter().any(|c| c.imei == imei))
            .unwrap_or(false);
        debug!(
            camera = %cam.name,
            imei = %imei,
            device = info.device_name.as_deref().unwrap_or("?"),
            firmware = info.application_version.as_deref().unwrap_or("?"),
            "camera reachable{}",
            if known { "" } else { " (new)" }
        );
        let row = CameraRow {
            imei: imei.clone(),
            config_name: Some(name),
            url: Some(cam.url.clone()),
            device_name: info.device_name.clone(),
            firmware: info.application_version.clone(),
            storage: info.local_storage.clone(),
            ..Default::default()
        };
        if let Err(e) = self.store.camera_seen(row).await {
            return ended(PassOutcome::Failed {
                imei: Some(imei),
                error: format!("state database: {e:#}"),
            });
        }
        // Another camera answered at the address since the last pass (a vehicle swap): its
        // windows may have missed what happened meanwhile, so it is listed in full.
        let swapped_in = {
            let mut last = self.last_imei.lock().unwrap_or_else(|e| e.into_inner());
            let other = last.as_deref().is_some_and(|l| l != imei);
            *last = Some(imei.clone());
            other
        };
        match self.work(&imei, turn, swapped_in).await {
            Ok(remaining) => ended(PassOutcome::Done { imei, remaining }),
            Err(e) => {
                let swapped = is_swap(&e);
                if swapped {
                    // Whichever camera answers now gets its pass at once.
                    info!(camera = %cam.name, imei = %imei, "{e:#}: starting a pass for the camera that answers now");
                }
                PassEnd {
                    outcome: PassOutcome::Failed {
                        imei: Some(imei),
                        error: format!("{e:#}"),
                    },
                    swapped,
                }
            }
        }
    }

    /// The pass over the camera confirmed as `imei`: steps 2 to 7 of the clip walk.
    /// `list_in_full`: the listing is a full one (not a window).
    async fn work(&self, imei: &str, turn: &Turn, list_in_full: bool) -> Result<usize> {
        let listing = Listing {
            client: &self.client,
            imei,
            store: &self.store,
            sync: &self.cfg.sync,
            spool: &self.spool,
            uploader: &self.uploader,
            events: &self.events,
            stops: &self.stops,
            warned_not_deleting: &self.warned_not_deleting,
            challenge: self.cfg.retention.challenge_blocks > 0,
            new_rows: AtomicUsize::new(0),
            warned_cap: AtomicBool::new(false),
        };
        let mut listed_since = crate::store::now_ms();
        let listed_in_full = listing.reconcile(list_in_full).await?;
        let gate = match turn {
            Turn::Polled => &DeleteGate::Open,
            Turn::Visit { gate, .. } => gate,
        };
        let retention = Retention {
            client: &self.client,
            imei,
            store: &self.store,
            policy: &self.cfg.retention,
            uploader: &self.uploader,
            events: &self.events,
            warned: &self.warned_challenge,
        };
        // Clips the listing could not tell from those verified have their bytes read now:
        // one found changed is a new generation, downloaded in this very pass.
        retention.challenge_due(listed_since, gate).await?;
        // Files of listings the camera no longer shows are never resumed: removed.
        let keep_local = self.cfg.retention.keep_local;
        match self.spool.sweep(&self.store, imei, keep_local).await {
            Ok(0) => {}
            // Files no clip named went to the quarantine: offloaded from there.
            Ok(_) => {
                if quarantine::take_in(&self.spool, &self.store, imei).await > 0 {
                    self.uploader.ready();
                }
            }
            Err(e) => warn!(imei = %imei, "cannot sweep the spool: {e:#}"),
        }
        let downloads = Downloads {
            client: self.client.clone(),
            imei: imei.to_string(),
            store: self.store.clone(),
            cfg: self.cfg.clone(),
            spool: self.spool.clone(),
            uploader: self.uploader.clone(),
            events: self.events.clone(),
            stops: self.stops.clone(),
        };
        let dl = downloads.run().await;
        self.uploader.wait_uploads(Some(imei)).await;
        // Always, even when uploads are paused: until an overlapped clip's tail has put its
        // file in place and recorded it, its row still reads `downloading`, and the next
        // pass would take it up a second time (each tail ends by itself: every S3 request
        // has its timeouts).
        self.uploader.wait_overlaps(Some(imei)).await;
        dl?;
        if !self.stops.shutdown.is_cancelled() {
            // Deletes go by a full listing taken right before them (the camera may have
            // rewritten a path since the pass began, and a window lists only recent clips).
            if self.cfg.retention.delete_from_camera != DeletePolicy::Never
                && self.delete_due(imei).await?
            {
                listed_since = listing.for_retention(listed_in_full).await?;
            }
            retention.apply(listed_since, gate).await?;
        }
        remaining(&self.store, imei, self.cfg.retention.delete_from_camera).await
    }

    /// Whether a clip of `imei` may be deleted from the camera in this pass, as far as the
    /// store can tell before listing it again: verified or retained, still on the camera,
    /// old enough for `retention.min_age_on_camera`, its delete not waiting for a retry.
    async fn delete_due(&self, imei: &str) -> Result<bool> {
        let min_age = self.cfg.retention.min_age_on_camera.as_secs() as i64;
        let t = crate::store::now();
        Ok(self
            .store
            .deletable(imei, i64::MIN)
            .await?
            .iter()
            .any(|c| c.first_seen.saturating_add(min_age) <= t))
    }
}

/// Clips of `imei` that still need work under `policy` (not yet verified and settled):
/// a count in the store, never the camera's history read.
pub(crate) async fn remaining(store: &Store, imei: &str, policy: DeletePolicy) -> Result<usize> {
    let states = ClipState::ALL
        .into_iter()
        .filter(|s| needs_work(*s, policy))
        .collect();
    store.count_in(imei, states).await
}

/// Whether a clip in `state` still needs work under `policy`: not yet offloaded and
/// settled (a verified clip waits for its delete from the camera, unless the policy
/// never deletes).
pub(crate) fn needs_work(state: ClipState, policy: DeletePolicy) -> bool {
    state.is_still_to_do() || (state == ClipState::Verified && policy == DeletePolicy::AfterUpload)
}

/// Whether a pass ended because another camera answers at its address (see `identity`).
fn is_swap(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(c.downcast_ref::<Identity>(), Some(Identity::Swapped { .. }))
            || matches!(
                c.downcast_ref::<PassStop>(),
                Some(PassStop::Identity(Identity::Swapped { .. }))
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_is_told_apart_from_other_failures() {
        let swapped = || Identity::Swapped {
            expected: "1".into(),
            found: "2".into(),
        };
        assert!(is_swap(&anyhow::Error::from(swapped())));
        assert!(is_swap(&anyhow::Error::from(PassStop::Identity(swapped()))));
        assert!(is_swap(
            &anyhow::Error::from(swapped()).context("not deleting anything")
        ));
        let unconfirmed = Identity::Unconfirmed(qucam::CameraError::Busy);
        assert!(!is_swap(&anyhow::Error::from(unconfirmed)));
        assert!(!is_swap(&anyhow::anyhow!("listing failed")));
        assert_eq!(
            swapped().to_string(),
            "another camera answers at the address now (IMEI 2, not 1)"
        );
    }

    #[test]
    fn what_remains_is_the_work_left_and_the_deletes_the_policy_wants() {
        use ClipState::*;
        let all = ClipState::ALL;
        let mut after_upload: Vec<ClipState> = all
            .into_iter()
            .filter(|s| needs_work(*s, DeletePolicy::AfterUpload))
            .collect();
        let never: Vec<ClipState> = all
            .into_iter()
            .filter(|s| needs_work(*s, DeletePolicy::Never))
            .collect();
        // A verified clip waits for its delete only when the policy deletes.
        assert!(after_upload.contains(&Verified));
        assert!(!never.contains(&Verified));
        after_upload.retain(|s| *s != Verified);
        assert_eq!(after_upload, never, "the policy changes nothing else");
        for s in [
            Seen,
            Queued,
            Downloading,
            Downloaded,
            Uploading,
            Uploaded,
            Failed,
        ] {
            assert!(never.contains(&s), "{s:?} is work left");
        }
        for s in [Retained, Deleted, Skipped, Refused, Lost, Elsewhere] {
            assert!(!never.contains(&s), "{s:?} is settled");
        }
    }
}
