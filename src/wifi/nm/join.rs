//! Joining a camera hotspot, watching an activation to its end, leaving (part of [`super`]).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use qucam::Secret;
use zbus::Variant;

use super::{
    AC_ACTIVATED, AC_DEACTIVATED, AF_INET, AccessPoint, DEVICE_FAILED, JoinError, Joined, Nm,
    NmError, PROFILE_PREFIX, REASON_NO_SECRETS, REASON_SSID_NOT_FOUND,
    REASON_SUPPLICANT_DISCONNECT, ROUTE_TABLE, RULE_PRIORITY, StateChangedStream, bus_err,
    is_gone_object, join_bus_err, name_ends, path,
};

/// The reading of a device StateChanged reason that ended an activation.
fn join_failure(reason: Option<u32>) -> JoinError {
    match reason {
        Some(REASON_NO_SECRETS) => JoinError::WrongPassword,
        Some(REASON_SSID_NOT_FOUND | REASON_SUPPLICANT_DISCONNECT) => JoinError::Gone,
        Some(reason) => JoinError::Failed { reason },
        None => JoinError::Failed { reason: 0 },
    }
}

/// "AA:BB:CC:DD:EE:FF" → 6 bytes (None if not of that form).
fn bssid_bytes(bssid: &str) -> Option<Vec<u8>> {
    let bytes: Vec<u8> = bssid
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok().filter(|_| b.len() == 2))
        .collect::<Option<_>>()?;
    (bytes.len() == 6).then_some(bytes)
}

type SettingsDict<'a> = HashMap<&'static str, HashMap<&'static str, Variant<'a>>>;

/// The camera profile (docs/depot-wifi.md §1): volatile elsewhere, never the default route or
/// DNS, never autoconnect, pinned to the AP's BSSID and this interface. Its routes (the
/// leased subnet's included) go to a table of their own ([`ROUTE_TABLE`]), which one rule
/// consults for the camera's address only: whatever the hotspot leases, the box's other
/// traffic never takes it.
fn camera_settings<'a>(
    ap: &'a AccessPoint,
    psk: &'a Secret,
    interface: &'a str,
    camera: Ipv4Addr,
) -> SettingsDict<'a> {
    let mut wifi = HashMap::from([
        ("ssid", Variant::from(ap.ssid.clone())),
        ("mode", Variant::from("infrastructure")),
    ]);
    if let Some(bssid) = bssid_bytes(&ap.bssid) {
        wifi.insert("bssid", Variant::from(bssid));
    }
    let connection = HashMap::from([
        ("id", Variant::from(format!("{PROFILE_PREFIX}{}", ap.bssid))),
        ("uuid", Variant::from(uuid::Uuid::new_v4().to_string())),
        ("type", Variant::from("802-11-wireless")),
        ("autoconnect", Variant::from(false)),
        ("interface-name", Variant::from(interface)),
    ]);
    let security = HashMap::from([
        ("key-mgmt", Variant::from("wpa-psk")),
        ("psk", Variant::from(psk.expose())),
    ]);
    let ipv4 = HashMap::from([
        ("method", Variant::from("auto")),
        ("never-default", Variant::from(true)),
        ("ignore-auto-dns", Variant::from(true)),
        ("ignore-auto-routes", Variant::from(true)),
        ("route-table", Variant::from(ROUTE_TABLE)),
        ("routing-rules", Variant::from(vec![camera_rule(camera)])),
    ]);
    let ipv6 = HashMap::from([("method", Variant::from("ignore"))]);
    HashMap::from([
        ("connection", connection),
        ("802-11-wireless", wifi),
        ("802-11-wireless-security", security),
        ("ipv4", ipv4),
        ("ipv6", ipv6),
    ])
}

/// `priority RULE_PRIORITY to <camera>/32 table ROUTE_TABLE` (NetworkManager's D-Bus form
/// of an `NMIPRoutingRule`, `ipv4.routing-rules` `aa{sv}`).
fn camera_rule(camera: Ipv4Addr) -> HashMap<&'static str, Variant<'static>> {
    HashMap::from([
        ("family", Variant::from(AF_INET)),
        ("priority", Variant::from(RULE_PRIORITY)),
        ("to", Variant::from(camera.to_string())),
        ("to-len", Variant::from(32u8)),
        ("table", Variant::from(ROUTE_TABLE)),
    ])
}

fn nm_err(e: NmError) -> JoinError {
    JoinError::Nm(e.to_string())
}

/// The last device FAILED reason among the signals already received (none are awaited).
fn drain_failed(states: &mut StateChangedStream, mut reason: Option<u32>) -> Option<u32> {
    while let Some(Some(s)) = states.next().now_or_never() {
        if let Ok(a) = s.args()
            && *a.new_state() == DEVICE_FAILED
        {
            reason = Some(*a.reason());
        }
    }
    reason
}

impl Nm {
    /// `AddAndActivateConnection2(settings, device, ap.path, {persist: volatile,
    /// bind-activation: dbus-client})`, then waits up to `timeout` for ACTIVATED (on timeout
    /// the activation is deactivated). The failure reason is the device's. Once ACTIVATED,
    /// the network it leased is checked ([`Nm::check_network`], for the camera at `camera`):
    /// one that fails is left at once and is [`JoinError::Suspicious`].
    pub async fn join(
        &self,
        ap: &AccessPoint,
        psk: &Secret,
        camera: Ipv4Addr,
        timeout: Duration,
    ) -> Result<Joined, JoinError> {
        let device = self.device().await.map_err(nm_err)?;
        // Subscribed before the call: the device's reasons may come before its reply.
        let mut device_states = device.receive_state_changed().await.map_err(join_bus_err)?;
        let ap_path = path(&ap.path).map_err(nm_err)?;
        let options = HashMap::from([
            ("persist", Variant::from("volatile")),
            ("bind-activation", Variant::from("dbus-client")),
        ]);
        let manager = self.manager().await.map_err(nm_err)?;
        let reply = {
            let settings = camera_settings(ap, psk, &self.interface, camera);
            manager
                .add_and_activate_connection2(&settings, &self.device, &ap_path, &options)
                .await
        };
        let (_, active, _) = reply.map_err(join_bus_err)?;
        let active = active.as_str().to_string();
        let activated = async {
            self.activation(&active, &mut device_states).await?;
            self.check_network(&active, camera).await
        };
        match tokio::time::timeout(timeout, activated).await {
            Ok(Ok(_)) => Ok(Joined {
                active,
                ap: ap.clone(),
            }),
            Ok(Err(e)) => {
                // Whatever ended it, nothing of this activation may stay up.
                let _ = self.deactivate(&active).await;
                Err(e)
            }
            Err(_) => {
                if let Err(e) = self.deactivate(&active).await {
                    tracing::warn!(interface = %self.interface, bssid = %ap.bssid, "deactivating a join that timed out: {e}");
                }
                Err(JoinError::Timeout)
            }
        }
    }

    /// Waits until the active connection `active` is ACTIVATED (Ok) or DEACTIVATED (the
    /// device's last FAILED reason, read from `device_states`, subscribed before activating).
    pub(super) async fn activation(
        &self,
        active: &str,
        device_states: &mut StateChangedStream,
    ) -> Result<(), JoinError> {
        let ac = self.active(active).await.map_err(nm_err)?;
        let mut ac_states = ac.receive_ac_state_changed().await.map_err(join_bus_err)?;
        let mut reason = None;
        match ac.state().await {
            Ok(AC_ACTIVATED) => return Ok(()),
            Ok(AC_DEACTIVATED) => return Err(join_failure(drain_failed(device_states, reason))),
            // NetworkManager unexports an active connection once it has ended.
            Err(e) if is_gone_object(&e) => {
                return Err(join_failure(drain_failed(device_states, reason)));
            }
            Err(e) => return Err(JoinError::Nm(bus_err(e).to_string())),
            Ok(_) => {}
        }
        loop {
            tokio::select! {
                biased;
                Some(s) = device_states.next() => {
                    if let Ok(a) = s.args() && *a.new_state() == DEVICE_FAILED {
                        reason = Some(*a.reason());
                    }
                }
                s = ac_states.next() => match s.map(|s| s.args().map(|a| *a.state())) {
                    Some(Ok(AC_ACTIVATED)) => return Ok(()),
                    Some(Ok(AC_DEACTIVATED)) => return Err(join_failure(drain_failed(device_states, reason))),
                    Some(_) => {}
                    None => return Err(JoinError::Nm("the active connection's signals ended".into())),
                },
            }
        }
    }

    /// Resolves when the joined connection is no longer ACTIVATED (AP gone, replaced,
    /// deactivated, NetworkManager gone). Not bounded: the caller's turn bounds it.
    pub async fn wait_dropped(&self, j: &Joined) {
        let Ok(ac) = self.active(&j.active).await else {
            return;
        };
        let Ok(mut states) = ac.receive_ac_state_changed().await else {
            return;
        };
        let Ok(mut owner) = ac.inner().receive_owner_changed().await else {
            return;
        };
        if !matches!(ac.state().await, Ok(AC_ACTIVATED)) {
            return;
        }
        loop {
            tokio::select! {
                s = states.next() => match s {
                    Some(s) if matches!(s.args().map(|a| *a.state()), Ok(AC_ACTIVATED)) => {}
                    _ => return,
                },
                _ = owner.next() => return,
            }
        }
    }

    /// `DeactivateConnection` (when there is no uplink on this radio). Already gone = Ok.
    pub async fn leave(&self, j: &Joined) -> Result<(), NmError> {
        self.deactivate(&j.active).await
    }

    pub(super) async fn deactivate(&self, active: &str) -> Result<(), NmError> {
        match self
            .manager()
            .await?
            .deactivate_connection(&path(active)?)
            .await
        {
            Ok(()) => Ok(()),
            Err(e)
                if is_gone_object(&e)
                    || name_ends(&e, &[".ConnectionNotActive", ".UnknownConnection"]) =>
            {
                Ok(())
            }
            Err(e) => Err(bus_err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_the_design_says() {
        assert_eq!(join_failure(Some(7)), JoinError::WrongPassword);
        assert_eq!(join_failure(Some(53)), JoinError::Gone);
        assert_eq!(join_failure(Some(8)), JoinError::Gone);
        assert_eq!(join_failure(Some(11)), JoinError::Failed { reason: 11 });
        assert_eq!(join_failure(None), JoinError::Failed { reason: 0 });
    }

    #[test]
    fn bssid_bytes_needs_six_hex_pairs() {
        assert_eq!(
            bssid_bytes("AA:bb:0C:dd:EE:01"),
            Some(vec![0xAA, 0xBB, 0x0C, 0xDD, 0xEE, 0x01])
        );
        assert_eq!(bssid_bytes("AA:BB:CC:DD:EE"), None);
        assert_eq!(bssid_bytes("AAA:BB:CC:DD:EE:FF"), None);
        assert_eq!(bssid_bytes("A:BB:CC:DD:EE:FF:0"), None);
    }
}
