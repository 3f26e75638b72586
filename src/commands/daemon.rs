//! The daemon (`run` without `--once`): runs the agent until SIGTERM/SIGINT and reloads
//! the config on SIGHUP. A file that does not validate is logged and ignored; a valid,
//! changed one replaces the agent once the old one has finished the passes and transfers
//! it had in flight. Under systemd it speaks the notify protocol ([`crate::service`]).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::lifecycle::{NOTIFY_GRACE, cameras};
use crate::agent::Agent;
use crate::config::Config;
use crate::service::Notifier;
use crate::upload::destination;

/// SIGHUP, as a stream (never fires where there are no such signals).
struct Hangups {
    #[cfg(unix)]
    sig: tokio::signal::unix::Signal,
}

impl Hangups {
    fn new() -> Result<Hangups> {
        Ok(Hangups {
            #[cfg(unix)]
            sig: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("cannot listen for SIGHUP")?,
        })
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            if self.sig.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

/// The daemon: runs `agent` until SIGTERM/SIGINT (`token`), swapping in a new agent on
/// each SIGHUP that brings a valid, changed config.
pub(super) async fn daemon(
    mut agent: Arc<Agent>,
    token: CancellationToken,
    notifier: Notifier,
    config_path: &Path,
    metrics: Option<&crate::metrics::MetricsServer>,
) -> Result<u8> {
    // Listen before READY=1: from then on a reload must never kill the process.
    let mut hangups = Hangups::new()?;
    let watchdog = notifier.spawn_watchdog(token.clone());
    {
        let (n, t) = (notifier.clone(), token.clone());
        tokio::spawn(async move {
            t.cancelled().await;
            n.stopping("stopping: finishing the current writes and recording progress");
        });
    }
    let ready = |a: &Agent| format!("watching {}", cameras(a.config().cameras.len()));
    notifier.ready(&ready(&agent));
    loop {
        let status = notifier.spawn_status(&agent);
        if let Some(m) = metrics {
            m.attach(&agent);
        }
        let notes = crate::notify::start(&agent);
        let mut running = {
            let a = agent.clone();
            tokio::spawn(async move { a.run().await })
        };
        let next = loop {
            tokio::select! {
                _ = &mut running => break None,
                _ = hangups.recv() => {
                    if let Some(next) = prepare_reload(&agent, config_path, &token).await {
                        break Some(next);
                    }
                }
            }
        };
        let Some((next, changes)) = next else {
            if let Some(s) = status {
                s.abort();
            }
            notes.finish(NOTIFY_GRACE).await;
            break;
        };
        notifier.reloading("reloading the config: finishing the transfers in flight");
        agent.stop_taking_work();
        let _ = running.await;
        if let Some(s) = status {
            s.abort();
        }
        if token.is_cancelled() {
            break;
        }
        info!(
            config = %config_path.display(),
            "config reloaded (SIGHUP): {changes}; transfers in flight were finished first"
        );
        agent = next;
        notifier.ready(&ready(&agent));
    }
    notifier.stopping("stopping");
    if let Some(w) = watchdog {
        w.abort();
    }
    info!("stopped");
    Ok(0)
}

/// On SIGHUP: reads and validates the config file and builds the agent for it, without
/// touching the running one. `None` (logged) when the file is invalid, cannot be served,
/// or did not change: the running agent goes on with its config.
async fn prepare_reload(
    current: &Agent,
    path: &Path,
    token: &CancellationToken,
) -> Option<(Arc<Agent>, String)> {
    debug!(config = %path.display(), "SIGHUP: re-reading the config");
    let old = current.config();
    let build = async {
        let mut cfg = Config::load(path)?;
        let mut notes = Vec::new();
        if cfg.state_dir() != old.state_dir() {
            notes.push("the state_dir change applies at the next restart");
            cfg.state_dir = Some(old.state_dir());
        }
        if cfg.log != old.log {
            notes.push("[log] changes apply at the next restart");
        }
        let changed = changed_sections(old, &cfg);
        if changed.is_empty() {
            if !notes.is_empty() {
                warn!(config = %path.display(), "config reload (SIGHUP): {}", notes.join("; "));
            }
            return Ok(None);
        }
        let dest = destination(&cfg).await?;
        let agent = Agent::new(cfg, dest, token.clone())?;
        let mut summary = format!("changed {}", changed.join(", "));
        for n in notes {
            summary.push_str("; ");
            summary.push_str(n);
        }
        anyhow::Ok(Some((Arc::new(agent), summary)))
    };
    match build.await {
        Ok(Some(next)) => Some(next),
        Ok(None) => {
            info!(config = %path.display(), "config reloaded (SIGHUP): unchanged");
            None
        }
        Err(e) => {
            // One line (a config error is one already; other errors may span several).
            let e = format!("{e:#}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            warn!(
                config = %path.display(),
                "config reload (SIGHUP) refused, keeping the running config: {e}"
            );
            None
        }
    }
}

/// Names of the config's sections that differ between `a` and `b` (state_dir aside). Values
/// are compared, secrets included (their `Debug` is masked, so comparing what is printed
/// would miss a rotated key); only the section's name is reported.
fn changed_sections(a: &Config, b: &Config) -> Vec<&'static str> {
    [
        ("camera", a.cameras == b.cameras),
        ("sync", a.sync == b.sync),
        ("s3", a.s3 == b.s3),
        ("local", a.local == b.local),
        ("retention", a.retention == b.retention),
        ("spool", a.spool == b.spool),
        ("log", a.log == b.log),
        ("notify", a.notify == b.notify),
        ("metrics", a.metrics == b.metrics),
        ("wifi", a.wifi == b.wifi),
    ]
    .into_iter()
    .filter(|(_, same)| !same)
    .map(|(name, _)| name)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s3_lines: &str) -> Config {
        let text = format!(
            "[[camera]]\nname = \"t\"\nurl = \"http://127.0.0.1:2345\"\n[s3]\nbucket = \"b\"\n{s3_lines}\n"
        );
        Config::parse(&text, Path::new("test.toml")).expect("config")
    }

    #[test]
    fn a_rotated_secret_is_a_change_of_s3() {
        let keys = |secret: &str| {
            parse(&format!(
                "access_key_id = \"AKIAEXAMPLE\"\nsecret_access_key = \"{secret}\""
            ))
        };
        let (old, new) = (keys("old-secret-1"), keys("new-secret-2"));
        assert_eq!(changed_sections(&old, &new), vec!["s3"]);
        assert!(changed_sections(&old, &keys("old-secret-1")).is_empty());
        assert_eq!(changed_sections(&parse(""), &old), vec!["s3"]);
    }

    #[test]
    fn a_changed_wifi_password_is_a_change_of_wifi() {
        let wifi = |pw: &str| {
            parse(&format!(
                "[wifi]\ninterface = \"wlan0\"\n[wifi.passwords]\nqueclinkgh = \"{pw}\""
            ))
        };
        assert_eq!(
            changed_sections(&parse(""), &wifi("12345678")),
            vec!["wifi"]
        );
        assert_eq!(
            changed_sections(&wifi("12345678"), &wifi("87654321")),
            vec!["wifi"]
        );
    }
}
