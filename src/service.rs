//! Running under a service manager: systemd's notify protocol.
//!
//! With `Type=notify` the agent tells systemd (over the datagram socket named by
//! `NOTIFY_SOCKET`):
//!
//! - `READY=1` once the state database is open and the config valid (after
//!   [`crate::agent::Agent::new`] succeeded), so `systemctl start` returns only then;
//! - `STATUS=…` lines saying what it is doing, built from [`AgentEvent`]s, e.g.
//!   `truck-12: 3 clips offloaded this pass, 17 pending` (shown by `systemctl status`);
//! - `WATCHDOG=1` every half `WATCHDOG_USEC` when systemd's watchdog is on
//!   (`WatchdogSec=`), but only while the agent's loops show progress or are idle by design
//!   ([`crate::agent::heartbeat::alive`] within `WATCHDOG_USEC`): a loop stuck in a call,
//!   or a wedged runtime, stops the pings and systemd restarts the service;
//! - `RELOADING=1` while a SIGHUP config reload drains the old agent, then `READY=1`;
//! - `STOPPING=1` as soon as a shutdown begins.
//!
//! Everything here is a no-op when `NOTIFY_SOCKET` is unset (a terminal, launchd, a
//! container), and send errors are logged at debug level and otherwise ignored: the
//! service manager's socket is never a reason to stop offloading.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::agent::{Agent, AgentEvent, PassOutcome};

/// Longest `STATUS=` line sent (systemd shows one line; a datagram has room for more).
const MAX_STATUS: usize = 400;

/// Talks to the service manager; cheap to clone, inert without `NOTIFY_SOCKET`.
#[derive(Debug, Clone)]
pub struct Notifier {
    enabled: bool,
    /// `STOPPING=1` was sent (by this notifier or a clone): it is sent once.
    stopping: Arc<AtomicBool>,
}

impl Notifier {
    /// Enabled when `NOTIFY_SOCKET` is set (systemd sets it for `Type=notify` units).
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty()),
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&[Msg::Ready, Msg::Status(status)]);
    }

    /// `STATUS=…`.
    pub fn status(&self, status: &str) {
        self.send(&[Msg::Status(status)]);
    }

    /// `RELOADING=1` (a config reload started; `ready` ends it).
    pub fn reloading(&self, status: &str) {
        self.send(&[Msg::Reloading, Msg::Status(status)]);
    }

    /// `STOPPING=1`, the first time only.
    pub fn stopping(&self, status: &str) {
        if !self.stopping.swap(true, Ordering::SeqCst) {
            self.send(&[Msg::Stopping, Msg::Status(status)]);
        }
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send(&[Msg::Watchdog]);
    }

    fn send(&self, msgs: &[Msg<'_>]) {
        if !self.enabled {
            return;
        }
        #[cfg(unix)]
        {
            use sd_notify::NotifyState;
            let states: Vec<NotifyState<'_>> = msgs
                .iter()
                .map(|m| match m {
                    Msg::Ready => NotifyState::Ready,
                    Msg::Reloading => NotifyState::Reloading,
                    Msg::Stopping => NotifyState::Stopping,
                    Msg::Watchdog => NotifyState::Watchdog,
                    Msg::Status(s) => NotifyState::Status(s),
                })
                .collect();
            if let Err(e) = sd_notify::notify(&states) {
                debug!("cannot notify the service manager: {e}");
            }
        }
        #[cfg(not(unix))]
        let _ = msgs;
    }

    /// How often to ping the watchdog: half of `WATCHDOG_USEC`, or `None` when the
    /// watchdog is off (unset, or `WATCHDOG_PID` names another process).
    pub fn watchdog_interval(&self) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        #[cfg(unix)]
        {
            sd_notify::watchdog_enabled()
                .filter(|d| !d.is_zero())
                .map(|d| (d / 2).max(Duration::from_millis(10)))
        }
        #[cfg(not(unix))]
        None
    }

    /// Pings the watchdog every [`Notifier::watchdog_interval`] until `stop`, while the
    /// agent's heartbeat says it progresses or idles by design within the watchdog's
    /// timeout (twice the interval); `None` when the watchdog is off.
    pub fn spawn_watchdog(&self, stop: CancellationToken) -> Option<JoinHandle<()>> {
        let every = self.watchdog_interval()?;
        let window = every * 2;
        let me = self.clone();
        debug!("systemd watchdog on: pinging every {every:?} while the agent progresses");
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut starved = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let alive = crate::agent::heartbeat::alive(window);
                if alive {
                    me.watchdog();
                } else if !starved {
                    warn!(
                        "no progress for {window:?} while at work: not feeding the watchdog \
                         (the service manager will restart the agent)"
                    );
                }
                starved = !alive;
            }
        }))
    }

    /// Sends `STATUS=` lines as `agent` works, until the task is aborted (do so when the
    /// agent is replaced or stops). Without a service manager nothing is spawned.
    pub fn spawn_status(&self, agent: &Arc<Agent>) -> Option<JoinHandle<()>> {
        if !self.enabled {
            return None;
        }
        let me = self.clone();
        let agent = agent.clone();
        let mut events = agent.subscribe();
        Some(tokio::spawn(async move {
            let names: Vec<String> = agent
                .config()
                .cameras
                .iter()
                .map(|c| c.name.clone())
                .collect();
            let mut board = StatusBoard::new(&names);
            loop {
                let e = match events.recv().await {
                    Ok(e) => e,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => break,
                };
                let imei = match &e {
                    AgentEvent::Downloaded { imei, .. } | AgentEvent::Offloaded { imei, .. } => {
                        Some(imei.clone())
                    }
                    _ => None,
                };
                if let Some(imei) = &imei
                    && !board.knows(imei)
                {
                    // The first pass over a camera ends after its clips moved: name it from
                    // the store (it was seen under this name), else by its IMEI.
                    let name = agent
                        .store()
                        .cameras()
                        .await
                        .ok()
                        .and_then(|cs| cs.into_iter().find(|c| &c.imei == imei))
                        .and_then(|c| c.config_name);
                    board.name_imei(imei, name);
                }
                let pending = match (&e, &imei) {
                    (AgentEvent::Offloaded { .. }, Some(imei)) => agent.remaining(imei).await.ok(),
                    _ => None,
                };
                if board.apply(&e, pending) {
                    me.status(&board.line());
                }
            }
        }))
    }
}

/// One notify-protocol assignment (mapped to `sd_notify::NotifyState` on unix).
enum Msg<'a> {
    Ready,
    Reloading,
    Stopping,
    Watchdog,
    Status(&'a str),
}

/// What each camera is doing, as one status line ("name: what; name: what").
#[derive(Debug, Default)]
pub struct StatusBoard {
    /// Per configured camera, in config order.
    order: Vec<String>,
    lines: BTreeMap<String, String>,
    /// Which camera an IMEI was last seen at.
    camera_of: HashMap<String, String>,
    /// Clips downloaded and offloaded (uploaded and verified) this pass, per camera.
    downloaded: HashMap<String, usize>,
    offloaded: HashMap<String, usize>,
}

impl StatusBoard {
    pub fn new(cameras: &[String]) -> StatusBoard {
        let mut b = StatusBoard {
            order: cameras.to_vec(),
            ..Default::default()
        };
        for c in cameras {
            b.lines
                .insert(c.clone(), "waiting for the first pass".into());
        }
        b
    }

    /// Whether `imei` is known to be at a camera.
    pub fn knows(&self, imei: &str) -> bool {
        self.camera_of.contains_key(imei)
    }

    /// Records where `imei` is: `name`, else the only camera, else the IMEI itself.
    pub fn name_imei(&mut self, imei: &str, name: Option<String>) {
        let name = name
            .filter(|n| self.order.contains(n))
            .or_else(|| match self.order.as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            })
            .unwrap_or_else(|| format!("IMEI {imei}"));
        self.camera_of.insert(imei.to_string(), name);
    }

    fn camera(&self, imei: &str) -> String {
        self.camera_of
            .get(imei)
            .cloned()
            .unwrap_or_else(|| format!("IMEI {imei}"))
    }

    /// Updates the board; `pending` is the camera's clips still needing work (for
    /// `Offloaded`). Returns whether the line changed.
    pub fn apply(&mut self, e: &AgentEvent, pending: Option<usize>) -> bool {
        let (camera, text) = match e {
            AgentEvent::CameraAppeared { camera, imei } => {
                self.camera_of.insert(imei.clone(), camera.clone());
                return false;
            }
            AgentEvent::Downloaded { imei, .. } => {
                let cam = self.camera(imei);
                let d = bump(&mut self.downloaded, &cam);
                let o = self.offloaded.get(&cam).copied().unwrap_or(0);
                let text = format!("{} downloaded, {} offloaded this pass", clips(d), clips(o));
                (cam, text)
            }
            AgentEvent::Offloaded { imei, .. } => {
                let cam = self.camera(imei);
                let o = bump(&mut self.offloaded, &cam);
                let text = match pending {
                    Some(p) => format!("{} offloaded this pass, {p} pending", clips(o)),
                    None => format!("{} offloaded this pass", clips(o)),
                };
                (cam, text)
            }
            AgentEvent::PassFinished { camera, outcome } => {
                let o = self.offloaded.remove(camera).unwrap_or(0);
                self.downloaded.remove(camera);
                let text = match outcome {
                    PassOutcome::Away => "not reachable".to_string(),
                    PassOutcome::Done { imei, remaining } => {
                        self.camera_of.insert(imei.clone(), camera.clone());
                        format!("{} offloaded this pass, {remaining} pending", clips(o))
                    }
                    PassOutcome::Failed { imei, error } => {
                        if let Some(imei) = imei {
                            self.camera_of.insert(imei.clone(), camera.clone());
                        }
                        format!(
                            "pass failed after {} offloaded: {}",
                            clips(o),
                            shorten(error, 120)
                        )
                    }
                };
                (camera.clone(), text)
            }
            _ => return false,
        };
        if !self.order.contains(&camera) {
            self.order.push(camera.clone());
        }
        self.lines.insert(camera, text.clone()) != Some(text)
    }

    /// The status line: every camera's state, in config order.
    pub fn line(&self) -> String {
        let parts: Vec<String> = self
            .order
            .iter()
            .filter_map(|c| self.lines.get(c).map(|t| format!("{c}: {t}")))
            .collect();
        shorten(&parts.join("; "), MAX_STATUS)
    }
}

fn bump(m: &mut HashMap<String, usize>, k: &str) -> usize {
    let n = m.entry(k.to_string()).or_insert(0);
    *n += 1;
    *n
}

fn clips(n: usize) -> String {
    if n == 1 {
        "1 clip".into()
    } else {
        format!("{n} clips")
    }
}

/// One line of at most `max` characters (newlines would end the notify assignment).
fn shorten(s: &str, max: usize) -> String {
    let one: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one.chars().count() <= max {
        return one;
    }
    let mut out: String = one.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offloaded(imei: &str) -> AgentEvent {
        AgentEvent::Offloaded {
            imei: imei.into(),
            device_name: "CV200".into(),
            clip: "c.mp4".into(),
            key: "k".into(),
            event_code: "04".into(),
            size: 1,
            sha256: "00".into(),
            sent: 1,
            secs: 0.1,
        }
    }

    #[test]
    fn board_reports_each_camera_truthfully() {
        let mut b = StatusBoard::new(&["truck-12".into(), "truck-14".into()]);
        assert_eq!(
            b.line(),
            "truck-12: waiting for the first pass; truck-14: waiting for the first pass"
        );
        b.name_imei("111", Some("truck-12".into()));
        assert!(b.apply(&offloaded("111"), Some(20)));
        assert!(b.apply(&offloaded("111"), Some(19)));
        assert!(b.apply(
            &AgentEvent::PassFinished {
                camera: "truck-14".into(),
                outcome: PassOutcome::Away,
            },
            None
        ));
        assert_eq!(
            b.line(),
            "truck-12: 2 clips offloaded this pass, 19 pending; truck-14: not reachable"
        );
        assert!(b.apply(&offloaded("111"), Some(17)));
        b.apply(
            &AgentEvent::PassFinished {
                camera: "truck-12".into(),
                outcome: PassOutcome::Done {
                    imei: "111".into(),
                    remaining: 17,
                },
            },
            None,
        );
        assert!(
            b.line()
                .starts_with("truck-12: 3 clips offloaded this pass, 17 pending;")
        );
        // The next pass counts from zero.
        b.apply(
            &AgentEvent::PassFinished {
                camera: "truck-12".into(),
                outcome: PassOutcome::Done {
                    imei: "111".into(),
                    remaining: 0,
                },
            },
            None,
        );
        assert!(
            b.line()
                .starts_with("truck-12: 0 clips offloaded this pass, 0 pending;")
        );
    }

    #[test]
    fn unknown_imei_of_a_single_camera_is_that_camera() {
        let mut b = StatusBoard::new(&["truck-12".into()]);
        b.name_imei("222", None);
        b.apply(&offloaded("222"), Some(1));
        assert_eq!(b.line(), "truck-12: 1 clip offloaded this pass, 1 pending");
    }

    #[test]
    fn status_is_one_bounded_line() {
        let s = shorten("a\nb", 10);
        assert_eq!(s, "a b");
        let long = "x".repeat(1000);
        assert_eq!(shorten(&long, MAX_STATUS).chars().count(), MAX_STATUS);
    }

    #[test]
    fn nothing_is_sent_without_notify_socket() {
        // NOTIFY_SOCKET is not set for unit tests; every call must be a silent no-op.
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            let n = Notifier::from_env();
            assert!(!n.enabled());
            assert_eq!(n.watchdog_interval(), None);
            n.ready("x");
            n.stopping("x");
        }
    }
}
