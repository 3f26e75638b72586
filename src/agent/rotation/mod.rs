//! Depot Wi-Fi: the radio's rotation over camera hotspots (`[wifi]`, Linux).
//!
//! Every camera serves its API at the same hotspot address, so a camera in range is found
//! by its access point, not by probing a URL. A rotation: scan, match the access points in
//! range to passwords (`wifi::credentials`), order them (`wifi::choose`), then visit each:
//! join it, run one pass over the camera that answers (the hotspot worker, at
//! `wifi.camera_url`), and go back to the uplink (`visit` holds one visit). The rotation is
//! the one writer of the radio's state (`radio`).
//!
//! - **Never strand the machine**: the uplink is restored first thing at start (after a
//!   crash), after every visit (joined or not), and on shutdown. Camera connections are
//!   volatile and bound to the agent's D-Bus client, so NetworkManager drops them if the
//!   agent dies.
//! - **One radio** (`wifi.uplink` set): store and forward. Before the radio leaves, new
//!   uploads stop and those in flight finish; the verified clips of the camera recorded
//!   behind the hotspot are checked in the bucket (only those may be deleted during the
//!   visit: the others wait for the next visit); after the visit, uploads run on the
//!   uplink before the next camera (bounded by `max_per_camera`).
//! - **Fair and bounded**: a visit ends at `wifi.max_per_camera`; a wrong password is
//!   reported once and retried after a few minutes, doubling per refused visit up to
//!   `wifi.wrong_password_retry`, and at once when the credentials for the hotspot change.

mod visit;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tracing::{debug, info, warn};

use super::camera::{CameraWorker, remaining};
use super::events::Events;
use super::learn::Learner;
use super::radio::{RadioEvent, RadioStates};
use super::uploader::Uploader;
use super::{Mode, PassOutcome, Stops};
use crate::config::{CameraConfig, DeletePolicy, WifiConfig};
use crate::store::Store;
use crate::wifi::choose::{Candidate, choose};
use crate::wifi::credentials::Match;
use crate::wifi::nm::{AccessPoint, Nm};
use visit::Visit;

/// How long a scan may take before the access points NetworkManager already knows are used.
const SCAN_WAIT: Duration = Duration::from_secs(10);
/// How long the radio's last act at shutdown may spend rejoining the uplink (the unit's
/// stop timeout leaves room for it).
const SHUTDOWN_UPLINK: Duration = Duration::from_secs(30);

/// The camera slot behind whichever hotspot the radio is on.
pub(crate) fn hotspot_slot(w: &WifiConfig) -> CameraConfig {
    CameraConfig {
        name: "hotspot".to_string(),
        url: w.camera_url.clone(),
        client_id: None,
        params: Default::default(),
        connect_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(10),
        ssid: None,
        bssid: None,
        password: None,
        imei: None,
        hotspot_only: true,
    }
}

/// NetworkManager and the `[wifi]` settings (found again when NetworkManager restarts).
struct Link {
    nm: Nm,
    wifi: WifiConfig,
}

/// Connects to NetworkManager on the system bus and finds the interface.
async fn connect(wifi: &WifiConfig) -> Result<Link> {
    let nm = Nm::connect(&wifi.interface)
        .await
        .with_context(|| format!("Wi-Fi interface {}", wifi.interface))?;
    Ok(Link {
        nm,
        wifi: wifi.clone(),
    })
}

/// What the rotation is built with.
pub(crate) struct RotationParts {
    pub(crate) wifi: WifiConfig,
    pub(crate) delete_policy: DeletePolicy,
    /// The worker of the camera behind whichever hotspot the radio is on.
    pub(crate) worker: CameraWorker,
    pub(crate) store: Store,
    pub(crate) uploader: Arc<Uploader>,
    pub(crate) learner: Learner,
    pub(crate) events: Events,
    pub(crate) stops: Stops,
}

/// The radio's rotation over the camera hotspots in range.
pub(crate) struct Rotation {
    wifi: WifiConfig,
    delete_policy: DeletePolicy,
    /// The one writer of the radio's state.
    states: RadioStates,
    worker: CameraWorker,
    store: Store,
    uploader: Arc<Uploader>,
    learner: Learner,
    events: Events,
    stops: Stops,
    mode: Mode,
    /// One radio: the IMEIs whose last check in the bucket before a visit was cut short
    /// (its time bound, an outage). Their verified clips do not make a visit urgent: the
    /// radio would only hop back to check them again.
    check_cut_short: Mutex<HashSet<String>>,
}

impl Rotation {
    pub(crate) fn new(p: RotationParts, states: RadioStates, mode: Mode) -> Rotation {
        Rotation {
            wifi: p.wifi,
            delete_policy: p.delete_policy,
            states,
            worker: p.worker,
            store: p.store,
            uploader: p.uploader,
            learner: p.learner,
            events: p.events,
            stops: p.stops,
            mode,
            check_cut_short: Mutex::new(HashSet::new()),
        }
    }

    /// Whether the uplink shares the radio (store and forward).
    fn one_radio(&self) -> bool {
        self.wifi.uplink.is_some()
    }

    /// The daemon's radio: restores the uplink, then rotates over the hotspots in range
    /// every `scan_interval` until shutdown or soft stop, and restores the uplink again.
    pub(crate) async fn run(&self) {
        let Some(mut radio) = self.link().await else {
            return;
        };
        let every = radio.wifi.scan_interval;
        while !self.stopping() {
            if self.rotation(&radio).await.is_none() {
                // A re-plugged adapter, a restarted NetworkManager or system bus: their
                // objects are new. Found again (the uplink restored first), or tried
                // again at the next rotation.
                if let Ok(r) = connect(&radio.wifi).await {
                    info!(interface = %r.wifi.interface, "NetworkManager found again");
                    self.first_act(&r).await;
                    radio = r;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.stops.shutdown.cancelled() => {}
                _ = self.stops.soft.cancelled() => {}
            }
        }
        self.restore_uplink(&radio, SHUTDOWN_UPLINK).await;
    }

    /// `run --once`: one rotation over the hotspots in range. Each visited camera's
    /// outcome counts what is not verified yet after the uploads (deletes waiting for the
    /// next visit are not work left for this run).
    pub(crate) async fn once(&self) -> Vec<(String, PassOutcome)> {
        let Some(radio) = self.link().await else {
            return Vec::new();
        };
        let visits = self.rotation(&radio).await.unwrap_or_default();
        self.restore_uplink(&radio, SHUTDOWN_UPLINK).await;
        self.uploader.wait_uploads(None).await;
        self.uploader.wait_overlaps(None).await;
        let mut out = Vec::new();
        for (name, o) in visits {
            out.push((name, self.settled_outcome(o).await));
        }
        out
    }

    /// The radio, with the uplink restored (the first act of a radio, also after a crash).
    /// `None` without `[wifi]`, or when NetworkManager cannot be reached (said once; the
    /// daemon tries again every `scan_interval`).
    async fn link(&self) -> Option<Link> {
        let wifi = &self.wifi;
        let mut said = false;
        loop {
            match connect(wifi).await {
                Ok(radio) => {
                    self.first_act(&radio).await;
                    return Some(radio);
                }
                Err(e) if !said => {
                    warn!("depot Wi-Fi is off until NetworkManager answers: {e:#}");
                    said = true;
                }
                Err(_) => {}
            }
            match self.mode {
                Mode::Once => return None,
                Mode::Daemon => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(wifi.scan_interval) => {}
                _ = self.stops.shutdown.cancelled() => return None,
                _ = self.stops.soft.cancelled() => return None,
            }
        }
    }

    /// One rotation: scan, choose, visit each hotspot in turn. Returns each visit's name
    /// and outcome; `None` when the scan failed.
    async fn rotation(&self, radio: &Link) -> Option<Vec<(String, PassOutcome)>> {
        // An uplink that could not be restored after the last visit is tried again.
        self.restore_uplink(radio, radio.wifi.uplink_timeout).await;
        let aps = match radio.nm.scan(SCAN_WAIT).await {
            Ok(aps) => aps,
            Err(e) => {
                warn!("cannot scan for camera hotspots: {e}");
                return None;
            }
        };
        // Only hotspots a password opens are recorded (not every access point nearby).
        let opened: Vec<(AccessPoint, Match)> = aps
            .into_iter()
            .filter_map(|a| {
                let m = self.learner.password_for(&a.ssid, &a.bssid)?;
                Some((a, m))
            })
            .collect();
        let seen = opened
            .iter()
            .map(|(a, _)| (a.bssid.clone(), a.ssid_lossy(), a.strength))
            .collect();
        if let Err(e) = self.store.hotspots_seen(seen, crate::store::now_ms()).await {
            warn!("cannot record the hotspots in range: {e:#}");
        }
        let plan = self.plan(radio, opened).await;
        debug!(
            visits = plan.len(),
            "a rotation over the hotspots in range begins"
        );
        let mut visits = Vec::new();
        for (ap, _) in plan {
            if self.stopping() {
                break;
            }
            // An earlier visit of this rotation may have pinned a learned password to
            // another access point with this SSID: the credentials are asked again.
            let Some(m) = self.learner.password_for(&ap.ssid, &ap.bssid) else {
                debug!(bssid = %ap.bssid, "no password for this hotspot any more: not joined");
                continue;
            };
            let visit = Visit {
                rot: self,
                radio,
                ap: &ap,
                m,
            };
            visits.push(visit.run().await);
        }
        Some(visits)
    }

    /// The hotspots in range that a password opens, in the order they are visited.
    async fn plan(
        &self,
        radio: &Link,
        opened: Vec<(AccessPoint, Match)>,
    ) -> Vec<(AccessPoint, Match)> {
        let rows = self.store.hotspots().await.unwrap_or_default();
        let work = self.store.camera_work().await.unwrap_or_default();
        // Verified clips make a visit worth it only while their deletes can be checked.
        let deletes =
            self.delete_policy == DeletePolicy::AfterUpload && !self.uploader.destination_paused();
        let mut known = Vec::new();
        let mut cands = Vec::new();
        for (ap, m) in strongest_per_bssid(opened) {
            let mut row = rows.iter().find(|r| r.bssid == ap.bssid).cloned();
            // A suspicious hotspot whose credentials changed is trusted again (the operator
            // may have changed a hotspot that was set up wrong).
            if let Some(r) = row.as_mut()
                && r.suspicious
                    .as_ref()
                    .is_some_and(|s| s.credentials != m.fingerprint(&ap.bssid))
            {
                info!(bssid = %ap.bssid, "the credentials of a hotspot marked suspicious changed: it may be joined again");
                if let Err(e) = self.store.hotspot_trusted_again(ap.bssid.clone()).await {
                    warn!("cannot clear the suspicious mark: {e:#}");
                }
                r.suspicious = None;
                r.retry_at = None;
            }
            // So is a hotspot that refused other credentials than those it would be offered
            // now (a password corrected in the config, the fleet file or learned since).
            if let Some(r) = row.as_mut()
                && r.refused_credentials
                    .as_ref()
                    .is_some_and(|c| *c != m.fingerprint(&ap.bssid))
            {
                info!(bssid = %ap.bssid, "the credentials of a hotspot that refused its password changed: it may be joined again");
                if let Err(e) = self
                    .store
                    .hotspot_credentials_changed(ap.bssid.clone())
                    .await
                {
                    warn!("cannot clear the wrong password's wait: {e:#}");
                }
                r.retry_at = r.suspicious.as_ref().map(|s| s.until);
                r.refused_credentials = None;
                r.wrong_password = false;
                r.failures = 0;
            }
            let row = row.as_ref();
            let imei = row.and_then(|r| r.imei.clone()).or_else(|| m.imei.clone());
            let pending = imei.as_ref().and_then(|i| work.get(i)).map_or(0, |w| {
                let checkable = deletes && !self.check_was_cut_short(imei.as_deref());
                w.to_download + if checkable { w.verified } else { 0 }
            });
            cands.push(Candidate {
                bssid: ap.bssid.clone(),
                strength: ap.strength,
                pending,
                last_joined: row.and_then(|r| r.last_joined),
                last_complete: row.and_then(|r| r.last_complete),
                seen_before: row.is_some_and(|r| r.last_joined.is_some()),
                retry_at: row.and_then(|r| r.retry_at).or_else(|| {
                    // Fully offloaded and nothing pending: not before `revisit_after` (the
                    // daemon; `run --once` is a rotation over every camera in range).
                    let revisit = radio.wifi.revisit_after.as_millis() as i64;
                    match self.mode {
                        Mode::Once => return None,
                        Mode::Daemon => {}
                    }
                    let done = row.and_then(|r| r.last_complete).filter(|_| pending == 0);
                    done.map(|t| t + revisit)
                }),
            });
            known.push((ap, m));
        }
        let order = choose(&cands, crate::store::now_ms(), radio.wifi.min_signal);
        order
            .into_iter()
            .filter_map(|i| known.get(i).cloned())
            .collect()
    }

    /// Whether the last check in the bucket before a visit to camera `imei` was cut short.
    fn check_was_cut_short(&self, imei: Option<&str>) -> bool {
        let cut = self.check_cut_short.lock();
        imei.is_some_and(|i| cut.is_ok_and(|c| c.contains(i)))
    }

    /// Restores the uplink (when it shares the radio): activates it unless it is already
    /// the device's active connection. Whether it is active now (`false` without one).
    async fn restore_uplink(&self, radio: &Link, timeout: Duration) -> bool {
        let Some(uplink) = &radio.wifi.uplink else {
            return false;
        };
        let active = radio.nm.uplink_active(uplink).await.unwrap_or(false)
            || match radio.nm.activate_uplink(uplink, timeout).await {
                Ok(()) => {
                    info!(uplink = %uplink, "back on the uplink");
                    true
                }
                Err(e) => {
                    warn!(uplink = %uplink, "cannot restore the uplink: {e}");
                    false
                }
            };
        if active {
            self.states.apply(RadioEvent::Back);
            self.uploader.ready();
        }
        active
    }

    /// The radio's first act (also after a crash): camera connections an earlier run left
    /// are removed and the uplink is restored.
    async fn first_act(&self, radio: &Link) {
        match radio.nm.remove_stale(radio.wifi.uplink.as_deref()).await {
            Ok(0) => {}
            Ok(n) => info!("removed {n} camera connection(s) left by an earlier run"),
            Err(e) => warn!("cannot remove leftover camera connections: {e}"),
        }
        self.restore_uplink(radio, radio.wifi.uplink_timeout).await;
    }

    fn stopping(&self) -> bool {
        self.stops.stopping()
    }

    /// A visit's outcome once the uploads of this run are done: the clips of its camera
    /// not verified yet (deletes waiting for the next visit are not counted).
    async fn settled_outcome(&self, o: PassOutcome) -> PassOutcome {
        let PassOutcome::Done { imei, .. } = o else {
            return o;
        };
        match remaining(&self.store, &imei, DeletePolicy::Never).await {
            Ok(remaining) => PassOutcome::Done { remaining, imei },
            Err(e) => PassOutcome::Failed {
                imei: Some(imei),
                error: format!("state database: {e:#}"),
            },
        }
    }
}

/// One access point per BSSID (the strongest, with what came with it), in the order
/// first seen.
fn strongest_per_bssid<T>(aps: Vec<(AccessPoint, T)>) -> Vec<(AccessPoint, T)> {
    let mut out: Vec<(AccessPoint, T)> = Vec::new();
    for (ap, t) in aps {
        match out.iter_mut().find(|(a, _)| a.bssid == ap.bssid) {
            Some(slot) if slot.0.strength < ap.strength => *slot = (ap, t),
            Some(_) => {}
            None => out.push((ap, t)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_visit_per_bssid_the_strongest() {
        let ap = |p: &str, b: &str, s: u8| {
            let ap = AccessPoint {
                path: p.into(),
                ssid: b"truck".to_vec(),
                bssid: b.into(),
                strength: s,
            };
            (ap, ())
        };
        let got = strongest_per_bssid(vec![
            ap("/1", "0A:00:00:00:00:01", 30),
            ap("/2", "0A:00:00:00:00:02", 50),
            ap("/3", "0A:00:00:00:00:01", 70),
            ap("/4", "0A:00:00:00:00:01", 10),
        ]);
        let paths: Vec<&str> = got.iter().map(|(a, _)| a.path.as_str()).collect();
        assert_eq!(paths, ["/3", "/2"]);
    }
}
