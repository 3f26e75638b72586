//! Depot Wi-Fi (Linux, NetworkManager): find each vehicle's camera hotspot, join it, offload
//! it, leave, next (issue 10; design in `docs/depot-wifi.md`).
//!
//! The rooms:
//! - `nm`: NetworkManager over D-Bus (scan, join a hotspot, back to the uplink). The only
//!   module that speaks D-Bus.
//! - `credentials`: which password opens which hotspot (`[[camera]]`, the fleet file,
//!   learned from cameras, default passwords per SSID).
//! - `choose`: which hotspot in range is visited next (pure).
//! - `lease`: the network check after a join (pure): a lease a rogue access point gives
//!   is left at once.
//!
//! The loop that ties them to the agent (restore the uplink, scan, choose, join, one pass,
//! leave) is the agent's: `agent/rotation` (with its visit) and `agent/radio.rs`.

pub mod choose;
pub mod credentials;
pub mod lease;
pub mod nm;
