//! One visit to a camera hotspot (see the rotation), [`Visit::run`], in one straight
//! sequence:
//! 1. leave the uplink (one radio: the radio is `Leaving`, new uploads wait and those in
//!    flight settle);
//! 2. check the bucket (one radio: the verified clips of the camera recorded behind the
//!    hotspot; only those may be deleted at this visit);
//! 3. join the hotspot (one radio: the radio is `Away`, S3 out of reach by design);
//! 4. identify the camera that answers (its IMEI; another camera than the one recorded
//!    gets a closed delete gate);
//! 5. one pass over it by the hotspot worker ([`Turn::Visit`]), until it ends, the turn
//!    is over (`max_per_camera`), the hotspot drops or the agent stops;
//! 6. leave the camera and restore the uplink (the radio is `Home`);
//! 7. (one radio) upload what the visit took before the next camera.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::{Link, Rotation};
use crate::agent::camera::{DeleteGate, Turn, device_info};
use crate::agent::radio::RadioEvent;
use crate::agent::{AgentEvent, PassOutcome};
use crate::store::{self, Clip};
use crate::wifi::credentials::{Match, Source};
#[cfg(doc)]
use crate::wifi::nm::Nm;
use crate::wifi::nm::{AccessPoint, JoinError, Joined, Waits};

/// One visit of the rotation to hotspot `ap`, opened by `m`.
pub(super) struct Visit<'a> {
    pub(super) rot: &'a Rotation,
    pub(super) radio: &'a Link,
    pub(super) ap: &'a AccessPoint,
    pub(super) m: Match,
}

/// The longest the bucket check before a visit may take (the rest waits for a later visit).
const CHECK_BEFORE_VISIT: Duration = Duration::from_secs(30);

impl Visit<'_> {
    /// The visit. Returns a name for it and the pass's outcome (`Away` when the join failed
    /// or no camera answered).
    pub(super) async fn run(self) -> (String, PassOutcome) {
        let (rot, ap, m) = (self.rot, self.ap, &self.m);
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
        let recorded = self.recorded_imei().await.or(m.imei.clone());
        let gate = if rot.one_radio() {
            self.leave_uplink(recorded.as_deref()).await
        } else {
            DeleteGate::Open
        };
        if rot.stopping() {
            self.leave_camera_nothing_joined().await;
            return (name, PassOutcome::Away);
        }
        if rot.one_radio() {
            // From here on S3 is out of reach by design (no outage).
            rot.states.apply(RadioEvent::Join);
        }
        let started = Instant::now();
        debug!(hotspot = %name, bssid = %ap.bssid, "joining the camera's hotspot");
        let outcome = match self.join(&name).await {
            Ok(joined) => {
                info!(hotspot = %name, "joined the camera's hotspot");
                let now = store::now_ms();
                if let Err(e) = rot.store.hotspot_joined(ap.bssid.clone(), now).await {
                    warn!("cannot record the join: {e:#}");
                }
                let o = self
                    .on_camera(&joined, recorded.as_deref(), gate, &label)
                    .await;
                self.leave_camera(&joined).await;
                o
            }
            Err(e) => {
                self.join_failed(&name, e).await;
                self.leave_camera_nothing_joined().await;
                PassOutcome::Away
            }
        };
        rot.events.emit(AgentEvent::PassFinished {
            camera: name.clone(),
            outcome: outcome.clone(),
        });
        debug!(hotspot = %name, elapsed = ?started.elapsed(), "visit over");
        if rot.one_radio() && !rot.stopping() {
            self.upload_on_uplink().await;
        }
        (name, outcome)
    }

    /// Joins `ap`. NetworkManager says "no secrets" both for a wrong password and for a
    /// handshake lost to a weak signal: the join is tried once more before the password is
    /// called wrong (which keeps the hotspot away a few minutes at first, more at each
    /// visit refused in a row, up to `wrong_password_retry`). The visit records one failure
    /// either way: the wait grows across visits only.
    async fn join(&self, name: &str) -> Result<Joined, JoinError> {
        let (radio, ap, password) = (self.radio, self.ap, &self.m.password);
        let t = radio.wifi.join_timeout;
        let Some(camera) = radio.wifi.camera_host() else {
            // The config check makes this unreachable: the camera is named by its address.
            return Err(JoinError::Nm(format!(
                "wifi.camera_url {} names no IPv4 address",
                radio.wifi.camera_url
            )));
        };
        match radio.nm.join(ap, password, camera, t).await {
            Err(e) if e.counts_as_wrong_password() && !self.rot.stopping() => {
                debug!(hotspot = %name, signal = ap.strength, "no secrets (a wrong password, or a handshake lost to a weak signal): trying once more");
                radio.nm.join(ap, password, camera, t).await
            }
            r => r,
        }
    }

    /// The IMEI last seen behind the hotspot.
    async fn recorded_imei(&self) -> Option<String> {
        let rows = self.rot.store.hotspots().await.ok()?;
        rows.into_iter().find(|r| r.bssid == self.ap.bssid)?.imei
    }

    /// One radio, before it leaves the uplink: no new upload starts, those in flight
    /// finish (bounded by `max_per_camera`), and the verified clips of the camera recorded
    /// behind the hotspot are checked in the bucket (for at most [`CHECK_BEFORE_VISIT`] or
    /// `max_per_camera`): only those may be deleted at this visit. S3 is still reachable
    /// meanwhile: its failures are outages as at any other time.
    async fn leave_uplink(&self, recorded: Option<&str>) -> DeleteGate {
        let rot = self.rot;
        rot.states.apply(RadioEvent::Leave {
            hotspot: self.ap.bssid.clone(),
        });
        let turn = self.radio.wifi.max_per_camera;
        if tokio::time::timeout(turn, rot.uploader.settle())
            .await
            .is_err()
        {
            warn!("uploads still running when the radio leaves for a camera");
        }
        match recorded {
            Some(imei) if !rot.uploader.destination_paused() => {
                let deadline = tokio::time::Instant::now() + CHECK_BEFORE_VISIT.min(turn);
                let check = self.check_before_visit(imei, deadline);
                let (ids, complete) = tokio::select! {
                    r = check => r,
                    // A stop does not wait for the check: the visit does not happen.
                    _ = rot.stops.shutdown.cancelled() => (Default::default(), false),
                    _ = rot.stops.soft.cancelled() => (Default::default(), false),
                };
                if let Ok(mut cut) = rot.check_cut_short.lock() {
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
        &self,
        joined: &Joined,
        recorded: Option<&str>,
        gate: DeleteGate,
        name: &str,
    ) -> PassOutcome {
        let (rot, radio) = (self.rot, self.radio);
        let answer = tokio::select! {
            a = self.who_answers(joined, recorded) => a,
            _ = rot.stops.shutdown.cancelled() => None,
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
        let visit = Turn::Visit {
            gate,
            name: name.to_string(),
        };
        let turn = radio.wifi.max_per_camera;
        let _busy = crate::agent::heartbeat::busy();
        let outcome = tokio::select! {
            // (A swap ends the pass; the camera that answers now waits for its own visit.)
            end = rot.worker.pass(&visit) => end.outcome,
            _ = tokio::time::sleep(turn) => {
                info!(hotspot = %joined.ap.bssid, "turn over (wifi.max_per_camera): the camera's other clips wait for its next visit");
                cut("turn over")
            }
            _ = radio.nm.wait_dropped(joined) => {
                info!(hotspot = %joined.ap.bssid, "the hotspot dropped (the vehicle left?): the rest waits for its next visit");
                cut("the hotspot dropped")
            }
            _ = rot.stops.shutdown.cancelled() => cut("shutting down"),
        };
        if matches!(outcome, PassOutcome::Done { .. }) && self.took_everything(&imei).await {
            let now = store::now_ms();
            let _ = rot
                .store
                .hotspot_complete(joined.ap.bssid.clone(), now)
                .await;
        }
        outcome
    }

    /// Whether nothing of `imei` is left to download (its visit was complete).
    async fn took_everything(&self, imei: &str) -> bool {
        self.rot
            .store
            .camera_work()
            .await
            .is_ok_and(|w| w.get(imei).is_none_or(|w| w.to_download == 0))
    }

    /// Reads the IMEI of the camera behind the hotspot and records it, with whether it is
    /// the one recorded (or the first); `false` when another camera answers there now (the
    /// record is corrected; nothing pending is applied to it at this visit). `None` when
    /// no camera answers.
    async fn who_answers(&self, joined: &Joined, recorded: Option<&str>) -> Option<(String, bool)> {
        let rot = self.rot;
        let info = match device_info(rot.worker.client()).await {
            Ok(i) if qucam::check_imei(&i.imei).is_ok() => i,
            Ok(_) | Err(_) => {
                warn!(hotspot = %joined.ap.bssid, "joined, but no camera answers at {}", rot.worker.url());
                return None;
            }
        };
        rot.learner.learn(&info, Some(&joined.ap.bssid)).await;
        // Pinned only by a join its own learned password made, with its own IMEI answering:
        // an access point can claim any IMEI.
        if self.m.source == Source::Learned && self.m.imei.as_deref() == Some(info.imei.as_str()) {
            rot.learner.pin(&info.imei, &joined.ap.bssid).await;
        }
        let bssid = joined.ap.bssid.clone();
        let previous = rot
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

    /// A join failed: a wrong password is reported once and retried after a few minutes,
    /// doubling per failed visit up to `wrong_password_retry`, or at the next rotation when
    /// the credentials for the hotspot change (kept as their fingerprint); a suspicious network (left at once by [`Nm::join`]) is marked
    /// with the fingerprint of its credentials, warned about, and not joined for
    /// `suspicious_for`; a hotspot that is gone (the truck left) is tried again after
    /// a minute, with no backoff and no warning; other failures back off
    /// ([`JoinError::retry_delay`]). The store keeps the reason ([`JoinError::reason`]).
    async fn join_failed(&self, name: &str, e: JoinError) {
        let (radio, ap) = (self.radio, self.ap);
        let retry_of = {
            let waits = Waits {
                wrong_password: radio.wifi.wrong_password_retry,
                suspicious: radio.wifi.suspicious_for,
            };
            let e = e.clone();
            move |failures| e.retry_delay(failures, waits)
        };
        let retry_at = {
            let (now, retry_of) = (store::now_ms(), retry_of.clone());
            move |failures| now + retry_of(failures).as_millis() as i64
        };
        let failed = self
            .rot
            .store
            .hotspot_failed(
                ap.bssid.clone(),
                e.reason(),
                self.m.fingerprint(&ap.bssid),
                retry_at,
            )
            .await;
        // A hotspot NetworkManager still lists after the truck left: no warning.
        let gone = match &e {
            JoinError::Gone => true,
            JoinError::WrongPassword
            | JoinError::Failed { .. }
            | JoinError::Timeout
            | JoinError::Nm(_)
            | JoinError::Suspicious(_) => false,
        };
        if let JoinError::Suspicious(why) = &e {
            let wait = radio.wifi.suspicious_for;
            let until = store::now_ms() + wait.as_millis() as i64;
            let fp = self.m.fingerprint(&ap.bssid);
            if let Err(err) = self
                .rot
                .store
                .hotspot_suspicious(ap.bssid.clone(), until, why.to_string(), fp)
                .await
            {
                warn!("cannot record the suspicious hotspot: {err:#}");
            }
            warn!(hotspot = %name, bssid = %ap.bssid, "SUSPICIOUS hotspot: {why}; left at once, not joined again for {} unless its password changes", humantime::format_duration(wait));
            return;
        }
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
    async fn leave_camera(&self, joined: &Joined) {
        if self.back_on_uplink().await {
            return;
        }
        if let Err(e) = self.radio.nm.leave(joined).await {
            warn!(hotspot = %joined.ap.bssid, "cannot leave the hotspot: {e}");
        }
        self.rot.states.apply(RadioEvent::Back);
    }

    /// After a failed join: back on the uplink, or at least not away.
    async fn leave_camera_nothing_joined(&self) {
        if !self.back_on_uplink().await {
            self.rot.states.apply(RadioEvent::Back);
        }
    }

    /// Restores the uplink; whether it is the device's connection now (never without one).
    async fn back_on_uplink(&self) -> bool {
        let wifi = &self.radio.wifi;
        let timeout = if self.rot.stops.shutdown.is_cancelled() {
            Duration::from_secs(30).min(wifi.uplink_timeout)
        } else {
            wifi.uplink_timeout
        };
        self.rot.restore_uplink(self.radio, timeout).await
    }

    /// One radio, back on the uplink: upload what the visit took, until done, the
    /// destination is paused, or `max_per_camera` (the next camera waits no longer).
    async fn upload_on_uplink(&self) {
        let uploader = &self.rot.uploader;
        let paused = async {
            while !uploader.destination_paused() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::select! {
            _ = uploader.wait_uploads(None) => {}
            _ = paused => info!("the destination is down: the next camera's clips wait in the spool"),
            _ = tokio::time::sleep(self.radio.wifi.max_per_camera) => {
                info!("uploads go on at the next return to the uplink");
            }
        }
    }

    /// Checked from the uplink right before the radio leaves for the hotspot of camera
    /// `imei` (the one recorded behind it), until `deadline`: its verified clips whose
    /// objects the bucket confirms now. Only these may be deleted during the visit
    /// ([`DeleteGate::Checked`]). Also whether every verified clip was checked (not when
    /// the deadline or an outage cut the check short: the rest wait for a later visit).
    async fn check_before_visit(
        &self,
        imei: &str,
        deadline: tokio::time::Instant,
    ) -> (HashSet<i64>, bool) {
        let rot = self.rot;
        let verified: Vec<Clip> = match rot
            .store
            .clips_in(imei, &[store::ClipState::Verified])
            .await
        {
            Ok(cs) => cs,
            Err(e) => {
                warn!(imei = %imei, "cannot read the clips to delete at this visit: {e:#}");
                return (HashSet::new(), false);
            }
        };
        if verified.is_empty() {
            return (HashSet::new(), true);
        }
        let n = verified.len();
        match rot
            .uploader
            .confirm_in_bucket(imei, verified, Some(deadline))
            .await
        {
            Ok((ok, complete)) => {
                if !complete {
                    info!(imei = %imei, checked = ok.len(), verified = n, "the check in the bucket before the visit was cut short: the other deletes wait for a later visit");
                }
                (ok.iter().map(|c| c.id).collect(), complete)
            }
            Err(e) => {
                warn!(imei = %imei, "deletes wait for a later visit: {e:#}");
                (HashSet::new(), false)
            }
        }
    }
}
