//! The offload agent: the loops that take every selected clip from a camera to the
//! destination exactly once, and delete from the camera only what is verified there.
//!
//! - **Camera passes** (one task per configured camera): probe `get_device_info`; the
//!   camera's identity is its IMEI. Page through the listing, reconcile each page into
//!   the store, mark clips that left the camera as lost, download queued clips (most
//!   severe first, then oldest), wait for their uploads, then apply retention.
//! - **The uploader** (one task): uploads downloaded clips, resumes interrupted
//!   multipart uploads from the store, verifies each object with HeadObject, and frees
//!   the spool. It does not need the camera, so downloads and uploads overlap.
//!
//! Every step is a state transition in [`crate::store`]; a kill -9 anywhere resumes
//! from the last committed state and the bytes on disk.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use qucam::{CameraClient, CameraError, ClientOptions, ClipName, FileEntry, ListQuery};

use crate::config::{CameraConfig, ClipSelection, Config, DeletePolicy};
use crate::download::{self, DownloadError};
use crate::key;
use crate::store::{self, CameraRow, Clip, ClipState, Listed, Stage, Store, Verified};
use crate::upload::{
    Destination, DonePart, MultipartProgress, ObjectMeta, UploadError, UploadJournal,
    UploadOutcome, Verification,
};

/// Largest clip size believed (a listing claiming more is refused as implausible).
pub const MAX_CLIP_BYTES: u64 = 64 * 1024 * 1024 * 1024;
/// Most listing entries read in one pass (a camera that pages forever is cut off).
pub const MAX_LISTING: usize = 200_000;
/// Paths deleted per `delete_file` request.
const DELETE_BATCH: usize = 25;

/// What the agent reports as it works, for metrics, notifications and the service
/// manager. Subscribe with [`Agent::subscribe`]; a slow subscriber misses events, it
/// never slows the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    CameraAppeared {
        camera: String,
        imei: String,
    },
    CameraGone {
        camera: String,
        imei: String,
    },
    /// A pass over a camera ended.
    PassFinished {
        camera: String,
        outcome: PassOutcome,
    },
    Downloaded {
        imei: String,
        clip: String,
        bytes: u64,
        secs: f64,
    },
    /// Uploaded (or found already there) and verified in the destination.
    Offloaded {
        imei: String,
        device_name: String,
        clip: String,
        key: String,
        event_code: String,
        size: u64,
        sha256: String,
        /// Bytes actually sent (0 when the object was already there).
        sent: u64,
        secs: f64,
    },
    Failed {
        imei: String,
        clip: String,
        stage: &'static str,
        error: String,
    },
    Lost {
        imei: String,
        clip: String,
    },
    DeletedFromCamera {
        imei: String,
        clip: String,
    },
}

/// How one camera's pass ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassOutcome {
    /// Not reachable.
    Away,
    /// Reachable; `remaining` clips still need work (0 = fully processed).
    Done { imei: String, remaining: usize },
    /// Reachable but the pass failed (bad listing, camera lost mid-pass, ...).
    Failed { imei: Option<String>, error: String },
}

/// The agent: configuration, store, destination and camera clients.
pub struct Agent {
    cfg: Arc<Config>,
    store: Store,
    dest: Arc<Destination>,
    spool: PathBuf,
    cameras: Vec<(CameraConfig, CameraClient)>,
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
    /// In a `--once` run: clips whose upload failed in this run (not retried until the
    /// next run, so the pass ends).
    once_failed: Arc<std::sync::Mutex<Option<HashSet<i64>>>>,
    events: tokio::sync::broadcast::Sender<AgentEvent>,
}

/// The state database file inside the state dir.
pub fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join("state.db")
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
        for c in &cfg.cameras {
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
        Ok(Agent {
            cfg: Arc::new(cfg),
            store,
            dest: Arc::new(dest),
            spool,
            cameras,
            shutdown,
            soft_stop: CancellationToken::new(),
            upload_wake: Arc::new(Notify::new()),
            upload_done: Arc::new(Notify::new()),
            in_flight: Arc::new(std::sync::Mutex::new(HashSet::new())),
            once_failed: Arc::new(std::sync::Mutex::new(None)),
            events: tokio::sync::broadcast::channel(1024).0,
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
        let stop_uploader = CancellationToken::new();
        let uploader = {
            let me = self.clone();
            let stop = stop_uploader.clone();
            tokio::spawn(async move { me.upload_loop(stop).await })
        };
        let passes = self.cameras.iter().enumerate().map(|(i, (c, _))| {
            let me = self.clone();
            let name = c.name.clone();
            async move {
                let outcome = me.pass(i).await;
                me.emit(AgentEvent::PassFinished {
                    camera: name.clone(),
                    outcome: outcome.clone(),
                });
                (name, outcome)
            }
        });
        let outcomes: Vec<(String, PassOutcome)> = futures_util::future::join_all(passes).await;
        // Clips downloaded from cameras that failed mid-pass still get uploaded.
        self.wait_uploads(None).await;
        stop_uploader.cancel();
        let _ = uploader.await;
        outcomes
    }

    /// The daemon: passes over each camera every `poll_interval` until shutdown.
    pub async fn run(self: &Arc<Self>) {
        let stop_uploader = self.shutdown.child_token();
        let uploader = {
            let me = self.clone();
            let stop = stop_uploader.clone();
            tokio::spawn(async move { me.upload_loop(stop).await })
        };
        let loops = (0..self.cameras.len()).map(|i| {
            let me = self.clone();
            async move { me.camera_loop(i).await }
        });
        futures_util::future::join_all(loops).await;
        stop_uploader.cancel();
        let _ = uploader.await;
    }

    async fn camera_loop(self: Arc<Self>, i: usize) {
        let name = self.cameras[i].0.name.clone();
        let mut present: Option<String> = None;
        while !self.shutdown.is_cancelled() && !self.soft_stop.is_cancelled() {
            let outcome = self.pass(i).await;
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
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = self.soft_stop.cancelled() => break,
                _ = tokio::time::sleep(self.cfg.sync.poll_interval) => {}
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
            config_name: Some(cam.name.clone()),
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
        match self.pass_inner(client, &imei).await {
            Ok(remaining) => PassOutcome::Done { imei, remaining },
            Err(e) => PassOutcome::Failed {
                imei: Some(imei),
                error: format!("{e:#}"),
            },
        }
    }

    async fn pass_inner(self: &Arc<Self>, client: &CameraClient, imei: &str) -> Result<usize> {
        self.list_and_reconcile(client, imei).await?;
        let dl = self.download_all(client, imei).await;
        self.wait_uploads(Some(imei)).await;
        dl?;
        if !self.shutdown.is_cancelled() {
            self.apply_retention(client, imei).await?;
        }
        self.remaining(imei).await
    }

    /// Clips of `imei` that still need work (not yet verified and settled).
    pub async fn remaining(&self, imei: &str) -> Result<usize> {
        let clips = self.store.clips_of(imei).await?;
        let policy = self.cfg.retention.delete_from_camera;
        Ok(clips
            .iter()
            .filter(|c| {
                c.state.is_still_to_do()
                    // Verified clips wait for their delete from the camera.
                    || (c.state == ClipState::Verified && policy == DeletePolicy::AfterUpload)
            })
            .count())
    }

    // ---- listing -----------------------------------------------------------------------

    fn classify(&self, e: &FileEntry) -> Listed {
        let sync = &self.cfg.sync;
        let mut l = Listed {
            path: qucam::excerpt_long(&e.path),
            name: qucam::excerpt(&e.name),
            size: e.size.unwrap_or(0).max(0) as u64,
            event: String::new(),
            camera: 0,
            recorded_at: String::new(),
            priority: 99,
            skip: None,
            refuse: None,
            too_recent: false,
        };
        let recent_ms = sync.stable_after.as_millis() as i64;
        if recent_ms > 0 {
            let now_ms = store::now() * 1000;
            l.too_recent = e.date_ms.is_none_or(|d| d > now_ms - recent_ms);
        }
        let name = match ClipName::parse(&e.name) {
            Ok(n) => n,
            Err(err) => {
                l.refuse = Some(err.to_string());
                return l;
            }
        };
        if let Err(err) = qucam::check_camera_path(&e.path, &name) {
            l.refuse = Some(err.to_string());
            return l;
        }
        l.event = name.event_code().to_string();
        l.camera = name.camera() as i64;
        l.recorded_at = name.recorded().format("%Y-%m-%d %H:%M:%S").to_string();
        l.priority = qucam::event_priority(name.event_code());
        match e.size {
            None => l.refuse = Some("listing gives no size".into()),
            Some(s) if s < 0 => l.refuse = Some(format!("listing gives a negative size ({s})")),
            Some(s) if s as u64 > MAX_CLIP_BYTES => {
                l.refuse = Some(format!("listing gives an implausible size ({s} bytes)"))
            }
            _ => {}
        }
        if e.is_directory {
            l.refuse = Some("listed as a directory".into());
        }
        if l.refuse.is_some() {
            return l;
        }
        let code = format!("_{}_", name.event_code());
        if sync.clips == ClipSelection::Events && !name.is_event() {
            l.skip = Some("loop recording (sync.clips = \"events\")".into());
        } else if !sync.event_types.is_empty()
            && !sync
                .event_types
                .iter()
                .any(|t| t.eq_ignore_ascii_case(&code))
        {
            l.skip = Some(format!("event {code} not in sync.event_types"));
        } else if (sync.camera_type == "_1." && name.camera() != 1)
            || (sync.camera_type == "_2." && name.camera() != 2)
        {
            l.skip = Some(format!(
                "camera not selected by sync.camera_type {:?}",
                sync.camera_type
            ));
        }
        l
    }

    async fn list_page(
        &self,
        client: &CameraClient,
        offset: u32,
    ) -> Result<Vec<FileEntry>, CameraError> {
        let q = ListQuery {
            count: Some(self.cfg.sync.page_size),
            offset: Some(offset),
            ..Default::default()
        };
        (|| async { client.list_files(&q).await })
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_times(8)
                    .with_jitter(),
            )
            .when(|e: &CameraError| matches!(e, CameraError::Busy))
            .await
    }

    /// Pages through the whole listing, reconciling each page; then re-reads the head
    /// until a page brings nothing new (clips recorded while paging shift offsets).
    async fn list_and_reconcile(&self, client: &CameraClient, imei: &str) -> Result<()> {
        let page_size = self.cfg.sync.page_size as usize;
        let mut seen: HashSet<String> = HashSet::new();
        // The two latest recording times seen per camera channel: a clip with two newer
        // clips on its channel has finished recording.
        let mut latest: HashMap<i64, Latest> = HashMap::new();
        let mut total = 0usize;
        let mut lost_total = 0usize;
        for round in 0..2 {
            let mut offset = 0u32;
            loop {
                if self.shutdown.is_cancelled() {
                    return Err(anyhow!("shutting down"));
                }
                let page = self
                    .list_page(client, offset)
                    .await
                    .with_context(|| format!("listing at offset {offset}"))?;
                let n = page.len();
                let mut fresh = 0;
                let mut listed = Vec::with_capacity(n);
                for e in &page {
                    if seen.insert(e.path.clone()) {
                        fresh += 1;
                    }
                    let l = self.classify(e);
                    if l.refuse.is_none() {
                        latest.entry(l.camera).or_default().add(&l.recorded_at);
                    }
                    listed.push(l);
                }
                let finished: HashSet<String> = listed
                    .iter()
                    .filter(|l| {
                        l.refuse.is_none()
                            && latest
                                .get(&l.camera)
                                .is_some_and(|t| t.two_newer_than(&l.recorded_at))
                    })
                    .map(|l| l.path.clone())
                    .collect();
                let mut dedup = HashSet::new();
                listed.retain(|l| dedup.insert(l.path.clone()));
                self.store.reconcile_page(imei, listed, finished).await?;
                total += n;
                if total > MAX_LISTING {
                    return Err(anyhow!(
                        "listing has more than {MAX_LISTING} entries: giving up"
                    ));
                }
                // A short page ends the listing; so does a camera that ignores `count`
                // (firmware before V2.1 sends everything at once) or repeats itself.
                if n != page_size || fresh == 0 {
                    break;
                }
                offset += n as u32;
            }
            if round == 0 {
                for c in self.store.mark_missing(imei, seen.clone()).await? {
                    let _ = std::fs::remove_file(self.part_path(imei, &c.name));
                }
                // Every lost clip not yet looked for in the bucket, including those a kill or
                // an unreachable bucket left unchecked in an earlier pass.
                for c in self.store.lost_unchecked(imei).await? {
                    let Some(found) = self.in_bucket(&c).await else {
                        continue; // checked again next pass
                    };
                    if found {
                        let moved = self.store.found_elsewhere(c.id).await?;
                        if moved {
                            info!(imei = %imei, clip = %c.name, "clip left the camera; another agent had offloaded it (its object is in the bucket)");
                        }
                        continue;
                    }
                    if self.store.lost_confirmed(c.id).await? {
                        warn!(imei = %imei, clip = %c.name, "clip lost: it left the camera before it was offloaded");
                        self.emit(AgentEvent::Lost {
                            imei: imei.to_string(),
                            clip: c.name.clone(),
                        });
                        lost_total += 1;
                    }
                }
            }
        }
        debug!(imei = %imei, clips = seen.len(), lost = lost_total, "listing reconciled");
        Ok(())
    }

    // ---- download ----------------------------------------------------------------------

    fn camera_dir(&self, imei: &str) -> PathBuf {
        self.spool.join(imei)
    }

    fn part_path(&self, imei: &str, name: &str) -> PathBuf {
        self.camera_dir(imei).join(format!("{name}.part"))
    }

    fn file_path(&self, imei: &str, name: &str) -> PathBuf {
        self.camera_dir(imei).join(name)
    }

    /// Whether the spool may take another download (cap and free-disk floor).
    async fn spool_has_room(&self) -> Result<bool> {
        let cap = self.cfg.spool.max_bytes;
        if cap > 0 && self.store.spool_bytes().await? >= cap {
            return Ok(false);
        }
        let floor = self.cfg.spool.min_free_bytes;
        if floor > 0
            && let Ok(free) = fs4::available_space(&self.spool)
            && free < floor
        {
            return Ok(false);
        }
        Ok(true)
    }

    /// Downloads every queued clip of `imei`, `download_concurrency` at a time.
    async fn download_all(self: &Arc<Self>, client: &CameraClient, imei: &str) -> Result<()> {
        let conc = self.cfg.sync.download_concurrency;
        let mut tried: HashSet<i64> = HashSet::new();
        let mut running = FuturesUnordered::new();
        let mut camera_gone: Option<String> = None;
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            if running.len() < conc && camera_gone.is_none() && !self.soft_stop.is_cancelled() {
                let next = self
                    .store
                    .next_downloads(imei, conc * 2 + tried.len())
                    .await?;
                let next: Vec<Clip> = next
                    .into_iter()
                    .filter(|c| !tried.contains(&c.id))
                    .collect();
                if let Some(c) = next.into_iter().next() {
                    if !self.spool_has_room().await? {
                        if running.is_empty() && !self.uploads_pending().await? {
                            let msg = "downloads paused: the spool is full (spool.max_bytes or spool.min_free_bytes); they resume when uploads free space";
                            warn!(imei = %imei, "{msg}");
                            self.store
                                .set_notice(pause_key(imei), Some(msg.into()))
                                .await?;
                            break;
                        }
                        tokio::select! {
                            _ = self.upload_done.notified() => {}
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            Some(r) = running.next(), if !running.is_empty() => {
                                if let Err(e) = r { camera_gone = Some(e); }
                            }
                        }
                        continue;
                    }
                    tried.insert(c.id);
                    let me = self.clone();
                    let client = client.clone();
                    running.push(async move { me.download_one(&client, c).await });
                    continue;
                }
            }
            if running.is_empty() {
                break;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                Some(r) = running.next() => {
                    if let Err(e) = r {
                        camera_gone = Some(e);
                    }
                }
            }
        }
        match camera_gone {
            Some(e) if e.starts_with(DISK_FULL) => Err(anyhow!("{e}")),
            Some(e) => Err(anyhow!("camera lost during downloads: {e}")),
            None => Ok(()),
        }
    }

    /// Downloads one clip. `Err` only when the camera is gone (the pass should end);
    /// every other failure is recorded on the clip.
    async fn download_one(self: &Arc<Self>, client: &CameraClient, c: Clip) -> Result<(), String> {
        let name = match ClipName::parse(&c.name)
            .and_then(|n| qucam::check_camera_path(&c.path, &n).map(|_| n))
            .and_then(|n| qucam::check_imei(&c.imei).map(|_| n))
        {
            Ok(n) => n,
            Err(e) => {
                self.applied(self.store.refuse(c.id, e.to_string()).await, "refuse", &c);
                return Ok(());
            }
        };
        let moved = self.store.start_download(c.id).await;
        if !self.applied(moved, "start download", &c) {
            return Ok(());
        }
        let dir = self.camera_dir(&c.imei);
        if let Err(e) = tokio::fs::create_dir_all(&dir).await {
            let why = format!("cannot create {}: {e}", dir.display());
            let r = self
                .store
                .failed(c.id, Stage::Download, why, self.retry_secs(&c))
                .await;
            self.applied(r, "mark failed", &c);
            return Ok(());
        }
        let part = self.part_path(&c.imei, name.as_str());
        let fin = self.file_path(&c.imei, name.as_str());
        // A kill between rename and the state update leaves the whole file in place.
        if tokio::fs::metadata(&fin)
            .await
            .is_ok_and(|m| m.len() == c.size)
        {
            let f2 = fin.clone();
            if let Ok(Ok(sha)) =
                tokio::task::spawn_blocking(move || download::sha256_file(&f2)).await
            {
                self.applied(
                    self.store.downloaded(c.id, sha).await,
                    "mark downloaded",
                    &c,
                );
                self.upload_wake.notify_one();
                return Ok(());
            }
        }
        let started = Instant::now();
        let received = Arc::new(AtomicU64::new(0));
        let last = Arc::new(AtomicU64::new(u64::MAX));
        let progress = {
            let received = received.clone();
            let last = last.clone();
            move |done: u64, _total: Option<u64>| {
                let prev = last.swap(done, Ordering::Relaxed);
                if prev == u64::MAX {
                    return;
                }
                let add = if done >= prev { done - prev } else { done };
                received.fetch_add(add, Ordering::Relaxed);
            }
        };
        let attempt = || async {
            last.store(u64::MAX, Ordering::Relaxed);
            download::fetch(client, &c.path, &part, Some(c.size), &progress).await
        };
        let result = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(300))
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_times(4)
                    .with_jitter(),
            )
            .when(|e: &DownloadError| e.is_transient())
            .notify(|e, d| debug!(clip = %c.name, "download retry in {d:?}: {e}"))
            .await;
        let got = received.load(Ordering::Relaxed);
        self.record(self.store.add_received(c.id, got).await, "count bytes", &c);
        match result {
            Ok(f) => {
                if let Err(e) = finish_file(&part, &fin).await {
                    let r = self
                        .store
                        .failed(c.id, Stage::Download, e, self.retry_secs(&c))
                        .await;
                    self.applied(r, "mark failed", &c);
                    return Ok(());
                }
                let r = self.store.downloaded(c.id, f.sha256_hex).await;
                if !self.applied(r, "mark downloaded", &c) {
                    return Ok(());
                }
                let r = self.store.set_notice(pause_key(&c.imei), None).await;
                self.record(r, "clear the pause notice", &c);
                let secs = started.elapsed().as_secs_f64().max(0.001);
                info!(
                    imei = %c.imei, clip = %c.name, size = f.size, resumed_from = f.resumed_from,
                    "downloaded in {secs:.1}s ({:.1} MB/s)", f.received as f64 / secs / 1e6
                );
                self.emit(AgentEvent::Downloaded {
                    imei: c.imei.clone(),
                    clip: c.name.clone(),
                    bytes: f.received,
                    secs,
                });
                self.upload_wake.notify_one();
                Ok(())
            }
            Err(e) => {
                if matches!(
                    e,
                    DownloadError::TooLong { .. } | DownloadError::SizeMismatch { .. }
                ) {
                    // What is on disk cannot be trusted as a prefix of the clip.
                    let _ = tokio::fs::remove_file(&part).await;
                }
                if let DownloadError::Io { source, .. } = &e
                    && is_disk_full(source)
                {
                    // Not the clip's fault either: pause downloads, keep the partial file.
                    let msg = format!("{DISK_FULL}: {e}; downloads paused until space returns");
                    warn!(imei = %c.imei, clip = %c.name, "{msg}");
                    let r = self
                        .store
                        .set_notice(pause_key(&c.imei), Some(msg.clone()))
                        .await;
                    self.record(r, "set the pause notice", &c);
                    return Err(msg);
                }
                let gone = matches!(&e, DownloadError::Camera(ce) if ce.is_unreachable());
                let msg = e.to_string();
                if gone {
                    // Not the clip's fault: it stays `downloading` and resumes next time.
                    return Err(msg);
                }
                warn!(imei = %c.imei, clip = %c.name, "download failed: {msg}");
                self.emit(AgentEvent::Failed {
                    imei: c.imei.clone(),
                    clip: c.name.clone(),
                    stage: Stage::Download.as_str(),
                    error: msg.clone(),
                });
                let r = self
                    .store
                    .failed(c.id, Stage::Download, msg, self.retry_secs(&c))
                    .await;
                self.applied(r, "mark failed", &c);
                Ok(())
            }
        }
    }

    /// Seconds a failed clip waits: short for the first attempts, then the quiet period.
    fn retry_secs(&self, c: &Clip) -> i64 {
        let quiet = self.cfg.sync.retry_after.as_secs() as i64;
        if (c.attempts + 1) < self.cfg.sync.max_attempts as i64 {
            (5i64 << c.attempts.clamp(0, 10)).min(quiet)
        } else {
            quiet
        }
    }

    /// A store write's result: logged when it failed (a later pass repeats the work; the
    /// agent carries on).
    fn record<T>(&self, r: Result<T>, what: &str, c: &Clip) -> Option<T> {
        r.inspect_err(
            |e| warn!(imei = %c.imei, clip = %c.name, "state database: {what} failed: {e:#}"),
        )
        .ok()
    }

    /// A transition's result: whether it applied. Logged when it failed, and (at debug) when
    /// its guard refused it because the clip is in another state.
    fn applied(&self, r: Result<bool>, what: &str, c: &Clip) -> bool {
        let done = self.record(r, what, c);
        if done == Some(false) {
            debug!(imei = %c.imei, clip = %c.name, "{what}: not applied (the clip is in another state)");
        }
        done == Some(true)
    }

    // ---- upload ------------------------------------------------------------------------

    /// Whether the uploader has work it will still do in this run (in flight, or due).
    async fn uploads_pending(&self) -> Result<bool> {
        let flying = self
            .in_flight
            .lock()
            .map(|s| !s.is_empty())
            .unwrap_or(false);
        Ok(flying
            || !self
                .store
                .next_uploads(self.in_flight_ids(), 1)
                .await?
                .is_empty())
    }

    /// Clips the uploader must not pick now: in flight, or failed in this `--once` run.
    fn in_flight_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .in_flight
            .lock()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        if let Ok(Some(f)) = self.once_failed.lock().as_deref() {
            ids.extend(f.iter().copied());
        }
        ids
    }

    fn upload_gave_up(&self, id: i64) {
        if let Ok(mut f) = self.once_failed.lock()
            && let Some(set) = f.as_mut()
        {
            set.insert(id);
        }
    }

    /// Waits until no clip (of `imei`, or of any camera) waits for the uploader.
    async fn wait_uploads(&self, imei: Option<&str>) {
        loop {
            if self.shutdown.is_cancelled() || self.soft_stop.is_cancelled() {
                return;
            }
            let given_up: Vec<i64> = match self.once_failed.lock().as_deref() {
                Ok(Some(f)) => f.iter().copied().collect(),
                _ => Vec::new(),
            };
            let pending = match self.store.next_uploads(given_up, usize::MAX).await {
                Ok(p) => p,
                Err(_) => return,
            };
            // Clips in flight are still in an upload state, so they show up in `pending`.
            if !pending.iter().any(|c| imei.is_none_or(|i| c.imei == i)) {
                return;
            }
            tokio::select! {
                _ = self.upload_done.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = self.shutdown.cancelled() => return,
                _ = self.soft_stop.cancelled() => return,
            }
        }
    }

    /// Uploads clips as they become ready until `stop`.
    async fn upload_loop(self: Arc<Self>, stop: CancellationToken) {
        let conc = self.cfg.sync.upload_concurrency;
        let mut running = FuturesUnordered::new();
        loop {
            if stop.is_cancelled() || self.shutdown.is_cancelled() || self.soft_stop.is_cancelled()
            {
                break;
            }
            if running.len() < conc {
                let next = self
                    .store
                    .next_uploads(self.in_flight_ids(), conc - running.len())
                    .await
                    .unwrap_or_default();
                if !next.is_empty() {
                    for c in next {
                        if let Ok(mut s) = self.in_flight.lock() {
                            s.insert(c.id);
                        }
                        let me = self.clone();
                        running.push(async move {
                            let id = c.id;
                            me.upload_one(c).await;
                            id
                        });
                    }
                    continue;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.shutdown.cancelled() => break,
                _ = self.soft_stop.cancelled() => break,
                _ = self.upload_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                Some(id) = running.next(), if !running.is_empty() => {
                    if let Ok(mut s) = self.in_flight.lock() {
                        s.remove(&id);
                    }
                    self.upload_done.notify_waiters();
                }
            }
        }
        // Let in-flight uploads record their progress for a moment, then drop them:
        // finished parts are in the store and the upload resumes next time.
        let drain = async {
            while let Some(id) = running.next().await {
                if let Ok(mut s) = self.in_flight.lock() {
                    s.remove(&id);
                }
            }
        };
        tokio::pin!(drain);
        // Without a shutdown (end of a pass, soft stop) uploads in flight may finish; a
        // shutdown, even one arriving meanwhile, leaves them 2 s.
        let drained = !self.shutdown.is_cancelled()
            && tokio::time::timeout(Duration::from_secs(3600), async {
                tokio::select! {
                    _ = &mut drain => true,
                    _ = self.shutdown.cancelled() => false,
                }
            })
            .await
            .unwrap_or(false);
        if !drained {
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut drain).await;
        }
        self.upload_done.notify_waiters();
    }

    fn object_meta(&self, c: &Clip, name: &ClipName, device_name: &str, sha: &str) -> ObjectMeta {
        ObjectMeta {
            imei: c.imei.clone(),
            device_name: device_name.to_string(),
            camera_path: c.path.clone(),
            event_code: name.event_code().to_string(),
            event_name: qucam::event_name(name.event_code()).to_string(),
            camera: name.camera_label().to_string(),
            recorded_at: name.recorded().format("%Y-%m-%dT%H:%M:%S").to_string(),
            sha256_hex: sha.to_string(),
        }
    }

    /// For a clip that left the camera before this agent offloaded it: whether its object is
    /// in the bucket under its key with the listed size (another agent offloaded it).
    /// `None` when the bucket could not be asked.
    async fn in_bucket(&self, c: &Clip) -> Option<bool> {
        let Ok(name) = ClipName::parse(&c.name) else {
            return Some(false);
        };
        let Ok(key) = key::object_key(self.cfg.prefix(), &c.imei, &name) else {
            return Some(false);
        };
        match self.dest.holds(&key, c.size).await {
            Ok(found) => Some(found),
            Err(e) => {
                debug!(imei = %c.imei, clip = %c.name, error = %e, "bucket check for a lost clip failed; trying again next pass");
                None
            }
        }
    }

    /// Uploads (or resumes), then verifies one clip; records the outcome.
    async fn upload_one(self: &Arc<Self>, c: Clip) {
        let started = Instant::now();
        let name = match ClipName::parse(&c.name) {
            Ok(n) => n,
            Err(e) => {
                self.applied(self.store.refuse(c.id, e.to_string()).await, "refuse", &c);
                return;
            }
        };
        let key = match key::object_key(self.cfg.prefix(), &c.imei, &name) {
            Ok(k) => k,
            Err(e) => {
                self.applied(self.store.refuse(c.id, e.to_string()).await, "refuse", &c);
                return;
            }
        };
        let Some(sha) = c.sha256.clone() else {
            // Downloaded without a hash cannot happen; download again to be safe.
            let r = self.store.requeue_for_download(c.id).await;
            self.applied(r, "requeue for download", &c);
            return;
        };
        let file = self.file_path(&c.imei, name.as_str());
        let uploaded_before = c.state == ClipState::Uploaded;
        let device_name = self
            .store
            .cameras()
            .await
            .ok()
            .and_then(|cs| cs.into_iter().find(|r| r.imei == c.imei))
            .and_then(|r| r.device_name)
            .unwrap_or_default();
        let mut sent = false;
        if !uploaded_before {
            if tokio::fs::metadata(&file).await.is_err() {
                warn!(clip = %c.name, "spool file missing: downloading it again");
                let r = self.store.requeue_for_download(c.id).await;
                self.applied(r, "requeue for download", &c);
                return;
            }
            let moved = self.store.start_upload(c.id).await;
            if !self.applied(moved, "start upload", &c) {
                return;
            }
            let meta = self.object_meta(&c, &name, &device_name, &sha);
            let journal = StoreJournal {
                store: self.store.clone(),
                id: c.id,
            };
            let result =
                (|| async { self.dest.upload(&file, &key, c.size, &meta, &journal).await })
                    .retry(upload_backoff())
                    .when(|e: &UploadError| e.is_transient())
                    .notify(|e, d| debug!(clip = %c.name, "upload retry in {d:?}: {e}"))
                    .await;
            match result {
                Ok(outcome) => {
                    let etag = match outcome {
                        UploadOutcome::Uploaded { etag } => {
                            sent = true;
                            Some(etag)
                        }
                        UploadOutcome::AlreadyPresent => None,
                    };
                    let r = self.store.uploaded(c.id, key.clone(), etag).await;
                    if !self.applied(r, "mark uploaded", &c) {
                        return;
                    }
                }
                Err(e) => {
                    let transient = e.is_transient();
                    if !transient && let Some(id) = c.upload_id.as_deref() {
                        let _ = self.dest.abort_multipart(&key, id).await;
                        let r = self.store.clear_multipart(c.id).await;
                        self.record(r, "forget the multipart upload", &c);
                    }
                    warn!(imei = %c.imei, clip = %c.name, "upload failed: {e}");
                    self.emit(AgentEvent::Failed {
                        imei: c.imei.clone(),
                        clip: c.name.clone(),
                        stage: Stage::Upload.as_str(),
                        error: e.to_string(),
                    });
                    self.upload_gave_up(c.id);
                    let r = self
                        .store
                        .failed(c.id, Stage::Upload, e.to_string(), self.retry_secs(&c))
                        .await;
                    self.applied(r, "mark failed", &c);
                    return;
                }
            }
        }
        // Verify: only a verified clip may ever be deleted from the camera.
        let verdict = (|| async { self.dest.verify(&key, c.size, &sha).await })
            .retry(upload_backoff())
            .when(|e: &UploadError| e.is_transient())
            .await;
        match verdict {
            Ok(Verification::Verified) => {
                match self.record(self.store.verified(c.id).await, "mark verified", &c) {
                    Some(Verified::StillOnCamera) => {}
                    Some(Verified::LeftCamera) => {
                        debug!(clip = %c.name, "verified; it already left the camera: deleted");
                    }
                    Some(Verified::NotApplied) | None => return,
                }
                if !self.cfg.retention.keep_local {
                    let _ = tokio::fs::remove_file(&file).await;
                }
                let secs = started.elapsed().as_secs_f64().max(0.001);
                info!(
                    imei = %c.imei, clip = %c.name, key = %key, size = c.size,
                    event = qucam::event_name(name.event_code()),
                    "{} and verified in {secs:.1}s ({:.1} MB/s)",
                    if sent { "uploaded" } else { "already in the bucket" },
                    if sent { c.size as f64 / secs / 1e6 } else { 0.0 }
                );
                self.emit(AgentEvent::Offloaded {
                    imei: c.imei.clone(),
                    device_name: device_name.clone(),
                    clip: c.name.clone(),
                    key: key.clone(),
                    event_code: name.event_code().to_string(),
                    size: c.size,
                    sha256: sha.clone(),
                    sent: if sent { c.size } else { 0 },
                    secs,
                });
            }
            Ok(other) => {
                let why = match other {
                    Verification::Missing => "object missing after upload".to_string(),
                    Verification::Mismatch(m) => format!("object does not match: {m}"),
                    Verification::Verified => unreachable!(),
                };
                warn!(imei = %c.imei, clip = %c.name, "verification failed: {why}");
                self.upload_gave_up(c.id);
                // Upload again later; the spool copy is kept until a verification passes.
                let r = self
                    .store
                    .failed(c.id, Stage::Upload, why, self.retry_secs(&c))
                    .await;
                self.applied(r, "mark failed", &c);
            }
            Err(e) => {
                // Stays `uploaded`: verification is retried by the uploader.
                warn!(clip = %c.name, "verification failed: {e}");
                self.upload_gave_up(c.id);
                let r = self.store.verify_postponed(c.id, e.to_string()).await;
                self.applied(r, "postpone verification", &c);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    // ---- retention ---------------------------------------------------------------------

    /// Deletes verified clips from the camera as the policy allows; the rest are retained.
    /// Each object is checked in the bucket again right before its delete.
    async fn apply_retention(&self, client: &CameraClient, imei: &str) -> Result<()> {
        let r = &self.cfg.retention;
        let clips = self.store.deletable(imei).await?;
        if clips.is_empty() {
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
        let mut ok = Vec::new();
        for c in old {
            let (Some(key), Some(sha)) = (c.object_key.clone(), c.sha256.clone()) else {
                continue;
            };
            match self.dest.verify(&key, c.size, &sha).await {
                Ok(Verification::Verified) => ok.push(c),
                Ok(v) => {
                    warn!(clip = %c.name, "not deleting from the camera: the bucket no longer confirms it ({v:?}); offloading it again");
                    self.store.requeue_missing_object(c.id).await?;
                }
                Err(e) => return Err(anyhow!("cannot re-check {key} before deleting: {e}")),
            }
        }
        for batch in ok.chunks(DELETE_BATCH) {
            let paths: Vec<String> = batch.iter().map(|c| c.path.clone()).collect();
            let res = (|| async { client.delete_files(&paths).await })
                .retry(
                    ExponentialBuilder::default()
                        .with_min_delay(Duration::from_millis(300))
                        .with_max_times(4)
                        .with_jitter(),
                )
                .when(|e: &CameraError| e.is_transient())
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
                Err(e) => return Err(anyhow!("deleting from the camera: {e}")),
            }
        }
        Ok(())
    }
}

/// Prefix of the error that ends a pass's downloads when the spool's disk is full.
const DISK_FULL: &str = "local disk full";

/// The notice key for paused downloads of one camera.
pub fn pause_key(imei: &str) -> String {
    format!("downloads-paused:{imei}")
}

fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || e.raw_os_error() == Some(28)
}

fn upload_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(300))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(4)
        .with_jitter()
}

/// The two latest recording times of a camera channel (with repeats).
#[derive(Default)]
struct Latest {
    first: Option<String>,
    second: Option<String>,
}

impl Latest {
    fn add(&mut self, t: &str) {
        if self.first.as_deref().is_none_or(|f| t >= f) {
            self.second = self.first.replace(t.to_string());
        } else if self.second.as_deref().is_none_or(|s| t >= s) {
            self.second = Some(t.to_string());
        }
    }

    /// Whether at least two clips of the channel started strictly after `t`.
    fn two_newer_than(&self, t: &str) -> bool {
        self.second.as_deref().is_some_and(|s| s > t)
    }
}

/// Renames the finished `.part` into place and fsyncs the directory.
async fn finish_file(part: &Path, fin: &Path) -> Result<(), String> {
    tokio::fs::rename(part, fin)
        .await
        .map_err(|e| format!("cannot rename {} into place: {e}", part.display()))?;
    if let Some(dir) = fin.parent() {
        let dir = dir.to_path_buf();
        let _ = tokio::task::spawn_blocking(move || {
            std::fs::File::open(&dir).and_then(|d| d.sync_all())
        })
        .await;
    }
    Ok(())
}

/// The upload journal of one clip, kept in the store (each call runs on the store's
/// blocking pool, never on an async worker).
struct StoreJournal {
    store: Store,
    id: i64,
}

impl UploadJournal for StoreJournal {
    fn multipart(&self) -> BoxFuture<'_, Option<MultipartProgress>> {
        Box::pin(async move {
            let (upload_id, part_size, parts) = match self.store.multipart(self.id).await {
                Ok(mp) => mp?,
                Err(e) => {
                    warn!(
                        clip_id = self.id,
                        "state database: read the multipart upload failed: {e:#}"
                    );
                    return None;
                }
            };
            Some(MultipartProgress {
                upload_id,
                part_size,
                parts: parts
                    .into_iter()
                    .map(|(number, etag, sha256_b64, size)| DonePart {
                        number,
                        etag,
                        sha256_b64,
                        size,
                    })
                    .collect(),
            })
        })
    }

    fn begin_multipart<'a>(
        &'a self,
        upload_id: &'a str,
        part_size: u64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(
            self.store
                .begin_multipart(self.id, upload_id.to_string(), part_size),
        )
    }

    fn part_done<'a>(&'a self, p: &'a DonePart) -> BoxFuture<'a, Result<()>> {
        let row = (p.number, p.etag.clone(), p.sha256_b64.clone(), p.size);
        Box::pin(self.store.part_done(self.id, row))
    }

    fn clear_multipart(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.store.clear_multipart(self.id))
    }
}
