//! The `qucam-offload` command line: `run`, `status`, `demo`, `doctor` and `camera …`.
//!
//! Exit codes: 0 success; 1 work failed or remains; 2 usage or config error;
//! 3 no configured camera reachable (`run --once`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use qucam::{AdasExtrinsics, CalibrationKind, CameraClient, CameraId, ClientOptions, ListQuery};

use crate::config::{Config, ConfigError};

#[derive(Debug, Parser)]
#[command(
    name = "qucam-offload",
    version,
    about = "Offloads dashcam video from Queclink Qucam cameras (CV100/CV200) to S3"
)]
pub struct Cli {
    /// Config file (default: $QUCAM_OFFLOAD_CONFIG, else the platform config dir).
    #[arg(short, long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the offload agent (a daemon; `--once` for a single pass).
    Run {
        /// One pass over every configured camera, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Show what the agent knows: per camera, clips by state, failures, lost clips.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Try it without a vehicle: a simulated camera offloaded to a local directory.
    Demo(DemoArgs),
    /// Talk to a camera directly (the whole API).
    Camera(CameraArgs),
    /// Check the setup: config, state dir, destination, every camera (exit 1 if any fails).
    Doctor {
        /// Also PUT, GET and DELETE a probe object in the bucket.
        #[arg(long)]
        write_test: bool,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo keeps its state and destination (default: a new temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Clips the simulated camera holds.
    #[arg(long, default_value_t = 24)]
    pub clips: usize,
    /// Size of each clip in bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub size: u64,
}

#[derive(Debug, Args)]
pub struct CameraArgs {
    /// The camera's name in the config (default: the only one).
    #[arg(long)]
    pub name: Option<String>,
    /// Talk to this URL instead of a configured camera (no config needed).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// clientId header (default: the agent's own, kept in its state dir).
    #[arg(long)]
    pub client_id: Option<String>,
    /// How POST parameters are sent, when not set by the config.
    #[arg(long, value_enum)]
    pub params: Option<ParamsArg>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub action: CameraAction,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ParamsArg {
    Form,
    Query,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CameraSel {
    Front,
    Interior,
    Both,
}

#[derive(Debug, Subcommand)]
pub enum CameraAction {
    /// Device information (the hotspot password only with --show-password).
    Info {
        #[arg(long)]
        show_password: bool,
    },
    /// List clips, newest first.
    Files {
        /// Start of the time window, yyyyMMddHHmmss.
        #[arg(long)]
        from: Option<String>,
        /// End of the time window, yyyyMMddHHmmss.
        #[arg(long)]
        to: Option<String>,
        /// Event code(s), e.g. 04 or _04_ (repeatable).
        #[arg(long = "event")]
        events: Vec<String>,
        #[arg(long, value_enum, default_value = "both")]
        camera: CameraSel,
        #[arg(long)]
        count: Option<u32>,
        #[arg(long)]
        offset: Option<u32>,
        /// Page through the whole listing.
        #[arg(long)]
        all: bool,
    },
    /// Download a clip (resumes a partial output file).
    Download {
        path: String,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Delete clips from the camera.
    Delete {
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Save a clip's thumbnail.
    Thumbnail {
        path: String,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Erase the SD card (every recording). Needs --yes.
    FormatSd {
        #[arg(long)]
        yes: bool,
    },
    /// Start or stop an RTMP push.
    Rtmp {
        #[command(subcommand)]
        action: RtmpAction,
    },
    /// Driver-assistance calibration.
    Calibrate {
        #[command(subcommand)]
        kind: CalibrateKind,
    },
    /// The ADAS extrinsic calibration values.
    CalibrationParams,
}

#[derive(Debug, Subcommand)]
pub enum RtmpAction {
    Start {
        url: String,
        #[arg(long, value_enum)]
        camera: RtmpCamera,
    },
    Stop,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RtmpCamera {
    Front,
    Interior,
}

#[derive(Debug, Subcommand)]
pub enum CalibrateKind {
    /// Driver monitoring (CV200).
    Dms {
        /// Report the calibration as failed.
        #[arg(long)]
        failed: bool,
    },
    /// Driver assistance: seven values horizon|car_middle|car_width|camera_height|camera_to_axle|camera_to_bumper|camera_to_left_wheel.
    Adas {
        #[arg(long, value_name = "A|B|C|D|E|F|G")]
        values: String,
        #[arg(long)]
        failed: bool,
    },
}

/// Exit code for a usage or config error.
pub const EXIT_USAGE: u8 = 2;

/// An error carrying its own exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if let Some(c) = e.downcast_ref::<ConfigError>() {
                eprintln!("error: {c}");
                return ExitCode::from(EXIT_USAGE);
            }
            if let Some(x) = e.downcast_ref::<Exit>() {
                eprintln!("error: {}", x.message);
                return ExitCode::from(x.code);
            }
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    Exit {
        code: EXIT_USAGE,
        message: msg.into(),
    }
    .into()
}

async fn dispatch(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Camera(args) => camera_cmd(cli.config.as_deref(), args).await,
        other => crate::commands::dispatch(cli.config.as_deref(), other).await,
    }
}

/// Loads the config the CLI was pointed at.
pub fn load_config(explicit: Option<&Path>) -> Result<Config, ConfigError> {
    let path = Config::resolve_path(explicit)?;
    Config::load(&path)
}

fn client_for(config: Option<&Path>, args: &CameraArgs) -> Result<CameraClient> {
    let (url, mut opts) = match &args.url {
        Some(url) => {
            let state = directories::ProjectDirs::from("", "", "qucam-offload")
                .map(|d| d.data_dir().to_path_buf())
                .unwrap_or_else(std::env::temp_dir);
            let id = match &args.client_id {
                Some(id) => id.clone(),
                None => qucam::client_id(&state, None)
                    .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string()),
            };
            (url.clone(), ClientOptions::new(id))
        }
        None => {
            let cfg = load_config(config)?;
            let cam = cfg.camera(args.name.as_deref()).map_err(usage)?;
            let id = match &args.client_id {
                Some(id) => id.clone(),
                None => qucam::client_id(&cfg.state_dir(), cam.client_id.as_deref()).with_context(
                    || format!("cannot keep the client id in {}", cfg.state_dir().display()),
                )?,
            };
            let mut o = ClientOptions::new(id);
            o.params = cam.params;
            o.connect_timeout = cam.connect_timeout;
            o.idle_timeout = cam.idle_timeout;
            (cam.url.clone(), o)
        }
    };
    if let Some(p) = args.params {
        opts.params = match p {
            ParamsArg::Form => qucam::ParamStyle::Form,
            ParamsArg::Query => qucam::ParamStyle::Query,
            ParamsArg::Json => qucam::ParamStyle::Json,
        };
    }
    CameraClient::new(&url, opts).map_err(|e| usage(e.to_string()))
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn normalize_event(e: &str) -> Result<String> {
    let code = e.trim().trim_matches('_').to_ascii_uppercase();
    if !qucam::EVENT_CODES.contains(&code.as_str()) && code != "00" {
        return Err(usage(format!("unknown event code {e:?}")));
    }
    Ok(format!("_{code}_"))
}

fn check_stamp(s: &str) -> Result<()> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S")
        .map(|_| ())
        .map_err(|_| usage(format!("{s:?} is not a time yyyyMMddHHmmss")))
}

async fn camera_cmd(config: Option<&Path>, args: CameraArgs) -> Result<u8> {
    let client = client_for(config, &args)?;
    let json = args.json;
    match args.action {
        CameraAction::Info { show_password } => {
            let info = client.device_info().await?;
            if json {
                let mut v = serde_json::to_value(&info)?;
                if show_password {
                    v["password"] = info.password.expose().into();
                }
                print_json(&v)?;
            } else {
                let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
                println!("imei          {}", info.imei);
                println!("device        {}", opt(&info.device_name));
                println!("firmware      {}", opt(&info.application_version));
                println!("storage       {}", opt(&info.local_storage));
                println!(
                    "sd card       {} {} {} (used {})",
                    opt(&info.sd_card_type),
                    opt(&info.sd_card_size),
                    opt(&info.sd_card_format),
                    opt(&info.sd_card_used_space)
                );
                println!("signal        {}", opt(&info.signal));
                println!("ssid          {}", opt(&info.ssid));
                if show_password {
                    println!("password      {}", info.password.expose());
                } else {
                    println!("password      ******** (--show-password to see it)");
                }
            }
        }
        CameraAction::Files {
            from,
            to,
            events,
            camera,
            count,
            offset,
            all,
        } => {
            let time_window = match (from, to) {
                (None, None) => String::new(),
                (f, t) => {
                    let f = f.unwrap_or_else(|| "19700101000000".into());
                    let t = t.unwrap_or_else(|| "20991231235959".into());
                    check_stamp(&f)?;
                    check_stamp(&t)?;
                    format!("{f}:{t}")
                }
            };
            let mut q = ListQuery {
                time_window,
                event_types: events
                    .iter()
                    .map(|e| normalize_event(e))
                    .collect::<Result<_>>()?,
                camera_type: match camera {
                    CameraSel::Front => "_1.".into(),
                    CameraSel::Interior => "_2.".into(),
                    CameraSel::Both => String::new(),
                },
                count,
                offset,
            };
            let files = if all {
                let page = count.unwrap_or(50).max(1);
                q.count = Some(page);
                let mut out = Vec::new();
                let mut seen = std::collections::HashSet::new();
                let mut off = offset.unwrap_or(0);
                loop {
                    q.offset = Some(off);
                    let got = client.list_files(&q).await?;
                    let n = got.len() as u32;
                    for f in got {
                        if seen.insert(f.path.clone()) {
                            out.push(f);
                        }
                    }
                    if n < page || out.len() > 1_000_000 {
                        break;
                    }
                    off += n;
                }
                out
            } else {
                client.list_files(&q).await?
            };
            if json {
                print_json(&files)?;
            } else {
                println!("{:<28} {:>12}  path", "name", "size");
                for f in &files {
                    let size = f.size.map_or("?".to_string(), |s| s.to_string());
                    println!("{:<28} {:>12}  {}", f.name, size, f.path);
                }
                println!("{} clip(s)", files.len());
            }
        }
        CameraAction::Download { path, output } => {
            let out = match output {
                Some(o) => o,
                None => {
                    let name = path.rsplit('/').next().unwrap_or_default();
                    let clip = qucam::ClipName::parse(name)
                        .map_err(|e| usage(format!("{e}; give -o FILE")))?;
                    PathBuf::from(clip.as_str())
                }
            };
            // A refused path fails before anything is created; a failed first attempt
            // leaves no empty file behind (a partial one stays, to be resumed).
            client.file_url(&path)?;
            let existed = out.exists();
            let bar = progress_bar();
            let bar2 = bar.clone();
            let done = crate::download::fetch(&client, &path, &out, None, &move |d, t| {
                if let Some(t) = t {
                    bar2.set_length(t);
                }
                bar2.set_position(d);
            })
            .await;
            bar.finish_and_clear();
            if done.is_err() && !existed && std::fs::metadata(&out).is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(&out);
            }
            let done = done?;
            if json {
                print_json(&serde_json::json!({
                    "file": out, "size": done.size, "sha256": done.sha256_hex,
                    "received": done.received, "resumed_from": done.resumed_from,
                    "restarted": done.restarted,
                }))?;
            } else {
                println!(
                    "{}: {} bytes, sha256 {}{}",
                    out.display(),
                    done.size,
                    done.sha256_hex,
                    if done.resumed_from > 0 {
                        format!(" (resumed from byte {})", done.resumed_from)
                    } else {
                        String::new()
                    }
                );
            }
        }
        CameraAction::Delete { paths } => {
            client.delete_files(&paths).await?;
            if json {
                print_json(&serde_json::json!({ "deleted": paths }))?;
            } else {
                println!("deleted {} clip(s)", paths.len());
            }
        }
        CameraAction::Thumbnail { path, output } => {
            let img = client.thumbnail(&path).await?;
            std::fs::write(&output, &img)
                .with_context(|| format!("cannot write {}", output.display()))?;
            if json {
                print_json(&serde_json::json!({ "file": output, "bytes": img.len() }))?;
            } else {
                println!("{}: {} bytes", output.display(), img.len());
            }
        }
        CameraAction::FormatSd { yes } => {
            if !yes {
                return Err(usage(
                    "format-sd erases every recording on the camera; add --yes to do it",
                ));
            }
            let r = client.format_sd().await?;
            if json {
                print_json(&r)?;
            } else {
                println!("{r:?}");
            }
            if r != qucam::FormatOutcome::Formatted {
                return Ok(1);
            }
        }
        CameraAction::Rtmp { action } => {
            match action {
                RtmpAction::Start { url, camera } => {
                    let cam = match camera {
                        RtmpCamera::Front => CameraId::Front,
                        RtmpCamera::Interior => CameraId::Interior,
                    };
                    client.rtmp_start(&url, cam).await?;
                }
                RtmpAction::Stop => client.rtmp_stop().await?,
            }
            if json {
                print_json(&serde_json::json!({ "ok": true }))?;
            } else {
                println!("ok");
            }
        }
        CameraAction::Calibrate { kind } => {
            let (k, failed, values) = match kind {
                CalibrateKind::Dms { failed } => (CalibrationKind::Dms, failed, None),
                CalibrateKind::Adas { values, failed } => {
                    let x = AdasExtrinsics::from_wire(&values)
                        .map_err(|e| usage(format!("--values: {e}")))?;
                    (CalibrationKind::Adas, failed, Some(x))
                }
            };
            let state = client.calibrate(k, !failed, values.as_ref()).await?;
            if json {
                print_json(&state)?;
            } else {
                println!("{state:?}");
            }
        }
        CameraAction::CalibrationParams => {
            let x = client.calibration_params().await?;
            if json {
                print_json(&x)?;
            } else {
                println!("horizon               {}", x.horizon);
                println!("car middle            {}", x.car_middle);
                println!("car width (cm)        {}", x.car_width);
                println!("camera height (cm)    {}", x.camera_height);
                println!("camera to axle (cm)   {}", x.camera_to_axle);
                println!("camera to bumper (cm) {}", x.camera_to_bumper);
                println!("camera to left wheel  {}", x.camera_to_left_wheel);
            }
        }
    }
    Ok(0)
}

/// A byte progress bar on a terminal, hidden otherwise.
pub fn progress_bar() -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}
