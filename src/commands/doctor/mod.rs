//! `qucam-offload doctor [--write-test]`: checks a setup end to end and prints one
//! pass/fail line per check, each failure with a hint at the fix.
//!
//! Checks, in order: the config loads; the state dir is writable and its disk has more
//! free space than `[spool] min_free_bytes`; the destination (S3: credentials resolve,
//! HeadBucket answers, and with `--write-test` a probe object
//! `{prefix}/.qucam-offload-doctor-<uuid>` is PUT, read back and deleted; a local
//! directory: writable); each camera: reachable, its IMEI, firmware and SD card usage,
//! and whether it honours `Range` (one listed clip fetched from byte 1 must come back
//! `206`; a camera that ignores Range is a warning: downloads still work, they only
//! restart from byte 0 after an interruption, but the delete challenge holds its deletes).
//!
//! With `[wifi]`, the depot Wi-Fi checks (`wifi.rs`) come before the cameras.
//!
//! Exit code: 0 when nothing failed (warnings allowed), 1 otherwise, 2 for a config error.

mod wifi;

use std::path::Path;

use crate::config::{Config, redact_url};
use crate::upload::Destination;
use qucam::{CameraClient, ClientOptions, ListQuery};

/// The fix hint for a camera that ignores `Range`.
const NO_RANGE_HINT: &str = "interrupted downloads restart from byte 0 instead of resuming, and \
    the delete challenge cannot read its clips, so nothing is deleted from it \
    (retention.challenge_blocks = 0 deletes on the listing's word)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pass,
    Warn,
    Fail,
}

/// The outcome of one check.
struct Check {
    status: Status,
    name: String,
    detail: String,
    hint: Option<String>,
}

#[derive(Default)]
struct Report {
    checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, status: Status, name: impl Into<String>, detail: impl Into<String>) {
        self.push(status, name, detail, None::<String>);
    }

    fn push(
        &mut self,
        status: Status,
        name: impl Into<String>,
        detail: impl Into<String>,
        hint: Option<impl Into<String>>,
    ) {
        let c = Check {
            status,
            name: name.into(),
            detail: detail.into(),
            hint: hint.map(Into::into),
        };
        let tag = match c.status {
            Status::Pass => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        println!("{tag}  {:<22} {}", c.name, c.detail);
        if let Some(h) = &c.hint {
            println!("      fix: {h}");
        }
        self.checks.push(c);
    }

    fn fail(&mut self, name: impl Into<String>, detail: impl Into<String>, hint: &str) {
        self.push(Status::Fail, name, detail, Some(hint));
    }
}

/// Runs every check; returns the exit code.
pub async fn run(config: Option<&Path>, write_test: bool) -> anyhow::Result<u8> {
    let path = Config::resolve_path(config)?;
    // A config that does not load is an error with exit code 2, as everywhere else.
    let cfg = Config::find_and_load(Some(&path))?;
    let mut r = Report::default();
    r.add(
        Status::Pass,
        "config",
        format!(
            "{} ({} camera{})",
            path.display(),
            cfg.cameras.len(),
            if cfg.cameras.len() == 1 { "" } else { "s" }
        ),
    );
    check_state_dir(&cfg, &mut r);
    check_destination(&cfg, write_test, &mut r).await;
    wifi::check_wifi(&cfg, &mut r).await;
    // A camera known only by its hotspot answers only while the radio is on it.
    for cam in cfg.cameras.iter().filter(|c| !c.hotspot_only) {
        check_camera(&cfg, cam, &mut r).await;
    }
    let failed = r.checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = r.checks.iter().filter(|c| c.status == Status::Warn).count();
    println!();
    if failed == 0 {
        println!(
            "all {} checks passed{}",
            r.checks.len(),
            if warned > 0 {
                format!(" ({warned} warning{})", if warned == 1 { "" } else { "s" })
            } else {
                String::new()
            }
        );
        Ok(0)
    } else {
        println!("{failed} of {} checks failed", r.checks.len());
        Ok(1)
    }
}

fn check_state_dir(cfg: &Config, r: &mut Report) {
    let dir = cfg.state_dir();
    let hint = "create it and make it writable by the agent's user (under systemd: StateDirectory= or `install -d -o qucam-offload`), or set state_dir";
    if let Err(e) = std::fs::create_dir_all(&dir) {
        r.fail(
            "state dir",
            format!("cannot create {}: {e}", dir.display()),
            hint,
        );
        return;
    }
    let probe = dir.join(format!(".doctor-{}", uuid::Uuid::new_v4()));
    match std::fs::write(&probe, b"probe") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            r.add(
                Status::Pass,
                "state dir",
                format!("{} is writable", dir.display()),
            );
        }
        Err(e) => {
            r.fail(
                "state dir",
                format!("cannot write in {}: {e}", dir.display()),
                hint,
            );
            return;
        }
    }
    let min = cfg.spool.min_free_bytes;
    match fs4::available_space(&dir) {
        Ok(free) if free >= min => r.add(
            Status::Pass,
            "free space",
            format!("{} free (minimum {})", mb(free), mb(min)),
        ),
        Ok(free) => r.fail(
            "free space",
            format!("{} free, less than spool.min_free_bytes ({})", mb(free), mb(min)),
            "free some space on that disk, move state_dir to a bigger one, or lower [spool] min_free_bytes (downloads pause below it)",
        ),
        Err(e) => r.add(
            Status::Warn,
            "free space",
            format!("cannot tell the free space of {}: {e}", dir.display()),
        ),
    }
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

async fn check_destination(cfg: &Config, write_test: bool, r: &mut Report) {
    if cfg.s3.is_none() && cfg.local.is_none() {
        r.fail(
            "destination",
            "none configured",
            "add an [s3] section (or [local] for a directory)",
        );
        return;
    }
    if let Some(s3) = &cfg.s3
        && !check_credentials(s3, r).await
    {
        return;
    }
    let dest = match crate::upload::destination(cfg).await {
        Ok(d) => d,
        Err(e) => {
            r.fail(
                "destination",
                format!("{e:#}"),
                "check the [s3] or [local] section",
            );
            return;
        }
    };
    match &dest {
        Destination::S3(s3) => {
            for step in s3.check(write_test).await {
                match step.outcome {
                    Ok(detail) => r.add(Status::Pass, step.what, detail),
                    Err(e) => {
                        let hint = match step.what {
                            "s3 bucket" => {
                                "check [s3] bucket, region and endpoint (force_path_style = true for most S3-compatible stores), the network path to it, and that the credentials may access the bucket (s3:ListBucket)"
                            }
                            _ => {
                                "the credentials need s3:PutObject, s3:GetObject and s3:DeleteObject on the prefix; with an S3-compatible store that rejects checksum headers set checksum = \"when_required\""
                            }
                        };
                        r.fail(step.what, e, hint);
                    }
                }
            }
        }
        Destination::Local(l) => {
            let probe = l
                .root()
                .join(format!(".qucam-offload-doctor-{}", uuid::Uuid::new_v4()));
            match std::fs::write(&probe, b"probe") {
                Ok(()) => {
                    let _ = std::fs::remove_file(&probe);
                    r.add(
                        Status::Pass,
                        "local destination",
                        format!("{} is writable", l.root().display()),
                    );
                }
                Err(e) => r.fail(
                    "local destination",
                    format!("cannot write in {}: {e}", l.root().display()),
                    "check [local] dir: it must exist (or be creatable), be mounted, and be writable by the agent's user",
                ),
            }
        }
    }
}

/// Whether the standard AWS chain (as the agent uses it) yields credentials.
async fn check_credentials(s3: &crate::config::S3Config, r: &mut Report) -> bool {
    use aws_sdk_s3::config::ProvideCredentials as _;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(crate::upload::s3_http_client());
    if let Some(region) = &s3.region {
        loader = loader.region(aws_sdk_s3::config::Region::new(region.clone()));
    }
    let sdk = loader.load().await;
    let got = match sdk.credentials_provider() {
        None => Err("no credentials provider".to_string()),
        Some(p) => {
            match tokio::time::timeout(std::time::Duration::from_secs(30), p.provide_credentials())
                .await
            {
                Err(_) => Err("no credentials within 30s".to_string()),
                Ok(Err(e)) => Err(crate::upload::error_chain(&e)),
                Ok(Ok(_)) => Ok(()),
            }
        }
    };
    match got {
        Ok(()) => {
            r.add(Status::Pass, "s3 credentials", "AWS credentials resolve");
            true
        }
        Err(e) => {
            r.fail(
                "s3 credentials",
                e,
                "give the agent AWS credentials: an instance role, a credentials file passed with the unit's LoadCredential= and AWS_SHARED_CREDENTIALS_FILE (docs/install.md), AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in its EnvironmentFile, or a profile in ~/.aws",
            );
            false
        }
    }
}

async fn check_camera(cfg: &Config, cam: &crate::config::CameraConfig, r: &mut Report) {
    let name = format!("camera {}", cam.name);
    let id = qucam::client_id(&cfg.state_dir(), cam.client_id.as_deref())
        .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string());
    let mut o = ClientOptions::new(id);
    o.params = cam.params;
    o.connect_timeout = cam.connect_timeout;
    o.idle_timeout = cam.idle_timeout;
    o.request_timeout = cam.idle_timeout.max(std::time::Duration::from_secs(5));
    let client = match CameraClient::new(&cam.url, o) {
        Ok(c) => c,
        Err(e) => {
            // The URL only as redact_url shows it (the config checks make this rare).
            let shown = match &e {
                qucam::CameraError::InvalidUrl(u) if *u == cam.url => {
                    format!("invalid camera URL {}", redact_url(&cam.url))
                }
                _ => e.to_string(),
            };
            r.fail(&name, shown, "fix the camera's url in [[camera]]");
            return;
        }
    };
    let info = match client.device_info().await {
        Ok(i) => i,
        Err(e) if e.is_unreachable() => {
            r.fail(
                &name,
                format!("not reachable at {}: {e}", redact_url(&cam.url)),
                "is the vehicle in range and its hotspot (or NAT port) up, and is this machine on that network? Check url (http://192.168.43.1:2345 on the hotspot)",
            );
            return;
        }
        Err(e) => {
            r.fail(
                &name,
                format!(
                    "{} answered get_device_info badly: {e}",
                    redact_url(&cam.url)
                ),
                "is this a Qucam camera? Try `qucam-offload camera --name NAME info`; a different firmware may need params = \"query\" or \"json\"",
            );
            return;
        }
    };
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "?".into());
    r.add(
        Status::Pass,
        &name,
        format!(
            "reachable at {}: IMEI {}, {} firmware {}, SD card {} used of {}",
            redact_url(&cam.url),
            info.imei,
            opt(&info.device_name),
            opt(&info.application_version),
            opt(&info.sd_card_used_space),
            opt(&info.sd_card_size),
        ),
    );
    check_range(&client, &name, r).await;
}

/// Whether the camera honours `Range`: one listed clip fetched from byte 1 must be a 206.
async fn check_range(client: &CameraClient, name: &str, r: &mut Report) {
    let range = format!("{name} range");
    let q = ListQuery {
        count: Some(1),
        offset: Some(0),
        // Firmware before V2.1 ignores `count` and sends the whole listing.
        max_entries: Some(crate::agent::MAX_LISTING),
        ..Default::default()
    };
    let first = match client.list_files(&q).await {
        Ok(files) => files.into_iter().find(|f| !f.is_directory),
        Err(e) => {
            r.fail(
                name,
                format!("cannot list clips: {e}"),
                "try `qucam-offload camera --name NAME files --count 5`; a different firmware may need params = \"query\" or \"json\"",
            );
            return;
        }
    };
    let Some(f) = first else {
        r.add(
            Status::Pass,
            range,
            "no clip on the camera to test Range with",
        );
        return;
    };
    match client.download(&f.path, 1).await {
        Ok(d) if d.resumed => r.add(
            Status::Pass,
            range,
            format!("206 for bytes=1- of {}: downloads resume", f.name),
        ),
        Ok(_) => r.push(
            Status::Warn,
            range,
            format!("the camera ignores Range (200 for bytes=1- of {})", f.name),
            Some(NO_RANGE_HINT),
        ),
        Err(qucam::CameraError::RangeNotHonoured { got, .. }) => r.push(
            Status::Warn,
            range,
            format!("Range not honoured for {}: {got}", f.name),
            Some(NO_RANGE_HINT),
        ),
        Err(e) => r.fail(
            range,
            format!("cannot download {}: {e}", f.path),
            "try `qucam-offload camera --name NAME download PATH`; check the camera's SD card",
        ),
    }
}
