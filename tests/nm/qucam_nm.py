"""A NetworkManager stand-in for qucam-offload's depot Wi-Fi tests (issue 10).

A python-dbusmock template extending dbusmock's own `networkmanager` template, so that one
Wi-Fi device behaves like NetworkManager's documented D-Bus API (docs/depot-wifi.md, §1 and
§3) rather than activating instantly and always succeeding:

- activation goes ACTIVATING -> ACTIVATED over `activation_ms` (template parameter, default
  50), with Device.StateChanged (40, 50, 60, 70, 100) and Connection.Active.StateChanged;
- a wrong PSK fails the device with reason NO_SECRETS (7): FAILED 120 (reason 7), the active
  connection DEACTIVATED (reason DEVICE_DISCONNECTED 3), then the device DISCONNECTED 30
  (reason NONE 0, as NetworkManager does after FAILED);
- an access point removed while activating fails with SSID_NOT_FOUND (53), while activated
  with SUPPLICANT_DISCONNECT (8);
- a new activation replaces the device's current one (old: DEACTIVATING/DISCONNECTED with
  device reason NEW_ACTIVATION 60, active connection DEACTIVATED);
- a volatile profile (`persist: volatile`) is deleted when its activation ends;
- `bind-activation: dbus-client`: when the caller's unique name leaves the bus, its
  activation is deactivated (and its volatile profile deleted); nothing reconnects the
  uplink afterwards (the stand-in never autoconnects), so a test can tell who restored it;
- `RequestScan` bumps `LastScan` (CLOCK_BOOTTIME ms) after `scan_ms` (default 20), and answers
  `NotAllowed` while an activation is in progress;
- `GetPermissions` answers "yes" for the permissions `doctor` checks (mock `SetPermission`
  changes one; without network-control the activation calls fail `PermissionDenied`);
- an ACTIVATED connection has an `IP4Config` object (`AddressData`, `RouteData`: the lease
  of its access point, default 127.0.0.2/24 for a camera, 10.77.0.10/24 for the uplink),
  on the device and the active connection (`Ip4Config`); mock `SetLease` gives an access
  point another lease (a rogue's 10.0.0.2/1), and `AddWiredDevice` an Ethernet device whose
  network other leases may overlap.

Mock interface (dbusmock's `org.freedesktop.DBus.Mock`, object `/org/freedesktop`), for the
Rust harness `tests/common/nm.rs`: `AddUplink`, `AddCameraAp`, `AddProfile`, `FailNextJoins`,
`ReplugDevice`, `RemoveAp`, `SetLease`, `AddWiredDevice`,
`ActiveId`, `ActiveBssid`, `Profiles`, `NmCalls`, `LastJoin`, `SetPermission`; and the signal
`Joined(s bssid)` on `org.freedesktop.NetworkManager.Mock` every time the BSSID of the device's
ACTIVATED access point changes ("" when none).

Error names and reasons follow NetworkManager's source (nm-dbus-interface.h, nm-manager.c,
nm-device-wifi.c) as docs/depot-wifi.md records them. Test code: PSKs are compared in clear.
"""

import time
import uuid as uuidlib

import dbus
import dbus.service
from gi.repository import GLib

import dbusmock
from dbusmock import MOCK_IFACE
from dbusmock.templates import networkmanager as _base
from dbusmock.templates.networkmanager import *  # noqa: F403 (the base template's mock helpers)
from dbusmock.templates.networkmanager import (
    ACCESS_POINT_IFACE,
    ACTIVE_CONNECTION_IFACE,
    CSETTINGS_IFACE,
    DEVICE_IFACE,
    MANAGER_IFACE,
    MANAGER_OBJ,
    SETTINGS_IFACE,
    SETTINGS_OBJ,
    WIRELESS_DEVICE_IFACE,
    AddAccessPoint,
    AddEthernetDevice,
    AddWiFiDevice,
    RemoveAccessPoint,
)

QUCAM_MOCK_IFACE = "org.freedesktop.NetworkManager.Mock"
IP4_CONFIG_IFACE = "org.freedesktop.NetworkManager.IP4Config"
CAMERA_LEASE = ("127.0.0.2", 24)
UPLINK_LEASE = ("10.77.0.10", 24)
PSK_FLAGS = 0x100  # NM_802_11_AP_SEC_KEY_MGMT_PSK

# Device states and reasons (nm-dbus-interface.h).
DISCONNECTED, PREPARE, CONFIG, NEED_AUTH, IP_CONFIG, ACTIVATED, DEACTIVATING, FAILED = (
    30, 40, 50, 60, 70, 100, 110, 120)
R_NONE, R_NO_SECRETS, R_SUPPLICANT_DISCONNECT, R_USER_REQUESTED = 0, 7, 8, 39
R_CONNECTION_REMOVED, R_SSID_NOT_FOUND, R_NEW_ACTIVATION = 38, 53, 60
R_DEVICE_REMOVED = 36
# Active connection states and reasons.
AC_ACTIVATING, AC_ACTIVATED, AC_DEACTIVATING, AC_DEACTIVATED = 1, 2, 3, 4
AC_R_USER_DISCONNECTED, AC_R_DEVICE_DISCONNECTED = 2, 3

E_PREFIX = "org.freedesktop.NetworkManager."
NETWORK_CONTROL = E_PREFIX + "network-control"
DEFAULT_PERMISSIONS = {
    NETWORK_CONTROL: "yes",
    E_PREFIX + "wifi.scan": "yes",
    E_PREFIX + "enable-disable-wifi": "yes",
    E_PREFIX + "settings.modify.system": "yes",
    E_PREFIX + "settings.modify.own": "yes",
}
ALLOWED_OPTIONS = {"persist": ("disk", "memory", "volatile"), "bind-activation": ("none", "dbus-client")}


class State:
    """Everything the stand-in knows beyond dbusmock's objects."""

    def __init__(self, parameters):
        self.mock = None
        self.dev = None
        self.iface = str(parameters.get("interface", "wlan0"))
        self.activation_ms = int(parameters.get("activation_ms", 50))
        self.scan_ms = int(parameters.get("scan_ms", 20))
        self.aps = {}  # bssid (upper) -> {"path": o, "psk": str or None}
        self.profiles = {}  # settings path -> {"settings": full dict, "volatile": bool}
        self.act = None  # the device's current Activation
        self.joined = ""
        self.permissions = dict(DEFAULT_PERMISSIONS)
        self.last_join = {}
        self.counter = 0
        self.uplink = None  # (profile path, BSSID) of the depot network, once added

    def next_id(self):
        self.counter += 1
        return self.counter


S = None


class Activation:
    def __init__(self, ac, conn, ap, volatile, psk_ok):
        self.ac, self.conn, self.ap, self.volatile, self.psk_ok = ac, conn, ap, volatile, psk_ok
        self.state = AC_ACTIVATING
        self.timer = None
        self.watch = None
        self.step = 0
        self.ip4 = None


def _err(name, msg):
    return dbus.exceptions.DBusException(msg, name=E_PREFIX + name)


def _obj(path):
    return dbusmock.get_object(path)


def _boottime_ms():
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * 1000)


# --- device and active-connection state ---------------------------------------------------


def _dev_state(new, reason):
    dev = _obj(S.dev)
    old = dev.Get(DEVICE_IFACE, "State")
    dev.Set(DEVICE_IFACE, "State", dbus.UInt32(new))
    dev.Set(DEVICE_IFACE, "StateReason", dbus.Struct((dbus.UInt32(new), dbus.UInt32(reason)), signature="uu"))
    dev.EmitSignal(DEVICE_IFACE, "StateChanged", "uuu", [dbus.UInt32(new), old, dbus.UInt32(reason)])


def _ac_state(act, new, reason):
    act.state = new
    ac = _obj(act.ac)
    ac.Set(ACTIVE_CONNECTION_IFACE, "State", dbus.UInt32(new))
    ac.EmitSignal(ACTIVE_CONNECTION_IFACE, "StateChanged", "uu", [dbus.UInt32(new), dbus.UInt32(reason)])


def _set_active_list(update):
    nm = _obj(MANAGER_OBJ)
    acs = [p for p in nm.Get(MANAGER_IFACE, "ActiveConnections")]
    nm.Set(MANAGER_IFACE, "ActiveConnections", dbus.Array(update(acs), signature="o"))


def _bssid_of(ap_path):
    for bssid, ap in S.aps.items():
        if ap["path"] == ap_path:
            return bssid
    return ""


def _update_joined():
    act = S.act
    bssid = _bssid_of(act.ap) if act is not None and act.state == AC_ACTIVATED else ""
    if bssid != S.joined:
        S.joined = bssid
        S.mock.EmitSignal(QUCAM_MOCK_IFACE, "Joined", "s", [bssid])


def _profile_settings(conn):
    return S.profiles[str(conn)]["settings"]


def _start(conn, ap, volatile, psk_ok, instant=False):
    """Starts an activation of profile `conn` on the device (AP `ap`); returns its path."""
    if S.act is not None:
        _end(S.act, R_NEW_ACTIVATION, failed=False, ac_reason=AC_R_DEVICE_DISCONNECTED)
    conn_settings = _profile_settings(conn)["connection"]
    ac = "/org/freedesktop/NetworkManager/ActiveConnection/%d" % S.next_id()
    S.mock.AddObject(
        ac,
        ACTIVE_CONNECTION_IFACE,
        {
            "Connection": dbus.ObjectPath(conn),
            "SpecificObject": dbus.ObjectPath(ap),
            "Id": dbus.String(conn_settings["id"]),
            "Uuid": dbus.String(conn_settings["uuid"]),
            "Type": dbus.String(conn_settings.get("type", "802-11-wireless")),
            "Devices": dbus.Array([dbus.ObjectPath(S.dev)], signature="o"),
            "State": dbus.UInt32(AC_ACTIVATING),
            "StateFlags": dbus.UInt32(0),
            "Default": False,
            "Default6": False,
            "Vpn": False,
            "Master": dbus.ObjectPath("/"),
            "Ip4Config": dbus.ObjectPath("/"),
        },
        [],
    )
    S.mock.object_manager_emit_added(ac)
    act = Activation(ac, str(conn), ap, volatile, psk_ok)
    S.act = act
    _obj(S.dev).Set(DEVICE_IFACE, "ActiveConnection", dbus.ObjectPath(ac))
    _set_active_list(lambda acs: acs + [dbus.ObjectPath(ac)])
    if instant:
        while act.state == AC_ACTIVATING:
            _step(act)
    else:
        _schedule(act)
    return ac


def _schedule(act):
    act.timer = GLib.timeout_add(max(1, S.activation_ms // 5), _tick, act)


def _tick(act):
    act.timer = None
    if S.act is act and act.state == AC_ACTIVATING:
        _step(act)
        if act.state == AC_ACTIVATING:
            _schedule(act)
    return False


def _step(act):
    """One step of PREPARE, CONFIG, NEED_AUTH, IP_CONFIG, ACTIVATED (or FAILED: no secrets)."""
    act.step += 1
    if act.step == 1:
        _dev_state(PREPARE, R_NONE)
    elif act.step == 2:
        _dev_state(CONFIG, R_NONE)
    elif act.step == 3:
        _dev_state(NEED_AUTH, R_NONE)
    elif act.step == 4:
        if not act.psk_ok:
            _end(act, R_NO_SECRETS, failed=True)
            return
        _dev_state(IP_CONFIG, R_NONE)
    else:
        _obj(S.dev).Set(WIRELESS_DEVICE_IFACE, "ActiveAccessPoint", dbus.ObjectPath(act.ap))
        ap = _ap_by_path(act.ap)
        act.ip4 = _add_ip4_config(*(ap.get("lease", CAMERA_LEASE) if ap else CAMERA_LEASE))
        _obj(S.dev).Set(DEVICE_IFACE, "Ip4Config", dbus.ObjectPath(act.ip4))
        _obj(act.ac).Set(ACTIVE_CONNECTION_IFACE, "Ip4Config", dbus.ObjectPath(act.ip4))
        _dev_state(ACTIVATED, R_NONE)
        _ac_state(act, AC_ACTIVATED, 1)
        _update_joined()


def _end(act, reason, failed, ac_reason=AC_R_DEVICE_DISCONNECTED):
    """Takes activation `act` down: FAILED (`failed`) or DEACTIVATING, then DISCONNECTED."""
    if act.timer is not None:
        GLib.source_remove(act.timer)
        act.timer = None
    if act.watch is not None:
        act.watch.cancel()
        act.watch = None
    if S.act is act:
        S.act = None
    if failed:
        _dev_state(FAILED, reason)
        _ac_state(act, AC_DEACTIVATED, ac_reason)
    else:
        _dev_state(DEACTIVATING, reason)
        _ac_state(act, AC_DEACTIVATING, ac_reason)
        _ac_state(act, AC_DEACTIVATED, ac_reason)
    dev = _obj(S.dev)
    dev.Set(DEVICE_IFACE, "ActiveConnection", dbus.ObjectPath("/"))
    dev.Set(WIRELESS_DEVICE_IFACE, "ActiveAccessPoint", dbus.ObjectPath("/"))
    dev.Set(DEVICE_IFACE, "Ip4Config", dbus.ObjectPath("/"))
    if act.ip4 is not None:
        S.mock.RemoveObject(act.ip4)
        act.ip4 = None
    _dev_state(DISCONNECTED, R_NONE if failed else reason)
    _set_active_list(lambda acs: [p for p in acs if str(p) != act.ac])
    S.mock.object_manager_emit_removed(act.ac)
    S.mock.RemoveObject(act.ac)
    if act.volatile and act.conn in S.profiles:
        _delete_profile(act.conn)
    _update_joined()


def _network(address, prefix):
    bits = 0
    for part in str(address).split("."):
        bits = (bits << 8) | int(part)
    mask = (0xFFFFFFFF << (32 - int(prefix))) & 0xFFFFFFFF
    n = bits & mask
    return ".".join(str((n >> s) & 0xFF) for s in (24, 16, 8, 0))


def _add_ip4_config(address, prefix):
    """An IP4Config object: `address/prefix`, and the prefix route NetworkManager adds."""
    path = "/org/freedesktop/NetworkManager/IP4Config/%d" % S.next_id()
    entry = lambda k, v: dbus.Dictionary({k: dbus.String(v), "prefix": dbus.UInt32(prefix)}, signature="sv")  # noqa: E731
    S.mock.AddObject(
        path,
        IP4_CONFIG_IFACE,
        {
            "AddressData": dbus.Array([entry("address", address)], signature="a{sv}"),
            "RouteData": dbus.Array([entry("dest", _network(address, prefix))], signature="a{sv}"),
        },
        [],
    )
    return path


def _find_act(ac_path):
    act = S.act
    if act is not None and act.ac == str(ac_path):
        return act
    return None


# --- settings profiles --------------------------------------------------------------------


def _add_profile(settings, volatile):
    settings = {str(k): dict(v) for k, v in settings.items()}
    conn = settings.setdefault("connection", {})
    if "id" not in conn:
        raise _err("Settings.InvalidProperty", "connection.id: property is missing")
    conn.setdefault("uuid", dbus.String(str(uuidlib.uuid4())))
    conn.setdefault("type", dbus.String("802-11-wireless"))
    path = "%s/%d" % (SETTINGS_OBJ, S.next_id())
    S.mock.AddObject(
        path,
        CSETTINGS_IFACE,
        {"Unsaved": volatile, "Flags": dbus.UInt32(0x4 if volatile else 0), "Filename": ""},
        [],
    )
    o = _obj(path)
    o.AddMethod(CSETTINGS_IFACE, "GetSettings", "", "a{sa{sv}}", lambda self: _public_settings(self.path))
    o.AddMethod(CSETTINGS_IFACE, "Delete", "", "", lambda self: _delete_profile(self.path, active=True))
    S.mock.object_manager_emit_added(path)
    S.profiles[path] = {"settings": settings, "volatile": volatile}
    settings_obj = _obj(SETTINGS_OBJ)
    conns = list(settings_obj.Get(SETTINGS_IFACE, "Connections")) + [dbus.ObjectPath(path)]
    settings_obj.Set(SETTINGS_IFACE, "Connections", dbus.Array(conns, signature="o"))
    settings_obj.EmitSignal(SETTINGS_IFACE, "NewConnection", "o", [dbus.ObjectPath(path)])
    return path


def _public_settings(path):
    """GetSettings: everything but the secrets (NetworkManager never returns them here)."""
    out = {}
    for name, setting in S.profiles[str(path)]["settings"].items():
        out[name] = dbus.Dictionary({k: v for k, v in setting.items() if k != "psk"}, signature="sv")
    return dbus.Dictionary(out, signature="sa{sv}")


def _delete_profile(path, active=False):
    path = str(path)
    act = S.act
    if active and act is not None and act.conn == path:
        act.volatile = False
        _end(act, R_CONNECTION_REMOVED, failed=False)
    if path not in S.profiles:
        return
    del S.profiles[path]
    settings_obj = _obj(SETTINGS_OBJ)
    conns = [p for p in settings_obj.Get(SETTINGS_IFACE, "Connections") if str(p) != path]
    settings_obj.Set(SETTINGS_IFACE, "Connections", dbus.Array(conns, signature="o"))
    settings_obj.EmitSignal(SETTINGS_IFACE, "ConnectionRemoved", "o", [dbus.ObjectPath(path)])
    _obj(path).EmitSignal(CSETTINGS_IFACE, "Removed", "", [])
    S.mock.object_manager_emit_removed(path)
    S.mock.RemoveObject(path)


def _profile_psk(settings):
    return str(settings.get("802-11-wireless-security", {}).get("psk", ""))


def _ap_for_ssid(ssid):
    for ap in S.aps.values():
        if bytes(_obj(ap["path"]).Get(ACCESS_POINT_IFACE, "Ssid")) == ssid:
            return ap
    return None


def _psk_ok(ap, settings):
    if ap.get("handshake_failures", 0) > 0:
        # A weak signal: the 4-way handshake times out, which NetworkManager reports as
        # missing secrets whatever the password.
        ap["handshake_failures"] -= 1
        return False
    return ap["psk"] is None or ap["psk"] == _profile_psk(settings)


def _ap_by_path(path):
    for ap in S.aps.values():
        if ap["path"] == str(path):
            return ap
    return None


# --- org.freedesktop.NetworkManager -------------------------------------------------------


def _check_control():
    if S.permissions.get(NETWORK_CONTROL) != "yes":
        raise _err("PermissionDenied", "Not authorized to control networking.")


def _check_device(device):
    if str(device) not in ("/", S.dev):
        raise _err("UnknownDevice", "No device found for the requested iface.")


def ActivateConnection(self, connection, device, specific_object):
    _check_control()
    _check_device(device)
    if str(connection) not in S.profiles:
        raise _err("UnknownConnection", "Connection '%s' is not available" % connection)
    settings = _profile_settings(connection)
    if str(specific_object) != "/":
        ap = _ap_by_path(specific_object)
        if ap is None:
            raise _err("Device.SpecificObjectNotFound", "the requested access point %s is not known" % specific_object)
    else:
        ap = _ap_for_ssid(bytes(settings.get("802-11-wireless", {}).get("ssid", b"")))
        if ap is None:
            raise _err(
                "UnknownConnection",
                "Connection '%s' is not available on device %s because no network is visible"
                % (settings["connection"]["id"], S.iface),
            )
    volatile = S.profiles[str(connection)]["volatile"]
    return dbus.ObjectPath(_start(str(connection), ap["path"], volatile, _psk_ok(ap, settings)))


def _check_options(options):
    for key, value in options.items():
        if str(key) not in ALLOWED_OPTIONS:
            raise _err("InvalidArguments", "Unknown extra option '%s'" % key)
        if str(value) not in ALLOWED_OPTIONS[str(key)]:
            raise _err("InvalidArguments", "Option '%s' has invalid value '%s'" % (key, value))


def _flatten(value):
    if isinstance(value, dbus.Boolean):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray)) or (isinstance(value, list) and all(isinstance(b, dbus.Byte) for b in value)):
        return ":".join("%02X" % int(b) for b in value)
    if isinstance(value, dbus.Byte):
        return str(int(value))
    if isinstance(value, dict):
        return ",".join("%s=%s" % (k, _flatten(v)) for k, v in sorted(value.items()))
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return ";".join(_flatten(v) for v in value)
    if isinstance(value, list):
        return ",".join(_flatten(v) for v in value)
    return str(value)


def AddAndActivateConnection2(self, connection, device, specific_object, options, sender=None):
    _check_control()
    _check_device(device)
    _check_options(options)
    ap = _ap_by_path(specific_object)
    if ap is None:
        raise _err("Device.SpecificObjectNotFound", "the requested access point %s is not known" % specific_object)
    flat = {"%s.%s" % (s, k): _flatten(v) for s, setting in connection.items() for k, v in setting.items()}
    if "802-11-wireless.ssid" in flat:
        flat["802-11-wireless.ssid"] = bytes(connection["802-11-wireless"]["ssid"]).decode("utf-8", "replace")
    flat.update({"options.%s" % k: str(v) for k, v in options.items()})
    S.last_join = flat
    volatile = str(options.get("persist", "disk")) == "volatile"
    conn = _add_profile(connection, volatile)
    ac = _start(conn, ap["path"], volatile, _psk_ok(ap, _profile_settings(conn)))
    if str(options.get("bind-activation", "none")) == "dbus-client" and sender:
        _bind(S.act, str(sender))
    return (dbus.ObjectPath(conn), dbus.ObjectPath(ac), dbus.Dictionary({}, signature="sv"))


def _bind(act, sender):
    """NMKeepAlive's dbus-client watch: the activation lives while `sender` is on the bus."""
    bus = S.mock.bus_name.get_bus()

    def owner_changed(owner):
        if not owner and S.act is act:
            _end(act, R_USER_REQUESTED, failed=False, ac_reason=AC_R_USER_DISCONNECTED)

    act.watch = bus.watch_name_owner(sender, owner_changed)


def DeactivateConnection(self, active_connection):
    _check_control()
    act = _find_act(active_connection)
    if act is None:
        raise _err("ConnectionNotActive", "The connection was not active.")
    _end(act, R_USER_REQUESTED, failed=False, ac_reason=AC_R_USER_DISCONNECTED)


def GetDeviceByIpIface(self, iface):
    if str(iface) != S.iface:
        raise _err("UnknownDevice", "No device found for the requested iface.")
    return dbus.ObjectPath(S.dev)


def GetPermissions(self):
    return dbus.Dictionary(S.permissions, signature="ss")


def RequestScan(self, options):
    if S.act is not None and S.act.state == AC_ACTIVATING:
        raise _err("Device.NotAllowed", "Scanning not allowed while already scanning")
    GLib.timeout_add(max(1, S.scan_ms), _scan_done)


def _scan_done():
    dev = _obj(S.dev)
    last = int(dev.Get(WIRELESS_DEVICE_IFACE, "LastScan"))
    now = max(_boottime_ms(), last + 1)
    seen = dbus.Int32(now // 1000)
    for ap in S.aps.values():
        _obj(ap["path"]).Set(ACCESS_POINT_IFACE, "LastSeen", seen)
    dev.Set(WIRELESS_DEVICE_IFACE, "LastScan", dbus.Int64(now))
    return False


# --- mock interface (the harness) ---------------------------------------------------------


def _add_ap(ssid, bssid, strength, psk):
    bssid = str(bssid).upper()
    if bssid in S.aps:
        raise dbus.exceptions.DBusException("AP %s exists" % bssid, name=MOCK_IFACE + ".NameError")
    name = "%s_%d" % (bssid.replace(":", ""), S.next_id())
    path = AddAccessPoint(S.mock, S.dev, name, str(ssid), bssid, 2, 2412, 54000, int(strength), PSK_FLAGS)
    _obj(path).Set(ACCESS_POINT_IFACE, "LastSeen", dbus.Int32(_boottime_ms() // 1000))
    S.aps[bssid] = {"path": str(path), "psk": psk, "lease": CAMERA_LEASE}
    return path


@dbus.service.method(MOCK_IFACE, in_signature="sssb", out_signature="")
def AddUplink(self, conn_id, ssid, bssid, active):
    """The depot network: an AP and a saved profile (autoconnect true), ACTIVATED if `active`."""
    ap = _add_ap(ssid, bssid, 80, "depot-secret")
    settings = {
        "connection": {
            "id": dbus.String(conn_id),
            "type": dbus.String("802-11-wireless"),
            "autoconnect": dbus.Boolean(True),
            "interface-name": dbus.String(S.iface),
        },
        "802-11-wireless": {"ssid": dbus.ByteArray(str(ssid).encode()), "mode": dbus.String("infrastructure")},
        "802-11-wireless-security": {"key-mgmt": dbus.String("wpa-psk"), "psk": dbus.String("depot-secret")},
        "ipv4": {"method": dbus.String("auto")},
        "ipv6": {"method": dbus.String("auto")},
    }
    conn = _add_profile(settings, False)
    S.uplink = (conn, str(bssid).upper())
    S.aps[str(bssid).upper()]["lease"] = UPLINK_LEASE
    if active:
        _start(conn, str(ap), False, True, instant=True)


@dbus.service.method(MOCK_IFACE, in_signature="ssys", out_signature="s")
def AddCameraAp(self, ssid, bssid, strength, psk):
    """A camera hotspot (WPA-PSK) that accepts `psk`."""
    return _add_ap(ssid, bssid, strength, str(psk))


@dbus.service.method(MOCK_IFACE, in_signature="ss", out_signature="s")
def AddProfile(self, conn_id, uuid):
    """A saved Wi-Fi profile (autoconnect false) with this id (and this uuid, unless empty),
    e.g. one a crash left behind."""
    conn = {"id": dbus.String(conn_id), "autoconnect": dbus.Boolean(False)}
    if uuid:
        conn["uuid"] = dbus.String(uuid)
    settings = {
        "connection": conn,
        "802-11-wireless": {"ssid": dbus.ByteArray(b"left-behind")},
    }
    return _add_profile(settings, False)


def _add_device(name):
    S.dev = str(AddWiFiDevice(S.mock, name, S.iface, DISCONNECTED))
    dev = _obj(S.dev)
    dev.AddProperty(WIRELESS_DEVICE_IFACE, "LastScan", dbus.Int64(-1))
    dev.AddProperty(WIRELESS_DEVICE_IFACE, "ActiveAccessPoint", dbus.ObjectPath("/"))
    dev.AddProperty(DEVICE_IFACE, "Ip4Config", dbus.ObjectPath("/"))
    dev.AddMethod(WIRELESS_DEVICE_IFACE, "RequestScan", "a{sv}", "", RequestScan)


@dbus.service.method(MOCK_IFACE, in_signature="", out_signature="")
def ReplugDevice(self):
    """The Wi-Fi adapter is unplugged and plugged back in (as after a USB reset; a restart
    of NetworkManager also renumbers its objects): the activation ends, the device and its
    access points come back under new object paths, and the uplink autoconnects again."""
    if S.act is not None:
        _end(S.act, R_DEVICE_REMOVED, failed=False)
    old = S.dev
    aps = []
    for bssid, ap in list(S.aps.items()):
        o = _obj(ap["path"])
        ssid = bytes(o.Get(ACCESS_POINT_IFACE, "Ssid")).decode("utf-8", "replace")
        aps.append((bssid, ssid, int(o.Get(ACCESS_POINT_IFACE, "Strength")), ap))
        RemoveAccessPoint(S.mock, old, ap["path"])
        del S.aps[bssid]
    nm = _obj(MANAGER_OBJ)
    devices = [p for p in nm.Get(MANAGER_IFACE, "Devices") if str(p) != old]
    nm.Set(MANAGER_IFACE, "Devices", dbus.Array(devices, signature="o"))
    nm.EmitSignal(MANAGER_IFACE, "DeviceRemoved", "o", [dbus.ObjectPath(old)])
    S.mock.object_manager_emit_removed(old)
    S.mock.RemoveObject(old)
    _add_device("%s_%d" % (S.iface, S.next_id()))
    for bssid, ssid, strength, ap in aps:
        _add_ap(ssid, bssid, strength, ap["psk"])
        S.aps[bssid]["handshake_failures"] = ap.get("handshake_failures", 0)
        S.aps[bssid]["lease"] = ap.get("lease", CAMERA_LEASE)
    if S.uplink is not None and S.uplink[1] in S.aps:
        _start(S.uplink[0], S.aps[S.uplink[1]]["path"], False, True, instant=True)


@dbus.service.method(MOCK_IFACE, in_signature="ssu", out_signature="")
def SetLease(self, bssid, address, prefix):
    """The access point's DHCP server leases `address/prefix` (a rogue's 10.0.0.2/1)."""
    S.aps[str(bssid).upper()]["lease"] = (str(address), int(prefix))


@dbus.service.method(MOCK_IFACE, in_signature="ssu", out_signature="")
def AddWiredDevice(self, iface, address, prefix):
    """An Ethernet device, connected, with `address/prefix` (the depot LAN's uplink)."""
    dev = AddEthernetDevice(S.mock, "%s_%d" % (iface, S.next_id()), str(iface), ACTIVATED)
    ip4 = _add_ip4_config(str(address), int(prefix))
    o = _obj(dev)
    o.AddProperty(DEVICE_IFACE, "Ip4Config", dbus.ObjectPath(ip4))
    o.Set(DEVICE_IFACE, "Ip4Config", dbus.ObjectPath(ip4))


@dbus.service.method(MOCK_IFACE, in_signature="su", out_signature="")
def FailNextJoins(self, bssid, n):
    """The next `n` activations on this AP fail with NO_SECRETS whatever the password (a
    handshake lost to a weak signal)."""
    S.aps[str(bssid).upper()]["handshake_failures"] = int(n)


@dbus.service.method(MOCK_IFACE, in_signature="s", out_signature="")
def RemoveAp(self, bssid):
    """The truck drives away: reason 53 if activating on it, 8 if activated."""
    ap = S.aps.pop(str(bssid).upper(), None)
    if ap is None:
        return
    act = S.act
    if act is not None and act.ap == ap["path"]:
        reason = R_SSID_NOT_FOUND if act.state == AC_ACTIVATING else R_SUPPLICANT_DISCONNECT
        _end(act, reason, failed=True)
    RemoveAccessPoint(S.mock, S.dev, ap["path"])


@dbus.service.method(MOCK_IFACE, in_signature="", out_signature="s")
def ActiveId(self):
    act = S.act
    if act is None or act.state != AC_ACTIVATED:
        return ""
    return str(_profile_settings(act.conn)["connection"]["id"])


@dbus.service.method(MOCK_IFACE, in_signature="", out_signature="s")
def ActiveBssid(self):
    act = S.act
    if act is None or act.state != AC_ACTIVATED:
        return ""
    return _bssid_of(act.ap)


@dbus.service.method(MOCK_IFACE, in_signature="", out_signature="as")
def Profiles(self):
    return dbus.Array([str(p["settings"]["connection"]["id"]) for p in S.profiles.values()], signature="s")


@dbus.service.method(MOCK_IFACE, in_signature="", out_signature="as")
def NmCalls(self):
    """Names of the methods called on NetworkManager's own objects, in order (no mock calls)."""
    mock_names = set()
    for methods in S.mock.methods.values():
        mock_names.update(methods.keys())
    return dbus.Array([c[1] for c in S.mock.call_log if c[1] not in mock_names], signature="s")


@dbus.service.method(MOCK_IFACE, in_signature="", out_signature="a{ss}")
def LastJoin(self):
    """The last AddAndActivateConnection2's settings and options, "setting.key" -> text."""
    return dbus.Dictionary(S.last_join, signature="ss")


@dbus.service.method(MOCK_IFACE, in_signature="ss", out_signature="")
def SetPermission(self, name, value):
    S.permissions[str(name)] = str(value)


# --- template entry point -----------------------------------------------------------------


def _share_call_log(mock):
    """One call log for every object (GetCalls/NmCalls in call order across objects)."""
    shared = mock.call_log
    orig_init = dbusmock.mockobject.DBusMockObject.__init__

    def init(obj, *args, **kwargs):
        orig_init(obj, *args, **kwargs)
        obj.call_log = shared

    dbusmock.mockobject.DBusMockObject.__init__ = init


def load(mock, parameters):
    global S
    parameters = dict(parameters or {})
    parameters.setdefault("Version", "1.52.0")
    S = State(parameters)
    S.mock = mock
    _share_call_log(mock)
    _base.load(mock, {k: v for k, v in parameters.items() if k[0].isupper()})

    nm = _obj(MANAGER_OBJ)
    nm.AddMethod(MANAGER_IFACE, "ActivateConnection", "ooo", "o", ActivateConnection)
    nm.AddMethod(MANAGER_IFACE, "DeactivateConnection", "o", "", DeactivateConnection)
    nm.AddMethod(MANAGER_IFACE, "GetDeviceByIpIface", "s", "o", GetDeviceByIpIface)
    nm.AddMethod(MANAGER_IFACE, "GetPermissions", "", "a{ss}", GetPermissions)
    # Decorated here, not at module level: AddTemplate would also put it on /org/freedesktop.
    # The sender keyword survives dbusmock's dispatch (_dbusmock_method_lookup hands dbus-python
    # this function as the parent method, whose _dbus_sender_keyword it reads).
    aac2 = dbus.service.method(
        MANAGER_IFACE, in_signature="a{sa{sv}}ooa{sv}", out_signature="ooa{sv}", sender_keyword="sender"
    )(AddAndActivateConnection2)
    aac2 = dbusmock.mockobject.loggedmethod(nm, aac2)
    nm.methods[MANAGER_IFACE]["AddAndActivateConnection2"] = ("a{sa{sv}}ooa{sv}", "ooa{sv}", "", aac2)
    settings = _obj(SETTINGS_OBJ)
    add = lambda self, s: dbus.ObjectPath(_add_profile(s, False))  # noqa: E731
    settings.AddMethod(SETTINGS_IFACE, "AddConnection", "a{sa{sv}}", "o", add)
    settings.AddMethod(SETTINGS_IFACE, "AddConnectionUnsaved", "a{sa{sv}}", "o", add)

    _add_device(S.iface)
