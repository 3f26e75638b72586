//! The delete challenge: right before a clip is deleted from the camera (and whenever a
//! listing cannot tell the camera's bytes from those verified: a delete that did not take,
//! a shift of every `date`), read `retention.challenge_blocks` blocks of the clip from the
//! camera with `Range`, at offsets drawn from the operating system's randomness, and compare
//! them with the block digests recorded when it was downloaded ([`crate::blocks`]).
//!
//! - The same bytes: the clip may be deleted (its due challenge, if any, is done).
//! - Other bytes: nothing is deleted; the clip is recorded as changed on the camera, and
//!   the camera's bytes are offloaded as a new generation (`Store::changed_on_camera`).
//! - No digests (downloaded before they were recorded): the challenge cannot be made and
//!   the clip is kept on the camera.
//! - A camera that ignores `Range`: nothing is deleted; the operator may set
//!   `retention.challenge_blocks = 0` to delete on the listing's word.
//! - A block that cannot be read (a camera error): that clip is not deleted, and is tried
//!   again in a later pass; the other clips go on.
//!
//! What the retention stage does with a due challenge that cannot be made is its own rule
//! (`retention`: the camera's bytes are offloaded again as a new generation).
//!
//! Every read goes to the camera confirmed as the pass's, and the verdicts are taken only
//! when the IMEI is confirmed again after the reads (a swap in between discards them).

use std::collections::HashSet;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tracing::{debug, warn};

use qucam::{CameraClient, CameraError};

use super::identity::{Identity, confirm_imei};
use crate::blocks::{BlockDigests, block_range};
use crate::store::{Changed, Clip, Store};

/// Why a challenge could not be made at all. Nothing is deleted, nothing recorded.
#[derive(Debug, thiserror::Error)]
pub(super) enum ChallengeError {
    /// The camera answering is not confirmed as the pass's own.
    #[error(transparent)]
    Identity(#[from] Identity),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// What the challenge found for one clip.
#[derive(Debug)]
enum Verdict {
    /// The blocks read are those downloaded.
    Same,
    /// Block `block` on the camera is not the one downloaded.
    Changed { block: u64 },
    /// No block digests are recorded for the clip.
    NoDigests,
    /// The camera no longer has the clip (another agent deleted it since the listing): no
    /// delete to make; the next listing settles it.
    Gone,
    /// The camera does not honour `Range`: no block can be read, of this clip or another.
    RangeIgnored(CameraError),
    /// Reading a block failed (a camera error, a short or over-long reply): tried again in a
    /// later pass.
    Unread(CameraError),
}

/// What [`Challenge::run`] decided, per clip.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Clips whose bytes on the camera are those verified: they may be deleted.
    pub(super) same: Vec<Clip>,
    /// Clips found changed on the camera (now a new generation each).
    pub(super) changed: usize,
    /// Clips without block digests, kept on the camera.
    pub(super) undigested: usize,
    /// Clips whose blocks could not be read because the camera ignores `Range` (why).
    pub(super) range_ignored: Vec<Clip>,
    pub(super) range_why: Option<String>,
    /// Clips whose blocks could not be read for another reason: left for a later pass.
    pub(super) unread: usize,
}

impl Outcome {
    /// Whether any clip's bytes were actually read and compared.
    pub(super) fn challenged_any(&self) -> bool {
        !self.same.is_empty() || self.changed > 0
    }
}

/// What a camera worker has warned of about its camera's challenges (once each per worker;
/// `status` keeps the notice).
#[derive(Debug, Default)]
pub(crate) struct ChallengeWarnings {
    pub(super) range_ignored: std::sync::atomic::AtomicBool,
    pub(super) undigested: std::sync::atomic::AtomicBool,
}

/// The delete challenge for one pass over the camera confirmed as `imei`.
pub(super) struct Challenge<'a> {
    pub(super) client: &'a CameraClient,
    pub(super) imei: &'a str,
    pub(super) store: &'a Store,
    /// Blocks read per clip (`retention.challenge_blocks`, at least 1: with 0 there is no
    /// challenge to make).
    pub(super) blocks: u32,
}

impl Challenge<'_> {
    /// Challenges `clips` and records what was found (see the module doc). One clip's
    /// trouble never stops the others: only another camera at the address, or the store,
    /// ends the run.
    pub(super) async fn run(&self, clips: Vec<Clip>) -> Result<Outcome, ChallengeError> {
        let mut out = Outcome::default();
        if clips.is_empty() {
            return Ok(out);
        }
        confirm_imei(self.client, self.imei).await?;
        let mut verdicts = Vec::with_capacity(clips.len());
        let mut ignored = false;
        for c in clips {
            let v = if ignored {
                Verdict::RangeIgnored(CameraError::RangeNotHonoured {
                    asked: 0,
                    got: "not asked: the camera ignored Range for another clip".into(),
                })
            } else {
                self.challenge(&c).await?
            };
            ignored |= matches!(v, Verdict::RangeIgnored(_));
            verdicts.push((c, v));
        }
        // The reads count only if the camera that served them is still the pass's.
        confirm_imei(self.client, self.imei).await?;
        for (c, v) in verdicts {
            match v {
                Verdict::Same => {
                    if c.challenge_due {
                        self.store.challenge_passed(c.id).await?;
                    }
                    debug!(imei = %self.imei, clip = %c.name, "delete challenge passed");
                    out.same.push(c);
                }
                Verdict::Changed { block } => {
                    if self.store.changed_on_camera(c.id, Changed::Bytes).await? {
                        warn!(
                            imei = %self.imei, clip = %c.name, block,
                            "the camera holds other bytes for this clip than those verified in the bucket: nothing deleted; the camera's bytes are offloaded as a new generation"
                        );
                        out.changed += 1;
                    }
                }
                Verdict::NoDigests => out.undigested += 1,
                Verdict::Gone => {
                    debug!(imei = %self.imei, clip = %c.name, "gone from the camera before its delete challenge");
                }
                Verdict::RangeIgnored(e) => {
                    out.range_why.get_or_insert_with(|| e.to_string());
                    out.range_ignored.push(c);
                }
                Verdict::Unread(e) => {
                    warn!(imei = %self.imei, clip = %c.name, "delete challenge: cannot read a block ({e}): not deleted, tried again next pass");
                    out.unread += 1;
                }
            }
        }
        Ok(out)
    }

    /// Reads the drawn blocks of `c` and compares each with its digest.
    async fn challenge(&self, c: &Clip) -> Result<Verdict, ChallengeError> {
        let Some(digests) = self.store.block_digests(c.id).await? else {
            return Ok(Verdict::NoDigests);
        };
        let size = c.size;
        for block in draw(digests.count(), self.blocks) {
            let bytes = match self.read_block(c, block, size).await {
                Ok(b) => b,
                Err(CameraError::Http { status: 404, .. }) => return Ok(Verdict::Gone),
                Err(e @ CameraError::RangeNotHonoured { .. }) => {
                    return Ok(Verdict::RangeIgnored(e));
                }
                Err(e) => return Ok(Verdict::Unread(e)),
            };
            crate::agent::heartbeat::beat();
            self.store.add_received(c.id, bytes.len() as u64).await?;
            if !BlockDigests::matches(&digests, block, &bytes) {
                return Ok(Verdict::Changed { block });
            }
        }
        Ok(Verdict::Same)
    }

    /// Block `block` of `c` (`size` bytes) from the camera; a busy camera is asked again.
    async fn read_block(
        &self,
        c: &Clip,
        block: u64,
        size: u64,
    ) -> Result<bytes::Bytes, CameraError> {
        let (start, len) = block_range(block, size);
        let client = self.client;
        (|| async { client.read_range(&c.path, start, len).await })
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_times(4)
                    .with_jitter(),
            )
            .when(|e: &CameraError| matches!(e, CameraError::Busy | CameraError::Timeout(_)))
            .await
    }
}

/// `want` distinct block numbers below `count`, drawn from the operating system's
/// randomness (all of them when `want >= count`), in ascending order.
fn draw(count: u64, want: u32) -> Vec<u64> {
    let want = u64::from(want);
    if want >= count {
        return (0..count).collect();
    }
    let mut picked = HashSet::new();
    while (picked.len() as u64) < want {
        // A v4 UUID is 122 bits from the OS's random source (getrandom).
        let r = uuid::Uuid::new_v4().as_u128();
        picked.insert((r % u128::from(count)) as u64);
    }
    let mut v: Vec<u64> = picked.into_iter().collect();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_distinct_blocks_or_all_of_a_short_clip() {
        assert_eq!(draw(3, 5), [0, 1, 2]);
        assert_eq!(draw(1, 2), [0]);
        assert!(draw(10, 0).is_empty());
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let d = draw(1000, 2);
            assert_eq!(d.len(), 2);
            assert!(d[0] < d[1] && d[1] < 1000);
            seen.extend(d);
        }
        // Unpredictable offsets: not the same few blocks every time.
        assert!(seen.len() > 100, "{}", seen.len());
    }
}
