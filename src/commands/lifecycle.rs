//! What every command that runs the agent does around it: hold the state dir's lock (a
//! second agent refuses to start), stop on SIGTERM/SIGINT, give webhooks a grace period.

use std::path::Path;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::exit::Exit;

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
pub fn stop_on_signals(token: CancellationToken) {
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

/// How long queued webhooks may take to go out when the agent stops.
pub const NOTIFY_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

pub fn cameras(n: usize) -> String {
    if n == 1 {
        "1 camera".into()
    } else {
        format!("{n} cameras")
    }
}
