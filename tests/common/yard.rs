//! A depot yard in a box: several simulated trucks (`qucam-sim`, each with its own SSID,
//! BSSID, password, IMEI and clips), a NetworkManager stand-in on a private D-Bus
//! (`nm.rs`), an S3 server, and a router on one loopback address that plays the hotspot
//! address every camera shares: it forwards to the truck whose access point the stand-in
//! says is joined, refuses connections when none is, and cuts live connections when the
//! radio moves (a truck driving away mid-download). The agent runs as a child process
//! pointed at the private bus by `DBUS_SYSTEM_BUS_ADDRESS`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use qucam_sim::{self as sim, SimHandle, SimOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::db::Db;
use super::fleet::{generated_clips, sha256_hex};
use super::nm::NmStandIn;
use super::s3::{Store, TestS3};

/// The Wi-Fi interface of the yard's machine.
pub const IFACE: &str = "wlan0";
/// The depot uplink: its NetworkManager profile id, SSID and BSSID.
pub const UPLINK: &str = "depot-wifi";
pub const UPLINK_BSSID: &str = "02:00:00:00:00:01";

/// One truck: its camera and its hotspot.
pub struct Truck {
    pub ssid: String,
    pub bssid: String,
    pub psk: String,
    pub imei: String,
    pub sim: SimHandle,
    pub camera_dir: PathBuf,
    /// SHA-256 (hex) of every clip the camera held at the start, by file name.
    pub originals: BTreeMap<String, String>,
}

/// How a truck is made.
#[derive(Clone)]
pub struct TruckSpec {
    pub ssid: String,
    pub psk: String,
    pub clips: usize,
    pub size: u64,
}

impl TruckSpec {
    /// Truck `i` with its own SSID and password, `clips` clips of `size` bytes.
    pub fn new(i: usize, clips: usize, size: u64) -> TruckSpec {
        TruckSpec {
            ssid: format!("truck-{i}"),
            psk: format!("secret-{i}-pw"),
            clips,
            size,
        }
    }
}

/// Forwards connections to the truck whose BSSID the stand-in says is joined.
pub struct Router {
    pub addr: SocketAddr,
    routes: Arc<Mutex<HashMap<String, SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Router {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Router {
    pub async fn start(joined: watch::Receiver<String>) -> Router {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind router");
        let addr = listener.local_addr().expect("router addr");
        let routes: Arc<Mutex<HashMap<String, SocketAddr>>> = Arc::default();
        let r = routes.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let now = joined.borrow().clone();
                let to = r.lock().unwrap().get(&now.to_uppercase()).copied();
                let Some(to) = to else {
                    drop(conn); // nothing answers at the hotspot address
                    continue;
                };
                let mut joined = joined.clone();
                tokio::spawn(async move {
                    let Ok(mut back) = TcpStream::connect(to).await else {
                        return;
                    };
                    let mut conn = conn;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut conn, &mut back) => {}
                        _ = joined.wait_for(|j| *j != now) => {} // the radio moved: cut
                    }
                });
            }
        });
        Router { addr, routes, task }
    }

    pub fn route(&self, bssid: &str, to: SocketAddr) {
        self.routes.lock().unwrap().insert(bssid.to_uppercase(), to);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

pub struct Yard {
    pub nm: NmStandIn,
    pub router: Router,
    pub s3: TestS3,
    pub dir: tempfile::TempDir,
    pub state_dir: PathBuf,
    pub trucks: Vec<Truck>,
}

/// Truck `i`'s BSSID.
pub fn bssid(i: usize) -> String {
    format!("0A:00:00:00:00:{:02X}", i + 16)
}

/// Truck `i`'s IMEI (15 digits).
pub fn imei(i: usize) -> String {
    format!("8678674325{:05}", 10 + i)
}

impl Yard {
    /// The trucks (none in range yet), the uplink (active), an empty bucket on `store`.
    pub async fn start(store: Store, specs: &[TruckSpec]) -> Yard {
        let dir = tempfile::tempdir().expect("tempdir");
        let nm = NmStandIn::start(IFACE).await;
        nm.add_uplink(UPLINK, "depot", UPLINK_BSSID, true).await;
        let router = Router::start(nm.joined()).await;
        let mut trucks = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            let camera_dir = dir.path().join(format!("camera-{i}"));
            let originals = generated_clips(&camera_dir, s.clips, s.size, 100 + i as u64);
            let sim = sim::start(SimOptions {
                dir: camera_dir.clone(),
                imei: imei(i),
                ssid: s.ssid.clone(),
                password: s.psk.clone(),
                ..Default::default()
            })
            .await
            .expect("start sim");
            router.route(&bssid(i), sim.addr());
            trucks.push(Truck {
                ssid: s.ssid.clone(),
                bssid: bssid(i),
                psk: s.psk.clone(),
                imei: imei(i),
                sim,
                camera_dir,
                originals,
            });
        }
        let s3 = TestS3::start_on(store).await;
        let state_dir = dir.path().join("state");
        Yard {
            nm,
            router,
            s3,
            dir,
            state_dir,
            trucks,
        }
    }

    /// Truck `i` drives into range: its hotspot appears (strength 50 + i).
    pub async fn arrive(&self, i: usize) {
        let t = &self.trucks[i];
        self.nm
            .add_ap(&t.ssid, &t.bssid, 50 + i as u8, &t.psk)
            .await;
    }

    /// Truck `i` drives away: its hotspot disappears.
    pub async fn leave(&self, i: usize) {
        self.nm.remove_ap(&self.trucks[i].bssid).await;
    }

    /// The agent's config: `[wifi]` on the yard's interface with the uplink (one radio)
    /// or without (`uplink = false`: S3 over another path), each truck a `[[camera]]` with
    /// its SSID and password and no URL, plus `extra_wifi` lines in `[wifi]` and
    /// `retention` lines in `[retention]`.
    pub fn config_text(&self, uplink: bool, extra_wifi: &str, retention: &str) -> String {
        let mut cams = String::new();
        for (i, t) in self.trucks.iter().enumerate() {
            cams.push_str(&format!(
                "[[camera]]\nname = \"truck-{i}\"\nssid = \"{}\"\npassword = \"{}\"\n\n",
                t.ssid, t.psk
            ));
        }
        self.config_with(&cams, uplink, extra_wifi, retention)
    }

    /// The config with `cams` as its `[[camera]]` sections (maybe none).
    pub fn config_with(
        &self,
        cams: &str,
        uplink: bool,
        extra_wifi: &str,
        retention: &str,
    ) -> String {
        format!(
            r#"state_dir = "{state}"

{cams}
[wifi]
interface = "{IFACE}"
{uplink}camera_url = "{url}"
scan_interval = "1s"
join_timeout = "5s"
uplink_timeout = "5s"
{extra_wifi}

[sync]
poll_interval = "1s"
retry_after = "1s"
destination_wait = "3s"

[s3]
bucket = "fleet-video"
prefix = "dashcam"
region = "us-east-1"
endpoint = "{endpoint}"
force_path_style = true

[retention]
{retention}

[spool]
min_free_bytes = 0
"#,
            state = self.state_dir.display(),
            uplink = if uplink {
                format!("uplink = \"{UPLINK}\"\n")
            } else {
                String::new()
            },
            url = self.router.url(),
            endpoint = self.s3.endpoint,
        )
    }

    pub fn write_config(&self, uplink: bool, extra_wifi: &str, retention: &str) -> PathBuf {
        self.write_config_text(&self.config_text(uplink, extra_wifi, retention))
    }

    /// Writes `text` as the agent's config, readable by its owner only (it holds passwords).
    pub fn write_config_text(&self, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.path().join("config.toml");
        std::fs::write(&p, text).expect("config");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        p
    }

    /// `qucam-offload status --json`, parsed.
    pub async fn status(&self) -> serde_json::Value {
        let mut a = self.spawn(&["status", "--json"]);
        assert_eq!(a.exit(30).await, Some(0), "{}", a.log());
        let out = std::fs::read_to_string(a.stderr.with_extension("stdout")).expect("stdout");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}: {out}"))
    }

    /// The environment of an agent child process (after `env_clear`): the test S3
    /// credentials, HOME inside the yard's temp dir, and the private bus as the system bus.
    pub fn child_env(&self) -> Vec<(String, String)> {
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        for name in ["aws-config", "aws-credentials"] {
            std::fs::write(home.join(name), "").expect("aws file");
        }
        let mut env = self.s3.env();
        let h = |p: PathBuf| p.display().to_string();
        env.extend([
            ("HOME".into(), h(home.clone())),
            ("XDG_CONFIG_HOME".into(), h(home.join("config"))),
            ("XDG_DATA_HOME".into(), h(home.join("data"))),
            ("AWS_CONFIG_FILE".into(), h(home.join("aws-config"))),
            (
                "AWS_SHARED_CREDENTIALS_FILE".into(),
                h(home.join("aws-credentials")),
            ),
            (
                "DBUS_SYSTEM_BUS_ADDRESS".into(),
                self.nm.bus_address().to_string(),
            ),
            ("NO_COLOR".into(), "1".into()),
            ("RUST_LOG".into(), "info,qucam_offload=debug".into()),
        ]);
        env
    }

    /// The object key of truck `i`'s clip `name`.
    pub fn key(&self, i: usize, name: &str) -> String {
        let date = format!("{}-{}-{}", &name[0..4], &name[4..6], &name[6..8]);
        format!("dashcam/{}/{date}/{name}", self.trucks[i].imei)
    }

    /// Truck `i`'s event clips (event code not 00), which the agent offloads.
    pub fn event_clips(&self, i: usize) -> Vec<String> {
        self.trucks[i]
            .originals
            .keys()
            .filter(|n| &n[16..18] != "00")
            .cloned()
            .collect()
    }

    /// Whether every event clip of truck `i` is in the bucket with the camera's bytes.
    pub fn all_in_bucket(&self, i: usize) -> bool {
        self.event_clips(i).iter().all(|n| {
            self.s3
                .object_bytes(&self.key(i, n))
                .is_some_and(|b| sha256_hex(&b) == self.trucks[i].originals[n])
        })
    }

    /// The state database, opened by the test.
    pub fn db(&self) -> Db {
        Db::open(&self.state_dir.join("state.db"))
    }

    /// Clip states of truck `i`, by name.
    pub fn states(&self, i: usize) -> BTreeMap<String, String> {
        self.db()
            .clips()
            .into_iter()
            .filter(|c| c.imei == self.trucks[i].imei)
            .map(|c| (c.name, c.state))
            .collect()
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_qucam-offload");

/// A `qucam-offload` child process of the yard; killed when dropped.
pub struct AgentProc {
    pub child: tokio::process::Child,
    pub stderr: PathBuf,
}

impl Yard {
    /// Starts `qucam-offload --config <yard config> <args>` (stdout and stderr to files).
    pub fn spawn(&self, args: &[&str]) -> AgentProc {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let logs = self.dir.path().join("logs");
        std::fs::create_dir_all(&logs).expect("logs");
        let stderr = logs.join(format!("{n}.stderr"));
        let cfg = self.dir.path().join("config.toml");
        let child = tokio::process::Command::new(BIN)
            .env_clear()
            .envs(self.child_env())
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(logs.join(format!("{n}.stdout"))).expect("stdout"))
            .stderr(std::fs::File::create(&stderr).expect("stderr"))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn qucam-offload");
        AgentProc { child, stderr }
    }
}

impl AgentProc {
    /// Waits for the exit (at most `secs`); the exit code (`None`: killed by a signal).
    pub async fn exit(&mut self, secs: u64) -> Option<i32> {
        let r = tokio::time::timeout(std::time::Duration::from_secs(secs), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the agent did not exit within {secs} s:\n{}", self.log()));
        r.expect("wait").code()
    }

    /// Waits until the agent has begun `n` more rotations (scans) than so far (the
    /// rotation's debug line, by its text: it does not depend on where the module lives).
    pub async fn wait_rotations(&self, n: usize) {
        let count = |log: &str| {
            log.matches("a rotation over the hotspots in range begins")
                .count()
        };
        let want = count(&self.log()) + n;
        wait_until(60, "more rotations", || async {
            count(&self.log()) >= want
        })
        .await;
    }

    /// Lets the agent begin `n` more rotations, then stops it with SIGTERM; it must exit 0.
    /// Its log.
    pub async fn stop_after_rotations(&mut self, n: usize) -> String {
        self.wait_rotations(n).await;
        self.signal("-TERM");
        assert_eq!(self.exit(60).await, Some(0), "{}", self.log());
        self.log()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running").to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }
}

/// Waits until `cond` holds, polling every 50 ms, for at most `secs`; panics with `what`.
pub async fn wait_until<F, Fut>(secs: u64, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
