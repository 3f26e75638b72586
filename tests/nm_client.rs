//! `wifi::nm::Nm` against the NetworkManager stand-in (tests/nm/qucam_nm.py) on a private
//! dbus-daemon (tests/common/nm.rs): joining a camera hotspot, the failure readings, the
//! uplink, bind-activation, stale profiles, scanning. Run through `scripts/test`.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::nm::NmStandIn;
use qucam::Secret;
use qucam_offload::wifi::lease::Suspicion;
use qucam_offload::wifi::nm::{AccessPoint, JoinError, Joined, Nm, NmError};

const IFACE: &str = "wlan0";
const UPLINK: &str = "depot";
const UPLINK_BSSID: &str = "02:00:00:00:00:01";
const CAM: &str = "AA:BB:CC:DD:EE:01";
const CAM_PSK: &str = "12345678";
const WAIT: Duration = Duration::from_secs(10);
/// Where the camera answers (the stand-in's camera lease is 127.0.0.2/24).
const CAMERA_HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The stand-in with the uplink active and one camera hotspot, and a client on it.
async fn yard() -> (NmStandIn, Nm) {
    let s = NmStandIn::start(IFACE).await;
    s.add_uplink(UPLINK, "depot-net", UPLINK_BSSID, true).await;
    s.add_ap("queclinkgh", CAM, 70, CAM_PSK).await;
    let nm = Nm::connect_at(s.bus_address(), IFACE)
        .await
        .expect("connect");
    (s, nm)
}

async fn ap(nm: &Nm, bssid: &str) -> AccessPoint {
    let aps = nm.access_points().await.expect("access points");
    aps.into_iter()
        .find(|a| a.bssid == bssid)
        .unwrap_or_else(|| panic!("{bssid} not listed"))
}

/// The yard, joined to the camera's hotspot with its password.
async fn joined_to_the_camera() -> (NmStandIn, Nm, Joined) {
    let (s, nm) = yard().await;
    let cam = ap(&nm, CAM).await;
    let j = nm
        .join(&cam, &Secret::new(CAM_PSK), CAMERA_HOST, WAIT)
        .await
        .expect("join");
    (s, nm, j)
}

/// Waits until the Joined signal has reported `bssid`.
async fn joined_signal(s: &NmStandIn, bssid: &str) {
    let mut rx = s.joined();
    tokio::time::timeout(WAIT, rx.wait_for(|b| b == bssid))
        .await
        .unwrap_or_else(|_| panic!("no Joined({bssid:?}) signal"))
        .expect("Joined watch");
}

#[tokio::test]
async fn join_activates_the_camera_ap() {
    let (s, nm) = yard().await;
    joined_signal(&s, UPLINK_BSSID).await;
    let cam = ap(&nm, CAM).await;
    assert_eq!(cam.ssid_lossy(), "queclinkgh");
    assert_eq!(cam.strength, 70);
    let j = nm
        .join(&cam, &Secret::new(CAM_PSK), CAMERA_HOST, WAIT)
        .await
        .expect("join");
    assert_eq!(j.ap.bssid, CAM);
    assert_eq!(s.active_bssid().await.as_deref(), Some(CAM));
    assert_eq!(
        s.active_id().await.as_deref(),
        Some("qucam-offload/AA:BB:CC:DD:EE:01")
    );
    joined_signal(&s, CAM).await;
    assert!(!nm.uplink_active(UPLINK).await.expect("uplink_active"));
    let calls = s.calls().await;
    assert!(
        calls.contains(&"AddAndActivateConnection2".to_string()),
        "{calls:?}"
    );
}

#[tokio::test]
async fn join_sends_a_volatile_bound_profile_that_never_takes_the_route() {
    let (s, _nm, _) = joined_to_the_camera().await;
    let sent = s.last_join().await;
    let expect = [
        ("connection.id", "qucam-offload/AA:BB:CC:DD:EE:01"),
        ("connection.type", "802-11-wireless"),
        ("connection.autoconnect", "false"),
        ("connection.interface-name", IFACE),
        ("802-11-wireless.ssid", "queclinkgh"),
        ("802-11-wireless.bssid", CAM),
        ("802-11-wireless-security.key-mgmt", "wpa-psk"),
        ("802-11-wireless-security.psk", CAM_PSK),
        ("ipv4.method", "auto"),
        ("ipv4.never-default", "true"),
        ("ipv4.ignore-auto-dns", "true"),
        ("ipv4.ignore-auto-routes", "true"),
        ("ipv4.route-table", "2345"),
        (
            "ipv4.routing-rules",
            "family=2,priority=2345,table=2345,to=127.0.0.1,to-len=32",
        ),
        ("ipv6.method", "ignore"),
        ("options.persist", "volatile"),
        ("options.bind-activation", "dbus-client"),
    ];
    for (key, value) in expect {
        assert_eq!(
            sent.get(key).map(String::as_str),
            Some(value),
            "{key} in {sent:?}"
        );
    }
    assert!(
        sent.get("connection.uuid").is_some_and(|u| u.len() == 36),
        "{sent:?}"
    );
}

#[tokio::test]
async fn a_wrong_password_reads_as_wrong_password_and_the_uplink_comes_back() {
    let (s, nm) = yard().await;
    let cam = ap(&nm, CAM).await;
    let err = nm
        .join(&cam, &Secret::new("not-it-1"), CAMERA_HOST, WAIT)
        .await
        .expect_err("wrong psk joined");
    assert_eq!(err, JoinError::WrongPassword);
    assert_eq!(
        s.active_id().await,
        None,
        "the failed join took the uplink down"
    );
    assert!(
        !s.profiles()
            .await
            .iter()
            .any(|p| p.starts_with("qucam-offload/")),
        "volatile profile left"
    );
    nm.activate_uplink(UPLINK, WAIT).await.expect("uplink");
    assert_eq!(s.active_id().await.as_deref(), Some(UPLINK));
    assert!(nm.uplink_active(UPLINK).await.expect("uplink_active"));
    joined_signal(&s, UPLINK_BSSID).await;
}

#[tokio::test]
async fn an_ap_that_leaves_while_joined_ends_wait_dropped() {
    let (s, nm, j) = joined_to_the_camera().await;
    let pending = tokio::time::timeout(Duration::from_millis(300), nm.wait_dropped(&j)).await;
    assert!(pending.is_err(), "wait_dropped resolved while still joined");
    let dropped = tokio::spawn({
        let address = s.bus_address().to_string();
        let j = j.clone();
        async move {
            let nm = Nm::connect_at(&address, IFACE).await.expect("connect");
            nm.wait_dropped(&j).await
        }
    });
    s.remove_ap(CAM).await;
    tokio::time::timeout(WAIT, dropped)
        .await
        .expect("wait_dropped did not resolve")
        .expect("task");
    assert_eq!(s.active_id().await, None);
    joined_signal(&s, "").await;
}

#[tokio::test]
async fn an_ap_gone_before_the_join_reads_as_gone() {
    let (s, nm) = yard().await;
    let cam = ap(&nm, CAM).await;
    s.remove_ap(CAM).await;
    let err = nm
        .join(&cam, &Secret::new(CAM_PSK), CAMERA_HOST, WAIT)
        .await
        .expect_err("joined a gone AP");
    assert_eq!(err, JoinError::Gone);
    assert_eq!(
        s.active_id().await.as_deref(),
        Some(UPLINK),
        "a refused join touched the uplink"
    );
}

#[tokio::test]
async fn an_ap_gone_while_activating_reads_as_gone() {
    let s = NmStandIn::start_with(IFACE, 3000).await;
    s.add_ap("queclinkgh", CAM, 70, CAM_PSK).await;
    let nm = Nm::connect_at(s.bus_address(), IFACE)
        .await
        .expect("connect");
    let cam = ap(&nm, CAM).await;
    let psk = Secret::new(CAM_PSK);
    let join = nm.join(&cam, &psk, CAMERA_HOST, WAIT);
    tokio::pin!(join);
    let deadline = tokio::time::Instant::now() + WAIT;
    // Drive the join until NetworkManager has the activation, then take the AP away.
    loop {
        tokio::select! {
            r = &mut join => panic!("join ended before the AP left: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        if s.calls()
            .await
            .iter()
            .any(|c| c == "AddAndActivateConnection2")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no AddAndActivateConnection2"
        );
    }
    s.remove_ap(CAM).await;
    let err = tokio::time::timeout(WAIT, join)
        .await
        .expect("join hung")
        .expect_err("joined");
    assert_eq!(err, JoinError::Gone);
}

#[tokio::test]
async fn a_slow_activation_times_out_and_is_deactivated() {
    let s = NmStandIn::start_with(IFACE, 5000).await;
    s.add_ap("queclinkgh", CAM, 70, CAM_PSK).await;
    let nm = Nm::connect_at(s.bus_address(), IFACE)
        .await
        .expect("connect");
    let cam = ap(&nm, CAM).await;
    let err = nm
        .join(
            &cam,
            &Secret::new(CAM_PSK),
            CAMERA_HOST,
            Duration::from_millis(300),
        )
        .await
        .expect_err("joined");
    assert_eq!(err, JoinError::Timeout);
    assert!(
        s.calls()
            .await
            .contains(&"DeactivateConnection".to_string())
    );
    assert!(
        !s.profiles()
            .await
            .iter()
            .any(|p| p.starts_with("qucam-offload/")),
        "volatile profile left"
    );
}

#[tokio::test]
async fn the_uplink_replaces_the_camera_connection() {
    let (s, nm, _) = joined_to_the_camera().await;
    joined_signal(&s, CAM).await;
    nm.activate_uplink(UPLINK, WAIT).await.expect("uplink");
    assert_eq!(s.active_id().await.as_deref(), Some(UPLINK));
    assert_eq!(s.active_bssid().await.as_deref(), Some(UPLINK_BSSID));
    assert_eq!(
        s.profiles().await,
        vec![UPLINK.to_string()],
        "the volatile camera profile stayed"
    );
    assert!(s.calls().await.contains(&"ActivateConnection".to_string()));
    joined_signal(&s, UPLINK_BSSID).await;
    // Already up: no second activation.
    nm.activate_uplink(UPLINK, WAIT)
        .await
        .expect("uplink again");
    let activations = s
        .calls()
        .await
        .iter()
        .filter(|c| *c == "ActivateConnection")
        .count();
    assert_eq!(activations, 1);
}

#[tokio::test]
async fn leave_deactivates_and_leaving_twice_is_fine() {
    let (s, nm, j) = joined_to_the_camera().await;
    nm.leave(&j).await.expect("leave");
    assert_eq!(s.active_id().await, None);
    nm.leave(&j).await.expect("leave again");
    tokio::time::timeout(WAIT, nm.wait_dropped(&j))
        .await
        .expect("wait_dropped after leave");
}

#[tokio::test]
async fn a_client_that_leaves_the_bus_takes_its_camera_connection_along() {
    let (s, nm) = yard().await;
    let cam = ap(&nm, CAM).await;
    let other = Nm::connect_at(s.bus_address(), IFACE)
        .await
        .expect("connect");
    other
        .join(&cam, &Secret::new(CAM_PSK), CAMERA_HOST, WAIT)
        .await
        .expect("join");
    assert_eq!(s.active_bssid().await.as_deref(), Some(CAM));
    drop(other);
    s.wait_active_id(None, WAIT).await;
    joined_signal(&s, "").await;
    assert!(
        !s.profiles()
            .await
            .iter()
            .any(|p| p.starts_with("qucam-offload/")),
        "bound profile left"
    );
    // NetworkManager does not bring the uplink back by itself: that is the agent's job.
    assert!(!nm.uplink_active(UPLINK).await.expect("uplink_active"));
    nm.activate_uplink(UPLINK, WAIT).await.expect("uplink");
}

#[tokio::test]
async fn remove_stale_deletes_only_our_leftovers() {
    let (s, nm) = yard().await;
    s.add_profile("qucam-offload/11:22:33:44:55:66").await;
    s.add_profile("qucam-offload/11:22:33:44:55:77").await;
    s.add_profile("someone-else").await;
    // The uplink named by UUID in the config, whatever its id looks like.
    let uplink_uuid = "5b7c3d2e-0f1a-4b6c-9d8e-7f6a5b4c3d2e";
    s.add_profile_with_uuid("qucam-offload/depot", uplink_uuid)
        .await;
    assert_eq!(
        nm.remove_stale(Some(uplink_uuid))
            .await
            .expect("remove_stale"),
        2
    );
    let mut left = s.profiles().await;
    left.sort();
    assert_eq!(
        left,
        vec![
            UPLINK.to_string(),
            "qucam-offload/depot".to_string(),
            "someone-else".to_string()
        ]
    );
    assert_eq!(nm.remove_stale(None).await.expect("remove_stale"), 1);
}

#[tokio::test]
async fn scan_waits_for_a_new_scan_and_lists_new_aps() {
    let (s, nm) = yard().await;
    let before = s.last_scan().await;
    s.add_ap("truck-2", "AA:BB:CC:DD:EE:02", 40, "abcdefgh")
        .await;
    let aps = nm.scan(WAIT).await.expect("scan");
    let after = s.last_scan().await;
    assert!(after > before, "LastScan {before} -> {after}");
    assert!(s.calls().await.contains(&"RequestScan".to_string()));
    let mut bssids: Vec<_> = aps.iter().map(|a| a.bssid.as_str()).collect();
    bssids.sort();
    assert_eq!(bssids, vec![UPLINK_BSSID, CAM, "AA:BB:CC:DD:EE:02"]);
    let t2 = aps.iter().find(|a| a.ssid == b"truck-2").expect("truck-2");
    assert_eq!(t2.strength, 40);
}

#[tokio::test]
async fn the_uplink_profile_and_permissions_are_reported() {
    let (s, nm) = yard().await;
    assert_eq!(
        nm.uplink_profile(UPLINK).await.expect("profile"),
        Some(true)
    );
    assert_eq!(nm.uplink_profile("nope").await.expect("profile"), None);
    assert!(matches!(
        nm.activate_uplink("nope", WAIT).await,
        Err(NmError::NoUplink(_))
    ));
    assert!(!nm.version().await.expect("version").is_empty());
    let control = "org.freedesktop.NetworkManager.network-control";
    assert_eq!(
        nm.permissions()
            .await
            .expect("perms")
            .get(control)
            .map(String::as_str),
        Some("yes")
    );
    s.set_permission(control, "auth").await;
    assert_eq!(
        nm.permissions()
            .await
            .expect("perms")
            .get(control)
            .map(String::as_str),
        Some("auth")
    );
    let cam = ap(&nm, CAM).await;
    let err = nm
        .join(&cam, &Secret::new(CAM_PSK), CAMERA_HOST, WAIT)
        .await
        .expect_err("joined without permission");
    assert!(
        matches!(&err, JoinError::Nm(m) if m.contains("refused")),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains(CAM_PSK));
    nm.join(&cam, &Secret::new(CAM_PSK), CAMERA_HOST, WAIT)
        .await
        .expect_err("joined");
    s.remove_ap(UPLINK_BSSID).await;
    s.add_uplink("depot-2", "depot-2", "02:00:00:00:00:02", false)
        .await;
    assert!(matches!(
        nm.activate_uplink("depot-2", WAIT).await,
        Err(NmError::Denied(_))
    ));
    assert!(matches!(
        Nm::connect_at(s.bus_address(), "eth7").await,
        Err(NmError::NoDevice(_))
    ));
}

#[tokio::test]
async fn a_scan_refused_while_activating_lists_what_nm_has() {
    let s = NmStandIn::start_with(IFACE, 5000).await;
    s.add_ap("queclinkgh", CAM, 70, CAM_PSK).await;
    let nm = Nm::connect_at(s.bus_address(), IFACE)
        .await
        .expect("connect");
    let cam = ap(&nm, CAM).await;
    let joining = tokio::spawn({
        let address = s.bus_address().to_string();
        async move {
            let other = Nm::connect_at(&address, IFACE).await.expect("connect");
            other
                .join(&cam, &Secret::new(CAM_PSK), CAMERA_HOST, WAIT)
                .await
        }
    });
    let deadline = tokio::time::Instant::now() + WAIT;
    while !s
        .calls()
        .await
        .iter()
        .any(|c| c == "AddAndActivateConnection2")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no AddAndActivateConnection2"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // NotAllowed while activating: no error and no waiting for a scan that never comes.
    let aps = tokio::time::timeout(Duration::from_secs(3), nm.scan(WAIT))
        .await
        .expect("scan waited for a refused scan")
        .expect("scan");
    assert_eq!(
        aps.iter().map(|a| a.bssid.as_str()).collect::<Vec<_>>(),
        vec![CAM]
    );
    assert_eq!(s.last_scan().await, -1);
    joining.abort();
}

#[tokio::test]
async fn no_bus_reads_as_not_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    let address = format!("unix:path={}/no-bus", dir.path().display());
    assert!(matches!(
        Nm::connect_at(&address, IFACE).await,
        Err(NmError::NotRunning(_))
    ));
}

#[tokio::test]
async fn a_rogue_lease_is_left_at_once_and_reads_as_suspicious() {
    let (s, nm) = yard().await;
    let cam = ap(&nm, CAM).await;
    let psk = Secret::new(CAM_PSK);
    // A rogue access point with the factory SSID and password leases half the Internet.
    s.set_lease(CAM, "10.0.0.2", 1).await;
    let e = nm
        .join(&cam, &psk, CAMERA_HOST, WAIT)
        .await
        .expect_err("suspicious");
    assert!(
        matches!(&e, JoinError::Suspicious(Suspicion::TooWide(n)) if n.prefix == 1),
        "{e:?}"
    );
    assert_eq!(s.active_bssid().await, None, "left at once");
    // A lease without the camera's address.
    s.set_lease(CAM, "10.43.0.5", 24).await;
    let e = nm
        .join(&cam, &psk, CAMERA_HOST, WAIT)
        .await
        .expect_err("suspicious");
    assert!(
        matches!(e, JoinError::Suspicious(Suspicion::CameraOutside { .. })),
        "{e:?}"
    );
    // A /25 inside the network the Ethernet uplink is on.
    s.add_wired_device("eth0", "127.0.0.200", 24).await;
    s.set_lease(CAM, "127.0.0.2", 25).await;
    let e = nm
        .join(&cam, &psk, CAMERA_HOST, WAIT)
        .await
        .expect_err("suspicious");
    assert!(
        matches!(e, JoinError::Suspicious(Suspicion::Overlaps { .. })),
        "{e:?}"
    );
    assert_eq!(s.active_bssid().await, None);
    // The camera's own lease, with the Ethernet elsewhere, is joined as before.
    s.set_lease(CAM, "127.0.1.2", 24).await;
    let j = nm
        .join(&cam, &psk, Ipv4Addr::new(127, 0, 1, 1), WAIT)
        .await
        .expect("a good lease");
    assert_eq!(j.ap.bssid, CAM);
    assert_eq!(s.active_bssid().await.as_deref(), Some(CAM));
}
