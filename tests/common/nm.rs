//! The NetworkManager of the depot Wi-Fi tests: a private `dbus-daemon` (its own config, its
//! socket in a temp dir; never the machine's bus) and the stand-in `tests/nm/qucam_nm.py` (a
//! python-dbusmock template, docs/depot-wifi.md §3) on it as the *system* bus, with one
//! Wi-Fi device. `scripts/test` installs both and names them in `QUCAM_TEST_NM_PYTHON` and
//! `QUCAM_TEST_DBUS_DAEMON`; without them a test fails with a message naming `scripts/test`
//! (never skips). Both processes are killed when the [`NmStandIn`] is dropped.
//!
//! The code under test reaches the stand-in at [`NmStandIn::bus_address`] (as
//! `DBUS_SYSTEM_BUS_ADDRESS` for a child process, or `Nm::connect_at` in-process); the test
//! drives it through dbusmock's mock interface (`add_uplink`, `add_ap`, `remove_ap`, …).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use zbus::Connection;

/// The environment variable naming the python that has dbusmock (set by `scripts/test`).
pub const NM_PYTHON_ENV: &str = "QUCAM_TEST_NM_PYTHON";
/// The environment variable naming `dbus-daemon` (set by `scripts/test`).
pub const DBUS_DAEMON_ENV: &str = "QUCAM_TEST_DBUS_DAEMON";

const NM: &str = "org.freedesktop.NetworkManager";
const MOCK_PATH: &str = "/org/freedesktop";
const MOCK_IFACE: &str = "org.freedesktop.DBus.Mock";
const JOINED_IFACE: &str = "org.freedesktop.NetworkManager.Mock";
/// How long the daemon and the stand-in get to come up.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// A private bus with the NetworkManager stand-in on it.
pub struct NmStandIn {
    address: String,
    interface: String,
    conn: Connection,
    joined: tokio::sync::watch::Receiver<String>,
    joined_task: tokio::task::JoinHandle<()>,
    stand_in: Child,
    daemon: Child,
    _dir: tempfile::TempDir,
}

impl Drop for NmStandIn {
    fn drop(&mut self) {
        self.joined_task.abort();
        kill(&mut self.stand_in);
        kill(&mut self.daemon);
    }
}

/// Kills and reaps `child` (a bounded wait: SIGKILL is not refused).
fn kill(child: &mut Child) {
    let _ = child.start_kill();
    let end = Instant::now() + Duration::from_secs(5);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn env_path(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests with scripts/test (it installs dbus-daemon and python-dbusmock for the NetworkManager stand-in)")
    })
}

fn bus_config(dir: &std::path::Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
        dir.display()
    )
}

/// Starts `dbus-daemon` with its own config; returns it and the address it printed.
async fn start_daemon(dir: &std::path::Path) -> (Child, String) {
    let exe = env_path(DBUS_DAEMON_ENV);
    let config = dir.join("bus.conf");
    std::fs::write(&config, bus_config(dir)).expect("write bus.conf");
    let mut daemon = Command::new(&exe)
        .arg(format!("--config-file={}", config.display()))
        .args(["--nofork", "--print-address=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
    let stdout = daemon.stdout.take().expect("dbus-daemon stdout");
    let mut line = String::new();
    tokio::time::timeout(START_DEADLINE, BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("dbus-daemon printed no address in time")
        .expect("read dbus-daemon's address");
    let address = line.trim().to_string();
    assert!(
        address.starts_with("unix:"),
        "dbus-daemon printed {address:?}"
    );
    (daemon, address)
}

/// Starts the stand-in on `address` as its system bus.
fn start_stand_in(
    dir: &std::path::Path,
    address: &str,
    interface: &str,
    activation_ms: u64,
) -> Child {
    let python = env_path(NM_PYTHON_ENV);
    let template = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/nm/qucam_nm.py");
    let params = serde_json::json!({ "interface": interface, "activation_ms": activation_ms, "scan_ms": 20 });
    Command::new(&python)
        .args(["-m", "dbusmock", "--system", "--template", template, "-p"])
        .arg(params.to_string())
        .arg("-l")
        .arg(dir.join("stand-in.log"))
        .env("DBUS_SYSTEM_BUS_ADDRESS", address)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {python} -m dbusmock: {e}"))
}

impl NmStandIn {
    /// Private dbus-daemon (own config, socket under a temp dir) + the stand-in on it, a Wi-Fi
    /// device `interface`. Panics with a clear message if `QUCAM_TEST_NM_PYTHON` /
    /// `QUCAM_TEST_DBUS_DAEMON` are unset (run `scripts/test`).
    pub async fn start(interface: &str) -> NmStandIn {
        NmStandIn::start_with(interface, 50).await
    }

    /// [`NmStandIn::start`] with activations taking `activation_ms` (ACTIVATING → ACTIVATED).
    pub async fn start_with(interface: &str, activation_ms: u64) -> NmStandIn {
        // Both named before anything starts (a panic later would leave a process behind).
        env_path(DBUS_DAEMON_ENV);
        env_path(NM_PYTHON_ENV);
        let dir = tempfile::tempdir().expect("temp dir");
        let (daemon, address) = start_daemon(dir.path()).await;
        let mut stand_in = start_stand_in(dir.path(), &address, interface, activation_ms);
        let conn = zbus::connection::Builder::address(address.as_str())
            .method_timeout(Duration::from_secs(10))
            .build()
            .await
            .expect("connect to the private bus");
        wait_ready(&conn, &mut stand_in, interface).await;
        let (joined, joined_task) = follow_joined(&conn).await;
        NmStandIn {
            address,
            interface: interface.to_string(),
            conn,
            joined,
            joined_task,
            stand_in,
            daemon,
            _dir: dir,
        }
    }

    /// The private bus's address (for `DBUS_SYSTEM_BUS_ADDRESS`).
    pub fn bus_address(&self) -> &str {
        &self.address
    }

    /// The Wi-Fi device's interface name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    async fn mock<B, R>(&self, method: &str, body: &B) -> R
    where
        B: serde::Serialize + zbus::DynamicType,
        R: for<'d> zbus::wire::DynamicDeserialize<'d>,
    {
        mock_proxy(&self.conn)
            .await
            .call(method, body)
            .await
            .unwrap_or_else(|e| panic!("stand-in {method}: {e}"))
    }

    /// The depot network: an AP and a saved profile `id` (autoconnect true), ACTIVATED on
    /// the device when `active` (at once, before this returns).
    pub async fn add_uplink(&self, id: &str, ssid: &str, bssid: &str, active: bool) {
        self.mock::<_, ()>("AddUplink", &(id, ssid, bssid, active))
            .await
    }

    /// A camera hotspot (WPA-PSK) that accepts `psk`.
    pub async fn add_ap(&self, ssid: &str, bssid: &str, strength: u8, psk: &str) {
        let _: String = self
            .mock("AddCameraAp", &(ssid, bssid, strength, psk))
            .await;
    }

    /// The truck drives away: the AP goes; an activation on it fails (reason 53 while
    /// activating, 8 once activated).
    pub async fn remove_ap(&self, bssid: &str) {
        self.mock::<_, ()>("RemoveAp", &(bssid,)).await
    }

    /// The access point's DHCP server leases `address/prefix` (a rogue's `10.0.0.2/1`);
    /// a camera's lease is 127.0.0.2/24 unless set.
    pub async fn set_lease(&self, bssid: &str, address: &str, prefix: u32) {
        let _: () = self.mock("SetLease", &(bssid, address, prefix)).await;
    }

    /// An Ethernet device, connected, with `address/prefix` (the depot LAN's uplink).
    pub async fn add_wired_device(&self, iface: &str, address: &str, prefix: u32) {
        let _: () = self.mock("AddWiredDevice", &(iface, address, prefix)).await;
    }

    /// The next `n` joins of the access point `bssid` fail with NetworkManager's "no
    /// secrets" whatever the password, as a handshake lost to a weak signal does.
    pub async fn fail_next_joins(&self, bssid: &str, n: u32) {
        let _: () = self.mock("FailNextJoins", &(bssid, n)).await;
    }

    /// The Wi-Fi adapter is re-plugged (or NetworkManager restarts): the device and its
    /// access points come back under new object paths; the uplink autoconnects again.
    pub async fn replug_device(&self) {
        let _: () = self.mock("ReplugDevice", &()).await;
    }

    /// A saved profile with this connection.id (autoconnect false), e.g. left by a crash.
    pub async fn add_profile(&self, id: &str) {
        self.add_profile_with_uuid(id, "").await;
    }

    /// A saved profile with this connection.id and uuid (a random one when empty).
    pub async fn add_profile_with_uuid(&self, id: &str, uuid: &str) {
        let _: String = self.mock("AddProfile", &(id, uuid)).await;
    }

    /// connection.id of the device's ACTIVATED connection.
    pub async fn active_id(&self) -> Option<String> {
        let id: String = self.mock("ActiveId", &()).await;
        (!id.is_empty()).then_some(id)
    }

    /// BSSID of the device's ACTIVATED access point.
    pub async fn active_bssid(&self) -> Option<String> {
        let bssid: String = self.mock("ActiveBssid", &()).await;
        (!bssid.is_empty()).then_some(bssid)
    }

    /// Method names called on NetworkManager's objects, in order (dbusmock's call log,
    /// without the mock interface's own methods).
    pub async fn calls(&self) -> Vec<String> {
        self.mock("NmCalls", &()).await
    }

    /// Follows the stand-in's `Joined(s bssid)` signal ("" = none).
    pub fn joined(&self) -> tokio::sync::watch::Receiver<String> {
        self.joined.clone()
    }

    /// connection.id of every settings connection.
    pub async fn profiles(&self) -> Vec<String> {
        self.mock("Profiles", &()).await
    }

    /// The last `AddAndActivateConnection2`'s settings ("setting.key" → text, the PSK in
    /// clear) and options ("options.persist", …).
    pub async fn last_join(&self) -> BTreeMap<String, String> {
        self.mock("LastJoin", &()).await
    }

    /// Sets a permission `GetPermissions` reports ("yes", "no", "auth"); without
    /// `org.freedesktop.NetworkManager.network-control` = "yes" activations are denied.
    pub async fn set_permission(&self, name: &str, value: &str) {
        self.mock::<_, ()>("SetPermission", &(name, value)).await
    }

    /// The device's `LastScan` (CLOCK_BOOTTIME ms, -1 = never).
    pub async fn last_scan(&self) -> i64 {
        let dev: zbus::OwnedObjectPath = self
            .nm_call("GetDeviceByIpIface", &(self.interface.as_str(),))
            .await;
        zbus::Proxy::new(
            &self.conn,
            NM,
            dev,
            "org.freedesktop.NetworkManager.Device.Wireless",
        )
        .await
        .expect("device proxy")
        .get_property("LastScan")
        .await
        .expect("LastScan")
    }

    async fn nm_call<B, R>(&self, method: &str, body: &B) -> R
    where
        B: serde::Serialize + zbus::DynamicType,
        R: for<'d> zbus::wire::DynamicDeserialize<'d>,
    {
        zbus::Proxy::new(&self.conn, NM, "/org/freedesktop/NetworkManager", NM)
            .await
            .expect("manager proxy")
            .call(method, body)
            .await
            .unwrap_or_else(|e| panic!("NetworkManager {method}: {e}"))
    }

    /// Waits (up to `deadline`) until the device's ACTIVATED connection is `id` (None: none).
    pub async fn wait_active_id(&self, id: Option<&str>, deadline: Duration) {
        let end = Instant::now() + deadline;
        loop {
            let now = self.active_id().await;
            if now.as_deref() == id {
                return;
            }
            assert!(
                Instant::now() < end,
                "active connection is {now:?}, not {id:?}, after {deadline:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn mock_proxy(conn: &Connection) -> zbus::Proxy<'static> {
    zbus::proxy::Builder::new(conn)
        .destination(NM)
        .path(MOCK_PATH)
        .interface(MOCK_IFACE)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .expect("mock proxy")
}

/// Waits until the stand-in answers `GetDeviceByIpIface(interface)` (its template loaded).
async fn wait_ready(conn: &Connection, stand_in: &mut Child, interface: &str) {
    let end = Instant::now() + START_DEADLINE;
    let nm = zbus::proxy::Builder::<zbus::Proxy<'_>>::new(conn)
        .destination(NM)
        .path("/org/freedesktop/NetworkManager")
        .interface(NM)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .expect("manager proxy");
    loop {
        let reply: zbus::Result<zbus::OwnedObjectPath> =
            nm.call("GetDeviceByIpIface", &(interface,)).await;
        let Err(e) = reply else { return };
        if let Ok(Some(status)) = stand_in.try_wait() {
            panic!("the NetworkManager stand-in exited ({status}) before it was ready: {e}");
        }
        assert!(
            Instant::now() < end,
            "the NetworkManager stand-in was not ready after {START_DEADLINE:?}: {e}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Subscribes to `Joined` (before returning) and follows it in a watch channel.
async fn follow_joined(
    conn: &Connection,
) -> (
    tokio::sync::watch::Receiver<String>,
    tokio::task::JoinHandle<()>,
) {
    let proxy = zbus::proxy::Builder::<zbus::Proxy<'_>>::new(conn)
        .destination(NM)
        .path(MOCK_PATH)
        .interface(JOINED_IFACE)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .expect("Joined proxy");
    let mut stream = proxy
        .receive_signal("Joined")
        .await
        .expect("subscribe to Joined");
    let (tx, rx) = tokio::sync::watch::channel(String::new());
    let task = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            if let Ok(bssid) = msg.body().deserialize::<String>() {
                let _ = tx.send(bssid);
            }
        }
    });
    (rx, task)
}
