//! Notifications from `[notify]`: a webhook (a JSON POST per offloaded clip) and desktop
//! notifications (a summary per camera pass, and one per crash, SOS or panic clip).
//!
//! Both are fed by the agent's [`AgentEvent`] broadcast in their own tasks and never
//! block or fail the pipeline:
//! - **webhook**: events go into a bounded queue (a full queue drops the notification
//!   with a warning); a sender task POSTs each with exponential-backoff retries
//!   ([`backon`]) on network errors, 408, 429 and 5xx. The URL may carry a token, so only
//!   its host is ever logged.
//! - **desktop**: `notify-rust` over the session D-Bus. Best effort: without a session bus
//!   (a system service, a headless box) it logs one warning and stops trying.
//!
//! [`Notifications::finish`] lets queued webhooks go out before the process exits.

use std::collections::HashMap;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::agent::{Agent, AgentEvent, PassOutcome};
use crate::config::NotifyConfig;

/// Webhook notifications waiting to be sent before new ones are dropped.
pub const WEBHOOK_QUEUE: usize = 256;
/// How long one webhook request may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one desktop notification may take (a hung bus is given up on).
const DESKTOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The JSON body of a webhook POST.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClipOffloaded {
    /// Always `"clip_offloaded"`.
    pub event: &'static str,
    pub imei: String,
    pub device_name: String,
    pub clip: String,
    /// The object key in the destination.
    pub key: String,
    /// E.g. `"04"`.
    pub event_code: String,
    /// E.g. `"Crash Detection"`.
    pub event_name: &'static str,
    /// Crash, SOS or panic.
    pub severe: bool,
    pub size: u64,
    pub sha256: String,
    /// RFC 3339, when the clip was verified.
    pub offloaded_at: String,
}

impl ClipOffloaded {
    /// The payload for an `Offloaded` event (`None` for any other event).
    pub fn from_event(e: &AgentEvent) -> Option<ClipOffloaded> {
        let AgentEvent::Offloaded {
            imei,
            device_name,
            clip,
            key,
            event_code,
            size,
            sha256,
            ..
        } = e
        else {
            return None;
        };
        Some(ClipOffloaded {
            event: "clip_offloaded",
            imei: imei.clone(),
            device_name: device_name.clone(),
            clip: clip.clone(),
            key: key.clone(),
            event_code: event_code.clone(),
            event_name: qucam::event_name(event_code),
            severe: qucam::is_severe(event_code),
            size: *size,
            sha256: sha256.clone(),
            offloaded_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
    }
}

/// The running notification tasks.
pub struct Notifications {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts what `[notify]` asks for, subscribed to `agent`'s events (call before the
/// agent runs so no event is missed). With nothing configured it starts nothing.
pub fn start(agent: &Agent) -> Notifications {
    start_with(&agent.config().notify, || agent.subscribe())
}

/// [`start`] from a config and a way to subscribe (tests).
pub fn start_with(
    cfg: &NotifyConfig,
    subscribe: impl Fn() -> broadcast::Receiver<AgentEvent>,
) -> Notifications {
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    if let Some(url) = &cfg.webhook {
        match reqwest::Url::parse(url) {
            Ok(url) => {
                let (tx, rx) = mpsc::channel(WEBHOOK_QUEUE);
                tasks.push(tokio::spawn(forward_webhooks(
                    subscribe(),
                    tx,
                    stop.clone(),
                )));
                tasks.push(tokio::spawn(send_webhooks(url, rx)));
            }
            // The config checked it already.
            Err(e) => warn!("notify.webhook is not a URL ({e}): webhooks disabled"),
        }
    }
    if cfg.desktop {
        tasks.push(tokio::spawn(desktop(subscribe(), stop.clone())));
    }
    Notifications { stop, tasks }
}

impl Notifications {
    /// Stops taking new events, then waits up to `within` for queued webhooks to go out.
    pub async fn finish(self, within: Duration) {
        self.stop.cancel();
        let all = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout(within, all).await.is_err() {
            warn!("notifications still pending after {within:?}: giving up on them");
        }
    }
}

/// Receives events until stopped (then drains what is already there).
async fn next_event(
    rx: &mut broadcast::Receiver<AgentEvent>,
    stop: &CancellationToken,
    what: &str,
) -> Option<AgentEvent> {
    loop {
        let got = tokio::select! {
            biased;
            r = rx.recv() => r,
            _ = stop.cancelled() => match rx.try_recv() {
                Ok(e) => Ok(e),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    Err(broadcast::error::RecvError::Lagged(n))
                }
                Err(_) => return None,
            },
        };
        match got {
            Ok(e) => return Some(e),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!("{what} missed {n} agent events (falling behind)")
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

async fn forward_webhooks(
    mut rx: broadcast::Receiver<AgentEvent>,
    tx: mpsc::Sender<ClipOffloaded>,
    stop: CancellationToken,
) {
    while let Some(e) = next_event(&mut rx, &stop, "webhook notifications").await {
        let Some(payload) = ClipOffloaded::from_event(&e) else {
            continue;
        };
        match tx.try_send(payload) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(p)) => warn!(
                clip = %p.clip,
                "webhook queue full ({WEBHOOK_QUEUE}): notification dropped"
            ),
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// Host (and port) of a URL: what may be logged of it.
pub fn host_of(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => "?".into(),
    }
}

#[derive(Debug)]
struct HookError {
    message: String,
    transient: bool,
}

async fn send_webhooks(url: reqwest::Url, mut rx: mpsc::Receiver<ClipOffloaded>) {
    let host = host_of(&url);
    let http = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(WEBHOOK_TIMEOUT)
        .user_agent(concat!("qucam-offload/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(host = %host, "webhook client: {}: webhooks disabled", e.without_url());
            return;
        }
    };
    while let Some(p) = rx.recv().await {
        let post = || async {
            let resp = http
                .post(url.clone())
                .json(&p)
                .send()
                .await
                .map_err(|e| HookError {
                    message: error_chain(e.without_url()),
                    transient: true,
                })?;
            let status = resp.status();
            if status.is_success() {
                return Ok(());
            }
            Err(HookError {
                message: format!("answered HTTP {status}"),
                transient: status.is_server_error()
                    || status.as_u16() == 429
                    || status.as_u16() == 408,
            })
        };
        let sent = post
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(500))
                    .with_max_delay(Duration::from_secs(10))
                    .with_max_times(4)
                    .with_jitter(),
            )
            .when(|e: &HookError| e.transient)
            .notify(|e, d| debug!(host = %host, clip = %p.clip, "webhook retry in {d:?}: {}", e.message))
            .await;
        match sent {
            Ok(()) => debug!(host = %host, clip = %p.clip, "webhook delivered"),
            Err(e) => warn!(host = %host, clip = %p.clip, "webhook not delivered: {}", e.message),
        }
    }
}

fn error_chain(e: reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(x) = src {
        s = format!("{s}: {x}");
        src = x.source();
    }
    s
}

/// Camera text for a notification body, which the notification server reads as markup:
/// cut, control characters replaced, markup escaped.
fn markup_text(s: &str) -> String {
    qucam::text::escape_markup(&qucam::text::clean(s, qucam::text::FIELD_CHARS))
}

/// A desktop notification to show (`body` is markup, `summary` plain text).
#[derive(Debug, Clone, PartialEq)]
pub struct Desktop {
    pub summary: String,
    pub body: String,
    pub critical: bool,
}

/// Turns events into desktop notifications: counts each camera's offloads and
/// summarises them when its pass finishes; severe clips are announced at once.
#[derive(Debug, Default)]
pub struct DesktopDigest {
    /// IMEI → (clips, bytes) offloaded since its last pass ended.
    pending: HashMap<String, (u64, u64)>,
}

impl DesktopDigest {
    pub fn on_event(&mut self, e: &AgentEvent) -> Option<Desktop> {
        match e {
            AgentEvent::Offloaded {
                imei,
                device_name,
                clip,
                event_code,
                size,
                ..
            } => {
                let p = self.pending.entry(imei.clone()).or_default();
                p.0 += 1;
                p.1 += size;
                qucam::is_severe(event_code).then(|| Desktop {
                    summary: format!("{} clip offloaded", qucam::event_name(event_code)),
                    body: format!(
                        "{} (IMEI {}): {}",
                        markup_text(if device_name.is_empty() {
                            "camera"
                        } else {
                            device_name
                        }),
                        markup_text(imei),
                        markup_text(clip),
                    ),
                    critical: true,
                })
            }
            AgentEvent::PassFinished { camera, outcome } => {
                let (imei, remaining) = match outcome {
                    PassOutcome::Done { imei, remaining } => (imei, Some(*remaining)),
                    PassOutcome::Failed {
                        imei: Some(imei), ..
                    } => (imei, None),
                    _ => return None,
                };
                let (n, bytes) = self.pending.remove(imei)?;
                let left = match remaining {
                    Some(0) => "all done".to_string(),
                    Some(r) => format!("{r} still to do"),
                    None => "the pass failed; the rest is retried".to_string(),
                };
                Some(Desktop {
                    summary: format!(
                        "{camera}: {n} clip{} offloaded",
                        if n == 1 { "" } else { "s" }
                    ),
                    body: format!("{:.1} MB, {left}", bytes as f64 / 1e6),
                    critical: false,
                })
            }
            _ => None,
        }
    }
}

async fn desktop(mut rx: broadcast::Receiver<AgentEvent>, stop: CancellationToken) {
    let mut digest = DesktopDigest::default();
    let mut working = true;
    while let Some(e) = next_event(&mut rx, &stop, "desktop notifications").await {
        let Some(n) = digest.on_event(&e) else {
            continue;
        };
        if !working {
            continue;
        }
        match tokio::time::timeout(DESKTOP_TIMEOUT, show(&n)).await {
            Ok(Ok(())) => debug!(summary = %n.summary, "desktop notification shown"),
            Ok(Err(e)) => {
                warn!(
                    "desktop notifications disabled: {e} (no session bus? set notify.desktop = false to silence this)"
                );
                working = false;
            }
            Err(_) => {
                warn!(
                    "desktop notifications disabled: no answer from the session bus within {DESKTOP_TIMEOUT:?}"
                );
                working = false;
            }
        }
    }
    if working {
        info!("desktop notifications stopped");
    }
}

#[cfg(all(unix, not(target_os = "macos")))]
async fn show(n: &Desktop) -> Result<(), String> {
    let mut x = notify_rust::Notification::new();
    x.appname("qucam-offload")
        .summary(&n.summary)
        .body(&n.body)
        .urgency(if n.critical {
            notify_rust::Urgency::Critical
        } else {
            notify_rust::Urgency::Normal
        });
    x.show_async().await.map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(not(all(unix, not(target_os = "macos"))))]
async fn show(n: &Desktop) -> Result<(), String> {
    let mut x = notify_rust::Notification::new();
    x.appname("qucam-offload").summary(&n.summary).body(&n.body);
    tokio::task::spawn_blocking(move || x.show().map(|_| ()).map_err(|e| e.to_string()))
        .await
        .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offloaded(code: &str, size: u64) -> AgentEvent {
        AgentEvent::Offloaded {
            imei: "1".into(),
            device_name: "CV200".into(),
            clip: format!("20240101_000000_{code}_1.mp4"),
            key: "k".into(),
            event_code: code.into(),
            size,
            sha256: "ab".into(),
            sent: size,
            secs: 1.0,
        }
    }

    #[test]
    fn digest_announces_severe_clips_and_summarises_passes() {
        let mut d = DesktopDigest::default();
        let crash = d.on_event(&offloaded("04", 1_000_000)).expect("crash");
        assert!(crash.critical);
        assert!(crash.summary.contains("Crash"), "{crash:?}");
        assert_eq!(d.on_event(&offloaded("06", 500_000)), None);
        let sum = d
            .on_event(&AgentEvent::PassFinished {
                camera: "truck-12".into(),
                outcome: PassOutcome::Done {
                    imei: "1".into(),
                    remaining: 0,
                },
            })
            .expect("summary");
        assert_eq!(sum.summary, "truck-12: 2 clips offloaded");
        assert_eq!(sum.body, "1.5 MB, all done");
        // Nothing offloaded since: no summary.
        assert_eq!(
            d.on_event(&AgentEvent::PassFinished {
                camera: "truck-12".into(),
                outcome: PassOutcome::Done {
                    imei: "1".into(),
                    remaining: 0
                },
            }),
            None
        );
    }

    #[test]
    fn a_hostile_device_name_is_escaped_in_the_notification_body() {
        let mut e = offloaded("04", 1);
        if let AgentEvent::Offloaded { device_name, .. } = &mut e {
            *device_name = "<a href=\"http://x\">CV200</a> & <b>\n\u{1b}[2Jforged".into();
        }
        let n = DesktopDigest::default().on_event(&e).expect("crash");
        assert!(
            !n.body.contains(['<', '>', '"', '\n', '\u{1b}']),
            "{:?}",
            n.body
        );
        assert!(
            n.body
                .starts_with("&lt;a href=&quot;http://x&quot;&gt;CV200&lt;/a&gt; &amp; &lt;b&gt;"),
            "{:?}",
            n.body
        );
    }

    #[test]
    fn payload_and_host() {
        let p = ClipOffloaded::from_event(&offloaded("0A", 3)).unwrap();
        assert_eq!(p.event_name, "SoS Alarm");
        assert!(p.severe);
        let u = reqwest::Url::parse("https://user:pw@hooks.example.com:8443/x?token=s").unwrap();
        assert_eq!(host_of(&u), "hooks.example.com:8443");
    }
}
