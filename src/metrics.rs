//! Prometheus metrics: `[metrics] listen = "127.0.0.1:9187"` serves `/metrics` (the text
//! exposition format 0.0.4, encoded by `prometheus-client`) and `/healthz`.
//!
//! Two sources:
//! - **the store**, read into a snapshot when the endpoint starts, after the agent's
//!   events (at most once a second) and every [`SNAPSHOT_EVERY`]: clips by state, queue
//!   depth, last verified offload and last sighting per camera (IMEI), whether uploads to
//!   the destination are paused. These survive restarts. A scrape reads the snapshot, never
//!   the database: scrapes cost the agent nothing, however often they come.
//! - **[`AgentEvent`]s**, counted since the process started: bytes downloaded, uploaded
//!   and offloaded, clips offloaded, lost and deleted, failures by stage, the throughput of
//!   the last transfer, and whether each configured camera answered its last probe.
//!
//! The collector is a task fed by the agent's broadcast channel: a scrape never touches
//! the pipeline, and a slow collector misses events rather than slowing the agent (the
//! misses are counted in `qucam_offload_events_missed_total`).
//!
//! The endpoint is bounded ([`ServeLimits`]): a request's head must arrive within
//! 10 s (an idle keep-alive connection is closed as soon), a connection lives at most
//! 60 s (then it is closed after the request in flight), and at most 16 connections are
//! served at once (more are closed on accept): a client that connects and sends nothing,
//! or many of them, cannot pile up tasks and sockets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, Semaphore, broadcast};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::agent::{Agent, AgentEvent, PassOutcome};
use crate::store::{CameraRow, ClipState, HotspotRow, StateCount, Store};

/// The store's snapshot is read again at least this often.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(10);

/// Agent events make the snapshot be read again, but not more often than this.
const SNAPSHOT_MIN_GAP: Duration = Duration::from_secs(1);

/// The store's view, as the last snapshot read it.
#[derive(Debug, Default)]
struct StoreView {
    cams: Vec<CameraRow>,
    /// Clips by state, per camera of `cams`, in its order.
    rows: Vec<Vec<StateCount>>,
    last_verified: BTreeMap<String, i64>,
    not_taken: BTreeMap<String, i64>,
    hotspots: Vec<HotspotRow>,
    paused: bool,
}

/// Counters per IMEI, from events since the process started.
#[derive(Debug, Default, Clone)]
struct PerCamera {
    downloaded_bytes: u64,
    uploaded_bytes: u64,
    offloaded_bytes: u64,
    offloaded_clips: u64,
    lost_clips: u64,
    deleted_clips: u64,
    failures: BTreeMap<&'static str, u64>,
    download_bps: Option<f64>,
    upload_bps: Option<f64>,
}

#[derive(Debug, Default)]
struct Counters {
    per_imei: BTreeMap<String, PerCamera>,
    /// Configured camera name → answered its last probe.
    reachable: BTreeMap<String, bool>,
    events_missed: u64,
}

/// What `/metrics` reports: the event counters and the store's last snapshot.
pub struct Metrics {
    counters: Mutex<Counters>,
    store: Store,
    /// The last snapshot of the store, or why none could be read yet.
    view: Mutex<Result<Arc<StoreView>, String>>,
    /// An event came: the snapshot is read again (see [`SNAPSHOT_MIN_GAP`]).
    stale: Notify,
}

impl Metrics {
    /// Metrics over `store`, with every camera in `cameras` (configured names) unreachable
    /// until its first probe.
    pub fn new(store: Store, cameras: impl IntoIterator<Item = String>) -> Metrics {
        let counters = Counters {
            reachable: cameras.into_iter().map(|c| (c, false)).collect(),
            ..Default::default()
        };
        Metrics {
            counters: Mutex::new(counters),
            store,
            view: Mutex::new(Err("the state database was not read yet".into())),
            stale: Notify::new(),
        }
    }

    /// Reads the store's snapshot that scrapes report. A failure keeps the last snapshot.
    pub async fn refresh(&self) -> Result<()> {
        let view = self.read_store().await?;
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = Ok(Arc::new(view));
        Ok(())
    }

    async fn read_store(&self) -> Result<StoreView> {
        let cams = self.store.cameras().await?;
        let mut rows = Vec::with_capacity(cams.len());
        for cam in &cams {
            rows.push(self.store.counts(&cam.imei).await?);
        }
        let not_taken = self
            .store
            .deletes_not_taken()
            .await?
            .into_iter()
            .map(|(k, v)| (k, i64::try_from(v).unwrap_or(i64::MAX)))
            .collect();
        Ok(StoreView {
            last_verified: self.store.last_verified().await?,
            not_taken,
            hotspots: self.store.hotspots().await?,
            paused: self
                .store
                .notice(crate::agent::DESTINATION_PAUSED_KEY.to_string())
                .await?
                .is_some(),
            cams,
            rows,
        })
    }

    /// Reads the snapshot again every [`SNAPSHOT_EVERY`], and after agent events (at most
    /// once every [`SNAPSHOT_MIN_GAP`]), until `stop`.
    fn spawn_refresher(self: &Arc<Self>, stop: CancellationToken) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(SNAPSHOT_EVERY) => {}
                    _ = me.stale.notified() => {}
                }
                match me.refresh().await {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        warn!(
                            "metrics: cannot read the state database (showing the last snapshot): {e:#}"
                        );
                    }
                    Err(e) => debug!("metrics: cannot read the state database: {e:#}"),
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(SNAPSHOT_MIN_GAP) => {}
                }
            }
        })
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configured cameras changed (a reload): keep what is known of those still there.
    pub fn set_cameras(&self, cameras: impl IntoIterator<Item = String>) {
        let mut c = self.counters();
        let old = std::mem::take(&mut c.reachable);
        c.reachable = cameras
            .into_iter()
            .map(|n| {
                let up = old.get(&n).copied().unwrap_or(false);
                (n, up)
            })
            .collect();
    }

    /// Counts one agent event (and has the store's snapshot read again).
    pub fn record(&self, e: &AgentEvent) {
        self.stale.notify_one();
        let mut c = self.counters();
        match e {
            AgentEvent::CameraAppeared { camera, .. } => {
                c.reachable.insert(camera.clone(), true);
            }
            AgentEvent::CameraGone { camera, .. } => {
                c.reachable.insert(camera.clone(), false);
            }
            AgentEvent::PassFinished { camera, outcome } => {
                let here = !matches!(outcome, PassOutcome::Away);
                c.reachable.insert(camera.clone(), here);
            }
            AgentEvent::Downloaded {
                imei, bytes, secs, ..
            } => {
                let p = c.per_imei.entry(imei.clone()).or_default();
                p.downloaded_bytes += bytes;
                if *secs > 0.0 {
                    p.download_bps = Some(*bytes as f64 / secs);
                }
            }
            AgentEvent::Offloaded {
                imei,
                size,
                sent,
                secs,
                ..
            } => {
                let p = c.per_imei.entry(imei.clone()).or_default();
                p.offloaded_bytes += size;
                p.offloaded_clips += 1;
                p.uploaded_bytes += sent;
                if *sent > 0 && *secs > 0.0 {
                    p.upload_bps = Some(*sent as f64 / secs);
                }
            }
            AgentEvent::Failed { imei, stage, .. } => {
                let p = c.per_imei.entry(imei.clone()).or_default();
                *p.failures.entry(stage).or_default() += 1;
            }
            AgentEvent::Lost { imei, .. } => {
                c.per_imei.entry(imei.clone()).or_default().lost_clips += 1;
            }
            AgentEvent::DeletedFromCamera { imei, .. } => {
                c.per_imei.entry(imei.clone()).or_default().deleted_clips += 1;
            }
        }
    }

    /// Counts events the collector missed (it lagged behind the agent).
    pub fn missed(&self, n: u64) {
        self.counters().events_missed += n;
    }

    /// The Prometheus text exposition of everything: the event counters and the store's
    /// last snapshot ([`Metrics::refresh`]); the store itself is not read.
    pub fn render(&self) -> Result<String> {
        let view = self
            .view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let StoreView {
            cams,
            rows,
            last_verified,
            not_taken,
            hotspots,
            paused,
        } = &*view;
        let mut reg = Registry::default();
        gauge_family(
            &mut reg,
            "qucam_offload_build_info",
            "Version of the running agent.",
        )
        .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
        .set(1);
        register_store(&mut reg, cams, rows, last_verified);
        let family = gauge_family(
            &mut reg,
            "qucam_offload_deletes_not_taken",
            "Clips whose delete the camera acknowledged but did not perform (still listed with the verified size and date); their deletes are tried again later.",
        );
        for cam in cams {
            let labels = vec![
                ("imei", cam.imei.clone()),
                ("camera", cam.config_name.clone().unwrap_or_default()),
            ];
            let n = not_taken.get(&cam.imei).copied().unwrap_or(0);
            family.get_or_create(&labels).set(n);
        }
        register_hotspots(&mut reg, hotspots, cams, rows);
        gauge_family(
            &mut reg,
            "qucam_offload_destination_paused",
            "1 while uploads to the destination are paused (it is down or refuses the agent).",
        )
        .get_or_create(&Vec::new())
        .set(i64::from(*paused));
        self.counters().register(&mut reg);
        let mut s = String::with_capacity(8192);
        prometheus_text::encode(&mut s, &reg).context("cannot encode the metrics")?;
        Ok(s)
    }
}

/// The store's view, from the last snapshot: clips by state, queue depth, last offload and last
/// sighting per camera.
fn register_store(
    reg: &mut Registry,
    cams: &[CameraRow],
    rows: &[Vec<StateCount>],
    last_verified: &BTreeMap<String, i64>,
) {
    let id = |cam: &CameraRow| -> Labels {
        vec![
            ("imei", cam.imei.clone()),
            ("camera", cam.config_name.clone().unwrap_or_default()),
        ]
    };
    let clips = gauge_family(
        reg,
        "qucam_offload_clips",
        "Clips known per camera, by state.",
    );
    let queue = gauge_family(
        reg,
        "qucam_offload_queue_depth",
        "Clips selected for offload and not yet verified (queued, downloading, downloaded, uploading, uploaded).",
    );
    for (cam, counts) in cams.iter().zip(rows) {
        let labels = id(cam);
        // Every state, 0 included, so graphs stay continuous.
        for st in ClipState::ALL {
            let n = counts.iter().find(|r| r.state == st).map_or(0, |r| r.clips);
            let mut with_state = labels.clone();
            with_state.push(("state", st.to_string()));
            clips.get_or_create(&with_state).set(n);
        }
        let depth = counts
            .iter()
            .filter(|r| r.state.is_pending())
            .map(|r| r.clips)
            .sum();
        queue.get_or_create(&labels).set(depth);
    }
    let last_offload = gauge_family(
        reg,
        "qucam_offload_last_offload_timestamp_seconds",
        "When the camera's last clip was verified in the destination (Unix time).",
    );
    let last_seen = gauge_family(
        reg,
        "qucam_offload_camera_last_seen_timestamp_seconds",
        "When the camera last answered (Unix time).",
    );
    for cam in cams {
        if let Some(t) = last_verified.get(&cam.imei) {
            last_offload.get_or_create(&id(cam)).set(*t);
        }
        last_seen.get_or_create(&id(cam)).set(cam.last_seen);
    }
}

/// Depot Wi-Fi, per hotspot (labels bssid, ssid and the IMEI last seen behind it): when it
/// was last in range and last joined, its signal, a refused password, the failed joins in a
/// row with the last one's reason (only while the last join failed), and the clips of its
/// camera verified and waiting for the next visit to be deleted.
fn register_hotspots(
    reg: &mut Registry,
    hotspots: &[HotspotRow],
    cams: &[CameraRow],
    rows: &[Vec<StateCount>],
) {
    if hotspots.is_empty() {
        return;
    }
    let fam = |reg: &mut Registry, name, help| gauge_family(reg, name, help);
    let in_range = fam(
        reg,
        "qucam_offload_hotspot_last_in_range_timestamp_seconds",
        "When the camera's hotspot was last seen in a scan (Unix time).",
    );
    let joined = fam(
        reg,
        "qucam_offload_hotspot_last_joined_timestamp_seconds",
        "When the radio last joined the camera's hotspot (Unix time).",
    );
    let signal = fam(
        reg,
        "qucam_offload_hotspot_signal_percent",
        "Signal strength of the camera's hotspot when last in range.",
    );
    let wrong = fam(
        reg,
        "qucam_offload_hotspot_wrong_password",
        "1 while the password known for the hotspot is refused.",
    );
    let failures = fam(
        reg,
        "qucam_offload_hotspot_join_failures",
        "Failed joins in a row, labelled with the last one's reason; absent after a join.",
    );
    let waiting = fam(
        reg,
        "qucam_offload_hotspot_clips_waiting_for_next_visit",
        "Verified clips whose deletes from the camera wait for its next visit.",
    );
    for h in hotspots {
        let imei = h.imei.clone().unwrap_or_default();
        let labels: Labels = vec![
            ("bssid", h.bssid.clone()),
            // Broadcast by whatever access point is in range: cut and cleaned.
            ("ssid", qucam::text::clean(&h.ssid, 64)),
            ("imei", imei.clone()),
        ];
        if let Some(t) = h.last_seen {
            in_range.get_or_create(&labels).set(t / 1000);
        }
        if let Some(t) = h.last_joined {
            joined.get_or_create(&labels).set(t / 1000);
        }
        if let Some(sig) = h.signal {
            signal.get_or_create(&labels).set(i64::from(sig));
        }
        wrong
            .get_or_create(&labels)
            .set(i64::from(h.wrong_password));
        if let Some(why) = h.last_failure {
            let mut labels = labels.clone();
            labels.push(("reason", why.as_str().to_string()));
            failures.get_or_create(&labels).set(i64::from(h.failures));
        }
        let verified = cams
            .iter()
            .zip(rows)
            .find(|(c, _)| c.imei == imei)
            .and_then(|(_, r)| r.iter().find(|r| r.state == ClipState::Verified))
            .map_or(0, |r| r.clips);
        waiting.get_or_create(&labels).set(verified);
    }
}

/// A per-IMEI counter: name (without `_total`), help, and its value.
type PerImeiCounter = (&'static str, &'static str, fn(&PerCamera) -> u64);

const PER_IMEI_COUNTERS: [PerImeiCounter; 6] = [
    (
        "qucam_offload_downloaded_bytes",
        "Bytes downloaded from the camera.",
        |p| p.downloaded_bytes,
    ),
    (
        "qucam_offload_uploaded_bytes",
        "Bytes sent to the destination (0 for clips already there).",
        |p| p.uploaded_bytes,
    ),
    (
        "qucam_offload_offloaded_bytes",
        "Bytes of clips verified in the destination.",
        |p| p.offloaded_bytes,
    ),
    (
        "qucam_offload_offloaded_clips",
        "Clips verified in the destination.",
        |p| p.offloaded_clips,
    ),
    (
        "qucam_offload_lost_clips",
        "Clips that left the camera before they were offloaded.",
        |p| p.lost_clips,
    ),
    (
        "qucam_offload_deleted_clips",
        "Verified clips deleted from the camera.",
        |p| p.deleted_clips,
    ),
];

/// A per-IMEI throughput gauge: name, help, and its value (bytes per second), if known.
type PerImeiRate = (&'static str, &'static str, fn(&PerCamera) -> Option<f64>);

const PER_IMEI_RATES: [PerImeiRate; 2] = [
    (
        "qucam_offload_download_throughput_bytes_per_second",
        "Throughput of the camera's last download.",
        |p| p.download_bps,
    ),
    (
        "qucam_offload_upload_throughput_bytes_per_second",
        "Throughput of the camera's last upload.",
        |p| p.upload_bps,
    ),
];

impl Counters {
    /// What the events said since the process started.
    fn register(&self, reg: &mut Registry) {
        let reachable = gauge_family(
            reg,
            "qucam_offload_camera_reachable",
            "1 when the configured camera answered its last probe, else 0.",
        );
        for (name, up) in &self.reachable {
            reachable
                .get_or_create(&vec![("camera", name.clone())])
                .set(i64::from(*up));
        }
        for (name, help, value) in PER_IMEI_COUNTERS {
            let family = counter_family(reg, name, help);
            for (imei, p) in &self.per_imei {
                family
                    .get_or_create(&vec![("imei", imei.clone())])
                    .inc_by(value(p));
            }
        }
        let failures = counter_family(
            reg,
            "qucam_offload_failures",
            "Failed download or upload attempts, by stage.",
        );
        for (imei, p) in &self.per_imei {
            for (stage, n) in &p.failures {
                failures
                    .get_or_create(&vec![("imei", imei.clone()), ("stage", stage.to_string())])
                    .inc_by(*n);
            }
        }
        for (name, help, value) in PER_IMEI_RATES {
            let family = gauge_family(reg, name, help);
            for (imei, p) in &self.per_imei {
                if let Some(v) = value(p) {
                    // Whole bytes per second, as before.
                    family
                        .get_or_create(&vec![("imei", imei.clone())])
                        .set(v.round() as i64);
                }
            }
        }
        let missed = Counter::<u64>::default();
        missed.inc_by(self.events_missed);
        reg.register(
            "qucam_offload_events_missed",
            help_text("Agent events the metrics collector missed (it lagged behind)."),
            missed,
        );
    }
}

/// Label pairs of one sample, in the order they are written.
type Labels = Vec<(&'static str, String)>;

/// `prometheus-client` ends every help text with a period: give it the text without one.
fn help_text(help: &str) -> &str {
    help.strip_suffix('.').unwrap_or(help)
}

fn gauge_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    reg.register(name, help_text(help), family.clone());
    family
}

/// A counter family; the encoder appends `_total` to `name`.
fn counter_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    reg.register(name, help_text(help), family.clone());
    family
}

/// Feeds `metrics` from the agent's events until the agent is gone.
pub fn collect(metrics: Arc<Metrics>, mut rx: broadcast::Receiver<AgentEvent>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(e) => metrics.record(&e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!("metrics missed {n} agent events (collector too slow)");
                    metrics.missed(n);
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    })
}

/// The endpoint's bounds against clients that connect and hold on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// A request's head (request line and headers) must arrive within this, counted from
    /// the connection or the previous response: a silent or idle connection is closed.
    pub header_timeout: Duration,
    /// A connection is closed after this, once its request in flight is answered.
    pub max_connection_life: Duration,
    /// Connections served at once; more are closed as they are accepted.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    /// 10 s for a request's head, 60 s per connection, 16 connections.
    fn default() -> ServeLimits {
        ServeLimits {
            header_timeout: Duration::from_secs(10),
            max_connection_life: Duration::from_secs(60),
            max_connections: 16,
        }
    }
}

/// The running metrics endpoint; stops when dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    server: JoinHandle<()>,
    refresher: JoinHandle<()>,
    collector: Mutex<JoinHandle<()>>,
}

impl MetricsServer {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counts the events of `agent` from now on, instead of the previous agent's (a config
    /// reload swaps the agent; the counters carry on). Call before `agent` runs.
    pub fn attach(&self, agent: &Agent) {
        self.metrics
            .set_cameras(agent.config().cameras.iter().map(|c| c.name.clone()));
        let next = collect(self.metrics.clone(), agent.subscribe());
        let mut c = self.collector.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *c, next).abort();
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.abort();
        self.refresher.abort();
        self.collector
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abort();
    }
}

/// Binds `listen` (a failure names `metrics.listen`), starts counting `agent`'s events and
/// serves `/metrics` and `/healthz` within the default [`ServeLimits`] until `shutdown` or
/// until the handle is dropped.
pub async fn start(
    agent: &Agent,
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> Result<MetricsServer> {
    start_with(agent, listen, shutdown, ServeLimits::default()).await
}

/// [`start`] with other limits (tests use short ones).
pub async fn start_with(
    agent: &Agent,
    listen: SocketAddr,
    shutdown: CancellationToken,
    limits: ServeLimits,
) -> Result<MetricsServer> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on metrics.listen = \"{listen}\""))?;
    let addr = listener.local_addr().unwrap_or(listen);
    let metrics = Arc::new(Metrics::new(
        agent.store().clone(),
        agent.config().cameras.iter().map(|c| c.name.clone()),
    ));
    if let Err(e) = metrics.refresh().await {
        warn!("metrics: cannot read the state database yet: {e:#}");
    }
    let refresher = metrics.spawn_refresher(shutdown.clone());
    let collector = Mutex::new(collect(metrics.clone(), agent.subscribe()));
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_handler))
        .route("/healthz", axum::routing::get(healthz))
        .with_state(metrics.clone());
    let server = tokio::spawn(serve(listener, app, limits, shutdown));
    info!("metrics at http://{addr}/metrics");
    Ok(MetricsServer {
        addr,
        metrics,
        server,
        refresher,
        collector,
    })
}

/// Accepts connections on `listener` until `shutdown`, each served within `limits`.
async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut refused = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted:
                // wait a little rather than spin.
                debug!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if refused == 0 {
                warn!(
                    "metrics: {} connections open, closing new ones until one ends",
                    limits.max_connections
                );
            }
            refused += 1;
            drop(stream);
            continue;
        };
        tokio::spawn(serve_connection(
            stream,
            app.clone(),
            limits,
            shutdown.clone(),
            slot,
        ));
    }
}

/// One connection: requests within the header timeout, closed at the end of its life.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: axum::Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        served = conn.as_mut() => {
            if let Err(e) = served {
                debug!("metrics: connection ended: {e}");
            }
            return;
        }
        _ = tokio::time::sleep(limits.max_connection_life) => {}
        _ = shutdown.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(limits.header_timeout, conn).await;
}

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> axum::response::Response {
    match m.render() {
        Ok(text) => (
            [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the state database: {e:#}\n"),
        )
            .into_response(),
    }
}

/// 200 while the state database answers, 503 otherwise.
async fn healthz(State(m): State<Arc<Metrics>>) -> (StatusCode, &'static str) {
    let ok = m.store.ping().await;
    match ok {
        Ok(_) => (StatusCode::OK, "ok\n"),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "state database unavailable\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JoinFailure;

    /// What a scrape shows once the snapshot was read again.
    async fn scrape(m: &Metrics) -> String {
        m.refresh().await.unwrap();
        m.render().unwrap()
    }

    #[tokio::test]
    async fn escapes_label_values() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let m = Metrics::new(store, ["a\"b\\c\nd".to_string()]);
        let text = scrape(&m).await;
        assert!(
            text.contains(r#"qucam_offload_camera_reachable{camera="a\"b\\c\nd"} 0"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn counts_the_deletes_a_camera_did_not_perform() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let imei = "867867432500010";
        let row = CameraRow {
            imei: imei.into(),
            config_name: Some("truck".into()),
            ..Default::default()
        };
        store.camera_seen(row).await.unwrap();
        let m = Metrics::new(store.clone(), ["truck".to_string()]);
        let line = |n: usize| {
            format!("qucam_offload_deletes_not_taken{{imei=\"{imei}\",camera=\"truck\"}} {n}\n")
        };
        let text = scrape(&m).await;
        assert!(text.contains(&line(0)), "{text}");
        // A verified clip the agent deleted, listed again with the same size and date.
        let l = crate::store::Listed {
            path: "/v/20210427_115134_04_1.mp4".into(),
            name: "20210427_115134_04_1.mp4".into(),
            size: 7,
            event: "04".into(),
            camera: 1,
            recorded_at: "2021-04-27 11:51:34".into(),
            priority: 0,
            skip: None,
            refuse: None,
            size_unknown: false,
            too_recent: false,
            date_ms: Some(1000),
        };
        let page = || store.reconcile_page(imei, vec![l.clone()], Default::default());
        page().await.unwrap();
        page().await.unwrap(); // listed twice with one size: queued
        let id = store.clips_of(imei).await.unwrap()[0].id;
        assert!(store.start_download(id).await.unwrap());
        assert!(
            store
                .downloaded(id, "00".into(), Default::default())
                .await
                .unwrap()
        );
        assert!(store.start_upload(id).await.unwrap());
        let sent = crate::store::SentRow::default();
        assert!(store.uploaded(id, "k".into(), None, sent).await.unwrap());
        store.verified(id, None).await.unwrap();
        assert_eq!(store.deleted(vec![id]).await.unwrap(), 1);
        page().await.unwrap();
        let text = scrape(&m).await;
        assert!(text.contains(&line(1)), "{text}");
    }

    #[tokio::test]
    async fn a_hostile_ssid_reaches_metrics_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let m = Metrics::new(store.clone(), Vec::<String>::new());
        let ssid = "truck\u{1b}[2J\u{202e}".to_string();
        let seen = vec![("0A:00:00:00:00:10".to_string(), ssid, 61)];
        store.hotspots_seen(seen, 5_000_000).await.unwrap();
        m.refresh().await.unwrap();
        let text = m.render().unwrap();
        assert!(text.contains("ssid=\"truck\u{fffd}[2J\u{fffd}\""), "{text}");
        assert!(!text.contains(['\u{1b}', '\u{202e}']), "{text:?}");
    }

    #[tokio::test]
    async fn shows_each_camera_hotspot() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let m = Metrics::new(store.clone(), Vec::<String>::new());
        assert!(!scrape(&m).await.contains("qucam_offload_hotspot"));
        let b = || "0A:00:00:00:00:10".to_string();
        let seen = vec![(b(), "truck-0".to_string(), 61)];
        store.hotspots_seen(seen, 5_000_000).await.unwrap();
        store.hotspot_joined(b(), 6_000_000).await.unwrap();
        let imei = "867867432500010".to_string();
        store.hotspot_identified(b(), imei).await.unwrap();
        let labels = r#"{bssid="0A:00:00:00:00:10",ssid="truck-0",imei="867867432500010"}"#;
        let text = scrape(&m).await;
        for line in [
            format!("qucam_offload_hotspot_signal_percent{labels} 61"),
            format!("qucam_offload_hotspot_last_in_range_timestamp_seconds{labels} 5000"),
            format!("qucam_offload_hotspot_last_joined_timestamp_seconds{labels} 6000"),
            format!("qucam_offload_hotspot_wrong_password{labels} 0"),
            format!("qucam_offload_hotspot_clips_waiting_for_next_visit{labels} 0"),
        ] {
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(
            !text.contains("qucam_offload_hotspot_join_failures{"),
            "{text}"
        );
        store
            .hotspot_failed(b(), JoinFailure::WrongPassword, "fp".into(), |_| 9_000_000)
            .await
            .unwrap();
        let text = scrape(&m).await;
        assert!(text.contains(&format!("qucam_offload_hotspot_wrong_password{labels} 1")));
        let failures = |reason: &str| {
            let l = labels.replace('}', &format!(",reason=\"{reason}\"}}"));
            format!("qucam_offload_hotspot_join_failures{l}")
        };
        let line = format!("{} 1\n", failures("wrong_password"));
        assert!(text.contains(&line), "{line} in\n{text}");
        // The reason is the last failure's; the count goes on.
        store
            .hotspot_failed(b(), JoinFailure::Timeout, "fp".into(), |_| 9_000_000)
            .await
            .unwrap();
        let text = scrape(&m).await;
        let line = format!("{} 2\n", failures("timeout"));
        assert!(text.contains(&line), "{line} in\n{text}");
        assert!(!text.contains(&failures("wrong_password")), "{text}");
        // A refused password stays shown until a join succeeds, whatever failed after it.
        assert!(text.contains(&format!("qucam_offload_hotspot_wrong_password{labels} 1")));
        store.hotspot_joined(b(), 10_000_000).await.unwrap();
        let text = scrape(&m).await;
        assert!(text.contains(&format!("qucam_offload_hotspot_wrong_password{labels} 0")));
        assert!(
            !text.contains("qucam_offload_hotspot_join_failures{"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn says_when_the_destination_is_paused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let m = Metrics::new(store.clone(), ["truck-12".to_string()]);
        let key = || crate::agent::DESTINATION_PAUSED_KEY.to_string();
        assert!(
            scrape(&m)
                .await
                .contains("\nqucam_offload_destination_paused 0\n")
        );
        store.set_notice(key(), Some("down".into())).await.unwrap();
        assert!(
            scrape(&m)
                .await
                .contains("\nqucam_offload_destination_paused 1\n")
        );
        store.set_notice(key(), None).await.unwrap();
        assert!(
            scrape(&m)
                .await
                .contains("\nqucam_offload_destination_paused 0\n")
        );
    }

    #[tokio::test]
    async fn counts_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let m = Metrics::new(store, ["truck-12".to_string()]);
        m.record(&AgentEvent::PassFinished {
            camera: "truck-12".into(),
            outcome: PassOutcome::Done {
                imei: "1".into(),
                remaining: 0,
            },
        });
        m.record(&AgentEvent::Downloaded {
            imei: "1".into(),
            clip: "c".into(),
            bytes: 2_000_000,
            secs: 2.0,
        });
        m.record(&AgentEvent::Failed {
            imei: "1".into(),
            clip: "c".into(),
            stage: "upload",
            error: "x".into(),
        });
        let text = scrape(&m).await;
        assert!(text.contains("qucam_offload_camera_reachable{camera=\"truck-12\"} 1"));
        assert!(text.contains("qucam_offload_downloaded_bytes_total{imei=\"1\"} 2000000"));
        assert!(
            text.contains("qucam_offload_download_throughput_bytes_per_second{imei=\"1\"} 1000000")
        );
        assert!(text.contains("qucam_offload_failures_total{imei=\"1\",stage=\"upload\"} 1"));
        // Names, types and help as before the move to prometheus-client (one period, `_total`).
        for header in [
            "# HELP qucam_offload_build_info Version of the running agent.\n# TYPE qucam_offload_build_info gauge\n",
            "# HELP qucam_offload_failures_total Failed download or upload attempts, by stage.\n# TYPE qucam_offload_failures_total counter\n",
            "# HELP qucam_offload_events_missed_total Agent events the metrics collector missed (it lagged behind).\n# TYPE qucam_offload_events_missed_total counter\nqucam_offload_events_missed_total 0\n",
            "# TYPE qucam_offload_download_throughput_bytes_per_second gauge\n",
        ] {
            assert!(text.contains(header), "{header:?} not in:\n{text}");
        }
        let version = format!(
            "qucam_offload_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&version), "{text}");
    }
}
