//! The `qucam-offload` command line, as clap types only: `run`, `status`, `demo`,
//! `doctor` and `camera …`. What each command does is in [`crate::commands`]; exit codes
//! are in [`crate::exit`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
