//! The depot uplink profile and the settings profiles (part of [`super`]): activate the
//! uplink, tell whether it is up, delete profiles a crash left behind.

use std::collections::HashMap;
use std::time::Duration;

use zbus::OwnedObjectPath;
use zbus::OwnedVariant;
use zbus::proxy::CacheProperties;

use super::{
    AC_ACTIVATED, JoinError, Nm, NmError, PROFILE_PREFIX, ProfileProxy, SettingsProxy, bus_err,
    is_denied, path,
};

type ProfileSettings = HashMap<String, HashMap<String, OwnedVariant>>;

/// A profile's connection.id, connection.uuid and connection.autoconnect (default true).
fn profile_identity(
    settings: &HashMap<String, HashMap<String, OwnedVariant>>,
) -> (String, String, bool) {
    let conn = settings.get("connection");
    let text = |key: &str| {
        conn.and_then(|c| c.get(key))
            .and_then(|v| String::try_from(v.clone()).ok())
            .unwrap_or_default()
    };
    let autoconnect = conn
        .and_then(|c| c.get("autoconnect"))
        .and_then(|v| bool::try_from(v.clone()).ok())
        .unwrap_or(true);
    (text("id"), text("uuid"), autoconnect)
}

impl Nm {
    /// `ActivateConnection(uplink profile by connection.id or uuid, device, "/")`, then waits
    /// up to `timeout` for ACTIVATED. Already active: Ok at once.
    pub async fn activate_uplink(&self, uplink: &str, timeout: Duration) -> Result<(), NmError> {
        if self.uplink_active(uplink).await? {
            return Ok(());
        }
        let (profile, _) = self
            .find_profile(uplink)
            .await?
            .ok_or_else(|| NmError::NoUplink(uplink.to_string()))?;
        let device = self.device().await?;
        let mut device_states = device.receive_state_changed().await.map_err(bus_err)?;
        let active = self
            .manager()
            .await?
            .activate_connection(&profile, &self.device, &path("/")?)
            .await
            .map_err(bus_err)?;
        match tokio::time::timeout(
            timeout,
            self.activation(active.as_str(), &mut device_states),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(JoinError::Nm(e))) => Err(NmError::Bus(e)),
            Ok(Err(
                e @ (JoinError::WrongPassword
                | JoinError::Gone
                | JoinError::Failed { .. }
                | JoinError::Timeout
                | JoinError::Suspicious(_)),
            )) => Err(NmError::Bus(format!(
                "the uplink {uplink:?} did not activate: {e}"
            ))),
            Err(_) => Err(NmError::Timeout(format!(
                "the uplink {uplink:?} was not activated after {timeout:?}"
            ))),
        }
    }

    /// Whether the device's active connection is the uplink profile and ACTIVATED.
    pub async fn uplink_active(&self, uplink: &str) -> Result<bool, NmError> {
        let ac_path = self
            .device()
            .await?
            .active_connection()
            .await
            .map_err(bus_err)?;
        if ac_path.as_str() == "/" {
            return Ok(false);
        }
        let ac = self.active(ac_path.as_str()).await?;
        // An active connection that ends while being read is not the uplink being up.
        let (Ok(id), Ok(uuid), Ok(state)) = (ac.id().await, ac.uuid().await, ac.state().await)
        else {
            return Ok(false);
        };
        Ok((id == uplink || uuid == uplink) && state == AC_ACTIVATED)
    }

    /// Whether a profile with this id/uuid exists, and its autoconnect flag (for doctor).
    pub async fn uplink_profile(&self, uplink: &str) -> Result<Option<bool>, NmError> {
        Ok(self
            .find_profile(uplink)
            .await?
            .map(|(_, autoconnect)| autoconnect))
    }

    /// Deletes settings connections whose id starts with "qucam-offload/" (left by a crash),
    /// never the uplink (`keep`, its id or UUID). Returns how many.
    pub async fn remove_stale(&self, keep: Option<&str>) -> Result<usize, NmError> {
        let mut removed = 0;
        for (p, settings) in self.profiles().await? {
            let (id, uuid, _) = profile_identity(&settings);
            let uplink = keep.is_some_and(|k| k == id || k == uuid);
            if !id.starts_with(PROFILE_PREFIX) || uplink {
                continue;
            }
            match self.profile(&p).await?.delete().await {
                Ok(()) => removed += 1,
                Err(e) if is_denied(&e) => return Err(bus_err(e)),
                // Gone meanwhile (NetworkManager dropped a volatile one itself).
                Err(e) => tracing::debug!("deleting stale profile {id:?}: {e}"),
            }
        }
        Ok(removed)
    }

    /// The profile whose connection.id or uuid is `uplink`: its path and autoconnect flag.
    async fn find_profile(&self, uplink: &str) -> Result<Option<(OwnedObjectPath, bool)>, NmError> {
        for (p, settings) in self.profiles().await? {
            let (id, uuid, autoconnect) = profile_identity(&settings);
            if id == uplink || uuid == uplink {
                return Ok(Some((p, autoconnect)));
            }
        }
        Ok(None)
    }

    /// Every settings connection with its settings (those that vanish meanwhile left out).
    async fn profiles(&self) -> Result<Vec<(OwnedObjectPath, ProfileSettings)>, NmError> {
        let settings = SettingsProxy::builder(&self.conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(bus_err)?;
        let mut out = Vec::new();
        for p in settings.list_connections().await.map_err(bus_err)? {
            match self.profile(&p).await?.get_settings().await {
                Ok(s) => out.push((p, s)),
                Err(e) if is_denied(&e) => return Err(bus_err(e)),
                Err(_) => {}
            }
        }
        Ok(out)
    }

    async fn profile(&self, p: &OwnedObjectPath) -> Result<ProfileProxy<'static>, NmError> {
        ProfileProxy::builder(&self.conn)
            .path(p.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(bus_err)
    }
}
