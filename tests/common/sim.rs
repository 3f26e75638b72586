//! Shared helpers for tests that drive the camera simulator over real HTTP on 127.0.0.1:
//! a simulator on a temp dir with known clips, a runtime holder that keeps it serving while a
//! CLI process runs, a config writer, and a tiny raw HTTP server for replies the simulator
//! cannot produce (invalid UTF-8, bodies without a length).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use qucam_sim::{self as sim, Faults, SimHandle, SimOptions};
use sha2::{Digest, Sha256};

/// The IMEI the simulator reports by default.
pub const SIM_IMEI: &str = "867867432522518";
/// The hotspot password the simulator reports.
pub const SIM_PASSWORD: &str = "12345678";

/// Fixed clips: (name, size). Newest first is the order of [`FIXTURE_NEWEST_FIRST`].
pub const FIXTURE: [(&str, usize); 6] = [
    ("20240301_100000_00_1.mp4", 40_000),
    ("20240301_100000_00_2.mp4", 41_000),
    ("20240301_100100_0A_1.mp4", 42_000),
    ("20240302_080000_04_2.ts", 43_000),
    ("20240229_235959_00_1.mp4", 44_000),
    ("20240302_090000_04_1.mp4", 45_000),
];

/// The fixture names as the camera lists them: newest first (by time, then name).
pub const FIXTURE_NEWEST_FIRST: [&str; 6] = [
    "20240302_090000_04_1.mp4",
    "20240302_080000_04_2.ts",
    "20240301_100100_0A_1.mp4",
    "20240301_100000_00_2.mp4",
    "20240301_100000_00_1.mp4",
    "20240229_235959_00_1.mp4",
];

/// A clip written for a test: its name, camera path, file on disk and exact content.
#[derive(Debug, Clone)]
pub struct TestClip {
    pub name: String,
    pub camera_path: String,
    pub file: PathBuf,
    pub content: Vec<u8>,
}

impl TestClip {
    pub fn size(&self) -> u64 {
        self.content.len() as u64
    }

    pub fn sha256_hex(&self) -> String {
        sha256_hex(&self.content)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Deterministic, non-repeating bytes (so an offset error changes the hash).
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Writes a clip in the camera layout under `dir`.
pub fn write_test_clip(dir: &Path, name: &str, content: Vec<u8>) -> TestClip {
    let camera_path = sim::write_clip(dir, name, &content).expect("write clip");
    let rel = camera_path
        .strip_prefix(sim::VIDEO_ROOT)
        .expect("under the video root")
        .trim_start_matches('/')
        .to_string();
    TestClip {
        name: name.to_string(),
        camera_path,
        file: dir.join(&rel),
        content,
    }
}

/// A simulator serving a temp dir, with the clips written into it.
pub struct TestSim {
    pub sim: SimHandle,
    pub clips: Vec<TestClip>,
    pub dir: tempfile::TempDir,
}

impl TestSim {
    pub fn url(&self) -> String {
        self.sim.url()
    }

    /// The fixture clip called `name`.
    pub fn clip(&self, name: &str) -> &TestClip {
        self.clips
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no fixture clip {name}"))
    }

    /// Requests whose path is under the video root (downloads).
    pub fn download_requests(&self) -> Vec<sim::RequestRecord> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.path.starts_with(sim::VIDEO_ROOT))
            .collect()
    }

    /// Requests to one API endpoint, e.g. `/device/get_video_files_info`.
    pub fn api_requests(&self, endpoint: &str) -> Vec<sim::RequestRecord> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.path == endpoint)
            .collect()
    }

    /// Clip files still on the simulated SD card.
    pub fn clips_on_disk(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_files(self.dir.path(), &mut out);
        out.sort();
        out
    }
}

fn collect_files(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out);
        } else if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
            out.push(n.to_string());
        }
    }
}

/// Starts a simulator (in the current tokio runtime) on a temp dir holding [`FIXTURE`].
pub async fn start_fixture(faults: Faults) -> TestSim {
    let dir = tempfile::tempdir().expect("tempdir");
    let clips = FIXTURE
        .iter()
        .enumerate()
        .map(|(i, (name, size))| write_test_clip(dir.path(), name, content(i as u64 + 1, *size)))
        .collect();
    start_on(dir, clips, faults).await
}

/// Starts a simulator on a temp dir holding one clip of `size` bytes.
pub async fn start_one(name: &str, size: usize, faults: Faults) -> TestSim {
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = write_test_clip(dir.path(), name, content(99, size));
    start_on(dir, vec![clip], faults).await
}

/// Starts a simulator on a temp dir with `n` generated clips of `size` bytes (newest first).
pub async fn start_generated(n: usize, size: u64, faults: Faults) -> TestSim {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = sim::generate_clips(dir.path(), n, size, 11).expect("generate clips");
    let clips = files
        .into_iter()
        .map(|file| {
            let rel = file.strip_prefix(dir.path()).expect("under dir");
            let rel = rel.to_str().expect("utf-8").replace('\\', "/");
            TestClip {
                name: file.file_name().unwrap().to_str().unwrap().to_string(),
                camera_path: format!("{}/{rel}", sim::VIDEO_ROOT),
                content: std::fs::read(&file).expect("read clip"),
                file,
            }
        })
        .collect();
    start_on(dir, clips, faults).await
}

async fn start_on(dir: tempfile::TempDir, clips: Vec<TestClip>, faults: Faults) -> TestSim {
    let sim = sim::start(SimOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        dir: dir.path().to_path_buf(),
        faults,
        ..SimOptions::default()
    })
    .await
    .expect("start simulator");
    assert!(sim.addr().ip().is_loopback());
    TestSim { sim, clips, dir }
}

/// A loopback address where connections are refused, reserved for as long as the returned
/// socket lives: bound but never listening. A port that is bound and released at once (the
/// usual trick) can be handed to another test's server meanwhile, which would then answer.
pub fn refusing_addr() -> (tokio::net::TcpSocket, SocketAddr) {
    let s = tokio::net::TcpSocket::new_v4().expect("socket");
    s.bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind a loopback port");
    let addr = s.local_addr().expect("addr");
    (s, addr)
}

/// A simulator kept serving on its own multi-thread runtime, for tests that run the CLI as
/// a process (the test thread blocks on the child while the runtime serves).
pub struct SimRuntime {
    // Dropped first: stops the server while the runtime is still alive.
    pub t: TestSim,
    rt: tokio::runtime::Runtime,
}

impl SimRuntime {
    pub fn fixture(faults: Faults) -> SimRuntime {
        let rt = runtime();
        let t = rt.block_on(start_fixture(faults));
        SimRuntime { t, rt }
    }

    pub fn one(name: &str, size: usize, faults: Faults) -> SimRuntime {
        let rt = runtime();
        let t = rt.block_on(start_one(name, size, faults));
        SimRuntime { t, rt }
    }

    pub fn url(&self) -> String {
        self.t.url()
    }

    pub fn sim(&self) -> &SimHandle {
        &self.t.sim
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Writes `config.toml` in `dir`: one camera at `camera_url`, state in `dir/state`, a local
/// destination in `dir/dest`, then `extra` appended verbatim. Returns the file's path.
pub fn write_config(dir: &Path, camera_url: &str, extra: &str) -> PathBuf {
    let text = format!(
        "state_dir = {state:?}\n\n[[camera]]\nname = \"truck\"\nurl = {camera_url:?}\n\n[local]\ndir = {dest:?}\n\n{extra}",
        state = dir.join("state").display().to_string(),
        dest = dir.join("dest").display().to_string(),
    );
    write_config_text(dir, &text)
}

/// Writes `text` as `config.toml` in `dir` and returns its path.
pub fn write_config_text(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// What a [`RawServer`] saw of one request: the request line and headers, lower-cased names.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub line: String,
    pub headers: Vec<(String, String)>,
}

impl RawRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 server on 127.0.0.1 that answers every request with the same raw bytes
/// (status line, headers and body exactly as given) and then closes the connection. For
/// replies the simulator cannot make: invalid UTF-8, bodies with no length.
pub struct RawServer {
    addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<RawRequest>>>,
    _thread: JoinHandle<()>,
}

impl RawServer {
    pub fn start(response: Vec<u8>) -> RawServer {
        RawServer::start_paced(response, 1, Duration::ZERO)
    }

    /// Like [`RawServer::start`], but the response goes out in `slices` parts with `pause`
    /// between them: a camera that answers slowly, yet answers (each pause under the
    /// agent's idle timeout). The connection of every request is served on its own thread.
    pub fn start_paced(response: Vec<u8>, slices: usize, pause: Duration) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind raw server");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(s) = stream else { return };
                let seen2 = seen2.clone();
                let response = response.clone();
                std::thread::spawn(move || answer(s, &seen2, &response, slices, pause));
            }
        });
        RawServer {
            addr,
            seen,
            _thread: thread,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<RawRequest> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads one request's head into `seen`, writes `response` in `slices` parts `pause` apart,
/// and closes the connection.
fn answer(
    mut s: std::net::TcpStream,
    seen: &Mutex<Vec<RawRequest>>,
    response: &[u8],
    slices: usize,
    pause: Duration,
) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    seen.lock().unwrap().push(RawRequest { line, headers });
    let size = response.len().div_ceil(slices.max(1)).max(1);
    for (i, part) in response.chunks(size).enumerate() {
        if i > 0 {
            std::thread::sleep(pause);
        }
        if s.write_all(part).and_then(|()| s.flush()).is_err() {
            return;
        }
    }
    let _ = s.shutdown(Shutdown::Both);
}
