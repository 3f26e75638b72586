//! The `qucam-sim` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

use super::{Faults, SimOptions};

/// Simulates a Queclink Qucam dashcam's web API, serving clips from a directory.
#[derive(Debug, Parser)]
#[command(name = "qucam-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2345")]
    listen: SocketAddr,
    /// Directory standing for /storage/sdcard1/queclink/video (clips in yyyyMMdd/HH/).
    #[arg(long)]
    dir: PathBuf,
    /// Write this many deterministic clips into DIR first (existing ones are kept).
    #[arg(long, default_value_t = 0)]
    generate: usize,
    /// Size of each generated clip, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    size: u64,
    /// Seed for generated names and contents.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// IMEI reported by get_device_info.
    #[arg(long, default_value = "867867432522518")]
    imei: String,
    /// Device name reported by get_device_info.
    #[arg(long, default_value = "CV200")]
    device_name: String,
    /// Hotspot SSID reported by get_device_info.
    #[arg(long, default_value = "queclinkgh")]
    ssid: String,
    /// Hotspot password reported by get_device_info.
    #[arg(long, default_value = "12345678")]
    password: String,

    /// Fault: the next N listings reply "Camera Busy".
    #[arg(long, default_value_t = 0)]
    busy_listings: u32,
    /// Fault: the next N deletes reply "Camera Busy" (nothing deleted).
    #[arg(long, default_value_t = 0)]
    busy_deletes: u32,
    /// Fault: send errorCode as a string ("200").
    #[arg(long)]
    string_error_codes: bool,
    /// Fault: send listing data as a JSON-encoded string.
    #[arg(long)]
    data_as_string: bool,
    /// Fault: abort download responses after this many body bytes.
    #[arg(long)]
    drop_after_bytes: Option<u64>,
    /// Fault: with --drop-after-bytes, drop only the next N downloads (0 = all).
    #[arg(long, default_value_t = 0)]
    drop_downloads: u32,
    /// Fault: ignore Range headers (always 200 with the whole file).
    #[arg(long)]
    no_range: bool,
    /// Fault: limit download bandwidth, bytes per second.
    #[arg(long)]
    bandwidth: Option<u64>,
    /// Fault: reply HTTP 401 to requests without a clientId header.
    #[arg(long)]
    require_client_id: bool,
    /// Fault: NAME:N, the clip NAME grows at each of the next N listings.
    #[arg(long, value_parser = parse_growing)]
    growing: Option<(String, u32)>,
    /// Fault: a new newest clip appears after each listing page at offset 0.
    #[arg(long)]
    new_clip_between_pages: bool,
    /// Fault: reply to get_video_files_info with this file's contents, verbatim.
    #[arg(long)]
    listing_override: Option<PathBuf>,
    /// Fault: reply to get_device_info with this file's contents, verbatim.
    #[arg(long)]
    device_info_override: Option<PathBuf>,
    /// Fault: STATUS:FILE, reply to every download with this status and file's contents.
    #[arg(long)]
    download_override: Option<String>,
}

fn parse_growing(s: &str) -> Result<(String, u32), String> {
    let (name, n) = s.rsplit_once(':').ok_or("expected NAME:N")?;
    let n = n.parse().map_err(|_| format!("bad count {n:?}"))?;
    Ok((name.to_string(), n))
}

fn read_text(path: &Option<PathBuf>) -> anyhow::Result<Option<String>> {
    path.as_ref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
        .transpose()
}

impl Args {
    fn faults(&self) -> anyhow::Result<Faults> {
        let download_override = match &self.download_override {
            None => None,
            Some(spec) => {
                let (status, file) = spec
                    .split_once(':')
                    .context("--download-override expects STATUS:FILE")?;
                let status: u16 = status.parse().context("bad --download-override status")?;
                let body = std::fs::read(file).with_context(|| format!("reading {file}"))?;
                Some((status, body))
            }
        };
        Ok(Faults {
            busy_listings: self.busy_listings,
            busy_deletes: self.busy_deletes,
            string_error_codes: self.string_error_codes,
            data_as_string: self.data_as_string,
            drop_after_bytes: self.drop_after_bytes,
            drop_downloads: self.drop_downloads,
            no_range: self.no_range,
            bandwidth_bytes_per_sec: self.bandwidth,
            require_client_id: self.require_client_id,
            growing: self.growing.clone(),
            new_clip_between_pages: self.new_clip_between_pages,
            ignore_deletes: false,
            other_bytes: Vec::new(),
            date_shift_ms: 0,
            sizeless: Vec::new(),
            as_directory: Vec::new(),
            listing_override: read_text(&self.listing_override)?,
            device_info_override: read_text(&self.device_info_override)?,
            download_override,
            time_filter: Default::default(),
        })
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let faults = args.faults()?;
    if args.generate > 0 {
        let (dir, n, size, seed) = (args.dir.clone(), args.generate, args.size, args.seed);
        let started = std::time::Instant::now();
        let files = tokio::task::spawn_blocking(move || super::generate_clips(&dir, n, size, seed))
            .await?
            .context("generating clips")?;
        tracing::info!(count = files.len(), elapsed = ?started.elapsed(), "clips ready");
    }
    let sim = super::start(SimOptions {
        listen: args.listen,
        dir: args.dir,
        imei: args.imei,
        device_name: args.device_name,
        ssid: args.ssid,
        password: args.password,
        faults,
    })
    .await?;
    println!("qucam-sim serving on {}", sim.url());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!("shutting down");
    sim.shutdown().await;
    Ok(())
}

/// Entry point of the `qucam-sim` binary.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qucam-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qucam-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}
