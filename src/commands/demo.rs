//! `qucam-offload demo`: generates clips, starts the camera simulator in-process on
//! 127.0.0.1, offloads every event clip to a local directory, deletes them from the
//! simulated camera and prints the status.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use super::lifecycle::{lock_state_dir, stop_on_signals};
use super::logging::init_logging;
use super::run::once_exit_code;
use super::status::print_status;
use crate::agent::Agent;
use crate::cli::DemoArgs;
use crate::config::Config;
use crate::upload::destination;

/// `demo`: a simulated camera offloaded to a local directory, then the status.
pub async fn demo(args: DemoArgs) -> Result<u8> {
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
    tokio::task::spawn_blocking(move || qucam_sim::generate_clips(&gen_dir, n, size, 7)).await??;
    let sim = qucam_sim::start(qucam_sim::SimOptions {
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
    let progress = crate::progress::start(&agent);
    let outcomes = agent.run_once().await;
    progress.finish().await;
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
