//! NetworkManager over D-Bus (zbus), for one Wi-Fi device: scan, join a camera hotspot with a
//! volatile profile bound to this process, wait for its activation or its end, and go back
//! to the depot uplink (docs/depot-wifi.md §1). The only module that speaks D-Bus.
//!
//! A join's outcome comes from the *device's* `StateChanged` reason (the active connection
//! only ever says DEVICE_DISCONNECTED): NO_SECRETS (7) is a wrong password, SSID_NOT_FOUND
//! (53) and SUPPLICANT_DISCONNECT (8) a camera gone. Every wait is bounded. The PSK goes into
//! the settings dict sent to NetworkManager and nowhere else: never logged, never formatted
//! (zbus's own `tracing` feature is off).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use zbus::proxy::CacheProperties;
use zbus::{Connection, ObjectPath, OwnedObjectPath, OwnedVariant, Variant};

use crate::store::JoinFailure;
use crate::wifi::lease::{self, Net, Suspicion};

const SERVICE: &str = "org.freedesktop.NetworkManager";
/// Connection ids of the profiles this agent adds (`remove_stale` deletes leftovers).
pub const PROFILE_PREFIX: &str = "qucam-offload/";
/// The routing table of every camera connection (`ipv4.route-table`): its routes, the
/// leased subnet's included, live there and not in the main table.
pub const ROUTE_TABLE: u32 = 2345;
/// The priority of the camera connection's one routing rule (`ipv4.routing-rules`: to the
/// camera's address, look up [`ROUTE_TABLE`]); before the main table's rule (32766).
pub const RULE_PRIORITY: u32 = 2345;
/// AF_INET, for a routing rule's `family`.
const AF_INET: i32 = 2;
/// NM_DEVICE_TYPE_LOOPBACK: `lo` (NetworkManager 1.42 and later list it): not a network
/// a hotspot can take.
const DEVICE_TYPE_LOOPBACK: u32 = 32;
/// Longest wait for any one D-Bus reply.
const METHOD_TIMEOUT: Duration = Duration::from_secs(25);
/// NM_DEVICE_TYPE_WIFI.
const DEVICE_TYPE_WIFI: u32 = 2;
/// NM_ACTIVE_CONNECTION_STATE_ACTIVATED / _DEACTIVATED.
const AC_ACTIVATED: u32 = 2;
const AC_DEACTIVATED: u32 = 4;
/// NM_DEVICE_STATE_FAILED.
const DEVICE_FAILED: u32 = 120;
/// Device state reasons (nm-dbus-interface.h).
const REASON_NO_SECRETS: u32 = 7;
const REASON_SUPPLICANT_DISCONNECT: u32 = 8;
const REASON_SSID_NOT_FOUND: u32 = 53;

/// A visible access point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessPoint {
    /// Its D-Bus object path (pins the BSSID when joining).
    pub path: String,
    /// The SSID's bytes (not necessarily UTF-8).
    pub ssid: Vec<u8>,
    /// "AA:BB:CC:DD:EE:FF", uppercase.
    pub bssid: String,
    /// Signal strength, percent.
    pub strength: u8,
}

impl AccessPoint {
    /// The SSID as text for logs, status and the store: not UTF-8 is replaced; control
    /// characters (a hostile SSID's newlines or terminal escapes) and invisible ones
    /// (bidirectional overrides, zero-width characters: an SSID that reads like another
    /// in a log) become `?`.
    pub fn ssid_lossy(&self) -> String {
        String::from_utf8_lossy(&self.ssid)
            .chars()
            .map(|c| {
                if c.is_control() || invisible(c) {
                    '?'
                } else {
                    c
                }
            })
            .collect()
    }
}

/// Format characters that change how text around them reads without showing themselves.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// NetworkManager could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NmError {
    #[error("NetworkManager is not running or not reachable on the system bus: {0}")]
    NotRunning(String),
    #[error("NetworkManager has no device {0}")]
    NoDevice(String),
    #[error("{0} is not a Wi-Fi device")]
    NotWifi(String),
    #[error("no NetworkManager connection profile {0:?} (the uplink)")]
    NoUplink(String),
    #[error("NetworkManager refused (polkit): {0}")]
    Denied(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("NetworkManager D-Bus error: {0}")]
    Bus(String),
}

/// A join that did not end ACTIVATED.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("wrong password (NetworkManager: no secrets)")]
    WrongPassword,
    #[error("the access point is gone")]
    Gone,
    #[error("activation failed (device reason {reason})")]
    Failed { reason: u32 },
    #[error("activation timed out")]
    Timeout,
    #[error("{0}")]
    Nm(String),
    /// Joined, but the network it leased failed the check after the join: left at once.
    #[error("suspicious network: {0}")]
    Suspicious(Suspicion),
}

/// How long a hotspot waits after the failures that are not backed off by count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waits {
    /// `wifi.wrong_password_retry`.
    pub wrong_password: Duration,
    /// `wifi.suspicious_for`.
    pub suspicious: Duration,
}

/// A refused password waits this long before the hotspot is tried again the first time,
/// doubling with each failed visit in a row up to `wifi.wrong_password_retry`: a cloned
/// access point or two handshakes lost to a weak signal keep the real camera away minutes,
/// not hours.
pub const FIRST_WRONG_PASSWORD_RETRY: Duration = Duration::from_secs(5 * 60);

/// A failed join (other than a wrong password) waits this long before the hotspot is tried
/// again, doubling with each failure in a row up to [`MAX_JOIN_RETRY`].
pub const FAILED_JOIN_RETRY: Duration = Duration::from_secs(60);
pub const MAX_JOIN_RETRY: Duration = Duration::from_secs(3600);

/// What a failed join means for the hotspot: why (as stored and shown), whether it is a
/// refused password, and when to try again. Each is an exhaustive match: a new variant
/// does not compile until its policy is chosen.
impl JoinError {
    /// Why, as the store keeps it and `status` and `/metrics` show it.
    pub fn reason(&self) -> JoinFailure {
        match self {
            JoinError::WrongPassword => JoinFailure::WrongPassword,
            JoinError::Gone => JoinFailure::Gone,
            JoinError::Failed { .. } => JoinFailure::ActivationFailed,
            JoinError::Timeout => JoinFailure::Timeout,
            JoinError::Nm(_) => JoinFailure::NetworkManager,
            JoinError::Suspicious(_) => JoinFailure::Suspicious,
        }
    }

    /// A refused password: reported once until a join succeeds, retried after
    /// [`FIRST_WRONG_PASSWORD_RETRY`], doubling per failed visit up to
    /// `wifi.wrong_password_retry`.
    pub fn counts_as_wrong_password(&self) -> bool {
        self.reason().counts_as_wrong_password()
    }

    /// How long after this failure (`failures_before` in a row before it) the hotspot is
    /// tried again: a wrong password after [`FIRST_WRONG_PASSWORD_RETRY`] doubled per failure
    /// (each visit records one), up to `wrong_password_retry`; a suspicious network
    /// after `suspicious_for`; a hotspot that is gone (the truck drove away) after
    /// [`FAILED_JOIN_RETRY`], so it is met again as soon as it is back; any other failure
    /// after [`FAILED_JOIN_RETRY`] doubled per failure, up to [`MAX_JOIN_RETRY`].
    pub fn retry_delay(&self, failures_before: u32, waits: Waits) -> Duration {
        match self {
            JoinError::WrongPassword => FIRST_WRONG_PASSWORD_RETRY
                .saturating_mul(1 << failures_before.min(16))
                .min(waits.wrong_password),
            JoinError::Suspicious(_) => waits.suspicious,
            JoinError::Gone => FAILED_JOIN_RETRY,
            JoinError::Failed { .. } | JoinError::Timeout | JoinError::Nm(_) => FAILED_JOIN_RETRY
                .saturating_mul(1 << failures_before.min(6))
                .min(MAX_JOIN_RETRY),
        }
    }
}

/// A camera hotspot we are on (the active connection's object path and the AP).
#[derive(Clone, Debug)]
pub struct Joined {
    pub active: String,
    pub ap: AccessPoint,
}

#[zbus::proxy(
    interface = "org.freedesktop.NetworkManager",
    default_service = "org.freedesktop.NetworkManager",
    default_path = "/org/freedesktop/NetworkManager"
)]
trait Manager {
    #[zbus(name = "GetDeviceByIpIface")]
    fn get_device_by_ip_iface(&self, iface: &str) -> zbus::Result<OwnedObjectPath>;
    fn get_permissions(&self) -> zbus::Result<HashMap<String, String>>;
    fn activate_connection(
        &self,
        connection: &ObjectPath<'_>,
        device: &ObjectPath<'_>,
        specific_object: &ObjectPath<'_>,
    ) -> zbus::Result<OwnedObjectPath>;
    #[zbus(name = "AddAndActivateConnection2")]
    fn add_and_activate_connection2(
        &self,
        connection: &HashMap<&str, HashMap<&str, Variant<'_>>>,
        device: &ObjectPath<'_>,
        specific_object: &ObjectPath<'_>,
        options: &HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<(
        OwnedObjectPath,
        OwnedObjectPath,
        HashMap<String, OwnedVariant>,
    )>;
    fn deactivate_connection(&self, active_connection: &ObjectPath<'_>) -> zbus::Result<()>;
    fn get_devices(&self) -> zbus::Result<Vec<OwnedObjectPath>>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
}

#[zbus::proxy(
    interface = "org.freedesktop.NetworkManager.Device",
    default_service = "org.freedesktop.NetworkManager"
)]
trait Device {
    #[zbus(property)]
    fn device_type(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn active_connection(&self) -> zbus::Result<OwnedObjectPath>;
    #[zbus(property)]
    fn ip4_config(&self) -> zbus::Result<OwnedObjectPath>;
    #[zbus(signal)]
    fn state_changed(&self, new_state: u32, old_state: u32, reason: u32) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.NetworkManager.Device.Wireless",
    default_service = "org.freedesktop.NetworkManager"
)]
trait Wireless {
    fn request_scan(&self, options: &HashMap<&str, Variant<'_>>) -> zbus::Result<()>;
    fn get_all_access_points(&self) -> zbus::Result<Vec<OwnedObjectPath>>;
    #[zbus(property)]
    fn last_scan(&self) -> zbus::Result<i64>;
}

#[zbus::proxy(
    interface = "org.freedesktop.NetworkManager.AccessPoint",
    default_service = "org.freedesktop.NetworkManager"
)]
trait Ap {
    #[zbus(property)]
    fn ssid(&self) -> zbus::Result<Vec<u8>>;
    #[zbus(property)]
    fn hw_address(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn strength(&self) -> zbus::Result<u8>;
}

/// One `AddressData` or `RouteData` entry: `address`/`dest` (s) and `prefix` (u).
type IpData = Vec<HashMap<String, OwnedVariant>>;

#[zbus::proxy(
    interface = "org.freedesktop.NetworkManager.IP4Config",
    default_service = "org.freedesktop.NetworkManager"
)]
trait Ip4Config {
    #[zbus(property)]
    fn address_data(&self) -> zbus::Result<IpData>;
    #[zbus(property)]
    fn route_data(&self) -> zbus::Result<IpData>;
}

/// The networks in `AddressData` (`address_key` "address") or `RouteData` ("dest"); entries
/// that do not read as IPv4 networks are left out.
/// The kernel's main routing table.
const MAIN_TABLE: u32 = 254;

fn nets(data: &IpData, address_key: &str) -> Vec<Net> {
    data.iter()
        .filter_map(|e| {
            // Of routes, only those on the device's own link in the main table: a route via a
            // gateway (a VPN's `0.0.0.0/1`), or in a table of its own (Tailscale's 52, the
            // camera's), sends no traffic onto a network that a lease could take over.
            let text = |k: &str| -> Option<String> { e.get(k)?.try_clone().ok()?.try_into().ok() };
            let number = |k: &str| -> Option<u32> { e.get(k)?.try_clone().ok()?.try_into().ok() };
            if text("next-hop").is_some_and(|h| !h.is_empty() && h != "0.0.0.0") {
                return None;
            }
            if number("table").is_some_and(|t| t != 0 && t != MAIN_TABLE) {
                return None;
            }
            let addr: String = e.get(address_key)?.try_clone().ok()?.try_into().ok()?;
            let prefix: u32 = e.get("prefix")?.try_clone().ok()?.try_into().ok()?;
            Net::new(addr.parse().ok()?, prefix)
        })
        .collect()
}

/// In a module of its own: the macro names its signal types after the signal, and the device
/// has a `StateChanged` too.
mod active {
    #[zbus::proxy(
        interface = "org.freedesktop.NetworkManager.Connection.Active",
        default_service = "org.freedesktop.NetworkManager"
    )]
    pub(super) trait Active {
        #[zbus(property)]
        fn state(&self) -> zbus::Result<u32>;
        #[zbus(property)]
        fn id(&self) -> zbus::Result<String>;
        #[zbus(property)]
        fn uuid(&self) -> zbus::Result<String>;
        #[zbus(property)]
        fn ip4_config(&self) -> zbus::Result<zbus::OwnedObjectPath>;
        // Not `state_changed`: the `State` property's change stream has that name.
        #[zbus(signal, name = "StateChanged")]
        fn ac_state_changed(&self, state: u32, reason: u32) -> zbus::Result<()>;
    }
}
use active::ActiveProxy;

#[zbus::proxy(
    interface = "org.freedesktop.NetworkManager.Settings",
    default_service = "org.freedesktop.NetworkManager",
    default_path = "/org/freedesktop/NetworkManager/Settings"
)]
trait Settings {
    fn list_connections(&self) -> zbus::Result<Vec<OwnedObjectPath>>;
}

#[zbus::proxy(
    interface = "org.freedesktop.NetworkManager.Settings.Connection",
    default_service = "org.freedesktop.NetworkManager"
)]
trait Profile {
    fn get_settings(&self) -> zbus::Result<HashMap<String, HashMap<String, OwnedVariant>>>;
    fn delete(&self) -> zbus::Result<()>;
}

/// The D-Bus error name of a method error reply, if `e` is one.
fn error_name(e: &zbus::Error) -> Option<String> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.to_string()),
        zbus::Error::FDO(fdo) => Some(zbus::DBusError::name(fdo.as_ref()).to_string()),
        _ => None,
    }
}

fn name_ends(e: &zbus::Error, suffixes: &[&str]) -> bool {
    error_name(e).is_some_and(|n| suffixes.iter().any(|s| n.ends_with(s)))
}

fn is_denied(e: &zbus::Error) -> bool {
    name_ends(
        e,
        &[
            ".AccessDenied",
            ".PermissionDenied",
            ".NotAuthorized",
            ".AuthFailed",
        ],
    )
}

fn is_gone_object(e: &zbus::Error) -> bool {
    name_ends(
        e,
        &[
            ".UnknownObject",
            ".UnknownMethod",
            ".UnknownInterface",
            ".UnknownProperty",
        ],
    )
}

/// Maps a zbus error to NmError (polkit refusals → Denied, no NetworkManager → NotRunning).
fn bus_err(e: zbus::Error) -> NmError {
    if is_denied(&e) {
        NmError::Denied(e.to_string())
    } else if name_ends(&e, &[".ServiceUnknown", ".NameHasNoOwner"]) {
        NmError::NotRunning(e.to_string())
    } else if name_ends(&e, &[".NoReply", ".TimedOut", ".Timeout"]) {
        NmError::Timeout(e.to_string())
    } else {
        NmError::Bus(e.to_string())
    }
}

fn join_bus_err(e: zbus::Error) -> JoinError {
    if name_ends(&e, &[".SpecificObjectNotFound"]) {
        JoinError::Gone
    } else {
        JoinError::Nm(bus_err(e).to_string())
    }
}

fn path(p: &str) -> Result<ObjectPath<'_>, NmError> {
    ObjectPath::try_from(p).map_err(|e| NmError::Bus(format!("bad object path {p:?}: {e}")))
}

/// NetworkManager on the system bus (honours DBUS_SYSTEM_BUS_ADDRESS), one Wi-Fi device.
pub struct Nm {
    conn: Connection,
    device: OwnedObjectPath,
    interface: String,
}

impl std::fmt::Debug for Nm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nm")
            .field("interface", &self.interface)
            .field("device", &self.device.as_str())
            .finish()
    }
}

impl Nm {
    /// NetworkManager on the system bus (honours `DBUS_SYSTEM_BUS_ADDRESS`).
    pub async fn connect(interface: &str) -> Result<Nm, NmError> {
        let conn = zbus::connection::Builder::system()
            .method_timeout(METHOD_TIMEOUT)
            .build()
            .await
            .map_err(|e| NmError::NotRunning(format!("system bus: {e}")))?;
        Nm::on(conn, interface).await
    }

    /// NetworkManager on the bus at `address` (tests, in-process).
    pub async fn connect_at(address: &str, interface: &str) -> Result<Nm, NmError> {
        let conn = zbus::connection::Builder::address(address)
            .method_timeout(METHOD_TIMEOUT)
            .build()
            .await
            .map_err(|e| NmError::NotRunning(format!("bus {address}: {e}")))?;
        Nm::on(conn, interface).await
    }

    async fn on(conn: Connection, interface: &str) -> Result<Nm, NmError> {
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(bus_err)?;
        let device = manager
            .get_device_by_ip_iface(interface)
            .await
            .map_err(|e| {
                if name_ends(&e, &[".UnknownDevice"]) {
                    NmError::NoDevice(interface.to_string())
                } else {
                    bus_err(e)
                }
            })?;
        let nm = Nm {
            conn,
            device,
            interface: interface.to_string(),
        };
        let device_type = nm.device().await?.device_type().await.map_err(bus_err)?;
        if device_type != DEVICE_TYPE_WIFI {
            return Err(NmError::NotWifi(interface.to_string()));
        }
        Ok(nm)
    }

    /// The Wi-Fi interface this talks about.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    async fn manager(&self) -> Result<ManagerProxy<'static>, NmError> {
        ManagerProxy::builder(&self.conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(bus_err)
    }

    async fn device(&self) -> Result<DeviceProxy<'static>, NmError> {
        DeviceProxy::builder(&self.conn)
            .path(self.device.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(bus_err)
    }

    async fn wireless(&self) -> Result<WirelessProxy<'static>, NmError> {
        WirelessProxy::builder(&self.conn)
            .path(self.device.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(bus_err)
    }

    async fn active(&self, active: &str) -> Result<ActiveProxy<'static>, NmError> {
        ActiveProxy::builder(&self.conn)
            .path(path(active)?.into_owned())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(bus_err)
    }

    /// NetworkManager's version.
    pub async fn version(&self) -> Result<String, NmError> {
        self.manager().await?.version().await.map_err(bus_err)
    }

    /// `GetPermissions`: polkit action → "yes" / "no" / "auth".
    pub async fn permissions(&self) -> Result<BTreeMap<String, String>, NmError> {
        let perms = self
            .manager()
            .await?
            .get_permissions()
            .await
            .map_err(bus_err)?;
        Ok(perms.into_iter().collect())
    }

    /// `RequestScan({})`, then waits up to `wait` for `LastScan` to change, then
    /// [`Nm::access_points`]. A scan NetworkManager does not take (`NotAllowed` while
    /// activating, rate limits) is no error: the current list is returned. Denied is.
    pub async fn scan(&self, wait: Duration) -> Result<Vec<AccessPoint>, NmError> {
        let wireless = self.wireless().await?;
        let props = zbus::fdo::PropertiesProxy::builder(&self.conn)
            .destination(SERVICE)
            .path(self.device.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(bus_err)?;
        let mut changes = props.receive_properties_changed().await.map_err(bus_err)?;
        let before = wireless.last_scan().await.map_err(bus_err)?;
        match wireless.request_scan(&HashMap::new()).await {
            Ok(()) => {
                let scanned = async {
                    while changes.next().await.is_some() {
                        if wireless.last_scan().await != Ok(before) {
                            break;
                        }
                    }
                };
                if tokio::time::timeout(wait, scanned).await.is_err() {
                    tracing::debug!(interface = %self.interface, "no scan result after {wait:?}; listing the access points NetworkManager has");
                }
            }
            Err(e) if is_denied(&e) => return Err(bus_err(e)),
            Err(e) => {
                tracing::debug!(interface = %self.interface, "scan request not taken ({e}); listing the access points NetworkManager has");
            }
        }
        self.access_points().await
    }

    /// The access points NetworkManager currently lists for the device (hidden ones too).
    pub async fn access_points(&self) -> Result<Vec<AccessPoint>, NmError> {
        let paths = self
            .wireless()
            .await?
            .get_all_access_points()
            .await
            .map_err(bus_err)?;
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            // An AP may vanish between the listing and the reading: it is no longer visible.
            if let Ok(ap) = self.access_point(p).await {
                out.push(ap);
            }
        }
        Ok(out)
    }

    async fn access_point(&self, p: OwnedObjectPath) -> zbus::Result<AccessPoint> {
        let proxy = ApProxy::builder(&self.conn)
            .path(p.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        Ok(AccessPoint {
            path: p.as_str().to_string(),
            ssid: proxy.ssid().await?,
            bssid: proxy.hw_address().await?.to_uppercase(),
            strength: proxy.strength().await?,
        })
    }
}

mod join;
mod network;
mod uplink;

#[cfg(test)]
mod tests {
    use super::*;

    fn route(
        dest: &str,
        prefix: u32,
        extra: &[(&str, Variant<'static>)],
    ) -> HashMap<String, OwnedVariant> {
        let mut m = HashMap::new();
        let v = |x: Variant<'static>| OwnedVariant::try_from(x).expect("a variant");
        m.insert("dest".to_string(), v(Variant::from(dest.to_string())));
        m.insert("prefix".to_string(), v(Variant::from(prefix)));
        for (k, x) in extra {
            m.insert((*k).to_string(), v(x.clone()));
        }
        m
    }

    #[test]
    fn only_on_link_routes_of_the_main_table_count_as_networks_a_lease_could_take() {
        let data = vec![
            route("192.168.1.0", 24, &[]),
            route("10.9.0.0", 16, &[("table", Variant::from(254u32))]),
            // A VPN's half of the internet, via its gateway.
            route(
                "0.0.0.0",
                1,
                &[("next-hop", Variant::from("10.8.0.1".to_string()))],
            ),
            // Tailscale's table.
            route("192.168.0.0", 16, &[("table", Variant::from(52u32))]),
        ];
        let got: Vec<String> = nets(&data, "dest").iter().map(|n| n.to_string()).collect();
        assert_eq!(got, ["192.168.1.0/24", "10.9.0.0/16"]);
    }

    fn shown(ssid: &str) -> String {
        AccessPoint {
            path: "/1".into(),
            ssid: ssid.as_bytes().to_vec(),
            bssid: "0A:00:00:00:00:01".into(),
            strength: 50,
        }
        .ssid_lossy()
    }

    #[test]
    fn a_wrong_password_waits_minutes_first_and_doubles_per_visit_up_to_its_cap() {
        let min = |m: u64| Duration::from_secs(60 * m);
        let waits = Waits {
            wrong_password: Duration::from_secs(6 * 3600),
            suspicious: min(90),
        };
        let got: Vec<Duration> = (0..9)
            .map(|n| JoinError::WrongPassword.retry_delay(n, waits))
            .collect();
        assert_eq!(
            got,
            [
                min(5),
                min(10),
                min(20),
                min(40),
                min(80),
                min(160),
                min(320),
                min(360),
                min(360)
            ]
        );
        assert_eq!(
            JoinError::WrongPassword.retry_delay(u32::MAX, waits),
            min(360)
        );
        // A cap under the first wait is the wait.
        let short = Waits {
            wrong_password: min(2),
            ..waits
        };
        assert_eq!(JoinError::WrongPassword.retry_delay(0, short), min(2));
    }

    #[test]
    fn failed_joins_back_off_but_a_truck_that_left_is_met_again_soon() {
        let six_h = Duration::from_secs(6 * 3600);
        let min = |m: u64| Duration::from_secs(60 * m);
        let waits = Waits {
            wrong_password: six_h,
            suspicious: min(90),
        };
        let timeout = JoinError::Timeout;
        let got: Vec<Duration> = (0..8).map(|n| timeout.retry_delay(n, waits)).collect();
        assert_eq!(
            got,
            [
                min(1),
                min(2),
                min(4),
                min(8),
                min(16),
                min(32),
                min(60),
                min(60)
            ]
        );
        for n in [0, 5, 100] {
            assert_eq!(JoinError::Gone.retry_delay(n, waits), min(1), "{n}");
            let rogue = JoinError::Suspicious(Suspicion::NoAddress);
            assert_eq!(rogue.retry_delay(n, waits), min(90));
            let failed = JoinError::Failed { reason: 11 };
            let nm = JoinError::Nm("bus".into());
            assert_eq!(failed.retry_delay(n, waits), timeout.retry_delay(n, waits));
            assert_eq!(nm.retry_delay(n, waits), timeout.retry_delay(n, waits));
        }
    }

    #[test]
    fn each_join_error_has_its_reason_and_only_a_refused_password_counts_as_wrong() {
        let all = [
            (JoinError::WrongPassword, "wrong_password"),
            (JoinError::Gone, "gone"),
            (JoinError::Failed { reason: 11 }, "activation_failed"),
            (JoinError::Timeout, "timeout"),
            (JoinError::Nm("bus".into()), "networkmanager"),
            (JoinError::Suspicious(Suspicion::NoAddress), "suspicious"),
        ];
        for (e, label) in all {
            assert_eq!(e.reason().as_str(), label);
            let wrong = e == JoinError::WrongPassword;
            assert_eq!(e.counts_as_wrong_password(), wrong, "{e:?}");
        }
    }

    #[test]
    fn hostile_ssids_are_shown_harmless() {
        assert_eq!(shown("truck-7"), "truck-7");
        assert_eq!(shown("Müller Transporte"), "Müller Transporte");
        assert_eq!(shown("a\nb\x1b[31m"), "a?b?[31m");
        // Reads "truck-7" backwards in a terminal, or like "truck-7" with a hidden space.
        assert_eq!(shown("\u{202E}7-kcurt"), "?7-kcurt");
        assert_eq!(shown("truck\u{200B}-7"), "truck?-7");
        assert_eq!(shown("\u{2066}x\u{2069}\u{FEFF}"), "?x??");
    }
}
