//! The offload agent: the loops that take every selected clip from a camera to the
//! destination exactly once, and delete from the camera only what is verified there.
//!
//! The parts, each owning its state; they reach each other through arguments and narrow
//! interfaces, never through one shared struct:
//! - **camera workers** (`camera`), one per camera met by URL, each running its passes when
//!   the `schedule` says (probe, list, download, wait for uploads, retention: the clip walk
//!   is in `camera`'s doc);
//! - **the uploader** (`uploader`), one per run: uploads what the workers downloaded
//!   (SQLite is the queue between them), verifies each object, pauses on outages;
//! - **the rotation** (`rotation`, depot Wi-Fi): joins camera hotspots one at a time and has
//!   its own camera worker run a pass behind each (the visit walk is in `rotation::visit`);
//!   it alone writes the radio's state (`radio`), which the schedule and the uploader read.
//!
//! Shared small things: `events` (what the agent reports), `spool` (the files between
//! camera and bucket), `quarantine` (spool files no clip named, offloaded from the
//! quarantine as clips from the spool), `work` (a clip parsed once for the stages),
//! `learn` (hotspot passwords from device info), `heartbeat` (whether the loops progress).
//! A run is a [`Mode`]: one pass over everything (`--once`) or the daemon.
//!
//! Every step is a state transition in [`crate::store`]; a kill -9 anywhere resumes
//! from the last committed state and the bytes on disk.

mod camera;
mod events;
pub mod heartbeat;
mod learn;
mod quarantine;
mod radio;
mod rotation;
mod schedule;
mod spool;
mod uploader;
mod work;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use qucam::{CameraClient, ClientOptions};

use crate::config::{CameraConfig, Config};
use crate::store::Store;
use crate::upload::Destination;
use camera::{CameraWorker, Turn, WorkerParts};
use events::Events;
use learn::Learner;
use radio::{RadioStates, RadioView};
use rotation::{Rotation, RotationParts};
use schedule::Schedule;
use spool::Spool;
use uploader::{Uploader, UploaderParts};

pub use events::{AgentEvent, PassOutcome};
pub use uploader::DESTINATION_PAUSED_KEY;

/// How often the daemon prunes the state database (see [`Agent::prune`]).
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Largest clip size believed (a listing claiming more is refused as implausible).
pub const MAX_CLIP_BYTES: u64 = 64 * 1024 * 1024 * 1024;
/// Most listing entries read in one pass (a camera that pages forever is cut off).
pub const MAX_LISTING: usize = 200_000;

/// What kind of run the agent's parts are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `run --once`: one pass over every camera (and one rotation over the hotspots in
    /// range), then stop. A clip whose upload fails is not tried again in the run, and a
    /// paused destination is waited for up to `sync.destination_wait`.
    Once,
    /// The daemon: passes when the schedule says, until shutdown or a soft stop.
    Daemon,
}

/// The two ways a run stops: `shutdown` cuts work short; `soft` (a config reload) starts
/// no new pass, download or upload and lets those in flight finish.
#[derive(Debug, Clone)]
pub(crate) struct Stops {
    pub(crate) shutdown: CancellationToken,
    pub(crate) soft: CancellationToken,
}

impl Stops {
    pub(crate) fn new(shutdown: CancellationToken) -> Stops {
        Stops {
            shutdown,
            soft: CancellationToken::new(),
        }
    }

    /// Whether either stop was asked for.
    pub(crate) fn stopping(&self) -> bool {
        self.shutdown.is_cancelled() || self.soft.is_cancelled()
    }
}

/// The agent: configuration, store, destination and camera clients; a run builds its parts
/// from them.
pub struct Agent {
    cfg: Arc<Config>,
    store: Store,
    dest: Arc<Destination>,
    spool: Spool,
    /// Cameras met by URL, each with its client.
    cameras: Vec<(CameraConfig, CameraClient)>,
    /// With `[wifi]`: the camera behind whichever hotspot the radio is on, at
    /// `wifi.camera_url`, which the rotation works on instead of a timer.
    hotspot: Option<(CameraConfig, CameraClient)>,
    stops: Stops,
    events: Events,
    /// With `[wifi]`: the hotspot passwords, learned ones included.
    learner: Learner,
    /// Why the last `--once` run gave up on the destination, if it did.
    gave_up: Mutex<Option<String>>,
}

/// In a `--once` run, how many more passes a camera gets when another camera takes its
/// address mid-pass.
const MAX_SWAPS_PER_RUN: usize = 3;

/// The state database file inside the state dir.
pub fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join("state.db")
}

/// The notice key for paused downloads of one camera.
pub fn pause_key(imei: &str) -> String {
    format!("downloads-paused:{imei}")
}

/// The notice key of a camera whose deletes the delete challenge holds (`status` shows it):
/// a camera that ignores `Range`, or clips downloaded before block digests were recorded.
pub fn challenge_key(imei: &str) -> String {
    format!("delete-challenge:{imei}")
}

impl Agent {
    /// Opens the store under the config's state dir and builds a client per camera.
    pub fn new(cfg: Config, dest: Destination, shutdown: CancellationToken) -> Result<Agent> {
        let state_dir = cfg.state_dir();
        let store = Store::open(&db_path(&state_dir))?;
        let spool = Spool::open(&state_dir)?;
        let learner = Learner::load(&cfg)?;
        let client = |c: &CameraConfig| -> Result<CameraClient> {
            let id = qucam::client_id(&state_dir, c.client_id.as_deref())
                .with_context(|| format!("cannot keep the client id in {}", state_dir.display()))?;
            let mut o = ClientOptions::new(id);
            o.params = c.params;
            o.connect_timeout = c.connect_timeout;
            o.idle_timeout = c.idle_timeout;
            // A camera that answers slowly but answers (each read within idle_timeout, the
            // call within its 60 s) is progress, not a wedge: its bytes beat the heartbeat.
            o.on_progress = Some(heartbeat::beat);
            CameraClient::new(&c.url, o).map_err(|e| anyhow!("camera {:?}: {e}", c.name))
        };
        // Cameras known only by their hotspot are worked on through the hotspot's worker.
        let mut cameras = Vec::new();
        for c in cfg.cameras.iter().filter(|c| !c.hotspot_only) {
            cameras.push((c.clone(), client(c)?));
        }
        let hotspot = match &cfg.wifi {
            Some(w) => {
                let slot = rotation::hotspot_slot(w);
                let cl = client(&slot)?;
                Some((slot, cl))
            }
            None => None,
        };
        Ok(Agent {
            cfg: Arc::new(cfg),
            store,
            dest: Arc::new(dest),
            spool,
            cameras,
            hotspot,
            stops: Stops::new(shutdown),
            events: Events::new(),
            learner,
            gave_up: Mutex::new(None),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Events as the agent works (see [`AgentEvent`]).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<AgentEvent> {
        self.events.subscribe()
    }

    /// Soft stop, for a config reload: no new pass, download or upload starts; passes,
    /// downloads and uploads in flight finish (unlike the shutdown token, which cuts them
    /// short), then [`Agent::run`] returns. Leftover work stays in the store for the next
    /// agent.
    pub fn stop_taking_work(&self) {
        self.stops.soft.cancel();
    }

    /// The configuration the agent runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Clips of camera `imei` that still need work (not yet verified and settled, under
    /// the configured delete policy).
    pub async fn remaining(&self, imei: &str) -> Result<usize> {
        camera::remaining(&self.store, imei, self.cfg.retention.delete_from_camera).await
    }

    /// Why the last `--once` run gave up on the destination, if it did (it then exits 1).
    pub fn destination_gave_up(&self) -> Option<String> {
        self.gave_up.lock().ok().and_then(|g| g.clone())
    }

    /// The uploader of a run in `mode`, reading the radio's state from `radio`.
    fn uploader(&self, radio: RadioView, mode: Mode) -> Arc<Uploader> {
        let parts = UploaderParts {
            store: self.store.clone(),
            dest: self.dest.clone(),
            cfg: self.cfg.clone(),
            spool: self.spool.clone(),
            events: self.events.clone(),
            stops: self.stops.clone(),
            radio,
        };
        Arc::new(Uploader::new(parts, mode))
    }

    /// A worker for camera `c` reached with `client`.
    fn worker(&self, c: &CameraConfig, client: &CameraClient, up: &Arc<Uploader>) -> CameraWorker {
        let parts = WorkerParts {
            store: self.store.clone(),
            cfg: self.cfg.clone(),
            spool: self.spool.clone(),
            uploader: up.clone(),
            events: self.events.clone(),
            stops: self.stops.clone(),
            learner: self.learner.clone(),
        };
        CameraWorker::new(c.clone(), client.clone(), parts)
    }

    /// With `[wifi]`: the rotation of a run in `mode`, the one writer of the radio's state.
    fn rotation(&self, states: RadioStates, up: &Arc<Uploader>, mode: Mode) -> Option<Rotation> {
        let wifi = self.cfg.wifi.clone()?;
        let (slot, client) = self.hotspot.as_ref()?;
        let parts = RotationParts {
            wifi,
            delete_policy: self.cfg.retention.delete_from_camera,
            worker: self.worker(slot, client, up),
            store: self.store.clone(),
            uploader: up.clone(),
            learner: self.learner.clone(),
            events: self.events.clone(),
            stops: self.stops.clone(),
        };
        Some(Rotation::new(parts, states, mode))
    }

    /// One pass over every configured camera (and one rotation over the hotspots in
    /// range), then stop. Returns each camera's outcome.
    pub async fn run_once(self: &Arc<Self>) -> Vec<(String, PassOutcome)> {
        self.prune().await;
        self.spool.adopt_legacy(&self.store).await;
        quarantine::take_in_all(&self.spool, &self.store).await;
        let (states, radio) = RadioStates::new();
        let up = self.uploader(radio, Mode::Once);
        let stop_uploader = CancellationToken::new();
        let uploading = tokio::spawn(up.clone().run(stop_uploader.clone()));
        let workers: Vec<CameraWorker> = self
            .cameras
            .iter()
            .map(|(c, client)| self.worker(c, client, &up))
            .collect();
        let passes = workers.iter().map(|w| self.once_over(w));
        let rotation = self.rotation(states, &up, Mode::Once);
        let visits = async {
            match &rotation {
                Some(r) => r.once().await,
                None => Vec::new(),
            }
        };
        let one_radio = self.cfg.wifi.as_ref().is_some_and(|w| w.uplink.is_some());
        let (mut outcomes, visits) = if one_radio {
            // The radio that carries the uplink (and the way to cameras met by URL) is
            // shared: those cameras' passes first, then the rotation over the hotspots.
            let outcomes = futures_util::future::join_all(passes).await;
            (outcomes, visits.await)
        } else {
            tokio::join!(futures_util::future::join_all(passes), visits)
        };
        outcomes.extend(visits);
        // Clips downloaded from cameras that failed mid-pass still get uploaded.
        up.wait_uploads(None).await;
        up.wait_overlaps(None).await;
        stop_uploader.cancel();
        let _ = uploading.await;
        if let Ok(mut g) = self.gave_up.lock() {
            *g = up.gave_up_reason();
        }
        outcomes
    }

    /// Removes the rows in final states older than `[sync] prune_after` (see
    /// `Store::prune`); a failure is logged, and the rows wait for the next time.
    async fn prune(&self) {
        let age = self.cfg.sync.prune_after;
        if age.is_zero() {
            return;
        }
        let cutoff = crate::store::now().saturating_sub(age.as_secs() as i64);
        match self.store.prune(cutoff).await {
            Ok(0) => {}
            Ok(n) => info!("pruned {n} finished clips from the state database"),
            Err(e) => warn!("cannot prune the state database: {e:#}"),
        }
    }

    /// A `--once` run's pass over the camera of `w`, and a few more when another camera
    /// takes its address mid-pass.
    async fn once_over(&self, w: &CameraWorker) -> (String, PassOutcome) {
        let name = w.name().to_string();
        let mut end = w.pass(&Turn::Polled).await;
        // Another camera took the address mid-pass: a pass for it, a few times over.
        for _ in 0..MAX_SWAPS_PER_RUN {
            if !end.swapped || self.stops.shutdown.is_cancelled() {
                break;
            }
            self.events.emit(AgentEvent::PassFinished {
                camera: name.clone(),
                outcome: end.outcome,
            });
            end = w.pass(&Turn::Polled).await;
        }
        self.events.emit(AgentEvent::PassFinished {
            camera: name.clone(),
            outcome: end.outcome.clone(),
        });
        (name, end.outcome)
    }

    /// The daemon: passes over each camera when the schedule says (every `poll_interval`),
    /// and the rotation over the hotspots, until shutdown or a soft stop.
    pub async fn run(self: &Arc<Self>) {
        self.prune().await;
        self.spool.adopt_legacy(&self.store).await;
        quarantine::take_in_all(&self.spool, &self.store).await;
        let (states, radio) = RadioStates::new();
        let up = self.uploader(radio.clone(), Mode::Daemon);
        let stop_uploader = self.stops.shutdown.child_token();
        let uploading = tokio::spawn(up.clone().run(stop_uploader.clone()));
        let schedule = Schedule::new(self.cfg.sync.poll_interval, self.stops.clone(), radio);
        let workers: Vec<CameraWorker> = self
            .cameras
            .iter()
            .map(|(c, client)| self.worker(c, client, &up))
            .collect();
        let loops = workers.iter().enumerate().map(|(i, w)| w.run(&schedule, i));
        let rotation = self.rotation(states, &up, Mode::Daemon);
        let radio_loop = async {
            if let Some(r) = &rotation {
                r.run().await;
            }
        };
        let pruning = async {
            // Once an hour after the first (at start), until a stop.
            loop {
                tokio::select! {
                    _ = self.stops.shutdown.cancelled() => return,
                    _ = self.stops.soft.cancelled() => return,
                    _ = tokio::time::sleep(PRUNE_EVERY) => self.prune().await,
                }
            }
        };
        tokio::join!(futures_util::future::join_all(loops), radio_loop, pruning);
        up.wait_overlaps(None).await;
        stop_uploader.cancel();
        let _ = uploading.await;
    }
}
