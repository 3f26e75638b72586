//! With `wifi.learn`: the hotspot SSID and password a camera reports in its device info are
//! remembered (`wifi::credentials`), whether the camera was met by URL (a camera worker) or
//! behind a hotspot (the rotation). A change is written to the learned file with fsync,
//! off the async workers; a failure to keep it is warned about once, then logged at debug.

use std::sync::{Arc, Mutex};

use tracing::{debug, info, warn};

use crate::config::Config;
use crate::wifi::credentials::Credentials;

/// The hotspot passwords (learned ones included), shared by the camera workers and the
/// rotation. Without `[wifi]` it holds none and learns nothing.
#[derive(Clone, Default)]
pub(crate) struct Learner {
    credentials: Option<Arc<Mutex<Credentials>>>,
    learn: bool,
}

impl Learner {
    /// The configured and learned passwords (none without `[wifi]`); what the fleet file or
    /// the learned file could not give is warned about.
    pub(crate) fn load(cfg: &Config) -> anyhow::Result<Learner> {
        Ok(match &cfg.wifi {
            Some(w) => {
                let creds = Credentials::load(cfg)?;
                // A bad fleet-file line or learned file disables what it touches, not the
                // agent.
                for p in creds.problems() {
                    warn!("depot Wi-Fi: {p}");
                }
                Learner {
                    credentials: Some(Arc::new(Mutex::new(creds))),
                    learn: w.learn,
                }
            }
            None => Learner::default(),
        })
    }

    /// The password that opens access point `ssid`/`bssid`, if any is known.
    pub(crate) fn password_for(
        &self,
        ssid: &[u8],
        bssid: &str,
    ) -> Option<crate::wifi::credentials::Match> {
        let creds = self.credentials.as_ref()?.lock().ok()?;
        creds.for_ap(ssid, bssid)
    }

    /// The camera `imei` answered behind access point `bssid` after a join: its learned
    /// password (if any, not pinned yet) is pinned to `bssid`, and never offered to another.
    pub(crate) async fn pin(&self, imei: &str, bssid: &str) {
        let Some(creds) = &self.credentials else {
            return;
        };
        if !self.learn {
            return;
        }
        let creds = creds.clone();
        let (i, b) = (imei.to_owned(), bssid.to_owned());
        let pinned = tokio::task::spawn_blocking(move || {
            let mut c = creds.lock().ok()?;
            Some(match c.pin(&i, &b) {
                Ok(changed) => Ok(changed),
                Err(e) => {
                    let m = format!("{e:#}");
                    Err((c.first_warning(&m), m))
                }
            })
        })
        .await;
        match pinned {
            Ok(Some(Ok(true))) => {
                info!(imei = %imei, bssid = %bssid, "the learned password is pinned to this hotspot")
            }
            Ok(Some(Err((true, m)))) => warn!(imei = %imei, "cannot pin the learned password: {m}"),
            Ok(Some(Err((false, m)))) => {
                debug!(imei = %imei, "cannot pin the learned password: {m}")
            }
            Ok(_) | Err(_) => {}
        }
    }

    /// Remembers the hotspot `info` reports (with `wifi.learn`), behind `bssid` if known.
    pub(crate) async fn learn(&self, info: &qucam::DeviceInfo, bssid: Option<&str>) {
        let (Some(creds), Some(ssid)) = (&self.credentials, &info.ssid) else {
            return;
        };
        if !self.learn || info.password.expose().is_empty() {
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
