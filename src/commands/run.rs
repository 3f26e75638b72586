//! `qucam-offload run [--once]`: the agent. With `--once`, one pass over every configured
//! camera, then exit; without, the daemon ([`super::daemon`]).
//!
//! Exit codes of `run --once`: 0 every reachable camera fully processed; 1 some work
//! failed or remains; 2 usage or config error; 3 no configured camera reachable.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::daemon::daemon;
use super::lifecycle::{NOTIFY_GRACE, cameras, lock_state_dir, stop_on_signals};
use super::logging::init_logging;
use crate::agent::{Agent, PassOutcome};
use crate::config::Config;
use crate::service::Notifier;
use crate::upload::destination;

/// Loads the config, sets up logging and runs the agent.
pub async fn run(config: Option<&Path>, once: bool) -> Result<u8> {
    let path = Config::resolve_path(config)?;
    let cfg = Config::load(&path)?;
    init_logging(&cfg);
    if let Some(w) = crate::config::exposed_secrets_warning(&path, &cfg) {
        warn!("{w}");
    }
    run_agent(cfg, once, &path).await
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

async fn run_agent(cfg: Config, once: bool, config_path: &Path) -> Result<u8> {
    let state_dir = cfg.state_dir();
    let _lock = lock_state_dir(&state_dir)?;
    let token = CancellationToken::new();
    stop_on_signals(token.clone());
    let notifier = Notifier::from_env();
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
    let metrics = match agent.config().metrics.listen {
        Some(addr) => Some(crate::metrics::start(&agent, addr, token.clone()).await?),
        None => None,
    };
    if once {
        notifier.ready(&format!(
            "one pass over {}",
            cameras(agent.config().cameras.len())
        ));
        let status = notifier.spawn_status(&agent);
        let notes = crate::notify::start(&agent);
        let progress = crate::progress::start(&agent);
        let outcomes = agent.run_once().await;
        progress.finish().await;
        notes.finish(NOTIFY_GRACE).await;
        if let Some(s) = status {
            s.abort();
        }
        notifier.stopping("pass finished");
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
        if let Some(why) = agent.destination_gave_up() {
            error!("{why}");
            return Ok(1);
        }
        Ok(once_exit_code(&outcomes))
    } else {
        daemon(agent, token, notifier, config_path, metrics.as_ref()).await
    }
}
