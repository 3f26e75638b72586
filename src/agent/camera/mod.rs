//! One pass over a camera, and the camera's loop of passes: probe the camera (its IMEI is
//! its identity), record it, then list and reconcile, download, wait for the uploads and
//! apply retention; report the outcome and what remains. When the next pass starts is the
//! schedule's decision (`schedule.rs`), not this loop's.

use std::sync::Arc;

use anyhow::Result;
use tracing::{debug, info, warn};

use qucam::CameraClient;

use super::download::PassStop;
use super::identity::Identity;
use super::{Agent, AgentEvent, PassOutcome};
use crate::config::DeletePolicy;
use crate::store::{CameraRow, ClipState};

/// Whether a clip in `state` still needs work under `policy`: not yet offloaded and
/// settled (a verified clip waits for its delete from the camera, unless the policy
/// never deletes).
pub(crate) fn needs_work(state: ClipState, policy: DeletePolicy) -> bool {
    state.is_still_to_do() || (state == ClipState::Verified && policy == DeletePolicy::AfterUpload)
}

/// How many of `states` still need work under `policy` (see [`needs_work`]).
pub(crate) fn count_remaining(
    states: impl IntoIterator<Item = ClipState>,
    policy: DeletePolicy,
) -> usize {
    states
        .into_iter()
        .filter(|s| needs_work(*s, policy))
        .count()
}

/// Whether a pass ended because another camera answers at its address (see `identity`).
pub(crate) fn is_swap(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(c.downcast_ref::<Identity>(), Some(Identity::Swapped { .. }))
            || matches!(
                c.downcast_ref::<PassStop>(),
                Some(PassStop::Identity(Identity::Swapped { .. }))
            )
    })
}

impl Agent {
    /// Camera `i`'s passes, each when the schedule says it is due, until it says stop.
    /// Reports the camera appearing and going away.
    pub(super) async fn camera_loop(self: Arc<Self>, i: usize) {
        let name = self.cameras[i].0.name.clone();
        let mut present: Option<String> = None;
        let mut turns = self.schedule.turns(i);
        while turns.next().await {
            let outcome = {
                let _busy = super::heartbeat::busy();
                self.pass(i).await
            };
            self.emit(AgentEvent::PassFinished {
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
                    self.emit(AgentEvent::CameraGone {
                        camera: name.clone(),
                        imei: old.clone(),
                    });
                }
                if let Some(new) = &now_here {
                    info!(camera = %name, imei = %new, "camera appeared");
                    self.emit(AgentEvent::CameraAppeared {
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

    /// One pass over camera `i`: probe, list, download, wait for uploads, retention.
    pub async fn pass(self: &Arc<Self>, i: usize) -> PassOutcome {
        let (cam, client) = &self.cameras[i];
        let info = match client.device_info().await {
            Ok(info) => info,
            Err(e) if e.is_unreachable() => {
                debug!(camera = %cam.name, "camera not reachable: {e}");
                return PassOutcome::Away;
            }
            Err(e) => {
                return PassOutcome::Failed {
                    imei: None,
                    error: format!("device info: {e}"),
                };
            }
        };
        if let Err(e) = qucam::check_imei(&info.imei) {
            return PassOutcome::Failed {
                imei: None,
                error: format!("device info: {e}"),
            };
        }
        let imei = info.imei.clone();
        if Some(i) != self.hotspot {
            // A camera met by its URL (WAN mode, a cable): its hotspot, with `wifi.learn`.
            self.learn_hotspot(&info, None).await;
        }
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
            config_name: Some(self.camera_name(i)),
            url: Some(cam.url.clone()),
            device_name: info.device_name.clone(),
            firmware: info.application_version.clone(),
            storage: info.local_storage.clone(),
            ..Default::default()
        };
        if let Err(e) = self.store.camera_seen(row).await {
            return PassOutcome::Failed {
                imei: Some(imei),
                error: format!("state database: {e:#}"),
            };
        }
        match self.pass_inner(i, client, &imei).await {
            Ok(remaining) => PassOutcome::Done { imei, remaining },
            Err(e) => {
                if is_swap(&e) {
                    // Whichever camera answers now gets its pass at once.
                    info!(camera = %cam.name, imei = %imei, "{e:#}: starting a pass for the camera that answers now");
                    self.schedule.again(i);
                }
                PassOutcome::Failed {
                    imei: Some(imei),
                    error: format!("{e:#}"),
                }
            }
        }
    }

    async fn pass_inner(
        self: &Arc<Self>,
        i: usize,
        client: &CameraClient,
        imei: &str,
    ) -> Result<usize> {
        let mut listed_since = crate::store::now_ms();
        self.list_and_reconcile(client, imei).await?;
        // Files of listings the camera no longer shows are never resumed: removed.
        if let Err(e) = self.sweep_spool(imei).await {
            warn!(imei = %imei, "cannot sweep the spool: {e:#}");
        }
        let dl = self.download_all(client, imei).await;
        self.wait_uploads(Some(imei)).await;
        // Always, even when uploads are paused: until an overlapped clip's tail has put its
        // file in place and recorded it, its row still reads `downloading`, and the next
        // pass would take it up a second time (each tail ends by itself: every S3 request
        // has its timeouts).
        self.wait_overlaps(Some(imei)).await;
        dl?;
        if !self.shutdown.is_cancelled() {
            // Deletes go by a listing taken right before them (the camera may have
            // rewritten a path since the pass began).
            if self.cfg.retention.delete_from_camera != DeletePolicy::Never
                && !self.store.deletable(imei, listed_since).await?.is_empty()
            {
                listed_since = self.list_for_retention(client, imei).await?;
            }
            let gate = self.delete_gate(i);
            self.apply_retention(client, imei, listed_since, &gate)
                .await?;
        }
        self.remaining(imei).await
    }

    /// Clips of `imei` that still need work (not yet verified and settled).
    pub async fn remaining(&self, imei: &str) -> Result<usize> {
        let clips = self.store.clips_of(imei).await?;
        let policy = self.cfg.retention.delete_from_camera;
        Ok(count_remaining(clips.iter().map(|c| c.state), policy))
    }
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
        assert_eq!(
            count_remaining(
                [Queued, Verified, Deleted, Verified],
                DeletePolicy::AfterUpload
            ),
            3
        );
        assert_eq!(
            count_remaining([Queued, Verified, Deleted, Verified], DeletePolicy::Never),
            1
        );
    }
}
