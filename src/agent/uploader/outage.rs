//! Outages of the destination: a failure that is the destination's (see
//! [`UploadError::is_destination_wide`], confirmed by a failing probe) pauses the upload
//! side instead of charging the clip an attempt. While paused the uploader starts nothing
//! and probes the destination with a backoff (1 s doubling to 60 s); one log line says it
//! paused and why, one that it resumed, and a store notice ([`DESTINATION_PAUSED_KEY`])
//! lets `status` and `/metrics` show it. A `--once` run waits for a paused destination
//! up to `sync.destination_wait`, then gives up on it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::agent::Mode;
use crate::agent::radio::RadioView;
use crate::store::Store;
use crate::upload::{Destination, UploadError};

/// The store notice set while uploads to the destination are paused.
pub const DESTINATION_PAUSED_KEY: &str = "destination-paused";

const FIRST_PROBE: Duration = Duration::from_secs(1);
const MAX_PROBE: Duration = Duration::from_secs(60);

/// Whether the destination is paused, and what it takes to tell: owned by the uploader.
pub(crate) struct Outage {
    state: Mutex<State>,
    dest: Arc<Destination>,
    store: Store,
    /// An S3 failure while the radio is away is no outage.
    radio: RadioView,
    /// A `--once` run gives up on a paused destination after `wait`; a daemon never does.
    mode: Mode,
    wait: Duration,
}

#[derive(Debug, Default)]
struct State {
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

impl Outage {
    /// No outage yet; `wait` is `sync.destination_wait`.
    pub(crate) fn new(
        dest: Arc<Destination>,
        store: Store,
        radio: RadioView,
        mode: Mode,
        wait: Duration,
    ) -> Outage {
        Outage {
            state: Mutex::new(State::default()),
            dest,
            store,
            radio,
            mode,
            wait,
        }
    }

    fn outage(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether uploads are paused because the destination is down or refuses the agent.
    pub(crate) fn paused(&self) -> bool {
        self.outage().pause.is_some()
    }

    /// Whether `e` is the destination's failure rather than the clip's: destination-wide,
    /// and a probe fails too (or uploads are already paused). Pauses uploads if so; the
    /// caller then leaves the clip where it was, with no attempt counted.
    pub(crate) async fn destination_down(&self, e: &UploadError) -> bool {
        if self.radio.now().destination_away() {
            // The uplink's radio is on a camera's hotspot: the destination is away by
            // design, which is neither the clip's failure nor an outage.
            return true;
        }
        if !e.is_destination_wide() {
            return false;
        }
        if self.paused() {
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

    /// Probes a paused destination when its probe is due. Whether uploads resumed (the
    /// destination answers again).
    pub(crate) async fn probe_if_due(&self) -> bool {
        let due = matches!(&self.outage().pause, Some(p) if Instant::now() >= p.next_probe);
        if !due {
            return false;
        }
        match self.dest.probe().await {
            Ok(()) => {
                let Some(p) = self.outage().pause.take() else {
                    return false;
                };
                info!(
                    destination = %self.dest.describe(),
                    "uploads resumed: the destination answers again (paused {}s)",
                    p.since.elapsed().as_secs()
                );
                self.clear_notice().await;
                true
            }
            Err(e) => {
                let mut o = self.outage();
                if let Some(p) = o.pause.as_mut() {
                    p.delay = (p.delay * 2).min(MAX_PROBE);
                    p.next_probe = Instant::now() + p.delay;
                    debug!("destination still down ({e}); next probe in {:?}", p.delay);
                }
                false
            }
        }
    }

    /// Clears the pause notice (a previous run's, or this one's on resuming).
    pub(crate) async fn clear_notice(&self) {
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
    pub(crate) fn given_up(&self) -> bool {
        let once = self.mode == Mode::Once;
        let wait = self.wait;
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
    pub(crate) fn stop_waiting(&self) -> bool {
        match self.mode {
            Mode::Daemon => self.paused(),
            Mode::Once => self.given_up(),
        }
    }

    /// Why this `--once` run gave up on the destination, if it did (it then exits 1).
    pub(crate) fn gave_up_reason(&self) -> Option<String> {
        self.outage().gave_up.clone()
    }
}
