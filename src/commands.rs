//! The agent-facing commands: `run` (daemon or `--once`), `status` and `demo`.
//!
//! Exit codes of `run --once`: 0 every reachable camera fully processed; 1 some work
//! failed or remains; 2 usage or config error; 3 no configured camera reachable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::agent::{self, Agent, PassOutcome};
use crate::cli::{Command, DemoArgs, Exit, load_config};
use crate::config::{ChecksumMode, Config, LogFormat};
use crate::store::{Store, now};
use crate::upload::{self, Destination, LocalDestination, S3Destination, S3Settings};

pub async fn dispatch(config: Option<&Path>, cmd: Command) -> Result<u8> {
    match cmd {
        Command::Run { once } => {
            let cfg = load_config(config)?;
            init_logging(&cfg);
            run(cfg, once).await
        }
        Command::Status { json } => {
            let cfg = load_config(config)?;
            status(&cfg, json).await
        }
        Command::Demo(args) => demo(args).await,
        Command::Camera(_) => unreachable!("handled by cli"),
    }
}

/// Sets up `tracing`: `RUST_LOG` wins over `[log] level`; text or JSON lines on stderr.
pub fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // The in-process simulator (demo) logs every request: keep it quiet.
        .add_directive("qucam_offload::sim=warn".parse().expect("static directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// S3 settings from the `[s3]` section.
pub fn s3_settings(s3: &crate::config::S3Config) -> S3Settings {
    S3Settings {
        bucket: s3.bucket.clone(),
        prefix: s3.prefix.clone(),
        region: s3.region.clone().unwrap_or_default(),
        endpoint: s3.endpoint.clone(),
        force_path_style: s3.force_path_style,
        multipart_threshold: s3.multipart_threshold,
        part_size: s3.part_size,
        part_concurrency: s3.part_concurrency,
        checksum: match s3.checksum {
            ChecksumMode::Sha256 => upload::ChecksumMode::Sha256,
            ChecksumMode::WhenRequired => upload::ChecksumMode::WhenRequired,
        },
    }
}

/// The destination the config names.
pub async fn destination(cfg: &Config) -> Result<Destination> {
    if let Some(s3) = &cfg.s3 {
        return Ok(Destination::S3(S3Destination::new(&s3_settings(s3)).await?));
    }
    match &cfg.local {
        Some(l) => {
            std::fs::create_dir_all(&l.dir)
                .with_context(|| format!("cannot create local destination {}", l.dir.display()))?;
            Ok(Destination::Local(LocalDestination::new(l.dir.clone())))
        }
        None => Err(crate::cli::usage(
            "no destination configured: add [s3] or [local]",
        )),
    }
}

/// Holds the state dir's lock for the life of the agent: a second agent refuses to start.
pub struct StateLock {
    _file: std::fs::File,
}

pub fn lock_state_dir(state_dir: &Path) -> Result<StateLock> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    let path = state_dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(StateLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(Exit {
            code: 1,
            message: format!(
                "another qucam-offload agent is already using {} (lock {}); stop it first",
                state_dir.display(),
                path.display()
            ),
        }
        .into()),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(anyhow::Error::new(e).context(format!("cannot lock {}", path.display())))
        }
    }
}

/// Cancels `token` on SIGINT or SIGTERM.
fn stop_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        info!("stopping: finishing the current writes and recording progress");
        token.cancel();
    });
}

/// Exit code of a `--once` pass from each camera's outcome.
pub fn once_exit_code(outcomes: &[(String, PassOutcome)]) -> u8 {
    if outcomes.iter().all(|(_, o)| *o == PassOutcome::Away) {
        return 3;
    }
    let all_done = outcomes.iter().all(|(_, o)| {
        matches!(
            o,
            PassOutcome::Away | PassOutcome::Done { remaining: 0, .. }
        )
    });
    if all_done { 0 } else { 1 }
}

async fn run(cfg: Config, once: bool) -> Result<u8> {
    let state_dir = cfg.state_dir();
    let _lock = lock_state_dir(&state_dir)?;
    let token = CancellationToken::new();
    stop_on_signals(token.clone());
    let dest = destination(&cfg).await?;
    info!(
        destination = %dest.describe(),
        state_dir = %state_dir.display(),
        cameras = cfg.cameras.len(),
        "qucam-offload {} starting{}",
        env!("CARGO_PKG_VERSION"),
        if once { " (one pass)" } else { "" }
    );
    let agent = Arc::new(Agent::new(cfg, dest, token.clone())?);
    if once {
        let outcomes = agent.run_once().await;
        for (name, o) in &outcomes {
            match o {
                PassOutcome::Away => warn!(camera = %name, "camera not reachable"),
                PassOutcome::Done { imei, remaining } => {
                    info!(camera = %name, imei = %imei, remaining, "pass finished")
                }
                PassOutcome::Failed { error, .. } => warn!(camera = %name, "pass failed: {error}"),
            }
        }
        if token.is_cancelled() {
            return Ok(1);
        }
        Ok(once_exit_code(&outcomes))
    } else {
        agent.run().await;
        info!("stopped");
        Ok(0)
    }
}

/// One camera in `status`.
#[derive(Debug, Serialize)]
pub struct CameraStatus {
    pub imei: String,
    pub name: Option<String>,
    pub device: Option<String>,
    pub firmware: Option<String>,
    pub last_seen: i64,
    pub clips: BTreeMap<String, i64>,
    pub bytes_offloaded: i64,
    pub lost: i64,
    pub failures: Vec<Failure>,
    pub uploads_in_flight: Vec<String>,
    /// Why downloads from this camera are paused (e.g. the spool's disk is full).
    pub downloads_paused: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Failure {
    pub clip: String,
    pub state: String,
    pub attempts: i64,
    pub error: String,
    pub retry_after: Option<i64>,
}

/// Everything `status` reports, per camera.
pub async fn collect_status(store: &Store) -> Result<Vec<CameraStatus>> {
    let mut out = Vec::new();
    for cam in store.cameras().await? {
        let counts = store.counts(&cam.imei).await?;
        let clips: BTreeMap<String, i64> = counts.iter().map(|(s, n, _)| (s.clone(), *n)).collect();
        let bytes_offloaded = counts
            .iter()
            .filter(|(s, _, _)| matches!(s.as_str(), "verified" | "retained" | "deleted"))
            .map(|(_, _, b)| *b)
            .sum();
        let all = store.clips_of(&cam.imei).await?;
        let failures = all
            .iter()
            .filter(|c| c.state == "failed" || c.state == "refused")
            .map(|c| Failure {
                clip: c.name.clone(),
                state: c.state.clone(),
                attempts: c.attempts,
                error: c.reason.clone().unwrap_or_default(),
                retry_after: c.retry_after,
            })
            .collect();
        let uploads_in_flight = all
            .iter()
            .filter(|c| c.state == "uploading" || c.upload_id.is_some())
            .map(|c| c.name.clone())
            .collect();
        let downloads_paused = store
            .notice(agent::pause_key(&cam.imei))
            .await?
            .map(|(m, _)| m);
        out.push(CameraStatus {
            downloads_paused,
            lost: clips.get("lost").copied().unwrap_or(0),
            imei: cam.imei,
            name: cam.config_name,
            device: cam.device_name,
            firmware: cam.firmware,
            last_seen: cam.last_seen,
            clips,
            bytes_offloaded,
            failures,
            uploads_in_flight,
        });
    }
    Ok(out)
}

fn ago(t: i64) -> String {
    let d = (now() - t).max(0);
    match d {
        0..=59 => format!("{d}s ago"),
        60..=3599 => format!("{}m ago", d / 60),
        3600..=86399 => format!("{}h ago", d / 3600),
        _ => format!("{}d ago", d / 86400),
    }
}

/// Prints the status of the store at `state_dir`.
pub async fn print_status(store: &Store, json: bool) -> Result<()> {
    let st = collect_status(store).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    if st.is_empty() {
        println!("no camera seen yet");
    }
    for c in &st {
        println!(
            "{} (IMEI {}, {}), last seen {}",
            c.name.as_deref().unwrap_or("?"),
            c.imei,
            c.device.as_deref().unwrap_or("?"),
            ago(c.last_seen)
        );
        let parts: Vec<String> = c.clips.iter().map(|(s, n)| format!("{s} {n}")).collect();
        println!("  clips: {}", parts.join(", "));
        println!(
            "  offloaded: {:.1} MB, lost: {}",
            c.bytes_offloaded as f64 / 1e6,
            c.lost
        );
        if let Some(p) = &c.downloads_paused {
            println!("  {p}");
        }
        if !c.uploads_in_flight.is_empty() {
            println!("  uploads in flight: {}", c.uploads_in_flight.join(", "));
        }
        for f in &c.failures {
            println!(
                "  {} {} (attempts {}): {}",
                f.state, f.clip, f.attempts, f.error
            );
        }
    }
    Ok(())
}

async fn status(cfg: &Config, json: bool) -> Result<u8> {
    let db = agent::db_path(&cfg.state_dir());
    if !db.exists() {
        if json {
            println!("[]");
        } else {
            println!("no state yet at {} (the agent has not run)", db.display());
        }
        return Ok(0);
    }
    let store = Store::open(&db)?;
    print_status(&store, json).await?;
    Ok(0)
}

/// `demo`: a simulated camera offloaded to a local directory, then the status.
async fn demo(args: DemoArgs) -> Result<u8> {
    let base = args.dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("qucam-offload-demo-{}", std::process::id()))
    });
    let camera_dir = base.join("camera");
    let bucket = base.join("bucket");
    let state = base.join("state");
    std::fs::create_dir_all(&camera_dir)
        .with_context(|| format!("cannot create {}", camera_dir.display()))?;
    println!(
        "demo: generating {} clips of {} bytes in {}",
        args.clips,
        args.size,
        camera_dir.display()
    );
    let gen_dir = camera_dir.clone();
    let (n, size) = (args.clips, args.size);
    tokio::task::spawn_blocking(move || crate::sim::generate_clips(&gen_dir, n, size, 7)).await??;
    let sim = crate::sim::start(crate::sim::SimOptions {
        listen: "127.0.0.1:0".parse()?,
        dir: camera_dir.clone(),
        ..Default::default()
    })
    .await?;
    println!("demo: simulated camera at {}", sim.url());
    let text = demo_config(&sim.url(), &state, &bucket);
    let cfg = Config::parse(&text, Path::new("(demo)"))?;
    init_logging(&cfg);
    let _lock = lock_state_dir(&state)?;
    let dest = destination(&cfg).await?;
    let token = CancellationToken::new();
    stop_on_signals(token.clone());
    let agent = Arc::new(Agent::new(cfg, dest, token)?);
    let outcomes = agent.run_once().await;
    let code = once_exit_code(&outcomes);
    println!();
    print_status(agent.store(), false).await?;
    println!();
    println!("demo: event clips are in {}", bucket.display());
    println!(
        "demo: state in {}; see it again with: qucam-offload -c {} status",
        state.display(),
        write_demo_config(&base, &text)?.display()
    );
    sim.shutdown().await;
    Ok(code)
}

fn demo_config(url: &str, state: &Path, bucket: &Path) -> String {
    format!(
        r#"state_dir = {state:?}

[[camera]]
name = "demo-truck"
url = "{url}"

[sync]
clips = "events"
poll_interval = "5s"
download_concurrency = 2

[local]
dir = {bucket:?}
prefix = "dashcam"

[retention]
delete_from_camera = "after_upload"

[spool]
min_free_bytes = 0
"#,
        state = state.display().to_string(),
        bucket = bucket.display().to_string(),
    )
}

fn write_demo_config(base: &Path, text: &str) -> Result<PathBuf> {
    let p = base.join("demo.toml");
    std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    Ok(p)
}
