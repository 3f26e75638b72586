//! `qucam-sim`: a simulator of a Queclink "Qucam" dashcam's web API (CV100/CV200).
//!
//! It serves clips from a directory laid out like the camera's SD card: the directory stands
//! for `/storage/sdcard1/queclink/video`, so a clip lives at `DIR/yyyyMMdd/HH/<name>` and is
//! known to clients as `/storage/sdcard1/queclink/video/yyyyMMdd/HH/<name>`. Every endpoint of
//! the vendor document (sections 3.1-3.10) replies with the document's exact shapes, including
//! its oddities (`data` as an encoded string, "Camera Busy" with `isSuccess: true`, ...).
//!
//! [`Faults`] switch on misbehaviour (busy replies, string error codes, dropped or slow
//! downloads, ignored `Range`, growing clips, shifting listings, hostile raw replies) and may be
//! changed while serving through [`SimHandle::set_faults`]; [`SimDevice::swap`] puts another
//! camera (IMEI and clips) behind the same address mid-pass. Tests start the simulator
//! in-process with [`start`]; the `qucam-sim` binary wraps it (see [`cli`]; the binary target
//! itself is `src/bin/qucam-sim.rs` of the root package, so that `cargo install --path .`
//! installs it with the agent).
//!
//! Clip names and event codes are the [`qucam`] crate's ([`qucam::ClipName`],
//! [`qucam::EVENT_CODES`]): the simulator serves exactly the names the client accepts. It
//! uses `qucam` for those types only, never its HTTP client, so a bug in the client cannot
//! hide behind the same bug in the simulator.

pub mod cli;
mod clips;
mod net;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use clips::{VIDEO_ROOT, generate_clips, write_clip};

/// Default ADAS extrinsic parameters, reported until a calibration records others.
pub const DEFAULT_ADAS_PARAMS: &str = "1|2|3|4|5|6|7";

/// How to run the simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Address to listen on; `127.0.0.1:0` (an ephemeral port) by default.
    pub listen: SocketAddr,
    /// The directory standing for `/storage/sdcard1/queclink/video`.
    pub dir: PathBuf,
    pub imei: String,
    pub device_name: String,
    /// The hotspot's SSID and password `get_device_info` reports (LAN mode); the factory
    /// `queclinkgh` / `12345678` by default.
    pub ssid: String,
    pub password: String,
    pub faults: Faults,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir: PathBuf::from("."),
            imei: "867867432522518".to_string(),
            device_name: "CV200".to_string(),
            ssid: "queclinkgh".to_string(),
            password: "12345678".to_string(),
            faults: Faults::default(),
        }
    }
}

/// Misbehaviour to simulate. `Default` is a well-behaved camera.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// The next N listings reply `{"data":"Camera Busy","errorCode":200,"isSuccess":true}`.
    pub busy_listings: u32,
    /// The next N `delete_file` requests reply "Camera Busy" and delete nothing.
    pub busy_deletes: u32,
    /// Every `errorCode` is sent as a string, e.g. `"200"`.
    pub string_error_codes: bool,
    /// Listing `data` is sent as a JSON-encoded string instead of an array.
    pub data_as_string: bool,
    /// Download responses abort the connection after this many body bytes.
    pub drop_after_bytes: Option<u64>,
    /// With `drop_after_bytes`: only the next N downloads are dropped (after the N-th,
    /// `drop_after_bytes` is cleared); 0 means every download is dropped.
    pub drop_downloads: u32,
    /// Ignore `Range`: always 200 with the whole file.
    pub no_range: bool,
    /// Pace download bodies to this many bytes per second.
    pub bandwidth_bytes_per_sec: Option<u64>,
    /// Requests without a `clientId` header get HTTP 401.
    pub require_client_id: bool,
    /// `(file name, n)`: the clip grows by some bytes at each of the next n listings
    /// ("still recording").
    pub growing: Option<(String, u32)>,
    /// After a listing page at offset 0 is served, a new newest clip appears on disk, so
    /// later offsets shift.
    pub new_clip_between_pages: bool,
    /// `delete_file` answers "success" and removes nothing (a read-only SD card).
    pub ignore_deletes: bool,
    /// Clips (by file name) whose downloads (ranges included) serve other bytes than the
    /// file's, every byte inverted, under the same listing: a spoofed camera, or one that
    /// rewrote a clip at the same size and `date`.
    pub other_bytes: Vec<String>,
    /// Added to every listed `date` (ms): a camera whose clock or time zone moved.
    pub date_shift_ms: i64,
    /// Clips (by file name) listed with `"size": null`, as firmware does for a clip still
    /// being written.
    pub sizeless: Vec<String>,
    /// Clips (by file name) listed with `"isDirectory": true`.
    pub as_directory: Vec<String>,
    /// Raw reply body returned verbatim for `get_video_files_info`.
    pub listing_override: Option<String>,
    /// How the listing applies `time_type` (default: the simulator's assumed rule).
    pub time_filter: TimeFilter,
    /// Raw reply body returned verbatim for `get_device_info`.
    pub device_info_override: Option<String>,
    /// Raw reply `(HTTP status, body)` for every download (HTML error pages etc.).
    pub download_override: Option<(u16, Vec<u8>)>,
}

/// How a listing applies `time_type` `<from>:<to>`. The vendor document does not say what
/// the period filters on, on which clock, or whether its ends are inclusive; the simulator
/// assumes [`TimeFilter::Start`]. The others are cameras that do it otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimeFilter {
    /// The assumption: a clip is listed when the recording time in its name (the camera's
    /// local clock, the start of the recording) is within the period, both ends included.
    #[default]
    Start,
    /// `time_type` is ignored: every clip is listed (old firmware).
    Ignored,
    /// The period is read `hours` later than it was sent (a camera comparing it with
    /// another clock, e.g. its names in local time against the period taken as UTC): the
    /// clips recorded in the first `hours` of the period are left out.
    Skewed { hours: u32 },
}

/// One request the simulator answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    /// Percent-decoded path.
    pub path: String,
    pub query: Option<String>,
    /// The `Range` header as sent.
    pub range: Option<String>,
    /// The `clientId` header as sent.
    pub client_id: Option<String>,
    pub status: u16,
    /// Body bytes actually sent (so far, for a response still streaming).
    pub body_bytes: u64,
}

/// Calibration state recorded by `driver_assistance_calibration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calibration {
    /// Last DMS (type 1) calibration result, if any.
    pub dms: Option<u8>,
    /// Last ADAS (type 2) calibration result, if any.
    pub adas: Option<u8>,
    /// ADAS extrinsic parameters `a|b|c|d|e|f|g`.
    pub adas_params: String,
}

type DeleteHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Mutable simulator state, behind one mutex.
struct State {
    faults: Faults,
    imei: String,
    device_name: String,
    ssid: String,
    password: String,
    deletes: Vec<String>,
    /// Paths whose delete was acknowledged and not performed (`Faults::ignore_deletes`).
    ignored_deletes: Vec<String>,
    on_delete: Option<DeleteHook>,
    on_request: Option<RequestHook>,
    requests: Vec<RequestRecord>,
    bytes_served: u64,
    spot_bytes_served: u64,
    /// (streaming, rtmp url, camera id)
    rtmp: (bool, String, String),
    calibration: Calibration,
}

/// Shared between the server and the handle.
struct Shared {
    /// The directory standing for the video root (another one after [`SimDevice::swap`]).
    dir: Mutex<PathBuf>,
    state: Mutex<State>,
    gate: Arc<net::Gate>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dir(&self) -> PathBuf {
        self.dir.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

type RequestHook = Arc<dyn Fn(&str, &SimDevice) + Send + Sync>;

/// The device behind the listener, for a test that swaps it mid-pass (another vehicle
/// taking the hotspot address): clone it into a hook ([`SimHandle::set_on_request`]).
#[derive(Clone)]
pub struct SimDevice {
    shared: Arc<Shared>,
}

impl SimDevice {
    /// Another camera answers from now on: its IMEI and its clips (the directory standing
    /// for its video root).
    pub fn swap(&self, imei: &str, dir: PathBuf) {
        self.shared.lock().imei = imei.to_string();
        *self.shared.dir.lock().unwrap_or_else(|e| e.into_inner()) = dir;
    }

    /// The IMEI the camera reports now.
    pub fn imei(&self) -> String {
        self.shared.lock().imei.clone()
    }

    /// The directory standing for the video root of the camera answering now.
    pub fn dir(&self) -> PathBuf {
        self.shared.dir()
    }

    /// Changes the faults from a hook; they apply to the request being hooked too.
    pub fn set_faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.shared.lock().faults);
    }
}

/// A running simulator. Dropping it stops the server (as [`SimHandle::shutdown`] without waiting).
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Starts the simulator in the current tokio runtime.
pub async fn start(opts: SimOptions) -> anyhow::Result<SimHandle> {
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("creating {}", opts.dir.display()))?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        dir: Mutex::new(opts.dir),
        gate: net::Gate::new(),
        state: Mutex::new(State {
            faults: opts.faults,
            imei: opts.imei,
            device_name: opts.device_name,
            ssid: opts.ssid,
            password: opts.password,
            deletes: Vec::new(),
            ignored_deletes: Vec::new(),
            on_delete: None,
            on_request: None,
            requests: Vec::new(),
            bytes_served: 0,
            spot_bytes_served: 0,
            rtmp: (false, String::new(), String::new()),
            calibration: Calibration {
                dms: None,
                adas: None,
                adas_params: DEFAULT_ADAS_PARAMS.to_string(),
            },
        }),
    });
    let listener = net::GatedListener {
        inner: listener,
        gate: shared.gate.clone(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let app = server::router(shared.clone());
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            tracing::error!("simulator server failed: {e}");
        }
    });
    tracing::info!(%addr, dir = %shared.dir().display(), "qucam-sim listening");
    Ok(SimHandle {
        addr,
        shared,
        stop: Some(stop),
        task: Some(task),
    })
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the faults; takes effect with the next request.
    pub fn set_faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.shared.lock().faults);
    }

    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.clone()
    }

    pub fn set_imei(&self, imei: &str) {
        self.shared.lock().imei = imei.to_string();
    }

    /// Every camera path deleted through `delete_file`, in order.
    pub fn deletes(&self) -> Vec<String> {
        self.shared.lock().deletes.clone()
    }

    /// Every camera path whose delete was acknowledged but not performed
    /// (`Faults::ignore_deletes`), in order, repeats included.
    pub fn ignored_deletes(&self) -> Vec<String> {
        self.shared.lock().ignored_deletes.clone()
    }

    /// Called synchronously with each camera path just before its file is removed.
    pub fn set_on_delete(&self, f: impl Fn(&str) + Send + Sync + 'static) {
        self.shared.lock().on_delete = Some(Arc::new(f));
    }

    /// Called synchronously with each request's (percent-decoded) path before it is
    /// answered, with the device behind the listener (e.g. to swap it).
    pub fn set_on_request(&self, f: impl Fn(&str, &SimDevice) + Send + Sync + 'static) {
        self.shared.lock().on_request = Some(Arc::new(f));
    }

    /// The device behind the listener.
    pub fn device(&self) -> SimDevice {
        SimDevice {
            shared: self.shared.clone(),
        }
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    /// Clip body bytes sent by downloads so far: whole files and open ranges (`bytes=N-`),
    /// not spot checks ([`SimHandle::spot_bytes_served`]).
    pub fn bytes_served(&self) -> u64 {
        self.shared.lock().bytes_served
    }

    /// Clip body bytes sent for closed ranges (`bytes=A-B`) so far: spot checks of bytes
    /// already downloaded (the agent's delete challenge).
    pub fn spot_bytes_served(&self) -> u64 {
        self.shared.lock().spot_bytes_served
    }

    /// `false`: new connections are closed at once and open ones fail at their next read or
    /// write, like a camera that drove out of reach. `true` restores service.
    pub fn set_reachable(&self, on: bool) {
        self.shared.gate.set(on);
    }

    /// `(streaming, rtmp url, camera id)` as last set by `update_rtmp_state`.
    pub fn rtmp_state(&self) -> (bool, String, String) {
        self.shared.lock().rtmp.clone()
    }

    pub fn calibration(&self) -> Calibration {
        self.shared.lock().calibration.clone()
    }

    /// The directory standing for the camera's video root (now: see [`SimDevice::swap`]).
    pub fn dir(&self) -> PathBuf {
        self.shared.dir()
    }

    /// Stops the server: open connections are cut, then the task is awaited.
    pub async fn shutdown(mut self) {
        self.stop_now();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    fn stop_now(&mut self) {
        self.shared.gate.set(false);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}
