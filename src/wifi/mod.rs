//! Depot Wi-Fi (Linux, NetworkManager): find each vehicle's camera hotspot, join it, offload
//! it, leave, next (issue 10; design in `docs/depot-wifi.md`).
//!
//! The rooms:
//! - `nm`: NetworkManager over D-Bus (scan, join a hotspot, back to the uplink). The only
//!   module that speaks D-Bus.
//! - `credentials`: which password opens which hotspot (`[[camera]]`, the fleet file,
//!   learned from cameras, default passwords per SSID).
//! - `choose`: which hotspot in range is visited next (pure).
//! - `rotation`: the loop that ties them: restore the uplink, scan, choose, join, hand the
//!   camera to the agent for one pass, leave.

pub mod choose;
pub mod credentials;
pub mod nm;
pub mod rotation;
