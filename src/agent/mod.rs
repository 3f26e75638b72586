//! The offload agent: the loops that take every selected clip from a camera to the
//! destination exactly once, and delete from the camera only what is verified there.
//!
//! - **Camera passes** (one task per configured camera, when [`schedule`] says a pass is
//!   due): probe `get_device_info`; the camera's identity is its IMEI. Page through the
//!   listing, reconcile each page into the store, mark clips that left the camera as
//!   lost, download queued clips (most severe first, then oldest), wait for their
//!   uploads, then apply retention.
//! - **The uploader** (one task): uploads downloaded clips, resumes interrupted
//!   multipart uploads from the store, verifies each object with HeadObject, and frees
//!   the spool. It does not need the camera, so downloads and uploads overlap.
//!
//! Every step is a state transition in [`crate::store`]; a kill -9 anywhere resumes
//! from the last committed state and the bytes on disk.
//!
//! The rooms: this file holds the [`Agent`] (its parts, construction, `run` and
//! `run_once`, the spool's paths); `events` what it reports; `schedule` when a camera is
//! worked on and when uploads may run; `pass` one pass over a camera and what remains;
//! `listing` reading and reconciling the listing; `identity` which camera answers at the
//! address; `heartbeat` whether the loops progress;
//! `outage` pausing uploads while the destination is down; `spool` leftover spool files;
//! `radio` the depot Wi-Fi rotation over camera hotspots and `visit` one visit to a
//! hotspot; `work` a clip parsed once for the stages; `download`, `upload` and `retention` the three
//! stages; `overlap` a large clip's upload while it downloads.

mod download;
mod events;
pub mod heartbeat;
mod identity;
mod journal;
mod listing;
mod outage;
mod overlap;
mod pass;
mod radio;
mod retention;
mod schedule;
mod spool;
mod upload;
mod visit;
mod work;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use qucam::{CameraClient, ClientOptions};

use crate::config::{CameraConfig, Config};
use crate::store::Store;
use crate::upload::Destination;

pub use events::{AgentEvent, PassOutcome};
pub use outage::DESTINATION_PAUSED_KEY;
use schedule::Schedule;

/// Largest clip size believed (a listing claiming more is refused as implausible).
pub const MAX_CLIP_BYTES: u64 = 64 * 1024 * 1024 * 1024;
/// Most listing entries read in one pass (a camera that pages forever is cut off).
pub const MAX_LISTING: usize = 200_000;

/// The agent: configuration, store, destination and camera clients.
pub struct Agent {
    cfg: Arc<Config>,
    store: Store,
    dest: Arc<Destination>,
    spool: PathBuf,
    cameras: Vec<(CameraConfig, CameraClient)>,
    /// When each camera is worked on and when uploads may run.
    schedule: Schedule,
    shutdown: CancellationToken,
    /// Soft stop (config reload): start no new pass, download or upload; let the ones in
    /// flight finish. See [`Agent::stop_taking_work`].
    soft_stop: CancellationToken,
    /// Woken when a clip becomes ready for upload.
    upload_wake: Arc<Notify>,
    /// Woken when an upload finishes (spool space freed, clips verified).
    upload_done: Arc<Notify>,
    /// Clips the uploader is working on.
    in_flight: Arc<std::sync::Mutex<HashSet<i64>>>,
    /// Clips uploading while they download (id → IMEI), see `overlap`.
    overlapping: overlap::Overlapping,
    /// In a `--once` run: clips whose upload failed in this run (not retried until the
    /// next run, so the pass ends).
    once_failed: Arc<std::sync::Mutex<Option<HashSet<i64>>>>,
    /// Whether uploads are paused because the destination is down (see `outage`).
    outage: std::sync::Mutex<outage::Outage>,
    events: tokio::sync::broadcast::Sender<AgentEvent>,
    /// With `[wifi]`: the index in `cameras` of the hotspot slot (the camera behind
    /// whichever hotspot the radio is on, at `wifi.camera_url`), which the radio rotation
    /// works on instead of a timer (see `radio`).
    hotspot: Option<usize>,
    /// The visit the hotspot slot's pass belongs to: what it may delete, its camera's name.
    visit: std::sync::Mutex<visit::Current>,
    /// With `[wifi]`: the hotspot passwords, learned ones included.
    credentials: Option<Arc<std::sync::Mutex<crate::wifi::credentials::Credentials>>>,
    /// One radio: the IMEIs whose last check in the bucket before a visit was cut short
    /// (its time bound, an outage). Their verified clips do not make a visit urgent: the
    /// radio would only hop back to check them again.
    check_cut_short: std::sync::Mutex<HashSet<String>>,
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

impl Agent {
    /// Opens the store under the config's state dir and builds a client per camera.
    pub fn new(cfg: Config, dest: Destination, shutdown: CancellationToken) -> Result<Agent> {
        let state_dir = cfg.state_dir();
        let store = Store::open(&db_path(&state_dir))?;
        let spool = state_dir.join("spool");
        std::fs::create_dir_all(&spool)
            .with_context(|| format!("cannot create the spool {}", spool.display()))?;
        let mut cameras = Vec::new();
        let hotspot = cfg.wifi.as_ref().map(radio::hotspot_slot);
        let credentials = match &cfg.wifi {
            Some(_) => Some(Arc::new(std::sync::Mutex::new(
                crate::wifi::credentials::Credentials::load(&cfg)?,
            ))),
            None => None,
        };
        // Cameras known only by their hotspot are worked on through the hotspot slot.
        for c in cfg
            .cameras
            .iter()
            .filter(|c| !c.hotspot_only)
            .chain(&hotspot)
        {
            let id = qucam::client_id(&state_dir, c.client_id.as_deref())
                .with_context(|| format!("cannot keep the client id in {}", state_dir.display()))?;
            let mut o = ClientOptions::new(id);
            o.params = c.params;
            o.connect_timeout = c.connect_timeout;
            o.idle_timeout = c.idle_timeout;
            let client =
                CameraClient::new(&c.url, o).map_err(|e| anyhow!("camera {:?}: {e}", c.name))?;
            cameras.push((c.clone(), client));
        }
        let hotspot = hotspot.map(|_| cameras.len() - 1);
        let soft_stop = CancellationToken::new();
        let schedule = Schedule::new(cfg.sync.poll_interval, shutdown.clone(), soft_stop.clone());
        Ok(Agent {
            cfg: Arc::new(cfg),
            store,
            dest: Arc::new(dest),
            spool,
            cameras,
            schedule,
            shutdown,
            soft_stop,
            upload_wake: Arc::new(Notify::new()),
            upload_done: Arc::new(Notify::new()),
            in_flight: Arc::new(std::sync::Mutex::new(HashSet::new())),
            overlapping: overlap::Overlapping::default(),
            once_failed: Arc::new(std::sync::Mutex::new(None)),
            outage: std::sync::Mutex::new(outage::Outage::default()),
            events: tokio::sync::broadcast::channel(1024).0,
            hotspot,
            visit: std::sync::Mutex::new(visit::Current::default()),
            credentials,
            check_cut_short: std::sync::Mutex::new(HashSet::new()),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Events as the agent works (see [`AgentEvent`]).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<AgentEvent> {
        self.events.subscribe()
    }

    fn emit(&self, e: AgentEvent) {
        // No subscriber is fine.
        let _ = self.events.send(e);
    }

    /// Soft stop, for a config reload: no new pass, download or upload starts; passes,
    /// downloads and uploads in flight finish (unlike the shutdown token, which cuts them
    /// short), then [`Agent::run`] returns. Leftover work stays in the store for the next
    /// agent.
    pub fn stop_taking_work(&self) {
        self.soft_stop.cancel();
    }

    /// The configuration the agent runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// One pass over every configured camera, then stop. Returns each camera's outcome.
    pub async fn run_once(self: &Arc<Self>) -> Vec<(String, PassOutcome)> {
        if let Ok(mut f) = self.once_failed.lock() {
            *f = Some(HashSet::new());
        }
        self.adopt_legacy_spool().await;
        let stop_uploader = CancellationToken::new();
        let uploader = {
            let me = self.clone();
            let stop = stop_uploader.clone();
            tokio::spawn(async move { me.upload_loop(stop).await })
        };
        let timed = self
            .cameras
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != self.hotspot);
        let passes = timed.map(|(i, (c, _))| {
            let me = self.clone();
            let name = c.name.clone();
            async move {
                let mut outcome = me.pass(i).await;
                // Another camera took the address mid-pass: a pass for it, a few times over.
                for _ in 0..MAX_SWAPS_PER_RUN {
                    if !me.schedule.take_again(i) || me.shutdown.is_cancelled() {
                        break;
                    }
                    me.emit(AgentEvent::PassFinished {
                        camera: name.clone(),
                        outcome,
                    });
                    outcome = me.pass(i).await;
                }
                me.emit(AgentEvent::PassFinished {
                    camera: name.clone(),
                    outcome: outcome.clone(),
                });
                (name, outcome)
            }
        });
        let one_radio = self.cfg.wifi.as_ref().is_some_and(|w| w.uplink.is_some());
        let (mut outcomes, visits) = if one_radio {
            // The radio that carries the uplink (and the way to cameras met by URL) is
            // shared: those cameras' passes first, then the rotation over the hotspots.
            let outcomes = futures_util::future::join_all(passes).await;
            (outcomes, self.radio_once().await)
        } else {
            tokio::join!(futures_util::future::join_all(passes), self.radio_once())
        };
        outcomes.extend(visits);
        // Clips downloaded from cameras that failed mid-pass still get uploaded.
        self.wait_uploads(None).await;
        self.wait_overlaps(None).await;
        stop_uploader.cancel();
        let _ = uploader.await;
        outcomes
    }

    /// The daemon: passes over each camera when the schedule says (every `poll_interval`)
    /// until shutdown.
    pub async fn run(self: &Arc<Self>) {
        self.adopt_legacy_spool().await;
        let stop_uploader = self.shutdown.child_token();
        let uploader = {
            let me = self.clone();
            let stop = stop_uploader.clone();
            tokio::spawn(async move { me.upload_loop(stop).await })
        };
        let timed = (0..self.cameras.len()).filter(|i| Some(*i) != self.hotspot);
        let loops = timed.map(|i| {
            let me = self.clone();
            async move { me.camera_loop(i).await }
        });
        tokio::join!(futures_util::future::join_all(loops), self.radio_loop());
        self.wait_overlaps(None).await;
        stop_uploader.cancel();
        let _ = uploader.await;
    }

    /// Which clips camera `i`'s pass may delete (the hotspot slot's is set per visit).
    fn delete_gate(&self, i: usize) -> retention::DeleteGate {
        if Some(i) == self.hotspot {
            return self
                .visit
                .lock()
                .map(|v| v.gate.clone())
                .unwrap_or(retention::DeleteGate::Closed);
        }
        retention::DeleteGate::Open
    }

    /// Camera `i`'s name: its config name, or for the hotspot slot the visited camera's
    /// (its `[[camera]]` name, else its SSID).
    fn camera_name(&self, i: usize) -> String {
        if Some(i) == self.hotspot
            && let Ok(v) = self.visit.lock()
            && let Some(n) = &v.name
        {
            return n.clone();
        }
        self.cameras[i].0.name.clone()
    }

    // ---- the spool -----------------------------------------------------------------------

    fn camera_dir(&self, imei: &str) -> PathBuf {
        self.spool.join(imei)
    }

    /// Where clip `c` is downloaded to (see [`work::spool_name`]).
    fn part_path(&self, c: &crate::store::Clip) -> PathBuf {
        let name = work::spool_name(c);
        self.camera_dir(&c.imei).join(format!("{name}.part"))
    }

    /// Where clip `c` waits for its upload once downloaded.
    fn file_path(&self, c: &crate::store::Clip) -> PathBuf {
        self.camera_dir(&c.imei).join(work::spool_name(c))
    }
}
