//! The agent-facing commands: `run` (daemon or `--once`), `status` and `demo`.
//!
//! Exit codes of `run --once`: 0 every reachable camera fully processed; 1 some work
//! failed or remains; 2 usage or config error; 3 no configured camera reachable.
//!
//! The daemon stops on SIGTERM/SIGINT within seconds (transfers record their progress and
//! resume next time) and reloads its config file on SIGHUP: a file that does not validate
//! is logged and ignored; a valid one replaces the agent once the old one has finished
//! the passes and transfers it had in flight. Under systemd it speaks the notify protocol
//! ([`crate::service`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::agent::{self, Agent, PassOutcome};
use crate::cli::{Command, DemoArgs, Exit, load_config};
use crate::config::{ChecksumMode, Config, LogFormat, LogTarget};
use crate::service::Notifier;
use crate::store::{Store, now};
use crate::upload::{
    self, Destination, LocalDestination, MultipartThreshold, S3Destination, S3Settings,
};

pub async fn dispatch(config: Option<&Path>, cmd: Command) -> Result<u8> {
    match cmd {
        Command::Run { once } => {
            let path = Config::resolve_path(config)?;
            let cfg = Config::load(&path)?;
            init_logging(&cfg);
            if let Some(w) = crate::config::exposed_secrets_warning(&path, &cfg) {
                tracing::warn!("{w}");
            }
            run(cfg, once, &path).await
        }
        Command::Status { json } => {
            let cfg = load_config(config)?;
            status(&cfg, json).await
        }
        Command::Demo(args) => demo(args).await,
        Command::Doctor { write_test } => crate::doctor::run(config, write_test).await,
        Command::Camera(_) => unreachable!("handled by cli"),
    }
}

/// Sets up `tracing`, the one place that does: `RUST_LOG` wins over `[log] level`.
///
/// Lines go to the systemd journal, with levels as priorities and fields as journal
/// fields, when `[log] target = "journald"`, or under `"auto"` (the default) when stderr
/// is the journal's stream (systemd sets `JOURNAL_STREAM` to its device and inode).
/// Otherwise, or when the journal's socket is absent, text or JSON lines (`[log] format`)
/// go to stderr.
pub fn init_logging(cfg: &Config) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // The in-process simulator (demo) logs every request: keep it quiet.
        .add_directive("qucam_offload::sim=warn".parse().expect("static directive"));
    let want_journal = match cfg.log.target {
        LogTarget::Stderr => false,
        LogTarget::Journald => true,
        LogTarget::Auto => stderr_is_journal(),
    };
    let (journal, journal_error) = if want_journal {
        match tracing_journald::layer() {
            Ok(l) => (Some(l.with_syslog_identifier("qucam-offload".into())), None),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, None)
    };
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match (journal, cfg.log.format) {
        (Some(j), _) => registry.with(j).try_init(),
        (None, LogFormat::Json) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(crate::progress::log_writer()),
            )
            .try_init(),
        (None, LogFormat::Text) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    // Colours only on a terminal; NO_COLOR turns them off there too.
                    .with_ansi(
                        std::io::IsTerminal::is_terminal(&std::io::stderr())
                            && std::env::var_os("NO_COLOR").is_none(),
                    )
                    .with_writer(crate::progress::log_writer()),
            )
            .try_init(),
    };
    if let (Ok(()), Some(e)) = (installed, journal_error) {
        warn!("the systemd journal is not reachable ({e}); logging to stderr");
    }
}

/// Whether stderr is connected to the journal: `JOURNAL_STREAM` (`DEV:INODE`, set by
/// systemd) names the file stderr is. A variable inherited by a process whose stderr
/// was redirected elsewhere does not count.
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
            return false;
        };
        let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
            return false;
        };
        let Ok(meta) = std::fs::File::from(fd).metadata() else {
            return false;
        };
        dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = v;
        false
    }
}

/// S3 settings from the `[s3]` section.
pub fn s3_settings(s3: &crate::config::S3Config) -> S3Settings {
    S3Settings {
        bucket: s3.bucket.clone(),
        prefix: s3.prefix.clone(),
        region: s3.region.clone().unwrap_or_default(),
        endpoint: s3.endpoint.clone(),
        force_path_style: s3.force_path_style,
        multipart_threshold: s3
            .multipart_threshold
            .map_or(MultipartThreshold::Auto, MultipartThreshold::Fixed),
        part_size: s3.part_size,
        part_concurrency: s3.part_concurrency,
        checksum: match s3.checksum {
            ChecksumMode::Sha256 => upload::ChecksumMode::Sha256,
            ChecksumMode::WhenRequired => upload::ChecksumMode::WhenRequired,
        },
        credentials: match (&s3.access_key_id, &s3.secret_access_key) {
            (Some(id), Some(secret)) => Some(upload::StaticCredentials {
                access_key_id: id.clone(),
                secret_access_key: secret.expose().to_string(),
            }),
            _ => None,
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

async fn run(cfg: Config, once: bool, config_path: &Path) -> Result<u8> {
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
        Ok(once_exit_code(&outcomes))
    } else {
        daemon(agent, token, notifier, config_path, metrics.as_ref()).await
    }
}

/// How long queued webhooks may take to go out when the agent stops.
const NOTIFY_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

fn cameras(n: usize) -> String {
    if n == 1 {
        "1 camera".into()
    } else {
        format!("{n} cameras")
    }
}

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
async fn daemon(
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
        if format!("{:?}", cfg.log) != format!("{:?}", old.log) {
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
            // One line, even for a TOML syntax error (which quotes the offending line).
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

/// Names of the config's sections that differ between `a` and `b` (state_dir aside).
fn changed_sections(a: &Config, b: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut cmp = |name: &'static str, x: String, y: String| {
        if x != y {
            out.push(name);
        }
    };
    cmp(
        "camera",
        format!("{:?}", a.cameras),
        format!("{:?}", b.cameras),
    );
    cmp("sync", format!("{:?}", a.sync), format!("{:?}", b.sync));
    cmp("s3", format!("{:?}", a.s3), format!("{:?}", b.s3));
    cmp("local", format!("{:?}", a.local), format!("{:?}", b.local));
    cmp(
        "retention",
        format!("{:?}", a.retention),
        format!("{:?}", b.retention),
    );
    cmp("spool", format!("{:?}", a.spool), format!("{:?}", b.spool));
    cmp("log", format!("{:?}", a.log), format!("{:?}", b.log));
    cmp(
        "notify",
        format!("{:?}", a.notify),
        format!("{:?}", b.notify),
    );
    cmp(
        "metrics",
        format!("{:?}", a.metrics),
        format!("{:?}", b.metrics),
    );
    out
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
    /// Selected clips not yet verified (queued, downloading, downloaded, uploading, uploaded).
    pub pending: i64,
    /// Clips in `failed` (retried later) and `refused` (never).
    pub failed: i64,
    /// Clips verified in the destination since local midnight, and their bytes.
    pub uploaded_today: i64,
    pub uploaded_today_bytes: i64,
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
        let n = |states: &[&str]| -> i64 { states.iter().filter_map(|s| clips.get(*s)).sum() };
        let pending = n(&[
            "queued",
            "downloading",
            "downloaded",
            "uploading",
            "uploaded",
        ]);
        let failed = n(&["failed", "refused"]);
        let (uploaded_today, uploaded_today_bytes) = {
            let (imei, since) = (cam.imei.clone(), local_midnight());
            store
                .call(move |c| {
                    Ok(c.query_row(
                        "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM clips
                         WHERE imei = ?1 AND verified_at >= ?2",
                        rusqlite::params![imei, since],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?)
                })
                .await?
        };
        out.push(CameraStatus {
            downloads_paused,
            pending,
            failed,
            uploaded_today,
            uploaded_today_bytes,
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

/// Unix time of the last local midnight.
fn local_midnight() -> i64 {
    use chrono::TimeZone as _;
    let today = chrono::Local::now().date_naive();
    today
        .and_hms_opt(0, 0, 0)
        .and_then(|t| chrono::Local.from_local_datetime(&t).earliest())
        .map_or(now() - now().rem_euclid(86_400), |t| t.timestamp())
}

/// A size in at most 5 characters: `512B`, `12k`, `1.2M`, `340M`, `2.0G`.
fn short_bytes(b: i64) -> String {
    let b = b.max(0) as f64;
    let (v, unit) = match b {
        x if x < 1e3 => return format!("{b}B"),
        x if x < 1e6 => (x / 1e3, "k"),
        x if x < 1e9 => (x / 1e6, "M"),
        x if x < 1e12 => (x / 1e9, "G"),
        x => (x / 1e12, "T"),
    };
    if v < 10.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.0}{unit}")
    }
}

/// `s` cut to `n` characters (with `…` when cut).
fn fit(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The status table (80 columns), then failures and notices below it.
pub fn format_status(st: &[CameraStatus]) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    if st.is_empty() {
        o.push_str("no camera seen yet\n");
        return o;
    }
    let _ = writeln!(
        o,
        "{:<12}  {:<15}  {:<9}  {:>7}  {:>14}  {:>4}  {:>6}",
        "CAMERA", "IMEI", "LAST SEEN", "PENDING", "UPLOADED TODAY", "LOST", "FAILED"
    );
    for c in st {
        let today = format!(
            "{} ({})",
            c.uploaded_today,
            short_bytes(c.uploaded_today_bytes)
        );
        let _ = writeln!(
            o,
            "{:<12}  {:<15}  {:<9}  {:>7}  {:>14}  {:>4}  {:>6}",
            fit(c.name.as_deref().unwrap_or("?"), 12),
            fit(&c.imei, 15),
            ago(c.last_seen),
            c.pending,
            today,
            c.lost,
            c.failed
        );
    }
    let label = |c: &CameraStatus| c.name.clone().unwrap_or_else(|| c.imei.clone());
    let notes: Vec<String> = st
        .iter()
        .flat_map(|c| {
            let mut v = Vec::new();
            if let Some(p) = &c.downloads_paused {
                v.push(format!("  {}: {p}", label(c)));
            }
            if !c.uploads_in_flight.is_empty() {
                v.push(format!(
                    "  {}: uploads in flight: {}",
                    label(c),
                    c.uploads_in_flight.join(", ")
                ));
            }
            v
        })
        .collect();
    if !notes.is_empty() {
        o.push('\n');
        for n in notes {
            let _ = writeln!(o, "{n}");
        }
    }
    if st.iter().any(|c| !c.failures.is_empty()) {
        o.push_str("\nfailures:\n");
        for c in st {
            for f in &c.failures {
                let retry = match f.retry_after {
                    Some(t) if f.state == "failed" && t > now() => {
                        format!(", retry in {}", in_secs(t - now()))
                    }
                    _ => String::new(),
                };
                let _ = writeln!(
                    o,
                    "  {} {} {} (attempts {}{retry})\n    {}",
                    label(c),
                    f.clip,
                    f.state,
                    f.attempts,
                    f.error
                );
            }
        }
    }
    o
}

fn in_secs(d: i64) -> String {
    match d {
        ..=59 => format!("{d}s"),
        60..=3599 => format!("{}m", d / 60),
        _ => format!("{}h", d / 3600),
    }
}

/// Prints the status of the store at `state_dir`.
pub async fn print_status(store: &Store, json: bool) -> Result<()> {
    let st = collect_status(store).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", format_status(&st));
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
