//! Outages of the destination: a failure that is the destination's (see
//! [`UploadError::is_destination_wide`], confirmed by a failing probe) pauses the upload
//! side instead of charging the clip an attempt. While paused the uploader starts nothing
//! and probes the destination with a backoff (1 s doubling to 60 s); one log line says it
//! paused and why, one that it resumed, and a store notice ([`DESTINATION_PAUSED_KEY`])
//! lets `status` and `/metrics` show it. A `--once` run waits for a paused destination
//! up to `sync.destination_wait`, then gives up on it.

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::Agent;
use crate::upload::UploadError;

/// The store notice set while uploads to the destination are paused.
pub const DESTINATION_PAUSED_KEY: &str = "destination-paused";

const FIRST_PROBE: Duration = Duration::from_secs(1);
const MAX_PROBE: Duration = Duration::from_secs(60);

/// The pause state of the destination, held by the [`Agent`].
#[derive(Debug, Default)]
pub(super) struct Outage {
    pause: Option<Pause>,
    /// In a `--once` run: why the run stopped waiting for the destination.
    gave_up: Option<String>,
}

#[derive(Debug)]
struct Pause {
    why: String,
    since: Instant,
    delay: Duration,
    next_probe: Instant,
}

impl Agent {
    fn outage(&self) -> std::sync::MutexGuard<'_, Outage> {
        self.outage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether uploads are paused because the destination is down or refuses the agent.
    pub(super) fn destination_paused(&self) -> bool {
        self.outage().pause.is_some()
    }

    /// Whether `e` is the destination's failure rather than the clip's: destination-wide,
    /// and a probe fails too (or uploads are already paused). Pauses uploads if so; the
    /// caller then leaves the clip where it was, with no attempt counted.
    pub(super) async fn destination_down(&self, e: &UploadError) -> bool {
        if self.schedule.destination_away() {
            // The uplink's radio is on a camera's hotspot: the destination is away by
            // design, which is neither the clip's failure nor an outage.
            return true;
        }
        if !e.is_destination_wide() {
            return false;
        }
        if self.destination_paused() {
            return true;
        }
        match self.dest.probe().await {
            Ok(()) => false,
            Err(p) => {
                debug!("destination probe failed: {p}");
                self.pause_destination(e.to_string()).await;
                true
            }
        }
    }

    async fn pause_destination(&self, why: String) {
        {
            let mut o = self.outage();
            if o.pause.is_some() {
                return;
            }
            let now = Instant::now();
            o.pause = Some(Pause {
                why: why.clone(),
                since: now,
                delay: FIRST_PROBE,
                next_probe: now + FIRST_PROBE,
            });
        }
        let dest = self.dest.describe();
        warn!(destination = %dest, "uploads paused: {why}; probing the destination, no clip is charged an attempt");
        let msg = format!("uploads to {dest} paused: {why}");
        if let Err(e) = self
            .store
            .set_notice(DESTINATION_PAUSED_KEY.into(), Some(msg))
            .await
        {
            warn!("state database: set the destination notice failed: {e:#}");
        }
    }

    /// Probes a paused destination when its probe is due; resumes uploads when it answers.
    pub(super) async fn probe_if_due(&self) {
        let due = matches!(&self.outage().pause, Some(p) if Instant::now() >= p.next_probe);
        if !due {
            return;
        }
        match self.dest.probe().await {
            Ok(()) => {
                let Some(p) = self.outage().pause.take() else {
                    return;
                };
                info!(
                    destination = %self.dest.describe(),
                    "uploads resumed: the destination answers again (paused {}s)",
                    p.since.elapsed().as_secs()
                );
                self.clear_destination_notice().await;
                self.upload_wake.notify_one();
            }
            Err(e) => {
                let mut o = self.outage();
                if let Some(p) = o.pause.as_mut() {
                    p.delay = (p.delay * 2).min(MAX_PROBE);
                    p.next_probe = Instant::now() + p.delay;
                    debug!("destination still down ({e}); next probe in {:?}", p.delay);
                }
            }
        }
    }

    /// Clears the pause notice (a previous run's, or this one's on resuming).
    pub(super) async fn clear_destination_notice(&self) {
        if let Err(e) = self
            .store
            .set_notice(DESTINATION_PAUSED_KEY.into(), None)
            .await
        {
            warn!("state database: clear the destination notice failed: {e:#}");
        }
    }

    /// In a `--once` run: whether it has stopped waiting for the destination, which it
    /// does once uploads have been paused longer than `sync.destination_wait`.
    pub(super) fn destination_given_up(&self) -> bool {
        let once = matches!(self.once_failed.lock().as_deref(), Ok(Some(_)));
        let wait = self.cfg.sync.destination_wait;
        let dest = self.dest.describe();
        let mut o = self.outage();
        if o.gave_up.is_some() {
            return true;
        }
        let Some(p) = o
            .pause
            .as_ref()
            .filter(|p| once && p.since.elapsed() >= wait)
        else {
            return false;
        };
        let msg = format!(
            "destination {dest} unavailable for {}s (longer than sync.destination_wait): {}",
            p.since.elapsed().as_secs(),
            p.why
        );
        warn!("{msg}; giving up on it in this run");
        o.gave_up = Some(msg);
        true
    }

    /// Whether a pass should stop waiting for uploads (and downloads for spool room freed
    /// by uploads): the daemon does not wait for a paused destination (its next pass goes
    /// on downloading); a `--once` run waits up to `sync.destination_wait`.
    pub(super) fn stop_waiting_for_destination(&self) -> bool {
        let once = matches!(self.once_failed.lock().as_deref(), Ok(Some(_)));
        (!once && self.destination_paused()) || self.destination_given_up()
    }

    /// Why this `--once` run gave up on the destination, if it did (it then exits 1).
    pub fn destination_gave_up(&self) -> Option<String> {
        self.outage().gave_up.clone()
    }
}
