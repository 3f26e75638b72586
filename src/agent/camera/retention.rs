//! The retention stage: after a pass's uploads, verified clips of the camera are deleted
//! from it as `retention` allows (each object checked in the bucket again right before its
//! delete, in batches of [`DELETE_BATCH`]), or marked retained. A clip the bucket no longer
//! confirms is offloaded again instead. Only clips this pass's listing showed with the
//! size and `date` that were verified are candidates, and the camera's IMEI is confirmed
//! right before each delete request, retries included (see `identity`).

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Result, anyhow};
use backon::{ExponentialBuilder, Retryable};
use tracing::{info, warn};

use qucam::{CameraClient, CameraError};

use super::identity::{Identity, confirm_imei};
use super::{Agent, AgentEvent};
use crate::config::DeletePolicy;
use crate::store::{self, Clip};

/// Why one attempt at a delete batch failed.
#[derive(Debug, thiserror::Error)]
enum DeleteError {
    /// The camera answering is not confirmed as the pass's own: nothing is sent.
    #[error(transparent)]
    Identity(#[from] Identity),
    #[error(transparent)]
    Camera(#[from] CameraError),
}

/// Paths deleted per `delete_file` request.
const DELETE_BATCH: usize = 25;

/// Which verified clips a pass may delete from the camera.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum DeleteGate {
    /// Any the policy allows, each checked in the bucket again right before its delete.
    #[default]
    Open,
    /// Only these (clip ids): the radio that carries the uplink is on the camera's hotspot,
    /// so the bucket is out of reach; these were checked in it from the uplink right before
    /// the radio left. The others wait for the next visit.
    Checked(HashSet<i64>),
    /// None: the camera behind the hotspot is not the one recorded for it (nothing pending
    /// is applied to a camera that is not trusted yet).
    Closed,
}

impl Agent {
    /// Deletes verified clips from the camera as the policy allows; the rest are retained.
    /// Each object is checked in the bucket again right before its delete.
    /// Only clips this pass's listing (since `listed_since`, ms) showed with the verified
    /// size and `date` are candidates ([`crate::store::Store::deletable`]).
    pub(super) async fn apply_retention(
        &self,
        client: &CameraClient,
        imei: &str,
        listed_since: i64,
        gate: &DeleteGate,
    ) -> Result<()> {
        let r = &self.cfg.retention;
        let clips = self.store.deletable(imei, listed_since).await?;
        if clips.is_empty() || *gate == DeleteGate::Closed {
            return Ok(());
        }
        if r.delete_from_camera == DeletePolicy::Never {
            self.store
                .retained(clips.iter().map(|c| c.id).collect())
                .await?;
            return Ok(());
        }
        let min_age = r.min_age_on_camera.as_secs() as i64;
        let t = store::now();
        let (old, young): (Vec<Clip>, Vec<Clip>) =
            clips.into_iter().partition(|c| c.first_seen + min_age <= t);
        self.store
            .retained(young.iter().map(|c| c.id).collect())
            .await?;
        let ok = match gate {
            DeleteGate::Checked(ids) => old.into_iter().filter(|c| ids.contains(&c.id)).collect(),
            _ => self.recheck_in_bucket(imei, old).await?,
        };
        self.delete_batches(client, imei, ok).await
    }

    /// Checked from the uplink right before the radio leaves for the hotspot of camera
    /// `imei` (the one recorded behind it), until `deadline`: its verified clips whose
    /// objects the bucket confirms now. Only these may be deleted during the visit
    /// ([`DeleteGate::Checked`]). Also whether every verified clip was checked (not when
    /// the deadline or an outage cut the check short: the rest wait for a later visit).
    pub(super) async fn check_before_visit(
        &self,
        imei: &str,
        deadline: tokio::time::Instant,
    ) -> (HashSet<i64>, bool) {
        let verified: Vec<Clip> = match self.store.clips_of(imei).await {
            Ok(cs) => cs
                .into_iter()
                .filter(|c| c.state == store::ClipState::Verified)
                .collect(),
            Err(e) => {
                warn!(imei = %imei, "cannot read the clips to delete at this visit: {e:#}");
                return (HashSet::new(), false);
            }
        };
        if verified.is_empty() {
            return (HashSet::new(), true);
        }
        let n = verified.len();
        match self.confirm_in_bucket(imei, verified, Some(deadline)).await {
            Ok((ok, complete)) => {
                if !complete {
                    info!(imei = %imei, checked = ok.len(), verified = n, "the check in the bucket before the visit was cut short: the other deletes wait for a later visit");
                }
                (ok.iter().map(|c| c.id).collect(), complete)
            }
            Err(e) => {
                warn!(imei = %imei, "deletes wait for a later visit: {e:#}");
                (HashSet::new(), false)
            }
        }
    }

    /// The clips of `old` their objects in the bucket still confirm (checked now); a clip
    /// it no longer confirms is offloaded again. An outage leaves the rest for the next
    /// pass.
    async fn recheck_in_bucket(&self, imei: &str, old: Vec<Clip>) -> Result<Vec<Clip>> {
        if !self.schedule.uploads_may_run() {
            // The bucket is out of reach while the uplink's radio is on a hotspot.
            return Ok(Vec::new());
        }
        Ok(self.confirm_in_bucket(imei, old, None).await?.0)
    }

    /// [`Agent::recheck_in_bucket`] whatever the radio does (the check before a visit runs
    /// on the uplink, with new uploads already stopped), until `deadline` if any. Also
    /// whether every clip was checked (not when the deadline or an outage cut it short).
    async fn confirm_in_bucket(
        &self,
        imei: &str,
        old: Vec<Clip>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(Vec<Clip>, bool)> {
        let mut ok = Vec::new();
        for c in old {
            let (Some(key), Some(sha)) = (c.object_key.clone(), c.sha256.clone()) else {
                continue;
            };
            let sent = super::journal::sent_digests(&self.store, c.id).await;
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
                Err(e) if self.destination_down(&e).await => {
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

    /// Deletes `ok` from the camera in batches, the camera's IMEI confirmed before each
    /// request.
    async fn delete_batches(&self, client: &CameraClient, imei: &str, ok: Vec<Clip>) -> Result<()> {
        for batch in ok.chunks(DELETE_BATCH) {
            let paths: Vec<String> = batch.iter().map(|c| c.path.clone()).collect();
            // Deletes go to whichever camera answers at the address: only to this one,
            // confirmed right before every attempt (a swap looks like a dropped connection,
            // which is retried).
            let res = (|| async {
                confirm_imei(client, imei).await?;
                Ok(client.delete_files(&paths).await?)
            })
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(300))
                    .with_max_times(4)
                    .with_jitter(),
            )
            .when(|e: &DeleteError| matches!(e, DeleteError::Camera(c) if c.is_transient()))
            .await;
            match res {
                Ok(()) => {
                    self.store
                        .deleted(batch.iter().map(|c| c.id).collect())
                        .await?;
                    for c in batch {
                        info!(imei = %imei, clip = %c.name, "deleted from the camera (verified in the bucket)");
                        self.emit(AgentEvent::DeletedFromCamera {
                            imei: imei.to_string(),
                            clip: c.name.clone(),
                        });
                    }
                }
                Err(DeleteError::Identity(why)) => {
                    return Err(anyhow::Error::from(why).context("not deleting anything"));
                }
                Err(DeleteError::Camera(e)) => {
                    return Err(anyhow!("deleting from the camera: {e}"));
                }
            }
        }
        Ok(())
    }
}
