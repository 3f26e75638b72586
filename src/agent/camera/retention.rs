//! The retention stage: after a pass's uploads, verified clips of the camera are deleted
//! from it as `retention` allows (each object checked in the bucket again, then its bytes
//! on the camera challenged (`challenge`), right before its delete, in batches of
//! [`DELETE_BATCH`]), or marked retained. A clip the bucket no longer confirms is offloaded
//! again instead; one the challenge finds changed on the camera is offloaded as a new
//! generation. Only clips this pass's listing showed with the size and `date` that were
//! verified are candidates, and the camera's IMEI is confirmed right before each delete
//! request, retries included (see `identity`). Challenges that are due (a delete that did
//! not take, a clock shift) are made right after the listing, whatever the policy.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Result, anyhow};
use backon::{ExponentialBuilder, Retryable};
use tracing::{info, warn};

use qucam::{CameraClient, CameraError};

use super::challenge::{Challenge, ChallengeError, ChallengeWarnings, Outcome};
use super::identity::{Identity, confirm_imei};
use crate::agent::AgentEvent;
use crate::agent::events::Events;
use crate::agent::uploader::Uploader;
use crate::config::{DeletePolicy, RetentionConfig};
use crate::store::{self, Changed, Clip, Store};

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

/// Retention for one pass over the camera confirmed as `imei`.
pub(super) struct Retention<'a> {
    pub(super) client: &'a CameraClient,
    pub(super) imei: &'a str,
    pub(super) store: &'a Store,
    pub(super) policy: &'a RetentionConfig,
    /// Checks each object in the bucket again before its delete.
    pub(super) uploader: &'a Uploader,
    pub(super) events: &'a Events,
    /// What this worker has already warned of about the challenge (`status` keeps it).
    pub(super) warned: &'a ChallengeWarnings,
}

impl Retention<'_> {
    /// Deletes verified clips from the camera as the policy allows; the rest are retained.
    /// Each object is checked in the bucket again, and its bytes on the camera challenged,
    /// right before its delete. Only clips this pass's listing (since `listed_since`, ms)
    /// showed with the verified size and `date` are candidates
    /// ([`crate::store::Store::deletable`]).
    pub(super) async fn apply(&self, listed_since: i64, gate: &DeleteGate) -> Result<()> {
        let (client, imei) = (self.client, self.imei);
        let r = self.policy;
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
        let ok: Vec<Clip> = match gate {
            DeleteGate::Checked(ids) => old.into_iter().filter(|c| ids.contains(&c.id)).collect(),
            _ => self.recheck_in_bucket(imei, old).await?,
        };
        if r.challenge_blocks == 0 {
            return self.delete_batches(client, imei, ok).await;
        }
        // The camera's bytes are read right before the delete.
        let out = self.challenge(ok).await?;
        self.delete_batches(client, imei, out.same).await
    }

    /// Makes the challenges that are due (clips a listing since `listed_since` could not
    /// tell from those verified: a delete that did not take, a clock shift), whatever the
    /// policy: one found changed is a new generation at once. One whose challenge cannot be
    /// made (the camera ignores `Range`, or the challenge is off) is offloaded again as a new
    /// generation: a second copy, never a clip lost. One whose blocks could not be read stays
    /// due (never deleted) for the next pass. Nothing for a camera the gate does not trust.
    pub(super) async fn challenge_due(&self, listed_since: i64, gate: &DeleteGate) -> Result<()> {
        if *gate == DeleteGate::Closed {
            return Ok(());
        }
        let due = self.store.challenges_due(self.imei, listed_since).await?;
        if due.is_empty() {
            return Ok(());
        }
        let unchecked = if self.policy.challenge_blocks == 0 {
            due
        } else {
            self.challenge(due).await?.range_ignored
        };
        for c in unchecked {
            if self
                .store
                .changed_on_camera(c.id, Changed::Unchecked)
                .await?
            {
                info!(imei = %self.imei, clip = %c.name, "its bytes on the camera cannot be checked against those verified: offloaded again as a new generation");
            }
        }
        Ok(())
    }

    /// Challenges `clips` (see `challenge`), and keeps the camera's notice for `status` (and
    /// one warning per trouble per worker) when deletes are held: the camera ignores `Range`,
    /// or clips were downloaded before block digests were recorded.
    async fn challenge(&self, clips: Vec<Clip>) -> Result<Outcome> {
        let challenge = Challenge {
            client: self.client,
            imei: self.imei,
            store: self.store,
            blocks: self.policy.challenge_blocks,
        };
        let out = match challenge.run(clips).await {
            Ok(out) => out,
            Err(ChallengeError::Identity(why)) => {
                return Err(anyhow::Error::from(why).context("not deleting anything"));
            }
            Err(ChallengeError::Store(e)) => return Err(e),
        };
        let mut held = Vec::new();
        if let Some(why) = &out.range_why {
            held.push(format!(
                "the camera does not honour Range requests ({why}): the delete challenge cannot \
                 read its bytes, so nothing is deleted from it (retention.challenge_blocks = 0 \
                 deletes on the listing's word)"
            ));
            if !self.warned.range_ignored.swap(true, Ordering::Relaxed) {
                warn!(imei = %self.imei, "{}", held[held.len() - 1]);
            }
        }
        if out.undigested > 0 {
            held.push(format!(
                "{} verified clip(s) were downloaded before the delete challenge recorded block \
                 digests: kept on the camera (retention.challenge_blocks = 0 deletes them on \
                 the listing's word)",
                out.undigested
            ));
            if !self.warned.undigested.swap(true, Ordering::Relaxed) {
                warn!(imei = %self.imei, "{}", held[held.len() - 1]);
            }
        }
        let key = crate::agent::challenge_key(self.imei);
        if !held.is_empty() {
            self.store.set_notice(key, Some(held.join("; "))).await?;
        } else if out.challenged_any() {
            // Only a challenge that read bytes shows the trouble is over.
            self.store.set_notice(key, None).await?;
        }
        Ok(out)
    }

    /// The clips of `old` their objects in the bucket still confirm (checked now); a clip
    /// it no longer confirms is offloaded again. An outage leaves the rest for the next
    /// pass.
    async fn recheck_in_bucket(&self, imei: &str, old: Vec<Clip>) -> Result<Vec<Clip>> {
        if !self.uploader.bucket_reachable() {
            // The bucket is out of reach while the uplink's radio is on a hotspot.
            return Ok(Vec::new());
        }
        Ok(self.uploader.confirm_in_bucket(imei, old, None).await?.0)
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
                        self.events.emit(AgentEvent::DeletedFromCamera {
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
