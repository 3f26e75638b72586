//! `wifi::nm::Nm` against the NetworkManager stand-in (tests/nm/qucam_nm.py) on a private
//! dbus-daemon (tests/common/nm.rs): joining a camera hotspot, the failure readings, the
//! uplink, bind-activation, stale profiles, scanning. Run through `scripts/test`.

mod common;

use std::time::Duration;

use common::nm::NmStandIn;
use qucam::Secret;
use qucam_offload::wifi::nm::{AccessPoint, Nm};

const IFACE: &str = "wlan0";
const UPLINK: &str = "depot";
const UPLINK_BSSID: &str = "02:00:00:00:00:01";
const CAM: &str = "AA:BB:CC:DD:EE:01";
const CAM_PSK: &str = "12345678";
const WAIT: Duration = Duration::from_secs(10);

/// The stand-in with the uplink active and one camera hotspot, and a client on it.
async fn yard() -> (NmStandIn, Nm) {
    let s = NmStandIn::start(IFACE).await;
    s.add_uplink(UPLINK, "depot-net", UPLINK_BSSID, true).await;
    s.add_ap("queclinkgh", CAM, 70, CAM_PSK).await;
    let nm = Nm::connect_at(s.bus_address(), IFACE).await.expect("connect");
    (s, nm)
}

async fn ap(nm: &Nm, bssid: &str) -> AccessPoint {
    let aps = nm.access_points().await.expect("access points");
    aps.into_iter()
        .find(|a| a.bssid == bssid)
        .unwrap_or_else(|| panic!("{bssid} not listed"))
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
    let j = nm.join(&cam, &Secret::new(CAM_PSK), WAIT).await.expect("join");
    assert_eq!(j.ap.bssid, CAM);
    assert_eq!(s.active_bssid().await.as_deref(), Some(CAM));
    assert_eq!(s.active_id().await.as_deref(), Some("qucam-offload/AA:BB:CC:DD:EE:01"));
    joined_signal(&s, CAM).await;
    assert!(!nm.uplink_active(UPLINK).await.expect("uplink_active"));
    let calls = s.calls().await;
    assert!(calls.contains(&"AddAndActivateConnection2".to_string()), "{calls:?}");
}
