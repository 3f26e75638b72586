//! Many cameras for agent scenarios: one simulator process serving N cameras
//! (`qucam_sim::start_fleet`, each its own port, IMEI and clips) and one S3 server on
//! 127.0.0.1, with the agent wired to all of them in-process.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use qucam_offload::agent::Agent;
use qucam_offload::config::Config;
use qucam_offload::upload::{Destination, S3Destination};
use qucam_sim::{self as sim, FleetCamera, SimOptions};
use tokio_util::sync::CancellationToken;

use super::fleet::generated_clips;
use super::s3::{Store, TestS3};

pub struct ManyCameras {
    pub cameras: Vec<FleetCamera>,
    pub s3: TestS3,
    pub dir: tempfile::TempDir,
    pub state_dir: PathBuf,
    /// SHA-256 (hex) of every clip each camera held at the start, by file name.
    pub originals: Vec<BTreeMap<String, String>>,
}

impl ManyCameras {
    /// `n` cameras, each holding `clips` generated clips of `size` bytes (its own seed), and
    /// an empty bucket on `store`.
    pub async fn start_on(store: Store, n: usize, clips: usize, size: u64) -> ManyCameras {
        let dir = tempfile::tempdir().expect("tempdir");
        let cameras_dir = dir.path().join("cameras");
        let originals = (0..n)
            .map(|i| {
                let cam = cameras_dir.join(sim::fleet_camera_name(i));
                generated_clips(&cam, clips, size, 100 + i as u64)
            })
            .collect();
        let cameras = sim::start_fleet(
            n,
            SimOptions {
                dir: cameras_dir,
                ..SimOptions::default()
            },
        )
        .await
        .expect("start the fleet");
        let s3 = TestS3::start_on(store).await;
        let state_dir = dir.path().join("state");
        ManyCameras {
            cameras,
            s3,
            dir,
            state_dir,
            originals,
        }
    }

    /// The agent's config: one `[[camera]]` per simulated camera, `sync` lines added.
    pub fn config_text(&self, sync: &str) -> String {
        let mut text = format!("state_dir = \"{}\"\n\n", self.state_dir.display());
        for c in &self.cameras {
            text.push_str(&format!(
                "[[camera]]\nname = \"{}\"\nurl = \"{}\"\nconnect_timeout = \"1s\"\nidle_timeout = \"5s\"\n\n",
                c.name,
                c.url()
            ));
        }
        text.push_str(&format!(
            r#"[sync]
poll_interval = "1s"
page_size = 50
retry_after = "1s"
destination_wait = "3s"
{sync}

[s3]
bucket = "fleet-video"
prefix = "dashcam"
region = "us-east-1"
endpoint = "{endpoint}"
force_path_style = true

[spool]
min_free_bytes = 0
"#,
            endpoint = self.s3.endpoint
        ));
        text
    }

    pub fn config(&self, sync: &str) -> Config {
        Config::parse(&self.config_text(sync), Path::new("test.toml")).expect("config")
    }

    /// The agent in-process, talking to the S3 server with the test credentials.
    pub fn agent(&self, sync: &str) -> Arc<Agent> {
        let cfg = self.config(sync);
        let settings = qucam_offload::upload::s3_settings(cfg.s3.as_ref().expect("[s3]"));
        let dest = Destination::S3(S3Destination::from_client(self.s3.client(), &settings));
        Arc::new(Agent::new(cfg, dest, CancellationToken::new()).expect("agent"))
    }

    /// The event clips (event code not 00) camera `i` held at the start.
    pub fn event_clips(&self, i: usize) -> Vec<String> {
        self.originals[i]
            .keys()
            .filter(|n| &n[16..18] != "00")
            .cloned()
            .collect()
    }

    /// The object key of camera `i`'s clip `name`.
    pub fn key(&self, i: usize, name: &str) -> String {
        let date = format!("{}-{}-{}", &name[0..4], &name[4..6], &name[6..8]);
        format!("dashcam/{}/{date}/{name}", self.cameras[i].imei)
    }
}
