//! A fleet in a box for agent scenarios: a simulated camera (`qucam-sim`) and an S3
//! server (`s3s-fs`) on 127.0.0.1, a state dir, and the agent wired to them in-process
//! or as a child process.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use qucam_offload::agent::{Agent, PassOutcome};
use qucam_offload::config::Config;
use qucam_offload::upload::{Destination, S3Destination};
use qucam_sim::{self as sim, SimHandle, SimOptions};
use tokio_util::sync::CancellationToken;

use super::db::Db;
use super::s3::{Store, TestS3};

pub const IMEI: &str = "867867432522518";

/// Sections of the agent's config that scenarios change.
#[derive(Debug, Clone, Default)]
pub struct Knobs {
    /// Lines added to `[sync]`.
    pub sync: String,
    /// Lines added to `[s3]`.
    pub s3: String,
    /// Lines added to `[retention]`.
    pub retention: String,
    /// Lines added to `[spool]`.
    pub spool: String,
    /// Lines added to `[[camera]]`.
    pub camera: String,
}

pub struct Fleet {
    pub sim: SimHandle,
    pub s3: TestS3,
    pub dir: tempfile::TempDir,
    pub camera_dir: PathBuf,
    pub state_dir: PathBuf,
    /// SHA-256 (hex) of every clip the camera held at the start, by file name.
    pub originals: BTreeMap<String, String>,
}

pub use super::sim::sha256_hex;

/// How a `qucam-offload` child ended.
#[derive(Debug)]
pub struct Out {
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Writes `n` generated clips of `size` bytes (from `seed`) into `camera_dir`. SHA-256 (hex)
/// of each, by file name.
pub fn generated_clips(
    camera_dir: &Path,
    n: usize,
    size: u64,
    seed: u64,
) -> BTreeMap<String, String> {
    std::fs::create_dir_all(camera_dir).expect("camera dir");
    let paths = sim::generate_clips(camera_dir, n, size, seed).expect("generate clips");
    let mut originals = BTreeMap::new();
    for p in paths {
        let bytes = std::fs::read(&p).expect("read clip");
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        originals.insert(name, sha256_hex(&bytes));
    }
    originals
}

impl Fleet {
    /// A camera holding `n` generated clips of `size` bytes, and an empty `s3s-fs` bucket.
    pub async fn start(n: usize, size: u64) -> Fleet {
        Fleet::start_on(Store::S3sFs, n, size).await
    }

    /// A camera holding `n` generated clips of `size` bytes, and an empty bucket on `store`.
    pub async fn start_on(store: Store, n: usize, size: u64) -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let camera_dir = dir.path().join("camera");
        let state_dir = dir.path().join("state");
        let originals = generated_clips(&camera_dir, n, size, 42);
        let sim = sim::start(SimOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            dir: camera_dir.clone(),
            imei: IMEI.into(),
            ..Default::default()
        })
        .await
        .expect("start sim");
        let s3 = TestS3::start_on(store).await;
        Fleet {
            sim,
            s3,
            dir,
            camera_dir,
            state_dir,
            originals,
        }
    }

    /// The config text for this fleet.
    pub fn config_text(&self, k: &Knobs) -> String {
        format!(
            r#"state_dir = "{state}"

[[camera]]
name = "truck-12"
url = "{url}"
connect_timeout = "1s"
idle_timeout = "2s"
{camera}

[sync]
poll_interval = "1s"
page_size = 50
retry_after = "1s"
{wait}{sync}

[s3]
bucket = "fleet-video"
prefix = "dashcam"
region = "us-east-1"
endpoint = "{endpoint}"
force_path_style = true
{s3}

[retention]
{retention}

[spool]
{spool}
"#,
            state = self.state_dir.display(),
            url = self.sim.url(),
            endpoint = self.s3.endpoint,
            camera = k.camera,
            sync = k.sync,
            // A paused destination is waited for 3 s by `run --once` (not 2 min).
            wait = if k.sync.contains("destination_wait") {
                ""
            } else {
                "destination_wait = \"3s\"\n"
            },
            s3 = k.s3,
            retention = k.retention,
            spool = if k.spool.contains("min_free_bytes") {
                k.spool.clone()
            } else {
                format!("min_free_bytes = 0\n{}", k.spool)
            },
        )
    }

    /// Writes the config to a file (for child processes).
    pub fn write_config(&self, k: &Knobs) -> PathBuf {
        let p = self.dir.path().join("config.toml");
        std::fs::write(&p, self.config_text(k)).expect("write config");
        p
    }

    pub fn config(&self, k: &Knobs) -> Config {
        Config::parse(&self.config_text(k), Path::new("test.toml")).expect("config")
    }

    /// The agent in-process, talking to the S3 server with the test credentials.
    pub fn agent(&self, k: &Knobs) -> Arc<Agent> {
        let cfg = self.config(k);
        let settings = qucam_offload::upload::s3_settings(cfg.s3.as_ref().unwrap());
        let dest = Destination::S3(S3Destination::from_client(self.s3.client(), &settings));
        Arc::new(Agent::new(cfg, dest, CancellationToken::new()).expect("agent"))
    }

    /// One `run --once` pass in-process.
    pub async fn run_once(&self, k: &Knobs) -> PassOutcome {
        let agent = self.agent(k);
        let mut out = agent.run_once().await;
        assert_eq!(out.len(), 1);
        out.remove(0).1
    }

    /// Runs passes until one finishes with nothing remaining (at most `max`).
    pub async fn run_until_done(&self, k: &Knobs, max: usize) -> usize {
        for i in 1..=max {
            if let PassOutcome::Done { remaining: 0, .. } = self.run_once(k).await {
                return i;
            }
        }
        panic!("not done after {max} passes");
    }

    /// The object key of a clip.
    pub fn key(&self, name: &str) -> String {
        let date = format!("{}-{}-{}", &name[0..4], &name[4..6], &name[6..8]);
        format!("dashcam/{IMEI}/{date}/{name}")
    }

    /// Names of the original clips that are event clips (event code not 00).
    pub fn event_clips(&self) -> Vec<String> {
        self.originals
            .keys()
            .filter(|n| &n[16..18] != "00")
            .cloned()
            .collect()
    }

    /// Asserts the bucket holds exactly the original bytes of `name` under its key.
    pub fn assert_in_bucket(&self, name: &str) {
        let key = self.key(name);
        let got = self
            .s3
            .object_bytes(&key)
            .unwrap_or_else(|| panic!("{key} missing from the bucket"));
        assert_eq!(
            sha256_hex(&got),
            self.originals[name],
            "{key}: bucket bytes differ from the camera's clip"
        );
    }

    /// All object keys in the bucket.
    pub fn bucket_keys(&self) -> Vec<String> {
        self.s3.object_keys()
    }

    /// The state database's file.
    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("state.db")
    }

    /// The state database, opened by the test.
    pub fn db(&self) -> Db {
        Db::open(&self.db_path())
    }

    /// Clip state by file name.
    pub fn states(&self) -> BTreeMap<String, String> {
        self.db()
            .clips()
            .into_iter()
            .map(|c| (c.name, c.state))
            .collect()
    }

    pub fn clip_on_camera(&self, name: &str) -> bool {
        let p = clip_path(&self.camera_dir, name);
        p.exists()
    }

    /// HOME of a `qucam-offload` child process, inside the fleet's temp dir, with empty AWS
    /// config and credentials files (nothing from the real user's).
    pub fn child_home(&self) -> PathBuf {
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home dir");
        for name in ["aws-config", "aws-credentials"] {
            std::fs::write(home.join(name), "").expect("empty aws file");
        }
        home
    }

    /// The whole environment of a `qucam-offload` child process (after `env_clear`): the test
    /// S3 credentials, [`Fleet::child_home`] as HOME with the XDG dirs and AWS files under
    /// it, no colours, and the agent's debug log.
    pub fn child_env(&self) -> Vec<(String, std::ffi::OsString)> {
        let home = self.child_home();
        let mut env: Vec<(String, std::ffi::OsString)> = self
            .s3
            .env()
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
        for (k, v) in [
            ("HOME", home.clone()),
            ("XDG_CONFIG_HOME", home.join("config")),
            ("XDG_DATA_HOME", home.join("data")),
            ("AWS_CONFIG_FILE", home.join("aws-config")),
            ("AWS_SHARED_CREDENTIALS_FILE", home.join("aws-credentials")),
        ] {
            env.push((k.to_owned(), v.into_os_string()));
        }
        env.push(("NO_COLOR".to_owned(), "1".into()));
        env.push(("RUST_LOG".to_owned(), "info,qucam_offload=debug".into()));
        env
    }
}

/// Where the simulator keeps a clip: `DIR/yyyyMMdd/HH/name`.
pub fn clip_path(camera_dir: &Path, name: &str) -> PathBuf {
    camera_dir.join(&name[0..8]).join(&name[9..11]).join(name)
}
