//! One visit to a camera hotspot (see `radio`): leave the uplink (one radio: uploads
//! stopped and settled, deletes for this visit checked in the bucket), join, find out
//! which camera answers, one pass over it until it ends or the turn is over, back to the
//! uplink, then (one radio) upload what was taken before the next camera.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::radio::Radio;
use super::retention::DeleteGate;
use super::{Agent, PassOutcome};
use crate::wifi::credentials::{Match, Source};
use crate::wifi::nm::{AccessPoint, JoinError, Joined};

/// The visit the hotspot slot's pass belongs to.
#[derive(Debug)]
pub(super) struct Current {
    /// Which clips the pass may delete (none outside a visit).
    pub(super) gate: DeleteGate,
    /// The visited camera's name: its `[[camera]]` name, else the hotspot's SSID.
    pub(super) name: Option<String>,
}

impl Default for Current {
    fn default() -> Current {
        Current {
            gate: DeleteGate::Closed,
            name: None,
        }
    }
}

/// The longest the bucket check before a visit may take (the rest waits for a later visit).
const CHECK_BEFORE_VISIT: Duration = Duration::from_secs(30);

impl Agent {
    /// Visits hotspot `ap` with password `m`. Returns a name for the visit and the pass's
    /// outcome (`Away` when the join failed or no camera answered).
    pub(super) async fn visit(
        self: &Arc<Self>,
        radio: &Radio,
        ap: &AccessPoint,
        m: Match,
    ) -> (String, PassOutcome) {
        // The camera's name (its `[[camera]]` name, else its SSID), and with its BSSID for
        // the log when it has no name of its own.
        let (label, name) = match &m.source {
            Source::Camera(n) => (n.clone(), n.clone()),
            _ => {
                let ssid = ap.ssid_lossy();
                let name = format!("{ssid} ({})", ap.bssid);
                (ssid, name)
            }
        };
        let recorded = self.recorded_imei(&ap.bssid).await.or(m.imei.clone());
        let gate = if radio.one_radio() {
            self.leave_uplink(radio, recorded.as_deref()).await
        } else {
            DeleteGate::Open
        };
        if self.stopping() {
            self.leave_camera_nothing_joined(radio).await;
            return (name, PassOutcome::Away);
        }
        if radio.one_radio() {
            // From here on S3 is out of reach by design (no outage).
            self.schedule.set_radio_away(true);
        }
        let started = Instant::now();
        debug!(hotspot = %name, bssid = %ap.bssid, "joining the camera's hotspot");
        let outcome = match self.join(radio, ap, &m.password, &name).await {
            Ok(joined) => {
                info!(hotspot = %name, "joined the camera's hotspot");
                let now = crate::store::now_ms();
                if let Err(e) = self.store.hotspot_joined(ap.bssid.clone(), now).await {
                    warn!("cannot record the join: {e:#}");
                }
                let o = self
                    .on_camera(radio, &joined, recorded.as_deref(), gate, &label)
                    .await;
                self.leave_camera(radio, &joined).await;
                o
            }
            Err(e) => {
                self.join_failed(radio, ap, &name, e).await;
                self.leave_camera_nothing_joined(radio).await;
                PassOutcome::Away
            }
        };
        self.emit(super::AgentEvent::PassFinished {
            camera: name.clone(),
            outcome: outcome.clone(),
        });
        debug!(hotspot = %name, elapsed = ?started.elapsed(), "visit over");
        if radio.one_radio() && !self.stopping() {
            self.upload_on_uplink(radio).await;
        }
        (name, outcome)
    }

    /// Joins `ap`. NetworkManager says "no secrets" both for a wrong password and for a
    /// handshake lost to a weak signal: the join is tried once more before the password is
    /// called wrong (which keeps the hotspot away for `wrong_password_retry`).
    async fn join(
        &self,
        radio: &Radio,
        ap: &AccessPoint,
        password: &qucam::Secret,
        name: &str,
    ) -> Result<Joined, JoinError> {
        let t = radio.wifi.join_timeout;
        match radio.nm.join(ap, password, t).await {
            Err(JoinError::WrongPassword) if !self.stopping() => {
                debug!(hotspot = %name, signal = ap.strength, "no secrets (a wrong password, or a handshake lost to a weak signal): trying once more");
                radio.nm.join(ap, password, t).await
            }
            r => r,
        }
    }

    /// The IMEI last seen behind `bssid`.
    async fn recorded_imei(&self, bssid: &str) -> Option<String> {
        let rows = self.store.hotspots().await.ok()?;
        rows.into_iter().find(|r| r.bssid == bssid)?.imei
    }

    /// One radio, before it leaves the uplink: no new upload starts, those in flight
    /// finish (bounded by `max_per_camera`), and the verified clips of the camera recorded
    /// behind the hotspot are checked in the bucket (for at most [`CHECK_BEFORE_VISIT`] or
    /// `max_per_camera`): only those may be deleted at this visit. S3 is still reachable
    /// meanwhile: its failures are outages as at any other time.
    async fn leave_uplink(&self, radio: &Radio, recorded: Option<&str>) -> DeleteGate {
        self.schedule.hold_uploads();
        let settle = async {
            while !self.stopping()
                && (self.in_flight.lock().is_ok_and(|s| !s.is_empty())
                    || self.overlapping.any(None))
            {
                tokio::select! {
                    _ = self.upload_done.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        };
        let turn = radio.wifi.max_per_camera;
        if tokio::time::timeout(turn, settle).await.is_err() {
            warn!("uploads still running when the radio leaves for a camera");
        }
        match recorded {
            Some(imei) if !self.destination_paused() => {
                let deadline = tokio::time::Instant::now() + CHECK_BEFORE_VISIT.min(turn);
                let check = self.check_before_visit(imei, deadline);
                let (ids, complete) = tokio::select! {
                    r = check => r,
                    // A stop does not wait for the check: the visit does not happen.
                    _ = self.shutdown.cancelled() => (Default::default(), false),
                    _ = self.soft_stop.cancelled() => (Default::default(), false),
                };
                if let Ok(mut cut) = self.check_cut_short.lock() {
                    if complete {
                        cut.remove(imei);
                    } else {
                        cut.insert(imei.to_string());
                    }
                }
                DeleteGate::Checked(ids)
            }
            _ => DeleteGate::Checked(Default::default()),
        }
    }

    /// Joined: which camera answers, then one pass over it, cut short when the turn is
    /// over (`max_per_camera`), the hotspot drops, or the agent stops.
    async fn on_camera(
        self: &Arc<Self>,
        radio: &Radio,
        joined: &Joined,
        recorded: Option<&str>,
        gate: DeleteGate,
        name: &str,
    ) -> PassOutcome {
        let Some(slot) = self.hotspot else {
            return PassOutcome::Away;
        };
        let answer = tokio::select! {
            a = self.who_answers(slot, joined, recorded) => a,
            _ = self.shutdown.cancelled() => None,
        };
        let (imei, gate) = match answer {
            Some((imei, true)) => (imei, gate),
            Some((imei, false)) => (imei, DeleteGate::Closed),
            None => return PassOutcome::Away,
        };
        let cut = |why: &str| PassOutcome::Failed {
            imei: Some(imei.clone()),
            error: why.to_string(),
        };
        if let Ok(mut v) = self.visit.lock() {
            v.gate = gate;
            v.name = Some(name.to_string());
        }
        let turn = radio.wifi.max_per_camera;
        let _busy = super::heartbeat::busy();
        let outcome = tokio::select! {
            o = self.pass(slot) => o,
            _ = tokio::time::sleep(turn) => {
                info!(hotspot = %joined.ap.bssid, "turn over (wifi.max_per_camera): the camera's other clips wait for its next visit");
                cut("turn over")
            }
            _ = radio.nm.wait_dropped(joined) => {
                info!(hotspot = %joined.ap.bssid, "the hotspot dropped (the vehicle left?): the rest waits for its next visit");
                cut("the hotspot dropped")
            }
            _ = self.shutdown.cancelled() => cut("shutting down"),
        };
        if let Ok(mut v) = self.visit.lock() {
            *v = Current::default();
        }
        if matches!(outcome, PassOutcome::Done { .. }) && self.took_everything(&imei).await {
            let now = crate::store::now_ms();
            let _ = self
                .store
                .hotspot_complete(joined.ap.bssid.clone(), now)
                .await;
        }
        outcome
    }

    /// Whether nothing of `imei` is left to download (its visit was complete).
    async fn took_everything(&self, imei: &str) -> bool {
        self.store
            .camera_work()
            .await
            .is_ok_and(|w| w.get(imei).is_none_or(|w| w.to_download == 0))
    }

    /// Reads the IMEI of the camera behind the hotspot and records it, with whether it is
    /// the one recorded (or the first); `false` when another camera answers there now (the
    /// record is corrected; nothing pending is applied to it at this visit). `None` when
    /// no camera answers.
    async fn who_answers(
        &self,
        slot: usize,
        joined: &Joined,
        recorded: Option<&str>,
    ) -> Option<(String, bool)> {
        let client = &self.cameras[slot].1;
        let info = match super::identity::device_info(client).await {
            Ok(i) if qucam::check_imei(&i.imei).is_ok() => i,
            Ok(_) | Err(_) => {
                warn!(hotspot = %joined.ap.bssid, "joined, but no camera answers at {}", self.cameras[slot].0.url);
                return None;
            }
        };
        self.learn_hotspot(&info, Some(&joined.ap.bssid)).await;
        let bssid = joined.ap.bssid.clone();
        let previous = self
            .store
            .hotspot_identified(bssid, info.imei.clone())
            .await
            .ok()
            .flatten();
        match recorded.or(previous.as_deref()) {
            Some(old) if old != info.imei => {
                warn!(hotspot = %joined.ap.bssid, imei = %info.imei, was = %old, "another camera answers behind this hotspot: record corrected; nothing is deleted from it at this visit");
                Some((info.imei, false))
            }
            _ => Some((info.imei, true)),
        }
    }

    /// A join failed: a wrong password is reported once and retried after
    /// `wrong_password_retry`; a hotspot that is gone (the truck left) is tried again after
    /// a minute, with no backoff and no warning; other failures back off
    /// ([`JoinError::retry_delay`]). The store keeps the reason ([`JoinError::reason`]).
    async fn join_failed(&self, radio: &Radio, ap: &AccessPoint, name: &str, e: JoinError) {
        let retry_of = {
            let (e, wrong_retry) = (e.clone(), radio.wifi.wrong_password_retry);
            move |failures| e.retry_delay(failures, wrong_retry)
        };
        let retry_at = {
            let (now, retry_of) = (crate::store::now_ms(), retry_of.clone());
            move |failures| now + retry_of(failures).as_millis() as i64
        };
        let failed = self
            .store
            .hotspot_failed(ap.bssid.clone(), e.reason(), retry_at)
            .await;
        // A hotspot NetworkManager still lists after the truck left: no warning.
        let gone = match &e {
            JoinError::Gone => true,
            JoinError::WrongPassword
            | JoinError::Failed { .. }
            | JoinError::Timeout
            | JoinError::Nm(_) => false,
        };
        match failed {
            Ok(f) if f.first_wrong_password => {
                let retry = retry_of(f.failures_before);
                warn!(hotspot = %name, "wrong password for this camera's hotspot: not joined again for {}", humantime::format_duration(retry))
            }
            Ok(_) if e.counts_as_wrong_password() => {
                debug!(hotspot = %name, "wrong password (reported before)")
            }
            Ok(_) if gone => info!(hotspot = %name, "the hotspot is gone"),
            Ok(f) if f.failures_before == 0 => {
                let retry = retry_of(0);
                warn!(hotspot = %name, "cannot join the camera's hotspot: {e} (tried again in {})", humantime::format_duration(retry))
            }
            Ok(f) => {
                debug!(hotspot = %name, failures = f.failures_before + 1, "cannot join the camera's hotspot: {e}")
            }
            Err(err) => warn!("cannot record the failed join: {err:#}"),
        }
    }

    /// After a visit: back on the uplink (one radio: its activation replaces the camera's
    /// connection, no gap), or off the hotspot. The camera's connection is deactivated
    /// whenever the uplink could not take its place.
    async fn leave_camera(&self, radio: &Radio, joined: &Joined) {
        if self.back_on_uplink(radio).await {
            return;
        }
        if let Err(e) = radio.nm.leave(joined).await {
            warn!(hotspot = %joined.ap.bssid, "cannot leave the hotspot: {e}");
        }
        self.schedule.set_radio_away(false);
    }

    /// After a failed join: back on the uplink, or at least not away.
    async fn leave_camera_nothing_joined(&self, radio: &Radio) {
        if !self.back_on_uplink(radio).await {
            self.schedule.set_radio_away(false);
        }
    }

    /// Restores the uplink; whether it is the device's connection now (never without one).
    async fn back_on_uplink(&self, radio: &Radio) -> bool {
        let timeout = if self.shutdown.is_cancelled() {
            Duration::from_secs(30).min(radio.wifi.uplink_timeout)
        } else {
            radio.wifi.uplink_timeout
        };
        self.restore_uplink(radio, timeout).await
    }

    /// One radio, back on the uplink: upload what the visit took, until done, the
    /// destination is paused, or `max_per_camera` (the next camera waits no longer).
    async fn upload_on_uplink(&self, radio: &Radio) {
        let paused = async {
            while !self.destination_paused() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::select! {
            _ = self.wait_uploads(None) => {}
            _ = paused => info!("the destination is down: the next camera's clips wait in the spool"),
            _ = tokio::time::sleep(radio.wifi.max_per_camera) => {
                info!("uploads go on at the next return to the uplink");
            }
        }
    }

    /// With `wifi.learn`: remembers the hotspot SSID and password a camera reports (off
    /// the async workers: a change is written to the learned file with fsync).
    pub(super) async fn learn_hotspot(&self, info: &qucam::DeviceInfo, bssid: Option<&str>) {
        let learn = self.cfg.wifi.as_ref().is_some_and(|w| w.learn);
        let (Some(creds), Some(ssid)) = (&self.credentials, &info.ssid) else {
            return;
        };
        if !learn || info.password.expose().is_empty() {
            return;
        }
        let creds = creds.clone();
        let (imei, ssid, psk) = (info.imei.clone(), ssid.clone(), info.password.clone());
        let bssid = bssid.map(str::to_owned);
        let learned = tokio::task::spawn_blocking(move || {
            let mut c = creds.lock().ok()?;
            Some(match c.learn(&imei, &ssid, &psk, bssid.as_deref()) {
                Ok(changed) => Ok(changed),
                Err(e) => {
                    let m = format!("{e:#}");
                    Err((c.first_warning(&m), m))
                }
            })
        })
        .await;
        let imei = &info.imei;
        match learned {
            Ok(Some(Ok(true))) => info!(imei = %imei, "learned the camera's hotspot"),
            Ok(Some(Err((true, m)))) => {
                warn!(imei = %imei, "cannot keep the camera's hotspot: {m}")
            }
            Ok(Some(Err((false, m)))) => {
                debug!(imei = %imei, "cannot keep the camera's hotspot: {m}")
            }
            Ok(_) | Err(_) => {}
        }
    }
}
