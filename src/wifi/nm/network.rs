//! The network check after a join (part of [`super`]): the camera connection's IPv4
//! addresses (its active connection's `Ip4Config` `AddressData`) against the networks the
//! other devices route (their `AddressData` and `RouteData`) and the camera's address
//! ([`crate::wifi::lease::check`]).

use std::net::Ipv4Addr;

use zbus::OwnedObjectPath;
use zbus::proxy::CacheProperties;

use super::{
    DEVICE_TYPE_LOOPBACK, DeviceProxy, Ip4ConfigProxy, JoinError, Net, Nm, NmError, bus_err, lease,
    nets,
};

impl Nm {
    async fn ip4_config(&self, p: OwnedObjectPath) -> Result<Ip4ConfigProxy<'static>, NmError> {
        Ip4ConfigProxy::builder(&self.conn)
            .path(p)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(bus_err)
    }

    /// The IPv4 networks of active connection `active` (its `Ip4Config`'s `AddressData`).
    pub async fn lease_of(&self, active: &str) -> Result<Vec<Net>, NmError> {
        let config = self
            .active(active)
            .await?
            .ip4_config()
            .await
            .map_err(bus_err)?;
        if config.as_str() == "/" {
            return Ok(Vec::new());
        }
        let data = self
            .ip4_config(config)
            .await?
            .address_data()
            .await
            .map_err(bus_err)?;
        Ok(nets(&data, "address"))
    }

    /// The networks every other device (loopback aside) has addresses in or routes to.
    pub async fn other_networks(&self) -> Result<Vec<Net>, NmError> {
        let devices = self.manager().await?.get_devices().await.map_err(bus_err)?;
        let mut out = Vec::new();
        for d in devices {
            if d == self.device {
                continue;
            }
            let Ok(proxy) = DeviceProxy::builder(&self.conn)
                .path(d)
                .cache_properties(CacheProperties::No)
                .build()
                .await
            else {
                continue;
            };
            // A device that vanished meanwhile routes nothing.
            if proxy.device_type().await.ok() == Some(DEVICE_TYPE_LOOPBACK) {
                continue;
            }
            let Ok(config) = proxy.ip4_config().await else {
                continue;
            };
            if config.as_str() == "/" {
                continue;
            }
            let config = self.ip4_config(config).await?;
            if let Ok(a) = config.address_data().await {
                out.extend(nets(&a, "address"));
            }
            if let Ok(r) = config.route_data().await {
                out.extend(nets(&r, "dest"));
            }
        }
        Ok(out)
    }

    /// The network check after joining `active`: its lease must be /24 or narrower, overlap
    /// no network another device routes, and hold `camera`. A lease that fails is
    /// [`JoinError::Suspicious`]; one that cannot be read is [`JoinError::Nm`] (either way
    /// the caller leaves).
    pub async fn check_network(&self, active: &str, camera: Ipv4Addr) -> Result<Net, JoinError> {
        let nm =
            |e: NmError| JoinError::Nm(format!("reading the hotspot's IPv4 configuration: {e}"));
        let leased = self.lease_of(active).await.map_err(nm)?;
        let others = self.other_networks().await.map_err(nm)?;
        lease::check(&leased, &others, camera).map_err(JoinError::Suspicious)
    }
}
